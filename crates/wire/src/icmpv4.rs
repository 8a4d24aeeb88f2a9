//! ICMP for IPv4 (RFC 792).
//!
//! A layer-4 balancer meets ICMP mostly as errors about the flows it
//! forwards: destination unreachable (notably "fragmentation needed", which
//! path MTU discovery depends on, RFC 1191), time exceeded and parameter
//! problem. These quote the IP header and at least the first 8 bytes of the
//! offending datagram, enough for the ports and, for TCP, the sequence number.
//! To read the quote, wrap [`Packet::data`] with
//! [`ipv4::Packet::new_checked_quoted`](crate::ipv4::Packet::new_checked_quoted);
//! the 8 transport bytes can be read through a `tcp::Packet` or
//! `udp::Packet` built with `new_unchecked`, whose later fields read as zero.
//!
//! # No-panic contract
//!
//! [`Packet::new_checked`] validates that the 8-byte header is present. After
//! that no getter or setter can panic; the data extends to the end of the
//! buffer (the IP payload). [`emit_error`] never panics either, whatever the
//! sizes of its buffers.

use crate::access::{clamped, clamped_mut, get_u8, get_u16, get_u32, set_u8, set_u16, set_u32};
use crate::{Error, checksum, ipv4};

/// Length of the ICMP header (type, code, checksum and 4 type-specific bytes).
pub const HEADER_LEN: usize = 8;

/// Largest message [`emit_error`] builds: RFC 1812 §4.3.2.3 caps the whole IP
/// datagram carrying an ICMP error at 576 bytes, leaving 556 for ICMP after a
/// 20-byte IP header.
pub const MAX_ERROR_LEN: usize = 576 - ipv4::HEADER_LEN;

mod field {
    use crate::access::Field;

    pub(crate) const TYPE: usize = 0;
    pub(crate) const CODE: usize = 1;
    pub(crate) const CHECKSUM: Field = 2..4;
    pub(crate) const REST: Field = 4..8;
}

/// ICMP message types.
pub mod msg_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (error).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded (error).
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem (error).
    pub const PARAM_PROBLEM: u8 = 12;
}

/// Codes of destination unreachable messages (RFC 792, RFC 1812 §5.2.7.1).
pub mod unreachable_code {
    /// Net unreachable.
    pub const NET: u8 = 0;
    /// Host unreachable.
    pub const HOST: u8 = 1;
    /// Protocol unreachable.
    pub const PROTOCOL: u8 = 2;
    /// Port unreachable.
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set; the low 16 bits of the rest of the
    /// header carry the next-hop MTU (RFC 1191 §4).
    pub const FRAG_NEEDED: u8 = 4;
    /// Communication administratively prohibited (RFC 1812).
    pub const ADMIN_PROHIBITED: u8 = 13;
}

pub use unreachable_code::FRAG_NEEDED;

/// Whether messages of this type are errors that quote an offending datagram
/// (destination unreachable, time exceeded, parameter problem).
///
/// Source quench (4) is deprecated (RFC 6633) and redirect (5) is routing
/// advice, so neither is treated as an error about a flow.
pub const fn is_error(msg_type: u8) -> bool {
    matches!(msg_type, msg_type::DEST_UNREACHABLE | msg_type::TIME_EXCEEDED | msg_type::PARAM_PROBLEM)
}

view! {
    /// A view over an ICMP message in a byte buffer (the IP payload).
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// [`Error::Truncated`] if the buffer is shorter than the 8-byte header.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Message type (see [`msg_type`]).
    pub fn msg_type(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::TYPE)
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::CODE)
    }

    /// Checksum as stored.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Bytes 4..8, whose meaning depends on the type: identifier and
    /// sequence number for echo, gateway for redirect, pointer for parameter
    /// problem, next-hop MTU for fragmentation needed.
    pub fn rest_of_header(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::REST)
    }

    /// Next-hop MTU of a fragmentation-needed message (RFC 1191 §4): the low
    /// 16 bits of the rest of the header. Zero from routers that predate
    /// RFC 1191.
    pub fn next_hop_mtu(&self) -> u16 {
        self.rest_of_header() as u16
    }

    /// Everything after the header: for errors, the quoted datagram.
    pub fn data(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        clamped(data, HEADER_LEN, data.len())
    }

    /// Whether the checksum over the whole buffer is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(checksum::sum(self.buffer.as_ref()))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    pub fn set_msg_type(&mut self, value: u8) {
        set_u8(self.buffer.as_mut(), field::TYPE, value);
    }

    /// Sets the code.
    pub fn set_code(&mut self, value: u8) {
        set_u8(self.buffer.as_mut(), field::CODE, value);
    }

    /// Stores a checksum as is.
    pub fn set_checksum(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets bytes 4..8.
    pub fn set_rest_of_header(&mut self, value: u32) {
        set_u32(self.buffer.as_mut(), field::REST, value);
    }

    /// Everything after the header, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let data = self.buffer.as_mut();
        let len = data.len();
        clamped_mut(data, HEADER_LEN, len)
    }

    /// Computes the checksum over the whole buffer and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let checksum = checksum::finish(checksum::sum(self.buffer.as_ref()));
        self.set_checksum(checksum);
    }
}

/// Builds an ICMP error message about `original` at the start of `buf`, and
/// returns its length.
///
/// `original` is the offending datagram from its IPv4 header on; bytes past
/// its total length (link padding) are not quoted. RFC 792 requires the IP
/// header and the first 64 bits of the payload; RFC 1812 §4.3.2.3 asks for as
/// much as fits without the error datagram exceeding 576 bytes. So the quote
/// is as much of the datagram as fits in `buf` and in [`MAX_ERROR_LEN`], and
/// never less than header plus 8 bytes (or the whole datagram if shorter).
///
/// Errors: [`Error::Truncated`], [`Error::Unrecognized`] or
/// [`Error::Malformed`] if `original` does not start with a complete IPv4
/// header (see [`ipv4::Packet::check_quoted_len`]); [`Error::Truncated`] if
/// `buf` cannot hold the header and the minimum quote.
pub fn emit_error(
    buf: &mut [u8],
    msg_type: u8,
    code: u8,
    rest: u32,
    original: &[u8],
) -> Result<usize, Error> {
    let quoted = ipv4::Packet::new_checked_quoted(original)?;
    let datagram = clamped(original, 0, usize::from(quoted.total_len()));
    let minimum = datagram.len().min(quoted.header_len() + 8);
    let room = buf.len().min(MAX_ERROR_LEN).saturating_sub(HEADER_LEN);
    if room < minimum {
        return Err(Error::Truncated);
    }
    let len = HEADER_LEN + datagram.len().min(room);
    let message = buf.get_mut(..len).ok_or(Error::Truncated)?;
    let mut packet = Packet::new_unchecked(message);
    packet.set_msg_type(msg_type);
    packet.set_code(code);
    packet.set_rest_of_header(rest);
    let data = packet.data_mut();
    let copied = data.len();
    data.copy_from_slice(datagram.get(..copied).ok_or(Error::Truncated)?);
    packet.fill_checksum();
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{IPV4_ICMP_FRAG_NEEDED, IPV4_TCP_SYN};
    use crate::{ip_protocol, tcp};
    use core::net::Ipv4Addr;

    fn icmp() -> &'static [u8] {
        &IPV4_ICMP_FRAG_NEEDED[20..]
    }

    #[test]
    fn parse_golden_frag_needed() {
        let packet = Packet::new_checked(icmp()).unwrap();
        assert_eq!(packet.msg_type(), msg_type::DEST_UNREACHABLE);
        assert_eq!(packet.code(), FRAG_NEEDED);
        assert!(is_error(packet.msg_type()));
        assert_eq!(packet.checksum(), 0xd783);
        assert_eq!(packet.rest_of_header(), 1400);
        assert_eq!(packet.next_hop_mtu(), 1400);
        assert!(packet.verify_checksum());

        let inner = ipv4::Packet::new_checked_quoted(packet.data()).unwrap();
        assert_eq!(inner.src_addr(), Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(inner.dst_addr(), Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(inner.protocol(), ip_protocol::TCP);
        assert_eq!(inner.total_len(), 1500);
        let transport = tcp::Packet::new_unchecked(inner.payload());
        assert_eq!(transport.src_port(), 51514);
        assert_eq!(transport.dst_port(), 80);
        assert_eq!(transport.seq_number(), 0x1c2b_3a4a);
        assert_eq!(transport.window_len(), 0);
    }

    #[test]
    fn emit_golden_frag_needed() {
        let mut original = [0u8; 1500];
        original[..28].copy_from_slice(&icmp()[8..]);
        let mut buf = [0u8; 36];
        let len = emit_error(&mut buf, msg_type::DEST_UNREACHABLE, FRAG_NEEDED, 1400, &original).unwrap();
        assert_eq!(len, 36);
        assert_eq!(&buf[..], icmp());
    }

    #[test]
    fn emit_error_quotes_as_much_as_allowed() {
        let mut original = [0x77u8; 1500];
        original[..28].copy_from_slice(&icmp()[8..]);
        let mut buf = [0u8; 1500];
        let len = emit_error(&mut buf, msg_type::TIME_EXCEEDED, 0, 0, &original).unwrap();
        assert_eq!(len, MAX_ERROR_LEN);
        let packet = Packet::new_checked(&buf[..len]).unwrap();
        assert!(packet.verify_checksum());
        assert_eq!(packet.data(), &original[..MAX_ERROR_LEN - 8]);

        // A short datagram is quoted whole, without its link padding.
        let mut padded = IPV4_TCP_SYN.to_vec();
        padded.extend_from_slice(&[0; 6]);
        let len = emit_error(&mut buf, msg_type::DEST_UNREACHABLE, 3, 0, &padded).unwrap();
        assert_eq!(len, 8 + IPV4_TCP_SYN.len());
        assert_eq!(&buf[8..len], &IPV4_TCP_SYN[..]);
    }

    #[test]
    fn emit_error_errors() {
        let mut buf = [0u8; 64];
        assert_eq!(emit_error(&mut buf, 3, 4, 0, &IPV4_TCP_SYN[..19]), Err(Error::Truncated));
        let mut v6 = IPV4_TCP_SYN;
        v6[0] = 0x60;
        assert_eq!(emit_error(&mut buf, 3, 4, 0, &v6), Err(Error::Unrecognized));
        assert_eq!(emit_error(&mut buf[..35], 3, 4, 0, &IPV4_TCP_SYN), Err(Error::Truncated));
        assert_eq!(emit_error(&mut buf[..36], 3, 4, 0, &IPV4_TCP_SYN), Ok(36));
        assert_eq!(emit_error(&mut [], 3, 4, 0, &IPV4_TCP_SYN), Err(Error::Truncated));
    }

    #[test]
    fn setters_and_is_error() {
        let mut bytes = [0u8; 12];
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_msg_type(msg_type::ECHO_REQUEST);
        packet.set_code(0);
        packet.set_rest_of_header(0x1234_0001);
        packet.data_mut().copy_from_slice(b"ping");
        packet.fill_checksum();
        assert!(packet.verify_checksum());
        assert!(!is_error(packet.msg_type()));
        assert_eq!(packet.data(), b"ping");
        for t in [0u8, 4, 5, 8, 9, 10, 13, 14] {
            assert!(!is_error(t));
        }
        assert_eq!(Packet::new_checked(&bytes[..7]).unwrap_err(), Error::Truncated);
    }
}
