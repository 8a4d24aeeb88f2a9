//! Just enough rtnetlink to bring a link up, route host addresses to it, ask
//! the kernel where a packet goes next (route and neighbour lookups for the
//! xdp driver), and make the veth pairs that hand packets between workers.
//!
//! Requests are built by hand (`linux/netlink.h`, `linux/rtnetlink.h`) and
//! each waits for the kernel's acknowledgement or answer, so an error is
//! reported to the operator with the route it concerned.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_ERROR: u16 = 2;
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
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
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
        // struct ifinfomsg: family, pad, type, index, flags, change.
        let mut body = Vec::with_capacity(16);
        body.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
        body.extend_from_slice(&0u16.to_ne_bytes());
        body.extend_from_slice(&(index as i32).to_ne_bytes());
        body.extend_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        body.extend_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
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

    /// Route one host address to an interface (`ip route replace ADDR/32 dev DEV`).
    pub(crate) fn add_host_route(&mut self, addr: IpAddr, index: u32) -> io::Result<()> {
        let body = route_body(addr, index);
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &body)
    }

    /// Remove a host route added by [`Self::add_host_route`].
    pub(crate) fn del_host_route(&mut self, addr: IpAddr, index: u32) -> io::Result<()> {
        let body = route_body(addr, index);
        self.request(RTM_DELROUTE, 0, &body)
    }

    /// Answer ARP for `addr` on interface `index` (`ip neigh add proxy ADDR dev DEV`).
    /// The kernel answers only while its route to `addr` leaves by another
    /// interface, which the host route to the TUN device guarantees.
    pub(crate) fn add_proxy_neigh(&mut self, addr: IpAddr, index: u32) -> io::Result<()> {
        self.request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, &proxy_neigh_body(addr, index))
    }

    /// Remove an entry added by [`Self::add_proxy_neigh`].
    pub(crate) fn del_proxy_neigh(&mut self, addr: IpAddr, index: u32) -> io::Result<()> {
        self.request(RTM_DELNEIGH, 0, &proxy_neigh_body(addr, index))
    }

    /// Where the kernel sends a packet to `dst` (`ip route get DST`): the
    /// outgoing interface and the next hop (the gateway, or `dst` on-link).
    pub(crate) fn route_get(&mut self, dst: Ipv4Addr) -> io::Result<(u32, Ipv4Addr)> {
        let mut body = vec![libc::AF_INET as u8, 32, 0, 0, 0, 0, 0, 0];
        body.extend_from_slice(&0u32.to_ne_bytes());
        push_attr(&mut body, RTA_DST, &dst.octets());
        let reply = self.query(RTM_GETROUTE, &body)?;
        let (mut oif, mut via) = (None, dst);
        for (kind, data) in attrs(reply.get(12..).unwrap_or_default()) {
            match (kind, data.len()) {
                (RTA_OIF, 4) => oif = Some(u32::from_ne_bytes(data.try_into().unwrap_or_default())),
                (RTA_GATEWAY, 4) => via = Ipv4Addr::new(data[0], data[1], data[2], data[3]),
                _ => {}
            }
        }
        oif.map(|o| (o, via))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no route to {dst}")))
    }

    /// The link-layer address of neighbour `addr` on interface `index`, if the
    /// kernel has a usable one (`ip neigh get ADDR dev DEV`).
    pub(crate) fn neigh_get(&mut self, addr: Ipv4Addr, index: u32) -> io::Result<Option<[u8; 6]>> {
        let mut body = vec![libc::AF_INET as u8, 0, 0, 0];
        body.extend_from_slice(&(index as i32).to_ne_bytes());
        body.extend_from_slice(&0u16.to_ne_bytes());
        body.extend_from_slice(&[0, 0]);
        push_attr(&mut body, NDA_DST, &addr.octets());
        let reply = match self.query(RTM_GETNEIGH, &body) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let state = reply.get(8..10).map_or(0, |s| u16::from_ne_bytes([s[0], s[1]]));
        if state & NUD_VALID == 0 {
            return Ok(None);
        }
        Ok(attrs(reply.get(12..).unwrap_or_default())
            .find(|(kind, data)| *kind == NDA_LLADDR && data.len() == 6)
            .map(|(_, data)| data.try_into().unwrap_or_default()))
    }

    /// Send a request that the kernel answers with one message; its body.
    fn query(&mut self, kind: u16, body: &[u8]) -> io::Result<Vec<u8>> {
        self.send(kind, NLM_F_REQUEST, body)?;
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: `buf` is writable for its full length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= NLMSG_HDR_LEN {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let msg_kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if len < NLMSG_HDR_LEN || len > rest.len() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed netlink reply"));
                }
                if seq == self.seq {
                    if msg_kind == NLMSG_ERROR {
                        let code =
                            rest.get(16..20).map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    return Ok(rest[NLMSG_HDR_LEN..len].to_vec());
                }
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            }
        }
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
        let len = NLMSG_HDR_LEN + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: an all-zero sockaddr_nl is valid; nl_family names the kernel as peer.
        let mut to: libc::sockaddr_nl = unsafe { core::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: `msg` and `to` outlive the call and the lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
