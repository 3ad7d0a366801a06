//! The carrier trunk: places calls from PSTN phones to the SBC, answers
//! calls the SBC sends to PSTN numbers, and hangs up.

use sbc::b2bua::numbers::to_national;
use sbc::media::{MediaStats, ProbeOpen, ProbePlan};
use sbc::sip::dialog::Dialog;
use sbc::sip::endpoint::{Endpoint, EndpointConfig, EndpointEvent};
use sbc::sip::rng::SeededRng;
use sbc::sip::sdp::offer_answer::{agreed, Codec, LocalMedia};
use sbc::sip::sdp::{Origin, SessionDescription};
use sbc::sip::transaction::{response_to, TimerConfig, TransactionKey};
use sbc::sip::transport::{Network, SipTransport, Tap, Target, TransportConfig, TransportKind};
use sbc::sip::wire::{Message, Method, Uri};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Phone {
    /// E.164 with `+`.
    pub number: String,
    /// The host its audio comes from.
    pub media_host: String,
    pub media: mpsc::UnboundedSender<ProbeOpen>,
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
    pub ring_delay: Duration,
    pub answer_delay: Duration,
    pub media_frames: u32,
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
    pub phone: String,
    pub peer: String,
    pub direction: PstnDirection,
    pub state: PstnState,
    pub media: Arc<Mutex<MediaStats>>,
}

#[derive(Debug, Clone, Default)]
pub struct CarrierView {
    pub calls: Vec<PstnCallView>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CarrierCommand {
    Call { from: String, to: String },
    HangUp { number: String },
}

struct PstnCall {
    view_idx: usize,
    phone: String,
    invite_key: TransactionKey,
    invite: Message,
    local_tag: String,
    local_sdp: SessionDescription,
    dialog: Option<Dialog>,
    ring_at: Option<Instant>,
    answer_at: Option<Instant>,
    plan: Option<watch::Sender<Option<ProbePlan>>>,
    remote_sdp: Option<SessionDescription>,
    /// The phone's probe has its plan.
    media_started: bool,
    ended: bool,
}

struct Trunk<N: Network> {
    net: N,
    config: CarrierConfig,
    endpoint: Endpoint<N>,
    view: Arc<Mutex<CarrierView>>,
    ip: IpAddr,
    /// The SBC's carrier-side address: every request and in-dialog request goes there.
    sbc: Target,
    calls: Vec<PstnCall>,
    next_port: u16,
}

/// Run the trunk (UDP on `listen_port`) until its host stops. Every SIP message
/// goes to `tap`, if given.
pub async fn run_trunk<N: Network>(
    net: N,
    config: CarrierConfig,
    view: Arc<Mutex<CarrierView>>,
    mut commands: mpsc::UnboundedReceiver<CarrierCommand>,
    tap: Option<Arc<dyn Tap>>,
) -> std::io::Result<()> {
    let mut tc = TransportConfig::new(config.fqdn.clone());
    tc.udp = Some(SocketAddr::new(
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        config.listen_port,
    ));
    let (transport, events) = SipTransport::start(net.clone(), tc, tap).await?;
    let ip = net.resolve(&config.fqdn, config.listen_port).await?.ip();
    let ep = EndpointConfig {
        via_host: ip.to_string(),
        timers: TimerConfig::default(),
        user_agent: Some("drlab carrier-sim".into()),
    };
    let rng = SeededRng::for_host(config.seed, &config.fqdn);
    let endpoint = Endpoint::new(transport, events, ep, rng);
    let sbc_addr = net.resolve(&config.sbc_host, config.sbc_port).await?;
    let sbc = Target {
        transport: TransportKind::Udp,
        addr: sbc_addr,
        server_name: None,
    };
    let mut trunk = Trunk {
        net,
        config,
        endpoint,
        view,
        ip,
        sbc,
        calls: Vec::new(),
        next_port: 20000,
    };
    let mut commands_open = true;
    loop {
        let wake = trunk
            .calls
            .iter()
            .filter(|c| !c.ended)
            .filter_map(|c| c.ring_at.or(c.answer_at))
            .min();
        tokio::select! {
            biased;
            c = commands.recv(), if commands_open => match c {
                Some(c) => trunk.on_command(c).await,
                None => commands_open = false,
            },
            e = trunk.endpoint.next_event(wake) => trunk.on_event(e).await,
        }
    }
}

fn phone_codecs() -> Vec<Codec> {
    vec![Codec::pcma(), Codec::pcmu(), Codec::telephone_event()]
}

impl<N: Network> Trunk<N> {
    fn view(&self) -> std::sync::MutexGuard<'_, CarrierView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn problem(&self, p: String) {
        self.view().problems.push(p);
    }

    /// A phone's media: its host's address and a fresh port pair.
    async fn phone_media(
        &mut self,
        phone: &Phone,
    ) -> std::io::Result<(
        LocalMedia,
        watch::Sender<Option<ProbePlan>>,
        Arc<Mutex<MediaStats>>,
    )> {
        let ip = self.net.resolve(&phone.media_host, 0).await?.ip();
        let port = self.next_port;
        self.next_port = if self.next_port >= 29998 {
            20000
        } else {
            self.next_port + 2
        };
        let (tx, rx) = watch::channel(None);
        let stats = Arc::new(Mutex::new(MediaStats::default()));
        let _ = phone.media.send(ProbeOpen {
            port,
            plan: rx,
            stats: stats.clone(),
        });
        let media = LocalMedia {
            address: ip.to_string(),
            port,
            codecs: phone_codecs(),
            srtp_key: None,
            rtcp_mux: false,
            ice: None,
        };
        Ok((media, tx, stats))
    }

    fn add_view(
        &self,
        phone: &str,
        peer: &str,
        direction: PstnDirection,
        state: PstnState,
        media: Arc<Mutex<MediaStats>>,
    ) -> usize {
        let mut v = self.view();
        v.calls.push(PstnCallView {
            phone: phone.into(),
            peer: peer.into(),
            direction,
            state,
            media,
        });
        v.calls.len() - 1
    }

    fn set_state(&self, idx: usize, state: PstnState) {
        let view_idx = self.calls[idx].view_idx;
        if let Some(c) = self.view().calls.get_mut(view_idx) {
            c.state = state;
        }
    }

    fn end(&mut self, idx: usize, why: String) {
        let c = &mut self.calls[idx];
        c.ended = true;
        c.plan = None;
        c.ring_at = None;
        c.answer_at = None;
        self.set_state(idx, PstnState::Ended(why));
    }

    fn origin(&mut self, address: &str) -> Origin {
        Origin {
            username: "-".into(),
            session_id: self.endpoint.rng.next_u32() as u64,
            session_version: 1,
            address: address.into(),
        }
    }

    async fn on_command(&mut self, c: CarrierCommand) {
        match c {
            CarrierCommand::Call { from, to } => {
                if let Err(e) = self.call(&from, &to).await {
                    self.problem(format!("call from {from} to {to} failed to start: {e}"));
                }
            }
            CarrierCommand::HangUp { number } => {
                if let Some(idx) = self
                    .calls
                    .iter()
                    .position(|c| !c.ended && c.phone == number && c.dialog.is_some())
                {
                    let dialog = self.calls[idx].dialog.as_mut().expect("checked above");
                    let bye = dialog.request(Method::Bye);
                    let target = dialog.target.clone();
                    let _ = self.endpoint.send_request(bye, target);
                    self.end(idx, format!("{number} hung up"));
                }
            }
        }
    }

    /// A PSTN phone calls `to` (E.164) through the trunk.
    async fn call(&mut self, from: &str, to: &str) -> std::io::Result<()> {
        let phone = self
            .config
            .phones
            .iter()
            .find(|p| p.number == from)
            .cloned()
            .ok_or_else(|| std::io::Error::other(format!("no PSTN phone {from}")))?;
        let (media, plan, stats) = self.phone_media(&phone).await?;
        let origin = self.origin(&media.address);
        let offer = media.offer(origin);
        let target = self.sbc.clone();
        let cc = self.config.country_code.clone();
        let (calling, called) = (to_national(from, &cc), to_national(to, &cc));
        let sbc = format!("{}:{}", self.config.sbc_host, self.config.sbc_port);
        let tag = self.endpoint.rng.tag();
        let mut invite = Message::request(Method::Invite, format!("sip:{called}@{sbc}"));
        invite.headers.push(
            "From",
            format!("<sip:{calling}@{}>;tag={tag}", self.config.fqdn),
        );
        invite.headers.push("To", format!("<sip:{called}@{sbc}>"));
        invite
            .headers
            .push("Call-ID", self.endpoint.rng.call_id(&self.config.fqdn));
        invite.headers.push("CSeq", "1 INVITE");
        invite.headers.push("Max-Forwards", "70");
        invite.headers.push(
            "Contact",
            format!("<sip:{calling}@{}:{}>", self.ip, self.config.listen_port),
        );
        invite
            .headers
            .push("Allow", "INVITE,ACK,BYE,CANCEL,OPTIONS");
        invite.set_body("application/sdp", offer.to_text().into_bytes());
        let key = self
            .endpoint
            .send_request(invite.clone(), target)
            .map_err(std::io::Error::other)?;
        let view_idx = self.add_view(from, to, PstnDirection::FromPstn, PstnState::Dialing, stats);
        self.calls.push(PstnCall {
            view_idx,
            phone: from.to_string(),
            invite_key: key,
            invite,
            local_tag: tag,
            local_sdp: offer,
            dialog: None,
            ring_at: None,
            answer_at: None,
            plan: Some(plan),
            remote_sdp: None,
            media_started: false,
            ended: false,
        });
        Ok(())
    }

    async fn on_event(&mut self, e: EndpointEvent) {
        match e {
            EndpointEvent::Request { key, request, .. } => match request.method() {
                Some(Method::Invite) => self.on_invite(key, request).await,
                Some(Method::Bye) => self.on_bye(key, request),
                Some(Method::Options) => {
                    let mut ok = response_to(&request, 200, "OK", None);
                    ok.headers.push("Allow", "INVITE,ACK,BYE,CANCEL,OPTIONS");
                    self.endpoint.respond(&key, ok);
                }
                _ => {
                    let resp = response_to(&request, 501, "Not Implemented", None);
                    self.endpoint.respond(&key, resp);
                }
            },
            EndpointEvent::Response { key, response } => self.on_response(key, response).await,
            EndpointEvent::Timeout { key } => self.fail(&key, "408 timeout".into()),
            EndpointEvent::SendFailed { key, reason } => self.fail(&key, reason),
            EndpointEvent::Cancelled { key } => {
                if let Some(idx) = self
                    .calls
                    .iter()
                    .position(|c| c.invite_key == key && !c.ended)
                {
                    let c = &self.calls[idx];
                    let resp =
                        response_to(&c.invite, 487, "Request Terminated", Some(&c.local_tag));
                    self.endpoint.respond(&key, resp);
                    self.end(idx, "cancelled".into());
                }
            }
            EndpointEvent::Malformed { error, source } => {
                self.problem(format!("malformed from {}: {error}", source.remote))
            }
            EndpointEvent::Wake => self.on_wake(),
            EndpointEvent::Ack { .. }
            | EndpointEvent::Server { .. }
            | EndpointEvent::TlsRefused { .. } => {}
        }
    }

    /// Answer `request` with a final error, with a To-tag of our own.
    fn reject(&mut self, key: &TransactionKey, request: &Message, code: u16, reason: &str) {
        let tag = self.endpoint.rng.tag();
        let resp = response_to(request, code, reason, Some(&tag));
        self.endpoint.respond(key, resp);
    }

    fn fail(&mut self, key: &TransactionKey, why: String) {
        if let Some(idx) = self
            .calls
            .iter()
            .position(|c| &c.invite_key == key && !c.ended)
        {
            self.end(idx, why);
        }
    }

    async fn on_response(&mut self, key: TransactionKey, response: Message) {
        let Some(idx) = self.calls.iter().position(|c| c.invite_key == key) else {
            return;
        };
        let code = response.status().unwrap_or(0);
        match code {
            100 => {}
            101..=199 if !self.calls[idx].ended => {
                // A 183 with SDP brings early media (ringback from the far end).
                if !response.body.is_empty() {
                    self.start_media(idx, &response);
                }
                self.set_state(idx, PstnState::Ringing)
            }
            200..=299 => {
                let call = &self.calls[idx];
                let dialog = match &call.dialog {
                    Some(d) => d.clone(),
                    None => match Dialog::as_uac_for(&call.invite, &response, self.sbc.clone()) {
                        Ok(d) => d,
                        Err(e) => return self.problem(format!("200 OK unusable: {e}")),
                    },
                };
                let seq = call.invite.cseq().map(|c| c.seq).unwrap_or(1);
                self.endpoint
                    .send_ack(dialog.ack(seq), dialog.target.clone());
                if self.calls[idx].dialog.is_some() || self.calls[idx].ended {
                    return;
                }
                self.calls[idx].dialog = Some(dialog);
                self.start_media(idx, &response);
                self.set_state(idx, PstnState::Answered);
            }
            _ if !self.calls[idx].ended => self.end(idx, response.summary()),
            _ => {}
        }
    }

    /// Give the phone's probe its plan from the SBC's SDP in `response`,
    /// once per call (a 183 may already have done it).
    fn start_media(&mut self, idx: usize, response: &Message) {
        if self.calls[idx].media_started {
            return;
        }
        let remote = SessionDescription::parse(&String::from_utf8_lossy(&response.body)).ok();
        let plan = remote.as_ref().and_then(|r| {
            plan_for(
                &self.calls[idx].local_sdp,
                r,
                self.config.media_frames,
                &mut self.endpoint.rng,
            )
        });
        let call = &mut self.calls[idx];
        call.remote_sdp = remote;
        match (&call.plan, plan) {
            (Some(tx), Some(p)) => {
                let _ = tx.send(Some(p));
                call.media_started = true;
            }
            _ => self.problem(format!("{} SDP has no usable audio", response.summary())),
        }
    }

    /// The SBC calls a PSTN number.
    async fn on_invite(&mut self, key: TransactionKey, request: Message) {
        let called = Uri::parse(request.request_uri().unwrap_or_default())
            .ok()
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_default();
        let cc = self.config.country_code.clone();
        let Some(phone) = self
            .config
            .phones
            .iter()
            .find(|p| p.number == called || to_national(&p.number, &cc) == called)
            .cloned()
        else {
            return self.reject(&key, &request, 404, "Not Found");
        };
        let offer = match SessionDescription::parse(&String::from_utf8_lossy(&request.body)) {
            Ok(o) => o,
            Err(e) => {
                self.problem(format!("INVITE SDP unreadable: {e}"));
                return self.reject(&key, &request, 488, "Not Acceptable Here");
            }
        };
        let (media, plan, stats) = match self.phone_media(&phone).await {
            Ok(m) => m,
            Err(e) => return self.problem(format!("phone media: {e}")),
        };
        let origin = self.origin(&media.address);
        let answer = match media.answer(&offer, origin) {
            Ok(a) => a,
            Err(e) => {
                self.problem(format!("cannot answer offer: {e}"));
                return self.reject(&key, &request, 488, "Not Acceptable Here");
            }
        };
        let caller = request
            .from_header()
            .ok()
            .and_then(|f| f.parsed_uri().ok())
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_default();
        let view_idx = self.add_view(
            &phone.number,
            &caller,
            PstnDirection::ToPstn,
            PstnState::Dialing,
            stats,
        );
        let tag = self.endpoint.rng.tag();
        self.calls.push(PstnCall {
            view_idx,
            phone: phone.number.clone(),
            invite_key: key,
            invite: request,
            local_tag: tag,
            local_sdp: answer,
            dialog: None,
            ring_at: Some(Instant::now() + self.config.ring_delay),
            answer_at: None,
            plan: Some(plan),
            remote_sdp: Some(offer),
            media_started: false,
            ended: false,
        });
    }

    fn on_wake(&mut self) {
        let now = Instant::now();
        for idx in 0..self.calls.len() {
            if self.calls[idx].ended {
                continue;
            }
            if self.calls[idx].ring_at.is_some_and(|t| t <= now) {
                self.calls[idx].ring_at = None;
                self.calls[idx].answer_at = Some(now + self.config.answer_delay);
                let c = &self.calls[idx];
                let mut ringing = response_to(&c.invite, 180, "Ringing", Some(&c.local_tag));
                ringing.headers.push(
                    "Contact",
                    format!("<sip:{}:{}>", self.ip, self.config.listen_port),
                );
                let key = c.invite_key.clone();
                self.endpoint.respond(&key, ringing);
                self.set_state(idx, PstnState::Ringing);
            }
            if self.calls[idx].answer_at.is_some_and(|t| t <= now) {
                self.calls[idx].answer_at = None;
                self.answer(idx);
            }
        }
    }

    fn answer(&mut self, idx: usize) {
        let contact = format!("<sip:{}:{}>", self.ip, self.config.listen_port);
        let c = &self.calls[idx];
        let mut ok = response_to(&c.invite, 200, "OK", Some(&c.local_tag));
        ok.headers.push("Contact", contact.clone());
        ok.headers.push("Allow", "INVITE,ACK,BYE,CANCEL,OPTIONS");
        ok.set_body("application/sdp", c.local_sdp.to_text().into_bytes());
        let dialog = Dialog::as_uas(
            &self.calls[idx].invite,
            &self.calls[idx].local_tag,
            contact,
            self.sbc.clone(),
        )
        .ok();
        let plan = self.calls[idx].remote_sdp.as_ref().and_then(|r| {
            plan_for(
                &self.calls[idx].local_sdp,
                r,
                self.config.media_frames,
                &mut self.endpoint.rng,
            )
        });
        let key = self.calls[idx].invite_key.clone();
        self.endpoint.respond(&key, ok);
        let c = &mut self.calls[idx];
        c.dialog = dialog;
        if let (Some(tx), Some(p)) = (&c.plan, plan) {
            let _ = tx.send(Some(p));
        }
        self.set_state(idx, PstnState::Answered);
    }

    fn on_bye(&mut self, key: TransactionKey, request: Message) {
        match self
            .calls
            .iter()
            .position(|c| !c.ended && c.dialog.as_ref().is_some_and(|d| d.matches(&request)))
        {
            Some(idx) => {
                let ok = response_to(&request, 200, "OK", None);
                self.endpoint.respond(&key, ok);
                self.end(idx, "BYE from SBC".into());
            }
            None => {
                let resp = response_to(&request, 481, "Call/Transaction Does Not Exist", None);
                self.endpoint.respond(&key, resp);
            }
        }
    }
}

fn plan_for(
    local: &SessionDescription,
    remote: &SessionDescription,
    frames: u32,
    rng: &mut SeededRng,
) -> Option<ProbePlan> {
    ProbePlan::from_agreed(&agreed(local, remote)?, rng.next_u32(), frames)
}
