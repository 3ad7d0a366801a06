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

#[test]
fn a_call_through_real_sockets() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pki = TestPki::new().unwrap();
        let root = roots(&[pki.root()]).unwrap();
        let hub_id = pki.hub().unwrap();
        let sbc_id = pki.good(&["sbc.example.com"]).unwrap();
        let (hub_port, sbc_tls, sbc_udp, carrier_udp) =
            (free_tcp(), free_tcp(), free_udp(), free_udp());
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
        let (_hub_commands, hub_rx) = mpsc::unbounded_channel();
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

        let (phone_tx, phone_rx) = mpsc::unbounded_channel();
        tokio::spawn(media_host(net.clone(), phone_rx));
        let carrier_view = Arc::new(Mutex::new(CarrierView::default()));
        let (carrier_commands, carrier_rx) = mpsc::unbounded_channel();
        let carrier = CarrierConfig {
            fqdn: "carrier.example.net".into(),
            listen_port: carrier_udp,
            sbc_host: "sbc.example.com".into(),
            sbc_port: sbc_udp,
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

        let active = || {
            hub_view
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
