//! A scripted SIP client with the SBC's certificate: sends exactly the
//! message a step wrote (no transaction layer, no automatic ACK) and keeps
//! everything it receives. Certification steps use it to check what the
//! hub refuses and how, which the well-behaved reference SBC never shows.

use sbc::sip::transport::{
    Network, SipTransport, Tap, Target, TransportConfig, TransportEvent, TransportKind,
};
use sbc::sip::wire::Message;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

pub const TESTER: &str = "tester.example.com";

#[derive(Debug)]
pub struct TesterCommand {
    pub host: String,
    pub port: u16,
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

pub async fn run_tester<N: Network>(
    net: N,
    tls_client: Arc<rustls::ClientConfig>,
    mut commands: mpsc::UnboundedReceiver<TesterCommand>,
    view: Arc<Mutex<TesterView>>,
    tap: Option<Arc<dyn Tap>>,
) -> std::io::Result<()> {
    let mut tc = TransportConfig::new(TESTER);
    tc.tls_client = Some(tls_client);
    let (transport, mut events) = SipTransport::start(net.clone(), tc, tap).await?;
    loop {
        tokio::select! {
            biased;
            c = commands.recv() => {
                let Some(c) = c else { return Ok(()) };
                let target = match net.resolve(&c.host, c.port).await {
                    Ok(addr) => Target { transport: TransportKind::Tls, addr, server_name: Some(c.host.clone()) },
                    Err(e) => { lock(&view).problems.push(format!("resolve {}: {e}", c.host)); continue; }
                };
                if let Err(e) = transport.send(&c.message, &target).await {
                    lock(&view).problems.push(format!("send to {}: {e}", c.host));
                }
            }
            e = events.recv() => match e {
                Some(TransportEvent::Message { message, .. }) => lock(&view).received.push(message),
                Some(TransportEvent::TlsRefused { reason, .. }) => lock(&view).problems.push(format!("TLS refused: {reason}")),
                Some(_) => {}
                None => return Ok(()),
            }
        }
    }
}
