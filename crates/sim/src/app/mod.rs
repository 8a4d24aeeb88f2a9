//! Applications that check what they receive byte for byte.
//!
//! TCP: a client opens connections and sends a 16-byte header (u64
//! connection id, u32 request length, u32 response length, big-endian)
//! followed by the request; the server checks every request byte, answers
//! with the response, and one side closes. UDP: a client sends numbered
//! requests and retries until each is answered; the server checks and
//! answers each. Payload bytes come from [`pattern`], a function of the
//! connection (or exchange) id, the direction and the offset, so a byte
//! from the wrong connection, the wrong direction or the wrong place is
//! caught.

use core::fmt;

mod tcp;
mod udp;

pub use tcp::{
    ClientConn, Closer, KEEP_ALIVE, ServerConn, TcpClient, TcpClientConfig, TcpServer, TcpServerConfig,
    TcpServerStats,
};
pub use udp::{Exchange, UdpClient, UdpClientConfig, UdpServer, UdpServerConfig, UdpServerStats};

/// Byte patterns that identify their stream and position.
pub mod pattern {
    use crate::rng::splitmix64;

    /// The request direction (client to server).
    pub const REQUEST: u8 = 0;
    /// The response direction (server to client).
    pub const RESPONSE: u8 = 1;

    /// The key of stream (`id`, `dir`); word `i` of the stream is
    /// `word(key, i)`, its bytes little-endian.
    fn key(id: u64, dir: u8) -> u64 {
        splitmix64(id ^ (u64::from(dir) << 63))
    }

    fn word(key: u64, index: u64) -> u64 {
        splitmix64(key ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93))
    }

    /// Bytes before the next 8-byte boundary of the stream at `offset`.
    fn head_len(offset: u64, len: usize) -> usize {
        (((8 - offset % 8) % 8) as usize).min(len)
    }

    /// Fill `buf` with the bytes of stream (`id`, `dir`) starting at `offset`.
    pub fn fill(id: u64, dir: u8, offset: u64, buf: &mut [u8]) {
        let key = key(id, dir);
        let head = head_len(offset, buf.len());
        let (first, rest) = buf.split_at_mut(head);
        if head > 0 {
            let skip = (offset % 8) as usize;
            first.copy_from_slice(&word(key, offset / 8).to_le_bytes()[skip..skip + head]);
        }
        let mut index = (offset + head as u64) / 8;
        let mut words = rest.chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&word(key, index).to_le_bytes());
            index += 1;
        }
        let tail = words.into_remainder();
        let n = tail.len();
        tail.copy_from_slice(&word(key, index).to_le_bytes()[..n]);
    }

    /// The stream offset of the first byte of `buf` that differs from
    /// stream (`id`, `dir`) at `offset`, if any.
    pub fn check(id: u64, dir: u8, offset: u64, buf: &[u8]) -> Option<u64> {
        let key = key(id, dir);
        let first_diff = |at: usize, got: &[u8], want: &[u8]| {
            let i = got.iter().zip(want).position(|(a, b)| a != b)?;
            Some(offset + (at + i) as u64)
        };
        let head = head_len(offset, buf.len());
        if head > 0 {
            let skip = (offset % 8) as usize;
            let want = word(key, offset / 8).to_le_bytes();
            if let Some(bad) = first_diff(0, &buf[..head], &want[skip..skip + head]) {
                return Some(bad);
            }
        }
        let mut index = (offset + head as u64) / 8;
        let mut at = head;
        let mut words = buf[head..].chunks_exact(8);
        for w in &mut words {
            let want = word(key, index);
            if u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) != want {
                return first_diff(at, w, &want.to_le_bytes());
            }
            index += 1;
            at += 8;
        }
        let tail = words.remainder();
        first_diff(at, tail, &word(key, index).to_le_bytes()[..tail.len()])
    }
}

/// How a connection or exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still running.
    Pending,
    /// Every byte arrived, right, and the connection closed cleanly.
    Ok,
    /// A received byte was wrong (or one too many arrived) at this stream
    /// offset.
    Mismatch {
        /// Offset in the received stream (request or response) of the bad byte.
        offset: u64,
    },
    /// The connection closed or was reset before the exchange completed.
    Closed {
        /// Payload bytes received before that.
        received: u64,
    },
    /// The peer's header made no sense.
    BadHeader,
    /// The deadline passed first.
    TimedOut,
    /// The local stack refused to start it (no port, bad address).
    Refused,
}

impl Outcome {
    /// Finished, well or badly.
    pub fn is_final(self) -> bool {
        self != Self::Pending
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pending => f.write_str("pending"),
            Self::Ok => f.write_str("ok"),
            Self::Mismatch { offset } => write!(f, "wrong byte at offset {offset}"),
            Self::Closed { received } => write!(f, "closed early after {received} bytes"),
            Self::BadHeader => f.write_str("bad header"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Refused => f.write_str("refused locally"),
        }
    }
}

/// Length of the TCP request header and of the UDP datagram header.
pub const HEADER_LEN: usize = 16;

/// The header every TCP connection and UDP datagram starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Connection id (TCP) or exchange id (UDP); selects the pattern.
    pub id: u64,
    /// TCP: request bytes that follow. UDP: exchange sequence number.
    pub a: u32,
    /// Response bytes wanted.
    pub response_len: u32,
}

impl Header {
    /// The 16 wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0; HEADER_LEN];
        b[..8].copy_from_slice(&self.id.to_be_bytes());
        b[8..12].copy_from_slice(&self.a.to_be_bytes());
        b[12..].copy_from_slice(&self.response_len.to_be_bytes());
        b
    }

    /// Parse the first 16 bytes of `b`.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Self {
            id: u64::from_be_bytes(b[..8].try_into().ok()?),
            a: u32::from_be_bytes(b[8..12].try_into().ok()?),
            response_len: u32::from_be_bytes(b[12..].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::pattern::*;
    use super::*;

    #[test]
    fn pattern_is_position_and_stream_specific() {
        let mut a = vec![0; 1000];
        fill(7, REQUEST, 13, &mut a);
        assert_eq!(check(7, REQUEST, 13, &a), None);
        // Filling in pieces gives the same bytes.
        let mut b = vec![0; 1000];
        fill(7, REQUEST, 13, &mut b[..5]);
        fill(7, REQUEST, 18, &mut b[5..]);
        assert_eq!(a, b);
        assert_eq!(check(7, REQUEST, 14, &a), Some(14));
        assert_eq!(check(8, REQUEST, 13, &a), Some(13));
        assert_eq!(check(7, RESPONSE, 13, &a), Some(13));
        a[500] ^= 1;
        assert_eq!(check(7, REQUEST, 13, &a), Some(513));
        // Every alignment and length, against a byte-at-a-time reference.
        let reference: Vec<u8> = (0..64u64)
            .map(|i| {
                let mut b = [0u8; 1];
                fill(3, RESPONSE, i, &mut b);
                b[0]
            })
            .collect();
        for start in 0..20 {
            for len in 0..40 {
                let mut b = vec![0; len];
                fill(3, RESPONSE, start as u64, &mut b);
                assert_eq!(b, reference[start..start + len]);
                assert_eq!(check(3, RESPONSE, start as u64, &b), None);
                if len > 0 {
                    b[len - 1] ^= 0x80;
                    assert_eq!(check(3, RESPONSE, start as u64, &b), Some((start + len - 1) as u64));
                }
            }
        }
    }

    #[test]
    fn header_round_trips() {
        let h = Header { id: 0x0102_0304_0506_0708, a: 9, response_len: 1 << 20 };
        assert_eq!(Header::decode(&h.encode()), Some(h));
        assert_eq!(Header::decode(&[0; 15]), None);
    }
}
