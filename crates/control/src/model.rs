//! The desired state of the load balancer and the ops that move a data path to it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::health::{CheckSpec, Maintenance};
use rvs_core::{ConfigError, Endpoint, Engine, EngineConfig, Proto, RealConfig, ServiceConfig, Timeouts};

/// A service is named by protocol and VIP:port, as in ipvsadm.
pub type ServiceKey = (Proto, Endpoint);

/// A service with its reals, as the operator wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Scheduler, local addresses, timeouts, flags.
    pub config: ServiceConfig,
    /// Reals in the order they were added.
    pub reals: Vec<RealConfig>,
    /// The active check of every real without one of its own.
    pub check: CheckSpec,
    /// Reals' own checks.
    pub checks: BTreeMap<Endpoint, CheckSpec>,
    /// Reals the operator forced up or down.
    pub maintenance: BTreeMap<Endpoint, Maintenance>,
}

impl ServiceSpec {
    /// A service with no reals.
    pub fn new(config: ServiceConfig) -> Self {
        Self {
            config,
            reals: Vec::new(),
            check: CheckSpec::NONE,
            checks: BTreeMap::new(),
            maintenance: BTreeMap::new(),
        }
    }

    /// Forget what is kept about reals the service no longer has.
    pub fn prune(&mut self) {
        let reals = &self.reals;
        self.checks.retain(|e, _| reals.iter().any(|r| r.endpoint == *e));
        self.maintenance.retain(|e, m| *m != Maintenance::Auto && reals.iter().any(|r| r.endpoint == *e));
    }

    /// The real at `endpoint`.
    pub fn real(&self, endpoint: Endpoint) -> Option<&RealConfig> {
        self.reals.iter().find(|r| r.endpoint == endpoint)
    }

    /// The address the service's local addresses and reals (its backends)
    /// take their family from: the first local address, else the first real.
    fn first_backend(&self) -> Option<IpAddr> {
        self.config.laddrs.first().copied().or_else(|| self.reals.first().map(|r| r.endpoint.addr))
    }

    /// Whether `addr` may join the service's local addresses and reals.
    ///
    /// They share one family, the backend family. The VIP may be of either:
    /// an IPv6 VIP in front of IPv4 backends is NAT64, an IPv4 VIP in front of
    /// IPv6 backends NAT46. `Err` says why, for the caller to prefix with the
    /// key or argument that gave `addr`.
    pub fn check_backend(&self, addr: IpAddr) -> Result<(), String> {
        match self.first_backend() {
            Some(first) if first.is_ipv4() != addr.is_ipv4() => Err(format!(
                "{} address {addr} in a service whose local addresses and reals are {} ({first}): \
                 they share one family; only the VIP may be of the other (NAT64, NAT46)",
                family_name(addr),
                family_name(first),
            )),
            _ => Ok(()),
        }
    }
}

/// "IPv4" or "IPv6".
pub fn family_name(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Everything the data path is told: the engine-wide timeouts and every service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Model {
    /// Engine-wide idle timeouts (`ipvsadm --set`); services may override them.
    pub timeouts: Timeouts,
    /// Services by (protocol, VIP:port), ordered for stable listings.
    pub services: BTreeMap<ServiceKey, ServiceSpec>,
}

/// One change to a data path's engine, in the terms of [`Engine`]'s control methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Replace the engine-wide timeouts.
    SetTimeouts(Timeouts),
    /// Add a service (with its local addresses, without reals).
    AddService(ServiceConfig),
    /// Change a service's scheduler, timeouts and flags.
    EditService(ServiceConfig),
    /// Remove a service; its connections drain.
    RemoveService(Proto, Endpoint),
    /// Add a real to a service.
    AddReal(Proto, Endpoint, RealConfig),
    /// Change a real's weight.
    EditReal(Proto, Endpoint, RealConfig),
    /// Remove a real; its connections drain.
    RemoveReal(Proto, Endpoint, Endpoint),
    /// Add a local address to a service.
    AddLaddr(Proto, Endpoint, IpAddr),
    /// Remove a local address from a service.
    RemoveLaddr(Proto, Endpoint, IpAddr),
    /// Zero the traffic counters (`ipvsadm -Z`).
    ZeroCounters,
    /// Seed the handshake RTT toward a real (every service's, where it has
    /// no sample yet) with an active check's connect time.
    SeedRtt(Endpoint, core::time::Duration),
    /// Reset every connection of a service's real (`on_down = "reset"`).
    ResetReal(Proto, Endpoint, Endpoint),
}

impl Op {
    /// Apply this op to an engine.
    pub fn apply(&self, engine: &mut Engine) -> Result<(), ConfigError> {
        match self {
            Self::SetTimeouts(t) => {
                engine.set_timeouts(*t);
                Ok(())
            }
            Self::AddService(c) => engine.add_service(c.clone()),
            Self::EditService(c) => engine.edit_service(c.clone()),
            Self::RemoveService(p, v) => engine.remove_service(*p, *v),
            Self::AddReal(p, v, r) => engine.add_real(*p, *v, *r),
            Self::EditReal(p, v, r) => engine.edit_real(*p, *v, *r),
            Self::RemoveReal(p, v, r) => engine.remove_real(*p, *v, *r),
            Self::AddLaddr(p, v, l) => engine.add_laddr(*p, *v, *l),
            Self::RemoveLaddr(p, v, l) => engine.remove_laddr(*p, *v, *l),
            Self::ZeroCounters => {
                engine.zero_counters();
                Ok(())
            }
            Self::SeedRtt(r, rtt) => {
                engine.seed_rtt(*r, *rtt);
                Ok(())
            }
            Self::ResetReal(p, v, r) => engine.reset_real(*p, *v, *r).map(|_| ()),
        }
    }
}

/// Apply ops in order, stopping at the first error. Ops come from
/// [`Model::diff`] between validated models, so an error here is a bug; the
/// caller logs it.
pub fn apply_all(engine: &mut Engine, ops: &[Op]) -> Result<(), ConfigError> {
    ops.iter().try_for_each(|op| op.apply(engine))
}

impl Model {
    /// Check the model against the engine's own rules by building it in a
    /// scratch engine, so validation and the data path can never disagree.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cfg = EngineConfig { max_conns: 1, ..EngineConfig::default() };
        let mut scratch = Engine::new(cfg, [0; 32], rvs_core::Instant::ZERO);
        apply_all(&mut scratch, &Self::default().diff(self))
    }

    /// The ops that turn a data path in state `self` into state `new`.
    /// Services and reals present in both keep their connections.
    pub fn diff(&self, new: &Self) -> Vec<Op> {
        let mut ops = Vec::new();
        if self.timeouts != new.timeouts {
            ops.push(Op::SetTimeouts(new.timeouts));
        }
        for &(proto, vip) in self.services.keys() {
            if !new.services.contains_key(&(proto, vip)) {
                ops.push(Op::RemoveService(proto, vip));
            }
        }
        for (&(proto, vip), spec) in &new.services {
            let Some(old) = self.services.get(&(proto, vip)) else {
                ops.push(Op::AddService(spec.config.clone()));
                ops.extend(spec.reals.iter().map(|r| Op::AddReal(proto, vip, *r)));
                continue;
            };
            let (oc, nc) = (&old.config, &spec.config);
            if (oc.sched, oc.timeouts, oc.mss_clamp, oc.synproxy, oc.toa, oc.proxy_protocol)
                != (nc.sched, nc.timeouts, nc.mss_clamp, nc.synproxy, nc.toa, nc.proxy_protocol)
            {
                ops.push(Op::EditService(nc.clone()));
            }
            for &l in &oc.laddrs {
                if !nc.laddrs.contains(&l) {
                    ops.push(Op::RemoveLaddr(proto, vip, l));
                }
            }
            for &l in &nc.laddrs {
                if !oc.laddrs.contains(&l) {
                    ops.push(Op::AddLaddr(proto, vip, l));
                }
            }
            for r in &old.reals {
                if spec.real(r.endpoint).is_none() {
                    ops.push(Op::RemoveReal(proto, vip, r.endpoint));
                }
            }
            for r in &spec.reals {
                match old.real(r.endpoint) {
                    None => ops.push(Op::AddReal(proto, vip, *r)),
                    Some(o) if o != r => ops.push(Op::EditReal(proto, vip, *r)),
                    Some(_) => {}
                }
            }
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_core::SchedKind;

    fn ep(s: &str) -> Endpoint {
        let a: std::net::SocketAddr = s.parse().unwrap();
        Endpoint::new(a.ip(), a.port())
    }

    fn model() -> Model {
        let vip = ep("10.0.0.1:80");
        let mut cfg = ServiceConfig::new(Proto::Tcp, vip);
        cfg.laddrs = vec!["10.0.2.1".parse().unwrap()];
        let mut spec = ServiceSpec::new(cfg);
        spec.reals.push(RealConfig { endpoint: ep("10.0.1.1:80"), weight: 1 });
        spec.reals.push(RealConfig { endpoint: ep("10.0.1.2:80"), weight: 2 });
        let mut m = Model::default();
        m.services.insert((Proto::Tcp, vip), spec);
        m
    }

    /// Applying `a.diff(b)` to an engine built as `a` gives the engine built as `b`.
    fn assert_diff_reaches(a: &Model, b: &Model) {
        let mut e = Engine::new(EngineConfig::default(), [1; 32], rvs_core::Instant::ZERO);
        apply_all(&mut e, &Model::default().diff(a)).unwrap();
        apply_all(&mut e, &a.diff(b)).unwrap();
        let mut fresh = Engine::new(EngineConfig::default(), [1; 32], rvs_core::Instant::ZERO);
        apply_all(&mut fresh, &Model::default().diff(b)).unwrap();
        let shape = |e: &Engine| {
            e.services()
                .map(|s| {
                    let mut reals: Vec<_> =
                        s.reals.iter().filter(|r| r.in_service).map(|r| (r.endpoint, r.weight)).collect();
                    reals.sort();
                    (s.config.clone(), reals)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&e), shape(&fresh));
        assert_eq!(e.config().timeouts, b.timeouts);
    }

    #[test]
    fn diff_of_equal_models_is_empty() {
        assert!(model().diff(&model()).is_empty());
    }

    #[test]
    fn diff_reaches_target() {
        let a = model();
        let mut b = model();
        let spec = b.services.values_mut().next().unwrap();
        spec.config.sched = SchedKind::Mh;
        spec.config.laddrs = vec!["10.0.2.2".parse().unwrap()];
        spec.reals.remove(0);
        spec.reals[0].weight = 5;
        spec.reals.push(RealConfig { endpoint: ep("10.0.1.3:80"), weight: 1 });
        b.timeouts.udp = core::time::Duration::from_secs(7);
        let vip2 = ep("10.0.0.2:53");
        b.services.insert((Proto::Udp, vip2), ServiceSpec::new(ServiceConfig::new(Proto::Udp, vip2)));
        assert_diff_reaches(&a, &b);
        assert_diff_reaches(&b, &a);
        assert_diff_reaches(&Model::default(), &b);
        assert_diff_reaches(&b, &Model::default());
    }

    #[test]
    fn client_address_changes_edit_the_service() {
        let a = model();
        let vip = ep("10.0.0.1:80");
        let mut b = model();
        b.services.get_mut(&(Proto::Tcp, vip)).unwrap().config.toa = true;
        assert_eq!(a.diff(&b), [Op::EditService(b.services[&(Proto::Tcp, vip)].config.clone())]);
        assert_diff_reaches(&a, &b);
        let mut c = b.clone();
        c.services.get_mut(&(Proto::Tcp, vip)).unwrap().config.proxy_protocol = rvs_core::ProxyProtocol::V2;
        assert_eq!(b.diff(&c), [Op::EditService(c.services[&(Proto::Tcp, vip)].config.clone())]);
        assert_diff_reaches(&b, &c);
        assert_diff_reaches(&c, &a);
    }

    #[test]
    fn validate_uses_engine_rules() {
        assert!(model().validate().is_ok());
        let mut bad = model();
        let spec = bad.services.values_mut().next().unwrap();
        spec.reals.push(RealConfig { endpoint: ep("[::1]:80"), weight: 1 });
        assert!(matches!(bad.validate(), Err(ConfigError::FamilyMismatch(_))));
        let mut dup = model();
        let spec = dup.services.values_mut().next().unwrap();
        let r = spec.reals[0];
        spec.reals.push(r);
        assert!(matches!(dup.validate(), Err(ConfigError::RealExists(_))));
        let vip = ep("10.0.0.1:53");
        for set in [
            |c: &mut ServiceConfig| c.toa = true,
            |c: &mut ServiceConfig| {
                c.proxy_protocol = rvs_core::ProxyProtocol::V1;
            },
        ] {
            let mut udp = model();
            let mut cfg = ServiceConfig::new(Proto::Udp, vip);
            set(&mut cfg);
            udp.services.insert((Proto::Udp, vip), ServiceSpec::new(cfg));
            assert!(matches!(udp.validate(), Err(ConfigError::Invalid(_))));
        }
    }
}
