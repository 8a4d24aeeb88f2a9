//! A router between the balancer and one real, whose link to the real has a
//! smaller MTU than the rest: the path toward that real is narrower than
//! either end's first hop, so only path MTU discovery (an ICMP error from
//! the router, relayed or translated by the balancer) can fit packets to it.

use std::net::{IpAddr, Ipv4Addr};

use rvs_netns::{Netns, mirror6};

use super::Lab;

/// The router's namespace; dropping it deletes the namespace and with it
/// the real's link (the real is unreachable afterwards).
#[derive(Debug)]
pub struct Router {
    ns: Netns,
}

impl Router {
    pub fn ns(&self) -> &Netns {
        &self.ns
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.ns.delete();
    }
}

fn ip(ns: &Netns, args: &[&str]) {
    let out = ns.ip().args(args).output().expect("run ip");
    assert!(out.status.success(), "ip -n {} {args:?}: {}", ns.name(), String::from_utf8_lossy(&out.stderr));
}

impl Lab {
    /// Moves real `i` behind a router: the real's bridge port now leads to
    /// the router (10.A.1.200 and its mirror, answering ARP and neighbour
    /// solicitations for the real), and the router reaches the real over a
    /// link of `mtu` bytes. The real keeps its addresses and its gateway
    /// (the router answers for the balancer's address on that link).
    pub fn route_real_through(&self, i: usize, mtu: u32) -> Router {
        let t = &self.topo;
        let ns = Netns::add(format!("{}-router", t.prefix())).expect("add the router namespace");
        let router = Router { ns };
        let r = router.ns();
        let bridge = t.ns_bridge();
        let port = &t.lb_real_ports()[i];
        let real = t.ns_real(i);
        let v4 = t.real_addrs()[i];
        let here = Ipv4Addr::new(v4.octets()[0], v4.octets()[1], 1, 200);
        let mtu = mtu.to_string();
        // The old link goes (both ends), the new ones come.
        ip(bridge, &["link", "del", port]);
        ip(bridge, &["link", "add", port, "type", "veth", "peer", "name", "up0", "netns", r.name()]);
        ip(bridge, &["link", "set", port, "master", "br0"]);
        ip(bridge, &["link", "set", port, "up"]);
        ip(
            r,
            &[
                "link",
                "add",
                "dn0",
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                t.real_if(),
                "netns",
                real.name(),
            ],
        );
        ip(real, &["link", "set", t.real_if(), "mtu", &mtu]);
        for (dev, ns) in [("up0", r), ("dn0", r), (t.real_if(), real)] {
            ip(ns, &["link", "set", dev, "up"]);
        }
        // As the topology's own real links: MTU-sized frames only, which
        // generic XDP needs (see `prepare_for_generic_xdp`).
        let ethtool = real.run("ethtool", ["-K", t.real_if(), "tso", "off", "gso", "off"]);
        ethtool.expect("turn segmentation offload off (ethtool installed?)");
        r.run_in(|| -> std::io::Result<()> {
            for (key, value) in [
                ("ipv4/ip_forward", "1"),
                ("ipv6/conf/all/forwarding", "1"),
                ("ipv4/conf/all/rp_filter", "0"),
                ("ipv4/conf/up0/proxy_arp", "1"),
                ("ipv4/conf/dn0/proxy_arp", "1"),
                ("ipv6/conf/all/proxy_ndp", "1"),
                ("ipv6/conf/up0/accept_dad", "0"),
                ("ipv6/conf/dn0/accept_dad", "0"),
            ] {
                std::fs::write(format!("/proc/sys/net/{key}"), value)?;
            }
            Ok(())
        })
        .expect("enter the router namespace")
        .expect("router sysctls");
        for (a, len) in [(IpAddr::from(here), "24"), (mirror6(here).into(), "64")] {
            let cidr = format!("{a}/{len}");
            if a.is_ipv6() {
                ip(r, &["-6", "addr", "add", &cidr, "dev", "up0", "nodad"]);
            } else {
                ip(r, &["addr", "add", &cidr, "dev", "up0"]);
            }
        }
        // The real's host routes and the way back to the local addresses.
        let lb = t.lb_real_addr();
        ip(r, &["route", "add", &format!("{v4}/32"), "dev", "dn0"]);
        ip(r, &["-6", "route", "add", &format!("{}/128", mirror6(v4)), "dev", "dn0"]);
        ip(r, &["route", "add", "default", "via", &lb.to_string()]);
        ip(r, &["-6", "route", "add", "default", "via", &mirror6(lb).to_string()]);
        // Neighbour discovery on each side answers for the other side's node.
        ip(r, &["-6", "neigh", "add", "proxy", &mirror6(v4).to_string(), "dev", "up0"]);
        ip(r, &["-6", "neigh", "add", "proxy", &mirror6(lb).to_string(), "dev", "dn0"]);
        ip(real, &["addr", "add", &format!("{v4}/24"), "dev", t.real_if()]);
        ip(real, &["-6", "addr", "add", &format!("{}/64", mirror6(v4)), "dev", t.real_if(), "nodad"]);
        ip(real, &["route", "add", "default", "via", &lb.to_string()]);
        ip(real, &["-6", "route", "add", "default", "via", &mirror6(lb).to_string()]);
        // The balancer may have learnt the real's old link address.
        for fam in ["-4", "-6"] {
            ip(t.ns_lb(), &[fam, "neigh", "flush", "dev", t.lb_real_if()]);
        }
        router
    }
}
