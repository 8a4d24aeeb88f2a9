//! Scenario d: a SYN flood, or an ACK flood with random cookies, at the
//! generator's full rate (random spoofed sources and ports toward the VIP)
//! against rvs with SYNProxy on (TUN, AF_XDP with one and two workers, and
//! AF_XDP with the fast path answering in XDP), while a legitimate client
//! makes sequential HTTP connections. Measured per round: the share of
//! legitimate connections that succeed, SYNs the reals see beyond the
//! legitimate ones (nftables counters on the reals: a flood packet that got
//! through would open a connection to a real), the balancer's memory (RSS
//! of the daemon) before and after. The targets: 100 % of legitimate
//! connections in every round, nothing of the flood at a real, memory flat.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use rvs_netns::stop_requested;
use serde_json::{Value, json};

use crate::Opts;
use crate::bpf::{Counter, Prog};
use crate::frame::{self, Macs};
use crate::generator::Flood;
use crate::lab::{Lab, NftTable, SPOOF_NET, XdpLink, check_stop, rss_kib};
use crate::paths::{self, DataPath, Proto, Rvs, Service};
use crate::report::{Samples, Table, mega};

/// The service's port.
const PORT: u16 = 80;
/// Upper bound of legitimate connections per round.
const MAX_LEGIT: usize = 100_000;
/// Deadline of each legitimate connection (connect through response): room
/// for one SYN retransmission (1 s) and some.
const LEGIT_TIMEOUT: Duration = Duration::from_secs(3);

/// The legitimate client's tally.
#[derive(Debug, Default, Clone, Copy)]
struct Legit {
    tried: u64,
    ok: u64,
}

/// One sequential GET with a deadline; true on an HTTP 200.
fn get(target: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let start = Instant::now();
        let mut s = TcpStream::connect_timeout(&target, LEGIT_TIMEOUT)?;
        let left = LEGIT_TIMEOUT.saturating_sub(start.elapsed()).max(Duration::from_millis(1));
        s.set_read_timeout(Some(left))?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        Ok(buf.starts_with(b"HTTP/1.1 200"))
    };
    attempt().unwrap_or(false)
}

/// What floods: SYNs, or ACKs carrying random cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Syn,
    Ack,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Syn => "SYN",
            Self::Ack => "ACK",
        }
    }
}

/// The paths flooded, in column order.
fn paths() -> Vec<Rvs> {
    vec![Rvs::tun(true), Rvs::xdp(1, true), Rvs::xdp(2, true), Rvs::fast_path(true)]
}

/// The columns `--fast-path` keeps.
const FAST_PATH_ROWS: &[&str] = &["rvs AF_XDP, SYNProxy on", "rvs AF_XDP fast path, SYNProxy on"];

/// Daemon memory growth over all rounds that still counts as flat, in
/// percent of its memory before the flood: the legitimate connections
/// (thousands per round, kept through their TIME_WAIT) grow the connection
/// table a little whatever the flood does.
const RSS_FLAT_PCT: u64 = 5;

/// One path's figures over the rounds.
#[derive(Debug, Default)]
struct Figures {
    share: Samples,
    flood_rate: Samples,
    at_lb_rate: Samples,
    /// Of those, answered (cookie SYN-ACKs) or dropped (bad cookies) by the
    /// XDP program, with the fast path.
    in_xdp_rate: Samples,
    lost_rate: Samples,
    leaked: Samples,
    /// Connections the reals saw beyond the legitimate attempts: distinct
    /// (source, port) pairs of their SYNs beyond one per attempt.
    flood_conns: Samples,
    tried: Samples,
    at_reals: Samples,
    rss_after: Samples,
    legit: Legit,
    real_syns: u64,
    rss_before: u64,
    rss_end: u64,
}

/// Packets the kernel dropped before rvs could read them: the TUN device's
/// full queue, or the sockets' rings as rvs reports them.
fn lost_before_rvs(lab: &Lab, xdp: bool) -> anyhow::Result<u64> {
    if xdp {
        return paths::rvs_metric(lab, "rvs_xdp_socket_drops_total", &[]);
    }
    let text = lab.lb().run("cat", ["/sys/class/net/rvs0/statistics/tx_dropped"])?;
    Ok(text.trim().parse().unwrap_or(0))
}

/// SYNs arriving at the reals, counted by nftables in each: all of them,
/// and their distinct (source, port) pairs, one per connection the
/// balancer opened.
struct RealSyns(Vec<NftTable>);

impl RealSyns {
    fn install(lab: &Lab) -> anyhow::Result<Self> {
        let body = "set seen {\n type ipv4_addr . inet_service; size 1048576; flags dynamic;\n}\n\
                    chain c {\n type filter hook prerouting priority -300; policy accept;\n \
                    tcp flags & (syn|ack) == syn counter add @seen { ip saddr . tcp sport }\n}";
        let tables = lab.topo.ns_reals().iter().map(|ns| NftTable::install(ns, "ip", "rvs_bench_syn", body));
        Ok(Self(tables.collect::<anyhow::Result<_>>()?))
    }

    fn syns(&self) -> anyhow::Result<u64> {
        self.0.iter().map(NftTable::counter).sum()
    }

    /// Connections seen since [`Self::forget_connections`].
    fn connections(&self) -> anyhow::Result<u64> {
        self.0.iter().map(|t| t.set_len("seen")).sum()
    }

    fn forget_connections(&self) -> anyhow::Result<()> {
        self.0.iter().try_for_each(|t| t.flush_set("seen"))
    }
}

fn flood(lab: &Lab, o: &Opts, kind: Kind, generator: &Flood, path: &Rvs) -> anyhow::Result<Figures> {
    let svc = Service::new(Proto::Tcp, PORT);
    let xdp = path.xdp_workers.is_some();
    let m = path.setup(lab, svc)?;
    let pid = m.pid.context("the daemon's pid")?;
    let reals = RealSyns::install(lab)?;
    // What reaches the balancer: a counting program at its ingress, or, where
    // rvs's own program holds that place, rvs's steering counts.
    let at_lb = Counter::new()?;
    let _ingress = match xdp {
        false => Some(XdpLink::attach(lab.lb(), lab.topo.lb_client_if(), Prog::count(&at_lb, 6, false)?)?),
        true => None,
    };
    // With the fast path, what the program answered or dropped itself
    // (its drops count with the engine's under `bad_cookie`; the engine
    // drops next to none of them here, since the program drops first).
    let in_xdp = || -> anyhow::Result<u64> {
        if !path.fast_path {
            return Ok(0);
        }
        let synacks = paths::rvs_metric(lab, "rvs_fast_path_syn_cookies_total", &["syn_ack_sent"])?;
        Ok(synacks + paths::rvs_metric(lab, "rvs_drops_total", &["\"bad_cookie\""])?)
    };
    let reaching = || -> anyhow::Result<u64> {
        if xdp { Ok(paths::rvs_steered(lab)? + in_xdp()?) } else { Ok(at_lb.read()?) }
    };
    let target = SocketAddr::from((lab.topo.vip(), svc.port));
    // Warm the path (ARP, first connections) and take the resting memory.
    lab.client().run_in(|| (0..20).filter(|_| get(target)).count())?;
    let mut f = Figures { rss_before: rss_kib(pid).unwrap_or(0), ..Figures::default() };
    let secs = Duration::from_secs_f64(o.flood_secs);
    for round in 0..o.rounds {
        check_stop()?;
        let syn0 = reals.syns()?;
        reals.forget_connections()?;
        let failovers = || paths::rvs_metric(lab, "rvs_real_handshake_failovers_total", &[]);
        let failovers0 = failovers()?;
        let lb0 = reaching()?;
        let xdp0 = in_xdp()?;
        let lost0 = lost_before_rvs(lab, xdp)?;
        let done = AtomicBool::new(false);
        let (sent, legit) = thread::scope(|s| -> anyhow::Result<_> {
            let client = lab.client().clone();
            let done = &done;
            let legit = s.spawn(move || {
                client.run_in(|| {
                    // Let the flood start first.
                    thread::sleep(Duration::from_millis(100));
                    let mut l = Legit::default();
                    while !done.load(Ordering::SeqCst) && !stop_requested() && (l.tried as usize) < MAX_LEGIT
                    {
                        l.tried += 1;
                        l.ok += u64::from(get(target));
                    }
                    l
                })
            });
            let sent = generator.run(lab, secs);
            done.store(true, Ordering::SeqCst);
            let legit = legit.join().map_err(|_| anyhow::anyhow!("legitimate client panicked"))??;
            Ok((sent?, legit))
        })?;
        // Retransmitted legitimate SYNs may still be on their way.
        thread::sleep(Duration::from_millis(200));
        let syns = reals.syns()? - syn0;
        let s = sent.elapsed.as_secs_f64();
        let r = if legit.tried > 0 { legit.ok as f64 / legit.tried as f64 } else { 0.0 };
        f.share.push(r * 100.0);
        f.flood_rate.push(sent.frames as f64 / s);
        f.at_lb_rate.push(reaching()?.saturating_sub(lb0) as f64 / s);
        f.in_xdp_rate.push(in_xdp()?.saturating_sub(xdp0) as f64 / s);
        f.lost_rate.push(lost_before_rvs(lab, xdp)?.saturating_sub(lost0) as f64 / s);
        f.leaked.push(syns.saturating_sub(legit.ok) as f64);
        // A legitimate attempt whose real did not answer is tried on another.
        let legit_conns = legit.tried + failovers()?.saturating_sub(failovers0);
        f.flood_conns.push(reals.connections()?.saturating_sub(legit_conns) as f64);
        f.tried.push(legit.tried as f64);
        f.at_reals.push(syns as f64);
        f.rss_after.push(rss_kib(pid).unwrap_or(0) as f64);
        f.legit.tried += legit.tried;
        f.legit.ok += legit.ok;
        f.real_syns += syns;
        if !o.json {
            eprintln!(
                "{} flood round {}: {}: {} {}/s sent, legitimate {}/{} ok, reals saw {syns} SYNs",
                kind.name(),
                round + 1,
                path.name(),
                kind.name(),
                mega(sent.frames as f64 / s),
                legit.ok,
                legit.tried
            );
        }
    }
    f.rss_end = rss_kib(pid).unwrap_or(0);
    Ok(f)
}

/// The generator's own rate: SYNs arriving at the balancer's ingress per
/// second while an XDP program there counts and drops them all.
fn generator_ceiling(lab: &Lab, o: &Opts, generator: &Flood) -> anyhow::Result<f64> {
    let arrived = Counter::new()?;
    let _drop = XdpLink::attach(lab.lb(), lab.topo.lb_client_if(), Prog::count(&arrived, 6, true)?)?;
    let sent = generator.run(lab, Duration::from_secs_f64(o.flood_secs / 2.0))?;
    Ok(arrived.read()? as f64 / sent.elapsed.as_secs_f64())
}

pub(crate) fn run(lab: &Lab, o: &Opts, kind: Kind) -> anyhow::Result<(Table, Value)> {
    let (client_if, lb_if) = lab.client_link()?;
    let macs = Macs { src: client_if.mac, dst: lb_if.mac };
    let template = match kind {
        Kind::Syn => frame::syn(macs, SPOOF_NET, lab.topo.vip(), PORT),
        Kind::Ack => frame::ack(macs, SPOOF_NET, lab.topo.vip(), PORT),
    };
    let generator = Flood::new(lab, o.generator, template)?;
    let ceiling = generator_ceiling(lab, o, &generator)?;
    rvs_netns::run(lab.lb().ip().args(["route", "add", "blackhole", &format!("{SPOOF_NET}/16")]))?;
    let paths = paths::keep(lab, o, FAST_PATH_ROWS, paths());
    let figs: anyhow::Result<Vec<Figures>> =
        paths.iter().map(|p| flood(lab, o, kind, &generator, p)).collect();
    let _ = rvs_netns::run(lab.lb().ip().args(["route", "del", "blackhole", &format!("{SPOOF_NET}/16")]));
    let figs = figs?;
    let names: Vec<String> = paths.iter().map(DataPath::name).collect();
    let mut t = table(kind, o, &names, &figs, &generator, ceiling);
    paths::note_fast_path(lab, &mut t);
    let rows: Vec<Value> = names
        .iter()
        .zip(&figs)
        .map(|(name, f)| {
            json!({
                "path": name,
                "flood_sent_per_s": f.flood_rate.json(),
                "tcp_at_balancer_per_s": f.at_lb_rate.json(),
                "answered_or_dropped_in_xdp_per_s": f.in_xdp_rate.json(),
                "lost_before_rvs_per_s": f.lost_rate.json(),
                "legit_success_pct": f.share.json(),
                "legit_tried": f.legit.tried,
                "legit_ok": f.legit.ok,
                "real_syns": f.real_syns,
                "real_syns_beyond_legit": f.leaked.json(),
                "flood_connections_at_reals": f.flood_conns.json(),
                "rss_kib_before": f.rss_before,
                "rss_kib_after_round": f.rss_after.json(),
                "rss_kib_end": f.rss_end,
                "targets_met": f.missed().is_empty(),
            })
        })
        .collect();
    let generator = json!({ "kind": generator.name(), "ceiling_per_s": ceiling });
    Ok((
        t,
        json!({ "flood": kind.name(), "rows": rows, "rounds": o.rounds, "secs": o.flood_secs, "generator": generator }),
    ))
}

impl Figures {
    /// The targets this path missed: 100 % of legitimate connections in
    /// every round, no flood packet through to a real, memory flat.
    fn missed(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.share.0.iter().any(|&p| p < 100.0) || self.legit.tried == 0 {
            m.push("a round below 100 %");
        }
        if self.flood_conns.0.iter().any(|&n| n > 0.0) {
            m.push("flood connections at the reals");
        }
        if self.rss_end.saturating_sub(self.rss_before) * 100 > self.rss_before * RSS_FLAT_PCT {
            m.push("memory grew");
        }
        m
    }
}

/// The table of one flood: a column per path, a row per figure.
fn table(kind: Kind, o: &Opts, names: &[String], figs: &[Figures], generator: &Flood, ceiling: f64) -> Table {
    let mut header = vec!["figure, median (min–max) per round"];
    header.extend(names.iter().map(String::as_str));
    let k = kind.name();
    let title = match kind {
        Kind::Syn => "SYN flood against rvs with SYNProxy on, random spoofed sources and ports",
        Kind::Ack => {
            "ACK flood with random cookies against rvs with SYNProxy on, random spoofed sources and ports"
        }
    };
    let mut t = Table::new(title, &header);
    let pct = |v: f64| format!("{v:.1} %");
    let count = |v: f64| format!("{v:.0}");
    let kib = |v: f64| format!("{:.1} MiB", v / 1024.0);
    let row = |t: &mut Table, what: &str, cell: &dyn Fn(&Figures) -> String| {
        let mut r = vec![what.to_owned()];
        r.extend(figs.iter().map(cell));
        t.row(r);
    };
    row(&mut t, &format!("flood {k}s sent by the generator, per s"), &|f| f.flood_rate.show(mega));
    row(&mut t, "TCP packets reaching the balancer, per s", &|f| f.at_lb_rate.show(mega));
    row(&mut t, "… answered or dropped by the XDP program, per s", &|f| f.in_xdp_rate.show(mega));
    row(&mut t, "lost by the kernel before rvs read them, per s", &|f| f.lost_rate.show(mega));
    row(&mut t, "legitimate connections tried (sequential)", &|f| f.tried.show(count));
    row(&mut t, "legitimate connections that succeeded", &|f| f.share.show(pct));
    row(&mut t, "… in each round", &|f| {
        f.share.0.iter().map(|p| format!("{p:.1}")).collect::<Vec<_>>().join(" / ") + " %"
    });
    row(&mut t, "SYNs seen by the reals", &|f| f.at_reals.show(count));
    row(&mut t, "SYNs at the reals beyond one per successful connection", &|f| f.leaked.show(count));
    row(&mut t, "connections at the reals beyond the legitimate attempts", &|f| f.flood_conns.show(count));
    row(&mut t, "daemon RSS after the round", &|f| f.rss_after.show(kib));
    row(&mut t, "targets (100 % every round, nothing at the reals, memory flat)", &|f| {
        let m = f.missed();
        if m.is_empty() { "met".to_owned() } else { format!("MISSED: {}", m.join(", ")) }
    });
    for (name, f) in names.iter().zip(figs) {
        t.note(format!(
            "{name}: {} of {} legitimate connections succeeded (sequential, {} ms deadline each); the reals saw {} SYNs; daemon RSS {} before the flood, {} after {} rounds of {:.1} s",
            f.legit.ok,
            f.legit.tried,
            LEGIT_TIMEOUT.as_millis(),
            f.real_syns,
            kib(f.rss_before as f64),
            kib(f.rss_end as f64),
            o.rounds,
            o.flood_secs
        ));
    }
    t.note(format!(
        "generator: {}, one thread on the client; its ceiling, with the balancer's ingress dropping every {k} (XDP_DROP): {} {k}/s",
        generator.name(),
        mega(ceiling)
    ));
    t.note(format!(
        "a flood packet reaches a real only as a SYN the balancer sends after a valid cookie ACK, which spoofed sources never return (and random cookies are not valid); \
         SYNs beyond one per successful connection are legitimate attempts' (failed ones, or SYNs retransmitted toward a real), so the target is read from connections: distinct (source, port) pairs of the reals' SYNs beyond one per legitimate attempt and one per handshake rvs moved to another real (rvs_real_handshake_failovers_total); memory counts as flat when the daemon's RSS grew by at most {RSS_FLAT_PCT} % over all rounds (the legitimate connections' entries grow it a little)"
    ));
    t.note(
        "TCP packets reaching the balancer: counted at its ingress for TUN, by rvs's XDP program for AF_XDP (frames it steered to its sockets, and with the fast path the SYN-ACKs it sent and the bad cookies it dropped: rvs_fast_path_syn_cookies_total{event=\"syn_ack_sent\"}, rvs_drops_total{reason=\"bad_cookie\"}); \
         lost before rvs: the TUN device's full queue (tx_dropped), or the AF_XDP sockets' rings (rvs_xdp_socket_drops_total)"
            .to_owned(),
    );
    t
}
