//! NAT64 and NAT46: packets of a connection whose client side and real
//! side are of different IP families, translated per RFC 7915.
//!
//! The FullNAT rewrite does the transport part as for any connection
//! (ports, sequence space, options, the checksum over the new addresses:
//! the pseudo-headers of both families sum the same words but for the
//! addresses). What is left is the IP header: [`header::translate`] replaces it
//! by the other family's in a buffer with room for the larger one (a packet
//! slot), and [`icmp::translate_error`] turns an ICMP error about such a
//! connection into the other family's. Both are pure functions of bytes.
//!
//! The IPv6 header is 20 bytes longer than IPv4's, so TCP's maximum segment
//! size shrinks by 20 where a segment goes from IPv4 to IPv6
//! ([`mss_room`]): a full-size segment from either side then fits the
//! other side's MTU, and the translation never needs to fragment.

pub(crate) mod header;
pub(crate) mod icmp;
mod path;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

/// Whether a packet from `from` to `to` (of one connection's two sides) changes family.
pub(crate) fn translates(from: IpAddr, to: IpAddr) -> bool {
    from.is_ipv4() != to.is_ipv4()
}

/// How much lower the MSS of a SYN from a host of `from`'s family must go
/// on its way to a host of `to`'s: 20 from IPv4 to IPv6, else 0.
///
/// The MSS a SYN carries bounds the segments its receiver sends back. An
/// IPv4 host announces its MTU less 40; segments of that size from the IPv6
/// side would be 20 bytes over that MTU on the IPv6 side. The other way, an
/// IPv6 host's segments shrink by 20 when translated, and fit.
pub(crate) fn mss_room(from: IpAddr, to: IpAddr) -> u16 {
    if from.is_ipv4() && to.is_ipv6() { 20 } else { 0 }
}

/// The MSS SYNProxy announces to a client at `client` of a service with
/// local addresses `laddrs`, given `mss` for a same-family connection.
///
/// SYNProxy answers for a real of the backend family. Translated either way,
/// the client's full-size segments must fit a 1500-byte (`mss_max`) link
/// on the IPv6 side once translated: it is told the IPv6 figure, 20 less.
pub(crate) fn synproxy_mss(mss: u16, mss_max: u16, client: IpAddr, laddrs: &[IpAddr]) -> u16 {
    match laddrs.first() {
        Some(&backend) if translates(client, backend) => mss.min(mss_max.saturating_sub(20)),
        _ => mss,
    }
}
