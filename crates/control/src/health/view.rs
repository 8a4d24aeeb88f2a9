//! The checker's state as listings, JSON and metrics show it: written into
//! a [`Snapshot`] beside the engines' counters, so every view reads one value.

use rvs_core::{Endpoint, Instant, Proto};
use serde::{Deserialize, Serialize};

use super::{Health, ProbeOutcome, RealState, state_name};
use crate::snapshot::Snapshot;

/// A probe's outcome and its age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResultSnap {
    /// The real passed.
    pub up: bool,
    /// How long the probe took, in microseconds.
    pub latency_us: u64,
    /// What was seen.
    pub detail: String,
    /// How long ago, in milliseconds.
    pub age_ms: u64,
}

/// One real's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealHealthSnap {
    /// `up`, `slow-start` or `down`.
    pub state: String,
    /// `auto`, `up` or `down`.
    pub maintenance: String,
    /// The share of its weight it gets now, in percent.
    pub weight_pct: u32,
    /// Milliseconds until a real with no active check is tried again.
    pub inhibit_left_ms: Option<u64>,
    /// Its active check (`tcp 10.0.1.1:80`), if any.
    pub check: Option<String>,
    /// The last outcome of that check.
    pub last_check: Option<CheckResultSnap>,
    /// Why it last changed state.
    pub reason: String,
    /// State changes so far.
    pub transitions: u64,
}

impl RealHealthSnap {
    /// The listing's `State` column: `up`, `down`, `inhibit 4s`, `slow 40%`, `maint down`.
    pub fn column(&self) -> String {
        match (self.maintenance.as_str(), self.state.as_str()) {
            ("up" | "down", _) => format!("maint {}", self.maintenance),
            (_, "slow-start") => format!("slow {}%", self.weight_pct),
            (_, "down") => match self.inhibit_left_ms {
                Some(ms) => format!("inhibit {}s", ms.div_ceil(1000)),
                None => "down".into(),
            },
            (_, s) => s.to_owned(),
        }
    }
}

/// One prober.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProberSnap {
    /// `KIND target[ARG]`.
    pub probe: String,
    /// `ip:port` probed.
    pub target: String,
    /// `tcp`, `http`, `udp` or `exec`.
    pub kind: String,
    /// Its verdict after rise and fall.
    pub up: bool,
    /// Probes made.
    pub sent: u64,
    /// Probes failed.
    pub failed: u64,
    /// The runtime reports it frozen.
    pub stuck: bool,
    /// Its last outcome.
    pub last: Option<CheckResultSnap>,
    /// Latency histogram: counts per bucket of [`super::LATENCY_BUCKETS`], then above.
    pub latency_buckets: Vec<u64>,
    /// Sum of latencies, seconds.
    pub latency_sum: f64,
    /// Services' reals sharing it.
    pub reals: u64,
}

fn result(now: Instant, at: Instant, o: &ProbeOutcome) -> CheckResultSnap {
    CheckResultSnap {
        up: o.up,
        latency_us: o.latency.as_micros() as u64,
        detail: o.detail.clone(),
        age_ms: now.saturating_since(at).as_millis() as u64,
    }
}

impl Health {
    /// Write the checker's state into `snap` (taken at `snap.taken_at_nanos`).
    pub fn annotate(&self, snap: &mut Snapshot) {
        let now = Instant::from_nanos(snap.taken_at_nanos);
        for s in &mut snap.services {
            let (Some(proto), Ok(vip)) = (
                [Proto::Tcp, Proto::Udp].into_iter().find(|p| p.name() == s.proto),
                s.vip.parse::<std::net::SocketAddr>(),
            ) else {
                continue;
            };
            let key = (proto, Endpoint::from(vip));
            s.health = Some(self.service(key));
            for r in &mut s.reals {
                let Ok(ep) = r.endpoint.parse::<std::net::SocketAddr>() else { continue };
                let Some(h) = self.real(key, ep.into()) else { continue };
                let last = h.probe.as_ref().and_then(|p| self.prober(p)).and_then(|p| p.last.as_ref());
                r.health = Some(RealHealthSnap {
                    state: state_name(h.state).into(),
                    maintenance: h.maintenance.name().into(),
                    weight_pct: h.admission / 10,
                    inhibit_left_ms: match h.state {
                        RealState::Down { until: Some(u) } => {
                            Some(u.saturating_since(now).as_millis() as u64)
                        }
                        _ => None,
                    },
                    check: h.probe.as_ref().map(ToString::to_string),
                    last_check: last.map(|(at, o)| result(now, *at, o)),
                    reason: h.reason.clone(),
                    transitions: h.transitions,
                });
            }
        }
        snap.probers = self
            .probers()
            .map(|(p, s)| ProberSnap {
                probe: p.to_string(),
                target: p.target.to_string(),
                kind: p.kind.name().to_owned(),
                up: s.up,
                sent: s.sent,
                failed: s.failed,
                stuck: s.stuck,
                last: s.last.as_ref().map(|(at, o)| result(now, *at, o)),
                latency_buckets: s.latency.to_vec(),
                latency_sum: s.latency_sum,
                reals: self.sharing(p),
            })
            .collect();
    }
}
