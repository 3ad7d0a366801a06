//! SIP Digest authentication, sans-IO: RFC 3261 §22 with RFC 7616 for the
//! algorithms and `qop=auth`, and RFC 8760 for SHA-256 in SIP.
//!
//! Both halves live here:
//!
//! * the client ([`answer`], [`pick`]): a UA answering a 401
//!   `WWW-Authenticate` or 407 `Proxy-Authenticate` challenge, e.g. the SBC
//!   registering to a carrier or answering the carrier's challenge on INVITE;
//! * the server ([`DigestServer`]): a carrier challenging REGISTER and
//!   INVITE, verifying credentials and expiring nonces with `stale=true`.
//!
//! Plus the header-value codec for both ([`Challenge`], [`Credentials`]).
//!
//! Nothing here touches a socket, reads a clock or draws randomness: the
//! caller passes `now` and any random text (nonces, cnonces) it drew from
//! its own seeded RNG, so a simulated world replays bit for bit.
//!
//! What it does not do:
//! * `qop=auth-int` (the body hash): offered alone, it is a typed error;
//! * the `-sess` algorithms and SHA-512-256 (RFC 7616 §3.3): they parse to
//!   [`DigestError::UnsupportedAlgorithm`];
//! * `userhash` and the `username*` extended notation (RFC 7616 §3.4.4);
//!   they are ignored as unknown parameters;
//! * `Authentication-Info` / `nextnonce` (RFC 7616 §3.5);
//! * nonce-count reuse across nonces: the count is tracked per nonce, and a
//!   client starts again at 1 with every new nonce (RFC 7616 §3.4);
//! * several challenges in one header value: SIP never combines these
//!   header fields into one row (RFC 3261 §7.3.1), so each value holds one.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use sha2::Sha256;

/// How many nonces a [`DigestServer`] keeps at most. Every 401/407 issues
/// one, so without a cap a flood of unauthenticated requests would grow
/// memory without bound; past the cap the oldest is forgotten, and a client
/// still using it gets [`Verdict::Stale`] (a fresh challenge) instead of
/// `Ok`, which costs it one round trip and nothing else.
pub const MAX_LIVE_NONCES: usize = 10_000;

/// How much of the caller's `fresh` text goes into a nonce, so that one
/// nonce cannot be made arbitrarily large either.
const MAX_FRESH_CHARS: usize = 128;

/// A digest algorithm this module implements (RFC 7616 §3.3, RFC 8760 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Algorithm {
    /// `MD5`, also what a missing `algorithm` parameter means (RFC 7616 §3.3).
    #[default]
    Md5,
    /// `SHA-256` (RFC 7616 §3.3, RFC 8760 §2).
    Sha256,
}

impl Algorithm {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Parses a wire name, case-insensitively (RFC 7616 §3.3). The `-sess`
    /// variants, SHA-512-256 and anything else are unsupported.
    pub fn parse(name: &str) -> Result<Self, DigestError> {
        if name.eq_ignore_ascii_case("MD5") {
            Ok(Algorithm::Md5)
        } else if name.eq_ignore_ascii_case("SHA-256") {
            Ok(Algorithm::Sha256)
        } else {
            Err(DigestError::UnsupportedAlgorithm(name.to_string()))
        }
    }

    /// `H(parts joined by ':')` as lower-case hex (RFC 7616 §3.4.1).
    fn hash_hex(self, parts: &[&str]) -> String {
        match self {
            Algorithm::Md5 => hex(&hash_joined::<Md5>(parts)),
            Algorithm::Sha256 => hex(&hash_joined::<Sha256>(parts)),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::parse(s)
    }
}

/// Why a header value could not be parsed or a challenge not answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestError {
    /// The value names another scheme (`Basic`, ...), or none at all.
    NotDigest(String),
    /// A defect in the auth-param list; the text says which.
    Syntax(&'static str),
    /// A quoted string runs to the end of the value.
    UnterminatedQuote,
    /// A parameter appears twice (name lower-cased).
    DuplicateParam(String),
    /// A parameter the RFC requires is absent.
    MissingParam(&'static str),
    /// An `algorithm` other than MD5 and SHA-256, as written.
    UnsupportedAlgorithm(String),
    /// The challenge offers no qop this module implements (only `auth-int`);
    /// the offered list, comma-joined.
    UnsupportedQop(String),
    /// An `nc` that is not 8 lower-case hex digits (RFC 3261 §25.1 `8LHEX`).
    BadNc(String),
    /// An argument to [`answer`] that cannot make valid credentials.
    BadInput(&'static str),
}

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DigestError::NotDigest(scheme) => {
                write!(f, "not a Digest header value (scheme {scheme:?})")
            }
            DigestError::Syntax(what) => write!(f, "digest header syntax: {what}"),
            DigestError::UnterminatedQuote => f.write_str("unterminated quoted string"),
            DigestError::DuplicateParam(name) => write!(f, "duplicate parameter {name:?}"),
            DigestError::MissingParam(name) => write!(f, "missing parameter {name:?}"),
            DigestError::UnsupportedAlgorithm(name) => {
                write!(f, "unsupported digest algorithm {name:?}")
            }
            DigestError::UnsupportedQop(offered) => {
                write!(f, "no supported qop among {offered:?} (only auth is)")
            }
            DigestError::BadNc(nc) => write!(f, "nc {nc:?} is not 8 lower-case hex digits"),
            DigestError::BadInput(what) => write!(f, "cannot answer: {what}"),
        }
    }
}

impl std::error::Error for DigestError {}

/// A `Digest` challenge: the value of a `WWW-Authenticate` (401) or
/// `Proxy-Authenticate` (407) header field (RFC 3261 §22.4, RFC 7616 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The qop values offered, in order; empty means none was offered and
    /// the client answers in the RFC 2069 form (RFC 3261 §22.4).
    pub qop: Vec<String>,
    pub stale: bool,
}

impl Challenge {
    /// Parses a header value such as `Digest realm="a", nonce="b"`.
    /// `realm` and `nonce` are required; `qop` is a quoted comma list
    /// (a bare token is tolerated); `stale` is true only when it says
    /// `true` in any case (RFC 7616 §3.3: anything else means false).
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let mut params = parse_params(value)?;
        let realm = take(&mut params, "realm")?;
        let nonce = take(&mut params, "nonce")?;
        let algorithm = match params.get("algorithm") {
            Some(name) => Algorithm::parse(name)?,
            None => Algorithm::Md5,
        };
        let qop = params
            .get("qop")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|q| !q.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let stale = params
            .get("stale")
            .is_some_and(|s| s.eq_ignore_ascii_case("true"));
        let opaque = params.remove("opaque");
        Ok(Challenge {
            realm,
            nonce,
            opaque,
            algorithm,
            qop,
            stale,
        })
    }
}

impl fmt::Display for Challenge {
    /// realm, nonce, algorithm, qop, opaque, stale (only when true): realm
    /// and nonce first as in the RFC 3261 §22.4 and RFC 7616 §3.9 examples;
    /// the order carries no meaning (RFC 7235 §2.1). `algorithm` is always
    /// written, though MD5 is the default, so that no peer guesses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest realm=")?;
        write_quoted(f, &self.realm)?;
        f.write_str(", nonce=")?;
        write_quoted(f, &self.nonce)?;
        write!(f, ", algorithm={}", self.algorithm)?;
        if !self.qop.is_empty() {
            f.write_str(", qop=")?;
            write_quoted(f, &self.qop.join(","))?;
        }
        if let Some(opaque) = &self.opaque {
            f.write_str(", opaque=")?;
            write_quoted(f, opaque)?;
        }
        if self.stale {
            f.write_str(", stale=true")?;
        }
        Ok(())
    }
}

/// `Digest` credentials: the value of an `Authorization` or
/// `Proxy-Authorization` header field (RFC 3261 §22.2, RFC 7616 §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    /// The digest-uri; the owner compares it with the Request-URI
    /// (RFC 2617 §3.2.2.5, which RFC 3261 §22.4 builds on); this module
    /// cannot.
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub cnonce: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<u32>,
    pub opaque: Option<String>,
}

impl Credentials {
    /// Parses a header value such as `Digest username="u", realm="r", ...`.
    /// `username`, `realm`, `nonce`, `uri` and `response` are required, and
    /// with a `qop` also `cnonce` and `nc` (RFC 7616 §3.4); a missing
    /// `algorithm` means MD5.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let mut params = parse_params(value)?;
        let username = take(&mut params, "username")?;
        let realm = take(&mut params, "realm")?;
        let nonce = take(&mut params, "nonce")?;
        let uri = take(&mut params, "uri")?;
        let response = take(&mut params, "response")?;
        let algorithm = match params.get("algorithm") {
            Some(name) => Algorithm::parse(name)?,
            None => Algorithm::Md5,
        };
        let qop = params.remove("qop");
        let cnonce = params.remove("cnonce");
        let nc = params.remove("nc").map(|nc| parse_nc(&nc)).transpose()?;
        if qop.is_some() {
            if cnonce.is_none() {
                return Err(DigestError::MissingParam("cnonce"));
            }
            if nc.is_none() {
                return Err(DigestError::MissingParam("nc"));
            }
        }
        let opaque = params.remove("opaque");
        Ok(Credentials {
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm,
            cnonce,
            qop,
            nc,
            opaque,
        })
    }
}

impl fmt::Display for Credentials {
    /// username, realm, nonce, uri, response, algorithm, cnonce, qop, nc,
    /// opaque: the identifying parameters first, as in the RFC 3261 §22.4
    /// and RFC 7616 §3.9 examples; the order carries no meaning.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest username=")?;
        write_quoted(f, &self.username)?;
        f.write_str(", realm=")?;
        write_quoted(f, &self.realm)?;
        f.write_str(", nonce=")?;
        write_quoted(f, &self.nonce)?;
        f.write_str(", uri=")?;
        write_quoted(f, &self.uri)?;
        f.write_str(", response=")?;
        write_quoted(f, &self.response)?;
        write!(f, ", algorithm={}", self.algorithm)?;
        if let Some(cnonce) = &self.cnonce {
            f.write_str(", cnonce=")?;
            write_quoted(f, cnonce)?;
        }
        if let Some(qop) = &self.qop {
            // A token on the wire (RFC 3261 §25.1 message-qop); quoted only
            // if someone put non-token text in it, so it still parses.
            f.write_str(", qop=")?;
            write_token_or_quoted(f, qop)?;
        }
        if let Some(nc) = self.nc {
            write!(f, ", nc={nc:08x}")?;
        }
        if let Some(opaque) = &self.opaque {
            f.write_str(", opaque=")?;
            write_quoted(f, opaque)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

/// Chooses the challenge to answer among those of one 401/407, in header
/// order.
///
/// RFC 8760 §2.4 (via RFC 7616 §3.7): the server lists its challenges in
/// its order of preference and the client uses the first one it supports.
/// Both MD5 and SHA-256 are supported here, so this does not rank SHA-256
/// above MD5 by itself: it takes the first challenge it can answer, which
/// is SHA-256 whenever the server prefers it (RFC 8760 §2.3 has servers
/// list the stronger algorithms first). "Can answer" means a supported algorithm (those that did
/// not parse are not in the slice: the caller skips values that fail with
/// [`DigestError::UnsupportedAlgorithm`]) and either no qop or one that
/// includes `auth`. A caller that needs a particular realm filters first.
pub fn pick(challenges: &[Challenge]) -> Option<&Challenge> {
    challenges.iter().find(|c| answerable_qop(c).is_ok())
}

/// Answers `challenge` for a request with `method` and Request-URI `uri`
/// (RFC 3261 §22.2/§22.3, RFC 7616 §3.4.1).
///
/// With `auth` among the offered qop values the answer uses `qop=auth`,
/// this `cnonce` (from the caller's seeded RNG) and this nonce count
/// (1 for the first request on a nonce, then 2, ...):
/// `response = H(HA1:nonce:nc:cnonce:auth:HA2)`. With no qop offered it is
/// the RFC 2069 form `H(HA1:nonce:HA2)` and `cnonce`/`nc` are not used.
/// `HA1 = H(username:realm:password)`, `HA2 = H(method:uri)`, lower-case
/// hex. The challenge's `opaque` is echoed (RFC 7616 §3.4).
pub fn answer(
    challenge: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Result<Credentials, DigestError> {
    let use_qop = answerable_qop(challenge)?;
    if username.is_empty() {
        return Err(DigestError::BadInput("empty username"));
    }
    if uri.is_empty() {
        return Err(DigestError::BadInput("empty uri"));
    }
    if method.is_empty() {
        return Err(DigestError::BadInput("empty method"));
    }
    // Control characters cannot be carried in a quoted string (RFC 3261
    // §25.1 qdtext), so the server would hash different text than ours.
    if has_ctl(username) || has_ctl(uri) {
        return Err(DigestError::BadInput(
            "control character in username or uri",
        ));
    }
    let qop = if use_qop {
        if cnonce.is_empty() {
            return Err(DigestError::BadInput("empty cnonce with qop=auth"));
        }
        if has_ctl(cnonce) {
            return Err(DigestError::BadInput("control character in cnonce"));
        }
        if nc == 0 {
            return Err(DigestError::BadInput("nc counts from 1"));
        }
        Some(QopPart {
            qop: "auth",
            nc,
            cnonce,
        })
    } else {
        None
    };
    let response = compute_response(&ResponseInput {
        algorithm: challenge.algorithm,
        username,
        realm: &challenge.realm,
        password,
        method,
        uri,
        nonce: &challenge.nonce,
        qop: qop.as_ref(),
    });
    Ok(Credentials {
        username: username.to_string(),
        realm: challenge.realm.clone(),
        nonce: challenge.nonce.clone(),
        uri: uri.to_string(),
        response,
        algorithm: challenge.algorithm,
        cnonce: qop.as_ref().map(|q| q.cnonce.to_string()),
        qop: qop.as_ref().map(|q| q.qop.to_string()),
        nc: qop.as_ref().map(|q| q.nc),
        opaque: challenge.opaque.clone(),
    })
}

/// Whether `challenge` is answered with `qop=auth` (true) or in the
/// RFC 2069 form (false); an error when only other qop values are offered.
fn answerable_qop(challenge: &Challenge) -> Result<bool, DigestError> {
    if challenge.qop.is_empty() {
        Ok(false)
    } else if challenge.qop.iter().any(|q| q.eq_ignore_ascii_case("auth")) {
        Ok(true)
    } else {
        Err(DigestError::UnsupportedQop(challenge.qop.join(",")))
    }
}

// ---------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------

/// What a [`DigestServer`] challenges with and accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub realm: String,
    /// Accepted algorithms in order of preference; one challenge header
    /// each, preferred first (RFC 8760 §2.3). Empty challenges nothing and
    /// accepts nothing.
    pub algorithms: Vec<Algorithm>,
    /// How long a nonce is good for; after that, right credentials get
    /// [`Verdict::Stale`].
    pub nonce_lifetime: Duration,
    /// Offer `qop="auth"` and require it (with cnonce and nc, so that nonce
    /// counts catch replays). When false the challenge offers no qop
    /// (RFC 2069 form, as many SIP carriers do) and both forms are
    /// accepted; RFC 2069 answers carry no count, so within a nonce's
    /// lifetime they can be replayed.
    pub qop_auth: bool,
}

/// The judgement on one request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// The response is right for the password but the nonce has expired,
    /// or is one we issued and have since forgotten: answer with a new
    /// challenge with `stale=true`, so the client retries without asking
    /// for the password again (RFC 7616 §3.3 on `stale`).
    Stale,
    /// Rejected; the reason, for logs and traces (not for the wire).
    Wrong(&'static str),
}

/// What the server remembers about a nonce it issued.
#[derive(Debug, Clone)]
struct NonceState {
    /// The full nonce text, compared on every use.
    text: String,
    issued_at: Instant,
    /// The highest nonce count accepted so far; 0 before the first.
    highest_nc: u32,
}

/// The server half: issues challenges, remembers their nonces, judges
/// credentials.
///
/// Nonces look like `<serial hex>-<fresh>`: `serial` counts the challenges
/// this server has issued, so every nonce is unique even if the caller's
/// random text repeats, and a nonce we issued but have since forgotten
/// (expired, or dropped at [`MAX_LIVE_NONCES`]) can be told from one we
/// never issued. The serial can be forged, but a forged nonce only ever
/// earns [`Verdict::Stale`], and only with the right password; the
/// unpredictability comes from `fresh`. The live nonces are kept in a
/// `BTreeMap` keyed by serial (deterministic iteration, oldest first);
/// the state is algorithm-agnostic, since one nonce is shared by the
/// challenges of one 401/407 (as in RFC 7616 §3.9.1). The `opaque` of a
/// challenge is the serial as 8+ hex digits, and must be echoed.
#[derive(Debug, Clone)]
pub struct DigestServer {
    config: ServerConfig,
    nonces: BTreeMap<u64, NonceState>,
    next_serial: u64,
}

impl DigestServer {
    pub fn new(config: ServerConfig) -> Self {
        DigestServer {
            config,
            nonces: BTreeMap::new(),
            next_serial: 0,
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// How many nonces are remembered.
    pub fn live_nonces(&self) -> usize {
        self.nonces.len()
    }

    /// Challenges for a 401/407, one per configured algorithm, preferred
    /// first, all with one new nonce. `fresh` is random text from the
    /// caller's seeded RNG; only its first 128 visible ASCII characters
    /// other than `"` and `\` are used, so the nonce never needs escaping.
    /// `stale` sets `stale=true` (after [`Verdict::Stale`]).
    pub fn challenge(&mut self, now: Instant, fresh: &str, stale: bool) -> Vec<Challenge> {
        let serial = self.next_serial;
        // 2^64 challenges are out of reach; saturating only rules out an
        // overflow panic.
        self.next_serial = self.next_serial.saturating_add(1);
        let clean: String = fresh
            .chars()
            .filter(|&c| c.is_ascii_graphic() && c != '"' && c != '\\')
            .take(MAX_FRESH_CHARS)
            .collect();
        let nonce = format!("{serial:x}-{clean}");
        self.nonces.insert(
            serial,
            NonceState {
                text: nonce.clone(),
                issued_at: now,
                highest_nc: 0,
            },
        );
        // The cap: forget the oldest (lowest serial) first.
        while self.nonces.len() > MAX_LIVE_NONCES {
            self.nonces.pop_first();
        }
        let qop = if self.config.qop_auth {
            vec!["auth".to_string()]
        } else {
            Vec::new()
        };
        self.config
            .algorithms
            .iter()
            .map(|&algorithm| Challenge {
                realm: self.config.realm.clone(),
                nonce: nonce.clone(),
                opaque: Some(opaque_for(serial)),
                algorithm,
                qop: qop.clone(),
                stale,
            })
            .collect()
    }

    /// Judges credentials for a request. The method is the request's
    /// (HA2 = H(method:uri), RFC 7616 §3.4.3); the password lookup is the caller's (`None`: no such user). The caller
    /// also checks `creds.uri` against the Request-URI; here it must only
    /// be non-empty.
    ///
    /// The response is checked before the nonce's age, so an expired
    /// nonce with a wrong password is `Wrong`, never `Stale` (RFC 7616
    /// §3.3). With `qop=auth` the nonce count must rise on every request
    /// on a nonce (RFC 7616 §3.4); a count already seen is a replay.
    pub fn verify(
        &mut self,
        now: Instant,
        method: &str,
        creds: &Credentials,
        password: Option<&str>,
    ) -> Verdict {
        if creds.username.is_empty() {
            return Verdict::Wrong("empty username");
        }
        if creds.uri.is_empty() {
            return Verdict::Wrong("empty uri");
        }
        if creds.realm != self.config.realm {
            return Verdict::Wrong("realm mismatch");
        }
        if !self.config.algorithms.contains(&creds.algorithm) {
            return Verdict::Wrong("algorithm not offered");
        }
        let qop = match (&creds.qop, &creds.cnonce, creds.nc) {
            (Some(qop), _, _) if !qop.eq_ignore_ascii_case("auth") => {
                return Verdict::Wrong("unsupported qop");
            }
            (Some(qop), Some(cnonce), Some(nc)) if !cnonce.is_empty() => Some(QopPart {
                qop: qop.as_str(),
                nc,
                cnonce: cnonce.as_str(),
            }),
            (Some(_), _, _) => return Verdict::Wrong("qop without cnonce or nc"),
            (None, _, _) if self.config.qop_auth => return Verdict::Wrong("qop=auth required"),
            (None, _, _) => None,
        };
        let Some(serial) = parse_serial(&creds.nonce) else {
            return Verdict::Wrong("unknown nonce");
        };
        if serial >= self.next_serial {
            return Verdict::Wrong("unknown nonce");
        }
        let live = match self.nonces.get(&serial) {
            Some(state) if state.text == creds.nonce => true,
            Some(_) => return Verdict::Wrong("unknown nonce"),
            None => false,
        };
        if creds.opaque.as_deref() != Some(opaque_for(serial).as_str()) {
            return Verdict::Wrong("opaque not echoed");
        }
        let Some(password) = password else {
            return Verdict::Wrong("unknown user");
        };
        let expected = compute_response(&ResponseInput {
            algorithm: creds.algorithm,
            username: &creds.username,
            realm: &creds.realm,
            password,
            method,
            uri: &creds.uri,
            nonce: &creds.nonce,
            qop: qop.as_ref(),
        });
        if !hex_eq(&expected, &creds.response) {
            return Verdict::Wrong("bad response");
        }
        // Issued by us, since forgotten (expired, or dropped at the cap).
        if !live {
            return Verdict::Stale;
        }
        let lifetime = self.config.nonce_lifetime;
        let Some(state) = self.nonces.get_mut(&serial) else {
            return Verdict::Stale; // unreachable: `live` says it is there
        };
        if age(now, state.issued_at) > lifetime {
            return Verdict::Stale;
        }
        if let Some(q) = &qop {
            if q.nc <= state.highest_nc {
                return Verdict::Wrong("replayed nc");
            }
            state.highest_nc = q.nc;
        }
        Verdict::Ok
    }

    /// Forgets nonces older than the lifetime (call from the owner's
    /// timer); returns how many remain.
    pub fn expire(&mut self, now: Instant) -> usize {
        let lifetime = self.config.nonce_lifetime;
        self.nonces
            .retain(|_, state| age(now, state.issued_at) <= lifetime);
        self.nonces.len()
    }
}

/// The `opaque` sent with the nonce of `serial`.
fn opaque_for(serial: u64) -> String {
    format!("{serial:08x}")
}

/// The serial of a nonce of ours (`<serial hex>-...`), in the exact form
/// we write it, or `None`.
fn parse_serial(nonce: &str) -> Option<u64> {
    let (prefix, _) = nonce.split_once('-')?;
    if prefix.is_empty() || prefix.len() > 16 || !prefix.bytes().all(is_lhex) {
        return None;
    }
    let serial = u64::from_str_radix(prefix, 16).ok()?;
    // Canonical only (no leading zeros), so each serial has one spelling.
    (format!("{serial:x}") == prefix).then_some(serial)
}

/// How long since `then`; zero if the caller's clock went backwards.
fn age(now: Instant, then: Instant) -> Duration {
    now.checked_duration_since(then).unwrap_or(Duration::ZERO)
}

// ---------------------------------------------------------------------------
// The digest computation (RFC 7616 §3.4.1, RFC 3261 §22.4)
// ---------------------------------------------------------------------------

/// The qop-dependent part of a response.
struct QopPart<'a> {
    qop: &'a str,
    nc: u32,
    cnonce: &'a str,
}

struct ResponseInput<'a> {
    algorithm: Algorithm,
    username: &'a str,
    realm: &'a str,
    password: &'a str,
    method: &'a str,
    uri: &'a str,
    nonce: &'a str,
    qop: Option<&'a QopPart<'a>>,
}

fn compute_response(input: &ResponseInput<'_>) -> String {
    let h = input.algorithm;
    let ha1 = h.hash_hex(&[input.username, input.realm, input.password]);
    let ha2 = h.hash_hex(&[input.method, input.uri]);
    match input.qop {
        Some(q) => {
            // nc-value is 8LHEX (RFC 3261 §25.1).
            let nc = format!("{:08x}", q.nc);
            h.hash_hex(&[&ha1, input.nonce, &nc, q.cnonce, q.qop, &ha2])
        }
        None => h.hash_hex(&[&ha1, input.nonce, &ha2]),
    }
}

fn hash_joined<D: Digest>(parts: &[&str]) -> Vec<u8> {
    let mut hasher = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b":");
        }
        hasher.update(part.as_bytes());
    }
    hasher.finalize().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Compares a computed lower-case hex digest with a received one, ASCII
/// case-insensitively, without stopping at the first difference.
fn hex_eq(expected: &str, received: &str) -> bool {
    if expected.len() != received.len() {
        return false;
    }
    expected
        .bytes()
        .zip(received.bytes())
        .fold(0u8, |acc, (a, b)| {
            acc | (a.to_ascii_lowercase() ^ b.to_ascii_lowercase())
        })
        == 0
}

fn is_lhex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// `nc=` must be exactly 8 lower-case hex digits (RFC 3261 §25.1).
fn parse_nc(text: &str) -> Result<u32, DigestError> {
    if text.len() != 8 || !text.bytes().all(is_lhex) {
        return Err(DigestError::BadNc(text.to_string()));
    }
    u32::from_str_radix(text, 16).map_err(|_| DigestError::BadNc(text.to_string()))
}

// ---------------------------------------------------------------------------
// The auth-param codec (RFC 3261 §25.1, RFC 7235 §2.1)
// ---------------------------------------------------------------------------

/// Linear white space; CR and LF are accepted so folded text (as in the
/// RFC examples) parses too.
fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// RFC 3261 §25.1 `token` characters.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
        )
}

/// Characters a quoted string cannot carry (RFC 3261 §25.1 qdtext and
/// quoted-pair exclude CR and LF; other controls are refused too).
fn is_ctl(c: char) -> bool {
    c.is_ascii_control() && c != '\t'
}

fn has_ctl(s: &str) -> bool {
    s.chars().any(is_ctl)
}

/// Splits `Digest name=value, ...` into lower-cased names and unquoted
/// values. Works on `char`s throughout, so no input can split a UTF-8
/// sequence, and returns an error rather than panicking on any input.
fn parse_params(value: &str) -> Result<BTreeMap<String, String>, DigestError> {
    let mut chars = value.chars().peekable();
    skip_ws(&mut chars);
    let mut scheme = String::new();
    while let Some(&c) = chars.peek() {
        if is_ws(c) || c == ',' {
            break;
        }
        scheme.push(c);
        chars.next();
    }
    // Scheme names are case-insensitive (RFC 7235 §2.1).
    if !scheme.eq_ignore_ascii_case("digest") {
        return Err(DigestError::NotDigest(scheme));
    }
    let mut params = BTreeMap::new();
    loop {
        // Empty list elements are allowed (RFC 7230 §7), so skip stray commas.
        while chars.peek().is_some_and(|&c| is_ws(c) || c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if !is_token_char(c) {
                break;
            }
            // Parameter names are case-insensitive (RFC 7235 §2.1).
            name.push(c.to_ascii_lowercase());
            chars.next();
        }
        if name.is_empty() {
            return Err(DigestError::Syntax("expected a parameter name"));
        }
        skip_ws(&mut chars);
        if chars.next() != Some('=') {
            return Err(DigestError::Syntax("expected '=' after a parameter name"));
        }
        skip_ws(&mut chars);
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            parse_quoted(&mut chars)?
        } else {
            let mut token = String::new();
            while let Some(&c) = chars.peek() {
                if !is_token_char(c) {
                    break;
                }
                token.push(c);
                chars.next();
            }
            if token.is_empty() {
                return Err(DigestError::Syntax(
                    "expected a token or quoted string after '='",
                ));
            }
            token
        };
        skip_ws(&mut chars);
        if !matches!(chars.peek(), None | Some(',')) {
            return Err(DigestError::Syntax("expected ',' between parameters"));
        }
        if params.contains_key(&name) {
            return Err(DigestError::DuplicateParam(name));
        }
        params.insert(name, value);
    }
    Ok(params)
}

fn skip_ws(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.peek().is_some_and(|&c| is_ws(c)) {
        chars.next();
    }
}

/// The rest of a quoted string whose opening `"` is consumed; `\x` stands
/// for `x` (RFC 3261 §25.1 quoted-pair).
fn parse_quoted(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<String, DigestError> {
    let mut out = String::new();
    loop {
        match chars.next() {
            None => return Err(DigestError::UnterminatedQuote),
            Some('"') => return Ok(out),
            Some('\\') => match chars.next() {
                None => return Err(DigestError::UnterminatedQuote),
                Some(c) if is_ctl(c) => {
                    return Err(DigestError::Syntax("control character in quoted string"))
                }
                Some(c) => out.push(c),
            },
            Some(c) if is_ctl(c) => {
                return Err(DigestError::Syntax("control character in quoted string"))
            }
            Some(c) => out.push(c),
        }
    }
}

/// Removes a required parameter.
fn take(params: &mut BTreeMap<String, String>, name: &'static str) -> Result<String, DigestError> {
    params.remove(name).ok_or(DigestError::MissingParam(name))
}

/// Writes `s` as a quoted string, escaping `"` and `\`. Control characters
/// cannot be carried at all (RFC 3261 §25.1) and are dropped, so no value
/// can break out of its header line.
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                f.write_str("\\")?;
                fmt::Write::write_char(f, c)?;
            }
            c if is_ctl(c) => {}
            c => fmt::Write::write_char(f, c)?,
        }
    }
    f.write_str("\"")
}

fn write_token_or_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if !s.is_empty() && s.chars().all(is_token_char) {
        f.write_str(s)
    } else {
        write_quoted(f, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7616 §3.9.1.
    const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const RFC7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";
    const RFC7616_CHALLENGE_SHA256: &str = "Digest\n    realm=\"http-auth@example.org\",\n    qop=\"auth, auth-int\",\n    algorithm=SHA-256,\n    nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\n    opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
    const RFC7616_CHALLENGE_MD5: &str = "Digest\n    realm=\"http-auth@example.org\",\n    qop=\"auth, auth-int\",\n    algorithm=MD5,\n    nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\n    opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
    const RFC7616_AUTHORIZATION_MD5: &str = "Digest username=\"Mufasa\",\n    realm=\"http-auth@example.org\",\n    uri=\"/dir/index.html\",\n    algorithm=MD5,\n    nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\n    nc=00000001,\n    cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\",\n    qop=auth,\n    response=\"8ca523f5e9506fed4657c9700eebdbec\",\n    opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";

    fn challenge(algorithm: Algorithm, realm: &str, nonce: &str, qop: &[&str]) -> Challenge {
        Challenge {
            realm: realm.to_string(),
            nonce: nonce.to_string(),
            opaque: None,
            algorithm,
            qop: qop.iter().map(|q| q.to_string()).collect(),
            stale: false,
        }
    }

    fn rfc7616_response(algorithm: Algorithm) -> String {
        let c = challenge(
            algorithm,
            "http-auth@example.org",
            RFC7616_NONCE,
            &["auth", "auth-int"],
        );
        let creds = answer(
            &c,
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            RFC7616_CNONCE,
            1,
        )
        .unwrap();
        assert_eq!(creds.qop.as_deref(), Some("auth"));
        assert_eq!(creds.nc, Some(1));
        creds.response
    }

    #[test]
    fn rfc7616_md5_vector() {
        assert_eq!(
            rfc7616_response(Algorithm::Md5),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    #[test]
    fn rfc7616_sha256_vector() {
        assert_eq!(
            rfc7616_response(Algorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn rfc2617_vector() {
        // RFC 2617 §3.5 (password "Circle Of Life", capital O).
        let c = challenge(
            Algorithm::Md5,
            "testrealm@host.com",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            &["auth", "auth-int"],
        );
        let creds = answer(
            &c,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
            1,
        )
        .unwrap();
        assert_eq!(creds.response, "6629fae49393a05397450978507c4ef1");
    }

    // SIP vectors computed in a shell, independently of this code:
    //   U=sbc1; R=carrier.example; P='s3cr3t-Pa55'; N='c0ffee-1d2e3f'; C='0a1b2c3d'
    //   for h in md5sum sha256sum; do
    //     HA1=$(printf '%s' "$U:$R:$P" | $h | cut -d' ' -f1)
    //     HA2=$(printf '%s' "REGISTER:sip:carrier.example" | $h | cut -d' ' -f1)
    //     printf '%s' "$HA1:$N:00000001:$C:auth:$HA2" | $h
    //     HA2=$(printf '%s' "INVITE:sip:+14255550100@carrier.example;user=phone" | $h | cut -d' ' -f1)
    //     printf '%s' "$HA1:$N:$HA2" | $h
    //   done
    const SIP_NONCE: &str = "c0ffee-1d2e3f";

    #[test]
    fn sip_register_vectors() {
        let expected = [
            (Algorithm::Md5, "edc337e63f3f6f4e952ea8eb46e6f660"),
            (
                Algorithm::Sha256,
                "f74cf2d98c28b9ee06807c67852c3dc57f9918c52da48b124d9ede12c5ab9b0a",
            ),
        ];
        for (algorithm, response) in expected {
            let c = challenge(algorithm, "carrier.example", SIP_NONCE, &["auth"]);
            let creds = answer(
                &c,
                "sbc1",
                "s3cr3t-Pa55",
                "REGISTER",
                "sip:carrier.example",
                "0a1b2c3d",
                1,
            )
            .unwrap();
            assert_eq!(creds.response, response, "{algorithm}");
        }
    }

    #[test]
    fn sip_invite_rfc2069_form_vectors() {
        let expected = [
            (Algorithm::Md5, "9d2fbf94ec35f6a237870fa724f44357"),
            (
                Algorithm::Sha256,
                "5816bacdccd2778071f248dfef651e4c32150861cecf2c2137bb1b591db80e30",
            ),
        ];
        for (algorithm, response) in expected {
            let c = challenge(algorithm, "carrier.example", SIP_NONCE, &[]);
            let creds = answer(
                &c,
                "sbc1",
                "s3cr3t-Pa55",
                "INVITE",
                "sip:+14255550100@carrier.example;user=phone",
                "unused",
                7,
            )
            .unwrap();
            assert_eq!(creds.response, response, "{algorithm}");
            assert_eq!((creds.qop, creds.cnonce, creds.nc), (None, None, None));
        }
    }

    #[test]
    fn answer_refuses_auth_int_only_and_bad_inputs() {
        let c = challenge(Algorithm::Md5, "r", "n", &["auth-int"]);
        assert_eq!(
            answer(&c, "u", "p", "REGISTER", "sip:r", "c", 1),
            Err(DigestError::UnsupportedQop("auth-int".into()))
        );
        let c = challenge(Algorithm::Md5, "r", "n", &["auth"]);
        assert_eq!(
            answer(&c, "u", "p", "REGISTER", "sip:r", "c", 0),
            Err(DigestError::BadInput("nc counts from 1"))
        );
        assert!(matches!(
            answer(&c, "u", "p", "REGISTER", "sip:r", "", 1),
            Err(DigestError::BadInput(_))
        ));
        assert!(matches!(
            answer(&c, "", "p", "REGISTER", "sip:r", "c", 1),
            Err(DigestError::BadInput(_))
        ));
        assert!(matches!(
            answer(&c, "u\r\nVia: x", "p", "REGISTER", "sip:r", "c", 1),
            Err(DigestError::BadInput(_))
        ));
    }

    #[test]
    fn answer_echoes_opaque_and_algorithm() {
        let mut c = challenge(Algorithm::Sha256, "r", "n", &["auth"]);
        c.opaque = Some("op".into());
        let creds = answer(&c, "u", "p", "INVITE", "sip:x@r", "c", 3).unwrap();
        assert_eq!(creds.opaque.as_deref(), Some("op"));
        assert_eq!(creds.algorithm, Algorithm::Sha256);
        assert_eq!(creds.nc, Some(3));
    }

    #[test]
    fn pick_follows_server_order_among_answerable() {
        let sha = challenge(Algorithm::Sha256, "r", "n", &["auth"]);
        let md5 = challenge(Algorithm::Md5, "r", "n", &["auth"]);
        let sha_int = challenge(Algorithm::Sha256, "r", "n", &["auth-int"]);
        let md5_none = challenge(Algorithm::Md5, "r", "n", &[]);
        let list = [sha.clone(), md5.clone()];
        assert_eq!(pick(&list), Some(&sha));
        // RFC 7616 §3.7: the server's order wins, even MD5 first.
        let list = [md5.clone(), sha.clone()];
        assert_eq!(pick(&list), Some(&md5));
        let list = [sha_int.clone(), md5_none.clone()];
        assert_eq!(pick(&list), Some(&md5_none));
        assert_eq!(pick(&[sha_int]), None);
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn parse_rfc7616_challenges() {
        let sha = Challenge::parse(RFC7616_CHALLENGE_SHA256).unwrap();
        assert_eq!(
            sha,
            Challenge {
                realm: "http-auth@example.org".into(),
                nonce: RFC7616_NONCE.into(),
                opaque: Some(RFC7616_OPAQUE.into()),
                algorithm: Algorithm::Sha256,
                qop: vec!["auth".into(), "auth-int".into()],
                stale: false,
            }
        );
        let md5 = Challenge::parse(RFC7616_CHALLENGE_MD5).unwrap();
        assert_eq!(md5.algorithm, Algorithm::Md5);
        assert_eq!(md5.nonce, sha.nonce);
        // The client side of §3.9.1 end to end, from the parsed text.
        let list = [sha, md5];
        let chosen = pick(&list).unwrap();
        assert_eq!(chosen.algorithm, Algorithm::Sha256);
        let creds = answer(
            &list[1],
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            RFC7616_CNONCE,
            1,
        )
        .unwrap();
        assert_eq!(
            creds,
            Credentials::parse(RFC7616_AUTHORIZATION_MD5).unwrap()
        );
    }

    #[test]
    fn parse_rfc7616_authorization() {
        let creds = Credentials::parse(RFC7616_AUTHORIZATION_MD5).unwrap();
        assert_eq!(
            creds,
            Credentials {
                username: "Mufasa".into(),
                realm: "http-auth@example.org".into(),
                nonce: RFC7616_NONCE.into(),
                uri: "/dir/index.html".into(),
                response: "8ca523f5e9506fed4657c9700eebdbec".into(),
                algorithm: Algorithm::Md5,
                cnonce: Some(RFC7616_CNONCE.into()),
                qop: Some("auth".into()),
                nc: Some(1),
                opaque: Some(RFC7616_OPAQUE.into()),
            }
        );
    }

    #[test]
    fn parse_case_whitespace_quotes() {
        let c = Challenge::parse(
            "  DIGEST   Realm = \"a, \\\"quoted\\\" \\\\ realm\" ,NONCE=\"n,1\",,  ALGORITHM=sha-256 ,\tqop=\"AUTH\" , Stale=TRUE, domain=\"sip:x\"",
        )
        .unwrap();
        assert_eq!(c.realm, "a, \"quoted\" \\ realm");
        assert_eq!(c.nonce, "n,1");
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert_eq!(c.qop, vec!["AUTH".to_string()]);
        assert!(c.stale);
        assert_eq!(c.opaque, None);
        // answerable: qop compares case-insensitively
        assert!(answer(&c, "u", "p", "INVITE", "sip:x", "c", 1).is_ok());
        // Missing algorithm means MD5; stale other than "true" is false.
        let c = Challenge::parse("digest realm=r, nonce=n, stale=maybe").unwrap();
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert!(!c.stale);
        assert!(c.qop.is_empty());
        // UTF-8 inside quotes survives.
        let c = Challenge::parse("Digest realm=\"réalm ☎\", nonce=\"n\"").unwrap();
        assert_eq!(c.realm, "réalm ☎");
    }

    #[test]
    fn parse_errors_name_the_defect() {
        use DigestError::*;
        let cases: &[(&str, DigestError)] = &[
            ("Digest realm=\"r\"", MissingParam("nonce")),
            ("Digest nonce=\"n\"", MissingParam("realm")),
            (
                "Digest realm=\"r, nonce=\"n\"",
                Syntax("expected ',' between parameters"),
            ),
            ("Digest realm=\"r\", nonce=\"n", UnterminatedQuote),
            ("Digest realm=\"r\", nonce=\"n\\", UnterminatedQuote),
            (
                "Digest realm=\"r\", nonce=\"n\", REALM=\"s\"",
                DuplicateParam("realm".into()),
            ),
            (
                "Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess",
                UnsupportedAlgorithm("MD5-sess".into()),
            ),
            (
                "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256",
                UnsupportedAlgorithm("SHA-512-256".into()),
            ),
            (
                "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256-sess",
                UnsupportedAlgorithm("SHA-256-sess".into()),
            ),
            ("Basic realm=\"r\"", NotDigest("Basic".into())),
            ("", NotDigest(String::new())),
            (
                "Digest realm",
                Syntax("expected '=' after a parameter name"),
            ),
            (
                "Digest realm=",
                Syntax("expected a token or quoted string after '='"),
            ),
            ("Digest =x", Syntax("expected a parameter name")),
            (
                "Digest realm=a b=c",
                Syntax("expected ',' between parameters"),
            ),
            (
                "Digest realm=\"a\nb\", nonce=n",
                Syntax("control character in quoted string"),
            ),
        ];
        for (text, err) in cases {
            assert_eq!(Challenge::parse(text).as_ref(), Err(err), "{text:?}");
        }
        let creds_cases: &[(&str, DigestError)] = &[
            (
                "Digest username=u, realm=r, nonce=n, uri=\"sip:a\", response=x, qop=auth, nc=00000001",
                MissingParam("cnonce"),
            ),
            (
                "Digest username=u, realm=r, nonce=n, uri=\"sip:a\", response=x, qop=auth, cnonce=c",
                MissingParam("nc"),
            ),
            (
                "Digest username=u, realm=r, nonce=n, uri=\"sip:a\", response=x, qop=auth, cnonce=c, nc=1",
                BadNc("1".into()),
            ),
            (
                "Digest username=u, realm=r, nonce=n, uri=\"sip:a\", response=x, qop=auth, cnonce=c, nc=0000000A",
                BadNc("0000000A".into()),
            ),
            (
                "Digest username=u, realm=r, nonce=n, uri=\"sip:a\", response=x, qop=auth, cnonce=c, nc=+0000001",
                BadNc("+0000001".into()),
            ),
            (
                "Digest username=u, realm=r, nonce=n, response=x",
                MissingParam("uri"),
            ),
        ];
        for (text, err) in creds_cases {
            assert_eq!(Credentials::parse(text).as_ref(), Err(err), "{text:?}");
        }
        // Errors display their reason.
        assert_eq!(
            MissingParam("nonce").to_string(),
            "missing parameter \"nonce\""
        );
    }

    #[test]
    fn display_order_and_round_trip() {
        let c = Challenge {
            realm: "carrier \"x\" \\ y".into(),
            nonce: "0-abc".into(),
            opaque: Some("00000000".into()),
            algorithm: Algorithm::Sha256,
            qop: vec!["auth".into()],
            stale: true,
        };
        let text = c.to_string();
        assert_eq!(
            text,
            "Digest realm=\"carrier \\\"x\\\" \\\\ y\", nonce=\"0-abc\", algorithm=SHA-256, qop=\"auth\", opaque=\"00000000\", stale=true"
        );
        assert_eq!(Challenge::parse(&text).unwrap(), c);

        let creds = Credentials::parse(RFC7616_AUTHORIZATION_MD5).unwrap();
        let text = creds.to_string();
        assert_eq!(
            text,
            "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", uri=\"/dir/index.html\", response=\"8ca523f5e9506fed4657c9700eebdbec\", algorithm=MD5, cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, nc=00000001, opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
        );
        assert_eq!(Credentials::parse(&text).unwrap(), creds);

        // Minimal forms round-trip too, and nc keeps 8 digits.
        let c = challenge(Algorithm::Md5, "r", "n", &[]);
        assert_eq!(Challenge::parse(&c.to_string()).unwrap(), c);
        let mut creds = answer(
            &challenge(Algorithm::Md5, "r", "n", &["auth"]),
            "u",
            "p",
            "INVITE",
            "sip:u@r",
            "c\"n",
            0x1234_abcd,
        )
        .unwrap();
        assert!(creds.to_string().contains("nc=1234abcd"));
        assert_eq!(Credentials::parse(&creds.to_string()).unwrap(), creds);
        // Control characters cannot break out of the header line.
        creds.username = "evil\r\nVia: x".into();
        assert!(!creds.to_string().contains('\n'));
    }

    /// Every truncation and every single-byte mutation of valid headers
    /// must come back as Ok or Err, never as a panic.
    #[test]
    fn no_panic_on_truncation_or_mutation() {
        let inputs = [
            RFC7616_CHALLENGE_SHA256.to_string(),
            RFC7616_AUTHORIZATION_MD5.to_string(),
            "Digest realm=\"ré☎\\\"x\", nonce=\"a,b\", stale=TRUE, qop=\"auth\"".to_string(),
        ];
        let mut parsed = 0usize;
        // Every byte value for the short header; for the long RFC ones, a
        // byte of each class the parser treats differently (kept small so
        // the test stays quick in debug builds).
        let all: Vec<u8> = (0..=255).collect();
        let classes: Vec<u8> = b"\"\\,= \t\r\n\0\x7fazAZ09-/@;:'~{"
            .iter()
            .copied()
            .chain([0x80, 0xbf, 0xc3, 0xe2, 0xf0, 0xff])
            .collect();
        for (i, input) in inputs.iter().enumerate() {
            let bytes = input.as_bytes();
            for end in 0..=bytes.len() {
                let text = String::from_utf8_lossy(&bytes[..end]);
                let _ = Challenge::parse(&text);
                let _ = Credentials::parse(&text);
                parsed += 1;
            }
            let values = if i == 2 { &all } else { &classes };
            for at in 0..bytes.len() {
                for &b in values {
                    let mut mutated = bytes.to_vec();
                    mutated[at] = b;
                    let text = String::from_utf8_lossy(&mutated);
                    if let Ok(c) = Challenge::parse(&text) {
                        // Whatever parses, re-parses identically.
                        assert_eq!(Challenge::parse(&c.to_string()).as_ref(), Ok(&c));
                    }
                    if let Ok(c) = Credentials::parse(&text) {
                        assert_eq!(Credentials::parse(&c.to_string()).as_ref(), Ok(&c));
                    }
                    parsed += 1;
                }
            }
        }
        assert!(parsed > 20_000, "{parsed}");
        // The full originals do parse, so the loop exercised real headers.
        assert!(Challenge::parse(&inputs[0]).is_ok());
        assert!(Credentials::parse(&inputs[1]).is_ok());
        assert!(Challenge::parse(&inputs[2]).is_ok());
    }

    // --- server ---------------------------------------------------------

    const LIFETIME: Duration = Duration::from_secs(300);

    /// An arbitrary origin for the fake clock; the module never reads one.
    #[allow(clippy::disallowed_methods)] // a fake clock's origin
    fn epoch() -> Instant {
        Instant::now()
    }

    fn server(algorithms: Vec<Algorithm>, qop_auth: bool) -> DigestServer {
        DigestServer::new(ServerConfig {
            realm: "carrier.example".into(),
            algorithms,
            nonce_lifetime: LIFETIME,
            qop_auth,
        })
    }

    fn client(c: &Challenge, password: &str, nc: u32) -> Credentials {
        answer(
            c,
            "sbc1",
            password,
            "REGISTER",
            "sip:carrier.example",
            "cn0",
            nc,
        )
        .unwrap()
    }

    #[test]
    fn server_challenge_answer_verify_ok() {
        let t0 = epoch();
        let mut s = server(vec![Algorithm::Sha256, Algorithm::Md5], true);
        let cs = s.challenge(t0, "Zm9vYmFy\"\\x", false);
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].algorithm, Algorithm::Sha256);
        assert_eq!(cs[1].algorithm, Algorithm::Md5);
        assert_eq!(cs[0].nonce, "0-Zm9vYmFyx");
        assert_eq!(cs[0].nonce, cs[1].nonce);
        assert_eq!(cs[0].qop, vec!["auth".to_string()]);
        assert!(!cs[0].stale);
        // Through the wire format and back, as a real exchange would go.
        let c = Challenge::parse(&cs[0].to_string()).unwrap();
        let creds = Credentials::parse(&client(&c, "pw", 1).to_string()).unwrap();
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(s.verify(t1, "REGISTER", &creds, Some("pw")), Verdict::Ok);
        // The MD5 challenge of the same 401 works as well (nonce shared).
        let creds = client(&cs[1], "pw", 2);
        assert_eq!(s.verify(t1, "REGISTER", &creds, Some("pw")), Verdict::Ok);
        // The method is part of HA2.
        let creds = client(&cs[1], "pw", 3);
        assert_eq!(
            s.verify(t1, "INVITE", &creds, Some("pw")),
            Verdict::Wrong("bad response")
        );
    }

    #[test]
    fn server_rfc2069_mode() {
        let t0 = epoch();
        let mut s = server(vec![Algorithm::Md5], false);
        let cs = s.challenge(t0, "abc", false);
        assert!(cs[0].qop.is_empty());
        let creds = client(&cs[0], "pw", 1);
        assert_eq!(creds.qop, None);
        assert_eq!(s.verify(t0, "REGISTER", &creds, Some("pw")), Verdict::Ok);
        // No count, so the same answer is accepted again within the lifetime.
        assert_eq!(s.verify(t0, "REGISTER", &creds, Some("pw")), Verdict::Ok);
        // ...but an RFC 2069 answer to a qop_auth server is not.
        let mut strict = server(vec![Algorithm::Md5], true);
        let cs = strict.challenge(t0, "abc", false);
        let mut c = cs[0].clone();
        c.qop.clear();
        let creds = client(&c, "pw", 1);
        assert_eq!(
            strict.verify(t0, "REGISTER", &creds, Some("pw")),
            Verdict::Wrong("qop=auth required")
        );
    }

    #[test]
    fn server_wrong_password_and_unknown_user() {
        let t0 = epoch();
        let mut s = server(vec![Algorithm::Md5], true);
        let cs = s.challenge(t0, "abc", false);
        let creds = client(&cs[0], "guess", 1);
        assert_eq!(
            s.verify(t0, "REGISTER", &creds, Some("pw")),
            Verdict::Wrong("bad response")
        );
        assert_eq!(
            s.verify(t0, "REGISTER", &creds, None),
            Verdict::Wrong("unknown user")
        );
        // A failed attempt does not burn the count: nc 1 still works.
        let creds = client(&cs[0], "pw", 1);
        assert_eq!(s.verify(t0, "REGISTER", &creds, Some("pw")), Verdict::Ok);
    }

    #[test]
    fn server_stale_only_with_right_password() {
        let t0 = epoch();
        let mut s = server(vec![Algorithm::Md5], true);
        let cs = s.challenge(t0, "abc", false);
        let late = t0 + LIFETIME + Duration::from_secs(1);
        let right = client(&cs[0], "pw", 1);
        let wrong = client(&cs[0], "guess", 1);
        assert_eq!(
            s.verify(late, "REGISTER", &wrong, Some("pw")),
            Verdict::Wrong("bad response")
        );
        assert_eq!(
            s.verify(late, "REGISTER", &right, Some("pw")),
            Verdict::Stale
        );
        // At exactly the lifetime it is still good.
        assert_eq!(
            s.verify(t0 + LIFETIME, "REGISTER", &right, Some("pw")),
            Verdict::Ok
        );
        // After expire() forgot it, still Stale (issued by us), not Wrong.
        assert_eq!(s.expire(late), 0);
        let right2 = client(&cs[0], "pw", 2);
        assert_eq!(
            s.verify(late, "REGISTER", &right2, Some("pw")),
            Verdict::Stale
        );
        assert_eq!(
            s.verify(late, "REGISTER", &client(&cs[0], "guess", 2), Some("pw")),
            Verdict::Wrong("bad response")
        );
        // The new challenge says stale=true.
        let again = s.challenge(late, "def", true);
        assert!(again[0].stale);
        assert!(again[0].to_string().ends_with(", stale=true"));
        let creds = client(&again[0], "pw", 1);
        assert_eq!(s.verify(late, "REGISTER", &creds, Some("pw")), Verdict::Ok);
    }

    #[test]
    fn server_nc_must_rise() {
        let t0 = epoch();
        let mut s = server(vec![Algorithm::Sha256], true);
        let cs = s.challenge(t0, "abc", false);
        let first = client(&cs[0], "pw", 1);
        assert_eq!(s.verify(t0, "REGISTER", &first, Some("pw")), Verdict::Ok);
        assert_eq!(
            s.verify(t0, "REGISTER", &first, Some("pw")),
            Verdict::Wrong("replayed nc")
        );
        for nc in [2, 3, 7] {
            let creds = client(&cs[0], "pw", nc);
            assert_eq!(s.verify(t0, "REGISTER", &creds, Some("pw")), Verdict::Ok);
        }
        let back = client(&cs[0], "pw", 5);
        assert_eq!(
            s.verify(t0, "REGISTER", &back, Some("pw")),
            Verdict::Wrong("replayed nc")
        );
    }

    #[test]
    fn server_rejects_what_it_did_not_issue() {
        let t0 = epoch();
        let mut s = server(vec![Algorithm::Md5], true);
        let cs = s.challenge(t0, "abc", false);
        let verify = |s: &mut DigestServer, c: &Challenge| {
            let creds = client(c, "pw", 1);
            s.verify(t0, "REGISTER", &creds, Some("pw"))
        };
        // A nonce never issued, with the right password.
        let mut forged = cs[0].clone();
        forged.nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093".into();
        assert_eq!(verify(&mut s, &forged), Verdict::Wrong("unknown nonce"));
        // Our format, but a serial not yet issued.
        forged.nonce = "5-abc".into();
        assert_eq!(verify(&mut s, &forged), Verdict::Wrong("unknown nonce"));
        forged.nonce = "1-abc".into(); // the very next serial
        assert_eq!(verify(&mut s, &forged), Verdict::Wrong("unknown nonce"));
        // A live serial with other text.
        forged.nonce = "0-abd".into();
        assert_eq!(verify(&mut s, &forged), Verdict::Wrong("unknown nonce"));
        // Non-canonical spelling of a live serial.
        forged.nonce = "00-abc".into();
        assert_eq!(verify(&mut s, &forged), Verdict::Wrong("unknown nonce"));
        // Algorithm not offered.
        let mut other = cs[0].clone();
        other.algorithm = Algorithm::Sha256;
        assert_eq!(
            verify(&mut s, &other),
            Verdict::Wrong("algorithm not offered")
        );
        // Other realm.
        let mut other = cs[0].clone();
        other.realm = "elsewhere".into();
        assert_eq!(verify(&mut s, &other), Verdict::Wrong("realm mismatch"));
        // Opaque not echoed.
        let mut other = cs[0].clone();
        other.opaque = None;
        assert_eq!(verify(&mut s, &other), Verdict::Wrong("opaque not echoed"));
        // qop other than auth.
        let mut creds = client(&cs[0], "pw", 1);
        creds.qop = Some("auth-int".into());
        assert_eq!(
            s.verify(t0, "REGISTER", &creds, Some("pw")),
            Verdict::Wrong("unsupported qop")
        );
        // qop without a cnonce.
        let mut creds = client(&cs[0], "pw", 1);
        creds.cnonce = None;
        assert_eq!(
            s.verify(t0, "REGISTER", &creds, Some("pw")),
            Verdict::Wrong("qop without cnonce or nc")
        );
        // Empty uri and username.
        let mut creds = client(&cs[0], "pw", 1);
        creds.uri.clear();
        assert_eq!(
            s.verify(t0, "REGISTER", &creds, Some("pw")),
            Verdict::Wrong("empty uri")
        );
        let mut creds = client(&cs[0], "pw", 1);
        creds.username.clear();
        assert_eq!(
            s.verify(t0, "REGISTER", &creds, Some("pw")),
            Verdict::Wrong("empty username")
        );
        // None of that burned the real nonce.
        assert_eq!(verify(&mut s, &cs[0]), Verdict::Ok);
    }

    #[test]
    fn server_expire_drops_old_nonces() {
        let t0 = epoch();
        let mut s = server(vec![Algorithm::Md5], true);
        s.challenge(t0, "a", false);
        s.challenge(t0 + Duration::from_secs(100), "b", false);
        let third = s.challenge(t0 + Duration::from_secs(200), "c", false);
        assert_eq!(s.live_nonces(), 3);
        assert_eq!(s.expire(t0 + LIFETIME), 3);
        assert_eq!(s.expire(t0 + LIFETIME + Duration::from_secs(1)), 2);
        assert_eq!(s.expire(t0 + LIFETIME + Duration::from_secs(150)), 1);
        let creds = client(&third[0], "pw", 1);
        let now = t0 + LIFETIME + Duration::from_secs(150);
        assert_eq!(s.verify(now, "REGISTER", &creds, Some("pw")), Verdict::Ok);
        assert_eq!(s.expire(t0 + Duration::from_secs(10_000)), 0);
    }

    #[test]
    fn server_nonce_cap_holds() {
        let t0 = epoch();
        let mut s = server(vec![Algorithm::Md5], true);
        let first = s.challenge(t0, "first", false);
        for i in 0..MAX_LIVE_NONCES + 5 {
            s.challenge(t0, &format!("n{i}"), false);
            assert!(s.live_nonces() <= MAX_LIVE_NONCES);
        }
        assert_eq!(s.live_nonces(), MAX_LIVE_NONCES);
        // The oldest went first; its holder is told stale, not wrong.
        let creds = client(&first[0], "pw", 1);
        assert_eq!(s.verify(t0, "REGISTER", &creds, Some("pw")), Verdict::Stale);
        let newest = s.challenge(t0, "last", false);
        let creds = client(&newest[0], "pw", 1);
        assert_eq!(s.verify(t0, "REGISTER", &creds, Some("pw")), Verdict::Ok);
        assert_eq!(s.live_nonces(), MAX_LIVE_NONCES);
    }

    #[test]
    fn server_is_deterministic() {
        let t0 = epoch();
        let run = || {
            let mut s = server(vec![Algorithm::Sha256, Algorithm::Md5], true);
            (0..3)
                .flat_map(|i| s.challenge(t0, &format!("r{i}"), i == 2))
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        assert_eq!(
            run()[4],
            "Digest realm=\"carrier.example\", nonce=\"2-r2\", algorithm=SHA-256, qop=\"auth\", opaque=\"00000002\", stale=true"
        );
    }
}
