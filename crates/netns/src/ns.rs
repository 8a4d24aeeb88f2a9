//! One named network namespace: commands inside it, threads inside it, and a
//! process guard that ends what it started.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Where `ip netns add` puts the namespace handles that `setns` opens.
const NETNS_DIR: &str = "/var/run/netns";

/// A network namespace known by its `ip netns` name.
///
/// The value only names the namespace; creating and deleting it is the job of
/// [`crate::Topology`] (or of the caller, with [`Netns::add`] and [`Netns::delete`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Names an existing (or soon to exist) namespace.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// Creates the namespace with `ip netns add` and brings its loopback up.
    pub fn add(name: impl Into<String>) -> io::Result<Self> {
        let ns = Self::new(name);
        run(Command::new("ip").args(["netns", "add", &ns.name]))?;
        if let Err(e) = run(ns.ip().args(["link", "set", "lo", "up"])) {
            let _ = ns.delete();
            return Err(e);
        }
        Ok(ns)
    }

    /// Deletes the namespace; its interfaces (and their veth peers) go with it.
    /// Deleting a namespace that is already gone is not an error.
    pub fn delete(&self) -> io::Result<()> {
        if !self.exists() {
            return Ok(());
        }
        run(Command::new("ip").args(["netns", "del", &self.name])).map(drop)
    }

    /// The `ip netns` name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The handle file that `setns` opens.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// Whether the namespace currently exists.
    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    /// `ip -n NAME`: an iproute2 command acting on this namespace.
    pub fn ip(&self) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]);
        cmd
    }

    /// `ip netns exec NAME PROGRAM ARGS...`. `ip` execs the program after
    /// entering the namespace, so the child's PID is the program's own.
    pub fn cmd<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program).args(args);
        cmd
    }

    /// Runs `PROGRAM ARGS...` in the namespace and waits for it; a non-zero
    /// exit is an error that carries the program's stderr.
    pub fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> io::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(&mut self.cmd(program, args))
    }

    /// Starts `PROGRAM ARGS...` in the namespace with stdin closed; the guard
    /// ends it when dropped.
    pub fn spawn<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> io::Result<ChildGuard>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        ChildGuard::spawn(self.cmd(program, args).stdin(Stdio::null()))
    }

    /// Applies an nftables script in this namespace, atomically (all of it
    /// or none); a failure carries nft's message.
    pub fn nft(&self, script: &str) -> io::Result<()> {
        let mut child = self
            .cmd("nft", ["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            io::Write::write_all(&mut stdin, script.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "nft in {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Runs `f` on a new thread that has entered this namespace, and waits for
    /// it. Sockets created inside `f` stay in the namespace wherever they are
    /// used afterwards, so this is also how to bind a listener "over there".
    pub fn run_in<T, F>(&self, f: F) -> io::Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let file = self.open()?;
        thread::scope(|s| {
            s.spawn(move || {
                enter(&file)?;
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other(format!("thread in netns {} panicked", self.name)))?
        })
    }

    fn open(&self) -> io::Result<File> {
        File::open(self.path())
            .map_err(|e| io::Error::new(e.kind(), format!("open netns {}: {e}", self.path().display())))
    }
}

/// Moves the calling thread into the namespace behind `file`. Only this thread
/// moves: the rest of the process stays where it was.
fn enter(file: &File) -> io::Result<()> {
    // SAFETY: the fd is a valid open namespace handle for the duration of the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Runs a command to completion; a non-zero exit becomes an error naming the
/// command and quoting its stderr. Returns stdout.
pub fn run(cmd: &mut Command) -> io::Result<String> {
    let Output { status, stdout, stderr } = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run `{}`: {e}", describe(cmd))))?;
    if status.success() {
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "`{}` failed ({status}): {}",
            describe(cmd),
            String::from_utf8_lossy(&stderr).trim()
        )))
    }
}

/// The command line as a user would type it, for error messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// How long a guarded process gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// A child process that is ended when the guard is dropped: SIGTERM to its own
/// PID, a bounded wait, then SIGKILL and a final wait. Only the guarded PID is
/// signalled, and only while it is still unreaped, so the PID cannot have been
/// reused by someone else.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    pid: u32,
}

impl ChildGuard {
    /// Spawns `cmd` under a guard.
    pub fn spawn(cmd: &mut Command) -> io::Result<Self> {
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start `{}`: {e}", describe(cmd))))?;
        Ok(Self { pid: child.id(), child: Some(child) })
    }

    /// The process id. Once the guard has reaped the process (after
    /// [`Self::stop`]) the number may belong to someone else.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The guarded child, e.g. to take its pipes.
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// The exit status if the process has ended, without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Ok(None),
        }
    }

    /// Ends the process: SIGTERM, up to `grace` for it to exit, then SIGKILL.
    /// Returns its exit status; calling it again after success returns `None`.
    pub fn stop(&mut self, grace: Duration) -> io::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else { return Ok(None) };
        if let Some(status) = child.try_wait()? {
            self.child = None;
            return Ok(Some(status));
        }
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill has no memory effects; the pid is our unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(Some(status));
            }
            thread::sleep(Duration::from_millis(10));
        }
        child.kill()?;
        let status = child.wait()?;
        self.child = None;
        Ok(Some(status))
    }

    /// Gives up the guard: the process keeps running after this value is gone.
    pub fn into_inner(mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.stop(STOP_GRACE);
    }
}
