//! The fast path against the engine: connections are driven to Established
//! through `rvs_core::Engine`, their rules installed, and each packet goes
//! both through `steer` (`BPF_PROG_TEST_RUN`) and through `Engine::handle`;
//! the IP packets that come out must be the same bytes. Packets the program
//! must not rewrite go on to steering untouched. The kernel tests need the
//! right to load BPF programs and are skipped without it.

use std::mem::{offset_of, size_of};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

use aya::programs::Xdp;
use rvs_core::conn::Conn;
use rvs_core::fast_path::apply;
use rvs_core::{
    Applied, Endpoint, Engine, EngineConfig, Instant, Offload, Proto, RealConfig, ServiceConfig, Verdict,
};
use rvs_wire::checksum;

use super::*;
use crate::driver::xdp::Steering;
use crate::driver::xdp::prog_run::{frame, test_run};

#[test]
fn layouts_are_the_programs() {
    assert_eq!(size_of::<BpfFlowKey>(), 40);
    assert_eq!(offset_of!(BpfFlowKey, sport), 32);
    assert_eq!(offset_of!(BpfFlowKey, v6), 36);
    assert_eq!(offset_of!(BpfFlowKey, icmp), 39);
    assert_eq!(size_of::<BpfFlowRule>(), 120);
    let at = [
        (offset_of!(BpfFlowRule, daddr), 16),
        (offset_of!(BpfFlowRule, sport), 32),
        (offset_of!(BpfFlowRule, dport), 34),
        (offset_of!(BpfFlowRule, seq_add), 36),
        (offset_of!(BpfFlowRule, ack_sub), 40),
        (offset_of!(BpfFlowRule, tsval_add), 44),
        (offset_of!(BpfFlowRule, tsecr_sub), 48),
        (offset_of!(BpfFlowRule, kind), 52),
        (offset_of!(BpfFlowRule, real_wscale), 53),
        (offset_of!(BpfFlowRule, client_wscale), 54),
        (offset_of!(BpfFlowRule, flags), 55),
        (offset_of!(BpfFlowRule, real_gen), 56),
        (offset_of!(BpfFlowRule, ifindex), 60),
        (offset_of!(BpfFlowRule, dmac), 64),
        (offset_of!(BpfFlowRule, smac), 70),
        (offset_of!(BpfFlowRule, packets), 80),
        (offset_of!(BpfFlowRule, bytes), 88),
        (offset_of!(BpfFlowRule, last_seen), 96),
        (offset_of!(BpfFlowRule, seq_end), 104),
        (offset_of!(BpfFlowRule, ack), 108),
        (offset_of!(BpfFlowRule, tsval), 112),
        (offset_of!(BpfFlowRule, seen), 116),
    ];
    for (got, want) in at {
        assert_eq!(got, want);
    }
}

#[test]
fn keys_hold_addresses_and_ports_in_network_order() {
    let key = FlowKey {
        proto: Proto::Udp,
        src: Endpoint::new("fd10::1".parse().unwrap(), 53),
        dst: Endpoint::new("10.0.0.1".parse().unwrap(), 0x1234),
    };
    let k = BpfFlowKey::new(&key);
    assert_eq!(k.saddr[0].to_ne_bytes(), [0xfd, 0x10, 0, 0]);
    assert_eq!(k.saddr[3].to_ne_bytes(), [0, 0, 0, 1]);
    assert_eq!(k.daddr, [u32::from_ne_bytes([10, 0, 0, 1]), 0, 0, 0]);
    assert_eq!((k.sport.to_ne_bytes(), k.dport.to_ne_bytes()), ([0, 53], [0x12, 0x34]));
    assert_eq!((k.v6, k.proto, k.ports, k.icmp), (1, 17, 1, 0));
}

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const SYN: u8 = 0x02;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

const T0: Instant = Instant::from_secs(1000);

/// The addresses of one family's tests.
#[derive(Debug, Clone, Copy)]
struct Plan {
    client: Endpoint,
    vip: Endpoint,
    lip: IpAddr,
    real: Endpoint,
}

fn plan(v6: bool, proto: Proto) -> Plan {
    let e = |s: &str| -> Endpoint { s.parse::<std::net::SocketAddr>().unwrap().into() };
    let vport = if proto == Proto::Udp { 53 } else { 80 };
    if v6 {
        Plan {
            client: e("[fd10:77::2]:40000"),
            vip: Endpoint::new("fd10:77:2::1".parse().unwrap(), vport),
            lip: "fd10:77:3::1".parse().unwrap(),
            real: e("[fd10:77:1::11]:8080"),
        }
    } else {
        Plan {
            client: e("10.77.0.2:40000"),
            vip: Endpoint::new("10.77.2.1".parse().unwrap(), vport),
            lip: "10.77.3.1".parse().unwrap(),
            real: e("10.77.1.11:8080"),
        }
    }
}

/// An engine with the fast path on and one service of `proto` on the
/// plan's VIP and one real.
fn engine(plan: &Plan, proto: Proto, synproxy: bool, decrement_ttl: bool) -> Engine {
    let cfg = EngineConfig { fast_path: true, decrement_ttl, ..EngineConfig::default() };
    let mut e = Engine::new(cfg, [42; 32], T0);
    let mut s = ServiceConfig::new(proto, plan.vip);
    s.laddrs = vec![plan.lip];
    s.synproxy = synproxy;
    s.toa = proto == Proto::Tcp;
    e.add_service(s).unwrap();
    e.add_real(proto, plan.vip, RealConfig { endpoint: plan.real, weight: 1 }).unwrap();
    e
}

/// An IP header from `src` to `dst` for `len` bytes of protocol `proto`.
fn ip_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = 20 + len;
            let mut h = vec![0x45, 0, (total >> 8) as u8, total as u8, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = checksum::finish(checksum::sum(&h));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = vec![0x60, 0, 0, 0, (len >> 8) as u8, len as u8, proto, 64];
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h
        }
        _ => panic!("mixed families"),
    }
}

/// A TCP packet with a correct checksum; `opts` a multiple of 4 bytes.
#[allow(clippy::too_many_arguments)]
fn tcp(
    src: Endpoint,
    dst: Endpoint,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: &[u8],
    data: &[u8],
) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let mut t = Vec::new();
    t.extend_from_slice(&src.port.to_be_bytes());
    t.extend_from_slice(&dst.port.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[(((20 + opts.len()) / 4) << 4) as u8, flags]);
    t.extend_from_slice(&window.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(opts);
    t.extend_from_slice(data);
    let sum = checksum::pseudo_header(src.addr, dst.addr, 6, t.len() as u32) + checksum::sum(&t);
    t[16..18].copy_from_slice(&checksum::finish(sum).to_be_bytes());
    [ip_header(src.addr, dst.addr, 6, t.len()), t].concat()
}

/// A UDP datagram, with a correct checksum or none (0).
fn udp(src: Endpoint, dst: Endpoint, data: &[u8], with_checksum: bool) -> Vec<u8> {
    let len = 8 + data.len();
    let mut u = Vec::new();
    u.extend_from_slice(&src.port.to_be_bytes());
    u.extend_from_slice(&dst.port.to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    if with_checksum {
        let sum = checksum::pseudo_header(src.addr, dst.addr, 17, len as u32) + checksum::sum(&u);
        let c = match checksum::finish(sum) {
            0 => 0xffff,
            c => c,
        };
        u[6..8].copy_from_slice(&c.to_be_bytes());
    }
    [ip_header(src.addr, dst.addr, 17, len), u].concat()
}

fn ts(val: u32, ecr: u32) -> Vec<u8> {
    [vec![1, 1, 8, 10], val.to_be_bytes().to_vec(), ecr.to_be_bytes().to_vec()].concat()
}

fn sack(blocks: &[(u32, u32)]) -> Vec<u8> {
    let mut v = vec![1, 1, 5, 2 + 8 * blocks.len() as u8];
    for (l, r) in blocks {
        v.extend_from_slice(&l.to_be_bytes());
        v.extend_from_slice(&r.to_be_bytes());
    }
    v
}

/// A Linux client's or server's SYN options with TSval `val`, TSecr `ecr`
/// and window scale `ws`.
fn syn_opts(val: u32, ecr: u32, ws: u8) -> Vec<u8> {
    [vec![2, 4, 0x05, 0x78, 1, 1, 4, 2], ts(val, ecr), vec![1, 3, 3, ws]].concat()
}

/// `ip` with a checksum left partial by its sender's offload completed, as
/// the AF_XDP driver does before the engine sees it.
fn completed(mut ip: Vec<u8>) -> Vec<u8> {
    if ip[0] >> 4 == 4 {
        checksum::complete_partial_ipv4(&mut ip);
    } else {
        checksum::complete_partial_ipv6(&mut ip);
    }
    ip
}

/// `ip` with only the pseudo-header sum in its TCP or UDP checksum, as a
/// sender with checksum offload leaves it.
fn partial(mut ip: Vec<u8>) -> Vec<u8> {
    let (src, dst) = ends(&ip);
    let (header, proto) = if ip[0] >> 4 == 4 { (20, ip[9]) } else { (40, ip[6]) };
    let at = header + if proto == 6 { 16 } else { 6 };
    let pseudo = checksum::pseudo_header(src.addr, dst.addr, proto, (ip.len() - header) as u32);
    ip[at..at + 2].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
    ip
}

/// The transport header and payload of an IP packet.
fn l4(p: &[u8]) -> &[u8] {
    if p[0] >> 4 == 4 { &p[usize::from(p[0] & 15) * 4..] } else { &p[40..] }
}

fn word(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

fn seq_of(p: &[u8]) -> u32 {
    word(l4(p), 4)
}

/// The timestamps of a TCP packet.
fn ts_of(p: &[u8]) -> (u32, u32) {
    let t = l4(p);
    let mut i = 20;
    while i < usize::from(t[12] >> 4) * 4 {
        match t[i] {
            0 => break,
            1 => i += 1,
            8 => return (word(t, i + 2), word(t, i + 6)),
            _ => i += usize::from(t[i + 1]).max(2),
        }
    }
    panic!("no timestamps in {p:02x?}")
}

/// The source and destination of a TCP or UDP packet.
fn ends(p: &[u8]) -> (Endpoint, Endpoint) {
    let (src, dst): (IpAddr, IpAddr) = if p[0] >> 4 == 4 {
        (<[u8; 4]>::try_from(&p[12..16]).unwrap().into(), <[u8; 4]>::try_from(&p[16..20]).unwrap().into())
    } else {
        (<[u8; 16]>::try_from(&p[8..24]).unwrap().into(), <[u8; 16]>::try_from(&p[24..40]).unwrap().into())
    };
    let t = l4(p);
    (
        Endpoint::new(src, u16::from_be_bytes([t[0], t[1]])),
        Endpoint::new(dst, u16::from_be_bytes([t[2], t[3]])),
    )
}

/// Everything the engine built, in order.
fn drain(e: &mut Engine) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some((len, _)) = e.poll_transmit(&mut buf) {
        out.push(buf[..len].to_vec());
    }
    out
}

/// Handle `p` and return it as the engine sent it: rewritten in place, or
/// built (SYNProxy, client-address delivery).
fn pass(e: &mut Engine, mut p: Vec<u8>) -> Vec<u8> {
    match e.handle(T0, &mut p) {
        Verdict::Forward { .. } => p,
        v => drain(e).pop().unwrap_or_else(|| panic!("{v:?} and nothing built")),
    }
}

/// Drive a TCP connection from the plan's client to Established with
/// timestamps, the real's first data answered (TOA delivered); with
/// SYNProxy the real announces window scale 9 where the client was told
/// another. The connection, and the next client and real sequence numbers.
fn establish(e: &mut Engine, p: &Plan, synproxy: bool) -> Conn {
    let syn = tcp(p.client, p.vip, 1000, 0, SYN, 64240, &syn_opts(100, 0, 8), &[]);
    let rsyn = if synproxy {
        let synack = pass(e, syn);
        let (cookie, our_ts) = (seq_of(&synack), ts_of(&synack).0);
        let ack = tcp(p.client, p.vip, 1001, cookie.wrapping_add(1), ACK, 502, &ts(101, our_ts), &[]);
        pass(e, ack)
    } else {
        pass(e, syn)
    };
    let (laddr, real) = ends(&rsyn);
    assert_eq!(real, p.real);
    let synack = tcp(
        real,
        laddr,
        50000,
        seq_of(&rsyn).wrapping_add(1),
        SYN | ACK,
        65160,
        &syn_opts(9000, ts_of(&rsyn).0, 9),
        &[],
    );
    let out = pass(e, synack);
    if !synproxy {
        let ack =
            tcp(p.client, p.vip, 1001, seq_of(&out).wrapping_add(1), ACK, 502, &ts(101, ts_of(&out).0), &[]);
        pass(e, ack);
    }
    drain(e);
    // The real speaks: the client's address has arrived.
    let data = tcp(
        real,
        laddr,
        50001,
        seq_of(&rsyn).wrapping_add(1),
        ACK | PSH,
        500,
        &ts(9001, 0),
        b"220 hello\r\n",
    );
    pass(e, data);
    drain(e);
    let conn = e.conns().next().unwrap().clone();
    if synproxy {
        assert_ne!(conn.real_wscale, conn.client_wscale);
        assert_ne!(conn.xlat.r2c_seq, 0);
        assert_ne!(conn.xlat.r2c_ts, 0);
    }
    assert_ne!(conn.xlat.c2r_seq, 0);
    assert_ne!(conn.xlat.c2r_ts, 0);
    conn
}

/// The rules the engine offered for connection `c`, the only one it offered.
fn offered(e: &mut Engine, c: &Conn) -> [FlowRule; 2] {
    let mut got = None;
    while let Some(change) = e.poll_offload() {
        match change {
            Offload::Install { rules, .. } if got.is_none() => got = Some(rules),
            other => panic!("unexpected {other:?}"),
        }
    }
    let rules = got.expect("the engine offered the connection");
    assert_eq!((rules[0].key, rules[1].key), (c.client_key(), c.real_key()));
    rules
}

/// Toward the real: out of the interface the test runs "arrive" on (lo), so
/// XDP_TX; toward the client: another interface, so a redirect.
fn hop(to: Side, lo: u32) -> NextHop {
    match to {
        Side::Real => NextHop { ifindex: lo, dst_mac: [2, 0, 0, 0, 1, 1], src_mac: [2, 0, 0, 0, 0, 1] },
        Side::Client => {
            NextHop { ifindex: lo + 1000, dst_mac: [2, 0, 0, 0, 2, 2], src_mac: [2, 0, 0, 0, 0, 2] }
        }
    }
}

/// `steer` loaded for one worker with the fast path on, and its maps.
struct Program {
    // Keeps the program and the maps it did not hand out alive.
    _steering: Steering,
    maps: FastPathMaps,
    steer: libc::c_int,
    lo: u32,
}

impl Program {
    fn load() -> Option<Self> {
        let mut steering = match Steering::load(1) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("fast path tests skipped: {e}");
                return None;
            }
        };
        let maps = steering.take_fast_path().unwrap();
        steering.set_stages(FAST_PATH_ON).unwrap();
        let xdp: &mut Xdp = steering.ebpf.program_mut("steer").unwrap().try_into().unwrap();
        xdp.load().unwrap();
        let steer = xdp.fd().unwrap().as_fd().as_raw_fd();
        let lo = crate::driver::netlink::index_of("lo").unwrap();
        Some(Self { _steering: steering, maps, steer, lo })
    }

    fn install(&mut self, rules: &[FlowRule]) {
        for r in rules {
            self.maps.set_live(r.real_gen).unwrap();
            self.maps.install(r, &hop(r.to, self.lo)).unwrap();
        }
    }

    fn to_engine(&self) -> u64 {
        self.maps.stats().unwrap()[stat::FP_TO_ENGINE as usize]
    }

    /// `ip` through the program and through the engine: the same packet
    /// leaves both, toward `rule`'s side, with its next hop's addresses.
    fn same(&self, e: &mut Engine, rule: &FlowRule, ip: Vec<u8>, case: &str) {
        let (action, out) = test_run(self.steer, &frame(&ip));
        // The engine sees the packet as the driver hands it over.
        let ip = completed(ip);
        let mut want = ip.clone();
        assert_eq!(e.handle(T0, &mut want), Verdict::Forward { to: rule.to }, "{case}: the engine");
        let hop = hop(rule.to, self.lo);
        let sent = if rule.to == Side::Real { XDP_TX } else { XDP_REDIRECT };
        assert_eq!(action, sent, "{case}: action");
        assert_eq!(out[..6], hop.dst_mac, "{case}");
        assert_eq!(out[6..12], hop.src_mac, "{case}");
        assert_eq!(out[14..], want[..], "{case}: program (left) and engine (right) differ");
        assert_ne!(want, ip, "{case}: nothing was rewritten");
        // The engine's reference of the program agrees.
        let mut applied = ip;
        assert_eq!(apply(rule, &mut applied), Applied::Forwarded, "{case}: apply");
        assert_eq!(applied, want, "{case}: apply (left) and the engine (right) differ");
    }

    /// `ip` is not rewritten: it goes on to steering (and, with no
    /// service in the maps, to the kernel) as it came; `to_engine` says
    /// whether the program counted it as one for the engine.
    fn untouched(&self, ip: &[u8], to_engine: bool, case: &str) {
        self.untouched_by(None, ip, to_engine, case);
    }

    /// `untouched`, and `rule`'s reference rewrite leaves `ip` to the engine as well.
    fn refused(&self, rule: &FlowRule, ip: &[u8], case: &str) {
        self.untouched_by(Some(rule), ip, true, case);
    }

    fn untouched_by(&self, rule: Option<&FlowRule>, ip: &[u8], to_engine: bool, case: &str) {
        if let Some(rule) = rule {
            let mut applied = ip.to_vec();
            assert_eq!(apply(rule, &mut applied), Applied::ToEngine, "{case}: apply");
            assert_eq!(applied, ip, "{case}: apply");
        }
        let before = self.to_engine();
        let (action, out) = test_run(self.steer, &frame(ip));
        assert_eq!(action, XDP_PASS, "{case}");
        assert_eq!(out, frame(ip), "{case}");
        assert_eq!(self.to_engine(), before + u64::from(to_engine), "{case}: counted for the engine");
    }
}

/// Packets of both directions of a TCP connection in every layout the
/// program translates.
fn tcp_cases(prog: &Program, e: &mut Engine, p: &Plan, c: &Conn, rules: &[FlowRule; 2]) {
    let (from_client, from_real) = (&rules[0], &rules[1]);
    // Sequence numbers near the wrap, so the offsets wrap too.
    let (cs, rs) = (0xffff_fff0u32, 0xffff_ff00u32);
    let blocks =
        [(rs.wrapping_add(100), rs.wrapping_add(200)), (7, 9), (0xffff_fffe, 3), (1 << 31, (1 << 31) + 8)];
    let blocks_c = [(cs.wrapping_add(50), cs.wrapping_add(90)), (11, 13), (0, 1), (5, 0xffff_fff0)];
    let (client, vip, real, laddr) = (p.client, p.vip, c.real, c.laddr);
    for (rule, src, dst, seq, ack, bl) in
        [(from_client, client, vip, cs, rs, &blocks), (from_real, real, laddr, rs, cs, &blocks_c)]
    {
        let side = format!("{:?} from {src}", rule.to);
        let pkt =
            |flags, window, opts: &[u8], data: &[u8]| tcp(src, dst, seq, ack, flags, window, opts, data);
        prog.same(e, rule, pkt(ACK, 502, &[], &[]), &format!("{side}: plain ACK"));
        prog.same(e, rule, pkt(ACK | PSH, 501, &[], b"GET / HTTP/1.1\r\n\r\nodd"), &format!("{side}: data"));
        prog.same(e, rule, pkt(ACK, 500, &ts(0xffff_fff7, 3), &[]), &format!("{side}: TS"));
        prog.same(e, rule, pkt(ACK | PSH, 499, &ts(5, 0xffff_0000), b"x"), &format!("{side}: data, TS"));
        for n in 1..=4 {
            let s = sack(&bl[..n]);
            prog.same(e, rule, pkt(ACK, 498, &s, &[]), &format!("{side}: SACK {n}"));
            if n < 4 {
                let o = [ts(77, 88), s].concat();
                prog.same(e, rule, pkt(ACK, 497, &o, &[]), &format!("{side}: TS, SACK {n}"));
            }
        }
        // Windows that rescale exactly, round down, and clamp.
        for window in [1u16, 100, 1000, 20000, 65535] {
            prog.same(e, rule, pkt(ACK, window, &ts(1, 2), &[]), &format!("{side}: window {window}"));
        }
    }
}

#[test]
fn tcp_packets_leave_the_program_as_they_leave_the_engine() {
    let Some(mut prog) = Program::load() else { return };
    for v6 in [false, true] {
        for (synproxy, decrement_ttl) in [(false, true), (true, true), (true, false)] {
            let p = plan(v6, Proto::Tcp);
            let mut e = engine(&p, Proto::Tcp, synproxy, decrement_ttl);
            let c = establish(&mut e, &p, synproxy);
            let rules = offered(&mut e, &c);
            assert_eq!(rules[1].rescale.is_some(), synproxy);
            assert_eq!(rules[0].decrement_ttl, decrement_ttl);
            prog.install(&rules);
            tcp_cases(&prog, &mut e, &p, &c, &rules);
            // Link-layer padding behind a short packet stays as it is.
            let ip = tcp(p.client, p.vip, 1, 2, ACK, 9, &[], &[]);
            let (action, out) = test_run(prog.steer, &[frame(&ip), vec![0; 6]].concat());
            let mut want = ip.clone();
            let _ = e.handle(T0, &mut want);
            assert_eq!(
                (action, &out[14..out.len() - 6], &out[out.len() - 6..]),
                (XDP_TX, &want[..], &[0u8; 6][..])
            );
            if !decrement_ttl {
                // TTL 1 is left as it is, by both.
                let mut last_hop = tcp(p.client, p.vip, 1, 2, ACK, 9, &[], &[]);
                last_hop[if v6 { 7 } else { 8 }] = 1;
                prog.same(&mut e, &rules[0], last_hop, "TTL 1, not decremented");
            }
        }
    }
}

#[test]
fn udp_packets_leave_the_program_as_they_leave_the_engine() {
    let Some(mut prog) = Program::load() else { return };
    for v6 in [false, true] {
        let p = plan(v6, Proto::Udp);
        let mut e = engine(&p, Proto::Udp, false, true);
        let q = udp(p.client, p.vip, b"query", true);
        let to_real = pass(&mut e, q);
        let (laddr, real) = ends(&to_real);
        pass(&mut e, udp(real, laddr, b"answer", true));
        let c = e.conns().next().unwrap().clone();
        let rules = offered(&mut e, &c);
        prog.install(&rules);
        for data in [&b""[..], b"q", b"a longer query, odd"] {
            prog.same(&mut e, &rules[0], udp(p.client, p.vip, data, true), "from the client");
            prog.same(&mut e, &rules[1], udp(real, laddr, data, true), "from the real");
            if !v6 {
                // No checksum stays none; only the ports change.
                prog.same(&mut e, &rules[0], udp(p.client, p.vip, data, false), "no checksum");
            }
        }
    }
}

/// `ip` with 4 bytes of IPv4 options (NOPs) in its header.
fn with_ip_options(ip: &[u8]) -> Vec<u8> {
    let mut p = [&ip[..20], &[1, 1, 1, 1], &ip[20..]].concat();
    p[0] = 0x46;
    let total = u16::from_be_bytes([p[2], p[3]]) + 4;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p
}

/// `ip` (IPv6) behind an empty hop-by-hop options header.
fn with_hop_by_hop(ip: &[u8]) -> Vec<u8> {
    let mut p = [&ip[..40], &[ip[6], 0, 1, 4, 0, 0, 0, 0], &ip[40..]].concat();
    p[6] = 0;
    let len = u16::from_be_bytes([p[4], p[5]]) + 8;
    p[4..6].copy_from_slice(&len.to_be_bytes());
    p
}

#[test]
fn packets_the_program_cannot_rewrite_go_on_to_steering() {
    let Some(mut prog) = Program::load() else { return };
    for v6 in [false, true] {
        let p = plan(v6, Proto::Tcp);
        let mut e = engine(&p, Proto::Tcp, true, true);
        let c = establish(&mut e, &p, true);
        let rules = offered(&mut e, &c);
        prog.install(&rules);
        let pkt = |flags, opts: &[u8]| tcp(p.client, p.vip, 5, 6, flags, 502, opts, &[]);
        for (flags, what) in [
            (SYN, "SYN"),
            (SYN | ACK, "SYN-ACK"),
            (FIN | ACK, "FIN"),
            (RST, "RST"),
            (RST | ACK, "RST-ACK"),
            (PSH, "no ACK"),
        ] {
            prog.install(&rules);
            prog.refused(&rules[0], &pkt(flags, &[]), what);
        }
        // A FIN or RST hands both directions to the engine on the spot: the
        // peer's answer reaches it before it has taken the entries out.
        prog.install(&rules);
        prog.refused(&rules[0], &pkt(FIN | ACK, &[]), "FIN");
        for r in &rules {
            assert_eq!(prog.maps.flows.get(&BpfFlowKey::new(&r.key), 0).unwrap().kind, 2, "after a FIN");
        }
        prog.install(&rules);
        let mss = [2, 4, 5, 0xb4];
        let eol_after_ts = [ts(1, 2), vec![0, 0, 0, 0]].concat();
        let nops_after_sack = [sack(&[(1, 2)]), vec![1, 1, 1, 1]].concat();
        let sack_first = [sack(&[(1, 2)]), ts(1, 2)].concat();
        let bare_ts =
            [vec![8, 10], 1u32.to_be_bytes().to_vec(), 2u32.to_be_bytes().to_vec(), vec![1, 1]].concat();
        for (opts, what) in [
            (&mss[..], "MSS"),
            (&eol_after_ts, "TS, EOL"),
            (&nops_after_sack, "SACK, NOPs"),
            (&sack_first, "SACK, TS"),
            (&bare_ts, "TS without NOPs"),
        ] {
            prog.refused(&rules[0], &pkt(ACK, opts), what);
        }
        let ok = pkt(ACK, &ts(1, 2));
        let mut ttl1 = ok.clone();
        ttl1[if v6 { 7 } else { 8 }] = 1;
        prog.refused(&rules[0], &ttl1, "TTL 1");
        if v6 {
            prog.refused(&rules[0], &with_hop_by_hop(&ok), "extension header");
        } else {
            prog.refused(&rules[0], &with_ip_options(&ok), "IPv4 options");
            let mut first = ok.clone();
            first[6] |= 0x20;
            prog.refused(&rules[0], &first, "first fragment");
        }
        // Longer than an MTU-sized frame (generic XDP after GRO).
        let merged = tcp(p.client, p.vip, 1, 2, ACK, 9, &[], &[7; 2100]);
        prog.untouched(&merged, true, "merged segment");
        // Cut short: the IP header says more than the frame holds.
        prog.refused(&rules[0], &ok[..ok.len() - 1], "truncated");
        // The real's generation is retired: its flows go to the engine until
        // the generation is live again.
        prog.maps.retire(rules[0].real_gen).unwrap();
        prog.untouched(&ok, true, "dead real");
        prog.maps.set_live(rules[0].real_gen).unwrap();
        prog.same(&mut e, &rules[0], ok.clone(), "live again");
        // An entry that says the flow is the engine's.
        let key = BpfFlowKey::new(&rules[0].key);
        let engine_only = BpfFlowRule { kind: 2, ..BpfFlowRule::new(&rules[0], &hop(Side::Real, prog.lo)) };
        prog.maps.flows.insert(key, engine_only, 0).unwrap();
        prog.untouched(&ok, true, "FLOW_ENGINE");
        // No entry: not the fast path's business at all.
        assert!(prog.maps.remove(&rules[0].key).unwrap());
        prog.untouched(&ok, false, "no entry");
        // With the stage off nothing is looked up.
        prog.install(&rules);
        prog._steering.set_stages(0).unwrap();
        prog.untouched(&ok, false, "fast path off");
        prog._steering.set_stages(FAST_PATH_ON).unwrap();
    }
    // IPv6 UDP without a checksum is the engine's (it drops it).
    let p = plan(true, Proto::Udp);
    let mut e = engine(&p, Proto::Udp, false, true);
    let to_real = pass(&mut e, udp(p.client, p.vip, b"q", true));
    let (laddr, real) = ends(&to_real);
    pass(&mut e, udp(real, laddr, b"a", true));
    let c = e.conns().next().unwrap().clone();
    let rules = offered(&mut e, &c);
    prog.install(&rules);
    prog.refused(&rules[1], &udp(real, laddr, b"a", false), "IPv6 UDP without a checksum");
}

#[test]
fn counters_move_and_removed_flows_read_as_gone() {
    let Some(mut prog) = Program::load() else { return };
    let p = plan(false, Proto::Tcp);
    let mut e = engine(&p, Proto::Tcp, false, true);
    let c = establish(&mut e, &p, false);
    let rules = offered(&mut e, &c);
    prog.install(&rules);
    let stats = prog.maps.stats().unwrap();
    assert_eq!(prog.maps.counters(&rules[0].key).unwrap(), Some(FlowCounters::default()));
    let mut bytes = 0;
    for n in 0..3u32 {
        let ip = tcp(p.client, p.vip, 10 + n, 20, ACK | PSH, 502, &ts(n, n), &vec![b'x'; n as usize]);
        bytes += ip.len() as u64;
        prog.same(&mut e, &rules[0], ip, "counted");
    }
    let got = prog.maps.counters(&rules[0].key).unwrap().unwrap();
    assert_eq!((got.packets, got.bytes), (3, bytes));
    assert!(got.last_seen_ns > 0);
    // The last segment's end and ACK as it came, its TSval as it left.
    let last =
        FlowProgress { seq_end: 12 + 2, ack: Some(20), tsval: Some(2u32.wrapping_add(rules[0].tsval_add)) };
    assert_eq!(got.progress, Some(last));
    assert_eq!(prog.maps.counters(&rules[1].key).unwrap(), Some(FlowCounters::default()));
    let after = prog.maps.stats().unwrap();
    assert_eq!(after[stat::FP_FORWARDED as usize] - stats[stat::FP_FORWARDED as usize], 3);
    assert_eq!(after[stat::FP_BYTES as usize] - stats[stat::FP_BYTES as usize], bytes);
    // Another handle (as a worker thread holds) sees the same maps.
    let mut other = prog.maps.try_clone().unwrap();
    assert!(other.remove(&rules[0].key).unwrap());
    assert_eq!(prog.maps.counters(&rules[0].key).unwrap(), None);
    assert!(!prog.maps.remove(&rules[0].key).unwrap());
}

/// xorshift64*: drawn test values without a dependency.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
}

/// A TCP segment of drawn numbers, flags and option layout, whose checksum
/// field is drawn too (the engine rewrites whatever it holds): the edge
/// values 0 and 0xffff among them.
fn drawn_tcp(d: &mut Draw, src: Endpoint, dst: Endpoint) -> Vec<u8> {
    let blocks: Vec<(u32, u32)> = (0..4).map(|_| (d.next(), d.next())).collect();
    let opts = match d.below(4) {
        0 => vec![],
        1 => ts(d.next(), d.next()),
        2 => sack(&blocks[..1 + d.below(4) as usize]),
        _ => [ts(d.next(), d.next()), sack(&blocks[..1 + d.below(3) as usize])].concat(),
    };
    // ACK with any of PSH, URG, ECE, CWR.
    let flags = ACK | (d.next() as u8 & 0xe8);
    let data = vec![d.next() as u8; d.below(40) as usize];
    let mut p = tcp(src, dst, d.next(), d.next(), flags, d.next() as u16, &opts, &data);
    let at = if p[0] >> 4 == 4 { 36 } else { 56 };
    let sum = match d.below(4) {
        0 => 0,
        1 => 0xffff,
        _ => d.next() as u16,
    };
    p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    p
}

#[test]
fn drawn_packets_leave_the_program_as_they_leave_the_engine() {
    let Some(mut prog) = Program::load() else { return };
    let mut d = Draw(0x9e37_79b9_7f4a_7c15);
    for v6 in [false, true] {
        let p = plan(v6, Proto::Tcp);
        let mut e = engine(&p, Proto::Tcp, true, true);
        let c = establish(&mut e, &p, true);
        let rules = offered(&mut e, &c);
        prog.install(&rules);
        for i in 0..1000 {
            let (rule, ip) = if i % 2 == 0 {
                (&rules[0], drawn_tcp(&mut d, p.client, p.vip))
            } else {
                (&rules[1], drawn_tcp(&mut d, c.real, c.laddr))
            };
            prog.same(&mut e, rule, ip, &format!("drawn packet {i}, IPv6 {v6}"));
        }
        // UDP: drawn payloads and checksum fields (none, over IPv4, stays none).
        let p = plan(v6, Proto::Udp);
        let mut e = engine(&p, Proto::Udp, false, true);
        let (laddr, real) = ends(&pass(&mut e, udp(p.client, p.vip, b"q", true)));
        pass(&mut e, udp(real, laddr, b"a", true));
        let c = e.conns().next().unwrap().clone();
        let rules = offered(&mut e, &c);
        prog.install(&rules);
        for i in 0..200 {
            let data = vec![d.next() as u8; d.below(30) as usize];
            let (rule, mut ip) = if i % 2 == 0 {
                (&rules[0], udp(p.client, p.vip, &data, true))
            } else {
                (&rules[1], udp(real, laddr, &data, true))
            };
            let at = if v6 { 46 } else { 26 };
            let sum = match d.below(4) {
                0 if !v6 => 0,
                1 => 0xffff,
                _ => (d.next() as u16).max(1),
            };
            ip[at..at + 2].copy_from_slice(&sum.to_be_bytes());
            prog.same(&mut e, rule, ip, &format!("drawn datagram {i}, IPv6 {v6}"));
        }
    }
}

#[test]
fn partial_checksums_are_completed_as_the_driver_completes_them() {
    let Some(mut prog) = Program::load() else { return };
    for v6 in [false, true] {
        let p = plan(v6, Proto::Tcp);
        let mut e = engine(&p, Proto::Tcp, true, true);
        let c = establish(&mut e, &p, true);
        let rules = offered(&mut e, &c);
        prog.install(&rules);
        // Around the program's 512-byte chunks, odd lengths, a full frame.
        for n in [0usize, 1, 3, 479, 480, 481, 511, 512, 513, 1000, 1023, 1400] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
            let from_client = tcp(p.client, p.vip, 1, 2, ACK | PSH, 9, &ts(3, 4), &data);
            prog.same(&mut e, &rules[0], partial(from_client), &format!("{n} bytes from the client"));
            let from_real = tcp(c.real, c.laddr, 1, 2, ACK, 9, &[ts(3, 4), sack(&[(5, 6)])].concat(), &data);
            prog.same(&mut e, &rules[1], partial(from_real), &format!("{n} bytes from the real"));
        }
        // Longer than the program sums: the engine's.
        let long = tcp(p.client, p.vip, 1, 2, ACK, 9, &[], &[7; 2100]);
        prog.untouched(&partial(long), true, "2100 bytes");
        let p = plan(v6, Proto::Udp);
        let mut e = engine(&p, Proto::Udp, false, true);
        let (laddr, real) = ends(&pass(&mut e, udp(p.client, p.vip, b"q", true)));
        pass(&mut e, udp(real, laddr, b"a", true));
        let c = e.conns().next().unwrap().clone();
        let rules = offered(&mut e, &c);
        prog.install(&rules);
        for n in [0usize, 1, 600, 1200] {
            let data = vec![n as u8 | 1; n];
            prog.same(
                &mut e,
                &rules[0],
                partial(udp(p.client, p.vip, &data, true)),
                &format!("UDP, {n} bytes"),
            );
            prog.same(
                &mut e,
                &rules[1],
                partial(udp(real, laddr, &data, true)),
                &format!("UDP back, {n} bytes"),
            );
        }
    }
}
