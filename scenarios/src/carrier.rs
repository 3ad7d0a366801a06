//! Steps for the carrier's PSTN phones (issue: carrier-sim): what a called
//! phone does (answer, busy, no answer, congestion, decline, unallocated
//! number, early media first), when a phone hangs up, and what crosses the
//! SBC toward the hub: the status and the PSTN's Q.850 cause in a `Reason`
//! header (RFC 3326), read from the bytes with rsip.

use crate::steps::{fail, lock, rsip_header, sent, DrlabWorld};
use crate::world::Lab;
use carrier_sim::trunk::{CarrierCommand, Outcome, PhoneScript};
use cucumber::{given, then};
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
