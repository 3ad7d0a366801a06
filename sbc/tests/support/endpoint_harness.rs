//! The SBC's sans-IO SIP input path, driven with hostile datagrams, and the
//! checks made on what comes out. Shared by `sbc/tests/hostile_input.rs`
//! (proptest) and `fuzz/fuzz_targets/endpoint_input.rs` (libFuzzer), which
//! include this file with `#[path]`, so both run exactly the same path.
//!
//! The path is the one `sbc::driver::run` and the UDP receive loop take:
//! all-whitespace datagrams are dropped, `Message::parse_with_limit` →
//! `UserAgent::handle_message`, an error → `UserAgent::handle_malformed`;
//! then `poll_transmit`/`poll_event` are drained and `handle_timeout` runs
//! at later instants. On top of the UA sits a small role that answers like
//! a party would (200 to out-of-dialog requests, an SDP answer or 488 to
//! INVITEs, 202/200 in dialogs), so that every request has an answerer. The
//! reference SBC's own role (`sbc::b2bua::Sbc`) is `pub(crate)` and only
//! runs inside the async driver: it cannot be driven from here.

// A fake clock needs an origin; nothing here waits on it.
#![allow(clippy::disallowed_methods, dead_code)]

use sbc::sip::endpoint::{Destination, EndpointConfig, LocalPorts, Transmit};
use sbc::sip::rng::SeededRng;
use sbc::sip::routing::RoutingTable;
use sbc::sip::sdp::offer_answer::{Codec, LocalMedia};
use sbc::sip::sdp::{Origin, SessionDescription};
use sbc::sip::session::{Reply, SessionConfig, SessionEvent, SessionTimerConfig};
use sbc::sip::transport::{Source, TransportKind};
use sbc::sip::ua::{UaConfig, UaEvent, UserAgent};
use sbc::sip::wire::{Message, Method, StartLine, WireError, DEFAULT_MAX_MESSAGE};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the hostile peer sends from, and where we listen.
pub const LOCAL: &str = "192.0.2.1:5060";
pub const REMOTE: &str = "198.51.100.7:5060";

/// How many role/UA turns, or timer runs, one step may take before it is
/// called a livelock.
const MAX_TURNS: usize = 10_000;

/// Later instants at which the UA's timers are run, after the last datagram.
const LATER: [u64; 6] = [1, 5, 33, 65, 200, 4000];

pub struct Harness {
    pub ua: UserAgent,
    pub start: Instant,
    pub now: Instant,
    /// Every transmit so far, in order.
    pub sent: Vec<Transmit>,
}

/// The source of a datagram from the hostile peer (UDP: answers are due).
pub fn source() -> Source {
    Source {
        transport: TransportKind::Udp,
        local: LOCAL.parse().unwrap(),
        remote: REMOTE.parse().unwrap(),
        connection: None,
        peer_names: Arc::default(),
    }
}

fn user_agent(seed: u64) -> UserAgent {
    let mut routing = RoutingTable::new();
    for name in [
        "sip.pstnhub.microsoft.com",
        "sip2.pstnhub.microsoft.com",
        "sip3.pstnhub.microsoft.com",
        "sbc1.adatum.biz",
        "carrier.example.net",
    ] {
        routing.insert(name, "203.0.113.9".parse().unwrap());
    }
    let mut session = SessionConfig::new("<sip:sbc1.adatum.biz:5061;transport=tls>");
    session.supported = vec!["replaces".into(), "timer".into()];
    session.timer = Some(SessionTimerConfig::default());
    let config = UaConfig {
        endpoint: EndpointConfig::new("sbc1.adatum.biz"),
        session,
    };
    let ports = LocalPorts {
        udp: Some(5060),
        tcp: None,
        tls: Some(5061),
    };
    UserAgent::new(config, ports, routing, SeededRng::new(seed))
}

fn origin() -> Origin {
    Origin {
        username: "drlab".into(),
        session_id: 1,
        session_version: 1,
        address: "192.0.2.1".into(),
    }
}

/// What this side can do: SRTP toward a secure offer (the Teams leg), RTP
/// toward a plain one (the carrier leg).
fn local_media(secure: bool) -> LocalMedia {
    LocalMedia {
        address: "192.0.2.1".into(),
        port: 40000,
        codecs: vec![Codec::pcmu(), Codec::pcma(), Codec::telephone_event()],
        srtp_key: secure.then(|| "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz".into()),
        rtcp_mux: true,
        ice: None,
    }
}

/// An SDP answer to the offer in `body`, or why there is none.
fn answer(body: &[u8]) -> Option<SessionDescription> {
    let text = std::str::from_utf8(body).ok()?;
    let offer = SessionDescription::parse(text).ok()?;
    let secure = offer.media.iter().any(|m| m.is_secure());
    local_media(secure).answer(&offer, origin()).ok()
}

impl Default for Harness {
    fn default() -> Self {
        Self::new(7)
    }
}

impl Harness {
    pub fn new(seed: u64) -> Self {
        let start = Instant::now();
        Harness {
            ua: user_agent(seed),
            start,
            now: start,
            sent: Vec::new(),
        }
    }

    /// Feed one datagram the way the UDP receive loop and the driver do,
    /// let the role answer, and return what was transmitted meanwhile.
    pub fn feed(&mut self, raw: &[u8]) -> Vec<Transmit> {
        let before = self.sent.len();
        self.now += Duration::from_millis(10);
        // RFC 5626 §4.4.1 keep-alives and stray CRLFs are not messages.
        if !raw.iter().all(|b| b.is_ascii_whitespace()) {
            match Message::parse_with_limit(raw, DEFAULT_MAX_MESSAGE) {
                Ok(message) => self
                    .ua
                    .handle_message(self.now, message, raw.to_vec(), source()),
                Err(error) => self.ua.handle_malformed(self.now, error, raw, source()),
            }
            self.settle();
        }
        self.sent[before..].to_vec()
    }

    /// Run the UA's timers up to `LATER` seconds after the start, in
    /// deadline order. Returns what was transmitted.
    pub fn run_timers(&mut self) -> Result<Vec<Transmit>, String> {
        let before = self.sent.len();
        for secs in LATER {
            let until = self.start + Duration::from_secs(secs);
            let mut turns = 0;
            while let Some(due) = self.ua.poll_timeout().filter(|d| *d <= until) {
                turns += 1;
                if turns > MAX_TURNS {
                    return Err(format!(
                        "timer livelock: poll_timeout stays at {:?} after handle_timeout",
                        due - self.start
                    ));
                }
                self.now = self.now.max(due);
                self.ua.handle_timeout(self.now);
                self.settle();
            }
            self.now = self.now.max(until);
        }
        Ok(self.sent[before..].to_vec())
    }

    /// Drain the UA and let the role act until both are at rest.
    fn settle(&mut self) {
        for _ in 0..MAX_TURNS {
            let mut busy = false;
            while let Some(t) = self.ua.poll_transmit() {
                self.sent.push(t);
                busy = true;
            }
            while let Some(ev) = self.ua.poll_event() {
                self.role(ev);
                busy = true;
            }
            if !busy {
                return;
            }
        }
        panic!("the UA and the role never came to rest");
    }

    /// A party that answers everything: see the module doc. Errors from the
    /// UA (a session already ended, a request it refuses to send) are the
    /// UA's business, not a finding.
    fn role(&mut self, ev: UaEvent) {
        let now = self.now;
        match ev {
            UaEvent::Request { key, request, .. } => {
                let code = match request.method() {
                    Some(Method::Refer) => 202,
                    Some(Method::Subscribe | Method::Publish) => 489,
                    _ => 200,
                };
                self.ua.reply(now, &key, code, "OK", Vec::new());
            }
            UaEvent::Session { id, event } => match event {
                SessionEvent::Incoming { request, .. } => {
                    let _ = self.ua.provisional(now, id, 0, Reply::new(180, "Ringing"));
                    match answer(&request.body) {
                        Some(sdp) => {
                            let _ = self.ua.accept(now, id, 0, Reply::new(200, "OK").sdp(sdp));
                        }
                        None => {
                            let _ = self
                                .ua
                                .reject(now, id, Reply::new(488, "Not Acceptable Here"));
                        }
                    }
                }
                SessionEvent::ReInvite { offer, .. } => {
                    let reply = match offer.map(|o| {
                        let secure = o.media.iter().any(|m| m.is_secure());
                        local_media(secure).answer(&o, origin())
                    }) {
                        Some(Ok(sdp)) => Some(Reply::new(200, "OK").sdp(sdp)),
                        Some(Err(_)) => None,
                        None => Some(Reply::new(200, "OK").sdp(local_media(true).offer(origin()))),
                    };
                    let _ = match reply {
                        Some(r) => self.ua.answer_reinvite(now, id, r),
                        None => {
                            self.ua
                                .reject_reinvite(now, id, Reply::new(488, "Not Acceptable Here"))
                        }
                    };
                }
                SessionEvent::Request { key, request } => {
                    let code = if request.method() == Some(&Method::Refer) {
                        202
                    } else {
                        200
                    };
                    let _ = self.ua.respond_in_dialog(
                        now,
                        id,
                        key,
                        &request,
                        Reply::new(code, if code == 202 { "Accepted" } else { "OK" }),
                    );
                }
                _ => {}
            },
            _ => {}
        }
    }
}

// ----- checks -----

/// What the RFC (and the endpoint's documented contract) says is due for
/// one datagram from a peer we had no exchange with, over UDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// No response at all: a response input (RFC 3261 §18.1.2), an ACK
    /// (§17.2.1), or a request without a readable Via to answer to (§18.2.2).
    NoResponse,
    /// Exactly one response, with this status: a request that is broken in
    /// a way the endpoint answers (§8.2, §21.4.1 400, §21.4.14 413,
    /// §21.4.17 416, §21.5.6 505), and no other response to it.
    Error(u16),
    /// A well-formed request: some response (provisional or final) is due.
    Answer,
    /// Cannot tell from the bytes alone (a broken start line or header
    /// line): no requirement beyond the well-formedness of what is sent.
    Unknown,
}

/// The responses among `sent`.
fn responses<'a>(sent: &'a [Transmit]) -> impl Iterator<Item = &'a Transmit> + 'a {
    sent.iter().filter(|t| !t.message.is_request())
}

/// What is due for datagram `raw` on its own (first contact, UDP).
pub fn due(raw: &[u8]) -> Due {
    due_and_head(raw).0
}

/// `due`, and the request head as read to decide it (when there is one).
fn due_and_head(raw: &[u8]) -> (Due, Option<Message>) {
    if raw.iter().all(|b| b.is_ascii_whitespace()) {
        return (Due::NoResponse, None);
    }
    match Message::parse_with_limit(raw, DEFAULT_MAX_MESSAGE) {
        Ok(m) => (due_parsed(&m), Some(m)),
        Err(e) => due_unparsed(raw, &e),
    }
}

/// RFC 3261 §8.2.6.2: a response copies From, Call-ID, CSeq and Via from
/// the request, and To (a tag may be added). Only headers the request has.
fn check_echo(request: &Message, response: &Message) -> Result<(), String> {
    let code = response.status().unwrap_or_default();
    for h in ["From", "Call-ID", "CSeq", "Via"] {
        let (a, b) = (request.headers.get(h), response.headers.get(h));
        if a.is_some() && a != b {
            return Err(format!("response {code} has {h} {b:?}, the request {a:?}"));
        }
    }
    if let (Some(a), b) = (request.headers.get("To"), response.headers.get("To")) {
        if !b.is_some_and(|b| b.starts_with(a)) {
            return Err(format!("response {code} has To {b:?}, the request {a:?}"));
        }
    }
    Ok(())
}

fn due_parsed(m: &Message) -> Due {
    if !m.is_request() || m.method() == Some(&Method::Ack) {
        return Due::NoResponse;
    }
    let Ok(via) = m.top_via() else {
        // Validation fails on the Via itself: nowhere to send a response.
        return Due::NoResponse;
    };
    if let Err(e) = m.validate() {
        return Due::Error(e.status_code());
    }
    if via.branch.is_none() {
        // RFC 2543 request: matched by branch only, so answered 400.
        return Due::Error(400);
    }
    Due::Answer
}

/// A request whose head is sound but whose body length, version or size is
/// not is answered with the status of that fault. The head is read here
/// with the endpoint's own rule (CRLF CRLF ends it, Content-Length dropped,
/// version read as 2.0): LF-only messages and broken header lines are left
/// `Unknown`.
fn due_unparsed(raw: &[u8], e: &WireError) -> (Due, Option<Message>) {
    let answerable = matches!(
        e,
        WireError::BodyLength { .. }
            | WireError::UnsupportedVersion { .. }
            | WireError::TooLarge { .. }
            | WireError::BadHeaderValue {
                header: "Content-Length",
                ..
            }
    );
    if !answerable {
        return (Due::Unknown, None);
    }
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (Due::Unknown, None);
    };
    let Ok(text) = std::str::from_utf8(&raw[..end + 4]) else {
        return (Due::Unknown, None);
    };
    let mut lines: Vec<String> = text
        .split("\r\n")
        .filter(|l| {
            !l.split_once(':').is_some_and(|(n, _)| {
                let n = n.trim();
                n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l")
            })
        })
        .map(str::to_string)
        .collect();
    if let Some(first) = lines.first_mut() {
        if first.starts_with("SIP/") {
            return (Due::NoResponse, None);
        }
        if let Some((line, version)) = first.rsplit_once(' ') {
            if version.starts_with("SIP/") {
                *first = format!("{line} SIP/2.0");
            }
        }
    }
    match Message::parse(lines.join("\r\n").as_bytes()) {
        Ok(head) if head.method() == Some(&Method::Ack) => (Due::NoResponse, None),
        Ok(head) if head.top_via().is_ok() => (Due::Error(e.status_code()), Some(head)),
        Ok(_) => (Due::NoResponse, None),
        Err(_) => (Due::Unknown, None),
    }
}

/// The statuses the endpoint sends for a broken request.
pub const ERROR_STATUSES: [u16; 7] = [400, 413, 416, 420, 482, 483, 505];

/// Well-formedness of one transmit: it serialises to bytes our own parser
/// reads back to the same start line; a response's status line is
/// `SIP/2.0 <3 digits> <reason>` with a reason free of control characters
/// (RFC 3261 §25.1 Reason-Phrase), it has a readable top Via (§18.2.2)
/// and goes back where its request came from.
pub fn check_transmit(t: &Transmit) -> Result<(), String> {
    let bytes = t.message.to_bytes();
    let back = Message::parse_with_limit(&bytes, usize::MAX).map_err(|e| {
        format!(
            "a transmit does not parse back: {e}\n{}",
            String::from_utf8_lossy(&bytes)
        )
    })?;
    if back.start != t.message.start {
        return Err(format!(
            "start line changed on the wire: {:?} -> {:?}",
            t.message.start, back.start
        ));
    }
    let StartLine::Response { code, reason } = &t.message.start else {
        return Ok(());
    };
    let line_end = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or("no CRLF after the status line")?;
    let line = &bytes[..line_end];
    let ok_shape = line.len() >= 12
        && line.starts_with(b"SIP/2.0 ")
        && line[8..11].iter().all(u8::is_ascii_digit)
        && line[11] == b' ';
    if !ok_shape || !(100..=699).contains(code) {
        return Err(format!(
            "malformed status line {:?}",
            String::from_utf8_lossy(line)
        ));
    }
    if reason.trim().is_empty() {
        return Err(format!("status {code} without a reason phrase"));
    }
    if reason.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!(
            "status line reason has control characters: {reason:?}"
        ));
    }
    if back.top_via().is_err() {
        return Err(format!("response {code} has no readable top Via"));
    }
    match &t.destination {
        Destination::Reply(s) if s.remote == REMOTE.parse::<SocketAddr>().unwrap() => {}
        other => return Err(format!("response {code} goes to {other:?}")),
    }
    Ok(())
}

/// The checks for one datagram: every transmit is well-formed, and the
/// responses are what `due` says. `fresh`: nothing was fed before, so a
/// well-formed request must be answered; later, it may be a retransmission
/// or an ACK-like absorption, so only the stateless rules apply (a broken
/// request is answered with its error status whatever came before, a
/// response is never answered).
pub fn check_datagram(raw: &[u8], sent: &[Transmit], fresh: bool) -> Result<(), String> {
    for t in sent {
        check_transmit(t)?;
    }
    let codes: Vec<u16> = responses(sent).filter_map(|t| t.message.status()).collect();
    let show = || String::from_utf8_lossy(&raw[..raw.len().min(600)]).into_owned();
    let (due, head) = due_and_head(raw);
    if let (Some(head), Due::Error(_) | Due::Answer) = (&head, &due) {
        if fresh || matches!(due, Due::Error(_)) {
            for t in responses(sent) {
                check_echo(head, &t.message)?;
            }
        }
    }
    match due {
        Due::NoResponse if !codes.is_empty() => Err(format!(
            "responses {codes:?} where none is due, to:\n{}",
            show()
        )),
        Due::Error(code) if codes != [code] => Err(format!(
            "expected exactly one {code}, got {codes:?}, to:\n{}",
            show()
        )),
        Due::Answer if fresh && codes.is_empty() => {
            Err(format!("no response to a well-formed request:\n{}", show()))
        }
        Due::Unknown => match codes.iter().find(|c| !ERROR_STATUSES.contains(c)) {
            Some(c) => Err(format!(
                "a broken request was answered {c}, not an error status, to:\n{}",
                show()
            )),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Feed datagrams in order to a fresh harness, check each, then run the
/// timers and check what they send.
pub fn run_and_check(datagrams: &[&[u8]]) -> Result<(), String> {
    let mut h = Harness::default();
    for (i, raw) in datagrams.iter().enumerate() {
        let sent = h.feed(raw);
        check_datagram(raw, &sent, i == 0).map_err(|e| format!("datagram {i}: {e}"))?;
    }
    for t in h.run_timers()? {
        check_transmit(&t).map_err(|e| format!("after timers: {e}"))?;
    }
    Ok(())
}
