//! The node at the centre of the star.

use rvs_core::Instant;

/// What sits between all hosts: every packet a host sends reaches it first,
/// and whatever it forwards is delivered to the host owning the (possibly
/// rewritten) destination address.
///
/// The shape follows the load balancer core: a packet is rewritten in place
/// and a verdict returned; timers are polled, never slept on. The buffer is a
/// `Vec` so a middlebox may grow or shrink the packet (encapsulation, option
/// stripping). Addresses no host owns (VIPs, local addresses) need no
/// claiming: every packet reaches the middlebox whatever its destination,
/// and only what it forwards must be addressed to a host.
///
/// ```
/// use rvs_core::Instant;
/// use rvs_sim::{Middlebox, PacketInfo};
///
/// /// Forwards everything but UDP, and counts what it dropped.
/// #[derive(Default)]
/// struct NoUdp {
///     dropped: u64,
/// }
///
/// impl Middlebox for NoUdp {
///     fn handle(&mut self, _now: Instant, packet: &mut Vec<u8>) -> bool {
///         let udp = PacketInfo::parse(packet).is_some_and(|i| i.proto == 17);
///         self.dropped += u64::from(udp);
///         !udp
///     }
/// }
/// ```
pub trait Middlebox {
    /// Rewrite `packet` (a raw IPv4/IPv6 packet) in place; true = forward
    /// it, false = it was dropped (the middlebox counts why).
    fn handle(&mut self, now: Instant, packet: &mut Vec<u8>) -> bool;

    /// A packet the middlebox originates itself (e.g. a SYN proxy's
    /// SYN-ACK). Called after every `handle` and `handle_timeout` until it
    /// returns `None`.
    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let _ = now;
        None
    }

    /// When `handle_timeout` next wants to run.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Run timers due at `now`.
    fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }
}

/// A middlebox that forwards every packet unchanged: the simulator on its
/// own, and the baseline a load balancer's results are compared against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Router;

impl Middlebox for Router {
    fn handle(&mut self, _now: Instant, _packet: &mut Vec<u8>) -> bool {
        true
    }
}

impl<M: Middlebox + ?Sized> Middlebox for Box<M> {
    fn handle(&mut self, now: Instant, packet: &mut Vec<u8>) -> bool {
        (**self).handle(now, packet)
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        (**self).poll_transmit(now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }
    fn handle_timeout(&mut self, now: Instant) {
        (**self).handle_timeout(now);
    }
}
