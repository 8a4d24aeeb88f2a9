//! The daemon's config file (TOML).
//!
//! Every key is optional except a service's `vip` and a real's `addr`; an
//! empty file is a valid config with no services. Unknown keys are errors, so
//! a misspelt key never silently falls back to its default. Every error names
//! the line, column and key path (`service[0].real[1].weight`), both for
//! TOML and type errors and for the checks made after reading, which end with
//! the engine's own validation ([`Model::validate`]).
//!
//! Each key is written once: a field of a settings struct here (with its
//! default in the struct's `Default`), or of the file's own form in
//! `file.rs` where the engine's types differ from the file's. Serde reads and
//! writes those same structs ([`Config::parse`], [`Config::to_toml`]);
//! `check.rs` holds the checks serde cannot make. The operator's reference,
//! with every key and its default, is `docs/CONFIG.md` (a test holds its
//! listing to the defaults and to the keys written here).

mod check;
mod file;
mod locate;
#[cfg(test)]
mod tests;

use core::fmt;
use core::time::Duration;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rvs_core::EngineConfig;
use serde::{Deserialize, Serialize};

use self::file::{File, by_name};
use crate::health::HealthSettings;
use crate::model::Model;

pub use rvs_core::RetransmitMode;

/// Largest `[driver] fast_path_after`: as far as the engine counts a
/// connection's packets.
pub const MAX_FAST_PATH_AFTER: u32 = rvs_core::fast_path::MAX_AFTER;

/// Most data-path workers: the XDP program keeps this many socket slots per interface.
pub const MAX_WORKERS: usize = 16;

/// CPUs a worker can be pinned to: the size of the kernel's `cpu_set_t`.
pub const MAX_CPUS: usize = 1024;

/// Longest idle timeout or quarantine accepted: longer is surely a typo, and
/// the bound keeps deadline arithmetic far from overflow.
pub const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

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
    /// `[health]`: health checking's defaults and passive detection.
    pub health: HealthSettings,
    /// `[timeouts]` and `[[service]]`: the desired state a reload may change.
    pub model: Model,
}

/// `[daemon]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonSettings {
    /// Unix socket `rvs adm` connects to.
    #[serde(serialize_with = "file::lossy_path")]
    pub control_socket: PathBuf,
    /// Log filter, passed to the logger as written.
    pub log_level: String,
    /// The engines' secret (SYN cookies, ISNs and TSvals toward reals, flow
    /// hashing), made with random bytes when the file is missing. Kept
    /// across restarts, and shared by the balancers of a pair, so ISNs and
    /// TSvals toward a real keep growing on every reused (LIP, port, real)
    /// and the real's TIME_WAIT accepts the new SYN; cookies a peer issued
    /// stay valid.
    #[serde(serialize_with = "file::lossy_path")]
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

impl DriverKind {
    /// The name in the config file.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tun => "tun",
            Self::Xdp => "xdp",
        }
    }
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

/// `[driver]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriverSettings {
    /// Packet I/O kind.
    #[serde(with = "by_name")]
    pub kind: DriverKind,
    /// Name of the TUN device (with `xdp`, the kernel still routes VIPs and
    /// LIPs to it, so the host's own traffic and what XDP passes reach rvs).
    pub tun_name: String,
    /// Interfaces the xdp driver attaches to and sends on.
    pub interfaces: Vec<String>,
    /// How the xdp driver attaches its program.
    #[serde(with = "by_name")]
    pub xdp_mode: XdpMode,
    /// With the xdp driver, established connections move into the XDP
    /// program, which forwards their packets without the engine; `false`
    /// is the data path without it, exactly.
    pub fast_path: bool,
    /// Packets a connection forwards through the engine before it moves to
    /// the fast path (0: as soon as it is established).
    pub fast_path_after: u32,
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
            fast_path: true,
            fast_path_after: 0,
            batch: 64,
            workers: 1,
            cpus: Vec::new(),
            fault_loss_pct: 0.0,
            fault_syn_loss_pct: 0.0,
        }
    }
}

/// `[synproxy]` settings: engine-wide SYNProxy behaviour, and whether TCP
/// services have it on unless they say otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    #[serde(with = "by_name")]
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

/// `[metrics]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Address of the metrics HTTP endpoint; none unless set.
    #[serde(with = "file::socket_addr", skip_serializing_if = "Option::is_none")]
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

/// Keys a reload applies; every other key is fixed when the daemon starts.
const RELOADABLE: [&str; 4] = ["service", "timeouts", "daemon.log_level", "synproxy.enabled_by_default"];

impl Config {
    /// Read a config from TOML text; empty text is all defaults and no services.
    pub fn parse(text: &str) -> Result<Self, ConfigFileError> {
        let file: File = toml::from_str(text).map_err(|e| locate::toml_error(text, &e))?;
        check::Builder::new(text).build(file)
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
    /// timeouts, SYNProxy's default for services and the log level. The
    /// driver, the engine, the SYNProxy settings, the control socket and the
    /// metrics address are fixed when the daemon starts; `Err` names the
    /// first key that differs.
    pub fn check_reloadable(&self, new: &Self) -> Result<(), ConfigFileError> {
        let changed = locate::first_difference(&self.fixed_at_start(), &new.fixed_at_start(), "")
            // Not in the file, but fixed all the same; timeouts reload through the model.
            .or_else(|| {
                (EngineConfig { timeouts: new.engine.timeouts, ..self.engine.clone() } != new.engine)
                    .then(|| "engine".to_owned())
            });
        match changed {
            Some(key) => {
                Err(ConfigFileError::at_key(key, "cannot change on reload; restart the daemon to apply it"))
            }
            None => Ok(()),
        }
    }

    /// The file's keys other than [`RELOADABLE`]'s.
    fn fixed_at_start(&self) -> toml::Table {
        let mut table = toml::Table::try_from(File::from(self)).unwrap_or_default();
        for key in RELOADABLE {
            match key.split_once('.') {
                Some((section, key)) => {
                    table.get_mut(section).and_then(toml::Value::as_table_mut).and_then(|t| t.remove(key))
                }
                None => table.remove(key),
            };
        }
        table
    }

    /// Render as TOML text that [`Config::parse`] reads back to an equal
    /// config, every key written out (for `rvs lab`'s built-in config and the
    /// docs).
    ///
    /// Durations are written in whole seconds. A service's timeouts are
    /// written as its `conn_timeout` (ESTABLISHED) alone, the form the file
    /// has for them; other per-service timeouts set in code do not survive.
    pub fn to_toml(&self) -> String {
        // Every value has a TOML form (paths are written lossily), so this cannot fail.
        toml::to_string(&File::from(self)).unwrap_or_default()
    }
}
