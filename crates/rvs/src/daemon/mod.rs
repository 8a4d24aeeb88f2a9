//! `rvs run`: the daemon. It owns the TUN device and its routes, with the
//! xdp driver the XDP program and its maps, one data-path worker, the control
//! socket and the metrics endpoint, and acts on SIGTERM/SIGINT (clean
//! shutdown) and SIGHUP (reload).

mod control;
mod metrics;
mod routes;
pub(crate) mod worker;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rvs_control::config::{Config, DriverKind};
use rvs_control::model::{Model, Op, apply_all};
use rvs_control::plane::{ControlPlane, DataPath};
use rvs_control::snapshot::Snapshot;
use rvs_core::Engine;

use crate::driver::netlink::Netlink;
use crate::driver::tun::Tun;
use crate::driver::xdp::{NextHops, Steering, XskPort};
use crate::log::{self, error, info, warning};
use crate::os;
use routes::Routes;
use worker::{Clock, WorkerHandle, WorkerSettings, XdpIo};

/// How often the control plane samples counters for `--rate`.
const RATE_INTERVAL: Duration = Duration::from_secs(2);

/// The data path as the control plane sees it: the worker's engine and the
/// kernel routes that bring VIPs and LIPs to the TUN device.
#[derive(Debug)]
pub(crate) struct Plumbing {
    worker: WorkerHandle,
    routes: Routes,
    /// The xdp driver's program and maps.
    steering: Option<Steering>,
}

impl DataPath for Plumbing {
    fn apply(&mut self, ops: &[Op]) -> Result<(), String> {
        self.worker.apply(ops.to_vec())
    }

    fn snapshot(&mut self, with_conns: bool) -> Result<Snapshot, String> {
        self.worker.snapshot(with_conns)
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
        self.plane.replace(new.model.clone(), &mut self.dp)?;
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
    let mut seed = [0u8; 32];
    os::random_bytes(&mut seed).context("seed from the kernel")?;
    let engine_config =
        rvs_core::EngineConfig { synproxy: config.synproxy.engine_config(), ..config.engine.clone() };
    let mut engine = Engine::new(engine_config, seed, clock.now());
    config.model.validate().map_err(|e| anyhow::anyhow!("config: {e}"))?;
    apply_all(&mut engine, &Model::default().diff(&config.model))
        .map_err(|e| anyhow::anyhow!("config: {e}"))?;

    // Before anything the daemon would have to undo: a missing program or
    // interface stops it here.
    let (xdp, steering) = match config.driver.kind {
        DriverKind::Tun => (None, None),
        DriverKind::Xdp => {
            let (io, mut steering) = open_xdp(&config)?;
            steering.sync(&config.model).context("XDP maps")?;
            info!(
                "xdp driver attached",
                interfaces = config.driver.interfaces.join(","),
                mode = config.driver.xdp_mode.name()
            );
            (Some(io), Some(steering))
        }
    };
    let tun = Tun::create(&config.driver.tun_name)?;
    let mut netlink = Netlink::open().context("netlink socket")?;
    netlink.link_up(tun.index()).with_context(|| format!("set {} up", tun.name()))?;
    os::sysctl("net/ipv4/ip_forward", "1")?;
    if let Err(e) = os::sysctl("net/ipv6/conf/all/forwarding", "1") {
        warning!("IPv6 forwarding not enabled", error = e);
    }
    let mut routes = Routes::new(netlink, tun.index());
    routes.sync(&config.model).context("routes")?;
    let tun_name = tun.name().to_owned();

    let settings = WorkerSettings {
        batch: config.driver.batch,
        fault_loss: config.driver.fault_loss_pct / 100.0,
        fault_syn_loss: config.driver.fault_syn_loss_pct / 100.0,
    };
    let (worker, join) = worker::spawn(engine, tun, xdp, settings, clock)?;
    let socket = config.daemon.control_socket.clone();
    let metrics_addr = config.metrics.listen;
    let daemon = Arc::new(Mutex::new(Daemon {
        plane: ControlPlane::new(config.model.clone()),
        dp: Plumbing { worker: worker.clone(), routes, steering },
        config,
        config_path: config_path.to_owned(),
    }));

    let bound = control::serve(&socket, daemon.clone());
    let served = bound.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|()| match metrics_addr {
        Some(addr) => metrics::serve(addr, worker.clone()),
        None => Ok(()),
    });
    if served.is_ok() {
        info!("rvs running", device = tun_name, control = socket.display(), pid = std::process::id());
        main_loop(&daemon);
    }

    // Shutdown: routes first (no new packets arrive), then the worker, whose
    // exit closes the TUN device and so removes it.
    let mut d = daemon.lock().unwrap_or_else(|p| p.into_inner());
    d.dp.routes.clear();
    if let Some(steering) = d.dp.steering.as_mut() {
        steering.stop();
    }
    worker.stop();
    drop(d);
    let _ = join.join();
    // Only our own socket: another daemon's is left alone.
    if bound.is_ok() {
        let _ = std::fs::remove_file(&socket);
    }
    info!("rvs stopped");
    served
}

/// The xdp driver's sockets (one per interface) and its program, attached.
fn open_xdp(config: &Config) -> anyhow::Result<(XdpIo, Steering)> {
    let d = &config.driver;
    let ports =
        d.interfaces.iter().map(|name| XskPort::open(name, d.batch)).collect::<std::io::Result<Vec<_>>>()?;
    let steering = Steering::attach(&ports, d.xdp_mode)?;
    let hops = NextHops::new(Netlink::open().context("netlink socket")?);
    Ok((XdpIo { ports, hops }, steering))
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
