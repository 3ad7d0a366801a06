//! The SBC's configuration file (TOML). Bad configuration is refused at
//! start with the file, the key and the reason. `sbc/examples/sbc.toml`
//! documents every key.

use crate::b2bua::SbcConfig;
use crate::direct_routing::HUB_FQDNS;
use crate::sip::transport::tls::{client_config, roots, server_config, TlsIdentity};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// The line (1-based) the TOML reader stopped at, when it did.
    pub line: Option<usize>,
    /// The key at fault (`tls.certificate`), or empty for the whole file.
    pub key: String,
    pub reason: String,
    /// The other problems found in the same file, reported with this one.
    pub more: Vec<ConfigError>,
}

/// Every problem a check found, as one error: the first, with the others
/// in `more` (a user fixes them all in one go, not one per start).
pub fn collect(mut errors: Vec<ConfigError>) -> Result<(), ConfigError> {
    if errors.is_empty() {
        return Ok(());
    }
    let mut first = errors.remove(0);
    first.more.extend(errors);
    Err(first)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.reason)?;
        for m in &self.more {
            write!(f, "\n{m}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The FQDN paired with the tenant (`New-CsOnlinePSTNGateway -Fqdn`).
    pub fqdn: String,
    /// The address written in SDP and where media ports are opened.
    pub media_ip: IpAddr,
    /// The address the SIP listeners bind; all addresses when absent.
    #[serde(default = "default_listen_ip")]
    pub listen_ip: IpAddr,
    /// Media ports: the first and last of the range (two RTP ports per
    /// call, each with its RTCP neighbour). Keep it apart from other
    /// parties' ranges on the same host.
    #[serde(default = "default_media_port_min")]
    pub media_port_min: u16,
    #[serde(default = "default_media_port_max")]
    pub media_port_max: u16,
    /// Seed for Call-IDs, tags, branches and keys; random when absent.
    pub seed: Option<u64>,
    /// How the SBC refreshes sessions it refreshes (RFC 4028):
    /// `"reinvite"` (the default) or `"update"` (where the peer's Allow
    /// lists UPDATE; the hub's does not, so toward Teams it is re-INVITE).
    #[serde(default)]
    pub session_refresh: SessionRefresh,
    /// An answered call with no media from either leg for this long is
    /// ended on both legs; 0 turns it off.
    #[serde(default = "default_media_timeout")]
    pub media_timeout_secs: u64,
    /// A JSON-lines file the SBC appends one record per call to (relative
    /// to this file's directory); none when absent.
    pub records: Option<std::path::PathBuf>,
    pub carrier: CarrierSection,
    #[serde(default)]
    pub hub: HubSection,
    pub tls: TlsSection,
    /// Admission limits (`[limits]`); the defaults when absent.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Static name → address entries that win over DNS, for labs on one
    /// machine (`"sip.pstnhub.microsoft.com" = "127.0.0.1"`).
    #[serde(default)]
    pub hosts: BTreeMap<String, IpAddr>,
}

/// A loaded configuration: what the SBC runs with, the seed the file
/// pinned (if any) and its static host entries.
#[derive(Debug)]
pub struct Loaded {
    pub config: SbcConfig,
    pub seed: Option<u64>,
    pub hosts: BTreeMap<String, IpAddr>,
    /// Where call records go, resolved against the file's directory.
    pub records: Option<std::path::PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierSection {
    pub host: String,
    #[serde(default = "default_sip_port")]
    pub port: u16,
    #[serde(default = "default_sip_port")]
    pub listen_port: u16,
    /// Country code for national numbers on the trunk (`49`).
    pub country_code: String,
    /// Pass the caller's P-Asserted-Identity (and Privacy) from Teams on
    /// to the carrier: the carrier is in our trust domain (RFC 3325).
    #[serde(default = "default_true")]
    pub forward_identity: bool,
    /// Pass the hub's History-Info (a forwarded call's path, RFC 7044) on
    /// to the carrier.
    #[serde(default = "default_true")]
    pub forward_history: bool,
    /// A registration trunk (`[carrier.registration]`); absent: static-IP
    /// peering.
    pub registration: Option<RegistrationSection>,
    /// Further gateways of the carrier (`host` or `host:port`), tried in
    /// order after `host:port` for calls to the PSTN and watched with
    /// OPTIONS; they may send calls too.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Further addresses (or names) the carrier sends calls from. Every
    /// source that is not `host`, a gateway or one of these gets 403.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Number rules, carrier format → E.164 and back, tried in order
    /// before the `country_code` defaults.
    #[serde(default)]
    pub to_e164: Vec<RuleSection>,
    #[serde(default)]
    pub from_e164: Vec<RuleSection>,
}

/// `[[carrier.to_e164]]` / `[[carrier.from_e164]]`: `prefix` or `regex`,
/// and `replace`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    pub prefix: Option<String>,
    pub regex: Option<String>,
    pub replace: String,
}

/// `[carrier.registration]`: REGISTER to the carrier with digest
/// credentials (RFC 3261 §10.2, RFC 7616/8760).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationSection {
    pub username: String,
    pub password: String,
    /// The registrar's domain (Request-URI, the AOR's host); default: the
    /// carrier's host.
    pub domain: Option<String>,
    /// Answer only challenges for this realm; default: the registrar's.
    pub realm: Option<String>,
    #[serde(default = "default_register_expires")]
    pub expires_secs: u32,
}

fn default_register_expires() -> u32 {
    3600
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    #[serde(default = "default_proxies")]
    pub proxies: Vec<String>,
    #[serde(default = "default_tls_port")]
    pub port: u16,
    /// The SBC's SipSignalingPort.
    #[serde(default = "default_tls_port")]
    pub listen_port: u16,
    #[serde(default = "default_options_interval")]
    pub options_interval_secs: u64,
    /// `"refer"` (the default): REFER in Allow, the SBC carries out the
    /// hub's transfers; `"hub"`: no REFER, the hub transfers on its side
    /// or with an INVITE carrying Replaces (behaviour §5); `"carrier"`:
    /// REFER passed on to the carrier when its Allow lists REFER.
    #[serde(default)]
    pub transfers: Transfers,
    /// The gateway's MediaBypass is on: the Teams leg is ICE-lite.
    #[serde(default)]
    pub media_bypass: bool,
}

/// The `session_refresh` setting.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SessionRefresh {
    #[default]
    Reinvite,
    Update,
}

/// The `hub.transfers` setting.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transfers {
    #[default]
    Refer,
    Hub,
    Carrier,
}

impl From<Transfers> for crate::b2bua::TransferMode {
    fn from(t: Transfers) -> Self {
        match t {
            Transfers::Refer => crate::b2bua::TransferMode::Refer,
            Transfers::Hub => crate::b2bua::TransferMode::HubOnly,
            Transfers::Carrier => crate::b2bua::TransferMode::Carrier,
        }
    }
}

impl Default for HubSection {
    fn default() -> Self {
        HubSection {
            proxies: default_proxies(),
            port: default_tls_port(),
            listen_port: default_tls_port(),
            options_interval_secs: default_options_interval(),
            transfers: Transfers::default(),
            media_bypass: false,
        }
    }
}

/// `[limits]`: what the SBC admits (see `docs/security.md`). Rates are new
/// requests per second per source address, each with a burst of twice
/// the rate; a trusted source (carrier gateway, hub proxy) over its rate
/// gets 503 with Retry-After, an unknown one is dropped.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub max_calls: usize,
    pub max_calls_in_setup: usize,
    pub retry_after_secs: u32,
    /// Overload control: while every message for T1 waited longer than
    /// this in the SBC's queue, a new INVITE gets 503; 0: never.
    pub max_queue_delay_ms: u64,
    /// `false`: no per-source rates at all.
    pub rate_limits: bool,
    pub invite_rate: f64,
    pub register_rate: f64,
    pub options_rate: f64,
    pub other_rate: f64,
    pub unknown_source_rate: f64,
    pub unknown_total_rate: f64,
    /// The hub's TLS connections to the SBC's listener.
    pub tls_handshake_timeout_secs: u64,
    /// 0: never.
    pub tls_idle_timeout_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let l = crate::b2bua::Limits::default();
        let r = crate::sip::endpoint::RateLimits::default();
        LimitsSection {
            max_calls: l.max_calls,
            max_calls_in_setup: l.max_calls_in_setup,
            retry_after_secs: l.retry_after_secs,
            max_queue_delay_ms: l.max_queue_delay.map_or(0, |d| d.as_millis() as u64),
            rate_limits: true,
            invite_rate: r.invite.per_second,
            register_rate: r.register.per_second,
            options_rate: r.options.per_second,
            other_rate: r.other.per_second,
            unknown_source_rate: r.unknown_source.per_second,
            unknown_total_rate: r.unknown_total.per_second,
            tls_handshake_timeout_secs: l.streams.handshake_timeout.as_secs(),
            tls_idle_timeout_secs: l.streams.idle_timeout.map_or(0, |d| d.as_secs()),
            max_connections: l.streams.max_total.unwrap_or(0),
            max_connections_per_source: l.streams.max_per_source.unwrap_or(0),
        }
    }
}

impl LimitsSection {
    fn limits(&self) -> crate::b2bua::Limits {
        use crate::sip::endpoint::{Rate, RateLimits};
        // A burst of two seconds' worth: a wave of calls at a busy-hour
        // peak passes, a sustained flood does not.
        let rate = |r: f64| Rate::new(r, ((2.0 * r).ceil() as u32).max(1));
        crate::b2bua::Limits {
            max_calls: self.max_calls,
            max_calls_in_setup: self.max_calls_in_setup,
            retry_after_secs: self.retry_after_secs,
            max_queue_delay: (self.max_queue_delay_ms != 0)
                .then(|| Duration::from_millis(self.max_queue_delay_ms)),
            rates: self.rate_limits.then(|| RateLimits {
                invite: rate(self.invite_rate),
                register: rate(self.register_rate),
                options: rate(self.options_rate),
                other: rate(self.other_rate),
                unknown_source: rate(self.unknown_source_rate),
                unknown_total: rate(self.unknown_total_rate),
                retry_after_secs: self.retry_after_secs,
            }),
            streams: crate::sip::transport::StreamLimits {
                handshake_timeout: Duration::from_secs(self.tls_handshake_timeout_secs),
                idle_timeout: (self.tls_idle_timeout_secs != 0)
                    .then(|| Duration::from_secs(self.tls_idle_timeout_secs)),
                max_total: Some(self.max_connections),
                max_per_source: Some(self.max_connections_per_source),
            },
        }
    }

    fn check(&self, path: &Path, errors: &mut Vec<ConfigError>) {
        if self.max_calls == 0 {
            errors.push(err(
                path,
                "limits.max_calls",
                "0 admits no call; at least 1".into(),
            ));
        }
        if self.max_calls_in_setup == 0 || self.max_calls_in_setup > self.max_calls.max(1) {
            errors.push(err(
                path,
                "limits.max_calls_in_setup",
                format!(
                    "{} is outside 1-{} (max_calls)",
                    self.max_calls_in_setup, self.max_calls
                ),
            ));
        }
        if !(1..=3600).contains(&self.retry_after_secs) {
            errors.push(err(
                path,
                "limits.retry_after_secs",
                format!("{} is outside 1-3600", self.retry_after_secs),
            ));
        }
        // Past 32 s (64*T1) the INVITE's sender has given up: a limit
        // that high sheds nothing anyone waits for.
        if self.max_queue_delay_ms > 32_000 {
            errors.push(err(
                path,
                "limits.max_queue_delay_ms",
                format!(
                    "{} is more than 32000 (64*T1, when the caller has given up); 0 turns overload control off",
                    self.max_queue_delay_ms
                ),
            ));
        }
        if !(1..=300).contains(&self.tls_handshake_timeout_secs) {
            errors.push(err(
                path,
                "limits.tls_handshake_timeout_secs",
                format!("{} is outside 1-300", self.tls_handshake_timeout_secs),
            ));
        }
        if self.tls_idle_timeout_secs != 0 && self.tls_idle_timeout_secs < 120 {
            errors.push(err(
                path,
                "limits.tls_idle_timeout_secs",
                format!(
                    "{} s would close the hub's connections between its OPTIONS (one a minute); at least 120, or 0 for never",
                    self.tls_idle_timeout_secs
                ),
            ));
        }
        if self.max_connections_per_source > self.max_connections {
            errors.push(err(
                path,
                "limits.max_connections_per_source",
                format!(
                    "{} is more than max_connections ({})",
                    self.max_connections_per_source, self.max_connections
                ),
            ));
        }
        if self.max_connections == 0 || self.max_connections_per_source == 0 {
            let key = if self.max_connections == 0 {
                "limits.max_connections"
            } else {
                "limits.max_connections_per_source"
            };
            errors.push(err(path, key, "0 admits no connection; at least 1".into()));
        }
        for (key, r) in [
            ("invite_rate", self.invite_rate),
            ("register_rate", self.register_rate),
            ("options_rate", self.options_rate),
            ("other_rate", self.other_rate),
            ("unknown_source_rate", self.unknown_source_rate),
            ("unknown_total_rate", self.unknown_total_rate),
        ] {
            if !(r.is_finite() && r > 0.0 && r <= 1e6) {
                errors.push(err(
                    path,
                    &format!("limits.{key}"),
                    format!("{r} is not a rate in (0, 1000000] per second (rate_limits = false turns rates off)"),
                ));
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM: the SBC's certificate followed by its intermediates.
    pub certificate: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the roots the hub's certificates chain to.
    pub trust: PathBuf,
}

fn default_media_timeout() -> u64 {
    60
}

fn default_listen_ip() -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
}
fn default_media_port_min() -> u16 {
    40000
}
fn default_media_port_max() -> u16 {
    44999
}
fn default_sip_port() -> u16 {
    5060
}
fn default_tls_port() -> u16 {
    5061
}
fn default_options_interval() -> u64 {
    60
}
fn default_proxies() -> Vec<String> {
    HUB_FQDNS.iter().map(|s| s.to_string()).collect()
}

/// Read, check and turn a configuration file into a running configuration.
/// Read a TOML file into `T`, refusing unknown keys (with `deny_unknown_fields`)
/// and naming the key at fault. Shared by the sbc, teams-sim and carrier-sim
/// configurations.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| err(path, "", format!("cannot read: {e}")))?;
    toml::from_str(&text).map_err(|e| {
        let at = e.span().map(|s| s.start.min(text.len()));
        let mut error = err(
            path,
            &at.map(|o| key_at(&text, o)).unwrap_or_default(),
            e.message().to_string(),
        );
        error.line = at.map(|o| text[..o].matches('\n').count() + 1);
        error
    })
}

/// The PEM certificates in `file` (a path relative to the configuration
/// file `config`), for the key `key_name`.
pub fn read_certs(
    config: &Path,
    key_name: &str,
    file: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    certs(
        config,
        key_name,
        &config.parent().unwrap_or(Path::new(".")).join(file),
    )
}

/// The PEM private key in `file` (relative to the configuration file).
pub fn read_key(
    config: &Path,
    key_name: &str,
    file: &Path,
) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let path = config.parent().unwrap_or(Path::new(".")).join(file);
    PrivateKeyDer::from_pem_file(&path)
        .map_err(|e| err(config, key_name, format!("{}: {e}", path.display())))
}

/// The identity (chain and key) and trust anchors a `[tls]` section names.
pub fn read_tls_material(
    path: &Path,
    tls: &TlsSection,
) -> Result<(TlsIdentity, Vec<CertificateDer<'static>>), ConfigError> {
    let identity = TlsIdentity {
        chain: read_certs(path, "tls.certificate", &tls.certificate)?,
        key: read_key(path, "tls.key", &tls.key)?,
    };
    let trust = read_certs(path, "tls.trust", &tls.trust)?;
    Ok((identity, trust))
}

/// Mutual-TLS server and client configurations from a `[tls]` section.
pub fn read_tls(
    path: &Path,
    tls: &TlsSection,
) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), ConfigError> {
    let identity = TlsIdentity {
        chain: read_certs(path, "tls.certificate", &tls.certificate)?,
        key: read_key(path, "tls.key", &tls.key)?,
    };
    let trust = read_certs(path, "tls.trust", &tls.trust)?;
    let roots = roots(&trust).map_err(|e| err(path, "tls.trust", e.to_string()))?;
    let server = server_config(&identity, roots.clone())
        .map_err(|e| err(path, "tls.certificate", e.to_string()))?;
    let client =
        client_config(&identity, roots).map_err(|e| err(path, "tls.certificate", e.to_string()))?;
    Ok((server, client))
}

/// The carrier's number rules (checked in [`check`]; a rule that got
/// here is valid).
fn rules(c: &CarrierSection) -> Result<crate::b2bua::numbers::NumberRules, ConfigError> {
    use crate::b2bua::numbers::{NumberRules, Pattern, Rule};
    let one = |r: &RuleSection| -> Option<Rule> {
        let pattern = match (&r.prefix, &r.regex) {
            (Some(p), None) => Pattern::Prefix(p.clone()),
            (None, Some(re)) => Pattern::Regex(regex::Regex::new(re).ok()?),
            _ => return None,
        };
        Some(Rule {
            pattern,
            replace: r.replace.clone(),
        })
    };
    Ok(NumberRules {
        to_e164: c.to_e164.iter().filter_map(one).collect(),
        from_e164: c.from_e164.iter().filter_map(one).collect(),
    })
}

/// A configuration error for `key` in `file`.
pub fn error(file: &Path, key: &str, reason: impl Into<String>) -> ConfigError {
    err(file, key, reason.into())
}

pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let file: FileConfig = read_toml(path)?;
    check(path, &file)?;
    let (tls_server, tls_client) = read_tls(path, &file.tls)?;
    let carrier_host = file.carrier.host.clone();
    let number_rules = rules(&file.carrier)?;
    let config = SbcConfig {
        fqdn: file.fqdn.to_ascii_lowercase(),
        listen_ip: file.listen_ip,
        advertised_ip: Some(file.media_ip),
        carrier_host: file.carrier.host,
        carrier_port: file.carrier.port,
        country_code: file.carrier.country_code,
        carrier_listen_port: file.carrier.listen_port,
        hub_fqdns: file.hub.proxies,
        hub_port: file.hub.port,
        tls_listen_port: file.hub.listen_port,
        tls_server,
        tls_client,
        options_interval: Duration::from_secs(file.hub.options_interval_secs),
        media_ports: file.media_port_min..=file.media_port_max,
        max_ringing: Duration::from_secs(180),
        transfers: file.hub.transfers.into(),
        forward_identity: file.carrier.forward_identity,
        forward_history: file.carrier.forward_history,
        session_refresh: match file.session_refresh {
            SessionRefresh::Reinvite => crate::sip::session::RefreshMethod::Reinvite,
            SessionRefresh::Update => crate::sip::session::RefreshMethod::Update,
        },
        media_bypass: file.hub.media_bypass,
        media_timeout: (file.media_timeout_secs != 0)
            .then(|| Duration::from_secs(file.media_timeout_secs)),
        registration: file.carrier.registration.map(|r| {
            crate::b2bua::register::RegistrationConfig {
                domain: r.domain.unwrap_or_else(|| carrier_host.clone()),
                username: r.username,
                password: r.password,
                realm: r.realm,
                expires: r.expires_secs,
            }
        }),
        number_rules,
        limits: file.limits.limits(),
        carrier_gateways: file.carrier.gateways,
        carrier_sources: file.carrier.sources,
        timers: crate::sip::transaction::TimerConfig::default(),
        seed: file.seed.unwrap_or(0),
    };
    let records = file
        .records
        .map(|r| path.parent().unwrap_or(Path::new(".")).join(r));
    Ok(Loaded {
        config,
        seed: file.seed,
        hosts: file.hosts,
        records,
    })
}

/// What `sbc --check` adds to loading: what only this machine and today
/// can tell. Every problem, not the first: the certificate must name the
/// FQDN (the hub checks it, behaviour §1) and be valid now (an expired one
/// is refused; within 30 days of expiry the dashboard warns); the listen
/// and media addresses must be this machine's. `Ok` carries warnings.
pub fn check_deployment(path: &Path) -> Result<Vec<String>, Vec<ConfigError>> {
    let file: FileConfig = read_toml(path).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    match read_certs(path, "tls.certificate", &file.tls.certificate) {
        Err(e) => errors.push(e),
        Ok(chain) => match chain.first() {
            None => errors.push(err(
                path,
                "tls.certificate",
                "no certificate in the file".into(),
            )),
            Some(leaf) => {
                let names = crate::sip::transport::tls::certificate_dns_names(leaf);
                if !crate::sip::transport::tls::names_cover(&names, &file.fqdn) {
                    errors.push(err(
                        path,
                        "tls.certificate",
                        format!(
                            "its names {names:?} do not cover fqdn {:?}: the hub refuses a Contact the certificate does not name",
                            file.fqdn
                        ),
                    ));
                }
                if let Ok((_, x509)) = x509_parser::parse_x509_certificate(leaf.as_ref()) {
                    // The CLI's own clock: a deployment check, not a simulation.
                    #[allow(clippy::disallowed_methods)]
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0);
                    let v = x509.validity();
                    let (from, to) = (v.not_before.timestamp(), v.not_after.timestamp());
                    if now < from {
                        errors.push(err(
                            path,
                            "tls.certificate",
                            format!("not valid before {}", v.not_before),
                        ));
                    } else if now > to {
                        errors.push(err(
                            path,
                            "tls.certificate",
                            format!("expired on {}", v.not_after),
                        ));
                    } else if to - now < 30 * 86_400 {
                        warnings.push(format!(
                            "{}: tls.certificate: expires on {} (within 30 days: the hub's dashboard warns)",
                            path.display(),
                            v.not_after
                        ));
                    }
                }
            }
        },
    }
    errors.extend(foreign_addresses(
        path,
        &[("listen_ip", file.listen_ip), ("media_ip", file.media_ip)],
    ));
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(errors)
    }
}

/// For a `--check`: each address (but the wildcard) that is not this
/// machine's, found by binding a UDP socket to it.
pub fn foreign_addresses(path: &Path, addresses: &[(&str, IpAddr)]) -> Vec<ConfigError> {
    addresses
        .iter()
        .filter(|(_, ip)| !ip.is_unspecified())
        .filter_map(|(key, ip)| {
            std::net::UdpSocket::bind((*ip, 0)).err().map(|e| {
                err(
                    path,
                    key,
                    format!("{ip} is not an address of this machine (cannot bind: {e})"),
                )
            })
        })
        .collect()
}

fn err(file: &Path, key: &str, reason: String) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: None,
        key: key.to_string(),
        reason,
        more: Vec::new(),
    }
}

/// The dotted key whose line holds byte `offset` (best effort, for messages).
fn key_at(text: &str, offset: usize) -> String {
    // toml's spans fall on char boundaries; a byte index that does not
    // (it cannot, but input is input) falls back to the start of the file.
    let offset = if text.is_char_boundary(offset.min(text.len())) {
        offset.min(text.len())
    } else {
        0
    };
    // The line holding `offset` starts after the newline before it (an
    // offset at a line's first byte belongs to that line, not the one
    // above: the old reckoning named the previous key, one byte short).
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let section = text[..start]
        .lines()
        .rev()
        .find_map(|l| {
            l.trim()
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .map(|l| l.trim_matches(|c| c == '[' || c == ']'))
        })
        .unwrap_or("");
    let key = text[start..]
        .lines()
        .next()
        .unwrap_or("")
        .split('=')
        .next()
        .unwrap_or("")
        .trim();
    match (section.is_empty(), key.is_empty() || key.starts_with('[')) {
        (_, true) => section.to_string(),
        (true, false) => key.to_string(),
        (false, false) => format!("{section}.{key}"),
    }
}

fn check(path: &Path, f: &FileConfig) -> Result<(), ConfigError> {
    let mut errors = Vec::new();
    let fqdn_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.split('.').count() >= 2
            && s.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
    };
    if !fqdn_ok(&f.fqdn) || f.fqdn.parse::<IpAddr>().is_ok() {
        errors.push(err(
            path,
            "fqdn",
            format!(
                "{:?} is not a fully qualified domain name (Direct Routing refuses IPs)",
                f.fqdn
            ),
        ));
    }
    f.limits.check(path, &mut errors);
    if f.media_timeout_secs != 0 && !(5..=3600).contains(&f.media_timeout_secs) {
        errors.push(err(
            path,
            "media_timeout_secs",
            format!(
                "{} is outside 5-3600 (0 turns it off)",
                f.media_timeout_secs
            ),
        ));
    }
    // Direct Routing: SBC FQDNs up to 63 characters.
    if f.fqdn.len() > 63 {
        errors.push(err(
            path,
            "fqdn",
            format!(
                "{} characters; Direct Routing accepts at most 63",
                f.fqdn.len()
            ),
        ));
    }
    if f.media_ip.is_unspecified() {
        errors.push(err(
            path,
            "media_ip",
            "must be the address peers send media to, not 0.0.0.0".into(),
        ));
    }
    for (key, port) in [
        ("carrier.port", f.carrier.port),
        ("carrier.listen_port", f.carrier.listen_port),
        ("hub.port", f.hub.port),
        ("hub.listen_port", f.hub.listen_port),
    ] {
        if port == 0 {
            errors.push(err(path, key, "port 0 is not a port".into()));
        }
    }
    if let Err(e) = crate::media::PortAllocator::new(f.media_port_min..=f.media_port_max) {
        errors.push(err(path, "media_port_min", e.to_string()));
    }
    if f.carrier.country_code.is_empty()
        || !f.carrier.country_code.bytes().all(|b| b.is_ascii_digit())
        || f.carrier.country_code.len() > 3
    {
        errors.push(err(
            path,
            "carrier.country_code",
            format!(
                "{:?} is not an ITU country code (1-3 digits)",
                f.carrier.country_code
            ),
        ));
    }
    for (list, rules) in [
        ("carrier.to_e164", &f.carrier.to_e164),
        ("carrier.from_e164", &f.carrier.from_e164),
    ] {
        for (i, r) in rules.iter().enumerate() {
            let key = format!("{list}[{i}]");
            match (&r.prefix, &r.regex) {
                (Some(_), Some(_)) | (None, None) => errors.push(err(
                    path,
                    &key,
                    "give exactly one of `prefix` and `regex`".into(),
                )),
                (None, Some(re)) => {
                    if let Err(e) = regex::Regex::new(re) {
                        errors.push(err(path, &format!("{key}.regex"), e.to_string()));
                    }
                }
                (Some(_), None) => {}
            }
        }
    }
    if let Some(r) = &f.carrier.registration {
        if r.username.is_empty() || r.username.contains(['"', '@', ' ']) {
            errors.push(err(
                path,
                "carrier.registration.username",
                format!("{:?} is not a SIP user name", r.username),
            ));
        }
        if r.password.is_empty() {
            errors.push(err(
                path,
                "carrier.registration.password",
                "empty: the carrier's digest challenge needs one".into(),
            ));
        }
        // RFC 3261 §10.2.1.1: registrars commonly refuse less than 60 s
        // (423); a binding longer than a day outlives any NAT or restart.
        if !(60..=86_400).contains(&r.expires_secs) {
            errors.push(err(
                path,
                "carrier.registration.expires_secs",
                format!("{} s: must be 60-86400", r.expires_secs),
            ));
        }
    }
    if f.hub.proxies.is_empty() {
        errors.push(err(
            path,
            "hub.proxies",
            "at least one hub proxy is needed".into(),
        ));
    }
    if f.hub.options_interval_secs == 0 || f.hub.options_interval_secs > 300 {
        errors.push(err(
            path,
            "hub.options_interval_secs",
            "must be 1-300: the hub demotes an SBC silent for 5 minutes".into(),
        ));
    }
    collect(errors)
}

fn certs(
    file: &Path,
    key_name: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let list: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(file, key_name, format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(file, key_name, format!("{}: {e}", path.display())))?;
    if list.is_empty() {
        return Err(err(
            file,
            key_name,
            format!("{}: no certificate in it", path.display()),
        ));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_named_is_the_one_on_the_line_at_fault() {
        let text =
            "fqdn = \"a.b\"\n[carrier]\nhost = \"x\"\ncontry_code = \"49\"\n[[proxy]]\nfqdn = 1\n";
        let at = |needle: &str| text.find(needle).unwrap();
        // An offset at the first byte of a line: that line's key (the old
        // reckoning said `carrier.host`, one byte short: "carrier.ost").
        assert_eq!(key_at(text, at("contry_code")), "carrier.contry_code");
        assert_eq!(key_at(text, at("\"49\"")), "carrier.contry_code");
        assert_eq!(key_at(text, 0), "fqdn");
        assert_eq!(key_at(text, at("fqdn = 1")), "proxy.fqdn");
        assert_eq!(key_at(text, text.len()), "proxy");
    }

    #[test]
    fn check_finds_a_certificate_for_another_name_an_expired_one_and_a_foreign_address() {
        let dir = std::env::temp_dir().join(format!("drlab-sbc-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mint = |name: &str, years: (i32, i32)| {
            let mut p = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
            p.not_before = rcgen::date_time_ymd(years.0, 1, 1);
            p.not_after = rcgen::date_time_ymd(years.1, 1, 1);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let write = |file: &str, (cert, key): (String, String), listen: &str| {
            std::fs::write(dir.join("c.pem"), cert).unwrap();
            std::fs::write(dir.join("k.pem"), key).unwrap();
            let p = dir.join(file);
            std::fs::write(
                &p,
                format!(
                    "fqdn = \"sbc.example.com\"\nmedia_ip = \"127.0.0.1\"\nlisten_ip = \"{listen}\"\n[carrier]\nhost = \"c.example.net\"\ncountry_code = \"49\"\n[tls]\ncertificate = \"c.pem\"\nkey = \"k.pem\"\ntrust = \"c.pem\"\n"
                ),
            )
            .unwrap();
            p
        };
        let good = write(
            "good.toml",
            mint("sbc.example.com", (2020, 2100)),
            "127.0.0.1",
        );
        assert_eq!(check_deployment(&good).unwrap(), Vec::<String>::new());
        // All three problems at once, each naming its key.
        let bad = write(
            "bad.toml",
            mint("other.example.com", (2020, 2021)),
            "192.0.2.77",
        );
        let errors = check_deployment(&bad).unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 3, "{text:#?}");
        assert!(text.iter().any(|t| t
            .contains("tls.certificate: its names [\"other.example.com\"")
            && t.contains("do not cover fqdn \"sbc.example.com\"")));
        assert!(text
            .iter()
            .any(|t| t.contains("tls.certificate: expired on")));
        assert!(text
            .iter()
            .any(|t| t.contains("listen_ip: 192.0.2.77 is not an address of this machine")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn limits_out_of_range_are_named_by_key_and_defaults_hold() {
        let l = LimitsSection {
            max_calls: 0,
            retry_after_secs: 0,
            max_queue_delay_ms: 40_000,
            invite_rate: -1.0,
            unknown_total_rate: f64::NAN,
            ..LimitsSection::default()
        };
        let mut errors = Vec::new();
        l.check(Path::new("sbc.toml"), &mut errors);
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "limits.max_calls",
                "limits.max_calls_in_setup",
                "limits.retry_after_secs",
                "limits.max_queue_delay_ms",
                "limits.invite_rate",
                "limits.unknown_total_rate"
            ]
        );
        let mut none = Vec::new();
        LimitsSection::default().check(Path::new("sbc.toml"), &mut none);
        assert!(none.is_empty(), "{none:?}");
        let d = LimitsSection::default().limits();
        assert_eq!(d.max_calls, crate::b2bua::Limits::default().max_calls);
        let rates = d.rates.unwrap();
        assert_eq!((rates.invite.per_second, rates.invite.burst), (100.0, 200));
        let mut short = Vec::new();
        LimitsSection {
            tls_idle_timeout_secs: 60,
            max_connections_per_source: 0,
            ..LimitsSection::default()
        }
        .check(Path::new("sbc.toml"), &mut short);
        let keys: Vec<&str> = short.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "limits.tls_idle_timeout_secs",
                "limits.max_connections_per_source"
            ]
        );
        let off = LimitsSection {
            rate_limits: false,
            ..LimitsSection::default()
        };
        assert!(off.limits().rates.is_none());
    }

    #[test]
    fn a_toml_mistake_names_file_line_and_key() {
        let dir = std::env::temp_dir().join(format!("drlab-sbc-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("sbc.toml");
        std::fs::write(
            &p,
            "fqdn = \"sbc.example.com\"\n\n[carrier]\nhost = \"c\"\ncontry_code = \"49\"\n",
        )
        .unwrap();
        let e = read_toml::<FileConfig>(&p).unwrap_err();
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(5), "carrier.contry_code"),
            "{e}"
        );
        assert!(e
            .to_string()
            .contains("sbc.toml:5: carrier.contry_code: unknown field"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
