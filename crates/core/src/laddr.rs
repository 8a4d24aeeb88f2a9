//! Local addresses and ports: where FullNAT connections toward reals come from.

use core::time::Duration;
use std::net::IpAddr;

use crate::addr::{Endpoint, Proto};
use crate::config::WorkerSlice;
use crate::time::Instant;

/// Index of a [`PortPool`] in [`LocalPools`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolId(pub u32);

/// The ports of one local address toward one real (per protocol).
#[derive(Debug, Clone)]
pub struct PortPool {}

impl PortPool {
    /// A pool over `range` (inclusive) restricted to `worker`'s ports.
    pub fn new(range: (u16, u16), worker: WorkerSlice, quarantine: Duration, now: Instant) -> Self {
        let _ = (range, worker, quarantine, now);
        unimplemented!()
    }

    /// A free port, chosen from `random`; `None` when every port is taken or resting.
    pub fn allocate(&mut self, now: Instant, random: u64) -> Option<u16> {
        let _ = (now, random);
        unimplemented!()
    }

    /// Return `port`; it rests for the quarantine before it is handed out again.
    pub fn release(&mut self, now: Instant, port: u16) {
        let _ = (now, port);
        unimplemented!()
    }
}

/// Every port pool of an engine, keyed by (protocol, local address, real).
#[derive(Debug, Default)]
pub struct LocalPools {}

impl LocalPools {
    /// The pool for (proto, laddr, real), created on first use.
    pub fn get_or_create(&mut self, proto: Proto, laddr: IpAddr, real: Endpoint, now: Instant) -> PoolId {
        let _ = (proto, laddr, real, now);
        unimplemented!()
    }
}
