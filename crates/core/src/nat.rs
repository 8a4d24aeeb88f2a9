//! The packet path: classify, look up or create the connection, forward.
//!
//! FullNAT rewrites both addresses and both ports of every packet:
//! client → VIP:vport becomes LIP:lport → real:rport, and the answer
//! real:rport → LIP:lport becomes VIP:vport → client. TCP sequence numbers
//! toward the real are offset by a per-connection value (the real sees an
//! initial sequence number the load balancer chose, RFC 6528 style, so a
//! reused (LIP, lport, real) tuple always sees a later ISN), and every number
//! that names a sequence number is translated with it: ACKs and SACK blocks
//! back toward the client. All checksums are updated incrementally
//! (RFC 1624), pseudo-header included.

use std::net::IpAddr;

use rvs_wire::tcp_options::Summary;
use rvs_wire::tcp_seq::SeqNumber;

use crate::addr::{Endpoint, FlowKey, Proto};
use crate::client_addr::{ClientAddrState, clamp_acks};
use crate::conn::{DeliveryId, Handshake, Lookup, Placement, Translation};
use crate::ctx::Ctx;
use crate::drop::DropReason;
use crate::emit::Segment;
use crate::engine::{Engine, Verdict};
use crate::icmp::{self, Untranslated};
use crate::packet::{IpInfo, L4Info, MssRule, Outcome, parse_l4, rescale_window, rewrite};
use crate::passive;
use crate::service::real_mut;
use crate::synproxy::{SynproxyState, ToReal};
use crate::tcp_state::{Side, TcpState};
use crate::time::Instant;

impl Engine {
    /// Process one IP packet (no link-layer header), rewriting it in place.
    ///
    /// The packet may be longer than its IP total length (link padding);
    /// the tail is left alone. Never panics, whatever the bytes.
    pub fn handle(&mut self, now: Instant, pkt: &mut [u8]) -> Verdict {
        self.last_now = self.last_now.max(now);
        match self.process(now, pkt) {
            Ok(Outcome::Forward(to)) => Verdict::Forward { to },
            Ok(Outcome::Translate { to, conn, syn }) => self.send_translated(pkt, conn, syn, to),
            Ok(Outcome::Absorbed | Outcome::Spliced(_) | Outcome::ReplayLost { .. }) => Verdict::Absorbed,
            Err(reason) => {
                self.stats.drops.add(reason);
                Verdict::Drop(reason)
            }
        }
    }

    fn process(&mut self, now: Instant, pkt: &mut [u8]) -> Result<Outcome, DropReason> {
        let ip = IpInfo::parse(pkt)?;
        let pkt = &mut pkt[..ip.total_len];
        if ip.ttl <= 1 && self.cfg.decrement_ttl {
            return Err(DropReason::TtlExpired);
        }
        if icmp::is_icmp(&ip) {
            return self.handle_icmp(&ip, pkt);
        }
        let proto = Proto::from_number(ip.protocol);
        let Some(proto) = proto else {
            return Err(self.classify_miss(ip.dst, false));
        };
        let l4 = parse_l4(proto, &ip, &pkt[ip.header_len..])?;
        let key = FlowKey {
            proto,
            src: Endpoint::new(ip.src, l4.src_port),
            dst: Endpoint::new(ip.dst, l4.dst_port),
        };
        let outcome = self.process_flow(now, &ip, &key, &l4, pkt);
        // A segment of a connection the engine does not know is answered as
        // a host answers one for a closed port, so neither end hangs.
        let unknown_from = match outcome {
            Err(DropReason::NoConnection) => Some(Side::Client),
            Err(DropReason::BadCookie) if self.cfg.synproxy.rst_on_bad_cookie => Some(Side::Client),
            Err(DropReason::StrayReturn) => Some(Side::Real),
            _ => None,
        };
        if let Some(side) = unknown_from {
            self.answer_unknown(now, &key, &pkt[ip.header_len..], side);
        }
        outcome
    }

    /// The packet path past parsing, for a TCP or UDP flow `key`.
    fn process_flow(
        &mut self,
        now: Instant,
        ip: &IpInfo,
        key: &FlowKey,
        l4: &L4Info,
        pkt: &mut [u8],
    ) -> Result<Outcome, DropReason> {
        let (ip, key, l4) = (*ip, *key, *l4);
        let proto = key.proto;
        let hash = self.conns.table().hash(&key);
        let found = match self.conns.table().lookup_hashed(hash, &key) {
            // A new SYN, or with SYNProxy a cookie ACK, on a finished
            // connection starts over (clean reuse). Any other ACK there is a
            // late segment of the old connection (a retransmitted last ACK,
            // a delayed duplicate): it must not end the entry.
            Some(l)
                if l.side == Side::Client
                    && self.conns.get(l.id).is_some_and(|c| c.state.is_reusable())
                    && ((l4.flags.syn && !l4.flags.ack)
                        || (l4.flags.ack
                            && !l4.flags.syn
                            && !l4.flags.rst
                            && self.synproxy_service(&key).is_some()
                            && self
                                .syn
                                .check_cookie(self.conns.secrets(), now, &key, &pkt[ip.header_len..])
                                .is_some())) =>
            {
                self.remove_conn(now, l.id);
                None
            }
            found => found,
        };
        let lookup = match found {
            Some(l) => l,
            None => match self.synproxy_service(&key) {
                Some(svc) => {
                    return match (l4.flags.syn, l4.flags.ack, l4.flags.rst) {
                        (true, false, _) => {
                            let (syn, _, mut ctx) = self.split();
                            syn.answer_syn(&mut ctx, now, &key, svc, &pkt[ip.header_len..]);
                            Ok(Outcome::Absorbed)
                        }
                        (false, true, false) => self.synproxy_ack(now, &ip, &key, svc, pkt),
                        _ => Err(DropReason::NoConnection),
                    };
                }
                None => self.new_conn(now, &key, &l4, &pkt[ip.header_len..])?,
            },
        };
        if proto == Proto::Tcp {
            let marks = |e: &Self| {
                e.conns.get(lookup.id).map_or((Handshake::None, None), |c| (c.handshake, c.delivery))
            };
            let (mut hs, mut delivery) = marks(self);
            if let Handshake::Open(hid) = hs {
                if let Some(done) = self.synproxy_pending(now, lookup, hid, &ip, pkt) {
                    return done.map(|o| self.hand_off(now, o));
                }
                // The packet confirmed a replay, which ended the handshake.
                (hs, delivery) = marks(self);
            }
            if matches!(hs, Handshake::Spliced { .. }) && lookup.side == Side::Real {
                let seg = &pkt[ip.header_len..];
                if l4.flags.syn && l4.flags.ack {
                    let Some(conn) = self.conns.get(lookup.id).cloned() else { return Ok(Outcome::Absorbed) };
                    // The header goes again ahead of SYNProxy's ACK.
                    let (_, deliveries, mut ctx) = self.split();
                    deliveries.resend_header(&mut ctx, lookup.id, conn.delivery);
                    let (syn, _, mut ctx) = self.split();
                    let built = syn.reack(&mut ctx, lookup.id, &conn, seg);
                    self.send_to_real(&built);
                    return Ok(Outcome::Absorbed);
                }
                let (syn, _, mut ctx) = self.split();
                if syn.ack_storm(&mut ctx, lookup.id, seg) {
                    return Err(DropReason::AckStorm);
                }
            }
            if let Some(delivery) = delivery {
                return self.forward_delivering(now, lookup, delivery, &ip, &l4, pkt);
            }
        }
        self.forward(now, lookup, &ip, &l4, pkt)
    }

    /// What SYNProxy hands to client-address delivery. Its PROXY header
    /// leads the client's bytes: it goes (again) before SYNProxy replays
    /// the client packets it kept.
    fn hand_off(&mut self, now: Instant, outcome: Outcome) -> Outcome {
        match outcome {
            Outcome::Spliced(s) => {
                let delivery = self.conns.get(s.conn).and_then(|c| c.delivery);
                let (syn, deliveries, mut ctx) = self.split();
                deliveries.set_acks(delivery, s.ack, s.window);
                deliveries.start_header(&mut ctx, now, s.conn, delivery);
                let built = syn.replay_spliced(&mut ctx, now, s);
                self.send_to_real(&built);
                Outcome::Absorbed
            }
            Outcome::ReplayLost { conn, handshake } => {
                let delivery = self.conns.get(conn).and_then(|c| c.delivery);
                let (syn, deliveries, mut ctx) = self.split();
                deliveries.resend_header(&mut ctx, conn, delivery);
                let built = syn.replay(&mut ctx, handshake, conn);
                self.send_to_real(&built);
                Outcome::Absorbed
            }
            o => o,
        }
    }

    /// Translate an ICMP error about a forwarded flow ([`icmp::translate`]).
    fn handle_icmp(&mut self, ip: &IpInfo, pkt: &mut [u8]) -> Result<Outcome, DropReason> {
        match icmp::translate(&self.conns, self.cfg.decrement_ttl, ip, pkt) {
            Ok(to) => {
                self.stats.icmp_forwarded += 1;
                Ok(Outcome::Forward(to))
            }
            Err(Untranslated::Across(back, to)) => {
                self.send_translated_error(pkt, ip, &back, to)?;
                self.stats.icmp_forwarded += 1;
                Ok(Outcome::Absorbed)
            }
            Err(Untranslated::Drop(reason)) => Err(reason),
            Err(Untranslated::Miss(reason)) => match self.classify_miss(ip.dst, true) {
                DropReason::NotForUs => Err(DropReason::NotForUs),
                _ => Err(reason),
            },
        }
    }

    /// The feature components and the shared parts they may use.
    pub(crate) fn split(&mut self) -> (&mut SynproxyState, &mut ClientAddrState, Ctx<'_>) {
        let ctx = Ctx {
            conns: &mut self.conns,
            services: &mut self.services,
            store: &mut self.store,
            cfg: &self.cfg,
            drops: &mut self.stats.drops,
        };
        (&mut self.syn, &mut self.deliveries, ctx)
    }

    /// Queue segments SYNProxy built toward a connection's real, with TOA
    /// while the connection's delivery carries it.
    pub(crate) fn send_to_real(&mut self, built: &ToReal) {
        for &slot in built.slots() {
            if !self.translate_built(slot, built.conn) {
                continue;
            }
            self.deliveries.toa_for_built(&mut self.store, self.conns.get(built.conn), slot);
            self.store.queue(slot, Side::Real);
        }
    }

    /// Forward a packet of a connection with a delivery under way: the
    /// usual rewrite, plus the header, the acknowledgement clamp and TOA.
    fn forward_delivering(
        &mut self,
        now: Instant,
        lookup: Lookup,
        index: DeliveryId,
        ip: &IpInfo,
        l4: &L4Info,
        pkt: &mut [u8],
    ) -> Result<Outcome, DropReason> {
        if self.conns.get(lookup.id).is_none() {
            return Err(DropReason::NoConnection);
        }
        let (_, deliveries, mut ctx) = self.split();
        let clamp_to = deliveries.on_segment(&mut ctx, now, lookup, index, l4, &pkt[ip.header_len..]);
        let out = self.forward(now, lookup, ip, l4, pkt)?;
        let Some(clamp_to) = clamp_to else { return Ok(out) };
        if let Some(start) = clamp_to {
            clamp_acks(&mut pkt[ip.header_len..], start);
        }
        // A translated packet gets its TOA once it is in its new family.
        if out == Outcome::Forward(Side::Real) && !l4.flags.syn {
            let (_, deliveries, mut ctx) = self.split();
            if let Some(out) = deliveries.toa_after_forward(&mut ctx, lookup.id, index, pkt) {
                return Ok(out);
            }
        }
        Ok(out)
    }

    /// The SYNProxy service a flow is addressed to, if any. Asked only for
    /// packets without a live connection, so established traffic pays no
    /// second lookup.
    fn synproxy_service(&self, key: &FlowKey) -> Option<u32> {
        if key.proto != Proto::Tcp {
            return None;
        }
        let &svc = self.by_vip.get(&(key.proto, key.dst))?;
        self.services[svc as usize].config.synproxy.then_some(svc)
    }

    /// Why a packet with no connection and no service is dropped.
    pub(crate) fn classify_miss(&self, dst: IpAddr, known_proto: bool) -> DropReason {
        if self.laddr_refs.contains_key(&dst) {
            if known_proto { DropReason::StrayReturn } else { DropReason::UnsupportedProtocol }
        } else if self.vip_addrs.contains_key(&dst) {
            if known_proto { DropReason::NoService } else { DropReason::UnsupportedProtocol }
        } else {
            DropReason::NotForUs
        }
    }

    fn new_conn(
        &mut self,
        now: Instant,
        key: &FlowKey,
        l4: &L4Info,
        seg: &[u8],
    ) -> Result<Lookup, DropReason> {
        let Some(&svc_index) = self.by_vip.get(&(key.proto, key.dst)) else {
            return Err(self.classify_miss(key.dst.addr, true));
        };
        let opens = l4.flags.syn && !l4.flags.ack;
        if key.proto == Proto::Tcp && !opens {
            return Err(DropReason::NoConnection);
        }
        if self.conns.table().len() >= self.conns.table().max() {
            return Err(DropReason::TableFull);
        }
        let placed = self.place(now, svc_index, key, &[])?;
        let mut xlat = Translation::default();
        if key.proto == Proto::Tcp {
            xlat.c2r_seq = self.conns.clock().isn(now, placed.laddr, placed.real) - SeqNumber(l4.seq);
            // The client's timestamps restart from its own per-connection
            // offset: on a reused (LIP, port, real) the real's TIME_WAIT would
            // refuse a lower TSval (PAWS) and the client's SYN would wait a
            // retransmission. Toward the real they run on the same clock the
            // real-side ISN does, which only grows, across restarts too.
            if let Some((tsval, _)) = Summary::of_segment(seg).timestamps {
                xlat.c2r_ts = self.conns.clock().tsval(now, placed.laddr, placed.real) - SeqNumber(tsval);
            }
        }
        let state = match key.proto {
            Proto::Tcp => TcpState::None,
            Proto::Udp => TcpState::Established,
        };
        let mut conn = placed.conn(key, svc_index, state, now + self.timeout(svc_index, key.proto, state));
        conn.xlat = xlat;
        conn.handshake = passive::wait(now);
        if key.proto == Proto::Tcp {
            conn.delivery = self
                .services
                .get(svc_index as usize)
                .and_then(|s| self.deliveries.start(&s.config, key.src, key.dst, SeqNumber(l4.seq)));
        }
        let delivery = conn.delivery;
        let id = self.insert_conn(now, conn, placed.pool).inspect_err(|_| self.deliveries.close(delivery))?;
        self.deliveries.attach(delivery, id);
        Ok(Lookup { id, side: Side::Client })
    }

    /// Choose a real for a new connection of service `svc` (none of
    /// `exclude`), and a local address and port toward it.
    pub(crate) fn place(
        &mut self,
        now: Instant,
        svc: u32,
        key: &FlowKey,
        exclude: &[u32],
    ) -> Result<Placement, DropReason> {
        let service = &mut self.services[svc as usize];
        if service.config.laddrs.is_empty() {
            return Err(DropReason::NoLocalAddress);
        }
        let mut real_index = service.sched.pick(&service.reals, key.src).ok_or(DropReason::NoReal)?;
        if exclude.contains(&(real_index as u32)) {
            // The scheduler's choice was tried already: the next available real not tried.
            let n = service.reals.len();
            real_index = (1..n)
                .map(|k| (real_index + k) % n)
                .find(|&i| service.reals[i].available() && !exclude.contains(&(i as u32)))
                .ok_or(DropReason::NoReal)?;
        }
        let real = &service.reals[real_index];
        let found = self.conns.allocate_port(now, key, real, &service.config.laddrs);
        let real = real.endpoint;
        let Some((laddr, pool)) = found else {
            self.ports_exhausted(now, svc, real_index);
            return Err(DropReason::NoLocalPort);
        };
        Ok(Placement { real_index, real, laddr, pool })
    }

    pub(crate) fn forward(
        &mut self,
        now: Instant,
        lookup: Lookup,
        ip: &IpInfo,
        l4: &L4Info,
        pkt: &mut [u8],
    ) -> Result<Outcome, DropReason> {
        let Some(conn) = self.conns.get_mut(lookup.id) else {
            return Err(DropReason::NoConnection);
        };
        let (old, mut new) = (conn.state, conn.state.next(lookup.side, l4.flags));
        let (service, real_index, proto, client) = (conn.service, conn.real_index, conn.proto, conn.client);
        let (src, dst, to) = match lookup.side {
            Side::Client => (conn.laddr, conn.real, Side::Real),
            Side::Real => (conn.vip, conn.client, Side::Client),
        };
        let xlat = conn.xlat.for_packet_from(lookup.side);
        let rescale = (conn.real_wscale, conn.client_wscale);
        let waiting = matches!(conn.handshake, Handshake::Waiting { .. });
        let mut timeout_state = new;
        if proto == Proto::Tcp {
            new = conn.note_segment(lookup.side, l4);
            if conn.progress.unacked()
                && matches!(new, TcpState::FinWait | TcpState::CloseWait | TcpState::LastAck)
            {
                timeout_state = TcpState::Established;
            }
        }
        let over = proto == Proto::Tcp && new.is_reusable() && !old.is_reusable();
        let mut expires = now + self.timeout(service, proto, timeout_state);
        if waiting && let Some(c) = self.conns.get_mut(lookup.id) {
            let real = real_mut(&mut self.services, service, real_index);
            let failures = &mut self.stats.passive_failures;
            let check = passive::on_packet(c, real, lookup.side, l4.flags, now, &self.cfg.synproxy, failures);
            expires = check.map_or(expires, |t| t.min(expires));
        }
        if new != old {
            let real = real_mut(&mut self.services, service, real_index);
            self.conns.set_state(lookup.id, new, real);
        }
        if new != old || waiting {
            self.conns.set_expiry(lookup.id, expires);
        } else if let Some(c) = self.conns.get_mut(lookup.id) {
            c.expires = expires;
        }
        if over {
            self.conns.connection_over(now, lookup.id);
        }
        let svc = &mut self.services[service as usize];
        let mss_rule = MssRule {
            clamp: svc.config.mss_clamp.unwrap_or(u16::MAX),
            less: crate::client_addr::toa_room(&svc.config, client.addr)
                + crate::xlat::mss_room(ip.src, dst.addr),
        };
        if let Some(real) = svc.reals.get_mut(real_index as usize) {
            count(&mut real.stats, to, pkt.len());
        }
        count(&mut svc.stats, to, pkt.len());
        count(&mut self.stats.traffic, to, pkt.len());
        let mss = (l4.flags.syn && mss_rule != MssRule::NONE).then_some(mss_rule);
        let tsval = rewrite(pkt, ip, src, dst, xlat, mss, self.cfg.decrement_ttl);
        match to {
            // What the real's PAWS and TIME_WAIT will hold the next user of this port to.
            Side::Real => {
                if let (Some(ts), Some(c)) = (tsval, self.conns.get_mut(lookup.id)) {
                    c.progress.tsval_sent(SeqNumber(ts));
                }
            }
            Side::Client if rescale.0 != rescale.1 => {
                rescale_window(&mut pkt[ip.header_len..], rescale.0, rescale.1);
            }
            Side::Client => {}
        }
        if crate::xlat::translates(ip.src, dst.addr) {
            return Ok(Outcome::Translate { to, conn: lookup.id, syn: l4.flags.syn });
        }
        self.after_forward(lookup.id, l4.flags);
        Ok(Outcome::Forward(to))
    }
}

impl Engine {
    /// Build a segment into a slot and queue it toward `to`.
    pub(crate) fn queue_segment(&mut self, seg: &Segment, to: Side) -> Outcome {
        self.split().2.queue_segment(seg, to);
        Outcome::Absorbed
    }
}

fn count(c: &mut crate::service::TrafficCounters, to: Side, bytes: usize) {
    match to {
        Side::Real => {
            c.pkts_in += 1;
            c.bytes_in += bytes as u64;
        }
        Side::Client => {
            c.pkts_out += 1;
            c.bytes_out += bytes as u64;
        }
    }
}
