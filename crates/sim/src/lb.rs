//! The rvs engine as the simulator's middlebox, run by the one driver loop
//! ([`rvs_core::io::Driver`]) over a device that is the middlebox's port,
//! with or without a fast path in front ([`crate::FastPathLb`]).

use rvs_core::fast_path::{FastPathStats, FlowReport, Offload};
use rvs_core::io::{Device, Driver};
use rvs_core::{DropReason, Engine, Instant, Side};

use crate::fast_path::FlowTable;
use crate::middlebox::{Middlebox, Outbox};

/// Largest packet the engine builds in the simulator.
const BUF_LEN: usize = 2048;

/// The middlebox's port as a device: the packet just arrived, the outbox
/// what leaves goes to, and the fast path's flow table if there is one.
struct Port<'a> {
    now: Instant,
    arrived: Option<Vec<u8>>,
    out: &'a mut Outbox,
    table: Option<&'a mut FlowTable>,
}

impl Device for Port<'_> {
    type Rx = Vec<u8>;

    fn now(&self) -> Instant {
        self.now
    }

    fn receive(&mut self, batch: &mut Vec<Vec<u8>>) {
        batch.extend(self.arrived.take());
    }

    fn packet<'a>(&'a mut self, rx: &'a mut Vec<u8>) -> &'a mut [u8] {
        rx
    }

    fn send(&mut self, rx: Vec<u8>, _to: Side) -> Result<(), DropReason> {
        self.out.forward(rx);
        Ok(())
    }

    fn discard(&mut self, _rx: Vec<u8>) {}

    fn transmit(&mut self, packet: &[u8], _to: Side) -> Result<(), DropReason> {
        self.out.originate(packet.to_vec());
        Ok(())
    }

    fn offload(&mut self, change: &Offload) {
        if let Some(t) = self.table.as_deref_mut() {
            t.offload(change);
        }
    }

    fn poll_flow_report(&mut self, now: Instant) -> Option<FlowReport> {
        self.table.as_deref_mut()?.poll_report(now)
    }

    fn poll_fast_path_stats(&mut self) -> Option<FastPathStats> {
        self.table.as_deref_mut()?.poll_stats()
    }
}

/// Run `packet` through `engine` (and its fast path's flow table).
pub(crate) fn receive(
    engine: &mut Engine,
    table: Option<&mut FlowTable>,
    now: Instant,
    packet: Vec<u8>,
    out: &mut Outbox,
) {
    let mut port = Port { now, arrived: Some(packet), out, table };
    Driver::new(1, BUF_LEN).receive(engine, &mut port);
}

/// Run `engine`'s timers due at `now`.
pub(crate) fn handle_timeout(
    engine: &mut Engine,
    table: Option<&mut FlowTable>,
    now: Instant,
    out: &mut Outbox,
) {
    let mut port = Port { now, arrived: None, out, table };
    Driver::new(1, BUF_LEN).handle_timeout(engine, &mut port, now);
}

impl Middlebox for Engine {
    fn handle(&mut self, now: Instant, packet: Vec<u8>, out: &mut Outbox) {
        receive(self, None, now, packet, out);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Self::poll_timeout(self)
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        handle_timeout(self, None, now, out);
    }
}
