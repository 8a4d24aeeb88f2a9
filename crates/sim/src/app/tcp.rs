//! TCP client and server speaking the checked request/response protocol.

use core::time::Duration;
use std::collections::BTreeMap;
use std::net::IpAddr;

use rvs_core::{Endpoint, Instant};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::IpListenEndpoint;

use super::pattern::{self, REQUEST, RESPONSE};
use super::{HEADER_LEN, Header, Outcome};
use crate::host::{App, Stack, from_smol_endpoint, tsval};

/// Default keep-alive interval of the apps' TCP sockets.
///
/// smoltcp has no persist timer (zero-window probing): when a receiver's
/// window update is lost, or overtaken by an older zero-window ACK, the
/// sender waits for it forever. A keep-alive probe makes the receiver
/// answer with its current window, so a short interval stands in for the
/// missing timer; it only fires on a connection that sent nothing for that
/// long.
pub const KEEP_ALIVE: Duration = Duration::from_millis(200);

/// Which side closes first once the whole response has been sent. The
/// other side closes when it sees that FIN. Client and server must agree:
/// if both wait for the other, connections end in timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Closer {
    /// The server closes right after queueing the response (HTTP/1.0 style).
    #[default]
    Server,
    /// The client closes after receiving the whole response.
    Client,
}

fn smol_duration(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Send as much of stream (`id`, `dir`) as fits, from `*sent` up to `len`.
fn send_pattern(s: &mut tcp::Socket<'_>, id: u64, dir: u8, sent: &mut u64, len: u64) {
    while *sent < len && s.can_send() {
        let at = *sent;
        let n = s
            .send(|buf| {
                let n = buf.len().min(usize::try_from(len - at).unwrap_or(usize::MAX));
                pattern::fill(id, dir, at, &mut buf[..n]);
                (n, n)
            })
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        *sent += n as u64;
    }
}

/// Receive and check stream (`id`, `dir`) from `*got`; bytes past `len`
/// count as a mismatch. Returns the offset of the first bad byte.
fn recv_pattern(s: &mut tcp::Socket<'_>, id: u64, dir: u8, got: &mut u64, len: u64) -> Option<u64> {
    while s.can_recv() {
        let at = *got;
        let r = s.recv(|buf| {
            let want = usize::try_from(len - at).unwrap_or(usize::MAX);
            if buf.len() > want {
                return (0, Err(len));
            }
            match pattern::check(id, dir, at, buf) {
                Some(bad) => (0, Err(bad)),
                None => (buf.len(), Ok(buf.len())),
            }
        });
        match r {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => *got += n as u64,
            Ok(Err(bad)) => return Some(bad),
        }
    }
    None
}

/// Whether an aborted or closed socket has finished with its endpoints
/// (any RST went out) and can be reused or removed.
fn released(s: &tcp::Socket<'_>) -> bool {
    s.state() == State::Closed && s.local_endpoint().is_none()
}

/// Settings of a [`TcpServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpServerConfig {
    /// Address to listen on; `None` for all of the host's addresses.
    pub addr: Option<IpAddr>,
    /// Port to listen on.
    pub port: u16,
    /// Spare listening sockets kept ready. smoltcp needs one listening
    /// socket per connection being accepted, so this bounds how many new
    /// connections can arrive between two polls of the host; SYNs beyond
    /// it are dropped (and retried by the client), as with a full accept
    /// queue.
    pub backlog: usize,
    /// Receive and send buffer of each socket, bytes.
    pub buffer: usize,
    /// Who closes first.
    pub closer: Closer,
    /// Abort a connection when the peer stays silent this long (smoltcp's
    /// socket timeout); `None` waits forever.
    pub idle_timeout: Option<Duration>,
    /// Keep-alive interval of every socket; see [`KEEP_ALIVE`].
    pub keep_alive: Option<Duration>,
    /// Expect a PROXY protocol header (v1 or v2) before the client's bytes.
    pub proxy_protocol: bool,
    /// Answer TCP timestamps (RFC 7323) when a client offers them.
    pub timestamps: bool,
}

impl TcpServerConfig {
    /// Listen on `port` on every address, with 64 KiB buffers, a backlog of
    /// 64 and the server closing first.
    pub fn new(port: u16) -> Self {
        Self {
            addr: None,
            port,
            backlog: 64,
            buffer: 64 << 10,
            closer: Closer::Server,
            idle_timeout: None,
            keep_alive: Some(KEEP_ALIVE),
            proxy_protocol: false,
            timestamps: false,
        }
    }
}

/// One connection a [`TcpServer`] accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConn {
    /// The peer as the server saw it.
    pub remote: Endpoint,
    /// The server's own end.
    pub local: Endpoint,
    /// Connection id from the header, once it arrived.
    pub id: Option<u64>,
    /// When the handshake completed.
    pub accepted: Instant,
    /// When it ended.
    pub finished: Option<Instant>,
    /// How it ended.
    pub outcome: Outcome,
    /// Request bytes received and checked.
    pub received: u64,
    /// Response bytes queued.
    pub sent: u64,
    /// The client a PROXY protocol header announced.
    pub proxied: Option<Endpoint>,
    /// When that header was complete.
    pub proxied_at: Option<Instant>,
}

/// Totals of a [`TcpServer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpServerStats {
    /// Connections whose handshake completed.
    pub accepted: u64,
    /// Connections that ended [`Outcome::Ok`].
    pub completed: u64,
    /// Connections that ended otherwise.
    pub failed: u64,
    /// Request bytes received and found right.
    pub bytes_verified: u64,
    /// Response bytes queued.
    pub bytes_sent: u64,
    /// Accepted connections per peer address.
    pub peers: BTreeMap<IpAddr, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerPhase {
    Listen,
    Proxy,
    Header,
    Request,
    Respond,
    AwaitPeerClose,
    Closing,
    Done,
}

#[derive(Debug)]
struct ServerSlot {
    handle: SocketHandle,
    phase: ServerPhase,
    conn: usize,
    header: [u8; HEADER_LEN],
    header_len: usize,
    request_len: u64,
    response_len: u64,
}

/// Accepts connections on one port and answers the checked protocol.
#[derive(Debug)]
pub struct TcpServer {
    cfg: TcpServerConfig,
    slots: Vec<ServerSlot>,
    conns: Vec<ServerConn>,
    stats: TcpServerStats,
}

impl TcpServer {
    /// A server with `cfg`; it starts listening when first polled.
    pub fn new(cfg: TcpServerConfig) -> Self {
        Self { cfg, slots: Vec::new(), conns: Vec::new(), stats: TcpServerStats::default() }
    }

    /// Totals so far.
    pub fn stats(&self) -> &TcpServerStats {
        &self.stats
    }

    /// Every connection accepted, in order.
    pub fn conns(&self) -> &[ServerConn] {
        &self.conns
    }

    /// Connections that ended badly.
    pub fn failures(&self) -> impl Iterator<Item = &ServerConn> {
        self.conns.iter().filter(|c| c.outcome.is_final() && c.outcome != Outcome::Ok)
    }

    /// Connections accepted and not ended yet.
    pub fn active(&self) -> usize {
        self.conns.iter().filter(|c| !c.outcome.is_final()).count()
    }

    fn listen_endpoint(&self) -> IpListenEndpoint {
        IpListenEndpoint { addr: self.cfg.addr.map(Into::into), port: self.cfg.port }
    }

    fn finish(&mut self, slot: usize, now: Instant, outcome: Outcome, s: &mut tcp::Socket<'_>) {
        let sl = &mut self.slots[slot];
        let c = &mut self.conns[sl.conn];
        c.finished = Some(now);
        c.outcome = outcome;
        if outcome == Outcome::Ok {
            self.stats.completed += 1;
        } else {
            self.stats.failed += 1;
            s.abort();
        }
        sl.phase = ServerPhase::Done;
    }

    /// A listening slot: once its handshake is done, the connection is
    /// recorded and the slot reads its header next. `false` while it is
    /// still listening.
    fn accept(&mut self, i: usize, now: Instant, s: &mut tcp::Socket<'_>) -> bool {
        let ep = self.listen_endpoint();
        let sl = &mut self.slots[i];
        match s.state() {
            State::Listen | State::SynReceived => return false,
            State::Closed => {
                // A handshake that failed; listen again once any RST is out.
                if released(s) {
                    let _ = s.listen(ep);
                }
                return false;
            }
            _ => {}
        }
        let (Some(remote), Some(local)) = (s.remote_endpoint(), s.local_endpoint()) else {
            return false;
        };
        if let Some(t) = self.cfg.idle_timeout {
            s.set_timeout(Some(smol_duration(t)));
        }
        let remote = from_smol_endpoint(remote);
        sl.conn = self.conns.len();
        sl.phase = if self.cfg.proxy_protocol { ServerPhase::Proxy } else { ServerPhase::Header };
        sl.header_len = 0;
        self.conns.push(ServerConn {
            remote,
            local: from_smol_endpoint(local),
            id: None,
            accepted: now,
            finished: None,
            outcome: Outcome::Pending,
            received: 0,
            sent: 0,
            proxied: None,
            proxied_at: None,
        });
        self.stats.accepted += 1;
        *self.stats.peers.entry(remote.addr).or_default() += 1;
        true
    }

    fn drive(&mut self, i: usize, stack: &mut Stack<'_>) {
        let now = stack.now();
        let ep = self.listen_endpoint();
        let s = stack.tcp(self.slots[i].handle);
        let sl = &mut self.slots[i];
        if sl.phase == ServerPhase::Done {
            match s.state() {
                State::Closed if released(s) => {
                    let _ = s.listen(ep);
                }
                // Still closing, or in TIME-WAIT.
                State::Closed | State::TimeWait => return,
                // A SYN for the same 4-tuple ended TIME-WAIT and the
                // network made this socket listen again (see `Network`).
                _ => {}
            }
            sl.phase = ServerPhase::Listen;
        }
        if sl.phase == ServerPhase::Listen && !self.accept(i, now, s) {
            return;
        }
        let sl = &mut self.slots[i];
        let c = &mut self.conns[sl.conn];
        if sl.phase == ServerPhase::Proxy && s.can_recv() {
            let mut buf = [0u8; 232];
            let n = s.peek_slice(&mut buf).unwrap_or(0);
            match proxy_header(&buf[..n]) {
                ProxyHeader::Incomplete => {}
                ProxyHeader::Bad => return self.finish(i, now, Outcome::BadHeader, s),
                ProxyHeader::Client(client, len) => {
                    let _ = s.recv_slice(&mut buf[..len]);
                    c.proxied = Some(client);
                    c.proxied_at = Some(now);
                    sl.phase = ServerPhase::Header;
                }
            }
        }
        if sl.phase == ServerPhase::Header {
            while sl.header_len < HEADER_LEN && s.can_recv() {
                sl.header_len += s.recv_slice(&mut sl.header[sl.header_len..]).unwrap_or(0);
            }
            if sl.header_len == HEADER_LEN {
                let Some(h) = Header::decode(&sl.header) else { unreachable!("header is full") };
                c.id = Some(h.id);
                sl.request_len = u64::from(h.a);
                sl.response_len = u64::from(h.response_len);
                sl.phase = ServerPhase::Request;
            }
        }
        let id = c.id.unwrap_or(0);
        if sl.phase == ServerPhase::Request {
            let before = c.received;
            let bad = recv_pattern(s, id, REQUEST, &mut c.received, sl.request_len);
            self.stats.bytes_verified += c.received - before;
            if let Some(offset) = bad {
                return self.finish(i, now, Outcome::Mismatch { offset }, s);
            }
            if c.received == sl.request_len {
                sl.phase = ServerPhase::Respond;
            }
        }
        if sl.phase == ServerPhase::Respond {
            let before = c.sent;
            send_pattern(s, id, RESPONSE, &mut c.sent, sl.response_len);
            self.stats.bytes_sent += c.sent - before;
            if c.sent == sl.response_len {
                if self.cfg.closer == Closer::Server {
                    s.close();
                    sl.phase = ServerPhase::Closing;
                } else {
                    sl.phase = ServerPhase::AwaitPeerClose;
                }
            }
        }
        if matches!(sl.phase, ServerPhase::AwaitPeerClose | ServerPhase::Closing) && s.can_recv() {
            let offset = sl.request_len;
            return self.finish(i, now, Outcome::Mismatch { offset }, s);
        }
        if sl.phase == ServerPhase::AwaitPeerClose && !s.may_recv() {
            s.close();
            sl.phase = ServerPhase::Closing;
        }
        match (sl.phase, s.state()) {
            (ServerPhase::Closing, State::Closed | State::TimeWait) => self.finish(i, now, Outcome::Ok, s),
            (_, State::Closed) => {
                let received = c.received;
                self.finish(i, now, Outcome::Closed { received }, s);
            }
            // The peer closed before sending the whole request.
            (ServerPhase::Proxy | ServerPhase::Header | ServerPhase::Request, _)
                if !s.may_recv() && !s.can_recv() =>
            {
                let received = c.received;
                self.finish(i, now, Outcome::Closed { received }, s);
            }
            _ => {}
        }
    }
}

impl App for TcpServer {
    fn poll(&mut self, stack: &mut Stack<'_>) {
        for i in 0..self.slots.len() {
            self.drive(i, stack);
        }
        let listening = self.slots.iter().filter(|s| s.phase == ServerPhase::Listen).count();
        let ep = self.listen_endpoint();
        for _ in listening..self.cfg.backlog.max(1) {
            let handle = stack.add_tcp(self.cfg.buffer, self.cfg.buffer);
            let s = stack.tcp(handle);
            s.set_keep_alive(self.cfg.keep_alive.map(smol_duration));
            s.set_tsval_generator(self.cfg.timestamps.then_some(tsval as fn() -> u32));
            s.listen(ep).expect("listen endpoint has a port");
            self.slots.push(ServerSlot {
                handle,
                phase: ServerPhase::Listen,
                conn: 0,
                header: [0; HEADER_LEN],
                header_len: 0,
                request_len: 0,
                response_len: 0,
            });
        }
    }
}

/// Settings of a [`TcpClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpClientConfig {
    /// Where to connect (a VIP, or a server directly).
    pub target: Endpoint,
    /// Source address; `None` for the host's first address of the target's family.
    pub local_addr: Option<IpAddr>,
    /// Connections to make in total.
    pub connections: usize,
    /// Connections open at once at most.
    pub concurrency: usize,
    /// Request bytes each connection sends after the header.
    pub request_len: u32,
    /// Response bytes each connection asks for.
    pub response_len: u32,
    /// No connection starts before this.
    pub start: Instant,
    /// Least time between two connection starts.
    pub interval: Duration,
    /// A connection not finished this long after it started is aborted.
    pub timeout: Duration,
    /// Id of the first connection; the others follow in order.
    pub first_id: u64,
    /// Receive and send buffer of each socket, bytes.
    pub buffer: usize,
    /// Who closes first.
    pub closer: Closer,
    /// Keep-alive interval of every socket; see [`KEEP_ALIVE`].
    pub keep_alive: Option<Duration>,
    /// Silence after the handshake before the first byte (a client of a
    /// server-speaks-first protocol waits for the server).
    pub send_delay: Duration,
    /// Offer TCP timestamps (RFC 7323) on every connection.
    pub timestamps: bool,
}

impl TcpClientConfig {
    /// `connections` connections to `target`, all at once, each sending
    /// `request_len` bytes and expecting `response_len`, with 64 KiB buffers
    /// and a 60 s timeout.
    pub fn new(target: Endpoint, connections: usize, request_len: u32, response_len: u32) -> Self {
        Self {
            target,
            local_addr: None,
            connections,
            concurrency: connections,
            request_len,
            response_len,
            start: Instant::ZERO,
            interval: Duration::ZERO,
            timeout: Duration::from_secs(60),
            first_id: 0,
            buffer: 64 << 10,
            closer: Closer::Server,
            keep_alive: Some(KEEP_ALIVE),
            send_delay: Duration::ZERO,
            timestamps: false,
        }
    }
}

/// One connection of a [`TcpClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConn {
    /// The id sent in the header.
    pub id: u64,
    /// The client's own end, if it got that far.
    pub local: Option<Endpoint>,
    /// When the connection was started (SYN queued).
    pub started: Instant,
    /// When the handshake completed.
    pub connected: Option<Instant>,
    /// When it ended.
    pub finished: Option<Instant>,
    /// How it ended.
    pub outcome: Outcome,
    /// Request bytes queued (header excluded).
    pub sent: u64,
    /// Response bytes received and checked.
    pub received: u64,
}

impl ClientConn {
    /// Start to end, once ended.
    pub fn duration(&self) -> Option<Duration> {
        Some(self.finished? - self.started)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientPhase {
    Exchange,
    Closing,
}

#[derive(Debug)]
struct Active {
    conn: usize,
    handle: SocketHandle,
    port: u16,
    header_sent: usize,
    phase: ClientPhase,
}

/// Opens connections to one endpoint and checks every response byte.
#[derive(Debug)]
pub struct TcpClient {
    cfg: TcpClientConfig,
    conns: Vec<ClientConn>,
    active: Vec<Active>,
    /// Aborted sockets waiting for their RST to go out before removal.
    lingering: Vec<(SocketHandle, u16)>,
    next_start: Instant,
    ended: usize,
    ok: usize,
}

impl TcpClient {
    /// A client with `cfg`; connections start once polled at or after `cfg.start`.
    pub fn new(cfg: TcpClientConfig) -> Self {
        Self {
            cfg,
            conns: Vec::new(),
            active: Vec::new(),
            lingering: Vec::new(),
            next_start: cfg.start,
            ended: 0,
            ok: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &TcpClientConfig {
        &self.cfg
    }

    /// Every connection started, in order.
    pub fn conns(&self) -> &[ClientConn] {
        &self.conns
    }

    /// All connections were started and have ended.
    pub fn finished(&self) -> bool {
        self.ended == self.cfg.connections
    }

    /// Connections that ended [`Outcome::Ok`].
    pub fn ok_count(&self) -> usize {
        self.ok
    }

    /// Connections that ended badly.
    pub fn failures(&self) -> impl Iterator<Item = &ClientConn> {
        self.conns.iter().filter(|c| c.outcome.is_final() && c.outcome != Outcome::Ok)
    }

    /// Make `more` further connections, with the same settings.
    pub fn add_connections(&mut self, more: usize) {
        self.cfg.connections += more;
    }

    fn end(&mut self, conn: usize, now: Instant, outcome: Outcome) {
        let c = &mut self.conns[conn];
        c.finished = Some(now);
        c.outcome = outcome;
        self.ended += 1;
        if outcome == Outcome::Ok {
            self.ok += 1;
        }
    }

    fn start_one(&mut self, stack: &mut Stack<'_>) {
        let now = stack.now();
        let id = self.cfg.first_id + self.conns.len() as u64;
        let conn = self.conns.len();
        self.conns.push(ClientConn {
            id,
            local: None,
            started: now,
            connected: None,
            finished: None,
            outcome: Outcome::Pending,
            sent: 0,
            received: 0,
        });
        let target = self.cfg.target;
        let (Some(addr), Some(port)) =
            (self.cfg.local_addr.or_else(|| stack.addr_for(target.addr)), stack.alloc_port())
        else {
            return self.end(conn, now, Outcome::Refused);
        };
        let local = Endpoint::new(addr, port);
        let handle = stack.add_tcp(self.cfg.buffer, self.cfg.buffer);
        let s = stack.tcp(handle);
        s.set_keep_alive(self.cfg.keep_alive.map(smol_duration));
        s.set_tsval_generator(self.cfg.timestamps.then_some(tsval as fn() -> u32));
        if stack.connect(handle, target, local).is_err() {
            stack.remove(handle);
            stack.release_port(port);
            return self.end(conn, now, Outcome::Refused);
        }
        self.conns[conn].local = Some(local);
        self.active.push(Active { conn, handle, port, header_sent: 0, phase: ClientPhase::Exchange });
    }

    /// Move connection `a` along; returns its outcome once it ended.
    fn drive(&mut self, a: &mut Active, stack: &mut Stack<'_>) -> Option<Outcome> {
        let now = stack.now();
        let cfg = &self.cfg;
        let c = &mut self.conns[a.conn];
        let s = stack.tcp(a.handle);
        if now >= c.started + cfg.timeout {
            return Some(Outcome::TimedOut);
        }
        if c.connected.is_none() && !matches!(s.state(), State::SynSent | State::Closed | State::Listen) {
            c.connected = Some(now);
        }
        let may_send = c.connected.is_some_and(|t| now >= t + cfg.send_delay);
        if a.phase == ClientPhase::Exchange && may_send {
            let header = Header { id: c.id, a: cfg.request_len, response_len: cfg.response_len }.encode();
            while a.header_sent < HEADER_LEN && s.can_send() {
                a.header_sent += s.send_slice(&header[a.header_sent..]).unwrap_or(0);
            }
            if a.header_sent == HEADER_LEN {
                send_pattern(s, c.id, REQUEST, &mut c.sent, u64::from(cfg.request_len));
            }
        }
        let want = u64::from(cfg.response_len);
        if let Some(offset) = recv_pattern(s, c.id, RESPONSE, &mut c.received, want) {
            return Some(Outcome::Mismatch { offset });
        }
        let all_sent = a.header_sent == HEADER_LEN && c.sent == u64::from(cfg.request_len);
        let peer_done = cfg.closer == Closer::Client || !s.may_recv();
        if a.phase == ClientPhase::Exchange && all_sent && c.received == want && peer_done {
            s.close();
            a.phase = ClientPhase::Closing;
        }
        match (a.phase, s.state()) {
            (ClientPhase::Closing, State::Closed | State::TimeWait) => Some(Outcome::Ok),
            (_, State::Closed) => Some(Outcome::Closed { received: c.received }),
            (_, State::SynSent) => None,
            (ClientPhase::Exchange, _) if !s.may_recv() && !s.can_recv() && c.received < want => {
                Some(Outcome::Closed { received: c.received })
            }
            _ => None,
        }
    }
}

impl App for TcpClient {
    fn poll(&mut self, stack: &mut Stack<'_>) {
        let now = stack.now();
        self.lingering.retain(|&(h, port)| {
            if !released(stack.tcp(h)) {
                return true;
            }
            stack.remove(h);
            stack.release_port(port);
            false
        });
        let mut active = core::mem::take(&mut self.active);
        active.retain_mut(|a| {
            let Some(outcome) = self.drive(a, stack) else {
                return true;
            };
            self.end(a.conn, now, outcome);
            let s = stack.tcp(a.handle);
            if outcome == Outcome::Ok && s.state() == State::TimeWait {
                // TIME-WAIT is not kept: the port stays unused until the
                // allocator wraps round, which is long enough here.
                stack.remove(a.handle);
                stack.release_port(a.port);
            } else {
                s.abort();
                self.lingering.push((a.handle, a.port));
            }
            false
        });
        self.active = active;
        while self.conns.len() < self.cfg.connections
            && self.active.len() < self.cfg.concurrency
            && now >= self.next_start
        {
            self.start_one(stack);
            self.next_start = now + self.cfg.interval;
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        let start = (self.conns.len() < self.cfg.connections && self.active.len() < self.cfg.concurrency)
            .then_some(self.next_start);
        let deadline = self
            .active
            .iter()
            .flat_map(|a| {
                let c = &self.conns[a.conn];
                let send = c.connected.map(|t| t + self.cfg.send_delay).filter(|_| a.header_sent == 0);
                [Some(c.started + self.cfg.timeout), send]
            })
            .flatten()
            .min();
        match (start, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What the start of a proxied stream holds.
enum ProxyHeader {
    Incomplete,
    Bad,
    /// The client announced, and the header's length.
    Client(Endpoint, usize),
}

/// Read a PROXY protocol header (v1 text or v2 binary, TCP over IPv4 or
/// IPv6) from the start of `buf`, independently of the balancer's writer.
fn proxy_header(buf: &[u8]) -> ProxyHeader {
    const V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    if buf.len() < 16 && V2.starts_with(&buf[..buf.len().min(12)]) {
        return ProxyHeader::Incomplete;
    }
    if buf.len() < 6 && b"PROXY ".starts_with(buf) {
        return ProxyHeader::Incomplete;
    }
    if buf.starts_with(V2) {
        let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        // Version 2 PROXY; TCP over IPv4 (addresses and ports: 12 bytes) or IPv6 (36).
        let addr_len = match buf[13] {
            0x11 => 4,
            0x21 => 16,
            _ => return ProxyHeader::Bad,
        };
        if buf[12] != 0x21 || len != 16 + 2 * addr_len + 4 {
            return ProxyHeader::Bad;
        }
        let Some(body) = buf.get(16..len) else { return ProxyHeader::Incomplete };
        let addr = match <[u8; 16]>::try_from(&body[..addr_len]) {
            Ok(v6) => IpAddr::from(v6),
            Err(_) => IpAddr::from([body[0], body[1], body[2], body[3]]),
        };
        let port = u16::from_be_bytes([body[2 * addr_len], body[2 * addr_len + 1]]);
        return ProxyHeader::Client(Endpoint::new(addr, port), len);
    }
    if !buf.starts_with(b"PROXY ") {
        return ProxyHeader::Bad;
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= 107 { ProxyHeader::Bad } else { ProxyHeader::Incomplete };
    };
    let Ok(line) = core::str::from_utf8(&buf[..end]) else { return ProxyHeader::Bad };
    let f: Vec<&str> = line.split(' ').collect();
    match (
        f.as_slice(),
        f.get(2).and_then(|a| a.parse::<IpAddr>().ok()),
        f.get(4).and_then(|p| p.parse().ok()),
    ) {
        (["PROXY", "TCP4", _, _, _, _], Some(addr @ IpAddr::V4(_)), Some(port))
        | (["PROXY", "TCP6", _, _, _, _], Some(addr @ IpAddr::V6(_)), Some(port)) => {
            ProxyHeader::Client(Endpoint::new(addr, port), end + 2)
        }
        _ => ProxyHeader::Bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(h: ProxyHeader) -> Option<(Endpoint, usize)> {
        match h {
            ProxyHeader::Client(e, len) => Some((e, len)),
            _ => None,
        }
    }

    #[test]
    fn proxy_headers_of_both_families_name_the_client() {
        let v1 = b"PROXY TCP6 2001:db8::7 fd10::1 40000 80\r\nrest";
        let want6 = Endpoint::new("2001:db8::7".parse().unwrap(), 40000);
        assert_eq!(client(proxy_header(v1)), Some((want6, v1.len() - 4)));
        let v1_mixed = b"PROXY TCP6 192.0.2.7 10.0.0.1 40000 80\r\n";
        assert!(matches!(proxy_header(v1_mixed), ProxyHeader::Bad));
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\0\x24".to_vec();
        v2.extend_from_slice(&"2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v2.extend_from_slice(&"fd10::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v2.extend_from_slice(&[0x9c, 0x40, 0, 80]);
        assert!(matches!(proxy_header(&v2[..40]), ProxyHeader::Incomplete));
        assert_eq!(client(proxy_header(&v2)), Some((want6, 52)));
        let mut v2_4 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\0\x0c".to_vec();
        v2_4.extend_from_slice(&[192, 0, 2, 7, 10, 0, 0, 1, 0x9c, 0x40, 0, 80]);
        let want4 = Endpoint::new("192.0.2.7".parse().unwrap(), 40000);
        assert_eq!(client(proxy_header(&v2_4)), Some((want4, 28)));
    }
}
