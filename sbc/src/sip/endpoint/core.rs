//! The endpoint core: matching messages to transactions (RFC 3261 §17.1.3,
//! §17.2.3), their timers, CANCEL (§9.2), malformed requests (§8.2,
//! §21.4), with no socket, clock or task of its own.
//!
//! # Drive contract
//! Feed it what the transport delivered (`handle_message`,
//! `handle_malformed`, `handle_send_failure`, `handle_tls_refused`) and the
//! time (`handle_timeout` once `poll_timeout` has passed); start
//! transactions with `send_request`/`send_cancel`/`respond`. After each
//! call drain `poll_transmit` (bytes to put on the wire, in order) and
//! `poll_event` (what the transaction user must hear), then sleep until
//! `poll_timeout`.

use super::admission::{Admission, Decision};
use crate::sip::transaction::{
    response_to, ClientEvent, ClientState, ClientTransaction, ServerEvent, ServerState,
    ServerTransaction, TimerConfig, TransactionKey,
};
use crate::sip::transport::{Source, Target, TransportKind};
use crate::sip::wire::{Message, Method, WireError};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The host written in Via sent-by (an FQDN toward the hub, as Direct Routing expects).
    pub via_host: String,
    pub timers: TimerConfig,
    /// `Server`/`User-Agent` value, if any.
    pub user_agent: Option<String>,
    /// Write every header name in upper case (the hub's observed style:
    /// `FROM:`, `CSEQ:`, `VIA:`).
    pub upper_case_headers: bool,
}

impl EndpointConfig {
    pub fn new(via_host: impl Into<String>) -> Self {
        EndpointConfig {
            via_host: via_host.into(),
            timers: TimerConfig::default(),
            user_agent: None,
            upper_case_headers: false,
        }
    }
}

/// The ports this host listens on, for the Via it writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalPorts {
    pub udp: Option<u16>,
    pub tcp: Option<u16>,
    pub tls: Option<u16>,
}

impl LocalPorts {
    fn get(&self, t: TransportKind) -> Option<u16> {
        match t {
            TransportKind::Udp => self.udp,
            TransportKind::Tcp => self.tcp,
            TransportKind::Tls => self.tls,
        }
    }
}

/// Where a message goes: a new target, or back the way a request came
/// (its connection, or its source address for UDP, RFC 3581).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Target(Target),
    Reply(Source),
}

/// One message to put on the wire. `key` names the client transaction it
/// belongs to, so that a failure to send reaches that transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub message: Message,
    pub destination: Destination,
    pub key: Option<TransactionKey>,
}

#[derive(Debug)]
pub enum EndpointEvent {
    /// A new request (not ACK, not CANCEL) with its server transaction.
    /// `raw` is the bytes as received, for judges that read them directly.
    Request {
        key: TransactionKey,
        request: Message,
        raw: Vec<u8>,
        source: Source,
    },
    /// An ACK for a 2xx: a transaction of its own, for the dialog layer (§13.2.2.4).
    Ack { request: Message, source: Source },
    /// A CANCEL matched a pending INVITE; 200 was sent to the CANCEL, the
    /// transaction user answers the INVITE with 487.
    Cancelled { key: TransactionKey },
    /// A response for a client transaction; also a 2xx to an INVITE whose
    /// transaction has ended (it still needs an ACK, §13.2.2.4).
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
}

/// What the core counted instead of passing up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub malformed: u64,
    /// Requests whose top Via has no branch (RFC 2543 peers): not matchable.
    pub no_branch: u64,
    /// Responses that matched no transaction and were not a 2xx to an INVITE.
    pub stray_responses: u64,
    /// Merged requests answered 482 (RFC 3261 §8.2.2.2).
    pub merged: u64,
    /// New INVITEs answered 503 because they waited in the queue longer
    /// than the overload limit (see [`Overload`]).
    pub shed: u64,
}

/// Overload control: while the host has a standing queue, a new INVITE is
/// answered 503 with Retry-After (RFC 3261 §21.5.4) before any
/// transaction is made. A host that has fallen behind sheds new calls, and
/// keeps serving the calls it holds and their in-dialog requests, rather
/// than letting the retransmissions of requests it answers late pile on
/// top of its backlog. RFC 7339's feedback would tell the sender how much
/// to cut; a carrier or the hub that knows only RFC 3261 understands 503.
///
/// A standing queue is CoDel's (RFC 8289 §4.2): not one message that
/// waited long, which a burst or the OS taking the CPU away for a moment
/// also makes, but every message for `interval` waiting longer than
/// `max_queue_delay`. It ends with the first message that waited less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overload {
    pub max_queue_delay: Duration,
    pub interval: Duration,
    pub retry_after_secs: u32,
}

/// An overload episode ends when nothing was shed for this long: waits
/// that hover around the limit would otherwise start and end one every
/// T1, and their log lines would push every other problem out.
pub const OVERLOAD_QUIET: Duration = Duration::from_secs(10);

/// What an operator is told of overload (see [`EndpointCore::overload_note`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverloadNote {
    /// Shedding began; the wait of the message that tipped it.
    Started { waited: Duration },
    /// Nothing shed for [`OVERLOAD_QUIET`]: how many were in the episode.
    Ended { shed: u64 },
}

/// An episode under way: the shed count when it began, whether its start
/// was told, and when the last INVITE was shed.
#[derive(Debug, Clone, Copy)]
struct Episode {
    shed_before: u64,
    told: bool,
    last_shed: Instant,
}

pub struct EndpointCore {
    config: EndpointConfig,
    ports: LocalPorts,
    clients: Held<ClientTransaction, Target>,
    servers: Held<ServerTransaction, Source>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<EndpointEvent>,
    stats: EndpointStats,
    /// Per-source limits on new requests; none: every request admitted.
    admission: Option<Admission>,
    overload: Option<Overload>,
    /// How long the message being handled waited before its turn, and
    /// since when every message has waited longer than the overload limit.
    queue_delay: Duration,
    delayed_since: Option<Instant>,
    episode: Option<Episode>,
    /// Every transaction's next timer, in deadline order, so that the
    /// earliest is read and the due ones taken without visiting every
    /// transaction: a busy SBC holds tens of thousands (each lingers up
    /// to 32 s after its final response, Timers D/J/K, RFC 3261 §17), and
    /// the driver asks for the earliest after every message it handles.
    /// Keyed by deadline and the transaction's slot number rather than its
    /// branch: a string compare per tree level was a tenth of a loaded
    /// SBC's CPU (issue 15). Each transaction's [`Slot`] says where it stands.
    timers: BTreeMap<(Instant, u64), (Side, TransactionKey)>,
    next_slot: u64,
    /// Server transactions by their request's Call-ID and CSeq: the
    /// candidates for a merged request (§8.2.2.2) and for the INVITE an
    /// ACK to a 2xx acknowledges, found without parsing every request held.
    by_request: BTreeMap<(String, u32, Method), BTreeSet<TransactionKey>>,
}

/// A request's Call-ID and CSeq, as `by_request` files it.
fn request_id(m: &Message) -> Option<(String, u32, Method)> {
    let cseq = m.cseq().ok()?;
    Some((m.call_id().ok()?.to_string(), cseq.seq, cseq.method))
}

/// A held transaction's place in `timers`: its number, and the deadline it
/// is filed under (none: not filed).
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: u64,
    at: Option<Instant>,
}

/// Transactions by key, each with its peer and its [`Slot`]. Boxed: a
/// transaction is ~400 bytes, and a B-tree node holds eleven values inline,
/// moving them on every insert and remove (branches are random, so inserts
/// land anywhere).
struct Held<T, W>(BTreeMap<TransactionKey, Box<(T, W, Slot)>>);

impl<T, W> Held<T, W> {
    fn new() -> Self {
        Held(BTreeMap::new())
    }
    fn get(&self, key: &TransactionKey) -> Option<&(T, W, Slot)> {
        self.0.get(key).map(|b| &**b)
    }
    fn get_mut(&mut self, key: &TransactionKey) -> Option<&mut (T, W, Slot)> {
        self.0.get_mut(key).map(|b| &mut **b)
    }
    fn insert(&mut self, key: TransactionKey, held: (T, W, Slot)) {
        self.0.insert(key, Box::new(held));
    }
    fn remove(&mut self, key: &TransactionKey) -> Option<(T, W, Slot)> {
        self.0.remove(key).map(|b| *b)
    }
    fn contains_key(&self, key: &TransactionKey) -> bool {
        self.0.contains_key(key)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn values(&self) -> impl Iterator<Item = &(T, W, Slot)> {
        self.0.values().map(|b| &**b)
    }
    fn iter(&self) -> impl Iterator<Item = (&TransactionKey, &(T, W, Slot))> {
        self.0.iter().map(|(k, b)| (k, &**b))
    }
}

/// Which map a transaction lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Client,
    Server,
}

impl EndpointCore {
    pub fn new(config: EndpointConfig, ports: LocalPorts) -> Self {
        EndpointCore {
            config,
            ports,
            clients: Held::new(),
            servers: Held::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
            admission: None,
            overload: None,
            queue_delay: Duration::ZERO,
            delayed_since: None,
            episode: None,
            timers: BTreeMap::new(),
            next_slot: 0,
            by_request: BTreeMap::new(),
        }
    }

    fn new_slot(&mut self) -> Slot {
        self.next_slot += 1;
        Slot {
            id: self.next_slot,
            at: None,
        }
    }

    /// Take a slot's deadline out of `timers`.
    fn unfile(&mut self, slot: Slot) {
        if let Some(at) = slot.at {
            self.timers.remove(&(at, slot.id));
        }
    }

    fn insert_client(&mut self, key: TransactionKey, tx: ClientTransaction, target: Target) {
        self.remove_client(&key);
        let slot = self.new_slot();
        self.clients.insert(key, (tx, target, slot));
    }

    fn remove_client(&mut self, key: &TransactionKey) {
        if let Some((_, _, slot)) = self.clients.remove(key) {
            self.unfile(slot);
        }
    }

    fn insert_server(&mut self, key: TransactionKey, tx: ServerTransaction, source: Source) {
        self.remove_server(&key);
        if let Some(id) = request_id(tx.request()) {
            self.by_request.entry(id).or_default().insert(key.clone());
        }
        let slot = self.new_slot();
        self.servers.insert(key, (tx, source, slot));
    }

    fn remove_server(&mut self, key: &TransactionKey) {
        let Some((tx, _, slot)) = self.servers.remove(key) else {
            return;
        };
        self.unfile(slot);
        if let Some(id) = request_id(tx.request()) {
            if let Some(keys) = self.by_request.get_mut(&id) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_request.remove(&id);
                }
            }
        }
    }

    /// Server transactions whose request has this Call-ID and CSeq.
    fn servers_for(&self, call_id: &str, seq: u32, method: Method) -> Vec<TransactionKey> {
        self.by_request
            .get(&(call_id.to_string(), seq, method))
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Bring transaction `key`'s place in `timers` up to date: after every
    /// change to it (the `drain_*` calls end with this) and when it is gone.
    fn reschedule(&mut self, side: Side, key: &TransactionKey) {
        // A transaction removed was taken out of `timers` then.
        let held = match side {
            Side::Client => (self.clients.get_mut(key)).map(|(t, _, s)| (t.poll_timeout(), s)),
            Side::Server => (self.servers.get_mut(key)).map(|(t, _, s)| (t.poll_timeout(), s)),
        };
        let Some((next, slot)) = held else {
            return;
        };
        if slot.at == next {
            return;
        }
        if let Some(old) = slot.at {
            self.timers.remove(&(old, slot.id));
        }
        slot.at = next;
        if let Some(at) = next {
            self.timers.insert((at, slot.id), (side, key.clone()));
        }
    }

    /// The earliest timer by visiting every transaction: what `timers`
    /// must agree with (checked in debug builds).
    fn scan_timeout(&self) -> Option<Instant> {
        let c = self.clients.values().filter_map(|(t, ..)| t.poll_timeout());
        let s = self.servers.values().filter_map(|(t, ..)| t.poll_timeout());
        c.chain(s).min()
    }

    /// Limit new requests per source from now on (see [`Admission`]).
    pub fn set_admission(&mut self, admission: Option<Admission>) {
        self.admission = admission;
    }

    pub fn admission(&self) -> Option<&Admission> {
        self.admission.as_ref()
    }

    pub fn set_overload(&mut self, overload: Option<Overload>) {
        self.overload = overload;
    }

    /// How long the next message handled waited between its arrival (read
    /// from its socket) and its turn, `now`: the driver's backlog.
    pub fn note_queue_delay(&mut self, now: Instant, delay: Duration) {
        self.queue_delay = delay;
        let over = self.overload.is_some_and(|o| delay > o.max_queue_delay);
        match (over, self.delayed_since) {
            (true, None) => self.delayed_since = Some(now),
            (false, _) => self.delayed_since = None,
            (true, Some(_)) => {}
        }
    }

    /// When [`Self::overload_note`] has something to tell: at once when an
    /// episode began, else when it will be over if nothing more is shed.
    pub fn overload_due(&self) -> Option<Instant> {
        self.episode.map(|e| match e.told {
            false => e.last_shed,
            true => e.last_shed + OVERLOAD_QUIET,
        })
    }

    /// The start or the end of an overload episode, once each.
    pub fn overload_note(&mut self, now: Instant) -> Option<OverloadNote> {
        let e = self.episode.as_mut()?;
        if !e.told {
            e.told = true;
            return Some(OverloadNote::Started {
                waited: self.queue_delay,
            });
        }
        if now < e.last_shed + OVERLOAD_QUIET {
            return None;
        }
        let shed = self.stats.shed - e.shed_before;
        self.episode = None;
        Some(OverloadNote::Ended { shed })
    }

    /// Whether new INVITEs are shed now (see [`Overload`]).
    pub fn overloaded(&self, now: Instant) -> bool {
        match (self.overload, self.delayed_since) {
            (Some(o), Some(since)) => now.saturating_duration_since(since) >= o.interval,
            _ => false,
        }
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// Live client and server transactions.
    pub fn transactions(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    /// The Via this endpoint writes for a request leaving on `transport`.
    pub fn via(&self, transport: TransportKind, branch: &str) -> String {
        let port = self.ports.get(transport).unwrap_or(match transport {
            TransportKind::Tls => 5061,
            _ => 5060,
        });
        format!(
            "SIP/2.0/{} {}:{};branch={};rport",
            transport, self.config.via_host, port, branch
        )
    }

    /// Start a client transaction for `request` toward `target`, with a top
    /// Via carrying `branch` (drawn by the caller from its seeded RNG).
    pub fn send_request(
        &mut self,
        now: Instant,
        mut request: Message,
        target: Target,
        branch: &str,
    ) -> Result<TransactionKey, WireError> {
        request
            .headers
            .push_front("Via", self.via(target.transport, branch));
        if let Some(ua) = &self.config.user_agent {
            if !request.headers.contains("User-Agent") {
                request.headers.push("User-Agent", ua.clone());
            }
        }
        self.style(&mut request);
        let tx = ClientTransaction::new(
            request,
            target.transport.is_reliable(),
            self.config.timers,
            now,
        )?;
        let key = tx.key().clone();
        self.insert_client(key.clone(), tx, target);
        self.drain_client(&key);
        Ok(key)
    }

    /// Cancel a pending INVITE client transaction (RFC 3261 §9.1): the CANCEL
    /// copies the INVITE's Via (same branch) and goes to the same target in
    /// a non-INVITE transaction of its own. Returns its key.
    pub fn send_cancel(&mut self, now: Instant, invite: &TransactionKey) -> Option<TransactionKey> {
        let (tx, target, _) = self.clients.get(invite)?;
        let mut cancel = crate::sip::transaction::build_cancel(tx.request());
        let target = target.clone();
        self.style(&mut cancel);
        let tx = ClientTransaction::new(
            cancel,
            target.transport.is_reliable(),
            self.config.timers,
            now,
        )
        .ok()?;
        let key = tx.key().clone();
        self.insert_client(key.clone(), tx, target);
        self.drain_client(&key);
        Some(key)
    }

    /// Whether a client transaction is still running.
    pub fn client_is_live(&self, key: &TransactionKey) -> bool {
        self.clients.contains_key(key)
    }

    /// Send an ACK for a 2xx (outside any transaction, RFC 3261 §13.2.2.4).
    pub fn send_ack(&mut self, mut ack: Message, target: Target, branch: &str) {
        ack.headers
            .push_front("Via", self.via(target.transport, branch));
        self.style(&mut ack);
        self.transmits.push_back(Transmit {
            message: ack,
            destination: Destination::Target(target),
            key: None,
        });
    }

    /// Answer a request through its server transaction. `false` if the
    /// transaction is gone or has already sent its final response.
    pub fn respond(&mut self, now: Instant, key: &TransactionKey, mut response: Message) -> bool {
        if let Some(ua) = &self.config.user_agent {
            if !response.headers.contains("Server") {
                response.headers.push("Server", ua.clone());
            }
        }
        self.style(&mut response);
        let sent = match self.servers.get_mut(key) {
            Some((tx, ..)) => tx.send_response(response, now).is_ok(),
            None => false,
        };
        self.drain_server(key);
        sent
    }

    /// The request a server transaction was created for.
    pub fn server_request(&self, key: &TransactionKey) -> Option<&Message> {
        self.servers.get(key).map(|(tx, ..)| tx.request())
    }

    /// Where a server transaction's request came from.
    pub fn server_source(&self, key: &TransactionKey) -> Option<&Source> {
        self.servers.get(key).map(|(_, s, _)| s)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    /// The earliest transaction timer; `None` when no transaction waits.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let next = self.timers.first_key_value().map(|((at, _), _)| *at);
        debug_assert_eq!(
            next,
            self.scan_timeout(),
            "the transaction timer index disagrees with the transactions"
        );
        debug_assert_eq!(
            (self
                .clients
                .values()
                .filter(|(_, _, s)| s.at.is_some())
                .count())
                + (self
                    .servers
                    .values()
                    .filter(|(_, _, s)| s.at.is_some())
                    .count()),
            self.timers.len(),
            "a transaction's timer is filed twice or not taken out"
        );
        debug_assert!(
            self.by_request.values().map(BTreeSet::len).sum::<usize>() <= self.servers.len(),
            "server transactions gone are still filed by request"
        );
        next
    }

    /// Run every transaction timer due at `now`: client transactions
    /// first, then server ones, each in key order (the order a scan of
    /// the maps gave, so simulated traces stay as they were).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due_clients = BTreeSet::new();
        let mut due_servers = BTreeSet::new();
        for (_, (side, key)) in self.timers.iter().take_while(|((at, _), _)| *at <= now) {
            match side {
                Side::Client => due_clients.insert(key.clone()),
                Side::Server => due_servers.insert(key.clone()),
            };
        }
        for key in due_clients {
            if let Some((tx, ..)) = self.clients.get_mut(&key) {
                tx.handle_timeout(now);
            }
            self.drain_client(&key);
        }
        for key in due_servers {
            if let Some((tx, ..)) = self.servers.get_mut(&key) {
                tx.handle_timeout(now);
            }
            self.drain_server(&key);
        }
    }

    /// A message could not be sent for client transaction `key` (RFC 3261
    /// §17.1.4: the TU treats it as 503).
    pub fn handle_send_failure(&mut self, key: &TransactionKey, reason: String) {
        if let Some((tx, ..)) = self.clients.get_mut(key) {
            tx.handle_transport_error();
            while tx.poll_event().is_some() {}
            self.remove_client(key);
            self.events.push_back(EndpointEvent::SendFailed {
                key: key.clone(),
                reason,
            });
        }
    }

    /// A TCP/TLS connection to `remote` closed. A client transaction whose
    /// request went on it and which has no final response yet fails now:
    /// its response could only come on a new connection the server opens
    /// to our sent-by (RFC 3261 §18.2.2), which a crashed or restarted
    /// peer never does, and an INVITE that heard a provisional has no
    /// timer left to end it (§17.1.1.2: Timer B stops in Proceeding).
    pub fn handle_connection_closed(&mut self, transport: TransportKind, remote: SocketAddr) {
        let pending: Vec<TransactionKey> = self
            .clients
            .iter()
            .filter(|(_, (tx, target, _))| {
                target.transport == transport
                    && target.addr == remote
                    && matches!(
                        tx.state(),
                        ClientState::Calling | ClientState::Trying | ClientState::Proceeding
                    )
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in pending {
            self.handle_send_failure(
                &key,
                format!("the {transport} connection to {remote} closed"),
            );
        }
    }

    pub fn handle_tls_refused(&mut self, remote: SocketAddr, inbound: bool, reason: String) {
        self.events.push_back(EndpointEvent::TlsRefused {
            remote,
            inbound,
            reason,
        });
    }

    /// A message the transport framed and parsed.
    pub fn handle_message(&mut self, now: Instant, message: Message, raw: Vec<u8>, source: Source) {
        if message.is_request() {
            self.on_request(now, message, raw, source)
        } else {
            self.on_response(now, message)
        }
    }

    /// Bytes that did not parse. RFC 3261 §8.2 / §21.4.1: answer a broken
    /// request with the status its fault implies when it can be answered
    /// at all (datagrams only: a broken stream is closed by the transport).
    pub fn handle_malformed(&mut self, error: WireError, raw: &[u8], source: Source) {
        self.stats.malformed += 1;
        if source.connection.is_none() {
            if let Ok(head) = Message::parse(raw).or_else(|_| lenient_head(raw)) {
                self.answer_malformed(&head, &error, &source);
            }
        }
        self.events
            .push_back(EndpointEvent::Malformed { error, source });
    }

    fn style(&self, m: &mut Message) {
        if self.config.upper_case_headers {
            upper_case(m);
        }
    }

    fn drain_client(&mut self, key: &TransactionKey) {
        self.drain_client_queues(key);
        self.reschedule(Side::Client, key);
    }

    fn drain_client_queues(&mut self, key: &TransactionKey) {
        let Some((tx, target, _)) = self.clients.get_mut(key) else {
            return;
        };
        while let Some(m) = tx.poll_transmit() {
            self.transmits.push_back(Transmit {
                message: m,
                destination: Destination::Target(target.clone()),
                key: Some(key.clone()),
            });
        }
        while let Some(ev) = tx.poll_event() {
            self.events.push_back(match ev {
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
            self.remove_client(key);
        }
    }

    fn drain_server(&mut self, key: &TransactionKey) {
        self.drain_server_queues(key);
        self.reschedule(Side::Server, key);
    }

    fn drain_server_queues(&mut self, key: &TransactionKey) {
        let upper = self.config.upper_case_headers;
        let Some((tx, source, _)) = self.servers.get_mut(key) else {
            return;
        };
        while let Some(mut m) = tx.poll_transmit() {
            if upper {
                // The transaction's own 100 Trying, in the host's style too.
                upper_case(&mut m);
            }
            self.transmits.push_back(Transmit {
                message: m,
                destination: Destination::Reply(source.clone()),
                key: None,
            });
        }
        while let Some(event) = tx.poll_event() {
            self.events.push_back(EndpointEvent::Server {
                key: key.clone(),
                event,
            });
        }
        if tx.is_terminated() {
            self.remove_server(key);
        }
    }

    /// Answer a request that failed to parse or validate with the status
    /// its fault implies (400, 413, 416, 505), when it can be answered at
    /// all: a request, not an ACK (RFC 3261 §17.2.1), with a readable Via.
    fn answer_malformed(&mut self, head: &Message, error: &WireError, source: &Source) {
        if head.is_request() && head.method() != Some(&Method::Ack) && head.top_via().is_ok() {
            // §8.2.6.2: a final response carries a To tag (one the request
            // has is kept). No transaction exists to keep one in: derived
            // from the request's Via, stable for its retransmissions.
            let via = head.headers.get("Via").unwrap_or_default();
            let tag = format!("{:016x}", crate::sip::rng::fnv1a(via.as_bytes()));
            let mut resp = response_to(head, error.status_code(), &reason_for(error), Some(&tag));
            self.style(&mut resp);
            self.transmits.push_back(Transmit {
                message: resp,
                destination: Destination::Reply(source.clone()),
                key: None,
            });
        }
    }

    fn on_request(&mut self, now: Instant, request: Message, raw: Vec<u8>, source: Source) {
        if let Err(error) = request.validate() {
            self.stats.malformed += 1;
            self.answer_malformed(&request, &error, &source);
            self.events
                .push_back(EndpointEvent::Malformed { error, source });
            return;
        }
        let key = match TransactionKey::for_request(&request) {
            Ok(k) => k,
            Err(error) => {
                // An RFC 2543 Via without branch: we match by branch only.
                self.stats.no_branch += 1;
                self.answer_malformed(&request, &error, &source);
                self.events
                    .push_back(EndpointEvent::Malformed { error, source });
                return;
            }
        };
        let method = request.method().cloned();
        if let Some((tx, ..)) = self.servers.get_mut(&key) {
            if method == Some(Method::Ack) && tx.state() == ServerState::Accepted {
                // An ACK for a 2xx with the INVITE's branch (RFC 2543 style): a dialog matter.
                tx.ack_2xx();
                self.drain_server(&key);
                self.events
                    .push_back(EndpointEvent::Ack { request, source });
                return;
            }
            tx.handle_request(request, now);
            self.drain_server(&key);
            return;
        }
        match method {
            Some(Method::Ack) => {
                self.ack_2xx_sent_for(&request);
                self.events
                    .push_back(EndpointEvent::Ack { request, source });
            }
            Some(Method::Cancel) => self.on_cancel(now, key, request, source),
            _ if !self.admit(now, &key, &request, &source) => {}
            _ => match ServerTransaction::new(
                request.clone(),
                source.transport.is_reliable(),
                self.config.timers,
                now,
            ) {
                Ok(tx) => {
                    let merged = self.merges_with_a_live_request(&request);
                    self.insert_server(key.clone(), tx, source.clone());
                    self.drain_server(&key);
                    if merged {
                        // Its own transaction answers its retransmissions.
                        self.stats.merged += 1;
                        // A final response to a request without a To tag
                        // carries one (§8.2.6.2); the core has no random
                        // source, so it is derived from the request's
                        // branch: stable for its retransmissions, and
                        // different for every merged copy.
                        let tag = format!("{:016x}", crate::sip::rng::fnv1a(key.branch.as_bytes()));
                        let resp = response_to(&request, 482, "Loop Detected", Some(&tag));
                        self.respond(now, &key, resp);
                        return;
                    }
                    self.events.push_back(EndpointEvent::Request {
                        key,
                        request,
                        raw,
                        source,
                    });
                }
                Err(error) => self
                    .events
                    .push_back(EndpointEvent::Malformed { error, source }),
            },
        }
    }

    /// Ask the overload limit and the admission gate about a new request;
    /// answer it 503 (an INVITE that waited too long, or a trusted source
    /// over its rate) or drop it (an unknown source over its rate). No
    /// transaction is made for either: a retransmission meets the gate
    /// again. `true`: go on.
    fn admit(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        request: &Message,
        source: &Source,
    ) -> bool {
        let in_dialog = request.to_header().ok().is_some_and(|t| t.tag().is_some());
        if let Some(o) = self.overload {
            // Only new calls are shed: what ends or changes a call held
            // (BYE, re-INVITE, CANCEL, ACK) frees what the backlog needs.
            if request.method() == Some(&Method::Invite) && !in_dialog && self.overloaded(now) {
                let shed_before = self.stats.shed;
                let e = self.episode.get_or_insert(Episode {
                    shed_before,
                    told: false,
                    last_shed: now,
                });
                e.last_shed = now;
                self.stats.shed += 1;
                self.busy(key, request, source, o.retry_after_secs);
                return false;
            }
        }
        let Some(gate) = self.admission.as_mut() else {
            return true;
        };
        // Only a client certificate the listener accepted gives a TLS
        // source its peer names (see `TlsListen::allowed_client_names`).
        let authenticated = source.transport == TransportKind::Tls && !source.peer_names.is_empty();
        match gate.decide(
            now,
            source.remote.ip(),
            request.method(),
            in_dialog,
            authenticated,
        ) {
            Decision::Admit => true,
            Decision::Drop => false,
            Decision::Busy { retry_after_secs } => {
                self.busy(key, request, source, retry_after_secs);
                false
            }
        }
    }

    /// 503 with Retry-After, sent with no transaction.
    fn busy(&mut self, key: &TransactionKey, request: &Message, source: &Source, secs: u32) {
        // As for a merged request: a To tag from the branch.
        let tag = format!("{:016x}", crate::sip::rng::fnv1a(key.branch.as_bytes()));
        let mut resp = response_to(request, 503, "Service Unavailable", Some(&tag));
        resp.headers.push("Retry-After", secs.to_string());
        self.style(&mut resp);
        self.transmits.push_back(Transmit {
            message: resp,
            destination: Destination::Reply(source.clone()),
            key: None,
        });
    }

    /// RFC 3261 §8.2.2.2: a request outside a dialog (no To tag) whose From
    /// tag, Call-ID and CSeq are those of a server transaction we hold, yet
    /// which did not match it (another branch): the same request come back
    /// by another path, a fork or a loop. The UAS answers it 482.
    fn merges_with_a_live_request(&self, request: &Message) -> bool {
        if request
            .to_header()
            .ok()
            .and_then(|t| t.tag().map(str::to_string))
            .is_some()
        {
            return false;
        }
        let id = |m: &Message| {
            let tag = m.from_header().ok()?.tag()?.to_string();
            let cseq = m.cseq().ok()?;
            Some((tag, m.call_id().ok()?.to_string(), cseq.seq, cseq.method))
        };
        let Some(mine) = id(request) else {
            return false;
        };
        let (_, call_id, seq, method) = &mine;
        self.servers_for(call_id, *seq, method.clone())
            .iter()
            .filter_map(|k| self.servers.get(k))
            .any(|(tx, ..)| id(tx.request()).as_ref() == Some(&mine))
    }

    /// RFC 3261 §9.2: a CANCEL gets 200 when it matches a pending INVITE
    /// (whose TU then answers 487), 481 otherwise, in a transaction of its own.
    fn on_cancel(&mut self, now: Instant, key: TransactionKey, request: Message, source: Source) {
        let invite_key = TransactionKey {
            branch: key.branch.clone(),
            method: Method::Invite,
        };
        // A CANCEL for no INVITE we hold would be a transaction of its own
        // (Timer J, 32 s on UDP) and a 481 to anyone: the gate decides.
        if !self.servers.contains_key(&invite_key) && !self.admit(now, &key, &request, &source) {
            return;
        }
        let pending = self
            .servers
            .get(&invite_key)
            .is_some_and(|(tx, ..)| tx.state() == ServerState::Proceeding);
        let (code, reason) = if pending {
            (200, "OK")
        } else {
            (481, "Call/Transaction Does Not Exist")
        };
        if let Ok(tx) = ServerTransaction::new(
            request.clone(),
            source.transport.is_reliable(),
            self.config.timers,
            now,
        ) {
            self.insert_server(key.clone(), tx, source);
            // The To of a 200 to CANCEL carries the tag of the INVITE's
            // responses (§9.2); we answer before any tag exists, so none.
            self.respond(now, &key, response_to(&request, code, reason, None));
        }
        if let Some((tx, ..)) = self.servers.get_mut(&invite_key) {
            tx.handle_cancel();
            let cancelled = tx.poll_event().is_some();
            self.reschedule(Side::Server, &invite_key);
            if cancelled {
                self.events
                    .push_back(EndpointEvent::Cancelled { key: invite_key });
            }
        }
    }

    /// Stop retransmitting the 2xx this ACK acknowledges.
    fn ack_2xx_sent_for(&mut self, ack: &Message) {
        let (Ok(call_id), Ok(cseq)) = (ack.call_id(), ack.cseq()) else {
            return;
        };
        let keys: Vec<TransactionKey> = (self.servers_for(call_id, cseq.seq, Method::Invite))
            .into_iter()
            .filter(|k| {
                k.method == Method::Invite
                    && (self.servers.get(k))
                        .is_some_and(|(tx, ..)| tx.state() == ServerState::Accepted)
            })
            .collect();
        for key in keys {
            if let Some((tx, ..)) = self.servers.get_mut(&key) {
                tx.ack_2xx();
            }
            self.drain_server(&key);
        }
    }

    fn on_response(&mut self, now: Instant, response: Message) {
        let Ok(key) = TransactionKey::for_response(&response) else {
            self.stats.stray_responses += 1;
            return;
        };
        match self.clients.get_mut(&key) {
            Some((tx, ..)) => {
                tx.handle_response(response, now);
                self.drain_client(&key);
            }
            // A 2xx retransmitted after the transaction ended still needs an ACK.
            None if key.method == Method::Invite
                && response.status().is_some_and(|c| (200..300).contains(&c)) =>
            {
                self.events
                    .push_back(EndpointEvent::Response { key, response })
            }
            None => self.stats.stray_responses += 1,
        }
    }
}

/// Every header name in upper case, Content-Length included (its value is
/// filled in when the message is serialised; the name keeps this case).
fn upper_case(m: &mut Message) {
    if !m.headers.contains("Content-Length") {
        m.headers.push("Content-Length", "0");
    }
    for h in &mut m.headers.0 {
        h.name = h.name.to_ascii_uppercase();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source {
            transport: TransportKind::Udp,
            local: "192.0.2.1:5060".parse().unwrap(),
            remote: "198.51.100.7:5060".parse().unwrap(),
            connection: None,
            peer_names: Default::default(),
        }
    }

    fn invite(branch: &str) -> Message {
        let text = format!(
            "INVITE sip:+4989000001@192.0.2.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK{branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:+4930123456@198.51.100.7>;tag=from1\r\n\
             To: <sip:+4989000001@192.0.2.1>\r\n\
             Call-ID: merged@198.51.100.7\r\n\
             CSeq: 1 INVITE\r\n\
             Content-Length: 0\r\n\r\n"
        );
        Message::parse(text.as_bytes()).unwrap()
    }

    /// An endpoint as the SBC's, with no ports of its own.
    fn sbc_core() -> EndpointCore {
        EndpointCore::new(
            EndpointConfig::new("sbc.example.com"),
            LocalPorts::default(),
        )
    }

    fn drain(core: &mut EndpointCore) -> (Vec<Transmit>, Vec<EndpointEvent>) {
        let t = std::iter::from_fn(|| core.poll_transmit()).collect();
        let e = std::iter::from_fn(|| core.poll_event()).collect();
        (t, e)
    }

    /// Overload control: while every message for the interval waited
    /// longer than the limit (a standing queue), a new INVITE gets a
    /// stateless 503 with Retry-After and leaves nothing; what belongs to a
    /// call held (the INVITE's own retransmission, a request inside a
    /// dialog) and OPTIONS pass. One long wait alone sheds nothing, nor
    /// does any wait with no limit set, and the first short wait ends it.
    #[test]
    #[allow(clippy::disallowed_methods)] // a fake clock's origin
    fn a_standing_queue_sheds_new_invites_only() {
        let mut core = sbc_core();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let other = |branch: &str, call_id: &str| {
            let mut m = invite(branch);
            m.headers.set("Call-ID", call_id);
            m
        };
        let offer = |core: &mut EndpointCore, at: u64, waited: u64, branch: &str| {
            core.note_queue_delay(ms(at), Duration::from_millis(waited));
            core.handle_message(ms(at), other(branch, branch), Vec::new(), source());
            let (sent, events) = drain(core);
            let statuses: Vec<_> = sent.iter().map(|t| t.message.status()).collect();
            (statuses, events.len(), sent)
        };
        // No limit: any wait is served.
        assert_eq!(offer(&mut core, 0, 10_000, "a").1, 1);
        core.set_overload(Some(Overload {
            max_queue_delay: Duration::from_millis(200),
            interval: Duration::from_millis(500),
            retry_after_secs: 7,
        }));
        // Long waits, but not yet for the interval: served.
        assert_eq!(offer(&mut core, 1000, 201, "b").1, 1);
        assert_eq!(offer(&mut core, 1499, 900, "c").1, 1);
        assert!(!core.overloaded(ms(1499)));
        // Every message for 500 ms: 503, no transaction, no event.
        let transactions = core.transactions();
        let (statuses, events, sent) = offer(&mut core, 1500, 250, "d");
        assert_eq!((statuses, events), (vec![Some(503)], 0));
        assert_eq!(sent[0].message.headers.get("Retry-After"), Some("7"));
        assert!(
            sent[0].message.to_header().unwrap().tag().is_some(),
            "§8.2.6.2"
        );
        assert_eq!(core.transactions(), transactions, "no transaction for it");
        // A retransmission of an INVITE already held: its transaction's.
        let (statuses, _, _) = offer(&mut core, 1501, 250, "c");
        assert_eq!(statuses, [Some(100)]);
        // Inside a dialog (a To tag), and OPTIONS: served.
        let text = String::from_utf8(other("e", "c").to_bytes())
            .unwrap()
            .replacen("INVITE", "BYE", 1)
            .replace("1 INVITE", "2 BYE")
            .replace("@192.0.2.1>\r\n", "@192.0.2.1>;tag=to1\r\n");
        let bye = Message::parse(text.as_bytes()).unwrap();
        assert!(bye.to_header().unwrap().tag().is_some());
        core.note_queue_delay(ms(1502), Duration::from_millis(250));
        core.handle_message(ms(1502), bye, Vec::new(), source());
        let text = String::from_utf8(other("f", "f").to_bytes())
            .unwrap()
            .replacen("INVITE", "OPTIONS", 1)
            .replace("1 INVITE", "1 OPTIONS");
        let options = Message::parse(text.as_bytes()).unwrap();
        core.handle_message(ms(1502), options, Vec::new(), source());
        let (sent, events) = drain(&mut core);
        assert!(sent.is_empty(), "{sent:?}");
        assert_eq!(events.len(), 2, "{events:?}");
        // One short wait ends it; a long one after starts the count again.
        assert_eq!(offer(&mut core, 1600, 200, "g").1, 1);
        assert_eq!(offer(&mut core, 1700, 300, "h").1, 1);
        assert!(core.overloaded(ms(2200)) && !core.overloaded(ms(2199)));
        assert_eq!(core.stats().shed, 1);
    }

    /// An operator hears of an overload episode twice: when the first
    /// INVITE is shed, and once nothing was shed for OVERLOAD_QUIET, with
    /// the count. Waits that fall under the limit and rise again within
    /// that time do not end it.
    #[test]
    #[allow(clippy::disallowed_methods)] // a fake clock's origin
    fn an_overload_episode_is_told_at_its_start_and_after_a_quiet_spell() {
        let mut core = sbc_core();
        core.set_overload(Some(Overload {
            max_queue_delay: Duration::from_millis(200),
            interval: Duration::from_millis(500),
            retry_after_secs: 5,
        }));
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let offer = |core: &mut EndpointCore, at: u64, waited: u64, branch: &str| {
            let mut m = invite(branch);
            m.headers.set("Call-ID", branch);
            core.note_queue_delay(ms(at), Duration::from_millis(waited));
            core.handle_message(ms(at), m, Vec::new(), source());
            drain(core);
        };
        assert_eq!(
            (core.overload_due(), core.overload_note(ms(0))),
            (None, None)
        );
        offer(&mut core, 0, 300, "a");
        offer(&mut core, 500, 300, "b"); // shed
        assert_eq!(core.overload_due(), Some(ms(500)));
        assert_eq!(
            core.overload_note(ms(500)),
            Some(OverloadNote::Started {
                waited: Duration::from_millis(300)
            })
        );
        assert_eq!(core.overload_note(ms(501)), None);
        // A short wait, then a standing queue again: the same episode.
        offer(&mut core, 600, 100, "c");
        offer(&mut core, 700, 300, "d");
        offer(&mut core, 1200, 300, "e"); // shed
        assert_eq!(core.stats().shed, 2);
        assert_eq!(core.overload_due(), Some(ms(1200) + OVERLOAD_QUIET));
        assert_eq!(core.overload_note(ms(1199) + OVERLOAD_QUIET), None);
        assert_eq!(
            core.overload_note(ms(1200) + OVERLOAD_QUIET),
            Some(OverloadNote::Ended { shed: 2 })
        );
        assert_eq!(
            (core.overload_due(), core.overload_note(ms(20_000))),
            (None, None)
        );
    }

    /// The admission gate answers before any transaction exists: a trusted
    /// source over its rate gets a stateless 503 with Retry-After and a To
    /// tag; an unknown one nothing; neither leaves a transaction or an
    /// event. A retransmission of an admitted INVITE is its transaction's
    /// business, never the gate's.
    #[test]
    #[allow(clippy::disallowed_methods)] // a fake clock's origin
    fn the_gate_answers_503_to_a_trusted_source_and_drops_an_unknown_one() {
        use crate::sip::endpoint::{Admission, Rate, RateLimits};
        let mut core = sbc_core();
        let mut gate = Admission::new(RateLimits {
            invite: Rate::new(1.0, 1),
            unknown_source: Rate::new(1.0, 1),
            ..RateLimits::default()
        });
        gate.trust(source().remote.ip());
        core.set_admission(Some(gate));
        let now = Instant::now();
        core.handle_message(now, invite("aaa"), Vec::new(), source());
        let (_, events) = drain(&mut core);
        assert!(matches!(events.as_slice(), [EndpointEvent::Request { .. }]));
        // Its retransmission: the transaction's 100 again, not a 503.
        core.handle_message(now, invite("aaa"), Vec::new(), source());
        let (sent, _) = drain(&mut core);
        assert_eq!(
            sent.iter().map(|t| t.message.status()).collect::<Vec<_>>(),
            [Some(100)]
        );
        let transactions = core.transactions();
        let mut other = invite("bbb");
        other.headers.set("Call-ID", "other@198.51.100.7");
        core.handle_message(now, other, Vec::new(), source());
        let (sent, events) = drain(&mut core);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(sent.len(), 1);
        let busy = &sent[0].message;
        assert_eq!(busy.status(), Some(503));
        assert_eq!(busy.headers.get("Retry-After"), Some("5"));
        assert!(
            busy.to_header().unwrap().tag().is_some(),
            "a To tag (§8.2.6.2)"
        );
        assert_eq!(core.transactions(), transactions, "no transaction for it");
        // An unknown source over its rate: nothing at all.
        let stranger = Source {
            remote: "203.0.113.9:5060".parse().unwrap(),
            ..source()
        };
        core.handle_message(now, invite("ccc"), Vec::new(), stranger.clone());
        drain(&mut core);
        core.handle_message(now, invite("ddd"), Vec::new(), stranger);
        let (sent, events) = drain(&mut core);
        assert!(sent.is_empty() && events.is_empty(), "{sent:?} {events:?}");
        // A CANCEL that matches no INVITE meets the gate too.
        let text = String::from_utf8(invite("eee").to_bytes())
            .unwrap()
            .replacen("INVITE", "CANCEL", 1)
            .replace("1 INVITE", "1 CANCEL");
        let cancel = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(cancel.method(), Some(&Method::Cancel));
        core.handle_message(
            now,
            cancel,
            Vec::new(),
            Source {
                remote: "203.0.113.9:5060".parse().unwrap(),
                ..source()
            },
        );
        let (sent, _) = drain(&mut core);
        assert!(sent.is_empty(), "{sent:?}");
        let stats = core.admission().unwrap().stats();
        assert_eq!((stats.busy, stats.dropped), (1, 2));
    }

    /// RFC 3261 §8.2.2.2: the same request (From tag, Call-ID, CSeq) on a
    /// second branch, a fork come back by another path, is answered 482
    /// and never reaches the transaction user; its retransmission gets the
    /// 482 again from its own transaction. The first branch is untouched.
    #[test]
    #[allow(clippy::disallowed_methods)] // a fake clock's origin
    fn a_merged_request_is_answered_482_loop_detected() {
        let mut core = sbc_core();
        let now = Instant::now();
        core.handle_message(now, invite("aaa"), Vec::new(), source());
        let (_, events) = drain(&mut core);
        assert!(matches!(events.as_slice(), [EndpointEvent::Request { .. }]));
        core.handle_message(now, invite("bbb"), Vec::new(), source());
        let (sent, events) = drain(&mut core);
        assert!(events.is_empty(), "{events:?}");
        // The INVITE transaction's own 100 Trying (§17.2.1), then the 482.
        let codes: Vec<Option<u16>> = sent.iter().map(|t| t.message.status()).collect();
        assert_eq!(codes, [Some(100), Some(482)]);
        assert!(sent[1]
            .message
            .headers
            .get("Via")
            .unwrap()
            .contains("branch=z9hG4bKbbb"));
        assert_eq!(core.stats().merged, 1);
        // Its retransmission: the 482 again, still no event.
        core.handle_message(now, invite("bbb"), Vec::new(), source());
        let (sent, events) = drain(&mut core);
        assert!(events.is_empty());
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].message.status(), Some(482));
        // Another CSeq on the same call is a new request, not a merge.
        let mut next = invite("ccc");
        next.headers.set("CSeq", "2 INVITE");
        core.handle_message(now, next, Vec::new(), source());
        let (_, events) = drain(&mut core);
        assert!(matches!(events.as_slice(), [EndpointEvent::Request { .. }]));
    }
}
