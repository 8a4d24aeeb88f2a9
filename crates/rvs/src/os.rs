//! Small pieces of the operating system the daemon needs: randomness,
//! signals, sysctls.

use std::io;

/// Fill `buf` from the kernel's random source.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes at most `buf.len() - filled` bytes into the live tail of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(())
}

/// The signals the daemon acts on.
pub(crate) const SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Block [`SIGNALS`] in this thread and every thread it starts afterwards,
/// so they are only ever taken by [`wait_signal`].
pub(crate) fn block_signals() {
    let set = signal_set();
    // SAFETY: `set` is initialised; the old mask is not wanted.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut()) };
}

/// Wait up to `timeout` for one of [`SIGNALS`]; `None` on timeout.
pub(crate) fn wait_signal(timeout: std::time::Duration) -> Option<libc::c_int> {
    let set = signal_set();
    let ts =
        libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
    // SAFETY: `set` and `ts` are initialised; no siginfo is requested.
    let s = unsafe { libc::sigtimedwait(&set, core::ptr::null_mut(), &ts) };
    (s > 0).then_some(s)
}

/// The CPUs the calling thread may run on.
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: fills `set`, whose size is passed, for the calling thread (0).
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET reads a bit of a live set; the index is within its size.
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect())
}

/// Pin the calling thread to `cpu`.
pub(crate) fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: writes one bit of a live set; callers keep `cpu` below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: reads `set`, whose size is passed, for the calling thread (0).
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The 32-byte secret in `path`, made with random bytes (mode 0600, its
/// directory 0700) when the file is missing.
pub(crate) fn load_or_create_secret(path: &std::path::Path) -> io::Result<[u8; 32]> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let read = || -> io::Result<[u8; 32]> {
        let bytes = std::fs::read(path)
            .map_err(|e| io::Error::new(e.kind(), format!("read {}: {e}", path.display())))?;
        bytes.as_slice().try_into().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} holds {} bytes, not 32", path.display(), bytes.len()),
            )
        })
    };
    match read() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        found => return found,
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut secret = [0u8; 32];
    random_bytes(&mut secret)?;
    let made = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
    match made {
        Ok(mut f) => {
            f.write_all(&secret)?;
            f.sync_all()?;
            Ok(secret)
        }
        // Another daemon made it first: use that one.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read(),
        Err(e) => Err(io::Error::new(e.kind(), format!("create {}: {e}", path.display()))),
    }
}

/// Write a sysctl under /proc/sys (e.g. `net/ipv4/ip_forward`) in the calling
/// thread's network namespace.
pub(crate) fn sysctl(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/{key}"), value)
        .map_err(|e| io::Error::new(e.kind(), format!("sysctl {key}={value}: {e}")))
}

/// Interfaces of the calling thread's network namespace, as (index, name).
pub(crate) fn interfaces() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, or
    // null; it is read up to the terminator and freed once.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
            out.push(((*p).if_index, name));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// Addresses assigned to interfaces of the calling thread's network namespace.
pub(crate) fn local_addrs() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = core::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that is walked read-only and
    // freed once; each ifa_addr is read as the sockaddr type its family names.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut p = head;
        while !p.is_null() {
            let sa = (*p).ifa_addr;
            if !sa.is_null() {
                match i32::from((*sa).sa_family) {
                    libc::AF_INET => {
                        let sin = &*sa.cast::<libc::sockaddr_in>();
                        out.push(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into());
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*sa.cast::<libc::sockaddr_in6>();
                        out.push(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr).into());
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

/// Run `f` on a thread of its own in a new network namespace, which goes
/// away with the thread and everything made in it; `None` (with a note)
/// where the test may not make one. Commands the thread runs start there.
#[cfg(test)]
pub(crate) fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let run = std::thread::spawn(move || {
        // SAFETY: unshare(2) changes only the calling thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!("skipped: no new network namespace: {}", io::Error::last_os_error());
            return None;
        }
        Some(f())
    });
    run.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// What `sh -c cmd` prints, in the calling thread's network namespace.
#[cfg(test)]
pub(crate) fn shell(cmd: &str) -> String {
    let out = std::process::Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A thread in a network namespace of its own that runs commands there,
/// for a test's far end of a veth pair; the namespace goes when it is dropped.
#[cfg(test)]
pub(crate) struct Peer {
    tid: libc::pid_t,
    commands: Option<std::sync::mpsc::Sender<(String, std::sync::mpsc::Sender<String>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(test)]
impl Peer {
    /// `None` where the test may not make a namespace.
    pub(crate) fn start() -> Option<Self> {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (tx, rx) = std::sync::mpsc::channel::<(String, std::sync::mpsc::Sender<String>)>();
        let thread = std::thread::spawn(move || {
            // SAFETY: unshare(2) changes only the calling thread's namespaces.
            let made = unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0;
            // SAFETY: gettid(2) has no arguments and cannot fail.
            let _ = tid_tx.send(made.then(|| unsafe { libc::gettid() }));
            for (cmd, reply) in rx {
                let _ = reply.send(shell(&cmd));
            }
        });
        let tid = tid_rx.recv().ok().flatten()?;
        Some(Self { tid, commands: Some(tx), thread: Some(thread) })
    }

    /// The thread's id, which names its namespace (`ip link set DEV netns TID`).
    pub(crate) fn tid(&self) -> libc::pid_t {
        self.tid
    }

    /// What `sh -c cmd` prints in the peer's namespace.
    pub(crate) fn shell(&self, cmd: &str) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        self.commands.as_ref().and_then(|c| c.send((cmd.to_owned(), tx)).ok()).expect("peer thread");
        rx.recv().unwrap_or_else(|_| panic!("peer: {cmd} failed"))
    }
}

#[cfg(test)]
impl Drop for Peer {
    fn drop(&mut self) {
        self.commands = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
