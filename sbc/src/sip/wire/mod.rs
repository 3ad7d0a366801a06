//! SIP on the wire: parse and serialise messages (RFC 3261 §7, §20, §25),
//! frame them on streams, read the header values the layers above need.
//!
//! rsip 0.4 reads SIP URIs ([`Uri`]); this module adds what rsip lacks:
//! stream framing, compact header names, folding, `tel:` URIs, extension
//! methods, a size limit, and raw-text headers so a value is forwarded
//! exactly as it arrived.

mod error;
mod framing;
mod header;
mod message;
mod uri;
mod values;

pub use error::WireError;
pub use framing::{Frame, StreamFramer};
pub use header::{full_name, name_is, split_list, split_params, Header, Headers};
pub use message::{Message, Method, StartLine, DEFAULT_MAX_MESSAGE};
pub use uri::{TelUri, Uri};
pub use values::{split_host_port, CSeq, NameAddr, Via, BRANCH_COOKIE};
