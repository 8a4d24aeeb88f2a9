//! `rvs run`: the daemon. It owns the TUN device and its routes, with the
//! xdp driver the XDP programs, their maps and the hand-over veth pairs, the
//! data-path workers, the control socket and the metrics endpoint, and acts
//! on SIGTERM/SIGINT (clean shutdown) and SIGHUP (reload).

mod control;
mod health;
mod metrics;
mod routes;
pub(crate) mod worker;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rvs_control::config::{Config, DriverKind};
use rvs_control::model::{Model, Op, apply_all};
use rvs_control::plane::{ControlPlane, DataPath, DataPathError};
use rvs_control::snapshot::Snapshot;
use rvs_core::Engine;

use crate::driver::netlink::Netlink;
use crate::driver::offload::FastPath;
use crate::driver::tun::Tun;
use crate::driver::xdp::{Handovers, NextHops, Steering, XskPort};
use crate::log::{self, error, info, warning};
use crate::os;
use routes::Routes;
use worker::{Clock, WorkerParts, WorkerSettings, Workers, XdpIo};

/// How often the control plane samples counters for `--rate`.
const RATE_INTERVAL: Duration = Duration::from_secs(2);

/// The data path as the control plane sees it: the workers' engines and the
/// kernel routes that bring VIPs and LIPs to the TUN device.
#[derive(Debug)]
pub(crate) struct Plumbing {
    workers: Workers,
    routes: Routes,
    /// The xdp driver's programs and maps.
    steering: Option<Steering>,
}

impl DataPath for Plumbing {
    fn install(&mut self, model: &Model) -> Result<(), DataPathError> {
        self.workers.install(model)
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), DataPathError> {
        self.workers.apply(ops)
    }

    fn snapshot(&mut self, with_conns: bool) -> Result<Snapshot, DataPathError> {
        self.workers.snapshot(with_conns)
    }
}

/// What the control socket and signal handling share.
#[derive(Debug)]
pub(crate) struct Daemon {
    plane: ControlPlane,
    dp: Plumbing,
    config: Config,
    config_path: PathBuf,
}

impl Daemon {
    /// Bring routes in line with the model after a change; returns what the
    /// operator should be told.
    fn sync_routes(&mut self) -> Vec<String> {
        let mut out = match self.dp.routes.sync(self.plane.model()) {
            Ok(warnings) => warnings,
            Err(e) => {
                error!("route update failed", error = e);
                vec![e.to_string()]
            }
        };
        if let Some(steering) = self.dp.steering.as_mut()
            && let Err(e) = steering.sync(self.plane.model())
        {
            error!("XDP map update failed", error = e);
            out.push(e.to_string());
        }
        out
    }

    /// Re-read the config file and apply it whole, or change nothing.
    pub(crate) fn reload(&mut self) -> Result<(), String> {
        let new = Config::load(&self.config_path).map_err(|e| e.to_string())?;
        self.config.check_reloadable(&new).map_err(|e| e.to_string())?;
        let level = log::Level::from_name(&new.daemon.log_level)
            .ok_or_else(|| format!("unknown log_level {:?}", new.daemon.log_level))?;
        self.plane.replace(new.model.clone(), &mut self.dp).map_err(|e| e.to_string())?;
        self.plane.set_health_settings(&new.health);
        log::set_level(level);
        let _ = self.sync_routes();
        self.config = new;
        Ok(())
    }
}

/// Run the daemon until SIGTERM or SIGINT.
pub(crate) fn run(config_path: &Path) -> anyhow::Result<()> {
    // Before any thread exists, so signals reach only the main loop below.
    os::block_signals();
    let config = Config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let level = log::Level::from_name(&config.daemon.log_level)
        .with_context(|| format!("unknown log_level {:?}", config.daemon.log_level))?;
    log::set_level(level);

    let clock = Clock::start();
    let seed = check_start(&config)?;
    let workers = config.driver.workers.max(1);

    // Before anything the daemon would have to undo: a missing program or
    // interface stops it here.
    let (xdp, mut steering, handovers) = match config.driver.kind {
        // One worker reads the one TUN queue; several need the programs to
        // pick each packet's queue.
        DriverKind::Tun => {
            let steering = (workers > 1).then(|| Steering::load_with(workers as u32, false)).transpose()?;
            ((0..workers).map(|_| None).collect(), steering, None)
        }
        DriverKind::Xdp => {
            let (io, steering, handovers, modes) = open_xdp(&config, clock)?;
            info!(
                "xdp driver attached",
                interfaces = modes.join(","),
                workers = workers,
                handover_pairs = handovers.pairs.len(),
                fast_path = if steering.fast_path_refused().is_none() { "on" } else { "off" }
            );
            tell_fast_path(&config, &steering, &modes);
            (io.into_iter().map(Some).collect::<Vec<_>>(), Some(steering), Some(handovers))
        }
    };
    let fast_path = xdp.iter().flatten().any(|x| x.fast.is_some());
    let engines = engines(&config, seed, &clock, fast_path)?;
    let tuns = Tun::create_queues(&config.driver.tun_name, workers)?;
    let (tun_name, tun_index) = (tuns[0].name().to_owned(), tuns[0].index());
    if let Some(steering) = steering.as_mut() {
        steering.sync(&config.model).context("BPF maps")?;
        if workers > 1 {
            steering.steer_tun(&tuns[0])?;
        }
    }
    let mut netlink = Netlink::open().context("netlink socket")?;
    netlink.link_up(tun_index).with_context(|| format!("set {tun_name} up"))?;
    os::sysctl("net/ipv4/ip_forward", "1")?;
    if let Err(e) = os::sysctl("net/ipv6/conf/all/forwarding", "1") {
        warning!("IPv6 forwarding not enabled", error = e);
    }
    let mut routes = Routes::new(netlink, tun_index);
    routes.sync(&config.model).context("routes")?;

    let settings = WorkerSettings::of(&config.driver);
    let cpus = &config.driver.cpus;
    let parts = engines
        .into_iter()
        .zip(tuns)
        .zip(xdp)
        .enumerate()
        .map(|(w, ((engine, tun), xdp))| WorkerParts { engine, tun, xdp, cpu: cpus.get(w).copied() })
        .collect();
    let (workers, joins) = worker::spawn(parts, config.model.clone(), &settings, clock)?;
    let socket = config.daemon.control_socket.clone();
    let metrics_addr = config.metrics.listen;
    let daemon = Arc::new(Mutex::new(Daemon {
        plane: ControlPlane::with_health(config.model.clone(), config.health.clone()),
        dp: Plumbing { workers: workers.clone(), routes, steering },
        config,
        config_path: config_path.to_owned(),
    }));

    let bound = control::serve(&socket, daemon.clone());
    let served = bound.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|()| match metrics_addr {
        Some(addr) => metrics::serve(addr, daemon.clone()),
        None => Ok(()),
    });
    let served =
        served.and_then(|()| health::Checker::start(daemon.clone(), clock).context("health checker"));
    if served.is_ok() {
        info!("rvs running", device = tun_name, control = socket.display(), pid = std::process::id());
        main_loop(&daemon);
    }
    // The checker and its probers stop before the data path does.
    let served = served.map(drop);

    // Shutdown: routes first (no new packets arrive), then the workers, whose
    // exit closes the TUN device and so removes it, then the hand-over pairs.
    let mut d = daemon.lock().unwrap_or_else(|p| p.into_inner());
    d.dp.routes.clear();
    if let Some(steering) = d.dp.steering.as_mut() {
        steering.stop();
    }
    workers.stop();
    drop(d);
    for join in joins {
        let _ = join.join();
    }
    drop(handovers);
    // Only our own socket: another daemon's is left alone.
    if bound.is_ok() {
        let _ = std::fs::remove_file(&socket);
    }
    info!("rvs stopped");
    served
}

/// The checks that need nothing set up yet: the CPUs and the model; and
/// the engines' secret.
fn check_start(config: &Config) -> anyhow::Result<[u8; 32]> {
    if !config.driver.cpus.is_empty() {
        let allowed = os::allowed_cpus().context("the CPUs rvs may run on")?;
        if let Some(c) = config.driver.cpus.iter().find(|c| !allowed.contains(c)) {
            anyhow::bail!("driver.cpus: CPU {c} is not available to rvs (allowed: {allowed:?})");
        }
    }
    let seed = os::load_or_create_secret(&config.daemon.secret_file).context("the engines' secret")?;
    config.model.validate().map_err(|e| anyhow::anyhow!("config: {e}"))?;
    Ok(seed)
}

/// One engine per worker, each with the whole configuration applied;
/// `fast_path`: the devices take established connections into the XDP program.
fn engines(config: &Config, seed: [u8; 32], clock: &Clock, fast_path: bool) -> anyhow::Result<Vec<Engine>> {
    let workers = config.driver.workers.max(1);
    // One secret for all: a SYN cookie any worker issued is valid at every other.
    let mut engines = Vec::with_capacity(workers);
    for index in 0..workers {
        let engine_config = rvs_core::EngineConfig {
            synproxy: config.synproxy.engine_config(),
            worker: rvs_core::WorkerSlice { index: index as u16, count: workers as u16 },
            fast_path,
            fast_path_after: config.driver.fast_path_after,
            ..config.engine.clone()
        };
        let mut engine = Engine::new(engine_config, seed, clock.now());
        apply_all(&mut engine, &Model::default().diff(&config.model))
            .map_err(|e| anyhow::anyhow!("config: {e}"))?;
        engines.push(engine);
    }
    Ok(engines)
}

/// The xdp driver's sockets (per worker, one per interface and one on its
/// hand-over pair), the hand-over pairs and the programs, attached.
/// With the fast path on, each worker gets its own handles on its maps
/// (worker 0 folds the program's own counters: they are the host's).
/// Also each interface's attach mode, for the log.
fn open_xdp(config: &Config, clock: Clock) -> anyhow::Result<(Vec<XdpIo>, Steering, Handovers, Vec<String>)> {
    let d = &config.driver;
    let workers = d.workers.max(1);
    let handovers = if Handovers::needed(workers, &d.interfaces) {
        Handovers::create(&d.tun_name, workers, d.interfaces.len()).context("hand-over veth pairs")?
    } else {
        Handovers::none(d.interfaces.len())
    };
    let mut ports = Vec::with_capacity(workers);
    for w in 0..workers {
        let mut own = d
            .interfaces
            .iter()
            .map(|name| XskPort::open(name, w as u32, d.batch))
            .collect::<std::io::Result<Vec<_>>>()?;
        if let Some(pair) = handovers.pairs.get(w) {
            own.push(XskPort::open(&pair.far_name, 0, d.batch)?);
        }
        ports.push(own);
    }
    let mut steering = Steering::load_with(workers as u32, d.fast_path)?;
    let modes = steering.attach_xdp(&ports, &handovers, d.xdp_mode)?;
    for port in ports.iter_mut().flatten() {
        port.native = modes.contains(&format!("{}:native", port.name));
    }
    let maps = steering.enable_fast_path(clock.monotonic_offset());
    let io = ports
        .into_iter()
        .enumerate()
        .map(|(w, ports)| {
            let fast = match &maps {
                Some(m) => {
                    let cookies = if w == 0 { Some(steering.syn_cookies().try_clone()?) } else { None };
                    Some(FastPath::new(m.try_clone()?, clock, cookies))
                }
                None => None,
            };
            Ok(XdpIo { ports, hops: NextHops::open().context("route and neighbour mirror")?, fast })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((io, steering, handovers, modes))
}

/// One line where the fast path is not what the config asked for, or runs
/// slower than it could: refused by the kernel, or on generic XDP.
fn tell_fast_path(config: &Config, steering: &Steering, modes: &[String]) {
    if !config.driver.fast_path {
        return;
    }
    match steering.fast_path_refused() {
        Some(why) => warning!("fast path off: every packet goes through the engine", reason = why),
        None => {
            let generic: Vec<&str> =
                modes.iter().filter(|m| m.ends_with(":generic")).map(String::as_str).collect();
            if !generic.is_empty() {
                info!("fast path on, generic XDP: slower than native", interfaces = generic.join(","));
            }
        }
    }
}

fn main_loop(daemon: &Mutex<Daemon>) {
    loop {
        match os::wait_signal(RATE_INTERVAL) {
            Some(libc::SIGHUP) => {
                let mut d = daemon.lock().unwrap_or_else(|p| p.into_inner());
                match d.reload() {
                    Ok(()) => info!("config reloaded", path = d.config_path.display()),
                    Err(e) => error!("reload rejected; nothing changed", error = e),
                }
            }
            Some(sig) => {
                info!("shutting down", signal = sig);
                return;
            }
            None => {
                let mut d = daemon.lock().unwrap_or_else(|p| p.into_inner());
                // Interfaces come and go; ARP answers follow them.
                let _ = d.sync_routes();
                match d.dp.snapshot(false) {
                    Ok(snap) => d.plane.sample_rates(&snap),
                    Err(e) => warning!("rate sample failed", error = e),
                }
            }
        }
    }
}
