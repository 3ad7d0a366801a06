//! Property tests for everything that parses: serialise → parse gives the
//! same message, and no mutation of a real message makes a parser panic.

use proptest::prelude::*;
use sbc::sip::sdp::{Crypto, MediaDescription, Origin, RtpMap, SessionDescription};
use sbc::sip::wire::{Header, Headers, Message, Method, StartLine, StreamFramer, Uri};

const TEAMS_INVITE: &str = "INVITE sip:+4930123456@sbc.example.com:5061;user=phone;transport=tls SIP/2.0\r\n\
FROM: <sip:+4989000001@sip.pstnhub.microsoft.com:5061;user=phone>;tag=a1b2c3\r\n\
TO: <sip:+4930123456@sbc.example.com:5061;user=phone>\r\n\
CSEQ: 1 INVITE\r\n\
CALL-ID: 5f2e0c1a-1111-2222-3333-444455556666\r\n\
MAX-FORWARDS: 70\r\n\
VIA: SIP/2.0/TLS 52.114.75.24:5061;branch=z9hG4bKa01fb94a\r\n\
RECORD-ROUTE: <sip:sip-du-a-eu.pstnhub.microsoft.com:5061;transport=tls;lr>\r\n\
CONTACT: <sip:api-du-a-euwe.pstnhub.microsoft.com:443;x-i=0a1b;x-c=0a1b/d/8/ff00>\r\n\
CONTENT-TYPE: application/sdp\r\n\
USER-AGENT: Microsoft.PSTNHub.SIPProxy v.2020.7.31.1 i.EUWE.3\r\n\
ALLOW: INVITE,ACK,OPTIONS,CANCEL,BYE,NOTIFY\r\n\
CONTENT-LENGTH: 137\r\n\r\n\
v=0\r\no=- 1 1 IN IP4 52.114.16.1\r\ns=session\r\nc=IN IP4 52.114.16.1\r\nt=0 0\r\nm=audio 52884 RTP/SAVP 0 8\r\na=rtcp-mux\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n";

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9.!%*_+`'~-]{0,12}"
}

fn header_value() -> impl Strategy<Value = String> {
    // Printable text without CR/LF, not starting or ending with whitespace.
    "[!-~]([ -~]{0,40}[!-~])?"
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Invite),
        Just(Method::Ack),
        Just(Method::Bye),
        Just(Method::Options),
        Just(Method::Refer),
        "[A-Z]{3,10}".prop_map(|m| Method::parse(&m).unwrap()),
    ]
}

fn start_line() -> impl Strategy<Value = StartLine> {
    prop_oneof![
        (method(), "(sip|tel):[a-z0-9+.@]{1,20}")
            .prop_map(|(method, uri)| StartLine::Request { method, uri }),
        (100u16..700, "[A-Za-z ]{0,20}")
            .prop_map(|(code, reason)| StartLine::Response { code, reason }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        start_line(),
        prop::collection::vec(
            (
                prop_oneof![token(), Just("v".to_string()), Just("m".to_string())],
                header_value(),
            ),
            0..12,
        ),
        prop::collection::vec(any::<u8>(), 0..200),
        0usize..13,
    )
        .prop_map(|(start, hs, body, at)| {
            let mut headers: Vec<Header> = hs
                .into_iter()
                .filter(|(n, _)| {
                    !n.eq_ignore_ascii_case("l") && !n.eq_ignore_ascii_case("Content-Length")
                })
                .map(|(n, v)| Header::new(n, v))
                .collect();
            let at = at.min(headers.len());
            headers.insert(at, Header::new("Content-Length", body.len().to_string()));
            Message {
                start,
                headers: Headers(headers),
                body,
            }
        })
}

proptest! {
    #[test]
    fn message_round_trips(m in message()) {
        let bytes = m.to_bytes();
        prop_assert_eq!(Message::parse(&bytes).unwrap(), m.clone());
        // The same bytes cut into arbitrary reads frame to the same message.
        let mut f = StreamFramer::default();
        for chunk in bytes.chunks(7) {
            f.push(chunk);
        }
        prop_assert_eq!(f.next_message().unwrap(), Some(m));
    }

    #[test]
    fn mutated_messages_never_panic(
        edits in prop::collection::vec((0usize..2000, any::<u8>(), 0u8..4), 1..8),
        cut in 0usize..2000,
    ) {
        let mut bytes = TEAMS_INVITE.as_bytes().to_vec();
        for (pos, byte, op) in edits {
            let pos = pos % (bytes.len() + 1);
            match op {
                0 if pos < bytes.len() => bytes[pos] = byte,
                1 => bytes.insert(pos, byte),
                2 if pos < bytes.len() => { bytes.remove(pos); }
                _ => bytes.insert(pos, b"\r\n:;<>\"\t ,/"[byte as usize % 11]),
            }
        }
        exercise(&bytes);
        exercise(&bytes[..cut.min(bytes.len())]);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        exercise(&bytes);
    }

    /// Arbitrary UTF-8 (multibyte characters included) at every URI and
    /// header position of a real INVITE: a reader that slices text by byte
    /// index off a char boundary panics here (the `text[..4]` of a URI
    /// scheme check did, on one datagram).
    #[test]
    fn arbitrary_utf8_in_any_uri_or_header_never_panics(
        slot in 0usize..UTF8_SLOTS.len(),
        text in "\\PC{0,12}",
        prefix in prop_oneof![Just(""), Just("sip:"), Just("tel:"), Just("sips:"), Just("sip"), Just("<sip:")],
    ) {
        let raw = UTF8_SLOTS[slot].replace("{X}", &format!("{prefix}{text}"));
        exercise(raw.as_bytes());
        let _ = Uri::parse(&format!("{prefix}{text}"));
        let _ = Uri::parse(&text);
    }

    #[test]
    fn sdp_round_trips(sd in session()) {
        let text = sd.to_text();
        prop_assert_eq!(SessionDescription::parse(&text).unwrap(), sd);
    }
}

/// An INVITE with one position left open; each entry opens another.
const UTF8_SLOTS: &[&str] = &[
    "INVITE {X} SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:a@h>\r\nContent-Length: 0\r\n\r\n",
    "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP {X};branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:a@h>\r\nContent-Length: 0\r\n\r\n",
    "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <{X}>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:a@h>\r\nContent-Length: 0\r\n\r\n",
    "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: {X};tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:a@h>\r\nContent-Length: 0\r\n\r\n",
    "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <{X}>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:a@h>\r\nContent-Length: 0\r\n\r\n",
    "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: {X}\r\nCSeq: 1 INVITE\r\nContact: <sip:a@h>\r\nContent-Length: 0\r\n\r\n",
    "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: {X}\r\nContact: <sip:a@h>\r\nContent-Length: 0\r\n\r\n",
    "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <{X}>\r\nContent-Length: 0\r\n\r\n",
    "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: {X}\r\nRecord-Route: <{X}>\r\nMax-Forwards: {X}\r\nRequire: {X}\r\nContent-Length: 0\r\n\r\n",
    "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch={X}\r\nFrom: <sip:a@h>;tag={X}\r\nTo: <sip:b@h>;tag={X}\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:a@h>\r\n{X}: {X}\r\nContent-Length: 0\r\n\r\n",
    "SIP/2.0 200 {X}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <{X}>\r\nContent-Length: 0\r\n\r\n",
];

/// Every reading a layer above may make of untrusted bytes.
fn exercise(bytes: &[u8]) {
    if let Ok(m) = Message::parse(bytes) {
        let _ = m.validate();
        let _ = m.top_via();
        let _ = m.contacts();
        let _ = m.from_header().map(|f| f.parsed_uri());
        let _ = m.to_header().map(|f| f.parsed_uri());
        let _ = m.cseq();
        let _ = m.call_id();
        for c in m.contacts().unwrap_or_default() {
            let _ = c
                .parsed_uri()
                .map(|u| (u.user().map(str::to_string), u.host(), u.port()));
        }
        for rr in m.headers.values("Record-Route") {
            let _ = sbc::sip::wire::NameAddr::parse("Record-Route", rr).map(|n| n.parsed_uri());
        }
        let _ = m.max_forwards();
        if let Some(uri) = m.request_uri() {
            let _ = Uri::parse(uri);
        }
        let _ = SessionDescription::parse(&String::from_utf8_lossy(&m.body));
        let _ = m.to_bytes();
    }
    let mut f = StreamFramer::new(1500);
    f.push(bytes);
    while let Ok(Some(_)) = f.next_frame() {}
    let _ = SessionDescription::parse(&String::from_utf8_lossy(bytes));
}

fn word() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9+/=_-]{1,16}"
}

fn media() -> impl Strategy<Value = MediaDescription> {
    (
        1u16..65535,
        prop_oneof![Just("RTP/AVP"), Just("RTP/SAVP")],
        prop::collection::vec(0u8..128, 1..6),
        prop::option::of(Just("10.0.0.2".to_string())),
        prop::collection::vec((96u8..128, "[A-Za-z0-9-]{1,10}", 8000u32..48001), 0..3),
        prop::collection::vec(
            (
                1u32..10,
                word(),
                prop::option::of(Just("2^31".to_string())),
                prop::option::of((1u32..5, 1u8..5)),
            ),
            0..3,
        ),
        any::<bool>(),
        prop::option::of((word(), word())),
    )
        .prop_map(
            |(port, proto, formats, connection, maps, cryptos, mux, ice)| {
                let mut m = MediaDescription::new_audio(port, proto);
                m.formats = formats;
                m.connection = connection;
                m.rtpmaps = maps
                    .into_iter()
                    .map(|(pt, e, c)| RtpMap {
                        payload_type: pt,
                        encoding: e,
                        clock_rate: c,
                        channels: None,
                    })
                    .collect();
                m.crypto = cryptos
                    .into_iter()
                    .map(|(tag, key, lifetime, mki)| Crypto {
                        tag,
                        suite: "AES_CM_128_HMAC_SHA1_80".into(),
                        key_salt: key,
                        lifetime,
                        mki,
                        session_params: vec![],
                    })
                    .collect();
                m.rtcp_mux = mux;
                if let Some((u, p)) = ice {
                    m.ice_ufrag = Some(u);
                    m.ice_pwd = Some(p);
                }
                m
            },
        )
}

fn session() -> impl Strategy<Value = SessionDescription> {
    (
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(media(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(id, ver, media, lite)| SessionDescription {
            origin: Origin {
                username: "-".into(),
                session_id: id,
                session_version: ver,
                address: "10.0.0.1".into(),
            },
            session_name: "drlab".into(),
            connection: Some("10.0.0.1".into()),
            ice_lite: lite,
            ice_ufrag: None,
            ice_pwd: None,
            attributes: vec![],
            media,
        })
}
