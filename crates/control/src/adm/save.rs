//! `-S` writes the model as `rvs adm` command lines; `-R` reads them back.

use core::fmt::Write as _;

use rvs_core::{Proto, ProxyProtocol, Timeouts};

use super::{Command, conn_timeout, parse};
use crate::model::Model;
use crate::snapshot::TimeoutSnap;

/// The model as ipvsadm save lines: a `--set` line when the engine timeouts
/// differ from the defaults (first, since `--conn-timeout` builds on them),
/// then per service `-A`, its reals (`-a`) and local addresses (`-P`).
/// Feeding the output to `-R` on a fresh daemon rebuilds the same model
/// (MSS clamps and per-state service timeouts, which only the config file
/// sets, are not expressed).
pub fn save(model: &Model) -> String {
    let mut out = String::new();
    if model.timeouts != Timeouts::default() {
        let t = TimeoutSnap::from(&model.timeouts);
        let _ = writeln!(out, "--set {} {} {}", t.tcp, t.tcp_fin, t.udp);
    }
    for (&(proto, vip), spec) in &model.services {
        let svc = match proto {
            Proto::Tcp => format!("-t {vip}"),
            Proto::Udp => format!("-u {vip}"),
        };
        let _ = write!(out, "-A {svc} -s {}", spec.config.sched.name());
        if spec.config.synproxy {
            out.push_str(" -j enable");
        }
        if spec.config.toa {
            out.push_str(" --toa enable");
        }
        if spec.config.proxy_protocol != ProxyProtocol::Disabled {
            let _ = write!(out, " --proxy-protocol {}", spec.config.proxy_protocol.name());
        }
        if let Some(secs) = conn_timeout(&spec.config) {
            let _ = write!(out, " --conn-timeout {secs}");
        }
        if !spec.check.is_none() {
            let _ = write!(out, " --check {}", quoted(&spec.check.to_string()));
        }
        out.push('\n');
        for r in &spec.reals {
            let _ = write!(out, "-a {svc} -r {} -b -w {}", r.endpoint, r.weight);
            if let Some(check) = spec.checks.get(&r.endpoint) {
                let _ = write!(out, " --check {}", quoted(&check.to_string()));
            }
            if let Some(m) = spec.maintenance.get(&r.endpoint) {
                let _ = write!(out, " --maintenance {}", m.name());
            }
            out.push('\n');
        }
        for l in &spec.config.laddrs {
            let _ = writeln!(out, "-P {svc} -z {l}");
        }
    }
    out
}

/// `text` as one argument of a save line: as is when it has no space,
/// quote or backslash, else in double quotes with `"` and `\` escaped.
fn quoted(text: &str) -> String {
    if !text.is_empty() && !text.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\') {
        return text.to_owned();
    }
    let mut out = String::from("\"");
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A save line's arguments: split at whitespace, except inside double
/// quotes, where `\"` and `\\` stand for `"` and `\`.
fn split_args(line: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut arg = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
            if c != '"' {
                arg.push(c);
                continue;
            }
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => arg.push(chars.next().ok_or("unterminated quote")?),
                    Some(c) => arg.push(c),
                    None => return Err("unterminated quote".into()),
                }
            }
        }
        args.push(arg);
    }
    Ok(args)
}

/// The commands of `-R` input, each with its line number (from 1). Blank
/// lines and `#` comments are skipped; only changing commands are allowed.
pub fn parse_restore(input: &str) -> Result<Vec<(usize, Command)>, String> {
    let mut commands = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let argv = split_args(line).map_err(|e| format!("line {n}: {e}"))?;
        let cmd = parse(&argv).map_err(|e| format!("line {n}: {e}"))?;
        if !cmd.changes_model() {
            return Err(format!("line {n}: only commands that change rules can be restored"));
        }
        commands.push((n, cmd));
    }
    Ok(commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_arguments_split_back() {
        for text in ["tcp", "exec:test -n \"$X\" && echo a\\b", "http,body=all good:/h"] {
            let line = format!("-e -t 10.0.0.1:80 --check {}", quoted(text));
            assert_eq!(split_args(&line).unwrap().last().map(String::as_str), Some(text), "{line}");
        }
        assert!(split_args("-A \"open").is_err());
    }

    #[test]
    fn restore_input_checks_every_line() {
        let cmds = parse_restore("# saved\n\n-A -t 10.0.0.1:80 -s rr\n  -C  \n").unwrap();
        assert_eq!(cmds.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(
            parse_restore("-C\n-L -n\n").unwrap_err(),
            "line 2: only commands that change rules can be restored"
        );
        assert!(parse_restore("-C\n-A -t nowhere\n").unwrap_err().starts_with("line 2: bad service address"));
    }

    #[test]
    fn save_writes_client_address_options_when_set() {
        let mut m = Model::default();
        for line in [
            "-A -t 10.0.0.1:80 -s rr --toa enable --proxy-protocol v2 -j enable --conn-timeout 60",
            "-A -t 10.0.0.1:81 --proxy-protocol v1",
            "-A -t 10.0.0.1:82 --toa disable --proxy-protocol disable",
        ] {
            let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
            m = parse(&argv).unwrap().edit(&m).unwrap();
        }
        let saved = save(&m);
        assert_eq!(
            saved,
            "-A -t 10.0.0.1:80 -s rr -j enable --toa enable --proxy-protocol v2 --conn-timeout 60\n\
             -A -t 10.0.0.1:81 -s wrr --proxy-protocol v1\n\
             -A -t 10.0.0.1:82 -s wrr\n"
        );
        let mut back = Model::default();
        for (_, cmd) in parse_restore(&saved).unwrap() {
            back = cmd.edit(&back).unwrap();
        }
        assert_eq!(back, m);
    }

    #[test]
    fn save_writes_every_part() {
        let mut m = Model::default();
        for line in [
            "--set 100 0 0",
            "-A -u [2001:db8::1]:53 -s mh -j enable --conn-timeout 30",
            "-a -u [2001:db8::1]:53 -r [2001:db8::2] -w 5",
            "-E -u [2001:db8::1]:53 --check udp,expect=pong:ping",
            "-a -u [2001:db8::1]:53 -r [2001:db8::3] -w 1 --check tcp,port=80 --maintenance down",
            "-P -u [2001:db8::1]:53 -z 2001:db8::100",
        ] {
            let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
            m = parse(&argv).unwrap().edit(&m).unwrap();
        }
        assert_eq!(
            save(&m),
            "--set 100 3 300\n\
             -A -u [2001:db8::1]:53 -s mh -j enable --conn-timeout 30 --check udp,expect=pong:ping\n\
             -a -u [2001:db8::1]:53 -r [2001:db8::2]:53 -b -w 5\n\
             -a -u [2001:db8::1]:53 -r [2001:db8::3]:53 -b -w 1 --check tcp,port=80 --maintenance down\n\
             -P -u [2001:db8::1]:53 -z 2001:db8::100\n"
        );
        let mut back = Model::default();
        for (_, cmd) in parse_restore(&save(&m)).unwrap() {
            back = cmd.edit(&back).unwrap();
        }
        assert_eq!(back, m);
    }

    /// NAT64 (IPv6 VIP, IPv4 backends) and NAT46 (the reverse) save as the
    /// commands that made them and restore to the same model.
    #[test]
    fn save_round_trips_translations() {
        let mut m = Model::default();
        let lines = [
            "-A -t [2001:db8::1]:80 -s rr",
            "-a -t [2001:db8::1]:80 -r 10.0.0.1:80 -b -w 1",
            "-P -t [2001:db8::1]:80 -z 10.0.3.1",
            "-A -u 10.0.0.53:53 -s wrr",
            "-a -u 10.0.0.53:53 -r [fd10:77:1::11]:53 -b -w 2",
            "-P -u 10.0.0.53:53 -z fd10:77:3::1",
        ];
        for line in lines {
            let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
            m = parse(&argv).unwrap().edit(&m).unwrap();
        }
        let saved = save(&m);
        assert_eq!(saved, lines.map(|l| format!("{l}\n")).concat(), "{saved}");
        let mut back = Model::default();
        for (_, cmd) in parse_restore(&saved).unwrap() {
            back = cmd.edit(&back).unwrap();
        }
        assert_eq!(back, m);
    }
}
