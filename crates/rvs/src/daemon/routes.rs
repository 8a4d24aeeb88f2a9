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

#[cfg(test)]
mod tests {
    use rvs_control::model::ServiceSpec;
    use rvs_core::{Endpoint, Proto, ServiceConfig};

    use super::*;
    use crate::driver::netlink::index_of;
    use crate::driver::tun::Tun;
    use crate::os::shell;

    /// An IPv6 VIP with an IPv4 LIP (NAT64) and the other way round (NAT46).
    fn translating_model() -> Model {
        let mut model = Model::default();
        for (vip, lip) in [("fd10:77:2::1", "10.77.3.1"), ("10.77.2.1", "fd10:77:3::1")] {
            let mut config =
                ServiceConfig::new(Proto::Tcp, Endpoint { addr: vip.parse().unwrap(), port: 80 });
            config.laddrs.push(lip.parse().unwrap());
            model.services.insert((Proto::Tcp, config.vip), ServiceSpec::new(config));
        }
        model
    }

    /// The Ethernet address `addr` resolves to from the peer's `rvsr1`, once
    /// a datagram sent to it made the peer ask.
    fn resolved(peer: &os::Peer, addr: &str) -> Option<String> {
        let family = if addr.contains(':') { "AF_INET6" } else { "AF_INET" };
        peer.shell(&format!(
            "python3 -c \"import socket; socket.socket(socket.{family}, socket.SOCK_DGRAM).sendto(b'x', ('{addr}', 9))\""
        ));
        (0..250).find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let shown = peer.shell(&format!("ip neigh show {addr} dev rvsr1"));
            let mut words = shown.split_whitespace().skip_while(|w| *w != "lladdr");
            words.next().and(words.next()).map(str::to_owned)
        })
    }

    #[test]
    fn routes_and_neighbour_answers_of_both_families_come_and_go() {
        let Some(peer) = os::Peer::start() else { return };
        let tid = peer.tid();
        os::in_new_netns(move || {
            let mut netlink = Netlink::open().unwrap();
            netlink.add_veth_pair("rvsr0", "rvsr1").unwrap();
            netlink.add_veth_pair("rvsr2", "rvsr3").unwrap();
            shell(&format!("ip link set rvsr1 netns {tid}"));
            shell("ip addr add 10.77.0.1/24 dev rvsr0 && ip addr add fd10:77:0::1/64 dev rvsr0 nodad");
            for link in ["rvsr0", "rvsr2", "rvsr3"] {
                netlink.link_up(index_of(link).unwrap()).unwrap();
            }
            peer.shell(
                "ip link set rvsr1 up && ip addr add 10.77.0.2/24 dev rvsr1 && \
                 ip addr add fd10:77:0::2/64 dev rvsr1 nodad && \
                 ip route add 10.77.2.1/32 dev rvsr1 && ip -6 route add fd10:77:2::1/128 dev rvsr1",
            );
            // As the daemon does.
            os::sysctl("net/ipv4/ip_forward", "1").unwrap();
            os::sysctl("net/ipv6/conf/all/forwarding", "1").unwrap();
            let tun = Tun::create_queues("rvsrt", 1).unwrap();
            netlink.link_up(tun[0].index()).unwrap();
            let mut routes = Routes::new(netlink, tun[0].index());
            routes.sync(&translating_model()).unwrap();

            let routed = shell("ip -4 route show dev rvsrt; ip -6 route show dev rvsrt");
            for addr in ["10.77.2.1", "10.77.3.1", "fd10:77:2::1", "fd10:77:3::1"] {
                assert!(routed.lines().any(|l| l.starts_with(&format!("{addr} "))), "{addr}: {routed}");
            }
            let proxied = shell("ip neigh show proxy");
            for addr in ["10.77.2.1", "10.77.3.1", "fd10:77:2::1", "fd10:77:3::1"] {
                for link in ["rvsr0", "rvsr2", "rvsr3"] {
                    let entry = format!("{addr} dev {link} proxy");
                    assert!(proxied.lines().any(|l| l.trim() == entry), "{entry}: {proxied}");
                }
            }
            // Not on the TUN device itself.
            assert!(!proxied.contains("rvsrt"), "{proxied}");
            for link in ["rvsr0", "rvsr2", "rvsr3"] {
                assert_eq!(shell(&format!("cat /proc/sys/net/ipv6/conf/{link}/proxy_ndp")).trim(), "1");
                assert_eq!(shell(&format!("cat /proc/sys/net/ipv6/neigh/{link}/proxy_delay")).trim(), "0");
            }
            // A neighbour on the link asks and is answered with the balancer's address.
            let mac = shell("ip -br link show rvsr0").split_whitespace().nth(2).unwrap().to_owned();
            assert_eq!(resolved(&peer, "fd10:77:2::1").as_deref(), Some(&*mac), "IPv6 VIP unanswered");
            assert_eq!(resolved(&peer, "10.77.2.1").as_deref(), Some(&*mac), "IPv4 VIP unanswered");
            // The kernel's own IPv6 stays off the TUN device.
            assert!(!shell("ip -6 addr show dev rvsrt").contains("inet6"));
            assert!(!shell("ip link show dev rvsrt").contains("MULTICAST"));

            routes.clear();
            assert_eq!(shell("ip -4 route show dev rvsrt; ip -6 route show dev rvsrt").trim(), "");
            assert_eq!(shell("ip neigh show proxy").trim(), "");
        });
    }
}
