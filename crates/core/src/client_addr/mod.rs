//! Telling the real who the client is: FullNAT shows the real only a local
//! address, so a service can hand it the client's address and port in a TCP
//! option (TOA, [`toa`]) or at the start of the byte stream (PROXY protocol,
//! [`proxy_protocol`]).
//!
//! TOA rides in the client's first segments toward the real until the real
//! answers with anything but its SYN-ACK. The PROXY header goes out as a
//! segment of its own as soon as the real's handshake is complete (the
//! client's ACK of the real's SYN-ACK, or SYNProxy's splice), whether or not
//! the client speaks first; every client sequence number toward the real
//! moves up by the header's length and every acknowledgement back moves down
//! (`Translation::c2r_seq` carries the shift). The engine owns the header's
//! delivery: it resends it on its own timer and whenever the client resends
//! its first segment, from the first byte the real has not acknowledged,
//! until the real acknowledges all of it. Acknowledgements that cover only
//! part of the header are shown to the client as acknowledging nothing.
//!
//! The state for this lives in a side table, not in every connection: it
//! exists only while the header is unacknowledged or TOA still rides along,
//! which for most connections is one round trip.

mod deliver;
pub(crate) use deliver::clamp_acks;
pub(crate) mod proxy_protocol;
pub(crate) mod toa;

/// Counters of client-address delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientAddrStats {
    /// Segments toward reals that carried a TOA option.
    pub toa_inserted: u64,
    /// Segments that should have carried TOA but whose 40 bytes of option
    /// space were taken; forwarded without it.
    pub toa_no_room: u64,
    /// PROXY protocol headers sent (one per connection).
    pub proxy_headers: u64,
    /// Headers, or their unacknowledged rest, sent again.
    pub proxy_resent: u64,
    /// Headers the real never acknowledged; the engine stopped resending.
    pub proxy_gave_up: u64,
}

use core::time::Duration;
use std::net::IpAddr;

use rvs_wire::tcp_seq::SeqNumber;

use crate::config::{ProxyProtocol, ServiceConfig};
use crate::conn::{ConnId, DeliveryId, DeliveryTag};
use crate::slab::Slab;
use crate::time::Instant;

/// Header resends on the engine's own timer before it leaves the header to
/// the client's retransmissions (about 10 s from a 10 ms RTO, 50 s from 200 ms).
const MAX_TIMER_RESENDS: u8 = 10;
/// Upper bound of the backed-off resend timeout.
const MAX_RTO: Duration = Duration::from_secs(10);
/// How much a service configured as `config` lowers the MSS it announces
/// to and for `client`, for TOA: the bytes the option adds to a segment,
/// which depend on the client's family only (NAT64 carries the 20-byte
/// form in IPv4 packets).
pub(crate) fn toa_room(config: &ServiceConfig, client: IpAddr) -> u16 {
    if config.toa { toa::len(client) as u16 } else { 0 }
}

/// One connection's delivery under way. The client and VIP it announces
/// are the connection's own (`Conn::client`, `Conn::vip`).
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    conn: ConnId,
    version: ProxyProtocol,
    /// The client's sequence number of its first byte (its ISN + 1).
    stream_start: SeqNumber,
    /// PROXY header length, known once it was sent.
    header_len: u8,
    /// Header bytes the real acknowledged.
    acked: u8,
    /// The header went out (and `Translation::c2r_seq` carries its length).
    sent: bool,
    /// Resends on the timer so far.
    timer_resends: u8,
    /// TOA still goes into client→real segments.
    toa: bool,
    /// The end of the client's bytes seen so far (its numbering): a first
    /// segment ending there or before is a resend.
    client_end: SeqNumber,
    /// The client's latest acknowledgement and window toward the real, in
    /// the real's numbering, for the header segments the engine builds.
    ack: SeqNumber,
    window: u16,
    deadline: Instant,
    rto: Duration,
}

/// Deliveries under way, their resend timers and counters.
#[derive(Debug, Default)]
pub(crate) struct ClientAddrState {
    entries: Slab<Delivery, DeliveryTag>,
    pub(crate) stats: ClientAddrStats,
}

impl ClientAddrState {
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.entries.poll_timeout()
    }

    /// End a delivery (done, or its connection is going away).
    pub(crate) fn close(&mut self, id: Option<DeliveryId>) {
        if let Some(id) = id {
            self.entries.remove(id);
        }
    }

    pub(crate) fn open(&self) -> usize {
        self.entries.len()
    }

    fn live(&mut self, id: Option<DeliveryId>) -> Option<&mut Delivery> {
        self.entries.get_mut(id?)
    }

    fn get(&self, id: Option<DeliveryId>) -> Option<&Delivery> {
        self.entries.get(id?)
    }
}
