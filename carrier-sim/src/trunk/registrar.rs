//! A registration trunk's registrar and authenticator (RFC 3261 §10.3,
//! §22; RFC 7616 and RFC 8760 for MD5 / SHA-256 with `qop=auth`): the
//! SBC's REGISTER is challenged with 401, its INVITEs (when the trunk asks)
//! with 407; an expired nonce with the right password gets a new challenge
//! with `stale=true`; a wrong password gets 403. The binding says where
//! the trunk sends calls for the SBC.

use sbc::sip::digest::{Algorithm, Credentials, DigestServer, ServerConfig, Verdict};
use sbc::sip::rng::SeededRng;
use sbc::sip::session::Reply;
use sbc::sip::wire::Message;
use std::time::{Duration, Instant};

/// What the trunk asks of the SBC.
#[derive(Clone, PartialEq, Eq)]
pub struct TrunkAuth {
    pub realm: String,
    pub username: String,
    pub password: String,
    /// Offered in this order, one challenge header each (RFC 8760 §2.4).
    pub algorithms: Vec<Algorithm>,
    pub nonce_lifetime: Duration,
    /// Challenge the SBC's INVITEs too (407).
    pub challenge_invites: bool,
    /// The longest binding granted (RFC 3261 §10.3 step 7: the registrar
    /// may shorten it); shorter requests are refused below 60 s (423).
    pub max_expires: u32,
}

impl std::fmt::Debug for TrunkAuth {
    // Never a password in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkAuth")
            .field("realm", &self.realm)
            .field("username", &self.username)
            .field("algorithms", &self.algorithms)
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("challenge_invites", &self.challenge_invites)
            .field("max_expires", &self.max_expires)
            .finish_non_exhaustive()
    }
}

/// RFC 3261 §10.3 step 7: registrars refuse very short bindings (423).
pub const MIN_EXPIRES: u32 = 60;

/// Where the registered SBC takes calls, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI, without angle brackets.
    pub contact: String,
    pub expires_at: Instant,
}

/// The judgement on a request that must carry credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    Ok,
    /// Answer with this (401/407 with challenges, 403).
    Refuse(Box<Reply>, String),
}

#[derive(Debug)]
pub struct Registrar {
    auth: TrunkAuth,
    server: DigestServer,
    binding: Option<Binding>,
}

impl Registrar {
    pub fn new(auth: TrunkAuth) -> Self {
        let server = DigestServer::new(ServerConfig {
            realm: auth.realm.clone(),
            algorithms: auth.algorithms.clone(),
            nonce_lifetime: auth.nonce_lifetime,
            qop_auth: true,
        });
        Registrar {
            auth,
            server,
            binding: None,
        }
    }

    pub fn challenges_invites(&self) -> bool {
        self.auth.challenge_invites
    }

    /// The binding, while it lasts.
    pub fn binding(&self, now: Instant) -> Option<&Binding> {
        self.binding.as_ref().filter(|b| b.expires_at > now)
    }

    /// Check `request`'s credentials (`Authorization` for REGISTER,
    /// `Proxy-Authorization` for INVITE).
    pub fn judge(&mut self, now: Instant, rng: &mut SeededRng, request: &Message) -> Judgement {
        self.server.expire(now);
        let method = request.method().map(|m| m.to_string()).unwrap_or_default();
        let register = method == "REGISTER";
        let (code, phrase, challenge_header, answer_header) = if register {
            (401, "Unauthorized", "WWW-Authenticate", "Authorization")
        } else {
            (
                407,
                "Proxy Authentication Required",
                "Proxy-Authenticate",
                "Proxy-Authorization",
            )
        };
        let creds = request.headers.get(answer_header).map(Credentials::parse);
        let verdict = match &creds {
            None => None,
            Some(Err(e)) => Some(Verdict::Wrong(match e {
                sbc::sip::digest::DigestError::MissingParam(_) => "missing parameter",
                _ => "unreadable credentials",
            })),
            Some(Ok(c)) if c.username != self.auth.username => Some(Verdict::Wrong("unknown user")),
            // RFC 3261 §22.4: the digest-uri is the Request-URI.
            Some(Ok(c)) if Some(c.uri.as_str()) != request.request_uri() => {
                Some(Verdict::Wrong("uri is not the Request-URI"))
            }
            Some(Ok(c)) => Some(
                self.server
                    .verify(now, &method, c, Some(&self.auth.password)),
            ),
        };
        let challenge = |server: &mut DigestServer, rng: &mut SeededRng, stale: bool| {
            let fresh = rng.hex(16);
            let mut reply = Reply::new(code, phrase);
            for c in server.challenge(now, &fresh, stale) {
                reply = reply.header(challenge_header, c.to_string());
            }
            reply
        };
        match verdict {
            Some(Verdict::Ok) => Judgement::Ok,
            None => Judgement::Refuse(
                Box::new(challenge(&mut self.server, rng, false)),
                format!("{method} without credentials: challenged"),
            ),
            Some(Verdict::Stale) => Judgement::Refuse(
                Box::new(challenge(&mut self.server, rng, true)),
                format!("{method} with a stale nonce: challenged again (stale=true)"),
            ),
            // A nonce we never issued or no longer know (a restart, the
            // cap): nothing was judged yet, so a fresh challenge, marked
            // stale so the client answers it without taking it for a
            // refusal (RFC 7616 §3.3).
            Some(Verdict::Wrong("unknown nonce")) => Judgement::Refuse(
                Box::new(challenge(&mut self.server, rng, true)),
                format!("{method} with a nonce this registrar does not know: challenged afresh"),
            ),
            Some(Verdict::Wrong(why)) => Judgement::Refuse(
                Box::new(Reply::new(403, "Forbidden")),
                format!("{method} refused: {why}"),
            ),
        }
    }

    /// A REGISTER whose credentials passed: bind (or unbind with
    /// `Expires: 0`, RFC 3261 §10.2.2) and say what to answer.
    pub fn register(&mut self, now: Instant, request: &Message) -> Reply {
        let contact = request
            .headers
            .get("Contact")
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
        let (uri, params) = match contact.split_once('>') {
            Some((u, p)) => (u.trim_start_matches('<').to_string(), p.to_string()),
            None => (contact.clone(), String::new()),
        };
        let asked = params
            .split(';')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("expires"))
            .and_then(|(_, v)| v.trim().parse::<u32>().ok())
            .or_else(|| request.headers.get("Expires")?.trim().parse().ok())
            .unwrap_or(3600);
        if uri.is_empty() {
            // RFC 3261 §10.2.3: no Contact is a query: the bindings as
            // they are.
            return match self.binding(now) {
                Some(b) => {
                    let left = b.expires_at.saturating_duration_since(now).as_secs();
                    Reply::new(200, "OK")
                        .header("Contact", format!("<{}>;expires={left}", b.contact))
                }
                None => Reply::new(200, "OK"),
            };
        }
        if contact == "*" {
            // RFC 3261 §10.2.2: remove every binding.
            self.binding = None;
            return Reply::new(200, "OK");
        }
        if asked == 0 {
            self.binding = None;
            return Reply::new(200, "OK");
        }
        if asked < MIN_EXPIRES {
            return Reply::new(423, "Interval Too Brief")
                .header("Min-Expires", MIN_EXPIRES.to_string());
        }
        let granted = asked.min(self.auth.max_expires);
        self.binding = Some(Binding {
            contact: uri.clone(),
            expires_at: now + Duration::from_secs(u64::from(granted)),
        });
        Reply::new(200, "OK")
            .header("Contact", format!("<{uri}>;expires={granted}"))
            .header("Expires", granted.to_string())
    }
}
