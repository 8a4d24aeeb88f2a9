//! Memory per connection: creates 1,000,000 connections and prints the
//! resident-set growth per connection next to the table's own accounting.
//! Run: `cargo bench -p rvs-core --bench conn_memory`.

use std::net::{Ipv4Addr, SocketAddr};

use rvs_core::conn::ConnTable;
use rvs_core::{Endpoint, Engine, EngineConfig, Instant, Proto, RealConfig, ServiceConfig, Verdict};

fn ep(s: &str) -> Endpoint {
    s.parse::<SocketAddr>().unwrap().into()
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn syn(src: Ipv4Addr, sport: u16) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&[10, 0, 0, 1]);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&80u16.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x02;
    p
}

fn main() {
    const N: u32 = 1_000_000;
    let cfg = EngineConfig { max_conns: N as usize, ..EngineConfig::default() };
    let mut e = Engine::new(cfg, [3; 32], Instant::ZERO);
    let vip = ep("10.0.0.1:80");
    let mut s = ServiceConfig::new(Proto::Tcp, vip);
    // 16 LIPs x 4 reals x ~64k ports: room for 1 M connections.
    s.laddrs = (1..=16).map(|i| format!("10.1.0.{i}").parse().unwrap()).collect();
    e.add_service(s).unwrap();
    for i in 1..=4 {
        e.add_real(Proto::Tcp, vip, RealConfig { endpoint: ep(&format!("10.2.0.{i}:80")), weight: 1 })
            .unwrap();
    }
    let before = rss_bytes();
    let now = Instant::from_secs(1);
    for i in 0..N {
        let mut p = syn(Ipv4Addr::from(0xC000_0000 | (i >> 14)), 1024 + (i & 0x3fff) as u16);
        let v = e.handle(now, &mut p);
        assert!(matches!(v, Verdict::Forward { .. }), "connection {i}: {v:?}");
    }
    let after = rss_bytes();
    let per_conn = (after - before) as f64 / f64::from(N);
    println!("connections: {}", e.conn_count());
    println!("slab slot: {} bytes (Conn {} bytes)", ConnTable::SLOT_BYTES, size_of::<rvs_core::conn::Conn>());
    println!(
        "RSS growth: {:.1} MiB, {per_conn:.1} bytes per connection (includes port pools)",
        (after - before) as f64 / 1048576.0
    );
}
