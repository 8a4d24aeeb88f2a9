//! The daemon's config file (TOML).
//!
//! Every key is optional except a service's `vip` and a real's `addr`; an
//! empty file is a valid config with no services. Unknown keys are errors, so
//! a misspelt key never silently falls back to its default. Every error names
//! the line, column and key path (`service[0].real[1].weight`), both for
//! TOML and type errors and for the checks made after reading, which end with
//! the engine's own validation ([`Model::validate`]).
//!
//! The whole file with every default (the operator's reference with more
//! detail is `docs/CONFIG.md`):
//!
//! ```toml
//! [daemon]
//! control_socket = "/run/rvs/rvs.sock" # `rvs adm` talks to the daemon here
//! secret_file = "/var/lib/rvs/secret" # 32 bytes, made on first start; keep it across restarts
//! log_level = "info"
//!
//! [driver]
//! kind = "tun"              # "tun", or "xdp" (AF_XDP sockets on `interfaces`)
//! tun_name = "rvs0"         # at most 15 bytes
//! interfaces = []           # xdp: the interfaces clients and reals are reached on
//! xdp_mode = "native"       # xdp: "native" (driver), "generic" (skb) or "auto" (native where it can) attach
//! batch = 64                # packets per receive/send call, 1..=1024
//! workers = 1               # data-path threads, 1..=16
//! cpus = []                 # the CPU each worker runs on, one per worker; [] leaves it to the scheduler
//! fault_loss_pct = 0.0      # 0..=100: drop this share of real-side packets (tests)
//! fault_syn_loss_pct = 0.0  # 0..=100: the same, for real-side SYNs and SYN-ACKs only (tests)
//!
//! [engine]
//! max_conns = 2000000       # at least 1
//! prealloc_conns = 0        # at most max_conns
//! port_range = [1024, 65535]
//! port_quarantine_secs = 60 # rest of a port the real might refuse (its TIME_WAIT); others are reused at once
//! decrement_ttl = true
//! reset_rate = 10000        # RSTs/s per worker answering packets of unknown connections; 0: none
//!
//! [timeouts]                # idle timeouts in seconds, 1..=31536000
//! established = 900
//! syn_sent = 3
//! syn_recv = 30
//! fin_wait = 3
//! time_wait = 3
//! close = 3
//! close_wait = 3
//! last_ack = 3
//! listen = 120
//! syn_ack = 30
//! udp = 300
//!
//! [synproxy]                # SYN-flood defence settings (fixed at start)
//! enabled_by_default = false
//! mss_max = 1460            # 536..=65535
//! wscale = 7                # 0..=14
//! sack = true
//! timestamps = true
//! ttl = 64                  # 1..=255
//! cookie_validity_secs = 120
//! rst_on_bad_cookie = true
//! ack_storm_threshold = 10
//! max_stored_packets = 3
//! defer_rs_syn = false
//! rto_floor_ms = 10
//! rto_initial_ms = 200      # at least rto_floor_ms
//! syn_retries = 2
//! retransmit_mode = "adaptive" # or "classic"
//!
//! [metrics]
//! # listen = "127.0.0.1:9108" # no metrics endpoint unless set
//!
//! [[service]]
//! proto = "tcp"             # or "udp"
//! vip = "10.0.0.1:80"       # required; IPv6 as "[2001:db8::1]:80"
//! sched = "wrr"             # rr wrr lc wlc sh mh
//! laddrs = ["10.0.2.1"]     # default none
//! # synproxy = false        # tcp only; default [synproxy] enabled_by_default
//! toa = false               # tcp only: the client's address in TCP option 254
//! proxy_protocol = "disable" # tcp only: "v1" or "v2" sends a PROXY header first
//! # conn_timeout = 90       # tcp only: this service's ESTABLISHED timeout
//! # mss_clamp = 1400        # tcp only, 536..=65535
//!
//! [[service.real]]
//! addr = "10.0.1.1:80"      # required
//! weight = 1
//! ```

use core::fmt;
use core::time::Duration;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use rvs_core::{
    Endpoint, EngineConfig, Proto, ProxyProtocol, RealConfig, SchedKind, ServiceConfig, TcpState, Timeouts,
};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use crate::model::{Model, ServiceKey, ServiceSpec};

/// Most data-path workers: the XDP program keeps this many socket slots per interface.
pub const MAX_WORKERS: usize = 16;

/// CPUs a worker can be pinned to: the size of the kernel's `cpu_set_t`.
pub const MAX_CPUS: usize = 1024;

/// Longest idle timeout or quarantine accepted: longer is surely a typo, and
/// the bound keeps deadline arithmetic far from overflow.
pub const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

/// Smallest MSS accepted (RFC 879's default); smaller segments only multiply
/// per-packet cost.
const MIN_MSS: u16 = 536;

/// The daemon's whole configuration, as read from the config file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// `[daemon]`: how the daemon is reached and how much it logs.
    pub daemon: DaemonSettings,
    /// `[driver]`: the packet I/O the data path runs on.
    pub driver: DriverSettings,
    /// `[engine]` (with `[timeouts]` as its default timeouts): each worker's
    /// engine; the daemon sets [`EngineConfig::worker`] per worker.
    pub engine: EngineConfig,
    /// `[synproxy]`: SYN-flood defence settings.
    pub synproxy: SynproxySettings,
    /// `[metrics]`: the metrics endpoint.
    pub metrics: MetricsSettings,
    /// `[timeouts]` and `[[service]]`: the desired state a reload may change.
    pub model: Model,
}

/// `[daemon]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    /// Unix socket `rvs adm` connects to.
    pub control_socket: PathBuf,
    /// Log filter, passed to the logger as written.
    pub log_level: String,
    /// The engines' secret (SYN cookies, ISNs and TSvals toward reals, flow
    /// hashing), made with random bytes when the file is missing. Kept
    /// across restarts, and shared by the balancers of a pair, so ISNs and
    /// TSvals toward a real keep growing on every reused (LIP, port, real)
    /// and the real's TIME_WAIT accepts the new SYN; cookies a peer issued
    /// stay valid.
    pub secret_file: PathBuf,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            control_socket: PathBuf::from("/run/rvs/rvs.sock"),
            log_level: "info".to_owned(),
            secret_file: PathBuf::from("/var/lib/rvs/secret"),
        }
    }
}

/// Which packet I/O the data path runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriverKind {
    /// A TUN device: portable, one copy per packet.
    #[default]
    Tun,
    /// AF_XDP sockets on the configured interfaces, steered by an XDP program.
    Xdp,
}

/// How the XDP program attaches to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// In the driver (`xdpdrv`): fastest, needs driver support (veth has it).
    #[default]
    Native,
    /// In the kernel's generic path (`xdpgeneric`): works on any interface.
    Generic,
    /// Native on each interface whose driver has it, generic on the others
    /// (a NIC and a bridge side by side).
    Auto,
}

impl XdpMode {
    /// The name in the config file.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
            Self::Auto => "auto",
        }
    }
}

impl DriverKind {
    /// The name in the config file.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tun => "tun",
            Self::Xdp => "xdp",
        }
    }
}

/// `[driver]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverSettings {
    /// Packet I/O kind.
    pub kind: DriverKind,
    /// Name of the TUN device (with `xdp`, the kernel still routes VIPs and
    /// LIPs to it, so the host's own traffic and what XDP passes reach rvs).
    pub tun_name: String,
    /// Interfaces the xdp driver attaches to and sends on.
    pub interfaces: Vec<String>,
    /// How the xdp driver attaches its program.
    pub xdp_mode: XdpMode,
    /// Packets per receive or send call.
    pub batch: usize,
    /// Data-path workers, each a thread with its own engine, TUN queue and
    /// (xdp driver) AF_XDP socket on one queue of every interface. BPF
    /// programs steer each packet to the worker that owns its flow or local
    /// port, on the interfaces and on the TUN device alike.
    pub workers: usize,
    /// The CPU each worker is pinned to, one entry per worker (the CPU that
    /// serves its queue's interrupts, say); empty leaves placement to the
    /// kernel's scheduler.
    pub cpus: Vec<usize>,
    /// Share of packets, in percent, the driver's fault injector drops on the
    /// real side in both directions; for tests and `rvs lab --loss`.
    pub fault_loss_pct: f64,
    /// Share of pure SYNs and SYN-ACKs, in percent, the fault injector drops
    /// on the real side, on top of `fault_loss_pct`: the seed's experiment,
    /// where only handshakes toward reals are lost; for tests and
    /// `rvs lab --syn-loss`.
    pub fault_syn_loss_pct: f64,
}

impl Default for DriverSettings {
    fn default() -> Self {
        Self {
            kind: DriverKind::Tun,
            tun_name: "rvs0".to_owned(),
            interfaces: Vec::new(),
            xdp_mode: XdpMode::Native,
            batch: 64,
            workers: 1,
            cpus: Vec::new(),
            fault_loss_pct: 0.0,
            fault_syn_loss_pct: 0.0,
        }
    }
}

pub use rvs_core::RetransmitMode;

/// `[synproxy]` settings: engine-wide SYNProxy behaviour, and whether TCP
/// services have it on unless they say otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynproxySettings {
    /// Whether services without an explicit `synproxy` key use SYNProxy.
    pub enabled_by_default: bool,
    /// Largest MSS advertised in a cookie SYN-ACK.
    pub mss_max: u16,
    /// Window scale advertised in a cookie SYN-ACK.
    pub wscale: u8,
    /// Advertise SACK permitted.
    pub sack: bool,
    /// Advertise timestamps.
    pub timestamps: bool,
    /// TTL (hop limit) of packets SYNProxy originates.
    pub ttl: u8,
    /// How long a cookie is accepted after it was sent.
    pub cookie_validity_secs: u64,
    /// Answer an ACK with an invalid cookie with a RST.
    pub rst_on_bad_cookie: bool,
    /// Duplicate ACKs within one handshake after which further ones are dropped.
    pub ack_storm_threshold: u32,
    /// Client packets held per connection while the real's handshake is pending.
    pub max_stored_packets: usize,
    /// Open the connection to the real only once the client sends data.
    pub defer_rs_syn: bool,
    /// Lowest retransmission timeout toward a real.
    pub rto_floor_ms: u64,
    /// Retransmission timeout before any RTT sample.
    pub rto_initial_ms: u64,
    /// SYN retransmissions toward a real before another real is tried.
    pub syn_retries: u8,
    /// How retransmission timeouts are chosen.
    pub retransmit_mode: RetransmitMode,
}

impl Default for SynproxySettings {
    fn default() -> Self {
        Self {
            enabled_by_default: false,
            mss_max: 1460,
            wscale: 7,
            sack: true,
            timestamps: true,
            ttl: 64,
            cookie_validity_secs: 120,
            rst_on_bad_cookie: true,
            ack_storm_threshold: 10,
            max_stored_packets: 3,
            defer_rs_syn: false,
            rto_floor_ms: 10,
            rto_initial_ms: 200,
            syn_retries: 2,
            retransmit_mode: RetransmitMode::Adaptive,
        }
    }
}

/// `[metrics]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSettings {
    /// Address of the metrics HTTP endpoint; none unless set.
    pub listen: Option<SocketAddr>,
}

/// An error in a config file, located as precisely as the error allows.
///
/// Displayed on one line: `rvs.toml: line 12, column 10, key
/// service[0].real[1].weight: invalid value ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFileError {
    /// The file, when read by [`Config::load`].
    pub file: Option<PathBuf>,
    /// 1-based line of the offending text.
    pub line: Option<usize>,
    /// 1-based column, in characters.
    pub column: Option<usize>,
    /// Dotted key path, with array indices: `service[0].real[1].weight`.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigFileError {
    fn new(message: impl Into<String>) -> Self {
        Self { file: None, line: None, column: None, key: None, message: message.into() }
    }

    fn at_key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: Some(key.into()), ..Self::new(message) }
    }
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(line) = self.line {
            parts.push(format!("line {line}"));
        }
        if let Some(column) = self.column {
            parts.push(format!("column {column}"));
        }
        if let Some(key) = &self.key {
            parts.push(format!("key {key}"));
        }
        let prefix = parts.join(", ");
        match (&self.file, prefix.is_empty()) {
            (Some(file), true) => write!(f, "{}: {}", file.display(), self.message),
            (Some(file), false) => write!(f, "{}: {prefix}: {}", file.display(), self.message),
            (None, true) => f.write_str(&self.message),
            (None, false) => write!(f, "{prefix}: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigFileError {}

impl SynproxySettings {
    /// The engine's SYNProxy settings (the daemon puts them in its
    /// [`EngineConfig`]; kept apart here so the file has one `[synproxy]`).
    pub fn engine_config(&self) -> rvs_core::SynproxyConfig {
        rvs_core::SynproxyConfig {
            mss_max: self.mss_max,
            wscale: self.wscale,
            sack: self.sack,
            timestamps: self.timestamps,
            ttl: self.ttl,
            cookie_validity: Duration::from_secs(self.cookie_validity_secs),
            rst_on_bad_cookie: self.rst_on_bad_cookie,
            ack_storm_threshold: self.ack_storm_threshold,
            max_stored_packets: self.max_stored_packets,
            defer_rs_syn: self.defer_rs_syn,
            rto_floor: Duration::from_millis(self.rto_floor_ms),
            rto_initial: Duration::from_millis(self.rto_initial_ms),
            syn_retries: self.syn_retries,
            retransmit_mode: self.retransmit_mode,
        }
    }
}

impl Config {
    /// Read a config from TOML text; empty text is all defaults and no services.
    pub fn parse(text: &str) -> Result<Self, ConfigFileError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        Builder { text }.build(raw)
    }

    /// Read the config file at `path`; errors name the file.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let with_file = |mut e: ConfigFileError| {
            e.file = Some(path.to_path_buf());
            e
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| with_file(ConfigFileError::new(format!("cannot read: {e}"))))?;
        Self::parse(&text).map_err(with_file)
    }

    /// Check that `new` changes only what a reload can apply: services,
    /// timeouts, SYNProxy settings and the log level. The driver, the engine,
    /// the control socket and the metrics address are fixed when the daemon
    /// starts; `Err` names the first key that differs.
    pub fn check_reloadable(&self, new: &Self) -> Result<(), ConfigFileError> {
        let (o, n) = (self, new);
        let (oe, ne) = (&o.engine, &n.engine);
        let fixed = [
            ("daemon.control_socket", o.daemon.control_socket != n.daemon.control_socket),
            ("daemon.secret_file", o.daemon.secret_file != n.daemon.secret_file),
            ("driver.kind", o.driver.kind != n.driver.kind),
            ("driver.tun_name", o.driver.tun_name != n.driver.tun_name),
            ("driver.interfaces", o.driver.interfaces != n.driver.interfaces),
            ("driver.xdp_mode", o.driver.xdp_mode != n.driver.xdp_mode),
            ("driver.batch", o.driver.batch != n.driver.batch),
            ("driver.workers", o.driver.workers != n.driver.workers),
            ("driver.cpus", o.driver.cpus != n.driver.cpus),
            ("driver.fault_loss_pct", o.driver.fault_loss_pct.to_bits() != n.driver.fault_loss_pct.to_bits()),
            (
                "driver.fault_syn_loss_pct",
                o.driver.fault_syn_loss_pct.to_bits() != n.driver.fault_syn_loss_pct.to_bits(),
            ),
            ("engine.max_conns", oe.max_conns != ne.max_conns),
            ("engine.prealloc_conns", oe.prealloc_conns != ne.prealloc_conns),
            ("engine.port_range", oe.port_range != ne.port_range),
            ("engine.port_quarantine_secs", oe.port_quarantine != ne.port_quarantine),
            ("engine.decrement_ttl", oe.decrement_ttl != ne.decrement_ttl),
            ("engine.reset_rate", oe.reset_rate != ne.reset_rate),
            // SYNProxy settings are fixed with the engine; which services use it may change.
            (
                "synproxy",
                SynproxySettings { enabled_by_default: n.synproxy.enabled_by_default, ..o.synproxy.clone() }
                    != n.synproxy,
            ),
            // Not in the file, but fixed all the same; timeouts reload through the model.
            ("engine", EngineConfig { timeouts: ne.timeouts, ..oe.clone() } != *ne),
            ("metrics.listen", o.metrics.listen != n.metrics.listen),
        ];
        match fixed.iter().find(|(_, changed)| *changed) {
            Some((key, _)) => {
                Err(ConfigFileError::at_key(*key, "cannot change on reload; restart the daemon to apply it"))
            }
            None => Ok(()),
        }
    }

    /// Render as TOML text that [`Config::parse`] reads back to an equal
    /// config, every key written out (for `rvs lab`'s built-in config and the
    /// docs).
    ///
    /// Durations are written in whole seconds. A service's timeouts are
    /// written as its `conn_timeout` (ESTABLISHED) alone, the form the file
    /// has for them; other per-service timeouts set in code do not survive.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_toml(&mut s);
        s
    }

    fn write_toml(&self, s: &mut String) -> fmt::Result {
        let (d, dr, e, sp) = (&self.daemon, &self.driver, &self.engine, &self.synproxy);
        writeln!(s, "[daemon]")?;
        writeln!(s, "control_socket = {}", quote(&d.control_socket.to_string_lossy()))?;
        writeln!(s, "log_level = {}", quote(&d.log_level))?;
        writeln!(s, "secret_file = {}", quote(&d.secret_file.to_string_lossy()))?;
        writeln!(s, "\n[driver]")?;
        writeln!(s, "kind = {}", quote(dr.kind.name()))?;
        writeln!(s, "tun_name = {}", quote(&dr.tun_name))?;
        let interfaces: Vec<String> = dr.interfaces.iter().map(|i| quote(i)).collect();
        writeln!(s, "interfaces = [{}]", interfaces.join(", "))?;
        writeln!(s, "xdp_mode = {}", quote(dr.xdp_mode.name()))?;
        writeln!(s, "batch = {}", dr.batch)?;
        writeln!(s, "workers = {}", dr.workers)?;
        let cpus: Vec<String> = dr.cpus.iter().map(ToString::to_string).collect();
        writeln!(s, "cpus = [{}]", cpus.join(", "))?;
        writeln!(s, "fault_loss_pct = {}", toml::Value::Float(dr.fault_loss_pct))?;
        writeln!(s, "fault_syn_loss_pct = {}", toml::Value::Float(dr.fault_syn_loss_pct))?;
        writeln!(s, "\n[engine]")?;
        writeln!(s, "max_conns = {}", e.max_conns)?;
        writeln!(s, "prealloc_conns = {}", e.prealloc_conns)?;
        writeln!(s, "port_range = [{}, {}]", e.port_range.0, e.port_range.1)?;
        writeln!(s, "port_quarantine_secs = {}", e.port_quarantine.as_secs())?;
        writeln!(s, "decrement_ttl = {}", e.decrement_ttl)?;
        writeln!(s, "reset_rate = {}", e.reset_rate)?;
        writeln!(s, "\n[timeouts]")?;
        for (key, state) in TIMEOUT_KEYS {
            let t = match state {
                Some(state) => self.model.timeouts.tcp(state),
                None => self.model.timeouts.udp,
            };
            writeln!(s, "{key} = {}", t.as_secs())?;
        }
        writeln!(s, "\n[synproxy]")?;
        writeln!(s, "enabled_by_default = {}", sp.enabled_by_default)?;
        writeln!(s, "mss_max = {}", sp.mss_max)?;
        writeln!(s, "wscale = {}", sp.wscale)?;
        writeln!(s, "sack = {}", sp.sack)?;
        writeln!(s, "timestamps = {}", sp.timestamps)?;
        writeln!(s, "ttl = {}", sp.ttl)?;
        writeln!(s, "cookie_validity_secs = {}", sp.cookie_validity_secs)?;
        writeln!(s, "rst_on_bad_cookie = {}", sp.rst_on_bad_cookie)?;
        writeln!(s, "ack_storm_threshold = {}", sp.ack_storm_threshold)?;
        writeln!(s, "max_stored_packets = {}", sp.max_stored_packets)?;
        writeln!(s, "defer_rs_syn = {}", sp.defer_rs_syn)?;
        writeln!(s, "rto_floor_ms = {}", sp.rto_floor_ms)?;
        writeln!(s, "rto_initial_ms = {}", sp.rto_initial_ms)?;
        writeln!(s, "syn_retries = {}", sp.syn_retries)?;
        writeln!(s, "retransmit_mode = {}", quote(sp.retransmit_mode.name()))?;
        writeln!(s, "\n[metrics]")?;
        match self.metrics.listen {
            Some(addr) => writeln!(s, "listen = {}", quote(&addr.to_string()))?,
            None => writeln!(s, "# listen = \"127.0.0.1:9108\"")?,
        }
        for spec in self.model.services.values() {
            let c = &spec.config;
            writeln!(s, "\n[[service]]")?;
            writeln!(s, "proto = {}", quote(c.proto.name()))?;
            writeln!(s, "vip = {}", quote(&c.vip.to_string()))?;
            writeln!(s, "sched = {}", quote(c.sched.name()))?;
            let laddrs: Vec<_> = c.laddrs.iter().map(|l| quote(&l.to_string())).collect();
            writeln!(s, "laddrs = [{}]", laddrs.join(", "))?;
            writeln!(s, "synproxy = {}", c.synproxy)?;
            writeln!(s, "toa = {}", c.toa)?;
            writeln!(s, "proxy_protocol = {}", quote(c.proxy_protocol.name()))?;
            if let Some(t) = c.timeouts {
                writeln!(s, "conn_timeout = {}", t.tcp(TcpState::Established).as_secs())?;
            }
            if let Some(mss) = c.mss_clamp {
                writeln!(s, "mss_clamp = {mss}")?;
            }
            for r in &spec.reals {
                writeln!(s, "\n[[service.real]]")?;
                writeln!(s, "addr = {}", quote(&r.endpoint.to_string()))?;
                writeln!(s, "weight = {}", r.weight)?;
            }
        }
        Ok(())
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// `[timeouts]` keys and the TCP state each sets; `None` is UDP. NONE has no
/// key: an entry in that state is gone within two seconds whatever is set.
const TIMEOUT_KEYS: [(&str, Option<TcpState>); 11] = [
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

// ---- the file as read, with the spans of the values checked later ----------

type Sp<T> = Option<Spanned<T>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawFile {
    daemon: RawDaemon,
    driver: RawDriver,
    engine: RawEngine,
    timeouts: RawTimeouts,
    synproxy: RawSynproxy,
    metrics: RawMetrics,
    service: Vec<Spanned<RawService>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawDaemon {
    control_socket: Option<PathBuf>,
    log_level: Option<String>,
    secret_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawDriver {
    kind: Sp<String>,
    tun_name: Sp<String>,
    interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    xdp_mode: Sp<String>,
    batch: Sp<usize>,
    workers: Sp<usize>,
    cpus: Sp<Vec<usize>>,
    fault_loss_pct: Sp<f64>,
    fault_syn_loss_pct: Sp<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawEngine {
    max_conns: Sp<usize>,
    prealloc_conns: Sp<usize>,
    port_range: Sp<Vec<u16>>,
    port_quarantine_secs: Sp<u64>,
    decrement_ttl: Option<bool>,
    reset_rate: Sp<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawTimeouts {
    established: Sp<u64>,
    syn_sent: Sp<u64>,
    syn_recv: Sp<u64>,
    fin_wait: Sp<u64>,
    time_wait: Sp<u64>,
    close: Sp<u64>,
    close_wait: Sp<u64>,
    last_ack: Sp<u64>,
    listen: Sp<u64>,
    syn_ack: Sp<u64>,
    udp: Sp<u64>,
}

impl RawTimeouts {
    /// Values in the order of [`TIMEOUT_KEYS`].
    fn values(&self) -> [&Sp<u64>; 11] {
        [
            &self.established,
            &self.syn_sent,
            &self.syn_recv,
            &self.fin_wait,
            &self.time_wait,
            &self.close,
            &self.close_wait,
            &self.last_ack,
            &self.listen,
            &self.syn_ack,
            &self.udp,
        ]
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSynproxy {
    enabled_by_default: Option<bool>,
    mss_max: Sp<u16>,
    wscale: Sp<u8>,
    sack: Option<bool>,
    timestamps: Option<bool>,
    ttl: Sp<u8>,
    cookie_validity_secs: Sp<u64>,
    rst_on_bad_cookie: Option<bool>,
    ack_storm_threshold: Sp<u32>,
    max_stored_packets: Option<usize>,
    defer_rs_syn: Option<bool>,
    rto_floor_ms: Sp<u64>,
    rto_initial_ms: Sp<u64>,
    syn_retries: Option<u8>,
    retransmit_mode: Sp<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    listen: Sp<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    proto: Sp<String>,
    vip: Sp<String>,
    sched: Sp<String>,
    laddrs: Option<Vec<Spanned<String>>>,
    synproxy: Sp<bool>,
    toa: Sp<bool>,
    proxy_protocol: Sp<String>,
    conn_timeout: Sp<u64>,
    mss_clamp: Sp<u16>,
    #[serde(default)]
    real: Vec<Spanned<RawReal>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReal {
    addr: Sp<String>,
    weight: Option<u32>,
}

// ---- from the file as read to a checked Config -----------------------------

/// Turns the file as read into a [`Config`], citing the text for every error.
struct Builder<'a> {
    text: &'a str,
}

impl Builder<'_> {
    fn err(&self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) -> ConfigFileError {
        let (line, column) = line_column(self.text, span.start);
        ConfigFileError { line: Some(line), column: Some(column), ..ConfigFileError::at_key(key, message) }
    }

    /// The value or its default, after `check` accepts it.
    fn checked<T: Copy>(
        &self,
        value: &Sp<T>,
        default: T,
        key: &str,
        check: impl FnOnce(T) -> Result<(), String>,
    ) -> Result<T, ConfigFileError> {
        match value {
            Some(v) => check(*v.get_ref()).map(|()| *v.get_ref()).map_err(|m| self.err(v.span(), key, m)),
            None => Ok(default),
        }
    }

    fn build(&self, raw: RawFile) -> Result<Config, ConfigFileError> {
        let driver = self.driver(&raw.driver)?;
        let timeouts = self.timeouts(&raw.timeouts)?;
        let mut engine = self.engine(&raw.engine)?;
        engine.timeouts = timeouts;
        let synproxy = self.synproxy(&raw.synproxy)?;
        let listen = match &raw.metrics.listen {
            Some(l) => Some(l.get_ref().parse::<SocketAddr>().map_err(|_| {
                self.err(
                    l.span(),
                    "metrics.listen",
                    format!("invalid address {:?}: expected IP:port", l.get_ref()),
                )
            })?),
            None => None,
        };
        let mut model = Model { timeouts, services: BTreeMap::new() };
        let synproxy_default = synproxy.enabled_by_default;
        // Where each service was first defined: (index, line).
        let mut seen: BTreeMap<ServiceKey, (usize, usize)> = BTreeMap::new();
        for (i, svc) in raw.service.iter().enumerate() {
            let (spec, vip_span) = self.service(i, svc, &timeouts, synproxy_default)?;
            let key = (spec.config.proto, spec.config.vip);
            let line = line_column(self.text, vip_span.start).0;
            if let Some((first, first_line)) = seen.insert(key, (i, line)) {
                return Err(self.err(
                    vip_span,
                    format!("service[{i}].vip"),
                    format!(
                        "duplicate service {} {} (also service[{first}] at line {first_line})",
                        key.0.name(),
                        key.1
                    ),
                ));
            }
            // The engine's own rules, one service at a time so an error names its service.
            let alone = Model { timeouts, services: BTreeMap::from([(key, spec.clone())]) };
            alone
                .validate()
                .map_err(|e| self.err(vip_span.clone(), format!("service[{i}]"), e.to_string()))?;
            model.services.insert(key, spec);
        }
        model.validate().map_err(|e| ConfigFileError::at_key("service", e.to_string()))?;
        Ok(Config {
            daemon: DaemonSettings {
                control_socket: raw
                    .daemon
                    .control_socket
                    .unwrap_or_else(|| DaemonSettings::default().control_socket),
                log_level: raw.daemon.log_level.unwrap_or_else(|| DaemonSettings::default().log_level),
                secret_file: raw.daemon.secret_file.unwrap_or_else(|| DaemonSettings::default().secret_file),
            },
            driver,
            engine,
            synproxy,
            metrics: MetricsSettings { listen },
            model,
        })
    }

    fn driver(&self, raw: &RawDriver) -> Result<DriverSettings, ConfigFileError> {
        let d = DriverSettings::default();
        let kind = match &raw.kind {
            None => d.kind,
            Some(k) => match k.get_ref().as_str() {
                "tun" => DriverKind::Tun,
                "xdp" => DriverKind::Xdp,
                other => {
                    return Err(self.err(
                        k.span(),
                        "driver.kind",
                        format!("unknown driver {other:?}; use \"tun\" or \"xdp\""),
                    ));
                }
            },
        };
        let tun_name = match &raw.tun_name {
            None => d.tun_name,
            Some(n) => self.interface_name(n, "driver.tun_name")?,
        };
        let mut interfaces = Vec::new();
        if let Some(list) = &raw.interfaces {
            for (i, n) in list.get_ref().iter().enumerate() {
                let key = format!("driver.interfaces[{i}]");
                let name = self.interface_name(n, &key)?;
                if interfaces.contains(&name) {
                    return Err(self.err(n.span(), key, format!("interface {name:?} is listed twice")));
                }
                interfaces.push(name);
            }
        }
        let xdp_mode = match &raw.xdp_mode {
            None => d.xdp_mode,
            Some(m) => match m.get_ref().as_str() {
                "native" => XdpMode::Native,
                "generic" => XdpMode::Generic,
                "auto" => XdpMode::Auto,
                other => {
                    return Err(self.err(
                        m.span(),
                        "driver.xdp_mode",
                        format!("unknown XDP mode {other:?}; use \"native\", \"generic\" or \"auto\""),
                    ));
                }
            },
        };
        if kind == DriverKind::Xdp && interfaces.is_empty() {
            let (span, key) = match (&raw.interfaces, &raw.kind) {
                (Some(list), _) => (list.span(), "driver.interfaces"),
                (None, Some(k)) => (k.span(), "driver.kind"),
                (None, None) => (0..0, "driver.interfaces"),
            };
            return Err(self.err(span, key, "driver \"xdp\" needs at least one entry in driver.interfaces"));
        }
        let batch = self.checked(&raw.batch, d.batch, "driver.batch", |b| {
            if (1..=1024).contains(&b) { Ok(()) } else { Err(format!("batch {b} out of range 1..=1024")) }
        })?;
        let workers = self.checked(&raw.workers, d.workers, "driver.workers", |w| {
            if (1..=MAX_WORKERS).contains(&w) {
                Ok(())
            } else {
                Err(format!("workers {w} out of range 1..={MAX_WORKERS}"))
            }
        })?;
        let cpus = match &raw.cpus {
            None => d.cpus,
            Some(list) => {
                let cpus = list.get_ref().clone();
                let bad = |m: String| self.err(list.span(), "driver.cpus", m);
                if !cpus.is_empty() && cpus.len() != workers {
                    return Err(bad(format!(
                        "{} CPUs for {workers} workers: give one per worker",
                        cpus.len()
                    )));
                }
                if let Some(c) = cpus.iter().find(|&&c| c >= MAX_CPUS) {
                    return Err(bad(format!("CPU {c} out of range 0..{MAX_CPUS}")));
                }
                cpus
            }
        };
        let pct = |p: f64| {
            if (0.0..=100.0).contains(&p) { Ok(()) } else { Err(format!("loss {p} % out of range 0..=100")) }
        };
        let fault_loss_pct =
            self.checked(&raw.fault_loss_pct, d.fault_loss_pct, "driver.fault_loss_pct", pct)?;
        let fault_syn_loss_pct =
            self.checked(&raw.fault_syn_loss_pct, d.fault_syn_loss_pct, "driver.fault_syn_loss_pct", pct)?;
        Ok(DriverSettings {
            kind,
            tun_name,
            interfaces,
            xdp_mode,
            batch,
            workers,
            cpus,
            fault_loss_pct,
            fault_syn_loss_pct,
        })
    }

    /// A network interface's name: 1 to 15 bytes (IFNAMSIZ with its NUL), no '/' or spaces.
    fn interface_name(&self, n: &Spanned<String>, key: &str) -> Result<String, ConfigFileError> {
        let name = n.get_ref();
        if name.is_empty()
            || name.len() > 15
            || name.contains(['/', '\0'])
            || name.contains(char::is_whitespace)
        {
            return Err(self.err(
                n.span(),
                key,
                format!("invalid interface name {name:?}: 1 to 15 bytes, no '/' or spaces"),
            ));
        }
        Ok(name.clone())
    }

    fn engine(&self, raw: &RawEngine) -> Result<EngineConfig, ConfigFileError> {
        let d = EngineConfig::default();
        let max_conns = self.checked(&raw.max_conns, d.max_conns, "engine.max_conns", |m| {
            if m >= 1 { Ok(()) } else { Err("max_conns must be at least 1".to_owned()) }
        })?;
        let prealloc_conns =
            self.checked(&raw.prealloc_conns, d.prealloc_conns, "engine.prealloc_conns", |p| {
                if p <= max_conns {
                    Ok(())
                } else {
                    Err(format!("prealloc_conns {p} exceeds max_conns {max_conns}"))
                }
            })?;
        let port_range = match &raw.port_range {
            None => d.port_range,
            Some(r) => {
                let bad = |m: String| self.err(r.span(), "engine.port_range", m);
                let &[lo, hi] = r.get_ref().as_slice() else {
                    return Err(bad(format!("expected [low, high], found {} values", r.get_ref().len())));
                };
                if lo == 0 {
                    return Err(bad("port 0 cannot be a local port".to_owned()));
                }
                if lo > hi {
                    return Err(bad(format!("port range [{lo}, {hi}] is empty: low end above high end")));
                }
                (lo, hi)
            }
        };
        let quarantine = self.checked(
            &raw.port_quarantine_secs,
            d.port_quarantine.as_secs(),
            "engine.port_quarantine_secs",
            |q| {
                if q <= MAX_TIMEOUT_SECS {
                    Ok(())
                } else {
                    Err(format!("{q} s exceeds {MAX_TIMEOUT_SECS} s"))
                }
            },
        )?;
        Ok(EngineConfig {
            max_conns,
            prealloc_conns,
            port_range,
            port_quarantine: Duration::from_secs(quarantine),
            decrement_ttl: raw.decrement_ttl.unwrap_or(d.decrement_ttl),
            reset_rate: raw.reset_rate.as_ref().map_or(d.reset_rate, |r| *r.get_ref()),
            ..d
        })
    }

    fn timeouts(&self, raw: &RawTimeouts) -> Result<Timeouts, ConfigFileError> {
        let mut t = Timeouts::default();
        for ((key, state), value) in TIMEOUT_KEYS.iter().zip(raw.values()) {
            let Some(v) = value else { continue };
            let secs = self.timeout_secs(v, &format!("timeouts.{key}"))?;
            match state {
                Some(state) => t.set_tcp(*state, secs),
                None => t.udp = secs,
            }
        }
        Ok(t)
    }

    fn timeout_secs(&self, v: &Spanned<u64>, key: &str) -> Result<Duration, ConfigFileError> {
        let secs = *v.get_ref();
        if (1..=MAX_TIMEOUT_SECS).contains(&secs) {
            Ok(Duration::from_secs(secs))
        } else {
            Err(self.err(v.span(), key, format!("timeout {secs} s out of range 1..={MAX_TIMEOUT_SECS}")))
        }
    }

    fn synproxy(&self, raw: &RawSynproxy) -> Result<SynproxySettings, ConfigFileError> {
        let d = SynproxySettings::default();
        let range = |lo: u64, hi: u64| {
            move |v: u64| {
                if (lo..=hi).contains(&v) { Ok(()) } else { Err(format!("{v} out of range {lo}..={hi}")) }
            }
        };
        let mss_max = self.checked(&raw.mss_max, d.mss_max, "synproxy.mss_max", |v| {
            range(MIN_MSS.into(), 65535)(v.into())
        })?;
        let wscale = self.checked(&raw.wscale, d.wscale, "synproxy.wscale", |v| range(0, 14)(v.into()))?;
        let ttl = self.checked(&raw.ttl, d.ttl, "synproxy.ttl", |v| range(1, 255)(v.into()))?;
        let cookie_validity_secs = self.checked(
            &raw.cookie_validity_secs,
            d.cookie_validity_secs,
            "synproxy.cookie_validity_secs",
            range(1, MAX_TIMEOUT_SECS),
        )?;
        let ack_storm_threshold = self.checked(
            &raw.ack_storm_threshold,
            d.ack_storm_threshold,
            "synproxy.ack_storm_threshold",
            |v| range(1, u32::MAX.into())(v.into()),
        )?;
        let rto_floor_ms =
            self.checked(&raw.rto_floor_ms, d.rto_floor_ms, "synproxy.rto_floor_ms", range(1, 60_000))?;
        let rto_initial_ms =
            self.checked(&raw.rto_initial_ms, d.rto_initial_ms, "synproxy.rto_initial_ms", range(1, 60_000))?;
        if rto_initial_ms < rto_floor_ms {
            let (span, key) = match (&raw.rto_initial_ms, &raw.rto_floor_ms) {
                (Some(v), _) => (v.span(), "synproxy.rto_initial_ms"),
                (None, Some(v)) => (v.span(), "synproxy.rto_floor_ms"),
                (None, None) => (0..0, "synproxy"),
            };
            return Err(self.err(
                span,
                key,
                format!("rto_initial_ms {rto_initial_ms} is below rto_floor_ms {rto_floor_ms}"),
            ));
        }
        let retransmit_mode = match &raw.retransmit_mode {
            None => d.retransmit_mode,
            Some(m) => match m.get_ref().as_str() {
                "adaptive" => RetransmitMode::Adaptive,
                "classic" => RetransmitMode::Classic,
                other => {
                    return Err(self.err(
                        m.span(),
                        "synproxy.retransmit_mode",
                        format!("unknown mode {other:?}; use \"adaptive\" or \"classic\""),
                    ));
                }
            },
        };
        Ok(SynproxySettings {
            enabled_by_default: raw.enabled_by_default.unwrap_or(d.enabled_by_default),
            mss_max,
            wscale,
            sack: raw.sack.unwrap_or(d.sack),
            timestamps: raw.timestamps.unwrap_or(d.timestamps),
            ttl,
            cookie_validity_secs,
            rst_on_bad_cookie: raw.rst_on_bad_cookie.unwrap_or(d.rst_on_bad_cookie),
            ack_storm_threshold,
            max_stored_packets: raw.max_stored_packets.unwrap_or(d.max_stored_packets),
            defer_rs_syn: raw.defer_rs_syn.unwrap_or(d.defer_rs_syn),
            rto_floor_ms,
            rto_initial_ms,
            syn_retries: raw.syn_retries.unwrap_or(d.syn_retries),
            retransmit_mode,
        })
    }

    /// Parse `IP:port`, refusing port 0 (no packet can carry it).
    fn endpoint(&self, v: &Spanned<String>, key: &str) -> Result<Endpoint, ConfigFileError> {
        let addr: SocketAddr = v.get_ref().parse().map_err(|_| {
            self.err(
                v.span(),
                key,
                format!("invalid address {:?}: expected IP:port, IPv6 as [addr]:port", v.get_ref()),
            )
        })?;
        if addr.port() == 0 {
            return Err(self.err(v.span(), key, format!("port 0 in {addr}")));
        }
        Ok(addr.into())
    }

    /// One `[[service]]`, and the span of its `vip` to cite in later errors.
    fn service(
        &self,
        i: usize,
        svc: &Spanned<RawService>,
        timeouts: &Timeouts,
        synproxy_default: bool,
    ) -> Result<(ServiceSpec, Range<usize>), ConfigFileError> {
        let raw = svc.get_ref();
        let key = |k: &str| format!("service[{i}].{k}");
        let proto = match &raw.proto {
            None => Proto::Tcp,
            Some(p) => match p.get_ref().as_str() {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                other => {
                    return Err(self.err(
                        p.span(),
                        key("proto"),
                        format!("unknown protocol {other:?}; use tcp or udp"),
                    ));
                }
            },
        };
        let Some(vip_raw) = &raw.vip else {
            return Err(self.err(svc.span(), key("vip"), "missing key vip (the service's IP:port)"));
        };
        let vip = self.endpoint(vip_raw, &key("vip"))?;
        let v4 = vip.addr.is_ipv4();
        let mut config = ServiceConfig::new(proto, vip);
        if let Some(s) = &raw.sched {
            config.sched = SchedKind::from_name(s.get_ref()).ok_or_else(|| {
                let names: Vec<_> = SchedKind::ALL.iter().map(|k| k.name()).collect();
                self.err(
                    s.span(),
                    key("sched"),
                    format!("unknown scheduler {:?}; use one of {}", s.get_ref(), names.join(" ")),
                )
            })?;
        }
        for (j, l) in raw.laddrs.iter().flatten().enumerate() {
            let k = key(&format!("laddrs[{j}]"));
            let addr: IpAddr = l.get_ref().parse().map_err(|_| {
                self.err(l.span(), k.as_str(), format!("invalid IP address {:?}", l.get_ref()))
            })?;
            if addr.is_ipv4() != v4 {
                return Err(self.err(
                    l.span(),
                    k,
                    format!("address family of {addr} does not match the VIP {vip}"),
                ));
            }
            if config.laddrs.contains(&addr) {
                return Err(self.err(l.span(), k, format!("duplicate local address {addr}")));
            }
            config.laddrs.push(addr);
        }
        let tcp_only = |span: Range<usize>, k: &str| {
            if proto == Proto::Tcp {
                Ok(())
            } else {
                Err(self.err(span, key(k), format!("{k} applies to tcp services only")))
            }
        };
        config.synproxy = match &raw.synproxy {
            Some(s) if *s.get_ref() => tcp_only(s.span(), "synproxy").map(|()| true)?,
            Some(_) => false,
            None => synproxy_default && proto == Proto::Tcp,
        };
        if let Some(t) = raw.toa.as_ref().filter(|t| *t.get_ref()) {
            tcp_only(t.span(), "toa")?;
            config.toa = true;
        }
        if let Some(p) = &raw.proxy_protocol {
            let version = ProxyProtocol::from_name(p.get_ref()).ok_or_else(|| {
                let names: Vec<_> = ProxyProtocol::ALL.iter().map(|v| format!("{:?}", v.name())).collect();
                self.err(
                    p.span(),
                    key("proxy_protocol"),
                    format!("unknown PROXY protocol version {:?}; use {}", p.get_ref(), names.join(", ")),
                )
            })?;
            if version != ProxyProtocol::Disabled {
                tcp_only(p.span(), "proxy_protocol")?;
            }
            config.proxy_protocol = version;
        }
        if let Some(t) = &raw.conn_timeout {
            tcp_only(t.span(), "conn_timeout")?;
            let mut own = *timeouts;
            own.set_tcp(TcpState::Established, self.timeout_secs(t, &key("conn_timeout"))?);
            config.timeouts = Some(own);
        }
        if let Some(m) = &raw.mss_clamp {
            tcp_only(m.span(), "mss_clamp")?;
            let mss = *m.get_ref();
            if mss < MIN_MSS {
                return Err(self.err(m.span(), key("mss_clamp"), format!("mss_clamp {mss} below {MIN_MSS}")));
            }
            config.mss_clamp = Some(mss);
        }
        let mut spec = ServiceSpec::new(config);
        for (j, r) in raw.real.iter().enumerate() {
            let k = |f: &str| key(&format!("real[{j}].{f}"));
            let Some(addr_raw) = &r.get_ref().addr else {
                return Err(self.err(r.span(), k("addr"), "missing key addr (the real's IP:port)"));
            };
            let endpoint = self.endpoint(addr_raw, &k("addr"))?;
            if endpoint.addr.is_ipv4() != v4 {
                return Err(self.err(
                    addr_raw.span(),
                    k("addr"),
                    format!("address family of {endpoint} does not match the VIP {vip}"),
                ));
            }
            if let Some(first) = spec.reals.iter().position(|x| x.endpoint == endpoint) {
                return Err(self.err(
                    addr_raw.span(),
                    k("addr"),
                    format!("duplicate real {endpoint} (also service[{i}].real[{first}])"),
                ));
            }
            spec.reals.push(RealConfig { endpoint, weight: r.get_ref().weight.unwrap_or(1) });
        }
        Ok((spec, vip_raw.span()))
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |n| n + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// A TOML or type error from the deserialiser, located in `text`.
fn toml_error(text: &str, e: &toml::de::Error) -> ConfigFileError {
    // The deserialiser's messages may span lines; ours are one line.
    let message = e.message().trim().replace('\n', "; ");
    let mut err = ConfigFileError::new(message);
    if let Some(span) = e.span() {
        let (line, column) = line_column(text, span.start);
        err.line = Some(line);
        err.column = Some(column);
        // The key path comes from a second, key-only read; a syntax error
        // fails it too, and then only the position is given.
        if let Ok(root) = toml::from_str::<Node>(text) {
            let mut path = String::new();
            if root.locate(span.start, &mut path) {
                err.key = Some(path);
            }
        }
    }
    err
}

// ---- key paths: the document as keys and spans only ------------------------

/// A TOML value reduced to its structure, with the spans of keys and values.
enum Node {
    Table(Vec<(Spanned<String>, Spanned<Self>)>),
    Array(Vec<Spanned<Self>>),
    Leaf,
}

impl Node {
    /// Extend `path` with the deepest key whose key or value text holds `offset`.
    fn locate(&self, offset: usize, path: &mut String) -> bool {
        let hit = |span: Range<usize>| span.contains(&offset) || span.start == offset;
        match self {
            Self::Table(entries) => entries.iter().any(|(k, v)| {
                let mut sub =
                    if path.is_empty() { k.get_ref().clone() } else { format!("{path}.{}", k.get_ref()) };
                let found = v.get_ref().locate(offset, &mut sub) || hit(k.span()) || hit(v.span());
                if found {
                    *path = sub;
                }
                found
            }),
            Self::Array(items) => items.iter().enumerate().any(|(i, v)| {
                let mut sub = format!("{path}[{i}]");
                let found = v.get_ref().locate(offset, &mut sub) || hit(v.span());
                if found {
                    *path = sub;
                }
                found
            }),
            Self::Leaf => false,
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Table(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../docs/rvs.example.toml");

    fn ep(s: &str) -> Endpoint {
        s.parse::<SocketAddr>().unwrap().into()
    }

    /// The error for `text`, checked to sit on `line` at `key`.
    fn err_at(text: &str, line: usize, key: &str) -> ConfigFileError {
        let e = Config::parse(text).expect_err(text);
        assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
        e
    }

    const ONE_SERVICE: &str = "\
[[service]]
vip = \"10.0.0.1:80\"
laddrs = [\"10.0.2.1\"]

[[service.real]]
addr = \"10.0.1.1:80\"

[[service.real]]
addr = \"10.0.1.2:80\"
weight = 2
";

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::parse("# nothing\n\n").unwrap(), Config::default());
        let c = Config::default();
        assert_eq!(c.daemon.control_socket, Path::new("/run/rvs/rvs.sock"));
        assert_eq!((c.driver.tun_name.as_str(), c.driver.batch), ("rvs0", 64));
        assert_eq!(c.engine.port_range, (1024, 65535));
        assert_eq!(c.metrics.listen, None);
        assert!(c.model.services.is_empty());
    }

    #[test]
    fn example_parses_and_round_trips() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.model.services.len(), 4);
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9108".parse().unwrap()));
        assert_eq!(c.model.timeouts.tcp(TcpState::Established), Duration::from_secs(900));
        assert_eq!(c.engine.timeouts, c.model.timeouts);
        let https = &c.model.services[&(Proto::Tcp, ep("10.0.0.1:443"))];
        assert_eq!(https.config.sched, SchedKind::Mh);
        assert!(https.config.synproxy);
        let own = https.config.timeouts.unwrap();
        assert_eq!(own.tcp(TcpState::Established), Duration::from_secs(3600));
        assert_eq!(own.tcp(TcpState::FinWait), Duration::from_secs(5));
        assert_eq!(https.reals[0].weight, 1);
        let http = &c.model.services[&(Proto::Tcp, ep("10.0.0.1:80"))];
        assert_eq!(http.config.mss_clamp, Some(1400));
        assert_eq!((http.config.toa, http.config.proxy_protocol), (true, ProxyProtocol::Disabled));
        assert!(!https.config.toa);
        assert_eq!(http.reals.iter().map(|r| r.weight).collect::<Vec<_>>(), [3, 1, 0]);
        assert!(c.model.services.contains_key(&(Proto::Udp, ep("10.0.0.53:53"))));
        assert!(c.model.services.contains_key(&(Proto::Tcp, ep("[2001:db8::1]:80"))));

        let text = c.to_toml();
        assert_eq!(Config::parse(&text).unwrap(), c, "{text}");
    }

    /// The reference's listing of every key holds the defaults and one service.
    #[test]
    fn reference_listing_is_the_defaults() {
        let doc = include_str!("../../../docs/CONFIG.md");
        let block = doc.split("## Every key with its default").nth(1).unwrap();
        let text = block.split("```toml").nth(1).unwrap().split("```").next().unwrap();
        let mut c = Config::parse(text).unwrap();
        assert_eq!(c.model.services.len(), 1);
        c.model.services.clear();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn every_setting_round_trips() {
        let mut c = Config::parse(EXAMPLE).unwrap();
        c.daemon.log_level = "debug \"quoted\"".to_owned();
        c.driver.fault_loss_pct = 2.5;
        c.driver.fault_syn_loss_pct = 5.0;
        c.driver.batch = 1;
        c.driver.cpus = vec![3];
        c.driver.kind = DriverKind::Xdp;
        c.driver.interfaces = vec!["veth0".to_owned(), "eth1".to_owned()];
        c.driver.xdp_mode = XdpMode::Generic;
        c.engine.decrement_ttl = false;
        c.synproxy.retransmit_mode = RetransmitMode::Classic;
        c.synproxy.sack = false;
        c.synproxy.syn_retries = 0;
        c.metrics.listen = Some("[::1]:9108".parse().unwrap());
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
        let d = Config::default();
        assert_eq!(Config::parse(&d.to_toml()).unwrap(), d);
    }

    #[test]
    fn type_and_unknown_key_errors_name_line_and_key() {
        let bad_weight = ONE_SERVICE.replace("weight = 2", "weight = -1");
        let e = err_at(&bad_weight, 10, "service[0].real[1].weight");
        assert_eq!(e.column, Some(10));
        assert!(e.message.contains("invalid value"), "{e}");
        assert!(
            e.to_string().starts_with("line 10, column 10, key service[0].real[1].weight: invalid value")
        );

        err_at(&format!("{ONE_SERVICE}wieght = 3\n"), 11, "service[0].real[1].wieght");
        err_at("[driver]\nbatch = \"many\"\n", 2, "driver.batch");
        err_at("[engine]\nport_range = [1, 2, 3]\n", 2, "engine.port_range");
        err_at("\n[deamon]\n", 2, "deamon");
        err_at("[[service]]\nvip = \"10.0.0.1:80\"\nladdrs = \"10.0.2.1\"\n", 3, "service[0].laddrs");
        let e = err_at("[[service]]\nproto = \"tcp\"\n", 1, "service[0].vip");
        assert!(e.message.contains("missing"), "{e}");
    }

    #[test]
    fn syntax_error_names_line() {
        let e = Config::parse("[driver]\ntun_name = \"rvs0\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn semantic_errors_name_line_and_key() {
        err_at(
            &ONE_SERVICE.replace("vip = \"10.0.0.1:80\"", "vip = \"10.0.0.1:80\"\nsched = \"fastest\""),
            3,
            "service[0].sched",
        );
        err_at(&ONE_SERVICE.replace("10.0.0.1:80", "10.0.0.1:0"), 2, "service[0].vip");
        err_at(&ONE_SERVICE.replace("10.0.1.2:80", "10.0.1.2:0"), 9, "service[0].real[1].addr");
        err_at(&ONE_SERVICE.replace("10.0.0.1:80", "10.0.0.1"), 2, "service[0].vip");
        let e = err_at(&ONE_SERVICE.replace("10.0.1.2:80", "10.0.1.1:80"), 9, "service[0].real[1].addr");
        assert!(e.message.contains("duplicate real"), "{e}");
        let e = err_at(&ONE_SERVICE.replace("10.0.1.2:80", "[2001:db8::2]:80"), 9, "service[0].real[1].addr");
        assert!(e.message.contains("family"), "{e}");
        err_at(&ONE_SERVICE.replace("\"10.0.2.1\"", "\"10.0.2.1\", \"::1\""), 3, "service[0].laddrs[1]");
        err_at(&ONE_SERVICE.replace("\"10.0.2.1\"", "\"10.0.2.1\", \"10.0.2.1\""), 3, "service[0].laddrs[1]");
        let e = err_at(&format!("{ONE_SERVICE}\n[[service]]\nvip = \"10.0.0.1:80\"\n"), 13, "service[1].vip");
        assert!(e.message.contains("duplicate service") && e.message.contains("line 2"), "{e}");
        // The same VIP:port under another protocol is another service.
        Config::parse(&format!("{ONE_SERVICE}\n[[service]]\nproto = \"udp\"\nvip = \"10.0.0.1:80\"\n"))
            .unwrap();
        err_at(&format!("{ONE_SERVICE}\n[[service]]\nproto = \"sctp\"\n"), 13, "service[1].proto");
        err_at(
            "[[service]]\nproto = \"udp\"\nvip = \"10.0.0.1:53\"\nconn_timeout = 5\n",
            4,
            "service[0].conn_timeout",
        );
        err_at("[[service]]\nvip = \"10.0.0.1:80\"\nmss_clamp = 100\n", 3, "service[0].mss_clamp");
        err_at(
            "[[service]]\nvip = \"10.0.0.1:80\"\n[[service.real]]\nweight = 1\n",
            3,
            "service[0].real[0].addr",
        );

        let e = err_at("[engine]\nport_range = [2000, 1000]\n", 2, "engine.port_range");
        assert_eq!(e.column, Some(14));
        err_at("[engine]\nport_range = [0, 1000]\n", 2, "engine.port_range");
        err_at("[engine]\nmax_conns = 10\nprealloc_conns = 11\n", 3, "engine.prealloc_conns");
        err_at("[driver]\n\nfault_loss_pct = 100.5\n", 3, "driver.fault_loss_pct");
        err_at("[driver]\nfault_loss_pct = -1\n", 2, "driver.fault_loss_pct");
        err_at("[driver]\nfault_syn_loss_pct = 101\n", 2, "driver.fault_syn_loss_pct");
        err_at("[driver]\nfault_syn_loss_pct = nan\n", 2, "driver.fault_syn_loss_pct");
        err_at("[driver]\nbatch = 0\n", 2, "driver.batch");
        err_at("[driver]\nbatch = 1025\n", 2, "driver.batch");
        err_at("[driver]\nworkers = 0\n", 2, "driver.workers");
        err_at("[driver]\nkind = \"xdp\"\ninterfaces = [\"eth0\"]\nworkers = 17\n", 4, "driver.workers");
        assert_eq!(Config::parse("[driver]\nworkers = 2\n").unwrap().driver.workers, 2);
        let c = Config::parse("[driver]\nkind = \"xdp\"\ninterfaces = [\"eth0\"]\nworkers = 2\n").unwrap();
        assert_eq!(c.driver.workers, 2);
        let c = Config::parse("[driver]\nworkers = 2\ncpus = [1, 0]\n").unwrap();
        assert_eq!(c.driver.cpus, [1, 0]);
        err_at("[driver]\nworkers = 2\ncpus = [1]\n", 3, "driver.cpus");
        err_at("[driver]\ncpus = [4096]\n", 2, "driver.cpus");
        err_at("[driver]\ntun_name = \"a-very-long-name0\"\n", 2, "driver.tun_name");
        let e = err_at("[driver]\nkind = \"af_xdp\"\n", 2, "driver.kind");
        assert!(e.message.contains("use \"tun\" or \"xdp\""), "{e}");
        let e = err_at("[driver]\nkind = \"xdp\"\n", 2, "driver.kind");
        assert!(e.message.contains("needs at least one entry in driver.interfaces"), "{e}");
        err_at("[driver]\nkind = \"xdp\"\ninterfaces = []\n", 3, "driver.interfaces");
        err_at("[driver]\ninterfaces = [\"eth0\", \"a b\"]\n", 2, "driver.interfaces[1]");
        err_at("[driver]\ninterfaces = [\"eth0\", \"eth0\"]\n", 2, "driver.interfaces[1]");
        err_at("[driver]\nxdp_mode = \"offload\"\n", 2, "driver.xdp_mode");
        assert_eq!(Config::parse("[driver]\nxdp_mode = \"auto\"\n").unwrap().driver.xdp_mode, XdpMode::Auto);
        err_at("[timeouts]\nestablished = 0\n", 2, "timeouts.established");
        err_at("[synproxy]\nwscale = 15\n", 2, "synproxy.wscale");
        err_at("[synproxy]\nrto_floor_ms = 300\n", 2, "synproxy.rto_floor_ms");
        err_at("[synproxy]\nrto_floor_ms = 300\nrto_initial_ms = 250\n", 3, "synproxy.rto_initial_ms");
        err_at(
            "[[service]]\nproto = \"udp\"\nvip = \"10.0.0.1:53\"\nsynproxy = true\n",
            4,
            "service[0].synproxy",
        );
        err_at("[synproxy]\nretransmit_mode = \"eager\"\n", 2, "synproxy.retransmit_mode");
        let udp = "[[service]]\nproto = \"udp\"\nvip = \"10.0.0.1:53\"\n";
        let e = err_at(&format!("{udp}toa = true\n"), 4, "service[0].toa");
        assert!(e.message.contains("tcp services only"), "{e}");
        let e = err_at(&format!("{udp}proxy_protocol = \"v1\"\n"), 4, "service[0].proxy_protocol");
        assert!(e.message.contains("tcp services only"), "{e}");
        let e = err_at(
            "[[service]]\nvip = \"10.0.0.1:80\"\nproxy_protocol = \"v3\"\n",
            3,
            "service[0].proxy_protocol",
        );
        assert_eq!(e.column, Some(18));
        assert!(e.message.contains("\"disable\", \"v1\", \"v2\""), "{e}");
        err_at("[[service]]\nvip = \"10.0.0.1:80\"\ntoa = \"yes\"\n", 3, "service[0].toa");
        err_at("[[service]]\nvip = \"10.0.0.1:80\"\nproxy_protocol = 2\n", 3, "service[0].proxy_protocol");
        err_at("[metrics]\nlisten = \"localhost:9108\"\n", 2, "metrics.listen");
    }

    #[test]
    fn synproxy_default_applies_to_tcp_services_without_the_key() {
        let text = "[synproxy]\nenabled_by_default = true\n\
            [[service]]\nvip = \"10.0.0.1:80\"\n\
            [[service]]\nvip = \"10.0.0.1:81\"\nsynproxy = false\n\
            [[service]]\nproto = \"udp\"\nvip = \"10.0.0.1:53\"\n";
        let c = Config::parse(text).unwrap();
        let on: Vec<_> = c.model.services.values().map(|s| s.config.synproxy).collect();
        assert_eq!(on, [true, false, false]);
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn client_address_keys_are_per_service() {
        let text = "[[service]]\nvip = \"10.0.0.1:80\"\ntoa = true\nproxy_protocol = \"v2\"\n\
            [[service]]\nvip = \"10.0.0.1:81\"\nproxy_protocol = \"v1\"\n\
            [[service]]\nvip = \"10.0.0.1:82\"\ntoa = false\nproxy_protocol = \"disable\"\n\
            [[service]]\nproto = \"udp\"\nvip = \"10.0.0.1:53\"\ntoa = false\nproxy_protocol = \"disable\"\n";
        let c = Config::parse(text).unwrap();
        let got: Vec<_> =
            c.model.services.values().map(|s| (s.config.toa, s.config.proxy_protocol)).collect();
        assert_eq!(
            got,
            [
                (true, ProxyProtocol::V2),
                (false, ProxyProtocol::V1),
                (false, ProxyProtocol::Disabled),
                (false, ProxyProtocol::Disabled)
            ]
        );
        let text = c.to_toml();
        assert!(text.contains("toa = true\nproxy_protocol = \"v2\"\n"), "{text}");
        assert_eq!(Config::parse(&text).unwrap(), c, "{text}");
    }

    #[test]
    fn conn_timeout_replaces_established_only() {
        let text = "[timeouts]\nfin_wait = 7\n[[service]]\nvip = \"10.0.0.1:80\"\nconn_timeout = 600\n";
        let c = Config::parse(text).unwrap();
        let own = c.model.services.values().next().unwrap().config.timeouts.unwrap();
        let mut want = c.model.timeouts;
        want.set_tcp(TcpState::Established, Duration::from_secs(600));
        assert_eq!(own, want);
        assert_eq!(own.tcp(TcpState::FinWait), Duration::from_secs(7));
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("rvs-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rvs.toml");
        std::fs::write(&path, "[driver]\nbatch = 0\n").unwrap();
        let e = Config::load(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: line 2, column 9, key driver.batch: batch 0 out of range 1..=1024", path.display())
        );
        std::fs::write(&path, ONE_SERVICE).unwrap();
        assert_eq!(Config::load(&path).unwrap().model.services.len(), 1);
        let missing = Config::load(&dir.join("none.toml")).unwrap_err();
        assert!(missing.to_string().contains("none.toml: cannot read"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reload_may_change_services_but_not_the_driver() {
        let old = Config::parse(EXAMPLE).unwrap();
        let mut new = Config::parse(ONE_SERVICE).unwrap();
        new.daemon = old.daemon.clone();
        new.driver = old.driver.clone();
        new.engine = EngineConfig { timeouts: new.engine.timeouts, ..old.engine.clone() };
        new.metrics = old.metrics;
        new.synproxy.enabled_by_default = true;
        new.daemon.log_level = "debug".to_owned();
        assert_eq!(old.check_reloadable(&new), Ok(()));

        new.driver.tun_name = "rvs1".to_owned();
        let e = old.check_reloadable(&new).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("driver.tun_name"));
        assert!(e.to_string().starts_with("key driver.tun_name: cannot change on reload"), "{e}");

        let mut new = old.clone();
        new.engine.port_range = (2000, 3000);
        assert_eq!(old.check_reloadable(&new).unwrap_err().key.as_deref(), Some("engine.port_range"));
        let mut new = old.clone();
        new.metrics.listen = None;
        assert_eq!(old.check_reloadable(&new).unwrap_err().key.as_deref(), Some("metrics.listen"));
        let mut new = old.clone();
        new.driver.fault_syn_loss_pct = 5.0;
        assert_eq!(old.check_reloadable(&new).unwrap_err().key.as_deref(), Some("driver.fault_syn_loss_pct"));
    }

    #[test]
    fn syn_loss_is_its_own_key_beside_all_packet_loss() {
        let c = Config::parse("[driver]\nfault_syn_loss_pct = 5\n").unwrap();
        assert_eq!((c.driver.fault_loss_pct, c.driver.fault_syn_loss_pct), (0.0, 5.0));
        let c = Config::parse("[driver]\nfault_loss_pct = 1.5\nfault_syn_loss_pct = 100.0\n").unwrap();
        assert_eq!((c.driver.fault_loss_pct, c.driver.fault_syn_loss_pct), (1.5, 100.0));
        assert_eq!(Config::default().driver.fault_syn_loss_pct, 0.0);
    }
}
