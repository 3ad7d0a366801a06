//! The SBC's media relay for one call: two UDP ports, one per leg, with
//! SRTP protect/unprotect where a leg is secure (RTP toward the carrier,
//! SRTP AES_CM_128_HMAC_SHA1_80 toward Teams).
//!
//! [`RelayCore`] decides, sans-IO, what a packet becomes and where it
//! goes; [`RelayDriver`] owns the sockets. Ports are bound when the call
//! is set up, before either answer is known; the plan (remote addresses
//! and keys) arrives later. Packets that arrive before it are held (media
//! can overtake the signalling that carries the answer).
//!
//! Latching (symmetric RTP, RFC 4961, as SBCs do behind NAT) is strict: a
//! leg accepts packets from the address its SDP signalled, or latches once
//! to the first packet that authenticates (SRTP legs) or that comes from
//! the signalled host (plain RTP legs). Anything else is counted and
//! dropped, so an off-path sender cannot take over a call's audio.
//!
//! Media bypass (behaviour §7): a leg with ICE credentials is ICE-lite
//! ([`IceLiteAgent`], RFC 8445 §2.5). STUN on it (RFC 7983 §7: first byte
//! 0–3) is answered from the port it came to, from the moment the ports
//! are open, plan or not: Teams clients check before the answer. Once the
//! controlling agent nominates a pair, the leg latches to it and sends
//! there (a later nomination moves it; an ICE restart starts over).

use super::ice::{Credentials, IceLiteAgent, IceStats};
use super::srtp::{Protector, SrtpKey, Unprotector};
use super::stun::looks_like_stun;
use crate::sip::transport::{DatagramSocket, Network};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLeg {
    /// Where this leg's far end said to send (its SDP).
    pub remote: SocketAddr,
    /// Our key toward this leg (from our SDP), if it is SRTP.
    pub tx_key: Option<SrtpKey>,
    /// The far end's key on this leg (from its SDP).
    pub rx_key: Option<SrtpKey>,
    /// Our ICE-lite credentials on this leg (media bypass toward Teams);
    /// new ones restart ICE (RFC 8445 §9).
    pub ice: Option<Credentials>,
    /// Once answered: the ufrag of the peer that answered, whose
    /// nominations alone count (see [`IceLiteAgent::set_peer`]).
    pub ice_peer: Option<String>,
    /// RFC 4733 telephone-events on this leg: the payload type its far end
    /// expects (its SDP; events toward it go out with it) and the one we
    /// said we expect (ours; events from it arrive with it). Where the two
    /// legs differ the relay renumbers events (RFC 3264 §6.1: each side's
    /// numbers are its own).
    pub te_tx: Option<u8>,
    pub te_rx: Option<u8>,
}

impl RelayLeg {
    /// A leg as its SDP agreed: where to send, the keys, the event types.
    pub fn from_agreed(a: &crate::sip::sdp::offer_answer::Agreed) -> Option<RelayLeg> {
        let (tx_key, rx_key) = crate::media::srtp::agreed_keys(a);
        Some(RelayLeg {
            remote: a.remote_socket()?,
            tx_key,
            rx_key,
            ice: None,
            ice_peer: None,
            te_tx: a.telephone_event,
            te_rx: a.local_telephone_event,
        })
    }

    /// Whether `other` sends to the same place with the same keys: its SRTP
    /// contexts and latch can stay (ICE is the agent's business).
    fn same_media(&self, other: &RelayLeg) -> bool {
        self.remote == other.remote && self.tx_key == other.tx_key && self.rx_key == other.rx_key
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPlan {
    pub a: RelayLeg,
    pub b: RelayLeg,
    /// The call is on hold (either side's SDP says no media: `a=inactive`,
    /// or `sendonly`/`recvonly`/`c=0.0.0.0` from the carrier): nothing is
    /// relayed either way (toward Teams the SBC says `a=inactive`).
    pub hold: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub a_to_b: u32,
    pub b_to_a: u32,
    /// Packets that failed to unprotect or protect.
    pub srtp_errors: u32,
    /// Packets from an address the leg does not accept (see the module doc).
    pub foreign: u32,
    /// Packets dropped because the call is on hold.
    pub held: u32,
    /// Plain RTP not protected toward an SRTP leg because that sequence
    /// number of its source was protected already (see `SeenSeqs`).
    pub duplicates: u32,
    /// Packets not sent toward an ICE-lite leg because no path to it was
    /// checked yet (media bypass).
    pub unchecked: u32,
    /// Telephone-events renumbered on their way from leg a, and from b.
    pub renumbered_a: u32,
    pub renumbered_b: u32,
    /// Where each leg latched.
    pub latched_a: Option<SocketAddr>,
    pub latched_b: Option<SocketAddr>,
    /// What each ICE-lite leg's agent did with the STUN it received.
    pub ice_a: Option<IceStats>,
    pub ice_b: Option<IceStats>,
}

/// Packets kept while there is no plan yet.
const EARLY_BUFFER: usize = 64;

struct LegState {
    signalled: SocketAddr,
    latched: Option<SocketAddr>,
    protect: Option<Protector>,
    unprotect: Option<Unprotector>,
    /// Sequence numbers already protected, on a plain leg whose packets
    /// we protect (see [`SeenSeqs`]).
    seen: SeenSeqs,
}

/// Which sequence numbers of the plain RTP sources on a leg were already
/// protected toward the SRTP leg, so none is protected twice: one SRTP
/// index must never be used twice under a key (RFC 3711 §9.2; with two
/// payloads it is a two-time pad). Only exact repeats are refused: a
/// packet that is old, late or far ahead is relayed, so one stray or
/// spoofed sequence number (plain RTP is not authenticated) costs at most
/// the one packet that later carries the same number, never a run of
/// audio. Per source, a bit per sequence number; accepting `s` clears the
/// bit half the number space ahead (`s + 32768`), so a number comes free
/// again half a cycle later, long before the 16-bit wrap brings it back
/// (RFC 3550 §A.1: the wrap starts a new rollover cycle, a new index).
/// At most [`SEEN_SOURCES`] sources are kept, the least recent dropped.
#[derive(Debug, Clone, Default)]
struct SeenSeqs {
    sources: std::collections::VecDeque<(u32, Box<[u64; 1024]>)>,
}

const SEEN_SOURCES: usize = 8;

impl SeenSeqs {
    /// Whether `seq` of `ssrc` is new, recording it if so.
    fn fresh(&mut self, ssrc: u32, seq: u16) -> bool {
        let at = match self.sources.iter().position(|(s, _)| *s == ssrc) {
            Some(i) => i,
            None => {
                if self.sources.len() == SEEN_SOURCES {
                    self.sources.pop_front();
                }
                self.sources.push_back((ssrc, Box::new([0; 1024])));
                self.sources.len() - 1
            }
        };
        let bits = &mut self.sources[at].1;
        let (word, bit) = (usize::from(seq) / 64, seq % 64);
        if bits[word] & (1 << bit) != 0 {
            return false;
        }
        bits[word] |= 1 << bit;
        let ahead = seq.wrapping_add(32768);
        bits[usize::from(ahead) / 64] &= !(1 << (ahead % 64));
        true
    }
}

impl LegState {
    fn new(plan: &RelayLeg) -> Result<Self, super::SrtpError> {
        Ok(LegState {
            signalled: plan.remote,
            latched: None,
            protect: plan.tx_key.as_ref().map(Protector::new).transpose()?,
            unprotect: plan.rx_key.as_ref().map(Unprotector::new).transpose()?,
            seen: SeenSeqs::default(),
        })
    }

    fn destination(&self) -> SocketAddr {
        self.latched.unwrap_or(self.signalled)
    }
}

/// A packet to send: out of leg a's socket (`from_a`) or leg b's, to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOut {
    pub from_a: bool,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// What the relay does with each packet, without sockets.
pub struct RelayCore {
    legs: Option<(LegState, LegState)>,
    /// Each leg's ICE-lite agent, if it has one (leg a, leg b).
    ice: (Option<IceLiteAgent>, Option<IceLiteAgent>),
    /// The plan the legs were built from.
    plan: Option<RelayPlan>,
    early: Vec<(bool, Vec<u8>, SocketAddr)>,
    pub stats: RelayStats,
}

impl Default for RelayCore {
    fn default() -> Self {
        Self::new()
    }
}

impl RelayCore {
    pub fn new() -> Self {
        RelayCore {
            legs: None,
            ice: (None, None),
            plan: None,
            early: Vec::new(),
            stats: RelayStats::default(),
        }
    }

    /// Give a leg ICE-lite credentials (media bypass), or new ones (an ICE
    /// restart, RFC 8445 §9: what was checked and nominated is forgotten),
    /// or none. Unchanged credentials change nothing.
    pub fn set_ice(&mut self, leg_a: bool, local: Option<&Credentials>) {
        let agent = if leg_a {
            &mut self.ice.0
        } else {
            &mut self.ice.1
        };
        match (agent.as_mut(), local) {
            (Some(a), Some(c)) if a.local() == c => {}
            (Some(a), Some(c)) => a.restart(c.clone()),
            (None, Some(c)) => *agent = Some(IceLiteAgent::new(c.clone())),
            (_, None) => *agent = None,
        }
    }

    /// A new plan (the answer arrived, or a re-INVITE changed it). Packets
    /// held until now are relayed by it.
    ///
    /// A leg whose address and keys did not change keeps its SRTP contexts
    /// (rollover counter, replay window: RFC 3711 §3.3.1) and its latch, so
    /// a re-INVITE that only holds or resumes does not restart the stream.
    pub fn set_plan(&mut self, plan: &RelayPlan) -> Result<Vec<RelayOut>, super::SrtpError> {
        self.set_ice(true, plan.a.ice.as_ref());
        self.set_ice(false, plan.b.ice.as_ref());
        for (agent, leg) in [(&mut self.ice.0, &plan.a), (&mut self.ice.1, &plan.b)] {
            if let Some(agent) = agent {
                agent.set_peer(leg.ice_peer.as_deref());
            }
        }
        let old = self.plan.take();
        let legs = self.legs.take();
        let (keep_a, keep_b) = match &old {
            Some(o) => (o.a.same_media(&plan.a), o.b.same_media(&plan.b)),
            None => (false, false),
        };
        let (a, b) = match legs {
            Some((a, b)) => (
                if keep_a { a } else { LegState::new(&plan.a)? },
                if keep_b { b } else { LegState::new(&plan.b)? },
            ),
            None => (LegState::new(&plan.a)?, LegState::new(&plan.b)?),
        };
        self.stats.latched_a = a.latched;
        self.stats.latched_b = b.latched;
        self.legs = Some((a, b));
        self.plan = Some(plan.clone());
        let early = std::mem::take(&mut self.early);
        Ok(early
            .into_iter()
            .filter_map(|(from_a, p, src)| self.handle(from_a, src, &p))
            .collect())
    }

    /// A packet arrived on leg a's socket (`from_a`) or leg b's from `src`.
    pub fn handle(&mut self, from_a: bool, src: SocketAddr, packet: &[u8]) -> Option<RelayOut> {
        if let Some(agent) = if from_a {
            &mut self.ice.0
        } else {
            &mut self.ice.1
        } {
            if looks_like_stun(packet) {
                // Answered on the port it came to, to where it came from.
                let reply = agent.handle(src, packet);
                let stats = Some(agent.stats().clone());
                if from_a {
                    self.stats.ice_a = stats;
                } else {
                    self.stats.ice_b = stats;
                }
                return reply.map(|bytes| RelayOut {
                    from_a,
                    to: src,
                    bytes,
                });
            }
        }
        // A nominated pair is where the leg sends, and whom it accepts.
        if let Some((a, b)) = &mut self.legs {
            for (leg, agent) in [(a, &self.ice.0), (b, &self.ice.1)] {
                if let Some(n) = agent.as_ref().and_then(|x| x.nominated()) {
                    leg.latched = Some(n);
                }
            }
        }
        let Some((a, b)) = &mut self.legs else {
            if self.early.len() < EARLY_BUFFER {
                self.early.push((from_a, packet.to_vec(), src));
            }
            return None;
        };
        if self.plan.as_ref().is_some_and(|p| p.hold) {
            self.stats.held += 1;
            return None;
        }
        let (inbound, outbound) = if from_a { (a, b) } else { (b, a) };
        // Once a pair is nominated, audio on an ICE leg comes from it only
        // (another fork's client, checked or not, is not part of the call).
        let inbound_ice = if from_a { &self.ice.0 } else { &self.ice.1 };
        if inbound_ice
            .as_ref()
            .and_then(|x| x.nominated())
            .is_some_and(|n| n != src)
        {
            self.stats.foreign += 1;
            return None;
        }
        let plain = match accept(inbound, src, packet) {
            Accept::Plain(p) => p,
            Accept::Foreign => {
                self.stats.foreign += 1;
                return None;
            }
            Accept::BadSrtp => {
                self.stats.srtp_errors += 1;
                return None;
            }
        };
        // An ICE-lite leg sends only on a path the controlling agent proved:
        // the nominated pair, else the first that streamed to us, else the
        // signalled candidate once a check from it succeeded (behaviour §7:
        // "sends on the highest-priority checked path until nomination").
        let outbound_ice = if from_a { &self.ice.1 } else { &self.ice.0 };
        let to = match outbound_ice {
            None => outbound.destination(),
            Some(agent) => match (agent.nominated(), outbound.latched) {
                (Some(n), _) => n,
                (None, Some(l)) => l,
                (None, None) if agent.was_checked(outbound.signalled) => outbound.signalled,
                (None, None) => {
                    self.stats.unchecked += 1;
                    return None;
                }
            },
        };
        // A telephone-event in the inbound leg's numbering goes out in the
        // outbound leg's (the marker bit kept).
        let (te_in, te_out) = match &self.plan {
            Some(p) if from_a => (p.a.te_rx, p.b.te_tx),
            Some(p) => (p.b.te_rx, p.a.te_tx),
            None => (None, None),
        };
        let mut plain = plain;
        if let (Some(te_in), Some(te_out), Some(byte)) = (te_in, te_out, plain.get_mut(1)) {
            if te_in != te_out && *byte & 0x7f == te_in {
                *byte = (*byte & 0x80) | te_out;
                if from_a {
                    self.stats.renumbered_a += 1;
                } else {
                    self.stats.renumbered_b += 1;
                }
            }
        }
        // Plain RTP about to be protected: each index once (see SeenSeqs).
        // An SRTP inbound leg's own replay list has already done this.
        if outbound.protect.is_some() && inbound.unprotect.is_none() && plain.len() >= 12 {
            let seq = u16::from_be_bytes([plain[2], plain[3]]);
            let ssrc = u32::from_be_bytes([plain[8], plain[9], plain[10], plain[11]]);
            let fresh = inbound.seen.fresh(ssrc, seq);
            if !fresh {
                self.stats.duplicates += 1;
                return None;
            }
        }
        let bytes = match &mut outbound.protect {
            Some(p) => match p.protect(&plain) {
                Ok(b) => b,
                Err(_) => {
                    self.stats.srtp_errors += 1;
                    return None;
                }
            },
            None => plain,
        };
        if from_a {
            self.stats.a_to_b += 1;
            self.stats.latched_a = inbound.latched;
        } else {
            self.stats.b_to_a += 1;
            self.stats.latched_b = inbound.latched;
        }
        Some(RelayOut {
            from_a: !from_a,
            to,
            bytes,
        })
    }
}

enum Accept {
    Plain(Vec<u8>),
    Foreign,
    BadSrtp,
}

fn accept(leg: &mut LegState, src: SocketAddr, packet: &[u8]) -> Accept {
    let known = leg.latched == Some(src) || src == leg.signalled;
    if leg.latched.is_some() && !known {
        return Accept::Foreign;
    }
    match &mut leg.unprotect {
        Some(u) => match u.unprotect(packet) {
            // An SRTP leg latches to the first packet that authenticates.
            Ok(p) => {
                leg.latched.get_or_insert(src);
                Accept::Plain(p)
            }
            Err(_) if known => Accept::BadSrtp,
            Err(_) => Accept::Foreign,
        },
        None => {
            // A plain leg latches only to the host its SDP named.
            if known || src.ip() == leg.signalled.ip() {
                leg.latched.get_or_insert(src);
                Accept::Plain(packet.to_vec())
            } else {
                Accept::Foreign
            }
        }
    }
}

/// What the SBC asks of its media driver.
#[derive(Debug)]
pub enum RelayCommand {
    /// Bind both legs' ports now (leg a, leg b).
    Open {
        id: u64,
        a: SocketAddr,
        b: SocketAddr,
        stats: Arc<Mutex<RelayStats>>,
        /// ICE-lite credentials of leg a and leg b (media bypass): STUN
        /// checks are answered from the moment the ports are open.
        ice: (Option<Credentials>, Option<Credentials>),
    },
    /// Boxed: a plan (keys, ICE credentials) is far larger than the rest.
    Plan { id: u64, plan: Box<RelayPlan> },
    /// Stop relaying and close both ports.
    Close { id: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// A port could not be bound: the call cannot have media.
    Failed { id: u64, reason: String },
    /// Both ports are closed: they may be handed out again.
    Closed { id: u64 },
}

/// Owns the relays' sockets: one task per call.
pub struct RelayDriver {
    plans: BTreeMap<u64, watch::Sender<Option<RelayPlan>>>,
    events_tx: mpsc::UnboundedSender<RelayEvent>,
    events: mpsc::UnboundedReceiver<RelayEvent>,
    live: Arc<AtomicUsize>,
}

impl Default for RelayDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl RelayDriver {
    pub fn new() -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        RelayDriver {
            plans: BTreeMap::new(),
            events_tx,
            events,
            live: Arc::default(),
        }
    }

    /// Relay tasks running now (their sockets are open).
    pub fn live(&self) -> Arc<AtomicUsize> {
        self.live.clone()
    }
}

impl<N: Network> crate::driver::MediaDriver<N> for RelayDriver {
    type Command = RelayCommand;
    type Event = RelayEvent;

    async fn execute(&mut self, net: &N, command: RelayCommand) {
        match command {
            RelayCommand::Open {
                id,
                a,
                b,
                stats,
                ice,
            } => {
                let bound = match net.bind_udp(a).await {
                    Ok(sa) => net.bind_udp(b).await.map(|sb| (sa, sb)),
                    Err(e) => Err(e),
                };
                match bound {
                    Ok((sa, sb)) => {
                        let (tx, rx) = watch::channel(None);
                        self.plans.insert(id, tx);
                        let (events, live) = (self.events_tx.clone(), self.live.clone());
                        live.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(async move {
                            relay(sa, sb, rx, stats, ice).await;
                            live.fetch_sub(1, Ordering::SeqCst);
                            let _ = events.send(RelayEvent::Closed { id });
                        });
                    }
                    Err(e) => {
                        let reason = format!("cannot bind media port {a} or {b}: {e}");
                        let _ = self.events_tx.send(RelayEvent::Failed { id, reason });
                    }
                }
            }
            RelayCommand::Plan { id, plan } => {
                if let Some(tx) = self.plans.get(&id) {
                    let _ = tx.send(Some(*plan));
                }
            }
            RelayCommand::Close { id } => {
                if self.plans.remove(&id).is_none() {
                    // Never opened (its bind failed): nothing holds the ports.
                    let _ = self.events_tx.send(RelayEvent::Closed { id });
                }
            }
        }
    }

    fn events(&mut self) -> &mut mpsc::UnboundedReceiver<RelayEvent> {
        &mut self.events
    }
}

/// Move packets between the two sockets until the plan's sender is dropped.
async fn relay<S: DatagramSocket>(
    sock_a: S,
    sock_b: S,
    mut plan: watch::Receiver<Option<RelayPlan>>,
    stats: Arc<Mutex<RelayStats>>,
    ice: (Option<Credentials>, Option<Credentials>),
) {
    let mut core = RelayCore::new();
    core.set_ice(true, ice.0.as_ref());
    core.set_ice(false, ice.1.as_ref());
    let mut buf_a = vec![0u8; 2048];
    let mut buf_b = vec![0u8; 2048];
    loop {
        let out: Vec<RelayOut> = tokio::select! {
            biased;
            changed = plan.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(p) = plan.borrow_and_update().clone() else { continue };
                match core.set_plan(&p) {
                    Ok(out) => out,
                    Err(_) => { core.stats.srtp_errors += 1; Vec::new() }
                }
            }
            r = sock_a.recv_from(&mut buf_a) => {
                let Ok((n, src)) = r else { continue };
                core.handle(true, src, &buf_a[..n]).into_iter().collect()
            }
            r = sock_b.recv_from(&mut buf_b) => {
                let Ok((n, src)) = r else { continue };
                core.handle(false, src, &buf_b[..n]).into_iter().collect()
            }
        };
        for o in out {
            let sock = if o.from_a { &sock_a } else { &sock_b };
            let _ = sock.send_to(&o.bytes, o.to).await;
        }
        *stats.lock().unwrap_or_else(|e| e.into_inner()) = core.stats.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::rng::SeededRng;

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&[7; 160]);
        p
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Leg a: the carrier, plain RTP at 198.51.100.7:20000. Leg b: Teams,
    /// SRTP at 52.114.16.1:49152.
    fn plan(rng: &mut SeededRng) -> (RelayPlan, SrtpKey, SrtpKey) {
        let ours = SrtpKey::generate(rng);
        let theirs = SrtpKey::generate(rng);
        let p = RelayPlan {
            a: RelayLeg {
                remote: addr("198.51.100.7:20000"),
                tx_key: None,
                rx_key: None,
                ice: None,
                ice_peer: None,
                te_tx: Some(96),
                te_rx: Some(96),
            },
            b: RelayLeg {
                remote: addr("52.114.16.1:49152"),
                tx_key: Some(ours.clone()),
                rx_key: Some(theirs.clone()),
                ice: None,
                ice_peer: None,
                te_tx: Some(101),
                te_rx: Some(101),
            },
            hold: false,
        };
        (p, ours, theirs)
    }

    /// RFC 4733 across legs that numbered telephone-event differently (the
    /// carrier 96, Teams 101): events are renumbered both ways, the marker
    /// bit kept; audio and other payload types pass as they are.
    #[test]
    fn telephone_events_are_renumbered_between_legs() {
        let mut rng = SeededRng::new(3);
        let (p, ours, theirs) = plan(&mut rng);
        let mut core = RelayCore::new();
        core.set_plan(&p).unwrap();
        let carrier = addr("198.51.100.7:20000");
        let mut event = rtp(1);
        event[1] = 0x80 | 96; // marker, PT 96
        let out = core.handle(true, carrier, &event).unwrap();
        let mut rx = Unprotector::new(&ours).unwrap();
        let plain = rx.unprotect(&out.bytes).unwrap();
        assert_eq!(plain[1], 0x80 | 101);
        assert_eq!(&plain[2..], &event[2..]);
        // Audio (PT 0) is not touched.
        let out = core.handle(true, carrier, &rtp(2)).unwrap();
        assert_eq!(rx.unprotect(&out.bytes).unwrap(), rtp(2));
        // From Teams: 101 becomes 96 toward the carrier.
        let mut tx = crate::media::srtp::Protector::new(&theirs).unwrap();
        let mut back = rtp(9);
        back[1] = 101;
        let srtp = tx.protect(&back).unwrap();
        let out = core
            .handle(false, addr("52.114.16.1:49152"), &srtp)
            .unwrap();
        assert_eq!(out.bytes[1], 96);
        assert_eq!((core.stats.renumbered_a, core.stats.renumbered_b), (1, 1));
    }

    #[test]
    fn plain_leg_accepts_the_signalled_host_and_drops_an_off_path_sender() {
        let mut rng = SeededRng::new(1);
        let (p, ours, _) = plan(&mut rng);
        let mut core = RelayCore::new();
        core.set_plan(&p).unwrap();
        // An attacker first: dropped, no latch.
        assert_eq!(core.handle(true, addr("203.0.113.66:4000"), &rtp(1)), None);
        assert_eq!(core.stats.foreign, 1);
        // The phone, from another port of the signalled host (NAT): latched.
        let out = core
            .handle(true, addr("198.51.100.7:20002"), &rtp(2))
            .unwrap();
        assert_eq!(out.to, addr("52.114.16.1:49152"));
        let mut rx = Unprotector::new(&ours).unwrap();
        assert_eq!(rx.unprotect(&out.bytes).unwrap(), rtp(2));
        // After the latch, even the signalled host's other ports are foreign.
        assert_eq!(core.handle(true, addr("198.51.100.7:9"), &rtp(3)), None);
        assert_eq!(core.stats.foreign, 2);
        assert_eq!(core.stats.latched_a, Some(addr("198.51.100.7:20002")));
    }

    /// Media bypass (behaviour §7): the Teams leg is ICE-lite. Checks are
    /// answered on the port they came to before any plan exists; media goes
    /// only to a checked path, then to the nominated one, and once a pair
    /// is nominated the leg accepts audio only from it.
    #[test]
    fn an_ice_lite_leg_answers_checks_and_sends_only_on_proven_paths() {
        use crate::media::ice::{binding_request, read_binding_response, CheckAnswer};
        let mut rng = SeededRng::new(5);
        let (mut p, ours, theirs) = plan(&mut rng);
        let sbc = Credentials::generate(&mut rng);
        let (fork1, fork2) = (
            Credentials::generate(&mut rng),
            Credentials::generate(&mut rng),
        );
        let signalled = p.b.remote;
        let other = addr("52.114.16.2:50000");
        let mut core = RelayCore::new();
        core.set_ice(false, Some(&sbc));
        // Before the plan: a check from the signalled client is answered.
        let check = binding_request([1; 12], &fork1, &sbc, 1, 7, false);
        let out = core.handle(false, signalled, &check).expect("answered");
        assert!(!out.from_a && out.to == signalled);
        assert_eq!(
            read_binding_response(&out.bytes, [1; 12], &sbc),
            Ok(CheckAnswer::Success {
                mapped: Some(signalled)
            })
        );
        p.b.ice = Some(sbc.clone());
        core.set_plan(&p).unwrap();
        // Carrier audio goes to the checked signalled address.
        let to_teams = core
            .handle(true, addr("198.51.100.7:20000"), &rtp(1))
            .unwrap();
        assert_eq!(to_teams.to, signalled);
        let mut rx = Unprotector::new(&ours).unwrap();
        assert_eq!(rx.unprotect(&to_teams.bytes).unwrap(), rtp(1));
        // Another fork nominates its own address: audio moves there, and
        // the first fork's SRTP is no longer accepted.
        let nominate = binding_request([2; 12], &fork2, &sbc, 1, 9, true);
        assert!(core.handle(false, other, &nominate).is_some());
        let moved = core
            .handle(true, addr("198.51.100.7:20000"), &rtp(2))
            .unwrap();
        assert_eq!(moved.to, other);
        let mut tx = Protector::new(&theirs).unwrap();
        assert_eq!(
            core.handle(false, signalled, &tx.protect(&rtp(3)).unwrap()),
            None
        );
        assert!(core
            .handle(false, other, &tx.protect(&rtp(4)).unwrap())
            .is_some());
        // A wrong password is refused (RFC 8489 §9.1.3), and an ICE restart
        // (new credentials) forgets the nomination: nothing is sent until a
        // path is checked again.
        let wrong = binding_request([3; 12], &fork1, &fork2, 1, 7, false);
        let refused = core.handle(false, signalled, &wrong).unwrap();
        assert_eq!(
            read_binding_response(&refused.bytes, [3; 12], &sbc),
            Ok(CheckAnswer::Error { code: 401 })
        );
        let restarted = Credentials::generate(&mut rng);
        p.b.ice = Some(restarted);
        p.b.remote = other;
        core.set_plan(&p).unwrap();
        assert_eq!(core.handle(true, addr("198.51.100.7:20000"), &rtp(5)), None);
        assert_eq!(core.stats.unchecked, 1);
        assert_eq!(core.stats.ice_b.as_ref().map(|s| s.nominations), Some(1));
    }

    /// RFC 3711 §9.2: a sender must never protect two packets with one
    /// index. A carrier (or its network) that repeats an RTP sequence
    /// number, with the same payload or another, gets it relayed once: a
    /// second encryption under the same keystream would hand the XOR of
    /// two payloads to anyone on the path. Late packets still go.
    #[test]
    fn a_repeated_rtp_sequence_number_is_protected_once() {
        let mut rng = SeededRng::new(3);
        let (p, _, _) = plan(&mut rng);
        let mut core = RelayCore::new();
        core.set_plan(&p).unwrap();
        let phone = addr("198.51.100.7:20000");
        assert!(core.handle(true, phone, &rtp(100)).is_some());
        assert_eq!(core.handle(true, phone, &rtp(100)), None, "an exact copy");
        let mut other = rtp(100);
        other[20] ^= 0xff;
        assert_eq!(
            core.handle(true, phone, &other),
            None,
            "same index, other payload"
        );
        assert!(core.handle(true, phone, &rtp(102)).is_some());
        assert!(core.handle(true, phone, &rtp(101)).is_some(), "late");
        assert!(
            core.handle(true, phone, &rtp(2)).is_some(),
            "very late, never seen"
        );
        assert_eq!(core.handle(true, phone, &rtp(101)), None);
        assert_eq!(core.stats.duplicates, 3);
    }

    /// One stray or spoofed sequence number far ahead (plain RTP is not
    /// authenticated) must not mute the stream that follows: only the one
    /// packet that later carries that number is lost. And a number comes
    /// free again after half a cycle, so a long call keeps every packet
    /// across the 16-bit wrap.
    #[test]
    fn a_stray_sequence_number_costs_one_packet_and_long_calls_wrap() {
        let mut rng = SeededRng::new(4);
        let (p, _, _) = plan(&mut rng);
        let mut core = RelayCore::new();
        core.set_plan(&p).unwrap();
        let phone = addr("198.51.100.7:20000");
        assert!(core.handle(true, phone, &rtp(10)).is_some());
        assert!(
            core.handle(true, phone, &rtp(1010)).is_some(),
            "a jump ahead"
        );
        let relayed = (11..1100u16)
            .filter(|s| core.handle(true, phone, &rtp(*s)).is_some())
            .count();
        assert_eq!(relayed, 1100 - 11 - 1, "all but the one numbered 1010");
        // Three times round the sequence space, each number once per cycle.
        let mut core = RelayCore::new();
        core.set_plan(&p).unwrap();
        let mut dropped = 0;
        for i in 0..(3 * 65536u32) {
            if core.handle(true, phone, &rtp(i as u16)).is_none() {
                dropped += 1;
            }
        }
        assert_eq!(dropped, 0);
        assert_eq!(core.stats.duplicates, 0);
    }

    /// Many sources (SSRCs) keep a bounded memory: the least recent go.
    #[test]
    fn seen_sequence_numbers_are_kept_for_a_few_sources_only() {
        let mut seen = SeenSeqs::default();
        for ssrc in 0..100 {
            assert!(seen.fresh(ssrc, 7));
        }
        assert_eq!(seen.sources.len(), SEEN_SOURCES);
        assert!(!seen.fresh(99, 7), "a recent source remembers");
        assert!(seen.fresh(0, 7), "an evicted one starts afresh");
    }

    #[test]
    fn srtp_leg_latches_only_to_a_packet_that_authenticates() {
        let mut rng = SeededRng::new(2);
        let (p, _, theirs) = plan(&mut rng);
        let mut core = RelayCore::new();
        core.set_plan(&p).unwrap();
        // Garbage from an off-path host: foreign, no latch.
        assert_eq!(core.handle(false, addr("203.0.113.66:4000"), &rtp(1)), None);
        assert_eq!(core.stats.foreign, 1);
        // The media processor from a relay address: authenticates, latches.
        let mut tx = Protector::new(&theirs).unwrap();
        let srtp = tx.protect(&rtp(5)).unwrap();
        let out = core.handle(false, addr("52.114.20.9:3478"), &srtp).unwrap();
        assert_eq!(out.bytes, rtp(5));
        assert_eq!(out.to, addr("198.51.100.7:20000"));
        let forged = Protector::new(&SrtpKey::generate(&mut rng))
            .unwrap()
            .protect(&rtp(6))
            .unwrap();
        assert_eq!(core.handle(false, addr("203.0.113.66:4000"), &forged), None);
        assert_eq!(core.stats.foreign, 2);
    }

    #[test]
    fn hold_drops_both_ways_and_resume_keeps_the_srtp_context() {
        let mut rng = SeededRng::new(4);
        let (p, _, theirs) = plan(&mut rng);
        let mut core = RelayCore::new();
        core.set_plan(&p).unwrap();
        let mut tx = Protector::new(&theirs).unwrap();
        let from_teams = addr("52.114.16.1:49152");
        assert!(core
            .handle(false, from_teams, &tx.protect(&rtp(1)).unwrap())
            .is_some());
        let held = RelayPlan {
            hold: true,
            ..p.clone()
        };
        core.set_plan(&held).unwrap();
        assert_eq!(core.handle(true, addr("198.51.100.7:20000"), &rtp(2)), None);
        assert_eq!(
            core.handle(false, from_teams, &tx.protect(&rtp(3)).unwrap()),
            None
        );
        assert_eq!(core.stats.held, 2);
        assert_eq!((core.stats.a_to_b, core.stats.b_to_a), (0, 1));
        // Resume: the same legs, so the packet already seen (index 1) is
        // still a replay and the next one passes.
        core.set_plan(&p).unwrap();
        let replay = Protector::new(&theirs).unwrap().protect(&rtp(1)).unwrap();
        assert_eq!(core.handle(false, from_teams, &replay), None);
        assert_eq!(core.stats.srtp_errors, 1);
        assert!(core
            .handle(false, from_teams, &tx.protect(&rtp(4)).unwrap())
            .is_some());
        assert_eq!(core.stats.latched_b, Some(from_teams));
    }

    #[test]
    fn packets_before_the_plan_are_held_then_relayed() {
        let mut rng = SeededRng::new(3);
        let (p, _, _) = plan(&mut rng);
        let mut core = RelayCore::new();
        assert_eq!(core.handle(true, addr("198.51.100.7:20000"), &rtp(1)), None);
        let out = core.set_plan(&p).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(core.stats.a_to_b, 1);
    }
}
