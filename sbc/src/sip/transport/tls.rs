//! TLS for SIP (RFC 3261 §26.2, RFC 5630), on rustls 0.23 with the `ring`
//! provider chosen explicitly (with aws-lc-rs also in a dependency graph,
//! rustls' default `builder()` panics).
//!
//! Both directions are mutual: Direct Routing's hub asks the SBC for its
//! certificate on connections the SBC opens, and checks the SBC's server
//! certificate on connections the hub opens.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::fmt;
use std::sync::Arc;

/// A certificate chain (leaf first, then intermediates) and its key.
#[derive(Debug)]
pub struct TlsIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// A TLS configuration problem, found at start rather than on first call.
#[derive(Debug)]
pub struct TlsConfigError(pub String);

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS configuration: {}", self.0)
    }
}

impl std::error::Error for TlsConfigError {}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Trust anchors from DER certificates.
pub fn roots(certs: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsConfigError> {
    let mut store = RootCertStore::empty();
    for c in certs {
        store
            .add(c.clone())
            .map_err(|e| TlsConfigError(format!("bad root certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

/// A server that presents `identity` and requires a client certificate
/// chaining to `client_roots`.
pub fn server_config(
    identity: &TlsIdentity,
    client_roots: Arc<RootCertStore>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    server_config_at(
        identity,
        client_roots,
        Arc::new(rustls::time_provider::DefaultTimeProvider),
    )
}

/// [`server_config`] judging certificate validity by `time` (a simulated
/// world passes its own clock, [`SimulatedClock`]).
pub fn server_config_at(
    identity: &TlsIdentity,
    client_roots: Arc<RootCertStore>,
    time: Arc<dyn rustls::time_provider::TimeProvider>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(client_roots, provider())
        .build()
        .map_err(|e| TlsConfigError(format!("client verifier: {e}")))?;
    let config = ServerConfig::builder_with_details(provider(), time)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| TlsConfigError(format!("server certificate: {e}")))?;
    Ok(Arc::new(config))
}

/// A client that checks the server against `roots` and presents `identity`.
pub fn client_config(
    identity: &TlsIdentity,
    roots: Arc<RootCertStore>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    client_config_at(
        identity,
        roots,
        Arc::new(rustls::time_provider::DefaultTimeProvider),
    )
}

/// [`client_config`] judging certificate validity by `time`.
pub fn client_config_at(
    identity: &TlsIdentity,
    roots: Arc<RootCertStore>,
    time: Arc<dyn rustls::time_provider::TimeProvider>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let config = ClientConfig::builder_with_details(provider(), time)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| TlsConfigError(format!("client certificate: {e}")))?;
    Ok(Arc::new(config))
}

pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsConfigError> {
    ServerName::try_from(host.to_string())
        .map_err(|e| TlsConfigError(format!("{host:?} is not a valid server name: {e}")))
}

/// The names a certificate is issued for: its SAN dNSName entries and its
/// subject CN. Direct Routing accepts the SBC's FQDN "in the CN or a SAN"
/// (behaviour §1), so both count, not RFC 6125's SAN-else-CN.
pub fn certificate_dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for gn in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = gn {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    for cn in x509.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            let s = s.to_ascii_lowercase();
            if !names.contains(&s) {
                names.push(s);
            }
        }
    }
    names
}

/// Simulated wall time for certificate validity: the world's epoch plus
/// turmoil's elapsed time, so that a scenario judges certificates by the
/// same clock as everything else (rustls would read the OS clock). Outside
/// a simulation it reads the OS clock.
#[derive(Debug, Clone, Copy)]
pub struct SimulatedClock {
    pub epoch_secs: u64,
}

impl rustls::time_provider::TimeProvider for SimulatedClock {
    #[allow(clippy::disallowed_methods)] // outside a simulation only
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        let secs = match turmoil::sim_elapsed() {
            Some(e) => self.epoch_secs + e.as_secs(),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs(),
        };
        Some(rustls::pki_types::UnixTime::since_unix_epoch(
            std::time::Duration::from_secs(secs),
        ))
    }
}

/// Whether a certificate name covers `fqdn` (RFC 2818 §3.1, RFC 6125
/// §6.4.3): exact, or a `*.` wildcard that stands for exactly one label.
pub fn name_matches(cert_name: &str, fqdn: &str) -> bool {
    let fqdn = fqdn.trim_end_matches('.').to_ascii_lowercase();
    let cert_name = cert_name.to_ascii_lowercase();
    match cert_name.strip_prefix("*.") {
        Some(suffix) => match fqdn.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest == suffix,
            None => false,
        },
        None => cert_name == fqdn,
    }
}

/// Whether any of `names` covers `fqdn`.
pub fn names_cover(names: &[String], fqdn: &str) -> bool {
    names.iter().any(|n| name_matches(n, fqdn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_exactly_one_label() {
        assert!(name_matches("*.contoso.com", "sbc1.contoso.com"));
        assert!(!name_matches("*.contoso.com", "a.sbc1.contoso.com"));
        assert!(!name_matches("*.contoso.com", "contoso.com"));
        assert!(name_matches("SBC.example.com", "sbc.example.com."));
        assert!(!name_matches("sbc.example.com", "sbc2.example.com"));
    }
}
