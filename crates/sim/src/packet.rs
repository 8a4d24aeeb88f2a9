//! Just enough IPv4/IPv6/TCP/UDP parsing for the simulator and its tests:
//! summarising a packet for observers and verifying checksums on delivery.
//!
//! Hosts deliberately do not verify checksums inside smoltcp; the network
//! does it for them and counts failures per host, so a middlebox that
//! rewrites a packet without fixing its checksums shows up as a counter
//! instead of as unexplained retransmissions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rvs_core::{Endpoint, Proto};

/// TCP FIN flag bit.
pub const TCP_FIN: u8 = 0x01;
/// TCP SYN flag bit.
pub const TCP_SYN: u8 = 0x02;
/// TCP RST flag bit.
pub const TCP_RST: u8 = 0x04;
/// TCP PSH flag bit.
pub const TCP_PSH: u8 = 0x08;
/// TCP ACK flag bit.
pub const TCP_ACK: u8 = 0x10;

/// The addressing facts of one IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketInfo {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number of the transport header (after IPv6 extension headers).
    pub proto: u8,
    /// Transport source port; zero when the packet is neither TCP nor UDP, or is a non-first fragment.
    pub src_port: u16,
    /// Transport destination port; zero as for `src_port`.
    pub dst_port: u16,
    /// TCP flag bits (`TCP_SYN`, ...); zero for anything but TCP.
    pub tcp_flags: u8,
    /// Bytes of transport payload (after the TCP/UDP header).
    pub payload_len: usize,
}

/// Where the transport header starts, and what surrounds it.
struct Layout {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    /// Offset of the transport header.
    l4: usize,
    /// End of the IP payload (IP total length may be shorter than the buffer).
    end: usize,
    /// False for fragments, whose transport header cannot be checked alone.
    whole: bool,
}

fn layout(p: &[u8]) -> Option<Layout> {
    match p.first()? >> 4 {
        4 => {
            if p.len() < 20 {
                return None;
            }
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            if ihl < 20 || total < ihl || total > p.len() {
                return None;
            }
            let frag = u16::from_be_bytes([p[6], p[7]]);
            let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            Some(Layout {
                src: src.into(),
                dst: dst.into(),
                proto: p[9],
                l4: ihl,
                end: total,
                whole: frag & 0x3fff == 0,
            })
        }
        6 => {
            if p.len() < 40 {
                return None;
            }
            let end = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
            if end > p.len() {
                return None;
            }
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?);
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).ok()?);
            let mut next = p[6];
            let mut off = 40;
            let mut whole = true;
            loop {
                match next {
                    // Hop-by-hop, routing, destination options: length in 8-octet units past the first 8.
                    0 | 43 | 60 => {
                        let h = p.get(off..off + 2)?;
                        next = h[0];
                        off += 8 + usize::from(h[1]) * 8;
                    }
                    44 => {
                        let h = p.get(off..off + 8)?;
                        next = h[0];
                        let frag = u16::from_be_bytes([h[2], h[3]]);
                        whole &= frag & 0xfff9 == 0;
                        off += 8;
                    }
                    _ => break,
                }
                if off > end {
                    return None;
                }
            }
            Some(Layout { src: src.into(), dst: dst.into(), proto: next, l4: off, end, whole })
        }
        _ => None,
    }
}

impl PacketInfo {
    /// Summarise a raw IPv4 or IPv6 packet; `None` if it is not one.
    pub fn parse(packet: &[u8]) -> Option<Self> {
        let l = layout(packet)?;
        let mut info = Self {
            src: l.src,
            dst: l.dst,
            proto: l.proto,
            src_port: 0,
            dst_port: 0,
            tcp_flags: 0,
            payload_len: l.end - l.l4,
        };
        let t = &packet[l.l4..l.end];
        if l.whole && (l.proto == 6 || l.proto == 17) && t.len() >= 4 {
            info.src_port = u16::from_be_bytes([t[0], t[1]]);
            info.dst_port = u16::from_be_bytes([t[2], t[3]]);
            if l.proto == 6 && t.len() >= 20 {
                info.tcp_flags = t[13];
                info.payload_len = t.len().saturating_sub(usize::from(t[12] >> 4) * 4);
            } else if l.proto == 17 {
                info.payload_len = t.len().saturating_sub(8);
            }
        }
        Some(info)
    }

    /// The transport protocol, if TCP or UDP.
    pub fn l4(&self) -> Option<Proto> {
        Proto::from_number(self.proto)
    }

    /// Source address and port.
    pub fn src_endpoint(&self) -> Endpoint {
        Endpoint::new(self.src, self.src_port)
    }

    /// Destination address and port.
    pub fn dst_endpoint(&self) -> Endpoint {
        Endpoint::new(self.dst, self.dst_port)
    }

    /// TCP with SYN set.
    pub fn is_syn(&self) -> bool {
        self.proto == 6 && self.tcp_flags & TCP_SYN != 0
    }

    /// TCP with RST set.
    pub fn is_rst(&self) -> bool {
        self.proto == 6 && self.tcp_flags & TCP_RST != 0
    }

    /// TCP with FIN set.
    pub fn is_fin(&self) -> bool {
        self.proto == 6 && self.tcp_flags & TCP_FIN != 0
    }
}

/// One's-complement sum of `data` (odd tail padded with zero), not yet folded.
fn sum(data: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc + u64::from(u32::from_be_bytes(tail))
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn pseudo_header(l: &Layout, len: usize) -> u64 {
    let addr = |a: IpAddr| match a {
        IpAddr::V4(a) => sum(&a.octets()),
        IpAddr::V6(a) => sum(&a.octets()),
    };
    addr(l.src) + addr(l.dst) + u64::from(l.proto) + len as u64
}

/// Offset of the checksum field inside the transport header, for protocols we check.
fn checksum_field(proto: u8, v4: bool) -> Option<usize> {
    match proto {
        6 => Some(16),
        17 => Some(6),
        58 if !v4 => Some(2),
        1 if v4 => Some(2),
        _ => None,
    }
}

/// Whether the IPv4 header checksum and the TCP/UDP/ICMP checksum are right.
/// Fragments have only their IP header checked; unknown protocols pass.
pub fn checksums_ok(packet: &[u8]) -> bool {
    let Some(l) = layout(packet) else {
        return false;
    };
    let v4 = l.src.is_ipv4();
    if v4 && fold(sum(&packet[..l.l4])) != 0xffff {
        return false;
    }
    if !l.whole {
        return true;
    }
    let t = &packet[l.l4..l.end];
    let Some(field) = checksum_field(l.proto, v4) else {
        return true;
    };
    if t.len() < field + 2 {
        return false;
    }
    if v4 && l.proto == 17 && t[6] == 0 && t[7] == 0 {
        return true; // UDP over IPv4 may omit its checksum.
    }
    let pseudo = if l.proto == 1 { 0 } else { pseudo_header(&l, t.len()) };
    fold(pseudo + sum(t)) == 0xffff
}

/// Recompute the IPv4 header checksum and the TCP/UDP/ICMP checksum in place,
/// for tests that craft or corrupt packets by hand. Returns false if the
/// packet cannot be parsed.
pub fn fix_checksums(packet: &mut [u8]) -> bool {
    let Some(l) = layout(packet) else {
        return false;
    };
    let v4 = l.src.is_ipv4();
    if v4 {
        packet[10] = 0;
        packet[11] = 0;
        let c = !fold(sum(&packet[..l.l4]));
        packet[10..12].copy_from_slice(&c.to_be_bytes());
    }
    if !l.whole {
        return true;
    }
    if let Some(field) = checksum_field(l.proto, v4) {
        let pseudo = if l.proto == 1 { 0 } else { pseudo_header(&l, l.end - l.l4) };
        let t = &mut packet[l.l4..l.end];
        if t.len() < field + 2 {
            return false;
        }
        t[field] = 0;
        t[field + 1] = 0;
        let mut c = !fold(pseudo + sum(t));
        if c == 0 && l.proto == 17 {
            c = 0xffff;
        }
        t[field..field + 2].copy_from_slice(&c.to_be_bytes());
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built IPv4/TCP SYN with a 3-byte payload.
    fn v4_tcp() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 43, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IP
            0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, TCP_SYN, 0xff, 0xff, 0, 0, 0,
            0, // TCP
            b'a', b'b', b'c',
        ];
        assert!(fix_checksums(&mut p));
        p
    }

    #[test]
    fn parses_and_checks_ipv4_tcp() {
        let p = v4_tcp();
        let i = PacketInfo::parse(&p).unwrap();
        assert_eq!(i.src, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(i.dst_endpoint(), Endpoint::new(IpAddr::from([10, 0, 0, 2]), 80));
        assert_eq!(i.src_port, 12345);
        assert!(i.is_syn() && !i.is_rst());
        assert_eq!(i.payload_len, 3);
        assert!(checksums_ok(&p));
        let mut bad = p.clone();
        bad[42] ^= 1;
        assert!(!checksums_ok(&bad));
        let mut bad_ip = p;
        bad_ip[8] = 63;
        assert!(!checksums_ok(&bad_ip));
    }

    #[test]
    fn parses_and_checks_ipv6_udp() {
        let mut p = vec![0x60, 0, 0, 0, 0, 12, 17, 64];
        p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        p.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[0x04, 0xd2, 0x00, 0x35, 0, 12, 0, 0, 1, 2, 3, 4]);
        assert!(fix_checksums(&mut p));
        assert!(checksums_ok(&p));
        let i = PacketInfo::parse(&p).unwrap();
        assert_eq!((i.src_port, i.dst_port, i.payload_len), (1234, 53, 4));
        assert_eq!(i.l4(), Some(Proto::Udp));
        p[47] ^= 0xff;
        assert!(!checksums_ok(&p));
    }

    #[test]
    fn rejects_garbage() {
        assert!(PacketInfo::parse(&[]).is_none());
        assert!(PacketInfo::parse(&[0x45, 0, 0]).is_none());
        assert!(!checksums_ok(&[0x10; 30]));
    }
}
