//! The exec probe: `sh -c COMMAND` with the real's address in its
//! environment; exit status 0 is up.
//!
//! The command runs in a process group of its own, so at the timeout (or
//! when its prober stops) the whole group is killed, a pipeline's or a
//! subshell's children included, and the shell is reaped: an exec check
//! leaves no process behind. Its stderr is read as it comes (so a chatty
//! command never blocks on a full pipe) and the start of it ends the detail.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::probe::{Deadline, Verdict};
use super::prober::Stop;

/// How often a running command is looked at.
const POLL: Duration = Duration::from_millis(5);
/// Most of a command's stderr kept; the rest is read and dropped.
const MAX_STDERR: usize = 4096;
/// Most of it that goes into the detail.
const MAX_DETAIL: usize = 200;

/// Runs `command` for the real at `target` until it exits or `deadline`.
pub(super) fn run(command: &str, target: SocketAddr, deadline: Deadline, stop: &Stop) -> Verdict {
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("RVS_REAL_ADDR", target.ip().to_string())
        .env("RVS_REAL_PORT", target.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return Verdict::down(format!("cannot run sh: {e}")),
    };
    let mut stderr = child.stderr.take().filter(|s| set_nonblocking(s).is_ok());
    let mut said = Vec::new();
    let status = loop {
        read_available(&mut stderr, &mut said);
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                kill_group(&mut child);
                return Verdict::down(format!("cannot wait for the command: {e}"));
            }
        }
        let Some(left) = deadline.left() else {
            kill_group(&mut child);
            return Verdict::down("killed after timeout".to_owned());
        };
        if stop.wait(left.min(POLL)) {
            kill_group(&mut child);
            return Verdict::down("stopped".to_owned());
        }
    };
    read_available(&mut stderr, &mut said);
    verdict(status, &said)
}

fn verdict(status: ExitStatus, stderr: &[u8]) -> Verdict {
    let mut detail = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    };
    let text = String::from_utf8_lossy(stderr);
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    if let Some(line) = first {
        detail.push_str(": ");
        detail.extend(line.chars().take(MAX_DETAIL));
    }
    if status.success() { Verdict::up(detail) } else { Verdict::down(detail) }
}

/// Kills the command's process group and reaps the shell.
fn kill_group(child: &mut Child) {
    if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory effects; the shell leads the group and
        // is not yet reaped, so the group id cannot belong to anyone else.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn set_nonblocking(pipe: &ChildStderr) -> io::Result<()> {
    let fd = pipe.as_raw_fd();
    // SAFETY: fcntl on an fd we own, with flag arguments only.
    let rc = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 { flags } else { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Reads what the pipe holds now, keeping up to [`MAX_STDERR`]; forgets the
/// pipe at its end or on an error.
fn read_available(pipe: &mut Option<ChildStderr>, kept: &mut Vec<u8>) {
    let Some(p) = pipe else { return };
    let mut chunk = [0u8; 1024];
    loop {
        match p.read(&mut chunk) {
            Ok(0) => break *pipe = None,
            Ok(n) => {
                let room = MAX_STDERR.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&chunk[..room]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break *pipe = None,
        }
    }
}
