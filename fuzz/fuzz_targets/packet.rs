//! The whole packet path on arbitrary input: every byte string, as a raw IP
//! packet or patched into a valid-looking IPv4 or IPv6 packet toward a
//! service, a local address or from a real (so the fuzzer reaches the
//! rewrite and translation paths quickly), must come back as a verdict,
//! never a panic. Time moves with the input too, so expiry and
//! retransmission timers run between packets.
//!
//! The engine has the same services over IPv4, over IPv6, through NAT64
//! (IPv6 VIP, IPv4 reals) and through NAT46 (IPv4 VIP, IPv6 reals), TCP and
//! UDP: port 443 and 8064 answer with SYNProxy, and TCP services deliver
//! the client's address (TOA, and PROXY v1 or v2). IPv6 packets may start
//! with an extension header (hop-by-hop, routing, fragment, destination
//! options) the fuzzer's bytes fill in.
//!
//! Run: `cd fuzz && cargo fuzz run packet --sanitizer none corpus/packet
//! seeds/packet -- -dict=packet.dict` (seeds and dictionary hold IPv6
//! TCP/UDP/ICMPv6 packets, extension headers and the services' ports).
#![no_main]

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use rvs_core::{Endpoint, Engine, EngineConfig, Instant, Proto, ProxyProtocol, RealConfig, ServiceConfig};

fn ep(s: &str) -> Endpoint {
    s.parse::<SocketAddr>().unwrap().into()
}

/// VIPs, local addresses and reals of each family.
const VIP4: &str = "10.0.0.1";
const VIP6: &str = "[fd00::1]";
const LIP4: &str = "10.1.0.1";
const LIP6: &str = "fd01::1";
const REALS4: [&str; 2] = ["10.2.0.1", "10.2.0.2"];
const REALS6: [&str; 2] = ["[fd02::1]", "[fd02::2]"];

/// One service at `vip:port` over `laddr` and `reals` (at the same port).
fn add(e: &mut Engine, proto: Proto, vip: &str, port: u16, laddr: &str, reals: [&str; 2]) {
    let vip = ep(&format!("{vip}:{port}"));
    let mut s = ServiceConfig::new(proto, vip);
    s.laddrs = vec![laddr.parse::<IpAddr>().unwrap()];
    s.mss_clamp = Some(1200);
    s.synproxy = proto == Proto::Tcp && (port == 443 || port == 8064);
    if proto == Proto::Tcp {
        s.toa = true;
        s.proxy_protocol = if s.synproxy { ProxyProtocol::V2 } else { ProxyProtocol::V1 };
    }
    e.add_service(s).unwrap();
    for r in reals {
        e.add_real(proto, vip, RealConfig { endpoint: ep(&format!("{r}:{port}")), weight: 1 }).unwrap();
    }
}

fn engine() -> Engine {
    let cfg = EngineConfig { max_conns: 4096, port_range: (40000, 40100), ..EngineConfig::default() };
    let mut e = Engine::new(cfg, [5; 32], Instant::ZERO);
    for (proto, port) in [(Proto::Tcp, 80), (Proto::Udp, 53), (Proto::Tcp, 443)] {
        add(&mut e, proto, VIP4, port, LIP4, REALS4);
        add(&mut e, proto, VIP6, port, LIP6, REALS6);
    }
    for proto in [Proto::Tcp, Proto::Udp] {
        add(&mut e, proto, VIP6, 8064, LIP4, REALS4);
        add(&mut e, proto, VIP4, 8046, LIP6, REALS6);
    }
    e
}

thread_local! {
    static STATE: RefCell<(Engine, u64)> = RefCell::new((engine(), 0));
}

/// Give the fuzzer's bytes a plausible IPv4 header toward the VIP, a LIP or
/// from a real, keeping its transport bytes and lengths as they come.
fn shape4(mode: u8, data: &[u8]) -> Vec<u8> {
    let proto = [6u8, 17, 1][usize::from(mode % 3)];
    let (src, dst): ([u8; 4], [u8; 4]) = match (mode / 3) % 3 {
        0 => ([192, 0, 2, mode], [10, 0, 0, 1]),
        1 => ([10, 2, 0, 1 + mode % 2], [10, 1, 0, 1]),
        _ => ([10, 3, 0, 254], [10, 1, 0, 1]),
    };
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    let total = (20 + data.len()).min(65535) as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p.extend_from_slice(data);
    p
}

/// The same for IPv6: TCP, UDP, ICMPv6, or an extension header whose bytes
/// (and the next header it names) come from the fuzzer.
fn shape6(mode: u8, data: &[u8]) -> Vec<u8> {
    let next = [6u8, 17, 58, 0, 43, 44, 60][usize::from(mode % 7)];
    let v6 = |last: u8, net: u8| {
        let mut a = [0u8; 16];
        a[..2].copy_from_slice(&[0xfd, net]);
        a[15] = last;
        a
    };
    let (src, dst) = match (mode / 7) % 3 {
        0 => (v6(0xc0 | mode % 16, 0x0c), v6(1, 0)),
        1 => (v6(1 + mode % 2, 2), v6(1, 1)),
        _ => (v6(0xfe, 3), v6(1, 1)),
    };
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    let len = data.len().min(65535) as u16;
    p[4..6].copy_from_slice(&len.to_be_bytes());
    p[6] = next;
    p[7] = 64;
    p[8..24].copy_from_slice(&src);
    p[24..40].copy_from_slice(&dst);
    p.extend_from_slice(data);
    p
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    STATE.with(|s| {
        let (engine, clock) = &mut *s.borrow_mut();
        *clock += u64::from(mode) * 50_000_000;
        let now = Instant::from_nanos(*clock);
        engine.handle_timeout(now);
        let mut pkt = match (mode & 0x80 != 0, mode & 0x40 != 0) {
            (true, _) => rest.to_vec(),
            (false, false) => shape4(mode & 0x3f, rest),
            (false, true) => shape6(mode & 0x3f, rest),
        };
        let _ = engine.handle(now, &mut pkt);
        let mut out = [0u8; 2048];
        while engine.poll_transmit(&mut out).is_some() {}
        if engine.conn_count() > 3000 {
            engine.flush_conns(now);
        }
    });
});
