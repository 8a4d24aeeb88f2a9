//! Messages on the daemon's control socket: one JSON object per line each way.
//!
//! `rvs adm` sends a [`Request`] and reads one [`Response`]; JSON keeps the
//! messages readable with `socat` and lets other tools speak it.

use serde::{Deserialize, Serialize};

/// What a client asks the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// An `rvs adm` command line, without the program name, and the client's
    /// standard input (read by `-R`; empty otherwise).
    Adm {
        /// Arguments.
        argv: Vec<String>,
        /// Input for `-R`.
        stdin: String,
    },
    /// Re-read the config file and apply it whole or not at all.
    Reload,
    /// The daemon's version.
    Version,
}

/// The daemon's answer: exit code, stdout, stderr, as the client prints them.
pub type Response = crate::plane::Reply;

impl Request {
    /// The request as one line of JSON, newline included.
    pub fn to_line(&self) -> String {
        to_line(self)
    }

    /// A request from one line of JSON.
    pub fn from_line(line: &str) -> Result<Self, String> {
        serde_json::from_str(line.trim_end()).map_err(|e| format!("bad request: {e}"))
    }
}

impl Response {
    /// The response as one line of JSON, newline included.
    pub fn to_line(&self) -> String {
        to_line(self)
    }

    /// A response from one line of JSON.
    pub fn from_line(line: &str) -> Result<Self, String> {
        serde_json::from_str(line.trim_end()).map_err(|e| format!("bad response: {e}"))
    }
}

fn to_line<T: Serialize>(value: &T) -> String {
    // Plain data with string keys: encoding cannot fail, but no panic either way.
    let mut line = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_single_lines_that_round_trip() {
        let requests = [
            Request::Adm { argv: vec!["-R".into()], stdin: "-C\n-A -t 10.0.0.1:80\n".into() },
            Request::Reload,
            Request::Version,
        ];
        for r in requests {
            let line = r.to_line();
            assert_eq!(line.matches('\n').count(), 1);
            assert!(line.ends_with('\n'));
            assert_eq!(Request::from_line(&line), Ok(r));
        }
        let resp = Response { code: 2, stdout: "a\nb\n".into(), stderr: "bad \"x\"\n".into() };
        let line = resp.to_line();
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(Response::from_line(&line), Ok(resp));
        assert_eq!(Request::Version.to_line(), "\"Version\"\n");
        assert!(Request::from_line("{\"Adm\":{}}").unwrap_err().starts_with("bad request"));
        assert!(Request::from_line("\u{0}").is_err());
    }
}
