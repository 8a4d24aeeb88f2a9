//! Schedulers: which real gets a new connection.
//!
//! All schedulers share one contract: [`Scheduler::update`] is called after any
//! change to the reals (added, removed, weight changed) and [`Scheduler::pick`]
//! returns the index of a real that is [`Real::available`], or `None` when no
//! real is. Picks are deterministic given the same sequence of calls.
//!
//! `update` is a control-plane call and may allocate; `pick` runs on the data
//! path and never allocates. `pick` also holds its contract when the reals
//! changed without an `update`: it never indexes out of bounds and never
//! returns an unavailable real, falling back to a linear scan instead.
//!
//! The hashing schedulers (sh, mh) hash with one fixed function, SipHash-2-4
//! under published keys over explicitly encoded bytes, so every node of a
//! fleet and every release maps a client to the same real for the same reals.

mod lc;
mod mh;
mod rr;
mod sh;
mod wrr;

use core::hash::Hasher as _;
use std::net::IpAddr;

use siphasher::sip::SipHasher24;

use crate::addr::Endpoint;
use crate::config::SchedKind;
use crate::real::Real;

pub use mh::{MAX_TABLE_SIZE as MH_MAX_TABLE_SIZE, TABLE_SIZE as MH_TABLE_SIZE};
pub use sh::BUCKETS as SH_BUCKETS;

/// A scheduler of one service.
#[derive(Debug, Clone)]
pub struct Scheduler {
    algo: Algo,
}

/// Per-algorithm state.
#[derive(Debug, Clone)]
enum Algo {
    Rr(rr::RoundRobin),
    Wrr(wrr::SmoothWeighted),
    Lc,
    Wlc,
    Sh(sh::SourceHash),
    Mh(mh::Maglev),
}

impl Scheduler {
    /// A scheduler of `kind` with no reals yet (mh with a table of
    /// [`MH_TABLE_SIZE`] entries).
    pub fn new(kind: SchedKind) -> Self {
        let algo = match kind {
            SchedKind::Rr => Algo::Rr(rr::RoundRobin::default()),
            SchedKind::Wrr => Algo::Wrr(wrr::SmoothWeighted::default()),
            SchedKind::Lc => Algo::Lc,
            SchedKind::Wlc => Algo::Wlc,
            SchedKind::Sh => Algo::Sh(sh::SourceHash::default()),
            SchedKind::Mh => Algo::Mh(mh::Maglev::default()),
        };
        Self { algo }
    }

    /// A Maglev scheduler whose lookup table has `table_size` entries; `None`
    /// unless `table_size` is a prime no larger than [`MH_MAX_TABLE_SIZE`].
    ///
    /// Nodes that must agree on the mapping must use the same size.
    pub fn mh_with_table_size(table_size: u32) -> Option<Self> {
        mh::Maglev::with_table_size(table_size).map(|m| Self { algo: Algo::Mh(m) })
    }

    /// The algorithm.
    pub fn kind(&self) -> SchedKind {
        match self.algo {
            Algo::Rr(_) => SchedKind::Rr,
            Algo::Wrr(_) => SchedKind::Wrr,
            Algo::Lc => SchedKind::Lc,
            Algo::Wlc => SchedKind::Wlc,
            Algo::Sh(_) => SchedKind::Sh,
            Algo::Mh(_) => SchedKind::Mh,
        }
    }

    /// Rebuild internal state after the set of reals or their weights changed.
    pub fn update(&mut self, reals: &[Real]) {
        match &mut self.algo {
            Algo::Rr(s) => s.update(reals),
            Algo::Wrr(s) => s.update(reals),
            Algo::Lc | Algo::Wlc => {}
            Algo::Sh(s) => s.update(reals),
            Algo::Mh(s) => s.update(reals),
        }
    }

    /// The index in `reals` of the real for a new connection from `client`.
    pub fn pick(&mut self, reals: &[Real], client: Endpoint) -> Option<usize> {
        let candidate = match &mut self.algo {
            Algo::Rr(s) => s.pick(reals),
            Algo::Wrr(s) => s.pick(reals),
            Algo::Lc => lc::least_connections(reals),
            Algo::Wlc => lc::weighted_least_connections(reals),
            Algo::Sh(s) => s.pick(reals, client.addr),
            Algo::Mh(s) => s.pick(client),
        };
        match candidate {
            Some(i) if is_available(reals, i) => Some(i),
            // State out of step with `reals` (no `update` since a change):
            // stay correct, if not balanced, until the next update.
            Some(i) => scan_from(reals, i.wrapping_add(1)),
            None => scan_from(reals, 0),
        }
    }

    /// The lookup table of a hashing scheduler (sh, mh): the real index of
    /// every bucket, as of the last [`update`](Self::update). Empty when no
    /// real was available; `None` for the other schedulers.
    pub fn lookup_table(&self) -> Option<&[u32]> {
        match &self.algo {
            Algo::Sh(s) => Some(s.table()),
            Algo::Mh(s) => Some(s.table()),
            Algo::Rr(_) | Algo::Wrr(_) | Algo::Lc | Algo::Wlc => None,
        }
    }
}

/// Whether `reals[i]` exists and takes new connections.
fn is_available(reals: &[Real], i: usize) -> bool {
    reals.get(i).is_some_and(Real::available)
}

/// The first available real at or after `start`, wrapping around.
fn scan_from(reals: &[Real], start: usize) -> Option<usize> {
    let start = start.checked_rem(reals.len())?;
    let (head, tail) = reals.split_at(start);
    let after = tail.iter().position(Real::available).map(|i| start + i);
    after.or_else(|| head.iter().position(Real::available))
}

/// First key of [`stable_hash`]: ASCII `rvs-sche` read as a big-endian integer.
const STABLE_KEY0: u64 = 0x7276_732d_7363_6865;
/// Second key of [`stable_hash`]: ASCII `d-hash-1` read as a big-endian integer.
const STABLE_KEY1: u64 = 0x642d_6861_7368_2d31;

/// [`stable_hash`] domain: a Maglev permutation's offset, over a real's endpoint.
const DOMAIN_MH_OFFSET: u8 = 1;
/// [`stable_hash`] domain: a Maglev permutation's skip, over a real's endpoint.
const DOMAIN_MH_SKIP: u8 = 2;
/// [`stable_hash`] domain: a Maglev lookup, over the client's endpoint.
const DOMAIN_MH_CLIENT: u8 = 3;
/// [`stable_hash`] domain: a source-hash lookup, over the client's address.
const DOMAIN_SH_CLIENT: u8 = 4;

/// The fixed hash of the hashing schedulers.
///
/// SipHash-2-4 keyed with [`STABLE_KEY0`] and [`STABLE_KEY1`] (`0x7276732d73636865`,
/// `0x642d686173682d31`) over the byte `domain` followed by `bytes`. The keys
/// are public on purpose: this hash must give the same value on every node of
/// a fleet and in every release, so that load balancers behind ECMP build the
/// same tables. Callers feed explicitly encoded bytes ([`CanonicalBytes`]),
/// never `Hash` derive output, whose encoding is not a stable contract.
/// Changing anything here remaps clients; the golden tests of the mh
/// scheduler exist to catch that.
fn stable_hash(domain: u8, bytes: &[u8]) -> u64 {
    let mut h = SipHasher24::new_with_keys(STABLE_KEY0, STABLE_KEY1);
    h.write(&[domain]);
    h.write(bytes);
    h.finish()
}

/// An address, and optionally a port, as [`stable_hash`] sees it: the family
/// byte (4 or 6), the address octets in network order, then the port
/// big-endian if there is one. Addresses are not normalised: an IPv4-mapped
/// IPv6 address is an IPv6 address.
#[derive(Debug, Clone, Copy)]
struct CanonicalBytes {
    buf: [u8; 19],
    len: usize,
}

impl CanonicalBytes {
    /// The bytes of an address alone.
    fn addr(addr: IpAddr) -> Self {
        let mut buf = [0; 19];
        let len = match addr {
            IpAddr::V4(a) => {
                buf[0] = 4;
                buf[1..5].copy_from_slice(&a.octets());
                5
            }
            IpAddr::V6(a) => {
                buf[0] = 6;
                buf[1..17].copy_from_slice(&a.octets());
                17
            }
        };
        Self { buf, len }
    }

    /// The bytes of an address and port.
    fn endpoint(ep: Endpoint) -> Self {
        let mut bytes = Self::addr(ep.addr);
        let end = bytes.len + 2;
        bytes.buf[bytes.len..end].copy_from_slice(&ep.port.to_be_bytes());
        bytes.len = end;
        bytes
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::real::TrafficCounters;

    /// A real in service at 10.0.0.`last`:80.
    pub(crate) fn real(last: u8, weight: u32) -> Real {
        real_at(Endpoint::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), 80), weight)
    }

    pub(crate) fn real_at(endpoint: Endpoint, weight: u32) -> Real {
        Real {
            endpoint,
            weight,
            in_service: true,
            active_conns: 0,
            inactive_conns: 0,
            stats: TrafficCounters::default(),
            pools: Vec::new(),
            handshake: Default::default(),
            passive: Default::default(),
            no_port: Default::default(),
            real_gen: 1,
        }
    }

    /// A deterministic stream of distinct-looking clients (splitmix64).
    pub(crate) fn clients(n: usize) -> impl Iterator<Item = Endpoint> {
        let mut state = 0x0123_4567_89ab_cdef_u64;
        (0..n).map(move |_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let [a, b, c, d, p0, p1, ..] = z.to_be_bytes();
            Endpoint::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), u16::from_be_bytes([p0, p1]))
        })
    }

    pub(crate) fn client(last: u8, port: u16) -> Endpoint {
        Endpoint::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)), port)
    }

    #[test]
    fn siphash_is_the_reference_siphash24() {
        // Test vector of the SipHash paper (Aumasson & Bernstein, appendix A):
        // key 00..0f, message 00..0e.
        let key: Vec<u8> = (0..16).collect();
        let msg: Vec<u8> = (0..15).collect();
        let k0 = u64::from_le_bytes(key[..8].try_into().unwrap());
        let k1 = u64::from_le_bytes(key[8..].try_into().unwrap());
        assert_eq!(SipHasher24::new_with_keys(k0, k1).hash(&msg), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn stable_hash_is_pinned() {
        assert_eq!(STABLE_KEY0.to_be_bytes(), *b"rvs-sche");
        assert_eq!(STABLE_KEY1.to_be_bytes(), *b"d-hash-1");
        let v4 = CanonicalBytes::endpoint(Endpoint::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 80));
        assert_eq!(v4.as_bytes(), [4, 10, 0, 0, 1, 0, 80]);
        let v6 = CanonicalBytes::addr(IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(v6.as_bytes(), [6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let v6p = CanonicalBytes::endpoint(Endpoint::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0x1234));
        assert_eq!(v6p.as_bytes()[17..], [0x12, 0x34]);
        assert_eq!(stable_hash(DOMAIN_MH_OFFSET, v4.as_bytes()), GOLDEN_HASH_OFFSET);
        assert_eq!(stable_hash(DOMAIN_MH_SKIP, v4.as_bytes()), GOLDEN_HASH_SKIP);
        assert_ne!(
            stable_hash(DOMAIN_MH_CLIENT, v4.as_bytes()),
            stable_hash(DOMAIN_SH_CLIENT, v4.as_bytes())
        );
    }

    const GOLDEN_HASH_OFFSET: u64 = 6_578_450_574_290_592_167;
    const GOLDEN_HASH_SKIP: u64 = 13_332_503_479_478_201_090;

    fn all_schedulers() -> Vec<Scheduler> {
        let mut all: Vec<Scheduler> = SchedKind::ALL.iter().map(|&k| Scheduler::new(k)).collect();
        all.push(Scheduler::mh_with_table_size(251).unwrap());
        all
    }

    #[test]
    fn kind_round_trips() {
        for &k in SchedKind::ALL {
            assert_eq!(Scheduler::new(k).kind(), k);
        }
        assert_eq!(Scheduler::mh_with_table_size(251).unwrap().kind(), SchedKind::Mh);
    }

    #[test]
    fn quiesced_and_removed_reals_are_never_picked() {
        let mut reals = vec![real(1, 0), real(2, 3), real(3, 1), real(4, 5), real(5, 2)];
        reals[3].in_service = false;
        reals[4].in_service = false;
        for mut s in all_schedulers() {
            s.update(&reals);
            let mut seen = [0_u32; 5];
            for c in clients(2000) {
                let i = s.pick(&reals, c).unwrap();
                seen[i] += 1;
            }
            assert_eq!((seen[0], seen[3], seen[4]), (0, 0, 0), "{:?} picked {seen:?}", s.kind());
            if !matches!(s.kind(), SchedKind::Lc | SchedKind::Wlc) {
                assert!(seen[1] > 0 && seen[2] > 0, "{:?} picked {seen:?}", s.kind());
            }
        }
    }

    #[test]
    fn nothing_available_picks_nothing() {
        let mut reals = vec![real(1, 0), real(2, 1)];
        reals[1].in_service = false;
        for mut s in all_schedulers() {
            assert_eq!(s.pick(&[], client(1, 1)), None);
            s.update(&[]);
            assert_eq!(s.pick(&[], client(1, 1)), None);
            s.update(&reals);
            assert_eq!(s.pick(&reals, client(1, 1)), None, "{:?}", s.kind());
            assert_eq!(s.pick(&[], client(1, 1)), None);
        }
    }

    #[test]
    fn stale_state_never_returns_an_unavailable_real() {
        let reals = vec![real(1, 1), real(2, 2), real(3, 3), real(4, 4)];
        for mut s in all_schedulers() {
            // Picks before any update.
            assert!(s.pick(&reals, client(1, 1)).is_some());
            s.update(&reals);
            // Reals shrank, without update.
            for c in clients(200) {
                assert!(s.pick(&reals[..2], c).unwrap() < 2, "{:?}", s.kind());
            }
            // Reals went out of service, without update.
            let mut changed = reals.clone();
            changed[0].weight = 0;
            changed[2].in_service = false;
            changed[3].weight = 0;
            for c in clients(200) {
                assert_eq!(s.pick(&changed, c), Some(1), "{:?}", s.kind());
            }
            // Reals grew, without update: still only available ones.
            let mut grown = changed.clone();
            grown.push(real(5, 1));
            for c in clients(200) {
                let i = s.pick(&grown, c).unwrap();
                assert!(i == 1 || i == 4, "{:?}", s.kind());
            }
        }
    }

    #[test]
    fn scan_wraps_around() {
        let mut reals = vec![real(1, 1), real(2, 0), real(3, 1)];
        assert_eq!(scan_from(&reals, 1), Some(2));
        assert_eq!(scan_from(&reals, 4), Some(2));
        reals[2].weight = 0;
        assert_eq!(scan_from(&reals, 2), Some(0));
        assert_eq!(scan_from(&[], 7), None);
    }
}
