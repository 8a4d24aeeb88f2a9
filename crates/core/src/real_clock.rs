//! What rvs presents to reals on a (local address, port, real) tuple, and
//! when a local port may carry a new connection toward the same real.
//!
//! A real that closed a connection first holds its tuple in TIME_WAIT (60 s
//! on Linux). It accepts a new SYN on the tuple at once (RFC 6191; Linux's
//! `tcp_timewait_state_process`) when the SYN's TSval is newer than the last
//! one it saw, or, without timestamps, when the SYN's sequence number lies
//! past the end of the old connection; a TSval older than the last one is
//! refused outright (PAWS, RFC 7323 §5). The kernel's own clients pass these
//! checks because their ISNs and TSvals grow with time, and so do rvs's:
//!
//! - the ISN toward a real is a 1 µs clock plus a keyed hash of the tuple
//!   (RFC 6528, which suggests 4 µs; Linux ticks every 64 ns);
//! - the TSval of the SYN toward a real is a 1 µs clock plus another keyed
//!   hash, and the client's later TSvals keep their distance from it. The
//!   clock runs faster than clients' (1 kHz for most, 1 MHz at most, as
//!   Linux's `tcp_usec_ts`), so the next SYN's TSval is past the last one
//!   the real saw from the moment a connection closes; a SYN whose TSval
//!   equals it is judged by sequence number;
//! - the clocks' epoch is the wall clock when the daemon started and the key
//!   lives in the secret file, so both keep growing across restarts.
//!
//! Growth alone does not cover every case: a client that sends faster than
//! one byte per microsecond, one whose timestamp clock runs faster than
//! ours, a connection so long that the 32-bit comparison would turn over, a
//! connection that did not close cleanly (it expired, was reset by rvs, or
//! its handshake never completed). So when a connection ends,
//! [`RealClock::reuse`] compares what the real last saw, the end of the
//! client's bytes and the last TSval, with the clocks now. A port the real
//! will accept at once goes straight back to its pool, behind the ports
//! released before it; any other rests for the quarantine, which is to be
//! the reals' TIME_WAIT length.

use core::time::Duration;

use rvs_wire::tcp_seq::SeqNumber;

use crate::addr::{Endpoint, Proto};
use crate::conn::Conn;
use crate::hash::Secrets;
use crate::laddr::Reuse;
use crate::tcp_state::{Side, TcpState};
use crate::time::Instant;

/// Domains of [`Secrets::derive`].
const DRAW_ISN: u8 = 2;
const DRAW_TS: u8 = 3;

/// Ticks of the ISN clock per second.
const ISN_HZ: u64 = 1_000_000;
/// Ticks of the TSval clock per second.
const TS_HZ: u64 = 1_000_000;

/// The ISN and TSval clocks toward reals, keyed by the engine's secret.
#[derive(Debug, Clone)]
pub(crate) struct RealClock {
    secrets: Secrets,
}

impl RealClock {
    pub(crate) fn new(secrets: Secrets) -> Self {
        Self { secrets }
    }

    /// Our ISN toward `real` from `laddr` (a local address and port).
    pub(crate) fn isn(&self, now: Instant, laddr: Endpoint, real: Endpoint) -> SeqNumber {
        let h = self.secrets.derive(DRAW_ISN, Proto::Tcp, laddr, real, 0);
        SeqNumber(ticks(now, ISN_HZ)) + h as u32
    }

    /// Our TSval toward `real` from `laddr` for a SYN sent now.
    pub(crate) fn tsval(&self, now: Instant, laddr: Endpoint, real: Endpoint) -> SeqNumber {
        let h = self.secrets.derive(DRAW_TS, Proto::Tcp, laddr, real, 0);
        SeqNumber(ticks(now, TS_HZ)) + h as u32
    }

    /// When the local port of `conn`, ending now, may carry a new connection
    /// toward the same real, which may keep the tuple for `time_wait`.
    ///
    /// At once only if the connection closed (both FINs acknowledged, or an
    /// RST), the ISN clock is past the end of the client's bytes (for a next
    /// client without timestamps, judged by sequence number alone), and the
    /// TSval clock is not behind the last TSval the real saw (PAWS); each
    /// with room to stay so for `time_wait`, since sequence space is
    /// compared modulo 2^32. An equal TSval passes: the real then judges by
    /// sequence number, which is ahead.
    pub(crate) fn reuse(&self, now: Instant, conn: &Conn, time_wait: Duration) -> Reuse {
        if conn.proto == Proto::Udp {
            return Reuse::AtOnce;
        }
        let progress = conn.progress;
        let closed = progress.closed() || conn.state == TcpState::Close;
        let Some(end) = progress.end(Side::Client).filter(|_| closed) else { return Reuse::AfterRest };
        // `clock` is at least `seen + min` and stays below `seen + 2^31` for `time_wait`.
        let ahead = |clock: SeqNumber, seen: SeqNumber, min: u32, hz: u64| {
            let margin = clock - seen;
            let room = (1u64 << 31).saturating_sub(ticks_in(time_wait, hz));
            margin >= min && u64::from(margin) < room
        };
        let seq_ahead = ahead(self.isn(now, conn.laddr, conn.real), end, 1, ISN_HZ);
        let ts_not_behind = progress
            .tsval_to_real()
            .is_none_or(|ts| ahead(self.tsval(now, conn.laddr, conn.real), ts, 0, TS_HZ));
        if seq_ahead && ts_not_behind { Reuse::AtOnce } else { Reuse::AfterRest }
    }
}

/// `now` on a clock of `hz` ticks per second, modulo 2^32.
fn ticks(now: Instant, hz: u64) -> u32 {
    (now.as_nanos() / (1_000_000_000 / hz)) as u32
}

/// Whole ticks of a `hz` clock in `d`.
fn ticks_in(d: Duration, hz: u64) -> u64 {
    u64::try_from(d.as_nanos() / u128::from(1_000_000_000 / hz)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::FlowKey;
    use crate::conn::Placement;
    use crate::conn::Progress;
    use crate::laddr::PoolId;

    const TW: Duration = Duration::from_secs(60);

    fn ep(s: &str) -> Endpoint {
        s.parse::<std::net::SocketAddr>().unwrap().into()
    }

    fn clock() -> RealClock {
        RealClock::new(Secrets::from_seed([7; 32]))
    }

    /// A connection that sent a SYN at `start` with our ISN and TSval, then
    /// `bytes` bytes and a FIN; the client's TSvals ran `client_ms` ahead.
    fn closed_conn(c: &RealClock, start: Instant, bytes: u32, client_ms: Option<u32>) -> Conn {
        let (laddr, real) = (ep("10.0.3.1:40000"), ep("10.0.1.11:80"));
        let key = FlowKey { proto: Proto::Tcp, src: ep("192.0.2.1:5000"), dst: ep("10.0.2.1:80") };
        let placed = Placement { real_index: 0, real, laddr, pool: PoolId(0) };
        let mut conn = placed.conn(&key, 0, TcpState::TimeWait, Instant::ZERO);
        let isn = c.isn(start, laddr, real);
        let mut p = Progress::default();
        p.sent(Side::Client, isn + 1, false);
        p.sent(Side::Client, isn + (1 + bytes + 1), true);
        p.sent(Side::Real, SeqNumber(7), true);
        p.acked_by(Side::Real, isn + (bytes + 2));
        p.acked_by(Side::Client, SeqNumber(7));
        if let Some(ms) = client_ms {
            p.tsval_sent(c.tsval(start, laddr, real) + ms);
        }
        conn.progress = p;
        conn
    }

    #[test]
    fn clocks_tick_at_their_rates_from_a_keyed_offset() {
        let c = clock();
        let (l, r) = (ep("10.0.3.1:40000"), ep("10.0.1.11:80"));
        let t = Instant::from_secs(1_000);
        assert_eq!(c.isn(t + Duration::from_micros(5), l, r) - c.isn(t, l, r), 5);
        assert_eq!(c.tsval(t + Duration::from_millis(5), l, r) - c.tsval(t, l, r), 5_000);
        assert_ne!(c.isn(t, l, r), c.isn(t, ep("10.0.3.1:40001"), r));
        assert_ne!(clock().isn(t, l, r), RealClock::new(Secrets::from_seed([8; 32])).isn(t, l, r));
    }

    #[test]
    fn a_clean_close_is_reused_at_once() {
        let c = clock();
        let start = Instant::from_secs(1_000);
        // A request, closed 3 s later (the balancer's TIME_WAIT), with and without timestamps.
        for ts in [None, Some(40)] {
            let conn = closed_conn(&c, start, 300, ts);
            assert_eq!(c.reuse(start + Duration::from_secs(3), &conn, TW), Reuse::AtOnce, "{ts:?}");
        }
        // A 1 MB download sends the real a few hundred bytes.
        let conn = closed_conn(&c, start, 400, Some(2_000));
        assert_eq!(c.reuse(start + Duration::from_secs(3), &conn, TW), Reuse::AtOnce);
        // As soon as a connection of a few milliseconds closes, with a 1 kHz client.
        let conn = closed_conn(&c, start, 300, Some(3));
        assert_eq!(c.reuse(start + Duration::from_millis(2), &conn, TW), Reuse::AtOnce);
    }

    #[test]
    fn what_the_clocks_have_not_passed_rests() {
        let c = clock();
        let start = Instant::from_secs(1_000);
        let later = start + Duration::from_secs(3);
        // 10 MB uploaded in well under 3 s: past the 1 µs clock.
        assert_eq!(c.reuse(later, &closed_conn(&c, start, 10_000_000, None), TW), Reuse::AfterRest);
        // A client whose timestamp clock ran ahead of ours: one TSval past
        // it fails PAWS; an equal one passes (the real then judges by
        // sequence number).
        assert_eq!(c.reuse(later, &closed_conn(&c, start, 300, Some(3_000_001)), TW), Reuse::AfterRest);
        assert_eq!(c.reuse(later, &closed_conn(&c, start, 300, Some(3_000_000)), TW), Reuse::AtOnce);
        // So long ago that the 32-bit ISN comparison would turn over within the real's TIME_WAIT.
        let old = start + Duration::from_secs(2_100);
        assert_eq!(c.reuse(old, &closed_conn(&c, start, 300, None), TW), Reuse::AfterRest);
        assert_eq!(c.reuse(old, &closed_conn(&c, start, 300, None), Duration::ZERO), Reuse::AtOnce);
    }

    #[test]
    fn a_connection_that_did_not_close_rests() {
        let c = clock();
        let start = Instant::from_secs(1_000);
        let later = start + Duration::from_secs(100);
        let mut conn = closed_conn(&c, start, 300, None);
        conn.progress = Progress::default();
        conn.progress.sent(Side::Client, c.isn(start, conn.laddr, conn.real) + 301, false);
        for state in [TcpState::Established, TcpState::SynSent, TcpState::SynRecv, TcpState::LastAck] {
            conn.state = state;
            assert_eq!(c.reuse(later, &conn, TW), Reuse::AfterRest, "{state:?}");
        }
        // An RST ended it: the real forgot the tuple, or holds it in TIME_WAIT at most.
        conn.state = TcpState::Close;
        assert_eq!(c.reuse(later, &conn, TW), Reuse::AtOnce);
        // Nothing known of the client's bytes: rest.
        conn.progress = Progress::default();
        assert_eq!(c.reuse(later, &conn, TW), Reuse::AfterRest);
        conn.proto = Proto::Udp;
        assert_eq!(c.reuse(later, &conn, TW), Reuse::AtOnce);
    }
}
