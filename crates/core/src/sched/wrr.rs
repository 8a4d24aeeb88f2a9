//! Smooth weighted round robin, as nginx balances upstreams.
//!
//! Every pick, each available real's credit grows by its weight; the real
//! with the most credit (lowest index on ties) is picked and gives back the
//! total weight. The picks repeat with a period of the total weight, each
//! real picked exactly `weight` times per period, and they interleave:
//! weights 5, 1, 1 give `a a b a c a a`, not `a a a a a b c`.

use crate::real::Real;

/// Credit of every real; reset by each update.
#[derive(Debug, Clone, Default)]
pub(super) struct SmoothWeighted {
    /// Indexed like the reals. Bounded by the total weight in magnitude, so
    /// `i64` holds any `u32` weights; the arithmetic saturates regardless.
    current: Vec<i64>,
}

impl SmoothWeighted {
    /// Restart the interleaving for the new set of weights.
    pub(super) fn update(&mut self, reals: &[Real]) {
        self.current.clear();
        self.current.resize(reals.len(), 0);
    }

    /// The next real; reals beyond those known at the last update are not
    /// considered (they are until the update that should have come with them).
    pub(super) fn pick(&mut self, reals: &[Real]) -> Option<usize> {
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for (i, (real, current)) in reals.iter().zip(self.current.iter_mut()).enumerate() {
            if !real.available() {
                continue;
            }
            let weight = i64::from(real.weight);
            *current = current.saturating_add(weight);
            total = total.saturating_add(weight);
            if best.is_none_or(|(_, most)| *current > most) {
                best = Some((i, *current));
            }
        }
        let (i, _) = best?;
        if let Some(current) = self.current.get_mut(i) {
            *current = current.saturating_sub(total);
        }
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Scheduler;
    use super::super::tests::{client, real};
    use crate::config::SchedKind;

    #[test]
    fn interleaves_like_nginx() {
        let reals = vec![real(1, 5), real(2, 1), real(3, 1)];
        let mut s = Scheduler::new(SchedKind::Wrr);
        s.update(&reals);
        let picks: Vec<usize> = (0..14).map(|_| s.pick(&reals, client(1, 1)).unwrap()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn shares_are_exact() {
        let reals = vec![real(1, 3), real(2, 2), real(3, 1)];
        let mut s = Scheduler::new(SchedKind::Wrr);
        s.update(&reals);
        let mut counts = [0_u32; 3];
        for _ in 0..6000 {
            counts[s.pick(&reals, client(1, 1)).unwrap()] += 1;
        }
        assert_eq!(counts, [3000, 2000, 1000]);
    }

    #[test]
    fn every_period_of_total_weight_is_exact() {
        let reals = vec![real(1, 7), real(2, 0), real(3, 3), real(4, 2)];
        let mut s = Scheduler::new(SchedKind::Wrr);
        s.update(&reals);
        for _ in 0..10 {
            let mut counts = [0_u32; 4];
            for _ in 0..12 {
                counts[s.pick(&reals, client(1, 1)).unwrap()] += 1;
            }
            assert_eq!(counts, [7, 0, 3, 2]);
        }
    }

    #[test]
    fn extreme_weights_do_not_overflow() {
        let reals = vec![real(1, u32::MAX), real(2, u32::MAX), real(3, 1)];
        let mut s = Scheduler::new(SchedKind::Wrr);
        s.update(&reals);
        let picks: Vec<usize> = (0..4).map(|_| s.pick(&reals, client(1, 1)).unwrap()).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }
}
