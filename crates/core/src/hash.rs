//! Keyed flow hashing for the connection table and per-connection secrets.
//!
//! An attacker who picks the 5-tuples of its packets must not be able to
//! make them collide in the table, so both hashes here are keyed with a
//! per-process secret (the driver draws it and passes it in; the core never
//! reads a random source).
//!
//! The table's hash runs on every packet and is a keyed multiply-mix over
//! the tuple taken as fixed 64-bit words (the folded multiply that
//! `foldhash`, hashbrown's default hasher, is built on): two words, each
//! XORed with a secret key, are multiplied into 128 bits and the halves
//! XORed together; a second such round with two more keys spreads the
//! result over every output bit. It is not a PRF like SipHash, and the
//! table does not need one, because of what an attacker sees and what a
//! collision costs:
//! - The four keys (256 bits) are drawn through SipHash from the engine's
//!   seed, and the hash values never leave the table: no packet, counter or
//!   worker choice depends on them, so an attacker learns at most timing.
//! - Flooding needs many tuples that share bucket and tag bits under every
//!   key. The published hash-flooding attacks on fast hashes (MurmurHash,
//!   CityHash) found differentials that cancel whatever the seed; here every
//!   input bit reaches the output only through a product with a value the
//!   attacker does not know, and the known weak point of multiply-mix
//!   hashes (a zero factor when a word equals its key) needs the key.
//! - A collision costs a probe, not correctness: keys are compared in full.
//!
//! The mix costs two multiplications where SipHash-1-3 over the same words
//! costs six SipRounds: some 110 instructions, a tenth of an established
//! packet.
//!
//! The same seed also derives, through SipHash-2-4, the unpredictable
//! values a connection needs: its starting local-port probe and the
//! real-side initial sequence number, whose outputs do leave the engine.

use core::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::{SipHasher13, SipHasher24};

use crate::addr::{Endpoint, Proto};

/// Secret keys of one engine, derived from a 32-byte seed.
#[derive(Clone)]
pub struct Secrets {
    flow: [u64; 4],
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
        // Through SipHash, so that the mixing keys are uniform whatever the
        // seed looks like (a test's `[7; 32]` as much as the OS's).
        let flow = core::array::from_fn(|i| {
            let mut h = SipHasher13::new_with_keys(word(0), word(1));
            h.write_u64(i as u64);
            h.finish()
        });
        Self { flow, derive: (word(2), word(3)) }
    }

    /// Hash of one direction of a flow, as the connection table indexes it.
    #[inline]
    pub fn flow_hash(&self, proto: Proto, src: Endpoint, dst: Endpoint) -> u64 {
        let [k0, k1, k2, k3] = self.flow;
        // Ports, protocol and both addresses' families in one word.
        let rest = u64::from(src.port) << 48
            | u64::from(dst.port) << 32
            | u64::from(proto.number()) << 8
            | u64::from(src.addr.is_ipv6()) << 1
            | u64::from(dst.addr.is_ipv6());
        let h = match (src.addr, dst.addr) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let addrs = u64::from(s.to_bits()) << 32 | u64::from(d.to_bits());
                folded_multiply(addrs ^ k0, rest ^ k1)
            }
            (s, d) => {
                let (s, d) = (wide(s), wide(d));
                let addrs = folded_multiply((s >> 64) as u64 ^ k0, s as u64 ^ k1)
                    ^ folded_multiply((d >> 64) as u64 ^ k2, d as u64 ^ k3);
                folded_multiply(addrs ^ k0, rest ^ k1)
            }
        };
        folded_multiply(h ^ k2, k3)
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

/// The 128-bit product of `a` and `b`, its halves XORed together.
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    full as u64 ^ (full >> 64) as u64
}

/// An address as 128 bits (IPv4 mapped; the family is hashed apart).
fn wide(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().to_bits(),
        IpAddr::V6(a) => a.to_bits(),
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

    /// The table takes its bucket from the low bits and its tag from the top
    /// seven: both must spread flows that differ in a few bits only (one
    /// client's ports, neighbouring addresses), whatever the seed looks like.
    #[test]
    fn spreads_neighbouring_flows_over_buckets_and_tags() {
        let vip = ep("10.0.0.1:80");
        for seed in [[0; 32], [7; 32], [0xff; 32]] {
            let s = Secrets::from_seed(seed);
            let mut buckets = vec![0u32; 4096];
            let mut tags = [0u32; 128];
            for i in 0..65_536u32 {
                let client =
                    Endpoint::new(IpAddr::from([192, 0, (i >> 14) as u8, (i >> 8) as u8]), i as u16 | 1024);
                let h = s.flow_hash(Proto::Tcp, client, vip);
                buckets[(h & 4095) as usize] += 1;
                tags[(h >> 57) as usize] += 1;
            }
            // 16 flows per bucket and 512 per tag on average.
            let (lo, hi) = (buckets.iter().min().unwrap(), buckets.iter().max().unwrap());
            assert!(*hi <= 40 && *lo >= 2, "seed {seed:?}: buckets hold {lo}..{hi}");
            let (lo, hi) = (tags.iter().min().unwrap(), tags.iter().max().unwrap());
            assert!(*hi <= 620 && *lo >= 410, "seed {seed:?}: tags hold {lo}..{hi}");
        }
    }
}
