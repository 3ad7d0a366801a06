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
        .with_client_cert_verifier(Arc::new(eku::RequireEku(verifier)))
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
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsConfigError(format!("server verifier: {e}")))?;
    let config = ClientConfig::builder_with_details(provider(), time)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(eku::RequireEku(verifier)))
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| TlsConfigError(format!("client certificate: {e}")))?;
    Ok(Arc::new(config))
}

/// webpki takes a certificate without an extended key usage extension as
/// fit for any purpose (RFC 5280 §4.2.1.12). Direct Routing certificates
/// carry one (serverAuth, behaviour §1) and the hub refuses an SBC
/// certificate without it; the SBC holds the hub to the same rule. Where
/// the extension is present webpki has already checked its purpose.
mod eku {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
    use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
    use std::sync::Arc;

    #[derive(Debug)]
    pub(super) struct RequireEku<V: ?Sized>(pub Arc<V>);

    #[derive(Debug)]
    struct NoEku(String);

    impl std::fmt::Display for NoEku {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for NoEku {}

    fn has_eku(cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let why = match x509_parser::parse_x509_certificate(cert.as_ref()) {
            Ok((_, c)) => match c.extended_key_usage() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => "certificate has no extended key usage (EKU): a Direct Routing certificate lists serverAuth".to_string(),
                Err(e) => format!("certificate's extended key usage unreadable: {e}"),
            },
            Err(e) => format!("certificate unreadable: {e}"),
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(NoEku(why))),
        )))
    }

    impl<V: ServerCertVerifier> ServerCertVerifier for RequireEku<V> {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let ok = self.0.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            )?;
            has_eku(end_entity)?;
            Ok(ok)
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    impl<V: ClientCertVerifier + ?Sized> ClientCertVerifier for RequireEku<V> {
        fn offer_client_auth(&self) -> bool {
            self.0.offer_client_auth()
        }

        fn client_auth_mandatory(&self) -> bool {
            self.0.client_auth_mandatory()
        }

        fn root_hint_subjects(&self) -> &[DistinguishedName] {
            self.0.root_hint_subjects()
        }

        fn verify_client_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            now: UnixTime,
        ) -> Result<ClientCertVerified, rustls::Error> {
            let ok = self.0.verify_client_cert(end_entity, intermediates, now)?;
            has_eku(end_entity)?;
            Ok(ok)
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}

/// A handshake error as rustls words it, with the rule it breaks in plain
/// words where rustls names only a symptom (a log line must say why).
pub fn explain(error: &str) -> String {
    let rule = [
        (
            "BadSignature",
            "a signature that does not verify: an RSA key below 2048 bits, or a forged certificate",
        ),
        (
            "UnsupportedSignatureAlgorithm",
            "a signature algorithm not accepted (SHA-1 or MD5 is refused)",
        ),
        (
            "SignatureAlgorithmsExtensionRequired",
            "the peer offers only TLS 1.0/1.1: protocol version too old, TLS 1.2 is required",
        ),
        (
            "Tls12NotOffered",
            "the peer offers no TLS 1.2; TLS 1.2 is required",
        ),
        (
            "InvalidContentType",
            "not TLS at all (cleartext SIP on the TLS port?)",
        ),
        (
            "UnknownIssuer",
            "the chain does not reach a trusted root (or its intermediate was not sent)",
        ),
        ("NoCipherSuitesInCommon", "no cipher suite in common"),
    ]
    .iter()
    .find(|(symptom, _)| error.contains(symptom))
    .map(|(_, rule)| *rule);
    match rule {
        Some(rule) => format!("{error} ({rule})"),
        None => error.to_string(),
    }
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

    #[test]
    fn handshake_errors_gain_the_rule_they_break() {
        assert_eq!(
            explain("invalid peer certificate: BadSignature"),
            "invalid peer certificate: BadSignature (a signature that does not verify: an RSA key below 2048 bits, or a forged certificate)"
        );
        assert!(
            explain("peer is incompatible: SignatureAlgorithmsExtensionRequired").ends_with(
                "(the peer offers only TLS 1.0/1.1: protocol version too old, TLS 1.2 is required)"
            )
        );
        assert!(
            explain("received corrupt message of type InvalidContentType")
                .contains("cleartext SIP on the TLS port")
        );
        // What rustls words well enough is left as it is.
        assert_eq!(
            explain("peer sent no certificates"),
            "peer sent no certificates"
        );
    }
}
