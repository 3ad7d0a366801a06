//! Where a URI sends a request: names resolved once, at start, into a
//! table, so that no protocol decision waits on DNS (DESIGN.md: sans-IO).
//!
//! The next hop of a request is a SIP URI (the first Route, or the
//! Request-URI: RFC 3261 §8.1.2, §12.2.1.1). Its transport comes from the
//! `transport` parameter (UDP by default, TLS for `sips:`), its port from
//! the URI or the transport's default (5060, 5061 for TLS), and its address
//! from the table, or from the URI itself when the host is an IP literal.
//! DNS NAPTR/SRV (RFC 3263) is not done: every name a role needs is
//! configured or belongs to the simulated world.

use crate::sip::transport::{Target, TransportKind};
use crate::sip::wire::Uri;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Host name → address, lower-cased names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    hosts: BTreeMap<String, IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The URI does not parse or is not a SIP URI.
    BadUri {
        uri: String,
        reason: String,
    },
    /// A host name that was not resolved at start.
    UnknownHost {
        host: String,
    },
    UnsupportedTransport {
        uri: String,
        transport: String,
    },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::BadUri { uri, reason } => write!(f, "cannot route to {uri}: {reason}"),
            RouteError::UnknownHost { host } => {
                write!(f, "no address for {host} (names are resolved at start)")
            }
            RouteError::UnsupportedTransport { uri, transport } => {
                write!(
                    f,
                    "cannot route to {uri}: transport {transport} is not supported"
                )
            }
        }
    }
}

impl std::error::Error for RouteError {}

impl RoutingTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, host: &str, ip: IpAddr) {
        self.hosts.insert(host.to_ascii_lowercase(), ip);
    }

    /// The address of `host`: an IP literal (bracketed IPv6 too) or a name in the table.
    pub fn address(&self, host: &str) -> Result<IpAddr, RouteError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(ip);
        }
        self.hosts
            .get(&host.to_ascii_lowercase())
            .copied()
            .ok_or_else(|| RouteError::UnknownHost {
                host: host.to_string(),
            })
    }

    /// A target for `host:port` over `transport` (TLS checks the server
    /// certificate against `host`).
    pub fn target(
        &self,
        transport: TransportKind,
        host: &str,
        port: u16,
    ) -> Result<Target, RouteError> {
        let ip = self.address(host)?;
        let is_name = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_err();
        Ok(Target {
            transport,
            addr: SocketAddr::new(ip, port),
            server_name: (transport == TransportKind::Tls && is_name).then(|| host.to_string()),
        })
    }

    /// The target a request to `uri` goes to (the URI of a Route header or
    /// a Request-URI; a name-addr's `<...>` is accepted too).
    pub fn target_for_uri(&self, uri: &str) -> Result<Target, RouteError> {
        let text = uri.trim();
        let text = match (text.find('<'), text.rfind('>')) {
            (Some(a), Some(b)) if a < b => &text[a + 1..b],
            _ => text,
        };
        let bad = |reason: String| RouteError::BadUri {
            uri: text.to_string(),
            reason,
        };
        let parsed = Uri::parse(text).map_err(|e| bad(e.to_string()))?;
        let host = parsed.host().ok_or_else(|| bad("no host".into()))?;
        let sips = text
            .get(..5)
            .is_some_and(|s| s.eq_ignore_ascii_case("sips:"));
        let transport = match parsed.param("transport").flatten() {
            Some(t) if t.eq_ignore_ascii_case("udp") => TransportKind::Udp,
            Some(t) if t.eq_ignore_ascii_case("tcp") && sips => TransportKind::Tls,
            Some(t) if t.eq_ignore_ascii_case("tcp") => TransportKind::Tcp,
            Some(t) if t.eq_ignore_ascii_case("tls") => TransportKind::Tls,
            Some(t) => {
                return Err(RouteError::UnsupportedTransport {
                    uri: text.to_string(),
                    transport: t,
                })
            }
            None if sips => TransportKind::Tls,
            None => TransportKind::Udp,
        };
        let port = parsed.port().unwrap_or(match transport {
            TransportKind::Tls => 5061,
            _ => 5060,
        });
        self.target(transport, &host, port)
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RoutingTable {
        let mut t = RoutingTable::new();
        t.insert("SIP.pstnhub.microsoft.com", "192.0.2.1".parse().unwrap());
        t
    }

    #[test]
    fn transport_and_port_come_from_the_uri() {
        let t = table();
        let hub = t
            .target_for_uri("<sip:sip.pstnhub.microsoft.com:5061;transport=tls;lr>")
            .unwrap();
        assert_eq!(hub.transport, TransportKind::Tls);
        assert_eq!(hub.addr, "192.0.2.1:5061".parse().unwrap());
        assert_eq!(
            hub.server_name.as_deref(),
            Some("sip.pstnhub.microsoft.com")
        );
        let carrier = t.target_for_uri("sip:030123456@198.51.100.7:5070").unwrap();
        assert_eq!(carrier.transport, TransportKind::Udp);
        assert_eq!(carrier.addr, "198.51.100.7:5070".parse().unwrap());
        assert_eq!(carrier.server_name, None);
        let tls_default = t.target_for_uri("sips:sip.pstnhub.microsoft.com").unwrap();
        assert_eq!(tls_default.addr.port(), 5061);
    }

    #[test]
    fn an_unresolved_name_is_an_error_not_a_lookup() {
        assert_eq!(
            table().target_for_uri("sip:elsewhere.example.com"),
            Err(RouteError::UnknownHost {
                host: "elsewhere.example.com".into()
            })
        );
        assert!(table().target_for_uri("sip:a@h;transport=sctp").is_err());
        assert!(table().target_for_uri("tel:+4930123456").is_err());
    }
}
