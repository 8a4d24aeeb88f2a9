//! TCP sequence numbers: 32-bit counters that wrap (RFC 9293 §3.4).
//!
//! Sequence numbers (and, by the same rule, timestamps: RFC 7323 §5.2) are
//! compared modulo 2^32: `a` comes after `b` when `a - b`, taken as a signed
//! 32-bit number, is positive. [`SeqNumber`] does every such comparison and
//! every offset the one way, so no caller writes `as i32` by hand. The order
//! is meaningful only between numbers less than 2^31 apart, which is why
//! [`SeqNumber`] is `PartialOrd` and not `Ord`. Nothing here panics.

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A TCP sequence number (or any number compared the same way, such as a
/// TSval), with wrapping arithmetic and comparisons.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// The signed distance from `other` to `self`: positive when `self`
    /// comes after `other`.
    #[inline]
    pub const fn distance(self, other: Self) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// The later of the two.
    #[inline]
    pub fn max(self, other: Self) -> Self {
        if self.distance(other) < 0 { other } else { self }
    }
}

impl From<u32> for SeqNumber {
    #[inline]
    fn from(n: u32) -> Self {
        Self(n)
    }
}

impl From<SeqNumber> for u32 {
    #[inline]
    fn from(n: SeqNumber) -> Self {
        n.0
    }
}

impl Add<u32> for SeqNumber {
    type Output = Self;

    #[inline]
    fn add(self, n: u32) -> Self {
        Self(self.0.wrapping_add(n))
    }
}

impl AddAssign<u32> for SeqNumber {
    #[inline]
    fn add_assign(&mut self, n: u32) {
        self.0 = self.0.wrapping_add(n);
    }
}

impl Sub<u32> for SeqNumber {
    type Output = Self;

    #[inline]
    fn sub(self, n: u32) -> Self {
        Self(self.0.wrapping_sub(n))
    }
}

/// The offset that takes `rhs` to `self`, modulo 2^32: `rhs + (self - rhs) == self`.
impl Sub for SeqNumber {
    type Output = u32;

    #[inline]
    fn sub(self, rhs: Self) -> u32 {
        self.0.wrapping_sub(rhs.0)
    }
}

impl PartialOrd for SeqNumber {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.distance(*other).cmp(&0))
    }
}

impl fmt::Debug for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SeqNumber({})", self.0)
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_across_the_wrap() {
        let (a, b) = (SeqNumber(u32::MAX - 1), SeqNumber(3));
        assert!(b > a);
        assert!(a < b);
        assert_eq!(b.distance(a), 5);
        assert_eq!(a.distance(b), -5);
        assert_eq!(a.max(b), b);
        assert_eq!(b.max(a), b);
        assert_eq!(a.partial_cmp(&a), Some(Ordering::Equal));
    }

    #[test]
    fn adds_and_subtracts_modulo_2_32() {
        let a = SeqNumber(u32::MAX);
        assert_eq!(a + 2, SeqNumber(1));
        assert_eq!(SeqNumber(1) - 2, a);
        assert_eq!(SeqNumber(1) - a, 2);
        assert_eq!(a + (SeqNumber(7) - a), SeqNumber(7));
        let mut b = a;
        b += 1;
        assert_eq!(b, SeqNumber(0));
    }

    #[test]
    fn half_the_space_apart_is_before() {
        // Exactly 2^31 apart the signed distance is i32::MIN both ways.
        let (a, b) = (SeqNumber(0), SeqNumber(1 << 31));
        assert_eq!(b.distance(a), i32::MIN);
        assert_eq!(a.distance(b), i32::MIN);
        assert!(a < b && b < a);
    }
}
