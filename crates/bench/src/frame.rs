//! The generators' frames, 60 bytes (64 on a wire with the FCS): the closed
//! loop's UDP packets (IPv6 ones 20 bytes longer, for the longer header:
//! the same payload), and the flood's TCP SYN template with the offsets its
//! generators randomise per frame.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::bpf::RandomField;

/// Minimum Ethernet frame without FCS.
pub(crate) const FRAME_LEN: usize = 60;
/// The closed loop's IPv6 frame: the IPv4 one's payload behind a 40-byte header.
pub(crate) const FRAME6_LEN: usize = FRAME_LEN + 20;
const ETH: usize = 14;
const IP: usize = ETH;
const L4: usize = ETH + 20;
const L4_6: usize = ETH + 40;

/// Link-layer addresses of one hop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Macs {
    pub src: [u8; 6],
    pub dst: [u8; 6],
}

/// A frame and what the generator changes in it per copy.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub bytes: Vec<u8>,
    pub random: Vec<RandomField>,
}

impl Template {
    /// Writes into `frame` (a copy of the template) what the generator
    /// program writes, with values from `next`: the same little-endian
    /// 16-bit stores, so both generators send the same frames.
    pub(crate) fn randomise(&self, frame: &mut [u8], mut next: impl FnMut() -> u16) {
        for g in &self.random {
            let v = (next() & g.mask) | g.set;
            for &o in &g.value_at {
                frame[o as usize..o as usize + 2].copy_from_slice(&v.to_le_bytes());
            }
            for &o in &g.complement_at {
                frame[o as usize..o as usize + 2].copy_from_slice(&(!v).to_le_bytes());
            }
        }
    }
}

/// The Internet checksum of `data` (RFC 1071), starting from `initial`.
pub(crate) fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4_header(f: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: usize, id: u16) {
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let h = &mut f[IP..IP + 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum(h, 0);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// One packet of the closed loop: UDP `src` → `dst` (one family), whose
/// payload begins with the packet's `id` (little-endian), the index the
/// reflectors note its arrival at. Over IPv4 without a checksum (0, none);
/// IPv6 has no such option (RFC 8200 section 8.1), so there it is computed.
pub(crate) fn udp(macs: Macs, src: SocketAddr, dst: SocketAddr, id: u32) -> Vec<u8> {
    let (mut f, l4) = match (src.ip(), dst.ip()) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut f = vec![0u8; FRAME6_LEN];
            ipv6_header(&mut f, s, d, 17, FRAME6_LEN - L4_6);
            (f, L4_6)
        }
        (s, d) => {
            let mut f = vec![0u8; FRAME_LEN];
            ipv4_header(&mut f, to_v4(s), to_v4(d), 17, FRAME_LEN - L4, 0);
            (f, L4)
        }
    };
    f[0..6].copy_from_slice(&macs.dst);
    f[6..12].copy_from_slice(&macs.src);
    let udp_len = f.len() - l4;
    f[l4..l4 + 2].copy_from_slice(&src.port().to_be_bytes());
    f[l4 + 2..l4 + 4].copy_from_slice(&dst.port().to_be_bytes());
    f[l4 + 4..l4 + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    f[l4 + 8..l4 + 12].copy_from_slice(&id.to_le_bytes());
    if l4 == L4_6 {
        let c = checksum(&f[l4..], pseudo6(&f, 17, udp_len));
        // A computed 0 is sent as all ones (RFC 768).
        let c = if c == 0 { 0xffff } else { c };
        f[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
    }
    f
}

/// The IPv4 address itself; an IPv6 one (a caller's mix of families) as unspecified.
fn to_v4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

fn ipv6_header(f: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: usize) {
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let h = &mut f[IP..IP + 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
}

/// The sum of the IPv6 pseudo-header (RFC 8200 section 8.1) of frame `f`.
fn pseudo6(f: &[u8], next: u8, len: usize) -> u32 {
    let words = f[IP + 8..IP + 40].chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])));
    words.sum::<u32>() + len as u32 + u32::from(next)
}

/// A TCP SYN to `dst:dport` from a random address in `src_net`/16 and a
/// random port: the address's low 16 bits go at their place with the
/// complement in the IP ID and the sequence number's low half, the port with
/// its complement in the sequence number's high half, so both checksums
/// computed here stay right for every copy.
pub(crate) fn syn(macs: Macs, src_net: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> Template {
    tcp_flood(macs, src_net, dst, dport, 0x02)
}

/// A TCP ACK like [`syn`]'s SYN, whose acknowledgment number (a SYN
/// cookie, to a SYNProxy) is random too: its high half with the
/// complement in its low half.
pub(crate) fn ack(macs: Macs, src_net: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> Template {
    let mut t = tcp_flood(macs, src_net, dst, dport, 0x10);
    t.random.push(RandomField {
        mask: 0xffff,
        set: 0,
        value_at: vec![(L4 + 8) as i16],
        complement_at: vec![(L4 + 10) as i16],
    });
    t
}

/// The flood's TCP segment with `flags`; see [`syn`].
fn tcp_flood(macs: Macs, src_net: Ipv4Addr, dst: Ipv4Addr, dport: u16, flags: u8) -> Template {
    let mut f = vec![0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&macs.dst);
    f[6..12].copy_from_slice(&macs.src);
    let [a, b, _, _] = src_net.octets();
    let src = Ipv4Addr::new(a, b, 0, 0);
    // Template: address low half 0, ID 0xffff; port 0, sequence 0xffff_ffff;
    // acknowledgment 0x0000_ffff (random halves replace it in an ACK).
    ipv4_header(&mut f, src, dst, 6, 20, 0xffff);
    let t = &mut f[L4..L4 + 20];
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    if flags & 0x10 != 0 {
        t[8..12].copy_from_slice(&0xffffu32.to_be_bytes());
    }
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    let initial = pseudo.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    let c = checksum(&f[L4..L4 + 20], initial);
    f[L4 + 16..L4 + 18].copy_from_slice(&c.to_be_bytes());
    let random = vec![
        RandomField {
            mask: 0xffff,
            set: 0,
            value_at: vec![(IP + 14) as i16],
            complement_at: vec![(IP + 4) as i16, (L4 + 6) as i16],
        },
        RandomField {
            mask: 0xffff,
            set: 0x0004,
            value_at: vec![L4 as i16],
            complement_at: vec![(L4 + 4) as i16],
        },
    ];
    Template { bytes: f, random }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The template randomised with these values, one per group.
    fn randomise(t: &Template, values: &[u16]) -> Vec<u8> {
        let mut f = t.bytes.clone();
        let mut v = values.iter().copied();
        t.randomise(&mut f, || v.next().unwrap_or(0));
        f
    }

    fn ip_ok(f: &[u8]) -> bool {
        checksum(&f[IP..IP + 20], 0) == 0
    }

    fn tcp_ok(f: &[u8]) -> bool {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[IP + 12..IP + 20]);
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        let initial = pseudo.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        checksum(&f[L4..L4 + 20], initial) == 0
    }

    #[test]
    fn syn_checksums_hold_for_every_randomisation() {
        let macs = Macs { src: [2, 0, 0, 0, 0, 1], dst: [2, 0, 0, 0, 0, 2] };
        let t = syn(macs, Ipv4Addr::new(198, 18, 0, 0), Ipv4Addr::new(10, 77, 2, 1), 80);
        assert_eq!(t.bytes.len(), FRAME_LEN);
        for (a, b) in [(0, 0), (1, 2), (0xffff, 0x1234), (0xabcd, 0xffff), (0x8000, 7)] {
            let f = randomise(&t, &[a, b]);
            assert!(ip_ok(&f) && tcp_ok(&f), "values {a:#x} {b:#x}");
            assert_ne!(u16::from_be_bytes([f[L4], f[L4 + 1]]), 0);
            assert_eq!(f[L4 + 13], 0x02);
        }
        // Sources do vary.
        assert_ne!(randomise(&t, &[1, 1])[IP + 12..IP + 16], randomise(&t, &[2, 1])[IP + 12..IP + 16]);
    }

    #[test]
    fn ack_checksums_hold_and_its_cookie_varies() {
        let macs = Macs { src: [2, 0, 0, 0, 0, 1], dst: [2, 0, 0, 0, 0, 2] };
        let t = ack(macs, Ipv4Addr::new(198, 18, 0, 0), Ipv4Addr::new(10, 77, 2, 1), 80);
        for v in [[0, 0, 0], [1, 2, 3], [0xffff, 0x1234, 0xffff], [0xabcd, 0xffff, 0x8000]] {
            let f = randomise(&t, &v);
            assert!(ip_ok(&f) && tcp_ok(&f), "values {v:?}");
            assert_eq!(f[L4 + 13], 0x10, "ACK only");
        }
        assert_ne!(randomise(&t, &[1, 1, 1])[L4 + 8..L4 + 12], randomise(&t, &[1, 1, 2])[L4 + 8..L4 + 12]);
    }

    #[test]
    fn udp6_frame_is_valid_and_carries_its_id() {
        let macs = Macs { src: [2; 6], dst: [4; 6] };
        let src = "[fd10:78:0::2]:1024".parse().unwrap();
        let f = udp(macs, src, "[fd10:78:2::1]:9000".parse().unwrap(), 0x0102_0304);
        assert_eq!(f.len(), FRAME6_LEN);
        assert_eq!((&f[12..14], f[IP], f[IP + 6], f[IP + 7]), (&[0x86, 0xdd][..], 0x60, 17, 64));
        assert_eq!(u16::from_be_bytes([f[IP + 4], f[IP + 5]]), 26);
        assert_eq!(&f[L4_6..L4_6 + 4], &[4, 0, 0x23, 0x28]);
        assert_eq!(&f[L4_6 + 8..L4_6 + 12], &[4, 3, 2, 1]);
        assert_eq!(checksum(&f[L4_6..], pseudo6(&f, 17, 26)), 0, "the UDP checksum holds");
    }

    #[test]
    fn udp_frame_is_valid_and_carries_its_id() {
        let macs = Macs { src: [2; 6], dst: [4; 6] };
        let f = udp(macs, "10.0.0.2:1024".parse().unwrap(), "10.0.2.1:9000".parse().unwrap(), 0x0102_0304);
        assert_eq!(f.len(), FRAME_LEN);
        assert!(ip_ok(&f));
        assert_eq!(f[IP + 9], 17);
        assert_eq!(&f[L4..L4 + 4], &[4, 0, 0x23, 0x28]);
        assert_eq!(u16::from_be_bytes([f[IP + 2], f[IP + 3]]), 46);
        assert_eq!(&f[L4 + 6..L4 + 12], &[0, 0, 4, 3, 2, 1], "no checksum; the id little-endian");
    }
}
