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
//! - The least recently used port goes first: ports never used, in a keyed
//!   pseudo-random order (so they cannot be guessed), then released ports in
//!   the order they were released. A port is reused as late as the pool
//!   allows, whatever the rate.
//! - A port released with [`Reuse::AtOnce`] can be handed out again right
//!   away; one released with [`Reuse::AfterRest`] rests for at least the
//!   quarantine first. Whether the real's TIME_WAIT would accept a new SYN on
//!   the port is decided by the caller (`real_clock.rs`), not here.
//! - `allocate` and `release` never panic and cost O(1), but for crossing a
//!   quarantine epoch, which costs one pass over the resting bitmaps.
//!
//! Resting uses an epoch clock of period Q (the quarantine): a resting port
//! is marked in the current epoch's set, where it stays busy; at each epoch
//! boundary the previous epoch's set is freed and the current one becomes
//! previous. A port therefore rests more than Q and at most 2Q. Boundaries
//! are crossed lazily, by whichever of `allocate`, `release` or
//! `handle_timeout` comes first; when two or more periods have gone by both
//! sets are freed.
//!
//! Memory: a pool keeps one bitmap of the ports in use or resting (8 KiB for
//! a whole 64 Ki-port range on a single worker), two resting bitmaps of the
//! same size when the quarantine is not zero, and a queue of released ports
//! (2 bytes each) that grows only as far as the ports released and not yet
//! handed out again: up to 128 KiB for a whole range, once a pool has used
//! every port. With `count` workers each keeps `1/count` of that.

use core::fmt;
use core::hash::{BuildHasher, Hasher};
use core::mem;
use core::time::Duration;
use std::collections::VecDeque;
use std::net::IpAddr;

use hashbrown::HashMap;
use siphasher::sip::SipHasher13;

use crate::addr::{Endpoint, Proto};
use crate::config::{EngineConfig, WorkerSlice};
use crate::time::Instant;

/// Index of a [`PortPool`] in [`LocalPools`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolId(pub u32);

/// When a released port may be handed out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Now: it goes to the back of the queue of released ports.
    AtOnce,
    /// After resting for the quarantine (between Q and 2Q).
    AfterRest,
}

/// A keyed permutation of the slots `0..n`, walked once: the order in which
/// a pool hands out ports it never used.
///
/// A bijection on `bits`-bit values (keyed additions, odd multipliers and
/// xor-shifts, each invertible modulo 2^bits) applied to a counter; values
/// of `n` or more are skipped, so a whole walk costs at most `2n` steps.
#[derive(Debug, Clone)]
struct FreshOrder {
    /// The next counter value, `0..2^bits`.
    next: u32,
    bits: u32,
    n: u32,
    /// Slots not handed out yet.
    left: u32,
    keys: [u32; 3],
}

impl FreshOrder {
    fn new(n: u32, key: u64) -> Self {
        let bits = u32::BITS - n.saturating_sub(1).leading_zeros();
        let keys = [key as u32, (key >> 32) as u32, (key >> 16) as u32 ^ 0x9e37_79b9];
        Self { next: 0, bits, n, left: n, keys }
    }

    fn permute(&self, x: u32) -> u32 {
        let mask = ((1u64 << self.bits) - 1) as u32;
        let shift = self.bits / 2 + 1;
        let mut x = x;
        for (k, mul) in self.keys.iter().zip([0x2c1b_3c6d_u32, 0x297a_2d39, 0x8ebc_6af1]) {
            x = x.wrapping_add(*k) & mask;
            x = x.wrapping_mul(mul | 1) & mask;
            x ^= x >> shift;
        }
        x
    }

    fn next(&mut self) -> Option<u32> {
        while self.left > 0 && u64::from(self.next) < 1u64 << self.bits {
            let x = self.permute(self.next);
            self.next += 1;
            if x < self.n {
                self.left -= 1;
                return Some(x);
            }
        }
        None
    }
}

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
    /// Slots never handed out yet.
    fresh: FreshOrder,
    /// Released slots that may be handed out, least recently released first.
    released: VecDeque<u16>,
    /// Ports released in the current epoch (also busy). Empty with a zero quarantine.
    resting_current: Vec<u64>,
    /// Ports released in the previous epoch (also busy), freed at the next boundary.
    resting_previous: Vec<u64>,
    in_use: u32,
    resting_current_count: u32,
    resting_previous_count: u32,
    /// Q in nanoseconds; 0 frees every released port at once.
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

/// Clear from `busy` the ports of `resting`, queue them in `released`, and
/// empty `resting`.
fn free_resting(busy: &mut [u64], resting: &mut [u64], released: &mut VecDeque<u16>) {
    for (w, (b, r)) in busy.iter_mut().zip(resting.iter_mut()).enumerate() {
        *b &= !*r;
        let mut bits = mem::take(r);
        while bits != 0 {
            released.push_back((w * 64 + bits.trailing_zeros() as usize) as u16);
            bits &= bits - 1;
        }
    }
}

impl PortPool {
    /// A pool over `range` (inclusive) restricted to `worker`'s ports, whose
    /// never-used ports come out in an order keyed by `key`.
    ///
    /// Port 0 is never part of a pool. An empty range (`lo > hi`) or a worker
    /// that owns no port of it gives an empty pool, which allocates nothing.
    pub fn new(range: (u16, u16), worker: WorkerSlice, quarantine: Duration, now: Instant, key: u64) -> Self {
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
            fresh: FreshOrder::new(slots, key),
            released: VecDeque::new(),
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

    /// The least recently used free port; `None` when every port is in use or resting.
    pub fn allocate(&mut self, now: Instant) -> Option<u16> {
        self.rotate(now);
        let slot = match self.fresh.next() {
            Some(s) => s as usize,
            None => usize::from(self.released.pop_front()?),
        };
        let port = u16::try_from(self.first + slot as u32 * self.step).ok()?;
        self.busy[slot / 64] |= 1 << (slot % 64);
        self.in_use += 1;
        Some(port)
    }

    /// Return `port`, to be handed out again as `reuse` says.
    ///
    /// A port that is not this pool's, not allocated, or already released is
    /// ignored and counted in [`ignored_releases`](Self::ignored_releases).
    pub fn release(&mut self, now: Instant, port: u16, reuse: Reuse) {
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
            Some(w) if reuse == Reuse::AfterRest && self.quarantine > 0 => {
                *w |= bit;
                self.resting_current_count += 1;
            }
            _ => {
                self.busy[word] &= !bit;
                self.released.push_back(slot as u16);
            }
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

    /// How long a port released with [`Reuse::AfterRest`] rests at least.
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
            + self.released.capacity() * size_of::<u16>()
    }

    /// The slot of `port`, if the pool has it.
    fn slot_of(&self, port: u16) -> Option<usize> {
        let offset = u32::from(port).checked_sub(self.first)?;
        let slot = offset / self.step;
        (offset % self.step == 0 && slot < self.slots).then_some(slot as usize)
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
            free_resting(&mut self.busy, &mut self.resting_previous, &mut self.released);
            self.resting_previous_count = 0;
        }
        if epochs == 1 {
            mem::swap(&mut self.resting_current, &mut self.resting_previous);
            mem::swap(&mut self.resting_current_count, &mut self.resting_previous_count);
        } else if self.resting_current_count > 0 {
            free_resting(&mut self.busy, &mut self.resting_current, &mut self.released);
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
    /// Keys each pool's order of never-used ports.
    key: (u64, u64),
    entries: Vec<Entry>,
    index: HashMap<PoolKey, PoolId, FixedState>,
    /// Stands in for an id this set did not hand out.
    empty: PortPool,
}

impl Default for LocalPools {
    /// Pools with [`EngineConfig::default`]'s port range, worker and
    /// quarantine, and a fixed key.
    fn default() -> Self {
        let config = EngineConfig::default();
        Self::new(config.port_range, config.worker, config.port_quarantine, (0, 0))
    }
}

impl LocalPools {
    /// No pools yet; pools created later cover `range` (inclusive), restricted
    /// to `worker`'s ports, rest ports for `quarantine`, and hand out their
    /// never-used ports in an order keyed by `key` (a secret, so that the
    /// ports cannot be guessed).
    pub fn new(range: (u16, u16), worker: WorkerSlice, quarantine: Duration, key: (u64, u64)) -> Self {
        Self {
            range,
            worker,
            quarantine,
            key,
            entries: Vec::new(),
            index: HashMap::with_hasher(FixedState),
            empty: PortPool::new((1, 0), WorkerSlice::SINGLE, Duration::ZERO, Instant::ZERO, 0),
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
        let mut h = SipHasher13::new_with_keys(self.key.0, self.key.1);
        core::hash::Hash::hash(&key, &mut h);
        let pool = PortPool::new(self.range, self.worker, self.quarantine, now, h.finish());
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
    const KEY: u64 = 0x243f_6a88_85a3_08d3;

    fn secs(s: u64) -> Instant {
        Instant::from_secs(s)
    }

    fn single(lo: u16, hi: u16, quarantine: Duration) -> PortPool {
        PortPool::new((lo, hi), WorkerSlice::SINGLE, quarantine, Instant::ZERO, KEY)
    }

    fn drain(pool: &mut PortPool, now: Instant) -> Vec<u16> {
        core::iter::from_fn(|| pool.allocate(now)).collect()
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
            let mut pool = PortPool::new(range, worker, Q, Instant::ZERO, KEY);
            assert_eq!(pool.capacity(), capacity, "{range:?} {worker:?}");
            let ports = drain(&mut pool, Instant::ZERO);
            assert_eq!(ports.len(), capacity as usize);
            let distinct: BTreeSet<u16> = ports.iter().copied().collect();
            assert_eq!(distinct.len(), ports.len());
            for p in ports {
                assert!(p != 0 && (range.0..=range.1).contains(&p) && worker.owns(p) && pool.owns(p));
            }
            assert_eq!(pool.allocate(Instant::ZERO), None);
            assert_eq!((pool.in_use(), pool.free()), (capacity, 0));
        }
    }

    #[test]
    fn worker_slice_gets_only_its_ports() {
        let worker = WorkerSlice { index: 1, count: 4 };
        let mut pool = PortPool::new((1024, 65535), worker, Q, Instant::ZERO, KEY);
        assert_eq!(pool.capacity(), 64_512 / 4);
        let ports = drain(&mut pool, Instant::ZERO);
        assert_eq!(ports.len(), 64_512 / 4);
        assert!(ports.iter().all(|p| p % 4 == 1));
        assert!(!pool.owns(1024) && pool.owns(1025) && !pool.owns(1026) && pool.owns(65533));
    }

    #[test]
    fn the_top_port_is_reachable() {
        let mut pool = single(65535, 65535, Duration::ZERO);
        assert_eq!(pool.allocate(Instant::ZERO), Some(65535));
        pool.release(Instant::ZERO, 65535, Reuse::AtOnce);
        assert_eq!(pool.allocate(Instant::ZERO), Some(65535));
    }

    #[test]
    fn never_used_ports_first_then_least_recently_released() {
        let mut pool = single(5000, 5009, Q);
        let a = pool.allocate(secs(0)).unwrap();
        let b = pool.allocate(secs(0)).unwrap();
        pool.release(secs(1), b, Reuse::AtOnce);
        pool.release(secs(1), a, Reuse::AtOnce);
        // The eight ports never used come before b and a...
        let fresh = drain(&mut pool, secs(2));
        assert_eq!(fresh.len(), 10);
        assert!(!fresh[..8].contains(&a) && !fresh[..8].contains(&b));
        // ...which come back in the order they were released.
        assert_eq!(&fresh[8..], &[b, a]);
        for &p in fresh.iter().rev() {
            pool.release(secs(3), p, Reuse::AtOnce);
        }
        let again = drain(&mut pool, secs(3));
        assert_eq!(again, fresh.iter().rev().copied().collect::<Vec<_>>());
    }

    #[test]
    fn exhaustion_then_quarantine() {
        let mut pool = single(5000, 5009, Q);
        let ports = drain(&mut pool, secs(0));
        assert_eq!(ports.len(), 10);
        assert_eq!(pool.allocate(secs(0)), None);
        for &p in &ports {
            pool.release(secs(1), p, Reuse::AfterRest);
        }
        assert_eq!((pool.in_use(), pool.resting(), pool.free()), (0, 10, 0));
        // Rests at least Q...
        assert_eq!(pool.allocate(secs(30)), None);
        assert_eq!(pool.allocate(secs(60)), None);
        assert_eq!(pool.allocate(secs(61)), None);
        // ...and at most 2Q.
        assert_eq!(pool.poll_timeout(), Some(secs(120)));
        pool.handle_timeout(secs(120));
        assert_eq!((pool.resting(), pool.free()), (0, 10));
        assert_eq!(pool.poll_timeout(), None);
        assert_eq!(drain(&mut pool, secs(120)).len(), 10);
    }

    #[test]
    fn resting_and_reusable_ports_mix() {
        let mut pool = single(7000, 7002, Q);
        let [a, b, c] = [0; 3].map(|_| pool.allocate(secs(0)).unwrap());
        pool.release(secs(1), a, Reuse::AfterRest);
        pool.release(secs(1), b, Reuse::AtOnce);
        assert_eq!((pool.resting(), pool.free()), (1, 1));
        assert_eq!(pool.allocate(secs(2)), Some(b));
        assert_eq!(pool.allocate(secs(2)), None);
        pool.release(secs(3), c, Reuse::AtOnce);
        // a comes back after its rest, behind c.
        pool.handle_timeout(secs(120));
        assert_eq!(drain(&mut pool, secs(120)), [c, a]);
    }

    #[test]
    fn epochs_rotate_one_at_a_time_or_all_at_once() {
        let mut pool = single(1, 3, Q);
        let [a, b, c] = [1, 2, 3].map(|_| pool.allocate(secs(0)).unwrap());
        pool.release(secs(10), a, Reuse::AfterRest);
        assert_eq!(pool.poll_timeout(), Some(secs(120)));
        pool.release(secs(70), b, Reuse::AfterRest); // a moves to the previous epoch
        assert_eq!(pool.poll_timeout(), Some(secs(120)));
        pool.handle_timeout(secs(120)); // a is free, b moves
        assert_eq!((pool.resting(), pool.free()), (1, 1));
        assert_eq!(pool.allocate(secs(120)), Some(a));
        assert_eq!(pool.poll_timeout(), Some(secs(180)));
        pool.release(secs(125), c, Reuse::AfterRest);
        // Long idle: both epochs free at once.
        pool.handle_timeout(secs(1000));
        assert_eq!((pool.in_use(), pool.resting(), pool.free()), (1, 0, 2));
        assert_eq!(pool.poll_timeout(), None);
    }

    #[test]
    fn zero_quarantine_reuses_at_once() {
        let mut pool = single(7000, 7000, Duration::ZERO);
        assert_eq!(pool.allocate(secs(0)), Some(7000));
        assert_eq!(pool.allocate(secs(0)), None);
        pool.release(secs(0), 7000, Reuse::AfterRest);
        assert_eq!((pool.in_use(), pool.resting()), (0, 0));
        assert_eq!(pool.poll_timeout(), None);
        assert_eq!(pool.allocate(secs(0)), Some(7000));
    }

    #[test]
    fn bogus_releases_are_ignored() {
        let mut pool = PortPool::new((2000, 2099), WorkerSlice { index: 0, count: 2 }, Q, Instant::ZERO, KEY);
        let p = pool.allocate(secs(0)).unwrap();
        let other = if p == 2000 { 2002 } else { 2000 };
        pool.release(secs(0), other, Reuse::AtOnce); // owned, never allocated
        pool.release(secs(0), 2001, Reuse::AtOnce); // another worker's
        pool.release(secs(0), 80, Reuse::AtOnce); // outside the range
        pool.release(secs(0), 0, Reuse::AtOnce);
        assert_eq!((pool.in_use(), pool.resting(), pool.ignored_releases()), (1, 0, 4));
        pool.release(secs(0), p, Reuse::AfterRest);
        pool.release(secs(0), p, Reuse::AtOnce); // twice
        pool.release(secs(70), p, Reuse::AfterRest); // still resting
        assert_eq!((pool.in_use(), pool.resting(), pool.ignored_releases()), (0, 1, 6));
        let q = pool.allocate(secs(70)).unwrap();
        pool.release(secs(70), q, Reuse::AtOnce);
        pool.release(secs(70), q, Reuse::AtOnce); // queued already
        assert_eq!(pool.ignored_releases(), 7);

        let mut empty = single(9, 8, Q);
        assert_eq!(empty.allocate(secs(0)), None);
        empty.release(secs(0), 8, Reuse::AtOnce);
        assert_eq!((empty.capacity(), empty.ignored_releases()), (0, 1));
    }

    #[test]
    fn time_going_backwards_frees_nothing_early() {
        let mut pool = single(1, 1, Q);
        let p = pool.allocate(secs(100)).unwrap();
        pool.release(secs(100), p, Reuse::AfterRest);
        assert_eq!(pool.allocate(secs(5)), None);
        assert_eq!(pool.allocate(secs(159)), None);
        assert_eq!(pool.allocate(secs(220)), Some(p));
    }

    #[test]
    fn never_used_ports_come_in_a_keyed_order() {
        let first_thousand = |key| {
            let mut pool = PortPool::new((1024, 65535), WorkerSlice::SINGLE, Q, Instant::ZERO, key);
            (0..1000).map(|_| pool.allocate(secs(0)).unwrap()).collect::<Vec<u16>>()
        };
        let ports = first_thousand(KEY);
        let sequential = ports.windows(2).filter(|w| w[1].abs_diff(w[0]) <= 2).count();
        assert!(sequential < 5, "{sequential}");
        let low_half = ports.iter().filter(|&&p| p < 33_280).count();
        assert!((400..600).contains(&low_half), "{low_half}");
        assert_eq!(first_thousand(KEY), ports);
        let other = first_thousand(KEY ^ 1);
        assert!(other.iter().zip(&ports).filter(|(a, b)| a == b).count() < 10);
    }

    #[test]
    fn fresh_order_is_a_permutation_of_every_size() {
        for n in (0..300).chain([4095, 4096, 4097, 64_512, 65_535]) {
            let mut order = FreshOrder::new(n, KEY ^ u64::from(n));
            let all: Vec<u32> = core::iter::from_fn(|| order.next()).collect();
            assert_eq!(all.len(), n as usize);
            assert_eq!(all.iter().copied().collect::<BTreeSet<_>>().len(), n as usize, "{n}");
            assert!(all.iter().all(|&s| s < n));
            assert!(order.next <= 2 * n.max(1), "{n}: {} steps", order.next);
        }
    }

    #[test]
    fn memory_per_pool() {
        let mut full = single(0, 65535, Q);
        assert_eq!(full.heap_bytes(), 3 * 8192);
        let quarter = PortPool::new((0, 65535), WorkerSlice { index: 3, count: 4 }, Q, Instant::ZERO, KEY);
        assert_eq!(quarter.heap_bytes(), 3 * 2048);
        assert_eq!(single(0, 65535, Duration::ZERO).heap_bytes(), 8192);
        // The queue of released ports grows with what is released.
        for p in drain(&mut full, secs(0)) {
            full.release(secs(0), p, Reuse::AtOnce);
        }
        let bytes = full.heap_bytes();
        assert!((3 * 8192 + 2 * 65_535..=3 * 8192 + 4 * 65_536).contains(&bytes), "{bytes}");
    }

    fn ep(last: u8, port: u16) -> Endpoint {
        Endpoint::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), port)
    }

    #[test]
    fn local_pools_are_per_protocol_address_and_real() {
        let lip = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1));
        let lip2 = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 2));
        let mut pools = LocalPools::new((3000, 3000), WorkerSlice::SINGLE, Q, (1, 2));
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
            assert_eq!(pools.pool_mut(id).allocate(secs(1)), Some(3000));
        }
        assert_eq!(pools.pool_mut(a).allocate(secs(1)), None);
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
        pools.pool_mut(b).release(secs(2), 3000, Reuse::AfterRest);
        pools.handle_timeout(secs(120));
        assert_eq!(pools.pool(b).free(), 1);
        assert_eq!(pools.len(), 5);
    }

    #[test]
    fn unknown_pool_ids_read_as_empty_pools() {
        let mut pools = LocalPools::default();
        assert_eq!(pools.pool(PoolId(3)).capacity(), 0);
        assert_eq!(pools.pool_mut(PoolId(u32::MAX)).allocate(secs(0)), None);
        pools.pool_mut(PoolId(0)).release(secs(0), 1024, Reuse::AtOnce);
        let id = pools.get_or_create(Proto::Tcp, ep(9, 0).addr, ep(1, 80), secs(0));
        assert_eq!(pools.pool(id).capacity(), 64_512);
        assert_eq!(pools.pool(id).quarantine(), Q);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate,
        /// Release the n-th held port (modulo the number held), at once or to rest.
        Release(usize, bool),
        /// Release an arbitrary port (ignored unless held).
        ReleaseAny(u16),
        AdvanceMillis(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Allocate),
            3 => (any::<usize>(), any::<bool>()).prop_map(|(n, rest)| Op::Release(n, rest)),
            1 => (90_u16..320).prop_map(Op::ReleaseAny),
            2 => (0_u64..3000).prop_map(Op::AdvanceMillis),
        ]
    }

    proptest! {
        /// Against a model that records each port's history: a port is never
        /// handed out while held, nor within Q of a release to rest; never-used
        /// ports go first, then the port released at once longest ago; and
        /// allocation never fails while some port is surely free.
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
            let mut pool = PortPool::new((100, hi), worker, quarantine, now, KEY);
            let owned: Vec<u16> = (100..=hi).filter(|p| p % 2 == 1).collect();
            prop_assert_eq!(pool.capacity() as usize, owned.len());
            let mut held: Vec<u16> = Vec::new();
            let mut used: BTreeSet<u16> = BTreeSet::new();
            // Released at once and not handed out since, oldest first.
            let mut queue: Vec<u16> = Vec::new();
            let mut rested: BTreeMap<u16, Instant> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Allocate => {
                        let never_used = owned.iter().any(|p| !used.contains(p));
                        let rest_over = rested.values().any(|&t| now - t >= 2 * quarantine);
                        match pool.allocate(now) {
                            Some(p) => {
                                prop_assert!(owned.contains(&p), "foreign port {}", p);
                                prop_assert!(!held.contains(&p), "busy port {}", p);
                                if never_used {
                                    prop_assert!(!used.contains(&p), "port {} reused before a fresh one", p);
                                } else if let Some(&t) = rested.get(&p) {
                                    prop_assert!(now - t >= quarantine, "port {} rested {:?}", p, now - t);
                                } else {
                                    prop_assert_eq!(Some(&p), queue.first(), "not the least recently released");
                                }
                                queue.retain(|&q| q != p);
                                rested.remove(&p);
                                used.insert(p);
                                held.push(p);
                            }
                            None => prop_assert!(!never_used && queue.is_empty() && !rest_over, "None with a free port"),
                        }
                    }
                    Op::Release(n, rest) => {
                        if !held.is_empty() {
                            let p = held.swap_remove(n % held.len());
                            if rest && !quarantine.is_zero() {
                                pool.release(now, p, Reuse::AfterRest);
                                rested.insert(p, now);
                            } else {
                                pool.release(now, p, if rest { Reuse::AfterRest } else { Reuse::AtOnce });
                                queue.push(p);
                            }
                        }
                    }
                    Op::ReleaseAny(p) => {
                        if !held.contains(&p) {
                            let ignored = pool.ignored_releases();
                            pool.release(now, p, Reuse::AtOnce);
                            prop_assert_eq!(pool.ignored_releases(), ignored + 1);
                        }
                    }
                    Op::AdvanceMillis(ms) => {
                        now += Duration::from_millis(ms);
                        pool.handle_timeout(now);
                    }
                }
                prop_assert_eq!(pool.in_use() as usize, held.len());
                prop_assert!(pool.resting() as usize <= rested.len());
                prop_assert_eq!(pool.in_use() + pool.resting() + pool.free(), pool.capacity());
            }
        }
    }
}
