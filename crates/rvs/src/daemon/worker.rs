//! The data-path worker: one thread that runs the one loop
//! ([`rvs_core::io::Driver`]) over an engine and the worker's devices
//! ([`Devices`]: a TUN queue and, with the xdp driver, AF_XDP sockets),
//! behind the fault injector the lab turns on.
//!
//! With the xdp driver, packets come from the sockets and from the TUN
//! device (what the kernel still routes to rvs: the host's own traffic to a
//! VIP, fragments the XDP program passes).
//!
//! Several workers run side by side, each with its own engine (connection
//! table, timers, port slice), TUN queue and sockets; they share nothing on
//! the packet path.
//!
//! The control plane reaches them only through [`Workers`]. Configuration is
//! a [`ConfigCell`]: the control plane swaps in a new model and bumps its
//! generation; each worker notices after each turn of its loop and moves
//! its engine to that model whole. Snapshots and counter resets travel over
//! a channel. An eventfd wakes a worker out of its devices' wait. Nothing on
//! the packet path takes a lock or allocates.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use rvs_control::config::DriverSettings;
use rvs_control::model::{Model, Op, apply_all};
use rvs_control::plane::DataPathError;
use rvs_control::snapshot::Snapshot;
use rvs_core::io::{Device, Driver, FaultInjector, Marked};
use rvs_core::{Engine, Event, Instant, Proto};

use crate::driver::devices::{BUF_LEN, Devices, Rx, Wake};
pub(crate) use crate::driver::devices::{Clock, XdpIo};
use crate::driver::tun::Tun;
use crate::log::warning;

/// How often the XDP program's SYN-ACK templates and cookie keys are
/// compared with the engine's (keys change every 256 s; the program holds
/// the next period's already).
const COOKIE_SYNC: Duration = Duration::from_secs(1);

/// How long the control plane waits for the worker to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

enum Request {
    /// Ops that are actions, not state (zero counters, reset a real's
    /// connections, seed an RTT); the engine's answer comes back.
    Apply(Vec<Op>, mpsc::SyncSender<Result<(), rvs_core::ConfigError>>),
    Snapshot(bool, mpsc::SyncSender<Snapshot>),
    Stop,
}

/// The configuration all workers run, swapped whole by the control plane.
#[derive(Debug)]
pub(crate) struct ConfigCell {
    /// Bumped after every swap; a worker compares it with its own on each
    /// turn of its loop, an atomic load and no lock.
    generation: AtomicU64,
    model: Mutex<Arc<Model>>,
}

impl ConfigCell {
    pub(crate) fn new(model: Model) -> Self {
        Self { generation: AtomicU64::new(0), model: Mutex::new(Arc::new(model)) }
    }

    fn current(&self) -> (u64, Arc<Model>) {
        let model = self.model.lock().unwrap_or_else(|p| p.into_inner());
        // Read under the lock: the model and its generation belong together.
        (self.generation.load(Ordering::Acquire), model.clone())
    }

    fn swap(&self, model: Model) -> u64 {
        let mut slot = self.model.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Arc::new(model);
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// How a worker tells the health checker at once that a real left a
/// handshake or flow unanswered or refused, so the checker reads the
/// counts now rather than at its next poll.
#[derive(Debug, Default)]
pub(crate) struct Nudge {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl Nudge {
    fn ring(&self) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_one();
    }

    /// Wait until rung or `timeout` passes; true if rung.
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (mut pending, _) =
            self.cv.wait_timeout_while(pending, timeout, |p| !*p).unwrap_or_else(|p| p.into_inner());
        core::mem::take(&mut *pending)
    }
}

/// What a worker reports of the configuration it runs.
#[derive(Debug, Default)]
struct Installed {
    generation: AtomicU64,
    /// Why the last model could not be installed (a bug: models are validated).
    error: Mutex<Option<rvs_core::ConfigError>>,
}

/// The control plane's side of one worker.
#[derive(Debug, Clone)]
struct WorkerHandle {
    tx: mpsc::Sender<Request>,
    wake: Arc<Wake>,
    installed: Arc<Installed>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Request")
    }
}

impl WorkerHandle {
    /// Send a request and wait for its reply; `worker` is this worker's index, for the error.
    fn call<T>(
        &self,
        worker: usize,
        make: impl FnOnce(mpsc::SyncSender<T>) -> Request,
    ) -> Result<T, DataPathError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx.send(make(tx)).map_err(|_| DataPathError::Stopped { worker })?;
        self.wake.ring();
        rx.recv_timeout(REPLY_TIMEOUT).map_err(|_| DataPathError::NoAnswer { worker })
    }
}

/// The control plane's side of all workers.
#[derive(Debug, Clone)]
pub(crate) struct Workers {
    handles: Vec<WorkerHandle>,
    config: Arc<ConfigCell>,
    nudge: Arc<Nudge>,
}

impl Workers {
    /// Swap in `model` and wait until every worker runs it.
    pub(crate) fn install(&self, model: &Model) -> Result<(), DataPathError> {
        let generation = self.config.swap(model.clone());
        for h in &self.handles {
            h.wake.ring();
        }
        let deadline = std::time::Instant::now() + REPLY_TIMEOUT;
        for (i, h) in self.handles.iter().enumerate() {
            while h.installed.generation.load(Ordering::Acquire) < generation {
                if std::time::Instant::now() > deadline {
                    return Err(DataPathError::NotInstalled { worker: i });
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            if let Some(error) = h.installed.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(DataPathError::Refused { worker: i, error });
            }
        }
        Ok(())
    }

    /// Apply `ops` to every worker's engine; returns once each has.
    pub(crate) fn apply(&self, ops: &[Op]) -> Result<(), DataPathError> {
        self.handles.iter().enumerate().try_for_each(|(worker, h)| {
            h.call(worker, |tx| Request::Apply(ops.to_vec(), tx))?
                .map_err(|error| DataPathError::Refused { worker, error })
        })
    }

    /// Every worker's snapshot, merged.
    pub(crate) fn snapshot(&self, with_conns: bool) -> Result<Snapshot, DataPathError> {
        let mut all: Option<Snapshot> = None;
        for (i, h) in self.handles.iter().enumerate() {
            let s = h.call(i, |tx| Request::Snapshot(with_conns, tx))?;
            match all.as_mut() {
                Some(a) => a.merge(s),
                None => all = Some(s),
            }
        }
        all.ok_or(DataPathError::NoWorker)
    }

    /// What the workers ring when a real fails a handshake or flow.
    pub(crate) fn nudge(&self) -> Arc<Nudge> {
        self.nudge.clone()
    }

    /// Ask every worker to stop.
    pub(crate) fn stop(&self) {
        for h in &self.handles {
            let _ = h.tx.send(Request::Stop);
            h.wake.ring();
        }
    }
}

/// What the worker needs besides its engine.
#[derive(Debug)]
pub(crate) struct WorkerSettings {
    /// Packets read per batch before they are written.
    pub(crate) batch: usize,
    /// Share of real-side packets the fault injector drops, 0.0..=1.0.
    pub(crate) fault_loss: f64,
    /// Share of real-side SYNs and SYN-ACKs it drops besides, 0.0..=1.0.
    pub(crate) fault_syn_loss: f64,
}

impl WorkerSettings {
    /// The settings of the `[driver]` section (loss given in percent there).
    pub(crate) fn of(driver: &DriverSettings) -> Self {
        Self {
            batch: driver.batch,
            fault_loss: driver.fault_loss_pct / 100.0,
            fault_syn_loss: driver.fault_syn_loss_pct / 100.0,
        }
    }
}

/// One worker's engine and devices.
#[derive(Debug)]
pub(crate) struct WorkerParts {
    pub(crate) engine: Engine,
    pub(crate) tun: Tun,
    pub(crate) xdp: Option<XdpIo>,
    /// The CPU to pin the thread to, if any.
    pub(crate) cpu: Option<usize>,
}

/// Start one thread per entry of `parts`, all running `model` (already
/// installed in their engines).
pub(crate) fn spawn(
    parts: Vec<WorkerParts>,
    model: Model,
    settings: &WorkerSettings,
    clock: Clock,
) -> io::Result<(Workers, Vec<std::thread::JoinHandle<()>>)> {
    let config = Arc::new(ConfigCell::new(model));
    let nudge = Arc::new(Nudge::default());
    let (_, model) = config.current();
    let mut handles = Vec::new();
    let mut joins = Vec::new();
    for (index, WorkerParts { engine, tun, xdp, cpu }) in parts.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel();
        let wake = Arc::new(Wake::new()?);
        let installed = Arc::new(Installed::default());
        handles.push(WorkerHandle { tx, wake: wake.clone(), installed: installed.clone() });
        let mut rng_seed = [0u8; 8];
        crate::os::random_bytes(&mut rng_seed)?;
        let batch = settings.batch.clamp(1, 1024);
        let devices = Devices::new(tun, xdp, wake, clock, batch);
        let (loss, syn_loss) = (settings.fault_loss, settings.fault_syn_loss);
        let (config, model, nudge) = (config.clone(), model.clone(), nudge.clone());
        let run = move || {
            // Checked against the allowed CPUs at start; a failure here
            // leaves the thread where the scheduler puts it.
            if let Some(cpu) = cpu
                && let Err(e) = crate::os::pin_to_cpu(cpu)
            {
                warning!("worker not pinned", worker = index, cpu = cpu, error = e);
            }
            // Built here: frames lent by the sockets stay on this thread.
            let mut device = FaultInjector::new(devices, loss, syn_loss, u64::from_ne_bytes(rng_seed));
            device.set_laddrs(engine.services().flat_map(|s| s.config.laddrs.iter().copied()));
            let worker = Worker {
                engine,
                device,
                driver: Driver::new(batch, BUF_LEN),
                rx,
                config,
                model,
                installed,
                nudge,
                passive_failures: 0,
                cookies_due: None,
                stopping: false,
            };
            worker.run();
        };
        joins.push(std::thread::Builder::new().name(format!("rvs-worker-{index}")).spawn(run)?);
    }
    Ok((Workers { handles, config, nudge }, joins))
}

struct Worker {
    engine: Engine,
    device: FaultInjector<Devices>,
    driver: Driver<Marked<Rx>>,
    rx: mpsc::Receiver<Request>,
    config: Arc<ConfigCell>,
    /// The model the engine runs, and its generation in `installed`.
    model: Arc<Model>,
    installed: Arc<Installed>,
    nudge: Arc<Nudge>,
    /// The engine's passive failures when the checker was last nudged.
    passive_failures: u64,
    /// When the XDP program's SYN cookies are next brought in line with the engine's.
    cookies_due: Option<Instant>,
    stopping: bool,
}

impl Worker {
    fn run(mut self) {
        // Before the first packet: the program answers SYNs from the start.
        self.sync_syn_cookies();
        while !self.stopping {
            self.driver.poll(&mut self.engine, &mut self.device);
            self.serve_requests();
            self.take_config();
            self.sync_syn_cookies();
            self.tell_events();
            let failures = self.engine.stats().passive_failures;
            if failures != self.passive_failures {
                self.passive_failures = failures;
                self.nudge.ring();
            }
        }
        // The connections still open end on both sides rather than hang.
        self.driver.close(&mut self.engine, &mut self.device);
    }

    /// Log what the engine says the operator should know.
    fn tell_events(&mut self) {
        while let Some(event) = self.engine.poll_event() {
            match event {
                Event::PortsExhausted { proto, vip, real, dropped } => {
                    let laddrs: Vec<String> = self
                        .engine
                        .service(proto, vip)
                        .map(|s| s.config.laddrs.clone())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|l| {
                            let pool = self
                                .engine
                                .pools()
                                .get(proto, l, real)
                                .map(|id| self.engine.pools().pool(id));
                            match pool {
                                Some(p) => format!("{l} ({} in use, {} resting)", p.in_use(), p.resting()),
                                None => l.to_string(),
                            }
                        })
                        .collect();
                    warning!(
                        "local ports exhausted: new connections dropped (no_local_port)",
                        service = format!("{}/{vip}", proto.name()),
                        real = real,
                        laddrs = laddrs.join(", "),
                        dropped = dropped,
                        hint = format!(
                            "add local addresses (rvs adm -P -{} {vip} -z ADDR, or laddrs in the config) or reals",
                            if proto == Proto::Tcp { "t" } else { "u" }
                        )
                    );
                }
            }
        }
    }

    fn serve_requests(&mut self) {
        while let Ok(req) = self.rx.try_recv() {
            match req {
                Request::Apply(ops, reply) => {
                    let _ = reply.send(apply_all(&mut self.engine, &ops));
                }
                Request::Snapshot(with_conns, reply) => {
                    let mut snap = Snapshot::capture(&self.engine, self.device.now(), with_conns);
                    snap.sockets = self.device.get_ref().ports().map(|ports| {
                        let mut sum = rvs_control::snapshot::SocketSnap::default();
                        ports.iter().for_each(|p| sum.add(&p.stats()));
                        sum
                    });
                    if let (Some(snap), Some(fast)) =
                        (snap.fast_path.as_mut(), self.device.get_ref().fast_path())
                    {
                        snap.unresolved = fast.unresolved();
                    }
                    let _ = reply.send(snap);
                }
                Request::Stop => self.stopping = true,
            }
        }
    }

    /// Keep the XDP program's SYN cookies the engine's (the worker that
    /// fills them): the keys once their period turns, the SYN-ACK templates
    /// as services change and as their reals' window scales are learnt.
    fn sync_syn_cookies(&mut self) {
        let now = self.device.now();
        if self.cookies_due.is_some_and(|at| now < at) {
            return;
        }
        let Some(cookies) = self.device.get_mut().syn_cookies() else { return };
        self.cookies_due = Some(now + COOKIE_SYNC);
        if let Err(e) = cookies.sync(&self.engine, now) {
            warning!("SYN cookie maps not updated; SYNs go to the engine", error = e);
        }
    }

    /// Move the engine to the control plane's latest model, if it changed.
    fn take_config(&mut self) {
        if self.config.generation.load(Ordering::Acquire) == self.installed.generation.load(Ordering::Relaxed)
        {
            return;
        }
        let (generation, model) = self.config.current();
        let ops = self.model.diff(&model);
        if let Err(e) = apply_all(&mut self.engine, &ops) {
            *self.installed.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
        self.model = model;
        let laddrs = self.engine.services().flat_map(|s| s.config.laddrs.iter().copied());
        self.device.set_laddrs(laddrs);
        // The SYN-ACK templates follow the services at once.
        self.cookies_due = None;
        self.installed.generation.store(generation, Ordering::Release);
    }
}
