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
    let verifier = WebPkiClientVerifier::builder_with_provider(client_roots, provider())
        .build()
        .map_err(|e| TlsConfigError(format!("client verifier: {e}")))?;
    let config = ServerConfig::builder_with_provider(provider())
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
    let config = ClientConfig::builder_with_provider(provider())
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

/// The DNS names a certificate is issued for: SAN dNSName entries, or the
/// subject CN when there are none (RFC 6125 §6.4.4).
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
    if names.is_empty() {
        for cn in x509.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    names
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
