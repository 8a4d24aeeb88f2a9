//! The node at the centre of the star.

use rvs_core::Instant;

/// What sits between all hosts: every packet a host sends reaches it first,
/// and whatever leaves it is delivered to the host owning the (possibly
/// rewritten) destination address.
///
/// The shape follows the load balancer core: a packet comes in with the
/// time, and timers are polled, never slept on. What leaves goes into an
/// [`Outbox`] in the order it is sent: packets handed in and sent on
/// (forwarded), and packets the middlebox built itself (originated). A
/// packet handed in and not forwarded was dropped. The packet is a `Vec` so
/// a middlebox may grow or shrink it (encapsulation, option stripping).
/// Addresses no host owns (VIPs, local addresses) need no claiming: every
/// packet reaches the middlebox whatever its destination, and only what
/// leaves must be addressed to a host.
///
/// ```
/// use rvs_core::Instant;
/// use rvs_sim::{Middlebox, Outbox, PacketInfo};
///
/// /// Forwards everything but UDP, and counts what it dropped.
/// #[derive(Default)]
/// struct NoUdp {
///     dropped: u64,
/// }
///
/// impl Middlebox for NoUdp {
///     fn handle(&mut self, _now: Instant, packet: Vec<u8>, out: &mut Outbox) {
///         if PacketInfo::parse(&packet).is_some_and(|i| i.proto == 17) {
///             self.dropped += 1;
///         } else {
///             out.forward(packet);
///         }
///     }
/// }
/// ```
pub trait Middlebox {
    /// Take in `packet` (a raw IPv4/IPv6 packet) and put what leaves into
    /// `out`, in sending order; a packet not forwarded was dropped (the
    /// middlebox counts why).
    fn handle(&mut self, now: Instant, packet: Vec<u8>, out: &mut Outbox);

    /// When `handle_timeout` next wants to run.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Run timers due at `now`; what they build goes into `out`.
    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        let _ = (now, out);
    }
}

/// What leaves the middlebox, in sending order.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Each packet, and whether it was handed in (forwarded) rather than built.
    packets: Vec<(Vec<u8>, bool)>,
}

impl Outbox {
    /// Send on a packet the middlebox was handed (rewritten or not).
    pub fn forward(&mut self, packet: Vec<u8>) {
        self.packets.push((packet, true));
    }

    /// Send a packet the middlebox built itself.
    pub fn originate(&mut self, packet: Vec<u8>) {
        self.packets.push((packet, false));
    }

    /// The packets in sending order, each with whether it was forwarded.
    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, (Vec<u8>, bool)> {
        self.packets.drain(..)
    }
}

/// A middlebox that forwards every packet unchanged: the simulator on its
/// own, and the baseline a load balancer's results are compared against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Router;

impl Middlebox for Router {
    fn handle(&mut self, _now: Instant, packet: Vec<u8>, out: &mut Outbox) {
        out.forward(packet);
    }
}

impl<M: Middlebox + ?Sized> Middlebox for Box<M> {
    fn handle(&mut self, now: Instant, packet: Vec<u8>, out: &mut Outbox) {
        (**self).handle(now, packet, out);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }
    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        (**self).handle_timeout(now, out);
    }
}
