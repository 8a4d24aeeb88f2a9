//! The data-path worker: one thread that owns an engine and a TUN device
//! (and, with the xdp driver, AF_XDP sockets), moves packets in batches and
//! drives the engine's timers.
//!
//! With the xdp driver, packets come from the sockets and from the TUN
//! device (what the kernel still routes to rvs: the host's own traffic to a
//! VIP, fragments the XDP program passes). Every packet to send leaves by the
//! socket of the interface the kernel's route names, to the neighbour's
//! Ethernet address; while that is unknown, it goes to the kernel through the
//! TUN device, which forwards it and resolves the neighbour.
//!
//! Several workers run side by side, each with its own engine (connection
//! table, timers, port slice), TUN queue and sockets; they share nothing on
//! the packet path.
//!
//! The control plane reaches them only through [`Workers`]. Configuration is
//! a [`ConfigCell`]: the control plane swaps in a new model and bumps its
//! generation; each worker notices between two batches and moves its engine
//! to that model whole. Snapshots and counter resets travel over a channel.
//! An eventfd wakes a worker out of `poll`. Nothing on the packet path takes
//! a lock or allocates.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rvs_control::model::{Model, Op, apply_all};
use rvs_control::plane::DataPathError;
use rvs_control::snapshot::Snapshot;
use rvs_core::{DropReason, Engine, Event, Proto, Side, Verdict};

use crate::driver::tun::Tun;
use crate::driver::xdp::{NextHops, XskPort};
use crate::log::warning;

/// Largest packet the worker reads: TUN hands over whole IP packets up to 64 KiB.
const BUF_LEN: usize = 65_536;
/// How long the control plane waits for the worker to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

enum Request {
    ZeroCounters(mpsc::SyncSender<()>),
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

/// What a worker reports of the configuration it runs.
#[derive(Debug, Default)]
struct Installed {
    generation: AtomicU64,
    /// Why the last model could not be installed (a bug: models are validated).
    error: Mutex<Option<rvs_core::ConfigError>>,
}

/// A wake-up counter the worker polls beside its device.
#[derive(Debug)]
struct Wake(OwnedFd);

impl Wake {
    fn new() -> io::Result<Self> {
        // SAFETY: plain eventfd(2); the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is fresh and owned by nothing else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer; a full counter only means it is already ringing.
        unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), 8) };
    }

    fn clear(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads 8 bytes into a live buffer; EAGAIN when not rung is fine.
        unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    }
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

    /// Zero every worker's traffic counters; returns once each has.
    pub(crate) fn zero_counters(&self) -> Result<(), DataPathError> {
        self.handles.iter().enumerate().try_for_each(|(i, h)| h.call(i, Request::ZeroCounters))
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

    /// Ask every worker to stop.
    pub(crate) fn stop(&self) {
        for h in &self.handles {
            let _ = h.tx.send(Request::Stop);
            h.wake.ring();
        }
    }
}

/// The xdp driver's share of a worker: its sockets and next-hop mirror.
#[derive(Debug)]
pub(crate) struct XdpIo {
    pub(crate) ports: Vec<XskPort>,
    pub(crate) hops: NextHops,
}

/// Where a batch is read from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Tun,
    Xsk(usize),
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
        let worker = Worker {
            engine,
            tun,
            xdp,
            rx,
            wake,
            config: config.clone(),
            model: model.clone(),
            installed,
            clock,
            batch: settings.batch.clamp(1, 1024),
            loss_threshold: threshold(settings.fault_loss),
            syn_loss_threshold: threshold(settings.fault_syn_loss),
            rng: u64::from_ne_bytes(rng_seed) | 1,
            stopping: false,
        };
        let run = move || {
            // Checked against the allowed CPUs at start; a failure here
            // leaves the thread where the scheduler puts it.
            if let Some(cpu) = cpu
                && let Err(e) = crate::os::pin_to_cpu(cpu)
            {
                warning!("worker not pinned", worker = index, cpu = cpu, error = e);
            }
            worker.run();
        };
        joins.push(std::thread::Builder::new().name(format!("rvs-worker-{index}")).spawn(run)?);
    }
    Ok((Workers { handles, config }, joins))
}

/// A probability as a threshold for [`Worker::draw`].
fn threshold(p: f64) -> u64 {
    (p.clamp(0.0, 1.0) * u64::MAX as f64) as u64
}

/// Whether an IPv4 packet is a TCP SYN or SYN-ACK (the fault injector's handshake-only mode).
fn is_handshake(pkt: &[u8]) -> bool {
    let Some(&vihl) = pkt.first() else { return false };
    let ihl = usize::from(vihl & 0x0f) * 4;
    vihl >> 4 == 4 && pkt.get(9) == Some(&6) && pkt.get(ihl + 13).is_some_and(|f| f & 0x02 != 0)
}

/// The destination of an IPv4 packet.
fn ipv4_dst(pkt: &[u8]) -> Option<std::net::Ipv4Addr> {
    let b: [u8; 4] = pkt.get(16..20)?.try_into().ok()?;
    (pkt.first()? >> 4 == 4).then(|| std::net::Ipv4Addr::from(b))
}

/// The core's time: monotonic while the daemon runs, on an epoch that
/// survives restarts (the wall clock when it started). ISNs and TSvals
/// toward reals grow with it, so after a restart, or on the other balancer
/// of a pair, they carry on above those a real still holds in TIME_WAIT.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    started: std::time::Instant,
    /// Nanoseconds since the Unix epoch at `started`.
    base: u64,
}

impl Clock {
    pub(crate) fn start() -> Self {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self { started: std::time::Instant::now(), base: wall.as_nanos() as u64 }
    }

    pub(crate) fn now(self) -> rvs_core::Instant {
        rvs_core::Instant::from_nanos(self.base + self.started.elapsed().as_nanos() as u64)
    }
}

struct Worker {
    engine: Engine,
    tun: Tun,
    xdp: Option<XdpIo>,
    rx: mpsc::Receiver<Request>,
    wake: Arc<Wake>,
    config: Arc<ConfigCell>,
    /// The model the engine runs, and its generation in `installed`.
    model: Arc<Model>,
    installed: Arc<Installed>,
    clock: Clock,
    batch: usize,
    loss_threshold: u64,
    syn_loss_threshold: u64,
    rng: u64,
    stopping: bool,
}

impl Worker {
    fn run(mut self) {
        let mut bufs: Vec<Box<[u8]>> =
            (0..self.batch).map(|_| vec![0u8; BUF_LEN].into_boxed_slice()).collect();
        let mut lens = vec![0usize; self.batch];
        let mut txbuf = vec![0u8; BUF_LEN];
        let ports = self.xdp.as_ref().map_or(0, |x| x.ports.len());
        let mut fds = Vec::with_capacity(2 + ports);
        while !self.stopping {
            let timeout_ms = match self.engine.poll_timeout() {
                Some(at) => {
                    let now = self.clock.now();
                    // Rounded up: waking early would spin until the deadline.
                    at.as_nanos().saturating_sub(now.as_nanos()).div_ceil(1_000_000).min(1000) as i32
                }
                None => 1000,
            };
            fds.clear();
            fds.push(libc::pollfd { fd: self.tun.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            fds.push(libc::pollfd { fd: self.wake.0.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            if let Some(x) = &self.xdp {
                fds.extend(x.ports.iter().map(|p| libc::pollfd {
                    fd: p.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }));
            }
            // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if fds[1].revents != 0 {
                self.wake.clear();
                self.serve_requests();
            }
            self.take_config();
            if let Some(x) = self.xdp.as_mut() {
                x.hops.poll_updates();
            }
            if fds[0].revents != 0 {
                self.move_packets(Source::Tun, &mut bufs, &mut lens, &mut txbuf);
            }
            for (i, fd) in fds[2..].iter().enumerate() {
                if fd.revents != 0 {
                    self.move_packets(Source::Xsk(i), &mut bufs, &mut lens, &mut txbuf);
                }
            }
            let now = self.clock.now();
            if self.engine.poll_timeout().is_some_and(|at| at <= now) {
                self.engine.handle_timeout(now);
            }
            self.send_built(&mut txbuf);
            self.flush();
            self.tell_events();
        }
        // The connections still open end on both sides rather than hang.
        self.engine.flush_conns(self.clock.now());
        self.send_built(&mut txbuf);
        self.flush();
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

    /// Send one IPv4 packet on its way: by the xdp driver's socket toward
    /// the next hop when it is known, else through the TUN device.
    fn output(&mut self, packet: &[u8]) {
        if let Some(x) = self.xdp.as_mut()
            && let Some(dst) = ipv4_dst(packet)
        {
            if let Some((port, mac)) = x.hops.lookup(dst, &x.ports) {
                if !x.ports[port].send(mac, packet) {
                    self.engine.count_drop(DropReason::TxFailed);
                }
                return;
            }
            // The kernel forwards it and resolves the neighbour on the way.
            if self.tun.send(packet).is_err() {
                self.engine.count_drop(DropReason::NoNeighbour);
            }
            return;
        }
        if self.tun.send(packet).is_err() {
            self.engine.count_drop(DropReason::TxFailed);
        }
    }

    /// Hand the sockets' queued frames to the kernel.
    fn flush(&mut self) {
        if let Some(x) = self.xdp.as_mut() {
            for port in &mut x.ports {
                port.flush();
            }
        }
    }

    /// Send what the engine built itself (SYNProxy's handshakes and replays).
    fn send_built(&mut self, buf: &mut [u8]) {
        while let Some((len, to)) = self.engine.poll_transmit(buf) {
            // Only the LB–real link is lossy; answers to clients cross the other.
            if to == Side::Real && self.inject_fault(&buf[..len]) {
                continue;
            }
            self.output(&buf[..len]);
        }
    }

    /// Whether the fault injector drops this packet, crossing the LB–real
    /// link (counted as `fault_injected`).
    fn inject_fault(&mut self, pkt: &[u8]) -> bool {
        let lost = (self.loss_threshold > 0 && self.draw() < self.loss_threshold)
            || (self.syn_loss_threshold > 0 && is_handshake(pkt) && self.draw() < self.syn_loss_threshold);
        if lost {
            self.engine.count_drop(DropReason::FaultInjected);
        }
        lost
    }

    fn serve_requests(&mut self) {
        while let Ok(req) = self.rx.try_recv() {
            match req {
                Request::ZeroCounters(reply) => {
                    let _ = apply_all(&mut self.engine, &[Op::ZeroCounters]);
                    let _ = reply.send(());
                }
                Request::Snapshot(with_conns, reply) => {
                    let mut snap = Snapshot::capture(&self.engine, self.clock.now(), with_conns);
                    snap.sockets = self.xdp.as_ref().map(|x| {
                        let mut sum = rvs_control::snapshot::SocketSnap::default();
                        x.ports.iter().for_each(|p| sum.add(&p.stats()));
                        sum
                    });
                    let _ = reply.send(snap);
                }
                Request::Stop => self.stopping = true,
            }
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
        self.installed.generation.store(generation, Ordering::Release);
    }

    /// Read up to a batch from `source`, rewrite each packet in place, send the batch on.
    fn move_packets(&mut self, source: Source, bufs: &mut [Box<[u8]>], lens: &mut [usize], txbuf: &mut [u8]) {
        // A bounded number of batches per wake-up keeps control requests responsive.
        for _ in 0..16 {
            let n = self.read_batch(source, bufs, lens);
            if n == 0 {
                return;
            }
            let now = self.clock.now();
            let faults = self.loss_threshold > 0 || self.syn_loss_threshold > 0;
            for i in 0..n {
                let packet = &mut bufs[i][..lens[i]];
                // A packet from a real (to a LIP) crossed the lossy link before
                // the balancer saw it: lose it before the engine does.
                let from_real = faults && ipv4_dst(packet).is_some_and(|d| self.engine.is_laddr(d.into()));
                if from_real && self.inject_fault(packet) {
                    continue;
                }
                // Drops are counted by the engine; absorbed packets were
                // answered or kept, and what to send comes from poll_transmit.
                let verdict = self.engine.handle(now, packet);
                // What the engine built goes first: a SYNProxy splice queues the
                // client's kept packets, which must reach the real before
                // anything newer of the same connection.
                self.send_built(txbuf);
                if !matches!(verdict, Verdict::Forward { .. }) {
                    continue;
                }
                // A packet toward a real crosses the lossy link after the balancer.
                if faults
                    && !from_real
                    && matches!(verdict, Verdict::Forward { to: Side::Real })
                    && self.inject_fault(packet)
                {
                    continue;
                }
                self.output(packet);
            }
            self.flush();
            if n < bufs.len() {
                return;
            }
        }
    }

    /// Fill `bufs` with up to a batch of IPv4 packets from `source`; how many.
    fn read_batch(&mut self, source: Source, bufs: &mut [Box<[u8]>], lens: &mut [usize]) -> usize {
        let mut n = 0;
        match source {
            Source::Tun => {
                while n < bufs.len() {
                    match self.tun.recv(&mut bufs[n]) {
                        Ok(len) => {
                            lens[n] = len;
                            n += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
            Source::Xsk(i) => {
                let Some(port) = self.xdp.as_mut().and_then(|x| x.ports.get_mut(i)) else { return 0 };
                n = port.recv(bufs, lens);
                // Senders with checksum offload (veth by default) leave TCP
                // and UDP checksums partial; the kernel would finish them on
                // the way out, but these frames never reach it.
                for (buf, &len) in bufs.iter_mut().zip(&lens[..n]) {
                    rvs_wire::checksum::complete_partial_ipv4(&mut buf[..len]);
                }
            }
        }
        n
    }

    /// xorshift64: the fault injector needs speed, not quality.
    fn draw(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}
