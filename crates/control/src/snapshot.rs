//! A plain-data picture of one or more engines: what listings and metrics read.
//!
//! The worker thread that owns an engine captures a [`Snapshot`] and sends it
//! to the control thread, so listings never touch the data path's structures.
//! Snapshots of several workers add up with [`Snapshot::merge`]. Addresses are
//! kept as text (`ip:port`, IPv6 as `[ip]:port`) because that is how every
//! consumer (listings, JSON, metric labels) shows them.

use core::time::Duration;

use rvs_core::service::{Real, Service, TrafficCounters};
use rvs_core::{Engine, FastPathCounters, Instant, Proto, ProxyProtocol, TcpState, Timeouts};
use serde::{Deserialize, Serialize};

use crate::health::{ProberSnap, RealHealthSnap, ServiceHealth};

/// Packets and bytes in each direction, and connections made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Connections created.
    pub conns: u64,
    /// Packets from clients toward reals.
    pub pkts_in: u64,
    /// Packets from reals toward clients.
    pub pkts_out: u64,
    /// IP bytes from clients toward reals.
    pub bytes_in: u64,
    /// IP bytes from reals toward clients.
    pub bytes_out: u64,
}

impl Traffic {
    /// Add another worker's counters.
    pub fn add(&mut self, other: &Self) {
        self.conns += other.conns;
        self.pkts_in += other.pkts_in;
        self.pkts_out += other.pkts_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }
}

impl From<&TrafficCounters> for Traffic {
    fn from(c: &TrafficCounters) -> Self {
        Self {
            conns: c.conns,
            pkts_in: c.pkts_in,
            pkts_out: c.pkts_out,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
        }
    }
}

/// A real of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealSnap {
    /// `ip:port`.
    pub endpoint: String,
    /// Share of new connections.
    pub weight: u32,
    /// False while a removed real drains its connections.
    pub in_service: bool,
    /// Connections in ESTABLISHED.
    pub active_conns: u64,
    /// Connections in any other state.
    pub inactive_conns: u64,
    /// Traffic through this real.
    pub traffic: Traffic,
    /// Handshakes with this real: smoothed RTT in microseconds (plain
    /// FullNAT and SYNProxy; none before a sample), SYNProxy's SYN
    /// retransmits and clients moved away.
    #[serde(default)]
    pub handshake: HandshakeSnap,
    /// New connections toward this real dropped because every local port
    /// toward it was in use or resting.
    #[serde(default)]
    pub no_local_port: u64,
    /// What the health checker says of it (set by the control plane).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<RealHealthSnap>,
    /// What the data path saw of this real's answers (passive health checking).
    #[serde(default)]
    pub passive: PassiveSnap,
}

/// What the data path saw of a real's answers, summed over workers: the
/// counters passive health checking reads (see `rvs_core::PassiveCounters`),
/// with SYNProxy's failovers and the handshake RTT beside them so that
/// they are read from one place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PassiveSnap {
    /// Handshakes answered with the real's SYN-ACK.
    pub syn_answered: u64,
    /// SYNs with no SYN-ACK within the real's handshake RTO.
    pub syn_unanswered: u64,
    /// SYNs the real answered with an RST.
    pub syn_refused: u64,
    /// UDP flows that saw a reply.
    pub udp_answered: u64,
    /// UDP flows that expired with no reply.
    pub udp_unanswered: u64,
    /// SYNProxy clients moved away from this real.
    pub failovers: u64,
    /// Smoothed handshake RTT in microseconds (none before a sample).
    pub srtt_us: Option<u64>,
}

impl PassiveSnap {
    /// Add another worker's counters; the RTT is the first worker's that has one.
    pub fn add(&mut self, o: &Self) {
        self.syn_answered += o.syn_answered;
        self.syn_unanswered += o.syn_unanswered;
        self.syn_refused += o.syn_refused;
        self.udp_answered += o.udp_answered;
        self.udp_unanswered += o.udp_unanswered;
        self.failovers += o.failovers;
        self.srtt_us = self.srtt_us.or(o.srtt_us);
    }

    fn capture(r: &Real) -> Self {
        let p = &r.passive;
        Self {
            syn_answered: p.syn_answered,
            syn_unanswered: p.syn_unanswered,
            syn_refused: p.syn_refused,
            udp_answered: p.udp_answered,
            udp_unanswered: p.udp_unanswered,
            failovers: r.handshake.failovers,
            srtt_us: r.handshake.srtt.map(|d| d.as_micros() as u64),
        }
    }
}

/// What SYNProxy learnt from a real's handshakes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeSnap {
    /// Smoothed handshake RTT in microseconds.
    pub srtt_us: Option<u64>,
    /// SYNs sent again after an RTO.
    pub syn_retransmits: u64,
    /// Clients moved to another real because this one did not answer or reset.
    pub failovers: u64,
}

/// SYNProxy counters of the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynproxySnap {
    /// Client SYNs answered with a cookie.
    pub syns_answered: u64,
    /// ACKs with a valid cookie.
    pub cookies_accepted: u64,
    /// Real handshakes completed.
    pub spliced: u64,
    /// SYNs retransmitted toward reals.
    pub syn_retransmits: u64,
    /// Clients moved to another real.
    pub failovers: u64,
    /// Clients reset because no real answered.
    pub gave_up: u64,
    /// Client packets kept while a real's handshake was open.
    pub stored: u64,
    /// Replays sent again because the real showed no sign of them.
    #[serde(default)]
    pub replays_resent: u64,
    /// SYNs a real's TIME_WAIT refused: reset and sent again.
    #[serde(default)]
    pub refused: u64,
    /// Real handshakes open now.
    pub open_handshakes: u64,
}

impl SynproxySnap {
    fn capture(engine: &Engine) -> Self {
        let y = engine.synproxy_stats();
        Self {
            syns_answered: y.syns_answered,
            cookies_accepted: y.cookies_accepted,
            spliced: y.spliced,
            syn_retransmits: y.syn_retransmits,
            failovers: y.failovers,
            gave_up: y.gave_up,
            stored: y.stored,
            replays_resent: y.replays_resent,
            refused: y.refused,
            open_handshakes: engine.open_handshakes() as u64,
        }
    }
}

/// RSTs the engine sent to end connections (see `rvs_core::ResetStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetSnap {
    /// Connections forgotten while open (expired or flushed), reset on both sides.
    pub conns_reset: u64,
    /// RSTs sent to the sides of those connections.
    pub forgotten: u64,
    /// RSTs answering packets of connections the engine does not know.
    pub answered: u64,
    /// Answers not sent: over `reset_rate`.
    pub rate_limited: u64,
    /// RSTs not sent: the queue was full.
    pub queue_full: u64,
}

impl ResetSnap {
    /// Add another worker's counters.
    pub fn add(&mut self, o: &Self) {
        self.conns_reset += o.conns_reset;
        self.forgotten += o.forgotten;
        self.answered += o.answered;
        self.rate_limited += o.rate_limited;
        self.queue_full += o.queue_full;
    }

    fn capture(engine: &Engine) -> Self {
        let r = engine.reset_stats();
        Self {
            conns_reset: engine.stats().conns_reset,
            forgotten: r.forgotten,
            answered: r.answered,
            rate_limited: r.rate_limited,
            queue_full: r.queue_full,
        }
    }
}

/// Client-address delivery counters of the engine (TOA and PROXY protocol).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAddrSnap {
    /// Segments toward reals that carried a TOA option.
    pub toa_inserted: u64,
    /// Segments that should have carried TOA but went without it.
    pub toa_no_room: u64,
    /// PROXY protocol headers sent (one per connection).
    pub proxy_headers: u64,
    /// Headers, or their unacknowledged rest, sent again.
    pub proxy_resent: u64,
    /// Headers the real never acknowledged; the engine stopped resending.
    pub proxy_gave_up: u64,
    /// Connections whose delivery is under way now (header unacknowledged
    /// or TOA still riding along).
    #[serde(default)]
    pub open_deliveries: u64,
}

impl ClientAddrSnap {
    /// Add another worker's counters.
    pub fn add(&mut self, other: &Self) {
        self.toa_inserted += other.toa_inserted;
        self.toa_no_room += other.toa_no_room;
        self.proxy_headers += other.proxy_headers;
        self.proxy_resent += other.proxy_resent;
        self.proxy_gave_up += other.proxy_gave_up;
        self.open_deliveries += other.open_deliveries;
    }

    fn capture(engine: &Engine) -> Self {
        let c = engine.client_addr_stats();
        Self {
            toa_inserted: c.toa_inserted,
            toa_no_room: c.toa_no_room,
            proxy_headers: c.proxy_headers,
            proxy_resent: c.proxy_resent,
            proxy_gave_up: c.proxy_gave_up,
            open_deliveries: engine.open_deliveries() as u64,
        }
    }
}

/// A service with its reals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSnap {
    /// `tcp` or `udp`.
    pub proto: String,
    /// `ip:port`.
    pub vip: String,
    /// Scheduler name as in ipvsadm `-s`.
    pub sched: String,
    /// SYNProxy flag.
    pub synproxy: bool,
    /// TOA flag: the client's address in a TCP option toward the reals.
    #[serde(default)]
    pub toa: bool,
    /// PROXY protocol header toward the reals: `disable`, `v1` or `v2`.
    #[serde(default = "proxy_protocol_disabled")]
    pub proxy_protocol: String,
    /// The service's own idle timeout of an established connection, in
    /// seconds, when it overrides the engine's.
    pub conn_timeout: Option<u64>,
    /// Local addresses, in the order added.
    pub laddrs: Vec<String>,
    /// Traffic through this service.
    pub traffic: Traffic,
    /// Reals, including removed ones still draining.
    pub reals: Vec<RealSnap>,
    /// Its reals' health taken together (set by the control plane).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ServiceHealth>,
}

impl ServiceSnap {
    fn capture(s: &Service) -> Self {
        let c = &s.config;
        Self {
            proto: c.proto.name().to_owned(),
            vip: c.vip.to_string(),
            sched: c.sched.name().to_owned(),
            synproxy: c.synproxy,
            toa: c.toa,
            proxy_protocol: c.proxy_protocol.name().to_owned(),
            conn_timeout: c.timeouts.map(|t| established_timeout(&t, c.proto).as_secs()),
            laddrs: c.laddrs.iter().map(ToString::to_string).collect(),
            traffic: (&s.stats).into(),
            reals: s
                .reals
                .iter()
                .map(|r| RealSnap {
                    endpoint: r.endpoint.to_string(),
                    weight: r.weight,
                    in_service: r.in_service,
                    active_conns: r.active_conns.into(),
                    inactive_conns: r.inactive_conns.into(),
                    traffic: (&r.stats).into(),
                    handshake: HandshakeSnap {
                        srtt_us: r.handshake.srtt.map(|d| d.as_micros() as u64),
                        syn_retransmits: r.handshake.syn_retransmits,
                        failovers: r.handshake.failovers,
                    },
                    no_local_port: r.no_port.dropped,
                    health: None,
                    passive: PassiveSnap::capture(r),
                })
                .collect(),
            health: None,
        }
    }
}

/// The local ports of one (protocol, local address, real).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSnap {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The local address.
    pub laddr: String,
    /// The real, `ip:port`.
    pub real: String,
    /// Ports in the pool.
    pub capacity: u64,
    /// Ports held by connections.
    pub in_use: u64,
    /// Released ports still resting before reuse.
    pub resting: u64,
    /// Ports ready for new connections.
    pub free: u64,
}

/// Engine-wide idle timeouts that `--set` changes, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutSnap {
    /// TCP ESTABLISHED.
    pub tcp: u64,
    /// TCP FIN_WAIT.
    pub tcp_fin: u64,
    /// UDP.
    pub udp: u64,
}

impl From<&Timeouts> for TimeoutSnap {
    fn from(t: &Timeouts) -> Self {
        Self {
            tcp: t.tcp(TcpState::Established).as_secs(),
            tcp_fin: t.tcp(TcpState::FinWait).as_secs(),
            udp: t.udp.as_secs(),
        }
    }
}

/// One connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnSnap {
    /// `tcp` or `udp`.
    pub proto: String,
    /// TCP state name as ipvsadm shows it (`ESTABLISHED`, ...); UDP shows `ESTABLISHED` too.
    pub state: String,
    /// Seconds until the connection expires if idle, from the capture time.
    pub expires_in: u64,
    /// Client `ip:port`.
    pub client: String,
    /// VIP `ip:port`.
    pub vip: String,
    /// Local `ip:port` toward the real.
    pub laddr: String,
    /// Real `ip:port`.
    pub real: String,
}

/// Everything listings and metrics show, from one or more engines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The engine time of the capture (the latest over merged workers), in nanoseconds.
    pub taken_at_nanos: u64,
    /// Services in service, ordered by protocol and VIP.
    pub services: Vec<ServiceSnap>,
    /// Drops by reason label, every reason present (zeros included).
    pub drops: Vec<(String, u64)>,
    /// Live connections.
    pub conn_count: u64,
    /// Connections created since start.
    pub conns_created: u64,
    /// Connections removed since start.
    pub conns_removed: u64,
    /// ICMP errors translated and forwarded.
    pub icmp_forwarded: u64,
    /// Traffic of every service together (not zeroed by `-Z`).
    pub traffic: Traffic,
    /// Local port pools.
    pub pools: Vec<PoolSnap>,
    /// Engine-wide timeouts.
    pub timeouts: TimeoutSnap,
    /// Every connection, when asked for (they can be many).
    pub conns: Option<Vec<ConnSnap>>,
    /// SYNProxy counters.
    #[serde(default)]
    pub synproxy: SynproxySnap,
    /// Client-address delivery counters.
    #[serde(default)]
    pub client_addr: ClientAddrSnap,
    /// RSTs that ended connections.
    #[serde(default)]
    pub resets: ResetSnap,
    /// Each worker's share, in worker order (one entry per merged engine).
    #[serde(default)]
    pub workers: Vec<WorkerSnap>,
    /// The xdp driver's sockets, summed; `None` on the TUN driver.
    #[serde(default)]
    pub sockets: Option<SocketSnap>,
    /// What the xdp driver's programs did with the balancer's frames; set
    /// by the daemon beside the workers' snapshots, `None` on the TUN driver.
    #[serde(default)]
    pub steered: Option<SteerSnap>,
    /// What the XDP fast path did, summed over workers; `None` where it is
    /// off (the TUN driver, `fast_path = false`, or refused by the kernel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_path: Option<FastPathSnap>,
    /// Every health prober (set by the control plane).
    #[serde(default)]
    pub probers: Vec<ProberSnap>,
}

/// What the XDP fast path did with established connections and SYNs. Its
/// packets and bytes are in the services' and reals' traffic too (the
/// engine folds them in); its drops are in [`Snapshot::drops`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FastPathSnap {
    /// Packets the program forwarded itself, both directions.
    pub packets: u64,
    /// IP bytes of those packets.
    pub bytes: u64,
    /// Connections offered to the program.
    pub installed: u64,
    /// Connections taken out of it (closing, expired, removed).
    pub removed: u64,
    /// Connections the program gave back on its own: entries the flow
    /// map's LRU dropped, and `unresolved` ones; they go on through the engine.
    pub evicted: u64,
    /// Of the evicted, those never written: no next hop known yet (or the
    /// map refused them).
    pub unresolved: u64,
    /// Packets of offloaded connections the program sent to the engine
    /// (SYN, FIN, RST, uncommon options, fragments).
    pub to_engine: u64,
    /// SYNs the program answered with a cookie SYN-ACK.
    pub syn_acks: u64,
    /// ACKs with a valid cookie the program passed to the engine.
    pub cookie_acks_passed: u64,
}

impl From<&FastPathCounters> for FastPathSnap {
    /// The engine's counts; the device adds [`unresolved`](Self::unresolved).
    fn from(c: &FastPathCounters) -> Self {
        Self {
            packets: c.forwarded,
            bytes: c.bytes,
            installed: c.installs,
            removed: c.removals,
            evicted: c.evictions,
            unresolved: 0,
            to_engine: c.to_engine,
            syn_acks: c.synacks,
            cookie_acks_passed: c.acks_passed,
        }
    }
}

impl FastPathSnap {
    /// Add another worker's counts.
    pub fn add(&mut self, o: &Self) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.installed += o.installed;
        self.removed += o.removed;
        self.evicted += o.evicted;
        self.unresolved += o.unresolved;
        self.to_engine += o.to_engine;
        self.syn_acks += o.syn_acks;
        self.cookie_acks_passed += o.cookie_acks_passed;
    }
}

/// What the xdp driver's programs did with the balancer's frames, counted
/// for the whole host (not per worker).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteerSnap {
    /// Into the socket of the worker whose queue they arrived on.
    pub direct: u64,
    /// Redirected into another worker's hand-over veth.
    pub handed_over: u64,
    /// Passed to the kernel for want of a socket or device.
    pub passed: u64,
    /// Put into a socket from a hand-over veth.
    pub delivered: u64,
    /// Dropped on a hand-over veth for want of a socket.
    pub dropped: u64,
}

/// What the kernel counted on AF_XDP sockets (`XDP_STATISTICS`), summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketSnap {
    /// Frames the kernel could not copy in (no free frame in the fill ring, or too big).
    pub rx_dropped: u64,
    /// Frames lost because the receive ring was full (the worker fell behind).
    pub rx_ring_full: u64,
    /// Receive descriptors the kernel found invalid.
    pub rx_invalid: u64,
    /// Send descriptors the kernel found invalid.
    pub tx_invalid: u64,
    /// Times the kernel found the fill ring empty.
    pub fill_ring_empty: u64,
}

impl SocketSnap {
    /// Add another socket's or worker's counts.
    pub fn add(&mut self, o: &Self) {
        self.rx_dropped += o.rx_dropped;
        self.rx_ring_full += o.rx_ring_full;
        self.rx_invalid += o.rx_invalid;
        self.tx_invalid += o.tx_invalid;
        self.fill_ring_empty += o.fill_ring_empty;
    }
}

/// One worker's load: how the steering spreads the work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSnap {
    /// Live connections in its table.
    pub conns: u64,
    /// Connections it created.
    pub conns_created: u64,
    /// Packets it forwarded, both directions.
    pub packets: u64,
}

fn proxy_protocol_disabled() -> String {
    ProxyProtocol::Disabled.name().to_owned()
}

impl Snapshot {
    /// Capture `engine` at `now`; `with_conns` adds every connection.
    pub fn capture(engine: &Engine, now: Instant, with_conns: bool) -> Self {
        let mut services: Vec<_> = engine.services().collect();
        services.sort_by_key(|s| (s.config.proto, s.config.vip));
        let services = services.into_iter().map(ServiceSnap::capture).collect();
        let stats = engine.stats();
        let pools = engine
            .pools()
            .iter()
            .map(|(proto, laddr, real, p)| PoolSnap {
                proto: proto.name().to_owned(),
                laddr: laddr.to_string(),
                real: real.to_string(),
                capacity: p.capacity().into(),
                in_use: p.in_use().into(),
                resting: p.resting().into(),
                free: p.free().into(),
            })
            .collect();
        let conns = with_conns.then(|| {
            engine
                .conns()
                .map(|c| ConnSnap {
                    proto: c.proto.name().to_owned(),
                    state: c.state.name().to_owned(),
                    expires_in: c.expires.saturating_since(now).as_secs(),
                    client: c.client.to_string(),
                    vip: c.vip.to_string(),
                    laddr: c.laddr.to_string(),
                    real: c.real.to_string(),
                })
                .collect()
        });
        Self {
            taken_at_nanos: now.as_nanos(),
            services,
            drops: stats.drops.iter().map(|(r, n)| (r.label().to_owned(), n)).collect(),
            conn_count: engine.conn_count() as u64,
            conns_created: stats.conns_created,
            conns_removed: stats.conns_removed,
            icmp_forwarded: stats.icmp_forwarded,
            traffic: (&stats.traffic).into(),
            pools,
            timeouts: (&engine.config().timeouts).into(),
            conns,
            synproxy: SynproxySnap::capture(engine),
            client_addr: ClientAddrSnap::capture(engine),
            resets: ResetSnap::capture(engine),
            workers: vec![WorkerSnap {
                conns: engine.conn_count() as u64,
                conns_created: stats.conns_created,
                packets: stats.traffic.pkts_in + stats.traffic.pkts_out,
            }],
            sockets: None,
            steered: None,
            fast_path: engine.config().fast_path.then(|| FastPathSnap::from(&stats.fast_path)),
            probers: Vec::new(),
        }
    }

    /// Add another worker's snapshot: counters of the same service, real,
    /// pool and drop reason are summed, connections concatenated; settings
    /// (weights, schedulers, timeouts) are taken from `self`, since every
    /// worker applies the same ops.
    pub fn merge(&mut self, other: Self) {
        self.taken_at_nanos = self.taken_at_nanos.max(other.taken_at_nanos);
        for s in other.services {
            match self.services.iter_mut().find(|m| m.proto == s.proto && m.vip == s.vip) {
                Some(m) => {
                    m.traffic.add(&s.traffic);
                    for r in s.reals {
                        match m.reals.iter_mut().find(|x| x.endpoint == r.endpoint) {
                            Some(x) => {
                                x.active_conns += r.active_conns;
                                x.inactive_conns += r.inactive_conns;
                                x.traffic.add(&r.traffic);
                                x.in_service |= r.in_service;
                                x.handshake.syn_retransmits += r.handshake.syn_retransmits;
                                x.handshake.failovers += r.handshake.failovers;
                                x.handshake.srtt_us = x.handshake.srtt_us.or(r.handshake.srtt_us);
                                x.no_local_port += r.no_local_port;
                                x.passive.add(&r.passive);
                            }
                            None => m.reals.push(r),
                        }
                    }
                }
                None => self.services.push(s),
            }
        }
        for (label, n) in other.drops {
            match self.drops.iter_mut().find(|(l, _)| *l == label) {
                Some((_, m)) => *m += n,
                None => self.drops.push((label, n)),
            }
        }
        self.conn_count += other.conn_count;
        self.conns_created += other.conns_created;
        self.conns_removed += other.conns_removed;
        self.icmp_forwarded += other.icmp_forwarded;
        self.traffic.add(&other.traffic);
        let (a, b) = (&mut self.synproxy, other.synproxy);
        a.syns_answered += b.syns_answered;
        a.cookies_accepted += b.cookies_accepted;
        a.spliced += b.spliced;
        a.syn_retransmits += b.syn_retransmits;
        a.failovers += b.failovers;
        a.gave_up += b.gave_up;
        a.stored += b.stored;
        a.replays_resent += b.replays_resent;
        a.refused += b.refused;
        a.open_handshakes += b.open_handshakes;
        self.client_addr.add(&other.client_addr);
        self.resets.add(&other.resets);
        self.workers.extend(other.workers);
        self.sockets = match (self.sockets, other.sockets) {
            (Some(mut a), Some(b)) => {
                a.add(&b);
                Some(a)
            }
            (a, b) => a.or(b),
        };
        self.fast_path = match (self.fast_path, other.fast_path) {
            (Some(mut a), Some(b)) => {
                a.add(&b);
                Some(a)
            }
            (a, b) => a.or(b),
        };
        // Host-wide counts: the same whichever snapshot carries them.
        self.steered = self.steered.or(other.steered);
        for p in other.pools {
            match self.pools.iter_mut().find(|m| m.proto == p.proto && m.laddr == p.laddr && m.real == p.real)
            {
                Some(m) => {
                    m.capacity += p.capacity;
                    m.in_use += p.in_use;
                    m.resting += p.resting;
                    m.free += p.free;
                }
                None => self.pools.push(p),
            }
        }
        self.conns = match (self.conns.take(), other.conns) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            (a, b) => a.or(b),
        };
    }

    /// The service `proto` (`tcp`/`udp`) `vip` (`ip:port`).
    pub fn service(&self, proto: &str, vip: &str) -> Option<&ServiceSnap> {
        self.services.iter().find(|s| s.proto == proto && s.vip == vip)
    }
}

/// The idle timeout of an established connection of `proto` under `t`:
/// ESTABLISHED for TCP, the flow timeout for UDP.
pub(crate) fn established_timeout(t: &Timeouts, proto: Proto) -> Duration {
    match proto {
        Proto::Tcp => t.tcp(TcpState::Established),
        Proto::Udp => t.udp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_core::{Endpoint, EngineConfig, RealConfig, ServiceConfig};

    fn ep(s: &str) -> Endpoint {
        s.parse::<std::net::SocketAddr>().unwrap().into()
    }

    fn engine() -> Engine {
        let mut e = Engine::new(EngineConfig::default(), [3; 32], Instant::ZERO);
        let vip = ep("[2001:db8::1]:443");
        let mut cfg = ServiceConfig::new(Proto::Tcp, vip);
        cfg.laddrs = vec!["2001:db8::100".parse().unwrap()];
        cfg.synproxy = true;
        cfg.toa = true;
        cfg.proxy_protocol = ProxyProtocol::V1;
        e.add_service(cfg).unwrap();
        e.add_real(Proto::Tcp, vip, RealConfig { endpoint: ep("[2001:db8::2]:8443"), weight: 3 }).unwrap();
        let vip4 = ep("10.0.0.1:53");
        e.add_service(ServiceConfig::new(Proto::Udp, vip4)).unwrap();
        e
    }

    #[test]
    fn capture_names_everything() {
        let snap = Snapshot::capture(&engine(), Instant::from_secs(5), true);
        assert_eq!(snap.taken_at_nanos, 5_000_000_000);
        assert_eq!(snap.services.len(), 2);
        let s = snap.service("tcp", "[2001:db8::1]:443").unwrap();
        assert!(s.synproxy);
        assert!(s.toa);
        assert_eq!(s.proxy_protocol, "v1");
        let udp = snap.service("udp", "10.0.0.1:53").unwrap();
        assert_eq!((udp.toa, udp.proxy_protocol.as_str()), (false, "disable"));
        assert_eq!(snap.client_addr, ClientAddrSnap::default());
        assert_eq!(s.sched, "wrr");
        assert_eq!(s.laddrs, ["2001:db8::100"]);
        assert_eq!(s.reals[0].endpoint, "[2001:db8::2]:8443");
        assert_eq!(s.reals[0].weight, 3);
        assert_eq!(snap.drops.len(), rvs_core::DropReason::ALL.len());
        assert_eq!(snap.pools.len(), 1);
        assert_eq!(snap.pools[0].free, snap.pools[0].capacity);
        assert_eq!(snap.timeouts, TimeoutSnap { tcp: 900, tcp_fin: 3, udp: 300 });
        assert_eq!(snap.conns, Some(vec![]));
        assert_eq!(Snapshot::capture(&engine(), Instant::ZERO, false).conns, None);
    }

    #[test]
    fn merge_sums_counters() {
        let mut a = Snapshot::capture(&engine(), Instant::from_secs(1), true);
        let mut b = a.clone();
        b.taken_at_nanos = 7;
        b.services[0].traffic.pkts_in = 5;
        b.services[0].reals[0].active_conns = 2;
        a.services[0].reals[0].passive =
            PassiveSnap { syn_unanswered: 1, failovers: 2, ..Default::default() };
        b.services[0].reals[0].passive = PassiveSnap {
            syn_answered: 3,
            syn_unanswered: 4,
            syn_refused: 5,
            udp_answered: 6,
            udp_unanswered: 7,
            failovers: 8,
            srtt_us: Some(900),
        };
        b.drops[0].1 = 4;
        b.pools[0].in_use = 9;
        b.conn_count = 2;
        a.client_addr.toa_inserted = 1;
        b.client_addr = ClientAddrSnap {
            toa_inserted: 2,
            toa_no_room: 3,
            proxy_headers: 4,
            proxy_resent: 5,
            proxy_gave_up: 6,
            open_deliveries: 7,
        };
        b.conns = Some(vec![ConnSnap {
            proto: "udp".into(),
            state: "ESTABLISHED".into(),
            expires_in: 3,
            client: "1.2.3.4:5".into(),
            vip: "10.0.0.1:53".into(),
            laddr: "10.0.0.2:1025".into(),
            real: "10.0.0.3:53".into(),
        }]);
        let cap = a.pools[0].capacity;
        a.merge(b);
        assert_eq!(a.taken_at_nanos, 1_000_000_000);
        assert_eq!(a.services.len(), 2);
        assert_eq!(a.services[0].traffic.pkts_in, 5);
        assert_eq!(a.services[0].reals[0].active_conns, 2);
        assert_eq!(
            a.services[0].reals[0].passive,
            PassiveSnap {
                syn_answered: 3,
                syn_unanswered: 5,
                syn_refused: 5,
                udp_answered: 6,
                udp_unanswered: 7,
                failovers: 10,
                srtt_us: Some(900),
            }
        );
        assert_eq!(a.drops[0].1, 4);
        assert_eq!(a.pools[0].capacity, 2 * cap);
        assert_eq!(a.pools[0].in_use, 9);
        assert_eq!(a.conn_count, 2);
        assert_eq!(
            a.client_addr,
            ClientAddrSnap {
                toa_inserted: 3,
                toa_no_room: 3,
                proxy_headers: 4,
                proxy_resent: 5,
                proxy_gave_up: 6,
                open_deliveries: 7,
            }
        );
        assert_eq!(a.conns.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn fast_path_counts_only_where_the_engine_offloads() {
        assert_eq!(Snapshot::capture(&engine(), Instant::ZERO, false).fast_path, None);
        let e =
            Engine::new(EngineConfig { fast_path: true, ..EngineConfig::default() }, [3; 32], Instant::ZERO);
        assert_eq!(Snapshot::capture(&e, Instant::ZERO, false).fast_path, Some(FastPathSnap::default()));
    }

    #[test]
    fn fast_path_counts_add_up_where_a_worker_has_them() {
        let mut a = Snapshot::capture(&engine(), Instant::ZERO, false);
        let b = a.clone();
        a.merge(b.clone());
        assert_eq!(a.fast_path, None);
        let one = FastPathSnap { packets: 10, bytes: 1000, installed: 2, syn_acks: 7, ..Default::default() };
        let mut c = b.clone();
        c.fast_path = Some(one);
        a.merge(c.clone());
        a.merge(c);
        let want =
            FastPathSnap { packets: 20, bytes: 2000, installed: 4, syn_acks: 14, ..Default::default() };
        assert_eq!(a.fast_path, Some(want));
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&text).unwrap(), a);
        // Off: not in the JSON at all.
        assert!(!serde_json::to_string(&b).unwrap().contains("fast_path"));
    }

    #[test]
    fn json_round_trips() {
        let snap = Snapshot::capture(&engine(), Instant::ZERO, true);
        let text = serde_json::to_string(&snap).unwrap();
        assert!(text.contains("\"[2001:db8::2]:8443\""));
        assert!(text.contains("\"passive\":{\"syn_answered\":0,"), "{text}");
        assert_eq!(serde_json::from_str::<Snapshot>(&text).unwrap(), snap);
    }

    /// JSON from before the client-address fields still reads, as all off.
    #[test]
    fn json_without_client_address_fields_reads() {
        let snap = Snapshot::capture(&engine(), Instant::ZERO, false);
        let mut v = serde_json::to_value(&snap).unwrap();
        v.as_object_mut().unwrap().remove("client_addr");
        for s in v["services"].as_array_mut().unwrap() {
            let s = s.as_object_mut().unwrap();
            s.remove("toa");
            s.remove("proxy_protocol");
        }
        let back: Snapshot = serde_json::from_value(v).unwrap();
        assert!(back.services.iter().all(|s| !s.toa && s.proxy_protocol == "disable"));
        assert_eq!(back.client_addr, ClientAddrSnap::default());
    }
}
