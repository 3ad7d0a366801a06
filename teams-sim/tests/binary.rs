//! The teams-sim binary on real sockets: a proxy that cannot bind stops
//! the program (exit 1) rather than leaving a hub short of a proxy, and
//! "listening" is said only of a proxy that listens.
//! (127.0.10.x: an address no other test of the workspace uses.)

use drlab_sim::console::run_until_exit;
use drlab_sim::pki::TestPki;
use std::process::Command;

const HUB: &str = r#"
media_ip = "127.0.10.1"
[[proxy]]
fqdn = "sip.pstnhub.microsoft.com"
listen = "127.0.10.1:5061"
[[proxy]]
fqdn = "sip2.pstnhub.microsoft.com"
listen = "127.0.10.2:5061"
[tenant]
sbcs = ["sbc.example.com"]
sbc_port = 5061
routes = [["sbc.example.com"]]
users = [{ number = "+4989000001", name = "Alice" }]
[tls]
certificate = "hub.pem"
key = "hub.key"
trust = "ca.pem"
[hosts]
"sbc.example.com" = "127.0.10.10"
"#;

#[test]
fn a_proxy_that_cannot_bind_stops_the_hub() {
    let dir = std::env::temp_dir().join(format!("drlab-teams-sim-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    TestPki::new()
        .unwrap()
        .write_pem(&dir, "sbc.example.com")
        .unwrap();
    let file = dir.join("hub.toml");
    std::fs::write(&file, HUB).unwrap();
    // The second proxy's port is taken.
    let taken = std::net::TcpListener::bind("127.0.10.2:5061").unwrap();
    // Up to 10 s (500 looks) for it to stop.
    let (status, stderr) = run_until_exit(
        Command::new(env!("CARGO_BIN_EXE_teams-sim"))
            .arg("-c")
            .arg(&file),
        500,
    )
    .unwrap();
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(
        stderr.contains("proxy sip2.pstnhub.microsoft.com stopped: cannot bind"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("sip2.pstnhub.microsoft.com listening"),
        "{stderr}"
    );
}
