//! The maps of the XDP program's SYN-cookie stage (`syn_cookie.bpf.h`):
//! the engine's cookie keys around now, each SYNProxy service's SYN-ACK
//! template, the offset from CLOCK_MONOTONIC to the engine's clock and each
//! CPU's share of the engine's RST rate. With them the program answers SYNs
//! and checks cookie ACKs exactly as the engine would; what fills them comes
//! from the engine
//! ([`Engine::cookie_keys`](rvs_core::Engine::cookie_keys),
//! [`Engine::syn_ack_templates`](rvs_core::Engine::syn_ack_templates),
//! [`EngineConfig::reset_rate`](rvs_core::EngineConfig::reset_rate)).

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

use aya::maps::{Array, HashMap, Map, MapData};
use rvs_core::{CookieKeys, Endpoint, Engine, Instant, Proto, SynAckTemplate};

use super::fast_path::reopen;
use super::{bpf_err, service_key, service6_key, take_map};

/// `syn_template.flags` in syn_cookie.bpf.h.
const SACK: u8 = 1;
const TIMESTAMPS: u8 = 2;
const RST_ON_BAD_COOKIE: u8 = 4;

/// `struct syn_template` in syn_cookie.bpf.h.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BpfSynTemplate {
    mss: u16,
    mss_max: u16,
    wscale: u8,
    ttl: u8,
    flags: u8,
    max_age: u8,
}

// SAFETY: plain integers, no padding (8 bytes, 2-byte aligned).
unsafe impl aya::Pod for BpfSynTemplate {}

impl From<&SynAckTemplate> for BpfSynTemplate {
    fn from(t: &SynAckTemplate) -> Self {
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        Self {
            mss: t.mss,
            mss_max: t.mss_max,
            wscale: t.wscale,
            ttl: t.ttl,
            flags: flag(t.sack, SACK)
                | flag(t.timestamps, TIMESTAMPS)
                | flag(t.rst_on_bad_cookie, RST_ON_BAD_COOKIE),
            max_age: t.cookie_max_age,
        }
    }
}

/// `struct cookie_keys` in syn_cookie.bpf.h.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BpfCookieKeys {
    period: u64,
    key: [[u64; 2]; 3],
}

// SAFETY: plain integers, no padding.
unsafe impl aya::Pod for BpfCookieKeys {}

impl From<&CookieKeys> for BpfCookieKeys {
    fn from(k: &CookieKeys) -> Self {
        Self { period: k.period, key: k.keys.map(|(k0, k1)| [k0, k1]) }
    }
}

/// `struct rst_limit` in syn_cookie.bpf.h: what one CPU passes of the
/// bad-cookie ACKs the engine answers with an RST.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BpfRstLimit {
    interval_ns: u64,
    burst: u64,
}

// SAFETY: plain integers, no padding.
unsafe impl aya::Pod for BpfRstLimit {}

impl BpfRstLimit {
    /// One CPU's share of `rate` RSTs a second (0: none) among `cpus`. The
    /// engine's bucket (`Resets`) holds a second of its rate; each CPU's
    /// holds a second of its share, so that together they never pass the
    /// engine more than it would answer, whichever CPUs a flood lands on:
    /// every ACK passed is answered, and what the engine would drop for
    /// the rate dies in the program. (While fewer CPUs take bad cookies
    /// than there are, fewer RSTs go out than the rate allows; each CPU
    /// still passes at least one at a time.)
    pub(crate) fn share(rate: u32, cpus: u32) -> Self {
        if rate == 0 {
            return Self { interval_ns: 0, burst: 0 };
        }
        let cpus = u64::from(cpus.max(1));
        Self {
            interval_ns: (cpus * 1_000_000_000).div_ceil(u64::from(rate)),
            burst: (u64::from(rate) / cpus).max(1),
        }
    }

    /// ACKs passed at most at once.
    #[cfg(test)]
    pub(crate) fn burst(&self) -> u64 {
        self.burst
    }
}

/// The SYN-cookie stage's maps and what was last written to them.
pub(crate) struct SynCookies {
    templates: HashMap<MapData, [u8; 8], BpfSynTemplate>,
    templates6: HashMap<MapData, [u8; 20], BpfSynTemplate>,
    keys: HashMap<MapData, u32, BpfCookieKeys>,
    clock: Array<MapData, u64>,
    rst_limit: Array<MapData, BpfRstLimit>,
    /// Possible CPUs: the program runs on any of them.
    cpus: u32,
    loaded: BTreeMap<Endpoint, BpfSynTemplate>,
    period: Option<u64>,
    reset_rate: Option<u32>,
}

impl std::fmt::Debug for SynCookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SynCookies")
            .field("services", &self.loaded.len())
            .field("period", &self.period)
            .field("reset_rate", &self.reset_rate)
            .finish()
    }
}

impl SynCookies {
    /// Take the stage's maps out of the loaded object.
    pub(crate) fn take(ebpf: &mut aya::Ebpf) -> io::Result<Self> {
        Ok(Self {
            templates: take_map(ebpf, "syn_templates")?,
            templates6: take_map(ebpf, "syn_templates6")?,
            keys: take_map(ebpf, "cookie_keys")?,
            clock: take_map(ebpf, "cookie_clock")?,
            rst_limit: take_map(ebpf, "rst_limit")?,
            cpus: aya::util::nr_cpus().map_err(|(what, e)| bpf_err(what, e))?.try_into().unwrap_or(u32::MAX),
            loaded: BTreeMap::new(),
            period: None,
            reset_rate: None,
        })
    }

    /// Handles on the same maps, for the worker that fills them.
    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        let wrap = |e: aya::maps::MapError| bpf_err("SYN cookie map", e);
        Ok(Self {
            templates: HashMap::try_from(Map::HashMap(reopen(&self.templates)?)).map_err(wrap)?,
            templates6: HashMap::try_from(Map::HashMap(reopen(&self.templates6)?)).map_err(wrap)?,
            keys: HashMap::try_from(Map::HashMap(reopen(&self.keys)?)).map_err(wrap)?,
            clock: Array::try_from(Map::Array(reopen(&self.clock)?)).map_err(wrap)?,
            rst_limit: Array::try_from(Map::Array(reopen(&self.rst_limit)?)).map_err(wrap)?,
            cpus: self.cpus,
            loaded: BTreeMap::new(),
            period: None,
            reset_rate: None,
        })
    }

    /// Give the program the keys around a time, all three in one update
    /// (readers see the old set or the new one, never a mix).
    pub(crate) fn set_keys(&mut self, keys: &CookieKeys) -> io::Result<()> {
        self.keys.insert(0, BpfCookieKeys::from(keys), 0).map_err(|e| bpf_err("cookie key map", e))?;
        self.period = Some(keys.period);
        Ok(())
    }

    /// [`Self::set_keys`] when `keys` are of another period than those last
    /// given; whether they were written. Call it every turn with the
    /// engine's keys for now: it writes once per 256 s period.
    pub(crate) fn refresh_keys(&mut self, keys: &CookieKeys) -> io::Result<bool> {
        if self.period == Some(keys.period) {
            return Ok(false);
        }
        self.set_keys(keys).map(|()| true)
    }

    /// Make the template maps hold exactly `templates` (the engine's
    /// SYNProxy services); only what changed is written.
    pub(crate) fn sync_templates(
        &mut self,
        templates: impl IntoIterator<Item = SynAckTemplate>,
    ) -> io::Result<()> {
        let wanted: BTreeMap<Endpoint, BpfSynTemplate> =
            templates.into_iter().map(|t| (t.vip, BpfSynTemplate::from(&t))).collect();
        for (vip, t) in &wanted {
            if self.loaded.get(vip) != Some(t) {
                self.put(*vip, t)?;
            }
        }
        for vip in self.loaded.keys().filter(|v| !wanted.contains_key(v)) {
            let _ = match vip.addr {
                IpAddr::V4(a) => self.templates.remove(&service_key(a, vip.port, Proto::Tcp)),
                IpAddr::V6(a) => self.templates6.remove(&service6_key(a, vip.port, Proto::Tcp)),
            };
        }
        self.loaded = wanted;
        Ok(())
    }

    fn put(&mut self, vip: Endpoint, t: &BpfSynTemplate) -> io::Result<()> {
        match vip.addr {
            IpAddr::V4(a) => self.templates.insert(service_key(a, vip.port, Proto::Tcp), t, 0),
            IpAddr::V6(a) => self.templates6.insert(service6_key(a, vip.port, Proto::Tcp), t, 0),
        }
        .map_err(|e| bpf_err("SYN-ACK template map", e))
    }

    /// Bring the maps in step with `engine` at `now`: the keys when their
    /// period turned, the RST rate when it changed (before any template:
    /// until it is written no bad cookie passes), the templates that changed
    /// (a service's announced window scale follows its reals). About once a
    /// second.
    pub(crate) fn sync(&mut self, engine: &Engine, now: Instant) -> io::Result<()> {
        self.refresh_keys(&engine.cookie_keys(now))?;
        self.set_reset_rate(engine.config().reset_rate)?;
        self.sync_templates(engine.syn_ack_templates())
    }

    /// Let the program pass bad-cookie ACKs to the engine, for it to answer
    /// with an RST, at `rate` a second (0: none), shared out between CPUs
    /// ([`BpfRstLimit::share`]); written only when it changed.
    pub(crate) fn set_reset_rate(&mut self, rate: u32) -> io::Result<()> {
        if self.reset_rate == Some(rate) {
            return Ok(());
        }
        self.rst_limit.set(0, self.rst_share(rate), 0).map_err(|e| bpf_err("RST limit map", e))?;
        self.reset_rate = Some(rate);
        Ok(())
    }

    /// What each CPU passes of `rate` RSTs a second.
    pub(crate) fn rst_share(&self, rate: u32) -> BpfRstLimit {
        BpfRstLimit::share(rate, self.cpus)
    }

    /// Set the program's clock: CLOCK_MONOTONIC plus `offset` nanoseconds is
    /// the engine's `now` ([`Clock::monotonic_offset`](crate::driver::devices::Clock::monotonic_offset)).
    pub(crate) fn set_clock_offset(&mut self, offset: u64) -> io::Result<()> {
        self.clock.set(0, offset, 0).map_err(|e| bpf_err("cookie clock map", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_program() {
        assert_eq!(size_of::<BpfSynTemplate>(), 8);
        assert_eq!(std::mem::offset_of!(BpfSynTemplate, wscale), 4);
        assert_eq!(std::mem::offset_of!(BpfSynTemplate, max_age), 7);
        assert_eq!(size_of::<BpfCookieKeys>(), 56);
        assert_eq!(std::mem::offset_of!(BpfCookieKeys, key), 8);
        assert_eq!(size_of::<BpfRstLimit>(), 16);
        assert_eq!(std::mem::offset_of!(BpfRstLimit, burst), 8);
    }

    #[test]
    fn the_cpus_shares_of_the_rst_rate_add_up_to_no_more_than_it() {
        assert_eq!(BpfRstLimit::share(0, 4), BpfRstLimit { interval_ns: 0, burst: 0 });
        assert_eq!(BpfRstLimit::share(10_000, 4), BpfRstLimit { interval_ns: 400_000, burst: 2_500 });
        assert_eq!(BpfRstLimit::share(3, 2), BpfRstLimit { interval_ns: 666_666_667, burst: 1 });
        // Fewer RSTs a second than CPUs: each still passes one at a time.
        assert_eq!(BpfRstLimit::share(1, 8), BpfRstLimit { interval_ns: 8_000_000_000, burst: 1 });
        assert_eq!(BpfRstLimit::share(u32::MAX, 1).interval_ns, 1);
        for (rate, cpus) in [(10_000u32, 3u32), (7, 2), (1_000_000, 64), (5, 5)] {
            let s = BpfRstLimit::share(rate, cpus);
            assert!(u64::from(cpus) * s.burst <= u64::from(rate), "{rate} {cpus}");
            assert!(u64::from(cpus) * 1_000_000_000 / s.interval_ns <= u64::from(rate), "{rate} {cpus}");
        }
    }

    #[test]
    fn the_clock_offset_turns_the_monotonic_clock_into_the_engines() {
        let clock = crate::driver::devices::Clock::start();
        let offset = clock.monotonic_offset();
        let program = crate::driver::devices::monotonic_ns().wrapping_add(offset);
        let engine = clock.now().as_nanos();
        assert!(engine >= program && engine - program < 50_000_000, "{engine} vs {program}");
    }
}
