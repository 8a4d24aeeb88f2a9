//! Health checking end to end, in network namespaces with the kernel's TCP
//! on every side: a real whose server stops (its kernel resets SYNs) or
//! whose namespace goes silent (nothing answers) while sequential requests
//! run, with passive detection alone and with active checks, with and
//! without SYNProxy; revival and slow start; no flapping under loss; one
//! probe per (real, port, check) however many services share it, counted
//! with nftables on the reals; the panic threshold; maintenance and reloads.
//!
//! How the daemon shows a real's state (the `State` column of `rvs adm -L
//! -n`, `--json`, metrics, log lines) is read only through the helpers
//! below, so a change of wording is one edit here.
//!
//! Needs root, nginx, curl and nftables (`scripts/test` installs them);
//! without root these fail unless `RVS_SKIP_NETNS=1` says to skip them.
//! `RVS_LONG_TESTS=1` runs the 10-minute version of the loss test.
//!
//! Every test runs over the matrix of data paths and families (see
//! `netns.rs`), one variant each by default; health probes leave the
//! balancer's kernel in the backend's family.

#[macro_use]
mod harness;

use std::time::{Duration, Instant};

use harness::reals::{self, Sample};
use harness::{Driver, ExtraService, Family, Lab, LabSpec};
use serde_json::Value;

/// Whether the long versions were asked for.
fn long_tests(test: &str) -> bool {
    let on = std::env::var_os("RVS_LONG_TESTS").is_some_and(|v| v == "1");
    if !on {
        eprintln!("{test}: long version skipped (set RVS_LONG_TESTS=1 to run it)");
    }
    on
}

/// How often the tests read the daemon's view of the reals.
const POLL: Duration = Duration::from_millis(100);
/// `[health]` defaults the targets are stated against.
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(1);
const RISE: u32 = 2;
const FALL: u32 = 3;
const JITTER: f64 = 0.10;
const PASSIVE_WINDOW: Duration = Duration::from_secs(2);
/// The real the tests kill (the second of two).
const VICTIM: usize = 1;

// ---- the daemon's view, read in one place -------------------------------

/// Each real's `State` column in `rvs adm -L -n` (the last one, which may
/// hold a space: `inhibit 4s`, `slow 40%`, `maint down`), as
/// (service `PROTO VIP:PORT`, real `ADDR:PORT`, state).
fn states(lab: &Lab) -> Vec<(String, String, String)> {
    let list = lab.adm_ok(&["-L", "-n"]);
    let mut service = String::new();
    let mut out = Vec::new();
    for line in list.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [proto @ ("TCP" | "UDP"), vip, ..] => service = format!("{proto} {vip}"),
            ["->", "RemoteAddress:Port", ..] => {}
            ["->", real, _forward, _weight, _active, _inactive, state @ ..] if !state.is_empty() => {
                out.push((service.clone(), (*real).to_owned(), state.join(" ")));
            }
            _ => {}
        }
    }
    out
}

/// The state of real `i` (at port 80) in the VIP:`port` service; `(none)`
/// when the listing has no state for it.
fn state(lab: &Lab, port: u16, i: usize) -> String {
    let service = format!("TCP {}", lab.vip_at(port));
    let real = lab.real(i);
    states(lab)
        .into_iter()
        .find(|(s, r, _)| *s == service && *r == real)
        .map_or_else(|| "(none)".to_owned(), |(_, _, st)| st)
}

/// Whether a state takes no new connections (down, or inhibited for a while).
fn is_down(state: &str) -> bool {
    state.starts_with("down") || state.starts_with("inhibit")
}

/// The weight share of a real in slow start (`slow 40%` is 40).
fn slow_pct(state: &str) -> Option<u32> {
    state.strip_prefix("slow ")?.trim_end_matches('%').parse().ok()
}

/// Whether the VIP:`port` service line says the panic threshold applies.
fn panics(lab: &Lab, port: u16) -> bool {
    let list = lab.adm_ok(&["-L", "-n"]);
    let name = lab.vip_at(port).to_string();
    list.lines()
        .find(|l| l.starts_with("TCP") && l.split_whitespace().nth(1) == Some(name.as_str()))
        .is_some_and(|l| l.split_whitespace().any(|w| w == "panic"))
}

/// Real `i`'s `health` object in `rvs adm -L -n --json` (service VIP:`port`).
fn health_json(lab: &Lab, port: u16, i: usize) -> Value {
    let v: Value = serde_json::from_str(&lab.adm_ok(&["-L", "-n", "--json"])).expect("--json is JSON");
    let vip = lab.vip_at(port).to_string();
    let service = v["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["vip"] == vip.as_str()))
        .unwrap_or_else(|| panic!("no service {vip} in {v:#}"));
    let real = service["reals"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["endpoint"] == lab.real(i).as_str()))
        .unwrap_or_else(|| panic!("no real {} in {service:#}", lab.real(i)));
    real["health"].clone()
}

/// The daemon's log lines about a transition of real `i` (one per
/// transition, naming the real, its new state and the cause).
fn transition_lines(lab: &Lab, i: usize) -> Vec<String> {
    let real = lab.real(i);
    let names_a_state = |l: &str| {
        ["down", "up", "inhibit", "slow"]
            .iter()
            .any(|w| l.contains(&format!("={w}")) || l.contains(&format!(" {w} ")))
    };
    lab.daemon_log().lines().filter(|l| l.contains(&real) && names_a_state(l)).map(str::to_owned).collect()
}

/// The probers `rvs adm -L --health --json` lists for `target` (`ADDR:PORT`).
fn probers_of(lab: &Lab, target: &str) -> usize {
    let v: Value = serde_json::from_str(&lab.adm_ok(&["-L", "-n", "--health", "--json"])).expect("JSON");
    v["probers"].as_array().map_or(0, |p| p.iter().filter(|p| p["target"] == target).count())
}

// ---- timing and requests ------------------------------------------------

/// Polls `f` every [`POLL`] for at most `limit`; the time it first held.
fn time_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(POLL);
    }
    None
}

/// How a test kills a real.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// nginx ends: the real's kernel resets SYNs.
    Stop,
    /// The real's namespace drops everything.
    Silence,
}

/// A real killed by a test; dropping it does not revive it (the lab's
/// teardown removes everything), [`Dead::revive`] does.
struct Dead(Option<reals::Silence>);

fn kill(lab: &mut Lab, i: usize, how: Kill) -> Dead {
    match how {
        Kill::Stop => {
            lab.stop_real(i);
            Dead(None)
        }
        Kill::Silence => Dead(Some(lab.silence_real(i))),
    }
}

impl Dead {
    fn revive(self, lab: &mut Lab, i: usize) {
        match self.0 {
            Some(silence) => drop(silence),
            None => lab.restart_real(i),
        }
    }
}

/// `n` sequential requests to VIP:80 from the client, each within `timeout`,
/// stopping early once more than `max_failures` failed (the assertion that
/// follows fails then anyway; this keeps a broken build from waiting out
/// every timeout).
fn sequential(lab: &Lab, n: usize, timeout: Duration, max_failures: usize) -> Vec<Sample> {
    let addr = lab.vip_at(80);
    lab.client()
        .run_in(|| {
            let mut samples: Vec<Sample> = Vec::with_capacity(n);
            while samples.len() < n && samples.iter().filter(|s| !s.ok()).count() <= max_failures {
                let start = Instant::now();
                let outcome = reals::get(addr, timeout);
                samples.push(Sample { start, took: start.elapsed(), outcome });
            }
            samples
        })
        .expect("enter the client namespace")
}

fn ok_count(samples: &[Sample]) -> usize {
    samples.iter().filter(|s| s.ok()).count()
}

fn median(samples: &[Sample]) -> Duration {
    let mut t: Vec<Duration> = samples.iter().map(|s| s.took).collect();
    t.sort_unstable();
    t.get(t.len().saturating_sub(1) / 2).copied().unwrap_or_default()
}

/// The failures, briefly, for assertion messages: how many, and the first few.
fn failures(samples: &[Sample]) -> String {
    let f: Vec<String> = samples
        .iter()
        .filter_map(|s| s.outcome.as_ref().err().map(|e| format!("{e} after {:?}", s.took)))
        .collect();
    format!("{} of {} failed: {:?}", f.len(), samples.len(), &f[..f.len().min(5)])
}

/// Every real answers before a test kills one, so RTTs are known and the
/// scheduler has gone round.
fn warm_up(lab: &Lab) {
    let s = sequential(lab, 20, Duration::from_secs(3), 0);
    assert_eq!(ok_count(&s), 20, "warm-up: {}", failures(&s));
}

/// `[health]` with `lines`, as the lab's extra config.
fn health(lines: &str) -> String {
    format!("[health]\n{lines}\n")
}

// ---- the targets ----------------------------------------------------------

/// No health settings at all: two reals, one dead, then 100 sequential
/// requests (3 s each, as curl in the issue's measurement). Without
/// SYNProxy passive detection must stop sending clients to the dead real
/// after a handful of failures; with SYNProxy no client sees one and the
/// median stays a fast request's.
fn dead_real_without_settings(test: &str, driver: Driver, family: Family, how: Kill, synproxy: bool) {
    let Some(mut lab) = Lab::start(test, LabSpec { driver, family, synproxy, ..LabSpec::default() }) else {
        return;
    };
    warm_up(&lab);
    // The real is dead before the requests: the warm-up's successes leave
    // the passive window first.
    std::thread::sleep(PASSIVE_WINDOW + POLL);
    let _dead = kill(&mut lab, VICTIM, how);
    let max_failures = if synproxy { 0 } else { 5 };
    let s = sequential(&lab, 100, Duration::from_secs(3), max_failures);
    if synproxy {
        assert_eq!(ok_count(&s), 100, "{}", failures(&s));
        assert!(median(&s) < Duration::from_millis(2), "median {:?}", median(&s));
    } else {
        assert!(s.len() == 100 && ok_count(&s) >= 95, "{}", failures(&s));
    }
}

fn stopped_real_without_settings_costs_at_most_5_of_100(driver: Driver, family: Family) {
    dead_real_without_settings("h-nocfg-stop", driver, family, Kill::Stop, false);
}

fn silent_real_without_settings_costs_at_most_5_of_100(driver: Driver, family: Family) {
    dead_real_without_settings("h-nocfg-silent", driver, family, Kill::Silence, false);
}

fn stopped_real_without_settings_costs_synproxy_clients_nothing(driver: Driver, family: Family) {
    dead_real_without_settings("h-nocfg-stop-sp", driver, family, Kill::Stop, true);
}

fn silent_real_without_settings_costs_synproxy_clients_nothing(driver: Driver, family: Family) {
    dead_real_without_settings("h-nocfg-silent-sp", driver, family, Kill::Silence, true);
}

/// What a dying-real run saw.
struct Dying {
    /// From the kill to the first listing showing the real down, if one did.
    detected_after: Option<Duration>,
    /// Requests started after the kill.
    after_kill: Vec<Sample>,
    /// Requests started after the listing showed it down.
    after_detection: Vec<Sample>,
    /// When the real was killed.
    killed: Instant,
}

impl Dying {
    /// The failures among `samples`, with their starts counted from the kill.
    fn failures(&self, samples: &[Sample]) -> String {
        let f: Vec<String> = samples
            .iter()
            .filter_map(|s| {
                let at = s.start.saturating_duration_since(self.killed);
                s.outcome
                    .as_ref()
                    .err()
                    .map(|e| format!("{e} after {:?}, started {at:?} after the kill", s.took))
            })
            .collect();
        let detected = self.detected_after.map(|d| format!("{d:?}")).unwrap_or_else(|| "never".into());
        format!("{} of {} failed (detected: {detected}): {:?}", f.len(), samples.len(), &f[..f.len().min(5)])
    }

    /// The detection time, which must be there.
    fn detected(&self, lab: &Lab) -> Duration {
        self.detected_after.unwrap_or_else(|| {
            panic!(
                "real {} never marked down; now {:?}; requests after the kill: {}",
                lab.real(VICTIM),
                state(lab, 80, VICTIM),
                failures(&self.after_kill)
            )
        })
    }
}

/// 100 requests/s (each within `timeout`) through VIP:80; one second in,
/// real [`VICTIM`] dies; the listing is read every [`POLL`] until it shows
/// the real down (at most `limit`), and the requests go on 2 s more.
fn die_under_load(lab: &mut Lab, how: Kill, timeout: Duration, limit: Duration) -> (Dying, Dead) {
    let load = lab.paced_load(80, 100.0, timeout, limit + Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let killed = Instant::now();
    let dead = kill(lab, VICTIM, how);
    // From the kill's start: stopping or silencing a real takes a while
    // itself, and requests that began during it came before any verdict.
    let detected = time_until(limit, || is_down(&state(lab, 80, VICTIM))).map(|_| killed.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    let samples = load.finish();
    let after = |t: Instant| samples.iter().filter(|s| s.start >= t).cloned().collect::<Vec<_>>();
    let dying = Dying {
        detected_after: detected,
        after_kill: after(killed),
        after_detection: after(killed + detected.unwrap_or_default()),
        killed,
    };
    (dying, dead)
}

/// Without SYNProxy and without checks: the data path's failures mark the
/// real down within 1 s (plus one poll of the listing), and no request
/// started after that fails.
fn passive_detection(test: &str, driver: Driver, family: Family, how: Kill) {
    let Some(mut lab) = Lab::start(test, LabSpec { driver, family, ..LabSpec::default() }) else { return };
    warm_up(&lab);
    let (d, _dead) = die_under_load(&mut lab, how, Duration::from_millis(500), Duration::from_secs(5));
    let after = d.detected(&lab);
    assert!(after <= Duration::from_secs(1) + POLL, "passively down after {after:?}");
    assert_eq!(ok_count(&d.after_detection), d.after_detection.len(), "{}", d.failures(&d.after_detection));
    assert!(!transition_lines(&lab, VICTIM).is_empty(), "no transition logged:\n{}", lab.daemon_log());
}

fn stopped_real_is_passively_down_within_a_second(driver: Driver, family: Family) {
    passive_detection("h-passive-stop", driver, family, Kill::Stop);
}

fn silent_real_is_passively_down_within_a_second(driver: Driver, family: Family) {
    passive_detection("h-passive-silent", driver, family, Kill::Silence);
}

/// With `check = "tcp"` and passive detection off: down within fall
/// intervals (stretched by the jitter; for a silent real the last probe's
/// failure is known only when its timeout ends), then no request fails.
/// The transition is logged, counted and shown with its reason.
fn active_detection(test: &str, driver: Driver, family: Family, how: Kill) {
    let spec = LabSpec {
        driver,
        family,
        extra: health("passive = false"),
        service_keys: "check = \"tcp\"\n".into(),
        metrics: true,
        ..LabSpec::default()
    };
    let Some(mut lab) = Lab::start(test, spec) else { return };
    let up =
        time_until(Duration::from_secs(5), || state(&lab, 80, 0) == "up" && state(&lab, 80, VICTIM) == "up");
    assert!(up.is_some(), "reals not up:\n{}", lab.adm_ok(&["-L", "-n"]));
    warm_up(&lab);
    let transitions_before = lab.metric("rvs_health_transitions_total").unwrap_or(0);
    let lines_before = transition_lines(&lab, VICTIM);
    let falls = INTERVAL.mul_f64(f64::from(FALL) * (1.0 + JITTER));
    let bound = falls + if how == Kill::Silence { TIMEOUT } else { Duration::ZERO } + POLL;
    let (d, _dead) = die_under_load(&mut lab, how, Duration::from_millis(500), Duration::from_secs(8));
    let after = d.detected(&lab);
    assert!(after <= bound, "down by its check after {after:?} (bound {bound:?})");
    assert_eq!(ok_count(&d.after_detection), d.after_detection.len(), "{}", d.failures(&d.after_detection));

    let h = health_json(&lab, 80, VICTIM);
    assert!(is_down(h["state"].as_str().unwrap_or_default()), "{h:#}");
    assert!(h["last_check"].is_object(), "{h:#}");
    assert!(h["reason"].as_str().is_some_and(|r| !r.is_empty()), "{h:#}");
    assert_eq!(lab.metric("rvs_real_up"), Some(1), "one of two reals up");
    assert!(lab.metric("rvs_health_transitions_total").unwrap_or(0) > transitions_before);
    assert!(lab.metric("rvs_probes_failed_total").unwrap_or(0) >= u64::from(FALL));
    assert!(lab.metric("rvs_probe_duration_seconds_count").unwrap_or(0) > 0);
    assert_eq!(lab.metric("rvs_probers_stuck"), Some(0));
    let lines = transition_lines(&lab, VICTIM);
    assert_eq!(lines.len(), lines_before.len() + 1, "one line per transition: {lines:#?}");
}

fn stopped_real_is_down_by_its_tcp_check_within_fall_intervals(driver: Driver, family: Family) {
    active_detection("h-active-stop", driver, family, Kill::Stop);
}

fn silent_real_is_down_by_its_tcp_check_within_fall_intervals(driver: Driver, family: Family) {
    active_detection("h-active-silent", driver, family, Kill::Silence);
}

/// With SYNProxy and passive detection only: while the real dies and
/// after, no request fails and none takes over 100 ms (a reset moves the
/// client at once, silence after two short retransmits).
fn synproxy_dying_real(test: &str, driver: Driver, family: Family, how: Kill) {
    let Some(mut lab) = Lab::start(test, LabSpec { driver, family, synproxy: true, ..LabSpec::default() })
    else {
        return;
    };
    warm_up(&lab);
    // Whether and when the real is marked down does not matter here.
    let (d, _dead) = die_under_load(&mut lab, how, Duration::from_secs(3), Duration::from_secs(3));
    assert_eq!(ok_count(&d.after_kill), d.after_kill.len(), "{}", d.failures(&d.after_kill));
    let slow: Vec<Duration> =
        d.after_kill.iter().map(|s| s.took).filter(|&t| t > Duration::from_millis(100)).collect();
    assert!(slow.is_empty(), "{} requests over 100 ms: {slow:?}", slow.len());
}

fn stopped_real_costs_synproxy_clients_nothing(driver: Driver, family: Family) {
    synproxy_dying_real("h-sp-stop", driver, family, Kill::Stop);
}

fn silent_real_costs_synproxy_clients_nothing(driver: Driver, family: Family) {
    synproxy_dying_real("h-sp-silent", driver, family, Kill::Silence);
}

/// A real revived comes back within rise intervals of its check, then its
/// weight ramps over the slow start: the listing's share rises, then it is
/// plainly up, and it answers requests again.
fn revived_real_is_back_within_rise_intervals_and_ramps_up(driver: Driver, family: Family) {
    let spec = LabSpec {
        driver,
        family,
        extra: health("slow_start_ms = 4000"),
        service_keys: "check = \"tcp\"\n".into(),
        ..LabSpec::default()
    };
    let Some(mut lab) = Lab::start("h-revive", spec) else { return };
    warm_up(&lab);
    let dead = kill(&mut lab, VICTIM, Kill::Stop);
    let down = time_until(Duration::from_secs(6), || is_down(&state(&lab, 80, VICTIM)));
    assert!(down.is_some(), "not down: {}", state(&lab, 80, VICTIM));
    dead.revive(&mut lab, VICTIM);
    let rises = INTERVAL.mul_f64(f64::from(RISE) * (1.0 + JITTER)) + POLL;
    let mut seen = Vec::new();
    let back = time_until(rises + Duration::from_secs(1), || {
        let s = state(&lab, 80, VICTIM);
        let back = !is_down(&s);
        seen.push(s);
        back
    });
    assert!(back.is_some_and(|t| t <= rises), "back after {back:?} (bound {rises:?}): {seen:?}");
    let mut shares = Vec::new();
    let up = time_until(Duration::from_secs(6), || {
        let s = state(&lab, 80, VICTIM);
        shares.extend(slow_pct(&s));
        s == "up"
    });
    assert!(up.is_some(), "never fully up: {shares:?}, now {}", state(&lab, 80, VICTIM));
    shares.dedup();
    assert!(shares.len() >= 2 && shares.windows(2).all(|w| w[0] < w[1]), "slow start shares {shares:?}");
    assert!(shares.iter().all(|&p| p < 100), "{shares:?}");
    let s = sequential(&lab, 20, Duration::from_secs(3), 0);
    assert_eq!(ok_count(&s), 20, "{}", failures(&s));
    assert!(s.iter().any(|x| x.outcome.as_deref() == Ok("real1")), "the revived real answers again");
}

/// 1 % loss both ways on every balancer–real link, checks every second,
/// light traffic: no real changes state.
fn lossy_links(test: &str, driver: Driver, family: Family, secs: u64) {
    let spec = LabSpec {
        driver,
        family,
        extra: health("interval_ms = 1000"),
        service_keys: "check = \"tcp\"\n".into(),
        metrics: true,
        ..LabSpec::default()
    };
    let Some(mut lab) = Lab::start(test, spec) else { return };
    warm_up(&lab);
    let before = lab.metric("rvs_health_transitions_total").unwrap_or(0);
    let logged_before = transition_lines(&lab, 0).len() + transition_lines(&lab, VICTIM).len();
    lab.topo.inject_loss(1.0).expect("inject loss (nft installed?)");
    let load = lab.paced_load(80, 20.0, Duration::from_secs(5), Duration::from_secs(secs + 10));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut not_up = Vec::new();
    while Instant::now() < end {
        for i in [0, VICTIM] {
            let s = state(&lab, 80, i);
            if s != "up" {
                not_up.push((i, s));
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let samples = load.finish();
    assert!(not_up.is_empty(), "states other than up: {not_up:?}");
    assert_eq!(lab.metric("rvs_health_transitions_total").unwrap_or(0), before, "transitions under 1 % loss");
    let logged = transition_lines(&lab, 0).len() + transition_lines(&lab, VICTIM).len();
    assert_eq!(logged, logged_before, "{}", lab.daemon_log());
    assert_eq!(ok_count(&samples), samples.len(), "{}", failures(&samples));
}

fn one_percent_loss_for_a_minute_flaps_nothing(driver: Driver, family: Family) {
    lossy_links("h-loss", driver, family, 60);
}

fn one_percent_loss_for_ten_minutes_flaps_nothing(driver: Driver, family: Family) {
    if long_tests("one_percent_loss_for_ten_minutes_flaps_nothing") {
        lossy_links("h-loss-long", driver, family, 600);
    }
}

/// 3 services over the same 3 reals, two on the reals' port 80 and one on
/// 8080, all with the same check: one prober per (real, port, check), so
/// each real gets one probe SYN per interval on each port, not one per
/// service; and no probe passes through the data path as a client connection.
fn services_sharing_reals_share_their_probers(driver: Driver, family: Family) {
    let svc =
        |port, real_port| ExtraService { port, real_port, reals: vec![0, 1, 2], ..ExtraService::default() };
    let spec = LabSpec {
        driver,
        family,
        weights: vec![1, 1, 1],
        service_keys: "check = \"tcp\"\n".into(),
        real_ports: vec![8080],
        more_services: vec![svc(81, 80), svc(82, 8080)],
        metrics: true,
        ..LabSpec::default()
    };
    let Some(lab) = Lab::start("h-shared", spec) else { return };
    // Past every prober's first (jittered) probe.
    std::thread::sleep(INTERVAL * 2);
    let counters: Vec<_> = (0..3).map(|i| lab.probe_counter(i, &[80, 8080])).collect();
    let window = Duration::from_secs(8);
    std::thread::sleep(window);
    let per_interval = window.as_secs_f64() / INTERVAL.as_secs_f64();
    let (lo, hi) = (
        (per_interval * (1.0 - 2.0 * JITTER)).floor() as u64 - 1,
        (per_interval * (1.0 + 2.0 * JITTER)).ceil() as u64 + 1,
    );
    let mut counts = Vec::new();
    for (i, c) in counters.iter().enumerate() {
        for port in [80, 8080] {
            counts.push((i, port, c.probes(port), c.clients(port)));
        }
    }
    for &(i, port, probes, clients) in &counts {
        assert!(
            (lo..=hi).contains(&probes),
            "real {i} port {port}: {probes} probes in {window:?}, want {lo}..={hi}: {counts:?}"
        );
        assert_eq!(clients, 0, "probes came through the data path: {counts:?}");
    }
    for i in 0..3 {
        let addr = lab.real_addrs()[i];
        for port in [80, 8080] {
            let real = std::net::SocketAddr::new(addr, port).to_string();
            assert_eq!(probers_of(&lab, &real), 1, "{}", lab.adm_ok(&["-L", "-n", "--health"]));
        }
    }
    assert_eq!(lab.metric("rvs_probers_stuck").unwrap_or(0), 0);
}

/// Every real failing its check (a path nginx does not serve): the panic
/// threshold spreads new connections over all of them as if up, and the
/// listing says so; a check that passes (set with `rvs adm -E --check`)
/// ends the panic.
fn failing_checks_everywhere_panic_and_traffic_flows(driver: Driver, family: Family) {
    let spec = LabSpec {
        driver,
        family,
        service_keys: "check = \"http:/no-such-page\"\n".into(),
        ..LabSpec::default()
    };
    let Some(lab) = Lab::start("h-panic", spec) else { return };
    let limit = INTERVAL.mul_f64(f64::from(FALL + 2) * (1.0 + JITTER));
    let panicked = time_until(limit, || panics(&lab, 80));
    assert!(panicked.is_some(), "no panic:\n{}", lab.adm_ok(&["-L", "-n"]));
    assert!(
        is_down(&state(&lab, 80, 0)) && is_down(&state(&lab, 80, VICTIM)),
        "{}",
        lab.adm_ok(&["-L", "-n"])
    );
    let s = sequential(&lab, 40, Duration::from_secs(3), 0);
    assert_eq!(ok_count(&s), 40, "{}", failures(&s));
    for real in ["real0", "real1"] {
        assert!(s.iter().any(|x| x.outcome.as_deref() == Ok(real)), "{real} took no connection in panic");
    }
    let vip = lab.vip_at(80).to_string();
    lab.adm_ok(&["-E", "-t", &vip, "-s", "wrr", "--check", "http:/"]);
    // Back in rotation (slow start counts) ends the panic.
    let calm = time_until(INTERVAL.mul_f64(f64::from(RISE + 2)), || {
        !panics(&lab, 80) && !is_down(&state(&lab, 80, 0)) && !is_down(&state(&lab, 80, VICTIM))
    });
    assert!(calm.is_some(), "still panicking after a passing check:\n{}", lab.adm_ok(&["-L", "-n"]));
    // Back on the new check's word: it has probed each real `rise` times.
    for i in [0, VICTIM] {
        let sent = probes_sent(&lab, &lab.real(i), "http");
        assert!(sent >= u64::from(RISE), "{} back after {sent} probes of its new check", lab.real(i));
    }
}

/// Probes sent so far by the `kind` prober of `target` (`ADDR:PORT`).
fn probes_sent(lab: &Lab, target: &str, kind: &str) -> u64 {
    let v: Value = serde_json::from_str(&lab.adm_ok(&["-L", "-n", "--health", "--json"])).expect("JSON");
    let probers = v["probers"].as_array().cloned().unwrap_or_default();
    let p = probers.iter().find(|p| p["target"] == target && p["kind"] == kind);
    p.and_then(|p| p["sent"].as_u64()).unwrap_or_else(|| panic!("no {kind} prober of {target}: {v:#}"))
}

/// `--maintenance down` takes a real out of rotation whatever its checks
/// say; `auto` hands it back to them.
fn maintenance_takes_a_real_out_and_auto_brings_it_back(driver: Driver, family: Family) {
    let Some(lab) = Lab::start("h-maint", LabSpec { driver, family, ..LabSpec::default() }) else { return };
    warm_up(&lab);
    let vip = lab.vip_at(80).to_string();
    let real = lab.real(VICTIM);
    lab.adm_ok(&["-e", "-t", &vip, "-r", &real, "--maintenance", "down"]);
    assert_eq!(state(&lab, 80, VICTIM), "maint down");
    let s = sequential(&lab, 20, Duration::from_secs(3), 0);
    assert_eq!(ok_count(&s), 20, "{}", failures(&s));
    assert!(s.iter().all(|x| x.outcome.as_deref() == Ok("real0")), "a real in maintenance took a connection");
    lab.adm_ok(&["-e", "-t", &vip, "-r", &real, "--maintenance", "auto"]);
    let back = time_until(Duration::from_secs(3), || {
        !is_down(&state(&lab, 80, VICTIM)) && !state(&lab, 80, VICTIM).starts_with("maint")
    });
    assert!(back.is_some(), "{}", state(&lab, 80, VICTIM));
    let s = sequential(&lab, 20, Duration::from_secs(3), 0);
    assert!(s.iter().any(|x| x.outcome.as_deref() == Ok("real1")), "back in rotation: {s:?}");
}

/// A reload that keeps a down real keeps it down (no flap to up and back,
/// no client sent to it), and keeps its prober's state.
fn reload_keeps_the_state_of_a_real_it_keeps(driver: Driver, family: Family) {
    let spec = LabSpec { driver, family, service_keys: "check = \"tcp\"\n".into(), ..LabSpec::default() };
    let Some(mut lab) = Lab::start("h-reload", spec) else { return };
    warm_up(&lab);
    let _dead = kill(&mut lab, VICTIM, Kill::Stop);
    let down = time_until(Duration::from_secs(6), || is_down(&state(&lab, 80, VICTIM)));
    assert!(down.is_some(), "not down: {}", state(&lab, 80, VICTIM));
    let lines_before = transition_lines(&lab, VICTIM).len();
    let out = std::process::Command::new(harness::rvs_bin())
        .args(["reload", "--ctl"])
        .arg(&lab.ctl)
        .output()
        .unwrap();
    assert!(out.status.success(), "reload: {}", String::from_utf8_lossy(&out.stderr));
    let mut seen = Vec::new();
    let _ = time_until(Duration::from_secs(1), || {
        seen.push(state(&lab, 80, VICTIM));
        false
    });
    assert!(seen.iter().all(|s| is_down(s)), "states after the reload: {seen:?}");
    let s = sequential(&lab, 20, Duration::from_secs(3), 0);
    assert_eq!(ok_count(&s), 20, "{}", failures(&s));
    assert_eq!(transition_lines(&lab, VICTIM).len(), lines_before, "{}", lab.daemon_log());
}

on_drivers_and_families!(
    1;
    stopped_real_without_settings_costs_at_most_5_of_100,
    silent_real_without_settings_costs_at_most_5_of_100,
    stopped_real_without_settings_costs_synproxy_clients_nothing,
    silent_real_without_settings_costs_synproxy_clients_nothing,
    stopped_real_is_passively_down_within_a_second,
    silent_real_is_passively_down_within_a_second,
    stopped_real_is_down_by_its_tcp_check_within_fall_intervals,
    silent_real_is_down_by_its_tcp_check_within_fall_intervals,
    stopped_real_costs_synproxy_clients_nothing,
    silent_real_costs_synproxy_clients_nothing,
    revived_real_is_back_within_rise_intervals_and_ramps_up,
    one_percent_loss_for_a_minute_flaps_nothing,
    one_percent_loss_for_ten_minutes_flaps_nothing,
    services_sharing_reals_share_their_probers,
    failing_checks_everywhere_panic_and_traffic_flows,
    maintenance_takes_a_real_out_and_auto_brings_it_back,
    reload_keeps_the_state_of_a_real_it_keeps,
);
