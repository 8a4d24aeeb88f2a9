//! Prometheus text exposition (format 0.0.4) of a [`Snapshot`].
//!
//! Every drop reason is exported, zeros included, so a dashboard or alert
//! can name a reason before it ever happens.

use core::fmt::Write as _;

use crate::health::{LATENCY_BUCKETS, RealHealthSnap, ServiceHealth};
use crate::snapshot::{RealSnap, Snapshot, Traffic, WorkerSnap};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family: what a dashboard sees (name, type, help) and where its
/// samples come from. [`FAMILIES`] lists them all, in the order written.
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    /// Whether the family applies to this snapshot at all (the xdp driver's
    /// sockets); a family that applies is written even with no samples.
    applies: fn(&Snapshot) -> bool,
    samples: fn(&Snapshot, &mut Samples<'_>),
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    const fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

const fn always(_: &Snapshot) -> bool {
    true
}

const fn counter(name: &'static str, help: &'static str, samples: fn(&Snapshot, &mut Samples<'_>)) -> Family {
    Family { name, kind: Kind::Counter, help, applies: always, samples }
}

const fn gauge(name: &'static str, help: &'static str, samples: fn(&Snapshot, &mut Samples<'_>)) -> Family {
    Family { name, kind: Kind::Gauge, help, applies: always, samples }
}

/// Every family, in the order written.
const FAMILIES: &[Family] = &[
    counter("rvs_service_connections_total", "Connections created by the service.", |s, f| {
        services(s, f, |t| [(None, t.conns)]);
    }),
    counter("rvs_service_packets_total", "Packets forwarded by the service.", |s, f| {
        services(s, f, |t| directions(t.pkts_in, t.pkts_out));
    }),
    counter("rvs_service_bytes_total", "IP bytes forwarded by the service.", |s, f| {
        services(s, f, |t| directions(t.bytes_in, t.bytes_out));
    }),
    counter("rvs_real_connections_total", "Connections created toward the real.", |s, f| {
        reals(s, f, |r| [(None, Some(r.traffic.conns))]);
    }),
    counter("rvs_real_packets_total", "Packets forwarded to and from the real.", |s, f| {
        reals(s, f, |r| directions(r.traffic.pkts_in, r.traffic.pkts_out).map(|(d, n)| (d, Some(n))));
    }),
    counter("rvs_real_bytes_total", "IP bytes forwarded to and from the real.", |s, f| {
        reals(s, f, |r| directions(r.traffic.bytes_in, r.traffic.bytes_out).map(|(d, n)| (d, Some(n))));
    }),
    gauge("rvs_real_active_connections", "Connections of the real in ESTABLISHED.", |s, f| {
        reals(s, f, |r| [(None, Some(r.active_conns))]);
    }),
    gauge("rvs_real_inactive_connections", "Connections of the real in any other state.", |s, f| {
        reals(s, f, |r| [(None, Some(r.inactive_conns))]);
    }),
    gauge("rvs_real_weight", "Weight of the real; 0 while quiesced or draining.", |s, f| {
        reals(s, f, |r| [(None, Some(if r.in_service { r.weight.into() } else { 0 }))]);
    }),
    counter(
        "rvs_real_syn_retransmits_total",
        "SYNProxy: SYNs sent to the real again after its RTO.",
        |s, f| {
            reals(s, f, |r| [(None, Some(r.handshake.syn_retransmits))]);
        },
    ),
    counter(
        "rvs_real_handshake_failovers_total",
        "SYNProxy: clients moved to another real because this one did not answer or reset.",
        |s, f| reals(s, f, |r| [(None, Some(r.handshake.failovers))]),
    ),
    counter(
        "rvs_real_no_local_port_total",
        "New connections toward the real dropped because every local port toward it was in use or resting.",
        |s, f| reals(s, f, |r| [(None, Some(r.no_local_port))]),
    ),
    gauge(
        "rvs_real_handshake_srtt_microseconds",
        "Smoothed handshake RTT of the real, SYN to SYN-ACK (absent before a sample).",
        |s, f| reals(s, f, |r| [(None, r.handshake.srtt_us)]),
    ),
    counter("rvs_synproxy_events_total", "SYNProxy events, by kind.", |s, f| {
        let y = &s.synproxy;
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
            f.add(&[("event", event)], n);
        }
    }),
    gauge("rvs_synproxy_open_handshakes", "SYNProxy: real handshakes open now.", |s, f| {
        f.add(&[], s.synproxy.open_handshakes);
    }),
    counter(
        "rvs_toa_inserted_total",
        "Segments toward reals that carried the client's address in a TOA option.",
        |s, f| f.add(&[], s.client_addr.toa_inserted),
    ),
    counter(
        "rvs_toa_no_room_total",
        "Segments that should have carried a TOA option but went without it (no option space).",
        |s, f| f.add(&[], s.client_addr.toa_no_room),
    ),
    counter(
        "rvs_proxy_headers_total",
        "PROXY protocol headers sent to reals, one per connection.",
        |s, f| {
            f.add(&[], s.client_addr.proxy_headers);
        },
    ),
    counter(
        "rvs_proxy_headers_resent_total",
        "PROXY protocol headers, or their unacknowledged rest, sent again.",
        |s, f| f.add(&[], s.client_addr.proxy_resent),
    ),
    counter(
        "rvs_proxy_headers_gave_up_total",
        "PROXY protocol headers a real never acknowledged; resending stopped.",
        |s, f| f.add(&[], s.client_addr.proxy_gave_up),
    ),
    gauge(
        "rvs_client_addr_open_deliveries",
        "Connections whose client-address delivery is under way (PROXY header unacknowledged or TOA riding along).",
        |s, f| f.add(&[], s.client_addr.open_deliveries),
    ),
    counter("rvs_drops_total", "Packets dropped, by reason.", |s, f| {
        for (reason, n) in &s.drops {
            f.add(&[("reason", reason)], *n);
        }
    }),
    gauge("rvs_connections", "Connections in the table.", |s, f| f.add(&[], s.conn_count)),
    counter("rvs_connections_created_total", "Connections created.", |s, f| f.add(&[], s.conns_created)),
    counter("rvs_connections_removed_total", "Connections removed.", |s, f| f.add(&[], s.conns_removed)),
    counter("rvs_icmp_forwarded_total", "ICMP errors translated and forwarded.", |s, f| {
        f.add(&[], s.icmp_forwarded);
    }),
    counter(
        "rvs_conns_reset_total",
        "Connections forgotten while open (expired or flushed), reset on both sides.",
        |s, f| f.add(&[], s.resets.conns_reset),
    ),
    counter("rvs_resets_total", "RSTs sent to end connections, by cause.", |s, f| {
        f.add(&[("cause", "forgotten")], s.resets.forgotten);
        f.add(&[("cause", "answered")], s.resets.answered);
    }),
    counter("rvs_resets_not_sent_total", "RSTs not sent, by reason.", |s, f| {
        f.add(&[("reason", "rate_limited")], s.resets.rate_limited);
        f.add(&[("reason", "queue_full")], s.resets.queue_full);
    }),
    gauge("rvs_worker_connections", "Connections in each worker's table.", |s, f| {
        workers(s, f, |w| w.conns);
    }),
    counter("rvs_worker_connections_created_total", "Connections each worker created.", |s, f| {
        workers(s, f, |w| w.conns_created);
    }),
    counter("rvs_worker_packets_total", "Packets each worker forwarded.", |s, f| {
        workers(s, f, |w| w.packets);
    }),
    Family {
        name: "rvs_xdp_socket_drops_total",
        kind: Kind::Counter,
        help: "Frames the kernel lost on the xdp driver's sockets before rvs saw them, by reason.",
        applies: |s| s.sockets.is_some(),
        samples: |s, f| {
            let k = s.sockets.unwrap_or_default();
            for (reason, n) in [
                ("rx_dropped", k.rx_dropped),
                ("rx_ring_full", k.rx_ring_full),
                ("rx_invalid", k.rx_invalid),
                ("tx_invalid", k.tx_invalid),
            ] {
                f.add(&[("reason", reason)], n);
            }
        },
    },
    Family {
        name: "rvs_xdp_fill_ring_empty_total",
        kind: Kind::Counter,
        help: "Times the kernel found a fill ring empty.",
        applies: |s| s.sockets.is_some(),
        samples: |s, f| f.add(&[], s.sockets.unwrap_or_default().fill_ring_empty),
    },
    gauge("rvs_local_ports", "Local ports toward a real, by state.", |s, f| {
        for p in &s.pools {
            for (state, n) in [("in_use", p.in_use), ("resting", p.resting), ("free", p.free)] {
                f.add(&[("proto", &p.proto), ("laddr", &p.laddr), ("real", &p.real), ("state", state)], n);
            }
        }
    }),
    Family {
        name: "rvs_xdp_frames_total",
        kind: Kind::Counter,
        help: "The balancer's frames, by what the XDP programs did with them.",
        applies: |s| s.steered.is_some(),
        samples: |s, f| {
            let c = s.steered.unwrap_or_default();
            for (action, n) in [
                ("direct", c.direct),
                ("handed_over", c.handed_over),
                ("passed", c.passed),
                ("delivered", c.delivered),
                ("dropped", c.dropped),
            ] {
                f.add(&[("action", action)], n);
            }
        },
    },
    Family {
        name: "rvs_fast_path_packets_total",
        kind: Kind::Counter,
        help: "Packets the XDP fast path forwarded itself (also in the services' and reals' counters).",
        applies: |s| s.fast_path.is_some(),
        samples: |s, f| f.add(&[], s.fast_path.unwrap_or_default().packets),
    },
    Family {
        name: "rvs_fast_path_bytes_total",
        kind: Kind::Counter,
        help: "IP bytes the XDP fast path forwarded itself.",
        applies: |s| s.fast_path.is_some(),
        samples: |s, f| f.add(&[], s.fast_path.unwrap_or_default().bytes),
    },
    Family {
        name: "rvs_fast_path_connections_total",
        kind: Kind::Counter,
        help: "Connections and the XDP fast path, by event (evicted and unresolved ones stay in the engine).",
        applies: |s| s.fast_path.is_some(),
        samples: |s, f| {
            let c = s.fast_path.unwrap_or_default();
            for (event, n) in [
                ("installed", c.installed),
                ("removed", c.removed),
                ("evicted", c.evicted),
                ("unresolved", c.unresolved),
            ] {
                f.add(&[("event", event)], n);
            }
        },
    },
    Family {
        name: "rvs_fast_path_to_engine_total",
        kind: Kind::Counter,
        help: "Packets of offloaded connections the XDP program left to the engine (SYN, FIN, RST, uncommon options).",
        applies: |s| s.fast_path.is_some(),
        samples: |s, f| f.add(&[], s.fast_path.unwrap_or_default().to_engine),
    },
    Family {
        name: "rvs_fast_path_syn_cookies_total",
        kind: Kind::Counter,
        help: "SYN cookies in XDP, by event: SYN-ACKs sent, valid cookie ACKs passed to the engine.",
        applies: |s| s.fast_path.is_some(),
        samples: |s, f| {
            let c = s.fast_path.unwrap_or_default();
            f.add(&[("event", "syn_ack_sent")], c.syn_acks);
            f.add(&[("event", "ack_passed")], c.cookie_acks_passed);
        },
    },
    counter(
        "rvs_passive_failures_total",
        "Health: what the data path saw fail toward the real, by kind (passive detection).",
        |s, f| {
            for svc in &s.services {
                for r in &svc.reals {
                    let p = &r.passive;
                    for (kind, n) in [
                        ("syn_unanswered", p.syn_unanswered),
                        ("syn_refused", p.syn_refused),
                        ("udp_unanswered", p.udp_unanswered),
                        ("synproxy_failover", p.failovers),
                    ] {
                        let labels =
                            [("proto", svc.proto.as_str()), ("vip", &svc.vip), ("real", &r.endpoint)];
                        f.add(&[&labels[..], &[("kind", kind)]].concat(), n);
                    }
                }
            }
        },
    ),
    gauge(
        "rvs_real_up",
        "Health: 1 while the real takes new connections by its checks (or is forced up).",
        |s, f| {
            health(s, f, |h| {
                u64::from(h.maintenance == "up" || (h.maintenance == "auto" && h.state != "down"))
            });
        },
    ),
    gauge(
        "rvs_real_weight_percent",
        "Health: share of its weight the real gets now (slow start ramps it; 0 while down).",
        |s, f| health(s, f, |h| h.weight_pct.into()),
    ),
    counter("rvs_health_transitions_total", "Health: state changes of the real.", |s, f| {
        health(s, f, |h| h.transitions);
    }),
    gauge(
        "rvs_service_panic",
        "Health: 1 while too little of the service's weight is up and every real takes new connections.",
        |s, f| service_health(s, f, |h| u64::from(h.panic)),
    ),
    gauge("rvs_service_no_real_up", "Health: 1 while no real of the service is up.", |s, f| {
        service_health(s, f, |h| u64::from(h.no_real_up));
    }),
    counter("rvs_probes_total", "Health: probes made, per prober.", |s, f| {
        for p in &s.probers {
            f.add(&[("probe", &p.probe), ("kind", &p.kind)], p.sent);
        }
    }),
    counter("rvs_probes_failed_total", "Health: probes that failed, per prober.", |s, f| {
        for p in &s.probers {
            f.add(&[("probe", &p.probe), ("kind", &p.kind)], p.failed);
        }
    }),
    gauge("rvs_probers_stuck", "Health: probers whose probe has not finished or started in time.", |s, f| {
        f.add(&[], s.probers.iter().filter(|p| p.stuck).count() as u64);
    }),
    Family {
        name: "rvs_probe_duration_seconds",
        kind: Kind::Histogram,
        help: "Health: how long probes took, per prober.",
        applies: always,
        samples: |s, f| {
            for p in &s.probers {
                f.histogram(&[("probe", &p.probe)], &p.latency_buckets, p.latency_sum);
            }
        },
    },
];

/// One sample per real that has a health view.
fn health(s: &Snapshot, f: &mut Samples<'_>, value: fn(&RealHealthSnap) -> u64) {
    for svc in &s.services {
        for r in svc.reals.iter().filter(|r| r.in_service) {
            let Some(h) = &r.health else { continue };
            f.add(&[("proto", svc.proto.as_str()), ("vip", &svc.vip), ("real", &r.endpoint)], value(h));
        }
    }
}

/// One sample per service that has a health view.
fn service_health(s: &Snapshot, f: &mut Samples<'_>, value: fn(&ServiceHealth) -> u64) {
    for svc in &s.services {
        if let Some(h) = &svc.health {
            f.add(&[("proto", svc.proto.as_str()), ("vip", &svc.vip)], value(h));
        }
    }
}

/// A `direction` label and its two values.
const fn directions(into: u64, out_of: u64) -> [(Option<&'static str>, u64); 2] {
    [(Some("in"), into), (Some("out"), out_of)]
}

/// One sample per service (and `direction`, if given) from its traffic.
fn services<const N: usize>(
    s: &Snapshot,
    f: &mut Samples<'_>,
    values: impl Fn(&Traffic) -> [(Option<&str>, u64); N],
) {
    for svc in &s.services {
        for (direction, n) in values(&svc.traffic) {
            let labels = [("proto", svc.proto.as_str()), ("vip", &svc.vip)];
            with_direction(f, &labels, direction, n);
        }
    }
}

/// One sample per real (and `direction`, if given); `None` values are left out.
fn reals<const N: usize>(
    s: &Snapshot,
    f: &mut Samples<'_>,
    values: impl Fn(&RealSnap) -> [(Option<&str>, Option<u64>); N],
) {
    for svc in &s.services {
        for r in &svc.reals {
            for (direction, n) in values(r) {
                let Some(n) = n else { continue };
                let labels = [("proto", svc.proto.as_str()), ("vip", &svc.vip), ("real", &r.endpoint)];
                with_direction(f, &labels, direction, n);
            }
        }
    }
}

fn with_direction(f: &mut Samples<'_>, labels: &[(&str, &str)], direction: Option<&str>, n: u64) {
    match direction {
        None => f.add(labels, n),
        Some(d) => {
            let mut all: Vec<(&str, &str)> = labels.to_vec();
            all.push(("direction", d));
            f.add(&all, n);
        }
    }
}

/// One sample per worker, labelled with its index.
fn workers(s: &Snapshot, f: &mut Samples<'_>, value: fn(&WorkerSnap) -> u64) {
    for (i, w) in s.workers.iter().enumerate() {
        f.add(&[("worker", &i.to_string())], value(w));
    }
}

/// The samples of one family being written.
struct Samples<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Samples<'_> {
    fn add(&mut self, labels: &[(&str, &str)], value: u64) {
        self.write(self.name, labels, &value.to_string());
    }

    fn write(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.out.push_str(name);
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

impl Samples<'_> {
    /// A histogram's cumulative buckets (bounds [`LATENCY_BUCKETS`], then
    /// `+Inf`), its sum and its count.
    fn histogram(&mut self, labels: &[(&str, &str)], counts: &[u64], sum: f64) {
        let name = self.name;
        let mut total = 0;
        for (i, n) in counts.iter().enumerate() {
            total += n;
            let le = LATENCY_BUCKETS.get(i).map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let mut all = labels.to_vec();
            all.push(("le", &le));
            self.write(&format!("{name}_bucket"), &all, &total.to_string());
        }
        self.write(&format!("{name}_sum"), labels, &sum.to_string());
        self.write(&format!("{name}_count"), labels, &total.to_string());
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

/// The snapshot as Prometheus text: HELP and TYPE once per family, then its samples.
pub fn render(snap: &Snapshot) -> String {
    let mut out = String::new();
    for family in FAMILIES.iter().filter(|f| (f.applies)(snap)) {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.name());
        (family.samples)(snap, &mut Samples { out: &mut out, name: family.name });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::ProberSnap;
    use crate::snapshot::{
        ClientAddrSnap, FastPathSnap, PoolSnap, RealSnap, ResetSnap, ServiceSnap, SocketSnap, SteerSnap,
        TimeoutSnap, WorkerSnap,
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
                    passive: Default::default(),
                    no_local_port: 17,
                    health: Some(RealHealthSnap {
                        state: "slow-start".into(),
                        maintenance: "auto".into(),
                        weight_pct: 40,
                        inhibit_left_ms: None,
                        check: Some("tcp 10.0.1.1:80".into()),
                        last_check: None,
                        reason: "tcp 10.0.1.1:80: passed 2 times in a row".into(),
                        transitions: 25,
                    }),
                }],
                health: Some(ServiceHealth { up_pct: 30, panic: true, no_real_up: false }),
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
            steered: Some(SteerSnap { handed_over: 24, ..SteerSnap::default() }),
            fast_path: Some(FastPathSnap {
                packets: 28,
                bytes: 29,
                installed: 30,
                removed: 31,
                evicted: 32,
                unresolved: 33,
                to_engine: 34,
                syn_acks: 35,
                cookie_acks_passed: 36,
            }),
            probers: vec![ProberSnap {
                probe: "tcp 10.0.1.1:80".into(),
                target: "10.0.1.1:80".into(),
                kind: "tcp".into(),
                up: true,
                sent: 26,
                failed: 27,
                stuck: true,
                last: None,
                latency_buckets: vec![1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 3],
                latency_sum: 2.5,
                reals: 3,
            }],
        }
    }

    /// A sample line parsed back: name, labels, value.
    fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, u64) {
        let (head, value) = line.rsplit_once(' ').unwrap();
        // Counts are whole; a histogram's sum may not be (kept to its whole part).
        let value = value.parse::<u64>().unwrap_or_else(|_| value.parse::<f64>().unwrap() as u64);
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
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(typed.insert(name.to_owned()), "TYPE twice: {line}");
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                assert!(rest.split_once(' ').is_some(), "{line}");
            } else {
                let (name, labels, value) = parse_sample(line);
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                    .unwrap_or(&name);
                assert!(typed.contains(family), "sample before its TYPE: {line}");
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
        assert_eq!(find("rvs_real_up", &[("real", real)]), Some(1));
        assert_eq!(find("rvs_passive_failures_total", &[("kind", "syn_refused")]), Some(0));
        assert_eq!(find("rvs_real_weight_percent", &[("real", real)]), Some(40));
        assert_eq!(find("rvs_health_transitions_total", &[("real", real)]), Some(25));
        assert_eq!(find("rvs_service_panic", &[("vip", "[2001:db8::1]:80")]), Some(1));
        assert_eq!(find("rvs_probes_total", &[("probe", "tcp 10.0.1.1:80")]), Some(26));
        assert_eq!(find("rvs_probes_failed_total", &[("kind", "tcp")]), Some(27));
        assert_eq!(find("rvs_probers_stuck", &[]), Some(1));
        assert_eq!(find("rvs_probe_duration_seconds_bucket", &[("le", "0.001")]), Some(3));
        assert_eq!(find("rvs_probe_duration_seconds_bucket", &[("le", "+Inf")]), Some(6));
        assert_eq!(find("rvs_probe_duration_seconds_count", &[]), Some(6));
        assert_eq!(find("rvs_probe_duration_seconds_sum", &[]), Some(2));
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
        assert_eq!(find("rvs_xdp_frames_total", &[("action", "handed_over")]), Some(24));
        assert_eq!(find("rvs_xdp_frames_total", &[("action", "dropped")]), Some(0));
        assert_eq!(find("rvs_fast_path_packets_total", &[]), Some(28));
        assert_eq!(find("rvs_fast_path_bytes_total", &[]), Some(29));
        for (event, n) in [("installed", 30), ("removed", 31), ("evicted", 32), ("unresolved", 33)] {
            assert_eq!(find("rvs_fast_path_connections_total", &[("event", event)]), Some(n), "{event}");
        }
        assert_eq!(find("rvs_fast_path_to_engine_total", &[]), Some(34));
        assert_eq!(find("rvs_fast_path_syn_cookies_total", &[("event", "syn_ack_sent")]), Some(35));
        assert_eq!(find("rvs_fast_path_syn_cookies_total", &[("event", "ack_passed")]), Some(36));
        assert!(text.ends_with('\n'));
    }

    /// Without the fast path (TUN driver, or off) its families are not written.
    #[test]
    fn fast_path_families_only_where_it_runs() {
        let mut snap = snapshot();
        snap.fast_path = None;
        assert!(!render(&snap).contains("rvs_fast_path_"));
    }
}
