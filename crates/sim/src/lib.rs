//! A deterministic simulated network for testing rvs end to end.
//!
//! Hosts running real TCP/UDP stacks (smoltcp) sit around a [`Middlebox`]
//! (the load balancer under test, or the plain [`Router`]) on links that
//! delay, lose, duplicate and reorder packets. Everything random comes from
//! one seed and time is simulated, so a run repeats exactly and a failing
//! seed can be replayed. Every packet is captured in memory and can be
//! written as a pcap file, automatically when a test fails
//! ([`Network::pcap_on_failure`]).
//!
//! The [`app`] module has clients and servers that check every byte they
//! receive, so "all transfers completed" means "completed byte-exact".
//!
//! Hosts speak IPv4 and IPv6. A link narrower than a packet drops it and
//! answers its sender with ICMP fragmentation needed or packet too big, and
//! hosts honour those (path-MTU discovery). [`Family`] and
//! [`family_tests!`] run one scenario over IPv4, IPv6, NAT64 and NAT46.
//!
//! ```
//! use core::time::Duration;
//! use rvs_core::{Endpoint, Instant};
//! use rvs_sim::app::{TcpClient, TcpClientConfig, TcpServer, TcpServerConfig};
//! use rvs_sim::{LinkConfig, Network, NetworkConfig, Router};
//!
//! let mut net = Network::new(Router, NetworkConfig::seeded(1));
//! let client = net.add_host("client", &["10.0.0.1".parse().unwrap()], LinkConfig::lossy(0.01));
//! let server = net.add_host("server", &["10.0.1.1".parse().unwrap()], LinkConfig::lossy(0.01));
//! let srv = net.add_app(server, TcpServer::new(TcpServerConfig::new(80)));
//! let target = Endpoint::new("10.0.1.1".parse().unwrap(), 80);
//! let cli = net.add_app(client, TcpClient::new(TcpClientConfig::new(target, 4, 10_000, 20_000)));
//! let _pcap = net.pcap_on_failure("doc_example");
//! assert!(net.run_for(Duration::from_secs(30), |n| n.app(&cli).finished()));
//! assert_eq!(net.app(&cli).ok_count(), 4);
//! assert_eq!(net.app(&srv).stats().completed, 4);
//! ```

#![warn(missing_docs)]

pub mod app;
mod capture;
mod family;
mod fast_path;
mod host;
mod lb;
mod link;
mod middlebox;
mod network;
pub mod packet;
mod rng;

pub use capture::{Capture, CaptureRecord, LINKTYPE_RAW, PCAP_MAGIC_NANOS, PcapGuard, pcap_dir};
pub use family::{Family, mirror};
pub use fast_path::{FastPathLb, REPORT_INTERVAL};
pub use host::{App, AppHandle, EPHEMERAL_FIRST, EPHEMERAL_LAST, HostId, HostStats, Stack};
pub use link::{LinkConfig, LinkDir, LinkStats};
pub use middlebox::{Middlebox, Outbox, Router};
pub use network::{Network, NetworkConfig, NetworkStats, ROUTER_V4, ROUTER_V6};
pub use packet::PacketInfo;
/// The TCP/IP stack the hosts run, for apps that use sockets directly.
pub use smoltcp;
