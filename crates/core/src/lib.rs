//! The rvs load-balancing core: FullNAT for TCP and UDP, without I/O.
//!
//! This crate holds every decision the data path makes (which real, which
//! local address and port, how a packet is rewritten, when a connection
//! expires) and none of the means: it opens no socket, reads no clock and
//! draws no random number. Time comes in as [`Instant`] arguments, secrets
//! and seeds come in at construction, packets come in as byte buffers and go
//! back out rewritten in place with a [`Verdict`]. Given the same inputs, an
//! [`Engine`] produces the same outputs, which is what lets the simulator and
//! the scripted tests replay any run exactly.
//!
//! Drivers (TUN, AF_XDP, the simulator) move bytes and call
//! [`Engine::handle`], [`Engine::handle_timeout`] and [`Engine::poll_timeout`];
//! the control plane calls the `add_*`/`edit_*`/`remove_*` methods, each of which
//! applies whole or returns an error and changes nothing. One engine serves
//! one worker; several workers split the local ports ([`WorkerSlice`]) so
//! return traffic can be steered to its owner without shared state.
//!
//! A device that can forward established connections itself (an XDP
//! program) takes them over through [`fast_path`]: the engine offers each
//! connection once it is established, hands the device the exact rewrite,
//! and counts what the device reports as its own traffic.

#![warn(missing_docs)]

pub mod addr;
mod client_addr;
pub mod config;
pub mod conn;
mod ctx;
pub mod drop;
mod emit;
mod engine;
pub mod fast_path;
pub mod hash;
mod icmp;
pub mod io;
pub mod laddr;
mod nat;
mod packet;
mod passive;
mod real;
mod real_clock;
pub mod sched;
pub mod service;
mod slab;
mod synproxy;
pub mod tcp_state;
pub mod time;
mod xlat;

pub use addr::{Endpoint, FlowKey, Proto};
pub use client_addr::ClientAddrStats;
pub use config::{
    EngineConfig, ProxyProtocol, RealConfig, RetransmitMode, SchedKind, ServiceConfig, SynproxyConfig,
    Timeouts, WorkerSlice,
};
pub use drop::{DropCounters, DropReason};
pub use emit::reset::ResetStats;
pub use engine::{ConfigError, Engine, Event, Stats, Verdict};
pub use fast_path::{
    Applied, FastPathCounters, FastPathStats, FlowId, FlowProgress, FlowReport, FlowRule, Offload,
};
pub use service::{HandshakeStats, PassiveCounters};
pub use synproxy::{CookieKeys, SynAckTemplate, SynproxyStats};
pub use tcp_state::{Side, TcpState};
pub use time::Instant;
