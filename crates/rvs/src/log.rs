//! Structured logs on stderr, one logfmt line per event:
//! `ts=2026-01-01T00:00:00.000Z level=info msg="..." key=value`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};

/// Severity, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

static MIN_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

impl Level {
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "debug" => Self::Debug,
            "info" => Self::Info,
            "warn" => Self::Warn,
            "error" => Self::Error,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// Log only events at `level` or above.
pub(crate) fn set_level(level: Level) {
    MIN_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Write one event.
pub(crate) fn event(level: Level, msg: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    if (level as u8) < MIN_LEVEL.load(Ordering::Relaxed) {
        return;
    }
    let mut line = String::with_capacity(128);
    let _ = write!(line, "ts={} level={} msg={}", timestamp(), level.name(), quote(msg));
    for (k, v) in fields {
        let _ = write!(line, " {k}={}", quote(&v.to_string()));
    }
    line.push('\n');
    eprint!("{line}");
}

fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '=') {
        s.to_owned()
    } else {
        format!("{s:?}")
    }
}

/// UTC wall-clock time, RFC 3339 with milliseconds.
fn timestamp() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

macro_rules! info {
    ($msg:expr $(, $k:ident = $v:expr)* $(,)?) => {
        $crate::log::event($crate::log::Level::Info, $msg, &[$((stringify!($k), &$v)),*])
    };
}
macro_rules! warning {
    ($msg:expr $(, $k:ident = $v:expr)* $(,)?) => {
        $crate::log::event($crate::log::Level::Warn, $msg, &[$((stringify!($k), &$v)),*])
    };
}
macro_rules! error {
    ($msg:expr $(, $k:ident = $v:expr)* $(,)?) => {
        $crate::log::event($crate::log::Level::Error, $msg, &[$((stringify!($k), &$v)),*])
    };
}
pub(crate) use {error, info, warning};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("two words"), "\"two words\"");
        assert_eq!(quote(""), "\"\"");
    }

    #[test]
    fn timestamp_shape() {
        let t = timestamp();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
