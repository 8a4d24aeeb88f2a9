//! Addresses, endpoints and flow keys. Nothing here assumes IPv4.

use core::fmt;
use std::net::IpAddr;

/// Transport protocols the load balancer forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Proto {
    /// IP protocol 6.
    Tcp = 6,
    /// IP protocol 17.
    Udp = 17,
}

impl Proto {
    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The protocol for an IP protocol number, if forwarded.
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            _ => None,
        }
    }

    /// Lower-case name, as in ipvsadm listings and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// An address and port: one end of a transport flow.
///
/// Kept apart from `SocketAddr` because that type carries IPv6 flow and scope
/// fields and is twice the size; the connection table stores four of these.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// IPv4 or IPv6 address.
    pub addr: IpAddr,
    /// Transport port.
    pub port: u16,
}

impl Endpoint {
    /// An endpoint from its parts.
    pub const fn new(addr: IpAddr, port: u16) -> Self {
        Self { addr, port }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<std::net::SocketAddr> for Endpoint {
    fn from(s: std::net::SocketAddr) -> Self {
        Self::new(s.ip(), s.port())
    }
}

/// One direction of a transport flow as seen on the wire: what the
/// connection table indexes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Transport protocol.
    pub proto: Proto,
    /// Source of the packet.
    pub src: Endpoint,
    /// Destination of the packet.
    pub dst: Endpoint,
}

impl FlowKey {
    /// The key of packets flowing the other way.
    pub const fn reversed(self) -> Self {
        Self { proto: self.proto, src: self.dst, dst: self.src }
    }
}
