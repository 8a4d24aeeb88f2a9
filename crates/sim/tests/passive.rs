//! Passive health checking through the real engine, between smoltcp
//! stacks: of two reals, one serves and the other is dead, either silent
//! (its link down) or refusing (no listener: smoltcp answers the SYN with
//! an RST). The engine must count what it sees of each within about the
//! real's RTO, not when the 30 s SYN_RECV timeout ends a connection; and
//! the two requests health checking makes of it (an RTT seed, the reset of
//! a real's connections) must do what they say. Every scenario runs for
//! each [`Family`].

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use rvs_core::{
    Endpoint, Engine, EngineConfig, Instant, PassiveCounters, Proto, RealConfig, SchedKind, ServiceConfig,
    Timeouts,
};
use rvs_sim::app::{Outcome, TcpClient, TcpClientConfig, TcpServer, TcpServerConfig};
use rvs_sim::app::{UdpClient, UdpClientConfig, UdpServer, UdpServerConfig};
use rvs_sim::{AppHandle, Family, HostId, LinkConfig, Network, NetworkConfig, PacketInfo};

rvs_sim::family_tests! {
    plain_a_silent_real_counts_unanswered_syns_within_the_rto,
    plain_a_refusing_real_counts_refused_syns,
    synproxy_a_silent_real_counts_each_unanswered_syn_and_clients_move_on,
    synproxy_a_refusing_real_counts_refused_syns_and_clients_move_on,
    udp_a_flow_with_no_reply_counts_unanswered_when_it_expires,
    an_rtt_seed_brings_the_check_of_a_silent_real_forward,
    resetting_a_real_sends_rsts_both_ways_and_empties_its_connections,
}

const VIP: &str = "10.0.0.1";
const LIP: &str = "10.1.0.1";
const LIVE: &str = "10.2.0.1";
const DEAD: &str = "10.2.0.2";

fn vip(family: Family, proto: Proto) -> Endpoint {
    Endpoint::new(family.client(VIP), if proto == Proto::Udp { 53 } else { 80 })
}

fn real(family: Family, addr: &str, proto: Proto) -> Endpoint {
    Endpoint::new(family.backend(addr), vip(family, proto).port)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dead {
    /// Its link drops everything.
    Silent,
    /// Up, with nothing listening.
    Refusing,
}

struct Lab {
    family: Family,
    net: Network<Engine>,
    client: HostId,
    live: HostId,
    dead: HostId,
}

/// One service of `proto` over the live real and the dead one (round
/// robin, live first), the live real serving.
fn lab(family: Family, seed: u64, proto: Proto, synproxy: bool, dead: Dead) -> Lab {
    let mut e = Engine::new(EngineConfig::default(), [seed as u8; 32], Instant::ZERO);
    let mut svc = ServiceConfig::new(proto, vip(family, proto));
    svc.sched = SchedKind::Rr;
    svc.laddrs = vec![family.backend(LIP)];
    svc.synproxy = synproxy;
    e.add_service(svc).unwrap();
    for r in [LIVE, DEAD] {
        let endpoint = real(family, r, proto);
        e.add_real(proto, vip(family, proto), RealConfig { endpoint, weight: 1 }).unwrap();
    }
    let mut net = Network::new(e, NetworkConfig::seeded(seed));
    let client = net.add_host("client", &[family.client("192.0.2.1")], LinkConfig::default());
    let live = net.add_host("live", &[family.backend(LIVE)], LinkConfig::default());
    let dead_link = if dead == Dead::Silent { LinkConfig::down() } else { LinkConfig::default() };
    let dead = net.add_host("dead", &[family.backend(DEAD)], dead_link);
    match proto {
        Proto::Tcp => {
            let _ = net.add_app(live, TcpServer::new(TcpServerConfig::new(80)));
        }
        Proto::Udp => {
            let _ = net.add_app(live, UdpServer::new(UdpServerConfig::new(53)));
        }
    }
    Lab { family, net, client, live, dead }
}

fn passive(lab: &Lab, proto: Proto, addr: &str) -> PassiveCounters {
    counters(&lab.net, lab.family, proto, addr)
}

fn counters(net: &Network<Engine>, family: Family, proto: Proto, addr: &str) -> PassiveCounters {
    let svc = net.middlebox().service(proto, vip(family, proto)).unwrap();
    svc.reals.iter().find(|r| r.endpoint == real(family, addr, proto)).unwrap().passive
}

/// `n` connections at once, each a short exchange.
fn clients(lab: &mut Lab, n: usize) -> AppHandle<TcpClient> {
    let mut cfg = TcpClientConfig::new(vip(lab.family, Proto::Tcp), n, 100, 1000);
    cfg.timeout = Duration::from_secs(5);
    lab.net.add_app(lab.client, TcpClient::new(cfg))
}

/// Run until `what` of the dead real reaches `n`; how long that took.
fn until(lab: &mut Lab, n: u64, what: fn(&PassiveCounters) -> u64) -> Duration {
    let start = lab.net.now();
    let family = lab.family;
    let done =
        lab.net.run_for(Duration::from_secs(60), |net| what(&counters(net, family, Proto::Tcp, DEAD)) >= n);
    assert!(done, "the dead real's count never reached {n}");
    lab.net.now().saturating_since(start)
}

fn plain_a_silent_real_counts_unanswered_syns_within_the_rto(family: Family) {
    let mut lab = lab(family, 1, Proto::Tcp, false, Dead::Silent);
    let _pcap = lab.net.pcap_on_failure(&format!("passive_plain_silent_{family}"));
    let cli = clients(&mut lab, 4);
    let took = until(&mut lab, 2, |p| p.syn_unanswered);
    // 200 ms initial RTO, a 100 ms wheel tick, the client's link.
    assert!(took <= Duration::from_millis(310), "counted after {took:?}");
    lab.net.run_for(Duration::from_secs(10), |n| n.app(&cli).finished());
    assert_eq!(lab.net.app(&cli).ok_count(), 2, "the live real served its half");
    let dead = passive(&lab, Proto::Tcp, DEAD);
    assert_eq!(dead, PassiveCounters { syn_unanswered: 2, ..Default::default() }, "once per connection");
    let live = passive(&lab, Proto::Tcp, LIVE);
    assert_eq!(live, PassiveCounters { syn_answered: 2, ..Default::default() });
    let svc = lab.net.middlebox().service(Proto::Tcp, vip(family, Proto::Tcp)).unwrap();
    assert!(svc.reals[0].handshake.srtt.is_some(), "plain handshakes measure the RTT");
    assert!(svc.reals[1].handshake.srtt.is_none());
}

fn plain_a_refusing_real_counts_refused_syns(family: Family) {
    let mut lab = lab(family, 2, Proto::Tcp, false, Dead::Refusing);
    let _pcap = lab.net.pcap_on_failure(&format!("passive_plain_refusing_{family}"));
    let cli = clients(&mut lab, 4);
    let took = until(&mut lab, 2, |p| p.syn_refused);
    assert!(took <= Duration::from_millis(10), "counted after {took:?}");
    lab.net.run_for(Duration::from_secs(10), |n| n.app(&cli).finished());
    let dead = passive(&lab, Proto::Tcp, DEAD);
    assert_eq!(dead, PassiveCounters { syn_refused: 2, ..Default::default() });
    assert_eq!(passive(&lab, Proto::Tcp, LIVE).syn_answered, 2);
}

fn synproxy_a_silent_real_counts_each_unanswered_syn_and_clients_move_on(family: Family) {
    let mut lab = lab(family, 3, Proto::Tcp, true, Dead::Silent);
    let _pcap = lab.net.pcap_on_failure(&format!("passive_synproxy_silent_{family}"));
    let cli = clients(&mut lab, 4);
    let took = until(&mut lab, 2, |p| p.syn_unanswered);
    assert!(took <= Duration::from_millis(210), "counted after {took:?}");
    assert!(lab.net.run_for(Duration::from_secs(10), |n| n.app(&cli).finished()));
    assert_eq!(lab.net.app(&cli).ok_count(), 4, "SYNProxy moved the dead real's clients on");
    let svc = lab.net.middlebox().service(Proto::Tcp, vip(family, Proto::Tcp)).unwrap();
    // Two clients, each given up on after two unanswered SYNs.
    assert_eq!(svc.reals[1].passive, PassiveCounters { syn_unanswered: 4, ..Default::default() });
    assert_eq!(svc.reals[1].handshake.failovers, 2);
    assert_eq!(svc.reals[0].passive, PassiveCounters { syn_answered: 4, ..Default::default() });
}

fn synproxy_a_refusing_real_counts_refused_syns_and_clients_move_on(family: Family) {
    let mut lab = lab(family, 4, Proto::Tcp, true, Dead::Refusing);
    let _pcap = lab.net.pcap_on_failure(&format!("passive_synproxy_refusing_{family}"));
    let cli = clients(&mut lab, 4);
    assert!(lab.net.run_for(Duration::from_secs(10), |n| n.app(&cli).finished()));
    assert_eq!(lab.net.app(&cli).ok_count(), 4);
    let svc = lab.net.middlebox().service(Proto::Tcp, vip(family, Proto::Tcp)).unwrap();
    assert_eq!(svc.reals[1].passive, PassiveCounters { syn_refused: 2, ..Default::default() });
    assert_eq!(svc.reals[1].handshake.failovers, 2);
    assert_eq!(svc.reals[0].passive.syn_answered, 4);
}

fn udp_a_flow_with_no_reply_counts_unanswered_when_it_expires(family: Family) {
    let mut lab = lab(family, 5, Proto::Udp, false, Dead::Silent);
    let _pcap = lab.net.pcap_on_failure(&format!("passive_udp_silent_{family}"));
    let udp = Duration::from_secs(10);
    lab.net.middlebox_mut().set_timeouts(Timeouts { udp, ..Timeouts::default() });
    // Two clients, one flow each: round robin puts one on each real.
    let second = lab.net.add_host("client2", &[family.client("192.0.2.2")], LinkConfig::default());
    let clis: Vec<_> = [lab.client, second]
        .into_iter()
        .map(|h| {
            let mut cfg = UdpClientConfig::new(vip(family, Proto::Udp), 3);
            cfg.attempts = 3;
            lab.net.add_app(h, UdpClient::new(cfg))
        })
        .collect();
    assert!(lab.net.run_until(Instant::from_secs(5), |n| clis.iter().all(|c| n.app(c).finished())));
    assert_eq!(clis.iter().map(|c| lab.net.app(c).ok_count()).sum::<usize>(), 3);
    assert_eq!(passive(&lab, Proto::Udp, LIVE), PassiveCounters { udp_answered: 1, ..Default::default() });
    assert_eq!(passive(&lab, Proto::Udp, DEAD), PassiveCounters::default(), "not before it expires");
    lab.net.run_until(Instant::from_secs(20), |_| false);
    assert_eq!(lab.net.middlebox().conn_count(), 0);
    assert_eq!(passive(&lab, Proto::Udp, DEAD), PassiveCounters { udp_unanswered: 1, ..Default::default() });
    assert_eq!(passive(&lab, Proto::Udp, LIVE).udp_answered, 1, "each flow once");
}

fn an_rtt_seed_brings_the_check_of_a_silent_real_forward(family: Family) {
    let mut lab = lab(family, 6, Proto::Tcp, false, Dead::Silent);
    let _pcap = lab.net.pcap_on_failure(&format!("passive_seeded_{family}"));
    lab.net.middlebox_mut().seed_rtt(real(family, DEAD, Proto::Tcp), Duration::from_millis(1));
    let _cli = clients(&mut lab, 2);
    // RTO 1 + 4 × 0.5 ms, raised to the 10 ms floor: the first wheel tick.
    let took = until(&mut lab, 1, |p| p.syn_unanswered);
    assert!(took <= Duration::from_millis(110), "counted after {took:?}");
}

fn resetting_a_real_sends_rsts_both_ways_and_empties_its_connections(family: Family) {
    // The real to be reset serves too.
    let mut lab = lab(family, 7, Proto::Tcp, false, Dead::Refusing);
    let _pcap = lab.net.pcap_on_failure(&format!("passive_reset_real_{family}"));
    let dead = lab.dead;
    let _srv = lab.net.add_app(dead, TcpServer::new(TcpServerConfig::new(80)));
    // Four connections that stay open: the client waits before its request.
    let mut cfg = TcpClientConfig::new(vip(family, Proto::Tcp), 4, 100, 1000);
    cfg.send_delay = Duration::from_secs(5);
    let cli = lab.net.add_app(lab.client, TcpClient::new(cfg));
    // The flows each host saw an RST on (a segment in flight when the
    // connection went is answered with one more).
    let rsts = |net: &mut Network<Engine>, host| {
        let seen = Rc::new(RefCell::new(BTreeSet::new()));
        let s = seen.clone();
        net.set_observer(host, move |_, pkt| {
            if let Some(p) = PacketInfo::parse(pkt).filter(PacketInfo::is_rst) {
                s.borrow_mut().insert((p.src_endpoint(), p.dst_endpoint()));
            }
        });
        seen
    };
    let to_client = rsts(&mut lab.net, lab.client);
    let to_dead = rsts(&mut lab.net, dead);
    let to_live = rsts(&mut lab.net, lab.live);
    lab.net.run_for(Duration::from_secs(1), |_| false);
    let svc = lab.net.middlebox().service(Proto::Tcp, vip(family, Proto::Tcp)).unwrap();
    assert_eq!((svc.reals[0].active_conns, svc.reals[1].active_conns), (2, 2));
    let gone = lab.net.middlebox_mut().reset_real(
        Proto::Tcp,
        vip(family, Proto::Tcp),
        real(family, DEAD, Proto::Tcp),
    );
    assert_eq!(gone, Ok(2));
    lab.net.run_for(Duration::from_secs(1), |_| false);
    let n = |s: &Rc<RefCell<BTreeSet<(Endpoint, Endpoint)>>>| s.borrow().len();
    assert_eq!((n(&to_client), n(&to_dead), n(&to_live)), (2, 2, 0), "both sides of each");
    let svc = lab.net.middlebox().service(Proto::Tcp, vip(family, Proto::Tcp)).unwrap();
    assert_eq!(svc.reals[1].conns(), 0);
    assert!(lab.net.middlebox().conns().all(|c| c.real != real(family, DEAD, Proto::Tcp)));
    assert!(lab.net.run_for(Duration::from_secs(20), |n| n.app(&cli).finished()));
    let c = lab.net.app(&cli);
    assert_eq!(c.ok_count(), 2, "the live real's connections run on");
    assert_eq!(c.conns().iter().filter(|c| matches!(c.outcome, Outcome::Closed { .. })).count(), 2);
}
