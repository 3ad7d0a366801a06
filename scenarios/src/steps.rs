//! Step definitions: the domain language of the certification suites.
//!
//! Each `Then` checks what crossed the simulated network (the trace) or
//! what a far end observed (the simulators' views), never the SBC's own
//! opinion of itself, and says what it expected and what it saw.

use crate::trace::{ladder, sent_messages, Sent};
use crate::world::{Lab, LabConfig};
use carrier_sim::trunk::{CarrierCommand, PstnDirection, PstnState};
use cucumber::{given, then, when, World};
use drlab_sim::far_end::Answering;
use drlab_sim::MediaStats;
use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::message::HeadersExt;
use sbc::sip::sdp::SessionDescription;
use sbc::sip::wire::Method;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teams_sim::hub::{CallDirection, CallState, HubCommand, SbcStatus};

/// The seed every world of this run starts from (`drlab certify --seed`).
pub static SEED: AtomicU64 = AtomicU64::new(REFERENCE_SEED);

/// SIP cores of the reference SBC in this run's worlds (`drlab certify
/// --sbc-shards`).
pub static SBC_SHARDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// The seed the committed trace snapshots were recorded with. A run with
/// another seed draws other Call-IDs, tags and keys, so its traces are
/// checked for well-formedness instead of compared.
pub const REFERENCE_SEED: u64 = 1;

/// Where `drlab certify` puts what a run produces. When set (and
/// `INSTA_UPDATE` is not), a trace that differs from its snapshot is
/// written under it as `snapshots/<name>.snap.new`, never into the source
/// tree; `cargo test` leaves it unset and uses insta as usual.
pub static RUN_DIR: Mutex<Option<std::path::PathBuf>> = Mutex::new(None);

/// The SBC the run's worlds are built around (set by `drlab certify`).
pub static TARGET: Mutex<crate::certify::Target> = Mutex::new(crate::certify::Target::Sim);

/// Where `drlab certify` finds the committed snapshots: `tests/snapshots`
/// beside the features folder it reads (set by the runner), so an
/// installed binary pointed at a checkout uses that checkout's.
pub static SNAPSHOTS: Mutex<Option<std::path::PathBuf>> = Mutex::new(None);

/// Where the committed snapshots are: beside the features in use, else the
/// source tree this binary was built from.
pub fn snapshots_dir() -> std::path::PathBuf {
    SNAPSHOTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/snapshots"))
        })
}

fn lock_run_dir() -> std::sync::MutexGuard<'static, Option<std::path::PathBuf>> {
    RUN_DIR.lock().unwrap_or_else(|e| e.into_inner())
}

/// The body of an insta snapshot file (after its `---` header).
fn snapshot_body(text: &str) -> &str {
    let mut rest = text;
    if let Some(r) = rest.strip_prefix("---\n") {
        if let Some(end) = r.find("\n---\n") {
            rest = &r[end + 5..];
        }
    }
    rest
}

/// The first lines where `new` differs from `old`, a few either side.
fn short_diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let first = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = first.saturating_sub(2);
    let mut out = String::new();
    for i in from..(first + 4).min(a.len().max(b.len())) {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if x == y => out.push_str(&format!("   {x}\n")),
            (x, y) => {
                if let Some(x) = x {
                    out.push_str(&format!(" - {x}\n"));
                }
                if let Some(y) = y {
                    out.push_str(&format!(" + {y}\n"));
                }
            }
        }
    }
    out
}

#[derive(Debug, Default, World)]
pub struct DrlabWorld {
    pub scenario: String,
    pub lab: Option<Lab>,
    pub(crate) caller: Option<String>,
    pub(crate) teams_user: Option<String>,
    /// Call-ID of the tester's last request, and how many it sent.
    pub(crate) tester_call: Option<String>,
    pub(crate) tester_sent: u32,
    /// How long the far ends take to answer in this scenario.
    answer_after: Duration,
    /// The tenant's second SBC, set before the world is built.
    pub(crate) second_sbc: Option<crate::world::SecondSbc>,
    /// The hub's session interval, set before the world is built.
    pub(crate) session_expires: Option<u32>,
    /// The SBC's gateway has MediaBypass on, set before the world is built.
    pub(crate) media_bypass: bool,
    /// The carrier trunk's mode, set before the world is built.
    pub(crate) trunk: crate::world::Trunk,
    /// The PSTN phones' scripts so far (steps build them up).
    pub(crate) phone_scripts: std::collections::BTreeMap<String, carrier_sim::trunk::PhoneScript>,
    /// The SBC's admission limits and whether it trusts the attacker's
    /// address, set before the world is built.
    pub(crate) limits: Option<sbc::b2bua::Limits>,
    pub(crate) attacker_trusted: bool,
    /// When the SBC was last restarted (simulated time).
    pub(crate) restarted_at: Option<Duration>,
}

type StepResult = Result<(), String>;

impl DrlabWorld {
    pub(crate) fn has_lab(&self) -> bool {
        self.lab.is_some()
    }

    pub(crate) fn lab(&mut self) -> Result<&mut Lab, String> {
        self.lab.as_mut().ok_or_else(|| {
            "no world yet: start with `Given the SBC is registered in the tenant as <fqdn>`".into()
        })
    }

    /// Everything sent so far, SIP and media, as a pcap file (see
    /// [`crate::pcap`]), with what its media came to.
    pub fn pcap(&self) -> Option<(Vec<u8>, crate::pcap::MediaCount)> {
        let lab = self.lab.as_ref()?;
        let media = sent_messages(&lab.media.events(), &lab.names());
        let epoch = match &lab.sim {
            crate::world::Engine::Real(world) => world.started_unix(),
            crate::world::Engine::Sim(_) => crate::world::EPOCH_SECS,
        };
        Some(crate::pcap::write(&sent(lab), &media, epoch))
    }

    /// Every SIP message sent so far, for the HTML report's ladder.
    pub fn ladder_messages(&self) -> Vec<crate::report::LadderMessage> {
        let Some(lab) = self.lab.as_ref() else {
            return Vec::new();
        };
        sent_messages(&lab.recorder.events(), &lab.names())
            .into_iter()
            .map(|s| {
                let text = String::from_utf8_lossy(&s.raw).into_owned();
                crate::report::LadderMessage {
                    at_ms: s.at_ms,
                    summary: text.lines().next().unwrap_or_default().to_string(),
                    from: s.from,
                    to: s.to,
                    text,
                }
            })
            .collect()
    }

    /// The ladder of everything sent so far.
    pub fn trace(&self) -> Option<String> {
        let lab = self.lab.as_ref()?;
        let sent = sent_messages(&lab.recorder.events(), &lab.names());
        let media = sent_messages(&lab.media.events(), &lab.names());
        let mut text = ladder(
            &format!("{} (seed {})", self.scenario, lab.config.seed),
            &sent,
            &lab.hosts,
        );
        text.push_str(&crate::trace::stun_lines(&media));
        Some(text)
    }
}

pub(crate) fn sent(lab: &Lab) -> Vec<Sent> {
    sent_messages(&lab.recorder.events(), &lab.names())
}

/// The arrows of the ladder, for failure messages.
pub(crate) fn arrows(lab: &Lab) -> String {
    let s = sent(lab);
    let text = ladder("trace so far:", &s, &lab.hosts);
    text.split("\n\n[").next().unwrap_or_default().to_string()
}

pub(crate) fn fail<T>(lab: &Lab, expected: impl std::fmt::Display) -> Result<T, String> {
    Err(format!("expected {expected}\n{}", arrows(lab)))
}

pub(crate) fn lock<T>(m: &Arc<Mutex<T>>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the SBC under test logged, if it is ours.
pub(crate) fn sbc_problems(lab: &Lab) -> String {
    lab.sbc_view()
        .map(|v| lock(&v).problems.joined("; "))
        .unwrap_or_default()
}

/// The user part and host of a URI, read by rsip (the second parser).
fn rsip_user_host(uri: &rsip::Uri) -> (String, String) {
    (
        uri.auth
            .as_ref()
            .map(|a| a.user.clone())
            .unwrap_or_default(),
        uri.host_with_port.host.to_string(),
    )
}

/// A request as rsip reads it, or why it does not.
fn rsip_request(s: &Sent) -> Result<rsip::Request, String> {
    match s.rsip() {
        Some(rsip::SipMessage::Request(r)) => Ok(r),
        Some(_) => Err("a response where a request was expected".into()),
        None => Err(format!("rsip cannot read what {} sent", s.from)),
    }
}

pub(crate) fn rsip_header<'a>(headers: &'a rsip::Headers, name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| match h {
        rsip::Header::Other(n, v) if n.eq_ignore_ascii_case(name) => Some(v.as_str()),
        rsip::Header::Allow(a) if name.eq_ignore_ascii_case("Allow") => Some(a.value()),
        _ => None,
    })
}

#[given(regex = r"^the SBC is registered in the tenant as (\S+)(?: with the (\S+) certificate)?$")]
async fn registered(w: &mut DrlabWorld, fqdn: String, certificate: String) -> StepResult {
    let seed = SEED.load(Ordering::Relaxed);
    let config = LabConfig {
        seed,
        links: crate::world::LinkProfile::for_seed(seed),
        sbc_fqdn: fqdn,
        sbc_certificate: if certificate.is_empty() {
            "good".into()
        } else {
            certificate
        },
        second_sbc: w.second_sbc.take(),
        session_expires: w.session_expires.take().unwrap_or(1800),
        media_bypass: w.media_bypass,
        trunk: std::mem::take(&mut w.trunk),
        limits: w.limits.take().unwrap_or_default(),
        attacker_trusted: w.attacker_trusted,
        sbc_shards: SBC_SHARDS.load(Ordering::Relaxed),
        ..LabConfig::default()
    };
    // The last world first (a real lab's ports are the next one's).
    w.lab = None;
    let target = TARGET.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (config, sut): (LabConfig, Box<dyn crate::world::SystemUnderTest>) = match target {
        crate::certify::Target::Sim => (config, Box::new(crate::world::ReferenceSbc::default())),
        // A real lab's far ends draw fresh identifiers each scenario: a
        // Call-ID must be unique in the world (RFC 3261 §8.1.1.4), and an
        // SBC or media relay keeps a call's state for a while after it
        // ends (rtpengine: 30 s), so seed 1's Call-ID again would land in
        // the last scenario's call.
        crate::certify::Target::Process { lab, program } => (
            LabConfig {
                real: Some(lab),
                seed: sbc::sip::rng::unpredictable_seed(),
                ..config
            },
            Box::new(crate::world::sut::ProcessSbc::new(program)),
        ),
        crate::certify::Target::External { lab, fqdn } => (
            LabConfig {
                real: Some(lab),
                sbc_alias: Some(config.sbc_fqdn.clone()).filter(|given| *given != fqdn),
                sbc_fqdn: fqdn,
                seed: sbc::sip::rng::unpredictable_seed(),
                ..config
            },
            Box::new(crate::world::sut::ExternalSbc),
        ),
    };
    w.lab = Some(Lab::with_sut(config, sut).map_err(|e| format!("cannot build the world: {e}"))?);
    w.answer_after = Answering::default().answer_after;
    Ok(())
}

/// The far ends on one side answer `secs` after ringing from now on.
fn answer_after(
    w: &mut DrlabWorld,
    secs: u64,
    tell: impl FnOnce(&Lab, Answering) -> Result<(), String>,
) -> StepResult {
    let answer_after = Duration::from_secs(secs);
    w.answer_after = w.answer_after.max(answer_after);
    let a = Answering {
        answer_after,
        ..Answering::default()
    };
    tell(w.lab()?, a)
}

#[given(regex = r"^Teams users answer (\d+) s after ringing$")]
async fn teams_answer_after(w: &mut DrlabWorld, secs: u64) -> StepResult {
    answer_after(w, secs, |lab, a| {
        lab.hub_commands
            .send(HubCommand::Answering(a))
            .map_err(|e| e.to_string())
    })
}

#[given(regex = r"^PSTN phones answer (\d+) s after ringing$")]
async fn phones_answer_after(w: &mut DrlabWorld, secs: u64) -> StepResult {
    answer_after(w, secs, |lab, a| {
        lab.carrier_commands
            .send(CarrierCommand::Answering(a))
            .map_err(|e| e.to_string())
    })
}

#[then(regex = r"^nobody sent a CANCEL$")]
async fn no_cancel(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    if let Some(c) = sent(lab).iter().find(|s| s.label() == "CANCEL") {
        return fail(
            lab,
            format!("no CANCEL, but {} sent one to {}", c.from, c.to),
        );
    }
    Ok(())
}

#[then(regex = r"^the SBC sent exactly one INVITE to the hub$")]
async fn one_invite_to_hub(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let invites: Vec<String> = sent(lab)
        .iter()
        .filter(|s| s.from == fqdn && s.to.contains("pstnhub") && s.label() == "INVITE")
        .map(|s| s.to.clone())
        .collect();
    if invites.len() != 1 {
        return fail(
            lab,
            format!("one INVITE from the SBC to the hub (no failover), got {invites:?}"),
        );
    }
    Ok(())
}

/// Run after every scenario (the runner appends it, see
/// [`crate::certify`]): the world runs on until every party has let go of
/// every call, session, transaction and media port, or fails saying what
/// is still held. 70 s covers 64·T1 of lingering transactions on UDP and
/// one OPTIONS round.
#[then("no party holds a call, session, transaction or media port")]
pub async fn nothing_held(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let start = lab.now();
    lab.run_until(Duration::from_secs(70), |l| l.holdings().is_empty())
        .map_err(|e| e.to_string())?;
    let h = lab.holdings();
    if !h.is_empty() {
        return fail(
            lab,
            format!("every party to hold nothing within 70 s after {start:?}; still held: {h}"),
        );
    }
    Ok(())
}

#[given(expr = "the hub proxy {word} is down")]
async fn proxy_down(w: &mut DrlabWorld, host: String) -> StepResult {
    let lab = w.lab()?;
    if !host.ends_with(".pstnhub.microsoft.com") || !lab.hosts.contains(&host) {
        return Err(format!(
            "no hub proxy {host} in this world; hosts: {}",
            lab.hosts.join(", ")
        ));
    }
    lab.sim.crash(host.as_str())?;
    Ok(())
}

#[given(regex = r"^the link between (.+) and (.+) has (\d+) ms of latency$")]
async fn link_latency(w: &mut DrlabWorld, a: String, b: String, ms: u64) -> StepResult {
    w.lab()?
        .set_latency(&a, &b, Duration::from_millis(ms))
        .map_err(|e| e.to_string())
}

#[when("the SBC starts")]
async fn sbc_starts(w: &mut DrlabWorld) -> StepResult {
    w.lab()?
        .run_for(Duration::from_secs(1))
        .map_err(|e| e.to_string())
}

#[then(expr = "the SBC sends OPTIONS to {word} with its FQDN in Contact")]
async fn sbc_sends_options(w: &mut DrlabWorld, hub: String) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let find = |lab: &Lab| {
        sent(lab).into_iter().find(|s| {
            s.from == fqdn
                && s.to == hub
                && s.message()
                    .is_some_and(|m| m.method() == Some(&Method::Options))
        })
    };
    lab.run_until(Duration::from_secs(5), |l| find(l).is_some())
        .map_err(|e| e.to_string())?;
    let Some(options) = find(lab) else {
        return fail(lab, format!("OPTIONS from {fqdn} to {hub}"));
    };
    let r = rsip_request(&options)?;
    let contact = r
        .contact_header()
        .map_err(|e| format!("the SBC's OPTIONS has no Contact: {e}"))?
        .typed()
        .map_err(|e| format!("Contact unreadable: {e}"))?;
    let (_, host) = rsip_user_host(&contact.uri);
    if matches!(contact.uri.host_with_port.host, rsip::Host::IpAddr(_)) || host != fqdn {
        return fail(lab, format!("Contact host {fqdn}, got {}", contact.uri));
    }
    if options.transport != "TLS" || options.remote.port() != 5061 {
        return fail(
            lab,
            format!(
                "OPTIONS over TLS to port 5061, got {} to {}",
                options.transport, options.remote
            ),
        );
    }
    Ok(())
}

#[then("the hub answers 200 on the same connection")]
async fn hub_answers_same_connection(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let s = sent(lab);
    let Some(options) = s.iter().find(|x| x.from == fqdn && x.label() == "OPTIONS") else {
        return fail(lab, "an OPTIONS from the SBC");
    };
    let call_id = options
        .message()
        .and_then(|m| m.call_id().ok().map(str::to_string))
        .unwrap_or_default();
    let answer = s.iter().find(|x| {
        x.to == fqdn
            && x.message()
                .is_some_and(|m| m.status().is_some() && m.call_id().ok() == Some(call_id.as_str()))
    });
    let Some(answer) = answer else {
        return fail(lab, format!("an answer to OPTIONS {call_id}"));
    };
    let m = match answer.rsip() {
        Some(rsip::SipMessage::Response(r)) => r,
        _ => return fail(lab, "the hub's answer to read as a response (rsip)"),
    };
    if m.status_code.code() != 200 {
        return fail(
            lab,
            format!("200 to the SBC's OPTIONS, got {}", m.status_code),
        );
    }
    if answer.local != options.remote || answer.remote != options.local {
        return fail(
            lab,
            format!(
                "the 200 on the SBC's connection {} <-> {}, it came {} -> {}",
                options.local, options.remote, answer.local, answer.remote
            ),
        );
    }
    let to = m
        .to_header()
        .map_err(|e| e.to_string())?
        .typed()
        .map_err(|e| e.to_string())?;
    if to.tag().is_some() {
        return fail(lab, "no To-tag on the hub's 200 to OPTIONS");
    }
    let allow = rsip_header(&m.headers, "Allow");
    if allow != Some("INVITE,ACK,OPTIONS,CANCEL,BYE,NOTIFY") {
        return fail(
            lab,
            format!("Allow: INVITE,ACK,OPTIONS,CANCEL,BYE,NOTIFY, got {allow:?}"),
        );
    }
    Ok(())
}

#[then(expr = "the hub sends its own OPTIONS to {word}")]
async fn hub_sends_options(w: &mut DrlabWorld, fqdn: String) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.host_named(&fqdn);
    let find = |lab: &Lab| {
        sent(lab).into_iter().find(|s| {
            s.to == fqdn
                && s.from.contains("pstnhub")
                && s.message()
                    .is_some_and(|m| m.method() == Some(&Method::Options))
        })
    };
    lab.run_until(Duration::from_secs(5), |l| find(l).is_some())
        .map_err(|e| e.to_string())?;
    let Some(ping) = find(lab) else {
        return fail(lab, format!("an OPTIONS from the hub to {fqdn}"));
    };
    let r = rsip_request(&ping)?;
    if rsip_user_host(&r.uri).1 != fqdn {
        return fail(lab, format!("Request-URI host {fqdn}, got {}", r.uri));
    }
    let tls = lab.sbc_ports().1;
    if ping.remote.port() != tls || ping.local.port() == 5061 {
        return fail(
            lab,
            format!(
                "a new hub connection to {fqdn}:{tls}, got {} -> {}",
                ping.local, ping.remote
            ),
        );
    }
    let agent = r.headers.iter().find_map(|h| match h {
        rsip::Header::UserAgent(ua) => Some(ua.value().to_string()),
        rsip::Header::Other(n, v) if n.eq_ignore_ascii_case("User-Agent") => Some(v.clone()),
        _ => None,
    });
    if !agent
        .unwrap_or_default()
        .starts_with("Microsoft.PSTNHub.SIPProxy")
    {
        return fail(lab, "the hub's User-Agent Microsoft.PSTNHub.SIPProxy");
    }
    Ok(())
}

#[given("the hub marks the SBC active")]
#[then("the hub marks the SBC active")]
async fn hub_marks_active(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let active = |l: &Lab| {
        lock(&l.hub)
            .sbcs
            .get(&fqdn)
            .is_some_and(|h| h.status == SbcStatus::Active)
    };
    lab.run_until(Duration::from_secs(70), active)
        .map_err(|e| e.to_string())?;
    if !active(lab) {
        let health = lock(&lab.hub).sbcs.get(&fqdn).cloned();
        let problems = lock(&lab.hub).problems.joined("\n");
        return fail(
            lab,
            format!("{fqdn} Active within 70 s; hub health {health:?}; hub problems:\n{problems}"),
        );
    }
    Ok(())
}

#[when(expr = "PSTN caller {word} calls {word}")]
async fn pstn_calls(w: &mut DrlabWorld, from: String, to: String) -> StepResult {
    w.caller = Some(from.clone());
    let lab = w.lab()?;
    lab.carrier_commands
        .send(CarrierCommand::Call { from, to })
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(100))
        .map_err(|e| e.to_string())
}

#[when(expr = "Teams user {word} dials {word}")]
async fn teams_dials(w: &mut DrlabWorld, user: String, number: String) -> StepResult {
    w.teams_user = Some(user.clone());
    let lab = w.lab()?;
    lab.hub_commands
        .send(HubCommand::Dial { user, number })
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(100))
        .map_err(|e| e.to_string())
}

#[then(expr = "the SBC sends the INVITE to {word} with user=phone and E.164 numbers")]
async fn sbc_invite_to_hub(w: &mut DrlabWorld, hub: String) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let find = |l: &Lab| {
        sent(l)
            .into_iter()
            .find(|s| s.from == fqdn && s.to == hub && s.label() == "INVITE")
    };
    lab.run_until(Duration::from_secs(10), |l| find(l).is_some())
        .map_err(|e| e.to_string())?;
    let Some(invite) = find(lab) else {
        return fail(lab, format!("an INVITE from {fqdn} to {hub}"));
    };
    // Read with rsip, not with the stack that wrote it.
    let r = rsip_request(&invite)?;
    let (user, _) = rsip_user_host(&r.uri);
    let user_phone = r
        .uri
        .params
        .iter()
        .any(|p| p.to_string().eq_ignore_ascii_case(";user=phone"));
    if !user.starts_with('+') || !user_phone {
        return fail(
            lab,
            format!("Request-URI +E.164 with user=phone, got {}", r.uri),
        );
    }
    let from = r
        .from_header()
        .map_err(|e| e.to_string())?
        .typed()
        .map_err(|e| e.to_string())?;
    if !rsip_user_host(&from.uri).0.starts_with('+') {
        return fail(lab, format!("From with +E.164, got {}", from.uri));
    }
    let contact = r
        .contact_header()
        .map_err(|_| "INVITE without Contact".to_string())?
        .typed()
        .map_err(|e| e.to_string())?;
    if rsip_user_host(&contact.uri).1 != fqdn {
        return fail(lab, format!("Contact host {fqdn}, got {}", contact.uri));
    }
    let m = invite.message().ok_or("unparsable INVITE")?;
    let sdp = SessionDescription::parse(&String::from_utf8_lossy(&m.body))
        .map_err(|e| format!("INVITE SDP: {e}"))?;
    let audio = sdp.media.first().ok_or("INVITE SDP without media")?;
    if audio.proto != "RTP/SAVP"
        || !audio
            .crypto
            .iter()
            .any(|c| c.suite == "AES_CM_128_HMAC_SHA1_80")
    {
        return fail(
            lab,
            format!(
                "RTP/SAVP with AES_CM_128_HMAC_SHA1_80, got {} with {:?}",
                audio.proto, audio.crypto
            ),
        );
    }
    Ok(())
}

pub(crate) fn last_hub_call_state(lab: &Lab, dir: CallDirection) -> Option<CallState> {
    lock(&lab.hub)
        .calls
        .iter()
        .rev()
        .find(|c| c.direction == dir)
        .map(|c| c.state.clone())
}

pub(crate) fn last_pstn_state(lab: &Lab, dir: PstnDirection) -> Option<PstnState> {
    lock(&lab.carrier)
        .calls
        .iter()
        .rev()
        .find(|c| c.direction == dir)
        .map(|c| c.state.clone())
}

#[then("the Teams user answers")]
async fn teams_answers(w: &mut DrlabWorld) -> StepResult {
    // Answered on both sides, and the SBC ACKed the hub's 200 (without the
    // ACK the hub drops the call after 4 s).
    let acked = |l: &Lab| {
        lock(&l.hub)
            .calls
            .iter()
            .rev()
            .find(|c| c.direction == CallDirection::Inbound)
            .is_some_and(|c| c.acked)
    };
    let done = |l: &Lab| {
        last_hub_call_state(l, CallDirection::Inbound) == Some(CallState::Answered)
            && last_pstn_state(l, PstnDirection::FromPstn) == Some(PstnState::Answered)
            && acked(l)
    };
    let wait = w.answer_after + Duration::from_secs(10);
    let lab = w.lab()?;
    lab.run_until(wait, done).map_err(|e| e.to_string())?;
    if !done(lab) {
        let hub = last_hub_call_state(lab, CallDirection::Inbound);
        let pstn = last_pstn_state(lab, PstnDirection::FromPstn);
        let problems = [sbc_problems(lab), lock(&lab.hub).problems.joined("; ")].join(" | ");
        let acked = acked(lab);
        return fail(lab, format!("the call answered on both sides and the hub's 200 ACKed; Teams side {hub:?} (ACKed: {acked}), PSTN side {pstn:?}; problems: {problems}"));
    }
    Ok(())
}

#[then(expr = "the hub refuses the INVITE with {int}")]
async fn hub_refuses(w: &mut DrlabWorld, code: u16) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    let find = |l: &Lab| {
        sent(l).into_iter().find(|s| {
            s.to == fqdn
                && s.from.contains("pstnhub")
                && s.message().is_some_and(|m| {
                    m.status().is_some_and(|c| c >= 300)
                        && m.cseq().is_ok_and(|c| c.method == Method::Invite)
                })
        })
    };
    lab.run_until(Duration::from_secs(5), |l| find(l).is_some())
        .map_err(|e| e.to_string())?;
    let Some(answer) = find(lab) else {
        return fail(lab, format!("a {code} from the hub to the SBC's INVITE"));
    };
    let m = answer.message().ok_or("unparsable")?;
    if m.status() != Some(code) {
        return fail(lab, format!("{code} from the hub, got {}", m.summary()));
    }
    // The hub's view must say why, so a report can name the rule.
    if lock(&lab.hub).refusals.is_empty() {
        return fail(lab, "the hub to record the refusal");
    }
    Ok(())
}

#[then(expr = "the PSTN caller hears {int}")]
async fn pstn_hears(w: &mut DrlabWorld, code: u16) -> StepResult {
    let lab = w.lab()?;
    let ended = |l: &Lab| {
        matches!(
            last_pstn_state(l, PstnDirection::FromPstn),
            Some(PstnState::Ended(_))
        )
    };
    lab.run_until(Duration::from_secs(5), ended)
        .map_err(|e| e.to_string())?;
    match last_pstn_state(lab, PstnDirection::FromPstn) {
        Some(PstnState::Ended(why)) if why.starts_with(&code.to_string()) => Ok(()),
        other => fail(
            lab,
            format!("the PSTN call to end with {code}, it is {other:?}"),
        ),
    }
}

#[then("the phone rings")]
async fn phone_rings(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let ringing = |l: &Lab| {
        matches!(
            last_pstn_state(l, PstnDirection::ToPstn),
            Some(PstnState::Ringing | PstnState::Answered)
        ) && matches!(
            last_hub_call_state(l, CallDirection::Outbound),
            Some(CallState::Ringing | CallState::Answered)
        )
    };
    lab.run_until(Duration::from_secs(5), ringing)
        .map_err(|e| e.to_string())?;
    if !ringing(lab) {
        let problems = sbc_problems(lab);
        return fail(
            lab,
            format!("the phone ringing and the Teams side hearing it; SBC problems: {problems}"),
        );
    }
    Ok(())
}

#[then("the phone answers")]
async fn phone_answers(w: &mut DrlabWorld) -> StepResult {
    let wait = w.answer_after + Duration::from_secs(10);
    let lab = w.lab()?;
    let done = |l: &Lab| {
        last_pstn_state(l, PstnDirection::ToPstn) == Some(PstnState::Answered)
            && last_hub_call_state(l, CallDirection::Outbound) == Some(CallState::Answered)
    };
    lab.run_until(wait, done).map_err(|e| e.to_string())?;
    if !done(lab) {
        let hub = last_hub_call_state(lab, CallDirection::Outbound);
        let pstn = last_pstn_state(lab, PstnDirection::ToPstn);
        return fail(
            lab,
            format!("the call answered on both sides; Teams side {hub:?}, PSTN side {pstn:?}"),
        );
    }
    Ok(())
}

pub(crate) type SharedStats = Arc<Mutex<MediaStats>>;

/// The media processor's and the phone's counters for the latest call.
pub(crate) fn last_media(lab: &Lab) -> Option<(SharedStats, SharedStats)> {
    let teams = lock(&lab.hub).calls.back()?.media.clone();
    let pstn = lock(&lab.carrier).calls.back()?.media.clone();
    Some((teams, pstn))
}

#[then("audio flows both ways, decrypted and in order")]
async fn audio_flows(w: &mut DrlabWorld) -> StepResult {
    // One second of audio (50 frames of 20 ms) at each far end from now on:
    // what came before (early media) does not count.
    const FRAMES: u32 = 50;
    let lab = w.lab()?;
    let Some((teams, pstn)) = last_media(lab) else {
        return fail(lab, "a call with media on both sides");
    };
    let (t0, p0) = (lock(&teams).received, lock(&pstn).received);
    let (t2, p2) = (teams.clone(), pstn.clone());
    lab.run_until(Duration::from_secs(5), move |_| {
        lock(&t2).received >= t0 + FRAMES && lock(&p2).received >= p0 + FRAMES
    })
    .map_err(|e| e.to_string())?;
    let (t, p) = (lock(&teams).clone(), lock(&pstn).clone());
    for (side, s, base) in [("Teams media processor", &t, t0), ("PSTN phone", &p, p0)] {
        if s.received < base + FRAMES
            || s.out_of_order > 0
            || s.corrupt > 0
            || s.unprotect_errors > 0
        {
            let relays: Vec<_> = lab
                .sbc_view()
                .map(|v| lock(&v).relays.iter().map(|r| lock(r).clone()).collect())
                .unwrap_or_default();
            return fail(lab, format!("{FRAMES} more frames at the {side}, intact and in order; it saw {s:?}; SBC relays {relays:?}"));
        }
    }
    Ok(())
}

#[when("the PSTN caller hangs up")]
async fn pstn_hangs_up(w: &mut DrlabWorld) -> StepResult {
    let number = w.caller.clone().ok_or("no PSTN caller in this scenario")?;
    let lab = w.lab()?;
    lab.carrier_commands
        .send(CarrierCommand::HangUp { number })
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(10))
        .map_err(|e| e.to_string())
}

#[when("the Teams user hangs up")]
async fn teams_hangs_up(w: &mut DrlabWorld) -> StepResult {
    let user = w
        .teams_user
        .clone()
        .ok_or("no Teams user in this scenario")?;
    let lab = w.lab()?;
    lab.hub_commands
        .send(HubCommand::HangUp { user })
        .map_err(|e| e.to_string())?;
    lab.run_for(Duration::from_millis(10))
        .map_err(|e| e.to_string())
}

/// A BYE between `a` and `b` (either way) answered with 200 by the other side.
fn bye_answered(lab: &Lab, a: &str, b: &str) -> bool {
    let s = sent(lab);
    s.iter()
        .filter(|x| {
            x.label() == "BYE" && ((x.from == a && x.to == b) || (x.from == b && x.to == a))
        })
        .any(|bye| {
            let call_id = bye
                .message()
                .and_then(|m| m.call_id().ok().map(str::to_string));
            s.iter().any(|r| {
                r.from == bye.to
                    && r.to == bye.from
                    && r.label() == "200 OK (BYE)"
                    && r.message()
                        .and_then(|m| m.call_id().ok().map(str::to_string))
                        == call_id
            })
        })
}

#[then("both legs end with BYE and 200")]
async fn both_legs_end(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let done = |l: &Lab| {
        bye_answered(l, crate::world::CARRIER, &sbc)
            && l.hosts
                .iter()
                .filter(|h| h.contains("pstnhub.microsoft.com") && !h.starts_with("mp"))
                .any(|h| bye_answered(l, &sbc, h))
    };
    lab.run_until(Duration::from_secs(5), done)
        .map_err(|e| e.to_string())?;
    if !done(lab) {
        return fail(
            lab,
            "a BYE answered by 200 on the carrier leg and on the Teams leg",
        );
    }
    let ended = |l: &Lab| {
        matches!(
            lock(&l.hub).calls.back().map(|c| c.state.clone()),
            Some(CallState::Ended(_))
        ) && matches!(
            lock(&l.carrier).calls.back().map(|c| c.state.clone()),
            Some(PstnState::Ended(_))
        )
    };
    // The far ends update their views when the 200 reaches them.
    lab.run_until(Duration::from_secs(1), ended)
        .map_err(|e| e.to_string())?;
    if !ended(lab) {
        let hub = lock(&lab.hub).calls.back().map(|c| c.state.clone());
        let pstn = lock(&lab.carrier).calls.back().map(|c| c.state.clone());
        return fail(
            lab,
            format!("the call ended on the Teams side and on the PSTN side: Teams {hub:?}, PSTN {pstn:?}"),
        );
    }
    Ok(())
}

#[then("the trace matches its snapshot")]
async fn trace_snapshot(w: &mut DrlabWorld) -> StepResult {
    // Let retransmissions and late answers land so the trace is complete.
    w.lab()?
        .run_for(Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    let trace = w.trace().ok_or("no world")?;
    let lab = w.lab()?;
    // A real lab's trace is no snapshot (wall-clock times, an SBC of its
    // own): it must parse, as another seed's must.
    // Nor is one of an SBC on several cores: each draws its own Call-IDs.
    if lab.config.seed != REFERENCE_SEED || lab.config.real.is_some() || lab.config.sbc_shards > 1 {
        for s in sent(lab) {
            if s.message().is_none() {
                return fail(
                    lab,
                    format!(
                        "every message in the trace to parse; one sent by {} does not",
                        s.from
                    ),
                );
            }
        }
        return Ok(());
    }
    let name = crate::certify::slug(&w.scenario);
    let run_dir = lock_run_dir().clone();
    if let (Some(dir), None) = (run_dir, std::env::var_os("INSTA_UPDATE")) {
        let path = snapshots_dir().join(format!("{name}.snap"));
        let old = std::fs::read_to_string(&path)
            .map_err(|e| format!("no snapshot to compare with at {}: {e}", path.display()))?;
        let old_body = snapshot_body(&old).trim_end();
        if old_body == trace.trim_end() {
            return Ok(());
        }
        let new_path = dir.join("snapshots").join(format!("{name}.snap.new"));
        let header = old
            .strip_suffix(snapshot_body(&old))
            .unwrap_or("---\n---\n");
        std::fs::create_dir_all(dir.join("snapshots"))
            .and_then(|_| std::fs::write(&new_path, format!("{header}{trace}")))
            .map_err(|e| format!("cannot write {}: {e}", new_path.display()))?;
        return Err(format!(
            "the trace differs from {}; first difference:\n{}full new trace: {} (accept with INSTA_UPDATE=always, or copy it over the .snap)",
            path.display(),
            short_diff(old_body, trace.trim_end()),
            new_path.display()
        ));
    }
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(snapshots_dir());
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_snapshot!(name.clone(), trace));
    }));
    result.map_err(|_| {
        format!(
            "the trace differs from tests/snapshots/{name}.snap (review with `cargo insta review`)"
        )
    })
}

// ----- health (behaviour §2, cases 13–16) -----

fn sbc_status(lab: &Lab) -> Option<teams_sim::hub::SbcHealth> {
    let fqdn = lab.config.sbc_fqdn.clone();
    lock(&lab.hub).sbcs.get(&fqdn).cloned()
}

#[given("the SBC sends no OPTIONS")]
#[when("the SBC stops sending OPTIONS")]
async fn sbc_stops_options(w: &mut DrlabWorld) -> StepResult {
    w.lab()?.sut.set(sbc::b2bua::SbcCommand::SendOptions(false))
}

#[when("the SBC sends OPTIONS again")]
async fn sbc_resumes_options(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    lab.sut.set(sbc::b2bua::SbcCommand::SendOptions(true))?;
    lab.run_for(Duration::from_millis(10))
        .map_err(|e| e.to_string())
}

#[when(regex = r"^(\d+) (seconds|minutes) pass$")]
async fn time_passes(w: &mut DrlabWorld, n: u64, unit: String) -> StepResult {
    let secs = if unit == "minutes" { n * 60 } else { n };
    w.lab()?
        .run_for(Duration::from_secs(secs))
        .map_err(|e| e.to_string())
}

#[then(regex = r#"^the hub shows the SBC as "([^"]+)" within (\d+) minutes?$"#)]
async fn hub_shows_within(w: &mut DrlabWorld, shown: String, minutes: u64) -> StepResult {
    let lab = w.lab()?;
    let is = |l: &Lab| sbc_status(l).is_some_and(|h| h.status.dashboard() == shown);
    lab.run_until(Duration::from_secs(minutes * 60), is)
        .map_err(|e| e.to_string())?;
    if !is(lab) {
        let h = sbc_status(lab);
        return fail(
            lab,
            format!("the dashboard to show {shown:?} within {minutes} min; health {h:?}"),
        );
    }
    Ok(())
}

#[then(regex = r#"^the hub shows the SBC as "([^"]+)" for (\d+) minutes?$"#)]
async fn hub_shows_for(w: &mut DrlabWorld, shown: String, minutes: u64) -> StepResult {
    let lab = w.lab()?;
    let other = |l: &Lab| sbc_status(l).is_none_or(|h| h.status.dashboard() != shown);
    if other(lab) {
        let h = sbc_status(lab);
        return fail(
            lab,
            format!("the dashboard to show {shown:?}; health {h:?}"),
        );
    }
    let start = lab.now();
    lab.run_until(Duration::from_secs(minutes * 60), other)
        .map_err(|e| e.to_string())?;
    if other(lab) {
        let (h, after) = (sbc_status(lab), lab.now() - start);
        return fail(
            lab,
            format!("{shown:?} for {minutes} min; it changed after {after:?}: {h:?}"),
        );
    }
    Ok(())
}

#[then("the hub has sent no OPTIONS to the SBC")]
async fn hub_sent_no_options(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let fqdn = lab.config.sbc_fqdn.clone();
    if let Some(s) = sent(lab)
        .iter()
        .find(|s| s.to == fqdn && s.from.contains("pstnhub") && s.label() == "OPTIONS")
    {
        return fail(
            lab,
            format!(
                "no OPTIONS from the hub before the SBC's first (case 13); {} sent one",
                s.from
            ),
        );
    }
    Ok(())
}

#[then(regex = r"^the hub shows a TLS warning for the SBC's certificate$")]
async fn hub_tls_warning(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let warned = |l: &Lab| sbc_status(l).is_some_and(|h| h.certificate_warning.is_some());
    lab.run_until(Duration::from_secs(5), warned)
        .map_err(|e| e.to_string())?;
    if !warned(lab) {
        let h = sbc_status(lab);
        return fail(
            lab,
            format!("a TLS warning (certificate expiring within 30 days); health {h:?}"),
        );
    }
    Ok(())
}

#[then(regex = r"^the hub refuses the SBC's TLS connections: (.+)$")]
async fn hub_refuses_tls(w: &mut DrlabWorld, rule: String) -> StepResult {
    let lab = w.lab()?;
    let refused = |l: &Lab| {
        lock(&l.hub)
            .tls_refusals
            .iter()
            .any(|(_, _, r)| r.to_string().starts_with(&rule))
    };
    lab.run_until(Duration::from_secs(5), refused)
        .map_err(|e| e.to_string())?;
    if !refused(lab) {
        let got: Vec<String> = lock(&lab.hub)
            .tls_refusals
            .iter()
            .map(|(p, a, r)| format!("{p} from {a}: {r}"))
            .collect();
        return fail(
            lab,
            format!("a TLS refusal \"{rule}\"; the hub refused: {got:?}"),
        );
    }
    // Case 3: the connection is closed, no SIP answer at all.
    let fqdn = lab.config.sbc_fqdn.clone();
    if let Some(s) = sent(lab)
        .iter()
        .find(|s| s.to == fqdn && s.from.contains("pstnhub"))
    {
        return fail(
            lab,
            format!(
                "no SIP from the hub to a refused SBC; {} sent {}",
                s.from,
                s.label()
            ),
        );
    }
    Ok(())
}

// ----- the Teams side and misconfigured SBCs (behaviour §3, cases 9.24–9.60) -----

#[given(regex = r"^Teams user (\S+) (is busy|declines calls)$")]
async fn teams_user_refuses(w: &mut DrlabWorld, user: String, how: String) -> StepResult {
    let status = Some(if how == "is busy" { 486 } else { 603 });
    w.lab()?
        .hub_commands
        .send(HubCommand::Refuses { user, status })
        .map_err(|e| e.to_string())
}

#[given(regex = r"^the hub proxy (\S+) answers INVITEs with 503 and Retry-After (\d+)$")]
async fn proxy_overloaded(w: &mut DrlabWorld, proxy: String, secs: u32) -> StepResult {
    w.lab()?
        .hub_commands
        .send(HubCommand::Overload {
            proxy,
            retry_after: Some(secs),
        })
        .map_err(|e| e.to_string())
}

/// A deliberately misconfigured SBC (only the lab's own SBC can be told).
#[given(
    regex = r"^the SBC is misconfigured to (answer the hub with plain RTP|fail over on every failure|ignore Retry-After|hold with a=sendonly|never refresh sessions|send BYE before a transfer completes|send no NOTIFY for a transfer|rewrite the Referred-By of a transfer|refresh with UPDATE the hub does not allow|keep its ICE credentials on an ICE restart)$"
)]
async fn sbc_misconfigured(w: &mut DrlabWorld, fault: String) -> StepResult {
    use sbc::b2bua::{SbcCommand, SbcFault};
    let fault = match fault.as_str() {
        "answer the hub with plain RTP" => SbcFault::PlainRtpToTeams,
        "fail over on every failure" => SbcFault::RetryEveryFailure,
        "hold with a=sendonly" => SbcFault::HoldWithSendonly,
        "never refresh sessions" => SbcFault::NoSessionRefresh,
        "send BYE before a transfer completes" => SbcFault::ByeBeforeTransferCompletes,
        "send no NOTIFY for a transfer" => SbcFault::NoTransferNotify,
        "rewrite the Referred-By of a transfer" => SbcFault::RewriteReferredBy,
        "refresh with UPDATE the hub does not allow" => SbcFault::RefreshWithUnallowedUpdate,
        "keep its ICE credentials on an ICE restart" => SbcFault::NoIceRestart,
        _ => SbcFault::IgnoreRetryAfter,
    };
    w.lab()?.sut.set(SbcCommand::Fault(fault))
}

/// The hub refused the SBC's SDP answer: it ended the call itself and its
/// media processor never sent the SBC a packet (behaviour §3.3: no plain
/// RTP, ever).
#[then("the hub ends the call without sending it any media")]
async fn hub_ends_without_media(w: &mut DrlabWorld) -> StepResult {
    let lab = w.lab()?;
    let ended = |l: &Lab| {
        matches!(
            last_hub_call_state(l, CallDirection::Outbound),
            Some(CallState::Ended(_))
        )
    };
    lab.run_until(Duration::from_secs(5), ended)
        .map_err(|e| e.to_string())?;
    let state = last_hub_call_state(lab, CallDirection::Outbound);
    let Some(CallState::Ended(why)) = &state else {
        return fail(lab, format!("the hub to end the call, it is {state:?}"));
    };
    if !why.starts_with("SBC answer refused") {
        return fail(
            lab,
            format!("the hub to end the call over the SBC's answer, it ended: {why}"),
        );
    }
    let sent = lock(&lab.hub)
        .calls
        .back()
        .map(|c| lock(&c.media).sent)
        .unwrap_or_default();
    if sent != 0 {
        return fail(
            lab,
            format!("no media from the hub, it sent {sent} packets"),
        );
    }
    Ok(())
}
