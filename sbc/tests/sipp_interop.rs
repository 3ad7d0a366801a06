//! The SBC binary on real sockets against SIPp, an independent SIP
//! implementation, with no hub proxy reachable: OPTIONS on the carrier side
//! gets 503 with Retry-After (the carrier should route elsewhere; 200 once
//! a hub proxy answers the SBC's own OPTIONS, a scenario checks that); an
//! INVITE gets 100 then 503, and SIPp's ACK (with the INVITE's branch)
//! stops the 503 retransmissions.
//!
//! Needs `sipp` (Debian package sip-tester; `.ci/run` installs it). Without
//! it the test says so and does nothing.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Sbc(Child);

impl Drop for Sbc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sipp(scenario: &Path, dir: &Path, local_port: u16, sbc_port: u16) -> (bool, String) {
    let out = Command::new("sipp")
        .args([
            "-sf",
            scenario.to_str().unwrap(),
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-p",
            &local_port.to_string(),
        ])
        .arg(format!("127.0.0.1:{sbc_port}"))
        .args([
            "-timeout",
            "15",
            "-timeout_error",
            "-nostdin",
            "-trace_msg",
            "-message_file",
        ])
        .arg(dir.join(format!(
            "{}.log",
            scenario.file_stem().unwrap().to_string_lossy()
        )))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("sipp runs");
    let log = std::fs::read_to_string(dir.join(format!(
        "{}.log",
        scenario.file_stem().unwrap().to_string_lossy()
    )))
    .unwrap_or_default();
    (
        out.status.success(),
        format!("{}\n{log}", String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn sipp_talks_to_the_sbc_over_udp() {
    if Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("sipp is not installed: SIPp interop not checked (apt-get install sip-tester)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("drlab-sipp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    drlab_sim::pki::TestPki::new()
        .unwrap()
        .write_pem(&dir, "sbc.example.com")
        .unwrap();
    let (carrier_port, sbc_port, tls_port, dead_hub_port) = (
        free_udp_port(),
        free_udp_port(),
        free_tcp_port(),
        free_tcp_port(),
    );
    let config = format!(
        "fqdn = \"sbc.example.com\"\nmedia_ip = \"127.0.0.1\"\nseed = 1\n\
         [carrier]\nhost = \"127.0.0.1\"\nport = {carrier_port}\nlisten_port = {sbc_port}\ncountry_code = \"49\"\n\
         [hub]\nproxies = [\"localhost\"]\nport = {dead_hub_port}\nlisten_port = {tls_port}\n\
         [tls]\ncertificate = \"sbc.example.com.pem\"\nkey = \"sbc.example.com.key\"\ntrust = \"ca.pem\"\n"
    );
    std::fs::write(dir.join("sbc.toml"), config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sbc"))
        .args([
            "--config",
            dir.join("sbc.toml").to_str().unwrap(),
            "--trace",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sbc.log")).unwrap())
        .spawn()
        .expect("sbc starts");
    let _sbc = Sbc(child);
    std::thread::sleep(Duration::from_millis(500));
    let scenarios = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp");
    for name in ["options.xml", "invite_503.xml"] {
        let (ok, log) = sipp(&scenarios.join(name), &dir, carrier_port, sbc_port);
        let sbc_log = std::fs::read_to_string(dir.join("sbc.log")).unwrap_or_default();
        assert!(
            ok,
            "SIPp scenario {name} failed:\n{log}\nSBC log:\n{sbc_log}"
        );
    }
    let sbc_log = std::fs::read_to_string(dir.join("sbc.log")).unwrap_or_default();
    // One 503 to the OPTIONS, one to the INVITE: none sent again after
    // SIPp's ACK.
    assert_eq!(
        sbc_log.matches("SIP/2.0 503").count(),
        2,
        "the 503 was retransmitted after SIPp's ACK:\n{sbc_log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
