//! The two handshakes: the client's SYN answered with a cookie, its ACK
//! checked, and the SYN toward a real sent, retransmitted on the real's RTO
//! and moved to another real when it goes unanswered.

use rvs_wire::tcp;
use rvs_wire::tcp_options::Summary;
use rvs_wire::tcp_seq::SeqNumber;

use super::{CLASSIC_RTO, CLASSIC_TRIES, MAX_TRIED, OpenHandshake, SynAckTemplate, SynproxyState, cookie};
use crate::addr::{Endpoint, FlowKey};
use crate::client_addr;
use crate::config::RetransmitMode;
use crate::conn::{Conn, ConnId, HandshakeId, Lookup};
use crate::ctx::Ctx;
use crate::drop::DropReason;
use crate::emit::Segment;
use crate::hash::Secrets;
use crate::real::MAX_RTO;
use crate::tcp_state::Side;
use crate::time::Instant;
use cookie::Offer;

fn ms_clock(now: Instant) -> u32 {
    (now.as_nanos() / 1_000_000) as u32
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
        let Some(service) = ctx.services.get(svc as usize) else { return };
        let t = SynAckTemplate::new(&ctx.cfg.synproxy, &self.jar, service, key.src.addr);
        let offer = Offer {
            mss: opts.mss.unwrap_or(cookie::default_mss(key)).min(t.mss_max),
            wscale: opts.wscale,
            sack: opts.sack_permitted && t.sack,
            timestamps: opts.timestamps.is_some() && t.timestamps,
        };
        let (cookie, ts_bits) = self.jar.make(ctx.conns.secrets(), now, key, client_isn.0, offer);
        let tsval = (ms_clock(now) & !((1 << cookie::TS_OPT_BITS) - 1)) | ts_bits;
        let synack = Segment {
            src: key.dst,
            dst: key.src,
            seq: SeqNumber(cookie),
            ack: Some(client_isn + 1),
            flags: tcp::Flags::SYN,
            window: u16::MAX,
            mss: Some(t.mss),
            wscale: offer.wscale.map(|_| t.wscale),
            sack_permitted: offer.sack,
            timestamps: offer.timestamps.then(|| (tsval, opts.timestamps.map_or(0, |t| t.0))),
            ttl: t.ttl,
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
    pub(crate) fn keep_client_packet(&mut self, ctx: &mut Ctx<'_>, hid: HandshakeId, pkt: &[u8]) -> bool {
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
    pub(crate) fn send_real_syn(&mut self, ctx: &mut Ctx<'_>, now: Instant, hid: HandshakeId) {
        let cfg = ctx.cfg.synproxy;
        let Some(hs) = self.handshakes.get(hid) else { return };
        let Some(conn) = ctx.conns.get(hs.conn) else { return };
        let (laddr, real, svc, real_index) = (conn.laddr, conn.real, conn.service, conn.real_index);
        let client = conn.client.addr;
        let Some(service) = ctx.services.get_mut(svc as usize) else { return };
        // Room for TOA in the client's segments, and for the larger header
        // where they are translated from IPv4 to IPv6.
        let less = client_addr::toa_room(&service.config, client) + crate::xlat::mss_room(client, real.addr);
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
            mss: Some(mss_clamp.map_or(offer.mss, |c| c.min(offer.mss)).saturating_sub(less).max(64)),
            wscale: offer.wscale,
            sack_permitted: offer.sack,
            timestamps: offer.timestamps.then_some((real_tsval.0, 0)),
            ttl: cfg.ttl,
        };
        ctx.queue_segment(&syn, Side::Real);
    }

    /// Every real failed: reset the client and forget the handshake; false
    /// if it was already gone.
    pub(crate) fn give_up(&mut self, ctx: &mut Ctx<'_>, hid: HandshakeId, old: &Conn) -> bool {
        let Some(hs) = self.handshakes.get(hid) else { return false };
        let rst =
            Segment::rst(old.vip, old.client, hs.cookie + 1, Some(hs.client_isn + 1), ctx.cfg.synproxy.ttl);
        ctx.queue_segment(&rst, Side::Client);
        self.stats.gave_up += 1;
        self.forget(hid, ctx.store);
        true
    }

    /// Open the real-side handshake of the client whose ACK `seg` returned
    /// a cookie for `offer`, toward real `real_index` first with `numbers`
    /// (ISN, TSval); its connection follows in [`Self::opened`].
    pub(crate) fn begin(
        &mut self,
        seg: &[u8],
        offer: Offer,
        real_index: u32,
        numbers: (SeqNumber, SeqNumber),
    ) -> Option<HandshakeId> {
        let t = tcp::Packet::new_unchecked(seg);
        let timestamps = Summary::of_segment(seg).timestamps;
        let mut opening = OpenHandshake {
            client_isn: SeqNumber(t.seq_number()) - 1,
            cookie: SeqNumber(t.ack_number()) - 1,
            offer,
            client_tsval: SeqNumber(timestamps.map_or(0, |t| t.0)),
            client_echo: SeqNumber(timestamps.map_or(0, |t| t.1)),
            real_isn: numbers.0,
            real_tsval: numbers.1,
            ..OpenHandshake::new()
        };
        opening.tried[0] = real_index;
        opening.n_tried = 1;
        self.handshakes.insert(opening)
    }

    /// The handshake's connection is in the table as `id`; false if the handshake is gone.
    pub(crate) fn opened(&mut self, hid: HandshakeId, id: ConnId) -> bool {
        let Some(hs) = self.handshakes.get_mut(hid) else { return false };
        hs.conn = id;
        self.stats.cookies_accepted += 1;
        true
    }

    /// Handshake `hid`'s connection and the reals it has tried.
    pub(crate) fn tried(&self, hid: HandshakeId) -> Option<(ConnId, [u32; MAX_TRIED], usize)> {
        self.handshakes.get(hid).map(|hs| (hs.conn, hs.tried, hs.n_tried))
    }

    /// Handshake `hid` leaves the real of `old` (counted); with
    /// `reset_old`, that real is reset if it was sent a SYN.
    pub(crate) fn leave_real(&mut self, ctx: &mut Ctx<'_>, hid: HandshakeId, old: &Conn, reset_old: bool) {
        let Some(hs) = self.handshakes.get(hid) else { return };
        if reset_old && hs.syn_sent {
            let rst = Segment::rst(old.laddr, old.real, hs.real_isn + 1, None, ctx.cfg.synproxy.ttl);
            ctx.queue_segment(&rst, Side::Real);
        }
        self.stats.failovers += 1;
    }

    /// Number connection `conn`, moved to another real, from the real-side
    /// ISN and TSval chosen for it; false if handshake `hid` is gone.
    pub(crate) fn renumber(
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
    pub(crate) fn moved(
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
    pub(crate) fn replay_check(
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
    pub(crate) fn client_packet(
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
    pub(crate) fn real_answer(
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
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(HandshakeId, bool)> {
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
    pub(crate) fn syn_timeout(&mut self, ctx: &mut Ctx<'_>, now: Instant, hid: HandshakeId) -> SynTimeout {
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
pub(crate) enum SynTimeout {
    /// Sent again (or nothing left to do).
    Done,
    /// Classic mode after the last try: the connection goes.
    Expire(ConnId),
    /// Move the client to another real.
    Failover,
}

/// What a real's segment means to an open handshake.
pub(crate) enum RealAnswer {
    /// An older connection on the tuple answered and was reset: try again.
    Refused,
    /// The real refused with an RST: move the client on.
    Reset,
    /// The real's SYN-ACK: splice.
    SynAck,
}

/// A packet's bearing on a replay the real has not yet shown it got.
pub(crate) enum ReplayCheck {
    /// No replay waits: the handshake is still open.
    NotReplaying,
    /// The real's SYN-ACK again: the replay was lost.
    Lost,
    /// The replay is confirmed; forward the packet as usual.
    Confirmed,
}
