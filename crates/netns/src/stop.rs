//! The stop flag Ctrl-C sets, for programs that build topologies.
//!
//! Killing such a program outright would leave its namespaces, nftables
//! tables and processes behind; instead SIGINT and SIGTERM only set
//! [`STOP`], every wait polls it, and the guards clean up on the way out.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT/SIGTERM once [`install_stop_handlers`] has run.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    STOP.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to [`STOP`] instead of killing the process, so
/// the guards get to remove namespaces, tables and processes.
pub fn install_stop_handlers() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores an atomic.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether Ctrl-C (or SIGTERM) asked to stop.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
