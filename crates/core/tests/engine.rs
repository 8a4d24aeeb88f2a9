//! Scripted engine tests: packets in at explicit times, packets and
//! verdicts checked on the way out.

mod util;

use std::time::Duration;

use rvs_core::{DropReason, Instant, Proto, RealConfig, SchedKind, Side, TcpState, Verdict};
use rvs_wire::tcp::Flags;
use util::*;

family_tests!(
    tcp_handshake_data_and_close_both_ways,
    sack_blocks_and_mss_are_translated,
    reset_then_new_syn_reuses_cleanly,
    idle_connections_expire_per_state,
    drops_are_named,
    no_real_no_laddr_no_port_and_full_table,
    quiesced_and_removed_reals_keep_their_connections,
    udp_flows_keep_zero_checksum_and_expire_after_300s,
    control_plane_rejects_and_changes_nothing,
    an_unacknowledged_fin_keeps_the_entry_past_the_short_closing_timeouts,
    client_timestamps_run_on_the_balancer_clock_toward_the_real,
    closed_ports_are_reused_at_once_least_recently_used_first,
    ports_the_real_might_refuse_rest_for_the_quarantine,
    running_out_of_ports_is_told_once_per_interval_with_the_count,
    an_expired_open_connection_is_reset_on_both_sides_exactly,
    segments_of_unknown_connections_are_answered_within_the_rate,
    icmp_too_big_from_the_real_side_reaches_the_client,
    icmp_from_the_client_side_reaches_the_real,
);

fn tcp_handshake_data_and_close_both_ways() {
    let mut lb = lb(&["10.2.0.1:8080"]);
    let t0 = Instant::from_secs(1);
    let mut syn = tcp(CLIENT, VIP, 1000, None, Flags::SYN, &[]);
    assert_eq!(lb.handle(t0, &mut syn), Verdict::Forward { to: Side::Real });
    let seen = parse(&syn);
    assert_eq!(seen.src.ip().to_string(), LIP);
    assert_eq!(seen.dst.to_string(), "10.2.0.1:8080");
    assert!(seen.checksums_ok);
    assert_eq!(seen.ttl, 63);
    let real_isn_of_client = seen.seq;
    assert_ne!(real_isn_of_client, 1000, "the real-side ISN is the load balancer's");
    let laddr = seen.src;

    // The real answers; the client sees the VIP and its own numbers.
    let mut synack = tcp_raw(
        seen.dst,
        laddr,
        5000,
        Some(real_isn_of_client.wrapping_add(1)),
        Flags::SYN | Flags::ACK,
        &[],
    );
    assert_eq!(lb.handle(t0, &mut synack), Verdict::Forward { to: Side::Client });
    let back = parse(&synack);
    assert_eq!((back.src.to_string(), back.dst.to_string()), (VIP.to_string(), CLIENT.to_string()));
    assert_eq!(back.ack, 1001);
    assert_eq!(back.seq, 5000, "plain FullNAT leaves the real's numbers alone");
    assert!(back.checksums_ok);

    let mut ack = tcp(CLIENT, VIP, 1001, Some(5001), Flags::ACK, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(lb.handle(t0, &mut ack), Verdict::Forward { to: Side::Real });
    let fwd = parse(&ack);
    assert_eq!(fwd.seq, real_isn_of_client.wrapping_add(1));
    assert_eq!(fwd.ack, 5001);
    assert_eq!(fwd.payload, b"GET / HTTP/1.0\r\n\r\n");
    assert!(fwd.checksums_ok);
    assert_eq!(lb.conns().next().unwrap().state, TcpState::Established);
    let svc = lb.service(Proto::Tcp, ep(VIP)).unwrap();
    assert_eq!((svc.reals[0].active_conns, svc.reals[0].inactive_conns), (1, 0));

    let mut fin = tcp(CLIENT, VIP, 1019, Some(5001), Flags::FIN | Flags::ACK, &[]);
    assert!(matches!(lb.handle(t0, &mut fin), Verdict::Forward { .. }));
    let mut fin2 = tcp_raw(
        seen.dst,
        laddr,
        5001,
        Some(real_isn_of_client.wrapping_add(20)),
        Flags::FIN | Flags::ACK,
        &[],
    );
    assert!(matches!(lb.handle(t0, &mut fin2), Verdict::Forward { .. }));
    assert_eq!(parse(&fin2).ack, 1020);
    let mut last = tcp(CLIENT, VIP, 1020, Some(5002), Flags::ACK, &[]);
    assert!(matches!(lb.handle(t0, &mut last), Verdict::Forward { .. }));
    assert_eq!(lb.conns().next().unwrap().state, TcpState::TimeWait);

    // TIME_WAIT lasts 3 s, then the entry and its port are released.
    lb.handle_timeout(t0 + Duration::from_millis(2900));
    assert_eq!(lb.conn_count(), 1);
    lb.handle_timeout(t0 + Duration::from_millis(3100));
    assert_eq!(lb.conn_count(), 0);
    let svc = lb.service(Proto::Tcp, ep(VIP)).unwrap();
    assert_eq!(svc.reals[0].conns(), 0);
    assert_eq!(svc.stats.pkts_in, 4);
    assert_eq!(svc.stats.pkts_out, 2);
}

fn sack_blocks_and_mss_are_translated() {
    let mut lb = lb(&["10.2.0.1:8080"]);
    lb.edit_service({
        let mut c = lb.service(Proto::Tcp, ep(VIP)).unwrap().config.clone();
        c.mss_clamp = Some(1200);
        c
    })
    .unwrap();
    let t0 = Instant::from_secs(1);
    let mut syn = tcp_opts(CLIENT, VIP, 77, None, Flags::SYN, Some(1460), &[]);
    let _ = lb.handle(t0, &mut syn);
    let seen = parse(&syn);
    assert_eq!(seen.mss, Some(1200));
    assert!(seen.checksums_ok);
    let delta = seen.seq.wrapping_sub(77);
    // The real SACKs client data in its (shifted) space; the client must
    // see its own numbers.
    let blocks = [(78u32.wrapping_add(delta) + 100, 78u32.wrapping_add(delta) + 200)];
    let mut ack =
        tcp_opts_raw(seen.dst, seen.src, 900, Some(78u32.wrapping_add(delta)), Flags::ACK, None, &blocks);
    let _ = lb.handle(t0, &mut ack);
    let back = parse(&ack);
    assert_eq!(back.ack, 78);
    assert_eq!(back.sack, vec![(178, 278)]);
    assert!(back.checksums_ok);
}

fn reset_then_new_syn_reuses_cleanly() {
    let mut lb = lb(&["10.2.0.1:8080"]);
    let t0 = Instant::from_secs(1);
    let mut syn = tcp(CLIENT, VIP, 1000, None, Flags::SYN, &[]);
    let _ = lb.handle(t0, &mut syn);
    let first = parse(&syn);
    let mut rst =
        tcp_raw(first.dst, first.src, 0, Some(first.seq.wrapping_add(1)), Flags::RST | Flags::ACK, &[]);
    assert!(matches!(lb.handle(t0, &mut rst), Verdict::Forward { to: Side::Client }));
    assert_eq!(lb.conns().next().unwrap().state, TcpState::Close);
    let mut again = tcp(CLIENT, VIP, 9000, None, Flags::SYN, &[]);
    assert_eq!(lb.handle(t0, &mut again), Verdict::Forward { to: Side::Real });
    let second = parse(&again);
    assert_eq!(lb.conn_count(), 1);
    assert_ne!(second.src, first.src, "a fresh local port, the old one rests");
    assert_eq!(lb.conns().next().unwrap().state, TcpState::SynRecv);
    assert_eq!(lb.stats().conns_created, 2);
}

fn idle_connections_expire_per_state() {
    let mut lb = lb(&["10.2.0.1:8080"]);
    let t0 = Instant::from_secs(1);
    let mut syn = tcp(CLIENT, VIP, 1, None, Flags::SYN, &[]);
    let _ = lb.handle(t0, &mut syn);
    // SYN_RECV: 30 s.
    lb.handle_timeout(t0 + Duration::from_secs(29));
    assert_eq!(lb.conn_count(), 1);
    lb.handle_timeout(t0 + Duration::from_millis(30_200));
    assert_eq!(lb.conn_count(), 0);
    assert!(lb.poll_timeout().is_none());
}

fn drops_are_named() {
    let mut lb = lb(&["10.2.0.1:8080"]);
    let t = Instant::from_secs(1);
    let mut cases: Vec<(Vec<u8>, DropReason)> = vec![
        (tcp(CLIENT, VIP, 1, Some(1), Flags::ACK, &[]), DropReason::NoConnection),
        (tcp(CLIENT, "10.0.0.1:81", 1, None, Flags::SYN, &[]), DropReason::NoService),
        (tcp(CLIENT, "10.9.9.9:80", 1, None, Flags::SYN, &[]), DropReason::NotForUs),
        (tcp("10.2.0.1:8080", "10.1.0.1:4000", 1, Some(1), Flags::ACK, &[]), DropReason::StrayReturn),
        (tcp(CLIENT, VIP, 1, None, Flags::SYN | Flags::FIN, &[]), DropReason::BadTcpFlags),
        (tcp(CLIENT, VIP, 1, None, Flags::from_bits(0), &[]), DropReason::BadTcpFlags),
        (vec![0x45, 0, 0], DropReason::Truncated),
        (vec![], DropReason::Truncated),
        (vec![0x15; 40], DropReason::Malformed),
    ];
    cases.push((as_fragment(tcp(CLIENT, VIP, 1, None, Flags::SYN, &[])), DropReason::Fragment));
    cases.push((with_ttl(tcp(CLIENT, VIP, 1, None, Flags::SYN, &[]), 1), DropReason::TtlExpired));
    for (mut pkt, want) in cases {
        assert_eq!(lb.handle(t, &mut pkt), Verdict::Drop(want), "{want}");
        assert!(lb.stats().drops.get(want) >= 1);
    }
    assert_eq!(lb.conn_count(), 0);
}

fn no_real_no_laddr_no_port_and_full_table() {
    let t = Instant::from_secs(1);
    let mut lb = lb(&["10.2.0.1:8080"]);
    lb.edit_real(Proto::Tcp, ep(VIP), RealConfig { endpoint: ep("10.2.0.1:8080"), weight: 0 }).unwrap();
    let mut syn = tcp(CLIENT, VIP, 1, None, Flags::SYN, &[]);
    assert_eq!(lb.handle(t, &mut syn), Verdict::Drop(DropReason::NoReal));

    let mut lb = lb_with(&["10.2.0.1:8080"], |c| c.port_range = (5000, 5001), SchedKind::Rr);
    for (i, want) in [(1, None), (2, None), (3, Some(DropReason::NoLocalPort))] {
        let mut syn = tcp(&format!("192.0.2.9:{}", 1000 + i), VIP, 1, None, Flags::SYN, &[]);
        let v = lb.handle(t, &mut syn);
        match want {
            None => assert!(matches!(v, Verdict::Forward { .. })),
            Some(r) => assert_eq!(v, Verdict::Drop(r)),
        }
    }

    let mut full = lb_with(&["10.2.0.1:8080"], |c| c.max_conns = 1, SchedKind::Rr);
    let mut a = tcp("192.0.2.9:1", VIP, 1, None, Flags::SYN, &[]);
    let mut b = tcp("192.0.2.9:2", VIP, 1, None, Flags::SYN, &[]);
    assert!(matches!(full.handle(t, &mut a), Verdict::Forward { .. }));
    assert_eq!(full.handle(t, &mut b), Verdict::Drop(DropReason::TableFull));

    let mut lb = util::lb(&["10.2.0.1:8080"]);
    lb.remove_laddr(Proto::Tcp, ep(VIP), ip(LIP)).unwrap();
    let mut syn = tcp(CLIENT, VIP, 1, None, Flags::SYN, &[]);
    assert_eq!(lb.handle(t, &mut syn), Verdict::Drop(DropReason::NoLocalAddress));
}

fn quiesced_and_removed_reals_keep_their_connections() {
    let mut lb = lb(&["10.2.0.1:8080", "10.2.0.2:8080"]);
    let t = Instant::from_secs(1);
    let mut syn = tcp("192.0.2.1:1000", VIP, 1, None, Flags::SYN, &[]);
    let _ = lb.handle(t, &mut syn);
    let first = parse(&syn);
    lb.edit_real(Proto::Tcp, ep(VIP), RealConfig { endpoint: ep(&first.dst.to_string()), weight: 0 })
        .unwrap();
    for port in 2000..2020 {
        let mut syn = tcp(&format!("192.0.2.1:{port}"), VIP, 1, None, Flags::SYN, &[]);
        let _ = lb.handle(t, &mut syn);
        assert_ne!(parse(&syn).dst, first.dst, "quiesced real gets no new connection");
    }
    lb.remove_real(Proto::Tcp, ep(VIP), ep(&first.dst.to_string())).unwrap();
    let mut data = tcp("192.0.2.1:1000", VIP, 2, Some(1), Flags::ACK, b"x");
    assert_eq!(lb.handle(t, &mut data), Verdict::Forward { to: Side::Real });
    assert_eq!(parse(&data).dst, first.dst, "established traffic still reaches the removed real");
}

fn udp_flows_keep_zero_checksum_and_expire_after_300s() {
    let mut lb = lb_proto(Proto::Udp, &["10.2.0.1:53"]);
    let t0 = Instant::from_secs(1);
    let mut q = udp(CLIENT, "10.0.0.1:53", b"query", true);
    assert_eq!(lb.handle(t0, &mut q), Verdict::Forward { to: Side::Real });
    let seen = parse(&q);
    assert!(seen.checksums_ok);
    // Over IPv4 a zero UDP checksum means none, and stays so; IPv6 requires one.
    let v4 = family() == Family::V4;
    let mut r = udp(&seen.dst.to_string(), &seen.src.to_string(), b"answer", !v4);
    assert_eq!(lb.handle(t0, &mut r), Verdict::Forward { to: Side::Client });
    let back = parse(&r);
    assert_eq!(back.src.to_string(), "10.0.0.1:53");
    assert!(back.checksums_ok);
    if v4 {
        assert_eq!(back.udp_checksum, Some(0), "a zero UDP checksum stays zero");
    }
    lb.handle_timeout(t0 + Duration::from_secs(299));
    assert_eq!(lb.conn_count(), 1);
    lb.handle_timeout(t0 + Duration::from_millis(300_200));
    assert_eq!(lb.conn_count(), 0);
}

fn icmp_too_big_from_the_real_side_reaches_the_client() {
    let f = family();
    let mut lb = lb(&["10.2.0.1:8080"]);
    let t = Instant::from_secs(1);
    let mut syn = tcp(CLIENT, VIP, 1000, None, Flags::SYN, &[]);
    let _ = lb.handle(t, &mut syn);
    let seen = parse(&syn);
    // A router between LB and real says the LB's packet was too big.
    let (ty, code) = f.icmp_too_big();
    let mut err = icmp_error("10.3.0.254", &seen.src.ip().to_string(), ty, code, 1280, &syn);
    assert_eq!(lb.handle(t, &mut err), Verdict::Forward { to: Side::Client });
    let q = parse_icmp(&err);
    assert_eq!((q.outer_src.as_str(), q.outer_dst.as_str()), ("10.0.0.1", "192.0.2.1"));
    assert_eq!(q.quoted_src.to_string(), CLIENT);
    assert_eq!(q.quoted_dst.to_string(), VIP);
    assert_eq!(q.quoted_seq, 1000, "the quote is in the client's own sequence space");
    assert_eq!(q.mtu, 1280);
    assert!(q.checksums_ok);

    let (ty, code) = f.icmp_echo();
    let mut echo = icmp_error(CLIENT_IP, "10.0.0.1", ty, code, 0, &[]);
    assert_eq!(lb.handle(t, &mut echo), Verdict::Drop(DropReason::IcmpUnsupported));
    let (ty, code) = f.icmp_too_big();
    let unknown = tcp(LIP_PORT, "10.2.0.1:8080", 5, None, Flags::SYN, &[]);
    let mut stray = icmp_error("10.3.0.254", LIP, ty, code, 1280, &unknown);
    assert_eq!(lb.handle(t, &mut stray), Verdict::Drop(DropReason::IcmpNoConnection));
    // A corrupted ICMPv6 checksum (its pseudo-header included) is refused.
    let mut bad = icmp_error("10.3.0.254", &seen.src.ip().to_string(), ty, code, 1280, &syn);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(lb.handle(t, &mut bad), Verdict::Drop(DropReason::BadChecksum));
}

fn icmp_from_the_client_side_reaches_the_real() {
    let f = family();
    let mut lb = lb(&["10.2.0.1:8080"]);
    let t = Instant::from_secs(1);
    let mut syn = tcp(CLIENT, VIP, 1000, None, Flags::SYN, &[]);
    let _ = lb.handle(t, &mut syn);
    let seen = parse(&syn);
    let mut synack =
        tcp_raw(seen.dst, seen.src, 5000, Some(seen.seq.wrapping_add(1)), Flags::SYN | Flags::ACK, &[]);
    let _ = lb.handle(t, &mut synack);
    // The client's router cannot deliver the VIP's SYN-ACK.
    let (ty, code) = f.icmp_unreachable();
    let mut err = icmp_error("198.51.100.1", "10.0.0.1", ty, code, 0, &synack);
    assert_eq!(lb.handle(t, &mut err), Verdict::Forward { to: Side::Real });
    let q = parse_icmp(&err);
    assert_eq!((q.outer_src.as_str(), q.outer_dst.as_str()), (LIP, "10.2.0.1"));
    assert_eq!(q.quoted_src.to_string(), "10.2.0.1:8080");
    assert_eq!(q.quoted_dst, seen.src);
    assert_eq!(q.quoted_seq, 5000);
    assert!(q.checksums_ok);
}

fn control_plane_rejects_and_changes_nothing() {
    let mut lb = lb(&["10.2.0.1:8080"]);
    let before = format!("{:?}", lb.services().map(|s| &s.config).collect::<Vec<_>>());
    assert!(
        lb.add_real(Proto::Tcp, ep(VIP), RealConfig { endpoint: ep("10.2.0.1:8080"), weight: 1 }).is_err()
    );
    assert!(
        lb.add_real(
            Proto::Tcp,
            ep(VIP),
            RealConfig { endpoint: other_family("[2001:db8::1]:80"), weight: 1 }
        )
        .is_err()
    );
    assert!(lb.add_laddr(Proto::Tcp, ep(VIP), ip(LIP)).is_err());
    assert!(lb.remove_real(Proto::Tcp, ep(VIP), ep("10.9.9.9:1")).is_err());
    assert!(lb.remove_service(Proto::Udp, ep(VIP)).is_err());
    let mut dup = rvs_core::ServiceConfig::new(Proto::Tcp, ep(VIP));
    dup.sched = SchedKind::Rr;
    assert!(lb.add_service(dup).is_err());
    let after = format!("{:?}", lb.services().map(|s| &s.config).collect::<Vec<_>>());
    assert_eq!(before, after);
}

fn an_unacknowledged_fin_keeps_the_entry_past_the_short_closing_timeouts() {
    let mut lb = lb(&["10.2.0.1:8080"]);
    let t0 = Instant::from_secs(1);
    let mut syn = tcp(CLIENT, VIP, 1000, None, Flags::SYN, &[]);
    let _ = lb.handle(t0, &mut syn);
    let s = parse(&syn);
    let mut synack = tcp_raw(s.dst, s.src, 5000, Some(s.seq.wrapping_add(1)), Flags::SYN | Flags::ACK, &[]);
    let _ = lb.handle(t0, &mut synack);
    let mut ack = tcp(CLIENT, VIP, 1001, Some(5001), Flags::ACK, &[]);
    let _ = lb.handle(t0, &mut ack);
    // The real closes; the client acknowledges and closes too, but the
    // real's ACK of the client's FIN is lost.
    let mut fin = tcp_raw(s.dst, s.src, 5001, Some(s.seq.wrapping_add(1)), Flags::FIN | Flags::ACK, &[]);
    let _ = lb.handle(t0, &mut fin);
    let mut fin2 = tcp(CLIENT, VIP, 1001, Some(5002), Flags::FIN | Flags::ACK, &[]);
    let _ = lb.handle(t0, &mut fin2);
    assert_eq!(lb.conns().next().unwrap().state, TcpState::LastAck);
    // A peer's retransmission timeout after losses exceeds LAST_ACK's 3 s.
    lb.handle_timeout(t0 + Duration::from_secs(10));
    let mut again = tcp(CLIENT, VIP, 1001, Some(5002), Flags::FIN | Flags::ACK, &[]);
    assert_eq!(lb.handle(t0 + Duration::from_secs(10), &mut again), Verdict::Forward { to: Side::Real });
    let mut last = tcp_raw(s.dst, s.src, 5002, Some(s.seq.wrapping_add(2)), Flags::ACK, &[]);
    let _ = lb.handle(t0 + Duration::from_secs(10), &mut last);
    assert_eq!(lb.conns().next().unwrap().state, TcpState::TimeWait);
    lb.handle_timeout(t0 + Duration::from_millis(13_200));
    assert_eq!(lb.conn_count(), 0, "once closed, TIME_WAIT's 3 s apply");
}

/// The TSval of a packet's timestamps option, read by hand.
fn tsopt(p: &[u8]) -> Option<(u32, u32)> {
    let t = &p[ip_header_len(p)..];
    let hl = usize::from(t[12] >> 4) * 4;
    let w = |at: usize| u32::from_be_bytes([t[at], t[at + 1], t[at + 2], t[at + 3]]);
    let mut i = 20;
    while i < hl {
        match t[i] {
            0 => break,
            1 => i += 1,
            8 => return Some((w(i + 2), w(i + 6))),
            _ => i += usize::from(t[i + 1]).max(2),
        }
    }
    None
}

fn client_timestamps_run_on_the_balancer_clock_toward_the_real() {
    use etherparse::TcpOptionElement::Timestamp;
    let one_port = |c: &mut rvs_core::EngineConfig| {
        c.port_quarantine = Duration::ZERO;
        c.port_range = (40000, 40000);
    };
    let mut lb = lb_with(&["10.2.0.1:8080"], one_port, SchedKind::Rr);
    let (client, vip) = ("192.0.2.1:40000".parse().unwrap(), VIP.parse().unwrap());
    let mut real_ts = Vec::new();
    for (k, t) in [Instant::from_secs(10), Instant::from_secs(20)].into_iter().enumerate() {
        // The client restarts its timestamps low each time, as per-connection offsets may.
        let tsval = 1_000_000 - 999_000 * k as u32;
        let mut syn = tcp_full(client, vip, 7, None, Flags::SYN, &[Timestamp(tsval, 0)], &[]);
        assert_eq!(lb.handle(t, &mut syn), Verdict::Forward { to: Side::Real });
        let (ts, _) = tsopt(&syn).unwrap();
        real_ts.push(ts);
        let fwd = parse(&syn);
        assert_eq!(fwd.src.port(), 40000, "the same tuple toward the real each time");
        // The real echoes what it saw; the client gets its own value back.
        let mut synack =
            tcp_full(fwd.dst, fwd.src, 500, Some(fwd.seq + 1), Flags::SYN, &[Timestamp(77, ts)], &[]);
        assert_eq!(lb.handle(t, &mut synack), Verdict::Forward { to: Side::Client });
        assert_eq!(tsopt(&synack), Some((77, tsval)));
        assert!(parse(&synack).checksums_ok);
        let mut rst = tcp(CLIENT, VIP, 8, None, Flags::RST, &[]);
        let _ = lb.handle(t, &mut rst);
        lb.flush_conns(t);
    }
    // The same (LIP, port, real) later: a higher TSval, whatever the client chose.
    assert!(real_ts[1].wrapping_sub(real_ts[0]) as i32 >= 10_000, "{real_ts:?}");
}

/// Everything the engine built, in order, with the side each goes to.
fn drain(lb: &mut rvs_core::Engine) -> Vec<(Vec<u8>, Side)> {
    let mut buf = [0u8; 2048];
    let mut out = Vec::new();
    while let Some((len, side)) = lb.poll_transmit(&mut buf) {
        out.push((buf[..len].to_vec(), side));
    }
    out
}

/// One FullNAT connection from `client`: the handshake, a request of
/// `request` bytes and a 100-byte answer. Returns what the real saw of the
/// SYN, for the real's packets to be built from.
fn request(lb: &mut rvs_core::Engine, t: Instant, client: &str, request: u32) -> Seen {
    let mut syn = tcp(client, VIP, 1000, None, Flags::SYN, &[]);
    assert_eq!(lb.handle(t, &mut syn), Verdict::Forward { to: Side::Real });
    let s = parse(&syn);
    let mut synack = tcp_raw(s.dst, s.src, 5000, Some(s.seq.wrapping_add(1)), Flags::SYN | Flags::ACK, &[]);
    assert_eq!(lb.handle(t, &mut synack), Verdict::Forward { to: Side::Client });
    let mut data = tcp(client, VIP, 1001, Some(5001), Flags::ACK, &vec![b'x'; request as usize]);
    assert_eq!(lb.handle(t, &mut data), Verdict::Forward { to: Side::Real });
    let isn_end = s.seq.wrapping_add(1 + request);
    let mut answer = tcp_raw(s.dst, s.src, 5001, Some(isn_end), Flags::ACK, &[b'y'; 100]);
    assert_eq!(lb.handle(t, &mut answer), Verdict::Forward { to: Side::Client });
    s
}

/// The real closes first (as a web server after `Connection: close`), the client follows.
fn real_closes(lb: &mut rvs_core::Engine, t: Instant, client: &str, s: &Seen, request: u32) {
    let isn_end = s.seq.wrapping_add(1 + request);
    let mut fin = tcp_raw(s.dst, s.src, 5101, Some(isn_end), Flags::FIN | Flags::ACK, &[]);
    assert_eq!(lb.handle(t, &mut fin), Verdict::Forward { to: Side::Client });
    let mut fin2 = tcp(client, VIP, 1001 + request, Some(5102), Flags::FIN | Flags::ACK, &[]);
    assert_eq!(lb.handle(t, &mut fin2), Verdict::Forward { to: Side::Real });
    let mut last = tcp_raw(s.dst, s.src, 5102, Some(isn_end.wrapping_add(1)), Flags::ACK, &[]);
    assert_eq!(lb.handle(t, &mut last), Verdict::Forward { to: Side::Client });
    assert_eq!(lb.conns().find(|c| plan(c.laddr) == s.src).unwrap().state, TcpState::TimeWait);
}

fn closed_ports_are_reused_at_once_least_recently_used_first() {
    // Two ports: a burst of short connections never runs out.
    let mut lb = lb_with(&["10.2.0.1:8080"], |c| c.port_range = (5000, 5001), SchedKind::Rr);
    let mut t = Instant::from_secs(100);
    let mut ports = Vec::new();
    let mut isn_after = [None, None];
    for i in 0..20u16 {
        let client = format!("192.0.2.9:{}", 2000 + i);
        let s = request(&mut lb, t, &client, 50);
        let slot = usize::from(s.src.port() - 5000);
        // A reused port starts past where its last connection ended.
        if let Some(end) = isn_after[slot] {
            assert!((s.seq.wrapping_sub(end) as i32) > 0, "ISN {} not past {end}", s.seq);
        }
        isn_after[slot] = Some(s.seq.wrapping_add(1 + 50 + 1));
        // A 10 ms exchange; the next connection follows at once, long before
        // the balancer's 3 s TIME_WAIT is out.
        t += Duration::from_millis(10);
        real_closes(&mut lb, t, &client, &s, 50);
        ports.push(s.src.port());
        t += Duration::from_millis(1);
        lb.handle_timeout(t);
    }
    assert_eq!(lb.stats().drops.get(DropReason::NoLocalPort), 0);
    // The entry of a closed connection makes way for the next user of its port.
    assert_eq!(lb.conn_count(), 2);
    assert_eq!(lb.stats().conns_removed, 18);
    // The least recently used port each time: they take turns.
    assert!(ports.windows(2).all(|w| w[0] != w[1]), "{ports:?}");
    assert!(drain(&mut lb).is_empty(), "closed connections get no RSTs");
}

fn ports_the_real_might_refuse_rest_for_the_quarantine() {
    let one = |c: &mut rvs_core::EngineConfig| c.port_range = (5000, 5000);
    let t0 = Instant::from_secs(100);
    // An upload faster than the ISN clock (10 MB within a second): the
    // next ISN would not be past its end.
    let mut lb = lb_with(&["10.2.0.1:8080"], one, SchedKind::Rr);
    let s = request(&mut lb, t0, CLIENT, 50);
    let upload = 10_000_000u32;
    let mut data = tcp(CLIENT, VIP, 1051 + upload, Some(5101), Flags::ACK, b"z");
    assert_eq!(lb.handle(t0, &mut data), Verdict::Forward { to: Side::Real });
    real_closes(&mut lb, t0, CLIENT, &Seen { seq: s.seq.wrapping_add(upload + 1), ..s }, 50);
    lb.handle_timeout(t0 + Duration::from_secs(4));
    assert_eq!(lb.conn_count(), 0);
    let mut syn = tcp("192.0.2.9:1", VIP, 1, None, Flags::SYN, &[]);
    assert_eq!(lb.handle(t0 + Duration::from_secs(4), &mut syn), Verdict::Drop(DropReason::NoLocalPort));
    // After the quarantine (60 s, up to twice that) it is back.
    lb.handle_timeout(t0 + Duration::from_secs(125));
    let mut syn = tcp("192.0.2.9:2", VIP, 1, None, Flags::SYN, &[]);
    assert_eq!(lb.handle(t0 + Duration::from_secs(125), &mut syn), Verdict::Forward { to: Side::Real });

    // A connection that expired while open rests too (and both sides got RSTs).
    let mut lb = lb_with(&["10.2.0.1:8080"], one, SchedKind::Rr);
    let _ = request(&mut lb, t0, CLIENT, 50);
    lb.handle_timeout(t0 + Duration::from_secs(1000));
    assert_eq!(lb.conn_count(), 0);
    assert_eq!(drain(&mut lb).len(), 2);
    let mut syn = tcp("192.0.2.9:3", VIP, 1, None, Flags::SYN, &[]);
    assert_eq!(lb.handle(t0 + Duration::from_secs(1000), &mut syn), Verdict::Drop(DropReason::NoLocalPort));
}

fn running_out_of_ports_is_told_once_per_interval_with_the_count() {
    let mut lb = lb_with(&["10.2.0.1:8080"], |c| c.port_range = (5000, 5000), SchedKind::Rr);
    let t0 = Instant::from_secs(100);
    let mut syn = tcp("192.0.2.9:1", VIP, 1, None, Flags::SYN, &[]);
    let _ = lb.handle(t0, &mut syn);
    for (i, secs) in [0u64, 1, 2, 11, 12].into_iter().enumerate() {
        let mut syn = tcp(&format!("192.0.2.9:{}", 100 + i), VIP, 1, None, Flags::SYN, &[]);
        assert_eq!(
            lb.handle(t0 + Duration::from_secs(secs), &mut syn),
            Verdict::Drop(DropReason::NoLocalPort)
        );
    }
    let events: Vec<_> = core::iter::from_fn(|| lb.poll_event()).collect();
    let told = |dropped| rvs_core::Event::PortsExhausted {
        proto: Proto::Tcp,
        vip: ep(VIP),
        real: ep("10.2.0.1:8080"),
        dropped,
    };
    assert_eq!(events, [told(1), told(3)]);
    assert_eq!(lb.service(Proto::Tcp, ep(VIP)).unwrap().reals[0].no_port.dropped, 5);
    assert_eq!(lb.stats().drops.get(DropReason::NoLocalPort), 5);
}

fn an_expired_open_connection_is_reset_on_both_sides_exactly() {
    let mut lb = lb(&["10.2.0.1:8080"]);
    let t0 = Instant::from_secs(100);
    let s = request(&mut lb, t0, CLIENT, 50);
    // The client acknowledges the answer; then both sides go quiet.
    let mut ack = tcp(CLIENT, VIP, 1051, Some(5101), Flags::ACK, &[]);
    let _ = lb.handle(t0, &mut ack);
    assert!(drain(&mut lb).is_empty());
    lb.handle_timeout(t0 + Duration::from_secs(899));
    assert_eq!(lb.conn_count(), 1, "ESTABLISHED lasts 900 s, as in kernel IPVS");
    lb.handle_timeout(t0 + Duration::from_secs(901));
    assert_eq!(lb.conn_count(), 0);
    let out = drain(&mut lb);
    assert_eq!(out.len(), 2);
    let (to_real, to_client) = (parse(&out[0].0), parse(&out[1].0));
    assert_eq!((out[0].1, out[1].1), (Side::Real, Side::Client));
    // Each with the sequence number its receiver expects next, in its own numbering.
    assert_eq!((to_real.src, to_real.dst), (s.src, s.dst));
    assert_eq!(to_real.seq, s.seq.wrapping_add(51));
    assert_eq!((to_client.src.to_string(), to_client.dst.to_string()), (VIP.to_owned(), CLIENT.to_owned()));
    assert_eq!(to_client.seq, 5101);
    for r in [&to_real, &to_client] {
        assert!(r.flags.rst() && !r.flags.ack() && r.checksums_ok);
    }
    assert_eq!(lb.stats().conns_reset, 1);
    assert_eq!(lb.reset_stats().forgotten, 2);
    // Flushing does the same to what is still open, and nothing to what is closed.
    let s = request(&mut lb, t0, "192.0.2.1:1", 10);
    let _ = request(&mut lb, t0, "192.0.2.1:2", 10);
    real_closes(&mut lb, t0, "192.0.2.1:1", &s, 10);
    lb.flush_conns(t0);
    assert_eq!(drain(&mut lb).len(), 2);
    assert_eq!(lb.stats().conns_reset, 2);
}

fn segments_of_unknown_connections_are_answered_within_the_rate() {
    let mut lb = lb_with(&["10.2.0.1:8080"], |c| c.reset_rate = 2, SchedKind::Rr);
    let t = Instant::from_secs(100);
    // A client's request after the balancer forgot its connection.
    let mut late = tcp(CLIENT, VIP, 1051, Some(5101), Flags::ACK | Flags::PSH, b"GET /");
    assert_eq!(lb.handle(t, &mut late), Verdict::Drop(DropReason::NoConnection));
    // A real's segment to a local port with no connection.
    let mut stray = tcp("10.2.0.1:8080", LIP_PORT, 9000, Some(777), Flags::ACK, &[]);
    assert_eq!(lb.handle(t, &mut stray), Verdict::Drop(DropReason::StrayReturn));
    // An RST is never answered.
    let mut rst = tcp(CLIENT, VIP, 1051, Some(5101), Flags::RST | Flags::ACK, &[]);
    assert_eq!(lb.handle(t, &mut rst), Verdict::Drop(DropReason::NoConnection));
    let out = drain(&mut lb);
    assert_eq!(out.len(), 2);
    let (to_client, to_real) = (parse(&out[0].0), parse(&out[1].0));
    assert_eq!(
        (to_client.src.to_string(), to_client.dst.to_string(), to_client.seq),
        (VIP.into(), CLIENT.into(), 5101)
    );
    assert_eq!(
        (to_real.src.to_string(), to_real.dst.to_string(), to_real.seq),
        (LIP_PORT.into(), "10.2.0.1:8080".into(), 777)
    );
    assert_eq!((out[0].1, out[1].1), (Side::Client, Side::Real));
    // Two per second: the third is counted, not sent.
    let mut late = tcp(CLIENT, VIP, 1051, Some(5101), Flags::ACK, &[]);
    assert_eq!(lb.handle(t, &mut late), Verdict::Drop(DropReason::NoConnection));
    assert!(drain(&mut lb).is_empty());
    assert_eq!((lb.reset_stats().answered, lb.reset_stats().rate_limited), (2, 1));
}

/// Hop-by-hop and destination options headers before TCP are walked and
/// passed on; the transport rewrite lands past them.
#[test]
fn ipv6_extension_headers_are_walked_and_kept() {
    run_in(Family::V6, || {
        let mut lb = lb(&["10.2.0.1:8080"]);
        let t0 = Instant::from_secs(1);
        let plain = tcp(CLIENT, VIP, 1000, None, Flags::SYN, &[]);
        let mut syn = with_ext_headers(&plain, &[(0, 0), (60, 1)]);
        assert_eq!(ip_header_len(&syn), 40 + 8 + 16);
        assert_eq!(lb.handle(t0, &mut syn), Verdict::Forward { to: Side::Real });
        let seen = parse(&syn);
        assert_eq!(seen.src.ip().to_string(), LIP);
        assert_eq!(seen.dst.to_string(), "10.2.0.1:8080");
        assert_eq!(seen.ttl, 63);
        assert!(seen.checksums_ok);
        assert_eq!(&syn[40..64], &with_ext_headers(&plain, &[(0, 0), (60, 1)])[40..64]);

        // Any fragment header is a fragment; chains not walked have their reason.
        let reasons = [
            (vec![(44, 0)], DropReason::Fragment),
            (vec![(0, 0), (44, 0)], DropReason::Fragment),
            (vec![(60, 0), (0, 0)], DropReason::BadExtensionHeaders),
            (vec![(51, 1)], DropReason::BadExtensionHeaders),
            (vec![(60, 0); 9], DropReason::BadExtensionHeaders),
        ];
        for (headers, reason) in reasons {
            let mut pkt = with_ext_headers(&plain, &headers);
            assert_eq!(lb.handle(t0, &mut pkt), Verdict::Drop(reason), "{headers:?}");
        }
        let mut cut = with_ext_headers(&plain, &[(60, 4)]);
        cut.truncate(40 + 16);
        cut[4..6].copy_from_slice(&16u16.to_be_bytes());
        assert_eq!(lb.handle(t0, &mut cut), Verdict::Drop(DropReason::BadExtensionHeaders));

        // A packet too big quoting the forwarded SYN, extension headers and
        // all, reaches the client about its own SYN.
        let (ty, code) = family().icmp_too_big();
        let mut err = icmp_error("10.3.0.254", &seen.src.ip().to_string(), ty, code, 1280, &syn);
        assert_eq!(lb.handle(t0, &mut err), Verdict::Forward { to: Side::Client });
        let q = parse_icmp(&err);
        assert_eq!((q.outer_src.as_str(), q.outer_dst.as_str()), ("10.0.0.1", "192.0.2.1"));
        assert_eq!((q.quoted_src.to_string(), q.quoted_dst.to_string()), (CLIENT.to_owned(), VIP.to_owned()));
        assert_eq!((q.quoted_seq, q.mtu), (1000, 1280));
        assert!(q.checksums_ok);
    });
}

/// UDP over IPv6 must carry a checksum (RFC 8200 §8.1).
#[test]
fn ipv6_udp_without_checksum_is_dropped() {
    run_in(Family::V6, || {
        let mut lb = lb_proto(Proto::Udp, &["10.2.0.1:5353"]);
        let t0 = Instant::from_secs(1);
        let mut none = udp(CLIENT, "10.0.0.1:53", b"q", false);
        assert_eq!(lb.handle(t0, &mut none), Verdict::Drop(DropReason::MissingUdpChecksum));
        let mut with = udp(CLIENT, "10.0.0.1:53", b"q", true);
        assert_eq!(lb.handle(t0, &mut with), Verdict::Forward { to: Side::Real });
        let seen = parse(&with);
        assert_eq!(seen.dst.to_string(), "10.2.0.1:5353");
        assert!(seen.checksums_ok);
    });
}
