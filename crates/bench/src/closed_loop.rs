//! The closed loop `pps` measures with: a fixed population of 64-byte UDP
//! packets over [`FLOWS`] flows circulates between the client and the
//! reals, both of which send every packet straight back from XDP
//! ([`Prog::reflect`]), so the balancer forwards each packet in both
//! directions and nothing but the path under test limits the rate. No
//! generator has to outrun the balancer, which is what makes the figures
//! comparable across machines: an open-loop generator shares the cores with
//! the path and its rate is whatever the path leaves it.
//!
//! The population is injected through an `AF_PACKET` socket on the client,
//! one packet per flow first (each creates its flow's connection in the
//! balancer), the rest once those are through. A closed loop shrinks with
//! every loss, so each packet carries an id, the reals' reflector notes when
//! it last saw each id (an array mapped into this process), and a packet
//! unseen for [`STALE`] is counted lost and sent again: the rate stays the
//! path's, and the losses are reported beside it.

use std::net::IpAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::bpf::{Counter, LoopPort, Prog, SeenMap, monotonic_ns};
use crate::frame::{self, Macs};
use crate::generator::PacketSocket;
use crate::lab::{Iface, Lab, XdpLink, check_stop};

/// The service port the loop's packets are addressed to.
pub(crate) const PORT: u16 = 9000;
/// Flows: the client's source ports `FIRST_PORT..FIRST_PORT + FLOWS`.
pub(crate) const FLOWS: u32 = 64;
const FIRST_PORT: u16 = 20_000;
/// Packets in the loop: as many as keep the fastest path here busy (256
/// already nearly do) and few enough for the queues of the slowest (at
/// 4,096 every path loses packets, at 1,024 the TUN device's queue does).
pub(crate) const POPULATION: u32 = 512;
/// How long a packet may go unseen at the reals before it counts as lost;
/// a round trip through the slowest path, queues full, takes a few ms.
const STALE: Duration = Duration::from_millis(200);
/// How often the ids are checked.
const CHECK_EVERY: Duration = Duration::from_millis(20);

/// The reals' half of the loop, for a whole scenario: on each real a
/// reflector that counts the packets delivered and notes their ids.
#[derive(Debug)]
pub(crate) struct Reals {
    pub delivered: Counter,
    seen: SeenMap,
    _links: Vec<XdpLink>,
}

impl Reals {
    pub(crate) fn attach(lab: &Lab) -> anyhow::Result<Self> {
        let delivered = Counter::new()?;
        let seen = SeenMap::new(POPULATION)?;
        let mut links = Vec::new();
        for ns in lab.topo.ns_reals() {
            let ifindex = Iface::of(ns, lab.topo.real_if())?.index;
            let prog = Prog::reflect(LoopPort::Destination(PORT), ifindex, &delivered, Some(&seen))?;
            links.push(XdpLink::attach(ns, lab.topo.real_if(), prog)?);
        }
        Ok(Self { delivered, seen, _links: links })
    }
}

/// The client's half: the socket the population is injected through and
/// the count of packets that came back.
#[derive(Debug)]
pub(crate) struct Client {
    pub returned: Counter,
    socket: PacketSocket,
    macs: Macs,
}

impl Client {
    pub(crate) fn open(lab: &Lab) -> anyhow::Result<Self> {
        let (client_if, lb_if) = lab.client_link()?;
        Ok(Self {
            returned: Counter::new()?,
            socket: PacketSocket::open(lab.client(), "eth0")?,
            macs: Macs { src: client_if.mac, dst: lb_if.mac },
        })
    }
}

/// A population circulating through one path. Stopping it (or dropping
/// it) detaches the client's reflector, so the packets end at the client's
/// stack within one round trip and the next path starts empty.
#[derive(Debug)]
pub(crate) struct Loop<'a> {
    reals: &'a Reals,
    client: &'a Client,
    target: IpAddr,
    src: IpAddr,
    reflector: Option<XdpLink>,
    /// When each id was last sent from here.
    injected_at: Vec<u64>,
    /// Packets found lost and sent again.
    pub lost: u64,
}

impl<'a> Loop<'a> {
    /// Starts a population toward `target` (the VIP, or a real's address),
    /// from the client's address of its family.
    pub(crate) fn start(
        lab: &Lab,
        reals: &'a Reals,
        client: &'a Client,
        target: IpAddr,
    ) -> anyhow::Result<Self> {
        let ifindex = Iface::of(lab.client(), "eth0")?.index;
        let prog = Prog::reflect(LoopPort::Source(PORT), ifindex, &client.returned, None)?;
        let reflector = XdpLink::attach(lab.client(), "eth0", prog)?;
        reals.seen.clear();
        let mut l = Self {
            reals,
            client,
            target,
            src: lab.client_addr(target),
            reflector: Some(reflector),
            injected_at: vec![0; reals.seen.len()],
            lost: 0,
        };
        let ids: Vec<u32> = (0..POPULATION).collect();
        let (first, rest) = ids.split_at(FLOWS as usize);
        l.inject(first)?;
        thread::sleep(Duration::from_millis(30));
        l.inject(rest)?;
        Ok(l)
    }

    fn inject(&mut self, ids: &[u32]) -> anyhow::Result<()> {
        let frames: Vec<Vec<u8>> = ids
            .iter()
            .map(|&id| {
                let sport = FIRST_PORT + (id % FLOWS) as u16;
                frame::udp(self.client.macs, (self.src, sport).into(), (self.target, PORT).into(), id)
            })
            .collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        self.client.socket.send(&refs).context("injecting the loop's packets")?;
        let now = monotonic_ns();
        for &id in ids {
            self.injected_at[id as usize] = now;
        }
        Ok(())
    }

    /// Keeps the loop going for `d`: every [`CHECK_EVERY`], the packets
    /// unseen at the reals for [`STALE`] are counted lost and sent again.
    pub(crate) fn keep(&mut self, d: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            check_stop()?;
            thread::sleep(CHECK_EVERY.min(end.saturating_duration_since(Instant::now())));
            let now = monotonic_ns();
            let stale = STALE.as_nanos() as u64;
            let lost: Vec<u32> = (0..self.injected_at.len())
                .filter(|&i| now.saturating_sub(self.reals.seen.get(i).max(self.injected_at[i])) > stale)
                .map(|i| i as u32)
                .collect();
            if !lost.is_empty() {
                self.lost += lost.len() as u64;
                self.inject(&lost)?;
            }
        }
        Ok(())
    }

    /// Ends the loop and waits until its packets are gone.
    pub(crate) fn stop(mut self) {
        self.reflector = None;
        thread::sleep(Duration::from_millis(100));
    }
}
