//! Just enough IPv4/IPv6/TCP/UDP parsing for the simulator and its tests:
//! summarising a packet for observers and verifying checksums on delivery;
//! and the path-MTU pieces: the ICMP error a narrow link answers with, and
//! the re-segmenting a host does once it heard of one.
//!
//! Hosts deliberately do not verify checksums inside smoltcp; the network
//! does it for them and counts failures per host, so a middlebox that
//! rewrites a packet without fixing its checksums shows up as a counter
//! instead of as unexplained retransmissions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rvs_core::{Endpoint, Proto};
use rvs_wire::{checksum, icmpv4, ip_protocol, ipv4, ipv6, tcp};

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

/// Lower the MSS option of an arriving SYN that offers timestamps by the
/// 12 bytes the timestamps option takes in every later segment.
///
/// RFC 6691 §2: the MSS counts no options, and the sender takes the options
/// it sends off each segment. smoltcp does not, so its full-sized segments
/// with timestamps exceed the MTU and are never sent; showing its stack the
/// MSS less the option makes it send what a real stack would. Only the
/// host's own stack sees the change: checksums are not verified past this.
pub(crate) fn mss_less_timestamps(p: &mut [u8]) {
    let Some(l) = layout(p) else { return };
    if l.proto != ip_protocol::TCP || p.get(l.l4 + 13).is_none_or(|f| f & TCP_SYN == 0) {
        return;
    }
    let Ok(seg) = tcp::Packet::new_checked(&p[l.l4..l.end]) else { return };
    let mut mss_at = None;
    let mut timestamps = false;
    for (at, opt) in seg.options_iter().flatten() {
        match opt {
            tcp::TcpOption::MaxSegmentSize(mss) => mss_at = Some((at, mss)),
            tcp::TcpOption::Timestamps { .. } => timestamps = true,
            _ => {}
        }
    }
    if let (Some((at, mss)), true) = (mss_at, timestamps) {
        let field = l.l4 + tcp::HEADER_LEN + at + 2;
        p[field..field + 2].copy_from_slice(&mss.saturating_sub(12).to_be_bytes());
    }
}

/// Smallest MTU of an IPv6 link (RFC 8200 §5): a packet-too-big error
/// never lowers a path below it.
pub const IPV6_MIN_MTU: usize = 1280;
/// Smallest path MTU an IPv4 host accepts from a fragmentation-needed
/// error (Linux's `min_pmtu`), so a forged tiny MTU cannot shred a flow.
pub const IPV4_MIN_PMTU: usize = 552;

/// Whether `p` (with layout `l`) is an ICMP or ICMPv6 error, about which no
/// error is ever sent (RFC 1122 §3.2.2, RFC 4443 §2.4 e).
fn is_icmp_error(p: &[u8], l: &Layout) -> bool {
    let msg_type = p.get(l.l4).copied().unwrap_or(0);
    match l.proto {
        ip_protocol::ICMP => icmpv4::is_error(msg_type),
        ip_protocol::ICMPV6 => msg_type < 128,
        _ => false,
    }
}

/// The ICMP error a router sends when `packet` is too big for its next
/// link of `mtu` bytes: fragmentation needed (RFC 1191) for an IPv4
/// packet with DF set, packet too big (RFC 4443 §3.2) for IPv6, from
/// `router` (of the packet's family) back to the packet's source. `None`
/// when no error is due: an IPv4 packet that may be fragmented, an ICMP
/// error itself, or bytes that do not parse.
pub fn too_big_error(packet: &[u8], mtu: usize, router: IpAddr) -> Option<Vec<u8>> {
    let l = layout(packet)?;
    if is_icmp_error(packet, &l) {
        return None;
    }
    let mtu = u32::try_from(mtu).ok()?;
    match (l.src, router) {
        (IpAddr::V4(src), IpAddr::V4(router)) => {
            if !ipv4::Packet::new_checked(packet).ok()?.dont_frag() {
                return None;
            }
            let mut out = vec![0; ipv4::HEADER_LEN + icmpv4::MAX_ERROR_LEN];
            let (head, body) = out.split_at_mut(ipv4::HEADER_LEN);
            let code = icmpv4::unreachable_code::FRAG_NEEDED;
            let len = icmpv4::emit_error(body, icmpv4::msg_type::DEST_UNREACHABLE, code, mtu, packet).ok()?;
            let repr = ipv4::Repr {
                src_addr: router,
                dst_addr: src,
                protocol: ip_protocol::ICMP,
                payload_len: len,
                ttl: 64,
                ident: 0,
                dont_frag: false,
            };
            repr.emit(&mut ipv4::Packet::new_unchecked(head));
            out.truncate(ipv4::HEADER_LEN + len);
            Some(out)
        }
        (IpAddr::V6(src), IpAddr::V6(router)) => {
            // As much of the packet as fits in the minimum MTU (RFC 4443 §2.4 c).
            let quoted = &packet[..l.end.min(IPV6_MIN_MTU - ipv6::HEADER_LEN - 8)];
            let len = 8 + quoted.len();
            let mut out = vec![0; ipv6::HEADER_LEN + len];
            let repr = ipv6::Repr {
                src_addr: router,
                dst_addr: src,
                next_header: ip_protocol::ICMPV6,
                payload_len: len,
                hop_limit: 64,
            };
            repr.emit(&mut ipv6::Packet::new_unchecked(&mut out[..]));
            let msg = &mut out[ipv6::HEADER_LEN..];
            msg[0] = ICMPV6_PACKET_TOO_BIG;
            msg[4..8].copy_from_slice(&mtu.to_be_bytes());
            msg[8..].copy_from_slice(quoted);
            let pseudo = checksum::pseudo_header(router.into(), src.into(), ip_protocol::ICMPV6, len as u32);
            let sum = checksum::finish(pseudo + checksum::sum(msg));
            msg[2..4].copy_from_slice(&sum.to_be_bytes());
            Some(out)
        }
        _ => None,
    }
}

/// ICMPv6 type of packet too big (RFC 4443 §3.2).
const ICMPV6_PACKET_TOO_BIG: u8 = 2;

/// What an ICMP too-big error tells the host that receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooBig {
    /// Source of the quoted packet: the receiving host's own address.
    pub src: IpAddr,
    /// Destination of the quoted packet: where the path is narrow.
    pub dst: IpAddr,
    /// The MTU the error announces.
    pub mtu: usize,
}

/// Read an IPv4 fragmentation-needed or ICMPv6 packet-too-big error.
pub fn parse_too_big(packet: &[u8]) -> Option<TooBig> {
    let l = layout(packet)?;
    let msg = &packet[l.l4..l.end];
    let quoted = msg.get(8..)?;
    match l.proto {
        ip_protocol::ICMP if l.src.is_ipv4() => {
            let icmp = icmpv4::Packet::new_checked(msg).ok()?;
            let code = icmpv4::unreachable_code::FRAG_NEEDED;
            if icmp.msg_type() != icmpv4::msg_type::DEST_UNREACHABLE || icmp.code() != code {
                return None;
            }
            let inner = ipv4::Packet::new_checked_quoted(quoted).ok()?;
            let mtu = usize::from(icmp.next_hop_mtu());
            Some(TooBig { src: inner.src_addr().into(), dst: inner.dst_addr().into(), mtu })
        }
        ip_protocol::ICMPV6 if l.src.is_ipv6() => {
            if msg[0] != ICMPV6_PACKET_TOO_BIG || quoted.len() < ipv6::HEADER_LEN {
                return None;
            }
            let inner = ipv6::Packet::new_unchecked(quoted);
            let mtu = u32::from_be_bytes(msg[4..8].try_into().ok()?);
            Some(TooBig {
                src: inner.src_addr().into(),
                dst: inner.dst_addr().into(),
                mtu: usize::try_from(mtu).unwrap_or(usize::MAX),
            })
        }
        _ => None,
    }
}

/// Cut a TCP segment too big for `mtu` into segments that fit, the way a
/// stack re-segments its queue after learning a smaller path MTU: each
/// piece carries the same header and options with its own sequence number,
/// FIN and PSH only on the last. `None` when `packet` fits, is not a whole
/// TCP segment, has IPv6 extension headers, or `mtu` leaves no room for
/// payload.
pub fn segment(packet: &[u8], mtu: usize) -> Option<Vec<Vec<u8>>> {
    let l = layout(packet)?;
    let ip_len = if l.src.is_ipv4() { usize::from(packet[0] & 0x0f) * 4 } else { ipv6::HEADER_LEN };
    if l.end <= mtu || l.proto != ip_protocol::TCP || !l.whole || l.l4 != ip_len {
        return None;
    }
    let tcp = tcp::Packet::new_checked(&packet[l.l4..l.end]).ok()?;
    let head = l.l4 + tcp.header_len();
    let room = mtu.checked_sub(head).filter(|&r| r > 0)?;
    let payload = &packet[head..l.end];
    let last_flags = tcp::Flags::FIN.bits() | tcp::Flags::PSH.bits();
    let flags_at = l.l4 + 13;
    let mut out = Vec::with_capacity(payload.len().div_ceil(room));
    for (i, chunk) in payload.chunks(room).enumerate() {
        let mut p = Vec::with_capacity(head + chunk.len());
        p.extend_from_slice(&packet[..head]);
        p.extend_from_slice(chunk);
        let seq = tcp.seq_number().wrapping_add((i * room) as u32);
        p[l.l4 + 4..l.l4 + 8].copy_from_slice(&seq.to_be_bytes());
        if (i + 1) * room < payload.len() {
            p[flags_at] &= !last_flags;
        }
        let len = p.len() as u16;
        if l.src.is_ipv4() {
            p[2..4].copy_from_slice(&len.to_be_bytes());
        } else {
            p[4..6].copy_from_slice(&(len - ipv6::HEADER_LEN as u16).to_be_bytes());
        }
        fix_checksums(&mut p);
        out.push(p);
    }
    Some(out)
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

    /// An IPv6/TCP segment of `payload` bytes with a 12-byte options area
    /// and FIN|PSH|ACK.
    fn v6_tcp(payload: usize) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 6, 64];
        p.extend_from_slice(&"fd10:1::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd10:2::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[0x30, 0x39, 0x00, 0x50, 0, 0, 0x10, 0, 0, 0, 0, 9, 0x80]);
        p.push(TCP_FIN | TCP_PSH | TCP_ACK);
        p.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 3]);
        p.extend((0..payload).map(|i| i as u8));
        let len = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&len.to_be_bytes());
        assert!(fix_checksums(&mut p));
        p
    }

    #[test]
    fn too_big_errors_quote_the_packet_and_name_the_mtu() {
        let mut v4 = v4_tcp();
        let router4: IpAddr = "192.0.0.8".parse().unwrap();
        v4[6] = 0;
        assert!(fix_checksums(&mut v4));
        assert_eq!(too_big_error(&v4, 40, router4), None, "DF clear: a router would fragment");
        let v4 = v4_tcp();
        let e = too_big_error(&v4, 40, router4).unwrap();
        assert!(checksums_ok(&e));
        assert_eq!(&e[20..28], &[3, 4, e[22], e[23], 0, 0, 0, 40]);
        assert_eq!(&e[28..], &v4[..]);
        let i = PacketInfo::parse(&e).unwrap();
        assert_eq!((i.src, i.dst, i.proto), (router4, IpAddr::from([10, 0, 0, 1]), 1));
        let seen = parse_too_big(&e).unwrap();
        assert_eq!(seen, TooBig { src: [10, 0, 0, 1].into(), dst: [10, 0, 0, 2].into(), mtu: 40 });
        assert_eq!(too_big_error(&e, 30, router4), None, "no error about an error");

        let v6 = v6_tcp(2000);
        let router6: IpAddr = "2001:db8:ffff::1".parse().unwrap();
        let e = too_big_error(&v6, 1280, router6).unwrap();
        assert_eq!(e.len(), 1280, "quotes as much as the minimum MTU holds");
        assert!(checksums_ok(&e));
        assert_eq!(&e[40..41], &[2]);
        assert_eq!(&e[44..48], &1280u32.to_be_bytes());
        assert_eq!(&e[48..], &v6[..1280 - 48]);
        let seen = parse_too_big(&e).unwrap();
        assert_eq!((seen.src, seen.mtu), ("fd10:1::1".parse().unwrap(), 1280));
        assert_eq!(too_big_error(&e, 100, router6), None);
        assert_eq!(too_big_error(&v6, 1280, router4), None, "router of the other family");
    }

    #[test]
    fn segments_are_cut_to_the_path_mtu() {
        let p = v6_tcp(3000);
        assert!(segment(&p, p.len()).is_none(), "fits");
        let pieces = segment(&p, 1280).unwrap();
        let lens: Vec<usize> = pieces.iter().map(|q| PacketInfo::parse(q).unwrap().payload_len).collect();
        assert_eq!(lens, vec![1208, 1208, 584]);
        let mut payload = Vec::new();
        for (k, q) in pieces.iter().enumerate() {
            assert!(q.len() <= 1280 && checksums_ok(q));
            let i = PacketInfo::parse(q).unwrap();
            let seq = u32::from_be_bytes(q[44..48].try_into().unwrap());
            assert_eq!(seq, 0x1000 + 1208 * k as u32);
            let last = k == pieces.len() - 1;
            assert_eq!(i.tcp_flags, if last { TCP_FIN | TCP_PSH | TCP_ACK } else { TCP_ACK });
            assert_eq!(&q[60..72], &p[60..72], "options kept");
            payload.extend_from_slice(&q[72..]);
        }
        assert_eq!(payload, p[72..]);
        let cut = segment(&v4_tcp(), 42).unwrap();
        assert_eq!(cut.len(), 2);
        assert!(cut.iter().all(|q| checksums_ok(q) && q.len() <= 42));
    }

    #[test]
    fn rejects_garbage() {
        assert!(PacketInfo::parse(&[]).is_none());
        assert!(PacketInfo::parse(&[0x45, 0, 0]).is_none());
        assert!(!checksums_ok(&[0x10; 30]));
    }
}
