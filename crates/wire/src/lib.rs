//! Packet views, emitters and checksums for the rvs data path.
//!
//! The crate is layered the way packets are:
//!
//! * [`ethernet`] — Ethernet II frames (only what a layer-4 balancer needs to
//!   find the network header: addresses and the EtherType).
//! * [`ipv4`] and [`ipv6`] — network headers. IPv4 options are carried but
//!   never interpreted; IPv6 extension headers are walked to the upper-layer
//!   header (hop-by-hop, routing, destination options) or refused.
//! * [`tcp`], [`udp`], [`icmpv4`] and [`icmpv6`] — transport headers, TCP
//!   options and ICMP error messages; [`tcp_options`] reads and rewrites a TCP options
//!   area as a whole, [`tcp_seq`] compares sequence numbers modulo 2^32.
//! * [`checksum`] — the Internet checksum (RFC 1071) with the incremental
//!   update of RFC 1624 that address and port rewriting relies on.
//!
//! Every protocol module follows the same pattern. A `Packet` (or `Frame`) is
//! a thin view over a byte buffer: `new_checked` validates the lengths a single
//! time, after which getters and setters are plain loads and stores at fixed
//! offsets. A `Repr` is a plain struct that can be parsed from a view and
//! emitted into a buffer, for building packets from scratch. Parsing a `Repr`
//! never verifies a checksum; each view has a `verify_checksum` for that, and
//! emitting fills in a correct one wherever the header has one.
//!
//! # No-panic contract
//!
//! Nothing in this crate panics, whatever the bytes. Views that passed
//! `new_checked` return exactly the fields on the wire. Views built with
//! `new_unchecked` over a buffer that `check_len` would reject still never
//! panic: reads of missing bytes return zero or an empty slice and writes to
//! missing bytes are dropped. That degraded behaviour is a safety net, not an
//! interface: validate untrusted input with `new_checked`.
//!
//! The crate contains no `unsafe` code and never allocates.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

/// Defines a view over a byte buffer, the shape every protocol module
/// shares: the struct, `new_unchecked`, `new_checked` (through the module's
/// own `check_len`), `into_inner` and `AsRef<[u8]>`.
macro_rules! view {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps a buffer without validating it. Accessors will not
            /// panic, but they only return meaningful values if
            /// [`check_len`](Self::check_len) would succeed.
            pub const fn new_unchecked(buffer: T) -> Self {
                Self { buffer }
            }

            /// Wraps a buffer after [`check_len`](Self::check_len) has accepted it.
            pub fn new_checked(buffer: T) -> Result<Self, crate::Error> {
                let view = Self::new_unchecked(buffer);
                view.check_len()?;
                Ok(view)
            }

            /// Returns the underlying buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }

        impl<T: AsRef<[u8]>> AsRef<[u8]> for $name<T> {
            fn as_ref(&self) -> &[u8] {
                self.buffer.as_ref()
            }
        }
    };
}

mod access;
pub mod checksum;
mod error;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod tcp_options;
pub mod tcp_seq;
pub mod udp;

pub use error::Error;

#[cfg(test)]
mod golden;

/// IP protocol numbers (the IPv4 `protocol` field and IPv6 `next header`),
/// as assigned by IANA.
pub mod ip_protocol {
    /// Internet Control Message Protocol (RFC 792).
    pub const ICMP: u8 = 1;
    /// Transmission Control Protocol (RFC 9293).
    pub const TCP: u8 = 6;
    /// User Datagram Protocol (RFC 768).
    pub const UDP: u8 = 17;
    /// ICMP for IPv6 (RFC 4443).
    pub const ICMPV6: u8 = 58;
}
