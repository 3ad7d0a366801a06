use super::offer_answer::*;
use super::*;

/// Shape of the Teams offer in Microsoft's media documentation.
const TEAMS_OFFER: &str = "v=0\r\n\
o=- 0 0 IN IP4 52.114.16.1\r\n\
s=session\r\n\
c=IN IP4 52.114.16.1\r\n\
b=CT:10000000\r\n\
t=0 0\r\n\
m=audio 52884 RTP/SAVP 111 103 104 9 0 8 106 13 110 112 113 126\r\n\
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

fn origin() -> Origin {
    Origin {
        username: "drlab".into(),
        session_id: 1,
        session_version: 1,
        address: "192.0.2.10".into(),
    }
}

fn sbc_teams_leg() -> LocalMedia {
    LocalMedia {
        address: "192.0.2.10".into(),
        port: 40000,
        codecs: vec![Codec::pcmu(), Codec::pcma(), Codec::telephone_event()],
        srtp_key: Some("WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz".into()),
        rtcp_mux: true,
        ice: None,
    }
}

#[test]
fn teams_offer_is_read_whole() {
    let sd = SessionDescription::parse(TEAMS_OFFER).unwrap();
    let m = &sd.media[0];
    assert_eq!(m.port, 52884);
    assert!(m.is_secure());
    assert_eq!(m.formats.len(), 12);
    assert_eq!(m.encoding(104).as_deref(), Some("SILK"));
    assert_eq!(m.encoding(0).as_deref(), Some("PCMU"));
    assert_eq!(m.crypto.len(), 2);
    assert_eq!(m.crypto[1].mki, Some((1, 1)));
    assert_eq!(m.crypto[1].lifetime.as_deref(), Some("2^31"));
    assert_eq!(m.candidates[0].typ, "srflx");
    assert_eq!(m.candidates[0].extensions, "raddr 10.0.0.1 rport 52884");
    assert!(m.rtcp_mux);
    assert_eq!(m.rtcp, Some(52884));
    assert_eq!(
        m.attributes,
        vec![("label".to_string(), Some("main-audio".to_string()))]
    );
    let again = SessionDescription::parse(&sd.to_text()).unwrap();
    assert_eq!(again, sd);
}

#[test]
fn answer_picks_sha1_80_and_offerers_codec_order() {
    let offer = SessionDescription::parse(TEAMS_OFFER).unwrap();
    let answer = sbc_teams_leg().answer(&offer, origin()).unwrap();
    let m = &answer.media[0];
    assert_eq!(m.proto, "RTP/SAVP");
    assert_eq!(m.formats, vec![0, 8]);
    assert_eq!(m.crypto.len(), 1);
    assert_eq!(m.crypto[0].tag, 1);
    assert_eq!(m.crypto[0].suite, SRTP_SUITE);
    assert!(m.rtcp_mux);
    let a = agreed(&answer, &offer).unwrap();
    assert_eq!(a.codec.name, "PCMU");
    assert_eq!(
        (a.remote_address.as_str(), a.remote_port),
        ("52.114.16.1", 52884)
    );
    assert_eq!(
        a.remote_key.unwrap().key_salt,
        "mqy/fjvSpK2Sw4vnIm2dF5iSOMjDjcI6hMHVZ1Ab"
    );
    assert_eq!(
        a.local_key.unwrap().key_salt,
        sbc_teams_leg().srtp_key.unwrap()
    );
}

#[test]
fn plain_rtp_offer_to_an_srtp_leg_is_refused() {
    let plain = TEAMS_OFFER.replace("RTP/SAVP", "RTP/AVP");
    let offer = SessionDescription::parse(&plain).unwrap();
    assert_eq!(
        sbc_teams_leg().answer(&offer, origin()),
        Err(AnswerError::SrtpRequired)
    );
}

#[test]
fn no_common_codec_names_what_was_offered() {
    let amr = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 96\r\na=rtpmap:96 AMR/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
    let offer = SessionDescription::parse(amr).unwrap();
    assert_eq!(
        sbc_teams_leg().answer(&offer, origin()),
        Err(AnswerError::NoCommonCodec {
            offered: vec!["AMR".into()]
        })
    );
}

#[test]
fn only_sha1_32_is_not_acceptable() {
    let offer = SessionDescription::parse(&TEAMS_OFFER.replace(
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_32",
    ))
    .unwrap();
    assert!(matches!(
        sbc_teams_leg().answer(&offer, origin()),
        Err(AnswerError::NoAcceptableCrypto { .. })
    ));
}

#[test]
fn ice_lite_offer_has_one_host_candidate() {
    let mut leg = sbc_teams_leg();
    leg.ice = Some(Ice {
        ufrag: "abcd".into(),
        pwd: "0123456789012345678901".into(),
        lite: true,
    });
    let sd = leg.offer(origin());
    let text = sd.to_text();
    assert!(text.contains("a=ice-lite\r\n"));
    assert_eq!(sd.media[0].candidates.len(), 1);
    assert_eq!(SessionDescription::parse(&text).unwrap(), sd);
}

#[test]
fn sendonly_is_answered_recvonly() {
    let offer =
        SessionDescription::parse(&TEAMS_OFFER.replace("a=sendrecv", "a=sendonly")).unwrap();
    let answer = sbc_teams_leg().answer(&offer, origin()).unwrap();
    assert_eq!(answer.media[0].direction, Some(Direction::RecvOnly));
}

#[test]
fn malformed_lines_say_where() {
    let err = SessionDescription::parse("v=0\r\no=- x 1 IN IP4 1.2.3.4\r\n").unwrap_err();
    assert!(matches!(err, SdpError::Syntax { line: 2, .. }), "{err}");
    assert_eq!(
        SessionDescription::parse("v=0\r\n").unwrap_err(),
        SdpError::Missing { line: "o=" }
    );
    let no_c = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    assert_eq!(
        SessionDescription::parse(no_c).unwrap_err(),
        SdpError::NoConnection { media: 0 }
    );
    let bad_crypto = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 key:abc\r\n";
    assert!(SessionDescription::parse(bad_crypto).is_err());
}

#[test]
fn hold_is_read_the_three_ways_pstn_gear_writes_it() {
    let base = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n";
    let sd = |extra: &str| SessionDescription::parse(&format!("{base}{extra}")).unwrap();
    assert!(!sd("").holds());
    assert!(!sd("a=sendrecv\r\n").holds());
    assert!(sd("a=sendonly\r\n").holds());
    assert!(sd("a=recvonly\r\n").holds());
    assert!(sd("a=inactive\r\n").holds());
    let zero = base.replace("c=IN IP4 198.51.100.7", "c=IN IP4 0.0.0.0");
    assert!(SessionDescription::parse(&zero).unwrap().holds());
    // A session-level direction counts when the stream has none.
    let session_level = base.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
    assert!(SessionDescription::parse(&session_level).unwrap().holds());
    let resumed = sd("a=inactive\r\n").with_direction(Direction::SendRecv);
    assert!(!resumed.holds());
    assert!(resumed.to_string().contains("a=sendrecv"));
}

/// fuzz/regressions/sdp-c-empty-address: `c=IN IP4 /127` has no address;
/// it was read as an empty one and written back as `c=IN IP4 `, which does
/// not parse. Now the line is refused and whatever parses round-trips.
#[test]
fn a_connection_line_without_an_address_is_refused() {
    let base = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n";
    let empty = base.replace("c=IN IP4 198.51.100.7", "c=IN IP4 /127");
    if let Ok(sd) = SessionDescription::parse(&empty) {
        let text = sd.to_string();
        assert!(SessionDescription::parse(&text).is_ok(), "{text}");
    }
    let ttl = base.replace("c=IN IP4 198.51.100.7", "c=IN IP4 198.51.100.7/127");
    assert!(SessionDescription::parse(&ttl)
        .unwrap()
        .to_string()
        .contains("c=IN IP4 198.51.100.7\r\n"));
}
