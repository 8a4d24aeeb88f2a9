//! Killing and reviving reals while the requests run (`--kill-real`,
//! `--revive`, `--kill-mode`), so that what a dead real costs shows in the
//! report.
//!
//! A real dies in one of two ways. `stop` ends its HTTP server: the
//! listening socket closes and the real's kernel answers SYNs with a reset.
//! `silence` leaves the server running and drops every packet in and out of
//! the real's namespace with an nftables table, as a pulled cable or a hung
//! host would. A schedule runs on its own thread from the start of the
//! request loop; whatever it did is undone when the loop ends (servers
//! started again, tables deleted), also when it fails or the run is
//! interrupted, and a namespace removed with its table in place takes the
//! table along.

use std::fmt;
use std::net::TcpListener;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rvs_netns::{Netns, Topology};

use super::HTTP_PORT;
use super::http::Server;

/// The nftables table that silences a real, in the real's own namespace.
const SILENCE_TABLE: &str = "rvs_lab_silence";
/// The latest second an event may be scheduled at: a day.
const MAX_EVENT_SECS: f64 = 86_400.0;

/// How a killed real dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum KillMode {
    /// Its server ends; its kernel resets every new connection.
    #[default]
    Stop,
    /// Every packet to and from it is dropped; nothing answers.
    Silence,
}

impl KillMode {
    /// The name on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Silence => "silence",
        }
    }

    pub(crate) fn parse(v: &str) -> anyhow::Result<Self> {
        match v {
            "stop" => Ok(Self::Stop),
            "silence" => Ok(Self::Silence),
            _ => bail!("--kill-mode takes stop or silence, not {v:?}"),
        }
    }
}

/// What an event does to its real.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Kill,
    Revive,
}

/// One scheduled change to a real.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RealEvent {
    /// The real's index (0 is `real1`).
    pub(crate) real: usize,
    /// Time from the start of the requests.
    pub(crate) at: Duration,
    pub(crate) action: Action,
}

impl RealEvent {
    /// Parses `N@SECONDS` (real number N, from 1) for `flag`.
    pub(crate) fn parse(flag: &str, v: &str, action: Action) -> anyhow::Result<Self> {
        let (n, secs) = v.split_once('@').with_context(|| format!("{flag} takes N@SECONDS, not {v:?}"))?;
        let n: usize = n.parse().ok().filter(|&n| n >= 1).with_context(|| {
            format!("{flag} {v:?}: the real's number (1 is the first) must be a positive integer")
        })?;
        let secs: f64 = secs.parse().with_context(|| format!("{flag} {v:?}: not a number of seconds"))?;
        // Checked before the conversion, which panics on negative or NaN.
        if !(0.0..=MAX_EVENT_SECS).contains(&secs) {
            bail!("{flag} {v:?}: the second must be within 0..={MAX_EVENT_SECS}");
        }
        Ok(Self { real: n - 1, at: Duration::from_secs_f64(secs), action })
    }
}

/// Puts `events` in time order and checks them against `reals` real
/// servers: each real is killed before it is revived, never killed twice
/// without a revival between, and has at most one event at a time.
pub(crate) fn check_schedule(events: &mut [RealEvent], reals: usize) -> anyhow::Result<()> {
    events.sort_by_key(|e| e.at);
    let mut dead = vec![false; reals];
    let mut last: Vec<Option<Duration>> = vec![None; reals];
    for e in events.iter() {
        let n = e.real + 1;
        if e.real >= reals {
            bail!("there is no real {n}: the lab has {reals} (--reals)");
        }
        if last[e.real] == Some(e.at) {
            bail!("real {n} has two events at {:?}", e.at);
        }
        last[e.real] = Some(e.at);
        match (e.action, dead[e.real]) {
            (Action::Kill, true) => bail!("real {n} is killed at {:?} while already dead", e.at),
            (Action::Revive, false) => bail!("real {n} is revived at {:?} while alive", e.at),
            _ => dead[e.real] = e.action == Action::Kill,
        }
    }
    Ok(())
}

/// An event as it happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Applied {
    /// When it took effect, from the start of the requests.
    pub(crate) at: Duration,
    pub(crate) real: usize,
    pub(crate) action: Action,
    pub(crate) mode: KillMode,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            Action::Kill => write!(f, "kill real{} ({})", self.real + 1, self.mode.name()),
            Action::Revive => write!(f, "revive real{}", self.real + 1),
        }
    }
}

/// Binds real `i`'s HTTP port inside its namespace and serves it as `realN`.
pub(crate) fn serve_real(topology: &Topology, i: usize) -> anyhow::Result<Server> {
    // The unspecified IPv6 address takes IPv4 connections too (the
    // namespace's `bindv6only` is 0): one server for either family.
    let addr = std::net::Ipv6Addr::UNSPECIFIED;
    let listener = topology
        .ns_real(i)
        .run_in(|| TcpListener::bind((addr, HTTP_PORT)))?
        .with_context(|| format!("binding the HTTP server on [{addr}]:{HTTP_PORT}"))?;
    Ok(Server::start(listener, &format!("real{}", i + 1))?)
}

/// Runs `events` (in time order) from `start`, killing reals as `mode`
/// says, until they are all done and `done` reports the end of the requests
/// (its sender dropped); then revives every real still dead. Returns the
/// events applied: none after the requests ended.
pub(crate) fn run_schedule(
    events: &[RealEvent],
    mode: KillMode,
    start: Instant,
    done: &Receiver<()>,
    topology: &Topology,
    servers: &Mutex<Vec<Option<Server>>>,
) -> anyhow::Result<Vec<Applied>> {
    let mut kills = Kills { topology, servers, silenced: Vec::new() };
    let mut applied = Vec::with_capacity(events.len());
    for e in events {
        let wait = (start + e.at).saturating_duration_since(Instant::now());
        if done.recv_timeout(wait) != Err(RecvTimeoutError::Timeout) {
            return Ok(applied);
        }
        match (e.action, mode) {
            (Action::Kill, KillMode::Stop) => kills.stop(e.real),
            (Action::Kill, KillMode::Silence) => kills.silence(e.real)?,
            (Action::Revive, KillMode::Stop) => kills.start(e.real)?,
            (Action::Revive, KillMode::Silence) => kills.unsilence(e.real)?,
        }
        applied.push(Applied { at: start.elapsed(), real: e.real, action: e.action, mode });
    }
    // Nothing sends: this returns when the requests end.
    let _ = done.recv();
    Ok(applied)
}

/// The reals a schedule has killed; dropping it revives them.
struct Kills<'a> {
    topology: &'a Topology,
    servers: &'a Mutex<Vec<Option<Server>>>,
    silenced: Vec<Silence<'a>>,
}

impl Kills<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Server>>> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends real `i`'s server (the drop closes its listener).
    fn stop(&mut self, i: usize) {
        let server = self.lock()[i].take();
        drop(server);
    }

    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let server = serve_real(self.topology, i)?;
        self.lock()[i] = Some(server);
        Ok(())
    }

    fn silence(&mut self, i: usize) -> anyhow::Result<()> {
        let ns = self.topology.ns_real(i);
        self.silenced.push(Silence::on(ns).with_context(|| format!("silencing real{}", i + 1))?);
        Ok(())
    }

    fn unsilence(&mut self, i: usize) -> anyhow::Result<()> {
        let ns = self.topology.ns_real(i);
        if let Some(at) = self.silenced.iter().position(|s| s.ns.name() == ns.name()) {
            self.silenced.swap_remove(at).off().with_context(|| format!("reviving real{}", i + 1))?;
        }
        Ok(())
    }
}

impl Drop for Kills<'_> {
    fn drop(&mut self) {
        self.silenced.clear();
        for i in 0..self.topology.real_addrs().len() {
            if self.lock()[i].is_none() {
                let _ = self.start(i);
            }
        }
    }
}

/// A real's namespace dropping every packet but loopback's; dropping this
/// lets them through again.
struct Silence<'a> {
    ns: &'a Netns,
    on: bool,
}

impl<'a> Silence<'a> {
    fn on(ns: &'a Netns) -> std::io::Result<Self> {
        ns.nft(&silence_script())?;
        Ok(Self { ns, on: true })
    }

    fn off(mut self) -> std::io::Result<()> {
        self.on = false;
        self.ns.nft(&format!("delete table inet {SILENCE_TABLE}\n"))
    }
}

impl Drop for Silence<'_> {
    fn drop(&mut self) {
        if self.on {
            let _ = self.ns.nft(&format!("delete table inet {SILENCE_TABLE}\n"));
        }
    }
}

/// The nftables table that drops everything but loopback in both directions,
/// ahead of any other hook.
fn silence_script() -> String {
    format!(
        "table inet {SILENCE_TABLE} {{\n\
         \x20 chain input {{ type filter hook input priority -400; iifname != \"lo\" counter drop; }}\n\
         \x20 chain output {{ type filter hook output priority -400; oifname != \"lo\" counter drop; }}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(real: usize, secs: u64, action: Action) -> RealEvent {
        RealEvent { real, at: Duration::from_secs(secs), action }
    }

    #[test]
    fn parses_real_and_second() {
        let e = RealEvent::parse("--kill-real", "2@1.5", Action::Kill).unwrap();
        assert_eq!(e, RealEvent { real: 1, at: Duration::from_millis(1500), action: Action::Kill });
        let e = RealEvent::parse("--revive", "1@0", Action::Revive).unwrap();
        assert_eq!(e, ev(0, 0, Action::Revive));
        for bad in ["2", "@1", "0@1", "x@1", "1@", "1@-1", "1@nan", "1@inf", "1@1e9", "-1@1"] {
            let e = RealEvent::parse("--kill-real", bad, Action::Kill);
            assert!(e.is_err(), "{bad:?} was accepted: {e:?}");
        }
        assert_eq!(KillMode::parse("silence").unwrap(), KillMode::Silence);
        assert_eq!(KillMode::parse("stop").unwrap().name(), "stop");
        assert!(KillMode::parse("down").is_err());
    }

    #[test]
    fn schedules_are_sorted_and_alternate() {
        let mut s = [ev(1, 3, Action::Revive), ev(0, 2, Action::Kill), ev(1, 1, Action::Kill)];
        check_schedule(&mut s, 2).unwrap();
        assert_eq!(s, [ev(1, 1, Action::Kill), ev(0, 2, Action::Kill), ev(1, 3, Action::Revive)]);
        let mut twice = [ev(0, 1, Action::Kill), ev(0, 2, Action::Kill), ev(0, 3, Action::Revive)];
        check_schedule(&mut [ev(0, 1, Action::Kill), ev(0, 2, Action::Revive), ev(0, 3, Action::Kill)], 1)
            .unwrap();
        for (bad, reals) in [
            (&mut twice[..], 1),
            (&mut [ev(0, 1, Action::Revive)][..], 1),
            (&mut [ev(2, 1, Action::Kill)][..], 2),
            (&mut [ev(0, 1, Action::Kill), ev(0, 1, Action::Revive)][..], 1),
        ] {
            assert!(check_schedule(bad, reals).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn applied_events_read_as_what_happened() {
        let a = Applied { at: Duration::ZERO, real: 1, action: Action::Kill, mode: KillMode::Silence };
        assert_eq!(a.to_string(), "kill real2 (silence)");
        assert_eq!(Applied { action: Action::Revive, ..a }.to_string(), "revive real2");
    }

    #[test]
    fn silence_table_drops_all_but_loopback() {
        let s = silence_script();
        assert!(s.starts_with("table inet rvs_lab_silence {\n"), "{s}");
        assert!(s.contains("hook input priority -400; iifname != \"lo\" counter drop;"), "{s}");
        assert!(s.contains("hook output priority -400; oifname != \"lo\" counter drop;"), "{s}");
    }
}
