//! Scenario a: 64-byte established-flow packets/s through each data path.
//!
//! The in-kernel generator sends UDP frames from the client over 1,024
//! source ports (each flow's first packet creates it; a warm-up sends those
//! before the measured window), and XDP programs on the reals count and drop
//! what arrives. For the veth limit the balancer's ingress itself counts and
//! drops. Rounds alternate the paths, so each round compares them side by side.

use std::time::Duration;

use serde_json::{Value, json};

use crate::Opts;
use crate::bpf::{Counter, Prog};
use crate::frame::{self, Macs};
use crate::lab::{self, Lab, XdpLink, check_stop};
use crate::paths::{DataPath, KernelRouting, NftFullNat, Proto, Rvs, Service, VethLimit};
use crate::report::{Samples, Table, mega, ratio_line};

const PORT: u16 = 9000;
const FLOWS: u16 = 1024;
const WARM_UP: Duration = Duration::from_millis(300);

/// The paths measured, in table order; the first is the baseline of the ratio column.
fn paths() -> Vec<Box<dyn DataPath>> {
    vec![
        Box::new(VethLimit),
        Box::new(KernelRouting),
        Box::new(NftFullNat),
        Box::new(Rvs::TUN),
        Box::new(Rvs { synproxy: false, xdp_workers: Some(1) }),
        Box::new(Rvs { synproxy: false, xdp_workers: Some(2) }),
    ]
}

#[derive(Debug, Default, Clone)]
struct Figures {
    delivered: Samples,
    at_balancer: Samples,
    sent: Samples,
}

pub(crate) fn run(lab: &Lab, o: &Opts) -> anyhow::Result<(Table, Value)> {
    let svc = Service { proto: Proto::Udp, port: PORT };
    let paths = paths();
    // The reals count and drop UDP for the whole scenario (ARP passes).
    let mut at_reals = Vec::new();
    let mut links = Vec::new();
    for ns in lab.topo.ns_reals() {
        let c = Counter::new()?;
        links.push(XdpLink::attach(ns, lab.topo.real_if(), Prog::count(&c, 17, true)?)?);
        at_reals.push(c);
    }
    let (client_if, lb_if) = lab.client_link()?;
    let macs = Macs { src: client_if.mac, dst: lb_if.mac };
    let secs = Duration::from_secs_f64(o.pps_secs);
    let mut figs = vec![Figures::default(); paths.len()];
    for round in 0..o.rounds {
        for (p, f) in paths.iter().zip(&mut figs) {
            check_stop()?;
            let m = p.setup(lab, svc)?;
            // Frames XDP_TXed into a veth arrive only where the peer runs native
            // XDP: a counting XDP_PASS at the balancer's ingress, unless the
            // path itself ends there or rvs's own program holds that place
            // (natively: its AF_XDP paths run `xdp_mode = "auto"`).
            let ingress = Counter::new()?;
            let _pass = match (&m.sink, m.rvs_xdp) {
                (Some(_), _) | (None, true) => None,
                (None, false) => Some(XdpLink::attach(
                    lab.lb(),
                    lab.topo.lb_client_if(),
                    Prog::count(&ingress, 17, false)?,
                )?),
            };
            let target = m.target.unwrap_or(lab.topo.vip());
            let t = frame::udp(macs, lab.topo.client_addr(), target, PORT, FLOWS);
            lab::generate(lab, &t, WARM_UP, &|| false)?;
            let read = || -> anyhow::Result<(u64, u64)> {
                match &m.sink {
                    Some(s) => Ok((s.read()?, s.read()?)),
                    None if m.rvs_xdp => Ok((lab::sum(&at_reals)?, lab::rvs_steered(lab)?)),
                    None => Ok((lab::sum(&at_reals)?, ingress.read()?)),
                }
            };
            let (d0, i0) = read()?;
            let profile = lab::Profile::start(&p.name(), m.pid)?;
            let sent = lab::generate(lab, &t, secs, &|| false)?;
            drop(profile);
            let (d1, i1) = read()?;
            if m.rvs_xdp && !o.json {
                eprintln!(
                    "pps round {}: {}: socket losses so far: {}",
                    round + 1,
                    p.name(),
                    lab::rvs_socket_losses(lab)?
                );
            }
            let s = sent.elapsed.as_secs_f64();
            f.delivered.push((d1 - d0) as f64 / s);
            f.at_balancer.push((i1 - i0) as f64 / s);
            f.sent.push(sent.frames as f64 / s);
            if !o.json {
                eprintln!(
                    "pps round {}: {}: {} delivered, {} at the balancer",
                    round + 1,
                    p.name(),
                    mega((d1 - d0) as f64 / s),
                    mega((i1 - i0) as f64 / s)
                );
            }
        }
    }
    drop(links);
    let mut t = Table::new(
        "64-byte established-flow packets/s (UDP, 1,024 flows)",
        &[
            "path",
            "delivered to the reals, packets/s",
            "× veth limit",
            "arrived at the balancer",
            "generator sent",
        ],
    );
    let base = figs[0].delivered.clone();
    for (p, f) in paths.iter().zip(&figs) {
        t.row(vec![
            p.name(),
            f.delivered.show(mega),
            format!("{:.2}", f.delivered.median() / base.median().max(1.0)),
            f.at_balancer.show(mega),
            f.sent.show(mega),
        ]);
    }
    let name = |i: usize| paths[i].name();
    let mut ratios = Vec::new();
    // rvs AF_XDP (4) against nftables FullNAT (2) and plain routing (1);
    // two workers (5) against one; rvs TUN (3); the kernel paths against
    // each other and the veth limit (0).
    for (a, b) in [(4, 2), (4, 1), (5, 4), (3, 2), (3, 1), (2, 1), (1, 0), (4, 0)] {
        let (s, v) =
            ratio_line(&format!("{} / {}", name(a), name(b)), &figs[a].delivered, &figs[b].delivered, None);
        t.note(s);
        ratios.push(v);
    }
    t.note(format!(
        "medians of {} rounds of {:.1} s (min–max in brackets); one generator thread; \"arrived at the balancer\" counts at its ingress (for the veth limit that is the delivered figure; for rvs AF_XDP, the frames its program steered to its sockets)",
        o.rounds, o.pps_secs
    ));
    let rows: Vec<Value> = paths
        .iter()
        .zip(&figs)
        .map(|(p, f)| {
            json!({ "path": p.name(), "delivered_pps": f.delivered.json(), "at_balancer_pps": f.at_balancer.json(), "sent_pps": f.sent.json() })
        })
        .collect();
    Ok((t, json!({ "rows": rows, "ratios": ratios, "rounds": o.rounds, "secs": o.pps_secs })))
}
