//! The health checker's thread: it runs the probers the control plane
//! wants, hands their outcomes and the workers' passive counts to the
//! control plane (the one place that decides), and carries out what it
//! decided: transitions logged, connections reset, RTTs seeded.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rvs_control::health::{Actions, Probe, passive_counts};
use rvs_control::model::Op;
use rvs_control::plane::DataPath;

use super::Daemon;
use super::worker::Clock;
use crate::health::Probers;
use crate::log::{info, warning};

/// How often outcomes are taken in and states moved along; a worker that
/// counts a passive failure wakes the checker sooner.
const TICK: Duration = Duration::from_millis(100);
/// How often the workers' passive counts are read (a snapshot of each).
const PASSIVE_EVERY: u32 = 2;

/// The running checker; dropping it stops the thread and every prober.
#[derive(Debug)]
pub(crate) struct Checker {
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
}

impl Checker {
    /// Start the checker over `daemon`'s control plane and data path.
    pub(crate) fn start(daemon: Arc<Mutex<Daemon>>, clock: Clock) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let join =
            std::thread::Builder::new().name("health".into()).spawn(move || run(&daemon, &clock, &flag))?;
        Ok(Self { stop, join: Some(join) })
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

fn run(daemon: &Mutex<Daemon>, clock: &Clock, stop: &AtomicBool) {
    let mut probers = Probers::new(lock(daemon).plane.health().settings().jitter_pct);
    let mut stuck_before = BTreeSet::new();
    let nudge = lock(daemon).dp.workers.nudge();
    let mut turn = 0u32;
    while !stop.load(Ordering::Acquire) {
        let nudged = nudge.wait(TICK);
        turn = turn.wrapping_add(1);
        let outcomes = probers.drain();
        let stuck: BTreeSet<Probe> = probers.stuck(std::time::Instant::now()).into_iter().collect();
        for p in stuck.difference(&stuck_before) {
            warning!("health prober stuck: its probe has not finished or started in time", probe = p);
        }
        for p in stuck_before.difference(&stuck) {
            info!("health prober running again", probe = p);
        }
        stuck_before = stuck;
        let mut d = lock(daemon);
        let Daemon { plane, dp, .. } = &mut *d;
        let passive = if nudged || turn.is_multiple_of(PASSIVE_EVERY) {
            match dp.snapshot(false) {
                Ok(snap) => Some(passive_counts(&snap)),
                Err(e) => {
                    warning!("health: passive counts unavailable", error = e);
                    None
                }
            }
        } else {
            None
        };
        let actions = match plane.health_tick(clock.now(), outcomes, &stuck_before, passive.as_ref(), dp) {
            Ok(a) => a,
            Err(e) => {
                warning!("health: new weights not installed", error = e);
                continue;
            }
        };
        carry_out(actions, dp);
        let wanted = plane.health().wanted();
        drop(d);
        probers.sync(&wanted);
    }
}

/// Log each transition; reset and seed through the data path.
fn carry_out(actions: Actions, dp: &mut dyn DataPath) {
    for t in &actions.transitions {
        let service = format!("{}/{}", t.service.0.name(), t.service.1);
        info!("real health changed", service = service, real = t.real, state = t.to, cause = t.cause);
    }
    let mut ops: Vec<Op> =
        actions.resets.iter().map(|&((proto, vip), real)| Op::ResetReal(proto, vip, real)).collect();
    ops.extend(actions.rtt_seeds.iter().map(|&(real, rtt)| Op::SeedRtt(real, rtt)));
    if !ops.is_empty()
        && let Err(e) = dp.apply(&ops)
    {
        warning!("health: resets or RTT seeds not applied", error = e);
    }
}

fn lock(daemon: &Mutex<Daemon>) -> std::sync::MutexGuard<'_, Daemon> {
    daemon.lock().unwrap_or_else(|p| p.into_inner())
}
