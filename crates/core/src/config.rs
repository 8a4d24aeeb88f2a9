//! What the control plane tells the core: services, reals, timeouts.
//!
//! Plain data with defaults. Validation that needs the whole picture (a VIP
//! used twice, a real added twice) happens in [`crate::Engine`]'s control
//! methods, which either apply a change whole or return an error and change nothing.

use core::time::Duration;
use std::net::IpAddr;

use crate::addr::{Endpoint, Proto};
use crate::tcp_state::TcpState;

/// Scheduling algorithm of a service; names as in ipvsadm `-s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SchedKind {
    /// Round robin over reals with non-zero weight.
    Rr,
    /// Smooth weighted round robin: picks interleave in proportion to weight.
    #[default]
    Wrr,
    /// Least connections.
    Lc,
    /// Weighted least connections.
    Wlc,
    /// Source hashing: the client address picks the real.
    Sh,
    /// Maglev hashing, weighted: the same real on every node and release.
    Mh,
}

impl SchedKind {
    /// Every scheduler.
    pub const ALL: &'static [Self] = &[Self::Rr, Self::Wrr, Self::Lc, Self::Wlc, Self::Sh, Self::Mh];

    /// The ipvsadm name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Lc => "lc",
            Self::Wlc => "wlc",
            Self::Sh => "sh",
            Self::Mh => "mh",
        }
    }

    /// The scheduler for an ipvsadm name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.name() == name)
    }
}

/// Idle timeouts per TCP state, and for UDP.
///
/// Defaults are the classic LVS values; the control plane may override them
/// globally and per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Indexed by [`TcpState`] as `usize`.
    pub tcp: [Duration; TcpState::COUNT],
    /// Idle timeout of a UDP flow.
    pub udp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        let mut tcp = [s(2); TcpState::COUNT];
        for (state, secs) in [
            (TcpState::None, 2),
            (TcpState::Established, 900),
            (TcpState::SynSent, 3),
            (TcpState::SynRecv, 30),
            (TcpState::FinWait, 3),
            (TcpState::TimeWait, 3),
            (TcpState::Close, 3),
            (TcpState::CloseWait, 3),
            (TcpState::LastAck, 3),
            (TcpState::Listen, 120),
            (TcpState::SynAck, 30),
        ] {
            tcp[state as usize] = s(secs);
        }
        Self { tcp, udp: s(300) }
    }
}

impl Timeouts {
    /// The idle timeout of a TCP connection in `state`.
    pub fn tcp(&self, state: TcpState) -> Duration {
        self.tcp[state as usize]
    }

    /// Set the timeout of one TCP state.
    pub fn set_tcp(&mut self, state: TcpState, timeout: Duration) {
        self.tcp[state as usize] = timeout;
    }
}

/// A virtual service: protocol, VIP and port, and how to balance it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Transport protocol.
    pub proto: Proto,
    /// The VIP and port clients connect to.
    pub vip: Endpoint,
    /// How a real is chosen for a new connection.
    pub sched: SchedKind,
    /// Local addresses connections toward the reals are sourced from.
    pub laddrs: Vec<IpAddr>,
    /// Idle timeouts; `None` uses the engine's.
    pub timeouts: Option<Timeouts>,
    /// Clamp the MSS option of SYN segments in both directions to this value.
    pub mss_clamp: Option<u16>,
    /// Answer SYNs with cookies, open a real's side only for proven clients.
    pub synproxy: bool,
    /// Tell the real the client's address in a TCP option (kind 254, TOA).
    pub toa: bool,
    /// Tell the real the client's address in a PROXY protocol header.
    pub proxy_protocol: ProxyProtocol,
}

impl ServiceConfig {
    /// A service with defaults: wrr, no local addresses, engine timeouts.
    pub fn new(proto: Proto, vip: Endpoint) -> Self {
        Self {
            proto,
            vip,
            sched: SchedKind::default(),
            laddrs: Vec::new(),
            timeouts: None,
            mss_clamp: None,
            synproxy: false,
            toa: false,
            proxy_protocol: ProxyProtocol::Disabled,
        }
    }
}

/// Which PROXY protocol header, if any, starts the byte stream toward a real.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProxyProtocol {
    /// No header: the real's stream is the client's.
    #[default]
    Disabled,
    /// The text header, `PROXY TCP4 client vip cport vport\r\n`.
    V1,
    /// The binary header (fixed 16-byte preamble and the addresses).
    V2,
}

impl ProxyProtocol {
    /// Every setting.
    pub const ALL: &'static [Self] = &[Self::Disabled, Self::V1, Self::V2];

    /// The name in the config file and in `rvs adm --proxy-protocol`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Disabled => "disable",
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }

    /// The setting for a name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.name() == name)
    }
}

/// A real server behind a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealConfig {
    /// Address and port connections are forwarded to.
    pub endpoint: Endpoint,
    /// Share of new connections; 0 quiesces the real (existing connections stay).
    pub weight: u32,
}

/// How the SYN toward a real is retransmitted while SYNProxy holds a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetransmitMode {
    /// RTO from the real's measured handshake RTT (RFC 6298), exponential
    /// backoff, failover to another real after `syn_retries` unanswered tries.
    #[default]
    Adaptive,
    /// The classic kernel FullNAT behaviour, for comparison only: a fixed
    /// 3 s retransmit riding the connection's expiry, 3 tries, no failover.
    Classic,
}

impl RetransmitMode {
    /// The name in the config file.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Adaptive => "adaptive",
            Self::Classic => "classic",
        }
    }
}

/// SYNProxy settings, engine-wide; a service turns SYNProxy on with
/// [`ServiceConfig::synproxy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynproxyConfig {
    /// Largest MSS the SYN-ACK to an IPv4 client announces; IPv6 clients are told 20 less (their larger header on the same links).
    pub mss_max: u16,
    /// Window scale announced to clients until a real's SYN-ACK teaches another.
    pub wscale: u8,
    /// Offer SACK to clients that offer it.
    pub sack: bool,
    /// Offer timestamps to clients that offer them.
    pub timestamps: bool,
    /// TTL of packets the engine builds.
    pub ttl: u8,
    /// How long a cookie stays valid.
    pub cookie_validity: Duration,
    /// Answer an ACK with a bad cookie with an RST (else drop it silently; counted either way).
    pub rst_on_bad_cookie: bool,
    /// Identical real→client segments in a row beyond which they are dropped.
    pub ack_storm_threshold: u32,
    /// Client packets kept per connection while the real's handshake is open.
    pub max_stored_packets: usize,
    /// Open the real's handshake only once the client sends data.
    pub defer_rs_syn: bool,
    /// Smallest retransmission timeout toward a real.
    pub rto_floor: Duration,
    /// Retransmission timeout before a real has an RTT sample.
    pub rto_initial: Duration,
    /// Unanswered SYNs to one real before the client moves to another.
    pub syn_retries: u8,
    /// Adaptive (default) or classic retransmission.
    pub retransmit_mode: RetransmitMode,
}

impl Default for SynproxyConfig {
    fn default() -> Self {
        Self {
            mss_max: 1460,
            wscale: 7,
            sack: true,
            timestamps: true,
            ttl: 64,
            cookie_validity: Duration::from_secs(120),
            rst_on_bad_cookie: true,
            ack_storm_threshold: 10,
            max_stored_packets: 3,
            defer_rs_syn: false,
            rto_floor: Duration::from_millis(10),
            rto_initial: Duration::from_millis(200),
            syn_retries: 2,
            retransmit_mode: RetransmitMode::Adaptive,
        }
    }
}

/// Settings of one data-path worker's engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Most connections the table holds; beyond it new flows drop as `TableFull`.
    pub max_conns: usize,
    /// Connection slots reserved up front, so the table does not grow on the data path.
    pub prealloc_conns: usize,
    /// Default idle timeouts.
    pub timeouts: Timeouts,
    /// How long a local port rests before it is used again toward the same
    /// real, when its last connection did not end so that the real's
    /// TIME_WAIT accepts a new SYN at once (see `real_clock.rs`): the
    /// reals' TIME_WAIT length. Other ports are reused at once.
    pub port_quarantine: Duration,
    /// Local ports used, inclusive.
    pub port_range: (u16, u16),
    /// This engine's share of the local ports: ports with `port % count == index`.
    pub worker: WorkerSlice,
    /// Decrement the TTL of forwarded packets.
    pub decrement_ttl: bool,
    /// SYNProxy settings for services that enable it.
    pub synproxy: SynproxyConfig,
    /// RSTs per second answering packets of connections the engine does
    /// not know (0: none); RSTs to connections it forgets are not limited.
    pub reset_rate: u32,
    /// Offer established connections to the device's fast path
    /// ([`crate::fast_path`]); the daemon sets it from `[driver] fast_path`
    /// when the device has one.
    pub fast_path: bool,
    /// Packets a connection forwards through the engine before it is
    /// offered to the fast path (0: as soon as it is eligible; from 65533
    /// on, never).
    pub fast_path_after: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_conns: 2_000_000,
            prealloc_conns: 0,
            timeouts: Timeouts::default(),
            port_quarantine: Duration::from_secs(60),
            port_range: (1024, 65535),
            worker: WorkerSlice::SINGLE,
            decrement_ttl: true,
            synproxy: SynproxyConfig::default(),
            reset_rate: 10_000,
            fast_path: false,
            fast_path_after: 0,
        }
    }
}

/// Which of several independent workers an engine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSlice {
    /// This worker, `0..count`.
    pub index: u16,
    /// How many workers share the local ports.
    pub count: u16,
}

impl WorkerSlice {
    /// The only worker.
    pub const SINGLE: Self = Self { index: 0, count: 1 };

    /// Whether `port` belongs to this worker.
    pub const fn owns(self, port: u16) -> bool {
        self.count <= 1 || port % self.count == self.index
    }
}
