//! Ethernet II frames (IEEE 802.3 with an EtherType).
//!
//! Only what a layer-4 balancer needs: the two addresses and the EtherType
//! that says how to read the payload. VLAN tags are not stripped; a tagged
//! frame reports [`ethertype::VLAN`] and the caller skips the 4-byte tag.
//!
//! # No-panic contract
//!
//! [`Frame::new_checked`] validates that the 14-byte header is present. After
//! that no getter or setter can panic. On a view built with
//! [`Frame::new_unchecked`] over a shorter buffer, accessors still do not
//! panic; they read zeros and drop writes.

use core::fmt;

use crate::Error;
use crate::access::{clamped, clamped_mut, get_array, get_u16, set_bytes, set_u16};

/// Length of an Ethernet II header.
pub const HEADER_LEN: usize = 14;

mod field {
    use crate::access::Field;

    pub(crate) const DESTINATION: Field = 0..6;
    pub(crate) const SOURCE: Field = 6..12;
    pub(crate) const ETHERTYPE: Field = 12..14;
}

/// EtherType values (IEEE registry).
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IEEE 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
}

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// The broadcast address, ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Self = Self([0xff; 6]);

    /// Whether this is the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the group bit (least significant bit of the first octet) is
    /// set; broadcast is a multicast address in that sense.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this is an individual (unicast) address.
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The six octets.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

view! {
    /// A view over an Ethernet II frame in a byte buffer.
    Frame
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// [`Error::Truncated`] if the buffer is shorter than the header.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Destination address.
    pub fn dst_addr(&self) -> EthernetAddress {
        EthernetAddress(get_array(self.buffer.as_ref(), field::DESTINATION))
    }

    /// Source address.
    pub fn src_addr(&self) -> EthernetAddress {
        EthernetAddress(get_array(self.buffer.as_ref(), field::SOURCE))
    }

    /// EtherType (see [`ethertype`]).
    pub fn ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Everything after the header, padding included.
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        clamped(data, HEADER_LEN, data.len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        set_bytes(self.buffer.as_mut(), field::DESTINATION, &addr.0);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        set_bytes(self.buffer.as_mut(), field::SOURCE, &addr.0);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::ETHERTYPE, value);
    }

    /// Everything after the header, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let data = self.buffer.as_mut();
        let len = data.len();
        clamped_mut(data, HEADER_LEN, len)
    }
}

/// A high-level description of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: EthernetAddress,
    /// Destination address.
    pub dst_addr: EthernetAddress,
    /// EtherType.
    pub ethertype: u16,
}

impl Repr {
    /// Describes a frame's header.
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Self, Error> {
        frame.check_len()?;
        Ok(Self { src_addr: frame.src_addr(), dst_addr: frame.dst_addr(), ethertype: frame.ethertype() })
    }

    /// Length of the header.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Length of the header; the payload is not described.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the start of `frame`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::IPV4_UDP_DNS;

    const HEADER: [u8; 14] = [
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x00, //
    ];

    #[test]
    fn parse_and_emit() {
        let frame_bytes = [&HEADER[..], &IPV4_UDP_DNS[..]].concat();
        let frame = Frame::new_checked(&frame_bytes[..]).unwrap();
        assert_eq!(frame.dst_addr(), EthernetAddress([0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]));
        assert_eq!(frame.src_addr().to_string(), "52:54:00:12:34:56");
        assert_eq!(frame.ethertype(), ethertype::IPV4);
        assert_eq!(frame.payload(), &IPV4_UDP_DNS[..]);
        let repr = Repr::parse(&frame).unwrap();
        let mut out = frame_bytes.clone();
        out[..14].fill(0);
        repr.emit(&mut Frame::new_unchecked(&mut out[..]));
        assert_eq!(out, frame_bytes);
        assert_eq!(Frame::new_checked(&HEADER[..13]).unwrap_err(), Error::Truncated);
        assert!(Frame::new_checked(&HEADER[..]).unwrap().payload().is_empty());
    }

    #[test]
    fn address_classes() {
        assert!(EthernetAddress::BROADCAST.is_broadcast() && EthernetAddress::BROADCAST.is_multicast());
        let multicast = EthernetAddress([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert!(multicast.is_multicast() && !multicast.is_broadcast());
        assert!(EthernetAddress([0x02, 0, 0, 0, 0, 1]).is_unicast());
    }
}
