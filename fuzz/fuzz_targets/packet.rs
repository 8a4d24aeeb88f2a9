//! The whole packet path on arbitrary input: every byte string, as a raw IP
//! packet or patched into a valid-looking TCP/UDP/ICMP packet toward a
//! service (so the fuzzer reaches the rewrite paths quickly; port 443 is a
//! SYNProxy service; both TCP services deliver the client's address, 80 with
//! TOA and a PROXY v1 header, 443 with TOA and v2), must come back as a verdict, never a panic. Time moves
//! with the input too, so expiry and retransmission timers run between packets.
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
    e
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
        let mut pkt = if mode & 0x80 != 0 { rest.to_vec() } else { shape(mode, rest) };
        let _ = engine.handle(now, &mut pkt);
        let mut out = [0u8; 2048];
        while engine.poll_transmit(&mut out).is_some() {}
        if engine.conn_count() > 3000 {
            engine.flush_conns(now);
        }
    });
});
