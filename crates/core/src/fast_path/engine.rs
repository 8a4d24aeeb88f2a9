//! The engine's side of the fast path: which connections are offered and
//! when, the queue of changes toward the device, and what the device's
//! reports add to the engine's counters and timers.
//!
//! The queue is allocated once. An install finding it full is not made
//! (the connection stays in the engine, counted as `queue_full`); a removal
//! is never refused, since a rule left behind would forward packets of a
//! connection the engine forgot, so a burst of removals (a flush, an expiry
//! sweep) may grow it past its first allocation while the driver drains it.

use std::collections::VecDeque;

use super::{FastPathStats, FlowId, FlowProgress, FlowReport, FlowRule, Offload};
use crate::addr::Proto;
use crate::conn::{Conn, ConnId, Handshake};
use crate::engine::Engine;
use crate::service::TrafficCounters;
use crate::tcp_state::{SegmentFlags, Side, TcpState};
use crate::time::Instant;
use rvs_wire::tcp_seq::SeqNumber;

/// Changes queued toward the device at most, for installs: the driver
/// drains the queue after every batch, which installs at most one
/// connection per packet.
const QUEUE: usize = 1024;

/// Where a connection stands with the fast path: in the engine after so
/// many packets forwarded (saturating below the two marks), offered to the
/// device, or taken back for the rest of its life. Two bytes: a connection
/// keeps its 144-byte budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mark(u16);

/// The most packets a connection's mark counts.
pub(super) const MAX_AFTER: u32 = Mark::NEVER.0 as u32 - 1;

impl Mark {
    /// Offered to the device.
    const INSTALLED: Self = Self(u16::MAX);
    /// Taken back: it stays in the engine for the rest of its life.
    const NEVER: Self = Self(u16::MAX - 1);

    /// Packets forwarded by the engine while it was in the engine, if it is.
    fn forwarded(self) -> Option<u16> {
        (self.0 < Self::NEVER.0).then_some(self.0)
    }
}

/// The engine's fast-path state: the queue toward the device and the
/// reals' generations.
#[derive(Debug)]
pub(crate) struct FastPath {
    queue: VecDeque<Offload>,
    /// The generation the next real gets (never 0).
    next_gen: u32,
}

impl FastPath {
    pub(crate) fn new(on: bool) -> Self {
        Self { queue: VecDeque::with_capacity(if on { QUEUE } else { 0 }), next_gen: 1 }
    }

    /// A generation no real of this engine had before (0 is skipped: it
    /// marks an empty live slot).
    pub(crate) fn next_real_gen(&mut self) -> u32 {
        let g = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        g
    }
}

/// Whether a connection may leave the engine: established, with no
/// SYNProxy handshake open, no client-address delivery under way, its
/// real's first answer seen (UDP, and plain TCP's passive wait), not
/// translated between families.
fn eligible(c: &Conn) -> bool {
    let settled = match c.handshake {
        Handshake::None => true,
        Handshake::Spliced { .. } => c.proto == Proto::Tcp,
        Handshake::Waiting { .. } | Handshake::Open(_) => false,
    };
    c.state == TcpState::Established
        && settled
        && c.delivery.is_none()
        && c.client.addr.is_ipv4() == c.real.addr.is_ipv4()
}

/// The two rules of connection `c`, whose real has generation `real_gen`.
fn rules(c: &Conn, decrement_ttl: bool, real_gen: u32) -> [FlowRule; 2] {
    let rule = |from: Side| {
        let (src, dst, to) = match from {
            Side::Client => (c.laddr, c.real, Side::Real),
            Side::Real => (c.vip, c.client, Side::Client),
        };
        let (seq_add, ack_sub, tsval_add, tsecr_sub) = c.xlat.for_packet_from(from);
        let differ = to == Side::Client && c.real_wscale != c.client_wscale;
        FlowRule {
            key: c.key(from),
            src,
            dst,
            to,
            seq_add,
            ack_sub,
            tsval_add,
            tsecr_sub,
            rescale: differ.then_some((c.real_wscale, c.client_wscale)),
            decrement_ttl,
            real_gen,
        }
    };
    [rule(Side::Client), rule(Side::Real)]
}

impl Engine {
    /// After the engine forwarded a packet with `flags` of connection `id`:
    /// offer the connection once it is eligible and has forwarded
    /// `fast_path_after` packets; take it back on a FIN or RST.
    pub(crate) fn after_forward(&mut self, id: ConnId, flags: SegmentFlags) {
        if !self.cfg.fast_path {
            return;
        }
        let Some(c) = self.conns.get_mut(id) else { return };
        if c.fast_path == Mark::INSTALLED && (flags.fin || flags.rst) {
            c.fast_path = Mark::NEVER;
            let keys = [c.client_key(), c.real_key()];
            self.fast.queue.push_back(Offload::Remove { flow: FlowId(id), keys });
            self.count_removal();
        } else if let Some(n) = c.fast_path.forwarded() {
            let n = (n + 1).min(MAX_AFTER as u16);
            c.fast_path = Mark(n);
            // Counted as far as the mark goes: a larger setting waits that long.
            let due = u32::from(n) > self.cfg.fast_path_after || u32::from(n) == MAX_AFTER;
            if due && eligible(c) {
                self.install(id);
            }
        }
    }

    fn install(&mut self, id: ConnId) {
        let Some(c) = self.conns.get(id) else { return };
        let service = self.services.get(c.service as usize).filter(|s| s.in_service);
        let Some(real) = service.and_then(|s| s.reals.get(c.real_index as usize)).filter(|r| r.in_service)
        else {
            return;
        };
        if self.fast.queue.len() >= QUEUE {
            self.stats.fast_path.queue_full += 1;
            return;
        }
        let rules = rules(c, self.cfg.decrement_ttl, real.real_gen);
        self.fast.queue.push_back(Offload::Install { flow: FlowId(id), rules });
        if let Some(c) = self.conns.get_mut(id) {
            c.fast_path = Mark::INSTALLED;
        }
        self.stats.fast_path.installs += 1;
        self.stats.fast_path.offloaded += 1;
    }

    fn count_removal(&mut self) {
        let f = &mut self.stats.fast_path;
        f.removals += 1;
        f.offloaded = f.offloaded.saturating_sub(1);
    }

    /// A connection left the table (expired, flushed, recycled): if it was
    /// offloaded, the device lets go of it.
    pub(crate) fn fast_path_release(&mut self, id: ConnId, conn: &Conn) {
        if conn.fast_path == Mark::INSTALLED {
            let keys = [conn.client_key(), conn.real_key()];
            self.fast.queue.push_back(Offload::Remove { flow: FlowId(id), keys });
            self.count_removal();
        }
    }

    /// Reals `reals` (indices) of service `svc` are gone: their rules stop
    /// at once; their connections carry on through the engine.
    pub(crate) fn retire_reals(&mut self, svc: usize, reals: &[usize]) {
        if !self.cfg.fast_path {
            return;
        }
        let Some(s) = self.services.get(svc) else { return };
        for r in reals.iter().filter_map(|&i| s.reals.get(i)) {
            self.fast.queue.push_back(Offload::RetireReal { real_gen: r.real_gen });
        }
        let gone = |i: u32| reals.contains(&(i as usize));
        let taken: Vec<ConnId> = self
            .conns
            .table()
            .iter()
            .filter(|(_, c)| c.service as usize == svc && gone(c.real_index))
            .filter(|(_, c)| c.fast_path == Mark::INSTALLED)
            .map(|(id, _)| id)
            .collect();
        for id in taken {
            if let Some(c) = self.conns.get_mut(id) {
                c.fast_path = Mark::NEVER;
            }
            self.count_removal();
        }
    }

    /// The next change for the device's flow table, in order. Drain it
    /// after every batch and timeout (the [`io::Driver`](crate::io::Driver) does).
    pub fn poll_offload(&mut self) -> Option<Offload> {
        self.fast.queue.pop_front()
    }

    /// Count what the device forwarded of an offloaded connection as the
    /// engine counts what it forwards itself, and keep the connection as
    /// long as its packets still pass: its idle deadline moves on from the
    /// last one seen. A connection the device evicted carries on through
    /// the engine.
    pub fn fold_flow_report(&mut self, now: Instant, report: &FlowReport) {
        let id = report.flow.0;
        let Some(c) = self.conns.get(id) else { return };
        let (svc, real_index, proto, state, mark) = (c.service, c.real_index, c.proto, c.state, c.fast_path);
        let add = |t: &mut TrafficCounters| {
            t.pkts_in += report.packets[0];
            t.bytes_in += report.bytes[0];
            t.pkts_out += report.packets[1];
            t.bytes_out += report.bytes[1];
        };
        add(&mut self.stats.traffic);
        if let Some(s) = self.services.get_mut(svc as usize) {
            add(&mut s.stats);
            if let Some(r) = s.reals.get_mut(real_index as usize) {
                add(&mut r.stats);
            }
        }
        if proto == Proto::Tcp {
            self.fold_progress(id, &report.progress);
        }
        if let Some(seen) = report.last_seen {
            let expires = seen.min(now) + self.timeout(svc, proto, state);
            if let Some(c) = self.conns.get_mut(id).filter(|c| c.expires < expires) {
                c.expires = expires;
            }
        }
        if report.evicted && mark == Mark::INSTALLED {
            if let Some(c) = self.conns.get_mut(id) {
                c.fast_path = Mark::NEVER;
            }
            self.stats.fast_path.evictions += 1;
            let f = &mut self.stats.fast_path;
            f.offloaded = f.offloaded.saturating_sub(1);
        }
    }

    /// Note the segments the device forwarded of TCP connection `id` as
    /// `forward` (nat.rs) notes its own: the sender's end in the
    /// receiver's numbering, the raw acknowledgement, the TSval toward the
    /// real.
    fn fold_progress(&mut self, id: ConnId, progress: &[Option<FlowProgress>; 2]) {
        let Some(c) = self.conns.get_mut(id) else { return };
        for (side, p) in [Side::Client, Side::Real].into_iter().zip(progress) {
            let Some(p) = p else { continue };
            c.note_progress(side, Some(SeqNumber(p.seq_end)), false, p.ack.map(SeqNumber));
            if let (Side::Client, Some(ts)) = (side, p.tsval) {
                c.progress.tsval_sent(SeqNumber(ts));
            }
        }
    }

    /// Add what the device's program counted (packets, SYN cookies, drops
    /// by the engine's reasons) to the engine's counters.
    pub fn fold_fast_path_stats(&mut self, delta: &FastPathStats) {
        let f = &mut self.stats.fast_path;
        f.forwarded += delta.forwarded;
        f.bytes += delta.bytes;
        f.to_engine += delta.to_engine;
        f.synacks += delta.synacks;
        f.acks_passed += delta.acks_passed;
        f.no_key += delta.no_key;
        self.syn.stats.syns_answered += delta.synacks;
        self.stats.drops.merge(&delta.drops);
    }
}
