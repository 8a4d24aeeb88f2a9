//! Scenario e: local-port reuse at the kernel's rate. One local address,
//! one real, `wrk -t2 -c64 -H 'Connection: close'` for 30 s: every local
//! port is needed again within seconds, long before the real's TIME_WAIT
//! (60 s) for its last use is over. rvs (TUN and AF_XDP) runs side by side
//! with nftables FullNAT (DNAT to the one real, SNAT to the one address),
//! in three variants: nginx's tiny response, a 1 MB download per
//! connection, and the client's TCP timestamps off (without them the real
//! cannot tell a new connection on a reused tuple from an old duplicate).
//!
//! The client keeps no TIME_WAIT of its own (its ports must last every
//! run, and without timestamps it could not reuse them).
//!
//! Per path and variant: connections/s, rvs / nftables (target ≥ 0.9),
//! rvs's `no_local_port` drops, and the counters where a reused tuple is
//! refused: the real's PAWS and TIME_WAIT counters and the client's SYN
//! retransmissions (targets: 0).

use std::collections::BTreeMap;

use anyhow::Context;
use rvs_netns::Netns;
use serde_json::{Value, json};

use crate::Opts;
use crate::cps::{WrkRun, wrk};
use crate::lab::{DOWNLOAD, Lab, SysctlGuard, check_stop};
use crate::paths::{self, DataPath, NftFullNat, Proto, Rvs, Service};
use crate::report::{Samples, Table, kilo, ratio_notes};

const NFT: &str = "nftables FullNAT";

/// The variants, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    Download,
    NoTimestamps,
}

impl Variant {
    const ALL: [Self; 3] = [Self::Plain, Self::Download, Self::NoTimestamps];

    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Download => "1 MB download",
            Self::NoTimestamps => "client timestamps off",
        }
    }

    fn url_path(self) -> &'static str {
        match self {
            Self::Download => DOWNLOAD,
            Self::Plain | Self::NoTimestamps => "/",
        }
    }
}

/// The real's refusals of a reused tuple: a SYN or ACK rejected by PAWS
/// (timestamps older than the TIME_WAIT's or the connection's).
const PAWS: [&str; 5] = ["PAWSActive", "PAWSEstab", "PAWSOldAck", "PAWSTimewait", "TCPACKSkippedPAWS"];
/// The real's TIME_WAIT counters: TIME_WAITs reused for a new connection
/// (`TWRecycled`), ended early (`TWKilled`), not made for want of buckets
/// (`TCPTimeWaitOverflow`), and segments refused against one.
const TIME_WAIT: [&str; 4] = ["TWRecycled", "TWKilled", "TCPTimeWaitOverflow", "TCPACKSkippedTimeWait"];
/// The client's SYNs sent again: SYNs refused or dropped on the way.
const SYN_RETRANS: &str = "TCPSynRetrans";

/// The paths, in row order within a variant.
fn paths() -> Vec<Box<dyn DataPath>> {
    vec![Box::new(Rvs::tun(false)), Box::new(Rvs::xdp(1, false)), Box::new(NftFullNat { flowtable: false })]
}

/// The namespace's `TcpExt` counters (`/proc/net/netstat`, as `nstat` reads them).
fn tcp_ext(ns: &Netns) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = ns.run("cat", ["/proc/net/netstat"])?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        anyhow::bail!("no TcpExt counters in /proc/net/netstat: {text}");
    };
    Ok(names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect())
}

/// What one run gave.
#[derive(Debug)]
struct Run {
    variant: Variant,
    path: String,
    wrk: WrkRun,
    /// rvs's `no_local_port` drops (none for nftables).
    no_local_port: Option<u64>,
    /// Counter increases at the real ([`PAWS`], [`TIME_WAIT`]) and the
    /// client ([`SYN_RETRANS`]).
    counters: BTreeMap<&'static str, u64>,
}

impl Run {
    fn sum(&self, names: &[&str]) -> u64 {
        names.iter().map(|n| self.counters.get(n).copied().unwrap_or(0)).sum()
    }
}

fn one(lab: &Lab, o: &Opts, variant: Variant, path: &dyn DataPath) -> anyhow::Result<Run> {
    let svc = Service { reals: 1, laddrs: 1, ..Service::new(Proto::Tcp, 80) };
    let (real, client) = (lab.topo.ns_real(0), lab.client());
    lab.flush_conntrack()?;
    let m = path.setup(lab, svc).with_context(|| format!("setting up {}", path.name()))?;
    let (real0, client0) = (tcp_ext(real)?, tcp_ext(client)?);
    let url = m.url(svc.port, variant.url_path());
    let wrk = wrk(lab, &url, o.ports_secs).with_context(|| format!("wrk through {}", path.name()))?;
    let (real1, client1) = (tcp_ext(real)?, tcp_ext(client)?);
    let no_local_port = match m.pid.is_some() && path.name().starts_with("rvs") {
        true => Some(paths::rvs_metric(lab, "rvs_drops_total", &["\"no_local_port\""])?),
        false => None,
    };
    drop(m);
    let delta = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>, k: &str| {
        b.get(k).copied().unwrap_or(0).saturating_sub(a.get(k).copied().unwrap_or(0))
    };
    let mut counters: BTreeMap<&'static str, u64> =
        PAWS.iter().chain(&TIME_WAIT).map(|&k| (k, delta(&real0, &real1, k))).collect();
    counters.insert(SYN_RETRANS, delta(&client0, &client1, SYN_RETRANS));
    Ok(Run { variant, path: path.name(), wrk, no_local_port, counters })
}

/// TIME_WAIT sockets the real may hold. At the default (131,072 in a new
/// namespace) the earlier runs' leftovers fill the table and the real stops
/// making TIME_WAITs (`TCPTimeWaitOverflow`), so a reused tuple would meet
/// none and nothing could be refused; each run has fresh local addresses,
/// so the leftovers only take room.
const TW_BUCKETS: &str = "2097152";

pub(crate) fn run(lab: &Lab, o: &Opts) -> anyhow::Result<(Table, Value)> {
    let paths = paths();
    let _buckets = SysctlGuard::set(lab.topo.ns_real(0), "net.ipv4.tcp_max_tw_buckets", TW_BUCKETS)?;
    // The client's own TIME_WAITs are not what is measured, and without
    // timestamps it cannot reuse them (`tcp_tw_reuse` needs them): one
    // run's would leave the next too few ports to connect from.
    let _client_tw = SysctlGuard::set(lab.client(), "net.ipv4.tcp_max_tw_buckets", "0")?;
    let mut runs = Vec::new();
    for variant in Variant::ALL {
        let _timestamps = match variant {
            Variant::NoTimestamps => Some(SysctlGuard::set(lab.client(), "net.ipv4.tcp_timestamps", "0")?),
            _ => None,
        };
        for p in &paths {
            check_stop()?;
            let r = one(lab, o, variant, p.as_ref())?;
            if !o.json {
                eprintln!(
                    "ports: {}: {}: {:.0} connections/s, no_local_port {}, real PAWS {}, client SYN retransmissions {}",
                    variant.name(),
                    r.path,
                    r.wrk.requests_per_s,
                    r.no_local_port.map_or("—".to_owned(), |n| n.to_string()),
                    r.sum(&PAWS),
                    r.sum(&[SYN_RETRANS])
                );
            }
            runs.push(r);
        }
    }
    let mut t = Table::new(
        &format!(
            "Local-port reuse: one local address, one real, wrk -t2 -c64 -d{}s, Connection: close",
            o.ports_secs
        ),
        &[
            "variant",
            "path",
            "connections/s",
            "× nftables",
            "no_local_port drops",
            "PAWS refusals at the real",
            "TIME_WAIT at the real (recycled/killed/overflow/ACK refused)",
            "client SYN retransmissions",
            "wrk errors",
        ],
    );
    let mut ratios = Vec::new();
    for variant in Variant::ALL {
        let rows: Vec<&Run> = runs.iter().filter(|r| r.variant == variant).collect();
        let nft = rows.iter().find(|r| r.path == NFT).map_or(0.0, |r| r.wrk.requests_per_s);
        for r in &rows {
            let tw: Vec<String> = TIME_WAIT.iter().map(|k| r.counters[k].to_string()).collect();
            t.row(vec![
                variant.name().to_owned(),
                r.path.clone(),
                kilo(r.wrk.requests_per_s),
                format!("{:.2}", r.wrk.requests_per_s / nft.max(1.0)),
                r.no_local_port.map_or("—".to_owned(), |n| n.to_string()),
                r.sum(&PAWS).to_string(),
                tw.join("/"),
                r.sum(&[SYN_RETRANS]).to_string(),
                r.wrk.errors.to_string(),
            ]);
        }
        let mut v = Table::default();
        let names: Vec<String> = rows.iter().map(|r| r.path.clone()).collect();
        let rates: Vec<Samples> = rows.iter().map(|r| Samples(vec![r.wrk.requests_per_s])).collect();
        let pairs = [("rvs TUN", NFT, Some(0.9)), ("rvs AF_XDP", NFT, Some(0.9))];
        let json = ratio_notes(&mut v, &names, &rates.iter().collect::<Vec<_>>(), &pairs);
        for n in v.notes {
            t.note(format!("{}: {n}", variant.name()));
        }
        ratios.extend(json.into_iter().map(|mut j| {
            j["variant"] = variant.name().into();
            j
        }));
    }
    t.note(format!(
        "one run of {} s per path and variant, paths alternating; targets: rvs ≥ 0.9× nftables, and 0 in every count column; rvs runs with its default port_quarantine_secs (60)",
        o.ports_secs
    ));
    t.note(format!("PAWS refusals: the sum of {}", PAWS.join(", ")));
    let rows: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "variant": r.variant.name(),
                "path": r.path,
                "connections_per_s": r.wrk.requests_per_s,
                "errors": r.wrk.errors,
                "no_local_port": r.no_local_port,
                "counters": r.counters,
            })
        })
        .collect();
    Ok((t, json!({ "rows": rows, "ratios": ratios, "secs": o.ports_secs })))
}
