//! What a feature component (SYNProxy, client-address delivery) reaches
//! outside its own state, borrowed from the engine for one call.

use crate::config::EngineConfig;
use crate::conn::Connections;
use crate::drop::{DropCounters, DropReason};
use crate::emit::Segment;
use crate::emit::store::PacketStore;
use crate::service::Service;
use crate::tcp_state::Side;

/// The engine's shared parts a component method may use: the connections,
/// the services (for the reals' RTOs), the store that built packets go out
/// through, the configuration, and where a full store is counted.
pub(crate) struct Ctx<'a> {
    pub(crate) conns: &'a mut Connections,
    pub(crate) services: &'a mut [Service],
    pub(crate) store: &'a mut PacketStore,
    pub(crate) cfg: &'a EngineConfig,
    pub(crate) drops: &'a mut DropCounters,
}

impl Ctx<'_> {
    /// Build a segment into a slot and queue it toward `to` (a full store is counted).
    pub(crate) fn queue_segment(&mut self, seg: &Segment, to: Side) {
        let Some(slot) = self.store.alloc() else {
            self.drops.add(DropReason::TxQueueFull);
            return;
        };
        let len = seg.emit(self.store.slot_mut(slot));
        self.store.set_len(slot, len);
        self.store.queue(slot, to);
    }
}
