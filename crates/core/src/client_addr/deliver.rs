//! Delivering the client's address along a connection's packets: the PROXY
//! header sent, resent and its acknowledgements shown to the client as
//! covering nothing of it; TOA inserted into client segments toward the real.

use core::time::Duration;

use rvs_wire::checksum;
use rvs_wire::tcp::{self, TcpOption};
use rvs_wire::tcp_options;
use rvs_wire::tcp_seq::SeqNumber;

use super::{ClientAddrState, Delivery, MAX_RTO, MAX_TIMER_RESENDS, proxy_protocol, toa};
use crate::addr::Endpoint;
use crate::config::{ProxyProtocol, ServiceConfig};
use crate::conn::{Conn, ConnId, DeliveryId, Lookup};
use crate::ctx::Ctx;
use crate::drop::DropReason;
use crate::emit::Segment;
use crate::emit::store::PacketStore;
use crate::packet::{L4Info, Outcome};
use crate::tcp_state::Side;
use crate::time::Instant;

impl ClientAddrState {
    /// Start delivering the client's address for a new connection of a
    /// service configured as `config` whose client chose `client_isn`; the
    /// index for `Conn::delivery` (the caller attaches the connection once it has one).
    pub(crate) fn start(
        &mut self,
        config: &ServiceConfig,
        client: Endpoint,
        vip: Endpoint,
        client_isn: SeqNumber,
    ) -> Option<DeliveryId> {
        let (mut version, toa) = (config.proxy_protocol, config.toa);
        if client.addr.is_ipv4() != vip.addr.is_ipv4() {
            // A header names both ends in one family. The client and the VIP
            // it reached always share one (a translation is on the real
            // side), so this is a caller bug, not NAT64.
            version = ProxyProtocol::Disabled;
        }
        if version == ProxyProtocol::Disabled && !toa {
            return None;
        }
        // A full table (2^24 under way) only means no delivery for this connection.
        self.entries.insert(Delivery {
            conn: ConnId::NONE,
            version,
            stream_start: client_isn + 1,
            client_end: client_isn + 1,
            header_len: 0,
            acked: 0,
            sent: false,
            timer_resends: 0,
            toa,
            ack: SeqNumber(0),
            window: u16::MAX,
            deadline: Instant::ZERO,
            rto: Duration::ZERO,
        })
    }

    /// Tell a delivery which connection it belongs to (after insertion or a failover).
    pub(crate) fn attach(&mut self, index: Option<DeliveryId>, id: ConnId) {
        if let Some(d) = self.live(index) {
            d.conn = id;
        }
    }

    /// The acknowledgement and window a built header carries, when no
    /// client segment told them yet (SYNProxy's splice).
    pub(crate) fn set_acks(&mut self, index: Option<DeliveryId>, ack: SeqNumber, window: u16) {
        if let Some(d) = self.live(index) {
            d.ack = ack;
            d.window = window;
        }
    }

    /// Insert TOA for `client` into the packet in `slot`; counts either way.
    fn insert_toa(&mut self, store: &mut PacketStore, slot: u32, client: Endpoint) -> bool {
        let len = store.packet_mut(slot).len();
        match toa::insert(store.slot_mut(slot), len, client) {
            Ok(n) => {
                store.set_len(slot, n);
                self.stats.toa_inserted += 1;
                true
            }
            Err(_) => {
                self.stats.toa_no_room += 1;
                false
            }
        }
    }

    /// Copy a rewritten client→real packet into a slot with TOA for `client`
    /// inserted and queue it; if the option cannot go in, forward it as it is (counted).
    fn forward_with_toa(&mut self, store: &mut PacketStore, client: Endpoint, pkt: &[u8]) -> Outcome {
        let Some(slot) = store.store(pkt) else {
            self.stats.toa_no_room += 1;
            return Outcome::Forward(Side::Real);
        };
        if self.insert_toa(store, slot, client) {
            store.queue(slot, Side::Real);
            Outcome::Absorbed
        } else {
            store.release(slot);
            Outcome::Forward(Side::Real)
        }
    }

    /// TOA for a segment the engine built toward the real of `conn`
    /// (SYNProxy's ACKs, replays, the PROXY header), if its delivery still carries it.
    pub(crate) fn toa_for_built(&mut self, store: &mut PacketStore, conn: Option<&Conn>, slot: u32) {
        let Some(conn) = conn else { return };
        if self.get(conn.delivery).is_some_and(|d| d.toa) {
            self.insert_toa(store, slot, conn.client);
        }
    }

    /// Take in a segment of connection `lookup.id` (delivery `index`) before
    /// NAT rewrites it (`seg` from its TCP header on): the client's acknowledgement and window, the real's
    /// acknowledgement of the header, and whether the header goes (again).
    /// `None` if the delivery is gone; otherwise the client's first byte,
    /// if the segment's acknowledgements must be clamped to it after NAT.
    pub(crate) fn on_segment(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Instant,
        lookup: Lookup,
        index: DeliveryId,
        l4: &L4Info,
        seg: &[u8],
    ) -> Option<Option<SeqNumber>> {
        let conn = ctx.conns.get(lookup.id)?;
        let (c2r, r2c, synproxy) = (conn.xlat.c2r_seq, conn.xlat.r2c_seq, conn.handshake.is_synproxy());
        let d = self.live(Some(index))?;
        let pending = d.sent && d.acked < d.header_len;
        let mut clamp_to = None;
        let mut start = false;
        let resend;
        match lookup.side {
            Side::Client => {
                if l4.flags.ack && !l4.flags.rst {
                    d.ack = SeqNumber(l4.ack) - r2c;
                    d.window = tcp::Packet::new_unchecked(seg).window_len();
                }
                // The client's ACK of the real's SYN-ACK: the real's
                // handshake completes, the header goes first. (SYNProxy
                // sends it at the splice instead.)
                start = d.version != ProxyProtocol::Disabled
                    && !d.sent
                    && !synproxy
                    && l4.flags.ack
                    && !l4.flags.syn
                    && !l4.flags.rst;
                // The client resends its first segment: the header was
                // likely lost with it.
                let (seq, end) = (SeqNumber(l4.seq), SeqNumber(l4.seq) + l4.seg_len);
                resend = pending && seq == d.stream_start && l4.seg_len > 0 && end <= d.client_end;
                if end > d.client_end {
                    d.client_end = end;
                }
            }
            Side::Real => {
                if !l4.flags.syn {
                    d.toa = false;
                }
                if pending && l4.flags.ack {
                    let (ack, header_start) =
                        (SeqNumber(l4.ack), d.stream_start + c2r - u32::from(d.header_len));
                    let covered = ack - header_start;
                    if ack >= header_start {
                        d.acked = d.acked.max(covered.min(u32::from(d.header_len)) as u8);
                    }
                    if covered < u32::from(d.header_len) {
                        // The client must not see an acknowledgement of
                        // bytes before its own first one.
                        clamp_to = Some(d.stream_start);
                    }
                }
                // A SYN-ACK again: the real still waits in SYN_RECV, the header was lost.
                resend = pending && l4.flags.syn;
                let header_done = d.version == ProxyProtocol::Disabled || (d.sent && d.acked >= d.header_len);
                if header_done && !d.toa {
                    self.end_delivery(ctx, lookup.id, index);
                }
            }
        }
        if start {
            self.start_header(ctx, now, lookup.id, Some(index));
        } else if resend {
            self.resend_header(ctx, lookup.id, Some(index));
        }
        Some(clamp_to)
    }

    /// After NAT sent a client segment of connection `id` toward the real:
    /// TOA goes in if the delivery still carries it (`None`: forward as it is).
    pub(crate) fn toa_after_forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        index: DeliveryId,
        pkt: &[u8],
    ) -> Option<Outcome> {
        if !self.get(Some(index)).is_some_and(|d| d.toa) {
            return None;
        }
        let Some(client) = ctx.conns.get(id).map(|c| c.client) else {
            return Some(Outcome::Forward(Side::Real));
        };
        Some(self.forward_with_toa(ctx.store, client, pkt))
    }

    /// The PROXY header of connection `id` (delivery `index`), written into `buf`.
    ///
    /// Written afresh for every send and resend, so a delivery keeps only its length.
    fn header<'b>(
        &self,
        ctx: &Ctx<'_>,
        id: ConnId,
        index: DeliveryId,
        buf: &'b mut [u8; proxy_protocol::MAX_LEN],
    ) -> Option<&'b [u8]> {
        let d = self.get(Some(index))?;
        let conn = ctx.conns.get(id)?;
        let len = proxy_protocol::write(d.version, conn.client, conn.vip, buf)?;
        Some(&buf[..len])
    }

    /// The real's handshake is complete: move the client's numbers up by
    /// the header's length, send the header and arm its resend timer.
    pub(crate) fn start_header(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Instant,
        id: ConnId,
        index: Option<DeliveryId>,
    ) {
        let Some(index) = index.filter(|&i| self.get(Some(i)).is_some_and(|d| !d.sent)) else {
            return;
        };
        let mut buf = [0u8; proxy_protocol::MAX_LEN];
        let Some(header) = self.header(ctx, id, index, &mut buf) else { return };
        let len = header.len();
        let Some(conn) = ctx.conns.get_mut(id) else { return };
        conn.xlat.c2r_seq = conn.xlat.c2r_seq.wrapping_add(len as u32);
        let rto =
            crate::service::handshake_rto(ctx.services, conn.service, conn.real_index, &ctx.cfg.synproxy);
        let Some(d) = self.live(Some(index)) else { return };
        d.sent = true;
        d.header_len = len as u8;
        d.rto = rto;
        d.deadline = now + rto;
        self.entries.set_timer(index, now + rto);
        self.stats.proxy_headers += 1;
        self.send_header(ctx, id, index, header);
    }

    /// Send the header again (from its first unacknowledged byte), if it is still due.
    pub(crate) fn resend_header(&mut self, ctx: &mut Ctx<'_>, id: ConnId, index: Option<DeliveryId>) {
        let Some(index) =
            index.filter(|&i| self.get(Some(i)).is_some_and(|d| d.sent && d.acked < d.header_len))
        else {
            return;
        };
        let mut buf = [0u8; proxy_protocol::MAX_LEN];
        let Some(header) = self.header(ctx, id, index, &mut buf) else { return };
        self.stats.proxy_resent += 1;
        self.send_header(ctx, id, index, header);
    }

    /// Build and queue the header's unacknowledged rest toward the real.
    fn send_header(&mut self, ctx: &mut Ctx<'_>, id: ConnId, index: DeliveryId, header: &[u8]) {
        let Some(conn) = ctx.conns.get(id) else { return };
        let (laddr, real, c2r) = (conn.laddr, conn.real, conn.xlat.c2r_seq);
        let Some(d) = self.get(Some(index)) else { return };
        let len = header.len();
        let from = usize::from(d.acked).min(len);
        let header_start = d.stream_start + c2r - len as u32;
        let mut seg = Segment::ack(laddr, real, header_start + from as u32, d.ack, ctx.cfg.synproxy.ttl);
        seg.flags = tcp::Flags::PSH;
        seg.window = d.window;
        let Some(slot) = ctx.store.alloc() else {
            ctx.drops.add(DropReason::TxQueueFull);
            return;
        };
        let n = seg.emit_with_payload(ctx.store.slot_mut(slot), &header[from..len]);
        ctx.store.set_len(slot, n);
        self.toa_for_built(ctx.store, ctx.conns.get(id), slot);
        ctx.store.queue(slot, Side::Real);
    }

    /// The delivery is complete: forget it.
    fn end_delivery(&mut self, ctx: &mut Ctx<'_>, id: ConnId, index: DeliveryId) {
        self.close(Some(index));
        if let Some(conn) = ctx.conns.get_mut(id) {
            conn.delivery = None;
        }
    }

    /// Resend headers whose timer ran out.
    pub(crate) fn handle_timeout(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        while let Some(index) = self.entries.pop_timer(now) {
            let Some(d) = self.entries.get_mut(index) else { continue };
            if d.acked >= d.header_len {
                continue;
            }
            if d.timer_resends >= MAX_TIMER_RESENDS {
                // The connection keeps its delivery: a client resend still
                // brings the header along, and the entry goes with the connection.
                self.stats.proxy_gave_up += 1;
                continue;
            }
            d.timer_resends += 1;
            d.rto = (d.rto * 2).min(MAX_RTO);
            d.deadline = now + d.rto;
            let (id, deadline) = (d.conn, d.deadline);
            self.entries.set_timer(index, deadline);
            self.resend_header(ctx, id, Some(index));
        }
    }
}

/// Show a real→client segment as acknowledging nothing past `start`, the
/// client's first byte: its ACK, and SACK edges, that fall in the header.
pub(crate) fn clamp_acks(seg: &mut [u8], start: SeqNumber) {
    let mut t = tcp::Packet::new_unchecked(&mut *seg);
    let mut sum = t.checksum();
    let before = |x: u32| SeqNumber(x) < start;
    let ack = t.ack_number();
    if before(ack) {
        sum = checksum::update32(sum, ack, start.0);
        t.set_ack_number(start.0);
    }
    if t.header_len() > 20 {
        sum = tcp_options::rewrite(t.options_mut(), sum, |w, at, opt| {
            let TcpOption::SackRange(blocks) = opt else { return };
            for (i, &(left, right)) in blocks.as_slice().iter().enumerate() {
                for (k, edge) in [left, right].into_iter().enumerate() {
                    if before(edge) {
                        w.put(at + 2 + 8 * i + 4 * k, &start.0.to_be_bytes());
                    }
                }
            }
        });
    }
    t.set_checksum(sum);
}
