//! The generators' frames, 60 bytes (64 on a wire with the FCS): the closed
//! loop's UDP packets, and the flood's TCP SYN template with the offsets
//! its generators randomise per frame.

use std::net::Ipv4Addr;

use crate::bpf::RandomField;

/// Minimum Ethernet frame without FCS.
pub(crate) const FRAME_LEN: usize = 60;
const ETH: usize = 14;
const IP: usize = ETH;
const L4: usize = ETH + 20;

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

/// One packet of the closed loop: UDP `src` → `dst`, checksum 0 (none),
/// whose payload begins with the packet's `id` (little-endian), the index
/// the reflectors note its arrival at.
pub(crate) fn udp(macs: Macs, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), id: u32) -> Vec<u8> {
    let mut f = vec![0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&macs.dst);
    f[6..12].copy_from_slice(&macs.src);
    let udp_len = FRAME_LEN - L4;
    ipv4_header(&mut f, src.0, dst.0, 17, udp_len, 0);
    f[L4..L4 + 2].copy_from_slice(&src.1.to_be_bytes());
    f[L4 + 2..L4 + 4].copy_from_slice(&dst.1.to_be_bytes());
    f[L4 + 4..L4 + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    f[L4 + 8..L4 + 12].copy_from_slice(&id.to_le_bytes());
    f
}

/// A TCP SYN to `dst:dport` from a random address in `src_net`/16 and a
/// random port: the address's low 16 bits go at their place with the
/// complement in the IP ID and the sequence number's low half, the port with
/// its complement in the sequence number's high half, so both checksums
/// computed here stay right for every copy.
pub(crate) fn syn(macs: Macs, src_net: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> Template {
    let mut f = vec![0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&macs.dst);
    f[6..12].copy_from_slice(&macs.src);
    let [a, b, _, _] = src_net.octets();
    let src = Ipv4Addr::new(a, b, 0, 0);
    // Template: address low half 0, ID 0xffff; port 0, sequence 0xffff_ffff.
    ipv4_header(&mut f, src, dst, 6, 20, 0xffff);
    let t = &mut f[L4..L4 + 20];
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02; // SYN
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
    fn udp_frame_is_valid_and_carries_its_id() {
        let macs = Macs { src: [2; 6], dst: [4; 6] };
        let f =
            udp(macs, (Ipv4Addr::new(10, 0, 0, 2), 1024), (Ipv4Addr::new(10, 0, 2, 1), 9000), 0x0102_0304);
        assert_eq!(f.len(), FRAME_LEN);
        assert!(ip_ok(&f));
        assert_eq!(f[IP + 9], 17);
        assert_eq!(&f[L4..L4 + 4], &[4, 0, 0x23, 0x28]);
        assert_eq!(u16::from_be_bytes([f[IP + 2], f[IP + 3]]), 46);
        assert_eq!(&f[L4 + 6..L4 + 12], &[0, 0, 4, 3, 2, 1], "no checksum; the id little-endian");
    }
}
