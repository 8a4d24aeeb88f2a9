//! Kernel routes that bring every VIP and LIP address to the TUN device.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

use rvs_control::model::Model;

use crate::driver::netlink::Netlink;
use crate::log::warning;

/// The host routes the daemon added, so it removes exactly those.
#[derive(Debug)]
pub(crate) struct Routes {
    netlink: Netlink,
    device: u32,
    installed: BTreeSet<IpAddr>,
}

impl Routes {
    pub(crate) fn new(netlink: Netlink, device: u32) -> Self {
        Self { netlink, device, installed: BTreeSet::new() }
    }

    /// Route the model's VIP and LIP addresses to the device and remove routes no longer needed.
    pub(crate) fn sync(&mut self, model: &Model) -> io::Result<()> {
        let mut wanted = BTreeSet::new();
        for ((_, vip), spec) in &model.services {
            wanted.insert(vip.addr);
            wanted.extend(spec.config.laddrs.iter().copied());
        }
        let stale: Vec<IpAddr> = self.installed.difference(&wanted).copied().collect();
        for addr in stale {
            // Gone already (someone removed it) is as good as removed.
            if let Err(e) = self.netlink.del_host_route(addr, self.device) {
                warning!("route removal failed", addr = addr, error = e);
            }
            self.installed.remove(&addr);
        }
        for addr in wanted {
            if !self.installed.contains(&addr) {
                self.netlink
                    .add_host_route(addr, self.device)
                    .map_err(|e| io::Error::new(e.kind(), format!("route {addr} to the TUN device: {e}")))?;
                self.installed.insert(addr);
            }
        }
        Ok(())
    }

    /// Remove every route the daemon added.
    pub(crate) fn clear(&mut self) {
        let _ = self.sync(&Model::default());
    }
}
