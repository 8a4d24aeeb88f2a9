//! A layer-3 TUN device: the kernel routes VIPs and LIPs into it, the engine
//! rewrites what it reads, and what it writes back the kernel forwards on.
//!
//! The device is not persistent: it vanishes with its file descriptor, so a
//! daemon that dies leaves no device behind, and the routes through it go too.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// `_IOW('T', 202, int)` from `linux/if_tun.h`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;

/// An open TUN device in non-blocking mode.
#[derive(Debug)]
pub(crate) struct Tun {
    file: File,
    name: String,
    index: u32,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tun {
    /// Create the device `name` in the calling thread's network namespace
    /// with `queues` queues, one descriptor each (one per worker). The
    /// kernel spreads what it routes to the device over the queues by flow,
    /// so each flow keeps to one worker.
    pub(crate) fn create_queues(name: &str, queues: usize) -> io::Result<Vec<Self>> {
        let flags = if queues > 1 { IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE } else { IFF_TUN | IFF_NO_PI };
        let made = (0..queues.max(1)).map(|_| Self::open(name, flags)).collect::<io::Result<Vec<_>>>()?;
        quiet_ipv6(name, made[0].index);
        Ok(made)
    }

    /// Attach to (the first time: create) the device `name`.
    fn open(name: &str, flags: libc::c_short) -> io::Result<Self> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad device name {name:?}")));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("open /dev/net/tun: {e}")))?;
        let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags, _pad: [0; 22] };
        for (d, s) in req.name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `IfReq`
        // lays out (name, then the flags member of the union, padded to 40 bytes).
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("create TUN device {name}: {e}")));
        }
        let c = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `c` is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { file, name: name.to_owned(), index })
    }

    /// The device name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The kernel's interface index.
    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    /// Read one packet; `WouldBlock` when none is queued.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Write one packet.
    pub(crate) fn send(&self, packet: &[u8]) -> io::Result<()> {
        let n = (&self.file).write(packet)?;
        if n == packet.len() {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::WriteZero, "short write to TUN device"))
        }
    }
}

/// Keep the kernel's own IPv6 off the device `name` (not up yet), which
/// would otherwise send it router solicitations, address probes and MLD
/// reports that rvs could only drop: no link-local address, no multicast
/// (a forwarding host joins the all-routers group, and reports it, on every
/// multicast interface), and the group it joined at creation left while
/// MLDv1 is in force, which leaves silently. Routes to the device carry IPv6
/// all the same. Where the kernel has no IPv6, there is nothing to keep off.
fn quiet_ipv6(name: &str, index: u32) {
    let conf = |key: &str, value: &str| crate::os::sysctl(&format!("net/ipv6/conf/{name}/{key}"), value);
    let quiet = conf("addr_gen_mode", "1")
        .and_then(|()| conf("force_mld_version", "1"))
        .and_then(|()| conf("forwarding", "0"))
        .and_then(|()| super::netlink::Netlink::open()?.set_link_flag(index, libc::IFF_MULTICAST, false))
        .and_then(|()| conf("forwarding", "1"));
    if let Err(e) = quiet
        && std::path::Path::new("/proc/sys/net/ipv6").exists()
    {
        crate::log::warning!(
            "the kernel's IPv6 messages on the TUN device not turned off",
            device = name,
            error = e
        );
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
