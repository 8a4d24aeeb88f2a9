//! The standard load-balancer topology: one client, one balancer, N reals.
//!
//! ```text
//!  client ns            lb ns                                  realI ns
//!  eth0 10.A.0.2 ---- cli0 10.A.0.1
//!                       br0 10.A.1.1 --+-- rI ---------------- eth0 10.A.1.(10+I)
//!                                      +-- ...
//! ```
//!
//! [`Topology::build_switched`] gives the balancer two plain veths instead,
//! as a balancer with two NICs has, and puts the bridge in a namespace of
//! its own (the switch, which passes frames without netfilter), so the
//! balancer's links take native XDP:
//!
//! ```text
//!  client ns            lb ns                 switch ns                realI ns
//!  eth0 10.A.0.2 ---- cli0 10.A.0.1
//!                       rl0 10.A.1.1 ---- lb0 -- br0 --+-- rI ---- eth0 10.A.1.(10+I)
//! ```
//! The VIP (10.A.2.1) and the local addresses (10.A.3.1..) lie outside every
//! connected subnet, so they exist only where a data path routes them: the
//! client sends everything to the balancer, the reals answer everything
//! through it. Each instance lives in its own namespaces, so every instance
//! may use the same `A`.
//!
//! Every node is dual-stack: its IPv6 address mirrors its IPv4 one,
//! `10.A.B.C` ↔ `fd10:A:B::C` with the decimal digits written as hex groups
//! ([`mirror6`]), on /64s where IPv4 has /24s, with the same default routes.
//! Addresses are usable at once (no duplicate address detection), and no
//! namespace sends router solicitations or takes router advertisements.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::loss::{Loss, LossRule};
use crate::ns::{ChildGuard, Netns, STOP_GRACE, run};

/// Every namespace this crate names starts with this, so cleanup never
/// touches anything it did not make.
const NAME_TAG: &str = "rvsT";

/// The client's interface (toward the balancer).
const CLIENT_IF: &str = "eth0";
/// The balancer's interface toward the client.
const LB_CLIENT_IF: &str = "cli0";
/// The bridge joining the reals (in the balancer's namespace, or the switch's).
const BRIDGE: &str = "br0";
/// The balancer's veth toward the switch, in a switched topology.
const LB_SWITCH_IF: &str = "rl0";
/// The switch's port toward the balancer.
const SWITCH_LB_PORT: &str = "lb0";
/// Each real's interface (toward the balancer's bridge).
const REAL_IF: &str = "eth0";

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologySpec {
    /// Number of real servers, at least 2.
    pub reals: usize,
    /// Number of local addresses (LIPs) to hand out, at least 1.
    pub laddrs: usize,
    /// The `A` in the 10.A.x.y address plan.
    pub net: u8,
    /// Receive and send queues of the balancer's client link (both ends)
    /// and its real-side link (bridge, or veth to the switch, both ends),
    /// 1..=16: a balancer with several workers binds one AF_XDP socket per
    /// worker, each to a queue of its own.
    pub queues: u32,
}

impl Default for TopologySpec {
    fn default() -> Self {
        Self { reals: 2, laddrs: 2, net: 77, queues: 1 }
    }
}

/// A built topology. Dropping it removes everything it made.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    net: u8,
    queues: u32,
    laddr_count: usize,
    client: Netns,
    lb: Netns,
    reals: Vec<Netns>,
    /// The namespace holding the bridge, when it is not the balancer's.
    switch: Option<Netns>,
    /// Namespaces that exist because of us, in creation order.
    created: Vec<Netns>,
    children: Vec<ChildGuard>,
    loss: Option<Loss>,
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

impl Topology {
    /// Builds the topology with namespaces named `rvsT<pid>x<n>-{client,lb,realI}`.
    /// On error, whatever was already made is removed again.
    pub fn build(spec: &TopologySpec) -> io::Result<Self> {
        Self::build_with(spec, false)
    }

    /// Builds the switched topology (see the module doc): the balancer's
    /// real-side link is a veth to a switch namespace (`...-switch`) that
    /// holds the bridge, so both of the balancer's links are plain veths.
    pub fn build_switched(spec: &TopologySpec) -> io::Result<Self> {
        Self::build_with(spec, true)
    }

    fn build_with(spec: &TopologySpec, switched: bool) -> io::Result<Self> {
        if spec.reals < 2 || spec.reals > 200 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "reals must be within 2..=200"));
        }
        if spec.laddrs == 0 || spec.laddrs > 254 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "laddrs must be within 1..=254"));
        }
        if !(1..=16).contains(&spec.queues) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "queues must be within 1..=16"));
        }
        let prefix = format!("{NAME_TAG}{}x{}", std::process::id(), INSTANCE.fetch_add(1, Ordering::Relaxed));
        let name = |role: &str| Netns::new(format!("{prefix}-{role}"));
        let mut t = Self {
            client: name("client"),
            lb: name("lb"),
            reals: (1..=spec.reals).map(|i| name(&format!("real{i}"))).collect(),
            switch: switched.then(|| name("switch")),
            prefix,
            net: spec.net,
            queues: spec.queues,
            laddr_count: spec.laddrs,
            created: Vec::new(),
            children: Vec::new(),
            loss: None,
        };
        let all: Vec<Netns> =
            [&t.client, &t.lb].into_iter().chain(&t.switch).chain(&t.reals).cloned().collect();
        for ns in all {
            Netns::add(ns.name())?;
            t.created.push(ns);
        }
        t.wire()?;
        Ok(t)
    }

    /// Creates links, addresses, routes and sysctls in the fresh namespaces.
    fn wire(&self) -> io::Result<()> {
        let (client, lb) = (&self.client, &self.lb);
        for ns in &self.created {
            ns.run_in(quiet_ipv6)??;
        }
        // Each address goes in as IPv4 /24 and its IPv6 mirror /64, usable at once.
        let addr = |ns: &Netns, a: Ipv4Addr, dev: &str| -> io::Result<()> {
            ip(ns, &["addr", "add", &format!("{a}/24"), "dev", dev])?;
            ip(ns, &["-6", "addr", "add", &format!("{}/64", mirror6(a)), "dev", dev, "nodad"])
        };
        // A default route over both families via `gw`.
        let default_via = |ns: &Netns, gw: Ipv4Addr| -> io::Result<()> {
            ip(ns, &["route", "add", "default", "via", &gw.to_string()])?;
            ip(ns, &["-6", "route", "add", "default", "via", &mirror6(gw).to_string()])
        };
        // Each veth is created inside a namespace with its peer placed directly
        // in the other, so interface names never meet in the root namespace.
        let q = self.queues.to_string();
        let queues = ["numtxqueues", q.as_str(), "numrxqueues", q.as_str()];
        // A veth pair with `queues` on both ends, `name` in `ns`, `peer` in `peer_ns`.
        let veth = |ns: &Netns, name: &str, peer: &str, peer_ns: &Netns| {
            let mut args = vec!["link", "add", name];
            args.extend(queues);
            args.extend(["type", "veth", "peer", "name", peer]);
            args.extend(queues);
            args.extend(["netns", peer_ns.name()]);
            ip(ns, &args)
        };
        veth(client, CLIENT_IF, LB_CLIENT_IF, lb)?;
        addr(client, self.client_addr(), CLIENT_IF)?;
        ip(client, &["link", "set", CLIENT_IF, "up"])?;
        default_via(client, self.lb_client_addr())?;
        addr(lb, self.lb_client_addr(), LB_CLIENT_IF)?;
        ip(lb, &["link", "set", LB_CLIENT_IF, "up"])?;
        let mut bridge = vec!["link", "add", BRIDGE];
        bridge.extend(queues);
        bridge.extend(["type", "bridge"]);
        let sw = self.switch.as_ref().unwrap_or(lb);
        ip(sw, &bridge)?;
        ip(sw, &["link", "set", BRIDGE, "up"])?;
        if self.switch.is_some() {
            veth(lb, LB_SWITCH_IF, SWITCH_LB_PORT, sw)?;
            ip(sw, &["link", "set", SWITCH_LB_PORT, "master", BRIDGE])?;
            ip(sw, &["link", "set", SWITCH_LB_PORT, "up"])?;
        }
        addr(lb, self.lb_real_addr(), self.lb_real_if())?;
        ip(lb, &["link", "set", self.lb_real_if(), "up"])?;
        let ports = self.lb_real_ports();
        for ((real, port), a) in self.reals.iter().zip(&ports).zip(self.real_addrs()) {
            ip(sw, &["link", "add", port, "type", "veth", "peer", "name", REAL_IF, "netns", real.name()])?;
            ip(sw, &["link", "set", port, "master", BRIDGE])?;
            ip(sw, &["link", "set", port, "up"])?;
            addr(real, a, REAL_IF)?;
            ip(real, &["link", "set", REAL_IF, "up"])?;
            default_via(real, self.lb_real_addr())?;
        }
        lb.run_in(|| {
            write_sysctl("net/ipv4/ip_forward", "1")?;
            write_sysctl("net/ipv6/conf/all/forwarding", "1")
        })??;
        if let Some(switch) = &self.switch {
            switch.run_in(plain_switch)??;
        }
        for ns in &self.created {
            ns.run_in(disable_rp_filter)??;
        }
        Ok(())
    }

    /// Make the links fit a balancer that takes frames with generic XDP on
    /// its client link and real-side bridge: the client and the reals send
    /// MTU-sized frames (no TSO or GSO super-frames, which generic XDP
    /// cannot hand to an AF_XDP socket's 4 KiB frames; the balancer's veth
    /// ends keep GRO off, as veth has it by default, for the same reason).
    /// Nothing is XDP-redirected into a veth (the driver sends through its
    /// sockets), so no peer needs GRO or a program of its own. Checksum
    /// offload stays on: the driver completes partial checksums itself.
    pub fn prepare_for_generic_xdp(&self) -> io::Result<()> {
        let ethtool = |ns: &Netns, args: &[&str]| run(&mut ns.cmd("ethtool", args)).map(drop);
        ethtool(&self.client, &["-K", CLIENT_IF, "tso", "off", "gso", "off"])?;
        for real in &self.reals {
            ethtool(real, &["-K", REAL_IF, "tso", "off", "gso", "off"])?;
        }
        Ok(())
    }

    /// The prefix shared by this instance's namespace names (`rvsT<pid>x<n>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The client namespace.
    pub fn ns_client(&self) -> &Netns {
        &self.client
    }

    /// The load balancer's namespace.
    pub fn ns_lb(&self) -> &Netns {
        &self.lb
    }

    /// The namespace of real `i`, counted from 0 (its name ends in `real{i+1}`).
    pub fn ns_real(&self, i: usize) -> &Netns {
        &self.reals[i]
    }

    /// All real namespaces, in order.
    pub fn ns_reals(&self) -> &[Netns] {
        &self.reals
    }

    /// The virtual service address: routed to the balancer, on no link.
    pub fn vip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 2, 1)
    }

    /// The balancer's local addresses (10.A.3.1..), routed back to it by the reals.
    pub fn laddrs(&self) -> Vec<Ipv4Addr> {
        (1..=self.laddr_count).map(|i| Ipv4Addr::new(10, self.net, 3, i as u8)).collect()
    }

    /// The reals' addresses, in the order of [`Self::ns_real`].
    pub fn real_addrs(&self) -> Vec<Ipv4Addr> {
        (0..self.reals.len()).map(|i| Ipv4Addr::new(10, self.net, 1, 10 + i as u8 + 1)).collect()
    }

    /// The client's address.
    pub fn client_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 0, 2)
    }

    /// The balancer's address on the client side (the client's gateway).
    pub fn lb_client_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 0, 1)
    }

    /// The balancer's address on the real side (the reals' gateway).
    pub fn lb_real_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 1, 1)
    }

    /// The IPv6 virtual service address (`fd10:A:2::1`), like [`Self::vip`].
    pub fn vip6(&self) -> Ipv6Addr {
        mirror6(self.vip())
    }

    /// The balancer's IPv6 local addresses (`fd10:A:3::1`..), like [`Self::laddrs`].
    pub fn laddrs6(&self) -> Vec<Ipv6Addr> {
        self.laddrs().into_iter().map(mirror6).collect()
    }

    /// The reals' IPv6 addresses, in the order of [`Self::ns_real`].
    pub fn real_addrs6(&self) -> Vec<Ipv6Addr> {
        self.real_addrs().into_iter().map(mirror6).collect()
    }

    /// The client's IPv6 address.
    pub fn client_addr6(&self) -> Ipv6Addr {
        mirror6(self.client_addr())
    }

    /// The balancer's IPv6 address on the client side (the client's gateway).
    pub fn lb_client_addr6(&self) -> Ipv6Addr {
        mirror6(self.lb_client_addr())
    }

    /// The balancer's IPv6 address on the real side (the reals' gateway).
    pub fn lb_real_addr6(&self) -> Ipv6Addr {
        mirror6(self.lb_real_addr())
    }

    /// The client's interface (toward the balancer).
    pub fn client_if(&self) -> &str {
        CLIENT_IF
    }

    /// The balancer's interface toward the client.
    pub fn lb_client_if(&self) -> &str {
        LB_CLIENT_IF
    }

    /// The balancer's interface toward the reals, carrying 10.A.1.1 (and its mirror): the
    /// bridge, or in a switched topology the veth to the switch.
    pub fn lb_real_if(&self) -> &str {
        if self.switch.is_some() { LB_SWITCH_IF } else { BRIDGE }
    }

    /// The switch's namespace, in a switched topology.
    pub fn ns_switch(&self) -> Option<&Netns> {
        self.switch.as_ref()
    }

    /// The namespace holding the bridge and its ports toward the reals: the
    /// balancer's, or the switch's in a switched topology.
    pub fn ns_bridge(&self) -> &Netns {
        self.switch.as_ref().unwrap_or(&self.lb)
    }

    /// The switch's bridge port toward the balancer (the peer of
    /// [`Self::lb_real_if`]), in a switched topology.
    pub fn switch_lb_port(&self) -> Option<&str> {
        self.switch.as_ref().map(|_| SWITCH_LB_PORT)
    }

    /// The bridge ports toward the reals, one veth per real, in real order
    /// (in [`Self::ns_bridge`]): the far end of each real's link.
    pub fn lb_real_ports(&self) -> Vec<String> {
        (1..=self.reals.len()).map(|i| format!("r{i}")).collect()
    }

    /// The interface name each real uses toward the balancer.
    pub fn real_if(&self) -> &str {
        REAL_IF
    }

    /// Takes over a process so that it is ended before the namespaces go.
    pub fn adopt(&mut self, child: ChildGuard) {
        self.children.push(child);
    }

    /// Drops `pct` % of packets at random on every LB–real link, in both
    /// directions, replacing any loss set before; 0 removes it. Needs `nft`.
    pub fn inject_loss(&mut self, pct: f64) -> io::Result<()> {
        self.set_loss(&[LossRule::all(pct)])
    }

    /// Drops `pct` % of the pure SYNs and SYN-ACKs on every LB–real link, in
    /// both directions, replacing any loss set before; 0 removes it. Needs `nft`.
    pub fn inject_syn_loss(&mut self, pct: f64) -> io::Result<()> {
        self.set_loss(&[LossRule::syn_and_syn_ack(pct)])
    }

    /// Applies all of `rules` on every LB–real link, in both directions,
    /// replacing any loss set before; rules at 0 % are left out, and no rule
    /// above 0 % removes the loss. Needs `nft`.
    pub fn set_loss(&mut self, rules: &[LossRule]) -> io::Result<()> {
        self.set_loss_with(rules, true)
    }

    /// [`Self::set_loss`], with the egress hook allowed or not, so both ways
    /// of dropping toward the reals can be exercised.
    fn set_loss_with(&mut self, rules: &[LossRule], allow_egress: bool) -> io::Result<()> {
        if let Some(mut old) = self.loss.take() {
            old.remove()?;
        }
        if rules.iter().any(|r| r.pct > 0.0) {
            let reals: Vec<(Netns, String)> =
                self.reals.iter().map(|r| (r.clone(), REAL_IF.to_owned())).collect();
            let ports = self.lb_real_ports();
            self.loss = Some(Loss::install(self.ns_bridge(), &ports, &reals, rules, allow_egress)?);
        }
        Ok(())
    }

    /// Whether the loss toward the reals is dropped at the balancer's egress
    /// (`true`) or at the reals' ingress (`false`, kernels without netdev
    /// egress). `None` when no loss is set.
    pub fn loss_uses_egress(&self) -> Option<bool> {
        self.loss.as_ref().map(Loss::uses_egress)
    }

    /// Packets dropped by injected loss so far (0 when none is set).
    pub fn loss_dropped(&self) -> io::Result<u64> {
        self.loss.as_ref().map_or(Ok(0), Loss::dropped)
    }

    /// Removes everything now and reports the first failure; dropping does the
    /// same silently. Calling it twice is harmless.
    pub fn teardown(&mut self) -> io::Result<()> {
        let mut first_err = None;
        let mut note = |r: io::Result<()>| {
            if let Err(e) = r
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        };
        for mut child in self.children.drain(..).rev() {
            note(child.stop(STOP_GRACE).map(drop));
        }
        if let Some(mut loss) = self.loss.take() {
            note(loss.remove());
        }
        for ns in self.created.drain(..).rev() {
            note(ns.delete());
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Leaves everything in place (for poking around) and returns the names of
    /// the namespaces, which the caller must delete later (`ip netns del NAME`).
    /// Adopted processes keep running, and injected loss stays.
    pub fn keep(mut self) -> Vec<String> {
        for child in self.children.drain(..) {
            let _ = child.into_inner();
        }
        if let Some(loss) = self.loss.take() {
            loss.keep();
        }
        self.created.drain(..).map(|ns| ns.name().to_owned()).collect()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

fn ip(ns: &Netns, args: &[&str]) -> io::Result<()> {
    run(ns.ip().args(args)).map(drop)
}

/// The IPv6 mirror of an address of the plan: `10.A.B.C` → `fd10:A:B::C`,
/// each decimal number written with the same digits as a hex group (so
/// `10.77.1.11` is `fd10:77:1::11`), which keeps the two plans readable side
/// by side.
pub fn mirror6(v4: Ipv4Addr) -> Ipv6Addr {
    let group = |n: u8| n.to_string().bytes().fold(0u16, |g, d| g << 4 | u16::from(d - b'0'));
    let [_, a, b, c] = v4.octets();
    Ipv6Addr::new(0xfd10, group(a), group(b), 0, 0, 0, 0, group(c))
}

/// Keeps IPv6 quiet and quick in a fresh namespace, for every interface
/// made after it: no duplicate address detection (link-local addresses are
/// usable at once, as `nodad` makes the others), no router solicitations,
/// no router advertisements taken.
fn quiet_ipv6() -> io::Result<()> {
    for conf in ["all", "default"] {
        write_sysctl(&format!("net/ipv6/conf/{conf}/accept_dad"), "0")?;
        write_sysctl(&format!("net/ipv6/conf/{conf}/accept_ra"), "0")?;
        write_sysctl(&format!("net/ipv6/conf/{conf}/router_solicitations"), "0")?;
    }
    Ok(())
}

/// Writes a sysctl of the calling thread's network namespace: /proc/sys/net
/// resolves against the namespace of the thread that opens the file.
fn write_sysctl(key: &str, value: &str) -> io::Result<()> {
    let path = Path::new("/proc/sys").join(key);
    std::fs::write(&path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", path.display())))
}

/// Keeps bridged frames out of the switch's netfilter hooks: where the
/// host has `br_netfilter` loaded, each namespace's bridges otherwise run
/// every IPv4, IPv6 and ARP frame through them, work no switch does.
fn plain_switch() -> io::Result<()> {
    for family in ["iptables", "ip6tables", "arptables"] {
        let key = format!("net/bridge/bridge-nf-call-{family}");
        if Path::new("/proc/sys").join(&key).exists() {
            write_sysctl(&key, "0")?;
        }
    }
    Ok(())
}

/// Turns reverse-path filtering off on every interface and for new ones, since
/// the effective value is the maximum of `all` and the interface's own.
fn disable_rp_filter() -> io::Result<()> {
    for entry in std::fs::read_dir("/proc/sys/net/ipv4/conf")? {
        let name = entry?.file_name();
        write_sysctl(&format!("net/ipv4/conf/{}/rp_filter", name.to_string_lossy()), "0")?;
    }
    Ok(())
}

/// Whether `name` is a namespace name this crate makes (`rvsT<pid>x<n>-<role>`),
/// returning the pid.
fn parse_name(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_TAG)?;
    let (pid, rest) = rest.split_once('x')?;
    let (n, role) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(n) && !role.is_empty()).then(|| pid.parse().ok())?
}

/// Names of all namespaces made by this crate that exist now.
fn our_namespaces() -> io::Result<Vec<String>> {
    let out = run(Command::new("ip").args(["netns", "list"]))?;
    // Lines look like `NAME` or `NAME (id: 3)`.
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| parse_name(n).is_some())
        .map(str::to_owned)
        .collect())
}

/// Deletes every namespace of ours whose name starts with `prefix`, e.g. the
/// `rvsT<pid>x` of a crashed run, and returns how many it deleted. The prefix
/// must start with `rvsT`, so nothing else can match; note that the bare
/// `rvsT` matches the topologies of runs still going, too.
pub fn cleanup_stale(prefix: &str) -> io::Result<usize> {
    if !prefix.starts_with(NAME_TAG) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cleanup prefix must start with {NAME_TAG}"),
        ));
    }
    let mut n = 0;
    for name in our_namespaces()?.into_iter().filter(|n| n.starts_with(prefix)) {
        Netns::new(name).delete()?;
        n += 1;
    }
    Ok(n)
}

/// Deletes the namespaces of ours whose creating process no longer exists,
/// leaving those of running processes alone; returns how many it deleted.
pub fn cleanup_orphans() -> io::Result<usize> {
    let mut n = 0;
    for name in our_namespaces()? {
        let Some(pid) = parse_name(&name) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            Netns::new(name).delete()?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{netns_tests_enabled, nft_available};

    #[test]
    fn parses_only_our_names() {
        assert_eq!(parse_name("rvsT123x4-lb"), Some(123));
        assert_eq!(parse_name("rvsT123x4-real10"), Some(123));
        assert_eq!(parse_name("rvsT123x4-"), None);
        assert_eq!(parse_name("rvsT123-lb"), None);
        assert_eq!(parse_name("rvsTx4-lb"), None);
        assert_eq!(parse_name("other123x4-lb"), None);
    }

    #[test]
    fn address_plan() {
        if !netns_tests_enabled("address_plan") {
            return;
        }
        let t = Topology::build(&TopologySpec { reals: 3, laddrs: 2, net: 9, queues: 2 }).unwrap();
        assert_eq!(t.vip(), Ipv4Addr::new(10, 9, 2, 1));
        assert_eq!(t.laddrs(), [Ipv4Addr::new(10, 9, 3, 1), Ipv4Addr::new(10, 9, 3, 2)]);
        assert_eq!(
            t.real_addrs(),
            [Ipv4Addr::new(10, 9, 1, 11), Ipv4Addr::new(10, 9, 1, 12), Ipv4Addr::new(10, 9, 1, 13)]
        );
        assert_eq!(t.lb_real_ports(), ["r1", "r2", "r3"]);
        assert!(t.ns_real(2).name().ends_with("-real3"));
        let fwd = t.ns_lb().run("cat", ["/proc/sys/net/ipv4/ip_forward"]).unwrap();
        assert_eq!(fwd.trim(), "1");
        let rp = t.ns_lb().run("cat", ["/proc/sys/net/ipv4/conf/br0/rp_filter"]).unwrap();
        assert_eq!(rp.trim(), "0");
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(mirror6(Ipv4Addr::new(10, 77, 0, 2)), v6("fd10:77:0::2"));
        assert_eq!(mirror6(Ipv4Addr::new(10, 255, 1, 123)), v6("fd10:255:1::123"));
        assert_eq!(t.vip6(), v6("fd10:9:2::1"));
        assert_eq!(t.laddrs6(), [v6("fd10:9:3::1"), v6("fd10:9:3::2")]);
        assert_eq!(t.real_addrs6(), [v6("fd10:9:1::11"), v6("fd10:9:1::12"), v6("fd10:9:1::13")]);
        assert_eq!(
            (t.client_addr6(), t.lb_client_addr6(), t.lb_real_addr6()),
            (v6("fd10:9:0::2"), v6("fd10:9:0::1"), v6("fd10:9:1::1"))
        );
        let fwd6 = t.ns_lb().run("cat", ["/proc/sys/net/ipv6/conf/all/forwarding"]).unwrap();
        assert_eq!(fwd6.trim(), "1");
        // Every address is usable at once (no tentative state), on both
        // families, and the client and the reals route everything via the balancer.
        let client = t.ns_client().run("ip", ["-6", "addr", "show", "dev", "eth0"]).unwrap();
        assert!(client.contains("inet6 fd10:9::2/64") && !client.contains("tentative"), "{client}");
        for ns in [t.ns_client(), t.ns_real(1)] {
            let routes = ns.run("ip", ["-6", "route", "show", "default"]).unwrap();
            assert!(routes.contains("via fd10:9:"), "{}: {routes}", ns.name());
            let ra = ns.run("cat", ["/proc/sys/net/ipv6/conf/eth0/accept_ra"]).unwrap();
            assert_eq!(ra.trim(), "0");
        }
        assert!(lb_connects_to_real(&t, false) && lb_connects_to_real(&t, true));
        for dev in ["cli0", "br0"] {
            let q = t.ns_lb().run("ls", [format!("/sys/class/net/{dev}/queues")]).unwrap();
            assert_eq!(q.split_whitespace().filter(|e| e.starts_with("rx-")).count(), 2, "{dev}: {q}");
        }
    }

    #[test]
    fn switched_topology_gives_the_balancer_two_veths() {
        if !netns_tests_enabled("switched_topology_gives_the_balancer_two_veths") {
            return;
        }
        let t = Topology::build_switched(&TopologySpec { reals: 2, laddrs: 1, net: 9, queues: 2 }).unwrap();
        let sw = t.ns_switch().expect("a switch namespace").clone();
        assert!(sw.name().ends_with("-switch"));
        assert_eq!(t.ns_bridge(), &sw);
        assert_eq!(t.lb_real_if(), "rl0");
        assert_eq!(t.switch_lb_port(), Some("lb0"));
        for dev in ["cli0", "rl0"] {
            let link = t.ns_lb().run("ip", ["-d", "link", "show", dev]).unwrap();
            assert!(link.contains("veth"), "{dev}: {link}");
            let q = t.ns_lb().run("ls", [format!("/sys/class/net/{dev}/queues")]).unwrap();
            assert_eq!(q.split_whitespace().filter(|e| e.starts_with("rx-")).count(), 2, "{dev}: {q}");
        }
        assert!(t.ns_lb().run("ip", ["link", "show", "br0"]).is_err(), "no bridge in the balancer");
        let ports = sw.run("ip", ["-o", "link", "show", "master", "br0"]).unwrap();
        for p in ["lb0", "r1", "r2"] {
            assert!(ports.contains(&format!(" {p}@")), "{p} on the switch's bridge: {ports}");
        }
        if Path::new("/proc/sys/net/bridge").exists() {
            let nf = sw.run("cat", ["/proc/sys/net/bridge/bridge-nf-call-iptables"]).unwrap();
            assert_eq!(nf.trim(), "0", "the switch keeps bridged frames out of netfilter");
        }
        assert!(lb_connects_to_real(&t, false) && lb_connects_to_real(&t, true));
        let names: Vec<String> = t.created.iter().map(|n| n.name().to_owned()).collect();
        drop(t);
        let left = run(Command::new("ip").args(["netns", "list"])).unwrap();
        assert!(names.iter().all(|n| !left.contains(n.as_str())), "left behind: {left}");
    }

    #[test]
    fn rejects_bad_specs() {
        let e = Topology::build(&TopologySpec { reals: 1, ..Default::default() }).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = Topology::build(&TopologySpec { queues: 0, ..Default::default() }).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(cleanup_stale("x").is_err());
    }

    /// Connects from the balancer to a listener on real 0, over IPv6 or
    /// IPv4, with a short timeout.
    fn lb_connects_to_real(t: &Topology, ipv6: bool) -> bool {
        let addr: std::net::IpAddr = if ipv6 { t.real_addrs6()[0].into() } else { t.real_addrs()[0].into() };
        let listener = t.ns_real(0).run_in(|| std::net::TcpListener::bind((addr, 0))).unwrap().unwrap();
        let target = listener.local_addr().unwrap();
        t.ns_lb()
            .run_in(|| std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_millis(1500)))
            .unwrap()
            .is_ok()
    }

    #[test]
    fn loss_without_egress_hook_drops_at_the_reals() {
        if !netns_tests_enabled("loss_without_egress_hook_drops_at_the_reals") || !nft_available() {
            return;
        }
        let mut t = Topology::build(&TopologySpec::default()).unwrap();
        for allow_egress in [true, false] {
            t.set_loss_with(&[LossRule::all(100.0)], allow_egress).unwrap();
            assert!(!lb_connects_to_real(&t, false) && !lb_connects_to_real(&t, true));
            // With egress, the SYN dies on its way out; without, at the real's ingress.
            assert_eq!(t.loss_uses_egress(), Some(allow_egress));
            let real_table = t.ns_real(0).run("nft", ["list", "tables"]).unwrap();
            assert_eq!(real_table.contains("rvs_loss"), !allow_egress);
            assert!(t.loss_dropped().unwrap() > 0);
            t.inject_loss(0.0).unwrap();
            // The neighbour entries that failed under total loss (ARP, and
            // neighbour discovery's slower probes) come back within seconds.
            for ipv6 in [false, true] {
                assert!(
                    (0..4).any(|_| lb_connects_to_real(&t, ipv6)),
                    "ipv6 {ipv6}: no connection after the loss"
                );
            }
            assert!(!t.ns_real(0).run("nft", ["list", "tables"]).unwrap().contains("rvs_loss"));
        }
    }

    #[test]
    fn syn_loss_drops_ipv6_handshakes_too() {
        if !netns_tests_enabled("syn_loss_drops_ipv6_handshakes_too") || !nft_available() {
            return;
        }
        let mut t = Topology::build(&TopologySpec::default()).unwrap();
        t.inject_syn_loss(100.0).unwrap();
        for ipv6 in [false, true] {
            let before = t.loss_dropped().unwrap();
            assert!(!lb_connects_to_real(&t, ipv6), "ipv6 {ipv6}: a handshake got through");
            assert!(t.loss_dropped().unwrap() > before, "ipv6 {ipv6}: nothing counted");
        }
    }
}
