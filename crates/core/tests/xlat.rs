//! Scripted NAT64 and NAT46 tests: one body per behaviour, run for both
//! translations. Packets are built by etherparse and read back by hand
//! (both families), every checksum recomputed from scratch.

use std::net::{IpAddr, SocketAddr};

use etherparse::{IpHeaders, IpNumber, PacketBuilder, PacketBuilderStep, TcpOptionElement};
use rvs_core::{
    ConfigError, Engine, EngineConfig, Instant, Proto, ProxyProtocol, RealConfig, SchedKind, ServiceConfig,
    Side, Verdict,
};
use rvs_wire::tcp::Flags;

const T0: Instant = Instant::from_secs(1000);
const CISN: u32 = 1000;
const RISN: u32 = 5000;

/// Which translation: the client side's family and the backend's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Xlat {
    /// IPv6 VIP, IPv4 local addresses and reals.
    Nat64,
    /// IPv4 VIP, IPv6 local addresses and reals.
    Nat46,
}

impl Xlat {
    fn client(self) -> SocketAddr {
        match self {
            Self::Nat64 => "[fd10:77:0::2]:40000",
            Self::Nat46 => "10.77.0.2:40000",
        }
        .parse()
        .unwrap()
    }
    fn vip(self) -> SocketAddr {
        match self {
            Self::Nat64 => "[fd10:77:2::1]:80",
            Self::Nat46 => "10.77.2.1:80",
        }
        .parse()
        .unwrap()
    }
    fn laddr(self) -> IpAddr {
        match self {
            Self::Nat64 => "10.77.3.1",
            Self::Nat46 => "fd10:77:3::1",
        }
        .parse()
        .unwrap()
    }
    fn real(self) -> SocketAddr {
        match self {
            Self::Nat64 => "10.77.1.11:8080",
            Self::Nat46 => "[fd10:77:1::b]:8080",
        }
        .parse()
        .unwrap()
    }
    /// The MSS a host of `addr`'s family announces on a 1500-byte link.
    fn mss_of(addr: SocketAddr) -> u16 {
        if addr.is_ipv4() { 1460 } else { 1440 }
    }
}

fn lb(x: Xlat, proto: Proto, edit: impl FnOnce(&mut ServiceConfig)) -> Engine {
    let mut e = Engine::new(EngineConfig::default(), [42; 32], Instant::ZERO);
    let vip = x.vip().into();
    let mut s = ServiceConfig::new(proto, vip);
    s.sched = SchedKind::Rr;
    s.laddrs = vec![x.laddr()];
    edit(&mut s);
    e.add_service(s).unwrap();
    e.add_real(proto, vip, RealConfig { endpoint: x.real().into(), weight: 1 }).unwrap();
    e
}

fn builder(src: SocketAddr, dst: SocketAddr) -> PacketBuilderStep<IpHeaders> {
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families in one packet"),
    }
}

fn tcp(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: Option<u32>,
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = builder(src, dst).tcp(src.port(), dst.port(), seq, 64240);
    if flags.syn() {
        b = b.syn();
    }
    if flags.fin() {
        b = b.fin();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    let opts =
        if flags.syn() { vec![TcpOptionElement::MaximumSegmentSize(Xlat::mss_of(src))] } else { vec![] };
    let mut out = Vec::new();
    b.options(&opts).unwrap().write(&mut out, payload).unwrap();
    out
}

fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    builder(src, dst).udp(src.port(), dst.port()).write(&mut out, payload).unwrap();
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

/// A packet read back by hand.
#[derive(Debug)]
struct Seen {
    src: SocketAddr,
    dst: SocketAddr,
    ttl: u8,
    protocol: u8,
    seq: u32,
    ack: u32,
    flags: Flags,
    mss: Option<u16>,
    /// A TOA option's address and port (8- or 20-byte form).
    toa: Option<SocketAddr>,
    payload: Vec<u8>,
    /// The ICMP message (type, code, 4 bytes) and its quote.
    icmp: Option<(u8, u8, u32, Vec<u8>)>,
    checksums_ok: bool,
}

fn parse(p: &[u8]) -> Seen {
    let v6 = p[0] >> 4 == 6;
    let (hl, total, src_ip, dst_ip, ttl, protocol, ip_ok): (usize, usize, IpAddr, IpAddr, u8, u8, bool) =
        if v6 {
            let a = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&p[at..at + 16]).unwrap());
            (40, 40 + usize::from(u16::from_be_bytes([p[4], p[5]])), a(8), a(24), p[7], p[6], true)
        } else {
            let ihl = usize::from(p[0] & 15) * 4;
            let a = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&p[at..at + 4]).unwrap());
            let ok = fold(sum(&p[..ihl])) == 0xffff && p[6] & 0x40 != 0;
            (ihl, usize::from(u16::from_be_bytes([p[2], p[3]])), a(12), a(16), p[8], p[9], ok)
        };
    assert_eq!(total, p.len(), "IP length");
    let l4 = &p[hl..total];
    let addr_sum = |a: IpAddr| match a {
        IpAddr::V4(a) => sum(&a.octets()),
        IpAddr::V6(a) => sum(&a.octets()),
    };
    let pseudo = addr_sum(src_ip) + addr_sum(dst_ip) + u32::from(protocol) + l4.len() as u32;
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    let mut seen = Seen {
        src: SocketAddr::new(src_ip, 0),
        dst: SocketAddr::new(dst_ip, 0),
        ttl,
        protocol,
        seq: 0,
        ack: 0,
        flags: Flags::from_bits(0),
        mss: None,
        toa: None,
        payload: Vec::new(),
        icmp: None,
        checksums_ok: false,
    };
    match protocol {
        6 | 17 => {
            seen.src.set_port(port(0));
            seen.dst.set_port(port(2));
        }
        _ => {}
    }
    match protocol {
        6 => {
            let word = |at: usize| u32::from_be_bytes([l4[at], l4[at + 1], l4[at + 2], l4[at + 3]]);
            seen.seq = word(4);
            seen.ack = word(8);
            seen.flags = Flags::from_bits(l4[13]);
            let thl = usize::from(l4[12] >> 4) * 4;
            let mut i = 20;
            while i < thl {
                match l4[i] {
                    0 => break,
                    1 => i += 1,
                    kind => {
                        let len = usize::from(l4[i + 1]);
                        if kind == 2 {
                            seen.mss = Some(port(i + 2));
                        }
                        if kind == 254 && len == 8 {
                            let a = IpAddr::from(<[u8; 4]>::try_from(&l4[i + 4..i + 8]).unwrap());
                            seen.toa = Some(SocketAddr::new(a, port(i + 2)));
                        }
                        if kind == 254 && len == 20 {
                            let a = IpAddr::from(<[u8; 16]>::try_from(&l4[i + 4..i + 20]).unwrap());
                            seen.toa = Some(SocketAddr::new(a, port(i + 2)));
                        }
                        i += len.max(2);
                    }
                }
            }
            seen.payload = l4[thl..].to_vec();
            seen.checksums_ok = ip_ok && fold(pseudo + sum(l4)) == 0xffff;
        }
        17 => {
            seen.payload = l4[8..].to_vec();
            seen.checksums_ok = ip_ok && port(6) != 0 && fold(pseudo + sum(l4)) == 0xffff;
        }
        1 | 58 => {
            let rest = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
            seen.icmp = Some((l4[0], l4[1], rest, l4[8..].to_vec()));
            let covered = if protocol == 58 { pseudo + sum(l4) } else { sum(l4) };
            seen.checksums_ok = ip_ok && fold(covered) == 0xffff;
        }
        _ => {}
    }
    seen
}

/// Hand `pkt` to the engine; everything that comes out, with its side.
fn send(lb: &mut Engine, now: Instant, pkt: &[u8]) -> Vec<(Seen, Side)> {
    let mut buf = pkt.to_vec();
    let mut out = Vec::new();
    match lb.handle(now, &mut buf) {
        Verdict::Forward { to } => out.push((parse(&buf), to)),
        Verdict::Absorbed => {}
        Verdict::Drop(r) => panic!("dropped: {r}"),
    }
    out.extend(drain(lb));
    for (seen, to) in &out {
        assert!(seen.checksums_ok, "bad checksum: {seen:?}");
        // Each packet is of the family of the side it goes to.
        let family_of = |s: SocketAddr| s.is_ipv4();
        let want = match to {
            Side::Client => family_of(seen.dst) == lb_client_v4(lb),
            Side::Real => family_of(seen.dst) != lb_client_v4(lb),
        };
        assert!(want, "{to:?} got the wrong family: {seen:?}");
    }
    out
}

/// Whether the engine's single service has an IPv4 VIP.
fn lb_client_v4(lb: &Engine) -> bool {
    lb.services().next().unwrap().config.vip.addr.is_ipv4()
}

/// The one packet `pkt` produced, which went to `to`.
fn one(lb: &mut Engine, now: Instant, pkt: &[u8], to: Side) -> Seen {
    let mut out = send(lb, now, pkt);
    assert_eq!(out.len(), 1, "{out:?}");
    let (seen, side) = out.pop().unwrap();
    assert_eq!(side, to);
    seen
}

const ACK: Flags = Flags(0);

/// Handshake, data both ways and a close begun by the client, through plain FullNAT.
fn handshake_data_close(x: Xlat) {
    let mut lb = lb(x, Proto::Tcp, |_| {});
    let (client, vip, real) = (x.client(), x.vip(), x.real());
    let syn = one(&mut lb, T0, &tcp(client, vip, CISN, None, Flags::SYN, &[]), Side::Real);
    assert_eq!((syn.src.ip(), syn.dst), (x.laddr(), real));
    assert_eq!(syn.ttl, 63);
    // From IPv4 to IPv6 the MSS makes room for the 20 bytes more of header.
    let room = if client.is_ipv4() { 20 } else { 0 };
    assert_eq!(syn.mss, Some(Xlat::mss_of(client) - room));
    let lip = syn.src;
    let synack = tcp(real, lip, RISN, Some(syn.seq + 1), Flags::SYN, &[]);
    let synack = one(&mut lb, T0, &synack, Side::Client);
    assert_eq!((synack.src, synack.dst, synack.ack), (vip, client, CISN + 1));
    let room = if real.is_ipv4() { 20 } else { 0 };
    assert_eq!(synack.mss, Some(Xlat::mss_of(real) - room));
    let req = one(&mut lb, T0, &tcp(client, vip, CISN + 1, Some(synack.seq + 1), ACK, b"GET /"), Side::Real);
    assert_eq!((req.payload.as_slice(), req.ack), (&b"GET /"[..], RISN + 1));
    let body = vec![7u8; 1400];
    let resp = one(&mut lb, T0, &tcp(real, lip, RISN + 1, Some(req.seq + 5), ACK, &body), Side::Client);
    assert_eq!((resp.payload, resp.ack), (body, CISN + 6));
    let fin = tcp(client, vip, CISN + 6, Some(resp.seq + 1400), Flags::FIN, &[]);
    let fin = one(&mut lb, T0, &fin, Side::Real);
    assert!(fin.flags.fin());
    let fin2 = tcp(real, lip, RISN + 1401, Some(fin.seq + 1), Flags::FIN, &[]);
    let fin2 = one(&mut lb, T0, &fin2, Side::Client);
    assert!(fin2.flags.fin() && fin2.ack == CISN + 7);
    let last = one(&mut lb, T0, &tcp(client, vip, CISN + 7, Some(fin2.seq + 1), ACK, &[]), Side::Real);
    assert_eq!(last.ack, RISN + 1402);
    assert_eq!(lb.stats().drops.total(), 0);
}

#[test]
fn nat64_handshake_data_close() {
    handshake_data_close(Xlat::Nat64);
}

#[test]
fn nat46_handshake_data_close() {
    handshake_data_close(Xlat::Nat46);
}

/// The same through SYNProxy: what it builds goes out in each side's family.
fn synproxy_handshake(x: Xlat) {
    let mut lb = lb(x, Proto::Tcp, |s| s.synproxy = true);
    let (client, vip, real) = (x.client(), x.vip(), x.real());
    let synack = one(&mut lb, T0, &tcp(client, vip, CISN, None, Flags::SYN, &[]), Side::Client);
    assert_eq!((synack.src, synack.dst, synack.ack), (vip, client, CISN + 1));
    // Announced for the IPv6 side, whichever it is: the client's full-size
    // segments must fit there once translated.
    assert_eq!(synack.mss, Some(1440));
    let first_synack_seq = synack.seq;
    let ack = tcp(client, vip, CISN + 1, Some(synack.seq + 1), ACK, b"GET /");
    let syn = one(&mut lb, T0, &ack, Side::Real);
    assert!(syn.flags.syn() && !syn.flags.ack());
    assert_eq!((syn.src.ip(), syn.dst), (x.laddr(), real));
    // The client's MSS, lowered on its way from IPv4 to IPv6.
    let room = if client.is_ipv4() { 20 } else { 0 };
    assert_eq!(syn.mss, Some(Xlat::mss_of(client) - room));
    let synack = tcp(real, syn.src, RISN, Some(syn.seq + 1), Flags::SYN, &[]);
    let out = send(&mut lb, T0, &synack);
    // The ACK of the real's SYN-ACK and the replayed request, both to the real.
    assert!(out.iter().all(|(_, to)| *to == Side::Real), "{out:?}");
    let replay = out.iter().map(|(s, _)| s).find(|s| !s.payload.is_empty()).expect("replayed request");
    assert_eq!((replay.payload.as_slice(), replay.ack), (&b"GET /"[..], RISN + 1));
    let resp =
        one(&mut lb, T0, &tcp(real, syn.src, RISN + 1, Some(replay.seq + 5), ACK, b"200"), Side::Client);
    assert_eq!((resp.src, resp.dst, resp.payload.as_slice()), (vip, client, &b"200"[..]));
    // The real's first byte is the one after SYNProxy's ISN, for the client.
    assert_eq!(resp.seq, first_synack_seq + 1);
    // Forgotten while open: each side's RST in its own family.
    lb.flush_conns(T0);
    let rsts = drain(&mut lb);
    assert_eq!(rsts.len(), 2, "{rsts:?}");
    for (rst, to) in rsts {
        assert!(rst.flags.rst());
        let want = if to == Side::Client { (vip, client) } else { (syn.src, real) };
        assert_eq!((rst.src, rst.dst), want);
    }
}

/// What the engine queued by itself, read back.
fn drain(lb: &mut Engine) -> Vec<(Seen, Side)> {
    let mut tx = [0u8; 2048];
    let mut out = Vec::new();
    while let Some((len, to)) = lb.poll_transmit(&mut tx) {
        let seen = parse(&tx[..len]);
        assert!(seen.checksums_ok, "bad checksum: {seen:?}");
        out.push((seen, to));
    }
    out
}

#[test]
fn nat64_synproxy_handshake() {
    synproxy_handshake(Xlat::Nat64);
}

#[test]
fn nat46_synproxy_handshake() {
    synproxy_handshake(Xlat::Nat46);
}

fn udp_both_ways(x: Xlat) {
    let mut lb = lb(x, Proto::Udp, |_| {});
    let (client, vip, real) = (x.client(), x.vip(), x.real());
    let mut q = udp(client, vip, b"query");
    if client.is_ipv4() {
        // No checksum over IPv4; the IPv6 side must get one.
        q[26] = 0;
        q[27] = 0;
    }
    let q = one(&mut lb, T0, &q, Side::Real);
    assert_eq!((q.src.ip(), q.dst, q.payload.as_slice()), (x.laddr(), real, &b"query"[..]));
    let a = one(&mut lb, T0, &udp(real, q.src, b"answer"), Side::Client);
    assert_eq!((a.src, a.dst, a.payload.as_slice()), (vip, client, &b"answer"[..]));
}

#[test]
fn nat64_udp() {
    udp_both_ways(Xlat::Nat64);
}

#[test]
fn nat46_udp() {
    udp_both_ways(Xlat::Nat46);
}

/// An ICMP error from `from` to `to` quoting `quoted` (whole), in `to`'s family.
fn icmp_error(from: IpAddr, to: IpAddr, too_big: bool, mtu: u32, quoted: &[u8]) -> Vec<u8> {
    let (v4, ty, code) = match (to.is_ipv4(), too_big) {
        (true, true) => (true, 3, 4),
        (true, false) => (true, 3, 3),
        (false, true) => (false, 2, 0),
        (false, false) => (false, 1, 4),
    };
    let mut msg = vec![ty, code, 0, 0];
    msg.extend_from_slice(&mtu.to_be_bytes());
    msg.extend_from_slice(quoted);
    let from_sa = SocketAddr::new(from, 0);
    let to_sa = SocketAddr::new(to, 0);
    let mut out = Vec::new();
    let proto = if v4 { 1 } else { 58 };
    let b = builder(from_sa, to_sa);
    let mut pkt = {
        b.write(&mut out, IpNumber(proto), &msg).unwrap();
        out
    };
    let hl = if v4 { 20 } else { 40 };
    let covered = if v4 {
        sum(&pkt[hl..])
    } else {
        let a = |ip: IpAddr| match ip {
            IpAddr::V6(a) => sum(&a.octets()),
            IpAddr::V4(a) => sum(&a.octets()),
        };
        a(from) + a(to) + 58 + msg.len() as u32 + sum(&pkt[hl..])
    };
    let c = !fold(covered);
    pkt[hl + 2..hl + 4].copy_from_slice(&c.to_be_bytes());
    pkt
}

/// Path MTU discovery through the translation, both ways.
fn too_big_both_ways(x: Xlat) {
    let mut lb = lb(x, Proto::Tcp, |_| {});
    let (client, vip, real) = (x.client(), x.vip(), x.real());
    let syn = one(&mut lb, T0, &tcp(client, vip, CISN, None, Flags::SYN, &[]), Side::Real);
    let lip = syn.src;
    let synack = one(&mut lb, T0, &tcp(real, lip, RISN, Some(syn.seq + 1), Flags::SYN, &[]), Side::Client);
    let big = vec![1u8; 1200];
    let data = tcp(client, vip, CISN + 1, Some(synack.seq + 1), ACK, &big);
    let data_out = one(&mut lb, T0, &data, Side::Real);
    // A router on the real side: the segment was too big for its next hop of 1300.
    let router = if real.is_ipv4() { "10.77.1.254" } else { "fd10:77:1::fe" }.parse().unwrap();
    let mut quoted = tcp(lip, real, data_out.seq, Some(data_out.ack), ACK, &big);
    quoted.truncate(if real.is_ipv4() { 548 } else { 1184 });
    let err = one(&mut lb, T0, &icmp_error(router, lip.ip(), true, 1300, &quoted), Side::Client);
    assert_eq!((err.src.ip(), err.dst.ip()), (vip.ip(), client.ip()));
    assert_eq!(err.protocol, if client.is_ipv4() { 1 } else { 58 });
    let (ty, code, rest, quote) = err.icmp.clone().unwrap();
    let quoted_back = quoted_seen(&quote);
    assert_eq!((quoted_back.src, quoted_back.dst, quoted_back.seq), (client, vip, CISN + 1));
    if client.is_ipv4() {
        assert_eq!((ty, code, rest), (3, 4, 1280));
    } else {
        assert_eq!((ty, code, rest), (2, 0, 1320));
    }
    // And from the client side about the real's data.
    let resp =
        one(&mut lb, T0, &tcp(real, lip, RISN + 1, Some(data_out.seq + 1200), ACK, &big), Side::Client);
    let crouter = if client.is_ipv4() { "10.77.0.254" } else { "fd10:77:0::fe" }.parse().unwrap();
    let mut quoted = tcp(vip, client, resp.seq, Some(resp.ack), ACK, &big);
    quoted.truncate(if client.is_ipv4() { 548 } else { 1184 });
    let err = one(&mut lb, T0, &icmp_error(crouter, vip.ip(), true, 1400, &quoted), Side::Real);
    assert_eq!((err.src.ip(), err.dst.ip()), (lip.ip(), real.ip()));
    let (ty, code, rest, quote) = err.icmp.clone().unwrap();
    let quoted_back = quoted_seen(&quote);
    assert_eq!((quoted_back.src, quoted_back.dst, quoted_back.seq), (real, lip, RISN + 1));
    if real.is_ipv4() {
        assert_eq!((ty, code, rest), (3, 4, 1380));
    } else {
        assert_eq!((ty, code, rest), (2, 0, 1420));
    }
    assert_eq!(lb.stats().icmp_forwarded, 2);
}

/// The quoted header and the first 8 bytes of its transport header.
fn quoted_seen(q: &[u8]) -> Seen {
    let v6 = q[0] >> 4 == 6;
    let hl = if v6 { 40 } else { usize::from(q[0] & 15) * 4 };
    let (s, d): (IpAddr, IpAddr) = if v6 {
        (<[u8; 16]>::try_from(&q[8..24]).unwrap().into(), <[u8; 16]>::try_from(&q[24..40]).unwrap().into())
    } else {
        (<[u8; 4]>::try_from(&q[12..16]).unwrap().into(), <[u8; 4]>::try_from(&q[16..20]).unwrap().into())
    };
    let l4 = &q[hl..];
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    Seen {
        src: SocketAddr::new(s, port(0)),
        dst: SocketAddr::new(d, port(2)),
        ttl: 0,
        protocol: 6,
        seq: u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
        ack: 0,
        flags: Flags::from_bits(0),
        mss: None,
        toa: None,
        payload: Vec::new(),
        icmp: None,
        checksums_ok: true,
    }
}

#[test]
fn nat64_too_big_both_ways() {
    too_big_both_ways(Xlat::Nat64);
}

#[test]
fn nat46_too_big_both_ways() {
    too_big_both_ways(Xlat::Nat46);
}

/// TOA in the client's form (20 bytes for IPv6, 8 for IPv4) in a packet of
/// the real's family, after a plain or a SYNProxy handshake.
fn toa_carries_the_client(x: Xlat, synproxy: bool) {
    let mut lb = lb(x, Proto::Tcp, |s| {
        s.toa = true;
        s.synproxy = synproxy;
    });
    let (client, vip, real) = (x.client(), x.vip(), x.real());
    let req = if synproxy {
        let synack = one(&mut lb, T0, &tcp(client, vip, CISN, None, Flags::SYN, &[]), Side::Client);
        let ack = tcp(client, vip, CISN + 1, Some(synack.seq + 1), ACK, b"GET /");
        let syn = one(&mut lb, T0, &ack, Side::Real);
        let out = send(&mut lb, T0, &tcp(real, syn.src, RISN, Some(syn.seq + 1), Flags::SYN, &[]));
        out.into_iter().map(|(s, _)| s).find(|s| !s.payload.is_empty()).expect("replayed request")
    } else {
        let syn = one(&mut lb, T0, &tcp(client, vip, CISN, None, Flags::SYN, &[]), Side::Real);
        let synack = tcp(real, syn.src, RISN, Some(syn.seq + 1), Flags::SYN, &[]);
        let synack = one(&mut lb, T0, &synack, Side::Client);
        one(&mut lb, T0, &tcp(client, vip, CISN + 1, Some(synack.seq + 1), ACK, b"GET /"), Side::Real)
    };
    assert_eq!(req.toa, Some(client));
    assert_eq!(req.payload, b"GET /");
}

#[test]
fn nat64_toa_carries_the_ipv6_client_to_an_ipv4_real() {
    toa_carries_the_client(Xlat::Nat64, false);
    toa_carries_the_client(Xlat::Nat64, true);
}

#[test]
fn nat46_toa_carries_the_ipv4_client_to_an_ipv6_real() {
    toa_carries_the_client(Xlat::Nat46, false);
    toa_carries_the_client(Xlat::Nat46, true);
}

#[test]
fn nat64_proxy_v2_announces_the_ipv6_client_to_an_ipv4_real() {
    let x = Xlat::Nat64;
    let mut lb = lb(x, Proto::Tcp, |s| s.proxy_protocol = ProxyProtocol::V2);
    let (client, vip, real) = (x.client(), x.vip(), x.real());
    let syn = one(&mut lb, T0, &tcp(client, vip, CISN, None, Flags::SYN, &[]), Side::Real);
    let synack =
        one(&mut lb, T0, &tcp(real, syn.src, RISN, Some(syn.seq + 1), Flags::SYN, &[]), Side::Client);
    let out = send(&mut lb, T0, &tcp(client, vip, CISN + 1, Some(synack.seq + 1), ACK, &[]));
    let header = out.iter().map(|(s, _)| s).find(|s| !s.payload.is_empty()).expect("PROXY header");
    let p = &header.payload;
    assert_eq!(&p[..12], b"\r\n\r\n\0\r\nQUIT\n");
    // Version 2, PROXY; TCP over IPv6; 36 bytes of addresses and ports.
    assert_eq!(&p[12..16], &[0x21, 0x21, 0, 36]);
    let IpAddr::V6(c) = client.ip() else { unreachable!() };
    assert_eq!(&p[16..32], &c.octets());
    assert_eq!(u16::from_be_bytes([p[48], p[49]]), client.port());
}

#[test]
fn reals_and_local_addresses_share_a_family_the_vip_may_differ() {
    let x = Xlat::Nat64;
    let mut lb = lb(x, Proto::Tcp, |_| {});
    let vip = x.vip().into();
    let v6_real =
        RealConfig { endpoint: "[fd10:77:1::c]:80".parse::<SocketAddr>().unwrap().into(), weight: 1 };
    assert_eq!(
        lb.add_real(Proto::Tcp, vip, v6_real),
        Err(ConfigError::FamilyMismatch(v6_real.endpoint.addr))
    );
    let v6_laddr: IpAddr = "fd10:77:3::2".parse().unwrap();
    assert_eq!(lb.add_laddr(Proto::Tcp, vip, v6_laddr), Err(ConfigError::FamilyMismatch(v6_laddr)));
    lb.add_laddr(Proto::Tcp, vip, "10.77.3.2".parse().unwrap()).unwrap();
    // Mixed local addresses in one service are refused whole.
    let mut s = ServiceConfig::new(Proto::Udp, vip);
    s.laddrs = vec!["10.77.3.1".parse().unwrap(), v6_laddr];
    assert_eq!(lb.add_service(s), Err(ConfigError::FamilyMismatch(v6_laddr)));
    assert!(lb.service(Proto::Udp, vip).is_none());
}

/// Hashing schedulers over clients of the other family than the reals:
/// source hashing sends one client address to one real whatever its port,
/// Maglev one client endpoint to the same real in every engine, and both
/// spread clients over the reals.
fn hashing_schedulers_take_the_other_family(x: Xlat) {
    let other = match x {
        Xlat::Nat64 => "10.77.1.12:8080",
        Xlat::Nat46 => "[fd10:77:1::c]:8080",
    };
    let other = RealConfig { endpoint: other.parse::<SocketAddr>().unwrap().into(), weight: 1 };
    let vip = x.vip();
    for sched in [SchedKind::Sh, SchedKind::Mh] {
        let mut engines = [(); 2].map(|_| {
            let mut lb = lb(x, Proto::Tcp, |s| s.sched = sched);
            lb.add_real(Proto::Tcp, vip.into(), other).unwrap();
            lb
        });
        let mut reals = std::collections::BTreeSet::new();
        for c in 0..16u16 {
            let client = match x {
                Xlat::Nat64 => SocketAddr::new(format!("fd10:77::{:x}", c + 2).parse().unwrap(), 40000),
                Xlat::Nat46 => SocketAddr::new(format!("10.77.0.{}", c + 2).parse().unwrap(), 40000),
            };
            let syn = tcp(client, vip, CISN, None, Flags::SYN, &[]);
            let [a, b] = &mut engines;
            let real = one(a, T0, &syn, Side::Real).dst;
            assert_eq!(one(b, T0, &syn, Side::Real).dst, real, "{sched:?}: same client, same real");
            if sched == SchedKind::Sh {
                let other_port = SocketAddr::new(client.ip(), 40001);
                let syn = tcp(other_port, vip, CISN, None, Flags::SYN, &[]);
                assert_eq!(one(a, T0, &syn, Side::Real).dst, real, "sh: one address, one real");
            }
            reals.insert(real);
        }
        assert_eq!(reals.len(), 2, "{sched:?}: clients spread over both reals");
    }
}

#[test]
fn nat64_hashing_schedulers() {
    hashing_schedulers_take_the_other_family(Xlat::Nat64);
}

#[test]
fn nat46_hashing_schedulers() {
    hashing_schedulers_take_the_other_family(Xlat::Nat46);
}
