//! A failing test leaves a capture that tools can read, IPv4 or IPv6.

use core::time::Duration;
use std::panic::{self, AssertUnwindSafe};

use rvs_core::{Endpoint, Instant};
use rvs_sim::app::{TcpClient, TcpClientConfig, TcpServer, TcpServerConfig};
use rvs_sim::{
    Family, LINKTYPE_RAW, LinkConfig, Network, NetworkConfig, PCAP_MAGIC_NANOS, PacketInfo, Router,
};

rvs_sim::family_tests! {
    failing_scenario_leaves_a_readable_pcap: [V4, V6],
    capture_keeps_the_most_recent_packets_within_its_budget: [V4, V6],
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn failing_scenario_leaves_a_readable_pcap(family: Family) {
    let name = &format!("pcap_guard_self_test_{family}");
    let mut path = None;
    let mut captured = 0;
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut net = Network::new(Router, NetworkConfig::seeded(6));
        let guard = net.pcap_on_failure(name);
        path = Some(guard.path());
        let _ = std::fs::remove_file(guard.path());
        let server = family.backend("10.0.1.1");
        let c = net.add_host("client", &[family.client("10.0.0.1")], LinkConfig::default());
        let s = net.add_host("server", &[server], LinkConfig::default());
        net.add_app(s, TcpServer::new(TcpServerConfig::new(80)));
        let cli =
            net.add_app(c, TcpClient::new(TcpClientConfig::new(Endpoint::new(server, 80), 3, 5000, 5000)));
        net.run_until(Instant::from_secs(5), |n| n.app(&cli).finished());
        net.advance(Duration::from_secs(1));
        captured = net.capture().total();
        panic!("deliberate failure with {captured} packets captured");
    }));
    assert!(result.is_err());
    let path = path.unwrap();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(u32_at(&bytes, 0), PCAP_MAGIC_NANOS);
    assert_eq!(u32_at(&bytes, 20), LINKTYPE_RAW);
    let mut at = 24;
    let mut records = 0;
    let mut last = 0u64;
    while at < bytes.len() {
        let (secs, nanos, incl, orig) =
            (u32_at(&bytes, at), u32_at(&bytes, at + 4), u32_at(&bytes, at + 8), u32_at(&bytes, at + 12));
        assert_eq!(incl, orig);
        let t = u64::from(secs) * 1_000_000_000 + u64::from(nanos);
        assert!(t >= last, "records in time order");
        last = t;
        let packet = &bytes[at + 16..at + 16 + incl as usize];
        assert!(PacketInfo::parse(packet).is_some_and(|p| p.src.is_ipv6() == family.client_v6()));
        at += 16 + incl as usize;
        records += 1;
    }
    assert_eq!(at, bytes.len());
    assert!(records > 20);
    assert_eq!(records, captured);
    std::fs::remove_file(&path).unwrap();
}

fn capture_keeps_the_most_recent_packets_within_its_budget(family: Family) {
    let mut config = NetworkConfig::seeded(7);
    config.capture_limit = 100_000;
    let mut net = Network::new(Router, config);
    let server = family.backend("10.0.1.1");
    let c = net.add_host("client", &[family.client("10.0.0.1")], LinkConfig::default());
    let s = net.add_host("server", &[server], LinkConfig::default());
    net.add_app(s, TcpServer::new(TcpServerConfig::new(80)));
    let cli =
        net.add_app(c, TcpClient::new(TcpClientConfig::new(Endpoint::new(server, 80), 2, 300_000, 300_000)));
    assert!(net.run_until(Instant::from_secs(5), |n| n.app(&cli).finished()));
    let capture = net.capture();
    let kept: usize = capture.records().map(|r| r.data.len()).sum();
    assert!(kept <= 100_000 && kept > 90_000, "{kept}");
    assert!(capture.evicted() > 0);
    assert_eq!(capture.evicted() + capture.records().len() as u64, capture.total());
    let last = capture.records().last().unwrap().time;
    assert!(last <= net.now());
}
