//! One SIP message as a datagram or a framed stream message: parse (with the
//! default limit and a small one), read every value the SBC reads on the
//! way in, serialise, parse again. Asserts: no panic; what we serialise we
//! parse back to the same start line, headers and body, and serialising
//! that again gives the same bytes; the in-dialog request a UAS builds from
//! the message (its BYE) parses back too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc::b2bua::numbers::to_e164;
use sbc::sip::dialog::Dialog;
use sbc::sip::digest::{Challenge, Credentials};
use sbc::sip::session::timer::parse_session_expires;
use sbc::sip::wire::{split_list, split_params, Message, Method, NameAddr, Uri, Via};

fn read_uri(text: &str) {
    if let Ok(u) = Uri::parse(text) {
        let _ = (u.user(), u.host(), u.port(), u.host_is_ip());
        let _ = (u.param("user"), u.param("transport"), u.param("lr"));
        if let Some(user) = u.user() {
            let _ = to_e164(user, "49");
        }
    }
}

fn read_name_addr(header: &'static str, value: &str) {
    if let Ok(na) = NameAddr::parse(header, value) {
        let _ = (na.tag(), na.param("expires"));
        read_uri(&na.uri);
    }
}

/// Headers equal but for Content-Length, whose value serialising rewrites.
fn same_headers(a: &Message, b: &Message) -> bool {
    let strip = |m: &Message| -> Vec<(String, String)> {
        m.headers
            .0
            .iter()
            .filter(|h| !h.is("Content-Length"))
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect()
    };
    strip(a) == strip(b)
}

fuzz_target!(|data: &[u8]| {
    let _ = Message::parse_with_limit(data, 256);
    let Ok(m) = Message::parse(data) else {
        return;
    };

    // What the endpoint, the UA and the SBC read on every message.
    let _ = m.validate();
    let _ = (m.call_id(), m.cseq(), m.top_via(), m.max_forwards());
    let _ = (m.from_header(), m.to_header(), m.contacts());
    let _ = (m.summary(), m.to_string());
    for h in &m.headers.0 {
        for part in split_list(&h.value) {
            let _ = split_params(part);
        }
    }
    for v in m.headers.values("Via") {
        let _ = Via::parse(v);
    }
    if let Some(ruri) = m.request_uri() {
        read_uri(ruri);
    }
    for h in [
        "From",
        "To",
        "P-Asserted-Identity",
        "Referred-By",
        "Refer-To",
    ] {
        for v in m.headers.lines(h) {
            read_name_addr("From", v);
        }
    }
    for h in ["Contact", "Route", "Record-Route"] {
        for v in m.headers.values(h) {
            read_name_addr("Contact", v);
        }
    }
    for v in m.headers.lines("Session-Expires") {
        let _ = parse_session_expires(v);
    }
    for h in ["WWW-Authenticate", "Proxy-Authenticate"] {
        for v in m.headers.lines(h) {
            if let Ok(c) = Challenge::parse(v) {
                let _ = c.to_string();
            }
        }
    }
    for h in ["Authorization", "Proxy-Authorization"] {
        for v in m.headers.lines(h) {
            if let Ok(c) = Credentials::parse(v) {
                let _ = c.to_string();
            }
        }
    }

    // Serialise, parse again: the same message.
    let bytes = m.to_bytes();
    let back = match Message::parse_with_limit(&bytes, usize::MAX) {
        Ok(b) => b,
        Err(e) => panic!(
            "serialised message does not parse: {e}\n{:?}",
            String::from_utf8_lossy(&bytes)
        ),
    };
    assert_eq!(back.start, m.start, "start line changed");
    assert_eq!(back.body, m.body, "body changed");
    assert!(same_headers(&m, &back), "headers changed:\n{m:?}\n{back:?}");
    assert_eq!(back.to_bytes(), bytes, "serialising is not a fixpoint");

    // The dialog a UAS makes from a request, and the BYE it would send.
    if m.is_request() && m.method() != Some(&Method::Ack) && m.validate().is_ok() {
        let contact = "<sip:sbc1.adatum.biz:5061;transport=tls>".to_string();
        if let Ok(mut d) = Dialog::as_uas(&m, "localtag1", contact) {
            if Uri::parse(&d.next_hop()).is_ok() {
                let bye = d.request(Method::Bye).to_bytes();
                let parsed = Message::parse_with_limit(&bye, usize::MAX);
                let Ok(parsed) = parsed else {
                    panic!(
                        "in-dialog BYE does not parse: {:?}\n{:?}",
                        parsed.err(),
                        String::from_utf8_lossy(&bye)
                    );
                };
                let to = parsed.to_header();
                let from = parsed.from_header();
                assert!(
                    from.as_ref().is_ok_and(|f| f.tag() == Some("localtag1")),
                    "BYE From unreadable or lost our tag: {from:?}\n{:?}",
                    String::from_utf8_lossy(&bye)
                );
                assert!(to.is_ok(), "BYE To unreadable: {to:?}");
            }
        }
    }
});
