//! The connection table: a slab of connections, one hash index holding both
//! of each connection's flow keys, and an expiry wheel.
//!
//! Lookups cost one keyed hash and one probe whichever side a packet comes
//! from: the index stores `slot << 1 | side` and compares the probed key with
//! the connection's key for that side. The index holds 4-byte entries and
//! the slab holds each connection once, which keeps a connection with both
//! index entries and its timer entry under 192 bytes.

use core::time::Duration;

use hashbrown::HashTable;

use super::Conn;
use super::timer::TimerWheel;
use crate::addr::FlowKey;
use crate::hash::Secrets;
use crate::tcp_state::Side;
use crate::time::Instant;

/// Span of one expiry-wheel tick. Idle timeouts are whole seconds, so a
/// deadline that fires up to one tick late is harmless.
const TICK: Duration = Duration::from_millis(100);
/// Wheel slots: 1024 ticks of 100 ms span 102 s, longer than every default
/// timeout but UDP's (which is re-filed once or twice).
const WHEEL_SLOTS: usize = 1024;

/// A handle to a connection; stale once the connection is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    /// Names no connection (a placeholder until one is inserted).
    pub const NONE: Self = Self { index: u32::MAX, generation: u32::MAX };
}

/// A connection found for a packet, and which side the packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    /// The connection.
    pub id: ConnId,
    /// The side the looked-up key belongs to.
    pub side: Side,
}

/// The table is at its maximum, or the connection's keys are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFull {
    /// `max_conns` connections exist.
    Full,
    /// A connection with one of these flow keys exists.
    Duplicate,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    /// Tick of the connection's valid wheel entry.
    wheel_tick: u32,
    conn: Option<Conn>,
}

/// All connections of one engine.
#[derive(Debug)]
pub struct ConnTable {
    secrets: Secrets,
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: HashTable<u32>,
    wheel: TimerWheel,
    len: usize,
    max: usize,
}

#[inline]
fn entry(index: u32, side: Side) -> u32 {
    index << 1 | u32::from(side == Side::Real)
}

#[inline]
fn entry_side(e: u32) -> Side {
    if e & 1 == 1 { Side::Real } else { Side::Client }
}

impl ConnTable {
    /// A table holding at most `max` connections, with `prealloc` reserved.
    pub fn new(secrets: Secrets, max: usize, prealloc: usize, now: Instant) -> Self {
        // Slot indices are shifted left by one in the index.
        let max = max.min(u32::MAX as usize >> 1);
        let prealloc = prealloc.min(max);
        Self {
            secrets,
            slots: Vec::with_capacity(prealloc),
            free: Vec::with_capacity(prealloc),
            index: HashTable::with_capacity(prealloc * 2),
            wheel: TimerWheel::new(TICK, WHEEL_SLOTS, now),
            len: 0,
            max,
        }
    }

    /// The keys this table hashes with.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most connections the table holds.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Hash of a flow key, for [`Self::lookup_hashed`].
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.secrets.flow_hash(key.proto, key.src, key.dst)
    }

    /// The connection a packet with `key` belongs to, from either side.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<Lookup> {
        self.lookup_hashed(self.hash(key), key)
    }

    /// [`Self::lookup`] with the hash already computed.
    #[inline]
    pub fn lookup_hashed(&self, hash: u64, key: &FlowKey) -> Option<Lookup> {
        let slots = &self.slots;
        let &e = self.index.find(hash, |&e| Self::matches(slots, e, key))?;
        let index = e >> 1;
        Some(Lookup {
            id: ConnId { index, generation: slots[index as usize].generation },
            side: entry_side(e),
        })
    }

    #[inline]
    fn matches(slots: &[Slot], e: u32, key: &FlowKey) -> bool {
        match slots.get((e >> 1) as usize).and_then(|s| s.conn.as_ref()) {
            Some(c) => c.has_key(entry_side(e), key),
            None => false,
        }
    }

    fn rehash(secrets: &Secrets, slots: &[Slot], e: u32) -> u64 {
        match slots.get((e >> 1) as usize).and_then(|s| s.conn.as_ref()) {
            Some(c) => {
                let k = c.key(entry_side(e));
                secrets.flow_hash(k.proto, k.src, k.dst)
            }
            None => 0,
        }
    }

    /// The connection behind a handle, if it still exists.
    #[inline]
    pub fn get(&self, id: ConnId) -> Option<&Conn> {
        let slot = self.slots.get(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.conn.as_ref()
    }

    /// The connection behind a handle, mutably. Changing its keys is not
    /// allowed (the index would not find it); its deadline may be moved
    /// later freely, earlier only through [`Self::set_expiry`].
    #[inline]
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.conn.as_mut()
    }

    /// Add a connection; it expires at `conn.expires` unless refreshed.
    ///
    /// A connection already holding the new one's real-side key makes way
    /// if `may_go` says so: it is taken out and returned, for the caller to
    /// account for. Otherwise either key in use refuses the new one.
    pub fn insert(
        &mut self,
        conn: Conn,
        may_go: impl FnOnce(&Conn) -> bool,
    ) -> Result<(ConnId, Option<(ConnId, Conn)>), TableFull> {
        let (ck, rk) = (conn.client_key(), conn.real_key());
        let (ch, rh) = (self.hash(&ck), self.hash(&rk));
        if self.lookup_hashed(ch, &ck).is_some() {
            return Err(TableFull::Duplicate);
        }
        let gone = match self.lookup_hashed(rh, &rk) {
            None => None,
            Some(l) if self.get(l.id).is_some_and(may_go) => self.remove(l.id).map(|c| (l.id, c)),
            Some(_) => return Err(TableFull::Duplicate),
        };
        if self.len >= self.max {
            return Err(TableFull::Full);
        }
        let tick = self.wheel.tick_for(conn.expires);
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = self.slots.len() as u32;
                self.slots.push(Slot { generation: 0, wheel_tick: 0, conn: None });
                if self.free.capacity() < self.slots.capacity() {
                    self.free.reserve(self.slots.capacity() - self.free.len());
                }
                i
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.conn = Some(conn);
        let generation = slot.generation;
        slot.wheel_tick = self.wheel.file(index, generation, tick);
        let (secrets, slots) = (&self.secrets, &self.slots);
        self.index.insert_unique(ch, entry(index, Side::Client), |&e| Self::rehash(secrets, slots, e));
        self.index.insert_unique(rh, entry(index, Side::Real), |&e| Self::rehash(secrets, slots, e));
        self.len += 1;
        Ok((ConnId { index, generation }, gone))
    }

    /// Move a connection's idle deadline, earlier or later.
    pub fn set_expiry(&mut self, id: ConnId, expires: Instant) {
        let tick = self.wheel.tick_for(expires);
        let Some(slot) = self.slots.get_mut(id.index as usize) else { return };
        if slot.generation != id.generation {
            return;
        }
        let Some(conn) = slot.conn.as_mut() else { return };
        conn.expires = expires;
        // Only an earlier tick needs a new entry; a later deadline is found
        // when the current entry comes due.
        if (tick as u32).wrapping_sub(slot.wheel_tick) as i32 >= 0 {
            return;
        }
        slot.wheel_tick = self.wheel.file(id.index, slot.generation, tick);
    }

    /// Remove a connection now.
    pub fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let slot = self.slots.get(id.index as usize)?;
        if slot.generation != id.generation || slot.conn.is_none() {
            return None;
        }
        Self::remove_slot(
            &self.secrets,
            &mut self.slots,
            &mut self.index,
            &mut self.free,
            &mut self.len,
            id.index,
        )
    }

    fn remove_slot(
        secrets: &Secrets,
        slots: &mut [Slot],
        index: &mut HashTable<u32>,
        free: &mut Vec<u32>,
        len: &mut usize,
        i: u32,
    ) -> Option<Conn> {
        slots.get(i as usize)?.conn.as_ref()?;
        for side in [Side::Client, Side::Real] {
            let want = entry(i, side);
            let h = Self::rehash(secrets, slots, want);
            if let Ok(found) = index.find_entry(h, |&e| e == want) {
                found.remove();
            }
        }
        let slot = &mut slots[i as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let conn = slot.conn.take()?;
        free.push(i);
        *len -= 1;
        Some(conn)
    }

    /// When [`Self::handle_timeout`] next has work, if any connection exists.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wheel.poll_timeout()
    }

    /// Expire every connection idle past its deadline at `now`, handing each
    /// removed connection (and the handle it had) to `expired`. `due` sees each connection whose
    /// deadline passed first, and may move the deadline later to keep it
    /// (a check that came due before its idle timeout).
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        mut due: impl FnMut(&mut Conn),
        mut expired: impl FnMut(ConnId, Conn),
    ) {
        let Self { secrets, slots, free, index, wheel, len, .. } = self;
        wheel.advance(now, |wheel, e| {
            let Some(slot) = slots.get_mut(e.index as usize) else { return };
            if slot.generation != e.generation || slot.wheel_tick != e.tick {
                return; // superseded or already removed
            }
            let Some(conn) = slot.conn.as_mut() else { return };
            if conn.expires <= now {
                due(conn);
            }
            if conn.expires > now {
                let tick = wheel.tick_for(conn.expires);
                slot.wheel_tick = wheel.file(e.index, e.generation, tick);
                return;
            }
            if let Some(conn) = Self::remove_slot(secrets, slots, index, free, len, e.index) {
                expired(ConnId { index: e.index, generation: e.generation }, conn);
            }
        });
    }

    /// Every live connection.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &Conn)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.conn.as_ref().map(|c| (ConnId { index: i as u32, generation: s.generation }, c))
        })
    }

    /// Bytes the table holds per live connection in its slab slot (the
    /// index and wheel add about 25 more; see the memory test).
    pub const SLOT_BYTES: usize = size_of::<Slot>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{Endpoint, Proto};
    use crate::tcp_state::TcpState;

    fn ep(s: &str) -> Endpoint {
        s.parse::<std::net::SocketAddr>().unwrap().into()
    }

    fn conn(cport: u16, lport: u16, expires: Instant) -> Conn {
        Conn {
            client: ep(&format!("192.0.2.1:{cport}")),
            vip: ep("10.0.0.1:80"),
            laddr: ep(&format!("10.1.0.1:{lport}")),
            real: ep("10.2.0.1:8080"),
            proto: Proto::Tcp,
            state: TcpState::Established,
            client_wscale: 0,
            real_wscale: 0,
            peer_wscale: 0,
            service: 0,
            real_index: 0,
            xlat: Default::default(),
            progress: Default::default(),
            handshake: Default::default(),
            delivery: None,
            fast_path: Default::default(),
            expires,
        }
    }

    fn table(max: usize) -> ConnTable {
        ConnTable::new(Secrets::from_seed([7; 32]), max, 0, Instant::ZERO)
    }

    #[test]
    fn lookup_from_both_sides() {
        let mut t = table(10);
        let c = conn(1000, 2000, Instant::from_secs(90));
        let id = t.insert(c.clone(), |_| false).unwrap().0;
        let l = t.lookup(&c.client_key()).unwrap();
        assert_eq!((l.id, l.side), (id, Side::Client));
        let l = t.lookup(&c.real_key()).unwrap();
        assert_eq!((l.id, l.side), (id, Side::Real));
        assert!(t.lookup(&c.client_key().reversed()).is_none());
        assert_eq!(t.insert(c.clone(), |_| false), Err(TableFull::Duplicate));
        assert_eq!(t.remove(id), Some(c.clone()));
        assert!(t.lookup(&c.client_key()).is_none() && t.lookup(&c.real_key()).is_none());
        assert!(t.get(id).is_none(), "a handle goes stale with its connection");
        assert!(t.is_empty());
    }

    #[test]
    fn full_table_refuses() {
        let mut t = table(2);
        t.insert(conn(1, 1, Instant::from_secs(1)), |_| false).unwrap();
        t.insert(conn(2, 2, Instant::from_secs(1)), |_| false).unwrap();
        assert_eq!(t.insert(conn(3, 3, Instant::from_secs(1)), |_| false), Err(TableFull::Full));
    }

    #[test]
    fn expiry_is_lazy_and_exact_to_a_tick() {
        let mut t = table(100);
        let id = t.insert(conn(1, 1, Instant::from_secs(90)), |_| false).unwrap().0;
        let mut gone = Vec::new();
        // Refreshed at t=60 s to t=150 s: the first entry comes due at 90 s
        // and is re-filed, beyond the wheel's span.
        t.get_mut(id).unwrap().expires = Instant::from_secs(150);
        for s in (0..=149).step_by(1) {
            t.handle_timeout(Instant::from_secs(s), |_| {}, |_, c| gone.push(c));
        }
        assert!(gone.is_empty());
        t.handle_timeout(Instant::from_millis(150_100), |_| {}, |_, c| gone.push(c));
        assert_eq!(gone.len(), 1);
        assert!(t.poll_timeout().is_none());
    }

    #[test]
    fn earlier_deadline_refiles() {
        let mut t = table(100);
        let id = t.insert(conn(1, 1, Instant::from_secs(90)), |_| false).unwrap().0;
        t.set_expiry(id, Instant::from_secs(3));
        let mut n = 0;
        t.handle_timeout(Instant::from_millis(2900), |_| {}, |_, _| n += 1);
        assert_eq!(n, 0);
        t.handle_timeout(Instant::from_millis(3000), |_| {}, |_, _| n += 1);
        assert_eq!(n, 1);
        // The superseded entry at 90 s finds nothing.
        t.handle_timeout(Instant::from_secs(200), |_| {}, |_, _| n += 1);
        assert_eq!(n, 1);
    }

    #[test]
    fn long_jump_expires_everything_due() {
        let mut t = table(1000);
        for i in 0..500u16 {
            t.insert(conn(i, i, Instant::from_secs(u64::from(i % 7) + 1)), |_| false).unwrap();
        }
        t.insert(conn(9999, 9999, Instant::from_secs(100_000)), |_| false).unwrap();
        let mut n = 0;
        t.handle_timeout(Instant::from_secs(50_000), |_| {}, |_, _| n += 1);
        assert_eq!(n, 500);
        assert_eq!(t.len(), 1);
        t.handle_timeout(Instant::from_secs(100_001), |_| {}, |_, _| n += 1);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn the_holder_of_a_real_side_key_makes_way_only_when_allowed() {
        let mut t = table(10);
        let old = t.insert(conn(1, 5, Instant::from_secs(3)), |_| false).unwrap().0;
        // Another client on the same local port toward the same real.
        assert_eq!(t.insert(conn(2, 5, Instant::from_secs(9)), |_| false), Err(TableFull::Duplicate));
        let (new, gone) = t.insert(conn(2, 5, Instant::from_secs(9)), |c| c.client.port == 1).unwrap();
        assert_eq!(gone.map(|(_, c)| c.client.port), Some(1));
        assert!(t.get(old).is_none() && t.get(new).is_some());
        assert_eq!(t.len(), 1);
        // The client side's key never makes way.
        assert_eq!(t.insert(conn(2, 6, Instant::from_secs(9)), |_| true), Err(TableFull::Duplicate));
    }

    #[test]
    fn slots_are_reused_with_new_generations() {
        let mut t = table(10);
        let a = t.insert(conn(1, 1, Instant::from_secs(1)), |_| false).unwrap().0;
        t.remove(a);
        let b = t.insert(conn(2, 2, Instant::from_secs(1)), |_| false).unwrap().0;
        assert_ne!(a, b);
        assert!(t.get(a).is_none());
        assert!(t.get(b).is_some());
    }

    #[test]
    fn memory_per_connection_bound() {
        // Slab slot + two 4-byte index entries (hashbrown: one control byte
        // each, load factor at worst 7/16 just after growth) + one 12-byte
        // wheel entry.
        let index_worst = 2.0 * (4.0 + 1.0) / (7.0 / 16.0);
        let per_conn = ConnTable::SLOT_BYTES as f64 + index_worst + 12.0;
        assert!(per_conn <= 192.0, "{per_conn} bytes per connection");
        assert!(size_of::<Conn>() <= 144, "Conn is {} bytes", size_of::<Conn>());
    }
}
