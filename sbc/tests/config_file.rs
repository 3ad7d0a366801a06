//! The SBC's configuration file: a good file loads with its defaults, and
//! every error names the file, the key and the reason.

use drlab_sim::pki::TestPki;
use sbc::config::{load, Loaded};
use std::path::{Path, PathBuf};

fn write_pki(dir: &Path) {
    let pki = TestPki::new().unwrap();
    pki.write_pem(dir, "sbc.example.com").unwrap();
}

fn with_file(body: &str) -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new();
    write_pki(dir.path());
    let p = dir.path().join("sbc.toml");
    std::fs::write(&p, body).unwrap();
    (dir, p)
}

const GOOD: &str = r#"
fqdn = "sbc.example.com"
media_ip = "192.0.2.10"

[carrier]
host = "carrier.example.net"
country_code = "49"

[tls]
certificate = "sbc.example.com.pem"
key = "sbc.example.com.key"
trust = "ca.pem"
"#;

#[test]
fn a_good_file_loads_with_defaults() {
    let (_d, p) = with_file(GOOD);
    let Loaded {
        config: c,
        seed,
        hosts,
        records,
    } = load(&p).unwrap();
    assert!(hosts.is_empty());
    assert_eq!(records, None);
    assert!(c.registration.is_none() && c.carrier_gateways.is_empty());
    assert_eq!(c.fqdn, "sbc.example.com");
    assert_eq!(c.hub_fqdns.len(), 3);
    assert_eq!((c.carrier_port, c.tls_listen_port), (5060, 5061));
    assert_eq!(c.media_ports, 40000..=44999);
    assert_eq!(seed, None);
}

#[test]
fn a_registration_trunk_and_a_records_file_load_and_bad_values_name_their_key() {
    let reg = GOOD.replace(
        "[tls]",
        "[carrier.registration]\nusername = \"sbc1\"\npassword = \"pw\"\nexpires_secs = 600\n\n[tls]",
    );
    let (_d, p) = with_file(&format!("records = \"calls.jsonl\"\n{reg}"));
    let l = load(&p).unwrap();
    let r = l.config.registration.unwrap();
    assert_eq!((r.username.as_str(), r.expires), ("sbc1", 600));
    assert_eq!(
        r.domain, l.config.carrier_host,
        "the domain defaults to the carrier host"
    );
    assert_eq!(l.records, Some(p.parent().unwrap().join("calls.jsonl")));
    let (_d, p) = with_file(&reg.replace("expires_secs = 600", "expires_secs = 5"));
    assert_eq!(
        load(&p).unwrap_err().key,
        "carrier.registration.expires_secs"
    );
    let (_d, p) = with_file(&reg.replace("password = \"pw\"", "password = \"\""));
    assert_eq!(load(&p).unwrap_err().key, "carrier.registration.password");
}

#[test]
fn number_rules_load_and_a_bad_one_names_its_key() {
    let with = |rules: &str| GOOD.replace("[tls]", &format!("{rules}\n[tls]"));
    let (_d, p) = with_file(&with(
        "[[carrier.to_e164]]\nregex = '^(\\d{6})$'\nreplace = \"+4989$1\"\n[[carrier.from_e164]]\nprefix = \"+49\"\nreplace = \"0049\"\n",
    ));
    let c = load(&p).unwrap().config;
    assert_eq!(c.number_rules.e164("000002", "49").unwrap(), "+4989000002");
    assert_eq!(c.number_rules.carrier("+4930123456", "49"), "004930123456");
    let (_d, p) = with_file(&with(
        "[[carrier.to_e164]]\nregex = '^(\\d{6}$'\nreplace = \"x\"\n",
    ));
    assert_eq!(load(&p).unwrap_err().key, "carrier.to_e164[0].regex");
    let (_d, p) = with_file(&with(
        "[[carrier.from_e164]]\nprefix = \"+\"\nregex = \"x\"\nreplace = \"x\"\n",
    ));
    assert_eq!(load(&p).unwrap_err().key, "carrier.from_e164[0]");
}

#[test]
fn errors_name_the_file_key_and_reason() {
    let (_d, p) = with_file(&GOOD.replace("\"sbc.example.com\"", "\"10.0.0.1\""));
    let e = load(&p).unwrap_err();
    assert_eq!(e.key, "fqdn");
    assert!(
        e.to_string()
            .starts_with(&format!("{}: fqdn:", p.display())),
        "{e}"
    );

    let (_d, p) = with_file(&GOOD.replace("country_code = \"49\"", "country_code = \"+49\""));
    assert_eq!(load(&p).unwrap_err().key, "carrier.country_code");

    let (_d, p) =
        with_file(&GOOD.replace("key = \"sbc.example.com.key\"", "key = \"missing.key\""));
    let e = load(&p).unwrap_err();
    assert_eq!(e.key, "tls.key");
    assert!(e.reason.contains("missing.key"), "{e}");

    let (_d, p) = with_file(&format!("{GOOD}\nbogus = 1\n"));
    let e = load(&p).unwrap_err();
    assert!(e.reason.contains("unknown field"), "{e}");

    let (_d, p) = with_file(&GOOD.replace("media_ip = \"192.0.2.10\"", "media_ip = \"nope\""));
    assert_eq!(load(&p).unwrap_err().key, "media_ip");
}

/// The binary says it listens only once its ports are bound: with the
/// carrier port taken it prints the bind error and exits 1, with no
/// "listening" line before it; with the port free, the line comes.
/// (127.0.9.x: an address no other test of the workspace uses.)
#[test]
fn the_binary_says_it_listens_only_once_it_does() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let file = GOOD.replacen("fqdn = ", "listen_ip = \"127.0.9.10\"\nfqdn = ", 1)
        + "[hosts]\n\
           \"sip.pstnhub.microsoft.com\" = \"127.0.9.1\"\n\
           \"sip2.pstnhub.microsoft.com\" = \"127.0.9.2\"\n\
           \"sip3.pstnhub.microsoft.com\" = \"127.0.9.3\"\n\
           \"carrier.example.net\" = \"127.0.9.20\"\n";
    let (_d, p) = with_file(&file);
    let sbc = env!("CARGO_BIN_EXE_sbc");
    let taken = std::net::UdpSocket::bind("127.0.9.10:5060").unwrap();
    let out = Command::new(sbc)
        .arg("-c")
        .arg(&p)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot bind SIP UDP 127.0.9.10:5060"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
    drop(taken);
    let mut child = Command::new(sbc)
        .arg("-c")
        .arg(&p)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .next()
        .and_then(Result::ok);
    let _ = child.kill();
    let _ = child.wait();
    let first = first.unwrap_or_default();
    assert!(
        first.starts_with("sbc: sbc.example.com listening: carrier UDP 5060, Teams TLS 5061"),
        "{first}"
    );
}

/// A temporary directory removed on drop (no extra dependency for tests).
mod tempdir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    pub struct Dir(PathBuf);
    static N: AtomicU32 = AtomicU32::new(0);

    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!(
                "drlab-config-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
