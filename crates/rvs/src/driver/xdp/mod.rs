//! The AF_XDP driver: an XDP program (`steer.bpf.c`) on each configured
//! interface sends the balancer's own traffic to the AF_XDP socket of the
//! worker that owns it and passes the rest to the kernel.
//!
//! Worker `w` has a socket on queue `w` of every interface (copy mode, or
//! zero-copy where the driver offers it). A frame of worker `w` that arrives
//! on another queue cannot enter that socket (the kernel binds a socket to
//! one queue), so the program redirects it into worker `w`'s hand-over veth
//! pair ([`Handovers`]); the far end runs the `deliver` program and holds
//! one more socket of worker `w`.
//!
//! [`Steering`] owns the loaded programs and the maps that say what is ours
//! (services, VIPs, LIPs, one set per address family); the control plane
//! keeps them in step with the model. [`XskPort`] is one socket with its memory and rings, owned by a
//! data-path worker, and [`NextHops`] tells the worker which port and
//! Ethernet address a packet leaves by.

pub(crate) mod fast_path;
mod handover;
mod nexthop;
#[cfg(test)]
mod prog_run;
#[cfg(test)]
mod steer_tests;
mod syn_cookie;
#[cfg(test)]
mod syn_cookie_tests;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use aya::maps::{Array, DevMap, HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{SocketFilter, Xdp, XdpFlags};
use rvs_control::config::XdpMode;
use rvs_control::model::Model;
use rvs_control::snapshot::SteerSnap;
use rvs_core::Proto;
use rvs_wire::ethernet::{self, EthernetAddress};
use rvs_wire::{ipv4, ipv6};
use xdp::slab::{HeapSlab, Slab};
use xdp::socket::{XdpSocket, XdpSocketBuilder};
use xdp::umem::{FrameSize, UmemCfgBuilder};
use xdp::{Packet, RingConfigBuilder, Rings, Umem};

pub(crate) use fast_path::FastPathMaps;
pub(crate) use handover::Handovers;
pub(crate) use nexthop::NextHops;
pub(crate) use syn_cookie::SynCookies;

/// The programs, built from `steer.bpf.c` by `scripts/build-bpf` and
/// committed, so building rvs needs no clang (a test checks that the object
/// is what the source gives).
static PROGRAM: &[u8] = aya::include_bytes_aligned!("steer.bpf.o");

/// Slots in the program's socket map (`MAX_SLOTS` in steer.bpf.c).
const MAX_SLOTS: u32 = 1024;
/// Slots each interface reserves, one per worker (`MAX_WORKERS` in steer.bpf.c).
const SLOTS_PER_INTERFACE: u32 = rvs_control::config::MAX_WORKERS as u32;
/// The last interface's slots hold the sockets on the hand-over veths.
const HANDOVER_SLOTS: u32 = MAX_SLOTS - SLOTS_PER_INTERFACE;
/// Ethernet header length.
const ETH_LEN: usize = ethernet::HEADER_LEN;
/// Frames per socket (4 KiB each): half for receiving, half for sending.
const FRAMES: u32 = 4096;
/// Entries in each of the four rings.
const RING: u32 = 2048;

/// The programs (XDP on every interface, and the TUN device's steering)
/// and the maps the control plane fills.
pub(crate) struct Steering {
    // Programs detach when the loaded object is dropped.
    ebpf: aya::Ebpf,
    v4: Owned<[u8; 8], u32>,
    v6: Owned<[u8; 20], [u8; 16]>,
    settings: Array<MapData, u32>,
    steered: PerCpuArray<MapData, u64>,
    xsks: XskMap<MapData>,
    ifaces: HashMap<MapData, u32, u32>,
    devices: DevMap<MapData>,
    syn_cookies: SynCookies,
    workers: u32,
    /// Why the fast path cannot run, when it cannot (`None`: it can).
    fast_path_refused: Option<String>,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services = self.v4.loaded.services.len() + self.v6.loaded.services.len();
        f.debug_struct("Steering").field("services", &services).finish_non_exhaustive()
    }
}

/// The keys of one address family's maps: services (`S`), and VIPs and
/// LIPs (`A`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Keys<S, A> {
    services: BTreeSet<S>,
    vips: BTreeSet<A>,
    laddrs: BTreeSet<A>,
}

impl<S, A> Default for Keys<S, A> {
    fn default() -> Self {
        Self { services: BTreeSet::new(), vips: BTreeSet::new(), laddrs: BTreeSet::new() }
    }
}

/// One address family's maps of what is ours, and the keys now in them.
struct Owned<S, A> {
    services: HashMap<MapData, S, u32>,
    vips: HashMap<MapData, A, u32>,
    laddrs: HashMap<MapData, A, u32>,
    loaded: Keys<S, A>,
}

impl<S: aya::Pod + Ord, A: aya::Pod + Ord> Owned<S, A> {
    /// Take the maps `services{suffix}`, `vips{suffix}`, `laddrs{suffix}`.
    fn take(ebpf: &mut aya::Ebpf, suffix: &str) -> io::Result<Self> {
        Ok(Self {
            services: take_map(ebpf, &format!("services{suffix}"))?,
            vips: take_map(ebpf, &format!("vips{suffix}"))?,
            laddrs: take_map(ebpf, &format!("laddrs{suffix}"))?,
            loaded: Keys::default(),
        })
    }

    /// Make the maps hold exactly `wanted`.
    fn sync(&mut self, wanted: Keys<S, A>) -> io::Result<()> {
        // Additions first: a LIP that moves between services never misses a packet.
        for k in wanted.services.difference(&self.loaded.services) {
            self.services.insert(k, 1, 0).map_err(|e| bpf_err("services map", e))?;
        }
        for k in wanted.vips.difference(&self.loaded.vips) {
            self.vips.insert(k, 1, 0).map_err(|e| bpf_err("VIP map", e))?;
        }
        for k in wanted.laddrs.difference(&self.loaded.laddrs) {
            self.laddrs.insert(k, 1, 0).map_err(|e| bpf_err("LIP map", e))?;
        }
        for k in self.loaded.services.difference(&wanted.services) {
            let _ = self.services.remove(k);
        }
        for k in self.loaded.vips.difference(&wanted.vips) {
            let _ = self.vips.remove(k);
        }
        for k in self.loaded.laddrs.difference(&wanted.laddrs) {
            let _ = self.laddrs.remove(k);
        }
        self.loaded = wanted;
        Ok(())
    }
}

/// Take map `name` out of the loaded object as a `T`.
fn take_map<T: TryFrom<aya::maps::Map>>(ebpf: &mut aya::Ebpf, name: &str) -> io::Result<T>
where
    T::Error: std::fmt::Display,
{
    let map = ebpf.take_map(name).ok_or_else(|| bpf_err("BPF programs", format!("no map {name}")))?;
    map.try_into().map_err(|e| bpf_err(&format!("map {name}"), e))
}

fn bpf_err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

/// The fast path's flow map, by far the largest (`fast_path.bpf.h`).
const FLOWS: &str = "flows";

/// Load the object; without `fast_path` its flow map is made as small as
/// it can be (the stage never runs, and the kernel holds no memory for it).
fn load_object(fast_path: bool) -> Result<aya::Ebpf, aya::EbpfError> {
    let mut loader = aya::EbpfLoader::new();
    if !fast_path {
        loader.set_max_entries(FLOWS, 64);
    }
    loader.load(PROGRAM)
}

/// `_IOR('T', 224, int)` from `linux/if_tun.h`.
const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;

/// Key of the `services` map: VIP and port in network order, protocol, pad.
fn service_key(vip: Ipv4Addr, port: u16, proto: Proto) -> [u8; 8] {
    let [a, b, c, d] = vip.octets();
    let [p0, p1] = port.to_be_bytes();
    [a, b, c, d, p0, p1, proto_number(proto), 0]
}

/// Key of the `services6` map (`struct service6_key`): the same with an IPv6 VIP.
fn service6_key(vip: Ipv6Addr, port: u16, proto: Proto) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..16].copy_from_slice(&vip.octets());
    key[16..18].copy_from_slice(&port.to_be_bytes());
    key[18] = proto_number(proto);
    key
}

fn proto_number(proto: Proto) -> u8 {
    match proto {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

/// An IPv4 address as the program reads it from a packet (network order in memory).
fn addr_key(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

impl Steering {
    /// Load the programs for `workers` workers, the fast path's maps full
    /// size; nothing is attached yet.
    #[cfg(test)]
    pub(crate) fn load(workers: u32) -> io::Result<Self> {
        Self::load_with(workers, true)
    }

    /// Load the programs for `workers` workers; nothing is attached yet.
    /// With `fast_path`, the fast path's maps are made full size; when the
    /// kernel refuses them (memory, map type), the programs load without
    /// them and [`fast_path_refused`](Self::fast_path_refused) says why.
    pub(crate) fn load_with(workers: u32, fast_path: bool) -> io::Result<Self> {
        if workers == 0 || workers > SLOTS_PER_INTERFACE {
            return Err(bpf_err("BPF programs", format!("{workers} workers")));
        }
        let (mut ebpf, mut refused) = match load_object(fast_path) {
            Ok(ebpf) => (ebpf, None),
            Err(e) if fast_path => {
                let ebpf = load_object(false).map_err(|e| bpf_err("load the BPF programs", e))?;
                (ebpf, Some(format!("the kernel refused its maps: {e}")))
            }
            Err(e) => return Err(bpf_err("load the BPF programs", e)),
        };
        if !fast_path {
            refused = Some("fast_path = false".to_owned());
        } else if refused.is_none() && ebpf.map(FLOWS).is_none() {
            refused = Some("the XDP program has no flow map".to_owned());
        }
        let mut settings: Array<MapData, u32> = take_map(&mut ebpf, "settings")?;
        // The programs pass everything (and pick queue 0) while this is 0.
        settings.set(0, workers, 0).map_err(|e| bpf_err("settings map", e))?;
        Ok(Self {
            v4: Owned::take(&mut ebpf, "")?,
            v6: Owned::take(&mut ebpf, "6")?,
            steered: take_map(&mut ebpf, "steered")?,
            xsks: take_map(&mut ebpf, "xsks")?,
            ifaces: take_map(&mut ebpf, "ifaces")?,
            devices: take_map(&mut ebpf, "handover")?,
            syn_cookies: SynCookies::take(&mut ebpf)?,
            settings,
            ebpf,
            workers,
            fast_path_refused: refused,
        })
    }

    /// Why the fast path cannot run here; `None` when it can.
    pub(crate) fn fast_path_refused(&self) -> Option<&str> {
        self.fast_path_refused.as_deref()
    }

    /// Switch the fast path's stages on (established flows, and SYN
    /// cookies on the program's clock: CLOCK_MONOTONIC plus
    /// `clock_offset`) and take the flow maps, unless it was refused; a
    /// failure here refuses it too (the stages stay off).
    pub(crate) fn enable_fast_path(&mut self, clock_offset: u64) -> Option<FastPathMaps> {
        if self.fast_path_refused.is_some() {
            return None;
        }
        let enabled = self.take_fast_path().and_then(|maps| {
            self.syn_cookies.set_clock_offset(clock_offset)?;
            self.set_stages(fast_path::FAST_PATH_ON | fast_path::SYN_COOKIES_ON)?;
            Ok(maps)
        });
        match enabled {
            Ok(maps) => Some(maps),
            Err(e) => {
                let _ = self.set_stages(0);
                self.fast_path_refused = Some(e.to_string());
                None
            }
        }
    }

    /// Attach `steer` to every interface, with worker `w`'s socket on it
    /// (`ports[w][i]` for interface `i`) in the socket map, and `deliver` to
    /// the far end of every hand-over pair, whose socket is `ports[w]`'s
    /// last entry when `handovers` is not empty. Returns each interface's
    /// mode (`name:native`, `name:generic`).
    pub(crate) fn attach_xdp(
        &mut self,
        ports: &[Vec<XskPort>],
        handovers: &Handovers,
        mode: XdpMode,
    ) -> io::Result<Vec<String>> {
        if ports.len() as u32 != self.workers {
            return Err(bpf_err(
                "XDP program",
                format!("{} workers' sockets for {} workers", ports.len(), self.workers),
            ));
        }
        let interfaces = handovers.interfaces;
        if interfaces as u32 * SLOTS_PER_INTERFACE > HANDOVER_SLOTS {
            return Err(bpf_err("XDP program", "too many interfaces"));
        }
        let mut attach_to = Vec::new();
        for (w, own) in ports.iter().enumerate() {
            for (i, port) in own.iter().take(interfaces).enumerate() {
                let slot = i as u32 * SLOTS_PER_INTERFACE + w as u32;
                self.xsks.set(slot, port.socket.raw_fd(), 0).map_err(|e| bpf_err("socket map", e))?;
                if w == 0 {
                    self.ifaces.insert(port.ifindex, slot, 0).map_err(|e| bpf_err("interface map", e))?;
                    attach_to.push((port.ifindex, port.name.clone()));
                }
            }
        }
        let mut deliver_to = Vec::new();
        for (w, pair) in handovers.pairs.iter().enumerate() {
            let port =
                ports[w].get(interfaces).ok_or_else(|| bpf_err("XDP program", "no hand-over socket"))?;
            let slot = HANDOVER_SLOTS + w as u32;
            self.xsks.set(slot, port.socket.raw_fd(), 0).map_err(|e| bpf_err("socket map", e))?;
            self.ifaces.insert(pair.far, slot, 0).map_err(|e| bpf_err("interface map", e))?;
            self.devices.set(w as u32, pair.near, None, 0).map_err(|e| bpf_err("hand-over map", e))?;
            deliver_to.push((pair.far, pair.far_name.clone()));
        }
        let modes = self.attach(&attach_to, "steer", mode)?;
        // A frame redirected into a veth reaches its peer only where the
        // peer runs a native program.
        self.attach(&deliver_to, "deliver", XdpMode::Native)?;
        Ok(modes)
    }

    /// Load the XDP program `name` and attach it to each of `to`; the mode
    /// each interface got, by name, for the log.
    fn attach(&mut self, to: &[(u32, String)], name: &str, mode: XdpMode) -> io::Result<Vec<String>> {
        let p: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| bpf_err("XDP program", format!("no program {name}")))?
            .try_into()
            .map_err(|e| bpf_err("XDP program", e))?;
        p.load().map_err(|e| bpf_err(&format!("load the XDP program {name} into the kernel"), e))?;
        let mut got = Vec::with_capacity(to.len());
        for (index, ifname) in to {
            let fail =
                |mode: &str, e| bpf_err(&format!("attach the XDP program to {ifname} ({mode} mode)"), e);
            let used = match mode {
                XdpMode::Native => p
                    .attach_to_if_index(*index, XdpFlags::DRV_MODE)
                    .map(|_| "native")
                    .map_err(|e| fail("native", e))?,
                XdpMode::Generic => p
                    .attach_to_if_index(*index, XdpFlags::SKB_MODE)
                    .map(|_| "generic")
                    .map_err(|e| fail("generic", e))?,
                // A driver without XDP refuses the native attach at once.
                XdpMode::Auto => match p.attach_to_if_index(*index, XdpFlags::DRV_MODE) {
                    Ok(_) => "native",
                    Err(_) => p
                        .attach_to_if_index(*index, XdpFlags::SKB_MODE)
                        .map(|_| "generic")
                        .map_err(|e| fail("generic", e))?,
                },
            };
            got.push(format!("{ifname}:{used}"));
        }
        Ok(got)
    }

    /// Make `tun_steer` pick the TUN device's queue for everything the
    /// kernel routes to rvs: one queue per worker, the owner of each
    /// packet's flow or local port.
    pub(crate) fn steer_tun(&mut self, tun: &impl AsRawFd) -> io::Result<()> {
        let p: &mut SocketFilter = self
            .ebpf
            .program_mut("tun_steer")
            .ok_or_else(|| bpf_err("BPF programs", "no program tun_steer"))?
            .try_into()
            .map_err(|e| bpf_err("BPF programs", e))?;
        p.load().map_err(|e| bpf_err("load the TUN steering program into the kernel", e))?;
        let fd = p.fd().map_err(|e| bpf_err("TUN steering program", e))?;
        let raw: libc::c_int = fd.as_fd().as_raw_fd();
        // SAFETY: TUNSETSTEERINGEBPF reads one int (a program's descriptor)
        // from a live local; the kernel takes its own reference.
        if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETSTEERINGEBPF, &raw) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("set the TUN device's steering program: {e}")));
        }
        Ok(())
    }

    /// The SYN-cookie stage's maps.
    pub(crate) fn syn_cookies(&mut self) -> &mut SynCookies {
        &mut self.syn_cookies
    }

    /// Take the fast path's maps; once, before the programs are attached.
    pub(crate) fn take_fast_path(&mut self) -> io::Result<FastPathMaps> {
        FastPathMaps::take(&mut self.ebpf)
    }

    /// Run the stages before steering that `flags` name
    /// ([`fast_path::FAST_PATH_ON`], [`fast_path::SYN_COOKIES_ON`]); 0 runs none.
    pub(crate) fn set_stages(&mut self, flags: u32) -> io::Result<()> {
        self.settings.set(1, flags, 0).map_err(|e| bpf_err("settings map", e))
    }

    /// The programs' counts so far, summed over CPUs.
    pub(crate) fn counts(&self) -> io::Result<SteerSnap> {
        let get = |i: u32| -> io::Result<u64> {
            let per_cpu = self.steered.get(&i, 0).map_err(|e| bpf_err("map steered", e))?;
            Ok(per_cpu.iter().sum())
        };
        Ok(SteerSnap {
            direct: get(0)?,
            handed_over: get(1)?,
            passed: get(2)?,
            delivered: get(3)?,
            dropped: get(4)?,
        })
    }

    /// Bring the maps in line with the model's services and local
    /// addresses; a service's VIP and its LIPs may be of different families
    /// (NAT64, NAT46), each goes to its own family's maps.
    pub(crate) fn sync(&mut self, model: &Model) -> io::Result<()> {
        let (mut v4, mut v6) = (Keys::default(), Keys::default());
        for ((proto, vip), spec) in &model.services {
            match vip.addr {
                IpAddr::V4(addr) => {
                    v4.services.insert(service_key(addr, vip.port, *proto));
                    v4.vips.insert(addr_key(addr));
                }
                IpAddr::V6(addr) => {
                    v6.services.insert(service6_key(addr, vip.port, *proto));
                    v6.vips.insert(addr.octets());
                }
            }
            for laddr in &spec.config.laddrs {
                match laddr {
                    IpAddr::V4(a) => v4.laddrs.insert(addr_key(*a)),
                    IpAddr::V6(a) => v6.laddrs.insert(a.octets()),
                };
            }
        }
        self.v4.sync(v4)?;
        self.v6.sync(v6)
    }

    /// Pass everything to the kernel from now on (before the sockets close).
    pub(crate) fn stop(&mut self) {
        let _ = self.settings.set(0, 0, 0);
    }
}

/// One AF_XDP socket bound to one queue of an interface, with its own
/// memory: frames received are lent to the worker until it sends them back
/// out of this socket or gives them back; packets for this socket from
/// elsewhere are copied in.
pub(crate) struct XskPort {
    pub(crate) ifindex: u32,
    pub(crate) name: String,
    pub(crate) mac: [u8; 6],
    /// The program runs in the driver on this interface (native XDP), not
    /// on the kernel's generic path: a frame it redirects here from another
    /// interface's native program needs this one native too.
    pub(crate) native: bool,
    // Declared before the socket and the memory so they unmap first.
    rings: Rings,
    socket: XdpSocket,
    umem: Umem,
    rx: HeapSlab,
    tx: HeapSlab,
    /// Frames given to the kernel through the fill ring and not yet received.
    filling: usize,
    /// Frames in the send ring that the kernel has not been told about.
    unsent: bool,
}

impl std::fmt::Debug for XskPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskPort")
            .field("name", &self.name)
            .field("ifindex", &self.ifindex)
            .finish_non_exhaustive()
    }
}

// SAFETY: the port owns its memory, rings and socket outright; the raw
// pointers inside the `xdp` types point only into mappings the port owns,
// and the port moves to the worker thread as a whole.
unsafe impl Send for XskPort {}

/// How long [`XskPort::open`] waits for a queue a closed socket still holds.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Why one attempt to open a port failed: a busy queue is worth another try.
enum OpenError {
    Busy(io::Error),
    Other(io::Error),
}
use OpenError::{Busy, Other};

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        Other(e)
    }
}

fn xsk_err(what: &str, name: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what} on {name}: {e}"))
}

impl XskPort {
    /// Open a socket on `queue` of interface `name`, with `batch` packets per receive.
    ///
    /// A queue still held by a socket that was just closed (a restart: the
    /// kernel frees a closed socket's queue in deferred work, after the old
    /// process has exited) answers "busy" for a moment; that is waited out
    /// for up to [`BUSY_WAIT`], then reported.
    pub(crate) fn open(name: &str, queue: u32, batch: usize) -> io::Result<Self> {
        let deadline = std::time::Instant::now() + BUSY_WAIT;
        loop {
            match Self::open_once(name, queue, batch) {
                Err(Busy(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(Busy(e)) | Err(Other(e)) => return Err(e),
                Ok(port) => return Ok(port),
            }
        }
    }

    fn open_once(name: &str, queue: u32, batch: usize) -> Result<Self, OpenError> {
        let c = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `c` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if ifindex == 0 {
            return Err(Other(io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}"))));
        }
        let mac = hardware_addr(name)?;
        let cfg = UmemCfgBuilder { frame_size: FrameSize::FourK, frame_count: FRAMES, ..Default::default() }
            .build()
            .map_err(|e| xsk_err("AF_XDP memory", name, e))?;
        let mut umem = Umem::map(cfg).map_err(|e| xsk_err("AF_XDP memory", name, e))?;
        let mut builder = XdpSocketBuilder::new().map_err(|e| xsk_err("AF_XDP socket", name, e))?;
        let rcfg =
            RingConfigBuilder { rx_count: RING, tx_count: RING, fill_count: RING, completion_count: RING }
                .build()
                .map_err(|e| xsk_err("AF_XDP rings", name, e))?;
        let (mut rings, flags) =
            builder.build_rings(&umem, rcfg).map_err(|e| xsk_err("AF_XDP rings", name, e))?;
        // Neither copy nor zero-copy is forced: the kernel takes zero-copy
        // where the driver offers it and copies otherwise (veth, bridges).
        let socket = builder.bind(xdp::nic::NicIndex(ifindex), queue, flags).map_err(|e| {
            let busy =
                matches!(&e, xdp::socket::SocketError::Bind(b) if b.raw_os_error() == Some(libc::EBUSY));
            let e = xsk_err(
                "bind AF_XDP socket",
                name,
                format!("queue {queue}: {e} (each worker needs a queue of its own on every interface)"),
            );
            if busy { Busy(e) } else { Other(e) }
        })?;
        // SAFETY: the memory outlives the socket: both live in the returned
        // port, which drops the rings and socket first.
        let filling = unsafe { rings.fill_ring.enqueue(&mut umem, RING as usize) };
        Ok(Self {
            ifindex,
            name: name.to_owned(),
            mac,
            rings,
            socket,
            umem,
            rx: HeapSlab::with_capacity(batch),
            tx: HeapSlab::with_capacity(1),
            filling,
            unsent: false,
            native: false,
        })
    }

    /// Hand each received frame that carries IPv4 or IPv6 to `take`, up to
    /// a batch, trimmed to the IP packet's end (link-layer padding of frames
    /// shorter than 60 bytes stays behind) and with its checksums completed;
    /// other frames go back at once. Each frame taken must come back by
    /// [`forward`](Self::forward) or [`free`](Self::free).
    pub(crate) fn recv(&mut self, mut take: impl FnMut(Packet)) {
        let Some(rx) = self.rings.rx_ring.as_mut() else { return };
        // SAFETY: every packet comes back to `umem` (sent or freed), which
        // outlives the socket.
        let got = unsafe { rx.recv(&self.umem, &mut self.rx) };
        while let Some(mut frame) = self.rx.pop_back() {
            // The program redirects IPv4 and IPv6 only; anything else is not ours.
            let ethertype = ethernet::Frame::new_unchecked(&frame[..]).ethertype();
            let ip = &frame[ETH_LEN.min(frame.len())..];
            // The IP packet's length by its header; one past the frame is
            // the engine's to judge.
            let (header, total) = match ethertype {
                ethernet::ethertype::IPV4 if ip.len() > ipv4::HEADER_LEN => {
                    (ipv4::HEADER_LEN, usize::from(ipv4::Packet::new_unchecked(ip).total_len()))
                }
                ethernet::ethertype::IPV6 if ip.len() >= ipv6::HEADER_LEN => (
                    ipv6::HEADER_LEN,
                    ipv6::HEADER_LEN + usize::from(ipv6::Packet::new_unchecked(ip).payload_len()),
                ),
                _ => {
                    self.umem.free_packet(frame);
                    continue;
                }
            };
            let ip_len = ip.len();
            if (header..ip_len).contains(&total) {
                let _ = frame.adjust_tail(-((ip_len - total) as i32));
            }
            // Senders with checksum offload (veth by default) leave TCP and
            // UDP checksums partial; the kernel would finish them on the way
            // out, but these frames never reach it.
            let ip = Self::ip_packet(&mut frame);
            if ethertype == ethernet::ethertype::IPV4 {
                rvs_wire::checksum::complete_partial_ipv4(ip);
            } else {
                rvs_wire::checksum::complete_partial_ipv6(ip);
            }
            take(frame);
        }
        self.filling = self.filling.saturating_sub(got);
        self.refill();
    }

    /// The IP packet in a frame [`recv`](Self::recv) handed over.
    pub(crate) fn ip_packet(frame: &mut Packet) -> &mut [u8] {
        frame.get_mut(ETH_LEN..).unwrap_or_default()
    }

    /// Send a frame this port received back out of it to `dst_mac`, in its
    /// own memory; false (the frame freed) when the send ring is full.
    pub(crate) fn forward(&mut self, mut frame: Packet, dst_mac: [u8; 6]) -> bool {
        let ethertype = ethertype_of(frame.get(ETH_LEN..).unwrap_or_default());
        self.ethernet_header(&mut frame[..], dst_mac, ethertype);
        self.queue(frame)
    }

    /// Write the Ethernet header from this port to `dst_mac` into `frame`.
    fn ethernet_header(&self, frame: &mut [u8], dst_mac: [u8; 6], ethertype: u16) {
        let mut eth = ethernet::Frame::new_unchecked(frame);
        eth.set_dst_addr(EthernetAddress(dst_mac));
        eth.set_src_addr(EthernetAddress(self.mac));
        eth.set_ethertype(ethertype);
    }

    /// Give back a frame this port received.
    pub(crate) fn free(&mut self, frame: Packet) {
        self.umem.free_packet(frame);
    }

    /// Top the fill ring up, also with frames that came back from sending
    /// since a time when none were free.
    fn refill(&mut self) {
        if self.filling < RING as usize {
            // SAFETY: as at open: the memory outlives the socket.
            self.filling +=
                unsafe { self.rings.fill_ring.enqueue(&mut self.umem, RING as usize - self.filling) };
        }
    }

    /// Queue one IPv4 or IPv6 packet to `dst_mac`, copied into a frame of
    /// this port's memory; false when no frame or ring slot is free.
    pub(crate) fn send(&mut self, dst_mac: [u8; 6], ip: &[u8]) -> bool {
        self.reclaim();
        // SAFETY: the frame belongs to `umem`, which outlives the socket.
        let Some(mut frame) = (unsafe { self.umem.alloc() }) else { return false };
        let mut eth = [0u8; ETH_LEN];
        self.ethernet_header(&mut eth, dst_mac, ethertype_of(ip));
        if frame.append(&eth).is_err() || frame.append(ip).is_err() {
            self.umem.free_packet(frame);
            return false;
        }
        self.queue(frame)
    }

    /// Put one frame of this port's memory on the send ring; false (the
    /// frame freed) when the ring is full.
    fn queue(&mut self, frame: Packet) -> bool {
        let Some(tx) = self.rings.tx_ring.as_mut() else {
            self.umem.free_packet(frame);
            return false;
        };
        let _ = self.tx.push_front(frame);
        // SAFETY: the frame belongs to `umem`, which outlives the socket.
        if unsafe { tx.send(&mut self.tx) } == 0 {
            if let Some(frame) = self.tx.pop_back() {
                self.umem.free_packet(frame);
            }
            return false;
        }
        self.unsent = true;
        true
    }

    /// Tell the kernel about queued frames; in copy mode it sends them
    /// during this call, a bounded number per call.
    pub(crate) fn flush(&mut self) {
        if !self.unsent {
            self.reclaim();
            self.refill();
            return;
        }
        self.unsent = false;
        for _ in 0..256 {
            // SAFETY: a zero-length sendto with no address only kicks the socket's send ring.
            let rc = unsafe {
                libc::sendto(
                    self.socket.raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if rc >= 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY | libc::EINTR)) {
                break;
            }
        }
        self.reclaim();
        self.refill();
    }

    /// What the kernel counted on this socket.
    pub(crate) fn stats(&self) -> rvs_control::snapshot::SocketSnap {
        let Ok(k) = self.socket.statistics() else { return Default::default() };
        rvs_control::snapshot::SocketSnap {
            rx_dropped: k.rx_dropped,
            rx_ring_full: k.rx_ring_full,
            rx_invalid: k.rx_invalid_descs,
            tx_invalid: k.tx_invalid_descs,
            fill_ring_empty: k.rx_fill_ring_empty_descs,
        }
    }

    /// Take back frames the kernel has finished sending.
    fn reclaim(&mut self) {
        self.rings.completion_ring.dequeue(&mut self.umem, RING as usize);
    }
}

impl AsRawFd for XskPort {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.raw_fd()
    }
}

/// The Ethernet type of an IP packet, by its version: a packet the engine
/// translated leaves with the other family's (0x86DD for IPv6).
fn ethertype_of(ip: &[u8]) -> u16 {
    match ip.first().map(|b| b >> 4) {
        Some(6) => ethernet::ethertype::IPV6,
        _ => ethernet::ethertype::IPV4,
    }
}

/// An interface's Ethernet address (`SIOCGIFHWADDR`).
fn hardware_addr(name: &str) -> io::Result<[u8; 6]> {
    #[repr(C)]
    struct IfReqHw {
        name: [libc::c_char; libc::IFNAMSIZ],
        addr: libc::sockaddr,
        _pad: [u8; 8],
    }
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is fresh and owned by nothing else.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: all-zero bytes are a valid ifreq.
    let mut req: IfReqHw = unsafe { std::mem::zeroed() };
    for (d, s) in req.name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads the name and writes the address of one
    // `struct ifreq`, which `IfReqHw` lays out and pads to 40 bytes.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("Ethernet address of {name}: {e}")));
    }
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(req.addr.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keys_are_network_order() {
        let k = service_key("10.0.2.1".parse().unwrap(), 80, Proto::Tcp);
        assert_eq!(k, [10, 0, 2, 1, 0, 80, 6, 0]);
        assert_eq!(service_key("10.0.2.1".parse().unwrap(), 53, Proto::Udp)[6], 17);
        assert_eq!(addr_key("10.0.3.1".parse().unwrap()).to_ne_bytes(), [10, 0, 3, 1]);
        let k6 = service6_key("fd10:77:2::1".parse().unwrap(), 443, Proto::Udp);
        assert_eq!(k6[..16], "fd10:77:2::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(k6[16..], [1, 187, 17, 0]);
    }

    #[test]
    fn frames_carry_the_ethernet_type_of_their_packets_family() {
        assert_eq!(ethertype_of(&[0x45, 0]), ethernet::ethertype::IPV4);
        assert_eq!(ethertype_of(&[0x60, 0]), ethernet::ethertype::IPV6);
        // Not an IP packet: the engine never hands one over; IPv4 as before.
        assert_eq!(ethertype_of(&[]), ethernet::ethertype::IPV4);
    }

    #[test]
    fn committed_program_matches_its_source() {
        let dir = std::env::temp_dir().join(format!("rvs-bpf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/build-bpf");
        let built = std::process::Command::new(script).arg(&dir).output();
        let result = built.as_ref().map(|o| (o.status.success(), String::from_utf8_lossy(&o.stderr)));
        let rebuilt = std::fs::read(dir.join("steer.bpf.o"));
        let version = std::fs::read_to_string(dir.join("steer.bpf.clang")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        match result {
            Ok((true, _)) => {}
            // scripts/test installs clang; without it there is nothing to compare.
            _ if std::process::Command::new("clang").arg("--version").output().is_err() => {
                eprintln!("committed_program_matches_its_source: skipped: clang is not installed");
                return;
            }
            Ok((false, err)) => panic!("scripts/build-bpf failed: {err}"),
            Err(e) => panic!("running scripts/build-bpf: {e}"),
        }
        let committed_version = include_str!("steer.bpf.clang");
        if version != committed_version {
            eprintln!(
                "committed_program_matches_its_source: skipped: the object was built with {}, this is {}",
                committed_version.trim(),
                version.trim()
            );
            return;
        }
        assert!(
            rebuilt.unwrap() == PROGRAM,
            "steer.bpf.o is not what steer.bpf.c builds to: run scripts/build-bpf and commit the object"
        );
    }
}
