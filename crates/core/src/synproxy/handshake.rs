//! The two handshakes: the client's SYN answered with a cookie, its ACK
//! checked, and the SYN toward a real sent, retransmitted on the real's RTO
//! and moved to another real when it goes unanswered.

use rvs_wire::tcp;
use rvs_wire::tcp_options::Summary;
use rvs_wire::tcp_seq::SeqNumber;

use super::{CLASSIC_RTO, CLASSIC_TRIES, MAX_TRIED, OpenHandshake, SynproxyState, cookie};
use crate::addr::{Endpoint, FlowKey};
use crate::client_addr;
use crate::config::RetransmitMode;
use crate::conn::{Conn, ConnId, Handshake, HandshakeId, Lookup};
use crate::ctx::Ctx;
use crate::drop::DropReason;
use crate::emit::Segment;
use crate::engine::Engine;
use crate::hash::Secrets;
use crate::packet::{IpInfo, Outcome};
use crate::real::MAX_RTO;
use crate::service::real_mut;
use crate::tcp_state::{Side, TcpState};
use crate::time::Instant;
use cookie::Offer;

fn ms_clock(now: Instant) -> u32 {
    (now.as_nanos() / 1_000_000) as u32
}

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
        let (seq, ack, payload) = (SeqNumber(t.seq_number()), SeqNumber(t.ack_number()), t.payload().len());
        let opts = Summary::of_segment(seg);
        let cfg = self.cfg.synproxy;
        let (client_isn, cookie) = (seq - 1, ack - 1);
        let tsecr = opts.timestamps.map(|t| t.1);
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
        let client_tsval = SeqNumber(opts.timestamps.map_or(0, |t| t.0));
        let real_isn = self.conns.clock().isn(now, placed.laddr, placed.real);
        let real_tsval = self.conns.clock().tsval(now, placed.laddr, placed.real);
        let opening = OpenHandshake {
            client_isn,
            cookie,
            offer,
            client_tsval,
            client_echo: SeqNumber(tsecr.unwrap_or(0)),
            real_isn,
            real_tsval,
            ..OpenHandshake::new()
        };
        let Some(hid) = self.syn.begin(opening, placed.real_index as u32) else {
            return refuse(self, DropReason::TableFull);
        };
        // The handshake's own timer ends it; the expiry only bounds a leak.
        let expires = now + self.timeout(svc, key.proto, TcpState::SynRecv);
        let mut conn = placed.conn(key, svc, TcpState::SynSent, expires);
        conn.client_wscale = announced;
        conn.peer_wscale = offer.wscale.unwrap_or(0);
        conn.xlat.c2r_seq = real_isn - client_isn;
        if offer.timestamps {
            conn.xlat.c2r_ts = real_tsval - client_tsval;
        }
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
            self.retry_or_failover(now, hid);
        }
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
        self.release(now, &old, true);
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
            self.give_up(hid, &old);
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
            self.give_up(hid, &old);
            return;
        };
        self.deliveries.attach(old.delivery, id);
        let (syn, _, mut ctx) = self.split();
        syn.moved(&mut ctx, now, hid, id, placed.real_index as u32, (real_isn, real_tsval));
    }

    /// Every real failed: reset the client, forget the handshake and the
    /// connection's delivery.
    fn give_up(&mut self, hid: HandshakeId, old: &Conn) {
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
                    RealAnswer::Reset => self.failover(now, hid, false),
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

impl SynproxyState {
    /// A SYN to a SYNProxy service: answer with a cookie SYN-ACK, keep nothing.
    pub(crate) fn answer_syn(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Instant,
        key: &FlowKey,
        svc: u32,
        seg: &[u8],
    ) {
        let opts = Summary::of_segment(seg);
        let client_isn = SeqNumber(tcp::Packet::new_unchecked(seg).seq_number());
        let cfg = ctx.cfg.synproxy;
        let Some(service) = ctx.services.get(svc as usize) else { return };
        let offer = Offer {
            mss: opts.mss.unwrap_or(536).min(cfg.mss_max),
            wscale: opts.wscale,
            sack: opts.sack_permitted && cfg.sack,
            timestamps: opts.timestamps.is_some() && cfg.timestamps,
        };
        let (cookie, ts_bits) = self.jar.make(ctx.conns.secrets(), now, key, client_isn.0, offer);
        // With TOA the client's segments grow by the option: it is told less.
        let our_mss = service.config.mss_clamp.map_or(cfg.mss_max, |c| c.min(cfg.mss_max));
        let our_mss = our_mss.saturating_sub(client_addr::toa_room(&service.config)).max(64);
        let announced = service.synproxy_wscale.unwrap_or(cfg.wscale);
        let tsval = (ms_clock(now) & !((1 << cookie::TS_OPT_BITS) - 1)) | ts_bits;
        let synack = Segment {
            src: key.dst,
            dst: key.src,
            seq: SeqNumber(cookie),
            ack: Some(client_isn + 1),
            flags: tcp::Flags::SYN,
            window: u16::MAX,
            mss: Some(our_mss),
            wscale: offer.wscale.map(|_| announced),
            sack_permitted: offer.sack,
            timestamps: offer.timestamps.then(|| (tsval, opts.timestamps.map_or(0, |t| t.0))),
            ttl: cfg.ttl,
        };
        self.stats.syns_answered += 1;
        ctx.queue_segment(&synack, Side::Client);
    }

    /// What the client's SYN offered, if the ACK segment `seg` returns a
    /// valid cookie. Only such an ACK opens a connection, or recycles a
    /// finished entry of the same flow.
    pub(crate) fn check_cookie(
        &mut self,
        secrets: &Secrets,
        now: Instant,
        key: &FlowKey,
        seg: &[u8],
    ) -> Option<Offer> {
        let t = tcp::Packet::new_unchecked(seg);
        let tsecr = Summary::of_segment(seg).timestamps.map(|t| t.1);
        let (client_isn, cookie) = (t.seq_number().wrapping_sub(1), t.ack_number().wrapping_sub(1));
        self.jar.check(secrets, now, key, client_isn, cookie, tsecr)
    }

    /// Keep a client packet for replay once the real answers; false when
    /// the per-connection bound or the store is full.
    pub(super) fn keep_client_packet(&mut self, ctx: &mut Ctx<'_>, hid: HandshakeId, pkt: &[u8]) -> bool {
        let max = ctx.cfg.synproxy.max_stored_packets.min(8);
        if self.handshakes.get(hid).is_none_or(|hs| hs.n_stored >= max) {
            return false;
        }
        let Some(slot) = ctx.store.store(pkt) else { return false };
        let Some(hs) = self.handshakes.get_mut(hid) else { return false };
        hs.stored[hs.n_stored] = slot;
        hs.n_stored += 1;
        self.stats.stored += 1;
        true
    }

    /// Send (or resend) the SYN toward the connection's current real and arm the retransmit timer.
    pub(super) fn send_real_syn(&mut self, ctx: &mut Ctx<'_>, now: Instant, hid: HandshakeId) {
        let cfg = ctx.cfg.synproxy;
        let Some(hs) = self.handshakes.get(hid) else { return };
        let Some(conn) = ctx.conns.get(hs.conn) else { return };
        let (laddr, real, svc, real_index) = (conn.laddr, conn.real, conn.service, conn.real_index);
        let Some(service) = ctx.services.get_mut(svc as usize) else { return };
        let toa_room = client_addr::toa_room(&service.config);
        let mss_clamp = service.config.mss_clamp;
        let Some(r) = service.reals.get_mut(real_index as usize) else { return };
        let Some(hs) = self.handshakes.get_mut(hid) else { return };
        hs.tries += 1;
        hs.syn_sent = true;
        hs.rto = match cfg.retransmit_mode {
            RetransmitMode::Classic => CLASSIC_RTO,
            RetransmitMode::Adaptive if hs.tries <= 2 => r.handshake.rto(&cfg),
            // Backoff starts with the third try: by default the client moves
            // to another real after two, so a lost SYN and a lost SYN-ACK in
            // a row cost two RTOs, not three.
            RetransmitMode::Adaptive => (hs.rto * 2).min(MAX_RTO),
        };
        if hs.tries == 1 {
            hs.first_sent = now;
        } else {
            r.handshake.syn_retransmits += 1;
            self.stats.syn_retransmits += 1;
        }
        hs.deadline = now + hs.rto;
        let (deadline, offer, real_isn, real_tsval) = (hs.deadline, hs.offer, hs.real_isn, hs.real_tsval);
        self.handshakes.set_timer(hid, deadline);
        let syn = Segment {
            src: laddr,
            dst: real,
            seq: real_isn,
            ack: None,
            flags: tcp::Flags::SYN,
            window: u16::MAX,
            mss: Some(mss_clamp.map_or(offer.mss, |c| c.min(offer.mss)).saturating_sub(toa_room).max(64)),
            wscale: offer.wscale,
            sack_permitted: offer.sack,
            timestamps: offer.timestamps.then_some((real_tsval.0, 0)),
            ttl: cfg.ttl,
        };
        ctx.queue_segment(&syn, Side::Real);
    }

    /// Every real failed: reset the client and forget the handshake; false
    /// if it was already gone.
    fn give_up(&mut self, ctx: &mut Ctx<'_>, hid: HandshakeId, old: &Conn) -> bool {
        let Some(hs) = self.handshakes.get(hid) else { return false };
        let rst =
            Segment::rst(old.vip, old.client, hs.cookie + 1, Some(hs.client_isn + 1), ctx.cfg.synproxy.ttl);
        ctx.queue_segment(&rst, Side::Client);
        self.stats.gave_up += 1;
        self.forget(hid, ctx.store);
        true
    }

    /// Open the real-side handshake of a client whose cookie checked out,
    /// toward real `real_index` first; its connection follows in [`Self::opened`].
    fn begin(&mut self, mut opening: OpenHandshake, real_index: u32) -> Option<HandshakeId> {
        opening.tried[0] = real_index;
        opening.n_tried = 1;
        self.handshakes.insert(opening)
    }

    /// The handshake's connection is in the table as `id`; false if the handshake is gone.
    fn opened(&mut self, hid: HandshakeId, id: ConnId) -> bool {
        let Some(hs) = self.handshakes.get_mut(hid) else { return false };
        hs.conn = id;
        self.stats.cookies_accepted += 1;
        true
    }

    /// Handshake `hid`'s connection and the reals it has tried.
    fn tried(&self, hid: HandshakeId) -> Option<(ConnId, [u32; MAX_TRIED], usize)> {
        self.handshakes.get(hid).map(|hs| (hs.conn, hs.tried, hs.n_tried))
    }

    /// Handshake `hid` leaves the real of `old` (counted); with
    /// `reset_old`, that real is reset if it was sent a SYN.
    fn leave_real(&mut self, ctx: &mut Ctx<'_>, hid: HandshakeId, old: &Conn, reset_old: bool) {
        let Some(hs) = self.handshakes.get(hid) else { return };
        if reset_old && hs.syn_sent {
            let rst = Segment::rst(old.laddr, old.real, hs.real_isn + 1, None, ctx.cfg.synproxy.ttl);
            ctx.queue_segment(&rst, Side::Real);
        }
        self.stats.failovers += 1;
    }

    /// Number connection `conn`, moved to another real, from the real-side
    /// ISN and TSval chosen for it; false if handshake `hid` is gone.
    fn renumber(
        &self,
        hid: HandshakeId,
        conn: &mut Conn,
        real_isn: SeqNumber,
        real_tsval: SeqNumber,
    ) -> bool {
        let Some(hs) = self.handshakes.get(hid) else { return false };
        conn.xlat.c2r_seq = real_isn - hs.client_isn;
        if hs.offer.timestamps {
            conn.xlat.c2r_ts = real_tsval - hs.client_tsval;
        }
        true
    }

    /// Handshake `hid` now belongs to connection `id` toward real
    /// `real_index` with `numbers` (ISN, TSval): tries start over, and the
    /// SYN goes out at once unless it is still deferred.
    fn moved(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Instant,
        hid: HandshakeId,
        id: ConnId,
        real_index: u32,
        numbers: (SeqNumber, SeqNumber),
    ) {
        let Some(hs) = self.handshakes.get_mut(hid) else { return };
        hs.conn = id;
        (hs.real_isn, hs.real_tsval) = numbers;
        hs.tries = 0;
        if let Some(slot) = hs.tried.get_mut(hs.n_tried) {
            *slot = real_index;
            hs.n_tried += 1;
        }
        if hs.syn_sent {
            self.send_real_syn(ctx, now, hid);
        }
    }

    /// A packet of connection `lookup.id` while handshake `hid` may be
    /// waiting for the real to show it got the replay.
    fn replay_check(
        &mut self,
        ctx: &mut Ctx<'_>,
        lookup: Lookup,
        hid: HandshakeId,
        seg: &[u8],
    ) -> ReplayCheck {
        if !self.handshakes.get(hid).is_some_and(|h| h.confirming) {
            return ReplayCheck::NotReplaying;
        }
        let f = tcp::Packet::new_unchecked(seg).flags();
        if lookup.side == Side::Real && f.syn() && f.ack() {
            // The real is still in SYN_RECV: the replay was lost.
            self.stats.replays_resent += 1;
            return ReplayCheck::Lost;
        }
        // Any packet from the real shows it got the replay. A client
        // packet, forwarded now, completes the real's handshake anyway
        // (and the client's TCP resends lost data); resending the replay
        // after it would carry an older timestamp than the real has seen.
        self.confirmed(ctx, lookup.id, hid);
        ReplayCheck::Confirmed
    }

    /// A client packet while handshake `hid` toward `ends` (LIP, real) is
    /// open: kept for replay (and the SYN sent if it was deferred), or an
    /// RST that ends it (true: the engine removes the connection; the real
    /// is reset if it was sent a SYN). An error for one to drop.
    fn client_packet(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Instant,
        hid: HandshakeId,
        ends: (Endpoint, Endpoint),
        pkt: &[u8],
        header_len: usize,
    ) -> Result<bool, DropReason> {
        let t = tcp::Packet::new_unchecked(&pkt[header_len..]);
        let f = t.flags();
        if f.rst() {
            let Some(hs) = self.handshakes.get(hid) else { return Err(DropReason::NoConnection) };
            if hs.syn_sent {
                let rst = Segment::rst(ends.0, ends.1, hs.real_isn + 1, None, ctx.cfg.synproxy.ttl);
                ctx.queue_segment(&rst, Side::Real);
            }
            return Ok(true);
        }
        if t.payload().is_empty() && !f.fin() {
            return Err(DropReason::HandshakePending);
        }
        if !self.keep_client_packet(ctx, hid, pkt) {
            return Err(DropReason::HandshakePending);
        }
        if self.handshakes.get(hid).is_some_and(|h| !h.syn_sent) {
            self.send_real_syn(ctx, now, hid);
        }
        Ok(false)
    }

    /// What the real's segment `seg` (toward `laddr`, from `real`) means to
    /// handshake `hid`; an error for one to drop while it stays open.
    fn real_answer(
        &mut self,
        ctx: &mut Ctx<'_>,
        hid: HandshakeId,
        laddr: Endpoint,
        real: Endpoint,
        seg: &[u8],
    ) -> Result<RealAnswer, DropReason> {
        let t = tcp::Packet::new_unchecked(seg);
        let f = t.flags();
        let Some(hs) = self.handshakes.get(hid) else { return Err(DropReason::NoConnection) };
        if hs.syn_sent && f.ack() && !f.syn() && !f.rst() && SeqNumber(t.ack_number()) != hs.real_isn + 1 {
            // The tuple's older connection answered (a TIME_WAIT
            // that refused our SYN, RFC 9293 §3.10.7.4): reset it
            // with <SEQ=SEG.ACK><CTL=RST> and try again at once,
            // rather than wait out the RTO for nothing.
            let rst = Segment::rst(laddr, real, SeqNumber(t.ack_number()), None, ctx.cfg.synproxy.ttl);
            ctx.queue_segment(&rst, Side::Real);
            self.stats.refused += 1;
            return Ok(RealAnswer::Refused);
        }
        if !hs.syn_sent || SeqNumber(t.ack_number()) != hs.real_isn + 1 || !f.ack() {
            return Err(DropReason::HandshakePending);
        }
        if f.rst() {
            return Ok(RealAnswer::Reset);
        }
        if !f.syn() {
            return Err(DropReason::HandshakePending);
        }
        Ok(RealAnswer::SynAck)
    }

    /// The next handshake whose timer ran out, and whether it is confirming
    /// a replay (else its SYN toward the real went unanswered).
    fn pop_due(&mut self, now: Instant) -> Option<(HandshakeId, bool)> {
        while let Some(hid) = self.handshakes.pop_timer(now) {
            let Some(hs) = self.handshakes.get(hid) else { continue };
            if hs.deadline <= now {
                return Some((hid, hs.confirming));
            }
        }
        None
    }

    /// The SYN of handshake `hid` went unanswered: send it again, or say
    /// what the engine does after the last try.
    fn syn_timeout(&mut self, ctx: &mut Ctx<'_>, now: Instant, hid: HandshakeId) -> SynTimeout {
        let Some(hs) = self.handshakes.get(hid) else { return SynTimeout::Done };
        let cfg = &ctx.cfg.synproxy;
        let limit = match cfg.retransmit_mode {
            RetransmitMode::Classic => CLASSIC_TRIES,
            RetransmitMode::Adaptive => cfg.syn_retries.max(1),
        };
        if hs.tries < limit {
            self.send_real_syn(ctx, now, hid);
            SynTimeout::Done
        } else if cfg.retransmit_mode == RetransmitMode::Classic {
            self.stats.gave_up += 1;
            SynTimeout::Expire(hs.conn)
        } else {
            SynTimeout::Failover
        }
    }
}

/// What follows an unanswered SYN toward a real.
enum SynTimeout {
    /// Sent again (or nothing left to do).
    Done,
    /// Classic mode after the last try: the connection goes.
    Expire(ConnId),
    /// Move the client to another real.
    Failover,
}

/// What a real's segment means to an open handshake.
enum RealAnswer {
    /// An older connection on the tuple answered and was reset: try again.
    Refused,
    /// The real refused with an RST: move the client on.
    Reset,
    /// The real's SYN-ACK: splice.
    SynAck,
}

/// A packet's bearing on a replay the real has not yet shown it got.
enum ReplayCheck {
    /// No replay waits: the handshake is still open.
    NotReplaying,
    /// The real's SYN-ACK again: the replay was lost.
    Lost,
    /// The replay is confirmed; forward the packet as usual.
    Confirmed,
}
