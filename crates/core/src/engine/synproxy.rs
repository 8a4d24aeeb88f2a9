//! How the engine joins a SYNProxy handshake to the connection table:
//! the SYNProxy component decides what a packet or a timer means to a
//! handshake and returns an outcome; this file applies it to the
//! connections (open, move to another real, remove), the only place where
//! the two meet.

use rvs_wire::tcp;
use rvs_wire::tcp_seq::SeqNumber;

use super::Engine;
use crate::addr::FlowKey;
use crate::conn::{Conn, Handshake, HandshakeId, Lookup};
use crate::drop::DropReason;
use crate::emit::Segment;
use crate::packet::{IpInfo, Outcome};
use crate::service::{Real, real_mut};
use crate::synproxy::{MAX_TRIED, RealAnswer, ReplayCheck, SynTimeout};
use crate::tcp_state::{Side, TcpState};
use crate::time::Instant;

impl Engine {
    /// An ACK with no connection to a SYNProxy service: if its cookie is
    /// good, open the connection and the real's handshake.
    pub(crate) fn synproxy_ack(
        &mut self,
        now: Instant,
        ip: &IpInfo,
        key: &FlowKey,
        svc: u32,
        pkt: &[u8],
    ) -> Result<Outcome, DropReason> {
        let seg = &pkt[ip.header_len..];
        let t = tcp::Packet::new_unchecked(seg);
        let (client_isn, ack, payload) =
            (SeqNumber(t.seq_number()) - 1, SeqNumber(t.ack_number()), t.payload().len());
        let cfg = self.cfg.synproxy;
        // Answered with an RST (rate-limited) by the packet path.
        let Some(offer) = self.syn.check_cookie(self.conns.secrets(), now, key, seg) else {
            return Err(DropReason::BadCookie);
        };
        // The client holds an open connection now: if no real's side can be
        // opened for it, it hears so at once, as when every real fails.
        let refuse = |e: &mut Self, reason| {
            let rst = Segment::rst(key.dst, key.src, ack, None, cfg.ttl);
            let _ = e.queue_segment(&rst, Side::Client);
            Err(reason)
        };
        if self.conns.table().len() >= self.conns.table().max() {
            return refuse(self, DropReason::TableFull);
        }
        let placed = match self.place(now, svc, key, &[]) {
            Ok(p) => p,
            Err(reason) => return refuse(self, reason),
        };
        let announced = {
            let s = &self.services[svc as usize];
            offer.wscale.map_or(0, |_| s.synproxy_wscale.unwrap_or(cfg.wscale))
        };
        let real_isn = self.conns.clock().isn(now, placed.laddr, placed.real);
        let real_tsval = self.conns.clock().tsval(now, placed.laddr, placed.real);
        let Some(hid) = self.syn.begin(seg, offer, placed.real_index as u32, (real_isn, real_tsval)) else {
            return refuse(self, DropReason::TableFull);
        };
        // The handshake's own timer ends it; the expiry only bounds a leak.
        let expires = now + self.timeout(svc, key.proto, TcpState::SynRecv);
        let mut conn = placed.conn(key, svc, TcpState::SynSent, expires);
        conn.client_wscale = announced;
        conn.peer_wscale = offer.wscale.unwrap_or(0);
        self.syn.renumber(hid, &mut conn, real_isn, real_tsval);
        conn.handshake = Handshake::Open(hid);
        conn.delivery = self
            .services
            .get(svc as usize)
            .and_then(|s| self.deliveries.start(&s.config, key.src, key.dst, client_isn));
        let delivery = conn.delivery;
        let id = match self.insert_conn(now, conn, placed.pool) {
            Ok(id) => id,
            Err(e) => {
                self.syn.forget(hid, &mut self.store);
                self.deliveries.close(delivery);
                return refuse(self, e);
            }
        };
        self.deliveries.attach(delivery, id);
        if !self.syn.opened(hid, id) {
            return Ok(Outcome::Absorbed);
        }
        let (syn, _, mut ctx) = self.split();
        syn.keep_client_packet(&mut ctx, hid, pkt);
        if !(cfg.defer_rs_syn && payload == 0) {
            let (syn, _, mut ctx) = self.split();
            syn.send_real_syn(&mut ctx, now, hid);
        }
        Ok(Outcome::Absorbed)
    }

    /// Retransmit SYNs whose RTO passed; move clients on or give up.
    pub(crate) fn synproxy_timeouts(&mut self, now: Instant) {
        while let Some((hid, confirming)) = self.syn.pop_due(now) {
            if confirming {
                let (syn, _, mut ctx) = self.split();
                let built = syn.replay_timeout(&mut ctx, now, hid);
                self.send_to_real(&built);
                continue;
            }
            if let Some(real) = self.handshake_real(hid) {
                real.passive.syn_unanswered += 1;
                self.stats.passive_failures += 1;
            }
            self.retry_or_failover(now, hid);
        }
    }

    /// The real handshake `hid` is open toward.
    fn handshake_real(&mut self, hid: HandshakeId) -> Option<&mut Real> {
        let (id, ..) = self.syn.tried(hid)?;
        let conn = self.conns.get(id)?;
        real_mut(&mut self.services, conn.service, conn.real_index)
    }

    /// The real did not take the SYN: send it again, or after the last try
    /// move the client to another real (the classic mode lets it expire).
    fn retry_or_failover(&mut self, now: Instant, hid: HandshakeId) {
        let (syn, _, mut ctx) = self.split();
        match syn.syn_timeout(&mut ctx, now, hid) {
            SynTimeout::Done => {}
            SynTimeout::Expire(conn) => self.remove_conn(now, conn),
            SynTimeout::Failover => self.failover(now, hid, true),
        }
    }

    /// Move a waiting client to another real: new LIP port, new SYN, the
    /// kept packets replayed once that real answers. No real left: RST.
    /// `reset_old`: the old real may hold a half-open connection (it
    /// answered, but its SYN-ACK was lost; or it ignores a repeated SYN):
    /// reset it, so it neither keeps a backlog slot nor keeps sending
    /// SYN-ACKs to a local port that is no longer this connection's.
    fn failover(&mut self, now: Instant, hid: HandshakeId, reset_old: bool) {
        let Some((old_id, tried, n_tried)) = self.syn.tried(hid) else { return };
        let Some(old) = self.conns.remove(old_id) else {
            self.syn.forget(hid, &mut self.store);
            return;
        };
        let (syn, _, mut ctx) = self.split();
        syn.leave_real(&mut ctx, hid, &old, reset_old);
        self.release(now, old_id, &old, true);
        if let Some(r) = real_mut(&mut self.services, old.service, old.real_index) {
            r.handshake.failovers += 1;
        }
        let key = old.client_key();
        let placed = if n_tried < MAX_TRIED {
            // Once every real was tried, go round again (loss on the way is
            // likelier than every real being down), avoiding the one that
            // just failed where there is another: the client gets an RST
            // after MAX_TRIED tries, not after one per real, which with
            // few reals and a lossy path came within a few RTOs.
            self.place(now, old.service, &key, &tried[..n_tried])
                .or_else(|_| self.place(now, old.service, &key, &[old.real_index]))
                .or_else(|_| self.place(now, old.service, &key, &[]))
        } else {
            Err(DropReason::NoReal)
        };
        let Ok(placed) = placed else {
            self.abandon_handshake(hid, &old);
            return;
        };
        let real_isn = self.conns.clock().isn(now, placed.laddr, placed.real);
        let real_tsval = self.conns.clock().tsval(now, placed.laddr, placed.real);
        let mut conn = old.clone();
        conn.laddr = placed.laddr;
        conn.real = placed.real;
        conn.real_index = placed.real_index as u32;
        if !self.syn.renumber(hid, &mut conn, real_isn, real_tsval) {
            return;
        }
        // The move is not a new connection in the totals: admitted, not inserted anew.
        let Ok(id) = self.admit(now, conn, placed.pool) else {
            self.abandon_handshake(hid, &old);
            return;
        };
        self.deliveries.attach(old.delivery, id);
        let (syn, _, mut ctx) = self.split();
        syn.moved(&mut ctx, now, hid, id, placed.real_index as u32, (real_isn, real_tsval));
    }

    /// Every real failed: reset the client, forget the handshake and the
    /// connection's delivery.
    fn abandon_handshake(&mut self, hid: HandshakeId, old: &Conn) {
        let (syn, deliveries, mut ctx) = self.split();
        if syn.give_up(&mut ctx, hid, old) {
            deliveries.close(old.delivery);
        }
    }

    /// A packet of a connection whose real handshake is still open.
    pub(crate) fn synproxy_pending(
        &mut self,
        now: Instant,
        lookup: Lookup,
        hid: HandshakeId,
        ip: &IpInfo,
        pkt: &[u8],
    ) -> Option<Result<Outcome, DropReason>> {
        if self.conns.get(lookup.id).is_none() {
            return Some(Err(DropReason::NoConnection));
        }
        let (syn, _, mut ctx) = self.split();
        match syn.replay_check(&mut ctx, lookup, hid, &pkt[ip.header_len..]) {
            ReplayCheck::NotReplaying => {}
            ReplayCheck::Lost => return Some(Ok(Outcome::ReplayLost { conn: lookup.id, handshake: hid })),
            ReplayCheck::Confirmed => return None,
        }
        Some(self.handshake_packet(now, lookup, hid, pkt, ip.header_len))
    }

    /// A packet of a connection whose real handshake is still open.
    fn handshake_packet(
        &mut self,
        now: Instant,
        lookup: Lookup,
        hid: HandshakeId,
        pkt: &[u8],
        header_len: usize,
    ) -> Result<Outcome, DropReason> {
        let seg = &pkt[header_len..];
        let Some(conn) = self.conns.get(lookup.id) else { return Err(DropReason::NoConnection) };
        let (laddr, real) = (conn.laddr, conn.real);
        match lookup.side {
            Side::Client => {
                let (syn, _, mut ctx) = self.split();
                if syn.client_packet(&mut ctx, now, hid, (laddr, real), pkt, header_len)? {
                    self.remove_conn(now, lookup.id);
                }
                Ok(Outcome::Absorbed)
            }
            Side::Real => {
                let (syn, _, mut ctx) = self.split();
                match syn.real_answer(&mut ctx, hid, laddr, real, seg)? {
                    RealAnswer::Refused => self.retry_or_failover(now, hid),
                    RealAnswer::Reset => {
                        if let Some(real) = self.handshake_real(hid) {
                            real.passive.syn_refused += 1;
                            self.stats.passive_failures += 1;
                        }
                        self.failover(now, hid, false);
                    }
                    RealAnswer::SynAck => {
                        let (syn, _, mut ctx) = self.split();
                        let spliced = syn.splice(&mut ctx, now, lookup.id, hid, seg);
                        return Ok(spliced.map_or(Outcome::Absorbed, Outcome::Spliced));
                    }
                }
                Ok(Outcome::Absorbed)
            }
        }
    }
}
