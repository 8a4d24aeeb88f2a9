//! SYN cookies: the initial sequence number of the SYN-ACK carries a keyed
//! hash of the connection, so the client's ACK proves its handshake without
//! the engine keeping any state for an unanswered SYN.
//!
//! The hash is SipHash-2-4 over the 4-tuple, the client's ISN, a coarse clock
//! (32 s steps) and the layout, keyed with a key that changes every 256 s.
//! The key of each period is derived from the engine's secret; the current
//! and the previous one are kept, so a cookie made just before a change
//! still validates after it. Two layouts, as Linux does:
//!
//! - the client offered timestamps: `seq = hash:26 | count:3 | mss:3`, and the
//!   options the SYN carried travel in the low 6 bits of our TSval
//!   (`wscale:4` with 15 for none, `sack:1`), which the client echoes;
//! - no timestamps: `seq = hash:22 | count:3 | mss:3 | sack:1 | wscale:3`,
//!   with the window scale rounded down to one of eight values (telling the
//!   real a smaller scale than the client's only understates the client's
//!   window, which is safe).

use core::hash::Hasher;

use siphasher::sip::SipHasher24;

use crate::addr::{FlowKey, Proto};
use crate::hash::Secrets;
use crate::time::Instant;

/// MSS values a cookie can name for an IPv4 client; the client's MSS is
/// rounded down to one.
const MSS_TABLE_V4: [u16; 8] = [536, 1220, 1300, 1360, 1400, 1440, 1452, 1460];
/// The same for an IPv6 client, whose headers take 20 bytes more of the same
/// links: from the minimum MTU (1280 - 60) to Ethernet's (1500 - 60),
/// through the usual tunnels' (PPPoE 1492, 6in4 1480).
const MSS_TABLE_V6: [u16; 8] = [1220, 1280, 1340, 1380, 1400, 1420, 1432, 1440];

/// The MSS table for the client of `flow`.
fn mss_table(flow: &FlowKey) -> &'static [u16; 8] {
    if flow.src.addr.is_ipv6() { &MSS_TABLE_V6 } else { &MSS_TABLE_V4 }
}
/// Window scales the no-timestamp layout can name (index 0: none).
const WSCALE_TABLE: [u8; 8] = [0, 1, 2, 4, 6, 7, 8, 14];
/// Seconds per step of the cookie clock.
const COUNT_SECS: u64 = 32;
/// Steps per key period (the 3-bit count wraps once per period).
const COUNT_WRAP: u64 = 8;
/// TSval bits that carry options.
pub(crate) const TS_OPT_BITS: u32 = 6;
const TS_NO_WSCALE: u32 = 15;

const DOMAIN_KEY: u8 = 16;

/// What the client's SYN offered, as far as a cookie remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Offer {
    pub(crate) mss: u16,
    pub(crate) wscale: Option<u8>,
    pub(crate) sack: bool,
    /// The client offered timestamps (and we accept them).
    pub(crate) timestamps: bool,
}

/// The cookie keys of three consecutive periods, for a cookie issuer
/// beside the engine (the XDP program) that must make and check exactly
/// the engine's cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieKeys {
    /// The period `keys[1]` belongs to; `keys[0]` is the one before (none
    /// when this is 0) and `keys[2]` the one after.
    pub period: u64,
    /// SipHash-2-4 keys (k0, k1) of periods `period - 1`, `period`, `period + 1`.
    pub keys: [(u64, u64); 3],
}

/// Cookie keys for the current and previous period.
#[derive(Debug, Clone)]
pub(crate) struct CookieJar {
    keys: [(u64, (u64, u64)); 2],
    /// Clock steps a cookie stays valid for.
    max_age: u64,
}

impl CookieJar {
    pub(crate) fn new(secrets: &Secrets, validity: core::time::Duration) -> Self {
        Self {
            keys: [(0, Self::derive_key(secrets, 0)), (u64::MAX, (0, 0))],
            max_age: validity.as_secs().div_ceil(COUNT_SECS).min(COUNT_WRAP - 1),
        }
    }

    /// The keys of the period of `now` and of its neighbours, derived as
    /// [`Self::make`] and [`Self::check`] derive them.
    pub(crate) fn keys_around(secrets: &Secrets, now: Instant) -> CookieKeys {
        let period = count(now) / COUNT_WRAP;
        let key = |p: Option<u64>| p.map_or((0, 0), |p| Self::derive_key(secrets, p));
        CookieKeys {
            period,
            keys: [key(period.checked_sub(1)), key(Some(period)), key(period.checked_add(1))],
        }
    }

    /// Clock steps a cookie stays valid for.
    pub(crate) fn max_age(&self) -> u64 {
        self.max_age
    }

    fn derive_key(secrets: &Secrets, period: u64) -> (u64, u64) {
        let zero = crate::addr::Endpoint::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
        (
            secrets.derive(DOMAIN_KEY, Proto::Tcp, zero, zero, period * 2),
            secrets.derive(DOMAIN_KEY, Proto::Tcp, zero, zero, period * 2 + 1),
        )
    }

    /// The key of `period`, deriving it if the period is new; `None` for a
    /// period older than the previous one.
    fn key(&mut self, secrets: &Secrets, period: u64) -> Option<(u64, u64)> {
        if let Some(&(_, k)) = self.keys.iter().find(|(p, _)| *p == period) {
            return Some(k);
        }
        let newest = self.keys[0].0;
        if period > newest || newest == u64::MAX {
            self.keys[1] = self.keys[0];
            self.keys[0] = (period, Self::derive_key(secrets, period));
            return Some(self.keys[0].1);
        }
        None
    }

    fn hash(key: (u64, u64), flow: &FlowKey, client_isn: u32, count: u64, layout: u8) -> u32 {
        let mut h = SipHasher24::new_with_keys(key.0, key.1);
        let mut buf = [0u8; 48];
        let mut at = 0;
        for ep in [flow.src, flow.dst] {
            let bytes = match ep.addr {
                std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                std::net::IpAddr::V6(a) => a.octets(),
            };
            buf[at..at + 16].copy_from_slice(&bytes);
            buf[at + 16..at + 18].copy_from_slice(&ep.port.to_be_bytes());
            at += 18;
        }
        buf[at..at + 4].copy_from_slice(&client_isn.to_be_bytes());
        buf[at + 4] = layout;
        h.write(&buf[..at + 5]);
        h.write_u64(count);
        (h.finish() >> 32) as u32
    }

    /// The SYN-ACK's sequence number for a client SYN, and the option bits
    /// for the low bits of our TSval when the client offered timestamps.
    pub(crate) fn make(
        &mut self,
        secrets: &Secrets,
        now: Instant,
        flow: &FlowKey,
        client_isn: u32,
        offer: Offer,
    ) -> (u32, u32) {
        let count = count(now);
        let key = self.key(secrets, count / COUNT_WRAP).unwrap_or_default();
        let mss = mss_index(mss_table(flow), offer.mss);
        let c = (count % COUNT_WRAP) as u32;
        if offer.timestamps {
            let h = Self::hash(key, flow, client_isn, count, 1);
            let seq = (h & !0x3f) | (c << 3) | mss;
            let ws = offer.wscale.map_or(TS_NO_WSCALE, |w| u32::from(w.min(14)));
            (seq, ws | (u32::from(offer.sack) << 4))
        } else {
            let h = Self::hash(key, flow, client_isn, count, 0);
            let ws =
                offer.wscale.map_or(0, |w| WSCALE_TABLE.iter().rposition(|&t| t <= w).unwrap_or(0).max(1));
            let seq = (h & !0x3ff) | (c << 7) | (mss << 4) | (u32::from(offer.sack) << 3) | ws as u32;
            (seq, 0)
        }
    }

    /// Check the cookie an ACK returns (`ack - 1`); `tsecr` is the echoed
    /// TSval when the ACK carries timestamps. Gives back what the SYN offered.
    pub(crate) fn check(
        &mut self,
        secrets: &Secrets,
        now: Instant,
        flow: &FlowKey,
        client_isn: u32,
        cookie: u32,
        tsecr: Option<u32>,
    ) -> Option<Offer> {
        let now_count = count(now);
        let (layout, c) = match tsecr {
            Some(_) => (1, (cookie >> 3) & 7),
            None => (0, (cookie >> 7) & 7),
        };
        let age = (now_count % COUNT_WRAP + COUNT_WRAP - u64::from(c)) % COUNT_WRAP;
        if age > self.max_age || age > now_count {
            return None;
        }
        let count = now_count - age;
        let key = self.key(secrets, count / COUNT_WRAP)?;
        let h = Self::hash(key, flow, client_isn, count, layout);
        match tsecr {
            Some(ts) => {
                ((h & !0x3f) == (cookie & !0x3f)).then_some(())?;
                let ws = ts & 0xf;
                Some(Offer {
                    mss: mss_table(flow)[(cookie & 7) as usize],
                    wscale: (ws != TS_NO_WSCALE).then_some(ws as u8),
                    sack: ts & 0x10 != 0,
                    timestamps: true,
                })
            }
            None => {
                ((h & !0x3ff) == (cookie & !0x3ff)).then_some(())?;
                let ws = (cookie & 7) as usize;
                Some(Offer {
                    mss: mss_table(flow)[((cookie >> 4) & 7) as usize],
                    wscale: (ws != 0).then(|| WSCALE_TABLE[ws]),
                    sack: cookie & 8 != 0,
                    timestamps: false,
                })
            }
        }
    }
}

/// The cookie clock at `now`: steps of [`COUNT_SECS`].
fn count(now: Instant) -> u64 {
    now.as_nanos() / 1_000_000_000 / COUNT_SECS
}

/// The MSS a client that sent no MSS option takes: 536 over IPv4 (RFC 9293
/// §3.7.1), 1220 over IPv6 (RFC 8200 §5: a 1280-byte MTU less 60 bytes).
pub(crate) fn default_mss(flow: &FlowKey) -> u16 {
    mss_table(flow)[0]
}

/// The largest MSS announced to the client of `flow`, for `mss_max`
/// configured as for IPv4: an IPv6 client's headers are 20 bytes larger on
/// the same links.
pub(crate) fn mss_max(client: std::net::IpAddr, mss_max: u16) -> u16 {
    if client.is_ipv6() { mss_max.saturating_sub(20) } else { mss_max }
}

/// Index of the largest table MSS not above `mss`.
fn mss_index(table: &[u16; 8], mss: u16) -> u32 {
    table.iter().rposition(|&m| m <= mss).unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Endpoint;

    fn flow() -> FlowKey {
        let ep = |s: &str| -> Endpoint { s.parse::<std::net::SocketAddr>().unwrap().into() };
        FlowKey { proto: Proto::Tcp, src: ep("192.0.2.7:40000"), dst: ep("10.0.0.1:80") }
    }

    fn jar() -> (Secrets, CookieJar) {
        jar_valid(120)
    }

    fn jar_valid(secs: u64) -> (Secrets, CookieJar) {
        let s = Secrets::from_seed([9; 32]);
        let j = CookieJar::new(&s, core::time::Duration::from_secs(secs));
        (s, j)
    }

    const T0: Instant = Instant::from_secs(1_000_000);

    #[test]
    fn round_trip_with_timestamps() {
        let (s, mut j) = jar();
        let offer = Offer { mss: 1448, wscale: Some(7), sack: true, timestamps: true };
        let (seq, ts_bits) = j.make(&s, T0, &flow(), 12345, offer);
        let tsval = 0xabcd_0000 | ts_bits;
        let got = j.check(&s, T0 + core::time::Duration::from_secs(5), &flow(), 12345, seq, Some(tsval));
        assert_eq!(got, Some(Offer { mss: 1440, ..offer }));
    }

    #[test]
    fn round_trip_without_timestamps_rounds_wscale_down() {
        let (s, mut j) = jar();
        let offer = Offer { mss: 1460, wscale: Some(9), sack: true, timestamps: false };
        let (seq, _) = j.make(&s, T0, &flow(), 7, offer);
        let got = j.check(&s, T0, &flow(), 7, seq, None).unwrap();
        assert_eq!(got, Offer { mss: 1460, wscale: Some(8), sack: true, timestamps: false });
        let none = Offer { mss: 536, wscale: None, sack: false, timestamps: false };
        let (seq, _) = j.make(&s, T0, &flow(), 7, none);
        assert_eq!(j.check(&s, T0, &flow(), 7, seq, None), Some(none));
    }

    #[test]
    fn ipv6_clients_use_their_own_mss_table() {
        let (s, mut j) = jar();
        let ep = |s: &str| -> Endpoint { s.parse::<std::net::SocketAddr>().unwrap().into() };
        let v6 = FlowKey { proto: Proto::Tcp, src: ep("[2001:db8::7]:40000"), dst: ep("[2001:db8:1::1]:80") };
        for (offered, named) in [(1440, 1440), (1460, 1440), (1439, 1432), (1220, 1220), (1000, 1220)] {
            for timestamps in [false, true] {
                let offer = Offer { mss: offered, wscale: Some(7), sack: true, timestamps };
                let (seq, ts_bits) = j.make(&s, T0, &v6, 7, offer);
                let got = j.check(&s, T0, &v6, 7, seq, timestamps.then_some(ts_bits)).unwrap();
                assert_eq!(got.mss, named, "offered {offered}");
                // The same cookie does not pass for the IPv4 tuple.
                assert!(j.check(&s, T0, &flow(), 7, seq, timestamps.then_some(ts_bits)).is_none());
            }
        }
        // The hash covers all 16 bytes of each address.
        let (seq, _) = j.make(&s, T0, &v6, 7, Offer::default());
        let mut other = v6;
        other.src.addr = ep("[2001:db8::8]:40000").addr;
        assert!(j.check(&s, T0, &other, 7, seq, None).is_none());
    }

    #[test]
    fn wrong_tuple_isn_or_bits_fail() {
        let (s, mut j) = jar();
        let offer = Offer { mss: 1460, wscale: Some(7), sack: true, timestamps: false };
        let (seq, _) = j.make(&s, T0, &flow(), 7, offer);
        assert!(j.check(&s, T0, &flow(), 8, seq, None).is_none());
        let mut other = flow();
        other.src.port += 1;
        assert!(j.check(&s, T0, &other, 7, seq, None).is_none());
        let passing: Vec<u32> =
            (0..32u32).filter(|b| j.check(&s, T0, &flow(), 7, seq ^ (1 << b), None).is_some()).collect();
        // Flipping a hash or clock bit fails; flipping one of the 7 option
        // bits (mss, sack, wscale) names other options, which is harmless.
        assert!(passing.iter().all(|&b| b < 7), "{passing:?}");
        let other_engine = Secrets::from_seed([10; 32]);
        assert!(
            CookieJar::new(&other_engine, core::time::Duration::from_secs(120))
                .check(&other_engine, T0, &flow(), 7, seq, None)
                .is_none()
        );
    }

    #[test]
    fn expires_after_validity_and_survives_key_change() {
        let (s, mut j) = jar();
        let offer = Offer { mss: 1460, wscale: None, sack: false, timestamps: false };
        // Just before a key period ends.
        let t = Instant::from_secs((1_000_000 / 256 + 1) * 256 - 1);
        let (seq, _) = j.make(&s, t, &flow(), 1, offer);
        let s90 = core::time::Duration::from_secs(90);
        assert!(j.check(&s, t + s90, &flow(), 1, seq, None).is_some(), "valid across the key change");
        let s200 = core::time::Duration::from_secs(200);
        assert!(j.check(&s, t + s200, &flow(), 1, seq, None).is_none(), "expired");
        // A shorter validity expires sooner.
        let (s, mut short) = jar_valid(30);
        let (seq, _) = short.make(&s, t, &flow(), 1, offer);
        assert!(short.check(&s, t + s90, &flow(), 1, seq, None).is_none());
    }

    #[test]
    fn spoofed_acks_rarely_pass() {
        let (s, mut j) = jar();
        let passed = (0..200_000u32)
            .filter(|&i| j.check(&s, T0, &flow(), i, i.wrapping_mul(2_654_435_761), None).is_some())
            .count();
        assert!(passed <= 2, "{passed} random cookies passed");
    }
}
