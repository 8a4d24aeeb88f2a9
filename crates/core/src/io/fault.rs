//! A device wrapper that loses packets on the balancer–real link, for labs
//! and tests (after smoltcp's `phy::FaultInjector`).

use std::net::IpAddr;

use rvs_wire::{ip_protocol, ipv4, ipv6, tcp};

use super::Device;
use crate::fast_path::{FastPathStats, FlowReport, Offload};
use crate::{DropReason, Instant, Side};

/// Wraps a device and drops a share of the packets crossing the link to the
/// reals: those received from a real (addressed to a local address), lost
/// before the engine sees them, and those sent toward a real. Every loss is
/// counted as [`DropReason::FaultInjected`]. The draws come from a seeded
/// generator, so the same seed and traffic lose the same packets.
#[derive(Debug)]
pub struct FaultInjector<D: Device> {
    inner: D,
    faults: Faults,
    /// The local addresses: a packet to one of them comes from a real.
    laddrs: Vec<IpAddr>,
    /// The wrapped device's batch, moved into the caller's with marks.
    batch: Vec<D::Rx>,
    /// Losses on the way in not yet reported by [`Device::poll_drop`].
    lost: u32,
}

/// A received packet, marked when it came from a real (so it is not put
/// at risk a second time on its way out).
#[derive(Debug)]
pub struct Marked<R> {
    rx: R,
    from_real: bool,
}

/// The loss rates and the generator they draw from.
#[derive(Debug)]
struct Faults {
    /// Share of real-side packets lost, as a threshold for [`Self::draw`].
    loss: u64,
    /// Share of real-side SYNs and SYN-ACKs lost besides.
    syn_loss: u64,
    rng: u64,
}

impl Faults {
    fn active(&self) -> bool {
        self.loss > 0 || self.syn_loss > 0
    }

    /// Whether this packet is lost.
    fn lose(&mut self, packet: &[u8]) -> bool {
        (self.loss > 0 && self.draw() < self.loss)
            || (self.syn_loss > 0 && is_handshake(packet) && self.draw() < self.syn_loss)
    }

    /// xorshift64: the fault injector needs speed, not quality.
    fn draw(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// A probability as a threshold for [`Faults::draw`].
fn threshold(p: f64) -> u64 {
    (p.clamp(0.0, 1.0) * u64::MAX as f64) as u64
}

/// The destination and transport segment of an IPv4 or IPv6 packet, if
/// it parses (extension headers walked).
fn dst_and_segment(packet: &[u8]) -> Option<(IpAddr, u8, &[u8])> {
    match packet.first()? >> 4 {
        4 => {
            let ip = ipv4::Packet::new_checked(packet).ok()?;
            let (dst, proto, ihl) = (ip.dst_addr().into(), ip.protocol(), ip.header_len());
            Some((dst, proto, packet.get(ihl..usize::from(ip.total_len()))?))
        }
        6 => {
            let ip = ipv6::Packet::new_checked(packet).ok()?;
            let (proto, at) = ip.transport().ok()?;
            let end = ipv6::HEADER_LEN + usize::from(ip.payload_len());
            Some((ip.dst_addr().into(), proto, packet.get(at..end)?))
        }
        _ => None,
    }
}

/// Whether a packet is a TCP SYN or SYN-ACK (the handshake-only loss).
fn is_handshake(packet: &[u8]) -> bool {
    dst_and_segment(packet).is_some_and(|(_, proto, seg)| {
        proto == ip_protocol::TCP && tcp::Packet::new_checked(seg).is_ok_and(|t| t.flags().syn())
    })
}

/// The destination of a packet.
fn ip_dst(packet: &[u8]) -> Option<IpAddr> {
    dst_and_segment(packet).map(|(dst, _, _)| dst)
}

impl<D: Device> FaultInjector<D> {
    /// Wrap `inner`, losing `loss` (0.0..=1.0) of the real-side packets and
    /// `syn_loss` of their SYNs and SYN-ACKs besides, drawn from `seed`.
    pub fn new(inner: D, loss: f64, syn_loss: f64, seed: u64) -> Self {
        Self {
            inner,
            faults: Faults { loss: threshold(loss), syn_loss: threshold(syn_loss), rng: seed | 1 },
            laddrs: Vec::new(),
            batch: Vec::new(),
            lost: 0,
        }
    }

    /// Tell apart the packets that come from reals: those addressed to one
    /// of `laddrs` (the engine's local addresses; set again when they change).
    pub fn set_laddrs(&mut self, laddrs: impl IntoIterator<Item = IpAddr>) {
        self.laddrs.clear();
        self.laddrs.extend(laddrs);
    }

    /// The wrapped device.
    pub fn get_ref(&self) -> &D {
        &self.inner
    }

    /// The wrapped device, mutable.
    pub fn get_mut(&mut self) -> &mut D {
        &mut self.inner
    }
}

impl<D: Device> Device for FaultInjector<D> {
    type Rx = Marked<D::Rx>;

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn wait(&mut self, deadline: Option<Instant>) {
        self.inner.wait(deadline);
    }

    fn receive(&mut self, batch: &mut Vec<Self::Rx>) {
        let room = batch.capacity() - batch.len();
        // Grows once, to the loop's batch size.
        self.batch.reserve_exact(room);
        self.inner.receive(&mut self.batch);
        for mut rx in self.batch.drain(..) {
            // A packet from a real crossed the lossy link before the
            // balancer saw it: lose it before the engine does.
            let packet = self.inner.packet(&mut rx);
            let from_real =
                self.faults.active() && ip_dst(packet).is_some_and(|dst| self.laddrs.contains(&dst));
            if from_real && self.faults.lose(packet) {
                self.inner.discard(rx);
                self.lost += 1;
                continue;
            }
            batch.push(Marked { rx, from_real });
        }
    }

    fn packet<'a>(&'a mut self, rx: &'a mut Self::Rx) -> &'a mut [u8] {
        self.inner.packet(&mut rx.rx)
    }

    fn send(&mut self, mut rx: Self::Rx, to: Side) -> Result<(), DropReason> {
        // A packet toward a real crosses the lossy link after the balancer.
        if self.faults.active()
            && to == Side::Real
            && !rx.from_real
            && self.faults.lose(self.inner.packet(&mut rx.rx))
        {
            self.inner.discard(rx.rx);
            return Err(DropReason::FaultInjected);
        }
        self.inner.send(rx.rx, to)
    }

    fn discard(&mut self, rx: Self::Rx) {
        self.inner.discard(rx.rx);
    }

    fn transmit(&mut self, packet: &[u8], to: Side) -> Result<(), DropReason> {
        // Only the balancer–real link is lossy; answers to clients cross the other.
        if to == Side::Real && self.faults.active() && self.faults.lose(packet) {
            return Err(DropReason::FaultInjected);
        }
        self.inner.transmit(packet, to)
    }

    fn flush(&mut self) {
        self.inner.flush();
    }

    fn poll_drop(&mut self) -> Option<DropReason> {
        if self.lost > 0 {
            self.lost -= 1;
            return Some(DropReason::FaultInjected);
        }
        self.inner.poll_drop()
    }

    // The fast path's packets never reach the engine: no faults there.
    fn offload(&mut self, change: &Offload) {
        self.inner.offload(change);
    }

    fn poll_flow_report(&mut self, now: Instant) -> Option<FlowReport> {
        self.inner.poll_flow_report(now)
    }

    fn poll_fast_path_stats(&mut self) -> Option<FastPathStats> {
        self.inner.poll_fast_path_stats()
    }
}
