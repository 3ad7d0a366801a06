//! Registration to the carrier (a registration trunk, RFC 3261 §10.2):
//! REGISTER with digest credentials (RFC 7616, RFC 8760: MD5 or SHA-256,
//! `qop=auth`), a new answer for a `stale=true` nonce, a refresh before
//! the binding expires, and a retry after a failure. Sans-IO: the SBC's
//! role calls it with `now` and the user agent; it never waits.

use crate::sip::digest::{self, Challenge};
use crate::sip::session::{Hop, RequestBuilder};
use crate::sip::transaction::TransactionKey;
use crate::sip::ua::UserAgent;
use crate::sip::wire::{Message, Method};
use std::time::{Duration, Instant};

/// What the SBC registers with (`[carrier.registration]` in sbc.toml).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// The registrar's domain: the Request-URI and the AOR's host.
    pub domain: String,
    pub username: String,
    pub password: String,
    /// The realm the credentials are for; `None`: the registrar's.
    pub realm: Option<String>,
    /// The binding lifetime asked for (the registrar may grant less).
    pub expires: u32,
}

impl std::fmt::Debug for RegistrationConfig {
    // Never a password in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationConfig")
            .field("domain", &self.domain)
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Where the registration stands (in the SBC's view).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RegistrationState {
    #[default]
    Unregistered,
    /// A REGISTER is out.
    Registering,
    /// Bound for this many seconds from the 200 (`Expires` granted).
    Registered { expires: u32 },
    /// Refused or unanswered; why, and tried again later.
    Failed(String),
}

/// How long after a failure the SBC tries again (RFC 5626 §4.5 suggests
/// backing off; a fixed minute keeps a lab readable).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub struct Registration {
    config: RegistrationConfig,
    /// Our Contact (where the carrier sends calls).
    contact: String,
    /// RFC 3261 §10.2.4: refreshes keep the Call-ID and From tag and
    /// raise CSeq.
    call_id: Option<String>,
    from_tag: Option<String>,
    cseq: u32,
    pending: Option<TransactionKey>,
    /// The challenge we answer on refreshes (RFC 7616 §3.4: the nonce may
    /// be reused with a higher nc) and its count.
    challenge: Option<Challenge>,
    nc: u32,
    /// Answers with credentials to the current REGISTER's challenges, and
    /// the header they go in (`Authorization` for a 401, `Proxy-
    /// Authorization` for a 407: RFC 3261 §22.3).
    tries: u32,
    answer_header: &'static str,
    /// 423s answered for the current REGISTER.
    interval_tries: u32,
    /// Failures in a row: the wait before the next try doubles with each
    /// (a wrong password must not hammer the carrier into locking the
    /// account).
    failures: u32,
    next_at: Option<Instant>,
    pub state: RegistrationState,
    /// REGISTERs sent, 200s received (for the view).
    pub sent: u64,
    pub registered: u64,
}

impl Registration {
    pub fn new(config: RegistrationConfig, contact: String) -> Self {
        Registration {
            config,
            contact,
            call_id: None,
            from_tag: None,
            cseq: 0,
            pending: None,
            challenge: None,
            nc: 0,
            tries: 0,
            answer_header: "Authorization",
            interval_tries: 0,
            failures: 0,
            next_at: None,
            state: RegistrationState::Unregistered,
            sent: 0,
            registered: 0,
        }
    }

    /// Register now (at start).
    pub fn start(&mut self, now: Instant) {
        self.next_at = Some(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_at
    }

    /// The realm of the registrar's last challenge.
    pub fn realm(&self) -> Option<String> {
        self.challenge.as_ref().map(|c| c.realm.clone())
    }

    pub fn is_registered(&self) -> bool {
        matches!(self.state, RegistrationState::Registered { .. })
    }

    /// Send what is due; errors are the caller's to log.
    pub fn on_timeout(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        hop: &Hop,
        host: &str,
    ) -> Result<(), String> {
        if self.next_at.is_none_or(|t| t > now) {
            return Ok(());
        }
        self.next_at = None;
        self.tries = 0;
        self.interval_tries = 0;
        // A refresh answers the last challenge again (nc + 1); the
        // registrar challenges afresh when it has forgotten the nonce.
        let auth = self.challenge.clone();
        self.send(now, ua, hop, host, auth.as_ref())
    }

    fn send(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        hop: &Hop,
        host: &str,
        challenge: Option<&Challenge>,
    ) -> Result<(), String> {
        let c = self.config.clone();
        let aor = format!("<sip:{}@{}>", c.username, c.domain);
        let ruri = format!("sip:{}", c.domain);
        self.cseq += 1;
        let mut m = RequestBuilder::new(Method::Register, ruri.clone(), aor.clone(), aor)
            .cseq(self.cseq)
            .contact(self.contact.clone())
            .header("Expires", c.expires.to_string())
            .build(ua.rng(), host);
        // Keep the first REGISTER's Call-ID and From tag.
        match (&self.call_id, &self.from_tag) {
            (Some(id), Some(tag)) => {
                m.headers.set("Call-ID", id.clone());
                let from = format!("<sip:{}@{}>;tag={tag}", c.username, c.domain);
                m.headers.set("From", from);
            }
            _ => {
                self.call_id = m.headers.get("Call-ID").map(str::to_string);
                self.from_tag = m
                    .headers
                    .get("From")
                    .and_then(|f| f.split_once(";tag="))
                    .map(|(_, t)| t.to_string());
            }
        }
        if let Some(ch) = challenge {
            self.nc += 1;
            let cnonce = ua.rng().hex(16);
            let answer = digest::answer(
                ch,
                &c.username,
                &c.password,
                "REGISTER",
                &ruri,
                &cnonce,
                self.nc,
            );
            match answer {
                Ok(creds) => m.headers.set(self.answer_header, creds.to_string()),
                Err(e) => {
                    let why = format!("cannot answer the registrar's challenge: {e}");
                    self.fail(now, why.clone());
                    return Err(why);
                }
            }
        }
        self.state = RegistrationState::Registering;
        self.sent += 1;
        match ua.send_request(now, m, hop.clone()) {
            Ok(key) => {
                self.pending = Some(key);
                Ok(())
            }
            Err(e) => {
                self.fail(now, format!("REGISTER not sent: {e}"));
                Err(format!("REGISTER to {}: {e}", c.domain))
            }
        }
    }

    fn fail(&mut self, now: Instant, why: String) {
        self.pending = None;
        self.challenge = None;
        self.state = RegistrationState::Failed(why);
        // 60 s, 2 min, 4 min ... up to an hour.
        let wait = RETRY_AFTER_FAILURE * 2u32.saturating_pow(self.failures.min(6));
        self.failures += 1;
        self.next_at = Some(now + wait.min(MAX_RETRY_WAIT));
    }

    /// A response to one of our REGISTERs; `false` when it is not ours.
    /// `Err` carries a line for the SBC's problem log.
    pub fn on_response(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        hop: &Hop,
        host: &str,
        key: &TransactionKey,
        response: &Message,
    ) -> Option<Result<(), String>> {
        if self.pending.as_ref() != Some(key) {
            return None;
        }
        let code = response.status().unwrap_or(0);
        if code < 200 {
            return Some(Ok(()));
        }
        self.pending = None;
        Some(match code {
            200..=299 => {
                let granted =
                    granted_expires(response, &self.contact).unwrap_or(self.config.expires);
                self.state = RegistrationState::Registered { expires: granted };
                self.registered += 1;
                self.failures = 0;
                self.next_at = Some(now + refresh_after(granted));
                Ok(())
            }
            401 | 407 => self.answer_challenge(now, ua, hop, host, response),
            423 => {
                // RFC 3261 §10.2.8: ask again for at least Min-Expires.
                match response
                    .headers
                    .get("Min-Expires")
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .filter(|m| *m > self.config.expires && self.interval_tries < 2)
                {
                    Some(min) => {
                        self.config.expires = min;
                        self.interval_tries += 1;
                        let ch = self.challenge.clone();
                        self.send(now, ua, hop, host, ch.as_ref())
                    }
                    None => {
                        self.fail(now, "423 without a usable Min-Expires".into());
                        Err("registration refused: 423 Interval Too Brief".into())
                    }
                }
            }
            _ => {
                let line = response.summary();
                self.fail(now, line.clone());
                Err(format!("registration refused: {line}"))
            }
        })
    }

    fn answer_challenge(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        hop: &Hop,
        host: &str,
        response: &Message,
    ) -> Result<(), String> {
        let (header, answer) = if response.status() == Some(407) {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let challenges: Vec<Challenge> = response
            .headers
            .lines(header)
            .filter_map(|v| Challenge::parse(v).ok())
            .filter(|c| self.config.realm.as_ref().is_none_or(|r| *r == c.realm))
            .collect();
        let Some(challenge) = digest::pick(&challenges).cloned() else {
            let why = format!("{}: no challenge we can answer", response.summary());
            self.fail(now, why.clone());
            return Err(format!("registration refused: {why}"));
        };
        // Our credentials were refused unless the nonce merely went stale
        // (RFC 7616 §3.3); and never more than three answers in a row.
        let refused = self.tries > 0 && !challenge.stale;
        if refused || self.tries >= 3 {
            let why = format!(
                "{} to our credentials (wrong password?)",
                response.summary()
            );
            self.fail(now, why.clone());
            return Err(format!("registration refused: {why}"));
        }
        self.tries += 1;
        self.nc = 0;
        self.answer_header = answer;
        self.challenge = Some(challenge.clone());
        self.send(now, ua, hop, host, Some(&challenge))
    }

    /// The REGISTER went unanswered or could not be sent.
    pub fn on_failed(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        reason: Option<String>,
    ) -> Option<String> {
        if self.pending.as_ref() != Some(key) {
            return None;
        }
        let why = reason.unwrap_or_else(|| "no answer (Timer F)".into());
        self.fail(now, why.clone());
        Some(format!("REGISTER to {}: {why}", self.config.domain))
    }
}

/// The lifetime the registrar granted our binding (RFC 3261 §10.2.4: the
/// Contact's `expires` parameter, else the Expires header).
fn granted_expires(response: &Message, contact: &str) -> Option<u32> {
    let ours = contact.trim_matches(|c| c == '<' || c == '>');
    let from_contact = response.headers.values("Contact").find_map(|c| {
        let (uri, params) = c.split_once('>').unwrap_or((c, ""));
        if !uri.trim_start_matches('<').eq_ignore_ascii_case(ours) {
            return None;
        }
        params
            .split(';')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("expires"))
            .and_then(|(_, v)| v.trim().parse().ok())
    });
    from_contact.or_else(|| response.headers.get("Expires")?.trim().parse().ok())
}

/// Refresh at half the granted lifetime, so a lost REGISTER has time for
/// its retransmissions (Timer F, 32 s) and one more try before expiry;
/// never sooner than 30 s (a registrar granting 0 or 1 s must not be
/// flooded).
fn refresh_after(expires: u32) -> Duration {
    Duration::from_secs(u64::from(expires / 2).max(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_granted_lifetime_is_read_from_our_contact_then_expires() {
        let ours = "<sip:sbc1@192.0.2.1:5060>";
        let mut m = Message::parse(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\nContact: <sip:other@192.0.2.9>;expires=30, <sip:sbc1@192.0.2.1:5060>;expires=120\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(granted_expires(&m, ours), Some(120));
        m.headers.remove("Contact");
        assert_eq!(granted_expires(&m, ours), Some(600));
        m.headers.remove("Expires");
        assert_eq!(granted_expires(&m, ours), None);
        assert_eq!(refresh_after(120), Duration::from_secs(60));
        assert_eq!(refresh_after(0), Duration::from_secs(30));
    }
}
