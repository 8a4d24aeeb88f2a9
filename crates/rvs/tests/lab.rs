//! `rvs lab`, the README's first command, run as a user runs it: it must
//! build its namespaces, push every request through the daemon, report, and
//! leave nothing behind. Needs root (or `RVS_SKIP_NETNS=1` to skip).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// Run `rvs lab ARGS --json` and return its one result, after checking that
/// the lab removed every namespace it made.
fn lab(args: &[&str], path: Option<&str>) -> Value {
    let results = lab_in(args, path, None);
    assert_eq!(results.len(), 1, "{results:#?}");
    results.into_iter().next().unwrap()
}

/// Run `rvs lab ARGS --json`, in `dir` if given, and return its results,
/// after checking that the lab removed every namespace it made.
fn lab_in(args: &[&str], path: Option<&str>, dir: Option<&Path>) -> Vec<Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rvs"));
    cmd.arg("lab").args(args).arg("--json");
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // The lab names its namespaces after its own PID.
    let prefix = format!("rvsT{}x", child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rvs lab {args:?} failed:\n{stderr}");
    let listing = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    assert!(left.is_empty(), "rvs lab {args:?} left namespaces behind: {left:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json output");
    v.as_array().cloned().expect("an array of results")
}

/// A fresh directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rvs-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn lab_runs_requests_through_rvs_and_cleans_up() {
    if !rvs_netns::netns_tests_enabled("lab") {
        return;
    }
    let r = lab(&["-n", "300"], None);
    assert_eq!(r["succeeded"], 300, "{r:#}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r:#}");
    for real in ["real1", "real2", "real3"] {
        assert_eq!(r["per_real"][real], 100, "wrr over equal weights: {r:#}");
    }
    assert!(r["total"]["p50_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn lab_injects_loss_with_nftables_or_the_drivers_own_fault_injector() {
    if !rvs_netns::netns_tests_enabled("lab-loss") {
        return;
    }
    let r = lab(&["-n", "40", "--loss", "10"], None);
    assert_eq!(r["succeeded"], 40, "{r:#}");
    assert_eq!(r["loss_method"], "nftables", "{r:#}");
    assert!(r["loss_dropped_packets"].as_u64().unwrap() > 0, "{r:#}");
    // Without nft on the PATH the daemon's fault injector drops instead.
    let r = lab(&["-n", "40", "--loss", "10"], Some("/usr/bin:/bin"));
    assert_eq!(r["succeeded"], 40, "{r:#}");
    assert_eq!(r["loss_method"], "rvs fault injection", "{r:#}");
}

#[test]
fn lab_compare_runs_both_retransmit_modes_and_plots_them() {
    if !rvs_netns::netns_tests_enabled("lab-compare") {
        return;
    }
    let dir = Scratch::new("lab-compare");
    let results = lab_in(&["--compare", "-n", "200", "--syn-loss", "5"], None, Some(&dir.0));
    let modes: Vec<&Value> = results.iter().map(|r| &r["retransmit_mode"]).collect();
    assert_eq!(modes, ["classic", "adaptive"], "{results:#?}");
    for r in &results {
        assert_eq!(r["succeeded"], 200, "{r:#}");
        assert_eq!(r["errors"], serde_json::json!({}), "{r:#}");
        assert_eq!(r["synproxy"], true, "{r:#}");
        assert_eq!(r["syn_loss_pct"], 5.0, "{r:#}");
        assert_eq!(r["loss_pct"], 0.0, "{r:#}");
    }
    // Timings are not compared: whether the modes differ depends on the
    // data path, not on the lab.
    let svg = std::fs::read_to_string(dir.0.join("rvs-lab-compare.svg")).expect("the default plot file");
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"), "{svg}");
    assert_eq!(svg.matches("<path ").count(), 2, "{svg}");
    for label in
        ["rvs synproxy classic, SYN loss 5% (n = 200)", "rvs synproxy adaptive, SYN loss 5% (n = 200)"]
    {
        assert!(svg.contains(label), "{label} missing from the legend");
    }
    assert!(svg.contains("200 sequential requests per mode, 5% SYN/SYN-ACK loss"), "{svg}");
}

#[test]
fn lab_kills_and_revives_a_real_and_reports_it_per_second() {
    if !rvs_netns::netns_tests_enabled("lab-kill") {
        return;
    }
    // Without SYNProxy and without health checks, the stopped real's share
    // of requests fails (reset) until it is revived; nothing here needs the
    // balancer to notice.
    let dir = Scratch::new("lab-kill");
    for mode in ["stop", "silence"] {
        let args = [
            "--svg",
            "timeline.svg",
            "-n",
            "300",
            "--rate",
            "100",
            "--reals",
            "2",
            "--synproxy",
            "off",
            "--timeout",
            "0.5",
            "--kill-mode",
            mode,
            "--kill-real",
            "2@0.5",
            "--revive",
            "2@1.5",
        ];
        let results = lab_in(&args, None, Some(&dir.0));
        assert_eq!(results.len(), 1, "{results:#?}");
        let r = &results[0];
        assert_eq!(r["completed"], 300, "{r:#}");
        let events: Vec<&str> =
            r["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(events, [format!("kill real2 ({mode})").as_str(), "revive real2"], "{r:#}");
        let at = |i: usize| r["events"][i]["at_s"].as_f64().unwrap();
        assert!((0.5..0.7).contains(&at(0)) && (1.5..1.7).contains(&at(1)), "{r:#}");
        let seconds = r["per_second"].as_array().unwrap();
        let failed = |s: &Value| s["failed"].as_u64().unwrap();
        assert_eq!(seconds[0]["events"][0], format!("kill real2 ({mode})"), "{r:#}");
        // The failures are counted, and only while real 2 was dead.
        let errors: u64 = r["errors"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert!(errors > 0, "{r:#}");
        assert_eq!(errors, seconds.iter().map(failed).sum::<u64>(), "{r:#}");
        assert_eq!(failed(&seconds[2]) + failed(seconds.last().unwrap()), 0, "{r:#}");
        let kind = if mode == "stop" { "connect_refused" } else { "connect_timeout" };
        assert_eq!(r["errors"][kind].as_u64(), Some(errors), "{r:#}");
        // Whether real 2 is back in rotation after its revival depends on
        // health checking, not on the lab: only that it served at all.
        assert!(r["per_real"]["real2"].as_u64().unwrap() > 0, "{r:#}");
        // The plot shows the requests over time, each failure and both events.
        let svg = std::fs::read_to_string(dir.0.join("timeline.svg")).expect("the plot");
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches(r#"class="failed""#).count() as u64, errors, "{svg}");
        assert_eq!(svg.matches("<circle ").count() as u64, 300 - errors, "{svg}");
        assert_eq!(svg.matches(r#"<line class="event""#).count(), 2, "{svg}");
    }
}

/// The seed's experiment over IPv6 and over NAT64, briefly: every request
/// answered, with SYN/SYN-ACK loss toward the reals that bites.
#[test]
fn lab_runs_the_seed_experiment_over_ipv6_and_nat64() {
    if !rvs_netns::netns_tests_enabled("lab-families") {
        return;
    }
    for family in ["--ipv6", "--nat64"] {
        // A short deadline per request: a broken path fails in minutes, not hours.
        let r = lab(&[family, "-n", "100", "--syn-loss", "5", "--timeout", "2"], None);
        let name = family.trim_start_matches("--");
        assert_eq!(r["family"], name, "{r:#}");
        assert_eq!(r["succeeded"], 100, "{family}: {r:#}");
        assert_eq!(r["errors"], serde_json::json!({}), "{family}: {r:#}");
        assert_eq!(r["synproxy"], true, "{r:#}");
        assert!(r["loss_dropped_packets"].as_u64().unwrap() > 0, "{family}: the loss did not bite: {r:#}");
        assert!(r["label"].as_str().unwrap().ends_with(name), "{r:#}");
    }
}
