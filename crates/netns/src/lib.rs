//! Network-namespace topologies for rvs end-to-end tests and `rvs lab`.
//!
//! [`Topology::build`] makes the standard load-balancer topology out of
//! namespaces and veths with nothing but iproute2 (`ip`); [`Netns`] runs
//! commands, guarded processes ([`ChildGuard`]) and in-process threads inside a
//! namespace; [`Topology::inject_loss`] drops packets at random on the
//! balancer's real-facing links with nftables, where `nft` exists, and
//! [`Topology::inject_syn_loss`] only the SYNs and SYN-ACKs among them;
//! [`install_stop_handlers`] turns Ctrl-C into the [`STOP`] flag, so a
//! program gets to drop its topology instead of dying with it; a
//! [`TempDir`] holds a lab's files, [`Netns::spawn_logged`] starts a process
//! logging into it and [`wait_for_path`] waits until the process is ready.
//!
//! Everything a topology makes is removed when it is dropped, also while a
//! test panics: processes it adopted, nftables tables, namespaces (and with
//! them every veth and bridge). Names are unique per process and instance
//! (`rvsT<pid>x<n>-...`), so tests build topologies in parallel, and
//! [`cleanup_stale`] removes what a crashed run left behind.

#![warn(missing_docs)]

mod loss;
mod ns;
mod scratch;
mod stop;
mod topology;

pub use loss::{LossRule, LossSelector, nft_available};
pub use ns::{ChildGuard, Netns, STOP_GRACE, run};
pub use scratch::{NotReady, TempDir, wait_for_path};
pub use stop::{STOP, install_stop_handlers, stop_requested};
pub use topology::{Topology, TopologySpec, cleanup_orphans, cleanup_stale, mirror6};

/// Whether network-namespace tests can run here.
///
/// They need root. Without it this panics with a message saying so, unless
/// the environment sets `RVS_SKIP_NETNS=1`, in which case it prints that the
/// test was skipped and returns `false`.
pub fn netns_tests_enabled(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("RVS_SKIP_NETNS").is_some_and(|v| v == "1") {
        eprintln!("{test}: skipped (not root and RVS_SKIP_NETNS=1)");
        return false;
    }
    panic!("{test}: network-namespace tests need root; run as root or set RVS_SKIP_NETNS=1 to skip them");
}
