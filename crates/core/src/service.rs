//! Services and their reals as the engine keeps them at run time.

use crate::addr::Endpoint;
use crate::config::ServiceConfig;
use crate::laddr::PoolId;
use crate::sched::Scheduler;
use crate::time::Instant;

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
    /// SYNProxy handshakes with this real: RTT, retransmits, failovers.
    pub handshake: crate::synproxy::HandshakeStats,
    /// New connections toward this real that found no free local port.
    pub no_port: PortExhaustion,
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

/// A virtual service at run time.
#[derive(Debug)]
pub struct Service {
    /// Configuration as last applied.
    pub config: ServiceConfig,
    /// Reals, including removed ones that still carry connections.
    pub reals: Vec<Real>,
    /// The scheduler, kept in step with `reals`.
    pub sched: Scheduler,
    /// Traffic through this service.
    pub stats: TrafficCounters,
    /// False once removed; kept until its last connection ends.
    pub in_service: bool,
    /// SYNProxy: the window scale the reals' SYN-ACKs last chose, announced
    /// to new clients so the real's windows usually pass unchanged.
    pub synproxy_wscale: Option<u8>,
}
