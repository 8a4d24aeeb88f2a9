//! The impairments of one direction of one host's link, and what it did.

use core::time::Duration;

/// Which way a packet crosses a host's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkDir {
    /// From the host to the middlebox.
    ToMiddlebox,
    /// From the middlebox to the host.
    ToHost,
}

/// How one direction of a link treats packets. Every probability is drawn
/// independently per packet from the network's seeded generator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay every packet gets.
    pub delay: Duration,
    /// Extra delay uniform in `[0, jitter]` per packet. Jitter alone never
    /// reorders: a packet arrives no earlier than the one sent before it on
    /// the same link, as on a real link where the burst a stack emits at
    /// once stays in order. Only `reorder` (and duplicates) reorder.
    pub jitter: Duration,
    /// Probability a packet is lost.
    pub loss: f64,
    /// Probability a packet that was not lost arrives twice (each copy gets
    /// its own delay, so the copies may be reordered too).
    pub duplicate: f64,
    /// Probability a packet is held back by an extra delay uniform in
    /// `[0, 4 × delay]` (at least 1 ms), so that later packets overtake it.
    /// A held-back packet does not hold back those behind it.
    pub reorder: f64,
    /// Largest IP packet the link carries; larger ones are counted as
    /// `too_big` and dropped. Hosts use it as their interface MTU.
    pub mtu: usize,
}

impl Default for LinkConfig {
    /// 500 µs of delay, no impairment, 1500-byte MTU.
    fn default() -> Self {
        Self {
            delay: Duration::from_micros(500),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            mtu: 1500,
        }
    }
}

impl LinkConfig {
    /// The default link with loss, duplication and reordering each at `p`,
    /// and jitter of a fifth of the delay: the usual "bad network" setting.
    pub fn lossy(p: f64) -> Self {
        let base = Self::default();
        Self { loss: p, duplicate: p, reorder: p, jitter: base.delay / 5, ..base }
    }

    /// A link that drops everything: a partition.
    pub fn down() -> Self {
        Self { loss: 1.0, ..Self::default() }
    }

    /// The largest extra hold-back a reordered packet may get.
    pub(crate) fn reorder_span(&self) -> Duration {
        (self.delay * 4).max(Duration::from_millis(1))
    }
}

/// What one direction of a link did to the packets it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets put on the link.
    pub sent: u64,
    /// Packets the link lost.
    pub lost: u64,
    /// Extra copies the link made.
    pub duplicated: u64,
    /// Packets that arrived at the far end (copies included).
    pub delivered: u64,
    /// Packets larger than the link MTU, dropped.
    pub too_big: u64,
    /// Bytes of the packets that arrived.
    pub delivered_bytes: u64,
}
