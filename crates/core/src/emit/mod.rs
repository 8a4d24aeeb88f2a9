//! Packets the engine builds itself: SYNProxy's SYN-ACKs to clients, SYNs
//! and ACKs to reals, RSTs, and PROXY protocol headers. Built from scratch,
//! with only the options the engine implements and chose, never reflecting
//! a client's unknown options. [`store`] holds them until the driver takes
//! them; [`reset`] queues the RSTs that end connections the engine forgets.

pub(crate) mod reset;
pub(crate) mod store;

use std::net::IpAddr;

use rvs_wire::tcp_seq::SeqNumber;
use rvs_wire::{ip_protocol, ipv4, ipv6, tcp};

use crate::addr::Endpoint;

/// One segment to build.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub(crate) src: Endpoint,
    pub(crate) dst: Endpoint,
    pub(crate) seq: SeqNumber,
    pub(crate) ack: Option<SeqNumber>,
    /// SYN, RST, FIN; ACK follows `ack`.
    pub(crate) flags: tcp::Flags,
    pub(crate) window: u16,
    pub(crate) mss: Option<u16>,
    pub(crate) wscale: Option<u8>,
    pub(crate) sack_permitted: bool,
    pub(crate) timestamps: Option<(u32, u32)>,
    pub(crate) ttl: u8,
}

impl Segment {
    /// A bare RST (with ACK when `ack` is given).
    pub(crate) fn rst(src: Endpoint, dst: Endpoint, seq: SeqNumber, ack: Option<SeqNumber>, ttl: u8) -> Self {
        Self {
            src,
            dst,
            seq,
            ack,
            flags: tcp::Flags::RST,
            window: 0,
            mss: None,
            wscale: None,
            sack_permitted: false,
            timestamps: None,
            ttl,
        }
    }

    /// A bare ACK.
    pub(crate) fn ack(src: Endpoint, dst: Endpoint, seq: SeqNumber, ack: SeqNumber, ttl: u8) -> Self {
        Self { flags: tcp::Flags(0), window: u16::MAX, ack: Some(ack), ..Self::rst(src, dst, seq, None, ttl) }
    }

    /// Write the IP packet, IPv4 or IPv6 as the endpoints are, into `buf`;
    /// returns its length (0 if it does not fit, or if the endpoints' families
    /// differ, which is a caller bug).
    pub(crate) fn emit(&self, buf: &mut [u8]) -> usize {
        self.emit_with_payload(buf, &[])
    }

    /// [`Segment::emit`] carrying `payload`.
    pub(crate) fn emit_with_payload(&self, buf: &mut [u8], payload: &[u8]) -> usize {
        let repr = tcp::Repr {
            src_port: self.src.port,
            dst_port: self.dst.port,
            seq_number: self.seq.0,
            ack_number: self.ack.map(u32::from),
            flags: self.flags,
            window_len: self.window,
            max_seg_size: self.mss,
            window_scale: self.wscale,
            sack_permitted: self.sack_permitted,
            sack_ranges: [None; 3],
            timestamp: self.timestamps,
            payload_len: payload.len(),
        };
        let seg_len = repr.buffer_len();
        let header_len = match (self.src.addr, self.dst.addr) {
            (IpAddr::V4(_), IpAddr::V4(_)) => ipv4::HEADER_LEN,
            (IpAddr::V6(_), IpAddr::V6(_)) => ipv6::HEADER_LEN,
            _ => return 0,
        };
        let len = header_len + seg_len;
        let Some(out) = buf.get_mut(..len) else { return 0 };
        let (head, seg) = out.split_at_mut(header_len);
        match (self.src.addr, self.dst.addr) {
            (IpAddr::V4(src_addr), IpAddr::V4(dst_addr)) => {
                let ip = ipv4::Repr {
                    src_addr,
                    dst_addr,
                    protocol: ip_protocol::TCP,
                    payload_len: seg_len,
                    ttl: self.ttl,
                    ident: 0,
                    dont_frag: true,
                };
                ip.emit(&mut ipv4::Packet::new_unchecked(head));
            }
            (IpAddr::V6(src_addr), IpAddr::V6(dst_addr)) => {
                let ip = ipv6::Repr {
                    src_addr,
                    dst_addr,
                    next_header: ip_protocol::TCP,
                    payload_len: seg_len,
                    hop_limit: self.ttl,
                };
                ip.emit(&mut ipv6::Packet::new_unchecked(head));
            }
            _ => return 0,
        }
        seg[repr.header_len()..].copy_from_slice(payload);
        repr.emit(&mut tcp::Packet::new_unchecked(seg), self.src.addr, self.dst.addr);
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse::<std::net::SocketAddr>().unwrap().into()
    }

    #[test]
    fn syn_ack_parses_back_with_exactly_our_options() {
        let seg = Segment {
            src: ep("10.0.0.1:80"),
            dst: ep("192.0.2.7:40000"),
            seq: SeqNumber(0x1234_5678),
            ack: Some(SeqNumber(1001)),
            flags: tcp::Flags::SYN,
            window: 65535,
            mss: Some(1460),
            wscale: Some(7),
            sack_permitted: true,
            timestamps: Some((5, 6)),
            ttl: 64,
        };
        let mut buf = [0u8; 128];
        let len = seg.emit(&mut buf);
        assert_eq!(len, 20 + 20 + 20);
        let ip = ipv4::Packet::new_checked(&buf[..len]).unwrap();
        assert!(ip.verify_checksum());
        let t = tcp::Packet::new_checked(ip.payload()).unwrap();
        let r = tcp::Repr::parse(&t, ip.src_addr().into(), ip.dst_addr().into()).unwrap();
        assert_eq!(r.ack_number, Some(1001));
        assert!(r.flags.syn() && r.flags.ack());
        assert_eq!(
            (r.max_seg_size, r.window_scale, r.sack_permitted, r.timestamp),
            (Some(1460), Some(7), true, Some((5, 6)))
        );
        let rst = Segment::rst(seg.src, seg.dst, SeqNumber(9), None, 64);
        let len = rst.emit(&mut buf);
        assert_eq!(len, 40);
        assert_eq!(rst.emit(&mut [0u8; 39]), 0);
        let mixed = Segment::rst(seg.src, ep("[2001:db8::7]:40000"), SeqNumber(9), None, 64);
        assert_eq!(mixed.emit(&mut buf), 0);
    }

    #[test]
    fn ipv6_segment_with_payload() {
        let seg =
            Segment::ack(ep("[2001:db8::1]:80"), ep("[2001:db8:1::7]:40000"), SeqNumber(7), SeqNumber(9), 64);
        let mut buf = [0u8; 128];
        let len = seg.emit_with_payload(&mut buf, b"hello");
        assert_eq!(len, 40 + 20 + 5);
        let ip = ipv6::Packet::new_checked(&buf[..len]).unwrap();
        assert_eq!((ip.next_header(), ip.hop_limit(), usize::from(ip.payload_len())), (6, 64, 25));
        assert_eq!(ip.dst_addr(), "2001:db8:1::7".parse::<std::net::Ipv6Addr>().unwrap());
        let t = tcp::Packet::new_checked(ip.payload()).unwrap();
        assert!(t.verify_checksum(ip.src_addr().into(), ip.dst_addr().into()));
        assert_eq!((t.seq_number(), t.ack_number(), t.payload()), (7, 9, &b"hello"[..]));
        assert_eq!(seg.emit_with_payload(&mut buf[..64], b"hello"), 0);
    }
}
