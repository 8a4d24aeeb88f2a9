//! Path MTU end to end, in network namespaces with the kernel's TCP stacks:
//! a real behind a router whose link to it is 1280 bytes, the client and
//! the balancer on 1500, and transfers of 1 MB both ways through the VIP;
//! and bulk transfers on 1500-byte links everywhere, which a translated
//! path must fit without a single oversize packet (the MSS clamp). Every
//! test runs over the matrix of data paths and families (see `netns.rs`).
//!
//! Needs root and the programs `scripts/test` installs. Without root these
//! fail, unless `RVS_SKIP_NETNS=1` says to skip them.

#[macro_use]
mod harness;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::probes::run_bounded;
use harness::{Driver, ExtraService, Family, Lab, LabSpec, wait_until};
use rvs_netns::Netns;

/// The VIP's port of the iperf3 service (real 0's iperf3 server).
const IPERF: u16 = 5201;
/// Bytes each transfer moves.
const MB: &str = "1M";
/// Longer than a transfer of 1 MB takes here by far, shorter than a path
/// MTU black hole lasts (TCP's own probing starts after several seconds of
/// retransmissions).
const NO_STALL: Duration = Duration::from_secs(5);

/// A lab whose VIP:5201 (SYNProxy on or off) leads to an iperf3 server on real 0.
fn iperf_lab(
    test: &str,
    driver: Driver,
    family: Family,
    synproxy: bool,
) -> Option<(Lab, rvs_netns::ChildGuard)> {
    let service =
        ExtraService { port: IPERF, real_port: IPERF, reals: vec![0], synproxy, ..ExtraService::default() };
    let spec = LabSpec { driver, family, metrics: true, more_services: vec![service], ..LabSpec::default() };
    let lab = Lab::start(test, spec)?;
    let mut cmd = lab.topo.ns_real(0).cmd("iperf3", ["-s", "-p", "5201"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let server = rvs_netns::ChildGuard::spawn(&mut cmd).expect("start iperf3 (installed?)");
    let listening = wait_until(Duration::from_secs(5), || {
        lab.topo.ns_real(0).run("ss", ["-Hltn", "sport = :5201"]).is_ok_and(|o| !o.trim().is_empty())
    });
    assert!(listening.is_ok(), "iperf3 server did not listen");
    Some((lab, server))
}

/// One iperf3 transfer of [`MB`] through VIP:5201 (`reverse`: the real
/// sends), bounded by `limit`; how long it took, or what went wrong.
fn transfer(lab: &Lab, reverse: bool, limit: Duration) -> Result<Duration, String> {
    let vip = lab.vip().to_string();
    let port = IPERF.to_string();
    let mut args = vec!["-c", &vip, "-p", &port, "-n", MB, "--connect-timeout", "3000"];
    if reverse {
        args.push("-R");
    }
    let start = Instant::now();
    let out = run_bounded(&mut lab.client().cmd("iperf3", &args), limit).expect("run iperf3");
    match out.status {
        Some(s) if s.success() => Ok(start.elapsed()),
        _ => Err(format!("timed out: {}; {}{}", out.timed_out, out.stdout, out.stderr)),
    }
}

/// Counters of a namespace's `/proc/net/snmp` and `/proc/net/snmp6`
/// (`Icmp:InDestUnreachs`, `Icmp6InPktTooBigs`, ...).
fn snmp(ns: &Netns) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let v4 = ns.run("cat", ["/proc/net/snmp"]).expect("read /proc/net/snmp");
    let lines: Vec<&str> = v4.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (proto, names) = names.split_once(':').unwrap_or_default();
        let values = values.split_once(':').unwrap_or_default().1;
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            m.insert(format!("{proto}:{n}"), v.parse().unwrap_or(0));
        }
    }
    let v6 = ns.run("cat", ["/proc/net/snmp6"]).expect("read /proc/net/snmp6");
    for line in v6.lines() {
        if let Some((k, v)) = line.split_once(char::is_whitespace) {
            m.insert(k.to_owned(), v.trim().parse().unwrap_or(0));
        }
    }
    m
}

/// The ICMP errors that tell a host its path is narrower: fragmentation
/// needed (a destination unreachable) for IPv4, packet too big for IPv6.
fn too_big_errors(ns: &Netns, v6: bool) -> u64 {
    let c = snmp(ns);
    if v6 { c.get("Icmp6InPktTooBigs") } else { c.get("Icmp:InDestUnreachs") }.copied().unwrap_or(0)
}

/// A real behind a 1280-byte link, the client on 1500: 1 MB from the real
/// (whose own link tells it the MTU) and 1 MB to it, where the client's
/// segments, sized for 1500 (SYNProxy offered the client the balancer's MSS,
/// not the real's), meet the router's 1280-byte link: the router's error
/// reaches the balancer, which relays it to the client (translated across
/// families for NAT64 and NAT46), and the client's path MTU discovery fits
/// its segments. Neither transfer stalls.
fn packet_too_big_reaches_the_client_and_transfers_do_not_stall(driver: Driver, family: Family) {
    let Some((lab, _server)) = iperf_lab("ptb", driver, family, true) else { return };
    let router = lab.route_real_through(0, 1280);
    let before = too_big_errors(lab.client(), family.client_v6());
    let from_router = snmp(router.ns());
    let down = transfer(&lab, true, Duration::from_secs(20));
    let up = transfer(&lab, false, Duration::from_secs(20));
    let errors = too_big_errors(lab.client(), family.client_v6()) - before;
    let sent = |c: &BTreeMap<String, u64>| {
        c.get("Icmp6OutPktTooBigs").copied().unwrap_or(0)
            + c.get("Icmp:OutDestUnreachs").copied().unwrap_or(0)
    };
    let router_sent = sent(&snmp(router.ns())) - sent(&from_router);
    eprintln!(
        "ptb ({}, {}): download {down:?}, upload {up:?}; the router sent {router_sent} errors, the client got {errors}",
        driver.name(),
        family.name()
    );
    let down =
        down.unwrap_or_else(|e| panic!("1 MB from the real behind 1280 bytes: {e}\n{}", lab.daemon_log()));
    let up = up.unwrap_or_else(|e| panic!("1 MB to the real behind 1280 bytes: {e}"));
    assert!(router_sent > 0, "the router never found a packet too big: the check below proves nothing");
    assert!(errors > 0, "the router's {router_sent} errors never reached the client");
    assert!(down < NO_STALL && up < NO_STALL, "a transfer stalled: download {down:?}, upload {up:?}");
}

/// Drops on the balancer's links so far, both ways, summed.
fn link_drops(lab: &Lab) -> u64 {
    [lab.topo.lb_client_if(), lab.topo.lb_real_if()]
        .iter()
        .flat_map(|dev| ["rx_dropped", "tx_dropped"].map(|c| format!("/sys/class/net/{dev}/statistics/{c}")))
        .map(|path| {
            lab.topo
                .ns_lb()
                .run("cat", [&path])
                .expect("read a link counter")
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
        })
        .sum()
}

/// Bulk transfers both ways on 1500-byte links everywhere: a translated
/// packet is 20 bytes longer toward IPv6 than it came, so the balancer must
/// have clamped the MSS of every handshake; no packet is too big anywhere:
/// no ICMP error at either end, no drop on the balancer's links or in rvs.
fn bulk_transfers_on_1500_byte_links_have_no_oversize_packets(driver: Driver, family: Family) {
    for synproxy in [false, true] {
        let Some((lab, _server)) =
            iperf_lab(if synproxy { "bulksp" } else { "bulk" }, driver, family, synproxy)
        else {
            return;
        };
        let what = format!("{} {} synproxy {synproxy}", driver.name(), family.name());
        let (client, real) = (lab.client(), lab.topo.ns_real(0));
        let errors = |ns, v6| too_big_errors(ns, v6);
        let before =
            (errors(client, family.client_v6()), errors(real, family.backend_v6()), link_drops(&lab));
        for reverse in [false, true] {
            // 20 MB each way: enough full-sized segments to find any that does not fit.
            let vip = lab.vip().to_string();
            let args = ["-c", &vip, "-p", "5201", "-n", "20M", "--connect-timeout", "3000"];
            let mut args = args.to_vec();
            if reverse {
                args.push("-R");
            }
            let out =
                run_bounded(&mut client.cmd("iperf3", &args), Duration::from_secs(30)).expect("run iperf3");
            assert!(
                out.status.is_some_and(|s| s.success()),
                "{what}, reverse {reverse}: {}{}",
                out.stdout,
                out.stderr
            );
        }
        let after = (errors(client, family.client_v6()), errors(real, family.backend_v6()), link_drops(&lab));
        assert_eq!(after.0, before.0, "{what}: the client was told its packets were too big");
        assert_eq!(after.1, before.1, "{what}: the real was told its packets were too big");
        assert_eq!(after.2, before.2, "{what}: the balancer's links dropped packets");
        lab.assert_no_drops(&what);
    }
}

on_drivers_and_families!(
    4;
    packet_too_big_reaches_the_client_and_transfers_do_not_stall,
    bulk_transfers_on_1500_byte_links_have_no_oversize_packets,
);
