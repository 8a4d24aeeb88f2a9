//! The whole packet path on arbitrary input: every byte string, as a raw IP
//! packet or patched into a valid-looking TCP/UDP/ICMP packet toward a
//! service (so the fuzzer reaches the rewrite paths quickly; port 443 is a
//! SYNProxy service; both TCP services deliver the client's address, 80 with
//! TOA and a PROXY v1 header, 443 with TOA and v2; NAT64 and NAT46
//! services translate between the families), must come back as a verdict,
//! never a panic. Time moves with the input too, so expiry and
//! retransmission timers run between packets.
#![no_main]

use std::cell::RefCell;
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use rvs_core::{Endpoint, Engine, EngineConfig, Instant, Proto, ProxyProtocol, RealConfig, ServiceConfig};

fn ep(s: &str) -> Endpoint {
    s.parse::<SocketAddr>().unwrap().into()
}

fn engine() -> Engine {
    let cfg = EngineConfig { max_conns: 4096, port_range: (40000, 40100), ..EngineConfig::default() };
    let mut e = Engine::new(cfg, [5; 32], Instant::ZERO);
    for (proto, vip) in
        [(Proto::Tcp, "10.0.0.1:80"), (Proto::Udp, "10.0.0.1:53"), (Proto::Tcp, "10.0.0.1:443")]
    {
        let mut s = ServiceConfig::new(proto, ep(vip));
        s.laddrs = vec!["10.1.0.1".parse().unwrap()];
        s.mss_clamp = Some(1200);
        // Port 443 answers with SYNProxy.
        s.synproxy = ep(vip).port == 443;
        if proto == Proto::Tcp {
            s.toa = true;
            s.proxy_protocol = if s.synproxy { ProxyProtocol::V2 } else { ProxyProtocol::V1 };
        }
        e.add_service(s).unwrap();
        for r in ["10.2.0.1", "10.2.0.2"] {
            let port = ep(vip).port;
            e.add_real(proto, ep(vip), RealConfig { endpoint: ep(&format!("{r}:{port}")), weight: 1 })
                .unwrap();
        }
    }
    // Translated services: NAT64 (an IPv6 VIP before IPv4 reals) and
    // NAT46 (an IPv4 VIP before IPv6 reals), TCP with TOA and UDP.
    for (proto, vip, laddr, reals) in [
        (Proto::Tcp, "[fd10::1]:8064", "10.1.0.1", ["10.2.0.1:8064", "10.2.0.2:8064"]),
        (Proto::Udp, "[fd10::1]:5364", "10.1.0.1", ["10.2.0.1:53", "10.2.0.2:53"]),
        (Proto::Tcp, "10.0.0.1:8046", "fd10:1::1", ["[fd10:2::1]:8046", "[fd10:2::2]:8046"]),
        (Proto::Udp, "10.0.0.1:5346", "fd10:1::1", ["[fd10:2::1]:53", "[fd10:2::2]:53"]),
    ] {
        let mut s = ServiceConfig::new(proto, ep(vip));
        s.laddrs = vec![laddr.parse().unwrap()];
        s.toa = proto == Proto::Tcp;
        e.add_service(s).unwrap();
        for r in reals {
            e.add_real(proto, ep(vip), RealConfig { endpoint: ep(r), weight: 1 }).unwrap();
        }
    }
    e
}

/// Give the fuzzer's bytes a plausible IPv6 header toward the NAT64 VIP or
/// the NAT46 local address, or from a NAT46 real.
fn shape6(mode: u8, data: &[u8]) -> Vec<u8> {
    let next = [6u8, 17, 58][usize::from(mode % 3)];
    let addr = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
    let (src, dst) = match (mode / 3) % 3 {
        0 => (addr("fd10:77::2"), addr("fd10::1")),
        1 => (addr("fd10:2::1"), addr("fd10:1::1")),
        _ => (addr("fd10:3::fe"), addr("fd10:1::1")),
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

thread_local! {
    static STATE: RefCell<(Engine, u64)> = RefCell::new((engine(), 0));
}

/// Give the fuzzer's bytes a plausible IPv4 header toward the VIP, a LIP or
/// from a real, keeping its transport bytes and lengths as they come.
fn shape(mode: u8, data: &[u8]) -> Vec<u8> {
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

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    STATE.with(|s| {
        let (engine, clock) = &mut *s.borrow_mut();
        *clock += u64::from(mode) * 50_000_000;
        let now = Instant::from_nanos(*clock);
        engine.handle_timeout(now);
        let mut pkt = match mode & 0xc0 {
            0x80 | 0xc0 => rest.to_vec(),
            0x40 => shape6(mode, rest),
            _ => shape(mode, rest),
        };
        let _ = engine.handle(now, &mut pkt);
        let mut out = [0u8; 2048];
        while engine.poll_transmit(&mut out).is_some() {}
        if engine.conn_count() > 3000 {
            engine.flush_conns(now);
        }
    });
});
