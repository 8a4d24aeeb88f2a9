use core::fmt;

/// Why a buffer could not be viewed or parsed as a packet.
///
/// The enum is `Copy` and carries no data so that the data path can return it
/// by value without allocating; the layer that failed is known to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than the header or a length field demands. For
    /// emitters, the output buffer is too short.
    Truncated,
    /// A header field holds a value that cannot occur in a valid packet, for
    /// example an IPv4 header length below 20 bytes or a TCP option whose length
    /// does not match its kind.
    Malformed,
    /// The bytes are well formed but not of the expected kind, for example an
    /// IP version other than the one the view handles.
    Unrecognized,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "truncated packet",
            Self::Malformed => "malformed packet",
            Self::Unrecognized => "unrecognized packet",
        })
    }
}

impl std::error::Error for Error {}
