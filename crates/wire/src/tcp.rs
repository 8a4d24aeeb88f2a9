//! TCP headers and options (RFC 9293).
//!
//! [`Packet`] is a view over a whole TCP segment: header, options and payload.
//! The buffer must be exactly the segment (the IP payload), because the
//! payload and the checksum extend to its end.
//!
//! # No-panic contract
//!
//! [`Packet::new_checked`] validates `20 <= header_len <= buffer length` once.
//! After that no getter or setter can panic, and [`options_iter`] never panics
//! on any bytes: malformed options end the iteration with an error. On a view
//! built with [`Packet::new_unchecked`] over a buffer that fails the check,
//! accessors still do not panic; they read zeros, drop writes and clamp
//! slices.
//!
//! # Options
//!
//! RFC 9293 §3.1 defines two option formats: a single kind byte (End of
//! Option List and No-Operation), or kind, length (counting kind and length
//! themselves) and data. Options may start at any offset. "Note that the
//! list of options may be shorter than the Data Offset field might imply. The
//! content of the header beyond the End of Option List Option must be header
//! padding of zeros." That padding is not read.
//!
//! [`Repr::parse`] never verifies the checksum: that is
//! [`Packet::verify_checksum`]'s job, so that a caller can decide whether and
//! when to pay for it.

use core::fmt;
use core::iter::FusedIterator;
use core::net::IpAddr;
use core::ops;

use crate::access::{clamped, clamped_mut, get_u8, get_u16, get_u32, set_u8, set_u16, set_u32};
use crate::{Error, checksum, ip_protocol};

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = 20;

/// Largest TCP header: the 4-bit data offset counts 32-bit words.
pub const MAX_HEADER_LEN: usize = 60;

/// Largest options area.
pub const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - HEADER_LEN;

mod field {
    use crate::access::Field;

    pub(crate) const SRC_PORT: Field = 0..2;
    pub(crate) const DST_PORT: Field = 2..4;
    pub(crate) const SEQ_NUM: Field = 4..8;
    pub(crate) const ACK_NUM: Field = 8..12;
    pub(crate) const DATA_OFF: usize = 12;
    pub(crate) const FLAGS: usize = 13;
    pub(crate) const WIN_SIZE: Field = 14..16;
    pub(crate) const CHECKSUM: Field = 16..18;
    pub(crate) const URGENT: Field = 18..20;
}

/// TCP option kinds (IANA "TCP Option Kind Numbers").
pub mod option_kind {
    /// End of Option List (RFC 9293).
    pub const END: u8 = 0;
    /// No-Operation (RFC 9293).
    pub const NOP: u8 = 1;
    /// Maximum Segment Size (RFC 9293 §3.7.1), length 4.
    pub const MSS: u8 = 2;
    /// Window Scale (RFC 7323 §2), length 3.
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK Permitted (RFC 2018 §2), length 2.
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK (RFC 2018 §3), length 2 + 8n.
    pub const SACK: u8 = 5;
    /// Timestamps (RFC 7323 §3), length 10.
    pub const TIMESTAMPS: u8 = 8;
}

/// The eight control bits of byte 13 of the header.
///
/// The bit in byte 12 (formerly NS, RFC 3540, now historic) is not included.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// No more data from sender.
    pub const FIN: Self = Self(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: Self = Self(0x02);
    /// Reset the connection.
    pub const RST: Self = Self(0x04);
    /// Push function.
    pub const PSH: Self = Self(0x08);
    /// Acknowledgment field is significant.
    pub const ACK: Self = Self(0x10);
    /// Urgent pointer field is significant.
    pub const URG: Self = Self(0x20);
    /// ECN-Echo (RFC 3168).
    pub const ECE: Self = Self(0x40);
    /// Congestion Window Reduced (RFC 3168).
    pub const CWR: Self = Self(0x80);

    /// No flag set.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Flags from the raw byte.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// The raw byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `self` with the flags of `other` cleared.
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// FIN is set.
    pub const fn fin(self) -> bool {
        self.contains(Self::FIN)
    }

    /// SYN is set.
    pub const fn syn(self) -> bool {
        self.contains(Self::SYN)
    }

    /// RST is set.
    pub const fn rst(self) -> bool {
        self.contains(Self::RST)
    }

    /// PSH is set.
    pub const fn psh(self) -> bool {
        self.contains(Self::PSH)
    }

    /// ACK is set.
    pub const fn ack(self) -> bool {
        self.contains(Self::ACK)
    }

    /// URG is set.
    pub const fn urg(self) -> bool {
        self.contains(Self::URG)
    }

    /// ECE is set.
    pub const fn ece(self) -> bool {
        self.contains(Self::ECE)
    }

    /// CWR is set.
    pub const fn cwr(self) -> bool {
        self.contains(Self::CWR)
    }
}

impl ops::BitOr for Flags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl ops::BitAnd for Flags {
    type Output = Self;

    fn bitand(self, rhs: Self) -> Self {
        Self(self.0 & rhs.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        f.write_str("Flags(")?;
        let mut first = true;
        for (bit, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("empty")?;
        }
        f.write_str(")")
    }
}

/// The blocks of a SACK option (RFC 2018 §3): at most 4 fit in the 40 bytes
/// of option space. Each block is (left edge, right edge), the right edge
/// being the sequence number just past the block.
#[derive(Clone, Copy, Default)]
pub struct SackBlocks {
    blocks: [(u32, u32); 4],
    len: u8,
}

impl SackBlocks {
    /// Most blocks one option can hold.
    pub const CAPACITY: usize = 4;

    /// Blocks from a slice; blocks past the fourth are dropped.
    pub fn from_slice(blocks: &[(u32, u32)]) -> Self {
        let mut sack = Self::default();
        for (slot, block) in sack.blocks.iter_mut().zip(blocks) {
            *slot = *block;
            sack.len += 1;
        }
        sack
    }

    /// The blocks, in option order.
    pub fn as_slice(&self) -> &[(u32, u32)] {
        self.blocks.get(..usize::from(self.len)).unwrap_or(&self.blocks)
    }

    /// Iterates over the blocks, in option order.
    pub fn iter(&self) -> core::slice::Iter<'_, (u32, u32)> {
        self.as_slice().iter()
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there is no block (never the case for a parsed option).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl PartialEq for SackBlocks {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SackBlocks {}

impl fmt::Debug for SackBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a SackBlocks {
    type Item = &'a (u32, u32);
    type IntoIter = core::slice::Iter<'a, (u32, u32)>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// A TCP option, as found by [`options_iter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// End of Option List: the rest of the options area is padding.
    EndOfList,
    /// No-Operation, used for alignment.
    NoOperation,
    /// Maximum Segment Size the sender can receive.
    MaxSegmentSize(u16),
    /// Window scale shift count (RFC 7323 §2.3 caps its use at 14; the raw
    /// value is reported).
    WindowScale(u8),
    /// The sender can receive SACK options.
    SackPermitted,
    /// Selective acknowledgment blocks.
    SackRange(SackBlocks),
    /// Timestamps option.
    Timestamps {
        /// Timestamp value of the sender.
        tsval: u32,
        /// Timestamp echo reply.
        tsecr: u32,
    },
    /// Any other kind, with its data (the bytes after kind and length).
    Unknown {
        /// Option kind.
        kind: u8,
        /// Option data, without kind and length.
        data: &'a [u8],
    },
}

/// Iterator over the options area of a TCP header; see [`options_iter`].
#[derive(Debug, Clone)]
pub struct OptionsIter<'a> {
    options: &'a [u8],
    offset: usize,
    done: bool,
}

/// Iterates over a TCP options area (the bytes between offset 20 and the
/// header length).
///
/// Each item is the option with the offset of its kind byte within `options`,
/// which is what an in-place rewrite needs (with
/// [`checksum::update_bytes`]). Iteration stops after End of Option List or
/// at the end of the slice. A malformed option yields one
/// `Err(Error::Malformed)` and ends the iteration; options are malformed when
/// their length byte is missing, below 2 or runs past the end of the area,
/// when a fixed-size option (MSS 4, window scale 3, SACK permitted 2,
/// timestamps 10) has another length, or when a SACK option is not 2 + 8n
/// bytes with n in 1..=4.
pub fn options_iter(options: &[u8]) -> OptionsIter<'_> {
    OptionsIter { options, offset: 0, done: false }
}

/// Parses a kind-length-data option starting at `bytes[0]`; returns its
/// length and value.
fn parse_option(kind: u8, bytes: &[u8]) -> Result<(usize, TcpOption<'_>), Error> {
    let len = usize::from(*bytes.get(1).ok_or(Error::Malformed)?);
    if len < 2 {
        return Err(Error::Malformed);
    }
    let data = bytes.get(2..len).ok_or(Error::Malformed)?;
    let option = match (kind, data) {
        (option_kind::MSS, &[hi, lo]) => TcpOption::MaxSegmentSize(u16::from_be_bytes([hi, lo])),
        (option_kind::WINDOW_SCALE, &[shift]) => TcpOption::WindowScale(shift),
        (option_kind::SACK_PERMITTED, &[]) => TcpOption::SackPermitted,
        (option_kind::TIMESTAMPS, _) => match data.as_chunks::<4>() {
            (&[tsval, tsecr], &[]) => {
                TcpOption::Timestamps { tsval: u32::from_be_bytes(tsval), tsecr: u32::from_be_bytes(tsecr) }
            }
            _ => return Err(Error::Malformed),
        },
        (option_kind::SACK, _) => {
            let (blocks, rest) = data.as_chunks::<8>();
            if blocks.is_empty() || blocks.len() > SackBlocks::CAPACITY || !rest.is_empty() {
                return Err(Error::Malformed);
            }
            let mut sack = SackBlocks::default();
            for (slot, &[a, b, c, d, e, f, g, h]) in sack.blocks.iter_mut().zip(blocks) {
                *slot = (u32::from_be_bytes([a, b, c, d]), u32::from_be_bytes([e, f, g, h]));
                sack.len += 1;
            }
            TcpOption::SackRange(sack)
        }
        (option_kind::MSS | option_kind::WINDOW_SCALE | option_kind::SACK_PERMITTED, _) => {
            return Err(Error::Malformed);
        }
        (kind, data) => TcpOption::Unknown { kind, data },
    };
    Ok((len, option))
}

impl<'a> Iterator for OptionsIter<'a> {
    type Item = Result<(usize, TcpOption<'a>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let offset = self.offset;
        let bytes = self.options.get(offset..).unwrap_or(&[]);
        let Some(&kind) = bytes.first() else {
            self.done = true;
            return None;
        };
        let parsed = match kind {
            option_kind::END => {
                self.done = true;
                return Some(Ok((offset, TcpOption::EndOfList)));
            }
            option_kind::NOP => Ok((1, TcpOption::NoOperation)),
            _ => parse_option(kind, bytes),
        };
        Some(match parsed {
            Ok((len, option)) => {
                self.offset = offset + len;
                Ok((offset, option))
            }
            Err(error) => {
                self.done = true;
                Err(error)
            }
        })
    }
}

impl FusedIterator for OptionsIter<'_> {}

view! {
    /// A view over a TCP segment in a byte buffer.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validates the header length: [`Error::Truncated`] if the buffer is
    /// shorter than 20 bytes or than the data offset says,
    /// [`Error::Malformed`] if the data offset is below 5 words.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// Acknowledgment number (meaningful only with ACK set).
    pub fn ack_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes, options included (data offset × 4).
    pub fn header_len(&self) -> usize {
        usize::from(get_u8(self.buffer.as_ref(), field::DATA_OFF) >> 4) * 4
    }

    /// Control bits.
    pub fn flags(&self) -> Flags {
        Flags(get_u8(self.buffer.as_ref(), field::FLAGS))
    }

    /// Window, unscaled.
    pub fn window_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::WIN_SIZE)
    }

    /// Checksum as stored.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer (meaningful only with URG set).
    pub fn urgent_at(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// The options area (may include padding after End of Option List).
    pub fn options(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), HEADER_LEN, self.header_len())
    }

    /// Iterates over the options; see [`options_iter`].
    pub fn options_iter(&self) -> OptionsIter<'_> {
        options_iter(self.options())
    }

    /// The payload: everything after the header.
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        clamped(data, self.header_len(), data.len())
    }

    /// Length in sequence space: payload bytes, plus one each for SYN and
    /// FIN (RFC 9293 §3.4).
    pub fn segment_len(&self) -> usize {
        let flags = self.flags();
        self.payload().len() + usize::from(flags.syn()) + usize::from(flags.fin())
    }

    fn checksum_sum(&self, src: IpAddr, dst: IpAddr) -> u32 {
        let data = self.buffer.as_ref();
        let length = u32::try_from(data.len()).unwrap_or(u32::MAX);
        checksum::pseudo_header(src, dst, ip_protocol::TCP, length) + checksum::sum(data)
    }

    /// Whether the checksum over the pseudo-header for `src` and `dst` and the
    /// whole buffer is correct.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        checksum::verify(self.checksum_sum(src, dst))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, value: u32) {
        set_u32(self.buffer.as_mut(), field::SEQ_NUM, value);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, value: u32) {
        set_u32(self.buffer.as_mut(), field::ACK_NUM, value);
    }

    /// Sets the header length in bytes; it is stored in 32-bit words, so it
    /// is rounded down to a multiple of 4 and capped at 60. The low nibble of
    /// byte 12 (reserved bits) is kept.
    pub fn set_header_len(&mut self, len: usize) {
        let words = (len.min(MAX_HEADER_LEN) / 4) as u8;
        let data = self.buffer.as_mut();
        let low = get_u8(data, field::DATA_OFF) & 0x0f;
        set_u8(data, field::DATA_OFF, (words << 4) | low);
    }

    /// Sets the control bits.
    pub fn set_flags(&mut self, flags: Flags) {
        set_u8(self.buffer.as_mut(), field::FLAGS, flags.bits());
    }

    /// Sets the window.
    pub fn set_window_len(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::WIN_SIZE, value);
    }

    /// Stores a checksum as is.
    pub fn set_checksum(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::URGENT, value);
    }

    /// The options area, mutable. Options start at offset 20, an even offset
    /// of the segment, so an option at offset `i` here lies at an odd offset
    /// of the checksummed data exactly when `i` is odd.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        clamped_mut(self.buffer.as_mut(), HEADER_LEN, header_len)
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        let data = self.buffer.as_mut();
        let len = data.len();
        clamped_mut(data, header_len, len)
    }

    /// Computes the checksum over the pseudo-header for `src` and `dst` and
    /// the whole buffer, and stores it.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let checksum = checksum::finish(self.checksum_sum(src, dst));
        self.set_checksum(checksum);
    }
}

/// A high-level description of a TCP header and the options a load balancer
/// and a SYN proxy care about, for building segments from scratch.
///
/// `flags` need not contain ACK: [`emit`](Self::emit) sets ACK if and only if
/// `ack_number` is `Some`. [`parse`](Self::parse) keeps the flags as on the
/// wire, so for a parsed `Repr` `flags.ack() == ack_number.is_some()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number, present iff ACK is set.
    pub ack_number: Option<u32>,
    /// Control bits (ACK is governed by `ack_number` on emit).
    pub flags: Flags,
    /// Window, unscaled.
    pub window_len: u16,
    /// Maximum segment size option.
    pub max_seg_size: Option<u16>,
    /// Window scale option (shift count).
    pub window_scale: Option<u8>,
    /// SACK permitted option.
    pub sack_permitted: bool,
    /// SACK blocks; `None` entries are skipped on emit. A parsed option with
    /// four blocks keeps the first three.
    pub sack_ranges: [Option<(u32, u32)>; 3],
    /// Timestamps option as (TSval, TSecr).
    pub timestamp: Option<(u32, u32)>,
    /// Payload length in bytes.
    pub payload_len: usize,
}

/// Bytes of an aligned SACK option before its blocks: NOP, NOP, kind, length.
const SACK_PREFIX_LEN: usize = 4;
const SACK_BLOCK_LEN: usize = 8;

impl Repr {
    /// Describes a segment, after validating the header length and options.
    ///
    /// The checksum is not verified: call [`Packet::verify_checksum`] first
    /// (the addresses are taken here so that the signature matches
    /// [`emit`](Self::emit) and can grow verification without churn).
    /// Unknown options are ignored; a malformed option is an
    /// [`Error::Malformed`]. When an option appears twice, the last one wins.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>, _src: IpAddr, _dst: IpAddr) -> Result<Self, Error> {
        packet.check_len()?;
        let flags = packet.flags();
        let mut repr = Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: flags.ack().then(|| packet.ack_number()),
            flags,
            window_len: packet.window_len(),
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload_len: packet.payload().len(),
        };
        for option in packet.options_iter() {
            match option?.1 {
                TcpOption::MaxSegmentSize(mss) => repr.max_seg_size = Some(mss),
                TcpOption::WindowScale(shift) => repr.window_scale = Some(shift),
                TcpOption::SackPermitted => repr.sack_permitted = true,
                TcpOption::SackRange(blocks) => {
                    repr.sack_ranges = [None; 3];
                    for (slot, block) in repr.sack_ranges.iter_mut().zip(blocks.iter()) {
                        *slot = Some(*block);
                    }
                }
                TcpOption::Timestamps { tsval, tsecr } => repr.timestamp = Some((tsval, tsecr)),
                TcpOption::EndOfList | TcpOption::NoOperation | TcpOption::Unknown { .. } => {}
            }
        }
        Ok(repr)
    }

    /// Length of the options other than SACK blocks, each padded to 32 bits.
    fn fixed_options_len(&self) -> usize {
        let mut len = 0;
        if self.max_seg_size.is_some() {
            len += 4;
        }
        if self.timestamp.is_some() {
            // SACK permitted, when present, replaces the two NOPs before the
            // timestamps.
            len += 12;
        } else if self.sack_permitted {
            len += 4;
        }
        if self.window_scale.is_some() {
            len += 4;
        }
        len
    }

    /// Number of SACK blocks emitted: the `Some` entries of `sack_ranges`, as
    /// many as fit in the option space left by the other options.
    fn sack_blocks_emitted(&self) -> usize {
        let room = MAX_OPTIONS_LEN - self.fixed_options_len();
        let fit = room.saturating_sub(SACK_PREFIX_LEN) / SACK_BLOCK_LEN;
        self.sack_ranges.iter().flatten().count().min(fit)
    }

    /// Length of the emitted header: 20 bytes plus the options, each aligned
    /// to 32 bits with NOPs, at most 60. SACK blocks that would not fit are
    /// left out.
    pub fn header_len(&self) -> usize {
        let blocks = self.sack_blocks_emitted();
        let sack_len = if blocks == 0 { 0 } else { SACK_PREFIX_LEN + blocks * SACK_BLOCK_LEN };
        HEADER_LEN + self.fixed_options_len() + sack_len
    }

    /// Length of the whole segment: header and payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len().saturating_add(self.payload_len)
    }

    /// Length in sequence space: payload plus one each for SYN and FIN.
    pub fn segment_len(&self) -> usize {
        self.payload_len.saturating_add(usize::from(self.flags.syn()) + usize::from(self.flags.fin()))
    }

    /// Writes header and options into the start of `packet`, leaving the
    /// payload as it is, then fills the checksum over the whole buffer for a
    /// segment carried between `src` and `dst`.
    ///
    /// The buffer must be the segment: [`buffer_len`](Self::buffer_len)
    /// bytes. Options are laid out the way common stacks do (MSS; SACK
    /// permitted or two NOPs, then timestamps; NOP, NOP, SACK permitted when
    /// there are no timestamps; NOP, window scale; NOP, NOP, SACK), so every
    /// option with 32-bit fields is 32-bit aligned. The urgent pointer and the
    /// reserved bits are zero.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>, src: IpAddr, dst: IpAddr) {
        use option_kind::{MSS, NOP, SACK, SACK_PERMITTED, TIMESTAMPS, WINDOW_SCALE};

        let header_len = self.header_len();
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number.unwrap_or(0));
        set_u8(packet.buffer.as_mut(), field::DATA_OFF, 0);
        packet.set_header_len(header_len);
        let flags = self.flags.without(Flags::ACK);
        packet.set_flags(if self.ack_number.is_some() { flags | Flags::ACK } else { flags });
        packet.set_window_len(self.window_len);
        packet.set_urgent_at(0);

        let mut out = OptionWriter { area: packet.options_mut(), at: 0 };
        if let Some(mss) = self.max_seg_size {
            let [hi, lo] = mss.to_be_bytes();
            out.put(&[MSS, 4, hi, lo]);
        }
        if let Some((tsval, tsecr)) = self.timestamp {
            if self.sack_permitted {
                out.put(&[SACK_PERMITTED, 2]);
            } else {
                out.put(&[NOP, NOP]);
            }
            out.put(&[TIMESTAMPS, 10]);
            out.put(&tsval.to_be_bytes());
            out.put(&tsecr.to_be_bytes());
        } else if self.sack_permitted {
            out.put(&[NOP, NOP, SACK_PERMITTED, 2]);
        }
        if let Some(shift) = self.window_scale {
            out.put(&[NOP, WINDOW_SCALE, 3, shift]);
        }
        let blocks = self.sack_blocks_emitted();
        if blocks > 0 {
            out.put(&[NOP, NOP, SACK, (2 + blocks * SACK_BLOCK_LEN) as u8]);
            for (left, right) in self.sack_ranges.iter().flatten().take(blocks) {
                out.put(&left.to_be_bytes());
                out.put(&right.to_be_bytes());
            }
        }
        packet.fill_checksum(src, dst);
    }
}

/// Appends bytes to an options area, dropping what does not fit.
struct OptionWriter<'a> {
    area: &'a mut [u8],
    at: usize,
}

impl OptionWriter<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        if let Some(slot) = self.area.get_mut(self.at..end) {
            slot.copy_from_slice(bytes);
        }
        self.at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::IPV4_TCP_SYN;
    use core::net::{Ipv4Addr, Ipv6Addr};

    fn addrs() -> (IpAddr, IpAddr) {
        (Ipv4Addr::new(192, 0, 2, 10).into(), Ipv4Addr::new(198, 51, 100, 1).into())
    }

    fn syn() -> &'static [u8] {
        &IPV4_TCP_SYN[20..]
    }

    fn collect(options: &[u8]) -> Vec<Result<(usize, TcpOption<'_>), Error>> {
        options_iter(options).collect()
    }

    #[test]
    fn parse_golden_syn() {
        let (src, dst) = addrs();
        let packet = Packet::new_checked(syn()).unwrap();
        assert_eq!(packet.src_port(), 51514);
        assert_eq!(packet.dst_port(), 80);
        assert_eq!(packet.seq_number(), 0x1c2b_3a49);
        assert_eq!(packet.ack_number(), 0);
        assert_eq!(packet.header_len(), 40);
        assert_eq!(packet.flags(), Flags::SYN);
        assert!(packet.flags().syn() && !packet.flags().ack());
        assert_eq!(packet.window_len(), 64240);
        assert_eq!(packet.checksum(), 0x0a79);
        assert_eq!(packet.urgent_at(), 0);
        assert_eq!(packet.options().len(), 20);
        assert!(packet.payload().is_empty());
        assert_eq!(packet.segment_len(), 1);
        assert!(packet.verify_checksum(src, dst));
        // Swapping the addresses would not change the sum; another one does.
        assert!(!packet.verify_checksum(Ipv4Addr::new(192, 0, 2, 11).into(), dst));
        // An IPv4-mapped IPv6 address only adds 0xffff (ones' complement zero)
        // to the pseudo-header sum.
        assert!(packet.verify_checksum(src.into_v6_mapped(), dst));

        let options: Vec<_> = packet.options_iter().map(Result::unwrap).collect();
        assert_eq!(
            options,
            [
                (0, TcpOption::MaxSegmentSize(1460)),
                (4, TcpOption::SackPermitted),
                (6, TcpOption::Timestamps { tsval: 0x0a1b_2c3d, tsecr: 0 }),
                (16, TcpOption::NoOperation),
                (17, TcpOption::WindowScale(7)),
            ]
        );

        let repr = Repr::parse(&packet, src, dst).unwrap();
        assert_eq!(
            repr,
            Repr {
                src_port: 51514,
                dst_port: 80,
                seq_number: 0x1c2b_3a49,
                ack_number: None,
                flags: Flags::SYN,
                window_len: 64240,
                max_seg_size: Some(1460),
                window_scale: Some(7),
                sack_permitted: true,
                sack_ranges: [None; 3],
                timestamp: Some((0x0a1b_2c3d, 0)),
                payload_len: 0,
            }
        );
    }

    #[test]
    fn emit_golden_syn() {
        let (src, dst) = addrs();
        let repr = Repr::parse(&Packet::new_checked(syn()).unwrap(), src, dst).unwrap();
        assert_eq!(repr.header_len(), 40);
        assert_eq!(repr.buffer_len(), 40);
        let mut out = [0xeeu8; 40];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]), src, dst);
        assert_eq!(&out[..], syn());
    }

    trait V6Mapped {
        fn into_v6_mapped(self) -> IpAddr;
    }

    impl V6Mapped for IpAddr {
        fn into_v6_mapped(self) -> IpAddr {
            match self {
                Self::V4(addr) => addr.to_ipv6_mapped().into(),
                Self::V6(_) => self,
            }
        }
    }

    #[test]
    fn syn_ack_from_scratch_v6() {
        let src: IpAddr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x80).into();
        let dst: IpAddr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10).into();
        let repr = Repr {
            src_port: 443,
            dst_port: 40001,
            seq_number: 0xdead_beef,
            ack_number: Some(0x0102_0304),
            flags: Flags::SYN,
            window_len: 65535,
            max_seg_size: Some(1440),
            window_scale: Some(9),
            sack_permitted: true,
            sack_ranges: [None; 3],
            timestamp: Some((7, 0x0a1b_2c3d)),
            payload_len: 0,
        };
        let mut out = vec![0u8; repr.buffer_len()];
        let mut packet = Packet::new_unchecked(&mut out[..]);
        repr.emit(&mut packet, src, dst);
        let packet = Packet::new_checked(&out[..]).unwrap();
        assert!(packet.verify_checksum(src, dst));
        assert_eq!(packet.flags(), Flags::SYN | Flags::ACK);
        assert_eq!(packet.segment_len(), 1);
        let parsed = Repr::parse(&packet, src, dst).unwrap();
        assert_eq!(parsed, Repr { flags: Flags::SYN | Flags::ACK, ..repr });
    }

    #[test]
    fn emit_layouts() {
        let (src, dst) = addrs();
        let base = Repr {
            src_port: 1,
            dst_port: 2,
            seq_number: 3,
            ack_number: None,
            flags: Flags::ACK | Flags::PSH,
            window_len: 4,
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload_len: 0,
        };
        let emit = |repr: &Repr| {
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut out[..]), src, dst);
            assert!(Packet::new_checked(&out[..]).unwrap().verify_checksum(src, dst));
            out
        };

        // ACK is cleared when there is no acknowledgment number.
        let out = emit(&base);
        assert_eq!(out.len(), 20);
        assert_eq!(out[13], Flags::PSH.bits());

        // Without timestamps, SACK permitted gets two NOPs of its own.
        let out = emit(&Repr { sack_permitted: true, window_scale: Some(2), ..base });
        assert_eq!(&out[20..], &[1, 1, 4, 2, 1, 3, 3, 2]);

        // Timestamps alone are preceded by two NOPs.
        let out = emit(&Repr { timestamp: Some((1, 2)), ..base });
        assert_eq!(&out[20..], &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);

        // Timestamps and three SACK blocks fill the 40 bytes exactly.
        let sack = [Some((10, 20)), Some((30, 40)), Some((50, 60))];
        let repr = Repr { ack_number: Some(9), timestamp: Some((1, 2)), sack_ranges: sack, ..base };
        assert_eq!(repr.header_len(), 60);
        let out = emit(&repr);
        assert_eq!(&out[32..36], &[1, 1, 5, 26]);
        let parsed = Repr::parse(&Packet::new_checked(&out[..]).unwrap(), src, dst).unwrap();
        assert_eq!(parsed.sack_ranges, sack);
        assert_eq!(parsed.ack_number, Some(9));

        // With every other option present only two SACK blocks fit.
        let repr = Repr { max_seg_size: Some(1), window_scale: Some(1), sack_permitted: true, ..repr };
        assert_eq!(repr.header_len(), 60);
        let out = emit(&repr);
        let parsed = Repr::parse(&Packet::new_checked(&out[..]).unwrap(), src, dst).unwrap();
        assert_eq!(parsed.sack_ranges, [Some((10, 20)), Some((30, 40)), None]);

        // `None` holes in sack_ranges are skipped.
        let repr = Repr { sack_ranges: [None, Some((5, 6)), None], ..base };
        assert_eq!(repr.header_len(), 32);
        let out = emit(&repr);
        assert_eq!(&out[20..], &[1, 1, 5, 10, 0, 0, 0, 5, 0, 0, 0, 6]);
    }

    #[test]
    fn emit_leaves_payload() {
        let (src, dst) = addrs();
        let repr = Repr {
            src_port: 1,
            dst_port: 2,
            seq_number: 3,
            ack_number: Some(4),
            flags: Flags::FIN,
            window_len: 5,
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload_len: 3,
        };
        let mut out = vec![0u8; repr.buffer_len()];
        out[20..].copy_from_slice(b"abc");
        repr.emit(&mut Packet::new_unchecked(&mut out[..]), src, dst);
        let packet = Packet::new_checked(&out[..]).unwrap();
        assert_eq!(packet.payload(), b"abc");
        assert_eq!(packet.segment_len(), 4);
        assert!(packet.verify_checksum(src, dst));
    }

    #[test]
    fn options_iterator_stops_at_end_of_list() {
        let got = collect(&[1, 0, 2, 4, 5, 0xb4]);
        assert_eq!(got, [Ok((0, TcpOption::NoOperation)), Ok((1, TcpOption::EndOfList))]);
        assert!(collect(&[]).is_empty());
    }

    #[test]
    fn options_iterator_unknown_and_sack() {
        let bytes = [30, 4, 0xaa, 0xbb, 5, 18, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 1];
        let got = collect(&bytes);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Ok((0, TcpOption::Unknown { kind: 30, data: &[0xaa, 0xbb] })));
        let Ok((4, TcpOption::SackRange(blocks))) = got[1] else { panic!("{:?}", got[1]) };
        assert_eq!(blocks.as_slice(), &[(1, 2), (3, 4)]);
        assert_eq!(blocks.iter().count(), 2);
        assert_eq!(got[2], Ok((22, TcpOption::NoOperation)));
    }

    #[test]
    fn malformed_options_yield_one_error() {
        let cases: &[&[u8]] = &[
            &[2],                                // no length byte
            &[30, 1],                            // length below 2
            &[30, 0, 1, 1],                      // length 0
            &[30, 5, 0, 0],                      // runs past the end
            &[2, 3, 5],                          // MSS with length 3
            &[2, 5, 5, 0xb4, 0],                 // MSS with length 5
            &[3, 4, 7, 0],                       // window scale with length 4
            &[4, 3, 0],                          // SACK permitted with length 3
            &[8, 8, 0, 0, 0, 0, 0, 0],           // timestamps with length 8
            &[5, 2],                             // SACK without blocks
            &[5, 6, 0, 0, 0, 0],                 // SACK with half a block
            &[5, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0], // SACK with a stray byte
        ];
        for case in cases {
            let mut options = vec![1u8];
            options.extend_from_slice(case);
            let got = collect(&options);
            assert_eq!(got, [Ok((0, TcpOption::NoOperation)), Err(Error::Malformed)], "{case:?}");
        }
        // Nothing is read after the error, even well-formed options.
        assert_eq!(collect(&[2, 3, 5, 1, 1, 2, 4, 5, 0xb4]), [Err(Error::Malformed)]);
        let five_blocks = [[5u8, 42].as_slice(), &[0; 40]].concat();
        assert_eq!(collect(&five_blocks), [Err(Error::Malformed)]);
    }

    #[test]
    fn repr_parse_rejects_malformed_options_and_ignores_unknown() {
        let (src, dst) = addrs();
        let mut bytes = syn().to_vec();
        bytes[20 + 17..20 + 20].copy_from_slice(&[30, 3, 0]);
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        let repr = Repr::parse(&packet, src, dst).unwrap();
        assert_eq!(repr.window_scale, None);
        packet.options_mut()[17..20].copy_from_slice(&[3, 2, 0]);
        assert_eq!(Repr::parse(&packet, src, dst), Err(Error::Malformed));
    }

    #[test]
    fn mss_clamp_in_place_at_odd_offset() {
        let (src, dst) = addrs();
        // Shift the options by one NOP so that the MSS value sits at an odd
        // offset: NOP, MSS(4), NOP, NOP, NOP -> 8 bytes.
        let mut bytes = [0u8; 28];
        bytes[..20].copy_from_slice(&syn()[..20]);
        bytes[12] = 7 << 4;
        bytes[20..].copy_from_slice(&[1, 2, 4, 0x05, 0xb4, 1, 1, 1]);
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        packet.fill_checksum(src, dst);

        let (at, option) = packet
            .options_iter()
            .find_map(|o| o.ok().filter(|(_, o)| matches!(o, TcpOption::MaxSegmentSize(_))))
            .unwrap();
        assert_eq!((at, option), (1, TcpOption::MaxSegmentSize(1460)));
        let value_at = at + 2;
        let old: [u8; 2] = packet.options()[value_at..value_at + 2].try_into().unwrap();
        let new = 1400u16.to_be_bytes();
        packet.options_mut()[value_at..value_at + 2].copy_from_slice(&new);
        let updated = checksum::update_bytes(packet.checksum(), value_at % 2 == 1, &old, &new);
        packet.set_checksum(updated);
        assert!(packet.verify_checksum(src, dst));
        let mut copy = bytes;
        let mut check = Packet::new_unchecked(&mut copy[..]);
        check.fill_checksum(src, dst);
        assert_eq!(check.checksum(), updated);
    }

    #[test]
    fn check_len_errors() {
        assert_eq!(Packet::new_checked(&syn()[..19]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&syn()[..39]).unwrap_err(), Error::Truncated);
        let mut bad = syn().to_vec();
        bad[12] = 4 << 4;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn flags() {
        let flags = Flags::SYN | Flags::ACK;
        assert!(flags.syn() && flags.ack() && !flags.fin());
        assert_eq!(flags.bits(), 0x12);
        assert_eq!(Flags::from_bits(0x12), flags);
        assert_eq!(format!("{flags:?}"), "Flags(SYN|ACK)");
        assert_eq!(format!("{:?}", Flags::empty()), "Flags(empty)");
        assert!(Flags::from_bits(0xff).cwr() && Flags::from_bits(0xff).ece() && Flags::from_bits(0xff).urg());
        assert!(Flags::from_bits(0xff).psh() && Flags::from_bits(0xff).rst());
        assert_eq!(flags.without(Flags::ACK), Flags::SYN);
        let mut bytes = syn().to_vec();
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_flags(Flags::RST);
        assert_eq!(packet.flags(), Flags::RST);
        assert_eq!(packet.header_len(), 40);
    }

    #[test]
    fn sack_blocks() {
        let blocks = SackBlocks::from_slice(&[(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)]);
        assert_eq!(blocks.len(), 4);
        assert_eq!(blocks, SackBlocks::from_slice(&[(1, 2), (3, 4), (5, 6), (7, 8)]));
        assert_ne!(blocks, SackBlocks::from_slice(&[(1, 2)]));
        assert!(SackBlocks::default().is_empty());
        assert_eq!((&blocks).into_iter().count(), 4);
    }
}
