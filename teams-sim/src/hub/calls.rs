//! Calls through the hub: INVITEs from the SBC to a Teams user (behaviour
//! §3.1, cases 9.17–9.28) and from a Teams user to the SBC, the Teams side
//! ringing on its forks and answering, media on the media processor, the
//! hub's 4-second ACK timer, and hang-up.

mod bridge;
mod bypass;
mod transfer;

pub(crate) use bridge::Bridge;

use super::causes::{self, NORMAL_CLEARING};
use super::failover::{self, Next, Outbound};
use super::raw::RawMessage;
use super::{CallDirection, CallState, HubCallView, Proxy, Refusal, HUB_ALLOW, VIEW_HISTORY};
use drlab_sim::far_end::{Callee, CalleeStep, Talk};
use sbc::media::ice::Credentials;
use sbc::media::silence::SilenceWatch;
use sbc::media::SrtpKey;
use sbc::sip::sdp::offer_answer::{AnswerError, Codec, LocalMedia};
use sbc::sip::sdp::{Origin, SessionDescription};
use sbc::sip::session::{
    EndReason, Hop, Reply, RequestBuilder, SessionEvent, SessionId, SessionState,
};
use sbc::sip::transport::Source;
use sbc::sip::ua::UserAgent;
use sbc::sip::wire::{Message, Method};
use std::net::IpAddr;
use std::time::{Duration, Instant};

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
    /// The GUID the hub writes in this call's Reason texts.
    correlation: String,
    /// What the hub offered (outbound): the SBC's answer must pick from it.
    offered: Option<String>,
    /// Outbound: the route this attempt is part of.
    pub(crate) outbound: Option<Outbound>,
    /// Outbound: FailoverTimeSeconds runs out then, unless a 18x comes.
    pub(crate) failover_at: Option<Instant>,
    /// Outbound: a 180/183 or the answer came (no failover from then on).
    progressed: bool,
    /// Outbound: the hub gave up on this attempt (CANCELled it) and went
    /// on; its end no longer speaks for the call.
    pub(crate) superseded: bool,
    /// The SBC this call is with, and the Allow it sent (in its INVITE or
    /// its 200): REFER there decides how the hub transfers (§5).
    sbc: String,
    sbc_allow: String,
    /// A transfer of this call the hub asked the SBC for (REFER).
    transfer: Option<transfer::Pending>,
    /// This call carries out a transfer or a replacement: the record's id
    /// and the call it takes over.
    takes_over: Option<(u64, SessionId)>,
    /// This call is one leg of a bridge (a transfer to a PSTN number).
    bridge: Option<u64>,
    /// Media bypass, inbound: the Teams clients of the forks that ring but
    /// do not answer; they check the SBC's candidate until the call is
    /// answered (behaviour §7), then close. `talk` is the answering fork's.
    early_forks: Vec<Talk>,
    /// Case 9.58: once answered, how long the hub has heard no audio.
    media_watch: Option<SilenceWatch>,
    /// Case 9.49: the media processor a bypass call is moving to, while
    /// the hub's re-INVITE with its new ICE credentials is under way.
    moving_to: Option<Talk>,
}

/// The status whose Q.850 cause the hub's media-timeout BYE carries: 408
/// (the table's 102, "recovery on timer expiry"). Microsoft documents the
/// drop, not its Reason: a guess (docs/hub-refusals.md).
const MEDIA_TIMEOUT_STATUS: u16 = 408;

impl sbc::driver::timed::Timed for HubCall {
    fn wake(&self) -> Option<Instant> {
        [
            self.callee.as_ref().and_then(|c| c.poll_timeout()),
            self.ack_deadline,
            self.failover_at,
            self.transfer.as_ref().and_then(|t| t.deadline),
            self.media_watch.map(|w| w.next_look()),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// Codecs a Teams media processor offers, in its order: SILK wide and
/// narrow band (104, 103), G.722, SIREN, G.729 (case 9.25), G.711, RED,
/// DTMF events and comfort noise at both rates, as Teams SDPs list them.
fn teams_codecs() -> Vec<Codec> {
    vec![
        Codec::new(104, "SILK", 16000),
        Codec::new(9, "G722", 8000),
        Codec::new(103, "SILK", 8000),
        Codec::new(111, "SIREN", 16000),
        Codec::new(18, "G729", 8000),
        Codec::pcmu(),
        Codec::pcma(),
        Codec::new(97, "RED", 8000),
        Codec::telephone_event(),
        Codec::new(13, "CN", 8000),
        Codec::new(118, "CN", 16000),
    ]
}

/// The media processor's media at `ip`:`port` with SRTP `key` (its
/// SDES inline form), rtcp-mux, Teams' codecs.
fn mp_media(ip: IpAddr, port: u16, key: &SrtpKey) -> LocalMedia {
    LocalMedia {
        address: ip.to_string(),
        port,
        codecs: teams_codecs(),
        srtp_key: Some(key.inline()),
        rtcp_mux: true,
        ice: None,
    }
}

/// The parameters Teams writes for its codecs (SIREN's bitrate, G.729
/// without Annex B), on whichever of them a description carries.
fn teams_fmtps(sd: &mut SessionDescription) {
    for m in &mut sd.media {
        for (pt, params) in [(111u8, "bitrate=16000"), (18, "annexb=no")] {
            if m.formats.contains(&pt) && !m.fmtps.iter().any(|(p, _)| *p == pt) {
                m.fmtps.push((pt, params.into()));
            }
        }
    }
}

/// Teams writes its SDES lines with a lifetime, and its answers with MKI 1:1.
fn teams_crypto(sd: &mut SessionDescription, with_mki: bool) {
    teams_fmtps(sd);
    for m in &mut sd.media {
        for c in &mut m.crypto {
            c.lifetime = Some("2^31".into());
            if with_mki {
                c.mki = Some((1, 1));
            }
        }
    }
}

/// A Teams offer as observed: the key twice, tag 2 with MKI 1:1 and tag 3
/// without, so the SBC may take either; `a=maxptime:200`. With the Contact's
/// opaque parameters this takes the INVITE past 1,500 bytes, as the real
/// hub's are (behaviour §3.1, case 9.61).
fn teams_offer(sd: &mut SessionDescription) {
    teams_fmtps(sd);
    for m in &mut sd.media {
        let Some(first) = m.crypto.first().cloned() else {
            continue;
        };
        let with_mki = sbc::sip::sdp::Crypto {
            tag: 2,
            lifetime: Some("2^31".into()),
            mki: Some((1, 1)),
            ..first.clone()
        };
        let without = sbc::sip::sdp::Crypto {
            tag: 3,
            lifetime: Some("2^31".into()),
            mki: None,
            ..first
        };
        m.crypto = vec![with_mki, without];
        m.attributes.push(("maxptime".into(), Some("200".into())));
    }
}

/// Why Teams cannot answer an SBC's offer (case 9.24: no SRTP; 9.25: no
/// codec it supports).
fn answer_refusal(e: AnswerError) -> Refusal {
    match e {
        AnswerError::SrtpRequired => Refusal::SrtpRequired,
        e => Refusal::NoCommonCodec {
            reason: e.to_string(),
        },
    }
}

/// The `;`-separated parameters of a URI (before any `?headers`).
fn uri_params(uri: &str) -> impl Iterator<Item = &str> {
    let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let uri = uri.split('?').next().unwrap_or_default();
    uri.split(';').skip(1).map(str::trim)
}

/// The host of a Contact header value, for naming the SBC in a record.
fn user_of_host(contact: &str) -> String {
    rsip::Uri::try_from(
        contact
            .trim()
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap_or_default(),
    )
    .map(|u| u.host_with_port.host.to_string())
    .unwrap_or_default()
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
        let fqdn = self.config.fqdn.clone();
        let port = self
            .view()
            .allocate_media(&fqdn)
            .ok_or("no free media processor port")?;
        let mut key = SrtpKey::generate(ua.rng());
        key.mki = None;
        Ok((ip, port, key))
    }

    /// Whether calls with this SBC go by media bypass (its gateway has
    /// MediaBypass on).
    fn bypass(&self, sbc: &str) -> bool {
        (self.config.tenant.media_bypass.iter()).any(|s| s.eq_ignore_ascii_case(sbc))
    }

    /// Where the Teams side's media for a new call lives: the media
    /// processor (`client` is `None`), or Teams client `client` in media
    /// bypass (the media processor's host when the lab has no clients).
    /// The host, its address, a port and an SRTP key.
    fn media_endpoint(
        &mut self,
        ua: &mut UserAgent,
        client: Option<usize>,
    ) -> Result<(String, IpAddr, u16, SrtpKey), String> {
        let (ip, port, key) = self.media_processor(ua)?;
        let n = self.config.clients.len().min(self.client_ips.len());
        Ok(match client {
            Some(i) if n > 0 => (
                self.config.clients[i % n].0.clone(),
                self.client_ips[i % n],
                port,
                key,
            ),
            _ => (self.config.media_host.clone(), ip, port, key),
        })
    }

    /// A Teams client's ICE credentials and tie-breaker, written into its
    /// media (a full agent: no `a=ice-lite`).
    fn client_ice(ua: &mut UserAgent, media: &mut LocalMedia) -> (Credentials, u64) {
        let credentials = Credentials::generate(ua.rng());
        media.ice = Some(credentials.sdp(false));
        (credentials, ua.rng().next_u64())
    }

    /// A probe on `host`:`port` for a new call's Teams side.
    fn open_talk(&mut self, host: &str, port: u16) -> Talk {
        self.next_media += 1;
        let (talk, open) = Talk::open(self.next_media, host, port);
        self.media_out.push_back(open);
        talk
    }

    /// The Teams side's answer to an SBC's offer and the probe that talks
    /// it (see [`Proxy::media_endpoint`]). `Err(Ok(refusal))`: the offer
    /// cannot be answered; `Err(Err(why))`: no media port.
    fn answer_talk(
        &mut self,
        ua: &mut UserAgent,
        offer: &SessionDescription,
        client: Option<usize>,
    ) -> Result<Talk, Result<Refusal, String>> {
        let (host, ip, port, mut key) = self.media_endpoint(ua, client).map_err(Err)?;
        key.mki = Some((1, 1));
        let mut media = mp_media(ip, port, &key);
        let origin = self.origin(ua, ip);
        let ice = client.map(|_| Self::client_ice(ua, &mut media));
        let mut answer = match media.answer(offer, origin) {
            Ok(a) => a,
            Err(e) => {
                self.view().release_media(port);
                return Err(Ok(answer_refusal(e)));
            }
        };
        teams_crypto(&mut answer, true);
        let mut talk = self.open_talk(&host, port);
        talk.ice_wrong_password = self.view().ice_wrong_password;
        talk.ice = ice;
        talk.media = Some(media);
        talk.local = Some(answer);
        talk.remote = Some(offer.clone());
        Ok(talk)
    }

    fn origin(&self, ua: &mut UserAgent, ip: IpAddr) -> Origin {
        Origin {
            username: "-".into(),
            session_id: ua.rng().next_u32() as u64,
            session_version: 0,
            address: ip.to_string(),
        }
    }

    fn add_view(&self, call_id: &str, direction: CallDirection, user: &str, remote: &str) -> u64 {
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
            media: Default::default(),
            attempts: Vec::new(),
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
        let (code, reason, headers) = self.refusal_reply(ua, &refusal);
        let mut reply = Reply::new(code, reason);
        reply.headers = headers;
        let _ = ua.reject(now, id, reply);
        self.record_refusal(code, &refusal);
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
            SessionEvent::Progress { sdp, response } => {
                self.heard(now, ua, id, &response, sdp, false)
            }
            SessionEvent::Answered { sdp, response } => {
                self.heard(now, ua, id, &response, sdp, true)
            }
            SessionEvent::Confirmed => {
                if let Some(c) = self.calls.get_mut(&id) {
                    c.ack_deadline = None;
                    let serial = c.serial;
                    if let Some(v) = self.view().call_mut(serial) {
                        v.acked = true;
                    }
                }
            }
            SessionEvent::Ended { reason } => self.on_ended(now, ua, id, reason),
            SessionEvent::ReInvite { request, offer } => {
                self.on_reinvite(now, ua, id, &request, offer)
            }
            SessionEvent::Request { key, request } if request.method() == Some(&Method::Notify) => {
                self.on_notify(now, ua, id, key, &request)
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
            SessionEvent::Response { key, code, .. } => {
                self.on_refer_answer(now, ua, id, &key, code)
            }
            SessionEvent::ReInviteDone { result } => {
                let moving = self.calls.get_mut(&id).and_then(|c| c.moving_to.take());
                match (result, moving) {
                    (result, Some(talk)) => self.moved(ua, id, talk, result.ok().flatten()),
                    (Ok(Some(answer)), None) => {
                        if let Some(c) = self.calls.get_mut(&id) {
                            c.talk.remote = Some(answer);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The SBC's re-INVITE (behaviour §6): hold only with `a=inactive`.
    /// `c=0.0.0.0` is refused with 488/531052 (KB-488); `sendonly` or
    /// `recvonly` is answered as RFC 3264 asks but recorded against the SBC,
    /// since the hub "does not understand" it (case 9.50). A re-INVITE
    /// with no change (a refresh) gets the same answer.
    fn on_reinvite(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        id: SessionId,
        request: &Message,
        offer: Option<SessionDescription>,
    ) {
        let text = String::from_utf8_lossy(&request.body).into_owned();
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        if lines
            .iter()
            .any(|l| l.starts_with("c=IN IP4 0.0.0.0") || l.starts_with("c=IN IP6 ::"))
        {
            let refusal = Refusal::ZeroConnectionAddress;
            let (code, reason, headers) = self.refusal_reply(ua, &refusal);
            let mut reply = Reply::new(code, reason);
            reply.headers = headers;
            let _ = ua.reject_reinvite(now, id, reply);
            return self.record_refusal(code, &refusal);
        }
        if let Some(d) = lines
            .iter()
            .find(|l| **l == "a=sendonly" || **l == "a=recvonly")
        {
            let line = format!(
                "{} held the call with {d}, which the hub does not understand: use a=inactive (case 9.50)",
                request
                    .headers
                    .get("Contact")
                    .map(user_of_host)
                    .unwrap_or_default()
            );
            self.view().sbc_violations.push(line);
        }
        let answer = match (offer, self.calls.get_mut(&id)) {
            (Some(offer), Some(c)) => c.talk.answer_reinvite(offer),
            (None, Some(c)) => c
                .talk
                .local
                .clone()
                .ok_or_else(|| "no description".to_string()),
            (_, None) => Err("no such call".to_string()),
        };
        match answer {
            Ok(mut sd) => {
                teams_crypto(&mut sd, true);
                let _ = ua.answer_reinvite(now, id, Reply::new(200, "OK").sdp(sd));
            }
            Err(e) => {
                let reply = Reply::new(488, "Not Acceptable Here")
                    .header("Warning", format!("399 {} \"{e}\"", self.config.fqdn));
                let _ = ua.reject_reinvite(now, id, reply);
            }
        }
    }

    /// A Teams user holds or resumes the call (a re-INVITE with
    /// `a=inactive` or `a=sendrecv`), or the hub refreshes it with the same
    /// description (a keep-alive: the `o=` version does not change).
    pub(crate) fn reinvite_user(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        user: &str,
        direction: Option<sbc::sip::sdp::Direction>,
    ) -> bool {
        let found = self
            .calls
            .iter()
            .find(|(_, c)| c.user == user && c.why.is_none() && !c.superseded)
            .map(|(id, c)| (*id, c.talk.local.clone()));
        let Some((id, Some(local))) = found else {
            return false;
        };
        let offer = match direction {
            Some(d) => local.with_direction(d),
            None => local,
        };
        match ua.reinvite(now, id, offer.clone(), Vec::new()) {
            Ok(()) => {
                if let Some(c) = self.calls.get_mut(&id) {
                    c.talk.local = Some(offer);
                }
            }
            Err(e) => self.problem("reinvite", format!("re-INVITE for {user}: {e}")),
        }
        true
    }

    /// The SBC's SDP (early media in a 183, or the answer): the media
    /// processor starts talking once both sides agree.
    fn heard(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        id: SessionId,
        response: &Message,
        sdp: Option<SessionDescription>,
        answered: bool,
    ) {
        let body = (!response.body.is_empty())
            .then(|| String::from_utf8_lossy(&response.body).into_owned());
        let frames = self.config.media_frames;
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.superseded {
            return;
        }
        if answered {
            c.sbc_allow = response
                .headers
                .get("Allow")
                .unwrap_or_default()
                .to_string();
        }
        if answered || response.status().is_some_and(|s| s > 100) {
            // A 180/183 stops FailoverTimeSeconds and any failover after it
            // (behaviour §4, FO-live: no double ringing).
            c.progressed = true;
            c.failover_at = None;
        }
        let serial = c.serial;
        if let (Some(offered), Some(body)) = (&c.offered, body) {
            // Outbound: the SBC's answer, judged from its text before any
            // media is sent to it (never plain RTP).
            if let Err(refusal) = super::rules::check_answer(&body, offered) {
                return self.tear_down(now, ua, id, refusal);
            }
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(relay) = c.bridge {
            // A bridge's far leg: its audio goes to the near leg, not to a
            // probe of ours.
            if answered {
                self.set_state(serial, CallState::Answered);
            }
            return self.bridge_heard(now, ua, relay, id, sdp, answered);
        }
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
        if answered {
            self.watch_media(now, id);
            self.replacement_answered(id);
        }
    }

    /// The Reason (and ms-diagnostics, where Microsoft has a code) for
    /// this call, with its correlation id.
    fn call_reason(
        &self,
        id: SessionId,
        cause: u8,
        phrase: &str,
        ms_code: Option<u32>,
    ) -> Vec<(String, String)> {
        let correlation = self
            .calls
            .get(&id)
            .map(|c| c.correlation.as_str())
            .unwrap_or_default();
        let mut headers = vec![causes::q850_reason(cause, correlation, phrase)];
        if let Some(code) = ms_code {
            headers.push(causes::ms_diagnostics(code, phrase, &self.config.fqdn));
        }
        headers
    }

    /// End an outbound call whose SBC answer the hub cannot accept: CANCEL
    /// while early, BYE (after the ACK) once answered, with the refusal's
    /// Reason on the BYE.
    fn tear_down(&mut self, now: Instant, ua: &mut UserAgent, id: SessionId, refusal: Refusal) {
        let policy = &self.config.refusals;
        let headers = self.call_reason(
            id,
            refusal.q850(policy),
            refusal.phrase(),
            refusal.ms_code(),
        );
        let (code, reason) = refusal.status_in(policy);
        if let Some(c) = self.calls.get_mut(&id) {
            c.why = Some(format!("SBC answer refused: {code} {refusal}"));
        }
        ua.hang_up(now, id, Reply::new(code, reason), headers);
        self.record_refusal(code, &refusal);
    }

    fn on_ended(&mut self, now: Instant, ua: &mut UserAgent, id: SessionId, reason: EndReason) {
        let Some(mut c) = self.calls.remove(&id) else {
            return;
        };
        if let Some(cmd) = c.talk.close() {
            self.media_out.push_back(cmd);
        }
        if c.bridge.is_none() {
            self.view().release_media(c.media_port);
        }
        for t in std::mem::take(&mut c.early_forks) {
            self.drop_talk(t);
        }
        if let Some(t) = c.moving_to.take() {
            self.drop_talk(t);
        }
        if c.superseded {
            return;
        }
        self.transfer_ended(now, ua, &mut c, &reason);
        if let Some(plan) = c.outbound.clone().filter(|_| c.why.is_none()) {
            let next = failover::after_end(&reason, c.progressed, &self.config.failover_codes);
            if next != Next::End {
                return self.fail_over(now, ua, plan, next);
            }
        }
        if let Some(relay) = c.bridge {
            self.bridge_leg_ended(now, ua, relay, id, &reason);
        }
        let why = c
            .why
            .take()
            .unwrap_or_else(|| match (&reason, c.direction) {
                (EndReason::RemoteBye { .. }, _) => "BYE from SBC".into(),
                (EndReason::Cancelled, CallDirection::Inbound) => "cancelled by SBC".into(),
                // KB-CODES: a code starting with 560 means the final
                // response came from the SBC.
                // The SBC's Reason header (RFC 3326) is what the client
                // shows the user for a PSTN failure.
                (
                    EndReason::Rejected {
                        code,
                        reason,
                        cause,
                        ..
                    },
                    CallDirection::Outbound,
                ) => match cause {
                    Some(cause) => format!("{code} {reason} from SBC (560{code}); Reason: {cause}"),
                    None => format!("{code} {reason} from SBC (560{code})"),
                },
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
        let sbc = match super::rules::identify_sbc(&raw, source, &self.config.tenant) {
            Ok((fqdn, _)) => fqdn,
            Err(r) => return self.refuse(now, ua, id, r),
        };
        let callee = user_of(raw.request_uri().unwrap_or_default());
        let caller = request
            .from_header()
            .ok()
            .map(|f| user_of(&f.uri))
            .unwrap_or_default();
        self.judge_retry(now, &sbc, &caller, &callee);
        let overloaded = self.view().overloaded.get(&self.config.fqdn).copied();
        if let Some(secs) = overloaded {
            let until = now + Duration::from_secs(u64::from(secs));
            let proxy = self.config.fqdn.clone();
            self.view().backoff.push((sbc, proxy, until));
            return self.refuse(now, ua, id, Refusal::Overloaded { retry_after: secs });
        }
        if let Some(r) = self.unknown_replaces(ua, &raw) {
            return self.refuse(now, ua, id, r);
        }
        // The SBC calling a Refer-To back (case 9.45): the transfer's target.
        let takes_over = match self.transfer_invite(&raw) {
            Ok(t) => t,
            Err(r) => return self.refuse(now, ua, id, r),
        };
        let checked = match takes_over {
            Some(_) => super::rules::check_invite_content(&raw),
            None => super::rules::check_invite(&raw),
        };
        if let Err(r) = checked {
            return self.refuse(now, ua, id, r);
        }
        if self.bypass(&sbc) {
            if let Err(r) = super::rules::check_bypass_offer(&raw) {
                return self.refuse(now, ua, id, r);
            }
        }
        let target = takes_over.as_ref().map(|(_, _, user)| user.clone());
        let takes_over = takes_over.map(|(record, old, _)| (record, old));
        if let (Some(t), Some(over)) = (&target, takes_over) {
            if t.starts_with('+') {
                // A transfer to a PSTN number: out again through an SBC.
                return self.bridge_transfer(
                    now,
                    ua,
                    id,
                    &raw,
                    request,
                    &sbc,
                    &caller,
                    Some(over),
                    t,
                    None,
                );
            }
        }
        let number = callee;
        let Some(user) = self
            .config
            .tenant
            .users
            .iter()
            .find(|u| match &target {
                Some(t) => u.name == *t,
                None => u.number == number,
            })
            .cloned()
        else {
            return self.refuse(now, ua, id, Refusal::UnknownNumber { number });
        };
        let number = user.number.clone();
        if !user.enabled {
            return self.refuse(now, ua, id, Refusal::UserDisabled { number });
        }
        if user.blocked.contains(&caller) {
            return self.refuse(now, ua, id, Refusal::BlockedCaller { number: caller });
        }
        let refusing = self.view().refusing.get(&user.number).copied();
        if let Some(code) = refusing {
            if code == 603 {
                self.view().declined.push((caller, number.clone(), now));
            }
            return self.refuse(now, ua, id, Refusal::UserRefuses { number, code });
        }
        // Case 9.54: the user forwards calls: out again through an SBC.
        let forward = self.view().forwarding.get(&user.number).cloned();
        if let Some(target) = forward.filter(|_| takes_over.is_none()) {
            let history = bridge::history_info(&user.number, &target, &self.config.fqdn);
            return self.bridge_transfer(
                now,
                ua,
                id,
                &raw,
                request,
                &sbc,
                &caller,
                None,
                &target,
                Some((&caller, history)),
            );
        }
        // Case 9.30: straight to voicemail, no endpoint rings.
        let voicemail = raw
            .request_uri()
            .is_some_and(|u| uri_params(u).any(|p| p.eq_ignore_ascii_case("opaque=app:voicemail")));
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
        // Media bypass (behaviour §7): one Teams client per fork answers
        // with its own address and ICE credentials; the last fork answers.
        // Voice apps (voicemail) always take media through a media
        // processor (MB), bypass trunk or not.
        let bypass = self.bypass(&sbc) && !voicemail;
        let forks = if bypass { self.config.forks.max(1) } else { 1 };
        let mut talks = Vec::new();
        for fork in 0..forks {
            match self.answer_talk(ua, &offer, bypass.then_some(fork)) {
                Ok(t) => talks.push(t),
                Err(e) => {
                    for t in talks {
                        self.drop_talk(t);
                    }
                    return match e {
                        Ok(refusal) => self.refuse(now, ua, id, refusal),
                        Err(e) => {
                            self.problem("media", format!("media processor: {e}"));
                            let _ = ua.reject(now, id, Reply::new(503, "Service Unavailable"));
                        }
                    };
                }
            }
        }
        let talk = talks.pop().expect("at least one fork");
        let early_forks = talks;
        let port = talk.port;
        let call_id = request.call_id().unwrap_or_default().to_string();
        let serial = self.add_view(&call_id, CallDirection::Inbound, &user.name, &caller);
        if let Some(v) = self.view().call_mut(serial) {
            v.media = talk.stats.clone();
        }
        self.calls.insert(
            id,
            HubCall {
                serial,
                direction: CallDirection::Inbound,
                user: user.name,
                callee: (!voicemail).then(|| Callee::new(now, self.config.answering)),
                answering_fork: 0,
                ack_deadline: None,
                talk,
                media_port: port,
                why: None,
                correlation: causes::correlation_id(ua.rng()),
                offered: None,
                outbound: None,
                failover_at: None,
                progressed: false,
                superseded: false,
                sbc: sbc.clone(),
                sbc_allow: raw.values("Allow").join(","),
                transfer: None,
                takes_over,
                bridge: None,
                early_forks,
                media_watch: None,
                moving_to: None,
            },
        );
        if let Some((_, old)) = takes_over {
            self.transfer_arrived(old, id);
        }
        if voicemail {
            self.answer(now, ua, id);
        }
    }

    /// The SBC's obligations after the hub's refusals, checked on each new
    /// INVITE: no INVITE to a proxy within the Retry-After of its 503
    /// (case 9.41), no retry of a call the user declined with 603 (case
    /// 9.42; a retry comes within 64·T1 = 32 s, so that is the window).
    fn judge_retry(&self, now: Instant, sbc: &str, caller: &str, callee: &str) {
        const RETRY_WINDOW: Duration = Duration::from_secs(32);
        let proxy = self.config.fqdn.clone();
        let mut v = self.view();
        v.backoff.retain(|(_, _, until)| *until > now);
        v.declined
            .retain(|(_, _, at)| now.saturating_duration_since(*at) < RETRY_WINDOW);
        if v.backoff.iter().any(|(s, p, _)| s == sbc && *p == proxy) {
            let line = format!(
                "{sbc} sent an INVITE to {proxy} within the Retry-After of its 503 (case 9.41)"
            );
            v.sbc_violations.push(line);
        }
        if v.declined
            .iter()
            .any(|(c, d, _)| c == caller && d == callee)
        {
            let line = format!(
                "{sbc} retried the call from {caller} to {callee} after 603 Decline (case 9.42)"
            );
            v.sbc_violations.push(line);
        }
    }

    /// Ringing and answering on the Teams side, and the ACK timer.
    pub(crate) fn calls_due(&mut self, now: Instant, ua: &mut UserAgent) {
        self.failover_due(now, ua);
        self.transfers_due(now, ua);
        for id in self.calls.due(now) {
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
            self.media_due(now, ua, id);
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
                let cause = self.config.refusals.causes.cause(408);
                let headers = self.call_reason(
                    id,
                    cause,
                    "Acknowledgement was not received for the call acceptance in the allotted time",
                    Some(1106),
                );
                let _ = ua.bye_now(now, id, headers);
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
        let bypass = self.calls.get(&id).is_some_and(|c| c.talk.ice.is_some());
        if bypass {
            self.ring_bypass(now, ua, id, &forks);
        } else if self.config.early_media {
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

    /// Media bypass (behaviour §7, case 9.29): every fork's Teams client
    /// answers with a 183 of its own SDP (its address, key and ICE
    /// credentials) on its own early dialog, and checks the SBC's
    /// candidate; with `early_media` the first fork's client plays early
    /// media on its checked pair; the answering fork nominates its pair
    /// when the call is answered.
    fn ring_bypass(&mut self, now: Instant, ua: &mut UserAgent, id: SessionId, forks: &[usize]) {
        let frames = self.config.media_frames;
        let early = self.config.early_media;
        for (i, &fork) in forks.iter().enumerate() {
            let contact = self.contact(ua);
            let rr = self.record_route();
            let Some(c) = self.calls.get_mut(&id) else {
                return;
            };
            let last = i + 1 == forks.len();
            let talk = match c.early_forks.get_mut(i) {
                Some(t) if !last => t,
                _ => &mut c.talk,
            };
            let Some(sd) = talk.local.clone() else {
                continue;
            };
            let reply = Reply::new(183, "Session Progress")
                .header("Record-Route", rr)
                .header("Contact", contact)
                .sdp(sd);
            let _ = ua.provisional(now, id, fork, reply);
            // The first fork's client plays early media on its checked
            // pair (behaviour §7: the SBC latches to the first endpoint
            // that streams); the others only check.
            let cmd = match i == 0 && early && !last {
                true => talk.check_with_early_media(frames, ua.rng()),
                false => talk.check(frames, ua.rng()),
            };
            if let Some(cmd) = cmd {
                self.media_out.push_back(cmd);
            }
        }
    }

    /// The clients of the forks that did not answer stop checking.
    fn close_early_forks(&mut self, id: SessionId) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        for t in std::mem::take(&mut c.early_forks) {
            self.drop_talk(t);
        }
    }

    /// Case 9.58: start watching an answered call's audio.
    fn watch_media(&mut self, now: Instant, id: SessionId) {
        if self.config.media_timeout.is_none() {
            return;
        }
        if let Some(c) = self.calls.get_mut(&id) {
            if c.bridge.is_none() && c.media_watch.is_none() {
                c.media_watch = Some(SilenceWatch::new(now));
            }
        }
    }

    /// Case 9.58: an answered call from which no audio has arrived for
    /// `media_timeout` (while not on hold) ends with a BYE: Microsoft's
    /// "call drops after approximately 10 to 20 seconds" when no media is
    /// received or ICE fails (KB-IN). The Reason's cause is our guess.
    fn media_due(&mut self, now: Instant, ua: &mut UserAgent, id: SessionId) {
        let Some(timeout) = self.config.media_timeout else {
            return;
        };
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(mut w) = c.media_watch.filter(|w| w.next_look() <= now) else {
            return;
        };
        let received = c.talk.stats.lock().map_or(0, |s| s.received);
        let held = [&c.talk.local, &c.talk.remote]
            .iter()
            .any(|sd| sd.as_ref().is_some_and(|sd| sd.holds()));
        // A call whose transfer is under way (REFER sent) expects its audio
        // to move to the transfer's target: the transfer's own timer judges it.
        let moving = c.transfer.is_some() || c.moving_to.is_some();
        if !w.look(
            now,
            u64::from(received),
            held || moving || c.why.is_some(),
            timeout,
        ) {
            c.media_watch = Some(w);
            return;
        }
        c.media_watch = None;
        let secs = timeout.as_secs();
        c.why = Some(format!("no media for {secs} s (case 9.58)"));
        let cause = self.config.refusals.causes.cause(MEDIA_TIMEOUT_STATUS);
        let headers = self.call_reason(id, cause, "Media timeout: no media was received", None);
        let _ = ua.bye_now(now, id, headers);
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
        let takes_over = c.takes_over;
        self.set_state(serial, CallState::Answered);
        self.close_early_forks(id);
        self.watch_media(now, id);
        if let Some((_, old)) = takes_over {
            self.target_answered(now, old);
        }
    }

    /// A Teams user hangs up their call on this proxy; `false`: none here.
    pub(crate) fn hang_up(&mut self, now: Instant, ua: &mut UserAgent, user: &str) -> bool {
        let found = (self.calls.iter())
            .find(|(_, c)| c.user == user && c.why.is_none() && !c.superseded)
            .map(|(id, _)| *id);
        if let Some((id, c)) = found.and_then(|id| Some((id, self.calls.get_mut(&id)?))) {
            c.why = Some(format!("hung up by Teams user {user}"));
            if let Some(callee) = c.callee.as_mut() {
                callee.stop();
            }
            // A BYE clears normally (cause 16, observed on the hub's BYEs);
            // an inbound call not yet answered is refused with 480.
            let answered = ua.session(id).is_some_and(|s| {
                matches!(s.state(), SessionState::Accepted | SessionState::Confirmed)
            });
            let cause = if answered {
                NORMAL_CLEARING
            } else {
                self.config.refusals.causes.cause(480)
            };
            let headers = self.call_reason(id, cause, "CallEndReasonLocalUserInitiated", None);
            let mut reply = Reply::new(480, "Temporarily Unavailable");
            reply.headers = headers.clone();
            ua.hang_up(now, id, reply, headers);
            return true;
        }
        false
    }

    /// A Teams user dials a PSTN number through the tenant's SBCs.
    pub(crate) fn dial(&mut self, now: Instant, ua: &mut UserAgent, user: &str, number: &str) {
        let Some(u) = self.tenant_user(user) else {
            return self.problem("dial", format!("no Teams user {user}"));
        };
        let route = self.route_order(ua);
        let serial = self.add_view("", CallDirection::Outbound, &u.name, number);
        let plan = Outbound {
            serial,
            user: u.name,
            number: number.to_string(),
            route,
            tried_from: Vec::new(),
            correlation: causes::correlation_id(ua.rng()),
            last: None,
            bridge: None,
            forwarded: None,
        };
        self.attempt(now, ua, plan);
    }

    /// Send the call to the first SBC of its route; with none left, the
    /// call fails with why the last attempt did.
    pub(crate) fn attempt(&mut self, now: Instant, ua: &mut UserAgent, mut plan: Outbound) {
        let Some(u) = self
            .config
            .tenant
            .users
            .iter()
            .find(|u| u.name == plan.user)
            .cloned()
        else {
            return self.problem("dial", format!("no Teams user {}", plan.user));
        };
        let Some(fqdn) = plan.route.first().cloned() else {
            let why = plan
                .last
                .take()
                .unwrap_or_else(|| "no SBC in the tenant's route".into());
            if let Some(relay) = plan.bridge {
                self.bridge_unrouted(now, ua, relay);
            }
            return self.set_state(plan.serial, CallState::Ended(why));
        };
        let plan_bridge = plan.bridge;
        let bridged = plan_bridge
            .and_then(|b| self.bridges.get(&b))
            .map(|b| (b.out_media.clone(), b.out_offer.clone()));
        // Media bypass: the calling user's Teams client offers itself,
        // with ICE (behaviour §7).
        let bypass = plan_bridge.is_none() && self.bypass(&fqdn);
        let (local_media, offer, mp_port, media_host, ice) = match bridged {
            // A bridge's far leg: the relay's port and key, every attempt.
            Some((media, offer)) => (media, offer, 0, self.config.media_host.clone(), None),
            None => {
                let (host, ip, mp_port, mp_key) = match self.media_endpoint(ua, bypass.then_some(0))
                {
                    Ok(m) => m,
                    Err(e) => {
                        self.problem("media", format!("media processor: {e}"));
                        return self.set_state(plan.serial, CallState::Ended(format!("503 {e}")));
                    }
                };
                let mut local_media = mp_media(ip, mp_port, &mp_key);
                let origin = self.origin(ua, ip);
                let ice = bypass.then(|| Self::client_ice(ua, &mut local_media));
                let mut offer = local_media.offer(origin);
                teams_offer(&mut offer);
                (local_media, offer, mp_port, host, ice)
            }
        };
        let port = self.config.tenant.sbc_port;
        let contact = self.contact(ua);
        let number = plan.number.clone();
        let ruri = format!("sip:{number}@{fqdn}:{port};user=phone;transport=tls");
        // Case 9.55: a hidden caller goes out as anonymous@anonymous.invalid
        // (KB-OUT; no P-Asserted-Identity: ForwardPai is off by default).
        let from = if let Some((caller, _)) = &plan.forwarded {
            // A forwarded call shows the original caller (behaviour §3.3);
            // one who hid their number stays hidden (case 9.55).
            if caller.starts_with('+') {
                format!("<sip:{caller}@{}:5061;user=phone>", self.config.fqdn)
            } else {
                "\"Anonymous\" <sip:anonymous@anonymous.invalid>".to_string()
            }
        } else if u.hide_caller_id {
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>".to_string()
        } else {
            format!(
                "\"{}\" <sip:{}@{}:5061;user=phone>",
                u.name, u.number, self.config.fqdn
            )
        };
        let mut builder = RequestBuilder::new(
            Method::Invite,
            ruri,
            from,
            format!("<sip:{number}@{fqdn}:{port};user=phone>"),
        )
        .header("Record-Route", self.record_route())
        .contact(contact)
        .header("Allow", HUB_ALLOW);
        // Case 9.53: with ForwardPai the billed user's number goes in
        // P-Asserted-Identity, and a hidden caller adds Privacy: id;
        // without it, neither (KB-OUT, CONNECT).
        // Case 9.54: History-Info on forwarded calls only (never on
        // transfers), for gateways with ForwardCallHistory on.
        if let Some((_, history)) = &plan.forwarded {
            if self.view().forward_call_history.contains(&fqdn) {
                builder = builder.header("History-Info", history.clone());
            }
        }
        if self.view().forward_pai.contains(&fqdn) {
            builder = builder.header(
                "P-Asserted-Identity",
                format!("<sip:{}@{}:5061;user=phone>", u.number, self.config.fqdn),
            );
            if u.hide_caller_id {
                builder = builder.header("Privacy", "id");
            }
        }
        let invite = builder.build(ua.rng(), &self.config.internal_name);
        let call_id = invite.call_id().unwrap_or_default().to_string();
        let hop = Hop::Uri(format!("sip:{fqdn}:{port};transport=tls"));
        // Behaviour §6 (case 9.51): the hub "does not offer [the session
        // timer] on bypass calls": this INVITE, and its session, go without.
        let sent = if bypass {
            let mut config = ua.session_config().clone();
            config.timer = None;
            ua.invite_with(
                now,
                invite,
                Some(offer.clone()),
                hop,
                &std::sync::Arc::new(config),
            )
        } else {
            ua.invite(now, invite, Some(offer.clone()), hop)
        };
        let id = match sent {
            Ok(id) => id,
            Err(e) => {
                if plan_bridge.is_none() {
                    self.view().release_media(mp_port);
                }
                let next = Next::Proxy(format!("cannot send INVITE: {e}"));
                return self.fail_over(now, ua, plan, next);
            }
        };
        if let Some(b) = plan_bridge.and_then(|b| self.bridges.get_mut(&b)) {
            b.outbound = Some(id);
        }
        self.next_media += 1;
        let (mut talk, open) = Talk::open(self.next_media, &media_host, mp_port);
        if plan_bridge.is_none() {
            self.media_out.push_back(open);
        }
        let offered = offer.to_string();
        talk.ice_wrong_password = self.view().ice_wrong_password;
        talk.ice = ice;
        talk.media = Some(local_media);
        talk.local = Some(offer);
        {
            let proxy = self.config.fqdn.clone();
            let mut view = self.view();
            if let Some(c) = view.call_mut(plan.serial) {
                c.proxy = proxy;
                c.call_id = call_id;
                c.media = talk.stats.clone();
                c.state = CallState::Setup;
            }
        }
        let failover_at = Some(now + self.config.failover_time);
        self.calls.insert(
            id,
            HubCall {
                serial: plan.serial,
                direction: CallDirection::Outbound,
                user: u.name,
                callee: None,
                answering_fork: 0,
                ack_deadline: None,
                talk,
                media_port: mp_port,
                why: None,
                correlation: plan.correlation.clone(),
                offered: Some(offered),
                outbound: Some(plan),
                failover_at,
                progressed: false,
                superseded: false,
                sbc: fqdn,
                sbc_allow: String::new(),
                transfer: None,
                takes_over: None,
                bridge: plan_bridge,
                early_forks: Vec::new(),
                media_watch: None,
                moving_to: None,
            },
        );
    }
}
