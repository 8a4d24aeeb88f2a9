//! Passive health checking through the real engine, between smoltcp
//! stacks: of two reals, one serves and the other is dead, either silent
//! (its link down) or refusing (no listener: smoltcp answers the SYN with
//! an RST). The engine must count what it sees of each within about the
//! real's RTO, not when the 30 s SYN_RECV timeout ends a connection; and
//! the two requests health checking makes of it (an RTT seed, the reset of
//! a real's connections) must do what they say.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use rvs_core::{
    Endpoint, Engine, EngineConfig, Instant, PassiveCounters, Proto, RealConfig, SchedKind, ServiceConfig,
    Timeouts,
};
use rvs_sim::app::{Outcome, TcpClient, TcpClientConfig, TcpServer, TcpServerConfig};
use rvs_sim::app::{UdpClient, UdpClientConfig, UdpServer, UdpServerConfig};
use rvs_sim::{AppHandle, HostId, LinkConfig, Network, NetworkConfig, PacketInfo};

const VIP: &str = "10.0.0.1";
const LIP: &str = "10.1.0.1";
const LIVE: &str = "10.2.0.1";
const DEAD: &str = "10.2.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn vip(proto: Proto) -> Endpoint {
    Endpoint::new(ip(VIP), if proto == Proto::Udp { 53 } else { 80 })
}

fn real(addr: &str, proto: Proto) -> Endpoint {
    Endpoint::new(ip(addr), vip(proto).port)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dead {
    /// Its link drops everything.
    Silent,
    /// Up, with nothing listening.
    Refusing,
}

struct Lab {
    net: Network<Engine>,
    client: HostId,
    live: HostId,
    dead: HostId,
}

/// One service of `proto` over the live real and the dead one (round
/// robin, live first), the live real serving.
fn lab(seed: u64, proto: Proto, synproxy: bool, dead: Dead) -> Lab {
    let mut e = Engine::new(EngineConfig::default(), [seed as u8; 32], Instant::ZERO);
    let mut svc = ServiceConfig::new(proto, vip(proto));
    svc.sched = SchedKind::Rr;
    svc.laddrs = vec![ip(LIP)];
    svc.synproxy = synproxy;
    e.add_service(svc).unwrap();
    for r in [LIVE, DEAD] {
        e.add_real(proto, vip(proto), RealConfig { endpoint: real(r, proto), weight: 1 }).unwrap();
    }
    let mut net = Network::new(e, NetworkConfig::seeded(seed));
    let client = net.add_host("client", &[ip("192.0.2.1")], LinkConfig::default());
    let live = net.add_host("live", &[ip(LIVE)], LinkConfig::default());
    let dead_link = if dead == Dead::Silent { LinkConfig::down() } else { LinkConfig::default() };
    let dead = net.add_host("dead", &[ip(DEAD)], dead_link);
    match proto {
        Proto::Tcp => {
            let _ = net.add_app(live, TcpServer::new(TcpServerConfig::new(80)));
        }
        Proto::Udp => {
            let _ = net.add_app(live, UdpServer::new(UdpServerConfig::new(53)));
        }
    }
    Lab { net, client, live, dead }
}

fn passive(net: &Network<Engine>, proto: Proto, addr: &str) -> PassiveCounters {
    let svc = net.middlebox().service(proto, vip(proto)).unwrap();
    svc.reals.iter().find(|r| r.endpoint == real(addr, proto)).unwrap().passive
}

/// `n` connections at once, each a short exchange.
fn clients(lab: &mut Lab, n: usize) -> AppHandle<TcpClient> {
    let mut cfg = TcpClientConfig::new(vip(Proto::Tcp), n, 100, 1000);
    cfg.timeout = Duration::from_secs(5);
    lab.net.add_app(lab.client, TcpClient::new(cfg))
}

/// Run until `what` of the dead real reaches `n`; how long that took.
fn until(lab: &mut Lab, n: u64, what: fn(&PassiveCounters) -> u64) -> Duration {
    let start = lab.net.now();
    let done = lab.net.run_for(Duration::from_secs(60), |net| what(&passive(net, Proto::Tcp, DEAD)) >= n);
    assert!(done, "the dead real's count never reached {n}");
    lab.net.now().saturating_since(start)
}

#[test]
fn plain_a_silent_real_counts_unanswered_syns_within_the_rto() {
    let mut lab = lab(1, Proto::Tcp, false, Dead::Silent);
    let _pcap = lab.net.pcap_on_failure("passive_plain_silent");
    let cli = clients(&mut lab, 4);
    let took = until(&mut lab, 2, |p| p.syn_unanswered);
    // 200 ms initial RTO, a 100 ms wheel tick, the client's link.
    assert!(took <= Duration::from_millis(310), "counted after {took:?}");
    lab.net.run_for(Duration::from_secs(10), |n| n.app(&cli).finished());
    assert_eq!(lab.net.app(&cli).ok_count(), 2, "the live real served its half");
    let dead = passive(&lab.net, Proto::Tcp, DEAD);
    assert_eq!(dead, PassiveCounters { syn_unanswered: 2, ..Default::default() }, "once per connection");
    let live = passive(&lab.net, Proto::Tcp, LIVE);
    assert_eq!(live, PassiveCounters { syn_answered: 2, ..Default::default() });
    let svc = lab.net.middlebox().service(Proto::Tcp, vip(Proto::Tcp)).unwrap();
    assert!(svc.reals[0].handshake.srtt.is_some(), "plain handshakes measure the RTT");
    assert!(svc.reals[1].handshake.srtt.is_none());
}

#[test]
fn plain_a_refusing_real_counts_refused_syns() {
    let mut lab = lab(2, Proto::Tcp, false, Dead::Refusing);
    let _pcap = lab.net.pcap_on_failure("passive_plain_refusing");
    let cli = clients(&mut lab, 4);
    let took = until(&mut lab, 2, |p| p.syn_refused);
    assert!(took <= Duration::from_millis(10), "counted after {took:?}");
    lab.net.run_for(Duration::from_secs(10), |n| n.app(&cli).finished());
    let dead = passive(&lab.net, Proto::Tcp, DEAD);
    assert_eq!(dead, PassiveCounters { syn_refused: 2, ..Default::default() });
    assert_eq!(passive(&lab.net, Proto::Tcp, LIVE).syn_answered, 2);
}

#[test]
fn synproxy_a_silent_real_counts_each_unanswered_syn_and_clients_move_on() {
    let mut lab = lab(3, Proto::Tcp, true, Dead::Silent);
    let _pcap = lab.net.pcap_on_failure("passive_synproxy_silent");
    let cli = clients(&mut lab, 4);
    let took = until(&mut lab, 2, |p| p.syn_unanswered);
    assert!(took <= Duration::from_millis(210), "counted after {took:?}");
    assert!(lab.net.run_for(Duration::from_secs(10), |n| n.app(&cli).finished()));
    assert_eq!(lab.net.app(&cli).ok_count(), 4, "SYNProxy moved the dead real's clients on");
    let svc = lab.net.middlebox().service(Proto::Tcp, vip(Proto::Tcp)).unwrap();
    // Two clients, each given up on after two unanswered SYNs.
    assert_eq!(svc.reals[1].passive, PassiveCounters { syn_unanswered: 4, ..Default::default() });
    assert_eq!(svc.reals[1].handshake.failovers, 2);
    assert_eq!(svc.reals[0].passive, PassiveCounters { syn_answered: 4, ..Default::default() });
}

#[test]
fn synproxy_a_refusing_real_counts_refused_syns_and_clients_move_on() {
    let mut lab = lab(4, Proto::Tcp, true, Dead::Refusing);
    let _pcap = lab.net.pcap_on_failure("passive_synproxy_refusing");
    let cli = clients(&mut lab, 4);
    assert!(lab.net.run_for(Duration::from_secs(10), |n| n.app(&cli).finished()));
    assert_eq!(lab.net.app(&cli).ok_count(), 4);
    let svc = lab.net.middlebox().service(Proto::Tcp, vip(Proto::Tcp)).unwrap();
    assert_eq!(svc.reals[1].passive, PassiveCounters { syn_refused: 2, ..Default::default() });
    assert_eq!(svc.reals[1].handshake.failovers, 2);
    assert_eq!(svc.reals[0].passive.syn_answered, 4);
}

#[test]
fn udp_a_flow_with_no_reply_counts_unanswered_when_it_expires() {
    let mut lab = lab(5, Proto::Udp, false, Dead::Silent);
    let _pcap = lab.net.pcap_on_failure("passive_udp_silent");
    let udp = Duration::from_secs(10);
    lab.net.middlebox_mut().set_timeouts(Timeouts { udp, ..Timeouts::default() });
    // Two clients, one flow each: round robin puts one on each real.
    let second = lab.net.add_host("client2", &[ip("192.0.2.2")], LinkConfig::default());
    let clis: Vec<_> = [lab.client, second]
        .into_iter()
        .map(|h| {
            let mut cfg = UdpClientConfig::new(vip(Proto::Udp), 3);
            cfg.attempts = 3;
            lab.net.add_app(h, UdpClient::new(cfg))
        })
        .collect();
    assert!(lab.net.run_until(Instant::from_secs(5), |n| clis.iter().all(|c| n.app(c).finished())));
    assert_eq!(clis.iter().map(|c| lab.net.app(c).ok_count()).sum::<usize>(), 3);
    assert_eq!(
        passive(&lab.net, Proto::Udp, LIVE),
        PassiveCounters { udp_answered: 1, ..Default::default() }
    );
    assert_eq!(passive(&lab.net, Proto::Udp, DEAD), PassiveCounters::default(), "not before it expires");
    lab.net.run_until(Instant::from_secs(20), |_| false);
    assert_eq!(lab.net.middlebox().conn_count(), 0);
    assert_eq!(
        passive(&lab.net, Proto::Udp, DEAD),
        PassiveCounters { udp_unanswered: 1, ..Default::default() }
    );
    assert_eq!(passive(&lab.net, Proto::Udp, LIVE).udp_answered, 1, "each flow once");
}

#[test]
fn an_rtt_seed_brings_the_check_of_a_silent_real_forward() {
    let mut lab = lab(6, Proto::Tcp, false, Dead::Silent);
    let _pcap = lab.net.pcap_on_failure("passive_seeded");
    lab.net.middlebox_mut().seed_rtt(real(DEAD, Proto::Tcp), Duration::from_millis(1));
    let _cli = clients(&mut lab, 2);
    // RTO 1 + 4 × 0.5 ms, raised to the 10 ms floor: the first wheel tick.
    let took = until(&mut lab, 1, |p| p.syn_unanswered);
    assert!(took <= Duration::from_millis(110), "counted after {took:?}");
}

#[test]
fn resetting_a_real_sends_rsts_both_ways_and_empties_its_connections() {
    // The real to be reset serves too.
    let mut lab = lab(7, Proto::Tcp, false, Dead::Refusing);
    let _pcap = lab.net.pcap_on_failure("passive_reset_real");
    let dead = lab.dead;
    let _srv = lab.net.add_app(dead, TcpServer::new(TcpServerConfig::new(80)));
    // Four connections that stay open: the client waits before its request.
    let mut cfg = TcpClientConfig::new(vip(Proto::Tcp), 4, 100, 1000);
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
    let svc = lab.net.middlebox().service(Proto::Tcp, vip(Proto::Tcp)).unwrap();
    assert_eq!((svc.reals[0].active_conns, svc.reals[1].active_conns), (2, 2));
    let gone = lab.net.middlebox_mut().reset_real(Proto::Tcp, vip(Proto::Tcp), real(DEAD, Proto::Tcp));
    assert_eq!(gone, Ok(2));
    lab.net.run_for(Duration::from_secs(1), |_| false);
    let n = |s: &Rc<RefCell<BTreeSet<(Endpoint, Endpoint)>>>| s.borrow().len();
    assert_eq!((n(&to_client), n(&to_dead), n(&to_live)), (2, 2, 0), "both sides of each");
    let svc = lab.net.middlebox().service(Proto::Tcp, vip(Proto::Tcp)).unwrap();
    assert_eq!(svc.reals[1].conns(), 0);
    assert!(lab.net.middlebox().conns().all(|c| c.real != real(DEAD, Proto::Tcp)));
    assert!(lab.net.run_for(Duration::from_secs(20), |n| n.app(&cli).finished()));
    let c = lab.net.app(&cli);
    assert_eq!(c.ok_count(), 2, "the live real's connections run on");
    assert_eq!(c.conns().iter().filter(|c| matches!(c.outcome, Outcome::Closed { .. })).count(), 2);
}
