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

/// The rows of scenario `s` in a run's results, by path name.
fn row_names(r: &Value, s: &str) -> Vec<String> {
    let rows = r[s]["rows"].as_array().unwrap_or_else(|| panic!("{s} rows in {r}"));
    rows.iter().map(|row| row["path"].as_str().expect("a path name").to_owned()).collect()
}

/// Whether the rvs binary has the fast path: its rows are there only then.
fn has_fast_path(stderr: &str) -> bool {
    !stderr.contains("no fast path rows")
}

fn check_flood(r: &Value, flood: &str, stderr: &str) {
    assert!(r[flood]["generator"]["ceiling_per_s"].as_f64().unwrap() > 10_000.0, "{stderr}");
    let flooded = r[flood]["rows"].as_array().expect("flood rows");
    let mut expected =
        vec!["rvs TUN, SYNProxy on", "rvs AF_XDP, SYNProxy on", "rvs AF_XDP, 2 workers, SYNProxy on"];
    if has_fast_path(stderr) {
        expected.push("rvs AF_XDP fast path, SYNProxy on");
    }
    assert_eq!(row_names(r, flood), expected, "{flood}: {stderr}");
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
    // Two rounds: medians over more than one round, in half the suite's
    // time of the default five.
    let (v, stderr) = quick(&rvs, &["all", "--rounds", "2", "--svg", &svg_arg]);
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
    check_flood(r, "flood", &stderr);
    check_flood(r, "ack-flood", &stderr);
    // The generator every machine has, whichever the kernel allowed above.
    let (v, stderr) = quick(&rvs, &["flood", "--rounds", "1", "--generator", "packet-socket"]);
    let generator = &v["results"]["flood"]["generator"];
    assert!(generator["kind"].as_str().unwrap().starts_with("AF_PACKET"), "{stderr}");
    check_flood(&v["results"], "flood", &stderr);
}

/// `--fast-path`: one round of every row the fast path's targets compare,
/// each printed with figures, and every target ratio printed.
#[test]
fn fast_path_rows_in_one_round() {
    if !rvs_netns::netns_tests_enabled("fast_path_rows_in_one_round") {
        return;
    }
    let Some(rvs) = rvs_binary() else {
        eprintln!("fast_path_rows_in_one_round: skipped: no rvs binary built (cargo build -p rvs)");
        return;
    };
    let (v, stderr) = quick(&rvs, &["pps", "cps", "flood", "ack-flood", "--fast-path", "--rounds", "1"]);
    let r = &v["results"];
    let fast = has_fast_path(&stderr);
    let with_fast = |rows: &[&str], fast_rows: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = rows.iter().map(|s| (*s).to_owned()).collect();
        if fast {
            all.extend(fast_rows.iter().map(|s| (*s).to_owned()));
        }
        all.sort();
        all
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let pps = [
        "ceiling: XDP cross-connect (no balancer)",
        "kernel routing (no NAT)",
        "nftables FullNAT",
        "rvs AF_XDP",
    ];
    let pps_fast = ["rvs AF_XDP fast path", "rvs AF_XDP fast path, generic XDP"];
    assert_eq!(sorted(row_names(r, "pps")), with_fast(&pps, &pps_fast), "{stderr}");
    let cps = [
        "rvs AF_XDP, SYNProxy on",
        "nftables FullNAT",
        "HAProxy mode tcp",
        "kernel routing (no NAT)",
        "rvs AF_XDP, SYNProxy on, 1 real",
        "nftables FullNAT, 1 real",
        "HAProxy mode tcp, 1 real",
    ];
    let cps_fast = [
        "rvs AF_XDP fast path, SYNProxy on",
        "rvs AF_XDP fast path",
        "rvs AF_XDP fast path, SYNProxy on, 1 real",
    ];
    assert_eq!(sorted(row_names(r, "cps")), with_fast(&cps, &cps_fast), "{stderr}");
    for row in r["pps"]["rows"].as_array().unwrap() {
        assert!(row["delivered_pps"]["median"].as_f64().unwrap() > 10_000.0, "{row}\n{stderr}");
        assert!(stderr.contains(&format!("| {} ", row["path"].as_str().unwrap())), "printed: {row}");
    }
    for row in r["cps"]["rows"].as_array().unwrap() {
        assert!(row["connections_per_s"]["median"].as_f64().unwrap() > 100.0, "{row}\n{stderr}");
        assert!(stderr.contains(&format!("| {} ", row["path"].as_str().unwrap())), "printed: {row}");
    }
    for flood in ["flood", "ack-flood"] {
        let rows = with_fast(&["rvs AF_XDP, SYNProxy on"], &["rvs AF_XDP fast path, SYNProxy on"]);
        assert_eq!(sorted(row_names(r, flood)), rows, "{stderr}");
        for row in r[flood]["rows"].as_array().unwrap() {
            assert!(row["legit_tried"].as_u64().unwrap() > 0, "{row}\n{stderr}");
            assert!(row["targets_met"].is_boolean(), "{row}");
        }
    }
    if fast {
        // The targets' ratios, each with its verdict.
        for ratio in [
            "rvs AF_XDP fast path / nftables FullNAT: ",
            "rvs AF_XDP fast path / kernel routing (no NAT): ",
            "rvs AF_XDP fast path / ceiling: XDP cross-connect (no balancer): ",
            "rvs AF_XDP fast path, SYNProxy on, 1 real / nftables FullNAT, 1 real: ",
            "rvs AF_XDP fast path, SYNProxy on, 1 real / kernel routing (no NAT): ",
            "rvs AF_XDP fast path, SYNProxy on, 1 real / HAProxy mode tcp, 1 real: ",
        ] {
            let line =
                stderr.lines().find(|l| l.contains(ratio)).unwrap_or_else(|| panic!("{ratio}\n{stderr}"));
            assert!(line.contains("target ≥"), "{line}");
        }
    }
}
