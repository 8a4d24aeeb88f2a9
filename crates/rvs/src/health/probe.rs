//! One probe of each kind, with blocking std sockets whose every wait is cut
//! to what is left of the probe's timeout, so a probe never outlives it
//! (connect and I/O together). Nothing here panics: every failure is a down
//! outcome whose detail says what was seen.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use rvs_control::health::{CheckKind, Probe, ProbeOutcome};

use super::prober::Stop;
use super::{after, exec};

/// Most of a response an HTTP probe reads, head and body.
const MAX_RESPONSE: usize = 64 * 1024;
/// Largest UDP reply looked at; the rest of a bigger one is cut off.
const MAX_DATAGRAM: usize = 8 * 1024;

/// What one probe found, before its latency is taken.
#[derive(Debug)]
pub(super) struct Verdict {
    pub(super) up: bool,
    pub(super) connect: Option<Duration>,
    pub(super) detail: String,
}

impl Verdict {
    pub(super) fn up(detail: String) -> Self {
        Self { up: true, connect: None, detail }
    }

    pub(super) fn down(detail: String) -> Self {
        Self { up: false, connect: None, detail }
    }
}

/// The time a probe has: `timeout` from its start.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline {
    end: Instant,
    timeout: Duration,
}

impl Deadline {
    fn new(start: Instant, timeout: Duration) -> Self {
        Self { end: after(start, timeout), timeout }
    }

    /// What is left, or `None` once it has run out.
    pub(super) fn left(self) -> Option<Duration> {
        Some(self.end.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
    }

    /// The detail of a probe that ran out of time.
    pub(super) fn expired(self) -> String {
        format!("timed out after {} ms", self.timeout.as_millis())
    }

    /// `e` as a detail, a timeout said the same way whichever call saw it.
    fn explain(self, e: &io::Error) -> String {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => self.expired(),
            io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            _ => {
                let text = e.to_string();
                let text = text.split(" (os error").next().unwrap_or_default();
                let mut chars = text.chars();
                chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
            }
        }
    }
}

/// Runs `probe` once, within its timeout.
pub(super) fn run(probe: &Probe, stop: &Stop) -> ProbeOutcome {
    let start = Instant::now();
    let deadline = Deadline::new(start, probe.timeout);
    let target = probe.target;
    let verdict = match &probe.kind {
        CheckKind::None => Verdict::up("no check".to_owned()),
        CheckKind::Tcp => tcp(target, deadline),
        CheckKind::Http { path, status, body, host } => {
            let host = host.clone().unwrap_or_else(|| default_host(target));
            http(target, deadline, &request(path, &host), *status, body.as_deref())
        }
        CheckKind::Udp { payload, expect } => udp(target, deadline, payload.as_bytes(), expect.as_deref()),
        CheckKind::Exec { command } => exec::run(command, target, deadline, stop),
    };
    ProbeOutcome {
        up: verdict.up,
        latency: start.elapsed(),
        connect: verdict.connect,
        detail: verdict.detail,
    }
}

/// A TCP connect, closed at once (with a FIN: the real sees an ordinary
/// short connection, not an error).
fn tcp(target: SocketAddr, deadline: Deadline) -> Verdict {
    match connect(target, deadline) {
        Ok((_, took)) => Verdict { up: true, connect: Some(took), detail: "connected".to_owned() },
        Err(detail) => Verdict::down(detail),
    }
}

fn connect(target: SocketAddr, deadline: Deadline) -> Result<(TcpStream, Duration), String> {
    let start = Instant::now();
    let left = deadline.left().ok_or_else(|| deadline.expired())?;
    let stream = TcpStream::connect_timeout(&target, left).map_err(|e| deadline.explain(&e))?;
    Ok((stream, start.elapsed()))
}

/// The `Host` header for a real without a configured one: its address, and
/// its port unless 80.
fn default_host(target: SocketAddr) -> String {
    match (target.ip(), target.port()) {
        (IpAddr::V4(ip), 80) => ip.to_string(),
        (IpAddr::V6(ip), 80) => format!("[{ip}]"),
        _ => target.to_string(),
    }
}

fn request(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: rvs-health\r\nConnection: close\r\n\r\n")
}

/// `GET`: up when the status is within `status` and, with `body`, the body
/// holds it (looked for in the raw body, so a chunked body's framing can
/// split a match; checks use short texts).
fn http(
    target: SocketAddr,
    deadline: Deadline,
    request: &str,
    status: (u16, u16),
    body: Option<&str>,
) -> Verdict {
    let (mut stream, took) = match connect(target, deadline) {
        Ok(c) => c,
        Err(detail) => return Verdict::down(detail),
    };
    let (up, detail) = match exchange(&mut stream, deadline, request, status, body) {
        Ok(seen) => seen,
        Err(detail) => (false, detail),
    };
    Verdict { up, connect: Some(took), detail }
}

/// Sends the request and reads until the verdict is known.
fn exchange(
    stream: &mut TcpStream,
    deadline: Deadline,
    request: &str,
    status: (u16, u16),
    body: Option<&str>,
) -> Result<(bool, String), String> {
    let io = |e: io::Error| deadline.explain(&e);
    stream.set_write_timeout(Some(deadline.left().ok_or_else(|| deadline.expired())?)).map_err(io)?;
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::with_capacity(4096);
    let mut code = None;
    loop {
        let complete = match read_some(stream, deadline, &mut response) {
            Ok(n) => n == 0 || response.len() >= MAX_RESPONSE,
            Err(e) => {
                let said = deadline.explain(&e);
                return Err(match code {
                    Some(c) => format!("HTTP {c}, then {said}"),
                    None => said,
                });
            }
        };
        if code.is_none() {
            code = status_code(&response)?;
        }
        let Some(c) = code else {
            if complete {
                return Err(if response.is_empty() {
                    "closed without a response"
                } else {
                    "no HTTP status line"
                }
                .to_owned());
            }
            continue;
        };
        if !(status.0..=status.1).contains(&c) {
            return Ok((false, format!("HTTP {c}")));
        }
        let Some(text) = body else { return Ok((true, format!("HTTP {c}"))) };
        let found = head_end(&response).is_some_and(|at| contains(&response[at..], text.as_bytes()));
        if found {
            return Ok((true, format!("HTTP {c}")));
        }
        if complete {
            return Ok((false, format!("HTTP {c} without {text:?} in the body")));
        }
    }
}

/// Reads what is there into `buf`, up to [`MAX_RESPONSE`] in all; 0 at the end.
fn read_some(stream: &mut TcpStream, deadline: Deadline, buf: &mut Vec<u8>) -> io::Result<usize> {
    let left = deadline.left().ok_or(io::ErrorKind::TimedOut)?;
    stream.set_read_timeout(Some(left))?;
    let mut chunk = [0u8; 4096];
    let room = MAX_RESPONSE.saturating_sub(buf.len()).min(chunk.len());
    let n = stream.read(&mut chunk[..room])?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// The status code once the status line is complete; an error if the
/// response is not HTTP.
fn status_code(response: &[u8]) -> Result<Option<u16>, String> {
    let Some(end) = response.windows(2).position(|w| w == b"\r\n") else {
        return if response.len() > 4096 { Err("no HTTP status line".to_owned()) } else { Ok(None) };
    };
    let line = String::from_utf8_lossy(&response[..end]);
    let mut words = line.split(' ');
    let version = words.next().unwrap_or_default();
    let code = words.next().unwrap_or_default();
    match code.parse::<u16>() {
        Ok(c) if version.starts_with("HTTP/") && code.len() == 3 => Ok(Some(c)),
        _ => Err(format!("not an HTTP status line: {:?}", line.chars().take(64).collect::<String>())),
    }
}

/// Where the body starts.
fn head_end(response: &[u8]) -> Option<usize> {
    response.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// One datagram out, one reply back: up on any reply, or with `expect` on
/// one that holds it. An ICMP port unreachable comes back as a refused
/// receive, and is down at once.
fn udp(target: SocketAddr, deadline: Deadline, payload: &[u8], expect: Option<&str>) -> Verdict {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let explain = |e: io::Error| match e.kind() {
        io::ErrorKind::ConnectionRefused => "port unreachable".to_owned(),
        _ => deadline.explain(&e),
    };
    let socket = match UdpSocket::bind(local).and_then(|s| s.connect(target).map(|()| s)) {
        Ok(s) => s,
        Err(e) => return Verdict::down(explain(e)),
    };
    if let Err(e) = socket.send(payload) {
        return Verdict::down(explain(e));
    }
    let mut reply = vec![0u8; MAX_DATAGRAM];
    let mut unexpected = false;
    loop {
        let Some(left) = deadline.left() else {
            return Verdict::down(match expect {
                Some(text) if unexpected => format!("no reply holding {text:?}"),
                _ => format!("no reply within {} ms", deadline.timeout.as_millis()),
            });
        };
        let got = socket.set_read_timeout(Some(left)).and_then(|()| socket.recv(&mut reply));
        match got {
            Ok(n) if expect.is_none_or(|text| contains(&reply[..n], text.as_bytes())) => {
                return Verdict::up(format!("reply of {n} bytes"));
            }
            Ok(_) => unexpected = true,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => return Verdict::down(explain(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_or_refused() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Ok(Some(204)));
        assert_eq!(status_code(b"HTTP/1.0 200\r\n"), Ok(Some(200)));
        assert_eq!(status_code(b"HTTP/1.1 20"), Ok(None));
        assert!(status_code(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(status_code(b"HTTP/1.1 2000 x\r\n").is_err());
        assert!(status_code(&[b'x'; 5000]).is_err());
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody"), Some(25));
    }

    #[test]
    fn host_header_defaults_to_the_real() {
        assert_eq!(default_host("10.0.0.1:80".parse().unwrap()), "10.0.0.1");
        assert_eq!(default_host("10.0.0.1:8080".parse().unwrap()), "10.0.0.1:8080");
        assert_eq!(default_host("[::1]:80".parse().unwrap()), "[::1]");
        assert_eq!(default_host("[::1]:81".parse().unwrap()), "[::1]:81");
    }

    #[test]
    fn a_timeout_too_long_for_the_clock_is_still_long() {
        let d = Deadline::new(Instant::now(), Duration::MAX);
        assert!(d.left().is_some_and(|l| l > Duration::from_secs(86_400)));
        assert_eq!(Deadline::new(Instant::now(), Duration::ZERO).left(), None);
    }
}
