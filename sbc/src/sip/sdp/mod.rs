//! SDP (RFC 8866) for one or more audio streams, with the attributes Direct
//! Routing uses: rtpmap/fmtp, SDES `a=crypto` (RFC 4568), `a=rtcp`
//! (RFC 3605), `a=rtcp-mux` (RFC 5761), ICE (RFC 8839) and direction.
//! [`offer_answer`] holds the RFC 3264 answer rules.
//!
//! Unknown attributes are kept in order so that a B2BUA can pass them on.

mod attributes;
pub mod offer_answer;

pub use attributes::{Candidate, Crypto, Direction, RtpMap};

use std::fmt::{self, Write as _};

/// Why an SDP body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpError {
    /// A line the grammar does not allow, with its number (from 1).
    Syntax {
        line: usize,
        text: String,
        reason: String,
    },
    /// A required line (`v=`, `o=`, `s=`, `t=`) is absent.
    Missing { line: &'static str },
    /// No connection address for a media stream (neither media nor session `c=`).
    NoConnection { media: usize },
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdpError::Syntax { line, text, reason } => {
                write!(f, "SDP line {line} {text:?}: {reason}")
            }
            SdpError::Missing { line } => write!(f, "SDP has no {line} line"),
            SdpError::NoConnection { media } => write!(f, "SDP media {media} has no c= line"),
        }
    }
}

impl std::error::Error for SdpError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: u64,
    pub session_version: u64,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Origin,
    pub session_name: String,
    /// Session-level `c=` address (IPv4 or IPv6 text).
    pub connection: Option<String>,
    pub ice_lite: bool,
    pub ice_ufrag: Option<String>,
    pub ice_pwd: Option<String>,
    /// Other session-level attributes, raw (`name`, `value`).
    pub attributes: Vec<(String, Option<String>)>,
    pub media: Vec<MediaDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<u8>,
    pub connection: Option<String>,
    pub rtpmaps: Vec<RtpMap>,
    pub fmtps: Vec<(u8, String)>,
    pub crypto: Vec<Crypto>,
    pub rtcp: Option<u16>,
    pub rtcp_mux: bool,
    pub ice_ufrag: Option<String>,
    pub ice_pwd: Option<String>,
    pub candidates: Vec<Candidate>,
    pub remote_candidates: Option<String>,
    pub direction: Option<Direction>,
    pub ptime: Option<u32>,
    pub attributes: Vec<(String, Option<String>)>,
}

impl MediaDescription {
    pub fn new_audio(port: u16, proto: &str) -> Self {
        MediaDescription {
            kind: "audio".into(),
            port,
            proto: proto.into(),
            formats: Vec::new(),
            connection: None,
            rtpmaps: Vec::new(),
            fmtps: Vec::new(),
            crypto: Vec::new(),
            rtcp: None,
            rtcp_mux: false,
            ice_ufrag: None,
            ice_pwd: None,
            candidates: Vec::new(),
            remote_candidates: None,
            direction: None,
            ptime: None,
            attributes: Vec::new(),
        }
    }

    /// The encoding name of payload type `pt`: from `a=rtpmap`, or the static
    /// RFC 3551 table.
    pub fn encoding(&self, pt: u8) -> Option<String> {
        if let Some(m) = self.rtpmaps.iter().find(|m| m.payload_type == pt) {
            return Some(m.encoding.clone());
        }
        attributes::static_payload(pt).map(|(name, _)| name.to_string())
    }

    /// Whether the profile is secure RTP (`RTP/SAVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVP`).
    pub fn is_secure(&self) -> bool {
        self.proto.contains("SAVP")
    }
}

impl SessionDescription {
    /// The first audio stream, if it is not rejected (port 0).
    fn audio(&self) -> Option<&MediaDescription> {
        self.media.iter().find(|m| m.kind == "audio" && m.port != 0)
    }

    /// Whether this description puts the call on hold: the audio stream is
    /// `sendonly`, `recvonly` or `inactive` (RFC 3264 §8.4; `a=` at media
    /// level over session level), or its connection address is `0.0.0.0`
    /// (RFC 2543 hold, still sent by PSTN gear; RFC 3264 §8.4 asks answerers
    /// to understand it).
    pub fn holds(&self) -> bool {
        let Some(m) = self.audio() else {
            return false;
        };
        let zero = m
            .connection
            .as_deref()
            .or(self.connection.as_deref())
            .is_some_and(|c| c == "0.0.0.0");
        let direction = m.direction.or_else(|| self.direction());
        zero || matches!(
            direction,
            Some(Direction::SendOnly | Direction::RecvOnly | Direction::Inactive)
        )
    }

    /// The session-level direction attribute, if any.
    fn direction(&self) -> Option<Direction> {
        self.attributes
            .iter()
            .filter(|(_, v)| v.is_none())
            .find_map(|(k, _)| match k.as_str() {
                "sendrecv" => Some(Direction::SendRecv),
                "sendonly" => Some(Direction::SendOnly),
                "recvonly" => Some(Direction::RecvOnly),
                "inactive" => Some(Direction::Inactive),
                _ => None,
            })
    }

    /// The same description with every media stream set to `direction`.
    pub fn with_direction(mut self, direction: Direction) -> Self {
        for m in &mut self.media {
            m.direction = Some(direction);
        }
        self
    }

    /// The ICE credentials of media stream `idx` (`ufrag`, `pwd`): media
    /// level over session level (RFC 8839 §5.4).
    pub fn ice_credentials(&self, idx: usize) -> Option<(&str, &str)> {
        let m = self.media.get(idx)?;
        let ufrag = m.ice_ufrag.as_deref().or(self.ice_ufrag.as_deref())?;
        let pwd = m.ice_pwd.as_deref().or(self.ice_pwd.as_deref())?;
        Some((ufrag, pwd))
    }

    /// The first live audio stream's ICE credentials (`ufrag`, `pwd`), owned.
    pub fn audio_ice(&self) -> Option<(String, String)> {
        let (u, p) = self.ice_credentials(self.audio_index()?)?;
        Some((u.to_string(), p.to_string()))
    }

    /// The index of the first audio stream that is not rejected (port 0).
    pub fn audio_index(&self) -> Option<usize> {
        self.media
            .iter()
            .position(|m| m.kind == "audio" && m.port != 0)
    }

    /// The address where a media stream is to be sent: media `c=` over session `c=`.
    pub fn media_address(&self, idx: usize) -> Option<&str> {
        let m = self.media.get(idx)?;
        m.connection.as_deref().or(self.connection.as_deref())
    }

    pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
        let mut origin = None;
        let mut session_name = None;
        let mut timing = false;
        let mut sd = SessionDescription {
            origin: Origin {
                username: String::new(),
                session_id: 0,
                session_version: 0,
                address: String::new(),
            },
            session_name: String::new(),
            connection: None,
            ice_lite: false,
            ice_ufrag: None,
            ice_pwd: None,
            attributes: Vec::new(),
            media: Vec::new(),
        };
        let mut saw_version = false;
        for (n, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            let err = |reason: &str| SdpError::Syntax {
                line: n + 1,
                text: line.to_string(),
                reason: reason.to_string(),
            };
            let (kind, value) = match line.split_once('=') {
                Some((k, v)) if k.len() == 1 => (k, v),
                _ => return Err(err("not `<type>=<value>`")),
            };
            if !saw_version && kind != "v" {
                return Err(err("first line must be v="));
            }
            match kind {
                "v" => {
                    if value != "0" {
                        return Err(err("version must be 0"));
                    }
                    saw_version = true;
                }
                "o" => {
                    origin = Some(
                        parse_origin(value)
                            .ok_or_else(|| err("o= needs 6 fields with numeric ids"))?,
                    )
                }
                "s" => session_name = Some(value.to_string()),
                "t" => timing = true,
                "c" => {
                    let addr = parse_connection(value)
                        .ok_or_else(|| err("c= is not `IN IP4|IP6 <address>`"))?;
                    match sd.media.last_mut() {
                        Some(m) => m.connection = Some(addr),
                        None => sd.connection = Some(addr),
                    }
                }
                "m" => sd.media.push(
                    parse_media(value)
                        .ok_or_else(|| err("m= is not `<media> <port> <proto> <fmt>...`"))?,
                ),
                "a" => {
                    let (name, val) = match value.split_once(':') {
                        Some((k, v)) => (k, Some(v)),
                        None => (value, None),
                    };
                    match sd.media.last_mut() {
                        Some(m) => {
                            attributes::apply_media_attribute(m, name, val).map_err(|r| err(&r))?
                        }
                        None => match (name, val) {
                            ("ice-lite", None) => sd.ice_lite = true,
                            ("ice-ufrag", Some(v)) => sd.ice_ufrag = Some(v.to_string()),
                            ("ice-pwd", Some(v)) => sd.ice_pwd = Some(v.to_string()),
                            _ => sd
                                .attributes
                                .push((name.to_string(), val.map(str::to_string))),
                        },
                    }
                }
                // b=, i=, u=, e=, p=, z=, k=, r= carry nothing we act on.
                "b" | "i" | "u" | "e" | "p" | "z" | "k" | "r" => {}
                _ => return Err(err("unknown line type")),
            }
        }
        if !saw_version {
            return Err(SdpError::Missing { line: "v=" });
        }
        sd.origin = origin.ok_or(SdpError::Missing { line: "o=" })?;
        sd.session_name = session_name.ok_or(SdpError::Missing { line: "s=" })?;
        if !timing {
            return Err(SdpError::Missing { line: "t=" });
        }
        for (i, m) in sd.media.iter().enumerate() {
            if m.port != 0 && m.connection.is_none() && sd.connection.is_none() {
                return Err(SdpError::NoConnection { media: i });
            }
        }
        Ok(sd)
    }

    /// Serialise with CRLF line ends, in RFC 8866 §5 order.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let o = &self.origin;
        let _ = write!(
            s,
            "v=0\r\no={} {} {} IN {} {}\r\n",
            o.username,
            o.session_id,
            o.session_version,
            ip_kind(&o.address),
            o.address
        );
        let _ = write!(s, "s={}\r\n", self.session_name);
        if let Some(c) = &self.connection {
            let _ = write!(s, "c=IN {} {}\r\n", ip_kind(c), c);
        }
        s.push_str("t=0 0\r\n");
        if self.ice_lite {
            s.push_str("a=ice-lite\r\n");
        }
        if let Some(u) = &self.ice_ufrag {
            let _ = write!(s, "a=ice-ufrag:{u}\r\n");
        }
        if let Some(p) = &self.ice_pwd {
            let _ = write!(s, "a=ice-pwd:{p}\r\n");
        }
        attributes::write_raw(&mut s, &self.attributes);
        for m in &self.media {
            attributes::write_media(&mut s, m);
        }
        s
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

pub(crate) fn ip_kind(addr: &str) -> &'static str {
    if addr.contains(':') {
        "IP6"
    } else {
        "IP4"
    }
}

fn parse_origin(v: &str) -> Option<Origin> {
    let f: Vec<&str> = v.split(' ').collect();
    if f.len() != 6 || f[3] != "IN" {
        return None;
    }
    Some(Origin {
        username: f[0].to_string(),
        session_id: f[1].parse().ok()?,
        session_version: f[2].parse().ok()?,
        address: f[5].to_string(),
    })
}

fn parse_connection(v: &str) -> Option<String> {
    let f: Vec<&str> = v.split(' ').collect();
    if f.len() != 3 || f[0] != "IN" || !(f[1] == "IP4" || f[1] == "IP6") || f[2].is_empty() {
        return None;
    }
    // A multicast TTL suffix (`/127`) is not used in telephony; keep the
    // address only, which must be there (`c=IN IP4 /127` was read as an
    // empty address and written back as a line that does not parse: found
    // by fuzz/ sdp).
    Some(f[2].split('/').next()?.to_string()).filter(|a| !a.is_empty())
}

fn parse_media(v: &str) -> Option<MediaDescription> {
    let mut f = v.split(' ');
    let kind = f.next()?;
    let port = f.next()?.split('/').next()?.parse().ok()?;
    let proto = f.next()?;
    if kind.is_empty() || proto.is_empty() {
        return None;
    }
    let formats = f
        .map(|p| p.parse::<u8>().ok().filter(|pt| *pt < 128))
        .collect::<Option<Vec<u8>>>()?;
    if formats.is_empty() {
        return None;
    }
    let mut m = MediaDescription::new_audio(port, proto);
    m.kind = kind.to_string();
    m.formats = formats;
    Some(m)
}

#[cfg(test)]
mod tests;
