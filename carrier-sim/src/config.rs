//! The carrier-sim configuration file (TOML). `carrier-sim/examples/carrier.toml`
//! documents every key.

use sbc::config::{error, read_toml, ConfigError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    fqdn: String,
    #[serde(default = "default_port")]
    listen_port: u16,
    /// Where the phones' audio comes from (and what SDP says).
    media_ip: IpAddr,
    sbc_host: String,
    #[serde(default = "default_port")]
    sbc_port: u16,
    country_code: String,
    phones: Vec<String>,
    #[serde(default = "default_ring")]
    ring_delay_ms: u64,
    #[serde(default = "default_answer")]
    answer_delay_ms: u64,
    #[serde(default = "default_frames")]
    media_frames: u32,
    /// The phones' RTP ports (each with its RTCP neighbour).
    #[serde(default = "default_media_port_min")]
    media_port_min: u16,
    #[serde(default = "default_media_port_max")]
    media_port_max: u16,
    seed: Option<u64>,
    #[serde(default)]
    hosts: BTreeMap<String, IpAddr>,
    /// A registration trunk (`[registration]`); absent: static-IP peering.
    registration: Option<RegistrationSection>,
    /// A JSON-lines file for one record per call (relative to this file).
    records: Option<std::path::PathBuf>,
}

/// `[registration]`: the SBC must REGISTER with digest credentials.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrationSection {
    realm: String,
    username: String,
    password: String,
    /// In order of preference: "SHA-256", "MD5" (RFC 8760).
    #[serde(default = "default_algorithms")]
    algorithms: Vec<String>,
    #[serde(default = "default_nonce_lifetime")]
    nonce_lifetime_secs: u64,
    /// Challenge the SBC's INVITEs too (407).
    #[serde(default = "default_true")]
    challenge_invites: bool,
    #[serde(default = "default_max_expires")]
    max_expires_secs: u32,
}

fn default_algorithms() -> Vec<String> {
    vec!["SHA-256".into(), "MD5".into()]
}
fn default_nonce_lifetime() -> u64 {
    300
}
fn default_true() -> bool {
    true
}
fn default_max_expires() -> u32 {
    3600
}

fn default_port() -> u16 {
    5060
}
fn default_ring() -> u64 {
    500
}
fn default_answer() -> u64 {
    2000
}
fn default_frames() -> u32 {
    250
}
fn default_media_port_min() -> u16 {
    20000
}
fn default_media_port_max() -> u16 {
    29999
}

#[derive(Debug)]
pub struct CarrierFile {
    pub fqdn: String,
    pub listen_port: u16,
    pub media_ip: IpAddr,
    pub sbc_host: String,
    pub sbc_port: u16,
    pub country_code: String,
    pub phones: Vec<String>,
    pub ring_delay: Duration,
    pub answer_delay: Duration,
    pub media_frames: u32,
    pub media_ports: std::ops::RangeInclusive<u16>,
    pub seed: Option<u64>,
    pub hosts: BTreeMap<String, IpAddr>,
    pub auth: Option<crate::trunk::TrunkAuth>,
    pub records: Option<std::path::PathBuf>,
}

pub fn load(path: &Path) -> Result<CarrierFile, ConfigError> {
    let f: FileConfig = read_toml(path)?;
    // Every problem at once (sbc::config::collect).
    let mut errors = Vec::new();
    for (i, p) in f.phones.iter().enumerate() {
        let digits = p.strip_prefix('+').unwrap_or_default();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            errors.push(error(
                path,
                &format!("phones[{i}]"),
                format!("{p:?} is not E.164 with a leading +"),
            ));
        }
    }
    if f.country_code.is_empty()
        || f.country_code.len() > 3
        || !f.country_code.bytes().all(|b| b.is_ascii_digit())
    {
        errors.push(error(
            path,
            "country_code",
            format!(
                "{:?} is not an ITU country code (1-3 digits)",
                f.country_code
            ),
        ));
    }
    if f.media_ip.is_unspecified() {
        errors.push(error(
            path,
            "media_ip",
            "must be an address peers can send media to, not 0.0.0.0",
        ));
    }
    if f.listen_port == 0 || f.sbc_port == 0 {
        errors.push(error(
            path,
            if f.listen_port == 0 {
                "listen_port"
            } else {
                "sbc_port"
            },
            "port 0 is not a port",
        ));
    }
    if let Err(e) = sbc::media::PortAllocator::new(f.media_port_min..=f.media_port_max) {
        errors.push(error(path, "media_port_min", e.to_string()));
    }
    let mut auth = None;
    if let Some(r) = f.registration {
        let mut algorithms = Vec::new();
        for (i, a) in r.algorithms.iter().enumerate() {
            match sbc::sip::digest::Algorithm::parse(a) {
                Ok(a) => algorithms.push(a),
                Err(e) => errors.push(error(
                    path,
                    &format!("registration.algorithms[{i}]"),
                    format!("{e}: MD5 or SHA-256"),
                )),
            }
        }
        if algorithms.is_empty() && r.algorithms.is_empty() {
            errors.push(error(
                path,
                "registration.algorithms",
                "at least one: MD5 or SHA-256",
            ));
        }
        for (key, v) in [
            ("registration.realm", &r.realm),
            ("registration.username", &r.username),
            ("registration.password", &r.password),
        ] {
            if v.is_empty() || v.contains('"') {
                errors.push(error(path, key, "must be non-empty, without '\"'"));
            }
        }
        if r.nonce_lifetime_secs == 0 {
            errors.push(error(
                path,
                "registration.nonce_lifetime_secs",
                "must be at least 1",
            ));
        }
        if r.max_expires_secs < crate::trunk::MIN_EXPIRES {
            errors.push(error(
                path,
                "registration.max_expires_secs",
                format!(
                    "must be at least {} (RFC 3261 §10.3)",
                    crate::trunk::MIN_EXPIRES
                ),
            ));
        }
        auth = Some(crate::trunk::TrunkAuth {
            realm: r.realm,
            username: r.username,
            password: r.password,
            algorithms,
            nonce_lifetime: Duration::from_secs(r.nonce_lifetime_secs),
            challenge_invites: r.challenge_invites,
            max_expires: r.max_expires_secs,
        });
    }
    sbc::config::collect(errors)?;
    let records = f
        .records
        .map(|r| path.parent().unwrap_or(Path::new(".")).join(r));
    Ok(CarrierFile {
        records,
        auth,
        fqdn: f.fqdn,
        listen_port: f.listen_port,
        media_ip: f.media_ip,
        sbc_host: f.sbc_host,
        sbc_port: f.sbc_port,
        country_code: f.country_code,
        phones: f.phones,
        ring_delay: Duration::from_millis(f.ring_delay_ms),
        answer_delay: Duration::from_millis(f.answer_delay_ms),
        media_frames: f.media_frames,
        media_ports: f.media_port_min..=f.media_port_max,
        seed: f.seed,
        hosts: f.hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_loads_and_mistakes_name_their_key() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/carrier.toml");
        let f = load(&example).unwrap();
        assert_eq!((f.listen_port, f.sbc_port, f.phones.len()), (5070, 5060, 2));
        let text = std::fs::read_to_string(&example).unwrap();
        let dir = std::env::temp_dir().join(format!("drlab-carrier-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (bad, key) in [
            (
                text.replace("\"+4930654321\"", "\"030654321\""),
                "phones[1]",
            ),
            (
                text.replace("country_code = \"49\"", "country_code = \"DE\""),
                "country_code",
            ),
            (
                text.replace("media_ip = \"127.0.0.1\"", "media_ip = \"0.0.0.0\""),
                "media_ip",
            ),
            (format!("extra = 1\n{text}"), ""),
            (
                format!("{text}\n[registration]\nrealm = \"r\"\nusername = \"u\"\npassword = \"p\"\nalgorithms = [\"SHA-512-256\"]\n"),
                "registration.algorithms[0]",
            ),
            (
                format!("{text}\n[registration]\nrealm = \"r\"\nusername = \"u\"\npassword = \"p\"\nmax_expires_secs = 30\n"),
                "registration.max_expires_secs",
            ),
        ] {
            let p = dir.join("c.toml");
            std::fs::write(&p, bad).unwrap();
            let e = load(&p).unwrap_err();
            assert!(
                e.key == key || (key.is_empty() && e.reason.contains("unknown field")),
                "{e}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
