//! The data paths under test. A path is how to set up the balancer's
//! namespace for one service and tear it down again: [`DataPath::setup`]
//! returns a [`Middle`] whose drop removes what it made. Adding a path (the
//! AF_XDP driver, say) is one more type implementing [`DataPath`] and one
//! more entry in a scenario's list.

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rvs_netns::{ChildGuard, Netns};

use crate::bpf::{Counter, Prog};
use crate::lab::{Lab, NftTable, XdpLink, check_stop, wait_listening};

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

/// The service every path offers: VIP:port over all reals at the same port.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Service {
    pub proto: Proto,
    pub port: u16,
}

/// A set-up balancer. Dropping it tears it down.
#[derive(Debug, Default)]
pub(crate) struct Middle {
    /// Where clients send.
    pub target: Option<Ipv4Addr>,
    /// When the path ends at the balancer's ingress (the veth limit): the
    /// counter of packets delivered there.
    pub sink: Option<Counter>,
    /// The balancer process, for its memory.
    pub pid: Option<u32>,
    /// rvs on AF_XDP: its own program holds the balancer's ingress, so no
    /// counting program can go there; it counts the frames it steers
    /// itself (`rvs_xdp_frames_total` at [`RVS_METRICS`]).
    pub rvs_xdp: bool,
    /// Processes, tables, XDP links, addresses.
    guards: Guards,
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

/// The raw veth limit: frames are counted and dropped by XDP at the
/// balancer's ingress, nothing is forwarded.
#[derive(Debug)]
pub(crate) struct VethLimit;

impl DataPath for VethLimit {
    fn name(&self) -> String {
        "veth limit (XDP_DROP at ingress)".to_owned()
    }

    fn setup(&self, lab: &Lab, svc: Service) -> anyhow::Result<Middle> {
        let counter = Counter::new()?;
        let proto = if svc.proto == Proto::Udp { 17 } else { 6 };
        let prog = Prog::count(&counter, proto, true)?;
        let link = XdpLink::attach(lab.lb(), lab.topo.lb_client_if(), prog)?;
        Ok(Middle {
            target: Some(lab.topo.vip()),
            sink: Some(counter),
            guards: Guards(vec![Box::new(link)]),
            ..Middle::default()
        })
    }
}

/// Plain kernel routing, no NAT: clients address the first real directly.
#[derive(Debug)]
pub(crate) struct KernelRouting;

impl DataPath for KernelRouting {
    fn name(&self) -> String {
        "kernel routing (no NAT)".to_owned()
    }

    fn setup(&self, lab: &Lab, _svc: Service) -> anyhow::Result<Middle> {
        Ok(Middle { target: Some(lab.topo.real_addrs()[0]), ..Middle::default() })
    }
}

/// Kernel FullNAT with nftables: DNAT over the reals by `numgen inc`, SNAT
/// to local addresses of its own. Not rvs's: the reals keep TIME_WAIT per
/// (local address:port, real:port), and a SYN reusing such a pair with the
/// other balancer's timestamps is rejected by PAWS, which stalls the next
/// path's connections.
#[derive(Debug)]
pub(crate) struct NftFullNat;

/// nftables' local addresses are 10.A.<this>.x (rvs's are 10.A.3.x).
const NFT_LADDR_OCTET: u8 = 4;

/// A VIP of its own for a path: 10.A.2.`n`. Conntrack entries outlive the
/// nftables table (TIME_WAIT for 2 minutes), and on the same VIP they would
/// catch the next path's packets.
fn own_vip(lab: &Lab, n: u8) -> Ipv4Addr {
    let [a, b, c, _] = lab.topo.vip().octets();
    Ipv4Addr::new(a, b, c, n)
}

impl DataPath for NftFullNat {
    fn name(&self) -> String {
        "nftables FullNAT".to_owned()
    }

    fn setup(&self, lab: &Lab, svc: Service) -> anyhow::Result<Middle> {
        let t = &lab.topo;
        let vip = own_vip(lab, 2);
        let reals = t.real_addrs();
        let map: Vec<String> = reals.iter().enumerate().map(|(i, a)| format!("{i} : {a}")).collect();
        let set: Vec<String> = reals.iter().map(ToString::to_string).collect();
        let laddrs: Vec<Ipv4Addr> = t
            .laddrs()
            .iter()
            .map(|a| {
                let [a, b, _, d] = a.octets();
                Ipv4Addr::new(a, b, NFT_LADDR_OCTET, d)
            })
            .collect();
        let body = format!(
            "chain pre {{\n type nat hook prerouting priority dstnat; policy accept;\n\
               ip daddr {vip} {p} dport {port} dnat to numgen inc mod {n} map {{ {map} }}\n}}\n\
             chain post {{\n type nat hook postrouting priority srcnat; policy accept;\n\
               ct status dnat ip daddr {{ {set} }} snat to {lo}-{hi}\n}}",
            p = svc.proto.name(),
            port = svc.port,
            n = reals.len(),
            map = map.join(", "),
            set = set.join(", "),
            lo = laddrs[0],
            hi = laddrs[laddrs.len() - 1],
        );
        let table = NftTable::install(lab.lb(), "ip", "rvs_bench_fnat", &body)?;
        Ok(Middle { target: Some(vip), guards: Guards(vec![Box::new(table)]), ..Middle::default() })
    }
}

/// The rvs daemon (`rvs run`) on its TUN data path, or on AF_XDP
/// (`xdp_mode = "auto"`: native XDP on the client's veth, generic on the
/// reals' bridge; the lab must have been prepared with
/// `Topology::prepare_for_generic_xdp`).
#[derive(Debug)]
pub(crate) struct Rvs {
    pub synproxy: bool,
    /// AF_XDP with this many workers; `None` for the TUN device (one worker).
    pub xdp_workers: Option<u32>,
}

/// Where the rvs daemon serves its metrics in the balancer's namespace.
pub(crate) const RVS_METRICS: &str = "127.0.0.1:9108";

impl Rvs {
    pub(crate) const TUN: Self = Self { synproxy: false, xdp_workers: None };
}

impl DataPath for Rvs {
    fn name(&self) -> String {
        let driver = match self.xdp_workers {
            None => "rvs TUN".to_owned(),
            Some(1) => "rvs AF_XDP".to_owned(),
            Some(n) => format!("rvs AF_XDP, {n} workers"),
        };
        match self.synproxy {
            true => format!("{driver}, SYNProxy on"),
            false => driver,
        }
    }

    fn setup(&self, lab: &Lab, svc: Service) -> anyhow::Result<Middle> {
        let t = &lab.topo;
        let socket = lab.tmp.path().join("rvs.sock");
        let _ = fs::remove_file(&socket);
        let laddrs: Vec<String> = t.laddrs().iter().map(|a| format!("\"{a}\"")).collect();
        let xdp = match self.xdp_workers {
            Some(workers) => format!(
                "kind = \"xdp\"\ninterfaces = [{:?}, {:?}]\nxdp_mode = \"auto\"\nworkers = {workers}\n",
                t.lb_client_if(),
                t.lb_real_if()
            ),
            None => String::new(),
        };
        let mut cfg = format!(
            "[daemon]\ncontrol_socket = \"{}\"\nsecret_file = \"{}\"\n\n[metrics]\nlisten = \"{RVS_METRICS}\"\n\n\
             [driver]\ntun_name = \"rvs0\"\n{xdp}\n\
             [[service]]\nproto = \"{}\"\nvip = \"{}:{}\"\nsched = \"rr\"\nladdrs = [{}]\n",
            socket.display(),
            lab.tmp.path().join("secret").display(),
            svc.proto.name(),
            t.vip(),
            svc.port,
            laddrs.join(", ")
        );
        if svc.proto == Proto::Tcp {
            cfg.push_str(&format!("synproxy = {}\n", self.synproxy));
        }
        for r in t.real_addrs() {
            cfg.push_str(&format!("\n[[service.real]]\naddr = \"{r}:{}\"\n", svc.port));
        }
        let config = lab.tmp.path().join("rvs.toml");
        fs::write(&config, cfg)?;
        let config = config.to_string_lossy().into_owned();
        let (mut daemon, log) =
            lab.spawn_logged(lab.lb(), &lab.rvs, &["run", "--config", &config], "rvs.log")?;
        wait_for_file(&mut daemon, &socket, &log)?;
        Ok(Middle {
            target: Some(t.vip()),
            pid: Some(daemon.pid()),
            rvs_xdp: self.xdp_workers.is_some(),
            guards: Guards(vec![Box::new(daemon)]),
            ..Middle::default()
        })
    }
}

/// Waits up to 10 s for `path` to appear while `child` runs.
fn wait_for_file(child: &mut ChildGuard, path: &std::path::Path, log: &PathBuf) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        if let Some(st) = child.try_wait()? {
            bail!(
                "exited ({st}) before it was ready: {}",
                fs::read_to_string(log).unwrap_or_default().trim()
            );
        }
        check_stop()?;
        if Instant::now() >= end {
            bail!("not ready after 10 s: {}", fs::read_to_string(log).unwrap_or_default().trim());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
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
        let t = &lab.topo;
        let vip = own_vip(lab, 3);
        let cidr = format!("{vip}/32");
        rvs_netns::run(lab.lb().ip().args(["addr", "add", &cidr, "dev", "lo"]))?;
        let mut m = Middle { target: Some(vip), ..Middle::default() };
        m.guards.0.push(Box::new(AddressGuard { ns: lab.lb().clone(), cidr }));
        let mut cfg = format!(
            "global\n  maxconn 8000\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\n\
             frontend f\n  bind {vip}:{port}\n  default_backend b\n\nbackend b\n  balance roundrobin\n",
            port = svc.port
        );
        for (i, r) in t.real_addrs().iter().enumerate() {
            cfg.push_str(&format!("  server r{} {r}:{}\n", i + 1, svc.port));
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
