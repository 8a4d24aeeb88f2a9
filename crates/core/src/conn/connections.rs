//! The connections component: the table, the local port pools and the
//! clocks toward reals, and the only code that creates a connection, moves
//! it between states and releases it.
//!
//! A real's active and inactive counts change in one place,
//! [`on_transition`], whichever way a connection comes, changes state or
//! goes. Features (SYNProxy, client-address delivery) keep their own state
//! and reach a connection through [`Connections::get`] and
//! [`Connections::get_mut`]; what a connection holds of theirs is given
//! back by the engine when [`Connections::release`] is called for it.

use core::time::Duration;

use crate::addr::{Endpoint, FlowKey};
use crate::conn::{Conn, ConnId, ConnTable, TableFull, Translation};
use crate::drop::DropReason;
use crate::hash::Secrets;
use crate::laddr::{LocalPools, PoolId, Reuse};
use crate::real_clock::RealClock;
use crate::service::Real;
use crate::tcp_state::TcpState;
use crate::time::Instant;

/// Domain of [`Secrets::derive`] for the draw of a local address.
const DRAW_LADDR: u8 = 1;

/// Move a real's active/inactive counts for a connection going `from` one
/// state `to` another (`None`: not counted, before creation or after release).
pub(crate) fn on_transition(real: &mut Real, from: Option<TcpState>, to: Option<TcpState>) {
    let active = |s: Option<TcpState>| s.map(TcpState::is_active);
    if active(from) == active(to) {
        return;
    }
    match active(from) {
        Some(true) => real.active_conns = real.active_conns.saturating_sub(1),
        Some(false) => real.inactive_conns = real.inactive_conns.saturating_sub(1),
        None => {}
    }
    match active(to) {
        Some(true) => real.active_conns += 1,
        Some(false) => real.inactive_conns += 1,
        None => {}
    }
}

/// Where a new connection goes: the real, and the local address and port toward it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    pub(crate) real_index: usize,
    pub(crate) real: Endpoint,
    pub(crate) laddr: Endpoint,
    pub(crate) pool: PoolId,
}

impl Placement {
    /// A connection of `key` placed here, with neutral translation.
    pub(crate) fn conn(&self, key: &FlowKey, service: u32, state: TcpState, expires: Instant) -> Conn {
        Conn {
            client: key.src,
            vip: key.dst,
            laddr: self.laddr,
            real: self.real,
            proto: key.proto,
            state,
            client_wscale: 0,
            real_wscale: 0,
            peer_wscale: 0,
            service,
            real_index: self.real_index as u32,
            xlat: Translation::default(),
            progress: Default::default(),
            handshake: Default::default(),
            delivery: None,
            fast_path: Default::default(),
            expires,
        }
    }
}

/// The connections of one engine, their local ports and clocks.
#[derive(Debug)]
pub(crate) struct Connections {
    table: ConnTable,
    pools: LocalPools,
    /// The ISN and TSval clocks toward reals; when a local port may be reused.
    clock: RealClock,
    /// How long a local port rests when the real may still hold its tuple.
    port_quarantine: Duration,
    /// Counts new connections; mixed into per-connection random draws.
    draws: u64,
    /// Connections the last expiry took out, until they are released (kept
    /// to reuse its memory).
    expired: Vec<(ConnId, Conn)>,
}

impl Connections {
    pub(crate) fn new(
        table: ConnTable,
        pools: LocalPools,
        clock: RealClock,
        port_quarantine: Duration,
    ) -> Self {
        Self { table, pools, clock, port_quarantine, draws: 0, expired: Vec::new() }
    }

    /// The connection `id` names, if it is still there.
    #[inline]
    pub(crate) fn get(&self, id: ConnId) -> Option<&Conn> {
        self.table.get(id)
    }

    /// The connection `id` names, to update its translation, progress and
    /// feature state (its TCP state changes through [`Self::set_state`]).
    #[inline]
    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.table.get_mut(id)
    }

    /// The table itself, for lookups, expiry and listings.
    #[inline]
    pub(crate) fn table(&self) -> &ConnTable {
        &self.table
    }

    /// Move connection `id`'s idle deadline (and its place in the expiry wheel).
    #[inline]
    pub(crate) fn set_expiry(&mut self, id: ConnId, expires: Instant) {
        self.table.set_expiry(id, expires);
    }

    /// The secrets every hash and draw is keyed with.
    pub(crate) fn secrets(&self) -> &Secrets {
        self.table.secrets()
    }

    /// Local port pools.
    pub(crate) fn pools(&self) -> &LocalPools {
        &self.pools
    }

    /// Local port pools, for the control plane's changes.
    pub(crate) fn pools_mut(&mut self) -> &mut LocalPools {
        &mut self.pools
    }

    /// The clocks toward reals.
    pub(crate) fn clock(&self) -> &RealClock {
        &self.clock
    }

    /// A local address (one of `laddrs`, drawn per flow) and port toward
    /// `real`, if any of its pools has a port free.
    pub(crate) fn allocate_port(
        &mut self,
        now: Instant,
        key: &FlowKey,
        real: &Real,
        laddrs: &[core::net::IpAddr],
    ) -> Option<(Endpoint, PoolId)> {
        let draw = self.table.secrets().derive(DRAW_LADDR, key.proto, key.src, key.dst, self.draws);
        self.draws = self.draws.wrapping_add(1);
        let n = real.pools.len();
        (0..n).find_map(|k| {
            let at = (draw as usize).wrapping_add(k) % n;
            let pool = real.pools[at];
            let port = self.pools.pool_mut(pool).allocate(now)?;
            Some((Endpoint::new(laddrs.get(at).copied()?, port), pool))
        })
    }

    /// Insert a connection placed on `pool`; the caller counts it with
    /// [`on_transition`] once the entry that made way, if any, is released.
    /// The port may still name a connection that is over and kept only for
    /// late segments: that entry makes way and comes back. On failure the
    /// port goes back to its pool.
    pub(crate) fn insert(
        &mut self,
        now: Instant,
        conn: Conn,
        pool: PoolId,
    ) -> Result<(ConnId, Option<(ConnId, Conn)>), DropReason> {
        let port = conn.laddr.port;
        self.table.insert(conn, |c| c.progress.port_given_back()).map_err(|e| {
            self.pools.pool_mut(pool).release(now, port, Reuse::AtOnce);
            match e {
                TableFull::Full => DropReason::TableFull,
                TableFull::Duplicate => DropReason::NoLocalPort,
            }
        })
    }

    /// Move connection `id` to TCP state `to`, counting the change toward its `real`.
    pub(crate) fn set_state(&mut self, id: ConnId, to: TcpState, real: Option<&mut Real>) {
        let Some(conn) = self.table.get_mut(id) else { return };
        let from = conn.state;
        conn.state = to;
        if let Some(real) = real {
            on_transition(real, Some(from), Some(to));
        }
    }

    /// Take connection `id` out of the table; the caller releases it.
    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        self.table.remove(id)
    }

    /// Give back what a connection that left the table holds here: its
    /// local port (for reuse at once, or after a rest: `real_clock.rs`) and
    /// its count toward its `real`.
    pub(crate) fn release(&mut self, now: Instant, conn: &Conn, real: Option<&mut Real>) {
        if !conn.progress.port_given_back() {
            let reuse = self.clock.reuse(now, conn, self.port_quarantine);
            self.give_back(now, conn, reuse);
        }
        if let Some(real) = real {
            on_transition(real, Some(conn.state), None);
        }
    }

    fn give_back(&mut self, now: Instant, conn: &Conn, reuse: Reuse) {
        if let Some(pool) = self.pools.get(conn.proto, conn.laddr.addr, conn.real) {
            self.pools.pool_mut(pool).release(now, conn.laddr.port, reuse);
        }
    }

    /// A TCP connection is over (both FINs acknowledged, or an RST). If the
    /// real would accept a new SYN on its tuple already, its port goes back
    /// to its pool now, while the entry stays the closing timeout for late
    /// segments, and makes way should the port be handed out before that
    /// ([`Self::insert`]): so the ports a service needs follow its open
    /// connections, not its closing timeouts. Otherwise the port waits for
    /// the entry to go, when the clocks have moved on.
    pub(crate) fn connection_over(&mut self, now: Instant, id: ConnId) {
        let Some(conn) = self.table.get(id).filter(|c| !c.progress.port_given_back()) else { return };
        if self.clock.reuse(now, conn, self.port_quarantine) != Reuse::AtOnce {
            return;
        }
        let conn = conn.clone();
        self.give_back(now, &conn, Reuse::AtOnce);
        if let Some(c) = self.table.get_mut(id) {
            c.progress.give_port_back();
        }
    }

    /// Take out the connections idle past their expiry, for the caller to
    /// release; the buffer is handed back with [`Self::recycle`]. `due`
    /// sees each connection whose deadline passed first and may keep it
    /// by moving its deadline later ([`ConnTable::handle_timeout`]).
    pub(crate) fn expire(&mut self, now: Instant, due: impl FnMut(&mut Conn)) -> Vec<(ConnId, Conn)> {
        let mut expired = core::mem::take(&mut self.expired);
        self.table.handle_timeout(now, due, |id, conn| expired.push((id, conn)));
        expired
    }

    /// Hand back the (drained) buffer [`Self::expire`] returned.
    pub(crate) fn recycle(&mut self, expired: Vec<(ConnId, Conn)>) {
        self.expired = expired;
    }

    /// Keep the pools' counts current for listings and metrics (rotation is lazy inside them).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.pools.handle_timeout(now);
    }

    /// When the table next expires something.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.table.poll_timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real() -> Real {
        crate::sched::tests::real_at(Endpoint::new([10, 2, 0, 1].into(), 80), 1)
    }

    #[test]
    fn a_connection_is_counted_once_through_its_life() {
        use TcpState::{Established, FinWait, SynRecv, TimeWait};
        let mut r = real();
        let counts = |r: &Real| (r.active_conns, r.inactive_conns);
        on_transition(&mut r, None, Some(SynRecv));
        assert_eq!(counts(&r), (0, 1));
        on_transition(&mut r, Some(SynRecv), Some(Established));
        assert_eq!(counts(&r), (1, 0));
        // Moves within one class change nothing.
        on_transition(&mut r, Some(FinWait), Some(TimeWait));
        assert_eq!(counts(&r), (1, 0));
        on_transition(&mut r, Some(Established), Some(FinWait));
        assert_eq!(counts(&r), (0, 1));
        on_transition(&mut r, Some(FinWait), None);
        assert_eq!(counts(&r), (0, 0));
        // A release of an uncounted connection cannot wrap below zero.
        on_transition(&mut r, Some(Established), None);
        assert_eq!(counts(&r), (0, 0));
    }
}
