//! Round robin: each available real in index order gets one new connection
//! in turn, whatever its weight.

use crate::real::Real;

/// The available reals as of the last update and where the turn is.
#[derive(Debug, Clone, Default)]
pub(super) struct RoundRobin {
    /// Indices of the reals available at the last update, ascending.
    order: Vec<usize>,
    /// Position in `order` of the next turn.
    next: usize,
    /// The real picked last, so an update resumes the rotation after it
    /// instead of restarting at the first real.
    last: Option<usize>,
}

impl RoundRobin {
    pub(super) fn update(&mut self, reals: &[Real]) {
        self.order.clear();
        self.order.extend(reals.iter().enumerate().filter(|(_, r)| r.available()).map(|(i, _)| i));
        self.next = match self.last {
            Some(last) => self.order.iter().position(|&i| i > last).unwrap_or(0),
            None => 0,
        };
    }

    /// The next real in turn that is still available; `None` if none of
    /// those known at the last update is.
    pub(super) fn pick(&mut self, reals: &[Real]) -> Option<usize> {
        for _ in 0..self.order.len() {
            let i = *self.order.get(self.next)?;
            self.next = (self.next + 1) % self.order.len();
            if reals.get(i).is_some_and(Real::available) {
                self.last = Some(i);
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::Scheduler;
    use super::super::tests::{client, real};
    use crate::config::SchedKind;

    #[test]
    fn cycles_over_available_reals_ignoring_weight() {
        let mut reals = vec![real(1, 5), real(2, 0), real(3, 1), real(4, 2)];
        let mut s = Scheduler::new(SchedKind::Rr);
        s.update(&reals);
        let picks: Vec<usize> = (0..7).map(|_| s.pick(&reals, client(1, 1)).unwrap()).collect();
        assert_eq!(picks, [0, 2, 3, 0, 2, 3, 0]);

        // An update resumes after the last pick rather than restarting.
        reals[1].weight = 1;
        s.update(&reals);
        let picks: Vec<usize> = (0..5).map(|_| s.pick(&reals, client(1, 1)).unwrap()).collect();
        assert_eq!(picks, [1, 2, 3, 0, 1]);

        // So does removing the real that would be next.
        reals[2].in_service = false;
        s.update(&reals);
        let picks: Vec<usize> = (0..3).map(|_| s.pick(&reals, client(1, 1)).unwrap()).collect();
        assert_eq!(picks, [3, 0, 1]);
    }
}
