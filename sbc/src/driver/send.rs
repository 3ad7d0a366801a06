//! Sending in order per destination. Each stream target gets a queue of
//! its own, so a slow connect or TLS handshake to one peer (or one that
//! never answers) holds up only what goes to that peer; a failure is
//! reported back for the transaction whose message it was.

use crate::sip::endpoint::{Destination, Transmit};
use crate::sip::transaction::TransactionKey;
use crate::sip::transport::{Network, SipTransport, TransportKind};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio::sync::mpsc;

pub(crate) struct Sender<N: Network> {
    transport: SipTransport<N>,
    queues: BTreeMap<(TransportKind, SocketAddr), mpsc::UnboundedSender<Transmit>>,
    fail_tx: mpsc::UnboundedSender<(TransactionKey, String)>,
    pub failures: mpsc::UnboundedReceiver<(TransactionKey, String)>,
    /// Datagrams and replies go through one queue of their own, in order.
    direct: mpsc::UnboundedSender<Transmit>,
}

impl<N: Network> Sender<N> {
    pub fn new(transport: SipTransport<N>) -> Self {
        let (fail_tx, failures) = mpsc::unbounded_channel();
        let direct = spawn_queue(transport.clone(), fail_tx.clone());
        Sender {
            transport,
            queues: BTreeMap::new(),
            fail_tx,
            failures,
            direct,
        }
    }

    pub fn send(&mut self, t: Transmit) {
        let queue = match &t.destination {
            Destination::Target(target) if target.transport.is_reliable() => {
                let (transport, fail) = (self.transport.clone(), self.fail_tx.clone());
                self.queues
                    .entry((target.transport, target.addr))
                    .or_insert_with(|| spawn_queue(transport, fail))
            }
            _ => &self.direct,
        };
        let _ = queue.send(t);
    }
}

fn spawn_queue<N: Network>(
    transport: SipTransport<N>,
    failures: mpsc::UnboundedSender<(TransactionKey, String)>,
) -> mpsc::UnboundedSender<Transmit> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Transmit>();
    tokio::spawn(async move {
        while let Some(t) = rx.recv().await {
            let result = match &t.destination {
                Destination::Target(target) => transport.send(&t.message, target).await.map(|_| ()),
                Destination::Reply(source) => transport.reply(&t.message, source).await,
            };
            if let Err(e) = result {
                let reason = e.to_string();
                if let Some(key) = t.key {
                    let _ = failures.send((key, reason.clone()));
                }
                // What queued up behind a failed connect would fail the
                // same way, one timeout after another: fail it now.
                if matches!(t.destination, Destination::Target(ref x) if x.transport.is_reliable())
                {
                    while let Ok(queued) = rx.try_recv() {
                        if let Some(key) = queued.key {
                            let _ = failures.send((key, reason.clone()));
                        }
                    }
                }
            }
        }
    });
    tx
}
