//! The engine: one worker's connection table, services and port pools, and
//! the two ways in: packets ([`Engine::handle`]) and time
//! ([`Engine::handle_timeout`]). The control plane changes services through
//! the `add_*`/`edit_*`/`remove_*` methods below; packet logic is in
//! `nat.rs` and `icmp.rs`.

mod control;
mod health;
mod synproxy;

use core::hash::BuildHasherDefault;
use core::time::Duration;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use siphasher::sip::SipHasher13;

use crate::addr::{Endpoint, FlowKey, Proto};
use crate::client_addr::{ClientAddrState, ClientAddrStats};
use crate::config::{EngineConfig, Timeouts};
use crate::conn::{Conn, ConnId, ConnTable, Connections, Handshake, on_transition};
use crate::drop::{DropCounters, DropReason};
use crate::emit::reset::{Reset, ResetStats, Resets};
use crate::emit::store::PacketStore;
use crate::fast_path::{FastPath, FastPathCounters};
use crate::hash::Secrets;
use crate::laddr::{LocalPools, PoolId};
use crate::real_clock::RealClock;
use crate::service::{PassiveCounters, Service, TrafficCounters, real_mut};
use crate::synproxy::{SynproxyState, SynproxyStats};
use crate::tcp_state::{Side, TcpState};
use crate::time::Instant;

/// Domain of [`Secrets::derive`] for the key of the local ports' order.
const DRAW_POOLS: u8 = 4;

/// Control-plane maps hash with fixed keys: deterministic, and no packet
/// chooses their keys.
pub(crate) type FixedMap<K, V> = HashMap<K, V, BuildHasherDefault<SipHasher13>>;

/// What the driver does with a packet after [`Engine::handle`].
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The packet was rewritten in place; send it toward `to`.
    Forward {
        /// The side the packet now travels to (its destination address says where exactly).
        to: Side,
    },
    /// The packet is dropped for this reason (already counted).
    Drop(DropReason),
    /// SYNProxy answered or kept the packet; what to send comes out of
    /// [`Engine::poll_transmit`].
    Absorbed,
}

/// Something the driver should tell the operator ([`Engine::poll_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// New connections of the service at (`proto`, `vip`) found every local
    /// port toward `real` in use or resting and were dropped
    /// (`no_local_port`): `dropped` of them since the last such event for
    /// this real, which comes at most every [`Engine::EVENT_INTERVAL`].
    PortsExhausted {
        /// The service's protocol.
        proto: Proto,
        /// The service's VIP and port.
        vip: Endpoint,
        /// The real the connections were for.
        real: Endpoint,
        /// Connections dropped since the last event.
        dropped: u64,
    },
}

/// A rejected control-plane change. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `add` of a service that exists.
    #[error("service {0} {1} already exists")]
    ServiceExists(&'static str, Endpoint),
    /// The service named does not exist.
    #[error("no service {0} {1}")]
    NoSuchService(&'static str, Endpoint),
    /// `add` of a real that the service has.
    #[error("real {0} already exists in the service")]
    RealExists(Endpoint),
    /// The real named is not in the service.
    #[error("no real {0} in the service")]
    NoSuchReal(Endpoint),
    /// `add` of a local address the service has.
    #[error("local address {0} already exists in the service")]
    LaddrExists(IpAddr),
    /// The local address is not in the service.
    #[error("no local address {0} in the service")]
    NoSuchLaddr(IpAddr),
    /// A real or local address of the other family than the service's
    /// reals and local addresses (its VIP may be of either: NAT64, NAT46).
    #[error("address family of {0} does not match the service's other reals and local addresses")]
    FamilyMismatch(IpAddr),
    /// Port 0 or another value no packet can carry.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Engine-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Drops by reason.
    pub drops: DropCounters,
    /// Connections created.
    pub conns_created: u64,
    /// Connections removed (expired, reset, recycled or flushed).
    pub conns_removed: u64,
    /// Connections forgotten while still open (expired or flushed), whose
    /// sides were sent RSTs.
    pub conns_reset: u64,
    /// ICMP errors translated and forwarded.
    pub icmp_forwarded: u64,
    /// Handshakes and UDP flows any real left unanswered or refused (the
    /// sum of every real's passive failures): a driver that sees it grow
    /// wakes the health checker at once instead of at its next poll.
    pub passive_failures: u64,
    /// Traffic of every service together (the fast path's included).
    pub traffic: TrafficCounters,
    /// The device's fast path: connections offloaded, what it forwarded.
    pub fast_path: FastPathCounters,
}

/// One worker's FullNAT engine. See the crate documentation.
#[derive(Debug)]
pub struct Engine {
    pub(crate) cfg: EngineConfig,
    /// The connection table, local port pools and clocks toward reals.
    pub(crate) conns: Connections,
    pub(crate) services: Vec<Service>,
    pub(crate) by_vip: FixedMap<(Proto, Endpoint), u32>,
    /// VIP addresses with how many services use each (to tell `NoService` from `NotForUs`).
    pub(crate) vip_addrs: FixedMap<IpAddr, u32>,
    /// Local addresses with how many services use each.
    pub(crate) laddr_refs: FixedMap<IpAddr, u32>,
    pub(crate) stats: Stats,
    /// The latest time the driver handed in; control-plane changes (which
    /// carry no time) start port-pool epochs from it.
    pub(crate) last_now: Instant,
    /// SYNProxy: cookie keys, open real-side handshakes.
    pub(crate) syn: SynproxyState,
    /// Client-address delivery (TOA, PROXY protocol) still under way.
    pub(crate) deliveries: ClientAddrState,
    /// Packets kept for replay and packets built, until the driver takes them.
    pub(crate) store: PacketStore,
    /// RSTs owed to connections forgotten while open, and answers to packets of no connection.
    pub(crate) resets: Resets,
    /// What the driver should tell the operator.
    events: VecDeque<Event>,
    /// Changes toward the device's fast path; the reals' generations.
    pub(crate) fast: FastPath,
}

impl Engine {
    /// An engine with no services. `seed` keys every hash and random draw
    /// (the driver takes it from the OS; tests fix it).
    pub fn new(cfg: EngineConfig, seed: [u8; 32], now: Instant) -> Self {
        let secrets = Secrets::from_seed(seed);
        let syn = SynproxyState::new(&secrets, &cfg.synproxy);
        let zero = Endpoint::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
        let pools_key = |i| secrets.derive(DRAW_POOLS, Proto::Tcp, zero, zero, i);
        let pools =
            LocalPools::new(cfg.port_range, cfg.worker, cfg.port_quarantine, (pools_key(0), pools_key(1)));
        let clock = RealClock::new(secrets.clone());
        let resets = Resets::new(cfg.reset_rate, now);
        let table = ConnTable::new(secrets, cfg.max_conns, cfg.prealloc_conns, now);
        let conns = Connections::new(table, pools, clock, cfg.port_quarantine);
        let cfg_fast_path = cfg.fast_path;
        Self {
            cfg,
            conns,
            services: Vec::new(),
            by_vip: FixedMap::default(),
            vip_addrs: FixedMap::default(),
            laddr_refs: FixedMap::default(),
            stats: Stats::default(),
            last_now: now,
            syn,
            deliveries: ClientAddrState::default(),
            store: PacketStore::new(crate::emit::store::SLOTS),
            resets,
            events: VecDeque::new(),
            fast: FastPath::new(cfg_fast_path),
        }
    }

    /// At most one [`Event::PortsExhausted`] per real in this time.
    pub const EVENT_INTERVAL: Duration = Duration::from_secs(10);

    /// The configuration this engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Engine-wide counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Count a drop the driver made after [`Self::handle`] (a failed
    /// transmit, an injected fault), so every drop shows in one place.
    pub fn count_drop(&mut self, reason: DropReason) {
        self.stats.drops.add(reason);
    }

    /// Zero the traffic and passive health counters of every service and
    /// real (`ipvsadm -Z`); drop counters and connection totals stay, as
    /// they are monotonic metrics.
    pub fn zero_counters(&mut self) {
        for s in &mut self.services {
            s.stats = TrafficCounters::default();
            for r in &mut s.reals {
                r.stats = TrafficCounters::default();
                r.passive = PassiveCounters::default();
            }
        }
    }

    /// Live connections.
    pub fn conn_count(&self) -> usize {
        self.conns.table().len()
    }

    /// Every live connection.
    pub fn conns(&self) -> impl Iterator<Item = &Conn> + '_ {
        self.conns.table().iter().map(|(_, c)| c)
    }

    /// Every service in service (removed ones still draining are skipped).
    pub fn services(&self) -> impl Iterator<Item = &Service> + '_ {
        self.services.iter().filter(|s| s.in_service)
    }

    /// The service at (proto, VIP:port).
    pub fn service(&self, proto: Proto, vip: Endpoint) -> Option<&Service> {
        self.by_vip.get(&(proto, vip)).map(|&i| &self.services[i as usize])
    }

    /// Whether `addr` is a local address (LIP) of some service: packets to it
    /// come from reals. Drivers use it to tell the two links apart.
    pub fn is_laddr(&self, addr: IpAddr) -> bool {
        self.laddr_refs.contains_key(&addr)
    }

    /// Port pools, for listings and metrics.
    pub fn pools(&self) -> &LocalPools {
        self.conns.pools()
    }

    /// When [`Self::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.conns.poll_timeout(), self.syn.poll_timeout(), self.deliveries.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next packet the engine built itself (SYNProxy's SYN-ACKs, SYNs,
    /// ACKs and RSTs, and client packets it kept and now replays), copied
    /// into `buf`; its length and the side it goes to. Call until `None`
    /// after every batch and timeout.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(usize, Side)> {
        loop {
            match self.store.pop_tx(buf) {
                Some(Some(out)) => return Some(out),
                Some(None) => self.stats.drops.add(DropReason::TxFailed),
                None => return self.resets.pop(buf, self.cfg.synproxy.ttl),
            }
        }
    }

    /// The next thing the operator should be told, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// What became of the RSTs the engine meant to send.
    pub fn reset_stats(&self) -> ResetStats {
        self.resets.stats
    }

    /// SYNProxy counters.
    pub fn synproxy_stats(&self) -> SynproxyStats {
        self.syn.stats
    }

    /// Client-address delivery (TOA, PROXY protocol) counters.
    pub fn client_addr_stats(&self) -> ClientAddrStats {
        self.deliveries.stats
    }

    /// Packet slots allocated (each 2 KiB) for kept and built packets; the
    /// store grows only as far as they need at once.
    pub fn packet_slots(&self) -> usize {
        self.store.allocated()
    }

    /// Connections whose client-address delivery (PROXY header not yet
    /// acknowledged, TOA still riding along) is under way.
    pub fn open_deliveries(&self) -> usize {
        self.deliveries.open()
    }

    /// Real-side handshakes SYNProxy has open.
    pub fn open_handshakes(&self) -> usize {
        self.syn.open()
    }

    /// Expire idle connections; retransmit SYNs toward reals.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        self.synproxy_timeouts(now);
        let (_, deliveries, mut ctx) = self.split();
        deliveries.handle_timeout(&mut ctx, now);
        let (services, timeouts) = (&mut self.services, &self.cfg.timeouts);
        let failures = &mut self.stats.passive_failures;
        let mut expired =
            self.conns.expire(now, |c| crate::passive::on_due(c, services, timeouts, now, failures));
        for (id, conn) in expired.drain(..) {
            self.release(now, id, &conn, false);
        }
        self.conns.recycle(expired);
        self.conns.handle_timeout(now);
    }

    /// Give back what a connection that left the table holds: its local
    /// port and its real's count; unless it only `moves` to another real,
    /// also its SYNProxy handshake and client-address delivery, and if it
    /// was still open, each side gets an RST.
    pub(crate) fn release(&mut self, now: Instant, id: ConnId, conn: &Conn, moves: bool) {
        self.fast_path_release(id, conn);
        if !moves {
            if let Handshake::Open(hid) = conn.handshake {
                self.syn.forget(hid, &mut self.store);
            }
            self.deliveries.close(conn.delivery);
            self.reset_if_open(conn);
        }
        let real = real_mut(&mut self.services, conn.service, conn.real_index);
        self.conns.release(now, conn, real);
        self.stats.conns_removed += 1;
    }

    /// Insert a connection placed on `pool` and count it toward its real;
    /// an entry that made way for it is released first.
    pub(crate) fn admit(&mut self, now: Instant, conn: Conn, pool: PoolId) -> Result<ConnId, DropReason> {
        let (svc, real_index, state) = (conn.service, conn.real_index, conn.state);
        let (id, gone) = self.conns.insert(now, conn, pool)?;
        if let Some((gone_id, gone)) = gone {
            self.release(now, gone_id, &gone, false);
        }
        if let Some(real) = real_mut(&mut self.services, svc, real_index) {
            on_transition(real, None, Some(state));
            real.stats.conns += 1;
        }
        Ok(id)
    }

    /// [`Self::admit`] a new connection, counted in its service's and the engine's totals.
    pub(crate) fn insert_conn(
        &mut self,
        now: Instant,
        conn: Conn,
        pool: PoolId,
    ) -> Result<ConnId, DropReason> {
        let svc = conn.service;
        let id = self.admit(now, conn, pool)?;
        if let Some(s) = self.services.get_mut(svc as usize) {
            s.stats.conns += 1;
        }
        self.stats.traffic.conns += 1;
        self.stats.conns_created += 1;
        Ok(id)
    }

    /// Send each side of a TCP connection that is still open, now being
    /// forgotten, an RST with the sequence number it expects next (as far
    /// as the engine saw; a side that is further on answers with a
    /// challenge ACK, which [`Self::answer_unknown`] resets exactly).
    fn reset_if_open(&mut self, conn: &Conn) {
        let open = matches!(conn.state, TcpState::Established | TcpState::FinWait | TcpState::CloseWait);
        if conn.proto != Proto::Tcp || !open {
            return;
        }
        self.stats.conns_reset += 1;
        let p = conn.progress;
        if let Some(seq) = p.end(Side::Client) {
            self.resets.forgotten(Reset { src: conn.laddr, dst: conn.real, seq, to: Side::Real });
        }
        if let Some(seq) = p.end(Side::Real) {
            self.resets.forgotten(Reset { src: conn.vip, dst: conn.client, seq, to: Side::Client });
        }
    }

    /// Answer a TCP segment of no connection (`seg`, from `key.src` on
    /// `side`) with an RST, as far as the rate allows.
    pub(crate) fn answer_unknown(&mut self, now: Instant, key: &FlowKey, seg: &[u8], side: Side) {
        if key.proto != Proto::Tcp {
            return;
        }
        if let Some(rst) = crate::emit::reset::answer_to(key.src, key.dst, seg, side) {
            self.resets.answer(now, rst);
        }
    }

    /// Count a connection toward service `svc`'s real `real_index` that
    /// found no free local port, and tell the operator, at most every
    /// [`Self::EVENT_INTERVAL`] per real.
    pub(crate) fn ports_exhausted(&mut self, now: Instant, svc: u32, real_index: usize) {
        let Some(s) = self.services.get_mut(svc as usize) else { return };
        let (proto, vip) = (s.config.proto, s.config.vip);
        let Some(r) = s.reals.get_mut(real_index) else { return };
        let n = &mut r.no_port;
        n.dropped += 1;
        n.untold += 1;
        if n.told_at.is_some_and(|t| now.saturating_since(t) < Self::EVENT_INTERVAL) {
            return;
        }
        let event = Event::PortsExhausted { proto, vip, real: r.endpoint, dropped: n.untold };
        n.told_at = Some(now);
        n.untold = 0;
        // A driver that never polls must not make this grow without bound.
        if self.events.len() < 1024 {
            self.events.push_back(event);
        }
    }

    /// Remove a connection now (recycling, flushing).
    pub(crate) fn remove_conn(&mut self, now: Instant, id: ConnId) {
        if let Some(conn) = self.conns.remove(id) {
            self.release(now, id, &conn, false);
        }
    }

    /// Remove every connection; those still open get an RST on both sides
    /// (ipvsadm has no such verb; the daemon uses it on shutdown and tests on reset).
    pub fn flush_conns(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.conns.table().iter().map(|(id, _)| id).collect();
        for id in ids {
            self.remove_conn(now, id);
        }
    }

    /// The idle timeout of a connection in `state`.
    pub(crate) fn timeout(&self, service: u32, proto: Proto, state: TcpState) -> Duration {
        crate::service::idle_timeout(&self.services, &self.cfg.timeouts, service, proto, state)
    }

    /// Set the engine-wide default timeouts (`ipvsadm --set`).
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.cfg.timeouts = timeouts;
    }
}
