//! The `rvs` command line without a network: usage, version, config errors,
//! and `rvs adm` with no daemon to talk to. Needs no root.

use std::process::Command;

fn rvs(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rvs")).args(args).env_remove("RVS_CTL").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_usage() {
    let (code, out, _) = rvs(&["version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("rvs {}", env!("CARGO_PKG_VERSION")));
    let (code, _, err) = rvs(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("usage"));
    let (code, _, err) = rvs(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown command"));
}

#[test]
fn run_rejects_a_bad_config_citing_line_and_key() {
    let dir = std::env::temp_dir().join(format!("rvs-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[driver]\ntun_name = \"rvs0\"\n\n[[service]]\nvip = \"10.0.0.1:80\"\nsched = \"fastest\"\n",
    )
    .unwrap();
    let (code, _, err) = rvs(&["run", "--config", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("line 6"), "{err}");
    assert!(err.contains("sched"), "{err}");
    let (code, _, err) = rvs(&["run", "--config", "/nonexistent/rvs.toml"]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/rvs.toml"), "{err}");
}

#[test]
fn adm_without_a_daemon_says_where_it_looked() {
    let (code, _, err) = rvs(&["adm", "--ctl", "/nonexistent/rvs.sock", "-L", "-n"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the daemon at /nonexistent/rvs.sock"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_rvs"))
        .args(["adm", "-L"])
        .env("RVS_CTL", "/nonexistent/env.sock")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/env.sock"));
    let (code, _, err) = rvs(&["reload", "--ctl", "/nonexistent/rvs.sock"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach"), "{err}");
}

#[test]
fn xdp_driver_on_a_missing_interface_stops_before_touching_the_network() {
    let dir = std::env::temp_dir().join(format!("rvs-cli-xdp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("xdp.toml");
    let secret = dir.join("secret");
    std::fs::write(
        &path,
        format!(
            "[daemon]\nsecret_file = {:?}\n\n[driver]\nkind = \"xdp\"\ninterfaces = [\"rvsnosuchif0\"]\ntun_name = \"rvsclitest0\"\n",
            secret.display().to_string()
        ),
    )
    .unwrap();
    let (code, _, err) = rvs(&["run", "--config", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("rvsnosuchif0"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}
