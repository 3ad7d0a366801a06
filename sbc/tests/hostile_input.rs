//! Hostile input on the SBC's SIP input path (issue 14, item 1): the same
//! path and checks as the `endpoint_input` fuzz target
//! (`support/endpoint_harness.rs`), over
//!
//! (a) messages generated from a grammar of the headers and values Direct
//!     Routing traffic carries, then mutated: byte flips, truncation,
//!     duplicated or missing headers, huge values, non-UTF-8 bytes, bad
//!     Content-Length, LF or mixed line ends, a Via without branch,
//!     Max-Forwards 0, an unsupported version, an unsupported URI scheme,
//!     a CSeq method that is not the request's;
//! (b) the minimised crash inputs under `fuzz/regressions/`, if any.
//!
//! Checked for each message: no panic and no livelock; every transmit is
//! well-formed (parses back, status line `SIP/2.0 ddd reason`, a readable
//! Via, sent back to the source); a response input gets no response; a
//! request that fails validation gets exactly one response with its status
//! (400/413/416/505); and, from the mutation alone (not from re-parsing the
//! bytes), the status each single mutation calls for.
//!
//! `cargo test -p sbc --test hostile_input`; PROPTEST_CASES raises the count.

#[path = "support/endpoint_harness.rs"]
mod harness;

use proptest::prelude::*;
use proptest::test_runner::Config;

/// A message before serialising: start line, headers in order, body.
#[derive(Debug, Clone)]
struct Draft {
    request: Option<String>,
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Draft {
    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start).into_bytes();
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    fn is_ack(&self) -> bool {
        self.request.as_deref() == Some("ACK")
    }

    fn position(&self, names: &[&str]) -> Option<usize> {
        self.headers
            .iter()
            .position(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
    }
}

const TEAMS_SDP: &str = "v=0\r\no=- 0 0 IN IP4 52.114.16.1\r\ns=session\r\nc=IN IP4 52.114.16.1\r\n\
b=CT:10000000\r\nt=0 0\r\nm=audio 52884 RTP/SAVP 111 104 9 0 8 101\r\n\
a=rtpmap:111 OPUS/48000/2\r\na=rtpmap:104 SILK/16000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:mqy/fjvSpK2Sw4vnIm2dF5iSOMjDjcI6hMHVZ1Ab|2^31|1:1\r\n\
a=ice-ufrag:Tsuh\r\na=ice-pwd:xrYbX4aoJ+HFmOhUPPRM4OMs\r\na=rtcp-mux\r\na=sendrecv\r\na=ptime:20\r\n";
const CARRIER_SDP: &str = "v=0\r\no=carrier 1234 1 IN IP4 198.51.100.20\r\ns=-\r\n\
c=IN IP4 198.51.100.20\r\nt=0 0\r\nm=audio 30000 RTP/AVP 8 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n";

const METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REFER",
    "NOTIFY",
    "INFO",
    "UPDATE",
    "PRACK",
    "REGISTER",
    "MESSAGE",
    "SUBSCRIBE",
    "PUBLISH",
    "X-MS-EXT",
];
const URIS: &[&str] = &[
    "sip:+4930123456@sbc1.adatum.biz:5061;user=phone;transport=tls",
    "sip:sbc1.adatum.biz:5061",
    "sip:030123456@192.0.2.1:5060",
    "sips:+4989000001@sip.pstnhub.microsoft.com",
    "tel:+4930123456;phone-context=+49",
    // No IPv6 reference: rsip 0.4 refuses `sip:[2001:db8::1]` (see
    // `ipv6_request_uri_is_a_sip_uri` below).
    "sip:api-du-a-euwe.pstnhub.microsoft.com:443;x-i=8f1c;x-c=0a1b/d/8/ff00",
];
const SENT_BY: &[&str] = &[
    "SIP/2.0/TLS 52.114.148.0:5061",
    "SIP/2.0/UDP 198.51.100.20:5060",
    "SIP/2.0/TCP sip-du-a-euwe.pstnhub.microsoft.com",
    "SIP/2.0/udp [2001:db8::7]:5070",
];
const EXTRA: &[(&str, &str)] = &[
    ("Allow", "INVITE,ACK,OPTIONS,CANCEL,BYE,REFER,NOTIFY"),
    ("Supported", "timer, replaces"),
    ("Require", "timer"),
    ("Require", "100rel"),
    ("Session-Expires", "1800;refresher=uac"),
    ("Session-Expires", "30"),
    ("Min-SE", "90"),
    (
        "User-Agent",
        "Microsoft.PSTNHub.SIPProxy v.2024.5.1.2 i.EUWE.8",
    ),
    (
        "Record-Route",
        "<sip:sip-du-a-euwe.pstnhub.microsoft.com:5061;transport=tls;lr>",
    ),
    (
        "Route",
        "<sip:edge.adatum.biz;lr>, <sip:core.adatum.biz;lr>",
    ),
    ("P-Asserted-Identity", "\"Alice\" <tel:+4989000001>"),
    ("Privacy", "id"),
    (
        "Refer-To",
        "<sip:+4989000002@sip.pstnhub.microsoft.com?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>",
    ),
    ("Referred-By", "<sip:+4989000001@sip.pstnhub.microsoft.com>"),
    (
        "Replaces",
        "2f6a2c1e5d4b;to-tag=7d3e9b21c4;from-tag=a6c9e0b3f1",
    ),
    ("Event", "refer"),
    ("Subscription-State", "active;expires=60"),
    ("Reason", "Q.850;cause=16;text=\"Normal call clearing\""),
    ("X-MS-SBC-Host", "sbc1.adatum.biz"),
    (
        "History-Info",
        "<sip:+4930123456@sbc1.adatum.biz?Reason=SIP%3Bcause%3D302>;index=1",
    ),
    ("Accept", "application/sdp, message/sipfrag"),
    (
        "WWW-Authenticate",
        "Digest realm=\"carrier\", nonce=\"6a1b\", qop=\"auth\"",
    ),
];
const STATUSES: &[(u16, &str)] = &[
    (100, "Trying"),
    (180, "Ringing"),
    (183, "Session Progress"),
    (200, "OK"),
    (202, "Accepted"),
    (401, "Unauthorized"),
    (481, "Call/Transaction Does Not Exist"),
    (486, "Busy Here"),
    (487, "Request Terminated"),
    (503, "Service Unavailable"),
];

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]{1,12}"
}

/// A message of the grammar: a request of any method or a response, with
/// the headers a UA requires in random order of the extras, compact names
/// sometimes, and SDP where an offer or answer belongs.
fn draft() -> impl Strategy<Value = Draft> {
    (
        prop::option::weighted(0.8, prop::sample::select(METHODS)),
        prop::sample::select(STATUSES),
        prop::sample::select(URIS),
        prop::sample::select(SENT_BY),
        (token(), token(), token(), prop::option::of(token())),
        (1u32..100_000, 0u32..=70, any::<bool>(), any::<bool>()),
        prop::collection::vec(prop::sample::select(EXTRA), 0..5),
        prop::sample::select(vec![None, Some(TEAMS_SDP), Some(CARRIER_SDP)]),
    )
        .prop_map(
            |(
                method,
                (code, reason),
                uri,
                sent_by,
                (branch, from_tag, call_id, to_tag),
                (seq, mf, compact, rport),
                extra,
                sdp,
            )| {
                let n = |full: &'static str, short: &'static str| {
                    if compact { short } else { full }.to_string()
                };
                let cseq_method = method.unwrap_or("INVITE");
                let mut headers = vec![
                    (
                        n("Via", "v"),
                        format!(
                            "{sent_by};branch=z9hG4bK{branch}{}",
                            if rport { ";rport" } else { "" }
                        ),
                    ),
                    ("Max-Forwards".to_string(), mf.to_string()),
                    (n("From", "f"), format!("\"Caller\" <{uri}>;tag={from_tag}")),
                    (
                        n("To", "t"),
                        match &to_tag {
                            Some(t) => format!("<sip:+4930123456@sbc1.adatum.biz>;tag={t}"),
                            None => "<sip:+4930123456@sbc1.adatum.biz>".to_string(),
                        },
                    ),
                    (n("Call-ID", "i"), format!("{call_id}@192.0.2.9")),
                    ("CSeq".to_string(), format!("{seq} {cseq_method}")),
                    (
                        n("Contact", "m"),
                        "<sip:api-du-a-euwe.pstnhub.microsoft.com:443;x-c=0a1b/d/8/ff00>"
                            .to_string(),
                    ),
                ];
                headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                let body = match (method, sdp) {
                    (Some("INVITE" | "UPDATE" | "ACK" | "PRACK") | None, Some(s)) => {
                        s.as_bytes().to_vec()
                    }
                    (Some("NOTIFY"), _) => b"SIP/2.0 200 OK\r\n".to_vec(),
                    _ => Vec::new(),
                };
                if !body.is_empty() {
                    let ct = if body.starts_with(b"v=") {
                        "application/sdp"
                    } else {
                        "message/sipfrag;version=2.0"
                    };
                    headers.push((n("Content-Type", "c"), ct.to_string()));
                }
                headers.push((n("Content-Length", "l"), body.len().to_string()));
                let start = match method {
                    Some(m) => format!("{m} {uri} SIP/2.0"),
                    None => format!("SIP/2.0 {code} {reason}"),
                };
                Draft {
                    request: method.map(str::to_string),
                    start,
                    headers,
                    body,
                }
            },
        )
}

/// A bad Content-Length.
#[derive(Debug, Clone, Copy)]
enum BadLength {
    Larger,
    Smaller,
    Negative,
    NotANumber,
    Conflicting,
}

#[derive(Debug, Clone)]
enum Mutation {
    // Semantic: what is due follows from the mutation alone.
    NoBranch,
    MaxForwardsZero,
    Version,
    UnsupportedScheme,
    CseqMismatch,
    Remove(&'static str),
    ContentLength(BadLength),
    // Structural: a duplicated header, a huge value.
    Duplicate(prop::sample::Index),
    Huge(prop::sample::Index, usize),
    // Bytes.
    FlipByte(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
    NonUtf8(prop::sample::Index),
    LfOnly,
    MixedLineEnds,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::NoBranch),
        Just(Mutation::MaxForwardsZero),
        Just(Mutation::Version),
        Just(Mutation::UnsupportedScheme),
        Just(Mutation::CseqMismatch),
        prop::sample::select(vec![
            "Via",
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Max-Forwards",
            "Contact"
        ])
        .prop_map(Mutation::Remove),
        prop::sample::select(vec![
            BadLength::Larger,
            BadLength::Smaller,
            BadLength::Negative,
            BadLength::NotANumber,
            BadLength::Conflicting
        ])
        .prop_map(Mutation::ContentLength),
        any::<prop::sample::Index>().prop_map(Mutation::Duplicate),
        (
            any::<prop::sample::Index>(),
            prop_oneof![1000usize..4000, 60_000usize..70_000]
        )
            .prop_map(|(i, n)| Mutation::Huge(i, n)),
        (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::FlipByte(i, x)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        any::<prop::sample::Index>().prop_map(Mutation::NonUtf8),
        Just(Mutation::LfOnly),
        Just(Mutation::MixedLineEnds),
    ]
}

fn names(full: &str) -> Vec<&'static str> {
    match full {
        "Via" => vec!["Via", "v"],
        "From" => vec!["From", "f"],
        "To" => vec!["To", "t"],
        "Call-ID" => vec!["Call-ID", "i"],
        "Contact" => vec!["Contact", "m"],
        "Content-Length" => vec!["Content-Length", "l"],
        "CSeq" => vec!["CSeq"],
        _ => vec!["Max-Forwards"],
    }
}

/// Apply the structural and semantic mutations to the draft, then the byte
/// mutations to its bytes.
fn apply(mut d: Draft, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        match m {
            Mutation::NoBranch => {
                if let Some(i) = d.position(&["Via", "v"]) {
                    let v = d.headers[i].1.clone();
                    d.headers[i].1 = v
                        .split(';')
                        .filter(|p| !p.starts_with("branch="))
                        .collect::<Vec<_>>()
                        .join(";");
                }
            }
            Mutation::MaxForwardsZero => match d.position(&["Max-Forwards"]) {
                Some(i) => d.headers[i].1 = "0".into(),
                None => d.headers.push(("Max-Forwards".into(), "0".into())),
            },
            Mutation::Version => {
                d.start = match &d.request {
                    Some(_) => format!("{} SIP/3.0", d.start.rsplit_once(' ').unwrap().0),
                    None => d.start.replacen("SIP/2.0", "SIP/3.0", 1),
                }
            }
            Mutation::UnsupportedScheme => {
                if let Some(method) = &d.request {
                    d.start = format!("{method} http://sbc1.adatum.biz/call SIP/2.0");
                }
            }
            Mutation::CseqMismatch => {
                if let Some(i) = d.position(&["CSeq"]) {
                    let method = if d.request.as_deref() == Some("OPTIONS") {
                        "INFO"
                    } else {
                        "OPTIONS"
                    };
                    d.headers[i].1 = format!("77 {method}");
                }
            }
            Mutation::Remove(h) => d
                .headers
                .retain(|(k, _)| !names(h).iter().any(|n| k.eq_ignore_ascii_case(n))),
            Mutation::ContentLength(kind) => {
                let i = d.position(&["Content-Length", "l"]);
                let len = d.body.len();
                let value = match kind {
                    BadLength::Larger => (len + 17).to_string(),
                    BadLength::Smaller if len > 0 => (len - 1).to_string(),
                    BadLength::Smaller => {
                        d.body.extend_from_slice(b"trailing");
                        "0".to_string()
                    }
                    BadLength::Negative => "-1".into(),
                    BadLength::NotANumber => "twelve".into(),
                    BadLength::Conflicting => {
                        d.headers
                            .push(("Content-Length".into(), (len + 1).to_string()));
                        len.to_string()
                    }
                };
                match i {
                    Some(i) => d.headers[i].1 = value,
                    None => d.headers.push(("Content-Length".into(), value)),
                }
            }
            Mutation::Duplicate(i) if !d.headers.is_empty() => {
                let h = d.headers[i.index(d.headers.len())].clone();
                d.headers.push(h);
            }
            Mutation::Huge(i, n) if !d.headers.is_empty() => {
                let k = i.index(d.headers.len());
                let fill: String = "x".repeat(*n);
                d.headers[k].1.push_str(&fill);
            }
            _ => {}
        }
    }
    let mut bytes = d.bytes();
    for m in muts {
        match m {
            Mutation::FlipByte(i, x) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] ^= x;
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            Mutation::NonUtf8(i) => {
                let at = i.index(bytes.len() + 1);
                bytes.splice(at..at, [0xff, 0xc3]);
            }
            // Line ends of the head only: the body keeps its length, so
            // Content-Length stays right.
            Mutation::LfOnly | Mutation::MixedLineEnds => {
                let end = bytes
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(bytes.len(), |i| i + 4);
                let (head, body) = bytes.split_at(end);
                let text = String::from_utf8_lossy(head).into_owned();
                let mut out = String::new();
                for (n, line) in text.split("\r\n").enumerate() {
                    if n > 0 {
                        let lf = matches!(m, Mutation::LfOnly) || n % 2 == 1;
                        out.push_str(if lf { "\n" } else { "\r\n" });
                    }
                    out.push_str(line);
                }
                let mut joined = out.into_bytes();
                joined.extend_from_slice(body);
                bytes = joined;
            }
            _ => {}
        }
    }
    bytes
}

/// The responses sent for one datagram fed to a fresh harness.
fn response_codes(bytes: &[u8]) -> Vec<u16> {
    let mut h = harness::Harness::default();
    h.feed(bytes)
        .iter()
        .filter_map(|t| t.message.status())
        .collect()
}

/// What a single semantic mutation of a request calls for, on its own:
/// `Some(codes)` the exact responses due, `None` when it does not say.
fn due_for(d: &Draft, m: &Mutation) -> Option<Vec<u16>> {
    if d.request.is_none() {
        return Some(vec![]);
    }
    if d.is_ack() {
        return Some(vec![]);
    }
    match m {
        // RFC 3261 §8.1.1.7 / this UA matches by branch only: 400.
        Mutation::NoBranch => Some(vec![400]),
        // §21.5.6 505 Version Not Supported, answered on the head read as 2.0.
        Mutation::Version => Some(vec![505]),
        // §8.2.2.1: 416 Unsupported URI Scheme.
        Mutation::UnsupportedScheme => Some(vec![416]),
        // §8.1.1.5 / §8.2.2: CSeq method must match: 400.
        Mutation::CseqMismatch => Some(vec![400]),
        // §8.1.1: a required header missing: 400; without a Via, nowhere to answer.
        Mutation::Remove("Via") => Some(vec![]),
        Mutation::Remove("From" | "To" | "Call-ID" | "CSeq") => Some(vec![400]),
        // §18.3: a datagram shorter than its Content-Length, or a length that
        // is not a number, or two that differ: 400. (A datagram *longer*
        // than its Content-Length is to be cut, §18.3, not refused; the
        // endpoint answers it 400 today, so `Smaller` claims nothing.)
        Mutation::ContentLength(BadLength::Smaller) => None,
        Mutation::ContentLength(_) => Some(vec![400]),
        _ => None,
    }
}

fn config() -> Config {
    Config {
        cases: 256,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Every mutated message through the endpoint path, with the harness's
    /// checks (the same as the fuzz target's).
    #[test]
    fn mutated_messages_are_answered_as_the_rfc_says(
        d in draft(),
        muts in prop::collection::vec(mutation(), 0..4),
    ) {
        let bytes = apply(d.clone(), &muts);
        if let Err(e) = harness::run_and_check(&[&bytes]) {
            prop_assert!(false, "{e}\nmutations: {muts:?}");
        }
    }

    /// One semantic mutation of a well-formed message: the response follows
    /// from the mutation alone. A response input is never answered.
    #[test]
    fn one_semantic_fault_gets_its_status(
        d in draft(),
        m in prop_oneof![
            Just(Mutation::NoBranch),
            Just(Mutation::Version),
            Just(Mutation::UnsupportedScheme),
            Just(Mutation::CseqMismatch),
            prop::sample::select(vec!["Via", "From", "To", "Call-ID", "CSeq"]).prop_map(Mutation::Remove),
            prop::sample::select(vec![
                BadLength::Larger, BadLength::Smaller, BadLength::Negative,
                BadLength::NotANumber, BadLength::Conflicting
            ]).prop_map(Mutation::ContentLength),
        ],
    ) {
        let bytes = apply(d.clone(), std::slice::from_ref(&m));
        let codes = response_codes(&bytes);
        if let Some(due) = due_for(&d, &m) {
            prop_assert_eq!(&codes, &due, "{:?} on {}", m, d.start);
        }
    }

    /// Max-Forwards 0, huge values, duplicated headers and LF line ends on a
    /// well-formed request: still a request to answer (this UA is not a
    /// proxy: 483 is the B2BUA's, which is not reachable here), and never
    /// with a 5xx the mutation does not call for.
    #[test]
    fn tolerated_oddities_still_get_an_answer(
        d in draft(),
        m in prop_oneof![
            Just(Mutation::MaxForwardsZero),
            Just(Mutation::LfOnly),
            Just(Mutation::MixedLineEnds),
            any::<prop::sample::Index>().prop_map(Mutation::Duplicate),
            (any::<prop::sample::Index>(), 1000usize..4000).prop_map(|(i, n)| Mutation::Huge(i, n)),
        ],
    ) {
        let bytes = apply(d.clone(), std::slice::from_ref(&m));
        let codes = response_codes(&bytes);
        if d.request.is_none() || d.is_ack() {
            prop_assert!(codes.is_empty(), "{codes:?} to a response or ACK");
        } else if !matches!(m, Mutation::Duplicate(_)) {
            prop_assert!(!codes.is_empty(), "no answer to {}, {m:?}", d.start);
            prop_assert!(
                codes.iter().all(|c| *c < 500 || *c == 503),
                "{codes:?} to {}, {m:?}", d.start
            );
        }
    }
}

/// `text` with its Call-ID made invalid UTF-8.
fn not_utf8(text: &str) -> Vec<u8> {
    let (a, b) = text.split_once("fixed-1").unwrap();
    [a.as_bytes(), &b"fixed-\xff"[..], b.as_bytes()].concat()
}

/// Hand-written cases, one per kind of verdict the checks give.
#[test]
fn fixed_examples() {
    let ok =
        "OPTIONS sip:sbc1.adatum.biz SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n\
        Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:sbc1.adatum.biz>\r\n\
        Call-ID: fixed-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let cases: Vec<(&str, Vec<u8>, harness::Due)> = vec![
        ("well-formed", ok.into(), harness::Due::Answer),
        (
            "no branch",
            ok.replace(";branch=z9hG4bK1", "").into(),
            harness::Due::Error(400),
        ),
        (
            "SIP/3.0",
            ok.replacen("SIP/2.0\r", "SIP/3.0\r", 1).into(),
            harness::Due::Error(505),
        ),
        (
            "http:",
            ok.replace("sip:sbc1.adatum.biz SIP", "http://x SIP").into(),
            harness::Due::Error(416),
        ),
        (
            "short body",
            ok.replace("Length: 0", "Length: 9").into(),
            harness::Due::Error(400),
        ),
        (
            "ACK",
            ok.replace("OPTIONS", "ACK").into(),
            harness::Due::NoResponse,
        ),
        (
            "response",
            ok.replace("OPTIONS sip:sbc1.adatum.biz SIP/2.0", "SIP/2.0 200 OK")
                .into(),
            harness::Due::NoResponse,
        ),
        // Not UTF-8: no verdict from the bytes alone; whatever is sent
        // must be an error status (today a 400, from a lossy reading).
        ("not UTF-8", not_utf8(ok), harness::Due::Unknown),
    ];
    for (name, raw, due) in cases {
        assert_eq!(harness::due(&raw), due, "{name}");
        if let Err(e) = harness::run_and_check(&[&raw]) {
            panic!("{name}: {e}");
        }
    }
}

/// Found by the proptest above: rsip 0.4 cannot read an IPv6 reference
/// (`sip:[2001:db8::1]:5060`, RFC 5118 §4.1), so the endpoint answered a
/// well-formed request 416 Unsupported URI Scheme; `Uri::parse` reads the
/// reference itself now.
#[test]
fn ipv6_request_uri_is_a_sip_uri() {
    let raw = "OPTIONS sip:[2001:db8::1]:5060;transport=udp SIP/2.0\r\n\
        Via: SIP/2.0/UDP [2001:db8::7]:5060;branch=z9hG4bK1\r\n\
        Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\n\
        To: <sip:[2001:db8::1]>\r\nCall-ID: v6\r\nCSeq: 1 OPTIONS\r\n\
        Content-Length: 0\r\n\r\n";
    assert_eq!(response_codes(raw.as_bytes()), [200]);
}

/// Regressions that still fail, with where: each must keep failing until
/// its fix lands, and is then to be taken off this list. (Fixed and taken
/// off: endpoint_input-bye-request-uri-from-bad-contact, a Contact that is
/// not a URI made the dialog's remote target; sbc/src/sip/dialog.rs.)
const KNOWN_BUGS: &[(&str, &str)] = &[];

/// The minimised fuzz crashes, each as the datagrams it holds.
#[test]
fn fuzz_regressions_pass_the_endpoint_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut failures = Vec::new();
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with(".md") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        // Inputs of the other targets carry control bytes or are not SIP;
        // only SIP-shaped ones go through the endpoint.
        let datagrams: Vec<&[u8]> = if name.starts_with("endpoint_input-") {
            split(&data)
        } else if name.starts_with("sip_message-") {
            vec![&data]
        } else {
            continue;
        };
        let outcome = std::panic::catch_unwind(|| harness::run_and_check(&datagrams));
        let known = KNOWN_BUGS.iter().find(|(k, _)| *k == name);
        match (outcome, known) {
            (Ok(Ok(())), None) => {}
            (Ok(Ok(())), Some(_)) => {
                failures.push(format!("{name} passes now: take it off KNOWN_BUGS"))
            }
            (Ok(Err(_)) | Err(_), Some(_)) => {}
            (Ok(Err(e)), None) => failures.push(format!("{name}: {e}")),
            (Err(_), None) => failures.push(format!("{name}: panicked")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The fuzz target's datagram separator (see `fuzz_targets/endpoint_input.rs`).
fn split(data: &[u8]) -> Vec<&[u8]> {
    const SEPARATOR: &[u8] = b"\0\0NEXT\0\0";
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        out.push(&rest[..i]);
        rest = &rest[i + SEPARATOR.len()..];
    }
    out.push(rest);
    out
}
