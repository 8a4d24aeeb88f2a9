//! Listings in ipvsadm's layouts (so an operator's eyes and scripts carry
//! over), or as JSON with `--json`.

use core::fmt::Write as _;

use serde::Serialize;

use super::{ListArgs, ListView, service_name};
use crate::health::ProberSnap;
use crate::model::ServiceKey;
use crate::snapshot::{ConnSnap, FastPathSnap, PoolSnap, RealSnap, ServiceSnap, Snapshot, Traffic};

/// Per-second traffic between two samples. As in ipvsadm, the "bps"
/// figures are bytes (not bits) per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Rate {
    pub(crate) cps: u64,
    pub(crate) in_pps: u64,
    pub(crate) out_pps: u64,
    pub(crate) in_bps: u64,
    pub(crate) out_bps: u64,
}

impl Rate {
    fn between(old: &Traffic, new: &Traffic, secs: f64) -> Self {
        // Counters zeroed in between (`-Z`) give 0, not a huge rate.
        let per_sec =
            |a: u64, b: u64| if secs > 0.0 { (b.saturating_sub(a) as f64 / secs) as u64 } else { 0 };
        Self {
            cps: per_sec(old.conns, new.conns),
            in_pps: per_sec(old.pkts_in, new.pkts_in),
            out_pps: per_sec(old.pkts_out, new.pkts_out),
            in_bps: per_sec(old.bytes_in, new.bytes_in),
            out_bps: per_sec(old.bytes_out, new.bytes_out),
        }
    }
}

/// Rates of one service and its reals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ServiceRate {
    pub(crate) proto: String,
    pub(crate) vip: String,
    pub(crate) rate: Rate,
    pub(crate) reals: Vec<(String, Rate)>,
}

/// Rates of every service of `new` since `old`; services or reals `old`
/// lacks have rate 0.
pub(crate) fn rates(old: &Snapshot, new: &Snapshot) -> Vec<ServiceRate> {
    let secs = new.taken_at_nanos.saturating_sub(old.taken_at_nanos) as f64 / 1e9;
    new.services
        .iter()
        .map(|s| {
            let before = old.service(&s.proto, &s.vip);
            let rate = before.map(|b| Rate::between(&b.traffic, &s.traffic, secs)).unwrap_or_default();
            let reals = s
                .reals
                .iter()
                .map(|r| {
                    let b = before.and_then(|b| b.reals.iter().find(|x| x.endpoint == r.endpoint));
                    (
                        r.endpoint.clone(),
                        b.map(|b| Rate::between(&b.traffic, &r.traffic, secs)).unwrap_or_default(),
                    )
                })
                .collect();
            ServiceRate { proto: s.proto.clone(), vip: s.vip.clone(), rate, reals }
        })
        .collect()
}

fn key_strings(key: ServiceKey) -> (&'static str, String) {
    (key.0.name(), key.1.to_string())
}

fn json<T: Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string_pretty(value).map(|s| s + "\n").map_err(|e| format!("cannot encode JSON: {e}"))
}

/// ipvsadm's number column: 9 wide, K/M/G/T above 100 million unless `exact`.
fn largenum(out: &mut String, n: u64, exact: bool) {
    let _ = if exact {
        let width = n.to_string().len().max(8) + 1;
        write!(out, "{n:>width$}")
    } else if n < 100_000_000 {
        write!(out, "{n:>9}")
    } else if n < 1_000_000_000 {
        write!(out, "{:>8}K", n / 1_000)
    } else if n < 100_000_000_000 {
        write!(out, "{:>8}M", n / 1_000_000)
    } else if n < 100_000_000_000_000 {
        write!(out, "{:>8}G", n / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", n / 1_000_000_000_000)
    };
}

/// `TCP  10.0.0.1:80`, as ipvsadm names a service in listings.
fn listed_name(s: &ServiceSnap) -> String {
    format!("{}  {}", s.proto.to_uppercase(), s.vip)
}

/// Reals a listing shows: removed ones still draining are left out, as ipvsadm does.
fn listed_reals(s: &ServiceSnap) -> impl Iterator<Item = &RealSnap> {
    s.reals.iter().filter(|r| r.in_service)
}

/// An `-L` listing of `snap`. `rates` are the last two samples' rates, for `--rate`.
pub(crate) fn list(snap: &Snapshot, args: &ListArgs, rates: &[ServiceRate]) -> Result<String, String> {
    let services: Vec<&ServiceSnap> = match args.service {
        None => snap.services.iter().collect(),
        Some(key) => {
            let (proto, vip) = key_strings(key);
            let s = snap.service(proto, &vip).ok_or_else(|| format!("no service {}", service_name(key)))?;
            vec![s]
        }
    };
    let mut out = String::new();
    match args.view {
        ListView::Timeout => {
            if args.json {
                return json(&snap.timeouts);
            }
            let t = &snap.timeouts;
            let _ = writeln!(out, "Timeout (tcp tcpfin udp): {} {} {}", t.tcp, t.tcp_fin, t.udp);
        }
        ListView::Connections => {
            let mut conns: Vec<&ConnSnap> = snap
                .conns
                .iter()
                .flatten()
                .filter(|c| services.iter().any(|s| s.proto == c.proto && s.vip == c.vip))
                .collect();
            conns.sort_by(|a, b| (&a.proto, &a.vip, &a.client).cmp(&(&b.proto, &b.vip, &b.client)));
            if args.json {
                return json(&conns);
            }
            out.push_str("IPVS connection entries\n");
            let _ = writeln!(
                out,
                "pro expire {:<11} {:<18} {:<18} {:<18} destination",
                "state", "source", "virtual", "local"
            );
            for c in conns {
                let expire = format!("{:02}:{:02}", c.expires_in / 60, c.expires_in % 60);
                let _ = writeln!(
                    out,
                    "{:<3} {:<6} {:<11} {:<18} {:<18} {:<18} {}",
                    c.proto.to_uppercase(),
                    expire,
                    c.state,
                    c.client,
                    c.vip,
                    c.laddr,
                    c.real
                );
            }
        }
        ListView::Rate if args.json => {
            let chosen: Vec<&ServiceRate> = rates
                .iter()
                .filter(|r| services.iter().any(|s| s.proto == r.proto && s.vip == r.vip))
                .collect();
            return json(&chosen);
        }
        ListView::Health => return health(snap, &services, args.json),
        ListView::Services | ListView::Stats if args.json => {
            let mut filtered = snap.clone();
            filtered.services = services.into_iter().cloned().collect();
            return json(&filtered);
        }
        view => {
            if args.service.is_none() {
                let _ =
                    writeln!(out, "rvs {} FullNAT (conns={})", env!("CARGO_PKG_VERSION"), snap.conn_count);
            }
            list_table(&mut out, &services, view, args.exact, rates);
            if view == ListView::Stats
                && args.service.is_none()
                && let Some(f) = &snap.fast_path
            {
                fast_path(&mut out, f);
            }
        }
    }
    Ok(out)
}

/// `--stats`' last lines with the xdp driver's fast path on: what it did
/// itself (its packets are in the table above too).
fn fast_path(out: &mut String, f: &FastPathSnap) {
    let _ = writeln!(
        out,
        "Fast path: {} packets {} bytes forwarded in XDP, {} left to the engine\n  \
         connections: {} installed {} removed {} evicted {} unresolved\n  \
         SYN cookies: {} SYN-ACKs sent {} ACKs passed",
        f.packets,
        f.bytes,
        f.to_engine,
        f.installed,
        f.removed,
        f.evicted,
        f.unresolved,
        f.syn_acks,
        f.cookie_acks_passed
    );
}

fn list_table(
    out: &mut String,
    services: &[&ServiceSnap],
    view: ListView,
    exact: bool,
    rates: &[ServiceRate],
) {
    let columns = |out: &mut String, names: [&str; 5]| {
        let _ = write!(out, "{:<33}", "Prot LocalAddress:Port");
        for n in names {
            let _ = write!(out, " {n:>8}");
        }
        out.push_str("\n  -> RemoteAddress:Port\n");
    };
    match view {
        ListView::Stats => columns(out, ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"]),
        ListView::Rate => columns(out, ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"]),
        _ => out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn State\n",
        ),
    }
    for s in services {
        let name = listed_name(s);
        let rate = rates.iter().find(|r| r.proto == s.proto && r.vip == s.vip);
        match view {
            ListView::Stats => {
                let _ = write!(out, "{name:<33}");
                traffic_columns(out, &s.traffic, exact);
                out.push('\n');
                for r in listed_reals(s) {
                    let _ = write!(out, "  -> {:<28}", r.endpoint);
                    traffic_columns(out, &r.traffic, exact);
                    out.push('\n');
                }
            }
            ListView::Rate => {
                let r = rate.map(|r| r.rate).unwrap_or_default();
                let _ = write!(out, "{name:<33}");
                for n in [r.cps, r.in_pps, r.out_pps, r.in_bps, r.out_bps] {
                    largenum(out, n, exact);
                }
                out.push('\n');
                for real in listed_reals(s) {
                    let r = rate
                        .and_then(|x| x.reals.iter().find(|(e, _)| *e == real.endpoint))
                        .map(|(_, r)| *r)
                        .unwrap_or_default();
                    let _ = write!(
                        out,
                        "  -> {:<28} {:>8} {:>8} {:>8}",
                        real.endpoint, r.cps, r.in_pps, r.out_pps
                    );
                    largenum(out, r.in_bps, exact);
                    largenum(out, r.out_bps, exact);
                    out.push('\n');
                }
            }
            _ => {
                let _ = write!(out, "{name} {}", s.sched);
                if s.synproxy {
                    out.push_str(" synproxy");
                }
                if s.toa {
                    out.push_str(" toa");
                }
                if s.proxy_protocol != "disable" {
                    let _ = write!(out, " proxy-protocol {}", s.proxy_protocol);
                }
                if let Some(h) = s.health {
                    if h.panic {
                        out.push_str(" panic");
                    }
                    if h.no_real_up {
                        out.push_str(" no-real-up");
                    }
                }
                out.push('\n');
                for r in listed_reals(s) {
                    let state = r.health.as_ref().map_or_else(|| "up".to_owned(), |h| h.column());
                    let _ = writeln!(
                        out,
                        "  -> {:<28} {:<7} {:<6} {:<10} {:<10} {state}",
                        r.endpoint, "FullNat", r.weight, r.active_conns, r.inactive_conns
                    );
                }
            }
        }
    }
}

/// `--health`: every prober, then every real's state and the cause of its last change.
fn health(snap: &Snapshot, services: &[&ServiceSnap], as_json: bool) -> Result<String, String> {
    if as_json {
        #[derive(Serialize)]
        struct Listing<'a> {
            probers: &'a [ProberSnap],
            services: &'a [&'a ServiceSnap],
        }
        return json(&Listing { probers: &snap.probers, services });
    }
    let mut out = String::new();
    let _ =
        writeln!(out, "{:<44} {:<5} {:>8} {:>8} {:>10}  Last", "Probe", "State", "Sent", "Failed", "Latency");
    for p in &snap.probers {
        let state = if p.stuck {
            "stuck"
        } else if p.up {
            "up"
        } else {
            "down"
        };
        let (latency, last) = p.last.as_ref().map_or((String::from("-"), String::from("-")), |l| {
            (format!("{:.1}ms", l.latency_us as f64 / 1000.0), format!("{} ({} ms ago)", l.detail, l.age_ms))
        });
        let _ =
            writeln!(out, "{:<44} {state:<5} {:>8} {:>8} {latency:>10}  {last}", p.probe, p.sent, p.failed);
    }
    out.push('\n');
    for s in services {
        let _ = writeln!(out, "{}", listed_name(s));
        for r in listed_reals(s) {
            let Some(h) = &r.health else { continue };
            let check = h.check.as_deref().unwrap_or("no active check");
            let _ = writeln!(out, "  -> {:<28} {:<12} {check}; {}", r.endpoint, h.column(), h.reason);
        }
    }
    Ok(out)
}

fn traffic_columns(out: &mut String, t: &Traffic, exact: bool) {
    for n in [t.conns, t.pkts_in, t.pkts_out, t.bytes_in, t.bytes_out] {
        largenum(out, n, exact);
    }
}

/// A service's local addresses and, per real, the ports of each.
#[derive(Debug, Serialize)]
struct LaddrListing<'a> {
    proto: &'a str,
    vip: &'a str,
    laddrs: Vec<LaddrPools<'a>>,
}

#[derive(Debug, Serialize)]
struct LaddrPools<'a> {
    laddr: &'a str,
    pools: Vec<&'a PoolSnap>,
}

/// `-G`: local addresses of one or every service with their port usage
/// toward each real (the DPVS layout, with per-real columns).
pub(crate) fn list_laddrs(
    snap: &Snapshot,
    service: Option<ServiceKey>,
    as_json: bool,
) -> Result<String, String> {
    let services: Vec<&ServiceSnap> = match service {
        None => snap.services.iter().collect(),
        Some(key) => {
            let (proto, vip) = key_strings(key);
            vec![snap.service(proto, &vip).ok_or_else(|| format!("no service {}", service_name(key)))?]
        }
    };
    let listing: Vec<LaddrListing<'_>> = services
        .iter()
        .map(|s| LaddrListing {
            proto: &s.proto,
            vip: &s.vip,
            laddrs: s
                .laddrs
                .iter()
                .map(|l| LaddrPools {
                    laddr: l,
                    pools: listed_reals(s)
                        .filter_map(|r| {
                            snap.pools
                                .iter()
                                .find(|p| p.proto == s.proto && p.laddr == *l && p.real == r.endpoint)
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    if as_json {
        return json(&listing);
    }
    let mut out = String::new();
    let row = |out: &mut String, cols: [&str; 7]| {
        let line = format!(
            "{:<26} {:<6} {:<20} {:<28} {:>8} {:>8} {:>8}",
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    };
    row(&mut out, ["VIP:VPORT", "TOTAL", "LADDR", "REAL", "INUSE", "RESTING", "FREE"]);
    for (s, l) in services.iter().zip(&listing) {
        row(&mut out, [&listed_name(s), &l.laddrs.len().to_string(), "", "", "", "", ""]);
        for lp in &l.laddrs {
            if lp.pools.is_empty() {
                row(&mut out, ["", "", lp.laddr, "-", "", "", ""]);
            }
            for p in &lp.pools {
                let [u, r, f] = [p.in_use, p.resting, p.free].map(|n| n.to_string());
                row(&mut out, ["", "", lp.laddr, &p.real, &u, &r, &f]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largenum_matches_ipvsadm() {
        let f = |n, exact| {
            let mut s = String::new();
            largenum(&mut s, n, exact);
            s
        };
        assert_eq!(f(0, false), "        0");
        assert_eq!(f(99_999_999, false), " 99999999");
        assert_eq!(f(123_456_789, false), "  123456K");
        assert_eq!(f(12_345_678_901, false), "   12345M");
        assert_eq!(f(123_456_789_012, false), "     123G");
        assert_eq!(f(123_456_789_012_345, false), "     123T");
        assert_eq!(f(123_456_789_012, true), " 123456789012");
        assert_eq!(f(7, true), "        7");
    }

    #[test]
    fn rates_divide_by_elapsed_time() {
        let mut a = Snapshot {
            taken_at_nanos: 0,
            services: vec![ServiceSnap {
                proto: "tcp".into(),
                vip: "10.0.0.1:80".into(),
                sched: "wrr".into(),
                synproxy: false,
                toa: false,
                proxy_protocol: "disable".into(),
                conn_timeout: None,
                laddrs: vec![],
                traffic: Traffic::default(),
                reals: vec![RealSnap {
                    endpoint: "10.0.1.1:80".into(),
                    weight: 1,
                    in_service: true,
                    active_conns: 0,
                    inactive_conns: 0,
                    traffic: Traffic::default(),
                    handshake: Default::default(),
                    passive: Default::default(),
                    no_local_port: 0,
                    health: None,
                }],
                health: None,
            }],
            drops: vec![],
            conn_count: 0,
            conns_created: 0,
            conns_removed: 0,
            icmp_forwarded: 0,
            traffic: Traffic::default(),
            pools: vec![],
            timeouts: Default::default(),
            conns: None,
            synproxy: Default::default(),
            resets: Default::default(),
            client_addr: Default::default(),
            workers: vec![],
            sockets: None,
            steered: None,
            fast_path: None,
            probers: vec![],
        };
        let mut b = a.clone();
        b.taken_at_nanos = 2_000_000_000;
        b.services[0].traffic =
            Traffic { conns: 10, pkts_in: 100, pkts_out: 50, bytes_in: 4000, bytes_out: 2 };
        b.services[0].reals[0].traffic.conns = 4;
        let r = rates(&a, &b);
        assert_eq!(r[0].rate, Rate { cps: 5, in_pps: 50, out_pps: 25, in_bps: 2000, out_bps: 1 });
        assert_eq!(r[0].reals[0].1.cps, 2);
        // Zeroed counters and a zero interval give zero rates.
        a.taken_at_nanos = 2_000_000_000;
        assert_eq!(rates(&b, &a)[0].rate, Rate::default());

        // --stats ends with the fast path's counts where it runs, and only there.
        let args = ListArgs { view: ListView::Stats, ..ListArgs::default() };
        assert!(!list(&a, &args, &[]).unwrap().contains("Fast path"));
        a.fast_path = Some(FastPathSnap { packets: 12, bytes: 3400, installed: 1, ..Default::default() });
        let text = list(&a, &args, &[]).unwrap();
        assert!(text.contains("Fast path: 12 packets 3400 bytes forwarded in XDP"), "{text}");
        assert!(text.contains("connections: 1 installed 0 removed"), "{text}");
        let one = ListArgs {
            service: Some((
                rvs_core::Proto::Tcp,
                "10.0.0.1:80".parse::<std::net::SocketAddr>().unwrap().into(),
            )),
            ..args
        };
        assert!(!list(&a, &one, &[]).unwrap().contains("Fast path"));
    }
}
