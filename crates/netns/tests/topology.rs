//! Builds real topologies (root needed) and checks reachability and cleanup.
//! Reachability is tested with TCP connects from in-process threads rather
//! than `ping`, so nothing beyond iproute2 is needed.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use rvs_netns::{Netns, Topology, TopologySpec, cleanup_stale, netns_tests_enabled};

/// Listens in `server` on `addr`, connects from `client`, and checks that a
/// byte makes the round trip.
fn reach(client: &Netns, server: &Netns, addr: Ipv4Addr) -> std::io::Result<()> {
    let listener = server.run_in(|| TcpListener::bind((addr, 0)))??;
    let target: SocketAddr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        s.write_all(&b)
    });
    let result = client.run_in(|| -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"x")?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        assert_eq!(&b, b"x");
        Ok(())
    })?;
    if result.is_ok() {
        echo.join().expect("echo thread")?;
    }
    result
}

#[test]
fn client_and_reals_reach_the_balancer_and_each_other() {
    if !netns_tests_enabled("client_and_reals_reach_the_balancer_and_each_other") {
        return;
    }
    let t = Topology::build(&TopologySpec { reals: 3, ..Default::default() }).unwrap();
    reach(t.ns_client(), t.ns_lb(), t.lb_client_addr()).unwrap();
    for i in 0..3 {
        reach(t.ns_real(i), t.ns_lb(), t.lb_real_addr()).unwrap();
    }
    // Through the balancer's kernel forwarding, both ways.
    let real2 = t.real_addrs()[1];
    reach(t.ns_client(), t.ns_real(1), real2).unwrap();
    reach(t.ns_real(2), t.ns_client(), t.client_addr()).unwrap();
}

#[test]
fn drop_removes_namespaces_even_on_panic() {
    if !netns_tests_enabled("drop_removes_namespaces_even_on_panic") {
        return;
    }
    let t = Topology::build(&TopologySpec::default()).unwrap();
    let names: Vec<Netns> = [t.ns_client(), t.ns_lb()].into_iter().chain(t.ns_reals()).cloned().collect();
    assert!(names.iter().all(Netns::exists));
    let prefix = t.prefix().to_owned();
    let r = std::panic::catch_unwind(move || {
        let _t = t;
        panic!("test failure while a topology is alive");
    });
    assert!(r.is_err());
    assert!(names.iter().all(|n| !n.exists()), "namespaces left behind: {names:?}");
    // Nothing left to clean under that prefix.
    assert_eq!(cleanup_stale(&prefix).unwrap(), 0);
}

#[test]
fn teardown_is_idempotent_and_adopted_processes_end_first() {
    if !netns_tests_enabled("teardown_is_idempotent_and_adopted_processes_end_first") {
        return;
    }
    let mut t = Topology::build(&TopologySpec::default()).unwrap();
    let child = t.ns_lb().spawn("sleep", ["30"]).unwrap();
    let pid = child.pid();
    t.adopt(child);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    t.teardown().unwrap();
    t.teardown().unwrap();
    assert!(!t.ns_lb().exists());
    // Reaped by the guard, so the PID is gone (or reused by something that is not ours).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(!stat.starts_with("sleep"));
}

#[test]
fn two_topologies_at_once_do_not_collide() {
    if !netns_tests_enabled("two_topologies_at_once_do_not_collide") {
        return;
    }
    let handles: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(|| {
                let t = Topology::build(&TopologySpec::default()).unwrap();
                reach(t.ns_client(), t.ns_real(0), t.real_addrs()[0]).unwrap();
                t.prefix().to_owned()
            })
        })
        .collect();
    let prefixes: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_ne!(prefixes[0], prefixes[1]);
}

#[test]
fn stale_namespaces_of_a_crashed_run_are_removed() {
    if !netns_tests_enabled("stale_namespaces_of_a_crashed_run_are_removed") {
        return;
    }
    /// Removes what `keep` left even if an assertion fails first.
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = cleanup_stale(&self.0);
        }
    }
    let mut t = Topology::build(&TopologySpec::default()).unwrap();
    let _remove = Remove(t.prefix().to_owned());
    let with_loss = rvs_netns::nft_available();
    if with_loss {
        t.inject_loss(1.0).unwrap();
    }
    let lb = t.ns_lb().clone();
    let prefix = t.prefix().to_owned();
    // Pretend the run crashed: the namespaces stay, nobody owns them.
    let names = t.keep();
    assert_eq!(names.len(), 4);
    if with_loss {
        // Kept means kept: the loss rules too.
        assert!(lb.run("nft", ["list", "tables"]).unwrap().contains("rvs_loss"));
    }
    assert_eq!(cleanup_stale(&prefix).unwrap(), 4);
    assert!(names.iter().all(|n| !Netns::new(n.as_str()).exists()));
}

#[test]
fn loss_drops_toward_and_from_the_reals() {
    if !netns_tests_enabled("loss_drops_toward_and_from_the_reals") {
        return;
    }
    if !rvs_netns::nft_available() {
        eprintln!("loss_drops_toward_and_from_the_reals: skipped (no nft)");
        return;
    }
    let mut t = Topology::build(&TopologySpec::default()).unwrap();
    t.inject_loss(100.0).unwrap();
    assert!(t.loss_uses_egress().is_some());
    assert!(reach(t.ns_lb(), t.ns_real(0), t.real_addrs()[0]).is_err());
    assert!(t.loss_dropped().unwrap() > 0);
    t.inject_loss(0.0).unwrap();
    assert_eq!(t.loss_uses_egress(), None);
    reach(t.ns_lb(), t.ns_real(0), t.real_addrs()[0]).unwrap();
    reach(t.ns_client(), t.ns_lb(), t.lb_client_addr()).unwrap();
}

#[test]
fn syn_loss_stops_new_connections_but_not_established_ones() {
    if !netns_tests_enabled("syn_loss_stops_new_connections_but_not_established_ones") {
        return;
    }
    if !rvs_netns::nft_available() {
        eprintln!("syn_loss_stops_new_connections_but_not_established_ones: skipped (no nft)");
        return;
    }
    let mut t = Topology::build(&TopologySpec::default()).unwrap();
    let addr = t.real_addrs()[0];
    let listener = t.ns_real(0).run_in(|| TcpListener::bind((addr, 0))).unwrap().unwrap();
    let target = listener.local_addr().unwrap();
    let client_ns = t.ns_client().clone();
    let connect = |timeout| client_ns.run_in(|| TcpStream::connect_timeout(&target, timeout)).unwrap();
    // Established before the loss, through the balancer's kernel forwarding.
    let mut client = connect(Duration::from_secs(5)).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }

    t.inject_syn_loss(100.0).unwrap();
    // A new handshake dies at its first SYN.
    assert!(connect(Duration::from_millis(1500)).is_err());
    let dropped = t.loss_dropped().unwrap();
    assert!(dropped > 0);
    // Data and ACKs on the established connection pass, both ways.
    let mut b = [0u8; 5];
    for round in 0..3u8 {
        client.write_all(&[round; 5]).unwrap();
        server.read_exact(&mut b).unwrap();
        server.write_all(&b).unwrap();
        client.read_exact(&mut b).unwrap();
        assert_eq!(b, [round; 5]);
    }
    assert_eq!(t.loss_dropped().unwrap(), dropped, "only handshake packets were dropped");

    t.inject_syn_loss(0.0).unwrap();
    assert!(connect(Duration::from_secs(5)).is_ok());
}
