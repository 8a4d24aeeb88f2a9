//! End to end: the rvs daemon between the kernel's own TCP stacks, in
//! network namespaces, with curl, nginx and wrk, and administered with
//! `rvs adm` as an LVS operator would. Every test runs on each data path
//! (`tun` on the TUN device, `xdp` on AF_XDP sockets, `tun_two_workers` and
//! `xdp_two_workers` on each with two workers; the xdp ones with the fast
//! path on, and `_no_fast_path` with it off) and each family (`v4`, `v6`,
//! `nat64`, `nat46`): `name::xdp_nat64`. By default four variants of each
//! cover every family, the TUN data paths and the xdp ones with the fast
//! path on and off; `RVS_FULL_MATRIX=1` runs all twenty-four.
//!
//! Needs root and the programs `scripts/test` installs. Without root these
//! fail, unless `RVS_SKIP_NETNS=1` says to skip them.

#[macro_use]
mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::{BIG_BYTES, Driver, Family, Lab, LabSpec, host, logged_peer};

/// Which real answered (the body nginx returns for `/`).
fn real_of(body: &str) -> usize {
    body.trim().strip_prefix("real").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("body {body:?}"))
}

fn thousand_sequential_curls_succeed_and_reals_see_only_lips(driver: Driver, family: Family) {
    let Some(lab) = Lab::start("curls", LabSpec { driver, family, metrics: true, ..LabSpec::default() })
    else {
        return;
    };
    let mut per_real = BTreeMap::new();
    for i in 0..1000 {
        let body = lab.curl("/").unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        *per_real.entry(real_of(&body)).or_insert(0) += 1;
    }
    assert_eq!(per_real.values().sum::<u32>(), 1000);
    assert_eq!(per_real.len(), 2, "both reals used: {per_real:?}");
    let lips = lab.laddrs();
    let mut logged = 0;
    for i in 0..2 {
        for peer in lab.access_log(i) {
            assert!(lips.contains(&logged_peer(&peer).ip()), "real {i} saw source {peer}, not a LIP");
            logged += 1;
        }
    }
    assert!(logged >= 1000, "nginx logged {logged} requests");
    // Each request is at least 7 packets through the balancer; with the
    // xdp driver only the first packets toward a neighbour not yet known
    // take the kernel's path through the TUN device.
    // The balancer's own traffic still reaches its kernel, which refuses a
    // connection to a closed port at once (curl's exit code 7, not 28 for a
    // timeout).
    let closed = format!("http://{}:1/", host(lab.lb_client_addr()));
    let refused = lab
        .client()
        .cmd("curl", ["-s", "--max-time", "5", &closed])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(refused.code(), Some(7), "the balancer's kernel did not refuse {closed}");
    if driver.workers() > 1 {
        // Both workers took clients (the programs spread them by address and
        // port) and nothing was dropped: every real's answer met the worker
        // that owns its port.
        for w in ["0", "1"] {
            let made = lab.metric_with("rvs_worker_connections_created_total", &[("worker", w)]).unwrap_or(0);
            assert!(made >= 200, "worker {w} created {made} of 1,000 connections");
        }
        lab.assert_no_drops("");
    }
    if driver.uses_xdp() && driver.workers() > 1 {
        // The reals' answers that arrived on the other worker's queue
        // crossed the hand-over veths into the owner's socket.
        let frames = |action| lab.metric_with("rvs_xdp_frames_total", &[("action", action)]).unwrap_or(0);
        let (handed, delivered, dropped) = (frames("handed_over"), frames("delivered"), frames("dropped"));
        assert!(handed >= 1000, "only {handed} frames handed over");
        assert_eq!(delivered, handed, "hand-over veths lost frames");
        assert_eq!(dropped, 0);
    }
    let tun = lab.tun_packets();
    if driver.uses_xdp() {
        assert!(tun < 100, "TUN device carried {tun} packets: the AF_XDP path is not used");
    } else {
        assert!(tun >= 7000, "TUN device carried only {tun} packets");
    }
}

fn wrk_connection_close_has_no_socket_errors(driver: Driver, family: Family) {
    let Some(lab) = Lab::start("wrk", LabSpec { driver, family, ..LabSpec::default() }) else { return };
    let w = lab.wrk(10, 32, true);
    assert!(w.socket_errors.is_none(), "{}", w.text);
    assert_eq!(w.non_2xx, 0, "{}", w.text);
    assert!(w.requests > 1000, "too few requests: {}", w.text);
    let lips = lab.laddrs();
    for i in 0..2 {
        let log = lab.access_log(i);
        assert!(!log.is_empty());
        assert!(log.iter().all(|p| lips.contains(&logged_peer(p).ip())), "{log:?}");
    }
}

fn wrr_weights_hold_over_a_thousand_requests(driver: Driver, family: Family) {
    let spec = LabSpec { driver, family, weights: vec![3, 2, 1], ..LabSpec::default() };
    let Some(lab) = Lab::start("wrr", spec) else { return };
    // One curl process, a new connection per request (the server closes each).
    let urls: Vec<String> = (0..1000).map(|_| lab.url("/")).collect();
    let mut args = vec!["-sS", "--max-time", "60", "-H", "Connection: close"];
    args.extend(urls.iter().map(String::as_str));
    let out = lab.client().run("curl", &args).expect("curl");
    let mut per_real = [0u32; 3];
    for line in out.lines() {
        per_real[real_of(line)] += 1;
    }
    assert_eq!(per_real.iter().sum::<u32>(), 1000);
    for (i, w) in [3.0, 2.0, 1.0].iter().enumerate() {
        let share = f64::from(per_real[i]) / 1000.0;
        let want = w / 6.0;
        assert!(
            (share - want).abs() <= 0.05,
            "real {i}: share {share:.3}, weight share {want:.3}: {per_real:?}"
        );
    }
    // The listing agrees with what the reals saw.
    let list = lab.adm_ok(&["-L", "-n", "--stats", "--exact"]);
    assert!(list.contains(&lab.real(0)), "{list}");
}

/// Quiesce (weight 0) and then delete a real under load: its established
/// connections finish, new connections never reach it.
fn quiesce_and_delete_keep_established_connections(driver: Driver, family: Family) {
    let spec = LabSpec { driver, family, weights: vec![1, 1, 1], sched: "rr", ..LabSpec::default() };
    let Some(lab) = Lab::start("drain", spec) else { return };
    let vip = lab.vip_at(80).to_string();
    for (verb, args) in [
        ("weight 0", vec!["-e", "-t", &vip, "-r", &lab.real(0), "-w", "0"]),
        ("delete", vec!["-d", "-t", &vip, "-r", &lab.real(1)]),
    ] {
        // Six slow downloads: two on every real still in rotation (rr).
        let downloads: Vec<_> = (0..6).map(|_| lab.slow_download("400k")).collect();
        std::thread::sleep(Duration::from_millis(500));
        lab.adm_ok(&args);
        let removed = if verb == "delete" { 1 } else { 0 };
        for i in 0..60 {
            let body = lab.curl("/").unwrap_or_else(|e| panic!("{verb}: request {i}: {e}"));
            let r = real_of(&body);
            assert!(r != 0 && r != removed, "{verb}: new connection went to real{r}");
        }
        for d in downloads {
            let out = d.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{verb}: download failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let size: usize = text.split_whitespace().next().unwrap().parse().unwrap();
            assert_eq!(size, BIG_BYTES, "{verb}: download cut short");
        }
    }
}

fn reload_under_load_loses_no_connection(driver: Driver, family: Family) {
    let Some(lab) = Lab::start("reload", LabSpec { driver, family, ..LabSpec::default() }) else { return };
    let downloads: Vec<_> = (0..4).map(|_| lab.slow_download("400k")).collect();
    let config = lab.config.clone();
    let ctl = lab.ctl.clone();
    let pid = lab.daemon.as_ref().unwrap().pid();
    let new_service = lab.service_text("wlc", &[2, 1]);
    let base = std::fs::read_to_string(&config).unwrap();
    let cut = base.find("[[service]]").unwrap();
    let reloader = std::thread::spawn(move || {
        for round in 0..4 {
            std::thread::sleep(Duration::from_millis(700));
            let text = if round % 2 == 0 { format!("{}{new_service}", &base[..cut]) } else { base.clone() };
            std::fs::write(&config, text).unwrap();
            if round < 2 {
                let out = std::process::Command::new(harness::rvs_bin())
                    .args(["reload", "--ctl"])
                    .arg(&ctl)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "reload: {}", String::from_utf8_lossy(&out.stderr));
            } else {
                // SAFETY: signals our own daemon child by its PID.
                unsafe { libc::kill(pid as i32, libc::SIGHUP) };
            }
        }
    });
    let w = lab.wrk(4, 16, true);
    reloader.join().unwrap();
    assert!(w.socket_errors.is_none(), "{}", w.text);
    assert_eq!(w.non_2xx, 0, "{}", w.text);
    for d in downloads {
        let out = d.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "download failed across reload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let size: usize =
            String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().parse().unwrap();
        assert_eq!(size, BIG_BYTES);
    }
    let log = lab.daemon_log();
    assert_eq!(log.matches("config reloaded").count(), 4, "{log}");
    // The listing shows the last config written (the original one).
    let list = lab.adm_ok(&["-L", "-n"]);
    assert!(list.contains("wrr"), "{list}");
}

fn bad_reload_and_bogus_commands_change_nothing(driver: Driver, family: Family) {
    let Some(lab) = Lab::start("bogus", LabSpec { driver, family, ..LabSpec::default() }) else { return };
    let vip = lab.vip_at(80).to_string();
    let before = lab.adm_ok(&["-S", "-n"]);
    assert!(before.contains(&format!("-A -t {vip} -s wrr")), "{before}");
    let bogus: Vec<Vec<&str>> = vec![
        vec!["--bogus"],
        vec!["-A", "-t", "10.1.1.1"],
        vec!["-A", "-t", &vip],
        vec!["-a", "-t", "10.9.9.9:80", "-r", "10.1.1.1:80"],
        vec!["-a", "-t", &vip, "-r", "10.1.1.1:80", "-g"],
        vec!["-e", "-t", &vip, "-r", "10.1.1.1:80", "-w", "1"],
        vec!["-A", "-t", "10.2.2.2:80", "-s", "nosuch"],
        vec!["-a", "-t", &vip, "-r", "10.1.1.1:80", "-w", "-3"],
        vec!["-P", "-t", &vip, "-z", "not-an-ip"],
    ];
    for args in &bogus {
        let out = lab.adm(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: want a one-line reason, got {err:?}");
    }
    // A restore whose last line is bad applies none of its lines.
    let out = lab.adm_stdin(&["-R"], &format!("-A -t 10.3.3.3:80 -s rr\n-a -t {vip} -r nonsense\n"));
    assert!(!out.status.success());
    // A config that does not parse is refused on reload, and nothing changes.
    std::fs::write(&lab.config, "[[service]]\nvip = \"10.4.4.4:80\"\nsched = \"bogus\"\n").unwrap();
    let out = std::process::Command::new(harness::rvs_bin())
        .args(["reload", "--ctl"])
        .arg(&lab.ctl)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line"), "error cites a line");
    assert_eq!(lab.adm_ok(&["-S", "-n"]), before);
    assert!(lab.curl("/").is_ok());
}

/// Build a service with ipvsadm syntax on an empty daemon, save it, restore
/// it on a fresh daemon, and get the same thing back; then clean shutdown
/// removes the device and routes.
fn adm_builds_a_service_and_save_restore_round_trips(driver: Driver, family: Family) {
    let spec = LabSpec { driver, family, laddrs: 2, metrics: true, ..LabSpec::default() };
    let Some(mut lab) = Lab::start("adm", spec) else { return };
    let vip = lab.vip_at(80).to_string();
    // Start over from an empty daemon: clear, then build with ipvsadm syntax.
    lab.adm_ok(&["-C"]);
    assert!(lab.curl("/").is_err(), "no service, no answer");
    let lips: Vec<String> = lab.laddrs().iter().map(|l| l.to_string()).collect();
    lab.adm_ok(&["-A", "-t", &vip, "-s", "rr"]);
    for l in &lips {
        lab.adm_ok(&["-P", "-t", &vip, "-z", l]);
    }
    lab.adm_ok(&["-a", "-t", &vip, "-r", &lab.real(0), "-b", "-w", "1"]);
    lab.adm_ok(&["-a", "-t", &vip, "-r", &lab.real(1), "-b", "-w", "2"]);
    for _ in 0..10 {
        lab.curl("/").expect("request through a service built with rvs adm");
    }
    if driver.uses_xdp() {
        // The program's maps followed rvs adm: the kernel's path through the
        // TUN device carried only what was sent while each real's neighbour
        // entry was being resolved (a connection's first packets), not every
        // packet that crossed the client link.
        let (tun, client_link) = (lab.tun_packets(), lab.lb_link_packets(lab.topo.lb_client_if()));
        assert!(
            tun * 3 < client_link,
            "TUN device carried {tun} packets of {client_link} on the client link: XDP maps not updated by rvs adm"
        );
    }
    let list = lab.adm_ok(&["-L", "-n"]);
    assert!(list.contains(&vip) && list.contains("FullNat"), "{list}");
    let conns = lab.adm_ok(&["-L", "-n", "-c"]);
    assert!(conns.lines().count() >= 2, "{conns}");
    let json = lab.adm_ok(&["-L", "-n", "--json"]);
    serde_json::from_str::<serde_json::Value>(&json).expect("--json is JSON");
    let laddrs = lab.adm_ok(&["-G"]);
    assert!(lips.iter().all(|l| laddrs.contains(l)), "{laddrs}");
    let metrics = lab.topo.ns_lb().run("curl", ["-s", "http://127.0.0.1:9108/metrics"]).unwrap();
    assert!(metrics.contains("rvs_drops_total{reason=\"no_service\"}"), "{metrics}");
    assert!(metrics.contains(&format!("vip=\"{vip}\"")), "{metrics}");

    let saved = lab.adm_ok(&["-S", "-n"]);
    assert!(saved.contains("-P -t"), "laddr lines saved: {saved}");
    lab.adm_ok(&["-C"]);
    assert_eq!(lab.adm_ok(&["-S", "-n"]).trim(), "");
    let out = lab.adm_stdin(&["-R"], &saved);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lab.adm_ok(&["-S", "-n"]), saved);
    lab.curl("/").expect("request after restore");

    let lb = lab.topo.ns_lb().clone();
    let status = lab.stop_daemon().expect("daemon exit status");
    assert!(status.success(), "daemon exit: {status:?}\n{}", lab.daemon_log());
    let routes = lb.run("ip", ["route"]).unwrap() + &lb.run("ip", ["-6", "route"]).unwrap();
    assert!(!routes.contains("rvs0") && !routes.contains(&lab.vip().to_string()), "{routes}");
    assert!(lb.run("ip", ["link", "show", "rvs0"]).is_err(), "device removed");
    let links = lb.run("ip", ["-o", "link"]).unwrap();
    assert!(!links.contains("rvs0h"), "hand-over veth pairs left behind: {links}");
    for dev in [lab.topo.lb_client_if(), lab.topo.lb_real_if()] {
        let link = lb.run("ip", ["link", "show", dev]).unwrap();
        assert!(!link.contains("xdp"), "XDP program left on {dev}: {link}");
    }
    assert!(!lab.ctl.exists(), "control socket removed");
}

/// One request that the real closes first (so it leaves its (LIP, port,
/// real) in the real's TIME_WAIT): its seconds, or curl's complaint.
fn closing_request(lab: &Lab) -> Result<f64, String> {
    let out = lab
        .client()
        .cmd("curl", ["-sS", "-o", "/dev/null", "-w", "%{time_total}", "--max-time", "10"])
        .args(["-H", "Connection: close", &lab.url("/")])
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// `n` sequential [`closing_request`]s, each of which must succeed; the slowest one's seconds.
fn closing_requests(lab: &Lab, n: usize) -> f64 {
    (0..n).map(|i| closing_request(lab).unwrap_or_else(|e| panic!("request {i}: {e}"))).fold(0.0, f64::max)
}

/// SYNs the reals refused in TIME_WAIT because their timestamp was older.
fn paws_timewait(lab: &Lab) -> u64 {
    lab.topo
        .ns_reals()
        .iter()
        .map(|ns| harness::probes::tcp_ext(ns).get("PAWSTimewait").copied().unwrap_or(0))
        .sum()
}

/// After a restart the daemon hands out the same local ports again, toward
/// reals that still hold them in TIME_WAIT. Its ISNs and TSvals toward the
/// reals run on a clock whose epoch survives the restart and a keyed hash
/// whose key is kept in `secret_file`, so they carry on above what the
/// reals remember and every SYN is accepted at once. With a new secret they
/// would jump at random, and half the reused tuples would cost the client a
/// 1 s SYN retransmission: the check below shows that happening.
fn restart_keeps_reused_ports_acceptable_to_the_reals_time_wait(driver: Driver, family: Family) {
    let spec = LabSpec {
        driver,
        family,
        laddrs: 1,
        // 50 ports per (LIP, real): 100 requests over two reals use each once.
        extra: "[engine]\nport_range = [20000, 20049]\n".to_owned(),
        ..LabSpec::default()
    };
    let Some(mut lab) = Lab::start("restart", spec) else { return };
    closing_requests(&lab, 100);
    let restart = |lab: &mut Lab| {
        let status = lab.stop_daemon().expect("daemon exit status");
        assert!(status.success(), "{}", lab.daemon_log());
        lab.start_daemon();
    };
    restart(&mut lab);
    let before = paws_timewait(&lab);
    let slowest = closing_requests(&lab, 100);
    let refused = paws_timewait(&lab) - before;
    assert_eq!(refused, 0, "reals refused {refused} SYNs on reused ports after a restart");
    assert!(slowest < 0.9, "a request took {slowest} s after the restart");
    // The contrast: a new secret. 16 reused tuples, each refused with
    // probability 1/2 (all pass with probability 2^-16). A refused SYN costs
    // the client a retransmission, on a new port that may be refused in
    // turn, so a request may run out of time here: only the refusals count.
    std::fs::remove_file(lab.dir.join("secret")).unwrap();
    restart(&mut lab);
    let before = paws_timewait(&lab);
    for _ in 0..16 {
        let _ = closing_request(&lab);
    }
    assert!(paws_timewait(&lab) > before, "a new secret went unnoticed: the check above cannot fail");
}

/// What counts SYNs refused on a reused tuple, each summed: the reals'
/// PAWS refusals in TIME_WAIT, and, for a SYN refused by sequence number,
/// which the real answers with an ACK of the old connection and counts
/// nowhere, the client's SYN retransmissions (plain FullNAT: the client gets
/// that ACK, resets the TIME_WAIT and tries again) or SYNProxy's own count
/// of such ACKs (`syn_refused`).
fn refusals(lab: &Lab) -> BTreeMap<String, u64> {
    let mut sum = BTreeMap::new();
    for ns in lab.topo.ns_reals() {
        for (k, v) in harness::probes::tcp_ext(ns) {
            if k == "PAWSTimewait" || k == "TWRecycled" {
                *sum.entry(format!("real {k}")).or_insert(0) += v;
            }
        }
    }
    let client = harness::probes::tcp_ext(lab.client());
    sum.insert("client TCPSynRetrans".to_owned(), client.get("TCPSynRetrans").copied().unwrap_or(0));
    let refused = lab.metric_with("rvs_synproxy_events_total", &[("event", "syn_refused")]).unwrap_or(0);
    sum.insert("SYNProxy syn_refused".to_owned(), refused);
    sum
}

/// One local address, one real, new connections far beyond the local
/// ports: each port comes back as soon as its connection is over, least
/// recently used first, and the real accepts every SYN on a tuple it still
/// holds in TIME_WAIT: no `no_local_port`, no PAWS or TIME_WAIT refusal at
/// the real, no SYN retransmission by the client; with client timestamps
/// on and off, with a 1 MB download per connection, and with SYNProxy.
/// A closed connection's port goes back at once, so 256 local ports are
/// plenty for 32 connections at a time, and each comes back many times
/// within seconds, at any rate. (The client keeps no TIME_WAIT of its own,
/// so that its ports last whatever the rate.)
fn ports_come_back_at_once_and_the_real_accepts_every_reuse(driver: Driver, family: Family) {
    const PORTS: u64 = 256;
    for synproxy in [false, true] {
        let spec = LabSpec {
            driver,
            family,
            laddrs: 1,
            weights: vec![1, 0],
            metrics: true,
            synproxy,
            extra: "[engine]\nport_range = [20000, 20255]\n".to_owned(),
            ..LabSpec::default()
        };
        let Some(lab) = Lab::start(if synproxy { "reusesyn" } else { "reuse" }, spec) else { return };
        let sysctl = |key: &str, value: &str| {
            let path = format!("/proc/sys/net/ipv4/{key}");
            let value = value.to_owned();
            lab.client().run_in(move || std::fs::write(&path, value)).unwrap().unwrap();
        };
        sysctl("tcp_max_tw_buckets", "0");
        let mut variants = vec![("timestamps", "/", "1"), ("no timestamps", "/", "0")];
        if !synproxy {
            variants.push(("1 MB download", "/big", "1"));
        }
        for (variant, path, timestamps) in variants {
            sysctl("tcp_timestamps", timestamps);
            let what = format!("{}{variant}", if synproxy { "SYNProxy, " } else { "" });
            let (before, logged) = (refusals(&lab), lab.access_log(0).len());
            // Downloads fill the data path until TCP backs off: few at a
            // time keep its queues from losing SYNs three times in a row
            // (wrk's 5 s timeout), which would say nothing about reuse.
            let (secs, conns) = if path == "/" { (5, 32) } else { (8, 4) };
            let w = lab.wrk_path(secs, conns, true, path);
            assert!(w.socket_errors.is_none(), "{what}: {}", w.text);
            assert_eq!(w.non_2xx, 0, "{what}: {}", w.text);
            let log = lab.access_log(0);
            let ports: std::collections::HashSet<&String> = log[logged..].iter().collect();
            eprintln!("{what}: {} requests over {} local ports", log.len() - logged, ports.len());
            assert!(ports.len() as u64 <= PORTS);
            assert!((log.len() - logged) as u64 > 2 * PORTS, "{what}: ports hardly reused: {}", w.text);
            let after = refusals(&lab);
            // Bulk downloads fill the balancer's queues until TCP backs off,
            // and what overflows includes SYNs; and with SYNProxy the client's
            // SYNs never reach a real. There the client's retransmissions say
            // nothing of refusals.
            let client_syns_tell = path == "/" && !synproxy;
            let moved: Vec<String> = after
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(v) && (client_syns_tell || !k.starts_with("client")))
                .map(|(k, v)| format!("{k} {} -> {v}", before.get(k).copied().unwrap_or(0)))
                .collect();
            assert!(moved.is_empty(), "{what}: reused tuples refused: {moved:?}");
            assert_eq!(lab.metric_with("rvs_drops_total", &[("reason", "no_local_port")]), Some(0), "{what}");
        }
    }
}

/// A keep-alive client idle past the established timeout: the balancer
/// resets both sides when it forgets the connection, so the real's socket
/// is gone and the client's next request fails at once (rather than wait
/// for its own retransmissions to give up, minutes later); with and
/// without SYNProxy.
/// One-armed: a real is a client of the service too, so its requests and
/// the answers to them come in and go out on the same link (with the xdp
/// driver, a frame leaves by the socket it arrived on, rewritten in its own
/// memory).
fn a_client_on_the_reals_link_is_served_over_that_link(driver: Driver, family: Family) {
    let Some(lab) = Lab::start("onearm", LabSpec { driver, family, metrics: true, ..LabSpec::default() })
    else {
        return;
    };
    let url = lab.url("/");
    let mut per_real = BTreeMap::new();
    for i in 0..200 {
        let body = lab
            .topo
            .ns_real(1)
            .run("curl", ["-sS", "--max-time", "10", &url])
            .unwrap_or_else(|e| panic!("request {i} from real 1 failed: {e}"));
        *per_real.entry(real_of(&body)).or_insert(0) += 1;
    }
    assert_eq!(per_real.len(), 2, "both reals used: {per_real:?}");
    if driver.workers() > 1 {
        lab.assert_no_drops("");
    }
    if driver.uses_xdp() {
        let tun = lab.tun_packets();
        assert!(tun < 100, "TUN device carried {tun} packets: the AF_XDP path is not used");
    }
}

fn an_idle_connection_past_its_timeout_is_reset_on_both_sides(driver: Driver, family: Family) {
    use std::io::{Read, Write};
    for synproxy in [false, true] {
        let spec =
            LabSpec { driver, family, metrics: true, synproxy, weights: vec![1, 0], ..LabSpec::default() };
        let Some(lab) = Lab::start(if synproxy { "idlesyn" } else { "idle" }, spec) else { return };
        lab.adm_ok(&["--set", "3", "0", "0"]);
        let vip = lab.vip_at(80);
        let mut s = lab.client().run_in(move || std::net::TcpStream::connect(vip)).unwrap().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let request = b"GET / HTTP/1.1\r\nHost: rvs\r\n\r\n";
        s.write_all(request).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"real0\n") {
            let n = s.read(&mut buf).expect("first response");
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let real = &lab.topo.ns_reals()[0];
        let established = || real.run("ss", ["-tnH", "state", "established", "( sport = :80 )"]).unwrap();
        assert_eq!(established().lines().count(), 1, "{}", established());
        // Idle past the 3 s timeout: the balancer forgets the connection and
        // resets both sides.
        let gone = harness::wait_until(Duration::from_secs(10), || established().trim().is_empty());
        assert!(gone.is_ok(), "the real still holds the connection: {}", established());
        let start = std::time::Instant::now();
        let next = s.write_all(request).and_then(|()| s.read(&mut buf));
        let waited = start.elapsed();
        match next {
            Err(e) => assert!(
                matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe),
                "synproxy {synproxy}: the next request failed with {e}, not a reset"
            ),
            Ok(n) => panic!("synproxy {synproxy}: the next request got {n} bytes after the timeout"),
        }
        assert!(waited < Duration::from_secs(1), "the reset took {waited:?}");
        assert!(lab.metric("rvs_conns_reset_total").unwrap() >= 1);
        assert!(lab.metric_with("rvs_resets_total", &[("cause", "forgotten")]).unwrap() >= 2);
    }
}

/// `xdp_mode = "auto"` with two workers pinned to CPUs 1 and 0: native XDP
/// on the client's veth, generic on the reals' bridge (which has no native
/// XDP). Frames from the client arrive on either queue; the program puts
/// them into their worker's socket or hands them over through a veth pair
/// by a native redirect. With the fast path off, and on: then established
/// connections cross between the native and the generic link in the program.
#[test]
fn auto_mode_native_on_the_veth_generic_on_the_bridge_with_two_workers() {
    for fast_path in [false, true] {
        auto_mode(fast_path);
    }
}

fn auto_mode(fast_path: bool) {
    let spec = LabSpec {
        driver: Driver::TunTwoWorkers,
        metrics: true,
        extra: format!(
            "[driver]\nkind = \"xdp\"\ninterfaces = [\"cli0\", \"br0\"]\nxdp_mode = \"auto\"\ncpus = [1, 0]\n\
             fast_path = {fast_path}\n"
        ),
        ..LabSpec::default()
    };
    let Some(lab) = Lab::start(if fast_path { "native-fp" } else { "native" }, spec) else { return };
    for i in 0..500 {
        lab.curl("/").unwrap_or_else(|e| panic!("fast path {fast_path}: request {i} failed: {e}"));
    }
    let pid = lab.daemon.as_ref().unwrap().pid();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap();
        let Some(w) = comm.trim().strip_prefix("rvs-worker-") else { continue };
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let cpus =
            status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_owned();
        assert_eq!(cpus, if w == "0" { "1" } else { "0" }, "worker {w} runs on CPUs {cpus}");
    }
    let link = |dev| lab.topo.ns_lb().run("ip", ["link", "show", dev]).unwrap();
    let (cli, br) = (link("cli0"), link("br0"));
    assert!(cli.contains(" xdp ") && !cli.contains("xdpgeneric"), "no native XDP program on cli0: {cli}");
    assert!(br.contains("xdpgeneric"), "no generic XDP program on br0: {br}");
    for w in ["0", "1"] {
        let made = lab.metric_with("rvs_worker_connections_created_total", &[("worker", w)]).unwrap_or(0);
        assert!(made >= 100, "worker {w} created {made} of 500 connections");
    }
    let frames = |action| lab.metric_with("rvs_xdp_frames_total", &[("action", action)]).unwrap_or(0);
    if fast_path {
        // A native program cannot redirect into the bridge (it takes no
        // frames from XDP): the connections stay in the engine, each
        // counted as one the fast path could not send, and still work.
        std::thread::sleep(Duration::from_millis(1200));
        let forwarded = lab.metric(harness::FAST_PATH_PACKETS).unwrap_or(0);
        assert_eq!(forwarded, 0, "the fast path forwarded across native and generic XDP");
        let left =
            lab.metric_with("rvs_fast_path_connections_total", &[("event", "unresolved")]).unwrap_or(0);
        // A connection that closes before it is offered is never counted.
        assert!(left > 0, "no connection left to the engine as unsendable");
    } else {
        // Five or more client packets per request took the sockets.
        assert!(
            frames("direct") + frames("handed_over") >= 2500,
            "{} direct, {} handed over",
            frames("direct"),
            frames("handed_over")
        );
    }
    assert_eq!(frames("delivered"), frames("handed_over"));
    lab.assert_no_drops(&format!("fast path {fast_path}"));
}

on_drivers_and_families!(1; restart_keeps_reused_ports_acceptable_to_the_reals_time_wait);

on_drivers_and_families!(
    4;
    thousand_sequential_curls_succeed_and_reals_see_only_lips,
    wrk_connection_close_has_no_socket_errors,
    wrr_weights_hold_over_a_thousand_requests,
    quiesce_and_delete_keep_established_connections,
    reload_under_load_loses_no_connection,
    bad_reload_and_bogus_commands_change_nothing,
    adm_builds_a_service_and_save_restore_round_trips,
    ports_come_back_at_once_and_the_real_accepts_every_reuse,
    an_idle_connection_past_its_timeout_is_reset_on_both_sides,
    a_client_on_the_reals_link_is_served_over_that_link,
);
