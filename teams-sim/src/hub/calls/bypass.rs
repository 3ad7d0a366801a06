//! A media bypass call that moves to a media processor (behaviour §5,
//! "ICE restart on transfer"; case 9.49): when a bypass call goes to an
//! endpoint that cannot take media directly, the hub inserts a media
//! processor and re-INVITEs the SBC with the processor's address and new
//! ICE credentials. That is an ICE restart (RFC 8445 §9, RFC 8839
//! §4.4.1.1.1): the SBC must answer with new credentials of its own and
//! let the processor check and nominate a new pair. The processor runs
//! full ICE as the controlling agent, as the clients do.

use super::{mp_media, teams_crypto, CallState, Proxy};
use drlab_sim::far_end::Talk;
use sbc::sip::sdp::SessionDescription;
use sbc::sip::session::SessionId;
use sbc::sip::ua::UserAgent;
use std::time::Instant;

impl Proxy {
    /// Move `user`'s answered bypass call to a media processor; `false`
    /// when the user has no such call on this proxy.
    pub(crate) fn move_to_media_processor(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        user: &str,
    ) -> bool {
        let found = self.calls.iter().find(|(_, c)| {
            c.user == user
                && c.why.is_none()
                && !c.superseded
                && c.talk.ice.is_some()
                && c.moving_to.is_none()
        });
        let Some((&id, call)) = found else {
            return false;
        };
        let Some(codec) = (call.talk.local.as_ref())
            .zip(call.talk.remote.as_ref())
            .and_then(|(l, r)| sbc::sip::sdp::offer_answer::agreed(l, r))
            .map(|a| a.codec)
        else {
            return false;
        };
        let (host, ip, port, key) = match self.media_endpoint(ua, None) {
            Ok(m) => m,
            Err(e) => {
                self.problem("media", format!("media processor: {e}"));
                return true;
            }
        };
        // The processor keeps the codec in use (no transcoding asked of
        // the SBC), with ICE credentials of its own.
        let mut media = mp_media(ip, port, &key);
        media
            .codecs
            .retain(|c| c.name == codec.name || c.name == "telephone-event");
        let origin = self.origin(ua, ip);
        let ice = Self::client_ice(ua, &mut media);
        let mut offer = media.offer(origin);
        teams_crypto(&mut offer, false);
        let mut talk = self.open_talk(&host, port);
        talk.ice_wrong_password = self.view().ice_wrong_password;
        talk.ice = Some(ice);
        talk.media = Some(media);
        talk.local = Some(offer.clone());
        match ua.reinvite(now, id, offer, Vec::new()) {
            Ok(()) => {
                if let Some(c) = self.calls.get_mut(&id) {
                    c.moving_to = Some(talk);
                }
            }
            Err(e) => {
                self.problem("reinvite", format!("moving {user}'s call: {e}"));
                self.drop_talk(talk);
            }
        }
        true
    }

    /// The re-INVITE that moves a call to a media processor ended: with the
    /// SBC's answer the processor takes over (it checks, nominates, talks)
    /// and the client stops; without one, the client stays. An answer that
    /// keeps the SBC's old ICE credentials is held against the SBC (case
    /// 9.49: it must restart ICE).
    pub(super) fn moved(
        &mut self,
        ua: &mut UserAgent,
        id: SessionId,
        mut talk: Talk,
        answer: Option<SessionDescription>,
    ) {
        let (Some(answer), Some(c)) = (answer, self.calls.get_mut(&id)) else {
            return self.drop_talk(talk);
        };
        let before = c
            .talk
            .remote
            .as_ref()
            .and_then(SessionDescription::audio_ice);
        let after = answer.audio_ice();
        if after.is_none() || after == before {
            let line = format!(
                "{} kept its ICE credentials when the hub restarted ICE (case 9.49)",
                c.sbc
            );
            self.view().sbc_violations.push(line);
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        talk.remote = Some(answer);
        let old = std::mem::replace(&mut c.talk, talk);
        c.media_port = c.talk.port;
        let frames = self.config.media_frames;
        let start = c.talk.start(frames, ua.rng());
        let (serial, stats) = (c.serial, c.talk.stats.clone());
        if let Some(cmd) = start {
            self.media_out.push_back(cmd);
        }
        if let Some(v) = self.view().call_mut(serial) {
            v.media = stats;
        }
        self.drop_talk(old);
        self.set_state(serial, CallState::Answered);
    }

    /// Stop a probe of a call's Teams side and free its port (a bridge's
    /// near leg has neither: port 0).
    pub(super) fn drop_talk(&mut self, mut talk: Talk) {
        if let Some(cmd) = talk.close() {
            self.media_out.push_back(cmd);
        }
        if talk.port != 0 {
            self.view().release_media(talk.port);
        }
    }
}
