//! Steps for the security and fault scenarios (issue 14): floods from an
//! unknown host and from a trusted one gone wild, RTP sprayed at a call's
//! media ports, the SBC full, and its health answer to the carrier while
//! the hub cannot be reached. The hostile host is [`crate::attacker`].

use crate::attacker::Attack;
use crate::conformance::expect_final_answer;
use crate::steps::{fail, sent, DrlabWorld};
use crate::tester::{Identity, TESTER, TESTER_UDP};
use cucumber::{given, then, when};
use sbc::sip::transport::TransportKind;
use sbc::sip::wire::{Message, Method};
use std::time::Duration;

type StepResult = Result<(), String>;

/// The calling numbers of flood INVITEs start so (see `attacker::request`).
const FLOOD_CALLER: &str = "+4930999";

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[given("the SBC takes calls from the flooding host as a carrier gateway")]
async fn attacker_trusted(w: &mut DrlabWorld) -> StepResult {
    if w.has_lab() {
        return Err("say this before `the SBC is registered in the tenant`".into());
    }
    w.attacker_trusted = true;
    Ok(())
}

#[given(regex = r"^the SBC admits at most (\d+) INVITEs? a second from each carrier address$")]
async fn invite_rate(w: &mut DrlabWorld, rate: u32) -> StepResult {
    if w.has_lab() {
        return Err("say this before `the SBC is registered in the tenant`".into());
    }
    let mut limits = w.limits.take().unwrap_or_default();
    let rates = limits.rates.get_or_insert_with(Default::default);
    rates.invite = sbc::sip::endpoint::Rate::new(f64::from(rate), 2 * rate);
    w.limits = Some(limits);
    Ok(())
}

#[given(regex = r"^the SBC holds at most (\d+) calls?$")]
async fn max_calls(w: &mut DrlabWorld, n: usize) -> StepResult {
    if w.has_lab() {
        return Err("say this before `the SBC is registered in the tenant`".into());
    }
    let mut limits = w.limits.take().unwrap_or_default();
    limits.max_calls = n;
    limits.max_calls_in_setup = limits.max_calls_in_setup.min(n);
    w.limits = Some(limits);
    Ok(())
}

/// An unknown host's flood goes to Alice's number (were it routed, she
/// would ring); a trusted host's to a number nobody has (what it gets
/// through is refused 404 by the hub, not rung).
#[when(
    regex = r"^(an unknown host|the flooding carrier gateway) sends the SBC (\d+) (INVITE|OPTIONS|REGISTER)s a second for (\d+) s$"
)]
async fn flood(
    w: &mut DrlabWorld,
    who: String,
    rate: u32,
    method: String,
    secs: u64,
) -> StepResult {
    let trusted = who.starts_with("the flooding");
    if trusted != w.attacker_trusted {
        return Err(format!(
            "{who}: the world {} the flooding host; `Given the SBC takes calls from the flooding host as a carrier gateway` decides",
            if w.attacker_trusted { "trusts" } else { "does not trust" }
        ));
    }
    let method = Method::parse(&method).map_err(|e| e.to_string())?;
    let number = if trusted {
        "+4989099999"
    } else {
        "+4989000001"
    };
    let lab = w.lab()?;
    lab.attack(Attack::Flood {
        method,
        number: number.into(),
        rate,
        duration: Duration::from_secs(secs),
    })
    .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(100))
        .map_err(|e| e.to_string())
}

/// The ports the SBC wrote in its SDP so far (both legs), with their RTCP
/// neighbours: the worst case, an attacker who guessed them.
fn sbc_media_ports(w: &mut DrlabWorld) -> Result<Vec<u16>, String> {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let mut ports: Vec<u16> = sent(lab)
        .into_iter()
        .filter(|s| s.from == fqdn)
        .flat_map(|s| {
            String::from_utf8_lossy(&s.raw)
                .lines()
                .filter_map(|l| l.strip_prefix("m=audio "))
                .filter_map(|l| l.split(' ').next()?.parse::<u16>().ok())
                .collect::<Vec<_>>()
        })
        .flat_map(|p| [p, p.saturating_add(1)])
        .collect();
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        return fail(lab, "the SBC to have offered or answered media");
    }
    Ok(ports)
}

#[when(
    regex = r"^an off-path host sprays RTP at the SBC's media ports of the call, (\d+) packets a second for (\d+) s$"
)]
async fn spray(w: &mut DrlabWorld, rate: u32, secs: u64) -> StepResult {
    let ports = sbc_media_ports(w)?;
    let lab = w.lab()?;
    lab.attack(Attack::Spray {
        ports,
        rate,
        duration: Duration::from_secs(secs),
    })
    .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(100))
        .map_err(|e| e.to_string())
}

/// Wait for the attack under way to end.
fn attack_over(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let view = lab.attacker.clone();
    lab.run_until(Duration::from_secs(600), move |_| !lock(&view).busy)
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[then("the SBC routed none of the flood's INVITEs")]
async fn none_routed(w: &mut DrlabWorld) -> StepResult {
    attack_over(w)?;
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let routed = sent(lab)
        .into_iter()
        .filter(|s| s.from == fqdn && s.label() == "INVITE")
        .filter(|s| String::from_utf8_lossy(&s.raw).contains(FLOOD_CALLER))
        .count();
    if routed > 0 {
        return fail(
            lab,
            format!("no flood INVITE sent on by the SBC; {routed} were"),
        );
    }
    Ok(())
}

#[then(
    regex = r"^the SBC dropped at least (\d+) of the flood's requests and answered at most (\d+), each with (\d+)$"
)]
async fn dropped(w: &mut DrlabWorld, least: u64, most: u64, code: u16) -> StepResult {
    attack_over(w)?;
    let lab = w.lab()?;
    // The answers still on their way, and the SBC's last retransmissions.
    lab.run_for(Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    let gate = lab
        .sbc_view()
        .and_then(|v| lock(&v).admission)
        .unwrap_or_default();
    let v = lock(&lab.attacker);
    let answered: u64 = v.answers.values().sum();
    let other_codes = v.answers.keys().any(|c| *c != code);
    if gate.dropped < least || answered > most || other_codes || v.other > 0 {
        let got = format!(
            "sent {}, dropped {}, answers {:?}, {} other datagrams",
            v.requests, gate.dropped, v.answers, v.other
        );
        drop(v);
        return fail(
            lab,
            format!("at least {least} dropped and at most {most} answered, all {code}; {got}"),
        );
    }
    Ok(())
}

#[then(
    regex = r"^the SBC answered the flood's excess INVITEs with 503 and Retry-After: at least (\d+) of them$"
)]
async fn busy_answers(w: &mut DrlabWorld, least: u64) -> StepResult {
    attack_over(w)?;
    let lab = w.lab()?;
    lab.run_for(Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    let gate = lab
        .sbc_view()
        .and_then(|v| lock(&v).admission)
        .unwrap_or_default();
    let v = lock(&lab.attacker);
    let busy = v.answers.get(&503).copied().unwrap_or(0);
    if busy < least || v.retry_after != busy || gate.busy < least || gate.dropped > 0 {
        let got = format!(
            "sent {}, answers {:?}, {} with Retry-After; the gate: {gate:?}",
            v.requests, v.answers, v.retry_after
        );
        drop(v);
        return fail(
            lab,
            format!("at least {least} answered 503 with Retry-After, none dropped; {got}"),
        );
    }
    Ok(())
}

#[then(regex = r"^the SBC's relay dropped at least (\d+) packets from foreign addresses$")]
async fn relay_foreign(w: &mut DrlabWorld, least: u32) -> StepResult {
    attack_over(w)?;
    let lab = w.lab()?;
    let relays: Vec<_> = lab
        .sbc_view()
        .map(|v| lock(&v).relays.iter().map(|r| lock(r).clone()).collect())
        .unwrap_or_default();
    let foreign: u32 = relays.iter().map(|r| r.foreign).sum();
    let sent = lock(&lab.attacker).datagrams;
    if foreign < least {
        return fail(
            lab,
            format!("at least {least} foreign packets dropped by the relay; {foreign} of {sent} sprayed; relays {relays:?}"),
        );
    }
    Ok(())
}

/// The carrier's health check: OPTIONS from the scripted tester, which
/// stands where a carrier gateway stands (UDP).
#[when("the carrier sends the SBC OPTIONS")]
async fn carrier_options(w: &mut DrlabWorld) -> StepResult {
    w.tester_sent += 1;
    let n = w.tester_sent;
    let ip = w.lab()?.sim.lookup(TESTER).to_string();
    let sbc = w.lab()?.config.sbc_fqdn.clone();
    let call_id = format!("options-{n}@{TESTER}");
    let mut m = Message::request(Method::Options, format!("sip:{sbc}:5060"));
    m.headers.push(
        "Via",
        format!("SIP/2.0/UDP {ip}:{TESTER_UDP};branch=z9hG4bKping{n};rport"),
    );
    m.headers
        .push("From", format!("<sip:ping@{ip}>;tag=ping{n}"));
    m.headers.push("To", format!("<sip:{sbc}>"));
    m.headers.push("Call-ID", call_id.clone());
    m.headers.push("CSeq", format!("{n} OPTIONS"));
    m.headers.push("Max-Forwards", "70");
    w.tester_call = Some(call_id);
    crate::sbc_rules::send(w, m, TransportKind::Udp, Identity::Sbc)
}

#[then(expr = "the SBC answers the carrier's OPTIONS with {int}")]
async fn options_answer(w: &mut DrlabWorld, code: u16) -> StepResult {
    expect_final_answer(w, "the SBC", code, Duration::from_secs(5))
}

#[when("every hub proxy goes down")]
async fn hub_down(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    for proxy in sbc::direct_routing::HUB_FQDNS {
        if !lab.hosts.iter().any(|h| h == proxy) {
            return Err(format!("no hub proxy {proxy} in this world"));
        }
    }
    for proxy in sbc::direct_routing::HUB_FQDNS {
        lab.sim.crash(proxy)?;
    }
    Ok(())
}

#[when("every hub proxy comes back")]
async fn hub_back(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    for proxy in sbc::direct_routing::HUB_FQDNS {
        lab.sim.bounce(proxy)?;
    }
    Ok(())
}

#[when("the SBC restarts")]
async fn sbc_restarts(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    // turmoil's bounce: the host's tasks and sockets are gone, its program
    // starts again (a process restart: calls, relays and ports forgotten).
    lab.sim.bounce(&fqdn)?;
    w.restarted_at = Some(lab.sim.elapsed());
    Ok(())
}

#[then(regex = r"^the SBC sends OPTIONS to every hub proxy within (\d+) s of its restart$")]
async fn options_after_restart(w: &mut DrlabWorld, secs: u64) -> StepResult {
    let since = w
        .restarted_at
        .ok_or("the SBC has not restarted in this scenario")?;
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let since_ms = since.as_secs_f64() * 1000.0;
    let sent_to = |l: &crate::world::Lab| -> Vec<(String, f64)> {
        sent(l)
            .into_iter()
            .filter(|s| s.from == fqdn && s.at_ms >= since_ms && s.label() == "OPTIONS")
            .map(|s| (s.to.clone(), s.at_ms - since_ms))
            .collect()
    };
    let all = |l: &crate::world::Lab| {
        let got = sent_to(l);
        sbc::direct_routing::HUB_FQDNS
            .iter()
            .all(|h| got.iter().any(|(to, _)| to == h))
    };
    lab.run_until(Duration::from_secs(secs) + Duration::from_millis(1), all)
        .map_err(|e| e.to_string())?;
    let got = sent_to(lab);
    let late = got.iter().any(|(_, ms)| *ms > secs as f64 * 1000.0);
    if !all(lab) || late {
        return fail(
            lab,
            format!("OPTIONS to every hub proxy within {secs} s of the restart; sent (proxy, ms after): {got:?}"),
        );
    }
    // New identifiers: a branch or Call-ID from before the restart would
    // match the peers' old transactions and dialogs.
    let fqdn = lab.config.sbc_fqdn.clone();
    let ids = |before: bool| -> std::collections::BTreeSet<String> {
        sent(lab)
            .into_iter()
            .filter(|s| s.from == fqdn && (s.at_ms < since_ms) == before && s.label() == "OPTIONS")
            .filter_map(|s| s.message())
            .flat_map(|m| {
                let branch = m.top_via().ok().and_then(|v| v.branch);
                let call_id = m.call_id().ok().map(str::to_string);
                [branch, call_id].into_iter().flatten()
            })
            .collect()
    };
    let reused: Vec<String> = ids(true).intersection(&ids(false)).cloned().collect();
    if !reused.is_empty() {
        return fail(
            lab,
            format!("new branches and Call-IDs after the restart; reused {reused:?}"),
        );
    }
    Ok(())
}

/// The last final answer the SBC sent to a BYE from `side` (`carrier`
/// or `hub`), within 5 s.
#[then(regex = r"^the SBC answers the (carrier|hub)'s BYE with (\d+)$")]
async fn answers_bye(w: &mut DrlabWorld, side: String, code: u16) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let find = move |l: &crate::world::Lab| {
        sent(l).into_iter().rev().find(|s| {
            s.from == fqdn
                && on_side(&s.to, &side)
                && s.message().is_some_and(|m| {
                    m.status().is_some_and(|c| c >= 200)
                        && m.cseq().is_ok_and(|c| c.method == Method::Bye)
                })
        })
    };
    lab.run_until(Duration::from_secs(5), |l| find(l).is_some())
        .map_err(|e| e.to_string())?;
    match find(lab).and_then(|s| s.message()) {
        Some(m) if m.status() == Some(code) => Ok(()),
        Some(m) => fail(lab, format!("{code} to the BYE, got {}", m.summary())),
        None => fail(lab, format!("{code} to the BYE, got no answer")),
    }
}

/// A host of the carrier (its gateways and phones) or of the hub (its
/// proxies).
fn on_side(host: &str, side: &str) -> bool {
    match side {
        "hub" => host.ends_with(".pstnhub.microsoft.com"),
        _ => host.starts_with("carrier") || host.ends_with(crate::world::CARRIER),
    }
}

fn sbc_calls(l: &crate::world::Lab) -> usize {
    l.sut.state().map_or(0, |s| s.calls)
}

/// The SBC's BYE to a far end that is gone or cut off: sent (and, on UDP,
/// resent), never answered, and the call let go when its transaction
/// gives up (Timer F, 64·T1 = 32 s, RFC 3261 §17.1.2.2; a BYE's failure
/// ends the dialog, §15.1.1), not kept for ever.
#[then(
    regex = r"^the SBC's BYE to the (carrier|hub) goes unanswered, and the SBC lets the call go about (\d+) s after sending it$"
)]
async fn bye_unanswered(w: &mut DrlabWorld, side: String, secs: u64) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let byes = |l: &crate::world::Lab| -> Vec<crate::trace::Sent> {
        sent(l)
            .into_iter()
            .filter(|s| s.from == fqdn && on_side(&s.to, &side) && s.label() == "BYE")
            .collect()
    };
    lab.run_until(Duration::from_secs(5), |l| !byes(l).is_empty())
        .map_err(|e| e.to_string())?;
    let Some(first) = byes(lab).into_iter().next() else {
        return fail(lab, format!("a BYE from the SBC to the {side}"));
    };
    lab.run_until(Duration::from_secs(secs + 10), |l| sbc_calls(l) == 0)
        .map_err(|e| e.to_string())?;
    let let_go = lab.now().as_secs_f64() * 1000.0;
    let sent_times: Vec<f64> = byes(lab).iter().map(|s| s.at_ms).collect();
    let answered = sent(lab).into_iter().any(|s| {
        on_side(&s.from, &side)
            && s.to == lab.config.sbc_fqdn
            && s.message().is_some_and(|m| {
                m.status().is_some() && m.cseq().is_ok_and(|c| c.method == Method::Bye)
            })
    });
    let after = (let_go - first.at_ms) / 1000.0;
    // Over TLS a BYE is sent once; over UDP again on Timer E, doubling
    // from T1 (0.5 s) to T2 (4 s), until Timer F (§17.1.2.2): 11 sends in
    // 32 s.
    let sends = if first.transport == "UDP" { 11 } else { 1 };
    if sbc_calls(lab) != 0
        || answered
        || (after - secs as f64).abs() > 2.0
        || sent_times.len() != sends
    {
        return fail(
            lab,
            format!(
                "the BYE sent {sends} time(s), unanswered, and the call let go about {secs} s after it; answered: {answered}, calls held: {}, let go {after:.1} s after; BYE sent at (ms) {sent_times:?}",
                sbc_calls(lab)
            ),
        );
    }
    Ok(())
}

/// The SBC lets the call go although its own BYE to the other side
/// cannot be sent: a crashed host answers no connect (no RST, as a
/// machine that is down), and the SBC's connect gives up after 4 s
/// (`CONNECT_TIMEOUT`), which fails the BYE and ends the dialog.
#[then(
    regex = r"^the SBC lets the call go about (\d+) s later, when its connect for the BYE times out$"
)]
async fn lets_go_after_connect(w: &mut DrlabWorld, secs: u64) -> StepResult {
    let lab = w.lab()?;
    let start = lab.now();
    lab.run_until(Duration::from_secs(secs + 5), |l| sbc_calls(l) == 0)
        .map_err(|e| e.to_string())?;
    let after = (lab.now() - start).as_secs_f64();
    if sbc_calls(lab) != 0 || (after - secs as f64).abs() > 1.0 {
        let problems = crate::steps::sbc_problems(lab);
        return fail(
            lab,
            format!(
                "no call held by the SBC about {secs} s after {start:?}; {} held after {after:.1} s; SBC problems: {problems}",
                sbc_calls(lab)
            ),
        );
    }
    Ok(())
}

/// The carrier's gateway host crashes (its calls and transactions
/// forgotten, nothing answers on its address) or starts anew.
#[when(regex = r"^the carrier gateway (goes away|comes back)$")]
async fn carrier_gateway(w: &mut DrlabWorld, what: String) -> StepResult {
    let lab = w.lab()?;
    if what == "goes away" {
        lab.sim.crash(crate::world::CARRIER)?;
    } else {
        lab.sim.bounce(crate::world::CARRIER)?;
    }
    Ok(())
}

/// From now, for `secs`: datagrams between the two are lost, streams
/// wait (a partition: TCP holds its segments and delivers them after).
#[when(regex = r"^the link between (.+) and (.+) goes down for (\d+) s$")]
async fn link_down_for(w: &mut DrlabWorld, a: String, b: String, secs: u64) -> StepResult {
    let lab = w.lab()?;
    let now = lab.now();
    lab.outage(&a, &b, now, now + Duration::from_secs(secs))
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(1))
        .map_err(|e| e.to_string())
}

#[then(
    regex = r"^the hub ends the call for lack of media about (\d+) seconds after the restart, and the SBC answers its BYE with (\d+)$"
)]
async fn hub_ends_after_restart(w: &mut DrlabWorld, secs: u64, code: u16) -> StepResult {
    let since = w
        .restarted_at
        .ok_or("the SBC has not restarted in this scenario")?;
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let since_ms = since.as_secs_f64() * 1000.0;
    let bye = move |l: &crate::world::Lab| {
        sent(l).into_iter().find(|s| {
            s.at_ms >= since_ms && s.from.contains("pstnhub") && s.to == fqdn && s.label() == "BYE"
        })
    };
    let fqdn2 = lab.config.sbc_fqdn.clone();
    let answer = move |l: &crate::world::Lab| {
        sent(l).into_iter().find(|s| {
            s.at_ms >= since_ms
                && s.from == fqdn2
                && s.to.contains("pstnhub")
                && s.message().is_some_and(|m| {
                    m.status().is_some_and(|c| c >= 200)
                        && m.cseq().is_ok_and(|c| c.method == Method::Bye)
                })
        })
    };
    let done = |l: &crate::world::Lab| bye(l).is_some() && answer(l).is_some();
    lab.run_until(Duration::from_secs(secs + 10), done)
        .map_err(|e| e.to_string())?;
    let (Some(b), Some(a)) = (bye(lab), answer(lab)) else {
        return fail(
            lab,
            "a BYE from the hub after the restart, and the SBC's answer to it",
        );
    };
    let gap = (b.at_ms - since_ms) / 1000.0;
    let reason = b
        .message()
        .and_then(|m| m.headers.get("Reason").map(str::to_string))
        .unwrap_or_default();
    let got = a.message().and_then(|m| m.status());
    if (gap - secs as f64).abs() > 2.0 || !reason.contains("Media timeout") || got != Some(code) {
        return fail(
            lab,
            format!("the hub's BYE about {secs} s after the restart with a media-timeout Reason, answered {code}; it came after {gap:.1} s with Reason {reason:?}, answered {got:?}"),
        );
    }
    Ok(())
}

/// A hub proxy crashes (its host and connections gone, its state lost)
/// or comes back (started anew).
#[when(regex = r"^the hub proxy (\S+) (crashes|comes back)$")]
async fn proxy_crashes(w: &mut DrlabWorld, host: String, what: String) -> StepResult {
    let lab = w.lab()?;
    if !host.ends_with(".pstnhub.microsoft.com") || !lab.hosts.contains(&host) {
        return Err(format!("no hub proxy {host} in this world"));
    }
    if what == "crashes" {
        lab.sim.crash(host.as_str())?;
    } else {
        lab.sim.bounce(host.as_str())?;
    }
    Ok(())
}

#[then("the PSTN caller hears ringing")]
async fn caller_hears_ringing(w: &mut DrlabWorld) -> StepResult {
    use carrier_sim::trunk::{PstnDirection, PstnState};
    let lab = w.lab()?;
    let ringing = |l: &crate::world::Lab| {
        crate::steps::last_pstn_state(l, PstnDirection::FromPstn) == Some(PstnState::Ringing)
    };
    lab.run_until(Duration::from_secs(5), ringing)
        .map_err(|e| e.to_string())?;
    if !ringing(lab) {
        let state = crate::steps::last_pstn_state(lab, PstnDirection::FromPstn);
        let problems = crate::steps::sbc_problems(lab);
        return fail(
            lab,
            format!("the PSTN caller hearing ringing; it is {state:?}; SBC problems: {problems}"),
        );
    }
    Ok(())
}
