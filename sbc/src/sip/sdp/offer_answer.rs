//! The offer/answer model (RFC 3264) for one audio stream, and what both
//! sides end up agreeing on.

use super::{Candidate, Crypto, Direction, MediaDescription, Origin, RtpMap, SessionDescription};
use std::fmt;

/// The only SRTP suite Direct Routing requires (and the one we implement).
pub const SRTP_SUITE: &str = "AES_CM_128_HMAC_SHA1_80";

/// A codec by name and clock rate; payload types are per session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub payload_type: u8,
    pub name: String,
    pub clock_rate: u32,
}

impl Codec {
    pub fn new(payload_type: u8, name: &str, clock_rate: u32) -> Self {
        Codec {
            payload_type,
            name: name.to_string(),
            clock_rate,
        }
    }
    pub fn pcmu() -> Self {
        Codec::new(0, "PCMU", 8000)
    }
    pub fn pcma() -> Self {
        Codec::new(8, "PCMA", 8000)
    }
    pub fn telephone_event() -> Self {
        Codec::new(101, "telephone-event", 8000)
    }
}

/// A side's ICE credentials (RFC 8839 §5.4); its one host candidate is
/// the leg's own address and port. `lite`: an ICE-lite agent (RFC 8445
/// §2.5, the SBC in media bypass) writes `a=ice-lite`; a full agent (a
/// Teams client) does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ice {
    pub ufrag: String,
    pub pwd: String,
    pub lite: bool,
}

/// What one side can do on one leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    pub address: String,
    pub port: u16,
    /// Codecs in order of preference; `telephone-event` is accepted whenever offered
    /// if listed here.
    pub codecs: Vec<Codec>,
    /// `Some(base64 key||salt)`: SRTP (SDES) is used and required. `None`: plain RTP only.
    pub srtp_key: Option<String>,
    pub rtcp_mux: bool,
    pub ice: Option<Ice>,
}

/// Why an offer cannot be answered: each maps to 488 Not Acceptable Here
/// (RFC 3261 §21.4.26) with a warning text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    NoAudio,
    NoCommonCodec { offered: Vec<String> },
    SrtpRequired,
    SrtpNotSupported,
    NoAcceptableCrypto { offered: Vec<String> },
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::NoAudio => write!(f, "no audio stream offered"),
            AnswerError::NoCommonCodec { offered } => {
                write!(f, "no common codec (offered {})", offered.join(","))
            }
            AnswerError::SrtpRequired => write!(f, "plain RTP offered but SRTP is required"),
            AnswerError::SrtpNotSupported => write!(f, "SRTP offered but this leg is plain RTP"),
            AnswerError::NoAcceptableCrypto { offered } => {
                write!(
                    f,
                    "no acceptable crypto suite (offered {})",
                    offered.join(",")
                )
            }
        }
    }
}

impl std::error::Error for AnswerError {}

impl LocalMedia {
    fn proto(&self) -> &'static str {
        if self.srtp_key.is_some() {
            "RTP/SAVP"
        } else {
            "RTP/AVP"
        }
    }

    fn media(&self, codecs: &[Codec]) -> MediaDescription {
        let mut m = MediaDescription::new_audio(self.port, self.proto());
        for c in codecs {
            m.formats.push(c.payload_type);
            m.rtpmaps.push(RtpMap {
                payload_type: c.payload_type,
                encoding: c.name.clone(),
                clock_rate: c.clock_rate,
                channels: None,
            });
            if c.name.eq_ignore_ascii_case("telephone-event") {
                m.fmtps.push((c.payload_type, "0-16".into()));
            }
        }
        if self.rtcp_mux {
            // Teams writes a=rtcp:<same port> next to a=rtcp-mux.
            m.rtcp = Some(self.port);
            m.rtcp_mux = true;
        }
        if let Some(ice) = &self.ice {
            m.ice_ufrag = Some(ice.ufrag.clone());
            m.ice_pwd = Some(ice.pwd.clone());
            m.candidates.push(Candidate {
                foundation: "1".into(),
                component: 1,
                transport: "UDP".into(),
                // RFC 8445 §5.1.2.1 host priority for component 1 with local preference 65535.
                priority: 2_130_706_431,
                address: self.address.clone(),
                port: self.port,
                typ: "host".into(),
                extensions: String::new(),
            });
        }
        m.direction = Some(Direction::SendRecv);
        m.ptime = Some(20);
        m
    }

    fn session(&self, origin: Origin, media: MediaDescription) -> SessionDescription {
        SessionDescription {
            origin,
            session_name: "-".into(),
            connection: Some(self.address.clone()),
            ice_lite: self.ice.as_ref().is_some_and(|i| i.lite),
            ice_ufrag: None,
            ice_pwd: None,
            attributes: Vec::new(),
            media: vec![media],
        }
    }

    /// An offer with every local codec.
    pub fn offer(&self, origin: Origin) -> SessionDescription {
        let mut m = self.media(&self.codecs);
        if let Some(key) = &self.srtp_key {
            m.crypto.push(Crypto {
                tag: 1,
                suite: SRTP_SUITE.into(),
                key_salt: key.clone(),
                lifetime: None,
                mki: None,
                session_params: vec![],
            });
        }
        self.session(origin, m)
    }

    /// Answer the first audio stream of `offer` (RFC 3264 §6): codecs common
    /// to both in the offerer's order with the offerer's payload types, the
    /// first acceptable crypto line answered with the same tag, the mirrored
    /// direction.
    pub fn answer(
        &self,
        offer: &SessionDescription,
        origin: Origin,
    ) -> Result<SessionDescription, AnswerError> {
        let om = offer
            .media
            .iter()
            .find(|m| m.kind == "audio" && m.port != 0)
            .ok_or(AnswerError::NoAudio)?;
        let mut common = Vec::new();
        let mut offered = Vec::new();
        for pt in &om.formats {
            let name = om.encoding(*pt).unwrap_or_else(|| format!("pt{pt}"));
            offered.push(name.clone());
            let clock = om
                .rtpmaps
                .iter()
                .find(|r| r.payload_type == *pt)
                .map(|r| r.clock_rate)
                .unwrap_or(8000);
            if let Some(c) = self
                .codecs
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(&name) && c.clock_rate == clock)
            {
                common.push(Codec {
                    payload_type: *pt,
                    ..c.clone()
                });
            }
        }
        if !common
            .iter()
            .any(|c| !c.name.eq_ignore_ascii_case("telephone-event"))
        {
            return Err(AnswerError::NoCommonCodec { offered });
        }
        let mut m = self.media(&common);
        match (&self.srtp_key, om.is_secure()) {
            (Some(_), false) => return Err(AnswerError::SrtpRequired),
            (None, true) => return Err(AnswerError::SrtpNotSupported),
            (Some(key), true) => {
                let chosen = om
                    .crypto
                    .iter()
                    .find(|c| c.suite == SRTP_SUITE)
                    .ok_or_else(|| AnswerError::NoAcceptableCrypto {
                        offered: om.crypto.iter().map(|c| c.suite.clone()).collect(),
                    })?;
                m.proto = om.proto.clone();
                m.crypto.push(Crypto {
                    tag: chosen.tag,
                    suite: SRTP_SUITE.into(),
                    key_salt: key.clone(),
                    lifetime: None,
                    mki: None,
                    session_params: vec![],
                });
            }
            (None, false) => m.proto = om.proto.clone(),
        }
        m.rtcp_mux = self.rtcp_mux && om.rtcp_mux;
        if !m.rtcp_mux {
            m.rtcp = None;
        }
        m.direction = Some(om.direction.unwrap_or(Direction::SendRecv).answer());
        let mut answer = self.session(origin, m);
        // RFC 8839 §4.2: ICE only when the offer signalled it too.
        if offer.audio_ice().is_none() {
            answer.ice_lite = false;
            for m in &mut answer.media {
                m.ice_ufrag = None;
                m.ice_pwd = None;
                m.candidates.clear();
            }
        }
        Ok(answer)
    }
}

/// What an offer and its answer agreed for the first audio stream, seen
/// from one side: where to send, which payload type, which keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    pub remote_address: String,
    pub remote_port: u16,
    pub codec: Codec,
    /// The telephone-event payload type the far side expects (its SDP),
    /// and the one we expect (ours): RFC 4733 events are sent with the
    /// first and arrive with the second.
    pub telephone_event: Option<u8>,
    pub local_telephone_event: Option<u8>,
    /// The key this side sends with (its own a=crypto).
    pub local_key: Option<Crypto>,
    /// The key the far side sends with (its a=crypto).
    pub remote_key: Option<Crypto>,
    pub rtcp_mux: bool,
}

impl Agreed {
    /// Where to send media, when the SDP address is an IP (it always is on
    /// these legs; a host name would need resolving first).
    pub fn remote_socket(&self) -> Option<std::net::SocketAddr> {
        let ip: std::net::IpAddr = self.remote_address.parse().ok()?;
        Some(std::net::SocketAddr::new(ip, self.remote_port))
    }
}

/// Read what was agreed, from `local` (our SDP) and `remote` (theirs); which
/// was offer and which answer does not matter once the answer is in, since
/// the answer only holds what both accept.
pub fn agreed(local: &SessionDescription, remote: &SessionDescription) -> Option<Agreed> {
    let ri = remote
        .media
        .iter()
        .position(|m| m.kind == "audio" && m.port != 0)?;
    let rm = &remote.media[ri];
    let lm = local
        .media
        .iter()
        .find(|m| m.kind == "audio" && m.port != 0)?;
    let (codec, te) = first_common(lm, rm)?;
    let remote_key = rm.crypto.iter().find(|c| c.suite == SRTP_SUITE).cloned();
    let local_key = match &remote_key {
        Some(rk) => lm
            .crypto
            .iter()
            .find(|c| c.tag == rk.tag && c.suite == SRTP_SUITE)
            .or_else(|| lm.crypto.first())
            .cloned(),
        None => None,
    };
    Some(Agreed {
        remote_address: remote.media_address(ri)?.to_string(),
        remote_port: rm.port,
        codec,
        telephone_event: te,
        local_telephone_event: te.and_then(|_| {
            lm.formats.iter().copied().find(|pt| {
                lm.encoding(*pt)
                    .is_some_and(|n| n.eq_ignore_ascii_case("telephone-event"))
            })
        }),
        local_key,
        remote_key,
        rtcp_mux: lm.rtcp_mux && rm.rtcp_mux,
    })
}

fn first_common(a: &MediaDescription, b: &MediaDescription) -> Option<(Codec, Option<u8>)> {
    let mut te = None;
    let mut codec = None;
    for pt in &b.formats {
        let Some(name) = b.encoding(*pt) else {
            continue;
        };
        let in_a = a.formats.iter().any(|apt| {
            a.encoding(*apt)
                .is_some_and(|n| n.eq_ignore_ascii_case(&name))
        });
        if !in_a {
            continue;
        }
        if name.eq_ignore_ascii_case("telephone-event") {
            te.get_or_insert(*pt);
        } else if codec.is_none() {
            let clock = b
                .rtpmaps
                .iter()
                .find(|r| r.payload_type == *pt)
                .map(|r| r.clock_rate)
                .unwrap_or(8000);
            codec = Some(Codec {
                payload_type: *pt,
                name,
                clock_rate: clock,
            });
        }
    }
    Some((codec?, te))
}
