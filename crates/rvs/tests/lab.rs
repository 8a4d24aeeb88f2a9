//! `rvs lab`, the README's first command, run as a user runs it: it must
//! build its namespaces, push every request through the daemon, report, and
//! leave nothing behind. Needs root (or `RVS_SKIP_NETNS=1` to skip).

use std::process::Command;

use serde_json::Value;

/// Run `rvs lab ARGS --json` and return its one result, after checking that
/// the lab removed every namespace it made.
fn lab(args: &[&str], path: Option<&str>) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rvs"));
    cmd.arg("lab").args(args).arg("--json");
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rvs lab {args:?} failed:\n{stderr}");
    let leftovers = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let lab_pid_names: Vec<String> = String::from_utf8_lossy(&leftovers.stdout)
        .lines()
        .filter(|l| l.contains("-lb") || l.contains("-client") || l.contains("-real"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|n| !n.starts_with(&format!("rvsT{}x", std::process::id())))
        .collect();
    // Other test binaries may have topologies up; a lab's own are named after
    // its PID, which has exited, so any of those left would be orphans.
    for name in &lab_pid_names {
        let pid: u32 = name.trim_start_matches("rvsT").split('x').next().unwrap_or("0").parse().unwrap_or(0);
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "namespace {name} left behind by an ended process"
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json output");
    v.as_array().and_then(|a| a.first()).cloned().expect("one result")
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
