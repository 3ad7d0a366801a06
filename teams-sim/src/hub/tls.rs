//! TLS as Direct Routing's hub does it (behaviour §1, cases 1–6 and 16):
//! TLS 1.2 (1.3 only if the hub is set to accept it) with the ECDHE-RSA
//! AES-GCM suites rustls implements of the four Microsoft lists (the two
//! CBC ones rustls does not offer), and the SBC's certificate checked the
//! same way in both directions — as the client certificate on connections
//! the SBC opens and as the server certificate on connections the hub opens:
//!
//! - it chains to a trusted root through the intermediates the SBC sends
//!   (a leaf alone is refused, "full intermediate chain");
//! - it is within its validity period (by the world's clock);
//! - its EKU includes Server Authentication (a clientAuth-only or
//!   EKU-less certificate is refused, even as a client certificate);
//! - its key is RSA 2048 or more (or ECDSA);
//! - toward the SBC, the FQDN is in the CN **or** a SAN, a wildcard
//!   standing for one label (RFC 2818 §3.1).
//!
//! A refusal closes the connection with no SIP answer; which rule was broken
//! is in the error text ([`TlsRule`]) and recorded in the hub's view. A
//! certificate within 30 days of its end is accepted and noted
//! (the Health Dashboard's TLS warning).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};
use sbc::sip::transport::tls::{certificate_dns_names, names_cover, TlsConfigError, TlsIdentity};
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Which of the hub's TLS rules a peer broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsRule {
    /// No suite or version in common (TLS 1.0/1.1, or only suites outside
    /// Microsoft's list: cases 1, 2).
    ProtocolOrSuite(String),
    /// Does not chain to a trusted root (case 3).
    Untrusted,
    /// The chain stops at the leaf: the intermediates were not sent (case 5).
    MissingIntermediate,
    Expired,
    NotYetValid,
    /// The EKU does not include Server Authentication (case 4).
    NoServerAuthEku,
    /// The FQDN is in neither the CN nor a SAN (cases 6, 10).
    NameMismatch {
        fqdn: String,
        names: Vec<String>,
    },
    /// An RSA key under 2048 bits.
    WeakKey {
        bits: usize,
    },
    /// A signature algorithm the hub does not accept (SHA-1, for one).
    BadSignature,
    Other(String),
}

impl fmt::Display for TlsRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsRule::ProtocolOrSuite(e) => write!(f, "no TLS version or suite in common ({e})"),
            TlsRule::Untrusted => write!(f, "certificate does not chain to a trusted root"),
            TlsRule::MissingIntermediate => {
                write!(f, "certificate sent without its intermediate chain")
            }
            TlsRule::Expired => write!(f, "certificate expired"),
            TlsRule::NotYetValid => write!(f, "certificate not yet valid"),
            TlsRule::NoServerAuthEku => {
                write!(f, "certificate EKU does not include Server Authentication")
            }
            TlsRule::NameMismatch { fqdn, names } => {
                write!(
                    f,
                    "certificate names {names:?} cover not {fqdn} (CN or SAN)"
                )
            }
            TlsRule::WeakKey { bits } => write!(f, "certificate key is RSA {bits}, under 2048"),
            TlsRule::BadSignature => write!(f, "certificate signature algorithm not accepted"),
            TlsRule::Other(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TlsRule {}

impl TlsRule {
    /// The rule a refusal's error text names (the verifiers put it there:
    /// rustls shows it as `OtherError(<rule>)`; handshake failures before
    /// them are version or suite mismatches).
    pub fn from_reason(reason: &str) -> TlsRule {
        if let Some(i) = reason.find("OtherError(") {
            let rest = &reason[i + "OtherError(".len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
            let found = match name.as_str() {
                "Untrusted" => Some(TlsRule::Untrusted),
                "MissingIntermediate" => Some(TlsRule::MissingIntermediate),
                "Expired" => Some(TlsRule::Expired),
                "NotYetValid" => Some(TlsRule::NotYetValid),
                "NoServerAuthEku" => Some(TlsRule::NoServerAuthEku),
                "BadSignature" => Some(TlsRule::BadSignature),
                "NameMismatch" => Some(TlsRule::NameMismatch {
                    fqdn: String::new(),
                    names: Vec::new(),
                }),
                "WeakKey" => {
                    let bits = rest
                        .split(|c: char| !c.is_ascii_digit())
                        .find(|x| !x.is_empty())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    Some(TlsRule::WeakKey { bits })
                }
                _ => None,
            };
            if let Some(r) = found {
                return r;
            }
        }
        let candidates = [
            TlsRule::MissingIntermediate,
            TlsRule::Untrusted,
            TlsRule::Expired,
            TlsRule::NotYetValid,
            TlsRule::NoServerAuthEku,
            TlsRule::BadSignature,
        ];
        for c in candidates {
            if reason.contains(&c.to_string()) {
                return c;
            }
        }
        if reason.contains("cover not") {
            return TlsRule::NameMismatch {
                fqdn: String::new(),
                names: Vec::new(),
            };
        }
        if let Some(i) = reason.find("key is RSA ") {
            let bits = reason[i + 11..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            return TlsRule::WeakKey { bits };
        }
        let l = reason.to_ascii_lowercase();
        if l.contains("ciphersuite") || l.contains("version") || l.contains("incompatible") {
            return TlsRule::ProtocolOrSuite(reason.to_string());
        }
        TlsRule::Other(reason.to_string())
    }

    fn into_error(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(self))))
    }
}

/// The hub's TLS settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubTls {
    /// Accept TLS 1.3 besides 1.2. The sources require 1.2 and list 1.2
    /// suites; KB-TLS says "1.2 or higher". Off by default: the lab then
    /// exercises the documented ECDHE-RSA suites.
    pub tls13: bool,
    /// How long before a certificate's end the hub warns (30 days).
    pub warn_days: u64,
}

impl Default for HubTls {
    fn default() -> Self {
        HubTls {
            tls13: false,
            warn_days: 30,
        }
    }
}

/// SBC certificates the hub noticed: expiring ones, by name, with days left.
#[derive(Debug, Clone, Default)]
pub struct TlsNotes {
    pub expiring: VecDeque<(Vec<String>, u64)>,
}

pub type SharedTlsNotes = Arc<Mutex<TlsNotes>>;

/// The provider: ring, with the suites of Microsoft's list that rustls has.
fn hub_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
static TLS12_AND_13: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS12, &rustls::version::TLS13];

fn versions(tls: &HubTls) -> &'static [&'static rustls::SupportedProtocolVersion] {
    if tls.tls13 {
        &TLS12_AND_13
    } else {
        &TLS12_ONLY
    }
}

/// The checks on an SBC certificate, shared by both directions.
#[derive(Debug)]
struct SbcCertificateRules {
    roots: Arc<RootCertStore>,
    /// Intermediates the hub knows (those of its own chain): a leaf they
    /// issued, sent alone, was sent without its chain. Any other unknown
    /// issuer is an untrusted root. Diagnosis only: trust is the roots'.
    known_intermediates: Vec<Vec<u8>>,
    hints: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
    notes: SharedTlsNotes,
    warn_days: u64,
}

impl SbcCertificateRules {
    fn new(
        root_certs: &[CertificateDer<'static>],
        own_chain: &[CertificateDer<'static>],
        tls: &HubTls,
        notes: SharedTlsNotes,
    ) -> Result<Self, TlsConfigError> {
        let roots = sbc::sip::transport::tls::roots(root_certs)?;
        let known_intermediates = own_chain
            .iter()
            .skip(1)
            .filter_map(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok())
            .map(|(_, x)| x.subject().as_raw().to_vec())
            .collect();
        let hints = roots.subjects();
        Ok(SbcCertificateRules {
            roots,
            known_intermediates,
            hints,
            provider: hub_provider(),
            notes,
            warn_days: tls.warn_days,
        })
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        fqdn: Option<&str>,
        now: UnixTime,
    ) -> Result<(), TlsRule> {
        let (_, x509) = x509_parser::parse_x509_certificate(end_entity.as_ref())
            .map_err(|e| TlsRule::Other(format!("unreadable certificate: {e}")))?;
        if let Ok(x509_parser::public_key::PublicKey::RSA(k)) = x509.public_key().parsed() {
            let bits = k.key_size();
            if bits < 2048 {
                return Err(TlsRule::WeakKey { bits });
            }
        }
        let parsed =
            ParsedCertificate::try_from(end_entity).map_err(|e| TlsRule::Other(e.to_string()))?;
        let algs = self.provider.signature_verification_algorithms.all;
        if let Err(e) = rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            algs,
        ) {
            return Err(self.classify(e, &x509, intermediates));
        }
        // webpki takes a certificate without EKU as fit for any purpose;
        // Microsoft wants one "that includes Server Authentication".
        let server_auth =
            matches!(x509.extended_key_usage(), Ok(Some(eku)) if eku.value.server_auth);
        if !server_auth {
            return Err(TlsRule::NoServerAuthEku);
        }
        let names = certificate_dns_names(end_entity);
        if let Some(fqdn) = fqdn {
            if !names_cover(&names, fqdn) {
                return Err(TlsRule::NameMismatch {
                    fqdn: fqdn.to_string(),
                    names,
                });
            }
        }
        let left = x509.validity().not_after.timestamp() - now.as_secs() as i64;
        if left >= 0 && (left as u64) < self.warn_days * 86_400 {
            if let Ok(mut n) = self.notes.lock() {
                n.expiring.push_back((names, left as u64 / 86_400));
                if n.expiring.len() > 64 {
                    n.expiring.pop_front();
                }
            }
        }
        Ok(())
    }

    fn classify(
        &self,
        e: rustls::Error,
        leaf: &x509_parser::certificate::X509Certificate<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> TlsRule {
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsRule::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    TlsRule::NotYetValid
                }
                CertificateError::UnknownIssuer => {
                    // A leaf issued by a known intermediate nobody sent.
                    let known = self
                        .known_intermediates
                        .iter()
                        .any(|s| s == leaf.issuer().as_raw());
                    if intermediates.is_empty() && known {
                        TlsRule::MissingIntermediate
                    } else {
                        TlsRule::Untrusted
                    }
                }
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => TlsRule::NoServerAuthEku,
                CertificateError::BadSignature
                | CertificateError::UnsupportedSignatureAlgorithmContext { .. } => {
                    TlsRule::BadSignature
                }
                other => TlsRule::Other(format!("{other:?}")),
            },
            other => TlsRule::Other(other.to_string()),
        }
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The SBC's certificate on connections the SBC opens.
#[derive(Debug)]
struct SbcClientVerifier(SbcCertificateRules);

impl ClientCertVerifier for SbcClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.0.hints
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The tenant's FQDN is matched later, against Contact (behaviour §1).
        self.0
            .check(end_entity, intermediates, None, now)
            .map(|_| ClientCertVerified::assertion())
            .map_err(TlsRule::into_error)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

/// The SBC's certificate on connections the hub opens.
#[derive(Debug)]
struct SbcServerVerifier(SbcCertificateRules);

impl ServerCertVerifier for SbcServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fqdn = match server_name {
            ServerName::DnsName(n) => n.as_ref().to_string(),
            other => format!("{other:?}"),
        };
        self.0
            .check(end_entity, intermediates, Some(&fqdn), now)
            .map(|_| ServerCertVerified::assertion())
            .map_err(TlsRule::into_error)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

/// The hub's TLS configurations: as a server (SBCs connect to it) and as
/// a client (it connects to SBCs), presenting `identity`, judging SBC
/// certificates against `roots`, reading the clock from `time`.
pub fn hub_configs(
    identity: &TlsIdentity,
    roots: &[CertificateDer<'static>],
    tls: &HubTls,
    notes: SharedTlsNotes,
    time: Arc<dyn rustls::time_provider::TimeProvider>,
) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), TlsConfigError> {
    let e = |what: &str, err: rustls::Error| TlsConfigError(format!("{what}: {err}"));
    let server = rustls::ServerConfig::builder_with_details(hub_provider(), time.clone())
        .with_protocol_versions(versions(tls))
        .map_err(|x| e("versions", x))?
        .with_client_cert_verifier(Arc::new(SbcClientVerifier(SbcCertificateRules::new(
            roots,
            &identity.chain,
            tls,
            notes.clone(),
        )?)))
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|x| e("hub certificate", x))?;
    let client =
        rustls::ClientConfig::builder_with_details(hub_provider(), time)
            .with_protocol_versions(versions(tls))
            .map_err(|x| e("versions", x))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SbcServerVerifier(
                SbcCertificateRules::new(roots, &identity.chain, tls, notes)?,
            )))
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|x| e("hub certificate", x))?;
    Ok((Arc::new(server), Arc::new(client)))
}
