//! What a cookie issuer beside the engine needs to answer a client's SYN
//! exactly as the engine does: the cookie keys around a
//! time and, per SYNProxy service, the fixed parts of the SYN-ACK. The
//! engine's own SYN-ACK is built from the same [`SynAckTemplate`], so the
//! two cannot drift apart.

use std::net::IpAddr;

use super::cookie::{self, CookieJar, CookieKeys};
use crate::addr::{Endpoint, Proto};
use crate::client_addr;
use crate::config::SynproxyConfig;
use crate::engine::Engine;
use crate::service::Service;
use crate::time::Instant;

/// The fixed parts of a SYNProxy service's SYN-ACK to a client of one
/// address family, and how its cookies are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynAckTemplate {
    /// The service (TCP); its clients have the VIP's address family.
    pub vip: Endpoint,
    /// MSS announced to the client.
    pub mss: u16,
    /// A client's MSS (536 or 1220 when it sent none) counts as at most this.
    pub mss_max: u16,
    /// Window scale announced when the client offers one.
    pub wscale: u8,
    /// TTL (hop limit) of the SYN-ACK.
    pub ttl: u8,
    /// SACK is offered back to a client that offers it.
    pub sack: bool,
    /// Timestamps are offered back to a client that offers them.
    pub timestamps: bool,
    /// An ACK with a bad cookie is answered with an RST (by the engine).
    pub rst_on_bad_cookie: bool,
    /// Cookie clock steps (32 s) a cookie stays valid for.
    pub cookie_max_age: u8,
}

impl SynAckTemplate {
    /// The template of `service` for clients of `client`'s family.
    pub(crate) fn new(cfg: &SynproxyConfig, jar: &CookieJar, service: &Service, client: IpAddr) -> Self {
        // With TOA the client's segments grow by the option: it is told less.
        let mss_max = cookie::mss_max(client, cfg.mss_max);
        let mss = service.config.mss_clamp.map_or(mss_max, |c| c.min(mss_max));
        let mss = crate::xlat::synproxy_mss(mss, cfg.mss_max, client, &service.config.laddrs);
        let mss = mss.saturating_sub(client_addr::toa_room(&service.config, client)).max(64);
        Self {
            vip: service.config.vip,
            mss,
            mss_max: cfg.mss_max,
            wscale: service.synproxy_wscale.unwrap_or(cfg.wscale),
            ttl: cfg.ttl,
            sack: cfg.sack,
            timestamps: cfg.timestamps,
            rst_on_bad_cookie: cfg.rst_on_bad_cookie,
            cookie_max_age: jar.max_age() as u8,
        }
    }
}

impl Engine {
    /// The cookie keys of the period of `now` and of the periods before and
    /// after it: with them, cookies made and checked outside the engine are
    /// the engine's own.
    pub fn cookie_keys(&self, now: Instant) -> CookieKeys {
        CookieJar::keys_around(self.conns.secrets(), now)
    }

    /// The SYN-ACK template of every TCP service with SYNProxy. A service's
    /// announced window scale follows its reals' SYN-ACKs, so the templates
    /// change over time: read them again now and then.
    pub fn syn_ack_templates(&self) -> impl Iterator<Item = SynAckTemplate> + '_ {
        self.by_vip.iter().filter_map(|(&(proto, vip), &svc)| {
            let service = self.services.get(svc as usize)?;
            (proto == Proto::Tcp && service.config.synproxy)
                .then(|| SynAckTemplate::new(&self.cfg.synproxy, &self.syn.jar, service, vip.addr))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EngineConfig, ServiceConfig};

    fn ep(s: &str) -> Endpoint {
        s.parse::<std::net::SocketAddr>().unwrap().into()
    }

    #[test]
    fn templates_cover_synproxy_services_only_with_each_familys_mss() {
        let mut cfg = EngineConfig::default();
        cfg.synproxy.rst_on_bad_cookie = false;
        let mut e = Engine::new(cfg, [3; 32], Instant::ZERO);
        for (vip, synproxy) in [("10.0.0.1:80", true), ("[2001:db8::1]:80", true), ("10.0.0.1:81", false)] {
            let mut s = ServiceConfig::new(Proto::Tcp, ep(vip));
            s.synproxy = synproxy;
            e.add_service(s).unwrap();
        }
        let mut got: Vec<_> = e.syn_ack_templates().map(|t| (t.vip, t.mss, t.rst_on_bad_cookie)).collect();
        got.sort_by_key(|t| t.0);
        assert_eq!(got, [(ep("10.0.0.1:80"), 1460, false), (ep("[2001:db8::1]:80"), 1440, false)]);
        let t = e.syn_ack_templates().next().unwrap();
        assert_eq!((t.wscale, t.ttl, t.sack, t.timestamps, t.cookie_max_age), (7, 64, true, true, 4));
    }

    #[test]
    fn cookie_keys_are_those_of_the_period_and_its_neighbours() {
        let e = Engine::new(EngineConfig::default(), [3; 32], Instant::ZERO);
        let now = Instant::from_secs(10 * 256 + 5);
        let keys = e.cookie_keys(now);
        assert_eq!(keys.period, 10);
        let next = e.cookie_keys(Instant::from_secs(11 * 256));
        assert_eq!((next.period, next.keys[0], next.keys[1]), (11, keys.keys[1], keys.keys[2]));
        assert_ne!(keys.keys[0], keys.keys[1]);
        assert_eq!(e.cookie_keys(Instant::ZERO).keys[0], (0, 0), "no period before the first");
    }
}
