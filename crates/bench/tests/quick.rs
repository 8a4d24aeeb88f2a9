//! The suite's `--quick` smoke run, as root (like the other namespace
//! tests; `RVS_SKIP_NETNS=1` skips it without root): every scenario runs
//! and yields figures, and nothing is left behind.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The rvs binary the workspace build made: the test profile's when
/// `cargo test --workspace` built it, else a release build.
fn rvs_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/quick-<hash>
    let target = exe.parent()?.parent()?.parent()?;
    ["debug", "release"].iter().map(|p| target.join(p).join("rvs")).find(|p| p.is_file())
}

#[test]
fn quick_run_of_every_scenario() {
    if !rvs_netns::netns_tests_enabled("quick_run_of_every_scenario") {
        return;
    }
    let Some(rvs) = rvs_binary() else {
        eprintln!("quick_run_of_every_scenario: skipped: no rvs binary built (cargo build -p rvs)");
        return;
    };
    let svg = std::env::temp_dir().join(format!("rvs-bench-quick-{}.svg", std::process::id()));
    let child = Command::new(env!("CARGO_BIN_EXE_rvs-bench"))
        .args(["all", "--quick", "--json", "--rvs"])
        .arg(&rvs)
        .arg("--svg")
        .arg(&svg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rvs-bench");
    let pid = child.id();
    let out = child.wait_with_output().expect("rvs-bench output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rvs-bench failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let r = &v["results"];
    for row in r["pps"]["rows"].as_array().expect("pps rows") {
        assert!(row["delivered_pps"]["median"].as_f64().unwrap() > 10_000.0, "{row}\n{stderr}");
    }
    for row in r["cps"]["rows"].as_array().expect("cps rows") {
        assert!(row["connections_per_s"]["median"].as_f64().unwrap() > 100.0, "{row}\n{stderr}");
    }
    assert_eq!(r["latency"]["runs"].as_array().map(Vec::len), Some(2), "{stderr}");
    assert!(std::fs::metadata(&svg).is_ok_and(|m| m.len() > 1000));
    let _ = std::fs::remove_file(&svg);
    let flooded = r["flood"]["rows"].as_array().expect("flood rows");
    assert_eq!(flooded.len(), 3, "TUN, AF_XDP and AF_XDP with two workers flooded: {stderr}");
    for row in flooded {
        assert!(row["flood_sent_per_s"]["median"].as_f64().unwrap() > 10_000.0, "{row}\n{stderr}");
        assert!(row["legit_tried"].as_u64().unwrap() > 0, "{row}\n{stderr}");
    }
    // Everything made is gone.
    let left = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let prefix = format!("rvsT{pid}x");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(!left.lines().any(|l| l.starts_with(&prefix)), "namespaces left behind: {left}");
}
