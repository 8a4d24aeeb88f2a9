//! Services and their reals as the engine keeps them at run time.

use core::time::Duration;

use crate::config::{ServiceConfig, SynproxyConfig};
use crate::sched::Scheduler;

pub use crate::real::{HandshakeStats, PortExhaustion, Real, TrafficCounters};

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

/// The RTO toward real `real_index` of service `svc`, for a retransmission
/// the engine makes toward it (a SYN, a replay, a PROXY header).
pub(crate) fn handshake_rto(
    services: &[Service],
    svc: u32,
    real_index: u32,
    cfg: &SynproxyConfig,
) -> Duration {
    services
        .get(svc as usize)
        .and_then(|s| s.reals.get(real_index as usize))
        .map_or(cfg.rto_initial, |r| r.handshake.rto(cfg))
}
