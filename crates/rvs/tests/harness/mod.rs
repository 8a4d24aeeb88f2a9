//! A load balancer in network namespaces for end-to-end tests: the standard
//! topology from `rvs-netns`, nginx on every real, and the `rvs` daemon in the
//! balancer's namespace. Dropping a [`Lab`] stops the daemon and nginx (by
//! PID) and removes every namespace, link and nftables table it made.
//!
//! A lab speaks one [`Family`]: the client reaches the VIP over IPv4 or
//! IPv6, and the balancer reaches the reals from its local addresses over
//! IPv4 or IPv6 (NAT64 and NAT46 where the two differ). Tests run over a
//! matrix of drivers and families ([`on_drivers_and_families!`]).

#![allow(dead_code, unreachable_pub)]

/// Each test `fn name(driver: Driver, family: Family)` becomes twenty-four
/// tests `name::<driver>_<family>` (`tun_v4` ..
/// `xdp_two_workers_no_fast_path_nat46`). `4; a, b` runs four of them by
/// default and `1; c, d` one (for tests that ran on one data path before),
/// as [`default_variants`] picks them by the test's place in the macro call;
/// `RVS_FULL_MATRIX=1` runs all twenty-four. A variant left out says so in
/// one line.
#[allow(unused_macros)]
macro_rules! on_drivers_and_families {
    ($n:literal; $($name:ident),* $(,)?) => {
        on_drivers_and_families!(@each $n [] $($name),*);
    };
    (@each $n:literal [$($before:tt)*]) => {};
    (@each $n:literal [$($before:tt)*] $name:ident $(, $rest:ident)*) => {
        mod $name {
            use super::harness::Driver::{self, *};
            use super::harness::Family::{self, *};
            fn run(driver: Driver, family: Family) {
                super::harness::variant(module_path!(), driver, family, 0 $(+ $before)*, $n, super::$name);
            }
            #[test] fn tun_v4() { run(Tun, V4) }
            #[test] fn tun_v6() { run(Tun, V6) }
            #[test] fn tun_nat64() { run(Tun, Nat64) }
            #[test] fn tun_nat46() { run(Tun, Nat46) }
            #[test] fn tun_two_workers_v4() { run(TunTwoWorkers, V4) }
            #[test] fn tun_two_workers_v6() { run(TunTwoWorkers, V6) }
            #[test] fn tun_two_workers_nat64() { run(TunTwoWorkers, Nat64) }
            #[test] fn tun_two_workers_nat46() { run(TunTwoWorkers, Nat46) }
            #[test] fn xdp_v4() { run(Xdp, V4) }
            #[test] fn xdp_v6() { run(Xdp, V6) }
            #[test] fn xdp_nat64() { run(Xdp, Nat64) }
            #[test] fn xdp_nat46() { run(Xdp, Nat46) }
            #[test] fn xdp_two_workers_v4() { run(XdpTwoWorkers, V4) }
            #[test] fn xdp_two_workers_v6() { run(XdpTwoWorkers, V6) }
            #[test] fn xdp_two_workers_nat64() { run(XdpTwoWorkers, Nat64) }
            #[test] fn xdp_two_workers_nat46() { run(XdpTwoWorkers, Nat46) }
            #[test] fn xdp_no_fast_path_v4() { run(XdpNoFastPath, V4) }
            #[test] fn xdp_no_fast_path_v6() { run(XdpNoFastPath, V6) }
            #[test] fn xdp_no_fast_path_nat64() { run(XdpNoFastPath, Nat64) }
            #[test] fn xdp_no_fast_path_nat46() { run(XdpNoFastPath, Nat46) }
            #[test] fn xdp_two_workers_no_fast_path_v4() { run(XdpTwoWorkersNoFastPath, V4) }
            #[test] fn xdp_two_workers_no_fast_path_v6() { run(XdpTwoWorkersNoFastPath, V6) }
            #[test] fn xdp_two_workers_no_fast_path_nat64() { run(XdpTwoWorkersNoFastPath, Nat64) }
            #[test] fn xdp_two_workers_no_fast_path_nat46() { run(XdpTwoWorkersNoFastPath, Nat46) }
        }
        on_drivers_and_families!(@each $n [$($before)* 1] $($rest),*);
    };
}

pub mod probes;
pub mod reals;
pub mod router;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rvs_netns::{ChildGuard, Netns, Topology, TopologySpec};

/// Network-namespace tests push load through a 2-core machine; they run one
/// at a time so each measures itself, not its neighbours.
static SERIAL: Mutex<()> = Mutex::new(());

/// The daemon's metric of packets the XDP program forwarded on its fast path.
pub const FAST_PATH_PACKETS: &str = "rvs_fast_path_packets_total";

/// Bytes of the file each nginx serves at `/big` (slow downloads hold connections open).
pub const BIG_BYTES: usize = 1 << 20;

pub struct Lab {
    // Field order is drop order: the daemon before the namespaces it lives in.
    pub daemon: Option<ChildGuard>,
    /// Per real, its nginx while it runs ([`Lab::stop_real`] ends one).
    nginx: Vec<Option<ChildGuard>>,
    pub topo: Topology,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub ctl: PathBuf,
    pub weights: Vec<u32>,
    /// The families of the client's and the reals' sides.
    pub family: Family,
    /// Whether the VIP:80 service uses SYNProxy.
    pub synproxy: bool,
    /// `proxy_protocol` of the VIP:80 service (`None`: the key is left out);
    /// with one, nginx expects the header and logs the address it carries.
    pub proxy_protocol: Option<&'static str>,
    /// `toa = true` on the VIP:80 service.
    pub toa: bool,
    /// Further lines in every `[[service]]` table the lab writes.
    pub service_keys: String,
    /// Ports nginx listens on besides 80.
    pub real_ports: Vec<u16>,
    _serial: MutexGuard<'static, ()>,
}

/// The data path the daemon runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// The TUN device.
    Tun,
    /// The TUN device with two queues and two workers: the TUN steering
    /// program picks each packet's worker.
    TunTwoWorkers,
    /// AF_XDP sockets on the balancer's client and real links, generic XDP
    /// (the reals hang off a bridge, which has no native XDP), with the
    /// fast path on (the default config): established connections move into
    /// the XDP program.
    Xdp,
    /// The same with two workers, on links with two queues: the XDP
    /// program steers each frame to the worker that owns it, and frames
    /// that arrive on the other worker's queue cross the hand-over veths.
    XdpTwoWorkers,
    /// [`Self::Xdp`] with `fast_path = false`: every packet through the engine.
    XdpNoFastPath,
    /// [`Self::XdpTwoWorkers`] with `fast_path = false`.
    XdpTwoWorkersNoFastPath,
}

impl Driver {
    pub const ALL: [Self; 6] = [
        Self::Tun,
        Self::TunTwoWorkers,
        Self::Xdp,
        Self::XdpTwoWorkers,
        Self::XdpNoFastPath,
        Self::XdpTwoWorkersNoFastPath,
    ];

    /// The variant's name in a test path (`name::tun_two_workers_v6`).
    pub fn test_name(self) -> &'static str {
        match self {
            Self::Tun => "tun",
            Self::TunTwoWorkers => "tun_two_workers",
            Self::Xdp => "xdp",
            Self::XdpTwoWorkers => "xdp_two_workers",
            Self::XdpNoFastPath => "xdp_no_fast_path",
            Self::XdpTwoWorkersNoFastPath => "xdp_two_workers_no_fast_path",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Tun => "tun",
            Self::TunTwoWorkers => "tun2",
            Self::Xdp => "xdp",
            Self::XdpTwoWorkers => "xdp2",
            Self::XdpNoFastPath => "xdp-nofp",
            Self::XdpTwoWorkersNoFastPath => "xdp2-nofp",
        }
    }

    pub fn uses_xdp(self) -> bool {
        !matches!(self, Self::Tun | Self::TunTwoWorkers)
    }

    /// Whether the XDP program forwards established connections itself
    /// (`[driver] fast_path`, which the lab writes for the xdp drivers).
    pub fn fast_path(self) -> bool {
        matches!(self, Self::Xdp | Self::XdpTwoWorkers)
    }

    /// Data-path workers.
    pub fn workers(self) -> u32 {
        match self {
            Self::Tun | Self::Xdp | Self::XdpNoFastPath => 1,
            Self::TunTwoWorkers | Self::XdpTwoWorkers | Self::XdpTwoWorkersNoFastPath => 2,
        }
    }
}

/// The address families of a lab: the client's (its VIP's) and the
/// backend's (the reals' and the local addresses').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 throughout.
    V4,
    /// IPv6 throughout.
    V6,
    /// An IPv6 VIP in front of IPv4 local addresses and reals.
    Nat64,
    /// An IPv4 VIP in front of IPv6 local addresses and reals.
    Nat46,
}

impl Family {
    pub const ALL: [Self; 4] = [Self::V4, Self::V6, Self::Nat64, Self::Nat46];

    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => "v4",
            Self::V6 => "v6",
            Self::Nat64 => "nat64",
            Self::Nat46 => "nat46",
        }
    }

    /// Whether the client and the VIP speak IPv6.
    pub fn client_v6(self) -> bool {
        matches!(self, Self::V6 | Self::Nat64)
    }

    /// Whether the reals and the local addresses speak IPv6.
    pub fn backend_v6(self) -> bool {
        matches!(self, Self::V6 | Self::Nat46)
    }

    /// The client-side address of a node: `v4`, or its IPv6 mirror.
    pub fn client_side(self, v4: std::net::Ipv4Addr) -> IpAddr {
        if self.client_v6() { rvs_netns::mirror6(v4).into() } else { v4.into() }
    }

    /// The backend-side address of a node: `v4`, or its IPv6 mirror.
    pub fn backend_side(self, v4: std::net::Ipv4Addr) -> IpAddr {
        if self.backend_v6() { rvs_netns::mirror6(v4).into() } else { v4.into() }
    }
}

/// Whether every variant of the matrix runs (`RVS_FULL_MATRIX=1`).
pub fn full_matrix() -> bool {
    std::env::var_os("RVS_FULL_MATRIX").is_some_and(|v| v == "1")
}

/// Cell `i` of the default schedule. Cells come in squares of four, one
/// per data path: the xdp driver with one worker, with two, the TUN driver
/// with one, with two; the families rotate one step per square, so four
/// squares give each of those rows every family. The two xdp rows have the
/// fast path on and off, one each, and swap every four squares: eight
/// squares cover all twenty-four variants.
fn default_cell(i: usize) -> (Driver, Family) {
    use Driver::*;
    let (square, row) = (i / 4, i % 4);
    let first_fast = square / 4 % 2 == 0;
    let driver = match (row, first_fast) {
        (0, true) => Xdp,
        (0, false) => XdpNoFastPath,
        (1, true) => XdpTwoWorkersNoFastPath,
        (1, false) => XdpTwoWorkers,
        (2, _) => Tun,
        _ => TunTwoWorkers,
    };
    (driver, Family::ALL[(row + square) % 4])
}

/// The variants the `test`-th test of an [`on_drivers_and_families!`] call
/// runs by default: `n` cells of the default schedule from cell `test * n`
/// on. With `n` = 4 each test runs one square (every family, the fast path
/// on and off); with `n` = 1 consecutive tests walk the squares cell by
/// cell.
pub fn default_variants(test: usize, n: usize) -> Vec<(Driver, Family)> {
    (test * n..(test + 1) * n).map(default_cell).collect()
}

/// Runs `test` on `driver` and `family` if the matrix includes that variant
/// ([`on_drivers_and_families!`]), else says how to run it.
pub fn variant(path: &str, driver: Driver, family: Family, index: usize, n: usize, test: fn(Driver, Family)) {
    if !full_matrix() && !default_variants(index, n).contains(&(driver, family)) {
        let name = format!("{path}::{}_{}", driver.test_name(), family.name());
        eprintln!("{name}: not in the default matrix; run it with RVS_FULL_MATRIX=1");
        return;
    }
    test(driver, family);
}

/// What a test asks for.
pub struct LabSpec {
    /// The daemon's data path.
    pub driver: Driver,
    /// The families of the client's and the reals' sides.
    pub family: Family,
    pub weights: Vec<u32>,
    pub laddrs: usize,
    pub sched: &'static str,
    /// Extra TOML appended to the generated config (top-level tables only).
    pub extra: String,
    pub metrics: bool,
    /// `synproxy = true` on the VIP:80 service.
    pub synproxy: bool,
    /// `proxy_protocol = "v1"` or `"v2"` on the VIP:80 service; nginx on
    /// every real then listens with `proxy_protocol` and logs the client
    /// the header names. `None` leaves the key out.
    pub proxy_protocol: Option<&'static str>,
    /// `toa = true` on the VIP:80 service.
    pub toa: bool,
    /// Further TCP services on the VIP, after the one on port 80.
    pub more_services: Vec<ExtraService>,
    /// Further `key = value` lines in every `[[service]]` table (VIP:80's
    /// and `more_services`'), e.g. `check = "tcp"`.
    pub service_keys: String,
    /// Ports nginx on every real listens on besides 80 (same content).
    pub real_ports: Vec<u16>,
}

impl Default for LabSpec {
    fn default() -> Self {
        Self {
            driver: Driver::Tun,
            family: Family::V4,
            weights: vec![1, 1],
            laddrs: 4,
            sched: "wrr",
            extra: String::new(),
            metrics: false,
            synproxy: false,
            proxy_protocol: None,
            toa: false,
            more_services: Vec::new(),
            service_keys: String::new(),
            real_ports: Vec::new(),
        }
    }
}

/// A TCP service on VIP:`port` over the reals `reals` (indices, weight 1)
/// at their `real_port`, with every LIP; something on the reals must listen
/// there (nginx only listens on 80).
#[derive(Debug, Clone, Default)]
pub struct ExtraService {
    pub port: u16,
    pub real_port: u16,
    pub reals: Vec<usize>,
    pub synproxy: bool,
    /// `proxy_protocol = "v1"` or `"v2"`; `None` leaves the key out.
    pub proxy_protocol: Option<&'static str>,
    /// `toa = true`.
    pub toa: bool,
}

pub fn rvs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rvs")
}

impl Lab {
    /// Build and start everything; `None` when netns tests are skipped here.
    pub fn start(test: &str, spec: LabSpec) -> Option<Self> {
        if !rvs_netns::netns_tests_enabled(test) {
            return None;
        }
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let topo = Topology::build(&TopologySpec {
            reals: spec.weights.len(),
            laddrs: spec.laddrs,
            net: 77,
            queues: spec.driver.workers(),
        })
        .expect("build topology");
        if spec.driver.uses_xdp() {
            topo.prepare_for_generic_xdp().expect("prepare links for XDP (ethtool installed?)");
        }
        let dir = PathBuf::from(format!(
            "/tmp/{}-{test}-{}-{}",
            topo.prefix(),
            spec.driver.name(),
            spec.family.name()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut lab = Self {
            daemon: None,
            nginx: Vec::new(),
            config: dir.join("rvs.toml"),
            ctl: dir.join("rvs.sock"),
            topo,
            dir,
            weights: spec.weights.clone(),
            family: spec.family,
            synproxy: spec.synproxy,
            proxy_protocol: spec.proxy_protocol,
            toa: spec.toa,
            service_keys: spec.service_keys.clone(),
            real_ports: spec.real_ports.clone(),
            _serial: serial,
        };
        for i in 0..lab.weights.len() {
            lab.start_nginx(i);
        }
        std::fs::write(&lab.config, lab.config_text(&spec)).unwrap();
        lab.start_daemon();
        Some(lab)
    }

    /// The VIP, in the client's family.
    pub fn vip(&self) -> IpAddr {
        self.family.client_side(self.topo.vip())
    }

    /// VIP:`port`.
    pub fn vip_at(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.vip(), port)
    }

    /// `http://VIP/path`, the VIP in brackets when it is IPv6.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", host(self.vip()))
    }

    /// Real `i`'s address and port 80 (`[addr]:80` for IPv6).
    pub fn real(&self, i: usize) -> String {
        SocketAddr::new(self.real_addrs()[i], 80).to_string()
    }

    /// The client's address, in its family.
    pub fn client_addr(&self) -> IpAddr {
        self.family.client_side(self.topo.client_addr())
    }

    /// The balancer's client-side address (the client's gateway), in the client's family.
    pub fn lb_client_addr(&self) -> IpAddr {
        self.family.client_side(self.topo.lb_client_addr())
    }

    /// The local addresses, in the backend's family.
    pub fn laddrs(&self) -> Vec<IpAddr> {
        self.topo.laddrs().into_iter().map(|a| self.family.backend_side(a)).collect()
    }

    /// The reals' addresses, in the backend's family.
    pub fn real_addrs(&self) -> Vec<IpAddr> {
        self.topo.real_addrs().into_iter().map(|a| self.family.backend_side(a)).collect()
    }

    /// The config a test starts from: one TCP service on VIP:80 over every real.
    pub fn config_text(&self, spec: &LabSpec) -> String {
        let mut t = String::new();
        writeln!(
            t,
            "[daemon]\ncontrol_socket = {:?}\nsecret_file = {:?}\n",
            self.ctl.display().to_string(),
            self.dir.join("secret").display().to_string()
        )
        .unwrap();
        if spec.metrics {
            writeln!(t, "[metrics]\nlisten = \"127.0.0.1:9108\"\n").unwrap();
        }
        // The driver's keys go first in the extra's [driver] table, or in one
        // of their own; a key the extra's table sets itself is its own.
        let mut keys = vec![format!("workers = {}", spec.driver.workers())];
        if spec.driver.uses_xdp() {
            keys.extend([
                "kind = \"xdp\"".to_owned(),
                format!("interfaces = [{:?}, {:?}]", self.topo.lb_client_if(), self.topo.lb_real_if()),
                "xdp_mode = \"generic\"".to_owned(),
                format!("fast_path = {}", spec.driver.fast_path()),
            ]);
        }
        let own = driver_keys(&spec.extra);
        let keys: String = keys
            .into_iter()
            .filter(|k| !own.iter().any(|o| k.split(" = ").next() == Some(o.as_str())))
            .map(|k| k + "\n")
            .collect();
        let extra = if spec.extra.contains("[driver]\n") {
            spec.extra.replacen("[driver]\n", &format!("[driver]\n{keys}"), 1)
        } else {
            format!("[driver]\n{keys}\n{}", spec.extra)
        };
        t.push_str(&extra);
        t.push('\n');
        t.push_str(&self.service_text(spec.sched, &spec.weights));
        for s in &spec.more_services {
            let reals: Vec<(usize, u32)> = s.reals.iter().map(|&i| (i, 1)).collect();
            let keys = client_addr_keys(s.proxy_protocol, s.toa) + &self.service_keys;
            t.push_str(&self.service_toml_with(s.port, s.real_port, "wrr", &reals, s.synproxy, &keys));
        }
        t
    }

    /// The VIP:80 service over every real with these weights (SYNProxy and
    /// client-address delivery as the lab was started with).
    pub fn service_text(&self, sched: &str, weights: &[u32]) -> String {
        let reals: Vec<(usize, u32)> = weights.iter().copied().enumerate().collect();
        let keys = client_addr_keys(self.proxy_protocol, self.toa) + &self.service_keys;
        self.service_toml_with(80, 80, sched, &reals, self.synproxy, &keys)
    }

    /// A `[[service]]` table: VIP:`port` over (real index, weight) at
    /// `real_port`, with every LIP.
    pub fn service_toml(
        &self,
        port: u16,
        real_port: u16,
        sched: &str,
        reals: &[(usize, u32)],
        synproxy: bool,
    ) -> String {
        self.service_toml_with(port, real_port, sched, reals, synproxy, "")
    }

    /// [`Self::service_toml`] with further service keys (`key = value` lines).
    fn service_toml_with(
        &self,
        port: u16,
        real_port: u16,
        sched: &str,
        reals: &[(usize, u32)],
        synproxy: bool,
        keys: &str,
    ) -> String {
        let laddrs: Vec<String> = self.laddrs().iter().map(|l| format!("{:?}", l.to_string())).collect();
        let mut t = format!(
            "[[service]]\nproto = \"tcp\"\nvip = \"{}\"\nsched = \"{sched}\"\nladdrs = [{}]\n",
            self.vip_at(port),
            laddrs.join(", ")
        );
        if synproxy {
            t.push_str("synproxy = true\n");
        }
        t.push_str(keys);
        for &(i, w) in reals {
            let addr = SocketAddr::new(self.real_addrs()[i], real_port);
            writeln!(t, "[[service.real]]\naddr = \"{addr}\"\nweight = {w}").unwrap();
        }
        t
    }

    /// Starts nginx on real `i` and waits until it answers.
    fn start_nginx(&mut self, i: usize) {
        let d = self.dir.join(format!("nginx{i}"));
        std::fs::create_dir_all(d.join("www")).unwrap();
        std::fs::write(d.join("www/big"), vec![b'x'; BIG_BYTES]).unwrap();
        let d = d.display();
        // With the PROXY protocol, nginx takes the header off every
        // connection and the log shows the client it names instead of the
        // connection's peer (a LIP), and which request it was. Addresses are
        // logged as a socket address is written (`[addr]:port` for IPv6).
        let (listen, logged) =
            if self.proxy_protocol.is_some() { (" proxy_protocol", "client") } else { ("", "peer") };
        let listen_on = |port: u16, more: &str| {
            format!(" listen {port}{listen}{more}; listen [::]:{port}{listen}{more};")
        };
        let more: String = self.real_ports.iter().map(|&p| listen_on(p, "")).collect();
        let main = listen_on(80, " backlog=4096");
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; user root;\n\
             pid {d}/pid; error_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  map $remote_addr $peer_host {{ ~: [$remote_addr]; default $remote_addr; }}\n\
               map $proxy_protocol_addr $client_host {{ ~: [$proxy_protocol_addr]; default $proxy_protocol_addr; }}\n\
               log_format peer '$peer_host:$remote_port';\n\
               log_format client '$client_host:$proxy_protocol_port $request_uri';\n\
               access_log {d}/access.log {logged};\n\
               client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};\n\
               uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{{main}{more} root {d}/www;\n\
                 location = / {{ return 200 \"real{i}\\n\"; }}\n\
                 location = /ready {{ access_log off; return 200; }} }}\n}}\n"
        );
        let path = format!("{d}/nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let ns = &self.topo.ns_reals()[i];
        let child = ns.spawn("nginx", ["-c", &path]).expect("start nginx (is it installed?)");
        if self.nginx.len() <= i {
            self.nginx.resize_with(i + 1, || None);
        }
        self.nginx[i] = Some(child);
        let mut probe = vec!["-sf", "-o", "/dev/null", "http://127.0.0.1/ready"];
        if self.proxy_protocol.is_some() {
            probe.push("--haproxy-protocol");
        }
        wait_until(Duration::from_secs(10), || {
            ns.cmd("curl", &probe).stdin(Stdio::null()).status().is_ok_and(|s| s.success())
        })
        .expect("nginx answers");
    }

    pub fn start_daemon(&mut self) {
        let log = std::fs::File::create(self.dir.join("rvs.log")).unwrap();
        let mut cmd =
            self.topo.ns_lb().cmd(rvs_bin(), ["run", "--config", &self.config.display().to_string()]);
        cmd.stdout(Stdio::null()).stderr(log);
        let mut child = ChildGuard::spawn(&mut cmd).expect("start rvs");
        let ctl = self.ctl.clone();
        let up = wait_until(Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&ctl).is_ok() || child.try_wait().ok().flatten().is_some()
        });
        if up.is_err() || child.try_wait().ok().flatten().is_some() {
            panic!("rvs did not start:\n{}", self.daemon_log());
        }
        self.daemon = Some(child);
    }

    /// Packets the TUN device has carried both ways (`rx_packets + tx_packets`
    /// of `rvs0` in the balancer's namespace).
    pub fn tun_packets(&self) -> u64 {
        self.lb_link_packets("rvs0")
    }

    /// Packets interface `dev` of the balancer has carried both ways.
    pub fn lb_link_packets(&self, dev: &str) -> u64 {
        ["rx_packets", "tx_packets"]
            .iter()
            .map(|c| {
                let out = self
                    .topo
                    .ns_lb()
                    .cmd("cat", [format!("/sys/class/net/{dev}/statistics/{c}")])
                    .output()
                    .expect("read link counters");
                String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().expect("link counter")
            })
            .sum()
    }

    /// Pins every thread of the daemon (its data-path worker among them) to `cpu`.
    pub fn pin_daemon(&self, cpu: usize) {
        let pid = self.daemon.as_ref().expect("daemon running").pid();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the daemon's threads");
        for tid in tasks.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok()) {
            // SAFETY: a zeroed cpu_set_t is the empty set, `cpu` is checked
            // against its size, and the kernel only reads the set.
            let rc = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                assert!(cpu < libc::CPU_SETSIZE as usize, "CPU {cpu} out of range");
                libc::CPU_SET(cpu, &mut set);
                libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set)
            };
            assert!(rc == 0, "pin thread {tid} of rvs to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rvs.log")).unwrap_or_default()
    }

    /// `rvs adm --ctl SOCK ARGS...`.
    pub fn adm(&self, args: &[&str]) -> Output {
        self.adm_stdin(args, "")
    }

    pub fn adm_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(rvs_bin())
            .arg("adm")
            .arg("--ctl")
            .arg(&self.ctl)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// `rvs adm`, which must succeed; returns stdout.
    pub fn adm_ok(&self, args: &[&str]) -> String {
        let out = self.adm(args);
        assert!(out.status.success(), "rvs adm {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn client(&self) -> &Netns {
        self.topo.ns_client()
    }

    /// One curl from the client; the response body, or the curl failure.
    pub fn curl(&self, path: &str) -> Result<String, String> {
        let out = self
            .client()
            .cmd("curl", ["-sS", "--max-time", "10", &self.url(path)])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A slow download of `/big` running in the background (limited rate), so
    /// a connection stays established for a while.
    pub fn slow_download(&self, rate: &str) -> std::process::Child {
        self.client()
            .cmd(
                "curl",
                [
                    "-sS",
                    "--max-time",
                    "60",
                    "--limit-rate",
                    rate,
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{size_download} %{remote_ip}",
                    &self.url("/big"),
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Run wrk from the client and parse what it reports.
    pub fn wrk(&self, secs: u32, conns: u32, close: bool) -> Wrk {
        self.wrk_path(secs, conns, close, "/")
    }

    /// [`Self::wrk`] for `path`.
    pub fn wrk_path(&self, secs: u32, conns: u32, close: bool, path: &str) -> Wrk {
        let d = format!("{secs}s");
        let c = conns.to_string();
        let url = self.url(path);
        let mut args = vec!["-t2", "-c", &c, "-d", &d, "--timeout", "5s"];
        if close {
            args.extend(["-H", "Connection: close"]);
        }
        args.push(&url);
        let out =
            self.client().cmd("wrk", &args).stdin(Stdio::null()).output().expect("run wrk (installed?)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        Wrk::parse(&text)
    }

    /// Every peer (`addr:port`, `[addr]:port`) nginx on real `i` logged, one line per
    /// request: the connection's (a LIP) or, with the PROXY protocol on, the
    /// client's from the header followed by a space and the request's URI.
    pub fn access_log(&self, i: usize) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(format!("nginx{i}/access.log")))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// [`Self::access_log`] of every real, in real order.
    pub fn access_logs(&self) -> Vec<Vec<String>> {
        (0..self.weights.len()).map(|i| self.access_log(i)).collect()
    }

    /// The sum of a metric's samples (every label set) from the daemon's
    /// Prometheus endpoint, which the lab must have been started with
    /// (`metrics: true`); `None` when the endpoint does not list it.
    /// No drop counter of rvs moved (the lab needs `metrics: true`);
    /// `what` leads the failure message.
    pub fn assert_no_drops(&self, what: &str) {
        let metrics = self.topo.ns_lb().run("curl", ["-s", "http://127.0.0.1:9108/metrics"]).unwrap();
        let drops: Vec<&str> =
            metrics.lines().filter(|l| l.starts_with("rvs_drops_total") && !l.ends_with(" 0")).collect();
        assert!(drops.is_empty(), "{what}: rvs dropped packets: {drops:?}");
    }

    pub fn metric(&self, name: &str) -> Option<u64> {
        self.metric_with(name, &[])
    }

    /// [`Self::metric`] over the samples that carry every label in `labels`.
    pub fn metric_with(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let text = self
            .topo
            .ns_lb()
            .run("curl", ["-sf", "http://127.0.0.1:9108/metrics"])
            .expect("read the daemon's metrics (metrics: true?)");
        let mut sum = None;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, value)) = line.rsplit_once(' ') else { continue };
            let has_labels = labels.iter().all(|(k, v)| key.contains(&format!("{k}=\"{v}\"")));
            if key.split('{').next() == Some(name) && has_labels {
                *sum.get_or_insert(0) += value.parse::<f64>().unwrap_or(0.0) as u64;
            }
        }
        sum
    }

    /// Stop the daemon with SIGTERM and return its exit status.
    pub fn stop_daemon(&mut self) -> Option<std::process::ExitStatus> {
        self.daemon.take().and_then(|mut d| d.stop(Duration::from_secs(10)).ok().flatten())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- rvs log ---\n{}", self.daemon_log());
        }
        if let Some(mut d) = self.daemon.take() {
            let _ = d.stop(Duration::from_secs(5));
        }
        for mut n in self.nginx.drain(..).flatten() {
            let _ = n.stop(Duration::from_secs(5));
        }
        let _ = self.topo.teardown();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// An address as the host part of a URL: IPv6 in brackets.
pub fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// The address of a peer nginx logged (`addr:port`, `[addr]:port`, maybe
/// followed by a space and the request's URI).
pub fn logged_peer(line: &str) -> SocketAddr {
    let peer = line.split(' ').next().unwrap_or_default();
    peer.parse().unwrap_or_else(|_| panic!("nginx logged {line:?}, not a socket address"))
}

/// The keys a config's `[driver]` table sets.
fn driver_keys(toml: &str) -> Vec<String> {
    let table = toml.lines().skip_while(|l| l.trim() != "[driver]").skip(1);
    table
        .take_while(|l| !l.trim_start().starts_with('['))
        .filter_map(|l| Some(l.split_once('=')?.0.trim().to_owned()))
        .collect()
}

/// The client-address keys of a `[[service]]` table.
fn client_addr_keys(proxy_protocol: Option<&str>, toa: bool) -> String {
    let mut t = String::new();
    if let Some(v) = proxy_protocol {
        writeln!(t, "proxy_protocol = {v:?}").unwrap();
    }
    if toa {
        t.push_str("toa = true\n");
    }
    t
}

/// wrk's summary.
#[derive(Debug, Default)]
pub struct Wrk {
    pub requests: u64,
    pub socket_errors: Option<String>,
    pub non_2xx: u64,
    pub text: String,
}

impl Wrk {
    fn parse(text: &str) -> Self {
        let mut w = Self { text: text.to_owned(), ..Self::default() };
        for line in text.lines().map(str::trim) {
            if let Some(n) = line.split(" requests in ").next().filter(|_| line.contains(" requests in ")) {
                w.requests = n.trim().parse().unwrap_or(0);
            } else if line.starts_with("Socket errors:") {
                w.socket_errors = Some(line.to_owned());
            } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
                w.non_2xx = n.trim().parse().unwrap_or(0);
            }
        }
        w
    }
}

/// The CPUs this process may run on, lowest first (none if that cannot be read).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is the empty set; the kernel writes at most
    // its size, and CPU_ISSET reads within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// Poll `f` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Result<(), ()> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(())
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

#[cfg(test)]
mod schedule {
    use std::collections::BTreeSet;

    use super::{Driver, Family, default_variants};

    fn fast_path_on_and_off(cells: &[(Driver, Family)]) -> bool {
        let xdp = cells.iter().filter(|(d, _)| d.uses_xdp());
        xdp.clone().any(|(d, _)| d.fast_path()) && xdp.clone().any(|(d, _)| !d.fast_path())
    }

    #[test]
    fn default_schedule_covers_every_variant_and_both_fast_path_settings() {
        let every: BTreeSet<_> = Driver::ALL
            .iter()
            .flat_map(|&d| Family::ALL.iter().map(move |&f| (d.test_name(), f.name())))
            .collect();
        for (n, tests) in [(4, 8), (1, 32)] {
            let cells: Vec<_> = (0..tests).flat_map(|t| default_variants(t, n)).collect();
            let named: BTreeSet<_> = cells.iter().map(|(d, f)| (d.test_name(), f.name())).collect();
            assert_eq!(named, every, "{tests} tests of {n}");
        }
        for t in 0..16 {
            let square = default_variants(t, 4);
            let families: BTreeSet<_> = square.iter().map(|(_, f)| f.name()).collect();
            assert_eq!(families.len(), 4, "test {t}: {square:?}");
            assert!(fast_path_on_and_off(&square), "test {t}: {square:?}");
        }
        // A binary with two tests of one variant each has the fast path on and off.
        assert!(fast_path_on_and_off(&[default_variants(0, 1), default_variants(1, 1)].concat()));
    }

    #[test]
    fn driver_keys_are_those_of_the_driver_table() {
        let toml =
            "[engine]\nbatch = 1\n[driver]\nfast_path = false\ncpus = [1, 0]\n\n[synproxy]\nwscale = 7\n";
        assert_eq!(super::driver_keys(toml), ["fast_path", "cpus"]);
        assert!(super::driver_keys("[synproxy]\nwscale = 7\n").is_empty());
    }
}
