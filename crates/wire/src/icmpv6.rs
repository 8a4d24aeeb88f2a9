//! ICMP for IPv6 (RFC 4443).
//!
//! As with [`icmpv4`](crate::icmpv4), a layer-4 balancer meets ICMPv6
//! mostly as errors about the flows it forwards: destination unreachable,
//! packet too big (which path MTU discovery depends on, RFC 8201), time
//! exceeded and parameter problem. These quote as much of the offending
//! packet as fits in the minimum MTU (RFC 4443 §2.4 (c)); read the quote by
//! wrapping [`Packet::data`] with
//! [`ipv6::Packet::new_checked_quoted`](crate::ipv6::Packet::new_checked_quoted).
//! Informational messages (echo, neighbour discovery) have types from 128
//! up. Unlike ICMPv4, the checksum covers the IPv6 pseudo-header (RFC 4443
//! §2.3), so verifying and filling it take the packet's addresses.
//!
//! # No-panic contract
//!
//! [`Packet::new_checked`] validates that the 8-byte header is present. After
//! that no getter or setter can panic; the data extends to the end of the
//! buffer (the IPv6 payload).

use core::net::Ipv6Addr;

use crate::access::{clamped, clamped_mut, get_u8, get_u16, get_u32, set_u8, set_u16, set_u32};
use crate::{Error, checksum, ip_protocol};

/// Length of the ICMPv6 header (type, code, checksum and 4 type-specific bytes).
pub const HEADER_LEN: usize = 8;

mod field {
    use crate::access::Field;

    pub(crate) const TYPE: usize = 0;
    pub(crate) const CODE: usize = 1;
    pub(crate) const CHECKSUM: Field = 2..4;
    pub(crate) const REST: Field = 4..8;
}

/// ICMPv6 message types (RFC 4443 §2.1, RFC 4861 §4).
pub mod msg_type {
    /// Destination unreachable (error).
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big (error); the rest of the header is the next-hop MTU.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded (error).
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem (error); the rest of the header points at the
    /// offending octet.
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation (RFC 4861).
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router advertisement (RFC 4861).
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbour solicitation (RFC 4861).
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbour advertisement (RFC 4861).
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// Redirect (RFC 4861).
    pub const REDIRECT: u8 = 137;
}

/// Codes of destination unreachable messages (RFC 4443 §3.1).
pub mod unreachable_code {
    /// No route to destination.
    pub const NO_ROUTE: u8 = 0;
    /// Communication with destination administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 1;
    /// Beyond scope of source address.
    pub const BEYOND_SCOPE: u8 = 2;
    /// Address unreachable.
    pub const ADDRESS: u8 = 3;
    /// Port unreachable.
    pub const PORT: u8 = 4;
    /// Source address failed ingress/egress policy.
    pub const SOURCE_POLICY: u8 = 5;
    /// Reject route to destination.
    pub const REJECT_ROUTE: u8 = 6;
}

/// Codes of time exceeded messages (RFC 4443 §3.3).
pub mod time_exceeded_code {
    /// Hop limit exceeded in transit.
    pub const HOP_LIMIT: u8 = 0;
    /// Fragment reassembly time exceeded.
    pub const REASSEMBLY: u8 = 1;
}

/// Codes of parameter problem messages (RFC 4443 §3.4).
pub mod param_problem_code {
    /// Erroneous header field encountered.
    pub const ERRONEOUS_HEADER: u8 = 0;
    /// Unrecognized next header type encountered.
    pub const UNRECOGNIZED_NEXT_HEADER: u8 = 1;
    /// Unrecognized IPv6 option encountered.
    pub const UNRECOGNIZED_OPTION: u8 = 2;
}

/// Whether messages of this type are errors that quote an offending packet
/// and that this crate knows (destination unreachable, packet too big, time
/// exceeded, parameter problem). Other types below 128 are errors too
/// (RFC 4443 §2.1), but none defined that quote a flow's packet.
pub const fn is_error(msg_type: u8) -> bool {
    matches!(
        msg_type,
        msg_type::DEST_UNREACHABLE
            | msg_type::PACKET_TOO_BIG
            | msg_type::TIME_EXCEEDED
            | msg_type::PARAM_PROBLEM
    )
}

view! {
    /// A view over an ICMPv6 message in a byte buffer (the upper-layer part
    /// of an IPv6 packet).
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

    /// Bytes 4..8, whose meaning depends on the type: MTU for packet too
    /// big, pointer for parameter problem, identifier and sequence number
    /// for echo, unused (zero) for the other errors.
    pub fn rest_of_header(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::REST)
    }

    /// The next-hop MTU of a packet too big message (RFC 4443 §3.2).
    pub fn mtu(&self) -> u32 {
        self.rest_of_header()
    }

    /// The offset of the offending octet in the quoted packet, for a
    /// parameter problem message (RFC 4443 §3.4).
    pub fn pointer(&self) -> u32 {
        self.rest_of_header()
    }

    /// Everything after the header: for errors, the quoted packet.
    pub fn data(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        clamped(data, HEADER_LEN, data.len())
    }

    /// Whether the checksum over the pseudo-header (RFC 8200 §8.1) and the
    /// whole buffer is correct.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let data = self.buffer.as_ref();
        checksum::verify(pseudo_header(src, dst, data.len()) + checksum::sum(data))
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

    /// Sets the MTU of a packet too big message.
    pub fn set_mtu(&mut self, value: u32) {
        self.set_rest_of_header(value);
    }

    /// Sets the pointer of a parameter problem message.
    pub fn set_pointer(&mut self, value: u32) {
        self.set_rest_of_header(value);
    }

    /// Everything after the header, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let data = self.buffer.as_mut();
        let len = data.len();
        clamped_mut(data, HEADER_LEN, len)
    }

    /// Computes the checksum over the pseudo-header and the whole buffer and
    /// stores it.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let checksum = checksum::finish(pseudo_header(src, dst, data.len()) + checksum::sum(data));
        self.set_checksum(checksum);
    }
}

fn pseudo_header(src: Ipv6Addr, dst: Ipv6Addr, len: usize) -> u32 {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    checksum::pseudo_header(src.into(), dst.into(), ip_protocol::ICMPV6, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::IPV6_ICMPV6_PACKET_TOO_BIG;
    use crate::{ipv6, tcp};

    fn outer() -> ipv6::Packet<&'static [u8]> {
        ipv6::Packet::new_checked(&IPV6_ICMPV6_PACKET_TOO_BIG[..]).unwrap()
    }

    #[test]
    fn parse_golden_packet_too_big() {
        let ip = outer();
        assert_eq!(ip.transport(), Ok((ip_protocol::ICMPV6, ipv6::HEADER_LEN)));
        let packet = Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(packet.msg_type(), msg_type::PACKET_TOO_BIG);
        assert_eq!(packet.code(), 0);
        assert!(is_error(packet.msg_type()));
        assert_eq!(packet.checksum(), 0x506a);
        assert_eq!(packet.mtu(), 1280);
        assert!(packet.verify_checksum(ip.src_addr(), ip.dst_addr()));
        assert!(!packet.verify_checksum(ip.dst_addr(), Ipv6Addr::LOCALHOST));

        let inner = ipv6::Packet::new_checked_quoted(packet.data()).unwrap();
        assert_eq!(inner.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(inner.dst_addr(), "2001:db8:0:1::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(inner.payload_len(), 1460);
        let (protocol, at) = inner.transport().unwrap();
        assert_eq!(protocol, ip_protocol::TCP);
        let transport = tcp::Packet::new_unchecked(&packet.data()[at..]);
        assert_eq!((transport.src_port(), transport.dst_port()), (51514, 80));
        assert_eq!(transport.seq_number(), 0x1c2b_3a4a);
    }

    #[test]
    fn emit_golden_packet_too_big() {
        let ip = outer();
        let mut bytes = IPV6_ICMPV6_PACKET_TOO_BIG;
        let mut packet = Packet::new_checked(&mut bytes[ipv6::HEADER_LEN..]).unwrap();
        packet.set_checksum(0xdead);
        packet.set_msg_type(msg_type::PACKET_TOO_BIG);
        packet.set_code(0);
        packet.set_mtu(1280);
        packet.fill_checksum(ip.src_addr(), ip.dst_addr());
        assert_eq!(bytes, IPV6_ICMPV6_PACKET_TOO_BIG);
    }

    #[test]
    fn parameter_problem_pointer_and_is_error() {
        let mut bytes = [0u8; 48];
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_msg_type(msg_type::PARAM_PROBLEM);
        packet.set_code(param_problem_code::UNRECOGNIZED_NEXT_HEADER);
        packet.set_pointer(40);
        assert_eq!((packet.pointer(), packet.rest_of_header()), (40, 40));
        let (src, dst) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
        packet.fill_checksum(src, dst);
        assert!(packet.verify_checksum(src, dst));
        for t in [1u8, 2, 3, 4] {
            assert!(is_error(t));
        }
        for t in [0u8, 5, 127, 128, 129, 133, 135, 136, 137, 255] {
            assert!(!is_error(t));
        }
        assert_eq!(Packet::new_checked(&bytes[..7]).unwrap_err(), Error::Truncated);
        assert!(Packet::new_checked(&bytes[..8]).unwrap().data().is_empty());
    }
}
