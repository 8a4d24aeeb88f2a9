//! Least connections (lc) and weighted least connections (wlc), as LVS
//! defines them.
//!
//! A real's load is its LVS overhead, `active * 256 + inactive`: an
//! established connection costs far more than one opening or closing. lc
//! picks the smallest overhead, wlc the smallest overhead per unit of weight.
//! Ties go to the lowest index. Both scan every real on each pick; they keep
//! no state, so they cannot go stale.

use crate::real::Real;

/// The LVS overhead of a real: at most about 2^40, so any `u32` weight
/// multiplies it within `u128`.
fn overhead(real: &Real) -> u64 {
    u64::from(real.active_conns) * 256 + u64::from(real.inactive_conns)
}

/// The available real with the smallest overhead.
pub(super) fn least_connections(reals: &[Real]) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (i, real) in reals.iter().enumerate() {
        if !real.available() {
            continue;
        }
        let load = overhead(real);
        if best.is_none_or(|(_, least)| load < least) {
            best = Some((i, load));
        }
    }
    best.map(|(i, _)| i)
}

/// The available real with the smallest overhead / weight, compared by
/// cross-multiplication so no precision is lost to division. The products
/// need up to 72 bits (overhead ~2^40 times weight 2^32), hence `u128`.
pub(super) fn weighted_least_connections(reals: &[Real]) -> Option<usize> {
    let mut best: Option<(usize, u128, u128)> = None;
    for (i, real) in reals.iter().enumerate() {
        if !real.available() {
            continue;
        }
        let (load, weight) = (u128::from(overhead(real)), u128::from(real.weight));
        // load / weight < least / least_weight
        if best.is_none_or(|(_, least, least_weight)| load * least_weight < least * weight) {
            best = Some((i, load, weight));
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::super::Scheduler;
    use super::super::tests::{client, real};
    use crate::config::SchedKind;
    use crate::real::Real;

    fn loaded(last: u8, weight: u32, active: u32, inactive: u32) -> Real {
        let mut r = real(last, weight);
        r.active_conns = active;
        r.inactive_conns = inactive;
        r
    }

    fn pick(kind: SchedKind, reals: &[Real]) -> Option<usize> {
        let mut s = Scheduler::new(kind);
        s.update(reals);
        s.pick(reals, client(1, 1))
    }

    #[test]
    fn lc_picks_least_overhead() {
        // Overheads 512, 300, 257, 0 (quiesced), 256: index 4 wins.
        let reals = [
            loaded(1, 1, 2, 0),
            loaded(2, 9, 1, 44),
            loaded(3, 1, 1, 1),
            loaded(4, 0, 0, 0),
            loaded(5, 1, 1, 0),
        ];
        assert_eq!(pick(SchedKind::Lc, &reals), Some(4));
        // One active weighs more than 255 inactive.
        let reals = [loaded(1, 1, 1, 0), loaded(2, 1, 0, 255)];
        assert_eq!(pick(SchedKind::Lc, &reals), Some(1));
        // lc ignores weight.
        let reals = [loaded(1, 100, 1, 0), loaded(2, 1, 0, 1)];
        assert_eq!(pick(SchedKind::Lc, &reals), Some(1));
    }

    #[test]
    fn ties_go_to_the_lowest_index() {
        let reals = [loaded(1, 0, 0, 0), loaded(2, 1, 3, 1), loaded(3, 1, 3, 1), loaded(4, 1, 3, 1)];
        assert_eq!(pick(SchedKind::Lc, &reals), Some(1));
        assert_eq!(pick(SchedKind::Wlc, &reals), Some(1));
        // 512 / 2 == 256 / 1
        let reals = [loaded(1, 2, 2, 0), loaded(2, 1, 1, 0)];
        assert_eq!(pick(SchedKind::Wlc, &reals), Some(0));
    }

    #[test]
    fn wlc_picks_least_overhead_per_weight() {
        // Overhead per weight: 1024/4 = 256, 300/1 = 300, 600/3 = 200.
        let reals = [loaded(1, 4, 4, 0), loaded(2, 1, 1, 44), loaded(3, 3, 2, 88)];
        assert_eq!(pick(SchedKind::Wlc, &reals), Some(2));
        // An idle real wins whatever its weight.
        let reals = [loaded(1, 1000, 1, 0), loaded(2, 1, 0, 0)];
        assert_eq!(pick(SchedKind::Wlc, &reals), Some(1));
    }

    #[test]
    fn wlc_extremes_do_not_overflow() {
        // Overheads ~2^40 and weights 2^32 - 1: the products exceed 64 bits.
        let reals = [loaded(1, u32::MAX, u32::MAX, u32::MAX), loaded(2, u32::MAX - 1, u32::MAX, u32::MAX)];
        assert_eq!(pick(SchedKind::Wlc, &reals), Some(0));
        assert_eq!(pick(SchedKind::Lc, &reals), Some(0));
    }

    #[test]
    fn balances_as_connections_accumulate() {
        let mut reals = vec![real(1, 3), real(2, 1)];
        let mut s = Scheduler::new(SchedKind::Wlc);
        s.update(&reals);
        for _ in 0..400 {
            let i = s.pick(&reals, client(1, 1)).unwrap();
            reals[i].active_conns += 1;
        }
        assert_eq!((reals[0].active_conns, reals[1].active_conns), (300, 100));
    }
}
