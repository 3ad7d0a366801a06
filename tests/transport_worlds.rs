//! The same transport code in both worlds: operating-system sockets on
//! loopback (tokio) and simulated hosts (turmoil). Each exchange sends an
//! OPTIONS over UDP and over TCP, gets a 200, and the tap sees all four
//! messages with direction, transport and addresses.

use sbc::sip::transaction::response_to;
use sbc::sip::transport::tap::Direction;
use sbc::sip::transport::{
    Network, Recorder, SipTransport, Target, TokioNet, TransportConfig, TransportEvent,
    TransportKind, TurmoilNet,
};
use sbc::sip::wire::Message;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

fn options(branch: &str) -> Message {
    let raw = format!(
        "OPTIONS sip:server SIP/2.0\r\nVia: SIP/2.0/UDP client;branch=z9hG4bK{branch}\r\nFrom: <sip:client>;tag=1\r\n\
         To: <sip:server>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    Message::parse(raw.as_bytes()).unwrap()
}

async fn start_server<N: Network>(
    net: N,
    bind: SocketAddr,
    tap: Arc<Recorder>,
) -> std::io::Result<SipTransport<N>> {
    let mut cfg = TransportConfig::new("server");
    cfg.udp = Some(bind);
    cfg.tcp = Some(bind);
    let (t, mut events) = SipTransport::start(net, cfg, Some(tap)).await?;
    let server = t.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let TransportEvent::Message {
                message, source, ..
            } = ev
            {
                let _ = server
                    .reply(&response_to(&message, 200, "OK", Some("s1")), &source)
                    .await;
            }
        }
    });
    Ok(t)
}

async fn ask<N: Network>(
    net: N,
    ip: IpAddr,
    server: SocketAddr,
    udp_server: SocketAddr,
    tap: Arc<Recorder>,
) -> std::io::Result<Vec<String>> {
    let mut cfg = TransportConfig::new("client");
    cfg.udp = Some(SocketAddr::new(ip, 0));
    let (t, mut events) = SipTransport::start(net, cfg, Some(tap)).await?;
    let mut answers = Vec::new();
    for (kind, addr, branch) in [
        (TransportKind::Udp, udp_server, "u"),
        (TransportKind::Tcp, server, "t"),
    ] {
        t.send(
            &options(branch),
            &Target {
                transport: kind,
                addr,
                server_name: None,
            },
        )
        .await
        .map_err(std::io::Error::other)?;
        let ev = tokio::time::timeout(Duration::from_secs(2), events.recv()).await?;
        if let Some(TransportEvent::Message {
            message, source, ..
        }) = ev
        {
            answers.push(format!(
                "{} {} via {}",
                message.summary(),
                message.call_id().unwrap(),
                source.transport
            ));
        }
    }
    // A second request to the same TCP peer reuses the connection.
    t.send(
        &options("t2"),
        &Target {
            transport: TransportKind::Tcp,
            addr: server,
            server_name: None,
        },
    )
    .await
    .map_err(std::io::Error::other)?;
    let _ = tokio::time::timeout(Duration::from_secs(2), events.recv()).await?;
    answers.push(format!("connections: {}", t.connection_count()));
    Ok(answers)
}

fn check(answers: &[String], tap: &Recorder) {
    assert_eq!(
        answers,
        ["200 OK u via UDP", "200 OK t via TCP", "connections: 1"]
    );
    let events = tap.events();
    let seen: Vec<(String, Direction, TransportKind)> = events
        .iter()
        .map(|e| (e.host.clone(), e.direction, e.transport))
        .collect();
    assert_eq!(seen.len(), 12, "{seen:?}");
    assert_eq!(
        seen[0],
        ("client".into(), Direction::Sent, TransportKind::Udp)
    );
    assert_eq!(
        seen[1],
        ("server".into(), Direction::Received, TransportKind::Udp)
    );
    assert!(events.iter().all(|e| Message::parse(&e.raw).is_ok()));
}

#[test]
fn real_sockets_on_loopback() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tap = Arc::new(Recorder::default());
    let answers = rt.block_on(async {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let server = start_server(TokioNet::default(), SocketAddr::new(ip, 0), tap.clone())
            .await
            .unwrap();
        let tcp = server.local_addr(TransportKind::Tcp).unwrap();
        let udp = server.local_addr(TransportKind::Udp).unwrap();
        ask(TokioNet::default(), ip, tcp, udp, tap.clone())
            .await
            .unwrap()
    });
    check(&answers, &tap);
}

#[test]
fn simulated_hosts() {
    let tap = Arc::new(Recorder::default());
    let mut sim = turmoil::Builder::new()
        .rng_seed(1)
        .simulation_duration(Duration::from_secs(10))
        .build();
    let server_tap = tap.clone();
    sim.host("server", move || {
        let tap = server_tap.clone();
        async move {
            let _server = start_server(
                TurmoilNet,
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5060),
                tap,
            )
            .await?;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let client_tap = tap.clone();
    let answers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = answers.clone();
    sim.client("client", async move {
        let server = SocketAddr::new(turmoil::lookup("server"), 5060);
        let got = ask(
            TurmoilNet,
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            server,
            server,
            client_tap,
        )
        .await?;
        *out.lock().unwrap() = got;
        Ok(())
    });
    sim.run().unwrap();
    check(&answers.lock().unwrap(), &tap);
}
