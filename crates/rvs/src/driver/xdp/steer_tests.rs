//! The steering programs run by the kernel on frames built here
//! (`BPF_PROG_TEST_RUN`), with two workers: which worker each packet goes to,
//! checked against the hash written out again in Rust. Needs the right to
//! load BPF programs; skipped without it.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

use aya::programs::{SocketFilter, Xdp};
use rvs_control::model::{Model, ServiceSpec};
use rvs_core::{Endpoint, Proto, ServiceConfig};

use super::Steering;
use super::prog_run::{frame, test_run};

const CLIENT6: &str = "fd10:77:0::2";
const VIP6: &str = "fd10:77:2::1";
const LIP6: &str = "fd10:77:3::1";
const REAL6: &str = "fd10:77:1::11";
const CLIENT4: &str = "10.77.0.2";
const VIP4: &str = "10.77.2.1";
const LIP4: &str = "10.77.3.1";
const REAL4: &str = "10.77.1.11";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Where `steer` sent a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Went {
    Worker(u32),
    Kernel,
}

/// murmur3's finaliser, as `mix` in steer.bpf.c.
fn mix(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x85eb_ca6b);
    x ^= x >> 13;
    x = x.wrapping_mul(0xc2b2_ae35);
    x ^ (x >> 16)
}

/// `flow_hash` in steer.bpf.c: addresses and ports as the program loads
/// them, network order in memory.
fn flow_hash(src: IpAddr, port: u16) -> u32 {
    let h = mix(u32::from(u16::from_ne_bytes(port.to_be_bytes())));
    let word = |o: &[u8], i: usize| u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]);
    match src {
        IpAddr::V4(a) => mix(word(&a.octets(), 0) ^ h),
        IpAddr::V6(a) => {
            let o = a.octets();
            mix(word(&o, 0) ^ mix(word(&o, 3) ^ mix(word(&o, 2) ^ mix(word(&o, 1) ^ h))))
        }
    }
}

/// An IP header from `src` to `dst` carrying `payload` as protocol `proto`
/// (for IPv6: the next header after `ext`, extension headers given whole
/// with their own next-header bytes left to this function).
fn ip_packet(src: &str, dst: &str, proto: u8, ext: &[Vec<u8>], payload: &[u8]) -> Vec<u8> {
    match (ip(src), ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = 20 + payload.len();
            let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, proto, 0, 0];
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(payload);
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let len: usize = ext.iter().map(Vec::len).sum::<usize>() + payload.len();
            let first = if ext.is_empty() { proto } else { ext[0][0] };
            let mut p = vec![0x60, 0, 0, 0, (len >> 8) as u8, len as u8, first, 64];
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            for (i, e) in ext.iter().enumerate() {
                let mut e = e.clone();
                // The first byte names the header's own type here; the
                // header carries the next one's.
                e[0] = ext.get(i + 1).map_or(proto, |n| n[0]);
                p.extend_from_slice(&e);
            }
            p.extend_from_slice(payload);
            p
        }
        _ => panic!("mixed families"),
    }
}

/// The first bytes of a TCP or UDP header (checksums are not looked at).
fn ports(sport: u16, dport: u16) -> Vec<u8> {
    let mut l4 = sport.to_be_bytes().to_vec();
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.resize(20, 0);
    l4
}

/// An ICMP or ICMPv6 error of `kind` quoting `quoted`.
fn icmp_error(kind: u8, quoted: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(quoted);
    m
}

struct Programs {
    steering: Steering,
    steer: libc::c_int,
    tun_steer: libc::c_int,
}

impl Programs {
    /// Both programs for two workers, with a TCP service on each family's
    /// VIP port 80 and the other family's LIP (NAT64 and NAT46), or `None`
    /// without the right to load them. Worker 0's socket slot stays empty,
    /// so its frames come back as passed and counted so; worker 1's frames
    /// go to its hand-over device.
    fn load() -> Option<Self> {
        let mut steering = match Steering::load(2) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("steering tests skipped: {e}");
                return None;
            }
        };
        let mut model = Model::default();
        for (vip, lip) in [(VIP6, LIP4), (VIP4, LIP6)] {
            let mut config = ServiceConfig::new(Proto::Tcp, Endpoint { addr: ip(vip), port: 80 });
            config.laddrs.push(ip(lip));
            model.services.insert((Proto::Tcp, config.vip), ServiceSpec::new(config));
        }
        steering.sync(&model).unwrap();
        let lo = crate::driver::netlink::index_of("lo").unwrap();
        steering.ifaces.insert(lo, 0, 0).unwrap();
        steering.devices.set(1, lo, None, 0).unwrap();
        let xdp: &mut Xdp = steering.ebpf.program_mut("steer").unwrap().try_into().unwrap();
        xdp.load().unwrap();
        let steer = xdp.fd().unwrap().as_fd().as_raw_fd();
        let filter: &mut SocketFilter = steering.ebpf.program_mut("tun_steer").unwrap().try_into().unwrap();
        filter.load().unwrap();
        let tun_steer = filter.fd().unwrap().as_fd().as_raw_fd();
        Some(Self { steering, steer, tun_steer })
    }

    /// Where `steer` sends the frame carrying `ip`.
    fn steer(&self, ip: &[u8]) -> Went {
        const XDP_PASS: u32 = 2;
        const XDP_REDIRECT: u32 = 4;
        let passed = self.steering.counts().unwrap().passed;
        match test_run(self.steer, &frame(ip)).0 {
            XDP_REDIRECT => Went::Worker(1),
            XDP_PASS if self.steering.counts().unwrap().passed > passed => Went::Worker(0),
            XDP_PASS => Went::Kernel,
            other => panic!("XDP action {other}"),
        }
    }

    /// The TUN queue `tun_steer` picks for `ip`.
    fn tun_queue(&self, ip: &[u8]) -> u32 {
        test_run(self.tun_steer, &frame(ip)).0
    }

    /// Where both programs send `ip`: the same worker, or the kernel for
    /// `steer` (then `tun_steer`'s pick is not checked).
    fn both(&self, ip: &[u8]) -> Went {
        let went = self.steer(ip);
        if let Went::Worker(w) = went {
            assert_eq!(self.tun_queue(ip), w, "tun_steer and steer disagree on {ip:02x?}");
        }
        went
    }
}

#[test]
fn flows_to_a_vip_spread_by_the_clients_address_and_port() {
    let Some(p) = Programs::load() else { return };
    for (client, vip) in [(CLIENT6, VIP6), (CLIENT4, VIP4)] {
        let mut seen = [false; 2];
        for port in 40_000..40_032u16 {
            let syn = ip_packet(client, vip, 6, &[], &ports(port, 80));
            let want = flow_hash(ip(client), port) % 2;
            assert_eq!(p.both(&syn), Went::Worker(want), "{client} port {port}");
            seen[want as usize] = true;
        }
        assert_eq!(seen, [true, true]);
        // Another port or protocol of the VIP address is not a service.
        assert_eq!(p.steer(&ip_packet(client, vip, 6, &[], &ports(40_000, 81))), Went::Kernel);
        assert_eq!(p.steer(&ip_packet(client, vip, 17, &[], &ports(40_000, 80))), Went::Kernel);
    }
}

#[test]
fn packets_to_a_lip_go_to_the_owner_of_its_port() {
    let Some(p) = Programs::load() else { return };
    for (real, lip) in [(REAL6, LIP6), (REAL4, LIP4)] {
        for (port, worker) in [(2000u16, 0), (2001, 1)] {
            let reply = ip_packet(real, lip, 6, &[], &ports(80, port));
            assert_eq!(p.both(&reply), Went::Worker(worker), "{lip} port {port}");
        }
    }
}

#[test]
fn ipv6_extension_headers_are_walked_to_the_ports() {
    let Some(p) = Programs::load() else { return };
    let hop_by_hop = vec![0, 0, 1, 4, 0, 0, 0, 0];
    let dest_opts = vec![60, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let reply = ip_packet(REAL6, LIP6, 6, &[hop_by_hop.clone(), dest_opts.clone()], &ports(80, 2001));
    assert_eq!(p.both(&reply), Went::Worker(1));
    // A first fragment carries the ports; a later one does not (worker 0
    // for a LIP, the kernel for a VIP).
    let first = vec![44, 0, 0, 0x01, 0, 0, 0, 7];
    assert_eq!(p.both(&ip_packet(REAL6, LIP6, 6, &[first], &ports(80, 2001))), Went::Worker(1));
    let later = vec![44, 0, 0, 0x08, 0, 0, 0, 7];
    assert_eq!(
        p.both(&ip_packet(REAL6, LIP6, 6, std::slice::from_ref(&later), &ports(80, 2001))),
        Went::Worker(0)
    );
    assert_eq!(p.steer(&ip_packet(CLIENT6, VIP6, 6, &[later], &ports(40_000, 80))), Went::Kernel);
    // More extension headers than the program walks: no ports.
    let many = vec![hop_by_hop.clone(), dest_opts.clone(), dest_opts.clone(), dest_opts.clone(), dest_opts];
    assert_eq!(p.both(&ip_packet(REAL6, LIP6, 6, &many, &ports(80, 2001))), Went::Worker(0));
    // Cut short inside an extension header: the kernel's.
    let mut cut = ip_packet(REAL6, LIP6, 6, &[hop_by_hop], &[]);
    cut.truncate(44);
    assert_eq!(p.steer(&cut), Went::Kernel);
}

#[test]
fn neighbour_discovery_and_echo_are_the_kernels() {
    let Some(p) = Programs::load() else { return };
    for to in [LIP6, VIP6] {
        for kind in [128u8, 133, 134, 135, 136, 137] {
            let msg = ip_packet(REAL6, to, 58, &[], &[kind, 0, 0, 0, 0, 0, 0, 0]);
            assert_eq!(p.steer(&msg), Went::Kernel, "ICMPv6 type {kind} to {to}");
        }
    }
    // ARP is the kernel's too.
    let mut arp = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x06];
    arp.resize(42, 0);
    assert_eq!(test_run(p.steer, &arp).0, 2);
}

#[test]
fn icmp_errors_go_where_the_quoted_flow_goes() {
    let Some(p) = Programs::load() else { return };
    // Packet too big (ICMPv6 2), destination unreachable (ICMP 3) from a
    // real's side: the quoted packet left from the LIP's local port.
    for (real, lip, kind, proto) in [(REAL6, LIP6, 2u8, 58u8), (REAL4, LIP4, 3, 1)] {
        for (port, worker) in [(2000u16, 0), (2001, 1)] {
            let quoted = ip_packet(lip, real, 6, &[], &ports(port, 80));
            let error = ip_packet(real, lip, proto, &[], &icmp_error(kind, &quoted));
            assert_eq!(p.both(&error), Went::Worker(worker), "{lip} port {port}");
        }
    }
    // From the clients' side: the quoted packet went from the VIP to the
    // client, so the error goes where the client's own packets go.
    for (client, vip, kind, proto) in [(CLIENT6, VIP6, 1u8, 58u8), (CLIENT4, VIP4, 11, 1)] {
        let router = client;
        let mut seen = [false; 2];
        for port in 40_000..40_016u16 {
            let quoted = ip_packet(vip, client, 6, &[], &ports(80, port));
            let error = ip_packet(router, vip, proto, &[], &icmp_error(kind, &quoted));
            let want = flow_hash(ip(client), port) % 2;
            assert_eq!(p.both(&error), Went::Worker(want), "{vip} client port {port}");
            seen[want as usize] = true;
        }
        assert_eq!(seen, [true, true]);
    }
    // An error whose quote is cut short: by the sender's address to a VIP.
    let short = ip_packet(CLIENT6, VIP6, 58, &[], &icmp_error(1, &[0x60, 0, 0]));
    assert_eq!(p.both(&short), Went::Worker(flow_hash(ip(CLIENT6), 0) % 2));
}
