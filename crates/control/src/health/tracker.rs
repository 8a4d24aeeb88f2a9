//! The one place that decides which reals are up.

/// Health state of every real and prober.
#[derive(Debug, Default)]
pub struct Health {}
