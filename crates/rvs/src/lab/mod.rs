//! `rvs lab`: the seed's experiment on this machine, with nothing but the rvs
//! binary and iproute2.
//!
//! It builds a client, a balancer and N reals out of network namespaces,
//! serves HTTP on each real from threads of this process, runs the rvs
//! daemon in the balancer's namespace, optionally drops packets on the
//! balancer–real links, and then makes thousands of sequential HTTP requests
//! to the VIP: one connection each, as `curl` in a loop did when the classic
//! FullNAT + SYNProxy balancer stalled for 3, 6 or 9 seconds. The report shows
//! the latency distribution and counts the requests over 1 s and 3 s.
//!
//! A run is [`Lab::start`] + [`Lab::measure`], giving a [`LabResult`]; the
//! report prints any number of results side by side, so comparisons (loss
//! rates, SYNProxy on/off) are several runs and one table. `--compare` is
//! the seed's comparison in one command: the same run with SYNProxy's
//! classic retransmit timer and with the adaptive one, with SYN/SYN-ACK loss
//! toward the reals, plotted as latency CDFs (`plot`). `--ipv6` runs it all
//! over IPv6 and `--nat64` with an IPv6 VIP in front of IPv4 reals (the
//! topology is dual-stack either way). Everything made
//! is removed on the way out, also on Ctrl-C: the signal only sets a flag,
//! the request loop checks it, and the guards' drops do the rest.

mod http;
mod kill;
mod plot;
mod report;

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rvs_control::config::RetransmitMode;
use rvs_netns::{
    ChildGuard, LossRule, NotReady, STOP, TempDir, Topology, TopologySpec, install_stop_handlers,
    stop_requested, wait_for_path,
};

use self::http::Server;
use self::kill::{Action, Applied, KillMode, RealEvent};
use self::report::{Progress, bump};

/// The port the reals serve and the VIP listens on.
const HTTP_PORT: u16 = 80;
/// The `A` of the lab's 10.A.x.y address plan.
const LAB_NET: u8 = 77;
/// How many local addresses the lab's service gets.
const LAB_LADDRS: usize = 2;
/// How long the daemon may take to open its control socket.
const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// `--compare`'s SYN/SYN-ACK loss when no loss is asked for: enough for
/// stalls to show in a few hundred requests.
const COMPARE_SYN_LOSS_PCT: f64 = 5.0;
/// Where `--compare` writes its plot unless `--svg` says otherwise.
const COMPARE_SVG: &str = "rvs-lab-compare.svg";

const USAGE: &str = "\
usage: rvs lab [OPTIONS]

Builds a client, a load balancer and real servers in network namespaces, runs
the rvs daemon on the balancer, makes sequential HTTP requests to the VIP and
reports the latency distribution. Needs root and iproute2; removes everything
it made when it ends.

options:
  -n, --requests N     requests to make, one connection each [2000]
      --loss PCT       drop PCT % of packets on the balancer-real links, both
                       directions (nftables if `nft` exists, else the daemon's
                       fault injection) [0]
      --syn-loss PCT   drop PCT % of only the SYNs and SYN-ACKs on those links,
                       the seed's experiment (same methods) [0]
      --synproxy on|off
                       SYNProxy for the lab's service [on]
      --compare        run twice, all else equal: with the daemon's [synproxy]
                       retransmit_mode classic, then adaptive (the default);
                       print both side by side and plot them (--svg); without
                       --loss or --syn-loss it uses --syn-loss 5
      --svg FILE       write the latency CDFs (total request time) as an SVG
                       plot to FILE [rvs-lab-compare.svg with --compare]; with
                       --kill-real, each request's time against its start,
                       failures and kills marked
      --reals N        real servers [3]
      --timeout SECS   per-request deadline [30]
      --rate N         start at most N requests per second (still one at a
                       time), so a run spans a known time; 0 is as fast as
                       they complete [0]
      --kill-real N@SECONDS
                       kill real N (1 is the first) at that second of the
                       requests; repeatable. The report then adds a per-second
                       series (requests, failures, latency percentiles) marking
                       each kill and revival
      --revive N@SECONDS
                       bring a killed real N back at that second; repeatable
      --kill-mode stop|silence
                       how a killed real dies: stop ends its HTTP server (its
                       kernel resets new connections); silence drops every
                       packet to and from it (nftables in its namespace) [stop].
                       Reals still dead when the requests end are revived
      --ipv6           client, VIP, local addresses and reals on IPv6
      --nat64          an IPv6 client and VIP in front of IPv4 local addresses
                       and reals: the balancer translates
      --direct         no balancer: request the reals directly through the
                       balancer namespace's kernel routing (a baseline)
      --keep           leave the lab up afterwards and print how to remove it
      --cleanup        remove the namespaces of earlier lab runs that have
                       ended (kept or crashed), then exit
      --json           print the results as JSON
  -h, --help           this text
";

/// The address families of the lab's service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Family {
    /// IPv4 throughout.
    #[default]
    V4,
    /// IPv6 throughout (`--ipv6`).
    V6,
    /// An IPv6 client and VIP, IPv4 local addresses and reals (`--nat64`).
    Nat64,
}

impl Family {
    /// The name in labels and JSON.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::V4 => "ipv4",
            Self::V6 => "ipv6",
            Self::Nat64 => "nat64",
        }
    }

    /// An address of the topology's plan on the client's side (the VIP's).
    fn client_side(self, v4: std::net::Ipv4Addr) -> IpAddr {
        if self == Self::V4 { v4.into() } else { rvs_netns::mirror6(v4).into() }
    }

    /// An address of the plan on the reals' side (the local addresses').
    fn backend_side(self, v4: std::net::Ipv4Addr) -> IpAddr {
        if self == Self::V6 { rvs_netns::mirror6(v4).into() } else { v4.into() }
    }
}

/// What one lab run does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LabOptions {
    /// Sequential requests to make.
    pub requests: usize,
    /// Loss on the balancer–real links, in percent.
    pub loss_pct: f64,
    /// Loss of pure SYNs and SYN-ACKs on the balancer–real links, in percent.
    pub syn_loss_pct: f64,
    /// Whether the lab's service uses SYNProxy.
    pub synproxy: bool,
    /// The daemon's `[synproxy] retransmit_mode`.
    pub retransmit_mode: RetransmitMode,
    /// One run per retransmit mode instead of one run.
    pub compare: bool,
    /// Where to write the latency CDF plot, if anywhere.
    pub svg: Option<PathBuf>,
    /// Number of real servers.
    pub reals: usize,
    /// Deadline of each request.
    pub timeout: Duration,
    /// Requests started per second at most; 0 for no limit.
    pub rate: f64,
    /// Leave everything running afterwards.
    pub keep: bool,
    /// Print JSON instead of the table.
    pub json: bool,
    /// Bypass the balancer: request the reals' own addresses.
    pub direct: bool,
    /// Kills and revivals of reals during the requests, in time order.
    pub events: Vec<RealEvent>,
    /// How a killed real dies.
    pub kill_mode: KillMode,
    /// The families of the VIP and of the reals.
    pub family: Family,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            requests: 2000,
            loss_pct: 0.0,
            syn_loss_pct: 0.0,
            synproxy: true,
            retransmit_mode: RetransmitMode::default(),
            compare: false,
            svg: None,
            reals: 3,
            timeout: Duration::from_secs(30),
            rate: 0.0,
            keep: false,
            json: false,
            direct: false,
            events: Vec::new(),
            kill_mode: KillMode::default(),
            family: Family::default(),
        }
    }
}

impl LabOptions {
    /// The column heading of this run's result.
    fn label(&self) -> String {
        let mut label = match (self.direct, self.synproxy) {
            (true, _) => "direct".to_owned(),
            (false, false) => "rvs".to_owned(),
            (false, true) => format!("rvs synproxy {}", self.retransmit_mode.name()),
        };
        if self.loss_pct > 0.0 || self.syn_loss_pct == 0.0 {
            label.push_str(&format!(", loss {}%", self.loss_pct));
        }
        if self.syn_loss_pct > 0.0 {
            label.push_str(&format!(", SYN loss {}%", self.syn_loss_pct));
        }
        if self.family != Family::V4 {
            label.push_str(&format!(", {}", self.family.name()));
        }
        label
    }

    /// The runs to make: this one, or with `compare` one per retransmit
    /// mode, the classic one first.
    fn runs(&self) -> Vec<Self> {
        if !self.compare {
            return vec![self.clone()];
        }
        [RetransmitMode::Classic, RetransmitMode::Adaptive]
            .map(|retransmit_mode| Self { retransmit_mode, ..self.clone() })
            .into()
    }

    /// The plot's title: what was requested, under which loss.
    fn plot_title(&self) -> String {
        let per = if self.compare { " per mode" } else { "" };
        let mut loss = Vec::new();
        if self.loss_pct > 0.0 {
            loss.push(format!("{}% loss", self.loss_pct));
        }
        if self.syn_loss_pct > 0.0 {
            loss.push(format!("{}% SYN/SYN-ACK loss", self.syn_loss_pct));
        }
        let loss = if loss.is_empty() { "no loss".to_owned() } else { loss.join(" + ") };
        format!("rvs lab: {} sequential requests{per}, {loss} between balancer and reals", self.requests)
    }
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq)]
enum Invocation {
    Run(LabOptions),
    Help,
    Cleanup,
}

/// Parses the arguments after `lab`.
fn parse_args(args: &[String]) -> anyhow::Result<Invocation> {
    let mut o = LabOptions::default();
    let mut loss_given = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        // Both `--opt VALUE` and `--opt=VALUE`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> anyhow::Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().cloned().with_context(|| format!("{flag} needs a value")),
            }
        };
        match flag {
            "-h" | "--help" => return Ok(Invocation::Help),
            "--cleanup" => return Ok(Invocation::Cleanup),
            "-n" | "--requests" => o.requests = number(flag, &value()?)?,
            "--loss" => {
                o.loss_pct = number(flag, &value()?)?;
                loss_given = true;
            }
            "--syn-loss" => {
                o.syn_loss_pct = number(flag, &value()?)?;
                loss_given = true;
            }
            "--synproxy" => {
                o.synproxy = match value()?.as_str() {
                    "on" => true,
                    "off" => false,
                    v => bail!("--synproxy takes on or off, not {v:?}"),
                }
            }
            "--compare" => o.compare = true,
            "--svg" => o.svg = Some(PathBuf::from(value()?)),
            "--reals" => o.reals = number(flag, &value()?)?,
            "--timeout" => {
                let secs: f64 = number(flag, &value()?)?;
                // Checked before the conversion, which panics on negative or NaN.
                if !(secs > 0.0 && secs <= 3600.0) {
                    bail!("--timeout must be within (0, 3600] seconds");
                }
                o.timeout = Duration::from_secs_f64(secs);
            }
            "--rate" => {
                o.rate = number(flag, &value()?)?;
                if !(0.0..=1e6).contains(&o.rate) {
                    bail!("--rate must be within 0..=1000000 requests per second");
                }
            }
            "--keep" => o.keep = true,
            "--json" => o.json = true,
            "--direct" => o.direct = true,
            "--ipv6" | "--nat64" => {
                let family = if flag == "--ipv6" { Family::V6 } else { Family::Nat64 };
                if o.family != Family::V4 && o.family != family {
                    bail!("--ipv6 and --nat64 exclude each other");
                }
                o.family = family;
            }
            "--kill-real" => o.events.push(RealEvent::parse(flag, &value()?, Action::Kill)?),
            "--revive" => o.events.push(RealEvent::parse(flag, &value()?, Action::Revive)?),
            "--kill-mode" => o.kill_mode = KillMode::parse(&value()?)?,
            _ => bail!("unknown option {arg:?} (see rvs lab --help)"),
        }
        if inline.is_some()
            && matches!(flag, "--keep" | "--json" | "--direct" | "--compare" | "--ipv6" | "--nat64")
        {
            bail!("{flag} takes no value");
        }
    }
    check_options(&mut o, loss_given)?;
    Ok(Invocation::Run(o))
}

/// Options that exclude each other or are out of range; `--compare`'s
/// defaults filled in (its SYN loss only when no loss was given).
fn check_options(o: &mut LabOptions, loss_given: bool) -> anyhow::Result<()> {
    if o.requests == 0 {
        bail!("--requests must be at least 1");
    }
    if !(0.0..100.0).contains(&o.loss_pct) {
        bail!("--loss must be at least 0 and below 100");
    }
    if !(0.0..100.0).contains(&o.syn_loss_pct) {
        bail!("--syn-loss must be at least 0 and below 100");
    }
    if o.svg.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        bail!("--svg needs a file name");
    }
    if o.compare {
        if o.direct {
            bail!("--compare compares the balancer's retransmit modes; --direct has no balancer");
        }
        if !o.synproxy {
            bail!("--compare compares SYNProxy's retransmit modes; it needs --synproxy on");
        }
        if o.keep {
            bail!("--compare makes one lab per mode; --keep can keep only a single run's");
        }
        if !loss_given {
            o.syn_loss_pct = COMPARE_SYN_LOSS_PCT;
        }
        o.svg.get_or_insert_with(|| PathBuf::from(COMPARE_SVG));
    }
    if o.direct && o.family == Family::Nat64 {
        bail!("--nat64 is translated by the balancer; --direct has none");
    }
    if !(2..=200).contains(&o.reals) {
        bail!("--reals must be within 2..=200");
    }
    kill::check_schedule(&mut o.events, o.reals)
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> anyhow::Result<T> {
    v.parse().ok().with_context(|| format!("{flag}: not a valid number: {v:?}"))
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LabResult {
    /// Column heading in reports.
    pub label: String,
    /// Requests asked for.
    pub requested: usize,
    /// Requests made (fewer than asked when interrupted).
    pub completed: usize,
    /// Timings of the successful requests, in order.
    timings: Vec<http::Timing>,
    /// Every request made, in order: when it started and how long it took.
    samples: Vec<Sample>,
    /// The kills and revivals of reals, as they happened.
    pub events: Vec<Applied>,
    /// Failed requests per failure kind.
    pub errors: BTreeMap<&'static str, usize>,
    /// Successful requests per answering real (the response body).
    pub per_real: BTreeMap<String, usize>,
    /// Wall-clock time of the request loop.
    pub wall: Duration,
    /// Loss asked for on the balancer–real links, in percent.
    pub loss_pct: f64,
    /// SYN/SYN-ACK loss asked for on the balancer–real links, in percent.
    pub syn_loss_pct: f64,
    /// The retransmit mode when the service used SYNProxy.
    pub synproxy: Option<RetransmitMode>,
    /// The families of the VIP and of the reals.
    pub family: Family,
    /// How the loss was made.
    pub loss_method: LossMethod,
    /// Packets the nftables loss rules dropped, when they were used.
    pub loss_dropped: Option<u64>,
    /// Whether Ctrl-C (or SIGTERM) cut the run short.
    pub interrupted: bool,
}

impl LabResult {
    fn new(label: String, requested: usize, loss_pct: f64, loss_method: LossMethod) -> Self {
        Self {
            label,
            requested,
            completed: 0,
            timings: Vec::with_capacity(requested),
            samples: Vec::with_capacity(requested),
            events: Vec::new(),
            errors: BTreeMap::new(),
            per_real: BTreeMap::new(),
            wall: Duration::ZERO,
            loss_pct,
            syn_loss_pct: 0.0,
            synproxy: None,
            family: Family::V4,
            loss_method,
            loss_dropped: None,
            interrupted: false,
        }
    }

    /// Failed requests of all kinds.
    pub(crate) fn error_count(&self) -> usize {
        self.errors.values().sum()
    }

    fn loss_text(&self) -> String {
        let m = self.loss_method.label();
        let mut amounts = Vec::new();
        if self.loss_pct > 0.0 {
            amounts.push(format!("{}%", self.loss_pct));
        }
        if self.syn_loss_pct > 0.0 {
            amounts.push(format!("{}% SYN/SYN-ACK", self.syn_loss_pct));
        }
        let amounts = amounts.join(" + ");
        match (self.loss_method, self.loss_dropped) {
            (LossMethod::None, _) => m.to_owned(),
            (_, Some(n)) => format!("{amounts} {m}, {n} dropped"),
            (_, None) => format!("{amounts} {m}"),
        }
    }

    /// Total times of the successful requests, in milliseconds.
    pub(crate) fn totals_ms(&self) -> Vec<f64> {
        self.timings.iter().map(|t| t.total.as_secs_f64() * 1e3).collect()
    }
}

/// One request made: its start, from the start of the requests, and its
/// total time if it succeeded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub(crate) start: Duration,
    pub(crate) total: Option<Duration>,
}

/// Where the loss on the balancer–real links comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LossMethod {
    /// No loss asked for.
    None,
    /// nftables rules on the links, like loss on the wire.
    Nftables,
    /// The daemon's own fault injection, when `nft` is missing.
    Daemon,
}

impl LossMethod {
    /// The name in reports and JSON.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Nftables => "nftables",
            Self::Daemon => "rvs fault injection",
        }
    }
}

/// Temp dirs are `rvs-lab-<pid>-<nanos>`, so ended runs can be told apart.
const TEMP_PREFIX: &str = "rvs-lab-";

/// What the lab's daemon config sets besides addresses.
#[derive(Debug, Clone, Copy, PartialEq)]
struct DaemonSettings {
    /// The service's `synproxy` key.
    synproxy: bool,
    /// `[synproxy] retransmit_mode`.
    retransmit_mode: RetransmitMode,
    /// The fault injector's loss, when nftables does not make it.
    fault_loss_pct: f64,
    /// The fault injector's SYN/SYN-ACK loss, likewise.
    fault_syn_loss_pct: f64,
}

impl DaemonSettings {
    fn of(opts: &LabOptions, loss_method: LossMethod) -> Self {
        let daemon_loss = loss_method == LossMethod::Daemon;
        Self {
            synproxy: opts.synproxy,
            retransmit_mode: opts.retransmit_mode,
            fault_loss_pct: if daemon_loss { opts.loss_pct } else { 0.0 },
            fault_syn_loss_pct: if daemon_loss { opts.syn_loss_pct } else { 0.0 },
        }
    }
}

/// The daemon's configuration for the lab's one service: every real with
/// weight 1 behind `vip`, the loss (if the daemon injects it) in `[driver]`,
/// SYNProxy per `settings`.
fn daemon_config(
    socket: &Path,
    vip: IpAddr,
    laddrs: &[IpAddr],
    reals: &[IpAddr],
    settings: &DaemonSettings,
) -> String {
    let laddrs: Vec<String> = laddrs.iter().map(|a| format!("\"{a}\"")).collect();
    let DaemonSettings { synproxy, retransmit_mode, fault_loss_pct, fault_syn_loss_pct } = *settings;
    let mut cfg = format!(
        "[daemon]\ncontrol_socket = \"{}\"\nsecret_file = \"{}\"\n\n\
         [driver]\ntun_name = \"rvs0\"\nfault_loss_pct = {fault_loss_pct:?}\nfault_syn_loss_pct = {fault_syn_loss_pct:?}\n\n\
         [synproxy]\nretransmit_mode = \"{}\"\n\n\
         [[service]]\nproto = \"tcp\"\nvip = \"{}\"\nsched = \"wrr\"\nladdrs = [{}]\nsynproxy = {synproxy}\n",
        socket.display(),
        socket.with_file_name("secret").display(),
        retransmit_mode.name(),
        SocketAddr::new(vip, HTTP_PORT),
        laddrs.join(", ")
    );
    for &real in reals {
        let real = SocketAddr::new(real, HTTP_PORT);
        cfg.push_str(&format!("\n[[service.real]]\naddr = \"{real}\"\nweight = 1\n"));
    }
    cfg
}

/// A lab that is up: dropping it removes everything, in field order: the
/// daemon first (it holds the TUN and routes), then the HTTP servers, then the
/// namespaces and loss tables, then the temp dir with config and logs.
#[derive(Debug)]
pub(crate) struct Lab {
    daemon: Option<ChildGuard>,
    /// Per real, its server while it runs (`--kill-real` stops them).
    servers: Mutex<Vec<Option<Server>>>,
    topology: Topology,
    tmp: TempDir,
    targets: Vec<SocketAddr>,
    loss_method: LossMethod,
    family: Family,
}

impl Lab {
    /// Builds the topology, starts the reals' servers, the loss and the daemon.
    pub(crate) fn start(opts: &LabOptions) -> anyhow::Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("rvs lab needs root: it creates network namespaces");
        }
        rvs_netns::run(std::process::Command::new("ip").arg("-V"))
            .context("rvs lab needs iproute2 (the `ip` program)")?;
        let mut topology = Topology::build(&TopologySpec {
            reals: opts.reals,
            laddrs: LAB_LADDRS,
            net: LAB_NET,
            ..Default::default()
        })
        .context("building the namespace topology")?;
        if !opts.events.is_empty() && opts.kill_mode == KillMode::Silence && !rvs_netns::nft_available() {
            bail!("--kill-mode silence needs nftables (the `nft` program)");
        }
        let servers: anyhow::Result<Vec<_>> =
            (0..opts.reals).map(|i| kill::serve_real(&topology, i).map(Some)).collect();
        let servers = Mutex::new(servers?);
        let any_loss = opts.loss_pct > 0.0 || opts.syn_loss_pct > 0.0;
        let loss_method = match (any_loss, rvs_netns::nft_available(), opts.direct) {
            (false, _, _) => LossMethod::None,
            (true, true, _) => {
                topology
                    .set_loss(&[LossRule::all(opts.loss_pct), LossRule::syn_and_syn_ack(opts.syn_loss_pct)])
                    .context("injecting loss with nftables")?;
                LossMethod::Nftables
            }
            (true, false, true) => {
                bail!("--loss or --syn-loss with --direct needs nftables (the `nft` program)")
            }
            (true, false, false) => LossMethod::Daemon,
        };
        let tmp = TempDir::new(TEMP_PREFIX).context("creating a temp dir")?;
        let family = opts.family;
        let mut lab = Self { daemon: None, servers, topology, tmp, targets: Vec::new(), loss_method, family };
        if opts.direct {
            let reals = lab.topology.real_addrs().into_iter().map(|a| family.backend_side(a));
            lab.targets = reals.map(|a| SocketAddr::new(a, HTTP_PORT)).collect();
        } else {
            let exe = std::env::current_exe().context("finding the rvs binary")?;
            lab.start_daemon(&exe, &DaemonSettings::of(opts, loss_method))?;
            lab.targets = vec![SocketAddr::new(family.client_side(lab.topology.vip()), HTTP_PORT)];
        }
        Ok(lab)
    }

    /// Runs `EXE run --config FILE` in the balancer's namespace and waits for
    /// its control socket.
    fn start_daemon(&mut self, exe: &Path, settings: &DaemonSettings) -> anyhow::Result<()> {
        let socket = self.tmp.path().join("rvs.sock");
        let config = self.tmp.path().join("rvs.toml");
        let log_path = self.tmp.path().join("daemon.log");
        let (t, f) = (&self.topology, self.family);
        let laddrs: Vec<IpAddr> = t.laddrs().into_iter().map(|a| f.backend_side(a)).collect();
        let reals: Vec<IpAddr> = t.real_addrs().into_iter().map(|a| f.backend_side(a)).collect();
        fs::write(&config, daemon_config(&socket, f.client_side(t.vip()), &laddrs, &reals, settings))?;
        let args = ["run".as_ref(), "--config".as_ref(), config.as_os_str()];
        let daemon = self.daemon.insert(self.topology.ns_lb().spawn_logged(exe, args, &log_path)?);
        let output = || fs::read_to_string(&log_path).unwrap_or_default().trim_end().to_owned();
        match wait_for_path(daemon, &socket, DAEMON_READY_TIMEOUT) {
            Ok(()) => Ok(()),
            Err(NotReady::Exited(status)) => {
                bail!("the rvs daemon exited ({status}) before it was ready; its output:\n{}", output())
            }
            Err(NotReady::Stopped) => bail!("interrupted while waiting for the rvs daemon"),
            Err(NotReady::TimedOut) => bail!(
                "the rvs daemon did not open {} within {:?}; its output:\n{}",
                socket.display(),
                DAEMON_READY_TIMEOUT,
                output()
            ),
            Err(NotReady::Io(e)) => Err(e.into()),
        }
    }

    /// Makes the requests from the client namespace, one connection each,
    /// rotating over the targets, while the kills and revivals of
    /// `opts.events` happen on a thread of their own.
    pub(crate) fn measure(&self, opts: &LabOptions) -> anyhow::Result<LabResult> {
        let mut r = LabResult::new(opts.label(), opts.requests, opts.loss_pct, self.loss_method);
        r.syn_loss_pct = opts.syn_loss_pct;
        r.synproxy = (opts.synproxy && !opts.direct).then_some(opts.retransmit_mode);
        r.family = opts.family;
        let started = Instant::now();
        let schedule_failed = &AtomicBool::new(false);
        let (done, until_done) = mpsc::channel::<()>();
        let (requests, events) = thread::scope(|scope| {
            let schedule = scope.spawn(move || {
                let applied = kill::run_schedule(
                    &opts.events,
                    opts.kill_mode,
                    started,
                    &until_done,
                    &self.topology,
                    &self.servers,
                );
                schedule_failed.store(applied.is_err(), Ordering::Relaxed);
                applied
            });
            let requests =
                self.topology.ns_client().run_in(|| self.requests(opts, started, &mut r, schedule_failed));
            // The schedule ends when the requests have, and undoes its kills.
            drop(done);
            let events =
                schedule.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the kill schedule panicked")));
            (requests, events)
        });
        requests?;
        r.events = events?;
        r.wall = started.elapsed();
        if self.loss_method == LossMethod::Nftables {
            r.loss_dropped = self.topology.loss_dropped().ok();
        }
        Ok(r)
    }

    /// The request loop, in the client's namespace: records each request in
    /// `r` until all are made, Ctrl-C, or `abort`.
    fn requests(&self, opts: &LabOptions, started: Instant, r: &mut LabResult, abort: &AtomicBool) {
        let mut progress = Progress::new(opts.requests);
        let mut slow = 0;
        for i in 0..opts.requests {
            if stop_requested() {
                r.interrupted = true;
                break;
            }
            if abort.load(Ordering::Relaxed) {
                break;
            }
            if opts.rate > 0.0 {
                let due = Duration::from_secs_f64(i as f64 / opts.rate);
                while started.elapsed() < due && !stop_requested() {
                    thread::sleep((due - started.elapsed().min(due)).min(http::POLL_SLICE));
                }
            }
            let start = started.elapsed();
            let total = match http::get(self.targets[i % self.targets.len()], opts.timeout, &STOP) {
                Ok(resp) => {
                    slow += usize::from(resp.timing.total > report::STALL_THRESHOLDS[0]);
                    r.timings.push(resp.timing);
                    bump(&mut r.per_real, resp.body.trim().to_owned());
                    Some(resp.timing.total)
                }
                Err(http::FailKind::Cancelled) => {
                    r.interrupted = true;
                    break;
                }
                Err(kind) => {
                    bump(&mut r.errors, kind.label());
                    None
                }
            };
            r.samples.push(Sample { start, total });
            r.completed = i + 1;
            progress.update(r.completed, r.error_count(), slow);
        }
        progress.finish();
    }

    /// Leaves namespaces, loss and daemon in place (the HTTP servers end with
    /// this process) and returns the commands that remove them.
    pub(crate) fn keep(self) -> String {
        let Self { daemon, servers, topology, tmp, .. } = self;
        drop(servers);
        let mut cleanup = Vec::new();
        if let Some(child) = daemon.and_then(ChildGuard::into_inner) {
            cleanup.push(format!("kill {}", child.id()));
        }
        cleanup.extend(topology.keep().into_iter().map(|ns| format!("ip netns del {ns}")));
        cleanup.push(format!("rm -r {}", tmp.keep().display()));
        cleanup.join("; ")
    }

    /// How to reach the lab while it is kept: namespace names and addresses.
    fn describe(&self) -> String {
        let t = &self.topology;
        let mut s = format!(
            "client: ip netns exec {} ...   ({})\nbalancer: ip netns exec {} ...   (VIP {}:{HTTP_PORT}, local addresses {:?})\n",
            t.ns_client().name(),
            t.client_addr(),
            t.ns_lb().name(),
            t.vip(),
            t.laddrs()
        );
        for (ns, addr) in t.ns_reals().iter().zip(t.real_addrs()) {
            s.push_str(&format!("real: ip netns exec {} ...   ({addr}:{HTTP_PORT})\n", ns.name()));
        }
        if let Some(d) = &self.daemon {
            s.push_str(&format!("daemon pid {}, files in {}\n", d.pid(), self.tmp.path().display()));
        }
        s
    }
}

/// Prints results as the table, or as JSON.
pub(crate) fn print_results(results: &[LabResult], json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(&report::json(results)).unwrap_or_default());
    } else {
        print!("{}{}", report::table(results), report::timelines(results));
    }
}

/// The `--svg` document and what it shows: the requests over time when reals
/// were killed, else the latency CDFs.
fn plot_of(results: &[LabResult], opts: &LabOptions) -> (String, &'static str) {
    if opts.events.is_empty() {
        let totals: Vec<Vec<f64>> = results.iter().map(LabResult::totals_ms).collect();
        let series: Vec<(&str, &[f64])> =
            results.iter().zip(&totals).map(|(r, t)| (r.label.as_str(), t.as_slice())).collect();
        return (plot::cdf_svg(&series, &opts.plot_title()), "latency CDF plot");
    }
    let series: Vec<plot::Series<'_>> = results
        .iter()
        .map(|r| plot::Series {
            label: &r.label,
            points: r
                .samples
                .iter()
                .map(|s| (s.start.as_secs_f64(), s.total.map(|t| t.as_secs_f64() * 1e3)))
                .collect(),
            events: r.events.iter().map(|e| (e.at.as_secs_f64(), e.to_string())).collect(),
        })
        .collect();
    let title = format!("rvs lab: request times, {}", opts.kill_mode.name());
    (plot::timeline_svg(&series, &title), "request timeline plot")
}

/// `rvs lab ARGS...` (the arguments after `lab`); returns the exit code.
pub(crate) fn main(args: &[String]) -> anyhow::Result<i32> {
    let opts = match parse_args(args)? {
        Invocation::Help => {
            print!("{USAGE}");
            return Ok(0);
        }
        Invocation::Cleanup => {
            let n = rvs_netns::cleanup_orphans().context("removing namespaces of ended runs")?;
            let d = TempDir::remove_orphans(TEMP_PREFIX);
            println!("removed {n} namespaces and {d} temp dirs");
            return Ok(0);
        }
        Invocation::Run(o) => o,
    };
    install_stop_handlers().context("installing signal handlers")?;
    let mut results = Vec::new();
    let mut kept = None;
    for run in opts.runs() {
        let lab = Lab::start(&run)?;
        if !opts.json {
            eprintln!("{}: {} sequential requests to {:?} ...", run.label(), run.requests, lab.targets);
        }
        let result = lab.measure(&run)?;
        results.push(result);
        if opts.keep {
            kept = Some(lab);
        }
        if stop_requested() {
            break;
        }
    }
    print_results(&results, opts.json);
    if let Some(path) = &opts.svg {
        let (svg, what) = plot_of(&results, &opts);
        fs::write(path, svg).with_context(|| format!("writing the plot to {}", path.display()))?;
        eprintln!("{what}: {}", path.display());
    }
    let interrupted = results.iter().any(|r| r.interrupted);
    if let Some(lab) = kept
        && !stop_requested()
    {
        eprint!("\nThe lab stays up:\n{}", lab.describe());
        eprintln!("The reals' HTTP servers run in this process: press Ctrl-C to stop them and exit.");
        while !stop_requested() {
            thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "Left in place; to remove: {}\n(`rvs lab --cleanup` also finds the namespaces)",
            lab.keep()
        );
    }
    Ok(if interrupted { 130 } else { 0 })
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        std::net::Ipv4Addr::new(a, b, c, d).into()
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn parse(s: &str) -> anyhow::Result<LabOptions> {
        match parse_args(&args(s))? {
            Invocation::Run(o) => Ok(o),
            other => bail!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_seed_experiment() {
        let o = parse("").unwrap();
        assert_eq!(o, LabOptions::default());
        assert_eq!((o.requests, o.reals, o.timeout), (2000, 3, Duration::from_secs(30)));
    }

    #[test]
    fn parses_every_option_both_spellings() {
        let o = parse("-n 50 --loss 5 --reals 4 --timeout 2.5 --keep --json --direct").unwrap();
        assert_eq!(
            o,
            LabOptions {
                requests: 50,
                loss_pct: 5.0,
                reals: 4,
                timeout: Duration::from_millis(2500),
                keep: true,
                json: true,
                direct: true,
                ..Default::default()
            }
        );
        let o = parse("--requests=7 --loss=0.5 --rate 100").unwrap();
        assert_eq!((o.requests, o.loss_pct, o.rate), (7, 0.5, 100.0));
        assert_eq!(parse_args(&args("--json -h")).unwrap(), Invocation::Help);
        assert_eq!(parse_args(&args("--cleanup")).unwrap(), Invocation::Cleanup);
    }

    #[test]
    fn parses_synproxy_syn_loss_and_svg() {
        let o = parse("").unwrap();
        assert!(o.synproxy && !o.compare);
        assert_eq!((o.syn_loss_pct, o.retransmit_mode, o.svg), (0.0, RetransmitMode::Adaptive, None));
        let o = parse("--synproxy off --syn-loss 2.5 --svg /tmp/x.svg").unwrap();
        assert!(!o.synproxy);
        assert_eq!((o.syn_loss_pct, o.loss_pct), (2.5, 0.0));
        assert_eq!(o.svg.as_deref(), Some(Path::new("/tmp/x.svg")));
        assert!(parse("--synproxy=on").unwrap().synproxy);
        let o = parse("--loss 1 --syn-loss=3").unwrap();
        assert_eq!((o.loss_pct, o.syn_loss_pct), (1.0, 3.0));
    }

    #[test]
    fn parses_kills_and_revivals_in_time_order() {
        let o =
            parse("--reals 3 --revive 2@3 --kill-real 2@1.5 --kill-real=3@2 --kill-mode silence").unwrap();
        let at = |ms| Duration::from_millis(ms);
        assert_eq!(
            o.events,
            [
                RealEvent { real: 1, at: at(1500), action: Action::Kill },
                RealEvent { real: 2, at: at(2000), action: Action::Kill },
                RealEvent { real: 1, at: at(3000), action: Action::Revive },
            ]
        );
        assert_eq!(o.kill_mode, KillMode::Silence);
        assert_eq!(parse("--kill-real 1@0").unwrap().kill_mode, KillMode::Stop);
        for bad in [
            "--kill-real 4@1",
            "--kill-real 0@1",
            "--kill-real 1",
            "--revive 1@1",
            "--kill-real 1@1 --kill-real 1@2",
            "--kill-real 1@2 --revive 1@1",
            "--kill-mode",
            "--kill-mode down",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn compare_defaults_to_syn_loss_and_a_plot() {
        let o = parse("--compare -n 200").unwrap();
        assert!(o.compare && o.synproxy);
        assert_eq!((o.requests, o.loss_pct, o.syn_loss_pct), (200, 0.0, 5.0));
        assert_eq!(o.svg.as_deref(), Some(Path::new("rvs-lab-compare.svg")));
        // A loss option given replaces the default, even at 0.
        let o = parse("--compare --syn-loss 0 --svg out.svg").unwrap();
        assert_eq!((o.loss_pct, o.syn_loss_pct), (0.0, 0.0));
        assert_eq!(o.svg.as_deref(), Some(Path::new("out.svg")));
        let o = parse("--loss 2 --compare").unwrap();
        assert_eq!((o.loss_pct, o.syn_loss_pct), (2.0, 0.0));

        let runs = parse("--compare --syn-loss 5").unwrap().runs();
        let modes: Vec<_> = runs.iter().map(|r| r.retransmit_mode).collect();
        assert_eq!(modes, [RetransmitMode::Classic, RetransmitMode::Adaptive]);
        let labels: Vec<_> = runs.iter().map(LabOptions::label).collect();
        assert_eq!(labels, ["rvs synproxy classic, SYN loss 5%", "rvs synproxy adaptive, SYN loss 5%"]);
        assert!(runs.iter().all(|r| r.syn_loss_pct == 5.0 && r.synproxy));
        assert_eq!(
            runs[0].plot_title(),
            "rvs lab: 2000 sequential requests per mode, 5% SYN/SYN-ACK loss between balancer and reals"
        );

        let single = parse("--synproxy off --loss 1").unwrap();
        assert_eq!(single.runs(), std::slice::from_ref(&single));
        assert_eq!(single.label(), "rvs, loss 1%");
        assert_eq!(parse("--direct").unwrap().label(), "direct, loss 0%");
        assert_eq!(
            single.plot_title(),
            "rvs lab: 2000 sequential requests, 1% loss between balancer and reals"
        );
    }

    #[test]
    fn parses_families_into_configs_of_that_family() {
        assert_eq!(parse("").unwrap().family, Family::V4);
        assert_eq!(parse("--ipv6 --direct").unwrap().family, Family::V6);
        let o = parse("--nat64 --synproxy off").unwrap();
        assert_eq!((o.family, o.label().as_str()), (Family::Nat64, "rvs, loss 0%, nat64"));
        let runs = parse("--compare --ipv6").unwrap().runs();
        assert!(runs.iter().all(|r| r.family == Family::V6));
        for bad in ["--ipv6 --nat64", "--nat64 --direct", "--ipv6=1"] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        use rvs_control::config::Config;
        let plan = |a, b, c, d| std::net::Ipv4Addr::new(a, b, c, d);
        for family in [Family::V6, Family::Nat64] {
            let cfg = daemon_config(
                Path::new("/tmp/x/rvs.sock"),
                family.client_side(plan(10, 77, 2, 1)),
                &[family.backend_side(plan(10, 77, 3, 1))],
                &[family.backend_side(plan(10, 77, 1, 11))],
                &DaemonSettings::of(&LabOptions::default(), LossMethod::None),
            );
            assert!(cfg.contains("vip = \"[fd10:77:2::1]:80\""), "{cfg}");
            let real = if family == Family::V6 { "[fd10:77:1::11]:80" } else { "10.77.1.11:80" };
            assert!(cfg.contains(&format!("addr = \"{real}\"")), "{cfg}");
            // Whether a NAT64 service is accepted is the engine's to say
            // (the lab test runs one); the IPv6 one is a plain service.
            if family == Family::V6 {
                Config::parse(&cfg).unwrap_or_else(|e| panic!("{e}\n{cfg}"));
            }
        }
    }

    #[test]
    fn rejects_bad_options() {
        for bad in [
            "-n",
            "-n 0",
            "-n many",
            "--loss 100",
            "--loss -1",
            "--reals 1",
            "--timeout 0",
            "--timeout -1",
            "--timeout nan",
            "--loss nan",
            "--frobnicate",
            "--keep=yes",
            "extra",
            "--syn-loss 100",
            "--syn-loss -0.5",
            "--syn-loss x",
            "--synproxy",
            "--synproxy yes",
            "--synproxy ON",
            "--svg",
            "--svg=",
            "--compare=1",
            "--compare --direct",
            "--compare --synproxy off",
            "--compare --keep",
            "--rate -1",
            "--rate nan",
            "--rate",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        let e = parse("--loss").unwrap_err().to_string();
        assert!(e.contains("--loss needs a value"), "{e}");
    }

    #[test]
    fn loss_text_names_the_method() {
        let mut r = LabResult::new("x".into(), 1, 0.0, LossMethod::None);
        assert_eq!(r.loss_text(), "none");
        r.loss_pct = 5.0;
        r.loss_method = LossMethod::Nftables;
        r.loss_dropped = Some(12);
        assert_eq!(r.loss_text(), "5% nftables, 12 dropped");
        r.syn_loss_pct = 2.0;
        assert_eq!(r.loss_text(), "5% + 2% SYN/SYN-ACK nftables, 12 dropped");
        r.loss_pct = 0.0;
        r.loss_method = LossMethod::Daemon;
        r.loss_dropped = None;
        assert_eq!(r.loss_text(), "2% SYN/SYN-ACK rvs fault injection");
    }

    /// The lab's config for `args`, with the loss made as `method`.
    fn config_for(args: &str, method: LossMethod) -> String {
        let ip = |d| v4(10, 77, 1, d);
        let runs = parse(args).unwrap().runs();
        assert_eq!(runs.len(), 1);
        daemon_config(
            Path::new("/tmp/x/rvs.sock"),
            v4(10, 77, 2, 1),
            &[v4(10, 77, 3, 1), v4(10, 77, 3, 2)],
            &[ip(11), ip(12)],
            &DaemonSettings::of(&runs[0], method),
        )
    }

    /// Both configs of `--compare ARGS`.
    fn compare_configs(args: &str, method: LossMethod) -> Vec<String> {
        let runs = parse(&format!("--compare {args}")).unwrap().runs();
        runs.iter()
            .map(|r| {
                daemon_config(
                    Path::new("/tmp/x/rvs.sock"),
                    v4(10, 77, 2, 1),
                    &[v4(10, 77, 3, 1)],
                    &[v4(10, 77, 1, 11)],
                    &DaemonSettings::of(r, method),
                )
            })
            .collect()
    }

    #[test]
    fn daemon_config_has_the_agreed_shape() {
        assert_eq!(
            config_for("--loss 2.5", LossMethod::Daemon),
            r#"[daemon]
control_socket = "/tmp/x/rvs.sock"
secret_file = "/tmp/x/secret"

[driver]
tun_name = "rvs0"
fault_loss_pct = 2.5
fault_syn_loss_pct = 0.0

[synproxy]
retransmit_mode = "adaptive"

[[service]]
proto = "tcp"
vip = "10.77.2.1:80"
sched = "wrr"
laddrs = ["10.77.3.1", "10.77.3.2"]
synproxy = true

[[service.real]]
addr = "10.77.1.11:80"
weight = 1

[[service.real]]
addr = "10.77.1.12:80"
weight = 1
"#
        );
        // nftables makes the loss: the daemon injects none.
        let cfg = config_for("--loss 2.5 --syn-loss 5", LossMethod::Nftables);
        assert!(cfg.contains("fault_loss_pct = 0.0\nfault_syn_loss_pct = 0.0\n"), "{cfg}");
        let cfg = config_for("--loss 2.5 --syn-loss 5", LossMethod::Daemon);
        assert!(cfg.contains("fault_loss_pct = 2.5\nfault_syn_loss_pct = 5.0\n"), "{cfg}");
        let cfg = config_for("--synproxy off", LossMethod::None);
        assert!(cfg.contains("laddrs = [\"10.77.3.1\", \"10.77.3.2\"]\nsynproxy = false\n"), "{cfg}");
    }

    #[test]
    fn compare_configs_differ_only_in_the_retransmit_mode() {
        let golden = |mode: &str, syn_loss: &str| {
            format!(
                r#"[daemon]
control_socket = "/tmp/x/rvs.sock"
secret_file = "/tmp/x/secret"

[driver]
tun_name = "rvs0"
fault_loss_pct = 0.0
fault_syn_loss_pct = {syn_loss}

[synproxy]
retransmit_mode = "{mode}"

[[service]]
proto = "tcp"
vip = "10.77.2.1:80"
sched = "wrr"
laddrs = ["10.77.3.1"]
synproxy = true

[[service.real]]
addr = "10.77.1.11:80"
weight = 1
"#
            )
        };
        assert_eq!(
            compare_configs("", LossMethod::Nftables),
            [golden("classic", "0.0"), golden("adaptive", "0.0")]
        );
        assert_eq!(
            compare_configs("", LossMethod::Daemon),
            [golden("classic", "5.0"), golden("adaptive", "5.0")]
        );
    }

    #[test]
    fn lab_configs_are_valid_daemon_configs() {
        use rvs_control::config::Config;
        for (args, method) in [
            ("--compare", LossMethod::Daemon),
            ("--synproxy off --loss 1", LossMethod::Daemon),
            ("--syn-loss 3", LossMethod::Nftables),
        ] {
            for run in parse(args).unwrap().runs() {
                let cfg = daemon_config(
                    Path::new("/tmp/x/rvs.sock"),
                    v4(10, 77, 2, 1),
                    &[v4(10, 77, 3, 1)],
                    &[v4(10, 77, 1, 11), v4(10, 77, 1, 12)],
                    &DaemonSettings::of(&run, method),
                );
                let c = Config::parse(&cfg).unwrap_or_else(|e| panic!("{e}\n{cfg}"));
                assert_eq!(c.synproxy.retransmit_mode, run.retransmit_mode);
                let service = c.model.services.values().next().unwrap();
                assert_eq!(service.config.synproxy, run.synproxy);
                let daemon_loss = method == LossMethod::Daemon;
                assert_eq!(c.driver.fault_loss_pct, if daemon_loss { run.loss_pct } else { 0.0 });
                assert_eq!(c.driver.fault_syn_loss_pct, if daemon_loss { run.syn_loss_pct } else { 0.0 });
            }
        }
    }

    fn namespaces_of(t: &Topology) -> Vec<rvs_netns::Netns> {
        [t.ns_client(), t.ns_lb()].into_iter().chain(t.ns_reals()).cloned().collect()
    }

    #[test]
    fn http_pieces_work_through_the_balancer_namespace() {
        if !rvs_netns::netns_tests_enabled("http_pieces_work_through_the_balancer_namespace") {
            return;
        }
        let t = Topology::build(&TopologySpec { reals: 2, laddrs: 1, net: LAB_NET, ..Default::default() })
            .unwrap();
        let addr = t.real_addrs()[1];
        let listener = t.ns_real(1).run_in(|| TcpListener::bind((addr, HTTP_PORT))).unwrap().unwrap();
        let server = Server::start(listener, "real2").unwrap();
        let no = AtomicBool::new(false);
        let bodies = t
            .ns_client()
            .run_in(|| {
                (0..20)
                    .map(|_| http::get(SocketAddr::new(addr.into(), HTTP_PORT), Duration::from_secs(5), &no))
                    .collect::<Vec<_>>()
            })
            .unwrap();
        for b in bodies {
            assert_eq!(b.unwrap().body, "real2\n");
        }
        assert_eq!(server.served(), 20);
        // The client has no route of its own to the reals' subnet: only via the balancer.
        let route = t.ns_client().run("ip", ["route", "get", &addr.to_string()]).unwrap();
        assert!(route.contains(&format!("via {}", t.lb_client_addr())), "{route}");
    }

    #[test]
    fn direct_lab_runs_end_to_end_and_cleans_up() {
        if !rvs_netns::netns_tests_enabled("direct_lab_runs_end_to_end_and_cleans_up") {
            return;
        }
        let opts = LabOptions {
            requests: 40,
            reals: 2,
            direct: true,
            timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let lab = Lab::start(&opts).unwrap();
        let names = namespaces_of(&lab.topology);
        let tmp = lab.tmp.path().to_owned();
        let r = lab.measure(&opts).unwrap();
        drop(lab);
        assert_eq!((r.completed, r.timings.len(), r.error_count()), (40, 40, 0), "{r:?}");
        assert_eq!(r.per_real.get("real1"), Some(&20));
        assert_eq!(r.per_real.get("real2"), Some(&20));
        assert!(!r.interrupted);
        assert!(names.iter().all(|n| !n.exists()), "left behind: {names:?}");
        assert!(!tmp.exists());
    }

    #[test]
    fn a_daemon_that_exits_early_is_reported_and_everything_is_removed() {
        if !rvs_netns::netns_tests_enabled("a_daemon_that_exits_early_is_reported_and_everything_is_removed")
        {
            return;
        }
        // A stand-in that fails the way a broken daemon does: at once, with a
        // complaint on stderr (`sh` cannot open a script named `run`).
        let opts = LabOptions { reals: 2, direct: true, ..Default::default() };
        let mut lab = Lab::start(&opts).unwrap();
        let names = namespaces_of(&lab.topology);
        let e = lab
            .start_daemon(Path::new("/bin/sh"), &DaemonSettings::of(&opts, LossMethod::None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("exited") && e.contains("before it was ready"), "{e}");
        assert!(e.contains("run"), "the daemon's stderr is shown: {e}");
        assert!(fs::read_to_string(lab.tmp.path().join("rvs.toml")).unwrap().contains("[[service.real]]"));
        drop(lab);
        assert!(names.iter().all(|n| !n.exists()), "left behind: {names:?}");
    }
}
