//! A bridge between two SBC legs through the hub: a transfer to a PSTN
//! number (KB-XFER: "for a PSTN target, the hub then sends a fresh INVITE
//! to an SBC; if that fails, the error comes back on the transferred
//! call"). The SBC's INVITE for the Refer-To stays unanswered while the hub
//! calls the number out through the tenant's SBCs (voice routes,
//! failover, as for any outbound call); the far leg's ringing is passed
//! back as 180, its answer answers the near leg, and a relay on the
//! proxy's own address carries SRTP between the legs, decrypted and
//! encrypted again with each leg's keys (the media processor's part, no
//! transcoding: the far leg is offered the near leg's codec). Either leg's
//! end ends the other.

use super::{teams_crypto, teams_offer, HubCall};
use crate::hub::causes;
use crate::hub::raw::RawMessage;
use crate::hub::{CallDirection, CallState, Proxy, Refusal};
use drlab_sim::far_end::Talk;
use sbc::media::{RelayCommand, RelayEvent, RelayLeg, RelayPlan, RelayStats, SrtpKey};
use sbc::sip::sdp::offer_answer::{agreed, LocalMedia};
use sbc::sip::sdp::SessionDescription;
use sbc::sip::session::{EndReason, Reply, SessionId};
use sbc::sip::ua::UserAgent;
use sbc::sip::wire::Message;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug)]
pub(crate) struct Bridge {
    ports: (u16, u16),
    /// The SBC's INVITE for the Refer-To (we are its UAS), its offer and
    /// our answer, sent once the far leg answers.
    inbound: SessionId,
    in_offer: SessionDescription,
    in_answer: SessionDescription,
    /// Our media toward the far leg and what we offer there (every
    /// attempt the same).
    pub(super) out_media: LocalMedia,
    pub(super) out_offer: SessionDescription,
    /// The current attempt toward an SBC.
    pub(super) outbound: Option<SessionId>,
    ringing: bool,
    answered: bool,
    closing: bool,
}

/// The user part of an INVITE's Request-URI (the number called).
fn user_of_ruri(raw: &RawMessage) -> String {
    raw.request_uri()
        .and_then(|u| rsip::Uri::try_from(u).ok())
        .and_then(|u| u.auth.map(|a| a.user))
        .unwrap_or_default()
}

/// History-Info for a call to `user` forwarded to `target` (behaviour
/// §3.3, RFC 7044): entries on the hub's host with `user=phone`, in
/// order, the forwarding one carrying an escaped Reason (cause 302).
pub(super) fn history_info(user: &str, target: &str, host: &str) -> String {
    format!(
        "<sip:{user}@{host}:5061;user=phone?Reason=SIP%3Bcause%3D302%3Btext%3D%22Moved%20temporarily%22>;index=1,<sip:{target}@{host}:5061;user=phone>;index=1.1"
    )
}

fn relay_leg(ours: &SessionDescription, theirs: &SessionDescription) -> Option<RelayLeg> {
    RelayLeg::from_agreed(&agreed(ours, theirs)?)
}

impl Proxy {
    /// The SBC called back a Refer-To naming a PSTN number: hold its INVITE
    /// and call the number out, bridged to it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bridge_transfer(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        id: SessionId,
        raw: &RawMessage,
        request: &Message,
        sbc: &str,
        caller: &str,
        takes_over: Option<(u64, SessionId)>,
        number: &str,
        forwarded: Option<(&str, String)>,
    ) {
        let offer = match SessionDescription::parse(&String::from_utf8_lossy(&raw.body)) {
            Ok(o) => o,
            Err(e) => {
                let r = Refusal::BadSdp {
                    reason: e.to_string(),
                };
                return self.refuse(now, ua, id, r);
            }
        };
        let Some(ip) = self.own_ip else {
            let _ = ua.reject(now, id, Reply::new(503, "Service Unavailable"));
            return self.problem("bridge", "no address of our own for a relay".into());
        };
        let ports = {
            let fqdn = self.config.fqdn.clone();
            let mut v = self.view();
            match (v.allocate_media(&fqdn), v.allocate_media(&fqdn)) {
                (Some(a), Some(b)) => Some((a, b)),
                (a, b) => {
                    a.into_iter().chain(b).for_each(|p| v.release_media(p));
                    None
                }
            }
        };
        let Some(ports) = ports else {
            let _ = ua.reject(now, id, Reply::new(503, "Service Unavailable"));
            return self.problem("bridge", "no free relay ports".into());
        };
        let mut in_key = SrtpKey::generate(ua.rng());
        in_key.mki = Some((1, 1));
        let in_media = super::mp_media(ip, ports.0, &in_key);
        let origin = self.origin(ua, ip);
        let mut in_answer = match in_media.answer(&offer, origin) {
            Ok(a) => a,
            Err(e) => {
                let mut v = self.view();
                v.release_media(ports.0);
                v.release_media(ports.1);
                drop(v);
                return self.refuse(now, ua, id, super::answer_refusal(e));
            }
        };
        teams_crypto(&mut in_answer, true);
        // No transcoding: the far leg is offered the near leg's codec.
        let codec = agreed(&in_answer, &offer).map(|a| a.codec.name);
        let mut out_key = SrtpKey::generate(ua.rng());
        out_key.mki = None;
        let mut out_media = super::mp_media(ip, ports.1, &out_key);
        out_media.codecs.retain(|c| {
            codec
                .as_ref()
                .is_none_or(|n| c.name.eq_ignore_ascii_case(n))
                || c.name == "telephone-event"
        });
        let origin = self.origin(ua, ip);
        let mut out_offer = out_media.offer(origin);
        teams_offer(&mut out_offer);
        self.next_relay += 1;
        let relay = self.next_relay;
        self.relay_out.push_back(RelayCommand::Open {
            id: relay,
            a: SocketAddr::new(ip, ports.0),
            b: SocketAddr::new(ip, ports.1),
            stats: Arc::new(Mutex::new(RelayStats::default())),
            ice: (None, None),
        });
        self.bridges.insert(
            relay,
            Bridge {
                ports,
                inbound: id,
                in_offer: offer,
                in_answer,
                out_media,
                out_offer,
                outbound: None,
                ringing: false,
                answered: false,
                closing: false,
            },
        );
        // Who places the far leg: the transferor, or the forwarding user.
        let placer = match takes_over {
            Some((_, old)) => self.calls.get(&old).map(|c| c.user.clone()),
            None => self
                .config
                .tenant
                .users
                .iter()
                .find(|u| forwarded.is_some() && u.number == user_of_ruri(raw))
                .map(|u| u.name.clone()),
        }
        .unwrap_or_default();
        let call_id = request.call_id().unwrap_or_default().to_string();
        let serial = self.add_view(&call_id, CallDirection::Inbound, number, caller);
        // The near leg has no audio of its own: its probe never opens.
        self.next_media += 1;
        let (talk, _) = Talk::open(self.next_media, &self.config.media_host, 0);
        self.calls.insert(
            id,
            HubCall {
                serial,
                direction: CallDirection::Inbound,
                user: number.to_string(),
                callee: None,
                answering_fork: 0,
                ack_deadline: None,
                talk,
                media_port: 0,
                why: None,
                correlation: causes::correlation_id(ua.rng()),
                offered: None,
                outbound: None,
                failover_at: None,
                progressed: false,
                superseded: false,
                sbc: sbc.to_string(),
                sbc_allow: raw.values("Allow").join(","),
                transfer: None,
                takes_over,
                bridge: Some(relay),
                early_forks: Vec::new(),
                media_watch: None,
                moving_to: None,
            },
        );
        if let Some((_, old)) = takes_over {
            self.transfer_arrived(old, id);
        }
        // The far leg: an outbound call from the transferor, as any other.
        let route = self.route_order(ua);
        let serial = self.add_view("", CallDirection::Outbound, &placer, number);
        let plan = super::Outbound {
            serial,
            user: placer,
            number: number.to_string(),
            route,
            tried_from: Vec::new(),
            correlation: causes::correlation_id(ua.rng()),
            last: None,
            bridge: Some(relay),
            forwarded: forwarded.map(|(caller, history)| (caller.to_string(), history)),
        };
        self.attempt(now, ua, plan);
    }

    /// The far leg rang or answered.
    pub(super) fn bridge_heard(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        relay: u64,
        id: SessionId,
        sdp: Option<SessionDescription>,
        answered: bool,
    ) {
        let contact = self.contact(ua);
        let rr = self.record_route();
        let Some(b) = self.bridges.get_mut(&relay) else {
            return;
        };
        if b.outbound != Some(id) || b.answered {
            return;
        }
        let inbound = b.inbound;
        if !answered {
            if !b.ringing {
                b.ringing = true;
                let reply = Reply::new(180, "Ringing")
                    .header("Record-Route", rr)
                    .header("Contact", contact);
                let _ = ua.provisional(now, inbound, 0, reply);
            }
            return;
        }
        let plan = sdp.as_ref().and_then(|theirs| {
            Some(RelayPlan {
                a: relay_leg(&b.in_answer, &b.in_offer)?,
                b: relay_leg(&b.out_offer, theirs)?,
                hold: false,
            })
        });
        let Some(plan) = plan else {
            self.problem("bridge", "the far leg's answer gives no relay plan".into());
            return self.end_bridge(now, ua, relay, 488);
        };
        b.answered = true;
        let reply = Reply::new(200, "OK")
            .header("Record-Route", rr)
            .header("Contact", contact)
            .header("Allow", crate::hub::HUB_ALLOW)
            .sdp(b.in_answer.clone());
        self.relay_out.push_back(RelayCommand::Plan {
            id: relay,
            plan: Box::new(plan),
        });
        if ua.accept(now, inbound, 0, reply).is_err() {
            return self.end_bridge(now, ua, relay, 487);
        }
        if let Some(c) = self.calls.get_mut(&inbound) {
            c.ack_deadline = Some(now + self.config.no_ack_timeout);
            let (serial, takes_over) = (c.serial, c.takes_over);
            self.set_state(serial, CallState::Answered);
            if let Some((_, old)) = takes_over {
                self.target_answered(now, old);
            }
        }
    }

    /// One of a bridge's legs ended for good (a failed attempt the hub
    /// moves on from does not count): end the other, and the relay once
    /// both are over.
    pub(super) fn bridge_leg_ended(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        relay: u64,
        id: SessionId,
        reason: &EndReason,
    ) {
        let Some(b) = self.bridges.get(&relay) else {
            return;
        };
        let code = match reason {
            EndReason::Rejected { code, .. } => *code,
            EndReason::Timeout => 408,
            _ => 480,
        };
        if b.inbound == id {
            if let Some(out) = b.outbound {
                ua.hang_up(now, out, Reply::new(487, "Request Terminated"), Vec::new());
            }
        } else if b.outbound == Some(id) {
            self.end_bridge(now, ua, relay, code);
        }
        self.close_bridge_if_done(ua, relay);
    }

    /// The far leg found no SBC (route exhausted).
    pub(super) fn bridge_unrouted(&mut self, now: Instant, ua: &mut UserAgent, relay: u64) {
        self.end_bridge(now, ua, relay, 480);
        self.close_bridge_if_done(ua, relay);
    }

    /// End the near leg: `code` if it is not answered yet, else BYE.
    fn end_bridge(&mut self, now: Instant, ua: &mut UserAgent, relay: u64, code: u16) {
        let Some(b) = self.bridges.get(&relay) else {
            return;
        };
        let inbound = b.inbound;
        if let Some(out) = b.outbound {
            ua.hang_up(now, out, Reply::new(487, "Request Terminated"), Vec::new());
        }
        let reason = crate::hub::reason_phrase(code);
        let cause = self.config.refusals.causes.cause(code);
        let headers = self.call_reason(inbound, cause, reason, None);
        let mut reply = Reply::new(code, reason);
        reply.headers = headers.clone();
        ua.hang_up(now, inbound, reply, headers);
    }

    fn close_bridge_if_done(&mut self, ua: &UserAgent, relay: u64) {
        let Some(b) = self.bridges.get_mut(&relay) else {
            return;
        };
        let over =
            |s: Option<SessionId>| s.is_none_or(|s| ua.session(s).is_none_or(|s| s.is_ended()));
        if b.closing || !over(Some(b.inbound)) || !over(b.outbound) {
            return;
        }
        b.closing = true;
        self.relay_out.push_back(RelayCommand::Close { id: relay });
    }

    /// The relay closed (its ports are free) or could not open.
    pub(crate) fn on_relay(&mut self, now: Instant, ua: &mut UserAgent, event: RelayEvent) {
        match event {
            RelayEvent::Closed { id } => {
                if let Some(b) = self.bridges.remove(&id) {
                    let mut v = self.view();
                    v.release_media(b.ports.0);
                    v.release_media(b.ports.1);
                }
            }
            RelayEvent::Failed { id, reason } => {
                // The relay never ran: no Closed will come; free it now.
                self.problem("bridge", format!("relay {id}: {reason}"));
                self.end_bridge(now, ua, id, 503);
                if let Some(b) = self.bridges.remove(&id) {
                    let mut v = self.view();
                    v.release_media(b.ports.0);
                    v.release_media(b.ports.1);
                }
            }
        }
    }
}
