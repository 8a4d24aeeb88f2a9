//! UDP headers (RFC 768).
//!
//! [`Packet`] is a view over a UDP datagram: the 8-byte header and the
//! payload, whose extent is given by the header's length field. The buffer
//! may be longer (for example an IP payload with trailing bytes); bytes past
//! the length field are ignored.
//!
//! # No-panic contract
//!
//! [`Packet::new_checked`] validates `8 <= length <= buffer length` once.
//! After that no getter or setter can panic. On a view built with
//! [`Packet::new_unchecked`] over a buffer that fails that check, accessors
//! still do not panic; they read zeros, drop writes and clamp slices.
//!
//! # Checksum
//!
//! The checksum covers a pseudo-header, the header and the payload. Over IPv4
//! a checksum of zero means "none was computed" (RFC 768), so a computed zero
//! is transmitted as `0xffff`. Over IPv6 the checksum is mandatory (RFC 8200
//! §8.1) and a zero checksum fails verification. The same rule applies after
//! an incremental update ([`checksum::update16`] and friends can yield
//! `0x0000`, which must then be stored as `0xffff`); see
//! [`Packet::update_checksum`].

use core::net::IpAddr;

use crate::access::{clamped, clamped_mut, get_u16, set_u16};
use crate::{Error, checksum, ip_protocol};

/// Length of a UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    use crate::access::Field;

    pub(crate) const SRC_PORT: Field = 0..2;
    pub(crate) const DST_PORT: Field = 2..4;
    pub(crate) const LENGTH: Field = 4..6;
    pub(crate) const CHECKSUM: Field = 6..8;
}

view! {
    /// A view over a UDP datagram in a byte buffer.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validates the length field: [`Error::Truncated`] if the buffer is
    /// shorter than 8 bytes or than the length field, [`Error::Malformed`] if
    /// the length field is below 8 (it counts the header itself).
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if field_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field: header plus payload, in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Checksum as stored.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload: from the end of the header to the length field.
    pub fn payload(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), HEADER_LEN, usize::from(self.len()))
    }

    /// The datagram (header and payload) as delimited by the length field.
    fn datagram(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), 0, usize::from(self.len()))
    }

    /// Whether the checksum is correct for a datagram carried between `src`
    /// and `dst`. An IPv4 datagram without a checksum (zero) is accepted; an
    /// IPv6 one is not (RFC 8200 §8.1).
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        if self.checksum() == 0 {
            return src.is_ipv4();
        }
        let datagram = self.datagram();
        let length = u32::try_from(datagram.len()).unwrap_or(u32::MAX);
        checksum::verify(
            checksum::pseudo_header(src, dst, ip_protocol::UDP, length) + checksum::sum(datagram),
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Sets the length field. Changing it may invalidate the checks of
    /// [`new_checked`](Self::new_checked); slices stay clamped regardless.
    pub fn set_len(&mut self, len: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Stores a checksum as is (use `0xffff` rather than a computed zero).
    pub fn set_checksum(&mut self, checksum: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        clamped_mut(self.buffer.as_mut(), HEADER_LEN, end)
    }

    /// Stores a checksum obtained by incremental update: a zero becomes
    /// `0xffff`, since zero means "no checksum" (RFC 768). A datagram sent
    /// without a checksum (zero over IPv4) must keep it zero rather than be
    /// updated; check [`checksum`](Packet::checksum) first.
    pub fn update_checksum(&mut self, checksum: u16) {
        self.set_checksum(if checksum == 0 { 0xffff } else { checksum });
    }

    /// Computes the checksum for a datagram carried between `src` and `dst`
    /// and stores it; a computed zero is stored as `0xffff` (RFC 768).
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let datagram = self.datagram();
        let length = u32::try_from(datagram.len()).unwrap_or(u32::MAX);
        let sum = checksum::pseudo_header(src, dst, ip_protocol::UDP, length) + checksum::sum(datagram);
        let checksum = match checksum::finish(sum) {
            0 => 0xffff,
            checksum => checksum,
        };
        self.set_checksum(checksum);
    }
}

/// A high-level description of a UDP header, for building datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl Repr {
    /// Describes a datagram's header, after validating its length. The
    /// checksum is not verified (use [`Packet::verify_checksum`]).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, Error> {
        packet.check_len()?;
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: packet.payload().len(),
        })
    }

    /// Length of the header.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Length of the whole datagram: header and payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.payload_len)
    }

    /// Writes the header into the start of `packet`, leaving the payload as
    /// it is, then fills the checksum over header and payload for a datagram
    /// carried between `src` and `dst`. A length above 65 535 is a caller bug
    /// and saturates.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>, src: IpAddr, dst: IpAddr) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(u16::try_from(self.buffer_len()).unwrap_or(u16::MAX));
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{IPV4_UDP_DNS, IPV6_UDP};
    use core::net::{Ipv4Addr, Ipv6Addr};

    fn v4() -> (IpAddr, IpAddr) {
        (Ipv4Addr::new(192, 0, 2, 10).into(), Ipv4Addr::new(203, 0, 113, 53).into())
    }

    fn v6() -> (IpAddr, IpAddr) {
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 2).into(),
        )
    }

    #[test]
    fn parse_golden_v4() {
        let (src, dst) = v4();
        let packet = Packet::new_checked(&IPV4_UDP_DNS[20..]).unwrap();
        assert_eq!(packet.src_port(), 40000);
        assert_eq!(packet.dst_port(), 53);
        assert_eq!(packet.len(), 37);
        assert_eq!(packet.checksum(), 0x834c);
        assert_eq!(packet.payload(), &IPV4_UDP_DNS[28..]);
        assert!(packet.verify_checksum(src, dst));
        assert!(!packet.verify_checksum(dst, Ipv4Addr::LOCALHOST.into()));
    }

    #[test]
    fn emit_golden() {
        for (bytes, (src, dst)) in [(&IPV4_UDP_DNS[20..], v4()), (&IPV6_UDP[40..], v6())] {
            let repr = Repr::parse(&Packet::new_checked(bytes).unwrap()).unwrap();
            assert_eq!(repr.buffer_len(), bytes.len());
            let mut out = bytes.to_vec();
            out[..HEADER_LEN].fill(0x5a);
            repr.emit(&mut Packet::new_unchecked(&mut out[..]), src, dst);
            assert_eq!(out, bytes);
        }
        let repr = Repr::parse(&Packet::new_checked(&IPV6_UDP[40..]).unwrap()).unwrap();
        assert_eq!(repr, Repr { src_port: 5353, dst_port: 443, payload_len: 5 });
    }

    #[test]
    fn zero_checksum() {
        let (src4, dst4) = v4();
        let (src6, dst6) = v6();
        let mut bytes = IPV4_UDP_DNS;
        let mut packet = Packet::new_checked(&mut bytes[20..]).unwrap();
        packet.set_checksum(0);
        assert!(packet.verify_checksum(src4, dst4));
        assert!(!packet.verify_checksum(src6, dst6));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        let (src, dst) = v4();
        // Choose the payload so that the datagram sums to 0xffff.
        let mut bytes = [0u8; 10];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_src_port(1);
        packet.set_dst_port(2);
        packet.set_len(10);
        let partial =
            checksum::pseudo_header(src, dst, ip_protocol::UDP, 10) + checksum::sum(packet.as_ref());
        let filler = !checksum::fold(partial);
        packet.payload_mut().copy_from_slice(&filler.to_be_bytes());
        packet.fill_checksum(src, dst);
        assert_eq!(packet.checksum(), 0xffff);
        assert!(packet.verify_checksum(src, dst));
    }

    #[test]
    fn check_len_errors() {
        let bytes = &IPV4_UDP_DNS[20..];
        assert_eq!(Packet::new_checked(&bytes[..7]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&bytes[..36]).unwrap_err(), Error::Truncated);
        let mut bad = bytes.to_vec();
        bad[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        bad[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert!(Packet::new_checked(&bad[..]).unwrap().payload().is_empty());
    }
}
