//! FullNAT through the real engine, between smoltcp TCP/UDP stacks, over
//! simulated links: scheduling shares, byte-exact transfers under loss,
//! address hiding, draining reals, UDP.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use rvs_core::{Endpoint, Engine, EngineConfig, Instant, Proto, RealConfig, SchedKind, ServiceConfig};
use rvs_sim::app::{
    TcpClient, TcpClientConfig, TcpServer, TcpServerConfig, UdpClient, UdpClientConfig, UdpServer,
    UdpServerConfig,
};
use rvs_sim::{AppHandle, HostId, LinkConfig, Network, NetworkConfig, PacketInfo};

const VIP: &str = "10.0.0.1";
const LIPS: [&str; 2] = ["10.1.0.1", "10.1.0.2"];
const REALS: [&str; 3] = ["10.2.0.1", "10.2.0.2", "10.2.0.3"];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Lab {
    net: Network<Engine>,
    clients: Vec<HostId>,
    reals: Vec<HostId>,
}

/// A load balancer with one service (`proto`, VIP:port) and three reals
/// weighted `weights`, `n_clients` client hosts, every link `link`.
fn lab(
    seed: u64,
    proto: Proto,
    port: u16,
    sched: SchedKind,
    weights: [u32; 3],
    n_clients: u8,
    link: LinkConfig,
) -> Lab {
    let mut engine = Engine::new(EngineConfig::default(), [seed as u8; 32], Instant::ZERO);
    let vip = Endpoint::new(ip(VIP), port);
    let mut svc = ServiceConfig::new(proto, vip);
    svc.sched = sched;
    svc.laddrs = LIPS.iter().map(|l| ip(l)).collect();
    engine.add_service(svc).unwrap();
    for (r, w) in REALS.iter().zip(weights) {
        engine.add_real(proto, vip, RealConfig { endpoint: Endpoint::new(ip(r), port), weight: w }).unwrap();
    }
    let mut net = Network::new(engine, NetworkConfig::seeded(seed));
    let clients = (1..=n_clients)
        .map(|i| net.add_host(&format!("client{i}"), &[ip(&format!("192.0.2.{i}"))], link))
        .collect();
    let reals =
        REALS.iter().enumerate().map(|(i, r)| net.add_host(&format!("real{i}"), &[ip(r)], link)).collect();
    Lab { net, clients, reals }
}

fn vip(port: u16) -> Endpoint {
    Endpoint::new(ip(VIP), port)
}

/// Record the source address of every packet a host receives.
fn watch_sources(net: &mut Network<Engine>, host: HostId) -> Rc<RefCell<BTreeSet<IpAddr>>> {
    let seen = Rc::new(RefCell::new(BTreeSet::new()));
    let s = seen.clone();
    net.set_observer(host, move |_, pkt| {
        if let Some(info) = PacketInfo::parse(pkt) {
            s.borrow_mut().insert(info.src_endpoint().addr);
        }
    });
    seen
}

fn servers(lab: &mut Lab, port: u16) -> Vec<AppHandle<TcpServer>> {
    let reals = lab.reals.clone();
    reals.into_iter().map(|h| lab.net.add_app(h, TcpServer::new(TcpServerConfig::new(port)))).collect()
}

fn assert_share(counts: &[u64], weights: [u32; 3], what: &str) {
    let total: u64 = counts.iter().sum();
    let wsum: u32 = weights.iter().sum();
    for (i, (&c, &w)) in counts.iter().zip(&weights).enumerate() {
        let got = c as f64 / total as f64;
        let want = f64::from(w) / f64::from(wsum);
        assert!(
            (got - want).abs() <= 0.02,
            "{what}: real {i} got {:.3} of {total}, want {want:.3} ± 0.02 ({counts:?})",
            got
        );
    }
}

#[test]
fn weighted_schedulers_hold_their_shares() {
    for (sched, conns, concurrency) in
        [(SchedKind::Wrr, 1200, 16), (SchedKind::Wlc, 1200, 16), (SchedKind::Mh, 6000, 32)]
    {
        let mut lab = lab(7, Proto::Tcp, 80, sched, [3, 2, 1], 4, LinkConfig::default());
        let _pcap = lab.net.pcap_on_failure(&format!("shares_{}", sched.name()));
        let srv = servers(&mut lab, 80);
        let per_client = conns / lab.clients.len();
        let clis: Vec<_> = lab
            .clients
            .clone()
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                let mut cfg = TcpClientConfig::new(vip(80), per_client, 200, 2000);
                cfg.concurrency = concurrency / 4;
                cfg.first_id = (i * per_client) as u64;
                lab.net.add_app(h, TcpClient::new(cfg))
            })
            .collect();
        let done = lab.net.run_for(Duration::from_secs(600), |n| clis.iter().all(|c| n.app(c).finished()));
        assert!(done, "{}: clients did not finish", sched.name());
        for c in &clis {
            assert_eq!(
                lab.net.app(c).ok_count(),
                per_client,
                "{}: failures {:?}",
                sched.name(),
                lab.net.app(c).failures().next()
            );
        }
        let counts: Vec<u64> = srv.iter().map(|s| lab.net.app(s).stats().completed).collect();
        assert_share(&counts, [3, 2, 1], sched.name());
    }
}

#[test]
fn lossy_links_200_concurrent_mebibyte_transfers_are_byte_exact() {
    let mut lab = lab(
        11,
        Proto::Tcp,
        80,
        SchedKind::Wlc,
        [1, 1, 1],
        4,
        LinkConfig { loss: 0.02, ..LinkConfig::lossy(0.02) },
    );
    let _pcap = lab.net.pcap_on_failure("lossy_200_mib");
    let srv = servers(&mut lab, 80);
    let real_sources: Vec<_> =
        lab.reals.clone().into_iter().map(|h| watch_sources(&mut lab.net, h)).collect();
    let client_sources: Vec<_> =
        lab.clients.clone().into_iter().map(|h| watch_sources(&mut lab.net, h)).collect();
    const MIB: u32 = 1 << 20;
    let clis: Vec<_> = lab
        .clients
        .clone()
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let mut cfg = TcpClientConfig::new(vip(80), 50, MIB, MIB);
            cfg.concurrency = 50;
            cfg.first_id = (i * 50) as u64;
            cfg.timeout = Duration::from_secs(600);
            lab.net.add_app(h, TcpClient::new(cfg))
        })
        .collect();
    let done = lab.net.run_for(Duration::from_secs(900), |n| clis.iter().all(|c| n.app(c).finished()));
    assert!(done, "transfers did not finish");
    for c in &clis {
        let app = lab.net.app(c);
        assert_eq!(app.ok_count(), 50, "failure: {:?}", app.failures().next());
        for conn in app.conns() {
            assert_eq!((conn.sent, conn.received), (u64::from(MIB), u64::from(MIB)));
        }
    }
    let verified: u64 = srv.iter().map(|s| lab.net.app(s).stats().bytes_verified).sum();
    assert_eq!(verified, 200 * u64::from(MIB));
    let lips: BTreeSet<IpAddr> = LIPS.iter().map(|l| ip(l)).collect();
    for seen in &real_sources {
        assert!(seen.borrow().is_subset(&lips), "a real saw a non-LIP source: {:?}", seen.borrow());
    }
    for seen in &client_sources {
        assert_eq!(*seen.borrow(), BTreeSet::from([ip(VIP)]), "a client saw something other than the VIP");
    }
    let stats = lab.net.middlebox().stats();
    assert_eq!(stats.conns_created, 200);
    let link = lab.net.total_link_stats();
    assert!(link.lost > 1000, "the links must really have lost packets: {link:?}");
}

#[test]
fn quiesced_and_removed_reals_drain_without_breaking_connections() {
    let mut lab = lab(13, Proto::Tcp, 80, SchedKind::Rr, [1, 1, 1], 2, LinkConfig::default());
    let _pcap = lab.net.pcap_on_failure("drain");
    let srv = servers(&mut lab, 80);
    let clis: Vec<_> = lab
        .clients
        .clone()
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let mut cfg = TcpClientConfig::new(vip(80), 30, 512 * 1024, 512 * 1024);
            cfg.concurrency = 30;
            cfg.first_id = (i * 1000) as u64;
            cfg.timeout = Duration::from_secs(300);
            lab.net.add_app(h, TcpClient::new(cfg))
        })
        .collect();
    // Wait until every first-wave connection is established, mid-transfer.
    let ok = lab.net.run_for(Duration::from_secs(60), |n| {
        clis.iter()
            .all(|c| n.app(c).conns().len() == 30 && n.app(c).conns().iter().all(|k| k.connected.is_some()))
    });
    assert!(ok, "first wave did not connect");
    let unfinished: usize =
        clis.iter().map(|c| lab.net.app(c).conns().iter().filter(|k| k.finished.is_none()).count()).sum();
    assert!(unfinished > 40, "the change must land while transfers run ({unfinished} running)");
    let v = vip(80);
    let conns_per_real = |net: &Network<Engine>| -> Vec<u64> {
        net.middlebox().service(Proto::Tcp, v).unwrap().reals.iter().map(|r| r.stats.conns).collect()
    };
    let before = conns_per_real(&lab.net);
    assert_eq!(before, vec![20, 20, 20], "rr spreads the first wave");
    let lb = lab.net.middlebox_mut();
    lb.edit_real(Proto::Tcp, v, RealConfig { endpoint: Endpoint::new(ip(REALS[0]), 80), weight: 0 }).unwrap();
    lb.remove_real(Proto::Tcp, v, Endpoint::new(ip(REALS[1]), 80)).unwrap();
    for c in &clis {
        lab.net.app_mut(c).add_connections(20);
    }
    let done = lab.net.run_for(Duration::from_secs(600), |n| clis.iter().all(|c| n.app(c).finished()));
    assert!(done);
    for c in &clis {
        assert_eq!(lab.net.app(c).ok_count(), 50, "failure: {:?}", lab.net.app(c).failures().next());
    }
    let after = conns_per_real(&lab.net);
    assert_eq!(after[0], before[0], "quiesced real got a new connection");
    assert_eq!(after[1], before[1], "removed real got a new connection");
    assert_eq!(after[2], before[2] + 40);
    let completed: Vec<u64> = srv.iter().map(|s| lab.net.app(s).stats().completed).collect();
    assert_eq!(completed, after, "every connection, drained reals' included, completed at the server");
}

#[test]
fn udp_request_response_through_fullnat_under_loss() {
    let mut lab = lab(17, Proto::Udp, 53, SchedKind::Wrr, [3, 2, 1], 4, LinkConfig::lossy(0.02));
    let _pcap = lab.net.pcap_on_failure("udp");
    let reals = lab.reals.clone();
    let srv: Vec<_> =
        reals.into_iter().map(|h| lab.net.add_app(h, UdpServer::new(UdpServerConfig::new(53)))).collect();
    let real_sources: Vec<_> =
        lab.reals.clone().into_iter().map(|h| watch_sources(&mut lab.net, h)).collect();
    let mut clis = Vec::new();
    for (i, h) in lab.clients.clone().into_iter().enumerate() {
        // Several flows per client host: each UDP client has its own port.
        for k in 0..6u64 {
            let mut cfg = UdpClientConfig::new(vip(53), 50);
            cfg.id = i as u64 * 100 + k;
            clis.push(lab.net.add_app(h, UdpClient::new(cfg)));
        }
    }
    let done = lab.net.run_for(Duration::from_secs(600), |n| clis.iter().all(|c| n.app(c).finished()));
    assert!(done);
    for c in &clis {
        assert_eq!(lab.net.app(c).ok_count(), 50);
    }
    let flows: Vec<u64> = srv.iter().map(|s| lab.net.app(s).stats().peer_endpoints.len() as u64).collect();
    assert_eq!(flows.iter().sum::<u64>(), 24, "one real-side flow per client flow: {flows:?}");
    assert_eq!(flows, vec![12, 8, 4], "wrr 3:2:1 over 24 flows");
    let lips: BTreeSet<IpAddr> = LIPS.iter().map(|l| ip(l)).collect();
    for seen in &real_sources {
        assert!(seen.borrow().is_subset(&lips));
    }
    assert_eq!(lab.net.middlebox().conn_count(), 24);
    // UDP flows idle out after 300 s.
    lab.net.advance(Duration::from_secs(301));
    assert_eq!(lab.net.middlebox().conn_count(), 0);
}

#[test]
fn a_connection_idle_past_its_timeout_is_reset_on_both_sides() {
    let mut lab = lab(19, Proto::Tcp, 80, SchedKind::Rr, [1, 1, 1], 1, LinkConfig::default());
    let _pcap = lab.net.pcap_on_failure("idle_reset");
    let mut timeouts = rvs_core::Timeouts::default();
    timeouts.set_tcp(rvs_core::TcpState::Established, Duration::from_secs(5));
    lab.net.middlebox_mut().set_timeouts(timeouts);
    let reals = lab.reals.clone();
    let srv: Vec<_> = reals
        .into_iter()
        .map(|h| {
            let mut cfg = TcpServerConfig::new(80);
            cfg.keep_alive = None;
            lab.net.add_app(h, TcpServer::new(cfg))
        })
        .collect();
    // The client connects, then says nothing for 8 s.
    let mut cfg = TcpClientConfig::new(vip(80), 1, 100, 100);
    cfg.keep_alive = None;
    cfg.send_delay = Duration::from_secs(8);
    let client = lab.net.add_app(lab.clients[0], TcpClient::new(cfg));
    let done = lab.net.run_for(Duration::from_secs(30), |n| n.app(&client).finished());
    assert!(done, "the client's connection did not end");
    let conn = &lab.net.app(&client).conns()[0];
    assert_eq!(conn.outcome, rvs_sim::app::Outcome::Closed { received: 0 });
    // Ended by the balancer's RST when the entry expired, before the client spoke.
    let idle = conn.finished.unwrap() - conn.connected.unwrap();
    assert!((Duration::from_secs(5)..Duration::from_secs(7)).contains(&idle), "ended after {idle:?} idle");
    let server_conns: Vec<_> = srv.iter().flat_map(|s| lab.net.app(s).conns().to_vec()).collect();
    assert_eq!(server_conns.len(), 1);
    let s = &server_conns[0];
    assert!(matches!(s.outcome, rvs_sim::app::Outcome::Closed { .. }), "{:?}", s.outcome);
    assert!(s.finished.unwrap() - s.accepted < Duration::from_secs(7), "the real kept the connection");
    let lb = lab.net.middlebox();
    assert_eq!((lb.stats().conns_reset, lb.reset_stats().forgotten), (1, 2));
}
