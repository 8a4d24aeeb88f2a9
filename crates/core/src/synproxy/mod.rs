//! SYNProxy: the engine answers a client's SYN itself with a SYN cookie,
//! keeps nothing for it, and opens a connection to a real only for a client
//! whose ACK proves the cookie. The two handshakes are then spliced: every
//! later packet is translated between the client's view (the cookie's
//! sequence space, our timestamps, the window scale we announced) and the
//! real's.
//!
//! Where the classic kernel SYNProxy stalled clients for seconds, this one:
//! retransmits the SYN toward the real on its own timer, with an RTO from the
//! real's measured handshake RTT (RFC 6298) instead of the connection's 3 s
//! expiry; moves the client to another real after `syn_retries` unanswered
//! tries or an RST (the client sees a short delay, not an error); builds its
//! SYN-ACK from scratch with only options it implements; translates
//! timestamps both ways so PAWS and RTT measurement work end to end; and
//! rescales the real's window when the real chose another scale than the one
//! announced to the client. `RetransmitMode::Classic` keeps the old
//! behaviour for side-by-side comparison.

pub(crate) mod cookie;
mod handshake;
mod splice;
mod template;

pub use cookie::CookieKeys;
pub(crate) use handshake::{RealAnswer, ReplayCheck, SynTimeout};
pub use template::SynAckTemplate;

use core::time::Duration;

use rvs_wire::tcp_seq::SeqNumber;

use crate::config::SynproxyConfig;
use crate::conn::{ConnId, HandshakeId, HandshakeTag};
use crate::emit::store::PacketStore;
use crate::hash::Secrets;
use crate::real::MAX_RTO;
use crate::slab::Slab;
use crate::time::Instant;
use cookie::{CookieJar, Offer};

/// Real handshakes (each with its retries) one client may be offered before it gets an RST.
pub(crate) const MAX_TRIED: usize = 8;
/// The classic retransmit: the SYN_SENT expiry of kernel FullNAT.
const CLASSIC_RTO: Duration = Duration::from_secs(3);
const CLASSIC_TRIES: u8 = 3;
/// Times the kept packets are replayed before the engine leaves recovery to TCP.
const REPLAY_TRIES: u8 = 3;

/// Counters of the SYNProxy path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynproxyStats {
    /// Client SYNs answered with a cookie.
    pub syns_answered: u64,
    /// ACKs whose cookie was valid (connections opened toward a real).
    pub cookies_accepted: u64,
    /// Real handshakes completed and spliced.
    pub spliced: u64,
    /// SYNs sent to a real again after its RTO.
    pub syn_retransmits: u64,
    /// Clients moved to another real (no answer or an RST from the first).
    pub failovers: u64,
    /// Clients given an RST because no real answered.
    pub gave_up: u64,
    /// Client packets kept while a real's handshake was open.
    pub stored: u64,
    /// Replays sent again because the real showed no sign of receiving them.
    pub replays_resent: u64,
    /// SYNs a real answered with an ACK of an older connection on the tuple
    /// (its TIME_WAIT refused them): that connection was reset and the SYN sent again.
    pub refused: u64,
}

/// Segments SYNProxy built toward the real of connection `conn`, not yet
/// queued: the engine hands them through client-address delivery (TOA) and
/// queues them in order.
#[must_use]
#[derive(Debug)]
pub(crate) struct ToReal {
    pub(crate) conn: ConnId,
    slots: [u32; 8],
    n: usize,
}

impl ToReal {
    fn new(conn: ConnId) -> Self {
        Self { conn, slots: [0; 8], n: 0 }
    }

    fn push(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(self.n) {
            *s = slot;
            self.n += 1;
        }
    }

    pub(crate) fn slots(&self) -> &[u32] {
        &self.slots[..self.n]
    }
}

/// A client whose handshake with a real is still open.
#[derive(Debug, Clone)]
pub(crate) struct OpenHandshake {
    conn: ConnId,
    client_isn: SeqNumber,
    cookie: SeqNumber,
    offer: Offer,
    /// The client's TSval when its ACK arrived (the real-side offset is taken from it).
    client_tsval: SeqNumber,
    /// The TSecr of the client's ACK: the TSval our SYN-ACK carried.
    client_echo: SeqNumber,
    /// Our ISN and TSval toward the current real.
    real_isn: SeqNumber,
    real_tsval: SeqNumber,
    syn_sent: bool,
    /// Spliced; the kept packets were replayed and are kept until the real
    /// shows it got them (any packet from it), resent on the RTO otherwise.
    confirming: bool,
    tries: u8,
    first_sent: Instant,
    deadline: Instant,
    rto: Duration,
    tried: [u32; MAX_TRIED],
    n_tried: usize,
    stored: [u32; 8],
    n_stored: usize,
}

/// The engine's SYNProxy state: cookie keys, open handshakes, packet slots.
#[derive(Debug)]
pub(crate) struct SynproxyState {
    jar: CookieJar,
    handshakes: Slab<OpenHandshake, HandshakeTag>,
    pub(crate) stats: SynproxyStats,
}

impl SynproxyState {
    pub(crate) fn new(secrets: &Secrets, cfg: &SynproxyConfig) -> Self {
        Self {
            jar: CookieJar::new(secrets, cfg.cookie_validity),
            handshakes: Slab::default(),
            stats: SynproxyStats::default(),
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.handshakes.poll_timeout()
    }

    /// Forget the handshake of a connection that is going away; its kept packets go back to `store`.
    pub(crate) fn forget(&mut self, hid: HandshakeId, store: &mut PacketStore) {
        let Some(hs) = self.handshakes.remove(hid) else { return };
        for &slot in &hs.stored[..hs.n_stored] {
            store.release(slot);
        }
    }

    /// Open handshakes (for listings).
    pub(crate) fn open(&self) -> usize {
        self.handshakes.len()
    }
}

impl OpenHandshake {
    fn new() -> Self {
        Self {
            conn: ConnId::NONE,
            client_isn: SeqNumber(0),
            cookie: SeqNumber(0),
            offer: Offer::default(),
            client_tsval: SeqNumber(0),
            client_echo: SeqNumber(0),
            real_isn: SeqNumber(0),
            real_tsval: SeqNumber(0),
            syn_sent: false,
            confirming: false,
            tries: 0,
            first_sent: Instant::ZERO,
            deadline: Instant::ZERO,
            rto: Duration::ZERO,
            tried: [0; MAX_TRIED],
            n_tried: 0,
            stored: [0; 8],
            n_stored: 0,
        }
    }
}
