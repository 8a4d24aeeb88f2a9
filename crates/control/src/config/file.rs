//! The file's own form, where it differs from the settings it becomes:
//! serde reads the file into [`File`] and writes a [`Config`] out of it, so
//! reading and writing name each key once.

use std::collections::BTreeMap;
use std::path::Path;

use rvs_core::{EngineConfig, Proto, ProxyProtocol, RealConfig, SchedKind, TcpState, Timeouts};
use serde::{Deserialize, Serialize};

use super::{Config, DaemonSettings, DriverKind, DriverSettings, MetricsSettings, SynproxySettings, XdpMode};
use crate::health::{HealthSettings, Maintenance};
use crate::model::ServiceSpec;
use rvs_core::RetransmitMode;

/// The whole file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct File {
    pub(super) daemon: DaemonSettings,
    pub(super) driver: DriverSettings,
    pub(super) engine: EngineFile,
    pub(super) timeouts: TimeoutSecs,
    pub(super) synproxy: SynproxySettings,
    pub(super) metrics: MetricsSettings,
    pub(super) health: HealthSettings,
    pub(super) service: Vec<ServiceFile>,
}

impl From<&Config> for File {
    fn from(c: &Config) -> Self {
        Self {
            daemon: c.daemon.clone(),
            driver: c.driver.clone(),
            engine: EngineFile::from(&c.engine),
            timeouts: TimeoutSecs::from(&c.model.timeouts),
            synproxy: c.synproxy.clone(),
            metrics: c.metrics,
            health: c.health.clone(),
            service: c.model.services.values().map(ServiceFile::from).collect(),
        }
    }
}

/// `[engine]`: the engine's settings the file has, durations in seconds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct EngineFile {
    pub(super) max_conns: usize,
    pub(super) prealloc_conns: usize,
    /// `[low, high]`; a list so a wrong length gets its own message.
    pub(super) port_range: Vec<u16>,
    pub(super) port_quarantine_secs: u64,
    pub(super) decrement_ttl: bool,
    pub(super) reset_rate: u32,
}

impl Default for EngineFile {
    fn default() -> Self {
        Self::from(&EngineConfig::default())
    }
}

impl From<&EngineConfig> for EngineFile {
    fn from(e: &EngineConfig) -> Self {
        Self {
            max_conns: e.max_conns,
            prealloc_conns: e.prealloc_conns,
            port_range: vec![e.port_range.0, e.port_range.1],
            port_quarantine_secs: e.port_quarantine.as_secs(),
            decrement_ttl: e.decrement_ttl,
            reset_rate: e.reset_rate,
        }
    }
}

/// `[timeouts]` keys and the TCP state each sets; `None` is UDP. NONE has no
/// key: an entry in that state is gone within two seconds whatever is set.
pub(super) const TIMEOUT_KEYS: [(&str, Option<TcpState>); 11] = [
    ("established", Some(TcpState::Established)),
    ("syn_sent", Some(TcpState::SynSent)),
    ("syn_recv", Some(TcpState::SynRecv)),
    ("fin_wait", Some(TcpState::FinWait)),
    ("time_wait", Some(TcpState::TimeWait)),
    ("close", Some(TcpState::Close)),
    ("close_wait", Some(TcpState::CloseWait)),
    ("last_ack", Some(TcpState::LastAck)),
    ("listen", Some(TcpState::Listen)),
    ("syn_ack", Some(TcpState::SynAck)),
    ("udp", None),
];

/// `[timeouts]` as written: seconds by key of [`TIMEOUT_KEYS`], checked
/// into [`Timeouts`] after reading.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub(super) struct TimeoutSecs(pub(super) BTreeMap<String, u64>);

impl Serialize for TimeoutSecs {
    /// In the order of [`TIMEOUT_KEYS`], the reference's.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let known = TIMEOUT_KEYS.iter().filter_map(|(k, _)| self.0.get_key_value(*k));
        let others = self.0.iter().filter(|(k, _)| !TIMEOUT_KEYS.iter().any(|(t, _)| t == k));
        s.collect_map(known.chain(others))
    }
}

impl From<&Timeouts> for TimeoutSecs {
    fn from(t: &Timeouts) -> Self {
        let secs = |state: Option<TcpState>| state.map_or(t.udp, |s| t.tcp(s)).as_secs();
        Self(TIMEOUT_KEYS.iter().map(|&(key, state)| (key.to_owned(), secs(state))).collect())
    }
}

/// One `[[service]]` as written; checked into a [`ServiceSpec`] after reading.
#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct ServiceFile {
    #[serde(with = "by_name")]
    pub(super) proto: Proto,
    /// Required; `None` only so that its absence gets its own message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) vip: Option<String>,
    #[serde(with = "by_name")]
    pub(super) sched: SchedKind,
    pub(super) laddrs: Vec<String>,
    /// `None` is `[synproxy] enabled_by_default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) synproxy: Option<bool>,
    pub(super) toa: bool,
    #[serde(with = "by_name")]
    pub(super) proxy_protocol: ProxyProtocol,
    /// This service's ESTABLISHED timeout, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) conn_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) mss_clamp: Option<u16>,
    /// The active check of the service's reals, in the text form of
    /// `health/check.rs`; checked into a [`CheckSpec`] after reading.
    pub(super) check: String,
    pub(super) real: Vec<RealFile>,
}

impl Default for ServiceFile {
    fn default() -> Self {
        Self {
            proto: Proto::Tcp,
            vip: None,
            sched: SchedKind::default(),
            laddrs: Vec::new(),
            synproxy: None,
            toa: false,
            proxy_protocol: ProxyProtocol::Disabled,
            conn_timeout: None,
            mss_clamp: None,
            check: "none".into(),
            real: Vec::new(),
        }
    }
}

impl From<&ServiceSpec> for ServiceFile {
    fn from(spec: &ServiceSpec) -> Self {
        let c = &spec.config;
        Self {
            proto: c.proto,
            vip: Some(c.vip.to_string()),
            sched: c.sched,
            laddrs: c.laddrs.iter().map(ToString::to_string).collect(),
            synproxy: Some(c.synproxy),
            toa: c.toa,
            proxy_protocol: c.proxy_protocol,
            conn_timeout: c.timeouts.map(|t| t.tcp(TcpState::Established).as_secs()),
            mss_clamp: c.mss_clamp,
            check: spec.check.to_string(),
            real: spec
                .reals
                .iter()
                .map(|r| RealFile {
                    check: spec.checks.get(&r.endpoint).map(ToString::to_string),
                    maintenance: spec.maintenance.get(&r.endpoint).copied().unwrap_or_default(),
                    ..RealFile::from(r)
                })
                .collect(),
        }
    }
}

/// One `[[service.real]]` as written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RealFile {
    /// Required; `None` only so that its absence gets its own message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) addr: Option<String>,
    pub(super) weight: u32,
    /// This real's own check; the service's when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) check: Option<String>,
    #[serde(with = "by_name")]
    pub(super) maintenance: Maintenance,
}

impl Default for RealFile {
    fn default() -> Self {
        Self { addr: None, weight: 1, check: None, maintenance: Maintenance::Auto }
    }
}

impl From<&RealConfig> for RealFile {
    fn from(r: &RealConfig) -> Self {
        Self { addr: Some(r.endpoint.to_string()), weight: r.weight, ..Self::default() }
    }
}

/// A choice of names in the file, and what an unknown one is told.
pub(super) trait Named: Copy + 'static {
    /// Every value, each with its own name.
    const ALL: &'static [Self];
    /// The name in the file.
    fn name(self) -> &'static str;
    /// The error for a name that is none of [`Self::ALL`]'s.
    fn unknown(other: &str) -> String;
}

impl Named for DriverKind {
    const ALL: &'static [Self] = &[Self::Tun, Self::Xdp];
    fn name(self) -> &'static str {
        self.name()
    }
    fn unknown(other: &str) -> String {
        format!("unknown driver {other:?}; use \"tun\" or \"xdp\"")
    }
}

impl Named for XdpMode {
    const ALL: &'static [Self] = &[Self::Native, Self::Generic, Self::Auto];
    fn name(self) -> &'static str {
        self.name()
    }
    fn unknown(other: &str) -> String {
        format!("unknown XDP mode {other:?}; use \"native\", \"generic\" or \"auto\"")
    }
}

impl Named for RetransmitMode {
    const ALL: &'static [Self] = &[Self::Adaptive, Self::Classic];
    fn name(self) -> &'static str {
        self.name()
    }
    fn unknown(other: &str) -> String {
        format!("unknown mode {other:?}; use \"adaptive\" or \"classic\"")
    }
}

impl Named for Proto {
    const ALL: &'static [Self] = &[Self::Tcp, Self::Udp];
    fn name(self) -> &'static str {
        self.name()
    }
    fn unknown(other: &str) -> String {
        format!("unknown protocol {other:?}; use tcp or udp")
    }
}

impl Named for SchedKind {
    const ALL: &'static [Self] = Self::ALL;
    fn name(self) -> &'static str {
        self.name()
    }
    fn unknown(other: &str) -> String {
        let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
        format!("unknown scheduler {other:?}; use one of {}", names.join(" "))
    }
}

impl Named for Maintenance {
    const ALL: &'static [Self] = &Self::ALL;
    fn name(self) -> &'static str {
        self.name()
    }
    fn unknown(other: &str) -> String {
        format!("unknown maintenance {other:?}; use \"auto\", \"up\" or \"down\"")
    }
}

impl Named for ProxyProtocol {
    const ALL: &'static [Self] = Self::ALL;
    fn name(self) -> &'static str {
        self.name()
    }
    fn unknown(other: &str) -> String {
        let names: Vec<_> = Self::ALL.iter().map(|v| format!("{:?}", v.name())).collect();
        format!("unknown PROXY protocol version {other:?}; use {}", names.join(", "))
    }
}

/// Serde for a [`Named`] value: its name.
pub(super) mod by_name {
    use serde::{Deserialize, Deserializer, Serializer, de};

    use super::Named;

    pub(in crate::config) fn serialize<T: Named, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.name())
    }

    pub(in crate::config) fn deserialize<'de, T: Named, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let name = String::deserialize(d)?;
        T::ALL.iter().copied().find(|v| v.name() == name).ok_or_else(|| de::Error::custom(T::unknown(&name)))
    }
}

/// Serde for `[metrics] listen`: `IP:port` text.
pub(super) mod socket_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(in crate::config) fn serialize<S: Serializer>(
        v: &Option<SocketAddr>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(addr) => s.collect_str(addr),
            None => s.serialize_none(),
        }
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        let addr = text
            .parse()
            .map_err(|_| de::Error::custom(format!("invalid address {text:?}: expected IP:port")))?;
        Ok(Some(addr))
    }
}

/// A path as text, with any bytes that are not UTF-8 replaced (a path read
/// from the file never has them).
pub(super) fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}
