//! Why the hub refused a request, with the status it answers and the
//! Microsoft diagnostic code the Direct Routing docs give for it.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The bytes do not read as SIP the way the hub reads them (a
    /// Content-Length that lies, a broken header line), whatever the
    /// shared stack made of them.
    Unreadable { reason: String },
    /// §2 / §9.9: the Contact header is required.
    NoContact,
    /// §9.8, §9.20: an IP where an FQDN is required.
    IpInContact { header: &'static str, host: String },
    /// §9.19: no trunk is configured for this FQDN (510532).
    UnknownTrunk { fqdn: String },
    /// §9.10: the TLS certificate does not cover the Contact FQDN.
    CertificateMismatch { fqdn: String, names: Vec<String> },
    /// §9.17: Direct Routing does not support delayed offer.
    NoSdp,
    /// The SDP does not parse.
    BadSdp { reason: String },
    /// §9.18: the Request-URI number is not E.164 (511404).
    NotE164 { number: String },
    /// §9.18: no user has this number (511404).
    UnknownNumber { number: String },
    /// §9.23: `Require: 100rel` (540420).
    Requires100rel,
    /// §9.24: plain RTP (531000 SrtpEncryptionRequired).
    SrtpRequired,
    /// §9.25: no common codec (531000 CannotSupportAnyMedia).
    NoCommonCodec { reason: String },
    /// §9.27: `c=IN IP4 0.0.0.0` (531052).
    ZeroConnectionAddress,
    /// §9.22: since April 2022 Direct Routing rejects SBC requests with a
    /// Replaces header; the code is undocumented (we answer 403).
    Replaces,
}

impl Refusal {
    /// The status the hub answers with.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Refusal::NoContact | Refusal::Unreadable { .. } => (400, "Bad Request"),
            Refusal::IpInContact { .. }
            | Refusal::UnknownTrunk { .. }
            | Refusal::CertificateMismatch { .. }
            | Refusal::Replaces => (403, "Forbidden"),
            Refusal::NotE164 { .. } | Refusal::UnknownNumber { .. } => (404, "Not Found"),
            Refusal::Requires100rel => (420, "Bad Extension"),
            Refusal::NoSdp
            | Refusal::BadSdp { .. }
            | Refusal::SrtpRequired
            | Refusal::NoCommonCodec { .. }
            | Refusal::ZeroConnectionAddress => (488, "Not Acceptable Here"),
        }
    }

    /// Microsoft's response code for it, where the docs give one.
    pub fn ms_code(&self) -> Option<u32> {
        match self {
            Refusal::UnknownTrunk { .. } => Some(510532),
            Refusal::NotE164 { .. } | Refusal::UnknownNumber { .. } => Some(511404),
            Refusal::Requires100rel => Some(540420),
            Refusal::SrtpRequired | Refusal::NoCommonCodec { .. } => Some(531000),
            Refusal::ZeroConnectionAddress => Some(531052),
            _ => None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, _) = self.status();
        write!(f, "{code} ")?;
        match self {
            Refusal::Unreadable { reason } => write!(f, "unreadable request: {reason}"),
            Refusal::NoContact => write!(f, "no Contact header"),
            Refusal::IpInContact { header, host } => {
                write!(f, "IP {host} in {header}, an FQDN is required")
            }
            Refusal::UnknownTrunk { fqdn } => write!(f, "no trunk config was found for {fqdn}"),
            Refusal::CertificateMismatch { fqdn, names } => {
                write!(f, "certificate names {names:?} do not cover {fqdn}")
            }
            Refusal::NoSdp => write!(f, "INVITE without SDP (delayed offer is not supported)"),
            Refusal::BadSdp { reason } => write!(f, "unreadable SDP: {reason}"),
            Refusal::NotE164 { number } => write!(f, "{number} is not E.164 with a leading +"),
            Refusal::UnknownNumber { number } => write!(f, "no user has number {number}"),
            Refusal::Requires100rel => write!(f, "Require: 100rel is not supported"),
            Refusal::SrtpRequired => write!(f, "SRTP encryption required"),
            Refusal::NoCommonCodec { reason } => write!(f, "cannot support any media: {reason}"),
            Refusal::ZeroConnectionAddress => write!(f, "c=0.0.0.0 is not accepted"),
            Refusal::Replaces => write!(f, "requests with Replaces are rejected"),
        }?;
        if let Some(ms) = self.ms_code() {
            write!(f, " ({ms})")?;
        }
        Ok(())
    }
}
