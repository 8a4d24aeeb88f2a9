//! Per-packet costs of the FullNAT path: an established flow's packet
//! (parse, lookup, rewrite, checksums) and a new connection (schedule, port
//! allocation, insert). Targets: ≤ 100 ns and ≤ 1 µs. Also what a SYN costs
//! under SYNProxy, and what telling the real the client's address (TOA, a
//! PROXY header) adds to a connection's opening.
//!
//! Each iteration copies a 54- to 94-byte template into the buffer the
//! engine rewrites in place (a few ns, included in the figures). The
//! established case runs for IPv6 too (target: within 1.15× of IPv4).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant as WallClock};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rvs_core::{
    Endpoint, Engine, EngineConfig, Instant, Proto, ProxyProtocol, RealConfig, SchedKind, ServiceConfig,
    Side, Verdict,
};

const VIP: &str = "10.0.0.1:80";

fn ep(s: &str) -> Endpoint {
    s.parse::<SocketAddr>().unwrap().into()
}

const VIP6: &str = "[2001:db8:10::1]:80";

fn engine(sched: SchedKind) -> Engine {
    engine_at(sched, VIP, |i| format!("10.1.0.{i}"), |i| format!("10.2.0.{i}:8080"))
}

/// The same service over IPv6.
fn engine6(sched: SchedKind) -> Engine {
    engine_at(sched, VIP6, |i| format!("2001:db8:10:1::{i}"), |i| format!("[2001:db8:10:2::{i}]:8080"))
}

fn engine_at(
    sched: SchedKind,
    vip: &str,
    laddr: impl Fn(u32) -> String,
    real: impl Fn(u32) -> String,
) -> Engine {
    let cfg = EngineConfig { port_quarantine: Duration::ZERO, ..EngineConfig::default() };
    let mut e = Engine::new(cfg, [9; 32], Instant::ZERO);
    let mut s = ServiceConfig::new(Proto::Tcp, ep(vip));
    s.sched = sched;
    s.laddrs = (1..=4).map(|i| laddr(i).parse().unwrap()).collect();
    e.add_service(s).unwrap();
    for i in 1..=3 {
        let real = RealConfig { endpoint: ep(&real(i)), weight: i };
        e.add_real(Proto::Tcp, ep(vip), real).unwrap();
    }
    e
}

/// A 20-byte IPv4 header + TCP header with `opts` bytes of options.
fn tcp_packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8, opts: &[u8]) -> Vec<u8> {
    let tcp_len = 20 + opts.len();
    let total = 20 + tcp_len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ip_sum = !fold(sum(&p[..20]));
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    fill_tcp(&mut p[20..], sport, dport, flags, opts);
    let pseudo = sum(&src.octets()) + sum(&dst.octets()) + 6 + tcp_len as u32;
    let l4_sum = !fold(pseudo + sum(&p[20..]));
    p[36..38].copy_from_slice(&l4_sum.to_be_bytes());
    p
}

/// A TCP header (seq 1000, ack 1, window 64240) and `opts` in `t`; checksum left 0.
fn fill_tcp(t: &mut [u8], sport: u16, dport: u16, flags: u8, opts: &[u8]) {
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[8..12].copy_from_slice(&1u32.to_be_bytes());
    t[12] = ((t.len() / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t[20..].copy_from_slice(opts);
}

/// A 40-byte IPv6 header + TCP header with `opts` bytes of options.
fn tcp6_packet(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, flags: u8, opts: &[u8]) -> Vec<u8> {
    let tcp_len = 20 + opts.len();
    let mut p = vec![0u8; 40 + tcp_len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    p[6] = 6;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    fill_tcp(&mut p[40..], sport, dport, flags, opts);
    let pseudo = sum(&p[8..40]) + 6 + tcp_len as u32;
    let l4_sum = !fold(pseudo + sum(&p[40..]));
    p[56..58].copy_from_slice(&l4_sum.to_be_bytes());
    p
}

/// A TCP packet of either family, as the addresses are.
fn tcp_any(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, flags: u8, opts: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => tcp_packet(s, sport, d, dport, flags, opts),
        (IpAddr::V6(s), IpAddr::V6(d)) => tcp6_packet(s, sport, d, dport, flags, opts),
        _ => unreachable!("mixed families"),
    }
}

/// Source and destination endpoints of a TCP packet of either family.
fn endpoints(p: &[u8]) -> (IpAddr, u16, IpAddr, u16) {
    let (src, dst, l4) = if p[0] >> 4 == 6 {
        let a = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&p[at..at + 16]).unwrap());
        (a(8), a(24), 40)
    } else {
        let a = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&p[at..at + 4]).unwrap());
        (a(12), a(16), 20)
    };
    let port = |at: usize| u16::from_be_bytes([p[l4 + at], p[l4 + at + 1]]);
    (src, port(0), dst, port(2))
}

fn sum(d: &[u8]) -> u32 {
    d.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
/// NOP NOP TS(10): what Linux puts on every established segment.
const TS_OPTS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

fn client(i: u32) -> (Ipv4Addr, u16) {
    (Ipv4Addr::from(0xC000_0000 | (i >> 14)), 1024 + (i & 0x3fff) as u16)
}

/// A client address in the family of `vip`.
fn client_in(vip: IpAddr, i: u32) -> (IpAddr, u16) {
    let (a, p) = client(i);
    match vip {
        IpAddr::V4(_) => (a.into(), p),
        IpAddr::V6(_) => {
            (Ipv6Addr::new(0x2001, 0xdb8, 0xc0, 0, 0, 0, (i >> 30) as u16, (i >> 14) as u16).into(), p)
        }
    }
}

fn established(c: &mut Criterion) {
    let mut g = c.benchmark_group("established");
    g.throughput(Throughput::Elements(1));
    let engines: [fn(SchedKind) -> Engine; 2] = [engine, engine6];
    for ((name, vip), make) in [("client_to_real", VIP), ("client_to_real_v6", VIP6)].into_iter().zip(engines)
    {
        let vip = ep(vip).addr;
        for conns in [1_000u32, 100_000] {
            let mut e = make(SchedKind::Wrr);
            let now = Instant::from_secs(1);
            for i in 0..conns {
                let (a, p) = client_in(vip, i);
                let mut syn = tcp_any(a, p, vip, 80, SYN, &TS_OPTS);
                assert!(matches!(e.handle(now, &mut syn), Verdict::Forward { .. }));
                // The real answers, as it did for every established connection.
                let (laddr, lport, real, rport) = endpoints(&syn);
                let mut synack = tcp_any(real, rport, laddr, lport, SYN | ACK, &TS_OPTS);
                assert!(matches!(e.handle(now, &mut synack), Verdict::Forward { to: Side::Client }));
            }
            let templates: Vec<Vec<u8>> = (0..1024)
                .map(|k| {
                    let (a, p) = client_in(vip, (k * 7919) % conns);
                    tcp_any(a, p, vip, 80, ACK, &TS_OPTS)
                })
                .collect();
            let mut buf = [0u8; 128];
            let mut k = 0usize;
            g.bench_function(format!("{name}/{conns}_conns"), |b| {
                b.iter(|| {
                    let t = &templates[k & 1023];
                    k = k.wrapping_add(1);
                    let pkt = &mut buf[..t.len()];
                    pkt.copy_from_slice(t);
                    black_box(e.handle(now, black_box(pkt)))
                });
            });
        }
    }
    g.finish();
}

fn new_connection(c: &mut Criterion) {
    let vip: Ipv4Addr = "10.0.0.1".parse().unwrap();
    let mut g = c.benchmark_group("new_connection");
    g.throughput(Throughput::Elements(1));
    for sched in [SchedKind::Wrr, SchedKind::Wlc, SchedKind::Mh] {
        let mut e = engine(sched);
        let now = Instant::from_secs(1);
        let mut next = 0u32;
        let mut buf = [0u8; 128];
        g.bench_function(format!("syn/{}", sched.name()), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    // Batches of at most 200k connections, the table emptied
                    // between them outside the timed part.
                    let n = left.min(200_000);
                    let templates: Vec<Vec<u8>> = (0..n as u32)
                        .map(|i| {
                            let (a, p) = client(next.wrapping_add(i));
                            tcp_packet(a, p, vip, 80, SYN, &[])
                        })
                        .collect();
                    next = next.wrapping_add(n as u32);
                    let start = WallClock::now();
                    for t in &templates {
                        let pkt = &mut buf[..t.len()];
                        pkt.copy_from_slice(t);
                        let _ = black_box(e.handle(now, pkt));
                    }
                    spent += start.elapsed();
                    e.flush_conns(now);
                    left -= n;
                }
                spent
            });
        });
    }
    g.finish();
}

/// A SYN to a SYNProxy service: cookie, SYN-ACK built from scratch, and the
/// driver taking it out with `poll_transmit` — what a SYN flood costs.
fn synproxy_syn(c: &mut Criterion) {
    let vip: Ipv4Addr = "10.0.0.1".parse().unwrap();
    let mut e = engine(SchedKind::Wrr);
    let mut s = e.service(Proto::Tcp, ep(VIP)).unwrap().config.clone();
    s.synproxy = true;
    e.edit_service(s).unwrap();
    let now = Instant::from_secs(1);
    // MSS, SACK-permitted, timestamps, window scale: what Linux sends.
    let opts = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
    let templates: Vec<Vec<u8>> = (0..4096u32)
        .map(|i| {
            let (a, p) = client(i);
            tcp_packet(a, p, vip, 80, SYN, &opts)
        })
        .collect();
    let mut buf = [0u8; 128];
    let mut out = [0u8; 2048];
    let mut i = 0usize;
    let mut g = c.benchmark_group("synproxy");
    g.throughput(Throughput::Elements(1));
    g.bench_function("syn_to_synack", |b| {
        b.iter(|| {
            let t = &templates[i % templates.len()];
            i += 1;
            let pkt = &mut buf[..t.len()];
            pkt.copy_from_slice(t);
            let v = e.handle(now, pkt);
            assert_eq!(v, Verdict::Absorbed);
            black_box(e.poll_transmit(&mut out))
        });
    });
    g.finish();
}

/// A connection's opening through FullNAT: the client's SYN, the real's
/// SYN-ACK and the client's ACK, plus whatever the engine builds (the PROXY
/// header) taken out with `poll_transmit`, with the client's address
/// delivered three ways. The ratio to `plain` is the delivery's cost.
fn client_addr(c: &mut Criterion) {
    let vip: Ipv4Addr = "10.0.0.1".parse().unwrap();
    let mut g = c.benchmark_group("client_addr");
    g.throughput(Throughput::Elements(1));
    for (name, toa, pp) in [
        ("plain", false, ProxyProtocol::Disabled),
        ("toa", true, ProxyProtocol::Disabled),
        ("proxy_v1", false, ProxyProtocol::V1),
        ("proxy_v2", false, ProxyProtocol::V2),
    ] {
        let mut e = engine(SchedKind::Wrr);
        let mut s = e.service(Proto::Tcp, ep(VIP)).unwrap().config.clone();
        s.toa = toa;
        s.proxy_protocol = pp;
        e.edit_service(s).unwrap();
        let now = Instant::from_secs(1);
        let mut next = 0u32;
        let mut buf = [0u8; 128];
        let mut out = [0u8; 2048];
        g.bench_function(format!("open/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(100_000);
                    let syns: Vec<Vec<u8>> = (0..n as u32)
                        .map(|i| {
                            let (a, p) = client(next.wrapping_add(i));
                            tcp_packet(a, p, vip, 80, SYN, &[])
                        })
                        .collect();
                    let acks: Vec<Vec<u8>> = (0..n as u32)
                        .map(|i| {
                            let (a, p) = client(next.wrapping_add(i));
                            tcp_packet(a, p, vip, 80, ACK, &[])
                        })
                        .collect();
                    next = next.wrapping_add(n as u32);
                    let start = WallClock::now();
                    for (syn, ack) in syns.iter().zip(&acks) {
                        let pkt = &mut buf[..syn.len()];
                        pkt.copy_from_slice(syn);
                        assert_eq!(e.handle(now, pkt), Verdict::Forward { to: Side::Real });
                        // The real answers the rewritten SYN: swap its addresses and ports.
                        let mut synack = [0u8; 40];
                        synack.copy_from_slice(&pkt[..40]);
                        synack.copy_within(12..16, 16);
                        synack[12..16].copy_from_slice(&pkt[16..20]);
                        synack[20..22].copy_from_slice(&pkt[22..24]);
                        synack[22..24].copy_from_slice(&pkt[20..22]);
                        synack[33] = SYN | ACK;
                        fix_checksums(&mut synack);
                        let _ = black_box(e.handle(now, &mut synack));
                        let pkt = &mut buf[..ack.len()];
                        pkt.copy_from_slice(ack);
                        let _ = black_box(e.handle(now, pkt));
                        while black_box(e.poll_transmit(&mut out)).is_some() {}
                    }
                    spent += start.elapsed();
                    e.flush_conns(now);
                    left -= n;
                }
                spent
            });
        });
    }
    g.finish();
}

/// Recompute the IPv4 and TCP checksums of a 40-byte packet.
fn fix_checksums(p: &mut [u8; 40]) {
    p[10..12].fill(0);
    let ip_sum = !fold(sum(&p[..20]));
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p[36..38].fill(0);
    let pseudo = sum(&p[12..20]) + 6 + 20;
    let l4_sum = !fold(pseudo + sum(&p[20..]));
    p[36..38].copy_from_slice(&l4_sum.to_be_bytes());
}

criterion_group!(benches, established, new_connection, synproxy_syn, client_addr);
criterion_main!(benches);
