//! How the hub says why: the Q.850 cause for a SIP status, and the
//! `Reason` / `ms-diagnostics` headers on its refusals and BYEs
//! (behaviour §3.2, §6; case 9.59).
//!
//! What is sourced and what is a guess:
//! - Direct Routing maps SIP to Q.850 with NICC ND1017:2006/07, and its one
//!   documented example is **486 → 34** (KB-IN; RFC 4497 would give 17).
//! - ND1017's own table is not public. The other defaults are RFC 3398
//!   §8.2.6.1's SIP → ISUP values, the closest published table; each is a
//!   guess and a hub setting (`[refusals.q850]` in hub.toml).
//! - A disabled user with a number assigned gets **403 with cause 63**
//!   (observed, COMMSVERSE), not the table's 403 → 21.
//! - The Reason form `Q.850;cause=N;text="<correlation-id>;<phrase>"` is
//!   observed (C2T, SYNTH-CDR).
//! - `ms-diagnostics: <code>;reason="<phrase>";source="<proxy>"` is a guess:
//!   Microsoft documents the codes (KB-CODES) but not their header; this is
//!   the form Skype for Business and Lync servers write.

use sbc::sip::rng::SeededRng;
use std::collections::BTreeMap;

/// Where a default mapping comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CauseSource {
    /// Stated by Microsoft for Direct Routing.
    Documented(&'static str),
    /// Not stated for Direct Routing: the value another published table gives.
    Guess(&'static str),
}

/// The default SIP status → Q.850 cause table, with each entry's source.
pub const DEFAULT_CAUSES: &[(u16, u8, CauseSource)] = &[
    (400, 41, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (401, 21, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (402, 21, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (403, 21, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (404, 1, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (405, 63, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (406, 79, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (407, 21, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (408, 102, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (410, 22, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (413, 127, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (414, 127, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (415, 79, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (416, 127, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (420, 127, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (421, 127, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (423, 127, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (480, 18, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (481, 41, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (482, 25, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (483, 25, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (484, 28, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (485, 1, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (
        486,
        34,
        CauseSource::Documented("KB-IN: ND1017 maps 486 to 34"),
    ),
    (
        487,
        127,
        CauseSource::Guess("RFC 3398 §8.2.6.1 (no entry: 127)"),
    ),
    (488, 127, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (500, 41, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (501, 79, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (502, 38, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (503, 41, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (504, 102, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (505, 127, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (513, 127, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (600, 17, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (603, 21, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (604, 1, CauseSource::Guess("RFC 3398 §8.2.6.1")),
    (606, 58, CauseSource::Guess("RFC 3398 §8.2.6.1")),
];

/// Q.850 16, "normal call clearing": the hub's BYE when a Teams user hangs up.
pub const NORMAL_CLEARING: u8 = 16;
/// Q.850 63, "service or option not available": a disabled user (observed).
pub const SERVICE_NOT_AVAILABLE: u8 = 63;
/// Q.850 127, "interworking, unspecified": a status with no entry.
const INTERWORKING: u8 = 127;

/// The hub's SIP status → Q.850 table (defaults plus hub.toml overrides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CauseTable {
    causes: BTreeMap<u16, u8>,
}

impl Default for CauseTable {
    fn default() -> Self {
        CauseTable {
            causes: DEFAULT_CAUSES.iter().map(|&(s, c, _)| (s, c)).collect(),
        }
    }
}

impl CauseTable {
    /// The cause for a failure status; 127 for one with no entry.
    pub fn cause(&self, status: u16) -> u8 {
        self.causes.get(&status).copied().unwrap_or(INTERWORKING)
    }

    /// Override (or add) one mapping.
    pub fn set(&mut self, status: u16, cause: u8) {
        self.causes.insert(status, cause);
    }
}

/// A correlation id as the hub writes it in Reason text: a GUID, drawn from
/// the seeded RNG so traces stay identical per seed.
pub fn correlation_id(rng: &mut SeededRng) -> String {
    guid(&rng.hex(32))
}

/// 32 hex digits written as a GUID (8-4-4-4-12); fewer are padded with 0.
pub fn guid(hex: &str) -> String {
    let h = format!("{hex:0<32}");
    let part = |a: usize, b: usize| h.get(a..b).unwrap_or_default();
    format!(
        "{}-{}-{}-{}-{}",
        part(0, 8),
        part(8, 12),
        part(12, 16),
        part(16, 20),
        part(20, 32)
    )
}

/// Text inside a quoted-string: no `"` or `\` (RFC 3261 §25.1) and no
/// line breaks, whatever a phrase or setting holds.
fn quotable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// `Reason: Q.850;cause=N;text="<correlation-id>;<phrase>"` (RFC 3326 with
/// the hub's observed text).
pub fn q850_reason(cause: u8, correlation: &str, phrase: &str) -> (String, String) {
    (
        "Reason".into(),
        format!(
            "Q.850;cause={cause};text=\"{correlation};{}\"",
            quotable(phrase)
        ),
    )
}

/// `ms-diagnostics: <code>;reason="<phrase>";source="<proxy>"` (the form is
/// a guess: see the module notes).
pub fn ms_diagnostics(code: u32, phrase: &str, proxy: &str) -> (String, String) {
    (
        "ms-diagnostics".into(),
        format!("{code};reason=\"{}\";source=\"{proxy}\"", quotable(phrase)),
    )
}

/// Read a Reason header value back: its protocol, cause and text (for
/// checks on what the hub sent).
pub fn parse_reason(value: &str) -> Option<(String, u16, Option<String>)> {
    let (protocol, params) = value.split_once(';')?;
    // `text` is a quoted-string that may itself hold `;`: take it out whole
    // before splitting the rest (indices come from ASCII matches, so they
    // are char boundaries).
    let (text, rest) = match params.find("text=\"") {
        Some(start) => {
            let after = &params[start + "text=\"".len()..];
            let end = after.find('"')?;
            let tail = &after[end + 1..];
            (
                Some(after[..end].to_string()),
                format!("{}{tail}", &params[..start]),
            )
        }
        None => (None, params.to_string()),
    };
    let cause = rest
        .split(';')
        .find_map(|p| p.trim().strip_prefix("cause="))
        .and_then(|c| c.trim().parse().ok())?;
    Some((protocol.trim().to_string(), cause, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_mapping_and_overrides() {
        let mut t = CauseTable::default();
        assert_eq!(t.cause(486), 34, "ND1017 per KB-IN, not RFC 4497's 17");
        assert_eq!(t.cause(404), 1);
        assert_eq!(t.cause(499), 127);
        t.set(486, 17);
        assert_eq!(t.cause(486), 17);
        // Every default is marked with where it comes from; one documented.
        let documented = DEFAULT_CAUSES
            .iter()
            .filter(|(_, _, s)| matches!(s, CauseSource::Documented(_)))
            .count();
        assert_eq!(documented, 1);
    }

    #[test]
    fn reason_is_written_and_read_back() {
        let mut rng = SeededRng::new(7);
        let id = correlation_id(&mut rng);
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        let (name, value) = q850_reason(34, &id, "Busy \"here\"");
        assert_eq!(name, "Reason");
        let (proto, cause, text) = parse_reason(&value).unwrap();
        assert_eq!(proto, "Q.850");
        assert_eq!(cause, 34);
        assert_eq!(text.unwrap(), format!("{id};Busy 'here'"));
        assert_eq!(
            parse_reason("SIP;cause=200;text=\"Call completed elsewhere\"")
                .unwrap()
                .1,
            200
        );
        assert!(parse_reason("Q.850").is_none());
        assert!(parse_reason("Q.850;text=\"x\"").is_none());
        assert!(parse_reason("Q.850;cause=é").is_none());
    }
}
