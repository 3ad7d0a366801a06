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
