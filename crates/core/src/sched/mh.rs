//! Maglev hashing with weights (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, section 3.4).
//!
//! The client's address and port pick an entry of a lookup table of prime
//! size `M`; the table says which real. Two promises:
//!
//! - Agreement: which endpoint a client maps to depends only on `M` and the
//!   set of available reals' endpoints and weights (not on their order in the
//!   service), through the fixed [`stable_hash`], so every load balancer of a
//!   fleet and every release of this code sends a client to the same real.
//! - Little disruption: when a real comes or goes, most entries keep their
//!   real, so most clients stay where they were (about the changed real's
//!   share of entries moves, plus a few percent).
//!
//! Each available real has a permutation of the table slots:
//! `offset = h(name, 1) % M`, `skip = h(name, 2) % (M - 1) + 1`, slot `j` of
//! the permutation is `(offset + j * skip) % M`, where `name` is the real's
//! endpoint as [`CanonicalBytes`] and `h(name, d)` is `stable_hash(d, name)`.
//! Since `M` is prime every permutation visits every slot.
//!
//! The table is filled in rounds, reals in the order of their names (so the
//! order in which reals were added does not matter). Each round every
//! available real gains credit equal to its weight and, for each whole
//! multiple of the largest weight in its credit, spends that much to claim
//! the next slot of its permutation not yet taken. The heaviest reals claim
//! one slot per round and the others in proportion, so shares of the table
//! follow the weights. Filling stops when every slot is taken. All of it is
//! integer arithmetic.
//!
//! The table is built by `update` (control plane); a pick is one hash and one
//! table read.

use core::fmt;

use super::{CanonicalBytes, DOMAIN_MH_CLIENT, DOMAIN_MH_OFFSET, DOMAIN_MH_SKIP, stable_hash};
use crate::addr::Endpoint;
use crate::real::Real;

/// Default size of the lookup table, the paper's: a prime well above 100
/// times any plausible number of reals, so shares stay within about 1% of
/// the weights, at 256 KiB per service.
pub const TABLE_SIZE: u32 = 65_537;

/// Largest accepted table size: 64 MiB of table per service.
pub const MAX_TABLE_SIZE: u32 = 1 << 24;

/// Marks a slot not yet claimed while filling.
const EMPTY: u32 = u32::MAX;

/// The lookup table as of the last update.
#[derive(Clone)]
pub(super) struct Maglev {
    /// `M`, prime.
    size: u32,
    /// Real index per slot, `size` long; empty when no real was available.
    table: Vec<u32>,
}

impl Default for Maglev {
    fn default() -> Self {
        Self { size: TABLE_SIZE, table: Vec::new() }
    }
}

impl fmt::Debug for Maglev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev").field("size", &self.size).field("built", &!self.table.is_empty()).finish()
    }
}

/// A real's walk along its permutation while the table fills.
struct Walk {
    name: CanonicalBytes,
    real: u32,
    weight: u64,
    credit: u64,
    /// The next slot of the permutation to try.
    slot: u64,
    skip: u64,
}

impl Maglev {
    /// A table of `size` entries, if `size` is a prime no larger than
    /// [`MAX_TABLE_SIZE`].
    pub(super) fn with_table_size(size: u32) -> Option<Self> {
        (size <= MAX_TABLE_SIZE && is_prime(size)).then(|| Self { size, table: Vec::new() })
    }

    pub(super) fn update(&mut self, reals: &[Real]) {
        self.table.clear();
        let m = u64::from(self.size);
        let mut walks: Vec<Walk> = reals
            .iter()
            .enumerate()
            .filter(|(_, r)| r.available())
            .filter_map(|(i, r)| {
                let real = u32::try_from(i).ok().filter(|&i| i != EMPTY)?;
                let name = CanonicalBytes::endpoint(r.endpoint);
                Some(Walk {
                    name,
                    real,
                    weight: u64::from(r.weight),
                    credit: 0,
                    slot: stable_hash(DOMAIN_MH_OFFSET, name.as_bytes()) % m,
                    skip: stable_hash(DOMAIN_MH_SKIP, name.as_bytes()) % (m - 1) + 1,
                })
            })
            .collect();
        // Stable sort: reals listed twice keep index order.
        walks.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        let Some(max_weight) = walks.iter().map(|w| w.weight).max() else {
            return;
        };
        self.table.resize(self.size as usize, EMPTY);
        let mut unclaimed = self.table.len();
        // Every round the heaviest real claims a slot, so this ends within
        // `M` rounds; each claim ends because `M` is prime: the permutation
        // reaches every slot, and one is still free.
        while unclaimed > 0 {
            for walk in &mut walks {
                walk.credit += walk.weight;
                while walk.credit >= max_weight && unclaimed > 0 {
                    walk.credit -= max_weight;
                    loop {
                        let entry = &mut self.table[walk.slot as usize];
                        walk.slot = (walk.slot + walk.skip) % m;
                        if *entry == EMPTY {
                            *entry = walk.real;
                            break;
                        }
                    }
                    unclaimed -= 1;
                }
            }
        }
    }

    /// The real of the client's slot; `None` before the first update or when
    /// no real was available then.
    pub(super) fn pick(&self, client: Endpoint) -> Option<usize> {
        let len = u64::try_from(self.table.len()).ok().filter(|&l| l > 0)?;
        let hash = stable_hash(DOMAIN_MH_CLIENT, CanonicalBytes::endpoint(client).as_bytes());
        let slot = usize::try_from(hash % len).ok()?;
        self.table.get(slot).map(|&i| i as usize)
    }

    pub(super) fn table(&self) -> &[u32] {
        &self.table
    }
}

/// Whether `n` is prime, by trial division (`n` is a table size: at most
/// 2^32, so at most 2^16 divisions).
fn is_prime(n: u32) -> bool {
    let n = u64::from(n);
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 {
        return false;
    }
    let mut d = 3;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::super::tests::{clients, real, real_at};
    use super::super::{Scheduler, stable_hash};
    use super::*;
    use crate::config::SchedKind;

    fn counts(table: &[u32], n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for &i in table {
            counts[i as usize] += 1;
        }
        counts
    }

    fn built(reals: &[Real], size: u32) -> Scheduler {
        let mut s = Scheduler::mh_with_table_size(size).unwrap();
        s.update(reals);
        s
    }

    #[test]
    fn table_sizes_must_be_prime_and_bounded() {
        let primes: Vec<u32> = (0..60).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59]);
        assert!(is_prime(65_537) && is_prime(655_373) && is_prime(4_294_967_291));
        assert!(!is_prime(65_535) && !is_prime(u32::MAX) && !is_prime(251 * 257));
        for bad in [0, 1, 4, 65_536, 4_294_967_291] {
            assert!(Scheduler::mh_with_table_size(bad).is_none(), "{bad}");
        }
        assert!(Scheduler::mh_with_table_size(2).is_some());
        assert_eq!(Scheduler::new(SchedKind::Mh).lookup_table(), Some(&[][..]));
    }

    #[test]
    fn tiny_tables_fill() {
        for size in [2, 3, 5, 251] {
            let reals = vec![real(1, 1), real(2, 7), real(3, 2)];
            let s = built(&reals, size);
            let table = s.lookup_table().unwrap();
            assert_eq!(table.len(), size as usize);
            assert!(table.iter().all(|&i| i < 3));
        }
    }

    #[test]
    fn weighted_shares_of_table_and_clients() {
        let reals = vec![real(1, 3), real(2, 2), real(3, 1)];
        let mut s = built(&reals, TABLE_SIZE);
        let entries = counts(s.lookup_table().unwrap(), 3);
        let mut picks = [0_u32; 3];
        for c in clients(10_000) {
            picks[s.pick(&reals, c).unwrap()] += 1;
        }
        for (i, want) in [50.0, 100.0 / 3.0, 100.0 / 6.0].into_iter().enumerate() {
            let table_share = 100.0 * entries[i] as f64 / f64::from(TABLE_SIZE);
            assert!((table_share - want).abs() < 0.1, "table {entries:?}");
            let client_share = f64::from(picks[i]) / 100.0;
            assert!((client_share - want).abs() < 2.0, "clients {picks:?}");
        }
    }

    #[test]
    fn removing_one_of_five_moves_little() {
        let mut reals: Vec<Real> = (1..=5).map(|i| real(i, 1)).collect();
        let before = built(&reals, TABLE_SIZE).lookup_table().unwrap().to_vec();
        reals[2].in_service = false;
        let after = built(&reals, TABLE_SIZE).lookup_table().unwrap().to_vec();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let share = moved as f64 / f64::from(TABLE_SIZE);
        // The removed real's 20% must move; Maglev adds a little churn.
        assert!(share > 0.19 && share < 0.25, "moved {share}");
        assert!(!after.contains(&2));
    }

    #[test]
    fn adding_a_sixth_moves_little() {
        let mut reals: Vec<Real> = (1..=5).map(|i| real(i, 1)).collect();
        let before = built(&reals, TABLE_SIZE).lookup_table().unwrap().to_vec();
        reals.push(real(6, 1));
        let after = built(&reals, TABLE_SIZE).lookup_table().unwrap().to_vec();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let share = moved as f64 / f64::from(TABLE_SIZE);
        assert!(share > 0.16 && share < 0.22, "moved {share}");
    }

    #[test]
    fn mapping_ignores_order_and_unavailable_reals() {
        let a = vec![real(1, 1), real(2, 3), real(3, 2)];
        let mut b = vec![real(3, 2), real(9, 0), real(1, 1), real(8, 5), real(2, 3)];
        b[3].in_service = false;
        let (mut sa, mut sb) = (built(&a, 251), built(&b, 251));
        for c in clients(1000) {
            let ra = a[sa.pick(&a, c).unwrap()].endpoint;
            let rb = b[sb.pick(&b, c).unwrap()].endpoint;
            assert_eq!(ra, rb);
        }
    }

    #[test]
    fn client_port_matters() {
        let reals: Vec<Real> = (1..=4).map(|i| real(i, 1)).collect();
        let mut s = built(&reals, TABLE_SIZE);
        let addr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        let mut used = [false; 4];
        for port in 1000..1100 {
            used[s.pick(&reals, Endpoint::new(addr, port)).unwrap()] = true;
        }
        assert_eq!(used, [true; 4]);
    }

    fn golden_reals() -> Vec<Real> {
        vec![real(1, 1), real(2, 1), real(3, 2)]
    }

    /// Pins the table across releases: if this fails, every node running the
    /// new code maps clients differently from nodes running the old.
    #[test]
    fn golden_table() {
        let s = built(&golden_reals(), 65_537);
        let table = s.lookup_table().unwrap();
        assert_eq!(table[..16], GOLDEN_FIRST_16);
        assert_eq!(counts(table, 3), GOLDEN_COUNTS);
        let weighted: u64 = table.iter().enumerate().map(|(slot, &i)| slot as u64 * (u64::from(i) + 1)).sum();
        assert_eq!(weighted, GOLDEN_WEIGHTED_SUM);
    }

    const GOLDEN_FIRST_16: [u32; 16] = [2, 1, 2, 2, 1, 2, 2, 1, 2, 2, 1, 2, 0, 2, 0, 0];
    const GOLDEN_COUNTS: [usize; 3] = [16_384, 16_384, 32_769];
    /// Sum over slots of `slot * (real + 1)`: pins the whole table.
    const GOLDEN_WEIGHTED_SUM: u64 = 4_835_012_526;

    #[test]
    fn golden_picks() {
        let reals = golden_reals();
        let mut s = built(&reals, 65_537);
        let v4 = |a, b, c, d, port| Endpoint::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port);
        let clients = [
            v4(192, 0, 2, 1, 1024),
            v4(192, 0, 2, 1, 1025),
            v4(198, 51, 100, 200, 443),
            v4(203, 0, 113, 9, 65535),
            v4(10, 1, 2, 3, 5555),
            v4(0, 0, 0, 0, 0),
            Endpoint::new(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)), 40000),
            Endpoint::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 80),
        ];
        let picks: Vec<usize> = clients.iter().map(|&c| s.pick(&reals, c).unwrap()).collect();
        let slots: Vec<u64> = clients
            .iter()
            .map(|&c| stable_hash(DOMAIN_MH_CLIENT, CanonicalBytes::endpoint(c).as_bytes()) % 65_537)
            .collect();
        assert_eq!(slots, GOLDEN_SLOTS);
        assert_eq!(picks, GOLDEN_PICKS);
    }

    const GOLDEN_SLOTS: [u64; 8] = [4672, 48_577, 39_097, 9229, 5011, 11_145, 13_070, 35_640];
    const GOLDEN_PICKS: [usize; 8] = [2, 2, 1, 0, 0, 0, 1, 1];

    #[test]
    fn ipv6_reals() {
        let v6 = |last| Endpoint::new(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)), 443);
        let reals = vec![real_at(v6(1), 1), real_at(v6(2), 1), real(3, 1)];
        let s = built(&reals, 251);
        let entries = counts(s.lookup_table().unwrap(), 3);
        assert!(entries.iter().all(|&n| (70..=98).contains(&n)), "{entries:?}");
    }
}
