//! The IP header of a packet replaced by the other family's (RFC 7915 §4.1
//! and §5.1), the transport segment moved behind it.

use std::net::IpAddr;

use rvs_wire::{ip_protocol, ipv4, ipv6, udp};

/// What the new header takes from the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Carried {
    /// IPv4 TOS, IPv6 traffic class: the same DSCP and ECN bits.
    pub(crate) tos: u8,
    /// TTL or hop limit, as it goes out (already decremented if it is to be).
    pub(crate) ttl: u8,
    /// The upper-layer protocol (IPv6: past any extension header).
    pub(crate) protocol: u8,
}

impl Carried {
    /// Read from the header at the start of `head` (either family); `protocol`
    /// is the upper layer the caller found past any extension header.
    pub(crate) fn read(head: &[u8], protocol: u8, decrement_ttl: bool) -> Self {
        let (tos, ttl) = match head.first().map(|b| b >> 4) {
            Some(4) => {
                let h = ipv4::Packet::new_unchecked(head);
                (h.dscp_ecn(), h.ttl())
            }
            _ => {
                let h = ipv6::Packet::new_unchecked(head);
                (h.traffic_class(), h.hop_limit())
            }
        };
        let ttl = if decrement_ttl { ttl.saturating_sub(1) } else { ttl };
        Self { tos, ttl, protocol }
    }
}

/// Length of the header [`write`] emits for a packet to `dst`.
pub(crate) fn len_for(dst: IpAddr) -> usize {
    if dst.is_ipv4() { ipv4::HEADER_LEN } else { ipv6::HEADER_LEN }
}

/// Write the header of a packet from `src` to `dst` carrying `payload_len`
/// bytes into the start of `out` (at least [`len_for`] long); false if the
/// families of `src` and `dst` differ or `out` is short.
///
/// IPv4: DF set and identification 0 on every packet. RFC 7915 §5.1 clears
/// DF on packets of 1260 bytes or less so that an IPv4 link with an MTU
/// below 1280 can fragment them, which then need identifications unique per
/// flow. The real network behind a balancer is its own, with no such link
/// (it carries full-size IPv6 from the client side as well); with DF on
/// every packet each datagram is atomic (RFC 6864 §4), needs no
/// identification state, and path MTU discovery works end to end through
/// the ICMP translation ([`super::icmp`]). An IPv4 packet is never
/// fragmented by the translation either: fragments are dropped before it.
///
/// IPv6: flow label 0 (RFC 7915 §4.1: the translator sets it to zero; no
/// flow label comes from IPv4).
pub(crate) fn write(out: &mut [u8], src: IpAddr, dst: IpAddr, payload_len: usize, c: Carried) -> bool {
    if out.len() < len_for(dst) {
        return false;
    }
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let Ok(total) = u16::try_from(ipv4::HEADER_LEN + payload_len) else { return false };
            let mut h = ipv4::Packet::new_unchecked(&mut out[..ipv4::HEADER_LEN]);
            h.set_version(4);
            h.set_header_len(ipv4::HEADER_LEN);
            h.set_dscp_ecn(c.tos);
            h.set_total_len(total);
            h.set_ident(0);
            h.set_more_frags(false);
            h.set_frag_offset(0);
            h.set_dont_frag(true);
            h.set_ttl(c.ttl);
            h.set_protocol(c.protocol);
            h.set_src_addr(s);
            h.set_dst_addr(d);
            h.fill_checksum();
            true
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let Ok(len) = u16::try_from(payload_len) else { return false };
            let mut h = ipv6::Packet::new_unchecked(&mut out[..ipv6::HEADER_LEN]);
            h.set_version(6);
            h.set_traffic_class(c.tos);
            h.set_flow_label(0);
            h.set_payload_len(len);
            h.set_next_header(c.protocol);
            h.set_hop_limit(c.ttl);
            h.set_src_addr(s);
            h.set_dst_addr(d);
            true
        }
        _ => false,
    }
}

/// Write into `out` the packet `pkt` (its IP header, extension headers
/// included, `header_len` bytes) with a header of the other family from
/// `src` to `dst` instead; returns the new length, or `None` if it would not
/// fit `out`.
///
/// The segment must be rewritten already for `src` and `dst`: its checksum
/// covers them in its pseudo-header (both families sum the same
/// pseudo-header words but for the addresses, and
/// `checksum::update_addr` swaps addresses of different lengths). One
/// thing is left to do here: a UDP datagram that came over IPv4 without a
/// checksum gets one, which IPv6 makes mandatory (RFC 8200 §8.1).
pub(crate) fn translate(
    out: &mut [u8],
    pkt: &[u8],
    header_len: usize,
    src: IpAddr,
    dst: IpAddr,
    carried: Carried,
) -> Option<usize> {
    let seg = pkt.get(header_len..)?;
    let new_header = len_for(dst);
    let new_len = new_header + seg.len();
    out.get_mut(new_header..new_len)?.copy_from_slice(seg);
    finish(out, new_len, src, dst, carried)
}

/// [`translate`] in place: the packet in `buf[..len]` gets the other
/// family's header, its segment moved behind it.
pub(crate) fn swap(
    buf: &mut [u8],
    header_len: usize,
    len: usize,
    src: IpAddr,
    dst: IpAddr,
    carried: Carried,
) -> Option<usize> {
    let seg_len = len.checked_sub(header_len)?;
    let new_header = len_for(dst);
    let new_len = new_header + seg_len;
    if new_len > buf.len() || len > buf.len() {
        return None;
    }
    buf.copy_within(header_len..len, new_header);
    finish(buf, new_len, src, dst, carried)
}

/// The header in front of the segment already at its place in
/// `buf[..new_len]`, and the UDP checksum IPv6 requires.
fn finish(buf: &mut [u8], new_len: usize, src: IpAddr, dst: IpAddr, carried: Carried) -> Option<usize> {
    let new_header = len_for(dst);
    if !write(buf, src, dst, new_len - new_header, carried) {
        return None;
    }
    if carried.protocol == ip_protocol::UDP && dst.is_ipv6() {
        let mut u = udp::Packet::new_unchecked(&mut buf[new_header..new_len]);
        if u.checksum() == 0 {
            u.fill_checksum(src, dst);
        }
    }
    Some(new_len)
}
