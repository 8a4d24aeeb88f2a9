//! FullNAT through the real engine, between smoltcp TCP/UDP stacks, over
//! simulated links: scheduling shares, byte-exact transfers under loss,
//! address hiding, draining reals, UDP, path MTU. Every scenario runs for
//! each [`Family`]: IPv4, IPv6, NAT64 and NAT46.

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
use rvs_sim::{AppHandle, Family, HostId, LinkConfig, LinkDir, Network, NetworkConfig, PacketInfo};
use rvs_wire::tcp::{self, TcpOption};

rvs_sim::family_tests! {
    weighted_schedulers_hold_their_shares,
    lossy_links_200_concurrent_mebibyte_transfers_are_byte_exact,
    quiesced_and_removed_reals_drain_without_breaking_connections,
    udp_request_response_through_fullnat_under_loss,
    a_connection_idle_past_its_timeout_is_reset_on_both_sides,
    transfers_both_ways_under_loss_keep_sack_and_timestamps_consistent,
    packets_too_big_for_either_side_lower_both_hosts_path_mtu,
}

const VIP: &str = "10.0.0.1";
const LIPS: [&str; 2] = ["10.1.0.1", "10.1.0.2"];
const REALS: [&str; 3] = ["10.2.0.1", "10.2.0.2", "10.2.0.3"];

struct Lab {
    family: Family,
    net: Network<Engine>,
    clients: Vec<HostId>,
    reals: Vec<HostId>,
}

impl Lab {
    fn vip(&self, port: u16) -> Endpoint {
        Endpoint::new(self.family.client(VIP), port)
    }

    fn real(&self, i: usize, port: u16) -> Endpoint {
        Endpoint::new(self.family.backend(REALS[i]), port)
    }

    fn lips(&self) -> BTreeSet<IpAddr> {
        LIPS.iter().map(|l| self.family.backend(l)).collect()
    }
}

/// A load balancer with one service (`proto`, VIP:port) and three reals
/// weighted `weights`, `n_clients` client hosts, every link `link`.
#[allow(clippy::too_many_arguments)]
fn lab(
    family: Family,
    seed: u64,
    proto: Proto,
    port: u16,
    sched: SchedKind,
    weights: [u32; 3],
    n_clients: u8,
    link: LinkConfig,
) -> Lab {
    let mut engine = Engine::new(EngineConfig::default(), [seed as u8; 32], Instant::ZERO);
    let vip = Endpoint::new(family.client(VIP), port);
    let mut svc = ServiceConfig::new(proto, vip);
    svc.sched = sched;
    svc.laddrs = LIPS.iter().map(|l| family.backend(l)).collect();
    engine.add_service(svc).unwrap();
    for (r, w) in REALS.iter().zip(weights) {
        let endpoint = Endpoint::new(family.backend(r), port);
        engine.add_real(proto, vip, RealConfig { endpoint, weight: w }).unwrap();
    }
    let mut net = Network::new(engine, NetworkConfig::seeded(seed));
    let clients = (1..=n_clients)
        .map(|i| net.add_host(&format!("client{i}"), &[family.client(&format!("192.0.2.{i}"))], link))
        .collect();
    let reals = REALS
        .iter()
        .enumerate()
        .map(|(i, r)| net.add_host(&format!("real{i}"), &[family.backend(r)], link))
        .collect();
    Lab { family, net, clients, reals }
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

fn weighted_schedulers_hold_their_shares(family: Family) {
    for (sched, conns, concurrency) in
        [(SchedKind::Wrr, 1200, 16), (SchedKind::Wlc, 1200, 16), (SchedKind::Mh, 6000, 32)]
    {
        let mut lab = lab(family, 7, Proto::Tcp, 80, sched, [3, 2, 1], 4, LinkConfig::default());
        let _pcap = lab.net.pcap_on_failure(&format!("shares_{}_{family}", sched.name()));
        let srv = servers(&mut lab, 80);
        let per_client = conns / lab.clients.len();
        let clis: Vec<_> = lab
            .clients
            .clone()
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                let mut cfg = TcpClientConfig::new(lab.vip(80), per_client, 200, 2000);
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

fn lossy_links_200_concurrent_mebibyte_transfers_are_byte_exact(family: Family) {
    let mut lab = lab(
        family,
        11,
        Proto::Tcp,
        80,
        SchedKind::Wlc,
        [1, 1, 1],
        4,
        LinkConfig { loss: 0.02, ..LinkConfig::lossy(0.02) },
    );
    let _pcap = lab.net.pcap_on_failure(&format!("lossy_200_mib_{family}"));
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
            let mut cfg = TcpClientConfig::new(lab.vip(80), 50, MIB, MIB);
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
    let lips = lab.lips();
    for seen in &real_sources {
        assert!(seen.borrow().is_subset(&lips), "a real saw a non-LIP source: {:?}", seen.borrow());
    }
    for seen in &client_sources {
        let vip = BTreeSet::from([lab.vip(80).addr]);
        assert_eq!(*seen.borrow(), vip, "a client saw something other than the VIP");
    }
    let stats = lab.net.middlebox().stats();
    assert_eq!(stats.conns_created, 200);
    let link = lab.net.total_link_stats();
    assert!(link.lost > 1000, "the links must really have lost packets: {link:?}");
    // Translation adds 20 bytes one way: the balancer's MSS clamp keeps
    // every packet within the 1500-byte links.
    assert_eq!(link.too_big, 0, "oversize packets on 1500-byte links");
}

fn quiesced_and_removed_reals_drain_without_breaking_connections(family: Family) {
    let mut lab = lab(family, 13, Proto::Tcp, 80, SchedKind::Rr, [1, 1, 1], 2, LinkConfig::default());
    let _pcap = lab.net.pcap_on_failure(&format!("drain_{family}"));
    let srv = servers(&mut lab, 80);
    let clis: Vec<_> = lab
        .clients
        .clone()
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let mut cfg = TcpClientConfig::new(lab.vip(80), 30, 512 * 1024, 512 * 1024);
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
    let v = lab.vip(80);
    let conns_per_real = |net: &Network<Engine>| -> Vec<u64> {
        net.middlebox().service(Proto::Tcp, v).unwrap().reals.iter().map(|r| r.stats.conns).collect()
    };
    let before = conns_per_real(&lab.net);
    assert_eq!(before, vec![20, 20, 20], "rr spreads the first wave");
    let (quiesced, removed) = (lab.real(0, 80), lab.real(1, 80));
    let lb = lab.net.middlebox_mut();
    lb.edit_real(Proto::Tcp, v, RealConfig { endpoint: quiesced, weight: 0 }).unwrap();
    lb.remove_real(Proto::Tcp, v, removed).unwrap();
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

fn udp_request_response_through_fullnat_under_loss(family: Family) {
    let mut lab = lab(family, 17, Proto::Udp, 53, SchedKind::Wrr, [3, 2, 1], 4, LinkConfig::lossy(0.02));
    let _pcap = lab.net.pcap_on_failure(&format!("udp_{family}"));
    let reals = lab.reals.clone();
    let srv: Vec<_> =
        reals.into_iter().map(|h| lab.net.add_app(h, UdpServer::new(UdpServerConfig::new(53)))).collect();
    let real_sources: Vec<_> =
        lab.reals.clone().into_iter().map(|h| watch_sources(&mut lab.net, h)).collect();
    let mut clis = Vec::new();
    for (i, h) in lab.clients.clone().into_iter().enumerate() {
        // Several flows per client host: each UDP client has its own port.
        for k in 0..6u64 {
            let mut cfg = UdpClientConfig::new(lab.vip(53), 50);
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
    let lips = lab.lips();
    for seen in &real_sources {
        assert!(seen.borrow().is_subset(&lips));
    }
    assert_eq!(lab.net.middlebox().conn_count(), 24);
    // UDP flows idle out after 300 s.
    lab.net.advance(Duration::from_secs(301));
    assert_eq!(lab.net.middlebox().conn_count(), 0);
}

fn a_connection_idle_past_its_timeout_is_reset_on_both_sides(family: Family) {
    let mut lab = lab(family, 19, Proto::Tcp, 80, SchedKind::Rr, [1, 1, 1], 1, LinkConfig::default());
    let _pcap = lab.net.pcap_on_failure(&format!("idle_reset_{family}"));
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
    let mut cfg = TcpClientConfig::new(lab.vip(80), 1, 100, 100);
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

/// What the TCP options arriving at one host said, checked as they came.
#[derive(Debug, Default)]
struct OptionLog {
    /// Segments with SACK blocks.
    sack: u64,
    /// SACK blocks not above the segment's cumulative ACK, or more than a
    /// receive buffer past it: blocks about someone else's sequence space.
    sack_astray: u64,
    /// Segments of a handshake that offered timestamps, sent without them.
    missing_timestamps: u64,
    /// Timestamp echoes from the future or more than a minute old: values
    /// this host never sent.
    tsecr_astray: u64,
    /// SYNs that offered SACK and timestamps.
    syns_with_options: u64,
}

/// Check the SACK and timestamp options of every TCP segment `host`
/// receives against what its own stack could have sent: smoltcp stamps
/// segments with the simulated milliseconds, and SACK blocks must lie in
/// the receiver's own sequence space just above the ACK. A balancer that
/// shifts sequence numbers (SYNProxy) or timestamps must translate both.
fn check_options(net: &mut Network<Engine>, host: HostId) -> Rc<RefCell<OptionLog>> {
    const WINDOW: u32 = 1 << 20;
    let log = Rc::new(RefCell::new(OptionLog::default()));
    let l = log.clone();
    net.set_observer(host, move |now, pkt| {
        if PacketInfo::parse(pkt).is_none_or(|i| i.proto != 6) {
            return;
        }
        let Ok(seg) = tcp::Packet::new_checked(&pkt[ip_header_len(pkt)..]) else { return };
        let mut log = l.borrow_mut();
        let (mut sack_ok, mut ts) = (false, None);
        for opt in seg.options_iter().flatten() {
            match opt.1 {
                TcpOption::SackPermitted => sack_ok = true,
                TcpOption::Timestamps { tsval, tsecr } => ts = Some((tsval, tsecr)),
                TcpOption::SackRange(blocks) => {
                    log.sack += 1;
                    let ack = seg.ack_number();
                    let astray = blocks.iter().any(|&(left, right)| {
                        left.wrapping_sub(ack) > WINDOW || right.wrapping_sub(ack) > WINDOW || left == right
                    });
                    log.sack_astray += u64::from(astray);
                }
                _ => {}
            }
        }
        let flags = seg.flags();
        if flags.syn() && !flags.ack() {
            log.syns_with_options += u64::from(sack_ok && ts.is_some());
        } else if !flags.rst() {
            match ts {
                None => log.missing_timestamps += 1,
                Some((_, tsecr)) if !flags.syn() => {
                    let ms = (now.as_nanos() / 1_000_000) as u32;
                    log.tsecr_astray += u64::from(tsecr > ms || ms - tsecr > 60_000);
                }
                Some(_) => {}
            }
        }
    });
    log
}

/// Length of the IP header of `pkt` (neither smoltcp nor the balancer
/// sends IPv6 extension headers).
fn ip_header_len(pkt: &[u8]) -> usize {
    if pkt[0] >> 4 == 4 { usize::from(pkt[0] & 0x0f) * 4 } else { 40 }
}

/// Byte-exact transfers both ways under loss, duplication and reordering,
/// with SACK and timestamps on every connection, through plain FullNAT and
/// through SYNProxy: every option a host receives is one its own stack
/// could make sense of.
fn transfers_both_ways_under_loss_keep_sack_and_timestamps_consistent(family: Family) {
    for synproxy in [false, true] {
        let mut lab = lab(family, 23, Proto::Tcp, 80, SchedKind::Rr, [1, 1, 1], 2, LinkConfig::lossy(0.03));
        let _pcap = lab.net.pcap_on_failure(&format!("sack_ts_{family}_synproxy_{synproxy}"));
        let vip = lab.vip(80);
        let mut cfg = lab.net.middlebox().service(Proto::Tcp, vip).unwrap().config.clone();
        cfg.synproxy = synproxy;
        lab.net.middlebox_mut().edit_service(cfg).unwrap();
        let reals = lab.reals.clone();
        let srv: Vec<_> = reals
            .iter()
            .map(|&h| {
                lab.net.add_app(
                    h,
                    TcpServer::new(TcpServerConfig { timestamps: true, ..TcpServerConfig::new(80) }),
                )
            })
            .collect();
        let hosts: Vec<HostId> = lab.clients.iter().chain(&lab.reals).copied().collect();
        let logs: Vec<_> = hosts.iter().map(|&h| check_options(&mut lab.net, h)).collect();
        const LEN: u32 = 256 << 10;
        let clis: Vec<_> = lab
            .clients
            .clone()
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                let mut cfg = TcpClientConfig::new(vip, 15, LEN, LEN);
                cfg.first_id = (i * 100) as u64;
                cfg.timestamps = true;
                cfg.timeout = Duration::from_secs(300);
                lab.net.add_app(h, TcpClient::new(cfg))
            })
            .collect();
        let done = lab.net.run_for(Duration::from_secs(600), |n| clis.iter().all(|c| n.app(c).finished()));
        assert!(done, "synproxy {synproxy}: transfers did not finish");
        for c in &clis {
            let app = lab.net.app(c);
            assert_eq!(app.ok_count(), 15, "synproxy {synproxy}: failure {:?}", app.failures().next());
        }
        let verified: u64 = srv.iter().map(|s| lab.net.app(s).stats().bytes_verified).sum();
        assert_eq!(verified, 30 * u64::from(LEN));
        for (h, log) in hosts.iter().zip(&logs) {
            let log = log.borrow();
            let name = lab.net.host_name(*h);
            assert!(log.sack > 0, "synproxy {synproxy}: {name} never received a SACK block: {log:?}");
            assert_eq!(log.sack_astray, 0, "synproxy {synproxy}: {name}: SACK blocks astray: {log:?}");
            assert_eq!(log.missing_timestamps, 0, "synproxy {synproxy}: {name}: {log:?}");
            assert_eq!(log.tsecr_astray, 0, "synproxy {synproxy}: {name}: timestamp echoes astray: {log:?}");
        }
        let at_reals: u64 = logs[lab.clients.len()..].iter().map(|l| l.borrow().syns_with_options).sum();
        assert!(at_reals >= 30, "synproxy {synproxy}: the reals' SYNs lost their options ({at_reals})");
    }
}

/// Clients and reals sit behind links of 1280 bytes (their own interfaces
/// are 1500, so their MSS does not tell): each side's big segments are
/// answered by the other side's link with ICMP fragmentation needed or
/// packet too big, which the balancer hands to the sender, translated (the
/// MTU 20 bytes higher toward an IPv6 sender whose packets become IPv4,
/// lower the other way); both hosts lower their path MTU and every
/// transfer completes both ways, without a stall.
fn packets_too_big_for_either_side_lower_both_hosts_path_mtu(family: Family) {
    let mut lab = lab(family, 29, Proto::Tcp, 80, SchedKind::Rr, [1, 1, 1], 2, LinkConfig::default());
    let _pcap = lab.net.pcap_on_failure(&format!("path_mtu_{family}"));
    let narrow = LinkConfig { mtu: 1280, ..LinkConfig::default() };
    for h in lab.clients.clone().into_iter().chain(lab.reals.clone()) {
        lab.net.set_link(h, LinkDir::ToHost, narrow);
    }
    let srv = servers(&mut lab, 80);
    const MIB: u32 = 1 << 20;
    let clis: Vec<_> = lab
        .clients
        .clone()
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let mut cfg = TcpClientConfig::new(lab.vip(80), 3, MIB, MIB);
            cfg.first_id = (i * 100) as u64;
            lab.net.add_app(h, TcpClient::new(cfg))
        })
        .collect();
    let done = lab.net.run_for(Duration::from_secs(120), |n| clis.iter().all(|c| n.app(c).finished()));
    assert!(done, "transfers did not finish");
    for c in &clis {
        let app = lab.net.app(c);
        assert_eq!(app.ok_count(), 3, "failure {:?}", app.failures().next());
        for conn in app.conns() {
            let took = conn.duration().unwrap();
            assert!(took < Duration::from_secs(3), "connection {} stalled: {took:?}", conn.id);
        }
    }
    let verified: u64 = srv.iter().map(|s| lab.net.app(s).stats().bytes_verified).sum();
    assert_eq!(verified, 6 * u64::from(MIB));
    let hosts: Vec<HostId> = lab.clients.iter().chain(&lab.reals).copied().collect();
    for &h in &hosts {
        let name = lab.net.host_name(h);
        assert!(
            lab.net.link_stats(h, LinkDir::ToHost).too_big > 0,
            "{name}: the narrow link refused nothing"
        );
        let st = lab.net.host_stats(h);
        assert!(st.path_mtu_lowered >= 1 && st.resegmented > 0, "{name}: {st:?}");
    }
    // What 1280 bytes on the far side are on the sender's: IPv4's header
    // is 20 bytes shorter than IPv6's.
    let (client_hdr, backend_hdr) = (family.client_ip_header(), family.backend_ip_header());
    for &c in &lab.clients {
        let want = Some(1280 + client_hdr - backend_hdr);
        assert_eq!(lab.net.path_mtu(c, lab.vip(80).addr), want, "{}", lab.net.host_name(c));
    }
    for &r in &lab.reals {
        let learnt: Vec<_> = lab.lips().into_iter().filter_map(|l| lab.net.path_mtu(r, l)).collect();
        let want = 1280 + backend_hdr - client_hdr;
        assert!(
            !learnt.is_empty() && learnt.iter().all(|&m| m == want),
            "{}: {learnt:?}",
            lab.net.host_name(r)
        );
    }
}
