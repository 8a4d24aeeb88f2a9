//! Packets for engine tests, built with etherparse (an independent
//! implementation) and read back with a few lines of plain byte parsing, so
//! the tests do not trust the code they test.
#![allow(dead_code, unreachable_pub, unused_macros, unused_imports)]

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{PacketBuilder, TcpOptionElement};
use rvs_core::{Endpoint, Engine, EngineConfig, Instant, Proto, RealConfig, SchedKind, ServiceConfig};
use rvs_wire::tcp::Flags;

pub const CLIENT: &str = "192.0.2.1:40000";
pub const CLIENT_IP: &str = "192.0.2.1";
pub const VIP: &str = "10.0.0.1:80";
pub const LIP: &str = "10.1.0.1";
pub const LIP_PORT: &str = "10.1.0.1:4000";

/// The address family a test runs in.
///
/// Tests are written in the IPv4 test plan. Run in IPv6 (see
/// [`family_tests`]), the helpers here carry every plan address across at
/// the packet boundary: `a.b.c.d` is `2001:db8:a:b:c::d` (its decimal digits
/// read as hex groups) in the packets and endpoints given to the engine, and
/// is read back as `a.b.c.d` from the packets it sends, after checking they
/// are of the test's family. So one test body runs in both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

thread_local! {
    static FAMILY: Cell<Family> = const { Cell::new(Family::V4) };
}

/// The family of the test running on this thread.
pub fn family() -> Family {
    FAMILY.with(Cell::get)
}

/// Run `test` in family `f` (each test has its own thread).
pub fn run_in(f: Family, test: impl FnOnce()) {
    FAMILY.with(|c| c.set(f));
    test();
}

impl Family {
    /// ICMP type and code of "too big": fragmentation needed, or ICMPv6's
    /// packet too big.
    pub fn icmp_too_big(self) -> (u8, u8) {
        if self == Self::V4 { (3, 4) } else { (2, 0) }
    }

    /// ICMP type and code of "host (address) unreachable".
    pub fn icmp_unreachable(self) -> (u8, u8) {
        if self == Self::V4 { (3, 1) } else { (1, 3) }
    }

    /// ICMP type and code of an echo request.
    pub fn icmp_echo(self) -> (u8, u8) {
        if self == Self::V4 { (8, 0) } else { (128, 0) }
    }
}

/// A plan address as the engine sees it in the test's family.
pub fn to_wire(a: IpAddr) -> IpAddr {
    match (family(), a) {
        (Family::V6, IpAddr::V4(v4)) => {
            let hex = |d: u8| u16::from_str_radix(&d.to_string(), 16).unwrap();
            let [a, b, c, d] = v4.octets();
            Ipv6Addr::new(0x2001, 0xdb8, hex(a), hex(b), hex(c), 0, 0, hex(d)).into()
        }
        _ => a,
    }
}

/// An address the engine sent, as the plan names it; it must be of the
/// test's family.
pub fn from_wire(a: IpAddr) -> IpAddr {
    match (family(), a) {
        (Family::V4, IpAddr::V4(_)) => a,
        (Family::V6, IpAddr::V6(v6)) => {
            let g = v6.segments();
            assert_eq!((g[0], g[1], g[5], g[6]), (0x2001, 0xdb8, 0, 0), "{v6} is not in the test plan");
            let dec = |x: u16| format!("{x:x}").parse::<u8>().unwrap();
            Ipv4Addr::new(dec(g[2]), dec(g[3]), dec(g[4]), dec(g[7])).into()
        }
        (f, a) => panic!("{a} in a {f:?} test"),
    }
}

fn sa_to_wire(s: SocketAddr) -> SocketAddr {
    SocketAddr::new(to_wire(s.ip()), s.port())
}

fn sa_from_wire(s: SocketAddr) -> SocketAddr {
    SocketAddr::new(from_wire(s.ip()), s.port())
}

/// The MSS of a link whose IPv4 MSS is `v4`, in the test's family: IPv6's
/// header is 20 bytes longer.
pub fn link_mss(v4: u16) -> u16 {
    if family() == Family::V6 { v4 - 20 } else { v4 }
}

/// A plan endpoint, in the test's family.
pub fn ep(s: &str) -> Endpoint {
    sa(s).into()
}

/// A plan address, in the test's family.
pub fn ip(s: &str) -> IpAddr {
    to_wire(s.parse().unwrap())
}

/// An endpoint of the family the test does not run in: `v6` (an IPv6
/// `[address]:port`) in an IPv4 test, a plan address in IPv4 in an IPv6 one.
pub fn other_family(v6: &str) -> Endpoint {
    let s = if family() == Family::V4 { v6 } else { "10.2.0.1:80" };
    s.parse::<SocketAddr>().unwrap().into()
}

/// An endpoint the engine reports (a connection's), as the plan names it.
pub fn plan(e: Endpoint) -> SocketAddr {
    sa_from_wire(SocketAddr::new(e.addr, e.port))
}

/// Test modules that run a test body once per family, as `name::v4` and
/// `name::v6`.
macro_rules! family_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn v4() {
                $crate::util::run_in($crate::util::Family::V4, super::$name);
            }

            #[test]
            fn v6() {
                $crate::util::run_in($crate::util::Family::V6, super::$name);
            }
        }
    )*};
}
pub(crate) use family_tests;

/// A plan socket address, in the test's family.
pub fn sa(s: &str) -> SocketAddr {
    sa_to_wire(s.parse().unwrap())
}

pub fn lb(reals: &[&str]) -> Engine {
    lb_with(reals, |_| {}, SchedKind::Rr)
}

pub fn lb_proto(proto: Proto, reals: &[&str]) -> Engine {
    build(proto, reals, |_| {}, SchedKind::Rr)
}

pub fn lb_with(reals: &[&str], f: impl FnOnce(&mut EngineConfig), sched: SchedKind) -> Engine {
    build(Proto::Tcp, reals, f, sched)
}

/// An engine with one service on the plan's VIP (port 80 for TCP, 53 for
/// UDP) with these reals, in the test's family.
fn build(proto: Proto, reals: &[&str], f: impl FnOnce(&mut EngineConfig), sched: SchedKind) -> Engine {
    let mut cfg = EngineConfig::default();
    f(&mut cfg);
    let mut e = Engine::new(cfg, [42; 32], Instant::ZERO);
    let vip = ep(if proto == Proto::Udp { "10.0.0.1:53" } else { VIP });
    let mut s = ServiceConfig::new(proto, vip);
    s.sched = sched;
    s.laddrs = vec![ip(LIP)];
    e.add_service(s).unwrap();
    for r in reals {
        e.add_real(proto, vip, RealConfig { endpoint: ep(r), weight: 1 }).unwrap();
    }
    e
}

pub fn tcp(src: &str, dst: &str, seq: u32, ack: Option<u32>, flags: Flags, payload: &[u8]) -> Vec<u8> {
    tcp_full(sa(src), sa(dst), seq, ack, flags, &[], payload)
}

pub fn tcp_raw(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: Option<u32>,
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    tcp_full(src, dst, seq, ack, flags, &[], payload)
}

pub fn tcp_opts(
    src: &str,
    dst: &str,
    seq: u32,
    ack: Option<u32>,
    flags: Flags,
    mss: Option<u16>,
    sack: &[(u32, u32)],
) -> Vec<u8> {
    tcp_full(sa(src), sa(dst), seq, ack, flags, &options(mss, sack), &[])
}

pub fn tcp_opts_raw(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: Option<u32>,
    flags: Flags,
    mss: Option<u16>,
    sack: &[(u32, u32)],
) -> Vec<u8> {
    tcp_full(src, dst, seq, ack, flags, &options(mss, sack), &[])
}

fn options(mss: Option<u16>, sack: &[(u32, u32)]) -> Vec<TcpOptionElement> {
    let mut opts = Vec::new();
    if let Some(m) = mss {
        opts.push(TcpOptionElement::MaximumSegmentSize(m));
    }
    if let Some((&first, rest)) = sack.split_first() {
        let mut more = [None; 3];
        for (i, &b) in rest.iter().take(3).enumerate() {
            more[i] = Some(b);
        }
        opts.push(TcpOptionElement::Noop);
        opts.push(TcpOptionElement::Noop);
        opts.push(TcpOptionElement::SelectiveAcknowledgement(first, more));
    }
    opts
}

/// The start of a packet from `src` to `dst`, IPv4 (TTL 64) or IPv6 (hop
/// limit 64) as the addresses are.
pub fn ip_builder(src: IpAddr, dst: IpAddr) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families {src} {dst}"),
    }
}

pub fn tcp_full(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: Option<u32>,
    flags: Flags,
    opts: &[TcpOptionElement],
    payload: &[u8],
) -> Vec<u8> {
    let (src, dst) = (sa_to_wire(src), sa_to_wire(dst));
    let mut b = ip_builder(src.ip(), dst.ip()).tcp(src.port(), dst.port(), seq, 64240);
    if flags.syn() {
        b = b.syn();
    }
    if flags.fin() {
        b = b.fin();
    }
    if flags.rst() {
        b = b.rst();
    }
    if flags.psh() {
        b = b.psh();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    let mut out = Vec::new();
    b.options(opts).unwrap().write(&mut out, payload).unwrap();
    out
}

pub fn udp(src: &str, dst: &str, payload: &[u8], with_checksum: bool) -> Vec<u8> {
    let (s, d) = (sa(src), sa(dst));
    let mut out = Vec::new();
    ip_builder(s.ip(), d.ip()).udp(s.port(), d.port()).write(&mut out, payload).unwrap();
    if !with_checksum {
        let at = ip_header_len(&out) + 6;
        out[at..at + 2].fill(0);
    }
    out
}

/// `pkt` with its TTL or hop limit set to `ttl` (IPv4's header checksum
/// computed again).
pub fn with_ttl(mut pkt: Vec<u8>, ttl: u8) -> Vec<u8> {
    if pkt[0] >> 4 == 6 {
        pkt[7] = ttl;
    } else {
        pkt[8] = ttl;
        let ihl = ip_header_len(&pkt);
        pkt[10..12].fill(0);
        let c = !fold(sum(&pkt[..ihl]));
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
    }
    pkt
}

/// `pkt` as the first fragment of a larger packet: IPv4's more-fragments
/// flag, or an IPv6 fragment header.
pub fn as_fragment(mut pkt: Vec<u8>) -> Vec<u8> {
    if pkt[0] >> 4 == 6 {
        let mut frag = with_ext_headers(&pkt, &[(44, 0)]);
        frag[43] = 1; // more fragments
        frag
    } else {
        pkt[6] |= 0x20;
        pkt
    }
}

/// `pkt` with IPv6 extension headers inserted after the fixed header:
/// each (next-header value, 8-byte units after the first 8) becomes a header
/// of that type and length padded with a PadN option (or zeros).
pub fn with_ext_headers(pkt: &[u8], headers: &[(u8, u8)]) -> Vec<u8> {
    assert_eq!(pkt[0] >> 4, 6);
    let mut out = pkt[..40].to_vec();
    let upper = pkt[6];
    if let Some(&(first, _)) = headers.first() {
        out[6] = first;
    }
    for (i, &(_, len)) in headers.iter().enumerate() {
        let next = headers.get(i + 1).map_or(upper, |h| h.0);
        let size = (usize::from(len) + 1) * 8;
        let mut h = vec![0u8; size];
        h[0] = next;
        h[1] = len;
        h[2] = 1;
        h[3] = (size - 4) as u8;
        out.extend_from_slice(&h);
    }
    out.extend_from_slice(&pkt[40..]);
    let payload_len = (out.len() - 40) as u16;
    out[4..6].copy_from_slice(&payload_len.to_be_bytes());
    out
}

/// An ICMP (IPv4) or ICMPv6 message from `src` to `dst` quoting `quote`: for
/// IPv4 the IP header and 8 bytes, for IPv6 as much as RFC 4443 allows.
/// `mtu` is the next-hop MTU of fragmentation needed or packet too big.
pub fn icmp_error(src: &str, dst: &str, ty: u8, code: u8, mtu: u16, quote: &[u8]) -> Vec<u8> {
    let (s, d) = (ip(src), ip(dst));
    let rest = [0, 0, (mtu >> 8) as u8, mtu as u8];
    let mut out = Vec::new();
    match (s, d) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64)
            .icmpv4_raw(ty, code, rest)
            .write(&mut out, &quote[..quote.len().min(28)]),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64)
            .icmpv6_raw(ty, code, rest)
            .write(&mut out, &quote[..quote.len().min(1280 - 48)]),
        _ => panic!("mixed families {src} {dst}"),
    }
    .unwrap();
    out
}

/// Ones'-complement sum, independent of the code under test.
fn sum(data: &[u8]) -> u32 {
    data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Whether the transport checksum of `l4` verifies with the pseudo-header of
/// the IPv4 or IPv6 packet `ip`.
fn l4_ok(ip: &[u8], l4: &[u8], proto: u8) -> bool {
    let addrs = if ip[0] >> 4 == 6 { &ip[8..40] } else { &ip[12..20] };
    let s = sum(addrs) + u32::from(proto) + l4.len() as u32 + sum(l4);
    fold(s) == 0xffff
}

/// IP and transport checksums of a TCP packet, without reading its options
/// (which may be anything).
pub fn sums_ok(p: &[u8]) -> bool {
    let (ihl, _, total) = ip_layout(p);
    let ip_ok = p[0] >> 4 == 6 || fold(sum(&p[..ihl])) == 0xffff;
    ip_ok && l4_ok(p, &p[ihl..total], 6)
}

/// Bytes before the transport header: IPv4 header with options, or IPv6
/// fixed header and its hop-by-hop, routing and destination options headers.
pub fn ip_header_len(p: &[u8]) -> usize {
    ip_layout(p).0
}

/// (bytes before the transport header, transport protocol, end of packet).
fn ip_layout(p: &[u8]) -> (usize, u8, usize) {
    if p[0] >> 4 == 4 {
        return (usize::from(p[0] & 15) * 4, p[9], usize::from(u16::from_be_bytes([p[2], p[3]])));
    }
    let (mut at, mut next) = (40, p[6]);
    while matches!(next, 0 | 43 | 60) {
        next = p[at];
        at += (usize::from(p[at + 1]) + 1) * 8;
    }
    (at, next, 40 + usize::from(u16::from_be_bytes([p[4], p[5]])))
}

/// The source and destination addresses of an IPv4 or IPv6 packet.
pub fn ip_addrs(p: &[u8]) -> (IpAddr, IpAddr) {
    if p[0] >> 4 == 6 {
        let a = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&p[at..at + 16]).unwrap());
        (a(8), a(24))
    } else {
        let a = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&p[at..at + 4]).unwrap());
        (a(12), a(16))
    }
}

#[derive(Debug)]
pub struct Seen {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub ttl: u8,
    pub seq: u32,
    pub ack: u32,
    pub flags: Flags,
    pub mss: Option<u16>,
    pub sack: Vec<(u32, u32)>,
    /// The address in a TOA option (kind 254, length 8 or 20).
    pub toa: Option<SocketAddr>,
    /// TCP header length.
    pub header_len: usize,
    pub payload: Vec<u8>,
    pub udp_checksum: Option<u16>,
    pub checksums_ok: bool,
}

pub fn parse(p: &[u8]) -> Seen {
    let (ihl, proto, total) = ip_layout(p);
    let v6 = p[0] >> 4 == 6;
    // IPv6 has no header checksum.
    let ip_ok = v6 || fold(sum(&p[..ihl])) == 0xffff;
    let (src_ip, dst_ip) = ip_addrs(p);
    let (src_ip, dst_ip) = (from_wire(src_ip), from_wire(dst_ip));
    let l4 = &p[ihl..total];
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    let mut seen = Seen {
        src: SocketAddr::new(src_ip, port(0)),
        dst: SocketAddr::new(dst_ip, port(2)),
        ttl: if v6 { p[7] } else { p[8] },
        seq: 0,
        ack: 0,
        flags: Flags::from_bits(0),
        mss: None,
        sack: Vec::new(),
        toa: None,
        header_len: 0,
        payload: Vec::new(),
        udp_checksum: None,
        checksums_ok: false,
    };
    match proto {
        6 => {
            let word = |at: usize| u32::from_be_bytes([l4[at], l4[at + 1], l4[at + 2], l4[at + 3]]);
            seen.seq = word(4);
            seen.ack = word(8);
            seen.flags = Flags::from_bits(l4[13]);
            let hl = usize::from(l4[12] >> 4) * 4;
            let mut i = 20;
            while i < hl {
                match l4[i] {
                    0 => break,
                    1 => i += 1,
                    kind => {
                        let len = usize::from(l4[i + 1]);
                        if kind == 2 {
                            seen.mss = Some(u16::from_be_bytes([l4[i + 2], l4[i + 3]]));
                        }
                        if kind == 254 && len == 8 {
                            let a = Ipv4Addr::new(l4[i + 4], l4[i + 5], l4[i + 6], l4[i + 7]);
                            seen.toa = Some(sa_from_wire(SocketAddr::new(a.into(), port(i + 2))));
                        }
                        if kind == 254 && len == 20 {
                            let a = Ipv6Addr::from(<[u8; 16]>::try_from(&l4[i + 4..i + 20]).unwrap());
                            seen.toa = Some(sa_from_wire(SocketAddr::new(a.into(), port(i + 2))));
                        }
                        if kind == 5 {
                            for b in l4[i + 2..i + len].chunks(8) {
                                let w = |j: usize| u32::from_be_bytes([b[j], b[j + 1], b[j + 2], b[j + 3]]);
                                seen.sack.push((w(0), w(4)));
                            }
                        }
                        i += len.max(2);
                    }
                }
            }
            seen.header_len = hl;
            seen.payload = l4[hl..].to_vec();
            seen.checksums_ok = ip_ok && l4_ok(p, l4, 6);
        }
        17 => {
            let c = port(6);
            seen.udp_checksum = Some(c);
            seen.payload = l4[8..].to_vec();
            seen.checksums_ok = ip_ok && ((c == 0 && !v6) || l4_ok(p, l4, 17));
        }
        _ => {}
    }
    seen
}

#[derive(Debug)]
pub struct QuotedError {
    pub outer_src: String,
    pub outer_dst: String,
    pub quoted_src: SocketAddr,
    pub quoted_dst: SocketAddr,
    pub quoted_seq: u32,
    pub mtu: u16,
    pub checksums_ok: bool,
}

pub fn parse_icmp(p: &[u8]) -> QuotedError {
    let (ihl, proto, total) = ip_layout(p);
    let v6 = p[0] >> 4 == 6;
    let icmp = &p[ihl..total];
    let q = &icmp[8..];
    let (qihl, _, _) = ip_layout(q);
    let l4 = &q[qihl..];
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    let (outer_src, outer_dst) = ip_addrs(p);
    let (quoted_src, quoted_dst) = ip_addrs(q);
    let icmp_ok = if v6 {
        assert_eq!(proto, 58);
        fold(sum(&p[8..40]) + 58 + icmp.len() as u32 + sum(icmp)) == 0xffff
    } else {
        fold(sum(&p[..ihl])) == 0xffff && fold(sum(icmp)) == 0xffff && fold(sum(&q[..qihl])) == 0xffff
    };
    QuotedError {
        outer_src: from_wire(outer_src).to_string(),
        outer_dst: from_wire(outer_dst).to_string(),
        quoted_src: sa_from_wire(SocketAddr::new(quoted_src, port(0))),
        quoted_dst: sa_from_wire(SocketAddr::new(quoted_dst, port(2))),
        quoted_seq: u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
        mtu: u16::from_be_bytes([icmp[6], icmp[7]]),
        checksums_ok: icmp_ok,
    }
}
