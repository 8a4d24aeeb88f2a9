//! Client-address delivery end to end, in network namespaces with the
//! kernel's TCP stacks: the reals learn each client's address and port from
//! a PROXY protocol header (v1 and v2, read by nginx) or from the TOA option
//! (kind 254, decoded by tshark from a capture on the real), with SYNProxy
//! off and on, and with 5 % loss on the balancer–real links.
//!
//! Every test runs over the matrix of data paths and families (see
//! `netns.rs`), one variant each by default: an IPv6 client is named by a
//! PROXY v1 `TCP6` or v2 `AF_INET6` header and by TOA's 20-byte form.
//!
//! Needs root and the programs `scripts/test` installs (curl, nginx, nft,
//! tcpdump, tshark). Without root these fail, unless `RVS_SKIP_NETNS=1` says
//! to skip them. Every PROXY protocol case makes 1,000 sequential requests
//! but one (v2 under loss with SYNProxy off, 200), which `RVS_LONG_TESTS=1`
//! brings to 1,000 too.

#[macro_use]
mod harness;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use harness::probes::run_bounded;
use harness::{Driver, ExtraService, Family, Lab, LabSpec, wait_until};
use rvs_netns::{ChildGuard, Netns};

/// Whether the long versions were asked for.
fn long_tests() -> bool {
    std::env::var_os("RVS_LONG_TESTS").is_some_and(|v| v == "1")
}

/// The issue's count of sequential requests.
const FULL: usize = 1000;
/// Loss on the balancer–real links, in percent, every packet, each way.
const LOSS_PCT: f64 = 5.0;
/// URLs per curl process.
const CHUNK: usize = 25;
/// Time one curl process gets for its URLs: a few seconds normally, and
/// under loss each request may wait out a few retransmission timeouts, but
/// a broken delivery (every request hanging to its `--max-time`) shows up
/// within this rather than after `CHUNK` times the timeout.
const CHUNK_LIMIT: Duration = Duration::from_secs(60);

/// One request as the client saw it.
#[derive(Debug, Clone, Copy)]
struct ClientRequest {
    /// HTTP status; 0 when curl got none.
    code: u16,
    /// The client's end of the request's connection.
    local: SocketAddr,
    /// Connections curl opened for the request (1: its own, not reused).
    connects: u32,
}

/// `n` sequential requests for `/?req=I` (I counting from 0) through the
/// VIP, each on a connection of its own (the server closes it), with the
/// client's address and port of each, in order. Stops when `budget` runs
/// out, or after a batch in which a request failed or that did not finish
/// (curl buffers its `-w` lines, so a curl that had to be ended reports none).
fn client_requests(lab: &Lab, n: usize, budget: Duration) -> (Vec<ClientRequest>, String) {
    let deadline = Instant::now() + budget;
    let (mut done, mut stderr) = (Vec::with_capacity(n), String::new());
    while done.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            stderr.push_str("(out of time)\n");
            break;
        }
        let batch = CHUNK.min(n - done.len());
        let urls: Vec<String> =
            (done.len()..done.len() + batch).map(|i| lab.url(&format!("/?req={i}"))).collect();
        let mut args: Vec<&str> = vec![
            "-sS",
            "--connect-timeout",
            "15",
            "--max-time",
            "30",
            "-H",
            "Connection: close",
            "-w",
            "R %{http_code} %{num_connects} %{local_ip} %{local_port}\\n",
        ];
        for url in &urls {
            args.extend(["-o", "/dev/null", url]);
        }
        let out = run_bounded(&mut lab.client().cmd("curl", &args), left.min(CHUNK_LIMIT)).expect("run curl");
        let before = done.len();
        done.extend(out.stdout.lines().filter_map(parse_request));
        stderr.push_str(&out.stderr);
        if out.timed_out || done.len() < before + batch {
            stderr.push_str(&format!("(curl batch: {} of {batch} reported)\n", done.len() - before));
            break;
        }
        if done[before..].iter().any(|r| r.code != 200) {
            break;
        }
    }
    (done, stderr)
}

/// An `R CODE CONNECTS IP PORT` line of curl's `-w` output.
fn parse_request(line: &str) -> Option<ClientRequest> {
    let mut w = line.strip_prefix("R ")?.split_whitespace();
    let code = w.next()?.parse().ok()?;
    let connects = w.next()?.parse().ok()?;
    let ip: IpAddr = w.next().and_then(|s| s.parse().ok()).unwrap_or(Ipv4Addr::UNSPECIFIED.into());
    let port = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    Some(ClientRequest { code, local: SocketAddr::new(ip, port), connects })
}

/// How many times each entry occurs.
fn counts<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeMap<T, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

/// Entries of `a` beyond their count in `b`, at most ten, with the total.
fn excess(a: &BTreeMap<String, usize>, b: &BTreeMap<String, usize>) -> (usize, Vec<String>) {
    let mut total = 0;
    let mut shown = Vec::new();
    for (k, &n) in a {
        let extra = n.saturating_sub(b.get(k).copied().unwrap_or(0));
        total += extra;
        if extra > 0 && shown.len() < 10 {
            shown.push(format!("{k} x{extra}"));
        }
    }
    (total, shown)
}

/// The issue's PROXY protocol check: `n` sequential requests through a
/// service with `proxy_protocol = version`, and every one of them logged by
/// a real with exactly the client's address and port of its connection,
/// none missing, none wrong.
fn proxy_protocol_case(
    test: &str,
    at: (Driver, Family),
    version: &'static str,
    synproxy: bool,
    loss: bool,
    n: usize,
) {
    let started = Instant::now();
    let (driver, family) = at;
    let spec = LabSpec {
        driver,
        family,
        proxy_protocol: Some(version),
        synproxy,
        metrics: true,
        ..LabSpec::default()
    };
    let Some(mut lab) = Lab::start(test, spec) else { return };
    if loss {
        lab.topo.inject_loss(LOSS_PCT).expect("inject loss (nft installed?)");
    }
    let t0 = Instant::now();
    let (requests, stderr) = client_requests(&lab, n, Duration::from_secs(300));
    let took = t0.elapsed();
    let dropped = lab.topo.loss_dropped().unwrap();
    let failed: Vec<&ClientRequest> = requests.iter().filter(|r| r.code != 200).collect();
    let client = lab.client_addr();
    let what = format!(
        "{test} (proxy_protocol {version}, synproxy {synproxy}, loss {}%)",
        if loss { LOSS_PCT } else { 0.0 }
    );
    assert_eq!(requests.len(), n, "{what}: {} of {n} requests made: {stderr}", requests.len());
    assert!(failed.is_empty(), "{what}: {} requests failed, e.g. {:?}: {stderr}", failed.len(), failed[0]);
    assert!(
        requests.iter().all(|r| r.local.ip() == client),
        "{what}: curl reported another local address than {client}"
    );
    assert!(
        requests.iter().all(|r| r.connects == 1),
        "{what}: a request did not have a connection of its own"
    );
    // What each request should be logged as: its client, then its URI.
    let want = counts(requests.iter().enumerate().map(|(i, r)| format!("{} /?req={i}", r.local)));
    // nginx writes its log line as the request ends, which can be a moment
    // after curl has its response.
    let _ = wait_until(Duration::from_secs(5), || lab.access_logs().iter().map(Vec::len).sum::<usize>() >= n);
    let logs = lab.access_logs();
    let got = counts(logs.iter().flatten().cloned());
    let (missing, some_missing) = excess(&want, &got);
    let (wrong, some_wrong) = excess(&got, &want);
    let per_real: Vec<usize> = logs.iter().map(Vec::len).collect();
    let metric = |name| lab.metric(name).unwrap_or_else(|| panic!("{what}: no metric {name}"));
    let headers = metric("rvs_proxy_headers_total");
    let resent = metric("rvs_proxy_headers_resent_total");
    let gave_up = metric("rvs_proxy_headers_gave_up_total");
    eprintln!(
        "{what}: {n} requests in {:.1} s ({:.1} s with setup), {dropped} packets dropped; \
         reals logged {per_real:?}; {missing} missing, {wrong} wrong; headers sent {headers}, \
         resent {resent}, given up {gave_up}",
        took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        missing == 0 && wrong == 0,
        "{what}: the reals' logs do not name exactly the client of every request: {missing} missing \
         (e.g. {some_missing:?}), {wrong} wrong (e.g. {some_wrong:?})"
    );
    assert!(per_real.iter().all(|&c| c > 0), "{what}: a real got no request: {per_real:?}");
    assert_eq!(headers, n as u64, "{what}: not one header per connection");
    assert_eq!(gave_up, 0, "{what}: the balancer gave up resending a header");
    if loss {
        assert!(dropped > 0, "{what}: no packet was dropped: the loss injection did nothing");
        assert!(resent > 0, "{what}: no header was resent: the loss never hit the header's delivery");
    }
}

/// 1,000 requests under loss, SYNProxy off and on (v1 and v2 in turn).
fn proxy_v1_names_every_client_under_loss(driver: Driver, family: Family) {
    proxy_protocol_case("ppv1loss", (driver, family), "v1", false, true, FULL);
}

fn proxy_v2_synproxy_names_every_client_under_loss(driver: Driver, family: Family) {
    proxy_protocol_case("ppv2sploss", (driver, family), "v2", true, true, FULL);
}

/// With SYNProxy the balancer resends a lost SYN toward the real within
/// milliseconds: 1,000 requests take seconds.
fn proxy_v1_synproxy_names_every_client_under_loss(driver: Driver, family: Family) {
    proxy_protocol_case("ppv1sploss", (driver, family), "v1", true, true, FULL);
}

/// With SYNProxy off a lost SYN or SYN-ACK costs the client its own 1 s
/// retransmission, so 1,000 requests take over two minutes (the v1 run
/// above): this one makes 200 by default, 1,000 with `RVS_LONG_TESTS=1`.
fn proxy_v2_names_every_client_under_loss(driver: Driver, family: Family) {
    proxy_protocol_case(
        "ppv2loss",
        (driver, family),
        "v2",
        false,
        true,
        if long_tests() { FULL } else { 200 },
    );
}

/// Without loss every combination runs its 1,000 requests.
fn proxy_v1_names_every_client(driver: Driver, family: Family) {
    proxy_protocol_case("ppv1", (driver, family), "v1", false, false, FULL);
}

fn proxy_v2_names_every_client(driver: Driver, family: Family) {
    proxy_protocol_case("ppv2", (driver, family), "v2", false, false, FULL);
}

fn proxy_v1_synproxy_names_every_client(driver: Driver, family: Family) {
    proxy_protocol_case("ppv1sp", (driver, family), "v1", true, false, FULL);
}

fn proxy_v2_synproxy_names_every_client(driver: Driver, family: Family) {
    proxy_protocol_case("ppv2sp", (driver, family), "v2", true, false, FULL);
}

// ---- a server that speaks first -----------------------------------------

/// The reals' port of the server-speaks-first services.
const GREETER_PORT: u16 = 8081;

/// A server on a real that speaks first: for every connection it reads the
/// PROXY header (v1 or v2, whichever comes), greets with `HELLO <source>
/// <destination>` as the header names them (or `ERR <why>`), then echoes
/// one line. Accepts
/// connections one at a time until dropped; dropping it stops and joins
/// its thread.
struct Greeter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Greeter {
    fn start(ns: &Netns, addr: SocketAddr) -> Self {
        // The socket belongs to the namespace it was made in, wherever it is used.
        let listener = ns.run_in(|| TcpListener::bind(addr)).expect("enter the real's namespace").unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = greet(conn);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => break,
                }
            }
        });
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for Greeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection of the [`Greeter`].
fn greet(conn: TcpStream) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    let greeting = match read_proxy_header(&mut r) {
        Ok((src, dst)) => format!("HELLO {src} {dst}\n"),
        Err(why) => format!("ERR {why}\n"),
    };
    w.write_all(greeting.as_bytes())?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    w.write_all(line.as_bytes())
}

/// Reads exactly one PROXY header (v1 text or v2 binary, TCP over IPv4 or
/// IPv6) and returns the source and destination it names.
fn read_proxy_header(r: &mut impl BufRead) -> Result<(SocketAddr, SocketAddr), String> {
    const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    let mut head = [0u8; 16];
    r.read_exact(&mut head).map_err(|e| format!("no header: {e}"))?;
    if head.starts_with(b"PROXY ") {
        let mut rest = Vec::new();
        r.read_until(b'\n', &mut rest).map_err(|e| format!("v1 header cut: {e}"))?;
        let mut text = head.to_vec();
        text.extend(rest);
        let text = String::from_utf8(text).map_err(|_| "v1 header not text".to_owned())?;
        let line = text.strip_suffix("\r\n").ok_or_else(|| format!("v1 header without CRLF: {text:?}"))?;
        let f: Vec<&str> = line.split(' ').collect();
        let bad = || format!("bad address or port in {line:?}");
        let port = |p: &str| p.parse::<u16>().map_err(|_| bad());
        let ip = |a: &str, v6: bool| match a.parse::<IpAddr>() {
            Ok(ip) if ip.is_ipv6() == v6 => Ok(ip),
            _ => Err(bad()),
        };
        match f[..] {
            ["PROXY", proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
                let v6 = proto == "TCP6";
                Ok((SocketAddr::new(ip(src, v6)?, port(sport)?), SocketAddr::new(ip(dst, v6)?, port(dport)?)))
            }
            _ => Err(format!("unexpected v1 header {line:?}")),
        }
    } else if head.starts_with(V2_SIGNATURE) {
        // Address family and protocol: 0x11 TCP over IPv4 (12 bytes of
        // addresses and ports), 0x21 TCP over IPv6 (36).
        let n = match (head[12], head[13]) {
            (0x21, 0x11) => 4,
            (0x21, 0x21) => 16,
            (command, family) => return Err(format!("v2 header: command {command:#x}, family {family:#x}")),
        };
        let mut addrs = vec![0u8; usize::from(u16::from_be_bytes([head[14], head[15]]))];
        r.read_exact(&mut addrs).map_err(|e| format!("v2 header cut: {e}"))?;
        if addrs.len() < 2 * n + 4 {
            return Err(format!("v2 addresses of {} bytes", addrs.len()));
        }
        let ip = |a: &[u8]| -> IpAddr {
            match <[u8; 16]>::try_from(a) {
                Ok(b) => Ipv6Addr::from(b).into(),
                Err(_) => Ipv4Addr::new(a[0], a[1], a[2], a[3]).into(),
            }
        };
        let port = |i: usize| u16::from_be_bytes([addrs[2 * n + i], addrs[2 * n + i + 1]]);
        Ok((SocketAddr::new(ip(&addrs[..n]), port(0)), SocketAddr::new(ip(&addrs[n..2 * n]), port(2))))
    } else {
        Err(format!("stream starts with {head:02x?}, not a PROXY header"))
    }
}

/// A client that connects and sends nothing still gets the server's
/// greeting: the balancer sends the PROXY header as soon as the real's
/// handshake completes, not with the client's first data. The header names
/// the client's own address and port and the VIP and port it connected to,
/// and the line the client sends afterwards comes back intact (sequence
/// numbers shifted both ways).
fn proxy_header_reaches_a_server_that_speaks_first(driver: Driver, family: Family) {
    let services = [("v1", false, 81), ("v1", true, 82), ("v2", false, 83), ("v2", true, 84)];
    let spec = LabSpec {
        driver,
        family,
        more_services: services
            .iter()
            .map(|&(v, synproxy, port)| ExtraService {
                port,
                real_port: GREETER_PORT,
                reals: vec![0],
                synproxy,
                proxy_protocol: Some(v),
                toa: false,
            })
            .collect(),
        ..LabSpec::default()
    };
    let Some(lab) = Lab::start("ppfirst", spec) else { return };
    let real = SocketAddr::new(lab.real_addrs()[0], GREETER_PORT);
    let _greeter = Greeter::start(lab.topo.ns_real(0), real);
    for (version, synproxy, port) in services {
        for round in 0..3 {
            let what = format!("proxy_protocol {version}, synproxy {synproxy}, connection {round}");
            let vip = lab.vip_at(port);
            let (local, greeting, waited, echo) = lab
                .client()
                .run_in(move || -> io::Result<(SocketAddr, String, Duration, String)> {
                    let s = TcpStream::connect_timeout(&vip, Duration::from_secs(5))?;
                    let connected = Instant::now();
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    let mut r = BufReader::new(s.try_clone()?);
                    let mut greeting = String::new();
                    r.read_line(&mut greeting)?;
                    let waited = connected.elapsed();
                    let mut w = s.try_clone()?;
                    w.write_all(b"ping after the greeting\n")?;
                    let mut echo = String::new();
                    r.read_line(&mut echo)?;
                    Ok((s.local_addr()?, greeting, waited, echo))
                })
                .expect("thread in the client namespace")
                .unwrap_or_else(|e| panic!("{what}: the client got no greeting: {e}"));
            assert_eq!(
                greeting,
                format!("HELLO {local} {vip}\n"),
                "{what}: the header names another connection"
            );
            assert_eq!(echo, "ping after the greeting\n", "{what}: the client's data came back changed");
            eprintln!("ppfirst: {what}: greeted after {:.1} ms", waited.as_secs_f64() * 1e3);
        }
    }
}

// ---- TOA -----------------------------------------------------------------

/// tcpdump writing a real's traffic on port 80 to a file; the guard ends it.
struct Capture {
    guard: ChildGuard,
    file: PathBuf,
    log: PathBuf,
}

impl Capture {
    fn start(ns: &Netns, dev: &str, file: PathBuf) -> Self {
        let log = file.with_extension("log");
        let err = File::create(&log).unwrap();
        let path = file.display().to_string();
        let args = ["-i", dev, "-n", "--immediate-mode", "-U", "-Z", "root", "-s", "256", "-w", &path];
        let mut cmd = ns.cmd("tcpdump", args.into_iter().chain(["tcp port 80"]));
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        let mut guard = ChildGuard::spawn(&mut cmd).expect("start tcpdump (installed?)");
        let ready = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("listening on"))
                || guard.try_wait().ok().flatten().is_some()
        });
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(ready.is_ok() && guard.try_wait().ok().flatten().is_none(), "tcpdump did not start: {text}");
        Self { guard, file, log }
    }

    /// Stops the capture and decodes it.
    fn finish(mut self) -> Vec<Segment> {
        // --immediate-mode and -U: what was seen is written; a moment for the last ones.
        thread::sleep(Duration::from_millis(200));
        let _ = self.guard.stop(Duration::from_secs(5));
        let report = std::fs::read_to_string(&self.log).unwrap_or_default();
        decode(&self.file)
            .unwrap_or_else(|e| panic!("tshark cannot read the capture: {e}; tcpdump: {report}"))
    }
}

/// tshark's fields for each TCP segment: addresses, ports, flags, absolute
/// sequence and acknowledgement numbers, the HTTP request's URI if the
/// segment carries one, and the raw bytes
/// of experimental options (kinds 253 and 254: kind, length, data), with
/// tshark's own split of such an option into a 2-byte experiment identifier
/// (TOA's port) and the rest (TOA's address).
const FIELDS: [&str; 14] = [
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags.syn",
    "tcp.flags.ack",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "http.request.uri",
    "tcp.options.experimental",
    "tcp.options.experimental.exid",
    "tcp.options.experimental.data",
];

/// One captured segment.
#[derive(Debug, Clone)]
struct Segment {
    src: SocketAddr,
    dst: SocketAddr,
    syn: bool,
    ack: bool,
    seq: u32,
    ack_number: u32,
    /// The HTTP request's URI, on the segment that carries it.
    uri: Option<String>,
    /// The TOA option (kind 254) the segment carries, decoded.
    toa: Option<SocketAddr>,
}

/// Runs tshark over a pcap file and decodes every TCP segment.
fn decode(file: &Path) -> Result<Vec<Segment>, String> {
    let mut args = vec!["-r".to_owned(), file.display().to_string(), "-Y".into(), "tcp".into()];
    args.extend(["-T", "fields", "-E", "separator=/t"].map(str::to_owned));
    for f in FIELDS {
        args.extend(["-e".to_owned(), f.to_owned()]);
    }
    let out = std::process::Command::new("tshark")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run tshark (installed?): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    String::from_utf8_lossy(&out.stdout).lines().map(parse_segment).collect()
}

/// One line of tshark's [`FIELDS`].
fn parse_segment(line: &str) -> Result<Segment, String> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != FIELDS.len() {
        return Err(format!("tshark line with {} fields: {line:?}", f.len()));
    }
    let bad = |what: &str| format!("tshark line {line:?}: bad {what}");
    // An IPv4 segment fills ip.*, an IPv6 one ipv6.*.
    let ip = |v4: &str, v6: &str| {
        if v4.is_empty() { v6.parse::<IpAddr>() } else { v4.parse::<IpAddr>() }.map_err(|_| bad("address"))
    };
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad("number"));
    let flag = |s: &str| matches!(s, "1" | "True");
    let port = |s: &str| s.parse::<u16>().map_err(|_| bad("port"));
    let toa = toa_option(f[11], f[12], f[13]).map_err(|e| format!("{e} in {line:?}"))?;
    Ok(Segment {
        src: SocketAddr::new(ip(f[0], f[2])?, port(f[4])?),
        dst: SocketAddr::new(ip(f[1], f[3])?, port(f[5])?),
        syn: flag(f[6]),
        ack: flag(f[7]),
        seq: num(f[8])?,
        ack_number: num(f[9])?,
        uri: Some(f[10]).filter(|u| !u.is_empty()).map(str::to_owned),
        toa,
    })
}

/// The TOA option among a segment's experimental options: `raw` is the
/// options' bytes in hex (comma-separated when several), `exid` and `data`
/// tshark's reading of each. The option must be kind 254, length 8 (an
/// IPv4 client) or 20 (an IPv6 client), and tshark's experiment identifier
/// must be its port and its data the address.
fn toa_option(raw: &str, exid: &str, data: &str) -> Result<Option<SocketAddr>, String> {
    if raw.is_empty() {
        return Ok(None);
    }
    let (raws, exids, datas): (Vec<&str>, Vec<&str>, Vec<&str>) =
        (raw.split(',').collect(), exid.split(',').collect(), data.split(',').collect());
    let mut found = None;
    for (i, r) in raws.iter().enumerate() {
        let bytes = hex(r).ok_or_else(|| format!("option bytes {r:?} not hex"))?;
        if bytes.first() != Some(&254) {
            continue;
        }
        let addr: IpAddr = match (bytes.len(), bytes.get(1)) {
            (8, Some(8)) => Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]).into(),
            (20, Some(20)) => Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[4..]).unwrap_or_default()).into(),
            _ => return Err(format!("option 254 of length {:?} ({r})", bytes.get(1))),
        };
        if found.is_some() {
            return Err("two TOA options".to_owned());
        }
        let port = u16::from_be_bytes([bytes[2], bytes[3]]);
        let shown_port = exids.get(i).and_then(|e| u16::from_str_radix(e.trim_start_matches("0x"), 16).ok());
        let shown_addr = datas.get(i).and_then(|d| hex(d));
        if shown_port != Some(port) || shown_addr.as_deref() != Some(&bytes[4..]) {
            return Err(format!("tshark splits option {r} into {exids:?} and {datas:?}"));
        }
        found = Some(SocketAddr::new(addr, port));
    }
    Ok(found)
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// Requests through a `toa = true` service while every real captures its
/// traffic: each connection toward a real carries option 254 with the
/// client's address and the source port of that very connection (the one
/// whose request it carries), the segment that completes the real's
/// handshake included, and the same value on every segment that has it.
fn toa_case(test: &str, at: (Driver, Family), synproxy: bool) {
    const REQUESTS: usize = 60;
    let (driver, family) = at;
    let spec = LabSpec { driver, family, toa: true, synproxy, metrics: true, ..LabSpec::default() };
    let Some(lab) = Lab::start(test, spec) else { return };
    let topo = &lab.topo;
    let captures: Vec<Capture> = (0..lab.weights.len())
        .map(|i| Capture::start(topo.ns_real(i), topo.real_if(), lab.dir.join(format!("real{i}.pcap"))))
        .collect();
    let (requests, stderr) = client_requests(&lab, REQUESTS, Duration::from_secs(60));
    let segments: Vec<Segment> = captures.into_iter().flat_map(Capture::finish).collect();
    let what = format!("{test} (toa, synproxy {synproxy})");
    // A failing run keeps its directory, and the captures in it.
    let failing = format!("{what}, captures in {}", lab.dir.display());
    assert_eq!(requests.len(), REQUESTS, "{failing}: requests not made: {stderr}");
    assert!(requests.iter().all(|r| r.code == 200), "{failing}: requests failed: {requests:?} {stderr}");
    assert!(
        requests.iter().all(|r| r.connects == 1),
        "{failing}: a request did not have a connection of its own"
    );

    // Segments by connection, as the real sees it: (LIP:port, real:80).
    let reals = lab.real_addrs();
    let mut conns: HashMap<(SocketAddr, SocketAddr), Vec<&Segment>> = HashMap::new();
    for s in &segments {
        let key = if reals.contains(&s.dst.ip()) { (s.src, s.dst) } else { (s.dst, s.src) };
        conns.entry(key).or_default().push(s);
    }
    let mut seen = Vec::new();
    let mut carrying = 0;
    for ((lip, real), segs) in &conns {
        let name = format!("{failing}: connection {lip} -> {real}");
        let to_real: Vec<&Segment> = segs.iter().copied().filter(|s| s.dst == *real).collect();
        let syn_ack = segs
            .iter()
            .find(|s| s.src == *real && s.syn && s.ack)
            .unwrap_or_else(|| panic!("{name}: no SYN-ACK from the real in the capture: {segs:#?}"));
        // The segment that completes the handshake: the first from the
        // balancer acknowledging the real's SYN.
        let completing = to_real
            .iter()
            .find(|s| !s.syn && s.ack && s.ack_number == syn_ack.seq.wrapping_add(1))
            .unwrap_or_else(|| panic!("{name}: no handshake-completing ACK in the capture: {segs:#?}"));
        let toa = completing.toa.unwrap_or_else(|| {
            panic!("{name}: the handshake-completing segment carries no TOA: {completing:?}")
        });
        let values: Vec<SocketAddr> = to_real.iter().filter_map(|s| s.toa).collect();
        assert!(values.iter().all(|v| *v == toa), "{name}: TOA values differ: {values:?}");
        assert!(
            segs.iter().filter(|s| s.src == *real).all(|s| s.toa.is_none()),
            "{name}: the real's own segments carry TOA"
        );
        carrying += values.len();
        // Which request this connection carried, and so which client port it had.
        let uri = to_real.iter().find_map(|s| s.uri.as_deref());
        let req: usize = uri
            .and_then(|u| u.strip_prefix("/?req="))
            .and_then(|i| i.parse().ok())
            .filter(|&i| i < requests.len())
            .unwrap_or_else(|| panic!("{name}: no request of ours in the capture ({uri:?})"));
        assert_eq!(
            toa, requests[req].local,
            "{name}: request {req}'s TOA names another client than the client's end of its connection"
        );
        seen.push(toa.to_string());
    }
    let want = counts(requests.iter().map(|r| r.local.to_string()));
    let got = counts(seen);
    let (missing, some_missing) = excess(&want, &got);
    let (wrong, some_wrong) = excess(&got, &want);
    let inserted = lab.metric("rvs_toa_inserted_total");
    let no_room = lab.metric("rvs_toa_no_room_total");
    eprintln!(
        "{what}: {} connections captured on the reals, {carrying} segments carried TOA \
         (the balancer counts {inserted:?} inserted, {no_room:?} without room); {missing} clients missing, \
         {wrong} wrong",
        conns.len()
    );
    assert!(
        missing == 0 && wrong == 0,
        "{failing}: the TOA options do not name exactly the clients and their ports: {missing} missing \
         (e.g. {some_missing:?}), {wrong} wrong (e.g. {some_wrong:?})"
    );
    // Nothing is lost here: the reals saw every segment the balancer sent.
    assert_eq!(inserted, Some(carrying as u64), "{failing}: the balancer's count differs from the capture");
    assert_eq!(no_room, Some(0), "{failing}: segments went without TOA for want of option space");
}

fn toa_names_the_client_from_the_handshake_on(driver: Driver, family: Family) {
    toa_case("toa", (driver, family), false);
}

fn toa_synproxy_names_the_client_from_the_handshake_on(driver: Driver, family: Family) {
    toa_case("toasp", (driver, family), true);
}

on_drivers_and_families!(
    1;
    proxy_v1_names_every_client_under_loss,
    proxy_v2_synproxy_names_every_client_under_loss,
    proxy_v1_synproxy_names_every_client_under_loss,
    proxy_v2_names_every_client_under_loss,
    proxy_v1_names_every_client,
    proxy_v2_names_every_client,
    proxy_v1_synproxy_names_every_client,
    proxy_v2_synproxy_names_every_client,
    proxy_header_reaches_a_server_that_speaks_first,
    toa_names_the_client_from_the_handshake_on,
    toa_synproxy_names_the_client_from_the_handshake_on,
);

/// The decoders on known bytes, without a network.
mod offline {
    use super::*;

    #[test]
    fn tshark_fields_decode_toa() {
        // The bytes tshark prints for `fe 08 a8ca 0a4d0002` (port 43210, 10.77.0.2).
        let toa = toa_option("fe08a8ca0a4d0002", "0xa8ca", "0a4d0002").unwrap();
        assert_eq!(toa, Some("10.77.0.2:43210".parse().unwrap()));
        assert_eq!(toa_option("", "", "").unwrap(), None);
        // Another experiment (kind 253) is not TOA.
        assert_eq!(toa_option("fd040001", "0x0001", "").unwrap(), None);
        assert!(toa_option("fe06a8ca0a4d", "0xa8ca", "0a4d").is_err());
        assert!(toa_option("fe08a8ca0a4d0002", "0xa8cb", "0a4d0002").is_err());
        // The IPv6 form: port 43210, fd10:77::2.
        let toa = toa_option(
            "fe14a8cafd100077000000000000000000000002",
            "0xa8ca",
            "fd100077000000000000000000000002",
        )
        .unwrap();
        assert_eq!(toa, Some("[fd10:77::2]:43210".parse().unwrap()));
        assert!(
            toa_option("fe14a8cafd10007700000000000000000000", "0xa8ca", "fd1000770000000000000000").is_err()
        );
    }

    #[test]
    fn proxy_headers_parse() {
        let ends = ("10.77.0.2:40001".parse().unwrap(), "10.77.2.1:81".parse().unwrap());
        let mut v1 = &b"PROXY TCP4 10.77.0.2 10.77.2.1 40001 81\r\nrest"[..];
        assert_eq!(read_proxy_header(&mut v1).unwrap(), ends);
        assert_eq!(v1, b"rest");
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        v2.extend([10, 77, 0, 2, 10, 77, 2, 1, 0x9c, 0x41, 0, 81]);
        v2.extend(b"rest");
        let mut r = &v2[..];
        assert_eq!(read_proxy_header(&mut r).unwrap(), ends);
        assert_eq!(r, b"rest");
        assert!(read_proxy_header(&mut &b"GET / HTTP/1.1\r\n\r\n"[..]).is_err());
        let ends6 = ("[fd10:77::2]:40001".parse().unwrap(), "[fd10:77:2::1]:81".parse().unwrap());
        let mut v1 = &b"PROXY TCP6 fd10:77::2 fd10:77:2::1 40001 81\r\nrest"[..];
        assert_eq!(read_proxy_header(&mut v1).unwrap(), ends6);
        assert!(read_proxy_header(&mut &b"PROXY TCP6 10.77.0.2 10.77.2.1 40001 81\r\n"[..]).is_err());
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
        v2.extend([0xfd, 0x10, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        v2.extend([0xfd, 0x10, 0, 0x77, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v2.extend([0x9c, 0x41, 0, 81]);
        assert_eq!(read_proxy_header(&mut &v2[..]).unwrap(), ends6);
    }
}
