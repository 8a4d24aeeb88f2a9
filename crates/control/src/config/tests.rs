//! The config file: reading, errors, writing, reloading.

use super::*;
use rvs_core::{Endpoint, Proto, ProxyProtocol, SchedKind, TcpState};

const EXAMPLE: &str = include_str!("../../../../docs/rvs.example.toml");

fn ep(s: &str) -> Endpoint {
    s.parse::<SocketAddr>().unwrap().into()
}

/// The error for `text`, checked to sit on `line` at `key`.
fn err_at(text: &str, line: usize, key: &str) -> ConfigFileError {
    let e = Config::parse(text).expect_err(text);
    assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
    e
}

const ONE_SERVICE: &str = "\
[[service]]
vip = \"10.0.0.1:80\"
laddrs = [\"10.0.2.1\"]

[[service.real]]
addr = \"10.0.1.1:80\"

[[service.real]]
addr = \"10.0.1.2:80\"
weight = 2
";

#[test]
fn empty_file_is_all_defaults() {
    assert_eq!(Config::parse("").unwrap(), Config::default());
    assert_eq!(Config::parse("# nothing\n\n").unwrap(), Config::default());
    let c = Config::default();
    assert_eq!(c.daemon.control_socket, Path::new("/run/rvs/rvs.sock"));
    assert_eq!((c.driver.tun_name.as_str(), c.driver.batch), ("rvs0", 64));
    // On by default: it does something only with the xdp driver.
    assert_eq!((c.driver.fast_path, c.driver.fast_path_after), (true, 0));
    assert_eq!(c.engine.port_range, (1024, 65535));
    assert_eq!(c.metrics.listen, None);
    assert!(c.model.services.is_empty());
}

#[test]
fn example_parses_and_round_trips() {
    let c = Config::parse(EXAMPLE).unwrap();
    assert_eq!(c.model.services.len(), 4);
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9108".parse().unwrap()));
    assert_eq!(c.model.timeouts.tcp(TcpState::Established), Duration::from_secs(900));
    assert_eq!(c.engine.timeouts, c.model.timeouts);
    let https = &c.model.services[&(Proto::Tcp, ep("10.0.0.1:443"))];
    assert_eq!(https.config.sched, SchedKind::Mh);
    assert!(https.config.synproxy);
    let own = https.config.timeouts.unwrap();
    assert_eq!(own.tcp(TcpState::Established), Duration::from_secs(3600));
    assert_eq!(own.tcp(TcpState::FinWait), Duration::from_secs(5));
    assert_eq!(https.reals[0].weight, 1);
    let http = &c.model.services[&(Proto::Tcp, ep("10.0.0.1:80"))];
    assert_eq!(http.config.mss_clamp, Some(1400));
    assert_eq!((http.config.toa, http.config.proxy_protocol), (true, ProxyProtocol::Disabled));
    assert!(!https.config.toa);
    assert_eq!(http.reals.iter().map(|r| r.weight).collect::<Vec<_>>(), [3, 1, 0]);
    assert!(c.model.services.contains_key(&(Proto::Udp, ep("10.0.0.53:53"))));
    assert!(c.model.services.contains_key(&(Proto::Tcp, ep("[2001:db8::1]:80"))));

    let text = c.to_toml();
    assert_eq!(Config::parse(&text).unwrap(), c, "{text}");
}

/// The reference's listing of every key holds the defaults and one service.
#[test]
fn reference_listing_is_the_defaults() {
    let doc = include_str!("../../../../docs/CONFIG.md");
    let block = doc.split("## Every key with its default").nth(1).unwrap();
    let text = block.split("```toml").nth(1).unwrap().split("```").next().unwrap();
    let mut c = Config::parse(text).unwrap();
    assert_eq!(c.model.services.len(), 1);
    c.model.services.clear();
    assert_eq!(c, Config::default());
}

/// The reference's listing names every key the file has, commented-out
/// ones included, and no other: the struct fields that define the keys and
/// the operator's reference cannot drift apart.
#[test]
fn reference_listing_names_every_key() {
    fn keys(prefix: &str, v: &toml::Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            toml::Value::Table(t) => t.iter().for_each(|(k, v)| {
                keys(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out);
            }),
            toml::Value::Array(items) if items.iter().all(toml::Value::is_table) && !items.is_empty() => {
                items.iter().for_each(|v| keys(prefix, v, out));
            }
            _ => {
                out.insert(prefix.to_owned());
            }
        }
    }
    let doc = include_str!("../../../../docs/CONFIG.md");
    let block = doc.split("## Every key with its default").nth(1).unwrap();
    let listing = block.split("```toml").nth(1).unwrap().split("```").next().unwrap();
    let uncommented: String =
        listing.lines().map(|l| l.strip_prefix("# ").unwrap_or(l)).collect::<Vec<_>>().join("\n");
    let mut documented = Default::default();
    keys("", &toml::from_str(&uncommented).unwrap(), &mut documented);

    let mut c = Config::parse(ONE_SERVICE).unwrap();
    c.metrics.listen = Some("127.0.0.1:9108".parse().unwrap());
    let spec = c.model.services.values_mut().next().unwrap();
    spec.config.timeouts = Some(c.model.timeouts);
    spec.config.mss_clamp = Some(1400);
    let first = spec.reals[0].endpoint;
    spec.checks.insert(first, "tcp".parse().unwrap());
    let mut written = Default::default();
    keys("", &toml::from_str(&c.to_toml()).unwrap(), &mut written);
    assert_eq!(documented, written);
}

#[test]
fn every_setting_round_trips() {
    let mut c = Config::parse(EXAMPLE).unwrap();
    c.daemon.log_level = "debug \"quoted\"".to_owned();
    c.driver.fault_loss_pct = 2.5;
    c.driver.fault_syn_loss_pct = 5.0;
    c.driver.batch = 1;
    c.driver.cpus = vec![3];
    c.driver.kind = DriverKind::Xdp;
    c.driver.interfaces = vec!["veth0".to_owned(), "eth1".to_owned()];
    c.driver.xdp_mode = XdpMode::Generic;
    c.driver.fast_path = false;
    c.driver.fast_path_after = 10;
    c.engine.decrement_ttl = false;
    c.synproxy.retransmit_mode = RetransmitMode::Classic;
    c.synproxy.sack = false;
    c.synproxy.syn_retries = 0;
    c.metrics.listen = Some("[::1]:9108".parse().unwrap());
    assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
    let d = Config::default();
    assert_eq!(Config::parse(&d.to_toml()).unwrap(), d);
}

#[test]
fn type_and_unknown_key_errors_name_line_and_key() {
    let bad_weight = ONE_SERVICE.replace("weight = 2", "weight = -1");
    let e = err_at(&bad_weight, 10, "service[0].real[1].weight");
    assert_eq!(e.column, Some(10));
    assert!(e.message.contains("invalid value"), "{e}");
    assert!(e.to_string().starts_with("line 10, column 10, key service[0].real[1].weight: invalid value"));

    err_at(&format!("{ONE_SERVICE}wieght = 3\n"), 11, "service[0].real[1].wieght");
    err_at("[driver]\nbatch = \"many\"\n", 2, "driver.batch");
    err_at("[engine]\nport_range = [1, 2, 3]\n", 2, "engine.port_range");
    err_at("\n[deamon]\n", 2, "deamon");
    err_at("[[service]]\nvip = \"10.0.0.1:80\"\nladdrs = \"10.0.2.1\"\n", 3, "service[0].laddrs");
    let e = err_at("[[service]]\nproto = \"tcp\"\n", 1, "service[0].vip");
    assert!(e.message.contains("missing"), "{e}");
}

#[test]
fn syntax_error_names_line() {
    let e = Config::parse("[driver]\ntun_name = \"rvs0\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
}

#[test]
fn semantic_errors_name_line_and_key() {
    err_at(
        &ONE_SERVICE.replace("vip = \"10.0.0.1:80\"", "vip = \"10.0.0.1:80\"\nsched = \"fastest\""),
        3,
        "service[0].sched",
    );
    err_at(&ONE_SERVICE.replace("10.0.0.1:80", "10.0.0.1:0"), 2, "service[0].vip");
    err_at(&ONE_SERVICE.replace("10.0.1.2:80", "10.0.1.2:0"), 9, "service[0].real[1].addr");
    err_at(&ONE_SERVICE.replace("10.0.0.1:80", "10.0.0.1"), 2, "service[0].vip");
    let e = err_at(&ONE_SERVICE.replace("10.0.1.2:80", "10.0.1.1:80"), 9, "service[0].real[1].addr");
    assert!(e.message.contains("duplicate real"), "{e}");
    let e = err_at(&ONE_SERVICE.replace("10.0.1.2:80", "[2001:db8::2]:80"), 9, "service[0].real[1].addr");
    assert!(e.message.contains("family"), "{e}");
    err_at(&ONE_SERVICE.replace("\"10.0.2.1\"", "\"10.0.2.1\", \"::1\""), 3, "service[0].laddrs[1]");
    err_at(&ONE_SERVICE.replace("\"10.0.2.1\"", "\"10.0.2.1\", \"10.0.2.1\""), 3, "service[0].laddrs[1]");
    let e = err_at(&format!("{ONE_SERVICE}\n[[service]]\nvip = \"10.0.0.1:80\"\n"), 13, "service[1].vip");
    assert!(e.message.contains("duplicate service") && e.message.contains("line 2"), "{e}");
    // The same VIP:port under another protocol is another service.
    Config::parse(&format!("{ONE_SERVICE}\n[[service]]\nproto = \"udp\"\nvip = \"10.0.0.1:80\"\n")).unwrap();
    err_at(&format!("{ONE_SERVICE}\n[[service]]\nproto = \"sctp\"\n"), 13, "service[1].proto");
    err_at(
        "[[service]]\nproto = \"udp\"\nvip = \"10.0.0.1:53\"\nconn_timeout = 5\n",
        4,
        "service[0].conn_timeout",
    );
    err_at("[[service]]\nvip = \"10.0.0.1:80\"\nmss_clamp = 100\n", 3, "service[0].mss_clamp");
    err_at(
        "[[service]]\nvip = \"10.0.0.1:80\"\n[[service.real]]\nweight = 1\n",
        3,
        "service[0].real[0].addr",
    );

    let e = err_at("[engine]\nport_range = [2000, 1000]\n", 2, "engine.port_range");
    assert_eq!(e.column, Some(14));
    err_at("[engine]\nport_range = [0, 1000]\n", 2, "engine.port_range");
    err_at("[engine]\nmax_conns = 10\nprealloc_conns = 11\n", 3, "engine.prealloc_conns");
    err_at("[driver]\n\nfault_loss_pct = 100.5\n", 3, "driver.fault_loss_pct");
    err_at("[driver]\nfault_loss_pct = -1\n", 2, "driver.fault_loss_pct");
    err_at("[driver]\nfault_syn_loss_pct = 101\n", 2, "driver.fault_syn_loss_pct");
    err_at("[driver]\nfault_syn_loss_pct = nan\n", 2, "driver.fault_syn_loss_pct");
    err_at("[driver]\nbatch = 0\n", 2, "driver.batch");
    err_at("[driver]\nbatch = 1025\n", 2, "driver.batch");
    err_at("[driver]\nworkers = 0\n", 2, "driver.workers");
    err_at("[driver]\nkind = \"xdp\"\ninterfaces = [\"eth0\"]\nworkers = 17\n", 4, "driver.workers");
    assert_eq!(Config::parse("[driver]\nworkers = 2\n").unwrap().driver.workers, 2);
    let c = Config::parse("[driver]\nkind = \"xdp\"\ninterfaces = [\"eth0\"]\nworkers = 2\n").unwrap();
    assert_eq!(c.driver.workers, 2);
    let c = Config::parse("[driver]\nworkers = 2\ncpus = [1, 0]\n").unwrap();
    assert_eq!(c.driver.cpus, [1, 0]);
    err_at("[driver]\nworkers = 2\ncpus = [1]\n", 3, "driver.cpus");
    err_at("[driver]\ncpus = [4096]\n", 2, "driver.cpus");
    err_at("[driver]\ntun_name = \"a-very-long-name0\"\n", 2, "driver.tun_name");
    let e = err_at("[driver]\nkind = \"af_xdp\"\n", 2, "driver.kind");
    assert!(e.message.contains("use \"tun\" or \"xdp\""), "{e}");
    let e = err_at("[driver]\nkind = \"xdp\"\n", 2, "driver.kind");
    assert!(e.message.contains("needs at least one entry in driver.interfaces"), "{e}");
    err_at("[driver]\nkind = \"xdp\"\ninterfaces = []\n", 3, "driver.interfaces");
    err_at("[driver]\ninterfaces = [\"eth0\", \"a b\"]\n", 2, "driver.interfaces[1]");
    err_at("[driver]\ninterfaces = [\"eth0\", \"eth0\"]\n", 2, "driver.interfaces[1]");
    err_at("[driver]\nxdp_mode = \"offload\"\n", 2, "driver.xdp_mode");
    assert_eq!(Config::parse("[driver]\nxdp_mode = \"auto\"\n").unwrap().driver.xdp_mode, XdpMode::Auto);
    err_at("[driver]\nfast_path = \"yes\"\n", 2, "driver.fast_path");
    err_at("[driver]\nfast_path_after = -1\n", 2, "driver.fast_path_after");
    let e = err_at("[driver]\nfast_path = true\nfast_path_after = 2000000\n", 3, "driver.fast_path_after");
    assert!(e.message.contains(&format!("out of range 0..={MAX_FAST_PATH_AFTER}")), "{e}");
    err_at("[timeouts]\nestablished = 0\n", 2, "timeouts.established");
    err_at("[synproxy]\nwscale = 15\n", 2, "synproxy.wscale");
    err_at("[synproxy]\nrto_floor_ms = 300\n", 2, "synproxy.rto_floor_ms");
    err_at("[synproxy]\nrto_floor_ms = 300\nrto_initial_ms = 250\n", 3, "synproxy.rto_initial_ms");
    err_at(
        "[[service]]\nproto = \"udp\"\nvip = \"10.0.0.1:53\"\nsynproxy = true\n",
        4,
        "service[0].synproxy",
    );
    err_at("[synproxy]\nretransmit_mode = \"eager\"\n", 2, "synproxy.retransmit_mode");
    let udp = "[[service]]\nproto = \"udp\"\nvip = \"10.0.0.1:53\"\n";
    let e = err_at(&format!("{udp}toa = true\n"), 4, "service[0].toa");
    assert!(e.message.contains("tcp services only"), "{e}");
    let e = err_at(&format!("{udp}proxy_protocol = \"v1\"\n"), 4, "service[0].proxy_protocol");
    assert!(e.message.contains("tcp services only"), "{e}");
    let e = err_at(
        "[[service]]\nvip = \"10.0.0.1:80\"\nproxy_protocol = \"v3\"\n",
        3,
        "service[0].proxy_protocol",
    );
    assert_eq!(e.column, Some(18));
    assert!(e.message.contains("\"disable\", \"v1\", \"v2\""), "{e}");
    err_at("[[service]]\nvip = \"10.0.0.1:80\"\ntoa = \"yes\"\n", 3, "service[0].toa");
    err_at("[[service]]\nvip = \"10.0.0.1:80\"\nproxy_protocol = 2\n", 3, "service[0].proxy_protocol");
    err_at("[metrics]\nlisten = \"localhost:9108\"\n", 2, "metrics.listen");
}

/// A service's local addresses and reals share one family; a break of the
/// rule names its key, whatever the VIP's family.
#[test]
fn family_errors_name_the_key() {
    let nat64 = "[[service]]\nvip = \"[2001:db8::1]:80\"\nladdrs = [\"10.0.3.1\", \"2001:db8::5\"]\n";
    let e = err_at(nat64, 3, "service[0].laddrs[1]");
    assert!(e.message.contains("IPv6 address 2001:db8::5") && e.message.contains("share one family"), "{e}");
    let nat64 = "[[service]]\nvip = \"[2001:db8::1]:80\"\nladdrs = [\"10.0.3.1\"]\n\
                 [[service.real]]\naddr = \"[2001:db8::2]:80\"\n";
    err_at(nat64, 5, "service[0].real[0].addr");
    let nat46 = "[[service]]\nproto = \"udp\"\nvip = \"10.0.0.1:53\"\n\
                 [[service.real]]\naddr = \"[fd10:77:1::11]:53\"\n\
                 [[service.real]]\naddr = \"10.0.1.1:53\"\n";
    let e = err_at(nat46, 7, "service[0].real[1].addr");
    assert!(e.message.contains("are IPv6 (fd10:77:1::11)"), "{e}");
}

/// The reference's example of each family reads, and writes back as it reads.
#[test]
fn reference_families_parse() {
    let doc = include_str!("../../../../docs/CONFIG.md");
    let block = doc.split("### Address families").nth(1).unwrap();
    let text = block.split("```toml").nth(1).unwrap().split("```").next().unwrap();
    let c = Config::parse(text).unwrap();
    let families: Vec<(bool, bool)> = c
        .model
        .services
        .values()
        .map(|s| (s.config.vip.addr.is_ipv6(), s.reals[0].endpoint.addr.is_ipv6()))
        .collect();
    // Ordered by (proto, VIP): TCP IPv6 FullNAT and NAT64, then UDP NAT46.
    assert_eq!(families, [(true, true), (true, false), (false, true)]);
    assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
}

#[test]
fn synproxy_default_applies_to_tcp_services_without_the_key() {
    let text = "[synproxy]\nenabled_by_default = true\n\
        [[service]]\nvip = \"10.0.0.1:80\"\n\
        [[service]]\nvip = \"10.0.0.1:81\"\nsynproxy = false\n\
        [[service]]\nproto = \"udp\"\nvip = \"10.0.0.1:53\"\n";
    let c = Config::parse(text).unwrap();
    let on: Vec<_> = c.model.services.values().map(|s| s.config.synproxy).collect();
    assert_eq!(on, [true, false, false]);
    assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
}

#[test]
fn client_address_keys_are_per_service() {
    let text = "[[service]]\nvip = \"10.0.0.1:80\"\ntoa = true\nproxy_protocol = \"v2\"\n\
        [[service]]\nvip = \"10.0.0.1:81\"\nproxy_protocol = \"v1\"\n\
        [[service]]\nvip = \"10.0.0.1:82\"\ntoa = false\nproxy_protocol = \"disable\"\n\
        [[service]]\nproto = \"udp\"\nvip = \"10.0.0.1:53\"\ntoa = false\nproxy_protocol = \"disable\"\n";
    let c = Config::parse(text).unwrap();
    let got: Vec<_> = c.model.services.values().map(|s| (s.config.toa, s.config.proxy_protocol)).collect();
    assert_eq!(
        got,
        [
            (true, ProxyProtocol::V2),
            (false, ProxyProtocol::V1),
            (false, ProxyProtocol::Disabled),
            (false, ProxyProtocol::Disabled)
        ]
    );
    let text = c.to_toml();
    assert!(text.contains("toa = true\nproxy_protocol = \"v2\"\n"), "{text}");
    assert_eq!(Config::parse(&text).unwrap(), c, "{text}");
}

#[test]
fn conn_timeout_replaces_established_only() {
    let text = "[timeouts]\nfin_wait = 7\n[[service]]\nvip = \"10.0.0.1:80\"\nconn_timeout = 600\n";
    let c = Config::parse(text).unwrap();
    let own = c.model.services.values().next().unwrap().config.timeouts.unwrap();
    let mut want = c.model.timeouts;
    want.set_tcp(TcpState::Established, Duration::from_secs(600));
    assert_eq!(own, want);
    assert_eq!(own.tcp(TcpState::FinWait), Duration::from_secs(7));
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("rvs-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rvs.toml");
    std::fs::write(&path, "[driver]\nbatch = 0\n").unwrap();
    let e = Config::load(&path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: line 2, column 9, key driver.batch: batch 0 out of range 1..=1024", path.display())
    );
    std::fs::write(&path, ONE_SERVICE).unwrap();
    assert_eq!(Config::load(&path).unwrap().model.services.len(), 1);
    let missing = Config::load(&dir.join("none.toml")).unwrap_err();
    assert!(missing.to_string().contains("none.toml: cannot read"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reload_may_change_services_but_not_the_driver() {
    let old = Config::parse(EXAMPLE).unwrap();
    let mut new = Config::parse(ONE_SERVICE).unwrap();
    new.daemon = old.daemon.clone();
    new.driver = old.driver.clone();
    new.engine = EngineConfig { timeouts: new.engine.timeouts, ..old.engine.clone() };
    new.metrics = old.metrics;
    new.synproxy.enabled_by_default = true;
    new.daemon.log_level = "debug".to_owned();
    assert_eq!(old.check_reloadable(&new), Ok(()));

    new.driver.tun_name = "rvs1".to_owned();
    let e = old.check_reloadable(&new).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("driver.tun_name"));
    assert!(e.to_string().starts_with("key driver.tun_name: cannot change on reload"), "{e}");

    let mut new = old.clone();
    new.engine.port_range = (2000, 3000);
    assert_eq!(old.check_reloadable(&new).unwrap_err().key.as_deref(), Some("engine.port_range"));
    let mut new = old.clone();
    new.metrics.listen = None;
    assert_eq!(old.check_reloadable(&new).unwrap_err().key.as_deref(), Some("metrics.listen"));
    let mut new = old.clone();
    new.driver.fault_syn_loss_pct = 5.0;
    assert_eq!(old.check_reloadable(&new).unwrap_err().key.as_deref(), Some("driver.fault_syn_loss_pct"));
}

#[test]
fn syn_loss_is_its_own_key_beside_all_packet_loss() {
    let c = Config::parse("[driver]\nfault_syn_loss_pct = 5\n").unwrap();
    assert_eq!((c.driver.fault_loss_pct, c.driver.fault_syn_loss_pct), (0.0, 5.0));
    let c = Config::parse("[driver]\nfault_loss_pct = 1.5\nfault_syn_loss_pct = 100.0\n").unwrap();
    assert_eq!((c.driver.fault_loss_pct, c.driver.fault_syn_loss_pct), (1.5, 100.0));
    assert_eq!(Config::default().driver.fault_syn_loss_pct, 0.0);
}
