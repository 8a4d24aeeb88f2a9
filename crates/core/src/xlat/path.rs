//! Where the engine hands translated packets on: into a packet slot, then
//! to the transmit queue toward their side ([`Engine::poll_transmit`]), so
//! drivers move them like any packet the engine built.

use rvs_wire::ip_protocol;

use super::header::{self, Carried};
use super::icmp::{ErrorBack, translate_error};
use crate::conn::ConnId;
use crate::drop::DropReason;
use crate::engine::{Engine, Verdict};
use crate::packet::IpInfo;
use crate::tcp_state::Side;

impl Engine {
    /// Move the rewritten packet `pkt` of connection `conn` into its new
    /// family in a slot and queue it toward `to`, with TOA if the
    /// connection's delivery carries it (never on a `syn`).
    ///
    /// The rewrite left the old IP header as it was, so it is read again
    /// here, off the path of packets that keep their family.
    pub(crate) fn send_translated(&mut self, pkt: &[u8], conn: ConnId, syn: bool, to: Side) -> Verdict {
        let ip = match IpInfo::parse(pkt) {
            Ok(ip) => ip,
            Err(reason) => return self.translate_drop(reason),
        };
        let ends = self.conns.get(conn).map(|c| match to {
            Side::Real => (c.laddr.addr, c.real.addr),
            Side::Client => (c.vip.addr, c.client.addr),
        });
        let Some((src, dst)) = ends else {
            return self.translate_drop(DropReason::NoConnection);
        };
        let Some(from) = pkt.get(..ip.total_len) else {
            return self.translate_drop(DropReason::Truncated);
        };
        let Some(slot) = self.store.alloc() else {
            return self.translate_drop(DropReason::TxQueueFull);
        };
        let carried = Carried::read(from, ip.protocol, self.cfg.decrement_ttl);
        let built = header::translate(self.store.slot_mut(slot), from, ip.header_len, src, dst, carried);
        let Some(len) = built else {
            self.store.release(slot);
            return self.translate_drop(DropReason::TooBigToTranslate);
        };
        self.store.set_len(slot, len);
        if to == Side::Real && ip.protocol == ip_protocol::TCP && !syn {
            self.deliveries.toa_for_built(&mut self.store, self.conns.get(conn), slot);
        }
        self.store.queue(slot, to);
        Verdict::Absorbed
    }

    /// Move a packet built or kept for connection `conn`'s real (a
    /// SYNProxy replay of a client packet) into the real's family, in its
    /// slot; false if it could not be and the slot was freed.
    pub(crate) fn translate_built(&mut self, slot: u32, conn: ConnId) -> bool {
        // Only a translating connection's packets are parsed at all.
        let Some((laddr, real)) = self
            .conns
            .get(conn)
            .filter(|c| super::translates(c.client.addr, c.real.addr))
            .map(|c| (c.laddr.addr, c.real.addr))
        else {
            return true;
        };
        let pkt = self.store.packet_mut(slot);
        let Ok(ip) = IpInfo::parse(pkt) else { return true };
        if !super::translates(ip.src, real) {
            return true;
        }
        let len = pkt.len();
        let buf = self.store.slot_mut(slot);
        let carried = Carried::read(&buf[..], ip.protocol, self.cfg.decrement_ttl);
        match header::swap(buf, ip.header_len, len, laddr, real, carried) {
            Some(len) => {
                self.store.set_len(slot, len);
                true
            }
            None => {
                self.store.release(slot);
                self.stats.drops.add(DropReason::TooBigToTranslate);
                false
            }
        }
    }

    /// Build the translation of the ICMP error in `pkt` into a slot and
    /// queue it toward `to`.
    pub(crate) fn send_translated_error(
        &mut self,
        pkt: &[u8],
        ip: &IpInfo,
        back: &ErrorBack,
        to: Side,
    ) -> Result<(), DropReason> {
        let slot = self.store.alloc().ok_or(DropReason::TxQueueFull)?;
        let built =
            translate_error(pkt, ip.header_len, self.store.slot_mut(slot), back, self.cfg.decrement_ttl);
        match built {
            Ok(len) => {
                self.store.set_len(slot, len);
                self.store.queue(slot, to);
                Ok(())
            }
            Err(reason) => {
                self.store.release(slot);
                Err(reason)
            }
        }
    }

    fn translate_drop(&mut self, reason: DropReason) -> Verdict {
        self.stats.drops.add(reason);
        Verdict::Drop(reason)
    }
}
