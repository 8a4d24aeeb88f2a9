//! Source hashing: the client's address, not its port, picks the real, so
//! every connection from one client lands on the same real (session
//! affinity) for as long as the reals do not change.
//!
//! The address is hashed with the fleet-wide [`stable_hash`] into a table of
//! [`BUCKETS`] buckets. The table is filled in proportion to the weights, in
//! the order smooth weighted round robin would pick the reals, so each real
//! owns within a bucket or so of `BUCKETS * weight / total weight` buckets,
//! spread over the table. Any change to the reals may remap clients; mh
//! is the scheduler that limits that.

use std::net::IpAddr;

use super::wrr::SmoothWeighted;
use super::{CanonicalBytes, DOMAIN_SH_CLIENT, stable_hash};
use crate::real::Real;

/// Buckets of the source-hash table.
///
/// LVS uses 256; 4096 gives weights a resolution of 1/4096 and lets up to
/// 4096 reals all own a bucket, for 16 KiB per service.
pub const BUCKETS: usize = 4096;

/// The bucket table as of the last update.
#[derive(Debug, Clone, Default)]
pub(super) struct SourceHash {
    /// Real index per bucket; empty when no real was available.
    table: Vec<u32>,
}

impl SourceHash {
    pub(super) fn update(&mut self, reals: &[Real]) {
        self.table.clear();
        let mut order = SmoothWeighted::default();
        order.update(reals);
        for _ in 0..BUCKETS {
            match order.pick(reals).and_then(|i| u32::try_from(i).ok()) {
                Some(i) => self.table.push(i),
                None => break,
            }
        }
        // No real available (or an index beyond `u32`): no table, and picks
        // fall back to a scan.
        if self.table.len() != BUCKETS {
            self.table.clear();
        }
    }

    /// The real of the client's bucket; if that real is no longer available
    /// (the reals changed without an update), the next bucket's, and so on.
    pub(super) fn pick(&self, reals: &[Real], client: IpAddr) -> Option<usize> {
        let len = self.table.len();
        if len == 0 {
            return None;
        }
        let hash = stable_hash(DOMAIN_SH_CLIENT, CanonicalBytes::addr(client).as_bytes());
        // `len` is a power of two; `usize` is at least 32 bits.
        let start = (hash as usize) & (len - 1);
        let (head, tail) = self.table.split_at(start);
        tail.iter().chain(head).map(|&i| i as usize).find(|&i| reals.get(i).is_some_and(Real::available))
    }

    pub(super) fn table(&self) -> &[u32] {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use super::super::Scheduler;
    use super::super::tests::{client, clients, real};
    use super::BUCKETS;
    use crate::addr::Endpoint;
    use crate::config::SchedKind;

    #[test]
    fn same_address_same_real_across_ports() {
        let reals = vec![real(1, 1), real(2, 1), real(3, 1), real(4, 1)];
        let mut s = Scheduler::new(SchedKind::Sh);
        s.update(&reals);
        let mut used = [false; 4];
        for c in clients(200) {
            let first = s.pick(&reals, c).unwrap();
            used[first] = true;
            for port in [1, 80, 443, 40000, 65535] {
                assert_eq!(s.pick(&reals, Endpoint::new(c.addr, port)), Some(first));
            }
        }
        assert_eq!(used, [true; 4]);
        let v6 = Endpoint::new(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)), 1);
        let first = s.pick(&reals, v6);
        assert_eq!(s.pick(&reals, Endpoint::new(v6.addr, 2)), first);
    }

    #[test]
    fn buckets_follow_weights() {
        let reals = vec![real(1, 3), real(2, 0), real(3, 2), real(4, 1), real(5, 7)];
        let mut s = Scheduler::new(SchedKind::Sh);
        s.update(&reals);
        let table = s.lookup_table().unwrap();
        assert_eq!(table.len(), BUCKETS);
        let mut counts = [0_usize; 5];
        for &i in table {
            counts[i as usize] += 1;
        }
        for (i, r) in reals.iter().enumerate() {
            let exact = BUCKETS as f64 * f64::from(r.weight) / 13.0;
            assert!((counts[i] as f64 - exact).abs() <= 1.0, "{counts:?}");
        }
        // Spread over the table, not in runs: no run longer than the heaviest
        // real's share of one weight cycle.
        let longest = table.chunk_by(|a, b| a == b).map(<[u32]>::len).max().unwrap();
        assert!(longest <= 2, "run of {longest}");
    }

    #[test]
    fn stale_bucket_falls_through_to_the_next() {
        let mut reals = vec![real(1, 1), real(2, 1)];
        let mut s = Scheduler::new(SchedKind::Sh);
        s.update(&reals);
        reals[0].in_service = false;
        for c in clients(100) {
            assert_eq!(s.pick(&reals, c), Some(1));
        }
        assert_eq!(s.pick(&reals[..1], client(1, 1)), None);
    }
}
