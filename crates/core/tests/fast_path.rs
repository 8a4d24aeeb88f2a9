//! The fast path against the engine: a connection is offered once it is
//! eligible, and from then on `fast_path::apply` on a copy of any packet of
//! it gives the bytes `Engine::handle` gives (or leaves the packet to the
//! engine, untouched); the connection is taken back on every way it can
//! leave; what the device reports is counted as the engine's own.

mod util;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rvs_core::fast_path::{Applied, FastPathStats, FlowProgress, FlowReport, FlowRule, Offload, apply};
use rvs_core::{DropReason, Engine, Instant, Proto, ProxyProtocol, RealConfig, SchedKind, Side, Verdict};
use rvs_wire::tcp::Flags;
use util::{CLIENT, Family, VIP, ep, family, family_tests, parse};

family_tests!(
    installed_once_eligible_plain,
    installed_once_eligible_synproxy,
    installed_only_after_toa_and_proxy_delivery,
    apply_matches_the_engine_plain,
    apply_matches_the_engine_synproxy,
    apply_matches_the_engine_udp,
    apply_matches_the_engine_without_ttl_decrement,
    apply_matches_the_engine_after_client_address_delivery,
    refused_layouts_go_to_the_engine_untouched,
    fin_and_rst_take_the_connection_back,
    expiry_flush_and_removals_take_connections_back,
    reports_are_counted_and_keep_an_idle_connection,
    reported_progress_moves_the_resets_of_an_expired_connection,
    device_counters_show_with_the_engine_counters,
    translated_connections_are_never_installed,
);

const REAL: &str = "10.2.0.1:8080";
const T0: Instant = Instant::from_secs(1000);
const CISN: u32 = 1000;
const RISN: u32 = 50_000;

/// How the service opens its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Synproxy,
}

fn engine(mode: Mode, after: u32, edit: impl FnOnce(&mut rvs_core::ServiceConfig)) -> Engine {
    engine_with(mode, |c| c.fast_path_after = after, edit)
}

/// [`engine`] with its configuration changed by `cfg`.
fn engine_with(
    mode: Mode,
    cfg: impl FnOnce(&mut rvs_core::EngineConfig),
    edit: impl FnOnce(&mut rvs_core::ServiceConfig),
) -> Engine {
    let mut lb = util::lb_with(
        &[REAL],
        |c| {
            c.fast_path = true;
            cfg(c);
        },
        SchedKind::Rr,
    );
    let mut cfg = lb.service(Proto::Tcp, ep(VIP)).unwrap().config.clone();
    cfg.synproxy = mode == Mode::Synproxy;
    edit(&mut cfg);
    lb.edit_service(cfg).unwrap();
    lb
}

fn drain(lb: &mut Engine) -> Vec<(Vec<u8>, Side)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some((len, side)) = lb.poll_transmit(&mut buf) {
        out.push((buf[..len].to_vec(), side));
    }
    out
}

fn offloads(lb: &mut Engine) -> Vec<Offload> {
    std::iter::from_fn(|| lb.poll_offload()).collect()
}

fn ts(val: u32, ecr: u32) -> Vec<u8> {
    [vec![1, 1, 8, 10], val.to_be_bytes().to_vec(), ecr.to_be_bytes().to_vec()].concat()
}

fn sack(blocks: &[(u32, u32)]) -> Vec<u8> {
    let mut v = vec![1, 1, 5, 2 + 8 * blocks.len() as u8];
    for (l, r) in blocks {
        v.extend(l.to_be_bytes());
        v.extend(r.to_be_bytes());
    }
    v
}

/// MSS, SACK permitted, timestamps, window scale `ws`, as Linux sends them.
fn syn_opts(tsval: u32, tsecr: u32, ws: u8) -> Vec<u8> {
    [vec![2, 4, 5, 0xb4, 1, 1, 4, 2], ts(tsval, tsecr), vec![1, 3, 3, ws]].concat()
}

/// A TCP packet between plan endpoints, with raw options (NOP-padded).
#[allow(clippy::too_many_arguments)]
fn seg(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: Flags,
    win: u16,
    opts: &[u8],
    data: &[u8],
) -> Vec<u8> {
    let (s, d) = (util::sa(&src.to_string()), util::sa(&dst.to_string()));
    raw_seg(s, d, seq, ack, flags, win, opts, data)
}

/// [`seg`] between wire endpoints (any family).
#[allow(clippy::too_many_arguments)]
fn raw_seg(
    s: SocketAddr,
    d: SocketAddr,
    seq: u32,
    ack: u32,
    flags: Flags,
    win: u16,
    opts: &[u8],
    data: &[u8],
) -> Vec<u8> {
    let mut b = util::ip_builder(s.ip(), d.ip()).tcp(s.port(), d.port(), seq, win);
    if flags.syn() {
        b = b.syn();
    }
    if flags.fin() {
        b = b.fin();
    }
    if flags.rst() {
        b = b.rst();
    }
    if flags.psh() {
        b = b.psh();
    }
    if flags.ack() {
        b = b.ack(ack);
    }
    let mut o = opts.to_vec();
    while !o.len().is_multiple_of(4) {
        o.push(1);
    }
    let mut out = Vec::new();
    b.options_raw(&o).unwrap().write(&mut out, data).unwrap();
    out
}

/// An established connection: where its packets come from and go, and the rules it was installed with.
struct Opened {
    client: SocketAddr,
    vip: SocketAddr,
    real: SocketAddr,
    lip: SocketAddr,
    rules: [FlowRule; 2],
}

impl Opened {
    /// A packet from `side` with these numbers and options.
    fn from(&self, side: Side, seq: u32, ack: u32, flags: Flags, opts: &[u8], data: &[u8]) -> Vec<u8> {
        self.with_window(side, seq, ack, flags, if side == Side::Client { 502 } else { 1000 }, opts, data)
    }

    /// [`Self::from`] with this window.
    #[allow(clippy::too_many_arguments)]
    fn with_window(
        &self,
        side: Side,
        seq: u32,
        ack: u32,
        flags: Flags,
        win: u16,
        opts: &[u8],
        data: &[u8],
    ) -> Vec<u8> {
        match side {
            Side::Client => seg(self.client, self.vip, seq, ack, flags, win, opts, data),
            Side::Real => seg(self.real, self.lip, seq, ack, flags, win, opts, data),
        }
    }

    fn rule(&self, side: Side) -> &FlowRule {
        &self.rules[usize::from(side == Side::Real)]
    }
}

/// The one install among `changes`, if any.
fn install(changes: &[Offload]) -> Option<[FlowRule; 2]> {
    assert!(changes.len() <= 1, "{changes:?}");
    changes.iter().find_map(|c| match c {
        Offload::Install { rules, .. } => Some(*rules),
        _ => None,
    })
}

/// Open a connection from `client` (real window scale `real_ws`), and run
/// it until the engine offers it; nothing is offered before the handshake
/// is over. Returns the connection and how many packets that took after it.
fn establish(lb: &mut Engine, mode: Mode, client: &str, real_ws: u8) -> (Opened, usize) {
    let (client, vip, real): (SocketAddr, SocketAddr, SocketAddr) =
        (client.parse().unwrap(), VIP.parse().unwrap(), REAL.parse().unwrap());
    let mut syn = seg(client, vip, CISN, 0, Flags::SYN, 64240, &syn_opts(100, 0, 7), &[]);
    let (our_syn, cookie) = match (mode, lb.handle(T0, &mut syn)) {
        (Mode::Plain, Verdict::Forward { to: Side::Real }) => (syn, RISN),
        (Mode::Synproxy, Verdict::Absorbed) => {
            let synack = drain(lb).pop().unwrap().0;
            let cookie = parse(&synack).seq;
            let ack = CISN + 1;
            let mut ack = seg(client, vip, ack, cookie + 1, Flags::ACK, 502, &ts(101, 0), &[]);
            assert_eq!(lb.handle(T0, &mut ack), Verdict::Absorbed);
            (drain(lb).pop().unwrap().0, cookie)
        }
        (_, v) => panic!("{mode:?}: SYN {v:?}"),
    };
    assert!(offloads(lb).is_empty(), "offered before the handshake");
    let s = parse(&our_syn);
    let lip = s.src;
    let mut synack =
        seg(real, lip, RISN, s.seq + 1, Flags::SYN | Flags::ACK, 65160, &syn_opts(9000, 100, real_ws), &[]);
    let _ = lb.handle(T0, &mut synack);
    let _ = drain(lb);
    let real_ack = if mode == Mode::Plain { RISN } else { cookie };
    for n in 0..6 {
        let mut p = if n % 2 == 0 {
            seg(client, vip, CISN + 1 + n as u32, real_ack + 1, Flags::ACK, 502, &ts(102, 9001), b"x")
        } else {
            // Far enough to cover a PROXY header and the client's bytes.
            seg(real, lip, RISN + 1, s.seq + 1000, Flags::ACK, 1000, &ts(9002, 103), &[])
        };
        let _ = lb.handle(T0, &mut p);
        let _ = drain(lb);
        if let Some(rules) = install(&offloads(lb)) {
            return (Opened { client, vip, real, lip, rules }, n + 1);
        }
    }
    panic!("{mode:?}: never offered");
}

fn installed_once_eligible_plain() {
    let mut lb = engine(Mode::Plain, 0, |_| {});
    let (o, after) = establish(&mut lb, Mode::Plain, CLIENT, 7);
    assert_eq!(after, 1, "offered with the client's first packet once established");
    let [c, r] = o.rules;
    assert_eq!((c.to, r.to), (Side::Real, Side::Client));
    assert_eq!(util::plan(c.dst), o.real);
    assert_eq!(util::plan(r.dst), o.client);
    assert!(c.real_gen != 0 && c.real_gen == r.real_gen);
    assert_eq!(lb.stats().fast_path.offloaded, 1);
    // Offered once: more packets through the engine offer nothing.
    let mut p = o.from(Side::Client, CISN + 9, RISN + 1, Flags::ACK, &[], b"more");
    assert_eq!(lb.handle(T0, &mut p), Verdict::Forward { to: Side::Real });
    assert!(offloads(&mut lb).is_empty());
    assert_eq!(lb.stats().fast_path.installs, 1);

    // With fast_path_after, later.
    let mut lb = engine(Mode::Plain, 4, |_| {});
    let (_, after) = establish(&mut lb, Mode::Plain, CLIENT, 7);
    assert_eq!(after, 3, "SYN, SYN-ACK and two more packets forwarded: the fifth is offered");
}

fn installed_once_eligible_synproxy() {
    let mut lb = engine(Mode::Synproxy, 0, |_| {});
    let (o, _) = establish(&mut lb, Mode::Synproxy, CLIENT, 9);
    let [c, r] = o.rules;
    assert_ne!(c.seq_add, 0, "the client's numbers move into the real's space");
    assert_eq!(r.rescale, Some((9, 7)), "the real's window is rescaled toward the client");
    assert_eq!(c.rescale, None);
    assert_eq!((c.seq_add, c.ack_sub), (r.ack_sub, r.seq_add));
}

fn installed_only_after_toa_and_proxy_delivery() {
    for (pp, toa) in [(ProxyProtocol::V1, false), (ProxyProtocol::Disabled, true)] {
        for mode in [Mode::Plain, Mode::Synproxy] {
            let mut lb = engine(mode, 0, |c| {
                c.proxy_protocol = pp;
                c.toa = toa;
            });
            let (_, after) = establish(&mut lb, mode, CLIENT, 7);
            assert!(after >= 2, "{pp:?} toa {toa} {mode:?}: offered before the real acknowledged ({after})");
            assert_eq!(lb.open_deliveries(), 0, "{pp:?} toa {toa} {mode:?}");
        }
    }
}

/// A packet of `o` as proptest draws it.
#[derive(Debug, Clone)]
struct Drawn {
    side: Side,
    seq: u32,
    ack: u32,
    push: bool,
    layout: u8,
    tsval: u32,
    tsecr: u32,
    blocks: Vec<(u32, u32)>,
    len: usize,
    window: u16,
    ttl: u8,
}

fn drawn() -> impl Strategy<Value = Drawn> {
    (
        any::<bool>(),
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
        0u8..8,
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(any::<(u32, u32)>(), 1..=4),
        (0usize..1200, any::<u16>(), prop_oneof![Just(1u8), Just(2), Just(64), Just(255)]),
    )
        .prop_map(|(real, seq, ack, push, layout, tsval, tsecr, blocks, (len, window, ttl))| Drawn {
            side: if real { Side::Real } else { Side::Client },
            seq,
            ack,
            push,
            layout,
            tsval,
            tsecr,
            blocks,
            len,
            window,
            ttl,
        })
}

impl Drawn {
    /// The options: the four common layouts, then layouts the program refuses.
    fn options(&self) -> Vec<u8> {
        let t = ts(self.tsval, self.tsecr);
        let s = sack(&self.blocks);
        let s3 = sack(&self.blocks[..self.blocks.len().min(3)]);
        match self.layout {
            0 => vec![],
            1 => t,
            2 => s,
            3 => [t, s3].concat(),
            4 => [s3, t].concat(),
            5 => [vec![2, 4, 5, 0xb4], t].concat(),
            6 => [vec![8, 10], self.tsval.to_be_bytes().to_vec(), self.tsecr.to_be_bytes().to_vec()].concat(),
            _ => vec![254, 8, 0, 80, 10, 0, 0, 1],
        }
    }

    fn packet(&self, o: &Opened) -> Vec<u8> {
        let flags = if self.push { Flags::ACK | Flags::PSH } else { Flags::ACK };
        let data: Vec<u8> = (0..self.len).map(|i| i as u8).collect();
        let p = o.with_window(self.side, self.seq, self.ack, flags, self.window, &self.options(), &data);
        util::with_ttl(p, self.ttl)
    }
}

/// Every drawn packet: the engine's bytes and `apply`'s are the same, or
/// `apply` left the packet untouched for the engine (only for the layouts it refuses).
fn differential(lb: Engine, o: &Opened) {
    let lb = RefCell::new(lb);
    let forwarded = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config { cases: 400, failure_persistence: None, ..Config::default() });
    runner
        .run(&drawn(), |d| {
            let mut by_engine = d.packet(o);
            let before = by_engine.clone();
            let mut by_apply = by_engine.clone();
            let rule = o.rule(d.side);
            let applied = apply(rule, &mut by_apply);
            let verdict = lb.borrow_mut().handle(T0, &mut by_engine);
            let takes = d.layout <= 3 && !(rule.decrement_ttl && d.ttl <= 1);
            match applied {
                Applied::Forwarded => {
                    prop_assert!(takes, "layout {} TTL {} forwarded", d.layout, d.ttl);
                    prop_assert_eq!(verdict, Verdict::Forward { to: rule.to });
                    prop_assert_eq!(&by_apply, &by_engine);
                    forwarded.set(forwarded.get() + 1);
                }
                Applied::ToEngine => {
                    prop_assert!(!takes, "layout {} TTL {} refused", d.layout, d.ttl);
                    prop_assert_eq!(&by_apply, &before);
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(forwarded.get() >= 100, "only {} of 400 packets forwarded", forwarded.get());
    assert!(lb.borrow_mut().poll_offload().is_none(), "nothing changes for established segments");
}

fn apply_matches_the_engine_plain() {
    let mut lb = engine(Mode::Plain, 0, |_| {});
    let (o, _) = establish(&mut lb, Mode::Plain, CLIENT, 7);
    differential(lb, &o);
}

fn apply_matches_the_engine_synproxy() {
    for real_ws in [7, 9, 2] {
        let mut lb = engine(Mode::Synproxy, 0, |_| {});
        let (o, _) = establish(&mut lb, Mode::Synproxy, CLIENT, real_ws);
        differential(lb, &o);
    }
}

fn apply_matches_the_engine_after_client_address_delivery() {
    for (pp, toa) in [(ProxyProtocol::V1, false), (ProxyProtocol::V2, false), (ProxyProtocol::Disabled, true)]
    {
        for mode in [Mode::Plain, Mode::Synproxy] {
            let mut lb = engine(mode, 0, |c| {
                c.proxy_protocol = pp;
                c.toa = toa;
            });
            let (o, _) = establish(&mut lb, mode, CLIENT, 7);
            differential(lb, &o);
        }
    }
}

fn apply_matches_the_engine_without_ttl_decrement() {
    for mode in [Mode::Plain, Mode::Synproxy] {
        let mut lb = engine_with(mode, |c| c.decrement_ttl = false, |_| {});
        let (o, _) = establish(&mut lb, mode, CLIENT, 9);
        assert!(!o.rules[0].decrement_ttl && !o.rules[1].decrement_ttl);
        differential(lb, &o);
    }
}

fn apply_matches_the_engine_udp() {
    let lb = util::lb_proto(Proto::Udp, &[REAL]);
    let mut lb = {
        // The same engine with the fast path on.
        let mut cfg = lb.config().clone();
        cfg.fast_path = true;
        let mut e = Engine::new(cfg, [42; 32], Instant::ZERO);
        let svc = lb.service(Proto::Udp, ep("10.0.0.1:53")).unwrap();
        e.add_service(svc.config.clone()).unwrap();
        e.add_real(Proto::Udp, svc.config.vip, RealConfig { endpoint: ep(REAL), weight: 1 }).unwrap();
        e
    };
    for with_checksum in [true, false] {
        if !with_checksum && family() == Family::V6 {
            continue;
        }
        let client = if with_checksum { "192.0.2.1:5353" } else { "192.0.2.1:5354" };
        let mut q = util::udp(client, "10.0.0.1:53", b"query", with_checksum);
        assert_eq!(lb.handle(T0, &mut q), Verdict::Forward { to: Side::Real });
        assert!(offloads(&mut lb).is_empty(), "offered before the real answered");
        let out = parse(&q);
        let mut a = util::udp(&out.dst.to_string(), &out.src.to_string(), b"answer", with_checksum);
        assert_eq!(lb.handle(T0, &mut a), Verdict::Forward { to: Side::Client });
        let rules = install(&offloads(&mut lb)).expect("offered once the real answered");
        for n in 0..50usize {
            let payload: Vec<u8> = (0..n * 7).map(|i| i as u8).collect();
            let (side, mut p) = if n % 2 == 0 {
                (0, util::udp(client, "10.0.0.1:53", &payload, with_checksum))
            } else {
                (1, util::udp(&out.dst.to_string(), &out.src.to_string(), &payload, with_checksum))
            };
            let mut q = p.clone();
            assert_eq!(apply(&rules[side], &mut q), Applied::Forwarded);
            assert_eq!(lb.handle(T0, &mut p), Verdict::Forward { to: rules[side].to });
            assert_eq!(p, q, "datagram {n}");
        }
    }
}

/// `pkt` (IPv4) with a 4-byte IP option (NOPs), its lengths and checksum made good.
fn with_ip_options(pkt: &[u8]) -> Vec<u8> {
    let mut p = [&pkt[..20], &[1, 1, 1, 0], &pkt[20..]].concat();
    p[0] = 0x46;
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    let ttl = p[8];
    // Setting the TTL computes the header checksum again.
    util::with_ttl(p, ttl)
}

fn refused_layouts_go_to_the_engine_untouched() {
    let mut lb = engine(Mode::Plain, 0, |_| {});
    let (o, _) = establish(&mut lb, Mode::Plain, CLIENT, 7);
    let plain = |flags: Flags| o.from(Side::Client, CISN + 50, RISN + 1, flags, &ts(200, 9002), b"data");
    let other_port = seg("192.0.2.1:40001".parse().unwrap(), o.vip, CISN, RISN, Flags::ACK, 502, &[], &[]);
    let mut refused = vec![
        ("SYN", plain(Flags::SYN | Flags::ACK)),
        ("FIN", plain(Flags::FIN | Flags::ACK)),
        ("RST", plain(Flags::RST | Flags::ACK)),
        ("no ACK", plain(Flags::PSH)),
        ("TTL 1", util::with_ttl(plain(Flags::ACK), 1)),
        ("fragment", util::as_fragment(plain(Flags::ACK))),
        ("another flow", other_port),
        ("truncated", plain(Flags::ACK)[..30].to_vec()),
    ];
    match family() {
        Family::V4 => refused.push(("IP options", with_ip_options(&plain(Flags::ACK)))),
        Family::V6 => {
            refused.push(("extension header", util::with_ext_headers(&plain(Flags::ACK), &[(0, 0)])));
        }
    }
    for (what, p) in refused {
        let mut q = p.clone();
        assert_eq!(apply(o.rule(Side::Client), &mut q), Applied::ToEngine, "{what}");
        assert_eq!(q, p, "{what}: touched");
    }
    // A packet the fast path takes is the same with link padding behind it.
    let mut padded = plain(Flags::ACK);
    let mut by_engine = padded.clone();
    padded.extend([0xee; 6]);
    assert_eq!(apply(o.rule(Side::Client), &mut padded), Applied::Forwarded);
    assert_eq!(lb.handle(T0, &mut by_engine), Verdict::Forward { to: Side::Real });
    assert_eq!(&padded[..by_engine.len()], &by_engine[..]);
    assert_eq!(&padded[by_engine.len()..], &[0xee; 6]);
}

fn fin_and_rst_take_the_connection_back() {
    for (side, flags) in [(Side::Client, Flags::FIN | Flags::ACK), (Side::Real, Flags::RST | Flags::ACK)] {
        let mut lb = engine(Mode::Plain, 0, |_| {});
        let (o, _) = establish(&mut lb, Mode::Plain, CLIENT, 7);
        let mut p = o.from(side, if side == Side::Client { CISN + 9 } else { RISN + 1 }, 0, flags, &[], &[]);
        assert!(matches!(lb.handle(T0, &mut p), Verdict::Forward { .. }));
        let changes = offloads(&mut lb);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let Offload::Remove { keys, .. } = changes[0] else { panic!("{changes:?}") };
        assert_eq!(keys, [o.rules[0].key, o.rules[1].key]);
        assert_eq!(lb.stats().fast_path.offloaded, 0);
        // The close runs in the engine; nothing is offered again.
        let mut p = o.from(Side::Client, CISN + 9, RISN + 1, Flags::ACK, &[], &[]);
        let _ = lb.handle(T0, &mut p);
        assert!(offloads(&mut lb).is_empty());
    }
}

fn removed(changes: &[Offload]) -> usize {
    changes.iter().filter(|c| matches!(c, Offload::Remove { .. })).count()
}

fn expiry_flush_and_removals_take_connections_back() {
    // Expiry: the established timeout (900 s) with no report.
    let mut lb = engine(Mode::Plain, 0, |_| {});
    establish(&mut lb, Mode::Plain, CLIENT, 7);
    lb.handle_timeout(T0 + Duration::from_secs(901));
    assert_eq!(removed(&offloads(&mut lb)), 1);
    assert_eq!(lb.conn_count(), 0);

    // Flush.
    let mut lb = engine(Mode::Plain, 0, |_| {});
    establish(&mut lb, Mode::Plain, CLIENT, 7);
    establish(&mut lb, Mode::Plain, "192.0.2.1:40001", 7);
    lb.flush_conns(T0);
    assert_eq!(removed(&offloads(&mut lb)), 2);
    assert_eq!(lb.stats().fast_path.offloaded, 0);

    // A real removed: its generation retires; its connection carries on
    // through the engine and is not offered again.
    let mut lb = engine(Mode::Plain, 0, |_| {});
    let (o, _) = establish(&mut lb, Mode::Plain, CLIENT, 7);
    let gen_ = o.rules[0].real_gen;
    lb.remove_real(Proto::Tcp, ep(VIP), ep(REAL)).unwrap();
    assert_eq!(offloads(&mut lb), vec![Offload::RetireReal { real_gen: gen_ }]);
    assert_eq!(lb.stats().fast_path.offloaded, 0);
    let mut p = o.from(Side::Client, CISN + 9, RISN + 1, Flags::ACK, &[], b"on");
    assert_eq!(lb.handle(T0, &mut p), Verdict::Forward { to: Side::Real });
    assert!(offloads(&mut lb).is_empty());
    // Back in service, it has a new generation.
    lb.add_real(Proto::Tcp, ep(VIP), RealConfig { endpoint: ep(REAL), weight: 1 }).unwrap();
    let (o2, _) = establish(&mut lb, Mode::Plain, "192.0.2.1:40002", 7);
    assert!(o2.rules[0].real_gen != gen_ && o2.rules[0].real_gen != 0);

    // A service removed retires every real it served with.
    lb.remove_service(Proto::Tcp, ep(VIP)).unwrap();
    assert_eq!(offloads(&mut lb), vec![Offload::RetireReal { real_gen: o2.rules[0].real_gen }]);
    assert_eq!(lb.stats().fast_path.offloaded, 0);
}

fn reports_are_counted_and_keep_an_idle_connection() {
    let mut lb = engine(Mode::Plain, 0, |_| {});
    let flow = establish_with_id(&mut lb);
    let before = lb.service(Proto::Tcp, ep(VIP)).unwrap().stats;
    let engine_before = lb.stats().traffic;
    let at = T0 + Duration::from_secs(800);
    let report = FlowReport {
        flow,
        packets: [3, 5],
        bytes: [300, 5000],
        last_seen: Some(at),
        progress: [None; 2],
        evicted: false,
    };
    lb.fold_flow_report(at, &report);
    let svc = lb.service(Proto::Tcp, ep(VIP)).unwrap();
    assert_eq!(svc.stats.pkts_in - before.pkts_in, 3);
    assert_eq!(svc.stats.pkts_out - before.pkts_out, 5);
    assert_eq!(svc.stats.bytes_in - before.bytes_in, 300);
    assert_eq!(svc.stats.bytes_out - before.bytes_out, 5000);
    assert_eq!(svc.reals[0].stats.bytes_out, svc.stats.bytes_out);
    assert_eq!(lb.stats().traffic.pkts_out - engine_before.pkts_out, 5);
    // Idle in the engine for 900 s, but the device saw it at 800 s.
    lb.handle_timeout(T0 + Duration::from_secs(1000));
    assert_eq!(lb.conn_count(), 1, "a connection the device still forwards stays");
    assert!(offloads(&mut lb).is_empty());
    lb.handle_timeout(T0 + Duration::from_secs(1701));
    assert_eq!(lb.conn_count(), 0);
    assert_eq!(removed(&offloads(&mut lb)), 1);

    // An eviction: counted, and the connection carries on in the engine.
    let mut lb = engine(Mode::Plain, 0, |_| {});
    let flow = establish_with_id(&mut lb);
    lb.fold_flow_report(
        T0,
        &FlowReport {
            flow,
            packets: [0; 2],
            bytes: [0; 2],
            last_seen: None,
            progress: [None; 2],
            evicted: true,
        },
    );
    let f = lb.stats().fast_path;
    assert_eq!((f.evictions, f.offloaded), (1, 0));
    lb.flush_conns(T0);
    assert_eq!(removed(&offloads(&mut lb)), 0, "an evicted connection is not the device's any more");
}

/// The RSTs an engine sends as its one connection expires at `at`:
/// `(sequence number, side)`.
fn resets_on_expiry(lb: &mut Engine, at: Instant) -> Vec<(u32, Side)> {
    let _ = drain(lb);
    lb.handle_timeout(at);
    assert_eq!(lb.conn_count(), 0);
    let mut rsts: Vec<(u32, Side)> = drain(lb)
        .iter()
        .map(|(p, side)| (parse(p), *side))
        .filter(|(s, _)| s.flags.rst())
        .map(|(s, side)| (s.seq, side))
        .collect();
    rsts.sort_by_key(|&(_, side)| side == Side::Real);
    rsts
}

fn reported_progress_moves_the_resets_of_an_expired_connection() {
    // Without a report, the RSTs carry where the engine last saw each side.
    let mut lb = engine(Mode::Plain, 0, |_| {});
    let (_, rules) = establish_with_rules(&mut lb);
    let stale = resets_on_expiry(&mut lb, T0 + Duration::from_secs(901));
    let (to_client, to_real) =
        ((RISN + 1).wrapping_add(rules[1].seq_add), (CISN + 1).wrapping_add(rules[0].seq_add));
    assert_eq!(stale, vec![(to_client, Side::Client), (to_real, Side::Real)]);

    // The device forwarded 5000 bytes from the client and 7000 from the
    // real since: the RSTs are in the windows the two sides have now, as
    // if the engine had forwarded those segments itself.
    let mut lb = engine(Mode::Plain, 0, |_| {});
    let (flow, rules) = establish_with_rules(&mut lb);
    let at = T0 + Duration::from_secs(10);
    let progress = [
        Some(FlowProgress { seq_end: CISN + 1 + 5000, ack: Some(RISN + 1 + 7000), tsval: Some(777) }),
        Some(FlowProgress { seq_end: RISN + 1 + 7000, ack: Some(CISN + 1 + 5000), tsval: None }),
    ];
    let report = FlowReport {
        flow,
        packets: [5, 7],
        bytes: [5400, 7400],
        last_seen: Some(at),
        progress,
        evicted: false,
    };
    lb.fold_flow_report(at, &report);
    let c = lb.conns().next().unwrap();
    assert_eq!(c.progress.tsval_to_real().map(|t| t.0), Some(777), "the TSval toward the real, for PAWS");
    let fresh = resets_on_expiry(&mut lb, at + Duration::from_secs(901));
    let (to_client, to_real) =
        ((RISN + 7001).wrapping_add(rules[1].seq_add), (CISN + 5001).wrapping_add(rules[0].seq_add));
    assert_eq!(fresh, vec![(to_client, Side::Client), (to_real, Side::Real)]);
}

/// A plain connection without options, established; the flow id of its install.
fn establish_with_id(lb: &mut Engine) -> rvs_core::FlowId {
    establish_with_rules(lb).0
}

/// [`establish_with_id`], with the rules it was installed with.
fn establish_with_rules(lb: &mut Engine) -> (rvs_core::FlowId, [FlowRule; 2]) {
    let (client, vip, real): (SocketAddr, SocketAddr, SocketAddr) =
        (CLIENT.parse().unwrap(), VIP.parse().unwrap(), REAL.parse().unwrap());
    let mut syn = seg(client, vip, CISN, 0, Flags::SYN, 64240, &[], &[]);
    assert_eq!(lb.handle(T0, &mut syn), Verdict::Forward { to: Side::Real });
    let s = parse(&syn);
    let mut synack = seg(real, s.src, RISN, s.seq + 1, Flags::SYN | Flags::ACK, 65160, &[], &[]);
    assert_eq!(lb.handle(T0, &mut synack), Verdict::Forward { to: Side::Client });
    let mut ack = seg(client, vip, CISN + 1, RISN + 1, Flags::ACK, 502, &[], &[]);
    assert_eq!(lb.handle(T0, &mut ack), Verdict::Forward { to: Side::Real });
    match offloads(lb).as_slice() {
        [Offload::Install { flow, rules }] => (*flow, *rules),
        other => panic!("{other:?}"),
    }
}

fn device_counters_show_with_the_engine_counters() {
    let mut lb = engine(Mode::Synproxy, 0, |_| {});
    let mut drops = rvs_core::DropCounters::default();
    for _ in 0..7 {
        drops.add(DropReason::BadCookie);
    }
    let delta =
        FastPathStats { forwarded: 10, bytes: 1000, synacks: 4, acks_passed: 2, drops, ..Default::default() };
    lb.fold_fast_path_stats(&delta);
    lb.fold_fast_path_stats(&delta);
    assert_eq!(lb.stats().drops.get(DropReason::BadCookie), 14);
    assert_eq!(lb.synproxy_stats().syns_answered, 8);
    let f = lb.stats().fast_path;
    assert_eq!((f.forwarded, f.bytes, f.synacks, f.acks_passed), (20, 2000, 8, 4));
}

fn translated_connections_are_never_installed() {
    // Clients and VIP in the test's family, local address and real in the other.
    let cfg = rvs_core::EngineConfig { fast_path: true, ..Default::default() };
    let mut lb = Engine::new(cfg, [42; 32], Instant::ZERO);
    let (lip, real) = match family() {
        Family::V4 => ("[fd10:1::1]:0", "[fd10:2::1]:8080"),
        Family::V6 => ("10.1.0.1:0", "10.2.0.1:8080"),
    };
    let lip: SocketAddr = lip.parse().unwrap();
    let real: SocketAddr = real.parse().unwrap();
    let mut svc = rvs_core::ServiceConfig::new(Proto::Tcp, ep(VIP));
    svc.laddrs = vec![lip.ip()];
    lb.add_service(svc).unwrap();
    lb.add_real(Proto::Tcp, ep(VIP), RealConfig { endpoint: real.into(), weight: 1 }).unwrap();
    let (client, vip): (SocketAddr, SocketAddr) = (CLIENT.parse().unwrap(), VIP.parse().unwrap());
    let mut syn = seg(client, vip, CISN, 0, Flags::SYN, 64240, &[], &[]);
    let _ = lb.handle(T0, &mut syn);
    let built = drain(&mut lb).pop().expect("the SYN, translated").0;
    let ihl = util::ip_header_len(&built);
    let (src, _) = util::ip_addrs(&built);
    let lport = u16::from_be_bytes([built[ihl], built[ihl + 1]]);
    let s = u32::from_be_bytes(built[ihl + 4..ihl + 8].try_into().unwrap());
    let lip = SocketAddr::new(src, lport);
    let mut synack = raw_seg(real, lip, RISN, s + 1, Flags::SYN | Flags::ACK, 65160, &[], &[]);
    let _ = lb.handle(T0, &mut synack);
    for n in 0..4u32 {
        let mut p = seg(client, vip, CISN + 1 + n, RISN + 1, Flags::ACK, 502, &[], b"x");
        let _ = lb.handle(T0, &mut p);
        let mut p = raw_seg(real, lip, RISN + 1, s + 2 + n, Flags::ACK, 1000, &[], &[]);
        let _ = lb.handle(T0, &mut p);
        let _ = drain(&mut lb);
    }
    assert_eq!(lb.conns().next().map(|c| c.state), Some(rvs_core::TcpState::Established));
    assert!(offloads(&mut lb).is_empty(), "a translated connection stays in the engine");
}
