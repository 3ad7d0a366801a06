//! URIs: `sip:`/`sips:` read through rsip, `tel:` (RFC 3966) read here
//! because rsip refuses it.
//!
//! A URI is only ever *read* into these types; messages keep the original
//! text, so a value rsip would mangle (Teams' `x-c=<hex>/d/8/<hex>` Contact
//! parameter is cut at the first `/` by rsip's typed form) is still forwarded
//! byte-exact.

use super::error::WireError;

/// A `tel:` URI (RFC 3966): a global (`+` E.164) or local number and its
/// parameters (`;phone-context=`, `;ext=`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri {
    pub number: String,
    pub params: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Sip(rsip::Uri),
    Tel(TelUri),
}

/// The name rsip reads in place of an IPv6 reference (RFC 2606 `.invalid`).
const V6_STAND_IN: &str = "ipv6-reference.invalid";

/// Where the host of a `sip:`/`sips:` URI is an IPv6 reference: the byte
/// range of `[...]` and the address inside. Delimiters are ASCII, so every
/// index found is a char boundary.
fn ipv6_reference(text: &str) -> Option<(usize, usize, &str)> {
    let after_scheme = text.find(':')? + 1;
    let rest = &text[after_scheme..];
    // The host follows the userinfo's `@`, if any, before any parameter.
    let hostport_at = match rest.find(['@', ';', '?']) {
        Some(i) if rest.as_bytes()[i] == b'@' => after_scheme + i + 1,
        _ => after_scheme,
    };
    let open = hostport_at;
    if text.as_bytes().get(open) != Some(&b'[') {
        return None;
    }
    let close = open + text[open..].find(']')?;
    Some((open, close + 1, &text[open + 1..close]))
}

impl Uri {
    pub fn parse(text: &str) -> Result<Uri, WireError> {
        let bad = |reason: String| WireError::BadUri {
            uri: text.to_string(),
            reason,
        };
        let text = text.trim();
        let lower = text.get(..4).map(|s| s.to_ascii_lowercase());
        if lower.as_deref() == Some("tel:") {
            let rest = &text[4..];
            let mut parts = rest.split(';');
            let number = parts.next().unwrap_or_default();
            let digits = number.strip_prefix('+').unwrap_or(number);
            if digits.is_empty()
                || !digits
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || "*#-.()".contains(c))
            {
                return Err(bad(
                    "tel: number has characters outside RFC 3966 phonedigits".into(),
                ));
            }
            let params = parts
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (p.to_string(), None),
                })
                .collect();
            return Ok(Uri::Tel(TelUri {
                number: number.to_string(),
                params,
            }));
        }
        // `get` rather than `[..n]`: byte n may fall inside a multibyte
        // character of hostile input, and slicing there panics.
        let has_scheme = |scheme: &str| {
            text.get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        };
        let scheme_ok = text.len() > 4 && (has_scheme("sip:") || has_scheme("sips:"));
        if !scheme_ok {
            return Err(bad("scheme is neither sip:, sips: nor tel:".into()));
        }
        // RFC 5118 §4.1: an IPv6 reference `[2001:db8::1]` as the host.
        // rsip 0.4 cannot read one (a well-formed request was answered 416:
        // found by tests/hostile_input.rs), so the reference is checked
        // here, rsip reads the URI with a stand-in name, and the address
        // is put back into the typed form.
        let (text_for_rsip, v6) = match ipv6_reference(text) {
            Some((at, end, addr)) => {
                let addr = addr
                    .parse::<std::net::Ipv6Addr>()
                    .map_err(|e| bad(format!("IPv6 reference [{addr}]: {e}")))?;
                (
                    format!("{}{V6_STAND_IN}{}", &text[..at], &text[end..]),
                    Some(addr),
                )
            }
            None => (text.to_string(), None),
        };
        let mut uri =
            rsip::Uri::try_from(text_for_rsip.as_str()).map_err(|e| bad(e.to_string()))?;
        if let Some(addr) = v6 {
            uri.host_with_port.host = rsip::Host::IpAddr(std::net::IpAddr::V6(addr));
        }
        if uri.host_with_port.to_string().is_empty() {
            return Err(bad("no host".into()));
        }
        Ok(Uri::Sip(uri))
    }

    /// The user part of a SIP URI, or the number of a tel URI.
    pub fn user(&self) -> Option<&str> {
        match self {
            Uri::Sip(u) => u.user(),
            Uri::Tel(t) => Some(&t.number),
        }
    }

    /// The host of a SIP URI as text (domain or IP).
    pub fn host(&self) -> Option<String> {
        match self {
            Uri::Sip(u) => Some(u.host().to_string()),
            Uri::Tel(_) => None,
        }
    }

    /// Whether the host is an IP address rather than a domain name.
    pub fn host_is_ip(&self) -> bool {
        matches!(self, Uri::Sip(u) if matches!(u.host(), rsip::Host::IpAddr(_)))
    }

    pub fn port(&self) -> Option<u16> {
        match self {
            Uri::Sip(u) => u.port().map(|p| *p.value()),
            Uri::Tel(_) => None,
        }
    }

    /// A URI parameter (`user`, `transport`, or any other) by name.
    pub fn param(&self, name: &str) -> Option<Option<String>> {
        match self {
            Uri::Sip(u) => u.params.iter().find_map(|p| {
                let text = p.to_string();
                let text = text.strip_prefix(';').unwrap_or(&text);
                let (k, v) = match text.split_once('=') {
                    Some((k, v)) => (k, Some(v.to_string())),
                    None => (text, None),
                };
                k.eq_ignore_ascii_case(name).then_some(v)
            }),
            Uri::Tel(t) => t
                .params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5118 §4.1 IPv6 references, with and without a user part, port
    /// and parameters; a malformed reference is refused naming it.
    #[test]
    fn ipv6_references_are_read() {
        let u = Uri::parse("sip:[2001:db8::1]:5060;transport=udp").unwrap();
        assert_eq!(u.port(), Some(5060));
        assert!(u
            .param("transport")
            .flatten()
            .is_some_and(|t| t.eq_ignore_ascii_case("udp")));
        let Uri::Sip(sip) = &u else {
            panic!("a sip: URI")
        };
        assert_eq!(
            sip.host_with_port.host,
            rsip::Host::IpAddr("2001:db8::1".parse().unwrap())
        );
        let u = Uri::parse("sips:alice@[2001:db8::10]").unwrap();
        assert_eq!(u.user(), Some("alice"));
        assert_eq!(u.port(), None);
        let e = Uri::parse("sip:[2001:db8::zz]:5060").unwrap_err();
        assert!(e.to_string().contains("IPv6 reference"), "{e}");
        // No closing bracket: not an IPv6 reference, and rsip refuses it.
        assert!(Uri::parse("sip:[2001:db8::1").is_err());
    }

    #[test]
    fn sip_uri_parts() {
        let u =
            Uri::parse("sip:+4989000001@sip.pstnhub.microsoft.com:5061;user=phone;transport=tls")
                .unwrap();
        assert_eq!(u.user(), Some("+4989000001"));
        assert_eq!(u.host().as_deref(), Some("sip.pstnhub.microsoft.com"));
        assert_eq!(u.port(), Some(5061));
        assert_eq!(u.param("user"), Some(Some("phone".into())));
        assert!(!u.host_is_ip());
        assert!(Uri::parse("sip:10.0.0.1:5061").unwrap().host_is_ip());
    }

    #[test]
    fn tel_uri_is_read_where_rsip_refuses_it() {
        let u = Uri::parse("tel:+4930123456;ext=12").unwrap();
        assert_eq!(u.user(), Some("+4930123456"));
        assert_eq!(u.param("ext"), Some(Some("12".into())));
        assert!(Uri::parse("tel:hello").is_err());
    }

    #[test]
    fn a_multibyte_character_across_the_scheme_is_an_error_not_a_panic() {
        // 'é' is two bytes: byte 4 falls inside it.
        for text in [
            "sip\u{e9}x@h",
            "si\u{e9}:x@h",
            "\u{20ac}\u{20ac}",
            "sip:\u{e9}@h\u{e9}",
        ] {
            let _ = Uri::parse(text);
        }
        assert!(Uri::parse("sip\u{e9}x@h").is_err());
    }

    #[test]
    fn unknown_scheme_is_refused() {
        assert!(matches!(
            Uri::parse("http://x"),
            Err(WireError::BadUri { .. })
        ));
    }
}
