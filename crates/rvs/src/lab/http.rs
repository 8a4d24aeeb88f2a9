//! A tiny HTTP/1.1 server and client, just enough for the lab: `GET /`
//! answered with the server's name, one request per connection.
//!
//! Both ends bound every wait: the server polls its listener so it notices a
//! stop request within [`POLL_SLICE`], and the client cuts connect and reads
//! into slices of the same length, so a cancel flag (Ctrl-C) or the request
//! deadline ends a request promptly even on a link that drops everything.

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The longest a blocked call waits before flags and deadlines are checked again.
pub(crate) const POLL_SLICE: Duration = Duration::from_millis(100);
/// How long the server waits for a slow client before giving up on it.
const SERVER_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests and responses in the lab are small; anything larger is refused.
const MAX_HEAD: usize = 8 * 1024;

/// A server answering `GET /` with `NAME\n`, serving one connection at a time
/// on its own thread until dropped.
#[derive(Debug)]
pub(crate) struct Server {
    /// Where it listens: the lab itself needs no more than the port it bound.
    #[cfg_attr(not(test), expect(dead_code))]
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves on `listener`, which may have been bound inside another network
    /// namespace: the socket stays there whichever thread uses it.
    pub(crate) fn start(listener: TcpListener, name: &str) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let body = format!("{name}\n");
        let thread = thread::Builder::new().name(format!("http-{name}")).spawn({
            let (stop, served) = (stop.clone(), served.clone());
            move || serve(&listener, &body, &stop, &served)
        })?;
        Ok(Self { addr, stop, served, thread: Some(thread) })
    }

    /// The address it listens on.
    #[cfg(test)]
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: &TcpListener, body: &str, stop: &AtomicBool, served: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        if !wait_fd(listener.as_raw_fd(), libc::POLLIN, POLL_SLICE) {
            continue;
        }
        // A connection may vanish between poll and accept: WouldBlock, go on.
        let Ok((mut stream, _)) = listener.accept() else { continue };
        if answer(&mut stream, body).is_ok() {
            // Counted before the close, so a client that has read to EOF
            // sees its request counted.
            served.fetch_add(1, Ordering::Relaxed);
        }
        linger_close(stream);
    }
}

/// Close after the client has seen everything: send our FIN, then read
/// until the client's. Closing with a request byte unread (a retransmitted
/// copy arriving late, under loss) would make the kernel answer with an RST
/// that can destroy the response still in flight. A thread per connection
/// keeps the accept loop free meanwhile.
fn linger_close(stream: TcpStream) {
    let _ = thread::Builder::new().name("lab-linger".into()).spawn(move || {
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = stream.set_read_timeout(Some(SERVER_IO_TIMEOUT));
        let mut buf = [0u8; 512];
        while matches!((&stream).read(&mut buf), Ok(n) if n > 0) {}
    });
}

/// Reads one request head and answers it, then closes: `Connection: close`.
fn answer(stream: &mut TcpStream, body: &str) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(SERVER_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(SERVER_IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while find_head_end(&head).is_none() {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "incomplete or oversized request"));
        }
        head.extend_from_slice(&buf[..n]);
    }
    let response = if head.starts_with(b"GET ") {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    stream.write_all(response.as_bytes())
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Polls one fd for `events` for at most `timeout`; true when it is ready.
fn wait_fd(fd: i32, events: libc::c_short, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: one valid pollfd for the length of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    n > 0
}

/// Times of one successful request, measured from just before the SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// Until the handshake completed.
    pub(crate) connect: Duration,
    /// Until the first response byte arrived.
    pub(crate) first_byte: Duration,
    /// Until the whole response had arrived.
    pub(crate) total: Duration,
}

/// A successful exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: String,
    pub(crate) timing: Timing,
}

/// Why a request failed; the names are report labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FailKind {
    /// No handshake within the deadline.
    ConnectTimeout,
    /// The server (or something on the way) answered the SYN with a reset.
    ConnectRefused,
    /// Another connect error (unreachable network or host, ...).
    ConnectError,
    /// Connected, but the response did not complete within the deadline.
    ResponseTimeout,
    /// The connection was reset after the handshake.
    Reset,
    /// The server closed before a complete response.
    Truncated,
    /// The bytes were not an HTTP/1.1 response this client understands.
    BadResponse,
    /// A response other than 200.
    BadStatus,
    /// Cancelled by the caller (Ctrl-C).
    Cancelled,
}

impl FailKind {
    /// The label used in reports and JSON.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::ConnectTimeout => "connect_timeout",
            Self::ConnectRefused => "connect_refused",
            Self::ConnectError => "connect_error",
            Self::ResponseTimeout => "response_timeout",
            Self::Reset => "reset",
            Self::Truncated => "truncated",
            Self::BadResponse => "bad_response",
            Self::BadStatus => "bad_status",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One `GET /` on a fresh connection to `addr`, within `timeout` overall.
/// After the response is complete the client reads on to the server's FIN,
/// so that the server closes first and TIME_WAIT stays on the server side
/// (not timed, and cut short by the deadline).
pub(crate) fn get(addr: SocketAddr, timeout: Duration, cancel: &AtomicBool) -> Result<Response, FailKind> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut stream = connect(addr, deadline, cancel)?;
    let connect = start.elapsed();
    // A URI's host writes an IPv6 address in brackets (RFC 3986 section 3.2.2).
    let host = match addr.ip() {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => format!("[{a}]"),
    };
    let request =
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: rvs-lab\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| io_kind(&e))?;

    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    let mut first_byte = None;
    let (status, body_at, len) = loop {
        let n = read_slice(&mut stream, &mut chunk, deadline, cancel)?;
        if n == 0 {
            return Err(FailKind::Truncated);
        }
        first_byte.get_or_insert_with(|| start.elapsed());
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&buf) {
            let (status, len) = parse_head(&buf[..end]).ok_or(FailKind::BadResponse)?;
            break (status, end, len);
        }
        if buf.len() > MAX_HEAD {
            return Err(FailKind::BadResponse);
        }
    };
    while buf.len() < body_at + len {
        let n = read_slice(&mut stream, &mut chunk, deadline, cancel)?;
        if n == 0 {
            return Err(FailKind::Truncated);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let total = start.elapsed();
    // Drain to the server's FIN; its outcome does not change the result.
    while let Ok(n) = read_slice(&mut stream, &mut chunk, deadline, cancel) {
        if n == 0 {
            break;
        }
    }
    if status != 200 {
        return Err(FailKind::BadStatus);
    }
    let body = String::from_utf8_lossy(&buf[body_at..body_at + len]).into_owned();
    let first_byte = first_byte.unwrap_or(total);
    Ok(Response { status, body, timing: Timing { connect, first_byte, total } })
}

/// Status and Content-Length of a response head (Content-Length required:
/// this client does not speak chunked encoding).
fn parse_head(head: &[u8]) -> Option<(u16, usize)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut status_line = lines.next()?.splitn(3, ' ');
    if !status_line.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = status_line.next()?.parse().ok()?;
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())?;
    Some((status, len))
}

/// Reads once, waiting in [`POLL_SLICE`]s so that `cancel` and `deadline` are
/// honoured.
fn read_slice(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    cancel: &AtomicBool,
) -> Result<usize, FailKind> {
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(FailKind::Cancelled);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FailKind::ResponseTimeout);
        }
        stream.set_read_timeout(Some(left.min(POLL_SLICE))).map_err(|e| io_kind(&e))?;
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_kind(&e)),
        }
    }
}

fn io_kind(e: &io::Error) -> FailKind {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
            FailKind::Reset
        }
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FailKind::ResponseTimeout,
        _ => FailKind::BadResponse,
    }
}

/// A non-blocking connect waited for in [`POLL_SLICE`]s (std's
/// `connect_timeout` cannot be cancelled), returned as a blocking stream.
fn connect(addr: SocketAddr, deadline: Instant, cancel: &AtomicBool) -> Result<TcpStream, FailKind> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(FailKind::ConnectError);
    }
    // SAFETY: fd is a fresh socket that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_storage is plain data, valid all zero.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: storage holds a valid address of the socket's family, `len` bytes long.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const storage).cast(), len as libc::socklen_t) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(connect_kind(&e));
        }
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(FailKind::Cancelled);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(FailKind::ConnectTimeout);
            }
            if wait_fd(fd.as_raw_fd(), libc::POLLOUT, left.min(POLL_SLICE)) {
                break;
            }
        }
        let mut err = MaybeUninit::<libc::c_int>::zeroed();
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: err and len point to writable storage of the stated size.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                err.as_mut_ptr().cast(),
                &mut len,
            )
        };
        // SAFETY: zero-initialised, and getsockopt wrote an int on success.
        let err = unsafe { err.assume_init() };
        if rc != 0 {
            return Err(FailKind::ConnectError);
        }
        if err != 0 {
            return Err(connect_kind(&io::Error::from_raw_os_error(err)));
        }
    }
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false).map_err(|_| FailKind::ConnectError)?;
    stream.set_nodelay(true).map_err(|_| FailKind::ConnectError)?;
    Ok(stream)
}

fn connect_kind(e: &io::Error) -> FailKind {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => FailKind::ConnectRefused,
        Some(libc::ETIMEDOUT) => FailKind::ConnectTimeout,
        _ => FailKind::ConnectError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::os::fd::OwnedFd;

    /// Binds a listener on `ip` and an ephemeral port.
    fn bind_any(ip: Ipv4Addr) -> io::Result<TcpListener> {
        TcpListener::bind((ip, 0))
    }

    #[test]
    fn client_talks_ipv6_and_names_the_host_in_brackets() {
        let listener = TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, 0)).unwrap();
        let server = Server::start(listener, "real6").unwrap();
        let r = get(server.addr(), Duration::from_secs(5), &AtomicBool::new(false)).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "real6\n"));
    }

    #[test]
    fn server_and_client_talk_on_loopback() {
        let server = Server::start(bind_any(Ipv4Addr::LOCALHOST).unwrap(), "real7").unwrap();
        let no = AtomicBool::new(false);
        for _ in 0..50 {
            let r = get(server.addr(), Duration::from_secs(5), &no).unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.body, "real7\n");
            let t = r.timing;
            assert!(t.connect <= t.first_byte && t.first_byte <= t.total, "{t:?}");
        }
        assert_eq!(server.served(), 50);
    }

    /// A loopback port that nobody listens on and nobody else can take
    /// while the returned socket lives: bound, never listening. (A port
    /// bound and dropped may go to a test running beside this one.)
    fn closed_port() -> (OwnedFd, u16) {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: plain socket(2); the result is checked and owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        // SAFETY: `fd` is a fresh socket owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be() },
            sin_zero: [0; 8],
        };
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let p = (&raw mut sa).cast::<libc::sockaddr>();
        // SAFETY: `p` points to a live sockaddr_in of `len` bytes.
        let rc = unsafe { libc::bind(fd.as_raw_fd(), p, len) };
        assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
        // SAFETY: as above; the kernel writes at most `len` bytes there.
        let rc = unsafe { libc::getsockname(fd.as_raw_fd(), p, &mut len) };
        assert_eq!(rc, 0, "getsockname: {}", io::Error::last_os_error());
        (fd, u16::from_be(sa.sin_port))
    }

    #[test]
    fn refused_connect_is_reported() {
        let (_bound, port) = closed_port();
        let no = AtomicBool::new(false);
        let e = get(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), Duration::from_secs(2), &no).unwrap_err();
        assert_eq!(e, FailKind::ConnectRefused);
    }

    #[test]
    fn silent_server_times_out_and_cancel_is_prompt() {
        // Accepted by the kernel (backlog) but never answered.
        let silent = bind_any(Ipv4Addr::LOCALHOST).unwrap();
        let addr = silent.local_addr().unwrap();
        let no = AtomicBool::new(false);
        let t0 = Instant::now();
        assert_eq!(get(addr, Duration::from_millis(300), &no).unwrap_err(), FailKind::ResponseTimeout);
        assert!(t0.elapsed() < Duration::from_secs(2));
        let cancel = AtomicBool::new(true);
        let t0 = Instant::now();
        assert_eq!(get(addr, Duration::from_secs(30), &cancel).unwrap_err(), FailKind::Cancelled);
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn server_refuses_other_methods_and_survives_garbage() {
        let server = Server::start(bind_any(Ipv4Addr::LOCALHOST).unwrap(), "r").unwrap();
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 405"), "{out}");
        // A client that connects and closes without a request.
        drop(TcpStream::connect(server.addr()).unwrap());
        let no = AtomicBool::new(false);
        assert_eq!(get(server.addr(), Duration::from_secs(5), &no).unwrap().body, "r\n");
    }

    #[test]
    fn parses_response_heads() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n"), Some((200, 6)));
        assert_eq!(parse_head(b"HTTP/1.0 404 Not Found\r\nContent-Length:0\r\n\r\n"), Some((404, 0)));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(parse_head(b"SSH-2.0-x\r\n\r\n"), None);
    }
}
