//! Why the hub refused a request, with the status it answers, the
//! Microsoft response code the Direct Routing docs give for it, and the
//! phrase its Reason text carries.

use super::causes::{CauseTable, SERVICE_NOT_AVAILABLE};
use std::fmt;

/// How the hub refuses where the sources leave something open: each
/// undocumented status is a setting whose default is our documented guess
/// (`[refusals]` in hub.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalPolicy {
    /// SIP status → Q.850 cause on the hub's Reason headers.
    pub causes: CauseTable,
    /// An SBC request with Replaces (§3.1: "rejected", code undocumented;
    /// guess 403).
    pub replaces_status: u16,
    /// An INVITE without SDP (case 9.17: code undocumented; guess 488, the
    /// status of the hub's other SDP refusals).
    pub delayed_offer_status: u16,
    /// A request without Contact (case 9.9: "not accepted"; guess 400,
    /// RFC 3261 §8.1.1.8 makes Contact mandatory in INVITE).
    pub no_contact_status: u16,
}

impl Default for RefusalPolicy {
    fn default() -> Self {
        RefusalPolicy {
            causes: CauseTable::default(),
            replaces_status: 403,
            delayed_offer_status: 488,
            no_contact_status: 400,
        }
    }
}

/// RFC 3261 §21's reason phrase for a failure status the policy may pick.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        603 => "Decline",
        606 => "Not Acceptable",
        _ => "Refused",
    }
}

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
    /// §9.26: an INVITE from an SBC whose gateway has MediaBypass on,
    /// with no ICE candidates in its SDP (531027, KB-488).
    NoIceCandidates,
    /// §9.22: since April 2022 Direct Routing rejects SBC requests with a
    /// Replaces header; the code is undocumented (a setting, default 403).
    Replaces,
    /// Case 9.48 (KB-404): a Replaces naming a dialog the hub does not
    /// know: 404 with 10202.
    ReplacesUnknownDialog { call_id: String },
    /// Case 9.45: an INVITE for a Refer-To the hub sent whose Referred-By
    /// is not the one it sent, byte for byte: the hub cannot tie it to the
    /// transfer (status undocumented; 403 is our guess).
    TransferNotCorrelated { reason: String },
    /// §9.31: the caller is on the callee's blocked list (510534).
    BlockedCaller { number: String },
    /// §9.60: the user is disabled but still has the number: 403 with
    /// Q.850 cause 63 (observed), not 404.
    UserDisabled { number: String },
    /// The user takes no call now: busy (486, whose Q.850 cause is
    /// ND1017's 34: case 9.59) or declining (603: case 9.42).
    UserRefuses { number: String, code: u16 },
    /// This proxy is overloaded: 503 with Retry-After (behaviour §4: the
    /// SBC must move to another proxy and leave this one alone meanwhile).
    Overloaded { retry_after: u32 },
}

impl Refusal {
    /// The status the hub answers with, by default.
    pub fn status(&self) -> (u16, &'static str) {
        self.status_in(&RefusalPolicy::default())
    }

    /// The status the hub answers with under `policy`.
    pub fn status_in(&self, policy: &RefusalPolicy) -> (u16, &'static str) {
        let set = |code: u16| (code, reason_phrase(code));
        match self {
            Refusal::NoContact => set(policy.no_contact_status),
            Refusal::Replaces => set(policy.replaces_status),
            Refusal::NoSdp => set(policy.delayed_offer_status),
            Refusal::Unreadable { .. } => (400, "Bad Request"),
            Refusal::IpInContact { .. }
            | Refusal::UnknownTrunk { .. }
            | Refusal::CertificateMismatch { .. }
            | Refusal::BlockedCaller { .. }
            | Refusal::UserDisabled { .. } => (403, "Forbidden"),
            Refusal::TransferNotCorrelated { .. } => (403, "Forbidden"),
            Refusal::NotE164 { .. }
            | Refusal::UnknownNumber { .. }
            | Refusal::ReplacesUnknownDialog { .. } => (404, "Not Found"),
            Refusal::Requires100rel => (420, "Bad Extension"),
            Refusal::UserRefuses { code, .. } => (*code, reason_phrase(*code)),
            Refusal::Overloaded { .. } => (503, "Service Unavailable"),
            Refusal::BadSdp { .. }
            | Refusal::SrtpRequired
            | Refusal::NoCommonCodec { .. }
            | Refusal::ZeroConnectionAddress
            | Refusal::NoIceCandidates => (488, "Not Acceptable Here"),
        }
    }

    /// Microsoft's response code for it, where the docs give one.
    pub fn ms_code(&self) -> Option<u32> {
        match self {
            Refusal::UnknownTrunk { .. } => Some(510532),
            Refusal::BlockedCaller { .. } => Some(510534),
            Refusal::NotE164 { .. } | Refusal::UnknownNumber { .. } => Some(511404),
            Refusal::Requires100rel => Some(540420),
            Refusal::SrtpRequired | Refusal::NoCommonCodec { .. } => Some(531000),
            Refusal::ZeroConnectionAddress => Some(531052),
            Refusal::NoIceCandidates => Some(531027),
            Refusal::ReplacesUnknownDialog { .. } => Some(10202),
            _ => None,
        }
    }

    /// The Q.850 cause on the refusal's Reason header.
    pub fn q850(&self, policy: &RefusalPolicy) -> u8 {
        match self {
            Refusal::UserDisabled { .. } => SERVICE_NOT_AVAILABLE,
            r => policy.causes.cause(r.status_in(policy).0),
        }
    }

    /// The phrase after the correlation id in the Reason text: Microsoft's
    /// own words where KB-CODES gives them, ours (plain, short) elsewhere.
    pub fn phrase(&self) -> &'static str {
        match self {
            Refusal::Unreadable { .. } => "Invalid Request",
            Refusal::NoContact => "Contact header is required",
            Refusal::IpInContact { .. } => "An FQDN is required, not an IP address",
            Refusal::UnknownTrunk { .. } => "No trunk config was found",
            Refusal::CertificateMismatch { .. } => "The certificate does not match the FQDN",
            Refusal::NoSdp => "Delayed offer is not supported",
            Refusal::BadSdp { .. } => "Invalid SDP",
            Refusal::NotE164 { .. } | Refusal::UnknownNumber { .. } => {
                "Getting user info by number from RuntimeAPI failed"
            }
            Refusal::Requires100rel => "Bad Extension",
            Refusal::SrtpRequired => "SrtpEncryptionRequired",
            Refusal::NoCommonCodec { .. } => "CannotSupportAnyMedia",
            Refusal::ZeroConnectionAddress => "Blackhole media is not supported",
            Refusal::NoIceCandidates => "No ICE candidates for media bypass",
            Refusal::Replaces => "Replaces is not supported",
            Refusal::ReplacesUnknownDialog { .. } => "The dialog to replace was not found",
            Refusal::TransferNotCorrelated { .. } => "The transfer could not be correlated",
            Refusal::BlockedCaller { .. } => "The caller is blocked by the callee",
            Refusal::UserDisabled { .. } => "The user is disabled",
            Refusal::UserRefuses { code: 486, .. } => "The user is busy",
            Refusal::UserRefuses { .. } => "The user declined the call",
            Refusal::Overloaded { .. } => "Service is temporarily unavailable",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
            Refusal::NoIceCandidates => {
                write!(f, "no ICE candidates, and the trunk uses media bypass")
            }
            Refusal::Replaces => write!(f, "requests with Replaces are rejected"),
            Refusal::ReplacesUnknownDialog { call_id } => {
                write!(
                    f,
                    "Replaces names dialog {call_id}, which the hub does not know"
                )
            }
            Refusal::TransferNotCorrelated { reason } => {
                write!(
                    f,
                    "INVITE for a transfer target not tied to the transfer: {reason}"
                )
            }
            Refusal::BlockedCaller { number } => write!(f, "caller {number} is blocked"),
            Refusal::UserDisabled { number } => write!(f, "the user with {number} is disabled"),
            Refusal::UserRefuses { number, code } => {
                write!(f, "the user with {number} refuses calls ({code})")
            }
            Refusal::Overloaded { retry_after } => {
                write!(f, "overloaded, retry after {retry_after} s")
            }
        }?;
        if let Some(ms) = self.ms_code() {
            write!(f, " ({ms})")?;
        }
        Ok(())
    }
}
