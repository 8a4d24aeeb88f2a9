//! PROXY protocol headers (haproxy's PROXY protocol specification, versions 1
//! and 2), built from a connection's client and VIP endpoints.
//!
//! The header is regenerated whenever it is (re)sent, so a connection keeps
//! only its length, not its bytes.

use std::io::Write as _;
use std::net::IpAddr;

use crate::addr::Endpoint;
use crate::config::ProxyProtocol;

/// The longest header: version 1 with two IPv6 addresses is 104 bytes; the
/// specification bounds every v1 header by 107.
pub(crate) const MAX_LEN: usize = 108;

/// The version 2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY.
const V2_PROXY: u8 = 0x21;
/// AF_INET / AF_INET6 over STREAM.
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;

/// Write the header announcing `client` → `vip` into `buf`; its length, or
/// `None` when `version` is `Disabled` or the families differ.
pub(crate) fn write(
    version: ProxyProtocol,
    client: Endpoint,
    vip: Endpoint,
    buf: &mut [u8; MAX_LEN],
) -> Option<usize> {
    match version {
        ProxyProtocol::Disabled => None,
        ProxyProtocol::V1 => match (client.addr, vip.addr) {
            (IpAddr::V4(c), IpAddr::V4(v)) => {
                // By hand: the formatting machinery costs more than the rest of a connection's opening.
                let mut w = Writer { buf, at: 0 };
                w.put(b"PROXY TCP4 ");
                w.v4(c.octets());
                w.put(b" ");
                w.v4(v.octets());
                w.put(b" ");
                w.dec(client.port);
                w.put(b" ");
                w.dec(vip.port);
                w.put(b"\r\n");
                Some(w.at)
            }
            (IpAddr::V6(c), IpAddr::V6(v)) => {
                let mut out = &mut buf[..];
                let room = out.len();
                write!(out, "PROXY TCP6 {c} {v} {} {}\r\n", client.port, vip.port).ok()?;
                Some(room - out.len())
            }
            _ => None,
        },
        ProxyProtocol::V2 => {
            let (family, addrs) = match (client.addr, vip.addr) {
                (IpAddr::V4(c), IpAddr::V4(v)) => {
                    buf[16..20].copy_from_slice(&c.octets());
                    buf[20..24].copy_from_slice(&v.octets());
                    (V2_TCP4, 8)
                }
                (IpAddr::V6(c), IpAddr::V6(v)) => {
                    buf[16..32].copy_from_slice(&c.octets());
                    buf[32..48].copy_from_slice(&v.octets());
                    (V2_TCP6, 32)
                }
                _ => return None,
            };
            buf[..12].copy_from_slice(&V2_SIGNATURE);
            buf[12] = V2_PROXY;
            buf[13] = family;
            let len = addrs + 4;
            buf[14..16].copy_from_slice(&(len as u16).to_be_bytes());
            buf[16 + addrs..16 + addrs + 2].copy_from_slice(&client.port.to_be_bytes());
            buf[16 + addrs + 2..16 + len].copy_from_slice(&vip.port.to_be_bytes());
            Some(16 + len)
        }
    }
}

/// Appends to a header buffer that is long enough for any v1 header.
struct Writer<'a> {
    buf: &'a mut [u8; MAX_LEN],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }

    /// `n` in decimal, no leading zeros.
    fn dec(&mut self, n: u16) {
        let mut digits = [0u8; 5];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(&digits[i..]);
    }

    fn v4(&mut self, octets: [u8; 4]) {
        for (k, o) in octets.into_iter().enumerate() {
            if k > 0 {
                self.put(b".");
            }
            self.dec(u16::from(o));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse::<std::net::SocketAddr>().unwrap().into()
    }

    #[test]
    fn v1_text() {
        let mut buf = [0; MAX_LEN];
        let n = write(ProxyProtocol::V1, ep("192.0.2.7:40001"), ep("10.0.0.1:80"), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"PROXY TCP4 192.0.2.7 10.0.0.1 40001 80\r\n");
        let n =
            write(ProxyProtocol::V1, ep("[2001:db8::7]:40001"), ep("[2001:db8::1]:443"), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"PROXY TCP6 2001:db8::7 2001:db8::1 40001 443\r\n");
    }

    #[test]
    fn v1_ipv4_edges() {
        let mut buf = [0; MAX_LEN];
        let n = write(ProxyProtocol::V1, ep("0.0.0.0:0"), ep("255.255.255.255:65535"), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n");
        let n = write(ProxyProtocol::V1, ep("10.100.9.1:10"), ep("1.20.200.0:100"), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"PROXY TCP4 10.100.9.1 1.20.200.0 10 100\r\n");
    }

    #[test]
    fn v1_longest_fits() {
        let mut buf = [0; MAX_LEN];
        let a = ep("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
        let n = write(ProxyProtocol::V1, a, a, &mut buf).unwrap();
        assert!(n <= 107, "{n}");
    }

    #[test]
    fn v2_binary() {
        let mut buf = [0; MAX_LEN];
        let n = write(ProxyProtocol::V2, ep("192.0.2.7:40001"), ep("10.0.0.1:80"), &mut buf).unwrap();
        assert_eq!(n, 28);
        assert_eq!(&buf[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(&buf[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&buf[16..24], &[192, 0, 2, 7, 10, 0, 0, 1]);
        assert_eq!(&buf[24..28], &[0x9c, 0x41, 0, 80]);
        let n = write(ProxyProtocol::V2, ep("[2001:db8::7]:1"), ep("[2001:db8::1]:2"), &mut buf).unwrap();
        assert_eq!((n, buf[13], buf[15]), (52, 0x21, 36));
        assert_eq!(&buf[48..52], &[0, 1, 0, 2]);
    }

    #[test]
    fn disabled_or_mixed_families_write_nothing() {
        let mut buf = [0; MAX_LEN];
        assert_eq!(write(ProxyProtocol::Disabled, ep("192.0.2.7:1"), ep("10.0.0.1:80"), &mut buf), None);
        assert_eq!(write(ProxyProtocol::V2, ep("192.0.2.7:1"), ep("[2001:db8::1]:80"), &mut buf), None);
    }
}
