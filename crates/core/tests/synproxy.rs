//! Scripted SYNProxy tests: client and real packets in at explicit times,
//! built with etherparse; what the engine answers, builds and forwards is
//! read back with plain byte parsing.

mod util;

use std::time::Duration;

use rvs_core::{
    DropReason, Engine, EngineConfig, Instant, Proto, RetransmitMode, SchedKind, Side, TcpState, Verdict,
};
use rvs_wire::tcp::Flags;
use util::{CLIENT, LIP, VIP, ep, family_tests, link_mss, parse, plan, sums_ok};

family_tests!(
    syn_is_answered_with_a_cookie_and_only_our_options,
    valid_ack_sends_exactly_one_syn_toward_a_real,
    bad_cookie_gets_an_rst_or_silence_and_is_counted,
    data_on_the_third_ack_is_replayed_and_both_ways_are_translated,
    client_packets_are_kept_while_pending_up_to_the_bound,
    lost_syn_is_retransmitted_then_fails_over,
    an_rst_from_the_real_fails_over_at_once,
    when_every_real_is_dead_the_client_gets_an_rst,
    a_lost_synack_from_the_real_is_recovered_by_the_retransmitted_syn,
    a_lost_replay_is_sent_again_and_a_repeated_synack_triggers_it,
    a_fast_handshake_brings_the_next_rto_down_to_the_floor,
    a_cookie_made_just_before_the_key_change_validates_after_it,
    a_cookie_replayed_after_its_validity_fails,
    malformed_and_unknown_options_never_panic,
    the_real_window_is_rescaled_when_its_scale_differs,
    an_ack_storm_from_the_real_is_cut_and_counted,
    a_new_handshake_recycles_a_time_wait_entry,
    a_client_closing_before_the_real_answers_ends_in_time_wait,
    a_valid_cookie_ack_recycles_a_time_wait_entry_and_a_late_ack_does_not,
    a_reused_real_side_tuple_sees_a_larger_isn_and_tsval,
    classic_mode_retransmits_every_3s_three_times_and_never_fails_over,
    defer_rs_syn_opens_the_real_only_when_the_client_sends_data,
    an_expired_spliced_connection_is_reset_on_both_sides_exactly,
    a_proven_client_with_no_port_left_is_reset_at_once,
    a_syn_refused_by_the_reals_time_wait_resets_it_and_is_sent_again,
);

const REAL_A: &str = "10.2.0.1:8080";
const REAL_B: &str = "10.2.0.2:8080";
const T0: Instant = Instant::from_secs(1000);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An engine whose one service (VIP, rr) has SYNProxy on.
fn splb(reals: &[&str], f: impl FnOnce(&mut EngineConfig)) -> Engine {
    let mut lb = util::lb_with(reals, f, SchedKind::Rr);
    let mut cfg = lb.service(Proto::Tcp, ep(VIP)).unwrap().config.clone();
    cfg.synproxy = true;
    lb.edit_service(cfg).unwrap();
    lb
}

/// Everything the engine built, in order.
fn drain(lb: &mut Engine) -> Vec<(Vec<u8>, Side)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some((len, side)) = lb.poll_transmit(&mut buf) {
        out.push((buf[..len].to_vec(), side));
    }
    out
}

/// The only packet the engine built, which must go to `side`.
fn one(lb: &mut Engine, side: Side) -> Vec<u8> {
    let mut out = drain(lb);
    assert_eq!(out.len(), 1, "want exactly one built packet, got {}", out.len());
    let (p, s) = out.pop().unwrap();
    assert_eq!(s, side);
    assert!(parse(&p).checksums_ok, "built packet has a bad checksum");
    p
}

// ---- raw TCP options, written and read independently of the code under test

mod opt {
    #![allow(unreachable_pub)]

    pub fn mss(m: u16) -> Vec<u8> {
        vec![2, 4, (m >> 8) as u8, m as u8]
    }
    pub fn ws(s: u8) -> Vec<u8> {
        vec![1, 3, 3, s]
    }
    pub fn sack_perm() -> Vec<u8> {
        vec![1, 1, 4, 2]
    }
    pub fn ts(val: u32, ecr: u32) -> Vec<u8> {
        let mut v = vec![1, 1, 8, 10];
        v.extend_from_slice(&val.to_be_bytes());
        v.extend_from_slice(&ecr.to_be_bytes());
        v
    }
    pub fn sack(blocks: &[(u32, u32)]) -> Vec<u8> {
        let mut v = vec![1, 1, 5, 2 + 8 * blocks.len() as u8];
        for (l, r) in blocks {
            v.extend_from_slice(&l.to_be_bytes());
            v.extend_from_slice(&r.to_be_bytes());
        }
        v
    }
    /// Options a Linux client on a 1500-byte link sends, with our choice of TSval.
    pub fn linux(tsval: u32) -> Vec<u8> {
        [mss(super::link_mss(1460)), sack_perm(), ts(tsval, 0), ws(8)].concat()
    }
}

/// A TCP packet, in the test's family, with raw option bytes (padded with NOPs to 4 bytes).
#[allow(clippy::too_many_arguments)]
fn seg(
    src: &str,
    dst: &str,
    seq: u32,
    ack: Option<u32>,
    flags: Flags,
    window: u16,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let (s, d) = (util::sa(src), util::sa(dst));
    let mut b = util::ip_builder(s.ip(), d.ip()).tcp(s.port(), d.port(), seq, window);
    if flags.syn() {
        b = b.syn();
    }
    if flags.fin() {
        b = b.fin();
    }
    if flags.rst() {
        b = b.rst();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    let mut o = opts.to_vec();
    while !o.len().is_multiple_of(4) {
        o.push(1);
    }
    let mut out = Vec::new();
    b.options_raw(&o).unwrap().write(&mut out, payload).unwrap();
    out
}

/// TCP options of a packet, read by hand.
#[derive(Debug, Default, PartialEq, Eq)]
struct Opts {
    mss: Option<u16>,
    ws: Option<u8>,
    sack_perm: bool,
    ts: Option<(u32, u32)>,
    sack: Vec<(u32, u32)>,
    /// Kinds other than the five above (and NOP/EOL).
    others: Vec<u8>,
}

fn opts_of(p: &[u8]) -> Opts {
    let t = &p[util::ip_header_len(p)..];
    let hl = usize::from(t[12] >> 4) * 4;
    let w = |at: usize| u32::from_be_bytes([t[at], t[at + 1], t[at + 2], t[at + 3]]);
    let mut o = Opts::default();
    let mut i = 20;
    while i < hl {
        match t[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(t[i + 1]);
                match kind {
                    2 => o.mss = Some(u16::from_be_bytes([t[i + 2], t[i + 3]])),
                    3 => o.ws = Some(t[i + 2]),
                    4 => o.sack_perm = true,
                    5 => o.sack = (0..(len - 2) / 8).map(|k| (w(i + 2 + 8 * k), w(i + 6 + 8 * k))).collect(),
                    8 => o.ts = Some((w(i + 2), w(i + 6))),
                    k => o.others.push(k),
                }
                i += len.max(2);
            }
        }
    }
    o
}

fn window_of(p: &[u8]) -> u16 {
    let ihl = util::ip_header_len(p);
    u16::from_be_bytes([p[ihl + 14], p[ihl + 15]])
}

/// The client's SYN; returns the SYN-ACK.
fn syn(lb: &mut Engine, t: Instant, client: &str, isn: u32, opts: &[u8]) -> Vec<u8> {
    let mut p = seg(client, VIP, isn, None, Flags::SYN, 64240, opts, &[]);
    assert_eq!(lb.handle(t, &mut p), Verdict::Absorbed);
    one(lb, Side::Client)
}

/// Numbers of one SYNProxy handshake as the client saw them.
#[derive(Debug, Clone, Copy)]
struct Client {
    addr: &'static str,
    isn: u32,
    cookie: u32,
    /// Our SYN-ACK's TSval (what the client echoes).
    our_tsval: u32,
    /// The client's TSval on its ACK.
    tsval: u32,
}

impl Client {
    /// A client packet in its own sequence space, `sent` bytes after its ISN.
    fn pkt(&self, sent: u32, acked: u32, flags: Flags, extra: &[u8], payload: &[u8]) -> Vec<u8> {
        let opts = [opt::ts(self.tsval, self.our_tsval), extra.to_vec()].concat();
        seg(
            self.addr,
            VIP,
            self.isn.wrapping_add(1 + sent),
            Some(self.cookie.wrapping_add(1 + acked)),
            flags | Flags::ACK,
            502,
            &opts,
            payload,
        )
    }
}

/// SYN, SYN-ACK, then the cookie ACK (with `payload`); returns the client
/// and the SYN the engine sent toward a real.
fn open(lb: &mut Engine, t: Instant, addr: &'static str, isn: u32, payload: &[u8]) -> (Client, Vec<u8>) {
    let synack = syn(lb, t, addr, isn, &opt::linux(100));
    let s = parse(&synack);
    let (our_tsval, _) = opts_of(&synack).ts.unwrap();
    let c = Client { addr, isn, cookie: s.seq, our_tsval, tsval: 101 };
    let mut ack = c.pkt(0, 0, Flags::ACK, &[], payload);
    assert_eq!(lb.handle(t, &mut ack), Verdict::Absorbed);
    (c, one(lb, Side::Real))
}

/// The real's SYN-ACK to our SYN `to`.
fn real_synack(to: &[u8], isn: u32, opts: &[u8]) -> Vec<u8> {
    let s = parse(to);
    seg(
        &s.dst.to_string(),
        &s.src.to_string(),
        isn,
        Some(s.seq.wrapping_add(1)),
        Flags::SYN | Flags::ACK,
        65160,
        opts,
        &[],
    )
}

/// `open`, and the real answers at once with ISN 50000, TSval 9000 and
/// window scale `real_ws`; returns the client, our SYN and what was replayed.
fn spliced(lb: &mut Engine, t: Instant, payload: &[u8], real_ws: u8) -> (Client, Vec<u8>, Vec<u8>) {
    let (c, rsyn) = open(lb, t, CLIENT, 1000, payload);
    let our_ts = opts_of(&rsyn).ts.unwrap().0;
    let opts = [opt::mss(1400), opt::sack_perm(), opt::ts(9000, our_ts), opt::ws(real_ws)].concat();
    let mut sa = real_synack(&rsyn, 50000, &opts);
    assert_eq!(lb.handle(t, &mut sa), Verdict::Absorbed);
    let replayed = one(lb, Side::Real);
    (c, rsyn, replayed)
}

/// The driver is woken no later than `deadline` (the connection table's
/// wheel may wake it earlier).
fn wakes_by(lb: &Engine, deadline: Instant) {
    let at = lb.poll_timeout().expect("a timer is armed");
    assert!(at <= deadline, "wakes at {at:?}, after {deadline:?}");
}

fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

fn syn_is_answered_with_a_cookie_and_only_our_options() {
    let mut lb = splb(&[REAL_A], |c| c.synproxy.mss_max = 1440);
    // MSS above mss_max, a TFO cookie request (34) and an unknown kind (99).
    let opts =
        [opt::mss(9000), opt::sack_perm(), opt::ts(7777, 0), opt::ws(8), vec![34, 2, 99, 4, 0xab, 0xcd]]
            .concat();
    let synack = syn(&mut lb, T0, CLIENT, 1000, &opts);
    let s = parse(&synack);
    assert_eq!((s.src.to_string(), s.dst.to_string()), (VIP.to_string(), CLIENT.to_string()));
    assert_eq!(s.flags.0 & 0x3f, (Flags::SYN | Flags::ACK).0);
    assert_eq!(s.ack, 1001);
    assert!(s.payload.is_empty());
    let o = opts_of(&synack);
    assert_eq!(o.mss, Some(link_mss(1440)), "clamped to mss_max");
    assert_eq!(o.ws, Some(7), "our scale, not the client's");
    assert!(o.sack_perm);
    assert_eq!(o.ts.map(|t| t.1), Some(7777), "TSecr echoes the client");
    assert!(o.others.is_empty(), "unknown options reflected: {:?}", o.others);
    assert_eq!(lb.conn_count(), 0, "a SYN leaves no state");
    assert_eq!(lb.open_handshakes(), 0);
    assert_eq!(lb.synproxy_stats().syns_answered, 1);

    // Without timestamps: the other layout, no TS option.
    let synack =
        syn(&mut lb, T0, "192.0.2.1:40001", 2000, &[opt::mss(1460), opt::sack_perm(), opt::ws(8)].concat());
    let o = opts_of(&synack);
    assert_eq!((o.mss, o.ws, o.sack_perm, o.ts), (Some(link_mss(1440)), Some(7), true, None));
    // No options at all: no scale, no SACK, no timestamps.
    let synack = syn(&mut lb, T0, "192.0.2.1:40002", 3000, &[]);
    assert_eq!(opts_of(&synack), Opts { mss: Some(link_mss(1440)), ..Opts::default() });
    assert_eq!(lb.conn_count(), 0);
}

fn valid_ack_sends_exactly_one_syn_toward_a_real() {
    let mut lb = splb(&[REAL_A, REAL_B], |_| {});
    let (_, rsyn) = open(&mut lb, T0, CLIENT, 1000, &[]);
    let s = parse(&rsyn);
    assert_eq!(s.src.ip().to_string(), LIP);
    assert!([REAL_A, REAL_B].contains(&s.dst.to_string().as_str()));
    assert_eq!(s.flags.0 & 0x3f, Flags::SYN.0, "a plain SYN");
    let o = opts_of(&rsyn);
    assert_eq!((o.mss, o.ws, o.sack_perm), (Some(link_mss(1460)), Some(8), true), "the client's options");
    let (tsval, tsecr) = o.ts.unwrap();
    assert_eq!(tsecr, 0);
    assert_ne!(tsval, 101, "our TSval, not the client's");
    assert!(o.others.is_empty());
    assert_eq!(lb.conn_count(), 1);
    assert_eq!(lb.open_handshakes(), 1);
    assert_eq!(lb.conns().next().unwrap().state, TcpState::SynSent);
    assert_eq!(lb.synproxy_stats().cookies_accepted, 1);
}

fn bad_cookie_gets_an_rst_or_silence_and_is_counted() {
    let mut lb = splb(&[REAL_A], |_| {});
    let synack = syn(&mut lb, T0, CLIENT, 1000, &opt::linux(100));
    let cookie = parse(&synack).seq;
    let ts = opt::ts(101, opts_of(&synack).ts.unwrap().0);
    for (seq, ack) in [(1001, cookie.wrapping_add(2)), (1002, cookie.wrapping_add(1)), (5, 77)] {
        let mut p = seg(CLIENT, VIP, seq, Some(ack), Flags::ACK, 502, &ts, &[]);
        assert_eq!(lb.handle(T0, &mut p), Verdict::Drop(DropReason::BadCookie));
        let rst = parse(&one(&mut lb, Side::Client));
        assert_eq!(rst.flags.0 & 0x3f, Flags::RST.0);
        assert_eq!(rst.seq, ack, "RFC 9293: <SEQ=SEG.ACK><CTL=RST>");
        assert_eq!((rst.src.to_string(), rst.dst.to_string()), (VIP.to_string(), CLIENT.to_string()));
    }
    assert_eq!(lb.stats().drops.get(DropReason::BadCookie), 3);
    assert_eq!(lb.conn_count(), 0);

    let mut quiet = splb(&[REAL_A], |c| c.synproxy.rst_on_bad_cookie = false);
    let mut p = seg(CLIENT, VIP, 5, Some(77), Flags::ACK, 502, &[], &[]);
    assert_eq!(quiet.handle(T0, &mut p), Verdict::Drop(DropReason::BadCookie));
    assert!(drain(&mut quiet).is_empty());
    assert_eq!(quiet.stats().drops.get(DropReason::BadCookie), 1);
}

fn data_on_the_third_ack_is_replayed_and_both_ways_are_translated() {
    let mut lb = splb(&[REAL_A], |_| {});
    let (c, rsyn, replayed) = spliced(&mut lb, T0, b"GET /", 7);
    let real_isn = parse(&rsyn).seq;
    let real_tsval = opts_of(&rsyn).ts.unwrap().0;
    let r = parse(&replayed);
    assert_eq!(r.dst.to_string(), REAL_A);
    assert_eq!(r.payload, b"GET /");
    assert_eq!(r.seq, real_isn.wrapping_add(1));
    assert_eq!(r.ack, 50001, "acknowledges the real's SYN-ACK");
    assert_eq!(opts_of(&replayed).ts, Some((real_tsval, 9000)), "TSval ours, TSecr the real's");
    assert_eq!(lb.open_handshakes(), 1, "the replay is kept until the real shows it got it");
    assert_eq!(lb.conns().next().unwrap().state, TcpState::Established);
    assert_eq!(lb.synproxy_stats().spliced, 1);

    // Real → client: seq into the cookie's space, TSval into our SYN-ACK's
    // clock, the client's numbers for ACK, TSecr and SACK blocks.
    let rs = parse(&rsyn);
    let sack = [(real_isn.wrapping_add(1 + 10), real_isn.wrapping_add(1 + 20))];
    let opts = [opt::ts(9005, real_tsval.wrapping_add(3)), opt::sack(&sack)].concat();
    let mut p = seg(
        &rs.dst.to_string(),
        &rs.src.to_string(),
        50001,
        Some(real_isn.wrapping_add(6)),
        Flags::ACK,
        500,
        &opts,
        b"HTTP",
    );
    assert_eq!(lb.handle(T0, &mut p), Verdict::Forward { to: Side::Client });
    assert_eq!(lb.open_handshakes(), 0, "the real's first packet confirms the replay");
    let b = parse(&p);
    assert!(b.checksums_ok);
    assert_eq!((b.src.to_string(), b.dst.to_string()), (VIP.to_string(), CLIENT.to_string()));
    assert_eq!(b.seq, c.cookie.wrapping_add(1));
    assert_eq!(b.ack, c.isn.wrapping_add(6));
    let o = opts_of(&p);
    assert_eq!(o.ts, Some((c.our_tsval.wrapping_add(5), c.tsval.wrapping_add(3))));
    assert_eq!(o.sack, vec![(c.isn.wrapping_add(11), c.isn.wrapping_add(21))]);

    // Client → real: its SACK of the real's data and TSecr, into the real's space.
    let csack = [(c.cookie.wrapping_add(101), c.cookie.wrapping_add(201))];
    let mut p = seg(
        c.addr,
        VIP,
        c.isn.wrapping_add(6),
        Some(c.cookie.wrapping_add(5)),
        Flags::ACK,
        502,
        &[opt::ts(c.tsval + 7, c.our_tsval.wrapping_add(5)), opt::sack(&csack)].concat(),
        &[],
    );
    assert_eq!(lb.handle(T0, &mut p), Verdict::Forward { to: Side::Real });
    let f = parse(&p);
    assert!(f.checksums_ok);
    assert_eq!((f.seq, f.ack), (real_isn.wrapping_add(6), 50005));
    let o = opts_of(&p);
    assert_eq!(o.ts, Some((real_tsval.wrapping_add(7), 9005)));
    assert_eq!(o.sack, vec![(50101, 50201)]);
}

fn client_packets_are_kept_while_pending_up_to_the_bound() {
    let mut lb = splb(&[REAL_A], |_| {});
    let (c, rsyn) = open(&mut lb, T0, CLIENT, 1000, &[]);
    let t = T0 + ms(1);
    // The cookie ACK is kept (1); two data segments fill the bound of 3.
    for (sent, data) in [(0, &b"a"[..]), (1, b"b")] {
        let mut p = c.pkt(sent, 0, Flags::ACK, &[], data);
        assert_eq!(lb.handle(t, &mut p), Verdict::Absorbed);
    }
    let mut p = c.pkt(2, 0, Flags::ACK, &[], b"c");
    assert_eq!(lb.handle(t, &mut p), Verdict::Drop(DropReason::HandshakePending));
    // A bare ACK or a repeated SYN adds nothing.
    let mut p = c.pkt(0, 0, Flags::ACK, &[], &[]);
    assert_eq!(lb.handle(t, &mut p), Verdict::Drop(DropReason::HandshakePending));
    let mut p = seg(CLIENT, VIP, 1000, None, Flags::SYN, 64240, &opt::linux(100), &[]);
    assert_eq!(lb.handle(t, &mut p), Verdict::Drop(DropReason::HandshakePending));
    assert!(drain(&mut lb).is_empty());
    assert_eq!(lb.synproxy_stats().stored, 3);

    let mut sa = real_synack(&rsyn, 50000, &opt::ts(9000, opts_of(&rsyn).ts.unwrap().0));
    assert_eq!(lb.handle(t, &mut sa), Verdict::Absorbed);
    let out = drain(&mut lb);
    let real_isn = parse(&rsyn).seq;
    let got: Vec<(u32, Vec<u8>)> = out
        .iter()
        .map(|(p, side)| {
            assert_eq!(*side, Side::Real);
            let s = parse(p);
            assert!(s.checksums_ok);
            assert_eq!(s.ack, 50001);
            (s.seq.wrapping_sub(real_isn), s.payload)
        })
        .collect();
    assert_eq!(got, vec![(1, vec![]), (1, b"a".to_vec()), (2, b"b".to_vec())]);
}

fn lost_syn_is_retransmitted_then_fails_over() {
    let mut lb = splb(&[REAL_A, REAL_B], |_| {});
    let (c, first) = open(&mut lb, T0, CLIENT, 1000, b"x");
    wakes_by(&lb, T0 + ms(200));
    lb.handle_timeout(T0 + ms(199));
    assert!(drain(&mut lb).is_empty());
    lb.handle_timeout(T0 + ms(200));
    let again = one(&mut lb, Side::Real);
    assert_eq!(again, first, "the same SYN again");
    // The second try waits one RTO too (backoff starts with the third).
    wakes_by(&lb, T0 + ms(400));
    lb.handle_timeout(T0 + ms(399));
    assert!(drain(&mut lb).is_empty());
    lb.handle_timeout(T0 + ms(400));
    let out = drain(&mut lb);
    assert_eq!(out.len(), 2, "an RST to the old real, a SYN to the next");
    let (rst, moved) = (parse(&out[0].0), out[1].0.clone());
    let (f, m) = (parse(&first), parse(&moved));
    assert_eq!((out[0].1, out[1].1), (Side::Real, Side::Real));
    assert_eq!((rst.src, rst.dst, rst.seq), (f.src, f.dst, f.seq.wrapping_add(1)));
    assert_eq!(rst.flags.0 & 0x3f, Flags::RST.0, "the old real's half-open is reset");
    assert_ne!(m.dst, f.dst, "another real");
    assert_eq!(m.src.ip().to_string(), LIP);
    assert_eq!(m.flags.0 & 0x3f, Flags::SYN.0);
    let st = lb.synproxy_stats();
    assert_eq!((st.syn_retransmits, st.failovers), (1, 1));
    assert_eq!(lb.conn_count(), 1);
    assert_eq!(lb.conns().next().unwrap().real, ep(&m.dst.to_string()));
    wakes_by(&lb, T0 + ms(600));

    let t = T0 + ms(401);
    let mut sa = real_synack(&moved, 7000, &opt::ts(1, opts_of(&moved).ts.unwrap().0));
    assert_eq!(lb.handle(t, &mut sa), Verdict::Absorbed);
    let out = drain(&mut lb);
    assert_eq!(out.len(), 1, "the cookie ACK with its data, replayed");
    for (p, side) in &out {
        let s = parse(p);
        assert_eq!((*side, s.dst, s.src, s.ack), (Side::Real, m.dst, m.src, 7001));
        assert_eq!(s.seq.wrapping_sub(m.seq), 1);
    }
    assert_eq!(parse(&out[0].0).payload, b"x");
    assert_eq!(lb.open_handshakes(), 1, "the replay awaits the real's confirmation");
    assert_eq!(lb.conns().next().unwrap().state, TcpState::Established);
    let svc = lb.service(Proto::Tcp, ep(VIP)).unwrap();
    let a = svc.reals.iter().find(|r| plan(r.endpoint) == f.dst).unwrap();
    assert_eq!((a.handshake.failovers, a.handshake.syn_retransmits), (1, 1));
    // The old real-side tuple is gone, the client's flow goes on.
    let mut p = c.pkt(1, 0, Flags::ACK, &[], b"y");
    assert_eq!(lb.handle(t, &mut p), Verdict::Forward { to: Side::Real });
    assert_eq!(parse(&p).dst, m.dst);
}

fn an_rst_from_the_real_fails_over_at_once() {
    let mut lb = splb(&[REAL_A, REAL_B], |_| {});
    let (_, first) = open(&mut lb, T0, CLIENT, 1000, &[]);
    let f = parse(&first);
    let mut rst = seg(
        &f.dst.to_string(),
        &f.src.to_string(),
        0,
        Some(f.seq.wrapping_add(1)),
        Flags::RST | Flags::ACK,
        0,
        &[],
        &[],
    );
    assert_eq!(lb.handle(T0 + ms(1), &mut rst), Verdict::Absorbed);
    let m = parse(&one(&mut lb, Side::Real));
    assert_ne!(m.dst, f.dst);
    assert_eq!(lb.synproxy_stats().failovers, 1);
    assert_eq!(lb.synproxy_stats().syn_retransmits, 0);
    // An RST that does not acknowledge our SYN is ignored.
    let mut stray =
        seg(&m.dst.to_string(), &m.src.to_string(), 0, Some(m.seq), Flags::RST | Flags::ACK, 0, &[], &[]);
    assert_eq!(lb.handle(T0 + ms(2), &mut stray), Verdict::Drop(DropReason::HandshakePending));
    assert_eq!(lb.synproxy_stats().failovers, 1);
}

fn when_every_real_is_dead_the_client_gets_an_rst() {
    let mut lb = splb(&[REAL_A, REAL_B], |_| {});
    let (c, _) = open(&mut lb, T0, CLIENT, 1000, b"x");
    let mut t = T0;
    let mut to_reals = 1;
    let mut to_client = Vec::new();
    while let Some(next) = lb.poll_timeout() {
        assert!(next.saturating_since(T0) < Duration::from_secs(10), "stuck");
        t = next;
        lb.handle_timeout(t);
        for (p, side) in drain(&mut lb) {
            match side {
                Side::Real => to_reals += 1,
                Side::Client => to_client.push(p),
            }
        }
        if !to_client.is_empty() {
            break;
        }
    }
    // Eight real handshakes (the reals taken in turn), two 200 ms RTOs each,
    // each with two SYNs and an RST when abandoned.
    assert_eq!(t, T0 + ms(8 * 400));
    assert_eq!(to_reals, 24);
    assert_eq!(to_client.len(), 1);
    let rst = parse(&to_client[0]);
    assert_eq!(rst.flags.0 & 0x3f, (Flags::RST | Flags::ACK).0);
    assert_eq!((rst.seq, rst.ack), (c.cookie.wrapping_add(1), c.isn.wrapping_add(1)));
    assert_eq!((rst.src.to_string(), rst.dst.to_string()), (VIP.to_string(), CLIENT.to_string()));
    assert_eq!(lb.conn_count(), 0);
    assert_eq!(lb.open_handshakes(), 0);
    let st = lb.synproxy_stats();
    assert_eq!((st.gave_up, st.failovers, st.syn_retransmits), (1, 8, 8));
    let svc = lb.service(Proto::Tcp, ep(VIP)).unwrap();
    assert!(svc.reals.iter().all(|r| r.conns() == 0));
    lb.handle_timeout(t + Duration::from_secs(60));
    assert!(drain(&mut lb).is_empty());
}

fn a_lost_synack_from_the_real_is_recovered_by_the_retransmitted_syn() {
    let mut lb = splb(&[REAL_A], |_| {});
    let (_, rsyn) = open(&mut lb, T0, CLIENT, 1000, &[]);
    // The real's first SYN-ACK is lost on the way; our SYN goes again and
    // the real answers the duplicate with the same SYN-ACK.
    lb.handle_timeout(T0 + ms(200));
    assert_eq!(one(&mut lb, Side::Real), rsyn);
    let mut sa = real_synack(&rsyn, 50000, &opt::ts(9000, opts_of(&rsyn).ts.unwrap().0));
    assert_eq!(lb.handle(T0 + ms(201), &mut sa), Verdict::Absorbed);
    assert_eq!(parse(&one(&mut lb, Side::Real)).ack, 50001);
    assert_eq!(lb.conns().next().unwrap().state, TcpState::Established);
    // Karn: a retransmitted handshake gives no RTT sample.
    let svc = lb.service(Proto::Tcp, ep(VIP)).unwrap();
    assert_eq!(svc.reals[0].handshake.srtt, None);
    // While the real shows no sign of the replay, it goes again on the RTO
    // (three times at most), and then the engine leaves recovery to TCP.
    let mut resent = Vec::new();
    for k in 0..5 {
        lb.handle_timeout(T0 + Duration::from_secs(10 + k));
        resent.extend(drain(&mut lb));
    }
    assert_eq!(resent.len(), 2, "resent twice: three sends in all");
    assert!(resent.iter().all(|(p, side)| *side == Side::Real && parse(p).ack == 50001));
    assert_eq!(lb.open_handshakes(), 0);
    lb.handle_timeout(T0 + Duration::from_secs(20));
    assert!(drain(&mut lb).is_empty(), "no timer left for the spliced handshake");
    // A late copy of the SYN-ACK is acknowledged again, not forwarded.
    let mut dup = real_synack(&rsyn, 50000, &opt::ts(9000, opts_of(&rsyn).ts.unwrap().0));
    assert_eq!(lb.handle(T0 + Duration::from_secs(21), &mut dup), Verdict::Absorbed);
    assert_eq!(parse(&one(&mut lb, Side::Real)).ack, 50001);
}

fn a_lost_replay_is_sent_again_and_a_repeated_synack_triggers_it() {
    let mut lb = splb(&[REAL_A], |_| {});
    let (_, rsyn) = open(&mut lb, T0, CLIENT, 1000, b"GET /");
    let mut sa = real_synack(&rsyn, 50000, &opt::ts(9000, opts_of(&rsyn).ts.unwrap().0));
    assert_eq!(lb.handle(T0 + ms(1), &mut sa), Verdict::Absorbed);
    let first = drain(&mut lb);
    assert_eq!(first.len(), 1, "the cookie ACK, which carried the data");
    // The replay is lost; the real, still in SYN_RECV, sends its SYN-ACK again.
    let mut again = real_synack(&rsyn, 50000, &opt::ts(9001, opts_of(&rsyn).ts.unwrap().0));
    assert_eq!(lb.handle(T0 + ms(3), &mut again), Verdict::Absorbed);
    let second = drain(&mut lb);
    assert_eq!(second.iter().map(|(p, _)| parse(p).payload).collect::<Vec<_>>(), vec![b"GET /".to_vec()]);
    // Or nothing comes back at all: the RTO (10 ms floor after a 1 ms sample) resends it.
    lb.handle_timeout(T0 + ms(1) + ms(10));
    assert_eq!(drain(&mut lb).len(), 1);
    assert!(lb.synproxy_stats().replays_resent >= 2);
    // The real's first real packet ends it.
    let s = parse(&rsyn);
    let mut ack = seg(
        &s.dst.to_string(),
        &s.src.to_string(),
        50001,
        Some(s.seq.wrapping_add(6)),
        Flags::ACK,
        500,
        &[],
        &[],
    );
    assert_eq!(lb.handle(T0 + ms(20), &mut ack), Verdict::Forward { to: Side::Client });
    assert_eq!(lb.open_handshakes(), 0);
    lb.handle_timeout(T0 + Duration::from_secs(5));
    assert!(drain(&mut lb).is_empty());
}

fn a_fast_handshake_brings_the_next_rto_down_to_the_floor() {
    let mut lb = splb(&[REAL_A], |_| {});
    let (_, rsyn) = open(&mut lb, T0, CLIENT, 1000, &[]);
    let mut sa = real_synack(&rsyn, 50000, &opt::ts(9000, opts_of(&rsyn).ts.unwrap().0));
    assert_eq!(lb.handle(T0 + ms(1), &mut sa), Verdict::Absorbed);
    let _ = drain(&mut lb);
    let svc = lb.service(Proto::Tcp, ep(VIP)).unwrap();
    assert_eq!(svc.reals[0].handshake.srtt, Some(ms(1)));
    // Let the first connection's replay timers run out.
    for k in 1..=5 {
        lb.handle_timeout(T0 + ms(100 * k));
        let _ = drain(&mut lb);
    }

    let t = T0 + Duration::from_secs(1);
    let (_, second) = open(&mut lb, t, "192.0.2.1:40001", 5000, &[]);
    // srtt 1 ms + 4 × rttvar 0.5 ms = 3 ms, below the 10 ms floor.
    wakes_by(&lb, t + ms(10));
    lb.handle_timeout(t + ms(9));
    assert!(drain(&mut lb).is_empty());
    lb.handle_timeout(t + ms(10));
    assert_eq!(one(&mut lb, Side::Real), second);
    wakes_by(&lb, t + ms(20));
}

fn a_cookie_made_just_before_the_key_change_validates_after_it() {
    let mut lb = splb(&[REAL_A], |_| {});
    let before = Instant::from_secs(256 * 10 - 1);
    for (i, opts) in [opt::linux(100), [opt::mss(1460), opt::ws(8)].concat()].iter().enumerate() {
        let client: &'static str = ["192.0.2.1:40000", "192.0.2.1:40001"][i];
        let synack = syn(&mut lb, before, client, 1000, opts);
        let cookie = parse(&synack).seq;
        let ts = opts_of(&synack).ts.map(|(v, _)| opt::ts(101, v)).unwrap_or_default();
        let mut ack = seg(client, VIP, 1001, Some(cookie.wrapping_add(1)), Flags::ACK, 502, &ts, &[]);
        assert_eq!(lb.handle(before + Duration::from_secs(2), &mut ack), Verdict::Absorbed, "layout {i}");
        let o = opts_of(&one(&mut lb, Side::Real));
        assert_eq!(o.ws, Some(8), "the cookie still names the client's scale");
    }
    assert_eq!(lb.synproxy_stats().cookies_accepted, 2);
}

fn a_cookie_replayed_after_its_validity_fails() {
    // The cookie clock ticks every 32 s: a cookie is good for at least the
    // configured 120 s and never for 160 s or more.
    for offset in [0u64, 13, 31] {
        let made = Instant::from_secs(32 * 100 + offset);
        for (late, good) in
            [(0, true), (119, true), (160, false), (200, false), (256, false), (300, false), (512, false)]
        {
            let mut lb = splb(&[REAL_A], |_| {});
            let synack = syn(&mut lb, made, CLIENT, 1000, &opt::mss(1460));
            let cookie = parse(&synack).seq;
            let mut ack = seg(CLIENT, VIP, 1001, Some(cookie.wrapping_add(1)), Flags::ACK, 502, &[], &[]);
            let want = if good { Verdict::Absorbed } else { Verdict::Drop(DropReason::BadCookie) };
            assert_eq!(
                lb.handle(made + Duration::from_secs(late), &mut ack),
                want,
                "made at +{offset} s, replayed {late} s later"
            );
        }
    }
}

/// A small deterministic generator for option bytes.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u8 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 56) as u8
    }
}

fn malformed_and_unknown_options_never_panic() {
    let mut rng = Lcg(7);
    let mut lb = splb(&[REAL_A, REAL_B], |_| {});
    let handcrafted: Vec<Vec<u8>> = vec![
        vec![2, 4, 5],          // MSS cut short
        vec![2, 0, 1, 1],       // length 0
        vec![3, 1, 1, 1],       // length 1
        vec![8, 40, 0, 0],      // length past the header
        vec![8, 6, 1, 2, 3, 4], // timestamps too short
        vec![5, 3, 0, 0],       // SACK with no whole block
        vec![5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0],
        vec![3, 3, 200, 1], // window scale above 14
        vec![4, 2, 4, 2, 4, 2, 4, 2],
        vec![0, 2, 4, 2, 3, 3, 9, 1],
        vec![255, 2, 254, 3, 0, 0],
    ];
    let mut all = handcrafted;
    for _ in 0..3000 {
        let n = usize::from(rng.next() % 11) * 4;
        all.push((0..n).map(|_| if rng.next() < 64 { rng.next() % 9 } else { rng.next() }).collect());
    }
    let mut t = T0;
    for (i, opts) in all.iter().enumerate() {
        t += ms(1);
        let client = format!("192.0.2.{}:{}", 1 + i % 200, 1024 + i);
        let client: &'static str = Box::leak(client.into_boxed_str());
        let isn = (i as u32).wrapping_mul(2_654_435_761);
        let mut p = seg(client, VIP, isn, None, Flags::SYN, 1000, opts, &[]);
        let _ = lb.handle(t, &mut p);
        let out = drain(&mut lb);
        let Some((synack, _)) = out.first() else { continue };
        assert!(sums_ok(synack));
        let cookie = parse(synack).seq;
        // The ACK echoes our TSval where there was one, and carries junk too.
        let echo = opts_of(synack).ts.map(|(v, _)| opt::ts(5, v)).unwrap_or_default();
        let junk = &all[(i * 7 + 3) % all.len()];
        let ack_opts = if i % 2 == 0 { [echo, junk.clone()].concat() } else { junk.clone() };
        let ack_opts = &ack_opts[..ack_opts.len().min(40) / 4 * 4];
        let mut p = seg(
            client,
            VIP,
            isn.wrapping_add(1),
            Some(cookie.wrapping_add(1)),
            Flags::ACK,
            1000,
            ack_opts,
            b"q",
        );
        let _ = lb.handle(t, &mut p);
        for (pkt, side) in drain(&mut lb) {
            assert!(sums_ok(&pkt));
            if side == Side::Real && parse(&pkt).flags.syn() {
                // The real answers with junk options too.
                let mut sa = real_synack(&pkt, 1, &all[(i * 13 + 5) % all.len()]);
                let _ = lb.handle(t, &mut sa);
                let _ = drain(&mut lb);
                let s = parse(&pkt);
                let mut data = seg(
                    &s.dst.to_string(),
                    &s.src.to_string(),
                    2,
                    Some(s.seq.wrapping_add(2)),
                    Flags::ACK,
                    1,
                    opts,
                    b"r",
                );
                if let Verdict::Forward { .. } = lb.handle(t, &mut data) {
                    assert!(sums_ok(&data));
                }
            }
        }
    }
    lb.handle_timeout(t + Duration::from_secs(600));
    let _ = drain(&mut lb);
    assert_eq!(lb.open_handshakes(), 0);
}

fn the_real_window_is_rescaled_when_its_scale_differs() {
    // Same scale as announced (7): windows pass untouched.
    let mut lb = splb(&[REAL_A], |_| {});
    let (_, rsyn, _) = spliced(&mut lb, T0, &[], 7);
    let rs = parse(&rsyn);
    let from_real = |win: u16| {
        seg(
            &rs.dst.to_string(),
            &rs.src.to_string(),
            50001,
            Some(rs.seq.wrapping_add(1)),
            Flags::ACK,
            win,
            &[],
            &[],
        )
    };
    let mut p = from_real(1234);
    assert_eq!(lb.handle(T0, &mut p), Verdict::Forward { to: Side::Client });
    assert_eq!(window_of(&p), 1234);

    // The real picks 9 where the client was told 7: 4× the units.
    let mut lb = splb(&[REAL_A], |_| {});
    let (_, rsyn, _) = spliced(&mut lb, T0, &[], 9);
    let rs = parse(&rsyn);
    for (win, want) in [(100u16, 400u16), (1, 4), (20000, u16::MAX)] {
        let mut p = seg(
            &rs.dst.to_string(),
            &rs.src.to_string(),
            50001,
            Some(rs.seq.wrapping_add(1)),
            Flags::ACK,
            win,
            &[],
            &[],
        );
        assert_eq!(lb.handle(T0, &mut p), Verdict::Forward { to: Side::Client });
        assert_eq!(window_of(&p), want, "window {win}");
        assert!(parse(&p).checksums_ok);
    }
    // The service learned the real's scale: the next client is told 9.
    let synack = syn(&mut lb, T0, "192.0.2.1:40001", 1, &opt::linux(1));
    assert_eq!(opts_of(&synack).ws, Some(9));

    // A smaller scale: the window shrinks (rounded down).
    let mut lb = splb(&[REAL_A], |_| {});
    let (_, rsyn, _) = spliced(&mut lb, T0, &[], 2);
    let rs = parse(&rsyn);
    let mut p = seg(
        &rs.dst.to_string(),
        &rs.src.to_string(),
        50001,
        Some(rs.seq.wrapping_add(1)),
        Flags::ACK,
        1000,
        &[],
        &[],
    );
    let _ = lb.handle(T0, &mut p);
    assert_eq!(window_of(&p), 1000 * 4 / 128);
}

fn an_ack_storm_from_the_real_is_cut_and_counted() {
    let mut lb = splb(&[REAL_A], |_| {});
    let (_, rsyn, _) = spliced(&mut lb, T0, &[], 7);
    let rs = parse(&rsyn);
    let bare = |ack_off: u32, extra: &[u8]| {
        seg(
            &rs.dst.to_string(),
            &rs.src.to_string(),
            50001,
            Some(rs.seq.wrapping_add(ack_off)),
            Flags::ACK,
            500,
            extra,
            &[],
        )
    };
    let mut verdicts = Vec::new();
    for _ in 0..15 {
        verdicts.push(lb.handle(T0, &mut bare(1, &[])));
    }
    let fwd = verdicts.iter().filter(|v| matches!(v, Verdict::Forward { .. })).count();
    assert_eq!(fwd, 10, "up to the threshold of 10 identical segments pass: {verdicts:?}");
    assert!(verdicts[10..].iter().all(|v| *v == Verdict::Drop(DropReason::AckStorm)));
    assert_eq!(lb.stats().drops.get(DropReason::AckStorm), 5);
    // Another segment ends the storm; duplicates carrying SACK always pass.
    assert!(matches!(lb.handle(T0, &mut bare(2, &[])), Verdict::Forward { .. }));
    let sack = opt::sack(&[(rs.seq.wrapping_add(10), rs.seq.wrapping_add(20))]);
    for _ in 0..20 {
        assert!(matches!(lb.handle(T0, &mut bare(2, &sack)), Verdict::Forward { .. }));
    }
    // Data is never a storm.
    for _ in 0..20 {
        let mut p = seg(
            &rs.dst.to_string(),
            &rs.src.to_string(),
            50001,
            Some(rs.seq.wrapping_add(1)),
            Flags::ACK,
            500,
            &[],
            b"d",
        );
        assert!(matches!(lb.handle(T0, &mut p), Verdict::Forward { .. }));
    }
    assert_eq!(lb.stats().drops.get(DropReason::AckStorm), 5);
}

/// Splice a connection and close it both ways into TIME_WAIT.
fn to_time_wait(lb: &mut Engine, t: Instant, isn: u32) -> (Client, Vec<u8>) {
    let (c, rsyn) = open(lb, t, CLIENT, isn, &[]);
    let mut sa = real_synack(&rsyn, 50000, &opt::ts(9000, opts_of(&rsyn).ts.unwrap().0));
    let _ = lb.handle(t, &mut sa);
    let _ = drain(lb);
    let mut fin = c.pkt(0, 0, Flags::FIN, &[], &[]);
    assert_eq!(lb.handle(t, &mut fin), Verdict::Forward { to: Side::Real });
    real_closes_after_the_client(lb, t, &c, &rsyn);
    (c, rsyn)
}

/// The client's FIN has reached the real (ISN 50000) of our SYN `rsyn`:
/// the real's FIN-ACK and the client's last ACK end the entry in TIME_WAIT.
fn real_closes_after_the_client(lb: &mut Engine, t: Instant, c: &Client, rsyn: &[u8]) {
    let rs = parse(rsyn);
    let mut rfin = seg(
        &rs.dst.to_string(),
        &rs.src.to_string(),
        50001,
        Some(rs.seq.wrapping_add(2)),
        Flags::FIN | Flags::ACK,
        500,
        &opt::ts(9001, 1),
        &[],
    );
    assert_eq!(lb.handle(t, &mut rfin), Verdict::Forward { to: Side::Client });
    let mut last = c.pkt(1, 1, Flags::ACK, &[], &[]);
    assert_eq!(lb.handle(t, &mut last), Verdict::Forward { to: Side::Real });
    assert_eq!(lb.conns().next().unwrap().state, TcpState::TimeWait);
}

fn a_new_handshake_recycles_a_time_wait_entry() {
    let mut lb = splb(&[REAL_A], |_| {});
    let (_, old) = to_time_wait(&mut lb, T0, 1000);
    // The client reuses its port: new SYN, new cookie, new connection.
    let t = T0 + ms(500);
    let synack = syn(&mut lb, t, CLIENT, 900_000, &opt::linux(200));
    let cookie = parse(&synack).seq;
    assert_eq!(lb.conn_count(), 0, "the SYN recycled the TIME_WAIT entry");
    let c =
        Client { addr: CLIENT, isn: 900_000, cookie, our_tsval: opts_of(&synack).ts.unwrap().0, tsval: 201 };
    let mut ack = c.pkt(0, 0, Flags::ACK, &[], &[]);
    assert_eq!(lb.handle(t, &mut ack), Verdict::Absorbed);
    let new = parse(&one(&mut lb, Side::Real));
    assert_eq!(new.flags.0 & 0x3f, Flags::SYN.0);
    assert_ne!(new.src, parse(&old).src, "a fresh local port");
    assert_eq!(lb.conn_count(), 1);
}

/// A client that connects and closes at once (a port check, a client
/// giving up): its FIN waits with the handshake and is replayed to the
/// real. The replayed FIN counts as the client's, so the close completes
/// into TIME_WAIT and the client's port can come back with a new SYN; had
/// it not counted, the entry would wait in a closing state and take the
/// new SYN for its own, which then never gets a SYN-ACK.
fn a_client_closing_before_the_real_answers_ends_in_time_wait() {
    let mut lb = splb(&[REAL_A], |_| {});
    let (c, rsyn) = open(&mut lb, T0, CLIENT, 1000, &[]);
    let mut fin = c.pkt(0, 0, Flags::FIN, &[], &[]);
    assert_eq!(lb.handle(T0, &mut fin), Verdict::Absorbed, "kept until the real answers");
    let mut sa = real_synack(&rsyn, 50000, &opt::ts(9000, opts_of(&rsyn).ts.unwrap().0));
    assert_eq!(lb.handle(T0, &mut sa), Verdict::Absorbed);
    // The ACK of the real's SYN-ACK, then the FIN.
    let replayed = drain(&mut lb);
    assert!(replayed.iter().all(|(_, side)| *side == Side::Real));
    assert!(replayed.last().is_some_and(|(p, _)| parse(p).flags.fin()), "the FIN is replayed");
    real_closes_after_the_client(&mut lb, T0, &c, &rsyn);

    // The client's port comes back: the SYN is answered, the entry recycled.
    let t = T0 + ms(500);
    let synack = syn(&mut lb, t, CLIENT, 900_000, &opt::linux(200));
    assert_eq!(parse(&synack).flags.0 & 0x3f, (Flags::SYN | Flags::ACK).0);
    assert_eq!(lb.conn_count(), 0, "the SYN recycled the TIME_WAIT entry");
}

fn a_valid_cookie_ack_recycles_a_time_wait_entry_and_a_late_ack_does_not() {
    let mut lb = splb(&[REAL_A], |_| {});
    // A second SYN's cookie, taken before the first connection exists.
    let synack2 = syn(&mut lb, T0, CLIENT, 900_000, &opt::linux(200));
    let (c, rsyn) = to_time_wait(&mut lb, T0, 1000);
    let rs = parse(&rsyn);
    // The real's FIN is retransmitted (its ACK was lost); the client
    // acknowledges it again. That late ACK belongs to the old connection:
    // it must reach the real, not reset the client.
    let t = T0 + ms(300);
    // A delayed copy of the client's last ACK.
    let mut dup = c.pkt(1, 1, Flags::ACK, &[], &[]);
    assert_eq!(lb.handle(t, &mut dup), Verdict::Forward { to: Side::Real });
    assert!(drain(&mut lb).is_empty(), "no RST to the client");
    let mut rfin = seg(
        &rs.dst.to_string(),
        &rs.src.to_string(),
        50001,
        Some(rs.seq.wrapping_add(2)),
        Flags::FIN | Flags::ACK,
        500,
        &opt::ts(9002, 1),
        &[],
    );
    assert_eq!(lb.handle(t, &mut rfin), Verdict::Forward { to: Side::Client });
    let mut last = c.pkt(1, 1, Flags::ACK, &[], &[]);
    assert_eq!(lb.handle(t, &mut last), Verdict::Forward { to: Side::Real });
    assert!(drain(&mut lb).is_empty(), "no RST to the client");
    assert_eq!(lb.conn_count(), 1);
    assert_eq!(lb.stats().drops.get(DropReason::BadCookie), 0);

    // The cookie ACK of the new handshake recycles the entry.
    let c2 = Client {
        addr: CLIENT,
        isn: 900_000,
        cookie: parse(&synack2).seq,
        our_tsval: opts_of(&synack2).ts.unwrap().0,
        tsval: 201,
    };
    let mut ack = c2.pkt(0, 0, Flags::ACK, &[], &[]);
    assert_eq!(lb.handle(t, &mut ack), Verdict::Absorbed);
    let new = parse(&one(&mut lb, Side::Real));
    assert_eq!(new.flags.0 & 0x3f, Flags::SYN.0);
    assert_eq!(lb.conn_count(), 1);
    assert_eq!(lb.conns().next().unwrap().state, TcpState::SynSent);
    assert_eq!(lb.stats().conns_created, 2);
}

fn a_reused_real_side_tuple_sees_a_larger_isn_and_tsval() {
    let mut lb = splb(&[REAL_A], |c| {
        c.port_range = (5000, 5000);
        c.port_quarantine = Duration::ZERO;
    });
    let mut seen = Vec::new();
    let mut t = T0;
    for (i, client) in ["192.0.2.1:40000", "192.0.2.1:40001", "192.0.2.7:50000"].into_iter().enumerate() {
        let (c, rsyn) = open(&mut lb, t, client, 1000 + i as u32 * 77_777_777, &[]);
        let s = parse(&rsyn);
        seen.push((s.src, s.seq, opts_of(&rsyn).ts.unwrap().0));
        // The client gives up: the port goes back at once.
        let mut rst = c.pkt(0, 0, Flags::RST, &[], &[]);
        assert_eq!(lb.handle(t, &mut rst), Verdict::Absorbed);
        let _ = drain(&mut lb);
        assert_eq!(lb.conn_count(), 0);
        t += ms(10);
    }
    for w in seen.windows(2) {
        let ((src0, isn0, ts0), (src1, isn1, ts1)) = (w[0], w[1]);
        assert_eq!(src0, src1, "the same (LIP, lport) toward the same real");
        assert!(seq_after(isn1, isn0), "ISN {isn1} not after {isn0}");
        assert!(seq_after(ts1, ts0), "TSval {ts1} not after {ts0}");
    }
}

fn classic_mode_retransmits_every_3s_three_times_and_never_fails_over() {
    let mut lb = splb(&[REAL_A, REAL_B], |c| c.synproxy.retransmit_mode = RetransmitMode::Classic);
    let (_, first) = open(&mut lb, T0, CLIENT, 1000, b"x");
    let mut sends = vec![(T0, first.clone())];
    let mut t = T0;
    while let Some(next) = lb.poll_timeout().filter(|&n| n < T0 + Duration::from_secs(30)) {
        t = next;
        lb.handle_timeout(t);
        for (p, side) in drain(&mut lb) {
            assert_eq!(side, Side::Real, "classic mode sends the client nothing");
            sends.push((t, p));
        }
        if lb.conn_count() == 0 {
            break;
        }
    }
    let times: Vec<Duration> = sends.iter().map(|(at, _)| at.saturating_since(T0)).collect();
    assert_eq!(times, vec![Duration::ZERO, Duration::from_secs(3), Duration::from_secs(6)]);
    assert!(sends.iter().all(|(_, p)| *p == first), "same SYN to the same real each time");
    assert_eq!(t, T0 + Duration::from_secs(9), "given up after the third try");
    assert_eq!(lb.conn_count(), 0);
    let st = lb.synproxy_stats();
    assert_eq!((st.syn_retransmits, st.failovers, st.gave_up), (2, 0, 1));
}

fn defer_rs_syn_opens_the_real_only_when_the_client_sends_data() {
    let mut lb = splb(&[REAL_A], |c| c.synproxy.defer_rs_syn = true);
    let synack = syn(&mut lb, T0, CLIENT, 1000, &opt::linux(100));
    let s = parse(&synack);
    let (our_tsval, _) = opts_of(&synack).ts.unwrap();
    let c = Client { addr: CLIENT, isn: 1000, cookie: s.seq, our_tsval, tsval: 101 };
    // The cookie ACK alone opens the connection but no handshake with a real.
    let mut ack = c.pkt(0, 0, Flags::ACK, &[], &[]);
    assert_eq!(lb.handle(T0, &mut ack), Verdict::Absorbed);
    assert!(drain(&mut lb).is_empty(), "no SYN toward a real yet");
    assert_eq!(lb.conn_count(), 1);
    // No retransmit timer either: nothing goes out while the client is silent.
    lb.handle_timeout(T0 + ms(1000));
    assert!(drain(&mut lb).is_empty());
    // The first data opens it; both kept packets are replayed after the SYN-ACK.
    let t = T0 + ms(1005);
    let mut data = c.pkt(0, 0, Flags::ACK | Flags::PSH, &[], b"GET /");
    assert_eq!(lb.handle(t, &mut data), Verdict::Absorbed);
    let rsyn = one(&mut lb, Side::Real);
    assert_eq!(parse(&rsyn).flags.0 & 0x3f, Flags::SYN.0);
    let mut sa = real_synack(&rsyn, 50000, &opt::ts(9000, opts_of(&rsyn).ts.unwrap().0));
    assert_eq!(lb.handle(t + ms(1), &mut sa), Verdict::Absorbed);
    let replayed: Vec<Vec<u8>> = drain(&mut lb)
        .into_iter()
        .map(|(p, side)| {
            assert_eq!(side, Side::Real);
            parse(&p).payload
        })
        .collect();
    assert_eq!(replayed, vec![Vec::new(), b"GET /".to_vec()]);
    assert_eq!(lb.conns().next().unwrap().state, TcpState::Established);
}

fn an_expired_spliced_connection_is_reset_on_both_sides_exactly() {
    let mut lb = splb(&[REAL_A], |_| {});
    let (c, rsyn, replayed) = spliced(&mut lb, T0, b"GET / HTTP/1.1\r\n\r\n", 7);
    let our_isn = parse(&rsyn).seq;
    assert_eq!(parse(&replayed).payload.len(), 18);
    // The real answers 100 bytes; the client acknowledges them.
    let s = parse(&rsyn);
    let mut answer = seg(
        &s.dst.to_string(),
        &s.src.to_string(),
        50001,
        Some(our_isn.wrapping_add(19)),
        Flags::ACK,
        502,
        &opt::ts(9001, 0),
        &[b'y'; 100],
    );
    assert_eq!(lb.handle(T0, &mut answer), Verdict::Forward { to: Side::Client });
    let mut ack = c.pkt(18, 100, Flags::ACK, &[], &[]);
    assert_eq!(lb.handle(T0, &mut ack), Verdict::Forward { to: Side::Real });
    assert!(drain(&mut lb).is_empty());
    lb.handle_timeout(T0 + Duration::from_secs(901));
    assert_eq!(lb.conn_count(), 0);
    let out = drain(&mut lb);
    assert_eq!(out.len(), 2);
    let (to_real, to_client) = (parse(&out[0].0), parse(&out[1].0));
    assert_eq!((out[0].1, out[1].1), (Side::Real, Side::Client));
    // The real expects the byte after the request in its numbering; the
    // client the byte after the answer in the cookie's.
    assert_eq!((to_real.src, to_real.dst, to_real.seq), (s.src, s.dst, our_isn.wrapping_add(19)));
    assert_eq!(to_client.dst.to_string(), CLIENT);
    assert_eq!(to_client.seq, c.cookie.wrapping_add(101));
    assert!(to_real.flags.rst() && to_client.flags.rst());
    // The client's next request finds no connection: its ACK carries no
    // valid cookie, and is answered with an RST.
    let mut next = c.pkt(18, 100, Flags::ACK, &[], b"GET /2");
    assert_eq!(lb.handle(T0 + Duration::from_secs(902), &mut next), Verdict::Drop(DropReason::BadCookie));
    let rst = parse(&one(&mut lb, Side::Client));
    assert_eq!(rst.seq, c.cookie.wrapping_add(101));
}

fn a_proven_client_with_no_port_left_is_reset_at_once() {
    let mut lb = splb(&[REAL_A], |c| c.port_range = (5000, 5000));
    let _ = open(&mut lb, T0, CLIENT, 1000, &[]);
    let synack = syn(&mut lb, T0, "192.0.2.7:4000", 7, &opt::linux(100));
    let cookie = parse(&synack).seq;
    let ts = opt::ts(101, opts_of(&synack).ts.unwrap().0);
    let mut ack = seg("192.0.2.7:4000", VIP, 8, Some(cookie.wrapping_add(1)), Flags::ACK, 502, &ts, &[]);
    assert_eq!(lb.handle(T0, &mut ack), Verdict::Drop(DropReason::NoLocalPort));
    let rst = parse(&one(&mut lb, Side::Client));
    assert!(rst.flags.rst());
    assert_eq!((rst.dst.to_string(), rst.seq), ("192.0.2.7:4000".to_owned(), cookie.wrapping_add(1)));
    assert_eq!(lb.conn_count(), 1);
}

fn a_syn_refused_by_the_reals_time_wait_resets_it_and_is_sent_again() {
    let mut lb = splb(&[REAL_A, REAL_B], |_| {});
    let (_, rsyn) = open(&mut lb, T0, CLIENT, 1000, b"GET /");
    let s = parse(&rsyn);
    // The real still holds the tuple in TIME_WAIT and answers our SYN with an
    // ACK of the old connection.
    let old_ack = s.seq.wrapping_sub(5000);
    let refuse = |lb: &mut Engine, to: &[u8]| {
        let s = parse(to);
        let mut dup =
            seg(&s.dst.to_string(), &s.src.to_string(), 777, Some(old_ack), Flags::ACK, 502, &[], &[]);
        assert_eq!(lb.handle(T0 + ms(1), &mut dup), Verdict::Absorbed);
        drain(lb)
    };
    let out = refuse(&mut lb, &rsyn);
    assert_eq!(out.len(), 2, "an RST and the SYN again");
    let (rst, again) = (parse(&out[0].0), parse(&out[1].0));
    assert!(rst.flags.rst() && rst.seq == old_ack && rst.dst == s.dst && rst.src == s.src);
    assert!(again.flags.syn() && again.seq == s.seq && again.dst == s.dst);
    assert_eq!(lb.synproxy_stats().refused, 1);
    // Refused again: the tries are spent, the client moves to the other real.
    let out = refuse(&mut lb, &out[1].0);
    let moved = parse(&out.last().unwrap().0);
    assert!(moved.flags.syn() && moved.dst != s.dst, "{moved:?}");
    assert_eq!(lb.synproxy_stats().failovers, 1);
}
