//! Scenario a: 64-byte established-flow packets/s through each data path,
//! measured with the closed loop ([`crate::closed_loop`]): the client and
//! the reals reflect a fixed population of UDP packets, the balancer
//! forwards each of them both ways. Rounds alternate the paths, so each
//! round compares them side by side; the first path, a wire in the
//! balancer's place, is the loop's own ceiling.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Opts;
use crate::closed_loop::{self, Client, Loop, Reals};
use crate::lab::{self, Lab, check_stop};
use crate::paths::{self, CrossConnect, DataPath, KernelRouting, NftFullNat, Proto, Rvs, Service};
use crate::report::{Samples, Table, mega, ratio_notes};

/// Before each window: the population injected, losses to the queues of
/// the path refilled, first connections made.
const WARM_UP: Duration = Duration::from_millis(500);

/// The paths measured, in table order; the first is the ceiling. The
/// flowtable row needs a kernel built with flowtables.
fn paths(flowtables: bool) -> Vec<Box<dyn DataPath>> {
    let mut p: Vec<Box<dyn DataPath>> = vec![
        Box::new(CrossConnect),
        Box::new(KernelRouting),
        Box::new(NftFullNat { flowtable: false }),
        Box::new(NftFullNat { flowtable: true }),
        Box::new(Rvs::TUN),
        Box::new(Rvs { synproxy: false, xdp_workers: Some(1) }),
        Box::new(Rvs { synproxy: false, xdp_workers: Some(2) }),
    ];
    p.retain(|p| flowtables || !p.name().contains("flowtable"));
    p
}

const ROUTING: &str = "kernel routing (no NAT)";
const NFT: &str = "nftables FullNAT";
const CEILING: &str = "ceiling: XDP cross-connect (no balancer)";

/// Ratios printed, as (numerator, denominator) path names: rvs AF_XDP
/// against nftables FullNAT, its flowtable and plain routing; two workers
/// against one; rvs TUN; the kernel paths against each other and the ceiling.
const RATIOS: [(&str, &str, Option<f64>); 10] = [
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
];

#[derive(Debug, Default, Clone)]
struct Figures {
    delivered: Samples,
    forwarded: Samples,
    lost: Samples,
}

pub(crate) fn run(lab: &Lab, o: &Opts) -> anyhow::Result<(Table, Value)> {
    let svc = Service::new(Proto::Udp, closed_loop::PORT);
    let flowtables = paths::flowtables_available(lab);
    let paths = paths(flowtables);
    let reals = Reals::attach(lab)?;
    let client = Client::open(lab)?;
    let secs = Duration::from_secs_f64(o.pps_secs);
    let mut figs = vec![Figures::default(); paths.len()];
    for round in 0..o.rounds {
        for (p, f) in paths.iter().zip(&mut figs) {
            check_stop()?;
            let m = p.setup(lab, svc)?;
            let mut l = Loop::start(lab, &reals, &client, m.target.unwrap_or(lab.topo.vip()))?;
            l.keep(WARM_UP)?;
            let (d0, r0, lost0) = (reals.delivered.read()?, client.returned.read()?, l.lost);
            let profile = lab::Profile::start(&p.name(), m.pid)?;
            let start = Instant::now();
            l.keep(secs)?;
            let s = start.elapsed().as_secs_f64();
            drop(profile);
            let (d1, r1, lost1) = (reals.delivered.read()?, client.returned.read()?, l.lost);
            l.stop();
            if p.name().starts_with("rvs AF_XDP") && !o.json {
                eprintln!(
                    "pps round {}: {}: socket losses so far: {}",
                    round + 1,
                    p.name(),
                    paths::rvs_socket_losses(lab)?
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
        ],
    );
    let base = figs[0].delivered.median().max(1.0);
    let per_s = |v: f64| format!("{v:.0}");
    for (p, f) in paths.iter().zip(&figs) {
        t.row(vec![
            p.name(),
            f.delivered.show(mega),
            format!("{:.2}", f.delivered.median() / base),
            f.forwarded.show(mega),
            f.lost.show(per_s),
        ]);
    }
    let names: Vec<String> = paths.iter().map(|p| p.name()).collect();
    let delivered: Vec<&Samples> = figs.iter().map(|f| &f.delivered).collect();
    let ratios = ratio_notes(&mut t, &names, &delivered, &RATIOS);
    if !flowtables {
        t.note("no flowtable row: this kernel has no nftables flowtables (CONFIG_NF_FLOW_TABLE)".to_owned());
    }
    t.note(format!(
        "medians of {} rounds of {:.1} s (min–max in brackets); the client and the reals send every packet back from XDP, so the balancer forwards each one twice: \"forwarded\" counts both directions; packets unseen at the reals for 200 ms are counted lost and sent again",
        o.rounds, o.pps_secs
    ));
    let rows: Vec<Value> = paths
        .iter()
        .zip(&figs)
        .map(|(p, f)| {
            json!({ "path": p.name(), "delivered_pps": f.delivered.json(), "forwarded_pps": f.forwarded.json(), "lost_per_s": f.lost.json() })
        })
        .collect();
    let generator = json!({ "kind": "closed loop", "population": closed_loop::POPULATION, "flows": closed_loop::FLOWS, "ceiling": figs[0].delivered.json() });
    Ok((
        t,
        json!({ "rows": rows, "ratios": ratios, "rounds": o.rounds, "secs": o.pps_secs, "generator": generator }),
    ))
}
