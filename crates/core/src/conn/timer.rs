//! A hashed timing wheel over connection slots, driven by `now`.
//!
//! Idle timeouts are refreshed by every packet, so the wheel is lazy: a
//! packet only moves a connection's deadline (`Conn::expires`), never its
//! wheel entry. When an entry comes due the table looks at the real
//! deadline and either expires the connection or files it again. An entry
//! is re-filed earlier only when a deadline moves *earlier* (a state with a
//! shorter timeout); the superseded entry is recognised as stale by its tick.
//! Deadlines farther away than the wheel's span are filed at the span's end
//! and re-filed from there. Each live connection has one valid entry.

use core::time::Duration;

use crate::time::Instant;

/// A wheel entry: a slot index, its generation and the tick it was filed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) index: u32,
    pub(super) generation: u32,
    pub(super) tick: u32,
}

#[derive(Debug)]
pub(super) struct TimerWheel {
    tick_nanos: u64,
    slots: Vec<Vec<Entry>>,
    /// The next tick to process; every filed entry is at or after it.
    cursor: u64,
    pending: usize,
    /// Buffer swapped with the slot being visited; kept for its capacity.
    scratch: Vec<Entry>,
}

impl TimerWheel {
    pub(super) fn new(tick: Duration, slots: usize, now: Instant) -> Self {
        let tick_nanos = u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX).max(1);
        let slots = slots.max(2).next_power_of_two();
        Self {
            tick_nanos,
            slots: vec![Vec::new(); slots],
            cursor: now.as_nanos() / tick_nanos,
            pending: 0,
            scratch: Vec::new(),
        }
    }

    /// The tick a deadline is filed under: the first tick boundary at or
    /// after it, clamped into the wheel's span.
    pub(super) fn tick_for(&self, deadline: Instant) -> u64 {
        let t = deadline.as_nanos().div_ceil(self.tick_nanos);
        let last = self.cursor + self.slots.len() as u64 - 1;
        t.clamp(self.cursor, last)
    }

    /// File an entry; returns the tick as stored (entries and connections
    /// keep the low 32 bits: only equality within one span matters).
    pub(super) fn file(&mut self, index: u32, generation: u32, tick: u64) -> u32 {
        let slot = (tick % self.slots.len() as u64) as usize;
        let tick = tick as u32;
        self.slots[slot].push(Entry { index, generation, tick });
        self.pending += 1;
        tick
    }

    /// When the next tick is due, if anything is filed.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        (self.pending > 0).then(|| Instant::from_nanos(self.cursor.saturating_mul(self.tick_nanos)))
    }

    /// Take the entries due by `now`, one slot at a time, handing each to
    /// `f` (which may file new entries). Slot buffers keep their capacity so
    /// steady-state expiry does not allocate.
    pub(super) fn advance(&mut self, now: Instant, mut f: impl FnMut(&mut Self, Entry)) {
        let target = now.as_nanos() / self.tick_nanos;
        if target < self.cursor {
            return;
        }
        let span = self.slots.len() as u64;
        let mut scratch = core::mem::take(&mut self.scratch);
        if target - self.cursor >= span {
            // A jump past the whole span: every filed entry is due. Visit
            // each slot once with the cursor already at `target`, so entries
            // filed again land ahead of it.
            self.cursor = target;
            for slot in 0..self.slots.len() {
                self.visit(slot, &mut scratch, &mut f);
            }
            self.cursor = target + 1;
        } else {
            while self.cursor <= target {
                let slot = (self.cursor % span) as usize;
                self.cursor += 1;
                self.visit(slot, &mut scratch, &mut f);
            }
        }
        self.scratch = scratch;
    }

    fn visit(&mut self, slot: usize, scratch: &mut Vec<Entry>, f: &mut impl FnMut(&mut Self, Entry)) {
        core::mem::swap(scratch, &mut self.slots[slot]);
        self.pending -= scratch.len();
        for e in scratch.drain(..) {
            f(self, e);
        }
        // Entries filed into this slot during `f` are in the slot now; move
        // them into the drained buffer, which keeps the larger capacity.
        core::mem::swap(scratch, &mut self.slots[slot]);
        self.slots[slot].append(scratch);
    }
}
