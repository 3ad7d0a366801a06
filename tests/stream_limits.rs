//! The bounds on accepted connections (issue 14 item 3), in a simulated
//! world so that seconds cost nothing: a TLS handshake held open is closed
//! at the handshake timeout, a silent connection at the idle timeout (and
//! a connection that keeps sending keep-alives is not), and one address
//! past its cap is closed at once. Each closing names its rule.

use drlab_sim::pki::TestPki;
use sbc::sip::transport::tls::{roots, server_config};
use sbc::sip::transport::{
    SipTransport, StreamLimits, TlsListen, TransportConfig, TransportEvent, TurmoilNet,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

const TLS: u16 = 5061;
const TCP: u16 = 5060;

/// Read until the server closes; how long that took.
async fn closed_after(s: &mut TcpStream) -> Duration {
    let t0 = tokio::time::Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return t0.elapsed(),
            Ok(_) => {}
        }
    }
}

#[test]
fn handshake_idle_and_per_source_limits_close_connections_and_say_why() {
    let pki = TestPki::new().unwrap();
    let id = pki.good(&["server.example.com"]).unwrap();
    let config = server_config(&id, roots(&[pki.root()]).unwrap()).unwrap();
    let reasons = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut sim = turmoil::Builder::new()
        .rng_seed(1)
        .simulation_duration(Duration::from_secs(120))
        .build();
    let (r, c) = (reasons.clone(), config.clone());
    sim.host("server", move || {
        let (reasons, config) = (r.clone(), c.clone());
        async move {
            let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
            let mut tc = TransportConfig::new("server");
            tc.tcp = Some(SocketAddr::new(any, TCP));
            tc.tls = Some(TlsListen {
                addr: SocketAddr::new(any, TLS),
                config,
                allowed_client_names: None,
            });
            tc.limits = StreamLimits {
                handshake_timeout: Duration::from_secs(10),
                idle_timeout: Some(Duration::from_secs(5)),
                max_per_source: Some(2),
                max_total: Some(10),
            };
            let (_t, mut events) = SipTransport::start(TurmoilNet, tc, None).await?;
            while let Some(e) = events.recv().await {
                if let TransportEvent::TlsRefused { reason, .. } = e {
                    reasons.lock().unwrap().push(reason);
                }
            }
            Ok(())
        }
    });
    let timings = Arc::new(Mutex::new(Vec::<(&str, Duration)>::new()));
    let out = timings.clone();
    sim.client("client", async move {
        let server = turmoil::lookup("server");
        // A TLS handshake held open: nothing sent after the TCP connect.
        let mut held = TcpStream::connect((server, TLS)).await?;
        let took = closed_after(&mut held).await;
        out.lock().unwrap().push(("handshake", took));
        // Two plain connections from this address, then a third.
        let mut a = TcpStream::connect((server, TCP)).await?;
        let mut b = TcpStream::connect((server, TCP)).await?;
        let mut third = TcpStream::connect((server, TCP)).await?;
        let took = closed_after(&mut third).await;
        out.lock().unwrap().push(("third", took));
        // `b` sends a keep-alive (RFC 5626 §4.4.1) every 2 s for 8 s;
        // `a` is silent and goes at 5 s; `b` 5 s after its last.
        let keep = tokio::spawn(async move {
            for _ in 0..4 {
                b.write_all(b"\r\n\r\n").await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let t0 = tokio::time::Instant::now();
            closed_after(&mut b).await;
            Ok::<_, std::io::Error>(t0.elapsed())
        });
        let took = closed_after(&mut a).await;
        out.lock().unwrap().push(("silent", took));
        let after_last = keep.await.unwrap()?;
        out.lock()
            .unwrap()
            .push(("kept alive, after its last", after_last));
        Ok(())
    });
    sim.run().unwrap();
    let t: std::collections::BTreeMap<&str, Duration> =
        timings.lock().unwrap().iter().cloned().collect();
    let near = |d: Duration, secs: f64| (d.as_secs_f64() - secs).abs() < 0.5;
    assert!(near(t["handshake"], 10.0), "{t:?}");
    assert!(t["third"] < Duration::from_millis(100), "{t:?}");
    assert!(near(t["silent"], 5.0), "{t:?}");
    // Its last keep-alive went 2 s before the loop ended: 5 - 2 = 3 s on.
    assert!(near(t["kept alive, after its last"], 3.0), "{t:?}");
    let reasons = reasons.lock().unwrap().join("\n");
    for rule in [
        "handshake timeout",
        "max_connections_per_source is 2",
        "idle timeout",
    ] {
        assert!(reasons.contains(rule), "{rule:?} in:\n{reasons}");
    }
}
