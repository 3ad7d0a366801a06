//! A SIP message: start line, headers in order, body (RFC 3261 §7).
//!
//! Parsing is strict where the RFC is (version, header syntax, the body
//! length declared by `Content-Length`) and tolerant where it allows
//! (compact names, folded lines, whitespace before the colon, bare LF line
//! ends from lax peers). Serialising always writes CRLF and a correct
//! `Content-Length`.

use super::error::WireError;
use super::header::{is_token_char, Header, Headers};
use std::fmt;

/// The largest message accepted by default: 64 KiB, far above the ~3 KB
/// INVITEs with large SDP that the hub sends, and small enough that a peer
/// cannot make us buffer without bound.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;

/// SIP methods: RFC 3261 plus the extensions Direct Routing uses, and any
/// other token (extension methods are legal, RFC 3261 §27.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Refer,
    Notify,
    Subscribe,
    Info,
    Update,
    Prack,
    Message,
    Publish,
    Other(String),
}

impl Method {
    pub fn parse(s: &str) -> Result<Method, &'static str> {
        if s.is_empty() || !s.chars().all(is_token_char) {
            return Err("method is not a token");
        }
        // Methods are case-sensitive (RFC 3261 §7.1).
        Ok(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_string()),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD Request-URI SIP/2.0`; the URI is kept as text (see
    /// [`super::uri::Uri`] for a typed reading).
    Request { method: Method, uri: String },
    /// `SIP/2.0 code reason`.
    Response { code: u16, reason: String },
}

/// A parsed SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Message {
    pub fn request(method: Method, uri: impl Into<String>) -> Message {
        Message {
            start: StartLine::Request {
                method,
                uri: uri.into(),
            },
            headers: Headers::default(),
            body: Vec::new(),
        }
    }

    pub fn response(code: u16, reason: impl Into<String>) -> Message {
        Message {
            start: StartLine::Response {
                code,
                reason: reason.into(),
            },
            headers: Headers::default(),
            body: Vec::new(),
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The Request-URI of a request, as text.
    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// Replace the body and keep `Content-Type` in step with it.
    pub fn set_body(&mut self, content_type: &str, body: Vec<u8>) {
        if body.is_empty() {
            self.headers.remove("Content-Type");
        } else {
            self.headers.set("Content-Type", content_type);
        }
        self.body = body;
    }

    /// Parse one complete message: a datagram, or a frame cut from a stream
    /// by [`super::framing::StreamFramer`]. When `Content-Length` is present
    /// the body must be exactly that long.
    pub fn parse(bytes: &[u8]) -> Result<Message, WireError> {
        Self::parse_with_limit(bytes, DEFAULT_MAX_MESSAGE)
    }

    pub fn parse_with_limit(bytes: &[u8], limit: usize) -> Result<Message, WireError> {
        if bytes.len() > limit {
            return Err(WireError::TooLarge { limit });
        }
        let (head_len, body_start) = find_header_end(bytes).ok_or(WireError::NoHeaderEnd)?;
        let mut msg = parse_head(&bytes[..head_len])?;
        let body = &bytes[body_start..];
        match content_length(&msg.headers)? {
            Some(declared) if declared != body.len() => {
                return Err(WireError::BodyLength {
                    declared,
                    actual: body.len(),
                })
            }
            _ => {}
        }
        msg.body = body.to_vec();
        Ok(msg)
    }

    /// Serialise with CRLF line ends. `Content-Length` always states the
    /// real body length: an existing header (even in compact form) is
    /// rewritten in place, a missing one is appended.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                out.extend_from_slice(format!("{method} {uri} SIP/2.0\r\n").as_bytes())
            }
            StartLine::Response { code, reason } => {
                out.extend_from_slice(format!("SIP/2.0 {code} {reason}\r\n").as_bytes())
            }
        }
        let len = self.body.len().to_string();
        let mut wrote_length = false;
        for h in &self.headers.0 {
            // A second Content-Length is left out whole (the fuzzer found
            // its name and ': ' written before it was skipped).
            if h.is("Content-Length") && wrote_length {
                continue;
            }
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            if h.is("Content-Length") {
                wrote_length = true;
                out.extend_from_slice(len.as_bytes());
            } else {
                out.extend_from_slice(h.value.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        if !wrote_length {
            out.extend_from_slice(format!("Content-Length: {len}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// A one-line summary for logs and ladders: `INVITE sip:...` or `200 OK`.
    pub fn summary(&self) -> String {
        match &self.start {
            StartLine::Request { method, uri } => format!("{method} {uri}"),
            StartLine::Response { code, reason } => format!("{code} {reason}"),
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Where the header section ends: `(length of the head without the blank
/// line, offset of the body)`. Accepts CRLFCRLF and, leniently, LFLF.
pub(crate) fn find_header_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            if bytes.get(i + 1) == Some(&b'\n') {
                return Some((i + 1, i + 2));
            }
            if bytes.get(i + 1) == Some(&b'\r') && bytes.get(i + 2) == Some(&b'\n') {
                return Some((i + 1, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// The declared body length, if the header is present.
pub(crate) fn content_length(headers: &Headers) -> Result<Option<usize>, WireError> {
    let mut found: Option<usize> = None;
    for h in headers.0.iter().filter(|h| h.is("Content-Length")) {
        let v = h.value.trim();
        let n: usize = v.parse().map_err(|_| WireError::BadHeaderValue {
            header: "Content-Length",
            value: v.to_string(),
            reason: "not a non-negative integer".into(),
        })?;
        if let Some(prev) = found {
            if prev != n {
                return Err(WireError::BadHeaderValue {
                    header: "Content-Length",
                    value: v.to_string(),
                    reason: format!("conflicts with an earlier Content-Length of {prev}"),
                });
            }
        }
        found = Some(n);
    }
    Ok(found)
}

/// Parse the start line and headers (everything before the blank line).
pub(crate) fn parse_head(head: &[u8]) -> Result<Message, WireError> {
    let text = std::str::from_utf8(head).map_err(|_| WireError::NotUtf8 {
        part: "header section",
    })?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    // RFC 3261 §25.1: header text is printable UTF-8, SP and HTAB; a bare
    // CR, a NUL or another control character would be echoed into our
    // responses (the fuzzer's `branch=z9hG4bK1\rX-Injected: 1` came back
    // as a header of its own in the 200).
    let control = |l: &str| l.chars().any(|c| c.is_control() && c != '\t');
    if control(first) {
        return Err(WireError::BadStartLine {
            line: first.to_string(),
            reason: "a control character in the start line",
        });
    }
    let start = parse_start_line(first)?;
    let mut headers: Vec<Header> = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if control(line) {
            return Err(WireError::BadHeaderLine {
                line: line.to_string(),
                reason: "a control character (bare CR, NUL...) in a header line",
            });
        }
        if line.starts_with([' ', '\t']) {
            // RFC 3261 §7.3.1: a line starting with whitespace continues the
            // previous header; the fold is replaced by a single space.
            let prev = headers.last_mut().ok_or_else(|| WireError::BadHeaderLine {
                line: line.to_string(),
                reason: "continuation line before any header",
            })?;
            let more = line.trim();
            if !prev.value.is_empty() && !more.is_empty() {
                prev.value.push(' ');
            }
            prev.value.push_str(more);
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| WireError::BadHeaderLine {
                line: line.to_string(),
                reason: "no colon",
            })?;
        // HCOLON allows whitespace between the name and the colon.
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.chars().all(is_token_char) {
            return Err(WireError::BadHeaderLine {
                line: line.to_string(),
                reason: "header name is not a token",
            });
        }
        headers.push(Header::new(name, value.trim()));
    }
    Ok(Message {
        start,
        headers: Headers(headers),
        body: Vec::new(),
    })
}

fn parse_start_line(line: &str) -> Result<StartLine, WireError> {
    let bad = |reason| WireError::BadStartLine {
        line: line.to_string(),
        reason,
    };
    if let Some(rest) = line.strip_prefix("SIP/") {
        let (version, rest) = rest.split_once(' ').ok_or(bad("no status code"))?;
        if version != "2.0" {
            return Err(WireError::UnsupportedVersion {
                version: format!("SIP/{version}"),
            });
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("status code is not three digits"));
        }
        let code: u16 = code
            .parse()
            .map_err(|_| bad("status code is not a number"))?;
        if !(100..=699).contains(&code) {
            return Err(bad("status code outside 100-699"));
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_string(),
        });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected `METHOD URI SIP/2.0`"));
    };
    let method = Method::parse(method).map_err(bad)?;
    if uri.is_empty() || !uri.contains(':') {
        return Err(bad("Request-URI has no scheme"));
    }
    if !version.starts_with("SIP/") {
        return Err(bad("no SIP version"));
    }
    if version != "SIP/2.0" {
        return Err(WireError::UnsupportedVersion {
            version: version.to_string(),
        });
    }
    Ok(StartLine::Request {
        method,
        uri: uri.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &str = "OPTIONS sip:sip.pstnhub.microsoft.com:5061 SIP/2.0\r\n\
        Via: SIP/2.0/TLS sbc1.adatum.biz:5058;alias;branch=z9hG4bKac2121518978\r\n\
        Max-Forwards: 68\r\n\
        From: <sip:sbc1.adatum.biz:5058>;tag=1\r\n\
        To: <sip:sip.pstnhub.microsoft.com:5061>\r\n\
        Call-ID: abc\r\n\
        CSeq: 1 OPTIONS\r\n\
        Contact: <sip:sbc1.adatum.biz:5058;transport=tls>\r\n\
        Content-Length: 0\r\n\r\n";

    /// Three of the fuzzer's findings (fuzz/regressions/sip_message-*):
    /// a bare CR that would be echoed as a header of its own, a second
    /// Content-Length serialised as a nameless line, a fold after an empty
    /// value that was not a fixpoint. Each red before.
    #[test]
    fn fuzz_findings_control_characters_duplicate_length_and_folds() {
        let injected = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\rX-Injected: 1\r\n\
                        Call-ID: c\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\n\r\n";
        let e = Message::parse(injected.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("control character"), "{e}");
        assert!(Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nX: a\0b\r\n\r\n").is_err());
        let dup = b"S : SIP/2.0\na:\nContent-Length:0\np:\nContent-Length:0\n\n";
        let m = Message::parse(dup).unwrap();
        let again = Message::parse(&m.to_bytes()).unwrap();
        assert_eq!(again.to_bytes(), m.to_bytes());
        let folded = Message::parse(b"E : SIP/2.0\nT:\n \n\n").unwrap();
        assert_eq!(folded.headers.get("To"), Some(""));
        let once = folded.to_bytes();
        assert_eq!(Message::parse(&once).unwrap().to_bytes(), once);
    }

    #[test]
    fn parses_the_documented_options() {
        let m = Message::parse(OPTIONS.as_bytes()).unwrap();
        assert_eq!(m.method(), Some(&Method::Options));
        assert_eq!(m.request_uri(), Some("sip:sip.pstnhub.microsoft.com:5061"));
        assert_eq!(m.headers.get("max-forwards"), Some("68"));
        assert_eq!(m.to_bytes(), OPTIONS.as_bytes());
    }

    #[test]
    fn folded_and_compact_headers_are_read() {
        let raw = "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1\r\nSubject: one\r\n  two\r\nl : 0\r\n\r\n";
        let m = Message::parse(raw.as_bytes()).unwrap();
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.headers.get("Via"), Some("SIP/2.0/UDP a;branch=z9hG4bK1"));
        assert_eq!(m.headers.get("Subject"), Some("one two"));
        assert_eq!(m.headers.get("Content-Length"), Some("0"));
    }

    #[test]
    fn body_longer_or_shorter_than_declared_is_an_error() {
        let long = "SIP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nabc";
        assert_eq!(
            Message::parse(long.as_bytes()),
            Err(WireError::BodyLength {
                declared: 2,
                actual: 3
            })
        );
        let short = "SIP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nabc";
        assert_eq!(
            Message::parse(short.as_bytes()),
            Err(WireError::BodyLength {
                declared: 5,
                actual: 3
            })
        );
    }

    #[test]
    fn bad_start_lines_say_why() {
        for (raw, want) in [
            ("HELLO\r\n\r\n", "expected `METHOD URI SIP/2.0`"),
            ("SIP/2.0 2000 OK\r\n\r\n", "status code is not three digits"),
            ("INVITE nouri SIP/2.0\r\n\r\n", "Request-URI has no scheme"),
        ] {
            match Message::parse(raw.as_bytes()) {
                Err(WireError::BadStartLine { reason, .. }) => assert_eq!(reason, want),
                other => panic!("{raw:?} gave {other:?}"),
            }
        }
        assert!(matches!(
            Message::parse(b"INVITE sip:a SIP/3.0\r\n\r\n"),
            Err(WireError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn oversized_message_is_refused_with_413() {
        let err = Message::parse_with_limit(OPTIONS.as_bytes(), 100).unwrap_err();
        assert_eq!(err, WireError::TooLarge { limit: 100 });
        assert_eq!(err.status_code(), 413);
    }

    #[test]
    fn serialising_fixes_content_length() {
        let mut m = Message::response(200, "OK");
        m.headers.push("l", "99");
        m.set_body("application/sdp", b"v=0\r\n".to_vec());
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert!(text.contains("l: 5\r\n"), "{text}");
        assert!(Message::parse(text.as_bytes()).is_ok());
    }
}
