//! `rvs-bench`: the benchmark suite in one command.
//!
//! Builds the namespace lab and measures, side by side in one run, rvs on
//! its data paths against kernel baselines: established-flow packets/s
//! ([`pps`]), new connections/s ([`cps`]), local-port reuse at that rate
//! ([`ports`]), the seed experiment's latency distribution ([`latency`],
//! through `rvs lab --compare`) and SYN and ACK floods ([`flood`]). Every figure is a median of several rounds printed with its
//! spread, and ratios between paths are printed explicitly. Everything made
//! is removed afterwards, also on failure and on Ctrl-C.

mod bpf;
mod closed_loop;
mod cps;
mod flood;
mod frame;
mod generator;
mod lab;
mod latency;
mod paths;
mod ports;
mod pps;
mod report;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

const USAGE: &str = "\
usage: rvs-bench [SCENARIO...] [OPTIONS]       (as root)

scenarios (default: all):
  all       every scenario below, in one run
  pps       64-byte established-flow packets/s in a closed loop (client and
            reals reflect a fixed population from XDP): a wire's ceiling,
            kernel routing, nftables FullNAT (and its flowtable where the
            kernel has one), rvs (TUN, AF_XDP with 1 and 2 workers, AF_XDP
            with its in-kernel fast path, natively and on generic XDP); each
            over IPv4 and IPv6 (84-byte frames), and rvs's NAT64 and NAT46
  cps       new connections/s (wrk, Connection: close, nginx reals): rvs with
            SYNProxy on and off and with its fast path, nftables FullNAT,
            HAProxy mode tcp, kernel routing; over IPv4 with 3 reals and
            with 1, the best of each over IPv6, rvs's NAT64 and NAT46
  ports     local-port reuse: one local address, one real, 30 s of wrk:
            rvs (TUN, AF_XDP) beside nftables FullNAT; plain, 1 MB
            downloads, client timestamps off
  latency   the seed experiment, classic vs adaptive retransmits, plotted
            (rvs lab --compare --svg)
  flood     SYN flood at the generator's rate against rvs with SYNProxy,
            while a client makes sequential connections
  ack-flood the same with ACKs carrying random cookies

options:
  --quick          short rounds (about three minutes for all)
  --fast-path      only the rows the in-kernel fast path's targets compare
                   (pps, cps, flood; IPv4)
  --rounds N       rounds per figure (medians of N) [5]
  --generator G    the flood's generator: auto (live frames where the kernel
                   allows them, else an AF_PACKET socket), live-frames,
                   packet-socket [auto]
  --json           print the results as JSON on stdout (tables go to stderr)
  --rvs PATH       the rvs binary [built with cargo build --release -p rvs]
  --svg FILE       where latency writes its plot [bench-latency.svg]
  -h, --help       this text
";

/// What the command line asked for.
#[derive(Debug, Clone)]
pub(crate) struct Opts {
    pub scenarios: Vec<String>,
    pub quick: bool,
    /// Only the rows the fast path's targets compare.
    pub fast_path: bool,
    pub json: bool,
    pub rounds: usize,
    pub rvs: Option<PathBuf>,
    pub svg: PathBuf,
    /// Seconds of each packets/s window.
    pub pps_secs: f64,
    /// Seconds of each wrk run.
    pub cps_secs: u32,
    /// Seconds of each wrk run of the ports scenario.
    pub ports_secs: u32,
    /// Requests per mode in the latency experiment.
    pub latency_requests: usize,
    /// Seconds of each flood round.
    pub flood_secs: f64,
    /// The flood's generator.
    pub generator: generator::Choice,
}

fn parse(args: &[String]) -> anyhow::Result<Option<Opts>> {
    let mut o = Opts {
        scenarios: Vec::new(),
        quick: false,
        fast_path: false,
        json: false,
        rounds: 5,
        rvs: None,
        svg: PathBuf::from("bench-latency.svg"),
        pps_secs: 2.0,
        cps_secs: 5,
        ports_secs: 30,
        latency_requests: 500,
        flood_secs: 4.0,
        generator: generator::Choice::Auto,
    };
    let mut rounds = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => o.quick = true,
            "--fast-path" => o.fast_path = true,
            "--json" => o.json = true,
            "--rounds" => {
                let n: usize = it.next().context("--rounds needs a number")?.parse().context("--rounds")?;
                if !(1..=100).contains(&n) {
                    bail!("--rounds must be within 1..=100");
                }
                rounds = Some(n);
            }
            "--rvs" => o.rvs = Some(PathBuf::from(it.next().context("--rvs needs a path")?)),
            "--svg" => o.svg = PathBuf::from(it.next().context("--svg needs a file name")?),
            "--generator" => {
                o.generator = generator::Choice::parse(it.next().context("--generator needs a name")?)?;
            }
            "all" | "pps" | "cps" | "ports" | "latency" | "flood" | "ack-flood" => {
                o.scenarios.push(a.clone());
            }
            _ => bail!("unknown argument {a:?} (see rvs-bench --help)"),
        }
    }
    if o.scenarios.is_empty() || o.scenarios.iter().any(|s| s == "all") {
        o.scenarios = ["pps", "cps", "ports", "latency", "flood", "ack-flood"].map(str::to_owned).into();
    }
    if o.quick {
        o.pps_secs = 0.4;
        o.cps_secs = 1;
        o.ports_secs = 4;
        o.latency_requests = 30;
        o.flood_secs = 1.5;
    }
    o.rounds = rounds.unwrap_or(5);
    Ok(Some(o))
}

/// The `rvs` binary: `--rvs`, or built now (release) in this target dir.
fn rvs_binary(o: &Opts) -> anyhow::Result<PathBuf> {
    if let Some(p) = &o.rvs {
        return Ok(p.clone());
    }
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let exe = std::env::current_exe()?;
    // target/<profile>/rvs-bench -> target/release/rvs
    let target = exe.parent().and_then(|p| p.parent()).context("locating the target directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building rvs (cargo build --release -p rvs) ...");
    let st = Command::new(cargo)
        .args(["build", "--release", "--locked", "-q", "-p", "rvs", "--manifest-path", manifest])
        .env("CARGO_TARGET_DIR", target)
        .status()
        .context("running cargo")?;
    if !st.success() {
        bail!("cargo build -p rvs failed");
    }
    Ok(target.join("release").join("rvs"))
}

/// One line about the machine, for the report.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    format!("{cpus} CPUs ({cpu}), kernel {}", kernel.trim())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match real_main(&args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("rvs-bench: {e:#}");
            // 130 after Ctrl-C, as a shell reports it.
            std::process::exit(if rvs_netns::stop_requested() { 130 } else { 1 });
        }
    }
}

/// The lab, built on first use; nginx on the reals when asked for.
fn ensure_lab<'a>(
    lab: &'a mut Option<lab::Lab>,
    rvs: &std::path::Path,
    nginx: bool,
) -> anyhow::Result<&'a mut lab::Lab> {
    let l = match lab.take() {
        Some(l) => l,
        None => lab::Lab::build(rvs)?,
    };
    let l = lab.insert(l);
    if nginx && !l.nginx {
        l.start_nginx()?;
    }
    Ok(l)
}

fn real_main(args: &[String]) -> anyhow::Result<i32> {
    let Some(o) = parse(args)? else {
        print!("{USAGE}");
        return Ok(0);
    };
    rvs_netns::install_stop_handlers()?;
    let rvs = rvs_binary(&o)?;
    let _ = rvs_netns::cleanup_orphans();
    let started = Instant::now();
    let header = format!("# rvs-bench: {}\n\nmachine: {}\n", o.scenarios.join(" "), machine());
    let out = |t: &report::Table| {
        if o.json {
            eprintln!("{}", t.render());
        } else {
            println!("{}", t.render());
        }
    };
    if o.json {
        eprintln!("{header}");
    } else {
        println!("{header}");
    }
    let mut results = serde_json::Map::new();
    let mut lab = None;
    for s in &o.scenarios {
        let (t, v): (report::Table, Value) = match s.as_str() {
            "pps" => pps::run(ensure_lab(&mut lab, &rvs, false)?, &o)?,
            "cps" => cps::run(ensure_lab(&mut lab, &rvs, true)?, &o)?,
            "ports" => ports::run(ensure_lab(&mut lab, &rvs, true)?, &o)?,
            "flood" => flood::run(ensure_lab(&mut lab, &rvs, true)?, &o, flood::Kind::Syn)?,
            "ack-flood" => flood::run(ensure_lab(&mut lab, &rvs, true)?, &o, flood::Kind::Ack)?,
            "latency" => latency::run(&rvs, &o)?,
            _ => unreachable!("checked by parse"),
        };
        out(&t);
        results.insert(s.clone(), v);
    }
    drop(lab);
    if o.json {
        let v = json!({ "machine": machine(), "quick": o.quick, "rounds": o.rounds, "wall_s": started.elapsed().as_secs_f64(), "results": results });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("total time {:.0} s", started.elapsed().as_secs_f64());
    }
    Ok(0)
}
