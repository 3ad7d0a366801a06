//! Steps that check what the hub refuses and how, driven through the
//! scripted client (`tester.example.com`, holding the SBC's certificate).

use crate::steps::{fail, lock, rsip_header, sent, DrlabWorld};
use crate::tester::{Identity, TesterCommand};
use cucumber::{then, when};
use rsip::headers::UntypedHeader;
use sbc::direct_routing::HUB_FQDNS;
use sbc::sip::transport::TransportKind;
use sbc::sip::wire::{Message, Method};
use std::time::Duration;

type StepResult = Result<(), String>;

const SRTP_SDP: &str = "v=0\r\no=- 7 7 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
m=audio 40000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\na=rtcp-mux\r\n";

fn send(
    w: &mut DrlabWorld,
    method: Method,
    ruri: &str,
    headers: &[(&str, String)],
    body: &str,
) -> StepResult {
    w.tester_sent += 1;
    let n = w.tester_sent;
    let call_id = format!("tester-{n}@tester.example.com");
    let mut m = Message::request(method.clone(), ruri);
    m.headers.push(
        "Via",
        format!("SIP/2.0/TLS sbc.example.com:5061;branch=z9hG4bKtester{n}"),
    );
    m.headers.push("Max-Forwards", "70");
    m.headers.push(
        "From",
        format!("<sip:+4930123456@sbc.example.com:5061;user=phone>;tag=tester{n}"),
    );
    m.headers.push("To", format!("<{ruri}>"));
    m.headers.push("Call-ID", call_id.clone());
    m.headers.push("CSeq", format!("1 {method}"));
    for (k, v) in headers {
        m.headers.push(*k, v.clone());
    }
    if !body.is_empty() {
        m.set_body("application/sdp", body.as_bytes().to_vec());
    }
    w.tester_call = Some(call_id);
    let lab = w.lab()?;
    lab.tester_send(TesterCommand {
        host: HUB_FQDNS[0].into(),
        port: 5061,
        transport: TransportKind::Tls,
        identity: Identity::Sbc,
        message: m,
    })
    .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(10))
        .map_err(|e| e.to_string())
}

#[when(
    regex = r"^a client with the SBC's certificate sends OPTIONS (?:with Contact (\S+)|(without Contact))(?: and Record-Route (\S+))?$"
)]
async fn tester_options(
    w: &mut DrlabWorld,
    contact: String,
    without: String,
    record_route: String,
) -> StepResult {
    let ruri = format!("sip:{}:5061", HUB_FQDNS[0]);
    let mut headers: Vec<(&str, String)> = Vec::new();
    if without.is_empty() {
        headers.push(("Contact", contact));
    }
    if !record_route.is_empty() {
        headers.push(("Record-Route", record_route));
    }
    send(w, Method::Options, &ruri, &headers, "")
}

/// Case 9.61: the hub writes every header name in upper case, on every
/// message (its 100 Trying and its own Via included).
#[then("every message from the hub has upper-case header names")]
async fn hub_upper_case(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let from_hub: Vec<_> = sent(lab)
        .into_iter()
        .filter(|s| s.from.ends_with(".pstnhub.microsoft.com"))
        .collect();
    if from_hub.is_empty() {
        return fail(lab, "messages from the hub");
    }
    for s in &from_hub {
        let text = String::from_utf8_lossy(&s.raw);
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        for line in head.lines().skip(1) {
            let name = line.split(':').next().unwrap_or_default();
            if name.chars().any(|c| c.is_ascii_lowercase()) {
                return fail(
                    lab,
                    format!(
                        "upper-case header names from the hub, {} has {name:?}",
                        s.label()
                    ),
                );
            }
        }
    }
    Ok(())
}

#[when(
    regex = r"^a client with the SBC's certificate sends an INVITE for (\+?\d+)(?: (offering RTP/AVP|offering only AMR|offering only G\.729|with Require: 100rel|with c=0\.0\.0\.0|without SDP|with a Replaces header|with a Replaces header naming the hub's current call|with an IP address in Record-Route|with an IP address first of two Contacts|and never ACKs|to voicemail|to voicemail, offering ICE))?$"
)]
async fn tester_invite(w: &mut DrlabWorld, number: String, variant: String) -> StepResult {
    let mut ruri = format!("sip:{number}@{}:5061;user=phone", HUB_FQDNS[0]);
    if variant.starts_with("to voicemail") {
        // Case 9.30: ENABLE's Request-URI parameter.
        ruri.push_str(";opaque=app:voicemail");
    }
    let mut headers = vec![(
        "Contact",
        "<sip:+4930123456@sbc.example.com:5061;transport=tls>".to_string(),
    )];
    let mut body = SRTP_SDP.to_string();
    match variant.as_str() {
        "offering RTP/AVP" => body = body.replace("RTP/SAVP", "RTP/AVP").replace("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n", ""),
        "offering only AMR" => body = body.replace("RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000", "RTP/SAVP 96\r\na=rtpmap:96 AMR/8000"),
        "offering only G.729" => body = body.replace("RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000", "RTP/SAVP 18\r\na=rtpmap:18 G729/8000"),
        "with Require: 100rel" => headers.push(("Require", "100rel".into())),
        "with c=0.0.0.0" => body = body.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0"),
        "without SDP" => body.clear(),
        "with a Replaces header" => headers.push(("Replaces", "abc@sbc.example.com;to-tag=1;from-tag=2".into())),
        "with a Replaces header naming the hub's current call" => {
            let lab = w.lab()?;
            let call_id = lock(&lab.hub).calls.back().map(|c| c.call_id.clone());
            let call_id = call_id.ok_or("no call at the hub to name")?;
            headers.push(("Replaces", format!("{call_id};to-tag=1;from-tag=2")));
        }
        "with an IP address in Record-Route" => headers.push(("Record-Route", "<sip:192.0.2.10:5061;transport=tls;lr>".into())),
        "with an IP address first of two Contacts" => headers[0].1 = format!("<sip:192.0.2.10:5061>, {}", headers[0].1),
        // A bypass SBC's offer: ICE-lite, one host candidate (case 9.57).
        "to voicemail, offering ICE" => body = body.replace("t=0 0\r\n", "t=0 0\r\na=ice-lite\r\n") + "a=ice-ufrag:Tsuh\r\na=ice-pwd:xrYbX4aoJ+HFmOhUPPRM4OMs\r\na=candidate:1 1 UDP 2130706431 192.0.2.10 40000 typ host\r\n",
        _ => {}
    }
    send(w, Method::Invite, &ruri, &headers, &body)
}

/// The final response the tester got to its last request.
pub(crate) fn final_answer(w: &DrlabWorld) -> Option<Message> {
    let call = w.tester_call.as_deref()?;
    let lab = w.lab.as_ref()?;
    let view = lock(&lab.tester);
    view.received
        .iter()
        .find(|m| m.status().is_some_and(|c| c >= 200) && m.call_id().ok() == Some(call))
        .cloned()
}

/// Wait up to `limit` for the final answer to the tester's last request
/// and check it is `code`; `who` names the party that answers.
pub(crate) fn expect_final_answer(
    w: &mut DrlabWorld,
    who: &str,
    code: u16,
    limit: Duration,
) -> StepResult {
    let call = w.tester_call.clone().ok_or("the tester sent nothing")?;
    let view = w.lab()?.tester.clone();
    let done = move |_: &crate::world::Lab| {
        lock(&view).received.iter().any(|m| {
            m.status().is_some_and(|c| c >= 200) && m.call_id().ok() == Some(call.as_str())
        })
    };
    w.lab()?.run_until(limit, done).map_err(|e| e.to_string())?;
    let got = final_answer(w);
    let lab = w.lab()?;
    match got {
        Some(m) if m.status() == Some(code) => Ok(()),
        Some(m) => fail(lab, format!("{code} from {who}, got {}", m.summary())),
        None => {
            let problems = lock(&lab.tester).problems.join("; ");
            fail(
                lab,
                format!("{code} from {who}, got no final answer; tester problems: {problems}"),
            )
        }
    }
}

#[then(expr = "the hub answers it with {int}")]
async fn hub_answers_with(w: &mut DrlabWorld, code: u16) -> StepResult {
    // The hub answers at once, or after its Teams user rings and answers.
    expect_final_answer(w, "the hub", code, Duration::from_secs(5))
}

#[then(regex = r"^the answer carries (\S+): (.+)$")]
async fn answer_carries(w: &mut DrlabWorld, name: String, value: String) -> StepResult {
    let m = final_answer(w).ok_or("no answer yet")?;
    if m.headers
        .values(&name)
        .any(|v| v.eq_ignore_ascii_case(&value))
    {
        Ok(())
    } else {
        fail(
            w.lab()?,
            format!(
                "{name}: {value} in {}, it has {:?}",
                m.summary(),
                m.headers.get(&name)
            ),
        )
    }
}

#[then(
    expr = "the hub ends the call with a BYE giving reason {int} about {int} seconds after its 200"
)]
async fn hub_byes_unacked(w: &mut DrlabWorld, ms_code: u32, secs: u64) -> StepResult {
    let call = w.tester_call.clone().ok_or("the client sent nothing")?;
    let lab = w.lab()?;
    let find_bye = |l: &crate::world::Lab| {
        sent(l).into_iter().find(|s| {
            s.label() == "BYE"
                && s.message()
                    .is_some_and(|m| m.call_id().ok() == Some(call.as_str()))
        })
    };
    lab.run_until(Duration::from_secs(secs + 2), |l| find_bye(l).is_some())
        .map_err(|e| e.to_string())?;
    let Some(bye) = find_bye(lab) else {
        return fail(
            lab,
            format!("a BYE from the hub for {call} within {} s", secs + 2),
        );
    };
    let ok = sent(lab).into_iter().find(|s| {
        s.label() == "200 OK (INVITE)"
            && s.message()
                .is_some_and(|m| m.call_id().ok() == Some(call.as_str()))
    });
    let Some(ok) = ok else {
        return fail(lab, "the hub's 200 before its BYE");
    };
    let after = (bye.at_ms - ok.at_ms) / 1000.0;
    if (after - secs as f64).abs() > 0.5 {
        return fail(
            lab,
            format!("the BYE about {secs} s after the 200, it came {after:.3} s after"),
        );
    }
    // Microsoft's code (KB-408: 1106) rides in ms-diagnostics; the Reason
    // (Q.850) is checked by its own step.
    let diag = bye
        .message()
        .and_then(|m| m.headers.get("ms-diagnostics").map(str::to_string))
        .unwrap_or_default();
    if diag.split(';').next() != Some(ms_code.to_string().as_str()) {
        return fail(lab, format!("ms-diagnostics {ms_code}, got {diag:?}"));
    }
    Ok(())
}

/// The last message a hub proxy sent that says why something ended: a
/// final failure response, or a BYE.
fn last_hub_ending(lab: &crate::world::Lab, what: &str) -> Option<crate::trace::Sent> {
    sent(lab).into_iter().rev().find(|s| {
        s.from.ends_with(".pstnhub.microsoft.com")
            && s.message().is_some_and(|m| match what {
                "BYE" => m.method() == Some(&Method::Bye),
                _ => m.status().is_some_and(|c| c >= 300),
            })
    })
}

/// Case 9.59: the hub's Reason is `Q.850;cause=N;text="<guid>;<phrase>"`,
/// with Microsoft's code in ms-diagnostics where it has one. Read with
/// rsip, not with the stack that wrote it.
#[then(
    regex = r"^the hub's last (refusal|BYE) carries Q\.850 cause (\d+)(?: and Microsoft code (\d+))?$"
)]
async fn hub_reason(w: &mut DrlabWorld, what: String, cause: u16, ms_code: String) -> StepResult {
    let lab = w.lab()?;
    lab.run_until(Duration::from_secs(5), |l| {
        last_hub_ending(l, &what).is_some()
    })
    .map_err(|e| e.to_string())?;
    let Some(ending) = last_hub_ending(lab, &what) else {
        return fail(lab, format!("a {what} from the hub"));
    };
    let headers = match ending.rsip() {
        Some(rsip::SipMessage::Request(r)) => r.headers,
        Some(rsip::SipMessage::Response(r)) => r.headers,
        None => return fail(lab, format!("rsip to read the hub's {what}")),
    };
    let Some(reason) = rsip_header(&headers, "Reason") else {
        return fail(lab, format!("a Reason header on the hub's {what}"));
    };
    let parsed = teams_sim::hub::causes::parse_reason(reason);
    let Some((protocol, got, Some(text))) = parsed else {
        return fail(
            lab,
            format!("Reason Q.850;cause=..;text=\"..\", got {reason:?}"),
        );
    };
    if protocol != "Q.850" || got != cause {
        return fail(lab, format!("Reason Q.850 cause {cause}, got {reason:?}"));
    }
    // "<correlation-guid>;<phrase>" (observed: C2T, SYNTH-CDR).
    let guid_ok = text.split_once(';').is_some_and(|(guid, phrase)| {
        guid.len() == 36
            && guid.split('-').map(str::len).eq([8, 4, 4, 4, 12])
            && guid.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
            && !phrase.is_empty()
    });
    if !guid_ok {
        return fail(
            lab,
            format!("Reason text \"<guid>;<phrase>\", got {text:?}"),
        );
    }
    if !ms_code.is_empty() {
        let diag = rsip_header(&headers, "ms-diagnostics").unwrap_or_default();
        if diag.split(';').next() != Some(ms_code.as_str()) {
            return fail(lab, format!("ms-diagnostics {ms_code}, got {diag:?}"));
        }
    }
    Ok(())
}

/// Case 9.30: voicemail answers without any endpoint ringing.
#[then("the hub sent no 180 for it")]
async fn hub_no_ringing(w: &mut DrlabWorld) -> StepResult {
    let call = w.tester_call.clone().ok_or("the client sent nothing")?;
    let lab = w.lab()?;
    let rang = sent(lab).into_iter().any(|s| {
        s.message()
            .is_some_and(|m| m.status() == Some(180) && m.call_id().ok() == Some(call.as_str()))
    });
    if rang {
        return fail(lab, "no 180 from the hub");
    }
    Ok(())
}

/// Case 9.25: which codec the hub's answer chose (its first payload type).
#[then(expr = "the hub's answer uses {word}")]
async fn hub_answer_codec(w: &mut DrlabWorld, codec: String) -> StepResult {
    let m = final_answer(w).ok_or("no answer yet")?;
    let sdp = String::from_utf8_lossy(&m.body).into_owned();
    let pt = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_default()
        .to_string();
    let name = sdp
        .lines()
        .find_map(|l| {
            let (p, rest) = l.strip_prefix("a=rtpmap:")?.split_once(' ')?;
            (p == pt).then(|| rest.split('/').next().unwrap_or_default().to_string())
        })
        .unwrap_or_default();
    if !name.eq_ignore_ascii_case(&codec) {
        return fail(
            w.lab()?,
            format!("an answer using {codec}, it uses {pt} {name:?}"),
        );
    }
    Ok(())
}

/// Case 9.28: to the SBC's INVITE the hub sends 100 Trying first, a 180
/// from each ringing endpoint with a To-tag of its own, at most one 183
/// with SDP (non-bypass), then a 200 with SDP. Read with rsip.
#[then("the hub answers the SBC's INVITE with 100, 180s from distinct forks, one 183 with SDP and a 200")]
async fn hub_fork_shape(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let invite = sent(lab).into_iter().find(|s| {
        s.from == fqdn && s.to.ends_with(".pstnhub.microsoft.com") && s.label() == "INVITE"
    });
    let Some(call_id) = invite
        .and_then(|s| s.message())
        .and_then(|m| m.call_id().ok().map(str::to_string))
    else {
        return fail(lab, "an INVITE from the SBC to the hub");
    };
    // (status, To-tag, has SDP), in the order the hub sent them.
    let answers: Vec<(u16, String, bool)> = sent(lab)
        .into_iter()
        .filter(|s| s.from.ends_with(".pstnhub.microsoft.com") && s.to == fqdn)
        .filter_map(|s| match s.rsip()? {
            rsip::SipMessage::Response(r) => Some(r),
            _ => None,
        })
        .filter(|r| {
            r.headers
                .iter()
                .any(|h| matches!(h, rsip::Header::CallId(c) if c.value() == call_id))
                && r.headers
                    .iter()
                    .any(|h| matches!(h, rsip::Header::CSeq(c) if c.value().ends_with("INVITE")))
        })
        .map(|r| {
            let tag = r
                .headers
                .iter()
                .find_map(|h| match h {
                    rsip::Header::To(t) => t
                        .value()
                        .split(';')
                        .find_map(|p| p.trim().strip_prefix("tag=").map(str::to_string)),
                    _ => None,
                })
                .unwrap_or_default();
            (r.status_code.code(), tag, !r.body.is_empty())
        })
        .collect();
    let codes: Vec<u16> = answers.iter().map(|a| a.0).collect();
    let ringing: std::collections::BTreeSet<&str> = answers
        .iter()
        .filter(|a| a.0 == 180)
        .map(|a| a.1.as_str())
        .collect();
    let early: Vec<_> = answers.iter().filter(|a| a.0 == 183).collect();
    let ok = codes.first() == Some(&100)
        && ringing.len() >= 2
        && early.len() == 1
        && early[0].2
        && answers.last().is_some_and(|a| a.0 == 200 && a.2);
    if !ok {
        return fail(
            lab,
            format!(
                "100, then 180s with distinct To-tags, one 183 with SDP, a 200 with SDP; got {:?}",
                answers
                    .iter()
                    .map(|a| (a.0, a.1.as_str(), a.2))
                    .collect::<Vec<_>>()
            ),
        );
    }
    Ok(())
}
