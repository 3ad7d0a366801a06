//! SIP traces of a run: a text ladder (sngrep style) with every message in
//! full below it. This is what insta snapshots and what a failing step
//! shows.

use sbc::sip::transport::tap::Direction;
use sbc::sip::transport::TraceEvent;
use sbc::sip::wire::Message;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

const COLUMN: usize = 24;

/// One message as sent, with where it went.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub at_ms: f64,
    pub from: String,
    pub to: String,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub transport: String,
    pub raw: Vec<u8>,
}

impl Sent {
    /// The message as drlab's SIP stack reads it.
    pub fn message(&self) -> Option<Message> {
        Message::parse(&self.raw).ok()
    }

    /// The same bytes read by rsip, a parser drlab's stack does not share:
    /// assertions about the wire read this one, so a bug in our own parser
    /// cannot make a wrong message look right.
    pub fn rsip(&self) -> Option<rsip::SipMessage> {
        rsip::SipMessage::try_from(self.raw.as_slice()).ok()
    }

    /// `INVITE`, `200 OK (INVITE)` ...
    pub fn label(&self) -> String {
        match self.message() {
            Some(m) => match m.method() {
                Some(method) => method.to_string(),
                None => {
                    let cseq = m
                        .cseq()
                        .map(|c| format!(" ({})", c.method))
                        .unwrap_or_default();
                    format!("{}{cseq}", m.summary())
                }
            },
            None => "<unparsable>".into(),
        }
    }
}

fn name_of(names: &[(IpAddr, String)], addr: &SocketAddr) -> String {
    names
        .iter()
        .find(|(ip, _)| *ip == addr.ip())
        .map(|(_, n)| n.clone())
        .unwrap_or_else(|| addr.ip().to_string())
}

/// Every message sent by any host, in order.
pub fn sent_messages(events: &[TraceEvent], names: &[(IpAddr, String)]) -> Vec<Sent> {
    events
        .iter()
        .filter(|e| e.direction == Direction::Sent)
        .map(|e| Sent {
            at_ms: e.at.as_secs_f64() * 1000.0,
            from: e.host.clone(),
            to: name_of(names, &e.remote),
            // A socket bound to the wildcard reports 0.0.0.0; each simulated
            // host has one address, so show that.
            local: match names.iter().find(|(_, n)| *n == e.host) {
                Some((ip, _)) if e.local.ip().is_unspecified() => {
                    SocketAddr::new(*ip, e.local.port())
                }
                _ => e.local,
            },
            remote: e.remote,
            transport: e.transport.to_string(),
            raw: e.raw.clone(),
        })
        .collect()
}

fn short(host: &str) -> String {
    let first = host.split('.').next().unwrap_or(host);
    first.chars().take(COLUMN - 2).collect()
}

/// The ladder: a column per host that took part, an arrow per message,
/// then the messages in full.
pub fn ladder(title: &str, sent: &[Sent], hosts: &[String]) -> String {
    let columns: Vec<&String> = hosts
        .iter()
        .filter(|h| sent.iter().any(|s| &s.from == *h || &s.to == *h))
        .collect();
    let col = |h: &str| columns.iter().position(|c| c.as_str() == h);
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    for (i, h) in columns.iter().enumerate() {
        let _ = writeln!(out, "  [{}] {h}", (b'A' + i as u8) as char);
    }
    out.push('\n');
    let mut header = format!("{:>10}  ", "ms");
    for (i, h) in columns.iter().enumerate() {
        let _ = write!(
            header,
            "{:<width$}",
            format!("{} {}", (b'A' + i as u8) as char, short(h)),
            width = COLUMN
        );
    }
    let _ = writeln!(out, "{}", header.trim_end());
    for (n, s) in sent.iter().enumerate() {
        let (Some(a), Some(b)) = (col(&s.from), col(&s.to)) else {
            continue;
        };
        let width = columns.len() * COLUMN;
        let mut line: Vec<char> = vec![' '; width];
        for c in 0..columns.len() {
            line[c * COLUMN] = '|';
        }
        let (lo, hi) = (a.min(b) * COLUMN, a.max(b) * COLUMN);
        for ch in line.iter_mut().take(hi).skip(lo + 1) {
            *ch = '-';
        }
        if b > a {
            line[hi - 1] = '>';
        } else if b < a {
            line[lo + 1] = '<';
        }
        let label = format!(" {} ", s.label());
        let span = hi.saturating_sub(lo);
        // The label goes on the arrow when it fits, else after the line.
        let mut after = String::new();
        if span > label.len() + 2 {
            let start = lo + (span - label.len()) / 2;
            for (i, ch) in label.chars().enumerate() {
                line[start + i] = ch;
            }
        } else {
            after = label.trim().to_string();
        }
        let text: String = line.into_iter().collect();
        let tail = if after.is_empty() {
            format!("[{}]", n + 1)
        } else {
            format!("[{}] {after}", n + 1)
        };
        let _ = writeln!(out, "{:>10.3}  {}  {tail}", s.at_ms, text.trim_end());
    }
    out.push('\n');
    for (n, s) in sent.iter().enumerate() {
        let _ = writeln!(
            out,
            "[{}] {:.3} ms {} {} -> {} {}",
            n + 1,
            s.at_ms,
            s.transport,
            s.local,
            s.remote,
            s.to
        );
        let text = String::from_utf8_lossy(&s.raw).replace("\r\n", "\n");
        for l in text.trim_end_matches('\n').split('\n') {
            let _ = writeln!(out, "    {l}");
        }
        out.push('\n');
    }
    out
}

/// The STUN datagrams among `media` (RFC 7983 demultiplexing), a line
/// each: when, who to whom, and what it says (ICE connectivity checks in
/// media bypass). Empty when there are none, so traces of calls without
/// ICE are as they were.
pub fn stun_lines(media: &[Sent]) -> String {
    use sbc::media::stun::{looks_like_stun, Attribute, Class, Message};
    let mut out = String::new();
    for s in media.iter().filter(|s| looks_like_stun(&s.raw)) {
        let summary = match Message::parse(&s.raw) {
            Ok(m) => {
                let class = match m.class {
                    Class::Request => "request",
                    Class::Indication => "indication",
                    Class::Success => "success",
                    Class::Error => "error",
                };
                let mut line = format!("Binding {class}");
                if m.method != sbc::media::stun::BINDING {
                    line = format!("method {:#06x} {class}", m.method);
                }
                for a in &m.attributes {
                    let _ = match a {
                        Attribute::Username(u) => write!(line, " USERNAME={u}"),
                        Attribute::ErrorCode { code, reason } => write!(line, " {code} {reason}"),
                        Attribute::XorMappedAddress(x) => write!(line, " XOR-MAPPED-ADDRESS={x}"),
                        Attribute::UseCandidate => write!(line, " USE-CANDIDATE"),
                        Attribute::IceControlling(_) => write!(line, " ICE-CONTROLLING"),
                        Attribute::IceControlled(_) => write!(line, " ICE-CONTROLLED"),
                        Attribute::MessageIntegrity(_) => write!(line, " MESSAGE-INTEGRITY"),
                        Attribute::Fingerprint(_) => write!(line, " FINGERPRINT"),
                        _ => Ok(()),
                    };
                }
                line
            }
            Err(e) => format!("unreadable STUN: {e}"),
        };
        let _ = writeln!(
            out,
            "{:>10.3}  {} {} -> {} {}  {summary}",
            s.at_ms,
            short(&s.from),
            s.local,
            short(&s.to),
            s.remote
        );
    }
    if out.is_empty() {
        return out;
    }
    format!("STUN (ICE connectivity checks):\n{out}\n")
}
