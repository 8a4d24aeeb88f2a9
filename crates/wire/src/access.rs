//! Bounds-checked loads and stores at fixed offsets.
//!
//! Every header accessor goes through these helpers. On a buffer that passed
//! `check_len` the checks always succeed (and the optimiser usually folds them
//! into the length check already made); on a short buffer reads yield zero and
//! writes are dropped instead of panicking.
//!
//! Each helper is `#[inline]`: the views are generic and compile into the
//! caller's crate, and without the hint these non-generic helpers would stay
//! calls across the crate boundary, where no check can be folded.

use core::ops::Range;

/// A byte range of a header field.
pub(crate) type Field = Range<usize>;

#[inline]
pub(crate) fn get_u8(data: &[u8], at: usize) -> u8 {
    data.get(at).copied().unwrap_or(0)
}

#[inline]
pub(crate) fn get_array<const N: usize>(data: &[u8], field: Field) -> [u8; N] {
    data.get(field).and_then(|bytes| <[u8; N]>::try_from(bytes).ok()).unwrap_or([0; N])
}

#[inline]
pub(crate) fn get_u16(data: &[u8], field: Field) -> u16 {
    u16::from_be_bytes(get_array(data, field))
}

#[inline]
pub(crate) fn get_u32(data: &[u8], field: Field) -> u32 {
    u32::from_be_bytes(get_array(data, field))
}

#[inline]
pub(crate) fn set_u8(data: &mut [u8], at: usize, value: u8) {
    if let Some(byte) = data.get_mut(at) {
        *byte = value;
    }
}

#[inline]
pub(crate) fn set_bytes(data: &mut [u8], field: Field, value: &[u8]) {
    if let Some(bytes) = data.get_mut(field)
        && bytes.len() == value.len()
    {
        bytes.copy_from_slice(value);
    }
}

#[inline]
pub(crate) fn set_u16(data: &mut [u8], field: Field, value: u16) {
    set_bytes(data, field, &value.to_be_bytes());
}

#[inline]
pub(crate) fn set_u32(data: &mut [u8], field: Field, value: u32) {
    set_bytes(data, field, &value.to_be_bytes());
}

/// `data[start..end]`, with both bounds clamped to the buffer so that an
/// inconsistent length field yields a shorter slice instead of a panic.
#[inline]
pub(crate) fn clamped(data: &[u8], start: usize, end: usize) -> &[u8] {
    let end = end.min(data.len());
    data.get(start.min(end)..end).unwrap_or(&[])
}

/// Mutable counterpart of [`clamped`].
#[inline]
pub(crate) fn clamped_mut(data: &mut [u8], start: usize, end: usize) -> &mut [u8] {
    let end = end.min(data.len());
    data.get_mut(start.min(end)..end).unwrap_or(&mut [])
}
