//! TCP connection states as LVS names them, and the transitions rvs makes.
//!
//! The load balancer sees both halves of every connection, so it tracks one
//! state per connection, driven by the flags of segments from either side.
//! The state picks the idle timeout (see [`crate::config::Timeouts`]) and
//! whether the connection counts as active for the least-connection schedulers.

/// LVS TCP connection states. `Listen`, `SynSent` and `SynAck` are entered
/// only by SYNProxy; plain FullNAT uses the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    /// Tracked but nothing seen yet.
    None = 0,
    /// Three-way handshake complete.
    Established,
    /// The load balancer sent a SYN to the real and waits for its SYN-ACK.
    SynSent,
    /// A client SYN was forwarded; the handshake is not complete.
    SynRecv,
    /// The client sent FIN first; the real may still send.
    FinWait,
    /// Both sides sent FIN and the last was acknowledged.
    TimeWait,
    /// Reset by either side.
    Close,
    /// The real sent FIN first; the client may still send.
    CloseWait,
    /// Both sides sent FIN; the last one is not yet acknowledged.
    LastAck,
    /// Reserved (LVS compatibility: configurable timeout, never entered).
    Listen,
    /// The load balancer answered the client's SYN with a cookie SYN-ACK.
    SynAck,
}

impl TcpState {
    /// Number of states.
    pub const COUNT: usize = 11;

    /// Every state, in `repr` order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::None,
        Self::Established,
        Self::SynSent,
        Self::SynRecv,
        Self::FinWait,
        Self::TimeWait,
        Self::Close,
        Self::CloseWait,
        Self::LastAck,
        Self::Listen,
        Self::SynAck,
    ];

    /// The ipvsadm name (`ESTABLISHED`, `SYN_RECV`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Established => "ESTABLISHED",
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::FinWait => "FIN_WAIT",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
            Self::CloseWait => "CLOSE_WAIT",
            Self::LastAck => "LAST_ACK",
            Self::Listen => "LISTEN",
            Self::SynAck => "SYNACK",
        }
    }

    /// Whether the least-connection schedulers count this connection as active
    /// (LVS: only ESTABLISHED is active, every other state inactive).
    pub const fn is_active(self) -> bool {
        matches!(self, Self::Established)
    }

    /// Whether a new client SYN on this entry starts a new connection
    /// (the old one is over; its entry is recycled).
    pub const fn is_reusable(self) -> bool {
        matches!(self, Self::TimeWait | Self::Close)
    }

    /// The state after a segment with `flags` from `from`.
    ///
    /// RST outranks SYN, SYN outranks FIN, FIN outranks ACK, as one segment
    /// can carry several.
    pub fn next(self, from: Side, flags: SegmentFlags) -> Self {
        use Side::{Client, Real};
        use TcpState::*;
        if flags.rst {
            return match self {
                None | Listen => self,
                _ => Close,
            };
        }
        if flags.syn {
            return match (self, from) {
                (None | TimeWait | Close, Client) => SynRecv,
                // The real's SYN-ACK to the LB's own SYN (SYNProxy).
                (SynSent, Real) => Established,
                _ => self,
            };
        }
        if flags.fin {
            return match (self, from) {
                (Established | SynRecv, Client) => FinWait,
                (Established | SynRecv, Real) => CloseWait,
                (FinWait, Real) | (CloseWait, Client) => LastAck,
                _ => self,
            };
        }
        if flags.ack {
            return match (self, from) {
                (SynRecv | SynAck, Client) => Established,
                (LastAck, _) => TimeWait,
                _ => self,
            };
        }
        self
    }
}

/// Which side of the load balancer a packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// From the client, toward the VIP.
    Client,
    /// From a real, toward a local address.
    Real,
}

/// The TCP flags that move the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentFlags {
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
}

#[cfg(test)]
mod tests {
    use super::Side::{Client, Real};
    use super::TcpState::*;
    use super::*;

    const SYN: SegmentFlags = SegmentFlags { syn: true, ack: false, fin: false, rst: false };
    const SYNACK: SegmentFlags = SegmentFlags { syn: true, ack: true, fin: false, rst: false };
    const ACK: SegmentFlags = SegmentFlags { syn: false, ack: true, fin: false, rst: false };
    const FINACK: SegmentFlags = SegmentFlags { syn: false, ack: true, fin: true, rst: false };
    const RST: SegmentFlags = SegmentFlags { syn: false, ack: false, fin: false, rst: true };

    fn run(steps: &[(Side, SegmentFlags)]) -> TcpState {
        steps.iter().fold(None, |s, &(side, f)| s.next(side, f))
    }

    #[test]
    fn handshake_and_client_close() {
        assert_eq!(run(&[(Client, SYN)]), SynRecv);
        assert_eq!(run(&[(Client, SYN), (Real, SYNACK)]), SynRecv);
        assert_eq!(run(&[(Client, SYN), (Real, SYNACK), (Client, ACK)]), Established);
        let closed = [(Client, SYN), (Real, SYNACK), (Client, ACK), (Client, FINACK)];
        assert_eq!(run(&closed), FinWait);
        let mut all = closed.to_vec();
        all.extend([(Real, FINACK), (Client, ACK)]);
        assert_eq!(run(&all[..5]), LastAck);
        assert_eq!(run(&all), TimeWait);
    }

    #[test]
    fn real_closes_first() {
        let s = run(&[(Client, SYN), (Real, SYNACK), (Client, ACK), (Real, FINACK)]);
        assert_eq!(s, CloseWait);
        assert_eq!(s.next(Client, FINACK), LastAck);
    }

    #[test]
    fn reset_closes_and_syn_reopens() {
        let s = run(&[(Client, SYN), (Real, SYNACK), (Client, ACK), (Real, RST)]);
        assert_eq!(s, Close);
        assert!(s.is_reusable());
        assert_eq!(s.next(Client, SYN), SynRecv);
        // A retransmitted SYN does not reset an established connection.
        assert_eq!(Established.next(Client, SYN), Established);
        assert!(Established.is_active() && !SynRecv.is_active());
    }

    #[test]
    fn synproxy_states() {
        assert_eq!(SynAck.next(Client, ACK), Established);
        assert_eq!(SynSent.next(Real, SYNACK), Established);
    }
}
