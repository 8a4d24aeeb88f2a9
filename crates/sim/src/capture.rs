//! In-memory packet capture and pcap output.
//!
//! Every packet is recorded as it arrives at a node (a host or the
//! middlebox), so the capture shows what each side actually saw: lost
//! packets are absent (the link counts them), duplicates appear twice, and a
//! packet forwarded by the middlebox appears once on the way in and once,
//! rewritten, on the way out. Only the most recent packets are kept, up to a
//! byte budget; a digest covers every packet ever captured so two runs can be
//! compared without keeping everything.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rvs_core::Instant;

use crate::{HostId, LinkDir};

/// Magic of a classic pcap file whose timestamps are in nanoseconds.
pub const PCAP_MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// LINKTYPE_RAW: each record is a bare IPv4 or IPv6 packet.
pub const LINKTYPE_RAW: u32 = 101;

/// One captured packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRecord {
    /// When it arrived.
    pub time: Instant,
    /// Whose link it crossed.
    pub host: HostId,
    /// Which way it crossed it.
    pub dir: LinkDir,
    /// The IP packet as it arrived.
    pub data: Vec<u8>,
}

/// The packets captured so far (the most recent ones, within a byte budget).
#[derive(Debug)]
pub struct Capture {
    records: VecDeque<CaptureRecord>,
    bytes: usize,
    limit: usize,
    total: u64,
    evicted: u64,
    digest: u64,
    /// Buffers of evicted records, reused for new ones.
    spare: Vec<Vec<u8>>,
}

fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(31)
}

/// A 64-bit hash of the first 128 bytes of a packet and its length, in four
/// independent lanes so the multiplies overlap. That covers the IP and
/// transport headers, whose checksums cover the rest; hashing every byte
/// cost a tenth of a bulk-transfer run.
fn hash_packet(packet: &[u8]) -> u64 {
    let data = &packet[..packet.len().min(128)];
    let mut lanes =
        [0x243F_6A88_85A3_08D3u64, 0x1319_8A2E_0370_7344, 0xA409_3822_299F_31D0, 0x082E_FA98_EC4E_6C89];
    let mut blocks = data.chunks_exact(32);
    for b in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(b.chunks_exact(8)) {
            *lane = mix(*lane, u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]));
        }
    }
    let mut tail = [0u8; 32];
    let rest = blocks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    for (lane, w) in lanes.iter_mut().zip(tail.chunks_exact(8)) {
        *lane = mix(*lane, u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]));
    }
    lanes.iter().fold(packet.len() as u64, |h, &l| mix(h, l))
}

impl Capture {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            records: VecDeque::new(),
            bytes: 0,
            limit,
            total: 0,
            evicted: 0,
            digest: 0x5157_4d5f_7063_6170,
            spare: Vec::new(),
        }
    }

    pub(crate) fn record(&mut self, time: Instant, host: HostId, dir: LinkDir, data: &[u8]) {
        let mut h = mix(self.digest, time.as_nanos());
        h = mix(h, ((host.0 as u64) << 1) | u64::from(dir == LinkDir::ToHost));
        self.digest = mix(h, hash_packet(data));
        self.total += 1;
        if self.limit == 0 {
            self.evicted += 1;
            return;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        self.records.push_back(CaptureRecord { time, host, dir, data: buf });
        self.bytes += data.len();
        while self.bytes > self.limit {
            let Some(old) = self.records.pop_front() else { break };
            self.bytes -= old.data.len();
            self.evicted += 1;
            if self.spare.len() < 64 {
                self.spare.push(old.data);
            }
        }
    }

    /// The retained packets, oldest first.
    pub fn records(&self) -> impl ExactSizeIterator<Item = &CaptureRecord> {
        self.records.iter()
    }

    /// Packets captured since the start, retained or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Packets dropped from the front to stay within the byte budget.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// A hash of every packet captured since the start (time, link,
    /// direction, length and headers), independent of the byte budget. Equal
    /// digests mean equal runs, for all practical purposes.
    pub fn digest(&self) -> u64 {
        crate::rng::splitmix64(self.digest ^ self.total)
    }

    /// The retained packets as a classic pcap file (nanosecond timestamps,
    /// LINKTYPE_RAW).
    pub fn to_pcap(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.bytes + 16 * self.records.len());
        out.extend_from_slice(&PCAP_MAGIC_NANOS.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        out.extend_from_slice(&65_535u32.to_le_bytes()); // snaplen
        out.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        for r in &self.records {
            let ns = r.time.as_nanos();
            let len = u32::try_from(r.data.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&((ns / 1_000_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((ns % 1_000_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&r.data);
        }
        out
    }

    /// Write [`to_pcap`](Self::to_pcap) to `path`, creating its directory.
    pub fn write_pcap(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut f = io::BufWriter::new(fs::File::create(path)?);
        f.write_all(&self.to_pcap())?;
        f.flush()
    }
}

/// Where failing tests leave their captures: `$RVS_SIM_PCAP_DIR` if set,
/// otherwise `sim-pcap/` in the cargo target directory of the running test
/// binary (found from its own path), otherwise `target/sim-pcap`.
pub fn pcap_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RVS_SIM_PCAP_DIR") {
        return PathBuf::from(dir);
    }
    // Test binaries live in <target>/<profile>/deps/.
    let target = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(Path::to_path_buf))?
    });
    target.unwrap_or_else(|| PathBuf::from("target")).join("sim-pcap")
}

/// Writes the capture to `<pcap_dir>/<name>.pcap` when dropped during a
/// panic, so a failing test leaves its packets behind. See
/// [`Network::pcap_on_failure`](crate::Network::pcap_on_failure).
#[must_use = "the capture is written when the guard is dropped during a panic"]
pub struct PcapGuard {
    pub(crate) capture: Rc<RefCell<Capture>>,
    pub(crate) name: String,
}

impl PcapGuard {
    /// The file the capture would be written to.
    pub fn path(&self) -> PathBuf {
        pcap_dir().join(format!("{}.pcap", self.name))
    }
}

impl core::fmt::Debug for PcapGuard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PcapGuard").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Drop for PcapGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let path = self.path();
        let Ok(capture) = self.capture.try_borrow() else {
            eprintln!("rvs-sim: capture busy during panic, not written to {}", path.display());
            return;
        };
        match capture.write_pcap(&path) {
            Ok(()) => eprintln!(
                "rvs-sim: {} packets ({} older ones evicted) written to {}",
                capture.records.len(),
                capture.evicted,
                path.display()
            ),
            Err(e) => eprintln!("rvs-sim: could not write capture to {}: {e}", path.display()),
        }
    }
}
