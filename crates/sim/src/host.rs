//! A host: a smoltcp interface on an IP-medium link, its sockets, and the
//! applications driving them.

use core::any::Any;
use core::fmt;
use core::marker::PhantomData;
use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;

use rvs_core::{Endpoint, Instant};
use smoltcp::iface::{Context, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::IpEndpoint;

/// Names a host of a [`Network`](crate::Network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub(crate) usize);

impl HostId {
    /// Position in the order hosts were added, from zero.
    pub fn index(self) -> usize {
        self.0
    }
}

std::thread_local! {
    /// The simulated time of the host being serviced, for smoltcp's TCP
    /// timestamp clock, which is a plain function.
    static CLOCK: core::cell::Cell<Instant> = const { core::cell::Cell::new(Instant::ZERO) };
}

/// Set the clock [`tsval`] reads; the network does before it runs a host.
pub(crate) fn set_clock(now: Instant) {
    CLOCK.with(|c| c.set(now));
}

/// A TCP timestamp value (RFC 7323 §5.4): simulated milliseconds.
pub(crate) fn tsval() -> u32 {
    CLOCK.with(|c| (c.get().as_nanos() / 1_000_000) as u32)
}

/// smoltcp time is microseconds; simulator time is nanoseconds.
pub(crate) fn to_smol(t: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(i64::try_from(t.as_nanos() / 1000).unwrap_or(i64::MAX))
}

pub(crate) fn from_smol(t: smoltcp::time::Instant) -> Instant {
    Instant::from_nanos(u64::try_from(t.total_micros()).unwrap_or(0).saturating_mul(1000))
}

pub(crate) fn to_smol_endpoint(e: Endpoint) -> IpEndpoint {
    IpEndpoint::new(e.addr.into(), e.port)
}

pub(crate) fn from_smol_endpoint(e: IpEndpoint) -> Endpoint {
    Endpoint::new(e.addr.into(), e.port)
}

/// The host's network device: packets handed to smoltcp and taken from it.
#[derive(Debug)]
pub(crate) struct Device {
    pub(crate) rx: VecDeque<Vec<u8>>,
    pub(crate) tx: Vec<Vec<u8>>,
    pub(crate) mtu: usize,
}

#[derive(Debug)]
pub(crate) struct RxToken(Vec<u8>);

#[derive(Debug)]
pub(crate) struct TxToken<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl phy::Device for Device {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(RxToken, TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((RxToken(p), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // Compute checksums on the way out, but leave checking incoming ones
        // to the network, which counts failures instead of hiding them.
        let mut ck = ChecksumCapabilities::default();
        ck.ipv4 = Checksum::Tx;
        ck.tcp = Checksum::Tx;
        ck.udp = Checksum::Tx;
        ck.icmpv4 = Checksum::Tx;
        ck.icmpv6 = Checksum::Tx;
        caps.checksum = ck;
        caps
    }
}

/// First port handed out by [`Stack::alloc_port`] (the Linux default range).
pub const EPHEMERAL_FIRST: u16 = 32768;
/// Last port handed out by [`Stack::alloc_port`].
pub const EPHEMERAL_LAST: u16 = 60999;

/// Ephemeral ports of one host, handed out round-robin so a port is reused
/// as late as possible, and never while still held.
#[derive(Debug)]
pub(crate) struct Ports {
    next: u16,
    held: BTreeSet<u16>,
}

impl Ports {
    pub(crate) fn new() -> Self {
        Self { next: EPHEMERAL_FIRST, held: BTreeSet::new() }
    }

    fn alloc(&mut self) -> Option<u16> {
        let span = usize::from(EPHEMERAL_LAST - EPHEMERAL_FIRST) + 1;
        for _ in 0..span {
            let p = self.next;
            self.next = if p == EPHEMERAL_LAST { EPHEMERAL_FIRST } else { p + 1 };
            if self.held.insert(p) {
                return Some(p);
            }
        }
        None
    }
}

/// What an [`App`] sees of its host while it runs: the host's sockets and
/// addresses, the current time, and the host's ephemeral ports.
pub struct Stack<'a> {
    pub(crate) now: Instant,
    pub(crate) iface: &'a mut Interface,
    pub(crate) sockets: &'a mut SocketSet<'static>,
    pub(crate) ports: &'a mut Ports,
    pub(crate) addrs: &'a [IpAddr],
    pub(crate) mtu: usize,
}

impl fmt::Debug for Stack<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack").field("now", &self.now).field("addrs", &self.addrs).finish_non_exhaustive()
    }
}

impl Stack<'_> {
    /// Current simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The host's addresses, in the order they were given.
    pub fn addrs(&self) -> &[IpAddr] {
        self.addrs
    }

    /// The host's first address of the same family as `peer`.
    pub fn addr_for(&self, peer: IpAddr) -> Option<IpAddr> {
        self.addrs.iter().copied().find(|a| a.is_ipv4() == peer.is_ipv4())
    }

    /// The MTU of the host's outgoing link.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Add a TCP socket with `rx` and `tx` bytes of buffer.
    pub fn add_tcp(&mut self, rx: usize, tx: usize) -> SocketHandle {
        let s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; rx]), tcp::SocketBuffer::new(vec![0; tx]));
        self.sockets.add(s)
    }

    /// Add a UDP socket able to queue `packets` datagrams of `bytes` total
    /// each way.
    pub fn add_udp(&mut self, packets: usize, bytes: usize) -> SocketHandle {
        let buf = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; bytes]);
        self.sockets.add(udp::Socket::new(buf(), buf()))
    }

    /// The TCP socket `h`. Panics if `h` is not a TCP socket of this host.
    pub fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket<'static>>(h)
    }

    /// The UDP socket `h`. Panics if `h` is not a UDP socket of this host.
    pub fn udp(&mut self, h: SocketHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket<'static>>(h)
    }

    /// Start connecting TCP socket `h` from `local` to `remote`.
    pub fn connect(
        &mut self,
        h: SocketHandle,
        remote: Endpoint,
        local: Endpoint,
    ) -> Result<(), tcp::ConnectError> {
        let cx = self.iface.context();
        self.sockets.get_mut::<tcp::Socket<'static>>(h).connect(
            cx,
            to_smol_endpoint(remote),
            to_smol_endpoint(local),
        )
    }

    /// Remove socket `h` from the host.
    pub fn remove(&mut self, h: SocketHandle) {
        self.sockets.remove(h);
    }

    /// An ephemeral port no other app of this host holds, or `None` if all
    /// are held. Ports are handed out round-robin from
    /// [`EPHEMERAL_FIRST`]..=[`EPHEMERAL_LAST`].
    pub fn alloc_port(&mut self) -> Option<u16> {
        self.ports.alloc()
    }

    /// Give back a port from [`alloc_port`](Self::alloc_port).
    pub fn release_port(&mut self, port: u16) {
        self.ports.held.remove(&port);
    }

    /// The whole socket set, for apps that need more than the helpers.
    pub fn sockets(&mut self) -> &mut SocketSet<'static> {
        self.sockets
    }

    /// The interface context smoltcp wants for some socket calls.
    pub fn context(&mut self) -> &mut Context {
        self.iface.context()
    }
}

/// Code running on a host against its smoltcp sockets: a client, a server,
/// or anything a test needs.
///
/// Each time the network services a host (packets arrived for it, one of
/// its stack's timers is due, an app's own [`poll_at`](Self::poll_at) is
/// due, or the test touched the host through
/// [`Network::app_mut`](crate::Network::app_mut) or
/// [`Network::with_stack`](crate::Network::with_stack)), it polls the stack,
/// which takes in every arrival, then runs the host's apps once, then polls
/// the stack until it has sent everything the apps queued.
pub trait App: Any {
    /// Look at the sockets and act. Called often: cheap when nothing changed.
    fn poll(&mut self, stack: &mut Stack<'_>);

    /// When this app next wants to run even if the network stays quiet
    /// (connection starts, retries, timeouts).
    fn poll_at(&self) -> Option<Instant> {
        None
    }
}

/// Typed name of an app added to a host; see
/// [`Network::app`](crate::Network::app).
pub struct AppHandle<A> {
    pub(crate) host: HostId,
    pub(crate) index: usize,
    pub(crate) _app: PhantomData<fn() -> A>,
}

impl<A> AppHandle<A> {
    /// The host the app runs on.
    pub fn host(&self) -> HostId {
        self.host
    }
}

impl<A> Clone for AppHandle<A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A> Copy for AppHandle<A> {}

impl<A> fmt::Debug for AppHandle<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppHandle")
            .field("host", &self.host)
            .field("index", &self.index)
            .field("type", &core::any::type_name::<A>())
            .finish()
    }
}

/// What happened at one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Packets the host's stack sent.
    pub sent: u64,
    /// Packets delivered to the host's stack.
    pub received: u64,
    /// Packets that arrived with a wrong IP or transport checksum, dropped
    /// before the stack saw them.
    pub bad_checksum: u64,
    /// Times the host's stack was polled.
    pub polls: u64,
    /// SYNs dropped because every listening socket of their port was
    /// taken (a full accept queue).
    pub listen_overflow: u64,
    /// ICMP too-big errors that lowered the host's path MTU toward a destination.
    pub path_mtu_lowered: u64,
    /// TCP segments the host cut to fit a lowered path MTU.
    pub resegmented: u64,
}
