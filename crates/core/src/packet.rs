//! What the packet path reads from a packet and how it rewrites one: the
//! IP and transport facts parsed once per packet ([`IpInfo`], [`L4Info`]),
//! what a feature did with a packet ([`Outcome`]), and the FullNAT rewrite of
//! addresses, ports, sequence space and options, every checksum updated
//! incrementally (RFC 1624), pseudo-header included. Every feature works on
//! these; none of them is a feature.

use std::net::IpAddr;

use rvs_wire::checksum;
use rvs_wire::tcp::{self, TcpOption};
use rvs_wire::tcp_options;
use rvs_wire::tcp_seq::SeqNumber;
use rvs_wire::{ip_protocol, ipv4, ipv6, udp};

use crate::addr::{Endpoint, Proto};
use crate::conn::{ConnId, HandshakeId};
use crate::drop::DropReason;
use crate::tcp_state::{SegmentFlags, Side};

/// What the packet path did with a packet it did not drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Rewritten in place; send toward this side.
    Forward(Side),
    /// Rewritten in place but for the IP header, which changes family:
    /// the engine builds the packet of this connection anew in a slot
    /// toward this side (`syn`: the segment is a SYN, which carries no TOA).
    Translate { to: Side, conn: ConnId, syn: bool },
    /// Answered or kept by SYNProxy.
    Absorbed,
    /// SYNProxy joined the two handshakes of a connection; the engine
    /// starts its client-address delivery, then has SYNProxy replay.
    Spliced(Spliced),
    /// SYNProxy's replay to the real was lost; the engine resends the
    /// connection's PROXY header, then has SYNProxy replay again.
    ReplayLost { conn: ConnId, handshake: HandshakeId },
}

/// A connection whose client- and real-side handshakes SYNProxy just joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spliced {
    pub(crate) conn: ConnId,
    pub(crate) handshake: HandshakeId,
    /// The acknowledgement (the real's ISN + 1) and window of segments the
    /// engine builds toward the real before the client's next one.
    pub(crate) ack: SeqNumber,
    pub(crate) window: u16,
}

/// What the path needs from the IP header, for either family.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IpInfo {
    /// Up to the transport header: IPv4 options or IPv6 extension headers included.
    pub(crate) header_len: usize,
    pub(crate) total_len: usize,
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    /// The transport protocol: for IPv6 the last extension header's next header.
    pub(crate) protocol: u8,
    /// TTL, or IPv6's hop limit.
    pub(crate) ttl: u8,
}

impl IpInfo {
    /// Parse and validate the IP header; fragments, and IPv6 extension
    /// header chains that do not lead to a transport header, are refused.
    pub(crate) fn parse(pkt: &[u8]) -> Result<Self, DropReason> {
        match pkt.first().map(|b| b >> 4) {
            Some(4) => {
                let ip = ipv4::Packet::new_checked(pkt).map_err(wire_drop)?;
                if ip.is_fragment() {
                    return Err(DropReason::Fragment);
                }
                Ok(Self {
                    header_len: ip.header_len(),
                    total_len: usize::from(ip.total_len()),
                    src: IpAddr::V4(ip.src_addr()),
                    dst: IpAddr::V4(ip.dst_addr()),
                    protocol: ip.protocol(),
                    ttl: ip.ttl(),
                })
            }
            Some(6) => {
                let ip = ipv6::Packet::new_checked(pkt).map_err(wire_drop)?;
                let (protocol, header_len) = ip.transport().map_err(|e| match e {
                    ipv6::ChainError::Fragment => DropReason::Fragment,
                    ipv6::ChainError::Unsupported | ipv6::ChainError::Truncated => {
                        DropReason::BadExtensionHeaders
                    }
                })?;
                Ok(Self {
                    header_len,
                    total_len: ipv6::HEADER_LEN + usize::from(ip.payload_len()),
                    src: IpAddr::V6(ip.src_addr()),
                    dst: IpAddr::V6(ip.dst_addr()),
                    protocol,
                    ttl: ip.hop_limit(),
                })
            }
            Some(_) => Err(DropReason::Malformed),
            None => Err(DropReason::Truncated),
        }
    }
}

pub(crate) fn wire_drop(e: rvs_wire::Error) -> DropReason {
    match e {
        rvs_wire::Error::Truncated => DropReason::Truncated,
        _ => DropReason::Malformed,
    }
}

/// The transport fields the path reads before deciding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct L4Info {
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    pub(crate) flags: SegmentFlags,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    /// Sequence space the segment occupies: payload, plus one each for SYN and FIN.
    pub(crate) seg_len: u32,
}

/// The transport fields of `seg`, the segment after the IP header `ip`.
pub(crate) fn parse_l4(proto: Proto, ip: &IpInfo, seg: &[u8]) -> Result<L4Info, DropReason> {
    match proto {
        Proto::Tcp => {
            let t = tcp::Packet::new_checked(seg).map_err(wire_drop)?;
            let f = t.flags();
            let flags = SegmentFlags { syn: f.syn(), ack: f.ack(), fin: f.fin(), rst: f.rst() };
            // RFC 9293 §3.10.7: no valid segment carries SYN with RST or FIN,
            // and every valid segment carries at least one of these flags.
            if (flags.syn && (flags.rst || flags.fin)) || !(flags.syn || flags.ack || flags.rst || flags.fin)
            {
                return Err(DropReason::BadTcpFlags);
            }
            Ok(L4Info {
                src_port: t.src_port(),
                dst_port: t.dst_port(),
                flags,
                seq: t.seq_number(),
                ack: t.ack_number(),
                seg_len: t.segment_len() as u32,
            })
        }
        Proto::Udp => {
            let u = udp::Packet::new_checked(seg).map_err(wire_drop)?;
            // RFC 8200 §8.1: over IPv6 the checksum is mandatory; a zero is
            // invalid there, and a rewrite could not keep it "none" anyway.
            if u.checksum() == 0 && ip.src.is_ipv6() {
                return Err(DropReason::MissingUdpChecksum);
            }
            Ok(L4Info {
                src_port: u.src_port(),
                dst_port: u.dst_port(),
                flags: SegmentFlags::default(),
                seq: 0,
                ack: 0,
                seg_len: 0,
            })
        }
    }
}

/// How a SYN's MSS option is rewritten: at most `clamp`, then `less` lower
/// (room for an option the engine adds to the peer's segments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MssRule {
    pub(crate) clamp: u16,
    pub(crate) less: u16,
}

impl MssRule {
    pub(crate) const NONE: Self = Self { clamp: u16::MAX, less: 0 };

    fn apply(self, mss: u16) -> u16 {
        mss.min(self.clamp).saturating_sub(self.less).max(64)
    }
}

/// Rewrite addresses, ports and sequence space of a validated packet;
/// returns the TSval it carries now, if its timestamps were translated.
///
/// `xlat` is (own seq offset, peer seq offset, own TSval offset, peer TSval
/// offset) for the side the packet came from.
pub(crate) fn rewrite(
    pkt: &mut [u8],
    ip: &IpInfo,
    src: Endpoint,
    dst: Endpoint,
    xlat: (u32, u32, u32, u32),
    mss: Option<MssRule>,
    decrement_ttl: bool,
) -> Option<u32> {
    let (head, seg) = pkt.split_at_mut(ip.header_len);
    // A packet changing family gets its new header from the translation.
    if !crate::xlat::translates(ip.src, src.addr) {
        rewrite_ip_header(head, ip, src.addr, dst.addr, decrement_ttl);
    }
    match ip.protocol {
        ip_protocol::TCP => rewrite_tcp(seg, ip, src, dst, xlat, mss),
        ip_protocol::UDP => {
            rewrite_udp(seg, ip, src, dst);
            None
        }
        _ => None,
    }
}

/// New addresses (and TTL or hop limit) in an IP header; IPv4's checksum
/// updated incrementally, IPv6 has none.
pub(crate) fn rewrite_ip_header(head: &mut [u8], ip: &IpInfo, src: IpAddr, dst: IpAddr, decrement_ttl: bool) {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = ipv4::Packet::new_unchecked(head);
            let mut sum = h.checksum();
            sum = checksum::update_addr(sum, ip.src, src);
            sum = checksum::update_addr(sum, ip.dst, dst);
            h.set_src_addr(s);
            h.set_dst_addr(d);
            if decrement_ttl {
                let ttl = ip.ttl.saturating_sub(1);
                let word = |t: u8| u16::from_be_bytes([t, ip.protocol]);
                sum = checksum::update16(sum, word(ip.ttl), word(ttl));
                h.set_ttl(ttl);
            }
            h.set_checksum(sum);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = ipv6::Packet::new_unchecked(head);
            h.set_src_addr(s);
            h.set_dst_addr(d);
            if decrement_ttl {
                h.set_hop_limit(ip.ttl.saturating_sub(1));
            }
        }
        // A connection's two addresses of one side share a family.
        _ => {}
    }
}

fn rewrite_tcp(
    seg: &mut [u8],
    ip: &IpInfo,
    src: Endpoint,
    dst: Endpoint,
    (own_seq, peer_seq, own_ts, peer_ts): (u32, u32, u32, u32),
    mss: Option<MssRule>,
) -> Option<u32> {
    let mut t = tcp::Packet::new_unchecked(&mut *seg);
    let mut sum = t.checksum();
    sum = checksum::update_addr(sum, ip.src, src.addr);
    sum = checksum::update_addr(sum, ip.dst, dst.addr);
    sum = checksum::update16(sum, t.src_port(), src.port);
    sum = checksum::update16(sum, t.dst_port(), dst.port);
    t.set_src_port(src.port);
    t.set_dst_port(dst.port);
    if own_seq != 0 {
        let (old, new) = (t.seq_number(), t.seq_number().wrapping_add(own_seq));
        sum = checksum::update32(sum, old, new);
        t.set_seq_number(new);
    }
    let acking = t.flags().ack();
    if acking && peer_seq != 0 {
        let (old, new) = (t.ack_number(), t.ack_number().wrapping_sub(peer_seq));
        sum = checksum::update32(sum, old, new);
        t.set_ack_number(new);
    }
    let syn = t.flags().syn();
    let mut tsval = None;
    if t.header_len() > 20 && (peer_seq != 0 || own_ts != 0 || peer_ts != 0 || mss.is_some()) {
        (sum, tsval) =
            rewrite_options(t.options_mut(), sum, peer_seq, own_ts, peer_ts, acking, mss.filter(|_| syn));
    }
    t.set_checksum(sum);
    tsval
}

/// Translate SACK blocks and timestamps, rewrite the MSS; returns the
/// updated checksum and the segment's TSval as it is now, if it has one.
fn rewrite_options(
    opts: &mut [u8],
    mut sum: u16,
    peer_seq: u32,
    own_ts: u32,
    peer_ts: u32,
    acking: bool,
    mss_rule: Option<MssRule>,
) -> (u16, Option<u32>) {
    // Linux's established segments carry NOP, NOP, timestamps and nothing
    // else: translate those in place without walking the list.
    if opts.len() == 12 && opts[..4] == [1, 1, 8, 10] && mss_rule.is_none() {
        let word = |o: &[u8], at: usize| u32::from_be_bytes([o[at], o[at + 1], o[at + 2], o[at + 3]]);
        let (tsval, tsecr) = (word(opts, 4), word(opts, 8));
        let new_val = tsval.wrapping_add(own_ts);
        if own_ts != 0 || (peer_ts != 0 && acking) {
            let new_ecr = if acking { tsecr.wrapping_sub(peer_ts) } else { tsecr };
            sum = checksum::update32(sum, tsval, new_val);
            sum = checksum::update32(sum, tsecr, new_ecr);
            opts[4..8].copy_from_slice(&new_val.to_be_bytes());
            opts[8..12].copy_from_slice(&new_ecr.to_be_bytes());
        }
        return (sum, Some(new_val));
    }
    let mut now_tsval = None;
    let sum = tcp_options::rewrite(opts, sum, |w, at, opt| match opt {
        TcpOption::MaxSegmentSize(mss) => {
            if let Some(new) = mss_rule.map(|r| r.apply(mss)).filter(|&m| m != mss) {
                w.put(at + 2, &new.to_be_bytes());
            }
        }
        TcpOption::SackRange(blocks) if peer_seq != 0 => {
            for (i, &(left, right)) in blocks.as_slice().iter().enumerate() {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&left.wrapping_sub(peer_seq).to_be_bytes());
                b[4..].copy_from_slice(&right.wrapping_sub(peer_seq).to_be_bytes());
                w.put(at + 2 + 8 * i, &b);
            }
        }
        TcpOption::Timestamps { tsval, tsecr } => {
            now_tsval = Some(tsval.wrapping_add(own_ts));
            if own_ts != 0 || (peer_ts != 0 && acking) {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&tsval.wrapping_add(own_ts).to_be_bytes());
                // RFC 7323 §3.2: TSecr is meaningful only with ACK set.
                let ecr = if acking { tsecr.wrapping_sub(peer_ts) } else { tsecr };
                b[4..].copy_from_slice(&ecr.to_be_bytes());
                w.put(at + 2, &b);
            }
        }
        _ => {}
    });
    (sum, now_tsval)
}

fn rewrite_udp(seg: &mut [u8], ip: &IpInfo, src: Endpoint, dst: Endpoint) {
    let mut u = udp::Packet::new_unchecked(&mut *seg);
    let old_sum = u.checksum();
    let (old_src, old_dst) = (u.src_port(), u.dst_port());
    u.set_src_port(src.port);
    u.set_dst_port(dst.port);
    // RFC 768: over IPv4 a zero checksum means none was computed; keep it so.
    if old_sum == 0 && ip.src.is_ipv4() {
        return;
    }
    let mut sum = checksum::update_addr(old_sum, ip.src, src.addr);
    sum = checksum::update_addr(sum, ip.dst, dst.addr);
    sum = checksum::update16(sum, old_src, src.port);
    sum = checksum::update16(sum, old_dst, dst.port);
    u.set_checksum(if sum == 0 { 0xffff } else { sum });
}

/// Rescale a real's window to the scale announced to the client.
fn rescaled(window: u16, real_wscale: u8, client_wscale: u8) -> u16 {
    let bytes = u64::from(window) << real_wscale;
    (bytes >> client_wscale).min(u64::from(u16::MAX)) as u16
}

/// Rewrite a real→client window in the scale announced to the client
/// (SYNProxy, when the real chose another).
pub(crate) fn rescale_window(seg: &mut [u8], real_wscale: u8, client_wscale: u8) {
    let mut t = tcp::Packet::new_unchecked(seg);
    let old = t.window_len();
    let new = rescaled(old, real_wscale, client_wscale);
    let sum = checksum::update16(t.checksum(), old, new);
    t.set_window_len(new);
    t.set_checksum(sum);
}
