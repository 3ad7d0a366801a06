//! Header names and values as text: compact forms, lists, parameters.
//!
//! Values are kept exactly as received (after unfolding, RFC 3261 §7.3.1) so
//! that a proxy can forward them byte for byte. Typed readings are made on
//! demand by [`super::values`].

/// RFC 3261 §7.3.3 and later RFCs: compact form → full name.
const COMPACT: &[(&str, &str)] = &[
    ("a", "Accept-Contact"),
    ("b", "Referred-By"),
    ("c", "Content-Type"),
    ("d", "Request-Disposition"),
    ("e", "Content-Encoding"),
    ("f", "From"),
    ("i", "Call-ID"),
    ("j", "Reject-Contact"),
    ("k", "Supported"),
    ("l", "Content-Length"),
    ("m", "Contact"),
    ("n", "Identity-Info"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("s", "Subject"),
    ("t", "To"),
    ("u", "Allow-Events"),
    ("v", "Via"),
    ("x", "Session-Expires"),
    ("y", "Identity"),
];

/// The full name of a header whose name may be a compact form.
pub fn full_name(name: &str) -> &str {
    if name.len() == 1 {
        for (short, full) in COMPACT {
            if name.eq_ignore_ascii_case(short) {
                return full;
            }
        }
    }
    name
}

/// Whether a header named `raw` (as received) is the header `full`.
pub fn name_is(raw: &str, full: &str) -> bool {
    full_name(raw).eq_ignore_ascii_case(full)
}

/// RFC 3261 §25.1 `token` characters.
pub fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

/// One header line: the name as received and the unfolded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }

    /// Whether this header is `full` (case-insensitive, compact forms expanded).
    pub fn is(&self, full: &str) -> bool {
        name_is(&self.name, full)
    }
}

/// Headers in the order received. Order matters in SIP (Via, Route,
/// Record-Route), so this is a list, never a map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// The first header named `full`.
    pub fn get(&self, full: &str) -> Option<&str> {
        self.0.iter().find(|h| h.is(full)).map(|h| h.value.as_str())
    }

    /// Every value of header `full`, comma-separated lists split into
    /// elements (RFC 3261 §7.3.1), in order.
    pub fn values<'a>(&'a self, full: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| h.is(full))
            .flat_map(|h| split_list(&h.value))
    }

    /// Each header line named `full`, its whole value (not split at
    /// commas: for headers whose values hold a URI, like Refer-To).
    pub fn lines<'a>(&'a self, full: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| h.is(full))
            .map(|h| h.value.as_str())
    }

    pub fn contains(&self, full: &str) -> bool {
        self.0.iter().any(|h| h.is(full))
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push(Header::new(name, value));
    }

    /// Insert before every other header (used for a new top Via).
    pub fn push_front(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(0, Header::new(name, value));
    }

    /// Replace the value of the first header `full`, or append one.
    pub fn set(&mut self, full: &str, value: impl Into<String>) {
        match self.0.iter_mut().find(|h| h.is(full)) {
            Some(h) => h.value = value.into(),
            None => self.push(full, value),
        }
    }

    /// Remove every header `full`.
    pub fn remove(&mut self, full: &str) {
        self.0.retain(|h| !h.is(full));
    }

    /// Remove the first value of header `full` (for a Via list on one line,
    /// only the first element). Returns it.
    pub fn remove_first_value(&mut self, full: &str) -> Option<String> {
        let idx = self.0.iter().position(|h| h.is(full))?;
        let parts = split_list(&self.0[idx].value);
        let first = parts.first()?.to_string();
        if parts.len() <= 1 {
            self.0.remove(idx);
        } else {
            self.0[idx].value = parts[1..].join(", ");
        }
        Some(first)
    }
}

/// Split a header value on top-level commas, ignoring commas inside quoted
/// strings and `<...>` (RFC 3261 §7.3.1). Elements are trimmed; empty
/// elements are dropped.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ',' if !in_quotes && !in_angle => {
                let part = value[start..i].trim();
                if !part.is_empty() {
                    out.push(part);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    let part = value[start..].trim();
    if !part.is_empty() {
        out.push(part);
    }
    out
}

/// `;name=value` parameters as raw text pairs, in order. A quoted value keeps
/// its quotes. Used for Via, From/To and Contact header parameters.
pub fn split_params(s: &str) -> Vec<(&str, Option<&str>)> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    let mut pieces = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => {
                pieces.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&s[start..]);
    for p in pieces {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        match p.split_once('=') {
            Some((k, v)) => out.push((k.trim(), Some(v.trim()))),
            None => out.push((p, None)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_names_expand() {
        assert_eq!(full_name("v"), "Via");
        assert_eq!(full_name("I"), "Call-ID");
        assert!(name_is("m", "contact"));
        assert!(name_is("CSEQ", "CSeq"));
        assert!(!name_is("x", "Contact"));
    }

    #[test]
    fn list_split_respects_quotes_and_angles() {
        let v = r#""Doe, John" <sip:a@b;x=1,2>;q=1, <sip:c@d>"#;
        assert_eq!(
            split_list(v),
            vec![r#""Doe, John" <sip:a@b;x=1,2>;q=1"#, "<sip:c@d>"]
        );
    }

    #[test]
    fn remove_first_value_of_a_folded_list() {
        let mut h = Headers::default();
        h.push(
            "Via",
            "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
        );
        assert_eq!(
            h.remove_first_value("via").unwrap(),
            "SIP/2.0/UDP a;branch=z9hG4bK1"
        );
        assert_eq!(h.get("Via"), Some("SIP/2.0/UDP b;branch=z9hG4bK2"));
    }
}
