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

/// Write a sysctl under /proc/sys (e.g. `net/ipv4/ip_forward`) in the calling
/// thread's network namespace.
pub(crate) fn sysctl(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/{key}"), value)
        .map_err(|e| io::Error::new(e.kind(), format!("sysctl {key}={value}: {e}")))
}
