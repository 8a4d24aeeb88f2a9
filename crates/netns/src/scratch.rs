//! What a lab program keeps beside its namespaces: a private temp directory
//! for configs, sockets and logs, processes whose output goes to a log file
//! in it, and the wait until such a process is ready.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::{ChildGuard, Netns, stop_requested};

/// A private directory under the system temp dir, removed on drop.
///
/// Named `<prefix><pid>-<nanos>`, so [`TempDir::remove_orphans`] can tell
/// the directories of ended runs apart.
#[derive(Debug)]
pub struct TempDir(Option<PathBuf>);

impl TempDir {
    /// Makes a new directory, readable by its owner only.
    pub fn new(prefix: &str) -> io::Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let path = std::env::temp_dir().join(format!("{prefix}{}-{}", std::process::id(), nanos.as_nanos()));
        fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self(Some(path)))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// Leaves the directory in place and returns its path.
    pub fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }

    /// Removes the directories made with `prefix` by processes that have
    /// ended; returns how many.
    pub fn remove_orphans(prefix: &str) -> usize {
        let Ok(entries) = fs::read_dir(std::env::temp_dir()) else { return 0 };
        entries
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let pid = name.to_str().and_then(|n| n.strip_prefix(prefix)).and_then(|r| r.split_once('-'));
                pid.is_some_and(|(pid, _)| {
                    pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists()
                })
            })
            .filter(|e| fs::remove_dir_all(e.path()).is_ok())
            .count()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

impl Netns {
    /// Starts `PROGRAM ARGS...` in the namespace with stdin closed and
    /// stdout and stderr to a new file at `log`, in its own process group: a
    /// terminal's Ctrl-C reaches only the caller, which stops it in order.
    pub fn spawn_logged<I, S>(
        &self,
        program: impl AsRef<OsStr>,
        args: I,
        log: &Path,
    ) -> io::Result<ChildGuard>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let f = fs::File::create(log)?;
        let mut cmd = self.cmd(program, args);
        cmd.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f).process_group(0);
        ChildGuard::spawn(&mut cmd)
    }
}

/// Why a process was not ready.
#[derive(Debug)]
pub enum NotReady {
    /// It exited first.
    Exited(ExitStatus),
    /// The time allowed ran out.
    TimedOut,
    /// A stop was asked for ([`crate::STOP`]).
    Stopped,
    /// Its state could not be read.
    Io(io::Error),
}

/// Waits up to `limit` for `path` to appear (a daemon's socket, say) while
/// `child` runs.
pub fn wait_for_path(child: &mut ChildGuard, path: &Path, limit: Duration) -> Result<(), NotReady> {
    let end = Instant::now() + limit;
    while !path.exists() {
        if let Some(status) = child.try_wait().map_err(NotReady::Io)? {
            return Err(NotReady::Exited(status));
        }
        if stop_requested() {
            return Err(NotReady::Stopped);
        }
        if Instant::now() >= end {
            return Err(NotReady::TimedOut);
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
