//! UDP request/response through the plain router, over IPv4 and over IPv6.

use rvs_core::{Endpoint, Instant};
use rvs_sim::app::{Outcome, UdpClient, UdpClientConfig, UdpServer, UdpServerConfig};
use rvs_sim::{Family, LinkConfig, Network, NetworkConfig, Router};

rvs_sim::family_tests! {
    exchanges_complete_through_loss_with_retries: [V4, V6],
    unanswered_exchanges_time_out_after_their_attempts: [V4, V6],
}

fn exchanges_complete_through_loss_with_retries(family: Family) {
    let mut net = Network::new(Router, NetworkConfig::seeded(4));
    let _pcap = net.pcap_on_failure(&format!("udp_exchanges_{family}"));
    let lossy = LinkConfig::lossy(0.02);
    let server = net.add_host("server", &[family.backend("10.0.1.1")], lossy);
    let srv = net.add_app(server, UdpServer::new(UdpServerConfig::new(53)));
    let target = Endpoint::new(family.backend("10.0.1.1"), 53);
    let clients: Vec<_> = (1..=3)
        .map(|i| {
            let host = net.add_host(&format!("c{i}"), &[family.client(&format!("10.0.0.{i}"))], lossy);
            let mut cfg = UdpClientConfig::new(target, 200);
            cfg.id = i;
            cfg.request_len = 300;
            cfg.response_len = 1200;
            net.add_app(host, UdpClient::new(cfg))
        })
        .collect();
    assert!(net.run_until(Instant::from_secs(120), |n| clients.iter().all(|c| n.app(c).finished())));
    let mut retries = 0;
    for c in &clients {
        let c = net.app(c);
        assert_eq!(c.ok_count(), 200);
        assert!(c.exchanges().iter().all(|e| e.outcome == Outcome::Ok));
        retries += c.retries();
    }
    // Four lossy link crossings per exchange: about 8% need a retry.
    assert!(retries > 10, "{retries}");
    let s = net.app(&srv).stats();
    assert_eq!(s.bad, 0);
    assert!(s.requests >= 600);
    assert_eq!(
        s.peers.keys().copied().collect::<Vec<_>>(),
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"].map(|a| family.client(a)).to_vec()
    );
    // Each client kept one source port.
    assert_eq!(s.peer_endpoints.len(), 3);
}

fn unanswered_exchanges_time_out_after_their_attempts(family: Family) {
    let mut net = Network::new(Router, NetworkConfig::seeded(5));
    let client = net.add_host("client", &[family.client("10.0.0.1")], LinkConfig::default());
    // Nobody owns the target address: every request is unroutable.
    let mut cfg = UdpClientConfig::new(Endpoint::new(family.backend("10.9.9.9"), 53), 2);
    cfg.attempts = 3;
    let cli = net.add_app(client, UdpClient::new(cfg));
    assert!(net.run_until(Instant::from_secs(10), |n| n.app(&cli).finished()));
    let c = net.app(&cli);
    assert!(c.exchanges().iter().all(|e| e.outcome == Outcome::TimedOut && e.attempts == 3));
    assert_eq!(net.stats().unroutable, 6);
}
