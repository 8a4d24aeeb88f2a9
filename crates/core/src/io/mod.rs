//! One loop for every driver: the engine run over a [`Device`].
//!
//! A driver (TUN, AF_XDP, the simulator) implements [`Device`]: it waits
//! for readiness, hands over received packets in batches, sends on what the
//! engine forwarded (rewritten in place, in the same buffer when it can) and
//! what the engine built. [`Driver`] is the loop itself and the only place
//! that knows the order things happen in: packets the engine built go out
//! before the packet that made it build them (a SYNProxy splice releases the
//! client's kept packets, which must reach the real before anything newer of
//! the same connection), timers run after the packets of a turn, and every
//! drop a device reports is counted by the engine.
//!
//! Nothing here blocks or reads a clock: `now` comes from the device, and
//! the wait for readiness is the device's own ([`Device::wait`]).
//!
//! A device with a fast path ([`crate::fast_path`]) gets the engine's flow
//! table changes after every batch and after the timers
//! ([`Device::offload`]): a removal before the batch's packets are flushed,
//! so the rules of a connection are gone before the FIN or RST the engine
//! forwards reaches the peer (the peer's answer, the ACK of that FIN among
//! them, must reach the engine, which tracks the close, and not a rule that
//! forwards it past the engine); an install after the flush, so a
//! connection's last engine-forwarded packet is on its way before its rule
//! exists. Each turn, before the packets, the
//! loop folds what the device forwarded on its own ([`Device::poll_flow_report`],
//! [`Device::poll_fast_path_stats`]) into the engine, so its counters and
//! idle timers see the connection's traffic before anything may expire it.

mod fault;

pub use fault::{FaultInjector, Marked};

use crate::fast_path::{FastPathStats, FlowReport, Offload};
use crate::{DropReason, Engine, Instant, Side, Verdict};

/// What the loop needs of a network device (after smoltcp's `phy::Device`,
/// in batches of borrowed packets).
pub trait Device {
    /// A received packet the loop holds while the engine works on it: a
    /// buffer of the device's (an index, a frame descriptor, a vector).
    type Rx;

    /// The current time on the device's clock.
    fn now(&self) -> Instant;

    /// Block until a packet may be ready or `deadline` passes (`None`: no
    /// deadline the engine knows of). A device that never blocks (the
    /// simulator's) returns at once.
    fn wait(&mut self, deadline: Option<Instant>) {
        let _ = deadline;
    }

    /// Append up to `batch`'s spare capacity of received packets; leaving
    /// it empty means nothing more is ready until the next [`wait`](Self::wait).
    /// Every packet of a batch has gone back ([`send`](Self::send) or
    /// [`discard`](Self::discard)) before the next call, so a device may
    /// reuse its buffers batch after batch.
    fn receive(&mut self, batch: &mut Vec<Self::Rx>);

    /// The IP packet `rx` holds, for the engine to rewrite in place.
    fn packet<'a>(&'a mut self, rx: &'a mut Self::Rx) -> &'a mut [u8];

    /// Send a received packet on, rewritten, toward `to`.
    fn send(&mut self, rx: Self::Rx, to: Side) -> Result<(), DropReason>;

    /// Give back a received packet that goes nowhere (dropped or absorbed).
    fn discard(&mut self, rx: Self::Rx);

    /// Send a packet the engine built toward `to` (copied out of `packet`).
    fn transmit(&mut self, packet: &[u8], to: Side) -> Result<(), DropReason>;

    /// Hand what was queued to the hardware or the kernel.
    fn flush(&mut self) {}

    /// A packet the device lost on the way in, and why; asked after every
    /// [`receive`](Self::receive) until `None`.
    fn poll_drop(&mut self) -> Option<DropReason> {
        None
    }

    /// Apply a change to the device's fast-path flow table, in the order
    /// given. A device without a fast path ignores it.
    fn offload(&mut self, change: &Offload) {
        let _ = change;
    }

    /// What the fast path forwarded of one offloaded connection since its
    /// last report, if a report is due at `now`; asked until `None` every turn.
    fn poll_flow_report(&mut self, now: Instant) -> Option<FlowReport> {
        let _ = now;
        None
    }

    /// The fast path's own counters since the last call, if any.
    fn poll_fast_path_stats(&mut self) -> Option<FastPathStats> {
        None
    }
}

/// The loop: moves packets between one device and one engine and runs the
/// engine's timers. Holds the batch and the buffer the engine builds
/// packets in, so a turn allocates nothing.
#[derive(Debug)]
pub struct Driver<R> {
    batch: Vec<R>,
    buf: Box<[u8]>,
    /// The changes of this batch that wait for its flush (installs, and
    /// what came after them in order), removals having gone before.
    held: Vec<Offload>,
}

impl<R> Driver<R> {
    /// A loop that takes up to `batch` packets at a time and lets the engine
    /// build packets of up to `buf_len` bytes.
    pub fn new(batch: usize, buf_len: usize) -> Self {
        Self {
            batch: Vec::with_capacity(batch.max(1)),
            buf: vec![0; buf_len].into_boxed_slice(),
            held: Vec::with_capacity(batch.max(1)),
        }
    }

    /// Wait for the device (at most until the engine's next timer), then
    /// take one [`turn`](Self::turn).
    pub fn poll<D: Device<Rx = R>>(&mut self, engine: &mut Engine, device: &mut D) {
        device.wait(engine.poll_timeout());
        self.turn(engine, device);
    }

    /// Handle every packet the device has ready, batch by batch, then the
    /// timers that are due, and flush.
    pub fn turn<D: Device<Rx = R>>(&mut self, engine: &mut Engine, device: &mut D) {
        self.receive(engine, device);
        let now = device.now();
        if engine.poll_timeout().is_some_and(|at| at <= now) {
            engine.handle_timeout(now);
        }
        transmit_built(engine, device, &mut self.buf);
        remove_before_flush(engine, device, &mut self.held);
        device.flush();
        offload(engine, device, &mut self.held);
    }

    /// Fold the fast path's reports, then handle every packet the device
    /// has ready, flushing after each batch.
    pub fn receive<D: Device<Rx = R>>(&mut self, engine: &mut Engine, device: &mut D) {
        fold_reports(engine, device);
        loop {
            device.receive(&mut self.batch);
            while let Some(reason) = device.poll_drop() {
                engine.count_drop(reason);
            }
            if self.batch.is_empty() {
                return;
            }
            let now = device.now();
            for rx in self.batch.drain(..) {
                handle(engine, device, &mut self.buf, now, rx);
            }
            remove_before_flush(engine, device, &mut self.held);
            device.flush();
            offload(engine, device, &mut self.held);
        }
    }

    /// Run the engine's timers at `now` and send what they built.
    pub fn handle_timeout<D: Device<Rx = R>>(&mut self, engine: &mut Engine, device: &mut D, now: Instant) {
        fold_reports(engine, device);
        engine.handle_timeout(now);
        transmit_built(engine, device, &mut self.buf);
        offload(engine, device, &mut self.held);
    }

    /// Hand the device the flow table changes the engine has queued: after
    /// a control-plane change (a real or service removed), so its rules stop
    /// before the next packet rather than after the next batch.
    pub fn offload<D: Device<Rx = R>>(&mut self, engine: &mut Engine, device: &mut D) {
        offload(engine, device, &mut self.held);
    }

    /// End every open connection on both sides (the daemon stopping) and
    /// send the resets.
    pub fn close<D: Device<Rx = R>>(&mut self, engine: &mut Engine, device: &mut D) {
        engine.flush_conns(device.now());
        transmit_built(engine, device, &mut self.buf);
        remove_before_flush(engine, device, &mut self.held);
        device.flush();
        offload(engine, device, &mut self.held);
    }
}

/// One received packet through the engine.
fn handle<D: Device>(engine: &mut Engine, device: &mut D, buf: &mut [u8], now: Instant, mut rx: D::Rx) {
    // Drops are counted by the engine; absorbed packets were answered or
    // kept, and what to send comes from poll_transmit.
    let verdict = engine.handle(now, device.packet(&mut rx));
    // What the engine built goes first: a SYNProxy splice queues the
    // client's kept packets, which must reach the real before anything
    // newer of the same connection.
    transmit_built(engine, device, buf);
    match verdict {
        Verdict::Forward { to } => {
            if let Err(reason) = device.send(rx, to) {
                engine.count_drop(reason);
            }
        }
        Verdict::Drop(_) | Verdict::Absorbed => device.discard(rx),
    }
}

/// Before a flush: hand the device the engine's removals now and hold the
/// rest for after it. A connection whose install is held and which is
/// removed already is not installed at all. A real's retirement waits with
/// the installs queued before it, so none of them marks it live again.
fn remove_before_flush<D: Device>(engine: &mut Engine, device: &mut D, held: &mut Vec<Offload>) {
    while let Some(change) = engine.poll_offload() {
        match change {
            Offload::Remove { .. } => {
                held.retain(|c| !change.voids(c));
                device.offload(&change);
            }
            Offload::Install { .. } | Offload::RetireReal { .. } => held.push(change),
        }
    }
}

/// Hand the device what [`remove_before_flush`] held, then the engine's
/// flow table changes since, in order.
fn offload<D: Device>(engine: &mut Engine, device: &mut D, held: &mut Vec<Offload>) {
    for change in held.drain(..) {
        device.offload(&change);
    }
    while let Some(change) = engine.poll_offload() {
        device.offload(&change);
    }
}

/// Fold what the device's fast path forwarded into the engine.
fn fold_reports<D: Device>(engine: &mut Engine, device: &mut D) {
    let now = device.now();
    while let Some(report) = device.poll_flow_report(now) {
        engine.fold_flow_report(now, &report);
    }
    if let Some(stats) = device.poll_fast_path_stats() {
        engine.fold_fast_path_stats(&stats);
    }
}

/// Send what the engine built itself (SYNProxy's handshakes and replays, resets).
fn transmit_built<D: Device>(engine: &mut Engine, device: &mut D, buf: &mut [u8]) {
    while let Some((len, to)) = engine.poll_transmit(buf) {
        let Some(packet) = buf.get(..len) else { continue };
        if let Err(reason) = device.transmit(packet, to) {
            engine.count_drop(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::EngineConfig;

    /// A device that hands out queued packets and records what leaves.
    #[derive(Debug, Default)]
    struct Mock {
        inbox: VecDeque<Vec<u8>>,
        sent: Vec<(Vec<u8>, Side)>,
        built: Vec<(Vec<u8>, Side)>,
        discarded: usize,
        /// What reached the device, in order: sends and flow table changes.
        log: Vec<&'static str>,
        reports: VecDeque<FlowReport>,
        flushes: usize,
        /// How many flushes there had been at each removal.
        removed_after: Vec<usize>,
    }

    impl Device for Mock {
        type Rx = Vec<u8>;

        fn now(&self) -> Instant {
            Instant::from_secs(1)
        }

        fn receive(&mut self, batch: &mut Vec<Vec<u8>>) {
            while batch.len() < batch.capacity() {
                let Some(p) = self.inbox.pop_front() else { return };
                batch.push(p);
            }
        }

        fn packet<'a>(&'a mut self, rx: &'a mut Vec<u8>) -> &'a mut [u8] {
            rx
        }

        fn send(&mut self, rx: Vec<u8>, to: Side) -> Result<(), DropReason> {
            self.sent.push((rx, to));
            self.log.push("send");
            Ok(())
        }

        fn flush(&mut self) {
            self.flushes += 1;
        }

        fn offload(&mut self, change: &Offload) {
            if matches!(change, Offload::Remove { .. }) {
                self.removed_after.push(self.flushes);
            }
            self.log.push(match change {
                Offload::Install { .. } => "install",
                Offload::Remove { .. } => "remove",
                Offload::RetireReal { .. } => "retire",
            });
        }

        fn poll_flow_report(&mut self, _now: Instant) -> Option<FlowReport> {
            self.reports.pop_front()
        }

        fn discard(&mut self, _rx: Vec<u8>) {
            self.discarded += 1;
        }

        fn transmit(&mut self, packet: &[u8], to: Side) -> Result<(), DropReason> {
            self.built.push((packet.to_vec(), to));
            Ok(())
        }
    }

    /// A 40-byte IPv4 TCP segment to `dst` with `flags`.
    fn segment(dst: [u8; 4], flags: u8) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1];
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[
            0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        p
    }

    /// A 60-byte IPv6 TCP segment to `dst` with `flags`, behind an empty
    /// hop-by-hop options header.
    fn segment6(dst: [u16; 8], flags: u8) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 28, 0, 64, 0xfd, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        p.extend(dst.iter().flat_map(|w| w.to_be_bytes()));
        p.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[
            0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        p
    }

    fn engine() -> Engine {
        Engine::new(EngineConfig::default(), [7; 32], Instant::from_secs(1))
    }

    #[test]
    fn packets_the_engine_drops_go_back_to_the_device_in_batches() {
        let mut engine = engine();
        let mut device = Mock::default();
        device.inbox.extend((0..5).map(|_| segment([10, 0, 9, 9], 0x02)));
        let mut driver = Driver::new(2, 2048);
        driver.turn(&mut engine, &mut device);
        // No service: every packet is dropped, counted, and given back.
        assert_eq!(device.discarded, 5);
        assert!(device.sent.is_empty() && device.inbox.is_empty());
        assert_eq!(engine.stats().drops.total(), 5);
    }

    #[test]
    fn the_fault_injector_loses_real_side_packets_and_counts_them() {
        let mut engine = engine();
        let mut device = FaultInjector::new(Mock::default(), 1.0, 0.0, 1);
        device.set_laddrs(["10.0.2.1".parse().unwrap()]);
        device.get_mut().inbox.push_back(segment([10, 0, 2, 1], 0x10));
        device.get_mut().inbox.push_back(segment([10, 0, 9, 9], 0x10));
        let mut driver = Driver::new(4, 2048);
        driver.turn(&mut engine, &mut device);
        // The packet from a real is lost before the engine sees it; the other reaches it.
        assert_eq!(engine.stats().drops.get(DropReason::FaultInjected), 1);
        assert_eq!(device.get_ref().discarded, 2);
        // Built packets toward reals cross the lossy link, those toward clients do not.
        let packet = segment([10, 0, 1, 1], 0x02);
        assert_eq!(device.transmit(&packet, Side::Real), Err(DropReason::FaultInjected));
        assert_eq!(device.transmit(&packet, Side::Client), Ok(()));
        assert_eq!(device.get_ref().built.len(), 1);
    }

    #[test]
    fn the_fault_injector_tells_ipv6_real_side_packets_and_handshakes_apart() {
        let mut engine = engine();
        let mut device = FaultInjector::new(Mock::default(), 1.0, 0.0, 1);
        device.set_laddrs(["fd10:0:2::1".parse().unwrap()]);
        device.get_mut().inbox.push_back(segment6([0xfd10, 0, 2, 0, 0, 0, 0, 1], 0x10));
        device.get_mut().inbox.push_back(segment6([0xfd10, 0, 9, 0, 0, 0, 0, 9], 0x10));
        let mut driver = Driver::new(4, 2048);
        driver.turn(&mut engine, &mut device);
        assert_eq!(engine.stats().drops.get(DropReason::FaultInjected), 1);
        // Handshake-only loss finds the SYN behind the extension header.
        let mut device = FaultInjector::new(Mock::default(), 0.0, 1.0, 1);
        let (syn, ack) =
            (segment6([0xfd10, 0, 1, 0, 0, 0, 0, 1], 0x02), segment6([0xfd10, 0, 1, 0, 0, 0, 0, 1], 0x10));
        assert_eq!(device.transmit(&syn, Side::Real), Err(DropReason::FaultInjected));
        assert_eq!(device.transmit(&ack, Side::Real), Ok(()));
    }

    #[test]
    fn the_fault_injector_draws_from_its_seed() {
        let losses = |seed, syn_loss| {
            let mut device = FaultInjector::new(Mock::default(), 0.0, syn_loss, seed);
            let syn = segment([10, 0, 1, 1], 0x02);
            let ack = segment([10, 0, 1, 1], 0x10);
            (0..64)
                .map(|i| device.transmit(if i % 2 == 0 { &syn } else { &ack }, Side::Real).is_err())
                .collect::<Vec<_>>()
        };
        assert_eq!(losses(5, 0.5), losses(5, 0.5));
        // Handshake-only loss spares every other segment.
        assert!(losses(5, 1.0).iter().enumerate().all(|(i, &lost)| lost == (i % 2 == 0)));
        assert!(losses(5, 0.0).iter().all(|&lost| !lost));
    }

    /// A 40-byte IPv4 TCP segment from `src` to `dst` with `flags`.
    fn segment_between(src: ([u8; 4], u16), dst: ([u8; 4], u16), flags: u8) -> Vec<u8> {
        let mut p = segment(dst.0, flags);
        p[12..16].copy_from_slice(&src.0);
        p[20..22].copy_from_slice(&src.1.to_be_bytes());
        p[22..24].copy_from_slice(&dst.1.to_be_bytes());
        p
    }

    /// An engine with the fast path on and one TCP service, VIP
    /// 10.0.9.9:80 over LIP 10.0.2.1 to the real 10.0.3.1:80.
    fn fast_path_engine() -> Engine {
        use crate::{Endpoint, Proto, RealConfig, ServiceConfig};
        let cfg = EngineConfig { fast_path: true, ..EngineConfig::default() };
        let mut engine = Engine::new(cfg, [7; 32], Instant::from_secs(1));
        let vip = Endpoint::new([10, 0, 9, 9].into(), 80);
        let mut svc = ServiceConfig::new(Proto::Tcp, vip);
        svc.laddrs = vec![[10, 0, 2, 1].into()];
        engine.add_service(svc).unwrap();
        let real = Endpoint::new([10, 0, 3, 1].into(), 80);
        engine.add_real(Proto::Tcp, vip, RealConfig { endpoint: real, weight: 1 }).unwrap();
        engine
    }

    #[test]
    fn flow_table_changes_reach_the_device_after_the_batch_removals_before_its_flush_and_reports_are_folded()
    {
        let mut engine = fast_path_engine();
        let client = ([10, 0, 0, 1], 12345);
        let mut device = Mock::default();
        let mut driver = Driver::new(4, 2048);
        device.inbox.push_back(segment_between(client, ([10, 0, 9, 9], 80), 0x02));
        driver.turn(&mut engine, &mut device);
        let lport = u16::from_be_bytes([device.sent[0].0[20], device.sent[0].0[21]]);
        device.inbox.push_back(segment_between(([10, 0, 3, 1], 80), ([10, 0, 2, 1], lport), 0x12));
        driver.turn(&mut engine, &mut device);
        assert_eq!(device.log, ["send", "send"]);
        // The client's ACK establishes the connection: it is forwarded, and
        // the install follows it.
        device.inbox.push_back(segment_between(client, ([10, 0, 9, 9], 80), 0x10));
        device.inbox.push_back(segment_between(client, ([10, 0, 9, 9], 80), 0x10));
        driver.turn(&mut engine, &mut device);
        assert_eq!(device.log, ["send", "send", "send", "send", "install"]);
        let flow = engine.conns.table().iter().next().map(|(id, _)| crate::fast_path::FlowId(id)).unwrap();
        let report = FlowReport {
            flow,
            packets: [2, 3],
            bytes: [80, 120],
            last_seen: None,
            progress: [None; 2],
            evicted: false,
        };
        device.reports.push_back(report);
        driver.turn(&mut engine, &mut device);
        assert_eq!(engine.stats().traffic.pkts_in, 3 + 2);
        assert_eq!(engine.stats().traffic.pkts_out, 1 + 3);
        // The client's FIN: the rules go before it is flushed toward the
        // real, so the real's ACK of it reaches the engine.
        let flushes = device.flushes;
        device.inbox.push_back(segment_between(client, ([10, 0, 9, 9], 80), 0x11));
        driver.turn(&mut engine, &mut device);
        assert_eq!(device.log[5..], ["send", "remove"]);
        assert_eq!(device.removed_after, [flushes]);
        assert!(device.flushes > flushes);
        driver.close(&mut engine, &mut device);
        assert_eq!(device.log.last(), Some(&"remove"));
    }

    #[test]
    fn a_full_queue_toward_the_device_installs_nothing_and_says_so() {
        let mut engine = fast_path_engine();
        let now = Instant::from_secs(1);
        // Connections established while nobody drains the queue.
        let mut open = |port: u16| {
            let client = ([10, 0, 0, 1], port);
            let mut syn = segment_between(client, ([10, 0, 9, 9], 80), 0x02);
            assert!(matches!(engine.handle(now, &mut syn), Verdict::Forward { .. }));
            let lport = u16::from_be_bytes([syn[20], syn[21]]);
            let mut synack = segment_between(([10, 0, 3, 1], 80), ([10, 0, 2, 1], lport), 0x12);
            assert!(matches!(engine.handle(now, &mut synack), Verdict::Forward { .. }));
            let mut ack = segment_between(client, ([10, 0, 9, 9], 80), 0x10);
            assert!(matches!(engine.handle(now, &mut ack), Verdict::Forward { .. }));
        };
        for port in 0..1025 {
            open(2000 + port);
        }
        let f = engine.stats().fast_path;
        assert_eq!((f.installs, f.queue_full, f.offloaded), (1024, 1, 1024));
        assert_eq!(std::iter::from_fn(|| engine.poll_offload()).count(), 1024);
        // Drained: the one left over is offered with its next packet.
        let mut ack = segment_between(([10, 0, 0, 1], 3024), ([10, 0, 9, 9], 80), 0x10);
        assert!(matches!(engine.handle(now, &mut ack), Verdict::Forward { .. }));
        assert!(matches!(engine.poll_offload(), Some(Offload::Install { .. })));
    }
}
