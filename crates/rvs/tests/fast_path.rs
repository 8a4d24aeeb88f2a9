//! The XDP fast path end to end, in network namespaces with the kernel's
//! TCP stacks: with the xdp driver and `fast_path = true`, bulk downloads
//! through the VIP move into the XDP program once established, and the
//! service's counters still hold every packet and byte that went through;
//! with `fast_path = false` the program forwards nothing itself.
//!
//! Needs root and the programs `scripts/test` installs. Without root these
//! fail, unless `RVS_SKIP_NETNS=1` says to skip them.

#[macro_use]
mod harness;

use std::time::Duration;

use harness::{BIG_BYTES, Driver, FAST_PATH_PACKETS, Family, Lab, LabSpec, wait_until};

/// Downloads of `/big` each test makes.
const DOWNLOADS: u64 = 4;

/// The lab on `driver`, with SYNProxy on VIP:80 or not.
fn lab(test: &str, driver: Driver, synproxy: bool) -> Option<Lab> {
    Lab::start(test, LabSpec { driver, family: Family::V4, metrics: true, synproxy, ..LabSpec::default() })
}

/// Download `/big` [`DOWNLOADS`] times, each whole.
fn download(lab: &Lab) {
    for _ in 0..DOWNLOADS {
        let body = lab.curl("/big").expect("download /big through the VIP");
        assert_eq!(body.len(), BIG_BYTES);
    }
}

/// The VIP:80 service's counter `name`, both directions.
fn service(lab: &Lab, name: &str, direction: &str) -> u64 {
    lab.metric_with(name, &[("direction", direction)]).unwrap_or(0)
}

/// The fast path's metrics, for a failure's message.
fn fast_path_metrics(lab: &Lab) -> String {
    let text = lab.topo.ns_lb().run("curl", ["-s", "http://127.0.0.1:9108/metrics"]).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("rvs_fast_path") || l.starts_with("rvs_drops_total") && !l.ends_with(" 0"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn bulk_downloads_move_into_the_fast_path_and_are_counted() {
    bulk_downloads("fp_bulk", Driver::Xdp);
}

/// Each worker installs its own connections; worker 0 counts the program's packets for both.
#[test]
fn bulk_downloads_move_into_the_fast_path_with_two_workers() {
    bulk_downloads("fp_bulk2", Driver::XdpTwoWorkers);
}

fn bulk_downloads(test: &str, driver: Driver) {
    let Some(lab) = lab(test, driver, false) else { return };
    download(&lab);
    // The program's counts reach the engine about every 500 ms.
    let want = DOWNLOADS * BIG_BYTES as u64;
    let counted = wait_until(Duration::from_secs(5), || {
        service(&lab, "rvs_service_bytes_total", "out") >= want && lab.metric(FAST_PATH_PACKETS) > Some(0)
    });
    let log = lab.daemon_log();
    counted.unwrap_or_else(|()| {
        panic!(
            "service bytes out {} of {want} at least, fast path packets {:?}\n{}\n{log}",
            service(&lab, "rvs_service_bytes_total", "out"),
            lab.metric(FAST_PATH_PACKETS),
            fast_path_metrics(&lab)
        )
    });
    // Settled: the last reports of closed connections are in.
    std::thread::sleep(Duration::from_secs(1));
    let fast = lab.metric(FAST_PATH_PACKETS).unwrap();
    let packets =
        service(&lab, "rvs_service_packets_total", "in") + service(&lab, "rvs_service_packets_total", "out");
    eprintln!("fast path: {fast} of {packets} packets forwarded in XDP");
    assert!(fast * 2 > packets, "{fast} of {packets} packets in the fast path\n{log}");
    assert!(fast <= packets, "{fast} fast path packets, {packets} counted by the service");
    // Every byte once: the payload and its headers, not twice.
    let out = service(&lab, "rvs_service_bytes_total", "out");
    assert!(out < want + want / 10, "service bytes out {out} for {want} bytes of payload");
    assert!(lab.metric_with("rvs_fast_path_connections_total", &[("event", "installed")]) >= Some(DOWNLOADS));
    assert!(!log.contains("fast path off"), "{log}");
    lab.assert_no_drops("bulk downloads through the fast path");
}

#[test]
fn synproxy_handshakes_answered_in_xdp_then_offloaded() {
    let Some(lab) = lab("fp_synproxy", Driver::Xdp, true) else { return };
    download(&lab);
    let want = DOWNLOADS * BIG_BYTES as u64;
    let cookies =
        |event| lab.metric_with("rvs_fast_path_syn_cookies_total", &[("event", event)]).unwrap_or(0);
    let counted = wait_until(Duration::from_secs(5), || {
        service(&lab, "rvs_service_bytes_total", "out") >= want && cookies("ack_passed") >= DOWNLOADS
    });
    let log = lab.daemon_log();
    counted.unwrap_or_else(|()| panic!("{}\n{log}", fast_path_metrics(&lab)));
    // Every client SYN answered by the program, every cookie ACK checked there.
    assert!(cookies("syn_ack_sent") >= DOWNLOADS, "{}", fast_path_metrics(&lab));
    assert!(lab.metric(FAST_PATH_PACKETS) > Some(0), "{}", fast_path_metrics(&lab));
    lab.assert_no_drops("SYNProxy downloads through the fast path");
}

#[test]
fn without_the_fast_path_the_program_forwards_nothing() {
    let Some(lab) = lab("fp_off", Driver::XdpNoFastPath, false) else { return };
    download(&lab);
    let want = DOWNLOADS * BIG_BYTES as u64;
    wait_until(Duration::from_secs(5), || service(&lab, "rvs_service_bytes_total", "out") >= want)
        .expect("every download counted");
    // Not in the metrics at all, so nothing the program forwarded.
    assert_eq!(lab.metric(FAST_PATH_PACKETS).unwrap_or(0), 0);
    lab.assert_no_drops("bulk downloads without the fast path");
}

/// Short SYNProxy connections (`Connection: close`, as the cps benchmark
/// makes them) through the fast path, from a port range that brings client
/// ports back within seconds: a new SYN on a port must not find the last
/// connection of that port still closing in the engine (the peer's ACK of
/// a FIN forwarded past it by a rule not yet removed; or a FIN the client
/// sent before the real answered, kept and replayed by SYNProxy but not
/// counted as the client's close), where it waits for a SYN retransmission
/// (1 s). No more SYNs sent again than with the fast path off.
#[test]
fn short_synproxy_connections_reusing_client_ports_never_wait() {
    let on = short_connections("fp_cps", Driver::Xdp);
    let off = short_connections("fp_cps_off", Driver::XdpNoFastPath);
    let (Some(on), Some(off)) = (on, off) else { return };
    eprintln!("fast path on: {on:?}\nfast path off: {off:?}");
    assert!(on.syn_retransmits <= off.syn_retransmits + 1, "fast path {on:?}, without {off:?}");
    // How many it made is the benchmark's to compare (rvs-bench cps), not a test's.
    assert!(on.requests > 0 && off.requests > 0, "fast path {on:?}, without {off:?}");
}

/// What [`short_connections`] saw.
#[derive(Debug)]
struct ShortRun {
    requests: u64,
    /// SYNs the client sent again.
    syn_retransmits: u64,
}

/// `wrk` with `Connection: close` for 4 s over 64 connections, client
/// ports reused from TIME_WAIT after 1 s, as in the benchmark lab.
fn short_connections(test: &str, driver: Driver) -> Option<ShortRun> {
    let lab = lab(test, driver, true)?;
    let client = lab.client();
    for setting in ["net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"] {
        client.run("sysctl", ["-qw", setting]).expect("set the client's port reuse");
    }
    client.run("nstat", ["-n"]).expect("nstat");
    let wrk = lab.wrk(4, 64, true);
    let text = client.run("nstat", ["-az", "TcpExtTCPSynRetrans"]).expect("nstat");
    let syn_retransmits =
        text.lines().filter_map(|l| l.split_whitespace().nth(1)).filter_map(|n| n.parse::<u64>().ok()).sum();
    eprintln!("{test}: {}{}", wrk.text, fast_path_metrics(&lab));
    Some(ShortRun { requests: wrk.requests, syn_retransmits })
}
