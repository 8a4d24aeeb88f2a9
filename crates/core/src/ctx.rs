//! What a feature component (SYNProxy, client-address delivery) reaches
//! outside its own state, borrowed from the engine for one call.

use crate::config::EngineConfig;
use crate::conn::Connections;
use crate::drop::DropCounters;
use crate::emit::store::PacketStore;
use crate::service::Service;

/// The engine's shared parts a component method may use: the connections,
/// the services (for the reals' RTOs), the store that built packets go out
/// through, the configuration, and where a full store is counted.
pub(crate) struct Ctx<'a> {
    pub(crate) conns: &'a mut Connections,
    pub(crate) services: &'a [Service],
    pub(crate) store: &'a mut PacketStore,
    pub(crate) cfg: &'a EngineConfig,
    pub(crate) drops: &'a mut DropCounters,
}
