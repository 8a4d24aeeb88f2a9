//! The data paths under test. A path is how to set up the balancer's
//! namespace for one service and tear it down again: [`DataPath::setup`]
//! returns a [`Middle`] whose drop removes what it made. Adding a path (the
//! AF_XDP driver, say) is one more type implementing [`DataPath`] and one
//! more entry in a scenario's list.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use rvs_netns::{ChildGuard, Netns, NotReady, wait_for_path};

use crate::Opts;
use crate::bpf::Prog;
use crate::lab::{Iface, Lab, NftTable, XdpLink, wait_listening};
use crate::report::Table;

/// Transport protocol of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// The address families of a service: the clients' (and the VIP's), and
/// the reals' and local addresses'. They differ only where rvs translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
    /// IPv6 clients and VIP, IPv4 reals.
    Nat64,
    /// IPv4 clients and VIP, IPv6 reals.
    Nat46,
}

impl Family {
    /// Whether clients and the VIP speak IPv6.
    pub(crate) fn client_v6(self) -> bool {
        matches!(self, Self::V6 | Self::Nat64)
    }

    /// Whether the reals and local addresses are IPv6.
    pub(crate) fn backend_v6(self) -> bool {
        matches!(self, Self::V6 | Self::Nat46)
    }

    /// What a row's name gets: nothing for IPv4.
    fn suffix(self) -> &'static str {
        match self {
            Self::V4 => "",
            Self::V6 => ", IPv6",
            Self::Nat64 => ", NAT64",
            Self::Nat46 => ", NAT46",
        }
    }

    /// Refuses the translations, for a path that cannot make them.
    fn same_family(self, path: &str) -> anyhow::Result<()> {
        if self.client_v6() != self.backend_v6() {
            bail!("{path} does not translate between IPv4 and IPv6");
        }
        Ok(())
    }
}

/// The service every path offers: VIP:port over the first `reals` of the
/// lab's reals at the same port, through its first `laddrs` local addresses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Service {
    pub proto: Proto,
    pub port: u16,
    pub reals: usize,
    pub laddrs: usize,
    pub family: Family,
}

impl Service {
    /// Over every real, through every local address, over IPv4.
    pub(crate) fn new(proto: Proto, port: u16) -> Self {
        Self { proto, port, reals: crate::lab::REALS, laddrs: crate::lab::LADDRS, family: Family::V4 }
    }
}

/// A path over another family: its row is named for the family, and its
/// service is the scenario's in that family.
#[derive(Debug)]
pub(crate) struct InFamily(pub Family, pub Box<dyn DataPath>);

impl DataPath for InFamily {
    fn name(&self) -> String {
        format!("{}{}", self.1.name(), self.0.suffix())
    }

    fn setup(&self, lab: &Lab, svc: Service) -> anyhow::Result<Middle> {
        self.1.setup(lab, Service { family: self.0, ..svc })
    }
}

/// A path whose service has only the lab's first real: like for like with
/// kernel routing, which reaches that one real, so that the reals' own
/// stacks set the same ceiling for both.
#[derive(Debug)]
pub(crate) struct OneReal(pub Box<dyn DataPath>);

impl DataPath for OneReal {
    fn name(&self) -> String {
        format!("{}, 1 real", self.0.name())
    }

    fn setup(&self, lab: &Lab, svc: Service) -> anyhow::Result<Middle> {
        self.0.setup(lab, Service { reals: 1, ..svc })
    }
}

/// Says in `t` when the fast path's rows were left out.
pub(crate) fn note_fast_path(lab: &Lab, t: &mut Table) {
    if !lab.has_fast_path {
        t.note("no fast path rows: this rvs has no `[driver] fast_path`".to_owned());
    }
}

/// A set-up balancer. Dropping it tears it down.
#[derive(Debug)]
pub(crate) struct Middle {
    /// Where clients send.
    pub target: IpAddr,
    /// The balancer process, for its memory.
    pub pid: Option<u32>,
    /// Processes, tables, XDP links, addresses.
    guards: Guards,
}

impl Middle {
    /// A balancer clients reach at `target`, holding `guards`.
    fn at(target: IpAddr, guards: Vec<Box<dyn std::fmt::Debug>>) -> Self {
        Self { target, pid: None, guards: Guards(guards) }
    }

    /// The URL of `path` on the service at `port` through this balancer.
    pub(crate) fn url(&self, port: u16, path: &str) -> String {
        format!("http://{}{path}", SocketAddr::new(self.target, port))
    }
}

/// What a path made (process, table, XDP link, address guards), removed
/// last to first by their own drops.
#[derive(Debug, Default)]
struct Guards(Vec<Box<dyn std::fmt::Debug>>);

impl Drop for Guards {
    fn drop(&mut self) {
        while let Some(g) = self.0.pop() {
            drop(g);
        }
    }
}

/// An address on the balancer's loopback (HAProxy's VIP), removed on drop.
#[derive(Debug)]
struct AddressGuard {
    ns: Netns,
    cidr: String,
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        let _ = rvs_netns::run(self.ns.ip().args(["addr", "del", &self.cidr, "dev", "lo"]));
    }
}

/// How to set up one data path in the balancer's namespace.
pub(crate) trait DataPath: std::fmt::Debug {
    /// The row name in the tables.
    fn name(&self) -> String;
    /// Sets the balancer up for `svc`.
    fn setup(&self, lab: &Lab, svc: Service) -> anyhow::Result<Middle>;
}

/// The rows a scenario runs: those this lab's rvs can run (a fast path's
/// need a daemon with one; the table says when they are left out) and,
/// under `--fast-path`, only those named in `focus`.
pub(crate) fn keep<P: DataPath>(lab: &Lab, o: &Opts, focus: &[&str], paths: Vec<P>) -> Vec<P> {
    paths
        .into_iter()
        .filter(|p| lab.has_fast_path || !p.name().contains("fast path"))
        .filter(|p| !o.fast_path || focus.contains(&p.name().as_str()))
        .collect()
}

/// A wire in place of the balancer: XDP programs on its two links swap
/// the MACs and redirect each UDP frame to the other link, untouched
/// otherwise (no routing, no TTL), between the client and the first real.
/// The closed loop's own ceiling: what the lab around the balancer allows.
#[derive(Debug)]
pub(crate) struct CrossConnect;

impl DataPath for CrossConnect {
    fn name(&self) -> String {
        "ceiling: XDP cross-connect (no balancer)".to_owned()
    }

    fn setup(&self, lab: &Lab, svc: Service) -> anyhow::Result<Middle> {
        svc.family.same_family(&self.name())?;
        let t = &lab.topo;
        let (client, cli) = lab.client_link()?;
        let real = Iface::of(t.ns_real(0), t.real_if())?;
        let rl = Iface::of(lab.lb(), t.lb_real_if())?;
        let toward_real =
            XdpLink::attach(lab.lb(), t.lb_client_if(), Prog::cross_connect(rl.index, real.mac, rl.mac)?)?;
        let toward_client =
            XdpLink::attach(lab.lb(), t.lb_real_if(), Prog::cross_connect(cli.index, client.mac, cli.mac)?)?;
        Ok(Middle::at(lab.real_addrs(svc.family)[0], vec![Box::new(toward_real), Box::new(toward_client)]))
    }
}

/// Plain kernel routing, no NAT: clients address the first real directly.
#[derive(Debug)]
pub(crate) struct KernelRouting;

impl DataPath for KernelRouting {
    fn name(&self) -> String {
        "kernel routing (no NAT)".to_owned()
    }

    fn setup(&self, lab: &Lab, svc: Service) -> anyhow::Result<Middle> {
        svc.family.same_family(&self.name())?;
        Ok(Middle::at(lab.real_addrs(svc.family)[0], Vec::new()))
    }
}

/// Kernel FullNAT with nftables: DNAT over the reals by `numgen inc`, SNAT
/// to as many fresh local addresses as rvs gets.
#[derive(Debug)]
pub(crate) struct NftFullNat {
    /// A flowtable for established flows (the kernel's software fast
    /// path, from the ingress hook straight to the output device).
    pub flowtable: bool,
}

/// Whether this kernel has nftables flowtables (`CONFIG_NF_FLOW_TABLE`):
/// tries one on the balancer's client link.
pub(crate) fn flowtables_available(lab: &Lab) -> bool {
    let body = format!(
        "flowtable ft {{\n hook ingress priority filter; devices = {{ {} }};\n}}",
        lab.topo.lb_client_if()
    );
    NftTable::install(lab.lb(), "ip", "rvs_bench_probe", &body).is_ok()
}

/// A VIP of its own for a path: 10.A.2.`n` (fd10:A:2::`n` for IPv6
/// clients). Conntrack entries outlive the nftables table (TIME_WAIT for 2
/// minutes), and on the same VIP they would catch the next path's packets.
fn own_vip(lab: &Lab, n: u8, family: Family) -> IpAddr {
    let [a, b, c, _] = lab.topo.vip().octets();
    let v4 = std::net::Ipv4Addr::new(a, b, c, n);
    if family.client_v6() { rvs_netns::mirror6(v4).into() } else { v4.into() }
}

impl DataPath for NftFullNat {
    fn name(&self) -> String {
        match self.flowtable {
            false => "nftables FullNAT".to_owned(),
            true => "nftables FullNAT, flowtable".to_owned(),
        }
    }

    fn setup(&self, lab: &Lab, svc: Service) -> anyhow::Result<Middle> {
        svc.family.same_family(&self.name())?;
        let t = &lab.topo;
        let vip = own_vip(lab, 2, svc.family);
        let reals = &lab.real_addrs(svc.family)[..svc.reals];
        let map: Vec<String> = reals.iter().enumerate().map(|(i, a)| format!("{i} : {a}")).collect();
        let set: Vec<String> = reals.iter().map(ToString::to_string).collect();
        let laddrs = lab.fresh_laddrs(svc.laddrs, svc.family.backend_v6())?;
        // The table's family names the header the rules match: `ip` or `ip6`.
        let ip = if svc.family.backend_v6() { "ip6" } else { "ip" };
        let mut body = format!(
            "chain pre {{\n type nat hook prerouting priority dstnat; policy accept;\n\
               {ip} daddr {vip} {p} dport {port} dnat to numgen inc mod {n} map {{ {map} }}\n}}\n\
             chain post {{\n type nat hook postrouting priority srcnat; policy accept;\n\
               ct status dnat {ip} daddr {{ {set} }} snat to {lo}-{hi}\n}}",
            p = svc.proto.name(),
            port = svc.port,
            n = reals.len(),
            map = map.join(", "),
            set = set.join(", "),
            lo = laddrs[0],
            hi = laddrs[laddrs.len() - 1],
        );
        if self.flowtable {
            body.push_str(&format!(
                "\nflowtable ft {{\n hook ingress priority filter; devices = {{ {}, {} }};\n}}\n\
                 chain forward {{\n type filter hook forward priority filter; policy accept;\n\
                   meta l4proto {{ tcp, udp }} flow add @ft\n}}",
                t.lb_client_if(),
                t.lb_real_if()
            ));
        }
        let table = NftTable::install(lab.lb(), ip, "rvs_bench_fnat", &body)?;
        Ok(Middle::at(vip, vec![Box::new(table)]))
    }
}

/// The rvs daemon (`rvs run`) on its TUN data path, or on AF_XDP with
/// native XDP on both of the balancer's veths (`xdp_mode = "native"`), as
/// on a balancer with two NICs, its in-kernel fast path on or off.
#[derive(Debug)]
pub(crate) struct Rvs {
    pub synproxy: bool,
    /// AF_XDP with this many workers; `None` for the TUN device (one worker).
    pub xdp_workers: Option<u32>,
    /// `[driver] fast_path`: established flows (and SYN cookies, with
    /// SYNProxy) handled by the XDP program.
    pub fast_path: bool,
    /// Generic XDP (`xdp_mode = "generic"`) instead of native.
    pub generic: bool,
}

/// Where the rvs daemon serves its metrics in the balancer's namespace.
pub(crate) const RVS_METRICS: &str = "127.0.0.1:9108";

impl Rvs {
    /// On the TUN device.
    pub(crate) const fn tun(synproxy: bool) -> Self {
        Self { synproxy, xdp_workers: None, fast_path: false, generic: false }
    }

    /// On AF_XDP with `workers` workers, the fast path off.
    pub(crate) const fn xdp(workers: u32, synproxy: bool) -> Self {
        Self { synproxy, xdp_workers: Some(workers), fast_path: false, generic: false }
    }

    /// On AF_XDP with one worker, the fast path on.
    pub(crate) const fn fast_path(synproxy: bool) -> Self {
        Self { fast_path: true, ..Self::xdp(1, synproxy) }
    }

    /// The `[driver]` lines of the AF_XDP driver; the fast path's switch is
    /// written only where the daemon knows it (`has_fast_path`).
    fn xdp_driver(&self, lab: &Lab, workers: u32) -> anyhow::Result<String> {
        let t = &lab.topo;
        let mode = if self.generic { "generic" } else { "native" };
        let mut s = format!(
            "kind = \"xdp\"\ninterfaces = [{:?}, {:?}]\nxdp_mode = \"{mode}\"\nworkers = {workers}\n",
            t.lb_client_if(),
            t.lb_real_if()
        );
        match (lab.has_fast_path, self.fast_path) {
            (true, on) => s.push_str(&format!("fast_path = {on}\n")),
            (false, true) => bail!("this rvs has no fast path ([driver] fast_path)"),
            (false, false) => {}
        }
        Ok(s)
    }
}

impl DataPath for Rvs {
    fn name(&self) -> String {
        let mut driver = match (self.xdp_workers, self.fast_path) {
            (None, _) => "rvs TUN".to_owned(),
            (Some(1), false) => "rvs AF_XDP".to_owned(),
            (Some(n), false) => format!("rvs AF_XDP, {n} workers"),
            (Some(1), true) => "rvs AF_XDP fast path".to_owned(),
            (Some(n), true) => format!("rvs AF_XDP fast path, {n} workers"),
        };
        if self.generic {
            driver.push_str(", generic XDP");
        }
        match self.synproxy {
            true => format!("{driver}, SYNProxy on"),
            false => driver,
        }
    }

    fn setup(&self, lab: &Lab, svc: Service) -> anyhow::Result<Middle> {
        let socket = lab.tmp.path().join("rvs.sock");
        let _ = fs::remove_file(&socket);
        let laddrs = lab.fresh_laddrs(svc.laddrs, svc.family.backend_v6())?;
        let laddrs: Vec<String> = laddrs.iter().map(|a| format!("\"{a}\"")).collect();
        let vip = lab.vip(svc.family);
        let xdp = match self.xdp_workers {
            Some(workers) => self.xdp_driver(lab, workers)?,
            None => String::new(),
        };
        let mut cfg = format!(
            "[daemon]\ncontrol_socket = \"{}\"\nsecret_file = \"{}\"\n\n[metrics]\nlisten = \"{RVS_METRICS}\"\n\n\
             [driver]\ntun_name = \"rvs0\"\n{xdp}\n\
             [[service]]\nproto = \"{}\"\nvip = \"{}\"\nsched = \"rr\"\nladdrs = [{}]\n",
            socket.display(),
            lab.tmp.path().join("secret").display(),
            svc.proto.name(),
            SocketAddr::new(vip, svc.port),
            laddrs.join(", ")
        );
        if svc.proto == Proto::Tcp {
            cfg.push_str(&format!("synproxy = {}\n", self.synproxy));
        }
        for &r in &lab.real_addrs(svc.family)[..svc.reals] {
            cfg.push_str(&format!("\n[[service.real]]\naddr = \"{}\"\n", SocketAddr::new(r, svc.port)));
        }
        let config = lab.tmp.path().join("rvs.toml");
        fs::write(&config, cfg)?;
        let config = config.to_string_lossy().into_owned();
        let mut guards: Vec<Box<dyn std::fmt::Debug>> = Vec::new();
        // The program answers SYNs with XDP_TX, and a veth wakes its peer
        // after XDP_TX only when the peer runs an XDP program (a NIC's
        // wire has no such condition): the client's link gets one, which
        // also drops the answers to a flood's spoofed sources (they would
        // vanish on their way; the other paths' vanish at the balancer's
        // blackhole route, while XDP_TX sends them straight back).
        if self.fast_path && self.synproxy {
            let prog = Prog::drop_to(crate::lab::SPOOF_NET)?;
            guards.push(Box::new(XdpLink::attach(lab.client(), lab.topo.client_if(), prog)?));
        }
        let (mut daemon, log) =
            lab.spawn_logged(lab.lb(), &lab.rvs, &["run", "--config", &config], "rvs.log")?;
        wait_for_file(&mut daemon, &socket, &log)?;
        let pid = Some(daemon.pid());
        guards.push(Box::new(daemon));
        Ok(Middle { pid, ..Middle::at(vip, guards) })
    }
}

/// Waits up to 10 s for `path` to appear while `child` runs.
fn wait_for_file(child: &mut ChildGuard, path: &std::path::Path, log: &PathBuf) -> anyhow::Result<()> {
    let log = || fs::read_to_string(log).unwrap_or_default().trim().to_owned();
    match wait_for_path(child, path, Duration::from_secs(10)) {
        Ok(()) => Ok(()),
        Err(NotReady::Exited(st)) => bail!("exited ({st}) before it was ready: {}", log()),
        Err(NotReady::Stopped) => bail!("interrupted"),
        Err(NotReady::TimedOut) => bail!("not ready after 10 s: {}", log()),
        Err(NotReady::Io(e)) => Err(e.into()),
    }
}

/// HAProxy in `mode tcp`, listening on the VIP (put on the balancer's
/// loopback) and connecting to the reals round robin.
#[derive(Debug)]
pub(crate) struct HaproxyTcp;

impl DataPath for HaproxyTcp {
    fn name(&self) -> String {
        "HAProxy mode tcp".to_owned()
    }

    fn setup(&self, lab: &Lab, svc: Service) -> anyhow::Result<Middle> {
        if svc.proto != Proto::Tcp {
            bail!("HAProxy here proxies TCP only");
        }
        let vip = own_vip(lab, 3, svc.family);
        let cidr = format!("{vip}/{}", if vip.is_ipv6() { 128 } else { 32 });
        rvs_netns::run(lab.lb().ip().args(["addr", "add", &cidr, "dev", "lo"]))?;
        let mut m = Middle::at(vip, Vec::new());
        m.guards.0.push(Box::new(AddressGuard { ns: lab.lb().clone(), cidr }));
        let mut cfg = format!(
            "global\n  maxconn 8000\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\n\
             frontend f\n  bind {}\n  default_backend b\n\nbackend b\n  balance roundrobin\n",
            SocketAddr::new(vip, svc.port)
        );
        for (i, &r) in lab.real_addrs(svc.family)[..svc.reals].iter().enumerate() {
            cfg.push_str(&format!("  server r{} {}\n", i + 1, SocketAddr::new(r, svc.port)));
        }
        let path = lab.tmp.path().join("haproxy.cfg");
        fs::write(&path, cfg)?;
        let haproxy =
            which("haproxy").context("haproxy is not installed (scripts/install-test-deps installs it)")?;
        let p = path.to_string_lossy().into_owned();
        let (child, log) = lab.spawn_logged(lab.lb(), &haproxy, &["-db", "-f", &p], "haproxy.log")?;
        m.pid = Some(child.pid());
        m.guards.0.push(Box::new(child));
        wait_listening(lab.client(), vip, svc.port, Duration::from_secs(10))
            .with_context(|| format!("haproxy: {}", fs::read_to_string(log).unwrap_or_default().trim()))?;
        Ok(m)
    }
}

/// A program on PATH or in /usr/sbin.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// rvs's metrics text (the daemon must serve them at [`RVS_METRICS`]).
fn rvs_metrics(lab: &Lab) -> anyhow::Result<String> {
    Ok(lab.lb().run("curl", ["-sf", &format!("http://{}/metrics", RVS_METRICS)])?)
}

/// The sum of rvs's samples of `name` whose line contains any of `any`
/// (every sample when `any` is empty), from one read of the metrics.
pub(crate) fn rvs_metric(lab: &Lab, name: &str, any: &[&str]) -> anyhow::Result<u64> {
    Ok(rvs_metrics(lab)?
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| any.is_empty() || any.iter().any(|w| l.contains(w)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum())
}

/// The kernel's loss counts on rvs's sockets, as rvs reports them.
pub(crate) fn rvs_socket_losses(lab: &Lab) -> anyhow::Result<String> {
    let text = rvs_metrics(lab)?;
    Ok(text.lines().filter(|l| l.starts_with("rvs_xdp_socket_drops_total")).collect::<Vec<_>>().join(", "))
}

/// rvs's fast path counts so far, one line (empty without a fast path).
pub(crate) fn rvs_fast_path_counts(lab: &Lab) -> anyhow::Result<String> {
    let text = rvs_metrics(lab)?;
    Ok(text.lines().filter(|l| l.starts_with("rvs_fast_path_")).collect::<Vec<_>>().join(", "))
}

/// Frames rvs's XDP program steered to its sockets so far.
pub(crate) fn rvs_steered(lab: &Lab) -> anyhow::Result<u64> {
    rvs_metric(lab, "rvs_xdp_frames_total", &["\"direct\"", "\"handed_over\""])
}
