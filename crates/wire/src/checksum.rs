//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! The checksum is the ones' complement of the ones' complement sum of the
//! data taken as big-endian 16-bit words. Ones' complement addition is
//! commutative and associative, and `2^16 ≡ 1 (mod 0xffff)`, which is what
//! every function here leans on:
//!
//! * partial sums of pieces that start at even offsets can simply be added;
//! * a piece that starts at an odd offset contributes its sum byte-swapped;
//! * a field can be replaced without touching the rest of the data by
//!   subtracting its old value and adding the new one (RFC 1624).
//!
//! # Representation of partial sums
//!
//! [`sum`] and [`pseudo_header`] return a partial sum in a `u32` that has
//! already had its carries folded back in, so it never exceeds `0xffff`. It is
//! *not* complemented. Up to 65 537 such values can be added with plain `+`
//! without overflowing a `u32`; [`fold`] reduces the total back to 16 bits and
//! [`finish`] produces the value to store in a checksum field. Internally the
//! data are accumulated in a `u64`, so inputs of any practical size (well
//! beyond 64 KiB) cannot overflow.
//!
//! # Zero
//!
//! Ones' complement arithmetic has two zeros, `0x0000` and `0xffff`. A sum of
//! data that is not entirely zero bytes is never `0x0000` here, so [`finish`]
//! of such data never yields `0xffff`, matching RFC 1071 implementations. The
//! update functions use RFC 1624 equation 3, which yields bit-for-bit the same
//! result as a full recomputation whenever the resulting data is not all zero.
//!
//! None of these functions panic.

use core::net::IpAddr;

/// Reduces a 64-bit accumulator to 16 bits with end-around carry.
///
/// A non-zero input never folds to zero, so "negative zero" (`0xffff`) is the
/// only zero that sums of non-zero data produce.
const fn fold64(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Ones' complement sum of `data` as big-endian 16-bit words, with an odd
/// trailing byte padded with a zero byte (RFC 1071 §4.1).
///
/// The result is a partial sum: carries are folded (it is at most `0xffff`)
/// but it is not complemented. `data` must start at an even offset of the
/// checksummed data for its sum to be added to others as is; otherwise swap
/// the bytes of the folded sum (see [`update_bytes`]).
pub fn sum(data: &[u8]) -> u32 {
    // Adding 32-bit big-endian words is equivalent to adding their two 16-bit
    // halves, because 2^16 ≡ 1 (mod 0xffff); it halves the number of
    // additions. A u64 cannot overflow before 2^32 words (16 GiB).
    let (words, rest) = data.as_chunks::<4>();
    let mut acc: u64 = 0;
    for word in words {
        acc += u64::from(u32::from_be_bytes(*word));
    }
    let mut tail = [0u8; 4];
    for (slot, byte) in tail.iter_mut().zip(rest) {
        *slot = *byte;
    }
    acc += u64::from(u32::from_be_bytes(tail));
    u32::from(fold64(acc))
}

/// Folds the carries of a partial sum into 16 bits (not complemented).
#[inline]
pub const fn fold(sum: u32) -> u16 {
    // Two rounds reach 16 bits from any u32: the first leaves at most
    // 0x1fffe, the second at most 0xffff.
    let sum = (sum & 0xffff) + (sum >> 16);
    ((sum & 0xffff) + (sum >> 16)) as u16
}

/// The value to store in a checksum field for data whose partial sum (with
/// the checksum field taken as zero) is `sum`: `!fold(sum)`.
#[inline]
pub const fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// Whether data including its checksum field sums to ones' complement zero,
/// i.e. whether the stored checksum is correct.
#[inline]
pub const fn verify(sum: u32) -> bool {
    fold(sum) == 0xffff
}

#[inline]
fn addr_sum(addr: IpAddr) -> u32 {
    match addr {
        // One 32-bit word: its two halves, folded (as `sum` would).
        IpAddr::V4(addr) => u32::from(fold(addr.to_bits())),
        // Four 32-bit words, added as `sum` adds them, without its loop:
        // addresses are summed on every rewritten packet.
        IpAddr::V6(addr) => {
            let bits = addr.to_bits();
            let word = |shift: u32| u64::from((bits >> shift) as u32);
            u32::from(fold64(word(96) + word(64) + word(32) + word(0)))
        }
    }
}

/// Partial sum of the pseudo-header that TCP, UDP and ICMPv6 checksums cover.
///
/// For IPv4 (RFC 793 §3.1, RFC 768) the pseudo-header is source, destination,
/// a zero byte, the protocol and the 16-bit upper-layer length. For IPv6
/// (RFC 8200 §8.1) it is source, destination, the 32-bit upper-layer length,
/// three zero bytes and the next header. Both reduce to the same sum of words,
/// so `length` is added as two 16-bit halves; for IPv4 its upper half is zero
/// in any valid datagram.
///
/// Mixing an IPv4 and an IPv6 address is a caller bug; the sum of what is
/// given is returned rather than panicking.
#[inline]
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, length: u32) -> u32 {
    let total = u64::from(addr_sum(src))
        + u64::from(addr_sum(dst))
        + u64::from(protocol)
        + u64::from(length >> 16)
        + u64::from(length & 0xffff);
    u32::from(fold64(total))
}

/// RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`, with `m` and `m'` given
/// as folded partial sums of the old and new data.
#[inline]
fn update_sums(checksum: u16, old: u16, new: u16) -> u16 {
    finish(u32::from(!checksum) + u32::from(!old) + u32::from(new))
}

/// Updates `checksum` for one 16-bit word (at an even offset) changing from
/// `old` to `new` (RFC 1624 §3, equation 3).
///
/// Unlike equation 2 of RFC 1624, this never turns a correct `0x0000` into
/// `0xffff`. UDP callers must still store a resulting `0x0000` as `0xffff`
/// (RFC 768), since zero means "no checksum" there.
#[inline]
pub fn update16(checksum: u16, old: u16, new: u16) -> u16 {
    update_sums(checksum, old, new)
}

/// Updates `checksum` for a 32-bit value (at an even offset) changing from
/// `old` to `new`, e.g. a TCP sequence number.
#[inline]
pub fn update32(checksum: u16, old: u32, new: u32) -> u16 {
    update_sums(checksum, fold(old), fold(new))
}

/// Updates `checksum` for an address (4 or 16 bytes, at an even offset)
/// changing from `old` to `new`, as in a header or a pseudo-header.
///
/// If the families differ, all of `old` is removed and all of `new` added.
#[inline]
pub fn update_addr(checksum: u16, old: IpAddr, new: IpAddr) -> u16 {
    update_sums(checksum, fold(addr_sum(old)), fold(addr_sum(new)))
}

/// Updates `checksum` for a run of bytes changing from `old` to `new`.
///
/// The runs should have equal lengths; if they do not, only the common prefix
/// is taken into account. `odd_offset` tells whether the run starts at an odd
/// byte offset from the start of the checksummed data (counting the
/// pseudo-header as even-sized, which it always is): such a run's bytes sit in
/// the low halves of words where an even-aligned sum would put them in the
/// high halves, so its sum is byte-swapped. This is what rewriting a TCP
/// option in place needs, since options need not be word aligned.
#[inline]
pub fn update_bytes(checksum: u16, odd_offset: bool, old: &[u8], new: &[u8]) -> u16 {
    let common = old.len().min(new.len());
    let (old, new) = (old.get(..common).unwrap_or(&[]), new.get(..common).unwrap_or(&[]));
    let (mut old_sum, mut new_sum) = (fold(sum(old)), fold(sum(new)));
    if odd_offset {
        old_sum = old_sum.swap_bytes();
        new_sum = new_sum.swap_bytes();
    }
    update_sums(checksum, old_sum, new_sum)
}

/// Finishes the TCP or UDP checksum of an IPv4 packet whose sender left it
/// partial, and says whether it did.
///
/// A sender that offloads its checksum (`CHECKSUM_PARTIAL` in Linux, as veth
/// and most NICs do) stores only the folded pseudo-header sum in the field and
/// leaves the rest to hardware; a packet taken off the wire before that
/// hardware (AF_XDP on a virtual link) still carries it. The checksum is
/// completed only when it does not verify and the field holds exactly that
/// pseudo-header sum; any other wrong checksum is left for the parser to
/// reject. Fragments, other protocols, UDP without a checksum and packets
/// that are not whole IPv4 datagrams are left alone.
pub fn complete_partial_ipv4(packet: &mut [u8]) -> bool {
    let Some(&vihl) = packet.first() else { return false };
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 || packet.len() < ihl {
        return false;
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    // More fragments, or a fragment offset: the segment is not all here.
    let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0;
    if total < ihl || total > packet.len() || fragment {
        return false;
    }
    let (header, rest) = packet.split_at_mut(ihl);
    let src: [u8; 4] = [header[12], header[13], header[14], header[15]];
    let dst: [u8; 4] = [header[16], header[17], header[18], header[19]];
    complete_segment(src.into(), dst.into(), header[9], &mut rest[..total - ihl])
}

/// [`complete_partial_ipv4`] for IPv6: a TCP or UDP segment right after the
/// fixed header (senders offload no checksum behind extension headers).
pub fn complete_partial_ipv6(packet: &mut [u8]) -> bool {
    if packet.len() < 40 || packet[0] >> 4 != 6 {
        return false;
    }
    let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    let (header, rest) = packet.split_at_mut(40);
    let Some(segment) = rest.get_mut(..payload) else { return false };
    let src: [u8; 16] = header[8..24].try_into().unwrap_or_default();
    let dst: [u8; 16] = header[24..40].try_into().unwrap_or_default();
    complete_segment(src.into(), dst.into(), header[6], segment)
}

/// Finish the partial checksum of a whole TCP or UDP `segment` between `src`
/// and `dst`, as [`complete_partial_ipv4`] describes.
fn complete_segment(src: IpAddr, dst: IpAddr, protocol: u8, segment: &mut [u8]) -> bool {
    let at = match protocol {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    if segment.len() < at + 2 {
        return false;
    }
    let stored = u16::from_be_bytes([segment[at], segment[at + 1]]);
    if protocol == 17 && stored == 0 {
        return false;
    }
    let pseudo = pseudo_header(src, dst, protocol, segment.len() as u32);
    let data = sum(segment);
    if verify(pseudo + data) || stored != fold(pseudo) {
        return false;
    }
    // The field already holds the pseudo-header sum, so the segment's own sum
    // is the whole sum.
    let mut checksum = finish(data);
    if protocol == 17 && checksum == 0 {
        // RFC 768: a computed zero is sent as all ones.
        checksum = 0xffff;
    }
    segment[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use proptest::prelude::*;

    /// Straightforward RFC 1071 reference: 16-bit words, end-around carry.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            acc += u32::from(word);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    /// Ones' complement equality: the two zeros are the same number.
    fn same(a: u16, b: u16) -> bool {
        a == b || (a | b == 0xffff && (a == 0 || b == 0))
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(finish(sum(&data)), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12]), 0x1200);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn large_input_does_not_overflow() {
        let data = vec![0xffu8; 1 << 20];
        assert_eq!(sum(&data), 0xffff);
        assert!(verify(sum(&data)));
        assert_eq!(fold(u32::MAX), 0xffff);
        assert_eq!(fold(0x0001_fffe), 0xffff);
        assert_eq!(fold(0x0001_0000), 0x0001);
    }

    #[test]
    fn rfc1624_section4_example() {
        // RFC 1624 §4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives 0x0000,
        // where equation 2 would have produced 0xffff.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn pseudo_header_v4_and_v6() {
        let src = Ipv4Addr::new(192, 0, 2, 1);
        let dst = Ipv4Addr::new(198, 51, 100, 7);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&[0, 6, 0x05, 0xdc]);
        assert_eq!(pseudo_header(src.into(), dst.into(), 6, 1500), sum(&bytes));

        let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let dst = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0xabcd, 2);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&0x0001_0010u32.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 17]);
        assert_eq!(pseudo_header(src.into(), dst.into(), 17, 0x0001_0010), sum(&bytes));
    }

    #[test]
    fn mixed_families_do_not_panic() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let _ = pseudo_header(v4, v6, 6, 20);
        let _ = update_addr(0x1234, v4, v6);
    }

    #[test]
    fn update_bytes_uses_common_prefix() {
        let c = 0x1234;
        assert_eq!(update_bytes(c, false, &[1, 2, 3], &[4, 5]), update_bytes(c, false, &[1, 2], &[4, 5]));
        assert_eq!(update_bytes(c, true, &[], &[9]), update16(c, 0, 0));
    }

    /// A buffer and an in-place edit of it.
    fn buffer_and_edit() -> impl Strategy<Value = (Vec<u8>, usize, Vec<u8>)> {
        prop::collection::vec(any::<u8>(), 1..300).prop_flat_map(|data| {
            let len = data.len();
            (Just(data), 0..len).prop_flat_map(move |(data, at)| {
                let max = len - at;
                (Just(data), Just(at), prop::collection::vec(any::<u8>(), 0..=max))
            })
        })
    }

    /// Buffers biased towards the ones' complement edge cases: all zero, all
    /// 0xff, and sums that land on 0x0000 / 0xffff.
    fn edge_buffer() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 1..64),
            prop::collection::vec(prop_oneof![Just(0u8), Just(0xffu8)], 1..64),
            (1usize..64).prop_map(|n| vec![0u8; n]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn sum_matches_reference(data in prop::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(fold(sum(&data)), reference_sum(&data));
        }

        #[test]
        fn sums_of_pieces_add_up(data in prop::collection::vec(any::<u8>(), 0..600), cut in 0usize..600) {
            let cut = cut.min(data.len());
            let (a, b) = data.split_at(cut);
            let mut b_sum = fold(sum(b));
            if cut % 2 == 1 {
                b_sum = b_sum.swap_bytes();
            }
            prop_assert!(same(fold(sum(a) + u32::from(b_sum)), fold(sum(&data))));
        }

        #[test]
        fn update_bytes_matches_recomputation((mut data, at, new) in buffer_and_edit()) {
            let before = finish(sum(&data));
            let old = data[at..at + new.len()].to_vec();
            data[at..at + new.len()].copy_from_slice(&new);
            let updated = update_bytes(before, at % 2 == 1, &old, &new);
            let full = finish(sum(&data));
            if data.iter().any(|&b| b != 0) {
                prop_assert_eq!(updated, full);
                prop_assert!(verify(sum(&data) + u32::from(updated)));
            } else {
                prop_assert!(same(updated, full));
            }
        }

        #[test]
        fn update16_and_update32_match_recomputation(
            mut data in prop::collection::vec(any::<u8>(), 4..100),
            at in 0usize..48,
            new in any::<u32>(),
        ) {
            let at = (at * 2).min(data.len() - 4) & !1;
            let before = finish(sum(&data));
            let old = u32::from_be_bytes(data[at..at + 4].try_into().unwrap());
            data[at..at + 4].copy_from_slice(&new.to_be_bytes());
            let full = finish(sum(&data));
            let by32 = update32(before, old, new);
            let by16 = update16(
                update16(before, (old >> 16) as u16, (new >> 16) as u16),
                old as u16,
                new as u16,
            );
            if data.iter().any(|&b| b != 0) {
                prop_assert_eq!(by32, full);
                prop_assert_eq!(by16, full);
            } else {
                prop_assert!(same(by32, full) && same(by16, full));
            }
        }

        #[test]
        fn edge_cases_with_embedded_checksum(
            mut data in edge_buffer(),
            at in 0usize..64,
            new in prop::collection::vec(prop_oneof![Just(0u8), Just(0xffu8), any::<u8>()], 1..8),
        ) {
            // The data carries its own checksum in its first word, like a
            // header, and a constant non-zero second word; the edit touches
            // neither.
            data.splice(0..0, [0, 0, 0x45, 0]);
            let c = finish(sum(&data));
            data[..2].copy_from_slice(&c.to_be_bytes());
            prop_assert!(verify(sum(&data)));

            let at = 4 + at % (data.len() - 4);
            let end = (at + new.len()).min(data.len());
            let old = data[at..end].to_vec();
            data[at..end].copy_from_slice(&new[..end - at]);
            let c = update_bytes(c, at % 2 == 1, &old, &new);
            data[..2].copy_from_slice(&c.to_be_bytes());
            // The constant 0x45 keeps the data non-zero, so the result must
            // verify exactly, not merely up to the two zeros.
            prop_assert!(verify(sum(&data)));
            data[..2].copy_from_slice(&[0, 0]);
            prop_assert_eq!(c, finish(sum(&data)));
        }

        #[test]
        fn update_addr_matches_recomputation(
            old in any::<[u8; 16]>(),
            new in any::<[u8; 16]>(),
            rest in prop::collection::vec(any::<u8>(), 0..40),
            v6 in any::<bool>(),
        ) {
            let (old, new, len): (IpAddr, IpAddr, usize) = if v6 {
                (Ipv6Addr::from(old).into(), Ipv6Addr::from(new).into(), 16)
            } else {
                let o: [u8; 4] = old[..4].try_into().unwrap();
                let n: [u8; 4] = new[..4].try_into().unwrap();
                (Ipv4Addr::from(o).into(), Ipv4Addr::from(n).into(), 4)
            };
            let bytes = |addr: IpAddr| match addr {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            let mut data = bytes(old);
            data.extend_from_slice(&rest);
            data.push(1);
            let before = finish(sum(&data));
            data[..len].copy_from_slice(&bytes(new));
            prop_assert_eq!(update_addr(before, old, new), finish(sum(&data)));
        }
    }

    /// An IPv4 packet (20-byte header) with a TCP or UDP segment whose
    /// checksum is correct.
    fn ipv4_packet(proto: u8, payload: &[u8]) -> Vec<u8> {
        let l4_len = if proto == 6 { 20 } else { 8 };
        let total = 20 + l4_len + payload.len();
        let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 2, 10, 0, 2, 1];
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        let mut l4 = vec![0u8; l4_len];
        l4[0..4].copy_from_slice(&[0xc3, 0x50, 0, 80]);
        if proto == 6 {
            l4[12] = 0x50;
            l4[13] = 0x18;
        } else {
            l4[4..6].copy_from_slice(&((l4_len + payload.len()) as u16).to_be_bytes());
        }
        p.extend_from_slice(&l4);
        p.extend_from_slice(payload);
        let at = 20 + if proto == 6 { 16 } else { 6 };
        let pseudo = pseudo_header(
            Ipv4Addr::new(10, 0, 0, 2).into(),
            Ipv4Addr::new(10, 0, 2, 1).into(),
            proto,
            (total - 20) as u32,
        );
        let c = finish(pseudo + sum(&p[20..]));
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn completes_partial_tcp_and_udp() {
        for proto in [6u8, 17] {
            for payload in [&b""[..], b"GET / HTTP/1.1\r\n", b"odd"] {
                let good = ipv4_packet(proto, payload);
                let at = 20 + if proto == 6 { 16 } else { 6 };
                let mut partial = good.clone();
                let len = (good.len() - 20) as u32;
                let pseudo = pseudo_header(
                    Ipv4Addr::new(10, 0, 0, 2).into(),
                    Ipv4Addr::new(10, 0, 2, 1).into(),
                    proto,
                    len,
                );
                partial[at..at + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
                assert!(complete_partial_ipv4(&mut partial), "proto {proto}");
                assert_eq!(partial, good, "proto {proto} payload {payload:?}");
                // A correct checksum is left as it is.
                assert!(!complete_partial_ipv4(&mut partial));
                assert_eq!(partial, good);
            }
        }
    }

    #[test]
    fn leaves_other_wrong_checksums_and_non_segments() {
        let good = ipv4_packet(6, b"data");
        let mut bad = good.clone();
        bad[36] ^= 0x01;
        let before = bad.clone();
        assert!(!complete_partial_ipv4(&mut bad));
        assert_eq!(bad, before);
        // UDP without a checksum.
        let mut none = ipv4_packet(17, b"x");
        none[26..28].copy_from_slice(&[0, 0]);
        assert!(!complete_partial_ipv4(&mut none));
        assert_eq!(&none[26..28], &[0, 0]);
        // A fragment, ICMP, IPv6, short input.
        let mut frag = good.clone();
        frag[6] = 0x20;
        assert!(!complete_partial_ipv4(&mut frag));
        let mut icmp = good.clone();
        icmp[9] = 1;
        assert!(!complete_partial_ipv4(&mut icmp));
        assert!(!complete_partial_ipv4(&mut [0x60; 40]));
        assert!(!complete_partial_ipv4(&mut good[..30].to_vec()));
        assert!(!complete_partial_ipv4(&mut []));
    }

    /// A whole IPv6 packet fd10:77::2 -> fd10:77:2::1 carrying `proto`
    /// (TCP or UDP) with a correct checksum.
    fn ipv6_packet(proto: u8, payload: &[u8]) -> Vec<u8> {
        let (src, dst): (Ipv6Addr, Ipv6Addr) =
            ("fd10:77::2".parse().unwrap(), "fd10:77:2::1".parse().unwrap());
        let l4_len = if proto == 6 { 20 } else { 8 };
        let len = l4_len + payload.len();
        let mut p = vec![0x60, 0, 0, 0, (len >> 8) as u8, len as u8, proto, 64];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        let mut l4 = vec![0u8; l4_len];
        l4[0..4].copy_from_slice(&[0xc0, 0x01, 0, 80]);
        if proto == 6 {
            l4[12] = 0x50;
        } else {
            l4[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        }
        p.extend_from_slice(&l4);
        p.extend_from_slice(payload);
        let at = 40 + if proto == 6 { 16 } else { 6 };
        let pseudo = pseudo_header(src.into(), dst.into(), proto, len as u32);
        let c = finish(pseudo + sum(&p[40..]));
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn completes_partial_ipv6_tcp_and_udp() {
        for proto in [6u8, 17] {
            for payload in [&b""[..], b"odd"] {
                let good = ipv6_packet(proto, payload);
                let at = 40 + if proto == 6 { 16 } else { 6 };
                let mut partial = good.clone();
                let (src, dst) = (&good[8..24], &good[24..40]);
                let src: [u8; 16] = src.try_into().unwrap();
                let dst: [u8; 16] = dst.try_into().unwrap();
                let pseudo = pseudo_header(src.into(), dst.into(), proto, (good.len() - 40) as u32);
                partial[at..at + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
                // Link-layer padding past the payload is not part of the segment.
                partial.extend_from_slice(&[0; 6]);
                assert!(complete_partial_ipv6(&mut partial), "proto {proto}");
                assert_eq!(partial[..good.len()], good[..], "proto {proto} payload {payload:?}");
                assert!(!complete_partial_ipv6(&mut partial));
            }
        }
        // An extension header first, IPv4, a payload past the buffer.
        let mut hop = ipv6_packet(6, b"x");
        hop[6] = 0;
        assert!(!complete_partial_ipv6(&mut hop));
        assert!(!complete_partial_ipv6(&mut ipv4_packet(6, b"x")));
        let mut cut = ipv6_packet(6, b"x");
        cut.truncate(50);
        assert!(!complete_partial_ipv6(&mut cut));
    }

    proptest! {
        #[test]
        fn completion_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = complete_partial_ipv4(&mut data);
            let _ = complete_partial_ipv6(&mut data);
        }
    }
}
