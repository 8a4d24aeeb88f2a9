//! ICMP errors about forwarded flows, translated across the load balancer.
//!
//! An ICMP error (destination unreachable, fragmentation needed, time
//! exceeded, parameter problem) quotes the IP header and at least the first
//! 8 bytes of the packet that caused it (RFC 792, RFC 1812 §4.3.2.3); an
//! ICMPv6 error (the same, packet too big for fragmentation needed) quotes
//! as much as fits in 1280 bytes (RFC 4443 §2.4). When
//! the quoted packet belongs to a tracked connection, the error is rewritten
//! for the other side: outer addresses as for the connection's packets in
//! that direction, and the quoted packet turned back into what that side
//! itself sent (addresses, ports, sequence number), so the sender's stack
//! matches it to its socket. An error from inside the real network appears
//! to come from the VIP, which keeps internal addresses hidden.

use std::net::IpAddr;

use rvs_wire::tcp_seq::SeqNumber;
use rvs_wire::{checksum, icmpv4, icmpv6, ip_protocol, ipv4, ipv6, tcp, udp};

use crate::addr::{Endpoint, FlowKey, Proto};
use crate::conn::Connections;
use crate::drop::DropReason;
use crate::packet::{IpInfo, rewrite_ip_header, wire_drop};
use crate::tcp_state::Side;
use crate::xlat::icmp::ErrorBack;

/// Why an ICMP error was not translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Untranslated {
    /// Dropped for this reason.
    Drop(DropReason),
    /// Not about a flow the engine tracks: `NotForUs` if the packet's
    /// destination is not the engine's, else this reason.
    Miss(DropReason),
    /// About a connection whose two sides differ in family: the error is
    /// built anew in the other family ([`crate::xlat::icmp`]) and goes to `to`.
    Across(ErrorBack, Side),
}

/// The packet an ICMP or ICMPv6 error quotes, as far as the translation
/// needs it. Its IP header starts right after the 8-byte ICMP header.
#[derive(Debug, Clone, Copy)]
struct Quote {
    /// Bytes of the quoted IP header (options or extension headers included).
    ihl: usize,
    proto: Proto,
    src: IpAddr,
    dst: IpAddr,
}

/// Whether `ip` carries an ICMP message of its own family (ICMP over IPv4,
/// ICMPv6 over IPv6).
pub(crate) fn is_icmp(ip: &IpInfo) -> bool {
    match ip.src {
        IpAddr::V4(_) => ip.protocol == ip_protocol::ICMP,
        IpAddr::V6(_) => ip.protocol == ip_protocol::ICMPV6,
    }
}

/// Translate the ICMP or ICMPv6 error in `pkt` (IP header described by `ip`)
/// for the other side of the connection its quoted packet belongs to; the
/// side it goes to.
pub(crate) fn translate(
    conns: &Connections,
    decrement_ttl: bool,
    ip: &IpInfo,
    pkt: &mut [u8],
) -> Result<Side, Untranslated> {
    let (head, msg) = pkt.split_at_mut(ip.header_len);
    let quote = match (ip.src, ip.dst) {
        (IpAddr::V6(src), IpAddr::V6(dst)) => read_icmpv6(src, dst, msg)?,
        _ => read_icmpv4(msg)?,
    };
    let (src_port, dst_port) = quoted_ports(quote.proto, &msg[icmpv4::HEADER_LEN + quote.ihl..]);
    let quoted_src = Endpoint::new(quote.src, src_port);
    let quoted_dst = Endpoint::new(quote.dst, dst_port);
    // The quoted packet went *from* the ICMP's receiver; a packet of the
    // same flow coming to us travels the other way.
    let key = FlowKey { proto: quote.proto, src: quoted_dst, dst: quoted_src };
    let no_conn = Untranslated::Drop(DropReason::IcmpNoConnection);
    let lookup = conns.table().lookup(&key).ok_or(no_conn)?;
    let conn = conns.get(lookup.id).ok_or(no_conn)?;
    // Error from the real's side about our LIP → real packet: tell the
    // client, about its own client → VIP packet. And the mirror case.
    let (outer_src, outer_dst, q_src, q_dst, seq_back, to) = match lookup.side {
        Side::Real => {
            (conn.vip.addr, conn.client.addr, conn.client, conn.vip, conn.xlat.c2r_seq, Side::Client)
        }
        Side::Client => {
            (conn.laddr.addr, conn.real.addr, conn.real, conn.laddr, conn.xlat.r2c_seq, Side::Real)
        }
    };
    if crate::xlat::translates(ip.src, outer_dst) {
        let back =
            ErrorBack { src: outer_src, dst: outer_dst, quoted_src: q_src, quoted_dst: q_dst, seq_back };
        return Err(Untranslated::Across(back, to));
    }
    rewrite_ip_header(head, ip, outer_src, outer_dst, decrement_ttl);
    let inner = &mut msg[icmpv4::HEADER_LEN..];
    rewrite_quote(inner, quote.ihl, quote.proto, quoted_src, quoted_dst, q_src, q_dst, seq_back);
    // The quote changed in many places, the pseudo-header of ICMPv6 too:
    // errors are rare, so the checksum is computed again.
    match (outer_src, outer_dst) {
        (IpAddr::V6(src), IpAddr::V6(dst)) => icmpv6::Packet::new_unchecked(msg).fill_checksum(src, dst),
        _ => icmpv4::Packet::new_unchecked(msg).fill_checksum(),
    }
    Ok(to)
}

/// Validate an ICMP message and read the packet its error quotes.
fn read_icmpv4(msg: &[u8]) -> Result<Quote, Untranslated> {
    let icmp = icmpv4::Packet::new_checked(msg).map_err(|e| Untranslated::Drop(wire_drop(e)))?;
    if !icmpv4::is_error(icmp.msg_type()) {
        return Err(Untranslated::Miss(DropReason::IcmpUnsupported));
    }
    if !icmp.verify_checksum() {
        return Err(Untranslated::Drop(DropReason::BadChecksum));
    }
    // The quoted packet: its IP header must be whole, its transport
    // header need only hold the ports (8 bytes are guaranteed).
    let Ok(inner) = ipv4::Packet::new_checked_quoted(icmp.data()) else {
        return Err(Untranslated::Miss(DropReason::Truncated));
    };
    let quote = (inner.header_len(), inner.protocol(), inner.src_addr().into(), inner.dst_addr().into());
    checked_quote(icmp.data(), quote)
}

/// Validate an ICMPv6 message from `src` to `dst` and read the packet its
/// error quotes. Informational messages (echo, neighbour discovery) are not
/// the engine's.
fn read_icmpv6(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, msg: &[u8]) -> Result<Quote, Untranslated> {
    let icmp = icmpv6::Packet::new_checked(msg).map_err(|e| Untranslated::Drop(wire_drop(e)))?;
    if !icmpv6::is_error(icmp.msg_type()) {
        return Err(Untranslated::Miss(DropReason::IcmpUnsupported));
    }
    if !icmp.verify_checksum(src, dst) {
        return Err(Untranslated::Drop(DropReason::BadChecksum));
    }
    let Ok(inner) = ipv6::Packet::new_checked_quoted(icmp.data()) else {
        return Err(Untranslated::Miss(DropReason::Truncated));
    };
    // A quote whose chain does not lead to TCP or UDP (a fragment, say) is
    // of no packet the engine forwarded.
    let Ok((protocol, ihl)) = inner.transport() else {
        return Err(Untranslated::Miss(DropReason::IcmpNoConnection));
    };
    checked_quote(icmp.data(), (ihl, protocol, inner.src_addr().into(), inner.dst_addr().into()))
}

/// The quote (header length, protocol, addresses) if it is of TCP or UDP and
/// holds the transport header's first 8 bytes.
fn checked_quote(
    inner: &[u8],
    (ihl, protocol, src, dst): (usize, u8, IpAddr, IpAddr),
) -> Result<Quote, Untranslated> {
    let Some(proto) = Proto::from_number(protocol) else {
        return Err(Untranslated::Miss(DropReason::IcmpNoConnection));
    };
    if inner.len() < ihl + 8 {
        return Err(Untranslated::Miss(DropReason::Truncated));
    }
    Ok(Quote { ihl, proto, src, dst })
}

/// Bytes of a TCP header up to and including its checksum.
const TCP_CHECKSUM_END: usize = 18;

/// The ports of a quoted transport header (at least 8 bytes).
pub(crate) fn quoted_ports(proto: Proto, l4: &[u8]) -> (u16, u16) {
    match proto {
        Proto::Tcp => {
            let t = tcp::Packet::new_unchecked(l4);
            (t.src_port(), t.dst_port())
        }
        Proto::Udp => {
            let u = udp::Packet::new_unchecked(l4);
            (u.src_port(), u.dst_port())
        }
    }
}

/// Turn the quoted packet into the one the receiver of the error sent:
/// addresses, ports, and the sequence number back in its own space.
#[allow(clippy::too_many_arguments)]
fn rewrite_quote(
    inner: &mut [u8],
    ihl: usize,
    proto: Proto,
    old_src: Endpoint,
    old_dst: Endpoint,
    src: Endpoint,
    dst: Endpoint,
    seq_back: u32,
) {
    let (head, l4) = inner.split_at_mut(ihl);
    let quoted = IpInfo {
        header_len: ihl,
        total_len: ihl + l4.len(),
        src: old_src.addr,
        dst: old_dst.addr,
        protocol: proto.number(),
        ttl: 0,
    };
    rewrite_ip_header(head, &quoted, src.addr, dst.addr, false);
    rewrite_quoted_l4(l4, proto, (old_src, old_dst), (src, dst), seq_back);
}

/// The quoted transport header (at least its first 8 bytes) of a packet
/// that went from `old.0` to `old.1`, turned into one from `new.0` to
/// `new.1` with its sequence number `seq_back` lower; the checksum, if the
/// quote holds it, is updated for the new pseudo-header (of either family).
pub(crate) fn rewrite_quoted_l4(
    l4: &mut [u8],
    proto: Proto,
    (old_src, old_dst): (Endpoint, Endpoint),
    (src, dst): (Endpoint, Endpoint),
    seq_back: u32,
) {
    // The caller made sure the quote holds the transport header's first 8
    // bytes (ports, and TCP's sequence number); the checksum is further in
    // for TCP and may be cut off.
    let (old_seq, old_sum) = match proto {
        Proto::Tcp => {
            let t = tcp::Packet::new_unchecked(&*l4);
            (Some(SeqNumber(t.seq_number())), (l4.len() >= TCP_CHECKSUM_END).then(|| t.checksum()))
        }
        Proto::Udp => (None, Some(udp::Packet::new_unchecked(&*l4).checksum()).filter(|&c| c != 0)),
    };
    let new_seq = old_seq.map(|seq| seq - seq_back);
    let sum = old_sum.map(|old| {
        let mut sum = checksum::update_addr(old, old_src.addr, src.addr);
        sum = checksum::update_addr(sum, old_dst.addr, dst.addr);
        sum = checksum::update16(sum, old_src.port, src.port);
        sum = checksum::update16(sum, old_dst.port, dst.port);
        if let (Some(o), Some(n)) = (old_seq, new_seq) {
            sum = checksum::update32(sum, o.0, n.0);
        }
        sum
    });
    match proto {
        Proto::Tcp => {
            let mut t = tcp::Packet::new_unchecked(l4);
            t.set_src_port(src.port);
            t.set_dst_port(dst.port);
            if let Some(seq) = new_seq {
                t.set_seq_number(seq.0);
            }
            if let Some(sum) = sum {
                t.set_checksum(sum);
            }
        }
        Proto::Udp => {
            let mut u = udp::Packet::new_unchecked(l4);
            u.set_src_port(src.port);
            u.set_dst_port(dst.port);
            if let Some(sum) = sum {
                u.set_checksum(sum);
            }
        }
    }
}
