//! The rvs engine as the simulator's middlebox.

use rvs_core::{Engine, Instant, Verdict};

use crate::middlebox::Middlebox;

impl Middlebox for Engine {
    fn handle(&mut self, now: Instant, packet: &mut Vec<u8>) -> bool {
        matches!(Self::handle(self, now, packet), Verdict::Forward { .. })
    }

    fn poll_transmit(&mut self, _now: Instant) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        let (len, _) = Self::poll_transmit(self, &mut buf)?;
        buf.truncate(len);
        Some(buf)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Self::poll_timeout(self)
    }

    fn handle_timeout(&mut self, now: Instant) {
        Self::handle_timeout(self, now);
    }
}
