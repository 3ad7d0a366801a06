//! An audio probe: sends numbered 20 ms PCMU-sized frames and checks that
//! what it receives decrypts (when SRTP is in use), carries an intact
//! frame pattern, and arrives in order. The simulated phones and media
//! processors use it; the checks are made on what actually crossed the
//! network, independently of the relay in between.

use sbc::media::dtmf::{self, Event};
use sbc::media::ice::{binding_request, read_binding_response, CheckAnswer, Credentials};
use sbc::media::quality::{JitterBuffer, ReceiverQuality};
use sbc::media::srtp::{Protector, SrtpKey, Unprotector};
use sbc::media::stun::looks_like_stun;
use sbc::sip::transport::{DatagramSocket, Network};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const HEADER: usize = 12;
const PAYLOAD: usize = 160;
/// The payload: the frame index (4 bytes), the send time in µs on the
/// probe clock (8 bytes), then a pattern derived from the index.
const PATTERN_FROM: usize = 12;

/// The probes' common clock, in µs: simulated time in a simulation (every
/// host reads the same one), the wall clock on real sockets (both ends on
/// one machine). One-way delay is read from it.
pub fn probe_clock_us() -> u64 {
    match turmoil::sim_elapsed() {
        Some(d) => d.as_micros() as u64,
        // Real sockets only: a simulation always has sim_elapsed. The probe
        // is a driver (it owns its socket), the one place a clock is read.
        #[allow(clippy::disallowed_methods)]
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64),
    }
}

/// Build an RTP packet (RFC 3550 §5.1) carrying frame `index`, sent at
/// `sent_us` on the probe clock.
pub fn rtp_frame(payload_type: u8, seq: u16, ssrc: u32, index: u32, sent_us: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(HEADER + PAYLOAD);
    p.push(0x80);
    p.push(payload_type & 0x7f);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(index.wrapping_mul(PAYLOAD as u32)).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&index.to_be_bytes());
    p.extend_from_slice(&sent_us.to_be_bytes());
    for i in PATTERN_FROM..PAYLOAD {
        p.push((index as usize).wrapping_add(i) as u8);
    }
    p
}

/// A probe frame as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub seq: u16,
    pub timestamp: u32,
    pub index: u32,
    pub sent_us: u64,
}

/// Read a probe frame, or why it is not one.
pub fn read_frame(rtp: &[u8]) -> Result<Frame, String> {
    if rtp.len() != HEADER + PAYLOAD {
        return Err(format!(
            "{} bytes, expected {}",
            rtp.len(),
            HEADER + PAYLOAD
        ));
    }
    if rtp[0] >> 6 != 2 {
        return Err("not RTP version 2".into());
    }
    let seq = u16::from_be_bytes([rtp[2], rtp[3]]);
    let timestamp = u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]);
    let payload = &rtp[HEADER..];
    let index = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    let mut sent = [0u8; 8];
    sent.copy_from_slice(&payload[4..PATTERN_FROM]);
    for (i, b) in payload.iter().enumerate().skip(PATTERN_FROM) {
        if *b != (index as usize).wrapping_add(i) as u8 {
            return Err(format!("payload byte {i} of frame {index} is corrupt"));
        }
    }
    Ok(Frame {
        seq,
        timestamp,
        index,
        sent_us: u64::from_be_bytes(sent),
    })
}

/// The jitter buffer the probes model: adaptive from 40 ms (a typical
/// starting depth of softphones and Teams clients) up to 200 ms.
pub fn probe_jitter_buffer() -> JitterBuffer {
    JitterBuffer::adaptive(Duration::from_millis(40), Duration::from_millis(200))
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaStats {
    pub sent: u32,
    pub received: u32,
    /// Frames whose index was not above the previous one.
    pub out_of_order: u32,
    pub corrupt: u32,
    pub unprotect_errors: u32,
    pub last_index: Option<u32>,
    /// The SSRC of the latest frame received. Order is judged per source
    /// (RFC 3550 §8: a new SSRC is a new source with its own numbering),
    /// so a call re-bridged to another party (a transfer) is in order when
    /// each source is.
    pub last_ssrc: Option<u32>,
    /// How many times the source changed (0 for one source throughout).
    pub source_changes: u32,
    /// Frames received from the current source.
    pub from_source: u32,
    /// Frames of the current source whose index had not arrived before
    /// (duplicates do not count; see `highest_index`).
    pub distinct: u32,
    /// The highest frame index of the current source so far, and which of
    /// the 128 below it arrived: enough to tell a duplicate from a late
    /// frame under any jitter the lab makes.
    pub highest_index: Option<u32>,
    pub arrived_below: u128,
    /// The SSRC this probe sends with, once it has a plan.
    pub own_ssrc: Option<u32>,
    /// Where the first frame came from (to check media paths).
    pub first_source: Option<SocketAddr>,
    /// The probe could not open its socket.
    pub bind_error: Option<String>,
    /// ICE (a Teams client in media bypass): Binding requests sent
    /// (retransmissions included), checks answered with an authenticated
    /// success, whether the pair was nominated, the error code of a check
    /// the far side refused, and whether the checks gave up unanswered.
    pub ice_requests: u32,
    pub ice_successes: u32,
    pub ice_nominated: bool,
    pub ice_error: Option<u16>,
    pub ice_failed: bool,
    /// Voice quality of the current source as a listener gets it (RFC 3550
    /// statistics, the jitter buffer of [`probe_jitter_buffer`], E-model).
    /// Telephone-event packets count in it as packets (their sequence
    /// numbers), not as audio.
    pub quality: Option<ReceiverQuality>,
    /// DTMF keys to press (RFC 4733), in order: the far end's controller
    /// queues them, the probe sends them in place of audio frames.
    pub dtmf_out: std::collections::VecDeque<char>,
    /// Keys pressed so far, and the keys received (one per event, told
    /// apart by the event's timestamp), in order.
    pub dtmf_sent: String,
    pub dtmf_received: String,
    dtmf_last: Option<(u32, u32)>,
}

/// What a probe needs once the call is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePlan {
    pub remote: SocketAddr,
    pub payload_type: u8,
    pub ssrc: u32,
    pub frames: u32,
    /// Our SRTP key (we protect with it); `None` for plain RTP.
    pub tx_key: Option<SrtpKey>,
    /// The far side's key (we unprotect with it).
    pub rx_key: Option<SrtpKey>,
    /// RFC 4733 telephone-events: the payload type the far side expects
    /// (we send with it) and the one we said we expect (we read with it).
    pub dtmf_tx_pt: Option<u8>,
    pub dtmf_rx_pt: Option<u8>,
    /// Check the path with ICE before any media (a Teams client in media
    /// bypass): `None` sends media at once.
    pub ice: Option<IceCheckPlan>,
}

/// What a full ICE agent in the controlling role (a Teams client: behaviour
/// §7, "full ICE and always controlling, using regular nomination") does on
/// its one candidate pair: connectivity checks (RFC 8445 §7.2.2), then,
/// when told to nominate, the same check again with USE-CANDIDATE (regular
/// nomination, §8.1.1); media flows only over a nominated pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCheckPlan {
    /// Ours (`a=ice-ufrag`/`a=ice-pwd` in our SDP) and the far side's.
    pub local: Credentials,
    pub remote: Credentials,
    pub nominate: bool,
    /// Send media on the checked pair without nominating it: early media
    /// from a fork that may not answer (behaviour §7: the SBC "latches to
    /// the first endpoint that streams" until a nomination).
    pub early_media: bool,
    /// ICE-CONTROLLING's tie-breaker (RFC 8445 §7.1.1); also seeds our
    /// transaction ids.
    pub tiebreaker: u64,
}

impl ProbePlan {
    /// The plan for one side of a call from what its SDP agreed: send to
    /// the far end, protect with our key, unprotect with theirs.
    pub fn from_agreed(
        a: &sbc::sip::sdp::offer_answer::Agreed,
        ssrc: u32,
        frames: u32,
    ) -> Option<ProbePlan> {
        let (tx_key, rx_key) = sbc::media::srtp::agreed_keys(a);
        Some(ProbePlan {
            remote: a.remote_socket()?,
            payload_type: a.codec.payload_type,
            ssrc,
            frames,
            tx_key,
            rx_key,
            dtmf_tx_pt: a.telephone_event,
            dtmf_rx_pt: a.local_telephone_event,
            ice: None,
        })
    }
}

impl ProbePlan {
    /// The plan for the side whose SDP is `local`, talking to `remote`.
    pub fn between(
        local: &sbc::sip::sdp::SessionDescription,
        remote: &sbc::sip::sdp::SessionDescription,
        ssrc: u32,
        frames: u32,
    ) -> Option<ProbePlan> {
        Self::from_agreed(
            &sbc::sip::sdp::offer_answer::agreed(local, remote)?,
            ssrc,
            frames,
        )
    }
}

/// Packets kept while the plan (and so the key) is not known yet: media can
/// overtake the signalling that carries the answer.
const EARLY_BUFFER: usize = 64;

pub struct AudioProbe;

impl AudioProbe {
    /// Bind `local` at once; wait for a plan on `plan`; then send
    /// `frames` frames 20 ms apart and check everything received. Ends when
    /// the plan's sender is dropped.
    pub async fn run<N: Network>(
        net: N,
        local: SocketAddr,
        mut plan: watch::Receiver<Option<ProbePlan>>,
        stats: Arc<Mutex<MediaStats>>,
    ) -> std::io::Result<()> {
        let sock = net.bind_udp(local).await?;
        let mut active: Option<(ProbePlan, Option<Protector>, Option<Unprotector>)> = None;
        let mut early: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
        let mut next_send = tokio::time::Instant::now();
        let mut sent = 0u32;
        let mut ice: Option<IceClient> = None;
        let mut buf = vec![0u8; 2048];
        // A key press under way: its packets still to send, its timestamp.
        let mut pressing: VecDeque<(Event, bool)> = VecDeque::new();
        let mut press_ts = 0u32;
        loop {
            let ready = ice.as_ref().is_none_or(IceClient::may_send_media);
            let sending = ready && active.as_ref().is_some_and(|(p, _, _)| sent < p.frames);
            let checking = ice.as_ref().and_then(|i| i.next);
            tokio::select! {
                biased;
                changed = plan.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let Some(p) = plan.borrow_and_update().clone() else { continue };
                    let tx = p.tx_key.as_ref().map(Protector::new).transpose().map_err(std::io::Error::other)?;
                    let rx = p.rx_key.as_ref().map(Unprotector::new).transpose().map_err(std::io::Error::other)?;
                    lock(&stats).own_ssrc = Some(p.ssrc);
                    ice = IceClient::follow(ice.take(), p.ice.clone());
                    active = Some((p, tx, rx));
                    next_send = tokio::time::Instant::now();
                    if let Some((p, _, rx)) = &mut active {
                        let dtmf_rx = p.dtmf_rx_pt;
                        for (packet, from) in early.drain(..) {
                            receive(&packet, from, rx.as_mut(), dtmf_rx, &stats);
                        }
                    }
                }
                r = sock.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    let packet = &buf[..n];
                    if let (Some(i), true) = (&mut ice, looks_like_stun(packet)) {
                        let was = i.may_send_media();
                        i.answer(packet, &stats);
                        if !was && i.may_send_media() {
                            // Media starts now, not in a burst for the time
                            // the checks took.
                            next_send = tokio::time::Instant::now();
                        }
                        continue;
                    }
                    match &mut active {
                        Some((p, _, rx)) => receive(packet, from, rx.as_mut(), p.dtmf_rx_pt, &stats),
                        None if early.len() < EARLY_BUFFER => early.push((packet.to_vec(), from)),
                        None => {}
                    }
                }
                _ = tokio::time::sleep_until(checking.unwrap_or_else(tokio::time::Instant::now)), if checking.is_some() => {
                    let (Some(i), Some((p, _, _))) = (&mut ice, &active) else { continue };
                    if let Some(request) = i.due(&stats) {
                        sock.send_to(&request, p.remote).await?;
                    }
                }
                _ = tokio::time::sleep_until(next_send), if sending => {
                    let Some((p, tx, _)) = &mut active else { continue };
                    // A queued key press takes the place of audio frames
                    // (RFC 4733 §2.5), with the timestamp the next frame
                    // would have had.
                    if pressing.is_empty() && p.dtmf_tx_pt.is_some() {
                        let key = {
                            let mut st = lock(&stats);
                            let key = st.dtmf_out.pop_front();
                            st.dtmf_sent.extend(key);
                            key
                        };
                        if let Some(event) = key.and_then(dtmf::event_of) {
                            press_ts = sent.wrapping_mul(PAYLOAD as u32);
                            pressing = dtmf::press(event)
                                .into_iter()
                                .enumerate()
                                .map(|(i, e)| (e, i == 0))
                                .collect();
                        }
                    }
                    let rtp = match (pressing.pop_front(), p.dtmf_tx_pt) {
                        (Some((event, first)), Some(pt)) => {
                            event_packet(pt, first, sent as u16, press_ts, p.ssrc, event)
                        }
                        _ => rtp_frame(p.payload_type, sent as u16, p.ssrc, sent, probe_clock_us()),
                    };
                    let out = match tx {
                        Some(t) => t.protect(&rtp).map_err(std::io::Error::other)?,
                        None => rtp,
                    };
                    sock.send_to(&out, p.remote).await?;
                    sent += 1;
                    lock(&stats).sent = sent;
                    next_send += Duration::from_millis(20);
                }
            }
        }
    }
}

/// Where a client's ICE stands on its one pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IcePhase {
    /// Checking without USE-CANDIDATE.
    Checking,
    /// A check succeeded; waiting to be told to nominate.
    Checked,
    /// Checking with USE-CANDIDATE.
    Nominating,
    /// The nominating check succeeded: media may flow.
    Nominated,
    /// Refused, or no answer: no media on this pair.
    Failed,
}

/// A STUN transaction's retransmission interval on this pair (RFC 8445
/// §14.3: RTO no less than 500 ms for connectivity checks), and how many
/// times a check is sent before the pair fails (RFC 8489 §6.2.1's Rc = 7).
const ICE_RTO: Duration = Duration::from_millis(500);
const ICE_TRIES: u32 = 7;

/// The controlling agent's checks on its one pair (see [`IceCheckPlan`]).
struct IceClient {
    plan: IceCheckPlan,
    phase: IcePhase,
    /// The transaction in flight, how often it was sent, and when next.
    transaction: [u8; 12],
    tries: u32,
    next: Option<tokio::time::Instant>,
    serial: u32,
}

impl IceClient {
    fn new(plan: IceCheckPlan) -> Self {
        let mut c = IceClient {
            plan,
            phase: IcePhase::Checking,
            transaction: [0; 12],
            tries: 0,
            next: None,
            serial: 0,
        };
        c.begin(IcePhase::Checking);
        c
    }

    /// The client after a new plan: the same checks go on when the
    /// credentials are unchanged (only `nominate` may have changed); new
    /// credentials are an ICE restart (RFC 8445 §9): checks start over.
    fn follow(old: Option<IceClient>, plan: Option<IceCheckPlan>) -> Option<IceClient> {
        let plan = plan?;
        match old {
            Some(mut c) if c.plan.local == plan.local && c.plan.remote == plan.remote => {
                let newly = plan.nominate && !c.plan.nominate;
                c.plan.nominate = plan.nominate;
                c.plan.early_media = plan.early_media;
                match c.phase {
                    IcePhase::Checked if plan.nominate => c.begin(IcePhase::Nominating),
                    // Checks that gave up while ringing start over when
                    // this fork answers.
                    IcePhase::Failed if newly => c.begin(IcePhase::Checking),
                    _ => {}
                }
                Some(c)
            }
            // A restart: transaction ids go on from the old client's, so
            // none is used twice by this agent.
            Some(old) => {
                let mut c = IceClient::new(plan);
                c.serial += old.serial;
                c.transaction[8..].copy_from_slice(&c.serial.to_be_bytes());
                Some(c)
            }
            None => Some(IceClient::new(plan)),
        }
    }

    /// Whether media may flow: over a nominated pair, or a checked one
    /// for early media.
    fn may_send_media(&self) -> bool {
        self.phase == IcePhase::Nominated
            || (self.phase == IcePhase::Checked && self.plan.early_media)
    }

    /// A new transaction for `phase`, sent at once.
    fn begin(&mut self, phase: IcePhase) {
        self.phase = phase;
        self.serial += 1;
        self.transaction[..8].copy_from_slice(&self.plan.tiebreaker.to_be_bytes());
        self.transaction[8..].copy_from_slice(&self.serial.to_be_bytes());
        self.tries = 0;
        self.next = Some(tokio::time::Instant::now());
    }

    /// The request to (re)send now, if the transaction is still unanswered.
    fn due(&mut self, stats: &Arc<Mutex<MediaStats>>) -> Option<Vec<u8>> {
        if self.tries >= ICE_TRIES {
            self.phase = IcePhase::Failed;
            self.next = None;
            lock(stats).ice_failed = true;
            return None;
        }
        self.tries += 1;
        self.next = Some(tokio::time::Instant::now() + ICE_RTO);
        lock(stats).ice_requests += 1;
        // RFC 8445 §7.1.1: PRIORITY is what a peer-reflexive candidate of
        // ours would get (type preference 110, §5.1.2.2), component 1.
        let priority = (110 << 24) | (65535 << 8) | 255;
        Some(binding_request(
            self.transaction,
            &self.plan.local,
            &self.plan.remote,
            priority,
            self.plan.tiebreaker,
            self.phase == IcePhase::Nominating,
        ))
    }

    /// A STUN message arrived: the answer to our check, or something to ignore.
    fn answer(&mut self, packet: &[u8], stats: &Arc<Mutex<MediaStats>>) {
        if !matches!(self.phase, IcePhase::Checking | IcePhase::Nominating) {
            return;
        }
        let Ok(answer) = read_binding_response(packet, self.transaction, &self.plan.remote) else {
            return;
        };
        self.next = None;
        let mut s = lock(stats);
        match answer {
            CheckAnswer::Success { .. } => {
                s.ice_successes += 1;
                drop(s);
                match (self.phase, self.plan.nominate) {
                    (IcePhase::Checking, true) => self.begin(IcePhase::Nominating),
                    (IcePhase::Checking, false) => self.phase = IcePhase::Checked,
                    _ => {
                        self.phase = IcePhase::Nominated;
                        lock(stats).ice_nominated = true;
                    }
                }
            }
            CheckAnswer::Error { code } => {
                s.ice_error = Some(code);
                self.phase = IcePhase::Failed;
            }
        }
    }
}

/// An RTP packet carrying one telephone-event (RFC 4733 §2.3), the marker
/// bit on the first packet of an event (§2.5.1.1).
fn event_packet(pt: u8, first: bool, seq: u16, ts: u32, ssrc: u32, event: Event) -> Vec<u8> {
    let mut p = Vec::with_capacity(HEADER + 4);
    p.push(0x80);
    p.push((u8::from(first) << 7) | (pt & 0x7f));
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&event.to_bytes());
    p
}

/// A telephone-event packet arrived: one key per event, however many of
/// its packets (updates, the repeated end) arrive. `true` when it was one.
fn receive_event(s: &mut MediaStats, rtp: &[u8], dtmf_rx: Option<u8>) -> bool {
    let (Some(pt), Some(&second), Some(payload)) = (dtmf_rx, rtp.get(1), rtp.get(HEADER..)) else {
        return false;
    };
    if second & 0x7f != pt || rtp.len() < HEADER + 4 {
        return false;
    }
    let ts = u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]);
    let ssrc = u32::from_be_bytes([rtp[8], rtp[9], rtp[10], rtp[11]]);
    let seq = u16::from_be_bytes([rtp[2], rtp[3]]);
    if let Ok(e) = Event::parse(payload) {
        if s.dtmf_last != Some((ssrc, ts)) {
            s.dtmf_last = Some((ssrc, ts));
            s.dtmf_received.push(dtmf::digit_of(e.event).unwrap_or('?'));
        }
    }
    let arrival = tokio::time::Instant::now().into_std();
    s.quality
        .get_or_insert_with(|| ReceiverQuality::new(8000, probe_jitter_buffer()))
        .on_packet(seq, ts, arrival, None);
    true
}

fn receive(
    packet: &[u8],
    from: SocketAddr,
    rx: Option<&mut Unprotector>,
    dtmf_rx: Option<u8>,
    stats: &Arc<Mutex<MediaStats>>,
) {
    let rtp = match rx {
        Some(u) => match u.unprotect(packet) {
            Ok(p) => p,
            Err(_) => {
                lock(stats).unprotect_errors += 1;
                return;
            }
        },
        None => packet.to_vec(),
    };
    let mut s = lock(stats);
    s.first_source.get_or_insert(from);
    if receive_event(&mut s, &rtp, dtmf_rx) {
        return;
    }
    match read_frame(&rtp) {
        Ok(frame) => {
            let index = frame.index;
            s.received += 1;
            let ssrc = u32::from_be_bytes([rtp[8], rtp[9], rtp[10], rtp[11]]);
            if s.last_ssrc.is_some_and(|x| x != ssrc) {
                s.source_changes += 1;
                s.last_index = None;
                s.from_source = 0;
                s.highest_index = None;
                s.arrived_below = 0;
                s.quality = None;
            }
            // Arrival on the runtime's clock (simulated in a simulation);
            // the send instant from the delay on the probes' common clock.
            let arrival = tokio::time::Instant::now().into_std();
            let delay = probe_clock_us().saturating_sub(frame.sent_us);
            let sent = arrival.checked_sub(Duration::from_micros(delay));
            s.quality
                .get_or_insert_with(|| ReceiverQuality::new(8000, probe_jitter_buffer()))
                .on_packet(frame.seq, frame.timestamp, arrival, sent);
            if first_arrival(&mut s, index) {
                s.distinct += 1;
            }
            s.last_ssrc = Some(ssrc);
            s.from_source += 1;
            if s.last_index.is_some_and(|l| index <= l) {
                s.out_of_order += 1;
            }
            s.last_index = Some(index);
        }
        Err(_) => s.corrupt += 1,
    }
}

/// Whether frame `index` arrives for the first time, recording it.
fn first_arrival(s: &mut MediaStats, index: u32) -> bool {
    let Some(high) = s.highest_index else {
        s.highest_index = Some(index);
        s.arrived_below = 0;
        return true;
    };
    if index > high {
        let shift = index - high;
        s.arrived_below = if shift >= 128 {
            0
        } else {
            // The old highest becomes the bit `shift - 1` below the new one.
            (s.arrived_below << shift) | (1u128 << (shift - 1))
        };
        s.highest_index = Some(index);
        return true;
    }
    if index == high {
        return false;
    }
    let back = high - index - 1;
    if back >= 128 {
        return true; // too late to tell: counted as new
    }
    let bit = 1u128 << back;
    let new = s.arrived_below & bit == 0;
    s.arrived_below |= bit;
    new
}

/// A request to a media host (a PSTN phone, a Teams media processor) to
/// open a probe on `port`, driven by its controller through `plan`.
#[derive(Debug)]
pub struct ProbeOpen {
    pub port: u16,
    pub plan: watch::Receiver<Option<ProbePlan>>,
    pub stats: Arc<Mutex<MediaStats>>,
}

/// A media host's handle: where to send it probes, and how many run.
#[derive(Debug, Clone)]
pub struct MediaHostHandle {
    pub open: mpsc::UnboundedSender<ProbeOpen>,
    pub live: Arc<AtomicUsize>,
}

/// A new media host's handle and the receiver its [`media_host`] serves.
pub fn media_host_channel() -> (MediaHostHandle, mpsc::UnboundedReceiver<ProbeOpen>) {
    let (open, rx) = mpsc::unbounded_channel();
    (
        MediaHostHandle {
            open,
            live: Arc::default(),
        },
        rx,
    )
}

/// Run a media host: open every probe its controller asks for on `ip`
/// (the host's own address: a probe never binds the wildcard), count the
/// probes running in `live`. A probe that cannot bind records it in its
/// stats (`bind_error`).
pub async fn media_host<N: Network>(
    net: N,
    ip: IpAddr,
    mut commands: mpsc::UnboundedReceiver<ProbeOpen>,
    live: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    while let Some(open) = commands.recv().await {
        let local = SocketAddr::new(ip, open.port);
        let (net, live) = (net.clone(), live.clone());
        live.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let stats = open.stats.clone();
            if let Err(e) = AudioProbe::run(net, local, open.plan, open.stats).await {
                lock(&stats).bind_error = Some(e.to_string());
            }
            live.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

/// What a far end's role asks of its media hosts.
#[derive(Debug)]
pub enum ProbeCommand {
    /// Open a probe on `host` (a media host name the driver knows), `port`.
    Open {
        id: u64,
        host: String,
        port: u16,
        stats: Arc<Mutex<MediaStats>>,
    },
    /// Boxed: a plan with ICE credentials is far larger than the other
    /// commands.
    Plan { id: u64, plan: Box<ProbePlan> },
    /// Stop the probe: its socket closes.
    Close { id: u64 },
}

/// Hands a role's probe commands to the media hosts it controls.
pub struct ProbeDriver {
    hosts: BTreeMap<String, MediaHostHandle>,
    plans: BTreeMap<u64, watch::Sender<Option<ProbePlan>>>,
    events: mpsc::UnboundedReceiver<()>,
    _events_tx: mpsc::UnboundedSender<()>,
}

impl ProbeDriver {
    pub fn new(hosts: BTreeMap<String, MediaHostHandle>) -> Self {
        let (_events_tx, events) = mpsc::unbounded_channel();
        ProbeDriver {
            hosts,
            plans: BTreeMap::new(),
            events,
            _events_tx,
        }
    }
}

impl<N: Network> sbc::driver::MediaDriver<N> for ProbeDriver {
    type Command = ProbeCommand;
    type Event = ();

    async fn execute(&mut self, _net: &N, command: ProbeCommand) {
        match command {
            ProbeCommand::Open {
                id,
                host,
                port,
                stats,
            } => {
                let Some(h) = self.hosts.get(&host) else {
                    lock(&stats).bind_error = Some(format!("no media host {host}"));
                    return;
                };
                let (tx, rx) = watch::channel(None);
                let _ = h.open.send(ProbeOpen {
                    port,
                    plan: rx,
                    stats,
                });
                self.plans.insert(id, tx);
            }
            ProbeCommand::Plan { id, plan } => {
                if let Some(tx) = self.plans.get(&id) {
                    let _ = tx.send(Some(*plan));
                }
            }
            ProbeCommand::Close { id } => {
                self.plans.remove(&id);
            }
        }
    }

    fn events(&mut self) -> &mut mpsc::UnboundedReceiver<()> {
        &mut self.events
    }
}

fn lock(stats: &Arc<Mutex<MediaStats>>) -> std::sync::MutexGuard<'_, MediaStats> {
    stats.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_and_corruption_is_seen() {
        let f = rtp_frame(0, 9, 77, 42, 1_234_567);
        assert_eq!(
            read_frame(&f),
            Ok(Frame {
                seq: 9,
                timestamp: 42 * 160,
                index: 42,
                sent_us: 1_234_567
            })
        );
        let mut bad = f.clone();
        bad[100] ^= 0xff;
        assert!(read_frame(&bad).is_err());
        assert!(read_frame(&f[..50]).is_err());
    }
}

#[cfg(test)]
mod distinct_tests {
    use super::*;

    #[test]
    fn duplicates_are_told_from_late_frames() {
        let mut s = MediaStats::default();
        let got: Vec<bool> = [1, 2, 2, 4, 3, 3, 1, 200, 199, 200, 5]
            .iter()
            .map(|i| first_arrival(&mut s, *i))
            .collect();
        assert_eq!(
            got,
            [true, true, false, true, true, false, false, true, true, false, true]
        );
        assert_eq!(s.highest_index, Some(200));
    }
}
