//! Calls through the hub: INVITEs from the SBC to a Teams user (behaviour
//! §3.1, cases 9.17–9.28) and from a Teams user to the SBC, the Teams side
//! answering, media on the media processor, and hang-up.

use super::{shout, CallDirection, CallState, HubCallView, Proxy, Refusal, HUB_AGENT, HUB_ALLOW};
use sbc::media::{MediaStats, ProbeOpen, ProbePlan, SrtpKey};
use sbc::sip::dialog::Dialog;
use sbc::sip::sdp::offer_answer::{agreed, AnswerError, Codec, LocalMedia};
use sbc::sip::sdp::{Origin, SessionDescription};
use sbc::sip::transaction::{response_to, TransactionKey};
use sbc::sip::transport::{Network, Source, Target, TransportKind};
use sbc::sip::wire::{Message, Method, Uri};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) struct HubCall {
    view_idx: usize,
    direction: CallDirection,
    user: String,
    invite_key: TransactionKey,
    invite: Message,
    local_tag: String,
    dialog: Option<Dialog>,
    ring_at: Option<Instant>,
    /// When the hub gives up waiting for the ACK of its 200 (behaviour §9.32).
    ack_deadline: Option<Instant>,
    /// The media processor has its plan (from a 183 or the 200).
    media_started: bool,
    answer_at: Option<Instant>,
    plan: Option<watch::Sender<Option<ProbePlan>>>,
    local_sdp: Option<SessionDescription>,
    remote_sdp: Option<SessionDescription>,
    sbc_target: Target,
    ended: bool,
}

impl HubCall {
    pub(crate) fn wake(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        [self.ring_at, self.answer_at, self.ack_deadline]
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

impl<N: Network> Proxy<N> {
    fn contact(&mut self) -> String {
        // Observed Teams Contact: opaque x-i/x-c parameters with '/' inside,
        // which an SBC must carry byte-exact.
        let xi = self.endpoint.rng.hex(32);
        let xc = format!(
            "{}/d/8/{}",
            self.endpoint.rng.hex(32),
            self.endpoint.rng.hex(32)
        );
        format!("<sip:api-du-a-euwe.pstnhub.microsoft.com:443;x-i={xi};x-c={xc}>")
    }

    fn record_route(&self) -> String {
        format!(
            "<sip:{}:{};transport=tls;lr>",
            self.config.fqdn, self.config.listen_port
        )
    }

    async fn media_processor(&mut self) -> Result<(IpAddr, u16, SrtpKey), String> {
        let ip = self
            .net
            .resolve(&self.config.media_host, 0)
            .await
            .map_err(|e| e.to_string())?
            .ip();
        let port = self.view().allocate_media_port();
        let mut key = SrtpKey::generate(&mut self.endpoint.rng);
        key.mki = None;
        Ok((ip, port, key))
    }

    fn open_probe(
        &mut self,
        port: u16,
    ) -> (watch::Sender<Option<ProbePlan>>, Arc<Mutex<MediaStats>>) {
        let (tx, rx) = watch::channel(None);
        let stats = Arc::new(Mutex::new(MediaStats::default()));
        let _ = self.config.media.send(ProbeOpen {
            port,
            plan: rx,
            stats: stats.clone(),
        });
        (tx, stats)
    }

    fn origin(&mut self, ip: IpAddr) -> Origin {
        Origin {
            username: "-".into(),
            session_id: self.endpoint.rng.next_u32() as u64,
            session_version: 0,
            address: ip.to_string(),
        }
    }

    async fn sbc_target(&self, fqdn: &str, port: Option<u16>) -> Result<Target, String> {
        let port = port.unwrap_or(self.config.tenant.sbc_port);
        let addr = self
            .net
            .resolve(fqdn, port)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Target {
            transport: TransportKind::Tls,
            addr,
            server_name: Some(fqdn.to_string()),
        })
    }

    /// §3.1: an INVITE from the SBC toward a Teams user.
    pub(crate) async fn on_invite(
        &mut self,
        key: TransactionKey,
        request: Message,
        source: Source,
    ) {
        if self
            .calls
            .iter()
            .any(|c| c.dialog.as_ref().is_some_and(|d| d.matches(&request)))
        {
            // A re-INVITE: not part of these flows yet; refuse cleanly (RFC 3261 §14.2).
            let resp = response_to(&request, 488, "Not Acceptable Here", None);
            return self.respond(&key, resp);
        }
        let (fqdn, port) = match self.identify_sbc(&request, &source) {
            Ok(id) => id,
            Err(r) => return self.refuse(&key, &request, r),
        };
        match super::rules::check_invite(&request) {
            Ok(()) => {}
            Err(r) => return self.refuse(&key, &request, r),
        }
        let number = Uri::parse(request.request_uri().unwrap_or_default())
            .ok()
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_default();
        let Some(user) = self
            .config
            .tenant
            .users
            .iter()
            .find(|u| u.number == number)
            .cloned()
        else {
            return self.refuse(&key, &request, Refusal::UnknownNumber { number });
        };
        let Ok(offer) = SessionDescription::parse(&String::from_utf8_lossy(&request.body)) else {
            return self.refuse(
                &key,
                &request,
                Refusal::BadSdp {
                    reason: "unparsable".into(),
                },
            );
        };
        let (ip, port_mp, key_mp) = match self.media_processor().await {
            Ok(m) => m,
            Err(e) => {
                self.view().problems.push(format!("media processor: {e}"));
                let resp = response_to(&request, 503, "Service Unavailable", None);
                return self.respond(&key, resp);
            }
        };
        let mut mp_key = key_mp;
        mp_key.mki = Some((1, 1));
        let local_media = LocalMedia {
            address: ip.to_string(),
            port: port_mp,
            codecs: teams_codecs(),
            srtp_key: Some(mp_key.inline()),
            rtcp_mux: true,
            ice: None,
        };
        let origin = self.origin(ip);
        let mut answer = match local_media.answer(&offer, origin) {
            Ok(a) => a,
            Err(AnswerError::SrtpRequired) => {
                return self.refuse(&key, &request, Refusal::SrtpRequired)
            }
            Err(e) => {
                return self.refuse(
                    &key,
                    &request,
                    Refusal::NoCommonCodec {
                        reason: e.to_string(),
                    },
                )
            }
        };
        teams_crypto(&mut answer, true);
        let target = match self.sbc_target(&fqdn, port).await {
            Ok(t) => t,
            Err(e) => {
                self.view()
                    .problems
                    .push(format!("cannot resolve SBC {fqdn}: {e}"));
                let resp = response_to(&request, 504, "Server Time-out", None);
                return self.respond(&key, resp);
            }
        };
        let local_tag = self.endpoint.rng.tag();
        let (plan, stats) = self.open_probe(port_mp);
        let caller = request
            .from_header()
            .ok()
            .and_then(|f| f.parsed_uri().ok())
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_default();
        let view_idx = self.add_view(
            request.call_id().unwrap_or_default(),
            CallDirection::Inbound,
            &user.name,
            &caller,
            stats,
        );
        let now = Instant::now();
        self.calls.push(HubCall {
            view_idx,
            direction: CallDirection::Inbound,
            user: user.name,
            invite_key: key,
            invite: request,
            local_tag,
            dialog: None,
            ring_at: Some(now + self.config.ring_delay),
            answer_at: None,
            ack_deadline: None,
            media_started: false,
            plan: Some(plan),
            local_sdp: Some(answer),
            remote_sdp: Some(offer),
            sbc_target: target,
            ended: false,
        });
    }

    fn add_view(
        &mut self,
        call_id: &str,
        direction: CallDirection,
        user: &str,
        remote: &str,
        media: Arc<Mutex<MediaStats>>,
    ) -> usize {
        let proxy = self.config.fqdn.clone();
        let mut view = self.view();
        view.calls.push(HubCallView {
            proxy,
            call_id: call_id.to_string(),
            direction,
            user: user.to_string(),
            remote_number: remote.to_string(),
            state: CallState::Setup,
            acked: false,
            media,
        });
        view.calls.len() - 1
    }

    fn set_state(&mut self, idx: usize, state: CallState) {
        let view_idx = self.calls[idx].view_idx;
        if let Some(c) = self.view().calls.get_mut(view_idx) {
            c.state = state;
        }
    }

    fn end(&mut self, idx: usize, why: String) {
        self.calls[idx].ended = true;
        self.calls[idx].plan = None;
        self.calls[idx].ring_at = None;
        self.calls[idx].answer_at = None;
        self.set_state(idx, CallState::Ended(why));
    }

    /// Ringing and answering on the Teams side, when their time comes.
    pub(crate) fn calls_due(&mut self, now: Instant) {
        for idx in 0..self.calls.len() {
            if self.calls[idx].ring_at.is_some_and(|t| t <= now) {
                self.calls[idx].ring_at = None;
                self.calls[idx].answer_at = Some(now + self.config.answer_delay);
                // §9.28: each of the user's Teams endpoints rings with a To-tag of
                // its own; the last one answers, so the 200 comes from a
                // different fork than the first 180.
                let mut tags = vec![self.calls[idx].local_tag.clone()];
                for _ in 1..self.config.forks.max(1) {
                    tags.push(self.endpoint.rng.tag());
                }
                let key = self.calls[idx].invite_key.clone();
                for tag in &tags {
                    let mut ringing =
                        response_to(&self.calls[idx].invite, 180, "Ringing", Some(tag));
                    ringing.headers.push("Record-Route", self.record_route());
                    let contact = self.contact();
                    ringing.headers.push("Contact", contact);
                    self.respond(&key, ringing);
                }
                if self.config.early_media {
                    // Non-bypass: the media processor answers early on the first
                    // fork (one 183 with SDP) and media starts (behaviour §9.28).
                    let call = &self.calls[idx];
                    if let Some(sdp) = call.local_sdp.clone() {
                        let mut progress =
                            response_to(&call.invite, 183, "Session Progress", Some(&tags[0]));
                        progress.headers.push("Record-Route", self.record_route());
                        let contact = self.contact();
                        progress.headers.push("Contact", contact);
                        progress.set_body("application/sdp", sdp.to_text().into_bytes());
                        self.respond(&key, progress);
                        self.start_media(idx);
                    }
                }
                if let Some(answering) = tags.pop() {
                    self.calls[idx].local_tag = answering;
                }
                self.set_state(idx, CallState::Ringing);
            }
            if self.calls[idx].answer_at.is_some_and(|t| t <= now) {
                self.calls[idx].answer_at = None;
                self.calls[idx].ack_deadline = Some(now + self.config.no_ack_timeout);
                self.answer(idx);
            }
            if self.calls[idx].ack_deadline.is_some_and(|t| t <= now) && !self.calls[idx].ended {
                // §9.32: no ACK for the 200: the call "drops after approximately
                // four seconds", recorded as 408 / 1106.
                self.calls[idx].ack_deadline = None;
                self.send_bye(idx, Some("Q.850;cause=102;text=\"1106;Acknowledgement was not received for the call acceptance\""));
                self.end(idx, "no ACK for 200 OK (408/1106)".into());
            }
        }
    }

    fn answer(&mut self, idx: usize) {
        let contact = self.contact();
        let rr = self.record_route();
        let call = &self.calls[idx];
        let mut ok = response_to(&call.invite, 200, "OK", Some(&call.local_tag));
        ok.headers.push("Record-Route", rr);
        ok.headers.push("Contact", contact.clone());
        ok.headers.push("Allow", HUB_ALLOW);
        let Some(sdp) = call.local_sdp.clone() else {
            return;
        };
        ok.set_body("application/sdp", sdp.to_text().into_bytes());
        let dialog = Dialog::as_uas(
            &call.invite,
            &call.local_tag,
            contact,
            call.sbc_target.clone(),
        )
        .ok();
        let key = call.invite_key.clone();
        self.respond(&key, ok);
        self.calls[idx].dialog = dialog;
        // Teams starts media with its 200 OK, unless it did with a 183.
        self.start_media(idx);
        self.set_state(idx, CallState::Answered);
    }

    /// Give the media processor its plan (once per call).
    fn start_media(&mut self, idx: usize) {
        if self.calls[idx].media_started {
            return;
        }
        let call = &self.calls[idx];
        let (Some(local), Some(remote)) = (call.local_sdp.clone(), call.remote_sdp.clone()) else {
            return;
        };
        let Some(plan) = probe_plan(
            &local,
            &remote,
            self.config.media_frames,
            &mut self.endpoint.rng,
        ) else {
            return;
        };
        let call = &mut self.calls[idx];
        if let Some(tx) = &call.plan {
            let _ = tx.send(Some(plan));
        }
        call.media_started = true;
    }

    pub(crate) fn on_ack(&mut self, request: &Message) {
        let found = self
            .calls
            .iter()
            .position(|c| !c.ended && c.dialog.as_ref().is_some_and(|d| d.matches(request)));
        if let Some(idx) = found {
            self.calls[idx].ack_deadline = None;
            let view_idx = self.calls[idx].view_idx;
            if let Some(c) = self.view().calls.get_mut(view_idx) {
                c.acked = true;
            }
        }
    }

    pub(crate) fn on_bye(&mut self, key: TransactionKey, request: Message) {
        match self
            .calls
            .iter()
            .position(|c| !c.ended && c.dialog.as_ref().is_some_and(|d| d.matches(&request)))
        {
            Some(idx) => {
                let ok = response_to(&request, 200, "OK", None);
                self.respond(&key, ok);
                self.end(idx, "BYE from SBC".into());
            }
            None => {
                let resp = response_to(&request, 481, "Call/Transaction Does Not Exist", None);
                self.respond(&key, resp);
            }
        }
    }

    pub(crate) fn on_cancelled(&mut self, key: &TransactionKey) {
        if let Some(idx) = self
            .calls
            .iter()
            .position(|c| &c.invite_key == key && !c.ended)
        {
            let call = &self.calls[idx];
            let resp = response_to(
                &call.invite,
                487,
                "Request Terminated",
                Some(&call.local_tag),
            );
            let k = key.clone();
            self.respond(&k, resp);
            self.end(idx, "cancelled by SBC".into());
        }
    }

    pub(crate) fn on_failure(&mut self, key: &TransactionKey, why: &str) {
        if self.on_ping_failure(key, why) {
            return;
        }
        if let Some(idx) = self
            .calls
            .iter()
            .position(|c| &c.invite_key == key && !c.ended)
        {
            self.end(idx, why.to_string());
        }
    }

    pub(crate) async fn on_response(&mut self, key: TransactionKey, response: Message) {
        if self.on_ping_response(&key, &response) {
            return;
        }
        let Some(idx) = self
            .calls
            .iter()
            .position(|c| c.invite_key == key && c.direction == CallDirection::Outbound)
        else {
            return;
        };
        let code = response.status().unwrap_or(0);
        match code {
            100 => {}
            101..=199 => {
                if !self.calls[idx].ended {
                    self.set_state(idx, CallState::Ringing);
                }
            }
            200..=299 => self.outbound_answered(idx, &response),
            _ => {
                let reason = format!("{} from SBC", response.summary());
                if !self.calls[idx].ended {
                    self.end(idx, reason);
                }
            }
        }
    }

    fn outbound_answered(&mut self, idx: usize, response: &Message) {
        let call = &self.calls[idx];
        let dialog = match &call.dialog {
            Some(d) => d.clone(),
            None => match Dialog::as_uac_for(&call.invite, response, call.sbc_target.clone()) {
                Ok(d) => d,
                Err(e) => {
                    self.view()
                        .problems
                        .push(format!("SBC 200 OK unusable: {e}"));
                    return;
                }
            },
        };
        let seq = call.invite.cseq().map(|c| c.seq).unwrap_or(1);
        let mut ack = dialog.ack(seq);
        shout(&mut ack);
        self.endpoint.send_ack(ack, dialog.target.clone());
        if self.calls[idx].dialog.is_some() {
            return; // a retransmitted 200: ACKed again, nothing else.
        }
        let remote = SessionDescription::parse(&String::from_utf8_lossy(&response.body)).ok();
        let plan = match (&self.calls[idx].local_sdp, &remote) {
            (Some(local), Some(remote)) => probe_plan(
                local,
                remote,
                self.config.media_frames,
                &mut self.endpoint.rng,
            ),
            _ => None,
        };
        let call = &mut self.calls[idx];
        call.dialog = Some(dialog);
        call.remote_sdp = remote;
        match (plan, &call.plan) {
            (Some(p), Some(tx)) => {
                let _ = tx.send(Some(p));
            }
            _ => {
                let line = "SBC answer has no usable SDP for the media processor".to_string();
                self.view().problems.push(line);
            }
        }
        self.set_state(idx, CallState::Answered);
    }

    /// BYE on a call's dialog, with a Reason header (RFC 3326) when the hub
    /// ends the call itself.
    fn send_bye(&mut self, idx: usize, reason: Option<&str>) {
        let Some(dialog) = self.calls[idx].dialog.as_mut() else {
            return;
        };
        let mut bye = dialog.request(Method::Bye);
        bye.headers.push("User-Agent", HUB_AGENT);
        if let Some(r) = reason {
            bye.headers.push("Reason", r);
        }
        shout(&mut bye);
        let target = dialog.target.clone();
        let _ = self.endpoint.send_request(bye, target);
    }

    pub(crate) fn hang_up(&mut self, user: &str) {
        let found = self
            .calls
            .iter()
            .position(|c| !c.ended && c.user == user && c.dialog.is_some());
        if let Some(idx) = found {
            self.send_bye(idx, None);
            self.end(idx, format!("hung up by Teams user {user}"));
        }
    }

    /// A Teams user dials a PSTN number through the tenant's SBC.
    pub(crate) async fn dial(&mut self, user: &str, number: &str) {
        let Some(u) = self
            .config
            .tenant
            .users
            .iter()
            .find(|u| u.name == user || u.number == user)
            .cloned()
        else {
            self.view().problems.push(format!("no Teams user {user}"));
            return;
        };
        let fqdn = {
            let view = self.view();
            let active = self.config.tenant.sbcs.iter().find(|s| {
                view.sbcs
                    .get(*s)
                    .is_some_and(|h| h.status == super::SbcStatus::Active)
            });
            active.or(self.config.tenant.sbcs.first()).cloned()
        };
        let Some(fqdn) = fqdn else { return };
        let target = match self.sbc_target(&fqdn, None).await {
            Ok(t) => t,
            Err(e) => {
                self.view()
                    .problems
                    .push(format!("cannot resolve SBC {fqdn}: {e}"));
                return;
            }
        };
        let (ip, mp_port, mp_key) = match self.media_processor().await {
            Ok(m) => m,
            Err(e) => {
                self.view().problems.push(format!("media processor: {e}"));
                return;
            }
        };
        let local_media = LocalMedia {
            address: ip.to_string(),
            port: mp_port,
            codecs: teams_codecs(),
            srtp_key: Some(mp_key.inline()),
            rtcp_mux: true,
            ice: None,
        };
        let origin = self.origin(ip);
        let mut offer = local_media.offer(origin);
        teams_crypto(&mut offer, false);
        let port = self.config.tenant.sbc_port;
        let local_tag = self.endpoint.rng.tag();
        let call_id = self.endpoint.rng.call_id(&self.config.internal_name);
        let contact = self.contact();
        let mut invite = Message::request(
            Method::Invite,
            format!("sip:{number}@{fqdn}:{port};user=phone;transport=tls"),
        );
        invite.headers.push(
            "From",
            format!(
                "\"{}\" <sip:{}@{}:5061;user=phone>;tag={local_tag}",
                u.name, u.number, self.config.fqdn
            ),
        );
        invite
            .headers
            .push("To", format!("<sip:{number}@{fqdn}:{port};user=phone>"));
        invite.headers.push("Call-ID", call_id.clone());
        invite.headers.push("CSeq", "1 INVITE");
        invite.headers.push("Max-Forwards", "70");
        invite.headers.push("Record-Route", self.record_route());
        invite.headers.push("Contact", contact);
        invite.headers.push("Allow", HUB_ALLOW);
        invite.headers.push("User-Agent", HUB_AGENT);
        invite.set_body("application/sdp", offer.to_text().into_bytes());
        shout(&mut invite);
        let key = match self.endpoint.send_request(invite.clone(), target.clone()) {
            Ok(k) => k,
            Err(e) => {
                self.view()
                    .problems
                    .push(format!("cannot send INVITE: {e}"));
                return;
            }
        };
        let (plan, stats) = self.open_probe(mp_port);
        let view_idx = self.add_view(&call_id, CallDirection::Outbound, &u.name, number, stats);
        self.calls.push(HubCall {
            view_idx,
            direction: CallDirection::Outbound,
            user: u.name,
            invite_key: key,
            invite,
            local_tag,
            dialog: None,
            ring_at: None,
            answer_at: None,
            ack_deadline: None,
            media_started: false,
            plan: Some(plan),
            local_sdp: Some(offer),
            remote_sdp: None,
            sbc_target: target,
            ended: false,
        });
    }
}

/// The media processor's probe plan from our SDP and the SBC's.
fn probe_plan(
    local: &SessionDescription,
    remote: &SessionDescription,
    frames: u32,
    rng: &mut sbc::sip::rng::SeededRng,
) -> Option<ProbePlan> {
    ProbePlan::from_agreed(&agreed(local, remote)?, rng.next_u32(), frames)
}
