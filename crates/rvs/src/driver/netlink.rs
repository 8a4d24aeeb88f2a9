//! Just enough rtnetlink to bring a link up, route host addresses to it,
//! make the veth pairs that hand packets between workers, and follow the
//! kernel's IPv4 and IPv6 routes and neighbours for the xdp driver's mirror
//! of them.
//!
//! Messages are built and parsed by hand (`linux/netlink.h`,
//! `linux/rtnetlink.h`). Each [`Netlink`] request waits for the kernel's
//! acknowledgement, so an error is reported to the operator with the route
//! it concerned. A [`Monitor`] instead joins the multicast groups that
//! announce changes and asks for dumps of whole tables; [`events`] turns
//! what it reads into [`Event`]s without allocating.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const NLM_F_EXCL: u16 = 0x200;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETROUTE: u16 = 26;
const RTM_GETNEIGH: u16 = 30;
const RTM_DELADDR: u16 = 21;
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_NEIGH: u32 = 0x4;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// Neighbour states whose link-layer address can be used (`linux/neighbour.h`):
/// REACHABLE, STALE, DELAY, PROBE, NOARP, PERMANENT.
const NUD_VALID: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;
const NUD_PERMANENT: u16 = 0x80;
const NTF_PROXY: u8 = 0x08;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
/// NLM_F_ROOT | NLM_F_MATCH: every entry.
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;
const RTNH_F_DEAD: u32 = 0x1;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const NLMSG_HDR_LEN: usize = 16;

/// A NETLINK_ROUTE socket in the calling thread's network namespace.
#[derive(Debug)]
pub(crate) struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub(crate) fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, seq: 1 })
    }

    /// Set the interface up (`ip link set DEV up`).
    pub(crate) fn link_up(&mut self, index: u32) -> io::Result<()> {
        self.set_link_flag(index, libc::IFF_UP, true)
    }

    /// Set or clear one of the interface's `IFF_*` flags.
    pub(crate) fn set_link_flag(&mut self, index: u32, flag: libc::c_int, on: bool) -> io::Result<()> {
        // struct ifinfomsg: family, pad, type, index, flags, change.
        let mut body = Vec::with_capacity(16);
        body.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
        body.extend_from_slice(&0u16.to_ne_bytes());
        body.extend_from_slice(&(index as i32).to_ne_bytes());
        body.extend_from_slice(&(if on { flag as u32 } else { 0 }).to_ne_bytes());
        body.extend_from_slice(&(flag as u32).to_ne_bytes());
        self.request(RTM_NEWLINK, 0, &body)
    }

    /// Make a veth pair `name` – `peer` (`ip link add NAME type veth peer name PEER`);
    /// the index of `name`.
    pub(crate) fn add_veth_pair(&mut self, name: &str, peer: &str) -> io::Result<u32> {
        let ifinfo = |body: &mut Vec<u8>| body.extend_from_slice(&[0u8; 16]);
        let mut peer_info = Vec::new();
        ifinfo(&mut peer_info);
        push_attr(&mut peer_info, IFLA_IFNAME, &nul_terminated(peer));
        let mut data = Vec::new();
        push_attr(&mut data, VETH_INFO_PEER, &peer_info);
        let mut info = Vec::new();
        push_attr(&mut info, IFLA_INFO_KIND, b"veth");
        push_attr(&mut info, IFLA_INFO_DATA, &data);
        let mut body = Vec::new();
        ifinfo(&mut body);
        push_attr(&mut body, IFLA_IFNAME, &nul_terminated(name));
        push_attr(&mut body, IFLA_LINKINFO, &info);
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &body)
            .map_err(|e| io::Error::new(e.kind(), format!("create veth pair {name} - {peer}: {e}")))?;
        index_of(name)
    }

    /// Delete an interface (`ip link del`); a veth takes its peer along.
    pub(crate) fn del_link(&mut self, index: u32) -> io::Result<()> {
        let mut body = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
        body.extend_from_slice(&(index as i32).to_ne_bytes());
        body.extend_from_slice(&[0u8; 8]);
        self.request(RTM_DELLINK, 0, &body)
    }

    /// Route one host address to an interface (`ip route replace ADDR/32 dev DEV`,
    /// `/128` for IPv6).
    pub(crate) fn add_host_route(&mut self, addr: IpAddr, index: u32) -> io::Result<()> {
        let body = route_body(addr, index);
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &body)
    }

    /// Remove a host route added by [`Self::add_host_route`].
    pub(crate) fn del_host_route(&mut self, addr: IpAddr, index: u32) -> io::Result<()> {
        let body = route_body(addr, index);
        self.request(RTM_DELROUTE, 0, &body)
    }

    /// Answer ARP (IPv4) or neighbour solicitations (IPv6) for `addr` on
    /// interface `index` (`ip neigh add proxy ADDR dev DEV`). For IPv4 the
    /// kernel answers only while its route to `addr` leaves by another
    /// interface, which the host route to the TUN device guarantees; for
    /// IPv6 only where forwarding and `proxy_ndp` are on for the interface.
    pub(crate) fn add_proxy_neigh(&mut self, addr: IpAddr, index: u32) -> io::Result<()> {
        self.request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, &proxy_neigh_body(addr, index))
    }

    /// Remove an entry added by [`Self::add_proxy_neigh`].
    pub(crate) fn del_proxy_neigh(&mut self, addr: IpAddr, index: u32) -> io::Result<()> {
        self.request(RTM_DELNEIGH, 0, &proxy_neigh_body(addr, index))
    }

    fn request(&mut self, kind: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        self.send(kind, NLM_F_ACK | flags, body)?;
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: `buf` is writable for its full length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(result) = ack_result(&buf[..n as usize], self.seq) {
                return result;
            }
        }
    }

    fn send(&mut self, kind: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        send_to_kernel(&self.fd, &message(kind, flags, self.seq, body))
    }
}

/// Multicast groups the [`Monitor`] joins (`RTMGRP_*` in `linux/rtnetlink.h`):
/// links and IPv4 addresses (whose removal flushes routes without a
/// notification of its own; IPv6 announces the routes an address takes
/// along), neighbours of both families, IPv4 and IPv6 routes.
const MONITOR_GROUPS: u32 =
    RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;
/// Receive buffer asked for, so a burst of changes (a link going down takes
/// its neighbours along) fits before the kernel starts dropping them.
const MONITOR_RCVBUF: libc::c_int = 4 << 20;
/// How long a dump may go without an answer before it counts as failed.
const DUMP_WAIT_MS: libc::c_int = 1000;

/// The two tables the [`Monitor`] mirrors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Routes,
    Neighbours,
}

/// A NETLINK_ROUTE socket that hears the kernel's route, neighbour, link and
/// address changes as they happen, and asks for whole-table dumps. It never
/// blocks except in [`Monitor::recv`] with `wait`.
#[derive(Debug)]
pub(crate) struct Monitor {
    fd: OwnedFd,
    seq: u32,
}

impl Monitor {
    pub(crate) fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // FORCE passes net.core.rmem_max with CAP_NET_ADMIN; without it the
        // plain option still gets as much as the limit allows.
        if set_int_option(&fd, libc::SO_RCVBUFFORCE, MONITOR_RCVBUF).is_err() {
            let _ = set_int_option(&fd, libc::SO_RCVBUF, MONITOR_RCVBUF);
        }
        // SAFETY: an all-zero sockaddr_nl is valid; the kernel picks the port id.
        let mut addr: libc::sockaddr_nl = unsafe { core::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = MONITOR_GROUPS;
        // SAFETY: `addr` outlives the call and the length is its own.
        let bound = unsafe {
            libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), size_of::<libc::sockaddr_nl>() as u32)
        };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, seq: 0 })
    }

    /// Ask for every IPv4 and IPv6 entry of `table`; the sequence number that the
    /// dump's end ([`Event::DumpDone`]) carries.
    pub(crate) fn request_dump(&mut self, table: Table) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        send_to_kernel(&self.fd, &dump_request(table, self.seq))?;
        Ok(self.seq)
    }

    /// Read what the kernel has queued into `buf`: the length, or
    /// `WouldBlock` when nothing is (after up to [`DUMP_WAIT_MS`] when
    /// `wait`, as `TimedOut`). ENOBUFS means changes were lost.
    pub(crate) fn recv(&mut self, buf: &mut [u8], wait: bool) -> io::Result<usize> {
        if wait {
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: `pfd` is one live pollfd.
            let ready = unsafe { libc::poll(&raw mut pfd, 1, DUMP_WAIT_MS) };
            if ready < 0 {
                return Err(io::Error::last_os_error());
            }
            if ready == 0 {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer to a netlink dump"));
            }
        }
        // SAFETY: `buf` is writable for its full length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

fn set_int_option(fd: &OwnedFd, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` outlives the call and the length is its own.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// A netlink message: header (length, type, flags with NLM_F_REQUEST, `seq`,
/// port 0) and `body`.
fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDR_LEN + body.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(body);
    msg
}

/// RTM_GETROUTE or RTM_GETNEIGH with NLM_F_DUMP for AF_UNSPEC, which dumps
/// every family's table in one (IPv4 and IPv6; the others are ignored);
/// struct rtmsg and struct ndmsg are both 12 bytes with the family first.
fn dump_request(table: Table, seq: u32) -> Vec<u8> {
    let kind = match table {
        Table::Routes => RTM_GETROUTE,
        Table::Neighbours => RTM_GETNEIGH,
    };
    message(kind, NLM_F_DUMP, seq, &[libc::AF_UNSPEC as u8; 12])
}

fn send_to_kernel(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_nl is valid; nl_family names the kernel as peer.
    let mut to: libc::sockaddr_nl = unsafe { core::mem::zeroed() };
    to.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `msg` and `to` outlive the call and the lengths are theirs.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&raw const to).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Where a route sends packets: out of `oif`, to `gateway` or, on-link,
/// to the destination itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hop {
    pub(crate) oif: u32,
    /// Of the route's own family.
    pub(crate) gateway: Option<IpAddr>,
}

/// One IPv4 or IPv6 route of the main table. Its key is (`dst`,
/// `prefix_len`, `priority`), as in the kernel's FIB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) dst: IpAddr,
    pub(crate) prefix_len: u8,
    /// The metric; the lowest wins among routes to the same prefix.
    pub(crate) priority: u32,
    /// `None` for routes the data path cannot follow by itself: blackhole,
    /// unreachable, prohibit, throw, multipath (no single RTA_OIF), and
    /// gateways of the other family (RTA_VIA).
    pub(crate) hop: Option<Hop>,
}

/// What one message from the kernel means for the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    RouteAdded(Route),
    RouteRemoved(Route),
    /// A neighbour's Ethernet address, or `None` when it has none usable
    /// (deleted, failed, incomplete).
    Neighbour {
        ifindex: u32,
        addr: IpAddr,
        mac: Option<[u8; 6]>,
    },
    /// A link went down or away, or an address went: the kernel then drops
    /// routes without telling, so only a fresh dump shows what is left.
    RoutesFlushed,
    /// The end of dump `seq`: the kernel's error (0 when it finished) and
    /// whether the table changed under it (NLM_F_DUMP_INTR).
    DumpDone {
        seq: u32,
        error: i32,
        interrupted: bool,
    },
    /// Anything else: other tables and families, proxy entries, links up.
    Ignored,
}

/// The events in a buffer read from the socket, one per message; a
/// malformed header ends the walk.
pub(crate) fn events(mut buf: &[u8]) -> impl Iterator<Item = Event> + '_ {
    std::iter::from_fn(move || {
        let len = u32::from_ne_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
        if len < NLMSG_HDR_LEN || len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let flags = u16::from_ne_bytes([buf[6], buf[7]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let body = &buf[NLMSG_HDR_LEN..len];
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some(event(kind, flags, seq, body))
    })
}

fn event(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Event {
    let error = || body.get(0..4).map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
    match kind {
        NLMSG_DONE | NLMSG_ERROR => {
            Event::DumpDone { seq, error: error(), interrupted: flags & NLM_F_DUMP_INTR != 0 }
        }
        RTM_NEWROUTE | RTM_DELROUTE => match parse_route(body) {
            // The kernel skips dead routes in its lookups; so does the mirror.
            Some((route, dead)) if kind == RTM_NEWROUTE && !dead => Event::RouteAdded(route),
            Some((route, _)) => Event::RouteRemoved(route),
            None => Event::Ignored,
        },
        RTM_NEWNEIGH | RTM_DELNEIGH => parse_neighbour(body, kind == RTM_DELNEIGH).unwrap_or(Event::Ignored),
        RTM_DELLINK => Event::RoutesFlushed,
        RTM_NEWLINK => match body.get(8..12) {
            Some(f) if u32::from_ne_bytes([f[0], f[1], f[2], f[3]]) & libc::IFF_UP as u32 == 0 => {
                Event::RoutesFlushed
            }
            _ => Event::Ignored,
        },
        RTM_DELADDR if body.first() == Some(&(libc::AF_INET as u8)) => Event::RoutesFlushed,
        _ => Event::Ignored,
    }
}

/// An address of `family` (AF_INET or AF_INET6) from its bytes in an attribute.
fn addr_of(family: u8, data: &[u8]) -> Option<IpAddr> {
    match family {
        f if f == libc::AF_INET as u8 => <[u8; 4]>::try_from(data).ok().map(|a| Ipv4Addr::from(a).into()),
        f if f == libc::AF_INET6 as u8 => <[u8; 16]>::try_from(data).ok().map(|a| Ipv6Addr::from(a).into()),
        _ => None,
    }
}

/// A route of the IPv4 or IPv6 main table and whether it is dead
/// (RTNH_F_DEAD), from struct rtmsg (family, dst_len, src_len, tos, table,
/// protocol, scope, type, flags) and its attributes; `None` for any other
/// route. Routes for one TOS (traffic class) only are left out: rvs's
/// packets are not sorted by it.
fn parse_route(body: &[u8]) -> Option<(Route, bool)> {
    let h = body.get(..12)?;
    let family = h[0];
    let (unspecified, max_len): (IpAddr, u8) = match family {
        f if f == libc::AF_INET as u8 => (Ipv4Addr::UNSPECIFIED.into(), 32),
        f if f == libc::AF_INET6 as u8 => (Ipv6Addr::UNSPECIFIED.into(), 128),
        _ => return None,
    };
    if h[1] > max_len || h[3] != 0 {
        return None;
    }
    let mut table = u32::from(h[4]);
    let rtm_flags = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
    let (mut dst, mut oif, mut gateway, mut priority, mut via) = (unspecified, None, None, 0, false);
    for (kind, data) in attrs(&body[12..]) {
        let word = <[u8; 4]>::try_from(data).ok().map(u32::from_ne_bytes);
        match kind {
            // An address of the wrong length: not a route to guess at.
            RTA_DST => dst = addr_of(family, data)?,
            RTA_GATEWAY => gateway = Some(addr_of(family, data)?),
            RTA_VIA => via = true,
            RTA_OIF => oif = word.or(oif),
            RTA_PRIORITY => priority = word.unwrap_or(priority),
            RTA_TABLE => table = word.unwrap_or(table),
            _ => {}
        }
    }
    if table != u32::from(RT_TABLE_MAIN) {
        return None;
    }
    let hop = match (h[7], oif) {
        (RTN_UNICAST, Some(oif)) if !via => Some(Hop { oif, gateway }),
        _ => None,
    };
    Some((Route { dst, prefix_len: h[1], priority, hop }, rtm_flags & RTNH_F_DEAD != 0))
}

/// An IPv4 or IPv6 neighbour from struct ndmsg (family, pads, ifindex,
/// state, flags, type) and its attributes; `None` for proxy entries and
/// other families.
fn parse_neighbour(body: &[u8], deleted: bool) -> Option<Event> {
    let h = body.get(..12)?;
    if h[10] & NTF_PROXY != 0 {
        return None;
    }
    let ifindex = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
    let state = u16::from_ne_bytes([h[8], h[9]]);
    let (mut addr, mut lladdr) = (None, None);
    for (kind, data) in attrs(&body[12..]) {
        match kind {
            NDA_DST => addr = addr_of(h[0], data),
            NDA_LLADDR => lladdr = <[u8; 6]>::try_from(data).ok(),
            _ => {}
        }
    }
    let mac = if deleted || state & NUD_VALID == 0 { None } else { lladdr };
    Some(Event::Neighbour { ifindex, addr: addr?, mac })
}

/// `name` with its NUL, as IFLA_IFNAME carries it.
fn nul_terminated(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

/// The index of interface `name`.
pub(crate) fn index_of(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}"))),
        i => Ok(i),
    }
}

/// The (type, payload) of each route attribute in `buf`.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes([*buf.first()?, *buf.get(1)?]));
        let kind = u16::from_ne_bytes([*buf.get(2)?, *buf.get(3)?]) & 0x3fff;
        let data = buf.get(4..len)?;
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some((kind, data))
    })
}

/// struct rtmsg plus RTA_DST and RTA_OIF attributes.
fn route_body(addr: IpAddr, index: u32) -> Vec<u8> {
    let (family, bytes): (u8, Vec<u8>) = match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let mut body =
        vec![family, (bytes.len() * 8) as u8, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_LINK, RTN_UNICAST];
    body.extend_from_slice(&0u32.to_ne_bytes());
    push_attr(&mut body, RTA_DST, &bytes);
    push_attr(&mut body, RTA_OIF, &index.to_ne_bytes());
    body
}

/// struct ndmsg (family, pads, ifindex, state, flags, type) plus NDA_DST.
fn proxy_neigh_body(addr: IpAddr, index: u32) -> Vec<u8> {
    let (family, bytes): (u8, Vec<u8>) = match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let mut body = vec![family, 0, 0, 0];
    body.extend_from_slice(&(index as i32).to_ne_bytes());
    body.extend_from_slice(&NUD_PERMANENT.to_ne_bytes());
    body.extend_from_slice(&[NTF_PROXY, 0]);
    push_attr(&mut body, NDA_DST, &bytes);
    body
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// The outcome carried by the acknowledgement of request `seq`, if `buf` holds it.
fn ack_result(mut buf: &[u8], seq: u32) -> Option<io::Result<()>> {
    while buf.len() >= NLMSG_HDR_LEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(buf[4..6].try_into().ok()?);
        let msg_seq = u32::from_ne_bytes(buf[8..12].try_into().ok()?);
        if len < NLMSG_HDR_LEN || len > buf.len() {
            return Some(Err(io::Error::new(io::ErrorKind::InvalidData, "malformed netlink reply")));
        }
        if kind == NLMSG_ERROR && msg_seq == seq && len >= NLMSG_HDR_LEN + 4 {
            let code = i32::from_ne_bytes(buf[16..20].try_into().ok()?);
            return Some(if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) });
        }
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    None
}

/// Netlink messages as the kernel sends them, built byte by byte for tests,
/// and the values they carry.
#[cfg(test)]
pub(crate) mod test_messages {
    use std::net::IpAddr;

    use super::{Hop, Route};

    pub(crate) const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    pub(crate) const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The bytes of IPv6 address `s`.
    pub(crate) fn v6(s: &str) -> [u8; 16] {
        s.parse::<std::net::Ipv6Addr>().unwrap().octets()
    }

    /// AF_INET for a 4-byte address, AF_INET6 for a 16-byte one.
    fn family<const N: usize>() -> u8 {
        if N == 4 { 2 } else { 10 }
    }

    pub(crate) fn route(dst: &str, prefix_len: u8, priority: u32, oif: u32, gateway: Option<&str>) -> Route {
        Route { dst: ip(dst), prefix_len, priority, hop: Some(Hop { oif, gateway: gateway.map(ip) }) }
    }

    /// A route attribute, padded.
    pub(crate) fn attr(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut a = ((4 + data.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(data);
        a.resize(a.len().next_multiple_of(4), 0);
        a
    }

    /// A message with its header, as the kernel sends it.
    pub(crate) fn msg(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m
    }

    /// RTM_NEWROUTE (24) or RTM_DELROUTE (25) for a unicast main-table
    /// route, IPv4 or IPv6 by the length of `dst`.
    pub(crate) fn route_msg<const N: usize>(
        kind: u16,
        seq: u32,
        dst: [u8; N],
        len: u8,
        oif: u32,
        gw: Option<[u8; N]>,
    ) -> Vec<u8> {
        let mut body = vec![family::<N>(), len, 0, 0, 254, 4, 0, 1, 0, 0, 0, 0];
        if len > 0 {
            body.extend(attr(1, &dst));
        }
        body.extend(attr(4, &oif.to_ne_bytes()));
        if let Some(gw) = gw {
            body.extend(attr(5, &gw));
        }
        msg(kind, 2, seq, &body)
    }

    /// RTM_NEWNEIGH (28) or RTM_DELNEIGH (29), IPv4 or IPv6 by the length of `dst`.
    pub(crate) fn neigh_msg<const N: usize>(
        kind: u16,
        seq: u32,
        ifindex: u32,
        dst: [u8; N],
        state: u16,
        mac: [u8; 6],
    ) -> Vec<u8> {
        let mut body = vec![family::<N>(), 0, 0, 0];
        body.extend_from_slice(&ifindex.to_ne_bytes());
        body.extend_from_slice(&state.to_ne_bytes());
        body.extend_from_slice(&[0, 1]);
        body.extend(attr(1, &dst));
        body.extend(attr(2, &mac));
        msg(kind, 2, seq, &body)
    }

    /// NLMSG_DONE ending dump `seq`.
    pub(crate) fn done(seq: u32) -> Vec<u8> {
        msg(3, 2, seq, &0i32.to_ne_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::test_messages::{MAC_A, attr, done, ip, msg, neigh_msg, route, route_msg, v6};
    use super::*;

    #[test]
    fn dump_request_layout() {
        let m = dump_request(Table::Routes, 9);
        assert_eq!(m.len(), 28);
        assert_eq!(&m[0..4], &28u32.to_ne_bytes());
        assert_eq!(&m[4..6], &RTM_GETROUTE.to_ne_bytes());
        assert_eq!(&m[6..8], &0x301u16.to_ne_bytes());
        assert_eq!(&m[8..12], &9u32.to_ne_bytes());
        assert_eq!(&m[16..], &[0; 12]);
        assert_eq!(&dump_request(Table::Neighbours, 1)[4..6], &RTM_GETNEIGH.to_ne_bytes());
    }

    #[test]
    fn multipart_dump_events() {
        let mut buf = route_msg(24, 7, [10, 0, 0, 0], 8, 2, None);
        buf.extend(route_msg(24, 7, [0; 4], 0, 1, Some([192, 0, 2, 1])));
        buf.extend(done(7));
        let ev: Vec<_> = events(&buf).collect();
        assert_eq!(
            ev,
            [
                Event::RouteAdded(route("10.0.0.0", 8, 0, 2, None)),
                Event::RouteAdded(route("0.0.0.0", 0, 0, 1, Some("192.0.2.1"))),
                Event::DumpDone { seq: 7, error: 0, interrupted: false },
            ]
        );
        let intr = msg(3, 2 | 0x10, 7, &(-4i32).to_ne_bytes());
        assert_eq!(events(&intr).next(), Some(Event::DumpDone { seq: 7, error: -4, interrupted: true }));
    }

    #[test]
    fn route_body_layout() {
        let b = route_body("10.1.2.3".parse().unwrap(), 7);
        assert_eq!(&b[..8], &[2, 32, 0, 0, 254, 4, 253, 1]);
        assert_eq!(&b[12..20], &[8, 0, 1, 0, 10, 1, 2, 3]);
        assert_eq!(&b[20..28], &[8, 0, 4, 0, 7, 0, 0, 0]);
        assert_eq!(route_body("::1".parse().unwrap(), 1)[1], 128);
    }

    #[test]
    fn proxy_neigh_layout() {
        let b = proxy_neigh_body("10.1.2.3".parse().unwrap(), 5);
        assert_eq!(&b[..4], &[2, 0, 0, 0]);
        assert_eq!(&b[4..8], &5i32.to_ne_bytes());
        assert_eq!(&b[8..12], &[0x80, 0, 0x08, 0]);
        assert_eq!(&b[12..20], &[8, 0, 1, 0, 10, 1, 2, 3]);
    }

    #[test]
    fn attribute_walk() {
        let mut b = Vec::new();
        push_attr(&mut b, RTA_OIF, &7u32.to_ne_bytes());
        push_attr(&mut b, RTA_GATEWAY, &[10, 0, 0, 1]);
        push_attr(&mut b, NDA_LLADDR, &[2, 0, 0, 0, 0, 9]);
        let all: Vec<_> = attrs(&b).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1], (RTA_GATEWAY, &[10u8, 0, 0, 1][..]));
        assert_eq!(all[2].1.len(), 6);
        // A truncated attribute ends the walk instead of reading past the end
        // (the last one is 10 bytes and 2 of padding).
        assert_eq!(attrs(&b[..b.len() - 2]).count(), 3);
        assert_eq!(attrs(&b[..b.len() - 3]).count(), 2);
        assert_eq!(attrs(&b[..3]).count(), 0);
    }

    #[test]
    fn ack_parsing() {
        let mut m = vec![0u8; 36];
        m[0..4].copy_from_slice(&36u32.to_ne_bytes());
        m[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m[8..12].copy_from_slice(&9u32.to_ne_bytes());
        m[16..20].copy_from_slice(&(-17i32).to_ne_bytes());
        let r = ack_result(&m, 9).unwrap();
        assert_eq!(r.unwrap_err().raw_os_error(), Some(17));
        assert!(ack_result(&m, 8).is_none());
        m[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert!(ack_result(&m, 9).unwrap().is_ok());
        assert!(ack_result(&m[..10], 9).is_none());
    }

    #[test]
    fn malformed_messages_end_the_walk() {
        let mut buf = route_msg(24, 0, [10, 0, 0, 0], 8, 2, None);
        let whole = buf.len();
        buf.extend(done(1));
        assert_eq!(events(&buf[..whole + 8]).count(), 1);
        let mut bad = buf.clone();
        bad[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert_eq!(events(&bad).count(), 0);
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(events(&bad).count(), 0);
        // A body too short for its header is ignored, not read past.
        assert_eq!(events(&msg(24, 0, 0, &[2, 8])).next(), Some(Event::Ignored));
        assert_eq!(events(&msg(28, 0, 0, &[2, 0, 0, 0])).next(), Some(Event::Ignored));
    }

    #[test]
    fn route_messages() {
        let add = route_msg(24, 0, [10, 1, 0, 0], 16, 3, Some([10, 0, 0, 1]));
        let ev: Vec<_> = events(&add).collect();
        assert_eq!(ev, [Event::RouteAdded(route("10.1.0.0", 16, 0, 3, Some("10.0.0.1")))]);
        let del = route_msg(25, 0, [10, 1, 0, 0], 16, 3, None);
        assert_eq!(events(&del).next(), Some(Event::RouteRemoved(route("10.1.0.0", 16, 0, 3, None))));
        // The default route has no RTA_DST.
        let default = route_msg(24, 0, [0; 4], 0, 1, Some([192, 0, 2, 1]));
        assert_eq!(
            events(&default).next(),
            Some(Event::RouteAdded(route("0.0.0.0", 0, 0, 1, Some("192.0.2.1"))))
        );
    }

    #[test]
    fn route_attributes_and_filters() {
        let base = |table: u8, tos: u8, kind: u8, flags: u32| {
            let mut body = vec![2, 24, 0, tos, table, 4, 0, kind];
            body.extend_from_slice(&flags.to_ne_bytes());
            body.extend(attr(1, &[10, 0, 0, 0]));
            body.extend(attr(4, &7u32.to_ne_bytes()));
            body.extend(attr(6, &50u32.to_ne_bytes()));
            body
        };
        let main = base(254, 0, 1, 0);
        assert_eq!(
            events(&msg(24, 0, 0, &main)).next(),
            Some(Event::RouteAdded(route("10.0.0.0", 24, 50, 7, None)))
        );
        // Local table, TOS-specific, an IPv6 route with a 4-byte address:
        // not mirrored.
        assert_eq!(events(&msg(24, 0, 0, &base(255, 0, 1, 0))).next(), Some(Event::Ignored));
        assert_eq!(events(&msg(24, 0, 0, &base(254, 0x10, 1, 0))).next(), Some(Event::Ignored));
        let mut v6 = main.clone();
        v6[0] = 10;
        assert_eq!(events(&msg(24, 0, 0, &v6)).next(), Some(Event::Ignored));
        // Other families (IPMR's 128 in an AF_UNSPEC dump): not mirrored.
        let mut mr = main.clone();
        mr[0] = 128;
        assert_eq!(events(&msg(24, 0, 0, &mr)).next(), Some(Event::Ignored));
        // A gateway of the other family (RTA_VIA): kept, without a hop.
        let mut via = main.clone();
        via.extend(attr(18, &[10, 0, 0xfd, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
        let Some(Event::RouteAdded(r)) = events(&msg(24, 0, 0, &via)).next() else { panic!() };
        assert_eq!(r.hop, None);
        // RTA_TABLE overrides the byte (tables above 255 have only the attribute).
        let mut other = base(254, 0, 1, 0);
        other.extend(attr(15, &1000u32.to_ne_bytes()));
        assert_eq!(events(&msg(24, 0, 0, &other)).next(), Some(Event::Ignored));
        let mut high = base(252, 0, 1, 0);
        high.extend(attr(15, &254u32.to_ne_bytes()));
        assert!(matches!(events(&msg(24, 0, 0, &high)).next(), Some(Event::RouteAdded(_))));
        // Blackhole: kept, without a hop.
        let Some(Event::RouteAdded(r)) = events(&msg(24, 0, 0, &base(254, 0, 6, 0))).next() else { panic!() };
        assert_eq!(r.hop, None);
        // A dead route is one the kernel skips.
        assert!(matches!(events(&msg(24, 0, 0, &base(254, 0, 1, 1))).next(), Some(Event::RouteRemoved(_))));
    }

    #[test]
    fn ipv6_route_messages() {
        let d = v6("fd10:77:1::");
        let add = route_msg(24, 0, d, 64, 3, Some(v6("fe80::1")));
        assert_eq!(
            events(&add).collect::<Vec<_>>(),
            [Event::RouteAdded(route("fd10:77:1::", 64, 0, 3, Some("fe80::1")))]
        );
        let default = route_msg(24, 0, [0; 16], 0, 1, None);
        assert_eq!(events(&default).next(), Some(Event::RouteAdded(route("::", 0, 0, 1, None))));
        // Longer than 128 bits, or an IPv4-sized gateway: not mirrored.
        assert_eq!(events(&route_msg(24, 0, d, 129, 3, None)).next(), Some(Event::Ignored));
        let mut short_gw = route_msg(24, 0, d, 64, 3, None);
        short_gw.extend(attr(5, &[10, 0, 0, 1]));
        let len = short_gw.len() as u32;
        short_gw[0..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(events(&short_gw).next(), Some(Event::Ignored));
    }

    #[test]
    fn ipv6_neighbour_messages() {
        let addr = ip("fd10:77:1::11");
        let a = v6("fd10:77:1::11");
        let reachable = neigh_msg(28, 0, 5, a, 0x02, MAC_A);
        assert_eq!(events(&reachable).next(), Some(Event::Neighbour { ifindex: 5, addr, mac: Some(MAC_A) }));
        let gone = Event::Neighbour { ifindex: 5, addr, mac: None };
        assert_eq!(events(&neigh_msg(28, 0, 5, a, 0x01, MAC_A)).next(), Some(gone));
        // A proxy entry (the balancer's own neighbour answer) is no neighbour.
        let mut proxy = neigh_msg(28, 0, 5, a, 0x80, MAC_A);
        proxy[16 + 10] = 0x08;
        assert_eq!(events(&proxy).next(), Some(Event::Ignored));
    }

    #[test]
    fn neighbour_messages() {
        let reachable = neigh_msg(28, 0, 5, [10, 0, 0, 9], 0x02, MAC_A);
        let n = Event::Neighbour { ifindex: 5, addr: ip("10.0.0.9"), mac: Some(MAC_A) };
        assert_eq!(events(&reachable).next(), Some(n));
        let gone = Event::Neighbour { ifindex: 5, addr: ip("10.0.0.9"), mac: None };
        // Failed (0x20) and incomplete (0x01): no usable address.
        assert_eq!(events(&neigh_msg(28, 0, 5, [10, 0, 0, 9], 0x20, MAC_A)).next(), Some(gone));
        assert_eq!(events(&neigh_msg(28, 0, 5, [10, 0, 0, 9], 0x01, MAC_A)).next(), Some(gone));
        assert_eq!(events(&neigh_msg(29, 0, 5, [10, 0, 0, 9], 0x04, MAC_A)).next(), Some(gone));
        // Stale still has a usable address.
        assert_eq!(events(&neigh_msg(28, 0, 5, [10, 0, 0, 9], 0x04, MAC_A)).next(), Some(n));
        // Proxy entries are ARP answers, not neighbours.
        let mut proxy = neigh_msg(28, 0, 5, [10, 0, 0, 9], 0x80, MAC_A);
        proxy[16 + 10] = 0x08;
        assert_eq!(events(&proxy).next(), Some(Event::Ignored));
    }

    #[test]
    fn link_and_address_changes() {
        let link = |kind: u16, flags: u32| {
            let mut body = vec![0, 0, 1, 0];
            body.extend_from_slice(&4i32.to_ne_bytes());
            body.extend_from_slice(&flags.to_ne_bytes());
            body.extend_from_slice(&0u32.to_ne_bytes());
            msg(kind, 0, 0, &body)
        };
        assert_eq!(events(&link(16, 0x1043)).next(), Some(Event::Ignored));
        assert_eq!(events(&link(16, 0x1002)).next(), Some(Event::RoutesFlushed));
        assert_eq!(events(&link(17, 0x1043)).next(), Some(Event::RoutesFlushed));
        assert_eq!(events(&msg(21, 0, 0, &[2, 24, 0, 0, 4, 0, 0, 0])).next(), Some(Event::RoutesFlushed));
        assert_eq!(events(&msg(21, 0, 0, &[10, 64, 0, 0, 4, 0, 0, 0])).next(), Some(Event::Ignored));
    }
}
