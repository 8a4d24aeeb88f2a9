//! Schedulers: which real gets a new connection.
//!
//! All schedulers share one contract: [`Scheduler::update`] is called after any
//! change to the reals (added, removed, weight changed) and [`Scheduler::pick`]
//! returns the index of a real that is [`Real::available`], or `None` when no
//! real is. Picks are deterministic given the same sequence of calls.

use crate::addr::Endpoint;
use crate::config::SchedKind;
use crate::service::Real;

/// A scheduler of one service.
#[derive(Debug, Clone)]
pub struct Scheduler {
    kind: SchedKind,
}

impl Scheduler {
    /// A scheduler of `kind` with no reals yet.
    pub fn new(kind: SchedKind) -> Self {
        Self { kind }
    }

    /// The algorithm.
    pub fn kind(&self) -> SchedKind {
        self.kind
    }

    /// Rebuild internal state after the set of reals or their weights changed.
    pub fn update(&mut self, reals: &[Real]) {
        let _ = reals;
        unimplemented!("scheduler update")
    }

    /// The index in `reals` of the real for a new connection from `client`.
    pub fn pick(&mut self, reals: &[Real], client: Endpoint) -> Option<usize> {
        let _ = (reals, client);
        unimplemented!("scheduler pick")
    }
}
