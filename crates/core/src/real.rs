//! A real server as the engine keeps it at run time: its counters, its
//! local port pools and what its handshakes taught the engine.

use core::time::Duration;

use crate::addr::Endpoint;
use crate::config::SynproxyConfig;
use crate::laddr::PoolId;
use crate::time::Instant;

/// Upper bound of a backed-off retransmit timeout toward a real.
pub(crate) const MAX_RTO: Duration = Duration::from_secs(10);

/// Packets and bytes in each direction, and connections made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    /// Connections created.
    pub conns: u64,
    /// Packets from clients forwarded toward reals.
    pub pkts_in: u64,
    /// Packets from reals forwarded toward clients.
    pub pkts_out: u64,
    /// IP bytes from clients forwarded toward reals.
    pub bytes_in: u64,
    /// IP bytes from reals forwarded toward clients.
    pub bytes_out: u64,
}

impl TrafficCounters {
    /// Add another set of counters (aggregating workers).
    pub fn merge(&mut self, other: &Self) {
        self.conns += other.conns;
        self.pkts_in += other.pkts_in;
        self.pkts_out += other.pkts_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }
}

/// A real server of one service.
///
/// A removed real stays in its service's list, out of service, until its last
/// connection ends, so counters and connection references stay valid.
#[derive(Debug, Clone)]
pub struct Real {
    /// Where connections go.
    pub endpoint: Endpoint,
    /// Share of new connections; 0 = quiesced.
    pub weight: u32,
    /// False once removed by the control plane.
    pub in_service: bool,
    /// Connections in ESTABLISHED.
    pub active_conns: u32,
    /// Connections in any other state.
    pub inactive_conns: u32,
    /// Traffic through this real.
    pub stats: TrafficCounters,
    /// One port pool per local address of the service, in the same order.
    pub pools: Vec<PoolId>,
    /// Handshakes with this real: RTT (plain FullNAT and SYNProxy),
    /// SYNProxy's retransmits and failovers.
    pub handshake: HandshakeStats,
    /// What the data path saw of this real's answers: the passive health signal.
    pub passive: PassiveCounters,
    /// New connections toward this real that found no free local port.
    pub no_port: PortExhaustion,
    /// The fast path's name for this real while it serves: unique over
    /// the engine's life, never 0 ([`crate::fast_path::Offload::RetireReal`]).
    pub real_gen: u32,
}

/// New connections toward a real that found every local port in use or
/// resting, and when the operator was last told
/// ([`crate::Event::PortsExhausted`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortExhaustion {
    /// Connections dropped for it, in all.
    pub dropped: u64,
    /// Dropped since the operator was last told.
    pub(crate) untold: u64,
    /// When the operator was last told.
    pub(crate) told_at: Option<Instant>,
}

impl Real {
    /// Whether the real takes new connections.
    pub fn available(&self) -> bool {
        self.in_service && self.weight > 0
    }

    /// Connections of this real in any state.
    pub fn conns(&self) -> u32 {
        self.active_conns + self.inactive_conns
    }
}

/// What the data path saw of one real's answers, for passive health
/// checking: workers only count, the control plane decides. Each counter
/// only grows (until [`crate::Engine::zero_counters`]); the control plane
/// reads their growth over its window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassiveCounters {
    /// Handshakes toward the real that got its SYN-ACK (plain FullNAT and SYNProxy).
    pub syn_answered: u64,
    /// SYNs toward the real that got no SYN-ACK within its handshake RTO:
    /// once per plain connection, once per unanswered SYN of SYNProxy (a
    /// client it moves on after two tries counts two).
    pub syn_unanswered: u64,
    /// SYNs the real answered with an RST (plain FullNAT and SYNProxy).
    pub syn_refused: u64,
    /// UDP flows that saw a reply from the real (each flow once).
    pub udp_answered: u64,
    /// UDP flows that expired having carried client datagrams and never a reply.
    pub udp_unanswered: u64,
}

impl PassiveCounters {
    /// Add another set of counters (aggregating workers).
    pub fn merge(&mut self, other: &Self) {
        self.syn_answered += other.syn_answered;
        self.syn_unanswered += other.syn_unanswered;
        self.syn_refused += other.syn_refused;
        self.udp_answered += other.udp_answered;
        self.udp_unanswered += other.udp_unanswered;
    }
}

/// What one real's handshakes taught the engine, and what they cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandshakeStats {
    /// Smoothed handshake RTT (RFC 6298), once there is a sample: from
    /// SYN to SYN-ACK, of plain and SYNProxy handshakes sent once (Karn),
    /// or seeded by an active check ([`crate::Engine::seed_rtt`]).
    pub srtt: Option<Duration>,
    /// RTT variation.
    pub rttvar: Duration,
    /// SYNs retransmitted to this real.
    pub syn_retransmits: u64,
    /// SYNProxy clients moved away from this real (it did not answer or
    /// sent an RST); passive health checking reads it beside [`PassiveCounters`].
    pub failovers: u64,
}

impl HandshakeStats {
    /// RFC 6298 §2, with a 1 ms clock granularity.
    pub(crate) fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// The RTO toward the real (RFC 6298 §2): from the measured RTT, at
    /// least `rto_floor`; `rto_initial` until there is a sample.
    pub(crate) fn rto(&self, cfg: &SynproxyConfig) -> Duration {
        match self.srtt {
            None => cfg.rto_initial,
            Some(srtt) => (srtt + (self.rttvar * 4).max(Duration::from_millis(1))).max(cfg.rto_floor),
        }
        .min(MAX_RTO)
    }
}
