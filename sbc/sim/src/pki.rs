//! A test PKI on rcgen: a trusted root and intermediate, an untrusted root,
//! and leaves for the hub and SBCs, good or deliberately broken.
//!
//! Keys are ECDSA P-256 (ring cannot generate RSA keys). Key generation uses
//! the OS RNG: key bytes never reach a trace (traces hold decrypted SIP), so
//! runs stay reproducible.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sbc::direct_routing::HUB_FQDNS;
use sbc::sip::transport::tls::TlsIdentity;
use std::fmt;

#[derive(Debug)]
pub struct PkiError(pub String);

impl fmt::Display for PkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "test PKI: {}", self.0)
    }
}

impl std::error::Error for PkiError {}

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        PkiError(e.to_string())
    }
}

/// Which extended key usages a leaf carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eku {
    /// serverAuth and clientAuth: what public CAs issue to SBCs.
    ServerAndClient,
    /// clientAuth only: refused where a server certificate is checked.
    ClientOnly,
}

/// What is wrong (or not) with a leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    pub names: Vec<String>,
    pub eku: Eku,
    /// `not_after` in 2001: rustls checks validity against the real clock.
    pub expired: bool,
    /// Issued by a root nobody trusts.
    pub untrusted: bool,
    /// Send the intermediate with the leaf (the hub requires the full chain).
    pub with_intermediate: bool,
}

impl LeafSpec {
    pub fn good(names: &[&str]) -> Self {
        LeafSpec {
            names: names.iter().map(|s| s.to_string()).collect(),
            eku: Eku::ServerAndClient,
            expired: false,
            untrusted: false,
            with_intermediate: true,
        }
    }
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str, parent: Option<&Ca>) -> Result<Ca, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "drlab test PKI");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = match parent {
            Some(p) => params.signed_by(&key, &p.issuer)?,
            None => params.self_signed(&key)?,
        };
        Ok(Ca {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }
}

pub struct TestPki {
    root: Ca,
    intermediate: Ca,
    untrusted_root: Ca,
}

impl fmt::Debug for TestPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TestPki")
    }
}

impl TestPki {
    pub fn new() -> Result<TestPki, PkiError> {
        let root = Ca::new("drlab Test Root CA", None)?;
        let intermediate = Ca::new("drlab Test Issuing CA", Some(&root))?;
        let untrusted_root = Ca::new("Untrusted Root CA", None)?;
        Ok(TestPki {
            root,
            intermediate,
            untrusted_root,
        })
    }

    /// The trust anchor every party of the lab trusts.
    pub fn root(&self) -> CertificateDer<'static> {
        self.root.der.clone()
    }

    pub fn leaf(&self, spec: &LeafSpec) -> Result<TlsIdentity, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(spec.names.clone())?;
        if let Some(cn) = spec.names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, cn.as_str());
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match spec.eku {
            Eku::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Eku::ClientOnly => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        if spec.expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let issuer = if spec.untrusted {
            &self.untrusted_root
        } else {
            &self.intermediate
        };
        let cert = params.signed_by(&key, &issuer.issuer)?;
        let mut chain = vec![cert.der().clone()];
        if spec.with_intermediate && !spec.untrusted {
            chain.push(self.intermediate.der.clone());
        }
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(TlsIdentity { chain, key })
    }

    /// A good certificate for `names`.
    pub fn good(&self, names: &[&str]) -> Result<TlsIdentity, PkiError> {
        self.leaf(&LeafSpec::good(names))
    }

    /// The hub's certificate: all three proxy names.
    pub fn hub(&self) -> Result<TlsIdentity, PkiError> {
        self.good(&HUB_FQDNS)
    }
}

/// PEM text for one DER object (RFC 7468).
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl TestPki {
    /// Write a lab's files into `dir`: `ca.pem` (the root), `<fqdn>.pem` and
    /// `<fqdn>.key` for the SBC, `hub.pem` and `hub.key` for the hub's
    /// proxies. For running the binaries against each other on real sockets.
    pub fn write_pem(&self, dir: &std::path::Path, sbc_fqdn: &str) -> std::io::Result<()> {
        let write_identity = |name: &str, id: &TlsIdentity| -> std::io::Result<()> {
            let chain: String = id
                .chain
                .iter()
                .map(|c| pem("CERTIFICATE", c.as_ref()))
                .collect();
            std::fs::write(dir.join(format!("{name}.pem")), chain)?;
            std::fs::write(
                dir.join(format!("{name}.key")),
                pem("PRIVATE KEY", id.key.secret_der()),
            )
        };
        let other = |e: PkiError| std::io::Error::other(e.to_string());
        std::fs::write(dir.join("ca.pem"), pem("CERTIFICATE", self.root().as_ref()))?;
        write_identity(sbc_fqdn, &self.good(&[sbc_fqdn]).map_err(other)?)?;
        write_identity("hub", &self.hub().map_err(other)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sbc::sip::transport::tls::certificate_dns_names;

    #[test]
    fn leaves_carry_their_names_and_chain() {
        let pki = TestPki::new().unwrap();
        let id = pki
            .good(&["sbc.example.com", "*.customers.example.com"])
            .unwrap();
        assert_eq!(id.chain.len(), 2);
        assert_eq!(
            certificate_dns_names(&id.chain[0]),
            vec!["sbc.example.com", "*.customers.example.com"]
        );
        let untrusted = pki
            .leaf(&LeafSpec {
                untrusted: true,
                ..LeafSpec::good(&["x.example.com"])
            })
            .unwrap();
        assert_eq!(untrusted.chain.len(), 1);
    }
}
