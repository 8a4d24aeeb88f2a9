//! A connection moving from the engine to the fast path never stalls:
//! byte-exact 1 MiB transfers each way under 2 % loss (with duplication
//! and reordering), SACK and timestamps on, the flow installed in the
//! device mid-transfer, through plain FullNAT and SYNProxy. The fast path
//! rewrites exactly as the engine does and adds no delay, so the run is
//! the same run as without it, packet for packet: the same capture, the
//! same completion times, the same counters.
//!
//! smoltcp lays its options out as SACK, timestamps, end of list, where
//! Linux sends NOP NOP timestamps NOP NOP SACK; the fast path rewrites
//! Linux's layouts only. [`LinuxLayout`] puts the hosts' segments in
//! Linux's layout as they reach the balancer (in both runs alike), so the
//! segments are the ones kernel TCP sends; without it every segment goes
//! to the engine, which changes nothing either.

use std::time::Duration;

use rvs_core::{Endpoint, Engine, EngineConfig, Instant, Proto, RealConfig, SchedKind, ServiceConfig, Stats};
use rvs_sim::app::{
    TcpClient, TcpClientConfig, TcpServer, TcpServerConfig, UdpClient, UdpClientConfig, UdpServer,
    UdpServerConfig,
};
use rvs_sim::{Family, FastPathLb, LinkConfig, Middlebox, Network, NetworkConfig, Outbox, PacketInfo};

rvs_sim::family_tests! {
    moving_to_the_fast_path_mid_transfer_changes_nothing: [V4, V6],
    a_real_removed_and_flows_evicted_mid_transfer_change_nothing: [V4, V6],
    udp_flows_take_the_fast_path_and_idle_out: [V4, V6],
    translated_connections_stay_in_the_engine: [Nat64, Nat46],
}

const VIP: &str = "10.0.0.1";
const LIP: &str = "10.1.0.1";
const REALS: [&str; 2] = ["10.2.0.1", "10.2.0.2"];
const MIB: u32 = 1 << 20;
const CONNS: usize = 4;

fn engine(family: Family, synproxy: bool, fast_path_after: Option<u32>) -> Engine {
    let cfg = EngineConfig {
        fast_path: fast_path_after.is_some(),
        fast_path_after: fast_path_after.unwrap_or(0),
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(cfg, [5; 32], Instant::ZERO);
    let vip = Endpoint::new(family.client(VIP), 80);
    let mut svc = ServiceConfig::new(Proto::Tcp, vip);
    svc.sched = SchedKind::Rr;
    svc.laddrs = vec![family.backend(LIP)];
    svc.synproxy = synproxy;
    engine.add_service(svc).unwrap();
    for r in REALS {
        let endpoint = Endpoint::new(family.backend(r), 80);
        engine.add_real(Proto::Tcp, vip, RealConfig { endpoint, weight: 1 }).unwrap();
    }
    engine
}

/// A balancer whose arriving TCP segments (but SYNs) carry their
/// timestamps and SACK options in Linux's layout: NOP NOP timestamps, then
/// NOP NOP SACK.
struct LinuxLayout<M>(M);

impl<M: Middlebox> Middlebox for LinuxLayout<M> {
    fn handle(&mut self, now: Instant, packet: Vec<u8>, out: &mut Outbox) {
        self.0.handle(now, linux_layout(packet), out);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        self.0.handle_timeout(now, out);
    }
}

/// `p` with its TCP options in Linux's layout, if they are timestamps
/// and SACK blocks only (lengths and checksums made good).
fn linux_layout(p: Vec<u8>) -> Vec<u8> {
    let Some(info) = PacketInfo::parse(&p) else { return p };
    let l4 = if p[0] >> 4 == 4 { usize::from(p[0] & 15) * 4 } else { 40 };
    if info.proto != 6 || info.tcp_flags & 0x02 != 0 || p.len() < l4 + 20 {
        return p;
    }
    let hl = usize::from(p[l4 + 12] >> 4) * 4;
    let (mut ts, mut sack) = (None, None);
    let mut i = l4 + 20;
    while i < l4 + hl {
        match p[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(p[i + 1]);
                match kind {
                    8 => ts = Some(p[i..i + len].to_vec()),
                    5 => sack = Some(p[i..i + len].to_vec()),
                    _ => return p,
                }
                i += len.max(2);
            }
        }
    }
    let mut opts = Vec::new();
    for o in [ts, sack].into_iter().flatten() {
        opts.extend([1, 1]);
        opts.extend(o);
    }
    let mut out = p[..l4 + 20].to_vec();
    out.extend(&opts);
    out.extend(&p[l4 + hl..]);
    out[l4 + 12] = (((20 + opts.len()) / 4) << 4) as u8 | (out[l4 + 12] & 15);
    let len = out.len();
    if out[0] >> 4 == 4 {
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    } else {
        out[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    }
    assert!(rvs_sim::packet::fix_checksums(&mut out));
    out
}

/// What one run gave.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    /// When each connection finished.
    finished: Vec<Option<Instant>>,
    digest: u64,
    lost: u64,
}

/// `CONNS` clients' 1 MiB up and 1 MiB down through `lb`, every link losing,
/// duplicating and reordering 2 %; `engine` reads the balancer's engine.
fn run<M: Middlebox>(family: Family, lb: M, name: &str, engine: impl Fn(&M) -> &Engine) -> (Run, Stats) {
    run_with(family, lb, name, engine, |_| {})
}

/// [`run`], with `change` made to the balancer a second in (mid-transfer).
fn run_with<M: Middlebox>(
    family: Family,
    lb: M,
    name: &str,
    engine: impl Fn(&M) -> &Engine,
    change: impl FnOnce(&mut M),
) -> (Run, Stats) {
    let mut net = Network::new(lb, NetworkConfig::seeded(16));
    let link = LinkConfig::lossy(0.02);
    let client = net.add_host("client", &[family.client("192.0.2.1")], link);
    let reals: Vec<_> = REALS
        .iter()
        .enumerate()
        .map(|(i, r)| net.add_host(&format!("real{i}"), &[family.backend(r)], link))
        .collect();
    let _pcap = net.pcap_on_failure(name);
    let srv: Vec<_> = reals
        .iter()
        .map(|&h| {
            net.add_app(h, TcpServer::new(TcpServerConfig { timestamps: true, ..TcpServerConfig::new(80) }))
        })
        .collect();
    let mut cfg = TcpClientConfig::new(Endpoint::new(family.client(VIP), 80), CONNS, MIB, MIB);
    cfg.concurrency = CONNS;
    cfg.timestamps = true;
    cfg.timeout = Duration::from_secs(300);
    let cli = net.add_app(client, TcpClient::new(cfg));
    net.advance(Duration::from_secs(1));
    change(net.middlebox_mut());
    let done = net.run_for(Duration::from_secs(600), |n| n.app(&cli).finished());
    assert!(done, "{name}: transfers did not finish");
    let app = net.app(&cli);
    assert_eq!(app.ok_count(), CONNS, "{name}: failure {:?}", app.failures().next());
    for conn in app.conns() {
        assert_eq!((conn.sent, conn.received), (u64::from(MIB), u64::from(MIB)), "{name}: not byte-exact");
    }
    let verified: u64 = srv.iter().map(|s| net.app(s).stats().bytes_verified).sum();
    assert_eq!(verified, CONNS as u64 * u64::from(MIB), "{name}");
    let run = Run {
        finished: app.conns().iter().map(|c| c.finished).collect(),
        digest: net.capture_digest(),
        lost: net.total_link_stats().lost,
    };
    let stats = engine(net.middlebox()).stats().clone();
    (run, stats)
}

fn moving_to_the_fast_path_mid_transfer_changes_nothing(family: Family) {
    for synproxy in [false, true] {
        let base_name = format!("fast_path_{family}_synproxy_{synproxy}_off");
        let base_lb = LinuxLayout(engine(family, synproxy, None));
        let (base, base_stats) = run(family, base_lb, &base_name, |lb| &lb.0);
        assert!(base.lost > 100, "the links must really lose packets: {base:?}");
        // Installed while the client uploads, then while the real sends.
        for after in [1000, 3000] {
            let name = format!("fast_path_{family}_synproxy_{synproxy}_after_{after}");
            let lb = LinuxLayout(FastPathLb::new(engine(family, synproxy, Some(after))));
            let (on, stats) = run(family, lb, &name, |lb| lb.0.engine());
            let f = stats.fast_path;
            assert_eq!(f.installs, CONNS as u64, "{name}: every connection moves: {f:?}");
            assert!(f.forwarded > 1000, "{name}: packets must really take the fast path: {f:?}");
            assert_eq!(on, base, "{name}: the run differs from the one without the fast path");
            assert_eq!(
                stats.traffic, base_stats.traffic,
                "{name}: the fast path's packets count as the engine's"
            );
        }
        // smoltcp's own layout: installed, but every segment goes to the engine.
        let name = format!("fast_path_{family}_synproxy_{synproxy}_smoltcp_layout");
        let (base, _) = run(family, engine(family, synproxy, None), &name, |e| e);
        let lb = FastPathLb::new(engine(family, synproxy, Some(1000)));
        let (on, stats) = run(family, lb, &name, |lb| lb.engine());
        let f = stats.fast_path;
        assert_eq!((f.installs, f.forwarded), (CONNS as u64, 0), "{name}: {f:?}");
        assert!(f.to_engine > 1000, "{name}: {f:?}");
        assert_eq!(on, base, "{name}: the run differs from the one without the fast path");
    }
}

/// A real removed mid-transfer (its connections carry on through the
/// engine, their rules retired at once), and a flow table too small for
/// every connection (the device evicts; the engine carries on): the same
/// run as without the fast path.
fn a_real_removed_and_flows_evicted_mid_transfer_change_nothing(family: Family) {
    let vip = Endpoint::new(family.client(VIP), 80);
    let real = Endpoint::new(family.backend(REALS[1]), 80);
    let remove = |e: &mut Engine| e.remove_real(Proto::Tcp, vip, real).unwrap();
    let name = format!("fast_path_{family}_real_removed");
    let (base, base_stats) = run_with(
        family,
        LinuxLayout(engine(family, false, None)),
        &name,
        |lb| &lb.0,
        |lb| {
            remove(&mut lb.0);
        },
    );
    let lb = LinuxLayout(FastPathLb::new(engine(family, false, Some(0))));
    let (on, stats) = run_with(family, lb, &name, |lb| lb.0.engine(), |lb| remove(lb.0.engine_mut()));
    let f = stats.fast_path;
    assert_eq!(f.installs, CONNS as u64, "{name}: {f:?}");
    assert!(f.removals >= 2 && f.forwarded > 1000, "{name}: {f:?}");
    assert_eq!(on, base, "{name}: the run differs from the one without the fast path");
    assert_eq!(stats.traffic, base_stats.traffic, "{name}");

    let name = format!("fast_path_{family}_evictions");
    let (base, base_stats) = run(family, LinuxLayout(engine(family, false, None)), &name, |lb| &lb.0);
    let lb = LinuxLayout(FastPathLb::with_capacity(engine(family, false, Some(0)), 4));
    let (on, stats) = run(family, lb, &name, |lb| lb.0.engine());
    let f = stats.fast_path;
    assert!(f.evictions > 0 && f.forwarded > 1000, "{name}: {f:?}");
    assert_eq!(on, base, "{name}: the run differs from the one without the fast path");
    assert_eq!(stats.traffic, base_stats.traffic, "{name}");
}

/// Request-response UDP flows under loss: installed once the real answers,
/// the same run as without the fast path, and idle out after 300 s all the
/// same (the device's reports keep them while they are used).
fn udp_flows_take_the_fast_path_and_idle_out(family: Family) {
    fn udp_run<M: Middlebox>(family: Family, lb: M, engine: impl Fn(&M) -> &Engine) -> (u64, Stats, usize) {
        let mut net = Network::new(lb, NetworkConfig::seeded(17));
        let link = LinkConfig::lossy(0.02);
        let client = net.add_host("client", &[family.client("192.0.2.1")], link);
        for (i, r) in REALS.iter().enumerate() {
            let h = net.add_host(&format!("real{i}"), &[family.backend(r)], link);
            net.add_app(h, UdpServer::new(UdpServerConfig::new(53)));
        }
        let clis: Vec<_> = (0..6)
            .map(|k| {
                let mut cfg = UdpClientConfig::new(Endpoint::new(family.client(VIP), 53), 200);
                cfg.id = k;
                net.add_app(client, UdpClient::new(cfg))
            })
            .collect();
        assert!(net.run_for(Duration::from_secs(600), |n| clis.iter().all(|c| n.app(c).finished())));
        for c in &clis {
            assert_eq!(net.app(c).ok_count(), 200);
        }
        let live = engine(net.middlebox()).conn_count();
        net.advance(Duration::from_secs(301));
        assert_eq!(engine(net.middlebox()).conn_count(), 0, "idle flows expire");
        (net.capture_digest(), engine(net.middlebox()).stats().clone(), live)
    }
    let udp_engine = |fast_path| {
        let cfg = EngineConfig { fast_path, ..EngineConfig::default() };
        let mut engine = Engine::new(cfg, [5; 32], Instant::ZERO);
        let vip = Endpoint::new(family.client(VIP), 53);
        let mut svc = ServiceConfig::new(Proto::Udp, vip);
        svc.laddrs = vec![family.backend(LIP)];
        engine.add_service(svc).unwrap();
        for r in REALS {
            let endpoint = Endpoint::new(family.backend(r), 53);
            engine.add_real(Proto::Udp, vip, RealConfig { endpoint, weight: 1 }).unwrap();
        }
        engine
    };
    let (base, base_stats, base_live) = udp_run(family, udp_engine(false), |e| e);
    let (on, stats, live) = udp_run(family, FastPathLb::new(udp_engine(true)), |lb| lb.engine());
    let f = stats.fast_path;
    assert_eq!((base_live, live), (6, 6));
    assert_eq!((f.installs, f.removals, f.offloaded), (6, 6, 0), "{f:?}");
    assert!(f.forwarded > 1000, "{f:?}");
    assert_eq!(on, base, "the run differs from the one without the fast path");
    assert_eq!(stats.traffic, base_stats.traffic);
}

/// NAT64 and NAT46 connections change family: the fast path never takes them.
fn translated_connections_stay_in_the_engine(family: Family) {
    let name = format!("fast_path_{family}");
    let (base, _) = run(family, LinuxLayout(engine(family, true, None)), &name, |lb| &lb.0);
    let lb = LinuxLayout(FastPathLb::new(engine(family, true, Some(0))));
    let (on, stats) = run(family, lb, &name, |lb| lb.0.engine());
    assert_eq!(stats.fast_path, Default::default(), "{name}");
    assert_eq!(on, base, "{name}");
}
