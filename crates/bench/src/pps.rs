//! Scenario a: 64-byte established-flow packets/s through each data path,
//! measured with the closed loop ([`crate::closed_loop`]): the client and
//! the reals reflect a fixed population of UDP packets, the balancer
//! forwards each of them both ways. Every path runs over IPv4 and over IPv6
//! (the same payload behind the longer header), and rvs also translates
//! (NAT64, NAT46). Rounds alternate the paths, so each round compares them
//! side by side, IPv6 beside IPv4; the first path of each family, a wire in
//! the balancer's place, is the loop's own ceiling.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Opts;
use crate::bpf::RunStats;
use crate::closed_loop::{self, Client, Loop, Reals};
use crate::lab::{self, Lab, check_stop};
use crate::paths::{
    self, CrossConnect, DataPath, Family, InFamily, KernelRouting, NftFullNat, Proto, Rvs, Service,
};
use crate::report::{Samples, Table, mega, ratio_notes};

/// Before each window: the population injected, losses to the queues of
/// the path refilled, first connections made.
const WARM_UP: Duration = Duration::from_millis(500);

/// The paths measured, in table order: each over IPv4 and then over IPv6,
/// then rvs's fast path on generic XDP and rvs's translations; the first
/// row of each client family is its ceiling. The flowtable rows need a
/// kernel built with flowtables.
fn paths(flowtables: bool) -> Vec<InFamily> {
    let over = |f: Family| -> Vec<InFamily> {
        let all: [Box<dyn DataPath>; 8] = [
            Box::new(CrossConnect),
            Box::new(KernelRouting),
            Box::new(NftFullNat { flowtable: false }),
            Box::new(NftFullNat { flowtable: true }),
            Box::new(Rvs::tun(false)),
            Box::new(Rvs::xdp(1, false)),
            Box::new(Rvs::xdp(2, false)),
            Box::new(Rvs::fast_path(false)),
        ];
        all.into_iter()
            .filter(|p| flowtables || !p.name().contains("flowtable"))
            .map(|p| InFamily(f, p))
            .collect()
    };
    let mut p = over(Family::V4);
    p.extend(over(Family::V6));
    p.push(InFamily(Family::V4, Box::new(Rvs { generic: true, ..Rvs::fast_path(false) })));
    for f in [Family::Nat64, Family::Nat46] {
        p.push(InFamily(f, Box::new(Rvs::xdp(1, false))));
    }
    p
}

/// The rows `--fast-path` keeps: what the fast path's targets compare.
const FAST_PATH_ROWS: &[&str] =
    &[CEILING, ROUTING, NFT, "rvs AF_XDP", FAST, "rvs AF_XDP fast path, generic XDP"];

const ROUTING: &str = "kernel routing (no NAT)";
const NFT: &str = "nftables FullNAT";
const CEILING: &str = "ceiling: XDP cross-connect (no balancer)";
const FAST: &str = "rvs AF_XDP fast path";

/// Ratios printed, as (numerator, denominator) path names: first the fast
/// path's targets (≥ 4× nftables FullNAT, ≥ 2.5× routing, ≥ 0.5× the
/// ceiling, which is the veth's limit), then rvs AF_XDP
/// against nftables FullNAT, its flowtable and plain routing; two workers
/// against one; rvs TUN; the kernel paths against each other and the
/// ceiling; IPv6 and the translations against IPv4, whose target is a cost
/// per packet within 1.15× of IPv4's.
const RATIOS: &[(&str, &str, Option<f64>)] = &[
    (FAST, NFT, Some(4.0)),
    (FAST, ROUTING, Some(2.5)),
    (FAST, CEILING, Some(0.5)),
    (FAST, "rvs AF_XDP", None),
    ("rvs AF_XDP fast path, generic XDP", FAST, None),
    ("rvs AF_XDP fast path, IPv6", FAST, None),
    ("rvs AF_XDP fast path, IPv6", "nftables FullNAT, IPv6", None),
    ("rvs AF_XDP, IPv6", "rvs AF_XDP", Some(1.0 / 1.15)),
    ("rvs AF_XDP", NFT, None),
    ("rvs AF_XDP", "nftables FullNAT, flowtable", None),
    ("rvs AF_XDP", ROUTING, None),
    ("rvs AF_XDP, 2 workers", "rvs AF_XDP", None),
    ("rvs TUN", NFT, None),
    ("rvs TUN", ROUTING, None),
    (NFT, ROUTING, None),
    ("nftables FullNAT, flowtable", NFT, None),
    (ROUTING, CEILING, None),
    ("rvs AF_XDP", CEILING, None),
    ("rvs AF_XDP, IPv6", "nftables FullNAT, IPv6", None),
    ("rvs AF_XDP, IPv6", "kernel routing (no NAT), IPv6", None),
    ("rvs TUN, IPv6", "rvs TUN", None),
    ("nftables FullNAT, IPv6", NFT, None),
    ("rvs AF_XDP, NAT64", "rvs AF_XDP", None),
    ("rvs AF_XDP, NAT46", "rvs AF_XDP", None),
];

#[derive(Debug, Default, Clone)]
struct Figures {
    delivered: Samples,
    forwarded: Samples,
    lost: Samples,
    /// Share of the packets forwarded that the fast path forwarded (its rows).
    in_xdp: Samples,
    /// The daemon's CPU time per second of the window (rvs rows).
    daemon_cpu: Samples,
    /// rvs's XDP program: nanoseconds per run and runs per second (AF_XDP rows).
    prog_ns: Samples,
    prog_runs: Samples,
}

/// Long enough for two of the daemon's 500 ms sweeps of its flow counts.
const SWEEPS_SETTLE: Duration = Duration::from_millis(1200);

/// The window after the measured one in which rvs's XDP program's
/// run-time statistics are on (they cost it two clock reads per packet).
const PROFILE: Duration = Duration::from_millis(1000);

pub(crate) fn run(lab: &Lab, o: &Opts) -> anyhow::Result<(Table, Value)> {
    let svc = Service::new(Proto::Udp, closed_loop::PORT);
    let flowtables = paths::flowtables_available(lab);
    let paths = paths::keep(lab, o, FAST_PATH_ROWS, paths(flowtables));
    let figs = measure(lab, &paths, svc, o)?;
    let mut t = Table::new(
        &format!(
            "64-byte packets/s, closed loop of {} UDP packets over {} flows",
            closed_loop::POPULATION,
            closed_loop::FLOWS
        ),
        &[
            "path",
            "delivered to the reals, packets/s",
            "× ceiling",
            "forwarded (both ways)",
            "lost and refilled, per s",
            "forwarded in XDP",
            "daemon CPU",
            "XDP program, ns per run (runs/s)",
        ],
    );
    // Each row against the ceiling of its clients' family.
    let ceiling = |f: Family| {
        let at = paths.iter().position(|p| p.0.client_v6() == f.client_v6() && p.1.name() == CEILING);
        figs[at.unwrap_or(0)].delivered.median().max(1.0)
    };
    let per_s = |v: f64| format!("{v:.0}");
    let pct = |v: f64| format!("{:.0} %", v * 100.0);
    for (p, f) in paths.iter().zip(&figs) {
        t.row(vec![
            p.name(),
            f.delivered.show(mega),
            format!("{:.2}", f.delivered.median() / ceiling(p.0)),
            f.forwarded.show(mega),
            f.lost.show(per_s),
            if f.in_xdp.0.is_empty() { "—".to_owned() } else { f.in_xdp.show(pct) },
            if f.daemon_cpu.0.is_empty() { "—".to_owned() } else { f.daemon_cpu.show(pct) },
            if f.prog_ns.0.is_empty() {
                "—".to_owned()
            } else {
                format!("{} ({})", f.prog_ns.show(per_s), mega(f.prog_runs.median()))
            },
        ]);
    }
    let names: Vec<String> = paths.iter().map(|p| p.name()).collect();
    let delivered: Vec<&Samples> = figs.iter().map(|f| &f.delivered).collect();
    let ratios = ratio_notes(&mut t, &names, &delivered, RATIOS);
    paths::note_fast_path(lab, &mut t);
    if !flowtables {
        t.note("no flowtable row: this kernel has no nftables flowtables (CONFIG_NF_FLOW_TABLE)".to_owned());
    }
    t.note(format!(
        "medians of {} rounds of {:.1} s (min–max in brackets); the client and the reals send every packet back from XDP, so the balancer forwards each one twice: \"forwarded\" counts both directions; packets unseen at the reals for 200 ms are counted lost and sent again",
        o.rounds, o.pps_secs
    ));
    t.note(format!(
        "IPv6 frames are {} bytes, the IPv4 ones' payload behind the 20 bytes longer header; \"× ceiling\" is against the ceiling of the row's client family",
        crate::frame::FRAME6_LEN + 4
    ));
    t.note(format!(
        "forwarded in XDP: the fast path's packets (rvs_fast_path_packets_total, read once the loop has stopped and the daemon's sweeps have settled) over all the loop's packets the balancer forwarded; daemon CPU: the rvs process's CPU time per second of the window (100 % = one core; its threads busy-poll or sleep as it chooses); XDP program: the kernel's run-time statistics of rvs's program on both links (run_time_ns / run_cnt), taken in a {} ms window after the measured one, since they cost the program two clock reads per run",
        PROFILE.as_millis()
    ));
    let rows: Vec<Value> = paths
        .iter()
        .zip(&figs)
        .map(|(p, f)| {
            json!({
                "path": p.name(),
                "delivered_pps": f.delivered.json(),
                "forwarded_pps": f.forwarded.json(),
                "lost_per_s": f.lost.json(),
                "forwarded_in_xdp": f.in_xdp.json(),
                "daemon_cpu": f.daemon_cpu.json(),
                "xdp_prog_ns_per_run": f.prog_ns.json(),
                "xdp_prog_runs_per_s": f.prog_runs.json(),
            })
        })
        .collect();
    let generator = json!({ "kind": "closed loop", "population": closed_loop::POPULATION, "flows": closed_loop::FLOWS, "ceiling": figs[0].delivered.json() });
    Ok((
        t,
        json!({ "rows": rows, "ratios": ratios, "rounds": o.rounds, "secs": o.pps_secs, "generator": generator }),
    ))
}

/// rvs's XDP program (on both of the balancer's links) while the loop goes
/// on: nanoseconds per run and runs per second.
fn prog_cost(lab: &Lab, l: &mut Loop<'_>) -> anyhow::Result<(f64, f64)> {
    let t = &lab.topo;
    let ids = lab::xdp_prog_ids(lab.lb(), &[t.lb_client_if(), t.lb_real_if()])?;
    let stats = RunStats::enable()?;
    let sum = || -> anyhow::Result<(u64, u64)> {
        ids.iter().try_fold((0, 0), |(ns, n), &id| {
            let (a, b) = stats.of(id)?;
            Ok((ns + a, n + b))
        })
    };
    let (ns0, n0) = sum()?;
    let start = Instant::now();
    l.keep(PROFILE)?;
    let (ns1, n1) = sum()?;
    let runs = n1.saturating_sub(n0);
    Ok((ns1.saturating_sub(ns0) as f64 / runs.max(1) as f64, runs as f64 / start.elapsed().as_secs_f64()))
}

/// Every path's figures, round after round, the paths alternating within a round.
fn measure(lab: &Lab, paths: &[InFamily], svc: Service, o: &Opts) -> anyhow::Result<Vec<Figures>> {
    let reals = Reals::attach(lab)?;
    let client = Client::open(lab)?;
    let secs = Duration::from_secs_f64(o.pps_secs);
    let mut figs = vec![Figures::default(); paths.len()];
    for round in 0..o.rounds {
        for (p, f) in paths.iter().zip(&mut figs) {
            check_stop()?;
            let m = p.setup(lab, svc)?;
            let (ds, rs) = (reals.delivered.read()?, client.returned.read()?);
            let mut l = Loop::start(lab, &reals, &client, m.target)?;
            l.keep(WARM_UP)?;
            let (d0, r0, lost0) = (reals.delivered.read()?, client.returned.read()?, l.lost);
            let profile = lab::Profile::start(&p.name(), m.pid)?;
            let fast = p.name().contains("fast path");
            let cpu0 = m.pid.and_then(lab::cpu_secs);
            let start = Instant::now();
            l.keep(secs)?;
            let s = start.elapsed().as_secs_f64();
            drop(profile);
            let (d1, r1, lost1) = (reals.delivered.read()?, client.returned.read()?, l.lost);
            if let (Some(c0), Some(c1)) = (cpu0, m.pid.and_then(lab::cpu_secs)) {
                f.daemon_cpu.push((c1 - c0) / s);
            }
            if p.name().starts_with("rvs AF_XDP") {
                let (ns, runs) = prog_cost(lab, &mut l)?;
                f.prog_ns.push(ns);
                f.prog_runs.push(runs);
            }
            l.stop();
            if fast {
                // The daemon reads the program's counts every 500 ms: once
                // the loop has stopped and they have settled, the share of
                // everything the loop sent through this daemon.
                thread::sleep(SWEEPS_SETTLE);
                let in_xdp = paths::rvs_metric(lab, "rvs_fast_path_packets_total", &[])?;
                let all = reals.delivered.read()? - ds + client.returned.read()? - rs;
                f.in_xdp.push(in_xdp as f64 / all.max(1) as f64);
            }
            if p.name().starts_with("rvs AF_XDP") && !o.json {
                eprintln!(
                    "pps round {}: {}: socket losses so far: {}; {}",
                    round + 1,
                    p.name(),
                    paths::rvs_socket_losses(lab)?,
                    paths::rvs_fast_path_counts(lab)?
                );
            }
            drop(m);
            let delivered = (d1 - d0) as f64 / s;
            f.delivered.push(delivered);
            f.forwarded.push((d1 - d0 + r1 - r0) as f64 / s);
            f.lost.push((lost1 - lost0) as f64 / s);
            if !o.json {
                eprintln!(
                    "pps round {}: {}: {} delivered, {} lost and refilled",
                    round + 1,
                    p.name(),
                    mega(delivered),
                    (lost1 - lost0)
                );
            }
        }
    }
    Ok(figs)
}
