//! Voice-quality figures at the receiving end of one RTP stream: RFC 3550
//! receiver statistics, a model of a jitter buffer, the burst ratio of the
//! loss the listener hears, and the ITU-T G.107 E-model (R factor, MOS).
//!
//! Sans-IO and deterministic: no sockets, no clock, no randomness. The
//! caller hands over every packet (after SRTP unprotect) with its sequence
//! number, RTP timestamp, arrival instant and, when it knows it, the instant
//! it was sent (the simulation knows both; a real receiver knows only the
//! arrival). Everything else is derived: the frame duration from the
//! timestamps, the loss from the sequence numbers, the delay from the
//! instants.
//!
//! What it models:
//! - RFC 3550 §6.4.1 / Appendix A.1, A.3, A.8 receiver statistics: extended
//!   sequence numbers, expected, received, lost, interarrival jitter; plus
//!   duplicates and reordering, told apart with a window of the last
//!   [`SEQ_WINDOW`] sequence numbers.
//! - A jitter buffer ([`JitterBuffer`]): the instant each packet would be
//!   played, and whether it came too late for it. It is a model of a buffer,
//!   not an audio pipeline: nothing is decoded, no samples are inserted or
//!   dropped, no clock skew between sender and receiver is compensated.
//! - The loss pattern the listener hears (never arrived, or arrived too
//!   late) and its burst ratio from a 2-state Markov (Gilbert) fit, as
//!   ITU-T G.107 §7.5 defines BurstR.
//! - The ITU-T G.107 (06/2015) E-model for a narrowband (G.711) connection
//!   ([`EModelInput`]), and MOS from R per G.107 Annex B ([`mos_from_r`]).
//!
//! What it does not model: silence suppression and talk spurts (G.711 test
//! streams have none), packet-loss concealment itself (only its effect, via
//! Bpl), codecs other than through Ie/Bpl, RTCP, SSRC changes, probation of a
//! new source (RFC 3550 A.1 `probation`), clock drift, and the delay of
//! packetisation and decoding (pass the capture instant as `sent` if it
//! should count).

use std::fmt;
use std::time::{Duration, Instant};

/// Packet-loss robustness factor of G.711 with packet-loss concealment
/// (G.711 Appendix I), random loss: ITU-T G.113 Appendix I.
pub const BPL_G711_PLC: f64 = 25.1;

/// Packet-loss robustness factor of G.711 without packet-loss concealment,
/// random loss: ITU-T G.113 Appendix I. The G.107 default for `Bpl`.
pub const BPL_G711_NO_PLC: f64 = 4.3;

/// How many sequence numbers behind the highest one are remembered to tell
/// a duplicate from a late packet (RFC 3550 A.1 uses the same order of
/// magnitude for its `MAX_MISORDER` of 100; 1024 frames are 20 s of 20 ms
/// audio, longer than any jitter buffer).
pub const SEQ_WINDOW: u64 = 1024;

/// Default factor of the adaptive buffer: delay = k × jitter + one frame.
pub const ADAPTIVE_K: f64 = 4.0;

/// Default re-choice interval of the adaptive buffer, in packets (50 packets
/// of 20 ms = 1 s). G.711 test streams have no silence suppression, hence no
/// talk-spurt boundaries, so the delay is re-chosen every so many packets.
pub const ADAPTIVE_INTERVAL: u32 = 50;

/// Default Bpl of a [`ReceiverQuality`]: [`BPL_G711_PLC`]. Real phones and
/// Teams clients conceal lost G.711 frames, so scoring them as if silence
/// were played for every lost frame ([`BPL_G711_NO_PLC`]) would overstate
/// the impairment.
pub const RECEIVER_DEFAULT_BPL: f64 = BPL_G711_PLC;

// The window is a bitmap of u64 words.
const WINDOW: i64 = SEQ_WINDOW as i64;
const WINDOW_WORDS: usize = (SEQ_WINDOW / 64) as usize;

/// A packet whose arrival is within this of its playout instant is on time
/// (absorbs rounding of f64 seconds; a simulated instant is exact).
const ON_TIME_TOLERANCE_S: f64 = 1e-6;

/// The clock rate assumed when the caller passes 0 (G.711, RFC 3551 §4.5.14).
const FALLBACK_CLOCK_RATE: u32 = 8000;

/// The jitter buffer model.
///
/// Both kinds anchor the playout on the first packet: the playout instant of
/// a packet is the arrival of the first packet + (its RTP timestamp − the
/// first packet's timestamp) / clock rate + the buffer delay. A packet
/// arriving after its playout instant is a late discard: the listener does
/// not hear it, just as if it had been lost. A duplicate is never played
/// twice. Packets arriving early are simply held (no overflow is modelled).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JitterBuffer {
    /// A constant buffer delay.
    Fixed {
        /// The buffer delay.
        depth: Duration,
    },
    /// A buffer delay re-chosen every `interval` packets (not duplicates) as
    /// clamp(k × J + one frame, min, max), J being the RFC 3550 interarrival
    /// jitter estimate at that moment and the frame the timestamp step of the
    /// latest two consecutive packets. It starts at `min`. Changing the delay
    /// shifts the playout base, hence every later playout instant, by the
    /// same amount (a real buffer would do so at the start of a talk spurt
    /// by stretching or cutting the silence). Each packet is judged once, on
    /// arrival, against the delay in use then; packets already held are not
    /// judged again when the delay shrinks.
    Adaptive {
        /// The smallest delay.
        min: Duration,
        /// The largest delay.
        max: Duration,
        /// The factor applied to the jitter estimate; [`ADAPTIVE_K`] by
        /// default. A negative or non-finite value means the default.
        k: f64,
        /// Packets between re-choices; [`ADAPTIVE_INTERVAL`] by default
        /// (0 is taken as 1).
        interval: u32,
    },
}

impl JitterBuffer {
    /// A fixed buffer of `depth`.
    pub fn fixed(depth: Duration) -> Self {
        JitterBuffer::Fixed { depth }
    }

    /// An adaptive buffer between `min` and `max` (swapped if given in the
    /// wrong order) with k = [`ADAPTIVE_K`] and a re-choice every
    /// [`ADAPTIVE_INTERVAL`] packets.
    pub fn adaptive(min: Duration, max: Duration) -> Self {
        JitterBuffer::Adaptive {
            min,
            max,
            k: ADAPTIVE_K,
            interval: ADAPTIVE_INTERVAL,
        }
    }

    /// The delay the buffer starts with, in seconds.
    fn initial_delay_s(&self) -> f64 {
        match *self {
            JitterBuffer::Fixed { depth } => depth.as_secs_f64(),
            JitterBuffer::Adaptive { min, max, .. } => min.min(max).as_secs_f64(),
        }
    }
}

/// Quality figures of one received stream, from [`ReceiverQuality::report`].
///
/// Percentages are of `expected`, 0 when nothing was expected.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityReport {
    /// Highest extended sequence number − lowest + 1 (RFC 3550 A.3).
    pub expected: u64,
    /// Distinct packets received within the sequence window (duplicates and
    /// stale packets excluded).
    pub received: u64,
    /// expected − received, never negative (RFC 3550 A.3).
    pub lost: u64,
    /// Packets whose sequence number had already been received.
    pub duplicates: u64,
    /// Packets below the highest sequence number seen so far, not duplicates.
    pub reordered: u64,
    /// Received packets that arrived after their playout instant.
    pub late_discards: u64,
    /// Packets [`SEQ_WINDOW`] or more behind the highest sequence number:
    /// too old to check for duplication, not counted as received, not played.
    pub stale: u64,
    /// lost / expected, in %.
    pub loss_pct: f64,
    /// (lost + late discards) / expected, in %: the loss the listener hears.
    pub effective_loss_pct: f64,
    /// RFC 3550 §6.4.1 interarrival jitter, in timestamp units.
    pub jitter_ts: f64,
    /// The same jitter in milliseconds.
    pub jitter_ms: f64,
    /// Mean one-way delay (sent → arrival), when send instants were given.
    pub delay_mean_ms: Option<f64>,
    /// Smallest one-way delay, when send instants were given.
    pub delay_min_ms: Option<f64>,
    /// Largest one-way delay, when send instants were given.
    pub delay_max_ms: Option<f64>,
    /// The jitter buffer delay in use at the end.
    pub buffer_ms: f64,
    /// G.107 BurstR of the loss the listener hears (1 = random).
    pub burst_ratio: f64,
    /// G.107 R factor; 0 when no packet arrived.
    pub r_factor: f64,
    /// MOS (conversational quality estimate) from R, G.107 Annex B; 1 when
    /// no packet arrived.
    pub mos: f64,
}

impl fmt::Display for QualityReport {
    /// One line with fixed decimals, e.g. `loss 1.0 % (late 0.2 %), jitter
    /// 3.1 ms, delay 40 ms, buffer 60 ms, burst 1.00, R 88.1, MOS 4.32`.
    /// `loss` is the effective loss (what the listener misses), `late` the
    /// part of it that arrived too late; `delay` is the mean one-way delay
    /// (`n/a` without send instants).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let late_pct = percent(self.late_discards, self.expected);
        write!(
            f,
            "loss {:.1} % (late {:.1} %), jitter {:.1} ms, ",
            self.effective_loss_pct, late_pct, self.jitter_ms
        )?;
        match self.delay_mean_ms {
            Some(d) => write!(f, "delay {d:.0} ms, ")?,
            None => write!(f, "delay n/a, ")?,
        }
        write!(
            f,
            "buffer {:.0} ms, burst {:.2}, R {:.1}, MOS {:.2}",
            self.buffer_ms, self.burst_ratio, self.r_factor, self.mos
        )
    }
}

/// A bitmap over the last [`SEQ_WINDOW`] extended sequence numbers, indexed
/// by the sequence number modulo the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeqBits([u64; WINDOW_WORDS]);

impl SeqBits {
    fn slot(ext: i64) -> (usize, u64) {
        let s = ext.rem_euclid(WINDOW) as usize;
        (s / 64, 1u64 << (s % 64))
    }

    fn get(&self, ext: i64) -> bool {
        let (w, m) = Self::slot(ext);
        self.0.get(w).is_some_and(|b| b & m != 0)
    }

    fn set(&mut self, ext: i64, on: bool) {
        let (w, m) = Self::slot(ext);
        if let Some(b) = self.0.get_mut(w) {
            if on {
                *b |= m;
            } else {
                *b &= !m;
            }
        }
    }
}

/// Transition counts of the heard/missed pattern, in sequence order, for the
/// 2-state Markov (Gilbert) fit of G.107 §7.5 / G.113.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct LossRuns {
    /// Whether the previous sequence number was lost for the listener.
    prev_lost: Option<bool>,
    /// received → received, received → lost, lost → received, lost → lost.
    rr: u64,
    rl: u64,
    lr: u64,
    ll: u64,
}

impl LossRuns {
    fn push(&mut self, lost: bool) {
        match (self.prev_lost, lost) {
            (Some(false), false) => self.rr += 1,
            (Some(false), true) => self.rl += 1,
            (Some(true), false) => self.lr += 1,
            (Some(true), true) => self.ll += 1,
            (None, _) => {}
        }
        self.prev_lost = Some(lost);
    }

    /// `n` consecutive sequence numbers that never arrived.
    fn push_lost_run(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.push(true);
        self.ll = self.ll.saturating_add(n - 1);
    }

    /// BurstR = 1 / (p + q) with p = P(lost | previous received) and
    /// q = P(received | previous lost), both estimated as transition counts
    /// over the counts of their origin state (G.107 §7.5: BurstR is the
    /// average observed burst length over the average burst length of
    /// random loss at the same rate, which for a 2-state Markov chain is
    /// 1/(p+q)). 1 when there is no loss or when either state has no
    /// outgoing transition (e.g. the only loss is at the very end). May fall
    /// below 1 when losses are spread more evenly than random loss would be.
    fn burst_ratio(&self) -> f64 {
        let from_received = self.rr + self.rl;
        let from_lost = self.lr + self.ll;
        if from_received == 0 || from_lost == 0 {
            return 1.0;
        }
        let p = self.rl as f64 / from_received as f64;
        let q = self.lr as f64 / from_lost as f64;
        if p + q > 0.0 {
            1.0 / (p + q)
        } else {
            1.0
        }
    }
}

/// Receiver-side quality of one RTP stream (one SSRC): feed it every packet
/// with [`ReceiverQuality::on_packet`], read it with
/// [`ReceiverQuality::report`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverQuality {
    clock_rate: u32,
    buffer: JitterBuffer,
    bpl: f64,
    /// Arrival of the first packet: the origin of every time in seconds.
    origin: Option<Instant>,
    /// Lowest and highest extended sequence numbers (RFC 3550 A.1
    /// `base_seq` and `cycles + max_seq`, as one signed number).
    base_ext: i64,
    max_ext: i64,
    /// The RTP timestamp of the latest non-duplicate packet, and its
    /// extension (RTP timestamps wrap too).
    last_ts: u32,
    last_ts_ext: i64,
    /// Extended timestamp of the first packet (the playout anchor) and of
    /// the packet with the highest sequence number.
    base_ts_ext: i64,
    max_ts_ext: i64,
    /// Timestamp step of the latest two consecutive packets: one frame.
    frame_ts: f64,
    /// Received (for duplicates) and played on time, per sequence number.
    seen: SeqBits,
    played: SeqBits,
    /// The heard/missed pattern of the sequence numbers that left the window.
    runs: LossRuns,
    received: u64,
    duplicates: u64,
    reordered: u64,
    late: u64,
    stale: u64,
    /// RFC 3550 A.8 state: previous relative transit time and J, both in
    /// timestamp units.
    prev_transit: Option<f64>,
    jitter: f64,
    /// One-way delay statistics over packets with a send instant.
    delay_count: u64,
    delay_sum_s: f64,
    delay_min: Option<Duration>,
    delay_max: Option<Duration>,
    /// Buffer delay in use, and packets since the adaptive buffer last chose.
    playout_delay_s: f64,
    since_adapt: u32,
}

/// How an arriving packet relates to what was seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// Above the highest sequence number so far (or the first packet).
    Newest,
    /// Below the highest, within the window, not seen before.
    Reordered,
    /// Seen before.
    Duplicate,
    /// Too far below the highest to tell.
    Stale,
}

impl ReceiverQuality {
    /// A receiver of a stream with RTP clock rate `clock_rate` (8000 for
    /// G.711; 0 is taken as 8000) behind the jitter buffer `buffer`, scoring
    /// loss with Bpl = [`RECEIVER_DEFAULT_BPL`] (PLC assumed).
    pub fn new(clock_rate: u32, buffer: JitterBuffer) -> Self {
        let clock_rate = if clock_rate == 0 {
            FALLBACK_CLOCK_RATE
        } else {
            clock_rate
        };
        ReceiverQuality {
            clock_rate,
            buffer,
            bpl: RECEIVER_DEFAULT_BPL,
            origin: None,
            base_ext: 0,
            max_ext: 0,
            last_ts: 0,
            last_ts_ext: 0,
            base_ts_ext: 0,
            max_ts_ext: 0,
            frame_ts: 0.0,
            seen: SeqBits([0; WINDOW_WORDS]),
            played: SeqBits([0; WINDOW_WORDS]),
            runs: LossRuns::default(),
            received: 0,
            duplicates: 0,
            reordered: 0,
            late: 0,
            stale: 0,
            prev_transit: None,
            jitter: 0.0,
            delay_count: 0,
            delay_sum_s: 0.0,
            delay_min: None,
            delay_max: None,
            playout_delay_s: buffer.initial_delay_s(),
            since_adapt: 0,
        }
    }

    /// The same receiver scoring loss with packet-loss robustness `bpl`
    /// (G.107 Bpl; [`BPL_G711_NO_PLC`] for a receiver that plays silence).
    pub fn with_bpl(mut self, bpl: f64) -> Self {
        self.bpl = bpl;
        self
    }

    /// One RTP packet arrived (after SRTP unprotect) at `arrival`; `sent` is
    /// the instant it was sent, when known, for the one-way delay.
    pub fn on_packet(
        &mut self,
        seq: u16,
        rtp_timestamp: u32,
        arrival: Instant,
        sent: Option<Instant>,
    ) {
        let first = self.origin.is_none();
        let origin = *self.origin.get_or_insert(arrival);
        let (ext, kind) = if first {
            let ext = i64::from(seq);
            self.base_ext = ext;
            self.max_ext = ext;
            self.last_ts = rtp_timestamp;
            self.last_ts_ext = i64::from(rtp_timestamp);
            self.base_ts_ext = self.last_ts_ext;
            self.max_ts_ext = self.last_ts_ext;
            (ext, Arrival::Newest)
        } else {
            let ext = self.extend_seq(seq);
            (ext, self.classify(ext))
        };
        if kind == Arrival::Duplicate {
            // Not played twice, and not part of the jitter (RFC 3550 A.8
            // would include it; a copy says nothing about the network's
            // variation of transit of distinct packets).
            self.duplicates += 1;
            return;
        }
        let ts_ext = self.extend_ts(rtp_timestamp);
        let arrival_s = signed_secs(origin, arrival);
        self.update_jitter(arrival_s, ts_ext);
        self.update_delay(arrival, sent);

        // Playout instant relative to the first arrival (see JitterBuffer).
        let media_s = (ts_ext - self.base_ts_ext) as f64 / f64::from(self.clock_rate);
        let on_time = arrival_s <= media_s + self.playout_delay_s + ON_TIME_TOLERANCE_S;

        match kind {
            Arrival::Newest => {
                if ext == self.max_ext + 1 && ts_ext > self.max_ts_ext {
                    self.frame_ts = (ts_ext - self.max_ts_ext) as f64;
                }
                if ext > self.max_ext {
                    self.advance(ext);
                }
                self.max_ts_ext = ts_ext;
                self.mark(ext, on_time);
            }
            Arrival::Reordered => {
                self.reordered += 1;
                // A packet older than the first one: the stream began
                // earlier. Nothing below the old base can have left the
                // window yet (the old base is inside it), so the heard
                // pattern stays consistent.
                self.base_ext = self.base_ext.min(ext);
                self.mark(ext, on_time);
            }
            Arrival::Stale => self.stale += 1,
            Arrival::Duplicate => {}
        }
        self.adapt();
    }

    /// The figures so far, with R and MOS from the E-model (G.107) for what
    /// was measured: Ppl = effective loss in %, BurstR = measured burst
    /// ratio, Ta = mean one-way delay (0 without send instants) + buffer
    /// delay, T = Ta and Tr = 2·Ta (see [`EModelInput::with_delay`]), Ie = 0
    /// (G.711), Bpl of this receiver, other inputs at their G.107 defaults.
    /// With no packet at all R is 0 and MOS 1: a call without audio must not
    /// look perfect in a call record.
    pub fn report(&self) -> QualityReport {
        let started = self.origin.is_some();
        let expected = if started {
            u64::try_from(self.max_ext - self.base_ext + 1).unwrap_or(0)
        } else {
            0
        };
        let lost = expected.saturating_sub(self.received);
        let missed = lost.saturating_add(self.late).min(expected);
        let clock = f64::from(self.clock_rate);

        // The heard/missed pattern: what left the window, then the window.
        let mut runs = self.runs;
        if started {
            for ext in self.window_low()..=self.max_ext {
                runs.push(!self.played.get(ext));
            }
        }
        let burst_ratio = runs.burst_ratio();

        let delay_mean_ms = if self.delay_count > 0 {
            Some(self.delay_sum_s / self.delay_count as f64 * 1000.0)
        } else {
            None
        };
        let buffer_ms = self.playout_delay_s * 1000.0;
        let effective_loss_pct = percent(missed, expected);

        let (r_factor, mos) = if self.received == 0 {
            (0.0, 1.0)
        } else {
            let r = EModelInput {
                ppl: effective_loss_pct,
                burst_r: burst_ratio,
                bpl: self.bpl,
                ie: 0.0,
                ..EModelInput::default()
            }
            .with_delay(delay_mean_ms.unwrap_or(0.0) + buffer_ms)
            .r_factor();
            (r, mos_from_r(r))
        };

        QualityReport {
            expected,
            received: self.received,
            lost,
            duplicates: self.duplicates,
            reordered: self.reordered,
            late_discards: self.late,
            stale: self.stale,
            loss_pct: percent(lost, expected),
            effective_loss_pct,
            jitter_ts: self.jitter,
            jitter_ms: self.jitter / clock * 1000.0,
            delay_mean_ms,
            delay_min_ms: self.delay_min.map(|d| d.as_secs_f64() * 1000.0),
            delay_max_ms: self.delay_max.map(|d| d.as_secs_f64() * 1000.0),
            buffer_ms,
            burst_ratio,
            r_factor,
            mos,
        }
    }

    /// RFC 3550 A.1: the extended sequence number closest to the highest so
    /// far (a step of less than half the space forwards, else backwards), so
    /// that 65535 → 0 is one step forward.
    fn extend_seq(&self, seq: u16) -> i64 {
        let max16 = self.max_ext.rem_euclid(1 << 16) as u16;
        let delta = seq.wrapping_sub(max16);
        if delta < 0x8000 {
            self.max_ext.saturating_add(i64::from(delta))
        } else {
            self.max_ext.saturating_sub((1 << 16) - i64::from(delta))
        }
    }

    /// The RTP timestamp extended past its 32-bit wrap, relative to the
    /// previous packet's (a step of less than 2^31 either way).
    fn extend_ts(&mut self, ts: u32) -> i64 {
        let delta = i64::from(ts.wrapping_sub(self.last_ts) as i32);
        let ext = self.last_ts_ext.saturating_add(delta);
        self.last_ts = ts;
        self.last_ts_ext = ext;
        ext
    }

    fn classify(&self, ext: i64) -> Arrival {
        if ext > self.max_ext {
            Arrival::Newest
        } else if self.max_ext - ext >= WINDOW {
            Arrival::Stale
        } else if self.seen.get(ext) {
            Arrival::Duplicate
        } else {
            Arrival::Reordered
        }
    }

    /// The lowest sequence number still in the window (not yet in `runs`).
    fn window_low(&self) -> i64 {
        self.base_ext.max(self.max_ext - WINDOW + 1)
    }

    /// The highest sequence number moves up to `new_max`: the sequence
    /// numbers leaving the window join the heard/missed pattern, in order
    /// (those never received count as missed), and the slots they free are
    /// cleared for the sequence numbers entering it.
    fn advance(&mut self, new_max: i64) {
        let old_max = self.max_ext;
        let old_low = self.window_low();
        let new_low = self.base_ext.max(new_max - WINDOW + 1);
        // Leaving, from the old window.
        for ext in old_low..new_low.min(old_max + 1) {
            self.runs.push(!self.played.get(ext));
        }
        // Leaving without ever having been in the window: a gap larger than
        // the window, never received.
        if new_low > old_max + 1 {
            self.runs
                .push_lost_run(u64::try_from(new_low - (old_max + 1)).unwrap_or(0));
        }
        for ext in (old_max + 1).max(new_max - WINDOW + 1)..=new_max {
            self.seen.set(ext, false);
            self.played.set(ext, false);
        }
        self.max_ext = new_max;
    }

    fn mark(&mut self, ext: i64, on_time: bool) {
        self.received += 1;
        self.seen.set(ext, true);
        self.played.set(ext, on_time);
        if !on_time {
            self.late += 1;
        }
    }

    /// RFC 3550 §6.4.1 / A.8: D(i-1,i) = (Rj − Ri) − (Sj − Si) in timestamp
    /// units, i.e. the change of relative transit time, and
    /// J += (|D| − J) / 16, over packets in arrival order.
    fn update_jitter(&mut self, arrival_s: f64, ts_ext: i64) {
        let transit = arrival_s * f64::from(self.clock_rate) - ts_ext as f64;
        if let Some(prev) = self.prev_transit {
            let d = (transit - prev).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.prev_transit = Some(transit);
    }

    fn update_delay(&mut self, arrival: Instant, sent: Option<Instant>) {
        let Some(sent) = sent else { return };
        // A send instant after the arrival is a caller's clock error: 0.
        let d = arrival.saturating_duration_since(sent);
        self.delay_count += 1;
        self.delay_sum_s += d.as_secs_f64();
        self.delay_min = Some(self.delay_min.map_or(d, |m| m.min(d)));
        self.delay_max = Some(self.delay_max.map_or(d, |m| m.max(d)));
    }

    /// The adaptive buffer's re-choice (see [`JitterBuffer::Adaptive`]).
    fn adapt(&mut self) {
        let JitterBuffer::Adaptive {
            min,
            max,
            k,
            interval,
        } = self.buffer
        else {
            return;
        };
        self.since_adapt += 1;
        if self.since_adapt < interval.max(1) {
            return;
        }
        self.since_adapt = 0;
        let lo = min.min(max).as_secs_f64();
        let hi = min.max(max).as_secs_f64();
        let k = if k.is_finite() && k >= 0.0 {
            k
        } else {
            ADAPTIVE_K
        };
        let clock = f64::from(self.clock_rate);
        let target = (k * self.jitter + self.frame_ts) / clock;
        // max/min rather than clamp: no panic on NaN.
        self.playout_delay_s = target.max(lo).min(hi);
    }
}

/// Seconds from `origin` to `t`, negative when `t` is earlier.
fn signed_secs(origin: Instant, t: Instant) -> f64 {
    match t.checked_duration_since(origin) {
        Some(d) => d.as_secs_f64(),
        None => -origin.saturating_duration_since(t).as_secs_f64(),
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64 * 100.0
    }
}

/// Inputs of the ITU-T G.107 (06/2015) E-model, narrowband, with the
/// defaults of G.107 Table 3 ([`EModelInput::default`]). Loudness ratings
/// and levels in dB, dBm0p or dB(A), delays in ms, `ppl` in %.
///
/// With every default, R = 93.2 (G.107 §7.7); MOS 4.41.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EModelInput {
    /// Send loudness rating SLR, default 8 dB.
    pub slr: f64,
    /// Receive loudness rating RLR, default 2 dB.
    pub rlr: f64,
    /// Sidetone masking rating STMR, default 15 dB.
    pub stmr: f64,
    /// Listener sidetone rating LSTR, default 18 dB (= STMR + Dr).
    pub lstr: f64,
    /// D-value of the telephone, send side, default 3.
    pub ds: f64,
    /// D-value of the telephone, receive side, default 3. It enters the
    /// formulas only through LSTR (= STMR + Dr), which is its own input.
    pub dr: f64,
    /// Talker echo loudness rating TELR, default 65 dB.
    pub telr: f64,
    /// Weighted echo path loss WEPL, default 110 dB.
    pub wepl: f64,
    /// Mean one-way delay of the echo path T, default 0 ms.
    pub t: f64,
    /// Absolute delay in echo-free connections Ta, default 0 ms.
    pub ta: f64,
    /// Round-trip delay in a 4-wire loop Tr, default 0 ms.
    pub tr: f64,
    /// Number of quantization distortion units qdu, default 1 (values
    /// below 1 are taken as 1).
    pub qdu: f64,
    /// Equipment impairment factor Ie, default 0 (G.711).
    pub ie: f64,
    /// Packet-loss robustness factor Bpl, default 4.3 ([`BPL_G711_NO_PLC`];
    /// [`BPL_G711_PLC`] = 25.1 for G.711 with Appendix I PLC).
    pub bpl: f64,
    /// Packet-loss probability Ppl, default 0 %.
    pub ppl: f64,
    /// Burst ratio BurstR, default 1 (random loss); non-positive is taken
    /// as 1.
    pub burst_r: f64,
    /// Circuit noise referred to the 0 dBr point Nc, default −70 dBm0p.
    pub nc: f64,
    /// Noise floor at the receive side Nfor, default −64 dBmp.
    pub nfor: f64,
    /// Room noise at the send side Ps, default 35 dB(A).
    pub ps: f64,
    /// Room noise at the receive side Pr, default 35 dB(A).
    pub pr: f64,
    /// Advantage factor A, default 0.
    pub a: f64,
    /// Delay sensitivity mT, default 100 ms (G.107 (06/2015) Table 3; the
    /// default is the one for carrier- and enterprise-grade telephony).
    pub m_t: f64,
    /// Delay sensitivity sT, default 1.
    pub s_t: f64,
}

impl Default for EModelInput {
    fn default() -> Self {
        EModelInput {
            slr: 8.0,
            rlr: 2.0,
            stmr: 15.0,
            lstr: 18.0,
            ds: 3.0,
            dr: 3.0,
            telr: 65.0,
            wepl: 110.0,
            t: 0.0,
            ta: 0.0,
            tr: 0.0,
            qdu: 1.0,
            ie: 0.0,
            bpl: BPL_G711_NO_PLC,
            ppl: 0.0,
            burst_r: 1.0,
            nc: -70.0,
            nfor: -64.0,
            ps: 35.0,
            pr: 35.0,
            a: 0.0,
            m_t: 100.0,
            s_t: 1.0,
        }
    }
}

/// The intermediate terms of one E-model computation (G.107 §7), for
/// inspection and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EModelTerms {
    /// Total noise No (§7.2), dBm0p.
    pub no: f64,
    /// Basic signal-to-noise ratio Ro (§7.2).
    pub ro: f64,
    /// Simultaneous impairment factor Is = Iolr + Ist + Iq (§7.3).
    pub is: f64,
    /// Talker echo impairment Idte (§7.4).
    pub idte: f64,
    /// Listener echo impairment Idle (§7.4).
    pub idle: f64,
    /// Impairment of too long absolute delay Idd (§7.4).
    pub idd: f64,
    /// Delay impairment factor Id = Idte + Idle + Idd (§7.4).
    pub id: f64,
    /// Effective equipment impairment factor Ie,eff (§7.5).
    pub ie_eff: f64,
    /// Transmission rating factor R = Ro − Is − Id − Ie,eff + A (§7.1).
    pub r: f64,
}

impl EModelInput {
    /// The same input for a connection whose only known delay is the
    /// mouth-to-ear delay `ta_ms`: Ta = `ta_ms`, T = Ta (the talker echo
    /// returns from the far end, as from a PSTN hybrid) and Tr = 2·Ta (the
    /// listener echo loop is the round trip), the usual simplification.
    /// Negative delays are taken as 0.
    pub fn with_delay(mut self, ta_ms: f64) -> Self {
        let ta = if ta_ms > 0.0 { ta_ms } else { 0.0 };
        self.ta = ta;
        self.t = ta;
        self.tr = 2.0 * ta;
        self
    }

    /// The transmission rating factor R (G.107 §7.1).
    pub fn r_factor(&self) -> f64 {
        self.terms().r
    }

    /// MOS from [`EModelInput::r_factor`] (G.107 Annex B).
    pub fn mos(&self) -> f64 {
        mos_from_r(self.r_factor())
    }

    /// Every term of the computation, G.107 (06/2015) §7.
    pub fn terms(&self) -> EModelTerms {
        let e = self;
        // Delays below 0 mean nothing; they are taken as 0.
        let t = e.t.max(0.0);
        let ta = e.ta.max(0.0);
        let tr = e.tr.max(0.0);

        // §7.2 Basic signal-to-noise ratio.
        let olr = e.slr + e.rlr;
        let nos = e.ps - e.slr - e.ds - 100.0 + 0.004 * (e.ps - olr - e.ds - 14.0).powi(2);
        let pre = e.pr + 10.0 * (1.0 + 10f64.powf((10.0 - e.lstr) / 10.0)).log10();
        let nor = e.rlr - 121.0 + pre + 0.008 * (pre - 35.0).powi(2);
        let nfo = e.nfor + e.rlr;
        let no = 10.0
            * (10f64.powf(e.nc / 10.0)
                + 10f64.powf(nos / 10.0)
                + 10f64.powf(nor / 10.0)
                + 10f64.powf(nfo / 10.0))
            .log10();
        let ro = 15.0 - 1.5 * (e.slr + no);

        // §7.3 Simultaneous impairment factor.
        let xolr = olr + 0.2 * (64.0 + no - e.rlr);
        let iolr = 20.0 * (root(1.0 + (xolr / 8.0).powi(8), 8.0) - xolr / 8.0);
        let stmro = -10.0
            * (10f64.powf(-e.stmr / 10.0) + (-t / 4.0).exp() * 10f64.powf(-e.telr / 10.0)).log10();
        let ist = 12.0 * root(1.0 + ((stmro - 13.0) / 6.0).powi(8), 8.0)
            - 28.0 * root(1.0 + ((stmro + 1.0) / 19.4).powi(35), 35.0)
            - 13.0 * root(1.0 + ((stmro - 3.0) / 33.0).powi(13), 13.0)
            + 29.0;
        let q = 37.0 - 15.0 * e.qdu.max(1.0).log10();
        let g = 1.07 + 0.258 * q + 0.0602 * q * q;
        let z = 46.0 / 30.0 - g / 40.0;
        let y = (ro - 100.0) / 15.0 + 46.0 / 8.4 - g / 9.0;
        let iq = 15.0 * (1.0 + 10f64.powf(y) + 10f64.powf(z)).log10();
        let is = iolr + ist + iq;

        // §7.4 Delay impairment factor.
        let roe = -1.5 * (no - e.rlr);
        let mut terv = e.telr - 40.0 * ((1.0 + t / 10.0) / (1.0 + t / 150.0)).log10()
            + 6.0 * (-0.3 * t * t).exp();
        if e.stmr < 9.0 {
            // Low STMR: TERVs = TERV + Ist/2.
            terv += ist / 2.0;
        }
        let re = 80.0 + 2.5 * (terv - 14.0);
        let idte = if t < 1.0 {
            // Below 1 ms the echo is heard as sidetone: Idte = 0.
            0.0
        } else {
            let d = roe - re;
            let v = (d / 2.0 + (d * d / 4.0 + 100.0).sqrt() - 1.0) * (1.0 - (-t).exp());
            if e.stmr > 20.0 {
                // High STMR: Idtes = sqrt(Idte² + Ist²).
                (v * v + ist * ist).sqrt()
            } else {
                v
            }
        };
        let rle = 10.5 * (e.wepl + 7.0) * (tr + 1.0).powf(-0.25);
        let idle = (ro - rle) / 2.0 + ((ro - rle).powi(2) / 4.0 + 169.0).sqrt();
        let m_t = if e.m_t > 0.0 { e.m_t } else { 100.0 };
        let s_t = if e.s_t > 0.0 { e.s_t } else { 1.0 };
        let idd = if ta > m_t {
            let x = (ta / m_t).log10() / 2f64.log10();
            let n = 6.0 * s_t;
            25.0 * (root(1.0 + x.powf(n), n) - 3.0 * root(1.0 + (x / 3.0).powf(n), n) + 2.0)
        } else {
            0.0
        };
        let id = idte + idle + idd;

        // §7.5 Effective equipment impairment factor.
        let burst_r = if e.burst_r > 0.0 { e.burst_r } else { 1.0 };
        let denom = e.ppl / burst_r + e.bpl;
        let ie_eff = if denom > 0.0 {
            e.ie + (95.0 - e.ie) * e.ppl / denom
        } else {
            e.ie
        };

        // §7.1
        let r = ro - is - id - ie_eff + e.a;
        EModelTerms {
            no,
            ro,
            is,
            idte,
            idle,
            idd,
            id,
            ie_eff,
            r,
        }
    }
}

/// The `n`-th root of `x`, 0 for `x` ≤ 0 (keeps odd-power terms of G.107
/// (7-13) real for inputs far outside its ranges).
fn root(x: f64, n: f64) -> f64 {
    if x > 0.0 {
        x.powf(1.0 / n)
    } else {
        0.0
    }
}

/// MOS (MOS_CQE, conversational quality estimate) from R, ITU-T G.107
/// Annex B: 1 for R < 0, 4.5 for R > 100, else
/// 1 + 0.035·R + R·(R − 60)·(100 − R)·7·10⁻⁶. The cubic dips to about 0.99
/// for 0 < R < 6.5; the result is kept at 1 there so the scale stays 1–4.5.
/// NaN gives 1.
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6).max(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 8000;
    const FRAME_TS: u32 = 160; // 20 ms at 8 kHz

    #[allow(clippy::disallowed_methods)] // a fake clock's origin
    fn t0() -> Instant {
        Instant::now()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds packets `(seq, ts, arrival offset in µs from start)` in
    /// arrival order (stable: ties keep the given order), without send
    /// instants.
    fn feed(rq: &mut ReceiverQuality, start: Instant, packets: &[(u16, u32, u64)]) {
        let mut sorted = packets.to_vec();
        sorted.sort_by_key(|p| p.2);
        for (seq, ts, at_us) in sorted {
            rq.on_packet(seq, ts, start + Duration::from_micros(at_us), None);
        }
    }

    /// A clean 20 ms G.711 stream of `n` packets from seq/ts origins, with an
    /// arrival offset in µs given per index.
    fn stream(n: u64, seq0: u16, ts0: u32, offset_us: impl Fn(u64) -> u64) -> Vec<(u16, u32, u64)> {
        (0..n)
            .map(|i| {
                (
                    seq0.wrapping_add(i as u16),
                    ts0.wrapping_add(i as u32 * FRAME_TS),
                    i * 20_000 + offset_us(i),
                )
            })
            .collect()
    }

    // ---- E-model -------------------------------------------------------

    #[test]
    fn emodel_defaults_give_r_93_2_and_mos_4_41() {
        // G.107 §7.7: all defaults give R = 93.2. Terms worked by hand from
        // the formulas: Nos = −75.744, Pre = 35.639, Nor = −83.358,
        // Nfo = −62, No = 10·log10(10^−7 + 10^−7.5744 + 10^−8.3358 +
        // 10^−6.2) = −61.18; Ro = 15 − 1.5·(8 − 61.18) = 94.77;
        // Iolr = 0.44, Ist ≈ 0, Iq = 0.97 → Is = 1.41; Idle = 0.15,
        // Idte = Idd = 0; R = 94.77 − 1.41 − 0.15 = 93.21.
        let t = EModelInput::default().terms();
        assert!((t.no - -61.18).abs() < 0.01, "No {}", t.no);
        assert!((t.ro - 94.77).abs() < 0.01, "Ro {}", t.ro);
        assert!((t.is - 1.41).abs() < 0.01, "Is {}", t.is);
        assert!((t.idle - 0.15).abs() < 0.01, "Idle {}", t.idle);
        assert_eq!(t.idte, 0.0);
        assert_eq!(t.idd, 0.0);
        assert_eq!(t.ie_eff, 0.0);
        assert!((t.r - 93.2).abs() < 0.05, "R {}", t.r);
        // MOS = 1 + 0.035·93.2 + 93.2·33.2·6.8·7e-6 = 4.409.
        let mos = EModelInput::default().mos();
        assert!((mos - 4.41).abs() < 0.01, "MOS {mos}");
    }

    #[test]
    fn mos_from_r_follows_annex_b() {
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(f64::NAN), 1.0);
        assert_eq!(mos_from_r(120.0), 4.5);
        // 1 + 0.035·50 + 50·(−10)·50·7e-6 = 2.75 − 0.175 = 2.575.
        assert!((mos_from_r(50.0) - 2.575).abs() < 1e-9);
        // Continuous at 100: 1 + 3.5 + 0 = 4.5.
        assert!((mos_from_r(99.999_999) - 4.5).abs() < 1e-6);
        // The dip below 1 near R = 3 is held at 1.
        assert_eq!(mos_from_r(3.0), 1.0);
        // Monotonic over the scale.
        let mut prev = 0.0;
        for i in 0..=1000 {
            let m = mos_from_r(f64::from(i) / 10.0);
            assert!(m >= prev);
            prev = m;
        }
    }

    #[test]
    fn ie_eff_for_g711_plc_random_loss() {
        // G.107 §7.5 with Ie = 0, Bpl = 25.1, BurstR = 1:
        // Ie,eff = 95·Ppl/(Ppl + 25.1): 1 % → 95/26.1 = 3.640,
        // 2 % → 190/27.1 = 7.011.
        let base = EModelInput {
            bpl: BPL_G711_PLC,
            ..EModelInput::default()
        };
        let one = EModelInput { ppl: 1.0, ..base }.terms();
        let two = EModelInput { ppl: 2.0, ..base }.terms();
        assert!((one.ie_eff - 3.640).abs() < 0.001, "{}", one.ie_eff);
        assert!((two.ie_eff - 7.011).abs() < 0.001, "{}", two.ie_eff);
        // Loss only adds Ie,eff: R drops by exactly that.
        assert!((base.r_factor() - one.r - 3.640).abs() < 0.001);
        // Without PLC (Bpl 4.3) 1 % costs 95/5.3 = 17.92.
        let no_plc = EModelInput {
            ppl: 1.0,
            ..EModelInput::default()
        };
        assert!((no_plc.terms().ie_eff - 17.925).abs() < 0.001);
    }

    #[test]
    fn mos_falls_as_loss_grows() {
        for bpl in [BPL_G711_NO_PLC, BPL_G711_PLC] {
            let mut prev = f64::INFINITY;
            for i in 0..=40 {
                let ppl = f64::from(i) * 0.5; // 0 .. 20 %
                let mos = EModelInput {
                    ppl,
                    bpl,
                    ..EModelInput::default()
                }
                .mos();
                assert!(mos < prev, "Bpl {bpl}, Ppl {ppl}: {mos} !< {prev}");
                prev = mos;
            }
            assert!(prev < 3.6, "20 % loss should be poor, got {prev}");
        }
    }

    #[test]
    fn bursty_loss_scores_worse_than_random() {
        let input = |burst_r| EModelInput {
            ppl: 2.0,
            bpl: BPL_G711_PLC,
            burst_r,
            ..EModelInput::default()
        };
        // Ie,eff = 95·2/(2/2 + 25.1) = 7.279 against 7.011.
        assert!((input(2.0).terms().ie_eff - 7.279).abs() < 0.001);
        assert!(input(2.0).r_factor() < input(1.0).r_factor());
        assert!(input(2.0).mos() < input(1.0).mos());
    }

    #[test]
    fn delay_impairment() {
        // Idd = 0 up to Ta = mT = 100 ms.
        for ta in [0.0, 50.0, 100.0] {
            let t = EModelInput {
                ta,
                ..EModelInput::default()
            }
            .terms();
            assert_eq!(t.idd, 0.0, "Ta {ta}");
        }
        // Ta = 200 ms: X = log2(2) = 1, Idd = 25·(2^(1/6) −
        // 3·(1 + 3^−6)^(1/6) + 2) = 25·(1.122462 − 3.000686 + 2) = 3.044.
        let t = EModelInput {
            ta: 200.0,
            ..EModelInput::default()
        }
        .terms();
        assert!((t.idd - 3.044).abs() < 0.001, "Idd {}", t.idd);
        // R falls as the mouth-to-ear delay grows beyond 150 ms.
        let mut prev = EModelInput::default().with_delay(150.0).r_factor();
        assert!(prev < 93.2);
        for ta in [175.0, 200.0, 250.0, 300.0, 400.0, 500.0] {
            let r = EModelInput::default().with_delay(ta).r_factor();
            assert!(r < prev, "Ta {ta}: {r} !< {prev}");
            prev = r;
        }
        // with_delay ties T and Tr to Ta.
        let e = EModelInput::default().with_delay(80.0);
        assert_eq!((e.t, e.ta, e.tr), (80.0, 80.0, 160.0));
        // Talker echo appears once T ≥ 1 ms.
        assert!(e.terms().idte > 0.0);
    }

    #[test]
    fn delay_curve_matches_the_cole_rosenbluth_fit() {
        // Cole & Rosenbluth, "Voice over IP performance monitoring", ACM
        // SIGCOMM CCR 31(2), 2001, fitted the G.107 default-parameter
        // curve with T = Ta, Tr = 2·Ta as R ≈ 93.2 − 0.024·d −
        // 0.11·(d − 177.3)·H(d − 177.3). A fit, not G.107 output: agree
        // within 1 point from 50 to 300 ms (largest gap 0.9 at the knee).
        for d in [50.0, 100.0, 150.0, 177.3, 200.0, 250.0, 300.0] {
            let knee = if d > 177.3 { d - 177.3 } else { 0.0 };
            let fit = 93.2 - 0.024 * d - 0.11 * knee;
            let r = EModelInput::default().with_delay(d).r_factor();
            assert!((r - fit).abs() < 1.0, "d {d}: {r} vs {fit}");
        }
    }

    #[test]
    fn emodel_survives_odd_inputs() {
        let odd = EModelInput {
            burst_r: 0.0,
            bpl: 0.0,
            ppl: 0.0,
            qdu: 0.0,
            m_t: 0.0,
            s_t: -1.0,
            stmr: -40.0,
            t: -5.0,
            ta: 1e6,
            tr: -1.0,
            ..EModelInput::default()
        };
        let r = odd.r_factor();
        assert!(r.is_finite(), "{r}");
        let m = odd.mos();
        assert!((1.0..=4.5).contains(&m));
    }

    // ---- RFC 3550 statistics --------------------------------------------

    #[test]
    fn constant_spacing_has_zero_jitter() {
        let start = t0();
        let mut rq = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(40)));
        feed(&mut rq, start, &stream(200, 1000, 5000, |_| 30_000));
        let r = rq.report();
        assert_eq!(r.expected, 200);
        assert_eq!(r.received, 200);
        assert_eq!(r.lost, 0);
        assert!(r.jitter_ts.abs() < 1e-6, "{}", r.jitter_ts);
        assert_eq!(r.late_discards, 0);
    }

    #[test]
    fn alternating_offsets_converge_to_twice_the_offset() {
        // Arrivals alternate 5 ms early / 5 ms late around a 20 ms grid, so
        // every D = ±10 ms = ±80 timestamp units. By hand: after the 2nd
        // packet J = 0 + (80 − 0)/16 = 5; after the 3rd
        // J = 5 + (80 − 5)/16 = 9.6875; J → 80 (= 10 ms) as
        // J_n = 80·(1 − (15/16)^(n−1)).
        let start = t0();
        let off = |i: u64| if i.is_multiple_of(2) { 5_000 } else { 15_000 };
        let packets = stream(300, 0, 0, off);
        let mut rq = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(60)));
        let mut it = packets.iter();
        for expect in [0.0, 5.0, 9.6875] {
            let &(seq, ts, at) = it.next().unwrap();
            rq.on_packet(seq, ts, start + Duration::from_micros(at), None);
            let j = rq.report().jitter_ts;
            assert!((j - expect).abs() < 1e-6, "{j} != {expect}");
        }
        for &(seq, ts, at) in it {
            rq.on_packet(seq, ts, start + Duration::from_micros(at), None);
        }
        let r = rq.report();
        assert!((r.jitter_ts - 80.0).abs() < 0.01, "{}", r.jitter_ts);
        assert!((r.jitter_ms - 10.0).abs() < 0.001, "{}", r.jitter_ms);
    }

    #[test]
    fn sequence_and_timestamp_wrap_do_not_count_loss() {
        let start = t0();
        let mut rq = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(40)));
        // seq 65526 .. 65535, 0 .. 9; ts wraps as well.
        feed(
            &mut rq,
            start,
            &stream(20, 65526, u32::MAX - 5 * FRAME_TS, |_| 0),
        );
        let r = rq.report();
        assert_eq!(r.expected, 20);
        assert_eq!(r.received, 20);
        assert_eq!(r.lost, 0);
        assert_eq!(r.reordered, 0);
        assert_eq!(r.duplicates, 0);
        assert_eq!(r.late_discards, 0);
        assert!(r.jitter_ts.abs() < 1e-6);
        // A reordered pair across the wrap: 65535 after 0.
        let mut rq = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(40)));
        let p = [
            (65534, 0, 0),
            (0, 320, 40_000),
            (65535, 160, 41_000),
            (1, 480, 60_000),
        ];
        feed(&mut rq, start, &p);
        let r = rq.report();
        assert_eq!((r.expected, r.lost, r.reordered), (4, 0, 1));
        // RFC 3550 A.1 splits the space in halves: 20000 ahead is ahead
        // (19999 lost), 40000 ahead is 25536 behind (stale, far outside
        // the window), not 40000 more expected.
        let mut rq = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(40)));
        let p = [(100, 0, 0), (20100, 160, 20_000), (60100, 320, 40_000)];
        feed(&mut rq, start, &p);
        let r = rq.report();
        assert_eq!((r.expected, r.lost, r.stale), (20_001, 19_999, 1));
    }

    #[test]
    fn duplicates_are_counted_and_do_not_reduce_loss() {
        let start = t0();
        let mut packets = stream(100, 0, 0, |_| 0);
        packets.retain(|p| p.0 != 20); // one lost
        packets.push((10, 10 * FRAME_TS, 10 * 20_000 + 1)); // copies
        packets.push((50, 50 * FRAME_TS, 60 * 20_000));
        packets.push((50, 50 * FRAME_TS, 61 * 20_000));
        packets.push((99, 99 * FRAME_TS, 99 * 20_000 + 5));
        let mut rq = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(40)));
        feed(&mut rq, start, &packets);
        let r = rq.report();
        assert_eq!(r.expected, 100);
        assert_eq!(r.received, 99);
        assert_eq!(r.duplicates, 4);
        assert_eq!(r.lost, 1);
        assert_eq!(r.reordered, 0);
        assert!((r.loss_pct - 1.0).abs() < 1e-9);
    }

    #[test]
    fn reordering_is_counted_without_loss() {
        let start = t0();
        // 0 1 3 2 4 5 7 6: two packets arrive after a higher one.
        let order = [0u16, 1, 3, 2, 4, 5, 7, 6];
        let packets: Vec<_> = order
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, u32::from(s) * FRAME_TS, i as u64 * 20_000))
            .collect();
        let mut rq = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(40)));
        feed(&mut rq, start, &packets);
        let r = rq.report();
        assert_eq!((r.expected, r.received, r.lost), (8, 8, 0));
        assert_eq!(r.reordered, 2);
        assert_eq!(r.duplicates, 0);
        assert_eq!(r.late_discards, 0);
        // A packet older than the first one extends the stream back; the
        // buffer started playing at the first one, so it is late.
        let packets = [
            (1, FRAME_TS, 0),
            (2, 2 * FRAME_TS, 20_000),
            (0, 0, 21_000),
            (3, 3 * FRAME_TS, 40_000),
        ];
        let mut rq = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(40)));
        feed(&mut rq, start, &packets);
        let r = rq.report();
        assert_eq!((r.expected, r.received, r.lost), (4, 4, 0));
        assert_eq!((r.reordered, r.late_discards), (1, 1));
    }

    #[test]
    fn one_way_delay_mean_min_max() {
        let start = t0();
        let mut rq = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(40)));
        for (i, d) in [30u64, 50, 40].iter().enumerate() {
            let sent = start + ms(20 * i as u64);
            rq.on_packet(i as u16, i as u32 * FRAME_TS, sent + ms(*d), Some(sent));
        }
        let r = rq.report();
        assert!((r.delay_mean_ms.unwrap() - 40.0).abs() < 1e-9);
        assert!((r.delay_min_ms.unwrap() - 30.0).abs() < 1e-9);
        assert!((r.delay_max_ms.unwrap() - 50.0).abs() < 1e-9);
        let none = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(40)));
        assert_eq!(none.report().delay_mean_ms, None);
    }

    // ---- Jitter buffer ---------------------------------------------------

    #[test]
    fn fixed_buffer_discards_60_ms_late_keeps_30_ms_late() {
        let start = t0();
        // Lateness against the first packet's schedule: 60 ms and 41 ms
        // are past a 40 ms buffer; 30 ms and exactly 40 ms are not.
        let late = |i: u64| match i {
            10 => 60_000,
            20 => 30_000,
            30 => 40_000,
            40 => 41_000,
            _ => 0,
        };
        let mut rq = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(40)));
        feed(&mut rq, start, &stream(100, 0, 0, late));
        let r = rq.report();
        assert_eq!(r.lost, 0);
        assert_eq!(r.late_discards, 2);
        assert_eq!(r.reordered, 4);
        assert!((r.loss_pct - 0.0).abs() < 1e-9);
        assert!((r.effective_loss_pct - 2.0).abs() < 1e-9);
        assert!((r.buffer_ms - 40.0).abs() < 1e-9);
        // The listener's loss pattern is two isolated misses.
        assert!(r.burst_ratio <= 1.0);
    }

    /// 1000 packets with arrival offsets spread evenly-ish over 0..60 ms by
    /// a fixed linear congruential sequence (deterministic), the first at 0.
    fn jittery_stream() -> Vec<(u16, u32, u64)> {
        let mut x: u64 = 12345;
        let offsets: Vec<u64> = (0..1000)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if i == 0 {
                    0
                } else {
                    (x >> 33) % 60_000
                }
            })
            .collect();
        stream(1000, 0, 0, |i| {
            offsets.get(i as usize).copied().unwrap_or(0)
        })
    }

    #[test]
    fn adaptive_buffer_grows_under_jitter_and_discards_less() {
        let start = t0();
        let packets = jittery_stream();
        let mut fixed = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(20)));
        feed(&mut fixed, start, &packets);
        let mut adaptive = ReceiverQuality::new(RATE, JitterBuffer::adaptive(ms(20), ms(200)));
        feed(&mut adaptive, start, &packets);
        let f = fixed.report();
        let a = adaptive.report();
        // Uniform 0..60 ms offsets: E|U1 − U2| = 20 ms of jitter, so the
        // adaptive delay settles near 4·20 + 20 = 100 ms.
        assert!(f.jitter_ms > 15.0 && f.jitter_ms < 25.0, "{}", f.jitter_ms);
        assert!(
            a.buffer_ms > 60.0 && a.buffer_ms <= 200.0,
            "{}",
            a.buffer_ms
        );
        assert!(f.late_discards > 500, "fixed {}", f.late_discards);
        assert!(
            a.late_discards * 4 < f.late_discards,
            "adaptive {} vs fixed {}",
            a.late_discards,
            f.late_discards
        );
        assert_eq!(a.lost, 0);
        assert!(a.effective_loss_pct < f.effective_loss_pct);
        // Capped at max.
        let mut capped = ReceiverQuality::new(RATE, JitterBuffer::adaptive(ms(20), ms(50)));
        feed(&mut capped, start, &packets);
        assert!((capped.report().buffer_ms - 50.0).abs() < 1e-9);
        // No jitter: stays one frame (20 ms) above nothing, clamped at min.
        let mut calm = ReceiverQuality::new(RATE, JitterBuffer::adaptive(ms(10), ms(200)));
        feed(&mut calm, start, &stream(200, 0, 0, |_| 0));
        assert!((calm.report().buffer_ms - 20.0).abs() < 1e-9);
    }

    // ---- Burst ratio -----------------------------------------------------

    #[test]
    fn isolated_losses_give_burst_ratio_near_one() {
        let start = t0();
        let mut packets = stream(4000, 0, 0, |_| 0);
        packets.retain(|p| p.0 % 100 != 50); // 40 single losses, 1 %
        let mut rq = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(40)));
        feed(&mut rq, start, &packets);
        let r = rq.report();
        assert_eq!(r.lost, 40);
        // q = 1, p = 40/3959: BurstR = 1/(1 + 0.0101) = 0.990.
        assert!(
            (r.burst_ratio - 1.0 / (1.0 + 40.0 / 3959.0)).abs() < 1e-9,
            "{}",
            r.burst_ratio
        );
    }

    #[test]
    fn bursts_of_four_give_burst_ratio_near_four() {
        let start = t0();
        let mut packets = stream(4000, 0, 0, |_| 0);
        packets.retain(|p| !(200..204).contains(&(p.0 % 400))); // 10 × 4, 1 %
        let mut rq = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(40)));
        feed(&mut rq, start, &packets);
        let r = rq.report();
        assert_eq!(r.lost, 40);
        // Transitions: received→lost 10 of 3959 from received (the last
        // packet has no successor), lost→received 10 of 40. By hand:
        // p = 10/3959 = 0.002526, q = 0.25, BurstR = 1/0.252526 = 3.960.
        let expect = 1.0 / (10.0 / 3959.0 + 0.25);
        assert!((r.burst_ratio - expect).abs() < 1e-9, "{}", r.burst_ratio);
        assert!(r.burst_ratio > 3.5);
    }

    #[test]
    fn gap_wider_than_the_window_is_one_burst() {
        let start = t0();
        let mut packets = stream(100, 0, 0, |_| 0);
        packets.extend((2000..2100u64).map(|i| (i as u16, i as u32 * FRAME_TS, i * 20_000)));
        let mut rq = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(40)));
        feed(&mut rq, start, &packets);
        let r = rq.report();
        assert_eq!((r.expected, r.received, r.lost), (2100, 200, 1900));
        // p = 1/199, q = 1/1900.
        let expect = 1.0 / (1.0 / 199.0 + 1.0 / 1900.0);
        assert!((r.burst_ratio - expect).abs() < 1e-6, "{}", r.burst_ratio);
        // A packet from before the window is stale, not received.
        rq.on_packet(50, 50 * FRAME_TS, start + ms(43_000), None);
        rq.on_packet(500, 500 * FRAME_TS, start + ms(43_000), None);
        let r = rq.report();
        assert_eq!(r.stale, 2);
        assert_eq!(r.received, 200);
    }

    // ---- report() --------------------------------------------------------

    #[test]
    fn clean_stream_without_delay_reports_r_93_2() {
        // Sent = arrival and a 0 ms buffer: Ta = 0, no loss, so R is the
        // G.107 default 93.2 whatever Bpl is.
        let start = t0();
        for bpl in [BPL_G711_PLC, BPL_G711_NO_PLC] {
            let mut rq = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(0))).with_bpl(bpl);
            for i in 0..500u64 {
                let at = start + ms(20 * i);
                rq.on_packet(i as u16, i as u32 * FRAME_TS, at, Some(at));
            }
            let r = rq.report();
            assert_eq!((r.lost, r.late_discards), (0, 0));
            assert_eq!(r.burst_ratio, 1.0);
            assert!((r.r_factor - 93.2).abs() < 0.05, "{}", r.r_factor);
            assert!((r.mos - 4.41).abs() < 0.01, "{}", r.mos);
        }
    }

    #[test]
    fn report_feeds_measured_loss_burst_and_delay_to_the_emodel() {
        let start = t0();
        let mut rq = ReceiverQuality::new(RATE, JitterBuffer::fixed(ms(40)));
        for i in 0..1000u64 {
            if (300..304).contains(&(i % 400)) {
                continue;
            }
            let sent = start + ms(20 * i);
            rq.on_packet(i as u16, i as u32 * FRAME_TS, sent + ms(30), Some(sent));
        }
        let r = rq.report();
        assert_eq!(r.lost, 8);
        assert!(r.burst_ratio > 3.0);
        let expect = EModelInput {
            ppl: r.effective_loss_pct,
            burst_r: r.burst_ratio,
            bpl: BPL_G711_PLC,
            ..EModelInput::default()
        }
        .with_delay(30.0 + 40.0);
        assert!((r.r_factor - expect.r_factor()).abs() < 1e-9);
        assert!((r.mos - expect.mos()).abs() < 1e-12);
        assert!(r.r_factor < 93.2 - 3.0);
        assert_eq!(
            r.to_string(),
            format!(
                "loss 0.8 % (late 0.0 %), jitter 0.0 ms, delay 30 ms, buffer 40 ms, burst {:.2}, R {:.1}, MOS {:.2}",
                r.burst_ratio, r.r_factor, r.mos
            )
        );
    }

    #[test]
    fn empty_receiver_reports_no_audio() {
        let rq = ReceiverQuality::new(0, JitterBuffer::adaptive(ms(60), ms(20)));
        let r = rq.report();
        assert_eq!((r.expected, r.received, r.lost), (0, 0, 0));
        assert_eq!((r.loss_pct, r.effective_loss_pct), (0.0, 0.0));
        assert_eq!((r.r_factor, r.mos), (0.0, 1.0));
        assert_eq!(r.buffer_ms, 20.0);
        assert_eq!(
            r.to_string(),
            "loss 0.0 % (late 0.0 %), jitter 0.0 ms, delay n/a, buffer 20 ms, burst 1.00, R 0.0, MOS 1.00"
        );
    }

    #[test]
    fn arbitrary_input_does_not_panic() {
        // A deterministic scramble of sequence numbers, timestamps, arrival
        // instants (also before the first) and send instants.
        let start = t0() + Duration::from_secs(100);
        let mut x: u64 = 7;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 16
        };
        for buffer in [
            JitterBuffer::fixed(ms(0)),
            JitterBuffer::Adaptive {
                min: ms(0),
                max: ms(0),
                k: f64::NAN,
                interval: 0,
            },
        ] {
            let mut rq = ReceiverQuality::new(0, buffer).with_bpl(0.0);
            for _ in 0..20_000 {
                let seq = next() as u16;
                let ts = next() as u32;
                let at = if next() % 2 == 0 {
                    start + Duration::from_micros(next() % 100_000_000)
                } else {
                    start - Duration::from_micros(next() % 100_000_000)
                };
                let sent = match next() % 3 {
                    0 => None,
                    1 => Some(at + ms(5)),
                    _ => Some(start),
                };
                rq.on_packet(seq, ts, at, sent);
            }
            let r = rq.report();
            assert!(r.effective_loss_pct >= 0.0 && r.effective_loss_pct <= 100.0);
            assert!(r.r_factor.is_finite() && r.jitter_ms.is_finite());
            assert!((1.0..=4.5).contains(&r.mos));
            assert!(r.burst_ratio.is_finite() && r.burst_ratio > 0.0);
            let _ = r.to_string();
        }
    }
}
