//! IPv6 fixed headers (RFC 8200 §3).
//!
//! [`Packet`] is a view over the 40-byte fixed header and the payload it
//! announces. Extension headers are not walked: [`Packet::next_header`] is
//! reported as is, and a caller that meets an extension header decides what
//! to do with it. Jumbograms (RFC 2675, payload length 0 with a hop-by-hop
//! option) are not supported; such a packet is seen with an empty payload.
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
    use crate::golden::IPV6_UDP;
    use crate::ip_protocol;

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
}
