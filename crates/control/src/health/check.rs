//! What an active check does, as the operator writes it and as a prober runs it.
//!
//! One text form serves the config file (`check = "..."`), `rvs adm
//! --check` and `-S`: `KIND[,KEY=VALUE]...[:ARGUMENT]`. Keys and kind never
//! hold a `:`, so everything after the first one is the argument, which may
//! hold commas and colons (an HTTP path, a command line, a UDP payload).
//!
//! - `none`: no active check (passive detection still watches the real).
//! - `tcp`: a connect.
//! - `http:/path`: `GET /path` over HTTP/1.1 with a `Host` header; keys
//!   `status=LOW-HIGH` (default `200-399`), `body=TEXT` (the body must hold it),
//!   `host=NAME` (default the real's address).
//! - `udp:PAYLOAD`: send the payload; any reply is up, or with `expect=TEXT`
//!   a reply that holds it.
//! - `exec:COMMAND`: run `COMMAND` with `sh -c`, with `RVS_REAL_ADDR` and
//!   `RVS_REAL_PORT` in its environment; exit status 0 is up.
//!
//! Keys every kind takes: `port=N` (probe this port instead of the real's),
//! `interval=MS`, `timeout=MS`, `rise=N`, `fall=N`; an unset one takes
//! `[health]`'s value.

use core::fmt;
use core::time::Duration;
use std::net::SocketAddr;

use super::HealthSettings;

/// What a check sends and what counts as up.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckKind {
    /// No active check.
    None,
    /// A TCP connect.
    Tcp,
    /// An HTTP/1.1 GET.
    Http {
        /// Request path, starting with `/`.
        path: String,
        /// Status codes that count as up, inclusive.
        status: (u16, u16),
        /// Text the body must hold, if any.
        body: Option<String>,
        /// `Host` header; the real's address when unset.
        host: Option<String>,
    },
    /// A UDP datagram and its reply.
    Udp {
        /// What is sent.
        payload: String,
        /// Text the reply must hold; any reply when unset.
        expect: Option<String>,
    },
    /// A command; exit status 0 is up.
    Exec {
        /// Run with `sh -c`.
        command: String,
    },
}

/// A check as written: its kind and the timing it overrides.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckSpec {
    /// What the check does.
    pub kind: CheckKind,
    /// Probe this port instead of the real's.
    pub port: Option<u16>,
    /// Milliseconds between probes.
    pub interval_ms: Option<u64>,
    /// Milliseconds a probe may take.
    pub timeout_ms: Option<u64>,
    /// Successes in a row that bring a down real up.
    pub rise: Option<u32>,
    /// Failures in a row that take an up real down.
    pub fall: Option<u32>,
}

impl CheckSpec {
    /// No active check.
    pub const NONE: Self = Self {
        kind: CheckKind::None,
        port: None,
        interval_ms: None,
        timeout_ms: None,
        rise: None,
        fall: None,
    };

    /// Whether this is `none`.
    pub fn is_none(&self) -> bool {
        self.kind == CheckKind::None
    }

    /// The probe a real at `real` runs for this check, unset timing taken
    /// from `defaults`; `None` for `none`.
    pub fn probe(&self, real: SocketAddr, defaults: &HealthSettings) -> Option<Probe> {
        if self.is_none() {
            return None;
        }
        let interval = Duration::from_millis(self.interval_ms.unwrap_or(defaults.interval_ms));
        let timeout = Duration::from_millis(self.timeout_ms.unwrap_or(defaults.timeout_ms)).min(interval);
        Some(Probe {
            target: SocketAddr::new(real.ip(), self.port.unwrap_or(real.port())),
            kind: self.kind.clone(),
            interval,
            timeout,
            rise: self.rise.unwrap_or(defaults.rise).max(1),
            fall: self.fall.unwrap_or(defaults.fall).max(1),
        })
    }
}

impl Default for CheckSpec {
    fn default() -> Self {
        Self::NONE
    }
}

/// One prober's whole job: every service whose real resolves to the same
/// `Probe` shares its one prober.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Probe {
    /// Where the probe goes.
    pub target: SocketAddr,
    /// What it sends and expects.
    pub kind: CheckKind,
    /// Time between probes (each spread by `[health] jitter_pct`).
    pub interval: Duration,
    /// Longest a probe may take; at most `interval`.
    pub timeout: Duration,
    /// Successes in a row that bring a down real up.
    pub rise: u32,
    /// Failures in a row that take an up real down.
    pub fall: u32,
}

impl CheckKind {
    /// The kind's name in the text form, listings and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Tcp => "tcp",
            Self::Http { .. } => "http",
            Self::Udp { .. } => "udp",
            Self::Exec { .. } => "exec",
        }
    }
}

impl fmt::Display for Probe {
    /// `KIND target` with the kind's argument, for logs and listings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.name(), self.target)?;
        match &self.kind {
            CheckKind::Http { path, .. } => f.write_str(path),
            CheckKind::Exec { command } => write!(f, " {command:?}"),
            CheckKind::None | CheckKind::Tcp | CheckKind::Udp { .. } => Ok(()),
        }
    }
}

impl fmt::Display for CheckSpec {
    /// The text form the module documents, which [`str::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arg = match &self.kind {
            CheckKind::None | CheckKind::Tcp => None,
            CheckKind::Http { path, .. } => Some(path.as_str()),
            CheckKind::Udp { payload, .. } => Some(payload.as_str()),
            CheckKind::Exec { command } => Some(command.as_str()),
        };
        f.write_str(self.kind.name())?;
        if let CheckKind::Http { status, body, host, .. } = &self.kind {
            if *status != DEFAULT_STATUS {
                write!(f, ",status={}-{}", status.0, status.1)?;
            }
            if let Some(b) = body {
                write!(f, ",body={b}")?;
            }
            if let Some(h) = host {
                write!(f, ",host={h}")?;
            }
        }
        if let CheckKind::Udp { expect: Some(e), .. } = &self.kind {
            write!(f, ",expect={e}")?;
        }
        let numbers = [
            ("port", self.port.map(u64::from)),
            ("interval", self.interval_ms),
            ("timeout", self.timeout_ms),
            ("rise", self.rise.map(u64::from)),
            ("fall", self.fall.map(u64::from)),
        ];
        for (key, value) in numbers {
            if let Some(v) = value {
                write!(f, ",{key}={v}")?;
            }
        }
        match arg {
            Some(a) => write!(f, ":{a}"),
            None => Ok(()),
        }
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// The real passed.
    pub up: bool,
    /// From the probe's start to its verdict.
    pub latency: Duration,
    /// How long the TCP connect took, when the probe made one that
    /// succeeded: an RTT sample toward the real before any client's.
    pub connect: Option<Duration>,
    /// What was seen, for listings and logs: `"HTTP 200"`, `"connection
    /// refused"`, `"timed out after 1000 ms"`, `"exit status 1"`.
    pub detail: String,
}

/// HTTP status codes that count as up unless `status=` says otherwise.
pub const DEFAULT_STATUS: (u16, u16) = (200, 399);

/// Longest interval or timeout a check accepts: an hour.
const MAX_MS: u64 = 3_600_000;

impl core::str::FromStr for CheckSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (head, arg) = match text.split_once(':') {
            Some((h, a)) => (h, Some(a)),
            None => (text, None),
        };
        let mut parts = head.split(',');
        let name = parts.next().unwrap_or_default();
        let mut spec = Self::NONE;
        let (mut status, mut body, mut host, mut expect) = (None, None, None, None);
        for part in parts {
            let (key, value) =
                part.split_once('=').ok_or_else(|| format!("check {text:?}: {part:?} is not KEY=VALUE"))?;
            let number = |max: u64| -> Result<u64, String> {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|v| (1..=max).contains(v))
                    .ok_or_else(|| format!("check {text:?}: {key} must be a number in 1..={max}"))
            };
            match key {
                "port" => spec.port = Some(number(65535)? as u16),
                "interval" => spec.interval_ms = Some(number(MAX_MS)?),
                "timeout" => spec.timeout_ms = Some(number(MAX_MS)?),
                "rise" => spec.rise = Some(number(1000)? as u32),
                "fall" => spec.fall = Some(number(1000)? as u32),
                "status" if name == "http" => status = Some(parse_status(value, text)?),
                "body" if name == "http" => body = Some(value.to_owned()),
                "host" if name == "http" => host = Some(value.to_owned()),
                "expect" if name == "udp" => expect = Some(value.to_owned()),
                _ => return Err(format!("check {text:?}: unknown key {key:?} for {name}")),
            }
        }
        let need_arg = |what: &str| -> Result<String, String> {
            arg.filter(|a| !a.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| format!("check {text:?}: {name} needs {what} after ':'"))
        };
        spec.kind = match name {
            "none" | "tcp" if arg.is_some() => {
                return Err(format!("check {text:?}: {name} takes no argument"));
            }
            "none" => CheckKind::None,
            "tcp" => CheckKind::Tcp,
            "http" => {
                let path = need_arg("a path")?;
                if !path.starts_with('/') || path.contains(char::is_whitespace) {
                    return Err(format!("check {text:?}: the path must start with '/' and hold no space"));
                }
                CheckKind::Http { path, status: status.unwrap_or(DEFAULT_STATUS), body, host }
            }
            "udp" => CheckKind::Udp { payload: need_arg("a payload")?, expect },
            "exec" => CheckKind::Exec { command: need_arg("a command")? },
            other => return Err(format!("unknown check {other:?}; use none, tcp, http, udp or exec")),
        };
        if spec.is_none() && *head != *"none" {
            return Err(format!("check {text:?}: none takes no keys"));
        }
        Ok(spec)
    }
}

fn parse_status(value: &str, text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("check {text:?}: status must be CODE or LOW-HIGH within 100-599");
    let (lo, hi) = value.split_once('-').unwrap_or((value, value));
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if !(100..=599).contains(&lo) || !(lo..=599).contains(&hi) {
        return Err(bad());
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        for text in [
            "none",
            "tcp",
            "tcp,port=8080,interval=500,timeout=200,rise=1,fall=5",
            "http:/healthz",
            "http,status=200-204,body=ok,host=example.org:/a:b,c",
            "udp,expect=pong:ping",
            "exec,timeout=3000:test -n \"$RVS_REAL_ADDR\", echo ok",
        ] {
            let spec: CheckSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        let spec: CheckSpec = "http,status=204:/x".parse().unwrap();
        assert!(matches!(spec.kind, CheckKind::Http { status: (204, 204), .. }));
    }

    #[test]
    fn bad_checks_are_named() {
        for (text, says) in [
            ("", "unknown check"),
            ("ping", "unknown check \"ping\""),
            ("tcp:80", "takes no argument"),
            ("http", "needs a path"),
            ("http:healthz", "must start with '/'"),
            ("http,status=99-200:/", "status"),
            ("tcp,interval=0", "interval must be"),
            ("tcp,body=x", "unknown key \"body\""),
            ("udp", "needs a payload"),
            ("exec:", "needs a command"),
            ("none,rise=2", "none takes no keys"),
            ("tcp,rise", "not KEY=VALUE"),
        ] {
            let err = text.parse::<CheckSpec>().unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn probes_take_defaults_and_share_by_target() {
        let d = HealthSettings::default();
        let real: SocketAddr = "10.0.1.1:80".parse().unwrap();
        let tcp: CheckSpec = "tcp".parse().unwrap();
        let p = tcp.probe(real, &d).unwrap();
        assert_eq!((p.target, p.interval, p.rise, p.fall), (real, Duration::from_secs(1), d.rise, d.fall));
        let on_port: CheckSpec = "tcp,port=81".parse().unwrap();
        assert_eq!(on_port.probe(real, &d).unwrap().target.port(), 81);
        assert_eq!(tcp.probe(real, &d), "tcp,interval=1000".parse::<CheckSpec>().unwrap().probe(real, &d));
        assert!(CheckSpec::NONE.probe(real, &d).is_none());
    }
}
