//! Same seed, same run; another seed, another run.

use core::time::Duration;
use std::net::IpAddr;

use rvs_core::{Endpoint, Instant};
use rvs_sim::app::{
    TcpClient, TcpClientConfig, TcpServer, TcpServerConfig, UdpClient, UdpClientConfig, UdpServer,
    UdpServerConfig,
};
use rvs_sim::{LinkConfig, Network, NetworkConfig, Router};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A lossy mixed TCP/UDP run; returns the capture digest, the pcap bytes and
/// when the last connection finished.
fn run(seed: u64) -> (u64, Vec<u8>, Instant) {
    let mut config = NetworkConfig::seeded(seed);
    config.capture_limit = 256 << 20;
    let mut net = Network::new(Router, config);
    let lossy = LinkConfig::lossy(0.03);
    let c = net.add_host("client", &[ip("10.0.0.1")], lossy);
    let s = net.add_host("server", &[ip("10.0.1.1")], lossy);
    net.add_app(s, TcpServer::new(TcpServerConfig::new(80)));
    net.add_app(s, UdpServer::new(UdpServerConfig::new(53)));
    let tcp = net.add_app(
        c,
        TcpClient::new(TcpClientConfig::new(Endpoint::new(ip("10.0.1.1"), 80), 20, 20_000, 60_000)),
    );
    let udp = net.add_app(c, UdpClient::new(UdpClientConfig::new(Endpoint::new(ip("10.0.1.1"), 53), 50)));
    assert!(net.run_until(Instant::from_secs(120), |n| n.app(&tcp).finished() && n.app(&udp).finished()));
    let end = net.now();
    net.advance(Duration::from_secs(1));
    assert_eq!(net.app(&tcp).ok_count(), 20);
    assert_eq!(net.capture().evicted(), 0);
    let capture = net.capture();
    (capture.digest(), capture.to_pcap(), end)
}

#[test]
fn same_seed_same_packets_other_seed_other_packets() {
    let (a, pcap_a, end_a) = run(11);
    let (b, pcap_b, end_b) = run(11);
    assert_eq!(a, b);
    assert_eq!(end_a, end_b);
    assert!(pcap_a == pcap_b, "same seed, different captures");
    let (c, pcap_c, _) = run(12);
    assert_ne!(a, c);
    assert!(pcap_a != pcap_c);
}
