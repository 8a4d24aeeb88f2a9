//! The generator's frame templates: Ethernet + IPv4 + UDP, or + TCP SYN,
//! 60 bytes (64 on a wire with the FCS), with the offsets the generator
//! program randomises per frame.

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

fn checksum(data: &[u8], initial: u32) -> u16 {
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

/// UDP to `dst:dport` with 18 bytes of payload; the source port takes one of
/// `flows` values (a power of two up to 32,768), so every flow after its first
/// packet is an established one. Checksum 0 (none), so ports may change freely.
pub(crate) fn udp(macs: Macs, src: Ipv4Addr, dst: Ipv4Addr, dport: u16, flows: u16) -> Template {
    let mut f = vec![0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&macs.dst);
    f[6..12].copy_from_slice(&macs.src);
    let udp_len = FRAME_LEN - L4;
    ipv4_header(&mut f, src, dst, 17, udp_len, 0);
    f[L4 + 2..L4 + 4].copy_from_slice(&dport.to_be_bytes());
    f[L4 + 4..L4 + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let mask = flows.next_power_of_two().clamp(1, 0x8000) - 1;
    // A set bit above the mask keeps the port off 0 in either byte order.
    let random = vec![RandomField { mask, set: 0x8000, value_at: vec![L4 as i16], complement_at: vec![] }];
    Template { bytes: f, random }
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

    /// Applies the generator's writes with value `v` in software.
    fn randomise(t: &Template, values: &[u16]) -> Vec<u8> {
        let mut f = t.bytes.clone();
        for (g, &v) in t.random.iter().zip(values) {
            let v = (v & g.mask) | g.set;
            for &o in &g.value_at {
                f[o as usize..o as usize + 2].copy_from_slice(&v.to_le_bytes());
            }
            for &o in &g.complement_at {
                f[o as usize..o as usize + 2].copy_from_slice(&(!v).to_le_bytes());
            }
        }
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
    fn udp_frame_is_valid_and_ports_bounded() {
        let macs = Macs { src: [2; 6], dst: [4; 6] };
        let t = udp(macs, Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 2, 1), 9000, 1024);
        assert!(ip_ok(&t.bytes));
        assert_eq!(&t.bytes[L4 + 2..L4 + 4], &9000u16.to_be_bytes());
        assert_eq!(u16::from_be_bytes([t.bytes[IP + 2], t.bytes[IP + 3]]), 46);
        let ports: std::collections::BTreeSet<[u8; 2]> =
            (0..=u16::MAX).map(|v| randomise(&t, &[v])[L4..L4 + 2].try_into().unwrap()).collect();
        assert_eq!(ports.len(), 1024);
        assert!(!ports.contains(&[0, 0]));
    }
}
