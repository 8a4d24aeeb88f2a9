//! Connections: what the engine remembers about each forwarded flow.
//!
//! A connection joins two flows: client ⇄ VIP on one side, local address ⇄
//! real on the other. It carries everything needed to translate a packet of
//! either flow into the other, including the sequence-number, timestamp and
//! window-scale translation that SYNProxy needs (plain FullNAT uses only
//! the real-side sequence offset; the rest stays neutral).

mod connections;
mod table;
mod timer;

pub(crate) use connections::{Connections, Placement, on_transition};
pub use table::{ConnId, ConnTable, Lookup, TableFull};

use rvs_wire::tcp_seq::SeqNumber;

use crate::addr::{Endpoint, FlowKey, Proto};
use crate::slab::Id;
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

/// Names SYNProxy's open handshakes ([`HandshakeId`]).
#[derive(Debug)]
pub(crate) enum HandshakeTag {}
/// An open real-side handshake of SYNProxy; stale once it is closed.
pub(crate) type HandshakeId = Id<HandshakeTag>;

/// Names client-address deliveries ([`DeliveryId`]).
#[derive(Debug)]
pub(crate) enum DeliveryTag {}
/// A client-address delivery (TOA, PROXY header) under way; stale once it ends.
pub(crate) type DeliveryId = Id<DeliveryTag>;

/// Where a connection stands with its real's first answer: SYNProxy's
/// own handshake, or a plain connection waiting for it. 8 bytes: the
/// ack-storm watch of a spliced connection and the wait of a plain one
/// ride in their variants, not in every connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// A plain connection the real answered (or that never waited), or one
    /// SYNProxy did not open.
    #[default]
    None,
    /// Plain FullNAT: the client's SYN (TCP) or first datagram (UDP) went
    /// to the real, which has not answered yet (passive health checking,
    /// `passive.rs`).
    Waiting {
        /// When it was first forwarded: the engine's clock in microseconds, modulo 2^32.
        sent_us: u32,
        /// [`Handshake::RESENT`], [`Handshake::COUNTED`].
        bits: u8,
    },
    /// The real's handshake is open, or its replay not yet confirmed.
    Open(HandshakeId),
    /// The two handshakes are joined.
    Spliced {
        /// The last bare real→client segment (sequence, acknowledgement
        /// and window folded), for ack-storm detection.
        storm_key: u32,
        /// How often that segment repeated in a row (saturating).
        storm_count: u8,
    },
}

impl Handshake {
    /// [`Handshake::Waiting`]: the client sent its SYN again (no RTT sample, Karn).
    pub(crate) const RESENT: u8 = 1;
    /// [`Handshake::Waiting`]: the SYN was counted unanswered already.
    pub(crate) const COUNTED: u8 = 2;

    /// A connection SYNProxy opened (its handshake open or spliced).
    pub(crate) fn is_synproxy(self) -> bool {
        matches!(self, Self::Open(_) | Self::Spliced { .. })
    }
}

/// How far each side of a TCP connection has got: where what it sent ends,
/// its FIN and whether the other side acknowledged it, and the latest TSval
/// sent toward the real.
///
/// The classic closing timeouts are a few seconds, shorter than a peer's
/// retransmission timeout after losses. Tracking the FINs lets the engine
/// keep a closing connection while a FIN is still unacknowledged (its
/// sender will retransmit it) and apply the short timeouts only once the
/// close has really happened. The ends also give the sequence numbers of
/// the RSTs the engine sends both sides when it forgets a connection that
/// is still open, and, with the TSval, tell whether the real's TIME_WAIT
/// would accept a new SYN on the same local port (`real_clock.rs`).
///
/// Packed: 13 bytes, so that a connection keeps its 144-byte budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, packed)]
pub struct Progress {
    /// Sequence number just past what each side sent (`[client, real]`),
    /// its FIN included, in the receiving side's numbering, so its ACKs
    /// compare directly.
    end: [SeqNumber; 2],
    /// The latest TSval sent toward the real, in the real's view.
    tsval_to_real: SeqNumber,
    /// Bits: 1 client FIN seen, 2 real FIN seen, 4 client FIN acked, 8 real
    /// FIN acked, 16 client end known, 32 real end known, 64 TSval known,
    /// 128 local port given back.
    bits: u8,
}

impl Progress {
    const FIN: [u8; 2] = [1, 2];
    const ACKED: [u8; 2] = [4, 8];
    const END: [u8; 2] = [16, 32];
    const TSVAL: u8 = 64;
    const PORT_BACK: u8 = 128;

    fn index(side: Side) -> usize {
        match side {
            Side::Client => 0,
            Side::Real => 1,
        }
    }

    /// Note a segment from `side` ending at `end` (receiver's numbering),
    /// a FIN if `fin`. Only the furthest end counts: a retransmission or a
    /// reordered segment does not move it back.
    pub fn sent(&mut self, side: Side, end: SeqNumber, fin: bool) {
        let i = Self::index(side);
        let known = self.bits & Self::END[i] != 0;
        if !known || end > { self.end[i] } {
            self.end[i] = end;
        }
        self.bits |= Self::END[i];
        if fin {
            self.bits = (self.bits | Self::FIN[i]) & !Self::ACKED[i];
        }
    }

    /// Note an acknowledgement number sent by `side`: it may cover the other side's FIN.
    pub fn acked_by(&mut self, side: Side, ack: SeqNumber) {
        let other = 1 - Self::index(side);
        if self.bits & Self::FIN[other] != 0 && ack >= { self.end[other] } {
            self.bits |= Self::ACKED[other];
        }
    }

    /// Note a TSval sent toward the real (its view); the latest counts.
    pub fn tsval_sent(&mut self, tsval: SeqNumber) {
        let latest = self.tsval_to_real;
        if self.bits & Self::TSVAL == 0 || tsval > latest {
            self.tsval_to_real = tsval;
        }
        self.bits |= Self::TSVAL;
    }

    /// Where what `side` sent ends (its FIN included), in the other side's
    /// numbering: the sequence number the other side expects next, once it
    /// has everything.
    pub fn end(self, side: Side) -> Option<SeqNumber> {
        let i = Self::index(side);
        (self.bits & Self::END[i] != 0).then_some(self.end[i])
    }

    /// The latest TSval sent toward the real, if any segment carried one.
    /// (TSvals compare modulo 2^32 like sequence numbers, RFC 7323 §5.2.)
    pub fn tsval_to_real(self) -> Option<SeqNumber> {
        (self.bits & Self::TSVAL != 0).then_some(self.tsval_to_real)
    }

    /// Whether a FIN was sent that the other side has not acknowledged yet.
    pub fn unacked(self) -> bool {
        let seen = self.bits & 3;
        (self.bits >> 2) & seen != seen
    }

    /// Whether both sides' FINs are acknowledged.
    pub fn closed(self) -> bool {
        self.bits & 15 == 15
    }

    /// Note that the connection's local port went back to its pool while
    /// the entry stays for late segments (the connection is over).
    pub fn give_port_back(&mut self) {
        self.bits |= Self::PORT_BACK;
    }

    /// Whether the local port went back to its pool already.
    pub fn port_given_back(self) -> bool {
        self.bits & Self::PORT_BACK != 0
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
    /// SYNProxy: the window scale announced to the client (0 if none).
    pub client_wscale: u8,
    /// SYNProxy: the window scale the real announced (0 if none).
    pub real_wscale: u8,
    /// SYNProxy: the client's own window scale as told to the real (0 if
    /// none), for windows in segments the engine builds toward the real.
    pub peer_wscale: u8,
    /// Index of the service in the engine.
    pub service: u32,
    /// Index of the real in its service.
    pub real_index: u32,
    /// Sequence and timestamp translation.
    pub xlat: Translation,
    /// How far each side has got: ends, FINs, the latest TSval toward the real.
    pub progress: Progress,
    /// Where the connection stands with SYNProxy.
    pub(crate) handshake: Handshake,
    /// The client-address delivery (TOA, PROXY header) still under way, if any.
    pub(crate) delivery: Option<DeliveryId>,
    /// Where it stands with the device's fast path.
    pub(crate) fast_path: crate::fast_path::Mark,
    /// Idle deadline: refreshed by every packet.
    pub expires: Instant,
}

impl Conn {
    /// Note a TCP segment with `l4` from `side` (as it arrived, before
    /// translation) in the connection's progress; the state it leads to.
    /// The close is over only when both FINs are acknowledged; until then a
    /// FIN may be retransmitted, later than the classic few-second closing
    /// timeouts, and must still find its entry.
    pub(crate) fn note_segment(&mut self, side: Side, l4: &crate::packet::L4Info) -> TcpState {
        let end = (!l4.flags.rst).then(|| SeqNumber(l4.seq) + l4.seg_len);
        self.note_progress(side, end, l4.flags.fin, l4.flags.ack.then_some(SeqNumber(l4.ack)));
        match self.state.next(side, l4.flags) {
            TcpState::TimeWait if !self.progress.closed() => TcpState::LastAck,
            next => next,
        }
    }

    /// Note in the connection's progress that `side` sent up to `end` (as
    /// it arrived: the sender's numbering, translated here into the
    /// receiver's), its FIN if `fin`, and acknowledged `ack` (as it arrived).
    pub(crate) fn note_progress(
        &mut self,
        side: Side,
        end: Option<SeqNumber>,
        fin: bool,
        ack: Option<SeqNumber>,
    ) {
        if let Some(end) = end {
            self.progress.sent(side, end + self.xlat.for_packet_from(side).0, fin);
        }
        if let Some(ack) = ack {
            self.progress.acked_by(side, ack);
        }
    }

    /// The flow key of packets from the client: client → VIP.
    pub fn client_key(&self) -> FlowKey {
        self.key(Side::Client)
    }

    /// The flow key of packets from the real: real → local address.
    pub fn real_key(&self) -> FlowKey {
        self.key(Side::Real)
    }

    /// The key of packets arriving from `side`.
    pub fn key(&self, side: Side) -> FlowKey {
        let (src, dst) = self.ends(side);
        FlowKey { proto: self.proto, src: *src, dst: *dst }
    }

    /// Whether `key` is the key of packets arriving from `side`, compared
    /// in place rather than copied into a key first: every lookup's probe
    /// does this.
    #[inline]
    pub(crate) fn has_key(&self, side: Side, key: &FlowKey) -> bool {
        let (src, dst) = self.ends(side);
        src.port == key.src.port
            && dst.port == key.dst.port
            && src.addr == key.src.addr
            && dst.addr == key.dst.addr
            && self.proto == key.proto
    }

    /// Source and destination of packets arriving from `side`.
    #[inline]
    fn ends(&self, side: Side) -> (&Endpoint, &Endpoint) {
        match side {
            Side::Client => (&self.client, &self.vip),
            Side::Real => (&self.real, &self.laddr),
        }
    }
}
