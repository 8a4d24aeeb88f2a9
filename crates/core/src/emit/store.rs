//! Packet slots the engine owns: client packets kept while a real's
//! handshake is open, and packets the engine built or grew (TOA), waiting
//! for the driver to take them ([`crate::Engine::poll_transmit`]).
//!
//! Slots are allocated once, as the store first needs them, up to a fixed
//! number, and then reused through a free list, so the packet path does not
//! allocate in steady state.

use std::collections::VecDeque;

use crate::tcp_state::Side;

/// Bytes per slot: an Ethernet-MTU packet with room to spare.
pub(crate) const SLOT_LEN: usize = 2048;
/// Slots for kept client packets and built packets together.
pub(crate) const SLOTS: usize = 1 << 16;

/// A fixed-capacity pool of packet slots and the transmit queue over it.
#[derive(Debug)]
pub(crate) struct PacketStore {
    /// Boxed, so growing the list moves pointers, not 2 KiB slots.
    #[allow(clippy::vec_box)]
    slots: Vec<Box<[u8; SLOT_LEN]>>,
    lens: Vec<u16>,
    free: Vec<u32>,
    max: usize,
    tx: VecDeque<(u32, Side)>,
}

impl PacketStore {
    pub(crate) fn new(max: usize) -> Self {
        Self { slots: Vec::new(), lens: Vec::new(), free: Vec::new(), max, tx: VecDeque::new() }
    }

    /// A free slot, or `None` when all `max` are taken.
    pub(crate) fn alloc(&mut self) -> Option<u32> {
        if let Some(i) = self.free.pop() {
            return Some(i);
        }
        if self.slots.len() >= self.max {
            return None;
        }
        self.slots.push(Box::new([0; SLOT_LEN]));
        self.lens.push(0);
        Some(self.slots.len() as u32 - 1)
    }

    /// Copy `pkt` into a new slot; `None` if it does not fit or none is free.
    pub(crate) fn store(&mut self, pkt: &[u8]) -> Option<u32> {
        if pkt.len() > SLOT_LEN {
            return None;
        }
        let i = self.alloc()?;
        self.slots[i as usize][..pkt.len()].copy_from_slice(pkt);
        self.lens[i as usize] = pkt.len() as u16;
        Some(i)
    }

    /// Slots allocated so far (free or in use): the store's memory, in slots.
    pub(crate) fn allocated(&self) -> usize {
        self.slots.len()
    }

    /// A copy of slot `i` in a new slot.
    pub(crate) fn duplicate(&mut self, i: u32) -> Option<u32> {
        let j = self.alloc()?;
        let len = usize::from(self.lens[i as usize]);
        let (src, dst) = if i < j {
            let (a, b) = self.slots.split_at_mut(j as usize);
            (&a[i as usize], &mut b[0])
        } else {
            let (a, b) = self.slots.split_at_mut(i as usize);
            (&b[0], &mut a[j as usize])
        };
        dst[..len].copy_from_slice(&src[..len]);
        self.lens[j as usize] = len as u16;
        Some(j)
    }

    pub(crate) fn release(&mut self, i: u32) {
        if (i as usize) < self.slots.len() {
            self.free.push(i);
        }
    }

    /// The whole slot, to build a packet into.
    pub(crate) fn slot_mut(&mut self, i: u32) -> &mut [u8; SLOT_LEN] {
        &mut self.slots[i as usize]
    }

    /// The packet in a slot.
    pub(crate) fn packet_mut(&mut self, i: u32) -> &mut [u8] {
        let len = usize::from(self.lens[i as usize]);
        &mut self.slots[i as usize][..len]
    }

    pub(crate) fn set_len(&mut self, i: u32, len: usize) {
        self.lens[i as usize] = len.min(SLOT_LEN) as u16;
    }

    /// Queue a slot for transmission toward `to`; the queue owns it from now on.
    pub(crate) fn queue(&mut self, i: u32, to: Side) {
        self.tx.push_back((i, to));
    }

    /// Copy the oldest queued packet into `buf` and free its slot. A packet
    /// longer than `buf` is dropped (the driver's buffers are larger than any slot).
    pub(crate) fn pop_tx(&mut self, buf: &mut [u8]) -> Option<Option<(usize, Side)>> {
        let (i, to) = self.tx.pop_front()?;
        let len = usize::from(self.lens[i as usize]);
        let out = buf.get_mut(..len).map(|b| {
            b.copy_from_slice(&self.slots[i as usize][..len]);
            (len, to)
        });
        self.release(i);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_reused() {
        let mut s = PacketStore::new(2);
        let a = s.store(&[1, 2, 3]).unwrap();
        let b = s.store(&[4]).unwrap();
        assert!(s.store(&[5]).is_none(), "full");
        assert!(s.store(&[0; SLOT_LEN + 1]).is_none());
        s.queue(a, Side::Real);
        let mut buf = [0u8; 16];
        assert_eq!(s.pop_tx(&mut buf), Some(Some((3, Side::Real))));
        assert_eq!(&buf[..3], &[1, 2, 3]);
        assert_eq!(s.pop_tx(&mut buf), None);
        let c = s.store(&[6, 7]).unwrap();
        assert_eq!(c, a, "freed slot reused");
        assert_eq!(s.packet_mut(b), &[4]);
    }
}
