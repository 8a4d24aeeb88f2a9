//! What health checking asks of the engine beyond weights: an active
//! check's RTT to start a real's RTO from, and the connections of a real
//! gone down reset (`on_down = "reset"`). The engine decides nothing here;
//! what it counts for passive detection is `passive.rs`.

use core::time::Duration;

use super::{ConfigError, Engine};
use crate::addr::{Endpoint, Proto};
use crate::conn::ConnId;

impl Engine {
    /// Seed the handshake RTT toward `real` with `rtt` (an active check's
    /// connect time): every service's real at `real` that has no RTT sample
    /// yet takes it as its first, so the first client toward a checked real
    /// never waits `rto_initial` for a lost SYN. Reals with a sample keep
    /// theirs: the data path's own handshakes measure what clients see.
    pub fn seed_rtt(&mut self, real: Endpoint, rtt: Duration) {
        let reals = self.services.iter_mut().flat_map(|s| s.reals.iter_mut());
        for r in reals.filter(|r| r.endpoint == real && r.handshake.srtt.is_none()) {
            r.handshake.sample(rtt);
        }
    }

    /// Remove every connection of the service (`proto`, `vip`) toward
    /// `real` (in service or draining); those still open get an RST on
    /// both sides, as any connection forgotten while open does. Returns how
    /// many were removed. For a real gone down under `on_down = "reset"`.
    pub fn reset_real(&mut self, proto: Proto, vip: Endpoint, real: Endpoint) -> Result<usize, ConfigError> {
        let svc = self.service_index(proto, vip)?;
        let index = self.services[svc]
            .reals
            .iter()
            .position(|r| r.endpoint == real)
            .ok_or(ConfigError::NoSuchReal(real))?;
        let (svc, index) = (svc as u32, index as u32);
        let ids: Vec<ConnId> = self
            .conns
            .table()
            .iter()
            .filter(|(_, c)| c.service == svc && c.real_index == index)
            .map(|(id, _)| id)
            .collect();
        let now = self.last_now;
        for &id in &ids {
            self.remove_conn(now, id);
        }
        Ok(ids.len())
    }
}
