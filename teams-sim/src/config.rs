//! The teams-sim configuration file (TOML): which proxies to run, the
//! tenant, TLS files, and static host entries. `teams-sim/examples/hub.toml`
//! documents every key.

use crate::hub::{RefusalPolicy, TeamsUser, Tenant};
use sbc::config::{error, read_tls_material, read_toml, ConfigError, TlsSection};
use sbc::sip::transport::tls::TlsIdentity;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// Where the media processor opens its ports (and what SDP says).
    media_ip: IpAddr,
    seed: Option<u64>,
    #[serde(default = "default_ring")]
    ring_delay_ms: u64,
    #[serde(default = "default_answer")]
    answer_delay_ms: u64,
    /// Audio frames the media processor sends per call (20 ms each).
    #[serde(default = "default_frames")]
    media_frames: u32,
    /// How many Teams endpoints of a user ring on an inbound call.
    #[serde(default = "default_forks")]
    forks: usize,
    /// Send one 183 with SDP and start media before the answer.
    #[serde(default = "default_early_media")]
    early_media: bool,
    /// The media processor's ports (Direct Routing: 49152–53247). Keep it
    /// apart from the SBC's range when both run on one host.
    #[serde(default = "default_media_port_min")]
    media_port_min: u16,
    #[serde(default = "default_media_port_max")]
    media_port_max: u16,
    /// Accept TLS 1.3 besides 1.2 (the sources require 1.2; off by default).
    #[serde(default)]
    tls13: bool,
    /// Demote an SBC whose OPTIONS no proxy heard for this long: 300 (the
    /// SendSipOptions rule) or 180 (the original one).
    #[serde(default = "default_demote_after")]
    demote_after_secs: u64,
    #[serde(default)]
    refusals: RefusalsSection,
    /// RFC 4028 session interval the hub asks for (and lowers longer ones to).
    #[serde(default = "default_session_expires")]
    session_expires_secs: u32,
    /// `FailoverTimeSeconds`: no 18x from an SBC by then, the next is tried.
    #[serde(default = "default_failover_time")]
    failover_time_secs: u64,
    /// `FailoverResponseCodes`: finals that move an outbound call on.
    #[serde(default = "default_failover_codes")]
    failover_response_codes: Vec<u16>,
    /// An answered call from which no audio arrives for this long is ended
    /// (case 9.58: "about 10 to 20 seconds"); 0: never.
    #[serde(default = "default_media_timeout")]
    media_timeout_secs: u64,
    proxy: Vec<ProxySection>,
    tenant: TenantSection,
    tls: TlsSection,
    #[serde(default)]
    hosts: BTreeMap<String, IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxySection {
    fqdn: String,
    listen: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantSection {
    sbcs: Vec<String>,
    #[serde(default = "default_sbc_port")]
    sbc_port: u16,
    /// Voice routes by priority, each listing SBCs of `sbcs`.
    #[serde(default)]
    routes: Vec<Vec<String>>,
    /// SBCs of `sbcs` whose gateway has ForwardPai on.
    #[serde(default)]
    forward_pai: Vec<String>,
    /// SBCs of `sbcs` whose gateway has ForwardCallHistory on.
    #[serde(default)]
    forward_call_history: Vec<String>,
    /// SBCs of `sbcs` whose gateway has MediaBypass on.
    #[serde(default)]
    media_bypass: Vec<String>,
    users: Vec<UserSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSection {
    number: String,
    name: String,
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default)]
    blocked: Vec<String>,
    #[serde(default)]
    hide_caller_id: bool,
    /// E.164 number the user's calls are forwarded to.
    #[serde(default)]
    forward_to: Option<String>,
}

/// Statuses and causes the sources leave open (see `hub::causes`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefusalsSection {
    replaces_status: Option<u16>,
    delayed_offer_status: Option<u16>,
    no_contact_status: Option<u16>,
    /// SIP status (as a string key) → Q.850 cause.
    #[serde(default)]
    q850: BTreeMap<String, u8>,
}

fn default_session_expires() -> u32 {
    1800
}
fn default_failover_time() -> u64 {
    10
}
fn default_media_timeout() -> u64 {
    15
}
fn default_failover_codes() -> Vec<u16> {
    vec![408, 503, 504]
}

fn default_true() -> bool {
    true
}

/// E.164 with a leading `+` and digits only.
fn is_e164(number: &str) -> bool {
    let digits = number.strip_prefix('+').unwrap_or_default();
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The `[refusals]` section over the defaults, each value range-checked.
fn refusal_policy(path: &Path, r: &RefusalsSection) -> Result<RefusalPolicy, ConfigError> {
    let mut policy = RefusalPolicy::default();
    for (key, value, slot) in [
        (
            "replaces_status",
            r.replaces_status,
            &mut policy.replaces_status,
        ),
        (
            "delayed_offer_status",
            r.delayed_offer_status,
            &mut policy.delayed_offer_status,
        ),
        (
            "no_contact_status",
            r.no_contact_status,
            &mut policy.no_contact_status,
        ),
    ] {
        if let Some(v) = value {
            if !(400..=699).contains(&v) {
                return Err(error(
                    path,
                    &format!("refusals.{key}"),
                    format!("{v} is not a failure status (400-699)"),
                ));
            }
            *slot = v;
        }
    }
    for (status, &cause) in &r.q850 {
        let key = format!("refusals.q850.{status}");
        let code: u16 = status
            .parse()
            .ok()
            .filter(|c| (400..=699).contains(c))
            .ok_or_else(|| error(path, &key, "the key must be a failure status (400-699)"))?;
        if !(1..=127).contains(&cause) {
            return Err(error(
                path,
                &key,
                format!("{cause} is not a Q.850 cause (1-127)"),
            ));
        }
        policy.causes.set(code, cause);
    }
    Ok(policy)
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
fn default_early_media() -> bool {
    true
}
fn default_demote_after() -> u64 {
    300
}
fn default_media_port_min() -> u16 {
    49152
}
fn default_media_port_max() -> u16 {
    53247
}
fn default_forks() -> usize {
    2
}
fn default_sbc_port() -> u16 {
    5061
}

/// One proxy to run.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub fqdn: String,
    pub listen: SocketAddr,
}

#[derive(Debug)]
pub struct HubFile {
    pub proxies: Vec<Proxy>,
    pub tenant: Tenant,
    pub media_ip: IpAddr,
    pub seed: Option<u64>,
    pub ring_delay: Duration,
    pub answer_delay: Duration,
    pub media_frames: u32,
    pub forks: usize,
    pub early_media: bool,
    pub media_ports: std::ops::RangeInclusive<u16>,
    /// The hub's certificate chain and key, and the roots SBC certificates
    /// must chain to (the hub builds its TLS rules from them).
    pub tls_identity: TlsIdentity,
    pub tls_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub tls13: bool,
    pub demote_after: Duration,
    pub refusals: RefusalPolicy,
    pub session_expires: u32,
    pub failover_time: Duration,
    pub failover_codes: Vec<u16>,
    /// `None`: calls without audio are never ended for it.
    pub media_timeout: Option<Duration>,
    pub hosts: BTreeMap<String, IpAddr>,
}

pub fn load(path: &Path) -> Result<HubFile, ConfigError> {
    let f: FileConfig = read_toml(path)?;
    // Every problem at once (sbc::config::collect).
    let mut errors = Vec::new();
    if f.proxy.is_empty() {
        errors.push(error(path, "proxy", "at least one [[proxy]] is needed"));
    }
    for (i, p) in f.proxy.iter().enumerate() {
        if p.fqdn.parse::<IpAddr>().is_ok() || !p.fqdn.contains('.') {
            errors.push(error(
                path,
                &format!("proxy[{i}].fqdn"),
                format!("{:?} is not an FQDN", p.fqdn),
            ));
        }
        if p.listen.port() == 0 {
            errors.push(error(
                path,
                &format!("proxy[{i}].listen"),
                "port 0 is not a port",
            ));
        }
    }
    if f.tenant.sbcs.is_empty() {
        errors.push(error(
            path,
            "tenant.sbcs",
            "a tenant pairs at least one SBC FQDN",
        ));
    }
    for (i, u) in f.tenant.users.iter().enumerate() {
        if !is_e164(&u.number) {
            errors.push(error(
                path,
                &format!("tenant.users[{i}].number"),
                format!("{:?} is not E.164 with a leading +", u.number),
            ));
        }
        if let Some((j, b)) = u.blocked.iter().enumerate().find(|(_, b)| !is_e164(b)) {
            errors.push(error(
                path,
                &format!("tenant.users[{i}].blocked[{j}]"),
                format!("{b:?} is not E.164 with a leading + (the hub compares From with +)"),
            ));
        }
    }
    let refusals = match refusal_policy(path, &f.refusals) {
        Ok(r) => r,
        Err(e) => {
            errors.push(e);
            RefusalPolicy::default()
        }
    };
    if !(90..=86400).contains(&f.session_expires_secs) {
        errors.push(error(
            path,
            "session_expires_secs",
            format!(
                "{} is outside 90-86400 (RFC 4028: Min-SE is at least 90)",
                f.session_expires_secs
            ),
        ));
    }
    if !(1..=600).contains(&f.failover_time_secs) {
        errors.push(error(
            path,
            "failover_time_secs",
            format!(
                "{} is outside 1-600 (Microsoft: 10 by default)",
                f.failover_time_secs
            ),
        ));
    }
    if let Some((i, c)) = f
        .failover_response_codes
        .iter()
        .enumerate()
        .find(|(_, c)| !(300..=699).contains(*c))
    {
        errors.push(error(
            path,
            &format!("failover_response_codes[{i}]"),
            format!("{c} is not a final failure status (300-699)"),
        ));
    }
    for (i, route) in f.tenant.routes.iter().enumerate() {
        if let Some((j, s)) = route
            .iter()
            .enumerate()
            .find(|(_, s)| !f.tenant.sbcs.iter().any(|t| t.eq_ignore_ascii_case(s)))
        {
            errors.push(error(
                path,
                &format!("tenant.routes[{i}][{j}]"),
                format!("{s:?} is not one of tenant.sbcs"),
            ));
        }
    }
    if !(1..=8).contains(&f.forks) {
        errors.push(error(
            path,
            "forks",
            format!("{} Teams endpoints cannot ring: 1 to 8", f.forks),
        ));
    }
    for (key, list) in [
        ("forward_pai", &f.tenant.forward_pai),
        ("forward_call_history", &f.tenant.forward_call_history),
        ("media_bypass", &f.tenant.media_bypass),
    ] {
        for (i, s) in list.iter().enumerate() {
            if !f.tenant.sbcs.iter().any(|t| t.eq_ignore_ascii_case(s)) {
                errors.push(error(
                    path,
                    &format!("tenant.{key}[{i}]"),
                    format!("{s:?} is not one of tenant.sbcs"),
                ));
            }
        }
    }
    for (i, u) in f.tenant.users.iter().enumerate() {
        if let Some(n) = &u.forward_to {
            let e164 =
                n.len() > 3 && n.starts_with('+') && n.bytes().skip(1).all(|b| b.is_ascii_digit());
            if !e164 {
                errors.push(error(
                    path,
                    &format!("tenant.users[{i}].forward_to"),
                    format!("{n:?} is not an E.164 number (+ and digits)"),
                ));
            }
        }
    }
    if f.media_timeout_secs != 0 && !(5..=600).contains(&f.media_timeout_secs) {
        errors.push(error(
            path,
            "media_timeout_secs",
            format!(
                "{} is outside 5-600 (Microsoft: about 10-20; 0 turns it off)",
                f.media_timeout_secs
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
    if !(60..=3600).contains(&f.demote_after_secs) {
        errors.push(error(
            path,
            "demote_after_secs",
            format!(
                "{} is outside 60-3600 (Microsoft: 180 or 300)",
                f.demote_after_secs
            ),
        ));
    }
    if let Err(e) = sbc::media::PortAllocator::new(f.media_port_min..=f.media_port_max) {
        errors.push(error(path, "media_port_min", e.to_string()));
    }
    sbc::config::collect(errors)?;
    let (tls_identity, tls_roots) = read_tls_material(path, &f.tls)?;
    // Fail at start, not at the first connection, if the hub cannot build them.
    crate::hub::tls::hub_configs(
        &tls_identity,
        &tls_roots,
        &crate::hub::tls::HubTls::default(),
        Default::default(),
        Arc::new(rustls::time_provider::DefaultTimeProvider),
    )
    .map_err(|e| error(path, "tls.certificate", e.to_string()))?;
    Ok(HubFile {
        proxies: f
            .proxy
            .into_iter()
            .map(|p| Proxy {
                fqdn: p.fqdn.to_ascii_lowercase(),
                listen: p.listen,
            })
            .collect(),
        tenant: Tenant {
            sbcs: f
                .tenant
                .sbcs
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            sbc_port: f.tenant.sbc_port,
            routes: f
                .tenant
                .routes
                .iter()
                .map(|r| r.iter().map(|s| s.to_ascii_lowercase()).collect())
                .collect(),
            forward_pai: f
                .tenant
                .forward_pai
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            forward_call_history: f
                .tenant
                .forward_call_history
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            media_bypass: f
                .tenant
                .media_bypass
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            users: f
                .tenant
                .users
                .into_iter()
                .map(|u| TeamsUser {
                    number: u.number,
                    name: u.name,
                    enabled: u.enabled,
                    blocked: u.blocked,
                    hide_caller_id: u.hide_caller_id,
                    forward_to: u.forward_to,
                })
                .collect(),
        },
        media_ip: f.media_ip,
        seed: f.seed,
        ring_delay: Duration::from_millis(f.ring_delay_ms),
        answer_delay: Duration::from_millis(f.answer_delay_ms),
        media_frames: f.media_frames,
        forks: f.forks,
        early_media: f.early_media,
        media_ports: f.media_port_min..=f.media_port_max,
        tls_identity,
        tls_roots,
        tls13: f.tls13,
        demote_after: Duration::from_secs(f.demote_after_secs),
        refusals,
        session_expires: f.session_expires_secs,
        failover_time: Duration::from_secs(f.failover_time_secs),
        failover_codes: f.failover_response_codes,
        media_timeout: (f.media_timeout_secs != 0)
            .then(|| Duration::from_secs(f.media_timeout_secs)),
        hosts: f.hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_file_loads_and_mistakes_name_their_key() {
        let dir = std::env::temp_dir().join(format!("drlab-hub-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        drlab_sim::pki::TestPki::new()
            .unwrap()
            .write_pem(&dir, "sbc.example.com")
            .unwrap();
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hub.toml"),
        )
        .unwrap();
        let text = example.replace("../../target/lab/", "");
        let p = dir.join("hub.toml");
        std::fs::write(&p, &text).unwrap();
        let f = load(&p).unwrap();
        assert_eq!(f.proxies.len(), 3);
        assert_eq!(f.tenant.users[1].name, "Bob");
        assert_eq!(f.tenant.users[0].blocked, ["+4930654321"]);
        assert_eq!(f.refusals.causes.cause(486), 34);
        assert_eq!(f.refusals.replaces_status, 403);
        for (bad, key) in [
            (
                text.replace("\"+4989000002\"", "\"089000002\""),
                "tenant.users[1].number",
            ),
            (
                text.replace(
                    "fqdn = \"sip2.pstnhub.microsoft.com\"",
                    "fqdn = \"10.0.0.2\"",
                ),
                "proxy[1].fqdn",
            ),
            (
                text.replace("key = \"hub.key\"", "key = \"nope.key\""),
                "tls.key",
            ),
            (
                text.replace("\"486\" = 34", "\"486\" = 200"),
                "refusals.q850.486",
            ),
            (
                text.replace("\"486\" = 34", "\"286\" = 34"),
                "refusals.q850.286",
            ),
            (
                text.replace("replaces_status = 403", "replaces_status = 200"),
                "refusals.replaces_status",
            ),
            (
                text.replace(
                    "routes = [[\"sbc.example.com\"]]",
                    "routes = [[\"sbc9.example.com\"]]",
                ),
                "tenant.routes[0][0]",
            ),
            (
                text.replace("[408, 503, 504]", "[408, 200]"),
                "failover_response_codes[1]",
            ),
            (
                text.replace("blocked = [\"+4930654321\"]", "blocked = [\"030654321\"]"),
                "tenant.users[0].blocked[0]",
            ),
            (
                text.replace("forward_pai = []", "forward_pai = [\"sbc9.example.com\"]"),
                "tenant.forward_pai[0]",
            ),
            (text.replace("forks = 2 ", "forks = 0 "), "forks"),
            (
                text.replace(
                    "forward_call_history = []",
                    "forward_call_history = [\"sbc9.example.com\"]",
                ),
                "tenant.forward_call_history[0]",
            ),
            (
                text.replace(
                    "name = \"Bob\" }",
                    "name = \"Bob\", forward_to = \"030654321\" }",
                ),
                "tenant.users[1].forward_to",
            ),
        ] {
            std::fs::write(&p, bad).unwrap();
            assert_eq!(load(&p).unwrap_err().key, key);
        }
        // Every mistake at once, not one per start.
        let two = text
            .replace("forks = 2 ", "forks = 0 ")
            .replace("replaces_status = 403", "replaces_status = 200");
        std::fs::write(&p, two).unwrap();
        let e = load(&p).unwrap_err();
        let keys: Vec<&str> = std::iter::once(e.key.as_str())
            .chain(e.more.iter().map(|m| m.key.as_str()))
            .collect();
        assert_eq!(keys, ["refusals.replaces_status", "forks"], "{e}");
        assert_eq!(e.to_string().lines().count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
