//! Where a packet leaves: the kernel's route (outgoing interface, gateway or
//! the destination itself on-link) and the next hop's Ethernet address from
//! the kernel's neighbour table, both asked over netlink and cached.
//!
//! A known hop is asked again after [`FRESH`], so route and neighbour changes
//! reach the data path within that time; an unknown one after [`RETRY`]. The
//! driver hands a packet with no known hop to the kernel, whose forwarding
//! resolves the neighbour, so the next lookup finds it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::XskPort;
use crate::driver::netlink::Netlink;

/// How long a known hop is used before the kernel is asked again.
const FRESH: Duration = Duration::from_secs(5);
/// How long an unknown hop stays unknown before the kernel is asked again.
const RETRY: Duration = Duration::from_millis(20);
/// Destinations cached at most; past that the cache starts over.
const MAX_ENTRIES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Hop {
    /// Index of the port and the neighbour's address, if both are known.
    out: Option<(usize, [u8; 6])>,
    asked: Instant,
}

/// Route and neighbour cache of one worker.
#[derive(Debug)]
pub(crate) struct NextHops {
    netlink: Netlink,
    cache: HashMap<Ipv4Addr, Hop>,
}

impl NextHops {
    pub(crate) fn new(netlink: Netlink) -> Self {
        Self { netlink, cache: HashMap::new() }
    }

    /// The port (index into `ports`) and Ethernet address a packet to `dst`
    /// leaves by, or `None` when the kernel routes it elsewhere or does not
    /// know the neighbour yet.
    pub(crate) fn lookup(
        &mut self,
        dst: Ipv4Addr,
        ports: &[XskPort],
        now: Instant,
    ) -> Option<(usize, [u8; 6])> {
        if let Some(hop) = self.cache.get(&dst) {
            let ttl = if hop.out.is_some() { FRESH } else { RETRY };
            if now.duration_since(hop.asked) < ttl {
                return hop.out;
            }
        }
        let out = self.ask(dst, ports);
        if self.cache.len() >= MAX_ENTRIES {
            self.cache.clear();
        }
        self.cache.insert(dst, Hop { out, asked: now });
        out
    }

    fn ask(&mut self, dst: Ipv4Addr, ports: &[XskPort]) -> Option<(usize, [u8; 6])> {
        let (oif, via) = self.netlink.route_get(dst).ok()?;
        let port = ports.iter().position(|p| p.ifindex == oif)?;
        let mac = self.netlink.neigh_get(via, oif).ok()??;
        Some((port, mac))
    }
}
