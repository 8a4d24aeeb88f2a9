//! ipvsadm argv parsing: short and long forms, clustered short flags
//! (`-Ln`), attached values (`-w3`, `--weight=3`), IPv6 in brackets.
//!
//! Every error is one line, and the command is rejected whole: a parse never
//! yields a half-understood command.

use std::net::{IpAddr, Ipv6Addr};

use rvs_core::{Endpoint, Proto, ProxyProtocol, SchedKind};

use super::{Command, ListArgs, ListView, MAX_WEIGHT, RealArgs, ServiceArgs};
use crate::health::{CheckSpec, Maintenance};
use crate::model::ServiceKey;

/// What `-h` prints.
pub const USAGE: &str = "\
Usage:
  rvs adm -A|E -t|u service-address [-s scheduler] [-j enable|disable]
               [--toa enable|disable] [--proxy-protocol disable|v1|v2] [--conn-timeout secs]
               [--check check]
  rvs adm -D -t|u service-address
  rvs adm -C
  rvs adm -R
  rvs adm -S [-n]
  rvs adm -a|e -t|u service-address -r server-address [-b] [-w weight]
               [--check check] [--maintenance auto|up|down]
  rvs adm -d -t|u service-address -r server-address
  rvs adm -P|Q -t|u service-address -z local-address
  rvs adm -G [-t|u service-address]
  rvs adm -L|l [-t|u service-address] [options]
  rvs adm -Z
  rvs adm --set tcp tcpfin udp
  rvs adm -h

Commands:
Either long or short options are allowed.
  --add-service     -A        add virtual service with options
  --edit-service    -E        edit virtual service with options
  --delete-service  -D        delete virtual service
  --clear           -C        clear the whole table
  --restore         -R        restore rules from stdin, all or nothing
  --save            -S        save rules to stdout
  --add-server      -a        add real server with options
  --edit-server     -e        edit real server with options
  --delete-server   -d        delete real server
  --add-laddr       -P        add local address
  --del-laddr       -Q        delete local address
  --get-laddr       -G        list local addresses and their ports
  --list            -L|-l     list the table
  --zero            -Z        zero the counters of every service
  --set tcp tcpfin udp        set connection timeout values (seconds, 0 keeps)
  --help            -h        display this help message

Options:
  --tcp-service  -t service-address   service-address is ip:port, [ipv6]:port
  --udp-service  -u service-address   service-address is ip:port, [ipv6]:port
  --scheduler    -s scheduler         one of rr|wrr|lc|wlc|sh|mh, the default is wrr
  --synproxy     -j enable|disable    SYN-flood defence for the service
  --toa enable|disable                client address to the reals in TCP option 254 (TOA)
  --proxy-protocol disable|v1|v2      client address to the reals in a PROXY protocol header
  --conn-timeout secs                 idle timeout of established connections (0: engine's)
  --real-server  -r server-address    ip[:port], the port defaults to the service's
  --fullnat      -b                   FullNAT forwarding (the default and only method)
  --weight       -w weight            capacity of real server, 0..65535 (default 1)
  --laddr        -z local-address     local address connections to reals come from
  --numeric      -n                   numeric output (output is always numeric)
  --connection   -c                   output of current connections
  --timeout                           output of timeout (tcp tcpfin udp)
  --stats                             output of statistics information
  --rate                              output of rate information
  --exact                             expand numbers (display exact values)
  --health                            output of health checks: probers and every real's state
  --check check                       active health check: none, tcp, http:/path, udp:payload,
                                      exec:command; keys before the ':' (port=, interval=,
                                      timeout=, rise=, fall=, status=, body=, host=, expect=),
                                      e.g. http,status=200-299:/healthz (docs/CONFIG.md)
  --maintenance auto|up|down          force a real up or down whatever its checks say; auto
                                      leaves it to them
  --json                              listings as JSON
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    AddService,
    EditService,
    DeleteService,
    Clear,
    Restore,
    Save,
    AddReal,
    EditReal,
    DeleteReal,
    AddLaddr,
    DelLaddr,
    GetLaddr,
    List,
    Zero,
    Set,
    Help,
}

/// Options; each may appear once (`-t` and `-u` are one option, as are the forwarding methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Service,
    Sched,
    Synproxy,
    Toa,
    ProxyProtocol,
    ConnTimeout,
    Real,
    Weight,
    Fullnat,
    Laddr,
    Numeric,
    Connection,
    Timeout,
    Stats,
    Rate,
    Exact,
    Json,
    Health,
    Check,
    Maintenance,
}

#[derive(Debug, Clone, Copy)]
enum What {
    Cmd(Cmd),
    Opt(Opt),
    /// An ipvsadm option rvs does not offer, with the reason.
    Unsupported(&'static str),
}

struct Spec {
    short: Option<char>,
    long: &'static str,
    /// How many values follow.
    values: usize,
    what: What,
    /// For `-t`/`-u`.
    proto: Option<Proto>,
}

const FULLNAT_ONLY: &str = "not supported: rvs forwards with FullNAT only (-b)";

const fn spec(short: Option<char>, long: &'static str, values: usize, what: What) -> Spec {
    Spec { short, long, values, what, proto: None }
}

const SPECS: &[Spec] = &[
    spec(Some('A'), "add-service", 0, What::Cmd(Cmd::AddService)),
    spec(Some('E'), "edit-service", 0, What::Cmd(Cmd::EditService)),
    spec(Some('D'), "delete-service", 0, What::Cmd(Cmd::DeleteService)),
    spec(Some('C'), "clear", 0, What::Cmd(Cmd::Clear)),
    spec(Some('R'), "restore", 0, What::Cmd(Cmd::Restore)),
    spec(Some('S'), "save", 0, What::Cmd(Cmd::Save)),
    spec(Some('a'), "add-server", 0, What::Cmd(Cmd::AddReal)),
    spec(Some('e'), "edit-server", 0, What::Cmd(Cmd::EditReal)),
    spec(Some('d'), "delete-server", 0, What::Cmd(Cmd::DeleteReal)),
    spec(Some('P'), "add-laddr", 0, What::Cmd(Cmd::AddLaddr)),
    spec(Some('Q'), "del-laddr", 0, What::Cmd(Cmd::DelLaddr)),
    spec(Some('G'), "get-laddr", 0, What::Cmd(Cmd::GetLaddr)),
    spec(Some('L'), "list", 0, What::Cmd(Cmd::List)),
    spec(Some('l'), "list", 0, What::Cmd(Cmd::List)),
    spec(Some('Z'), "zero", 0, What::Cmd(Cmd::Zero)),
    spec(None, "set", 3, What::Cmd(Cmd::Set)),
    spec(Some('h'), "help", 0, What::Cmd(Cmd::Help)),
    Spec {
        short: Some('t'),
        long: "tcp-service",
        values: 1,
        what: What::Opt(Opt::Service),
        proto: Some(Proto::Tcp),
    },
    Spec {
        short: Some('u'),
        long: "udp-service",
        values: 1,
        what: What::Opt(Opt::Service),
        proto: Some(Proto::Udp),
    },
    spec(Some('s'), "scheduler", 1, What::Opt(Opt::Sched)),
    spec(Some('j'), "synproxy", 1, What::Opt(Opt::Synproxy)),
    spec(None, "toa", 1, What::Opt(Opt::Toa)),
    spec(None, "proxy-protocol", 1, What::Opt(Opt::ProxyProtocol)),
    spec(None, "conn-timeout", 1, What::Opt(Opt::ConnTimeout)),
    spec(Some('r'), "real-server", 1, What::Opt(Opt::Real)),
    spec(Some('w'), "weight", 1, What::Opt(Opt::Weight)),
    spec(Some('b'), "fullnat", 0, What::Opt(Opt::Fullnat)),
    spec(Some('z'), "laddr", 1, What::Opt(Opt::Laddr)),
    spec(Some('n'), "numeric", 0, What::Opt(Opt::Numeric)),
    spec(Some('c'), "connection", 0, What::Opt(Opt::Connection)),
    spec(None, "timeout", 0, What::Opt(Opt::Timeout)),
    spec(None, "stats", 0, What::Opt(Opt::Stats)),
    spec(None, "rate", 0, What::Opt(Opt::Rate)),
    spec(None, "exact", 0, What::Opt(Opt::Exact)),
    spec(None, "json", 0, What::Opt(Opt::Json)),
    spec(None, "health", 0, What::Opt(Opt::Health)),
    spec(None, "check", 1, What::Opt(Opt::Check)),
    spec(None, "maintenance", 1, What::Opt(Opt::Maintenance)),
    spec(Some('g'), "gatewaying", 0, What::Unsupported(FULLNAT_ONLY)),
    spec(Some('i'), "ipip", 0, What::Unsupported(FULLNAT_ONLY)),
    spec(Some('m'), "masquerading", 0, What::Unsupported(FULLNAT_ONLY)),
    spec(Some('f'), "fwmark-service", 0, What::Unsupported("not supported: firewall-mark services")),
    spec(Some('p'), "persistent", 0, What::Unsupported("not supported: persistence (use -s sh or -s mh)")),
    spec(Some('M'), "netmask", 0, What::Unsupported("not supported: persistence netmask")),
    spec(Some('x'), "u-threshold", 0, What::Unsupported("not supported: connection thresholds")),
    spec(Some('y'), "l-threshold", 0, What::Unsupported("not supported: connection thresholds")),
    spec(Some('o'), "ops", 0, What::Unsupported("not supported: one-packet scheduling")),
    spec(None, "start-daemon", 0, What::Unsupported("not supported: connection sync daemon")),
    spec(None, "stop-daemon", 0, What::Unsupported("not supported: connection sync daemon")),
];

impl Spec {
    fn name(&self) -> String {
        match self.short {
            Some(c) => format!("-{c}/--{}", self.long),
            None => format!("--{}", self.long),
        }
    }
}

/// Options as given, each with its spec and values.
#[derive(Default)]
struct Given<'a> {
    cmd: Option<(Cmd, &'static Spec, Vec<&'a str>)>,
    opts: Vec<(Opt, &'static Spec, Vec<&'a str>)>,
}

impl<'a> Given<'a> {
    fn record(&mut self, spec: &'static Spec, values: Vec<&'a str>) -> Result<(), String> {
        match spec.what {
            What::Cmd(c) => {
                if let Some((_, first, _)) = &self.cmd {
                    return Err(format!(
                        "multiple commands specified ({} and {})",
                        first.name(),
                        spec.name()
                    ));
                }
                self.cmd = Some((c, spec, values));
            }
            What::Opt(o) => {
                if self.opts.iter().any(|(x, _, _)| *x == o) {
                    return Err(format!("multiple '{}' options specified", spec.name()));
                }
                self.opts.push((o, spec, values));
            }
            What::Unsupported(why) => return Err(format!("{}: {why}", spec.name())),
        }
        Ok(())
    }

    fn get(&self, o: Opt) -> Option<(&'static Spec, &'a str)> {
        self.opts.iter().find(|(x, _, _)| *x == o).map(|(_, s, v)| (*s, v.first().copied().unwrap_or("")))
    }

    fn has(&self, o: Opt) -> bool {
        self.opts.iter().any(|(x, _, _)| *x == o)
    }
}

fn take_values<'a>(
    spec: &'static Spec,
    attached: Option<&'a str>,
    rest: &mut impl Iterator<Item = &'a str>,
) -> Result<Vec<&'a str>, String> {
    let mut values = Vec::with_capacity(spec.values);
    if let Some(v) = attached {
        if spec.values == 0 {
            return Err(format!("option {} takes no value", spec.name()));
        }
        values.push(v);
    }
    while values.len() < spec.values {
        let v = rest.next().ok_or_else(|| match spec.values {
            1 => format!("option {} needs a value", spec.name()),
            n => format!("option {} needs {n} values", spec.name()),
        })?;
        values.push(v);
    }
    Ok(values)
}

/// Parse an `rvs adm` argv (without the program name).
pub fn parse(argv: &[String]) -> Result<Command, String> {
    let mut given = Given::default();
    let mut rest = argv.iter().map(String::as_str);
    while let Some(arg) = rest.next() {
        if let Some(long) = arg.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            if name == "sort" {
                continue; // ipvsadm: "does nothing, for backwards compatibility"
            }
            let spec = SPECS
                .iter()
                .find(|s| s.long == name)
                .ok_or_else(|| format!("unknown option '--{name}' (try -h)"))?;
            let values = take_values(spec, attached, &mut rest)?;
            given.record(spec, values)?;
        } else if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            for (at, c) in shorts.char_indices() {
                let spec = SPECS
                    .iter()
                    .find(|s| s.short == Some(c))
                    .ok_or_else(|| format!("unknown option '-{c}' (try -h)"))?;
                if spec.values > 0 {
                    let attached = Some(&shorts[at + c.len_utf8()..]).filter(|s| !s.is_empty());
                    let values = take_values(spec, attached, &mut rest)?;
                    given.record(spec, values)?;
                    break;
                }
                given.record(spec, Vec::new())?;
            }
        } else {
            return Err(format!("unexpected argument '{arg}' (try -h)"));
        }
    }
    build(&given)
}

/// Options each command takes, and which of them it needs.
fn allowed(cmd: Cmd) -> (&'static [Opt], &'static [Opt]) {
    use Opt::*;
    match cmd {
        Cmd::AddService | Cmd::EditService => {
            (&[Service, Sched, Synproxy, Toa, ProxyProtocol, ConnTimeout, Check], &[Service])
        }
        Cmd::DeleteService => (&[Service], &[Service]),
        Cmd::AddReal | Cmd::EditReal => {
            (&[Service, Real, Weight, Fullnat, Check, Maintenance], &[Service, Real])
        }
        Cmd::DeleteReal => (&[Service, Real, Fullnat], &[Service, Real]),
        Cmd::AddLaddr | Cmd::DelLaddr => (&[Service, Laddr], &[Service, Laddr]),
        Cmd::GetLaddr => (&[Service, Json], &[]),
        Cmd::List => (&[Service, Connection, Timeout, Stats, Rate, Exact, Json, Health], &[]),
        Cmd::Clear | Cmd::Restore | Cmd::Save | Cmd::Zero | Cmd::Set | Cmd::Help => (&[], &[]),
    }
}

fn build(given: &Given<'_>) -> Result<Command, String> {
    let (cmd, cmd_spec, cmd_values) = match &given.cmd {
        Some((c, s, v)) => (*c, Some(*s), v.as_slice()),
        None => (Cmd::List, None, &[][..]),
    };
    let cmd_name = cmd_spec.map_or_else(|| "-L/--list".to_owned(), Spec::name);
    check_options(given, cmd, &cmd_name)?;
    let service = given.get(Opt::Service).map(|(spec, v)| parse_service(spec, v)).transpose()?;
    // Present whenever the table says the command needs it.
    let key = || service.ok_or_else(|| format!("{cmd_name} needs a service"));
    let real = || -> Result<Endpoint, String> {
        let (_, v) = given.get(Opt::Real).ok_or_else(|| format!("{cmd_name} needs a real server"))?;
        parse_endpoint(v, key()?.1.port, "real server")
    };
    let laddr = || -> Result<IpAddr, String> {
        let (_, v) = given.get(Opt::Laddr).ok_or_else(|| format!("{cmd_name} needs a local address"))?;
        parse_ip(v).ok_or_else(|| format!("bad local address '{v}'"))
    };
    let check = || -> Result<Option<CheckSpec>, String> {
        given.get(Opt::Check).map(|(_, v)| v.parse::<CheckSpec>()).transpose()
    };
    let service_args = || -> Result<ServiceArgs, String> {
        Ok(ServiceArgs {
            key: key()?,
            sched: given.get(Opt::Sched).map(|(_, v)| parse_sched(v)).transpose()?,
            synproxy: given.get(Opt::Synproxy).map(|(s, v)| parse_switch(s, v)).transpose()?,
            toa: given.get(Opt::Toa).map(|(s, v)| parse_switch(s, v)).transpose()?,
            proxy_protocol: given
                .get(Opt::ProxyProtocol)
                .map(|(_, v)| parse_proxy_protocol(v))
                .transpose()?,
            conn_timeout: given
                .get(Opt::ConnTimeout)
                .map(|(_, v)| parse_secs(v, "--conn-timeout"))
                .transpose()?,
            check: check()?,
        })
    };
    let real_args = || -> Result<RealArgs, String> {
        Ok(RealArgs {
            key: key()?,
            real: real()?,
            weight: given.get(Opt::Weight).map(|(_, v)| parse_weight(v)).transpose()?,
            check: check()?,
            maintenance: given.get(Opt::Maintenance).map(|(_, v)| parse_maintenance(v)).transpose()?,
        })
    };
    Ok(match cmd {
        Cmd::AddService => Command::AddService(service_args()?),
        Cmd::EditService => Command::EditService(service_args()?),
        Cmd::DeleteService => Command::DeleteService(key()?),
        Cmd::Clear => Command::Clear,
        Cmd::Restore => Command::Restore,
        Cmd::Save => Command::Save,
        Cmd::AddReal => Command::AddReal(real_args()?),
        Cmd::EditReal => Command::EditReal(real_args()?),
        Cmd::DeleteReal => Command::DeleteReal(key()?, real()?),
        Cmd::AddLaddr => Command::AddLaddr(key()?, laddr()?),
        Cmd::DelLaddr => Command::DelLaddr(key()?, laddr()?),
        Cmd::GetLaddr => Command::GetLaddr { service, json: given.has(Opt::Json) },
        Cmd::Zero => Command::Zero,
        Cmd::Help => Command::Help,
        Cmd::Set => {
            let [tcp, tcp_fin, udp] = [0, 1, 2].map(|i| cmd_values.get(i).copied().unwrap_or(""));
            Command::SetTimeouts {
                tcp: parse_secs(tcp, "--set tcp")?,
                tcp_fin: parse_secs(tcp_fin, "--set tcpfin")?,
                udp: parse_secs(udp, "--set udp")?,
            }
        }
        Cmd::List => Command::List(list_args(given, service)?),
    })
}

/// Refuse options `cmd` does not take, and name the first it needs and lacks.
fn check_options(given: &Given<'_>, cmd: Cmd, cmd_name: &str) -> Result<(), String> {
    let (ok, needed) = allowed(cmd);
    for (o, spec, _) in &given.opts {
        // `-n` is accepted everywhere: output is always numeric.
        if *o != Opt::Numeric && !ok.contains(o) {
            if cmd == Cmd::Zero && *o == Opt::Service {
                return Err("-Z zeroes the counters of every service; rvs cannot zero one service".into());
            }
            return Err(format!("option {} is not valid with {cmd_name}", spec.name()));
        }
    }
    for o in needed {
        if !given.has(*o) {
            let what = match o {
                Opt::Service => "a service: -t|-u VIP:PORT",
                Opt::Real => "a real server: -r RIP[:PORT]",
                _ => "a local address: -z LIP",
            };
            return Err(format!("{cmd_name} needs {what}"));
        }
    }
    Ok(())
}

/// `-L` with at most one view option.
fn list_args(given: &Given<'_>, service: Option<ServiceKey>) -> Result<ListArgs, String> {
    let views = [
        (Opt::Stats, ListView::Stats),
        (Opt::Rate, ListView::Rate),
        (Opt::Connection, ListView::Connections),
        (Opt::Timeout, ListView::Timeout),
        (Opt::Health, ListView::Health),
    ];
    let mut chosen: Option<(&Spec, ListView)> = None;
    for (o, view) in views {
        if let Some((spec, _)) = given.get(o) {
            if let Some((first, _)) = chosen {
                return Err(format!("option {} conflicts with {}", spec.name(), first.name()));
            }
            chosen = Some((spec, view));
        }
    }
    let view = chosen.map_or(ListView::Services, |(_, v)| v);
    if view == ListView::Timeout && service.is_some() {
        return Err("option --timeout lists engine-wide values; it takes no service".into());
    }
    Ok(ListArgs { service, view, exact: given.has(Opt::Exact), json: given.has(Opt::Json) })
}

fn parse_service(spec: &Spec, v: &str) -> Result<ServiceKey, String> {
    let proto = spec.proto.unwrap_or(Proto::Tcp);
    let ep = parse_endpoint(v, 0, "service address")?;
    if ep.port == 0 {
        return Err(format!("service address '{v}' needs a port"));
    }
    Ok((proto, ep))
}

/// `ip:port`, `[ipv6]:port`, or an address alone, which takes `default_port`.
pub(crate) fn parse_endpoint(s: &str, default_port: u16, what: &str) -> Result<Endpoint, String> {
    let bad = || format!("bad {what} '{s}'");
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (host.parse::<Ipv6Addr>().map_err(|_| bad())?.into(), port)
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        (ip, None)
    } else {
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        (host.parse::<std::net::Ipv4Addr>().map_err(|_| bad())?.into(), Some(port))
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("bad port in {what} '{s}'")),
        },
    };
    Ok(Endpoint::new(host, port))
}

/// An address, IPv6 optionally in brackets.
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    match s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => s.parse().ok(),
    }
}

fn parse_sched(v: &str) -> Result<SchedKind, String> {
    SchedKind::from_name(v).ok_or_else(|| {
        let names: Vec<_> = SchedKind::ALL.iter().map(|s| s.name()).collect();
        format!("unknown scheduler '{v}' (one of {})", names.join(" "))
    })
}

fn parse_switch(spec: &Spec, v: &str) -> Result<bool, String> {
    match v {
        "enable" => Ok(true),
        "disable" => Ok(false),
        _ => Err(format!("{} takes enable or disable, not '{v}'", spec.name())),
    }
}

fn parse_proxy_protocol(v: &str) -> Result<ProxyProtocol, String> {
    ProxyProtocol::from_name(v).ok_or_else(|| {
        let names: Vec<_> = ProxyProtocol::ALL.iter().map(|p| p.name()).collect();
        format!("--proxy-protocol takes one of {}, not '{v}'", names.join(" "))
    })
}

fn parse_maintenance(v: &str) -> Result<Maintenance, String> {
    Maintenance::ALL
        .into_iter()
        .find(|m| m.name() == v)
        .ok_or_else(|| format!("illegal maintenance '{v}' (auto, up or down)"))
}

fn parse_weight(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(w) if w <= MAX_WEIGHT && v.bytes().all(|b| b.is_ascii_digit()) => Ok(w),
        _ => Err(format!("illegal weight '{v}' (0..{MAX_WEIGHT})")),
    }
}

fn parse_secs(v: &str, what: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(s) if v.bytes().all(|b| b.is_ascii_digit()) => Ok(s),
        _ => Err(format!("{what} takes whole seconds, not '{v}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Command, String> {
        parse(&line.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    fn ep(s: &str) -> Endpoint {
        s.parse::<std::net::SocketAddr>().unwrap().into()
    }

    #[test]
    fn service_commands() {
        let want = Command::AddService(ServiceArgs {
            key: (Proto::Tcp, ep("10.0.0.1:80")),
            sched: Some(SchedKind::Mh),
            synproxy: Some(true),
            toa: None,
            proxy_protocol: None,
            conn_timeout: Some(900),
            check: None,
        });
        assert_eq!(p("-A -t 10.0.0.1:80 -s mh -j enable --conn-timeout 900"), Ok(want.clone()));
        assert_eq!(
            p("--add-service --tcp-service=10.0.0.1:80 --scheduler mh --synproxy=enable --conn-timeout=900"),
            Ok(want)
        );
        assert_eq!(p("-At10.0.0.1:80"), p("-A -t 10.0.0.1:80"));
        assert_eq!(
            p("-D -u [2001:db8::1]:53"),
            Ok(Command::DeleteService((Proto::Udp, ep("[2001:db8::1]:53"))))
        );
        assert_eq!(p("-C"), Ok(Command::Clear));
    }

    #[test]
    fn client_address_options() {
        let key = (Proto::Tcp, ep("10.0.0.1:80"));
        let args = |toa, proxy_protocol| ServiceArgs {
            key,
            sched: None,
            synproxy: None,
            toa,
            proxy_protocol,
            conn_timeout: None,
            check: None,
        };
        assert_eq!(
            p("-A -t 10.0.0.1:80 --toa enable --proxy-protocol v2"),
            Ok(Command::AddService(args(Some(true), Some(ProxyProtocol::V2))))
        );
        assert_eq!(
            p("--edit-service --tcp-service=10.0.0.1:80 --toa=disable --proxy-protocol=v1"),
            Ok(Command::EditService(args(Some(false), Some(ProxyProtocol::V1))))
        );
        assert_eq!(
            p("-E -t 10.0.0.1:80 --proxy-protocol disable"),
            Ok(Command::EditService(args(None, Some(ProxyProtocol::Disabled))))
        );
        // -E without them keeps them: None, not a default.
        assert_eq!(p("-E -t 10.0.0.1:80"), Ok(Command::EditService(args(None, None))));
        assert_eq!(p("-E -t 10.0.0.1:80 --toa enable"), Ok(Command::EditService(args(Some(true), None))));
    }

    #[test]
    fn real_commands() {
        let key = (Proto::Tcp, ep("10.0.0.1:80"));
        assert_eq!(
            p("-a -t 10.0.0.1:80 -r 10.0.1.1 -b"),
            Ok(Command::AddReal(RealArgs {
                key,
                real: ep("10.0.1.1:80"),
                weight: None,
                check: None,
                maintenance: None
            }))
        );
        assert_eq!(
            p("-e -t 10.0.0.1:80 -r 10.0.1.1:8080 -w 0"),
            Ok(Command::EditReal(RealArgs {
                key,
                real: ep("10.0.1.1:8080"),
                weight: Some(0),
                check: None,
                maintenance: None
            }))
        );
        assert_eq!(
            p("-d --tcp-service 10.0.0.1:80 --real-server 10.0.1.1:8080"),
            Ok(Command::DeleteReal(key, ep("10.0.1.1:8080")))
        );
        let v6 = (Proto::Tcp, ep("[::1]:80"));
        assert_eq!(
            p("-a -t [::1]:80 -r [::2]"),
            Ok(Command::AddReal(RealArgs {
                key: v6,
                real: ep("[::2]:80"),
                weight: None,
                check: None,
                maintenance: None
            }))
        );
        assert_eq!(
            p("-P -t 10.0.0.1:80 -z 10.0.2.1"),
            Ok(Command::AddLaddr(key, "10.0.2.1".parse().unwrap()))
        );
    }

    #[test]
    fn translation_forms() {
        let nat64 = (Proto::Tcp, ep("[2001:db8::1]:80"));
        assert!(matches!(p("-A -t [2001:db8::1]:80"), Ok(Command::AddService(a)) if a.key == nat64));
        assert!(matches!(
            p("-a -t [2001:db8::1]:80 -r 10.0.0.1:80 -b"),
            Ok(Command::AddReal(a)) if a.key == nat64 && a.real == ep("10.0.0.1:80")
        ));
        // The port of an IPv4 real defaults to the IPv6 VIP's.
        assert!(matches!(
            p("-a -t [2001:db8::1]:80 -r 10.0.0.1"),
            Ok(Command::AddReal(a)) if a.real == ep("10.0.0.1:80")
        ));
        assert_eq!(
            p("-P -t [2001:db8::1]:80 -z 10.0.3.1"),
            Ok(Command::AddLaddr(nat64, "10.0.3.1".parse().unwrap()))
        );
        let nat46 = (Proto::Udp, ep("10.0.0.1:53"));
        assert!(matches!(
            p("-a -u 10.0.0.1:53 -r [fd10:77:1::11]"),
            Ok(Command::AddReal(a)) if a.key == nat46 && a.real == ep("[fd10:77:1::11]:53")
        ));
        for z in ["fd10:77:3::1", "[fd10:77:3::1]"] {
            assert_eq!(
                p(&format!("-P -u 10.0.0.1:53 -z {z}")),
                Ok(Command::AddLaddr(nat46, "fd10:77:3::1".parse().unwrap()))
            );
        }
    }

    #[test]
    fn listings() {
        assert_eq!(p("-Ln"), Ok(Command::List(ListArgs::default())));
        assert_eq!(p(""), Ok(Command::List(ListArgs::default())));
        assert_eq!(p("-n"), Ok(Command::List(ListArgs::default())));
        let l = p("-L -n --stats --exact --json -t 10.0.0.1:80").unwrap();
        let Command::List(l) = l else { panic!("{l:?}") };
        assert_eq!((l.view, l.exact, l.json), (ListView::Stats, true, true));
        assert!(l.service.is_some());
        assert!(matches!(p("-lnc"), Ok(Command::List(ListArgs { view: ListView::Connections, .. }))));
        assert!(matches!(p("-L --timeout"), Ok(Command::List(ListArgs { view: ListView::Timeout, .. }))));
        assert!(matches!(p("-G"), Ok(Command::GetLaddr { service: None, json: false })));
        assert_eq!(p("--set 900 0 60"), Ok(Command::SetTimeouts { tcp: 900, tcp_fin: 0, udp: 60 }));
        assert_eq!(p("-S -n"), Ok(Command::Save));
    }

    #[test]
    fn errors_are_one_line() {
        for (line, want) in [
            ("-X", "unknown option '-X'"),
            ("--bogus", "unknown option '--bogus'"),
            ("-A", "needs a service"),
            ("-A -t", "needs a value"),
            ("-A -D -t 10.0.0.1:80", "multiple commands"),
            ("-A -t 10.0.0.1:80 -t 10.0.0.2:80", "multiple"),
            ("-A -t 10.0.0.1:80 -u 10.0.0.2:80", "multiple"),
            ("-A -t 10.0.0.1 ", "needs a port"),
            ("-A -t 10.0.0.1:0", "bad port"),
            ("-A -t 10.0.0.1:99999", "bad port"),
            ("-A -t host.example:80", "bad service address"),
            ("-A -t [::1:80", "bad service address"),
            ("-A -t 10.0.0.1:80 -s foo", "unknown scheduler"),
            ("-A -t 10.0.0.1:80 -j maybe", "-j/--synproxy takes enable or disable, not 'maybe'"),
            ("-A -t 10.0.0.1:80 --toa yes", "--toa takes enable or disable, not 'yes'"),
            ("-A -t 10.0.0.1:80 --toa", "option --toa needs a value"),
            ("-E -t 10.0.0.1:80 --toa enable --toa disable", "multiple '--toa' options"),
            (
                "-A -t 10.0.0.1:80 --proxy-protocol v3",
                "--proxy-protocol takes one of disable v1 v2, not 'v3'",
            ),
            ("-A -t 10.0.0.1:80 --proxy-protocol=", "--proxy-protocol takes one of disable v1 v2, not ''"),
            ("-A -t 10.0.0.1:80 --proxy-protocol V2", "not 'V2'"),
            ("-a -t 10.0.0.1:80 -r 10.0.1.1 --toa enable", "--toa is not valid with -a/--add-server"),
            ("-L --proxy-protocol v1", "not valid with -L/--list"),
            ("-A -t 10.0.0.1:80 -w 3", "not valid with -A/--add-service"),
            ("-a -t 10.0.0.1:80", "needs a real server"),
            ("-a -t 10.0.0.1:80 -r 10.0.1.1 -w 65536", "illegal weight"),
            ("-a -t 10.0.0.1:80 -r 10.0.1.1 -w -1", "illegal weight"),
            ("-a -t 10.0.0.1:80 -r 10.0.1.1 -w +1", "illegal weight"),
            ("-a -t 10.0.0.1:80 -r 10.0.1.1 -g", "FullNAT only"),
            ("-a -t 10.0.0.1:80 -r 10.0.1.1 -m", "FullNAT only"),
            ("-a -t 10.0.0.1:80 -r 10.0.1.1 --ipip", "FullNAT only"),
            ("-P -t 10.0.0.1:80 -z nope", "bad local address"),
            ("-L --stats --rate", "conflicts"),
            ("-Z -t 10.0.0.1:80", "every service"),
            ("--set 1 2", "needs 3 values"),
            ("--set 1 2 x", "whole seconds"),
            ("-C extra", "unexpected argument"),
            ("-C=1", "unknown option '-='"),
            ("--clear=1", "takes no value"),
            ("-p", "persistence"),
        ] {
            let err = p(line).expect_err(line);
            assert!(err.contains(want), "{line}: {err}");
            assert!(!err.contains('\n'), "{line}: {err}");
        }
    }

    #[test]
    fn odd_bytes_do_not_panic() {
        for line in ["-é", "--=", "-t[", "-A -t [", "-A -t []:1", "-A -t :80", "-A -t 1.2.3.4::80", "-"] {
            let _ = p(line);
        }
        assert!(parse(&["-A".into(), "-t".into(), "1.2.3.4:８0".into()]).is_err());
    }
}
