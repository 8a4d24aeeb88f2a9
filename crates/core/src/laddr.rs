//! Local addresses and ports: where FullNAT connections toward reals come from.
//!
//! A connection toward a real is sourced from a local address (LIP) and a
//! local port. The pair only has to be unique per protocol and real, so each
//! (protocol, LIP, real) has its own [`PortPool`] and the same port may be in
//! use toward several reals at once. [`LocalPools`] holds every pool of an
//! engine.
//!
//! What a pool promises:
//!
//! - It hands out only its worker's ports ([`WorkerSlice::owns`]), so return
//!   traffic can be steered to the right worker by destination port alone.
//! - Ports are chosen unpredictably: the search starts at a slot derived
//!   from the caller's random value (a keyed hash), not at the range start.
//! - A released port rests for at least the quarantine before it is handed
//!   out again, so a new connection does not meet the real's TIME_WAIT state
//!   of the previous one on the same 4-tuple.
//! - `allocate` and `release` never allocate memory and never panic; a
//!   search costs at most one pass over the pool's bitmap words.
//!
//! Resting uses an epoch clock of period Q (the quarantine): a release marks
//! the port in the current epoch's set, where it stays busy; at each epoch
//! boundary the previous epoch's set is freed and the current one becomes
//! previous. A port therefore rests more than Q and at most 2Q. Boundaries
//! are crossed lazily, by whichever of `allocate`, `release` or
//! `handle_timeout` comes first; when two or more periods have gone by both
//! sets are freed. With a zero quarantine a release frees the port at once.
//!
//! Memory: a pool keeps three bitmaps of one bit per port it owns (busy,
//! resting in the current epoch, resting in the previous one): 8 KiB each
//! for a whole 64 Ki-port range on a single worker, so 24 KiB per pool, and
//! `1/count` of that per worker when `count` workers split the ports. With a
//! zero quarantine the two resting bitmaps are not allocated.

use core::fmt;
use core::hash::BuildHasher;
use core::mem;
use core::time::Duration;
use std::net::IpAddr;

use hashbrown::HashMap;
use siphasher::sip::SipHasher13;

use crate::addr::{Endpoint, Proto};
use crate::config::{EngineConfig, WorkerSlice};
use crate::time::Instant;

/// Index of a [`PortPool`] in [`LocalPools`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolId(pub u32);

/// The ports of one local address toward one real (per protocol).
///
/// Slots are numbered `0..capacity()`; slot `s` is port `first + s * step`,
/// where `step` is the number of workers.
#[derive(Clone)]
pub struct PortPool {
    /// The lowest port of the pool.
    first: u32,
    /// Distance between consecutive ports of the pool.
    step: u32,
    /// Number of ports.
    slots: u32,
    /// Ports allocated or resting; bits past `slots` in the last word are
    /// set so the search never finds them.
    busy: Vec<u64>,
    /// Ports released in the current epoch (also busy). Empty with a zero quarantine.
    resting_current: Vec<u64>,
    /// Ports released in the previous epoch (also busy), freed at the next boundary.
    resting_previous: Vec<u64>,
    in_use: u32,
    resting_current_count: u32,
    resting_previous_count: u32,
    /// Q in nanoseconds; 0 frees released ports at once.
    quarantine: u64,
    /// Start of the current epoch; epochs are `quarantine` long.
    epoch_start: Instant,
    /// Releases of ports that were not allocated from this pool.
    ignored_releases: u64,
}

impl fmt::Debug for PortPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortPool")
            .field("first", &self.first)
            .field("step", &self.step)
            .field("capacity", &self.slots)
            .field("in_use", &self.in_use)
            .field("resting", &self.resting())
            .field("quarantine", &self.quarantine())
            .field("ignored_releases", &self.ignored_releases)
            .finish_non_exhaustive()
    }
}

/// Words of a bitmap of `bits` bits.
fn words(bits: u32) -> usize {
    bits.div_ceil(64) as usize
}

/// Whether `slot` is set in `set` (false past its end).
fn is_set(set: &[u64], slot: usize) -> bool {
    set.get(slot / 64).is_some_and(|w| w >> (slot % 64) & 1 == 1)
}

/// Clear from `busy` the ports of `resting`, and empty `resting`.
fn free_resting(busy: &mut [u64], resting: &mut [u64]) {
    for (b, r) in busy.iter_mut().zip(resting.iter_mut()) {
        *b &= !*r;
        *r = 0;
    }
}

impl PortPool {
    /// A pool over `range` (inclusive) restricted to `worker`'s ports.
    ///
    /// Port 0 is never part of a pool. An empty range (`lo > hi`) or a worker
    /// that owns no port of it gives an empty pool, which allocates nothing.
    pub fn new(range: (u16, u16), worker: WorkerSlice, quarantine: Duration, now: Instant) -> Self {
        let (lo, hi) = (u32::from(range.0.max(1)), u32::from(range.1));
        // Mirrors `WorkerSlice::owns`: a count of 0 or 1 means one worker.
        let (step, index) =
            if worker.count <= 1 { (1, 0) } else { (u32::from(worker.count), u32::from(worker.index)) };
        let first = lo + (index + step - lo % step) % step;
        let slots = if index < step && first <= hi { (hi - first) / step + 1 } else { 0 };
        let quarantine = u64::try_from(quarantine.as_nanos()).unwrap_or(u64::MAX);
        let mut busy = vec![0; words(slots)];
        if let (Some(last), tail @ 1..) = (busy.last_mut(), slots % 64) {
            *last = u64::MAX << tail;
        }
        let resting = if quarantine == 0 { Vec::new() } else { vec![0; words(slots)] };
        Self {
            first,
            step,
            slots,
            busy,
            resting_current: resting.clone(),
            resting_previous: resting,
            in_use: 0,
            resting_current_count: 0,
            resting_previous_count: 0,
            quarantine,
            epoch_start: now,
            ignored_releases: 0,
        }
    }

    /// A free port, chosen from `random`; `None` when every port is taken or resting.
    ///
    /// The search starts at the slot `random` designates and takes the first
    /// free port from there on, wrapping around. `random` should be a keyed
    /// hash or random draw: its high bits choose the slot.
    pub fn allocate(&mut self, now: Instant, random: u64) -> Option<u16> {
        self.rotate(now);
        if self.free() == 0 {
            return None;
        }
        // Multiply-shift maps the whole u64 range evenly onto the slots.
        let start = ((u128::from(random) * u128::from(self.slots)) >> 64) as usize;
        let slot = self.find_free(start)?;
        let port = u16::try_from(self.first + slot as u32 * self.step).ok()?;
        self.busy[slot / 64] |= 1 << (slot % 64);
        self.in_use += 1;
        Some(port)
    }

    /// Return `port`; it rests for the quarantine before it is handed out again.
    ///
    /// A port that is not this pool's, not allocated, or already released is
    /// ignored and counted in [`ignored_releases`](Self::ignored_releases).
    pub fn release(&mut self, now: Instant, port: u16) {
        self.rotate(now);
        let Some(slot) = self.slot_of(port) else {
            self.ignored_releases = self.ignored_releases.saturating_add(1);
            return;
        };
        let resting = is_set(&self.resting_current, slot) || is_set(&self.resting_previous, slot);
        if !is_set(&self.busy, slot) || resting {
            self.ignored_releases = self.ignored_releases.saturating_add(1);
            return;
        }
        let (word, bit) = (slot / 64, 1 << (slot % 64));
        self.in_use -= 1;
        match self.resting_current.get_mut(word) {
            Some(w) if self.quarantine > 0 => {
                *w |= bit;
                self.resting_current_count += 1;
            }
            _ => self.busy[word] &= !bit,
        }
    }

    /// Free the ports whose rest is over by `now`. Allocation and release do
    /// this on their own; calling it keeps [`resting`](Self::resting) current
    /// in between.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.rotate(now);
    }

    /// When resting ports next become free, if any rest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let period = Duration::from_nanos(self.quarantine);
        if self.resting_previous_count > 0 {
            Some(self.epoch_start + period)
        } else if self.resting_current_count > 0 {
            Some(self.epoch_start + period + period)
        } else {
            None
        }
    }

    /// Ports in the pool.
    pub fn capacity(&self) -> u32 {
        self.slots
    }

    /// Ports allocated and not yet released.
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// Ports released and still resting, as of the last call that took `now`.
    pub fn resting(&self) -> u32 {
        self.resting_current_count + self.resting_previous_count
    }

    /// Ports that can be allocated, as of the last call that took `now`.
    pub fn free(&self) -> u32 {
        self.slots - self.in_use - self.resting()
    }

    /// How long a released port rests at least.
    pub fn quarantine(&self) -> Duration {
        Duration::from_nanos(self.quarantine)
    }

    /// Whether `port` is one of the pool's ports (in use or not).
    pub fn owns(&self, port: u16) -> bool {
        self.slot_of(port).is_some()
    }

    /// Releases ignored because the port was not allocated from this pool.
    pub fn ignored_releases(&self) -> u64 {
        self.ignored_releases
    }

    /// Bytes of heap the pool holds.
    pub fn heap_bytes(&self) -> usize {
        (self.busy.capacity() + self.resting_current.capacity() + self.resting_previous.capacity())
            * size_of::<u64>()
    }

    /// The slot of `port`, if the pool has it.
    fn slot_of(&self, port: u16) -> Option<usize> {
        let offset = u32::from(port).checked_sub(self.first)?;
        let slot = offset / self.step;
        (offset % self.step == 0 && slot < self.slots).then_some(slot as usize)
    }

    /// The first free slot at or after `start`, wrapping around.
    fn find_free(&self, start: usize) -> Option<usize> {
        let (word, bit) = (start / 64, start % 64);
        let first = *self.busy.get(word)?;
        let at_or_after = !first & (u64::MAX << bit);
        if at_or_after != 0 {
            return Some(word * 64 + at_or_after.trailing_zeros() as usize);
        }
        let later = self.busy.iter().enumerate().skip(word + 1);
        let earlier = self.busy.iter().enumerate().take(word);
        if let Some((w, b)) = later.chain(earlier).find(|(_, b)| **b != u64::MAX) {
            return Some(w * 64 + (!b).trailing_zeros() as usize);
        }
        let before = !first & !(u64::MAX << bit);
        (before != 0).then(|| word * 64 + before.trailing_zeros() as usize)
    }

    /// Cross the epoch boundaries up to `now`, freeing the ports whose rest is over.
    fn rotate(&mut self, now: Instant) {
        if self.quarantine == 0 {
            return;
        }
        let elapsed = now.as_nanos().saturating_sub(self.epoch_start.as_nanos());
        if elapsed < self.quarantine {
            return;
        }
        let epochs = elapsed / self.quarantine;
        // Boundaries stay on multiples of Q from the pool's creation.
        self.epoch_start = Instant::from_nanos(self.epoch_start.as_nanos() + epochs * self.quarantine);
        if self.resting_previous_count > 0 {
            free_resting(&mut self.busy, &mut self.resting_previous);
            self.resting_previous_count = 0;
        }
        if epochs == 1 {
            mem::swap(&mut self.resting_current, &mut self.resting_previous);
            mem::swap(&mut self.resting_current_count, &mut self.resting_previous_count);
        } else if self.resting_current_count > 0 {
            free_resting(&mut self.busy, &mut self.resting_current);
            self.resting_current_count = 0;
        }
    }
}

/// Hashes the keys of [`LocalPools`]' index with fixed keys: the keys are
/// configured addresses, not packet contents, so there is nothing to flood,
/// and fixed keys keep every run identical.
#[derive(Debug, Clone, Copy, Default)]
struct FixedState;

impl BuildHasher for FixedState {
    type Hasher = SipHasher13;

    fn build_hasher(&self) -> SipHasher13 {
        // ASCII "rvs-loca", "l-pools!".
        SipHasher13::new_with_keys(0x7276_732d_6c6f_6361, 0x6c2d_706f_6f6c_7321)
    }
}

/// The identity of a pool.
type PoolKey = (Proto, IpAddr, Endpoint);

/// A pool and what it is for.
#[derive(Debug)]
struct Entry {
    key: PoolKey,
    pool: PortPool,
}

/// Every port pool of an engine, keyed by (protocol, local address, real).
///
/// Pools are created on first use and kept for the engine's life, so a
/// [`PoolId`] stays valid. Iteration is in creation order.
#[derive(Debug)]
pub struct LocalPools {
    range: (u16, u16),
    worker: WorkerSlice,
    quarantine: Duration,
    entries: Vec<Entry>,
    index: HashMap<PoolKey, PoolId, FixedState>,
    /// Stands in for an id this set did not hand out.
    empty: PortPool,
}

impl Default for LocalPools {
    /// Pools with [`EngineConfig::default`]'s port range, worker and quarantine.
    fn default() -> Self {
        let config = EngineConfig::default();
        Self::new(config.port_range, config.worker, config.port_quarantine)
    }
}

impl LocalPools {
    /// No pools yet; pools created later cover `range` (inclusive), restricted
    /// to `worker`'s ports, and rest released ports for `quarantine`.
    pub fn new(range: (u16, u16), worker: WorkerSlice, quarantine: Duration) -> Self {
        Self {
            range,
            worker,
            quarantine,
            entries: Vec::new(),
            index: HashMap::with_hasher(FixedState),
            empty: PortPool::new((1, 0), WorkerSlice::SINGLE, Duration::ZERO, Instant::ZERO),
        }
    }

    /// The pool for (proto, laddr, real), created on first use.
    ///
    /// Creating a pool allocates its bitmaps: a control-plane cost, normally
    /// paid when a real or local address is added.
    pub fn get_or_create(&mut self, proto: Proto, laddr: IpAddr, real: Endpoint, now: Instant) -> PoolId {
        let key = (proto, laddr, real);
        if let Some(&id) = self.index.get(&key) {
            return id;
        }
        // More than 2^32 - 1 pools cannot be addressed; the id of the empty
        // pool stands in (memory runs out long before).
        let Some(id) = u32::try_from(self.entries.len()).ok().filter(|&i| i != u32::MAX).map(PoolId) else {
            return PoolId(u32::MAX);
        };
        let pool = PortPool::new(self.range, self.worker, self.quarantine, now);
        self.entries.push(Entry { key, pool });
        self.index.insert(key, id);
        id
    }

    /// The pool for (proto, laddr, real), if it was created.
    pub fn get(&self, proto: Proto, laddr: IpAddr, real: Endpoint) -> Option<PoolId> {
        self.index.get(&(proto, laddr, real)).copied()
    }

    /// The pool `id`; an id not handed out by this set reads as an empty pool.
    pub fn pool(&self, id: PoolId) -> &PortPool {
        self.entries.get(id.0 as usize).map_or(&self.empty, |e| &e.pool)
    }

    /// The pool `id`; an id not handed out by this set gives an empty pool,
    /// which allocates nothing and ignores releases.
    pub fn pool_mut(&mut self, id: PoolId) -> &mut PortPool {
        match self.entries.get_mut(id.0 as usize) {
            Some(e) => &mut e.pool,
            None => &mut self.empty,
        }
    }

    /// Every pool with its protocol, local address and real, in creation order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (Proto, IpAddr, Endpoint, &PortPool)> {
        self.entries.iter().map(|e| (e.key.0, e.key.1, e.key.2, &e.pool))
    }

    /// Number of pools.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no pool.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Free the resting ports of every pool whose rest is over by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for e in &mut self.entries {
            e.pool.handle_timeout(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;

    const Q: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Instant {
        Instant::from_secs(s)
    }

    fn single(lo: u16, hi: u16, quarantine: Duration) -> PortPool {
        PortPool::new((lo, hi), WorkerSlice::SINGLE, quarantine, Instant::ZERO)
    }

    /// splitmix64: stands in for the caller's keyed hash.
    fn randoms() -> impl Iterator<Item = u64> {
        let mut state = 0x243f_6a88_85a3_08d3_u64;
        core::iter::repeat_with(move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    }

    fn drain(pool: &mut PortPool, now: Instant) -> Vec<u16> {
        randoms().map_while(|r| pool.allocate(now, r)).collect()
    }

    #[test]
    fn ranges_and_worker_slices() {
        let cases: [((u16, u16), WorkerSlice, u32); 9] = [
            ((1024, 65535), WorkerSlice::SINGLE, 64_512),
            ((0, 65535), WorkerSlice::SINGLE, 65_535),
            ((0, 3), WorkerSlice::SINGLE, 3),
            ((5, 5), WorkerSlice::SINGLE, 1),
            ((6, 5), WorkerSlice::SINGLE, 0),
            ((1000, 1019), WorkerSlice { index: 1, count: 4 }, 5),
            ((1001, 1001), WorkerSlice { index: 2, count: 4 }, 0),
            ((1000, 1019), WorkerSlice { index: 4, count: 4 }, 0),
            ((1000, 1019), WorkerSlice { index: 7, count: 0 }, 20),
        ];
        for (range, worker, capacity) in cases {
            let mut pool = PortPool::new(range, worker, Q, Instant::ZERO);
            assert_eq!(pool.capacity(), capacity, "{range:?} {worker:?}");
            let ports = drain(&mut pool, Instant::ZERO);
            assert_eq!(ports.len(), capacity as usize);
            let distinct: BTreeSet<u16> = ports.iter().copied().collect();
            assert_eq!(distinct.len(), ports.len());
            for p in ports {
                assert!(p != 0 && (range.0..=range.1).contains(&p) && worker.owns(p) && pool.owns(p));
            }
            assert_eq!(pool.allocate(Instant::ZERO, 0), None);
            assert_eq!((pool.in_use(), pool.free()), (capacity, 0));
        }
    }

    #[test]
    fn worker_slice_gets_only_its_ports() {
        let worker = WorkerSlice { index: 1, count: 4 };
        let mut pool = PortPool::new((1024, 65535), worker, Q, Instant::ZERO);
        assert_eq!(pool.capacity(), 64_512 / 4);
        let ports = drain(&mut pool, Instant::ZERO);
        assert_eq!(ports.len(), 64_512 / 4);
        assert!(ports.iter().all(|p| p % 4 == 1));
        assert!(!pool.owns(1024) && pool.owns(1025) && !pool.owns(1026) && pool.owns(65533));
    }

    #[test]
    fn the_top_port_is_reachable() {
        let mut pool = single(65535, 65535, Duration::ZERO);
        assert_eq!(pool.allocate(Instant::ZERO, u64::MAX), Some(65535));
        pool.release(Instant::ZERO, 65535);
        assert_eq!(pool.allocate(Instant::ZERO, 0), Some(65535));
    }

    #[test]
    fn exhaustion_then_quarantine() {
        let mut pool = single(5000, 5009, Q);
        let ports = drain(&mut pool, secs(0));
        assert_eq!(ports.len(), 10);
        assert_eq!(pool.allocate(secs(0), 7), None);
        for &p in &ports {
            pool.release(secs(1), p);
        }
        assert_eq!((pool.in_use(), pool.resting(), pool.free()), (0, 10, 0));
        // Rests at least Q...
        assert_eq!(pool.allocate(secs(30), 7), None);
        assert_eq!(pool.allocate(secs(60), 7), None);
        assert_eq!(pool.allocate(secs(61), 7), None);
        // ...and at most 2Q.
        assert_eq!(pool.poll_timeout(), Some(secs(120)));
        pool.handle_timeout(secs(120));
        assert_eq!((pool.resting(), pool.free()), (0, 10));
        assert_eq!(pool.poll_timeout(), None);
        assert_eq!(drain(&mut pool, secs(120)).len(), 10);
    }

    #[test]
    fn epochs_rotate_one_at_a_time_or_all_at_once() {
        let mut pool = single(1, 3, Q);
        let [a, b, c] = [1, 2, 3].map(|_| pool.allocate(secs(0), 0).unwrap());
        pool.release(secs(10), a);
        assert_eq!(pool.poll_timeout(), Some(secs(120)));
        pool.release(secs(70), b); // a moves to the previous epoch
        assert_eq!(pool.poll_timeout(), Some(secs(120)));
        pool.handle_timeout(secs(120)); // a is free, b moves
        assert_eq!((pool.resting(), pool.free()), (1, 1));
        assert_eq!(pool.allocate(secs(120), 0), Some(a));
        assert_eq!(pool.poll_timeout(), Some(secs(180)));
        pool.release(secs(125), c);
        // Long idle: both epochs free at once.
        pool.handle_timeout(secs(1000));
        assert_eq!((pool.in_use(), pool.resting(), pool.free()), (1, 0, 2));
        assert_eq!(pool.poll_timeout(), None);
    }

    #[test]
    fn zero_quarantine_reuses_at_once() {
        let mut pool = single(7000, 7000, Duration::ZERO);
        assert_eq!(pool.allocate(secs(0), 1), Some(7000));
        assert_eq!(pool.allocate(secs(0), 1), None);
        pool.release(secs(0), 7000);
        assert_eq!((pool.in_use(), pool.resting()), (0, 0));
        assert_eq!(pool.poll_timeout(), None);
        assert_eq!(pool.allocate(secs(0), 2), Some(7000));
    }

    #[test]
    fn bogus_releases_are_ignored() {
        let mut pool = PortPool::new((2000, 2099), WorkerSlice { index: 0, count: 2 }, Q, Instant::ZERO);
        let p = pool.allocate(secs(0), 99).unwrap();
        let other = if p == 2000 { 2002 } else { 2000 };
        pool.release(secs(0), other); // owned, never allocated
        pool.release(secs(0), 2001); // another worker's
        pool.release(secs(0), 80); // outside the range
        pool.release(secs(0), 0);
        assert_eq!((pool.in_use(), pool.resting(), pool.ignored_releases()), (1, 0, 4));
        pool.release(secs(0), p);
        pool.release(secs(0), p); // twice
        pool.release(secs(70), p); // still resting
        assert_eq!((pool.in_use(), pool.resting(), pool.ignored_releases()), (0, 1, 6));

        let mut empty = single(9, 8, Q);
        assert_eq!(empty.allocate(secs(0), 0), None);
        empty.release(secs(0), 8);
        assert_eq!((empty.capacity(), empty.ignored_releases()), (0, 1));
    }

    #[test]
    fn time_going_backwards_frees_nothing_early() {
        let mut pool = single(1, 1, Q);
        let p = pool.allocate(secs(100), 0).unwrap();
        pool.release(secs(100), p);
        assert_eq!(pool.allocate(secs(5), 0), None);
        assert_eq!(pool.allocate(secs(159), 0), None);
        assert_eq!(pool.allocate(secs(220), 0), Some(p));
    }

    #[test]
    fn starting_ports_spread_over_the_range() {
        let mut pool = single(1024, 65535, Duration::ZERO);
        let mut ports = Vec::new();
        for r in randoms().take(1000) {
            let p = pool.allocate(secs(0), r).unwrap();
            pool.release(secs(0), p);
            ports.push(p);
        }
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert!(distinct.len() > 980, "{}", distinct.len());
        let sequential = ports.windows(2).filter(|w| w[1] == w[0].wrapping_add(1)).count();
        assert!(sequential < 5, "{sequential}");
        let low_half = ports.iter().filter(|&&p| p < 33_280).count();
        assert!((400..600).contains(&low_half), "{low_half}");
        // The same random value starts at the same place.
        assert_eq!(pool.allocate(secs(0), 1 << 63), Some(1024 + 64_512 / 2));
    }

    #[test]
    fn search_wraps_past_busy_words() {
        let mut pool = single(1, 200, Duration::ZERO);
        let ports = drain(&mut pool, secs(0));
        // Free one port early in the range; a search starting near the end finds it.
        pool.release(secs(0), ports[0]);
        assert_eq!(pool.allocate(secs(0), u64::MAX), Some(ports[0]));
        pool.release(secs(0), 5);
        pool.release(secs(0), 70);
        // Start at slot 9 (port 10), above port 5 in the same word: the next
        // free port is 70, in the next word, then 5, after wrapping around.
        let random_for_slot = |slot: u128| ((slot << 64).div_ceil(200)) as u64;
        assert_eq!(pool.allocate(secs(0), random_for_slot(9)), Some(70));
        assert_eq!(pool.allocate(secs(0), random_for_slot(9)), Some(5));
        assert_eq!(pool.allocate(secs(0), random_for_slot(9)), None);
    }

    #[test]
    fn memory_per_pool() {
        let full = single(0, 65535, Q);
        assert_eq!(full.heap_bytes(), 3 * 8192);
        let quarter = PortPool::new((0, 65535), WorkerSlice { index: 3, count: 4 }, Q, Instant::ZERO);
        assert_eq!(quarter.heap_bytes(), 3 * 2048);
        assert_eq!(single(0, 65535, Duration::ZERO).heap_bytes(), 8192);
    }

    fn ep(last: u8, port: u16) -> Endpoint {
        Endpoint::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), port)
    }

    #[test]
    fn local_pools_are_per_protocol_address_and_real() {
        let lip = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1));
        let lip2 = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 2));
        let mut pools = LocalPools::new((3000, 3000), WorkerSlice::SINGLE, Q);
        assert!(pools.is_empty());
        let a = pools.get_or_create(Proto::Tcp, lip, ep(1, 80), secs(0));
        let b = pools.get_or_create(Proto::Tcp, lip, ep(2, 80), secs(0));
        let c = pools.get_or_create(Proto::Udp, lip, ep(1, 80), secs(0));
        let d = pools.get_or_create(Proto::Tcp, lip2, ep(1, 80), secs(0));
        let e = pools.get_or_create(Proto::Tcp, lip, ep(1, 81), secs(0));
        assert_eq!(pools.get_or_create(Proto::Tcp, lip, ep(1, 80), secs(5)), a);
        assert_eq!(pools.get(Proto::Udp, lip, ep(1, 80)), Some(c));
        assert_eq!(pools.get(Proto::Udp, lip2, ep(1, 80)), None);
        assert_eq!(BTreeSet::from([a.0, b.0, c.0, d.0, e.0]).len(), 5);
        // The one port is usable toward every real at once.
        for id in [a, b, c, d, e] {
            assert_eq!(pools.pool_mut(id).allocate(secs(1), 0), Some(3000));
        }
        assert_eq!(pools.pool_mut(a).allocate(secs(1), 0), None);
        let listed: Vec<_> = pools.iter().map(|(p, l, r, pool)| (p, l, r, pool.in_use())).collect();
        assert_eq!(
            listed,
            [
                (Proto::Tcp, lip, ep(1, 80), 1),
                (Proto::Tcp, lip, ep(2, 80), 1),
                (Proto::Udp, lip, ep(1, 80), 1),
                (Proto::Tcp, lip2, ep(1, 80), 1),
                (Proto::Tcp, lip, ep(1, 81), 1),
            ]
        );
        pools.pool_mut(b).release(secs(2), 3000);
        pools.handle_timeout(secs(120));
        assert_eq!(pools.pool(b).free(), 1);
        assert_eq!(pools.len(), 5);
    }

    #[test]
    fn unknown_pool_ids_read_as_empty_pools() {
        let mut pools = LocalPools::default();
        assert_eq!(pools.pool(PoolId(3)).capacity(), 0);
        assert_eq!(pools.pool_mut(PoolId(u32::MAX)).allocate(secs(0), 0), None);
        pools.pool_mut(PoolId(0)).release(secs(0), 1024);
        let id = pools.get_or_create(Proto::Tcp, ep(9, 0).addr, ep(1, 80), secs(0));
        assert_eq!(pools.pool(id).capacity(), 64_512);
        assert_eq!(pools.pool(id).quarantine(), Q);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(u64),
        /// Release the n-th held port (modulo the number held).
        Release(usize),
        /// Release an arbitrary port (ignored unless held).
        ReleaseAny(u16),
        AdvanceMillis(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u64>().prop_map(Op::Allocate),
            3 => any::<usize>().prop_map(Op::Release),
            1 => (90_u16..320).prop_map(Op::ReleaseAny),
            2 => (0_u64..3000).prop_map(Op::AdvanceMillis),
        ]
    }

    proptest! {
        /// Against a model that records when each port was released: a port
        /// is never handed out while held, nor within Q of its release, and
        /// allocation never fails while some port has been free for 2Q.
        #[test]
        fn pool_matches_model(
            quarantine_ms in prop_oneof![Just(0_u64), 1_u64..5000],
            // 32 ports in one bitmap word, or 100 over two.
            hi in prop_oneof![Just(163_u16), Just(300)],
            ops in proptest::collection::vec(op(), 1..400),
        ) {
            let quarantine = Duration::from_millis(quarantine_ms);
            let worker = WorkerSlice { index: 1, count: 2 };
            let mut now = Instant::from_secs(1);
            let mut pool = PortPool::new((100, hi), worker, quarantine, now);
            let owned: Vec<u16> = (100..=hi).filter(|p| p % 2 == 1).collect();
            prop_assert_eq!(pool.capacity() as usize, owned.len());
            let mut held: Vec<u16> = Vec::new();
            let mut released: BTreeMap<u16, Instant> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Allocate(random) => {
                        let surely_free = owned.iter().any(|p| {
                            !held.contains(p) && released.get(p).is_none_or(|&t| now - t >= 2 * quarantine)
                        });
                        match pool.allocate(now, random) {
                            Some(p) => {
                                prop_assert!(owned.contains(&p), "foreign port {}", p);
                                prop_assert!(!held.contains(&p), "busy port {}", p);
                                if let Some(&t) = released.get(&p) {
                                    prop_assert!(now - t >= quarantine, "port {} rested {:?}", p, now - t);
                                }
                                held.push(p);
                            }
                            None => prop_assert!(!surely_free, "None with a free port"),
                        }
                    }
                    Op::Release(n) => {
                        if !held.is_empty() {
                            let p = held.swap_remove(n % held.len());
                            pool.release(now, p);
                            released.insert(p, now);
                        }
                    }
                    Op::ReleaseAny(p) => {
                        if !held.contains(&p) {
                            let ignored = pool.ignored_releases();
                            pool.release(now, p);
                            prop_assert_eq!(pool.ignored_releases(), ignored + 1);
                        }
                    }
                    Op::AdvanceMillis(ms) => {
                        now += Duration::from_millis(ms);
                        pool.handle_timeout(now);
                    }
                }
                prop_assert_eq!(pool.in_use() as usize, held.len());
                let resting_at_most = released
                    .iter()
                    .filter(|&(p, &t)| !held.contains(p) && now - t < 2 * quarantine)
                    .count();
                prop_assert!(pool.resting() as usize <= resting_at_most);
                prop_assert_eq!(pool.in_use() + pool.resting() + pool.free(), pool.capacity());
            }
        }
    }
}
