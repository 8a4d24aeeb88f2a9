//! The fast path's per-packet work in Rust: what the XDP program does with
//! a packet of an offloaded flow, and the reference its tests and the
//! simulator's device compare against.
//!
//! The rewrite is the engine's own ([`rewrite`], [`rescale_window`]), so a
//! packet forwarded here has the bytes the engine would have given it. What
//! this code refuses is what the program refuses: anything the engine
//! would treat other than as a plain established segment, and anything the
//! program could not rewrite in a bounded number of steps.

use std::net::IpAddr;

use rvs_wire::tcp;

use super::FlowRule;
use crate::addr::Proto;
use crate::packet::{IpInfo, parse_l4, rescale_window, rewrite};
use crate::tcp_state::Side;

/// What [`apply`] did with a packet.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Rewritten in place; send it toward the rule's side.
    Forwarded,
    /// Untouched: the engine must see this packet.
    ToEngine,
}

/// Rewrite `pkt` (an IP packet, possibly followed by link padding) by
/// `rule`, as the engine's forward path would for a packet of an
/// established connection; or leave it untouched for the engine.
///
/// Forwarded only: IPv4 without options and not a fragment, IPv6 without
/// extension headers, the TTL or hop limit above 1 when it is decremented,
/// the rule's exact flow; TCP with ACK and without SYN, FIN or RST (the
/// engine drops a segment with no flags, and changes state on the others),
/// whose options are none, NOP NOP timestamps, NOP NOP SACK (1 to 4
/// blocks) or both in that order; and UDP. Never panics, whatever the bytes.
pub fn apply(rule: &FlowRule, pkt: &mut [u8]) -> Applied {
    match check(rule, pkt) {
        Some(ip) => {
            let pkt = &mut pkt[..ip.total_len];
            let xlat = (rule.seq_add, rule.ack_sub, rule.tsval_add, rule.tsecr_sub);
            let _ = rewrite(pkt, &ip, rule.src, rule.dst, xlat, None, rule.decrement_ttl);
            if let (Some((real, client)), Side::Client, Proto::Tcp) = (rule.rescale, rule.to, rule.key.proto)
            {
                rescale_window(&mut pkt[ip.header_len..], real, client);
            }
            Applied::Forwarded
        }
        None => Applied::ToEngine,
    }
}

/// The packet's IP facts if the fast path may rewrite it by `rule`.
fn check(rule: &FlowRule, pkt: &[u8]) -> Option<IpInfo> {
    let ip = IpInfo::parse(pkt).ok()?;
    let fixed = match ip.src {
        IpAddr::V4(_) => 20,
        IpAddr::V6(_) => 40,
    };
    let same_family =
        ip.src.is_ipv4() == rule.src.addr.is_ipv4() && ip.src.is_ipv4() == rule.dst.addr.is_ipv4();
    if ip.header_len != fixed || !same_family || (rule.decrement_ttl && ip.ttl <= 1) {
        return None;
    }
    let proto = Proto::from_number(ip.protocol).filter(|&p| p == rule.key.proto)?;
    let seg = pkt.get(ip.header_len..ip.total_len)?;
    let l4 = parse_l4(proto, &ip, seg).ok()?;
    let key = rule.key;
    if (ip.src, ip.dst, l4.src_port, l4.dst_port) != (key.src.addr, key.dst.addr, key.src.port, key.dst.port)
    {
        return None;
    }
    if proto == Proto::Tcp {
        let f = l4.flags;
        if !f.ack || f.syn || f.fin || f.rst {
            return None;
        }
        let t = tcp::Packet::new_checked(seg).ok()?;
        if !common_layout(t.options()) {
            return None;
        }
    }
    Some(ip)
}

/// Whether TCP options are one of the layouts the program rewrites: none;
/// NOP NOP timestamps; NOP NOP SACK with 1 to 4 blocks; or NOP NOP
/// timestamps then NOP NOP SACK.
pub(crate) fn common_layout(opts: &[u8]) -> bool {
    const TIMESTAMPS: [u8; 4] = [1, 1, 8, 10];
    let sack = |o: &[u8]| {
        let blocks = o.len().saturating_sub(4) / 8;
        o.len() == 4 + 8 * blocks
            && (1..=4).contains(&blocks)
            && o[..3] == [1, 1, 5]
            && usize::from(o[3]) == o.len() - 2
    };
    match opts.len() {
        0 => true,
        12 => opts[..4] == TIMESTAMPS || sack(opts),
        n if n > 12 && opts[..4] == TIMESTAMPS => sack(&opts[12..]),
        _ => sack(opts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_common_option_layouts_pass() {
        let ts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        let sack = |n: usize| {
            let mut o = vec![1, 1, 5, (2 + 8 * n) as u8];
            o.resize(4 + 8 * n, 7);
            o
        };
        assert!(common_layout(&[]));
        assert!(common_layout(&ts));
        for n in 1..=4 {
            assert!(common_layout(&sack(n)), "{n} blocks");
        }
        for n in 1..=3 {
            assert!(common_layout(&[&ts[..], &sack(n)].concat()), "timestamps and {n} blocks");
        }
        // Other layouts, and malformed ones, go to the engine.
        assert!(!common_layout(&sack(0)));
        assert!(!common_layout(&[&sack(2)[..], &ts].concat()));
        assert!(!common_layout(&[8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1]));
        assert!(!common_layout(&[1, 1, 1, 0]));
        assert!(!common_layout(&[1, 1, 5, 18, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!common_layout(&[&ts[..], &[1, 1, 1, 0]].concat()));
        assert!(!common_layout(&[254, 8, 0, 80, 10, 0, 0, 1]));
    }
}
