//! The programs run by the kernel on frames the tests build
//! (`BPF_PROG_TEST_RUN`), for `steer_tests`, `fast_path`'s and
//! `syn_cookie`'s tests.

use std::io;

/// An Ethernet frame from 02:00:00:00:00:02 to 02:00:00:00:00:01 carrying
/// the IPv4 or IPv6 packet `ip`.
pub(super) fn frame(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    f.extend_from_slice(if ip[0] >> 4 == 6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    f.extend_from_slice(ip);
    f
}

/// Run program `fd` once on `data`: its return value and the frame after.
pub(super) fn test_run(fd: libc::c_int, data: &[u8]) -> (u32, Vec<u8>) {
    /// The `test` member of `union bpf_attr` (`linux/bpf.h`).
    #[repr(C)]
    #[derive(Default)]
    struct TestRun {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let mut out = vec![0u8; 4096];
    let mut attr = TestRun {
        prog_fd: fd as u32,
        data_size_in: data.len() as u32,
        data_in: data.as_ptr() as u64,
        data_size_out: out.len() as u32,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRun::default()
    };
    // SAFETY: `attr` is a valid BPF_PROG_TEST_RUN attribute whose buffers
    // point at `data` and `out` (of the sizes given), both alive for the call.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &raw mut attr, size_of::<TestRun>() as libc::c_uint)
    };
    assert_eq!(rc, 0, "BPF_PROG_TEST_RUN: {}", io::Error::last_os_error());
    out.truncate(attr.data_size_out as usize);
    (attr.retval, out)
}
