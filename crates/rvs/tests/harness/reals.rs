//! Doing things to reals while a test runs: stopping and restarting a
//! real's nginx, silencing its namespace, counting the SYNs it receives
//! from the balancer itself (health probes) apart from those of client
//! connections (from the local addresses), and a paced stream of requests
//! to the VIP that records each outcome. Every nftables table is deleted
//! and every thread joined on drop, also when a test fails.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rvs_netns::Netns;

use super::Lab;

/// The table that silences a real.
const SILENCE_TABLE: &str = "rvs_test_silence";
/// The table of [`ProbeCounter`]s.
const PROBE_TABLE: &str = "rvs_test_probes";

impl Lab {
    /// Ends nginx on real `i`: its port closes and its kernel answers SYNs
    /// with a reset.
    pub fn stop_real(&mut self, i: usize) {
        if let Some(mut n) = self.nginx.get_mut(i).and_then(Option::take) {
            n.stop(Duration::from_secs(5)).expect("stop nginx");
        }
    }

    /// Starts nginx on real `i` again (after [`Self::stop_real`]) and waits
    /// until it answers locally.
    pub fn restart_real(&mut self, i: usize) {
        assert!(self.nginx.get(i).is_none_or(Option::is_none), "nginx on real {i} still runs");
        self.start_nginx(i);
    }

    /// Drops every packet in and out of real `i`'s namespace but loopback's,
    /// as a cut link would, until the guard is dropped.
    pub fn silence_real(&self, i: usize) -> Silence {
        Silence::on(&self.topo.ns_reals()[i])
    }

    /// Counts, on real `i`, the SYNs to each of `ports` from the balancer
    /// itself (health probes) and from its local addresses (client connections).
    pub fn probe_counter(&self, i: usize, ports: &[u16]) -> ProbeCounter {
        ProbeCounter::install(&self.topo.ns_reals()[i], &self.laddrs(), ports)
    }

    /// Starts requests to VIP:`port` from the client, one connection each, at
    /// most `rate` per second, each with `timeout`, until stopped or `limit`.
    pub fn paced_load(&self, port: u16, rate: f64, timeout: Duration, limit: Duration) -> Load {
        Load::start(self.client().clone(), self.vip_at(port), rate, timeout, limit)
    }
}

/// A silenced real; dropping it lets packets through again.
#[derive(Debug)]
pub struct Silence {
    ns: Netns,
}

impl Silence {
    fn on(ns: &Netns) -> Self {
        ns.nft(&format!(
            "table inet {SILENCE_TABLE} {{\n\
             \x20 chain input {{ type filter hook input priority -400; iifname != \"lo\" drop; }}\n\
             \x20 chain output {{ type filter hook output priority -400; oifname != \"lo\" drop; }}\n}}\n"
        ))
        .expect("silence a real (nft installed?)");
        Self { ns: ns.clone() }
    }
}

impl Drop for Silence {
    fn drop(&mut self) {
        if self.ns.exists() {
            let _ = self.ns.run("nft", ["delete", "table", "inet", SILENCE_TABLE]);
        }
    }
}

/// Named nftables counters on one real: per port, pure SYNs from a local
/// address (`client_PORT`) and from anywhere else (`probe_PORT`: the
/// balancer's own probes, which leave from its kernel, not the data path).
#[derive(Debug)]
pub struct ProbeCounter {
    ns: Netns,
}

impl ProbeCounter {
    fn install(ns: &Netns, laddrs: &[IpAddr], ports: &[u16]) -> Self {
        let lips: Vec<String> = laddrs.iter().map(IpAddr::to_string).collect();
        let saddr = if laddrs.iter().any(IpAddr::is_ipv6) { "ip6 saddr" } else { "ip saddr" };
        let mut script = format!("table inet {PROBE_TABLE} {{\n");
        for p in ports {
            script += &format!("  counter client_{p} {{ }}\n  counter probe_{p} {{ }}\n");
        }
        script += "  chain input {\n    type filter hook input priority -350; policy accept;\n";
        for p in ports {
            let syn = format!("tcp dport {p} tcp flags & (syn|ack) == syn");
            script +=
                &format!("    {saddr} {{ {} }} {syn} counter name \"client_{p}\" accept\n", lips.join(", "));
            script += &format!("    {syn} counter name \"probe_{p}\"\n");
        }
        script += "  }\n}\n";
        ns.nft(&script).expect("install probe counters (nft installed?)");
        Self { ns: ns.clone() }
    }

    fn read(&self, name: &str) -> u64 {
        let listing =
            self.ns.run("nft", ["list", "counter", "inet", PROBE_TABLE, name]).expect("read a counter");
        let words: Vec<&str> = listing.split_whitespace().collect();
        words.windows(2).find(|w| w[0] == "packets").and_then(|w| w[1].parse().ok()).unwrap_or(0)
    }

    /// SYNs from the balancer itself to `port` so far.
    pub fn probes(&self, port: u16) -> u64 {
        self.read(&format!("probe_{port}"))
    }

    /// SYNs of client connections to `port` so far.
    pub fn clients(&self, port: u16) -> u64 {
        self.read(&format!("client_{port}"))
    }
}

impl Drop for ProbeCounter {
    fn drop(&mut self) {
        if self.ns.exists() {
            let _ = self.ns.run("nft", ["delete", "table", "inet", PROBE_TABLE]);
        }
    }
}

/// One request of a [`Load`].
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it started.
    pub start: Instant,
    /// How long it took, to the end of the response or the failure.
    pub took: Duration,
    /// The response body (nginx's `realN`), or what went wrong.
    pub outcome: Result<String, String>,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// Requests running on a thread of their own in the client's namespace.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Sample>>>,
}

impl Load {
    fn start(ns: Netns, addr: SocketAddr, rate: f64, timeout: Duration, limit: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            ns.run_in(move || {
                let begun = Instant::now();
                let mut samples = Vec::new();
                let mut i = 0u32;
                while !flag.load(Ordering::Relaxed) && begun.elapsed() < limit {
                    let due = begun + Duration::from_secs_f64(f64::from(i) / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                    i += 1;
                    let start = Instant::now();
                    let outcome = get(addr, timeout);
                    samples.push(Sample { start, took: start.elapsed(), outcome });
                }
                samples
            })
            .expect("enter the client namespace")
        });
        Self { stop, thread: Some(thread) }
    }

    /// Stops the requests (the one under way finishes) and returns them all.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().expect("the load thread")).unwrap_or_default()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `GET /` on a new connection within `timeout`; the body of a 200 response.
pub fn get(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    let io = |e: io::Error| format!("exchange: {e}");
    s.set_write_timeout(Some(left())).map_err(io)?;
    s.write_all(
        format!("GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", super::host(addr.ip())).as_bytes(),
    )
    .map_err(io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        s.set_read_timeout(Some(left())).map_err(io)?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(io(e)),
        }
        if Instant::now() >= deadline {
            return Err("timed out reading".into());
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no response head: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("status: {}", head.lines().next().unwrap_or_default()));
    }
    Ok(body.trim().to_owned())
}
