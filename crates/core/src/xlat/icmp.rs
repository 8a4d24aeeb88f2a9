//! ICMP errors across families (RFC 7915 §4.2, §4.5, §5.2, §5.5): an
//! ICMPv4 error from the real side of a NAT64 connection becomes the ICMPv6
//! error its client understands, and the reverse, with the quoted packet
//! turned back into what the error's receiver sent (its own header family,
//! addresses, ports and sequence number).
//!
//! Only errors are translated; an error with no counterpart in the other
//! family is dropped as [`DropReason::IcmpUntranslatable`]. Path MTU
//! discovery works across the translation: a fragmentation-needed becomes a
//! packet-too-big 20 bytes larger (at least 1280, IPv6's minimum link MTU),
//! and a packet-too-big a fragmentation-needed 20 bytes smaller.

use std::net::IpAddr;

use rvs_wire::icmpv6::{msg_type as v6_type, param_problem_code, unreachable_code as v6_unreach};
use rvs_wire::{checksum, icmpv4, ip_protocol, ipv4, ipv6};

use super::header::{self, Carried};
use crate::addr::{Endpoint, Proto};
use crate::drop::DropReason;
use crate::icmp::{quoted_ports, rewrite_quoted_l4};

/// IPv6's minimum link MTU (RFC 8200 §5), and the most an ICMPv6 error
/// may take (RFC 4443 §2.4 (c)).
const IPV6_MIN_MTU: usize = 1280;
/// The most an ICMPv4 error takes (RFC 1812 §4.3.2.3).
const IPV4_MAX_ERROR: usize = 576;
/// IPv6's fixed header is this much longer than IPv4's without options.
const GROWTH: u16 = 20;

/// Where a translated error goes and what its quote becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ErrorBack {
    /// Outer source and destination: the VIP and the client, or the local
    /// address and the real.
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    /// The quoted packet as the error's receiver sent it.
    pub(crate) quoted_src: Endpoint,
    pub(crate) quoted_dst: Endpoint,
    /// Subtracted from the quoted sequence number (back into the receiver's space).
    pub(crate) seq_back: u32,
}

/// An error message's type, code and the 4 bytes after its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    msg_type: u8,
    code: u8,
    rest: u32,
}

/// Build into `out` the translation of the ICMP error in `pkt` (its IP
/// header `header_len` bytes, the whole datagram `pkt`); returns its length.
/// The caller has verified the error's checksum ([`crate::icmp::translate`]).
pub(crate) fn translate_error(
    pkt: &[u8],
    header_len: usize,
    out: &mut [u8],
    back: &ErrorBack,
    decrement_ttl: bool,
) -> Result<usize, DropReason> {
    let from_v4 = pkt.first().is_some_and(|b| b >> 4 == 4);
    if from_v4 == back.dst.is_ipv4() {
        return Err(DropReason::IcmpUntranslatable);
    }
    let msg = pkt.get(header_len..).ok_or(DropReason::Truncated)?;
    if msg.len() < icmpv4::HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    let word = |at: usize| u32::from_be_bytes([msg[at], msg[at + 1], msg[at + 2], msg[at + 3]]);
    let head = Head { msg_type: msg[0], code: msg[1], rest: word(4) };
    let quote = &msg[icmpv4::HEADER_LEN..];
    let quoted = if from_v4 {
        let q = ipv4::Packet::new_checked_quoted(quote).map_err(crate::packet::wire_drop)?;
        Quoted {
            carried: Carried::read(quote, q.protocol(), false),
            header_len: q.header_len(),
            payload_len: usize::from(q.total_len()).saturating_sub(q.header_len()),
            src: q.src_addr().into(),
            dst: q.dst_addr().into(),
        }
    } else {
        let q = ipv6::Packet::new_checked_quoted(quote).map_err(crate::packet::wire_drop)?;
        // What the balancer sends carries no extension header, so a quote
        // of its packet has none either.
        Quoted {
            carried: Carried::read(quote, q.next_header(), false),
            header_len: ipv6::HEADER_LEN,
            payload_len: usize::from(q.payload_len()),
            src: q.src_addr().into(),
            dst: q.dst_addr().into(),
        }
    };
    let mapped = if from_v4 { to_v6(head, quoted.header_len + quoted.payload_len)? } else { to_v4(head)? };
    build(out, &outer_carried(pkt, from_v4, decrement_ttl), mapped, &quoted, quote, back)
}

/// The quoted packet's header, as read.
#[derive(Debug, Clone, Copy)]
struct Quoted {
    carried: Carried,
    header_len: usize,
    /// As the header announces it, not as much as is quoted.
    payload_len: usize,
    src: IpAddr,
    dst: IpAddr,
}

fn outer_carried(pkt: &[u8], from_v4: bool, decrement_ttl: bool) -> Carried {
    let protocol = if from_v4 { ip_protocol::ICMPV6 } else { ip_protocol::ICMP };
    Carried::read(pkt, protocol, decrement_ttl)
}

/// Write the translated error: outer header, ICMP header, the quoted
/// header in the new family, and the quoted transport bytes rewritten.
fn build(
    out: &mut [u8],
    outer: &Carried,
    mapped: Head,
    quoted: &Quoted,
    quote: &[u8],
    back: &ErrorBack,
) -> Result<usize, DropReason> {
    let proto = Proto::from_number(quoted.carried.protocol).ok_or(DropReason::IcmpNoConnection)?;
    let l4 = quote.get(quoted.header_len..).ok_or(DropReason::Truncated)?;
    if l4.len() < 8 {
        return Err(DropReason::Truncated);
    }
    let outer_len = header::len_for(back.dst);
    let inner_len = header::len_for(back.quoted_dst.addr);
    let limit = if back.dst.is_ipv4() { IPV4_MAX_ERROR } else { IPV6_MIN_MTU }.min(out.len());
    let start = outer_len + icmpv4::HEADER_LEN;
    let l4_len = l4.len().min(limit.saturating_sub(start + inner_len));
    if l4_len < 8 {
        return Err(DropReason::TooBigToTranslate);
    }
    let len = start + inner_len + l4_len;
    let msg_len = len - outer_len;
    let (q_src, q_dst) = (back.quoted_src.addr, back.quoted_dst.addr);
    if !header::write(&mut out[start..], q_src, q_dst, quoted.payload_len, quoted.carried) {
        return Err(DropReason::IcmpUntranslatable);
    }
    let seg = &mut out[start + inner_len..len];
    seg.copy_from_slice(&l4[..l4_len]);
    let (sp, dp) = quoted_ports(proto, seg);
    let old = (Endpoint::new(quoted.src, sp), Endpoint::new(quoted.dst, dp));
    rewrite_quoted_l4(seg, proto, old, (back.quoted_src, back.quoted_dst), back.seq_back);
    if !header::write(out, back.src, back.dst, msg_len, *outer) {
        return Err(DropReason::IcmpUntranslatable);
    }
    let msg = &mut out[outer_len..len];
    msg[0] = mapped.msg_type;
    msg[1] = mapped.code;
    msg[2..4].fill(0);
    msg[4..8].copy_from_slice(&mapped.rest.to_be_bytes());
    let mut sum = checksum::sum(msg);
    if back.dst.is_ipv6() {
        let len32 = u32::try_from(msg_len).unwrap_or(u32::MAX);
        sum += checksum::pseudo_header(back.src, back.dst, ip_protocol::ICMPV6, len32);
    }
    msg[2..4].copy_from_slice(&checksum::finish(sum).to_be_bytes());
    Ok(len)
}

/// RFC 7915 §4.2: an ICMPv4 error as ICMPv6. `quoted_len` is the quoted
/// datagram's total length (for a fragmentation-needed without an MTU).
fn to_v6(h: Head, quoted_len: usize) -> Result<Head, DropReason> {
    use icmpv4::msg_type as t;
    let out = |msg_type, code, rest| Ok(Head { msg_type, code, rest });
    match (h.msg_type, h.code) {
        (t::DEST_UNREACHABLE, 0 | 1 | 5 | 6 | 7 | 8 | 11 | 12) => {
            out(v6_type::DEST_UNREACHABLE, v6_unreach::NO_ROUTE, 0)
        }
        (t::DEST_UNREACHABLE, 9 | 10 | 13 | 15) => {
            out(v6_type::DEST_UNREACHABLE, v6_unreach::ADMIN_PROHIBITED, 0)
        }
        // Protocol unreachable: the next header is not recognised (pointer to it).
        (t::DEST_UNREACHABLE, 2) => {
            out(v6_type::PARAM_PROBLEM, param_problem_code::UNRECOGNIZED_NEXT_HEADER, 6)
        }
        (t::DEST_UNREACHABLE, 3) => out(v6_type::DEST_UNREACHABLE, v6_unreach::PORT, 0),
        (t::DEST_UNREACHABLE, 4) => {
            let mtu = match h.rest as u16 {
                // RFC 1191 §5: a router that predates it sends no MTU; take
                // the plateau below the datagram that did not fit.
                0 => plateau_below(quoted_len),
                mtu => mtu,
            };
            let mtu = u32::from(mtu.saturating_add(GROWTH)).max(IPV6_MIN_MTU as u32);
            out(v6_type::PACKET_TOO_BIG, 0, mtu)
        }
        (t::TIME_EXCEEDED, code) => out(v6_type::TIME_EXCEEDED, code, 0),
        (t::PARAM_PROBLEM, 0 | 2) => {
            let pointer = v4_to_v6_pointer((h.rest >> 24) as u8).ok_or(DropReason::IcmpUntranslatable)?;
            out(v6_type::PARAM_PROBLEM, 0, pointer)
        }
        _ => Err(DropReason::IcmpUntranslatable),
    }
}

/// RFC 7915 §5.2: an ICMPv6 error as ICMPv4.
fn to_v4(h: Head) -> Result<Head, DropReason> {
    use icmpv4::{msg_type as t, unreachable_code as c};
    let out = |msg_type, code, rest| Ok(Head { msg_type, code, rest });
    match (h.msg_type, h.code) {
        (v6_type::DEST_UNREACHABLE, 0 | 2 | 3) => out(t::DEST_UNREACHABLE, c::HOST, 0),
        // Communication with the destination host administratively prohibited.
        (v6_type::DEST_UNREACHABLE, v6_unreach::ADMIN_PROHIBITED) => out(t::DEST_UNREACHABLE, 10, 0),
        (v6_type::DEST_UNREACHABLE, v6_unreach::PORT) => out(t::DEST_UNREACHABLE, c::PORT, 0),
        (v6_type::PACKET_TOO_BIG, _) => {
            let mtu = h.rest.min(u32::from(u16::MAX)).saturating_sub(u32::from(GROWTH));
            out(t::DEST_UNREACHABLE, c::FRAG_NEEDED, mtu)
        }
        (v6_type::TIME_EXCEEDED, code) => out(t::TIME_EXCEEDED, code, 0),
        (v6_type::PARAM_PROBLEM, param_problem_code::ERRONEOUS_HEADER) => {
            let pointer = v6_to_v4_pointer(h.rest).ok_or(DropReason::IcmpUntranslatable)?;
            out(t::PARAM_PROBLEM, 0, u32::from(pointer) << 24)
        }
        (v6_type::PARAM_PROBLEM, param_problem_code::UNRECOGNIZED_NEXT_HEADER) => {
            out(t::DEST_UNREACHABLE, c::PROTOCOL, 0)
        }
        _ => Err(DropReason::IcmpUntranslatable),
    }
}

/// RFC 7915 §4.2 figure 3: an IPv4 header offset as the IPv6 field's.
fn v4_to_v6_pointer(p: u8) -> Option<u32> {
    Some(match p {
        0 | 1 => u32::from(p),
        2 | 3 => 4,
        8 => 7,
        9 => 6,
        12..=15 => 8,
        16..=19 => 24,
        _ => return None,
    })
}

/// RFC 7915 §5.2 figure 6: an IPv6 header offset as the IPv4 field's.
fn v6_to_v4_pointer(p: u32) -> Option<u8> {
    Some(match p {
        0 | 1 => p as u8,
        4 | 5 => 2,
        6 => 9,
        7 => 8,
        8..=23 => 12,
        24..=39 => 16,
        _ => return None,
    })
}

/// RFC 1191 §7's plateau table: the largest MTU below `len`.
fn plateau_below(len: usize) -> u16 {
    const PLATEAUS: [u16; 10] = [32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68];
    PLATEAUS.into_iter().find(|&p| usize::from(p) < len).unwrap_or(68)
}
