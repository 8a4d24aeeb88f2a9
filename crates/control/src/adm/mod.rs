//! `rvs adm`: the ipvsadm command language an LVS operator already knows.
//!
//! [`parse`] turns an argv into a [`Command`]; [`Command::edit`] computes the
//! model a changing command asks for, without touching anything; listings
//! and `-S` render a [`crate::snapshot::Snapshot`] or a [`Model`]. The
//! [`crate::plane::ControlPlane`] ties these together and is the only caller
//! that changes state.

mod list;
mod parse;
mod save;

use core::time::Duration;
use std::net::IpAddr;

use rvs_core::{Endpoint, Proto, ProxyProtocol, RealConfig, SchedKind, ServiceConfig, TcpState, Timeouts};

use crate::health::{CheckSpec, Maintenance};
use crate::model::{Model, ServiceKey, ServiceSpec};
use crate::snapshot::established_timeout;

pub(crate) use list::{list, list_laddrs, rates};
#[cfg(test)]
pub(crate) use parse::parse_endpoint;
pub use parse::{USAGE, parse};
pub use save::{parse_restore, save};

/// Weight of a real added without `-w`.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Largest weight `-w` accepts, as in ipvsadm.
pub const MAX_WEIGHT: u32 = 65535;

/// Options of `-A` and `-E`; `None` keeps the current value (`-E`) or the default (`-A`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceArgs {
    /// The service.
    pub key: ServiceKey,
    /// `-s`.
    pub sched: Option<SchedKind>,
    /// `-j enable|disable`.
    pub synproxy: Option<bool>,
    /// `--toa enable|disable`.
    pub toa: Option<bool>,
    /// `--proxy-protocol disable|v1|v2`.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// `--conn-timeout SECS`; `Some(0)` returns to the engine's timeout.
    pub conn_timeout: Option<u32>,
    /// `--check`: the service's active check.
    pub check: Option<CheckSpec>,
}

/// Options of `-a` and `-e`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealArgs {
    /// The service.
    pub key: ServiceKey,
    /// `-r`.
    pub real: Endpoint,
    /// `-w`; `None` keeps the current weight (`-e`) or uses [`DEFAULT_WEIGHT`] (`-a`).
    pub weight: Option<u32>,
    /// `--check`: this real's own check.
    pub check: Option<CheckSpec>,
    /// `--maintenance`: force the real up or down, or leave it to the checks.
    pub maintenance: Option<Maintenance>,
}

/// What a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListView {
    /// Services, reals, weights and connection counts.
    #[default]
    Services,
    /// `--stats`: traffic counters.
    Stats,
    /// `--rate`: traffic per second between the last two samples.
    Rate,
    /// `-c`: connections.
    Connections,
    /// `--timeout`: engine-wide timeouts.
    Timeout,
    /// `--health`: the probers and every real's health.
    Health,
}

/// Options of `-L`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListArgs {
    /// List only this service.
    pub service: Option<ServiceKey>,
    /// What to show.
    pub view: ListView,
    /// `--exact`: no K/M/G units.
    pub exact: bool,
    /// `--json`.
    pub json: bool,
}

/// One `rvs adm` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `-A`.
    AddService(ServiceArgs),
    /// `-E`.
    EditService(ServiceArgs),
    /// `-D`.
    DeleteService(ServiceKey),
    /// `-C`.
    Clear,
    /// `-a`.
    AddReal(RealArgs),
    /// `-e`.
    EditReal(RealArgs),
    /// `-d`.
    DeleteReal(ServiceKey, Endpoint),
    /// `-P`.
    AddLaddr(ServiceKey, IpAddr),
    /// `-Q`.
    DelLaddr(ServiceKey, IpAddr),
    /// `-G`, optionally for one service.
    GetLaddr {
        /// Only this service.
        service: Option<ServiceKey>,
        /// `--json`.
        json: bool,
    },
    /// `-L`.
    List(ListArgs),
    /// `-Z`.
    Zero,
    /// `-S`.
    Save,
    /// `-R`.
    Restore,
    /// `--set TCP TCPFIN UDP`, seconds, 0 keeps the current value.
    SetTimeouts {
        /// TCP ESTABLISHED.
        tcp: u32,
        /// TCP FIN_WAIT.
        tcp_fin: u32,
        /// UDP.
        udp: u32,
    },
    /// `-h`.
    Help,
}

/// How an ipvsadm-style service name reads: `TCP 10.0.0.1:80`.
pub(crate) fn service_name(key: ServiceKey) -> String {
    format!("{} {}", key.0.name().to_uppercase(), key.1)
}

/// `timeouts` with the established idle timeout of `proto` set to `secs`.
fn with_conn_timeout(mut timeouts: Timeouts, proto: Proto, secs: u64) -> Timeouts {
    let d = Duration::from_secs(secs);
    match proto {
        Proto::Tcp => timeouts.set_tcp(TcpState::Established, d),
        Proto::Udp => timeouts.udp = d,
    }
    timeouts
}

/// The `--conn-timeout` of a service, if it has its own timeouts.
pub(crate) fn conn_timeout(cfg: &ServiceConfig) -> Option<u64> {
    cfg.timeouts.map(|t| established_timeout(&t, cfg.proto).as_secs())
}

impl Command {
    /// Whether the command changes the model (and so may appear in `-R` input).
    pub fn changes_model(&self) -> bool {
        matches!(
            self,
            Self::AddService(_)
                | Self::EditService(_)
                | Self::DeleteService(_)
                | Self::Clear
                | Self::AddReal(_)
                | Self::EditReal(_)
                | Self::DeleteReal(..)
                | Self::AddLaddr(..)
                | Self::DelLaddr(..)
                | Self::SetTimeouts { .. }
        )
    }

    /// The model after this command, computed from `model` without changing
    /// it. Commands that do not change the model return it unchanged.
    /// Checks here are the ones a map of services cannot express (a service
    /// added twice) and the family rule ([`ServiceSpec::check_backend`]),
    /// whose errors name the argument; the engine's rules are checked by
    /// [`Model::validate`].
    pub fn edit(&self, model: &Model) -> Result<Model, String> {
        let mut m = model.clone();
        let no_service = |key: ServiceKey| format!("no service {}", service_name(key));
        match self {
            Self::AddService(a) => {
                if m.services.contains_key(&a.key) {
                    return Err(format!("service {} already exists", service_name(a.key)));
                }
                let mut cfg = ServiceConfig::new(a.key.0, a.key.1);
                apply_service_args(&mut cfg, a, &m.timeouts);
                let mut spec = ServiceSpec::new(cfg);
                spec.check = a.check.clone().unwrap_or_default();
                m.services.insert(a.key, spec);
            }
            Self::EditService(a) => {
                let timeouts = m.timeouts;
                let spec = m.services.get_mut(&a.key).ok_or_else(|| no_service(a.key))?;
                apply_service_args(&mut spec.config, a, &timeouts);
                if let Some(check) = &a.check {
                    spec.check = check.clone();
                }
            }
            Self::DeleteService(key) => {
                m.services.remove(key).ok_or_else(|| no_service(*key))?;
            }
            Self::Clear => m.services.clear(),
            Self::AddReal(a) => {
                let spec = m.services.get_mut(&a.key).ok_or_else(|| no_service(a.key))?;
                if spec.real(a.real).is_some() {
                    return Err(format!("real {} already exists in {}", a.real, service_name(a.key)));
                }
                spec.check_backend(a.real.addr).map_err(|e| format!("-r {}: {e}", a.real))?;
                spec.reals.push(RealConfig { endpoint: a.real, weight: a.weight.unwrap_or(DEFAULT_WEIGHT) });
                apply_real_health(spec, a);
            }
            Self::EditReal(a) => {
                let spec = m.services.get_mut(&a.key).ok_or_else(|| no_service(a.key))?;
                let real = spec
                    .reals
                    .iter_mut()
                    .find(|r| r.endpoint == a.real)
                    .ok_or_else(|| format!("no real {} in {}", a.real, service_name(a.key)))?;
                if let Some(w) = a.weight {
                    real.weight = w;
                }
                apply_real_health(spec, a);
            }
            Self::DeleteReal(key, real) => {
                let spec = m.services.get_mut(key).ok_or_else(|| no_service(*key))?;
                let at = spec
                    .reals
                    .iter()
                    .position(|r| r.endpoint == *real)
                    .ok_or_else(|| format!("no real {real} in {}", service_name(*key)))?;
                spec.reals.remove(at);
                spec.prune();
            }
            Self::AddLaddr(key, laddr) => {
                let spec = m.services.get_mut(key).ok_or_else(|| no_service(*key))?;
                if spec.config.laddrs.contains(laddr) {
                    return Err(format!("local address {laddr} already exists in {}", service_name(*key)));
                }
                spec.check_backend(*laddr).map_err(|e| format!("-z {laddr}: {e}"))?;
                spec.config.laddrs.push(*laddr);
            }
            Self::DelLaddr(key, laddr) => {
                let spec = m.services.get_mut(key).ok_or_else(|| no_service(*key))?;
                let at = spec
                    .config
                    .laddrs
                    .iter()
                    .position(|l| l == laddr)
                    .ok_or_else(|| format!("no local address {laddr} in {}", service_name(*key)))?;
                spec.config.laddrs.remove(at);
            }
            Self::SetTimeouts { tcp, tcp_fin, udp } => set_timeouts(&mut m, *tcp, *tcp_fin, *udp),
            Self::GetLaddr { .. } | Self::List(_) | Self::Zero | Self::Save | Self::Restore | Self::Help => {}
        }
        Ok(m)
    }
}

/// `--set TCP TCP_FIN UDP` (0 keeps a value). A service's `--conn-timeout`
/// overrides one value; the rest follow the engine's, so they move with it.
fn set_timeouts(m: &mut Model, tcp: u32, tcp_fin: u32, udp: u32) {
    let old = m.timeouts;
    let mut new = old;
    let secs = |s: u32| Duration::from_secs(s.into());
    if tcp > 0 {
        new.set_tcp(TcpState::Established, secs(tcp));
    }
    if tcp_fin > 0 {
        new.set_tcp(TcpState::FinWait, secs(tcp_fin));
    }
    if udp > 0 {
        new.udp = secs(udp);
    }
    m.timeouts = new;
    for spec in m.services.values_mut() {
        let cfg = &mut spec.config;
        if let (Some(t), Some(ct)) = (cfg.timeouts, conn_timeout(cfg))
            && t == with_conn_timeout(old, cfg.proto, ct)
        {
            cfg.timeouts = Some(with_conn_timeout(new, cfg.proto, ct));
        }
    }
}

/// A real's `--check` (`none` on a service without a check, or the
/// service's own, is kept as the real's: it overrides later service changes)
/// and `--maintenance`.
fn apply_real_health(spec: &mut ServiceSpec, a: &RealArgs) {
    if let Some(check) = &a.check {
        spec.checks.insert(a.real, check.clone());
    }
    if let Some(m) = a.maintenance {
        spec.maintenance.insert(a.real, m);
    }
    spec.prune();
}

fn apply_service_args(cfg: &mut ServiceConfig, a: &ServiceArgs, engine: &Timeouts) {
    if let Some(s) = a.sched {
        cfg.sched = s;
    }
    if let Some(s) = a.synproxy {
        cfg.synproxy = s;
    }
    if let Some(t) = a.toa {
        cfg.toa = t;
    }
    if let Some(p) = a.proxy_protocol {
        cfg.proxy_protocol = p;
    }
    match a.conn_timeout {
        None => {}
        Some(0) => cfg.timeouts = None,
        Some(secs) => cfg.timeouts = Some(with_conn_timeout(*engine, cfg.proto, secs.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ServiceKey {
        (Proto::Tcp, s.parse::<std::net::SocketAddr>().unwrap().into())
    }

    fn add(k: ServiceKey) -> Command {
        Command::AddService(ServiceArgs {
            key: k,
            sched: None,
            synproxy: None,
            toa: None,
            proxy_protocol: None,
            conn_timeout: Some(900),
            check: None,
        })
    }

    fn edit_service(k: ServiceKey, toa: Option<bool>, proxy_protocol: Option<ProxyProtocol>) -> Command {
        Command::EditService(ServiceArgs {
            key: k,
            sched: None,
            synproxy: None,
            toa,
            proxy_protocol,
            conn_timeout: None,
            check: None,
        })
    }

    #[test]
    fn edit_keeps_client_address_options_not_given() {
        let k = key("10.0.0.1:80");
        let m = add(k).edit(&Model::default()).unwrap();
        assert_eq!(
            (m.services[&k].config.toa, m.services[&k].config.proxy_protocol),
            (false, ProxyProtocol::Disabled)
        );
        let m = edit_service(k, Some(true), Some(ProxyProtocol::V2)).edit(&m).unwrap();
        let c = &m.services[&k].config;
        assert_eq!((c.toa, c.proxy_protocol), (true, ProxyProtocol::V2));
        let m = edit_service(k, None, Some(ProxyProtocol::V1)).edit(&m).unwrap();
        let c = &m.services[&k].config;
        assert_eq!((c.toa, c.proxy_protocol), (true, ProxyProtocol::V1));
        let m = edit_service(k, Some(false), None).edit(&m).unwrap();
        let c = &m.services[&k].config;
        assert_eq!((c.toa, c.proxy_protocol, c.sched), (false, ProxyProtocol::V1, SchedKind::Wrr));
        assert_eq!(c.timeouts.map(|t| t.tcp(TcpState::Established)), Some(Duration::from_secs(900)));
    }

    #[test]
    fn edit_is_pure_and_checks_presence() {
        let k = key("10.0.0.1:80");
        let empty = Model::default();
        let m = add(k).edit(&empty).unwrap();
        assert!(empty.services.is_empty());
        assert_eq!(m.services[&k].config.sched, SchedKind::Wrr);
        assert!(add(k).edit(&m).unwrap_err().contains("already exists"));
        assert!(Command::DeleteService(key("10.0.0.2:80")).edit(&m).unwrap_err().contains("no service"));
        let r: Endpoint = "10.0.1.1:80".parse::<std::net::SocketAddr>().unwrap().into();
        let ra = RealArgs { key: k, real: r, weight: None, check: None, maintenance: None };
        let m2 = Command::AddReal(ra.clone()).edit(&m).unwrap();
        assert_eq!(m2.services[&k].reals[0].weight, DEFAULT_WEIGHT);
        assert!(Command::AddReal(ra.clone()).edit(&m2).is_err());
        let m3 = Command::EditReal(RealArgs { weight: Some(7), ..ra }).edit(&m2).unwrap();
        assert_eq!(m3.services[&k].reals[0].weight, 7);
    }

    #[test]
    fn set_timeouts_moves_service_overrides() {
        let k = key("10.0.0.1:80");
        let m = add(k).edit(&Model::default()).unwrap();
        let t = m.services[&k].config.timeouts.unwrap();
        assert_eq!(t.tcp(TcpState::Established), Duration::from_secs(900));
        let m = Command::SetTimeouts { tcp: 0, tcp_fin: 20, udp: 0 }.edit(&m).unwrap();
        assert_eq!(m.timeouts.tcp(TcpState::FinWait), Duration::from_secs(20));
        assert_eq!(m.timeouts.tcp(TcpState::Established), Duration::from_secs(900));
        let t = m.services[&k].config.timeouts.unwrap();
        assert_eq!(t.tcp(TcpState::FinWait), Duration::from_secs(20));
        assert_eq!(t.tcp(TcpState::Established), Duration::from_secs(900));
    }

    /// Reals and local addresses share one family; the VIP may be the other
    /// (NAT64, NAT46). A break of the rule names the argument and changes nothing.
    #[test]
    fn family_rule_names_the_argument() {
        let run = |m: &Model, line: &str| {
            let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
            parse(&argv).unwrap().edit(m)
        };
        let mut m = Model::default();
        for line in [
            "-A -t [2001:db8::1]:80",
            "-a -t [2001:db8::1]:80 -r 10.0.0.1:80 -b",
            "-P -t [2001:db8::1]:80 -z 10.0.3.1",
            "-A -t 10.0.0.9:80",
            "-P -t 10.0.0.9:80 -z fd10:77:3::1",
            "-a -t 10.0.0.9:80 -r [fd10:77:1::11]:80",
        ] {
            m = run(&m, line).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        for (line, arg) in [
            ("-a -t [2001:db8::1]:80 -r [2001:db8::2]:80", "-r [2001:db8::2]:80: "),
            ("-P -t [2001:db8::1]:80 -z 2001:db8::5", "-z 2001:db8::5: "),
            ("-a -t 10.0.0.9:80 -r 10.0.1.1:80", "-r 10.0.1.1:80: "),
            ("-P -t 10.0.0.9:80 -z 10.0.3.1", "-z 10.0.3.1: "),
        ] {
            let e = run(&m, line).expect_err(line);
            assert!(e.starts_with(arg) && e.contains("share one family"), "{line}: {e}");
        }
        // With only a real, the real sets the family a local address must have.
        let m = run(&Model::default(), "-A -u [2001:db8::1]:53").unwrap();
        let m = run(&m, "-a -u [2001:db8::1]:53 -r 10.0.1.1:53").unwrap();
        let e = run(&m, "-P -u [2001:db8::1]:53 -z 2001:db8::5").unwrap_err();
        assert!(e.contains("IPv6 address 2001:db8::5") && e.contains("are IPv4 (10.0.1.1)"), "{e}");
    }
}
