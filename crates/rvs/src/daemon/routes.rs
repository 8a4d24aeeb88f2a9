//! How the kernel brings VIP and LIP traffic to the TUN device: a host route
//! per address to the device, and a neighbour answer (proxy neighbour entry:
//! ARP for IPv4, neighbour advertisements for IPv6) for each address on every
//! other interface, so clients and reals on the same link as the balancer
//! reach VIPs and LIPs without routes of their own.
//!
//! The kernel answers IPv6 solicitations for a proxy entry only where the
//! interface forwards and has `proxy_ndp` on; the first IPv6 entry on an
//! interface switches that on, with no delay for answers to multicast
//! solicitations (`proxy_delay`, 0.8 s at most by default).
//!
//! VIPs and LIPs must not be assigned to an interface here: the kernel would
//! deliver them locally, ahead of any route. The daemon warns when they are.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

use rvs_control::model::Model;

use crate::driver::netlink::Netlink;
use crate::log::warning;
use crate::os;

/// The routes and proxy entries the daemon added, so it removes exactly those.
#[derive(Debug)]
pub(crate) struct Routes {
    netlink: Netlink,
    device: u32,
    routed: BTreeSet<IpAddr>,
    proxied: BTreeSet<(IpAddr, u32)>,
    /// Interfaces where IPv6 proxy entries were switched on.
    ndp_links: BTreeSet<u32>,
    warned_local: BTreeSet<IpAddr>,
}

impl Routes {
    pub(crate) fn new(netlink: Netlink, device: u32) -> Self {
        Self {
            netlink,
            device,
            routed: BTreeSet::new(),
            proxied: BTreeSet::new(),
            ndp_links: BTreeSet::new(),
            warned_local: BTreeSet::new(),
        }
    }

    /// Bring routes and neighbour answers in line with the model's VIP and LIP
    /// addresses and the namespace's current interfaces. Returns warnings
    /// about addresses newly found assigned to an interface.
    pub(crate) fn sync(&mut self, model: &Model) -> io::Result<Vec<String>> {
        let mut wanted = BTreeSet::new();
        for ((_, vip), spec) in &model.services {
            wanted.insert(vip.addr);
            wanted.extend(spec.config.laddrs.iter().copied());
        }
        let warnings = self.warn_local(&wanted);
        let links: Vec<(u32, String)> = os::interfaces()
            .into_iter()
            .filter(|(index, name)| *index != self.device && name != "lo")
            .collect();
        let wanted_proxy: BTreeSet<(IpAddr, u32)> =
            wanted.iter().flat_map(|&a| links.iter().map(move |(l, _)| (a, *l))).collect();

        for (addr, link) in self.proxied.difference(&wanted_proxy).copied().collect::<Vec<_>>() {
            // An interface that went away took its entry along; nothing to report.
            let _ = self.netlink.del_proxy_neigh(addr, link);
            self.proxied.remove(&(addr, link));
        }
        for addr in self.routed.difference(&wanted).copied().collect::<Vec<_>>() {
            if let Err(e) = self.netlink.del_host_route(addr, self.device) {
                warning!("route removal failed", addr = addr, error = e);
            }
            self.routed.remove(&addr);
        }
        for &addr in &wanted {
            if !self.routed.contains(&addr) {
                self.netlink
                    .add_host_route(addr, self.device)
                    .map_err(|e| io::Error::new(e.kind(), format!("route {addr} to the TUN device: {e}")))?;
                self.routed.insert(addr);
            }
        }
        for &(addr, link) in &wanted_proxy {
            if self.proxied.contains(&(addr, link)) {
                continue;
            }
            if addr.is_ipv6()
                && self.ndp_links.insert(link)
                && let Some((_, name)) = links.iter().find(|(l, _)| *l == link)
            {
                answer_solicitations(name);
            }
            match self.netlink.add_proxy_neigh(addr, link) {
                Ok(()) => {
                    self.proxied.insert((addr, link));
                }
                Err(e) if addr.is_ipv4() => {
                    warning!("ARP answer not installed", addr = addr, link = link, error = e);
                }
                Err(e) => warning!("neighbour answer not installed", addr = addr, link = link, error = e),
            }
        }
        self.ndp_links.retain(|l| links.iter().any(|(link, _)| link == l));
        Ok(warnings)
    }

    fn warn_local(&mut self, wanted: &BTreeSet<IpAddr>) -> Vec<String> {
        let local = os::local_addrs();
        let mut warnings = Vec::new();
        for addr in wanted {
            if local.contains(addr) && self.warned_local.insert(*addr) {
                let msg = format!(
                    "{addr} is assigned to an interface here, so the kernel delivers it locally and rvs never \
                     sees it; remove the address (rvs routes it and answers ARP or neighbour solicitations for it)"
                );
                warning!("VIP or LIP is a local address", warning = msg);
                warnings.push(msg);
            }
        }
        self.warned_local.retain(|a| wanted.contains(a));
        warnings
    }

    /// Remove every route and neighbour answer the daemon added.
    pub(crate) fn clear(&mut self) {
        let _ = self.sync(&Model::default());
    }
}

/// Let the kernel answer IPv6 neighbour solicitations for proxy entries on
/// interface `name`, at once; a kernel that refuses (no IPv6 there) is told
/// in one line, and its IPv4 answers go on.
fn answer_solicitations(name: &str) {
    let set = os::sysctl(&format!("net/ipv6/conf/{name}/proxy_ndp"), "1")
        .and_then(|()| os::sysctl(&format!("net/ipv6/neigh/{name}/proxy_delay"), "0"));
    if let Err(e) = set {
        warning!(
            "IPv6 neighbour answers not enabled; IPv6 VIPs and LIPs unreachable on this link",
            link = name,
            error = e
        );
    }
}
