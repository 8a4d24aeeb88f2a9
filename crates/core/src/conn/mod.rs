//! Connections: what the engine remembers about each forwarded flow.
//!
//! A connection joins two flows: client ⇄ VIP on one side, local address ⇄
//! real on the other. It carries everything needed to translate a packet of
//! either flow into the other, including the sequence-number, timestamp and
//! window-scale translation that SYNProxy needs (plain FullNAT uses only
//! the real-side sequence offset; the rest stays neutral).

mod table;
mod timer;

pub use table::{ConnId, ConnTable, Lookup, TableFull};

use crate::addr::{Endpoint, FlowKey, Proto};
use crate::laddr::PoolId;
use crate::tcp_state::{Side, TcpState};
use crate::time::Instant;

/// Sequence-number and timestamp translation between the two halves of a
/// TCP connection. All arithmetic is modulo 2^32 (RFC 9293 §3.4).
///
/// `c2r_*` is what is added to numbers the client chose to get the numbers
/// the real sees; `r2c_*` is what is added to numbers the real chose to get
/// the numbers the client sees. An acknowledgement (or SACK block, or
/// TSecr) names the *other* side's numbers and is translated by subtracting
/// the other side's offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Translation {
    /// Added to client sequence numbers toward the real.
    pub c2r_seq: u32,
    /// Added to real sequence numbers toward the client.
    pub r2c_seq: u32,
    /// Added to client TSval toward the real.
    pub c2r_ts: u32,
    /// Added to real TSval toward the client.
    pub r2c_ts: u32,
}

impl Translation {
    /// (own sequence offset, peer's sequence offset, own TSval offset,
    /// peer's TSval offset) for a packet from `side`.
    #[inline]
    pub fn for_packet_from(&self, side: Side) -> (u32, u32, u32, u32) {
        match side {
            Side::Client => (self.c2r_seq, self.r2c_seq, self.c2r_ts, self.r2c_ts),
            Side::Real => (self.r2c_seq, self.c2r_seq, self.r2c_ts, self.c2r_ts),
        }
    }
}

/// One forwarded flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    /// The client's address and port.
    pub client: Endpoint,
    /// The VIP and port the client addressed.
    pub vip: Endpoint,
    /// The local address and port toward the real.
    pub laddr: Endpoint,
    /// The real's address and port.
    pub real: Endpoint,
    /// Transport protocol.
    pub proto: Proto,
    /// TCP state; UDP flows stay `Established`.
    pub state: TcpState,
    /// Window scale the client announced (SYNProxy rescaling; 0 if none).
    pub client_wscale: u8,
    /// Window scale the real announced (SYNProxy rescaling; 0 if none).
    pub real_wscale: u8,
    /// Index of the service in the engine.
    pub service: u32,
    /// Index of the real in its service.
    pub real_index: u32,
    /// Port pool `laddr.port` came from.
    pub pool: PoolId,
    /// Sequence and timestamp translation.
    pub xlat: Translation,
    /// Idle deadline: refreshed by every packet.
    pub expires: Instant,
}

impl Conn {
    /// The flow key of packets from the client: client → VIP.
    pub fn client_key(&self) -> FlowKey {
        FlowKey { proto: self.proto, src: self.client, dst: self.vip }
    }

    /// The flow key of packets from the real: real → local address.
    pub fn real_key(&self) -> FlowKey {
        FlowKey { proto: self.proto, src: self.real, dst: self.laddr }
    }

    /// The key of packets arriving from `side`.
    pub fn key(&self, side: Side) -> FlowKey {
        match side {
            Side::Client => self.client_key(),
            Side::Real => self.real_key(),
        }
    }
}
