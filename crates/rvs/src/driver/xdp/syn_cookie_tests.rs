//! The SYN-cookie stage of `steer` run by the kernel (`BPF_PROG_TEST_RUN`)
//! on SYNs and ACKs built here, against the engine's own answer to the same
//! packets at the same `now`: the SYN-ACK's bytes must be identical, the
//! engine must accept the ACK that answers it, and bad or expired cookies
//! die in the program, counted. Needs the right to load BPF programs;
//! skipped without it.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{HashMap, PerCpuArray};
use aya::programs::Xdp;
use rvs_control::model::{Model, ServiceSpec};
use rvs_core::{
    Endpoint, Engine, EngineConfig, FlowKey, Instant, Proto, RealConfig, ServiceConfig, Side, Verdict,
};

use super::Steering;
use super::fast_path::stat::{SC_ACKS_PASSED, SC_BAD_COOKIE, SC_NO_KEY, SC_RST_PASSED, SC_SYNACKS};
use super::fast_path::{BpfFlowKey, BpfFlowRule, FAST_PATH_ON, SYN_COOKIES_ON};
use crate::driver::devices::monotonic_ns;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// A 64 ms boundary, below 2^32 ms, 8 s into a 32 s cookie step.
const T0: Instant = Instant::from_secs(4_000_040);
/// Families: (client, VIP, LIP, real).
const FAMILIES: [(&str, &str, &str, &str); 2] = [
    ("10.77.0.2", "10.77.2.1", "10.77.3.1", "10.77.1.11"),
    ("fd10:77:0::2", "fd10:77:2::1", "fd10:77:3::1", "fd10:77:1::11"),
];

fn ep(addr: &str, port: u16) -> Endpoint {
    Endpoint::new(addr.parse().unwrap(), port)
}

/// The program with a SYNProxy service on each family's VIP port 80, and an
/// engine with the same services (`cfg` changes its config), or `None`
/// without the right to load BPF programs.
struct Lab {
    steering: Steering,
    steer: libc::c_int,
    engine: Engine,
}

impl Lab {
    fn new(cfg: impl FnOnce(&mut EngineConfig)) -> Option<Self> {
        let mut steering = match Steering::load(2) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("SYN-cookie tests skipped: {e}");
                return None;
            }
        };
        let mut config = EngineConfig::default();
        cfg(&mut config);
        let mut engine = Engine::new(config, [7; 32], T0);
        let mut model = Model::default();
        for (_, vip, lip, real) in FAMILIES {
            let mut service = ServiceConfig::new(Proto::Tcp, ep(vip, 80));
            service.laddrs.push(lip.parse().unwrap());
            service.synproxy = true;
            engine.add_service(service.clone()).unwrap();
            engine
                .add_real(Proto::Tcp, ep(vip, 80), RealConfig { endpoint: ep(real, 8080), weight: 1 })
                .unwrap();
            model.services.insert((Proto::Tcp, service.vip), ServiceSpec::new(service));
        }
        steering.sync(&model).unwrap();
        steering.set_stages(FAST_PATH_ON | SYN_COOKIES_ON).unwrap();
        let xdp: &mut Xdp = steering.ebpf.program_mut("steer").unwrap().try_into().unwrap();
        xdp.load().unwrap();
        let steer = xdp.fd().unwrap().as_fd().as_raw_fd();
        let mut lab = Self { steering, steer, engine };
        lab.set_now(T0);
        Some(lab)
    }

    /// Make the program's clock read about `now` (from a moment later),
    /// with the engine's keys for it.
    fn set_now(&mut self, now: Instant) {
        let offset = now.as_nanos().wrapping_sub(monotonic_ns());
        let cookies = self.steering.syn_cookies();
        cookies.set_clock_offset(offset).unwrap();
        cookies.sync(&self.engine, now).unwrap();
    }

    /// Counter `index` of `fast_stats`, summed over CPUs.
    fn stat(&self, index: u32) -> u64 {
        let map = self.steering.ebpf.map("fast_stats").unwrap();
        let stats: PerCpuArray<_, u64> = PerCpuArray::try_from(map).unwrap();
        stats.get(&index, 0).unwrap().iter().sum()
    }

    /// The kind of the `flows` entry of `key` (1 forward, 2 engine), if any.
    fn flow_kind(&self, key: &FlowKey) -> Option<u8> {
        let map = self.steering.ebpf.map("flows").unwrap();
        let flows: HashMap<_, BpfFlowKey, [u8; size_of::<BpfFlowRule>()]> = HashMap::try_from(map).unwrap();
        // `kind` follows the addresses, ports and four offsets.
        flows.get(&BpfFlowKey::new(key), 0).ok().map(|rule| rule[52])
    }

    /// Run `steer` on an Ethernet frame carrying `ip`: its action and frame.
    fn run(&self, ip: &[u8]) -> (u32, Vec<u8>) {
        let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        frame.extend_from_slice(if ip[0] >> 4 == 6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
        frame.extend_from_slice(ip);
        test_run(self.steer, &frame)
    }

    /// Everything the engine built.
    fn built(&mut self) -> Vec<(Vec<u8>, Side)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Some((len, side)) = self.engine.poll_transmit(&mut buf) {
            out.push((buf[..len].to_vec(), side));
        }
        out
    }
}

/// Run program `fd` once on `data`: its return value and the frame after it.
fn test_run(fd: libc::c_int, data: &[u8]) -> (u32, Vec<u8>) {
    /// The `test` member of `union bpf_attr` (`linux/bpf.h`).
    #[repr(C)]
    #[derive(Default)]
    struct TestRun {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let mut out = vec![0u8; 512];
    let mut attr = TestRun {
        prog_fd: fd as u32,
        data_size_in: data.len() as u32,
        data_size_out: out.len() as u32,
        data_in: data.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRun::default()
    };
    // SAFETY: `attr` is a valid BPF_PROG_TEST_RUN attribute whose input
    // points at `data` and output at `out` (of the sizes given), all alive
    // for the call.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &raw mut attr, size_of::<TestRun>() as libc::c_uint)
    };
    assert_eq!(rc, 0, "BPF_PROG_TEST_RUN: {}", std::io::Error::last_os_error());
    out.truncate(attr.data_size_out as usize);
    (attr.retval, out)
}

/// A TCP segment in an IP packet from `src` to `dst` with raw options
/// (a multiple of 4 bytes); checksums are left zero (nothing checks them).
fn segment(src: Endpoint, dst: Endpoint, seq: u32, ack: Option<u32>, syn: bool, opts: &[u8]) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20 + opts.len());
    tcp.extend_from_slice(&src.port.to_be_bytes());
    tcp.extend_from_slice(&dst.port.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.unwrap_or(0).to_be_bytes());
    let flags = (u8::from(syn) << 1) | (u8::from(ack.is_some()) << 4);
    tcp.extend_from_slice(&[(((20 + opts.len()) / 4) << 4) as u8, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    tcp.extend_from_slice(opts);
    let mut p = match (src.addr, dst.addr) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = 20 + tcp.len();
            let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0x12, 0x34, 0x40, 0, 61, 6, 0, 0];
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0x60, 0, 0, 0, 0, tcp.len() as u8, 6, 61];
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p
        }
        _ => panic!("mixed families"),
    };
    p.extend_from_slice(&tcp);
    p
}

/// The options of a client's SYN: MSS, SACK permitted, timestamps, window scale.
fn syn_options(mss: Option<u16>, wscale: Option<u8>, sack: bool, tsval: Option<u32>) -> Vec<u8> {
    let mut o = Vec::new();
    if let Some(m) = mss {
        o.extend_from_slice(&[2, 4, (m >> 8) as u8, m as u8]);
    }
    if sack {
        o.extend_from_slice(&[1, 1, 4, 2]);
    }
    if let Some(v) = tsval {
        o.extend_from_slice(&[1, 1, 8, 10]);
        o.extend_from_slice(&v.to_be_bytes());
        o.extend_from_slice(&0u32.to_be_bytes());
    }
    if let Some(w) = wscale {
        o.extend_from_slice(&[1, 3, 3, w]);
    }
    o
}

/// The TSval of a SYN-ACK's timestamps option (laid out as the engine lays
/// it out: at offset 4 of the options), if any.
fn synack_tsval(ip: &[u8]) -> Option<u32> {
    let tcp = &ip[if ip[0] >> 4 == 6 { 40 } else { 20 }..];
    let opts = &tcp[20..usize::from(tcp[12] >> 4) * 4];
    (opts.len() >= 16 && opts[6] == 8).then(|| u32::from_be_bytes(opts[8..12].try_into().unwrap()))
}

/// The SYN-ACK's sequence number (the cookie).
fn synack_seq(ip: &[u8]) -> u32 {
    let tcp = &ip[if ip[0] >> 4 == 6 { 40 } else { 20 }..];
    u32::from_be_bytes(tcp[4..8].try_into().unwrap())
}

/// The client's ACK answering a SYN-ACK with `cookie`, echoing `tsecr`.
fn answer(client: Endpoint, vip: Endpoint, isn: u32, cookie: u32, tsecr: Option<u32>) -> Vec<u8> {
    let opts = tsecr.map_or_else(Vec::new, |e| {
        let mut o = vec![1, 1, 8, 10];
        o.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        o.extend_from_slice(&e.to_be_bytes());
        o
    });
    segment(client, vip, isn.wrapping_add(1), Some(cookie.wrapping_add(1)), false, &opts)
}

/// Answer a SYN in the program: the SYN-ACK's IP packet.
fn xdp_synack(lab: &Lab, syn: &[u8]) -> Vec<u8> {
    let (action, frame) = lab.run(syn);
    assert_eq!(action, XDP_TX, "SYN not answered");
    assert_eq!(&frame[..12], &[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1], "MACs swapped");
    frame[14..].to_vec()
}

#[test]
fn syn_acks_are_the_engines_byte_for_byte_and_their_acks_open_connections() {
    let Some(mut lab) = Lab::new(|_| {}) else { return };
    let mut port = 40_000;
    for (client, vip, _, _) in FAMILIES {
        for bits in 0..16u8 {
            let (client, vip) = (ep(client, port), ep(vip, 80));
            port += 1;
            let mss = (bits & 1 != 0).then_some(1400);
            let wscale = (bits & 2 != 0).then_some(9);
            let sack = bits & 4 != 0;
            let tsval = (bits & 8 != 0).then_some(0xa0b0_c0d0);
            let isn = 0x1000_0000 * u32::from(bits) + 77;
            let syn = segment(client, vip, isn, None, true, &syn_options(mss, wscale, sack, tsval));
            lab.set_now(T0);
            let sent = lab.stat(SC_SYNACKS);
            let xdp = xdp_synack(&lab, &syn);
            assert_eq!(lab.stat(SC_SYNACKS), sent + 1);
            // The program's clock ran on a little from T0. Only the TSval
            // shows it, in ms with the low 6 bits holding options: the
            // engine at that ms gives the same SYN-ACK.
            let now =
                synack_tsval(&xdp).map_or(T0, |ts| Instant::from_nanos(u64::from(ts & !63) * 1_000_000));
            assert_eq!(lab.engine.handle(now, &mut syn.clone()), Verdict::Absorbed);
            let built = lab.built();
            assert_eq!(built.len(), 1);
            assert_eq!(built[0].1, Side::Client);
            assert_eq!(xdp, built[0].0, "{client} {mss:?} {wscale:?} sack {sack} ts {tsval:?}");

            // The client's ACK passes the program, counted, and the engine opens the connection.
            let ack = answer(client, vip, isn, synack_seq(&xdp), synack_tsval(&xdp));
            let passed = lab.stat(SC_ACKS_PASSED);
            assert_eq!(lab.run(&ack).0, XDP_PASS);
            assert_eq!(lab.stat(SC_ACKS_PASSED), passed + 1);
            // From now on the flow's packets, a SYN again among them, go to the engine.
            let key = FlowKey { proto: Proto::Tcp, src: client, dst: vip };
            assert_eq!(lab.flow_kind(&key), Some(2));
            let sent = lab.stat(SC_SYNACKS);
            assert_eq!(lab.run(&syn).0, XDP_PASS);
            assert_eq!(lab.stat(SC_SYNACKS), sent);
            let conns = lab.engine.conn_count();
            assert_eq!(lab.engine.handle(now, &mut ack.clone()), Verdict::Absorbed);
            assert_eq!(lab.engine.conn_count(), conns + 1, "{client}: the engine refused the cookie");
            lab.built();
        }
    }
    assert_eq!(lab.engine.synproxy_stats().cookies_accepted, 32);
}

#[test]
fn bad_and_expired_cookies_die_in_the_program_and_keys_rotate() {
    let Some(mut lab) = Lab::new(|c| c.synproxy.rst_on_bad_cookie = false) else { return };
    // One second before a key period ends.
    let t1 = Instant::from_secs(4_000_000 + 255);
    for (i, (client, vip, _, _)) in FAMILIES.into_iter().enumerate() {
        for ts in [None, Some(5u32)] {
            let port = 41_000 + 10 * i as u16 + u16::from(ts.is_some());
            let (a, b, vip) = (ep(client, port), ep(client, port + 5), ep(vip, 80));
            lab.set_now(t1);
            let opts = syn_options(Some(1460), Some(7), true, ts);
            let cookie_a = synack_seq(&xdp_synack(&lab, &segment(a, vip, 100, None, true, &opts)));
            let synack_b = xdp_synack(&lab, &segment(b, vip, 200, None, true, &opts));
            let (cookie_b, tsecr) = (synack_seq(&synack_b), synack_tsval(&synack_b));
            let tsecr_a =
                tsecr.map(|_| synack_tsval(&xdp_synack(&lab, &segment(a, vip, 100, None, true, &opts))));

            // A random cookie dies in the program, as the engine's bad_cookie.
            let bad = lab.stat(SC_BAD_COOKIE);
            let random = answer(a, vip, 100, cookie_a ^ 0x5a5a_0000, tsecr);
            assert_eq!(lab.run(&random).0, XDP_DROP);
            assert_eq!(lab.stat(SC_BAD_COOKIE), bad + 1);
            assert!(matches!(lab.engine.handle(t1, &mut random.clone()), Verdict::Drop(_)));

            // 90 s later the key period changed: the previous period's
            // cookie still passes, with the keys rotated under it.
            let t2 = t1 + std::time::Duration::from_secs(90);
            lab.set_now(t2);
            let passed = lab.stat(SC_ACKS_PASSED);
            let ack = answer(a, vip, 100, cookie_a, tsecr_a.flatten());
            assert_eq!(lab.run(&ack).0, XDP_PASS);
            assert_eq!(lab.stat(SC_ACKS_PASSED), passed + 1);
            assert_eq!(lab.engine.handle(t2, &mut ack.clone()), Verdict::Absorbed);
            lab.built();

            // 200 s on it is too old.
            let t3 = t1 + std::time::Duration::from_secs(200);
            lab.set_now(t3);
            let late = answer(b, vip, 200, cookie_b, tsecr);
            assert_eq!(lab.run(&late).0, XDP_DROP);
            assert_eq!(lab.stat(SC_BAD_COOKIE), bad + 2);
            assert!(matches!(lab.engine.handle(t3, &mut late.clone()), Verdict::Drop(_)));

            // Without the key of its period, a cookie young enough goes to the engine
            // (the ACK of b, whose flow has no entry, at 90 s).
            lab.set_now(t2);
            let far = lab.engine.cookie_keys(t1 + std::time::Duration::from_secs(10 * 256));
            lab.steering.syn_cookies().set_keys(&far).unwrap();
            let no_key = lab.stat(SC_NO_KEY);
            assert_eq!(lab.run(&late).0, XDP_PASS);
            assert_eq!(lab.stat(SC_NO_KEY), no_key + 1);
        }
    }
    assert_eq!(lab.engine.synproxy_stats().cookies_accepted, 4);
}

#[test]
fn with_rst_on_bad_cookie_the_engine_answers_bad_cookies() {
    let Some(lab) = Lab::new(|c| c.synproxy.rst_on_bad_cookie = true) else { return };
    for (client, vip, _, _) in FAMILIES {
        let (client, vip) = (ep(client, 42_000), ep(vip, 80));
        let (bad, passed) = (lab.stat(SC_BAD_COOKIE), lab.stat(SC_RST_PASSED));
        assert_eq!(lab.run(&answer(client, vip, 1, 0xdead_beef, None)).0, XDP_PASS);
        assert_eq!(lab.stat(SC_BAD_COOKIE), bad);
        assert_eq!(lab.stat(SC_RST_PASSED), passed + 1);
    }
}

/// Keep the calling thread on the CPU it runs on, so that every run of
/// the program meets the same per-CPU bucket.
fn stay_on_this_cpu() {
    // SAFETY: sched_getcpu has no preconditions; `set` is a valid CPU set
    // for sched_setaffinity on the calling thread (pid 0).
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(cpu >= 0, "sched_getcpu: {}", std::io::Error::last_os_error());
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        let rc = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set);
        assert_eq!(rc, 0, "sched_setaffinity: {}", std::io::Error::last_os_error());
    }
}

#[test]
fn bad_cookies_reach_the_engine_for_an_rst_only_at_its_rst_rate() {
    let cpus = aya::util::nr_cpus().unwrap() as u32;
    // Four RSTs a second on each CPU: one token every 250 ms.
    let rate = 4 * cpus;
    let Some(mut lab) = Lab::new(|c| {
        c.synproxy.rst_on_bad_cookie = true;
        c.reset_rate = rate;
    }) else {
        return;
    };
    stay_on_this_cpu();
    let burst = lab.steering.syn_cookies().rst_share(rate).burst();
    assert_eq!(burst, 4);
    let (client, vip) = (ep(FAMILIES[0].0, 47_000), ep(FAMILIES[0].1, 80));
    // The program's clock held at `now` for each packet (the bucket earns
    // nothing in the microseconds between).
    let flood = |lab: &mut Lab, now: Instant, n: u32| {
        let (passed, dropped) = (lab.stat(SC_RST_PASSED), lab.stat(SC_BAD_COOKIE));
        for i in 0..n {
            lab.set_now(now);
            let action = lab.run(&answer(client, vip, i, 0xdead_0000 + i, None)).0;
            assert!(action == XDP_PASS || action == XDP_DROP, "{action}");
        }
        let passed = lab.stat(SC_RST_PASSED) - passed;
        assert_eq!(passed + lab.stat(SC_BAD_COOKIE) - dropped, u64::from(n), "each counted once");
        passed
    };
    // A burst: the bucket's worth passes, the rest dies as bad_cookie.
    assert_eq!(flood(&mut lab, T0, 20), burst);
    assert_eq!(flood(&mut lab, T0, 5), 0);
    // A valid cookie is never held back.
    let opts = syn_options(Some(1460), None, false, None);
    let good = ep(FAMILIES[0].0, 47_100);
    lab.set_now(T0);
    let cookie = synack_seq(&xdp_synack(&lab, &segment(good, vip, 500, None, true, &opts)));
    let acks = lab.stat(SC_ACKS_PASSED);
    assert_eq!(lab.run(&answer(good, vip, 500, cookie, None)).0, XDP_PASS);
    assert_eq!(lab.stat(SC_ACKS_PASSED), acks + 1);
    // 600 ms on: two tokens earned (one each 250 ms).
    let later = T0 + std::time::Duration::from_millis(600);
    assert_eq!(flood(&mut lab, later, 5), 2);
    // The 100 ms left over count toward the next: 150 ms more earn one.
    assert_eq!(flood(&mut lab, later + std::time::Duration::from_millis(150), 5), 1);
    // Long idle fills the bucket, no fuller than its burst.
    assert_eq!(flood(&mut lab, T0 + std::time::Duration::from_secs(60), 20), burst);
    // A clock seen running back earns nothing.
    assert_eq!(flood(&mut lab, T0 + std::time::Duration::from_secs(30), 5), 0);
    // The engine answers each one passed with its own RST.
    lab.set_now(T0);
    let ack = answer(client, vip, 1, 0xdead_0001, None);
    assert!(matches!(lab.engine.handle(T0, &mut ack.clone()), Verdict::Drop(_)));
    let built = lab.built();
    assert_eq!(built.len(), 1);
    assert_eq!(built[0].0[33] & 0x04, 0x04, "an RST");
}

#[test]
fn with_a_reset_rate_of_0_every_bad_cookie_dies_in_the_program() {
    let Some(lab) = Lab::new(|c| {
        c.synproxy.rst_on_bad_cookie = true;
        c.reset_rate = 0;
    }) else {
        return;
    };
    for (client, vip, _, _) in FAMILIES {
        let (client, vip) = (ep(client, 48_000), ep(vip, 80));
        for i in 0..3 {
            let bad = lab.stat(SC_BAD_COOKIE);
            assert_eq!(lab.run(&answer(client, vip, i, 0xdead_beef, None)).0, XDP_DROP);
            assert_eq!(lab.stat(SC_BAD_COOKIE), bad + 1);
        }
    }
    assert_eq!(lab.stat(SC_RST_PASSED), 0);
}

#[test]
fn what_the_program_does_not_answer_exactly_goes_on_to_steering() {
    let Some(lab) = Lab::new(|_| {}) else { return };
    let (client, vip) = (ep(FAMILIES[0].0, 43_000), ep(FAMILIES[0].1, 80));
    let opts = syn_options(Some(1460), None, false, None);
    let syn = segment(client, vip, 1, None, true, &opts);
    // IPv4 options; a fragment; TTL 1; SYN with FIN; a truncated segment;
    // another port of the VIP (no template).
    let mut with_options = syn.clone();
    with_options[0] = 0x46;
    let mut fragment = syn.clone();
    fragment[6] = 0x20;
    let mut ttl1 = syn.clone();
    ttl1[8] = 1;
    let mut syn_fin = syn.clone();
    syn_fin[33] |= 1;
    let mut truncated = syn.clone();
    truncated[3] += 8;
    let other_port = segment(client, ep(FAMILIES[0].1, 81), 1, None, true, &opts);
    for p in [with_options, fragment, ttl1, syn_fin, truncated, other_port] {
        assert_eq!(lab.run(&p).0, XDP_PASS, "{p:02x?}");
    }
    assert_eq!(lab.stat(SC_SYNACKS), 0);
    // With the stage off, even a plain SYN is steered.
    let mut lab = lab;
    lab.steering.set_stages(0).unwrap();
    assert_eq!(lab.run(&syn).0, XDP_PASS);
    assert_eq!(lab.stat(SC_SYNACKS), 0);
}

#[test]
fn odd_option_layouts_are_answered_as_the_engine_answers_them_or_left_to_it() {
    let Some(mut lab) = Lab::new(|_| {}) else { return };
    let answered: [&[u8]; 6] = [
        // A window scale above 14 (taken as 14); EOL then padding.
        &[1, 3, 3, 20, 2, 4, 5, 0x50, 0, 9, 9, 9],
        // A malformed MSS ends the options: the scale after it does not count.
        &[4, 2, 2, 3, 5, 0, 1, 3, 3, 7, 0, 0],
        // A later MSS wins; a SACK block is read past.
        &[2, 4, 1, 0, 2, 4, 5, 0, 1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2],
        // Timestamps without NOPs before them, then a window scale.
        &[8, 10, 0, 0, 0, 9, 0, 0, 0, 0, 3, 3, 2, 0],
        // A window scale of the wrong length stops the reading.
        &[2, 4, 5, 0xb4, 4, 2, 3, 6, 1, 0, 0, 0],
        // So does one running past the area's end.
        &[2, 4, 5, 0xb4, 1, 1, 8, 10, 0, 0, 0, 1],
    ];
    let left: [&[u8]; 2] = [
        // An unknown option (MPTCP) before the rest.
        &[30, 4, 0, 0, 2, 4, 5, 0xb4],
        // More options than the program reads.
        &[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    ];
    for (client, vip, _, _) in FAMILIES {
        for (i, opts) in answered.iter().chain(&left).enumerate() {
            let mut opts = opts.to_vec();
            opts.resize(opts.len().div_ceil(4) * 4, 0);
            let syn = segment(ep(client, 44_000 + i as u16), ep(vip, 80), 9, None, true, &opts);
            lab.set_now(T0);
            if i >= answered.len() {
                assert_eq!(lab.run(&syn).0, XDP_PASS, "{opts:?}");
                continue;
            }
            let xdp = xdp_synack(&lab, &syn);
            let now =
                synack_tsval(&xdp).map_or(T0, |ts| Instant::from_nanos(u64::from(ts & !63) * 1_000_000));
            assert_eq!(lab.engine.handle(now, &mut syn.clone()), Verdict::Absorbed);
            assert_eq!(lab.built()[0].0, xdp, "{client} {opts:?}");
        }
    }
}

#[test]
fn acks_of_a_flow_handed_back_to_the_engine_are_not_checked_as_cookies() {
    let Some(mut lab) = Lab::new(|c| c.synproxy.rst_on_bad_cookie = false) else { return };
    let (client, vip) = (ep(FAMILIES[1].0, 46_000), ep(FAMILIES[1].1, 80));
    let key = FlowKey { proto: Proto::Tcp, src: client, dst: vip };
    // An ACK of a connection the fast path let go (a FIN seen, its rules
    // removed): the engine holds the connection, not a cookie.
    let late_ack = answer(client, vip, 7_000, 0x1234_5678, None);
    assert_eq!(lab.run(&late_ack).0, XDP_DROP, "without an entry it is a bad cookie");
    let mut maps = lab.steering.take_fast_path().unwrap();
    maps.hand_to_engine(&key).unwrap();
    let bad = maps.stats().unwrap()[SC_BAD_COOKIE as usize];
    assert_eq!(lab.run(&late_ack).0, XDP_PASS);
    assert_eq!(maps.stats().unwrap()[SC_BAD_COOKIE as usize], bad);
}
