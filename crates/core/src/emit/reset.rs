//! RSTs the engine owes. A connection the engine forgets while both ends
//! may still hold it open (its entry expired, or was flushed) would leave
//! the client hanging on its next request and the real holding a socket
//! forever; so each side gets an RST with the sequence number it expects
//! next. A packet of a connection the engine does not know (forgotten
//! earlier, or a restart ago) is answered with an RST as a host answers a
//! segment for a closed port (RFC 9293 §3.10.7.1: `<SEQ=SEG.ACK><CTL=RST>`),
//! which also finishes what an inexact RST started: the peer answers that
//! with a challenge ACK (RFC 5961 §3), and the answer to that is exact.
//!
//! Answers are rate-limited (anyone can send packets of no connection);
//! owed RSTs are not, but both wait in a bounded queue. Entries are the few
//! fields an RST needs, not built packets, so that a mass expiry costs tens
//! of bytes per RST.

use std::collections::VecDeque;

use rvs_wire::tcp;
use rvs_wire::tcp_seq::SeqNumber;

use crate::addr::Endpoint;
use crate::emit::Segment;
use crate::tcp_state::Side;
use crate::time::Instant;

/// RSTs queued at most; beyond, they are counted and not sent.
const MAX_QUEUED: usize = 1 << 16;

/// One RST to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reset {
    pub(crate) src: Endpoint,
    pub(crate) dst: Endpoint,
    pub(crate) seq: SeqNumber,
    /// The side `dst` is on.
    pub(crate) to: Side,
}

/// What became of the RSTs the engine meant to send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResetStats {
    /// RSTs sent to a side of a connection forgotten while open (expired or flushed).
    pub forgotten: u64,
    /// RSTs answering a packet of no connection.
    pub answered: u64,
    /// Answers not sent: over `reset_rate`.
    pub rate_limited: u64,
    /// RSTs not sent: the queue was full.
    pub queue_full: u64,
}

/// The queue of RSTs and the answers' token bucket.
#[derive(Debug)]
pub(crate) struct Resets {
    queue: VecDeque<Reset>,
    /// Answers per second, and the most that may go out at once.
    rate: u32,
    tokens: u32,
    /// Time up to which tokens were added.
    filled_to: Instant,
    pub(crate) stats: ResetStats,
}

impl Resets {
    /// Answers at most `rate` per second (0: none), in bursts of up to `rate`.
    pub(crate) fn new(rate: u32, now: Instant) -> Self {
        Self { queue: VecDeque::new(), rate, tokens: rate, filled_to: now, stats: ResetStats::default() }
    }

    /// Send `rst` to a side of a connection the engine forgets while it is open.
    pub(crate) fn forgotten(&mut self, rst: Reset) {
        if self.push(rst) {
            self.stats.forgotten += 1;
        }
    }

    /// Answer a packet of no connection with `rst`, if the rate allows.
    pub(crate) fn answer(&mut self, now: Instant, rst: Reset) {
        self.refill(now);
        if self.tokens == 0 {
            self.stats.rate_limited += 1;
            return;
        }
        if self.push(rst) {
            self.tokens -= 1;
            self.stats.answered += 1;
        }
    }

    /// The next RST, written into `buf` with `ttl`: its length and side.
    pub(crate) fn pop(&mut self, buf: &mut [u8], ttl: u8) -> Option<(usize, Side)> {
        let r = self.queue.pop_front()?;
        let seg = Segment::rst(r.src, r.dst, r.seq, None, ttl);
        Some((seg.emit(buf), r.to))
    }

    fn push(&mut self, rst: Reset) -> bool {
        if self.queue.len() >= MAX_QUEUED {
            self.stats.queue_full += 1;
            return false;
        }
        self.queue.push_back(rst);
        true
    }

    /// Add the tokens earned since `filled_to`, up to `rate`.
    fn refill(&mut self, now: Instant) {
        let Some(per_token) = 1_000_000_000u64.checked_div(u64::from(self.rate)) else { return };
        let elapsed = now.as_nanos().saturating_sub(self.filled_to.as_nanos());
        let earned = elapsed / per_token.max(1);
        if earned == 0 {
            return;
        }
        let room = u64::from(self.rate - self.tokens);
        if earned >= room {
            self.tokens = self.rate;
            self.filled_to = now;
        } else {
            self.tokens += earned as u32;
            self.filled_to = Instant::from_nanos(self.filled_to.as_nanos() + earned * per_token);
        }
    }
}

/// The RST that answers segment `seg` (parsed, TCP) sent from `from` to
/// `to_addr`, if it deserves one: only a segment with ACK and without RST
/// (RFC 9293 §3.10.7.1; SYNs open connections and are never answered here).
pub(crate) fn answer_to(from: Endpoint, to_addr: Endpoint, seg: &[u8], from_side: Side) -> Option<Reset> {
    let t = tcp::Packet::new_checked(seg).ok()?;
    let f = t.flags();
    (f.ack() && !f.rst() && !f.syn()).then(|| Reset {
        src: to_addr,
        dst: from,
        seq: SeqNumber(t.ack_number()),
        to: from_side,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse::<std::net::SocketAddr>().unwrap().into()
    }

    fn rst(seq: u32) -> Reset {
        Reset { src: ep("10.0.2.1:80"), dst: ep("192.0.2.1:5000"), seq: SeqNumber(seq), to: Side::Client }
    }

    #[test]
    fn answers_are_rate_limited_owed_resets_are_not() {
        let t0 = Instant::from_secs(10);
        let mut r = Resets::new(3, t0);
        for i in 0..5 {
            r.answer(t0, rst(i));
        }
        assert_eq!((r.stats.answered, r.stats.rate_limited), (3, 2));
        for i in 0..5 {
            r.forgotten(rst(i));
        }
        assert_eq!(r.stats.forgotten, 5);
        // A third of a second earns one token; a long pause no more than the burst.
        r.answer(t0 + core::time::Duration::from_millis(334), rst(9));
        r.answer(t0 + core::time::Duration::from_millis(400), rst(9));
        assert_eq!((r.stats.answered, r.stats.rate_limited), (4, 3));
        r.answer(t0 + core::time::Duration::from_secs(100), rst(9));
        assert_eq!(r.tokens, 2);
        let mut none = Resets::new(0, t0);
        none.answer(t0 + core::time::Duration::from_secs(5), rst(1));
        assert_eq!((none.stats.answered, none.stats.rate_limited), (0, 1));
    }

    #[test]
    fn queued_resets_come_out_as_bare_rsts_in_order() {
        let t0 = Instant::ZERO;
        let mut r = Resets::new(10, t0);
        r.forgotten(rst(7));
        r.answer(t0, Reset { to: Side::Real, ..rst(8) });
        let mut buf = [0u8; 64];
        let (len, side) = r.pop(&mut buf, 64).unwrap();
        assert_eq!((len, side), (40, Side::Client));
        let t = tcp::Packet::new_checked(&buf[20..len]).unwrap();
        assert!(t.flags().rst() && !t.flags().ack());
        assert_eq!((t.seq_number(), t.src_port(), t.dst_port()), (7, 80, 5000));
        assert_eq!(r.pop(&mut buf, 64).map(|(_, s)| s), Some(Side::Real));
        assert_eq!(r.pop(&mut buf, 64), None);
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut r = Resets::new(1, Instant::ZERO);
        for _ in 0..MAX_QUEUED + 3 {
            r.forgotten(rst(1));
        }
        assert_eq!((r.stats.forgotten, r.stats.queue_full), (MAX_QUEUED as u64, 3));
    }

    #[test]
    fn only_acknowledging_segments_are_answered() {
        // The TCP segment of a packet the engine's own emitter builds.
        let seg = |flags: tcp::Flags, ack: Option<u32>| {
            let mut pkt = [0u8; 64];
            let s = Segment {
                flags,
                ack: ack.map(SeqNumber),
                ..Segment::rst(ep("192.0.2.1:5000"), ep("10.0.2.1:80"), SeqNumber(1), None, 64)
            };
            let len = s.emit(&mut pkt);
            pkt[20..len].to_vec()
        };
        let (client, vip) = (ep("192.0.2.1:5000"), ep("10.0.2.1:80"));
        let answer = answer_to(client, vip, &seg(tcp::Flags(0), Some(4242)), Side::Client).unwrap();
        assert_eq!(answer, Reset { src: vip, dst: client, seq: SeqNumber(4242), to: Side::Client });
        assert!(answer_to(client, vip, &seg(tcp::Flags::FIN, Some(1)), Side::Client).is_some());
        assert!(answer_to(client, vip, &seg(tcp::Flags::RST, Some(1)), Side::Client).is_none());
        assert!(answer_to(client, vip, &seg(tcp::Flags::SYN, Some(1)), Side::Client).is_none());
        assert!(answer_to(client, vip, &seg(tcp::Flags::FIN, None), Side::Client).is_none());
        assert!(answer_to(client, vip, &[0u8; 7], Side::Client).is_none());
    }
}
