//! The PROXY protocol header through the real engine between smoltcp
//! clients and servers that parse it: under loss, duplication and
//! reordering on both legs, with and without SYNProxy and TOA, every real
//! learns exactly the client that connected, from the header and from the
//! TOA option; and a client that says nothing (a server-speaks-first
//! protocol) still has its header delivered. Every scenario runs for each
//! [`Family`]: the header and the option carry the client's own family.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use rvs_core::{
    Endpoint, Engine, EngineConfig, Instant, Proto, ProxyProtocol, RealConfig, SchedKind, ServiceConfig,
};
use rvs_sim::app::{Closer, TcpClient, TcpClientConfig, TcpServer, TcpServerConfig};
use rvs_sim::{Family, HostId, LinkConfig, Network, NetworkConfig, PacketInfo};
use rvs_wire::tcp::{self, TcpOption};

rvs_sim::family_tests! {
    every_real_learns_its_true_client_under_loss_on_both_legs,
    a_silent_client_still_has_its_header_delivered_first,
}

const VIP: &str = "10.0.0.1";
const LIP: &str = "10.1.0.1";
const REALS: [&str; 3] = ["10.2.0.1", "10.2.0.2", "10.2.0.3"];
const CLIENTS: usize = 2;
const PER_CLIENT: usize = 100;

fn vip(family: Family) -> Endpoint {
    Endpoint::new(family.client(VIP), 80)
}

#[derive(Debug, Clone, Copy)]
struct Case {
    family: Family,
    seed: u64,
    version: ProxyProtocol,
    synproxy: bool,
    toa: bool,
    /// Loss on the LB↔real links; duplication and reordering at half that rate.
    loss: f64,
    /// The same on the client↔LB links.
    client_loss: f64,
    /// Client silence after connecting.
    send_delay: Duration,
}

fn engine(c: Case) -> Engine {
    let mut e = Engine::new(EngineConfig::default(), [c.seed as u8; 32], Instant::ZERO);
    let mut svc = ServiceConfig::new(Proto::Tcp, vip(c.family));
    svc.sched = SchedKind::Rr;
    svc.laddrs = vec![c.family.backend(LIP)];
    svc.synproxy = c.synproxy;
    svc.toa = c.toa;
    svc.proxy_protocol = c.version;
    e.add_service(svc).unwrap();
    for r in REALS {
        let endpoint = Endpoint::new(c.family.backend(r), 80);
        e.add_real(Proto::Tcp, vip(c.family), RealConfig { endpoint, weight: 1 }).unwrap();
    }
    e
}

/// The clients announced in TOA options (kind 254: port, then an IPv4 or
/// IPv6 address) per real-side peer (local address and port), as `host`
/// received them; read independently of the balancer's writer.
type ToaSeen = Rc<RefCell<HashMap<Endpoint, BTreeSet<Endpoint>>>>;

fn watch_toa(net: &mut Network<Engine>, host: HostId) -> ToaSeen {
    let seen = ToaSeen::default();
    let s = seen.clone();
    net.set_observer(host, move |_, pkt| {
        let Some(info) = PacketInfo::parse(pkt).filter(|i| i.proto == 6) else { return };
        let ip_len = if pkt[0] >> 4 == 4 { usize::from(pkt[0] & 0x0f) * 4 } else { 40 };
        let Ok(seg) = tcp::Packet::new_checked(&pkt[ip_len..]) else { return };
        for (_, opt) in seg.options_iter().flatten() {
            let TcpOption::Unknown { kind: 254, data } = opt else { continue };
            let addr = match data.len() {
                6 => IpAddr::from(<[u8; 4]>::try_from(&data[2..]).unwrap()),
                18 => IpAddr::from(<[u8; 16]>::try_from(&data[2..]).unwrap()),
                n => panic!("a TOA option of {} bytes", n + 2),
            };
            let client = Endpoint::new(addr, u16::from_be_bytes([data[0], data[1]]));
            s.borrow_mut().entry(info.src_endpoint()).or_default().insert(client);
        }
    });
    seen
}

/// Run `CLIENTS × PER_CLIENT` exchanges; check every real saw its true
/// client in the header, byte-exact streams after it. Returns, per
/// connection, how long before the client's first byte the header was
/// complete at the real (negative: after).
fn run(c: Case) -> Vec<i128> {
    let impaired =
        |loss: f64| LinkConfig { loss, duplicate: loss / 2.0, reorder: loss / 2.0, ..LinkConfig::default() };
    let (client_link, link) = (impaired(c.client_loss), impaired(c.loss));
    let mut net = Network::new(engine(c), NetworkConfig::seeded(c.seed));
    let family = c.family;
    let _pcap = net.pcap_on_failure(&format!("client_addr_{}_{family}", c.seed));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let addr = family.client(&format!("192.0.2.{}", i + 1));
            net.add_host(&format!("client{i}"), &[addr], client_link)
        })
        .collect();
    let reals: Vec<_> = REALS
        .iter()
        .enumerate()
        .map(|(i, r)| net.add_host(&format!("real{i}"), &[family.backend(r)], link))
        .collect();
    let toa: Vec<_> = reals.iter().map(|&h| watch_toa(&mut net, h)).collect();
    let srv: Vec<_> = reals
        .iter()
        .map(|&h| {
            net.add_app(
                h,
                TcpServer::new(TcpServerConfig {
                    proxy_protocol: true,
                    closer: Closer::Client,
                    ..TcpServerConfig::new(80)
                }),
            )
        })
        .collect();
    let clis: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, &h)| {
            let mut cfg = TcpClientConfig::new(vip(family), PER_CLIENT, 300, 3000);
            cfg.concurrency = 4;
            cfg.first_id = (i * PER_CLIENT) as u64;
            cfg.send_delay = c.send_delay;
            // The client closes first: when the server does and its last
            // ACK is lost twice, the client's FIN comes back after the
            // classic 3 s TIME_WAIT of the balancer's entry, a FullNAT
            // trait this test is not about.
            cfg.closer = Closer::Client;
            net.add_app(h, TcpClient::new(cfg))
        })
        .collect();
    let done = net.run_for(Duration::from_secs(900), |n| clis.iter().all(|a| n.app(a).finished()));
    assert!(done, "{c:?}: clients did not finish");
    let mut clients_by_id = HashMap::new();
    for a in &clis {
        let app = net.app(a);
        assert_eq!(app.ok_count(), PER_CLIENT, "{c:?}: failure {:?}", app.failures().next());
        for conn in app.conns() {
            assert_eq!((conn.sent, conn.received), (300, 3000), "{c:?}: not byte-exact");
            clients_by_id.insert(conn.id, (conn.local.unwrap(), conn.connected.unwrap()));
        }
    }
    let mut lead = Vec::new();
    let mut verified = 0;
    for (s, toa) in srv.iter().zip(&toa) {
        let app = net.app(s);
        verified += app.stats().bytes_verified;
        for conn in app.conns() {
            let Some(id) = conn.id else { continue };
            let (local, connected) = clients_by_id[&id];
            assert_eq!(conn.proxied, Some(local), "{c:?}: connection {id} announced the wrong client");
            if c.toa {
                let seen = toa.borrow().get(&conn.remote).cloned().unwrap_or_default();
                assert!(seen.contains(&local), "{c:?}: connection {id}: TOA named {seen:?}, not {local}");
            }
            let spoke = connected + c.send_delay;
            let at = conn.proxied_at.unwrap();
            lead.push(spoke.as_nanos() as i128 - at.as_nanos() as i128);
        }
    }
    assert_eq!(
        lead.len(),
        CLIENTS * PER_CLIENT,
        "{c:?}: one proxied real-side connection per client connection"
    );
    assert_eq!(verified, (CLIENTS * PER_CLIENT * 300) as u64);
    let lb = net.middlebox();
    let st = lb.client_addr_stats();
    eprintln!("{c:?}: {st:?}");
    assert_eq!(st.proxy_headers, (CLIENTS * PER_CLIENT) as u64, "{c:?}: one header per connection");
    assert_eq!(st.proxy_gave_up, 0);
    if c.toa {
        assert!(st.toa_inserted >= (CLIENTS * PER_CLIENT) as u64, "{c:?}: TOA on every connection");
    }
    if c.loss > 0.0 {
        assert!(st.proxy_resent > 0, "{c:?}: loss this heavy must have cost some header");
    }
    assert_eq!(lb.open_deliveries(), 0, "{c:?}: deliveries left open");
    lead
}

fn every_real_learns_its_true_client_under_loss_on_both_legs(family: Family) {
    for (seed, version, synproxy, toa) in [
        (1, ProxyProtocol::V1, false, false),
        (2, ProxyProtocol::V2, false, true),
        (3, ProxyProtocol::V1, true, true),
        (4, ProxyProtocol::V2, true, false),
    ] {
        let send_delay = Duration::ZERO;
        run(Case { family, seed, version, synproxy, toa, loss: 0.05, client_loss: 0.05, send_delay });
    }
}

fn a_silent_client_still_has_its_header_delivered_first(family: Family) {
    // The header must reach the real on the engine's own resend timer,
    // long before a client of a server-speaks-first protocol says anything.
    // With SYNProxy the client's link is clean: a silent client whose
    // handshake ACK is lost leaves a SYN cookie nothing to check until it
    // speaks (the balancer holds no state for it, by design), so its
    // header can only go out then.
    let delay = Duration::from_secs(2);
    for (seed, synproxy, client_loss) in [(5, false, 0.05), (6, true, 0.0)] {
        let c = Case {
            family,
            seed,
            version: ProxyProtocol::V1,
            synproxy,
            toa: false,
            loss: 0.05,
            client_loss,
            send_delay: delay,
        };
        let lead = run(c);
        let worst = lead.iter().min().copied().unwrap();
        assert!(worst > 0, "{c:?}: a header arrived only after the client spoke ({worst} ns)");
    }
}
