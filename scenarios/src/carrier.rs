//! Steps for the carrier's PSTN phones (issue: carrier-sim): what a called
//! phone does (answer, busy, no answer, congestion, decline, unallocated
//! number, early media first), when a phone hangs up, and what crosses the
//! SBC toward the hub: the status and the PSTN's Q.850 cause in a `Reason`
//! header (RFC 3326), read from the bytes with rsip.

use crate::steps::{fail, lock, rsip_header, sent, DrlabWorld};
use crate::world::{Lab, TRUNK_PASSWORD, TRUNK_REALM, TRUNK_USER};
use carrier_sim::trunk::{CarrierCommand, Outcome, PhoneScript, TrunkAuth};
use cucumber::{given, then, when};
use sbc::b2bua::numbers::{Pattern, Rule};
use sbc::b2bua::register::RegistrationState;
use sbc::sip::digest::Algorithm;
use std::time::Duration;
use teams_sim::hub::{CallDirection, CallState};

type StepResult = Result<(), String>;

/// Change one phone's script (the steps build it up) and send it.
fn script(w: &mut DrlabWorld, number: &str, change: impl FnOnce(&mut PhoneScript)) -> StepResult {
    let mut s = w.phone_scripts.get(number).copied().unwrap_or_default();
    change(&mut s);
    w.phone_scripts.insert(number.to_string(), s);
    let lab = w.lab()?;
    lab.carrier_commands
        .send(CarrierCommand::Script {
            number: number.to_string(),
            script: s,
        })
        .map_err(|e| e.to_string())
}

#[given(
    regex = r"^PSTN phone (\S+) (is busy|is congested|declines calls|is an unallocated number|answers)$"
)]
async fn phone_outcome(w: &mut DrlabWorld, number: String, what: String) -> StepResult {
    let outcome = match what.as_str() {
        "is busy" => Outcome::Busy,
        "is congested" => Outcome::Congestion,
        "declines calls" => Outcome::Reject,
        "is an unallocated number" => Outcome::Unallocated,
        _ => Outcome::Answer,
    };
    script(w, &number, |s| s.outcome = outcome)
}

#[given(regex = r"^PSTN phone (\S+) rings for (\d+) s without answering$")]
async fn phone_no_answer(w: &mut DrlabWorld, number: String, secs: u64) -> StepResult {
    script(w, &number, |s| {
        s.outcome = Outcome::NoAnswer;
        s.ring_timeout = Duration::from_secs(secs);
    })
}

#[given(regex = r"^PSTN phone (\S+) sends early media first$")]
async fn phone_early_media(w: &mut DrlabWorld, number: String) -> StepResult {
    script(w, &number, |s| s.early_media = true)
}

#[given(regex = r"^PSTN phone (\S+) hangs up (\d+) s after the answer$")]
async fn phone_hangs_up_after(w: &mut DrlabWorld, number: String, secs: u64) -> StepResult {
    script(w, &number, |s| {
        s.hang_up_after = Some(Duration::from_secs(secs))
    })
}

fn is_hub(host: &str) -> bool {
    host.ends_with(".pstnhub.microsoft.com") && !host.starts_with("mp")
}

/// RFC 3326: the SBC passes the PSTN's final status and cause on to the
/// hub. Read from the SBC's bytes with rsip.
#[then(regex = r#"^the SBC answers the hub's INVITE with (\d+) and Reason "(.+)"$"#)]
async fn sbc_final_to_hub(w: &mut DrlabWorld, code: u16, reason: String) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let status = format!("SIP/2.0 {code} ");
    let find = move |l: &Lab| {
        sent(l)
            .into_iter()
            .find(|s| s.from == sbc && is_hub(&s.to) && s.raw.starts_with(status.as_bytes()))
    };
    lab.run_until(Duration::from_secs(40), |l| find(l).is_some())
        .map_err(|e| e.to_string())?;
    let Some(response) = find(lab) else {
        return fail(lab, format!("a {code} from the SBC to the hub"));
    };
    let Some(rsip::SipMessage::Response(r)) = response.rsip() else {
        return fail(lab, format!("rsip to read the SBC's {code}"));
    };
    match rsip_header(&r.headers, "Reason") {
        Some(v) if v.trim() == reason => Ok(()),
        other => fail(
            lab,
            format!("the SBC's {code} to carry Reason: {reason}, it carries {other:?}"),
        ),
    }
}

/// RFC 3960: a 183 with SDP, and the phone's own audio at the Teams end
/// while the Teams user's call is not answered.
#[then(regex = r"^the Teams user hears the phone's early media before any answer$")]
async fn teams_hears_early_media(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let sides = |l: &Lab| {
        let hub = lock(&l.hub);
        let call = hub
            .calls
            .iter()
            .rev()
            .find(|c| c.direction == CallDirection::Outbound)?;
        let carrier = lock(&l.carrier);
        let phone = carrier.calls.back()?;
        let own = lock(&phone.media).own_ssrc;
        let teams = lock(&call.media).clone();
        Some((call.state.clone(), own, teams))
    };
    let heard = |x: &Option<(CallState, Option<u32>, drlab_sim::MediaStats)>| {
        x.as_ref().is_some_and(|(state, own, teams)| {
            !matches!(state, CallState::Answered | CallState::Ended(_))
                && own.is_some()
                && teams.last_ssrc == *own
                && teams.from_source >= 25
        })
    };
    lab.run_until(Duration::from_secs(10), |l| {
        let x = sides(l);
        heard(&x)
            || x.is_some_and(|(s, _, _)| matches!(s, CallState::Answered | CallState::Ended(_)))
    })
    .map_err(|e| e.to_string())?;
    let x = sides(lab);
    if !heard(&x) {
        return fail(
            lab,
            format!(
                "half a second of the phone's audio at the Teams end before any answer; saw {x:?}"
            ),
        );
    }
    Ok(())
}

/// The phone's script ends the call: its BYE comes about `secs` after the
/// 200 to the INVITE on the carrier leg.
#[then(regex = r"^the phone hangs up about (\d+) s after answering$")]
async fn phone_hangs_up(w: &mut DrlabWorld, secs: u64) -> StepResult {
    let lab = w.lab()?;
    let carrier = crate::world::CARRIER;
    let times = |l: &Lab| {
        let all = sent(l);
        // The answer on the carrier leg: the phone's 200 (a call to it) or
        // the SBC's (a call from it).
        let ok = all.iter().find(|s| {
            (s.from == carrier || s.to == carrier)
                && s.raw.starts_with(b"SIP/2.0 200 ")
                && s.message().is_some_and(|m| {
                    m.headers
                        .get("CSeq")
                        .is_some_and(|c| c.trim_end().ends_with("INVITE"))
                })
        })?;
        let bye = all
            .iter()
            .find(|s| s.from == carrier && s.raw.starts_with(b"BYE "))?;
        Some((ok.at_ms, bye.at_ms))
    };
    lab.run_until(Duration::from_secs(secs + 15), |l| times(l).is_some())
        .map_err(|e| e.to_string())?;
    let Some((ok, bye)) = times(lab) else {
        return fail(lab, "the phone's 200 to the INVITE, then its BYE");
    };
    let after = (bye - ok) / 1000.0;
    if (after - secs as f64).abs() > 0.5 {
        return fail(
            lab,
            format!("the phone's BYE about {secs} s after its 200, it came {after:.3} s after"),
        );
    }
    Ok(())
}

/// The voice quality a listener gets (RFC 3550 figures, the probes'
/// jitter buffer, the G.107 E-model), over at least 3 s of its current
/// source's audio.
#[then(
    regex = r"^(the PSTN phone|the Teams side) hears the other side with MOS (above|below) (\d+(?:\.\d+)?)$"
)]
async fn hears_with_mos(w: &mut DrlabWorld, side: String, how: String, bound: f64) -> StepResult {
    const FRAMES: u64 = 150;
    let lab = w.lab()?;
    let Some((teams, pstn)) = crate::steps::last_media(lab) else {
        return fail(lab, "a call with media on both sides");
    };
    let stats = if side == "the PSTN phone" {
        pstn
    } else {
        teams
    };
    let s2 = stats.clone();
    let enough = move |_: &Lab| {
        lock(&s2)
            .quality
            .as_ref()
            .is_some_and(|q| q.report().received >= FRAMES)
    };
    lab.run_until(Duration::from_secs(10), enough)
        .map_err(|e| e.to_string())?;
    let Some(report) = lock(&stats).quality.as_ref().map(|q| q.report()) else {
        return fail(lab, format!("audio at {side}"));
    };
    let ok = if how == "above" {
        report.mos > bound
    } else {
        report.mos < bound
    };
    if !ok || report.received < FRAMES {
        return fail(
            lab,
            format!("{side} to hear at least {FRAMES} frames with MOS {how} {bound}: {report}"),
        );
    }
    Ok(())
}

// ----- the trunk: static-IP ACL, registration with digest -----

/// A header's value as rsip writes it back, typed or not (rsip types
/// Authorization and Proxy-Authorization).
fn any_header(headers: &rsip::Headers, name: &str) -> Option<String> {
    headers.iter().find_map(|h| {
        let line = h.to_string();
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn no_world_yet(w: &DrlabWorld) -> StepResult {
    if w.has_lab() {
        return Err(
            "trunk settings come before `Given the SBC is registered in the tenant`".into(),
        );
    }
    Ok(())
}

#[given(regex = r"^the carrier requires registration with (MD5|SHA-256|SHA-256 or MD5) digest$")]
async fn carrier_requires_registration(w: &mut DrlabWorld, how: String) -> StepResult {
    no_world_yet(w)?;
    let algorithms = match how.as_str() {
        "MD5" => vec![Algorithm::Md5],
        "SHA-256" => vec![Algorithm::Sha256],
        _ => vec![Algorithm::Sha256, Algorithm::Md5],
    };
    w.trunk.auth = Some(TrunkAuth {
        realm: TRUNK_REALM.into(),
        username: TRUNK_USER.into(),
        password: TRUNK_PASSWORD.into(),
        algorithms,
        nonce_lifetime: Duration::from_secs(300),
        challenge_invites: true,
        max_expires: 3600,
    });
    Ok(())
}

#[given(regex = r"^the carrier grants registrations for (\d+) s and its nonces last (\d+) s$")]
async fn carrier_lifetimes(w: &mut DrlabWorld, expires: u32, nonce: u64) -> StepResult {
    no_world_yet(w)?;
    let auth = w
        .trunk
        .auth
        .as_mut()
        .ok_or("no registration trunk in this scenario")?;
    auth.max_expires = expires;
    auth.nonce_lifetime = Duration::from_secs(nonce);
    Ok(())
}

#[given(regex = r"^the SBC is configured with the wrong carrier password$")]
async fn wrong_password(w: &mut DrlabWorld) -> StepResult {
    no_world_yet(w)?;
    w.trunk.sbc_password = Some("not-the-password".into());
    Ok(())
}

#[given(regex = r"^the SBC takes calls only from the carrier's own address$")]
async fn strict_acl(w: &mut DrlabWorld) -> StepResult {
    no_world_yet(w)?;
    w.trunk.strict_acl = true;
    Ok(())
}

/// The REGISTERs the SBC sent, read with rsip, with their times.
fn registers(l: &Lab) -> Vec<(f64, rsip::Request)> {
    let sbc = l.config.sbc_fqdn.clone();
    sent(l)
        .into_iter()
        .filter(|s| s.from == sbc && s.raw.starts_with(b"REGISTER "))
        .filter_map(|s| match s.rsip() {
            Some(rsip::SipMessage::Request(r)) => Some((s.at_ms, r)),
            _ => None,
        })
        .collect()
}

/// The carrier's answers to REGISTERs: (time, status, the raw text).
fn register_answers(l: &Lab) -> Vec<(f64, u16, String)> {
    sent(l)
        .into_iter()
        .filter(|s| s.from == crate::world::CARRIER && s.raw.starts_with(b"SIP/2.0 "))
        .filter_map(|s| {
            let text = String::from_utf8_lossy(&s.raw).into_owned();
            let register = text
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("cseq:") && l.ends_with("REGISTER"));
            let code = text.get(8..11)?.parse().ok()?;
            register.then_some((s.at_ms, code, text))
        })
        .collect()
}

#[then(regex = r"^the SBC registers with the carrier using (MD5|SHA-256) after a 401$")]
async fn sbc_registers(w: &mut DrlabWorld, algorithm: String) -> StepResult {
    let lab = w.lab()?;
    let done = |l: &Lab| {
        register_answers(l).iter().any(|(_, c, _)| *c == 200)
            && l.sbc_view().is_some_and(|v| {
                matches!(
                    lock(&v).registration,
                    Some(RegistrationState::Registered { .. })
                )
            })
    };
    lab.run_until(Duration::from_secs(10), done)
        .map_err(|e| e.to_string())?;
    let answers = register_answers(lab);
    let codes: Vec<u16> = answers.iter().map(|(_, c, _)| *c).collect();
    if codes.first() != Some(&401) || codes.last() != Some(&200) {
        return fail(
            lab,
            format!("a 401, then a 200 to the SBC's REGISTERs; the carrier answered {codes:?}"),
        );
    }
    // The last REGISTER's Authorization, read with rsip (not our parser's
    // typed form) and checked against the carrier's realm.
    let Some((_, r)) = registers(lab).pop() else {
        return fail(lab, "a REGISTER from the SBC");
    };
    let auth = any_header(&r.headers, "Authorization").unwrap_or_default();
    let wants = [
        format!("algorithm={algorithm}"),
        "qop=auth".to_string(),
        format!("realm=\"{TRUNK_REALM}\""),
        format!("username=\"{TRUNK_USER}\""),
    ];
    if wants.iter().any(|x| !auth.contains(x.as_str())) {
        return fail(lab, format!("the SBC's last REGISTER to carry Authorization with {wants:?}; it carries {auth:?}"));
    }
    let registered = lab
        .sbc_view()
        .map(|v| lock(&v).registration.clone())
        .unwrap_or_default();
    if !matches!(registered, Some(RegistrationState::Registered { .. })) {
        return fail(
            lab,
            format!("the SBC to see itself registered; it says {registered:?}"),
        );
    }
    Ok(())
}

#[then(regex = r"^the carrier refuses the SBC's registration with (\d+) and the SBC logs why$")]
async fn registration_refused(w: &mut DrlabWorld, code: u16) -> StepResult {
    let lab = w.lab()?;
    let refused = |l: &Lab| register_answers(l).iter().any(|(_, c, _)| *c == code);
    lab.run_until(Duration::from_secs(10), refused)
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(100))
        .map_err(|e| e.to_string())?;
    let codes: Vec<u16> = register_answers(lab).iter().map(|(_, c, _)| *c).collect();
    // One challenge, one answer with the wrong password: never a loop.
    if codes != vec![401, code] {
        return fail(
            lab,
            format!("401 then {code}, and no more REGISTERs; the carrier answered {codes:?}"),
        );
    }
    let (state, problems) = lab
        .sbc_view()
        .map(|v| {
            let v = lock(&v);
            (v.registration.clone(), v.problems.joined("; "))
        })
        .unwrap_or_default();
    if !matches!(state, Some(RegistrationState::Failed(_)))
        || !problems.contains("registration refused")
    {
        return fail(
            lab,
            format!("the SBC to log the refusal; state {state:?}, problems: {problems}"),
        );
    }
    Ok(())
}

#[then(regex = r"^the SBC registers again within (\d+) s, its stale nonce answered anew$")]
async fn registers_again_stale(w: &mut DrlabWorld, secs: u64) -> StepResult {
    let lab = w.lab()?;
    let start = lab.now();
    let twice = |l: &Lab| {
        register_answers(l)
            .iter()
            .filter(|(_, c, _)| *c == 200)
            .count()
            >= 2
    };
    lab.run_until(Duration::from_secs(secs), twice)
        .map_err(|e| e.to_string())?;
    let answers = register_answers(lab);
    let stale = answers
        .iter()
        .any(|(_, c, t)| *c == 401 && t.to_ascii_lowercase().contains("stale=true"));
    let codes: Vec<u16> = answers.iter().map(|(_, c, _)| *c).collect();
    if !twice(lab) || !stale {
        return fail(
            lab,
            format!("a refresh within {secs} s of {start:?} through a 401 with stale=true; the carrier answered {codes:?}"),
        );
    }
    Ok(())
}

#[then(
    regex = r"^the carrier challenges the SBC's INVITE with 407 and the SBC answers with credentials$"
)]
async fn invite_challenged(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let invites = |l: &Lab| {
        sent(l)
            .into_iter()
            .filter(|s| {
                s.from == sbc && s.to == crate::world::CARRIER && s.raw.starts_with(b"INVITE ")
            })
            .collect::<Vec<_>>()
    };
    lab.run_until(Duration::from_secs(10), |l| invites(l).len() >= 2)
        .map_err(|e| e.to_string())?;
    let all = invites(lab);
    let challenged = sent(lab)
        .into_iter()
        .any(|s| s.from == crate::world::CARRIER && s.raw.starts_with(b"SIP/2.0 407 "));
    let second = all.get(1).and_then(|s| s.rsip());
    let creds = match &second {
        Some(rsip::SipMessage::Request(r)) => any_header(&r.headers, "Proxy-Authorization"),
        _ => None,
    };
    if !challenged || !creds.as_deref().is_some_and(|c| c.contains(TRUNK_USER)) {
        return fail(lab, format!("a 407 from the carrier, then an INVITE with Proxy-Authorization; second INVITE's credentials: {creds:?}"));
    }
    Ok(())
}

#[then(regex = r"^the SBC sent no INVITE to the hub$")]
async fn no_invite_to_hub(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    lab.run_for(Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    let sbc = lab.config.sbc_fqdn.clone();
    if let Some(s) = sent(lab)
        .iter()
        .find(|s| s.from == sbc && is_hub(&s.to) && s.raw.starts_with(b"INVITE "))
    {
        return fail(
            lab,
            format!("no INVITE to the hub, but the SBC sent one to {}", s.to),
        );
    }
    let problems = lab
        .sbc_view()
        .map(|v| lock(&v).problems.joined("; "))
        .unwrap_or_default();
    if !problems.contains("not a carrier gateway (ACL)") {
        return fail(
            lab,
            format!("the SBC to log the refusal by its ACL; it logged: {problems}"),
        );
    }
    Ok(())
}

// ----- several carrier gateways: OPTIONS health and failover -----

#[given(regex = r"^the carrier has a second gateway, which the SBC tries first$")]
async fn second_gateway(w: &mut DrlabWorld) -> StepResult {
    no_world_yet(w)?;
    w.trunk.second_gateway = true;
    Ok(())
}

#[given(regex = r"^the carrier gateway (\S+) is down$")]
async fn gateway_down(w: &mut DrlabWorld, host: String) -> StepResult {
    let lab = w.lab()?;
    if host != crate::world::CARRIER && host != crate::world::GATEWAY2 {
        return Err(format!("no carrier gateway {host} in this world"));
    }
    if !lab.hosts.contains(&host) {
        return Err(format!(
            "{host} is not in this world (a second gateway needs its Given)"
        ));
    }
    lab.sim.crash(host.as_str())?;
    Ok(())
}

#[given(regex = r"^the carrier gateway (\S+) answers calls to (\S+) with 503$")]
async fn gateway_congested(w: &mut DrlabWorld, host: String, number: String) -> StepResult {
    let lab = w.lab()?;
    let commands = if host == crate::world::GATEWAY2 {
        lab.gateway2.as_ref().map(|(_, c)| c.clone())
    } else if host == crate::world::CARRIER {
        Some(lab.carrier_commands.clone())
    } else {
        None
    };
    let commands = commands.ok_or_else(|| format!("no carrier gateway {host} in this world"))?;
    let script = PhoneScript {
        outcome: Outcome::Congestion,
        ..PhoneScript::default()
    };
    commands
        .send(CarrierCommand::Script { number, script })
        .map_err(|e| e.to_string())
}

#[then(regex = r"^the SBC marks the carrier gateway (\S+) down within (\d+) s$")]
async fn sbc_marks_down(w: &mut DrlabWorld, host: String, secs: u64) -> StepResult {
    let lab = w.lab()?;
    let gateway = format!("{host}:5060");
    let down = |l: &Lab| {
        l.sbc_view()
            .is_some_and(|v| lock(&v).gateways_down.contains(&gateway))
    };
    lab.run_until(Duration::from_secs(secs), down)
        .map_err(|e| e.to_string())?;
    if !down(lab) {
        return fail(
            lab,
            format!("the SBC to mark {gateway} down within {secs} s"),
        );
    }
    Ok(())
}

// ----- DTMF (RFC 4733) end to end -----

#[given(regex = r"^PSTN phone (\S+) numbers telephone-event (\d+)$")]
async fn phone_te(w: &mut DrlabWorld, number: String, pt: u8) -> StepResult {
    if !(96..=127).contains(&pt) {
        return Err(format!("{pt} is not a dynamic payload type (96-127)"));
    }
    script(w, &number, |s| s.telephone_event = pt)
}

/// The audio counters of the latest call at the Teams end or the PSTN end.
fn end_stats(lab: &Lab, teams: bool) -> Option<crate::steps::SharedStats> {
    let (t, p) = crate::steps::last_media(lab)?;
    Some(if teams { t } else { p })
}

#[when(regex = r"^the (Teams user|PSTN caller|PSTN phone) presses (\S+)$")]
async fn presses(w: &mut DrlabWorld, who: String, keys: String) -> StepResult {
    if let Some(bad) = keys
        .chars()
        .find(|k| sbc::media::dtmf::event_of(*k).is_none())
    {
        return Err(format!("{bad:?} is not a DTMF key (0-9, *, #, A-D)"));
    }
    let lab = w.lab()?;
    let stats = end_stats(lab, who == "Teams user").ok_or("no call with media yet")?;
    lock(&stats).dtmf_out.extend(keys.chars());
    Ok(())
}

#[then(
    regex = r"^the (Teams user|PSTN caller|PSTN phone) receives the digits (\S+)( before any answer)?$"
)]
async fn receives_digits(
    w: &mut DrlabWorld,
    who: String,
    keys: String,
    early: String,
) -> StepResult {
    let lab = w.lab()?;
    let teams = who == "Teams user";
    let stats = end_stats(lab, teams).ok_or("no call with media yet")?;
    let s2 = stats.clone();
    let k2 = keys.clone();
    // A key press is 160 ms of packets; a few keys, a few links.
    lab.run_until(Duration::from_secs(5), move |_| {
        lock(&s2).dtmf_received.len() >= k2.len()
    })
    .map_err(|e| e.to_string())?;
    let got = lock(&stats).dtmf_received.clone();
    if got != keys {
        let relays: Vec<_> = lab
            .sbc_view()
            .map(|v| lock(&v).relays.iter().map(|r| lock(r).clone()).collect())
            .unwrap_or_default();
        return fail(
            lab,
            format!("the {who} to receive {keys:?}, it received {got:?}; SBC relays {relays:?}"),
        );
    }
    if !early.is_empty() {
        let state = lock(&lab.hub)
            .calls
            .iter()
            .rev()
            .find(|c| c.direction == CallDirection::Outbound)
            .map(|c| c.state.clone());
        if matches!(state, Some(CallState::Answered | CallState::Ended(_))) {
            return fail(
                lab,
                format!("the digits before any answer; the Teams call is {state:?}"),
            );
        }
    }
    Ok(())
}

#[then(regex = r"^the SBC renumbered telephone-events both ways$")]
async fn renumbered(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let relay = lab
        .sbc_view()
        .and_then(|v| lock(&v).relays.back().map(|r| lock(r).clone()));
    match relay {
        Some(r) if r.renumbered_a > 0 && r.renumbered_b > 0 => Ok(()),
        other => fail(
            lab,
            format!("events renumbered from each leg; relay {other:?}"),
        ),
    }
}

// ----- call records and the figures drawn from them -----

#[then(
    regex = r"^the carrier's last call record has final code (\d+)(?:, cause (\d+))?, ended by the (caller|callee|network)(?:, and a PDD of about (\d+) ms)?$"
)]
async fn last_record(
    w: &mut DrlabWorld,
    code: u16,
    cause: String,
    by: String,
    pdd: String,
) -> StepResult {
    let lab = w.lab()?;
    // The record is written when the phone's side of the call ends.
    lab.run_until(Duration::from_secs(5), |l| {
        lock(&l.carrier)
            .records
            .back()
            .is_some_and(|r| r.final_code == code)
    })
    .map_err(|e| e.to_string())?;
    let Some(r) = lock(&lab.carrier).records.back().cloned() else {
        return fail(lab, "a call record at the carrier");
    };
    let line = r.json();
    // Read back from the JSON line, as a user's tooling would.
    let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
    let mut wrong = Vec::new();
    if v["final_code"] != code {
        wrong.push("final_code");
    }
    if !cause.is_empty() && v["q850"] != cause.parse::<u64>().unwrap_or(0) {
        wrong.push("q850");
    }
    if v["ended_by"] != by.as_str() {
        wrong.push("ended_by");
    }
    if let Ok(ms) = pdd.parse::<u64>() {
        let got = v["pdd_ms"].as_u64().unwrap_or(u64::MAX);
        if got.abs_diff(ms) > 50 {
            wrong.push("pdd_ms");
        }
    }
    if !wrong.is_empty() {
        return fail(lab, format!("the last record right in {wrong:?}: {line}"));
    }
    Ok(())
}

#[then(regex = r"^the (carrier|SBC)'s call records give ASR (\d+) % and NER (\d+) %$")]
async fn records_kpis(w: &mut DrlabWorld, whose: String, asr: f64, ner: f64) -> StepResult {
    let lab = w.lab()?;
    // The SBC writes a call's record once both legs and the relay are done.
    lab.run_for(Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    let records: Vec<_> = if whose == "SBC" {
        let view = lab
            .sbc_view()
            .ok_or("the SBC under test keeps no records we can read")?;
        let v = lock(&view);
        v.records.iter().cloned().collect()
    } else {
        lock(&lab.carrier).records.iter().cloned().collect()
    };
    let k = sbc::records::Kpis::of(&records);
    if k.asr.round() != asr || k.ner.round() != ner {
        let lines: Vec<String> = records.iter().map(|r| r.json()).collect();
        return fail(
            lab,
            format!(
                "ASR {asr} % and NER {ner} %; the records give {k}:\n{}",
                lines.join("\n")
            ),
        );
    }
    Ok(())
}

// ----- number rules -----

#[given(regex = r"^the SBC rewrites carrier numbers (matching|starting with) (\S+) to (\S+)$")]
async fn to_e164_rule(
    w: &mut DrlabWorld,
    how: String,
    pattern: String,
    replace: String,
) -> StepResult {
    no_world_yet(w)?;
    let rule = rule(&how, &pattern, replace)?;
    w.trunk.number_rules.to_e164.push(rule);
    Ok(())
}

#[given(regex = r"^the SBC writes numbers to the carrier (matching|starting with) (\S+) as (\S+)$")]
async fn from_e164_rule(
    w: &mut DrlabWorld,
    how: String,
    pattern: String,
    replace: String,
) -> StepResult {
    no_world_yet(w)?;
    let rule = rule(&how, &pattern, replace)?;
    w.trunk.number_rules.from_e164.push(rule);
    Ok(())
}

fn rule(how: &str, pattern: &str, replace: String) -> Result<Rule, String> {
    let pattern = if how == "matching" {
        Pattern::Regex(regex::Regex::new(pattern).map_err(|e| e.to_string())?)
    } else {
        Pattern::Prefix(pattern.to_string())
    };
    Ok(Rule { pattern, replace })
}

/// What the SBC sent the carrier as the called number (the Request-URI's
/// user part, read by rsip).
#[then(regex = r"^the SBC's INVITE to the carrier is for (\S+)$")]
async fn invite_to_carrier_for(w: &mut DrlabWorld, number: String) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let find = |l: &Lab| {
        sent(l).into_iter().find(|s| {
            s.from == sbc && s.to == crate::world::CARRIER && s.raw.starts_with(b"INVITE ")
        })
    };
    lab.run_until(Duration::from_secs(5), |l| find(l).is_some())
        .map_err(|e| e.to_string())?;
    let user = find(lab).and_then(|s| match s.rsip() {
        Some(rsip::SipMessage::Request(r)) => r.uri.auth.map(|a| a.user),
        _ => None,
    });
    if user.as_deref() != Some(number.as_str()) {
        return fail(
            lab,
            format!("an INVITE to the carrier for {number}, the SBC's is for {user:?}"),
        );
    }
    Ok(())
}

/// A PSTN caller who gives up while the Teams user rings: the carrier's
/// CANCEL (RFC 3261 §9) is answered 200 and its INVITE 487; the SBC
/// CANCELs its INVITE to the hub the same way. Read from the trace.
#[then(regex = r"^the PSTN caller's CANCEL ends both legs with 487$")]
async fn cancel_ends_both(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let seen = |l: &Lab| {
        let all = sent(l);
        let has = |from: &str, to_hub: bool, start: &[u8], cseq: &str| {
            all.iter().any(|s| {
                (s.from == from)
                    && (if to_hub {
                        is_hub(&s.to)
                    } else {
                        s.to == crate::world::CARRIER || s.to == sbc
                    })
                    && s.raw.starts_with(start)
                    && String::from_utf8_lossy(&s.raw)
                        .lines()
                        .any(|l| l.to_ascii_lowercase().starts_with("cseq:") && l.ends_with(cseq))
            })
        };
        let carrier = crate::world::CARRIER;
        // Carrier leg: CANCEL from the carrier, 200 and 487 from the SBC.
        has(carrier, false, b"CANCEL ", "CANCEL")
            && has(&sbc, false, b"SIP/2.0 200 ", "CANCEL")
            && has(&sbc, false, b"SIP/2.0 487 ", "INVITE")
            // Teams leg: the SBC's CANCEL, the hub's 487.
            && has(&sbc, true, b"CANCEL ", "CANCEL")
            && all.iter().any(|s| {
                is_hub(&s.from) && s.to == sbc && s.raw.starts_with(b"SIP/2.0 487 ")
            })
    };
    lab.run_until(Duration::from_secs(5), seen)
        .map_err(|e| e.to_string())?;
    if !seen(lab) {
        return fail(
            lab,
            "CANCEL, 200 and 487 on the carrier leg and on the Teams leg",
        );
    }
    Ok(())
}
