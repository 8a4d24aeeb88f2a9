//! Command-line entry points and the control-socket client.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use rvs_control::protocol::{Request, Response};

/// Where `rvs adm` and `rvs reload` find the daemon unless told otherwise.
pub(crate) const DEFAULT_CTL: &str = "/run/rvs/rvs.sock";

const USAGE: &str = "\
usage: rvs <command> [args]

  run --config FILE     run the daemon in the foreground (SIGHUP reloads, SIGTERM stops)
  adm [--ctl PATH] ARGS administer the running daemon with ipvsadm syntax (rvs adm -h)
  reload [--ctl PATH]   re-read the daemon's config file and apply it whole, or change nothing
  lab [options]         build a namespace lab, run requests through rvs, print latencies (rvs lab -h)
  version               print the version

The control socket is /run/rvs/rvs.sock unless --ctl PATH or RVS_CTL says otherwise.
";

/// Run a command line (without the program name); returns the exit code.
pub(crate) fn main(args: &[String]) -> i32 {
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return 2;
    };
    let result = match cmd.as_str() {
        "run" => run(rest),
        "adm" => adm(rest),
        "lab" => crate::lab::main(rest),
        "reload" => control_path(rest).and_then(|(ctl, rest)| {
            if let Some(extra) = rest.first() {
                anyhow::bail!("unexpected argument {extra:?}");
            }
            call(&ctl, &Request::Reload)
        }),
        "version" | "--version" | "-V" => {
            println!("rvs {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(0)
        }
        other => {
            eprint!("rvs: unknown command {other:?}\n\n{USAGE}");
            Ok(2)
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("rvs {cmd}: {e:#}");
        1
    })
}

fn run(args: &[String]) -> anyhow::Result<i32> {
    let path = match args {
        [flag, path] if flag == "--config" || flag == "-c" => PathBuf::from(path),
        _ => anyhow::bail!("usage: rvs run --config FILE"),
    };
    crate::daemon::run(&path)?;
    Ok(0)
}

/// `--ctl PATH` first, else `RVS_CTL`, else the default; returns the rest.
fn control_path(args: &[String]) -> anyhow::Result<(PathBuf, &[String])> {
    match args {
        [flag, path, rest @ ..] if flag == "--ctl" => Ok((PathBuf::from(path), rest)),
        [flag] if flag == "--ctl" => anyhow::bail!("--ctl needs a path"),
        _ => {
            Ok((std::env::var_os("RVS_CTL").map_or_else(|| PathBuf::from(DEFAULT_CTL), PathBuf::from), args))
        }
    }
}

fn adm(args: &[String]) -> anyhow::Result<i32> {
    let (ctl, argv) = control_path(args)?;
    if argv.is_empty() || argv.iter().any(|a| a == "-h" || a == "--help") {
        // Help needs no daemon.
        print!("{}", rvs_control::adm::USAGE);
        return Ok(if argv.is_empty() { 2 } else { 0 });
    }
    let restore = argv.iter().any(|a| a == "-R" || a == "--restore");
    let mut stdin = String::new();
    if restore {
        std::io::stdin().read_to_string(&mut stdin)?;
    }
    call(&ctl, &Request::Adm { argv: argv.to_vec(), stdin })
}

/// Send one request to the daemon, print its answer, return its exit code.
fn call(ctl: &std::path::Path, req: &Request) -> anyhow::Result<i32> {
    let stream = UnixStream::connect(ctl)
        .map_err(|e| anyhow::anyhow!("cannot reach the daemon at {}: {e}", ctl.display()))?;
    (&stream).write_all(req.to_line().as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    let resp =
        Response::from_line(&answer).map_err(|e| anyhow::anyhow!("bad answer from the daemon: {e}"))?;
    print!("{}", resp.stdout);
    eprint!("{}", resp.stderr);
    Ok(resp.code)
}
