//! SIP transports (RFC 3261 §18): UDP, TCP and TLS on any [`Network`].
//!
//! [`SipTransport`] listens, frames streams, keeps connections for reuse
//! (keyed by transport and peer address), hands every message to the
//! [`tap`], and reports what arrives as [`TransportEvent`]s on a channel.
//! It decides nothing about SIP beyond framing: the layers above match
//! transactions and answer.

mod connection;
pub mod hooked;
pub mod impair;
pub mod media_tap;
pub mod net;
pub mod tap;
pub mod tls;

pub use hooked::{DatagramHook, HookedNet};
pub use impair::{ImpairedNet, Impairments};
pub use media_tap::{MediaTap, MediaTapNet};
pub use net::{DatagramSocket, Network, StreamListener, TokioNet, TurmoilNet};
pub use tap::{Recorder, Tap, TraceEvent};

use crate::sip::wire::{Message, WireError, DEFAULT_MAX_MESSAGE};
use connection::ConnHandle;
use rustls::{ClientConfig, ServerConfig};
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportKind {
    Udp,
    Tcp,
    Tls,
}

impl TransportKind {
    /// Reliable transports do not retransmit (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        !matches!(self, TransportKind::Udp)
    }

    /// The name used in Via and `transport=` (RFC 3261 §18.2.1).
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
            TransportKind::Tls => "TLS",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one TCP or TLS connection for answering on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// A TLS listener: the server configuration and, optionally, the names a
/// client certificate must cover one of (a hub knows its tenants' SBC FQDNs).
#[derive(Clone)]
pub struct TlsListen {
    pub addr: SocketAddr,
    pub config: Arc<ServerConfig>,
    pub allowed_client_names: Option<Vec<String>>,
}

#[derive(Clone)]
pub struct TransportConfig {
    /// Name of this host in traces.
    pub host: String,
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<TlsListen>,
    /// Used for connections this side opens with TLS.
    pub tls_client: Option<Arc<ClientConfig>>,
    pub max_message: usize,
    /// What accepted TCP/TLS connections may hold.
    pub limits: StreamLimits,
}

/// Bounds on the connections a listener accepts: a silent or slow peer
/// must not hold a descriptor and a task for ever, nor one address take
/// them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// The TLS handshake must be done by then, or the connection is closed.
    pub handshake_timeout: std::time::Duration,
    /// An accepted connection with no bytes either way for this long is
    /// closed; `None`: never.
    pub idle_timeout: Option<std::time::Duration>,
    /// Accepted connections open at once from one address, and in all
    /// (handshakes in progress count); beyond, a new one is closed at once.
    pub max_per_source: Option<usize>,
    pub max_total: Option<usize>,
}

impl Default for StreamLimits {
    /// Only the handshake bound: a simulator or client has no need of more.
    fn default() -> Self {
        StreamLimits {
            handshake_timeout: std::time::Duration::from_secs(10),
            idle_timeout: None,
            max_per_source: None,
            max_total: None,
        }
    }
}

impl TransportConfig {
    pub fn new(host: impl Into<String>) -> Self {
        TransportConfig {
            host: host.into(),
            udp: None,
            tcp: None,
            tls: None,
            tls_client: None,
            max_message: DEFAULT_MAX_MESSAGE,
            limits: StreamLimits::default(),
        }
    }
}

/// Where a message came from, enough to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub transport: TransportKind,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub connection: Option<ConnectionId>,
    /// DNS names of the peer's TLS certificate (empty for UDP/TCP).
    pub peer_names: Arc<Vec<String>>,
}

#[derive(Debug, Clone)]
pub enum TransportEvent {
    Message {
        message: Message,
        raw: Vec<u8>,
        source: Source,
        /// When it was read from its socket (the runtime's clock): how
        /// long it then waits for its turn is the host's backlog.
        received: std::time::Instant,
    },
    /// Bytes that are not SIP. On a stream the connection is closed after this.
    Malformed {
        error: WireError,
        raw: Vec<u8>,
        source: Source,
    },
    /// A TLS handshake failed or its certificate was refused.
    TlsRefused {
        remote: SocketAddr,
        inbound: bool,
        reason: String,
    },
    ConnectionClosed {
        connection: ConnectionId,
        transport: TransportKind,
        remote: SocketAddr,
    },
}

/// Where to send a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub transport: TransportKind,
    pub addr: SocketAddr,
    /// The name the TLS server certificate must carry (and SNI).
    pub server_name: Option<String>,
}

#[derive(Debug)]
pub enum SendError {
    /// No listener/socket or client configuration for this transport.
    NotConfigured(TransportKind),
    Io(io::Error),
    Tls(String),
    /// The connection to answer on is gone.
    NoConnection(ConnectionId),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotConfigured(k) => write!(f, "no {k} transport configured"),
            SendError::Io(e) => write!(f, "{e}"),
            SendError::Tls(e) => write!(f, "TLS: {e}"),
            SendError::NoConnection(c) => write!(f, "connection {} is closed", c.0),
        }
    }
}

impl std::error::Error for SendError {}

pub(crate) struct Inner<N: Network> {
    net: N,
    host: String,
    max_message: usize,
    udp: Option<Arc<N::Datagram>>,
    udp_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    tls_client: Option<Arc<ClientConfig>>,
    tap: Option<Arc<dyn Tap>>,
    events: mpsc::UnboundedSender<TransportEvent>,
    conns: Mutex<BTreeMap<(TransportKind, SocketAddr), ConnHandle>>,
    by_id: Mutex<BTreeMap<ConnectionId, ConnHandle>>,
    next_id: AtomicU64,
    limits: StreamLimits,
    /// Accepted connections open now, per remote address.
    accepted: Mutex<BTreeMap<std::net::IpAddr, usize>>,
    /// A lock per peer being connected to: senders that find no
    /// connection wait for the one connecting rather than open another
    /// (several SIP cores share this transport; RFC 5923's one connection
    /// per peer is what the hub expects too).
    connecting: Mutex<BTreeMap<(TransportKind, SocketAddr), ConnectGate>>,
}

/// Held by whoever connects to a peer; the others wait on it.
type ConnectGate = Arc<tokio::sync::Mutex<()>>;

/// A running SIP transport layer. Cheap to clone.
pub struct SipTransport<N: Network> {
    inner: Arc<Inner<N>>,
}

impl<N: Network> Clone for SipTransport<N> {
    fn clone(&self) -> Self {
        SipTransport {
            inner: self.inner.clone(),
        }
    }
}

impl<N: Network> SipTransport<N> {
    /// Bind what `config` asks for and start receiving. Must run inside the
    /// world's runtime (a tokio runtime, or a turmoil host).
    pub async fn start(
        net: N,
        config: TransportConfig,
        tap: Option<Arc<dyn Tap>>,
    ) -> io::Result<(Self, mpsc::UnboundedReceiver<TransportEvent>)> {
        let (events, rx) = mpsc::unbounded_channel();
        // A port another program holds is the commonest start-up failure
        // in a lab on one machine: say which address and port.
        let named = |what: &str, a: SocketAddr| {
            let what = what.to_string();
            move |e: io::Error| io::Error::new(e.kind(), format!("cannot bind SIP {what} {a}: {e}"))
        };
        let udp = match config.udp {
            Some(a) => Some(Arc::new(net.bind_udp(a).await.map_err(named("UDP", a))?)),
            None => None,
        };
        let tcp = match config.tcp {
            Some(a) => Some(net.bind_tcp(a).await.map_err(named("TCP", a))?),
            None => None,
        };
        let tls = match &config.tls {
            Some(t) => Some((
                net.bind_tcp(t.addr).await.map_err(named("TLS", t.addr))?,
                t.clone(),
            )),
            None => None,
        };
        let inner = Arc::new(Inner {
            net,
            host: config.host.clone(),
            max_message: config.max_message,
            udp_addr: udp.as_ref().map(|u| u.local_addr()).transpose()?,
            tcp_addr: tcp.as_ref().map(|l| l.local_addr()).transpose()?,
            tls_addr: tls.as_ref().map(|(l, _)| l.local_addr()).transpose()?,
            udp,
            tls_client: config.tls_client.clone(),
            tap,
            events,
            conns: Mutex::new(BTreeMap::new()),
            by_id: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            limits: config.limits,
            accepted: Mutex::new(BTreeMap::new()),
            connecting: Mutex::new(BTreeMap::new()),
        });
        if let Some(sock) = inner.udp.clone() {
            tokio::spawn(connection::udp_receive_loop(inner.clone(), sock));
        }
        if let Some(listener) = tcp {
            tokio::spawn(connection::accept_loop(inner.clone(), listener, None));
        }
        if let Some((listener, t)) = tls {
            tokio::spawn(connection::accept_loop(inner.clone(), listener, Some(t)));
        }
        Ok((SipTransport { inner }, rx))
    }

    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The bound address of a transport.
    pub fn local_addr(&self, kind: TransportKind) -> Option<SocketAddr> {
        match kind {
            TransportKind::Udp => self.inner.udp_addr,
            TransportKind::Tcp => self.inner.tcp_addr,
            TransportKind::Tls => self.inner.tls_addr,
        }
    }

    /// Send a message to `target`, reusing an open connection to that peer
    /// or opening one. Returns the source the message left from (for Via).
    pub async fn send(&self, msg: &Message, target: &Target) -> Result<Source, SendError> {
        let bytes = msg.to_bytes();
        match target.transport {
            TransportKind::Udp => {
                let sock = self
                    .inner
                    .udp
                    .as_ref()
                    .ok_or(SendError::NotConfigured(TransportKind::Udp))?;
                sock.send_to(&bytes, target.addr)
                    .await
                    .map_err(SendError::Io)?;
                let local = self.inner.udp_addr.unwrap_or(target.addr);
                self.inner.trace(
                    tap::Direction::Sent,
                    local,
                    target.addr,
                    TransportKind::Udp,
                    bytes,
                );
                Ok(Source {
                    transport: TransportKind::Udp,
                    local,
                    remote: target.addr,
                    connection: None,
                    peer_names: Arc::default(),
                })
            }
            kind => {
                let handle = match self.inner.existing(kind, target.addr) {
                    Some(h) => h,
                    None => self.connect_once(kind, target).await?,
                };
                handle.send(&self.inner, bytes)?;
                Ok(handle.source())
            }
        }
    }

    /// The connection to `target`: the one another sender opened while
    /// this one waited, or a new one.
    async fn connect_once(
        &self,
        kind: TransportKind,
        target: &Target,
    ) -> Result<ConnHandle, SendError> {
        let key = (kind, target.addr);
        let gate = {
            let mut m = self
                .inner
                .connecting
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            m.entry(key).or_default().clone()
        };
        let result = {
            let _turn = gate.lock().await;
            match self.inner.existing(kind, target.addr) {
                Some(h) => Ok(h),
                None => connection::connect(self.inner.clone(), target).await,
            }
        };
        // The last one out takes the lock away (the map holds one, `gate`
        // the other).
        let mut m = self
            .inner
            .connecting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if Arc::strong_count(&gate) == 2 {
            m.remove(&key);
        }
        result
    }

    /// Send on a connection a message arrived on (responses, RFC 3261 §18.2.2),
    /// or for UDP back to the source address (symmetric response routing,
    /// RFC 3581).
    pub async fn reply(&self, msg: &Message, to: &Source) -> Result<(), SendError> {
        match to.connection {
            Some(id) => {
                let handle = self
                    .inner
                    .by_id
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&id).cloned())
                    .ok_or(SendError::NoConnection(id))?;
                handle.send(&self.inner, msg.to_bytes())
            }
            None => {
                let target = Target {
                    transport: TransportKind::Udp,
                    addr: to.remote,
                    server_name: None,
                };
                self.send(msg, &target).await.map(|_| ())
            }
        }
    }

    /// Close a connection (for example after a certificate the SIP layer refuses).
    pub fn close(&self, id: ConnectionId) {
        self.inner.forget(id);
    }

    /// Open connections, for inspection in tests.
    /// Whether a connection of this kind to `remote` is open now.
    pub fn has_connection(&self, kind: TransportKind, remote: SocketAddr) -> bool {
        self.inner.existing(kind, remote).is_some()
    }

    /// Accepted connections open now (handshakes in progress included).
    pub fn accepted_count(&self) -> usize {
        self.inner
            .accepted
            .lock()
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }

    pub fn connection_count(&self) -> usize {
        self.inner.by_id.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl<N: Network> Inner<N> {
    fn trace(
        &self,
        direction: tap::Direction,
        local: SocketAddr,
        remote: SocketAddr,
        transport: TransportKind,
        raw: Vec<u8>,
    ) {
        if let Some(tap) = &self.tap {
            tap.record(TraceEvent {
                at: self.net.elapsed(),
                host: self.host.clone(),
                direction,
                local,
                remote,
                transport,
                raw,
            });
        }
    }

    fn existing(&self, kind: TransportKind, addr: SocketAddr) -> Option<ConnHandle> {
        self.conns.lock().ok()?.get(&(kind, addr)).cloned()
    }

    fn register(&self, handle: ConnHandle) {
        if let Ok(mut m) = self.conns.lock() {
            m.insert((handle.kind, handle.remote), handle.clone());
        }
        if let Ok(mut m) = self.by_id.lock() {
            m.insert(handle.id, handle);
        }
    }

    fn forget(&self, id: ConnectionId) {
        let removed = self.by_id.lock().ok().and_then(|mut m| m.remove(&id));
        if let Some(h) = removed {
            if let Ok(mut m) = self.conns.lock() {
                if m.get(&(h.kind, h.remote)).is_some_and(|x| x.id == id) {
                    m.remove(&(h.kind, h.remote));
                }
            }
        }
    }

    fn new_id(&self) -> ConnectionId {
        ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_an_error_naming_address_and_port() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = held.local_addr().unwrap();
            let mut config = TransportConfig::new("sbc.example.com");
            config.udp = Some(addr);
            let Err(e) = SipTransport::start(TokioNet::default(), config, None).await else {
                panic!("bound a port another socket holds");
            };
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
            assert!(
                e.to_string()
                    .starts_with(&format!("cannot bind SIP UDP {addr}: ")),
                "{e}"
            );
        });
    }
}
