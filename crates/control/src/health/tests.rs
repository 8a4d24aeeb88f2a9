//! The checker's decisions, driven by hand: probe outcomes, passive counts and time.

use core::time::Duration;
use std::collections::BTreeMap;

use rvs_core::{Endpoint, Instant, PassiveCounters, Proto, RealConfig, ServiceConfig};

use super::*;
use crate::model::{Model, ServiceKey, ServiceSpec};

fn ep(s: &str) -> Endpoint {
    s.parse::<std::net::SocketAddr>().unwrap().into()
}

fn svc(vip: &str) -> ServiceKey {
    (Proto::Tcp, ep(vip))
}

/// A service at `vip` with `reals` (weight 10 each) and `check`.
fn add(model: &mut Model, vip: &str, reals: &[&str], check: &str) {
    let key = svc(vip);
    let mut spec = ServiceSpec::new(ServiceConfig::new(key.0, key.1));
    spec.reals = reals.iter().map(|r| RealConfig { endpoint: ep(r), weight: 10 }).collect();
    spec.check = check.parse().unwrap();
    model.services.insert(key, spec);
}

fn weights(h: &Health, model: &Model, vip: &str) -> Vec<u32> {
    h.effective(model).services[&svc(vip)].reals.iter().map(|r| r.weight).collect()
}

fn outcome(up: bool) -> ProbeOutcome {
    ProbeOutcome {
        up,
        latency: Duration::from_millis(2),
        connect: up.then_some(Duration::from_millis(1)),
        detail: if up { "connected".into() } else { "connection refused".into() },
    }
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn checked(model: &Model, settings: HealthSettings) -> Health {
    let mut h = Health::new(settings.clone());
    h.sync(model, &settings);
    h
}

#[test]
fn active_check_falls_rises_and_ramps() {
    let mut m = Model::default();
    add(&mut m, "10.0.0.1:80", &["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"], "tcp");
    let mut h = checked(&m, HealthSettings { slow_start_ms: 4000, ..HealthSettings::default() });
    let probe = h.real(svc("10.0.0.1:80"), ep("10.0.1.1:80")).unwrap().probe.clone().unwrap();
    for i in 0..2 {
        h.on_probe(at(i * 1000), &probe, outcome(false));
        assert!(!h.tick(at(i * 1000)), "down only after fall = 3");
    }
    h.on_probe(at(2000), &probe, outcome(false));
    assert!(h.tick(at(2000)));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [0, 10, 10]);
    let t = h.take_actions().transitions;
    assert_eq!((t.len(), t[0].to, t[0].real), (1, "down", ep("10.0.1.1:80")));
    assert!(t[0].cause.contains("failed 3 times in a row (connection refused)"), "{}", t[0].cause);

    h.on_probe(at(3000), &probe, outcome(true));
    h.tick(at(3000));
    assert_eq!(weights(&h, &m, "10.0.0.1:80")[0], 0, "up only after rise = 2");
    h.on_probe(at(4000), &probe, outcome(true));
    h.tick(at(4000));
    assert_eq!(weights(&h, &m, "10.0.0.1:80")[0], 1, "slow start begins at its floor");
    h.tick(at(6000));
    assert_eq!(weights(&h, &m, "10.0.0.1:80")[0], 5, "half way through the slow start");
    h.tick(at(8000));
    assert_eq!(weights(&h, &m, "10.0.0.1:80")[0], 10);
    assert_eq!(h.real(svc("10.0.0.1:80"), ep("10.0.1.1:80")).unwrap().state, RealState::Up);
    let t = h.take_actions();
    assert_eq!(t.transitions.iter().map(|t| t.to).collect::<Vec<_>>(), ["slow-start", "up"]);
    assert!(t.rtt_seeds.contains(&(ep("10.0.1.1:80"), Duration::from_millis(1))));
}

#[test]
fn one_prober_per_real_port_and_check_whatever_the_services() {
    let mut m = Model::default();
    let reals = ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"];
    let other_port = ["10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080"];
    add(&mut m, "10.0.0.1:80", &reals, "tcp");
    add(&mut m, "10.0.0.2:80", &reals, "tcp");
    add(&mut m, "10.0.0.3:8080", &other_port, "tcp");
    let h = checked(&m, HealthSettings::default());
    assert_eq!(h.wanted().len(), 6);
    assert_eq!(h.sharing(h.wanted().iter().find(|p| p.target.port() == 80).unwrap()), 2);
    // Another check on the same real is another prober.
    add(&mut m, "10.0.0.4:80", &reals, "http:/");
    assert_eq!(checked(&m, HealthSettings::default()).wanted().len(), 9);
}

fn counts(answered: u64, unanswered: u64) -> BTreeMap<Endpoint, PassiveCounters> {
    let c =
        PassiveCounters { syn_answered: answered, syn_unanswered: unanswered, ..PassiveCounters::default() };
    [(ep("10.0.1.1:80"), c)].into()
}

#[test]
fn passive_detection_inhibits_and_backs_off_without_a_check() {
    let mut m = Model::default();
    add(&mut m, "10.0.0.1:80", &["10.0.1.1:80", "10.0.1.2:80"], "none");
    let mut h = checked(&m, HealthSettings { slow_start_ms: 0, ..HealthSettings::default() });
    h.on_passive(at(0), &counts(100, 0));
    h.on_passive(at(250), &counts(110, 2));
    h.tick(at(250));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [10, 10], "2 failures beside 10 successes are no death");
    h.on_passive(at(500), &counts(110, 12));
    h.tick(at(500));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [0, 10]);
    let t = h.take_actions().transitions;
    assert!(
        t[0].cause.starts_with("passive: 12 handshakes or flows failed in a row, 11 of 20"),
        "{}",
        t[0].cause
    );
    h.tick(at(5499));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [0, 10]);
    h.tick(at(5500));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [10, 10], "back after inhibit_ms");
    // Failing again at once: twice the inhibit.
    h.on_passive(at(6000), &counts(110, 16));
    h.tick(at(6000));
    let until = match h.real(svc("10.0.0.1:80"), ep("10.0.1.1:80")).unwrap().state {
        RealState::Down { until } => until,
        s => panic!("{s:?}"),
    };
    assert_eq!(until, Some(at(16_000)));
}

#[test]
fn udp_flows_count_once_the_real_has_answered_one() {
    let mut m = Model::default();
    add(&mut m, "10.0.0.1:80", &["10.0.1.1:80", "10.0.1.2:80"], "none");
    let mut h = checked(&m, HealthSettings::default());
    let udp = |answered, unanswered| {
        let c = PassiveCounters {
            udp_answered: answered,
            udp_unanswered: unanswered,
            ..PassiveCounters::default()
        };
        BTreeMap::from([(ep("10.0.1.1:80"), c)])
    };
    h.on_passive(at(0), &udp(0, 0));
    h.on_passive(at(250), &udp(0, 50));
    h.on_passive(at(500), &udp(1, 60));
    h.tick(at(500));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [10, 10], "a real that never replies is a one-way protocol");
    h.on_passive(at(750), &udp(1, 70));
    h.tick(at(750));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [0, 10], "once it answered, silence counts");
}

#[test]
fn a_busy_real_that_dies_is_judged_on_its_latest_attempts() {
    let mut m = Model::default();
    add(&mut m, "10.0.0.1:80", &["10.0.1.1:80", "10.0.1.2:80"], "none");
    let mut h = checked(&m, HealthSettings::default());
    // 50 handshakes a second for a second, then every one fails.
    for t in 0..=4u64 {
        h.on_passive(at(t * 250), &counts(t * 12, 0));
    }
    h.on_passive(at(1050), &counts(48, 8));
    h.tick(at(1050));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [10, 10], "8 of the last 20 failed");
    h.on_passive(at(1100), &counts(48, 12));
    h.tick(at(1100));
    assert_eq!(
        weights(&h, &m, "10.0.0.1:80"),
        [0, 10],
        "12 of the last 20: down, though 48 succeeded within 2 s"
    );
}

#[test]
fn a_real_whose_successes_stop_is_down_after_two_failures() {
    let mut m = Model::default();
    add(&mut m, "10.0.0.1:80", &["10.0.1.1:80", "10.0.1.2:80"], "none");
    let mut h = checked(&m, HealthSettings::default());
    // 50 successes a second, then a sequential client meets two timeouts, 500 ms apart.
    for t in 0..=8u64 {
        h.on_passive(at(t * 250), &counts(t * 12, 0));
    }
    h.on_passive(at(2150), &counts(96, 1));
    h.tick(at(2150));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [10, 10], "one failure is no streak");
    h.on_passive(at(2650), &counts(96, 2));
    h.tick(at(2650));
    assert_eq!(
        weights(&h, &m, "10.0.0.1:80"),
        [0, 10],
        "2 of the last 20 failed, but 30 successes are missing"
    );
}

#[test]
fn a_busy_real_that_refuses_is_down_after_two_refusals() {
    let mut m = Model::default();
    add(&mut m, "10.0.0.1:80", &["10.0.1.1:80", "10.0.1.2:80"], "none");
    let mut h = checked(&m, HealthSettings::default());
    let refused = |answered, unanswered, refused| {
        let c = PassiveCounters {
            syn_answered: answered,
            syn_unanswered: unanswered,
            syn_refused: refused,
            ..Default::default()
        };
        BTreeMap::from([(ep("10.0.1.1:80"), c)])
    };
    for t in 0..=4u64 {
        h.on_passive(at(t * 250), &refused(t * 12, 0, 0));
    }
    h.on_passive(at(1010), &refused(48, 2, 0));
    h.tick(at(1010));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [10, 10], "two SYNs lost in a row on a busy real are loss");
    h.on_passive(at(1020), &refused(49, 2, 0));
    h.on_passive(at(1040), &refused(49, 2, 2));
    h.tick(at(1040));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [0, 10], "two RSTs in a row are a closed port");
}

#[test]
fn light_loss_never_takes_a_real_down() {
    let mut m = Model::default();
    add(&mut m, "10.0.0.1:80", &["10.0.1.1:80", "10.0.1.2:80"], "none");
    let mut h = checked(&m, HealthSettings::default());
    // 2 % of handshakes lost, 50 a second, for a minute.
    for s in 0..240u64 {
        h.on_passive(at(s * 250), &counts(s * 12, s / 4));
        h.tick(at(s * 250));
    }
    assert!(h.take_actions().transitions.is_empty());
}

#[test]
fn passive_detection_on_a_checked_real_waits_for_its_check() {
    let mut m = Model::default();
    add(&mut m, "10.0.0.1:80", &["10.0.1.1:80", "10.0.1.2:80"], "tcp");
    let mut h = checked(&m, HealthSettings { slow_start_ms: 0, ..HealthSettings::default() });
    h.on_passive(at(0), &counts(0, 0));
    h.on_passive(at(300), &counts(0, 4));
    h.tick(at(300));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [0, 10]);
    h.tick(at(60_000));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [0, 10], "no inhibit clock: the check decides");
    let probe = h.real(svc("10.0.0.1:80"), ep("10.0.1.1:80")).unwrap().probe.clone().unwrap();
    for t in [61_000, 62_000] {
        h.on_probe(at(t), &probe, outcome(true));
        h.tick(at(t));
    }
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [10, 10]);
}

#[test]
fn panic_spreads_over_every_real_and_maintenance_overrides() {
    let mut m = Model::default();
    add(&mut m, "10.0.0.1:80", &["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"], "tcp");
    let mut h = checked(&m, HealthSettings::default());
    let probes: Vec<Probe> = h.wanted().into_iter().collect();
    for t in 0..3 {
        h.on_probe(at(t), &probes[0], outcome(false));
    }
    h.tick(at(10));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [0, 10, 10]);
    assert!(!h.service(svc("10.0.0.1:80")).panic);
    for t in 0..3 {
        h.on_probe(at(t), &probes[1], outcome(false));
    }
    h.tick(at(20));
    let s = h.service(svc("10.0.0.1:80"));
    assert!(s.panic && !s.no_real_up, "{s:?}");
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [10, 10, 10], "1 of 3 up is below 50 %: all take traffic");
    for t in 0..3 {
        h.on_probe(at(t), &probes[2], outcome(false));
    }
    h.tick(at(30));
    assert!(h.service(svc("10.0.0.1:80")).no_real_up);
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [10, 10, 10]);

    let spec = m.services.get_mut(&svc("10.0.0.1:80")).unwrap();
    spec.maintenance.insert(ep("10.0.1.1:80"), Maintenance::Down);
    spec.maintenance.insert(ep("10.0.1.2:80"), Maintenance::Up);
    h.sync(&m, &HealthSettings::default());
    h.tick(at(40));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [0, 10, 0], "1 of 2 up is not below 50 %");
}

#[test]
fn sync_keeps_state_of_reals_that_stay_and_reset_is_an_action() {
    let mut m = Model::default();
    add(&mut m, "10.0.0.1:80", &["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"], "tcp");
    let settings = HealthSettings { on_down: OnDown::Reset, ..HealthSettings::default() };
    let mut h = checked(&m, settings.clone());
    let probe = h.real(svc("10.0.0.1:80"), ep("10.0.1.1:80")).unwrap().probe.clone().unwrap();
    for t in 0..3 {
        h.on_probe(at(t), &probe, outcome(false));
    }
    h.tick(at(10));
    assert_eq!(h.take_actions().resets, [(svc("10.0.0.1:80"), ep("10.0.1.1:80"))]);
    m.services.get_mut(&svc("10.0.0.1:80")).unwrap().reals.pop();
    h.sync(&m, &settings);
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [0, 10]);
    assert_eq!(h.prober(&probe).unwrap().sent, 3);
    // Another check: its new prober brings the real back only once it passed rise times.
    m.services.get_mut(&svc("10.0.0.1:80")).unwrap().check = "tcp,port=81".parse().unwrap();
    h.sync(&m, &settings);
    h.tick(at(20));
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [0, 10]);
    let new = h.real(svc("10.0.0.1:80"), ep("10.0.1.1:80")).unwrap().probe.clone().unwrap();
    for t in [30, 40] {
        h.on_probe(at(t), &new, outcome(true));
        h.tick(at(t));
    }
    assert_eq!(weights(&h, &m, "10.0.0.1:80"), [1, 10]);
}
