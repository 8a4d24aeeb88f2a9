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

use core::hash::{BuildHasher, Hasher};
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

/// When a released port may be handed out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Now: it goes to the back of the queue of released ports.
    AtOnce,
    /// After resting for the quarantine (between Q and 2Q).
    AfterRest,
}

mod pool;

pub use pool::PortPool;

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
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;

    use super::*;

    const Q: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Instant {
        Instant::from_secs(s)
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
}
