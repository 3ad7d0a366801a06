//! SDP as it arrives in an INVITE, re-INVITE or answer: parse (UTF-8, lossy,
//! as a body that is not UTF-8 would be refused before), read what the SBC
//! reads, agree it against a real-shaped Teams offer and a carrier offer in
//! both directions, answer it as the SBC's Teams leg (SRTP) and carrier leg
//! (RTP) would, turn agreed keys into SRTP contexts. Asserts: no panic;
//! `to_text` output parses back to the same description and is a fixpoint;
//! an answer we build parses back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc::media::srtp::{Protector, Unprotector};
use sbc::media::{RelayLeg, SrtpKey};
use sbc::sip::sdp::offer_answer::{agreed, Codec, Ice, LocalMedia};
use sbc::sip::sdp::{Origin, SessionDescription};

/// The Teams offer of Microsoft's media documentation (as in sbc's SDP tests).
const TEAMS_OFFER: &str = "v=0\r\n\
o=- 0 0 IN IP4 52.114.16.1\r\n\
s=session\r\n\
c=IN IP4 52.114.16.1\r\n\
b=CT:10000000\r\n\
t=0 0\r\n\
m=audio 52884 RTP/SAVP 111 103 104 9 0 8 106 13 110 112 113 126 101\r\n\
c=IN IP4 52.114.16.1\r\n\
a=rtpmap:111 OPUS/48000/2\r\n\
a=rtpmap:104 SILK/16000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=crypto:0 AES_CM_128_HMAC_SHA1_32 inline:Zg1cAUAsyprNiozBc91aDBDQSkg8a0NBr4hXHRDP|2^31\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:mqy/fjvSpK2Sw4vnIm2dF5iSOMjDjcI6hMHVZ1Ab|2^31|1:1\r\n\
a=ice-ufrag:Tsuh\r\n\
a=ice-pwd:xrYbX4aoJ+HFmOhUPPRM4OMs\r\n\
a=candidate:1 1 UDP 54001663 52.114.16.1 52884 typ srflx raddr 10.0.0.1 rport 52884\r\n\
a=rtcp:52884\r\n\
a=rtcp-mux\r\n\
a=sendrecv\r\n\
a=label:main-audio\r\n\
a=ptime:20\r\n";

const CARRIER_OFFER: &str = "v=0\r\n\
o=carrier 1234 1 IN IP4 198.51.100.20\r\n\
s=-\r\n\
c=IN IP4 198.51.100.20\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 8 0 18 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn origin() -> Origin {
    Origin {
        username: "drlab".into(),
        session_id: 1,
        session_version: 1,
        address: "192.0.2.10".into(),
    }
}

fn leg(secure: bool, ice: bool) -> LocalMedia {
    LocalMedia {
        address: "192.0.2.10".into(),
        port: 40000,
        codecs: vec![Codec::pcmu(), Codec::pcma(), Codec::telephone_event()],
        srtp_key: secure.then(|| "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz".into()),
        rtcp_mux: true,
        ice: ice.then(|| Ice {
            ufrag: "abcd".into(),
            pwd: "0123456789abcdefghijkl".into(),
            lite: true,
        }),
    }
}

fn round_trip(sd: &SessionDescription, what: &str) {
    let text = sd.to_text();
    let back = match SessionDescription::parse(&text) {
        Ok(b) => b,
        Err(e) => panic!("{what}: to_text output does not parse: {e}\n{text}"),
    };
    assert_eq!(&back, sd, "{what}: parse(to_text) differs\n{text}");
    assert_eq!(back.to_text(), text, "{what}: to_text is not a fixpoint");
}

fn use_agreed(a: &sbc::sip::sdp::offer_answer::Agreed) {
    let _ = a.remote_socket();
    let _ = RelayLeg::from_agreed(a);
    for c in a.local_key.iter().chain(a.remote_key.iter()) {
        if let Ok(k) = SrtpKey::from_crypto(c) {
            assert_eq!(k.inline().len(), 40);
            let _ = Protector::new(&k);
            let _ = Unprotector::new(&k);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(sd) = SessionDescription::parse(&text) else {
        return;
    };
    let _ = (sd.holds(), sd.audio_ice(), sd.audio_index(), sd.to_string());
    for (i, m) in sd.media.iter().enumerate() {
        let _ = (sd.media_address(i), sd.ice_credentials(i), m.is_secure());
        for pt in &m.formats {
            let _ = m.encoding(*pt);
        }
        for c in &m.crypto {
            let _ = SrtpKey::from_crypto(c);
        }
    }
    round_trip(&sd, "input");

    let teams = SessionDescription::parse(TEAMS_OFFER).unwrap();
    let carrier = SessionDescription::parse(CARRIER_OFFER).unwrap();
    for local in [&teams, &carrier] {
        for a in [agreed(local, &sd), agreed(&sd, local)]
            .into_iter()
            .flatten()
        {
            use_agreed(&a);
        }
    }
    for (secure, ice) in [(true, false), (true, true), (false, false)] {
        if let Ok(answer) = leg(secure, ice).answer(&sd, origin()) {
            round_trip(&answer, "our answer");
            if let Some(a) = agreed(&answer, &sd) {
                use_agreed(&a);
            }
        }
    }
});
