//! Scenario b: new connections/s, one HTTP request per connection
//! (`wrk -H 'Connection: close'`) against nginx on the reals, through rvs
//! (TUN and AF_XDP data paths) with SYNProxy on and off, nftables FullNAT
//! and HAProxy in mode tcp, over IPv4 and IPv6, and through rvs's NAT64
//! and NAT46.
//! Rounds alternate the paths; the balancer is set up afresh for each run.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::Opts;
use crate::lab::{self, Lab, check_stop};
use crate::paths::{
    self, DataPath, Family, HaproxyTcp, InFamily, KernelRouting, NftFullNat, OneReal, Proto, Rvs, Service,
};
use crate::report::{Samples, Table, kilo, ratio_notes};

/// wrk's threads and connections. With other work on the machine, one
/// thread with 32 connections capped the client below what nftables does
/// (see docs/BENCHMARKS.md); two threads with 64 drive every path.
const WRK_THREADS: &str = "-t2";
const WRK_CONNS: &str = "-c64";

/// The paths measured, in table order: over IPv4 (kernel routing reaches
/// one real), the same with one real, then their best setups over IPv6,
/// then rvs's translations.
fn paths() -> Vec<InFamily> {
    let v4: [Box<dyn DataPath>; 10] = [
        Box::new(Rvs::fast_path(true)),
        Box::new(Rvs::fast_path(false)),
        Box::new(Rvs::xdp(1, true)),
        Box::new(Rvs::xdp(1, false)),
        Box::new(Rvs::tun(true)),
        Box::new(Rvs::tun(false)),
        Box::new(NftFullNat { flowtable: false }),
        Box::new(HaproxyTcp),
        Box::new(Rvs::xdp(2, true)),
        Box::new(KernelRouting),
    ];
    let one_real: [Box<dyn DataPath>; 4] = [
        Box::new(Rvs::fast_path(true)),
        Box::new(Rvs::xdp(1, true)),
        Box::new(NftFullNat { flowtable: false }),
        Box::new(HaproxyTcp),
    ];
    let v6: [Box<dyn DataPath>; 4] = [
        Box::new(Rvs::xdp(1, true)),
        Box::new(Rvs::tun(true)),
        Box::new(NftFullNat { flowtable: false }),
        Box::new(HaproxyTcp),
    ];
    let mut p: Vec<InFamily> = v4.into_iter().map(|p| InFamily(Family::V4, p)).collect();
    p.extend(one_real.into_iter().map(|p| InFamily(Family::V4, Box::new(OneReal(p)))));
    p.extend(v6.into_iter().map(|p| InFamily(Family::V6, p)));
    for f in [Family::Nat64, Family::Nat46] {
        p.push(InFamily(f, Box::new(Rvs::xdp(1, true))));
    }
    p
}

const NFT: &str = "nftables FullNAT";
const HAPROXY: &str = "HAProxy mode tcp";
const ROUTING: &str = "kernel routing (no NAT)";
const XDP_SP: &str = "rvs AF_XDP, SYNProxy on";
const TUN_SP: &str = "rvs TUN, SYNProxy on";
const FAST_SP: &str = "rvs AF_XDP fast path, SYNProxy on";
const FAST: &str = "rvs AF_XDP fast path";
const ONE: &str = ", 1 real";
const FAST_SP_1: &str = "rvs AF_XDP fast path, SYNProxy on, 1 real";
const XDP_SP_1: &str = "rvs AF_XDP, SYNProxy on, 1 real";
const NFT_1: &str = "nftables FullNAT, 1 real";
const HAPROXY_1: &str = "HAProxy mode tcp, 1 real";

/// The rows `--fast-path` keeps: what the fast path's targets compare.
const FAST_PATH_ROWS: &[&str] =
    &[FAST_SP, FAST, XDP_SP, NFT, HAPROXY, ROUTING, FAST_SP_1, XDP_SP_1, NFT_1, HAPROXY_1];

/// Ratios printed (numerator, denominator, target), the targets first: the
/// fast path's like for like with one real (≥ 1.1× nftables FullNAT,
/// ≥ 0.9× kernel routing, ≥ 1.6× HAProxy) and over three reals.
const RATIOS: &[(&str, &str, Option<f64>)] = &[
    (FAST_SP_1, NFT_1, Some(1.1)),
    (FAST_SP_1, ROUTING, Some(0.9)),
    (FAST_SP_1, HAPROXY_1, Some(1.6)),
    (FAST_SP, NFT, Some(1.1)),
    (FAST_SP, HAPROXY, Some(1.6)),
    (FAST_SP, XDP_SP, None),
    (FAST, "rvs AF_XDP", None),
    (FAST_SP, FAST, None),
    (FAST_SP_1, XDP_SP_1, None),
    (NFT_1, ROUTING, None),
    (XDP_SP, NFT, Some(1.0)),
    (XDP_SP, HAPROXY, Some(1.6)),
    (TUN_SP, NFT, Some(1.0)),
    (TUN_SP, HAPROXY, Some(1.6)),
    (XDP_SP, TUN_SP, None),
    ("rvs AF_XDP, 2 workers, SYNProxy on", NFT, None),
    ("rvs AF_XDP, 2 workers, SYNProxy on", XDP_SP, None),
    ("rvs AF_XDP", NFT, None),
    (XDP_SP, "rvs AF_XDP", None),
    (NFT, HAPROXY, None),
    ("rvs AF_XDP, SYNProxy on, IPv6", "nftables FullNAT, IPv6", None),
    ("rvs AF_XDP, SYNProxy on, IPv6", "HAProxy mode tcp, IPv6", None),
    ("rvs AF_XDP, SYNProxy on, IPv6", XDP_SP, None),
    ("nftables FullNAT, IPv6", NFT, None),
    ("rvs AF_XDP, SYNProxy on, NAT64", XDP_SP, None),
    ("rvs AF_XDP, SYNProxy on, NAT46", XDP_SP, None),
];

/// What one wrk run reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WrkRun {
    pub requests_per_s: f64,
    /// Socket errors (connect, read, write, timeout) and non-2xx responses.
    pub errors: u64,
}

/// `wrk` from the client toward `url` for `secs`, one request per
/// connection (`Connection: close`), bounded in time.
pub(crate) fn wrk(lab: &Lab, url: &str, secs: u32) -> anyhow::Result<WrkRun> {
    let d = format!("-d{secs}s");
    let mut cmd =
        lab.client().cmd("wrk", [WRK_THREADS, WRK_CONNS, d.as_str(), "-H", "Connection: close", url]);
    let out = lab::run_bounded(&mut cmd, Duration::from_secs(u64::from(secs) + 20))?;
    let r = parse_wrk(&out)?;
    if r.requests_per_s <= 0.0 {
        bail!("wrk made no requests: {out}");
    }
    Ok(r)
}

fn parse_wrk(out: &str) -> anyhow::Result<WrkRun> {
    let rate = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {out}"))?;
    let mut errors = 0;
    for l in out.lines() {
        let l = l.trim();
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            errors +=
                rest.split(',').filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok()).sum::<u64>();
        }
        if let Some(rest) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Ok(WrkRun { requests_per_s: rate, errors })
}

pub(crate) fn run(lab: &Lab, o: &Opts) -> anyhow::Result<(Table, Value)> {
    let svc = Service::new(Proto::Tcp, 80);
    let paths = paths::keep(lab, o, FAST_PATH_ROWS, paths());
    let mut rates = vec![Samples::default(); paths.len()];
    let mut errors = vec![0u64; paths.len()];
    for round in 0..o.rounds {
        for (i, p) in paths.iter().enumerate() {
            check_stop()?;
            lab.flush_conntrack()?;
            let m = p.setup(lab, svc).with_context(|| format!("setting up {}", p.name()))?;
            let url = m.url(svc.port, "/");
            let profile = lab::Profile::start(&p.name(), m.pid)?;
            let r = wrk(lab, &url, o.cps_secs).with_context(|| format!("wrk through {}", p.name()))?;
            drop(profile);
            rates[i].push(r.requests_per_s);
            errors[i] += r.errors;
            if !o.json {
                eprintln!(
                    "cps round {}: {}: {:.0} connections/s, {} errors",
                    round + 1,
                    p.name(),
                    r.requests_per_s,
                    r.errors
                );
            }
            drop(m);
        }
    }
    let mut t = Table::new(
        "New connections/s (wrk -t2 -c64, one request per connection, nginx on 3 reals, or 1 where named)",
        &["path", "connections/s", "× nftables FullNAT", "errors (all rounds)"],
    );
    // Each row against nftables over its clients' family and its number of reals.
    let nft = |p: &InFamily| {
        let name = if p.1.name().ends_with(ONE) { NFT_1 } else { NFT };
        let at = paths.iter().position(|q| q.0.client_v6() == p.0.client_v6() && q.1.name() == name);
        at.map_or(0.0, |i| rates[i].median()).max(1.0)
    };
    for ((p, r), e) in paths.iter().zip(&rates).zip(&errors) {
        t.row(vec![p.name(), r.show(kilo), format!("{:.2}", r.median() / nft(p)), e.to_string()]);
    }
    let names: Vec<String> = paths.iter().map(|p| p.name()).collect();
    let ratios = ratio_notes(&mut t, &names, &rates.iter().collect::<Vec<_>>(), RATIOS);
    t.note(format!(
        "medians of {} rounds of {} s (min–max in brackets); client, balancer and reals share the machine's cores; \"× nftables FullNAT\" is against nftables over the row's client family and number of reals",
        o.rounds, o.cps_secs
    ));
    t.note(
        "kernel routing: the client connects to the first real itself (no NAT, no balancer state), so its rows compare with the \"1 real\" ones; every NAT path gets 4 fresh local addresses per run"
            .to_owned(),
    );
    paths::note_fast_path(lab, &mut t);
    let rows: Vec<Value> = paths
        .iter()
        .zip(&rates)
        .zip(&errors)
        .map(|((p, r), e)| json!({ "path": p.name(), "connections_per_s": r.json(), "errors": e }))
        .collect();
    Ok((t, json!({ "rows": rows, "ratios": ratios, "rounds": o.rounds, "secs": o.cps_secs })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let out = "Running 5s test @ http://10.78.2.1/\n  1 threads and 32 connections\n\
                   \x20 Socket errors: connect 0, read 3, write 0, timeout 2\n\
                   \x20 75000 requests in 5.00s, 11.00MB read\n  Non-2xx or 3xx responses: 1\n\
                   Requests/sec:  15000.12\nTransfer/sec:      2.20MB\n";
        assert_eq!(parse_wrk(out).unwrap(), WrkRun { requests_per_s: 15000.12, errors: 6 });
        assert!(parse_wrk("nothing").is_err());
    }
}
