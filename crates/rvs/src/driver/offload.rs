//! The connections one worker has in the XDP program's flow map, and the
//! sweep that reads their counters back for the engine.
//!
//! The program counts packets, bytes and the time of the last packet in
//! each direction's entry. About every [`SWEEP_INTERVAL`] the worker reads
//! every entry of its own connections, a bounded number per turn of its
//! loop so a large table never holds the data path, and reports what
//! changed since the last read. An entry gone from the map without the
//! engine asking (the LRU evicted it) takes its other direction out too: the
//! connection goes on through the engine, and the report says so. A removed
//! connection gets a last read first, so nothing it forwarded is lost.
//!
//! [`Offloaded`] is that bookkeeping, over any map ([`Entries`]);
//! [`FastPath`] puts it on the program's maps and applies the engine's
//! changes ([`Offload`]). A connection whose next hop is not known yet is
//! not installed and is reported evicted at once, so the engine keeps it.
//!
//! Bookkeeping is allocated per connection (on install), never per packet.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use rvs_core::{DropReason, FastPathStats, FlowId, FlowKey, FlowProgress, FlowReport, Instant, Offload};

use super::devices::Clock;
use super::xdp::fast_path::{FastStats, NextHop, stat};
use super::xdp::{FastPathMaps, SynCookies};

/// How often every installed connection is read.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// Entries read per turn of the worker's loop at most (two system calls
/// each): a sweep of many connections spreads over several turns.
const READS_PER_TURN: usize = 512;

/// What the program counted on one entry since it was installed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) packets: u64,
    /// IP bytes, as the engine counts them.
    pub(crate) bytes: u64,
    /// `CLOCK_MONOTONIC` nanoseconds of the last packet; 0 for none yet.
    pub(crate) last_seen_ns: u64,
    /// The last TCP segment forwarded, if any.
    pub(crate) progress: Option<FlowProgress>,
}

/// The flow map as the sweep reads it.
pub(crate) trait Entries<K> {
    /// The counters of `key`'s entry; `None` when it is not in the map.
    fn counters(&self, key: &K) -> io::Result<Option<Counters>>;
    /// Delete `key`'s entry, if any.
    fn delete(&mut self, key: &K);
}

/// What was forwarded of one connection since its last report, by the side
/// packets came from (`[client, real]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Report<F> {
    pub(crate) flow: F,
    pub(crate) packets: [u64; 2],
    pub(crate) bytes: [u64; 2],
    /// `CLOCK_MONOTONIC` nanoseconds of the last packet, when one passed since the last report.
    pub(crate) last_seen_ns: Option<u64>,
    /// The last TCP segment forwarded from each side, when one passed since the last report.
    pub(crate) progress: [Option<FlowProgress>; 2],
    /// The map dropped an entry on its own: both are gone now.
    pub(crate) evicted: bool,
}

/// One installed connection: its keys (`[from client, from real]`) and
/// what was read of them last.
#[derive(Debug)]
struct Entry<F, K> {
    flow: F,
    keys: [K; 2],
    seen: [Counters; 2],
}

/// The installed connections of one worker.
#[derive(Debug)]
pub(crate) struct Offloaded<F, K> {
    entries: Vec<Entry<F, K>>,
    index: HashMap<F, usize>,
    /// Reports of removed and evicted connections not yet taken.
    pending: VecDeque<Report<F>>,
    /// The next entry the sweep reads; `None` between sweeps.
    cursor: Option<usize>,
    next_sweep: Option<Instant>,
    /// Reads left this turn.
    budget: usize,
}

impl<F: Copy + Eq + Hash, K: Copy> Default for Offloaded<F, K> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::new(),
            pending: VecDeque::new(),
            cursor: None,
            next_sweep: None,
            budget: READS_PER_TURN,
        }
    }
}

/// `now - then` of a counter the program only increases; a smaller `now`
/// means the entry was written again, counting from zero.
fn delta(now: u64, then: u64) -> u64 {
    now.checked_sub(then).unwrap_or(now)
}

impl<F: Copy + Eq + Hash, K: Copy> Offloaded<F, K> {
    /// Connections installed now.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Start counting `flow`, whose entries were just written (their
    /// counters zero); one installed again starts from zero too.
    pub(crate) fn insert(&mut self, flow: F, keys: [K; 2]) {
        let entry = Entry { flow, keys, seen: [Counters::default(); 2] };
        match self.index.get(&flow) {
            Some(&i) => self.entries[i] = entry,
            None => {
                self.index.insert(flow, self.entries.len());
                self.entries.push(entry);
            }
        }
    }

    /// Forget `flow` after a last read of its entries (reported by
    /// [`poll_report`](Self::poll_report)); its keys, if it was installed.
    pub(crate) fn remove(&mut self, flow: F, map: &impl Entries<K>) -> Option<[K; 2]> {
        let i = self.index.remove(&flow)?;
        let mut entry = self.entries.swap_remove(i);
        if let Some(moved) = self.entries.get(i) {
            self.index.insert(moved.flow, i);
        }
        // A sweep under way may miss the entry moved into slot `i`: the
        // next one reads what it forwarded.
        let report = read(&mut entry, map);
        if report.packets != [0; 2] {
            self.pending.push_back(report);
        }
        Some(entry.keys)
    }

    /// `flow` could not be installed: reported evicted at once, so the
    /// engine keeps it.
    pub(crate) fn refused(&mut self, flow: F) {
        self.pending.push_back(Report {
            flow,
            packets: [0; 2],
            bytes: [0; 2],
            last_seen_ns: None,
            progress: [None; 2],
            evicted: true,
        });
    }

    /// When the next sweep is due, with connections to read.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        if self.entries.is_empty() {
            return None;
        }
        // A sweep under way goes on at the next turn.
        match self.cursor {
            Some(_) => Some(Instant::ZERO),
            None => Some(self.next_sweep.unwrap_or(Instant::ZERO)),
        }
    }

    /// A new turn of the worker's loop: the sweep may read again.
    pub(crate) fn new_turn(&mut self) {
        self.budget = READS_PER_TURN;
    }

    /// The next connection that forwarded something or was evicted since
    /// its last report, reading as many entries as this turn allows; a new
    /// sweep starts every [`SWEEP_INTERVAL`].
    pub(crate) fn poll_report(&mut self, now: Instant, map: &mut impl Entries<K>) -> Option<Report<F>> {
        if let Some(r) = self.pending.pop_front() {
            return Some(r);
        }
        if self.cursor.is_none() && self.next_sweep.is_none_or(|at| at <= now) {
            self.cursor = Some(0);
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
        while let Some(i) = self.cursor {
            if self.budget == 0 {
                return None;
            }
            let Some(entry) = self.entries.get_mut(i) else {
                self.cursor = None;
                return None;
            };
            self.budget -= 1;
            let report = read(entry, map);
            if report.evicted {
                // Both directions leave together; the entry moved into
                // slot `i` is read next.
                let keys = entry.keys;
                map.delete(&keys[0]);
                map.delete(&keys[1]);
                self.index.remove(&report.flow);
                self.entries.swap_remove(i);
                if let Some(moved) = self.entries.get(i) {
                    self.index.insert(moved.flow, i);
                }
                return Some(report);
            }
            self.cursor = Some(i + 1);
            if report.packets != [0; 2] {
                return Some(report);
            }
        }
        None
    }
}

/// Read both entries of `entry`: what changed since the last read; evicted
/// when one of them is gone (or unreadable: the connection is handed back
/// to the engine all the same).
fn read<F: Copy, K>(entry: &mut Entry<F, K>, map: &impl Entries<K>) -> Report<F> {
    let mut report = Report {
        flow: entry.flow,
        packets: [0; 2],
        bytes: [0; 2],
        last_seen_ns: None,
        progress: [None; 2],
        evicted: false,
    };
    for side in 0..2 {
        match map.counters(&entry.keys[side]) {
            Ok(Some(c)) => {
                let seen = &mut entry.seen[side];
                report.packets[side] = delta(c.packets, seen.packets);
                report.bytes[side] = delta(c.bytes, seen.bytes);
                if c.last_seen_ns != seen.last_seen_ns && c.last_seen_ns != 0 {
                    report.last_seen_ns = report.last_seen_ns.max(Some(c.last_seen_ns));
                }
                if report.packets[side] != 0 {
                    report.progress[side] = c.progress;
                }
                *seen = c;
            }
            Ok(None) | Err(_) => report.evicted = true,
        }
    }
    report
}

/// One worker's fast path: its handles on the program's maps, the
/// connections it installed, and (on one worker: they are the host's) the
/// program's own counters as last read.
pub(crate) struct FastPath {
    maps: FastPathMaps,
    flows: Offloaded<FlowId, FlowKey>,
    clock: Clock,
    stats: Option<StatsReader>,
    /// The SYN-cookie stage's maps, on the worker that fills them.
    cookies: Option<SynCookies>,
    /// Connections not installed: no next hop known, or the map refused them.
    unresolved: u64,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath").field("installed", &self.flows.len()).finish_non_exhaustive()
    }
}

/// The program's per-CPU counters, read about every [`SWEEP_INTERVAL`].
#[derive(Debug)]
struct StatsReader {
    seen: FastStats,
    next: Option<Instant>,
}

impl Entries<FlowKey> for FastPathMaps {
    fn counters(&self, key: &FlowKey) -> io::Result<Option<Counters>> {
        let c = Self::counters(self, key)?;
        Ok(c.map(|c| Counters {
            packets: c.packets,
            bytes: c.bytes,
            last_seen_ns: c.last_seen_ns,
            progress: c.progress,
        }))
    }

    fn delete(&mut self, key: &FlowKey) {
        let _ = self.remove(key);
    }
}

impl FastPath {
    /// With `cookies`, this worker does the host's share besides its own:
    /// it folds the program's counters into its engine and fills the
    /// SYN-cookie maps.
    pub(crate) fn new(maps: FastPathMaps, clock: Clock, cookies: Option<SynCookies>) -> Self {
        let stats = cookies.is_some().then_some(StatsReader { seen: [0; stat::COUNT as usize], next: None });
        Self { maps, flows: Offloaded::default(), clock, stats, cookies, unresolved: 0 }
    }

    /// The SYN-cookie stage's maps, on the worker that fills them.
    pub(crate) fn syn_cookies(&mut self) -> Option<&mut SynCookies> {
        self.cookies.as_mut()
    }

    /// Connections not installed for want of a next hop (or refused by the map).
    pub(crate) fn unresolved(&self) -> u64 {
        self.unresolved
    }

    /// Apply the engine's change; `hop` resolves where a packet to an
    /// address leaves. A connection that cannot be installed is reported
    /// evicted at once: it carries on through the engine.
    pub(crate) fn offload(&mut self, change: &Offload, hop: impl Fn(IpAddr) -> Option<NextHop>) {
        match change {
            Offload::Install { flow, rules } => {
                let keys = rules.map(|r| r.key);
                let (Some(to_real), Some(to_client)) = (hop(rules[0].dst.addr), hop(rules[1].dst.addr))
                else {
                    self.refuse(*flow);
                    return;
                };
                let written = self
                    .maps
                    .set_live(rules[0].real_gen)
                    .and_then(|()| self.maps.install(&rules[0], &to_real))
                    .and_then(|()| self.maps.install(&rules[1], &to_client));
                if written.is_err() {
                    keys.iter().for_each(|k| self.maps.delete(k));
                    self.refuse(*flow);
                    return;
                }
                self.flows.insert(*flow, keys);
            }
            Offload::Remove { flow, keys } => {
                self.flows.remove(*flow, &self.maps);
                // The client's side is handed to the engine rather than
                // deleted: the program checks an ACK of a flow it has no
                // entry for as a SYN-cookie ACK, and the rest of the close
                // (or a half-closed transfer) must reach the connection.
                if self.maps.hand_to_engine(&keys[0]).is_err() {
                    self.maps.delete(&keys[0]);
                }
                self.maps.delete(&keys[1]);
            }
            Offload::RetireReal { real_gen } => {
                let _ = self.maps.retire(*real_gen);
            }
        }
    }

    fn refuse(&mut self, flow: FlowId) {
        self.unresolved += 1;
        self.flows.refused(flow);
    }

    /// When the worker should read the map next, with connections installed.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.flows.next_due()
    }

    /// A new turn of the worker's loop.
    pub(crate) fn new_turn(&mut self) {
        self.flows.new_turn();
    }

    /// The next report of an installed connection ([`Offloaded::poll_report`]).
    pub(crate) fn poll_report(&mut self, now: Instant) -> Option<FlowReport> {
        let r = self.flows.poll_report(now, &mut self.maps)?;
        Some(FlowReport {
            flow: r.flow,
            packets: r.packets,
            bytes: r.bytes,
            last_seen: r.last_seen_ns.map(|ns| self.clock.at_monotonic(ns)),
            progress: r.progress,
            evicted: r.evicted,
        })
    }

    /// What the program counted since the last read, about every
    /// [`SWEEP_INTERVAL`], on the worker that folds it.
    pub(crate) fn poll_stats(&mut self, now: Instant) -> Option<FastPathStats> {
        let reader = self.stats.as_mut()?;
        if reader.next.is_some_and(|at| now < at) {
            return None;
        }
        reader.next = Some(now + SWEEP_INTERVAL);
        let read = self.maps.stats().ok()?;
        let d = |i: u32| delta(read[i as usize], reader.seen[i as usize]);
        let mut stats = FastPathStats {
            forwarded: d(stat::FP_FORWARDED),
            bytes: d(stat::FP_BYTES),
            to_engine: d(stat::FP_TO_ENGINE),
            synacks: d(stat::SC_SYNACKS),
            acks_passed: d(stat::SC_ACKS_PASSED),
            no_key: d(stat::SC_NO_KEY),
            ..FastPathStats::default()
        };
        stats.drops.add_many(DropReason::BadCookie, d(stat::SC_BAD_COOKIE));
        reader.seen = read;
        (stats != FastPathStats::default()).then_some(stats)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A map of keys to counters; `fail` makes reads fail.
    #[derive(Debug, Default)]
    struct Map {
        entries: BTreeMap<u32, Counters>,
        fail: bool,
    }

    impl Entries<u32> for Map {
        fn counters(&self, key: &u32) -> io::Result<Option<Counters>> {
            if self.fail {
                return Err(io::Error::other("gone"));
            }
            Ok(self.entries.get(key).copied())
        }

        fn delete(&mut self, key: &u32) {
            self.entries.remove(key);
        }
    }

    impl Map {
        fn count(&mut self, key: u32, packets: u64, last_seen_ns: u64) {
            let c = self.entries.entry(key).or_default();
            c.packets += packets;
            c.bytes += packets * 100;
            c.last_seen_ns = last_seen_ns;
        }
    }

    /// Every report of one sweep started at `now`, turn after turn.
    fn sweep(o: &mut Offloaded<u8, u32>, now: Instant, map: &mut Map) -> Vec<Report<u8>> {
        let mut out = Vec::new();
        for _ in 0..100 {
            o.new_turn();
            while let Some(r) = o.poll_report(now, map) {
                out.push(r);
            }
            if o.cursor.is_none() {
                break;
            }
        }
        out
    }

    fn installed(map: &mut Map, o: &mut Offloaded<u8, u32>, flow: u8) {
        let keys = [u32::from(flow) * 2, u32::from(flow) * 2 + 1];
        map.entries.insert(keys[0], Counters::default());
        map.entries.insert(keys[1], Counters::default());
        o.insert(flow, keys);
    }

    #[test]
    fn reports_what_changed_since_the_last_sweep() {
        let (mut map, mut o) = (Map::default(), Offloaded::default());
        installed(&mut map, &mut o, 1);
        installed(&mut map, &mut o, 2);
        let t0 = Instant::from_secs(10);
        assert!(sweep(&mut o, t0, &mut map).is_empty());
        map.count(2, 3, 5_000);
        map.count(3, 1, 7_000);
        // Not due yet: nothing read.
        assert!(sweep(&mut o, t0 + Duration::from_millis(100), &mut map).is_empty());
        let r = sweep(&mut o, t0 + SWEEP_INTERVAL, &mut map);
        assert_eq!(
            r,
            [Report {
                flow: 1,
                packets: [3, 1],
                bytes: [300, 100],
                last_seen_ns: Some(7_000),
                progress: [None; 2],
                evicted: false
            }]
        );
        // Counted once: the next sweep sees no change.
        assert!(sweep(&mut o, t0 + SWEEP_INTERVAL * 2, &mut map).is_empty());
        map.count(5, 2, 9_000);
        let r = sweep(&mut o, t0 + SWEEP_INTERVAL * 3, &mut map);
        assert_eq!((r[0].flow, r[0].packets, r[0].last_seen_ns), (2, [0, 2], Some(9_000)));
    }

    #[test]
    fn an_evicted_entry_takes_its_connection_out_whole() {
        let (mut map, mut o) = (Map::default(), Offloaded::default());
        for flow in 1..=3 {
            installed(&mut map, &mut o, flow);
        }
        map.count(2, 4, 1_000);
        map.entries.remove(&3);
        let r = sweep(&mut o, Instant::from_secs(1), &mut map);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].flow, r[0].packets, r[0].evicted), (1, [4, 0], true));
        // Its other direction is gone from the map too; the others stay.
        assert!(!map.entries.contains_key(&2));
        assert_eq!(o.len(), 2);
        assert_eq!(map.entries.len(), 4);
        // A map that cannot be read hands every connection back.
        map.fail = true;
        assert_eq!(sweep(&mut o, Instant::from_secs(2), &mut map).len(), 2);
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn a_removed_connection_is_read_one_last_time() {
        let (mut map, mut o) = (Map::default(), Offloaded::default());
        installed(&mut map, &mut o, 1);
        installed(&mut map, &mut o, 2);
        map.count(2, 5, 3_000);
        assert_eq!(o.remove(1, &map), Some([2, 3]));
        assert_eq!(o.remove(1, &map), None);
        assert_eq!(o.len(), 1);
        let r = sweep(&mut o, Instant::from_secs(1), &mut map);
        assert_eq!((r[0].flow, r[0].packets, r[0].evicted), (1, [5, 0], false));
        assert_eq!(r.len(), 1);
        // Installed again: counted from zero.
        installed(&mut map, &mut o, 2);
        map.count(4, 1, 4_000);
        let r = sweep(&mut o, Instant::from_secs(2), &mut map);
        assert_eq!(r[0].packets, [1, 0]);
        // One that could not be installed goes back to the engine at once.
        o.refused(7);
        let r = sweep(&mut o, Instant::from_secs(2), &mut map);
        assert_eq!((r[0].flow, r[0].packets, r[0].evicted), (7, [0, 0], true));
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn a_large_table_is_read_a_bounded_part_per_turn() {
        let (mut map, mut o) = (Map::default(), Offloaded::<u16, u32>::default());
        let flows = READS_PER_TURN as u16 * 2 + 10;
        for flow in 0..flows {
            let keys = [u32::from(flow) * 2, u32::from(flow) * 2 + 1];
            map.count(keys[0], 1, 1);
            map.count(keys[1], 0, 0);
            o.insert(flow, keys);
        }
        let now = Instant::from_secs(1);
        o.new_turn();
        assert_eq!(o.next_due(), Some(Instant::ZERO));
        let mut first_turn = 0;
        while o.poll_report(now, &mut map).is_some() {
            first_turn += 1;
        }
        assert_eq!(first_turn, READS_PER_TURN);
        // The rest is read at the next turn, at once.
        assert_eq!(o.next_due(), Some(Instant::ZERO));
        let mut rest = 0;
        for _ in 0..3 {
            o.new_turn();
            while o.poll_report(now, &mut map).is_some() {
                rest += 1;
            }
        }
        assert_eq!(first_turn + rest, usize::from(flows));
        assert_eq!(o.next_due(), Some(now + SWEEP_INTERVAL));
    }
}
