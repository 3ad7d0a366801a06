//! Steps for the caller's identity on calls from Teams (behaviour §3.3,
//! case 9.53): the gateway's `ForwardPai` setting, what the hub's INVITE
//! asserts, and what the SBC passes on to the carrier (RFC 3325, RFC
//! 3323), read from the bytes on the wire.

use crate::steps::{fail, lock, sent, DrlabWorld};
use crate::world::{Lab, CARRIER};
use cucumber::{given, then};
use std::time::Duration;
use teams_sim::hub::raw::{uri_of, RawMessage};

type StepResult = Result<(), String>;

#[given("the SBC's gateway has ForwardPai on")]
async fn forward_pai(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    lock(&lab.hub).forward_pai.insert(sbc);
    Ok(())
}

/// The first new INVITE (no To-tag) from `from` to `to`, as bytes read.
fn first_invite(lab: &Lab, from: &str, to: &str) -> Option<RawMessage> {
    sent(lab)
        .into_iter()
        .filter(|s| s.from == from && s.to == to)
        .filter_map(|s| RawMessage::read(&s.raw).ok())
        .find(|r| {
            r.start_line.starts_with("INVITE ")
                && r.first("To")
                    .is_some_and(|t| !t.to_ascii_lowercase().contains("tag="))
        })
}

#[then(
    regex = r"^the (hub's INVITE to the SBC|SBC's INVITE to the carrier) carries (no P-Asserted-Identity|P-Asserted-Identity (\S+)) and (no Privacy|Privacy: id)$"
)]
async fn identity(
    w: &mut DrlabWorld,
    which: String,
    pai: String,
    number: String,
    privacy: String,
) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let hub_leg = which.starts_with("hub");
    let find = |l: &Lab| {
        if hub_leg {
            [
                "sip.pstnhub.microsoft.com",
                "sip2.pstnhub.microsoft.com",
                "sip3.pstnhub.microsoft.com",
            ]
            .iter()
            .find_map(|h| first_invite(l, h, &sbc))
        } else {
            first_invite(l, &sbc, CARRIER)
        }
    };
    lab.run_until(Duration::from_secs(5), |l| find(l).is_some())
        .map_err(|e| e.to_string())?;
    let Some(invite) = find(lab) else {
        return fail(lab, format!("the {which}"));
    };
    let pais = invite.lines("P-Asserted-Identity");
    let got_number = pais.first().map(|v| {
        let uri = uri_of(v);
        let user = uri.split_once(':').map_or(uri, |x| x.1);
        user.split('@').next().unwrap_or_default().to_string()
    });
    let want_number = (!number.is_empty()).then_some(number);
    if got_number != want_number || pais.len() > 1 {
        return fail(lab, format!("{pai} on the {which}; it carries {pais:?}"));
    }
    let privacy_id = invite
        .values("Privacy")
        .iter()
        .any(|p| p.split(';').any(|x| x.trim().eq_ignore_ascii_case("id")));
    if privacy_id != (privacy == "Privacy: id") {
        return fail(
            lab,
            format!(
                "{privacy} on the {which}; it carries {:?}",
                invite.values("Privacy")
            ),
        );
    }
    Ok(())
}

#[given("the SBC's gateway has ForwardCallHistory on")]
async fn forward_call_history(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    lock(&lab.hub).forward_call_history.insert(sbc);
    Ok(())
}

#[given(regex = r"^Teams user (\S+) forwards calls to (\+\d+)$")]
async fn forwards(w: &mut DrlabWorld, user: String, target: String) -> StepResult {
    let lab = w.lab()?;
    let number = lab
        .config
        .teams_users
        .iter()
        .find(|u| u.name == user)
        .map(|u| u.number.clone())
        .ok_or_else(|| format!("no Teams user {user}"))?;
    lock(&lab.hub).forwarding.insert(number, target);
    Ok(())
}

/// The hub's new INVITE to the SBC for `number`, as bytes read.
fn hub_invite_for(lab: &Lab, sbc: &str, number: &str) -> Option<RawMessage> {
    [
        "sip.pstnhub.microsoft.com",
        "sip2.pstnhub.microsoft.com",
        "sip3.pstnhub.microsoft.com",
    ]
    .iter()
    .flat_map(|h| {
        sent(lab)
            .into_iter()
            .filter(move |s| s.from == *h && s.to == sbc)
            .filter_map(|s| RawMessage::read(&s.raw).ok())
    })
    .find(|r| {
        r.start_line.starts_with("INVITE ")
            && r.request_uri()
                .is_some_and(|u| u.contains(&format!("{number}@")))
            && r.first("To")
                .is_some_and(|t| !t.to_ascii_lowercase().contains("tag="))
    })
}

/// Case 9.54, read from the bytes: History-Info entries on the hub's host
/// with `user=phone`, in order (RFC 7044 indices), the forwarding user's
/// first with an escaped `Reason=SIP;cause=302`, the target's next.
#[then(
    regex = r"^the hub's INVITE to the SBC for (\+\d+) carries (no History-Info|History-Info: (\+\d+) forwarded to (\+\d+))$"
)]
async fn history_info(
    w: &mut DrlabWorld,
    number: String,
    what: String,
    user: String,
    target: String,
) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let (s2, n2) = (sbc.clone(), number.clone());
    lab.run_until(Duration::from_secs(10), move |l| {
        hub_invite_for(l, &s2, &n2).is_some()
    })
    .map_err(|e| e.to_string())?;
    let Some(invite) = hub_invite_for(lab, &sbc, &number) else {
        return fail(
            lab,
            format!("an INVITE from the hub to the SBC for {number}"),
        );
    };
    let entries = invite.values("History-Info");
    if what == "no History-Info" {
        if !entries.is_empty() {
            return fail(lab, format!("no History-Info, the hub sent {entries:?}"));
        }
        return Ok(());
    }
    let entry = |i: usize, n: &str, index: &str| {
        entries.get(i).is_some_and(|e| {
            let uri = uri_of(e);
            uri.starts_with(&format!("sip:{n}@sip.pstnhub.microsoft.com"))
                && uri.contains(";user=phone")
                && e.trim_end().ends_with(&format!(";index={index}"))
        })
    };
    let reason_302 = entries
        .first()
        .is_some_and(|e| uri_of(e).contains("?Reason=SIP%3Bcause%3D302"));
    if entries.len() != 2 || !entry(0, &user, "1") || !entry(1, &target, "1.1") || !reason_302 {
        return fail(
            lab,
            format!("History-Info {user} (Reason 302, index 1) then {target} (index 1.1); the hub sent {entries:?}"),
        );
    }
    Ok(())
}

/// The SBC passes the hub's History-Info on to the carrier unchanged
/// (`carrier.forward_history`).
#[then(regex = r"^the SBC passes the hub's History-Info on to the carrier$")]
async fn history_passed(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let find = |l: &Lab| {
        let hub = [
            "sip.pstnhub.microsoft.com",
            "sip2.pstnhub.microsoft.com",
            "sip3.pstnhub.microsoft.com",
        ]
        .iter()
        .find_map(|h| first_invite(l, h, &sbc))?;
        let carrier = first_invite(l, &sbc, CARRIER)?;
        Some((
            hub.values("History-Info").len(),
            hub.lines("History-Info").join(","),
            carrier.lines("History-Info").join(","),
        ))
    };
    lab.run_until(Duration::from_secs(10), |l| find(l).is_some())
        .map_err(|e| e.to_string())?;
    match find(lab) {
        Some((n, hub, carrier)) if n > 0 && hub == carrier => Ok(()),
        other => fail(lab, format!("the hub's History-Info on the SBC's INVITE to the carrier; (entries, hub, carrier): {other:?}")),
    }
}
