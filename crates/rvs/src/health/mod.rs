//! The daemon's probers: one thread per distinct [`Probe`], however many
//! services share it, each running its check on its own schedule and
//! reporting every outcome to the control plane, which alone decides up and
//! down.
//!
//! Probes are ordinary kernel sockets (and `sh` for exec checks) from the
//! daemon's own network namespace toward the real's address; nothing passes
//! through rvs's data path, so a sick data path cannot fake a healthy real
//! and probes never count as client connections.
//!
//! What [`Probers`] promises:
//! - a reload ([`Probers::sync`]) starts only new probes and stops only
//!   those no longer wanted; the others keep their thread and their schedule;
//! - no outcome of a stopped prober is ever handed out by [`Probers::drain`];
//! - a prober that froze (its probe ran past its timeout, or it stopped
//!   starting probes, or its thread died) shows in [`Probers::stuck`]
//!   instead of falling silent.
//!
//! The daemon drives it from one thread (in its own namespace, unpinned:
//! prober threads inherit both): `sync` after every config load with the
//! probes the config resolves to, `drain` on every control tick (outcomes
//! wait in an unbounded queue until then), `stuck` about once a second,
//! reporting the changes in that list.

mod exec;
mod probe;
mod prober;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rvs_control::health::{CheckKind, Probe, ProbeOutcome};

use prober::{Heartbeat, Jitter, Report, Stop};

/// How long past its limits a prober may be late before it counts as stuck.
const STUCK_GRACE: Duration = Duration::from_secs(1);
/// Each prober's stack: probes need little, and there may be thousands.
const STACK: usize = 128 * 1024;
/// How long dropping [`Probers`] waits for their threads before leaving the
/// rest to end on their own.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// What runs one probe; tests put a stand-in here.
type Runner = fn(&Probe, &Stop) -> ProbeOutcome;

/// The running probers, one per distinct [`Probe`].
#[derive(Debug)]
pub(crate) struct Probers {
    jitter: Jitter,
    probers: BTreeMap<Probe, Prober>,
    reports_tx: Sender<Report>,
    reports: Receiver<Report>,
    /// Threads of stopped probers still finishing a probe.
    retired: Vec<JoinHandle<()>>,
    next_id: u64,
    runner: Runner,
}

/// One prober as [`Probers`] sees it.
#[derive(Debug)]
struct Prober {
    /// Tells its reports apart from those of an earlier prober of the same probe.
    id: u64,
    /// Dropping it stops the thread.
    _stop: Sender<()>,
    /// `None` when the thread could not be started; the next sync tries again.
    thread: Option<JoinHandle<()>>,
    heartbeat: Arc<Heartbeat>,
}

impl Probers {
    /// No probers yet; each interval will be drawn within ± `jitter_pct`
    /// (at most 50) of the probe's.
    pub(crate) fn new(jitter_pct: u32) -> Self {
        Self::with_runner(jitter_pct, probe::run)
    }

    fn with_runner(jitter_pct: u32, runner: Runner) -> Self {
        let (reports_tx, reports) = mpsc::channel();
        Self {
            jitter: Jitter::new(jitter_pct),
            probers: BTreeMap::new(),
            reports_tx,
            reports,
            retired: Vec::new(),
            next_id: 0,
            runner,
        }
    }

    /// Run exactly the probes in `wanted` (but `none` checks): start the new
    /// ones, stop those no longer wanted without waiting for them, and leave
    /// the others running untouched.
    pub(crate) fn sync(&mut self, wanted: &BTreeSet<Probe>) {
        let gone: Vec<Probe> = self.probers.keys().filter(|p| !wanted.contains(*p)).cloned().collect();
        for probe in gone {
            if let Some(thread) = self.probers.remove(&probe).and_then(|p| p.thread) {
                self.retired.push(thread);
            }
        }
        for probe in wanted.iter().filter(|p| p.kind != CheckKind::None) {
            match self.probers.get(probe) {
                Some(p) if p.thread.is_some() => {}
                _ => {
                    let prober = self.start(probe);
                    self.probers.insert(probe.clone(), prober);
                }
            }
        }
        self.reap();
    }

    /// Every outcome reported since the last call, oldest first.
    pub(crate) fn drain(&mut self) -> Vec<(Probe, ProbeOutcome)> {
        self.reap();
        let probers = &self.probers;
        self.reports
            .try_iter()
            .filter(|r| probers.get(&*r.probe).is_some_and(|p| p.id == r.prober))
            .map(|r| (Probe::clone(&r.probe), r.outcome))
            .collect()
    }

    /// Probers that are stuck at `now`: a probe running longer than its
    /// timeout, no probe started for longer than the longest interval plus
    /// the timeout (both with [`STUCK_GRACE`]), or no thread at all.
    pub(crate) fn stuck(&self, now: Instant) -> Vec<Probe> {
        self.probers
            .iter()
            .filter(|(probe, p)| {
                let Some(thread) = &p.thread else { return true };
                let (since, running) = p.heartbeat.read();
                let limit = if running {
                    probe.timeout
                } else {
                    self.jitter.longest(probe.interval).saturating_add(probe.timeout)
                };
                thread.is_finished()
                    || now.saturating_duration_since(since) > limit.saturating_add(STUCK_GRACE)
            })
            .map(|(probe, _)| probe.clone())
            .collect()
    }

    fn start(&mut self, probe: &Probe) -> Prober {
        let id = self.next_id;
        self.next_id += 1;
        let (stop_tx, stop) = mpsc::channel();
        let heartbeat = Arc::new(Heartbeat::new(Instant::now()));
        let seed = std::hash::RandomState::new().hash_one(id);
        let run = prober::Run {
            probe: Arc::new(probe.clone()),
            id,
            schedule: self.jitter.schedule(seed),
            heartbeat: heartbeat.clone(),
            stop: Stop::new(stop),
            reports: self.reports_tx.clone(),
            runner: self.runner,
        };
        let thread = thread::Builder::new()
            .name(format!("probe {}", probe.target))
            .stack_size(STACK)
            .spawn(move || run.run())
            .ok();
        Prober { id, _stop: stop_tx, thread, heartbeat }
    }

    /// Joins stopped probers that have finished.
    fn reap(&mut self) {
        let (done, running) = self.retired.drain(..).partition(JoinHandle::is_finished);
        self.retired = running;
        for thread in done {
            let _ = thread.join();
        }
    }
}

/// `t + d`, where a duration too long for the clock (an hour's interval is
/// the longest a config takes, but a `Probe` can hold any) stops at a year.
fn after(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(365 * 86_400);
    t.checked_add(d.min(FAR)).unwrap_or(t)
}

impl Drop for Probers {
    /// Stops every prober and waits up to [`STOP_WAIT`] for their threads; a
    /// thread still inside a socket call after that ends on its own at its
    /// probe's timeout and reports to nobody.
    fn drop(&mut self) {
        let threads = std::mem::take(&mut self.probers).into_values().filter_map(|p| p.thread);
        self.retired.extend(threads);
        let end = Instant::now() + STOP_WAIT;
        while !self.retired.is_empty() && Instant::now() < end {
            self.reap();
            thread::sleep(Duration::from_millis(2));
        }
    }
}
