//! Scenario a: 64-byte established-flow packets/s through each data path,
//! measured with the closed loop ([`crate::closed_loop`]): the client and
//! the reals reflect a fixed population of UDP packets, the balancer
//! forwards each of them both ways. Every path runs over IPv4 and over IPv6
//! (the same payload behind the longer header), and rvs also translates
//! (NAT64, NAT46). Rounds alternate the paths, so each round compares them
//! side by side, IPv6 beside IPv4; the first path of each family, a wire in
//! the balancer's place, is the loop's own ceiling.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Opts;
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
/// then rvs's translations; the first row of each client family is its
/// ceiling. The flowtable rows need a kernel built with flowtables.
fn paths(flowtables: bool) -> Vec<InFamily> {
    let over = |f: Family| -> Vec<InFamily> {
        let all: [Box<dyn DataPath>; 7] = [
            Box::new(CrossConnect),
            Box::new(KernelRouting),
            Box::new(NftFullNat { flowtable: false }),
            Box::new(NftFullNat { flowtable: true }),
            Box::new(Rvs::TUN),
            Box::new(Rvs { synproxy: false, xdp_workers: Some(1) }),
            Box::new(Rvs { synproxy: false, xdp_workers: Some(2) }),
        ];
        all.into_iter()
            .filter(|p| flowtables || !p.name().contains("flowtable"))
            .map(|p| InFamily(f, p))
            .collect()
    };
    let mut p = over(Family::V4);
    p.extend(over(Family::V6));
    for f in [Family::Nat64, Family::Nat46] {
        p.push(InFamily(f, Box::new(Rvs { synproxy: false, xdp_workers: Some(1) })));
    }
    p
}

const ROUTING: &str = "kernel routing (no NAT)";
const NFT: &str = "nftables FullNAT";
const CEILING: &str = "ceiling: XDP cross-connect (no balancer)";

/// Ratios printed, as (numerator, denominator) path names: rvs AF_XDP
/// against nftables FullNAT, its flowtable and plain routing; two workers
/// against one; rvs TUN; the kernel paths against each other and the
/// ceiling; IPv6 and the translations against IPv4, whose target is a cost
/// per packet within 1.15× of IPv4's.
const RATIOS: &[(&str, &str, Option<f64>)] = &[
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
}

pub(crate) fn run(lab: &Lab, o: &Opts) -> anyhow::Result<(Table, Value)> {
    let svc = Service::new(Proto::Udp, closed_loop::PORT);
    let flowtables = paths::flowtables_available(lab);
    let paths = paths(flowtables);
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
        ],
    );
    // Each row against the ceiling of its clients' family.
    let ceiling = |f: Family| {
        let at = paths.iter().position(|p| p.0.client_v6() == f.client_v6() && p.1.name() == CEILING);
        figs[at.unwrap_or(0)].delivered.median().max(1.0)
    };
    let per_s = |v: f64| format!("{v:.0}");
    for (p, f) in paths.iter().zip(&figs) {
        t.row(vec![
            p.name(),
            f.delivered.show(mega),
            format!("{:.2}", f.delivered.median() / ceiling(p.0)),
            f.forwarded.show(mega),
            f.lost.show(per_s),
        ]);
    }
    let names: Vec<String> = paths.iter().map(|p| p.name()).collect();
    let delivered: Vec<&Samples> = figs.iter().map(|f| &f.delivered).collect();
    let ratios = ratio_notes(&mut t, &names, &delivered, RATIOS);
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
            let mut l = Loop::start(lab, &reals, &client, m.target)?;
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
    Ok(figs)
}
