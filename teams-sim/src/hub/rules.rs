//! The checks the hub makes on what an SBC sends, as pure functions of the
//! bytes received ([`RawMessage`]), the TLS peer and the tenant, so each
//! refusal can be tested on its own and none depends on the SIP stack the
//! SBC under test may share with us.

use super::raw::{host_of, uri_of, RawMessage};
use super::{Refusal, Tenant};
use sbc::sip::transport::tls::names_cover;
use sbc::sip::transport::{Source, TransportKind};

/// Who the SBC says it is: the top Record-Route, else the first Contact
/// (only the first counts, §9.21), checked against the tenant's trunks and
/// the TLS certificate (§9.8–9.11, 9.19–9.20). Returns the FQDN and the
/// port it gave.
pub fn identify_sbc(
    request: &RawMessage,
    source: &Source,
    tenant: &Tenant,
) -> Result<(String, Option<u16>), Refusal> {
    let (header, value) = match request.first("Record-Route") {
        Some(rr) => ("Record-Route", rr),
        None => (
            "Contact",
            request.first("Contact").ok_or(Refusal::NoContact)?,
        ),
    };
    let (host, is_ip, port) = host_of(uri_of(value)).map_err(|_| Refusal::NoContact)?;
    if is_ip {
        return Err(Refusal::IpInContact { header, host });
    }
    let fqdn = host.to_ascii_lowercase();
    // Carrier model: a derived trunk is the FQDN with its host label removed (§3.1).
    let parent = fqdn
        .split_once('.')
        .map(|(_, p)| p.to_string())
        .unwrap_or_default();
    if !tenant
        .sbcs
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&fqdn) || s.eq_ignore_ascii_case(&parent))
    {
        return Err(Refusal::UnknownTrunk { fqdn });
    }
    if source.transport == TransportKind::Tls && !names_cover(&source.peer_names, &fqdn) {
        return Err(Refusal::CertificateMismatch {
            fqdn,
            names: source.peer_names.to_vec(),
        });
    }
    Ok((fqdn, port))
}

/// The SDP rules every SBC description meets, offer or answer: no
/// `c=0.0.0.0` (§9.27), audio over RTP/SAVP with an SDES key (§9.24) and,
/// for an answer, a crypto suite the hub offered (`offered_suites`).
fn check_media_lines(lines: &[&str], offered_suites: Option<&[&str]>) -> Result<(), Refusal> {
    if lines
        .iter()
        .any(|l| l.starts_with("c=IN IP4 0.0.0.0") || l.starts_with("c=IN IP6 ::"))
    {
        return Err(Refusal::ZeroConnectionAddress);
    }
    let audio_secure = lines
        .iter()
        .any(|l| l.starts_with("m=audio ") && l.contains(" RTP/SAVP"));
    let suites: Vec<&str> = lines.iter().filter_map(|l| crypto_suite(l)).collect();
    let suite_ok = match offered_suites {
        None => !suites.is_empty(),
        Some(offered) => suites.iter().any(|s| offered.contains(s)),
    };
    if !audio_secure || !suite_ok {
        return Err(Refusal::SrtpRequired);
    }
    Ok(())
}

/// The suite of an `a=crypto:<tag> <suite> <key-params>` line (RFC 4568 §9.1).
fn crypto_suite(line: &str) -> Option<&str> {
    line.strip_prefix("a=crypto:")?.split_whitespace().nth(1)
}

/// The payload types of the first `m=audio` line, and its port.
fn audio_line<'a>(lines: &[&'a str]) -> Option<(u16, Vec<&'a str>)> {
    let m = lines.iter().find_map(|l| l.strip_prefix("m=audio "))?;
    let mut parts = m.split_whitespace();
    let port = parts.next()?.split('/').next()?.parse().ok()?;
    let _proto = parts.next()?;
    Some((port, parts.collect()))
}

/// The SBC's answer to the hub's offer (an outbound call's 183 or 200),
/// read from its text: audio accepted (port not 0) with a codec the hub
/// offered, SRTP with a suite the hub offered, no `c=0.0.0.0`. Anything
/// else ends the call: the hub never sends plain RTP.
pub fn check_answer(answer: &str, offer: &str) -> Result<(), Refusal> {
    let lines: Vec<&str> = answer.lines().map(str::trim_end).collect();
    let offer_lines: Vec<&str> = offer.lines().map(str::trim_end).collect();
    if lines.first() != Some(&"v=0") {
        return Err(Refusal::BadSdp {
            reason: "no v=0 first".into(),
        });
    }
    let (_, offered_pts) = audio_line(&offer_lines).unwrap_or_default();
    let Some((port, pts)) = audio_line(&lines) else {
        return Err(Refusal::BadSdp {
            reason: "no m=audio line".into(),
        });
    };
    if port == 0 {
        return Err(Refusal::NoCommonCodec {
            reason: "the answer rejects the audio stream (port 0)".into(),
        });
    }
    let offered_suites: Vec<&str> = offer_lines.iter().filter_map(|l| crypto_suite(l)).collect();
    check_media_lines(&lines, Some(&offered_suites))?;
    // Comfort noise and DTMF events alone carry no voice.
    let voice = |pt: &&str| {
        offered_pts.contains(pt)
            && !offer_lines.iter().any(|l| {
                l.strip_prefix("a=rtpmap:")
                    .and_then(|r| r.split_once(' '))
                    .is_some_and(|(p, name)| {
                        p == *pt
                            && (name.starts_with("CN/") || name.starts_with("telephone-event/"))
                    })
            })
    };
    if !pts.iter().any(voice) {
        return Err(Refusal::NoCommonCodec {
            reason: format!(
                "the answer's payload types {pts:?} hold no voice codec the hub offered"
            ),
        });
    }
    Ok(())
}

/// Rules an SBC's INVITE must meet before it reaches a user (§9.17, 9.18,
/// 9.22, 9.23, 9.24, 9.27), read from the text: header presence, the SDP
/// lines as written, the Request-URI's user part.
pub fn check_invite(request: &RawMessage) -> Result<(), Refusal> {
    check_invite_content(request)?;
    let number = request
        .request_uri()
        .and_then(|u| rsip::Uri::try_from(u).ok())
        .and_then(|u| u.auth.map(|a| a.user))
        .unwrap_or_default();
    if !number.starts_with('+')
        || number.len() < 4
        || !number.bytes().skip(1).all(|b| b.is_ascii_digit())
    {
        return Err(Refusal::NotE164 { number });
    }
    Ok(())
}

/// The rules of [`check_invite`] but the Request-URI's number: an INVITE
/// for a Refer-To (case 9.45) names a Teams user by `x-m`, not by number.
pub fn check_invite_content(request: &RawMessage) -> Result<(), Refusal> {
    if request.has("Replaces") {
        return Err(Refusal::Replaces);
    }
    if request
        .values("Require")
        .iter()
        .any(|r| r.eq_ignore_ascii_case("100rel"))
    {
        return Err(Refusal::Requires100rel);
    }
    if request.body.is_empty() {
        return Err(Refusal::NoSdp);
    }
    let sdp = std::str::from_utf8(&request.body).map_err(|_| Refusal::BadSdp {
        reason: "not UTF-8".into(),
    })?;
    let lines: Vec<&str> = sdp.lines().map(str::trim_end).collect();
    let has_media = lines.iter().any(|l| l.starts_with("m="));
    if lines.first() != Some(&"v=0") || !has_media {
        return Err(Refusal::BadSdp {
            reason: "no v=0 first or no m= line".into(),
        });
    }
    check_media_lines(&lines, None)?;
    Ok(())
}

/// Case 9.26: an SBC whose gateway has MediaBypass on must offer ICE: at
/// least one `a=candidate` line for its audio, with `a=ice-ufrag` and
/// `a=ice-pwd` (RFC 8839 §5.1, §5.4), else 488/531027 (KB-488).
pub fn check_bypass_offer(request: &RawMessage) -> Result<(), Refusal> {
    let sdp = String::from_utf8_lossy(&request.body);
    let lines: Vec<&str> = sdp.lines().map(str::trim_end).collect();
    let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    if !has("a=candidate:") || !has("a=ice-ufrag:") || !has("a=ice-pwd:") {
        return Err(Refusal::NoIceCandidates);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn tenant() -> Tenant {
        Tenant {
            sbcs: vec!["sbc.example.com".into(), "customers.carrier.net".into()],
            sbc_port: 5061,
            users: vec![],
            routes: vec![],
            forward_pai: vec![],
            forward_call_history: vec![],
            media_bypass: vec![],
        }
    }

    fn tls(names: &[&str]) -> Source {
        Source {
            transport: TransportKind::Tls,
            local: "192.0.2.2:5061".parse().unwrap(),
            remote: "192.0.2.1:40000".parse().unwrap(),
            connection: None,
            peer_names: Arc::new(names.iter().map(|s| s.to_string()).collect()),
        }
    }

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";

    fn request_to(ruri: &str, extra: &str, body: &str) -> RawMessage {
        let raw = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/TLS sbc.example.com;branch=z9hG4bK1\r\n\
             From: <sip:+4930123456@sbc.example.com>;tag=1\r\nTo: <sip:+4989000001@sip.pstnhub.microsoft.com>\r\n\
             Call-ID: r1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        RawMessage::read(raw.as_bytes()).unwrap()
    }

    fn request(extra: &str, body: &str) -> RawMessage {
        request_to("sip:+4989000001@sip.pstnhub.microsoft.com", extra, body)
    }

    fn contact(c: &str) -> RawMessage {
        request(&format!("Contact: {c}\r\n"), SDP)
    }

    #[test]
    fn a_known_fqdn_with_a_matching_certificate_is_identified() {
        let got = identify_sbc(
            &contact("<sip:sbc.example.com:5061;transport=tls>"),
            &tls(&["sbc.example.com"]),
            &tenant(),
        );
        assert_eq!(got, Ok(("sbc.example.com".into(), Some(5061))));
    }

    #[test]
    fn contact_rules_refuse_like_the_hub() {
        let t = tenant();
        let ok = tls(&["sbc.example.com"]);
        assert_eq!(
            identify_sbc(&request("", SDP), &ok, &t),
            Err(Refusal::NoContact)
        );
        assert_eq!(
            identify_sbc(&contact("<sip:192.0.2.1:5061>"), &ok, &t),
            Err(Refusal::IpInContact {
                header: "Contact",
                host: "192.0.2.1".into()
            })
        );
        assert_eq!(
            identify_sbc(&contact("<sip:other.example.com>"), &ok, &t),
            Err(Refusal::UnknownTrunk {
                fqdn: "other.example.com".into()
            })
        );
        assert!(matches!(
            identify_sbc(
                &contact("<sip:sbc.example.com>"),
                &tls(&["x.example.com"]),
                &t
            ),
            Err(Refusal::CertificateMismatch { .. })
        ));
        // Only the first Contact counts (§9.21), compact form too.
        let two = request("m: <sip:192.0.2.9>, <sip:sbc.example.com>\r\n", SDP);
        assert!(matches!(
            identify_sbc(&two, &ok, &t),
            Err(Refusal::IpInContact { .. })
        ));
    }

    #[test]
    fn record_route_wins_over_contact() {
        let m = request(
            "Record-Route: <sip:192.0.2.7;lr>\r\nContact: <sip:sbc.example.com>\r\n",
            SDP,
        );
        assert_eq!(
            identify_sbc(&m, &tls(&["sbc.example.com"]), &tenant()),
            Err(Refusal::IpInContact {
                header: "Record-Route",
                host: "192.0.2.7".into()
            })
        );
    }

    #[test]
    fn derived_trunks_are_found_by_their_parent_domain_and_wildcard() {
        let m = contact("<sip:sbc1.customers.carrier.net>");
        let got = identify_sbc(&m, &tls(&["*.customers.carrier.net"]), &tenant());
        assert_eq!(got, Ok(("sbc1.customers.carrier.net".into(), None)));
    }

    #[test]
    fn a_bypass_offer_needs_a_candidate_and_credentials() {
        assert_eq!(
            check_bypass_offer(&request("", SDP)),
            Err(Refusal::NoIceCandidates)
        );
        let ice = format!(
            "{SDP}a=ice-ufrag:Tsuh\r\na=ice-pwd:xrYbX4aoJ+HFmOhUPPRM4OMs\r\n\
             a=candidate:1 1 UDP 2130706431 192.0.2.1 4000 typ host\r\n"
        );
        assert_eq!(check_bypass_offer(&request("", &ice)), Ok(()));
        let no_pwd = ice.replace("a=ice-pwd:xrYbX4aoJ+HFmOhUPPRM4OMs\r\n", "");
        assert_eq!(
            check_bypass_offer(&request("", &no_pwd)),
            Err(Refusal::NoIceCandidates)
        );
    }

    #[test]
    fn invite_rules() {
        assert_eq!(check_invite(&request("", SDP)), Ok(()));
        assert_eq!(
            check_invite(&request("Require: 100rel\r\n", SDP)),
            Err(Refusal::Requires100rel)
        );
        assert_eq!(check_invite(&request("", "")), Err(Refusal::NoSdp));
        assert_eq!(
            check_invite(&request("", &SDP.replace("RTP/SAVP", "RTP/AVP"))),
            Err(Refusal::SrtpRequired)
        );
        assert_eq!(
            check_invite(&request(
                "",
                &SDP.replace("c=IN IP4 192.0.2.1", "c=IN IP4 0.0.0.0")
            )),
            Err(Refusal::ZeroConnectionAddress)
        );
        assert!(matches!(
            check_invite(&request("", "v=0\r\n")),
            Err(Refusal::BadSdp { .. })
        ));
        assert_eq!(
            check_invite(&request_to(
                "sip:089000001@sip.pstnhub.microsoft.com",
                "",
                SDP
            )),
            Err(Refusal::NotE164 {
                number: "089000001".into()
            })
        );
        assert_eq!(
            check_invite(&request("Replaces: a;to-tag=b;from-tag=c\r\n", SDP)),
            Err(Refusal::Replaces)
        );
    }

    #[test]
    fn answers_the_hub_cannot_accept() {
        let offer = "v=0\r\no=- 1 0 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
m=audio 50000 RTP/SAVP 104 0 8 18 13 101\r\na=rtpmap:104 SILK/16000\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\na=rtpmap:18 G729/8000\r\na=rtpmap:13 CN/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:AAAA|2^31\r\n";
        let good = "v=0\r\no=- 2 0 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:BBBB\r\n";
        assert_eq!(check_answer(good, offer), Ok(()));
        let plain = good.replace("RTP/SAVP", "RTP/AVP");
        assert_eq!(check_answer(&plain, offer), Err(Refusal::SrtpRequired));
        let no_key = good.replace("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:BBBB\r\n", "");
        assert_eq!(check_answer(&no_key, offer), Err(Refusal::SrtpRequired));
        let other_suite = good.replace("AES_CM_128_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_80");
        assert_eq!(
            check_answer(&other_suite, offer),
            Err(Refusal::SrtpRequired)
        );
        let zero = good.replace("c=IN IP4 10.0.0.1", "c=IN IP4 0.0.0.0");
        assert_eq!(
            check_answer(&zero, offer),
            Err(Refusal::ZeroConnectionAddress)
        );
        let rejected = good.replace("m=audio 40000", "m=audio 0");
        assert!(matches!(
            check_answer(&rejected, offer),
            Err(Refusal::NoCommonCodec { .. })
        ));
        let dtmf_only = good.replace("RTP/SAVP 0 101", "RTP/SAVP 101");
        assert!(matches!(
            check_answer(&dtmf_only, offer),
            Err(Refusal::NoCommonCodec { .. })
        ));
        let unoffered = good.replace("RTP/SAVP 0 101", "RTP/SAVP 9");
        assert!(matches!(
            check_answer(&unoffered, offer),
            Err(Refusal::NoCommonCodec { .. })
        ));
        assert!(matches!(
            check_answer("garbage", offer),
            Err(Refusal::BadSdp { .. })
        ));
        let g729 = good.replace("RTP/SAVP 0 101", "RTP/SAVP 18");
        assert_eq!(check_answer(&g729, offer), Ok(()));
    }

    #[test]
    fn refusals_carry_the_documented_status_and_code() {
        assert_eq!(Refusal::UnknownTrunk { fqdn: "x".into() }.status().0, 403);
        assert_eq!(
            Refusal::UnknownTrunk { fqdn: "x".into() }.ms_code(),
            Some(510532)
        );
        assert_eq!(Refusal::Requires100rel.status(), (420, "Bad Extension"));
        assert_eq!(Refusal::SrtpRequired.status().0, 488);
        assert_eq!(
            Refusal::NotE164 { number: "1".into() }.to_string(),
            "1 is not E.164 with a leading + (511404)"
        );
    }
}
