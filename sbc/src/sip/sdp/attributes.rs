//! Media-level attributes: reading (`a=` lines) and writing.

use super::{ip_kind, MediaDescription};
use std::fmt::Write as _;

/// `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u8>,
}

/// RFC 3551 §6 static payload types that telephony uses.
pub fn static_payload(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        13 => ("CN", 8000),
        18 => ("G729", 8000),
        _ => return None,
    })
}

/// `a=crypto:<tag> <suite> inline:<key||salt>[|<lifetime>][|<mki>:<len>]` (RFC 4568 §9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: String,
    /// base64 of the master key followed by the master salt.
    pub key_salt: String,
    /// `2^31` or a decimal number, as written.
    pub lifetime: Option<String>,
    /// MKI value and its length in bytes (`1:1` in Teams answers).
    pub mki: Option<(u32, u8)>,
    /// Session parameters after the key parameters, raw.
    pub session_params: Vec<String>,
}

impl Crypto {
    pub fn parse(v: &str) -> Result<Crypto, String> {
        let mut f = v.split(' ').filter(|s| !s.is_empty());
        let tag = f
            .next()
            .and_then(|t| t.parse().ok())
            .ok_or("crypto tag is not a number")?;
        let suite = f.next().ok_or("crypto has no suite")?.to_string();
        let key_params = f.next().ok_or("crypto has no key parameters")?;
        let session_params = f.map(str::to_string).collect();
        // Several key-params may be joined with ';' (RFC 4568 §9.1); we read the first.
        let first = key_params.split(';').next().unwrap_or_default();
        let inline = first
            .strip_prefix("inline:")
            .ok_or("key method is not inline:")?;
        let mut parts = inline.split('|');
        let key_salt = parts.next().unwrap_or_default().to_string();
        if key_salt.is_empty() {
            return Err("empty inline key".into());
        }
        let mut lifetime = None;
        let mut mki = None;
        for p in parts {
            if let Some((v, len)) = p.split_once(':') {
                let v = v.parse().map_err(|_| "MKI value is not a number")?;
                let len = len
                    .parse()
                    .ok()
                    .filter(|l| (1..=128).contains(l))
                    .ok_or("MKI length is not 1-128")?;
                mki = Some((v, len));
            } else if p.starts_with("2^") || p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty()
            {
                lifetime = Some(p.to_string());
            } else {
                return Err(format!("unreadable key parameter {p:?}"));
            }
        }
        Ok(Crypto {
            tag,
            suite,
            key_salt,
            lifetime,
            mki,
            session_params,
        })
    }

    pub fn to_value(&self) -> String {
        let mut s = format!("{} {} inline:{}", self.tag, self.suite, self.key_salt);
        if let Some(l) = &self.lifetime {
            let _ = write!(s, "|{l}");
        }
        if let Some((v, len)) = self.mki {
            let _ = write!(s, "|{v}:{len}");
        }
        for p in &self.session_params {
            let _ = write!(s, " {p}");
        }
        s
    }
}

/// `a=candidate` (RFC 8839 §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub foundation: String,
    pub component: u16,
    pub transport: String,
    pub priority: u32,
    pub address: String,
    pub port: u16,
    pub typ: String,
    /// Anything after `typ <type>` (raddr, rport, generation...), raw.
    pub extensions: String,
}

impl Candidate {
    pub fn parse(v: &str) -> Result<Candidate, String> {
        let f: Vec<&str> = v.split(' ').filter(|s| !s.is_empty()).collect();
        if f.len() < 8 || f[6] != "typ" {
            return Err("candidate needs `<foundation> <component> <transport> <priority> <address> <port> typ <type>`".into());
        }
        Ok(Candidate {
            foundation: f[0].to_string(),
            component: f[1]
                .parse()
                .map_err(|_| "candidate component is not a number")?,
            transport: f[2].to_string(),
            priority: f[3]
                .parse()
                .map_err(|_| "candidate priority is not a number")?,
            address: f[4].to_string(),
            port: f[5].parse().map_err(|_| "candidate port is not a number")?,
            typ: f[7].to_string(),
            extensions: f[8..].join(" "),
        })
    }

    pub fn to_value(&self) -> String {
        let mut s = format!(
            "{} {} {} {} {} {} typ {}",
            self.foundation,
            self.component,
            self.transport,
            self.priority,
            self.address,
            self.port,
            self.typ
        );
        if !self.extensions.is_empty() {
            s.push(' ');
            s.push_str(&self.extensions);
        }
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answer takes for this offered direction (RFC 3264 §6.1).
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
}

pub(super) fn apply_media_attribute<'a>(
    m: &mut MediaDescription,
    name: &str,
    val: Option<&'a str>,
) -> Result<(), String> {
    let need = |v: Option<&'a str>| {
        v.filter(|v| !v.is_empty())
            .ok_or(format!("a={name} needs a value"))
    };
    match name {
        "rtpmap" => {
            let v = need(val)?;
            let (pt, enc) = v
                .split_once(' ')
                .ok_or("rtpmap is not `<pt> <encoding>/<clock>`")?;
            let mut e = enc.split('/');
            let encoding = e.next().unwrap_or_default().to_string();
            let clock_rate = e
                .next()
                .and_then(|c| c.parse().ok())
                .ok_or("rtpmap clock rate is not a number")?;
            let channels = match e.next() {
                Some(c) => Some(c.parse().map_err(|_| "rtpmap channels is not a number")?),
                None => None,
            };
            let payload_type = pt
                .parse()
                .ok()
                .filter(|p| *p < 128)
                .ok_or("rtpmap payload type is not 0-127")?;
            m.rtpmaps.push(RtpMap {
                payload_type,
                encoding,
                clock_rate,
                channels,
            });
        }
        "fmtp" => {
            let v = need(val)?;
            let (pt, params) = v.split_once(' ').unwrap_or((v, ""));
            let pt = pt
                .parse()
                .ok()
                .filter(|p| *p < 128)
                .ok_or("fmtp payload type is not 0-127")?;
            m.fmtps.push((pt, params.to_string()));
        }
        "crypto" => m.crypto.push(Crypto::parse(need(val)?)?),
        "rtcp" => {
            let v = need(val)?;
            m.rtcp = Some(
                v.split(' ')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or("rtcp port is not a number")?,
            );
        }
        "rtcp-mux" => m.rtcp_mux = true,
        "ice-ufrag" => m.ice_ufrag = Some(need(val)?.to_string()),
        "ice-pwd" => m.ice_pwd = Some(need(val)?.to_string()),
        "candidate" => m.candidates.push(Candidate::parse(need(val)?)?),
        "remote-candidates" => m.remote_candidates = Some(need(val)?.to_string()),
        "sendrecv" => m.direction = Some(Direction::SendRecv),
        "sendonly" => m.direction = Some(Direction::SendOnly),
        "recvonly" => m.direction = Some(Direction::RecvOnly),
        "inactive" => m.direction = Some(Direction::Inactive),
        "ptime" => m.ptime = Some(need(val)?.parse().map_err(|_| "ptime is not a number")?),
        _ => m
            .attributes
            .push((name.to_string(), val.map(str::to_string))),
    }
    Ok(())
}

pub(super) fn write_raw(s: &mut String, attrs: &[(String, Option<String>)]) {
    for (k, v) in attrs {
        match v {
            Some(v) => {
                let _ = write!(s, "a={k}:{v}\r\n");
            }
            None => {
                let _ = write!(s, "a={k}\r\n");
            }
        }
    }
}

pub(super) fn write_media(s: &mut String, m: &MediaDescription) {
    let fmts: Vec<String> = m.formats.iter().map(u8::to_string).collect();
    let _ = write!(
        s,
        "m={} {} {} {}\r\n",
        m.kind,
        m.port,
        m.proto,
        fmts.join(" ")
    );
    if let Some(c) = &m.connection {
        let _ = write!(s, "c=IN {} {}\r\n", ip_kind(c), c);
    }
    for r in &m.rtpmaps {
        let _ = write!(
            s,
            "a=rtpmap:{} {}/{}",
            r.payload_type, r.encoding, r.clock_rate
        );
        if let Some(ch) = r.channels {
            let _ = write!(s, "/{ch}");
        }
        s.push_str("\r\n");
    }
    for (pt, p) in &m.fmtps {
        let _ = write!(s, "a=fmtp:{pt} {p}\r\n");
    }
    for c in &m.crypto {
        let _ = write!(s, "a=crypto:{}\r\n", c.to_value());
    }
    if let Some(u) = &m.ice_ufrag {
        let _ = write!(s, "a=ice-ufrag:{u}\r\n");
    }
    if let Some(p) = &m.ice_pwd {
        let _ = write!(s, "a=ice-pwd:{p}\r\n");
    }
    for c in &m.candidates {
        let _ = write!(s, "a=candidate:{}\r\n", c.to_value());
    }
    if let Some(r) = &m.remote_candidates {
        let _ = write!(s, "a=remote-candidates:{r}\r\n");
    }
    if let Some(p) = m.rtcp {
        let _ = write!(s, "a=rtcp:{p}\r\n");
    }
    if m.rtcp_mux {
        s.push_str("a=rtcp-mux\r\n");
    }
    if let Some(d) = m.direction {
        let _ = write!(s, "a={}\r\n", d.as_str());
    }
    if let Some(p) = m.ptime {
        let _ = write!(s, "a=ptime:{p}\r\n");
    }
    write_raw(s, &m.attributes);
}
