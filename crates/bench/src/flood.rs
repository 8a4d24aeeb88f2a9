//! Scenario d: a SYN flood at the generator's full rate (random spoofed
//! sources and ports toward the VIP) against rvs with SYNProxy on, while a
//! legitimate client makes sequential HTTP connections. Measured per round:
//! the share of legitimate connections that succeed, SYNs the reals see
//! beyond the legitimate ones (nftables counters on the reals), the
//! balancer's memory (RSS of the daemon) before and after.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::Opts;
use crate::bpf::{Counter, Prog};
use crate::frame::{self, Macs};
use crate::lab::{self, Lab, NftTable, XdpLink, check_stop, rss_kib, stopped};
use crate::paths::{DataPath, Proto, Rvs, Service};
use crate::report::{Samples, Table, mega};

/// Spoofed sources: 198.18.0.0/16 (benchmarking space), blackholed at the
/// balancer so the cookie SYN-ACKs vanish as they would toward real spoofed hosts.
const SPOOF_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
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

pub(crate) fn run(lab: &Lab, o: &Opts) -> anyhow::Result<(Table, Value)> {
    let svc = Service { proto: Proto::Tcp, port: 80 };
    let path = Rvs { synproxy: true, xdp_workers: None };
    let m = path.setup(lab, svc)?;
    let pid = m.pid.context("the daemon's pid")?;
    rvs_netns::run(lab.lb().ip().args(["route", "add", "blackhole", &format!("{SPOOF_NET}/16")]))?;
    let syns_at_reals: Vec<NftTable> = lab
        .topo
        .ns_reals()
        .iter()
        .map(|ns| {
            NftTable::install(
                ns,
                "ip",
                "rvs_bench_syn",
                "chain c {\n type filter hook prerouting priority -300; policy accept;\n tcp flags & (syn|ack) == syn counter\n}",
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let real_syns = || -> anyhow::Result<u64> { syns_at_reals.iter().map(NftTable::counter).sum() };
    let at_lb = Counter::new()?;
    let _ingress = XdpLink::attach(lab.lb(), lab.topo.lb_client_if(), Prog::count(&at_lb, 6, false)?)?;
    let (client_if, lb_if) = lab.client_link()?;
    let template =
        frame::syn(Macs { src: client_if.mac, dst: lb_if.mac }, SPOOF_NET, lab.topo.vip(), svc.port);
    let target = SocketAddr::from((lab.topo.vip(), svc.port));
    // Warm the path (ARP, first connections) and take the resting memory.
    lab.client().run_in(|| (0..20).filter(|_| get(target)).count())?;
    let rss_before = rss_kib(pid).unwrap_or(0);
    let secs = Duration::from_secs_f64(o.flood_secs);
    let (mut share, mut flood_rate, mut at_lb_rate, mut leaked, mut rss_after) =
        (Samples::default(), Samples::default(), Samples::default(), Samples::default(), Samples::default());
    let (mut tried, mut at_reals) = (Samples::default(), Samples::default());
    let (mut legit_total, mut real_syn_total) = (Legit::default(), 0u64);
    for round in 0..o.rounds {
        check_stop()?;
        let syn0 = real_syns()?;
        let lb0 = at_lb.read()?;
        let done = AtomicBool::new(false);
        let (sent, legit) = thread::scope(|s| -> anyhow::Result<_> {
            let client = lab.client().clone();
            let done = &done;
            let legit = s.spawn(move || {
                client.run_in(|| {
                    // Let the flood start first.
                    thread::sleep(Duration::from_millis(100));
                    let mut l = Legit::default();
                    while !done.load(Ordering::SeqCst) && !stopped() && (l.tried as usize) < MAX_LEGIT {
                        l.tried += 1;
                        l.ok += u64::from(get(target));
                    }
                    l
                })
            });
            let sent = lab::generate(lab, &template, secs, &|| false);
            done.store(true, Ordering::SeqCst);
            let legit = legit.join().map_err(|_| anyhow::anyhow!("legitimate client panicked"))??;
            Ok((sent?, legit))
        })?;
        // Retransmitted legitimate SYNs may still be on their way.
        thread::sleep(Duration::from_millis(200));
        let syns = real_syns()? - syn0;
        let s = sent.elapsed.as_secs_f64();
        let r = if legit.tried > 0 { legit.ok as f64 / legit.tried as f64 } else { 0.0 };
        share.push(r * 100.0);
        flood_rate.push(sent.frames as f64 / s);
        at_lb_rate.push((at_lb.read()? - lb0) as f64 / s);
        leaked.push(syns.saturating_sub(legit.ok) as f64);
        tried.push(legit.tried as f64);
        at_reals.push(syns as f64);
        rss_after.push(rss_kib(pid).unwrap_or(0) as f64);
        legit_total.tried += legit.tried;
        legit_total.ok += legit.ok;
        real_syn_total += syns;
        if !o.json {
            eprintln!(
                "flood round {}: {} SYN/s sent, legitimate {}/{} ok, reals saw {syns} SYNs",
                round + 1,
                mega(sent.frames as f64 / s),
                legit.ok,
                legit.tried
            );
        }
    }
    let rss_end = rss_kib(pid).unwrap_or(0);
    drop(m);
    let _ = rvs_netns::run(lab.lb().ip().args(["route", "del", "blackhole", &format!("{SPOOF_NET}/16")]));
    let mut t = Table::new(
        "SYN flood against rvs (TUN, SYNProxy on), random spoofed sources and ports",
        &["figure", "median (min–max) per round"],
    );
    let pct = |v: f64| format!("{v:.1} %");
    let count = |v: f64| format!("{v:.0}");
    let kib = |v: f64| format!("{:.1} MiB", v / 1024.0);
    t.row(vec!["flood SYNs sent by the generator, per s".into(), flood_rate.show(mega)]);
    t.row(vec!["TCP packets reaching the balancer, per s".into(), at_lb_rate.show(mega)]);
    t.row(vec!["legitimate connections tried (sequential)".into(), tried.show(count)]);
    t.row(vec!["legitimate connections that succeeded".into(), share.show(pct)]);
    t.row(vec!["SYNs seen by the reals".into(), at_reals.show(count)]);
    t.row(vec!["SYNs at the reals beyond one per successful connection".into(), leaked.show(count)]);
    t.row(vec!["daemon RSS after the round".into(), rss_after.show(kib)]);
    t.note(format!(
        "all rounds: {} of {} legitimate connections succeeded (sequential, {} ms deadline each); the reals saw {real_syn_total} SYNs",
        legit_total.ok,
        legit_total.tried,
        LEGIT_TIMEOUT.as_millis()
    ));
    t.note(
        "a flood SYN reaches a real only after its source returns a valid cookie ACK, which spoofed sources never do; \
         so SYNs beyond one per successful connection are counted as legitimate attempts' (failed ones, or SYNs retransmitted toward a real)"
            .to_owned(),
    );
    t.note(format!(
        "daemon RSS: {} before the flood, {} after {} rounds of {:.1} s",
        kib(rss_before as f64),
        kib(rss_end as f64),
        o.rounds,
        o.flood_secs
    ));
    let v = json!({
        "flood_sent_per_s": flood_rate.json(),
        "tcp_at_balancer_per_s": at_lb_rate.json(),
        "legit_success_pct": share.json(),
        "legit_tried": legit_total.tried,
        "legit_ok": legit_total.ok,
        "real_syns": real_syn_total,
        "real_syns_beyond_legit": leaked.json(),
        "rss_kib_before": rss_before,
        "rss_kib_after_round": rss_after.json(),
        "rss_kib_end": rss_end,
        "rounds": o.rounds,
        "secs": o.flood_secs,
    });
    Ok((t, v))
}
