//! The rvs engine as the simulator's middlebox, run by the one driver loop
//! ([`rvs_core::io::Driver`]) over a device that is the middlebox's port.

use rvs_core::io::{Device, Driver};
use rvs_core::{DropReason, Engine, Instant, Side};

use crate::middlebox::{Middlebox, Outbox};

/// Largest packet the engine builds in the simulator.
const BUF_LEN: usize = 2048;

/// The middlebox's port as a device: the packet just arrived, and the
/// outbox what leaves goes to.
struct Port<'a> {
    now: Instant,
    arrived: Option<Vec<u8>>,
    out: &'a mut Outbox,
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
}

impl Middlebox for Engine {
    fn handle(&mut self, now: Instant, packet: Vec<u8>, out: &mut Outbox) {
        let mut port = Port { now, arrived: Some(packet), out };
        Driver::new(1, BUF_LEN).receive(self, &mut port);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Self::poll_timeout(self)
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        let mut port = Port { now, arrived: None, out };
        Driver::new(1, BUF_LEN).handle_timeout(self, &mut port, now);
    }
}
