//! The offer/answer state of one INVITE session (RFC 3264 over RFC 3261
//! §13.2.1 and §14): who owes whom an answer, the descriptions in effect,
//! and the `o=` line rule for every description we send after the first.

use crate::sip::sdp::SessionDescription;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OaState {
    /// Nothing exchanged yet (an INVITE without SDP: delayed offer).
    Idle,
    /// We sent an offer and wait for its answer.
    OfferSent(SessionDescription),
    /// The peer sent an offer and waits for ours.
    OfferReceived(SessionDescription),
    /// Offer and answer are both in effect.
    Stable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferAnswer {
    pub state: OaState,
    /// Our description in effect (the last offer or answer we sent).
    pub local: Option<SessionDescription>,
    /// The peer's description in effect.
    pub remote: Option<SessionDescription>,
}

impl Default for OfferAnswer {
    fn default() -> Self {
        OfferAnswer {
            state: OaState::Idle,
            local: None,
            remote: None,
        }
    }
}

impl OfferAnswer {
    /// Whether a new offer may be made or received (no exchange half done).
    pub fn is_settled(&self) -> bool {
        matches!(self.state, OaState::Idle | OaState::Stable)
    }

    /// RFC 3264 §8: a description sent after the first keeps the session id
    /// and increments the version when anything changed, and keeps the
    /// version when nothing did (a session refresh with the same SDP).
    pub fn next_local(&self, mut sd: SessionDescription) -> SessionDescription {
        if let Some(prev) = &self.local {
            sd.origin.username = prev.origin.username.clone();
            sd.origin.session_id = prev.origin.session_id;
            sd.origin.session_version = prev.origin.session_version;
            if sd != *prev {
                sd.origin.session_version = prev.origin.session_version.wrapping_add(1);
            }
        }
        sd
    }

    /// We send `sd`: an offer, or the answer to the peer's offer.
    pub fn send(&mut self, sd: SessionDescription) {
        self.state = match std::mem::replace(&mut self.state, OaState::Idle) {
            OaState::OfferReceived(offer) => {
                self.remote = Some(offer);
                OaState::Stable
            }
            _ => OaState::OfferSent(sd.clone()),
        };
        self.local = Some(sd);
    }

    /// The peer sent `sd`: an answer to our offer, or an offer of its own.
    pub fn receive(&mut self, sd: SessionDescription) {
        self.state = match std::mem::replace(&mut self.state, OaState::Idle) {
            OaState::OfferSent(_) => {
                self.remote = Some(sd);
                OaState::Stable
            }
            _ => OaState::OfferReceived(sd),
        };
    }

    /// A preview answer (SDP in an unreliable 18x, RFC 3261 §13.2.1): it is
    /// in effect for early media but the exchange completes with the 2xx.
    pub fn receive_early(&mut self, sd: SessionDescription) {
        if matches!(self.state, OaState::OfferSent(_)) {
            self.remote = Some(sd);
        }
    }

    /// The offer we sent was refused (a non-2xx to a re-INVITE): the
    /// descriptions in effect before it stay (RFC 3261 §14.1).
    pub fn rollback(&mut self, before: Option<SessionDescription>) {
        if matches!(
            self.state,
            OaState::OfferSent(_) | OaState::OfferReceived(_)
        ) {
            self.state = OaState::Stable;
            if let Some(b) = before {
                self.local = Some(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::sdp::offer_answer::{Codec, LocalMedia};
    use crate::sip::sdp::Origin;

    fn sd(port: u16) -> SessionDescription {
        LocalMedia {
            address: "192.0.2.1".into(),
            port,
            codecs: vec![Codec::pcmu()],
            srtp_key: None,
            rtcp_mux: false,
            ice: None,
        }
        .offer(Origin {
            username: "-".into(),
            session_id: 7,
            session_version: 1,
            address: "192.0.2.1".into(),
        })
    }

    #[test]
    fn version_bumps_on_change_and_stays_on_a_refresh() {
        let mut oa = OfferAnswer::default();
        oa.send(sd(4000));
        oa.receive(sd(5000));
        assert_eq!(oa.state, OaState::Stable);
        let mut changed = sd(4002);
        changed.origin.session_id = 99;
        let next = oa.next_local(changed);
        assert_eq!(
            (next.origin.session_id, next.origin.session_version),
            (7, 2)
        );
        let same = oa.next_local(sd(4000));
        assert_eq!(same.origin.session_version, 1);
        assert_eq!(same, sd(4000));
    }

    #[test]
    fn an_offer_received_is_answered_and_a_refused_offer_rolls_back() {
        let mut oa = OfferAnswer::default();
        oa.receive(sd(5000));
        assert!(!oa.is_settled());
        oa.send(sd(4000));
        assert_eq!(oa.state, OaState::Stable);
        assert_eq!(oa.remote, Some(sd(5000)));
        let before = oa.local.clone();
        oa.send(sd(4100));
        assert!(matches!(oa.state, OaState::OfferSent(_)));
        oa.rollback(before);
        assert_eq!(oa.local, Some(sd(4000)));
        assert!(oa.is_settled());
    }
}
