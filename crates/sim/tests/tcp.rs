//! TCP transfers through the plain router, clean and impaired, over IPv4
//! and over IPv6.

use core::time::Duration;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant as WallClock;

use rvs_core::{Endpoint, Instant};
use rvs_sim::app::{Closer, Outcome, TcpClient, TcpClientConfig, TcpServer, TcpServerConfig};
use rvs_sim::smoltcp::iface::SocketHandle;
use rvs_sim::smoltcp::socket::tcp::State as TcpState;
use rvs_sim::{Family, LinkConfig, LinkDir, Network, NetworkConfig, PacketInfo, Router};

rvs_sim::family_tests! {
    ten_clean_connections_complete_byte_exact: [V4, V6],
    client_may_close_first_and_connections_may_be_sequential: [V4, V6],
    impaired_concurrent_transfers_complete_byte_exact: [V4, V6],
    syn_for_a_tuple_in_time_wait_starts_a_new_connection: [V4, V6],
    duplicated_syns_do_not_open_second_connections: [V4, V6],
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ten_clean_connections_complete_byte_exact(family: Family) {
    let wall = WallClock::now();
    let mut net = Network::new(Router, NetworkConfig::seeded(1));
    let _pcap = net.pcap_on_failure(&format!("ten_clean_connections_{family}"));
    let (client_addr, server_addr) = (family.client("10.0.0.1"), family.backend("10.0.1.1"));
    let client = net.add_host("client", &[client_addr], LinkConfig::default());
    let server = net.add_host("server", &[server_addr], LinkConfig::default());
    let srv = net.add_app(server, TcpServer::new(TcpServerConfig::new(80)));
    let target = Endpoint::new(server_addr, 80);
    let cli = net.add_app(client, TcpClient::new(TcpClientConfig::new(target, 10, 64 << 10, 64 << 10)));
    let seen = Rc::new(RefCell::new(BTreeSet::new()));
    let log = Rc::clone(&seen);
    net.set_observer(server, move |_, p| {
        let i = PacketInfo::parse(p).unwrap();
        log.borrow_mut().insert((i.src, i.dst, i.dst_port));
    });

    assert!(net.run_until(Instant::from_secs(10), |n| n.app(&cli).finished()));
    let sim = net.now() - Instant::ZERO;
    let (packets, elapsed) = (net.capture().total(), wall.elapsed());
    let c = net.app(&cli);
    let failures: Vec<_> = c.failures().collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(c.ok_count(), 10);
    for conn in c.conns() {
        assert_eq!((conn.sent, conn.received), (64 << 10, 64 << 10));
        assert!(conn.connected.is_some());
    }
    // Let the server see the last ACKs of its FINs.
    net.advance(Duration::from_secs(1));
    let s = net.app(&srv).stats();
    assert_eq!((s.accepted, s.completed, s.failed), (10, 10, 0));
    assert_eq!(s.bytes_verified, 10 * (64 << 10));
    assert_eq!(s.peers.keys().copied().collect::<Vec<_>>(), vec![client_addr]);
    assert_eq!(*seen.borrow(), BTreeSet::from([(client_addr, server_addr, 80)]));
    let up = net.link_stats(client, LinkDir::ToMiddlebox);
    assert_eq!(up.lost, 0);
    assert_eq!(up.sent, up.delivered);
    assert_eq!(net.host_stats(server).bad_checksum, 0);
    eprintln!("10 x 64 KiB each way: {sim:?} simulated, {elapsed:?} wall, {packets} packets captured");
}

fn client_may_close_first_and_connections_may_be_sequential(family: Family) {
    let mut net = Network::new(Router, NetworkConfig::seeded(3));
    let _pcap = net.pcap_on_failure(&format!("client_closes_first_{family}"));
    let server_addr = family.backend("10.0.1.1");
    let client = net.add_host("client", &[family.client("10.0.0.1")], LinkConfig::lossy(0.01));
    let server = net.add_host("server", &[server_addr], LinkConfig::lossy(0.01));
    let mut scfg = TcpServerConfig::new(8080);
    scfg.closer = Closer::Client;
    scfg.backlog = 1;
    let srv = net.add_app(server, TcpServer::new(scfg));
    let mut ccfg = TcpClientConfig::new(Endpoint::new(server_addr, 8080), 20, 1000, 5000);
    ccfg.closer = Closer::Client;
    ccfg.concurrency = 2;
    ccfg.interval = Duration::from_millis(10);
    let cli = net.add_app(client, TcpClient::new(ccfg));
    assert!(net.run_until(Instant::from_secs(60), |n| n.app(&cli).finished()));
    let c = net.app(&cli);
    assert_eq!(c.ok_count(), 20, "{:#?}", c.failures().collect::<Vec<_>>());
    // Starts are spaced and never more than two overlap.
    let starts: Vec<_> = c.conns().iter().map(|c| c.started).collect();
    assert!(starts.windows(2).all(|w| w[1] - w[0] >= Duration::from_millis(10)));
    for (i, a) in c.conns().iter().enumerate() {
        let overlapping = c.conns()[..i].iter().filter(|b| b.finished.unwrap() > a.started).count();
        assert!(overlapping < 2);
    }
    // Every connection used its own port.
    let ports: BTreeSet<_> = c.conns().iter().map(|c| c.local.unwrap().port).collect();
    assert_eq!(ports.len(), 20);
    net.advance(Duration::from_secs(1));
    let s = net.app(&srv).stats();
    assert_eq!((s.accepted, s.completed, s.failed), (20, 20, 0));
}

/// Runs `n` concurrent transfers of `len` bytes each way from four client
/// hosts to four servers over links that lose, duplicate and reorder 2% of
/// packets each, and checks every byte on both sides.
fn impaired_transfers(family: Family, seed: u64, n: usize, len: u32) {
    let wall = WallClock::now();
    let mut net = Network::new(Router, NetworkConfig::seeded(seed));
    let _pcap = net.pcap_on_failure(&format!("impaired_transfers_{n}_{seed}_{family}"));
    let bad = LinkConfig::lossy(0.02);
    let clients: Vec<_> = (1..=4)
        .map(|i| net.add_host(&format!("c{i}"), &[family.client(&format!("10.0.0.{i}"))], bad))
        .collect();
    let servers: Vec<_> = (1..=4)
        .map(|i| net.add_host(&format!("s{i}"), &[family.backend(&format!("10.0.1.{i}"))], bad))
        .collect();
    let srv: Vec<_> =
        servers.iter().map(|&h| net.add_app(h, TcpServer::new(TcpServerConfig::new(80)))).collect();
    let mut cli = Vec::new();
    let pairs = clients.len() * servers.len();
    for (k, (c, s)) in clients.iter().flat_map(|&c| servers.iter().map(move |&s| (c, s))).enumerate() {
        let count = n / pairs + usize::from(k < n % pairs);
        let mut cfg = TcpClientConfig::new(Endpoint::new(net.host_addrs(s)[0], 80), count, len, len);
        cfg.first_id = (k * n) as u64;
        // smoltcp backs its retransmission timer off to 10 s under sustained
        // loss, so a connection can take a while in simulated time.
        cfg.timeout = Duration::from_secs(300);
        cli.push(net.add_app(c, TcpClient::new(cfg)));
    }
    let done = net.run_until(Instant::from_secs(600), |n| cli.iter().all(|h| n.app(h).finished()));
    let sim = net.now() - Instant::ZERO;
    for h in &cli {
        let failures: Vec<_> = net.app(h).failures().collect();
        assert!(failures.is_empty(), "{failures:#?}");
    }
    assert!(done, "not finished after {sim:?}");
    let ok: usize = cli.iter().map(|h| net.app(h).ok_count()).sum();
    assert_eq!(ok, n);
    for c in cli.iter().flat_map(|h| net.app(h).conns()) {
        assert_eq!((c.sent, c.received, c.outcome), (u64::from(len), u64::from(len), Outcome::Ok));
    }
    // Let the servers see their last ACKs.
    net.advance(Duration::from_secs(30));
    let mut verified = 0;
    for h in &srv {
        let s = net.app(h).stats();
        assert_eq!(s.failed, 0, "{:#?}", net.app(h).failures().collect::<Vec<_>>());
        verified += s.bytes_verified;
    }
    assert_eq!(verified, n as u64 * u64::from(len));
    let links = net.total_link_stats();
    assert!(links.lost > 0 && links.duplicated > 0);
    let bad_checksums: u64 = net.hosts().map(|h| net.host_stats(h).bad_checksum).sum();
    assert_eq!(bad_checksums, 0);
    eprintln!(
        "{n} x {len} B each way, 2% loss/dup/reorder: {sim:?} simulated, {:?} wall, \
         {} packets sent, {} lost, {} duplicated",
        wall.elapsed(),
        links.sent,
        links.lost,
        links.duplicated
    );
}

fn impaired_concurrent_transfers_complete_byte_exact(family: Family) {
    impaired_transfers(family, 2, 200, 1 << 20);
}

#[test]
fn ipv6_and_dual_stack_hosts() {
    use rvs_sim::app::{UdpClient, UdpClientConfig, UdpServer, UdpServerConfig};
    let mut net = Network::new(Router, NetworkConfig::seeded(5));
    let _pcap = net.pcap_on_failure("ipv6_and_dual_stack");
    let lossy = LinkConfig::lossy(0.01);
    let client = net.add_host("client", &[ip("10.0.0.1"), ip("fd00::1")], lossy);
    let server = net.add_host("server", &[ip("fd00:1::1"), ip("fd00:1::2"), ip("10.0.1.1")], lossy);
    let srv = net.add_app(server, TcpServer::new(TcpServerConfig::new(443)));
    net.add_app(server, UdpServer::new(UdpServerConfig::new(53)));
    let v6 = net.add_app(
        client,
        TcpClient::new(TcpClientConfig::new(Endpoint::new(ip("fd00:1::2"), 443), 5, 50_000, 50_000)),
    );
    let mut v4cfg = TcpClientConfig::new(Endpoint::new(ip("10.0.1.1"), 443), 5, 50_000, 50_000);
    v4cfg.first_id = 100;
    let v4 = net.add_app(client, TcpClient::new(v4cfg));
    let mut ucfg = UdpClientConfig::new(Endpoint::new(ip("fd00:1::1"), 53), 20);
    ucfg.response_len = 1400;
    let udp = net.add_app(client, UdpClient::new(ucfg));
    assert!(net.run_until(Instant::from_secs(60), |n| {
        n.app(&v6).finished() && n.app(&v4).finished() && n.app(&udp).finished()
    }));
    assert_eq!(net.app(&v6).ok_count(), 5);
    assert_eq!(net.app(&v4).ok_count(), 5);
    assert_eq!(net.app(&udp).ok_count(), 20);
    assert!(net.app(&v6).conns().iter().all(|c| c.local.unwrap().addr == ip("fd00::1")));
    assert!(net.app(&v4).conns().iter().all(|c| c.local.unwrap().addr == ip("10.0.0.1")));
    net.advance(Duration::from_secs(1));
    let peers: Vec<_> = net.app(&srv).stats().peers.keys().copied().collect();
    assert_eq!(peers, vec![ip("10.0.0.1"), ip("fd00::1")]);
    assert!(net.hosts().all(|h| net.host_stats(h).bad_checksum == 0));
}

/// Connects twice in a row from the same port, the way a NAT reuses a
/// source port: the second SYN meets the server's TIME-WAIT socket.
struct SamePortTwice {
    family: Family,
    handle: Option<SocketHandle>,
    phase: u8,
    round: u64,
    received: usize,
    finished: Vec<Instant>,
}

impl rvs_sim::App for SamePortTwice {
    fn poll(&mut self, stack: &mut rvs_sim::Stack<'_>) {
        use rvs_sim::app::Header;
        let h = *self.handle.get_or_insert_with(|| stack.add_tcp(4096, 4096));
        loop {
            let s = stack.tcp(h);
            match self.phase {
                0 if self.round < 2 => {
                    let remote = Endpoint::new(self.family.backend("10.0.1.1"), 80);
                    let local = Endpoint::new(self.family.client("10.0.0.1"), 40000);
                    stack.connect(h, remote, local).unwrap();
                    self.phase = 1;
                }
                1 if s.can_send() => {
                    let header = Header { id: self.round, a: 0, response_len: 100 }.encode();
                    assert_eq!(s.send_slice(&header), Ok(16));
                    self.phase = 2;
                }
                2 if s.can_recv() => self.received += s.recv(|b| (b.len(), b.len())).unwrap(),
                2 if !s.may_recv() && s.state() != TcpState::SynSent => {
                    s.close();
                    self.phase = 3;
                }
                3 if s.state() == TcpState::Closed => {
                    self.finished.push(stack.now());
                    self.round += 1;
                    self.phase = 0;
                }
                _ => return,
            }
        }
    }
}

fn syn_for_a_tuple_in_time_wait_starts_a_new_connection(family: Family) {
    let mut net = Network::new(Router, NetworkConfig::seeded(6));
    let _pcap = net.pcap_on_failure(&format!("syn_in_time_wait_{family}"));
    let client = net.add_host("client", &[family.client("10.0.0.1")], LinkConfig::default());
    let server = net.add_host("server", &[family.backend("10.0.1.1")], LinkConfig::default());
    let srv = net.add_app(server, TcpServer::new(TcpServerConfig::new(80)));
    let app = SamePortTwice { family, handle: None, phase: 0, round: 0, received: 0, finished: Vec::new() };
    let cli = net.add_app(client, app);
    assert!(net.run_until(Instant::from_secs(5), |n| n.app(&cli).finished.len() == 2));
    let c = net.app(&cli);
    assert_eq!(c.received, 200);
    // No waiting out smoltcp's 10 s TIME-WAIT.
    assert!(c.finished[1] - c.finished[0] < Duration::from_millis(50), "{:?}", c.finished);
    net.advance(Duration::from_secs(1));
    let s = net.app(&srv);
    assert_eq!((s.stats().accepted, s.stats().completed), (2, 2));
    let remotes: BTreeSet<_> = s.conns().iter().map(|c| c.remote).collect();
    assert_eq!(remotes.len(), 1);
}

fn duplicated_syns_do_not_open_second_connections(family: Family) {
    let mut net = Network::new(Router, NetworkConfig::seeded(7));
    let _pcap = net.pcap_on_failure(&format!("duplicated_syns_{family}"));
    // Every packet arrives twice, the copies up to 2 ms apart.
    let dup = LinkConfig { duplicate: 1.0, reorder: 0.5, ..LinkConfig::default() };
    let server_addr = family.backend("10.0.1.1");
    let client = net.add_host("client", &[family.client("10.0.0.1")], dup);
    let server = net.add_host("server", &[server_addr], dup);
    // The server ends in CLOSED, not TIME-WAIT, so its sockets listen again
    // at once and sit before newer connections in smoltcp's socket order.
    let mut scfg = TcpServerConfig::new(80);
    scfg.closer = Closer::Client;
    let srv = net.add_app(server, TcpServer::new(scfg));
    let mut cfg = TcpClientConfig::new(Endpoint::new(server_addr, 80), 30, 100, 100);
    cfg.closer = Closer::Client;
    cfg.interval = Duration::from_millis(1);
    let cli = net.add_app(client, TcpClient::new(cfg));
    assert!(net.run_until(Instant::from_secs(30), |n| n.app(&cli).finished()));
    assert_eq!(net.app(&cli).ok_count(), 30, "{:#?}", net.app(&cli).failures().collect::<Vec<_>>());
    net.advance(Duration::from_secs(1));
    let s = net.app(&srv).stats();
    assert_eq!((s.accepted, s.completed, s.failed), (30, 30, 0));
}
