//! The whole lab on the operating system's sockets instead of turmoil's:
//! the hub proxy (mutual TLS), the reference SBC and the carrier trunk on
//! 127.0.0.1 with wall-clock time, one call placed and hung up, audio
//! checked at both far ends. The same role code as the simulated suites;
//! only the `Network` differs.

use carrier_sim::trunk::{run_trunk, CarrierCommand, CarrierConfig, CarrierView, Phone, PstnState};
use sbc::b2bua::{run_sbc, SbcConfig, SbcView};
use sbc::media::media_host;
use sbc::pki::TestPki;
use sbc::sip::transport::tls::{client_config, roots, server_config};
use sbc::sip::transport::TokioNet;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teams_sim::hub::{run_proxy, CallState, HubConfig, HubView, SbcStatus, TeamsUser, Tenant};
use tokio::sync::mpsc;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a lab started by [`start_hub_and_sbc`] exposes.
struct Lab {
    hub: Arc<Mutex<HubView>>,
    sbc: Arc<Mutex<SbcView>>,
    sbc_udp: u16,
    net: TokioNet,
    /// Kept so the hub's command channel stays open.
    _hub_commands: mpsc::UnboundedSender<teams_sim::hub::HubCommand>,
}

/// The hub proxy and the SBC on 127.0.0.1; the SBC's carrier is at `carrier_udp`.
fn start_hub_and_sbc(carrier_udp: u16) -> Lab {
    let pki = TestPki::new().unwrap();
    let root = roots(&[pki.root()]).unwrap();
    let hub_id = pki.hub().unwrap();
    let sbc_id = pki.good(&["sbc.example.com"]).unwrap();
    let (hub_port, sbc_tls, sbc_udp) = (free_tcp(), free_tcp(), free_udp());
    let names = [
        "sip.pstnhub.microsoft.com",
        "sbc.example.com",
        "carrier.example.net",
        "phone.carrier.example.net",
    ];
    let net = TokioNet::with_hosts(
        names
            .iter()
            .map(|n| (n.to_string(), LOCAL))
            .collect::<BTreeMap<_, _>>(),
    );
    let tenant = Tenant {
        sbcs: vec!["sbc.example.com".into()],
        sbc_port: sbc_tls,
        users: vec![TeamsUser {
            number: "+4989000001".into(),
            name: "Alice".into(),
        }],
    };
    let hub_view = Arc::new(Mutex::new(HubView::new(&tenant)));
    let (mp_tx, mp_rx) = mpsc::unbounded_channel();
    tokio::spawn(media_host(net.clone(), mp_rx));
    let (hub_commands, hub_rx) = mpsc::unbounded_channel();
    let hub = HubConfig {
        fqdn: "sip.pstnhub.microsoft.com".into(),
        listen_ip: LOCAL,
        listen_port: hub_port,
        advertised_ip: Some(LOCAL),
        internal_name: "sip-du-a-eu.pstnhub.microsoft.com".into(),
        tenant,
        tls_server: server_config(&hub_id, root.clone()).unwrap(),
        tls_client: client_config(&hub_id, root.clone()).unwrap(),
        media_host: "127.0.0.1".into(),
        media: mp_tx,
        media_frames: 25,
        forks: 2,
        early_media: true,
        ring_delay: Duration::from_millis(100),
        answer_delay: Duration::from_millis(200),
        no_ack_timeout: Duration::from_secs(4),
        options_interval: Duration::from_secs(60),
        seed: 1,
    };
    tokio::spawn(run_proxy(net.clone(), hub, hub_view.clone(), hub_rx, None));
    let sbc_view = Arc::new(Mutex::new(SbcView::default()));
    let sbc = SbcConfig {
        fqdn: "sbc.example.com".into(),
        listen_ip: LOCAL,
        advertised_ip: Some(LOCAL),
        carrier_host: "carrier.example.net".into(),
        carrier_port: carrier_udp,
        country_code: "49".into(),
        carrier_listen_port: sbc_udp,
        hub_fqdns: vec!["sip.pstnhub.microsoft.com".into()],
        hub_port,
        tls_listen_port: sbc_tls,
        tls_server: server_config(&sbc_id, root.clone()).unwrap(),
        tls_client: client_config(&sbc_id, root).unwrap(),
        options_interval: Duration::from_secs(60),
        media_port_base: 42000,
        seed: 1,
    };
    tokio::spawn(run_sbc(net.clone(), sbc, sbc_view.clone(), None));
    Lab {
        hub: hub_view,
        sbc: sbc_view,
        sbc_udp,
        net,
        _hub_commands: hub_commands,
    }
}

async fn until_active(lab: &Lab) {
    let active = || {
        lab.hub
            .lock()
            .unwrap()
            .sbcs
            .get("sbc.example.com")
            .is_some_and(|h| h.status == SbcStatus::Active)
    };
    wait_for(
        "the hub to mark the SBC active",
        Duration::from_secs(10),
        active,
    )
    .await;
}

#[test]
fn a_call_through_real_sockets() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let carrier_udp = free_udp();
        let lab = start_hub_and_sbc(carrier_udp);
        let (hub_view, sbc_view, net) = (lab.hub.clone(), lab.sbc.clone(), lab.net.clone());
        let (phone_tx, phone_rx) = mpsc::unbounded_channel();
        tokio::spawn(media_host(net.clone(), phone_rx));
        let carrier_view = Arc::new(Mutex::new(CarrierView::default()));
        let (carrier_commands, carrier_rx) = mpsc::unbounded_channel();
        let carrier = CarrierConfig {
            fqdn: "carrier.example.net".into(),
            listen_port: carrier_udp,
            sbc_host: "sbc.example.com".into(),
            sbc_port: lab.sbc_udp,
            country_code: "49".into(),
            phones: vec![Phone {
                number: "+4930123456".into(),
                media_host: "phone.carrier.example.net".into(),
                media: phone_tx,
            }],
            ring_delay: Duration::from_millis(100),
            answer_delay: Duration::from_millis(200),
            media_frames: 25,
            seed: 1,
        };
        tokio::spawn(run_trunk(
            net.clone(),
            carrier,
            carrier_view.clone(),
            carrier_rx,
            None,
        ));
        until_active(&lab).await;

        carrier_commands
            .send(CarrierCommand::Call {
                from: "+4930123456".into(),
                to: "+4989000001".into(),
            })
            .unwrap();
        let answered = || {
            hub_view
                .lock()
                .unwrap()
                .calls
                .last()
                .is_some_and(|c| c.state == CallState::Answered && c.acked)
        };
        wait_for(
            "the Teams user to answer and the SBC to ACK",
            Duration::from_secs(10),
            answered,
        )
        .await;
        let (teams, pstn) = (
            hub_view.lock().unwrap().calls[0].media.clone(),
            carrier_view.lock().unwrap().calls[0].media.clone(),
        );
        let heard = || teams.lock().unwrap().received >= 25 && pstn.lock().unwrap().received >= 25;
        wait_for("25 frames at each end", Duration::from_secs(10), heard).await;
        for stats in [teams.lock().unwrap().clone(), pstn.lock().unwrap().clone()] {
            assert_eq!(
                (stats.out_of_order, stats.corrupt, stats.unprotect_errors),
                (0, 0, 0),
                "{stats:?}"
            );
        }

        carrier_commands
            .send(CarrierCommand::HangUp {
                number: "+4930123456".into(),
            })
            .unwrap();
        let ended = || matches!(hub_view.lock().unwrap().calls[0].state, CallState::Ended(_));
        wait_for(
            "the Teams side to see the BYE",
            Duration::from_secs(5),
            ended,
        )
        .await;
        assert!(matches!(
            carrier_view.lock().unwrap().calls[0].state,
            PstnState::Ended(_)
        ));
        assert!(
            sbc_view.lock().unwrap().problems.is_empty(),
            "{:?}",
            sbc_view.lock().unwrap().problems
        );
    });
}

/// SIPp, an independent SIP implementation, as the carrier: INVITE with
/// plain RTP, the Teams user answers through the SBC, ACK, BYE. Needs
/// `sipp` (Debian's sip-tester); without it the test says so and stops.
#[test]
fn sipp_as_the_carrier_calls_a_teams_user() {
    if std::process::Command::new("sipp")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!(
            "sipp is not installed: SIPp carrier call not checked (apt-get install sip-tester)"
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sipp_port = free_udp();
        let lab = start_hub_and_sbc(sipp_port);
        until_active(&lab).await;
        let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/call.xml");
        let dir = std::env::temp_dir().join(format!("drlab-sipp-call-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("messages.log");
        let out = tokio::process::Command::new("sipp")
            .args([
                "-sf",
                scenario,
                "-m",
                "1",
                "-i",
                "127.0.0.1",
                "-p",
                &sipp_port.to_string(),
            ])
            .arg(format!("127.0.0.1:{}", lab.sbc_udp))
            .args([
                "-timeout",
                "15",
                "-timeout_error",
                "-nostdin",
                "-trace_msg",
                "-message_file",
            ])
            .arg(&log)
            .current_dir(&dir)
            .output()
            .await
            .expect("sipp runs");
        let messages = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            out.status.success(),
            "SIPp call failed:\n{}\n{messages}",
            String::from_utf8_lossy(&out.stderr)
        );
        let calls = lab.hub.lock().unwrap().calls.clone();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert!(
            calls[0].acked,
            "the SBC did not ACK the hub's 200 after SIPp's ACK"
        );
        let ended = || matches!(lab.hub.lock().unwrap().calls[0].state, CallState::Ended(_));
        for _ in 0..100 {
            if ended() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let state = lab.hub.lock().unwrap().calls[0].state.clone();
        let problems = lab.sbc.lock().unwrap().problems.clone();
        assert!(ended(), "SIPp's BYE did not reach the Teams side ({state:?}, SBC problems {problems:?}):\n{messages}");
        assert!(
            lab.sbc.lock().unwrap().problems.is_empty(),
            "{:?}",
            lab.sbc.lock().unwrap().problems
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}
