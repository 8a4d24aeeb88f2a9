//! One prober's thread: when it probes, how it stops, and the heartbeat
//! that lets [`super::Probers::stuck`] see it from outside.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use rvs_control::health::{Probe, ProbeOutcome};

use super::{Runner, after};

/// Shortest time between two probes of one prober, whatever the config
/// says: a zero interval must not become a busy loop.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Largest jitter: more would let a prober probe back to back.
const MAX_JITTER_PCT: u32 = 50;

/// One outcome on its way to [`super::Probers::drain`].
#[derive(Debug)]
pub(super) struct Report {
    pub(super) probe: Arc<Probe>,
    /// The prober that sent it.
    pub(super) prober: u64,
    pub(super) outcome: ProbeOutcome,
}

/// A prober's stop request: the other end is dropped to ask for it, so it
/// is seen at once by a waiting prober, also one in the middle of an exec
/// probe.
#[derive(Debug)]
pub(super) struct Stop(Receiver<()>);

impl Stop {
    pub(super) fn new(rx: Receiver<()>) -> Self {
        Self(rx)
    }

    /// Waits up to `timeout`; true if a stop was asked for.
    pub(super) fn wait(&self, timeout: Duration) -> bool {
        !matches!(self.0.recv_timeout(timeout), Err(RecvTimeoutError::Timeout))
    }

    /// Whether a stop was asked for.
    pub(super) fn requested(&self) -> bool {
        !matches!(self.0.try_recv(), Err(TryRecvError::Empty))
    }
}

/// When the prober last started a probe (or was created) and whether that
/// probe still runs, in one atomic word: milliseconds since `epoch` << 1 |
/// running.
#[derive(Debug)]
pub(super) struct Heartbeat {
    epoch: Instant,
    word: AtomicU64,
}

impl Heartbeat {
    pub(super) fn new(epoch: Instant) -> Self {
        Self { epoch, word: AtomicU64::new(0) }
    }

    fn mark(&self, started: Instant, running: bool) {
        let ms =
            u64::try_from(started.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX >> 1);
        self.word.store(ms << 1 | u64::from(running), Ordering::Release);
    }

    /// The last start and whether that probe is still running.
    pub(super) fn read(&self) -> (Instant, bool) {
        let word = self.word.load(Ordering::Acquire);
        (after(self.epoch, Duration::from_millis(word >> 1)), word & 1 == 1)
    }
}

/// How probes spread: each interval drawn within ± a share of itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct Jitter {
    pct: u32,
}

impl Jitter {
    pub(super) fn new(pct: u32) -> Self {
        Self { pct: pct.min(MAX_JITTER_PCT) }
    }

    /// The longest time between two probes' starts for `interval`.
    pub(super) fn longest(self, interval: Duration) -> Duration {
        let interval = interval.max(MIN_INTERVAL);
        interval.saturating_add(interval.mul_f64(f64::from(self.pct) / 100.0))
    }

    /// A prober's own draws, from `seed`.
    pub(super) fn schedule(self, seed: u64) -> Schedule {
        Schedule { pct: self.pct, state: seed }
    }
}

/// One prober's random draws (splitmix64: cheap, and the seed comes from
/// the OS, so probers of different daemons do not line up).
#[derive(Debug)]
pub(super) struct Schedule {
    pct: u32,
    state: u64,
}

impl Schedule {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, limit)` (zero for a zero limit).
    fn below(&mut self, limit: Duration) -> Duration {
        let limit = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.next_u64().checked_rem(limit).unwrap_or(0))
    }

    /// The wait before a new prober's first probe: within one interval.
    fn first(&mut self, interval: Duration) -> Duration {
        self.below(interval)
    }

    /// The time from one probe's start to the next: `interval` ± the jitter.
    fn next(&mut self, interval: Duration) -> Duration {
        let span = interval.mul_f64(f64::from(self.pct) / 100.0);
        interval.saturating_sub(span).saturating_add(self.below(span.saturating_mul(2)))
    }
}

/// Everything a prober's thread owns.
#[derive(Debug)]
pub(super) struct Run {
    pub(super) probe: Arc<Probe>,
    pub(super) id: u64,
    pub(super) schedule: Schedule,
    pub(super) heartbeat: Arc<Heartbeat>,
    pub(super) stop: Stop,
    pub(super) reports: Sender<Report>,
    pub(super) runner: Runner,
}

impl Run {
    /// Probes until stopped, one probe at a time; an outcome that a stop
    /// overtook is not sent.
    pub(super) fn run(mut self) {
        let interval = self.probe.interval.max(MIN_INTERVAL);
        let mut due = after(Instant::now(), self.schedule.first(interval));
        loop {
            if self.stop.wait(due.saturating_duration_since(Instant::now())) {
                return;
            }
            let started = Instant::now();
            self.heartbeat.mark(started, true);
            let outcome = (self.runner)(&self.probe, &self.stop);
            self.heartbeat.mark(started, false);
            if self.stop.requested() {
                return;
            }
            let report = Report { probe: self.probe.clone(), prober: self.id, outcome };
            if self.reports.send(report).is_err() {
                return;
            }
            due = after(started, self.schedule.next(interval)).max(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_within_their_bounds() {
        let mut s = Jitter::new(20).schedule(7);
        let second = Duration::from_secs(1);
        for _ in 0..1000 {
            assert!(s.first(second) < second);
            let next = s.next(second);
            assert!((Duration::from_millis(800)..=Duration::from_millis(1200)).contains(&next), "{next:?}");
        }
        assert_eq!(Jitter::new(20).longest(second), Duration::from_millis(1200));
        assert_eq!(Jitter::new(90).longest(second), Duration::from_millis(1500), "jitter is capped");
        assert_eq!(s.first(Duration::ZERO), Duration::ZERO);
        assert!(s.next(Duration::MAX) > Duration::ZERO);
        let _ = after(Instant::now(), Duration::MAX);
    }

    #[test]
    fn heartbeat_reads_back_what_was_marked() {
        let epoch = Instant::now();
        let h = Heartbeat::new(epoch);
        assert_eq!(h.read(), (epoch, false));
        let t = epoch + Duration::from_millis(1500);
        h.mark(t, true);
        assert_eq!(h.read(), (t, true));
        h.mark(t, false);
        assert_eq!(h.read(), (t, false));
    }
}
