//! A generational slab with a timer heap: the shape of every side table a
//! feature keeps for some of its connections (SYNProxy's open handshakes,
//! client-address deliveries).
//!
//! An entry is named by an [`Id`] that goes stale when the entry is
//! removed, so a connection or a timer that still holds it finds nothing
//! rather than the next entry in the same place. Timers are a min-heap of
//! (deadline, id); an entry may have several (a re-armed timer leaves the
//! old one in the heap), so the owner keeps the current deadline in the
//! entry and ignores a timer that fires before it.
//!
//! An [`Id`] is 32 bits (24 of index, 8 of generation) so that a
//! connection can hold one without growing: a slab holds at most 2^24
//! entries at once, and a stale id is recognised unless its place was
//! reused exactly a multiple of 255 times since.

use core::cmp::Reverse;
use core::fmt;
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;
use core::num::NonZeroU32;
use std::collections::BinaryHeap;

use crate::time::Instant;

const INDEX_BITS: u32 = 24;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

/// Names an entry of a [`Slab<T>`]; stale once the entry is removed.
pub(crate) struct Id<T> {
    /// Generation (1..=255) in the top 8 bits, index below: never zero,
    /// so `Option<Id<T>>` is 32 bits too.
    raw: NonZeroU32,
    _of: PhantomData<fn() -> T>,
}

impl<T> Id<T> {
    fn new(index: u32, generation: u8) -> Self {
        let raw = (u32::from(generation) << INDEX_BITS) | (index & INDEX_MASK);
        // Generations start at 1 and skip 0 when they wrap.
        Self { raw: NonZeroU32::new(raw).unwrap_or(NonZeroU32::MIN), _of: PhantomData }
    }

    fn index(self) -> usize {
        (self.raw.get() & INDEX_MASK) as usize
    }

    fn generation(self) -> u8 {
        (self.raw.get() >> INDEX_BITS) as u8
    }
}

impl<T> Clone for Id<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Id<T> {}

impl<T> PartialEq for Id<T> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl<T> Eq for Id<T> {}

impl<T> PartialOrd for Id<T> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// By index, then generation: timers due at the same time fire in the order of their places.
impl<T> Ord for Id<T> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        (self.index(), self.generation()).cmp(&(other.index(), other.generation()))
    }
}

impl<T> Hash for Id<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.raw.hash(state);
    }
}

impl<T> fmt::Debug for Id<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({}/{})", self.index(), self.generation())
    }
}

#[derive(Debug)]
struct Entry<T> {
    generation: u8,
    value: Option<T>,
}

/// Entries named by generational [`Id`]s, places reused, with timers.
/// `K` types the ids (by default the entry type; a marker type lets a
/// module name the ids without seeing the entries).
#[derive(Debug)]
pub(crate) struct Slab<T, K = T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    timers: BinaryHeap<Reverse<(Instant, Id<K>)>>,
}

impl<T, K> Default for Slab<T, K> {
    fn default() -> Self {
        Self { entries: Vec::new(), free: Vec::new(), timers: BinaryHeap::new() }
    }
}

impl<T, K> Slab<T, K> {
    /// Keep `value`; `None` if 2^24 entries exist already.
    pub(crate) fn insert(&mut self, value: T) -> Option<Id<K>> {
        if let Some(index) = self.free.pop() {
            let e = &mut self.entries[index as usize];
            e.value = Some(value);
            return Some(Id::new(index, e.generation));
        }
        let index = u32::try_from(self.entries.len()).ok().filter(|&i| i <= INDEX_MASK)?;
        self.entries.push(Entry { generation: 1, value: Some(value) });
        Some(Id::new(index, 1))
    }

    /// The entry `id` names, unless it was removed.
    pub(crate) fn get(&self, id: Id<K>) -> Option<&T> {
        self.entries.get(id.index()).filter(|e| e.generation == id.generation())?.value.as_ref()
    }

    /// The entry `id` names, unless it was removed.
    pub(crate) fn get_mut(&mut self, id: Id<K>) -> Option<&mut T> {
        self.entries.get_mut(id.index()).filter(|e| e.generation == id.generation())?.value.as_mut()
    }

    /// Take the entry out; every copy of `id` goes stale.
    pub(crate) fn remove(&mut self, id: Id<K>) -> Option<T> {
        let e = self.entries.get_mut(id.index()).filter(|e| e.generation == id.generation())?;
        let value = e.value.take()?;
        e.generation = e.generation.checked_add(1).unwrap_or(1);
        self.free.push(id.index() as u32);
        Some(value)
    }

    /// Entries kept.
    pub(crate) fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// Wake `id` at `at` (through [`Self::pop_timer`]).
    pub(crate) fn set_timer(&mut self, id: Id<K>, at: Instant) {
        self.timers.push(Reverse((at, id)));
    }

    /// The earliest timer, stale ones included.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// The next timer due by `now` whose entry still exists; its entry
    /// decides whether the timer is still current.
    pub(crate) fn pop_timer(&mut self, now: Instant) -> Option<Id<K>> {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                return None;
            }
            self.timers.pop();
            if self.get(id).is_some() {
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_ids_go_stale_and_places_are_reused() {
        let mut s: Slab<&str> = Slab::default();
        let a = s.insert("a").unwrap();
        let b = s.insert("b").unwrap();
        assert_eq!((s.get(a), s.get(b), s.len()), (Some(&"a"), Some(&"b"), 2));
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None);
        assert_eq!((s.get(a), s.len()), (None, 1));
        let c = s.insert("c").unwrap();
        assert_eq!(c.index(), a.index());
        assert_ne!(c, a);
        assert_eq!((s.get(a), s.get(c)), (None, Some(&"c")));
        *s.get_mut(c).unwrap() = "d";
        assert_eq!(s.get(c), Some(&"d"));
    }

    #[test]
    fn generations_skip_zero_when_they_wrap() {
        let mut s: Slab<i32> = Slab::default();
        let first = s.insert(0).unwrap();
        let mut id = first;
        for n in 1..=255 {
            s.remove(id);
            id = s.insert(n).unwrap();
            assert_ne!(id.generation(), 0);
        }
        assert_eq!(id.generation(), first.generation());
        assert_eq!(size_of::<Option<Id<()>>>(), 4);
    }

    #[test]
    fn timers_fire_in_order_and_skip_removed_entries() {
        let mut s: Slab<char> = Slab::default();
        let (a, b, c) = (s.insert('a').unwrap(), s.insert('b').unwrap(), s.insert('c').unwrap());
        s.set_timer(b, Instant::from_secs(2));
        s.set_timer(a, Instant::from_secs(3));
        s.set_timer(c, Instant::from_secs(1));
        s.remove(c);
        assert_eq!(s.poll_timeout(), Some(Instant::from_secs(1)));
        assert_eq!(s.pop_timer(Instant::from_secs(2)), Some(b));
        assert_eq!(s.pop_timer(Instant::from_secs(2)), None);
        assert_eq!(s.poll_timeout(), Some(Instant::from_secs(3)));
        assert_eq!(s.pop_timer(Instant::from_secs(9)), Some(a));
        assert_eq!(s.poll_timeout(), None);
    }
}
