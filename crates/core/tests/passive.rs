//! Scripted passive health checking: what the engine counts of each real's
//! answers, and the two things health checking asks of it beyond weights
//! (an RTT seed, the reset of a real's connections).

mod util;

use std::time::Duration;

use rvs_core::{ConfigError, Engine, Instant, PassiveCounters, Proto, Side, Verdict};
use rvs_wire::tcp::Flags;
use util::*;

family_tests!(
    an_unanswered_syn_counts_within_the_rto_once_and_the_connection_keeps_its_timeout,
    a_syn_ack_counts_answered_and_measures_the_rtt_that_sets_the_next_check,
    an_rst_to_the_syn_counts_refused,
    udp_flows_count_a_reply_once_or_its_absence_on_expiry,
    an_rtt_seed_sets_the_rto_of_a_real_with_no_sample,
    resetting_a_real_resets_both_sides_of_its_connections_and_removes_them,
);

const REAL: &str = "10.2.0.1:8080";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn passive(lb: &Engine, proto: Proto) -> PassiveCounters {
    let vip = if proto == Proto::Udp { ep("10.0.0.1:53") } else { ep(VIP) };
    lb.service(proto, vip).unwrap().reals[0].passive
}

fn srtt(lb: &Engine) -> Option<Duration> {
    lb.service(Proto::Tcp, ep(VIP)).unwrap().reals[0].handshake.srtt
}

/// A client SYN from `client`, forwarded; what the real sees of it.
fn syn(lb: &mut Engine, t: Instant, client: &str) -> Seen {
    let mut syn = tcp(client, VIP, 1000, None, Flags::SYN, &[]);
    assert_eq!(lb.handle(t, &mut syn), Verdict::Forward { to: Side::Real });
    parse(&syn)
}

/// The real's answer with `flags` to the SYN it saw as `s`.
fn answer(lb: &mut Engine, t: Instant, s: &Seen, flags: Flags) {
    let mut a = tcp_raw(s.dst, s.src, 5000, Some(s.seq.wrapping_add(1)), flags, &[]);
    assert_eq!(lb.handle(t, &mut a), Verdict::Forward { to: Side::Client });
}

fn drain(lb: &mut Engine) -> Vec<(Vec<u8>, Side)> {
    let mut buf = [0u8; 2048];
    let mut out = Vec::new();
    while let Some((len, side)) = lb.poll_transmit(&mut buf) {
        out.push((buf[..len].to_vec(), side));
    }
    out
}

fn an_unanswered_syn_counts_within_the_rto_once_and_the_connection_keeps_its_timeout() {
    let mut lb = lb(&[REAL]);
    let t0 = Instant::from_secs(10);
    syn(&mut lb, t0, CLIENT);
    assert!(lb.poll_timeout().is_some_and(|t| t <= t0 + ms(300)), "checked at the RTO");
    lb.handle_timeout(t0 + ms(199));
    assert_eq!(passive(&lb, Proto::Tcp).syn_unanswered, 0, "not before the 200 ms initial RTO");
    lb.handle_timeout(t0 + ms(300));
    assert_eq!(passive(&lb, Proto::Tcp).syn_unanswered, 1, "within the RTO and one wheel tick");
    assert_eq!(lb.conn_count(), 1, "the connection itself waits out SYN_RECV");
    // The client's own retransmission is not counted again.
    syn(&mut lb, t0 + ms(1000), CLIENT);
    lb.handle_timeout(t0 + ms(5000));
    assert_eq!(passive(&lb, Proto::Tcp).syn_unanswered, 1);
    lb.handle_timeout(t0 + ms(30_900));
    assert_eq!(lb.conn_count(), 1, "30 s from the last SYN");
    lb.handle_timeout(t0 + ms(31_100));
    assert_eq!(lb.conn_count(), 0);
    assert_eq!(passive(&lb, Proto::Tcp), PassiveCounters { syn_unanswered: 1, ..Default::default() });
    assert_eq!(srtt(&lb), None, "nothing measured");
}

fn a_syn_ack_counts_answered_and_measures_the_rtt_that_sets_the_next_check() {
    let mut lb = lb(&[REAL]);
    let t0 = Instant::from_secs(10);
    let s = syn(&mut lb, t0, CLIENT);
    answer(&mut lb, t0 + ms(2), &s, Flags::SYN | Flags::ACK);
    assert_eq!(srtt(&lb), Some(ms(2)));
    assert_eq!(passive(&lb, Proto::Tcp), PassiveCounters { syn_answered: 1, ..Default::default() });
    // The real's RTO is now 2 + 4 × 1 ms, raised to the 10 ms floor: the
    // next unanswered SYN is counted at the first wheel tick after it.
    syn(&mut lb, t0 + ms(50), "192.0.2.1:40001");
    lb.handle_timeout(t0 + ms(100));
    assert_eq!(passive(&lb, Proto::Tcp).syn_unanswered, 1);
    // A SYN the client had to resend gives no sample (Karn).
    let s = syn(&mut lb, t0 + ms(200), "192.0.2.1:40002");
    syn(&mut lb, t0 + ms(1200), "192.0.2.1:40002");
    answer(&mut lb, t0 + ms(1201), &s, Flags::SYN | Flags::ACK);
    assert_eq!(srtt(&lb), Some(ms(2)));
    assert_eq!(passive(&lb, Proto::Tcp).syn_answered, 2);
}

fn an_rst_to_the_syn_counts_refused() {
    let mut lb = lb(&[REAL]);
    let t0 = Instant::from_secs(10);
    let s = syn(&mut lb, t0, CLIENT);
    answer(&mut lb, t0 + ms(1), &s, Flags::RST | Flags::ACK);
    lb.handle_timeout(t0 + ms(1000));
    assert_eq!(passive(&lb, Proto::Tcp), PassiveCounters { syn_refused: 1, ..Default::default() });
    lb.zero_counters();
    assert_eq!(passive(&lb, Proto::Tcp), PassiveCounters::default());
}

fn udp_flows_count_a_reply_once_or_its_absence_on_expiry() {
    let mut lb = lb_proto(Proto::Udp, &["10.2.0.1:53"]);
    let t0 = Instant::from_secs(1);
    let mut q = udp(CLIENT, "10.0.0.1:53", b"query", true);
    assert_eq!(lb.handle(t0, &mut q), Verdict::Forward { to: Side::Real });
    let seen = parse(&q);
    for _ in 0..2 {
        let mut r = udp(&seen.dst.to_string(), &seen.src.to_string(), b"answer", true);
        assert_eq!(lb.handle(t0, &mut r), Verdict::Forward { to: Side::Client });
    }
    for _ in 0..3 {
        let mut q = udp("192.0.2.1:40001", "10.0.0.1:53", b"query", true);
        assert_eq!(lb.handle(t0, &mut q), Verdict::Forward { to: Side::Real });
    }
    lb.handle_timeout(t0 + Duration::from_secs(299));
    assert_eq!(passive(&lb, Proto::Udp), PassiveCounters { udp_answered: 1, ..Default::default() });
    lb.handle_timeout(t0 + Duration::from_secs(301));
    assert_eq!(lb.conn_count(), 0);
    assert_eq!(
        passive(&lb, Proto::Udp),
        PassiveCounters { udp_answered: 1, udp_unanswered: 1, ..Default::default() }
    );
}

fn an_rtt_seed_sets_the_rto_of_a_real_with_no_sample() {
    let mut lb = lb(&[REAL]);
    lb.seed_rtt(ep(REAL), ms(4));
    assert_eq!(srtt(&lb), Some(ms(4)));
    lb.seed_rtt(ep(REAL), ms(40));
    assert_eq!(srtt(&lb), Some(ms(4)), "a real with a sample keeps it");
    lb.seed_rtt(ep("10.2.0.9:8080"), ms(40));
    // RTO 4 + 4 × 2 = 12 ms, not the 200 ms initial one.
    let t0 = Instant::from_secs(10);
    syn(&mut lb, t0, CLIENT);
    lb.handle_timeout(t0 + ms(100));
    assert_eq!(passive(&lb, Proto::Tcp).syn_unanswered, 1);
}

fn resetting_a_real_resets_both_sides_of_its_connections_and_removes_them() {
    let mut lb = lb(&[REAL, "10.2.0.2:8080"]);
    let t0 = Instant::from_secs(10);
    let mut to_first = 0;
    for port in 1..=4 {
        let client = format!("192.0.2.1:{port}");
        let s = syn(&mut lb, t0, &client);
        answer(&mut lb, t0, &s, Flags::SYN | Flags::ACK);
        let mut ack = tcp(&client, VIP, 1001, Some(5001), Flags::ACK, &[]);
        assert_eq!(lb.handle(t0, &mut ack), Verdict::Forward { to: Side::Real });
        to_first += usize::from(s.dst.to_string() == REAL);
    }
    assert_eq!(to_first, 2, "round robin");
    assert_eq!(lb.reset_real(Proto::Tcp, ep(VIP), ep(REAL)), Ok(2));
    assert_eq!(lb.conn_count(), 2);
    assert!(lb.conns().all(|c| c.real != ep(REAL)));
    let out = drain(&mut lb);
    assert_eq!(out.len(), 4, "an RST to each side of each connection");
    let to_real: Vec<_> = out.iter().filter(|(_, side)| *side == Side::Real).map(|(p, _)| parse(p)).collect();
    assert_eq!(to_real.len(), 2);
    assert!(to_real.iter().all(|p| p.flags.rst() && p.dst.to_string() == REAL));
    assert_eq!(lb.stats().conns_reset, 2);
    assert_eq!(lb.reset_real(Proto::Tcp, ep(VIP), ep(REAL)), Ok(0));
    assert_eq!(
        lb.reset_real(Proto::Tcp, ep(VIP), ep("10.2.0.9:8080")),
        Err(ConfigError::NoSuchReal(ep("10.2.0.9:8080")))
    );
    assert!(matches!(lb.reset_real(Proto::Udp, ep(VIP), ep(REAL)), Err(ConfigError::NoSuchService(..))));
}
