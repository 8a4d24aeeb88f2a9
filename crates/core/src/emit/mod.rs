//! Packets the engine builds itself: SYNProxy's SYN-ACKs to clients, SYNs
//! and ACKs to reals, RSTs, and PROXY protocol headers. Built from scratch,
//! with only the options the engine implements and chose, never reflecting
//! a client's unknown options. [`store`] holds them until the driver takes
//! them; [`reset`] queues the RSTs that end connections the engine forgets.

pub(crate) mod reset;
pub(crate) mod store;

use std::net::IpAddr;

use rvs_wire::tcp_seq::SeqNumber;
use rvs_wire::{ip_protocol, ipv4, tcp};

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

    /// Write the IP packet into `buf`; returns its length (0 if it does not
    /// fit or the addresses are not IPv4, which the data path serves for now).
    pub(crate) fn emit(&self, buf: &mut [u8]) -> usize {
        self.emit_with_payload(buf, &[])
    }

    /// [`Segment::emit`] carrying `payload`.
    pub(crate) fn emit_with_payload(&self, buf: &mut [u8], payload: &[u8]) -> usize {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (self.src.addr, self.dst.addr) else { return 0 };
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
        let ip = ipv4::Repr {
            src_addr: src,
            dst_addr: dst,
            protocol: ip_protocol::TCP,
            payload_len: repr.buffer_len(),
            ttl: self.ttl,
            ident: 0,
            dont_frag: true,
        };
        let len = ip.buffer_len();
        let Some(out) = buf.get_mut(..len) else { return 0 };
        let (head, seg) = out.split_at_mut(len - repr.buffer_len());
        ip.emit(&mut ipv4::Packet::new_unchecked(head));
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
    }
}
