//! ICMP errors about forwarded flows, translated across the load balancer.
//!
//! An ICMP error (destination unreachable, fragmentation needed, time
//! exceeded, parameter problem) quotes the IP header and at least the first
//! 8 bytes of the packet that caused it (RFC 792, RFC 1812 §4.3.2.3). When
//! the quoted packet belongs to a tracked connection, the error is rewritten
//! for the other side: outer addresses as for the connection's packets in
//! that direction, and the quoted packet turned back into what that side
//! itself sent (addresses, ports, sequence number), so the sender's stack
//! matches it to its socket. An error from inside the real network appears
//! to come from the VIP, which keeps internal addresses hidden.

use rvs_wire::{checksum, icmpv4, ipv4};

use crate::addr::{Endpoint, FlowKey, Proto};
use crate::drop::DropReason;
use crate::engine::Engine;
use crate::packet::{IpInfo, rewrite_ip_header, wire_drop};
use crate::tcp_state::Side;
use crate::time::Instant;

impl Engine {
    pub(crate) fn handle_icmp(
        &mut self,
        _now: Instant,
        ip: &IpInfo,
        pkt: &mut [u8],
    ) -> Result<Side, DropReason> {
        let (head, msg) = pkt.split_at_mut(ip.header_len);
        let icmp = icmpv4::Packet::new_checked(&*msg).map_err(wire_drop)?;
        if !icmpv4::is_error(icmp.msg_type()) {
            return Err(self.icmp_miss(ip, DropReason::IcmpUnsupported));
        }
        if !icmp.verify_checksum() {
            return Err(DropReason::BadChecksum);
        }
        // The quoted packet: its IP header must be whole, its transport
        // header need only hold the ports (8 bytes are guaranteed).
        let inner = &msg[8..];
        let Ok(inner_ip) = ipv4::Packet::new_checked_quoted(inner) else {
            return Err(self.icmp_miss(ip, DropReason::Truncated));
        };
        let ihl = inner_ip.header_len();
        let Some(proto) = Proto::from_number(inner_ip.protocol()) else {
            return Err(self.icmp_miss(ip, DropReason::IcmpNoConnection));
        };
        if inner.len() < ihl + 8 {
            return Err(self.icmp_miss(ip, DropReason::Truncated));
        }
        let port = |at: usize| u16::from_be_bytes([inner[ihl + at], inner[ihl + at + 1]]);
        let quoted_src = Endpoint::new(inner_ip.src_addr().into(), port(0));
        let quoted_dst = Endpoint::new(inner_ip.dst_addr().into(), port(2));
        // The quoted packet went *from* the ICMP's receiver; a packet of the
        // same flow coming to us travels the other way.
        let key = FlowKey { proto, src: quoted_dst, dst: quoted_src };
        let Some(lookup) = self.conns.table().lookup(&key) else {
            return Err(DropReason::IcmpNoConnection);
        };
        let Some(conn) = self.conns.get(lookup.id) else {
            return Err(DropReason::IcmpNoConnection);
        };
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
        rewrite_ip_header(head, ip, outer_src, outer_dst, self.cfg.decrement_ttl);
        let inner = &mut msg[8..];
        rewrite_quote(inner, ihl, proto, quoted_src, quoted_dst, q_src, q_dst, seq_back);
        let mut icmp = icmpv4::Packet::new_unchecked(&mut *msg);
        icmp.fill_checksum();
        self.stats.icmp_forwarded += 1;
        Ok(to)
    }

    fn icmp_miss(&self, ip: &IpInfo, reason: DropReason) -> DropReason {
        match self.classify_miss(ip.dst, true) {
            DropReason::NotForUs => DropReason::NotForUs,
            _ => reason,
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
    let old_seq = (l4.len() >= 8).then(|| u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]));
    l4[0..2].copy_from_slice(&src.port.to_be_bytes());
    l4[2..4].copy_from_slice(&dst.port.to_be_bytes());
    let mut new_seq = None;
    if let (Proto::Tcp, Some(old)) = (proto, old_seq) {
        let seq = old.wrapping_sub(seq_back);
        l4[4..8].copy_from_slice(&seq.to_be_bytes());
        new_seq = Some((old, seq));
    }
    // Keep the quoted transport checksum right when the quote holds it.
    let csum_at = match proto {
        Proto::Tcp => 16,
        Proto::Udp => 6,
    };
    if l4.len() >= csum_at + 2 {
        let old = u16::from_be_bytes([l4[csum_at], l4[csum_at + 1]]);
        if proto == Proto::Udp && old == 0 {
            return;
        }
        let mut sum = checksum::update_addr(old, old_src.addr, src.addr);
        sum = checksum::update_addr(sum, old_dst.addr, dst.addr);
        sum = checksum::update16(sum, old_src.port, src.port);
        sum = checksum::update16(sum, old_dst.port, dst.port);
        if let Some((o, n)) = new_seq {
            sum = checksum::update32(sum, o, n);
        }
        l4[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());
    }
}
