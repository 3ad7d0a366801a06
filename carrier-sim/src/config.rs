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
    sbc::config::collect(errors)?;
    Ok(CarrierFile {
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
