//! Golden packets through the translation, each checked against a checksum
//! computed from scratch and the RFC 7915 field mapping.

use std::net::{IpAddr, SocketAddr};

use rvs_wire::{checksum, icmpv4, ip_protocol, ipv4, ipv6, tcp, udp};

use super::header::{self, Carried};
use super::icmp::{ErrorBack, translate_error};
use super::mss_room;
use crate::addr::Endpoint;
use crate::drop::DropReason;
use crate::packet::{IpInfo, MssRule, rewrite};

/// An ICMP message's type, code and the 4 bytes after its checksum.
type Msg = (u8, u8, u32);

fn ep(s: &str) -> Endpoint {
    s.parse::<SocketAddr>().unwrap().into()
}

/// An IP header of `src`'s family, traffic class/TOS 0x2e, flow label
/// 0x12345 (IPv6), TTL 64, in front of `l4`.
fn ip_packet(src: IpAddr, dst: IpAddr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    let h = header::len_for(dst);
    let mut pkt = vec![0u8; h + l4.len()];
    pkt[h..].copy_from_slice(l4);
    assert!(header::write(&mut pkt, src, dst, l4.len(), Carried { tos: 0x2e, ttl: 64, protocol }));
    if dst.is_ipv6() {
        ipv6::Packet::new_unchecked(&mut pkt[..]).set_flow_label(0x12345);
    }
    pkt
}

fn tcp_segment(src: Endpoint, dst: Endpoint, seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let repr = tcp::Repr {
        src_port: src.port,
        dst_port: dst.port,
        seq_number: seq,
        ack_number: (!syn).then_some(7000),
        flags: if syn { tcp::Flags::SYN } else { tcp::Flags(0) },
        window_len: 1000,
        max_seg_size: syn.then_some(1460),
        window_scale: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: Some((11, 22)),
        payload_len: payload.len(),
    };
    let mut seg = vec![0u8; repr.buffer_len()];
    seg[repr.header_len()..].copy_from_slice(payload);
    repr.emit(&mut tcp::Packet::new_unchecked(&mut seg[..]), src.addr, dst.addr);
    seg
}

fn tcp_packet(src: Endpoint, dst: Endpoint, seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    ip_packet(src.addr, dst.addr, ip_protocol::TCP, &tcp_segment(src, dst, seq, syn, payload))
}

fn info(pkt: &[u8], header_len: usize, protocol: u8) -> IpInfo {
    let (src, dst, ttl): (IpAddr, IpAddr, u8) = if pkt[0] >> 4 == 4 {
        let h = ipv4::Packet::new_unchecked(pkt);
        (h.src_addr().into(), h.dst_addr().into(), h.ttl())
    } else {
        let h = ipv6::Packet::new_unchecked(pkt);
        (h.src_addr().into(), h.dst_addr().into(), h.hop_limit())
    };
    IpInfo { header_len, total_len: pkt.len(), src, dst, protocol, ttl }
}

/// What the engine does with a packet of a translated connection: the
/// FullNAT rewrite, then the header swap in a slot-sized buffer.
fn forward(pkt: &[u8], header_len: usize, src: Endpoint, dst: Endpoint, mss: Option<MssRule>) -> Vec<u8> {
    // IPv4's protocol, or the next header of the last IPv6 header (at most one extension here).
    let protocol = match (pkt[0] >> 4, header_len) {
        (4, _) => pkt[9],
        (_, 40) => pkt[6],
        _ => pkt[40],
    };
    let ip = info(pkt, header_len, protocol);
    let mut buf = [0u8; 2048];
    buf[..pkt.len()].copy_from_slice(pkt);
    let _ = rewrite(&mut buf[..pkt.len()], &ip, src, dst, (1000, 0, 0, 0), mss, true);
    let carried = Carried::read(&buf, protocol, true);
    let len = header::swap(&mut buf, header_len, pkt.len(), src.addr, dst.addr, carried).unwrap();
    buf[..len].to_vec()
}

fn l4_ok(seg: &[u8], src: IpAddr, dst: IpAddr, protocol: u8) -> bool {
    let len = u32::try_from(seg.len()).unwrap();
    checksum::verify(checksum::pseudo_header(src, dst, protocol, len) + checksum::sum(seg))
}

#[test]
fn nat64_syn_gets_an_ipv4_header() {
    let (client, vip, laddr, real) =
        (ep("[2001:db8::7]:40000"), ep("[2001:db8::1]:80"), ep("10.0.3.1:5000"), ep("10.0.0.1:8080"));
    let pkt = tcp_packet(client, vip, 100, true, &[]);
    let out = forward(
        &pkt,
        40,
        laddr,
        real,
        Some(MssRule { clamp: u16::MAX, less: mss_room(client.addr, real.addr) }),
    );
    assert_eq!(out.len(), pkt.len() - 20);
    let h = ipv4::Packet::new_checked(&out[..]).unwrap();
    assert!(h.verify_checksum());
    assert_eq!((h.header_len(), h.dscp_ecn(), h.ttl(), h.protocol()), (20, 0x2e, 63, ip_protocol::TCP));
    assert!(h.dont_frag() && !h.more_frags() && h.ident() == 0);
    assert_eq!((IpAddr::from(h.src_addr()), IpAddr::from(h.dst_addr())), (laddr.addr, real.addr));
    assert!(l4_ok(h.payload(), laddr.addr, real.addr, ip_protocol::TCP));
    let t = tcp::Packet::new_checked(h.payload()).unwrap();
    let r = tcp::Repr::parse(&t, laddr.addr, real.addr).unwrap();
    assert_eq!((r.src_port, r.dst_port, r.seq_number), (5000, 8080, 1100));
    // From the IPv6 side to the IPv4 side the MSS stays.
    assert_eq!(r.max_seg_size, Some(1460));
}

#[test]
fn nat46_syn_gets_an_ipv6_header_and_a_lower_mss() {
    let (client, vip, laddr, real) =
        (ep("192.0.2.7:40000"), ep("10.0.2.1:80"), ep("[fd10:77:3::1]:5000"), ep("[fd10:77:1::11]:8080"));
    let pkt = tcp_packet(client, vip, 100, true, &[]);
    let out = forward(
        &pkt,
        20,
        laddr,
        real,
        Some(MssRule { clamp: u16::MAX, less: mss_room(client.addr, real.addr) }),
    );
    assert_eq!(out.len(), pkt.len() + 20);
    let h = ipv6::Packet::new_checked(&out[..]).unwrap();
    assert_eq!((h.traffic_class(), h.flow_label(), h.hop_limit()), (0x2e, 0, 63));
    assert_eq!((h.next_header(), usize::from(h.payload_len())), (ip_protocol::TCP, pkt.len() - 20));
    assert_eq!((IpAddr::from(h.src_addr()), IpAddr::from(h.dst_addr())), (laddr.addr, real.addr));
    assert!(l4_ok(h.payload(), laddr.addr, real.addr, ip_protocol::TCP));
    let r = tcp::Repr::parse(&tcp::Packet::new_checked(h.payload()).unwrap(), laddr.addr, real.addr).unwrap();
    assert_eq!(r.max_seg_size, Some(1440));
}

#[test]
fn data_both_ways_keeps_payload_and_checksums() {
    let (client, vip, laddr, real) =
        (ep("[2001:db8::7]:40000"), ep("[2001:db8::1]:80"), ep("10.0.3.1:5000"), ep("10.0.0.1:8080"));
    let payload: Vec<u8> = (0..=255).cycle().take(1001).collect();
    let to_real = forward(&tcp_packet(client, vip, 5, false, &payload), 40, laddr, real, None);
    let h = ipv4::Packet::new_checked(&to_real[..]).unwrap();
    assert!(l4_ok(h.payload(), laddr.addr, real.addr, ip_protocol::TCP));
    assert!(h.payload().ends_with(&payload));
    let to_client = forward(&tcp_packet(real, laddr, 5, false, &payload), 20, vip, client, None);
    let h = ipv6::Packet::new_checked(&to_client[..]).unwrap();
    assert!(l4_ok(h.payload(), vip.addr, client.addr, ip_protocol::TCP));
    assert!(h.payload().ends_with(&payload));
}

#[test]
fn extension_headers_are_left_behind() {
    let (client, vip, laddr, real) =
        (ep("[2001:db8::7]:40000"), ep("[2001:db8::1]:80"), ep("10.0.3.1:5000"), ep("10.0.0.1:8080"));
    let seg = tcp_segment(client, vip, 9, false, b"hello");
    // A hop-by-hop header of 8 bytes (two PadN options) before TCP.
    let mut ext = vec![ip_protocol::TCP, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(&seg);
    let mut pkt = ip_packet(client.addr, vip.addr, ip_protocol::TCP, &ext);
    ipv6::Packet::new_unchecked(&mut pkt[..]).set_next_header(0);
    let out = forward(&pkt, 48, laddr, real, None);
    let h = ipv4::Packet::new_checked(&out[..]).unwrap();
    assert_eq!((out.len(), h.protocol()), (20 + seg.len(), ip_protocol::TCP));
    assert!(l4_ok(h.payload(), laddr.addr, real.addr, ip_protocol::TCP));
}

#[test]
fn udp_without_checksum_gets_one_over_ipv6() {
    let (client, vip, laddr, real) =
        (ep("192.0.2.7:5353"), ep("10.0.2.1:53"), ep("[fd10:77:3::1]:5000"), ep("[fd10:77:1::11]:53"));
    let repr = udp::Repr { src_port: client.port, dst_port: vip.port, payload_len: 5 };
    let mut dgram = vec![0u8; repr.buffer_len()];
    dgram[8..].copy_from_slice(b"query");
    repr.emit(&mut udp::Packet::new_unchecked(&mut dgram[..]), client.addr, vip.addr);
    let with_sum =
        forward(&ip_packet(client.addr, vip.addr, ip_protocol::UDP, &dgram), 20, laddr, real, None);
    udp::Packet::new_unchecked(&mut dgram[..]).set_checksum(0);
    let without = forward(&ip_packet(client.addr, vip.addr, ip_protocol::UDP, &dgram), 20, laddr, real, None);
    for out in [with_sum, without] {
        let h = ipv6::Packet::new_checked(&out[..]).unwrap();
        assert_ne!(udp::Packet::new_checked(h.payload()).unwrap().checksum(), 0);
        assert!(l4_ok(h.payload(), laddr.addr, real.addr, ip_protocol::UDP));
    }
    // And back: the answer over IPv4 verifies too.
    let mut answer = vec![0u8; repr.buffer_len()];
    let back = udp::Repr { src_port: real.port, dst_port: laddr.port, payload_len: 5 };
    back.emit(&mut udp::Packet::new_unchecked(&mut answer[..]), real.addr, laddr.addr);
    let out = forward(&ip_packet(real.addr, laddr.addr, ip_protocol::UDP, &answer), 40, vip, client, None);
    let h = ipv4::Packet::new_checked(&out[..]).unwrap();
    assert!(h.verify_checksum() && l4_ok(h.payload(), vip.addr, client.addr, ip_protocol::UDP));
}

#[test]
fn swap_refuses_what_does_not_fit() {
    let pkt = tcp_packet(ep("192.0.2.7:1"), ep("10.0.2.1:2"), 0, false, &[0; 1990]);
    let mut buf = [0u8; 2048];
    buf[..pkt.len()].copy_from_slice(&pkt);
    let c = Carried::read(&buf, ip_protocol::TCP, false);
    let (s, d) = (ep("[::1]:1").addr, ep("[::2]:2").addr);
    assert_eq!(header::swap(&mut buf, 20, pkt.len(), s, d, c), None);
    assert_eq!(header::swap(&mut buf, 20, 10, s, d, c), None);
}

/// A NAT64 connection and what errors about it become.
struct Nat64 {
    client: Endpoint,
    vip: Endpoint,
    laddr: Endpoint,
    real: Endpoint,
}

const C2R_SEQ: u32 = 1000;

impl Nat64 {
    fn new() -> Self {
        Self {
            client: ep("[2001:db8::7]:40000"),
            vip: ep("[2001:db8::1]:80"),
            laddr: ep("10.0.3.1:5000"),
            real: ep("10.0.0.1:8080"),
        }
    }

    /// An ICMPv4 error from a router on the real side about our LIP→real segment.
    fn icmpv4_error(&self, msg_type: u8, code: u8, rest: u32) -> Vec<u8> {
        let quoted = tcp_packet(self.laddr, self.real, 100 + C2R_SEQ, false, &[1; 100]);
        let mut msg = vec![0u8; 8 + quoted.len()];
        let n = icmpv4::emit_error(&mut msg, msg_type, code, rest, &quoted).unwrap();
        msg.truncate(n);
        ip_packet(ep("10.0.9.9:0").addr, self.laddr.addr, ip_protocol::ICMP, &msg)
    }

    fn to_client(&self) -> ErrorBack {
        ErrorBack {
            src: self.vip.addr,
            dst: self.client.addr,
            quoted_src: self.client,
            quoted_dst: self.vip,
            seq_back: C2R_SEQ,
        }
    }

    /// An ICMPv6 error from the client side about our VIP→client segment.
    fn icmpv6_error(&self, msg_type: u8, code: u8, rest: u32) -> Vec<u8> {
        let quoted = tcp_packet(self.vip, self.client, 500, false, &[2; 100]);
        let mut msg = vec![msg_type, code, 0, 0];
        msg.extend_from_slice(&rest.to_be_bytes());
        msg.extend_from_slice(&quoted);
        let router = ep("[2001:db8::ff]:0").addr;
        let sum = checksum::pseudo_header(router, self.vip.addr, ip_protocol::ICMPV6, msg.len() as u32)
            + checksum::sum(&msg);
        msg[2..4].copy_from_slice(&checksum::finish(sum).to_be_bytes());
        ip_packet(router, self.vip.addr, ip_protocol::ICMPV6, &msg)
    }

    fn to_real(&self) -> ErrorBack {
        ErrorBack {
            src: self.laddr.addr,
            dst: self.real.addr,
            quoted_src: self.real,
            quoted_dst: self.laddr,
            seq_back: 0,
        }
    }
}

/// The ICMPv6 message of `pkt` (checksum verified over the pseudo-header):
/// type, code, the 4 bytes after the checksum, and the quote.
fn icmpv6_parts(pkt: &[u8]) -> (u8, u8, u32, Vec<u8>) {
    let h = ipv6::Packet::new_checked(pkt).unwrap();
    assert_eq!(h.next_header(), ip_protocol::ICMPV6);
    let msg = h.payload();
    let sum = checksum::pseudo_header(h.src_addr().into(), h.dst_addr().into(), 58, msg.len() as u32);
    assert!(checksum::verify(sum + checksum::sum(msg)), "ICMPv6 checksum");
    (msg[0], msg[1], u32::from_be_bytes(msg[4..8].try_into().unwrap()), msg[8..].to_vec())
}

#[test]
fn frag_needed_becomes_packet_too_big_with_the_client_packet_quoted() {
    let n = Nat64::new();
    let pkt = n.icmpv4_error(icmpv4::msg_type::DEST_UNREACHABLE, icmpv4::unreachable_code::FRAG_NEEDED, 1400);
    let mut out = [0u8; 2048];
    let len = translate_error(&pkt, 20, &mut out, &n.to_client(), true).unwrap();
    let h = ipv6::Packet::new_checked(&out[..len]).unwrap();
    assert_eq!(
        (IpAddr::from(h.src_addr()), IpAddr::from(h.dst_addr()), h.hop_limit()),
        (n.vip.addr, n.client.addr, 63)
    );
    let (t, c, mtu, quote) = icmpv6_parts(&out[..len]);
    assert_eq!((t, c, mtu), (2, 0, 1420));
    // The quote is what the client sent: its header, ports and sequence number.
    let q = ipv6::Packet::new_checked(&quote[..]).unwrap();
    assert_eq!((IpAddr::from(q.src_addr()), IpAddr::from(q.dst_addr())), (n.client.addr, n.vip.addr));
    assert_eq!((q.next_header(), q.payload_len(), q.traffic_class()), (ip_protocol::TCP, 132, 0x2e));
    let seg = q.payload();
    assert!(l4_ok(seg, n.client.addr, n.vip.addr, ip_protocol::TCP), "quoted segment checksum");
    let t = tcp::Packet::new_checked(seg).unwrap();
    assert_eq!((t.src_port(), t.dst_port(), t.seq_number()), (40000, 80, 100));
}

#[test]
fn icmpv4_errors_map_per_rfc_7915() {
    use icmpv4::msg_type::*;
    let n = Nat64::new();
    let cases: [(Msg, Result<Msg, DropReason>); 8] = [
        ((DEST_UNREACHABLE, 4, 1000), Ok((2, 0, 1280))),
        ((DEST_UNREACHABLE, 4, 0), Ok((2, 0, 1280))),
        ((DEST_UNREACHABLE, 3, 0), Ok((1, 4, 0))),
        ((DEST_UNREACHABLE, 1, 0), Ok((1, 0, 0))),
        ((DEST_UNREACHABLE, 2, 0), Ok((4, 1, 6))),
        ((TIME_EXCEEDED, 0, 0), Ok((3, 0, 0))),
        ((PARAM_PROBLEM, 0, 9 << 24), Ok((4, 0, 6))),
        ((DEST_UNREACHABLE, 14, 0), Err(DropReason::IcmpUntranslatable)),
    ];
    for ((t, c, rest), want) in cases {
        let pkt = n.icmpv4_error(t, c, rest);
        let mut out = [0u8; 2048];
        let got = translate_error(&pkt, 20, &mut out, &n.to_client(), false).map(|len| {
            let (t, c, r, _) = icmpv6_parts(&out[..len]);
            (t, c, r)
        });
        assert_eq!(got, want, "ICMPv4 {t}/{c}");
    }
}

#[test]
fn packet_too_big_becomes_frag_needed_with_the_real_packet_quoted() {
    let n = Nat64::new();
    let pkt = n.icmpv6_error(2, 0, 1400);
    let mut out = [0u8; 2048];
    let len = translate_error(&pkt, 40, &mut out, &n.to_real(), true).unwrap();
    let h = ipv4::Packet::new_checked(&out[..len]).unwrap();
    assert!(h.verify_checksum());
    assert_eq!(
        (IpAddr::from(h.src_addr()), IpAddr::from(h.dst_addr()), h.protocol()),
        (n.laddr.addr, n.real.addr, 1)
    );
    let icmp = icmpv4::Packet::new_checked(h.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!((icmp.msg_type(), icmp.code(), icmp.next_hop_mtu()), (3, 4, 1380));
    let q = ipv4::Packet::new_checked(icmp.data()).unwrap();
    assert!(q.verify_checksum());
    assert_eq!((IpAddr::from(q.src_addr()), IpAddr::from(q.dst_addr())), (n.real.addr, n.laddr.addr));
    assert!(l4_ok(q.payload(), n.real.addr, n.laddr.addr, ip_protocol::TCP));
    let t = tcp::Packet::new_checked(q.payload()).unwrap();
    assert_eq!((t.src_port(), t.dst_port(), t.seq_number()), (8080, 5000, 500));
}

#[test]
fn icmpv6_errors_map_per_rfc_7915() {
    let n = Nat64::new();
    let cases: [(Msg, Result<Msg, DropReason>); 7] = [
        ((1, 4, 0), Ok((3, 3, 0))),
        ((1, 0, 0), Ok((3, 1, 0))),
        ((1, 1, 0), Ok((3, 10, 0))),
        ((3, 1, 0), Ok((11, 1, 0))),
        ((4, 0, 7), Ok((12, 0, 8 << 24))),
        ((4, 1, 6), Ok((3, 2, 0))),
        ((4, 0, 2), Err(DropReason::IcmpUntranslatable)),
    ];
    for ((t, c, rest), want) in cases {
        let pkt = n.icmpv6_error(t, c, rest);
        let mut out = [0u8; 2048];
        let got = translate_error(&pkt, 40, &mut out, &n.to_real(), false).map(|len| {
            let icmp = icmpv4::Packet::new_checked(&out[20..len]).unwrap();
            assert!(icmp.verify_checksum());
            (icmp.msg_type(), icmp.code(), icmp.rest_of_header())
        });
        assert_eq!(got, want, "ICMPv6 {t}/{c}");
    }
}

#[test]
fn a_long_icmpv6_quote_is_cut_to_the_icmpv4_limit() {
    let n = Nat64::new();
    let quoted = tcp_packet(n.vip, n.client, 500, false, &[2; 1000]);
    let mut msg = vec![2, 0, 0, 0, 0, 0, 5, 0xdc];
    msg.extend_from_slice(&quoted);
    let router = ep("[2001:db8::ff]:0").addr;
    let sum = checksum::pseudo_header(router, n.vip.addr, 58, msg.len() as u32) + checksum::sum(&msg);
    msg[2..4].copy_from_slice(&checksum::finish(sum).to_be_bytes());
    let pkt = ip_packet(router, n.vip.addr, ip_protocol::ICMPV6, &msg);
    let mut out = [0u8; 2048];
    let len = translate_error(&pkt, 40, &mut out, &n.to_real(), false).unwrap();
    assert_eq!(len, 576);
    let icmp = icmpv4::Packet::new_checked(&out[20..len]).unwrap();
    assert!(icmp.verify_checksum());
    // The quoted header still announces the whole datagram.
    assert_eq!(ipv4::Packet::new_unchecked(icmp.data()).total_len(), 20 + 1032);
}

#[test]
fn mss_room_only_from_ipv4_to_ipv6() {
    let (v4, v6) = (ep("10.0.0.1:1").addr, ep("[::1]:1").addr);
    assert_eq!((mss_room(v4, v6), mss_room(v6, v4), mss_room(v4, v4), mss_room(v6, v6)), (20, 0, 0, 0));
}

#[test]
fn translate_into_a_slot_equals_swap_in_place() {
    let (client, vip, laddr, real) =
        (ep("192.0.2.7:40000"), ep("10.0.2.1:80"), ep("[fd10:77:3::1]:5000"), ep("[fd10:77:1::11]:8080"));
    let pkt = tcp_packet(client, vip, 100, false, b"payload");
    let c = Carried::read(&pkt, ip_protocol::TCP, true);
    let mut slot = [0u8; 2048];
    let n = header::translate(&mut slot, &pkt, 20, laddr.addr, real.addr, c).unwrap();
    let mut buf = [0u8; 2048];
    buf[..pkt.len()].copy_from_slice(&pkt);
    let m = header::swap(&mut buf, 20, pkt.len(), laddr.addr, real.addr, c).unwrap();
    assert_eq!(&slot[..n], &buf[..m]);
    assert_eq!(header::translate(&mut [0u8; 60], &pkt, 20, laddr.addr, real.addr, c), None);
}

#[test]
fn synproxy_announces_the_ipv6_mss_when_translating() {
    let (v4, v6) = (ep("10.0.0.1:1").addr, ep("[::1]:1").addr);
    assert_eq!(super::synproxy_mss(1460, 1460, v4, &[v6]), 1440);
    assert_eq!(super::synproxy_mss(1440, 1460, v6, &[v4]), 1440);
    assert_eq!(super::synproxy_mss(1200, 1460, v4, &[v6]), 1200);
    assert_eq!(super::synproxy_mss(1460, 1460, v4, &[v4]), 1460);
    assert_eq!(super::synproxy_mss(1460, 1460, v4, &[]), 1460);
}
