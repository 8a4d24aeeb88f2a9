//! The in-kernel fast path, as the engine sees it: what it hands a device
//! that can forward established connections itself (an XDP program), and
//! what it takes back.
//!
//! The engine stays the single source of truth. Once a connection is
//! established (its SYNProxy handshake spliced, its client-address delivery
//! acknowledged, its real's first answer seen) and a device asked for it
//! ([`EngineConfig::fast_path`](crate::EngineConfig::fast_path)), the engine
//! offers both directions as [`FlowRule`]s ([`Offload::Install`], taken with
//! [`Engine::poll_offload`](crate::Engine::poll_offload)). The device then
//! rewrites the connection's packets exactly as the engine would
//! ([`apply`]: the engine's own rewrite, byte for byte) and sends everything
//! else (SYN, FIN, RST, IP options, fragments, other TCP option layouts) to
//! the engine as before. A FIN or RST reaching the engine, expiry, a flush,
//! a real or service removed take the connection back ([`Offload::Remove`],
//! [`Offload::RetireReal`]); the device reports what it forwarded
//! ([`FlowReport`], [`FastPathStats`]) and the engine counts it as its own.

mod apply;
mod engine;

pub use apply::{Applied, apply};
pub(crate) use engine::{FastPath, Mark};

/// The largest [`EngineConfig::fast_path_after`](crate::EngineConfig::fast_path_after)
/// the engine counts to (a connection keeps two bytes for it).
pub const MAX_AFTER: u32 = engine::MAX_AFTER;

use crate::addr::{Endpoint, FlowKey};
use crate::conn::ConnId;
use crate::drop::DropCounters;
use crate::tcp_state::Side;
use crate::time::Instant;

/// One direction of an offloaded connection, as the device applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRule {
    /// The packets' key as they arrive.
    pub key: FlowKey,
    /// The source they leave with.
    pub src: Endpoint,
    /// The destination they leave with.
    pub dst: Endpoint,
    /// The side they go to.
    pub to: Side,
    /// Added to the sequence number (the sender's own offset).
    pub seq_add: u32,
    /// Subtracted from the acknowledgement number (with ACK set) and from
    /// SACK block edges (the peer's offset).
    pub ack_sub: u32,
    /// Added to TSval.
    pub tsval_add: u32,
    /// Subtracted from TSecr, with ACK set.
    pub tsecr_sub: u32,
    /// (real's window scale, client's) toward the client when they differ:
    /// the window is rescaled.
    pub rescale: Option<(u8, u8)>,
    /// The TTL or hop limit goes down by one (and a packet at 1 goes to the engine).
    pub decrement_ttl: bool,
    /// The generation of the connection's real: the rule is live only
    /// while this generation is ([`Offload::RetireReal`]).
    pub real_gen: u32,
}

/// An offloaded connection, opaque to the device: the engine's handle,
/// stale once the connection is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId(pub(crate) ConnId);

/// A change to the device's flow table, in the order the engine made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    /// Both directions of an established connection: `[from client, from
    /// real]`. The device marks the rules' real generation live (it is
    /// until a [`Offload::RetireReal`] of it).
    Install {
        /// The connection.
        flow: FlowId,
        /// Its rules, by the side packets come from.
        rules: [FlowRule; 2],
    },
    /// The connection left the fast path (a FIN or RST seen, expired,
    /// flushed): its packets go to the engine again.
    Remove {
        /// The connection.
        flow: FlowId,
        /// Its keys, `[from client, from real]`.
        keys: [FlowKey; 2],
    },
    /// A real is gone (removed, its service deleted): every rule with this
    /// generation stops at once (its live slot is cleared first), then its
    /// entries are purged. Its connections carry on through the engine.
    RetireReal {
        /// The real's generation.
        real_gen: u32,
    },
}

impl Offload {
    /// Whether this change makes `held`, an install not yet made, moot:
    /// its connection is removed, or its real retired.
    pub fn voids(&self, held: &Self) -> bool {
        let Self::Install { flow, rules } = held else { return false };
        match self {
            Self::Remove { flow: gone, .. } => gone == flow,
            Self::RetireReal { real_gen } => rules[0].real_gen == *real_gen,
            Self::Install { .. } => false,
        }
    }
}

/// What the device forwarded of one offloaded connection since its last
/// report. Packets and bytes (IP bytes, as the engine counts them) are
/// indexed by the side they came from: `[client, real]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowReport {
    /// The connection.
    pub flow: FlowId,
    /// Packets forwarded, by the side they came from.
    pub packets: [u64; 2],
    /// IP bytes forwarded, by the side they came from.
    pub bytes: [u64; 2],
    /// When the last packet passed, on the engine's clock.
    pub last_seen: Option<Instant>,
    /// Where the last TCP segment the device forwarded from each side
    /// stood, when one passed since the last report: the engine's progress
    /// of the connection (its RSTs on expiry, its close, PAWS on port
    /// reuse) follows it as if the engine had forwarded the segment.
    pub progress: [Option<FlowProgress>; 2],
    /// The device dropped the entry on its own (its table was full): the
    /// connection carries on through the engine.
    pub evicted: bool,
}

/// One TCP segment the device forwarded, as [`FlowReport::progress`] tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowProgress {
    /// Its sequence number plus its payload length, as it arrived.
    pub seq_end: u32,
    /// Its acknowledgement number as it arrived, with ACK set.
    pub ack: Option<u32>,
    /// Its TSval as it left (translated), with timestamps.
    pub tsval: Option<u32>,
}

/// Counters the device's program keeps, as deltas since the last read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FastPathStats {
    /// Packets forwarded by the fast path.
    pub forwarded: u64,
    /// IP bytes of those packets.
    pub bytes: u64,
    /// Packets of an offloaded flow sent to the engine (a FIN, an option layout the program does not rewrite).
    pub to_engine: u64,
    /// SYNs answered with a cookie SYN-ACK by the program.
    pub synacks: u64,
    /// Cookie ACKs the program validated and passed to the engine.
    pub acks_passed: u64,
    /// SYN-cookie ACKs passed to the engine because the program had no key.
    pub no_key: u64,
    /// Packets the program dropped, by the engine's reasons (`bad_cookie`).
    pub drops: DropCounters,
}

/// The engine's fast-path counters ([`Stats::fast_path`](crate::Stats::fast_path)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastPathCounters {
    /// Connections in the fast path now.
    pub offloaded: u64,
    /// Connections offered to the device.
    pub installs: u64,
    /// Connections taken back (FIN or RST, expiry, flush, their real gone).
    pub removals: u64,
    /// Connections the device dropped from its table on its own.
    pub evictions: u64,
    /// Offers not made because the queue toward the device was full (the
    /// connection stays in the engine and is offered again with its next packet).
    pub queue_full: u64,
    /// Packets the device forwarded.
    pub forwarded: u64,
    /// IP bytes the device forwarded.
    pub bytes: u64,
    /// Packets of offloaded flows the device sent to the engine.
    pub to_engine: u64,
    /// SYNs the device answered with a cookie.
    pub synacks: u64,
    /// Cookie ACKs the device validated and passed on.
    pub acks_passed: u64,
    /// Cookie ACKs the device passed on without a key to check them.
    pub no_key: u64,
}
