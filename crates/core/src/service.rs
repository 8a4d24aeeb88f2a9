//! Services and their reals as the engine keeps them at run time.

use core::time::Duration;

use crate::addr::Proto;
use crate::config::{ServiceConfig, SynproxyConfig, Timeouts};
use crate::sched::Scheduler;
use crate::tcp_state::TcpState;

pub use crate::real::{HandshakeStats, PassiveCounters, PortExhaustion, Real, TrafficCounters};

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

/// The idle timeout of a connection of service `svc` in `state`: the
/// service's own timeouts, else the engine-wide `defaults`.
pub(crate) fn idle_timeout(
    services: &[Service],
    defaults: &Timeouts,
    svc: u32,
    proto: Proto,
    state: TcpState,
) -> Duration {
    let t = services.get(svc as usize).and_then(|s| s.config.timeouts.as_ref()).unwrap_or(defaults);
    match proto {
        Proto::Tcp => t.tcp(state),
        Proto::Udp => t.udp,
    }
}

/// Real `real_index` of service `svc`, if both exist.
pub(crate) fn real_mut(services: &mut [Service], svc: u32, real_index: u32) -> Option<&mut Real> {
    services.get_mut(svc as usize)?.reals.get_mut(real_index as usize)
}

impl Service {
    /// A service's reals and local addresses share one family, its backend
    /// family; `addr` may join them if it is of that family (or is the first).
    /// Its VIP may be of the other family: the connections are translated
    /// (NAT64, NAT46; see `xlat`).
    pub(crate) fn check_backend_family(&self, addr: std::net::IpAddr) -> Result<(), crate::ConfigError> {
        let reals = self.reals.iter().map(|r| r.endpoint.addr);
        let mut backend = self.config.laddrs.iter().copied().chain(reals);
        match backend.next() {
            Some(b) if b.is_ipv4() != addr.is_ipv4() => Err(crate::ConfigError::FamilyMismatch(addr)),
            _ => Ok(()),
        }
    }
}
