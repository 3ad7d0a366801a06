//! Steps that check what the SBC refuses and how it ends calls it cannot
//! keep, driven through the scripted tester standing where the carrier
//! (UDP) or the hub (TLS with the hub's certificate) stands.

use crate::conformance::{expect_final_answer, final_answer};
use crate::steps::{fail, sent, DrlabWorld};
use crate::tester::{Identity, TesterCommand, TESTER, TESTER_UDP};
use cucumber::{then, when};
use sbc::sip::transport::TransportKind;
use sbc::sip::wire::{Message, Method};
use std::time::Duration;

type StepResult = Result<(), String>;

fn plain_sdp(ip: &str) -> String {
    format!(
        "v=0\r\no=- 7 7 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio 30000 RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

const SRTP_SDP: &str = "v=0\r\no=- 7 7 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n\
m=audio 50000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^31\r\na=rtcp-mux\r\n";

pub(crate) fn send(
    w: &mut DrlabWorld,
    m: Message,
    transport: TransportKind,
    identity: Identity,
) -> StepResult {
    let lab = w.lab()?;
    let host = lab.config.sbc_fqdn.clone();
    let (udp, tls) = lab.sbc_ports();
    let port = if transport == TransportKind::Tls {
        tls
    } else {
        udp
    };
    lab.tester_send(TesterCommand {
        host,
        port,
        transport,
        identity,
        message: m,
    })
    .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(10))
        .map_err(|e| e.to_string())
}

#[when(
    regex = r"^a carrier sends the SBC an INVITE for (\+?\d+)(?: (without Contact|with Max-Forwards: 0|with Require: \S+|from anonymous|from \S+|withholding the caller's number|and never ACKs))?$"
)]
async fn carrier_invite(w: &mut DrlabWorld, number: String, variant: String) -> StepResult {
    w.tester_sent += 1;
    let n = w.tester_sent;
    let ip = w.lab()?.sim.lookup(TESTER).to_string();
    let call_id = format!("carrier-{n}@{TESTER}");
    let sbc = w.lab()?.config.sbc_fqdn.clone();
    let port = w.lab()?.sbc_ports().0;
    let ruri = format!("sip:{number}@{sbc}:{port}");
    let mut m = Message::request(Method::Invite, ruri.clone());
    m.headers.push(
        "Via",
        format!("SIP/2.0/UDP {ip}:{TESTER_UDP};branch=z9hG4bKcarrier{n};rport"),
    );
    let from = match variant.strip_prefix("from ") {
        Some("anonymous") => "\"Anonymous\" <sip:anonymous@anonymous.invalid>".to_string(),
        // A caller number as carriers write it: a tel: URI as is.
        Some(tel) if tel.starts_with("tel:") => format!("<{tel}>"),
        Some(number) => format!("<sip:{number}@{ip}>"),
        None => format!("<sip:030123456@{ip}>"),
    };
    m.headers.push("From", format!("{from};tag=carrier{n}"));
    m.headers.push("To", format!("<{ruri}>"));
    m.headers.push("Call-ID", call_id.clone());
    m.headers.push("CSeq", "1 INVITE");
    let max_forwards = if variant == "with Max-Forwards: 0" {
        "0"
    } else {
        "70"
    };
    m.headers.push("Max-Forwards", max_forwards);
    if variant != "without Contact" {
        m.headers
            .push("Contact", format!("<sip:030123456@{ip}:{TESTER_UDP}>"));
    }
    if let Some(opt) = variant.strip_prefix("with Require: ") {
        m.headers.push("Require", opt);
    }
    if variant == "withholding the caller's number" {
        // RFC 3323: the number in From, withheld by Privacy.
        m.headers.push("Privacy", "id");
    }
    m.set_body("application/sdp", plain_sdp(&ip).into_bytes());
    w.tester_call = Some(call_id);
    send(w, m, TransportKind::Udp, Identity::Sbc)
}

#[when(regex = r"^a hub sends the SBC an INVITE for (\+\d+) and never ACKs$")]
async fn hub_invite(w: &mut DrlabWorld, number: String) -> StepResult {
    w.tester_sent += 1;
    let n = w.tester_sent;
    let call_id = format!("hub-{n}@{TESTER}");
    let sbc = w.lab()?.config.sbc_fqdn.clone();
    let port = w.lab()?.sbc_ports().1;
    let ruri = format!("sip:{number}@{sbc}:{port};user=phone;transport=tls");
    let mut m = Message::request(Method::Invite, ruri.clone());
    m.headers.push(
        "Via",
        format!("SIP/2.0/TLS {TESTER}:5061;branch=z9hG4bKhub{n}"),
    );
    m.headers.push(
        "From",
        format!("<sip:+4989000001@sip.pstnhub.microsoft.com:5061;user=phone>;tag=hub{n}"),
    );
    m.headers.push("To", format!("<{ruri}>"));
    m.headers.push("Call-ID", call_id.clone());
    m.headers.push("CSeq", "1 INVITE");
    m.headers.push("Max-Forwards", "70");
    m.headers.push(
        "Record-Route",
        "<sip:sip.pstnhub.microsoft.com:5061;transport=tls;lr>",
    );
    m.headers.push(
        "Contact",
        "<sip:api-du-a-euwe.pstnhub.microsoft.com:443;x-i=tester>",
    );
    m.set_body("application/sdp", SRTP_SDP.as_bytes().to_vec());
    w.tester_call = Some(call_id);
    send(w, m, TransportKind::Tls, Identity::Hub)
}

#[then(expr = "the SBC answers it with {int}")]
async fn sbc_answers_with(w: &mut DrlabWorld, code: u16) -> StepResult {
    // At once for a refusal; after the far end rings and answers for a 200.
    expect_final_answer(w, "the SBC", code, Duration::from_secs(15))
}

#[then(regex = r"^the SBC's answer carries (\S+): (.+)$")]
async fn sbc_answer_carries(w: &mut DrlabWorld, name: String, value: String) -> StepResult {
    let m = final_answer(w).ok_or("no answer yet")?;
    if m.headers
        .values(&name)
        .any(|v| v.eq_ignore_ascii_case(&value))
    {
        return Ok(());
    }
    let got = m.headers.get(&name).map(str::to_string);
    fail(
        w.lab()?,
        format!("{name}: {value} in {}, it has {got:?}", m.summary()),
    )
}

/// Number normalisation: the SBC's INVITE to the hub carries E.164 in
/// From and in the Request-URI (behaviour §3.1), read by rsip.
#[then(regex = r"^the SBC's INVITE to (\S+) is from (\+\d+) for (\+\d+)$")]
async fn invite_numbers(
    w: &mut DrlabWorld,
    to: String,
    from: String,
    called: String,
) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let find = |l: &crate::world::Lab| {
        sent(l)
            .into_iter()
            .find(|s| s.from == fqdn && s.to == to && s.label() == "INVITE")
    };
    lab.run_until(Duration::from_secs(5), |l| find(l).is_some())
        .map_err(|e| e.to_string())?;
    let Some(invite) = find(lab) else {
        return fail(lab, format!("an INVITE from the SBC to {to}"));
    };
    let Some(rsip::SipMessage::Request(r)) = invite.rsip() else {
        return fail(lab, "the SBC's INVITE to read as a request (rsip)");
    };
    use rsip::headers::ToTypedHeader;
    use rsip::message::HeadersExt;
    let from_user = r
        .from_header()
        .ok()
        .and_then(|h| h.typed().ok())
        .and_then(|t| t.uri.auth.map(|a| a.user));
    let ruri_user = r.uri.auth.as_ref().map(|a| a.user.clone());
    if from_user.as_deref() != Some(from.as_str()) || ruri_user.as_deref() != Some(called.as_str())
    {
        return fail(
            lab,
            format!("From {from} and Request-URI {called}; the SBC wrote From {from_user:?}, Request-URI {ruri_user:?}"),
        );
    }
    Ok(())
}

/// Case 9.55 both ways: an anonymous caller stays anonymous, in the form
/// Teams uses, whichever side hides it.
#[then(regex = r"^the (SBC|hub) sends the INVITE to (\S+) from anonymous@anonymous\.invalid$")]
async fn invite_anonymous(w: &mut DrlabWorld, party: String, to: String) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let by = move |from: &str| match party.as_str() {
        "SBC" => from == fqdn,
        _ => from.ends_with(".pstnhub.microsoft.com"),
    };
    let find = |l: &crate::world::Lab| {
        sent(l)
            .into_iter()
            .find(|s| by(&s.from) && s.to == to && s.label() == "INVITE")
    };
    lab.run_until(Duration::from_secs(5), |l| find(l).is_some())
        .map_err(|e| e.to_string())?;
    let Some(invite) = find(lab) else {
        return fail(lab, format!("an INVITE to {to}"));
    };
    // Read by rsip, not by the stack that wrote it.
    let Some(rsip::SipMessage::Request(r)) = invite.rsip() else {
        return fail(lab, "the SBC's INVITE to read as a request (rsip)");
    };
    use rsip::headers::ToTypedHeader;
    use rsip::message::HeadersExt;
    let from = r
        .from_header()
        .map_err(|e| e.to_string())?
        .typed()
        .map_err(|e| e.to_string())?;
    let user = from
        .uri
        .auth
        .as_ref()
        .map(|a| a.user.clone())
        .unwrap_or_default();
    let host = from.uri.host_with_port.host.to_string();
    if user != "anonymous" || host != "anonymous.invalid" {
        return fail(
            lab,
            format!("From anonymous@anonymous.invalid, got {}", from.uri),
        );
    }
    Ok(())
}

#[then(expr = "the SBC ends both legs with BYE about {int} seconds after its 200")]
async fn sbc_byes_both_legs(w: &mut DrlabWorld, secs: u64) -> StepResult {
    let call = w.tester_call.clone().ok_or("the tester sent nothing")?;
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let byes = |l: &crate::world::Lab| {
        sent(l)
            .into_iter()
            .filter(|s| s.from == fqdn && s.label() == "BYE")
            .collect::<Vec<_>>()
    };
    let both = |l: &crate::world::Lab| {
        let b = byes(l);
        let ours = b
            .iter()
            .any(|s| s.message().is_some_and(|m| m.call_id().ok() == Some(&call)));
        let other = b
            .iter()
            .any(|s| s.message().is_some_and(|m| m.call_id().ok() != Some(&call)));
        ours && other
    };
    lab.run_until(Duration::from_secs(secs + 5), both)
        .map_err(|e| e.to_string())?;
    let ok = sent(lab).into_iter().find(|s| {
        s.from == fqdn
            && s.label() == "200 OK (INVITE)"
            && s.message()
                .is_some_and(|m| m.call_id().ok() == Some(call.as_str()))
    });
    let Some(ok) = ok else {
        return fail(lab, "the SBC's 200 to the unacknowledged INVITE");
    };
    if !both(lab) {
        return fail(
            lab,
            format!(
                "a BYE from the SBC on both legs within {} s of its 200",
                secs + 5
            ),
        );
    }
    for bye in byes(lab) {
        let after = (bye.at_ms - ok.at_ms) / 1000.0;
        if (after - secs as f64).abs() > 1.0 {
            return fail(
                lab,
                format!(
                    "each BYE about {secs} s after the 200, one to {} came {after:.3} s after",
                    bye.to
                ),
            );
        }
    }
    Ok(())
}
