//! IPv4 headers (RFC 791).
//!
//! [`Packet`] is a view over an IPv4 datagram: the header, any options and the
//! payload. The buffer may extend past the datagram (Ethernet pads short
//! frames to 60 bytes); everything beyond `total_len` is ignored.
//!
//! # No-panic contract
//!
//! [`Packet::new_checked`] validates the version and every length a single
//! time: `20 <= header_len <= total_len <= buffer length`. Once it has
//! succeeded, no getter or setter can panic and [`Packet::payload`] is exactly
//! the datagram's payload. On a view built with [`Packet::new_unchecked`] over
//! a buffer that fails that check, accessors still do not panic; they read
//! zeros and drop writes, and slices are clamped to the buffer.
//!
//! Options are kept as opaque bytes in [`Packet::options`]; a load balancer
//! forwards them untouched and never needs to interpret them.

use core::net::Ipv4Addr;

use crate::Error;
use crate::access::{clamped, clamped_mut, get_array, get_u8, get_u16, set_bytes, set_u8, set_u16};
use crate::checksum;

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

/// Largest IPv4 header: the 4-bit IHL counts 32-bit words.
pub const MAX_HEADER_LEN: usize = 60;

mod field {
    use crate::access::Field;

    pub(crate) const VER_IHL: usize = 0;
    pub(crate) const DSCP_ECN: usize = 1;
    pub(crate) const LENGTH: Field = 2..4;
    pub(crate) const IDENT: Field = 4..6;
    pub(crate) const FLG_OFF: Field = 6..8;
    pub(crate) const TTL: usize = 8;
    pub(crate) const PROTOCOL: usize = 9;
    pub(crate) const CHECKSUM: Field = 10..12;
    pub(crate) const SRC_ADDR: Field = 12..16;
    pub(crate) const DST_ADDR: Field = 16..20;
}

const FLAG_DONT_FRAG: u16 = 0x4000;
const FLAG_MORE_FRAGS: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

view! {
    /// A view over an IPv4 datagram in a byte buffer.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validates the fields every accessor relies on.
    ///
    /// Returns [`Error::Truncated`] if the buffer is shorter than 20 bytes,
    /// the header length or the total length; [`Error::Unrecognized`] if the
    /// version is not 4; [`Error::Malformed`] if the IHL is below 5 or the
    /// total length is below the header length (RFC 791 §3.1: the minimum
    /// value for a correct header is 5).
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Unrecognized);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::Malformed);
        }
        if total_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Wraps the start of a datagram quoted in an ICMP error message, after
    /// [`check_quoted_len`](Self::check_quoted_len) has accepted it.
    pub fn new_checked_quoted(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_quoted_len()?;
        Ok(packet)
    }

    /// Like [`check_len`](Self::check_len), but accepts a buffer shorter than
    /// `total_len`: an ICMP error quotes only the header and the first bytes
    /// of the payload (RFC 792; RFC 1812 §4.3.2.3). The header itself must be
    /// complete; [`payload`](Self::payload) is then the quoted part.
    pub fn check_quoted_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Unrecognized);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN || usize::from(self.total_len()) < header_len {
            return Err(Error::Malformed);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The IP version (4 for a valid packet).
    pub fn version(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::VER_IHL) >> 4
    }

    /// Header length in bytes, options included (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(get_u8(self.buffer.as_ref(), field::VER_IHL) & 0x0f) * 4
    }

    /// The DSCP and ECN bits (the former type-of-service byte).
    pub fn dscp_ecn(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::DSCP_ECN)
    }

    /// Length of the datagram, header included.
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification, used to reassemble fragments.
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT)
    }

    fn flags_and_offset(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::FLG_OFF)
    }

    /// The "don't fragment" flag.
    pub fn dont_frag(&self) -> bool {
        self.flags_and_offset() & FLAG_DONT_FRAG != 0
    }

    /// The "more fragments" flag.
    pub fn more_frags(&self) -> bool {
        self.flags_and_offset() & FLAG_MORE_FRAGS != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    pub fn frag_offset(&self) -> u16 {
        (self.flags_and_offset() & FRAG_OFFSET_MASK) * 8
    }

    /// Whether this datagram is a fragment: any fragment but the first has a
    /// non-zero offset, and any but the last has "more fragments" set. Only
    /// the first fragment carries the transport header.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::TTL)
    }

    /// Protocol of the payload (see [`crate::ip_protocol`]).
    pub fn protocol(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::PROTOCOL)
    }

    /// Header checksum as stored.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_array::<4>(self.buffer.as_ref(), field::SRC_ADDR))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_array::<4>(self.buffer.as_ref(), field::DST_ADDR))
    }

    /// Header options, uninterpreted (empty when the header is 20 bytes).
    pub fn options(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), HEADER_LEN, self.header_len())
    }

    /// The header, options included.
    pub fn header(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), 0, self.header_len())
    }

    /// The payload: from the end of the header to `total_len`. Bytes past
    /// `total_len` (link-layer padding) are excluded.
    pub fn payload(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), self.header_len(), usize::from(self.total_len()))
    }

    /// Whether the header checksum is correct (RFC 791 §3.1, RFC 1071).
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(checksum::sum(self.header()))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version nibble.
    pub fn set_version(&mut self, version: u8) {
        let data = self.buffer.as_mut();
        let byte = get_u8(data, field::VER_IHL);
        set_u8(data, field::VER_IHL, (version << 4) | (byte & 0x0f));
    }

    /// Sets the header length in bytes; it is stored in 32-bit words, so it
    /// is rounded down to a multiple of 4 and capped at 60.
    pub fn set_header_len(&mut self, len: usize) {
        let ihl = (len.min(MAX_HEADER_LEN) / 4) as u8;
        let data = self.buffer.as_mut();
        let byte = get_u8(data, field::VER_IHL);
        set_u8(data, field::VER_IHL, (byte & 0xf0) | ihl);
    }

    /// Sets the DSCP and ECN bits.
    pub fn set_dscp_ecn(&mut self, value: u8) {
        set_u8(self.buffer.as_mut(), field::DSCP_ECN, value);
    }

    /// Sets the total length. Changing it may invalidate the checks of
    /// [`new_checked`](Self::new_checked); slices stay clamped regardless.
    pub fn set_total_len(&mut self, len: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, ident: u16) {
        set_u16(self.buffer.as_mut(), field::IDENT, ident);
    }

    fn set_flags_and_offset(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::FLG_OFF, value);
    }

    /// Sets or clears the "don't fragment" flag.
    pub fn set_dont_frag(&mut self, value: bool) {
        let raw = self.flags_and_offset() & !FLAG_DONT_FRAG;
        self.set_flags_and_offset(if value { raw | FLAG_DONT_FRAG } else { raw });
    }

    /// Sets or clears the "more fragments" flag.
    pub fn set_more_frags(&mut self, value: bool) {
        let raw = self.flags_and_offset() & !FLAG_MORE_FRAGS;
        self.set_flags_and_offset(if value { raw | FLAG_MORE_FRAGS } else { raw });
    }

    /// Sets the fragment offset in bytes; it is stored in 8-byte units, so it
    /// is rounded down to a multiple of 8.
    pub fn set_frag_offset(&mut self, offset: u16) {
        let raw = self.flags_and_offset() & !FRAG_OFFSET_MASK;
        self.set_flags_and_offset(raw | (offset / 8));
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        set_u8(self.buffer.as_mut(), field::TTL, ttl);
    }

    /// Sets the payload protocol.
    pub fn set_protocol(&mut self, protocol: u8) {
        set_u8(self.buffer.as_mut(), field::PROTOCOL, protocol);
    }

    /// Stores a header checksum as is.
    pub fn set_checksum(&mut self, checksum: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        set_bytes(self.buffer.as_mut(), field::SRC_ADDR, &addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        set_bytes(self.buffer.as_mut(), field::DST_ADDR, &addr.octets());
    }

    /// Header options, mutable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        clamped_mut(self.buffer.as_mut(), HEADER_LEN, header_len)
    }

    /// The payload (from the end of the header to `total_len`), mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), usize::from(self.total_len()));
        clamped_mut(self.buffer.as_mut(), start, end)
    }

    /// Computes the header checksum and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let checksum = checksum::finish(checksum::sum(self.header()));
        self.set_checksum(checksum);
    }
}

/// A high-level description of an unfragmented IPv4 header without options,
/// for building packets.
///
/// Parsing is lossy: options, DSCP/ECN and fragmentation fields other than
/// "don't fragment" are not represented, and the checksum is not verified
/// (use [`Packet::verify_checksum`]). Emitting always produces a 20-byte
/// header with DSCP/ECN zero, no fragmentation and a correct checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Payload protocol (see [`crate::ip_protocol`]).
    pub protocol: u8,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Identification.
    pub ident: u16,
    /// The "don't fragment" flag.
    pub dont_frag: bool,
}

impl Repr {
    /// Describes the header of a datagram, after validating its lengths.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, Error> {
        packet.check_len()?;
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.payload().len(),
            ttl: packet.ttl(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// Length of the emitted header.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Length of the whole datagram: header and payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.payload_len)
    }

    /// Writes a 20-byte header with a correct checksum into the start of
    /// `packet`, leaving the payload bytes as they are.
    ///
    /// The buffer should be at least [`buffer_len`](Self::buffer_len) bytes;
    /// a payload length that does not fit the 16-bit total length is a caller
    /// bug and saturates at 65 535.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN);
        packet.set_dscp_ecn(0);
        packet.set_total_len(u16::try_from(self.buffer_len()).unwrap_or(u16::MAX));
        packet.set_ident(self.ident);
        packet.set_flags_and_offset(if self.dont_frag { FLAG_DONT_FRAG } else { 0 });
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{IPV4_ICMP_FRAG_NEEDED, IPV4_TCP_SYN, IPV4_UDP_DNS};
    use crate::ip_protocol;

    #[test]
    fn parse_golden_syn() {
        let packet = Packet::new_checked(&IPV4_TCP_SYN[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.dscp_ecn(), 0);
        assert_eq!(packet.total_len(), 60);
        assert_eq!(packet.ident(), 0x4a7b);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert!(!packet.is_fragment());
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), ip_protocol::TCP);
        assert_eq!(packet.checksum(), 0x0402);
        assert_eq!(packet.src_addr(), Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(198, 51, 100, 1));
        assert!(packet.options().is_empty());
        assert_eq!(packet.payload(), &IPV4_TCP_SYN[20..]);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn emit_golden_packets() {
        for bytes in [&IPV4_TCP_SYN[..], &IPV4_UDP_DNS[..]] {
            let repr = Repr::parse(&Packet::new_checked(bytes).unwrap()).unwrap();
            assert_eq!(repr.buffer_len(), bytes.len());
            let mut out = bytes.to_vec();
            out[..HEADER_LEN].fill(0xa5);
            repr.emit(&mut Packet::new_unchecked(&mut out[..]));
            assert_eq!(out, bytes);
        }
        let repr = Repr::parse(&Packet::new_checked(&IPV4_UDP_DNS[..]).unwrap()).unwrap();
        assert_eq!(
            repr,
            Repr {
                src_addr: Ipv4Addr::new(192, 0, 2, 10),
                dst_addr: Ipv4Addr::new(203, 0, 113, 53),
                protocol: ip_protocol::UDP,
                payload_len: 37,
                ttl: 64,
                ident: 0x1c46,
                dont_frag: false,
            }
        );
    }

    #[test]
    fn dscp_is_parsed_but_not_emitted() {
        let packet = Packet::new_checked(&IPV4_ICMP_FRAG_NEEDED[..]).unwrap();
        assert_eq!(packet.dscp_ecn(), 0xc0);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn payload_excludes_link_padding() {
        let mut frame = IPV4_UDP_DNS.to_vec();
        frame.extend_from_slice(&[0; 3]);
        let packet = Packet::new_checked(&frame[..]).unwrap();
        assert_eq!(packet.payload().len(), 37);
    }

    #[test]
    fn options_are_skipped() {
        // Header with a 4-byte option (NOP NOP NOP EOL), IHL 6.
        let mut bytes = [0u8; 28];
        bytes[..20].copy_from_slice(&IPV4_UDP_DNS[..20]);
        bytes[0] = 0x46;
        bytes[2..4].copy_from_slice(&28u16.to_be_bytes());
        bytes[20..24].copy_from_slice(&[1, 1, 1, 0]);
        bytes[24..].copy_from_slice(&[9, 9, 9, 9]);
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        packet.fill_checksum();
        assert!(packet.verify_checksum());
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.options(), &[1, 1, 1, 0]);
        assert_eq!(packet.payload(), &[9, 9, 9, 9]);
    }

    #[test]
    fn fragments() {
        let mut bytes = IPV4_UDP_DNS;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_frag_offset(1480);
        assert!(packet.is_fragment());
        assert_eq!(packet.frag_offset(), 1480);
        packet.set_frag_offset(0);
        packet.set_more_frags(true);
        assert!(packet.is_fragment() && packet.more_frags() && !packet.dont_frag());
        packet.set_dont_frag(true);
        assert!(packet.dont_frag() && packet.more_frags());
    }

    #[test]
    fn check_len_errors() {
        let ok = IPV4_UDP_DNS;
        assert_eq!(Packet::new_checked(&ok[..19]).unwrap_err(), Error::Truncated);
        let mut bad = ok;
        bad[0] = 0x65;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Unrecognized);
        bad[0] = 0x44;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        bad[0] = 0x4f;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Truncated);
        let mut bad = ok;
        bad[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        bad[2..4].copy_from_slice(&58u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&ok[..56]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn quoted_header() {
        let quoted = &IPV4_ICMP_FRAG_NEEDED[28..];
        assert_eq!(Packet::new_checked(quoted).unwrap_err(), Error::Truncated);
        let packet = Packet::new_checked_quoted(quoted).unwrap();
        assert_eq!(packet.total_len(), 1500);
        assert_eq!(packet.payload(), &quoted[20..]);
        assert!(packet.verify_checksum());
        assert_eq!(Packet::new_checked_quoted(&quoted[..19]).unwrap_err(), Error::Truncated);
        let mut bad = [0u8; 28];
        bad.copy_from_slice(quoted);
        bad[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(Packet::new_checked_quoted(&bad[..]).unwrap_err(), Error::Malformed);
        bad[2..4].copy_from_slice(&1500u16.to_be_bytes());
        bad[0] = 0x48;
        assert_eq!(Packet::new_checked_quoted(&bad[..]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn unchecked_short_buffer_does_not_panic() {
        let mut bytes = [0x4fu8, 0, 0xff, 0xff];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        assert_eq!(packet.src_addr(), Ipv4Addr::UNSPECIFIED);
        assert!(packet.options().is_empty());
        assert!(packet.payload().is_empty());
        packet.set_dst_addr(Ipv4Addr::BROADCAST);
        packet.fill_checksum();
        packet.payload_mut().fill(1);
        Repr::parse(&packet).unwrap_err();
    }

    #[test]
    fn ttl_rewrite_with_incremental_checksum() {
        let mut bytes = IPV4_TCP_SYN;
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        let old_word = u16::from_be_bytes([packet.ttl(), packet.protocol()]);
        packet.set_ttl(packet.ttl() - 1);
        let new_word = u16::from_be_bytes([packet.ttl(), packet.protocol()]);
        packet.set_checksum(checksum::update16(packet.checksum(), old_word, new_word));
        assert!(packet.verify_checksum());
        let old = packet.dst_addr();
        let new = Ipv4Addr::new(10, 1, 2, 3);
        packet.set_dst_addr(new);
        packet.set_checksum(checksum::update_addr(packet.checksum(), old.into(), new.into()));
        assert!(packet.verify_checksum());
    }
}
