//! Prometheus text exposition (format 0.0.4) of a [`Snapshot`].
//!
//! Every drop reason is exported, zeros included, so a dashboard or alert
//! can name a reason before it ever happens.

use core::fmt::Write as _;

use crate::snapshot::{Snapshot, Traffic};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family being written: HELP and TYPE once, then samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Self { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_into(self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The snapshot as Prometheus text.
pub fn render(snap: &Snapshot) -> String {
    let mut out = String::new();
    let o = &mut out;

    // (proto, vip, real or None, traffic) for services and reals alike.
    let services: Vec<(&str, &str, &Traffic)> =
        snap.services.iter().map(|s| (s.proto.as_str(), s.vip.as_str(), &s.traffic)).collect();
    let reals: Vec<(&str, &str, &crate::snapshot::RealSnap)> = snap
        .services
        .iter()
        .flat_map(|s| s.reals.iter().map(move |r| (s.proto.as_str(), s.vip.as_str(), r)))
        .collect();

    let mut f =
        Family::new(o, "rvs_service_connections_total", "counter", "Connections created by the service.");
    for (p, v, t) in &services {
        f.sample(&[("proto", p), ("vip", v)], t.conns);
    }
    let mut f = Family::new(o, "rvs_service_packets_total", "counter", "Packets forwarded by the service.");
    for (p, v, t) in &services {
        f.sample(&[("proto", p), ("vip", v), ("direction", "in")], t.pkts_in);
        f.sample(&[("proto", p), ("vip", v), ("direction", "out")], t.pkts_out);
    }
    let mut f = Family::new(o, "rvs_service_bytes_total", "counter", "IP bytes forwarded by the service.");
    for (p, v, t) in &services {
        f.sample(&[("proto", p), ("vip", v), ("direction", "in")], t.bytes_in);
        f.sample(&[("proto", p), ("vip", v), ("direction", "out")], t.bytes_out);
    }

    let mut f =
        Family::new(o, "rvs_real_connections_total", "counter", "Connections created toward the real.");
    for (p, v, r) in &reals {
        f.sample(&[("proto", p), ("vip", v), ("real", &r.endpoint)], r.traffic.conns);
    }
    let mut f =
        Family::new(o, "rvs_real_packets_total", "counter", "Packets forwarded to and from the real.");
    for (p, v, r) in &reals {
        let e = r.endpoint.as_str();
        f.sample(&[("proto", p), ("vip", v), ("real", e), ("direction", "in")], r.traffic.pkts_in);
        f.sample(&[("proto", p), ("vip", v), ("real", e), ("direction", "out")], r.traffic.pkts_out);
    }
    let mut f = Family::new(o, "rvs_real_bytes_total", "counter", "IP bytes forwarded to and from the real.");
    for (p, v, r) in &reals {
        let e = r.endpoint.as_str();
        f.sample(&[("proto", p), ("vip", v), ("real", e), ("direction", "in")], r.traffic.bytes_in);
        f.sample(&[("proto", p), ("vip", v), ("real", e), ("direction", "out")], r.traffic.bytes_out);
    }
    let mut f =
        Family::new(o, "rvs_real_active_connections", "gauge", "Connections of the real in ESTABLISHED.");
    for (p, v, r) in &reals {
        f.sample(&[("proto", p), ("vip", v), ("real", &r.endpoint)], r.active_conns);
    }
    let mut f = Family::new(
        o,
        "rvs_real_inactive_connections",
        "gauge",
        "Connections of the real in any other state.",
    );
    for (p, v, r) in &reals {
        f.sample(&[("proto", p), ("vip", v), ("real", &r.endpoint)], r.inactive_conns);
    }
    let mut f =
        Family::new(o, "rvs_real_weight", "gauge", "Weight of the real; 0 while quiesced or draining.");
    for (p, v, r) in &reals {
        let weight = if r.in_service { r.weight.into() } else { 0 };
        f.sample(&[("proto", p), ("vip", v), ("real", &r.endpoint)], weight);
    }

    let mut f = Family::new(
        o,
        "rvs_real_syn_retransmits_total",
        "counter",
        "SYNProxy: SYNs sent to the real again after its RTO.",
    );
    for (p, v, r) in &reals {
        f.sample(&[("proto", p), ("vip", v), ("real", &r.endpoint)], r.handshake.syn_retransmits);
    }
    let mut f = Family::new(
        o,
        "rvs_real_handshake_failovers_total",
        "counter",
        "SYNProxy: clients moved to another real because this one did not answer or reset.",
    );
    for (p, v, r) in &reals {
        f.sample(&[("proto", p), ("vip", v), ("real", &r.endpoint)], r.handshake.failovers);
    }
    let mut f = Family::new(
        o,
        "rvs_real_no_local_port_total",
        "counter",
        "New connections toward the real dropped because every local port toward it was in use or resting.",
    );
    for (p, v, r) in &reals {
        f.sample(&[("proto", p), ("vip", v), ("real", &r.endpoint)], r.no_local_port);
    }
    let mut f = Family::new(
        o,
        "rvs_real_handshake_srtt_microseconds",
        "gauge",
        "SYNProxy: smoothed handshake RTT of the real (absent before a sample).",
    );
    for (p, v, r) in &reals {
        if let Some(us) = r.handshake.srtt_us {
            f.sample(&[("proto", p), ("vip", v), ("real", &r.endpoint)], us);
        }
    }
    let y = &snap.synproxy;
    let mut f = Family::new(o, "rvs_synproxy_events_total", "counter", "SYNProxy events, by kind.");
    for (event, n) in [
        ("syn_answered", y.syns_answered),
        ("cookie_accepted", y.cookies_accepted),
        ("spliced", y.spliced),
        ("syn_retransmitted", y.syn_retransmits),
        ("failover", y.failovers),
        ("gave_up", y.gave_up),
        ("packet_stored", y.stored),
        ("replay_resent", y.replays_resent),
        ("syn_refused", y.refused),
    ] {
        f.sample(&[("event", event)], n);
    }
    Family::new(o, "rvs_synproxy_open_handshakes", "gauge", "SYNProxy: real handshakes open now.")
        .sample(&[], y.open_handshakes);
    let c = &snap.client_addr;
    for (name, help, n) in [
        (
            "rvs_toa_inserted_total",
            "Segments toward reals that carried the client's address in a TOA option.",
            c.toa_inserted,
        ),
        (
            "rvs_toa_no_room_total",
            "Segments that should have carried a TOA option but went without it (no option space).",
            c.toa_no_room,
        ),
        (
            "rvs_proxy_headers_total",
            "PROXY protocol headers sent to reals, one per connection.",
            c.proxy_headers,
        ),
        (
            "rvs_proxy_headers_resent_total",
            "PROXY protocol headers, or their unacknowledged rest, sent again.",
            c.proxy_resent,
        ),
        (
            "rvs_proxy_headers_gave_up_total",
            "PROXY protocol headers a real never acknowledged; resending stopped.",
            c.proxy_gave_up,
        ),
    ] {
        Family::new(o, name, "counter", help).sample(&[], n);
    }
    Family::new(
        o,
        "rvs_client_addr_open_deliveries",
        "gauge",
        "Connections whose client-address delivery is under way (PROXY header unacknowledged or TOA riding along).",
    )
    .sample(&[], c.open_deliveries);
    let mut f = Family::new(o, "rvs_drops_total", "counter", "Packets dropped, by reason.");
    for (reason, n) in &snap.drops {
        f.sample(&[("reason", reason)], *n);
    }
    Family::new(o, "rvs_connections", "gauge", "Connections in the table.").sample(&[], snap.conn_count);
    Family::new(o, "rvs_connections_created_total", "counter", "Connections created.")
        .sample(&[], snap.conns_created);
    Family::new(o, "rvs_connections_removed_total", "counter", "Connections removed.")
        .sample(&[], snap.conns_removed);
    Family::new(o, "rvs_icmp_forwarded_total", "counter", "ICMP errors translated and forwarded.")
        .sample(&[], snap.icmp_forwarded);
    let r = &snap.resets;
    Family::new(
        o,
        "rvs_conns_reset_total",
        "counter",
        "Connections forgotten while open (expired or flushed), reset on both sides.",
    )
    .sample(&[], r.conns_reset);
    let mut f = Family::new(o, "rvs_resets_total", "counter", "RSTs sent to end connections, by cause.");
    f.sample(&[("cause", "forgotten")], r.forgotten);
    f.sample(&[("cause", "answered")], r.answered);
    let mut f = Family::new(o, "rvs_resets_not_sent_total", "counter", "RSTs not sent, by reason.");
    f.sample(&[("reason", "rate_limited")], r.rate_limited);
    f.sample(&[("reason", "queue_full")], r.queue_full);
    let workers: Vec<String> = (0..snap.workers.len()).map(|i| i.to_string()).collect();
    let mut f = Family::new(o, "rvs_worker_connections", "gauge", "Connections in each worker's table.");
    for (w, i) in snap.workers.iter().zip(&workers) {
        f.sample(&[("worker", i)], w.conns);
    }
    let mut f =
        Family::new(o, "rvs_worker_connections_created_total", "counter", "Connections each worker created.");
    for (w, i) in snap.workers.iter().zip(&workers) {
        f.sample(&[("worker", i)], w.conns_created);
    }
    let mut f = Family::new(o, "rvs_worker_packets_total", "counter", "Packets each worker forwarded.");
    for (w, i) in snap.workers.iter().zip(&workers) {
        f.sample(&[("worker", i)], w.packets);
    }
    if let Some(k) = &snap.sockets {
        let mut f = Family::new(
            o,
            "rvs_xdp_socket_drops_total",
            "counter",
            "Frames the kernel lost on the xdp driver's sockets before rvs saw them, by reason.",
        );
        for (reason, n) in [
            ("rx_dropped", k.rx_dropped),
            ("rx_ring_full", k.rx_ring_full),
            ("rx_invalid", k.rx_invalid),
            ("tx_invalid", k.tx_invalid),
        ] {
            f.sample(&[("reason", reason)], n);
        }
        Family::new(
            o,
            "rvs_xdp_fill_ring_empty_total",
            "counter",
            "Times the kernel found a fill ring empty.",
        )
        .sample(&[], k.fill_ring_empty);
    }

    let mut f = Family::new(o, "rvs_local_ports", "gauge", "Local ports toward a real, by state.");
    for p in &snap.pools {
        for (state, n) in [("in_use", p.in_use), ("resting", p.resting), ("free", p.free)] {
            f.sample(&[("proto", &p.proto), ("laddr", &p.laddr), ("real", &p.real), ("state", state)], n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{
        ClientAddrSnap, PoolSnap, RealSnap, ResetSnap, ServiceSnap, SocketSnap, TimeoutSnap, WorkerSnap,
    };
    use std::collections::{BTreeMap, HashSet};

    fn snapshot() -> Snapshot {
        Snapshot {
            taken_at_nanos: 1,
            services: vec![ServiceSnap {
                proto: "tcp".into(),
                vip: "[2001:db8::1]:80".into(),
                sched: "wrr".into(),
                synproxy: false,
                toa: true,
                proxy_protocol: "v2".into(),
                conn_timeout: None,
                laddrs: vec!["2001:db8::100".into()],
                traffic: Traffic { conns: 3, pkts_in: 10, pkts_out: 9, bytes_in: 1000, bytes_out: 900 },
                reals: vec![RealSnap {
                    // Not an address the engine makes; checks escaping.
                    endpoint: "odd\\\"real\"\nname".into(),
                    weight: 4,
                    in_service: true,
                    active_conns: 2,
                    inactive_conns: 1,
                    traffic: Traffic { conns: 3, pkts_in: 10, pkts_out: 9, bytes_in: 1000, bytes_out: 900 },
                    handshake: Default::default(),
                    no_local_port: 17,
                }],
            }],
            drops: rvs_core::DropReason::ALL.iter().map(|r| (r.label().to_owned(), 0)).collect(),
            conn_count: 3,
            conns_created: 5,
            conns_removed: 2,
            icmp_forwarded: 0,
            traffic: Traffic::default(),
            pools: vec![PoolSnap {
                proto: "tcp".into(),
                laddr: "2001:db8::100".into(),
                real: "[2001:db8::2]:80".into(),
                capacity: 100,
                in_use: 3,
                resting: 7,
                free: 90,
            }],
            timeouts: TimeoutSnap::default(),
            conns: None,
            synproxy: Default::default(),
            client_addr: ClientAddrSnap {
                toa_inserted: 11,
                toa_no_room: 12,
                proxy_headers: 13,
                proxy_resent: 14,
                proxy_gave_up: 15,
                open_deliveries: 16,
            },
            resets: ResetSnap {
                conns_reset: 18,
                forgotten: 19,
                answered: 20,
                rate_limited: 22,
                queue_full: 23,
            },
            workers: vec![
                WorkerSnap { conns: 1, conns_created: 2, packets: 10 },
                WorkerSnap { conns: 2, conns_created: 3, packets: 9 },
            ],
            sockets: Some(SocketSnap { rx_ring_full: 21, ..SocketSnap::default() }),
        }
    }

    /// A sample line parsed back: name, labels, value.
    fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, u64) {
        let (head, value) = line.rsplit_once(' ').unwrap();
        let value = value.parse().unwrap();
        let Some((name, rest)) = head.split_once('{') else {
            return (head.to_owned(), BTreeMap::new(), value);
        };
        let body = rest.strip_suffix('}').unwrap();
        let mut labels = BTreeMap::new();
        let mut chars = body.chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'));
            let mut v = String::new();
            loop {
                match chars.next().unwrap() {
                    '\\' => match chars.next().unwrap() {
                        'n' => v.push('\n'),
                        c @ ('\\' | '"') => v.push(c),
                        c => panic!("bad escape \\{c}"),
                    },
                    '"' => break,
                    '\n' => panic!("raw newline in label"),
                    c => v.push(c),
                }
            }
            labels.insert(key, v);
            if chars.peek() == Some(&',') {
                chars.next();
            }
        }
        (name.to_owned(), labels, value)
    }

    #[test]
    fn exposition_parses_back() {
        let text = render(&snapshot());
        let mut typed = HashSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                assert!(typed.insert(name.to_owned()), "TYPE twice: {line}");
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                assert!(rest.split_once(' ').is_some(), "{line}");
            } else {
                let (name, labels, value) = parse_sample(line);
                assert!(typed.contains(&name), "sample before its TYPE: {line}");
                assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
                samples.push((name, labels, value));
            }
        }
        let find = |name: &str, want: &[(&str, &str)]| {
            samples
                .iter()
                .find(|(n, l, _)| {
                    n == name && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
                })
                .map(|s| s.2)
        };
        assert_eq!(
            find("rvs_service_connections_total", &[("proto", "tcp"), ("vip", "[2001:db8::1]:80")]),
            Some(3)
        );
        assert_eq!(find("rvs_service_packets_total", &[("direction", "out")]), Some(9));
        assert_eq!(find("rvs_service_bytes_total", &[("direction", "in")]), Some(1000));
        let real = "odd\\\"real\"\nname";
        assert_eq!(find("rvs_real_active_connections", &[("real", real)]), Some(2));
        assert_eq!(find("rvs_real_inactive_connections", &[("real", real)]), Some(1));
        assert_eq!(find("rvs_real_weight", &[("real", real)]), Some(4));
        assert_eq!(find("rvs_real_bytes_total", &[("real", real), ("direction", "out")]), Some(900));
        for r in rvs_core::DropReason::ALL {
            assert_eq!(find("rvs_drops_total", &[("reason", r.label())]), Some(0), "{r}");
        }
        assert_eq!(find("rvs_connections", &[]), Some(3));
        assert_eq!(find("rvs_connections_created_total", &[]), Some(5));
        assert_eq!(find("rvs_local_ports", &[("state", "resting"), ("laddr", "2001:db8::100")]), Some(7));
        assert_eq!(find("rvs_local_ports", &[("state", "free")]), Some(90));
        for (name, want) in [
            ("rvs_toa_inserted_total", 11),
            ("rvs_toa_no_room_total", 12),
            ("rvs_proxy_headers_total", 13),
            ("rvs_proxy_headers_resent_total", 14),
            ("rvs_proxy_headers_gave_up_total", 15),
        ] {
            assert_eq!(find(name, &[]), Some(want), "{name}");
            assert!(text.contains(&format!("# TYPE {name} counter\n")), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
        assert_eq!(find("rvs_client_addr_open_deliveries", &[]), Some(16));
        assert_eq!(find("rvs_real_no_local_port_total", &[("real", real)]), Some(17));
        assert_eq!(find("rvs_conns_reset_total", &[]), Some(18));
        assert_eq!(find("rvs_resets_total", &[("cause", "forgotten")]), Some(19));
        assert_eq!(find("rvs_resets_total", &[("cause", "answered")]), Some(20));
        assert_eq!(find("rvs_resets_not_sent_total", &[("reason", "rate_limited")]), Some(22));
        assert_eq!(find("rvs_resets_not_sent_total", &[("reason", "queue_full")]), Some(23));
        assert_eq!(find("rvs_worker_connections", &[("worker", "1")]), Some(2));
        assert_eq!(find("rvs_worker_connections_created_total", &[("worker", "0")]), Some(2));
        assert_eq!(find("rvs_worker_packets_total", &[("worker", "1")]), Some(9));
        assert_eq!(find("rvs_xdp_socket_drops_total", &[("reason", "rx_ring_full")]), Some(21));
        assert_eq!(find("rvs_xdp_socket_drops_total", &[("reason", "rx_dropped")]), Some(0));
        assert!(text.ends_with('\n'));
    }
}
