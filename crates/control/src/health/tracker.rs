//! The one place that decides which reals are up, from probe outcomes and
//! the data path's passive counts. Sans-IO: time comes in as `now`.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use rvs_core::{Endpoint, Instant, PassiveCounters};
use serde::{Deserialize, Serialize};

use super::{HealthSettings, Maintenance, OnDown, Probe, ProbeOutcome};
use crate::model::{Model, ServiceKey};
use crate::snapshot::Snapshot;

/// Upper bounds (seconds) of the probe latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

/// Admission of a real at full weight, in thousandths.
const FULL: u32 = 1000;
/// The least share a real in slow start gets.
const SLOW_START_FLOOR: u32 = 10;
/// Slow start raises a real's share in steps of this.
const SLOW_START_STEP: u32 = 100;

/// Where a real stands with the health checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealState {
    /// Takes its full weight.
    Up,
    /// Recovered at `since`; its weight ramps over the slow-start time.
    SlowStart {
        /// When it came back.
        since: Instant,
    },
    /// Takes no new connections; without an active check, until `until`.
    Down {
        /// When passive detection lets it try again (no active check).
        until: Option<Instant>,
    },
}

/// One real of one service, as the checker sees it.
#[derive(Debug, Clone)]
pub struct RealHealth {
    /// Where it stands.
    pub state: RealState,
    /// The operator's override.
    pub maintenance: Maintenance,
    /// Its active check, if any.
    pub probe: Option<Probe>,
    /// Why it last changed state.
    pub reason: String,
    /// Transitions so far.
    pub transitions: u64,
    /// Share of its weight it gets now, in thousandths.
    pub admission: u32,
    /// Its probe's connect time has been handed to the engines as a first
    /// RTT sample; they keep their own after that, so once is enough.
    rtt_seeded: bool,
}

/// A service's reals taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// Share of its reals (not forced down) that is up, in percent.
    pub up_pct: u32,
    /// Too little is up to trust the verdicts: every real takes its weight.
    pub panic: bool,
    /// No real is up (the state a VIP announcement will follow).
    pub no_real_up: bool,
}

/// One prober's record.
#[derive(Debug, Clone, Default)]
pub struct ProberState {
    /// Its verdict after rise/fall.
    pub up: bool,
    /// It has reached a verdict of its own: a new prober starts up (a new
    /// real takes traffic at once) but brings no down real back until its
    /// probes passed `rise` times.
    settled: bool,
    successes: u32,
    failures: u32,
    /// The last outcome and when it came.
    pub last: Option<(Instant, ProbeOutcome)>,
    /// Probes reported.
    pub sent: u64,
    /// Probes that failed.
    pub failed: u64,
    /// Probe latencies by [`LATENCY_BUCKETS`] (the last slot: above them all).
    pub latency: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of latencies, seconds.
    pub latency_sum: f64,
    /// The runtime reports it frozen.
    pub stuck: bool,
}

/// Failures among `c`: SYNs unanswered or refused, UDP flows unanswered.
fn failures(c: &PassiveCounters) -> u64 {
    c.syn_unanswered + c.syn_refused + c.udp_unanswered
}

/// Handshakes and flows judged, failed or not.
fn attempts(c: &PassiveCounters) -> u64 {
    failures(c) + c.syn_answered + c.udp_answered
}

/// What happened between `before` and `now`; `None` if a count went back
/// (`-Z`). Unanswered UDP flows count only toward a real that answered one
/// before: a service whose protocol never replies (syslog, statsd) must
/// not look dead.
fn since(now: &PassiveCounters, before: &PassiveCounters) -> Option<PassiveCounters> {
    Some(PassiveCounters {
        syn_answered: now.syn_answered.checked_sub(before.syn_answered)?,
        syn_unanswered: now.syn_unanswered.checked_sub(before.syn_unanswered)?,
        syn_refused: now.syn_refused.checked_sub(before.syn_refused)?,
        udp_answered: now.udp_answered.checked_sub(before.udp_answered)?,
        udp_unanswered: if before.udp_answered > 0 {
            now.udp_unanswered.checked_sub(before.udp_unanswered)?
        } else {
            0
        },
    })
}

/// Every real endpoint's passive counts in `snap`, summed over its services.
pub fn passive_counts(snap: &Snapshot) -> BTreeMap<Endpoint, PassiveCounters> {
    let mut out: BTreeMap<Endpoint, PassiveCounters> = BTreeMap::new();
    for r in snap.services.iter().flat_map(|s| &s.reals) {
        let Ok(addr) = r.endpoint.parse::<SocketAddr>() else { continue };
        let p = &r.passive;
        out.entry(addr.into()).or_default().merge(&PassiveCounters {
            syn_answered: p.syn_answered,
            syn_unanswered: p.syn_unanswered,
            syn_refused: p.syn_refused,
            udp_answered: p.udp_answered,
            udp_unanswered: p.udp_unanswered,
        });
    }
    out
}

/// Passive detection of one real endpoint.
#[derive(Debug, Default)]
struct Passive {
    /// The counts last seen, the base of the next delta.
    seen: PassiveCounters,
    /// (when, failures, attempts) per delta within the window.
    window: VecDeque<(Instant, u64, u64)>,
    /// Failures since the real's last success.
    streak: u64,
    /// Of them, SYNs the real refused with an RST.
    refusals: u64,
    /// When a delta last held a success.
    last_success: Option<Instant>,
    /// Down by passive detection, until then (reals with no active check).
    until: Option<Instant>,
    /// The current inhibit time, doubled on a failure soon after the last.
    inhibit: Duration,
    /// When it last came back from an inhibit.
    back_at: Option<Instant>,
}

/// The failure share is taken over the window, but at most over this many
/// attempts per `passive_min_failures`: a busy real that dies is judged on
/// its latest attempts, not on the successes of its last two seconds.
const RECENT_PER_FAILURE: u64 = 10;

/// Failures and attempts of the latest `most` attempts of `window`
/// (newest last), a sample cut in proportion where the bound falls.
fn recent(window: &VecDeque<(Instant, u64, u64)>, most: u64) -> (u64, u64) {
    let (mut f, mut a) = (0, 0);
    for &(_, df, da) in window.iter().rev() {
        let take = da.min(most - a);
        f += if take == da { df } else { df * take / da };
        a += take;
        if a == most {
            break;
        }
    }
    (f, a)
}

/// Successes a real's own pace promised since its last one, beyond which
/// a streak of failures is taken as death even while the share of its
/// recent attempts that failed is small: a sequential client waits out
/// each timeout toward a dead real, so its failures come slowly while its
/// successes simply stop.
const MISSED_SUCCESSES: f64 = 10.0;

/// How many successes `p` would have had since its last one at the pace of
/// its window up to then.
fn missed(p: &Passive, now: Instant) -> f64 {
    let (Some(last), Some(&(first, _, _))) = (p.last_success, p.window.front()) else { return 0.0 };
    let successes: u64 = p.window.iter().take_while(|&&(t, _, _)| t <= last).map(|&(_, f, a)| a - f).sum();
    // The first sample's successes came before it: the pace runs from one tick earlier.
    let span = last.saturating_since(first).max(Duration::from_millis(100)) + Duration::from_millis(100);
    successes as f64 / span.as_secs_f64() * now.saturating_since(last).as_secs_f64()
}

/// A change of a real's state, for the log and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The service.
    pub service: ServiceKey,
    /// The real.
    pub real: Endpoint,
    /// The state it entered: `"up"`, `"slow-start"`, `"down"`.
    pub to: &'static str,
    /// Why.
    pub cause: String,
}

/// What the daemon carries out after a tick.
#[derive(Debug, Default)]
pub struct Actions {
    /// Transitions to log.
    pub transitions: Vec<Transition>,
    /// Reals whose connections get RSTs (`on_down = "reset"`).
    pub resets: Vec<(ServiceKey, Endpoint)>,
    /// RTT samples from probes' connects, per real endpoint.
    pub rtt_seeds: Vec<(Endpoint, Duration)>,
}

/// Health state of every real and prober; see the module documentation.
#[derive(Debug, Default)]
pub struct Health {
    settings: HealthSettings,
    probers: BTreeMap<Probe, ProberState>,
    reals: BTreeMap<(ServiceKey, Endpoint), RealHealth>,
    passive: BTreeMap<Endpoint, Passive>,
    services: BTreeMap<ServiceKey, ServiceHealth>,
    actions: Actions,
}

impl Health {
    /// A checker with `settings` and nothing to check yet.
    pub fn new(settings: HealthSettings) -> Self {
        Self { settings, ..Self::default() }
    }

    /// The settings in force.
    pub fn settings(&self) -> &HealthSettings {
        &self.settings
    }

    /// Follow a new model (and settings): reals that stay keep their
    /// state, their prober its record; new ones start up.
    pub fn sync(&mut self, model: &Model, settings: &HealthSettings) {
        self.settings = settings.clone();
        let mut reals = BTreeMap::new();
        for (&key, spec) in &model.services {
            for r in &spec.reals {
                let check = spec.checks.get(&r.endpoint).unwrap_or(&spec.check);
                let probe = check.probe(SocketAddr::new(r.endpoint.addr, r.endpoint.port), &self.settings);
                let maintenance = spec.maintenance.get(&r.endpoint).copied().unwrap_or_default();
                let mut h = self.reals.remove(&(key, r.endpoint)).unwrap_or(RealHealth {
                    state: RealState::Up,
                    maintenance,
                    probe: None,
                    reason: String::new(),
                    transitions: 0,
                    admission: FULL,
                    rtt_seeded: false,
                });
                h.maintenance = maintenance;
                h.probe = probe;
                reals.insert((key, r.endpoint), h);
            }
        }
        self.reals = reals;
        let wanted: BTreeSet<Probe> = self.reals.values().filter_map(|r| r.probe.clone()).collect();
        self.probers.retain(|p, _| wanted.contains(p));
        for p in wanted {
            self.probers.entry(p).or_insert_with(|| ProberState { up: true, ..ProberState::default() });
        }
        let endpoints: BTreeSet<Endpoint> = self.reals.keys().map(|(_, e)| *e).collect();
        self.passive.retain(|e, _| endpoints.contains(e));
        self.services.retain(|k, _| model.services.contains_key(k));
        self.recompute(None);
    }

    /// Every probe some real runs: one prober each.
    pub fn wanted(&self) -> BTreeSet<Probe> {
        self.probers.keys().cloned().collect()
    }

    /// A prober's outcome.
    pub fn on_probe(&mut self, now: Instant, probe: &Probe, outcome: ProbeOutcome) {
        let Some(p) = self.probers.get_mut(probe) else { return };
        p.sent += 1;
        let secs = outcome.latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS.iter().position(|&b| secs <= b).unwrap_or(LATENCY_BUCKETS.len());
        p.latency[bucket] += 1;
        p.latency_sum += secs;
        if outcome.up {
            (p.successes, p.failures) = (p.successes + 1, 0);
            if p.successes >= probe.rise {
                (p.up, p.settled) = (true, true);
            }
        } else {
            p.failed += 1;
            (p.successes, p.failures) = (0, p.failures + 1);
            if p.failures >= probe.fall {
                (p.up, p.settled) = (false, true);
            }
        }
        if let Some(rtt) = outcome.connect.filter(|_| outcome.up) {
            let mut endpoints = BTreeSet::new();
            for ((_, e), r) in &mut self.reals {
                if !r.rtt_seeded && r.probe.as_ref() == Some(probe) {
                    r.rtt_seeded = true;
                    endpoints.insert(*e);
                }
            }
            self.actions.rtt_seeds.extend(endpoints.into_iter().map(|e| (e, rtt)));
        }
        p.last = Some((now, outcome));
    }

    /// Probers the runtime reports frozen.
    pub fn set_stuck(&mut self, stuck: &BTreeSet<Probe>) {
        for (probe, p) in &mut self.probers {
            p.stuck = stuck.contains(probe);
        }
    }

    /// The data path's cumulative counts per real endpoint (all services
    /// and workers summed). A count that went back (`-Z`) restarts the base.
    pub fn on_passive(&mut self, now: Instant, counts: &BTreeMap<Endpoint, PassiveCounters>) {
        let s = &self.settings;
        let window = Duration::from_millis(s.passive_window_ms);
        let mut went_down = Vec::new();
        for (endpoint, p) in &mut self.passive {
            let Some(c) = counts.get(endpoint) else { continue };
            let d = since(c, &p.seen).unwrap_or_default();
            let (failures, attempts) = (failures(&d), attempts(&d));
            p.seen = *c;
            if attempts > 0 {
                p.window.push_back((now, failures, attempts));
            }
            // Within one delta the order is unknown: failures beside a success count as after it.
            if attempts > failures {
                (p.streak, p.refusals, p.last_success) = (failures, d.syn_refused, Some(now));
            } else {
                (p.streak, p.refusals) = (p.streak + failures, p.refusals + d.syn_refused);
            }
            while p.window.front().is_some_and(|&(t, _, _)| now.saturating_since(t) > window) {
                p.window.pop_front();
            }
            if !s.passive || p.until.is_some() {
                continue;
            }
            let (f, a) = recent(&p.window, u64::from(s.passive_min_failures) * RECENT_PER_FAILURE);
            let share = f * 100 >= u64::from(s.passive_failure_pct) * a;
            // Loss never makes a real answer a SYN with an RST: refusals in a row need no more evidence.
            let min = u64::from(s.passive_min_failures);
            let refused = p.refusals >= min;
            if p.streak >= min && (share || refused || missed(p, now) >= MISSED_SUCCESSES) {
                let streak = core::mem::take(&mut p.streak);
                p.refusals = 0;
                p.window.clear();
                let soon = p.back_at.is_some_and(|b| now.saturating_since(b) < p.inhibit * 2);
                let initial = Duration::from_millis(s.inhibit_ms);
                p.inhibit =
                    if soon { (p.inhibit * 2).min(Duration::from_millis(s.inhibit_max_ms)) } else { initial };
                p.until = Some(now + p.inhibit);
                let cause = format!(
                    "passive: {streak} handshakes or flows failed in a row, {f} of {a} within {} ms",
                    s.passive_window_ms
                );
                went_down.push((*endpoint, cause));
            }
        }
        for endpoint in counts.keys() {
            self.passive
                .entry(*endpoint)
                .or_insert_with(|| Passive { seen: counts[endpoint], ..Passive::default() });
        }
        for (endpoint, cause) in went_down {
            self.passive_down(endpoint, &cause);
        }
    }

    /// Passive detection took `endpoint` down: reals with an active check
    /// wait for it to pass `rise` times; the others for the inhibit time.
    fn passive_down(&mut self, endpoint: Endpoint, cause: &str) {
        let until = self.passive.get(&endpoint).and_then(|p| p.until);
        let keys: Vec<_> = self.reals.keys().filter(|(_, e)| *e == endpoint).copied().collect();
        for key in keys {
            let probe = self.reals[&key].probe.clone();
            if let Some(p) = probe.as_ref().and_then(|p| self.probers.get_mut(p)) {
                (p.up, p.successes) = (false, 0);
            }
            let until = if probe.is_some() { None } else { until };
            self.enter(key, RealState::Down { until }, cause.to_owned());
        }
    }

    /// Move the states along: checks' verdicts, inhibits that ran out,
    /// slow starts that ended; then the weights. True if a weight changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        for p in self.passive.values_mut() {
            if p.until.is_some_and(|u| now >= u) {
                (p.until, p.back_at) = (None, Some(now));
            }
        }
        let keys: Vec<_> = self.reals.keys().copied().collect();
        for key in keys {
            let r = &self.reals[&key];
            let prober = r.probe.as_ref().and_then(|p| self.probers.get(p).map(|s| (p, s)));
            match (r.state, prober) {
                (RealState::Down { .. }, Some((p, s))) if s.up && s.settled => {
                    let cause = format!("{p}: passed {} times in a row", p.rise);
                    self.recover(key, now, cause);
                }
                (RealState::Down { until: Some(until) }, None) if now >= until => {
                    let inhibit = self.passive.get(&key.1).map_or(Duration::ZERO, |p| p.inhibit);
                    self.recover(key, now, format!("inhibit of {} ms over", inhibit.as_millis()));
                }
                (RealState::Up | RealState::SlowStart { .. }, Some((p, s))) if !s.up => {
                    let detail = s.last.as_ref().map_or(String::new(), |(_, o)| o.detail.clone());
                    let cause = format!("{p}: failed {} times in a row ({detail})", p.fall);
                    self.enter(key, RealState::Down { until: None }, cause);
                }
                (RealState::SlowStart { since }, _)
                    if now.saturating_since(since) >= Duration::from_millis(self.settings.slow_start_ms) =>
                {
                    self.enter(key, RealState::Up, "slow start over".into());
                }
                _ => {}
            }
        }
        self.recompute(Some(now))
    }

    fn recover(&mut self, key: (ServiceKey, Endpoint), now: Instant, cause: String) {
        let state = if self.settings.slow_start_ms == 0 {
            RealState::Up
        } else {
            RealState::SlowStart { since: now }
        };
        self.enter(key, state, cause);
    }

    /// Real `key` enters `state` because of `cause`.
    fn enter(&mut self, key: (ServiceKey, Endpoint), state: RealState, cause: String) {
        let Some(r) = self.reals.get_mut(&key) else { return };
        if r.state == state {
            return;
        }
        r.state = state;
        r.transitions += 1;
        r.reason = cause.clone();
        let to = state_name(state);
        self.actions.transitions.push(Transition { service: key.0, real: key.1, to, cause });
        if matches!(state, RealState::Down { .. }) && self.settings.on_down == OnDown::Reset {
            self.actions.resets.push(key);
        }
    }

    /// Each real's admission and each service's panic; true if an admission changed.
    fn recompute(&mut self, now: Option<Instant>) -> bool {
        let slow = Duration::from_millis(self.settings.slow_start_ms);
        let mut changed = false;
        let mut by_service: BTreeMap<ServiceKey, (u64, u64)> = BTreeMap::new();
        let mut admissions = BTreeMap::new();
        for (&key, r) in &self.reals {
            let own = match (r.maintenance, r.state) {
                (Maintenance::Down, _) => 0,
                (Maintenance::Up, _) | (Maintenance::Auto, RealState::Up) => FULL,
                (Maintenance::Auto, RealState::Down { .. }) => 0,
                (Maintenance::Auto, RealState::SlowStart { since }) => match now {
                    Some(now) if !slow.is_zero() => {
                        let share =
                            now.saturating_since(since).as_millis() * u128::from(FULL) / slow.as_millis();
                        // In tenths: the engines take a new weight ten times per slow start, not every tick.
                        let share = (share.min(u128::from(FULL)) as u32) / SLOW_START_STEP * SLOW_START_STEP;
                        share.clamp(SLOW_START_FLOOR, FULL)
                    }
                    _ => r.admission.max(SLOW_START_FLOOR),
                },
            };
            admissions.insert(key, own);
            let entry = by_service.entry(key.0).or_default();
            if r.maintenance != Maintenance::Down {
                entry.0 += 1;
                entry.1 += u64::from(own > 0);
            }
        }
        let threshold = u64::from(self.settings.panic_threshold_pct);
        let mut services = BTreeMap::new();
        for (&svc, &(total, up)) in &by_service {
            let up_pct = (up * 100).checked_div(total).unwrap_or(100) as u32;
            let panic = total > 0 && up * 100 < threshold * total;
            services.insert(svc, ServiceHealth { up_pct, panic, no_real_up: total > 0 && up == 0 });
        }
        for (key, r) in &mut self.reals {
            let mut a = admissions[key];
            if services.get(&key.0).is_some_and(|s| s.panic) && r.maintenance != Maintenance::Down {
                a = FULL;
            }
            changed |= a != r.admission;
            r.admission = a;
        }
        self.services = services;
        changed
    }

    /// `model` with each real's weight scaled by its admission: what the engines run.
    pub fn effective(&self, model: &Model) -> Model {
        let mut out = model.clone();
        for (&key, spec) in &mut out.services {
            for r in &mut spec.reals {
                let a = self.reals.get(&(key, r.endpoint)).map_or(FULL, |h| h.admission);
                r.weight = match a {
                    0 => 0,
                    FULL => r.weight,
                    _ if r.weight == 0 => 0,
                    a => (u64::from(r.weight) * u64::from(a) / u64::from(FULL)).max(1) as u32,
                };
            }
        }
        out
    }

    /// What the daemon carries out since the last call.
    pub fn take_actions(&mut self) -> Actions {
        core::mem::take(&mut self.actions)
    }

    /// Real `real` of service `service`.
    pub fn real(&self, service: ServiceKey, real: Endpoint) -> Option<&RealHealth> {
        self.reals.get(&(service, real))
    }

    /// Service `service`'s reals taken together.
    pub fn service(&self, service: ServiceKey) -> ServiceHealth {
        self.services.get(&service).copied().unwrap_or(ServiceHealth { up_pct: 100, ..Default::default() })
    }

    /// The record of `probe`'s prober.
    pub fn prober(&self, probe: &Probe) -> Option<&ProberState> {
        self.probers.get(probe)
    }

    /// Services' reals that run `probe`.
    pub fn sharing(&self, probe: &Probe) -> u64 {
        self.reals.values().filter(|r| r.probe.as_ref() == Some(probe)).count() as u64
    }

    /// Every prober's record.
    pub fn probers(&self) -> impl Iterator<Item = (&Probe, &ProberState)> {
        self.probers.iter()
    }
}

/// A state's name in listings and logs.
pub fn state_name(state: RealState) -> &'static str {
    match state {
        RealState::Up => "up",
        RealState::SlowStart { .. } => "slow-start",
        RealState::Down { .. } => "down",
    }
}
