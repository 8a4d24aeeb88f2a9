//! Health checking: which reals take new connections.
//!
//! Two sources say a real is failing: active checks (`check.rs`), run by
//! the daemon's probers, one per distinct [`Probe`] whatever the number of
//! services sharing it; and passive detection, the data path's own count of
//! handshakes and UDP flows a real left unanswered or refused. Workers only
//! count and probers only report; [`Health`] (`tracker.rs`) is the one
//! place that decides, and what it decides reaches the engines as weights:
//! 0 while down (established connections stay), ramping up over the slow
//! start after recovery, and every real at its configured weight while a
//! service panics (too little of its weight is up to trust the verdicts).

mod check;
#[cfg(test)]
mod tests;
mod tracker;
mod view;

use serde::{Deserialize, Serialize};

pub use check::{CheckKind, CheckSpec, DEFAULT_STATUS, Probe, ProbeOutcome};
pub use tracker::{
    Actions, Health, LATENCY_BUCKETS, ProberState, RealHealth, RealState, ServiceHealth, Transition,
    passive_counts, state_name,
};
pub use view::{CheckResultSnap, ProberSnap, RealHealthSnap};

/// The operator's override of a real's health (`rvs adm --maintenance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub enum Maintenance {
    /// The checks decide.
    #[default]
    Auto,
    /// Up whatever the checks say.
    Up,
    /// Down whatever the checks say: no new connections.
    Down,
}

impl Maintenance {
    /// Every value, for parsing.
    pub const ALL: [Self; 3] = [Self::Auto, Self::Up, Self::Down];

    /// The name in the config file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// What happens to a real's established connections when it goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDown {
    /// They keep running; only new connections avoid the real.
    #[default]
    Inhibit,
    /// Both sides of each get an RST.
    Reset,
}

/// `[health]`: defaults for every check, and passive detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// Milliseconds between probes of one check.
    pub interval_ms: u64,
    /// Milliseconds a probe may take; at most the interval.
    pub timeout_ms: u64,
    /// Successes in a row that bring a down real up.
    pub rise: u32,
    /// Failures in a row that take an up real down.
    pub fall: u32,
    /// Each interval is drawn within ± this share, and a new prober's first
    /// probe within one interval, so probes spread instead of lining up.
    pub jitter_pct: u32,
    /// Watch the data path's handshakes and UDP flows toward each real.
    pub passive: bool,
    /// The window passive failures are counted in.
    pub passive_window_ms: u64,
    /// Failures in a row (no success between) before a real can be marked down.
    pub passive_min_failures: u32,
    /// Share of the window's attempts that must have failed.
    pub passive_failure_pct: u32,
    /// Without an active check, a real passive detection took down comes
    /// back after this long; each time it fails again at once, twice as long.
    pub inhibit_ms: u64,
    /// Longest inhibit time.
    pub inhibit_max_ms: u64,
    /// A recovered real's weight ramps from 1 % to 100 % over this long; 0 brings it back at once.
    pub slow_start_ms: u64,
    /// A service with less than this share of its weight up treats every real as up.
    pub panic_threshold_pct: u32,
    /// What a real's established connections get when it goes down.
    pub on_down: OnDown,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            interval_ms: 1000,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
            jitter_pct: 10,
            passive: true,
            passive_window_ms: 2000,
            passive_min_failures: 2,
            passive_failure_pct: 50,
            inhibit_ms: 5000,
            inhibit_max_ms: 300_000,
            slow_start_ms: 5000,
            panic_threshold_pct: 50,
            on_down: OnDown::Inhibit,
        }
    }
}

impl HealthSettings {
    /// The checks serde cannot make; `Err` names the key.
    pub fn check(&self) -> Result<(), String> {
        let ms = |key: &str, v: u64| {
            if (1..=3_600_000).contains(&v) {
                Ok(())
            } else {
                Err(format!("health.{key} must be in 1..=3600000"))
            }
        };
        ms("interval_ms", self.interval_ms)?;
        ms("timeout_ms", self.timeout_ms)?;
        ms("passive_window_ms", self.passive_window_ms)?;
        ms("inhibit_ms", self.inhibit_ms)?;
        ms("inhibit_max_ms", self.inhibit_max_ms)?;
        if self.slow_start_ms > 3_600_000 {
            return Err("health.slow_start_ms must be at most 3600000".into());
        }
        if self.rise == 0 || self.fall == 0 || self.passive_min_failures == 0 {
            return Err("health.rise, health.fall and health.passive_min_failures must be at least 1".into());
        }
        if self.jitter_pct > 50 {
            return Err("health.jitter_pct must be at most 50".into());
        }
        if self.passive_failure_pct == 0 || self.passive_failure_pct > 100 || self.panic_threshold_pct > 100 {
            return Err(
                "health.passive_failure_pct must be in 1..=100, health.panic_threshold_pct in 0..=100".into(),
            );
        }
        Ok(())
    }
}
