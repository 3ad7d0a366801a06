//! Why a byte sequence is not an acceptable SIP message.

use std::fmt;

/// A malformed or unacceptable SIP message. Every variant names what is wrong
/// so that a trace or a log line can say it without re-reading the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The message (or the header section still being framed) exceeds the
    /// configured limit. RFC 3261 §21.4.14: a server answers 413.
    TooLarge { limit: usize },
    /// The bytes are not UTF-8 where RFC 3261 §25 requires text.
    NotUtf8 { part: &'static str },
    /// There is no empty line ending the header section.
    NoHeaderEnd,
    /// The first line is neither a Request-Line nor a Status-Line.
    BadStartLine { line: String, reason: &'static str },
    /// The SIP version is not `SIP/2.0` (RFC 3261 §21.5.6: 505).
    UnsupportedVersion { version: String },
    /// A header line that cannot be split into `name: value`.
    BadHeaderLine { line: String, reason: &'static str },
    /// A header required by RFC 3261 §8.1.1 (or §18.3 for streams) is absent.
    MissingHeader { header: &'static str },
    /// A header is present but its value does not parse.
    BadHeaderValue {
        header: &'static str,
        value: String,
        reason: String,
    },
    /// The body is not as long as `Content-Length` says.
    BodyLength { declared: usize, actual: usize },
    /// A URI that is neither a valid `sip:`/`sips:` nor a `tel:` URI.
    BadUri { uri: String, reason: String },
}

impl WireError {
    /// The status a server sends back for a request that failed this way
    /// (RFC 3261 §21). Responses that fail to parse are dropped instead
    /// (§18.1.2).
    pub fn status_code(&self) -> u16 {
        match self {
            WireError::TooLarge { .. } => 413,
            WireError::UnsupportedVersion { .. } => 505,
            WireError::BadUri { .. } => 416,
            _ => 400,
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLarge { limit } => write!(f, "message exceeds the {limit}-byte limit"),
            WireError::NotUtf8 { part } => write!(f, "{part} is not valid UTF-8"),
            WireError::NoHeaderEnd => write!(f, "no empty line ends the header section"),
            WireError::BadStartLine { line, reason } => {
                write!(f, "bad start line {line:?}: {reason}")
            }
            WireError::UnsupportedVersion { version } => {
                write!(f, "unsupported SIP version {version:?}")
            }
            WireError::BadHeaderLine { line, reason } => {
                write!(f, "bad header line {line:?}: {reason}")
            }
            WireError::MissingHeader { header } => write!(f, "missing {header} header"),
            WireError::BadHeaderValue {
                header,
                value,
                reason,
            } => {
                write!(f, "bad {header} value {value:?}: {reason}")
            }
            WireError::BodyLength { declared, actual } => {
                write!(
                    f,
                    "Content-Length says {declared} bytes but the body has {actual}"
                )
            }
            WireError::BadUri { uri, reason } => write!(f, "bad URI {uri:?}: {reason}"),
        }
    }
}

impl std::error::Error for WireError {}
