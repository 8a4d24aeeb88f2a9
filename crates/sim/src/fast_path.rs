//! The engine behind a simulated fast path: a device-side flow table that
//! takes the engine's [`Offload`]s and forwards the packets of offloaded
//! flows itself with [`fast_path::apply`] (what the XDP program does),
//! before the engine sees them, reporting what it forwarded as the real
//! device does.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rvs_core::fast_path::{self, Applied, FastPathStats, FlowId, FlowReport, FlowRule, Offload};
use rvs_core::{Engine, FlowKey, Instant, Side};

use crate::lb;
use crate::middlebox::{Middlebox, Outbox};
use crate::packet::PacketInfo;

/// How often the device reports what it forwarded (the AF_XDP device's sweep).
pub const REPORT_INTERVAL: Duration = Duration::from_millis(500);

/// One direction of an offloaded flow and its counters.
#[derive(Debug)]
struct Entry {
    flow: FlowId,
    rule: FlowRule,
    packets: u64,
    bytes: u64,
    last_seen: Option<Instant>,
}

/// The device's flow table: what the engine installed, and counters.
#[derive(Debug, Default)]
pub(crate) struct FlowTable {
    /// Entries by the key packets arrive with (ordered: deterministic reports).
    flows: BTreeMap<FlowKey, Entry>,
    /// Real generations whose rules apply.
    live: BTreeSet<u32>,
    /// Counters since the engine last read them.
    stats: FastPathStats,
    /// Reports ready for the engine.
    reports: VecDeque<FlowReport>,
    next_report: Option<Instant>,
    /// Entries the table holds at most; beyond it the flow idle longest
    /// is evicted, as the kernel's LRU map does.
    capacity: Option<usize>,
}

impl FlowTable {
    /// Forward `packet` if it belongs to a live offloaded flow and the
    /// fast path can rewrite it; otherwise it is the engine's.
    fn forward(&mut self, now: Instant, packet: &mut [u8]) -> bool {
        let Some(info) = PacketInfo::parse(packet) else { return false };
        let Some(proto) = info.l4() else { return false };
        let key = FlowKey { proto, src: info.src_endpoint(), dst: info.dst_endpoint() };
        let Some(e) = self.flows.get_mut(&key) else { return false };
        if !self.live.contains(&e.rule.real_gen) {
            return false;
        }
        let len = ip_len(packet);
        match fast_path::apply(&e.rule, packet) {
            Applied::Forwarded => {
                e.packets += 1;
                e.bytes += len;
                e.last_seen = Some(now);
                self.stats.forwarded += 1;
                self.stats.bytes += len;
                true
            }
            Applied::ToEngine => {
                self.stats.to_engine += 1;
                false
            }
        }
    }

    /// Apply a change the engine made.
    pub(crate) fn offload(&mut self, change: &Offload) {
        match *change {
            Offload::Install { flow, rules } => {
                if self.capacity.is_some_and(|c| self.flows.len() + 2 > c) {
                    self.evict();
                }
                self.live.insert(rules[0].real_gen);
                for rule in rules {
                    self.flows.insert(rule.key, Entry { flow, rule, packets: 0, bytes: 0, last_seen: None });
                }
            }
            Offload::Remove { flow, keys } => {
                let gone = keys.map(|k| self.flows.remove(&k));
                self.report(flow, gone, false);
            }
            Offload::RetireReal { real_gen } => {
                self.live.remove(&real_gen);
                let keys: Vec<FlowKey> =
                    self.flows.iter().filter(|(_, e)| e.rule.real_gen == real_gen).map(|(k, _)| *k).collect();
                for key in keys {
                    if let Some(e) = self.flows.remove(&key) {
                        self.report(e.flow, [Some(e), None], false);
                    }
                }
            }
        }
    }

    /// Make room: drop the flow idle longest, and tell the engine.
    fn evict(&mut self) {
        let Some(oldest) = self.flows.values().min_by_key(|e| e.last_seen).map(|e| e.flow) else { return };
        let keys: Vec<FlowKey> =
            self.flows.iter().filter(|(_, e)| e.flow == oldest).map(|(k, _)| *k).collect();
        let mut gone = [None, None];
        for (slot, key) in gone.iter_mut().zip(keys) {
            *slot = self.flows.remove(&key);
        }
        self.report(oldest, gone, true);
    }

    /// A last report of entries leaving the table: always for an eviction,
    /// otherwise if they forwarded anything.
    fn report(&mut self, flow: FlowId, gone: [Option<Entry>; 2], evicted: bool) {
        let mut r = FlowReport {
            flow,
            packets: [0; 2],
            bytes: [0; 2],
            last_seen: None,
            progress: [None; 2],
            evicted,
        };
        for e in gone.into_iter().flatten() {
            let i = usize::from(e.rule.to == Side::Client);
            r.packets[i] += e.packets;
            r.bytes[i] += e.bytes;
            r.last_seen = r.last_seen.max(e.last_seen);
        }
        if evicted || r.packets != [0; 2] {
            self.reports.push_back(r);
        }
    }

    /// The next report due at `now`: every flow's counters since its last,
    /// once per [`REPORT_INTERVAL`].
    pub(crate) fn poll_report(&mut self, now: Instant) -> Option<FlowReport> {
        if self.next_report.is_none_or(|t| t <= now) {
            self.next_report = (!self.flows.is_empty()).then_some(now + REPORT_INTERVAL);
            let mut due: Vec<FlowReport> = Vec::new();
            for e in self.flows.values_mut().filter(|e| e.packets > 0) {
                let at = due.iter().position(|r| r.flow == e.flow).unwrap_or_else(|| {
                    due.push(FlowReport {
                        flow: e.flow,
                        packets: [0; 2],
                        bytes: [0; 2],
                        last_seen: None,
                        progress: [None; 2],
                        evicted: false,
                    });
                    due.len() - 1
                });
                let i = usize::from(e.rule.to == Side::Client);
                let r = &mut due[at];
                r.packets[i] += core::mem::take(&mut e.packets);
                r.bytes[i] += core::mem::take(&mut e.bytes);
                r.last_seen = r.last_seen.max(e.last_seen);
            }
            self.reports.extend(due);
        }
        self.reports.pop_front()
    }

    /// The counters since the last call, if anything happened.
    pub(crate) fn poll_stats(&mut self) -> Option<FastPathStats> {
        (self.stats != FastPathStats::default()).then(|| core::mem::take(&mut self.stats))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_report
    }
}

/// IP bytes of a packet, as the engine counts them.
fn ip_len(packet: &[u8]) -> u64 {
    match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 4 => u64::from(u16::from_be_bytes([packet[2], packet[3]])),
        Some(6) if packet.len() >= 6 => 40 + u64::from(u16::from_be_bytes([packet[4], packet[5]])),
        _ => packet.len() as u64,
    }
}

/// The engine behind a fast path: the simulator's model of the XDP
/// program in front of an AF_XDP worker. Turn the engine's
/// [`EngineConfig::fast_path`](rvs_core::EngineConfig::fast_path) on for it
/// to offer anything.
#[derive(Debug)]
pub struct FastPathLb {
    engine: Engine,
    table: FlowTable,
}

impl FastPathLb {
    /// `engine` with an empty fast path in front of it.
    pub fn new(engine: Engine) -> Self {
        Self { engine, table: FlowTable::default() }
    }

    /// [`Self::new`] with a flow table of `entries` at most (two per
    /// connection), which evicts as the kernel's LRU map does.
    pub fn with_capacity(engine: Engine, entries: usize) -> Self {
        Self { engine, table: FlowTable { capacity: Some(entries), ..FlowTable::default() } }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine, for control-plane changes.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Apply what the engine queued outside a packet or timer (control-plane
    /// changes), as the driver does after applying them.
    fn sync(&mut self) {
        while let Some(change) = self.engine.poll_offload() {
            self.table.offload(&change);
        }
    }

    /// Flow entries installed now (two per connection).
    pub fn installed(&self) -> usize {
        self.table.flows.len()
    }
}

impl Middlebox for FastPathLb {
    fn handle(&mut self, now: Instant, mut packet: Vec<u8>, out: &mut Outbox) {
        self.sync();
        if self.table.forward(now, &mut packet) {
            out.forward(packet);
            return;
        }
        lb::receive(&mut self.engine, Some(&mut self.table), now, packet, out);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [self.engine.poll_timeout(), self.table.poll_timeout()].into_iter().flatten().min()
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        self.sync();
        lb::handle_timeout(&mut self.engine, Some(&mut self.table), now, out);
    }
}
