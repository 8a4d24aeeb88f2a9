//! Scripted client-address delivery tests: TOA and the PROXY protocol
//! header, over FullNAT and SYNProxy, with packets built by etherparse and
//! read back by hand.

mod util;

use std::net::SocketAddr;
use std::time::Duration;

use etherparse::TcpOptionElement;
use rvs_core::{Engine, Instant, Proto, ProxyProtocol, SchedKind, Side, Verdict};
use rvs_wire::tcp::Flags;
use util::{CLIENT, Family, VIP, ep, family, family_tests, link_mss, parse, tcp, tcp_full, tcp_raw};

family_tests!(
    v1_header_leads_the_stream_and_shifts_every_number,
    v2_header_is_binary,
    partial_acknowledgement_shows_nothing_and_the_rest_is_resent,
    client_resending_its_first_segment_brings_the_header_again,
    server_speaks_first_header_resent_on_its_own_timer_with_backoff,
    real_syn_ack_again_means_header_lost,
    toa_rides_in_first_segments_until_the_real_answers,
    toa_without_option_room_is_counted_not_lost,
    toa_and_proxy_header_together,
    sack_edges_inside_the_header_are_clamped,
    synproxy_sends_the_header_at_the_splice_before_the_replay,
);

const REAL: &str = "10.2.0.1:8080";
const T0: Instant = Instant::from_secs(1000);
/// The version 1 header for `CLIENT` → `VIP`.
fn v1() -> &'static [u8] {
    match family() {
        Family::V4 => b"PROXY TCP4 192.0.2.1 10.0.0.1 40000 80\r\n",
        Family::V6 => b"PROXY TCP6 2001:db8:192:0:2::1 2001:db8:10::1 40000 80\r\n",
    }
}

/// Length of the version 2 header: 16 bytes, then addresses and ports.
fn v2_len() -> u32 {
    match family() {
        Family::V4 => 16 + 12,
        Family::V6 => 16 + 36,
    }
}

/// Bytes TOA adds to a segment: the option's IPv4 or IPv6 form.
fn toa_len() -> u16 {
    match family() {
        Family::V4 => 8,
        Family::V6 => 20,
    }
}
/// The client's ISN and the real's.
const CISN: u32 = 1000;
const RISN: u32 = 5000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn lb(pp: ProxyProtocol, toa: bool, synproxy: bool) -> Engine {
    let mut lb = util::lb_with(&[REAL], |_| {}, SchedKind::Rr);
    let mut cfg = lb.service(Proto::Tcp, ep(VIP)).unwrap().config.clone();
    cfg.proxy_protocol = pp;
    cfg.toa = toa;
    cfg.synproxy = synproxy;
    lb.edit_service(cfg).unwrap();
    lb
}

fn drain(lb: &mut Engine) -> Vec<(Vec<u8>, Side)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some((len, side)) = lb.poll_transmit(&mut buf) {
        assert!(parse(&buf[..len]).checksums_ok, "built packet has a bad checksum");
        out.push((buf[..len].to_vec(), side));
    }
    out
}

fn real() -> SocketAddr {
    REAL.parse().unwrap()
}

/// A FullNAT connection as far as the real's SYN-ACK: the real-side ISN
/// the engine chose, and the local address and port.
struct Opened {
    s: u32,
    lip: SocketAddr,
}

fn open(lb: &mut Engine, t: Instant, mss: Option<u16>) -> Opened {
    let opts: Vec<_> = mss.map(TcpOptionElement::MaximumSegmentSize).into_iter().collect();
    let client: SocketAddr = CLIENT.parse().unwrap();
    let vip: SocketAddr = VIP.parse().unwrap();
    let mut syn = tcp_full(client, vip, CISN, None, Flags::SYN, &opts, &[]);
    assert_eq!(lb.handle(t, &mut syn), Verdict::Forward { to: Side::Real });
    let fwd = parse(&syn);
    let (s, lip) = (fwd.seq, fwd.src);
    let mut synack = tcp_raw(real(), lip, RISN, Some(s.wrapping_add(1)), Flags::SYN, &[]);
    assert_eq!(lb.handle(t, &mut synack), Verdict::Forward { to: Side::Client });
    assert_eq!(parse(&synack).ack, CISN + 1, "the SYN-ACK acknowledges the client's SYN");
    Opened { s, lip }
}

/// A client segment `sent` bytes into its stream.
fn client(sent: u32, flags: Flags, payload: &[u8]) -> Vec<u8> {
    tcp(CLIENT, VIP, CISN + 1 + sent, Some(RISN + 1), flags | Flags::ACK, payload)
}

/// A real segment acknowledging `ack` (real-side numbering), `sent` bytes into its stream.
fn from_real(o: &Opened, sent: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    tcp_raw(real(), o.lip, RISN + 1 + sent, Some(ack), Flags::ACK, payload)
}

fn v1_header_leads_the_stream_and_shifts_every_number() {
    let mut lb = lb(ProxyProtocol::V1, false, false);
    let o = open(&mut lb, T0, None);
    assert!(drain(&mut lb).is_empty(), "nothing before the handshake completes");
    let h = v1().len() as u32;

    let mut ack = client(0, Flags::ACK, &[]);
    assert_eq!(lb.handle(T0, &mut ack), Verdict::Forward { to: Side::Real });
    let built = drain(&mut lb);
    assert_eq!(built.len(), 1);
    let hdr = parse(&built[0].0);
    assert_eq!(built[0].1, Side::Real);
    assert_eq!((hdr.src, hdr.dst), (o.lip, real()));
    assert_eq!((hdr.seq, hdr.ack), (o.s + 1, RISN + 1));
    assert_eq!(hdr.payload, v1());
    assert_eq!(parse(&ack).seq, o.s + 1 + h, "the client's bytes follow the header");

    let mut data = client(0, Flags::PSH, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(lb.handle(T0, &mut data), Verdict::Forward { to: Side::Real });
    assert_eq!(parse(&data).seq, o.s + 1 + h);
    assert!(drain(&mut lb).is_empty(), "a first send is not a resend");

    // The real acknowledges header and request; a SACK block beyond.
    let end = o.s + 1 + h + 18;
    let mut back = tcp_raw(real(), o.lip, RISN + 1, Some(end), Flags::ACK, &[]);
    assert_eq!(lb.handle(T0, &mut back), Verdict::Forward { to: Side::Client });
    assert_eq!(parse(&back).ack, CISN + 1 + 18);
    assert_eq!(lb.open_deliveries(), 0, "a fully acknowledged header ends the delivery");
    let real_addr: SocketAddr = REAL.parse().unwrap();
    let lip = o.lip;
    let mut sacked = tcp_full(
        real_addr,
        lip,
        RISN + 1,
        Some(end),
        Flags::ACK,
        &[
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::SelectiveAcknowledgement((end + 10, end + 20), [None; 3]),
        ],
        &[],
    );
    assert_eq!(lb.handle(T0, &mut sacked), Verdict::Forward { to: Side::Client });
    assert_eq!(parse(&sacked).sack, vec![(CISN + 1 + 28, CISN + 1 + 38)]);
    let stats = lb.client_addr_stats();
    assert_eq!((stats.proxy_headers, stats.proxy_resent), (1, 0));
}

fn v2_header_is_binary() {
    let mut lb = lb(ProxyProtocol::V2, false, false);
    let o = open(&mut lb, T0, None);
    let mut ack = client(0, Flags::ACK, &[]);
    assert!(!matches!(lb.handle(T0, &mut ack), Verdict::Drop(_)));
    let hdr = parse(&drain(&mut lb)[0].0);
    let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    match family() {
        Family::V4 => want.extend([0x21, 0x11, 0, 12, 192, 0, 2, 1, 10, 0, 0, 1]),
        Family::V6 => {
            want.extend([0x21, 0x21, 0, 36]);
            want.extend([0x20, 0x01, 0x0d, 0xb8, 0x01, 0x92, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1]);
            want.extend([0x20, 0x01, 0x0d, 0xb8, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        }
    }
    want.extend(40000u16.to_be_bytes());
    want.extend(80u16.to_be_bytes());
    assert_eq!(hdr.payload, want);
    assert_eq!(parse(&ack).seq, o.s + 1 + v2_len());
}

fn partial_acknowledgement_shows_nothing_and_the_rest_is_resent() {
    let mut lb = lb(ProxyProtocol::V1, false, false);
    let o = open(&mut lb, T0, None);
    let h = v1().len() as u32;
    let mut ack = client(0, Flags::PSH, b"GET");
    assert!(!matches!(lb.handle(T0, &mut ack), Verdict::Drop(_)));
    drain(&mut lb);
    // The real took 5 header bytes only.
    let mut part = from_real(&o, 0, o.s + 1 + 5, &[]);
    assert_eq!(lb.handle(T0 + ms(1), &mut part), Verdict::Forward { to: Side::Client });
    assert_eq!(parse(&part).ack, CISN + 1, "the client sees nothing of its own acknowledged");
    // The resend waits the RTO toward the real: the handshake's RTT (0
    // here) was its first sample, so the 10 ms floor.
    lb.handle_timeout(T0 + ms(9));
    assert!(drain(&mut lb).is_empty());
    lb.handle_timeout(T0 + ms(10));
    let again = drain(&mut lb);
    assert_eq!(again.len(), 1);
    let rest = parse(&again[0].0);
    assert_eq!((rest.seq, rest.payload.as_slice()), (o.s + 1 + 5, &v1()[5..]));
    // All of it now, and the request.
    let mut full = from_real(&o, 0, o.s + 1 + h + 3, &[]);
    assert!(!matches!(lb.handle(T0 + ms(12), &mut full), Verdict::Drop(_)));
    assert_eq!(parse(&full).ack, CISN + 1 + 3);
    lb.handle_timeout(T0 + ms(2000));
    assert!(drain(&mut lb).is_empty(), "no resend once acknowledged");
    assert_eq!(lb.client_addr_stats().proxy_resent, 1);
    assert_eq!(lb.open_deliveries(), 0);
}

fn client_resending_its_first_segment_brings_the_header_again() {
    let mut lb = lb(ProxyProtocol::V1, false, false);
    let o = open(&mut lb, T0, None);
    let mut first = client(0, Flags::PSH, b"hello");
    assert!(!matches!(lb.handle(T0, &mut first), Verdict::Drop(_)));
    assert_eq!(drain(&mut lb).len(), 1);
    // Header and data lost; the real's duplicate ACK still names the header's start.
    let mut dup = from_real(&o, 0, o.s + 1, &[]);
    assert!(!matches!(lb.handle(T0 + ms(5), &mut dup), Verdict::Drop(_)));
    assert_eq!(parse(&dup).ack, CISN + 1);
    let mut retx = client(0, Flags::PSH, b"hello");
    assert_eq!(lb.handle(T0 + ms(50), &mut retx), Verdict::Forward { to: Side::Real });
    let built = drain(&mut lb);
    assert_eq!(built.len(), 1, "the header goes out again ahead of the resent segment");
    assert_eq!(parse(&built[0].0).payload, v1());
    // A pure ACK at the stream's start is no reason to resend.
    let mut pure = client(0, Flags::ACK, &[]);
    assert!(!matches!(lb.handle(T0 + ms(60), &mut pure), Verdict::Drop(_)));
    assert!(drain(&mut lb).is_empty());
}

fn server_speaks_first_header_resent_on_its_own_timer_with_backoff() {
    let mut lb = lb(ProxyProtocol::V2, false, false);
    let o = open(&mut lb, T0, None);
    let mut ack = client(0, Flags::ACK, &[]);
    assert!(!matches!(lb.handle(T0, &mut ack), Verdict::Drop(_)));
    assert_eq!(drain(&mut lb).len(), 1, "the header goes out though the client says nothing");
    // The real greets before the header arrives.
    let mut banner = from_real(&o, 0, o.s + 1, b"220 ready\r\n");
    assert_eq!(lb.handle(T0 + ms(1), &mut banner), Verdict::Forward { to: Side::Client });
    assert_eq!(parse(&banner).ack, CISN + 1);
    let mut sends = Vec::new();
    let mut t = T0;
    while t < T0 + ms(1600) {
        t += ms(10);
        lb.handle_timeout(t);
        if !drain(&mut lb).is_empty() {
            sends.push(t.saturating_since(T0).as_millis());
        }
    }
    // The handshake's RTT (0 here) gave the floor RTO.
    assert_eq!(sends, vec![10, 30, 70, 150, 310, 630, 1270], "RTO 10 ms, doubling");
    let mut acked = from_real(&o, 11, o.s + 1 + v2_len(), &[]);
    assert!(!matches!(lb.handle(t, &mut acked), Verdict::Drop(_)));
    assert_eq!(parse(&acked).ack, CISN + 1);
    lb.handle_timeout(t + ms(5000));
    assert!(drain(&mut lb).is_empty());
}

fn real_syn_ack_again_means_header_lost() {
    let mut lb = lb(ProxyProtocol::V1, false, false);
    let o = open(&mut lb, T0, None);
    let mut ack = client(0, Flags::ACK, &[]);
    assert!(!matches!(lb.handle(T0, &mut ack), Verdict::Drop(_)));
    drain(&mut lb);
    let mut synack = tcp_raw(real(), o.lip, RISN, Some(o.s + 1), Flags::SYN, &[]);
    assert_eq!(lb.handle(T0 + ms(5), &mut synack), Verdict::Forward { to: Side::Client });
    assert_eq!(parse(&synack).ack, CISN + 1, "the client's SYN, not the header, is acknowledged");
    let built = drain(&mut lb);
    assert_eq!(built.len(), 1);
    assert_eq!(parse(&built[0].0).payload, v1());
}

fn toa_rides_in_first_segments_until_the_real_answers() {
    let mut lb = lb(ProxyProtocol::Disabled, true, false);
    let client_addr: SocketAddr = CLIENT.parse().unwrap();
    let vip: SocketAddr = VIP.parse().unwrap();
    let mut syn = tcp_full(
        client_addr,
        vip,
        CISN,
        None,
        Flags::SYN,
        &[TcpOptionElement::MaximumSegmentSize(link_mss(1460))],
        &[],
    );
    assert!(!matches!(lb.handle(T0, &mut syn), Verdict::Drop(_)));
    let fwd = parse(&syn);
    assert_eq!(
        fwd.mss,
        Some(link_mss(1460) - toa_len()),
        "the MSS toward the real leaves room for the option"
    );
    assert_eq!(fwd.toa, None, "no TOA on the SYN");
    let o = Opened { s: fwd.seq, lip: fwd.src };
    let real_addr: SocketAddr = REAL.parse().unwrap();
    let lip = o.lip;
    let mut synack = tcp_full(
        real_addr,
        lip,
        RISN,
        Some(o.s + 1),
        Flags::SYN,
        &[TcpOptionElement::MaximumSegmentSize(link_mss(1460))],
        &[],
    );
    assert!(!matches!(lb.handle(T0, &mut synack), Verdict::Drop(_)));
    assert_eq!(
        parse(&synack).mss,
        Some(link_mss(1460) - toa_len()),
        "the client's segments grow by the option: it is told less"
    );

    for (i, payload) in [&b""[..], b"GET /"].into_iter().enumerate() {
        let mut p = client(0, Flags::ACK, payload);
        assert_eq!(lb.handle(T0, &mut p), Verdict::Absorbed, "segment {i} leaves grown, as a built packet");
        let built = drain(&mut lb);
        assert_eq!(built.len(), 1);
        let seen = parse(&built[0].0);
        assert_eq!(seen.toa, Some(CLIENT.parse().unwrap()));
        assert_eq!((seen.src, seen.dst, seen.seq), (o.lip, real(), o.s + 1));
        assert_eq!(seen.payload, payload);
    }
    let mut answer = from_real(&o, 0, o.s + 1 + 5, b"HTTP");
    assert_eq!(lb.handle(T0, &mut answer), Verdict::Forward { to: Side::Client });
    let mut later = client(5, Flags::ACK, b" HTTP/1.1");
    assert_eq!(lb.handle(T0, &mut later), Verdict::Forward { to: Side::Real });
    assert_eq!(parse(&later).toa, None);
    assert_eq!(lb.client_addr_stats().toa_inserted, 2);
    assert_eq!(lb.open_deliveries(), 0);
}

fn toa_without_option_room_is_counted_not_lost() {
    let mut lb = lb(ProxyProtocol::Disabled, true, false);
    let _o = open(&mut lb, T0, None);
    let client_addr: SocketAddr = CLIENT.parse().unwrap();
    let vip: SocketAddr = VIP.parse().unwrap();
    // Timestamps (10 + 2 NOPs) and three SACK blocks (26 + 2 NOPs): 40 bytes.
    let full = [
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Timestamp(1, 2),
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::SelectiveAcknowledgement((1, 2), [Some((3, 4)), Some((5, 6)), None]),
    ];
    let mut p = tcp_full(client_addr, vip, CISN + 1, Some(RISN + 1), Flags::ACK, &full, b"x");
    assert_eq!(lb.handle(T0, &mut p), Verdict::Forward { to: Side::Real });
    assert_eq!(parse(&p).toa, None);
    assert_eq!(parse(&p).header_len, 60);
    let s = lb.client_addr_stats();
    assert_eq!((s.toa_inserted, s.toa_no_room), (0, 1));
}

fn toa_and_proxy_header_together() {
    let mut lb = lb(ProxyProtocol::V1, true, false);
    let o = open(&mut lb, T0, None);
    let mut ack = client(0, Flags::ACK, &[]);
    assert_eq!(lb.handle(T0, &mut ack), Verdict::Absorbed);
    let built = drain(&mut lb);
    assert_eq!(built.len(), 2, "header, then the client's ACK");
    let (hdr, fwd) = (parse(&built[0].0), parse(&built[1].0));
    assert_eq!((hdr.payload.as_slice(), hdr.toa), (v1(), Some(CLIENT.parse().unwrap())));
    assert_eq!((fwd.seq, fwd.toa), (o.s + 1 + v1().len() as u32, Some(CLIENT.parse().unwrap())));
}

fn sack_edges_inside_the_header_are_clamped() {
    let mut lb = lb(ProxyProtocol::V1, false, false);
    let o = open(&mut lb, T0, None);
    let h = v1().len() as u32;
    let mut first = client(0, Flags::PSH, b"hello");
    assert!(!matches!(lb.handle(T0, &mut first), Verdict::Drop(_)));
    drain(&mut lb);
    let real_addr: SocketAddr = REAL.parse().unwrap();
    let lip = o.lip;
    // Header lost, data arrived: the real SACKs the data; a second block
    // reaches into the header.
    let mut dup = tcp_full(
        real_addr,
        lip,
        RISN + 1,
        Some(o.s + 1),
        Flags::ACK,
        &[
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::SelectiveAcknowledgement(
                (o.s + 1 + h, o.s + 1 + h + 5),
                [Some((o.s + 3, o.s + 1 + h + 5)), None, None],
            ),
        ],
        &[],
    );
    assert_eq!(lb.handle(T0 + ms(1), &mut dup), Verdict::Forward { to: Side::Client });
    let seen = parse(&dup);
    assert!(seen.checksums_ok);
    assert_eq!(seen.ack, CISN + 1);
    assert_eq!(seen.sack, vec![(CISN + 1, CISN + 6), (CISN + 1, CISN + 6)]);
}

/// SYNProxy: the client's SYN and cookie ACK (with `payload`); returns the
/// SYN-ACK the client got and the SYN the real got.
fn synproxy_open(lb: &mut Engine, payload: &[u8]) -> (util::Seen, util::Seen) {
    let client_addr: SocketAddr = CLIENT.parse().unwrap();
    let vip: SocketAddr = VIP.parse().unwrap();
    let mut syn = tcp_full(
        client_addr,
        vip,
        CISN,
        None,
        Flags::SYN,
        &[TcpOptionElement::MaximumSegmentSize(link_mss(1460))],
        &[],
    );
    assert_eq!(lb.handle(T0, &mut syn), Verdict::Absorbed);
    let synack = parse(&drain(lb)[0].0);
    let mut ack = tcp(CLIENT, VIP, CISN + 1, Some(synack.seq + 1), Flags::ACK | Flags::PSH, payload);
    assert_eq!(lb.handle(T0, &mut ack), Verdict::Absorbed);
    let built = drain(lb);
    assert_eq!(built.len(), 1);
    assert_eq!(built[0].1, Side::Real);
    (synack, parse(&built[0].0))
}

fn synproxy_sends_the_header_at_the_splice_before_the_replay() {
    let mut lb = lb(ProxyProtocol::V1, true, true);
    let (synack, real_syn) = synproxy_open(&mut lb, b"GET /");
    assert_eq!(
        synack.mss,
        Some(link_mss(1460) - toa_len()),
        "TOA: the client is told the option's length less"
    );
    assert_eq!(real_syn.mss, Some(link_mss(1460) - toa_len()), "and so is the real");
    let (s, lip) = (real_syn.seq, real_syn.src);
    let mut rsynack = tcp_raw(real(), lip, RISN, Some(s + 1), Flags::SYN, &[]);
    assert_eq!(lb.handle(T0 + ms(1), &mut rsynack), Verdict::Absorbed);
    let built = drain(&mut lb);
    assert_eq!(built.len(), 2, "header, then the kept request");
    let (hdr, replay) = (parse(&built[0].0), parse(&built[1].0));
    assert_eq!((hdr.seq, hdr.ack, hdr.payload.as_slice()), (s + 1, RISN + 1, v1()));
    assert_eq!(hdr.toa, Some(CLIENT.parse().unwrap()));
    let h = v1().len() as u32;
    assert_eq!((replay.seq, replay.payload.as_slice()), (s + 1 + h, &b"GET /"[..]));
    assert_eq!(replay.toa, Some(CLIENT.parse().unwrap()));
    // The real acknowledges everything: the client sees its 5 bytes acknowledged.
    let mut back = tcp_raw(real(), lip, RISN + 1, Some(s + 1 + h + 5), Flags::ACK, b"HTTP/1.1 200");
    assert_eq!(lb.handle(T0 + ms(2), &mut back), Verdict::Forward { to: Side::Client });
    let back = parse(&back);
    assert_eq!((back.ack, back.seq), (CISN + 1 + 5, synack.seq + 1));
    assert_eq!(lb.open_deliveries(), 0);
    // Lost header and replay: a repeated SYN-ACK from the real brings both again.
    let mut lb = self::lb(ProxyProtocol::V2, false, true);
    let (_, real_syn) = synproxy_open(&mut lb, b"x");
    let mut rsynack = tcp_raw(real(), real_syn.src, RISN, Some(real_syn.seq + 1), Flags::SYN, &[]);
    assert!(!matches!(lb.handle(T0 + ms(1), &mut rsynack.clone()), Verdict::Drop(_)));
    assert_eq!(drain(&mut lb).len(), 2);
    assert!(!matches!(lb.handle(T0 + ms(3), &mut rsynack), Verdict::Drop(_)));
    let again = drain(&mut lb);
    assert_eq!(again.len(), 2);
    assert_eq!(parse(&again[0].0).payload.len(), v2_len() as usize);
}
