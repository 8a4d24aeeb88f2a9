//! Where a packet leaves: the outgoing interface and next hop of the
//! kernel's IPv4 or IPv6 main routing table (the gateway, or the destination
//! itself on-link), and the next hop's Ethernet address from the kernel's
//! neighbour tables (ARP and NDP), all looked up in a mirror of those tables
//! that the worker holds in memory.
//!
//! The mirror starts from a dump of both tables and follows the kernel's
//! netlink notifications, which the worker drains once per turn of its loop
//! ([`NextHops::poll_updates`]), so a lookup is a few hash probes with no
//! system call and no allocation. When the kernel reports that notifications
//! were lost (ENOBUFS), or a link or address change has dropped routes
//! without a notification, both tables are dumped again.
//!
//! The driver hands a packet with no known hop to the kernel, whose
//! forwarding resolves the neighbour (by ARP or neighbour solicitation);
//! the notification of the new neighbour then fills the mirror. Routes the mirror does not follow (multipath,
//! blackhole and the like, per-TOS, policy rules and other tables) leave
//! their packets to the kernel the same way.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io;
use std::net::IpAddr;
use std::ops::BitAnd;

use super::XskPort;
use crate::driver::netlink::{Event, Hop, Monitor, Route, Table, events};

/// Read buffer for the monitor socket: more than the kernel puts in one
/// dump message batch.
const BUF_LEN: usize = 64 << 10;
/// Reads per [`NextHops::poll_updates`] at most, so a storm of changes
/// cannot hold the data path; the rest waits for the next turn.
const MAX_READS_PER_TURN: usize = 16;
/// Dumps tried in a row when notifications are lost during one.
const RESYNC_ATTEMPTS: usize = 3;

/// A multiplicative hash for the tables' small integer keys: a packet costs
/// a few probes, and the keys come from the kernel's tables, not from the
/// wire, so SipHash's defence against chosen keys buys nothing here.
#[derive(Debug, Default, Clone, Copy)]
struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        // The product's high bits are the well-mixed ones, and the table
        // picks buckets by the low ones: a /24's key has eight zero bits.
        self.0.rotate_left(26)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(u32::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(n)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_u64(&mut self, n: u64) {
        self.write_u32(n as u32);
        self.write_u32((n >> 32) as u32);
    }

    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// An address family as the route table keys it: addresses as integers,
/// masked to a prefix.
trait Family {
    type Bits: Copy + Eq + Hash + BitAnd<Output = Self::Bits> + std::fmt::Debug;
    /// The longest prefix.
    const BITS: u8;
    /// `addr` as an integer, if it is of this family.
    fn bits(addr: IpAddr) -> Option<Self::Bits>;
    /// The first `prefix_len` bits set (all of them beyond [`Self::BITS`]).
    fn mask(prefix_len: u8) -> Self::Bits;
}

#[derive(Debug)]
struct V4;

#[derive(Debug)]
struct V6;

impl Family for V4 {
    type Bits = u32;
    const BITS: u8 = 32;

    fn bits(addr: IpAddr) -> Option<u32> {
        match addr {
            IpAddr::V4(a) => Some(a.to_bits()),
            IpAddr::V6(_) => None,
        }
    }

    fn mask(prefix_len: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0)
    }
}

impl Family for V6 {
    type Bits = u128;
    const BITS: u8 = 128;

    fn bits(addr: IpAddr) -> Option<u128> {
        match addr {
            IpAddr::V6(a) => Some(a.to_bits()),
            IpAddr::V4(_) => None,
        }
    }

    fn mask(prefix_len: u8) -> u128 {
        u128::MAX.checked_shl(128 - u32::from(prefix_len.min(128))).unwrap_or(0)
    }
}

/// The prefix lengths in use, 0..=128, so a lookup probes only those.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Lens([u64; 3]);

impl Lens {
    fn set(&mut self, len: u8, on: bool) {
        let (word, bit) = (usize::from(len / 64), 1u64 << (len % 64));
        if on {
            self.0[word] |= bit;
        } else {
            self.0[word] &= !bit;
        }
    }

    /// The lengths in use, longest first.
    fn longest_first(self) -> impl Iterator<Item = u8> {
        (0..3u8).rev().flat_map(move |word| {
            let mut bits = self.0[usize::from(word)];
            std::iter::from_fn(move || {
                let bit = 63u32.checked_sub(bits.leading_zeros())?;
                bits &= !(1 << bit);
                Some(word * 64 + bit as u8)
            })
        })
    }
}

/// One family's mirrored main table, longest prefix first: one map per
/// prefix length from the masked destination to its routes, lowest metric
/// first.
#[derive(Debug)]
struct RouteTable<F: Family> {
    by_len: Box<[IntMap<F::Bits, Vec<Route>>]>,
    lens: Lens,
}

impl<F: Family> Default for RouteTable<F> {
    fn default() -> Self {
        Self { by_len: (0..=F::BITS).map(|_| IntMap::default()).collect(), lens: Lens::default() }
    }
}

impl<F: Family> RouteTable<F> {
    /// The slot of `route`: its prefix length and masked destination.
    fn slot(route: &Route) -> Option<(u8, F::Bits)> {
        let len = route.prefix_len.min(F::BITS);
        Some((len, F::bits(route.dst)? & F::mask(len)))
    }

    /// Add `route`, replacing the one with the same key.
    fn insert(&mut self, route: Route) {
        let Some((len, key)) = Self::slot(&route) else { return };
        let routes = self.by_len[usize::from(len)].entry(key).or_default();
        match routes.binary_search_by_key(&route.priority, |r| r.priority) {
            Ok(i) => routes[i] = route,
            Err(i) => routes.insert(i, route),
        }
        self.lens.set(len, true);
    }

    fn remove(&mut self, route: &Route) {
        let Some((len, key)) = Self::slot(route) else { return };
        let map = &mut self.by_len[usize::from(len)];
        if let Some(routes) = map.get_mut(&key) {
            routes.retain(|r| r.priority != route.priority);
            if routes.is_empty() {
                map.remove(&key);
            }
        }
        if map.is_empty() {
            self.lens.set(len, false);
        }
    }

    /// The route the kernel's main table picks for `dst`: the longest
    /// matching prefix, and among its routes the lowest metric.
    fn lookup(&self, dst: IpAddr) -> Option<&Route> {
        let addr = F::bits(dst)?;
        self.lens
            .longest_first()
            .find_map(|len| self.by_len[usize::from(len)].get(&(addr & F::mask(len))).and_then(|r| r.first()))
    }

    fn clear(&mut self) {
        for map in &mut self.by_len {
            map.clear();
        }
        self.lens = Lens::default();
    }
}

/// A neighbour's key: IPv4 addresses as IPv4-mapped IPv6 ones, which no
/// IPv6 neighbour has.
fn neighbour_key(ifindex: u32, addr: IpAddr) -> (u32, u128) {
    let bits = match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().to_bits(),
        IpAddr::V6(a) => a.to_bits(),
    };
    (ifindex, bits)
}

/// What a batch of messages did, beyond changing the tables.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Applied {
    /// The awaited dump ended: with the kernel's error, if any.
    done: Option<i32>,
    /// The tables may differ from the kernel's in ways no notification
    /// will correct: dump them again.
    resync: bool,
}

/// The routes and neighbours, without the socket.
#[derive(Debug, Default)]
struct Mirror {
    routes4: RouteTable<V4>,
    routes6: RouteTable<V6>,
    /// [`neighbour_key`] to Ethernet address, usable entries only.
    neighbours: IntMap<(u32, u128), [u8; 6]>,
}

impl Mirror {
    /// Apply the messages in `buf`, watching for the end of dump `awaited`.
    fn apply(&mut self, buf: &[u8], awaited: Option<u32>) -> Applied {
        let mut applied = Applied::default();
        for event in events(buf) {
            match event {
                Event::RouteAdded(route) if route.dst.is_ipv4() => self.routes4.insert(route),
                Event::RouteAdded(route) => self.routes6.insert(route),
                Event::RouteRemoved(route) if route.dst.is_ipv4() => self.routes4.remove(&route),
                Event::RouteRemoved(route) => self.routes6.remove(&route),
                Event::Neighbour { ifindex, addr, mac: Some(mac) } => {
                    self.neighbours.insert(neighbour_key(ifindex, addr), mac);
                }
                Event::Neighbour { ifindex, addr, mac: None } => {
                    self.neighbours.remove(&neighbour_key(ifindex, addr));
                }
                Event::RoutesFlushed => applied.resync = true,
                Event::DumpDone { seq, error, interrupted } if Some(seq) == awaited => {
                    applied.done = Some(error);
                    applied.resync |= interrupted;
                }
                Event::DumpDone { .. } | Event::Ignored => {}
            }
        }
        applied
    }

    fn clear(&mut self, table: Table) {
        match table {
            Table::Routes => {
                self.routes4.clear();
                self.routes6.clear();
            }
            Table::Neighbours => self.neighbours.clear(),
        }
    }

    /// The interface and Ethernet address a packet to `dst` leaves by.
    fn next_hop(&self, dst: IpAddr) -> Option<(u32, [u8; 6])> {
        let route = match dst {
            IpAddr::V4(_) => self.routes4.lookup(dst),
            IpAddr::V6(_) => self.routes6.lookup(dst),
        };
        let Hop { oif, gateway } = route?.hop?;
        let via = gateway.unwrap_or(dst);
        self.neighbours.get(&neighbour_key(oif, via)).map(|mac| (oif, *mac))
    }
}

/// The kernel's side of the mirror: a [`Monitor`], or a script in tests.
pub(crate) trait Feed {
    /// Ask for a dump of `table`; the sequence number its end carries.
    fn request_dump(&mut self, table: Table) -> io::Result<u32>;
    /// Read queued messages into `buf`, waiting for some when `wait`;
    /// `WouldBlock` when there are none, ENOBUFS when some were lost.
    fn recv(&mut self, buf: &mut [u8], wait: bool) -> io::Result<usize>;
}

impl Feed for Monitor {
    fn request_dump(&mut self, table: Table) -> io::Result<u32> {
        Self::request_dump(self, table)
    }

    fn recv(&mut self, buf: &mut [u8], wait: bool) -> io::Result<usize> {
        Self::recv(self, buf, wait)
    }
}

fn is_lost(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOBUFS)
}

/// Route and neighbour mirror of one worker.
#[derive(Debug)]
pub(crate) struct NextHops<F = Monitor> {
    feed: F,
    mirror: Mirror,
    buf: Box<[u8]>,
    /// The last dump failed or was overtaken: dump again next turn.
    stale: bool,
}

impl NextHops {
    /// Join the kernel's notifications and dump both tables.
    pub(crate) fn open() -> io::Result<Self> {
        let mut hops = Self::with_feed(Monitor::open()?);
        hops.resync()?;
        Ok(hops)
    }
}

impl<F: Feed> NextHops<F> {
    fn with_feed(feed: F) -> Self {
        Self { feed, mirror: Mirror::default(), buf: vec![0u8; BUF_LEN].into_boxed_slice(), stale: false }
    }

    /// Apply the changes the kernel announced since the last call, and dump
    /// the tables again if some were lost. Called once per turn of the
    /// worker's loop; without news it costs one non-blocking read.
    pub(crate) fn poll_updates(&mut self) {
        let mut resync = self.stale;
        for _ in 0..MAX_READS_PER_TURN {
            match self.feed.recv(&mut self.buf, false) {
                Ok(n) => resync |= self.mirror.apply(&self.buf[..n], None).resync,
                Err(e) if is_lost(&e) => resync = true,
                Err(_) => break,
            }
        }
        if resync {
            self.stale = false;
            if self.resync().is_err() {
                self.stale = true;
            }
        }
    }

    /// The port (index into `ports`) and Ethernet address a packet to `dst`
    /// leaves by, or `None` when the kernel routes it elsewhere or does not
    /// know the neighbour yet.
    pub(crate) fn lookup(&self, dst: IpAddr, ports: &[XskPort]) -> Option<(usize, [u8; 6])> {
        let (oif, mac) = self.mirror.next_hop(dst)?;
        let port = ports.iter().position(|p| p.ifindex == oif)?;
        Some((port, mac))
    }

    /// Dump both tables, again from the start while the kernel reports
    /// notifications lost on the way.
    fn resync(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for _ in 0..RESYNC_ATTEMPTS {
            result = self.dump(Table::Routes).and_then(|()| self.dump(Table::Neighbours));
            match &result {
                Err(e) if is_lost(e) => continue,
                _ => break,
            }
        }
        result
    }

    /// Replace `table` with the kernel's, applying the notifications that
    /// arrive in between in the order the kernel sent them.
    fn dump(&mut self, table: Table) -> io::Result<()> {
        let seq = self.feed.request_dump(table)?;
        self.mirror.clear(table);
        loop {
            let n = self.feed.recv(&mut self.buf, true)?;
            let applied = self.mirror.apply(&self.buf[..n], Some(seq));
            // A change the dump may have raced with: the next turn dumps again.
            self.stale |= applied.resync;
            match applied.done {
                Some(0) => return Ok(()),
                Some(error) => return Err(io::Error::from_raw_os_error(-error)),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::driver::netlink::test_messages::{MAC_A, MAC_B, done, ip, msg, neigh_msg, route, route_msg};

    #[test]
    fn longer_prefix_wins() {
        let mut t = RouteTable::<V4>::default();
        t.insert(route("0.0.0.0", 0, 0, 1, Some("192.0.2.1")));
        t.insert(route("10.0.0.0", 8, 0, 2, None));
        t.insert(route("10.1.0.0", 16, 0, 3, Some("10.0.0.1")));
        assert_eq!(t.lookup(ip("10.1.2.3")).unwrap().hop.unwrap().oif, 3);
        assert_eq!(t.lookup(ip("10.2.0.1")).unwrap().hop.unwrap().oif, 2);
        // Default route.
        assert_eq!(t.lookup(ip("198.51.100.7")).unwrap().hop.unwrap().oif, 1);
        t.insert(route("10.1.2.3", 32, 0, 4, None));
        assert_eq!(t.lookup(ip("10.1.2.3")).unwrap().hop.unwrap().oif, 4);
        assert_eq!(t.lookup(ip("10.1.2.4")).unwrap().hop.unwrap().oif, 3);
    }

    #[test]
    fn masks() {
        assert_eq!(V4::mask(0), 0);
        assert_eq!(V4::mask(8), 0xff00_0000);
        assert_eq!(V4::mask(32), u32::MAX);
        assert_eq!(V4::mask(40), u32::MAX);
        assert_eq!(V6::mask(0), 0);
        assert_eq!(V6::mask(64), u128::MAX << 64);
        assert_eq!(V6::mask(128), u128::MAX);
        assert_eq!(V6::mask(200), u128::MAX);
    }

    #[test]
    fn prefixes_spread_over_buckets() {
        // Keys of /24s differ only above their eighth bit; their hashes
        // must still differ in the low bits that pick a bucket.
        let low = |key: u32| {
            let mut h = IntHasher::default();
            h.write_u32(key);
            h.finish() & 0xff
        };
        let buckets: std::collections::HashSet<u64> =
            (0..256u32).map(|i| low(0x0a00_0000 | i << 8)).collect();
        assert!(buckets.len() > 128, "{} buckets", buckets.len());
    }

    #[test]
    fn no_route_without_default() {
        let mut t = RouteTable::<V4>::default();
        t.insert(route("10.0.0.0", 8, 0, 2, None));
        assert!(t.lookup(ip("11.0.0.1")).is_none());
    }

    #[test]
    fn deletion_uncovers_shorter_prefix() {
        let mut t = RouteTable::<V4>::default();
        t.insert(route("0.0.0.0", 0, 0, 1, Some("192.0.2.1")));
        t.insert(route("10.1.0.0", 16, 0, 3, None));
        t.remove(&route("10.1.0.0", 16, 0, 3, None));
        assert_eq!(t.lookup(ip("10.1.2.3")).unwrap().hop.unwrap().oif, 1);
        assert_eq!(t.lens.longest_first().collect::<Vec<_>>(), [0]);
        t.remove(&route("0.0.0.0", 0, 0, 1, None));
        assert!(t.lookup(ip("10.1.2.3")).is_none());
        assert_eq!(t.lens, Lens::default());
    }

    #[test]
    fn lowest_metric_wins_and_replace_keeps_key() {
        let mut t = RouteTable::<V4>::default();
        t.insert(route("10.0.0.0", 8, 200, 2, None));
        t.insert(route("10.0.0.0", 8, 100, 3, None));
        t.insert(route("10.0.0.0", 8, 300, 4, None));
        assert_eq!(t.lookup(ip("10.9.9.9")).unwrap().hop.unwrap().oif, 3);
        // Same key: replaced, not added.
        t.insert(route("10.0.0.0", 8, 100, 5, None));
        assert_eq!(t.lookup(ip("10.9.9.9")).unwrap().hop.unwrap().oif, 5);
        t.remove(&route("10.0.0.0", 8, 100, 5, None));
        assert_eq!(t.lookup(ip("10.9.9.9")).unwrap().hop.unwrap().oif, 2);
    }

    #[test]
    fn unroutable_route_shadows_shorter_prefix() {
        let mut t = RouteTable::<V4>::default();
        t.insert(route("0.0.0.0", 0, 0, 1, Some("192.0.2.1")));
        t.insert(Route { dst: ip("10.0.0.0"), prefix_len: 8, priority: 0, hop: None });
        assert_eq!(t.lookup(ip("10.0.0.1")).unwrap().hop, None);
    }

    #[test]
    fn on_link_uses_destination_and_gateway_its_own_address() {
        let mut m = Mirror::default();
        m.routes4.insert(route("0.0.0.0", 0, 0, 1, Some("192.0.2.1")));
        m.routes4.insert(route("10.0.0.0", 24, 0, 2, None));
        m.neighbours.insert(neighbour_key(2, ip("10.0.0.5")), MAC_A);
        m.neighbours.insert(neighbour_key(1, ip("192.0.2.1")), MAC_B);
        assert_eq!(m.next_hop(ip("10.0.0.5")), Some((2, MAC_A)));
        // On-link but not resolved yet.
        assert_eq!(m.next_hop(ip("10.0.0.6")), None);
        assert_eq!(m.next_hop(ip("198.51.100.1")), Some((1, MAC_B)));
        // A neighbour of that address on another interface does not count.
        m.neighbours.insert(neighbour_key(1, ip("10.0.0.7")), MAC_B);
        assert_eq!(m.next_hop(ip("10.0.0.7")), None);
    }

    #[test]
    fn applying_a_dump() {
        let mut buf = route_msg(24, 7, [10, 0, 0, 0], 8, 2, None);
        buf.extend(route_msg(24, 7, [0; 4], 0, 1, Some([192, 0, 2, 1])));
        buf.extend(done(7));
        let mut m = Mirror::default();
        assert_eq!(m.apply(&buf, Some(7)), Applied { done: Some(0), resync: false });
        assert_eq!(m.routes4.lookup(ip("10.1.1.1")).unwrap().hop.unwrap().oif, 2);
        // Another dump's end is not ours; an interrupted one asks for another.
        assert_eq!(m.apply(&done(6), Some(7)).done, None);
        let intr = msg(3, 2 | 0x10, 7, &0i32.to_ne_bytes());
        assert_eq!(m.apply(&intr, Some(7)), Applied { done: Some(0), resync: true });
        // An error answer ends the dump with its code.
        let err = msg(2, 0, 7, &(-16i32).to_ne_bytes());
        assert_eq!(m.apply(&err, Some(7)).done, Some(-16));
    }

    /// The kernel's side, scripted: each read returns the next chunk or
    /// error once the dumps it waits for have been asked for; dump requests
    /// are numbered from 1.
    #[derive(Default)]
    struct Script {
        reads: VecDeque<(usize, Result<Vec<u8>, i32>)>,
        dumps: Vec<Table>,
    }

    impl Script {
        /// Queue `read` to come once `dumps` dumps have been asked for.
        fn after(&mut self, dumps: usize, read: Result<Vec<u8>, i32>) {
            self.reads.push_back((dumps, read));
        }
    }

    impl Feed for Script {
        fn request_dump(&mut self, table: Table) -> io::Result<u32> {
            self.dumps.push(table);
            Ok(self.dumps.len() as u32)
        }

        fn recv(&mut self, buf: &mut [u8], wait: bool) -> io::Result<usize> {
            let ready = self.reads.front().is_some_and(|(after, _)| *after <= self.dumps.len());
            match self.reads.pop_front_if(|_| ready).map(|(_, read)| read) {
                Some(Ok(chunk)) => {
                    buf[..chunk.len()].copy_from_slice(&chunk);
                    Ok(chunk.len())
                }
                Some(Err(errno)) => Err(io::Error::from_raw_os_error(errno)),
                None if wait => Err(io::ErrorKind::TimedOut.into()),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    /// A mirror with a route to 10.0.0.0/24 on interface 2 and neighbour
    /// 10.0.0.5 there, from dumps 1 and 2.
    fn started() -> NextHops<Script> {
        let mut script = Script::default();
        let mut routes = route_msg(24, 1, [10, 0, 0, 0], 24, 2, None);
        routes.extend(done(1));
        let mut neighbours = neigh_msg(28, 2, 2, [10, 0, 0, 5], 0x02, MAC_A);
        neighbours.extend(done(2));
        script.after(1, Ok(routes));
        script.after(2, Ok(neighbours));
        let mut hops = NextHops::with_feed(script);
        hops.resync().unwrap();
        assert_eq!(hops.mirror.next_hop(ip("10.0.0.5")), Some((2, MAC_A)));
        hops
    }

    #[test]
    fn notifications_update_the_mirror() {
        let mut hops = started();
        let mut news = neigh_msg(28, 0, 2, [10, 0, 0, 6], 0x02, MAC_B);
        news.extend(neigh_msg(29, 0, 2, [10, 0, 0, 5], 0x00, MAC_A));
        hops.feed.after(2, Ok(news));
        hops.poll_updates();
        assert_eq!(hops.mirror.next_hop(ip("10.0.0.6")), Some((2, MAC_B)));
        assert_eq!(hops.mirror.next_hop(ip("10.0.0.5")), None);
        hops.feed.after(2, Ok(route_msg(25, 0, [10, 0, 0, 0], 24, 2, None)));
        hops.poll_updates();
        assert_eq!(hops.mirror.next_hop(ip("10.0.0.6")), None);
        assert_eq!(hops.feed.dumps.len(), 2);
    }

    #[test]
    fn lost_notifications_dump_again() {
        let mut hops = started();
        // While notifications were lost, the route moved to interface 3.
        let mut routes = route_msg(24, 3, [10, 0, 0, 0], 24, 3, None);
        routes.extend(done(3));
        let mut neighbours = neigh_msg(28, 4, 3, [10, 0, 0, 5], 0x02, MAC_B);
        neighbours.extend(done(4));
        hops.feed.after(2, Err(libc::ENOBUFS));
        hops.feed.after(3, Ok(routes));
        hops.feed.after(4, Ok(neighbours));
        hops.poll_updates();
        assert_eq!(hops.feed.dumps, [Table::Routes, Table::Neighbours, Table::Routes, Table::Neighbours]);
        assert_eq!(hops.mirror.next_hop(ip("10.0.0.5")), Some((3, MAC_B)));
        assert!(!hops.stale);
    }

    #[test]
    fn loss_during_a_dump_starts_it_over() {
        let mut hops = started();
        let mut routes = route_msg(24, 4, [10, 0, 0, 0], 24, 3, None);
        routes.extend(done(4));
        let mut neighbours = neigh_msg(28, 5, 3, [10, 0, 0, 5], 0x02, MAC_B);
        neighbours.extend(done(5));
        hops.feed.after(2, Err(libc::ENOBUFS));
        hops.feed.after(3, Err(libc::ENOBUFS));
        hops.feed.after(4, Ok(routes));
        hops.feed.after(5, Ok(neighbours));
        hops.poll_updates();
        assert_eq!(hops.feed.dumps.len(), 5);
        assert_eq!(hops.mirror.next_hop(ip("10.0.0.5")), Some((3, MAC_B)));
    }

    #[test]
    fn failed_dump_is_tried_next_turn() {
        let mut hops = started();
        // A link went down; the dump asked for then gets no answer.
        let mut down = vec![0, 0, 1, 0];
        down.extend_from_slice(&2i32.to_ne_bytes());
        down.extend_from_slice(&[0; 8]);
        hops.feed.after(2, Ok(msg(16, 0, 0, &down)));
        hops.poll_updates();
        assert!(hops.stale);
        assert_eq!(hops.feed.dumps.len(), 3);
        let mut routes = route_msg(24, 4, [10, 0, 0, 0], 24, 2, None);
        routes.extend(done(4));
        hops.feed.after(4, Ok(routes));
        hops.feed.after(5, Ok(done(5)));
        hops.poll_updates();
        assert!(!hops.stale);
        // The neighbours went with the link.
        assert_eq!(hops.mirror.routes4.lookup(ip("10.0.0.5")).unwrap().hop.unwrap().oif, 2);
        assert_eq!(hops.mirror.next_hop(ip("10.0.0.5")), None);
    }

    #[test]
    fn ipv6_routes_and_neighbours() {
        let mut m = Mirror::default();
        m.routes6.insert(route("::", 0, 1024, 1, Some("fe80::1")));
        m.routes6.insert(route("fd10:77:1::", 64, 256, 2, None));
        m.routes4.insert(route("0.0.0.0", 0, 0, 3, Some("192.0.2.1")));
        m.neighbours.insert(neighbour_key(1, ip("fe80::1")), MAC_A);
        m.neighbours.insert(neighbour_key(2, ip("fd10:77:1::11")), MAC_B);
        m.neighbours.insert(neighbour_key(3, ip("192.0.2.1")), MAC_B);
        assert_eq!(m.next_hop(ip("fd10:77:1::11")), Some((2, MAC_B)));
        assert_eq!(m.next_hop(ip("fd10:77:1::12")), None);
        // The default route's link-local gateway, on its own interface.
        assert_eq!(m.next_hop(ip("2001:db8::1")), Some((1, MAC_A)));
        // An IPv4 destination never takes an IPv6 route, nor the reverse.
        assert_eq!(m.next_hop(ip("10.0.0.1")), Some((3, MAC_B)));
        m.routes4.clear();
        assert_eq!(m.next_hop(ip("10.0.0.1")), None);
        // An IPv4-mapped address is no IPv4 neighbour.
        m.routes6.insert(route("::ffff:0.0.0.0", 96, 0, 3, None));
        assert_eq!(m.next_hop(ip("::ffff:192.0.2.1")), Some((3, MAC_B)));
        let mut lens = RouteTable::<V6>::default();
        for len in [0, 1, 63, 64, 65, 127, 128] {
            lens.lens.set(len, true);
        }
        assert_eq!(lens.lens.longest_first().collect::<Vec<_>>(), [128, 127, 65, 64, 63, 1, 0]);
    }

    #[test]
    fn ipv6_neighbour_resolved_by_the_kernel_fills_the_mirror() {
        use crate::driver::netlink::{Netlink, index_of};
        use crate::os::{self, Peer, shell};
        let Some(peer) = Peer::start() else { return };
        let tid = peer.tid();
        os::in_new_netns(move || {
            let mut netlink = Netlink::open().unwrap();
            netlink.add_veth_pair("rvsn0", "rvsn1").unwrap();
            shell(&format!("ip link set rvsn1 netns {tid}"));
            shell("ip addr add fd10:77:1::1/64 dev rvsn0 nodad && ip link set rvsn0 up");
            peer.shell("ip addr add fd10:77:1::11/64 dev rvsn1 nodad && ip link set rvsn1 up");
            let mac = peer.shell("ip -br link show rvsn1").split_whitespace().nth(2).unwrap().to_owned();
            // Until the kernel has seen the carrier come up, it drops what the link would send.
            let up = |shown: String| shown.contains("state UP");
            for _ in 0..300 {
                if up(shell("ip link show rvsn0")) && up(peer.shell("ip link show rvsn1")) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            os::sysctl("net/ipv6/conf/all/forwarding", "1").unwrap();
            let tun = crate::driver::tun::Tun::create_queues("rvsnt", 1).unwrap();
            netlink.link_up(tun[0].index()).unwrap();
            let mut hops = NextHops::open().unwrap();
            let real = ip("fd10:77:1::11");
            assert_eq!(hops.mirror.next_hop(real), None);
            // What the driver does without a next hop: the packet goes to the
            // kernel, whose forwarding asks for the neighbour.
            let (IpAddr::V6(src), IpAddr::V6(dst)) = (ip("fd10:77:3::1"), real) else { unreachable!() };
            let mut packet = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
            packet.extend_from_slice(&src.octets());
            packet.extend_from_slice(&dst.octets());
            packet.extend_from_slice(&[0x07, 0xd0, 0, 9, 0, 8, 0, 0]);
            tun[0].send(&packet).unwrap();
            let found = (0..250).find_map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                hops.poll_updates();
                hops.mirror.next_hop(real)
            });
            let oif = index_of("rvsn0").unwrap();
            let mac = mac.split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect::<Vec<_>>();
            assert_eq!(found.map(|(i, m)| (i, m.to_vec())), Some((oif, mac)));
        });
    }

    #[test]
    fn mirrors_this_namespace() {
        // Dumps need no privilege and change nothing: the kernel takes the
        // requests and every message parses up to each dump's end.
        let mut hops = NextHops::open().expect("dump of this namespace's tables");
        hops.poll_updates();
        assert!(!hops.stale);
    }
}
