//! A scripted SIP peer: sends exactly the message a step wrote (no
//! transaction layer, no automatic ACK) and keeps everything it receives.
//! It can stand where the SBC stands (TLS with the SBC's certificate,
//! toward the hub), where the hub stands (TLS with the hub's certificate,
//! toward the SBC), or where the carrier stands (UDP, toward the SBC).
//! Certification steps use it to send what a faulty peer would, which the
//! well-behaved simulators never do. It answers BYE and OPTIONS with 200
//! so that a peer ending a call is not left retransmitting.

use sbc::sip::transaction::response_to;
use sbc::sip::transport::{
    Network, SipTransport, Source, Tap, Target, TransportConfig, TransportEvent, TransportKind,
};
use sbc::sip::wire::{Message, Method};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

pub const TESTER: &str = "tester.example.com";
/// The UDP port the tester sends from and listens on as a carrier.
pub const TESTER_UDP: u16 = 5060;

/// Whose certificate the tester shows on TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    Sbc,
    Hub,
}

#[derive(Debug)]
pub struct TesterCommand {
    pub host: String,
    pub port: u16,
    pub transport: TransportKind,
    pub identity: Identity,
    pub message: Message,
}

#[derive(Debug, Default)]
pub struct TesterView {
    pub received: Vec<Message>,
    pub problems: Vec<String>,
}

fn lock(v: &Mutex<TesterView>) -> std::sync::MutexGuard<'_, TesterView> {
    v.lock().unwrap_or_else(|e| e.into_inner())
}

/// The two TLS identities the tester can show.
pub struct TesterTls {
    pub as_sbc: Arc<rustls::ClientConfig>,
    pub as_hub: Arc<rustls::ClientConfig>,
}

pub async fn run_tester<N: Network>(
    net: N,
    tls: TesterTls,
    mut commands: mpsc::UnboundedReceiver<TesterCommand>,
    view: Arc<Mutex<TesterView>>,
    tap: Option<Arc<dyn Tap>>,
) -> std::io::Result<()> {
    let mut tc = TransportConfig::new(TESTER);
    tc.tls_client = Some(tls.as_sbc);
    // Its own address (in simulation the one a host has; in a real lab
    // the planned one, so it does not take the whole machine's port).
    let own = match net.resolve(TESTER, TESTER_UDP).await {
        Ok(addr) => addr.ip(),
        Err(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    tc.udp = Some(SocketAddr::new(own, TESTER_UDP));
    let (as_sbc, mut sbc_events) = SipTransport::start(net.clone(), tc, tap.clone()).await?;
    let mut tc = TransportConfig::new(TESTER);
    tc.tls_client = Some(tls.as_hub);
    let (as_hub, mut hub_events) = SipTransport::start(net.clone(), tc, tap).await?;
    loop {
        let (event, transport) = tokio::select! {
            biased;
            c = commands.recv() => {
                let Some(c) = c else { return Ok(()) };
                let target = match net.resolve(&c.host, c.port).await {
                    Ok(addr) => Target { transport: c.transport, addr, server_name: Some(c.host.clone()) },
                    Err(e) => { lock(&view).problems.push(format!("resolve {}: {e}", c.host)); continue; }
                };
                let t = match c.identity { Identity::Sbc => &as_sbc, Identity::Hub => &as_hub };
                if let Err(e) = t.send(&c.message, &target).await {
                    lock(&view).problems.push(format!("send to {}: {e}", c.host));
                }
                continue;
            }
            e = sbc_events.recv() => (e, &as_sbc),
            e = hub_events.recv() => (e, &as_hub),
        };
        match event {
            Some(TransportEvent::Message {
                message, source, ..
            }) => {
                answer_if_due(transport, &message, &source).await;
                lock(&view).received.push(message);
            }
            Some(TransportEvent::TlsRefused { reason, .. }) => {
                lock(&view).problems.push(format!("TLS refused: {reason}"))
            }
            Some(_) => {}
            None => return Ok(()),
        }
    }
}

/// BYE and OPTIONS get 200 (RFC 3261 §15.1.2: a BYE is always answered).
async fn answer_if_due<N: Network>(t: &SipTransport<N>, m: &Message, source: &Source) {
    if matches!(m.method(), Some(Method::Bye) | Some(Method::Options)) {
        let _ = t.reply(&response_to(m, 200, "OK", None), source).await;
    }
}
