//! One worker's devices as the one loop sees them ([`rvs_core::io::Device`]):
//! its TUN queue and, with the xdp driver, its AF_XDP sockets, polled
//! together with the worker's wake-up counter.
//!
//! A packet leaves by the socket of the interface the kernel's route names,
//! to the neighbour's Ethernet address; while that is unknown, it goes to the
//! kernel through the TUN device, which forwards it and resolves the
//! neighbour. A frame that leaves by the socket it arrived on is rewritten
//! in its own memory and handed to the send ring as it is; one that crosses
//! to another socket (or the TUN device) is copied.

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use rvs_core::io::Device;
use rvs_core::{DropReason, FastPathStats, FlowReport, Instant, Offload, Side};
use rvs_wire::{ipv4, ipv6};

use super::offload::FastPath;
use super::tun::Tun;
use super::xdp::fast_path::NextHop;
use super::xdp::{NextHops, SynCookies, XskPort};

/// Largest packet read from the TUN device: it hands over whole IP packets up to 64 KiB.
pub(crate) const BUF_LEN: usize = 65_536;
/// The longest flow table changes wait for the sockets to be empty
/// ([`Devices::settle`]): under a load that never lets them empty, a
/// connection moves anyway, and may see a few packets reordered once.
const HOLD_MAX: std::time::Duration = std::time::Duration::from_millis(50);
/// Batches read from one source per turn: a bound keeps control requests responsive.
const BATCHES_PER_TURN: usize = 16;

/// The core's time: monotonic while the daemon runs, on an epoch that
/// survives restarts (the wall clock when it started). ISNs and TSvals
/// toward reals grow with it, so after a restart, or on the other balancer
/// of a pair, they carry on above those a real still holds in TIME_WAIT.
///
/// The XDP program reads `CLOCK_MONOTONIC` (`bpf_ktime_get_ns`), the clock
/// `std::time::Instant` reads too; [`Clock::monotonic_offset`] takes its
/// times to the core's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    started: std::time::Instant,
    /// Nanoseconds since the Unix epoch at `started`.
    base: u64,
    /// `CLOCK_MONOTONIC` nanoseconds at `started`.
    monotonic: u64,
}

impl Clock {
    pub(crate) fn start() -> Self {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self { started: std::time::Instant::now(), base: wall.as_nanos() as u64, monotonic: monotonic_ns() }
    }

    pub(crate) fn now(self) -> Instant {
        Instant::from_nanos(self.base + self.started.elapsed().as_nanos() as u64)
    }

    /// What turns a `CLOCK_MONOTONIC` time into the core's (added, wrapping).
    pub(crate) fn monotonic_offset(self) -> u64 {
        self.base.wrapping_sub(self.monotonic)
    }

    /// A `CLOCK_MONOTONIC` time (the XDP program's) on the core's clock.
    pub(crate) fn at_monotonic(self, ns: u64) -> Instant {
        Instant::from_nanos(ns.wrapping_add(self.monotonic_offset()))
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// A wake-up counter the worker's devices are polled beside.
#[derive(Debug)]
pub(crate) struct Wake(OwnedFd);

impl Wake {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain eventfd(2); the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is fresh and owned by nothing else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn ring(&self) {
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

/// The xdp driver's share of a worker: its sockets and next-hop mirror,
/// and its share of the fast path where it runs.
#[derive(Debug)]
pub(crate) struct XdpIo {
    pub(crate) ports: Vec<XskPort>,
    pub(crate) hops: NextHops,
    pub(crate) fast: Option<FastPath>,
}

impl XdpIo {
    /// Where a packet to `dst` leaves, as the fast path writes it: the
    /// interface, the next hop's Ethernet address and the interface's own.
    fn next_hop(hops: &NextHops, ports: &[XskPort], dst: IpAddr) -> Option<NextHop> {
        let (i, dst_mac) = hops.lookup(dst, ports)?;
        let port = &ports[i];
        Some(NextHop { ifindex: port.ifindex, dst_mac, src_mac: port.mac })
    }

    /// Whether the program can move a connection's packets between the
    /// interfaces its two sides are reached by: on one interface it sends
    /// them back out (`XDP_TX`); across two, a redirect from a native
    /// program reaches only a device that takes frames from XDP itself (a
    /// bridge, on generic XDP, does not), while one from the generic path
    /// goes through the kernel's own transmit and reaches any. So the two
    /// interfaces must be one, or run the program the same way.
    fn redirects_work(hops: &NextHops, ports: &[XskPort], rules: &[rvs_core::FlowRule; 2]) -> bool {
        let port = |addr| hops.lookup(addr, ports).and_then(|(i, _)| ports.get(i));
        match (port(rules[0].dst.addr), port(rules[1].dst.addr)) {
            (Some(to_real), Some(to_client)) => {
                to_real.ifindex == to_client.ifindex || to_real.native == to_client.native
            }
            _ => false,
        }
    }
}

/// A received packet: a slot of the TUN buffers, or a frame in a socket's memory.
pub(crate) enum Rx {
    Tun { slot: usize, len: usize },
    Xsk { port: usize, frame: xdp::Packet },
}

impl std::fmt::Debug for Rx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tun { slot, len } => f.debug_struct("Tun").field("slot", slot).field("len", len).finish(),
            Self::Xsk { port, frame } => {
                f.debug_struct("Xsk").field("port", port).field("len", &frame.len()).finish()
            }
        }
    }
}

/// One worker's devices.
#[derive(Debug)]
pub(crate) struct Devices {
    tun: Tun,
    xdp: Option<XdpIo>,
    wake: Arc<Wake>,
    clock: Clock,
    /// Buffers TUN packets are read into, one batch of them.
    bufs: Vec<Box<[u8]>>,
    fds: Vec<libc::pollfd>,
    /// The source read next this turn (0: TUN, 1 + i: socket i) and how
    /// many batches it gave so far.
    cursor: usize,
    batches: usize,
    /// Installs waiting for the sockets to be empty, and since when.
    held: VecDeque<Offload>,
    held_since: Option<Instant>,
    /// Scratch for [`sockets_empty`] (`fds` holds the last wait's answers).
    probe_fds: Vec<libc::pollfd>,
}

impl Devices {
    pub(crate) fn new(tun: Tun, xdp: Option<XdpIo>, wake: Arc<Wake>, clock: Clock, batch: usize) -> Self {
        let sources = 1 + xdp.as_ref().map_or(0, |x| x.ports.len());
        Self {
            tun,
            xdp,
            wake,
            clock,
            bufs: (0..batch).map(|_| vec![0u8; BUF_LEN].into_boxed_slice()).collect(),
            fds: Vec::with_capacity(sources + 1),
            cursor: usize::MAX,
            batches: 0,
            held: VecDeque::new(),
            held_since: None,
            probe_fds: Vec::with_capacity(sources),
        }
    }

    /// Apply the held flow table changes once no socket has a frame waiting
    /// (or they waited [`HOLD_MAX`]). A connection's packets still queued
    /// for the engine when its rules go in would leave after newer ones
    /// the program forwarded at once: the ends would see them reordered,
    /// their timestamps going back (PAWS drops them) and take the gap for
    /// loss. With the queues empty, only a frame the program is steering at
    /// that very moment can be overtaken.
    fn settle(&mut self) {
        let Some(since) = self.held_since else { return };
        let Some(x) = self.xdp.as_mut() else { return };
        if !(self.clock.now() >= since + HOLD_MAX || sockets_empty(&x.ports, &mut self.probe_fds)) {
            return;
        }
        let Some(fast) = x.fast.as_mut() else { return };
        for change in self.held.drain(..) {
            // A connection the program cannot send across is left to the
            // engine as one without a next hop is.
            let sendable = match &change {
                Offload::Install { rules, .. } => XdpIo::redirects_work(&x.hops, &x.ports, rules),
                _ => true,
            };
            fast.offload(&change, |dst| XdpIo::next_hop(&x.hops, &x.ports, dst).filter(|_| sendable));
        }
        self.held_since = None;
    }

    /// The sockets, for their counters.
    pub(crate) fn ports(&self) -> Option<&[XskPort]> {
        self.xdp.as_ref().map(|x| &x.ports[..])
    }

    /// This worker's share of the fast path, where it runs.
    pub(crate) fn fast_path(&self) -> Option<&FastPath> {
        self.xdp.as_ref()?.fast.as_ref()
    }

    /// The XDP program's SYN-cookie maps, on the worker that fills them.
    pub(crate) fn syn_cookies(&mut self) -> Option<&mut SynCookies> {
        self.xdp.as_mut()?.fast.as_mut()?.syn_cookies()
    }

    /// Whether source `i` (0: TUN, 1 + i: socket i) was ready at the last wait.
    fn ready(&self, source: usize) -> bool {
        self.fds.get(if source == 0 { 0 } else { source + 1 }).is_some_and(|f| f.revents != 0)
    }

    /// Read up to `room` packets (the sockets: up to a batch) of source
    /// `source` into `batch`; how many.
    fn read(&mut self, source: usize, batch: &mut Vec<Rx>, room: usize) -> usize {
        let before = batch.len();
        if source == 0 {
            for slot in 0..room.min(self.bufs.len()) {
                match self.tun.recv(&mut self.bufs[slot]) {
                    Ok(len) => batch.push(Rx::Tun { slot, len }),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        } else if let Some(port) = self.xdp.as_mut().and_then(|x| x.ports.get_mut(source - 1)) {
            port.recv(|frame| batch.push(Rx::Xsk { port: source - 1, frame }));
        }
        batch.len() - before
    }
}

/// Whether no socket of `ports` has a frame waiting, now (a poll that
/// does not wait); `fds` is scratch space.
fn sockets_empty(ports: &[XskPort], fds: &mut Vec<libc::pollfd>) -> bool {
    fds.clear();
    fds.extend(ports.iter().map(|p| libc::pollfd { fd: p.as_raw_fd(), events: libc::POLLIN, revents: 0 }));
    // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    ready == 0
}

/// The destination of an IPv4 or IPv6 packet.
fn ip_dst(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= ipv4::HEADER_LEN => Some(ipv4::Packet::new_unchecked(packet).dst_addr().into()),
        6 if packet.len() >= ipv6::HEADER_LEN => Some(ipv6::Packet::new_unchecked(packet).dst_addr().into()),
        _ => None,
    }
}

/// Where a packet leaves.
enum Way {
    /// By this socket, to the next hop's Ethernet address.
    Xsk(usize, [u8; 6]),
    /// Through the TUN device; a failure there counts as this.
    Tun(DropReason),
}

/// Where an IPv4 or IPv6 packet leaves: by the xdp driver's socket toward
/// the next hop when it is known, else through the TUN device.
fn way(xdp: Option<&XdpIo>, packet: &[u8]) -> Way {
    match (xdp, ip_dst(packet)) {
        (Some(x), Some(dst)) => match x.hops.lookup(dst, &x.ports) {
            Some((port, mac)) => Way::Xsk(port, mac),
            // The kernel forwards it and resolves the neighbour on the way.
            None => Way::Tun(DropReason::NoNeighbour),
        },
        _ => Way::Tun(DropReason::TxFailed),
    }
}

/// Send one packet on its way, copied.
fn output(tun: &Tun, xdp: Option<&mut XdpIo>, packet: &[u8]) -> Result<(), DropReason> {
    output_by(way(xdp.as_deref(), packet), tun, xdp, packet)
}

/// Send one packet the way [`way`] chose, copied.
fn output_by(way: Way, tun: &Tun, xdp: Option<&mut XdpIo>, packet: &[u8]) -> Result<(), DropReason> {
    match (way, xdp) {
        (Way::Xsk(port, mac), Some(x)) => sent(x.ports[port].send(mac, packet)),
        (Way::Xsk(..), None) => Err(DropReason::TxFailed),
        (Way::Tun(reason), _) => tun.send(packet).map_err(|_| reason),
    }
}

/// A socket's "queued or not" as the loop's result.
fn sent(queued: bool) -> Result<(), DropReason> {
    if queued { Ok(()) } else { Err(DropReason::TxFailed) }
}

impl Device for Devices {
    type Rx = Rx;

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn wait(&mut self, deadline: Option<Instant>) {
        // The fast path's sweep is due even when no packet reaches the engine.
        let sweep = self.fast_path().and_then(FastPath::next_due);
        let deadline = match (deadline, sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout_ms = match deadline {
            Some(at) => {
                let now = self.clock.now();
                // Rounded up: waking early would spin until the deadline.
                at.as_nanos().saturating_sub(now.as_nanos()).div_ceil(1_000_000).min(1000) as i32
            }
            None => 1000,
        };
        let pollin = |fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        self.fds.clear();
        self.fds.push(pollin(self.tun.as_raw_fd()));
        self.fds.push(pollin(self.wake.0.as_raw_fd()));
        if let Some(x) = &self.xdp {
            self.fds.extend(x.ports.iter().map(|p| pollin(p.as_raw_fd())));
        }
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
        unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, timeout_ms) };
        if self.fds[1].revents != 0 {
            self.wake.clear();
        }
        if let Some(x) = self.xdp.as_mut() {
            x.hops.poll_updates();
            if let Some(fast) = x.fast.as_mut() {
                fast.new_turn();
            }
        }
        self.cursor = 0;
        self.batches = 0;
    }

    fn receive(&mut self, batch: &mut Vec<Rx>) {
        let room = batch.capacity() - batch.len();
        let sources = self.fds.len().saturating_sub(1);
        while self.cursor < sources {
            let source = self.cursor;
            if self.ready(source) && self.batches < BATCHES_PER_TURN {
                let n = self.read(source, batch, room);
                self.batches += 1;
                // A full batch: more may be queued behind it.
                if n == room && n > 0 {
                    return;
                }
                self.cursor += 1;
                self.batches = 0;
                if n > 0 {
                    return;
                }
            } else {
                self.cursor += 1;
                self.batches = 0;
            }
        }
        self.settle();
    }

    fn packet<'a>(&'a mut self, rx: &'a mut Rx) -> &'a mut [u8] {
        match rx {
            Rx::Tun { slot, len } => {
                self.bufs.get_mut(*slot).and_then(|b| b.get_mut(..*len)).unwrap_or_default()
            }
            Rx::Xsk { frame, .. } => XskPort::ip_packet(frame),
        }
    }

    fn send(&mut self, rx: Rx, _to: Side) -> Result<(), DropReason> {
        match rx {
            Rx::Tun { slot, len } => {
                let packet = self.bufs.get(slot).and_then(|b| b.get(..len)).unwrap_or_default();
                output(&self.tun, self.xdp.as_mut(), packet)
            }
            Rx::Xsk { port, mut frame } => {
                let Some(x) = self.xdp.as_mut() else { return Err(DropReason::TxFailed) };
                let way = way(Some(x), XskPort::ip_packet(&mut frame));
                // Back out of the socket it came in by: rewritten in place, no copy.
                if let Way::Xsk(out, mac) = way
                    && out == port
                {
                    return sent(x.ports[port].forward(frame, mac));
                }
                let result = output_by(way, &self.tun, Some(&mut *x), XskPort::ip_packet(&mut frame));
                x.ports[port].free(frame);
                result
            }
        }
    }

    fn discard(&mut self, rx: Rx) {
        if let Rx::Xsk { port, frame } = rx
            && let Some(p) = self.xdp.as_mut().and_then(|x| x.ports.get_mut(port))
        {
            p.free(frame);
        }
    }

    fn transmit(&mut self, packet: &[u8], _to: Side) -> Result<(), DropReason> {
        output(&self.tun, self.xdp.as_mut(), packet)
    }

    /// Hand the sockets' queued frames to the kernel.
    fn flush(&mut self) {
        if let Some(x) = self.xdp.as_mut() {
            for port in &mut x.ports {
                port.flush();
            }
        }
    }

    fn offload(&mut self, change: &Offload) {
        let Some(XdpIo { ports, hops, fast: Some(fast) }) = self.xdp.as_mut() else { return };
        // Rules stop at once; only installs wait. A removal waiting would
        // leave the rules of a closing connection in place after the engine
        // forwarded its FIN: the peer's ACK of it would pass the engine,
        // which then never sees the close end and keeps the connection in
        // LAST_ACK, where a client's new SYN on the same port finds it. An
        // install still held for a connection removed or a real retired is
        // not made at all.
        if let Offload::Install { .. } = change {
            self.held.push_back(*change);
            self.held_since.get_or_insert_with(|| self.clock.now());
            self.settle();
            return;
        }
        self.held.retain(|c| !change.voids(c));
        fast.offload(change, |dst| XdpIo::next_hop(hops, ports, dst));
    }

    fn poll_flow_report(&mut self, now: Instant) -> Option<FlowReport> {
        self.xdp.as_mut()?.fast.as_mut()?.poll_report(now)
    }

    fn poll_fast_path_stats(&mut self) -> Option<FastPathStats> {
        let now = self.clock.now();
        self.xdp.as_mut()?.fast.as_mut()?.poll_stats(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_programs_clock_maps_onto_the_cores() {
        let clock = Clock::start();
        let before = clock.now();
        let mapped = clock.at_monotonic(monotonic_ns());
        let after = clock.now();
        // Both clocks tick together: within the reads' own cost.
        let slack = 1_000_000;
        assert!(mapped.as_nanos() + slack >= before.as_nanos(), "{mapped:?} {before:?}");
        assert!(mapped.as_nanos() <= after.as_nanos() + slack, "{mapped:?} {after:?}");
    }

    #[test]
    fn destinations_of_both_families() {
        let mut v4 = vec![0x45u8; 20];
        v4[16..20].copy_from_slice(&[10, 77, 1, 11]);
        assert_eq!(ip_dst(&v4), Some("10.77.1.11".parse().unwrap()));
        let mut v6 = vec![0x60u8; 40];
        v6[24..40].copy_from_slice(&"fd10:77:1::11".parse::<std::net::Ipv6Addr>().unwrap().octets());
        assert_eq!(ip_dst(&v6), Some("fd10:77:1::11".parse().unwrap()));
        // Too short for its header, or no IP version: no way out by a socket.
        assert_eq!(ip_dst(&v6[..39]), None);
        assert_eq!(ip_dst(&v4[..19]), None);
        assert_eq!(ip_dst(&[0x50; 40]), None);
        assert_eq!(ip_dst(&[]), None);
    }
}
