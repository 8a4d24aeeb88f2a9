//! The control plane's changes to an engine: services, reals, local
//! addresses (the `ipvsadm` verbs). Each applies whole or returns an error
//! and changes nothing.

use core::mem;
use std::net::IpAddr;

use super::{ConfigError, Engine, FixedMap};
use crate::addr::{Endpoint, Proto};
use crate::config::{RealConfig, SchedKind, ServiceConfig};
use crate::sched::Scheduler;
use crate::service::{Real, Service, TrafficCounters};

impl Engine {
    pub(super) fn service_index(&self, proto: Proto, vip: Endpoint) -> Result<usize, ConfigError> {
        self.by_vip
            .get(&(proto, vip))
            .map(|&i| i as usize)
            .ok_or(ConfigError::NoSuchService(proto.name(), vip))
    }

    fn check_service(cfg: &ServiceConfig) -> Result<(), ConfigError> {
        if cfg.vip.port == 0 {
            return Err(ConfigError::Invalid("VIP port 0"));
        }
        if cfg.synproxy && cfg.proto != Proto::Tcp {
            return Err(ConfigError::Invalid("synproxy on a service that is not TCP"));
        }
        if (cfg.toa || cfg.proxy_protocol != crate::config::ProxyProtocol::Disabled)
            && cfg.proto != Proto::Tcp
        {
            return Err(ConfigError::Invalid("toa or proxy_protocol on a service that is not TCP"));
        }
        let mut seen = Vec::new();
        for &l in &cfg.laddrs {
            if cfg.laddrs.first().is_some_and(|f| f.is_ipv4() != l.is_ipv4()) {
                return Err(ConfigError::FamilyMismatch(l));
            }
            if seen.contains(&l) {
                return Err(ConfigError::LaddrExists(l));
            }
            seen.push(l);
        }
        Ok(())
    }

    /// Add a service (`ipvsadm -A`).
    pub fn add_service(&mut self, cfg: ServiceConfig) -> Result<(), ConfigError> {
        let key = (cfg.proto, cfg.vip);
        if self.by_vip.contains_key(&key) {
            return Err(ConfigError::ServiceExists(cfg.proto.name(), cfg.vip));
        }
        Self::check_service(&cfg)?;
        for &l in &cfg.laddrs {
            *self.laddr_refs.entry(l).or_default() += 1;
        }
        *self.vip_addrs.entry(cfg.vip.addr).or_default() += 1;
        let service = Service {
            sched: Scheduler::new(cfg.sched),
            config: cfg,
            reals: Vec::new(),
            stats: TrafficCounters::default(),
            in_service: true,
            synproxy_wscale: None,
        };
        // Reuse the slot of a removed service whose connections are gone.
        let reusable =
            self.services.iter().position(|s| !s.in_service && s.reals.iter().all(|r| r.conns() == 0));
        let index = match reusable {
            Some(i) => {
                self.services[i] = service;
                i
            }
            None => {
                self.services.push(service);
                self.services.len() - 1
            }
        };
        self.by_vip.insert(key, index as u32);
        Ok(())
    }

    /// Change a service's scheduler, timeouts, MSS clamp and SYNProxy flag
    /// (`ipvsadm -E`); its reals, local addresses and connections stay.
    pub fn edit_service(&mut self, cfg: ServiceConfig) -> Result<(), ConfigError> {
        let i = self.service_index(cfg.proto, cfg.vip)?;
        Self::check_service(&cfg)?;
        let s = &mut self.services[i];
        if cfg.sched != s.config.sched {
            s.sched = Scheduler::new(cfg.sched);
            s.sched.update(&s.reals);
        }
        s.config.sched = cfg.sched;
        s.config.timeouts = cfg.timeouts;
        s.config.mss_clamp = cfg.mss_clamp;
        s.config.synproxy = cfg.synproxy;
        s.config.toa = cfg.toa;
        s.config.proxy_protocol = cfg.proxy_protocol;
        Ok(())
    }

    /// Remove a service (`ipvsadm -D`). Its connections run on until they
    /// end; new flows to the VIP:port are dropped as `NoService`.
    pub fn remove_service(&mut self, proto: Proto, vip: Endpoint) -> Result<(), ConfigError> {
        let i = self.service_index(proto, vip)?;
        self.by_vip.remove(&(proto, vip));
        let s = &mut self.services[i];
        s.in_service = false;
        let serving: Vec<usize> = (0..s.reals.len()).filter(|&r| s.reals[r].in_service).collect();
        for r in &mut s.reals {
            r.in_service = false;
        }
        s.sched.update(&s.reals);
        let laddrs = mem::take(&mut s.config.laddrs);
        for l in laddrs {
            Self::unref(&mut self.laddr_refs, l);
        }
        Self::unref(&mut self.vip_addrs, vip.addr);
        self.retire_reals(i, &serving);
        Ok(())
    }

    fn unref(map: &mut FixedMap<IpAddr, u32>, addr: IpAddr) {
        if let Some(n) = map.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                map.remove(&addr);
            }
        }
    }

    /// Remove every service (`ipvsadm -C`).
    pub fn clear(&mut self) {
        let keys: Vec<(Proto, Endpoint)> = self.by_vip.keys().copied().collect();
        for (p, v) in keys {
            let _ = self.remove_service(p, v);
        }
    }

    /// Add a real to a service (`ipvsadm -a`).
    pub fn add_real(&mut self, proto: Proto, vip: Endpoint, real: RealConfig) -> Result<(), ConfigError> {
        let i = self.service_index(proto, vip)?;
        self.services[i].check_backend_family(real.endpoint.addr)?;
        if real.endpoint.port == 0 {
            return Err(ConfigError::Invalid("real port 0"));
        }
        let s = &mut self.services[i];
        let existing = s.reals.iter().position(|r| r.endpoint == real.endpoint);
        if existing.is_some_and(|r| s.reals[r].in_service) {
            return Err(ConfigError::RealExists(real.endpoint));
        }
        let pools = s
            .config
            .laddrs
            .iter()
            .map(|&l| self.conns.pools_mut().get_or_create(proto, l, real.endpoint, self.last_now))
            .collect();
        let real_gen = self.fast.next_real_gen();
        match existing {
            // A removed real still draining comes back with its counters.
            Some(r) => {
                let r = &mut s.reals[r];
                r.in_service = true;
                r.weight = real.weight;
                r.pools = pools;
                r.real_gen = real_gen;
            }
            None => s.reals.push(Real {
                endpoint: real.endpoint,
                weight: real.weight,
                in_service: true,
                active_conns: 0,
                inactive_conns: 0,
                stats: TrafficCounters::default(),
                pools,
                handshake: Default::default(),
                passive: Default::default(),
                no_port: Default::default(),
                real_gen,
            }),
        }
        s.sched.update(&s.reals);
        Ok(())
    }

    /// Change a real's weight (`ipvsadm -e`); 0 quiesces it.
    pub fn edit_real(&mut self, proto: Proto, vip: Endpoint, real: RealConfig) -> Result<(), ConfigError> {
        let i = self.service_index(proto, vip)?;
        let s = &mut self.services[i];
        let r = s
            .reals
            .iter_mut()
            .find(|r| r.in_service && r.endpoint == real.endpoint)
            .ok_or(ConfigError::NoSuchReal(real.endpoint))?;
        r.weight = real.weight;
        s.sched.update(&s.reals);
        Ok(())
    }

    /// Remove a real (`ipvsadm -d`): it gets no new connections; its
    /// established ones run on until they end.
    pub fn remove_real(&mut self, proto: Proto, vip: Endpoint, real: Endpoint) -> Result<(), ConfigError> {
        let i = self.service_index(proto, vip)?;
        let s = &mut self.services[i];
        let at = s
            .reals
            .iter()
            .position(|r| r.in_service && r.endpoint == real)
            .ok_or(ConfigError::NoSuchReal(real))?;
        s.reals[at].in_service = false;
        s.sched.update(&s.reals);
        self.retire_reals(i, &[at]);
        Ok(())
    }

    /// Add a local address to a service (`ipvsadm -P`).
    pub fn add_laddr(&mut self, proto: Proto, vip: Endpoint, laddr: IpAddr) -> Result<(), ConfigError> {
        let i = self.service_index(proto, vip)?;
        self.services[i].check_backend_family(laddr)?;
        let s = &mut self.services[i];
        if s.config.laddrs.contains(&laddr) {
            return Err(ConfigError::LaddrExists(laddr));
        }
        s.config.laddrs.push(laddr);
        for r in &mut s.reals {
            r.pools.push(self.conns.pools_mut().get_or_create(proto, laddr, r.endpoint, self.last_now));
        }
        *self.laddr_refs.entry(laddr).or_default() += 1;
        Ok(())
    }

    /// Remove a local address from a service (`ipvsadm -Q`); connections
    /// already using it run on.
    pub fn remove_laddr(&mut self, proto: Proto, vip: Endpoint, laddr: IpAddr) -> Result<(), ConfigError> {
        let i = self.service_index(proto, vip)?;
        let s = &mut self.services[i];
        let at = s.config.laddrs.iter().position(|&l| l == laddr).ok_or(ConfigError::NoSuchLaddr(laddr))?;
        s.config.laddrs.remove(at);
        for r in &mut s.reals {
            if at < r.pools.len() {
                r.pools.remove(at);
            }
        }
        Self::unref(&mut self.laddr_refs, laddr);
        Ok(())
    }

    /// Replace the scheduler of a service with a fresh one of `kind`.
    pub fn set_scheduler(&mut self, proto: Proto, vip: Endpoint, kind: SchedKind) -> Result<(), ConfigError> {
        let i = self.service_index(proto, vip)?;
        let mut cfg = self.services[i].config.clone();
        cfg.sched = kind;
        self.edit_service(cfg)
    }
}
