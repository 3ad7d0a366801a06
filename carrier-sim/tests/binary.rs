//! The carrier-sim binary on real sockets: a trunk that cannot bind stops
//! the program (exit 1) rather than leaving a console whose calls go
//! nowhere, and it never says it listens.
//! (127.0.10.x: an address no other test of the workspace uses.)

use drlab_sim::console::run_until_exit;
use std::process::Command;

const CARRIER: &str = r#"
fqdn = "carrier.example.net"
listen_port = 5070
media_ip = "127.0.10.20"
sbc_host = "sbc.example.com"
sbc_port = 5060
country_code = "49"
phones = ["+4930123456"]
[hosts]
"carrier.example.net" = "127.0.10.20"
"sbc.example.com" = "127.0.10.10"
"#;

#[test]
fn a_trunk_that_cannot_bind_stops_the_carrier() {
    let dir = std::env::temp_dir().join(format!("drlab-carrier-sim-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("carrier.toml");
    std::fs::write(&file, CARRIER).unwrap();
    let taken = std::net::UdpSocket::bind("127.0.10.20:5070").unwrap();
    // Up to 10 s (500 looks) for it to stop.
    let (status, stderr) = run_until_exit(
        Command::new(env!("CARGO_BIN_EXE_carrier-sim"))
            .arg("-c")
            .arg(&file),
        500,
    )
    .unwrap();
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(stderr.contains("trunk stopped: cannot bind"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}
