//! IPv6 fixed headers (RFC 8200 §3).
//!
//! [`Packet`] is a view over the 40-byte fixed header and the payload it
//! announces. [`Packet::next_header`] is reported as is; [`Packet::transport`]
//! walks the extension headers a forwarding node may meet (hop-by-hop,
//! routing, destination options) to the upper-layer header, at most
//! [`MAX_EXT_HEADERS`] of them, and refuses fragments and chains it cannot
//! walk with a [`ChainError`]. Jumbograms (RFC 2675, payload length 0 with a
//! hop-by-hop option) are not supported; such a packet is seen with an empty
//! payload, and its chain as truncated.
//!
//! # No-panic contract
//!
//! [`Packet::new_checked`] validates the version and that the buffer holds the
//! header plus `payload_len` bytes. Once it has succeeded, no getter or setter
//! can panic. On a view built with [`Packet::new_unchecked`] over a buffer that
//! fails that check, accessors still do not panic; they read zeros, drop
//! writes and clamp slices to the buffer.

use core::net::Ipv6Addr;

use crate::Error;
use crate::access::{
    clamped, clamped_mut, get_array, get_u8, get_u16, get_u32, set_bytes, set_u8, set_u16, set_u32,
};

/// Length of the IPv6 fixed header.
pub const HEADER_LEN: usize = 40;

mod field {
    use crate::access::Field;

    pub(crate) const VER_TC_FLOW: Field = 0..4;
    pub(crate) const LENGTH: Field = 4..6;
    pub(crate) const NXT_HDR: usize = 6;
    pub(crate) const HOP_LIMIT: usize = 7;
    pub(crate) const SRC_ADDR: Field = 8..24;
    pub(crate) const DST_ADDR: Field = 24..40;
}

const FLOW_LABEL_MASK: u32 = 0x000f_ffff;

/// Most extension headers [`Packet::transport`] walks before giving up.
/// RFC 8200 §4.1 lets each appear once (destination options twice); eight
/// covers any sensible chain and bounds the work per packet.
pub const MAX_EXT_HEADERS: usize = 8;

/// Next-header values of IPv6 extension headers (RFC 8200 §4, IANA's "IPv6
/// Extension Header Types").
pub mod ext_header {
    /// Hop-by-hop options (RFC 8200 §4.3); only ever first in the chain.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing (RFC 8200 §4.4).
    pub const ROUTING: u8 = 43;
    /// Fragment (RFC 8200 §4.5).
    pub const FRAGMENT: u8 = 44;
    /// Authentication header (RFC 4302).
    pub const AUTH: u8 = 51;
    /// Destination options (RFC 8200 §4.6).
    pub const DEST_OPTIONS: u8 = 60;
    /// Mobility (RFC 6275).
    pub const MOBILITY: u8 = 135;
    /// Host identity protocol (RFC 7401).
    pub const HIP: u8 = 139;
    /// Shim6 (RFC 5533).
    pub const SHIM6: u8 = 140;
    /// Reserved for experimentation (RFC 3692).
    pub const EXPERIMENT_1: u8 = 253;
    /// Reserved for experimentation (RFC 3692).
    pub const EXPERIMENT_2: u8 = 254;
}

/// Why [`Packet::transport`] found no upper-layer header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainError {
    /// A fragment header (RFC 8200 §4.5), even an atomic one: the upper-layer
    /// header may be in another fragment, or the packet must be reassembled.
    Fragment,
    /// An extension header this view does not walk (authentication,
    /// mobility, HIP, shim6, experimental), a routing header with segments
    /// left (the packet's destination is not its final one), hop-by-hop
    /// options anywhere but first, or more than [`MAX_EXT_HEADERS`].
    Unsupported,
    /// An extension header runs past the payload.
    Truncated,
}

impl core::fmt::Display for ChainError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Fragment => "fragment header",
            Self::Unsupported => "unsupported extension header chain",
            Self::Truncated => "truncated extension header",
        })
    }
}

impl std::error::Error for ChainError {}

view! {
    /// A view over an IPv6 packet in a byte buffer.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validates the fields every accessor relies on: [`Error::Truncated`] if
    /// the buffer is shorter than 40 bytes or than 40 + `payload_len`,
    /// [`Error::Unrecognized`] if the version is not 6. Bytes past the
    /// payload (link-layer padding) are allowed.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::Unrecognized);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Wraps the start of a packet quoted in an ICMPv6 error message, after
    /// [`check_quoted_len`](Self::check_quoted_len) has accepted it.
    pub fn new_checked_quoted(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_quoted_len()?;
        Ok(packet)
    }

    /// Like [`check_len`](Self::check_len), but accepts a buffer shorter than
    /// 40 + `payload_len`: an ICMPv6 error quotes only as much of the packet
    /// as fits in the minimum MTU (RFC 4443 §2.4 (c)). The fixed header must
    /// be complete; [`payload`](Self::payload) is then the quoted part.
    pub fn check_quoted_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::Unrecognized);
        }
        Ok(())
    }

    fn ver_tc_flow(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::VER_TC_FLOW)
    }

    /// The IP version (6 for a valid packet).
    pub fn version(&self) -> u8 {
        (self.ver_tc_flow() >> 28) as u8
    }

    /// Traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> 20) as u8
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & FLOW_LABEL_MASK
    }

    /// Length of everything after the fixed header, extension headers
    /// included.
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Type of the header that follows: an extension header or the upper
    /// layer protocol (see [`crate::ip_protocol`]).
    pub fn next_header(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::NXT_HDR)
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::HOP_LIMIT)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(get_array::<16>(self.buffer.as_ref(), field::SRC_ADDR))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(get_array::<16>(self.buffer.as_ref(), field::DST_ADDR))
    }

    /// The payload: `payload_len` bytes after the fixed header.
    pub fn payload(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), HEADER_LEN, HEADER_LEN + usize::from(self.payload_len()))
    }

    /// The upper-layer protocol and the offset of its header from the start
    /// of the packet, past any hop-by-hop, routing and destination options
    /// headers (RFC 8200 §4). The protocol is whatever follows the last of
    /// those, ESP and "no next header" included; the offset is at most
    /// 40 + `payload_len` (the upper-layer header may be empty or short, for
    /// its own view to refuse).
    ///
    /// A routing header is skipped only with zero segments left (§4.4: the
    /// node then ignores it), in which case the fixed header's destination
    /// is the final one and the upper-layer checksum's pseudo-header uses it.
    pub fn transport(&self) -> Result<(u8, usize), ChainError> {
        let data = self.payload();
        let mut next = self.next_header();
        let (mut at, mut walked) = (0, 0);
        loop {
            match next {
                ext_header::HOP_BY_HOP if walked > 0 => return Err(ChainError::Unsupported),
                ext_header::HOP_BY_HOP | ext_header::ROUTING | ext_header::DEST_OPTIONS => {}
                ext_header::FRAGMENT => return Err(ChainError::Fragment),
                ext_header::AUTH
                | ext_header::MOBILITY
                | ext_header::HIP
                | ext_header::SHIM6
                | ext_header::EXPERIMENT_1
                | ext_header::EXPERIMENT_2 => return Err(ChainError::Unsupported),
                protocol => return Ok((protocol, HEADER_LEN + at)),
            }
            if walked == MAX_EXT_HEADERS {
                return Err(ChainError::Unsupported);
            }
            // Every walked header starts with next header, length in 8-octet
            // units not counting the first 8, and (routing) type and
            // segments left.
            let Some(&[following, ext_len, _, segments_left, ..]) = data.get(at..at + 8) else {
                return Err(ChainError::Truncated);
            };
            if next == ext_header::ROUTING && segments_left != 0 {
                return Err(ChainError::Unsupported);
            }
            let len = (usize::from(ext_len) + 1) * 8;
            if at + len > data.len() {
                return Err(ChainError::Truncated);
            }
            next = following;
            at += len;
            walked += 1;
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_ver_tc_flow(&mut self, value: u32) {
        set_u32(self.buffer.as_mut(), field::VER_TC_FLOW, value);
    }

    /// Sets the version nibble.
    pub fn set_version(&mut self, version: u8) {
        let raw = self.ver_tc_flow() & 0x0fff_ffff;
        self.set_ver_tc_flow(raw | (u32::from(version & 0x0f) << 28));
    }

    /// Sets the traffic class.
    pub fn set_traffic_class(&mut self, value: u8) {
        let raw = self.ver_tc_flow() & 0xf00f_ffff;
        self.set_ver_tc_flow(raw | (u32::from(value) << 20));
    }

    /// Sets the flow label; bits above the low 20 are ignored.
    pub fn set_flow_label(&mut self, value: u32) {
        let raw = self.ver_tc_flow() & !FLOW_LABEL_MASK;
        self.set_ver_tc_flow(raw | (value & FLOW_LABEL_MASK));
    }

    /// Sets the payload length. Changing it may invalidate the checks of
    /// [`new_checked`](Self::new_checked); slices stay clamped regardless.
    pub fn set_payload_len(&mut self, len: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, value: u8) {
        set_u8(self.buffer.as_mut(), field::NXT_HDR, value);
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, value: u8) {
        set_u8(self.buffer.as_mut(), field::HOP_LIMIT, value);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        set_bytes(self.buffer.as_mut(), field::SRC_ADDR, &addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        set_bytes(self.buffer.as_mut(), field::DST_ADDR, &addr.octets());
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        clamped_mut(self.buffer.as_mut(), HEADER_LEN, end)
    }
}

/// A high-level description of an IPv6 fixed header, for building packets.
///
/// Parsing is lossy: traffic class and flow label are not represented; they
/// are emitted as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header (see [`crate::ip_protocol`]).
    pub next_header: u8,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
}

impl Repr {
    /// Describes the fixed header of a packet, after validating its lengths.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, Error> {
        packet.check_len()?;
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
        })
    }

    /// Length of the emitted header.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Length of the whole packet: header and payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.payload_len)
    }

    /// Writes the fixed header into the start of `packet`, leaving the payload
    /// bytes as they are. A payload length above 65 535 is a caller bug and
    /// saturates.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_ver_tc_flow(6 << 28);
        packet.set_payload_len(u16::try_from(self.payload_len).unwrap_or(u16::MAX));
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{IPV6_EXT_TCP_SYN, IPV6_ICMPV6_PACKET_TOO_BIG, IPV6_UDP};
    use crate::{ip_protocol, tcp};

    #[test]
    fn parse_golden() {
        let packet = Packet::new_checked(&IPV6_UDP[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0x2e);
        assert_eq!(packet.flow_label(), 0x12345);
        assert_eq!(packet.payload_len(), 13);
        assert_eq!(packet.next_header(), ip_protocol::UDP);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.src_addr(), Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        assert_eq!(packet.dst_addr(), Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 2));
        assert_eq!(packet.payload(), &IPV6_UDP[40..]);
    }

    #[test]
    fn emit_golden() {
        let repr = Repr::parse(&Packet::new_checked(&IPV6_UDP[..]).unwrap()).unwrap();
        assert_eq!(repr.buffer_len(), IPV6_UDP.len());
        let mut out = IPV6_UDP;
        out[..HEADER_LEN].fill(0xa5);
        let mut packet = Packet::new_unchecked(&mut out[..]);
        repr.emit(&mut packet);
        packet.set_traffic_class(0x2e);
        packet.set_flow_label(0x12345);
        assert_eq!(out, IPV6_UDP);
    }

    #[test]
    fn setters_keep_neighbouring_bits() {
        let mut bytes = IPV6_UDP;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_flow_label(0xfff_ffff);
        assert_eq!((packet.version(), packet.traffic_class(), packet.flow_label()), (6, 0x2e, 0xfffff));
        packet.set_traffic_class(0);
        assert_eq!((packet.version(), packet.traffic_class(), packet.flow_label()), (6, 0, 0xfffff));
        packet.set_version(4);
        assert_eq!((packet.version(), packet.traffic_class(), packet.flow_label()), (4, 0, 0xfffff));
    }

    #[test]
    fn check_len_errors() {
        assert_eq!(Packet::new_checked(&IPV6_UDP[..39]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&IPV6_UDP[..52]).unwrap_err(), Error::Truncated);
        let mut bad = IPV6_UDP;
        bad[0] = 0x42;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Unrecognized);
        let mut padded = IPV6_UDP.to_vec();
        padded.push(0);
        assert_eq!(Packet::new_checked(&padded[..]).unwrap().payload().len(), 13);
    }

    #[test]
    fn transport_without_extension_headers() {
        let packet = Packet::new_checked(&IPV6_UDP[..]).unwrap();
        assert_eq!(packet.transport(), Ok((ip_protocol::UDP, HEADER_LEN)));
    }

    #[test]
    fn transport_past_extension_headers() {
        let packet = Packet::new_checked(&IPV6_EXT_TCP_SYN[..]).unwrap();
        assert_eq!(packet.next_header(), ext_header::HOP_BY_HOP);
        let (protocol, at) = packet.transport().unwrap();
        assert_eq!((protocol, at), (ip_protocol::TCP, 56));
        let segment = tcp::Packet::new_checked(&IPV6_EXT_TCP_SYN[at..]).unwrap();
        assert_eq!((segment.src_port(), segment.dst_port()), (51514, 80));
        assert!(segment.verify_checksum(packet.src_addr().into(), packet.dst_addr().into()));
    }

    /// A packet whose chain is the given headers (next header, length in
    /// 8-octet units, segments left), each padded to its length, then TCP.
    fn chain(headers: &[(u8, u8, u8)]) -> Vec<u8> {
        let mut bytes = IPV6_UDP[..HEADER_LEN].to_vec();
        let mut next = headers.first().map_or(ip_protocol::TCP, |h| h.0);
        bytes[6] = next;
        for (i, &(_, len, left)) in headers.iter().enumerate() {
            next = headers.get(i + 1).map_or(ip_protocol::TCP, |h| h.0);
            let mut header = vec![0u8; (usize::from(len) + 1) * 8];
            header[..4].copy_from_slice(&[next, len, 0, left]);
            bytes.extend_from_slice(&header);
        }
        bytes.extend_from_slice(&IPV6_EXT_TCP_SYN[56..]);
        let payload_len = (bytes.len() - HEADER_LEN) as u16;
        bytes[4..6].copy_from_slice(&payload_len.to_be_bytes());
        bytes
    }

    fn walk(bytes: &[u8]) -> Result<(u8, usize), ChainError> {
        Packet::new_checked(bytes).unwrap().transport()
    }

    #[test]
    fn transport_chains() {
        use ext_header::{AUTH, DEST_OPTIONS, FRAGMENT, HOP_BY_HOP, ROUTING};
        let walked = [(HOP_BY_HOP, 0, 0), (DEST_OPTIONS, 1, 0), (ROUTING, 2, 0), (DEST_OPTIONS, 0, 0)];
        assert_eq!(walk(&chain(&walked)), Ok((ip_protocol::TCP, HEADER_LEN + 8 + 16 + 24 + 8)));
        // Any fragment header, even an atomic one, wherever it is.
        assert_eq!(walk(&chain(&[(FRAGMENT, 0, 0)])), Err(ChainError::Fragment));
        assert_eq!(walk(&chain(&[(HOP_BY_HOP, 0, 0), (FRAGMENT, 0, 0)])), Err(ChainError::Fragment));
        // Hop-by-hop only first; routing only with no segments left; AH not walked.
        assert_eq!(walk(&chain(&[(DEST_OPTIONS, 0, 0), (HOP_BY_HOP, 0, 0)])), Err(ChainError::Unsupported));
        assert_eq!(walk(&chain(&[(ROUTING, 2, 1)])), Err(ChainError::Unsupported));
        assert_eq!(walk(&chain(&[(AUTH, 2, 0)])), Err(ChainError::Unsupported));
        // At most MAX_EXT_HEADERS.
        let most = [(DEST_OPTIONS, 0, 0); MAX_EXT_HEADERS];
        assert_eq!(walk(&chain(&most)), Ok((ip_protocol::TCP, HEADER_LEN + 8 * MAX_EXT_HEADERS)));
        let too_many = [(DEST_OPTIONS, 0, 0); MAX_EXT_HEADERS + 1];
        assert_eq!(walk(&chain(&too_many)), Err(ChainError::Unsupported));
    }

    #[test]
    fn transport_truncated_chains() {
        let mut bytes = chain(&[(ext_header::DEST_OPTIONS, 3, 0)]);
        // The header claims 32 bytes; the payload ends inside it.
        bytes.truncate(HEADER_LEN + 24);
        bytes[4..6].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(walk(&bytes), Err(ChainError::Truncated));
        // Fewer than the 8 bytes every extension header has.
        bytes[4..6].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(walk(&bytes[..HEADER_LEN + 4]), Err(ChainError::Truncated));
        // A jumbogram's payload length is zero.
        let mut jumbo = IPV6_EXT_TCP_SYN;
        jumbo[4..6].copy_from_slice(&[0, 0]);
        assert_eq!(walk(&jumbo), Err(ChainError::Truncated));
        // An extension header ending exactly at the payload's end leaves an
        // empty upper-layer header, for its own view to refuse.
        let mut bytes = chain(&[(ext_header::DEST_OPTIONS, 0, 0)]);
        bytes.truncate(HEADER_LEN + 8);
        bytes[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(walk(&bytes), Ok((ip_protocol::TCP, HEADER_LEN + 8)));
    }

    #[test]
    fn quoted_packet() {
        let quoted = &IPV6_ICMPV6_PACKET_TOO_BIG[48..];
        assert_eq!(Packet::new_checked(quoted).unwrap_err(), Error::Truncated);
        let packet = Packet::new_checked_quoted(quoted).unwrap();
        assert_eq!(packet.payload_len(), 1460);
        assert_eq!(packet.payload(), &quoted[40..]);
        assert_eq!(packet.transport(), Ok((ip_protocol::TCP, HEADER_LEN)));
        assert_eq!(Packet::new_checked_quoted(&quoted[..39]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked_quoted(&IPV6_EXT_TCP_SYN[..0]).unwrap_err(), Error::Truncated);
        let mut v4 = [0u8; 40];
        v4[0] = 0x45;
        assert_eq!(Packet::new_checked_quoted(&v4[..]).unwrap_err(), Error::Unrecognized);
    }
}
