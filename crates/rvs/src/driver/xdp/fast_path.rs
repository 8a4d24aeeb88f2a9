//! The maps of the XDP program's fast path (`fast_path.bpf.h`): the rules of
//! established connections the program forwards itself, the live reals'
//! generations, and its per-CPU counters.
//!
//! A rule's layout here is the C one, byte for byte (a test checks sizes
//! and offsets). The kernel updates a rule's counters while it is in the
//! map; installing it again starts them from zero.

// What the driver loop and the SYN-cookie stage will use is here already.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;

use aya::maps::{Array, HashMap, IterableMap, Map, MapData, MapError, PerCpuArray};
use rvs_core::{FlowKey, FlowProgress, Side};

/// One direction of an offloaded connection: the engine's rule, as the program applies it.
pub(crate) use rvs_core::FlowRule;

use super::{bpf_err, proto_number, take_map};

/// `settings[1]` bits: the stages that run before steering.
pub(crate) const FAST_PATH_ON: u32 = 1;
pub(crate) const SYN_COOKIES_ON: u32 = 2;

/// Slots in `live_reals` (`LIVE_REALS`).
pub(crate) const LIVE_REALS: u32 = 65536;

/// `struct flow_rule` kinds.
const FLOW_FORWARD: u8 = 1;
const FLOW_ENGINE: u8 = 2;
/// `struct flow_rule` flags.
const FLOW_DECREMENT_TTL: u8 = 1;
const FLOW_RESCALE: u8 = 2;
// flow_rule.seen
const FLOW_SEEN_SEQ: u32 = 1;
const FLOW_SEEN_ACK: u32 = 2;
const FLOW_SEEN_TSVAL: u32 = 4;

/// Indexes of the program's per-CPU `fast_stats` counters.
pub(crate) mod stat {
    pub(crate) const FP_FORWARDED: u32 = 0;
    pub(crate) const FP_BYTES: u32 = 1;
    pub(crate) const FP_TO_ENGINE: u32 = 2;
    pub(crate) const SC_SYNACKS: u32 = 3;
    pub(crate) const SC_ACKS_PASSED: u32 = 4;
    pub(crate) const SC_BAD_COOKIE: u32 = 5;
    pub(crate) const SC_NO_KEY: u32 = 6;
    /// Bad-cookie ACKs passed for the engine to answer with an RST (the
    /// engine counts them itself, as its `bad_cookie` drops and the RSTs it
    /// answers).
    #[cfg_attr(not(test), allow(dead_code, reason = "the engine counts these packets itself"))]
    pub(crate) const SC_RST_PASSED: u32 = 7;
    /// Entries in the map.
    pub(crate) const COUNT: u32 = 16;
}

/// Where a rule's packets leave: the interface and the Ethernet addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NextHop {
    pub(crate) ifindex: u32,
    pub(crate) dst_mac: [u8; 6],
    pub(crate) src_mac: [u8; 6],
}

/// `struct flow` of steer.bpf.c: the key of `flows`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BpfFlowKey {
    saddr: [u32; 4],
    daddr: [u32; 4],
    sport: u16,
    dport: u16,
    v6: u8,
    proto: u8,
    ports: u8,
    icmp: u8,
}

// SAFETY: plain integers in a `repr(C)` struct without padding.
unsafe impl aya::Pod for BpfFlowKey {}

/// `struct flow_rule` of fast_path.bpf.h: the value of `flows`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BpfFlowRule {
    saddr: [u32; 4],
    daddr: [u32; 4],
    sport: u16,
    dport: u16,
    seq_add: u32,
    ack_sub: u32,
    tsval_add: u32,
    tsecr_sub: u32,
    kind: u8,
    real_wscale: u8,
    client_wscale: u8,
    flags: u8,
    real_gen: u32,
    ifindex: u32,
    dmac: [u8; 6],
    smac: [u8; 6],
    pad: [u8; 4],
    packets: u64,
    bytes: u64,
    last_seen: u64,
    seq_end: u32,
    ack: u32,
    tsval: u32,
    seen: u32,
}

// SAFETY: plain integers in a `repr(C)` struct without padding.
unsafe impl aya::Pod for BpfFlowRule {}

impl BpfFlowRule {
    /// The last TCP segment the program forwarded by this entry, if any.
    fn progress(&self) -> Option<FlowProgress> {
        let has = |bit: u32| self.seen & bit != 0;
        has(FLOW_SEEN_SEQ).then_some(FlowProgress {
            seq_end: self.seq_end,
            ack: has(FLOW_SEEN_ACK).then_some(self.ack),
            tsval: has(FLOW_SEEN_TSVAL).then_some(self.tsval),
        })
    }
}

/// An address as the program holds it: network-order words, IPv4 in the first.
fn words(addr: IpAddr) -> [u32; 4] {
    let mut w = [0u32; 4];
    match addr {
        IpAddr::V4(a) => w[0] = u32::from_ne_bytes(a.octets()),
        IpAddr::V6(a) => {
            for (w, b) in w.iter_mut().zip(a.octets().as_chunks::<4>().0) {
                *w = u32::from_ne_bytes(*b);
            }
        }
    }
    w
}

/// A port as the program holds it: network order in memory.
fn port(p: u16) -> u16 {
    u16::from_ne_bytes(p.to_be_bytes())
}

impl BpfFlowKey {
    /// The key steer() builds for packets of `key`.
    pub(crate) fn new(key: &FlowKey) -> Self {
        Self {
            saddr: words(key.src.addr),
            daddr: words(key.dst.addr),
            sport: port(key.src.port),
            dport: port(key.dst.port),
            v6: u8::from(key.src.addr.is_ipv6()),
            proto: proto_number(key.proto),
            ports: 1,
            icmp: 0,
        }
    }
}

impl BpfFlowRule {
    /// The program's rule for `rule`, leaving by `hop`; counters zero.
    pub(crate) fn new(rule: &FlowRule, hop: &NextHop) -> Self {
        let (real_wscale, client_wscale) = rule.rescale.unwrap_or_default();
        let rescale = rule.to == Side::Client && real_wscale != client_wscale;
        Self {
            saddr: words(rule.src.addr),
            daddr: words(rule.dst.addr),
            sport: port(rule.src.port),
            dport: port(rule.dst.port),
            seq_add: rule.seq_add,
            ack_sub: rule.ack_sub,
            tsval_add: rule.tsval_add,
            tsecr_sub: rule.tsecr_sub,
            kind: FLOW_FORWARD,
            real_wscale,
            client_wscale,
            flags: if rule.decrement_ttl { FLOW_DECREMENT_TTL } else { 0 }
                | if rescale { FLOW_RESCALE } else { 0 },
            real_gen: rule.real_gen,
            ifindex: hop.ifindex,
            dmac: hop.dst_mac,
            smac: hop.src_mac,
            ..Self::default()
        }
    }
}

/// What the program counted on one rule since it was installed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FlowCounters {
    pub(crate) packets: u64,
    /// IP packet bytes, as the engine counts them.
    pub(crate) bytes: u64,
    /// `CLOCK_MONOTONIC` nanoseconds of the last packet; 0 for none yet.
    pub(crate) last_seen_ns: u64,
    /// The last TCP segment forwarded, if any.
    pub(crate) progress: Option<FlowProgress>,
}

/// The program's `fast_stats`, summed over CPUs, by `stat` index.
pub(crate) type FastStats = [u64; stat::COUNT as usize];

/// The fast path's maps, taken from the loaded object.
pub(crate) struct FastPathMaps {
    flows: HashMap<MapData, BpfFlowKey, BpfFlowRule>,
    live_reals: Array<MapData, u32>,
    stats: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for FastPathMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPathMaps").finish_non_exhaustive()
    }
}

/// Another handle on the same kernel map.
pub(super) fn reopen<K: aya::Pod, V>(map: &impl IterableMap<K, V>) -> io::Result<MapData> {
    let fd = map.map().fd().as_fd().try_clone_to_owned()?;
    MapData::from_fd(fd).map_err(|e| bpf_err("reopen a fast path map", e))
}

impl FastPathMaps {
    /// Take `flows`, `live_reals` and `fast_stats` out of the loaded object.
    pub(crate) fn take(ebpf: &mut aya::Ebpf) -> io::Result<Self> {
        Ok(Self {
            flows: take_map(ebpf, "flows")?,
            live_reals: take_map(ebpf, "live_reals")?,
            stats: take_map(ebpf, "fast_stats")?,
        })
    }

    /// Handles on the same maps, for another thread.
    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        let wrap = |e: MapError| bpf_err("fast path map", e);
        Ok(Self {
            flows: HashMap::try_from(Map::LruHashMap(reopen(&self.flows)?)).map_err(wrap)?,
            live_reals: Array::try_from(Map::Array(reopen(&self.live_reals)?)).map_err(wrap)?,
            stats: PerCpuArray::try_from(Map::PerCpuArray(reopen(&self.stats)?)).map_err(wrap)?,
        })
    }

    /// Install (or replace) `rule`, leaving by `hop`.
    pub(crate) fn install(&mut self, rule: &FlowRule, hop: &NextHop) -> io::Result<()> {
        let key = BpfFlowKey::new(&rule.key);
        self.flows.insert(key, BpfFlowRule::new(rule, hop), 0).map_err(|e| bpf_err("flow map", e))
    }

    /// Send the packets of `key` to the engine from now on (a `FLOW_ENGINE`
    /// entry in place of its rule).
    pub(crate) fn hand_to_engine(&mut self, key: &FlowKey) -> io::Result<()> {
        let rule = BpfFlowRule { kind: FLOW_ENGINE, ..BpfFlowRule::default() };
        self.flows.insert(BpfFlowKey::new(key), rule, 0).map_err(|e| bpf_err("flow map", e))
    }

    /// Remove the rule of `key`; false when there was none (removed before,
    /// or evicted).
    pub(crate) fn remove(&mut self, key: &FlowKey) -> io::Result<bool> {
        match self.flows.remove(&BpfFlowKey::new(key)) {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(bpf_err("flow map", e)),
        }
    }

    /// The counters of the rule of `key`; `None` when it is not in the map
    /// (the kernel's LRU evicted it, or it was removed).
    pub(crate) fn counters(&self, key: &FlowKey) -> io::Result<Option<FlowCounters>> {
        match self.flows.get(&BpfFlowKey::new(key), 0) {
            Ok(r) => Ok(Some(FlowCounters {
                packets: r.packets,
                bytes: r.bytes,
                last_seen_ns: r.last_seen,
                progress: r.progress(),
            })),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(bpf_err("flow map", e)),
        }
    }

    /// Mark real generation `real_gen` live (0 never is).
    pub(crate) fn set_live(&mut self, real_gen: u32) -> io::Result<()> {
        self.live_reals.set(real_gen % LIVE_REALS, real_gen, 0).map_err(|e| bpf_err("live reals map", e))
    }

    /// Take every rule of real generation `real_gen` off the fast path at
    /// once: their packets go to the engine until they are removed.
    pub(crate) fn retire(&mut self, real_gen: u32) -> io::Result<()> {
        let slot = real_gen % LIVE_REALS;
        match self.live_reals.get(&slot, 0) {
            Ok(g) if g == real_gen => {
                self.live_reals.set(slot, 0, 0).map_err(|e| bpf_err("live reals map", e))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(bpf_err("live reals map", e)),
        }
    }

    /// The program's counters, summed over CPUs.
    pub(crate) fn stats(&self) -> io::Result<FastStats> {
        let mut out = [0u64; stat::COUNT as usize];
        for (i, total) in out.iter_mut().enumerate() {
            let per_cpu = self.stats.get(&(i as u32), 0).map_err(|e| bpf_err("map fast_stats", e))?;
            *total = per_cpu.iter().sum();
        }
        Ok(out)
    }
}

fn not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

#[cfg(test)]
#[path = "fast_path_tests.rs"]
mod tests;
