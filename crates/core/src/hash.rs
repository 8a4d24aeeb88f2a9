//! Keyed flow hashing for the connection table and per-connection secrets.
//!
//! An attacker who picks the 5-tuples of its packets must not be able to
//! make them collide in the table, so the hash is SipHash keyed with a
//! per-process secret (the driver draws it and passes it in; the core never
//! reads a random source). The same key also derives the unpredictable
//! values a connection needs: its starting local-port probe and the
//! real-side initial sequence number.

use core::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::{SipHasher13, SipHasher24};

use crate::addr::{Endpoint, Proto};

/// Secret keys of one engine, derived from a 32-byte seed.
#[derive(Clone)]
pub struct Secrets {
    table: (u64, u64),
    derive: (u64, u64),
}

impl core::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// Keys from a seed the driver drew from the OS (or a test fixed).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&seed[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        Self { table: (word(0), word(1)), derive: (word(2), word(3)) }
    }

    /// Hash of one direction of a flow, as the connection table indexes it.
    #[inline]
    pub fn flow_hash(&self, proto: Proto, src: Endpoint, dst: Endpoint) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.table.0, self.table.1);
        let mut buf = [0u8; 40];
        let len = encode_flow(&mut buf, proto, src, dst);
        h.write(&buf[..len]);
        h.finish()
    }

    /// An unpredictable value bound to a flow and a purpose (`domain`), with
    /// `extra` to draw several values for the same flow.
    pub fn derive(&self, domain: u8, proto: Proto, src: Endpoint, dst: Endpoint, extra: u64) -> u64 {
        let mut h = SipHasher24::new_with_keys(self.derive.0, self.derive.1);
        let mut buf = [0u8; 40];
        let len = encode_flow(&mut buf, proto, src, dst);
        h.write_u8(domain);
        h.write(&buf[..len]);
        h.write_u64(extra);
        h.finish()
    }
}

/// Byte encoding of (proto, src, dst): explicit, so the hash does not depend
/// on how `Hash` happens to feed a hasher.
#[inline]
fn encode_flow(buf: &mut [u8; 40], proto: Proto, src: Endpoint, dst: Endpoint) -> usize {
    buf[0] = proto.number();
    let mut at = 1;
    for ep in [src, dst] {
        match ep.addr {
            IpAddr::V4(a) => {
                buf[at..at + 4].copy_from_slice(&a.octets());
                at += 4;
            }
            IpAddr::V6(a) => {
                buf[at..at + 16].copy_from_slice(&a.octets());
                at += 16;
            }
        }
        buf[at..at + 2].copy_from_slice(&ep.port.to_be_bytes());
        at += 2;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse::<std::net::SocketAddr>().unwrap().into()
    }

    #[test]
    fn keyed_and_direction_sensitive() {
        let a = Secrets::from_seed([1; 32]);
        let b = Secrets::from_seed([2; 32]);
        let (c, v) = (ep("1.2.3.4:5000"), ep("10.0.0.1:80"));
        assert_eq!(a.flow_hash(Proto::Tcp, c, v), a.flow_hash(Proto::Tcp, c, v));
        assert_ne!(a.flow_hash(Proto::Tcp, c, v), b.flow_hash(Proto::Tcp, c, v));
        assert_ne!(a.flow_hash(Proto::Tcp, c, v), a.flow_hash(Proto::Tcp, v, c));
        assert_ne!(a.flow_hash(Proto::Tcp, c, v), a.flow_hash(Proto::Udp, c, v));
        let v6 = ep("[2001:db8::1]:80");
        assert_ne!(a.flow_hash(Proto::Tcp, c, v6), a.flow_hash(Proto::Tcp, c, v));
        assert_ne!(a.derive(1, Proto::Tcp, c, v, 0), a.derive(2, Proto::Tcp, c, v, 0));
        assert_ne!(a.derive(1, Proto::Tcp, c, v, 0), a.derive(1, Proto::Tcp, c, v, 1));
    }
}
