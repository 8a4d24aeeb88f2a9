//! Just enough rtnetlink to bring a link up and route host addresses to it.
//!
//! Requests are built by hand (`linux/netlink.h`, `linux/rtnetlink.h`) and
//! each waits for the kernel's acknowledgement, so an error is reported to
//! the operator with the route it concerned.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const NDA_DST: u16 = 1;
const NUD_PERMANENT: u16 = 0x80;
const NTF_PROXY: u8 = 0x08;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
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

    fn request(&mut self, kind: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDR_LEN + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
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
