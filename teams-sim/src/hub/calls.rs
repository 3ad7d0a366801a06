//! Calls through the hub: INVITEs from the SBC to a Teams user (behaviour
//! §3.1, cases 9.17–9.28) and from a Teams user to the SBC, the Teams side
//! ringing on its forks and answering, media on the media processor, the
//! hub's 4-second ACK timer, and hang-up.

use super::raw::RawMessage;
use super::{CallDirection, CallState, HubCallView, Proxy, Refusal, HUB_ALLOW, VIEW_HISTORY};
use drlab_sim::far_end::{Callee, CalleeStep, Talk};
use sbc::media::SrtpKey;
use sbc::sip::sdp::offer_answer::{AnswerError, Codec, LocalMedia};
use sbc::sip::sdp::{Origin, SessionDescription};
use sbc::sip::session::{EndReason, Hop, Reply, RequestBuilder, SessionEvent, SessionId};
use sbc::sip::transport::Source;
use sbc::sip::ua::UserAgent;
use sbc::sip::wire::{Message, Method};
use std::net::IpAddr;
use std::time::Instant;

pub(crate) struct HubCall {
    serial: u64,
    direction: CallDirection,
    user: String,
    /// Inbound: the Teams user's ringing and answering.
    callee: Option<Callee>,
    /// The fork that answers (inbound).
    answering_fork: usize,
    /// When the hub gives up waiting for the ACK of its 200 (behaviour §9.32).
    ack_deadline: Option<Instant>,
    talk: Talk,
    media_port: u16,
    /// Why the hub ended the call itself, if it did.
    why: Option<String>,
}

impl HubCall {
    pub(crate) fn wake(&self) -> Option<Instant> {
        [
            self.callee.as_ref().and_then(|c| c.poll_timeout()),
            self.ack_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// Codecs a Teams media processor offers (Teams offers carry SILK, G.722,
/// G.711 and comfort noise; PT 104/103 are SILK wide/narrow band).
fn teams_codecs() -> Vec<Codec> {
    vec![
        Codec::new(104, "SILK", 16000),
        Codec::new(103, "SILK", 8000),
        Codec::new(9, "G722", 8000),
        Codec::pcmu(),
        Codec::pcma(),
        Codec::new(13, "CN", 8000),
        Codec::telephone_event(),
    ]
}

/// Teams writes its SDES lines with a lifetime, and its answers with MKI 1:1.
fn teams_crypto(sd: &mut SessionDescription, with_mki: bool) {
    for m in &mut sd.media {
        for c in &mut m.crypto {
            c.lifetime = Some("2^31".into());
            if with_mki {
                c.mki = Some((1, 1));
            }
        }
    }
}

fn user_of(uri: &str) -> String {
    rsip::Uri::try_from(uri)
        .ok()
        .and_then(|u| u.auth.map(|a| a.user))
        .unwrap_or_default()
}

impl Proxy {
    fn contact(&self, ua: &mut UserAgent) -> String {
        // Observed Teams Contact: opaque x-i/x-c parameters with '/' inside,
        // which an SBC must carry byte-exact.
        let rng = ua.rng();
        let xi = rng.hex(32);
        let xc = format!("{}/d/8/{}", rng.hex(32), rng.hex(32));
        format!("<sip:api-du-a-euwe.pstnhub.microsoft.com:443;x-i={xi};x-c={xc}>")
    }

    fn record_route(&self) -> String {
        format!(
            "<sip:{}:{};transport=tls;lr>",
            self.config.fqdn, self.config.listen_port
        )
    }

    /// A port and key on the media processor for a new call.
    fn media_processor(&mut self, ua: &mut UserAgent) -> Result<(IpAddr, u16, SrtpKey), String> {
        let ip = self
            .media_ip
            .ok_or_else(|| format!("no address for {}", self.config.media_host))?;
        let port = self
            .view()
            .media_ports
            .allocate()
            .ok_or("no free media processor port")?;
        let mut key = SrtpKey::generate(ua.rng());
        key.mki = None;
        Ok((ip, port, key))
    }

    fn origin(&self, ua: &mut UserAgent, ip: IpAddr) -> Origin {
        Origin {
            username: "-".into(),
            session_id: ua.rng().next_u32() as u64,
            session_version: 0,
            address: ip.to_string(),
        }
    }

    fn add_view(
        &self,
        call_id: &str,
        direction: CallDirection,
        user: &str,
        remote: &str,
        talk: &Talk,
    ) -> u64 {
        let proxy = self.config.fqdn.clone();
        let mut view = self.view();
        view.calls_total += 1;
        let serial = view.calls_total;
        view.calls.push_back(HubCallView {
            serial,
            proxy,
            call_id: call_id.to_string(),
            direction,
            user: user.to_string(),
            remote_number: remote.to_string(),
            state: CallState::Setup,
            acked: false,
            media: talk.stats.clone(),
        });
        if view.calls.len() > VIEW_HISTORY {
            view.calls.pop_front();
        }
        serial
    }

    fn set_state(&self, serial: u64, state: CallState) {
        if let Some(c) = self.view().call_mut(serial) {
            c.state = state;
        }
    }

    /// Refuse a new INVITE: the status and headers the refusal implies.
    fn refuse(&mut self, now: Instant, ua: &mut UserAgent, id: SessionId, refusal: Refusal) {
        let (code, reason) = refusal.status();
        let mut reply = Reply::new(code, reason);
        reply.headers = Self::refusal_headers(&refusal);
        let _ = ua.reject(now, id, reply);
        self.record_refusal(&refusal);
    }

    pub(crate) fn on_session(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        id: SessionId,
        event: SessionEvent,
    ) {
        match event {
            SessionEvent::Incoming {
                request,
                raw,
                source,
            } => self.on_invite(now, ua, id, &request, &raw, &source),
            SessionEvent::Progress { sdp, .. } => self.heard(ua, id, sdp, false),
            SessionEvent::Answered { sdp, .. } => self.heard(ua, id, sdp, true),
            SessionEvent::Confirmed => {
                if let Some(c) = self.calls.get_mut(&id) {
                    c.ack_deadline = None;
                    let serial = c.serial;
                    if let Some(v) = self.view().call_mut(serial) {
                        v.acked = true;
                    }
                }
            }
            SessionEvent::Ended { reason } => self.on_ended(id, reason),
            SessionEvent::ReInvite { .. } => {
                // Hold, refresh and bypass re-INVITEs come with the mid-call work.
                let _ = ua.reject_reinvite(now, id, Reply::new(488, "Not Acceptable Here"));
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
            SessionEvent::ReInviteDone { .. } => {}
        }
    }

    /// The SBC's SDP (early media in a 183, or the answer): the media
    /// processor starts talking once both sides agree.
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
            Err(e) => self.problem("media", format!("SBC SDP for the media processor: {e}")),
        }
        let state = if answered {
            CallState::Answered
        } else {
            CallState::Ringing
        };
        self.set_state(serial, state);
    }

    fn on_ended(&mut self, id: SessionId, reason: EndReason) {
        let Some(mut c) = self.calls.remove(&id) else {
            return;
        };
        if let Some(cmd) = c.talk.close() {
            self.media_out.push_back(cmd);
        }
        self.view().media_ports.release(c.media_port);
        let why = c
            .why
            .take()
            .unwrap_or_else(|| match (&reason, c.direction) {
                (EndReason::RemoteBye { .. }, _) => "BYE from SBC".into(),
                (EndReason::Cancelled, CallDirection::Inbound) => "cancelled by SBC".into(),
                (EndReason::Rejected { code, reason }, CallDirection::Outbound) => {
                    format!("{code} {reason} from SBC")
                }
                (other, _) => other.to_string(),
            });
        self.set_state(c.serial, CallState::Ended(why));
    }

    /// §3.1: an INVITE from the SBC toward a Teams user, judged from its bytes.
    fn on_invite(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        id: SessionId,
        request: &Message,
        raw: &[u8],
        source: &Source,
    ) {
        let raw = match RawMessage::read(raw) {
            Ok(r) => r,
            Err(e) => return self.refuse(now, ua, id, Refusal::Unreadable { reason: e.0 }),
        };
        if let Err(r) = super::rules::identify_sbc(&raw, source, &self.config.tenant) {
            return self.refuse(now, ua, id, r);
        }
        if let Err(r) = super::rules::check_invite(&raw) {
            return self.refuse(now, ua, id, r);
        }
        let number = user_of(raw.request_uri().unwrap_or_default());
        let Some(user) = self
            .config
            .tenant
            .users
            .iter()
            .find(|u| u.number == number)
            .cloned()
        else {
            return self.refuse(now, ua, id, Refusal::UnknownNumber { number });
        };
        let offer = match SessionDescription::parse(&String::from_utf8_lossy(&raw.body)) {
            Ok(o) => o,
            Err(e) => {
                return self.refuse(
                    now,
                    ua,
                    id,
                    Refusal::BadSdp {
                        reason: e.to_string(),
                    },
                )
            }
        };
        let (ip, port, mut key) = match self.media_processor(ua) {
            Ok(m) => m,
            Err(e) => {
                self.problem("media", format!("media processor: {e}"));
                let _ = ua.reject(now, id, Reply::new(503, "Service Unavailable"));
                return;
            }
        };
        key.mki = Some((1, 1));
        let local_media = LocalMedia {
            address: ip.to_string(),
            port,
            codecs: teams_codecs(),
            srtp_key: Some(key.inline()),
            rtcp_mux: true,
            ice: None,
        };
        let origin = self.origin(ua, ip);
        let mut answer = match local_media.answer(&offer, origin) {
            Ok(a) => a,
            Err(e) => {
                self.view().media_ports.release(port);
                let r = match e {
                    AnswerError::SrtpRequired => Refusal::SrtpRequired,
                    e => Refusal::NoCommonCodec {
                        reason: e.to_string(),
                    },
                };
                return self.refuse(now, ua, id, r);
            }
        };
        teams_crypto(&mut answer, true);
        let caller = request
            .from_header()
            .ok()
            .map(|f| user_of(&f.uri))
            .unwrap_or_default();
        self.next_media += 1;
        let (mut talk, open) = Talk::open(self.next_media, &self.config.media_host, port);
        self.media_out.push_back(open);
        talk.local = Some(answer);
        talk.remote = Some(offer);
        let call_id = request.call_id().unwrap_or_default().to_string();
        let serial = self.add_view(&call_id, CallDirection::Inbound, &user.name, &caller, &talk);
        self.calls.insert(
            id,
            HubCall {
                serial,
                direction: CallDirection::Inbound,
                user: user.name,
                callee: Some(Callee::new(now, self.config.answering)),
                answering_fork: 0,
                ack_deadline: None,
                talk,
                media_port: port,
                why: None,
            },
        );
    }

    /// Ringing and answering on the Teams side, and the ACK timer.
    pub(crate) fn calls_due(&mut self, now: Instant, ua: &mut UserAgent) {
        let ids: Vec<SessionId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.wake().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            loop {
                let step = self
                    .calls
                    .get_mut(&id)
                    .and_then(|c| c.callee.as_mut())
                    .and_then(|c| c.handle_timeout(now));
                match step {
                    Some(CalleeStep::Ring) => self.ring(now, ua, id),
                    Some(CalleeStep::Answer) => self.answer(now, ua, id),
                    None => break,
                }
            }
            let late = self
                .calls
                .get(&id)
                .is_some_and(|c| c.ack_deadline.is_some_and(|t| t <= now));
            if late {
                // §9.32: no ACK for the 200: the call "drops after
                // approximately four seconds", recorded as 408 / 1106.
                let c = self.calls.get_mut(&id).expect("checked above");
                c.ack_deadline = None;
                c.why = Some("no ACK for 200 OK (408/1106)".into());
                let reason = (
                    "Reason".to_string(),
                    "Q.850;cause=102;text=\"1106;Acknowledgement was not received for the call acceptance\"".to_string(),
                );
                let _ = ua.bye_now(now, id, vec![reason]);
            }
        }
    }

    /// §9.28: each of the user's Teams endpoints rings with a To-tag of its
    /// own; the last one answers, so the 200 comes from a different fork
    /// than the first 180. Non-bypass early media: one 183 with SDP.
    fn ring(&mut self, now: Instant, ua: &mut UserAgent, id: SessionId) {
        let mut forks = vec![0];
        for _ in 1..self.config.forks.max(1) {
            if let Ok(f) = ua.add_fork(now, id) {
                forks.push(f);
            }
        }
        for &fork in &forks {
            let contact = self.contact(ua);
            let reply = Reply::new(180, "Ringing")
                .header("Record-Route", self.record_route())
                .header("Contact", contact);
            let _ = ua.provisional(now, id, fork, reply);
        }
        if self.config.early_media {
            let contact = self.contact(ua);
            let rr = self.record_route();
            if let Some(c) = self.calls.get_mut(&id) {
                if let Some(sd) = c.talk.local.clone() {
                    let reply = Reply::new(183, "Session Progress")
                        .header("Record-Route", rr)
                        .header("Contact", contact)
                        .sdp(sd);
                    let _ = ua.provisional(now, id, 0, reply);
                    let frames = self.config.media_frames;
                    if let Some(cmd) = c.talk.start(frames, ua.rng()) {
                        self.media_out.push_back(cmd);
                    }
                }
            }
        }
        if let Some(c) = self.calls.get_mut(&id) {
            c.answering_fork = *forks.last().unwrap_or(&0);
            let serial = c.serial;
            self.set_state(serial, CallState::Ringing);
        }
    }

    fn answer(&mut self, now: Instant, ua: &mut UserAgent, id: SessionId) {
        let contact = self.contact(ua);
        let rr = self.record_route();
        let timeout = self.config.no_ack_timeout;
        let frames = self.config.media_frames;
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(sd) = c.talk.local.clone() else {
            return;
        };
        let reply = Reply::new(200, "OK")
            .header("Record-Route", rr)
            .header("Contact", contact)
            .header("Allow", HUB_ALLOW)
            .sdp(sd);
        if ua.accept(now, id, c.answering_fork, reply).is_err() {
            return;
        }
        c.ack_deadline = Some(now + timeout);
        // Teams starts media with its 200 OK, unless it did with a 183.
        if let Some(cmd) = c.talk.start(frames, ua.rng()) {
            self.media_out.push_back(cmd);
        }
        let serial = c.serial;
        self.set_state(serial, CallState::Answered);
    }

    pub(crate) fn hang_up(&mut self, now: Instant, ua: &mut UserAgent, user: &str) {
        let found = self
            .calls
            .iter_mut()
            .find(|(_, c)| c.user == user && c.why.is_none());
        if let Some((&id, c)) = found {
            c.why = Some(format!("hung up by Teams user {user}"));
            if let Some(callee) = c.callee.as_mut() {
                callee.stop();
            }
            ua.hang_up(now, id, Reply::new(480, "Temporarily Unavailable"), vec![]);
        }
    }

    /// The tenant's SBCs in the order an outbound call tries them: by health
    /// (Active first, Demoted last: behaviour §4), equally healthy ones
    /// shuffled Fisher–Yates with the seeded RNG (behaviour §2, MON).
    pub(crate) fn route_order(&self, ua: &mut UserAgent) -> Vec<String> {
        let ranked: Vec<(u8, String)> = {
            let view = self.view();
            self.config
                .tenant
                .sbcs
                .iter()
                .map(|s| {
                    let rank = view.sbcs.get(s).map_or(2, |h| h.status.routing_rank());
                    (rank, s.clone())
                })
                .collect()
        };
        let mut out = Vec::new();
        for rank in 0..=3 {
            let mut same: Vec<String> = ranked
                .iter()
                .filter(|(r, _)| *r == rank)
                .map(|(_, s)| s.clone())
                .collect();
            for i in (1..same.len()).rev() {
                let j = (ua.rng().next_u32() as usize) % (i + 1);
                same.swap(i, j);
            }
            out.extend(same);
        }
        out
    }

    /// A Teams user dials a PSTN number through the tenant's SBC.
    pub(crate) fn dial(&mut self, now: Instant, ua: &mut UserAgent, user: &str, number: &str) {
        let Some(u) = self
            .config
            .tenant
            .users
            .iter()
            .find(|u| u.name == user || u.number == user)
            .cloned()
        else {
            return self.problem("dial", format!("no Teams user {user}"));
        };
        let Some(fqdn) = self.route_order(ua).into_iter().next() else {
            return;
        };
        let (ip, mp_port, mp_key) = match self.media_processor(ua) {
            Ok(m) => m,
            Err(e) => return self.problem("media", format!("media processor: {e}")),
        };
        let local_media = LocalMedia {
            address: ip.to_string(),
            port: mp_port,
            codecs: teams_codecs(),
            srtp_key: Some(mp_key.inline()),
            rtcp_mux: true,
            ice: None,
        };
        let origin = self.origin(ua, ip);
        let mut offer = local_media.offer(origin);
        teams_crypto(&mut offer, false);
        let port = self.config.tenant.sbc_port;
        let contact = self.contact(ua);
        let ruri = format!("sip:{number}@{fqdn}:{port};user=phone;transport=tls");
        let invite = RequestBuilder::new(
            Method::Invite,
            ruri,
            format!(
                "\"{}\" <sip:{}@{}:5061;user=phone>",
                u.name, u.number, self.config.fqdn
            ),
            format!("<sip:{number}@{fqdn}:{port};user=phone>"),
        )
        .header("Record-Route", self.record_route())
        .contact(contact)
        .header("Allow", HUB_ALLOW)
        .build(ua.rng(), &self.config.internal_name);
        let call_id = invite.call_id().unwrap_or_default().to_string();
        let hop = Hop::Uri(format!("sip:{fqdn}:{port};transport=tls"));
        let id = match ua.invite(now, invite, Some(offer.clone()), hop) {
            Ok(id) => id,
            Err(e) => {
                self.view().media_ports.release(mp_port);
                return self.problem("dial", format!("cannot send INVITE: {e}"));
            }
        };
        self.next_media += 1;
        let (mut talk, open) = Talk::open(self.next_media, &self.config.media_host, mp_port);
        self.media_out.push_back(open);
        talk.local = Some(offer);
        let serial = self.add_view(&call_id, CallDirection::Outbound, &u.name, number, &talk);
        self.calls.insert(
            id,
            HubCall {
                serial,
                direction: CallDirection::Outbound,
                user: u.name,
                callee: None,
                answering_fork: 0,
                ack_deadline: None,
                talk,
                media_port: mp_port,
                why: None,
            },
        );
    }
}
