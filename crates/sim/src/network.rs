//! The star network: hosts, their links, the middlebox, and the event loop.

use core::cmp::Ordering;
use core::fmt;
use core::marker::PhantomData;
use core::time::Duration;
use std::cell::{Ref, RefCell};
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::rc::Rc;

use rvs_core::Instant;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{Socket, tcp};
use smoltcp::wire::{HardwareAddress, IpCidr, IpEndpoint, IpListenEndpoint};

use crate::capture::{Capture, PcapGuard};
use crate::host::{App, AppHandle, Device, HostId, HostStats, Ports, Stack, from_smol, set_clock, to_smol};
use crate::packet::{
    IPV4_MIN_PMTU, IPV6_MIN_MTU, PacketInfo, TCP_ACK, TCP_SYN, TooBig, checksums_ok, mss_less_timestamps,
    parse_too_big, segment, too_big_error,
};
use crate::rng::Rng;
use crate::{LinkConfig, LinkDir, LinkStats, Middlebox, Outbox};

/// Network-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Seed of every random choice the network makes (impairments, smoltcp
    /// initial sequence numbers). Same seed and same calls, same run.
    pub seed: u64,
    /// Hosts take in arriving packets at multiples of this interval, like a
    /// NIC moderating interrupts. Batching matters for speed: every smoltcp
    /// poll walks all sockets of a host, so one poll per batch instead of one
    /// per packet (with 100 µs, 200 concurrent transfers run about twice as
    /// fast as with 20 µs). At least 1 µs, smoltcp's clock resolution.
    pub coalesce: Duration,
    /// Bytes of packets the capture keeps (the most recent ones); zero keeps
    /// none but still maintains the digest.
    pub capture_limit: usize,
    /// Time at which the network starts.
    pub start: Instant,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self { seed: 0, coalesce: Duration::from_micros(100), capture_limit: 64 << 20, start: Instant::ZERO }
    }
}

impl NetworkConfig {
    /// The defaults with `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self { seed, ..Self::default() }
    }
}

/// Network-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Packets the middlebox was handed.
    pub middlebox_in: u64,
    /// Packets the middlebox forwarded.
    pub forwarded: u64,
    /// Packets the middlebox dropped (it counts why).
    pub dropped: u64,
    /// Packets the middlebox originated.
    pub originated: u64,
    /// Forwarded or originated packets whose destination no host owns.
    pub unroutable: u64,
    /// Events processed by [`Network::step`].
    pub steps: u64,
}

/// Where a packet in flight is going.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// To the middlebox, over this host's link.
    Middlebox(HostId),
    Host(HostId),
}

#[derive(Debug)]
struct Event {
    time: Instant,
    /// When the packet would have arrived without delivery coalescing, so
    /// packets batched together keep their arrival order.
    arrival: Instant,
    seq: u64,
    to: Target,
    data: Vec<u8>,
}

impl Event {
    fn key(&self) -> (Instant, Instant, u64) {
        (self.time, self.arrival, self.seq)
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Event {}

impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Event {
    /// Reversed, so the max-heap pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

struct Link {
    cfg: LinkConfig,
    stats: LinkStats,
    /// Latest arrival scheduled for an in-order packet: later packets do not
    /// arrive before it, so only `reorder` reorders.
    last_arrival: Instant,
}

type Observer = Box<dyn FnMut(Instant, &[u8])>;

struct Host {
    name: String,
    addrs: Vec<IpAddr>,
    iface: Interface,
    device: Device,
    sockets: SocketSet<'static>,
    ports: Ports,
    apps: Vec<Box<dyn App>>,
    up: Link,
    down: Link,
    /// Something happened that the stack or the apps must look at now.
    wake: bool,
    next_poll: Option<Instant>,
    observer: Option<Observer>,
    /// Path MTU toward destinations an ICMP too-big error named.
    path_mtu: HashMap<IpAddr, usize>,
    stats: HostStats,
}

/// The (local, remote) endpoints of a TCP SYN without ACK, as its receiver
/// sees them.
fn pure_syn(p: &[u8]) -> Option<(IpEndpoint, IpEndpoint)> {
    let i = PacketInfo::parse(p)?;
    (i.proto == 6 && i.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
        .then(|| (IpEndpoint::new(i.dst.into(), i.dst_port), IpEndpoint::new(i.src.into(), i.src_port)))
}

impl Host {
    /// Hand arriving SYNs to the sockets a real stack would.
    ///
    /// A real stack looks up connected sockets before listening ones.
    /// smoltcp hands a segment to the first socket in its set that accepts
    /// it, and servers keep several listening sockets, so a duplicated or
    /// retransmitted SYN could be taken by a spare listener: a second
    /// half-open connection for the same 4-tuple, whose SYN-ACK makes the
    /// client reset the first. Such a SYN is processed on its own with the
    /// listeners of its port closed for that moment.
    ///
    /// A SYN for a 4-tuple in TIME-WAIT ends the TIME-WAIT (as Linux allows)
    /// by making that socket listen again, so the new connection is
    /// accepted normally.
    ///
    /// A SYN for a port whose listeners are all taken is dropped and counted
    /// (`HostStats::listen_overflow`), as Linux does when the accept queue is
    /// full; smoltcp would answer with a RST. A port with no listener at all
    /// still gets its RST.
    fn demux_syns(&mut self, ts: smoltcp::time::Instant) {
        let queued = core::mem::take(&mut self.device.rx);
        // SYNs queued in this batch for listeners, and listeners left per local endpoint.
        let mut claimed: Vec<(IpEndpoint, IpEndpoint)> = Vec::new();
        let mut free: Vec<(IpEndpoint, usize)> = Vec::new();
        for p in queued {
            let Some((local, remote)) = pure_syn(&p) else {
                self.device.rx.push_back(p);
                continue;
            };
            let owner = self.sockets.iter().find_map(|(handle, s)| match s {
                Socket::Tcp(t)
                    if t.state() != tcp::State::Listen
                        && t.local_endpoint() == Some(local)
                        && t.remote_endpoint() == Some(remote) =>
                {
                    Some((handle, t.state()))
                }
                _ => None,
            });
            if let Some((handle, tcp::State::TimeWait)) = owner {
                let t = self.sockets.get_mut::<tcp::Socket<'static>>(handle);
                let ep = t.listen_endpoint();
                if ep.port == local.port && t.listen(ep).is_ok() {
                    free.retain(|(e, _)| *e != local);
                }
            }
            let fresh = owner.is_none_or(|(_, state)| state == tcp::State::TimeWait);
            if fresh && !claimed.contains(&(local, remote)) {
                let slot = match free.iter().position(|(e, _)| *e == local) {
                    Some(i) => i,
                    None => {
                        free.push((local, self.listeners(local)));
                        free.len() - 1
                    }
                };
                match free[slot].1 {
                    0 if self.has_listener_port(local.port) => self.stats.listen_overflow += 1,
                    0 => self.device.rx.push_back(p),
                    _ => {
                        free[slot].1 -= 1;
                        claimed.push((local, remote));
                        self.device.rx.push_back(p);
                    }
                }
                continue;
            }
            // The 4-tuple has a socket, or will once the SYNs queued before
            // this one are processed: process those, then this one alone
            // with the listeners of its port closed.
            if !self.device.rx.is_empty() {
                self.iface.poll(ts, &mut self.device, &mut self.sockets);
                self.stats.polls += 1;
            }
            claimed.clear();
            free.clear();
            let mut closed: Vec<(SocketHandle, IpListenEndpoint)> = Vec::new();
            for (handle, s) in self.sockets.iter_mut() {
                if let Socket::Tcp(t) = s
                    && t.state() == tcp::State::Listen
                    && t.listen_endpoint().port == local.port
                {
                    closed.push((handle, t.listen_endpoint()));
                    t.close();
                }
            }
            self.device.rx.push_back(p);
            self.iface.poll(ts, &mut self.device, &mut self.sockets);
            self.stats.polls += 1;
            for (handle, ep) in closed {
                let _ = self.sockets.get_mut::<tcp::Socket<'static>>(handle).listen(ep);
            }
        }
    }

    /// Listening sockets that would accept a SYN to `local`.
    fn listeners(&self, local: IpEndpoint) -> usize {
        self.sockets
            .iter()
            .filter(|(_, s)| match s {
                Socket::Tcp(t) => {
                    let ep = t.listen_endpoint();
                    t.state() == tcp::State::Listen
                        && ep.port == local.port
                        && ep.addr.is_none_or(|a| a == local.addr)
                }
                _ => false,
            })
            .count()
    }

    /// Whether any socket of the host is bound to TCP `port` as a server.
    fn has_listener_port(&self, port: u16) -> bool {
        self.sockets.iter().any(|(_, s)| matches!(s, Socket::Tcp(t) if t.listen_endpoint().port == port))
    }

    /// Take in a too-big error about a packet this host sent: smoltcp has no
    /// path-MTU discovery (RFC 1191, RFC 8201), so the host keeps the path
    /// MTU per destination and cuts larger TCP segments to fit, as a stack
    /// re-segments its queue. The lost segment is sent again, cut, when
    /// smoltcp retransmits it.
    fn lower_path_mtu(&mut self, e: TooBig) {
        let floor = if e.dst.is_ipv4() { IPV4_MIN_PMTU } else { IPV6_MIN_MTU };
        let mtu = e.mtu.clamp(floor, self.device.mtu);
        let entry = self.path_mtu.entry(e.dst).or_insert(self.device.mtu);
        if mtu < *entry {
            *entry = mtu;
            self.stats.path_mtu_lowered += 1;
        }
    }

    fn link(&mut self, dir: LinkDir) -> &mut Link {
        match dir {
            LinkDir::ToMiddlebox => &mut self.up,
            LinkDir::ToHost => &mut self.down,
        }
    }
}

/// Everything but the hosts and the middlebox, so both can be borrowed
/// alongside it.
struct Core {
    now: Instant,
    tick: u64,
    rng: Rng,
    seq: u64,
    queue: BinaryHeap<Event>,
    capture: Rc<RefCell<Capture>>,
    stats: NetworkStats,
}

impl Core {
    /// Put `data` on one direction of `host`'s link. A packet too big for
    /// it is answered over the other direction with the ICMP error a router
    /// at the narrow link sends (see [`too_big_error`]).
    fn send_over(&mut self, host: &mut Host, id: HostId, dir: LinkDir, data: Vec<u8>) {
        let (link, back, to, from) = match dir {
            LinkDir::ToMiddlebox => (&mut host.up, &mut host.down, Target::Middlebox(id), Target::Host(id)),
            LinkDir::ToHost => (&mut host.down, &mut host.up, Target::Host(id), Target::Middlebox(id)),
        };
        if let Some(error) = self.transmit(link, to, data) {
            // Too big for its way back, an error is not answered again.
            let _ = self.transmit(back, from, error);
        }
    }

    /// Put `data` on a link whose far end is `to`. Returns the ICMP error
    /// due to the sender when the packet is too big for the link.
    fn transmit(&mut self, link: &mut Link, to: Target, data: Vec<u8>) -> Option<Vec<u8>> {
        link.stats.sent += 1;
        if data.len() > link.cfg.mtu {
            link.stats.too_big += 1;
            let router = if destination(&data)?.is_ipv4() { ROUTER_V4.into() } else { ROUTER_V6.into() };
            return too_big_error(&data, link.cfg.mtu, router);
        }
        if self.rng.chance(link.cfg.loss) {
            link.stats.lost += 1;
            return None;
        }
        if self.rng.chance(link.cfg.duplicate) {
            link.stats.duplicated += 1;
            let copy = data.clone();
            self.schedule(link, to, copy);
        }
        self.schedule(link, to, data);
        None
    }

    fn schedule(&mut self, link: &mut Link, to: Target, data: Vec<u8>) {
        let cfg = &link.cfg;
        let mut arrival = self.now + cfg.delay + Duration::from_nanos(self.rng.up_to(nanos(cfg.jitter)));
        if self.rng.chance(cfg.reorder) {
            arrival += Duration::from_nanos(self.rng.up_to(nanos(cfg.reorder_span())));
        } else {
            arrival = arrival.max(link.last_arrival);
            link.last_arrival = arrival;
        }
        let time = match to {
            Target::Host(_) => Instant::from_nanos(arrival.as_nanos().div_ceil(self.tick) * self.tick),
            Target::Middlebox(_) => arrival,
        };
        self.seq += 1;
        self.queue.push(Event { time, arrival, seq: self.seq, to, data });
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The destination address of a raw IP packet.
fn destination(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(p.get(16..20)?).ok()?))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(p.get(24..40)?).ok()?))),
        _ => None,
    }
}

/// Next hop for hosts' default routes. With an IP medium it is never put on
/// the wire: every packet a host sends goes to the middlebox regardless.
const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);
const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// Source of the ICMP errors a link sends about packets too big for it:
/// the IPv4 dummy address (RFC 7600), and an IPv6 documentation address.
pub const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 8);
/// IPv6 counterpart of [`ROUTER_V4`].
pub const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

/// A star of hosts around a [`Middlebox`], driven by simulated time.
///
/// Every packet a host sends crosses the host's link to the middlebox; a
/// packet the middlebox forwards (or originates) crosses the link of the
/// host owning its destination address. Each direction of each link delays,
/// loses, duplicates and reorders packets as its [`LinkConfig`] says, drawing
/// from one seeded generator, and events are ordered by time then creation,
/// so a run is a pure function of the seed and the calls made.
pub struct Network<M: Middlebox> {
    core: Core,
    hosts: Vec<Host>,
    owners: HashMap<IpAddr, HostId>,
    middlebox: M,
    /// What left the middlebox, kept between calls for its capacity.
    outbox: Outbox,
    /// When the middlebox's timers last ran; a timeout at or before that is
    /// treated as one nanosecond later, so a middlebox that keeps reporting
    /// a past deadline cannot stall time.
    timers_ran: Option<Instant>,
}

impl<M: Middlebox> fmt::Debug for Network<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("now", &self.core.now)
            .field("hosts", &self.hosts.iter().map(|h| &h.name).collect::<Vec<_>>())
            .field("in_flight", &self.core.queue.len())
            .field("stats", &self.core.stats)
            .finish_non_exhaustive()
    }
}

impl<M: Middlebox> Network<M> {
    /// An empty network around `middlebox`.
    pub fn new(middlebox: M, config: NetworkConfig) -> Self {
        Self {
            core: Core {
                now: config.start,
                tick: nanos(config.coalesce).max(1000),
                rng: Rng::new(config.seed),
                seq: 0,
                queue: BinaryHeap::new(),
                capture: Rc::new(RefCell::new(Capture::new(config.capture_limit))),
                stats: NetworkStats::default(),
            },
            hosts: Vec::new(),
            owners: HashMap::new(),
            middlebox,
            outbox: Outbox::default(),
            timers_ran: None,
        }
    }

    /// Add a host owning `addrs`, whose link has `link` in both directions.
    pub fn add_host(&mut self, name: &str, addrs: &[IpAddr], link: LinkConfig) -> HostId {
        self.add_host_asymmetric(name, addrs, link, link)
    }

    /// Add a host owning `addrs`, with `up` for its link toward the
    /// middlebox and `down` for the way back. Its interface MTU is `up.mtu`.
    ///
    /// Panics if `addrs` is empty, longer than eight, or holds an address
    /// another host owns.
    pub fn add_host_asymmetric(
        &mut self,
        name: &str,
        addrs: &[IpAddr],
        up: LinkConfig,
        down: LinkConfig,
    ) -> HostId {
        assert!(!addrs.is_empty() && addrs.len() <= 8, "a host needs one to eight addresses");
        let id = HostId(self.hosts.len());
        for &a in addrs {
            if let Some(other) = self.owners.insert(a, id) {
                panic!("{a} already belongs to host {}", self.hosts[other.0].name);
            }
        }
        let mut device = Device { rx: Default::default(), tx: Vec::new(), mtu: up.mtu };
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = self.core.rng.next_u64();
        let mut iface = Interface::new(config, &mut device, to_smol(self.core.now));
        iface.update_ip_addrs(|list| {
            for &a in addrs {
                let prefix = if a.is_ipv4() { 32 } else { 128 };
                list.push(IpCidr::new(a.into(), prefix)).expect("at most eight addresses");
            }
        });
        if addrs.iter().any(IpAddr::is_ipv4) {
            iface.routes_mut().add_default_ipv4_route(GATEWAY_V4).expect("route table has room");
        }
        if addrs.iter().any(IpAddr::is_ipv6) {
            iface.routes_mut().add_default_ipv6_route(GATEWAY_V6).expect("route table has room");
        }
        self.hosts.push(Host {
            name: name.to_owned(),
            addrs: addrs.to_vec(),
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            ports: Ports::new(),
            apps: Vec::new(),
            up: Link { cfg: up, stats: LinkStats::default(), last_arrival: Instant::ZERO },
            down: Link { cfg: down, stats: LinkStats::default(), last_arrival: Instant::ZERO },
            wake: true,
            next_poll: None,
            observer: None,
            path_mtu: HashMap::new(),
            stats: HostStats::default(),
        });
        id
    }

    /// Run `app` on `host`; it first runs at the current time.
    pub fn add_app<A: App>(&mut self, host: HostId, app: A) -> AppHandle<A> {
        let h = &mut self.hosts[host.0];
        h.apps.push(Box::new(app));
        h.wake = true;
        AppHandle { host, index: h.apps.len() - 1, _app: PhantomData }
    }

    /// The app `handle` names.
    pub fn app<A: App>(&self, handle: &AppHandle<A>) -> &A {
        let app: &dyn core::any::Any = &*self.hosts[handle.host.0].apps[handle.index];
        app.downcast_ref().expect("handle names an app of its type")
    }

    /// The app `handle` names, for changing it; its host runs at once.
    pub fn app_mut<A: App>(&mut self, handle: &AppHandle<A>) -> &mut A {
        let host = &mut self.hosts[handle.host.0];
        host.wake = true;
        let app: &mut dyn core::any::Any = &mut *host.apps[handle.index];
        app.downcast_mut().expect("handle names an app of its type")
    }

    /// Act on `host`'s sockets directly (outside any app); the host's
    /// stack is polled at once afterwards.
    pub fn with_stack<R>(&mut self, host: HostId, f: impl FnOnce(&mut Stack<'_>) -> R) -> R {
        let now = self.core.now;
        set_clock(now);
        let h = &mut self.hosts[host.0];
        h.wake = true;
        let mut stack = Stack {
            now,
            iface: &mut h.iface,
            sockets: &mut h.sockets,
            ports: &mut h.ports,
            addrs: &h.addrs,
            mtu: h.device.mtu,
        };
        f(&mut stack)
    }

    /// Call `f` with every packet delivered to `host` (after checksum
    /// verification, before the host's stack sees it). Replaces any
    /// previous observer of that host.
    pub fn set_observer(&mut self, host: HostId, f: impl FnMut(Instant, &[u8]) + 'static) {
        self.hosts[host.0].observer = Some(Box::new(f));
    }

    /// Stop observing `host`.
    pub fn clear_observer(&mut self, host: HostId) {
        self.hosts[host.0].observer = None;
    }

    /// Put a hand-made packet on `host`'s link toward the middlebox, as if
    /// the host had sent it.
    pub fn send_raw(&mut self, host: HostId, packet: Vec<u8>) {
        self.core.send_over(&mut self.hosts[host.0], host, LinkDir::ToMiddlebox, packet);
    }

    /// Change one direction of `host`'s link, from now on (packets already
    /// in flight keep their fate).
    pub fn set_link(&mut self, host: HostId, dir: LinkDir, cfg: LinkConfig) {
        let h = &mut self.hosts[host.0];
        if dir == LinkDir::ToMiddlebox {
            h.device.mtu = cfg.mtu;
        }
        h.link(dir).cfg = cfg;
    }

    /// One direction of `host`'s link.
    pub fn link(&self, host: HostId, dir: LinkDir) -> &LinkConfig {
        let h = &self.hosts[host.0];
        match dir {
            LinkDir::ToMiddlebox => &h.up.cfg,
            LinkDir::ToHost => &h.down.cfg,
        }
    }

    /// What one direction of `host`'s link did so far.
    pub fn link_stats(&self, host: HostId, dir: LinkDir) -> LinkStats {
        let h = &self.hosts[host.0];
        match dir {
            LinkDir::ToMiddlebox => h.up.stats,
            LinkDir::ToHost => h.down.stats,
        }
    }

    /// The sum of every link's counters.
    pub fn total_link_stats(&self) -> LinkStats {
        let mut t = LinkStats::default();
        for s in self.hosts.iter().flat_map(|h| [h.up.stats, h.down.stats]) {
            t.sent += s.sent;
            t.lost += s.lost;
            t.duplicated += s.duplicated;
            t.delivered += s.delivered;
            t.too_big += s.too_big;
            t.delivered_bytes += s.delivered_bytes;
        }
        t
    }

    /// What happened at `host`.
    pub fn host_stats(&self, host: HostId) -> HostStats {
        self.hosts[host.0].stats
    }

    /// The path MTU `host` learnt toward `dst` from ICMP too-big errors, if any.
    pub fn path_mtu(&self, host: HostId, dst: IpAddr) -> Option<usize> {
        self.hosts[host.0].path_mtu.get(&dst).copied()
    }

    /// `host`'s name.
    pub fn host_name(&self, host: HostId) -> &str {
        &self.hosts[host.0].name
    }

    /// `host`'s addresses.
    pub fn host_addrs(&self, host: HostId) -> &[IpAddr] {
        &self.hosts[host.0].addrs
    }

    /// The host owning `addr`.
    pub fn host_of(&self, addr: IpAddr) -> Option<HostId> {
        self.owners.get(&addr).copied()
    }

    /// Every host, in the order added.
    pub fn hosts(&self) -> impl Iterator<Item = HostId> + use<M> {
        (0..self.hosts.len()).map(HostId)
    }

    /// The middlebox.
    pub fn middlebox(&self) -> &M {
        &self.middlebox
    }

    /// The middlebox, for changing it (configuration, counters).
    pub fn middlebox_mut(&mut self) -> &mut M {
        &mut self.middlebox
    }

    /// Network-wide counters.
    pub fn stats(&self) -> NetworkStats {
        self.core.stats
    }

    /// Current simulated time.
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// The packets captured so far. Do not hold the borrow across a step.
    pub fn capture(&self) -> Ref<'_, Capture> {
        self.core.capture.borrow()
    }

    /// A hash of every packet captured so far; see [`Capture::digest`].
    pub fn capture_digest(&self) -> u64 {
        self.core.capture.borrow().digest()
    }

    /// Write the retained capture to `path` as a pcap file.
    pub fn write_pcap(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.core.capture.borrow().write_pcap(path.as_ref())
    }

    /// A guard that writes the capture to `<pcap_dir>/<name>.pcap` if it is
    /// dropped while the thread panics (a failing assertion), and prints
    /// the path. See [`pcap_dir`](crate::pcap_dir).
    pub fn pcap_on_failure(&self, name: &str) -> PcapGuard {
        PcapGuard { capture: Rc::clone(&self.core.capture), name: name.to_owned() }
    }

    /// When the next thing happens: a packet arrives, a host's stack or app
    /// timer fires, or the middlebox's timer fires. `None` when nothing ever
    /// will.
    pub fn next_event_time(&self) -> Option<Instant> {
        let now = self.core.now;
        let mut next = self.core.queue.peek().map(|e| e.time);
        let mut earliest = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for h in &self.hosts {
            if h.wake {
                earliest(now);
            } else if let Some(t) = h.next_poll {
                earliest(t.max(now));
            }
        }
        if let Some(t) = self.middlebox_deadline() {
            earliest(t.max(now));
        }
        next
    }

    fn middlebox_deadline(&self) -> Option<Instant> {
        let t = self.middlebox.poll_timeout()?;
        Some(match self.timers_ran {
            Some(ran) if t <= ran => ran + Duration::from_nanos(1),
            _ => t,
        })
    }

    /// Advance to the next event time and process everything due then.
    /// Returns false, without moving time, if nothing is left to happen.
    pub fn step(&mut self) -> bool {
        let Some(t) = self.next_event_time() else {
            return false;
        };
        self.core.now = self.core.now.max(t);
        let now = self.core.now;
        self.core.stats.steps += 1;
        while self.core.queue.peek().is_some_and(|e| e.time <= now) {
            let Some(ev) = self.core.queue.pop() else { break };
            match ev.to {
                Target::Middlebox(from) => self.at_middlebox(from, ev.data),
                Target::Host(to) => self.at_host(to, ev.data),
            }
        }
        if self.middlebox_deadline().is_some_and(|t| t <= now) {
            self.timers_ran = Some(now);
            let mut out = std::mem::take(&mut self.outbox);
            self.middlebox.handle_timeout(now, &mut out);
            self.send_out(&mut out);
            self.outbox = out;
        }
        for i in 0..self.hosts.len() {
            let h = &self.hosts[i];
            if h.wake || h.next_poll.is_some_and(|t| t <= now) {
                self.service(i);
            }
        }
        true
    }

    /// Step until `done` holds (checked before every step) or the next event
    /// lies past `deadline`; in the latter case time moves to `deadline`.
    /// Returns whether `done` held.
    pub fn run_until(&mut self, deadline: Instant, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            match self.next_event_time() {
                Some(t) if t <= deadline => {
                    self.step();
                }
                _ => {
                    self.core.now = self.core.now.max(deadline);
                    return done(self);
                }
            }
        }
    }

    /// [`run_until`](Self::run_until) `now() + d`.
    pub fn run_for(&mut self, d: Duration, done: impl FnMut(&mut Self) -> bool) -> bool {
        let deadline = self.core.now + d;
        self.run_until(deadline, done)
    }

    /// Run everything due up to `now() + d`, then stop there.
    pub fn advance(&mut self, d: Duration) {
        self.run_for(d, |_| false);
    }

    fn at_middlebox(&mut self, from: HostId, data: Vec<u8>) {
        let now = self.core.now;
        let link = &mut self.hosts[from.0].up.stats;
        link.delivered += 1;
        link.delivered_bytes += data.len() as u64;
        self.core.capture.borrow_mut().record(now, from, LinkDir::ToMiddlebox, &data);
        self.core.stats.middlebox_in += 1;
        let mut out = std::mem::take(&mut self.outbox);
        self.middlebox.handle(now, data, &mut out);
        if !self.send_out(&mut out) {
            self.core.stats.dropped += 1;
        }
        self.outbox = out;
    }

    /// Send what left the middlebox, in its order; whether any of it was forwarded.
    fn send_out(&mut self, out: &mut Outbox) -> bool {
        let mut forwarded = false;
        for (packet, handed_in) in out.drain() {
            if handed_in {
                self.core.stats.forwarded += 1;
                forwarded = true;
            } else {
                self.core.stats.originated += 1;
            }
            self.route(packet);
        }
        forwarded
    }

    /// Send a packet leaving the middlebox toward the owner of its destination.
    fn route(&mut self, data: Vec<u8>) {
        let Some(to) = destination(&data).and_then(|a| self.owners.get(&a).copied()) else {
            self.core.stats.unroutable += 1;
            return;
        };
        self.core.send_over(&mut self.hosts[to.0], to, LinkDir::ToHost, data);
    }

    fn at_host(&mut self, to: HostId, mut data: Vec<u8>) {
        let now = self.core.now;
        let h = &mut self.hosts[to.0];
        h.down.stats.delivered += 1;
        h.down.stats.delivered_bytes += data.len() as u64;
        self.core.capture.borrow_mut().record(now, to, LinkDir::ToHost, &data);
        if !checksums_ok(&data) {
            h.stats.bad_checksum += 1;
            return;
        }
        if let Some(observe) = &mut h.observer {
            observe(now, &data);
        }
        if let Some(e) = parse_too_big(&data).filter(|e| h.addrs.contains(&e.src)) {
            h.lower_path_mtu(e);
        }
        h.stats.received += 1;
        mss_less_timestamps(&mut data);
        h.device.rx.push_back(data);
        h.wake = true;
    }

    /// Let host `i`'s stack and apps work until neither has anything left to
    /// do at the current time, then send what they produced.
    fn service(&mut self, i: usize) {
        let now = self.core.now;
        set_clock(now);
        let ts = to_smol(now);
        let h = &mut self.hosts[i];
        h.wake = false;
        if h.device.rx.iter().any(|p| pure_syn(p).is_some()) {
            h.demux_syns(ts);
        }
        // smoltcp sends at most one segment per socket per poll, so poll
        // until a poll sends nothing. Apps run once, after the first poll
        // took in everything that arrived: only arrivals (ACKs freeing send
        // buffer, data, state changes) and timers give them something new,
        // and both were handled by then.
        let mut first = true;
        loop {
            let before = h.device.tx.len();
            h.iface.poll(ts, &mut h.device, &mut h.sockets);
            h.stats.polls += 1;
            let sent = h.device.tx.len() > before;
            if first {
                let mut stack = Stack {
                    now,
                    iface: &mut h.iface,
                    sockets: &mut h.sockets,
                    ports: &mut h.ports,
                    addrs: &h.addrs,
                    mtu: h.device.mtu,
                };
                for app in &mut h.apps {
                    app.poll(&mut stack);
                }
            } else if !sent {
                break;
            }
            first = false;
        }
        let stack_next = h.iface.poll_at(ts, &h.sockets).map(from_smol);
        let app_next = h.apps.iter().filter_map(|a| a.poll_at()).min();
        let next = match (stack_next, app_next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Whatever is still due now is retried one smoltcp tick later.
        h.next_poll = next.map(|t| t.max(now + Duration::from_micros(1)));
        h.stats.sent += h.device.tx.len() as u64;
        let mut tx = core::mem::take(&mut h.device.tx);
        for p in tx.drain(..) {
            let pieces = destination(&p).and_then(|d| h.path_mtu.get(&d)).and_then(|&mtu| segment(&p, mtu));
            match pieces {
                Some(pieces) => {
                    h.stats.resegmented += 1;
                    for piece in pieces {
                        self.core.send_over(h, HostId(i), LinkDir::ToMiddlebox, piece);
                    }
                }
                None => self.core.send_over(h, HostId(i), LinkDir::ToMiddlebox, p),
            }
        }
        h.device.tx = tx;
    }
}
