//! The transaction user core that every role (SBC, hub, carrier) stands on:
//! it owns the transport, matches messages to transactions (RFC 3261
//! §17.1.3, §17.2.3), runs their timers, answers CANCEL (§9.2) and
//! malformed requests (§8.2), and hands the role what is left as
//! [`EndpointEvent`]s.
//!
//! `next_event` is cancel-safe: it only awaits the transport channel and a
//! sleep, and sends go through a queue served by a task of their own, so a
//! role can `select!` it against its own inputs without losing messages.

use crate::sip::rng::SeededRng;
use crate::sip::transaction::{
    response_to, ClientEvent, ClientTransaction, ServerEvent, ServerState, ServerTransaction,
    TimerConfig, TransactionKey,
};
use crate::sip::transport::{Network, SipTransport, Source, Target, TransportEvent, TransportKind};
use crate::sip::wire::{Message, Method, WireError};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The host written in Via sent-by (an FQDN toward the hub, as Direct Routing expects).
    pub via_host: String,
    pub timers: TimerConfig,
    /// `Server`/`User-Agent` value, if any.
    pub user_agent: Option<String>,
}

#[derive(Debug)]
pub enum EndpointEvent {
    /// A new request (not ACK, not CANCEL) with its server transaction.
    Request {
        key: TransactionKey,
        request: Message,
        source: Source,
    },
    /// An ACK for a 2xx: a transaction of its own, for the dialog layer (§13.2.2.4).
    Ack { request: Message, source: Source },
    /// A CANCEL matched a pending INVITE; 200 was sent to the CANCEL, the
    /// role answers the INVITE with 487.
    Cancelled { key: TransactionKey },
    /// A response for a client transaction (every 2xx to an INVITE, too).
    Response {
        key: TransactionKey,
        response: Message,
    },
    /// Timer B/F: no final response.
    Timeout { key: TransactionKey },
    /// The request could not be sent (connection or TLS failure).
    SendFailed { key: TransactionKey, reason: String },
    /// Something happened to a server transaction.
    Server {
        key: TransactionKey,
        event: ServerEvent,
    },
    /// Bytes that were not acceptable SIP (a 400 was sent where possible).
    Malformed { error: WireError, source: Source },
    TlsRefused {
        remote: SocketAddr,
        inbound: bool,
        reason: String,
    },
    /// The role's own wake-up time has come.
    Wake,
}

enum Dest {
    Target(Target),
    Reply(Source),
}

struct Outgoing {
    message: Message,
    dest: Dest,
    key: Option<TransactionKey>,
}

pub struct Endpoint<N: Network> {
    transport: SipTransport<N>,
    events: mpsc::UnboundedReceiver<TransportEvent>,
    config: EndpointConfig,
    pub rng: SeededRng,
    clients: BTreeMap<TransactionKey, ClientTransaction>,
    servers: BTreeMap<TransactionKey, (ServerTransaction, Source)>,
    client_targets: BTreeMap<TransactionKey, Target>,
    queue: VecDeque<EndpointEvent>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    failures: mpsc::UnboundedReceiver<(TransactionKey, String)>,
}

impl<N: Network> Endpoint<N> {
    pub fn new(
        transport: SipTransport<N>,
        events: mpsc::UnboundedReceiver<TransportEvent>,
        config: EndpointConfig,
        rng: SeededRng,
    ) -> Self {
        let (outgoing, out_rx) = mpsc::unbounded_channel::<Outgoing>();
        let (fail_tx, failures) = mpsc::unbounded_channel();
        tokio::spawn(send_loop(transport.clone(), out_rx, fail_tx));
        Endpoint {
            transport,
            events,
            config,
            rng,
            clients: BTreeMap::new(),
            servers: BTreeMap::new(),
            client_targets: BTreeMap::new(),
            queue: VecDeque::new(),
            outgoing,
            failures,
        }
    }

    pub fn transport(&self) -> &SipTransport<N> {
        &self.transport
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// The Via this endpoint writes for a request leaving on `transport`.
    fn via(&mut self, transport: TransportKind) -> String {
        let port = self
            .transport
            .local_addr(transport)
            .map(|a| a.port())
            .unwrap_or(5060);
        format!(
            "SIP/2.0/{} {}:{};branch={};rport",
            transport,
            self.config.via_host,
            port,
            self.rng.branch()
        )
    }

    /// Start a client transaction for `request` toward `target`. A top Via
    /// with a new branch is added. Returns the transaction's key.
    pub fn send_request(
        &mut self,
        mut request: Message,
        target: Target,
    ) -> Result<TransactionKey, WireError> {
        let via = self.via(target.transport);
        request.headers.push_front("Via", via);
        if let Some(ua) = &self.config.user_agent {
            if !request.headers.contains("User-Agent") {
                request.headers.push("User-Agent", ua.clone());
            }
        }
        let tx = ClientTransaction::new(
            request,
            target.transport.is_reliable(),
            self.config.timers,
            now().into_std(),
        )?;
        let key = tx.key().clone();
        self.client_targets.insert(key.clone(), target);
        self.clients.insert(key.clone(), tx);
        self.drain_client(&key);
        Ok(key)
    }

    /// Cancel a pending INVITE client transaction (RFC 3261 §9.1): the CANCEL
    /// copies the INVITE's Via (same branch) and goes to the same target in
    /// a non-INVITE transaction of its own. Returns its key.
    pub fn send_cancel(&mut self, invite: &TransactionKey) -> Option<TransactionKey> {
        let request = self.clients.get(invite)?.request().clone();
        let target = self.client_targets.get(invite)?.clone();
        let cancel = crate::sip::transaction::build_cancel(&request);
        let tx = ClientTransaction::new(
            cancel,
            target.transport.is_reliable(),
            self.config.timers,
            now().into_std(),
        )
        .ok()?;
        let key = tx.key().clone();
        self.client_targets.insert(key.clone(), target);
        self.clients.insert(key.clone(), tx);
        self.drain_client(&key);
        Some(key)
    }

    /// The request of a live client transaction (with the Via we added).
    pub fn client_request(&self, key: &TransactionKey) -> Option<&Message> {
        self.clients.get(key).map(|t| t.request())
    }

    /// Send an ACK for a 2xx (outside any transaction, RFC 3261 §13.2.2.4).
    pub fn send_ack(&mut self, mut ack: Message, target: Target) {
        let via = self.via(target.transport);
        ack.headers.push_front("Via", via);
        let _ = self.outgoing.send(Outgoing {
            message: ack,
            dest: Dest::Target(target),
            key: None,
        });
    }

    /// Answer a request through its server transaction.
    pub fn respond(&mut self, key: &TransactionKey, mut response: Message) {
        if let Some(ua) = &self.config.user_agent {
            if !response.headers.contains("Server") {
                response.headers.push("Server", ua.clone());
            }
        }
        if let Some((tx, _)) = self.servers.get_mut(key) {
            let _ = tx.send_response(response, now().into_std());
        }
        self.drain_server(key);
    }

    /// The request a server transaction was created for.
    pub fn server_request(&self, key: &TransactionKey) -> Option<&Message> {
        self.servers.get(key).map(|(tx, _)| tx.request())
    }

    /// The next event; `wake` is the role's own deadline.
    pub async fn next_event(&mut self, wake: Option<Instant>) -> EndpointEvent {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return ev;
            }
            let now = now();
            if wake.is_some_and(|w| w <= now) {
                return EndpointEvent::Wake;
            }
            self.run_timers(now);
            if !self.queue.is_empty() {
                continue;
            }
            let deadline = [wake, self.next_timer()].into_iter().flatten().min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                f = self.failures.recv() => {
                    if let Some((key, reason)) = f {
                        if let Some(tx) = self.clients.get_mut(&key) {
                            tx.handle_transport_error();
                        }
                        self.clients.remove(&key);
                        self.client_targets.remove(&key);
                        self.queue.push_back(EndpointEvent::SendFailed { key, reason });
                    }
                }
                ev = self.events.recv() => match ev {
                    Some(ev) => self.on_transport(ev),
                    None => std::future::pending::<()>().await,
                },
                _ = sleep => {}
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        let c = self.clients.values().filter_map(|t| t.poll_timeout());
        let s = self.servers.values().filter_map(|(t, _)| t.poll_timeout());
        c.chain(s).min().map(Instant::from_std)
    }

    fn run_timers(&mut self, now: Instant) {
        let due: Vec<TransactionKey> = self
            .clients
            .iter()
            .filter(|(_, t)| t.poll_timeout().is_some_and(|d| d <= now.into_std()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(tx) = self.clients.get_mut(&key) {
                tx.handle_timeout(now.into_std());
            }
            self.drain_client(&key);
        }
        let due: Vec<TransactionKey> = self
            .servers
            .iter()
            .filter(|(_, (t, _))| t.poll_timeout().is_some_and(|d| d <= now.into_std()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some((tx, _)) = self.servers.get_mut(&key) {
                tx.handle_timeout(now.into_std());
            }
            self.drain_server(&key);
        }
    }

    fn drain_client(&mut self, key: &TransactionKey) {
        let Some(tx) = self.clients.get_mut(key) else {
            return;
        };
        let target = self.client_targets.get(key).cloned();
        while let Some(m) = tx.poll_transmit() {
            if let Some(t) = &target {
                let _ = self.outgoing.send(Outgoing {
                    message: m,
                    dest: Dest::Target(t.clone()),
                    key: Some(key.clone()),
                });
            }
        }
        while let Some(ev) = tx.poll_event() {
            self.queue.push_back(match ev {
                ClientEvent::Response(response) => EndpointEvent::Response {
                    key: key.clone(),
                    response,
                },
                ClientEvent::Timeout => EndpointEvent::Timeout { key: key.clone() },
                ClientEvent::TransportError => EndpointEvent::SendFailed {
                    key: key.clone(),
                    reason: "transport error".into(),
                },
            });
        }
        if tx.is_terminated() {
            self.clients.remove(key);
            self.client_targets.remove(key);
        }
    }

    fn drain_server(&mut self, key: &TransactionKey) {
        let Some((tx, source)) = self.servers.get_mut(key) else {
            return;
        };
        while let Some(m) = tx.poll_transmit() {
            let _ = self.outgoing.send(Outgoing {
                message: m,
                dest: Dest::Reply(source.clone()),
                key: None,
            });
        }
        while let Some(event) = tx.poll_event() {
            self.queue.push_back(EndpointEvent::Server {
                key: key.clone(),
                event,
            });
        }
        if tx.is_terminated() {
            self.servers.remove(key);
        }
    }

    fn on_transport(&mut self, ev: TransportEvent) {
        match ev {
            TransportEvent::Message {
                message, source, ..
            } => {
                if message.is_request() {
                    self.on_request(message, source)
                } else {
                    self.on_response(message)
                }
            }
            TransportEvent::Malformed { error, raw, source } => {
                // §8.2 / §21.4.1: answer a broken request with 400 when it can be
                // answered at all (datagrams only: a broken stream is closed).
                if source.connection.is_none() {
                    if let Ok(head) = Message::parse(&raw).or_else(|_| lenient_head(&raw)) {
                        self.answer_malformed(&head, &error, &source);
                    }
                }
                self.queue
                    .push_back(EndpointEvent::Malformed { error, source });
            }
            TransportEvent::TlsRefused {
                remote,
                inbound,
                reason,
            } => self.queue.push_back(EndpointEvent::TlsRefused {
                remote,
                inbound,
                reason,
            }),
            TransportEvent::ConnectionClosed { .. } => {}
        }
    }

    /// Answer a request that failed to parse or validate with the status
    /// its fault implies (400, 413, 416, 505), when it can be answered at
    /// all: a request, not an ACK (RFC 3261 §17.2.1), with a readable Via.
    fn answer_malformed(&mut self, head: &Message, error: &WireError, source: &Source) {
        if head.is_request() && head.method() != Some(&Method::Ack) && head.top_via().is_ok() {
            let resp = response_to(head, error.status_code(), &reason_for(error), None);
            let _ = self.outgoing.send(Outgoing {
                message: resp,
                dest: Dest::Reply(source.clone()),
                key: None,
            });
        }
    }

    fn on_request(&mut self, request: Message, source: Source) {
        if let Err(error) = request.validate() {
            self.answer_malformed(&request, &error, &source);
            self.queue
                .push_back(EndpointEvent::Malformed { error, source });
            return;
        }
        let Ok(key) = TransactionKey::for_request(&request) else {
            return;
        };
        let now = now();
        let method = request.method().cloned();
        if let Some((tx, _)) = self.servers.get_mut(&key) {
            if method == Some(Method::Ack) && tx.state() == ServerState::Accepted {
                // An ACK for a 2xx with the INVITE's branch (RFC 2543 style): a dialog matter.
                self.queue.push_back(EndpointEvent::Ack { request, source });
                return;
            }
            tx.handle_request(request, now.into_std());
            self.drain_server(&key);
            return;
        }
        match method {
            Some(Method::Ack) => {
                self.ack_2xx_sent_for(&request);
                self.queue.push_back(EndpointEvent::Ack { request, source });
            }
            Some(Method::Cancel) => {
                let invite_key = TransactionKey {
                    branch: key.branch.clone(),
                    method: Method::Invite,
                };
                let found = self.servers.contains_key(&invite_key);
                let code = if found {
                    (200, "OK")
                } else {
                    (481, "Call/Transaction Does Not Exist")
                };
                if let Ok(tx) = ServerTransaction::new(
                    request.clone(),
                    source.transport.is_reliable(),
                    self.config.timers,
                    now.into_std(),
                ) {
                    self.servers.insert(key.clone(), (tx, source));
                    let tag = self.rng.tag();
                    self.respond(&key, response_to(&request, code.0, code.1, Some(&tag)));
                }
                if let Some((tx, _)) = self.servers.get_mut(&invite_key) {
                    tx.handle_cancel();
                    if tx.poll_event().is_some() {
                        self.queue
                            .push_back(EndpointEvent::Cancelled { key: invite_key });
                    }
                }
            }
            _ => match ServerTransaction::new(
                request.clone(),
                source.transport.is_reliable(),
                self.config.timers,
                now.into_std(),
            ) {
                Ok(tx) => {
                    self.servers.insert(key.clone(), (tx, source.clone()));
                    self.drain_server(&key);
                    self.queue.push_back(EndpointEvent::Request {
                        key,
                        request,
                        source,
                    });
                }
                Err(error) => self
                    .queue
                    .push_back(EndpointEvent::Malformed { error, source }),
            },
        }
    }

    /// Stop retransmitting the 2xx this ACK acknowledges.
    fn ack_2xx_sent_for(&mut self, ack: &Message) {
        let (Ok(call_id), Ok(cseq)) = (ack.call_id(), ack.cseq()) else {
            return;
        };
        let keys: Vec<TransactionKey> = self
            .servers
            .iter()
            .filter(|(k, (tx, _))| {
                k.method == Method::Invite
                    && tx.state() == ServerState::Accepted
                    && tx.request().call_id().ok() == Some(call_id)
                    && tx.request().cseq().map(|c| c.seq).ok() == Some(cseq.seq)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some((tx, _)) = self.servers.get_mut(&key) {
                tx.ack_2xx();
            }
            self.drain_server(&key);
        }
    }

    fn on_response(&mut self, response: Message) {
        let Ok(key) = TransactionKey::for_response(&response) else {
            return;
        };
        match self.clients.get_mut(&key) {
            Some(tx) => {
                tx.handle_response(response, now().into_std());
                self.drain_client(&key);
            }
            // A 2xx retransmitted after the transaction ended still needs an ACK.
            None if response.status().is_some_and(|c| (200..300).contains(&c)) => self
                .queue
                .push_back(EndpointEvent::Response { key, response }),
            None => {}
        }
    }
}

/// Sends in order per destination. Each stream target gets a queue of its
/// own, so a slow connect or TLS handshake to one peer (or one that never
/// answers) holds up only what goes to that peer.
async fn send_loop<N: Network>(
    transport: SipTransport<N>,
    mut out_rx: mpsc::UnboundedReceiver<Outgoing>,
    failures: mpsc::UnboundedSender<(TransactionKey, String)>,
) {
    let mut per_target: BTreeMap<(TransportKind, SocketAddr), mpsc::UnboundedSender<Outgoing>> =
        BTreeMap::new();
    while let Some(o) = out_rx.recv().await {
        let queue_key = match &o.dest {
            Dest::Target(t) if t.transport.is_reliable() => (t.transport, t.addr),
            _ => {
                let _ = send_one(&transport, o, &failures).await;
                continue;
            }
        };
        let queue = per_target.entry(queue_key).or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
            let (transport, failures) = (transport.clone(), failures.clone());
            tokio::spawn(async move {
                while let Some(o) = rx.recv().await {
                    if let Err(reason) = send_one(&transport, o, &failures).await {
                        // What queued up behind a failed connect would fail the
                        // same way, one timeout after another: fail it now.
                        while let Ok(queued) = rx.try_recv() {
                            if let Some(key) = queued.key {
                                let _ = failures.send((key, reason.clone()));
                            }
                        }
                    }
                }
            });
            tx
        });
        let _ = queue.send(o);
    }
}

async fn send_one<N: Network>(
    transport: &SipTransport<N>,
    o: Outgoing,
    failures: &mpsc::UnboundedSender<(TransactionKey, String)>,
) -> Result<(), String> {
    let result = match &o.dest {
        Dest::Target(t) => transport.send(&o.message, t).await.map(|_| ()),
        Dest::Reply(s) => transport.reply(&o.message, s).await,
    };
    result.map_err(|e| {
        let reason = e.to_string();
        if let Some(key) = o.key {
            let _ = failures.send((key, reason.clone()));
        }
        reason
    })
}

fn now() -> Instant {
    Instant::now()
}

fn reason_for(error: &WireError) -> String {
    match error.status_code() {
        413 => "Request Entity Too Large".into(),
        416 => "Unsupported URI Scheme".into(),
        505 => "Version Not Supported".into(),
        _ => format!(
            "Bad Request ({})",
            error
                .to_string()
                .replace(['\r', '\n'], " ")
                .chars()
                .take(80)
                .collect::<String>()
        ),
    }
}

/// The head of a message whose body or version is wrong, read leniently so
/// that a 400 or 505 can still be sent: Content-Length is dropped and the
/// Request-Line's version is read as SIP/2.0.
fn lenient_head(raw: &[u8]) -> Result<Message, WireError> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(WireError::NoHeaderEnd)?;
    let text = String::from_utf8_lossy(&raw[..end + 4]).to_string();
    let mut lines: Vec<String> = text
        .split("\r\n")
        .filter(|l| {
            !l.split_once(':')
                .is_some_and(|(name, _)| crate::sip::wire::name_is(name.trim(), "Content-Length"))
        })
        .map(str::to_string)
        .collect();
    if let Some(first) = lines.first_mut() {
        if let Some((line, version)) = first.rsplit_once(' ') {
            if version.starts_with("SIP/") && !first.starts_with("SIP/") {
                *first = format!("{line} SIP/2.0");
            }
        }
    }
    Message::parse(lines.join("\r\n").as_bytes())
}
