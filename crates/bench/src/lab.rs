//! The benchmark's namespace lab: `rvs-netns`'s switched topology (client,
//! balancer with two plain veths, a switch namespace holding the bridge to
//! the reals), plus what every scenario needs: interface facts, sysctls,
//! XDP attachments held by fd, nginx on the reals, and the check of the
//! stop flag Ctrl-C sets (the flag itself is `rvs_netns::STOP`).
//!
//! Everything is owned by a guard: dropping the [`Lab`] stops adopted
//! processes (by PID), removes nftables tables and deletes the namespaces
//! (with every veth and bridge); XDP programs detach when their link fds
//! close, which also happens when the process dies.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rvs_netns::{ChildGuard, Netns, TempDir, Topology, TopologySpec, mirror6, stop_requested};

use crate::bpf::Prog;
use crate::paths::Family;

/// The `A` of the 10.A.x.y address plan (`rvs lab` uses 77).
const BENCH_NET: u8 = 78;
/// Reals behind every service.
pub(crate) const REALS: usize = 3;
/// Local addresses, the same number for rvs and nftables: 4 × 3 reals ×
/// 64,512 ports cover 60 s of rvs's port quarantine at 12,900 new
/// connections/s, beyond which rvs runs out of ports (the `ports` scenario
/// shows where).
pub(crate) const LADDRS: usize = 4;

/// The floods' spoofed sources: 198.18.0.0/16 (benchmarking space),
/// blackholed at the balancer so the cookie SYN-ACKs vanish as they would
/// toward real spoofed hosts.
pub(crate) const SPOOF_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);

/// What nginx on every real serves at [`DOWNLOAD`]: 1 MB.
pub(crate) const DOWNLOAD_BYTES: usize = 1_000_000;
pub(crate) const DOWNLOAD: &str = "/download";

/// Fails when a stop was asked for, so `?` unwinds through the guards.
pub(crate) fn check_stop() -> anyhow::Result<()> {
    if stop_requested() {
        bail!("interrupted");
    }
    Ok(())
}

/// An interface as seen from its namespace.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Iface {
    pub index: u32,
    pub mac: [u8; 6],
}

impl Iface {
    /// Parses `ip -o link show dev NAME` in `ns`.
    pub(crate) fn of(ns: &Netns, name: &str) -> anyhow::Result<Self> {
        let out = rvs_netns::run(ns.ip().args(["-o", "link", "show", "dev", name]))?;
        let index = out.split(':').next().and_then(|s| s.trim().parse().ok());
        let mac = out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).and_then(|m| {
            let b: Vec<u8> = m.split(':').filter_map(|x| u8::from_str_radix(x, 16).ok()).collect();
            <[u8; 6]>::try_from(b).ok()
        });
        match (index, mac) {
            (Some(index), Some(mac)) => Ok(Self { index, mac }),
            _ => bail!("cannot read index and MAC of {name} in {}: {out:?}", ns.name()),
        }
    }
}

/// Writes `/proc/sys/net/...` sysctls in `ns`.
pub(crate) fn sysctls(ns: &Netns, kv: &[(&str, &str)]) -> anyhow::Result<()> {
    let kv: Vec<(String, String)> = kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    ns.run_in(move || -> io::Result<()> {
        for (k, v) in &kv {
            let p = Path::new("/proc/sys").join(k.replace('.', "/"));
            fs::write(&p, v).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        }
        Ok(())
    })??;
    Ok(())
}

/// A sysctl of a namespace set for a while: its old value comes back on drop.
#[derive(Debug)]
pub(crate) struct SysctlGuard {
    ns: Netns,
    key: &'static str,
    old: String,
}

impl SysctlGuard {
    pub(crate) fn set(ns: &Netns, key: &'static str, value: &str) -> anyhow::Result<Self> {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        let old = ns.run("cat", [&path])?.trim().to_owned();
        sysctls(ns, &[(key, value)])?;
        Ok(Self { ns: ns.clone(), key, old })
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        let _ = sysctls(&self.ns, &[(self.key, &self.old)]);
    }
}

/// An nftables table in a namespace, deleted on drop.
#[derive(Debug)]
pub(crate) struct NftTable {
    ns: Netns,
    family_name: String,
}

impl NftTable {
    /// Creates `table FAMILY NAME { BODY }` in `ns`, replacing any table of that name.
    pub(crate) fn install(ns: &Netns, family: &str, name: &str, body: &str) -> anyhow::Result<Self> {
        let family_name = format!("{family} {name}");
        let _ = ns.nft(&format!("delete table {family_name}\n"));
        ns.nft(&format!("table {family_name} {{\n{body}\n}}\n"))?;
        Ok(Self { ns: ns.clone(), family_name })
    }

    /// The first `counter packets N` in the table.
    pub(crate) fn counter(&self) -> anyhow::Result<u64> {
        let parts: Vec<&str> = self.family_name.split(' ').collect();
        let mut args = vec!["list", "table"];
        args.extend(parts);
        let out = self.ns.run("nft", args)?;
        let n = out.split("counter packets ").nth(1).and_then(|s| s.split_whitespace().next()?.parse().ok());
        n.with_context(|| format!("no counter in table {}: {out}", self.family_name))
    }
}

impl NftTable {
    /// Elements in the table's set `name`.
    pub(crate) fn set_len(&self, name: &str) -> anyhow::Result<u64> {
        let parts: Vec<&str> = self.family_name.split(' ').collect();
        let mut args = vec!["list", "set"];
        args.extend(parts);
        args.push(name);
        let out = self.ns.run("nft", args)?;
        // `elements = { a . b, c . d }`: one " . " per element of a concatenated set.
        Ok(out.split("elements = {").nth(1).map_or(0, |e| e.matches(" . ").count() as u64))
    }

    /// Empties the table's set `name`.
    pub(crate) fn flush_set(&self, name: &str) -> anyhow::Result<()> {
        self.ns.nft(&format!("flush set {} {name}\n", self.family_name))?;
        Ok(())
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        let _ = self.ns.nft(&format!("delete table {}\n", self.family_name));
    }
}

/// An XDP program attached to an interface; detached when dropped.
#[derive(Debug)]
pub(crate) struct XdpLink {
    _link: OwnedFd,
    _prog: Prog,
}

impl XdpLink {
    /// Attaches `prog` natively to `dev` in `ns`.
    pub(crate) fn attach(ns: &Netns, dev: &str, prog: Prog) -> anyhow::Result<Self> {
        let index = Iface::of(ns, dev)?.index;
        let link = ns.run_in(|| prog.attach(index))??;
        Ok(Self { _link: link, _prog: prog })
    }
}

/// The lab. Field order is drop order: topology (processes, tables,
/// namespaces) before the temp dir holding their files.
#[derive(Debug)]
pub(crate) struct Lab {
    pub topo: Topology,
    pub tmp: TempDir,
    /// The `rvs` binary.
    pub rvs: PathBuf,
    /// Whether nginx runs on the reals.
    pub nginx: bool,
    /// Whether the `rvs` binary knows `[driver] fast_path`.
    pub has_fast_path: bool,
    /// Local addresses handed out by [`Self::fresh_laddrs`].
    laddrs_used: std::cell::Cell<u32>,
}

impl Lab {
    pub(crate) fn build(rvs: &Path) -> anyhow::Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("rvs-bench needs root: it creates network namespaces");
        }
        let topo = Topology::build_switched(&TopologySpec {
            reals: REALS,
            laddrs: LADDRS,
            net: BENCH_NET,
            queues: 2,
        })
        .context("building the namespace topology")?;
        let tmp = TempDir::new("rvs-bench-").context("creating a temp dir")?;
        let has_fast_path = knows_fast_path(rvs, tmp.path())?;
        let lab = Self {
            topo,
            tmp,
            rvs: rvs.to_owned(),
            nginx: false,
            has_fast_path,
            laddrs_used: Default::default(),
        };
        // Clients that open many connections: TIME_WAIT reuse and the whole port range.
        for ns in [lab.topo.ns_client(), lab.topo.ns_lb()] {
            sysctls(ns, &[("net.ipv4.tcp_tw_reuse", "1"), ("net.ipv4.ip_local_port_range", "1024 65535")])?;
        }
        // A frame redirected by XDP into a veth reaches the peer only if the
        // peer has NAPI, which a veth gets from a native XDP program or from
        // GRO: GRO on every end the closed loop's reflectors and the
        // balancer's fast path send into (the balancer's client link, the
        // client's link, the switch's ports), as a NIC always has.
        let ethtool = |ns: &Netns, dev: &str| -> anyhow::Result<()> {
            rvs_netns::run(&mut ns.cmd("ethtool", ["-K", dev, "gro", "on"]))
                .with_context(|| format!("turning GRO on for {dev} in {}", ns.name()))?;
            Ok(())
        };
        ethtool(lab.lb(), lab.topo.lb_client_if())?;
        ethtool(lab.client(), lab.topo.client_if())?;
        let switch = lab.topo.ns_bridge();
        for port in lab.topo.switch_lb_port().map(str::to_owned).into_iter().chain(lab.topo.lb_real_ports()) {
            ethtool(switch, &port)?;
        }
        Ok(lab)
    }

    /// The VIP clients of `family` connect to.
    pub(crate) fn vip(&self, family: Family) -> IpAddr {
        if family.client_v6() { self.topo.vip6().into() } else { self.topo.vip().into() }
    }

    /// The reals' addresses in the family `family`'s backends have.
    pub(crate) fn real_addrs(&self, family: Family) -> Vec<IpAddr> {
        let v4 = self.topo.real_addrs().into_iter();
        if family.backend_v6() {
            v4.map(|a| mirror6(a).into()).collect()
        } else {
            v4.map(Into::into).collect()
        }
    }

    /// The client's address toward `target`, of its family.
    pub(crate) fn client_addr(&self, target: IpAddr) -> IpAddr {
        if target.is_ipv6() { self.topo.client_addr6().into() } else { self.topo.client_addr().into() }
    }

    pub(crate) fn client(&self) -> &Netns {
        self.topo.ns_client()
    }

    pub(crate) fn lb(&self) -> &Netns {
        self.topo.ns_lb()
    }

    /// The client's interface and the balancer's end of the same veth.
    pub(crate) fn client_link(&self) -> anyhow::Result<(Iface, Iface)> {
        Ok((Iface::of(self.client(), "eth0")?, Iface::of(self.lb(), self.topo.lb_client_if())?))
    }

    /// Starts nginx on every real, port 80, answering its own name; the
    /// topology stops them. Waits until each accepts a connection.
    pub(crate) fn start_nginx(&mut self) -> anyhow::Result<()> {
        for (i, addr) in self.topo.real_addrs().into_iter().enumerate() {
            let dir = self.tmp.path().join(format!("real{}", i + 1));
            fs::create_dir_all(&dir)?;
            let d = dir.display();
            let conf = format!(
                "daemon off; master_process off; worker_processes 1; user root;\n\
                 pid {d}/pid; error_log {d}/error.log;\n\
                 events {{ worker_connections 8192; }}\n\
                 http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
                 fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
                 server {{ listen {addr}:80 backlog=4096; listen [::]:80 ipv6only=on backlog=4096;\n\
                 location / {{ return 200 \"real{}\\n\"; }}\n\
                 location = {DOWNLOAD} {{ alias {d}/download; }} }} }}\n",
                i + 1
            );
            fs::write(dir.join("download"), vec![b'x'; DOWNLOAD_BYTES])?;
            let path = dir.join("nginx.conf");
            fs::write(&path, conf)?;
            let ns = self.topo.ns_real(i).clone();
            let child = ns.spawn("nginx", ["-c".as_ref(), path.as_os_str()]).context("starting nginx")?;
            self.topo.adopt(child);
            wait_listening(&ns, addr.into(), 80, Duration::from_secs(5)).with_context(|| {
                format!("nginx on {addr}: {}", fs::read_to_string(dir.join("error.log")).unwrap_or_default())
            })?;
        }
        self.nginx = true;
        Ok(())
    }

    /// Flushes the balancer's conntrack table between runs: nftables'
    /// connections stay there in TIME_WAIT for 120 s, and at these rates
    /// they fill the table (262,144 entries by default) within a few runs,
    /// after which every new connection has to evict one. (The reals'
    /// TIME_WAIT sockets stay: `ss -K` took over a minute for 50,000 of them;
    /// [`Self::fresh_laddrs`] keeps runs from meeting them instead.)
    pub(crate) fn flush_conntrack(&self) -> anyhow::Result<()> {
        self.lb().run("conntrack", ["-F"]).context("flushing conntrack (is conntrack installed?)")?;
        Ok(())
    }

    /// `n` (at most 254) local addresses no run in this lab has used, in
    /// one range: 10.A.16.1 onward, or their IPv6 mirrors fd10:A:16::1
    /// onward when `v6`.
    /// The reals keep each connection's (local address:port, real:port) in
    /// TIME_WAIT for 60 s; a later run through other addresses never meets
    /// those, whatever its balancer's port choice or timestamps.
    pub(crate) fn fresh_laddrs(&self, n: usize, v6: bool) -> anyhow::Result<Vec<IpAddr>> {
        // One run's addresses share a /24, so that they form a range.
        let used = self.laddrs_used.get();
        let first = if used % 254 + n as u32 > 254 { used.next_multiple_of(254) } else { used };
        let end = first + n as u32;
        if n > 254 || end > 240 * 254 {
            bail!("the lab has run out of fresh local addresses");
        }
        self.laddrs_used.set(end);
        let v4 =
            (first..end).map(|k| Ipv4Addr::new(10, BENCH_NET, 16 + (k / 254) as u8, 1 + (k % 254) as u8));
        Ok(if v6 { v4.map(|a| mirror6(a).into()).collect() } else { v4.map(Into::into).collect() })
    }

    /// Spawns a process in `ns` with output to `log` in the temp dir.
    pub(crate) fn spawn_logged(
        &self,
        ns: &Netns,
        program: &Path,
        args: &[&str],
        log: &str,
    ) -> anyhow::Result<(ChildGuard, PathBuf)> {
        let log_path = self.tmp.path().join(log);
        Ok((ns.spawn_logged(program, args, &log_path)?, log_path))
    }
}

/// Whether `rvs` accepts `[driver] fast_path`: a config with the key and
/// an unknown section fails to parse either way, naming the first key it
/// does not know.
fn knows_fast_path(rvs: &Path, dir: &Path) -> anyhow::Result<bool> {
    let probe = dir.join("fast-path-probe.toml");
    fs::write(&probe, "[driver]\nfast_path = false\n\n[rvs_bench_probe]\n")?;
    let out = Command::new(rvs)
        .arg("run")
        .arg("--config")
        .arg(&probe)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {}", rvs.display()))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !err.contains("rvs_bench_probe") && !err.contains("fast_path") {
        bail!("{} did not reject a config it cannot know: {err}", rvs.display());
    }
    Ok(!err.contains("fast_path"))
}

/// Waits until `addr:port` accepts a TCP connection from inside `ns`.
pub(crate) fn wait_listening(ns: &Netns, addr: IpAddr, port: u16, limit: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + limit;
    loop {
        let ok = ns.run_in(|| {
            std::net::TcpStream::connect_timeout(&(addr, port).into(), Duration::from_millis(300)).is_ok()
        })?;
        if ok {
            return Ok(());
        }
        check_stop()?;
        if Instant::now() >= end {
            bail!("{} does not accept connections after {limit:?}", std::net::SocketAddr::new(addr, port));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The ids of the XDP programs attached to `devs` in `ns` (each once).
pub(crate) fn xdp_prog_ids(ns: &Netns, devs: &[&str]) -> anyhow::Result<Vec<u32>> {
    let mut ids = Vec::new();
    for dev in devs {
        let out = rvs_netns::run(ns.ip().args(["-d", "link", "show", "dev", dev]))?;
        let id = out.split("prog/xdp id ").nth(1).and_then(|s| s.split_whitespace().next()?.parse().ok());
        let id = id.with_context(|| format!("no XDP program on {dev}: {out}"))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// CPU time (user and system) a process has used, in seconds.
pub(crate) fn cpu_secs(pid: u32) -> Option<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks / hz.max(1) as f64)
}

/// Resident set size of a process, in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Runs a command with a hard time limit; returns stdout.
pub(crate) fn run_bounded(cmd: &mut Command, limit: Duration) -> anyhow::Result<String> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = ChildGuard::spawn(cmd)?;
    let (mut out, mut err) = {
        let c = child.child_mut().context("child gone")?;
        (c.stdout.take(), c.stderr.take())
    };
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let mut e = String::new();
        if let Some(o) = out.as_mut() {
            let _ = io::Read::read_to_string(o, &mut s);
        }
        if let Some(o) = err.as_mut() {
            let _ = io::Read::read_to_string(o, &mut e);
        }
        (s, e)
    });
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if Instant::now() >= end || stop_requested() {
            let _ = child.stop(Duration::from_secs(1));
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let (s, e) = reader.join().unwrap_or_default();
    match status {
        Some(st) if st.success() => Ok(s),
        Some(st) => bail!("{cmd:?} failed ({st}): {}", e.trim()),
        None => bail!("{cmd:?} did not finish within {limit:?} (or was interrupted)"),
    }
}

/// `perf record -e cpu-clock -g` of one balancer process during a measured
/// window, when `RVS_BENCH_PERF` names (part of) the path: how a missed
/// target is explained. Writes `perf-<path>.data` in the working directory.
/// With `RVS_BENCH_PERF_ALL=1` it records every CPU instead: work done in
/// softirq context (an XDP program, the kernel's forwarding) belongs to no
/// balancer process.
pub(crate) struct Profile(Option<ChildGuard>);

impl Profile {
    pub(crate) fn start(path: &str, pid: Option<u32>) -> anyhow::Result<Self> {
        let (Ok(want), Some(pid)) = (std::env::var("RVS_BENCH_PERF"), pid) else { return Ok(Self(None)) };
        if want.is_empty() || !path.contains(&want) {
            return Ok(Self(None));
        }
        let slug: String = path.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let file = format!("perf-{slug}.data");
        let mut cmd = Command::new("perf");
        cmd.args(["record", "-q", "-e", "cpu-clock", "-g", "-o", &file]).stdout(std::process::Stdio::null());
        if std::env::var("RVS_BENCH_PERF_ALL").is_ok_and(|v| v == "1") {
            cmd.arg("-a");
        } else {
            cmd.args(["-p", &pid.to_string()]);
        }
        let guard = ChildGuard::spawn(&mut cmd).context("perf record (linux-perf installed?)")?;
        eprintln!("profiling {path} into {file}");
        // perf needs a moment to attach before the window starts.
        thread::sleep(Duration::from_millis(300));
        Ok(Self(Some(guard)))
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        if let Some(g) = self.0.as_mut() {
            let _ = g.stop(Duration::from_secs(10));
        }
    }
}
