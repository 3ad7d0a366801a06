//! Steps for transfers (behaviour §5, cases 9.43–9.48): a Teams user
//! transfers a call (blind, or after holding it for a consultation), a
//! call queue's agent takes a call over with Replaces, and what the SBC
//! does about it, judged on the wire bytes the way the hub reads them and
//! in the far ends' audio counters.

use crate::steps::{fail, lock, sent, DrlabWorld};
use crate::trace::Sent;
use crate::world::{Lab, CARRIER};
use cucumber::{given, then, when};
use sbc::b2bua::{SbcCommand, TransferMode};
use sbc::sip::sdp::Direction;
use std::time::Duration;
use teams_sim::hub::raw::RawMessage;
use teams_sim::hub::{CallState, HubCommand, TransferHow, TransferRecord};

type StepResult = Result<(), String>;

fn is_hub(h: &str) -> bool {
    h.ends_with(".pstnhub.microsoft.com") && !h.starts_with("mp")
}

/// The latest transfer to `user`, as the hub recorded it.
fn transfer_to(lab: &Lab, user: &str) -> Option<TransferRecord> {
    lock(&lab.hub)
        .transfers
        .iter()
        .rev()
        .find(|t| t.to_user == user)
        .cloned()
}

/// Messages one party sent another, read as the hub reads bytes.
fn raw_between(
    lab: &Lab,
    from: impl Fn(&str) -> bool,
    to: impl Fn(&str) -> bool,
) -> Vec<(Sent, RawMessage)> {
    sent(lab)
        .into_iter()
        .filter(|s| from(&s.from) && to(&s.to))
        .filter_map(|s| RawMessage::read(&s.raw).ok().map(|r| (s, r)))
        .collect()
}

#[given("the SBC leaves transfers to the hub")]
async fn sbc_without_refer(w: &mut DrlabWorld) -> StepResult {
    w.lab()?
        .sut
        .set(SbcCommand::Transfers(TransferMode::HubOnly))
}

#[given("the SBC passes transfers on to the carrier")]
async fn sbc_refers_carrier(w: &mut DrlabWorld) -> StepResult {
    w.lab()?
        .sut
        .set(SbcCommand::Transfers(TransferMode::Carrier))
}

/// The SBC passed the hub's REFER on to the carrier, which accepted it and
/// called the SBC back on the Refer-To it was given.
#[then("the SBC REFERs the carrier, which calls the Refer-To back")]
async fn carrier_referred(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let s2 = sbc.clone();
    let refer = raw_between(lab, |h| h == sbc, |h| h == CARRIER)
        .into_iter()
        .map(|(_, r)| r)
        .find(|r| r.start_line.starts_with("REFER "));
    let Some(refer) = refer else {
        return fail(lab, "a REFER from the SBC to the carrier");
    };
    let Some(target) = refer
        .first("Refer-To")
        .map(|v| teams_sim::hub::raw::uri_of(v).to_string())
    else {
        return fail(lab, "a Refer-To on the SBC's REFER");
    };
    let from_carrier = raw_between(lab, |h| h == CARRIER, |h| h == s2);
    let accepted = from_carrier.iter().any(|(_, r)| {
        r.start_line.starts_with("SIP/2.0 202")
            && r.first("CSeq").is_some_and(|c| c.ends_with("REFER"))
    });
    let called_back = from_carrier.iter().any(|(_, r)| {
        r.start_line.starts_with("INVITE ") && r.request_uri() == Some(target.as_str())
    });
    if !accepted || !called_back {
        return fail(
            lab,
            format!("the carrier to answer the REFER 202 and INVITE {target}; 202: {accepted}, INVITE: {called_back}"),
        );
    }
    Ok(())
}

#[when(regex = r"^(\S+) transfers the call to (\S+)$")]
async fn transfers(w: &mut DrlabWorld, user: String, to: String) -> StepResult {
    let lab = w.lab()?;
    lab.hub_commands
        .send(HubCommand::Transfer { user, to })
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(200))
        .map_err(|e| e.to_string())
}

#[when(regex = r"^(\S+) puts the call on hold to consult$")]
async fn holds_to_consult(w: &mut DrlabWorld, user: String) -> StepResult {
    let lab = w.lab()?;
    lab.hub_commands
        .send(HubCommand::Reinvite {
            user,
            direction: Some(Direction::Inactive),
        })
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(500))
        .map_err(|e| e.to_string())
}

#[when(regex = r"^(\S+) takes (\S+)'s call from the call queue$")]
async fn queue_pick_up(w: &mut DrlabWorld, agent: String, user: String) -> StepResult {
    let lab = w.lab()?;
    lab.hub_commands
        .send(HubCommand::PickUp {
            user,
            agent,
            unknown_dialog: false,
        })
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(200))
        .map_err(|e| e.to_string())
}

#[when(
    regex = r"^the hub sends the SBC an INVITE replacing (\S+)'s call but naming a dialog the SBC does not have$"
)]
async fn bogus_replaces(w: &mut DrlabWorld, user: String) -> StepResult {
    let lab = w.lab()?;
    lab.hub_commands
        .send(HubCommand::PickUp {
            user,
            agent: "Bob".into(),
            unknown_dialog: true,
        })
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(200))
        .map_err(|e| e.to_string())
}

#[then(
    regex = r"^the transfer to (\S+) completes (by REFER|inside Teams|by INVITE with Replaces)$"
)]
async fn transfer_completes(w: &mut DrlabWorld, user: String, how: String) -> StepResult {
    let lab = w.lab()?;
    let want = match how.as_str() {
        "by REFER" => TransferHow::Refer,
        "inside Teams" => TransferHow::Internal,
        _ => TransferHow::Replaces,
    };
    let u = user.clone();
    let done = move |l: &Lab| transfer_to(l, &u).is_some_and(|t| t.outcome.is_some());
    lab.run_until(Duration::from_secs(60), done)
        .map_err(|e| e.to_string())?;
    let Some(t) = transfer_to(lab, &user) else {
        return fail(lab, format!("a transfer to {user}, the hub recorded none"));
    };
    if t.how != want || t.outcome != Some(Ok(())) {
        return fail(
            lab,
            format!("the transfer to {user} to complete {how}; the hub recorded {t:?}"),
        );
    }
    if want == TransferHow::Refer {
        // The hub ends the old leg itself once the SBC reports 200 (KB-XFER).
        let old = |l: &Lab| {
            lock(&l.hub)
                .calls
                .iter()
                .any(|c| c.state == CallState::Ended(format!("transferred to {user}")))
        };
        lab.run_until(Duration::from_secs(5), old)
            .map_err(|e| e.to_string())?;
        if !old(lab) {
            return fail(lab, "the hub to end the transferred leg");
        }
    }
    Ok(())
}

#[then(regex = r"^the transfer to (\S+) fails: (.+)$")]
async fn transfer_fails(w: &mut DrlabWorld, user: String, why: String) -> StepResult {
    let lab = w.lab()?;
    let u = user.clone();
    let done = move |l: &Lab| transfer_to(l, &u).is_some_and(|t| t.outcome.is_some());
    lab.run_until(Duration::from_secs(90), done)
        .map_err(|e| e.to_string())?;
    let t = transfer_to(lab, &user);
    let matched = t
        .as_ref()
        .and_then(|t| t.outcome.clone())
        .is_some_and(|o| o.is_err_and(|e| e.contains(&why)));
    if !matched {
        return fail(
            lab,
            format!("the transfer to {user} to fail with \"{why}\"; the hub recorded {t:?}"),
        );
    }
    Ok(())
}

/// Cases 9.43 and 9.45, read from the bytes: the hub's REFER as Microsoft
/// writes it, the SBC's 202, and its INVITE back to the hub with the
/// Refer-To as Request-URI and the Referred-By byte for byte.
#[then("the SBC accepts the REFER and calls the Refer-To back with the Referred-By unchanged")]
async fn refer_followed(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let s2 = sbc.clone();
    let refers = raw_between(lab, is_hub, |h| h == sbc);
    let Some((_, refer)) = refers
        .iter()
        .find(|(_, r)| r.start_line.starts_with("REFER "))
    else {
        return fail(lab, "a REFER from the hub");
    };
    let refer_to = refer.lines("Refer-To").first().map(|v| v.to_string());
    let referred_by = refer.lines("Referred-By").first().map(|v| v.to_string());
    let (Some(refer_to), Some(referred_by)) = (refer_to, referred_by) else {
        return fail(lab, "Refer-To and Referred-By on the hub's REFER");
    };
    let target = teams_sim::hub::raw::uri_of(&refer_to).to_string();
    // Case 9.43: the proxy FQDN with either an E.164 user or x-m and x-t.
    let e164 = target
        .strip_prefix("sip:+")
        .and_then(|r| r.split_once('@'))
        .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let mri = target.contains("x-m=") && target.contains("x-t=");
    if !(e164 || mri) || !referred_by.contains("x-tt=") {
        return fail(
            lab,
            format!("+E.164 or x-m/x-t in Refer-To and x-tt in Referred-By; got {refer_to} / {referred_by}"),
        );
    }
    let from_sbc = raw_between(lab, |h| h == s2, is_hub);
    let accepted = from_sbc.iter().any(|(_, r)| {
        r.start_line.starts_with("SIP/2.0 202")
            && r.first("CSeq").is_some_and(|c| c.ends_with("REFER"))
    });
    if !accepted {
        return fail(lab, "202 Accepted from the SBC for the REFER");
    }
    let invite = from_sbc.iter().find(|(_, r)| {
        r.start_line.starts_with("INVITE ") && r.request_uri() == Some(target.as_str())
    });
    let Some((_, invite)) = invite else {
        return fail(
            lab,
            format!("an INVITE from the SBC with Request-URI {target}"),
        );
    };
    if invite.lines("Referred-By") != [referred_by.as_str()] {
        return fail(
            lab,
            format!(
                "Referred-By {referred_by} unchanged; the SBC sent {:?}",
                invite.lines("Referred-By")
            ),
        );
    }
    Ok(())
}

/// Case 9.46: NOTIFYs with `Event: refer` and `message/sipfrag`, one per
/// status, the last one ending the subscription.
#[then(regex = r"^the SBC reports the transfer in NOTIFYs: (.+)$")]
async fn notifies(w: &mut DrlabWorld, list: String) -> StepResult {
    let lab = w.lab()?;
    let want: Vec<u16> = list
        .split(',')
        .map(|x| x.trim().parse().map_err(|_| format!("not a status: {x}")))
        .collect::<Result<_, _>>()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let notifies: Vec<RawMessage> = raw_between(lab, |h| h == sbc, is_hub)
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r.start_line.starts_with("NOTIFY "))
        .collect();
    // A retransmission over TLS does not happen; each NOTIFY counts once.
    let mut got = Vec::new();
    for n in &notifies {
        let event = n.first("Event").unwrap_or_default().to_ascii_lowercase();
        let ctype = n
            .first("Content-Type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !event.starts_with("refer") || !ctype.starts_with("message/sipfrag") {
            return fail(
                lab,
                format!("Event: refer and message/sipfrag, got {event:?} / {ctype:?}"),
            );
        }
        let body = String::from_utf8_lossy(&n.body).to_string();
        let code = body
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("a sipfrag status line, got {body:?}"))?;
        got.push(code);
    }
    if got != want {
        return fail(lab, format!("NOTIFYs for {want:?}, the SBC sent {got:?}"));
    }
    let last_terminates = notifies.last().is_some_and(|n| {
        n.first("Subscription-State")
            .is_some_and(|s| s.to_ascii_lowercase().starts_with("terminated"))
    });
    if !last_terminates {
        return fail(lab, "the last NOTIFY to end the subscription (terminated)");
    }
    Ok(())
}

/// The PSTN party now talks to `user`: the new Teams call's media
/// processor hears the PSTN phone, and the phone hears that media
/// processor's own stream (its SSRC), each decrypted and in order.
#[then(regex = r"^the PSTN caller hears (\S+), decrypted and in order$")]
async fn pstn_hears_user(w: &mut DrlabWorld, user: String) -> StepResult {
    const FRAMES: u32 = 50;
    let lab = w.lab()?;
    let u = user.clone();
    let teams_of = move |l: &Lab| {
        lock(&l.hub)
            .calls
            .iter()
            .rev()
            .find(|c| c.user == u && c.state == CallState::Answered)
            .map(|c| c.media.clone())
    };
    lab.run_until(Duration::from_secs(10), |l| teams_of(l).is_some())
        .map_err(|e| e.to_string())?;
    let Some(teams) = teams_of(lab) else {
        return fail(lab, format!("an answered call of {user} at the hub"));
    };
    let Some(pstn) = lock(&lab.carrier).calls.back().map(|c| c.media.clone()) else {
        return fail(lab, "a PSTN call");
    };
    let (t0, p0) = (lock(&teams).clone(), lock(&pstn).clone());
    let (t2, p2) = (teams.clone(), pstn.clone());
    lab.run_until(Duration::from_secs(10), move |_| {
        let (t, p) = (lock(&t2), lock(&p2));
        t.received >= t0.received + FRAMES
            && p.own_ssrc.is_some()
            && t.own_ssrc == p.last_ssrc
            && p.from_source >= FRAMES
    })
    .map_err(|e| e.to_string())?;
    let (t, p) = (lock(&teams).clone(), lock(&pstn).clone());
    let clean = |s: &drlab_sim::MediaStats, b: &drlab_sim::MediaStats| {
        s.out_of_order == b.out_of_order
            && s.corrupt == b.corrupt
            && s.unprotect_errors == b.unprotect_errors
    };
    if t.received < t0.received + FRAMES || !clean(&t, &t0) {
        return fail(lab, format!("{FRAMES} frames from the PSTN phone at {user}'s media processor, intact and in order; it saw {t:?}"));
    }
    if t.own_ssrc != p.last_ssrc || p.from_source < FRAMES || !clean(&p, &p0) {
        return fail(lab, format!("{FRAMES} frames of {user}'s stream (SSRC {:?}) at the PSTN phone, in order; it saw {p:?}", t.own_ssrc));
    }
    Ok(())
}

#[then("no REFER was sent")]
async fn no_refer(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    if sent(lab).iter().any(|s| s.raw.starts_with(b"REFER ")) {
        return fail(lab, "no REFER on the wire");
    }
    Ok(())
}

/// New INVITEs (no To-tag) from the SBC to the carrier: a transfer must
/// not place another PSTN call.
#[then(regex = r"^the carrier has been sent (\d+) new calls?$")]
async fn carrier_calls(w: &mut DrlabWorld, n: usize) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let got = raw_between(lab, |h| h == sbc, |h| h == CARRIER)
        .iter()
        .filter(|(_, r)| {
            r.start_line.starts_with("INVITE ")
                && r.first("To")
                    .is_some_and(|t| !t.to_ascii_lowercase().contains("tag="))
        })
        .count();
    if got != n {
        return fail(
            lab,
            format!("{n} new INVITE(s) from the SBC to the carrier, it sent {got}"),
        );
    }
    Ok(())
}

/// The SBC's final answer to the hub's INVITE with Replaces.
#[then(regex = r"^the SBC answers the INVITE with Replaces with (\d+)$")]
async fn replaces_answer(w: &mut DrlabWorld, code: u16) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let call_id = |l: &Lab| {
        raw_between(l, is_hub, |h| h == sbc)
            .into_iter()
            .find(|(_, r)| r.start_line.starts_with("INVITE ") && r.has("Replaces"))
            .and_then(|(_, r)| r.first("Call-ID").map(str::to_string))
    };
    let s2 = lab.config.sbc_fqdn.clone();
    let answer = move |l: &Lab| {
        let id = call_id(l)?;
        raw_between(l, |h| h == s2, is_hub)
            .into_iter()
            .filter(|(_, r)| r.first("Call-ID") == Some(id.as_str()))
            .filter(|(_, r)| r.first("CSeq").is_some_and(|c| c.ends_with("INVITE")))
            .filter_map(|(_, r)| r.start_line.split(' ').nth(1)?.parse::<u16>().ok())
            .find(|c| *c >= 200)
    };
    lab.run_until(Duration::from_secs(5), |l| answer(l).is_some())
        .map_err(|e| e.to_string())?;
    match answer(lab) {
        Some(c) if c == code => Ok(()),
        other => fail(
            lab,
            format!("{code} to the INVITE with Replaces, got {other:?}"),
        ),
    }
}

#[then(regex = r#"^the hub holds against the SBC: "(.+)"$"#)]
async fn held_against(w: &mut DrlabWorld, needle: String) -> StepResult {
    let lab = w.lab()?;
    let n = needle.clone();
    lab.run_until(Duration::from_secs(5), move |l| {
        lock(&l.hub).sbc_violations.iter().any(|v| v.contains(&n))
    })
    .map_err(|e| e.to_string())?;
    let v = lock(&lab.hub).sbc_violations.clone();
    if !v.iter().any(|x| x.contains(&needle)) {
        return fail(
            lab,
            format!("the hub to hold \"{needle}\" against the SBC; it has {v:?}"),
        );
    }
    Ok(())
}

/// After a transfer to a PSTN number the two PSTN phones talk through the
/// SBC and the hub's bridge: each hears the other's own stream (its SSRC),
/// in order.
#[then(regex = r"^the PSTN caller and PSTN phone (\S+) hear each other, in order$")]
async fn phones_hear_each_other(w: &mut DrlabWorld, number: String) -> StepResult {
    const FRAMES: u32 = 50;
    let caller = w.caller.clone().ok_or("no PSTN caller in this scenario")?;
    let lab = w.lab()?;
    let stats = |l: &Lab, n: &str| {
        lock(&l.carrier)
            .calls
            .iter()
            .rev()
            .find(|c| c.phone == n)
            .map(|c| c.media.clone())
    };
    let (n2, c2) = (number.clone(), caller.clone());
    lab.run_until(Duration::from_secs(30), move |l| {
        let (Some(a), Some(b)) = (stats(l, &c2), stats(l, &n2)) else {
            return false;
        };
        let (a, b) = (lock(&a).clone(), lock(&b).clone());
        a.own_ssrc.is_some()
            && b.own_ssrc.is_some()
            && a.last_ssrc == b.own_ssrc
            && b.last_ssrc == a.own_ssrc
            && a.from_source >= FRAMES
            && b.from_source >= FRAMES
    })
    .map_err(|e| e.to_string())?;
    let (Some(a), Some(b)) = (stats(lab, &caller), stats(lab, &number)) else {
        return fail(
            lab,
            format!("calls of {caller} and {number} at the carrier"),
        );
    };
    let (a, b) = (lock(&a).clone(), lock(&b).clone());
    let ok = |x: &drlab_sim::MediaStats, y: &drlab_sim::MediaStats| {
        x.last_ssrc == y.own_ssrc
            && x.from_source >= FRAMES
            && x.corrupt == 0
            && x.unprotect_errors == 0
    };
    if !ok(&a, &b) || !ok(&b, &a) || b.out_of_order != 0 {
        return fail(
            lab,
            format!(
                "{caller} and {number} to hear each other; {caller} saw {a:?}, {number} saw {b:?}"
            ),
        );
    }
    Ok(())
}

/// A Teams user, by name, hangs up their call (after a transfer, the one
/// who has it now).
#[when(regex = r"^(\S+) hangs up$")]
async fn named_user_hangs_up(w: &mut DrlabWorld, user: String) -> StepResult {
    let lab = w.lab()?;
    lab.hub_commands
        .send(HubCommand::HangUp { user })
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(10))
        .map_err(|e| e.to_string())
}

/// KB-XFER: the transferee hears the target ring. The target's early
/// media (the media processor's ringback, in its 183) reaches the PSTN
/// phone while the target's call is still ringing.
#[then(regex = r"^the PSTN caller hears (\S+)'s ringback before (?:she|he|they) answers?$")]
async fn hears_ringback(w: &mut DrlabWorld, user: String) -> StepResult {
    let lab = w.lab()?;
    let Some(pstn) = lock(&lab.carrier).calls.back().map(|c| c.media.clone()) else {
        return fail(lab, "a PSTN call");
    };
    // (state of the target's call, its media processor's SSRC)
    let target = move |l: &Lab, u: &str| {
        let hub = lock(&l.hub);
        let call = hub.calls.iter().rev().find(|c| c.user == u)?;
        let own = lock(&call.media).own_ssrc;
        Some((call.state.clone(), own))
    };
    let heard = |p: &drlab_sim::MediaStats, t: &Option<(CallState, Option<u32>)>| {
        t.as_ref().is_some_and(|(state, own)| {
            *state != CallState::Answered
                && own.is_some()
                && p.last_ssrc == *own
                && p.from_source >= 10
        })
    };
    let (u2, p2) = (user.clone(), pstn.clone());
    lab.run_until(Duration::from_secs(10), move |l| {
        let t = target(l, &u2);
        heard(&lock(&p2), &t) || t.is_some_and(|(s, _)| s == CallState::Answered)
    })
    .map_err(|e| e.to_string())?;
    let t = target(lab, &user);
    let p = lock(&pstn).clone();
    if !heard(&p, &t) {
        return fail(
            lab,
            format!("the PSTN phone to hear {user}'s stream while {user} rings; {user}'s call is {t:?}, the phone saw {p:?}"),
        );
    }
    Ok(())
}
