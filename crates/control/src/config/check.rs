//! The checks serde cannot make, from the file as read to a [`Config`]; each
//! error cites the key it is about, located in the text.

use core::fmt::Display;
use core::time::Duration;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use rvs_core::{Endpoint, EngineConfig, Proto, ProxyProtocol, RealConfig, ServiceConfig, TcpState, Timeouts};

use super::file::{EngineFile, File, ServiceFile, TIMEOUT_KEYS, TimeoutSecs};
use super::locate::{Node, line_column};
use super::{
    Config, ConfigFileError, DriverKind, DriverSettings, MAX_CPUS, MAX_FAST_PATH_AFTER, MAX_TIMEOUT_SECS,
    MAX_WORKERS, SynproxySettings,
};
use crate::health::Maintenance;
use crate::model::{Model, ServiceKey, ServiceSpec};

/// Smallest MSS accepted (RFC 879's default); smaller segments only multiply
/// per-packet cost.
const MIN_MSS: u16 = 536;

/// Turns the file as read into a [`Config`], citing the text for every error.
pub(super) struct Builder<'a> {
    text: &'a str,
    doc: Node,
}

impl<'a> Builder<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self { text, doc: Node::read(text) }
    }

    /// An error about `key`, located at its value (or at the nearest
    /// enclosing value when the file lacks the key).
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigFileError {
        let key = key.into();
        self.err_at(&key.clone(), key, message)
    }

    /// An error about `key`, located at the value of `at`.
    fn err_at(&self, at: &str, key: impl Into<String>, message: impl Into<String>) -> ConfigFileError {
        let mut e = ConfigFileError::at_key(key, message);
        if let Some((span, _)) = self.doc.find(at) {
            let (line, column) = line_column(self.text, span.start);
            (e.line, e.column) = (Some(line), Some(column));
        }
        e
    }

    /// The line of the value at `path`.
    fn line_of(&self, path: &str) -> usize {
        self.doc.find(path).map_or(0, |(span, _)| line_column(self.text, span.start).0)
    }

    /// Whether the file sets `path`.
    fn has(&self, path: &str) -> bool {
        self.doc.find(path).is_some_and(|(_, exact)| exact)
    }

    /// `Ok` when `ok`, else the error `message` at `key`.
    fn check(&self, ok: bool, key: &str, message: impl FnOnce() -> String) -> Result<(), ConfigFileError> {
        if ok { Ok(()) } else { Err(self.err(key, message())) }
    }

    /// `Ok` when `v` is within `lo..=hi`, else the error `"{v} out of range ..."` at `key`.
    fn in_range<T: PartialOrd + Display>(
        &self,
        v: T,
        lo: T,
        hi: T,
        key: &str,
    ) -> Result<(), ConfigFileError> {
        self.check(lo <= v && v <= hi, key, || format!("{v} out of range {lo}..={hi}"))
    }

    pub(super) fn build(&self, file: File) -> Result<Config, ConfigFileError> {
        self.driver(&file.driver)?;
        let timeouts = self.timeouts(&file.timeouts)?;
        let engine = EngineConfig { timeouts, ..self.engine(&file.engine)? };
        self.synproxy(&file.synproxy)?;
        file.health.check().map_err(|e| {
            let key = e.split_whitespace().next().unwrap_or("health").to_owned();
            self.err(key, e)
        })?;
        let model = self.model(&file.service, timeouts, file.synproxy.enabled_by_default)?;
        Ok(Config {
            daemon: file.daemon,
            driver: file.driver,
            engine,
            synproxy: file.synproxy,
            metrics: file.metrics,
            health: file.health,
            model,
        })
    }

    fn driver(&self, d: &DriverSettings) -> Result<(), ConfigFileError> {
        self.interface_name(&d.tun_name, "driver.tun_name")?;
        for (i, name) in d.interfaces.iter().enumerate() {
            let key = format!("driver.interfaces[{i}]");
            self.interface_name(name, &key)?;
            self.check(!d.interfaces[..i].contains(name), &key, || {
                format!("interface {name:?} is listed twice")
            })?;
        }
        if d.kind == DriverKind::Xdp && d.interfaces.is_empty() {
            let key = if self.has("driver.kind") && !self.has("driver.interfaces") {
                "driver.kind"
            } else {
                "driver.interfaces"
            };
            return Err(self.err(key, "driver \"xdp\" needs at least one entry in driver.interfaces"));
        }
        let (batch, workers) = (d.batch, d.workers);
        self.check((1..=1024).contains(&batch), "driver.batch", || {
            format!("batch {batch} out of range 1..=1024")
        })?;
        self.check((1..=MAX_WORKERS).contains(&workers), "driver.workers", || {
            format!("workers {workers} out of range 1..={MAX_WORKERS}")
        })?;
        self.check(d.cpus.is_empty() || d.cpus.len() == workers, "driver.cpus", || {
            format!("{} CPUs for {workers} workers: give one per worker", d.cpus.len())
        })?;
        if let Some(c) = d.cpus.iter().find(|&&c| c >= MAX_CPUS) {
            return Err(self.err("driver.cpus", format!("CPU {c} out of range 0..{MAX_CPUS}")));
        }
        let after = d.fast_path_after;
        self.check(after <= MAX_FAST_PATH_AFTER, "driver.fast_path_after", || {
            format!("fast_path_after {after} out of range 0..={MAX_FAST_PATH_AFTER}")
        })?;
        for (key, p) in
            [("driver.fault_loss_pct", d.fault_loss_pct), ("driver.fault_syn_loss_pct", d.fault_syn_loss_pct)]
        {
            self.check((0.0..=100.0).contains(&p), key, || format!("loss {p} % out of range 0..=100"))?;
        }
        Ok(())
    }

    /// A network interface's name: 1 to 15 bytes (IFNAMSIZ with its NUL), no '/' or spaces.
    fn interface_name(&self, name: &str, key: &str) -> Result<(), ConfigFileError> {
        let ok = !name.is_empty()
            && name.len() <= 15
            && !name.contains(['/', '\0'])
            && !name.contains(char::is_whitespace);
        self.check(ok, key, || format!("invalid interface name {name:?}: 1 to 15 bytes, no '/' or spaces"))
    }

    fn engine(&self, e: &EngineFile) -> Result<EngineConfig, ConfigFileError> {
        let (max_conns, prealloc_conns) = (e.max_conns, e.prealloc_conns);
        self.check(max_conns >= 1, "engine.max_conns", || "max_conns must be at least 1".to_owned())?;
        self.check(prealloc_conns <= max_conns, "engine.prealloc_conns", || {
            format!("prealloc_conns {prealloc_conns} exceeds max_conns {max_conns}")
        })?;
        let key = "engine.port_range";
        let &[lo, hi] = e.port_range.as_slice() else {
            return Err(self.err(key, format!("expected [low, high], found {} values", e.port_range.len())));
        };
        self.check(lo != 0, key, || "port 0 cannot be a local port".to_owned())?;
        self.check(lo <= hi, key, || format!("port range [{lo}, {hi}] is empty: low end above high end"))?;
        let q = e.port_quarantine_secs;
        self.check(q <= MAX_TIMEOUT_SECS, "engine.port_quarantine_secs", || {
            format!("{q} s exceeds {MAX_TIMEOUT_SECS} s")
        })?;
        Ok(EngineConfig {
            max_conns,
            prealloc_conns,
            port_range: (lo, hi),
            port_quarantine: Duration::from_secs(q),
            decrement_ttl: e.decrement_ttl,
            reset_rate: e.reset_rate,
            ..EngineConfig::default()
        })
    }

    fn timeouts(&self, file: &TimeoutSecs) -> Result<Timeouts, ConfigFileError> {
        let mut t = Timeouts::default();
        for (key, &secs) in &file.0 {
            let path = format!("timeouts.{key}");
            let Some(&(_, state)) = TIMEOUT_KEYS.iter().find(|(k, _)| k == key) else {
                let known: Vec<_> = TIMEOUT_KEYS.iter().map(|(k, _)| format!("`{k}`")).collect();
                return Err(
                    self.err(path, format!("unknown field `{key}`, expected one of {}", known.join(", ")))
                );
            };
            let secs = self.timeout_secs(secs, &path)?;
            match state {
                Some(state) => t.set_tcp(state, secs),
                None => t.udp = secs,
            }
        }
        Ok(t)
    }

    fn timeout_secs(&self, secs: u64, key: &str) -> Result<Duration, ConfigFileError> {
        self.check((1..=MAX_TIMEOUT_SECS).contains(&secs), key, || {
            format!("timeout {secs} s out of range 1..={MAX_TIMEOUT_SECS}")
        })?;
        Ok(Duration::from_secs(secs))
    }

    fn synproxy(&self, s: &SynproxySettings) -> Result<(), ConfigFileError> {
        self.in_range(s.mss_max, MIN_MSS, u16::MAX, "synproxy.mss_max")?;
        self.in_range(s.wscale, 0, 14, "synproxy.wscale")?;
        self.in_range(s.ttl, 1, u8::MAX, "synproxy.ttl")?;
        self.in_range(s.cookie_validity_secs, 1, MAX_TIMEOUT_SECS, "synproxy.cookie_validity_secs")?;
        self.in_range(s.ack_storm_threshold, 1, u32::MAX, "synproxy.ack_storm_threshold")?;
        self.in_range(s.rto_floor_ms, 1, 60_000, "synproxy.rto_floor_ms")?;
        self.in_range(s.rto_initial_ms, 1, 60_000, "synproxy.rto_initial_ms")?;
        if s.rto_initial_ms < s.rto_floor_ms {
            let key = ["synproxy.rto_initial_ms", "synproxy.rto_floor_ms"]
                .into_iter()
                .find(|k| self.has(k))
                .unwrap_or("synproxy");
            return Err(self.err(
                key,
                format!("rto_initial_ms {} is below rto_floor_ms {}", s.rto_initial_ms, s.rto_floor_ms),
            ));
        }
        Ok(())
    }

    /// Every `[[service]]`, each checked alone and then all together.
    fn model(
        &self,
        services: &[ServiceFile],
        timeouts: Timeouts,
        synproxy_default: bool,
    ) -> Result<Model, ConfigFileError> {
        let mut model = Model { timeouts, services: BTreeMap::new() };
        // Where each service was first defined: its index.
        let mut seen: BTreeMap<ServiceKey, usize> = BTreeMap::new();
        for (i, svc) in services.iter().enumerate() {
            let spec = self.service(i, svc, &timeouts, synproxy_default)?;
            let key = (spec.config.proto, spec.config.vip);
            let vip = format!("service[{i}].vip");
            if let Some(first) = seen.insert(key, i) {
                let first_line = self.line_of(&format!("service[{first}].vip"));
                return Err(self.err(
                    vip,
                    format!(
                        "duplicate service {} {} (also service[{first}] at line {first_line})",
                        key.0.name(),
                        key.1
                    ),
                ));
            }
            // The engine's own rules, one service at a time so an error names its service.
            let alone = Model { timeouts, services: BTreeMap::from([(key, spec.clone())]) };
            alone.validate().map_err(|e| self.err_at(&vip, format!("service[{i}]"), e.to_string()))?;
            model.services.insert(key, spec);
        }
        model.validate().map_err(|e| ConfigFileError::at_key("service", e.to_string()))?;
        Ok(model)
    }

    /// Parse `IP:port`, refusing port 0 (no packet can carry it).
    fn endpoint(&self, text: &str, key: &str) -> Result<Endpoint, ConfigFileError> {
        let addr: SocketAddr = text.parse().map_err(|_| {
            self.err(key, format!("invalid address {text:?}: expected IP:port, IPv6 as [addr]:port"))
        })?;
        self.check(addr.port() != 0, key, || format!("port 0 in {addr}"))?;
        Ok(addr.into())
    }

    /// One `[[service]]`.
    fn service(
        &self,
        i: usize,
        raw: &ServiceFile,
        timeouts: &Timeouts,
        synproxy_default: bool,
    ) -> Result<ServiceSpec, ConfigFileError> {
        let key = |k: &str| format!("service[{i}].{k}");
        let proto = raw.proto;
        let Some(vip) = &raw.vip else {
            return Err(self.err(key("vip"), "missing key vip (the service's IP:port)"));
        };
        let vip = self.endpoint(vip, &key("vip"))?;
        let mut spec = ServiceSpec::new(ServiceConfig::new(proto, vip));
        spec.config.sched = raw.sched;
        for (j, text) in raw.laddrs.iter().enumerate() {
            let k = key(&format!("laddrs[{j}]"));
            let addr: IpAddr =
                text.parse().map_err(|_| self.err(&k, format!("invalid IP address {text:?}")))?;
            self.check(!spec.config.laddrs.contains(&addr), &k, || {
                format!("duplicate local address {addr}")
            })?;
            spec.check_backend(addr).map_err(|e| self.err(&k, e))?;
            spec.config.laddrs.push(addr);
        }
        let tcp_only = |set: bool, k: &str| {
            self.check(!set || proto == Proto::Tcp, &key(k), || format!("{k} applies to tcp services only"))
        };
        tcp_only(raw.synproxy == Some(true), "synproxy")?;
        tcp_only(raw.toa, "toa")?;
        tcp_only(raw.proxy_protocol != ProxyProtocol::Disabled, "proxy_protocol")?;
        tcp_only(raw.conn_timeout.is_some(), "conn_timeout")?;
        tcp_only(raw.mss_clamp.is_some(), "mss_clamp")?;
        spec.config.synproxy = raw.synproxy.unwrap_or(synproxy_default && proto == Proto::Tcp);
        spec.config.toa = raw.toa;
        spec.config.proxy_protocol = raw.proxy_protocol;
        if let Some(secs) = raw.conn_timeout {
            let mut own = *timeouts;
            own.set_tcp(TcpState::Established, self.timeout_secs(secs, &key("conn_timeout"))?);
            spec.config.timeouts = Some(own);
        }
        if let Some(mss) = raw.mss_clamp {
            self.check(mss >= MIN_MSS, &key("mss_clamp"), || format!("mss_clamp {mss} below {MIN_MSS}"))?;
            spec.config.mss_clamp = Some(mss);
        }
        spec.check = raw.check.parse().map_err(|e: String| self.err(key("check"), e))?;
        for (j, r) in raw.real.iter().enumerate() {
            let k = key(&format!("real[{j}].addr"));
            let Some(addr) = &r.addr else {
                return Err(self.err(k, "missing key addr (the real's IP:port)"));
            };
            let endpoint = self.endpoint(addr, &k)?;
            spec.check_backend(endpoint.addr).map_err(|e| self.err(&k, e))?;
            if let Some(first) = spec.reals.iter().position(|x| x.endpoint == endpoint) {
                return Err(
                    self.err(k, format!("duplicate real {endpoint} (also service[{i}].real[{first}])"))
                );
            }
            spec.reals.push(RealConfig { endpoint, weight: r.weight });
            if let Some(text) = &r.check {
                let check =
                    text.parse().map_err(|e: String| self.err(key(&format!("real[{j}].check")), e))?;
                spec.checks.insert(endpoint, check);
            }
            if r.maintenance != Maintenance::Auto {
                spec.maintenance.insert(endpoint, r.maintenance);
            }
        }
        Ok(spec)
    }
}
