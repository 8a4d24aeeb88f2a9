//! Drivers move packets between the kernel and the core engine; they hold
//! no protocol logic.

pub(crate) mod devices;
pub(crate) mod netlink;
pub(crate) mod offload;
pub(crate) mod tun;
pub(crate) mod xdp;
