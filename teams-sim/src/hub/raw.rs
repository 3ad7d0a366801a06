//! The hub reads what an SBC sent as Microsoft's proxy would: from the
//! bytes as received, not through the SIP stack's typed parse that the
//! SBC under test shares with us. A bug in the shared layer then shows up
//! as a refusal here instead of two wrongs agreeing. URIs are read by
//! rsip, a parser of its own.
//!
//! Deliberately small: the start line, header lines (unfolded, RFC 3261
//! §7.3.1; names compared case-insensitively with the compact forms of
//! §7.3.3), the body, and `Content-Length` checked against it.

use std::fmt;

/// A request or response as the bytes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub start_line: String,
    /// Header lines in order: the name exactly as written, the value trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawError(pub String);

impl fmt::Display for RawError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const COMPACT: &[(&str, &str)] = &[
    ("f", "from"),
    ("t", "to"),
    ("m", "contact"),
    ("i", "call-id"),
    ("v", "via"),
    ("l", "content-length"),
    ("c", "content-type"),
    ("k", "supported"),
    ("r", "refer-to"),
    ("b", "referred-by"),
];

fn same_header(written: &str, wanted: &str) -> bool {
    let w = written.trim();
    if w.eq_ignore_ascii_case(wanted) {
        return true;
    }
    COMPACT
        .iter()
        .any(|(short, full)| w.eq_ignore_ascii_case(short) && full.eq_ignore_ascii_case(wanted))
}

impl RawMessage {
    pub fn read(bytes: &[u8]) -> Result<RawMessage, RawError> {
        let bad = |s: &str| RawError(s.to_string());
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| bad("no CRLFCRLF after the headers"))?;
        let head =
            std::str::from_utf8(&bytes[..end]).map_err(|_| bad("header bytes are not UTF-8"))?;
        let body = bytes[end + 4..].to_vec();
        let mut lines = head.split("\r\n");
        let start_line = lines.next().unwrap_or_default().to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // Folded: continues the previous header's value.
                let last = headers
                    .last_mut()
                    .ok_or_else(|| bad("folded first header line"))?;
                last.1.push(' ');
                last.1.push_str(line.trim());
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| RawError(format!("header line without a colon: {line:?}")))?;
            headers.push((name.trim_end().to_string(), value.trim().to_string()));
        }
        let m = RawMessage {
            start_line,
            headers,
            body,
        };
        if let Some(cl) = m.first("Content-Length") {
            let declared: usize = cl
                .parse()
                .map_err(|_| RawError(format!("Content-Length {cl:?} is not a number")))?;
            if declared != m.body.len() {
                return Err(RawError(format!(
                    "Content-Length {declared} but {} body bytes",
                    m.body.len()
                )));
            }
        }
        Ok(m)
    }

    /// Every value of header `name` in order, comma lists split outside
    /// `<...>` and quotes.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| same_header(n, name))
            .flat_map(|(_, v)| split_top_level(v))
            .collect()
    }

    /// Each header line `name` as written (its value, trimmed), not split
    /// at commas: for values compared byte for byte.
    pub fn lines(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| same_header(n, name))
            .map(|(_, v)| v.trim())
            .collect()
    }

    pub fn first(&self, name: &str) -> Option<&str> {
        self.values(name).into_iter().next()
    }

    pub fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| same_header(n, name))
    }

    /// The Request-URI, for a request.
    pub fn request_uri(&self) -> Option<&str> {
        let mut parts = self.start_line.split(' ');
        let _method = parts.next()?;
        parts.next()
    }
}

fn split_top_level(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut start) = (false, false, 0);
    for (i, c) in v.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(v[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// The URI of a name-addr or addr-spec value: inside `<...>`, else up to
/// the first `;` (RFC 3261 §20.10).
pub fn uri_of(value: &str) -> &str {
    let v = value.trim();
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v.split(';').next().unwrap_or(v).trim(),
    }
}

/// Host and port of a SIP URI, read by rsip; whether the host is an IP.
pub fn host_of(uri: &str) -> Result<(String, bool, Option<u16>), RawError> {
    let u = rsip::Uri::try_from(uri).map_err(|e| RawError(format!("{uri}: {e}")))?;
    let is_ip = matches!(u.host_with_port.host, rsip::Host::IpAddr(_));
    let port = u.host_with_port.port.map(|p| *p.value());
    Ok((u.host_with_port.host.to_string(), is_ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_from_the_bytes_as_written() {
        let raw = b"INVITE sip:+4989000001@sip.pstnhub.microsoft.com SIP/2.0\r\n\
            m: <sip:sbc.example.com:5061;transport=tls>,\r\n <sip:other.example.com>\r\n\
            RECORD-ROUTE: <sip:a.example.com;lr>\r\nContent-Length: 3\r\n\r\nabc";
        let m = RawMessage::read(raw).unwrap();
        assert_eq!(
            m.values("Contact"),
            [
                "<sip:sbc.example.com:5061;transport=tls>",
                "<sip:other.example.com>"
            ]
        );
        assert_eq!(m.first("Record-Route"), Some("<sip:a.example.com;lr>"));
        assert_eq!(
            m.request_uri(),
            Some("sip:+4989000001@sip.pstnhub.microsoft.com")
        );
        let (host, ip, port) = host_of(uri_of(m.values("Contact")[0])).unwrap();
        assert_eq!(
            (host.as_str(), ip, port),
            ("sbc.example.com", false, Some(5061))
        );
        assert!(host_of("sip:192.0.2.1:5061").unwrap().1);
    }

    #[test]
    fn a_content_length_that_lies_is_an_error() {
        let raw = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 10\r\n\r\nabc";
        assert!(RawMessage::read(raw).is_err());
        assert!(RawMessage::read(b"OPTIONS sip:x SIP/2.0\r\nbroken\r\n\r\n").is_err());
    }
}
