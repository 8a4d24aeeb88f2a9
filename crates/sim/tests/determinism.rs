//! Same seed, same run; another seed, another run; over IPv4 and IPv6.

use core::time::Duration;

use rvs_core::{Endpoint, Instant};
use rvs_sim::app::{
    TcpClient, TcpClientConfig, TcpServer, TcpServerConfig, UdpClient, UdpClientConfig, UdpServer,
    UdpServerConfig,
};
use rvs_sim::{Family, LinkConfig, Network, NetworkConfig, Router};

rvs_sim::family_tests! {
    same_seed_same_packets_other_seed_other_packets: [V4, V6],
}

/// A lossy mixed TCP/UDP run; returns the capture digest, the pcap bytes and
/// when the last connection finished.
fn run(family: Family, seed: u64) -> (u64, Vec<u8>, Instant) {
    let mut config = NetworkConfig::seeded(seed);
    config.capture_limit = 256 << 20;
    let mut net = Network::new(Router, config);
    let lossy = LinkConfig::lossy(0.03);
    let server = family.backend("10.0.1.1");
    let c = net.add_host("client", &[family.client("10.0.0.1")], lossy);
    let s = net.add_host("server", &[server], lossy);
    net.add_app(s, TcpServer::new(TcpServerConfig::new(80)));
    net.add_app(s, UdpServer::new(UdpServerConfig::new(53)));
    let tcp =
        net.add_app(c, TcpClient::new(TcpClientConfig::new(Endpoint::new(server, 80), 20, 20_000, 60_000)));
    let udp = net.add_app(c, UdpClient::new(UdpClientConfig::new(Endpoint::new(server, 53), 50)));
    assert!(net.run_until(Instant::from_secs(120), |n| n.app(&tcp).finished() && n.app(&udp).finished()));
    let end = net.now();
    net.advance(Duration::from_secs(1));
    assert_eq!(net.app(&tcp).ok_count(), 20);
    assert_eq!(net.capture().evicted(), 0);
    let capture = net.capture();
    (capture.digest(), capture.to_pcap(), end)
}

fn same_seed_same_packets_other_seed_other_packets(family: Family) {
    let (a, pcap_a, end_a) = run(family, 11);
    let (b, pcap_b, end_b) = run(family, 11);
    assert_eq!(a, b);
    assert_eq!(end_a, end_b);
    assert!(pcap_a == pcap_b, "same seed, different captures");
    let (c, pcap_c, _) = run(family, 12);
    assert_ne!(a, c);
    assert!(pcap_a != pcap_c);
}
