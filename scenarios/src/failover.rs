//! Steps for failover both ways (behaviour §4): the hub moving an outbound
//! call across the tenant's SBCs and proxies (cases 9.33–9.37), and the
//! SBC's duties after the hub's 503 and 603 (cases 9.41, 9.42), judged by
//! the hub from what it receives.

use crate::steps::{fail, lock, sent, DrlabWorld};
use crate::world::{Lab, SecondSbc};
use cucumber::{given, then};
use drlab_sim::scripted_sbc::InviteScript;
use std::time::Duration;
use teams_sim::hub::{CallDirection, CallState};

type StepResult = Result<(), String>;

/// Read "answers INVITEs with 503", "rings and then answers 503", "never
/// answers INVITEs", "is down".
fn script(text: &str) -> Result<Option<InviteScript>, String> {
    let code = |s: &str| -> Result<u16, String> {
        s.trim()
            .parse()
            .ok()
            .filter(|c| (300..=699).contains(c))
            .ok_or_else(|| format!("{s:?} is not a final failure status (300-699)"))
    };
    if let Some(c) = text.strip_prefix("answers INVITEs with ") {
        return Ok(Some(InviteScript::Reject(code(c)?)));
    }
    if let Some(c) = text.strip_prefix("rings and then answers ") {
        return Ok(Some(InviteScript::RingThenReject(code(c)?)));
    }
    match text {
        "never answers INVITEs" => Ok(Some(InviteScript::Silent)),
        "is down" => Ok(None),
        other => Err(format!(
            "unknown behaviour {other:?}: say `answers INVITEs with <code>`, \
             `rings and then answers <code>`, `never answers INVITEs` or `is down`"
        )),
    }
}

#[given(regex = r"^the tenant routes outbound calls to (\S+) (first|as well), which (.+)$")]
async fn second_sbc(
    w: &mut DrlabWorld,
    fqdn: String,
    order: String,
    behaviour: String,
) -> StepResult {
    if w.lab.is_some() {
        return Err(
            "the tenant's SBCs are set before the world is built: put this step \
                    before `Given the SBC is registered in the tenant as <fqdn>`"
                .into(),
        );
    }
    w.second_sbc = Some(SecondSbc {
        fqdn,
        script: script(&behaviour)?,
        first: order == "first",
    });
    Ok(())
}

/// INVITEs (initial requests, not re-INVITEs) a hub proxy sent to `host`.
fn hub_invites_to(lab: &Lab, host: &str) -> Vec<crate::trace::Sent> {
    sent(lab)
        .into_iter()
        .filter(|s| {
            s.from.ends_with(".pstnhub.microsoft.com")
                && s.to == host
                && s.message().is_some_and(|m| {
                    m.method() == Some(&sbc::sip::wire::Method::Invite)
                        && m.headers.get("To").is_some_and(|t| !t.contains("tag="))
                })
        })
        .collect()
}

#[then(expr = "the hub sends the INVITE to {word}")]
async fn hub_invites(w: &mut DrlabWorld, host: String) -> StepResult {
    let lab = w.lab()?;
    let host = lab.host_named(&host);
    lab.run_until(Duration::from_secs(30), |l| {
        !hub_invites_to(l, &host).is_empty()
    })
    .map_err(|e| e.to_string())?;
    if hub_invites_to(lab, &host).is_empty() {
        return fail(lab, format!("an INVITE from the hub to {host}"));
    }
    Ok(())
}

/// The outbound call ended on the Teams side: why.
fn outbound_end(lab: &Lab) -> Option<String> {
    let hub = lock(&lab.hub);
    let c = hub
        .calls
        .iter()
        .rev()
        .find(|c| c.direction == CallDirection::Outbound)?;
    match &c.state {
        CallState::Ended(why) => Some(why.clone()),
        _ => None,
    }
}

#[then(regex = r#"^the Teams user's call fails with "(.+)"$"#)]
async fn teams_call_fails(w: &mut DrlabWorld, text: String) -> StepResult {
    let lab = w.lab()?;
    lab.run_until(Duration::from_secs(40), |l| outbound_end(l).is_some())
        .map_err(|e| e.to_string())?;
    match outbound_end(lab) {
        Some(why) if why.contains(&text) => Ok(()),
        other => fail(
            lab,
            format!("the Teams user's call to fail with {text:?}, it is {other:?}"),
        ),
    }
}

#[then(expr = "the hub sends no INVITE to {word}")]
async fn hub_no_invite(w: &mut DrlabWorld, host: String) -> StepResult {
    let lab = w.lab()?;
    let host = lab.host_named(&host);
    // Long enough for any failover: FailoverTimeSeconds and then some.
    lab.run_for(Duration::from_secs(12))
        .map_err(|e| e.to_string())?;
    let n = hub_invites_to(lab, &host).len();
    if n != 0 {
        return fail(
            lab,
            format!("no INVITE from the hub to {host}, it sent {n}"),
        );
    }
    Ok(())
}

#[then(expr = "the hub CANCELs the INVITE to {word} about {int} seconds after sending it")]
async fn hub_cancels(w: &mut DrlabWorld, host: String, secs: u64) -> StepResult {
    let lab = w.lab()?;
    let cancel = |l: &Lab| {
        sent(l).into_iter().find(|s| {
            s.from.ends_with(".pstnhub.microsoft.com") && s.to == host && s.label() == "CANCEL"
        })
    };
    lab.run_until(Duration::from_secs(secs + 5), |l| cancel(l).is_some())
        .map_err(|e| e.to_string())?;
    let (Some(invite), Some(c)) = (hub_invites_to(lab, &host).into_iter().next(), cancel(lab))
    else {
        return fail(
            lab,
            format!("an INVITE from the hub to {host}, then a CANCEL"),
        );
    };
    let after = (c.at_ms - invite.at_ms) / 1000.0;
    if (after - secs as f64).abs() > 0.5 {
        return fail(
            lab,
            format!("the CANCEL about {secs} s after the INVITE, it came {after:.3} s after"),
        );
    }
    Ok(())
}

#[then(regex = r#"^the hub records that (\S+) failed with "(.+)"$"#)]
async fn hub_records_attempt(w: &mut DrlabWorld, sbc: String, text: String) -> StepResult {
    let lab = w.lab()?;
    let attempts: Vec<String> = lock(&lab.hub)
        .calls
        .iter()
        .rev()
        .find(|c| c.direction == CallDirection::Outbound)
        .map(|c| c.attempts.clone())
        .unwrap_or_default();
    let prefix = format!("{sbc}: ");
    if attempts
        .iter()
        .any(|a| a.starts_with(&prefix) && a.contains(&text))
    {
        Ok(())
    } else {
        fail(
            lab,
            format!("an attempt at {sbc} failing with {text:?}; the hub has {attempts:?}"),
        )
    }
}

#[then(regex = r"^the SBC sent (\d+) INVITEs? to (\S+)$")]
async fn sbc_invites(w: &mut DrlabWorld, n: usize, host: String) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let got = sent(lab)
        .into_iter()
        .filter(|s| s.from == fqdn && s.to == host && s.label() == "INVITE")
        .count();
    if got != n {
        return fail(
            lab,
            format!("{n} INVITE(s) from the SBC to {host}, it sent {got}"),
        );
    }
    Ok(())
}

#[then("the hub holds nothing against the SBC")]
async fn no_violations(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let v = lock(&lab.hub).sbc_violations.clone();
    if !v.is_empty() {
        return fail(lab, format!("no broken obligation, the hub saw: {v:?}"));
    }
    Ok(())
}

#[then(
    regex = r"^the hub reports that the SBC (sent an INVITE within Retry-After|retried the call after 603)$"
)]
async fn violation(w: &mut DrlabWorld, what: String) -> StepResult {
    let lab = w.lab()?;
    let needle = if what.contains("Retry-After") {
        "within the Retry-After"
    } else {
        "after 603"
    };
    lab.run_until(Duration::from_secs(5), |l| {
        lock(&l.hub)
            .sbc_violations
            .iter()
            .any(|v| v.contains(needle))
    })
    .map_err(|e| e.to_string())?;
    let v = lock(&lab.hub).sbc_violations.clone();
    if !v.iter().any(|x| x.contains(needle)) {
        return fail(
            lab,
            format!("the hub to report that the SBC {what}; it has {v:?}"),
        );
    }
    Ok(())
}

/// Case 9.61: the hub's messages may exceed 1,500 bytes; an SBC must take
/// them whole (over TLS, one message across several TCP segments).
#[then(regex = r"^the hub's INVITE to (\S+) is longer than (\d+) bytes$")]
async fn hub_invite_size(w: &mut DrlabWorld, host: String, bytes: usize) -> StepResult {
    let lab = w.lab()?;
    let host = lab.host_named(&host);
    let Some(invite) = hub_invites_to(lab, &host).into_iter().next() else {
        return fail(lab, format!("an INVITE from the hub to {host}"));
    };
    if invite.raw.len() <= bytes {
        return fail(
            lab,
            format!("an INVITE over {bytes} bytes, it has {}", invite.raw.len()),
        );
    }
    Ok(())
}
