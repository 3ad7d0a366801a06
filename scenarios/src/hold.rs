//! Steps for re-INVITEs and hold (behaviour §6, case 9.50): a PSTN phone
//! or a Teams user holds and resumes, the hub refreshes a call, and what
//! crosses the SBC toward the other side, checked on the wire and in the
//! far ends' audio counters.

use crate::steps::{fail, last_media, lock, sent, DrlabWorld};
use crate::world::Lab;
use carrier_sim::trunk::{CarrierCommand, HoldStyle};
use cucumber::{given, then, when};
use sbc::sip::sdp::Direction;
use sbc::sip::wire::Message;
use std::time::Duration;
use teams_sim::hub::HubCommand;

type StepResult = Result<(), String>;

#[when(
    regex = r"^the PSTN caller puts the call on hold with (a=sendonly|a=recvonly|c=0\.0\.0\.0)$"
)]
async fn pstn_holds(w: &mut DrlabWorld, how: String) -> StepResult {
    let number = w.caller.clone().ok_or("no PSTN caller in this scenario")?;
    let how = match how.as_str() {
        "a=sendonly" => HoldStyle::SendOnly,
        "a=recvonly" => HoldStyle::RecvOnly,
        _ => HoldStyle::ZeroAddress,
    };
    let lab = w.lab()?;
    lab.carrier_commands
        .send(CarrierCommand::Hold { number, how })
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(200))
        .map_err(|e| e.to_string())
}

#[when("the PSTN caller resumes the call")]
async fn pstn_resumes(w: &mut DrlabWorld) -> StepResult {
    let number = w.caller.clone().ok_or("no PSTN caller in this scenario")?;
    let lab = w.lab()?;
    lab.carrier_commands
        .send(CarrierCommand::Resume { number })
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(200))
        .map_err(|e| e.to_string())
}

/// The Teams user of the latest call (the dialling one, or the called one).
fn teams_user(w: &mut DrlabWorld) -> Result<String, String> {
    if let Some(u) = w.teams_user.clone() {
        return Ok(u);
    }
    let lab = w.lab()?;
    let user = lock(&lab.hub).calls.back().map(|c| c.user.clone());
    user.ok_or_else(|| "no Teams call in this scenario".into())
}

#[when(regex = r"^the Teams user (puts the call on hold|resumes the call)$")]
async fn teams_holds(w: &mut DrlabWorld, what: String) -> StepResult {
    let user = teams_user(w)?;
    let direction = Some(if what.starts_with("puts") {
        Direction::Inactive
    } else {
        Direction::SendRecv
    });
    let lab = w.lab()?;
    lab.hub_commands
        .send(HubCommand::Reinvite { user, direction })
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(200))
        .map_err(|e| e.to_string())
}

#[when("the hub refreshes the call with an unchanged description")]
async fn hub_refreshes(w: &mut DrlabWorld) -> StepResult {
    let user = teams_user(w)?;
    let lab = w.lab()?;
    lab.hub_commands
        .send(HubCommand::Reinvite {
            user,
            direction: None,
        })
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(200))
        .map_err(|e| e.to_string())
}

/// In-dialog INVITEs (re-INVITEs: the To has a tag) from `from` to `to`.
fn reinvites(lab: &Lab, from: &dyn Fn(&str) -> bool, to: &dyn Fn(&str) -> bool) -> Vec<String> {
    sent(lab)
        .into_iter()
        .filter(|s| from(&s.from) && to(&s.to))
        .filter_map(|s| s.message())
        .filter(|m| {
            m.method() == Some(&sbc::sip::wire::Method::Invite)
                && m.headers.get("To").is_some_and(|t| t.contains("tag="))
        })
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

fn is_hub(h: &str) -> bool {
    h.ends_with(".pstnhub.microsoft.com") && !h.starts_with("mp")
}

#[then(regex = r"^the SBC sends (the hub|the carrier) a re-INVITE with (a=inactive|a=sendrecv)$")]
async fn sbc_reinvites(w: &mut DrlabWorld, to: String, line: String) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let from = move |h: &str| h == sbc;
    let to_hub = to == "the hub";
    let target = move |h: &str| {
        if to_hub {
            is_hub(h)
        } else {
            h == crate::world::CARRIER
        }
    };
    let found = |l: &Lab| {
        reinvites(l, &from, &target)
            .last()
            .is_some_and(|sdp| sdp.lines().any(|x| x.trim_end() == line))
    };
    lab.run_until(Duration::from_secs(2), found)
        .map_err(|e| e.to_string())?;
    if !found(lab) {
        let got = reinvites(lab, &from, &target);
        return fail(
            lab,
            format!("a re-INVITE from the SBC to {to} with {line}; its re-INVITEs: {got:?}"),
        );
    }
    // Never sendonly or recvonly toward the hub (case 9.50).
    if to_hub {
        for sdp in reinvites(lab, &from, &target) {
            if sdp.lines().any(|x| x == "a=sendonly" || x == "a=recvonly") {
                return fail(
                    lab,
                    "no sendonly/recvonly in the SBC's re-INVITEs to the hub",
                );
            }
        }
    }
    Ok(())
}

#[then("audio stops both ways")]
async fn audio_stops(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let Some((teams, pstn)) = last_media(lab) else {
        return fail(lab, "a call with media on both sides");
    };
    // Let what was already in flight land, then nothing more may.
    lab.run_for(Duration::from_millis(200))
        .map_err(|e| e.to_string())?;
    let (t0, p0) = (lock(&teams).received, lock(&pstn).received);
    lab.run_for(Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    let (t1, p1) = (lock(&teams).received, lock(&pstn).received);
    if t1 != t0 || p1 != p0 {
        return fail(
            lab,
            format!(
                "no audio for a second on hold; the Teams side got {} frames, the phone {}",
                t1 - t0,
                p1 - p0
            ),
        );
    }
    Ok(())
}

#[then("the SBC answers the hub's refresh with its description unchanged")]
async fn refresh_unchanged(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    // The SBC's 200s to INVITEs from the hub, in order: the answer, then
    // the refresh's. RFC 3264 §8: an unchanged description keeps its o=.
    let origins = |l: &Lab| -> Vec<String> {
        sent(l)
            .into_iter()
            .filter(|s| s.from == sbc && is_hub(&s.to))
            .filter_map(|s| s.message())
            .filter(|m| {
                m.status() == Some(200)
                    && m.cseq()
                        .is_ok_and(|c| c.method == sbc::sip::wire::Method::Invite)
                    && !m.body.is_empty()
            })
            .filter_map(|m| {
                String::from_utf8_lossy(&m.body)
                    .lines()
                    .find(|l| l.starts_with("o="))
                    .map(str::to_string)
            })
            .collect()
    };
    lab.run_until(Duration::from_secs(2), |l| origins(l).len() >= 2)
        .map_err(|e| e.to_string())?;
    let o = origins(lab);
    match o.as_slice() {
        [.., before, after] if before == after => Ok(()),
        _ => fail(lab, format!("two 200s with the same o= line, got {o:?}")),
    }
}

#[then("the hub reports that the SBC held the call with a=sendonly")]
async fn hub_reports_sendonly(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let found = |l: &Lab| {
        lock(&l.hub)
            .sbc_violations
            .iter()
            .any(|v| v.contains("a=sendonly"))
    };
    lab.run_until(Duration::from_secs(2), found)
        .map_err(|e| e.to_string())?;
    if !found(lab) {
        let v = lock(&lab.hub).sbc_violations.clone();
        return fail(lab, format!("the hub to report a=sendonly; it has {v:?}"));
    }
    Ok(())
}

// ----- session timers (RFC 4028, cases 9.51, 9.52) -----

#[given(regex = r"^the hub asks for a session timer of (\d+) seconds$")]
async fn hub_session_timer(w: &mut DrlabWorld, secs: u32) -> StepResult {
    if w.lab.is_some() {
        return Err(
            "the hub's session timer is set before the world is built: put this \
                    step before `Given the SBC is registered in the tenant as <fqdn>`"
                .into(),
        );
    }
    if secs < 90 {
        return Err(format!("{secs} s is below RFC 4028's Min-SE floor of 90"));
    }
    w.session_expires = Some(secs);
    Ok(())
}

#[then(regex = r"^the (SBC|hub) has sent the (hub|SBC) (\d+) re-INVITEs?$")]
async fn reinvite_count(w: &mut DrlabWorld, from: String, _to: String, n: usize) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let (s1, s2) = (sbc.clone(), sbc);
    let got = if from == "SBC" {
        reinvites(lab, &move |h: &str| h == s1, &is_hub).len()
    } else {
        reinvites(lab, &is_hub, &move |h: &str| h == s2).len()
    };
    if got != n {
        return fail(
            lab,
            format!("{n} re-INVITE(s) from the {from}, it sent {got}"),
        );
    }
    Ok(())
}

#[then(regex = r"^the hub ends the call with a BYE about (\d+) seconds after its 200$")]
async fn hub_bye_after_answer(w: &mut DrlabWorld, secs: u64) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let (s1, s2) = (sbc.clone(), sbc);
    let ok = move |l: &Lab| {
        sent(l)
            .into_iter()
            .find(|s| is_hub(&s.from) && s.to == s1 && s.label() == "200 OK (INVITE)")
    };
    let bye = move |l: &Lab| {
        sent(l)
            .into_iter()
            .find(|s| is_hub(&s.from) && s.to == s2 && s.label() == "BYE")
    };
    lab.run_until(Duration::from_secs(secs + 5), |l| bye(l).is_some())
        .map_err(|e| e.to_string())?;
    let (Some(ok), Some(bye)) = (ok(lab), bye(lab)) else {
        return fail(lab, "the hub's 200 and then its BYE");
    };
    let after = (bye.at_ms - ok.at_ms) / 1000.0;
    if (after - secs as f64).abs() > 1.0 {
        return fail(
            lab,
            format!("the BYE about {secs} s after the 200, it came {after:.3} s after"),
        );
    }
    Ok(())
}

#[then("the PSTN caller hears the call end")]
async fn pstn_call_ends(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let ended = |l: &Lab| {
        lock(&l.carrier)
            .calls
            .back()
            .is_some_and(|c| matches!(c.state, carrier_sim::trunk::PstnState::Ended(_)))
    };
    lab.run_until(Duration::from_secs(5), ended)
        .map_err(|e| e.to_string())?;
    if !ended(lab) {
        let state = lock(&lab.carrier).calls.back().map(|c| c.state.clone());
        return fail(lab, format!("the PSTN call to end, it is {state:?}"));
    }
    Ok(())
}

/// Glare (RFC 3261 §14.1): both ends re-INVITE in the same instant, so
/// re-INVITEs cross on a leg of the SBC.
#[when("the PSTN caller and the Teams user put the call on hold at once")]
async fn both_hold(w: &mut DrlabWorld) -> StepResult {
    let number = w.caller.clone().ok_or("no PSTN caller in this scenario")?;
    let user = teams_user(w)?;
    let lab = w.lab()?;
    lab.carrier_commands
        .send(CarrierCommand::Hold {
            number,
            how: HoldStyle::SendOnly,
        })
        .map_err(|e| e.to_string())?;
    lab.hub_commands
        .send(HubCommand::Reinvite {
            user,
            direction: Some(Direction::Inactive),
        })
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(200))
        .map_err(|e| e.to_string())
}

/// A re-INVITE answered 491 and the same side's re-INVITE sent again
/// afterwards (the §14.1 back-off: 2.1–4 s for the owner of the Call-ID,
/// 0–2 s for the other), every re-INVITE finally answered 200.
#[then("a re-INVITE met 491 and was sent again")]
async fn glare_resolved(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    lab.run_for(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let msgs: Vec<(String, String, Message)> = sent(lab)
        .into_iter()
        .filter_map(|s| Some((s.from.clone(), s.to.clone(), s.message()?)))
        .collect();
    let is_reinvite = |m: &Message| {
        m.method() == Some(&sbc::sip::wire::Method::Invite)
            && m.to_header()
                .ok()
                .and_then(|t| t.tag().map(str::to_string))
                .is_some()
    };
    let Some(pos) = msgs.iter().position(|(_, _, m)| m.status() == Some(491)) else {
        return fail(lab, "a 491 for crossing re-INVITEs");
    };
    // The 491 goes back to the side whose re-INVITE it refused.
    let (refuser, refused) = (msgs[pos].0.clone(), msgs[pos].1.clone());
    let retried = msgs[pos + 1..]
        .iter()
        .any(|(f, t, m)| *f == refused && *t == refuser && is_reinvite(m));
    if !retried {
        return fail(
            lab,
            format!("{refused} to send its re-INVITE to {refuser} again after the 491"),
        );
    }
    Ok(())
}

#[given("the SBC refreshes sessions with UPDATE where the peer allows it")]
async fn sbc_refreshes_with_update(w: &mut DrlabWorld) -> StepResult {
    let how = sbc::sip::session::RefreshMethod::Update;
    w.lab()?
        .sut
        .set(sbc::b2bua::SbcCommand::SessionRefresh(how))
}

/// UPDATEs from the SBC to the hub and how the hub answered each.
#[then(regex = r"^the SBC has sent the hub (\d+) UPDATEs?(?:, each answered (\d+))?$")]
async fn sbc_updates(w: &mut DrlabWorld, n: usize, code: String) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let msgs: Vec<(String, String, Message)> = sent(lab)
        .into_iter()
        .filter_map(|s| Some((s.from.clone(), s.to.clone(), s.message()?)))
        .collect();
    let updates = msgs
        .iter()
        .filter(|(f, t, m)| {
            *f == sbc && is_hub(t) && m.method() == Some(&sbc::sip::wire::Method::Update)
        })
        .count();
    if updates != n {
        return fail(
            lab,
            format!("{n} UPDATE(s) from the SBC to the hub, it sent {updates}"),
        );
    }
    if let Ok(code) = code.parse::<u16>() {
        let answers: Vec<u16> = msgs
            .iter()
            .filter(|(f, t, m)| {
                is_hub(f)
                    && *t == sbc
                    && m.cseq()
                        .is_ok_and(|c| c.method == sbc::sip::wire::Method::Update)
            })
            .filter_map(|(_, _, m)| m.status())
            .filter(|s| *s >= 200)
            .collect();
        if answers.len() != n || answers.iter().any(|c| *c != code) {
            return fail(
                lab,
                format!("each UPDATE answered {code}; the hub answered {answers:?}"),
            );
        }
    }
    Ok(())
}
