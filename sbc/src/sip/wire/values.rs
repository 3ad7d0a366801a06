//! Typed readings of the header values a transaction, dialog or proxy needs:
//! Via (RFC 3261 §20.42), CSeq (§20.16), name-addr headers From/To/Contact
//! (§20.10, §20.20, §20.39), Call-ID and Max-Forwards.
//!
//! These read from the raw text and never write back: to change a header,
//! set its text.

use super::error::WireError;
use super::header::split_params;
use super::message::{Message, Method};
use super::uri::Uri;

/// The magic cookie that marks an RFC 3261 branch (§8.1.1.7).
pub const BRANCH_COOKIE: &str = "z9hG4bK";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS` (upper-cased).
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub branch: Option<String>,
    /// `;rport` present (with or without a value, RFC 3581).
    pub rport: bool,
    pub received: Option<String>,
}

impl Via {
    pub fn parse(value: &str) -> Result<Via, WireError> {
        let bad = |reason: &str| WireError::BadHeaderValue {
            header: "Via",
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let (proto, rest) = value
            .trim()
            .split_once([' ', '\t'])
            .ok_or_else(|| bad("no sent-by"))?;
        let mut p = proto.split('/');
        let (Some(name), Some(version), Some(transport), None) =
            (p.next(), p.next(), p.next(), p.next())
        else {
            return Err(bad("sent-protocol is not SIP/2.0/<transport>"));
        };
        if !name.trim().eq_ignore_ascii_case("SIP") || version.trim() != "2.0" {
            return Err(bad("sent-protocol is not SIP/2.0"));
        }
        let rest = rest.trim();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let sent_by = sent_by.trim();
        let (host, port) =
            split_host_port(sent_by).ok_or_else(|| bad("sent-by is not host[:port]"))?;
        let mut via = Via {
            transport: transport.trim().to_ascii_uppercase(),
            host: host.to_string(),
            port,
            branch: None,
            rport: false,
            received: None,
        };
        for (k, v) in split_params(params) {
            match k.to_ascii_lowercase().as_str() {
                "branch" => {
                    via.branch = Some(v.ok_or_else(|| bad("branch without a value"))?.to_string())
                }
                "rport" => via.rport = true,
                "received" => via.received = v.map(str::to_string),
                _ => {}
            }
        }
        Ok(via)
    }
}

/// Split `host[:port]`, allowing a bracketed IPv6 reference.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &s[..end + 2];
        let after = &rest[end + 1..];
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h, Some(p.parse().ok()?))).filter(|(h, _)| !h.is_empty()),
        None => Some((s, None)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Result<CSeq, WireError> {
        let bad = |reason: &str| WireError::BadHeaderValue {
            header: "CSeq",
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let mut it = value.split_whitespace();
        let (Some(seq), Some(method), None) = (it.next(), it.next(), it.next()) else {
            return Err(bad("expected `<number> <method>`"));
        };
        // RFC 3261 §8.1.1.5: the number is 32-bit unsigned, below 2^31 when chosen.
        let seq = seq
            .parse()
            .map_err(|_| bad("sequence number is not a 32-bit integer"))?;
        let method = Method::parse(method).map_err(bad)?;
        Ok(CSeq { seq, method })
    }
}

/// A name-addr or addr-spec header value: `"Name" <uri>;param=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    /// The URI text, exactly as written.
    pub uri: String,
    /// Header parameters (after the `>`), raw.
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn parse(header: &'static str, value: &str) -> Result<NameAddr, WireError> {
        let bad = |reason: &str| WireError::BadHeaderValue {
            header,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let v = value.trim();
        if v.is_empty() {
            return Err(bad("empty"));
        }
        let (display, uri, rest) = if let Some(lt) = find_unquoted(v, '<') {
            let gt = v[lt..].find('>').ok_or_else(|| bad("`<` without `>`"))? + lt;
            let display = v[..lt].trim().trim_matches('"').trim();
            let display = (!display.is_empty()).then(|| display.to_string());
            (display, &v[lt + 1..gt], &v[gt + 1..])
        } else {
            // addr-spec: the URI cannot carry parameters; they belong to the header.
            match v.find(';') {
                Some(i) => (None, &v[..i], &v[i..]),
                None => (None, v, ""),
            }
        };
        if uri.trim().is_empty() {
            return Err(bad("empty URI"));
        }
        let params = split_params(rest)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect();
        Ok(NameAddr {
            display,
            uri: uri.trim().to_string(),
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag")
    }

    pub fn parsed_uri(&self) -> Result<Uri, WireError> {
        Uri::parse(&self.uri)
    }
}

fn find_unquoted(s: &str, needle: char) -> Option<usize> {
    let mut in_quotes = false;
    for (i, c) in s.char_indices() {
        if c == '"' {
            in_quotes = !in_quotes;
        } else if c == needle && !in_quotes {
            return Some(i);
        }
    }
    None
}

/// Typed access to the headers every SIP message carries (RFC 3261 §8.1.1).
impl Message {
    fn required(&self, header: &'static str) -> Result<&str, WireError> {
        self.headers
            .get(header)
            .ok_or(WireError::MissingHeader { header })
    }

    pub fn call_id(&self) -> Result<&str, WireError> {
        self.required("Call-ID").map(str::trim)
    }

    pub fn cseq(&self) -> Result<CSeq, WireError> {
        CSeq::parse(self.required("CSeq")?)
    }

    pub fn top_via(&self) -> Result<Via, WireError> {
        let v = self
            .headers
            .values("Via")
            .next()
            .ok_or(WireError::MissingHeader { header: "Via" })?;
        Via::parse(v)
    }

    pub fn from_header(&self) -> Result<NameAddr, WireError> {
        NameAddr::parse("From", self.required("From")?)
    }

    pub fn to_header(&self) -> Result<NameAddr, WireError> {
        NameAddr::parse("To", self.required("To")?)
    }

    /// Every Contact value, in order (only the first counts for Direct Routing).
    pub fn contacts(&self) -> Result<Vec<NameAddr>, WireError> {
        self.headers
            .values("Contact")
            .map(|v| NameAddr::parse("Contact", v))
            .collect()
    }

    pub fn max_forwards(&self) -> Result<Option<u32>, WireError> {
        self.headers
            .get("Max-Forwards")
            .map(|v| {
                v.trim().parse().map_err(|_| WireError::BadHeaderValue {
                    header: "Max-Forwards",
                    value: v.to_string(),
                    reason: "not an integer".into(),
                })
            })
            .transpose()
    }

    /// Check that the headers RFC 3261 §8.1.1 requires are present and
    /// readable: what a UA checks before it hands a request to a transaction.
    pub fn validate(&self) -> Result<(), WireError> {
        self.call_id()?;
        let cseq = self.cseq()?;
        self.top_via()?;
        self.from_header()?;
        self.to_header()?;
        if let Some(method) = self.method() {
            // §8.2.2.x / §16.3: the CSeq method must match the request method.
            if *method != cseq.method {
                return Err(WireError::BadHeaderValue {
                    header: "CSeq",
                    value: self.headers.get("CSeq").unwrap_or_default().to_string(),
                    reason: format!("method does not match request method {method}"),
                });
            }
            Uri::parse(self.request_uri().unwrap_or_default())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_reads_transport_sent_by_branch_and_rport() {
        let v =
            Via::parse("SIP/2.0/tls sbc1.adatum.biz:5058;alias;branch=z9hG4bKac21;rport").unwrap();
        assert_eq!(v.transport, "TLS");
        assert_eq!(v.host, "sbc1.adatum.biz");
        assert_eq!(v.port, Some(5058));
        assert_eq!(v.branch.as_deref(), Some("z9hG4bKac21"));
        assert!(v.rport);
        assert!(Via::parse("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1").is_ok());
        assert!(Via::parse("SIP/3.0/UDP a").is_err());
        assert!(Via::parse("SIP/2.0/UDP a:notaport").is_err());
    }

    #[test]
    fn contact_keeps_teams_x_c_value_whole() {
        let raw =
            "<sip:api-du-a-euwe.pstnhub.microsoft.com:443;x-i=ab12;x-c=0a1b/d/8/ff00>;isfocus";
        let c = NameAddr::parse("Contact", raw).unwrap();
        assert_eq!(
            c.uri,
            "sip:api-du-a-euwe.pstnhub.microsoft.com:443;x-i=ab12;x-c=0a1b/d/8/ff00"
        );
        assert_eq!(c.param("isfocus"), Some(""));
    }

    #[test]
    fn name_addr_with_display_and_tag() {
        let f = NameAddr::parse("From", "\"Alice <x>\" <tel:+4930123456>;tag=77").unwrap();
        assert_eq!(f.display.as_deref(), Some("Alice <x>"));
        assert_eq!(f.tag(), Some("77"));
        assert_eq!(f.parsed_uri().unwrap().user(), Some("+4930123456"));
    }

    #[test]
    fn cseq_must_be_number_and_method() {
        assert_eq!(CSeq::parse("1 INVITE").unwrap().seq, 1);
        assert!(CSeq::parse("x INVITE").is_err());
        assert!(CSeq::parse("1").is_err());
        assert!(CSeq::parse("99999999999 INVITE").is_err());
    }
}
