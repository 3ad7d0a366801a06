//! Steps for media bypass (behaviour §7; cases 9.26, 9.29, 9.57): the SBC
//! as an ICE-lite agent toward Teams clients that run full ICE; and for
//! calls that carry no media (case 9.58), which the hub and the SBC end.
//! What the SBC offered is read from the SIP it sent; what it did with the
//! checks is read from the STUN datagrams that crossed the network (the
//! world's media capture), not from the SBC's own counters.

use crate::steps::{fail, lock, sent, DrlabWorld};
use crate::trace::{sent_messages, Sent};
use crate::world::{Lab, TEAMS_CLIENTS};
use cucumber::{given, then, when};
use sbc::b2bua::SbcCommand;
use sbc::media::stun::{
    check_integrity, looks_like_stun, Class, Integrity, Message as Stun, BINDING,
};
use sbc::sip::sdp::SessionDescription;
use std::time::Duration;
use teams_sim::hub::HubCommand;

type StepResult = Result<(), String>;

/// An SDP's `a=ice-ufrag` and `a=ice-pwd`.
type IcePair = (String, String);

#[given("the SBC's gateway has MediaBypass on")]
async fn bypass_on(w: &mut DrlabWorld) -> StepResult {
    if w.lab.is_some() {
        return Err("say this before `the SBC is registered in the tenant`".into());
    }
    w.media_bypass = true;
    Ok(())
}

#[given("the SBC is misconfigured to offer no ICE candidates")]
async fn sbc_without_ice(w: &mut DrlabWorld) -> StepResult {
    w.lab()?.sut.set(SbcCommand::MediaBypass(false))
}

#[given("the Teams clients check the SBC with a wrong password")]
async fn clients_wrong_password(w: &mut DrlabWorld) -> StepResult {
    w.lab()?
        .hub_commands
        .send(HubCommand::IceWrongPassword(true))
        .map_err(|e| e.to_string())
}

#[given("the hub does not end calls that carry no media")]
async fn no_media_timeout(w: &mut DrlabWorld) -> StepResult {
    w.lab()?
        .hub_commands
        .send(HubCommand::MediaTimeout(None))
        .map_err(|e| e.to_string())
}

/// Every STUN datagram sent so far, read back: (what was sent, the message).
fn stun_sent(lab: &Lab) -> Vec<(Sent, Stun)> {
    sent_messages(&lab.media.events(), &lab.names())
        .into_iter()
        .filter(|s| looks_like_stun(&s.raw))
        .filter_map(|s| Stun::parse(&s.raw).ok().map(|m| (s, m)))
        .collect()
}

/// The SDP bodies the SBC sent the hub, with what carried them.
fn sbc_sdps_to_hub(lab: &Lab) -> Vec<(String, SessionDescription, String)> {
    let fqdn = lab.config.sbc_fqdn.clone();
    sent(lab)
        .into_iter()
        .filter(|s| s.from == fqdn && s.to.contains("pstnhub"))
        .filter_map(|s| {
            let m = s.message()?;
            let body = String::from_utf8_lossy(&m.body).into_owned();
            let sd = SessionDescription::parse(&body).ok()?;
            Some((s.label(), sd, body))
        })
        .collect()
}

/// Case 9.57: ICE-lite, exactly one IPv4 host candidate (the SDP's own
/// address and port), and the same ufrag, pwd and candidate in every
/// description the SBC sends the hub (its 183s and 200 included).
#[then("the SBC offers the hub one ICE-lite host candidate, the same in every SDP it sends")]
async fn sbc_ice_lite(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let sdps = sbc_sdps_to_hub(lab);
    if sdps.is_empty() {
        return fail(lab, "SDP from the SBC to the hub");
    }
    let mut first: Option<(String, String, String)> = None;
    for (label, sd, body) in &sdps {
        let lines: Vec<&str> = body.lines().map(str::trim_end).collect();
        let candidates: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("a=candidate:"))
            .collect();
        let Some(i) = sd.audio_index() else {
            return fail(lab, format!("an audio stream in the SBC's {label}"));
        };
        let m = &sd.media[i];
        let address = sd.media_address(i).unwrap_or_default();
        let ok_candidate = m.candidates.len() == 1
            && candidates.len() == 1
            && m.candidates[0].typ == "host"
            && m.candidates[0].component == 1
            && m.candidates[0].address == address
            && m.candidates[0].port == m.port
            && address.parse::<std::net::Ipv4Addr>().is_ok();
        if !sd.ice_lite || !ok_candidate {
            return fail(
                lab,
                format!("a=ice-lite and one IPv4 host candidate at the SDP's {address}:{} in the SBC's {label}; it has ice-lite {} and {candidates:?}", m.port, sd.ice_lite),
            );
        }
        let Some((ufrag, pwd)) = sd.ice_credentials(i) else {
            return fail(
                lab,
                format!("a=ice-ufrag and a=ice-pwd in the SBC's {label}"),
            );
        };
        let this = (
            ufrag.to_string(),
            pwd.to_string(),
            candidates[0].to_string(),
        );
        match &first {
            None => first = Some(this),
            Some(f) if *f == this => {}
            Some(f) => {
                return fail(
                    lab,
                    format!("the same ICE credentials and candidate in every SDP (case 9.57); {label} has {this:?}, the first had {f:?}"),
                )
            }
        }
    }
    Ok(())
}

/// Case 9.29: in bypass each Teams client answers from its own fork: a
/// 183 with SDP per fork, each on an early dialog (To-tag) of its own,
/// each with the client's own address and ICE credentials.
#[then(
    regex = r"^the hub sends a 183 with SDP from each of (\d+) Teams clients, on To-tags of their own$"
)]
async fn forks_183(w: &mut DrlabWorld, n: usize) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let found = |l: &Lab| {
        sent(l)
            .into_iter()
            .filter(|s| s.to == fqdn && s.from.contains("pstnhub") && s.label().starts_with("183"))
            .filter_map(|s| {
                let r = match s.rsip()? {
                    rsip::SipMessage::Response(r) => r,
                    _ => return None,
                };
                use rsip::headers::ToTypedHeader;
                use rsip::message::HeadersExt;
                let tag = r.to_header().ok()?.typed().ok()?.tag()?.value().to_string();
                let sd = SessionDescription::parse(&String::from_utf8_lossy(&r.body)).ok()?;
                let i = sd.audio_index()?;
                let creds = sd.ice_credentials(i)?.0.to_string();
                Some((tag, sd.media_address(i)?.to_string(), creds))
            })
            .collect::<Vec<_>>()
    };
    lab.run_until(Duration::from_secs(5), |l| found(l).len() >= n)
        .map_err(|e| e.to_string())?;
    let got = found(lab);
    let distinct = |f: fn(&(String, String, String)) -> &String| {
        got.iter()
            .map(f)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    if got.len() != n
        || distinct(|g| &g.0) != n
        || distinct(|g| &g.1) != n
        || distinct(|g| &g.2) != n
    {
        return fail(
            lab,
            format!("{n} 183s with SDP, each with its own To-tag, client address and ICE ufrag; got (tag, address, ufrag) {got:?}"),
        );
    }
    Ok(())
}

/// Case 9.57 and RFC 8445 §2.5: each Teams client's checks reach the SBC,
/// which answers them with an authenticated success from the port they
/// came to, and sends no check of its own.
#[then("the SBC answers the ICE checks of every Teams client and sends none")]
async fn sbc_answers_checks(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let stun = stun_sent(lab);
    if let Some((s, _)) = stun
        .iter()
        .find(|(s, m)| s.from == fqdn && m.class == Class::Request)
    {
        return fail(
            lab,
            format!(
                "no STUN request from the ICE-lite SBC, it sent one to {}",
                s.to
            ),
        );
    }
    // Every success must verify with the password the SBC offered.
    let pwds: Vec<String> = sbc_sdps_to_hub(lab)
        .iter()
        .filter_map(|(_, sd, _)| sd.audio_ice().map(|(_, p)| p))
        .collect();
    let verifies = |raw: &[u8]| {
        pwds.iter()
            .any(|p| check_integrity(raw, p.as_bytes()) == Integrity::Valid)
    };
    for client in TEAMS_CLIENTS {
        let checks: Vec<&(Sent, Stun)> = stun
            .iter()
            .filter(|(s, m)| {
                s.from == client && s.to == fqdn && m.class == Class::Request && m.method == BINDING
            })
            .collect();
        let answered = checks.iter().any(|(c, m)| {
            stun.iter().any(|(s, r)| {
                s.from == fqdn
                    && s.to == client
                    && s.local == c.remote
                    && r.class == Class::Success
                    && r.transaction == m.transaction
                    && r.xor_mapped_address() == Some(c.local)
                    && verifies(&s.raw)
                    && r.has_fingerprint()
            })
        });
        if checks.is_empty() || !answered {
            return fail(
                lab,
                format!("{client}'s checks answered by the SBC with an authenticated success naming the client's address; {} checks seen", checks.len()),
            );
        }
    }
    Ok(())
}

/// RFC 8445 §8.1.1: the answering client nominated its pair (a check with
/// USE-CANDIDATE the SBC answered), and its audio comes straight from the
/// SBC's candidate.
#[then(
    regex = r"^the (?:answering Teams client|media processor) nominates its pair and hears the SBC directly$"
)]
async fn client_nominates(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let Some(media) = lock(&lab.hub).calls.back().map(|c| c.media.clone()) else {
        return fail(lab, "a call on the hub");
    };
    let stats = lock(&media).clone();
    let sbc = lab.sim.lookup(lab.config.sbc_fqdn.as_str());
    let candidate = sbc_sdps_to_hub(lab).into_iter().find_map(|(_, sd, _)| {
        let m = &sd.media[sd.audio_index()?];
        m.candidates.first().map(|c| c.port)
    });
    let from_candidate = stats
        .first_source
        .is_some_and(|s| s.ip() == sbc && Some(s.port()) == candidate);
    if !stats.ice_nominated || !from_candidate {
        return fail(
            lab,
            format!("the answering client's pair nominated and its audio from the SBC's candidate {sbc}:{candidate:?}; client saw {stats:?}"),
        );
    }
    Ok(())
}

/// RFC 8489 §9.1.3: a check whose MESSAGE-INTEGRITY does not verify with
/// the SBC's password gets an error (`code`), and the clients, with no
/// valid pair, send no media.
#[then(regex = r"^the SBC refuses the Teams client's checks with (\d+)$")]
async fn sbc_refuses_checks(w: &mut DrlabWorld, code: u16) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let refused = |l: &Lab| {
        stun_sent(l)
            .iter()
            .any(|(s, m)| s.from == fqdn && m.class == Class::Error && m.error_code() == Some(code))
    };
    lab.run_until(Duration::from_secs(10), refused)
        .map_err(|e| e.to_string())?;
    let stun = stun_sent(lab);
    let successes = stun
        .iter()
        .filter(|(s, m)| s.from == fqdn && m.class == Class::Success)
        .count();
    let media_from_clients = sent_messages(&lab.media.events(), &lab.names())
        .iter()
        .filter(|s| TEAMS_CLIENTS.contains(&s.from.as_str()) && !looks_like_stun(&s.raw))
        .count();
    if !refused(lab) || successes > 0 || media_from_clients > 0 {
        return fail(
            lab,
            format!("the SBC to answer the checks {code} and none with success, and no media from the clients; {successes} successes, {media_from_clients} media packets"),
        );
    }
    Ok(())
}

/// Case 9.58: the hub ends an answered call that carries no media with a
/// BYE about `secs` after its 200 (KB-IN: "about 10 to 20 seconds").
#[then(
    regex = r"^the hub ends the call for lack of media about (\d+) seconds after it was answered$"
)]
async fn media_timeout_bye(w: &mut DrlabWorld, secs: u64) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let bye = |l: &Lab| {
        sent(l)
            .into_iter()
            .find(|s| s.from.contains("pstnhub") && s.to == fqdn && s.label() == "BYE")
    };
    lab.run_until(Duration::from_secs(secs + 10), |l| bye(l).is_some())
        .map_err(|e| e.to_string())?;
    let all = sent(lab);
    let answered = all.iter().find(|s| {
        s.label() == "200 OK (INVITE)"
            && (s.from.contains("pstnhub") && s.to == fqdn
                || s.from == fqdn && s.to.contains("pstnhub"))
    });
    let (Some(bye), Some(answered)) = (bye(lab), answered) else {
        return fail(lab, "a 200 for the INVITE, then a BYE from the hub");
    };
    let gap = (bye.at_ms - answered.at_ms) / 1000.0;
    let reason = bye
        .message()
        .and_then(|m| m.headers.get("Reason").map(str::to_string))
        .unwrap_or_default();
    if (gap - secs as f64).abs() > 2.0 || !reason.contains("Media timeout") {
        return fail(
            lab,
            format!("the hub's BYE about {secs} s after the 200 with a media-timeout Reason; it came after {gap:.1} s with Reason {reason:?}"),
        );
    }
    Ok(())
}

#[given(regex = r"^the SBC ends calls without media after (\d+) seconds$")]
async fn sbc_media_timeout(w: &mut DrlabWorld, secs: u64) -> StepResult {
    w.lab()?
        .sut
        .set(SbcCommand::MediaTimeout(Some(Duration::from_secs(secs))))
}

/// The SBC's own media timeout: a BYE on each leg, both saying why, about
/// `secs` after the call was answered (the hub's 200 or the SBC's).
#[then(regex = r"^the SBC ends both legs for lack of media about (\d+) seconds after the answer$")]
async fn sbc_ends_silent_call(w: &mut DrlabWorld, secs: u64) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let byes = |l: &Lab| -> Vec<Sent> {
        sent(l)
            .into_iter()
            .filter(|s| s.from == fqdn && s.label() == "BYE")
            .collect()
    };
    lab.run_until(Duration::from_secs(secs + 10), |l| byes(l).len() >= 2)
        .map_err(|e| e.to_string())?;
    let all = sent(lab);
    let Some(answered) = all.iter().find(|s| s.label() == "200 OK (INVITE)") else {
        return fail(lab, "a 200 for the INVITE");
    };
    let byes = byes(lab);
    let to_hub = byes.iter().any(|b| b.to.contains("pstnhub"));
    let to_carrier = byes.iter().any(|b| !b.to.contains("pstnhub"));
    for b in &byes {
        let gap = (b.at_ms - answered.at_ms) / 1000.0;
        let reason = b
            .message()
            .and_then(|m| m.headers.get("Reason").map(str::to_string))
            .unwrap_or_default();
        if (gap - secs as f64).abs() > 2.0 || !reason.contains("no media") {
            return fail(
                lab,
                format!("the SBC's BYEs about {secs} s after the answer, saying why; the one to {} came after {gap:.1} s with Reason {reason:?}", b.to),
            );
        }
    }
    if !(to_hub && to_carrier) {
        return fail(
            lab,
            format!("a BYE from the SBC on both legs; it sent {}", byes.len()),
        );
    }
    Ok(())
}

#[when(regex = r"^Teams user (\S+)'s call moves to a media processor$")]
async fn move_to_mp(w: &mut DrlabWorld, user: String) -> StepResult {
    let lab = w.lab()?;
    lab.hub_commands
        .send(HubCommand::MoveToMediaProcessor { user })
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(10))
        .map_err(|e| e.to_string())
}

/// Case 9.49: the hub's re-INVITE carries new ICE credentials (an ICE
/// restart, RFC 8445 §9), and the SBC's 200 to it answers with new ones of
/// its own, still ICE-lite with one host candidate.
#[then("the hub re-INVITEs the SBC with new ICE credentials, and the SBC answers with new ones of its own")]
async fn ice_restarted(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    // (sent by the hub, label, description) of every SDP between the SBC
    // and the hub, in order.
    let sdps = |l: &Lab| -> Vec<(bool, String, SessionDescription)> {
        sent(l)
            .into_iter()
            .filter(|s| {
                (s.from == fqdn && s.to.contains("pstnhub"))
                    || (s.to == fqdn && s.from.contains("pstnhub"))
            })
            .filter_map(|s| {
                let m = s.message()?;
                let sd = SessionDescription::parse(&String::from_utf8_lossy(&m.body)).ok()?;
                Some((s.from.contains("pstnhub"), s.label(), sd))
            })
            .collect()
    };
    // The re-INVITE: the hub's last INVITE after a 200 for an INVITE.
    let reinvite_at = |all: &[(bool, String, SessionDescription)]| {
        let answered = all.iter().position(|(_, l, _)| l == "200 OK (INVITE)")?;
        (answered + 1..all.len())
            .rev()
            .find(|&k| all[k].0 && all[k].1 == "INVITE")
    };
    let done = |l: &Lab| {
        let all = sdps(l);
        reinvite_at(&all).is_some_and(|k| {
            all[k..]
                .iter()
                .any(|(hub, label, _)| !hub && label == "200 OK (INVITE)")
        })
    };
    lab.run_until(Duration::from_secs(5), done)
        .map_err(|e| e.to_string())?;
    let all = sdps(lab);
    let Some(k) = reinvite_at(&all) else {
        return fail(
            lab,
            "a re-INVITE with SDP from the hub after the call was answered",
        );
    };
    let Some(answer) = all[k..]
        .iter()
        .find(|(hub, label, _)| !hub && label == "200 OK (INVITE)")
        .map(|(_, _, sd)| sd)
    else {
        return fail(lab, "the SBC's 200 with SDP for the hub's re-INVITE");
    };
    let earlier = |from_hub: bool| -> Vec<Option<IcePair>> {
        all[..k]
            .iter()
            .filter(|(hub, _, _)| *hub == from_hub)
            .map(|(_, _, sd)| sd.audio_ice())
            .collect()
    };
    let hub_new = all[k].2.audio_ice();
    if hub_new.is_none() || earlier(true).contains(&hub_new) {
        return fail(
            lab,
            format!("new ICE credentials in the hub's re-INVITE; it has {hub_new:?}"),
        );
    }
    let sbc_new = answer.audio_ice();
    let one_candidate = answer
        .audio_index()
        .is_some_and(|i| answer.media[i].candidates.len() == 1);
    let restarted = sbc_new.is_some() && !earlier(false).contains(&sbc_new);
    if !restarted || !answer.ice_lite || !one_candidate {
        return fail(
            lab,
            format!("new ICE-lite credentials and one candidate in the SBC's answer (case 9.49); it has {sbc_new:?} (ice-lite {}), before it had {:?}", answer.ice_lite, earlier(false)),
        );
    }
    // The processor then checks the new candidate and nominates it: the
    // SBC's success to its USE-CANDIDATE check.
    let mp = crate::world::MEDIA_PROCESSOR;
    let nominated = |l: &Lab| {
        let stun = stun_sent(l);
        stun.iter().any(|(c, m)| {
            c.from == mp
                && m.use_candidate()
                && stun.iter().any(|(s, r)| {
                    s.from == fqdn && r.class == Class::Success && r.transaction == m.transaction
                })
        })
    };
    lab.run_until(Duration::from_secs(5), nominated)
        .map_err(|e| e.to_string())?;
    if !nominated(lab) {
        return fail(
            lab,
            "the media processor to nominate the SBC's new candidate",
        );
    }
    // Its 200 has reached the hub by now; give the hub a tick to switch.
    lab.run_for(Duration::from_millis(20))
        .map_err(|e| e.to_string())
}

/// Early media in bypass (behaviour §7): the first fork's client streams
/// SRTP to the SBC on its checked pair before anyone answers, the SBC
/// relays it to the PSTN caller (it latches to the first endpoint that
/// streams), and once the other fork answers the caller hears that
/// client's own stream instead, each in order. Read from the datagrams
/// that crossed the network and from the phone's probe.
#[then("the PSTN caller heard the first Teams client's early media, then the answering client")]
async fn early_media_then_answer(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let Some(answered) = sent(lab)
        .into_iter()
        .find(|s| s.from.contains("pstnhub") && s.to == fqdn && s.label() == "200 OK (INVITE)")
    else {
        return fail(lab, "the hub's 200 for the SBC's INVITE");
    };
    let media = sent_messages(&lab.media.events(), &lab.names());
    let before = |from: &str, to: &dyn Fn(&str) -> bool| {
        media
            .iter()
            .filter(|s| s.at_ms < answered.at_ms && s.from == from && to(&s.to))
            .filter(|s| !looks_like_stun(&s.raw))
            .count()
    };
    let from_client = before(TEAMS_CLIENTS[0], &|to| to == fqdn);
    let to_phone = before(&fqdn, &|to| to.ends_with(crate::world::CARRIER));
    let Some(phone) = lock(&lab.carrier).calls.back().map(|c| c.media.clone()) else {
        return fail(lab, "a PSTN call");
    };
    let p = lock(&phone).clone();
    if from_client < 10
        || to_phone < 10
        || p.source_changes < 1
        || p.out_of_order > 0
        || p.corrupt > 0
        || p.unprotect_errors > 0
    {
        return fail(
            lab,
            format!("early media from {} relayed to the phone before the 200, then another source; {from_client} packets from the client and {to_phone} to the phone before the 200, phone saw {p:?}", TEAMS_CLIENTS[0]),
        );
    }
    Ok(())
}

/// Case 9.51: the hub offers the session timer on non-bypass calls only:
/// its INVITE to a bypass SBC has no Session-Expires, Min-SE or
/// `Supported: timer` (read by rsip, header names as the hub wrote them).
#[then("the hub's INVITE to the SBC offers no session timer")]
async fn hub_invite_without_timer(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let Some(invite) = sent(lab)
        .into_iter()
        .find(|s| s.from.contains("pstnhub") && s.to == fqdn && s.label() == "INVITE")
    else {
        return fail(lab, "an INVITE from the hub to the SBC");
    };
    let text = String::from_utf8_lossy(&invite.raw).to_ascii_lowercase();
    let offers = text.lines().any(|l| {
        l.starts_with("session-expires:")
            || l.starts_with("x:")
            || l.starts_with("min-se:")
            || (l.starts_with("supported:") && l.contains("timer"))
    });
    if offers {
        return fail(
            lab,
            "no session timer in the hub's bypass INVITE (case 9.51)",
        );
    }
    Ok(())
}

/// Voice apps (voicemail) always take their media through a media
/// processor (behaviour §7, MB), on a bypass trunk too: the hub's answer
/// is the processor's address, with no ICE of a client's.
#[then("the hub's answer comes from the media processor, without ICE")]
async fn answer_from_mp(w: &mut DrlabWorld) -> StepResult {
    let m = crate::conformance::final_answer(w).ok_or("no answer yet")?;
    let lab = w.lab()?;
    let mp = lab.sim.lookup(crate::world::MEDIA_PROCESSOR).to_string();
    let sdp = String::from_utf8_lossy(&m.body).into_owned();
    let sd = SessionDescription::parse(&sdp).map_err(|e| e.to_string())?;
    let address = sd
        .audio_index()
        .and_then(|i| sd.media_address(i))
        .unwrap_or_default();
    if address != mp || sdp.contains("a=candidate") || sdp.contains("a=ice-") {
        return fail(
            lab,
            format!("an answer from the media processor {mp} without ICE; it has {address} and ICE lines: {}", sdp.contains("a=ice-")),
        );
    }
    Ok(())
}
