//! The carrier trunk: places calls from PSTN phones to the SBC, answers
//! calls the SBC sends to PSTN numbers, and hangs up. Policy only, on the
//! SIP stack's user agent; the phones ring, answer and talk the way every
//! simulated far end does ([`drlab_sim::far_end`]).

use drlab_sim::far_end::{Answering, Callee, CalleeStep, Talk};
use drlab_sim::{MediaHostHandle, MediaStats, ProbeCommand, ProbeDriver};
use sbc::driver::{HostSetup, Role};
use sbc::media::PortAllocator;
use sbc::problems::ProblemLog;
use sbc::sip::endpoint::EndpointConfig;
use sbc::sip::rng::SeededRng;
use sbc::sip::sdp::offer_answer::{Codec, LocalMedia};
use sbc::sip::sdp::Direction;
use sbc::sip::sdp::{Origin, SessionDescription};
use sbc::sip::session::{
    EndReason, Hop, Reply, RequestBuilder, SessionConfig, SessionEvent, SessionId,
};
use sbc::sip::transaction::TimerConfig;
use sbc::sip::transport::{Network, Tap, TransportConfig};
use sbc::sip::ua::{UaConfig, UaCounts, UaEvent, UserAgent};
use sbc::sip::wire::{Message, Method, Uri};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

mod phone;
mod record;
mod refer;
mod registrar;

pub use phone::{Outcome, PhoneScript};
pub use registrar::{TrunkAuth, MIN_EXPIRES};

/// The trunk takes REFER (RFC 3515) as a transferee: a PSTN switch that
/// places the new call itself when the SBC passes a transfer on.
const CARRIER_ALLOW: &str = "INVITE,ACK,BYE,CANCEL,OPTIONS,REFER,NOTIFY";
/// How many calls the view keeps (the counter keeps counting).
pub const VIEW_HISTORY: usize = 256;

#[derive(Debug, Clone)]
pub struct Phone {
    /// E.164 with `+`.
    pub number: String,
    /// The host its audio comes from, and the handle that opens probes there.
    pub media_host: String,
    pub media: MediaHostHandle,
}

#[derive(Debug, Clone)]
pub struct CarrierConfig {
    pub fqdn: String,
    /// The UDP port the trunk listens on (and writes in Contact).
    pub listen_port: u16,
    /// The SBC's carrier-side address.
    pub sbc_host: String,
    pub sbc_port: u16,
    /// Country code for the national number format on the trunk.
    pub country_code: String,
    pub phones: Vec<Phone>,
    /// When a called phone rings and answers.
    pub answering: Answering,
    pub media_frames: u32,
    /// The phones' RTP ports.
    pub media_ports: std::ops::RangeInclusive<u16>,
    pub timers: TimerConfig,
    /// A registration trunk: the SBC registers with these credentials and
    /// calls go to its binding; `None`: static-IP peering to `sbc_host`.
    pub auth: Option<TrunkAuth>,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PstnDirection {
    /// A PSTN phone calls out through the trunk (inbound for Teams).
    FromPstn,
    /// The SBC calls a PSTN phone.
    ToPstn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PstnState {
    Dialing,
    Ringing,
    Answered,
    Ended(String),
}

#[derive(Debug, Clone)]
pub struct PstnCallView {
    pub serial: u64,
    pub phone: String,
    pub peer: String,
    pub direction: PstnDirection,
    pub state: PstnState,
    pub media: Arc<Mutex<MediaStats>>,
}

#[derive(Debug, Clone, Default)]
pub struct CarrierView {
    /// The trunk's socket is bound and it has started.
    pub listening: bool,
    /// The latest calls (at most [`VIEW_HISTORY`]).
    pub calls: VecDeque<PstnCallView>,
    pub calls_total: u64,
    pub problems: ProblemLog,
    pub ua: UaCounts,
    pub live_calls: usize,
    /// Phone media ports allocated now.
    pub media_ports: usize,
    /// A registration trunk: the SBC's binding (its Contact URI), and the
    /// REGISTERs accepted, challenged (401/407) and refused (403/423).
    pub binding: Option<String>,
    pub registrations: u64,
    pub challenges: u64,
    pub auth_refusals: u64,
    /// One record per ended call (at most [`MAX_RECORDS`] kept; the
    /// writer of a records file drains them), and how many were dropped
    /// for want of room.
    pub records: VecDeque<sbc::records::CallRecord>,
    pub records_dropped: u64,
}

/// Records kept in the view before the oldest are dropped (and counted).
pub const MAX_RECORDS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CarrierCommand {
    Call {
        from: String,
        to: String,
    },
    HangUp {
        number: String,
    },
    /// From now on, called phones ring and answer this way.
    Answering(Answering),
    /// From now on, the phone with this number (E.164) takes calls and
    /// hangs up this way.
    Script {
        number: String,
        script: PhoneScript,
    },
    /// The phone puts its call on hold, the way PSTN gear writes it.
    Hold {
        number: String,
        how: HoldStyle,
    },
    /// The phone takes its call off hold.
    Resume {
        number: String,
    },
    /// From now on, every phone without a script of its own takes calls
    /// and hangs up this way (a load run's phones).
    DefaultScript(PhoneScript),
}

/// How a PSTN phone (or the carrier's switch) says "hold" in SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStyle {
    /// `a=sendonly` (RFC 3264 §8.4: the holder may still send music).
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `c=IN IP4 0.0.0.0` (RFC 2543, still common on PSTN gear).
    ZeroAddress,
}

struct PstnCall {
    serial: u64,
    phone: String,
    callee: Option<Callee>,
    talk: Talk,
    port: u16,
    why: Option<String>,
    /// This call carries out a REFER received on that call: its progress
    /// goes there in NOTIFYs (and which statuses have).
    refer_of: Option<(SessionId, Vec<u16>)>,
    /// The phone's script (a called phone's outcome; either side's hang-up).
    script: PhoneScript,
    /// When the phone hangs up by its script.
    hang_up_at: Option<Instant>,
    /// Its milestones, for the call record.
    timeline: record::Timeline,
}

/// Run the trunk (UDP on `listen_port`) until its host stops. Every SIP message
/// goes to `tap`, if given.
pub async fn run_trunk<N: Network>(
    net: N,
    config: CarrierConfig,
    view: Arc<Mutex<CarrierView>>,
    commands: mpsc::UnboundedReceiver<CarrierCommand>,
    tap: Option<Arc<dyn Tap>>,
) -> std::io::Result<()> {
    let ip = net.resolve(&config.fqdn, config.listen_port).await?.ip();
    let mut tc = TransportConfig::new(config.fqdn.clone());
    tc.udp = Some(SocketAddr::new(ip, config.listen_port));
    let mut endpoint = EndpointConfig::new(ip.to_string());
    endpoint.timers = config.timers;
    endpoint.user_agent = Some("drlab carrier-sim".into());
    let session = SessionConfig::new(format!("<sip:{ip}:{}>", config.listen_port));
    // Each name once, in first-seen order (thousands of phones share one
    // media host in a load run).
    let mut names = vec![config.sbc_host.clone()];
    for p in &config.phones {
        if !names.contains(&p.media_host) {
            names.push(p.media_host.clone());
        }
    }
    // The first phone of a number, as the list was searched before.
    let mut phone_index = BTreeMap::new();
    for (i, p) in config.phones.iter().enumerate() {
        phone_index.entry(p.number.clone()).or_insert(i);
    }
    let setup = HostSetup {
        transport: tc,
        ua: UaConfig { endpoint, session },
        names,
        rng: SeededRng::for_host(config.seed, &config.fqdn),
    };
    let media = ProbeDriver::new(
        config
            .phones
            .iter()
            .map(|p| (p.media_host.clone(), p.media.clone()))
            .collect(),
    );
    let ports = PortAllocator::new(config.media_ports.clone())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let registrar = config.auth.clone().map(registrar::Registrar::new);
    let trunk = Trunk {
        registrar,
        epoch: None,
        config,
        view,
        ip,
        ports,
        scripts: BTreeMap::new(),
        default_script: PhoneScript::default(),
        phone_index,
        calls: BTreeMap::new(),
        next_media: 0,
        media_out: VecDeque::new(),
    };
    sbc::driver::run(net, setup, trunk, commands, media, tap).await
}

/// A phone's codecs, telephone-event (RFC 4733) on `te` (101 unless the
/// phone's script says otherwise: carriers also use 96, 100...).
fn phone_codecs(te: u8) -> Vec<Codec> {
    vec![
        Codec::pcma(),
        Codec::pcmu(),
        Codec::new(te, "telephone-event", 8000),
    ]
}

/// E.164 to the national format carriers use: `+4930123456` → `030123456`,
/// another country → `00…`.
pub fn national(e164: &str, country_code: &str) -> String {
    match e164.strip_prefix('+') {
        Some(rest) => match rest.strip_prefix(country_code) {
            Some(n) => format!("0{n}"),
            None => format!("00{rest}"),
        },
        None => e164.to_string(),
    }
}

struct Trunk {
    config: CarrierConfig,
    view: Arc<Mutex<CarrierView>>,
    ip: IpAddr,
    ports: PortAllocator,
    /// Phones with a script of their own (the others: `default_script`).
    scripts: BTreeMap<String, PhoneScript>,
    default_script: PhoneScript,
    /// Index of `config.phones` by number (a load run has thousands).
    phone_index: BTreeMap<String, usize>,
    /// A registration trunk's registrar.
    registrar: Option<registrar::Registrar>,
    /// When the trunk started: call records count from here.
    epoch: Option<Instant>,
    calls: BTreeMap<SessionId, PstnCall>,
    next_media: u64,
    media_out: VecDeque<ProbeCommand>,
}

fn lock_stats(s: &Arc<Mutex<MediaStats>>) -> std::sync::MutexGuard<'_, MediaStats> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl Trunk {
    fn view(&self) -> std::sync::MutexGuard<'_, CarrierView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn problem(&self, kind: &'static str, p: String) {
        self.view().problems.push(kind, p);
    }

    fn add_view(&self, phone: &str, peer: &str, direction: PstnDirection, talk: &Talk) -> u64 {
        let mut v = self.view();
        v.calls_total += 1;
        let serial = v.calls_total;
        v.calls.push_back(PstnCallView {
            serial,
            phone: phone.into(),
            peer: peer.into(),
            direction,
            state: PstnState::Dialing,
            media: talk.stats.clone(),
        });
        if v.calls.len() > VIEW_HISTORY {
            v.calls.pop_front();
        }
        serial
    }

    fn set_state(&self, serial: u64, state: PstnState) {
        let mut v = self.view();
        if let Some(c) = v.calls.iter_mut().rev().find(|c| c.serial == serial) {
            c.state = state;
        }
    }

    /// A phone's media: its host's address and a port from the range.
    fn phone_media(&mut self, ua: &UserAgent, phone: &Phone) -> Result<(LocalMedia, Talk), String> {
        let ip = ua
            .routing()
            .address(&phone.media_host)
            .map_err(|e| e.to_string())?;
        let port = self.ports.allocate().ok_or("no free phone media port")?;
        let te = self.script(&phone.number).telephone_event;
        self.next_media += 1;
        let (talk, open) = Talk::open(self.next_media, &phone.media_host, port);
        self.media_out.push_back(open);
        let media = LocalMedia {
            address: ip.to_string(),
            port,
            codecs: phone_codecs(te),
            srtp_key: None,
            rtcp_mux: false,
            ice: None,
        };
        Ok((media, talk))
    }

    fn origin(ua: &mut UserAgent, address: &str) -> Origin {
        Origin {
            username: "-".into(),
            session_id: ua.rng().next_u32() as u64,
            session_version: 1,
            address: address.into(),
        }
    }

    /// A PSTN phone calls `to` (E.164) through the trunk; `target`, if
    /// given, is the Request-URI as is (a Refer-To the SBC handed us).
    fn call(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        from: &str,
        to: &str,
        target: Option<&str>,
    ) -> Result<SessionId, String> {
        let phone = (self.phone_index.get(from))
            .and_then(|&i| self.config.phones.get(i))
            .cloned()
            .ok_or_else(|| format!("no PSTN phone {from}"))?;
        let (media, mut talk) = self.phone_media(ua, &phone)?;
        let origin = Self::origin(ua, &media.address);
        let offer = media.offer(origin);
        let cc = self.config.country_code.clone();
        let (calling, called) = (national(from, &cc), national(to, &cc));
        // A registration trunk calls the SBC where it registered (RFC 3261
        // §10: the binding), the number in the Request-URI's user part.
        let sbc = match &self.registrar {
            Some(r) => match r.binding(now) {
                Some(b) => {
                    let hostport = b
                        .contact
                        .rsplit_once('@')
                        .map_or(b.contact.as_str(), |x| x.1);
                    hostport.trim_start_matches("sip:").to_string()
                }
                None => {
                    self.ports.release(talk.port);
                    if let Some(c) = talk.close() {
                        self.media_out.push_back(c);
                    }
                    return Err("the SBC is not registered".into());
                }
            },
            None => format!("{}:{}", self.config.sbc_host, self.config.sbc_port),
        };
        let ruri = target.map_or_else(|| format!("sip:{called}@{sbc}"), str::to_string);
        let invite = RequestBuilder::new(
            Method::Invite,
            ruri.clone(),
            format!("<sip:{calling}@{}>", self.config.fqdn),
            format!("<{ruri}>"),
        )
        .contact(format!(
            "<sip:{calling}@{}:{}>",
            self.ip, self.config.listen_port
        ))
        .header("Allow", CARRIER_ALLOW)
        .build(ua.rng(), &self.config.fqdn);
        let id = match ua.invite(
            now,
            invite,
            Some(offer.clone()),
            Hop::Uri(format!("sip:{sbc}")),
        ) {
            Ok(id) => id,
            Err(e) => {
                self.ports.release(talk.port);
                if let Some(c) = talk.close() {
                    self.media_out.push_back(c);
                }
                return Err(e.to_string());
            }
        };
        talk.media = Some(media);
        talk.local = Some(offer);
        let serial = self.add_view(from, to, PstnDirection::FromPstn, &talk);
        let script = self.script(from);
        let timeline = record::Timeline::new(PstnDirection::FromPstn, from, to, now);
        self.calls.insert(
            id,
            PstnCall {
                serial,
                phone: from.to_string(),
                callee: None,
                port: talk.port,
                talk,
                why: None,
                refer_of: None,
                script,
                hang_up_at: None,
                timeline,
            },
        );
        Ok(id)
    }

    /// The SBC's SDP (early media in a 183, or the answer): the phone
    /// starts talking once both sides agree.
    fn heard(
        &mut self,
        ua: &mut UserAgent,
        id: SessionId,
        sdp: Option<SessionDescription>,
        answered: bool,
    ) {
        let frames = self.config.media_frames;
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let serial = c.serial;
        match c.talk.heard(sdp, answered, frames, ua.rng()) {
            Ok(Some(cmd)) => self.media_out.push_back(cmd),
            Ok(None) => {}
            Err(e) => self.problem("media", format!("SBC SDP for the phone: {e}")),
        }
        let state = if answered {
            PstnState::Answered
        } else {
            PstnState::Ringing
        };
        self.set_state(serial, state);
    }

    fn start_talk(&mut self, ua: &mut UserAgent, id: SessionId) {
        let frames = self.config.media_frames;
        if let Some(c) = self.calls.get_mut(&id) {
            if let Some(cmd) = c.talk.start(frames, ua.rng()) {
                self.media_out.push_back(cmd);
            }
        }
    }

    fn on_session(&mut self, now: Instant, ua: &mut UserAgent, id: SessionId, event: SessionEvent) {
        match event {
            SessionEvent::Incoming { request, .. } => self.on_invite(now, ua, id, &request),
            // A 183 with SDP brings early media (ringback from the far end).
            SessionEvent::Progress { sdp, response } => {
                if let Some(c) = self.calls.get_mut(&id) {
                    c.timeline.progress(now);
                }
                self.heard(ua, id, sdp, false);
                self.refer_progress(now, ua, id, &response);
            }
            SessionEvent::Answered { sdp, response } => {
                if let Some(c) = self.calls.get_mut(&id) {
                    c.timeline.answered(now);
                }
                self.heard(ua, id, sdp, true);
                self.answered(now, id);
                self.refer_progress(now, ua, id, &response);
            }
            SessionEvent::Ended { reason } => {
                self.refer_failed(now, ua, id, &reason);
                self.on_ended(now, id, reason)
            }
            SessionEvent::ReInvite { offer, .. } => {
                // RFC 3264 §8: answered from the phone's own media.
                let answer = match (offer, self.calls.get_mut(&id)) {
                    (Some(offer), Some(c)) => c.talk.answer_reinvite(offer),
                    (None, Some(c)) => c.talk.local.clone().ok_or_else(|| "no description".into()),
                    (_, None) => Err("no such call".into()),
                };
                match answer {
                    Ok(sd) => {
                        let _ = ua.answer_reinvite(now, id, Reply::new(200, "OK").sdp(sd));
                    }
                    Err(e) => {
                        self.problem("reinvite", format!("cannot answer a re-INVITE: {e}"));
                        let reply = Reply::new(488, "Not Acceptable Here");
                        let _ = ua.reject_reinvite(now, id, reply);
                    }
                }
            }
            SessionEvent::Request { key, request } if request.method() == Some(&Method::Refer) => {
                self.on_refer(now, ua, id, key, &request)
            }
            SessionEvent::Request { key, request } => {
                let _ = ua.respond_in_dialog(
                    now,
                    id,
                    key,
                    &request,
                    Reply::new(501, "Not Implemented"),
                );
            }
            SessionEvent::ReInviteDone { result } => {
                if let (Ok(Some(answer)), Some(c)) = (result, self.calls.get_mut(&id)) {
                    c.talk.remote = Some(answer);
                }
            }
            // Answers to our NOTIFYs need nothing more.
            SessionEvent::Confirmed | SessionEvent::Response { .. } => {}
        }
    }

    fn on_ended(&mut self, now: Instant, id: SessionId, reason: EndReason) {
        let Some(mut c) = self.calls.remove(&id) else {
            return;
        };
        let quality = lock_stats(&c.talk.stats)
            .quality
            .as_ref()
            .map(|q| sbc::records::Quality::from(&q.report()));
        let epoch = self.epoch.unwrap_or(now);
        let rec = c
            .timeline
            .record(c.serial, epoch, now, &reason, c.why.is_some(), quality);
        {
            let mut v = self.view();
            v.records.push_back(rec);
            if v.records.len() > MAX_RECORDS {
                v.records.pop_front();
                v.records_dropped += 1;
            }
        }
        if let Some(cmd) = c.talk.close() {
            self.media_out.push_back(cmd);
        }
        self.ports.release(c.port);
        let why = c.why.take().unwrap_or_else(|| match reason {
            EndReason::RemoteBye { .. } => "BYE from SBC".into(),
            EndReason::Rejected { code, reason, .. } => format!("{code} {reason}"),
            EndReason::Cancelled => "cancelled".into(),
            other => other.to_string(),
        });
        self.set_state(c.serial, PstnState::Ended(why));
    }

    /// The SBC calls a PSTN number.
    fn on_invite(&mut self, now: Instant, ua: &mut UserAgent, id: SessionId, request: &Message) {
        if let Some(r) = self.registrar.as_mut().filter(|r| r.challenges_invites()) {
            if let registrar::Judgement::Refuse(reply, why) = r.judge(now, ua.rng(), request) {
                self.count_refusal(reply.code, why);
                let _ = ua.reject(now, id, *reply);
                return;
            }
        }
        let called = Uri::parse(request.request_uri().unwrap_or_default())
            .ok()
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_default();
        let cc = self.config.country_code.clone();
        let Some(phone) = self
            .config
            .phones
            .iter()
            // Any form a switch takes: E.164, national, international.
            .find(|p| {
                p.number == called
                    || sbc::b2bua::numbers::to_e164(&called, &cc).is_ok_and(|n| n == p.number)
            })
            .cloned()
        else {
            let _ = ua.reject(now, id, Reply::new(404, "Not Found"));
            return;
        };
        let offer = match SessionDescription::parse(&String::from_utf8_lossy(&request.body)) {
            Ok(o) => o,
            Err(e) => {
                self.problem("sdp", format!("INVITE SDP unreadable: {e}"));
                let _ = ua.reject(now, id, Reply::new(488, "Not Acceptable Here"));
                return;
            }
        };
        let (media, mut talk) = match self.phone_media(ua, &phone) {
            Ok(m) => m,
            Err(e) => {
                self.problem("media", format!("phone media: {e}"));
                let _ = ua.reject(now, id, Reply::new(503, "Service Unavailable"));
                return;
            }
        };
        let origin = Self::origin(ua, &media.address);
        let answer = match media.answer(&offer, origin) {
            Ok(a) => a,
            Err(e) => {
                self.problem("sdp", format!("cannot answer offer: {e}"));
                self.ports.release(talk.port);
                if let Some(c) = talk.close() {
                    self.media_out.push_back(c);
                }
                let _ = ua.reject(now, id, Reply::new(488, "Not Acceptable Here"));
                return;
            }
        };
        let caller = request
            .from_header()
            .ok()
            .and_then(|f| f.parsed_uri().ok())
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_default();
        talk.media = Some(media);
        talk.local = Some(answer);
        talk.remote = Some(offer);
        let serial = self.add_view(&phone.number, &caller, PstnDirection::ToPstn, &talk);
        let caller_e164 = sbc::b2bua::numbers::to_e164(&caller, &cc).unwrap_or(caller.clone());
        let timeline =
            record::Timeline::new(PstnDirection::ToPstn, &caller_e164, &phone.number, now);
        let script = self.script(&phone.number);
        // A phone that does not answer "answers" with 480 when its ring
        // timeout is up; one that plays an announcement instead of
        // answering fails when the announcement is over.
        let mut answering = self.config.answering;
        if script.outcome == Outcome::NoAnswer {
            answering.answer_after = script.ring_timeout;
        }
        self.calls.insert(
            id,
            PstnCall {
                serial,
                phone: phone.number.clone(),
                callee: Some(Callee::new(now, answering)),
                port: talk.port,
                talk,
                why: None,
                refer_of: None,
                script,
                hang_up_at: None,
                timeline,
            },
        );
    }

    fn calls_due(&mut self, now: Instant, ua: &mut UserAgent) {
        let ids: Vec<SessionId> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                c.callee
                    .as_ref()
                    .and_then(|x| x.poll_timeout())
                    .is_some_and(|t| t <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        let contact = format!("<sip:{}:{}>", self.ip, self.config.listen_port);
        for id in ids {
            loop {
                let step = self
                    .calls
                    .get_mut(&id)
                    .and_then(|c| c.callee.as_mut())
                    .and_then(|c| c.handle_timeout(now));
                let serial = self.calls.get(&id).map(|c| c.serial).unwrap_or(0);
                let script = self.calls.get(&id).map(|c| c.script).unwrap_or_default();
                match step {
                    Some(CalleeStep::Ring) if !script.outcome.rings() && !script.early_media => {
                        // The network refuses at once (busy, congestion, …).
                        self.fail_call(now, ua, id, script.outcome);
                    }
                    Some(CalleeStep::Ring) if script.early_media => {
                        // RFC 3960: early media in a 183 with the phone's
                        // SDP; its audio (ringback or an announcement)
                        // flows before, or instead of, an answer.
                        let Some(sd) = self.calls.get(&id).and_then(|c| c.talk.local.clone())
                        else {
                            break;
                        };
                        let reply = Reply::new(183, "Session Progress")
                            .header("Contact", contact.clone())
                            .sdp(sd);
                        if ua.provisional(now, id, 0, reply).is_ok() {
                            self.start_talk(ua, id);
                        }
                        self.progressed(now, id);
                        self.set_state(serial, PstnState::Ringing);
                    }
                    Some(CalleeStep::Ring) => {
                        let reply = Reply::new(180, "Ringing").header("Contact", contact.clone());
                        let _ = ua.provisional(now, id, 0, reply);
                        self.progressed(now, id);
                        self.set_state(serial, PstnState::Ringing);
                    }
                    Some(CalleeStep::Answer) if script.outcome != Outcome::Answer => {
                        self.fail_call(now, ua, id, script.outcome);
                    }
                    Some(CalleeStep::Answer) => {
                        let Some(sd) = self.calls.get(&id).and_then(|c| c.talk.local.clone())
                        else {
                            break;
                        };
                        let reply = Reply::new(200, "OK")
                            .header("Contact", contact.clone())
                            .header("Allow", CARRIER_ALLOW)
                            .sdp(sd);
                        if ua.accept(now, id, 0, reply).is_ok() {
                            self.start_talk(ua, id);
                            self.set_state(serial, PstnState::Answered);
                            if let Some(c) = self.calls.get_mut(&id) {
                                c.timeline.answered(now);
                            }
                            self.answered(now, id);
                        }
                    }
                    None => break,
                }
            }
        }
    }
}

impl Trunk {
    fn count_refusal(&self, code: u16, why: String) {
        let mut v = self.view();
        if code == 401 || code == 407 {
            v.challenges += 1;
        } else {
            v.auth_refusals += 1;
        }
        v.problems.push("auth", why);
    }

    /// RFC 3261 §10.3: authenticate, then bind.
    fn on_register(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        key: &sbc::sip::transaction::TransactionKey,
        request: &Message,
    ) {
        let Some(r) = self.registrar.as_mut() else {
            return;
        };
        let (reply, refused) = match r.judge(now, ua.rng(), request) {
            registrar::Judgement::Ok => (r.register(now, request), None),
            registrar::Judgement::Refuse(reply, why) => (*reply, Some(why)),
        };
        let binding = r.binding(now).map(|b| b.contact.clone());
        if let Some(why) = refused {
            self.count_refusal(reply.code, why);
        }
        {
            let mut v = self.view();
            if reply.code == 200 {
                v.registrations += 1;
            } else if reply.code == 423 {
                v.auth_refusals += 1;
            }
            v.binding = binding;
        }
        ua.reply(now, key, reply.code, &reply.reason, reply.headers);
    }

    fn script(&self, number: &str) -> PhoneScript {
        self.scripts
            .get(number)
            .copied()
            .unwrap_or(self.default_script)
    }

    /// A called phone's failure, with its cause (RFC 3326).
    fn fail_call(&mut self, now: Instant, ua: &mut UserAgent, id: SessionId, outcome: Outcome) {
        let Some((code, phrase, cause, text)) = outcome.final_response() else {
            return;
        };
        if let Some(c) = self.calls.get_mut(&id) {
            if let Some(callee) = c.callee.as_mut() {
                callee.stop();
            }
            c.timeline.cause = Some(cause);
        }
        let reply = Reply::new(code, phrase).header("Reason", phone::q850_reason(cause, text));
        if let Err(e) = ua.reject(now, id, reply) {
            self.problem("call", format!("cannot answer {code}: {e}"));
        }
    }

    fn progressed(&mut self, now: Instant, id: SessionId) {
        if let Some(c) = self.calls.get_mut(&id) {
            c.timeline.progress(now);
        }
    }

    /// The call is answered: the phone's hang-up clock starts.
    fn answered(&mut self, now: Instant, id: SessionId) {
        if let Some(c) = self.calls.get_mut(&id) {
            c.hang_up_at = c.script.hang_up_after.map(|d| now + d);
        }
    }

    /// The phone with this number hangs up its call (BYE, or CANCEL
    /// while it is still ringing out).
    fn hang_up(&mut self, now: Instant, ua: &mut UserAgent, number: &str) {
        let found = self
            .calls
            .iter()
            .find(|(_, c)| c.phone == number && c.why.is_none())
            .map(|(id, _)| *id);
        if let Some(id) = found {
            self.hang_up_call(now, ua, id);
        }
    }

    /// This call's phone hangs up (BYE, or CANCEL while it rings out).
    fn hang_up_call(&mut self, now: Instant, ua: &mut UserAgent, id: SessionId) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        c.why = Some(format!("{} hung up", c.phone));
        c.hang_up_at = None;
        if let Some(callee) = c.callee.as_mut() {
            callee.stop();
        }
        ua.hang_up(now, id, Reply::new(480, "Temporarily Unavailable"), vec![]);
    }

    /// Calls whose phone's script hangs up now (by call: one number may
    /// have more than one).
    fn hang_ups_due(&mut self, now: Instant, ua: &mut UserAgent) {
        let due: Vec<SessionId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.why.is_none() && c.hang_up_at.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.hang_up_call(now, ua, id);
        }
    }

    /// A phone holds the call the way `how` says, or (`None`) resumes it,
    /// with a re-INVITE from its own description.
    fn hold(&mut self, now: Instant, ua: &mut UserAgent, number: &str, how: Option<HoldStyle>) {
        let found = self
            .calls
            .iter()
            .find(|(_, c)| c.phone == number && c.why.is_none())
            .map(|(id, c)| (*id, c.talk.local.clone()));
        let Some((id, Some(local))) = found else {
            return self.problem("hold", format!("no call of {number} to hold or resume"));
        };
        let offer = match how {
            Some(HoldStyle::SendOnly) => local.with_direction(Direction::SendOnly),
            Some(HoldStyle::RecvOnly) => local.with_direction(Direction::RecvOnly),
            Some(HoldStyle::ZeroAddress) => {
                // RFC 2543 hold: the connection address 0.0.0.0.
                let mut sd = local.with_direction(Direction::SendRecv);
                sd.connection = Some("0.0.0.0".into());
                for m in &mut sd.media {
                    if m.connection.is_some() {
                        m.connection = Some("0.0.0.0".into());
                    }
                }
                sd
            }
            None => {
                // Resume: the description it had before holding.
                let mut sd = local.with_direction(Direction::SendRecv);
                if let Some(media) = self.calls.get(&id).and_then(|c| c.talk.media.clone()) {
                    sd.connection = Some(media.address.clone());
                    for m in &mut sd.media {
                        if m.connection.is_some() {
                            m.connection = Some(media.address.clone());
                        }
                    }
                }
                sd
            }
        };
        match ua.reinvite(now, id, offer.clone(), Vec::new()) {
            Ok(()) => {
                if let Some(c) = self.calls.get_mut(&id) {
                    c.talk.local = Some(offer);
                }
            }
            Err(e) => self.problem("hold", format!("re-INVITE from {number}: {e}")),
        }
    }
}

impl Role for Trunk {
    type Command = CarrierCommand;
    type MediaCommand = ProbeCommand;
    type MediaEvent = ();

    fn start(&mut self, now: Instant, _ua: &mut UserAgent) {
        self.epoch = Some(now);
        self.view().listening = true;
    }

    fn on_event(&mut self, now: Instant, event: UaEvent, ua: &mut UserAgent) {
        match event {
            UaEvent::Session { id, event } => self.on_session(now, ua, id, event),
            UaEvent::Request { key, request, .. } => match request.method() {
                Some(Method::Options) => {
                    let allow = vec![("Allow".to_string(), CARRIER_ALLOW.to_string())];
                    ua.reply(now, &key, 200, "OK", allow);
                }
                Some(Method::Register) if self.registrar.is_some() => {
                    self.on_register(now, ua, &key, &request)
                }
                _ => {
                    ua.reply(now, &key, 501, "Not Implemented", vec![]);
                }
            },
            UaEvent::Refused { request, code, why } => self.problem(
                "rejected",
                format!("refused {} with {code}: {why}", request.summary()),
            ),
            UaEvent::Malformed { error, source } => self.problem(
                "malformed",
                format!("malformed from {}: {error}", source.remote),
            ),
            UaEvent::Response { .. } | UaEvent::Failed { .. } | UaEvent::TlsRefused { .. } => {}
        }
    }

    fn on_command(&mut self, now: Instant, command: CarrierCommand, ua: &mut UserAgent) {
        match command {
            CarrierCommand::Call { from, to } => {
                if let Err(e) = self.call(now, ua, &from, &to, None) {
                    self.problem(
                        "call",
                        format!("call from {from} to {to} failed to start: {e}"),
                    );
                }
            }
            CarrierCommand::HangUp { number } => self.hang_up(now, ua, &number),
            CarrierCommand::Answering(a) => self.config.answering = a,
            CarrierCommand::Script { number, script } => {
                self.scripts.insert(number, script);
            }
            CarrierCommand::Hold { number, how } => self.hold(now, ua, &number, Some(how)),
            CarrierCommand::Resume { number } => self.hold(now, ua, &number, None),
            CarrierCommand::DefaultScript(script) => self.default_script = script,
        }
    }

    fn on_media(&mut self, _now: Instant, _event: (), _ua: &mut UserAgent) {}

    fn on_timeout(&mut self, now: Instant, ua: &mut UserAgent) {
        self.calls_due(now, ua);
        self.hang_ups_due(now, ua);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.calls
            .values()
            .flat_map(|c| {
                [
                    c.callee.as_ref().and_then(|x| x.poll_timeout()),
                    c.hang_up_at,
                ]
            })
            .flatten()
            .min()
    }

    fn poll_media(&mut self) -> Option<ProbeCommand> {
        self.media_out.pop_front()
    }

    fn observe(&mut self, ua: &UserAgent) {
        let (calls, ports) = (self.calls.len(), self.ports.in_use());
        let mut v = self.view();
        v.ua = ua.counts();
        v.live_calls = calls;
        v.media_ports = ports;
    }
}
