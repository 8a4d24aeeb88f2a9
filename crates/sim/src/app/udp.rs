//! UDP client and server: numbered request/response exchanges, retried
//! until answered, every payload byte checked.

use core::time::Duration;
use std::collections::BTreeMap;
use std::net::IpAddr;

use rvs_core::{Endpoint, Instant};
use smoltcp::iface::SocketHandle;
use smoltcp::phy::PacketMeta;
use smoltcp::socket::udp::UdpMetadata;
use smoltcp::wire::IpListenEndpoint;

use super::pattern::{self, REQUEST, RESPONSE};
use super::{HEADER_LEN, Header, Outcome};
use crate::host::{App, Stack, from_smol_endpoint, to_smol_endpoint};
use crate::rng::splitmix64;

/// The pattern stream of exchange `seq` of client `id`.
fn stream(id: u64, seq: u32) -> u64 {
    splitmix64(id) ^ u64::from(seq)
}

/// IP plus UDP header bytes, for the size check against the MTU.
fn overhead(addr: IpAddr) -> usize {
    if addr.is_ipv4() { 28 } else { 48 }
}

/// Settings of a [`UdpServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpServerConfig {
    /// Address to bind; `None` for all of the host's addresses.
    pub addr: Option<IpAddr>,
    /// Port to bind.
    pub port: u16,
    /// Datagrams the socket can queue each way.
    pub packets: usize,
    /// Bytes the socket can queue each way.
    pub bytes: usize,
}

impl UdpServerConfig {
    /// Bind `port` on every address, queueing up to 256 datagrams or 256 KiB.
    pub fn new(port: u16) -> Self {
        Self { addr: None, port, packets: 256, bytes: 256 << 10 }
    }
}

/// Totals of a [`UdpServer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpServerStats {
    /// Requests received and found right (retries count again).
    pub requests: u64,
    /// Responses sent.
    pub responses: u64,
    /// Requests with a wrong byte or a short header, not answered.
    pub bad: u64,
    /// Request payload bytes found right.
    pub bytes_verified: u64,
    /// Good requests per peer address.
    pub peers: BTreeMap<IpAddr, u64>,
    /// Good requests per peer endpoint.
    pub peer_endpoints: BTreeMap<Endpoint, u64>,
}

/// Answers every well-formed request datagram.
#[derive(Debug)]
pub struct UdpServer {
    cfg: UdpServerConfig,
    handle: Option<SocketHandle>,
    stats: UdpServerStats,
    scratch: Vec<u8>,
}

impl UdpServer {
    /// A server with `cfg`; it binds when first polled.
    pub fn new(cfg: UdpServerConfig) -> Self {
        Self { cfg, handle: None, stats: UdpServerStats::default(), scratch: Vec::new() }
    }

    /// Totals so far.
    pub fn stats(&self) -> &UdpServerStats {
        &self.stats
    }
}

impl App for UdpServer {
    fn poll(&mut self, stack: &mut Stack<'_>) {
        let handle = *self.handle.get_or_insert_with(|| {
            let h = stack.add_udp(self.cfg.packets, self.cfg.bytes);
            let ep = IpListenEndpoint { addr: self.cfg.addr.map(Into::into), port: self.cfg.port };
            stack.udp(h).bind(ep).expect("port is not zero");
            h
        });
        let s = stack.udp(handle);
        while s.can_recv() {
            let Ok((data, meta)) = s.recv() else { break };
            let request = Header::decode(data)
                .filter(|h| pattern::check(stream(h.id, h.a), REQUEST, 0, &data[HEADER_LEN..]).is_none());
            let Some(h) = request else {
                self.stats.bad += 1;
                continue;
            };
            let peer = from_smol_endpoint(meta.endpoint);
            self.stats.requests += 1;
            self.stats.bytes_verified += (data.len() - HEADER_LEN) as u64;
            *self.stats.peers.entry(peer.addr).or_default() += 1;
            *self.stats.peer_endpoints.entry(peer).or_default() += 1;
            let len = HEADER_LEN + h.response_len as usize;
            self.scratch.resize(len, 0);
            self.scratch[..HEADER_LEN].copy_from_slice(&h.encode());
            pattern::fill(stream(h.id, h.a), RESPONSE, 0, &mut self.scratch[HEADER_LEN..]);
            // Answer from the address the request was sent to.
            let reply = UdpMetadata {
                endpoint: meta.endpoint,
                local_address: meta.local_address,
                meta: PacketMeta::default(),
            };
            if s.send_slice(&self.scratch, reply).is_ok() {
                self.stats.responses += 1;
            }
        }
    }
}

/// Settings of a [`UdpClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpClientConfig {
    /// Where to send (a VIP, or a server directly).
    pub target: Endpoint,
    /// Source address; `None` for the host's first address of the target's family.
    pub local_addr: Option<IpAddr>,
    /// Client id, carried in every datagram; selects the patterns.
    pub id: u64,
    /// Exchanges to make, one after the other.
    pub exchanges: u32,
    /// Request payload bytes (after the 16-byte header).
    pub request_len: u32,
    /// Response payload bytes asked for.
    pub response_len: u32,
    /// How long to wait for a response before sending the request again.
    pub retry_after: Duration,
    /// Sends per exchange before it counts as timed out.
    pub attempts: u32,
    /// Nothing is sent before this.
    pub start: Instant,
}

impl UdpClientConfig {
    /// `exchanges` exchanges with `target`, 100-byte requests and 200-byte
    /// responses, retried every 200 ms up to 10 sends.
    pub fn new(target: Endpoint, exchanges: u32) -> Self {
        Self {
            target,
            local_addr: None,
            id: 0,
            exchanges,
            request_len: 100,
            response_len: 200,
            retry_after: Duration::from_millis(200),
            attempts: 10,
            start: Instant::ZERO,
        }
    }
}

/// One request/response exchange of a [`UdpClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// Sequence number, from zero.
    pub seq: u32,
    /// Sends made.
    pub attempts: u32,
    /// When the first send was made.
    pub started: Instant,
    /// When it ended.
    pub finished: Option<Instant>,
    /// How it ended.
    pub outcome: Outcome,
}

/// Makes numbered exchanges with one endpoint, one at a time, from one port.
#[derive(Debug)]
pub struct UdpClient {
    cfg: UdpClientConfig,
    socket: Option<(SocketHandle, u16)>,
    exchanges: Vec<Exchange>,
    deadline: Option<Instant>,
    /// Responses to earlier attempts or exchanges, ignored.
    stale: u64,
    ok: usize,
    scratch: Vec<u8>,
}

impl UdpClient {
    /// A client with `cfg`; it starts once polled at or after `cfg.start`.
    pub fn new(cfg: UdpClientConfig) -> Self {
        Self {
            cfg,
            socket: None,
            exchanges: Vec::new(),
            deadline: None,
            stale: 0,
            ok: 0,
            scratch: Vec::new(),
        }
    }

    /// Every exchange started, in order.
    pub fn exchanges(&self) -> &[Exchange] {
        &self.exchanges
    }

    /// All exchanges have ended.
    pub fn finished(&self) -> bool {
        self.exchanges.len() == self.cfg.exchanges as usize
            && self.exchanges.last().is_none_or(|e| e.outcome.is_final())
    }

    /// Exchanges that ended [`Outcome::Ok`].
    pub fn ok_count(&self) -> usize {
        self.ok
    }

    /// Sends beyond the first, over all exchanges.
    pub fn retries(&self) -> u64 {
        self.exchanges.iter().map(|e| u64::from(e.attempts.saturating_sub(1))).sum()
    }

    /// Responses that answered an exchange already done (duplicates,
    /// answers to retries).
    pub fn stale(&self) -> u64 {
        self.stale
    }

    /// The client's source port, once bound.
    pub fn local_port(&self) -> Option<u16> {
        self.socket.map(|(_, p)| p)
    }

    fn send(&mut self, stack: &mut Stack<'_>, handle: SocketHandle, seq: u32) {
        let id = self.cfg.id;
        let len = HEADER_LEN + self.cfg.request_len as usize;
        self.scratch.resize(len, 0);
        let h = Header { id, a: seq, response_len: self.cfg.response_len };
        self.scratch[..HEADER_LEN].copy_from_slice(&h.encode());
        pattern::fill(stream(id, seq), REQUEST, 0, &mut self.scratch[HEADER_LEN..]);
        // A full queue loses the datagram, like a full socket buffer; the retry covers it.
        let _ = stack.udp(handle).send_slice(&self.scratch, to_smol_endpoint(self.cfg.target));
    }

    fn end(&mut self, now: Instant, outcome: Outcome) {
        if let Some(e) = self.exchanges.last_mut() {
            e.finished = Some(now);
            e.outcome = outcome;
            self.ok += usize::from(outcome == Outcome::Ok);
        }
        self.deadline = None;
    }

    fn refuse_all(&mut self, now: Instant) {
        while self.exchanges.len() < self.cfg.exchanges as usize {
            let seq = self.exchanges.len() as u32;
            self.exchanges.push(Exchange {
                seq,
                attempts: 0,
                started: now,
                finished: Some(now),
                outcome: Outcome::Refused,
            });
        }
        self.deadline = None;
    }
}

impl App for UdpClient {
    fn poll(&mut self, stack: &mut Stack<'_>) {
        let now = stack.now();
        if now < self.cfg.start || self.finished() {
            return;
        }
        let target = self.cfg.target;
        let (handle, _) = match self.socket {
            Some(s) => s,
            None => {
                let addr = self.cfg.local_addr.or_else(|| stack.addr_for(target.addr));
                let fits = HEADER_LEN + self.cfg.request_len as usize + overhead(target.addr) <= stack.mtu();
                let (Some(addr), Some(port), true) = (addr, stack.alloc_port(), fits) else {
                    return self.refuse_all(now);
                };
                let h = stack.add_udp(64, 64 << 10);
                let ep = IpListenEndpoint { addr: Some(addr.into()), port };
                stack.udp(h).bind(ep).expect("port is not zero");
                *self.socket.insert((h, port))
            }
        };
        // Responses.
        while stack.udp(handle).can_recv() {
            let s = stack.udp(handle);
            let Ok((data, _)) = s.recv() else { break };
            let current = self.exchanges.last().filter(|e| !e.outcome.is_final());
            let Some(h) = Header::decode(data) else {
                self.stale += 1;
                continue;
            };
            match current {
                Some(e) if h.id == self.cfg.id && h.a == e.seq => {
                    let body = &data[HEADER_LEN..];
                    let outcome = if body.len() != self.cfg.response_len as usize {
                        Outcome::Mismatch { offset: body.len().min(self.cfg.response_len as usize) as u64 }
                    } else {
                        match pattern::check(stream(h.id, h.a), RESPONSE, 0, body) {
                            Some(offset) => Outcome::Mismatch { offset },
                            None => Outcome::Ok,
                        }
                    };
                    self.end(now, outcome);
                }
                _ => self.stale += 1,
            }
        }
        // Retries and timeouts.
        if let Some(deadline) = self.deadline
            && now >= deadline
        {
            let e = self.exchanges.last_mut().expect("a deadline means an exchange");
            if e.attempts < self.cfg.attempts {
                e.attempts += 1;
                let seq = e.seq;
                self.deadline = Some(now + self.cfg.retry_after);
                self.send(stack, handle, seq);
            } else {
                self.end(now, Outcome::TimedOut);
            }
        }
        // Next exchange.
        let idle = self.exchanges.last().is_none_or(|e| e.outcome.is_final());
        if idle && self.exchanges.len() < self.cfg.exchanges as usize {
            let seq = self.exchanges.len() as u32;
            self.exchanges.push(Exchange {
                seq,
                attempts: 1,
                started: now,
                finished: None,
                outcome: Outcome::Pending,
            });
            self.deadline = Some(now + self.cfg.retry_after);
            self.send(stack, handle, seq);
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        if self.socket.is_none() && !self.finished() {
            return Some(self.cfg.start);
        }
        self.deadline
    }
}
