//! STUN on a media port (RFC 8489, ICE-lite RFC 8445): `looks_like_stun`,
//! `Message::parse`, `check_integrity`, and the SBC's ICE-lite agent that
//! answers whatever arrives. Asserts: no panic; a parsed message
//! re-encodes to bytes that parse back to the same message, and re-encoded
//! with MESSAGE-INTEGRITY and FINGERPRINT it authenticates; what the agent
//! sends back is a STUN response to the same transaction, authenticated
//! with our pwd when the request authenticated, else a 400 or 401 without
//! MESSAGE-INTEGRITY.
//!
//! Input: byte 0 bit 0 set: the rest, if it parses, is re-signed with the
//! agent's password before it is handed over (so that checks can pass);
//! bit 1: the agent has a nominated peer already.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc::media::ice::{read_binding_response, Credentials, IceLiteAgent};
use sbc::media::stun::{check_integrity, looks_like_stun, Attribute, Class, Integrity, Message};
use std::net::SocketAddr;

const PWD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

fn without_auth(m: &Message) -> Vec<Attribute> {
    m.attributes
        .iter()
        .filter(|a| {
            !matches!(
                a,
                Attribute::MessageIntegrity(_) | Attribute::Fingerprint(_)
            )
        })
        .cloned()
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, packet)) = data.split_first() else {
        return;
    };
    let _ = looks_like_stun(packet);
    let _ = check_integrity(packet, PWD.as_bytes());
    let parsed = Message::parse(packet);
    let mut to_agent = packet.to_vec();
    if let Ok(m) = &parsed {
        let _ = (
            m.username(),
            m.priority(),
            m.use_candidate(),
            m.error_code(),
        );
        let _ = (
            m.xor_mapped_address(),
            m.ice_controlling(),
            m.ice_controlled(),
        );
        let _ = (
            m.has_message_integrity(),
            m.has_fingerprint(),
            m.unknown_required(),
        );

        // `encode` leaves out what would not fit 64 KiB with the trailer.
        let fits = packet.len() + 32 <= 0xFFFC + 20;
        let plain = m.encode(None, false);
        let back =
            Message::parse(&plain).unwrap_or_else(|e| panic!("re-encoded does not parse: {e}"));
        assert_eq!(
            (back.class, back.method, back.transaction),
            (m.class, m.method, m.transaction)
        );
        if fits {
            assert_eq!(without_auth(&back), without_auth(m), "attributes changed");
        }

        let signed = m.encode(Some(PWD.as_bytes()), true);
        let back = Message::parse(&signed).unwrap_or_else(|e| panic!("signed does not parse: {e}"));
        if fits {
            assert!(back.has_fingerprint() && back.has_message_integrity());
            assert_eq!(check_integrity(&signed, PWD.as_bytes()), Integrity::Valid);
        }
        // RFC 7983 §7 demultiplexes on a first byte of 0-3: methods up
        // to 0x0ff. Larger ones are STUN that a media port does not see as such.
        if m.method < 0x100 {
            assert!(looks_like_stun(&signed));
        }
        let _ = read_binding_response(
            &signed,
            m.transaction,
            &Credentials {
                ufrag: "x".into(),
                pwd: PWD.into(),
            },
        );
        if ctl & 1 == 1 {
            to_agent = signed;
        }
    }

    let mut agent = IceLiteAgent::new(Credentials {
        ufrag: "evtj".into(),
        pwd: PWD.into(),
    });
    let src: SocketAddr = "203.0.113.5:50000".parse().unwrap();
    if ctl & 2 == 2 {
        agent.set_peer(Some("h6vY"));
    }
    let Some(reply) = agent.handle(src, &to_agent) else {
        return;
    };
    let r = Message::parse(&reply).unwrap_or_else(|e| panic!("our reply does not parse: {e}"));
    let request = Message::parse(&to_agent).expect("answered a request that does not parse");
    assert_eq!(r.transaction, request.transaction);
    assert!(
        matches!(r.class, Class::Success | Class::Error),
        "{:?}",
        r.class
    );
    assert!(r.has_fingerprint());
    // RFC 8489 §9.1.3/§9.1.4: a request that authenticated (our ufrag,
    // valid MESSAGE-INTEGRITY) gets an authenticated response, whatever it
    // is; one that did not gets 400 or 401 without MESSAGE-INTEGRITY.
    let authenticated = request.username().is_some_and(|u| u.starts_with("evtj:"))
        && check_integrity(&to_agent, PWD.as_bytes()) == Integrity::Valid;
    let integrity = check_integrity(&reply, PWD.as_bytes());
    if authenticated {
        assert_eq!(integrity, Integrity::Valid, "{:?}", r.error_code());
    } else {
        assert_eq!(integrity, Integrity::Absent);
        assert!(
            matches!(r.error_code(), Some(400 | 401)),
            "{:?}",
            r.error_code()
        );
    }
    if r.class == Class::Success {
        assert_eq!(r.xor_mapped_address(), Some(src));
    }
    let _ = agent.nominated();
    let _ = agent.was_checked(src);
});
