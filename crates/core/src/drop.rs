//! Why a packet was dropped. Every drop in rvs has exactly one reason, and
//! every reason is a counter and a metric label.

use core::fmt;

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $label:literal,)*) => {
        /// The condition under which the load balancer dropped a packet.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, in declaration order (the counter index order).
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The metric label: stable, snake_case.
            pub const fn label(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than the headers it announces.
    Truncated => "truncated",
    /// A header field is impossible (bad version, header length, total length).
    Malformed => "malformed",
    /// A checksum the load balancer must verify is wrong.
    BadChecksum => "bad_checksum",
    /// An IP fragment (for IPv6, any fragment header): ports are not in every fragment, so fragments cannot be balanced.
    Fragment => "fragment",
    /// An IPv6 extension header chain that does not lead to a transport header
    /// (truncated, too long, or with headers a load balancer cannot pass on).
    BadExtensionHeaders => "bad_extension_headers",
    /// A UDP datagram over IPv6 with no checksum (zero), which RFC 8200 forbids.
    MissingUdpChecksum => "missing_udp_checksum",
    /// Addressed to a VIP or LIP with a transport the load balancer does not forward.
    UnsupportedProtocol => "unsupported_protocol",
    /// Addressed to a VIP address on a port with no service.
    NoService => "no_service",
    /// A TCP segment other than a SYN for a client flow with no connection.
    NoConnection => "no_connection",
    /// A packet to a local address that matches no connection.
    StrayReturn => "stray_return",
    /// The service has no real that takes new connections.
    NoReal => "no_real",
    /// The service has no local address to source connections from.
    NoLocalAddress => "no_local_address",
    /// Every local port toward the chosen real is in use or in quarantine.
    NoLocalPort => "no_local_port",
    /// The connection table is at its configured maximum.
    TableFull => "table_full",
    /// The TTL or hop limit would reach zero.
    TtlExpired => "ttl_expired",
    /// TCP flags no valid segment carries (SYN with FIN or RST, or no flags).
    BadTcpFlags => "bad_tcp_flags",
    /// An ICMP error whose embedded packet belongs to no connection.
    IcmpNoConnection => "icmp_no_connection",
    /// An ICMP message the load balancer does not translate (echo, redirect, ...).
    IcmpUnsupported => "icmp_unsupported",
    /// An ICMP error with no counterpart in the other family (RFC 7915), about a translated connection.
    IcmpUntranslatable => "icmp_untranslatable",
    /// A packet that would not fit a packet slot once translated to the other family.
    TooBigToTranslate => "too_big_to_translate",
    /// Not addressed to any VIP or LIP of this load balancer.
    NotForUs => "not_for_us",
    /// An ACK to a SYNProxy service with no connection whose cookie is wrong or expired.
    BadCookie => "bad_cookie",
    /// A client packet while SYNProxy is still opening the real's side, beyond what is kept for replay.
    HandshakePending => "handshake_pending",
    /// A real→client segment repeated past the ack-storm threshold.
    AckStorm => "ack_storm",
    /// The engine's queue of packets it built itself is full.
    TxQueueFull => "tx_queue_full",
    /// The driver could not hand the packet to the network (device or ring full, or gone).
    TxFailed => "tx_failed",
    /// Dropped on purpose by the driver's fault injector (tests and `rvs lab --loss`).
    FaultInjected => "fault_injected",
    /// The driver knew no link-layer address for the next hop and could not hand the packet to the kernel either.
    NoNeighbour => "no_neighbour",
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One counter per [`DropReason`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::ALL.len()]);

impl DropCounters {
    /// Count one drop.
    pub fn add(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    /// Count `n` drops for `reason` at once (a device's own counts).
    pub fn add_many(&mut self, reason: DropReason, n: u64) {
        self.0[reason as usize] += n;
    }

    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Every reason with its count, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.0[r as usize]))
    }

    /// Add another set of counters (a device's drops, other workers').
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    /// The sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert!(seen.insert(r.label()));
            assert!(r.label().chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
    }

    #[test]
    fn counters_count() {
        let mut c = DropCounters::default();
        c.add(DropReason::NoLocalPort);
        c.add(DropReason::NoLocalPort);
        c.add(DropReason::Fragment);
        assert_eq!(c.get(DropReason::NoLocalPort), 2);
        assert_eq!(c.total(), 3);
    }
}
