//! Raw `bpf()` system calls through libc: the few XDP programs the benchmark
//! needs, assembled by hand (no compiler, no loader library), a per-CPU
//! counter map, an array of last-seen times shared with user space through
//! `mmap`, XDP attachment by link (detached when the fd closes, so a
//! crashed run leaves nothing attached), and the live-frames generator
//! (`BPF_PROG_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`).
//!
//! Interface indexes are resolved in the network namespace of the calling
//! thread: attach and generate from a thread inside the namespace
//! (`Netns::run_in`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_TEST_RUN: libc::c_int = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_LINK_CREATE: libc::c_int = 28;
const BPF_ENABLE_STATS: libc::c_int = 32;
const BPF_STATS_RUN_TIME: u32 = 0;

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_F_MMAPABLE: u32 = 1 << 10;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// XDP verdicts.
const XDP_DROP: i32 = 1;
const XDP_PASS: i32 = 2;
const XDP_TX: i32 = 3;
#[cfg(test)]
const XDP_REDIRECT: i32 = 4;

/// Helper ids.
const FN_MAP_LOOKUP_ELEM: i32 = 1;
const FN_KTIME_GET_NS: i32 = 5;
const FN_GET_PRANDOM_U32: i32 = 7;
const FN_REDIRECT: i32 = 23;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// Assembler for the handful of opcodes used here.
mod asm {
    use super::Insn;

    const fn i(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn { code, regs: dst | (src << 4), off, imm }
    }
    pub(super) const fn mov_imm(dst: u8, imm: i32) -> Insn {
        i(0xb7, dst, 0, 0, imm)
    }
    pub(super) const fn mov_reg(dst: u8, src: u8) -> Insn {
        i(0xbf, dst, src, 0, 0)
    }
    pub(super) const fn add_imm(dst: u8, imm: i32) -> Insn {
        i(0x07, dst, 0, 0, imm)
    }
    pub(super) const fn add_reg(dst: u8, src: u8) -> Insn {
        i(0x0f, dst, src, 0, 0)
    }
    pub(super) const fn rsh_imm(dst: u8, imm: i32) -> Insn {
        i(0x77, dst, 0, 0, imm)
    }
    pub(super) const fn and_imm(dst: u8, imm: i32) -> Insn {
        i(0x57, dst, 0, 0, imm)
    }
    pub(super) const fn or_imm(dst: u8, imm: i32) -> Insn {
        i(0x47, dst, 0, 0, imm)
    }
    pub(super) const fn xor_imm(dst: u8, imm: i32) -> Insn {
        i(0xa7, dst, 0, 0, imm)
    }
    /// `dst = *(u32 *)(src + off)`
    pub(super) const fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
        i(0x61, dst, src, off, 0)
    }
    /// `dst = *(u16 *)(src + off)`
    pub(super) const fn ldx_h(dst: u8, src: u8, off: i16) -> Insn {
        i(0x69, dst, src, off, 0)
    }
    /// `dst = *(u8 *)(src + off)`
    pub(super) const fn ldx_b(dst: u8, src: u8, off: i16) -> Insn {
        i(0x71, dst, src, off, 0)
    }
    /// `dst = *(u64 *)(src + off)`
    pub(super) const fn ldx_dw(dst: u8, src: u8, off: i16) -> Insn {
        i(0x79, dst, src, off, 0)
    }
    /// `*(u16 *)(dst + off) = src`
    pub(super) const fn stx_h(dst: u8, src: u8, off: i16) -> Insn {
        i(0x6b, dst, src, off, 0)
    }
    /// `*(u32 *)(dst + off) = src`
    pub(super) const fn stx_w(dst: u8, src: u8, off: i16) -> Insn {
        i(0x63, dst, src, off, 0)
    }
    /// `*(u16 *)(dst + off) = imm`
    pub(super) const fn st_h(dst: u8, off: i16, imm: i32) -> Insn {
        i(0x6a, dst, 0, off, imm)
    }
    /// `*(u64 *)(dst + off) = src`
    pub(super) const fn stx_dw(dst: u8, src: u8, off: i16) -> Insn {
        i(0x7b, dst, src, off, 0)
    }
    /// `*(u32 *)(dst + off) = imm`
    pub(super) const fn st_w(dst: u8, off: i16, imm: i32) -> Insn {
        i(0x62, dst, 0, off, imm)
    }
    /// `if dst > src goto +off`
    pub(super) const fn jgt_reg(dst: u8, src: u8, off: i16) -> Insn {
        i(0x2d, dst, src, off, 0)
    }
    /// `if dst != imm goto +off`
    pub(super) const fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
        i(0x55, dst, 0, off, imm)
    }
    /// `if dst == imm goto +off`
    pub(super) const fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
        i(0x15, dst, 0, off, imm)
    }
    pub(super) const fn call(helper: i32) -> Insn {
        i(0x85, 0, 0, 0, helper)
    }
    pub(super) const fn exit() -> Insn {
        i(0x95, 0, 0, 0, 0)
    }
    /// `dst = map fd` (a two-slot `ld_imm64` with `BPF_PSEUDO_MAP_FD`).
    pub(super) const fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        [i(0x18, dst, 1, 0, fd), i(0, 0, 0, 0, 0)]
    }
}

/// A program under construction whose early exits all jump to one
/// `return XDP_PASS` appended by [`Code::finish`].
#[derive(Debug, Default)]
struct Code {
    insns: Vec<Insn>,
    to_pass: Vec<usize>,
}

impl Code {
    fn push(&mut self, insns: impl IntoIterator<Item = Insn>) {
        self.insns.extend(insns);
    }

    /// `if dst != imm goto pass`
    fn pass_unless_eq(&mut self, dst: u8, imm: i32) {
        self.to_pass.push(self.insns.len());
        self.insns.push(asm::jne_imm(dst, imm, 0));
    }

    /// `if dst > src goto pass`
    fn pass_if_gt(&mut self, dst: u8, src: u8) {
        self.to_pass.push(self.insns.len());
        self.insns.push(asm::jgt_reg(dst, src, 0));
    }

    /// Loads `r6 = data`, `r7 = data_end` (kept across helper calls) and
    /// passes every frame that is not IPv4 without options, of IP protocol
    /// `proto`, at least `len` bytes long.
    fn ipv4_prologue(&mut self, proto: u8, len: i32) {
        use asm::*;
        self.push([ldx_w(6, 1, 0), ldx_w(7, 1, 4), mov_reg(2, 6), add_imm(2, len)]);
        self.pass_if_gt(2, 7);
        self.push([ldx_h(2, 6, 12)]);
        self.pass_unless_eq(2, 0x0008); // ethertype 0x0800 read little-endian
        self.push([ldx_b(2, 6, 14)]);
        self.pass_unless_eq(2, 0x45);
        self.push([ldx_b(2, 6, 23)]);
        self.pass_unless_eq(2, i32::from(proto));
    }

    /// Loads `r6 = data`, `r7 = data_end` and passes every frame that is
    /// not IPv6 with next header `next` (no extension headers), at least
    /// `len` bytes long.
    fn ipv6_prologue(&mut self, next: u8, len: i32) {
        use asm::*;
        self.push([ldx_w(6, 1, 0), ldx_w(7, 1, 4), mov_reg(2, 6), add_imm(2, len)]);
        self.pass_if_gt(2, 7);
        self.push([ldx_h(2, 6, 12)]);
        self.pass_unless_eq(2, 0xdd86); // ethertype 0x86dd read little-endian
        self.push([ldx_b(2, 6, 20)]);
        self.pass_unless_eq(2, i32::from(next));
    }

    /// One program of two: what this one passes goes on to `next`.
    fn or_else(mut self, next: Self) -> Self {
        let start = self.insns.len();
        for at in self.to_pass.drain(..) {
            self.insns[at].off = (start - at - 1) as i16;
        }
        self.to_pass = next.to_pass.iter().map(|at| at + start).collect();
        self.insns.extend(next.insns);
        self
    }

    /// Adds one to the per-CPU `counter` (clobbers r0-r5).
    fn count(&mut self, counter: &Counter) {
        use asm::*;
        let [m0, m1] = ld_map_fd(1, counter.fd.as_raw_fd());
        self.push([st_w(10, -4, 0), mov_reg(2, 10), add_imm(2, -4), m0, m1, call(FN_MAP_LOOKUP_ELEM)]);
        self.push([jeq_imm(0, 0, 3), ldx_dw(1, 0, 0), add_imm(1, 1), stx_dw(0, 1, 0)]);
    }

    fn finish(mut self) -> Vec<Insn> {
        let pass = self.insns.len();
        for at in self.to_pass {
            self.insns[at].off = (pass - at - 1) as i16;
        }
        self.insns.extend([asm::mov_imm(0, XDP_PASS), asm::exit()]);
        self.insns
    }
}

fn sys_bpf(cmd: libc::c_int, attr: &mut [u64]) -> io::Result<libc::c_long> {
    // SAFETY: attr is a zero-initialised, 8-byte aligned buffer at least as
    // large as the union member `cmd` reads; the kernel copies `size` bytes.
    let rc =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size_of_val(attr) as libc::c_uint) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

fn owned_fd(rc: libc::c_long) -> OwnedFd {
    // SAFETY: a successful map/prog/link command returns a new fd we own.
    unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) }
}

/// Writes `v` at byte offset `off` of an attr buffer.
fn put32(attr: &mut [u64], off: usize, v: u32) {
    let word = &mut attr[off / 8];
    let shift = (off % 8) * 8;
    *word = (*word & !(0xffff_ffff << shift)) | (u64::from(v) << shift);
}

fn put64(attr: &mut [u64], off: usize, v: u64) {
    attr[off / 8] = v;
}

/// The kernel's run-time statistics of every BPF program (`run_time_ns`,
/// `run_cnt`), kept while this lives (`BPF_ENABLE_STATS`: nothing global
/// is left switched on if the process dies). They cost two clock reads per
/// run, so they are on only while a cost is measured.
#[derive(Debug)]
pub(crate) struct RunStats {
    _enabled: OwnedFd,
}

impl RunStats {
    pub(crate) fn enable() -> io::Result<Self> {
        let mut attr = [0u64; 1];
        put32(&mut attr, 0, BPF_STATS_RUN_TIME);
        sys_bpf(BPF_ENABLE_STATS, &mut attr)
            .map(|fd| Self { _enabled: owned_fd(fd) })
            .map_err(|e| io::Error::new(e.kind(), format!("enabling BPF run-time statistics: {e}")))
    }

    /// Nanoseconds run and runs so far of the program with id `id`.
    pub(crate) fn of(&self, id: u32) -> io::Result<(u64, u64)> {
        let mut attr = [0u64; 2];
        put32(&mut attr, 0, id);
        let info = prog_info(&owned_fd(sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?))?;
        Ok((info[24], info[25]))
    }
}

/// `struct bpf_prog_info` of a program up to `run_cnt`, as 8-byte words:
/// the id is the high half of word 0, `run_time_ns` word 24 (offset 192),
/// `run_cnt` word 25.
fn prog_info(fd: &OwnedFd) -> io::Result<[u64; 26]> {
    let mut info = [0u64; 26];
    let mut attr = [0u64; 2];
    put32(&mut attr, 0, fd.as_raw_fd() as u32);
    put32(&mut attr, 4, size_of_val(&info) as u32);
    put64(&mut attr, 8, info.as_mut_ptr() as u64);
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

/// A 16-bit field the generator randomises per frame (stored as written by
/// a little-endian `u16` store: only the set of values matters).
#[derive(Debug, Clone)]
pub(crate) struct RandomField {
    /// Bits of the random value kept.
    pub mask: u16,
    /// Bits then set (e.g. to keep a port off 0).
    pub set: u16,
    /// Byte offsets in the frame that get the value.
    pub value_at: Vec<i16>,
    /// Byte offsets that get its complement.
    pub complement_at: Vec<i16>,
}

/// A per-CPU array with one `u64`: the receivers' packet counter.
#[derive(Debug)]
pub(crate) struct Counter {
    fd: OwnedFd,
}

impl Counter {
    pub(crate) fn new() -> io::Result<Self> {
        let mut attr = [0u64; 16];
        put32(&mut attr, 0, BPF_MAP_TYPE_PERCPU_ARRAY);
        put32(&mut attr, 4, 4); // key_size
        put32(&mut attr, 8, 8); // value_size
        put32(&mut attr, 12, 1); // max_entries
        Ok(Self { fd: owned_fd(sys_bpf(BPF_MAP_CREATE, &mut attr)?) })
    }

    /// The sum over CPUs.
    pub(crate) fn read(&self) -> io::Result<u64> {
        let cpus = possible_cpus();
        let mut values = vec![0u64; cpus];
        let key = 0u32;
        let mut attr = [0u64; 4];
        put32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put64(&mut attr, 8, &key as *const u32 as u64);
        put64(&mut attr, 16, values.as_mut_ptr() as u64);
        sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr)?;
        Ok(values.iter().sum())
    }
}

/// The kernel sizes per-CPU values by the possible CPUs (`0-N` ranges).
fn possible_cpus() -> usize {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let n = s
        .trim()
        .split(',')
        .filter_map(|r| r.rsplit('-').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1);
    // SAFETY: sysconf has no preconditions.
    n.max(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as usize)
}

/// An array of `u64` nanosecond times (`CLOCK_MONOTONIC`, as
/// `bpf_ktime_get_ns` reads it), one per packet of a closed loop, mapped
/// into this process so it is read without a system call per entry.
#[derive(Debug)]
pub(crate) struct SeenMap {
    fd: OwnedFd,
    ptr: *mut u64,
    len: usize,
    bytes: usize,
}

impl SeenMap {
    pub(crate) fn new(len: u32) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "an empty seen map"));
        }
        let mut attr = [0u64; 16];
        put32(&mut attr, 0, BPF_MAP_TYPE_ARRAY);
        put32(&mut attr, 4, 4); // key_size
        put32(&mut attr, 8, 8); // value_size
        put32(&mut attr, 12, len); // max_entries
        put32(&mut attr, 16, BPF_F_MMAPABLE);
        let fd = owned_fd(sys_bpf(BPF_MAP_CREATE, &mut attr)?);
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let bytes = (len as usize * 8).div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the map's fd, checked below; the
        // kernel keeps the pages alive until munmap in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, ptr: ptr.cast(), len: len as usize, bytes })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entry `i` as the programs last wrote it (0 if never).
    pub(crate) fn get(&self, i: usize) -> u64 {
        assert!(i < self.len, "seen map index {i} beyond {}", self.len);
        // SAFETY: i is within the mapping; the programs write whole aligned
        // u64s, so a volatile read sees an old or a new value, never a torn one.
        unsafe { self.ptr.add(i).read_volatile() }
    }

    /// Sets every entry to 0.
    pub(crate) fn clear(&self) {
        for i in 0..self.len {
            // SAFETY: as in `get`.
            unsafe { self.ptr.add(i).write_volatile(0) };
        }
    }
}

impl Drop for SeenMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.bytes) };
    }
}

/// Now on the clock `bpf_ktime_get_ns` reads, in nanoseconds.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The reflector's work on a UDP packet whose header starts at `l4`, past
/// its family's prologue (see [`Prog::reflect`]); ends before the redirect.
fn reflect_udp(c: &mut Code, l4: i16, v6: bool, port: LoopPort, counter: &Counter, seen: Option<&SeenMap>) {
    use asm::*;
    let (at, port) = match port {
        LoopPort::Source(p) => (l4, p),
        LoopPort::Destination(p) => (l4 + 2, p),
    };
    c.push([ldx_h(2, 6, at)]);
    c.pass_unless_eq(2, i32::from(u16::from_le_bytes(port.to_be_bytes())));
    c.count(counter);
    if let Some(seen) = seen {
        let [m0, m1] = ld_map_fd(1, seen.fd.as_raw_fd());
        c.push([call(FN_KTIME_GET_NS), mov_reg(9, 0), ldx_w(2, 6, l4 + 8), stx_w(10, 2, -8)]);
        c.push([mov_reg(2, 10), add_imm(2, -8), m0, m1, call(FN_MAP_LOOKUP_ELEM)]);
        // Out of range: no entry, nothing written.
        c.push([jeq_imm(0, 0, 1), stx_dw(0, 9, 0)]);
    }
    c.push([ldx_w(1, 6, 0), ldx_h(2, 6, 4), ldx_w(3, 6, 6), ldx_h(4, 6, 10)]);
    c.push([stx_w(6, 3, 0), stx_h(6, 4, 4), stx_w(6, 1, 6), stx_h(6, 2, 10)]);
    c.push([ldx_h(1, 6, l4), ldx_h(2, 6, l4 + 2), stx_h(6, 2, l4), stx_h(6, 1, l4 + 2)]);
    if v6 {
        for w in (0..16).step_by(4) {
            c.push([ldx_w(1, 6, 22 + w), ldx_w(2, 6, 38 + w), stx_w(6, 2, 22 + w), stx_w(6, 1, 38 + w)]);
        }
        // Next header 17 (checked) and hop limit 64, one little-endian store.
        c.push([st_h(6, 20, 0x4011)]);
        return;
    }
    c.push([ldx_w(1, 6, 26), ldx_w(2, 6, 30), stx_w(6, 2, 26), stx_w(6, 1, 30), st_h(6, 40, 0)]);
    // m = TTL | protocol << 8 as read little-endian; the sum of one's
    // complement words is the same in either byte order.
    c.push([ldx_h(1, 6, 22), mov_reg(2, 1), and_imm(2, 0xff00), or_imm(2, 64)]);
    c.push([ldx_h(3, 6, 24), xor_imm(3, 0xffff), xor_imm(1, 0xffff), add_reg(3, 1), add_reg(3, 2)]);
    for _ in 0..2 {
        c.push([mov_reg(1, 3), rsh_imm(1, 16), and_imm(3, 0xffff), add_reg(3, 1)]);
    }
    c.push([xor_imm(3, 0xffff), stx_h(6, 2, 22), stx_h(6, 3, 24)]);
}

/// Where a reflector recognises the closed loop's packets: UDP from or to
/// this port.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LoopPort {
    Source(u16),
    Destination(u16),
}

/// A loaded XDP program.
#[derive(Debug)]
pub(crate) struct Prog {
    fd: OwnedFd,
}

impl Prog {
    fn load(insns: &[Insn]) -> io::Result<Self> {
        let license = c"GPL";
        let mut log = vec![0u8; 64 * 1024];
        let mut attr = [0u64; 16];
        put32(&mut attr, 0, BPF_PROG_TYPE_XDP);
        put32(&mut attr, 4, insns.len() as u32);
        put64(&mut attr, 8, insns.as_ptr() as u64);
        put64(&mut attr, 16, license.as_ptr() as u64);
        put32(&mut attr, 24, 1); // log_level
        put32(&mut attr, 28, log.len() as u32);
        put64(&mut attr, 32, log.as_mut_ptr() as u64);
        put32(&mut attr, 68, BPF_XDP); // expected_attach_type
        match sys_bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(fd) => Ok(Self { fd: owned_fd(fd) }),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                Err(io::Error::new(
                    e.kind(),
                    format!(
                        "loading an XDP program: {e}; verifier: {}",
                        String::from_utf8_lossy(&log[..end])
                    ),
                ))
            }
        }
    }

    /// Drops IPv4 TCP frames to `net`/16 and passes everything else: on a
    /// veth, it is there so that its peer's `XDP_TX` wakes it, and so that
    /// answers to spoofed sources vanish as they would toward hosts that do
    /// not exist.
    pub(crate) fn drop_to(net: std::net::Ipv4Addr) -> io::Result<Self> {
        let [a, b, _, _] = net.octets();
        let mut c = Code::default();
        c.ipv4_prologue(6, 34);
        c.push([asm::ldx_h(2, 6, 30)]);
        c.pass_unless_eq(2, i32::from(u16::from_le_bytes([a, b])));
        c.push([asm::mov_imm(0, XDP_DROP), asm::exit()]);
        Self::load(&c.finish()).map_err(|e| io::Error::new(e.kind(), format!("dropping program: {e}")))
    }

    /// Counts IPv4 packets of IP protocol `proto` in `counter` and drops
    /// them (or passes them, `drop` false); passes everything else (ARP, so
    /// neighbours still resolve).
    pub(crate) fn count(counter: &Counter, proto: u8, drop: bool) -> io::Result<Self> {
        let mut c = Code::default();
        c.ipv4_prologue(proto, 34);
        c.count(counter);
        c.push([asm::mov_imm(0, if drop { XDP_DROP } else { XDP_PASS }), asm::exit()]);
        Self::load(&c.finish()).map_err(|e| io::Error::new(e.kind(), format!("counting program: {e}")))
    }

    /// The closed loop's reflector, for IPv4 and IPv6 alike: a UDP packet
    /// of the loop (see [`LoopPort`]) is counted, its arrival time written
    /// at the index its first 4 payload bytes hold (little-endian) in `seen`
    /// when given, and it is sent back where it came from: MACs, addresses
    /// and ports swapped, the TTL or hop limit back at 64 (routers on the
    /// loop take one per pass). An IPv4 packet's UDP checksum becomes 0
    /// (none: the swaps keep a checksum right, but a sender's offload may
    /// have left it partial) and its IP checksum is updated (RFC 1624, eqn.
    /// 3); IPv6 requires the UDP checksum, which the swaps keep. It goes
    /// back by a redirect to its own interface `ifindex`, not `XDP_TX`: a
    /// veth kicks its peer's NAPI after a redirect whenever the peer has
    /// NAPI (GRO on will do), after `XDP_TX` only when the peer runs an XDP
    /// program of its own. Everything else passes.
    pub(crate) fn reflect(
        port: LoopPort,
        ifindex: u32,
        counter: &Counter,
        seen: Option<&SeenMap>,
    ) -> io::Result<Self> {
        let half = |v6: bool| {
            let mut c = Code::default();
            let l4: i16 = if v6 { 54 } else { 34 };
            if v6 {
                c.ipv6_prologue(17, i32::from(l4) + 12);
            } else {
                c.ipv4_prologue(17, i32::from(l4) + 12);
            }
            reflect_udp(&mut c, l4, v6, port, counter, seen);
            c.push([
                asm::mov_imm(1, ifindex as i32),
                asm::mov_imm(2, 0),
                asm::call(FN_REDIRECT),
                asm::exit(),
            ]);
            c
        };
        let c = half(false).or_else(half(true));
        Self::load(&c.finish()).map_err(|e| io::Error::new(e.kind(), format!("reflecting program: {e}")))
    }

    /// A wire in place of a balancer: UDP frames, IPv4 or IPv6, get the
    /// MACs `dst`, `src` and are redirected out of `ifindex` unchanged
    /// otherwise (no routing, no TTL); everything else passes.
    pub(crate) fn cross_connect(ifindex: u32, dst: [u8; 6], src: [u8; 6]) -> io::Result<Self> {
        use asm::*;
        let word = |b: &[u8]| i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let half = |b: &[u8]| i32::from(u16::from_le_bytes([b[0], b[1]]));
        let body = |c: &mut Code| {
            c.push([st_w(6, 0, word(&dst[..4])), st_h(6, 4, half(&dst[4..])), st_w(6, 6, word(&src[..4]))]);
            c.push([
                st_h(6, 10, half(&src[4..])),
                mov_imm(1, ifindex as i32),
                mov_imm(2, 0),
                call(FN_REDIRECT),
            ]);
            c.push([exit()]);
        };
        let (mut v4, mut v6) = (Code::default(), Code::default());
        v4.ipv4_prologue(17, 42);
        body(&mut v4);
        v6.ipv6_prologue(17, 62);
        body(&mut v6);
        Self::load(&v4.or_else(v6).finish())
            .map_err(|e| io::Error::new(e.kind(), format!("cross-connect program: {e}")))
    }

    /// The generator's program: rewrites the whole frame from `template`
    /// (pages of live frames are recycled with whatever the path wrote into
    /// them: forwarding rewrites MACs and TTL, NAT addresses and ports),
    /// then, for each group, writes one fresh random 16-bit value
    /// (`& mask | set`) at the group's `value_at` offsets and its complement
    /// at `complement_at`, so that a checksum covering both stays valid
    /// (the one's-complement sum of `x` and `!x` is constant); then `XDP_TX`.
    pub(crate) fn tx_randomised(template: &[u8], groups: &[RandomField]) -> io::Result<Self> {
        use asm::*;
        let min_len = template.len() as i32;
        // r6 = data, r7 = data_end (callee-saved across helper calls).
        let mut body: Vec<Insn> = template
            .chunks_exact(4)
            .enumerate()
            .map(|(i, w)| st_w(6, (i * 4) as i16, i32::from_le_bytes([w[0], w[1], w[2], w[3]])))
            .collect();
        for g in groups {
            body.extend([
                call(FN_GET_PRANDOM_U32),
                and_imm(0, i32::from(g.mask)),
                or_imm(0, i32::from(g.set)),
            ]);
            body.extend([mov_reg(9, 0), xor_imm(9, 0xffff)]);
            body.extend(g.value_at.iter().map(|&off| stx_h(6, 0, off)));
            body.extend(g.complement_at.iter().map(|&off| stx_h(6, 9, off)));
        }
        let mut prog = vec![ldx_w(6, 1, 0), ldx_w(7, 1, 4), mov_reg(2, 6), add_imm(2, min_len)];
        prog.push(jgt_reg(2, 7, body.len() as i16));
        prog.extend(body);
        prog.extend([mov_imm(0, XDP_TX), exit()]);
        Self::load(&prog).map_err(|e| io::Error::new(e.kind(), format!("generator program: {e}")))
    }

    /// Attaches in native (driver) mode to interface `ifindex` of the calling
    /// thread's namespace; detached when the returned link is dropped.
    pub(crate) fn attach(&self, ifindex: u32) -> io::Result<OwnedFd> {
        let mut attr = [0u64; 8];
        put32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put32(&mut attr, 4, ifindex);
        put32(&mut attr, 8, BPF_XDP);
        put32(&mut attr, 12, XDP_FLAGS_DRV_MODE);
        sys_bpf(BPF_LINK_CREATE, &mut attr)
            .map(owned_fd)
            .map_err(|e| io::Error::new(e.kind(), format!("attaching XDP to ifindex {ifindex}: {e}")))
    }

    /// Runs the program over `frames` copies of `frame`, received on
    /// `ifindex` of the calling thread's namespace, in live-frames mode: what
    /// it returns (`XDP_TX`) really goes out.
    pub(crate) fn run_live(&self, frame: &[u8], ifindex: u32, frames: u32) -> io::Result<()> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
        let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
        let mut attr = [0u64; 10];
        put32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put32(&mut attr, 8, frame.len() as u32);
        put64(&mut attr, 16, frame.as_ptr() as u64);
        put32(&mut attr, 32, frames); // repeat
        put32(&mut attr, 40, size_of_val(&ctx) as u32);
        put64(&mut attr, 48, ctx.as_ptr() as u64);
        put32(&mut attr, 64, BPF_F_TEST_XDP_LIVE_FRAMES);
        put32(&mut attr, 72, 64); // batch_size
        sys_bpf(BPF_PROG_TEST_RUN, &mut attr).map(drop)
    }
}

#[cfg(test)]
impl Prog {
    /// Runs the program once over `frame` (not live) and returns its verdict.
    fn verdict(&self, frame: &[u8]) -> io::Result<u32> {
        self.run_once(frame).map(|(v, _)| v)
    }

    /// Runs the program once over `frame`: its verdict and the frame after.
    fn run_once(&self, frame: &[u8]) -> io::Result<(u32, Vec<u8>)> {
        let mut out = vec![0u8; frame.len() + 256];
        let mut attr = [0u64; 10];
        put32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put32(&mut attr, 8, frame.len() as u32);
        put32(&mut attr, 12, out.len() as u32);
        put64(&mut attr, 16, frame.as_ptr() as u64);
        put64(&mut attr, 24, out.as_mut_ptr() as u64);
        put32(&mut attr, 32, 1);
        sys_bpf(BPF_PROG_TEST_RUN, &mut attr)?;
        // retval follows prog_fd; data_size_out follows data_size_in.
        out.truncate((attr[1] >> 32) as usize);
        Ok(((attr[0] >> 32) as u32, out))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::frame::{self, Macs};

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn run_stats_count_the_runs_of_a_program() {
        if !root() {
            eprintln!("skipped: loading BPF programs needs root");
            return;
        }
        let stats = RunStats::enable().unwrap();
        let p = Prog::drop_to(Ipv4Addr::new(198, 18, 0, 0)).unwrap();
        let id = (prog_info(&p.fd).unwrap()[0] >> 32) as u32;
        let frame = [0u8; 60];
        for _ in 0..3 {
            assert_eq!(p.verdict(&frame).unwrap(), XDP_PASS as u32);
        }
        let (ns, runs) = stats.of(id).unwrap();
        assert_eq!(runs, 3);
        assert!(ns > 0 && ns < 1_000_000_000, "{ns} ns");
    }

    #[test]
    fn drops_tcp_to_its_net_only() {
        if !root() {
            eprintln!("skipped: loading BPF programs needs root");
            return;
        }
        let p = Prog::drop_to(Ipv4Addr::new(198, 18, 0, 0)).unwrap();
        let macs = Macs { src: [2; 6], dst: [4; 6] };
        let to = |dst: Ipv4Addr| frame::syn(macs, Ipv4Addr::new(10, 0, 0, 0), dst, 80).bytes;
        assert_eq!(p.verdict(&to(Ipv4Addr::new(198, 18, 3, 4))).unwrap(), XDP_DROP as u32);
        assert_eq!(p.verdict(&to(Ipv4Addr::new(198, 19, 3, 4))).unwrap(), XDP_PASS as u32);
        assert_eq!(p.verdict(&to(Ipv4Addr::new(10, 78, 0, 2))).unwrap(), XDP_PASS as u32);
    }

    #[test]
    fn counter_counts_and_drops_only_its_protocol() {
        if !root() {
            eprintln!("skipped: loading BPF programs needs root");
            return;
        }
        let macs = Macs { src: [2; 6], dst: [4; 6] };
        let udp = frame::udp(macs, "10.0.0.2:1024".parse().unwrap(), "10.0.2.1:9000".parse().unwrap(), 0);
        let mut arp = udp.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let c = Counter::new().unwrap();
        let drop = Prog::count(&c, 17, true).unwrap();
        assert_eq!(drop.verdict(&udp).unwrap(), XDP_DROP as u32);
        assert_eq!(drop.verdict(&arp).unwrap(), XDP_PASS as u32);
        assert_eq!(drop.verdict(&udp[..20]).unwrap(), XDP_PASS as u32);
        let pass = Prog::count(&c, 17, false).unwrap();
        assert_eq!(pass.verdict(&udp).unwrap(), XDP_PASS as u32);
        let tcp_only = Prog::count(&c, 6, true).unwrap();
        assert_eq!(tcp_only.verdict(&udp).unwrap(), XDP_PASS as u32);
        assert_eq!(c.read().unwrap(), 2);
    }

    #[test]
    fn reflector_sends_loop_packets_back_and_notes_when_it_saw_them() {
        if !root() {
            eprintln!("skipped: loading BPF programs needs root");
            return;
        }
        let macs = Macs { src: [2, 0, 0, 0, 0, 1], dst: [2, 0, 0, 0, 0, 2] };
        let (client, real) = ("10.0.3.1:4242".parse().unwrap(), "10.0.1.11:9000".parse().unwrap());
        let mut sent = frame::udp(macs, client, real, 3);
        sent[22] = 7; // TTL after some hops, IP checksum made right again:
        sent[24..26].copy_from_slice(&[0, 0]);
        let c = frame::checksum(&sent[14..34], 0);
        sent[24..26].copy_from_slice(&c.to_be_bytes());
        sent[40..42].copy_from_slice(&[0x12, 0x34]); // a partial checksum left by an offload
        let (counter, seen) = (Counter::new().unwrap(), SeenMap::new(4).unwrap());
        let at_real = Prog::reflect(LoopPort::Destination(9000), 1, &counter, Some(&seen)).unwrap();
        let before = monotonic_ns();
        let (v, back) = at_real.run_once(&sent).unwrap();
        assert_eq!(v, XDP_REDIRECT as u32);
        let swapped = Macs { src: macs.dst, dst: macs.src };
        assert_eq!(back, frame::udp(swapped, real, client, 3), "the answer is the frame the other way round");
        assert_eq!(counter.read().unwrap(), 1);
        assert!((0..4).all(|i| (seen.get(i) >= before) == (i == 3)), "only id 3 seen");
        // The client's side matches the source port; other traffic passes.
        let at_client = Prog::reflect(LoopPort::Source(9000), 1, &counter, None).unwrap();
        assert_eq!(at_client.verdict(&back).unwrap(), XDP_REDIRECT as u32);
        assert_eq!(at_client.verdict(&sent).unwrap(), XDP_PASS as u32);
        assert_eq!(at_real.verdict(&sent[..45]).unwrap(), XDP_PASS as u32, "too short for an id");
        let mut tcp = sent.clone();
        tcp[23] = 6;
        assert_eq!(at_real.verdict(&tcp).unwrap(), XDP_PASS as u32);
        let mut beyond = sent.clone();
        beyond[42..46].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(at_real.verdict(&beyond).unwrap(), XDP_REDIRECT as u32, "an unknown id still loops");
        assert_eq!(counter.read().unwrap(), 3);
    }

    #[test]
    fn reflector_sends_ipv6_loop_packets_back() {
        if !root() {
            eprintln!("skipped: loading BPF programs needs root");
            return;
        }
        let macs = Macs { src: [2, 0, 0, 0, 0, 1], dst: [2, 0, 0, 0, 0, 2] };
        let (client, real) = ("[fd10:0:3::1]:4242".parse().unwrap(), "[fd10:0:1::11]:9000".parse().unwrap());
        let mut sent = frame::udp(macs, client, real, 2);
        sent[21] = 7; // hop limit after some hops (not in the checksum)
        let (counter, seen) = (Counter::new().unwrap(), SeenMap::new(4).unwrap());
        let at_real = Prog::reflect(LoopPort::Destination(9000), 1, &counter, Some(&seen)).unwrap();
        let before = monotonic_ns();
        let (v, back) = at_real.run_once(&sent).unwrap();
        assert_eq!(v, XDP_REDIRECT as u32);
        let swapped = Macs { src: macs.dst, dst: macs.src };
        assert_eq!(back, frame::udp(swapped, real, client, 2), "the answer is the frame the other way round");
        assert!((0..4).all(|i| (seen.get(i) >= before) == (i == 2)), "only id 2 seen");
        let at_client = Prog::reflect(LoopPort::Source(9000), 1, &counter, None).unwrap();
        assert_eq!(at_client.verdict(&back).unwrap(), XDP_REDIRECT as u32);
        assert_eq!(at_client.verdict(&sent).unwrap(), XDP_PASS as u32);
        assert_eq!(at_real.verdict(&sent[..65]).unwrap(), XDP_PASS as u32, "too short for an id");
        let mut hop_by_hop = sent.clone();
        hop_by_hop[20] = 0;
        assert_eq!(at_real.verdict(&hop_by_hop).unwrap(), XDP_PASS as u32);
        assert_eq!(counter.read().unwrap(), 2);
    }

    #[test]
    fn cross_connect_rewrites_macs_and_redirects_udp_only() {
        if !root() {
            eprintln!("skipped: loading BPF programs needs root");
            return;
        }
        let macs = Macs { src: [2; 6], dst: [4; 6] };
        let f = frame::udp(macs, "10.0.0.2:1024".parse().unwrap(), "10.0.1.11:9000".parse().unwrap(), 0);
        let f6 =
            frame::udp(macs, "[fd10::2]:1024".parse().unwrap(), "[fd10:0:1::11]:9000".parse().unwrap(), 0);
        let p = Prog::cross_connect(1, [6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 16, 17]).unwrap();
        for f in [&f, &f6] {
            let (v, out) = p.run_once(f).unwrap();
            assert_eq!(v, XDP_REDIRECT as u32);
            assert_eq!(out[..12], [6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
            assert_eq!(out[12..], f[12..]);
        }
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(p.verdict(&arp).unwrap(), XDP_PASS as u32);
    }

    #[test]
    fn generator_rewrites_the_frame_and_transmits() {
        if !root() {
            eprintln!("skipped: loading BPF programs needs root");
            return;
        }
        let macs = Macs { src: [2; 6], dst: [4; 6] };
        let t = frame::syn(macs, Ipv4Addr::new(198, 18, 0, 0), Ipv4Addr::new(10, 0, 2, 1), 80);
        let p = Prog::tx_randomised(&t.bytes, &t.random).unwrap();
        // Whatever the page held before, the template goes out, randomised
        // only where the template says.
        let (v, out) = p.run_once(&[0u8; frame::FRAME_LEN]).unwrap();
        assert_eq!(v, XDP_TX as u32);
        let randomised: Vec<usize> = t
            .random
            .iter()
            .flat_map(|g| g.value_at.iter().chain(&g.complement_at))
            .flat_map(|&o| [o as usize, o as usize + 1])
            .collect();
        for (i, (a, b)) in out.iter().zip(&t.bytes).enumerate() {
            if !randomised.contains(&i) {
                assert_eq!(a, b, "byte {i}");
            }
        }
        let (_, again) = p.run_once(&out).unwrap();
        assert_ne!(again[26..30], out[26..30], "the source address varies");
    }
}
