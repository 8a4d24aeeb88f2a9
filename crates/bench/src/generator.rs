//! Sending frames from the client's namespace: an `AF_PACKET` socket (how
//! the closed loop injects its population, and the flood's generator where
//! the kernel refuses live frames) and the flood's open-loop SYN generators.
//!
//! The flood prefers live frames (`BPF_PROG_RUN` with
//! `BPF_F_TEST_XDP_LIVE_FRAMES`: an XDP program writes every frame in the
//! kernel, no system call per batch of 64). Some kernels refuse that with
//! `EPERM` even to root (seen without `CAP_SYS_RESOURCE`), so the choice is
//! probed once and falls back to the packet socket, which works as root
//! everywhere; the report names the generator used.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rvs_netns::{Netns, stop_requested};

use crate::bpf::Prog;
use crate::frame::Template;
use crate::lab::{Iface, Lab};

/// Which generator the flood uses (`--generator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    /// Live frames where the kernel allows them, else the packet socket.
    Auto,
    LiveFrames,
    PacketSocket,
}

impl Choice {
    pub(crate) fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "live-frames" => Ok(Self::LiveFrames),
            "packet-socket" => Ok(Self::PacketSocket),
            _ => bail!("--generator takes auto, live-frames or packet-socket, not {s:?}"),
        }
    }
}

/// A raw `AF_PACKET` socket that sends whole Ethernet frames out of one
/// interface, past the qdisc (`PACKET_QDISC_BYPASS`), a batch per
/// `sendmmsg`. It is bound to no protocol, so it receives nothing.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: OwnedFd,
    to: libc::sockaddr_ll,
}

/// Frames per `sendmmsg` call.
const BATCH: usize = 64;
/// `PACKET_QDISC_BYPASS` from `linux/if_packet.h`.
const PACKET_QDISC_BYPASS: libc::c_int = 20;

impl PacketSocket {
    /// Opens a socket in `ns` that sends out of `dev`.
    pub(crate) fn open(ns: &Netns, dev: &str) -> anyhow::Result<Self> {
        let ifindex = Iface::of(ns, dev)?.index;
        let fd = ns
            .run_in(|| -> io::Result<OwnedFd> {
                // SAFETY: plain socket(2); the fd is checked and then owned.
                let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: fd is a new socket nobody else owns.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            })?
            .context("opening an AF_PACKET socket")?;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads an int from a valid pointer of the given size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_QDISC_BYPASS,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("PACKET_QDISC_BYPASS");
        }
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set next.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        to.sll_ifindex = ifindex as i32;
        to.sll_halen = 6;
        Ok(Self { fd, to })
    }

    /// Sends `frames` (whole Ethernet frames), up to [`BATCH`] per system
    /// call; returns how many the kernel took. A full device queue is not
    /// an error: what it refused is simply not counted.
    pub(crate) fn send(&self, frames: &[&[u8]]) -> io::Result<usize> {
        let mut sent = 0;
        for chunk in frames.chunks(BATCH) {
            let mut iov: Vec<libc::iovec> = chunk
                .iter()
                .map(|f| libc::iovec { iov_base: f.as_ptr() as *mut libc::c_void, iov_len: f.len() })
                .collect();
            let mut msgs: Vec<libc::mmsghdr> = iov
                .iter_mut()
                .map(|v| {
                    // SAFETY: an all-zero msghdr is valid; name and iov are set next.
                    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                    h.msg_name = (&self.to as *const libc::sockaddr_ll).cast_mut().cast();
                    h.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                    h.msg_iov = v;
                    h.msg_iovlen = 1;
                    libc::mmsghdr { msg_hdr: h, msg_len: 0 }
                })
                .collect();
            // SAFETY: msgs points at len valid headers whose names and iovecs
            // outlive the call; the kernel only reads them (and writes msg_len).
            let n = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) {
                    continue;
                }
                return Err(e);
            }
            sent += n as usize;
        }
        Ok(sent)
    }
}

/// What a generator run sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    pub frames: u64,
    pub elapsed: Duration,
}

/// Frames per `BPF_PROG_RUN` call: about 30-150 ms each here, so a stop or
/// the deadline is noticed quickly.
const LIVE_CHUNK: u32 = 1 << 18;

/// The flood's generator: copies of a template, randomised per frame, sent
/// from the client's interface toward the balancer as fast as it goes.
#[derive(Debug)]
pub(crate) enum Flood {
    /// An XDP program writes each frame and returns `XDP_TX`.
    LiveFrames { prog: Prog, ifindex: u32, template: Template },
    /// Frames randomised in user space, sent through an `AF_PACKET` socket.
    PacketSocket { socket: PacketSocket, template: Template },
}

impl Flood {
    /// Sets up the generator `choice` names; `Auto` probes live frames with
    /// one frame and falls back to the packet socket with one line saying so.
    pub(crate) fn new(lab: &Lab, choice: Choice, template: Template) -> anyhow::Result<Self> {
        let live = || -> anyhow::Result<Self> {
            let prog = Prog::tx_randomised(&template.bytes, &template.random)?;
            let ifindex = Iface::of(lab.client(), "eth0")?.index;
            lab.client().run_in(|| prog.run_live(&template.bytes, ifindex, 1))??;
            Ok(Self::LiveFrames { prog, ifindex, template: template.clone() })
        };
        let socket = || -> anyhow::Result<Self> {
            Ok(Self::PacketSocket {
                socket: PacketSocket::open(lab.client(), "eth0")?,
                template: template.clone(),
            })
        };
        match choice {
            Choice::LiveFrames => live().context("the live-frames generator (try --generator packet-socket)"),
            Choice::PacketSocket => socket(),
            Choice::Auto => live().or_else(|e| {
                eprintln!(
                    "rvs-bench: live frames refused here ({e:#}); the flood uses an AF_PACKET socket instead"
                );
                socket()
            }),
        }
    }

    /// The generator's name, for the report.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::LiveFrames { .. } => "live frames (BPF_PROG_RUN, XDP_TX)",
            Self::PacketSocket { .. } => "AF_PACKET socket (sendmmsg, qdisc bypassed)",
        }
    }

    /// Sends until `limit` has passed or a stop, from a thread in the
    /// client's namespace.
    pub(crate) fn run(&self, lab: &Lab, limit: Duration) -> anyhow::Result<Sent> {
        lab.client()
            .run_in(|| -> io::Result<Sent> {
                let start = Instant::now();
                let mut frames = 0u64;
                match self {
                    Self::LiveFrames { prog, ifindex, template } => {
                        while !stop_requested() && start.elapsed() < limit {
                            prog.run_live(&template.bytes, *ifindex, LIVE_CHUNK)?;
                            frames += u64::from(LIVE_CHUNK);
                        }
                    }
                    Self::PacketSocket { socket, template } => {
                        let mut rng = Rng(u64::from(std::process::id()) << 32 | 0x9e37_79b9);
                        let mut batch = vec![template.bytes.clone(); BATCH];
                        while !stop_requested() && start.elapsed() < limit {
                            for f in &mut batch {
                                template.randomise(f, || rng.next() as u16);
                            }
                            let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                            frames += socket.send(&refs)? as u64;
                        }
                    }
                }
                Ok(Sent { frames, elapsed: start.elapsed() })
            })?
            .with_context(|| format!("running the flood's generator ({})", self.name()))
    }
}

/// xorshift64: random enough for spoofed sources, and cheap.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
