//! A test PKI on rcgen: a trusted root and intermediate, an untrusted root,
//! and leaves for the hub and SBCs, good or broken in each of the ways
//! Direct Routing's TLS rules name (behaviour §1, cases 1–6 and 16).
//!
//! Keys are RSA 2048 by default, like the certificates public CAs issue to
//! SBCs: the hub offers only ECDHE-RSA suites. ring signs with RSA but
//! cannot generate RSA keys, so they come from `sbc/sim/keys/` (lab-only
//! keys, committed; see the README there). ECDSA P-256 is an option
//! ([`KeyKind::EcdsaP256`]), generated fresh. Key bytes never reach a
//! trace (traces hold decrypted SIP), so runs stay reproducible either way.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SubjectPublicKeyInfo,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sbc::direct_routing::HUB_FQDNS;
use sbc::sip::transport::tls::TlsIdentity;
use std::fmt;

const RSA_ROOT: &str = include_str!("../keys/rsa2048-root.pem");
const RSA_INTERMEDIATE: &str = include_str!("../keys/rsa2048-intermediate.pem");
const RSA_UNTRUSTED: &str = include_str!("../keys/rsa2048-untrusted.pem");
const RSA_HUB: &str = include_str!("../keys/rsa2048-hub.pem");
const RSA_LEAVES: [&str; 4] = [
    include_str!("../keys/rsa2048-sbc.pem"),
    include_str!("../keys/rsa2048-leaf1.pem"),
    include_str!("../keys/rsa2048-leaf2.pem"),
    include_str!("../keys/rsa2048-leaf3.pem"),
];
const RSA_1024: &str = include_str!("../keys/rsa1024-weak.pem");
const RSA_1024_PUBLIC: &str = include_str!("../keys/rsa1024-weak.pub.pem");

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

/// The key type of every certificate of a [`TestPki`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyKind {
    /// RSA 2048 from the committed lab keys (the default).
    #[default]
    Rsa2048,
    /// ECDSA P-256, generated: usable only where ECDHE-ECDSA suites are.
    EcdsaP256,
}

/// Which extended key usages a leaf carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eku {
    /// serverAuth and clientAuth: what public CAs issue to SBCs.
    ServerAndClient,
    /// serverAuth only: what Direct Routing requires, and all it requires.
    ServerOnly,
    /// clientAuth only: refused by the hub in both directions.
    ClientOnly,
    /// No EKU extension at all: it does not "include Server Authentication".
    None,
}

/// Where the leaf's names are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameIn {
    /// Subject CN (the first name) and every name as a SAN dNSName.
    Both,
    /// Subject CN only, no SAN: the hub accepts "CN or SAN".
    CnOnly,
    /// SAN only, a CN that is not a host name.
    SanOnly,
}

/// A leaf's validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// 1975–4096 (rcgen's default): valid whatever the clock says.
    Long,
    /// 2000–2001.
    Expired,
    /// From 2090 on.
    NotYetValid,
    /// Valid until `days` after the Unix time `now` (seconds): expiring soon.
    ExpiresAfter { now: u64, days: u64 },
}

/// What is wrong (or not) with a leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    pub names: Vec<String>,
    pub name_in: NameIn,
    pub eku: Eku,
    pub validity: Validity,
    /// Issued by a root nobody trusts.
    pub untrusted: bool,
    /// Send the intermediate with the leaf (the hub requires the full chain).
    pub with_intermediate: bool,
    /// An RSA 1024 key (the private key cannot be used by rustls/ring: it is
    /// for peers such as `openssl s_client` that will present it).
    pub weak_key: bool,
}

impl LeafSpec {
    pub fn good(names: &[&str]) -> Self {
        LeafSpec {
            names: names.iter().map(|s| s.to_string()).collect(),
            name_in: NameIn::Both,
            eku: Eku::ServerAndClient,
            validity: Validity::Long,
            untrusted: false,
            with_intermediate: true,
            weak_key: false,
        }
    }
}

/// Whether the hub must accept a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Accepted,
    Refused,
}

/// Every certificate variant `test-pki` writes for `fqdn`: a file name, what
/// it is, and whether Direct Routing's hub accepts it. `now` (Unix seconds)
/// dates the expiring-soon one.
pub fn variants(fqdn: &str, now: u64) -> Vec<(&'static str, LeafSpec, Expect)> {
    let good = LeafSpec::good(&[fqdn]);
    let parent = fqdn
        .split_once('.')
        .map(|x| x.1)
        .unwrap_or(fqdn)
        .to_string();
    let grandparent = parent
        .split_once('.')
        .map(|x| x.1)
        .unwrap_or(&parent)
        .to_string();
    let with = |f: &dyn Fn(&mut LeafSpec)| {
        let mut s = good.clone();
        f(&mut s);
        s
    };
    use Expect::*;
    vec![
        ("good", good.clone(), Accepted),
        (
            "server-auth-only",
            with(&|s| s.eku = Eku::ServerOnly),
            Accepted,
        ),
        ("cn-only", with(&|s| s.name_in = NameIn::CnOnly), Accepted),
        ("san-only", with(&|s| s.name_in = NameIn::SanOnly), Accepted),
        (
            "wildcard",
            with(&|s| s.names = vec![format!("*.{parent}")]),
            Accepted,
        ),
        (
            "expiring-in-10-days",
            with(&|s| s.validity = Validity::ExpiresAfter { now, days: 10 }),
            Accepted,
        ),
        (
            "expired",
            with(&|s| s.validity = Validity::Expired),
            Refused,
        ),
        (
            "not-yet-valid",
            with(&|s| s.validity = Validity::NotYetValid),
            Refused,
        ),
        (
            "client-auth-only",
            with(&|s| s.eku = Eku::ClientOnly),
            Refused,
        ),
        ("no-eku", with(&|s| s.eku = Eku::None), Refused),
        (
            "wrong-name",
            with(&|s| s.names = vec![format!("other.{parent}")]),
            Refused,
        ),
        (
            "two-label-wildcard",
            with(&|s| s.names = vec![format!("*.{grandparent}")]),
            Refused,
        ),
        (
            "no-intermediate",
            with(&|s| s.with_intermediate = false),
            Refused,
        ),
        ("untrusted-root", with(&|s| s.untrusted = true), Refused),
        ("rsa-1024", with(&|s| s.weak_key = true), Refused),
    ]
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

fn key(kind: KeyKind, rsa_pem: &str) -> Result<KeyPair, PkiError> {
    Ok(match kind {
        KeyKind::Rsa2048 => KeyPair::from_pem_and_sign_algo(rsa_pem, &rcgen::PKCS_RSA_SHA256)?,
        KeyKind::EcdsaP256 => KeyPair::generate()?,
    })
}

impl Ca {
    fn new(name: &str, key: KeyPair, parent: Option<&Ca>) -> Result<Ca, PkiError> {
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
    kind: KeyKind,
    root: Ca,
    intermediate: Ca,
    untrusted_root: Ca,
    next_leaf: std::cell::Cell<usize>,
}

impl fmt::Debug for TestPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TestPki({:?})", self.kind)
    }
}

impl TestPki {
    /// The lab PKI: RSA 2048.
    pub fn new() -> Result<TestPki, PkiError> {
        Self::with_keys(KeyKind::Rsa2048)
    }

    pub fn with_keys(kind: KeyKind) -> Result<TestPki, PkiError> {
        let root = Ca::new("drlab Test Root CA", key(kind, RSA_ROOT)?, None)?;
        let intermediate = Ca::new(
            "drlab Test Issuing CA",
            key(kind, RSA_INTERMEDIATE)?,
            Some(&root),
        )?;
        let untrusted_root = Ca::new("Untrusted Root CA", key(kind, RSA_UNTRUSTED)?, None)?;
        Ok(TestPki {
            kind,
            root,
            intermediate,
            untrusted_root,
            next_leaf: std::cell::Cell::new(0),
        })
    }

    /// The trust anchor every party of the lab trusts.
    pub fn root(&self) -> CertificateDer<'static> {
        self.root.der.clone()
    }

    fn leaf_key(&self) -> Result<KeyPair, PkiError> {
        let i = self.next_leaf.get();
        self.next_leaf.set(i + 1);
        key(self.kind, RSA_LEAVES[i % RSA_LEAVES.len()])
    }

    pub fn leaf(&self, spec: &LeafSpec) -> Result<TlsIdentity, PkiError> {
        let sans = match spec.name_in {
            NameIn::CnOnly => Vec::new(),
            NameIn::Both | NameIn::SanOnly => spec.names.clone(),
        };
        let mut params = CertificateParams::new(sans)?;
        match (spec.name_in, spec.names.first()) {
            (NameIn::SanOnly, _) => params
                .distinguished_name
                .push(DnType::CommonName, "drlab test SBC"),
            (_, Some(cn)) => params
                .distinguished_name
                .push(DnType::CommonName, cn.as_str()),
            (_, None) => {}
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
            Eku::ServerOnly => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Eku::ClientOnly => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Eku::None => vec![],
        };
        match spec.validity {
            Validity::Long => {}
            Validity::Expired => {
                params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            }
            Validity::NotYetValid => {
                params.not_before = rcgen::date_time_ymd(2090, 1, 1);
                params.not_after = rcgen::date_time_ymd(2091, 1, 1);
            }
            Validity::ExpiresAfter { now, days } => {
                let at = |secs: u64| {
                    time::OffsetDateTime::from_unix_timestamp(secs as i64)
                        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
                };
                params.not_before = at(now.saturating_sub(365 * 86_400));
                params.not_after = at(now + days * 86_400);
            }
        }
        let issuer = if spec.untrusted {
            &self.untrusted_root
        } else {
            &self.intermediate
        };
        let (cert, key_der) = if spec.weak_key && self.kind == KeyKind::Rsa2048 {
            // rcgen signs for a public key it cannot use itself.
            let public = SubjectPublicKeyInfo::from_pem(RSA_1024_PUBLIC)?;
            let der = pem_body(RSA_1024)?;
            (params.signed_by(&public, &issuer.issuer)?, der)
        } else {
            let key = self.leaf_key()?;
            let _ = key.der_bytes();
            (params.signed_by(&key, &issuer.issuer)?, key.serialize_der())
        };
        let mut chain = vec![cert.der().clone()];
        if spec.with_intermediate && !spec.untrusted {
            chain.push(self.intermediate.der.clone());
        }
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
        Ok(TlsIdentity { chain, key })
    }

    /// A good certificate for `names`.
    pub fn good(&self, names: &[&str]) -> Result<TlsIdentity, PkiError> {
        self.leaf(&LeafSpec::good(names))
    }

    /// The hub's certificate: all three proxy names.
    pub fn hub(&self) -> Result<TlsIdentity, PkiError> {
        let mut spec = LeafSpec::good(&HUB_FQDNS);
        spec.eku = Eku::ServerAndClient;
        let sans = spec.names.clone();
        let mut params = CertificateParams::new(sans)?;
        params
            .distinguished_name
            .push(DnType::CommonName, HUB_FQDNS[0]);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = key(self.kind, RSA_HUB)?;
        let cert = params.signed_by(&key, &self.intermediate.issuer)?;
        Ok(TlsIdentity {
            chain: vec![cert.der().clone(), self.intermediate.der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

/// The DER body of a PEM block.
fn pem_body(text: &str) -> Result<Vec<u8>, PkiError> {
    use base64::Engine;
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| PkiError(format!("bad PEM: {e}")))
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

fn write_identity(dir: &std::path::Path, name: &str, id: &TlsIdentity) -> std::io::Result<()> {
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
}

impl TestPki {
    /// Write a lab's files into `dir`: `ca.pem` (the root), `<fqdn>.pem` and
    /// `<fqdn>.key` for the SBC, `hub.pem` and `hub.key` for the hub's
    /// proxies. For running the binaries against each other on real sockets.
    pub fn write_pem(&self, dir: &std::path::Path, sbc_fqdn: &str) -> std::io::Result<()> {
        let other = |e: PkiError| std::io::Error::other(e.to_string());
        std::fs::write(dir.join("ca.pem"), pem("CERTIFICATE", self.root().as_ref()))?;
        write_identity(dir, sbc_fqdn, &self.good(&[sbc_fqdn]).map_err(other)?)?;
        write_identity(dir, "hub", &self.hub().map_err(other)?)
    }

    /// Write every [`variants`] certificate for `sbc_fqdn` into
    /// `dir/variants/<name>.pem|.key`, and a `variants/README.txt` saying
    /// which the hub accepts. Returns the names written.
    pub fn write_variants(
        &self,
        dir: &std::path::Path,
        sbc_fqdn: &str,
        now: u64,
    ) -> std::io::Result<Vec<String>> {
        let out = dir.join("variants");
        std::fs::create_dir_all(&out)?;
        let mut readme = format!(
            "Certificates for {sbc_fqdn}, each good or broken in one way. \
             Direct Routing's hub (teams-sim) accepts or refuses them as listed.\n\n"
        );
        let mut names = Vec::new();
        for (name, spec, expect) in variants(sbc_fqdn, now) {
            let id = self
                .leaf(&spec)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            write_identity(&out, name, &id)?;
            readme.push_str(&format!("{name:<22} {expect:?}\n"));
            names.push(name.to_string());
        }
        std::fs::write(out.join("README.txt"), readme)?;
        Ok(names)
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
        let cn_only = pki
            .leaf(&LeafSpec {
                name_in: NameIn::CnOnly,
                ..LeafSpec::good(&["cn.example.com"])
            })
            .unwrap();
        assert_eq!(
            certificate_dns_names(&cn_only.chain[0]),
            vec!["cn.example.com"]
        );
    }

    #[test]
    fn every_variant_is_minted() {
        let pki = TestPki::new().unwrap();
        for (name, spec, _) in variants("sbc.example.com", 1_800_000_000) {
            assert!(pki.leaf(&spec).is_ok(), "{name}");
        }
    }
}
