//! The real answered: the two handshakes are joined (the sequence and
//! timestamp offsets learnt), the kept client packets replayed until the real
//! shows it has them, and what a spliced connection still needs of SYNProxy
//! afterwards (ACKs the engine owes the real, the ack-storm guard).

use rvs_wire::tcp;
use rvs_wire::tcp_options::Summary;
use rvs_wire::tcp_seq::SeqNumber;

use super::{MAX_RTO, REPLAY_TRIES, SynproxyState, ToReal};
use crate::addr::Proto;
use crate::conn::{Conn, ConnId, Handshake, HandshakeId};
use crate::ctx::Ctx;
use crate::drop::DropReason;
use crate::emit::Segment;
use crate::packet::{IpInfo, Spliced, parse_l4};
use crate::service::{handshake_rto, idle_timeout, real_mut};
use crate::tcp_state::{Side, TcpState};
use crate::time::Instant;

impl SynproxyState {
    /// The real's SYN-ACK: learn its numbers and forward normally from now
    /// on. The engine then starts the connection's client-address delivery
    /// and calls [`SynproxyState::replay_spliced`].
    pub(crate) fn splice(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Instant,
        id: ConnId,
        hid: HandshakeId,
        seg: &[u8],
    ) -> Option<Spliced> {
        let opts = Summary::of_segment(seg);
        let real_isn = SeqNumber(tcp::Packet::new_unchecked(seg).seq_number());
        let hs = self.handshakes.get(hid)?;
        let conn = ctx.conns.get_mut(id)?;
        conn.xlat.r2c_seq = hs.cookie - real_isn;
        if let (true, Some((tsval, _))) = (hs.offer.timestamps, opts.timestamps) {
            // The client saw our SYN-ACK's TSval; it echoes it in its ACK (TSecr).
            conn.xlat.r2c_ts = hs.client_echo - SeqNumber(tsval);
        }
        conn.real_wscale = if hs.offer.wscale.is_some() { opts.wscale.unwrap_or(0) } else { 0 };
        // Where each side's numbers stand once the handshakes are joined.
        conn.progress.sent(Side::Client, hs.real_isn + 1, false);
        conn.progress.sent(Side::Real, hs.cookie + 1, false);
        // `handshake` stays: the replay is confirmed (and the handshake
        // forgotten) when the real's first packet arrives.
        let (svc, real_index) = (conn.service, conn.real_index);
        ctx.conns.set_state(id, TcpState::Established, real_mut(ctx.services, svc, real_index));
        let idle = idle_timeout(ctx.services, &ctx.cfg.timeouts, svc, Proto::Tcp, TcpState::Established);
        ctx.conns.set_expiry(id, now + idle);
        let service = ctx.services.get_mut(svc as usize)?;
        if hs.offer.wscale.is_some() {
            service.synproxy_wscale = Some(opts.wscale.unwrap_or(0));
        }
        if let Some(r) = service.reals.get_mut(real_index as usize) {
            r.passive.syn_answered += 1;
            // Karn: only a handshake answered on its first try is a clean sample.
            if hs.tries == 1 {
                r.handshake.sample(now.saturating_since(hs.first_sent));
            }
        }
        self.stats.spliced += 1;
        let window = ack_window(hs.offer.wscale.unwrap_or(0));
        Some(Spliced { conn: id, handshake: hid, ack: real_isn + 1, window })
    }

    /// Replay the kept client packets of a spliced connection (the first of
    /// which acknowledges the real's SYN-ACK), after the engine started its
    /// client-address delivery.
    pub(crate) fn replay_spliced(&mut self, ctx: &mut Ctx<'_>, now: Instant, s: Spliced) -> ToReal {
        let Spliced { conn: id, handshake: hid, ack, window } = s;
        let Some(hs) = self.handshakes.get(hid) else { return ToReal::new(id) };
        let our_isn = hs.real_isn;
        let Some(conn) = ctx.conns.get(id) else { return ToReal::new(id) };
        let (svc, real_index, laddr, real) = (conn.service, conn.real_index, conn.laddr, conn.real);
        self.note_kept(ctx, hid, id);
        let replayed = self.replay(ctx, hid, id);
        if replayed.slots().is_empty() {
            // Nothing kept (store was full): acknowledge the SYN-ACK ourselves.
            let mut seg = Segment::ack(laddr, real, our_isn + 1, ack, ctx.cfg.synproxy.ttl);
            seg.window = window;
            let built = build_to_real(ctx, id, &seg);
            self.confirmed(ctx, id, hid);
            return built;
        }
        // Until the real shows it got the replay, it may still sit in
        // SYN_RECV waiting for our ACK: keep the packets and resend them on
        // the RTO rather than wait for the real's own SYN-ACK timer.
        let rto = handshake_rto(ctx.services, svc, real_index, &ctx.cfg.synproxy);
        if let Some(h) = self.handshakes.get_mut(hid) {
            h.confirming = true;
            h.tries = 1;
            h.rto = rto;
            h.deadline = now + rto;
            self.handshakes.set_timer(hid, now + rto);
        }
        replayed
    }

    /// Note the kept client packets on connection `id` as the packet path
    /// notes those it forwards (how far the client's bytes go, its FIN, its
    /// acknowledgement, the state they lead to), once, as they are first
    /// replayed. A client that closed while the real's handshake was open
    /// (connect, then FIN) would otherwise stay open in the entry: the close
    /// would never end in TIME_WAIT, and the client's port, coming back,
    /// would find the old entry and its new SYN go nowhere.
    fn note_kept(&self, ctx: &mut Ctx<'_>, hid: HandshakeId, id: ConnId) {
        let Some(hs) = self.handshakes.get(hid) else { return };
        for &slot in &hs.stored[..hs.n_stored] {
            let pkt = ctx.store.packet_mut(slot);
            let Ok(ip) = IpInfo::parse(pkt) else { continue };
            let Ok(l4) = parse_l4(Proto::Tcp, &ip, &pkt[ip.header_len..]) else { continue };
            let Some(conn) = ctx.conns.get_mut(id) else { return };
            let (old, new) = (conn.state, conn.note_segment(Side::Client, &l4));
            if new != old {
                let (svc, real_index) = (conn.service, conn.real_index);
                ctx.conns.set_state(id, new, real_mut(ctx.services, svc, real_index));
            }
        }
    }

    /// Translated copies of the kept packets toward the real, to be queued.
    pub(crate) fn replay(&mut self, ctx: &mut Ctx<'_>, hid: HandshakeId, id: ConnId) -> ToReal {
        let mut built = ToReal::new(id);
        let Some(conn) = ctx.conns.get(id) else { return built };
        let (laddr, real) = (conn.laddr, conn.real);
        let xlat = conn.xlat.for_packet_from(Side::Client);
        let Some(hs) = self.handshakes.get(hid) else { return built };
        for &slot in &hs.stored[..hs.n_stored] {
            let Some(copy) = ctx.store.duplicate(slot) else {
                ctx.drops.add(DropReason::TxQueueFull);
                continue;
            };
            let pkt = ctx.store.packet_mut(copy);
            if let Ok(ip) = IpInfo::parse(pkt) {
                let _ = crate::packet::rewrite(pkt, &ip, laddr, real, xlat, None, ctx.cfg.decrement_ttl);
                built.push(copy);
            } else {
                ctx.store.release(copy);
            }
        }
        built
    }

    /// The replay's RTO passed with no sign of the real: resend, or after
    /// [`REPLAY_TRIES`] leave recovery to the endpoints' TCP.
    pub(crate) fn replay_timeout(&mut self, ctx: &mut Ctx<'_>, now: Instant, hid: HandshakeId) -> ToReal {
        let Some(hs) = self.handshakes.get(hid) else { return ToReal::new(ConnId::NONE) };
        let (id, tries) = (hs.conn, hs.tries);
        let replayed = if tries >= REPLAY_TRIES { ToReal::new(id) } else { self.replay(ctx, hid, id) };
        if replayed.slots().is_empty() {
            self.confirmed(ctx, id, hid);
            return replayed;
        }
        self.stats.replays_resent += 1;
        if let Some(h) = self.handshakes.get_mut(hid) {
            h.tries += 1;
            h.rto = (h.rto * 2).min(MAX_RTO);
            h.deadline = now + h.rto;
            let deadline = h.deadline;
            self.handshakes.set_timer(hid, deadline);
        }
        replayed
    }

    /// The real has the replay: drop the kept packets, forward as usual.
    pub(crate) fn confirmed(&mut self, ctx: &mut Ctx<'_>, id: ConnId, hid: HandshakeId) {
        if let Some(conn) = ctx.conns.get_mut(id) {
            conn.handshake = Handshake::Spliced { storm_key: 0, storm_count: 0 };
        }
        self.forget(hid, ctx.store);
    }

    /// A SYN-ACK from the real of a spliced connection (our ACK of its first
    /// one was lost): acknowledge it again ourselves (the engine resent the
    /// PROXY header first).
    pub(crate) fn reack(&self, ctx: &mut Ctx<'_>, id: ConnId, conn: &Conn, seg: &[u8]) -> ToReal {
        let t = tcp::Packet::new_unchecked(seg);
        let mut ack = Segment::ack(
            conn.laddr,
            conn.real,
            SeqNumber(t.ack_number()),
            SeqNumber(t.seq_number()) + 1,
            ctx.cfg.synproxy.ttl,
        );
        ack.window = ack_window(conn.peer_wscale);
        build_to_real(ctx, id, &ack)
    }

    /// Whether a real→client segment of a spliced connection is one more
    /// identical copy in an ack storm (to be dropped).
    pub(crate) fn ack_storm(&self, ctx: &mut Ctx<'_>, id: ConnId, seg: &[u8]) -> bool {
        let threshold = ctx.cfg.synproxy.ack_storm_threshold;
        let t = tcp::Packet::new_unchecked(seg);
        let Some(Handshake::Spliced { storm_key, storm_count }) =
            ctx.conns.get_mut(id).map(|c| &mut c.handshake)
        else {
            return false;
        };
        let key = t.seq_number() ^ t.ack_number().rotate_left(13) ^ u32::from(t.window_len()).rotate_left(7);
        let bare = t.payload().is_empty() && !t.flags().syn() && !t.flags().fin() && !t.flags().rst();
        if bare && *storm_key == key && !Summary::of_segment(seg).sack {
            *storm_count = storm_count.saturating_add(1);
            return threshold > 0 && u32::from(*storm_count) >= threshold;
        }
        *storm_key = key;
        *storm_count = 0;
        false
    }
}

/// Build a segment toward a connection's real into the store, not yet queued.
fn build_to_real(ctx: &mut Ctx<'_>, id: ConnId, seg: &Segment) -> ToReal {
    let mut built = ToReal::new(id);
    let Some(slot) = ctx.store.alloc() else {
        ctx.drops.add(DropReason::TxQueueFull);
        return built;
    };
    let len = seg.emit(ctx.store.slot_mut(slot));
    ctx.store.set_len(slot, len);
    built.push(slot);
    built
}

/// The window of an ACK the engine builds for a client toward a real: 64 KiB
/// in the client's scale, which the client's next segment corrects.
fn ack_window(client_wscale: u8) -> u16 {
    (u32::from(u16::MAX) >> client_wscale.min(14)).max(1) as u16
}
