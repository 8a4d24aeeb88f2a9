//! The simulator with middleboxes that rewrite, originate, time and break
//! packets: a toy FullNAT stands in for the load balancer. Hosts and
//! middleboxes speak one family per scenario, IPv4 or IPv6 (translation is
//! the load balancer's, tested through the engine).

use core::time::Duration;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::rc::Rc;

use rvs_core::{Endpoint, Instant};
use rvs_sim::app::{TcpClient, TcpClientConfig, TcpServer, TcpServerConfig};
use rvs_sim::packet::fix_checksums;
use rvs_sim::{Family, LinkConfig, LinkDir, Middlebox, Network, NetworkConfig, Outbox, PacketInfo, Router};

rvs_sim::family_tests! {
    transfers_through_a_nat_see_only_its_addresses: [V4, V6],
    bad_checksums_are_counted_and_dropped_before_the_stack: [V4, V6],
    unroutable_lost_and_oversized_packets_are_counted: [V4, V6],
    a_narrow_link_answers_too_big_and_the_sender_lowers_its_path_mtu: [V4, V6],
}

const VIP: &str = "10.0.9.9";
const LIP: &str = "10.0.8.1";
const REAL: &str = "10.0.1.1";

/// Offset of the transport header (no IPv6 extension headers here).
fn l4(p: &[u8]) -> usize {
    if p[0] >> 4 == 4 { usize::from(p[0] & 0x0f) * 4 } else { 40 }
}

/// Set the source (`dst` false) or destination address of `p`.
fn set_addr(p: &mut [u8], dst: bool, a: IpAddr) {
    match a {
        IpAddr::V4(a) => p[12 + 4 * usize::from(dst)..][..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => p[8 + 16 * usize::from(dst)..][..16].copy_from_slice(&a.octets()),
    }
}

fn set_port(p: &mut [u8], at: usize, port: u16) {
    let l4 = l4(p);
    p[l4 + at..l4 + at + 2].copy_from_slice(&port.to_be_bytes());
}

/// A UDP datagram of `len` bytes in all, payload zero unless given.
fn udp_packet(src: IpAddr, dst: IpAddr, len: usize, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; len];
    let hdr = if src.is_ipv4() {
        p[..10].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17]);
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        20
    } else {
        p[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, 17, 64]);
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        40
    };
    set_addr(&mut p, false, src);
    set_addr(&mut p, true, dst);
    p[hdr..hdr + 4].copy_from_slice(&[0x30, 0x39, 0, 9]);
    p[hdr + 4..hdr + 6].copy_from_slice(&((len - hdr) as u16).to_be_bytes());
    p[hdr + 8..hdr + 8 + payload.len()].copy_from_slice(payload);
    fix_checksums(&mut p);
    p
}

/// VIP:80 → REAL:80, clients hidden behind LIP:port; TCP only.
/// Every 100 ms it also sends a UDP datagram from the VIP to the first
/// client it saw, to exercise originated packets and timers.
struct ToyNat {
    vip: IpAddr,
    lip: IpAddr,
    real: IpAddr,
    out: HashMap<Endpoint, u16>,
    back: HashMap<u16, Endpoint>,
    next_port: u16,
    dropped: u64,
    timer: Option<Instant>,
    timeouts: u64,
}

impl ToyNat {
    fn new(family: Family) -> Self {
        Self {
            vip: family.client(VIP),
            lip: family.backend(LIP),
            real: family.backend(REAL),
            out: HashMap::new(),
            back: HashMap::new(),
            next_port: 0,
            dropped: 0,
            timer: None,
            timeouts: 0,
        }
    }
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
        let len = if self.vip.is_ipv4() { 32 } else { 52 };
        out.originate(udp_packet(self.vip, client.addr, len, b"ping"));
    }
}

impl ToyNat {
    /// Rewrite `p` in place; whether to forward it.
    fn rewrite(&mut self, now: Instant, p: &mut [u8]) -> bool {
        let Some(i) = PacketInfo::parse(p).filter(|i| i.proto == 6) else {
            self.dropped += 1;
            return false;
        };
        if i.dst == self.vip && i.dst_port == 80 {
            let client = i.src_endpoint();
            let lport = *self.out.entry(client).or_insert_with(|| {
                self.next_port += 1;
                self.back.insert(10_000 + self.next_port, client);
                10_000 + self.next_port
            });
            set_addr(p, false, self.lip);
            set_addr(p, true, self.real);
            set_port(p, 0, lport);
            self.timer.get_or_insert(now + Duration::from_millis(100));
        } else if i.src_endpoint() == Endpoint::new(self.real, 80) && i.dst == self.lip {
            let Some(client) = self.back.get(&i.dst_port).copied() else {
                self.dropped += 1;
                return false;
            };
            set_addr(p, false, self.vip);
            set_addr(p, true, client.addr);
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

fn transfers_through_a_nat_see_only_its_addresses(family: Family) {
    let mut net = Network::new(ToyNat::new(family), NetworkConfig::seeded(8));
    let _pcap = net.pcap_on_failure(&format!("toy_nat_{family}"));
    let lossy = LinkConfig::lossy(0.02);
    let (vip, lip) = (family.client(VIP), family.backend(LIP));
    let clients = [
        net.add_host("c1", &[family.client("10.0.0.1")], lossy),
        net.add_host("c2", &[family.client("10.0.0.2")], lossy),
    ];
    let server = net.add_host("real", &[family.backend(REAL)], lossy);
    let srv = net.add_app(server, TcpServer::new(TcpServerConfig::new(80)));
    let cli: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let mut cfg = TcpClientConfig::new(Endpoint::new(vip, 80), 10, 100_000, 200_000);
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
    assert_eq!(s.peers.keys().copied().collect::<Vec<_>>(), vec![lip]);
    assert!(net.app(&srv).conns().iter().all(|c| c.remote.addr == lip));

    assert_eq!(*at_server.borrow(), BTreeSet::from([lip]));
    for seen in &at_clients {
        assert_eq!(*seen.borrow(), BTreeSet::from([vip]));
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

fn bad_checksums_are_counted_and_dropped_before_the_stack(family: Family) {
    let mut net = Network::new(Corrupter, NetworkConfig::seeded(9));
    let c = net.add_host("client", &[family.client("10.0.0.1")], LinkConfig::default());
    let s = net.add_host("server", &[family.backend("10.0.1.1")], LinkConfig::default());
    let srv = net.add_app(s, TcpServer::new(TcpServerConfig::new(80)));
    let mut cfg = TcpClientConfig::new(Endpoint::new(family.backend("10.0.1.1"), 80), 1, 1000, 1000);
    cfg.timeout = Duration::from_secs(2);
    let cli = net.add_app(c, TcpClient::new(cfg));
    assert!(net.run_until(Instant::from_secs(5), |n| n.app(&cli).finished()));
    assert_eq!(net.app(&cli).ok_count(), 0);
    assert!(net.host_stats(s).bad_checksum > 0);
    // Corrupted data never reached the server's checks.
    assert_eq!(net.app(&srv).stats().bytes_verified, 0);
}

fn unroutable_lost_and_oversized_packets_are_counted(family: Family) {
    let mut net = Network::new(Router, NetworkConfig::seeded(10));
    let src = family.client("10.0.0.1");
    let a = net.add_host("a", &[src], LinkConfig::default());
    let b = net.add_host("b", &[family.client("10.0.0.2")], LinkConfig { mtu: 100, ..LinkConfig::default() });
    // Sizes past the IP header; IPv4 ones may be fragmented (DF clear), so
    // the narrow link answers nothing about them.
    let hdr = family.client_ip_header();
    let udp = |dst: &str, len: usize| udp_packet(src, family.client(dst), hdr + len, &[]);
    net.send_raw(a, udp("10.9.9.9", 20));
    net.send_raw(a, udp("10.0.0.2", 180));
    net.send_raw(a, udp("10.0.0.2", 40));
    net.set_link(a, LinkDir::ToMiddlebox, LinkConfig::down());
    net.send_raw(a, udp("10.0.0.2", 40));
    net.advance(Duration::from_secs(1));
    assert_eq!(net.stats().unroutable, 1);
    let up = net.link_stats(a, LinkDir::ToMiddlebox);
    assert_eq!((up.sent, up.lost, up.delivered), (4, 1, 3));
    let down = net.link_stats(b, LinkDir::ToHost);
    assert_eq!((down.sent, down.too_big, down.delivered), (2, 1, 1));
    assert_eq!(net.host_stats(b).received, 1);
}

/// A server behind a link narrower than its own interface: its MSS does not
/// tell, so the client's full-sized segments meet the narrow link, which
/// answers with ICMP fragmentation needed or packet too big; the client
/// lowers its path MTU toward the server and every byte arrives.
fn a_narrow_link_answers_too_big_and_the_sender_lowers_its_path_mtu(family: Family) {
    let mut net = Network::new(Router, NetworkConfig::seeded(11));
    let _pcap = net.pcap_on_failure(&format!("narrow_link_{family}"));
    let server_addr = family.backend("10.0.1.1");
    let c = net.add_host("client", &[family.client("10.0.0.1")], LinkConfig::lossy(0.01));
    let narrow = LinkConfig { mtu: 1280, ..LinkConfig::lossy(0.01) };
    let s = net.add_host_asymmetric("server", &[server_addr], LinkConfig::lossy(0.01), narrow);
    let srv = net.add_app(s, TcpServer::new(TcpServerConfig::new(80)));
    let cfg = TcpClientConfig::new(Endpoint::new(server_addr, 80), 4, 256 << 10, 256 << 10);
    let cli = net.add_app(c, TcpClient::new(cfg));
    assert!(net.run_until(Instant::from_secs(60), |n| n.app(&cli).finished()));
    assert_eq!(net.app(&cli).ok_count(), 4, "{:#?}", net.app(&cli).failures().collect::<Vec<_>>());
    net.advance(Duration::from_secs(1));
    assert_eq!(net.app(&srv).stats().bytes_verified, 4 << 18);
    assert!(net.link_stats(s, LinkDir::ToHost).too_big > 0);
    assert_eq!(net.path_mtu(c, server_addr), Some(1280));
    let st = net.host_stats(c);
    assert!(st.path_mtu_lowered == 1 && st.resegmented > 0, "{st:?}");
    assert!(net.hosts().all(|h| net.host_stats(h).bad_checksum == 0));
}
