//! Passive health checking: what the data path sees of each real's answers.
//!
//! The engine only counts ([`PassiveCounters`]); the control plane decides
//! which reals are up and tells the engines through weights. SYNProxy
//! counts its own handshakes (on its SYN timer, the real's SYN-ACK or
//! RST). Plain FullNAT has no timer of its own, so a new plain connection
//! waits ([`Handshake::Waiting`]) from its first packet until the real's
//! first answer. While a TCP connection waits, its expiry is brought
//! forward to the real's handshake RTO: a SYN left unanswered is counted
//! within about an RTO (and a tick of the expiry wheel), not when the 30 s
//! SYN_RECV timeout ends the connection, which then keeps the rest of that
//! timeout. The wait also gives plain handshakes the SYN→SYN-ACK RTT that
//! SYNProxy measures, so the RTO reflects the real whatever mode reaches it.

use core::time::Duration;

use crate::addr::Proto;
use crate::config::{SynproxyConfig, Timeouts};
use crate::conn::{Conn, Handshake};
use crate::real::Real;
use crate::service::{Service, idle_timeout, real_mut};
use crate::tcp_state::{SegmentFlags, Side, TcpState};
use crate::time::Instant;

/// The wait of a new plain connection whose first packet leaves now.
pub(crate) fn wait(now: Instant) -> Handshake {
    Handshake::Waiting { sent_us: micros(now), bits: 0 }
}

/// A packet from `side` with `flags` of connection `conn` (still in the
/// state it was before the packet), toward or from its `real`. The real's
/// first answer ends the wait and is counted. Returns when the connection
/// must be looked at again, if that is earlier than its idle timeout: the
/// unanswered SYN's check.
pub(crate) fn on_packet(
    conn: &mut Conn,
    real: Option<&mut Real>,
    side: Side,
    flags: SegmentFlags,
    now: Instant,
    cfg: &SynproxyConfig,
    failures: &mut u64,
) -> Option<Instant> {
    let Handshake::Waiting { sent_us, mut bits } = conn.handshake else { return None };
    let real = real?;
    let p = &mut real.passive;
    let answered = match (conn.proto, side) {
        (Proto::Udp, Side::Real) => Some(&mut p.udp_answered),
        (Proto::Udp, Side::Client) => None,
        (Proto::Tcp, Side::Real) if flags.rst => Some(&mut p.syn_refused),
        (Proto::Tcp, Side::Real) if flags.syn && flags.ack => {
            if bits & Handshake::RESENT == 0 {
                real.handshake.sample(elapsed(now, sent_us));
            }
            Some(&mut p.syn_answered)
        }
        (Proto::Tcp, Side::Real) => None,
        (Proto::Tcp, Side::Client) => {
            if flags.syn && conn.state != TcpState::None {
                bits |= Handshake::RESENT;
            }
            None
        }
    };
    if let Some(n) = answered {
        *n += 1;
        *failures += u64::from(side == Side::Real && flags.rst);
        conn.handshake = Handshake::None;
        return None;
    }
    conn.handshake = Handshake::Waiting { sent_us, bits };
    let unchecked = conn.proto == Proto::Tcp && bits & Handshake::COUNTED == 0;
    unchecked.then(|| now - elapsed(now, sent_us) + real.handshake.rto(cfg))
}

/// Connection `conn`'s deadline passed: a TCP connection still waiting for
/// the SYN-ACK counts its SYN unanswered (once) and keeps the rest of its
/// idle timeout from when the SYN left; a UDP flow that never saw a reply
/// counts unanswered, as it expires.
pub(crate) fn on_due(
    conn: &mut Conn,
    services: &mut [Service],
    defaults: &Timeouts,
    now: Instant,
    failures: &mut u64,
) {
    let Handshake::Waiting { sent_us, bits } = conn.handshake else { return };
    if bits & Handshake::COUNTED != 0 {
        return;
    }
    let idle = idle_timeout(services, defaults, conn.service, conn.proto, conn.state);
    let Some(real) = real_mut(services, conn.service, conn.real_index) else { return };
    *failures += 1;
    match conn.proto {
        Proto::Tcp => {
            real.passive.syn_unanswered += 1;
            conn.handshake = Handshake::Waiting { sent_us, bits: bits | Handshake::COUNTED };
            conn.expires = conn.expires.max(now - elapsed(now, sent_us) + idle);
        }
        Proto::Udp => real.passive.udp_unanswered += 1,
    }
}

fn micros(t: Instant) -> u32 {
    (t.as_nanos() / 1_000) as u32
}

/// Time from `sent_us` to `now` (a wait is far shorter than the 71
/// minutes after which the microsecond clock wraps).
fn elapsed(now: Instant, sent_us: u32) -> Duration {
    Duration::from_micros(u64::from(micros(now).wrapping_sub(sent_us)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Endpoint;
    use crate::config::ServiceConfig;
    use crate::real::{PassiveCounters, TrafficCounters};
    use crate::sched::Scheduler;

    fn ep(s: &str) -> Endpoint {
        s.parse::<std::net::SocketAddr>().unwrap().into()
    }

    fn service(proto: Proto) -> Service {
        let config = ServiceConfig::new(proto, ep("10.0.0.1:80"));
        let real = crate::sched::tests::real_at(ep("10.2.0.1:80"), 1);
        Service {
            sched: Scheduler::new(config.sched),
            config,
            reals: vec![real],
            stats: TrafficCounters::default(),
            in_service: true,
            synproxy_wscale: None,
        }
    }

    fn conn(proto: Proto, state: TcpState, now: Instant) -> Conn {
        Conn {
            client: ep("192.0.2.1:5000"),
            vip: ep("10.0.0.1:80"),
            laddr: ep("10.1.0.1:1025"),
            real: ep("10.2.0.1:80"),
            proto,
            state,
            client_wscale: 0,
            real_wscale: 0,
            peer_wscale: 0,
            service: 0,
            real_index: 0,
            xlat: Default::default(),
            progress: Default::default(),
            handshake: wait(now),
            delivery: None,
            fast_path: Default::default(),
            expires: now + Duration::from_secs(30),
        }
    }

    const SYN: SegmentFlags = SegmentFlags { syn: true, ack: false, fin: false, rst: false };
    const SYNACK: SegmentFlags = SegmentFlags { syn: true, ack: true, fin: false, rst: false };
    const RST: SegmentFlags = SegmentFlags { syn: false, ack: true, fin: false, rst: true };
    const NONE: SegmentFlags = SegmentFlags { syn: false, ack: false, fin: false, rst: false };

    #[test]
    fn a_syn_ack_ends_the_wait_with_an_rtt_sample() {
        let cfg = SynproxyConfig::default();
        let mut s = [service(Proto::Tcp)];
        let t0 = Instant::from_secs(100);
        let mut c = conn(Proto::Tcp, TcpState::None, t0);
        let check = on_packet(&mut c, s[0].reals.get_mut(0), Side::Client, SYN, t0, &cfg, &mut 0);
        assert_eq!(check, Some(t0 + cfg.rto_initial), "checked at the initial RTO before any sample");
        c.state = TcpState::SynRecv;
        let t1 = t0 + Duration::from_micros(1500);
        assert_eq!(on_packet(&mut c, s[0].reals.get_mut(0), Side::Real, SYNACK, t1, &cfg, &mut 0), None);
        let r = &s[0].reals[0];
        assert_eq!(r.passive, PassiveCounters { syn_answered: 1, ..Default::default() });
        assert_eq!(r.handshake.srtt, Some(Duration::from_micros(1500)));
        assert_eq!(c.handshake, Handshake::None);
        // Later packets count nothing.
        assert_eq!(on_packet(&mut c, s[0].reals.get_mut(0), Side::Real, SYNACK, t1, &cfg, &mut 0), None);
        assert_eq!(s[0].reals[0].passive.syn_answered, 1);
    }

    #[test]
    fn a_resent_syn_gives_no_sample_and_an_rst_counts_refused() {
        let cfg = SynproxyConfig::default();
        let mut s = [service(Proto::Tcp)];
        let t0 = Instant::from_secs(1);
        let mut c = conn(Proto::Tcp, TcpState::SynRecv, t0);
        let _ = on_packet(
            &mut c,
            s[0].reals.get_mut(0),
            Side::Client,
            SYN,
            t0 + Duration::from_secs(1),
            &cfg,
            &mut 0,
        );
        let t2 = t0 + Duration::from_millis(1001);
        let _ = on_packet(&mut c, s[0].reals.get_mut(0), Side::Real, SYNACK, t2, &cfg, &mut 0);
        assert_eq!(s[0].reals[0].handshake.srtt, None, "Karn: no sample from a resent SYN");
        let mut c = conn(Proto::Tcp, TcpState::SynRecv, t0);
        let _ = on_packet(&mut c, s[0].reals.get_mut(0), Side::Real, RST, t0, &cfg, &mut 0);
        assert_eq!(s[0].reals[0].passive.syn_refused, 1);
        assert_eq!(s[0].reals[0].passive.syn_answered, 1);
    }

    #[test]
    fn an_unanswered_syn_counts_once_and_keeps_the_rest_of_its_timeout() {
        let mut s = [service(Proto::Tcp)];
        let t0 = Instant::from_secs(10);
        let mut c = conn(Proto::Tcp, TcpState::SynRecv, t0);
        c.expires = t0 + Duration::from_millis(200);
        let due = t0 + Duration::from_millis(300);
        on_due(&mut c, &mut s, &Timeouts::default(), due, &mut 0);
        assert_eq!(s[0].reals[0].passive.syn_unanswered, 1);
        assert_eq!(c.expires, t0 + Duration::from_secs(30));
        on_due(&mut c, &mut s, &Timeouts::default(), t0 + Duration::from_secs(30), &mut 0);
        assert_eq!(s[0].reals[0].passive.syn_unanswered, 1, "once per connection");
        let cfg = SynproxyConfig::default();
        let check = on_packet(&mut c, s[0].reals.get_mut(0), Side::Client, SYN, due, &cfg, &mut 0);
        assert_eq!(check, None, "no second check");
    }

    #[test]
    fn udp_flows_count_their_first_reply_or_its_absence() {
        let cfg = SynproxyConfig::default();
        let mut s = [service(Proto::Udp)];
        let t0 = Instant::from_secs(1);
        let mut c = conn(Proto::Udp, TcpState::Established, t0);
        assert_eq!(on_packet(&mut c, s[0].reals.get_mut(0), Side::Client, NONE, t0, &cfg, &mut 0), None);
        assert_eq!(on_packet(&mut c, s[0].reals.get_mut(0), Side::Real, NONE, t0, &cfg, &mut 0), None);
        assert_eq!(on_packet(&mut c, s[0].reals.get_mut(0), Side::Real, NONE, t0, &cfg, &mut 0), None);
        on_due(&mut c, &mut s, &Timeouts::default(), t0 + Duration::from_secs(300), &mut 0);
        let mut silent = conn(Proto::Udp, TcpState::Established, t0);
        on_due(&mut silent, &mut s, &Timeouts::default(), t0 + Duration::from_secs(300), &mut 0);
        assert_eq!(
            s[0].reals[0].passive,
            PassiveCounters { udp_answered: 1, udp_unanswered: 1, ..Default::default() }
        );
    }
}
