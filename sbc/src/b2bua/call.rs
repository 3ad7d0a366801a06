//! One call through the SBC: its legs (each an INVITE session: leg a the
//! side that called us, then one leg b per destination tried), the SDP on
//! each, and the media relay between them. Policy only: each leg's SIP is
//! its session's.

mod transfer;

/// The calls held, by id, with their timers and setup state indexed.
pub(crate) type Calls = crate::driver::timed::TimedMap<u64, Call>;

impl crate::driver::timed::Timed for Call {
    fn wake(&self) -> Option<Instant> {
        Call::wake(self)
    }
    /// In setup: admission counts these for each new INVITE.
    fn flagged(&self) -> bool {
        self.in_setup()
    }
}

pub(super) use transfer::ReferTarget;

use super::numbers::to_e164;
use super::{Sbc, SbcFault, SBC_AGENT};
use crate::media::ice::Credentials;
use crate::media::silence::SilenceWatch;
use crate::media::{RelayCommand, RelayEvent, RelayLeg, RelayPlan, RelayStats, SrtpKey};
use crate::records::{q850_cause, CallRecord, EndedBy};
use crate::sip::sdp::offer_answer::{agreed, Agreed, Codec, LocalMedia};
use crate::sip::sdp::{Direction as SdpDirection, Origin, SessionDescription};
use crate::sip::session::{
    EndReason, Hop, Reply, RequestBuilder, SessionEvent, SessionId, SessionState,
};
use crate::sip::transport::tls::names_cover;
use crate::sip::transport::{Source, TransportKind};
use crate::sip::ua::UserAgent;
use crate::sip::wire::{Message, Method, Uri};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Carrier → Teams.
    Inbound,
    /// Teams → carrier.
    Outbound,
}

/// One leg: an INVITE session and what we offered or answered on it.
#[derive(Debug)]
struct Leg {
    session: SessionId,
    /// The hub proxy this leg went to (inbound leg b).
    hub: Option<String>,
    /// Our media on this leg (address, port, codecs, SRTP key).
    media: LocalMedia,
}

#[derive(Debug)]
pub(crate) struct Call {
    id: u64,
    direction: Direction,
    /// `legs[0]` is leg a (we are its UAS); later ones are leg b attempts
    /// (we are their UAC), the last one current.
    legs: Vec<Leg>,
    /// Leg a's description (its offer, then any re-INVITE's).
    a_offer: SessionDescription,
    /// Our description on leg b: the offer, the same on every attempt,
    /// then what our re-INVITEs offered.
    b_offer: SessionDescription,
    /// Leg b's description (its answer, then its re-INVITEs' or answers').
    b_answer: Option<SessionDescription>,
    /// Whether leg a's, and leg b's, last description put the call on hold.
    held: (bool, bool),
    /// Where leg b may still go: hub proxies for an inbound call, carrier
    /// gateways (`host:port`) for an outbound one, in the order tried.
    routes_left: Vec<String>,
    /// Milestones for the call record: leg a's INVITE, the first 18x
    /// passed to it, the answer, and how the call ended (the first end).
    started: Instant,
    progress_at: Option<Instant>,
    answered_at: Option<Instant>,
    end: Option<CallEnd>,
    /// The called and calling numbers as leg b writes them.
    called: String,
    calling: Option<String>,
    max_forwards: u32,
    /// Our description on leg a: its answer (in a 183 or the 200: RFC 3261
    /// §13.2.1 allows one answer per offer), then our re-INVITEs'.
    a_answer: Option<SessionDescription>,
    /// Provisional codes already passed to leg a.
    progress_sent: Vec<u16>,
    answered: bool,
    /// Leg b must answer by then, or it is CANCELled (`max_ringing`).
    ring_deadline: Option<Instant>,
    ports: (u16, u16),
    media_open: bool,
    /// The relay is closed (or was never opened): its ports are free.
    media_closed: bool,
    /// The PSTN party in E.164 (the transferee when Teams transfers the
    /// call), `None` when anonymous.
    pstn_party: Option<String>,
    /// Outbound: the caller's asserted number (P-Asserted-Identity, in the
    /// carrier's format) and whether Teams asked for privacy.
    asserted: Option<String>,
    privacy_id: bool,
    /// Outbound: the hub's History-Info, as it came.
    history: Vec<String>,
    /// A transfer the SBC is carrying out for the hub (REFER).
    transfer: Option<transfer::Transfer>,
    /// A hub REFER passed on to the carrier, waiting for its NOTIFYs.
    relayed_refer: Option<transfer::RelayedRefer>,
    /// Inbound: the carrier called a Refer-To back: leg b goes to this
    /// URI with this Referred-By, not to a number.
    teams_target: Option<(String, Option<String>)>,
    /// Teams legs this call has moved off (transferred or replaced), and
    /// failed transfer legs: they end on their own or by `retire_by`.
    retired: Vec<SessionId>,
    /// A retired leg still up then gets our BYE.
    retire_by: Option<Instant>,
    /// A hold or resume the other leg could not take yet (its INVITE, or a
    /// re-INVITE, still in progress: RFC 3261 §14.1): sent when that leg's
    /// transaction ends, or retried at the time given.
    hold_due: Option<HoldDue>,
    /// A hub REFER for the carrier, waiting for the carrier's ACK.
    waiting_refer: Option<transfer::WaitingRefer>,
    /// What the relay has done, and the watch on it once answered: a call
    /// nothing is received on ends (`media_timeout`).
    relay_stats: Arc<Mutex<RelayStats>>,
    media_watch: Option<SilenceWatch>,
}

/// A change of hold waiting for a leg to accept a re-INVITE.
#[derive(Debug, Clone, Copy)]
struct HoldDue {
    to_a: bool,
    retry_at: Instant,
    /// When to give up and say so (the leg never became free).
    give_up_at: Instant,
}

/// How often a waiting hold is retried when no event frees the leg first
/// (a re-INVITE of the peer's whose ACK brings no event of its own).
const HOLD_RETRY: std::time::Duration = std::time::Duration::from_millis(250);
/// How long a hold may wait for its leg: Timer H (64×T1), the longest an
/// INVITE server transaction waits for its ACK.
pub(super) const HOLD_WAIT: std::time::Duration = std::time::Duration::from_secs(32);

impl Call {
    pub(crate) fn wake(&self) -> Option<Instant> {
        [
            self.ring_deadline,
            self.retire_by,
            self.hold_due.map(|h| h.retry_at),
            self.waiting_refer.as_ref().map(|w| w.give_up_at),
            self.media_watch.map(|w| w.next_look()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn a(&self) -> SessionId {
        self.legs[0].session
    }

    /// Leg a not answered yet and nothing ended: the call is being set up.
    fn in_setup(&self) -> bool {
        !self.answered && self.end.is_none()
    }

    fn b(&self) -> Option<SessionId> {
        self.legs.get(1..).and_then(|l| l.last()).map(|l| l.session)
    }

    /// The relay plan the four descriptions give (our own first in each
    /// pair), on hold if either side's last description said so.
    fn relay_plan(&self) -> Option<RelayPlan> {
        let a = agreed(self.a_answer.as_ref()?, &self.a_offer)?;
        let b = agreed(&self.b_offer, self.b_answer.as_ref()?)?;
        let mut plan = RelayPlan {
            a: relay_leg(&a)?,
            b: relay_leg(&b)?,
            hold: self.held.0 || self.held.1,
        };
        plan.a.ice = relay_ice(self.a_answer.as_ref()?, &self.a_offer);
        plan.b.ice = relay_ice(&self.b_offer, self.b_answer.as_ref()?);
        // Answered: only the answering peer's nominations move the media.
        if self.answered {
            plan.a.ice_peer = self.a_offer.audio_ice().map(|(u, _)| u);
            plan.b.ice_peer = self
                .b_answer
                .as_ref()
                .and_then(|b| b.audio_ice())
                .map(|(u, _)| u);
        }

        Some(plan)
    }

    /// Whether leg a is the Teams side (an outbound call came from the hub).
    fn a_is_teams(&self) -> bool {
        self.direction == Direction::Outbound
    }
}

/// How a call ended, for its record.
#[derive(Debug, Clone)]
struct CallEnd {
    at: Instant,
    by: EndedBy,
    code: u16,
    cause: Option<u8>,
}

impl CallEnd {
    /// Leg a (the caller's) or leg b (the callee's) ended for `reason`.
    fn of(now: Instant, caller_leg: bool, answered: bool, reason: &EndReason) -> CallEnd {
        let party = if caller_leg {
            EndedBy::Caller
        } else {
            EndedBy::Callee
        };
        let (by, code, cause) = match reason {
            EndReason::Rejected { code, cause, .. } => {
                let by = if matches!(code, 408 | 500..=599) {
                    EndedBy::Network
                } else {
                    party
                };
                (by, *code, cause.as_deref().and_then(q850_cause))
            }
            EndReason::RemoteBye { reason } => (party, 200, reason.as_deref().and_then(q850_cause)),
            EndReason::Cancelled => (party, 487, None),
            EndReason::Timeout => (EndedBy::Network, 408, None),
            EndReason::TransportError(_) => (EndedBy::Network, 503, None),
            // Our own BYE (a timer of ours, a lost ACK, a dead dialog).
            _ => (EndedBy::Network, if answered { 200 } else { 500 }, None),
        };
        let code = if answered { 200 } else { code };
        CallEnd {
            at: now,
            by,
            code,
            cause,
        }
    }
}

/// Why an INVITE is refused, and what leg a is answered.
struct Rejection {
    code: u16,
    reason: &'static str,
    why: String,
    retry_after: Option<u32>,
}

impl Rejection {
    fn new(code: u16, reason: &'static str, why: impl Into<String>) -> Self {
        Rejection {
            code,
            reason,
            why: why.into(),
            retry_after: None,
        }
    }

    /// 503 with Retry-After: the SBC is full, not broken (RFC 3261 §21.5.4).
    fn busy(retry_after: u32, why: impl Into<String>) -> Self {
        Rejection {
            retry_after: Some(retry_after),
            ..Rejection::new(503, "Service Unavailable", why)
        }
    }
}

/// The fault [`SbcFault::PlainRtpToTeams`]: the same answer as RTP/AVP
/// without its crypto lines.
fn plain_rtp(mut sd: SessionDescription) -> SessionDescription {
    for m in &mut sd.media {
        m.proto = "RTP/AVP".into();
        m.crypto.clear();
    }
    sd
}

/// The payload type the SBC offers Teams for telephone-event: what Teams
/// itself offers (its SDP lists `101 telephone-event/8000`).
const TEAMS_TELEPHONE_EVENT: u8 = 101;

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

/// The prefix of the user part of a Refer-To of ours standing for the
/// hub's (`TransferMode::Carrier`): the carrier calls it back.
pub(crate) const REFER_TOKEN: &str = "xfer-";

fn uri_user(text: &str) -> String {
    Uri::parse(text)
        .ok()
        .and_then(|u| u.user().map(str::to_string))
        .unwrap_or_default()
}

/// Whether a request asks for its caller's identity to be withheld (RFC
/// 3323 §4.2: `id`, `user` or `header` privacy).
fn withheld(request: &Message) -> bool {
    request.headers.values("Privacy").any(|p| {
        p.split(';').any(|x| {
            let x = x.trim();
            ["id", "user", "header"]
                .iter()
                .any(|v| x.eq_ignore_ascii_case(v))
        })
    })
}

/// Whether a From names no one: `anonymous` as user or the RFC 3323
/// `anonymous.invalid` host.
fn is_anonymous(from: &Message) -> bool {
    let Ok(f) = from.from_header() else {
        return false;
    };
    let Ok(u) = f.parsed_uri() else { return false };
    u.user()
        .is_some_and(|x| x.eq_ignore_ascii_case("anonymous"))
        || u.host()
            .is_some_and(|h| h.eq_ignore_ascii_case("anonymous.invalid"))
}

fn sdp_of(m: &Message) -> Result<SessionDescription, String> {
    if m.body.is_empty() {
        return Err("no SDP (delayed offer is not relayed)".into());
    }
    SessionDescription::parse(&String::from_utf8_lossy(&m.body)).map_err(|e| e.to_string())
}

fn relay_leg(a: &Agreed) -> Option<RelayLeg> {
    RelayLeg::from_agreed(a)
}

/// Our ICE-lite credentials on a leg (media bypass toward Teams), for the
/// relay to answer checks with from the moment its ports open.
fn ice_credentials(media: &LocalMedia) -> Option<Credentials> {
    let ice = media.ice.as_ref()?;
    Some(Credentials {
        ufrag: ice.ufrag.clone(),
        pwd: ice.pwd.clone(),
    })
}

/// The credentials the relay's ICE-lite agent uses on a leg: ours (`ours`)
/// when both descriptions speak ICE; none when the peer does not (RFC
/// 8839 §4: ICE is used only when both sides signal it), so a peer
/// without ICE gets media as its SDP says.
pub(super) fn relay_ice(
    ours: &SessionDescription,
    theirs: &SessionDescription,
) -> Option<Credentials> {
    Credentials::of(theirs)?;
    Credentials::of(ours)
}

/// The final answer for leg a when leg b failed with `reason`: the same
/// status, and the far end's `Reason` header passed on (RFC 3326 §2: a
/// gateway's Q.850 cause is what the Teams client shows; the hub maps it).
fn reply_for(reason: &EndReason) -> Reply {
    let (code, text) = match code_for(reason) {
        // A challenge we could not answer was meant for us, not for the
        // caller, and cannot be passed on without its header (RFC 3261
        // §21.4.2, §21.4.8): the trunk is unavailable to this call.
        (401 | 407, _) => (503, "Service Unavailable".to_string()),
        other => other,
    };
    let reply = Reply::new(code, &text);
    match reason {
        EndReason::Rejected {
            cause: Some(cause), ..
        } => reply.header("Reason", cause.clone()),
        _ => reply,
    }
}

fn code_for(reason: &EndReason) -> (u16, String) {
    match reason {
        EndReason::Rejected { code, reason, .. } => (*code, reason.clone()),
        EndReason::Timeout => (408, "Request Timeout".into()),
        EndReason::TransportError(_) => (503, "Service Unavailable".into()),
        EndReason::Cancelled => (487, "Request Terminated".into()),
        _ => (500, "Server Internal Error".into()),
    }
}

impl Sbc {
    fn origin(&self, ua: &mut UserAgent) -> Origin {
        Origin {
            username: "drlab-sbc".into(),
            session_id: ua.rng().next_u32() as u64,
            session_version: 1,
            address: self.ip.to_string(),
        }
    }

    fn leg_media(
        &self,
        ua: &mut UserAgent,
        port: u16,
        teams: bool,
        codecs: Vec<Codec>,
    ) -> LocalMedia {
        let srtp_key = teams.then(|| SrtpKey::generate(ua.rng()).inline());
        // Media bypass: ICE-lite toward Teams with credentials drawn once
        // per call, so every 18x, the 200 and later answers carry the same
        // ones (case 9.57).
        let ice =
            (teams && self.config.media_bypass).then(|| Credentials::generate(ua.rng()).sdp(true));
        LocalMedia {
            address: self.ip.to_string(),
            port,
            codecs,
            srtp_key,
            rtcp_mux: teams,
            ice,
        }
    }

    /// Our Contact on leg a / toward the carrier: the carrier reaches us by
    /// address; toward the hub: the FQDN (the hub checks it, behaviour §3.1).
    fn carrier_contact(&self, user: Option<&str>) -> String {
        let at = user.map(|u| format!("{u}@")).unwrap_or_default();
        format!("<sip:{at}{}:{}>", self.ip, self.config.carrier_listen_port)
    }

    fn teams_contact(&self, user: Option<&str>) -> String {
        let at = user.map(|u| format!("{u}@")).unwrap_or_default();
        format!(
            "<sip:{at}{}:{};transport=tls>",
            self.config.fqdn, self.config.tls_listen_port
        )
    }

    pub(crate) fn on_session(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        id: SessionId,
        event: SessionEvent,
    ) {
        if let SessionEvent::Incoming {
            request, source, ..
        } = event
        {
            return self.on_invite(now, ua, id, request, source);
        }
        let Some(&call_id) = self.by_session.get(&id) else {
            return;
        };
        // A transfer's new leg, or a Teams leg the call has moved off.
        let Some(event) = self.on_side_leg(now, ua, call_id, id, event) else {
            return;
        };
        let is_a = self.calls.get(&call_id).is_some_and(|c| c.a() == id);
        match event {
            SessionEvent::Incoming { .. } => {}
            SessionEvent::Progress { response, sdp } if !is_a => {
                self.on_progress(now, ua, call_id, id, &response, sdp)
            }
            SessionEvent::Answered { sdp, .. } if !is_a => {
                self.on_answer(now, ua, call_id, id, sdp)
            }
            SessionEvent::Ended { reason } => self.on_leg_ended(now, ua, call_id, id, is_a, reason),
            SessionEvent::ReInvite { offer, .. } => {
                self.on_reinvite(now, ua, call_id, id, is_a, offer)
            }
            SessionEvent::ReInviteDone { result } => {
                self.on_reinvite_done(call_id, is_a, result);
                self.hold_when_free(now, ua, call_id, is_a);
            }
            // The ACK for our 2xx: the leg takes re-INVITEs and REFERs now.
            SessionEvent::Confirmed => {
                self.hold_when_free(now, ua, call_id, is_a);
                self.send_waiting_refer(now, ua, call_id, Some(id));
            }
            SessionEvent::Request { key, request } if request.method() == Some(&Method::Refer) => {
                self.on_refer(now, ua, call_id, id, key, &request)
            }
            SessionEvent::Request { key, request }
                if request.method() == Some(&Method::Notify)
                    && self.calls.get(&call_id).is_some_and(|c| {
                        c.relayed_refer.is_some() && c.teams_leg() != Some(id)
                    }) =>
            {
                self.relay_notify(now, ua, call_id, id, key, &request)
            }
            SessionEvent::Response {
                key,
                code,
                response,
            } => self.on_carrier_refer_answer(now, ua, call_id, &key, code, response.as_ref()),
            SessionEvent::Request { key, request } => {
                // NOTIFY outside a subscription of ours: RFC 6665 §4.1.3.
                let reply = if request.method() == Some(&Method::Notify) {
                    Reply::new(481, "Subscription Does Not Exist")
                } else {
                    Reply::new(501, "Not Implemented").header("Allow", self.allow())
                };
                let _ = ua.respond_in_dialog(now, id, key, &request, reply);
            }
            _ => {}
        }
    }

    /// A new INVITE: from the carrier (inbound) or from the hub (outbound).
    fn on_invite(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        id: SessionId,
        request: Message,
        source: Source,
    ) {
        if request.headers.contains("Replaces") {
            return self.on_replaces(now, ua, id, &request, &source);
        }
        if let Err(r) = self.set_up(now, ua, id, &request, &source) {
            self.problem(
                "rejected",
                format!("rejected {} with {}: {}", request.summary(), r.code, r.why),
            );
            let mut reply = Reply::new(r.code, r.reason);
            if let Some(secs) = r.retry_after {
                reply = reply.header("Retry-After", secs.to_string());
            }
            let _ = ua.reject(now, id, reply);
        }
    }

    /// Which way the call goes, its offer and the codecs it can be relayed
    /// with, or why it is refused.
    fn admit(
        &self,
        request: &Message,
        source: &Source,
    ) -> Result<(Direction, SessionDescription, Vec<Codec>, u32), Rejection> {
        let from_hub = source.transport == TransportKind::Tls;
        if from_hub
            && !self
                .config
                .hub_fqdns
                .iter()
                .any(|h| names_cover(&source.peer_names, h))
        {
            let why = format!("TLS peer {:?} is not a hub proxy", source.peer_names);
            return Err(Rejection::new(403, "Forbidden", why));
        }
        // The carrier-side ACL (static-IP peering): only the carrier's
        // gateways may place calls; nothing from elsewhere is routed.
        let ip = source.remote.ip();
        if !from_hub && !self.carrier_ips.contains(&ip) {
            let why = format!("source {ip} is not a carrier gateway (ACL)");
            return Err(Rejection::new(403, "Forbidden", why));
        }
        // Admission: the calls held keep their resources; a new one waits.
        // With several SIP cores, the limits are the SBC's: all cores' calls.
        let limits = &self.config.limits;
        let (others, others_in_setup) = self.other_cores();
        let held = self.calls.len() + others;
        if held >= limits.max_calls {
            let why = format!("{held} calls held (max_calls)");
            return Err(Rejection::busy(limits.retry_after_secs, why));
        }
        let in_setup = self.calls.flagged() + others_in_setup;
        if in_setup >= limits.max_calls_in_setup {
            let why = format!("{in_setup} calls in setup (max_calls_in_setup)");
            return Err(Rejection::busy(limits.retry_after_secs, why));
        }
        // RFC 3261 §16.3 step 3 (a B2BUA forwards like a proxy here): a
        // request that may not be forwarded again gets 483.
        let max_forwards = match request.max_forwards() {
            Ok(Some(0)) => return Err(Rejection::new(483, "Too Many Hops", "Max-Forwards is 0")),
            Ok(Some(n)) => n.min(70) - 1,
            Ok(None) => 69,
            Err(e) => return Err(Rejection::new(400, "Bad Request", e.to_string())),
        };
        let offer = sdp_of(request).map_err(|e| Rejection::new(488, "Not Acceptable Here", e))?;
        let codecs = relayable(&offer);
        if !codecs.iter().any(|c| c.name != "telephone-event") {
            return Err(Rejection::new(
                488,
                "Not Acceptable Here",
                "no codec the SBC relays (PCMU, PCMA)",
            ));
        }
        let direction = if from_hub {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        Ok((direction, offer, codecs, max_forwards))
    }

    /// Check the INVITE, open the relay and call leg b.
    fn set_up(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        a: SessionId,
        request: &Message,
        source: &Source,
    ) -> Result<(), Rejection> {
        let (direction, offer, codecs, max_forwards) = self.admit(request, source)?;
        let from_hub = direction == Direction::Outbound;
        let cc = self.config.country_code.clone();
        let called_raw = uri_user(request.request_uri().unwrap_or_default());
        let calling_raw = request
            .from_header()
            .ok()
            .map(|f| uri_user(&f.uri))
            .unwrap_or_default();
        // A carrier's caller who withholds the number (RFC 3323 `Privacy:
        // id`, `user` or `header`) reaches Teams as anonymous: the SBC is
        // the privacy service at the edge of the carrier's trust domain.
        let anonymous =
            is_anonymous(request) || (direction == Direction::Inbound && withheld(request));
        let teams_target = match direction {
            Direction::Inbound => self
                .refer_targets
                .remove(&called_raw)
                .map(|t| (t.refer_to, t.referred_by)),
            Direction::Outbound => None,
        };
        let (called, calling) = match direction {
            Direction::Inbound => {
                let incomplete = |e: super::numbers::BadNumber| {
                    Rejection::new(484, "Address Incomplete", e.to_string())
                };
                // The carrier calling back a Refer-To we handed it.
                let called = match &teams_target {
                    Some((uri, _)) => uri_user(uri),
                    None => self
                        .config
                        .number_rules
                        .e164(&called_raw, &cc)
                        .map_err(incomplete)?,
                };
                // An anonymous caller goes through as such: Teams accepts
                // `anonymous@anonymous.invalid` (behaviour §9.55).
                let calling = if anonymous {
                    None
                } else {
                    Some(
                        self.config
                            .number_rules
                            .e164(&calling_raw, &cc)
                            .map_err(incomplete)?,
                    )
                };
                (called, calling)
            }
            Direction::Outbound => (
                self.config.number_rules.carrier(&called_raw, &cc),
                (!anonymous).then(|| self.config.number_rules.carrier(&calling_raw, &cc)),
            ),
        };
        let a_port = self.ports.allocate();
        let b_port = self.ports.allocate();
        let (Some(a_port), Some(b_port)) = (a_port, b_port) else {
            a_port
                .into_iter()
                .chain(b_port)
                .for_each(|p| self.ports.release(p));
            return Err(Rejection::new(
                503,
                "Service Unavailable",
                "no free media ports in the configured range",
            ));
        };
        let a_media = self.leg_media(ua, a_port, from_hub, codecs.clone());
        // Toward Teams, telephone-event is offered as 101 whatever the
        // carrier numbered it: the relay renumbers events between the legs.
        let b_codecs = if from_hub {
            codecs
        } else {
            codecs
                .into_iter()
                // One telephone-event toward Teams: 8 kHz, as PCMU/PCMA.
                .filter(|c| !c.name.eq_ignore_ascii_case("telephone-event") || c.clock_rate == 8000)
                .map(|mut c| {
                    if c.name.eq_ignore_ascii_case("telephone-event") {
                        c.payload_type = TEAMS_TELEPHONE_EVENT;
                    }
                    c
                })
                .collect()
        };
        let b_media = self.leg_media(ua, b_port, !from_hub, b_codecs);
        // Check now that leg a's offer can be answered at all.
        let dry = self.origin(ua);
        if let Err(e) = a_media.answer(&offer, dry) {
            self.ports.release(a_port);
            self.ports.release(b_port);
            return Err(Rejection::new(488, "Not Acceptable Here", e.to_string()));
        }
        let origin = self.origin(ua);
        let b_offer = b_media.offer(origin);
        // Serials unique over the SBC: core i of n numbers i+1, i+1+n, ...
        self.next_call += 1;
        let call_id = (self.next_call - 1) * self.shard.count as u64 + self.shard.index as u64 + 1;
        let stats = Arc::new(Mutex::new(RelayStats::default()));
        let pstn_party = match direction {
            Direction::Inbound => calling.clone(),
            Direction::Outbound => to_e164(&called_raw, &cc).ok(),
        };
        let mut call = Call {
            id: call_id,
            direction,
            legs: vec![Leg {
                session: a,
                hub: None,
                media: a_media,
            }],
            a_offer: offer,
            b_offer,
            b_answer: None,
            held: (false, false),
            routes_left: if from_hub {
                self.gateways_to_try()
            } else {
                self.hubs_to_try(now)
            },
            started: now,
            progress_at: None,
            answered_at: None,
            end: None,
            called,
            calling,
            max_forwards,
            a_answer: None,
            progress_sent: Vec::new(),
            answered: false,
            ring_deadline: Some(now + self.config.max_ringing),
            ports: (a_port, b_port),
            media_open: true,
            media_closed: false,
            pstn_party,
            asserted: (direction == Direction::Outbound)
                .then(|| request.headers.get("P-Asserted-Identity"))
                .flatten()
                .and_then(|v| crate::sip::wire::NameAddr::parse("P-Asserted-Identity", v).ok())
                .map(|na| uri_user(&na.uri))
                .filter(|n| !n.is_empty())
                .map(|n| self.config.number_rules.carrier(&n, &cc)),
            privacy_id: request
                .headers
                .values("Privacy")
                .any(|p| p.split(';').any(|x| x.trim().eq_ignore_ascii_case("id"))),
            history: match direction {
                Direction::Outbound => request
                    .headers
                    .0
                    .iter()
                    .filter(|h| h.is("History-Info"))
                    .map(|h| h.value.clone())
                    .collect(),
                Direction::Inbound => Vec::new(),
            },
            transfer: None,
            relayed_refer: None,
            teams_target,
            retired: Vec::new(),
            retire_by: None,
            hold_due: None,
            waiting_refer: None,
            relay_stats: stats.clone(),
            media_watch: None,
        };
        self.media_out.push_back(RelayCommand::Open {
            id: call_id,
            a: SocketAddr::new(self.ip, a_port),
            b: SocketAddr::new(self.ip, b_port),
            stats: stats.clone(),
            ice: (
                ice_credentials(&call.legs[0].media),
                ice_credentials(&b_media),
            ),
        });
        self.by_session.insert(a, call_id);
        if !self.call_next(now, ua, &mut call, b_media) {
            // Nothing could even be sent: answer at once.
            self.calls.insert(call_id, call);
            self.fail_a(now, ua, call_id, Reply::new(503, "Service Unavailable"));
            return Ok(());
        }
        {
            let mut v = self.view();
            v.calls_started += 1;
            v.relays.push_back(stats);
            if v.relays.len() > 16 {
                v.relays.pop_front();
            }
        }
        self.calls.insert(call_id, call);
        Ok(())
    }

    /// Start a leg b: toward the next hub proxy (inbound) or the carrier
    /// (outbound). `false` when there is nowhere left to send it.
    fn call_next(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call: &mut Call,
        media: LocalMedia,
    ) -> bool {
        loop {
            let (hub, (msg, hop)) = match call.direction {
                Direction::Inbound => {
                    if call.routes_left.is_empty() {
                        return false;
                    }
                    let hub = call.routes_left.remove(0);
                    let invite = self.teams_invite(ua, &hub, call);
                    (Some(hub), invite)
                }
                Direction::Outbound => {
                    if call.routes_left.is_empty() {
                        return false;
                    }
                    let gateway = call.routes_left.remove(0);
                    (None, self.carrier_invite(ua, call, &gateway))
                }
            };
            match ua.invite(now, msg, Some(call.b_offer.clone()), hop) {
                Ok(b) => {
                    self.by_session.insert(b, call.id);
                    call.legs.push(Leg {
                        session: b,
                        hub,
                        media: media.clone(),
                    });
                    return true;
                }
                Err(e) => {
                    self.problem("send", format!("INVITE for call {}: {e}", call.id));
                }
            }
        }
    }

    /// The INVITE toward a hub proxy: E.164 with `user=phone`, the SBC FQDN
    /// in Contact (the hub checks it against the certificate, §3.1).
    fn teams_invite(&self, ua: &mut UserAgent, hub: &str, call: &Call) -> (Message, Hop) {
        let fqdn = &self.config.fqdn;
        let port = self.config.tls_listen_port;
        let hub_port = self.config.hub_port;
        let from = match &call.calling {
            Some(n) => format!("<sip:{n}@{fqdn}:{port};user=phone>"),
            None => "\"Anonymous\" <sip:anonymous@anonymous.invalid>".to_string(),
        };
        let (ruri, to) = match &call.teams_target {
            // A transfer the carrier carries out: the Refer-To, exactly.
            Some((uri, _)) => (uri.clone(), format!("<{uri}>")),
            None => (
                format!("sip:{}@{hub}:{hub_port};user=phone", call.called),
                format!("<sip:{}@{hub}:{hub_port};user=phone>", call.called),
            ),
        };
        let mut b = RequestBuilder::new(Method::Invite, ruri, from, to)
            .max_forwards(call.max_forwards)
            .contact(self.teams_contact(call.calling.as_deref()))
            .header("Allow", self.allow())
            .header("X-MS-SBC", SBC_AGENT);
        if let Some((_, Some(rb))) = &call.teams_target {
            b = b.header("Referred-By", rb.clone());
        }
        if call.calling.is_none() {
            b = b.header("Privacy", "id");
        }
        let hop = Hop::Uri(format!("sip:{hub}:{hub_port};transport=tls"));
        (b.build(ua.rng(), fqdn), hop)
    }

    fn carrier_invite(&self, ua: &mut UserAgent, call: &Call, carrier: &str) -> (Message, Hop) {
        let from = match &call.calling {
            Some(n) => format!("<sip:{n}@{}>", self.config.fqdn),
            None => "\"Anonymous\" <sip:anonymous@anonymous.invalid>".to_string(),
        };
        let mut b = RequestBuilder::new(
            Method::Invite,
            format!("sip:{}@{carrier}", call.called),
            from,
            format!("<sip:{}@{carrier}>", call.called),
        )
        .max_forwards(call.max_forwards)
        .contact(self.carrier_contact(call.calling.as_deref()))
        .header("Allow", self.allow());
        // RFC 3325 §5: the asserted identity goes on only to a trusted
        // carrier; RFC 3323: a hidden caller's privacy goes on regardless.
        if let (true, Some(n)) = (self.config.forward_identity, &call.asserted) {
            b = b.header(
                "P-Asserted-Identity",
                format!("<sip:{n}@{}>", self.config.fqdn),
            );
        }
        if call.privacy_id {
            b = b.header("Privacy", "id");
        }
        if self.config.forward_history {
            for h in &call.history {
                b = b.header("History-Info", h.clone());
            }
        }
        let m = b.build(ua.rng(), &self.config.fqdn);
        (m, Hop::Uri(format!("sip:{carrier}")))
    }

    /// Leg a's Contact (ours), by the side it is on.
    fn a_contact(&self, call: &Call, ua: &UserAgent) -> String {
        let user = ua
            .session(call.a())
            .and_then(|s| s.invite().request_uri().map(uri_user))
            .filter(|u| !u.is_empty());
        match call.direction {
            Direction::Inbound => self.carrier_contact(None),
            Direction::Outbound => self.teams_contact(user.as_deref()),
        }
    }

    fn on_progress(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call_id: u64,
        b: SessionId,
        response: &Message,
        sdp: Option<SessionDescription>,
    ) {
        let code = response.status().unwrap_or(0);
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        // Forked calls ring from every fork (a 180 per To-tag): leg a hears
        // each kind of progress once (behaviour §6: many SBCs forward only
        // the first 18x, since some PSTN networks stop ringback on repeats).
        if call.b() != Some(b) || call.answered || call.progress_sent.contains(&code) {
            return;
        }
        call.progress_sent.push(code);
        call.progress_at.get_or_insert(now);
        let contact = self.a_contact(&self.calls[&call_id], ua);
        let a = self.calls[&call_id].a();
        let reason = response
            .summary()
            .split_once(' ')
            .map_or(String::new(), |x| x.1.to_string());
        let mut reply = Reply::new(code, &reason).header("Contact", contact);
        if let Some(sd) = sdp {
            // A 183 with SDP: early media (the hub's ringback). Leg a gets
            // its answer now and the relay starts.
            match self.answer_leg_a(ua, call_id, &sd) {
                Ok(a_answer) => reply.sdp = Some(a_answer),
                Err(e) => self.problem("media", e),
            }
        }
        let _ = ua.provisional(now, a, 0, reply);
    }

    /// Leg a's answer for leg b's SDP `b_answer` (the codec leg b chose; no
    /// transcoding), and the relay plan it gives.
    fn answer_leg_a(
        &mut self,
        ua: &mut UserAgent,
        call_id: u64,
        b_answer: &SessionDescription,
    ) -> Result<SessionDescription, String> {
        let origin = self.origin(ua);
        let call = self.calls.get_mut(&call_id).ok_or("no call")?;
        let b_agreed =
            agreed(&call.b_offer, b_answer).ok_or("leg b answer shares no codec with our offer")?;
        let a_answer = match &call.a_answer {
            Some(a) => a.clone(),
            None => {
                let mut a_media = call.legs[0].media.clone();
                a_media.codecs.retain(|c| {
                    c.name.eq_ignore_ascii_case(&b_agreed.codec.name) || c.name == "telephone-event"
                });
                a_media
                    .answer(&call.a_offer, origin)
                    .map_err(|e| format!("cannot answer leg a: {e}"))?
            }
        };
        let a_answer = if call.direction == Direction::Outbound
            && self.faults.contains(&SbcFault::PlainRtpToTeams)
        {
            plain_rtp(a_answer)
        } else {
            a_answer
        };
        call.a_answer = Some(a_answer.clone());
        call.b_answer = Some(b_answer.clone());
        match call.relay_plan() {
            Some(plan) => self.media_out.push_back(RelayCommand::Plan {
                id: call_id,
                plan: Box::new(plan),
            }),
            None => return Err("no relay plan: an SDP address is not an IP".into()),
        }
        Ok(a_answer)
    }

    fn on_answer(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call_id: u64,
        b: SessionId,
        sdp: Option<SessionDescription>,
    ) {
        let Some(call) = self.calls.get(&call_id) else {
            return;
        };
        if call.b() != Some(b) || call.answered {
            return;
        }
        let a = call.a();
        let contact = self.a_contact(call, ua);
        let a_answer = match sdp
            .ok_or_else(|| "leg b answered without usable SDP".to_string())
            .and_then(|sd| self.answer_leg_a(ua, call_id, &sd))
        {
            Ok(x) => x,
            Err(e) => {
                self.problem("media", e);
                ua.hang_up(now, b, Reply::new(488, "Not Acceptable Here"), Vec::new());
                return self.fail_a(now, ua, call_id, Reply::new(488, "Not Acceptable Here"));
            }
        };
        let reply = Reply::new(200, "OK")
            .header("Contact", contact)
            .header("Allow", self.allow())
            .sdp(a_answer);
        if let Err(e) = ua.accept(now, a, 0, reply) {
            // Leg a went away meanwhile (CANCEL crossed the answer).
            self.problem("call", format!("call {call_id}: cannot answer leg a: {e}"));
            ua.hang_up(now, b, Reply::new(487, "Request Terminated"), Vec::new());
            return;
        }
        if let Some(c) = self.calls.get_mut(&call_id) {
            c.answered = true;
            c.answered_at = Some(now);
            c.ring_deadline = None;
            c.media_watch = self.config.media_timeout.map(|_| SilenceWatch::new(now));
        }
        // Now answered: the plan names the peer whose ICE nominations count.
        if (self.calls.get(&call_id)).is_some_and(|c| c.legs.iter().any(|l| l.media.ice.is_some()))
        {
            self.push_plan(call_id);
        }
    }

    /// A re-INVITE on either leg (RFC 3261 §14.2, RFC 3264 §8): answered at
    /// once from the leg's own media (same address, port and key, the codec
    /// in use), the direction mirrored. A change of hold goes on to the
    /// other leg in a re-INVITE of ours, always as `a=inactive` (behaviour
    /// §6: the hub "does not understand" sendonly or recvonly and refuses
    /// c=0.0.0.0); while either side holds, the relay passes nothing.
    fn on_reinvite(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call_id: u64,
        id: SessionId,
        is_a: bool,
        offer: Option<SessionDescription>,
    ) {
        let refuse = |ua: &mut UserAgent, why: &str| {
            let reply = Reply::new(488, "Not Acceptable Here")
                .header("Warning", format!("399 drlab-sbc \"{why}\""));
            let _ = ua.reject_reinvite(now, id, reply);
        };
        let Some(call) = self.calls.get(&call_id) else {
            return refuse(ua, "no such call");
        };
        if !call.answered || (!is_a && call.b() != Some(id)) {
            return refuse(ua, "the call is not answered yet");
        }
        let (local, remote, media) = if is_a {
            (
                call.a_answer.clone(),
                Some(call.a_offer.clone()),
                call.legs[0].media.clone(),
            )
        } else {
            let media = call.legs.last().map(|l| l.media.clone());
            let Some(media) = media else {
                return refuse(ua, "no leg b");
            };
            (Some(call.b_offer.clone()), call.b_answer.clone(), media)
        };
        let (Some(local), Some(remote)) = (local, remote) else {
            return refuse(ua, "no description agreed yet");
        };
        let Some(offer) = offer else {
            // Offer-less (RFC 3261 §14.2): our description is the offer; the
            // answer in the ACK changes nothing the relay does.
            let _ = ua.answer_reinvite(now, id, Reply::new(200, "OK").sdp(local));
            return;
        };
        // Keep the codec in use: the relay passes audio through untranscoded.
        let mut media = media;
        if let Some(a) = agreed(&local, &remote) {
            media.codecs.retain(|c| {
                c.name.eq_ignore_ascii_case(&a.codec.name) || c.name == "telephone-event"
            });
        }
        // ICE restart (RFC 8445 §9, RFC 8839 §4.4.1.1.1): an offer with new
        // ice-ufrag/ice-pwd is answered with new credentials of ours; the
        // relay's agent restarts with them (case 9.49: a bypass call moved
        // to a media processor).
        let restart = media.ice.is_some()
            && offer.audio_ice().is_some()
            && offer.audio_ice() != remote.audio_ice()
            && !self.faults.contains(&SbcFault::NoIceRestart);
        if restart {
            media.ice = Some(Credentials::generate(ua.rng()).sdp(true));
        }
        let answer = match media.answer(&offer, local.origin.clone()) {
            Ok(a) => a,
            Err(e) => return refuse(ua, &e.to_string()),
        };
        if ua
            .answer_reinvite(now, id, Reply::new(200, "OK").sdp(answer.clone()))
            .is_err()
        {
            return;
        }
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if restart {
            let leg = if is_a {
                call.legs.first_mut()
            } else {
                call.legs.last_mut()
            };
            if let Some(leg) = leg {
                leg.media.ice = media.ice.clone();
            }
        }
        let was = call.held.0 || call.held.1;
        if is_a {
            call.held.0 = offer.holds();
            call.a_offer = offer;
            call.a_answer = Some(answer);
        } else {
            call.held.1 = offer.holds();
            call.b_answer = Some(offer);
            call.b_offer = answer;
        }
        let held = call.held.0 || call.held.1;
        if held != was {
            self.carry_hold(now, ua, call_id, !is_a, held);
        }
        self.push_plan(call_id);
    }

    /// Tell one leg the call is held or resumed: a re-INVITE with our
    /// description there, `a=inactive` or `a=sendrecv`.
    fn carry_hold(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call_id: u64,
        to_a: bool,
        held: bool,
    ) {
        let wrong = self.faults.contains(&SbcFault::HoldWithSendonly);
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let teams = to_a == call.a_is_teams();
        let direction = match (held, teams && wrong) {
            (false, _) => SdpDirection::SendRecv,
            (true, true) => SdpDirection::SendOnly,
            (true, false) => SdpDirection::Inactive,
        };
        let (session, local) = if to_a {
            (Some(call.a()), call.a_answer.clone())
        } else {
            (call.b(), Some(call.b_offer.clone()))
        };
        let (Some(session), Some(local)) = (session, local) else {
            return;
        };
        let offer = local.with_direction(direction);
        match ua.reinvite(now, session, offer.clone(), Vec::new()) {
            Ok(()) if to_a => call.a_answer = Some(offer),
            Ok(()) => call.b_offer = offer,
            Err(e) => {
                // Busy (an INVITE not yet ACKed, a re-INVITE either way):
                // wait for it, up to Timer H from the first attempt.
                let give_up_at = match call.hold_due {
                    Some(d) if d.to_a == to_a => d.give_up_at,
                    _ => now + HOLD_WAIT,
                };
                if now < give_up_at {
                    call.hold_due = Some(HoldDue {
                        to_a,
                        retry_at: now + HOLD_RETRY,
                        give_up_at,
                    });
                    return;
                }
                call.hold_due = None;
                let line = format!("call {call_id}: cannot re-INVITE the other leg: {e}");
                self.problem("hold", line);
            }
        }
    }

    /// A leg's transaction ended (or a retry is due): send the hold or
    /// resume it was waiting for, as the call stands now.
    fn hold_when_free(&mut self, now: Instant, ua: &mut UserAgent, call_id: u64, is_a: bool) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if call.hold_due.is_none_or(|d| d.to_a != is_a) {
            return;
        }
        call.hold_due = None;
        let held = call.held.0 || call.held.1;
        self.carry_hold(now, ua, call_id, is_a, held);
    }

    /// Our re-INVITE on a leg ended: its answer is that leg's description now.
    fn on_reinvite_done(
        &mut self,
        call_id: u64,
        is_a: bool,
        result: Result<Option<SessionDescription>, u16>,
    ) {
        match result {
            Ok(Some(answer)) => {
                if let Some(call) = self.calls.get_mut(&call_id) {
                    if is_a {
                        call.a_offer = answer;
                    } else {
                        call.b_answer = Some(answer);
                    }
                }
                self.push_plan(call_id);
            }
            Ok(None) => {}
            Err(code) => self.problem(
                "hold",
                format!("call {call_id}: our re-INVITE was answered {code}"),
            ),
        }
    }

    fn push_plan(&mut self, call_id: u64) {
        if let Some(plan) = self.calls.get(&call_id).and_then(|c| c.relay_plan()) {
            self.media_out.push_back(RelayCommand::Plan {
                id: call_id,
                plan: Box::new(plan),
            });
        }
    }

    /// Answer leg a with a failure (if it is still unanswered) and end the call.
    fn fail_a(&mut self, now: Instant, ua: &mut UserAgent, call_id: u64, reply: Reply) {
        let Some(call) = self.calls.get(&call_id) else {
            return;
        };
        let a = call.a();
        if ua
            .session(a)
            .is_some_and(|s| matches!(s.state(), SessionState::Initial | SessionState::Early))
        {
            let _ = ua.reject(now, a, reply);
        }
        self.release_if_done(ua, call_id);
    }

    fn on_leg_ended(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call_id: u64,
        leg: SessionId,
        is_a: bool,
        reason: EndReason,
    ) {
        // A transfer under way ends with the call (the hub gave up on the
        // old leg, or the PSTN party hung up): its new leg goes too.
        if let Some(c) = self.calls.get_mut(&call_id) {
            if let Some(t) = c.transfer.take() {
                c.retired.push(t.new_leg);
                ua.hang_up(
                    now,
                    t.new_leg,
                    Reply::new(487, "Request Terminated"),
                    Vec::new(),
                );
            }
        }
        let Some(call) = self.calls.get(&call_id) else {
            return;
        };
        let answered = call.answered;
        // The first end makes the record (not a failed attempt that fails
        // over: that is noted below only when the call fails for good).
        let failing_over = !is_a && call.b() == Some(leg) && !answered;
        if !failing_over && call.end.is_none() && (is_a || call.b() == Some(leg)) {
            let end = CallEnd::of(now, is_a, answered, &reason);
            if let Some(c) = self.calls.get_mut(&call_id) {
                c.end = Some(end);
            }
        }
        let Some(call) = self.calls.get(&call_id) else {
            return;
        };
        if is_a {
            // Leg a is gone (CANCEL, BYE, no ACK): end leg b too. A pending
            // INVITE is CANCELled, an answered one BYEd.
            if let Some(b) = call.b() {
                ua.hang_up(now, b, Reply::new(487, "Request Terminated"), Vec::new());
            }
            if let Some(c) = self.calls.get_mut(&call_id) {
                c.ring_deadline = None;
            }
        } else if call.b() == Some(leg) && !answered {
            let retry_any = self.faults.contains(&SbcFault::RetryEveryFailure);
            // Never once the far end rang (an 18x was passed on): the
            // next route would ring the callee again (as case 9.42, and
            // the hub's own rule, behaviour §4).
            let rang = !call.progress_sent.is_empty();
            let failover = match &reason {
                _ if rang => false,
                EndReason::Rejected {
                    code: 408 | 503 | 504,
                    ..
                }
                | EndReason::Timeout
                | EndReason::TransportError(_) => true,
                // Case 9.42: never after 603 (or any other final answer):
                // the user declined, retrying rings them again.
                EndReason::Rejected { .. } => retry_any,
                _ => false,
            };
            // Case 9.41: a 503 with Retry-After from a hub proxy: no INVITE
            // goes to that proxy for that long.
            if let EndReason::Rejected {
                code: 503,
                retry_after: Some(secs),
                ..
            } = &reason
            {
                let hub = call.legs.last().and_then(|l| l.hub.clone());
                if let Some(hub) = hub {
                    if !self.faults.contains(&SbcFault::IgnoreRetryAfter) {
                        let until = now + std::time::Duration::from_secs(u64::from(*secs));
                        self.health().avoid_until.insert(hub, until);
                    }
                }
            }
            if let EndReason::TransportError(e) = &reason {
                self.problem("send", format!("call {call_id}: {e}"));
            }
            // Failover only once this INVITE is over (it has ended: nothing
            // is pending toward the previous proxy).
            if failover && self.try_next(now, ua, call_id) {
                return;
            }
            if let Some(c) = self.calls.get_mut(&call_id) {
                c.end.get_or_insert(CallEnd::of(now, false, false, &reason));
            }
            if let EndReason::Rejected {
                code: code @ (401 | 407),
                ..
            } = &reason
            {
                self.problem(
                    "auth",
                    format!("call {call_id}: {code} from the far end and no credentials that answer it (carrier.registration)"),
                );
            }
            return self.fail_a(now, ua, call_id, reply_for(&reason));
        } else if call.b() == Some(leg) {
            // Leg b hung up (or lost its ACK, or the dialog): BYE leg a.
            let a = call.a();
            ua.hang_up(
                now,
                a,
                Reply::new(480, "Temporarily Unavailable"),
                Vec::new(),
            );
        }
        self.release_if_done(ua, call_id);
    }

    /// The hub proxies a new inbound call tries, in order, without those
    /// that asked us (503 + Retry-After) to stay away a while longer.
    fn hubs_to_try(&mut self, now: Instant) -> Vec<String> {
        let mut health = self.health();
        health.avoid_until.retain(|_, until| *until > now);
        self.config
            .hub_fqdns
            .iter()
            .filter(|h| !health.avoid_until.contains_key(*h))
            .cloned()
            .collect()
    }

    /// The carrier gateways a new outbound call tries: those OPTIONS last
    /// found up, in configured order, then the others (a gateway marked
    /// down may be back; trying it last costs nothing when it is not).
    pub(super) fn gateways_to_try(&self) -> Vec<String> {
        let all = self.gateways();
        let health = self.health();
        let (up, down): (Vec<String>, Vec<String>) = all
            .into_iter()
            .partition(|g| !health.gateway_down.contains(g));
        up.into_iter().chain(down).collect()
    }

    /// Fail an INVITE over to the next hub proxy (inbound) or carrier
    /// gateway (outbound).
    fn try_next(&mut self, now: Instant, ua: &mut UserAgent, call_id: u64) -> bool {
        let a_waits = self.calls.get(&call_id).is_some_and(|c| {
            ua.session(c.a())
                .is_some_and(|s| matches!(s.state(), SessionState::Initial | SessionState::Early))
        });
        if !a_waits {
            return false; // the caller has gone: nothing to fail over for
        }
        let Some(mut call) = self.calls.remove(&call_id) else {
            return false;
        };
        let media = call.legs.last().map(|l| l.media.clone());
        // Inbound: the next hub proxy; outbound: the next carrier gateway.
        let ok = match media {
            Some(m) => self.call_next(now, ua, &mut call, m),
            None => false,
        };
        self.calls.insert(call_id, call);
        ok
    }

    /// Once every leg's session has ended, close the relay; once its ports
    /// are closed, forget the call.
    fn release_if_done(&mut self, ua: &UserAgent, call_id: u64) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let all_ended = call
            .legs
            .iter()
            .map(|l| l.session)
            .chain(call.retired.iter().copied())
            .chain(call.transfer.as_ref().map(|t| t.new_leg))
            .all(|s| ua.session(s).is_none_or(|s| s.is_ended()));
        if !all_ended {
            return;
        }
        call.ring_deadline = None;
        if call.media_open {
            call.media_open = false;
            self.media_out
                .push_back(RelayCommand::Close { id: call_id });
        }
        if call.media_closed {
            let call = self.calls.remove(&call_id).expect("checked above");
            self.record(&call);
            self.ports.release(call.ports.0);
            self.ports.release(call.ports.1);
            for s in call.legs.iter().map(|l| l.session).chain(call.retired) {
                self.by_session.remove(&s);
            }
            self.refer_targets.retain(|_, t| t.call_id != call_id);
            self.view().calls_ended += 1;
        }
    }

    /// The record of a call that is over (see [`crate::records`]).
    fn record(&self, call: &Call) {
        let cc = &self.config.country_code;
        let e164 = |n: &str| {
            self.config
                .number_rules
                .e164(n, cc)
                .unwrap_or_else(|_| n.to_string())
        };
        let (direction, from, to) = match call.direction {
            Direction::Inbound => (
                "inbound",
                call.calling.clone().unwrap_or_else(|| "anonymous".into()),
                call.called.clone(),
            ),
            Direction::Outbound => (
                "outbound",
                call.calling.as_deref().map_or("anonymous".into(), e164),
                call.pstn_party
                    .clone()
                    .unwrap_or_else(|| e164(&call.called)),
            ),
        };
        let epoch = self.started_at.unwrap_or(call.started);
        let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_millis() as u64;
        let end = call.end.clone();
        let ended_at = end.as_ref().map_or(call.started, |e| e.at);
        let rec = CallRecord {
            call: call.id.to_string(),
            leg: "call",
            direction,
            from,
            to,
            setup_ms: ms(epoch, call.started),
            pdd_ms: call.progress_at.map(|p| ms(call.started, p)),
            answer_ms: call.answered_at.map(|a| ms(call.started, a)),
            duration_ms: call.answered_at.map(|a| ms(a, ended_at)),
            ended_by: end.as_ref().map_or(EndedBy::Network, |e| e.by),
            final_code: end.as_ref().map_or(500, |e| e.code),
            q850: end.and_then(|e| e.cause),
            quality: None,
        };
        let mut v = self.view();
        v.records.push_back(rec);
        if v.records.len() > super::MAX_RECORDS {
            v.records.pop_front();
            v.records_dropped += 1;
        }
    }

    pub(crate) fn on_relay(&mut self, now: Instant, ua: &mut UserAgent, event: RelayEvent) {
        match event {
            RelayEvent::Failed { id, reason } => {
                self.problem("media", format!("call {id}: {reason}"));
                let Some(call) = self.calls.get_mut(&id) else {
                    return;
                };
                call.media_open = false;
                call.media_closed = true;
                let legs: Vec<SessionId> = call.legs.iter().map(|l| l.session).collect();
                for s in legs.into_iter().skip(1) {
                    ua.hang_up(now, s, Reply::new(503, "Service Unavailable"), Vec::new());
                }
                self.fail_a(now, ua, id, Reply::new(503, "Service Unavailable"));
                if let Some(c) = self.calls.get(&id) {
                    let a = c.a();
                    ua.hang_up(now, a, Reply::new(503, "Service Unavailable"), Vec::new());
                }
                self.release_if_done(ua, id);
            }
            RelayEvent::Closed { id } => {
                if let Some(c) = self.calls.get_mut(&id) {
                    c.media_closed = true;
                }
                self.release_if_done(ua, id);
            }
        }
    }

    /// `media_timeout` (rtpengine's `timeout`, and what Direct Routing does
    /// to calls without media, case 9.58): an answered call whose relay has
    /// taken in no packet from either leg for that long, while neither
    /// side holds, is dead: both legs get a BYE saying why.
    fn media_due(&mut self, now: Instant, ua: &mut UserAgent) {
        let Some(timeout) = self.config.media_timeout else {
            return;
        };
        let due: Vec<u64> = (self.calls.due(now).into_iter())
            .filter(|id| {
                let c = self.calls.get(id);
                c.and_then(|c| c.media_watch)
                    .is_some_and(|w| w.next_look() <= now)
            })
            .collect();
        for id in due {
            let Some(c) = self.calls.get_mut(&id) else {
                continue;
            };
            let Some(mut w) = c.media_watch else {
                continue;
            };
            let packets = c.relay_stats.lock().map_or(0, |s| {
                u64::from(s.a_to_b) + u64::from(s.b_to_a) + u64::from(s.held)
            });
            let held = c.held.0 || c.held.1;
            if !w.look(now, packets, held, timeout) {
                c.media_watch = Some(w);
                continue;
            }
            c.media_watch = None;
            let secs = timeout.as_secs();
            let legs: Vec<SessionId> = c.legs.iter().map(|l| l.session).collect();
            // Q.850 102, "recovery on timer expiry" (RFC 3326 Reason).
            let reason = vec![(
                "Reason".to_string(),
                format!("Q.850;cause=102;text=\"no media for {secs} s\""),
            )];
            for s in legs {
                ua.hang_up(now, s, Reply::new(408, "Request Timeout"), reason.clone());
            }
            self.problem("media", format!("call {id}: no media for {secs} s: ended"));
        }
    }

    /// Leg b rang too long: CANCEL it and answer leg a 408. A Teams leg
    /// the call moved off and the hub did not end: BYE it. A call without
    /// media: end it.
    pub(crate) fn calls_due(&mut self, now: Instant, ua: &mut UserAgent) {
        self.media_due(now, ua);
        self.retired_due(now, ua);
        let due = self.calls.due(now);
        let holds: Vec<(u64, bool)> = (due.iter())
            .filter_map(|id| self.calls.get(id))
            .filter_map(|c| {
                c.hold_due
                    .filter(|h| h.retry_at <= now)
                    .map(|h| (c.id, h.to_a))
            })
            .collect();
        for (id, to_a) in holds {
            self.hold_when_free(now, ua, id, to_a);
        }
        let due = self.calls.due(now);
        let refers: Vec<u64> = (due.iter())
            .filter_map(|id| self.calls.get(id))
            .filter(|c| {
                c.waiting_refer
                    .as_ref()
                    .is_some_and(|w| w.give_up_at <= now)
            })
            .map(|c| c.id)
            .collect();
        for id in refers {
            self.send_waiting_refer(now, ua, id, None);
        }
        let due: Vec<u64> = (self.calls.due(now).iter())
            .filter_map(|id| self.calls.get(id))
            .filter(|c| c.ring_deadline.is_some_and(|t| t <= now))
            .map(|c| c.id)
            .collect();
        for id in due {
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            call.ring_deadline = None;
            call.routes_left.clear();
            if let Some(b) = call.b() {
                ua.hang_up(now, b, Reply::new(408, "Request Timeout"), Vec::new());
            }
            self.problem(
                "call",
                format!("call {id}: no answer in {:?}", self.config.max_ringing),
            );
            self.fail_a(now, ua, id, Reply::new(408, "Request Timeout"));
        }
    }
}
