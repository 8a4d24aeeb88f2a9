//! The suite's `--quick` smoke run, as root (like the other namespace
//! tests; `RVS_SKIP_NETNS=1` skips it without root): every scenario runs
//! and yields figures, with the flood's generator the kernel allows and
//! with the packet socket that works everywhere, and nothing is left behind.

use std::path::{Path, PathBuf};
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

/// Runs `rvs-bench ARGS --quick --json --rvs RVS`; its JSON and stderr.
fn quick(rvs: &Path, args: &[&str]) -> (Value, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_rvs-bench"))
        .args(args)
        .args(["--quick", "--json", "--rvs"])
        .arg(rvs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rvs-bench");
    let pid = child.id();
    let out = child.wait_with_output().expect("rvs-bench output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "rvs-bench {args:?} failed: {stderr}");
    // Everything made is gone.
    let left = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let prefix = format!("rvsT{pid}x");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(!left.lines().any(|l| l.starts_with(&prefix)), "namespaces left behind: {left}");
    (serde_json::from_slice(&out.stdout).expect("JSON on stdout"), stderr)
}

fn check_flood(r: &Value, stderr: &str) {
    assert!(r["flood"]["generator"]["ceiling_per_s"].as_f64().unwrap() > 10_000.0, "{stderr}");
    let flooded = r["flood"]["rows"].as_array().expect("flood rows");
    assert_eq!(flooded.len(), 3, "TUN, AF_XDP and AF_XDP with two workers flooded: {stderr}");
    for row in flooded {
        assert!(row["flood_sent_per_s"]["median"].as_f64().unwrap() > 10_000.0, "{row}\n{stderr}");
        assert!(row["legit_tried"].as_u64().unwrap() > 0, "{row}\n{stderr}");
    }
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
    let svg_arg = svg.to_string_lossy().into_owned();
    let (v, stderr) = quick(&rvs, &["all", "--svg", &svg_arg]);
    let r = &v["results"];
    let pps = r["pps"]["rows"].as_array().expect("pps rows");
    assert!(pps.len() >= 6, "{stderr}");
    for row in pps {
        assert!(row["delivered_pps"]["median"].as_f64().unwrap() > 10_000.0, "{row}\n{stderr}");
    }
    assert!(r["pps"]["generator"]["ceiling"]["median"].as_f64().unwrap() > 10_000.0, "{stderr}");
    for row in r["cps"]["rows"].as_array().expect("cps rows") {
        assert!(row["connections_per_s"]["median"].as_f64().unwrap() > 100.0, "{row}\n{stderr}");
    }
    let ports = r["ports"]["rows"].as_array().expect("ports rows");
    assert_eq!(ports.len(), 9, "3 variants × rvs TUN, rvs AF_XDP, nftables: {stderr}");
    for row in ports {
        // A working path: small requests at > 100/s; 1 MB each at > 10/s
        // (10 MB/s; rvs TUN makes 100-200/s on a quiet 2-core machine).
        let floor = if row["variant"] == "1 MB download" { 10.0 } else { 100.0 };
        assert!(row["connections_per_s"].as_f64().unwrap() > floor, "{row}\n{stderr}");
        let rvs = row["path"].as_str().unwrap().starts_with("rvs");
        assert_eq!(row["no_local_port"].is_u64(), rvs, "rvs's drops read from its metrics: {row}");
        for c in ["PAWSTimewait", "TCPSynRetrans"] {
            assert!(row["counters"][c].is_u64(), "{c} read: {row}");
        }
    }
    assert_eq!(r["latency"]["runs"].as_array().map(Vec::len), Some(2), "{stderr}");
    assert!(std::fs::metadata(&svg).is_ok_and(|m| m.len() > 1000));
    let _ = std::fs::remove_file(&svg);
    check_flood(r, &stderr);
    // The generator every machine has, whichever the kernel allowed above.
    let (v, stderr) = quick(&rvs, &["flood", "--rounds", "2", "--generator", "packet-socket"]);
    let generator = &v["results"]["flood"]["generator"];
    assert!(generator["kind"].as_str().unwrap().starts_with("AF_PACKET"), "{stderr}");
    check_flood(&v["results"], &stderr);
}
