//! Measuring tools for the lab: per-request timings from curl, bounded runs
//! of outside programs, nftables SYN counters, the kernel's TCP counters and
//! a socket's negotiated options, iperf3 throughput. Everything they start
//! is ended by PID when they return or unwind, and every table they add is
//! deleted.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rvs_netns::{ChildGuard, Netns};

use super::Lab;

/// One request's outcome, as curl's `-w` reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// HTTP status; 0 when the request failed (timeout, reset, ...).
    pub code: u16,
    /// Seconds from start until the TCP handshake completed.
    pub connect: f64,
    /// Seconds from start until the response was complete.
    pub total: f64,
}

impl Request {
    pub fn ok(&self) -> bool {
        self.code == 200
    }
}

/// What [`Lab::timed_requests`] got done.
#[derive(Debug, Default)]
pub struct Timed {
    pub requests: Vec<Request>,
    /// The time budget ran out before all requests were made.
    pub out_of_time: bool,
    /// Stopped early because the caller's condition held.
    pub stopped: bool,
    /// curl's complaints, if any.
    pub stderr: String,
}

impl Timed {
    /// Total times minus their median: the delay each request suffered
    /// beyond the typical one (never negative), sorted ascending.
    pub fn added_delays(&self) -> Vec<f64> {
        let totals: Vec<f64> = self.requests.iter().map(|r| r.total).collect();
        let med = percentile(&totals, 50.0);
        let mut d: Vec<f64> = totals.iter().map(|t| (t - med).max(0.0)).collect();
        d.sort_by(f64::total_cmp);
        d
    }
}

/// The `p`-th percentile (nearest rank) of `values`; 0 for none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// URLs per curl process in [`Lab::timed_requests`].
const CHUNK: usize = 25;

impl Lab {
    /// `n` sequential requests for `path`, each on a new connection (the
    /// server closes it), with per-request timings. Runs curl processes of a
    /// few dozen URLs each, so the whole stays within `budget` (a curl still
    /// running then is ended and its finished requests kept) and can stop as
    /// soon as `stop` holds for the requests so far.
    pub fn timed_requests(
        &self,
        path: &str,
        n: usize,
        budget: Duration,
        mut stop: impl FnMut(&[Request]) -> bool,
    ) -> Timed {
        let url = self.url(path);
        let deadline = Instant::now() + budget;
        let mut timed = Timed::default();
        while timed.requests.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                timed.out_of_time = true;
                break;
            }
            let batch = CHUNK.min(n - timed.requests.len());
            let mut args: Vec<&str> = vec![
                "-sS",
                "--connect-timeout",
                "10",
                "--max-time",
                "15",
                "-H",
                "Connection: close",
                "-o",
                "/dev/null",
                "-w",
                "T %{http_code} %{time_connect} %{time_total}\\n",
            ];
            for i in 0..batch {
                if i > 0 {
                    args.extend(["-o", "/dev/null"]);
                }
                args.push(&url);
            }
            let out = run_bounded(&mut self.client().cmd("curl", &args), left).expect("run curl");
            timed.requests.extend(out.stdout.lines().filter_map(parse_timing));
            timed.stderr.push_str(&out.stderr);
            if out.timed_out {
                timed.out_of_time = true;
                break;
            }
            if stop(&timed.requests) {
                timed.stopped = true;
                break;
            }
        }
        timed
    }
}

/// A `T CODE CONNECT TOTAL` line of curl's `-w` output.
fn parse_timing(line: &str) -> Option<Request> {
    let mut w = line.strip_prefix("T ")?.split_whitespace();
    Some(Request {
        code: w.next()?.parse().ok()?,
        connect: w.next()?.parse().ok()?,
        total: w.next()?.parse().ok()?,
    })
}

/// What [`run_bounded`] saw.
#[derive(Debug)]
pub struct Bounded {
    /// `None` when the program had to be ended.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// Runs `cmd` (stdin closed) for at most `limit`, then ends it by PID; its
/// output so far is returned either way.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> io::Result<Bounded> {
    let mut guard =
        ChildGuard::spawn(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()))?;
    let (out, err) = pipes(&mut guard);
    let end = Instant::now() + limit;
    let mut status = None;
    while Instant::now() < end {
        if let Some(s) = guard.try_wait()? {
            status = Some(s);
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let timed_out = status.is_none();
    if timed_out {
        guard.stop(Duration::from_secs(2))?;
    }
    Ok(Bounded { status, stdout: join(out), stderr: join(err), timed_out })
}

type Reader = thread::JoinHandle<String>;

/// Readers that drain the child's stdout and stderr (so it never blocks on a
/// full pipe) until it closes them.
pub fn pipes(guard: &mut ChildGuard) -> (Option<Reader>, Option<Reader>) {
    fn drain(mut r: impl Read + Send + 'static) -> Reader {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    }
    let child = guard.child_mut().expect("child running");
    (child.stdout.take().map(drain), child.stderr.take().map(drain))
}

/// What a reader from [`pipes`] collected (the child must have ended).
pub fn join(r: Option<Reader>) -> String {
    r.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
}

/// The table name of [`SynCounter`]s.
const COUNT_TABLE: &str = "rvs_syncount";

/// An nftables counter of pure SYNs (`tcp flags & (syn|ack) == syn`)
/// arriving on (or leaving by) one interface of one namespace; the table is
/// deleted on drop.
#[derive(Debug)]
pub struct SynCounter {
    ns: Netns,
}

impl SynCounter {
    /// Counts SYNs arriving on `dev` in `ns` from now on.
    pub fn install(ns: &Netns, dev: &str) -> io::Result<Self> {
        Self::on_hook(ns, dev, "ingress")
    }

    /// Counts SYNs leaving by `dev` in `ns` from now on: what a sender put
    /// on the wire, also where the receiving end takes frames with XDP
    /// before any netfilter hook sees them.
    pub fn install_egress(ns: &Netns, dev: &str) -> io::Result<Self> {
        Self::on_hook(ns, dev, "egress")
    }

    fn on_hook(ns: &Netns, dev: &str, hook: &str) -> io::Result<Self> {
        let script = format!(
            "table netdev {COUNT_TABLE} {{\n  chain syns {{ type filter hook {hook} device \"{dev}\" priority 0; \
             policy accept;\n    tcp flags & (syn|ack) == syn counter\n  }}\n}}\n"
        );
        ns.nft(&script)?;
        Ok(Self { ns: ns.clone() })
    }

    /// SYNs counted so far.
    pub fn packets(&self) -> io::Result<u64> {
        let listing = self.ns.run("nft", ["list", "table", "netdev", COUNT_TABLE])?;
        let words: Vec<&str> = listing.split_whitespace().collect();
        Ok(words
            .windows(3)
            .filter(|w| w[0] == "counter" && w[1] == "packets")
            .filter_map(|w| w[2].parse::<u64>().ok())
            .sum())
    }
}

impl Drop for SynCounter {
    fn drop(&mut self) {
        if self.ns.exists() {
            let _ = self.ns.run("nft", ["delete", "table", "netdev", COUNT_TABLE]);
        }
    }
}

/// The `TcpExt:` counters of `/proc/net/netstat` in `ns`, by name without the prefix.
pub fn tcp_ext(ns: &Netns) -> BTreeMap<String, u64> {
    let text = ns.run("cat", ["/proc/net/netstat"]).expect("read /proc/net/netstat");
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        panic!("no TcpExt lines in /proc/net/netstat:\n{text}")
    };
    names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)))
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// iperf3 from the client to VIP:`port` for `secs` seconds (after one
/// omitted second of slow start); the receiver's bits per second. With
/// `cpus`, the client runs on the first CPU and the server, for this run, on
/// the second (iperf3's `-A`).
pub fn iperf3_bps(lab: &Lab, port: u16, secs: u32, cpus: Option<(usize, usize)>) -> f64 {
    let (p, t) = (port.to_string(), secs.to_string());
    let vip = lab.vip().to_string();
    let mut args = vec!["-c", &vip, "-p", &p, "-t", &t, "-O", "1", "-J", "--connect-timeout", "3000"];
    let affinity = cpus.map(|(client, server)| format!("{client},{server}"));
    if let Some(a) = &affinity {
        args.extend(["-A", a]);
    }
    let out = run_bounded(&mut lab.client().cmd("iperf3", args), Duration::from_secs(u64::from(secs) + 15))
        .expect("run iperf3 (installed?)");
    assert!(
        out.status.is_some_and(|s| s.success()),
        "iperf3 to port {port} failed (timed out: {}): {}{}",
        out.timed_out,
        out.stdout,
        out.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("iperf3 -J prints JSON");
    v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or_else(|| panic!("no throughput in {v}"))
}

/// A SYN flood from spoofed IPv6 sources (random in 2001:db8::/32, which
/// nothing routes) to `dst`, for clients hping3 cannot play (it has no
/// IPv6): `count` SYNs, about `rate` per second, written as frames to
/// `next_hop` (a MAC address) out of `dev` in `ns` by a packet socket, as
/// hping3 does for IPv4 (the kernel's IPv6 stack sends no packet with a
/// source it does not own). Returns how many were sent.
pub fn syn_flood6(
    ns: &Netns,
    dev: &str,
    next_hop: [u8; 6],
    dst: std::net::Ipv6Addr,
    port: u16,
    count: u64,
    rate: u64,
) -> u64 {
    let dev = std::ffi::CString::new(dev).expect("an interface name");
    ns.run_in(move || {
        let ipv6 = (libc::ETH_P_IPV6 as u16).to_be();
        // SAFETY: plain socket creation; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(ipv6)) };
        assert!(fd >= 0, "packet socket: {}", io::Error::last_os_error());
        // SAFETY: fd is a descriptor we just opened and nothing else owns.
        let _owner = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: the name is a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) };
        assert!(ifindex != 0, "no interface {dev:?}");
        // SAFETY: sockaddr_ll is plain data; all zero is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = ipv6;
        to.sll_ifindex = ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&next_hop);
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let start = Instant::now();
        let mut sent = 0;
        while sent < count {
            let r = next();
            let mut src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            src[4..12].copy_from_slice(&r.to_be_bytes());
            let frame = syn6(src, dst.octets(), (r >> 48) as u16 | 1024, port, r as u32);
            // SAFETY: the buffer and the address are valid for the call's lengths.
            let n = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const to).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                assert!(e.raw_os_error() == Some(libc::ENOBUFS), "send a SYN: {e}");
            } else {
                sent += 1;
            }
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed())
                && wait > Duration::from_millis(1)
            {
                thread::sleep(wait);
            }
        }
        sent
    })
    .expect("enter the client namespace")
}

/// A link's MAC address (`/sys/class/net/DEV/address`) in `ns`.
pub fn mac_of(ns: &Netns, dev: &str) -> [u8; 6] {
    let text = ns.run("cat", [format!("/sys/class/net/{dev}/address")]).expect("read a MAC address");
    let bytes: Vec<u8> = text.trim().split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
    bytes.try_into().unwrap_or_else(|b| panic!("MAC address {text:?} read as {b:?}"))
}

/// An IPv6 header and a TCP SYN (MSS 1440) with its checksum.
fn syn6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, seq: u32) -> [u8; 64] {
    let mut p = [0u8; 64];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&24u16.to_be_bytes());
    p[6] = 6;
    p[7] = 64;
    p[8..24].copy_from_slice(&src);
    p[24..40].copy_from_slice(&dst);
    let t = &mut p[40..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 6 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t[20..24].copy_from_slice(&[2, 4, 0x05, 0xa0]);
    // RFC 8200 section 8.1: the pseudo-header is the addresses, the upper-layer length and the next header.
    let mut sum: u32 = 24 + 6;
    for chunk in src.chunks(2).chain(dst.chunks(2)).chain(p[40..64].chunks(2)) {
        sum += u32::from(u16::from_be_bytes([chunk[0], chunk[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[56..58].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p
}

/// The options a connection negotiated, from `TCP_INFO`.
#[derive(Debug)]
pub struct TcpInfo {
    pub timestamps: bool,
    pub sack: bool,
    /// (send, receive) window scale.
    pub wscale: Option<(u8, u8)>,
}

pub fn tcp_info(s: &TcpStream) -> io::Result<TcpInfo> {
    // struct tcp_info starts: state, ca_state, retransmits, probes, backoff,
    // options, snd_wscale:4 | rcv_wscale:4, ...
    let mut buf = [0u8; 104];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the buffer and its length are valid for the call; the kernel
    // writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, buf.as_mut_ptr().cast(), &mut len)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let opts = buf[5];
    Ok(TcpInfo {
        timestamps: opts & 1 != 0,
        sack: opts & 2 != 0,
        wscale: (opts & 4 != 0).then_some((buf[6] & 0x0f, buf[6] >> 4)),
    })
}
