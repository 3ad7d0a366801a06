//! ICE for media bypass: the SBC is an ICE-lite agent (RFC 8445 §2.5) with
//! one host candidate per media port; the Teams client is a full agent and
//! always controlling (§6.1.1). A lite agent sends no checks and keeps no
//! timers: it answers the controlling agent's Binding requests (§7.3) and
//! learns from them which source address was nominated (§8.1.1, regular
//! nomination: a check carrying USE-CANDIDATE). An offer or answer with new
//! ice-ufrag/ice-pwd restarts ICE (§9): [`IceLiteAgent::restart`].
//!
//! The shape is str0m's `is` crate: sans-IO, no sockets, no clock. The
//! driver that owns the media socket hands every datagram that
//! [`looks_like_stun`](super::stun::looks_like_stun) to
//! [`IceLiteAgent::handle`] and sends back to the source whatever it
//! returns; RTP and SRTP go to the relay as before.
//!
//! The other side's check, [`binding_request`] and
//! [`read_binding_response`], is here for the simulators that play the
//! Teams client and for tests.
//!
//! Credentials follow RFC 8839 §5.4: ice-char = ALPHA / DIGIT / "+" / "/",
//! ice-ufrag 4..=256 of them, ice-pwd 22..=256.

use super::stun::{check_integrity, Attribute, Class, Integrity, Message, BINDING};
use crate::sip::rng::SeededRng;
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// RFC 8839 §5.4: ALPHA / DIGIT / "+" / "/": 64 characters, so 6 random
/// bits pick one without bias.
const ICE_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// One side's ICE credentials (SDP `a=ice-ufrag`, `a=ice-pwd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub ufrag: String,
    pub pwd: String,
}

impl Credentials {
    /// An 8-char ufrag and a 24-char pwd of ice-chars, from the seeded rng
    /// (RFC 8445 §5.3: at least 24 bits of randomness in the ufrag, 128 in
    /// the pwd; these carry 48 and 144).
    pub fn generate(rng: &mut SeededRng) -> Self {
        let mut draw = |len: usize| -> String {
            (0..len)
                .map(|_| char::from(ICE_CHARS[(rng.next_u32() & 63) as usize]))
                .collect()
        };
        let ufrag = draw(8);
        let pwd = draw(24);
        Credentials { ufrag, pwd }
    }

    /// The credentials a description gives its audio (RFC 8839 §5.4).
    pub fn of(sd: &crate::sip::sdp::SessionDescription) -> Option<Credentials> {
        let (ufrag, pwd) = sd.audio_ice()?;
        Some(Credentials { ufrag, pwd })
    }

    /// These credentials as SDP writes them: `lite` for an ICE-lite agent
    /// (the SBC), a full agent (a Teams client) otherwise.
    pub fn sdp(&self, lite: bool) -> crate::sip::sdp::offer_answer::Ice {
        crate::sip::sdp::offer_answer::Ice {
            ufrag: self.ufrag.clone(),
            pwd: self.pwd.clone(),
            lite,
        }
    }

    /// Whether both are valid per RFC 8839 §5.4: ufrag 4..=256 and pwd
    /// 22..=256 ice-chars.
    pub fn is_valid(&self) -> bool {
        let ice_chars = |s: &str, min: usize| {
            (min..=256).contains(&s.len()) && s.bytes().all(|b| ICE_CHARS.contains(&b))
        };
        ice_chars(&self.ufrag, 4) && ice_chars(&self.pwd, 22)
    }
}

/// What an [`IceLiteAgent`] has seen. Counters only grow (a restart keeps them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceStats {
    /// Binding requests read.
    pub checks: u32,
    /// Success responses sent.
    pub answered: u32,
    /// 401 Unauthorized sent.
    pub unauthorized: u32,
    /// 400 Bad Request sent.
    pub bad_requests: u32,
    /// 487 Role Conflict sent.
    pub role_conflicts: u32,
    /// 420 Unknown Attribute sent.
    pub unknown_attributes: u32,
    /// Malformed datagrams and STUN messages that are not Binding requests:
    /// dropped without an answer.
    pub discarded: u32,
    /// Checks carrying USE-CANDIDATE that were answered with success.
    pub nominations: u32,
}

/// Why a Binding request is refused, and the error response that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// RFC 8489 §9.1.3: no USERNAME or no MESSAGE-INTEGRITY. 400, unauthenticated.
    MissingCredentials,
    /// RFC 8489 §9.1.3: USERNAME not ours, or MESSAGE-INTEGRITY wrong. 401, unauthenticated.
    Unauthorized,
    /// RFC 8489 §6.3.1: comprehension-required attributes we do not know. 420.
    UnknownAttributes(Vec<u16>),
    /// RFC 8445 §7.3.1.1: the peer claims the controlled role too. 487.
    RoleConflict,
    /// RFC 8445 §7.2.2: a check carries ICE-CONTROLLING or ICE-CONTROLLED;
    /// this one carries neither. 400, but authenticated.
    NoRole,
}

impl Refusal {
    fn code(&self) -> u16 {
        match self {
            Refusal::MissingCredentials | Refusal::NoRole => 400,
            Refusal::Unauthorized => 401,
            Refusal::UnknownAttributes(_) => 420,
            Refusal::RoleConflict => 487,
        }
    }

    /// RFC 8489 §18.8: the reason phrases of the registry.
    fn reason(&self) -> &'static str {
        match self {
            Refusal::MissingCredentials | Refusal::NoRole => "Bad Request",
            Refusal::Unauthorized => "Unauthorized",
            Refusal::UnknownAttributes(_) => "Unknown Attribute",
            Refusal::RoleConflict => "Role Conflict",
        }
    }

    /// RFC 8489 §9.1.3: a response to a request that failed authentication
    /// carries no MESSAGE-INTEGRITY; every other one does (§9.1.4).
    fn authenticated(&self) -> bool {
        !matches!(self, Refusal::MissingCredentials | Refusal::Unauthorized)
    }
}

/// The SBC's side of media bypass: an ICE-lite agent with one host
/// candidate. It answers every Binding request and sends none (RFC 8445 §2.5).
///
/// Drive contract: call [`handle`](IceLiteAgent::handle) for each datagram
/// on the candidate's port that looks like STUN, and send what it returns
/// to the datagram's source. Nothing else is needed: there are no timers.
#[derive(Debug, Clone)]
pub struct IceLiteAgent {
    local: Credentials,
    checked: BTreeSet<SocketAddr>,
    /// Every nominated pair: the checking agent's ufrag (the right side of
    /// USERNAME), the PRIORITY of its check, and its address.
    nominations: Vec<(String, u32, SocketAddr)>,
    /// Once a call is answered, only this peer's nominations count (the
    /// answering fork's ufrag, from its SDP).
    peer: Option<String>,
    stats: IceStats,
}

impl IceLiteAgent {
    pub fn new(local: Credentials) -> Self {
        IceLiteAgent {
            local,
            checked: BTreeSet::new(),
            nominations: Vec::new(),
            peer: None,
            stats: IceStats::default(),
        }
    }

    pub fn local(&self) -> &Credentials {
        &self.local
    }

    /// ICE restart (RFC 8445 §9): new local credentials; forget which
    /// sources were checked and what was nominated. Stats are kept.
    pub fn restart(&mut self, local: Credentials) {
        self.local = local;
        self.checked.clear();
        self.nominations.clear();
    }

    /// The peer whose nominations count from now on (`Some`: the ufrag of
    /// the fork that answered; `None`: any fork's, while the call rings).
    /// Several forks check one SBC candidate (behaviour §7); after the 200
    /// only the dialog that answered may move the media.
    pub fn set_peer(&mut self, ufrag: Option<&str>) {
        self.peer = ufrag.map(str::to_string);
    }

    /// A datagram from `src` that `looks_like_stun`: the response to send
    /// back to `src`, or None to discard it silently.
    ///
    /// - Not parseable, or not a Binding request (indications and
    ///   responses too: a lite agent sends no checks): discarded.
    /// - No USERNAME or no MESSAGE-INTEGRITY: 400 (RFC 8489 §9.1.3).
    /// - USERNAME not "<our ufrag>:<any>", or MESSAGE-INTEGRITY Invalid
    ///   under our pwd: 401. The part after ':' is the checking agent's
    ///   ufrag and is not checked: several forks of one call, each with
    ///   its own credentials, check the same SBC candidate.
    /// - Unknown comprehension-required attributes: 420 listing them.
    /// - ICE-CONTROLLED: 487 (a lite agent is always controlled, so its
    ///   peer must be controlling; RFC 8445 §6.1.1, §7.3.1.1). Neither
    ///   ICE-CONTROLLED nor ICE-CONTROLLING: 400.
    /// - Otherwise a Binding success with XOR-MAPPED-ADDRESS = `src`
    ///   (§7.3.1.2). `src` is recorded as checked and, if the request has
    ///   USE-CANDIDATE, becomes the nominated address (§7.3.1.5), replacing
    ///   any earlier one: the controlling agent decides.
    ///
    /// 400 and 401 carry no MESSAGE-INTEGRITY; every other response carries
    /// it, keyed with our pwd; all carry FINGERPRINT (RFC 8445 §7.3).
    pub fn handle(&mut self, src: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
        let request = match Message::parse(packet) {
            Ok(m) if m.class == Class::Request && m.method == BINDING => m,
            _ => {
                self.stats.discarded += 1;
                return None;
            }
        };
        self.stats.checks += 1;
        let pwd = self.local.pwd.as_bytes();
        match self.judge(&request, packet) {
            Ok(()) => {
                let mut success = Message::new(Class::Success, BINDING, request.transaction);
                success.attributes.push(Attribute::XorMappedAddress(src));
                self.stats.answered += 1;
                self.checked.insert(src);
                if request.use_candidate() {
                    let theirs = (request.username())
                        .and_then(|u| u.split_once(':'))
                        .map_or("", |(_, t)| t)
                        .to_string();
                    let priority = request.priority().unwrap_or(0);
                    self.nominations
                        .retain(|(u, _, a)| !(*u == theirs && *a == src));
                    self.nominations.push((theirs, priority, src));
                    self.stats.nominations += 1;
                }
                Some(success.encode(Some(pwd), true))
            }
            Err(refusal) => {
                let counter = match refusal {
                    Refusal::MissingCredentials | Refusal::NoRole => &mut self.stats.bad_requests,
                    Refusal::Unauthorized => &mut self.stats.unauthorized,
                    Refusal::UnknownAttributes(_) => &mut self.stats.unknown_attributes,
                    Refusal::RoleConflict => &mut self.stats.role_conflicts,
                };
                *counter += 1;
                let mut error = Message::new(Class::Error, BINDING, request.transaction);
                error.attributes.push(Attribute::ErrorCode {
                    code: refusal.code(),
                    reason: refusal.reason().into(),
                });
                let key = refusal.authenticated().then_some(pwd);
                if let Refusal::UnknownAttributes(types) = refusal {
                    error.attributes.push(Attribute::UnknownAttributes(types));
                }
                Some(error.encode(key, true))
            }
        }
    }

    /// The checks of RFC 8489 §9.1.3 (authentication), §6.3.1 (unknown
    /// attributes) and RFC 8445 §7.3.1.1 (roles), in that order.
    fn judge(&self, request: &Message, packet: &[u8]) -> Result<(), Refusal> {
        let Some(username) = request.username() else {
            return Err(Refusal::MissingCredentials);
        };
        if !request.has_message_integrity() {
            return Err(Refusal::MissingCredentials);
        }
        // RFC 8445 §7.3: USERNAME is "<our ufrag>:<their ufrag>".
        match username.split_once(':') {
            Some((ours, _theirs)) if ours == self.local.ufrag => {}
            _ => return Err(Refusal::Unauthorized),
        }
        if check_integrity(packet, self.local.pwd.as_bytes()) != Integrity::Valid {
            return Err(Refusal::Unauthorized);
        }
        let unknown = request.unknown_required();
        if !unknown.is_empty() {
            return Err(Refusal::UnknownAttributes(unknown));
        }
        if request.ice_controlled().is_some() {
            return Err(Refusal::RoleConflict);
        }
        if request.ice_controlling().is_none() {
            return Err(Refusal::NoRole);
        }
        Ok(())
    }

    /// The pair media goes on: of the nominations that count (see
    /// [`IceLiteAgent::set_peer`]), the highest-priority one (RFC 8445
    /// §8.1.1), the latest among equals.
    pub fn nominated(&self) -> Option<SocketAddr> {
        let counts = |u: &String| self.peer.as_ref().is_none_or(|p| p == u);
        (self.nominations.iter().enumerate())
            .filter(|(_, (u, _, _))| counts(u))
            .max_by_key(|(i, (_, priority, _))| (*priority, *i))
            .map(|(_, (_, _, a))| *a)
    }

    /// Whether a check from `src` has succeeded since the last restart.
    pub fn was_checked(&self, src: SocketAddr) -> bool {
        self.checked.contains(&src)
    }

    pub fn stats(&self) -> &IceStats {
        &self.stats
    }
}

/// The controlling (full ICE) side's connectivity check (RFC 8445 §7.2.2):
/// a Binding request with USERNAME "<remote ufrag>:<local ufrag>",
/// PRIORITY, ICE-CONTROLLING(tiebreaker), USE-CANDIDATE when nominating,
/// MESSAGE-INTEGRITY with the *remote* pwd, and FINGERPRINT.
pub fn binding_request(
    transaction: [u8; 12],
    local: &Credentials,
    remote: &Credentials,
    priority: u32,
    tiebreaker: u64,
    nominate: bool,
) -> Vec<u8> {
    let mut check = Message::new(Class::Request, BINDING, transaction);
    check.attributes = vec![
        Attribute::Username(format!("{}:{}", remote.ufrag, local.ufrag)),
        Attribute::Priority(priority),
        Attribute::IceControlling(tiebreaker),
    ];
    if nominate {
        check.attributes.push(Attribute::UseCandidate);
    }
    check.encode(Some(remote.pwd.as_bytes()), true)
}

/// What a check's answer says, read by the side that sent the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckAnswer {
    /// The pair works; `mapped` is our address as the other side saw it.
    Success { mapped: Option<SocketAddr> },
    /// The check was refused with this STUN error code.
    Error { code: u16 },
}

/// Read a response to our check `transaction`: Err with a reason if it is
/// not a Binding response to that transaction, has no FINGERPRINT or a
/// wrong one (RFC 8445 §7: checks use FINGERPRINT), or (for a success) its
/// MESSAGE-INTEGRITY with the remote pwd is absent or Invalid (§7.2.5.1:
/// a success must be authenticated). An error response may be
/// unauthenticated (400 and 401 are, RFC 8489 §9.1.3), but if it carries
/// MESSAGE-INTEGRITY that must be valid.
pub fn read_binding_response(
    bytes: &[u8],
    transaction: [u8; 12],
    remote: &Credentials,
) -> Result<CheckAnswer, String> {
    let response = Message::parse(bytes).map_err(|e| format!("not a STUN message: {e}"))?;
    if response.method != BINDING {
        return Err(format!("method 0x{:03x}, not Binding", response.method));
    }
    if response.transaction != transaction {
        return Err("the response is to another transaction".into());
    }
    if !response.has_fingerprint() {
        return Err("no FINGERPRINT".into());
    }
    let integrity = check_integrity(bytes, remote.pwd.as_bytes());
    match response.class {
        Class::Request | Class::Indication => {
            Err(format!("a {:?}, not a response", response.class))
        }
        Class::Success => match integrity {
            Integrity::Valid => Ok(CheckAnswer::Success {
                mapped: response.xor_mapped_address(),
            }),
            Integrity::Absent => Err("a success without MESSAGE-INTEGRITY".into()),
            Integrity::Invalid => {
                Err("a success whose MESSAGE-INTEGRITY fails with the remote pwd".into())
            }
        },
        Class::Error => match (integrity, response.error_code()) {
            (Integrity::Invalid, _) => {
                Err("an error whose MESSAGE-INTEGRITY fails with the remote pwd".into())
            }
            (_, None) => Err("an error response without ERROR-CODE".into()),
            (_, Some(code)) => Ok(CheckAnswer::Error { code }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::stun::{looks_like_stun, Integrity};

    const TX: [u8; 12] = *b"drlab-check1";
    const PRIORITY: u32 = (126 << 24) | (65535 << 8) | 255;
    const TIEBREAKER: u64 = 0x0123_4567_89ab_cdef;

    fn sbc() -> Credentials {
        Credentials {
            ufrag: "sbcU".into(),
            pwd: "sbcPasswordOf22Chars+/".into(),
        }
    }

    fn teams() -> Credentials {
        Credentials {
            ufrag: "tms1".into(),
            pwd: "teamsPasswordIsNotUsedHere".into(),
        }
    }

    fn client() -> SocketAddr {
        "198.51.100.20:50000".parse().unwrap()
    }

    fn check(nominate: bool) -> Vec<u8> {
        binding_request(TX, &teams(), &sbc(), PRIORITY, TIEBREAKER, nominate)
    }

    /// A Binding request with exactly these attributes, keyed with `pwd`.
    fn custom(attributes: Vec<Attribute>, pwd: Option<&str>) -> Vec<u8> {
        let mut m = Message::new(Class::Request, BINDING, TX);
        m.attributes = attributes;
        m.encode(pwd.map(str::as_bytes), true)
    }

    fn error_code(response: &[u8]) -> u16 {
        match read_binding_response(response, TX, &sbc()) {
            Ok(CheckAnswer::Error { code }) => code,
            other => panic!("expected an error response, got {other:?}"),
        }
    }

    #[test]
    fn a_check_with_the_right_credentials_gets_an_authenticated_success_mapping_its_source() {
        let mut agent = IceLiteAgent::new(sbc());
        let response = agent.handle(client(), &check(false)).unwrap();
        assert!(looks_like_stun(&response));
        assert_eq!(
            read_binding_response(&response, TX, &sbc()),
            Ok(CheckAnswer::Success {
                mapped: Some(client())
            })
        );
        assert!(agent.was_checked(client()));
        assert_eq!(agent.nominated(), None);
        assert_eq!(agent.stats().checks, 1);
        assert_eq!(agent.stats().answered, 1);
    }

    #[test]
    fn use_candidate_nominates_the_source_of_the_check() {
        let mut agent = IceLiteAgent::new(sbc());
        agent.handle(client(), &check(false)).unwrap();
        assert_eq!(agent.nominated(), None);
        let response = agent.handle(client(), &check(true)).unwrap();
        assert!(matches!(
            read_binding_response(&response, TX, &sbc()),
            Ok(CheckAnswer::Success { .. })
        ));
        assert_eq!(agent.nominated(), Some(client()));
        assert_eq!(agent.stats().nominations, 1);
    }

    #[test]
    fn a_later_nomination_of_equal_priority_replaces_the_first() {
        let mut agent = IceLiteAgent::new(sbc());
        let relay: SocketAddr = "52.112.0.9:3478".parse().unwrap();
        agent.handle(client(), &check(true)).unwrap();
        agent.handle(relay, &check(true)).unwrap();
        assert_eq!(agent.nominated(), Some(relay));
        assert_eq!(agent.stats().nominations, 2);
    }

    /// RFC 8445 §8.1.1: of several nominated pairs the highest-priority one
    /// is used; once the call is answered only the answering fork's
    /// nominations count (a ringing fork that lost cannot move the media).
    #[test]
    fn the_highest_priority_nomination_of_the_answering_fork_wins() {
        let mut agent = IceLiteAgent::new(sbc());
        let mut rng = SeededRng::new(9);
        let (desk, phone) = (
            Credentials::generate(&mut rng),
            Credentials::generate(&mut rng),
        );
        let (a, b, c): (SocketAddr, SocketAddr, SocketAddr) = (
            "198.51.100.20:50000".parse().unwrap(),
            "198.51.100.21:50000".parse().unwrap(),
            "52.112.0.9:3478".parse().unwrap(),
        );
        let nominate = |agent: &mut IceLiteAgent, src, fork: &Credentials, priority| {
            let r = binding_request(TX, fork, &sbc(), priority, TIEBREAKER, true);
            agent.handle(src, &r).unwrap();
        };
        nominate(&mut agent, a, &desk, 100);
        nominate(&mut agent, c, &desk, 50);
        assert_eq!(agent.nominated(), Some(a), "the higher priority");
        nominate(&mut agent, b, &phone, 200);
        assert_eq!(agent.nominated(), Some(b));
        agent.set_peer(Some(&desk.ufrag));
        assert_eq!(agent.nominated(), Some(a), "only the answering fork's");
        agent.restart(Credentials::generate(&mut rng));
        assert_eq!(agent.nominated(), None);
    }

    #[test]
    fn checks_from_two_forks_with_their_own_ufrags_both_succeed_before_nomination() {
        let mut agent = IceLiteAgent::new(sbc());
        let desk: SocketAddr = "198.51.100.20:50000".parse().unwrap();
        let phone: SocketAddr = "[2001:db8::7]:50002".parse().unwrap();
        let mut rng = SeededRng::new(7);
        for (src, fork) in [
            (desk, Credentials::generate(&mut rng)),
            (phone, Credentials::generate(&mut rng)),
        ] {
            let request = binding_request(TX, &fork, &sbc(), PRIORITY, TIEBREAKER, false);
            let response = agent.handle(src, &request).unwrap();
            assert_eq!(
                read_binding_response(&response, TX, &sbc()),
                Ok(CheckAnswer::Success { mapped: Some(src) })
            );
        }
        assert!(agent.was_checked(desk) && agent.was_checked(phone));
        assert_eq!(agent.nominated(), None);
    }

    #[test]
    fn a_check_with_the_wrong_password_gets_401_and_its_source_is_not_checked() {
        let mut agent = IceLiteAgent::new(sbc());
        let wrong = Credentials {
            pwd: "notTheSbcPasswordAtAll".into(),
            ..sbc()
        };
        let request = binding_request(TX, &teams(), &wrong, PRIORITY, TIEBREAKER, true);
        let response = agent.handle(client(), &request).unwrap();
        assert_eq!(error_code(&response), 401);
        assert_eq!(
            check_integrity(&response, sbc().pwd.as_bytes()),
            Integrity::Absent
        );
        assert!(!agent.was_checked(client()));
        assert_eq!(agent.nominated(), None);
        assert_eq!(agent.stats().unauthorized, 1);
    }

    #[test]
    fn a_check_for_another_ufrag_gets_401() {
        let mut agent = IceLiteAgent::new(sbc());
        let other = Credentials {
            ufrag: "else".into(),
            ..sbc()
        };
        let request = binding_request(TX, &teams(), &other, PRIORITY, TIEBREAKER, false);
        assert_eq!(error_code(&agent.handle(client(), &request).unwrap()), 401);
        // A USERNAME without the ':' separator is nobody's.
        let request = custom(
            vec![
                Attribute::Username("sbcU".into()),
                Attribute::IceControlling(1),
            ],
            Some(&sbc().pwd),
        );
        assert_eq!(error_code(&agent.handle(client(), &request).unwrap()), 401);
        assert_eq!(agent.stats().unauthorized, 2);
    }

    #[test]
    fn a_check_without_username_gets_400() {
        let mut agent = IceLiteAgent::new(sbc());
        let request = custom(vec![Attribute::IceControlling(1)], Some(&sbc().pwd));
        let response = agent.handle(client(), &request).unwrap();
        assert_eq!(error_code(&response), 400);
        assert_eq!(
            check_integrity(&response, sbc().pwd.as_bytes()),
            Integrity::Absent
        );
        assert_eq!(agent.stats().bad_requests, 1);
    }

    #[test]
    fn a_check_without_message_integrity_gets_400() {
        let mut agent = IceLiteAgent::new(sbc());
        let request = custom(
            vec![
                Attribute::Username("sbcU:tms1".into()),
                Attribute::IceControlling(1),
            ],
            None,
        );
        assert_eq!(error_code(&agent.handle(client(), &request).unwrap()), 400);
        assert!(!agent.was_checked(client()));
    }

    #[test]
    fn a_check_claiming_the_controlled_role_gets_487_role_conflict() {
        let mut agent = IceLiteAgent::new(sbc());
        let request = custom(
            vec![
                Attribute::Username("sbcU:tms1".into()),
                Attribute::Priority(PRIORITY),
                Attribute::IceControlled(TIEBREAKER),
                Attribute::UseCandidate,
            ],
            Some(&sbc().pwd),
        );
        let response = agent.handle(client(), &request).unwrap();
        assert_eq!(error_code(&response), 487);
        assert_eq!(
            check_integrity(&response, sbc().pwd.as_bytes()),
            Integrity::Valid
        );
        assert_eq!(agent.nominated(), None);
        assert_eq!(agent.stats().role_conflicts, 1);
    }

    #[test]
    fn a_check_without_a_role_gets_an_authenticated_400() {
        let mut agent = IceLiteAgent::new(sbc());
        let request = custom(
            vec![
                Attribute::Username("sbcU:tms1".into()),
                Attribute::Priority(PRIORITY),
            ],
            Some(&sbc().pwd),
        );
        let response = agent.handle(client(), &request).unwrap();
        assert_eq!(error_code(&response), 400);
        assert_eq!(
            check_integrity(&response, sbc().pwd.as_bytes()),
            Integrity::Valid
        );
    }

    #[test]
    fn an_unknown_comprehension_required_attribute_gets_420_listing_it() {
        let mut agent = IceLiteAgent::new(sbc());
        let request = custom(
            vec![
                Attribute::Username("sbcU:tms1".into()),
                Attribute::IceControlling(1),
                Attribute::Other {
                    typ: 0x0777,
                    value: vec![1],
                },
            ],
            Some(&sbc().pwd),
        );
        let response = agent.handle(client(), &request).unwrap();
        assert_eq!(error_code(&response), 420);
        let parsed = Message::parse(&response).unwrap();
        assert!(parsed
            .attributes
            .contains(&Attribute::UnknownAttributes(vec![0x0777])));
        assert_eq!(
            check_integrity(&response, sbc().pwd.as_bytes()),
            Integrity::Valid
        );
        assert_eq!(agent.stats().unknown_attributes, 1);
    }

    #[test]
    fn an_unknown_comprehension_optional_attribute_is_ignored() {
        let mut agent = IceLiteAgent::new(sbc());
        let request = custom(
            vec![
                Attribute::Username("sbcU:tms1".into()),
                Attribute::IceControlling(1),
                Attribute::Other {
                    typ: 0x8777,
                    value: vec![1, 2, 3, 4, 5],
                },
            ],
            Some(&sbc().pwd),
        );
        let response = agent.handle(client(), &request).unwrap();
        assert_eq!(
            read_binding_response(&response, TX, &sbc()),
            Ok(CheckAnswer::Success {
                mapped: Some(client())
            })
        );
    }

    #[test]
    fn garbage_indications_and_binding_responses_are_discarded_silently() {
        let mut agent = IceLiteAgent::new(sbc());
        assert_eq!(
            agent.handle(client(), b"\x00\x01garbage that is not stun"),
            None
        );
        let success = agent.handle(client(), &check(false)).unwrap();
        assert_eq!(agent.handle(client(), &success), None);
        let indication = Message::new(Class::Indication, BINDING, TX).encode(None, true);
        assert_eq!(agent.handle(client(), &indication), None);
        let mut bad_fingerprint = check(false);
        let last = bad_fingerprint.len() - 1;
        bad_fingerprint[last] ^= 1;
        assert_eq!(agent.handle(client(), &bad_fingerprint), None);
        assert_eq!(agent.stats().discarded, 4);
        assert_eq!(agent.stats().checks, 1);
    }

    #[test]
    fn restart_makes_old_credentials_unauthorized_and_clears_nomination() {
        let mut agent = IceLiteAgent::new(sbc());
        agent.handle(client(), &check(true)).unwrap();
        assert_eq!(agent.nominated(), Some(client()));
        let fresh = Credentials::generate(&mut SeededRng::new(99));
        agent.restart(fresh.clone());
        assert_eq!(agent.local(), &fresh);
        assert_eq!(agent.nominated(), None);
        assert!(!agent.was_checked(client()));
        assert_eq!(
            error_code(&agent.handle(client(), &check(true)).unwrap()),
            401
        );
        let request = binding_request(TX, &teams(), &fresh, PRIORITY, TIEBREAKER, true);
        let response = agent.handle(client(), &request).unwrap();
        assert!(matches!(
            read_binding_response(&response, TX, &fresh),
            Ok(CheckAnswer::Success { .. })
        ));
        assert_eq!(agent.nominated(), Some(client()));
    }

    #[test]
    fn generated_credentials_are_valid_and_differ_between_draws() {
        let mut rng = SeededRng::new(42);
        let a = Credentials::generate(&mut rng);
        let b = Credentials::generate(&mut rng);
        assert!(a.is_valid() && b.is_valid());
        assert_eq!((a.ufrag.len(), a.pwd.len()), (8, 24));
        assert_ne!(a, b);
        // Seeded: the same seed draws the same credentials.
        assert_eq!(Credentials::generate(&mut SeededRng::new(42)), a);
    }

    #[test]
    fn credentials_follow_rfc8839_lengths_and_ice_chars() {
        let ok = |u: &str, p: &str| {
            Credentials {
                ufrag: u.into(),
                pwd: p.into(),
            }
            .is_valid()
        };
        assert!(ok("abc+", &"p/".repeat(11)));
        assert!(ok(&"u".repeat(256), &"p".repeat(256)));
        assert!(!ok("abc", &"p".repeat(22)));
        assert!(!ok("abcd", &"p".repeat(21)));
        assert!(!ok(&"u".repeat(257), &"p".repeat(22)));
        assert!(!ok("ab:d", &"p".repeat(22)));
        assert!(!ok("abcd", &format!("{}=", "p".repeat(22))));
        assert!(!ok("abcé", &"p".repeat(22)));
    }

    #[test]
    fn every_error_response_carries_a_fingerprint_and_parses() {
        let pwd = Some(sbc().pwd);
        let requests = [
            custom(vec![Attribute::IceControlling(1)], pwd.as_deref()),
            binding_request(TX, &teams(), &teams(), PRIORITY, TIEBREAKER, false),
            custom(
                vec![
                    Attribute::Username("sbcU:x".into()),
                    Attribute::Other {
                        typ: 0x0777,
                        value: vec![],
                    },
                ],
                pwd.as_deref(),
            ),
            custom(
                vec![
                    Attribute::Username("sbcU:x".into()),
                    Attribute::IceControlled(1),
                ],
                pwd.as_deref(),
            ),
            custom(vec![Attribute::Username("sbcU:x".into())], pwd.as_deref()),
        ];
        let mut agent = IceLiteAgent::new(sbc());
        let mut codes = Vec::new();
        for request in requests {
            let response = agent.handle(client(), &request).unwrap();
            let parsed = Message::parse(&response).unwrap();
            assert_eq!(parsed.class, Class::Error);
            assert_eq!(parsed.transaction, TX);
            assert!(matches!(
                parsed.attributes.last(),
                Some(Attribute::Fingerprint(_))
            ));
            codes.push(error_code(&response));
        }
        assert_eq!(codes, vec![400, 401, 420, 487, 400]);
        assert_eq!(agent.stats().answered, 0);
    }

    #[test]
    fn a_response_is_refused_for_another_transaction_a_wrong_key_or_no_integrity() {
        let mut agent = IceLiteAgent::new(sbc());
        let response = agent.handle(client(), &check(false)).unwrap();
        assert!(read_binding_response(&response, *b"another-tx!!", &sbc()).is_err());
        assert!(read_binding_response(&response, TX, &teams()).is_err());
        let mut unauthenticated = Message::new(Class::Success, BINDING, TX);
        unauthenticated
            .attributes
            .push(Attribute::XorMappedAddress(client()));
        let bytes = unauthenticated.encode(None, true);
        assert!(read_binding_response(&bytes, TX, &sbc()).is_err());
        let no_fingerprint = unauthenticated.encode(Some(sbc().pwd.as_bytes()), false);
        assert!(read_binding_response(&no_fingerprint, TX, &sbc()).is_err());
        assert!(read_binding_response(&check(false), TX, &sbc()).is_err());
        assert!(read_binding_response(b"nonsense", TX, &sbc()).is_err());
    }

    #[test]
    fn mutated_checks_never_make_the_responder_panic() {
        let mut agent = IceLiteAgent::new(sbc());
        let request = check(true);
        for len in 0..request.len() {
            let _ = agent.handle(client(), &request[..len]);
        }
        for i in 0..request.len() {
            for x in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut b = request.clone();
                b[i] ^= x;
                if let Some(response) = agent.handle(client(), &b) {
                    assert!(Message::parse(&response).is_ok());
                }
            }
        }
    }
}
