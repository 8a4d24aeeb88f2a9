//! One pool of local ports toward one real from one local address: the
//! order ports are handed out in, and their rest (see the parent module for
//! what a pool promises).

use core::fmt;
use core::mem;
use core::time::Duration;
use std::collections::VecDeque;

use super::Reuse;
use crate::config::WorkerSlice;
use crate::time::Instant;

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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

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
