//! One call through the SBC: two legs, their dialogs, the SDP on each, and
//! the media relay between them.

use super::numbers::{to_e164, to_national};
use super::{Sbc, SBC_AGENT, SBC_ALLOW};
use crate::media::{MediaRelay, RelayLeg, RelayPlan, RelayStats, SrtpKey};
use crate::sip::dialog::Dialog;
use crate::sip::sdp::offer_answer::{agreed, Agreed, Codec, LocalMedia};
use crate::sip::sdp::{Origin, SessionDescription};
use crate::sip::transaction::{response_to, TransactionKey};
use crate::sip::transport::tls::names_cover;
use crate::sip::transport::{Network, Source, Target, TransportKind};
use crate::sip::wire::{Message, Method, NameAddr, Uri};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Carrier → Teams.
    Inbound,
    /// Teams → carrier.
    Outbound,
}

/// Our side of one leg.
struct Leg {
    key: TransactionKey,
    invite: Message,
    tag: String,
    contact: String,
    target: Target,
    media: LocalMedia,
    dialog: Option<Dialog>,
}

pub(crate) struct Call {
    direction: Direction,
    /// The leg that called us (we are its UAS).
    a: Leg,
    a_offer: SessionDescription,
    /// The leg we called (we are its UAC).
    b: Leg,
    b_offer: SessionDescription,
    /// Hub proxies still to try for an inbound call.
    fallback_hubs: Vec<String>,
    plan: Option<watch::Sender<Option<RelayPlan>>>,
    answered: bool,
    /// Provisional codes already passed to leg a.
    progress_sent: Vec<u16>,
    /// The answer leg a was given (in a 183 or the 200): it does not change.
    a_answer: Option<SessionDescription>,
    ended: bool,
}

/// Why an INVITE is refused, and what leg a is answered.
struct Rejection {
    code: u16,
    reason: &'static str,
    why: String,
}

impl Rejection {
    fn not_acceptable(why: String) -> Self {
        Rejection {
            code: 488,
            reason: "Not Acceptable Here",
            why,
        }
    }

    fn unavailable(why: String) -> Self {
        Rejection {
            code: 503,
            reason: "Service Unavailable",
            why,
        }
    }
}

/// Codecs the SBC relays without transcoding.
fn relayable(offer: &SessionDescription) -> Vec<Codec> {
    let Some(m) = offer
        .media
        .iter()
        .find(|m| m.kind == "audio" && m.port != 0)
    else {
        return Vec::new();
    };
    m.formats
        .iter()
        .filter_map(|pt| {
            let name = m.encoding(*pt)?;
            let known = ["PCMU", "PCMA", "telephone-event"]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&name));
            known.then(|| Codec::new(*pt, &name, 8000))
        })
        .collect()
}

fn uri_user(text: &str) -> String {
    Uri::parse(text)
        .ok()
        .and_then(|u| u.user().map(str::to_string))
        .unwrap_or_default()
}

fn sdp_of(m: &Message) -> Result<SessionDescription, String> {
    if m.body.is_empty() {
        return Err("no SDP".into());
    }
    SessionDescription::parse(&String::from_utf8_lossy(&m.body)).map_err(|e| e.to_string())
}

fn relay_leg(a: &Agreed) -> Option<RelayLeg> {
    let (tx_key, rx_key) = crate::media::srtp::agreed_keys(a);
    Some(RelayLeg {
        remote: a.remote_socket()?,
        tx_key,
        rx_key,
    })
}

impl<N: Network> Sbc<N> {
    fn origin(&mut self) -> Origin {
        Origin {
            username: "drlab-sbc".into(),
            session_id: self.endpoint.rng.next_u32() as u64,
            session_version: 1,
            address: self.ip.to_string(),
        }
    }

    fn leg_media(&mut self, port: u16, teams: bool, codecs: Vec<Codec>) -> LocalMedia {
        let srtp_key = teams.then(|| SrtpKey::generate(&mut self.endpoint.rng).inline());
        LocalMedia {
            address: self.ip.to_string(),
            port,
            codecs,
            srtp_key,
            rtcp_mux: teams,
            ice: None,
        }
    }

    fn reject(
        &mut self,
        key: &TransactionKey,
        request: &Message,
        code: u16,
        reason: &str,
        why: String,
    ) {
        self.problem(format!("rejected {} with {code}: {why}", request.summary()));
        let resp = response_to(request, code, reason, Some(&self.endpoint.rng.tag()));
        self.endpoint.respond(key, resp);
    }

    /// A new INVITE: from the carrier (inbound) or from the hub (outbound).
    pub(crate) async fn on_invite(
        &mut self,
        key: TransactionKey,
        request: Message,
        source: Source,
    ) {
        if let Err(r) = self.set_up(key.clone(), request.clone(), source).await {
            self.reject(&key, &request, r.code, r.reason, r.why);
        }
    }

    /// Check the INVITE, call leg b and start the relay; a rejection says
    /// what to answer leg a.
    async fn set_up(
        &mut self,
        key: TransactionKey,
        request: Message,
        source: Source,
    ) -> Result<(), Rejection> {
        let (direction, offer, codecs) = self.admit(&request, &source)?;
        let from_hub = direction == Direction::Outbound;
        let (a_port, b_port) = self.allocate_ports();
        let a_media = self.leg_media(a_port, from_hub, codecs.clone());
        let b_media = self.leg_media(b_port, !from_hub, codecs);
        // Check now that leg a's offer can be answered at all, before calling leg b.
        let dry_origin = self.origin();
        a_media
            .answer(&offer, dry_origin)
            .map_err(|e| Rejection::not_acceptable(e.to_string()))?;
        let (mut b_invite, b_target, b_contact, fallback_hubs) =
            self.b_leg_request(direction, &request).await?;
        let origin = self.origin();
        let b_offer = b_media.offer(origin);
        b_invite.set_body("application/sdp", b_offer.to_text().into_bytes());
        let b_key = self
            .endpoint
            .send_request(b_invite.clone(), b_target.clone())
            .map_err(|e| Rejection {
                code: 500,
                reason: "Server Internal Error",
                why: e.to_string(),
            })?;
        let a_target = self
            .a_leg_target(direction, &request)
            .await
            .map_err(Rejection::unavailable)?;
        let a_contact = match direction {
            Direction::Inbound => format!(
                "<sip:{}:{}>",
                self.config.fqdn, self.config.carrier_listen_port
            ),
            Direction::Outbound => format!(
                "<sip:{}@{}:{};transport=tls>",
                uri_user(request.request_uri().unwrap_or_default()),
                self.config.fqdn,
                self.config.tls_listen_port
            ),
        };
        let (plan_tx, plan_rx) = watch::channel(None);
        let stats = Arc::new(Mutex::new(RelayStats::default()));
        let any = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        tokio::spawn(MediaRelay::run(
            self.net.clone(),
            SocketAddr::new(any, a_port),
            SocketAddr::new(any, b_port),
            plan_rx,
            stats.clone(),
        ));
        {
            let mut v = self.view();
            v.calls_started += 1;
            v.relays.push(stats);
        }
        let a_tag = self.endpoint.rng.tag();
        self.calls.push(Call {
            direction,
            a: Leg {
                key,
                invite: request,
                tag: a_tag,
                contact: a_contact,
                target: a_target,
                media: a_media,
                dialog: None,
            },
            a_offer: offer,
            b: Leg {
                key: b_key,
                invite: b_invite,
                tag: String::new(),
                contact: b_contact,
                target: b_target,
                media: b_media,
                dialog: None,
            },
            b_offer,
            fallback_hubs,
            plan: Some(plan_tx),
            answered: false,
            progress_sent: Vec::new(),
            a_answer: None,
            ended: false,
        });
        Ok(())
    }

    /// Which way the call goes, its offer and the codecs it can be relayed with.
    fn admit(
        &self,
        request: &Message,
        source: &Source,
    ) -> Result<(Direction, SessionDescription, Vec<Codec>), Rejection> {
        if self.calls.iter().any(|c| {
            c.a.dialog
                .as_ref()
                .or(c.b.dialog.as_ref())
                .is_some_and(|d| d.matches(request))
        }) {
            // Re-INVITEs (hold, session refresh) are not relayed yet.
            return Err(Rejection::not_acceptable(
                "re-INVITE not supported yet".into(),
            ));
        }
        let from_hub = source.transport == TransportKind::Tls;
        if from_hub
            && !self
                .config
                .hub_fqdns
                .iter()
                .any(|h| names_cover(&source.peer_names, h))
        {
            let why = format!("TLS peer {:?} is not a hub proxy", source.peer_names);
            return Err(Rejection {
                code: 403,
                reason: "Forbidden",
                why,
            });
        }
        let offer = sdp_of(request).map_err(Rejection::not_acceptable)?;
        let codecs = relayable(&offer);
        if !codecs.iter().any(|c| c.name != "telephone-event") {
            return Err(Rejection::not_acceptable(
                "no codec the SBC relays (PCMU, PCMA)".into(),
            ));
        }
        let direction = if from_hub {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        Ok((direction, offer, codecs))
    }

    /// Leg b's INVITE (without SDP), where it goes, our Contact on it, and
    /// the hub proxies left for failover.
    async fn b_leg_request(
        &mut self,
        direction: Direction,
        request: &Message,
    ) -> Result<(Message, Target, String, Vec<String>), Rejection> {
        let cc = self.config.country_code.clone();
        let called = uri_user(request.request_uri().unwrap_or_default());
        let calling = request
            .from_header()
            .ok()
            .map(|f| uri_user(&f.uri))
            .unwrap_or_default();
        match direction {
            Direction::Inbound => {
                let incomplete = |e: super::numbers::BadNumber| Rejection {
                    code: 484,
                    reason: "Address Incomplete",
                    why: e.to_string(),
                };
                let called = to_e164(&called, &cc).map_err(incomplete)?;
                let calling = to_e164(&calling, &cc).map_err(incomplete)?;
                let hubs = self.config.hub_fqdns.clone();
                let (first, rest) = hubs
                    .split_first()
                    .ok_or_else(|| Rejection::unavailable("no hub configured".into()))?;
                let target = self
                    .hub_target(first)
                    .await
                    .map_err(|e| Rejection::unavailable(e.to_string()))?;
                let (m, contact) = self.teams_invite(first, &called, &calling);
                Ok((m, target, contact, rest.to_vec()))
            }
            Direction::Outbound => {
                let addr = self
                    .net
                    .resolve(&self.config.carrier_host, self.config.carrier_port)
                    .await
                    .map_err(|e| Rejection::unavailable(e.to_string()))?;
                let target = Target {
                    transport: TransportKind::Udp,
                    addr,
                    server_name: None,
                };
                let (m, contact) =
                    self.carrier_invite(&to_national(&called, &cc), &to_national(&calling, &cc));
                Ok((m, target, contact, Vec::new()))
            }
        }
    }

    /// Where in-dialog requests to leg a go: the carrier's address, or the
    /// hub proxy in the top Record-Route of its INVITE (behaviour §3.1).
    async fn a_leg_target(&self, direction: Direction, invite: &Message) -> Result<Target, String> {
        match direction {
            Direction::Inbound => {
                let addr = self
                    .net
                    .resolve(&self.config.carrier_host, self.config.carrier_port)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Target {
                    transport: TransportKind::Udp,
                    addr,
                    server_name: None,
                })
            }
            Direction::Outbound => {
                let rr_host = invite
                    .headers
                    .values("Record-Route")
                    .next()
                    .and_then(|rr| NameAddr::parse("Record-Route", rr).ok())
                    .and_then(|na| na.parsed_uri().ok())
                    .and_then(|u| u.host());
                let host = rr_host
                    .or_else(|| self.config.hub_fqdns.first().cloned())
                    .ok_or("no hub")?;
                self.hub_target(&host).await.map_err(|e| e.to_string())
            }
        }
    }

    /// The INVITE toward a hub proxy: E.164 with `user=phone`, the SBC FQDN
    /// in Contact (the hub checks it against the certificate, §3.1).
    fn teams_invite(&mut self, hub: &str, called: &str, calling: &str) -> (Message, String) {
        let fqdn = self.config.fqdn.clone();
        let port = self.config.tls_listen_port;
        let contact = format!("<sip:{calling}@{fqdn}:{port};transport=tls>");
        let mut m = Message::request(
            Method::Invite,
            format!("sip:{called}@{hub}:{};user=phone", self.config.hub_port),
        );
        m.headers.push("Max-Forwards", "70");
        m.headers.push(
            "From",
            format!(
                "<sip:{calling}@{fqdn}:{port};user=phone>;tag={}",
                self.endpoint.rng.tag()
            ),
        );
        m.headers.push(
            "To",
            format!("<sip:{called}@{hub}:{};user=phone>", self.config.hub_port),
        );
        m.headers.push("Call-ID", self.endpoint.rng.call_id(&fqdn));
        m.headers.push("CSeq", "1 INVITE");
        m.headers.push("Contact", contact.clone());
        m.headers.push("Allow", SBC_ALLOW);
        m.headers.push("X-MS-SBC", SBC_AGENT);
        (m, contact)
    }

    fn carrier_invite(&mut self, called: &str, calling: &str) -> (Message, String) {
        let fqdn = self.config.fqdn.clone();
        let contact = format!("<sip:{calling}@{fqdn}:{}>", self.config.carrier_listen_port);
        let carrier = format!("{}:{}", self.config.carrier_host, self.config.carrier_port);
        let mut m = Message::request(Method::Invite, format!("sip:{called}@{carrier}"));
        m.headers.push("Max-Forwards", "70");
        m.headers.push(
            "From",
            format!("<sip:{calling}@{fqdn}>;tag={}", self.endpoint.rng.tag()),
        );
        m.headers.push("To", format!("<sip:{called}@{carrier}>"));
        m.headers.push("Call-ID", self.endpoint.rng.call_id(&fqdn));
        m.headers.push("CSeq", "1 INVITE");
        m.headers.push("Contact", contact.clone());
        m.headers.push("Allow", SBC_ALLOW);
        (m, contact)
    }

    pub(crate) async fn on_response(&mut self, key: TransactionKey, response: Message) {
        let Some(idx) = self.calls.iter().position(|c| c.b.key == key) else {
            return;
        };
        let code = response.status().unwrap_or(0);
        match code {
            100 => {}
            101..=199 => {
                let c = &mut self.calls[idx];
                // Forked calls ring from every fork (a 180 per To-tag): leg a hears
                // each kind of progress once (behaviour §6: many SBCs forward only
                // the first 18x, since some PSTN networks stop ringback on repeats).
                if c.ended || c.answered || c.progress_sent.contains(&code) {
                    return;
                }
                c.progress_sent.push(code);
                if !response.body.is_empty() {
                    return self.on_early_media(idx, &response);
                }
                let c = &self.calls[idx];
                // Early media is not relayed yet: pass the progress without SDP.
                let mut p = response_to(
                    &c.a.invite,
                    code,
                    response.summary().split_once(' ').map_or("", |x| x.1),
                    Some(&c.a.tag),
                );
                p.headers.push("Contact", c.a.contact.clone());
                let k = c.a.key.clone();
                self.endpoint.respond(&k, p);
            }
            200..=299 => self.on_answer(idx, &response),
            _ => {
                if [408, 503, 504].contains(&code) && self.try_next_hub(idx).await {
                    return;
                }
                let c = &self.calls[idx];
                if c.ended || c.answered {
                    return;
                }
                let reason = response
                    .summary()
                    .split_once(' ')
                    .map_or(String::new(), |x| x.1.to_string());
                let resp = response_to(&c.a.invite, code, &reason, Some(&c.a.tag));
                let k = c.a.key.clone();
                self.endpoint.respond(&k, resp);
                self.end(idx);
            }
        }
    }

    /// Leg a's answer for leg b's SDP in `response` (the codec leg b chose;
    /// no transcoding), and the relay plan. Once leg a has had an answer
    /// (in a 183), it keeps it: RFC 3261 §13.2.1 allows one answer per offer.
    fn answer_leg_a(
        &mut self,
        idx: usize,
        response: &Message,
    ) -> Result<(SessionDescription, Option<RelayPlan>), String> {
        let b_answer =
            sdp_of(response).map_err(|e| format!("leg b answered without usable SDP: {e}"))?;
        let call = &self.calls[idx];
        let b_agreed = agreed(&call.b_offer, &b_answer)
            .ok_or("leg b answer shares no codec with our offer")?;
        let a_answer = match &call.a_answer {
            Some(a) => a.clone(),
            None => {
                let mut a_media = call.a.media.clone();
                a_media.codecs.retain(|c| {
                    c.name.eq_ignore_ascii_case(&b_agreed.codec.name) || c.name == "telephone-event"
                });
                let origin = Origin {
                    username: "drlab-sbc".into(),
                    session_id: self.endpoint.rng.next_u32() as u64,
                    session_version: 1,
                    address: self.ip.to_string(),
                };
                let call = &self.calls[idx];
                a_media
                    .answer(&call.a_offer, origin)
                    .map_err(|e| format!("cannot answer leg a: {e}"))?
            }
        };
        let call = &mut self.calls[idx];
        call.a_answer = Some(a_answer.clone());
        let plan = agreed(&a_answer, &call.a_offer).and_then(|a| {
            Some(RelayPlan {
                a: relay_leg(&a)?,
                b: relay_leg(&b_agreed)?,
            })
        });
        Ok((a_answer, plan))
    }

    /// A 183 with SDP from leg b: early media (the hub's ringback or
    /// announcements). Leg a gets a 183 with its answer and the relay starts.
    fn on_early_media(&mut self, idx: usize, response: &Message) {
        let (a_answer, plan) = match self.answer_leg_a(idx, response) {
            Ok(x) => x,
            Err(e) => return self.problem(e),
        };
        let c = &self.calls[idx];
        let mut p = response_to(&c.a.invite, 183, "Session Progress", Some(&c.a.tag));
        p.headers.push("Contact", c.a.contact.clone());
        p.set_body("application/sdp", a_answer.to_text().into_bytes());
        let k = c.a.key.clone();
        self.endpoint.respond(&k, p);
        if let (Some(p), Some(tx)) = (plan, &self.calls[idx].plan) {
            let _ = tx.send(Some(p));
        }
    }

    fn on_answer(&mut self, idx: usize, response: &Message) {
        let call = &self.calls[idx];
        let b_dialog = match &call.b.dialog {
            Some(d) => d.clone(),
            None => match Dialog::as_uac(
                &call.b.invite,
                response,
                call.b.contact.clone(),
                call.b.target.clone(),
            ) {
                Ok(d) => d,
                Err(e) => return self.problem(format!("200 OK on leg b unusable: {e}")),
            },
        };
        // ACK every 2xx, the retransmitted ones too (RFC 3261 §13.2.2.4).
        let seq = call.b.invite.cseq().map(|c| c.seq).unwrap_or(1);
        self.endpoint
            .send_ack(b_dialog.ack(seq), b_dialog.target.clone());
        if call.answered || call.ended {
            return;
        }
        let (a_answer, plan) = match self.answer_leg_a(idx, response) {
            Ok(x) => x,
            Err(e) => return self.problem(e),
        };
        let call = &self.calls[idx];
        let mut ok = response_to(&call.a.invite, 200, "OK", Some(&call.a.tag));
        ok.headers.push("Contact", call.a.contact.clone());
        ok.headers.push("Allow", SBC_ALLOW);
        ok.set_body("application/sdp", a_answer.to_text().into_bytes());
        let a_dialog = Dialog::as_uas(
            &call.a.invite,
            &call.a.tag,
            call.a.contact.clone(),
            call.a.target.clone(),
        );
        let k = call.a.key.clone();
        self.endpoint.respond(&k, ok);
        let call = &mut self.calls[idx];
        call.b.dialog = Some(b_dialog);
        call.answered = true;
        match a_dialog {
            Ok(d) => call.a.dialog = Some(d),
            Err(e) => {
                let line = format!("leg a dialog: {e}");
                self.problem(line);
            }
        }
        let call = &mut self.calls[idx];
        match (plan, &call.plan) {
            (Some(p), Some(tx)) => {
                let _ = tx.send(Some(p));
            }
            _ => self.problem("no relay plan: an SDP address is not an IP".into()),
        }
    }

    /// Fail an inbound INVITE over to the next hub proxy. `false` when none is left.
    async fn try_next_hub(&mut self, idx: usize) -> bool {
        let call = &mut self.calls[idx];
        if call.direction != Direction::Inbound
            || call.answered
            || call.ended
            || call.fallback_hubs.is_empty()
        {
            return false;
        }
        let hub = call.fallback_hubs.remove(0);
        let Ok(target) = self.hub_target(&hub).await else {
            return false;
        };
        let call = &self.calls[idx];
        let called = uri_user(call.b.invite.request_uri().unwrap_or_default());
        let calling = call
            .b
            .invite
            .from_header()
            .ok()
            .map(|f| uri_user(&f.uri))
            .unwrap_or_default();
        let body = call.b.invite.body.clone();
        let (mut m, contact) = self.teams_invite(&hub, &called, &calling);
        m.set_body("application/sdp", body);
        match self.endpoint.send_request(m.clone(), target.clone()) {
            Ok(key) => {
                let call = &mut self.calls[idx];
                call.b.key = key;
                call.b.invite = m;
                call.b.contact = contact;
                call.b.target = target;
                true
            }
            Err(_) => false,
        }
    }

    pub(crate) async fn on_leg_failure(&mut self, key: TransactionKey, code: u16, reason: &str) {
        let Some(idx) = self.calls.iter().position(|c| c.b.key == key) else {
            return;
        };
        if self.try_next_hub(idx).await {
            return;
        }
        let c = &self.calls[idx];
        if c.answered || c.ended {
            return;
        }
        let resp = response_to(&c.a.invite, code, reason, Some(&c.a.tag));
        let k = c.a.key.clone();
        self.endpoint.respond(&k, resp);
        self.end(idx);
    }

    pub(crate) fn on_cancelled(&mut self, key: TransactionKey) {
        let Some(idx) = self.calls.iter().position(|c| c.a.key == key && !c.ended) else {
            return;
        };
        let c = &self.calls[idx];
        let resp = response_to(&c.a.invite, 487, "Request Terminated", Some(&c.a.tag));
        let b_key = c.b.key.clone();
        self.endpoint.respond(&key, resp);
        self.endpoint.send_cancel(&b_key);
        self.end(idx);
    }

    pub(crate) fn on_bye(&mut self, key: TransactionKey, request: Message) {
        let found = self.calls.iter().enumerate().find_map(|(i, c)| {
            if c.ended {
                return None;
            }
            if c.a.dialog.as_ref().is_some_and(|d| d.matches(&request)) {
                Some((i, true))
            } else if c.b.dialog.as_ref().is_some_and(|d| d.matches(&request)) {
                Some((i, false))
            } else {
                None
            }
        });
        let Some((idx, from_a)) = found else {
            let resp = response_to(&request, 481, "Call/Transaction Does Not Exist", None);
            return self.endpoint.respond(&key, resp);
        };
        let ok = response_to(&request, 200, "OK", None);
        self.endpoint.respond(&key, ok);
        let call = &mut self.calls[idx];
        let other = if from_a {
            call.b.dialog.as_mut()
        } else {
            call.a.dialog.as_mut()
        };
        if let Some(d) = other {
            let bye = d.request(Method::Bye);
            let target = d.target.clone();
            let _ = self.endpoint.send_request(bye, target);
        }
        self.end(idx);
    }

    fn end(&mut self, idx: usize) {
        let c = &mut self.calls[idx];
        if !c.ended {
            c.ended = true;
            c.plan = None;
            self.view().calls_ended += 1;
        }
    }
}
