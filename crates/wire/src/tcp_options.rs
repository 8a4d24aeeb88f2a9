//! Reading and rewriting a TCP options area as a whole.
//!
//! [`tcp::options_iter`] yields one option at a time; this module holds what
//! callers do with the whole list: sum up what a segment offers
//! ([`Summary`]) and rewrite fields in place while keeping the checksum
//! right ([`rewrite`]). The rewrite walks a copy of the (at most 40) option
//! bytes, so the original can be written meanwhile. Nothing here panics.

use crate::checksum;
use crate::tcp::{self, TcpOption};

/// Most bytes a TCP options area holds (a 60-byte header less 20).
pub const MAX_LEN: usize = 40;

/// The options of a segment that a middlebox reads: what its sender offers
/// (on a SYN) and the timestamps and SACK it carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Maximum segment size.
    pub mss: Option<u16>,
    /// Window scale shift, capped at 14 (RFC 7323 §2.3).
    pub wscale: Option<u8>,
    /// SACK permitted.
    pub sack_permitted: bool,
    /// Whether a SACK option is present.
    pub sack: bool,
    /// TSval and TSecr.
    pub timestamps: Option<(u32, u32)>,
}

impl Summary {
    /// The options of an options area, up to the first malformed one.
    pub fn parse(options: &[u8]) -> Self {
        let mut o = Self::default();
        for item in tcp::options_iter(options) {
            let Ok((_, opt)) = item else { break };
            match opt {
                TcpOption::MaxSegmentSize(m) => o.mss = Some(m),
                TcpOption::WindowScale(w) => o.wscale = Some(w.min(14)),
                TcpOption::SackPermitted => o.sack_permitted = true,
                TcpOption::SackRange(_) => o.sack = true,
                TcpOption::Timestamps { tsval, tsecr } => o.timestamps = Some((tsval, tsecr)),
                _ => {}
            }
        }
        o
    }

    /// The options of a TCP segment (header and payload); none if its header is invalid.
    pub fn of_segment(segment: &[u8]) -> Self {
        tcp::Packet::new_checked(segment).map_or_else(|_| Self::default(), |t| Self::parse(t.options()))
    }
}

/// Writes bytes into an options area and updates the segment's checksum
/// to match (RFC 1624), for [`rewrite`].
#[derive(Debug)]
pub struct Writer<'a> {
    options: &'a mut [u8],
    checksum: u16,
}

impl Writer<'_> {
    /// Replace the bytes at `at` (an offset within the options area) with
    /// `new`; nothing if they would run past the area's end.
    pub fn put(&mut self, at: usize, new: &[u8]) {
        let Some(old) = self.options.get_mut(at..at.saturating_add(new.len())) else { return };
        // The options area starts 20 bytes (an even offset) into the
        // segment, so a byte's parity in the checksum is its offset's here.
        self.checksum = checksum::update_bytes(self.checksum, at % 2 == 1, old, new);
        old.copy_from_slice(new);
    }
}

/// Walk the options area `options` of a segment whose checksum is
/// `checksum`, calling `f` with each well-formed option and its offset (of
/// its kind byte), up to the first malformed one; `f` rewrites through the
/// [`Writer`]. Returns the updated checksum.
pub fn rewrite(
    options: &mut [u8],
    checksum: u16,
    mut f: impl FnMut(&mut Writer<'_>, usize, TcpOption<'_>),
) -> u16 {
    let mut copy = [0u8; MAX_LEN];
    let n = options.len().min(MAX_LEN);
    copy[..n].copy_from_slice(&options[..n]);
    let mut w = Writer { options, checksum };
    for item in tcp::options_iter(&copy[..n]) {
        let Ok((at, opt)) = item else { break };
        f(&mut w, at, opt);
    }
    w.checksum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MSS 1460, NOP, window scale 7, SACK permitted, timestamps 1/2, SACK one block.
    const OPTS: [u8; 32] = [
        2, 4, 0x05, 0xb4, 1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 5, 10, 0, 0, 0, 10, 0, 0, 0,
        20,
    ];

    #[test]
    fn summary_reads_every_option() {
        let s = Summary::parse(&OPTS);
        assert_eq!(
            s,
            Summary {
                mss: Some(1460),
                wscale: Some(7),
                sack_permitted: true,
                sack: true,
                timestamps: Some((1, 2)),
            }
        );
        assert_eq!(Summary::parse(&[3, 3, 200]).wscale, Some(14));
        assert_eq!(Summary::parse(&[2, 4, 1]), Summary::default());
    }

    #[test]
    fn rewrite_keeps_the_checksum_right() {
        // Checksum over the options alone stands in for the segment's.
        let sum = |b: &[u8]| !checksum::fold(checksum::sum(b));
        let mut opts = OPTS;
        let before = sum(&opts);
        let after = rewrite(&mut opts, before, |w, at, opt| match opt {
            TcpOption::MaxSegmentSize(_) => w.put(at + 2, &1400u16.to_be_bytes()),
            TcpOption::Timestamps { .. } => w.put(at + 3, &[9, 9, 9]),
            _ => {}
        });
        assert_eq!(&opts[..4], &[2, 4, 0x05, 0x78]);
        assert_eq!(&opts[13..16], &[9, 9, 9]);
        assert_eq!(after, sum(&opts));
    }

    #[test]
    fn writer_stays_inside_the_area() {
        let mut opts = [1u8, 1, 1, 1];
        let sum = rewrite(&mut opts, 0x1234, |w, _, _| w.put(3, &[7, 7]));
        assert_eq!((opts, sum), ([1, 1, 1, 1], 0x1234));
    }
}
