//! RFC 4733 telephone-events (DTMF) in RTP: the digits, the event
//! payload (§2.3), and the packets one key press makes (§2.5: packets every
//! 20 ms with the event's start timestamp and a growing duration, the first
//! with the marker bit, the end packet sent three times). Pure functions;
//! the relay only renumbers their payload type between legs.

use std::fmt;

/// A DTMF key as an RFC 4733 §3.2 event code: 0-9, * (10), # (11), A-D
/// (12-15).
pub fn event_of(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(12 + (digit as u8 - b'A')),
        'a'..='d' => Some(12 + (digit as u8 - b'a')),
        _ => None,
    }
}

/// The key of an event code (16 and above are not DTMF keys).
pub fn digit_of(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// One telephone-event payload (RFC 4733 §2.3, 4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub event: u8,
    pub end: bool,
    /// Power level in -dBm0 (0-63).
    pub volume: u8,
    /// In timestamp units from the event's start.
    pub duration: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEvent(pub &'static str);

impl fmt::Display for BadEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a telephone-event payload: {}", self.0)
    }
}

impl Event {
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }

    /// The event of an RTP packet's payload (the first 4 bytes; §2.3
    /// allows several events per packet only with redundancy, RFC 2198).
    pub fn parse(payload: &[u8]) -> Result<Event, BadEvent> {
        let Some(&[event, flags, d0, d1]) = payload.get(..4) else {
            return Err(BadEvent("shorter than 4 bytes"));
        };
        Ok(Event {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }
}

/// How long a simulated key press lasts (RFC 4733 leaves it to the
/// sender; 100 ms is a common keypad tone) and how often its end packet
/// goes out (§2.5.1.4: three times).
pub const PRESS_PACKETS: u16 = 5;
pub const END_REPEATS: u16 = 3;

/// The payloads of one key press at 8 kHz, 20 ms apart: `PRESS_PACKETS`
/// updates with growing duration, then the end packet `END_REPEATS` times.
/// The caller sends them with the event's start timestamp, the marker bit
/// on the first (§2.5.1.1), and consecutive sequence numbers.
pub fn press(event: u8) -> Vec<Event> {
    let step = 160u16;
    let mut out: Vec<Event> = (1..=PRESS_PACKETS)
        .map(|i| Event {
            event,
            end: false,
            volume: 10,
            duration: step * i,
        })
        .collect();
    for _ in 0..END_REPEATS {
        out.push(Event {
            event,
            end: true,
            volume: 10,
            duration: step * PRESS_PACKETS,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_map_to_rfc_4733_codes_and_back() {
        for (d, e) in [
            ('0', 0),
            ('9', 9),
            ('*', 10),
            ('#', 11),
            ('A', 12),
            ('D', 15),
        ] {
            assert_eq!(event_of(d), Some(e));
            assert_eq!(digit_of(e), Some(d));
        }
        assert_eq!(event_of('x'), None);
        assert_eq!(digit_of(16), None);
    }

    #[test]
    fn an_event_round_trips_and_short_payloads_are_refused() {
        // RFC 4733 §2.3: event 5, end bit, volume 10, duration 800.
        let e = Event {
            event: 5,
            end: true,
            volume: 10,
            duration: 800,
        };
        assert_eq!(e.to_bytes(), [5, 0x8a, 0x03, 0x20]);
        assert_eq!(Event::parse(&e.to_bytes()), Ok(e));
        assert!(Event::parse(&[5, 0x8a, 3]).is_err());
    }

    #[test]
    fn a_press_grows_then_ends_three_times() {
        let p = press(11);
        assert_eq!(p.len(), 8);
        assert_eq!(p[0].duration, 160);
        assert!(p[..5].iter().all(|e| !e.end));
        assert!(p[5..].iter().all(|e| e.end && e.duration == 800));
    }
}
