//! TOA: the client's address in a TCP option toward the real.
//!
//! The layout is the one the TOA kernel modules of LVS FullNAT and DPVS read
//! (and tshark shows as option 254): kind 254, then for an IPv4 client
//! length 8, the port and the address; for an IPv6 client length 20, the
//! port and the 16-byte address. All in network byte order. The modules
//! read the option from the segment that completes the real's handshake,
//! so it goes into every client→real segment until the real shows it is
//! established.

use std::net::IpAddr;

use rvs_wire::{ip_protocol, ipv4, ipv6, tcp};

use crate::addr::Endpoint;
use crate::packet::IpInfo;

/// The option kind.
pub(crate) const KIND: u8 = 254;
/// Bytes the IPv4 form adds to a segment (already a multiple of 4).
const V4_LEN: usize = 8;
/// Bytes the IPv6 form adds to a segment (already a multiple of 4).
const V6_LEN: usize = 20;
/// TCP option space (RFC 9293: data offset of at most 15 words).
const MAX_OPTIONS: usize = 40;

/// Why the option could not go in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skipped {
    /// The segment's options leave too little of the 40 bytes.
    NoRoom,
    /// Not a TCP packet, or the buffer cannot take the longer packet.
    Unfit,
}

/// Bytes the option for a client at `client` adds to a segment.
pub(crate) const fn len(client: IpAddr) -> usize {
    match client {
        IpAddr::V4(_) => V4_LEN,
        IpAddr::V6(_) => V6_LEN,
    }
}

/// The option for `client`; its bytes and length.
fn option(client: Endpoint) -> ([u8; 20], usize) {
    let mut o = [0u8; 20];
    o[0] = KIND;
    o[2..4].copy_from_slice(&client.port.to_be_bytes());
    match client.addr {
        IpAddr::V4(a) => o[4..8].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => o[4..20].copy_from_slice(&a.octets()),
    }
    let len = len(client.addr);
    o[1] = len as u8;
    (o, len)
}

/// Insert the option for `client` into the IPv4 or IPv6 TCP packet
/// `buf[..len]` after the options it has, moving the payload up; returns the
/// new length. The option's form follows the client's family, whatever the
/// packet's. Checksums are recomputed: this runs on a connection's first
/// segments only, where it is cheaper to be obviously right than incremental.
pub(crate) fn insert(buf: &mut [u8], len: usize, client: Endpoint) -> Result<usize, Skipped> {
    let ip = IpInfo::parse(buf.get(..len).ok_or(Skipped::Unfit)?).map_err(|_| Skipped::Unfit)?;
    if ip.protocol != ip_protocol::TCP {
        return Err(Skipped::Unfit);
    }
    let (ihl, total, src, dst) = (ip.header_len, ip.total_len, ip.src, ip.dst);
    let t = tcp::Packet::new_checked(&buf[ihl..total]).map_err(|_| Skipped::Unfit)?;
    let doff = t.header_len();
    let used = options_used(t.options());
    let (opt, opt_len) = option(client);
    let new_opts = (used + opt_len).next_multiple_of(4);
    if new_opts > MAX_OPTIONS {
        return Err(Skipped::NoRoom);
    }
    let new_doff = 20 + new_opts;
    let new_total = total + new_doff - doff;
    if new_total > buf.len() || new_total > usize::from(u16::MAX) {
        return Err(Skipped::Unfit);
    }
    let seg = ihl;
    buf.copy_within(seg + doff..total, seg + new_doff);
    let opts = &mut buf[seg + 20..seg + new_doff];
    opts[used..used + opt_len].copy_from_slice(&opt[..opt_len]);
    // RFC 9293: the option list ends with End of Option List, then zero padding.
    opts[used + opt_len..].fill(0);
    let mut t = tcp::Packet::new_unchecked(&mut buf[seg..new_total]);
    t.set_header_len(new_doff);
    t.fill_checksum(src, dst);
    if src.is_ipv4() {
        let mut ip = ipv4::Packet::new_unchecked(&mut buf[..new_total]);
        ip.set_total_len(new_total as u16);
        ip.fill_checksum();
    } else {
        // The IPv6 payload length counts extension headers too; no header checksum.
        let mut ip = ipv6::Packet::new_unchecked(&mut buf[..new_total]);
        ip.set_payload_len((new_total - ipv6::HEADER_LEN) as u16);
    }
    Ok(new_total + (len - total))
}

/// Bytes of `opts` up to the end of the last option (End of Option List and
/// what follows it are padding).
fn options_used(opts: &[u8]) -> usize {
    let mut at = 0;
    while at < opts.len() {
        match opts[at] {
            0 => break,
            1 => at += 1,
            _ => match opts.get(at + 1) {
                Some(&l) if l >= 2 && at + usize::from(l) <= opts.len() => at += usize::from(l),
                // A malformed list: keep all of it, append after.
                _ => return opts.len(),
            },
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_wire::ip_protocol;

    /// The client endpoint in a TOA option of `opts`, if there is one.
    fn read(opts: &[u8]) -> Option<Endpoint> {
        for item in tcp::options_iter(opts) {
            let Ok((at, _)) = item else { break };
            let o = &opts[at..];
            if o.first() == Some(&KIND) {
                let port = u16::from_be_bytes([*o.get(2)?, *o.get(3)?]);
                return match o.get(1)? {
                    8 => Some(Endpoint::new(IpAddr::from(<[u8; 4]>::try_from(o.get(4..8)?).ok()?), port)),
                    20 => Some(Endpoint::new(IpAddr::from(<[u8; 16]>::try_from(o.get(4..20)?).ok()?), port)),
                    _ => None,
                };
            }
        }
        None
    }

    fn ep(s: &str) -> Endpoint {
        s.parse::<std::net::SocketAddr>().unwrap().into()
    }

    /// An IPv4 TCP packet with `opts` (padded by the caller) and `payload`, in a 1600-byte buffer.
    fn packet(opts: &[u8], payload: &[u8]) -> (Vec<u8>, usize) {
        let doff = 20 + opts.len();
        let total = 20 + doff + payload.len();
        let mut buf = vec![0u8; 1600];
        let ip = ipv4::Repr {
            src_addr: "10.0.3.1".parse().unwrap(),
            dst_addr: "10.0.1.11".parse().unwrap(),
            protocol: ip_protocol::TCP,
            payload_len: doff + payload.len(),
            ttl: 64,
            ident: 0,
            dont_frag: true,
        };
        ip.emit(&mut ipv4::Packet::new_unchecked(&mut buf[..20]));
        let mut t = tcp::Packet::new_unchecked(&mut buf[20..total]);
        t.set_src_port(5000);
        t.set_dst_port(80);
        t.set_seq_number(7);
        t.set_header_len(doff);
        t.set_flags(tcp::Flags::ACK);
        t.options_mut().copy_from_slice(opts);
        t.payload_mut().copy_from_slice(payload);
        t.fill_checksum("10.0.3.1".parse().unwrap(), "10.0.1.11".parse().unwrap());
        (buf, total)
    }

    fn check(buf: &[u8], len: usize) -> (usize, Vec<u8>, Vec<u8>) {
        let ip = ipv4::Packet::new_checked(&buf[..len]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(usize::from(ip.total_len()), len);
        let t = tcp::Packet::new_checked(ip.payload()).unwrap();
        assert!(t.verify_checksum(ip.src_addr().into(), ip.dst_addr().into()));
        (t.header_len(), t.options().to_vec(), t.payload().to_vec())
    }

    #[test]
    fn appended_after_timestamps_payload_moved() {
        let ts = [1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6];
        let (mut buf, len) = packet(&ts, b"GET / HTTP/1.1\r\n");
        let n = insert(&mut buf, len, ep("192.0.2.7:40001")).unwrap();
        assert_eq!(n, len + 8);
        let (doff, opts, payload) = check(&buf, n);
        assert_eq!(doff, 40);
        assert_eq!(&opts[..12], &ts);
        assert_eq!(&opts[12..], &[254, 8, 0x9c, 0x41, 192, 0, 2, 7]);
        assert_eq!(payload, b"GET / HTTP/1.1\r\n");
        assert_eq!(read(&opts), Some(ep("192.0.2.7:40001")));
    }

    #[test]
    fn end_of_list_padding_is_reused() {
        // MSS (4) then EOL and padding to 8.
        let (mut buf, len) = packet(&[2, 4, 5, 180, 0, 0, 0, 0], b"");
        let n = insert(&mut buf, len, ep("192.0.2.7:1")).unwrap();
        let (doff, opts, _) = check(&buf, n);
        assert_eq!(doff, 32);
        assert_eq!(&opts[4..12], &[254, 8, 0, 1, 192, 0, 2, 7]);
    }

    #[test]
    fn ipv6_client_form() {
        let (mut buf, len) = packet(&[], b"x");
        let n = insert(&mut buf, len, ep("[2001:db8::7]:443")).unwrap();
        let (doff, opts, payload) = check(&buf, n);
        assert_eq!((doff, opts[0], opts[1]), (40, 254, 20));
        assert_eq!(payload, b"x");
        assert_eq!(read(&opts), Some(ep("[2001:db8::7]:443")));
    }

    /// An IPv6 TCP packet with a destination options header, `opts` and
    /// `payload`, in a 1600-byte buffer.
    fn packet_v6(opts: &[u8], payload: &[u8]) -> (Vec<u8>, usize) {
        let (src, dst) = ("2001:db8:3::1".parse().unwrap(), "2001:db8:1::11".parse().unwrap());
        let doff = 20 + opts.len();
        let total = 48 + doff + payload.len();
        let mut buf = vec![0u8; 1600];
        let ip = ipv6::Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: ipv6::ext_header::DEST_OPTIONS,
            payload_len: total - 40,
            hop_limit: 64,
        };
        ip.emit(&mut ipv6::Packet::new_unchecked(&mut buf[..40]));
        buf[40..48].copy_from_slice(&[ip_protocol::TCP, 0, 1, 4, 0, 0, 0, 0]);
        let mut t = tcp::Packet::new_unchecked(&mut buf[48..total]);
        t.set_src_port(5000);
        t.set_dst_port(80);
        t.set_header_len(doff);
        t.set_flags(tcp::Flags::ACK);
        t.options_mut().copy_from_slice(opts);
        t.payload_mut().copy_from_slice(payload);
        t.fill_checksum(src.into(), dst.into());
        (buf, total)
    }

    #[test]
    fn ipv6_packets_take_either_form() {
        for (client, form) in [("[2001:db8::7]:443", 20), ("192.0.2.7:443", 8)] {
            let (mut buf, len) = packet_v6(&[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6], b"GET");
            let n = insert(&mut buf, len, ep(client)).unwrap();
            assert_eq!(n, len + form);
            let ip = ipv6::Packet::new_checked(&buf[..n]).unwrap();
            assert_eq!(usize::from(ip.payload_len()), n - 40);
            assert_eq!(ip.transport(), Ok((ip_protocol::TCP, 48)));
            let t = tcp::Packet::new_checked(&buf[48..n]).unwrap();
            assert!(t.verify_checksum(ip.src_addr().into(), ip.dst_addr().into()));
            assert_eq!((t.header_len(), t.payload()), (32 + form, &b"GET"[..]));
            assert_eq!(read(t.options()), Some(ep(client)));
        }
    }

    #[test]
    fn full_option_space_is_refused_untouched() {
        // Timestamps and a 3-block SACK: 12 + 28 = 40 bytes.
        let mut opts = vec![1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6, 1, 1, 5, 26];
        opts.extend([0u8; 24]);
        let (mut buf, len) = packet(&opts, b"abc");
        let before = buf.clone();
        assert_eq!(insert(&mut buf, len, ep("192.0.2.7:1")), Err(Skipped::NoRoom));
        assert_eq!(buf, before);
    }

    #[test]
    fn no_room_in_buffer_is_unfit() {
        let (buf, len) = packet(&[], b"abc");
        let mut short = buf[..len].to_vec();
        assert_eq!(insert(&mut short, len, ep("192.0.2.7:1")), Err(Skipped::Unfit));
        assert_eq!(insert(&mut [0u8; 10], 10, ep("192.0.2.7:1")), Err(Skipped::Unfit));
    }
}
