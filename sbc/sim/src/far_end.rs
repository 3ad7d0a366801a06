//! How a simulated far end behaves, written once for the Teams users behind
//! the hub and the PSTN phones behind the carrier: it rings, answers, talks
//! through an audio probe, and hangs up when told. Sans-IO: time is a
//! parameter, media goes out as [`ProbeCommand`]s.

use crate::probe::{IceCheckPlan, MediaStats, ProbeCommand, ProbePlan};
use sbc::media::ice::Credentials;
use sbc::sip::rng::SeededRng;
use sbc::sip::sdp::offer_answer::LocalMedia;
use sbc::sip::sdp::SessionDescription;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When a called party rings and answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answering {
    /// From the INVITE to ringing (the 180).
    pub ring_after: Duration,
    /// From ringing to answering (the 200).
    pub answer_after: Duration,
}

impl Default for Answering {
    fn default() -> Self {
        Answering {
            ring_after: Duration::from_millis(500),
            answer_after: Duration::from_secs(2),
        }
    }
}

/// What a called party does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalleeStep {
    Ring,
    Answer,
}

/// A called party's timeline: ring after a while, then answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callee {
    answering: Answering,
    ring_at: Option<Instant>,
    answer_at: Option<Instant>,
}

impl Callee {
    pub fn new(now: Instant, answering: Answering) -> Self {
        Callee {
            answering,
            ring_at: Some(now + answering.ring_after),
            answer_at: None,
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.ring_at.or(self.answer_at)
    }

    /// The step due at `now`, if any (call until it returns `None`).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<CalleeStep> {
        if self.ring_at.is_some_and(|t| t <= now) {
            self.ring_at = None;
            self.answer_at = Some(now + self.answering.answer_after);
            return Some(CalleeStep::Ring);
        }
        if self.answer_at.is_some_and(|t| t <= now) {
            self.answer_at = None;
            return Some(CalleeStep::Answer);
        }
        None
    }

    /// The call ended first (cancelled, hung up): nothing more to do.
    pub fn stop(&mut self) {
        self.ring_at = None;
        self.answer_at = None;
    }
}

/// A far end's audio: a probe on one of its media hosts, started once both
/// descriptions are known, stopped when the call ends.
#[derive(Debug)]
pub struct Talk {
    pub id: u64,
    pub port: u16,
    pub stats: Arc<Mutex<MediaStats>>,
    /// What this end can do (address, port, codecs, key): a re-INVITE is
    /// answered from it.
    pub media: Option<LocalMedia>,
    pub local: Option<SessionDescription>,
    pub remote: Option<SessionDescription>,
    /// A Teams client in media bypass: its ICE credentials and tie-breaker.
    /// Its media flows only over a pair it checked and nominated.
    pub ice: Option<(Credentials, u64)>,
    /// A deliberate fault: check with a password that is not the far
    /// side's (its SDP's, reversed), to show the far side refusing it.
    pub ice_wrong_password: bool,
    /// The SSRC drawn for this end's first plan, kept by later ones.
    ssrc: Option<u32>,
    started: bool,
    closed: bool,
}

impl Talk {
    /// Open a probe on `host`:`port`; the command goes to the media driver.
    pub fn open(id: u64, host: &str, port: u16) -> (Talk, ProbeCommand) {
        let stats = Arc::new(Mutex::new(MediaStats::default()));
        let cmd = ProbeCommand::Open {
            id,
            host: host.to_string(),
            port,
            stats: stats.clone(),
        };
        (
            Talk {
                id,
                port,
                stats,
                media: None,
                local: None,
                remote: None,
                ice: None,
                ice_wrong_password: false,
                ssrc: None,
                started: false,
                closed: false,
            },
            cmd,
        )
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Start talking (`frames` 20 ms frames) if both sides' SDP agree on a
    /// codec; once. `None` when not (yet) possible.
    /// With ICE (a Teams client in media bypass) the probe checks the
    /// pair and nominates it first ([`Talk::check`]).
    pub fn start(&mut self, frames: u32, rng: &mut SeededRng) -> Option<ProbeCommand> {
        self.plan(frames, rng, true, false)
    }

    /// A Teams client in media bypass checks its pair with ICE but neither
    /// nominates it nor sends media yet (a fork that rings while another
    /// may answer: behaviour §7). `None` without ICE or the far side's
    /// credentials.
    pub fn check(&mut self, frames: u32, rng: &mut SeededRng) -> Option<ProbeCommand> {
        self.ice.as_ref()?;
        self.plan(frames, rng, false, false)
    }

    /// The same, and early media on the checked pair without nominating it
    /// (a ringing fork's early media in media bypass).
    pub fn check_with_early_media(
        &mut self,
        frames: u32,
        rng: &mut SeededRng,
    ) -> Option<ProbeCommand> {
        self.ice.as_ref()?;
        self.plan(frames, rng, false, true)
    }

    fn plan(
        &mut self,
        frames: u32,
        rng: &mut SeededRng,
        talk: bool,
        early_media: bool,
    ) -> Option<ProbeCommand> {
        if self.started || self.closed {
            return None;
        }
        let (local, remote) = (self.local.as_ref()?, self.remote.as_ref()?);
        let ice = match &self.ice {
            Some((ours, tiebreaker)) => {
                let mut theirs = Credentials::of(remote)?;
                if self.ice_wrong_password {
                    theirs.pwd = theirs.pwd.chars().rev().collect();
                }
                Some(IceCheckPlan {
                    local: ours.clone(),
                    remote: theirs,
                    nominate: talk,
                    early_media,
                    tiebreaker: *tiebreaker,
                })
            }
            None => None,
        };
        let ssrc = *self.ssrc.get_or_insert_with(|| rng.next_u32());
        let mut plan = ProbePlan::between(local, remote, ssrc, frames)?;
        plan.ice = ice;
        self.started = talk;
        Some(ProbeCommand::Plan {
            id: self.id,
            plan: Box::new(plan),
        })
    }

    /// The other side's SDP arrived, in a provisional (early media) or in
    /// the answer (`answered`): keep it and start talking once both sides
    /// agree on a codec. `Err` when the call is answered and still no
    /// audio can flow (the SDP shares nothing usable).
    pub fn heard(
        &mut self,
        sdp: Option<SessionDescription>,
        answered: bool,
        frames: u32,
        rng: &mut SeededRng,
    ) -> Result<Option<ProbeCommand>, &'static str> {
        if let Some(sd) = sdp {
            self.remote = Some(sd);
        }
        match self.start(frames, rng) {
            Some(cmd) => Ok(Some(cmd)),
            None if answered && !self.started => Err("the answer has no usable audio"),
            None => Ok(None),
        }
    }

    /// Answer a re-INVITE's offer (RFC 3264 §8) from this end's own media:
    /// the same address, port, key and origin, the direction mirrored, the
    /// codecs limited to the one in use. The audio goes on as it was: a
    /// far end keeps talking on hold, and what the SBC relays shows it.
    pub fn answer_reinvite(
        &mut self,
        offer: SessionDescription,
    ) -> Result<SessionDescription, String> {
        let (Some(media), Some(local)) = (self.media.as_ref(), self.local.as_ref()) else {
            return Err("no description of our own yet".into());
        };
        let mut media = media.clone();
        if let Some(a) = self
            .remote
            .as_ref()
            .and_then(|r| sbc::sip::sdp::offer_answer::agreed(local, r))
        {
            media.codecs.retain(|c| {
                c.name.eq_ignore_ascii_case(&a.codec.name) || c.name == "telephone-event"
            });
        }
        let answer = media
            .answer(&offer, local.origin.clone())
            .map_err(|e| e.to_string())?;
        self.remote = Some(offer);
        self.local = Some(answer.clone());
        Ok(answer)
    }

    /// Stop the probe (the call ended); once.
    pub fn close(&mut self) -> Option<ProbeCommand> {
        if self.closed {
            return None;
        }
        self.closed = true;
        Some(ProbeCommand::Close { id: self.id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a fake clock's origin
    fn a_callee_rings_then_answers_on_time() {
        let t0 = Instant::now();
        let mut c = Callee::new(
            t0,
            Answering {
                ring_after: Duration::from_millis(500),
                answer_after: Duration::from_secs(45),
            },
        );
        assert_eq!(c.handle_timeout(t0), None);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_millis(500)));
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(c.handle_timeout(t1), Some(CalleeStep::Ring));
        assert_eq!(c.poll_timeout(), Some(t1 + Duration::from_secs(45)));
        assert_eq!(
            c.handle_timeout(t1 + Duration::from_secs(45)),
            Some(CalleeStep::Answer)
        );
        assert_eq!(c.poll_timeout(), None);
    }
}
