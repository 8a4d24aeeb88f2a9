//! Probes against servers in a scratch network namespace (as root), and
//! the prober set with a stand-in probe that records where and when it ran.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use rvs_control::health::{CheckKind, Probe, ProbeOutcome};
use rvs_netns::{Netns, TempDir};

use super::prober::Stop;
use super::{Probers, probe};

/// An address in the scratch namespace where everything sent vanishes.
const SILENT: &str = "10.9.9.2";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn probe_of(target: &str, kind: CheckKind, interval: Duration, timeout: Duration) -> Probe {
    Probe { target: target.parse().unwrap(), kind, interval, timeout, rise: 2, fall: 3 }
}

/// The first outcome of a prober running `probe`: the same probe on a
/// prober's small stack, in the namespace of the thread that started it.
fn first_outcome(probe: Probe) -> ProbeOutcome {
    let mut probers = Probers::new(10);
    probers.sync(&BTreeSet::from([probe.clone()]));
    let seen = wait_for(&mut probers, ms(2000), |seen| !seen.is_empty());
    assert_eq!(seen[0].0, probe);
    seen[0].1.clone()
}

/// One probe now, as a prober would run it.
fn once(p: &Probe) -> ProbeOutcome {
    let (_keep, rx) = mpsc::channel();
    probe::run(p, &Stop::new(rx))
}

/// A network namespace with only loopback and a link toward [`SILENT`],
/// deleted on drop (also when the test fails).
struct Scratch(Netns);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = 1_000_000 + NEXT.fetch_add(1, Ordering::Relaxed);
        let ns = Netns::add(format!("rvsT{}x{n}-probes", std::process::id())).unwrap();
        let scratch = Self(ns);
        for args in [
            "link add q0 type veth peer name q1",
            "link set q0 up",
            "link set q1 up",
            "addr add 10.9.9.1/24 dev q0",
            "neigh add 10.9.9.2 lladdr 02:00:00:00:00:02 dev q0 nud permanent",
        ] {
            rvs_netns::run(scratch.0.ip().args(args.split(' '))).unwrap();
        }
        scratch
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.0.delete();
    }
}

/// Runs `f` on a thread inside a new scratch namespace; `None` when
/// namespace tests are skipped.
fn in_netns<T: Send>(test: &str, f: impl FnOnce() -> T + Send) -> Option<T> {
    if !rvs_netns::netns_tests_enabled(test) {
        return None;
    }
    let scratch = Scratch::new();
    Some(scratch.0.run_in(f).unwrap())
}

/// Calls `handle` for each connection to `listener` until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start(listener: TcpListener, handle: fn(&mut std::net::TcpStream, &str)) -> Self {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    thread::sleep(ms(2));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(ms(1000))).unwrap();
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                handle(&mut stream, &String::from_utf8_lossy(&request));
            }
        });
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn tcp_probes_see_a_listener_a_refusal_and_silence() {
    in_netns("tcp_probes_see_a_listener_a_refusal_and_silence", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().to_string();
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();

        let up = once(&probe_of(&open, CheckKind::Tcp, ms(1000), ms(500)));
        assert!(up.up && up.detail == "connected", "{up:?}");
        assert!(up.connect.is_some_and(|c| c <= up.latency), "{up:?}");

        let refused = once(&probe_of(&closed, CheckKind::Tcp, ms(1000), ms(500)));
        assert_eq!((refused.up, refused.detail.as_str()), (false, "connection refused"));
        assert!(refused.latency < ms(100), "{refused:?}");

        let silent = once(&probe_of(&format!("{SILENT}:80"), CheckKind::Tcp, ms(1000), ms(300)));
        assert_eq!((silent.up, silent.detail.as_str()), (false, "timed out after 300 ms"));
        assert!((ms(300)..ms(600)).contains(&silent.latency), "{silent:?}");

        let by_prober = first_outcome(probe_of(&open, CheckKind::Tcp, ms(100), ms(100)));
        assert!(by_prober.up && by_prober.connect.is_some(), "{by_prober:?}");
    });
}

fn http_answer(stream: &mut std::net::TcpStream, request: &str) {
    let path = request.split(' ').nth(1).unwrap_or_default();
    let response = match path {
        "/echo" => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{request}", request.len()),
        "/busy" => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy".to_owned(),
        "/stall" => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n");
            thread::sleep(ms(400));
            return;
        }
        _ => "SSH-2.0-nothing\r\n".to_owned(),
    };
    let _ = stream.write_all(response.as_bytes());
}

#[test]
fn http_probes_check_status_and_body() {
    in_netns("http_probes_check_status_and_body", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap().to_string();
        let _server = Server::start(listener, http_answer);
        let get = |path: &str, status: (u16, u16), body: Option<&str>| {
            let kind =
                CheckKind::Http { path: path.to_owned(), status, body: body.map(str::to_owned), host: None };
            once(&probe_of(&target, kind, ms(1000), ms(300)))
        };
        let fine = get("/echo", (200, 399), None);
        assert!(fine.up && fine.detail == "HTTP 200" && fine.connect.is_some(), "{fine:?}");
        let kind = CheckKind::Http {
            path: "/echo".to_owned(),
            status: (200, 200),
            body: Some("rvs".into()),
            host: None,
        };
        assert!(first_outcome(probe_of(&target, kind, ms(100), ms(100))).up);
        // The request the server saw comes back as the body.
        let host = format!("Host: {target}\r\n");
        for text in
            [host.as_str(), "GET /echo HTTP/1.1\r\n", "User-Agent: rvs-health\r\n", "Connection: close\r\n"]
        {
            let o = get("/echo", (200, 399), Some(text));
            assert!(o.up, "{text:?}: {o:?}");
        }
        let missing = get("/echo", (200, 399), Some("healthy"));
        assert_eq!(
            (missing.up, missing.detail.as_str()),
            (false, "HTTP 200 without \"healthy\" in the body")
        );

        let busy = get("/busy", (200, 399), None);
        assert_eq!((busy.up, busy.detail.as_str()), (false, "HTTP 503"));
        assert!(busy.connect.is_some());
        assert!(get("/busy", (503, 503), Some("busy")).up);
        assert!(!get("/echo", (500, 599), None).up);

        let stalled = get("/stall", (200, 399), Some("never"));
        assert_eq!((stalled.up, stalled.detail.as_str()), (false, "HTTP 200, then timed out after 300 ms"));
        assert!(stalled.latency < ms(600), "{stalled:?}");
        let other = get("/ssh", (200, 399), None);
        assert!(!other.up && other.detail.starts_with("not an HTTP status line"), "{other:?}");
    });
}

#[test]
fn udp_probes_wait_for_a_reply_and_see_port_unreachable() {
    in_netns("udp_probes_wait_for_a_reply_and_see_port_unreachable", || {
        let responder = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = responder.local_addr().unwrap().to_string();
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        responder.set_read_timeout(Some(ms(20))).unwrap();
        let stop = AtomicBool::new(false);
        let end = Instant::now() + ms(5000);
        thread::scope(|s| {
            s.spawn(|| {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    if let Ok((n, from)) = responder.recv_from(&mut buf) {
                        let reply = [b"pong ", &buf[..n]].concat();
                        let _ = responder.send_to(&reply, from);
                    }
                }
            });
            let udp = |target: &str, expect: Option<&str>| {
                let kind = CheckKind::Udp { payload: "ping".to_owned(), expect: expect.map(str::to_owned) };
                once(&probe_of(target, kind, ms(1000), ms(300)))
            };
            let any = udp(&target, None);
            assert_eq!((any.up, any.detail.as_str()), (true, "reply of 9 bytes"));
            assert!(udp(&target, Some("pong ping")).up);
            let kind = CheckKind::Udp { payload: "ping".to_owned(), expect: None };
            assert!(first_outcome(probe_of(&target, kind, ms(100), ms(100))).up);
            let wrong = udp(&target, Some("hello"));
            assert_eq!((wrong.up, wrong.detail.as_str()), (false, "no reply holding \"hello\""));

            let unreachable = udp(&closed, None);
            assert_eq!((unreachable.up, unreachable.detail.as_str()), (false, "port unreachable"));
            assert!(unreachable.latency < ms(100), "{unreachable:?}");
            let silent = udp(&format!("{SILENT}:53"), None);
            assert_eq!((silent.up, silent.detail.as_str()), (false, "no reply within 300 ms"));
            assert!((ms(300)..ms(600)).contains(&silent.latency), "{silent:?}");
            stop.store(true, Ordering::Relaxed);
        });
    });
}

#[test]
fn exec_probes_see_the_real_exit_codes_and_a_timeout() {
    let exec = |command: &str, timeout: Duration| {
        let kind = CheckKind::Exec { command: command.to_owned() };
        once(&probe_of("10.1.2.3:8080", kind, ms(5000), timeout))
    };
    let env = exec(r#"test "$RVS_REAL_ADDR" = 10.1.2.3 && test "$RVS_REAL_PORT" = 8080"#, ms(2000));
    assert_eq!((env.up, env.detail.as_str(), env.connect), (true, "exit status 0", None));
    let failed = exec("echo; echo '  backend broken  ' >&2; exit 3", ms(2000));
    assert_eq!((failed.up, failed.detail.as_str()), (false, "exit status 3: backend broken"));
    let chatty = exec("head -c 300000 /dev/zero | tr '\\0' x >&2", ms(2000));
    assert!(chatty.up && chatty.detail.len() < 300, "a full stderr pipe must not block: {chatty:?}");

    // The whole process group goes at the timeout, not only the shell.
    let dir = TempDir::new("rvs-exec-probe-").unwrap();
    let pid_file = dir.path().join("pid");
    let hung = exec(&format!("sleep 30 & echo $! > {}; wait", pid_file.display()), ms(300));
    assert_eq!((hung.up, hung.detail.as_str()), (false, "killed after timeout"));
    assert!((ms(300)..ms(700)).contains(&hung.latency), "{hung:?}");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let end = Instant::now() + ms(1000);
    let gone = loop {
        // A killed orphan may linger as a zombie until init reaps it.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
        if state.is_none_or(|c| c == 'Z') || Instant::now() > end {
            break state.is_none_or(|c| c == 'Z');
        }
        thread::sleep(ms(10));
    };
    assert!(gone, "sleep {pid} survived its probe");

    // Stopping a prober ends its command at once, whatever the timeout.
    let pid_file = dir.path().join("stopped");
    let command = format!("echo $$ > {}; exec sleep 30", pid_file.display());
    let mut probers = Probers::new(0);
    probers.sync(&BTreeSet::from([probe_of("10.1.2.3:80", CheckKind::Exec { command }, ms(50), ms(30_000))]));
    let end = Instant::now() + ms(2000);
    while std::fs::read_to_string(&pid_file).map_or(true, |p| !p.ends_with('\n')) && Instant::now() < end {
        thread::sleep(ms(5));
    }
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let start = Instant::now();
    drop(probers);
    assert!(start.elapsed() < ms(300), "{:?}", start.elapsed());
    assert!(!std::path::Path::new(&format!("/proc/{}", pid.trim())).exists(), "the shell was reaped");
}

#[test]
fn odd_probes_end_down_and_never_panic() {
    in_netns("odd_probes_end_down_and_never_panic", odd_probes);
}

fn odd_probes() {
    let closed = "127.0.0.1:9";
    let zero = once(&probe_of(closed, CheckKind::Tcp, Duration::ZERO, Duration::ZERO));
    assert_eq!((zero.up, zero.detail.as_str()), (false, "timed out after 0 ms"));
    let http =
        CheckKind::Http { path: String::new(), status: (300, 200), body: Some(String::new()), host: None };
    assert!(!once(&probe_of(closed, http, Duration::MAX, ms(200))).up);
    let udp = CheckKind::Udp { payload: String::new(), expect: None };
    assert!(!once(&probe_of("[::1]:9", udp, Duration::MAX, ms(200))).up);
    assert!(once(&probe_of(closed, CheckKind::Exec { command: String::new() }, Duration::ZERO, ms(500))).up);

    let mut probers = Probers::new(u32::MAX);
    let forever = probe_of(closed, CheckKind::Tcp, Duration::MAX, Duration::MAX);
    probers.sync(&BTreeSet::from([forever, probe_of(closed, CheckKind::None, ms(10), ms(10))]));
    assert_eq!(probers.probers.len(), 1, "none is never run");
    assert!(probers.drain().is_empty() && probers.stuck(Instant::now()).is_empty());
    let start = Instant::now();
    drop(probers);
    assert!(start.elapsed() < ms(200));
}

/// A stand-in probe's start: on which thread, when.
type Run = (thread::ThreadId, Instant);

/// Where each stand-in probe ran, by target.
static RUNS: LazyLock<Mutex<BTreeMap<SocketAddr, Vec<Run>>>> = LazyLock::new(Mutex::default);

fn runs(target: &Probe) -> Vec<Run> {
    RUNS.lock().unwrap().get(&target.target).cloned().unwrap_or_default()
}

/// A stand-in probe: records itself, then does what its exec command says
/// (`ok`, `freeze` past its timeout until stopped, or `die`).
fn stand_in(p: &Probe, stop: &Stop) -> ProbeOutcome {
    RUNS.lock().unwrap().entry(p.target).or_default().push((thread::current().id(), Instant::now()));
    match &p.kind {
        CheckKind::Exec { command } if command == "freeze" => {
            stop.wait(Duration::from_secs(60));
        }
        CheckKind::Exec { command } if command == "die" => panic!("a prober's thread dies"),
        _ => {}
    }
    ProbeOutcome {
        up: true,
        latency: Duration::ZERO,
        connect: None,
        detail: format!("{:?}", thread::current().id()),
    }
}

fn stand_in_probe(target: &str, what: &str, interval: Duration) -> Probe {
    probe_of(target, CheckKind::Exec { command: what.to_owned() }, interval, interval / 2)
}

/// Drains `probers` until `done` holds for all outcomes seen, at most `limit`.
fn wait_for(
    probers: &mut Probers,
    limit: Duration,
    done: impl Fn(&[(Probe, ProbeOutcome)]) -> bool,
) -> Vec<(Probe, ProbeOutcome)> {
    let end = Instant::now() + limit;
    let mut seen = Vec::new();
    while !done(&seen) && Instant::now() < end {
        thread::sleep(ms(10));
        seen.extend(probers.drain());
    }
    assert!(done(&seen), "not within {limit:?}: {seen:?}");
    seen
}

#[test]
fn sync_keeps_running_probers_and_stops_removed_ones() {
    let a = stand_in_probe("192.0.2.1:1", "ok", ms(40));
    let b = stand_in_probe("192.0.2.1:2", "ok", ms(40));
    let c = stand_in_probe("192.0.2.1:3", "ok", ms(40));
    let mut probers = Probers::with_runner(10, stand_in);
    probers.sync(&BTreeSet::from([a.clone(), b.clone()]));
    let has = |seen: &[(Probe, ProbeOutcome)], p: &Probe| seen.iter().any(|(q, _)| q == p);
    let seen = wait_for(&mut probers, ms(1000), |s| has(s, &a) && has(s, &b));
    let thread_of_a = seen.iter().find(|(p, _)| *p == a).map(|(_, o)| o.detail.clone()).unwrap();

    probers.sync(&BTreeSet::from([a.clone(), c.clone()]));
    thread::sleep(ms(100));
    let b_runs = runs(&b).len();
    let a_runs = runs(&a).len();
    // The kept prober goes on probing (and reporting, on the same thread).
    let seen = wait_for(&mut probers, ms(1000), |s| runs(&a).len() >= a_runs + 3 && has(s, &c));
    assert!(!has(&seen, &b), "a removed prober reports nothing");
    assert!(seen.iter().filter(|(p, _)| *p == a).all(|(_, o)| o.detail == thread_of_a), "a kept its thread");
    assert_eq!(runs(&b).len(), b_runs, "a removed prober probes no more");

    // Put back, b is a new prober: a new thread, a new first probe.
    probers.sync(&BTreeSet::from([a.clone(), b.clone(), c.clone()]));
    let seen = wait_for(&mut probers, ms(1000), |s| has(s, &b));
    let (_, again) = seen.iter().find(|(p, _)| *p == b).unwrap();
    assert_ne!(format!("{:?}", runs(&b)[0].0), again.detail);
    probers.sync(&BTreeSet::new());
    assert!(probers.probers.is_empty() && probers.drain().is_empty());
}

#[test]
fn jitter_spreads_first_probes_and_intervals() {
    let mut probers = Probers::with_runner(50, stand_in);
    let many: BTreeSet<Probe> =
        (1..=20).map(|i| stand_in_probe(&format!("192.0.2.2:{i}"), "ok", ms(600))).collect();
    let steady = stand_in_probe("192.0.2.3:1", "ok", ms(60));
    let start = Instant::now();
    probers.sync(&many.iter().cloned().chain([steady.clone()]).collect());
    thread::sleep(ms(900));
    drop(probers);

    let firsts: Vec<Duration> = many.iter().map(|p| runs(p)[0].1 - start).collect();
    let (first, last) = (firsts.iter().min().unwrap(), firsts.iter().max().unwrap());
    assert!(*last < ms(650), "first probes come within one interval: {firsts:?}");
    assert!(*last - *first > ms(200), "first probes spread: {firsts:?}");

    let starts: Vec<Instant> = runs(&steady).iter().map(|r| r.1).collect();
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 8, "{gaps:?}");
    assert!(gaps.iter().all(|g| (ms(29)..ms(150)).contains(g)), "intervals within ± 50 %: {gaps:?}");
    let (short, long) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
    assert!(*long - *short > ms(15), "intervals spread: {gaps:?}");
}

#[test]
fn stuck_reports_frozen_and_dead_probers_and_drop_ends_them() {
    let healthy = stand_in_probe("192.0.2.4:1", "ok", ms(100));
    let frozen = stand_in_probe("192.0.2.4:2", "freeze", ms(100));
    let dead = stand_in_probe("192.0.2.4:3", "die", ms(100));
    let mut probers = Probers::with_runner(10, stand_in);
    probers.sync(&BTreeSet::from([healthy.clone(), frozen.clone(), dead.clone()]));

    let end = Instant::now() + ms(3000);
    let stuck = loop {
        let stuck = probers.stuck(Instant::now());
        if stuck.len() >= 2 || Instant::now() > end {
            break stuck;
        }
        thread::sleep(ms(20));
    };
    assert_eq!(stuck, vec![frozen.clone(), dead.clone()]);
    let frozen_since = runs(&frozen)[0].1;
    assert!(frozen_since.elapsed() > ms(1040), "stuck only past timeout + grace");
    assert_eq!(runs(&frozen).len(), 1, "no second probe while the first runs");

    let start = Instant::now();
    drop(probers);
    assert!(start.elapsed() < ms(200), "stopping ends even a frozen probe: {:?}", start.elapsed());
}
