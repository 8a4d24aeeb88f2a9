//! Hand-over veth pairs, one per worker: the XDP program redirects a frame
//! that arrived on another worker's queue into the near end, and the far
//! end's program puts it into the owning worker's socket there.
//!
//! The pairs carry no addresses and no routes, so the kernel never sends
//! anything of its own into them. They live as long as the daemon; dropping
//! [`Handovers`] deletes them, and a start finds and replaces pairs a killed
//! daemon left behind.

use std::io;

use crate::driver::netlink::{Netlink, index_of};
use crate::os;

/// One worker's pair.
#[derive(Debug)]
pub(crate) struct Pair {
    /// The end the XDP program redirects into.
    pub(crate) near: u32,
    /// The end whose program delivers to the worker's socket.
    pub(crate) far: u32,
    pub(crate) far_name: String,
}

/// The pairs of all workers, or none where every frame arrives on its
/// worker's queue (one worker, single-queue interfaces).
#[derive(Debug)]
pub(crate) struct Handovers {
    /// How many interfaces the driver attaches to; a worker's socket on its
    /// pair's far end follows its sockets on them.
    pub(crate) interfaces: usize,
    pub(crate) pairs: Vec<Pair>,
    netlink: Option<Netlink>,
}

impl Handovers {
    /// Whether frames can arrive on a queue other than their worker's.
    pub(crate) fn needed(workers: usize, interfaces: &[String]) -> bool {
        workers > 1 || interfaces.iter().any(|i| rx_queues(i) > 1)
    }

    pub(crate) fn none(interfaces: usize) -> Self {
        Self { interfaces, pairs: Vec::new(), netlink: None }
    }

    /// The far end's name of worker `w`'s pair, named after the TUN device
    /// so two daemons in one namespace keep apart.
    pub(crate) fn names(tun_name: &str, w: usize) -> (String, String) {
        let stem: String = tun_name.chars().take(11).collect();
        (format!("{stem}h{w}a"), format!("{stem}h{w}b"))
    }

    /// Make one pair per worker, up, IPv6 off (no router solicitations or
    /// address probes of the kernel's own go through them).
    pub(crate) fn create(tun_name: &str, workers: usize, interfaces: usize) -> io::Result<Self> {
        let mut netlink = Netlink::open()?;
        let mut pairs = Vec::new();
        let result = (|| -> io::Result<()> {
            for w in 0..workers {
                let (near_name, far_name) = Self::names(tun_name, w);
                if let Ok(stale) = index_of(&near_name) {
                    netlink.del_link(stale)?;
                }
                let near = netlink.add_veth_pair(&near_name, &far_name)?;
                pairs.push(Pair { near, far: 0, far_name: far_name.clone() });
                let far = index_of(&far_name)?;
                pairs[w].far = far;
                for name in [&near_name, &far_name] {
                    // Absent when the kernel has no IPv6, and then moot.
                    let _ = os::sysctl(&format!("net/ipv6/conf/{name}/disable_ipv6"), "1");
                }
                netlink.link_up(near)?;
                netlink.link_up(far)?;
            }
            Ok(())
        })();
        // On error, dropping what was made deletes its pairs again.
        let made = Self { interfaces, pairs, netlink: Some(netlink) };
        result.map(|()| made)
    }
}

impl Drop for Handovers {
    fn drop(&mut self) {
        if let Some(netlink) = self.netlink.as_mut() {
            for pair in &self.pairs {
                let _ = netlink.del_link(pair.near);
            }
        }
    }
}

/// How many receive queues interface `name` has (1 when unknown).
fn rx_queues(name: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count())
        .unwrap_or(1)
        .max(1)
}
