//! The simulator with middleboxes that rewrite, originate, time and break
//! packets: a toy FullNAT stands in for the load balancer.

use core::time::Duration;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;

use rvs_core::{Endpoint, Instant};
use rvs_sim::app::{TcpClient, TcpClientConfig, TcpServer, TcpServerConfig};
use rvs_sim::packet::fix_checksums;
use rvs_sim::{LinkConfig, LinkDir, Middlebox, Network, NetworkConfig, Outbox, PacketInfo, Router};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 9);
const LIP: Ipv4Addr = Ipv4Addr::new(10, 0, 8, 1);
const REAL: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn set_addr(p: &mut [u8], at: usize, a: Ipv4Addr) {
    p[at..at + 4].copy_from_slice(&a.octets());
}

fn set_port(p: &mut [u8], at: usize, port: u16) {
    let l4 = usize::from(p[0] & 0x0f) * 4;
    p[l4 + at..l4 + at + 2].copy_from_slice(&port.to_be_bytes());
}

/// VIP:80 → REAL:80, clients hidden behind LIP:port; IPv4 TCP only.
/// Every 100 ms it also sends a UDP datagram from the VIP to the first
/// client it saw, to exercise originated packets and timers.
#[derive(Default)]
struct ToyNat {
    out: HashMap<Endpoint, u16>,
    back: HashMap<u16, Endpoint>,
    next_port: u16,
    dropped: u64,
    timer: Option<Instant>,
    timeouts: u64,
}

impl Middlebox for ToyNat {
    fn handle(&mut self, now: Instant, mut p: Vec<u8>, out: &mut Outbox) {
        if self.rewrite(now, &mut p) {
            out.forward(p);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        self.timeouts += 1;
        self.timer = Some(now + Duration::from_millis(100));
        let Some(client) = self.back.get(&10_001) else { return };
        let IpAddr::V4(c) = client.addr else { unreachable!() };
        let mut p = vec![0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend_from_slice(&VIP.octets());
        p.extend_from_slice(&c.octets());
        p.extend_from_slice(&[0x30, 0x39, 0, 9, 0, 12, 0, 0, b'p', b'i', b'n', b'g']);
        fix_checksums(&mut p);
        out.originate(p);
    }
}

impl ToyNat {
    /// Rewrite `p` in place; whether to forward it.
    fn rewrite(&mut self, now: Instant, p: &mut [u8]) -> bool {
        let Some(i) = PacketInfo::parse(p).filter(|i| i.proto == 6) else {
            self.dropped += 1;
            return false;
        };
        if i.dst == IpAddr::V4(VIP) && i.dst_port == 80 {
            let client = i.src_endpoint();
            let lport = *self.out.entry(client).or_insert_with(|| {
                self.next_port += 1;
                self.back.insert(10_000 + self.next_port, client);
                10_000 + self.next_port
            });
            set_addr(p, 12, LIP);
            set_addr(p, 16, REAL);
            set_port(p, 0, lport);
            self.timer.get_or_insert(now + Duration::from_millis(100));
        } else if i.src_endpoint() == Endpoint::new(REAL.into(), 80) && i.dst == IpAddr::V4(LIP) {
            let Some(client) = self.back.get(&i.dst_port) else {
                self.dropped += 1;
                return false;
            };
            let IpAddr::V4(c) = client.addr else { unreachable!() };
            set_addr(p, 12, VIP);
            set_addr(p, 16, c);
            set_port(p, 2, client.port);
        } else {
            self.dropped += 1;
            return false;
        }
        fix_checksums(p)
    }
}

type Sources = Rc<RefCell<BTreeSet<IpAddr>>>;

fn record_sources<M: Middlebox>(net: &mut Network<M>, host: rvs_sim::HostId) -> Sources {
    let seen: Sources = Rc::default();
    let log = Rc::clone(&seen);
    net.set_observer(host, move |_, p| {
        log.borrow_mut().insert(PacketInfo::parse(p).unwrap().src);
    });
    seen
}

#[test]
fn transfers_through_a_nat_see_only_its_addresses() {
    let mut net = Network::new(ToyNat::default(), NetworkConfig::seeded(8));
    let _pcap = net.pcap_on_failure("toy_nat");
    let lossy = LinkConfig::lossy(0.02);
    let clients =
        [net.add_host("c1", &[ip("10.0.0.1")], lossy), net.add_host("c2", &[ip("10.0.0.2")], lossy)];
    let server = net.add_host("real", &[REAL.into()], lossy);
    let srv = net.add_app(server, TcpServer::new(TcpServerConfig::new(80)));
    let cli: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let mut cfg = TcpClientConfig::new(Endpoint::new(VIP.into(), 80), 10, 100_000, 200_000);
            cfg.first_id = i as u64 * 100;
            net.add_app(c, TcpClient::new(cfg))
        })
        .collect();
    let at_server = record_sources(&mut net, server);
    let at_clients: Vec<_> = clients.iter().map(|&c| record_sources(&mut net, c)).collect();

    assert!(net.run_until(Instant::from_secs(120), |n| cli.iter().all(|h| n.app(h).finished())));
    for h in &cli {
        assert_eq!(net.app(h).ok_count(), 10, "{:#?}", net.app(h).failures().collect::<Vec<_>>());
    }
    net.advance(Duration::from_secs(1));
    let s = net.app(&srv).stats();
    assert_eq!((s.completed, s.failed), (20, 0));
    assert_eq!(s.peers.keys().copied().collect::<Vec<_>>(), vec![IpAddr::V4(LIP)]);
    assert!(net.app(&srv).conns().iter().all(|c| c.remote.addr == IpAddr::V4(LIP)));

    assert_eq!(*at_server.borrow(), BTreeSet::from([IpAddr::V4(LIP)]));
    for seen in &at_clients {
        assert_eq!(*seen.borrow(), BTreeSet::from([IpAddr::V4(VIP)]));
    }
    let nat = net.middlebox();
    assert!(nat.timeouts > 5);
    let stats = net.stats();
    // The timer starts with the first client, so every timeout sends one.
    assert_eq!(stats.originated, nat.timeouts);
    // The client answers the datagrams with ICMP port unreachable, which the NAT drops.
    assert_eq!(stats.dropped, nat.dropped);
    assert!(nat.dropped > 0);
    assert_eq!(stats.unroutable, 0);
    assert!(net.hosts().all(|h| net.host_stats(h).bad_checksum == 0));
}

/// Flips one payload byte of every TCP segment that has one, leaving the
/// checksums stale.
struct Corrupter;

impl Middlebox for Corrupter {
    fn handle(&mut self, _now: Instant, mut p: Vec<u8>, out: &mut Outbox) {
        if PacketInfo::parse(&p).is_some_and(|i| i.payload_len > 0) {
            let last = p.len() - 1;
            p[last] ^= 0x55;
        }
        out.forward(p);
    }
}

#[test]
fn bad_checksums_are_counted_and_dropped_before_the_stack() {
    let mut net = Network::new(Corrupter, NetworkConfig::seeded(9));
    let c = net.add_host("client", &[ip("10.0.0.1")], LinkConfig::default());
    let s = net.add_host("server", &[ip("10.0.1.1")], LinkConfig::default());
    let srv = net.add_app(s, TcpServer::new(TcpServerConfig::new(80)));
    let mut cfg = TcpClientConfig::new(Endpoint::new(ip("10.0.1.1"), 80), 1, 1000, 1000);
    cfg.timeout = Duration::from_secs(2);
    let cli = net.add_app(c, TcpClient::new(cfg));
    assert!(net.run_until(Instant::from_secs(5), |n| n.app(&cli).finished()));
    assert_eq!(net.app(&cli).ok_count(), 0);
    assert!(net.host_stats(s).bad_checksum > 0);
    // Corrupted data never reached the server's checks.
    assert_eq!(net.app(&srv).stats().bytes_verified, 0);
}

#[test]
fn unroutable_lost_and_oversized_packets_are_counted() {
    let mut net = Network::new(Router, NetworkConfig::seeded(10));
    let a = net.add_host("a", &[ip("10.0.0.1")], LinkConfig::default());
    let b = net.add_host("b", &[ip("10.0.0.2")], LinkConfig { mtu: 100, ..LinkConfig::default() });
    let udp = |dst: [u8; 4], len: usize| {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1];
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[0x30, 0x39, 0, 9, 0, 0, 0, 0]);
        p.resize(len, 0);
        let total = (len as u16).to_be_bytes();
        p[2..4].copy_from_slice(&total);
        let udp_len = (len as u16 - 20).to_be_bytes();
        p[24..26].copy_from_slice(&udp_len);
        fix_checksums(&mut p);
        p
    };
    net.send_raw(a, udp([10, 9, 9, 9], 40));
    net.send_raw(a, udp([10, 0, 0, 2], 200));
    net.send_raw(a, udp([10, 0, 0, 2], 60));
    net.set_link(a, LinkDir::ToMiddlebox, LinkConfig::down());
    net.send_raw(a, udp([10, 0, 0, 2], 60));
    net.advance(Duration::from_secs(1));
    assert_eq!(net.stats().unroutable, 1);
    let up = net.link_stats(a, LinkDir::ToMiddlebox);
    assert_eq!((up.sent, up.lost, up.delivered), (4, 1, 3));
    let down = net.link_stats(b, LinkDir::ToHost);
    assert_eq!((down.sent, down.too_big, down.delivered), (2, 1, 1));
    assert_eq!(net.host_stats(b).received, 1);
}
