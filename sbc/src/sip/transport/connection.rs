//! The tasks behind [`super::SipTransport`]: the UDP receive loop, the
//! accept loops, and one task per TCP/TLS connection that frames what it
//! reads and writes what it is given.

use super::tap::Direction;
use super::{tls, DatagramSocket};
use super::{
    ConnectionId, Inner, Network, SendError, Source, StreamListener, Target, TlsListen,
    TransportEvent, TransportKind,
};
use crate::sip::wire::{Frame, Message, StreamFramer};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// How long a write (a message, a pong, the TLS close) may wait for the
/// peer to take it before the connection is given up.
pub(crate) const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a TCP connect (and so the first send to a peer) may take.
pub(crate) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

/// The sending side of one connection.
#[derive(Clone)]
pub(crate) struct ConnHandle {
    pub id: ConnectionId,
    pub kind: TransportKind,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub peer_names: Arc<Vec<String>>,
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

impl ConnHandle {
    pub fn send<N: Network>(&self, inner: &Inner<N>, bytes: Vec<u8>) -> Result<(), SendError> {
        inner.trace(
            Direction::Sent,
            self.local,
            self.remote,
            self.kind,
            bytes.clone(),
        );
        self.tx
            .send(bytes)
            .map_err(|_| SendError::NoConnection(self.id))
    }

    pub fn source(&self) -> Source {
        Source {
            transport: self.kind,
            local: self.local,
            remote: self.remote,
            connection: Some(self.id),
            peer_names: self.peer_names.clone(),
        }
    }
}

pub(crate) async fn udp_receive_loop<N: Network>(inner: Arc<Inner<N>>, sock: Arc<N::Datagram>) {
    let local = sock.local_addr().ok();
    let mut buf = vec![0u8; inner.max_message + 1];
    loop {
        let Ok((n, remote)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let received = tokio::time::Instant::now().into_std();
        let raw = buf[..n].to_vec();
        // RFC 5626 §4.4.1 keep-alives and stray CRLFs are not messages.
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let source = Source {
            transport: TransportKind::Udp,
            local: local.unwrap_or(remote),
            remote,
            connection: None,
            peer_names: Arc::default(),
        };
        inner.trace(
            Direction::Received,
            source.local,
            remote,
            TransportKind::Udp,
            raw.clone(),
        );
        let event = match Message::parse_with_limit(&raw, inner.max_message) {
            Ok(message) => TransportEvent::Message {
                message,
                raw,
                source,
                received,
            },
            Err(error) => TransportEvent::Malformed { error, raw, source },
        };
        if inner.events.send(event).is_err() {
            return;
        }
    }
}

/// One accepted connection counted against [`super::StreamLimits`]; the
/// count goes down when the connection's last task drops it.
pub(crate) struct Admitted<N: Network> {
    inner: Arc<Inner<N>>,
    ip: std::net::IpAddr,
}

impl<N: Network> Admitted<N> {
    /// Count a new connection from `ip`, or say which cap it is over.
    fn new(inner: &Arc<Inner<N>>, ip: std::net::IpAddr) -> Result<Self, String> {
        let limits = inner.limits;
        let mut m = inner
            .accepted
            .lock()
            .map_err(|_| "connection table poisoned".to_string())?;
        let total: usize = m.values().sum();
        let from_ip = m.get(&ip).copied().unwrap_or(0);
        if let Some(max) = limits.max_total.filter(|max| total >= *max) {
            return Err(format!(
                "connection limit: {total} open, max_connections is {max}"
            ));
        }
        if let Some(max) = limits.max_per_source.filter(|max| from_ip >= *max) {
            return Err(format!(
                "connection limit: {from_ip} open from {ip}, max_connections_per_source is {max}"
            ));
        }
        *m.entry(ip).or_default() += 1;
        Ok(Admitted {
            inner: inner.clone(),
            ip,
        })
    }
}

impl<N: Network> Drop for Admitted<N> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.inner.accepted.lock() {
            if let Some(n) = m.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

pub(crate) async fn accept_loop<N: Network>(
    inner: Arc<Inner<N>>,
    listener: N::Listener,
    tls: Option<TlsListen>,
) {
    loop {
        let (stream, local, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of descriptors (EMFILE) and the like: accept fails at
                // once until one is freed. Wait rather than spin a core.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let admitted = match Admitted::new(&inner, remote.ip()) {
            Ok(a) => a,
            Err(reason) => {
                // Closed at once: dropping the stream closes it.
                drop(stream);
                let _ = inner.events.send(TransportEvent::TlsRefused {
                    remote,
                    inbound: true,
                    reason,
                });
                continue;
            }
        };
        let inner = inner.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    spawn_stream(
                        inner,
                        stream,
                        TransportKind::Tcp,
                        local,
                        remote,
                        Arc::default(),
                        Some(admitted),
                    );
                }
                Some(t) => accept_tls(inner, stream, t, local, remote, admitted).await,
            }
        });
    }
}

async fn accept_tls<N: Network>(
    inner: Arc<Inner<N>>,
    stream: N::Stream,
    t: TlsListen,
    local: SocketAddr,
    remote: SocketAddr,
    admitted: Admitted<N>,
) {
    let refuse = |reason: String| {
        let _ = inner.events.send(TransportEvent::TlsRefused {
            remote,
            inbound: true,
            reason,
        });
    };
    // A peer that opens a connection and never finishes (or starts) the
    // handshake must not hold it: a slow-loris on the TLS port.
    let limit = inner.limits.handshake_timeout;
    let handshake = tokio_rustls::TlsAcceptor::from(t.config.clone()).accept(stream);
    let tls_stream = match tokio::time::timeout(limit, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return refuse(tls::explain(&e.to_string())),
        Err(_) => {
            return refuse(format!(
                "TLS handshake not done within {} s (handshake timeout)",
                limit.as_secs()
            ))
        }
    };
    let names = peer_names(tls_stream.get_ref().1.peer_certificates());
    if let Some(allowed) = &t.allowed_client_names {
        if !allowed.iter().any(|fqdn| tls::names_cover(&names, fqdn)) {
            return refuse(format!(
                "client certificate names {names:?} cover none of {allowed:?}"
            ));
        }
    }
    spawn_stream(
        inner,
        tls_stream,
        TransportKind::Tls,
        local,
        remote,
        Arc::new(names),
        Some(admitted),
    );
}

fn peer_names(certs: Option<&[rustls::pki_types::CertificateDer<'static>]>) -> Vec<String> {
    certs
        .and_then(|c| c.first())
        .map(tls::certificate_dns_names)
        .unwrap_or_default()
}

/// Open a connection to `target` and start its task.
pub(crate) async fn connect<N: Network>(
    inner: Arc<Inner<N>>,
    target: &Target,
) -> Result<ConnHandle, SendError> {
    // A peer that never answers the SYN must not hold its queue for ever;
    // RFC 3261 leaves this to the transport, Timer B/F (32 s) bound it above.
    let connecting = inner.net.connect_tcp(target.addr);
    let (stream, local) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| {
            let why = format!("connect to {} timed out", target.addr);
            SendError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, why))
        })?
        .map_err(SendError::Io)?;
    match target.transport {
        TransportKind::Tcp => Ok(spawn_stream(
            inner,
            stream,
            TransportKind::Tcp,
            local,
            target.addr,
            Arc::default(),
            None,
        )),
        TransportKind::Tls => {
            let config = inner
                .tls_client
                .clone()
                .ok_or(SendError::NotConfigured(TransportKind::Tls))?;
            let name = target
                .server_name
                .clone()
                .unwrap_or_else(|| target.addr.ip().to_string());
            let server_name = tls::server_name(&name).map_err(|e| SendError::Tls(e.to_string()))?;
            // A server that accepts the connection and never answers the
            // ClientHello must not hold the request's queue either.
            let limit = inner.limits.handshake_timeout;
            let handshake = tokio_rustls::TlsConnector::from(config).connect(server_name, stream);
            let done = match tokio::time::timeout(limit, handshake).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "TLS handshake not done within {} s (handshake timeout)",
                        limit.as_secs()
                    ),
                )),
            };
            match done {
                Ok(s) => {
                    let names = peer_names(s.get_ref().1.peer_certificates());
                    Ok(spawn_stream(
                        inner,
                        s,
                        TransportKind::Tls,
                        local,
                        target.addr,
                        Arc::new(names),
                        None,
                    ))
                }
                Err(e) => {
                    let reason = tls::explain(&e.to_string());
                    let _ = inner.events.send(TransportEvent::TlsRefused {
                        remote: target.addr,
                        inbound: false,
                        reason: reason.clone(),
                    });
                    Err(SendError::Tls(reason))
                }
            }
        }
        TransportKind::Udp => Err(SendError::NotConfigured(TransportKind::Udp)),
    }
}

fn spawn_stream<N: Network, S>(
    inner: Arc<Inner<N>>,
    stream: S,
    kind: TransportKind,
    local: SocketAddr,
    remote: SocketAddr,
    peer_names: Arc<Vec<String>>,
    admitted: Option<Admitted<N>>,
) -> ConnHandle
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Only connections we accepted time out when idle: the ones we open
    // carry our own OPTIONS and calls, and we close them ourselves.
    let idle = admitted.as_ref().and(inner.limits.idle_timeout);
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = ConnHandle {
        id: inner.new_id(),
        kind,
        local,
        remote,
        peer_names,
        tx,
    };
    inner.register(handle.clone());
    let source = handle.source();
    // Only the maps keep the sender: once forgotten, `rx` ends and the task closes.
    let id = handle.id;
    tokio::spawn(async move {
        run_stream(&inner, stream, rx, source, idle).await;
        drop(admitted);
        inner.forget(id);
        let _ = inner.events.send(TransportEvent::ConnectionClosed {
            connection: id,
            transport: kind,
            remote,
        });
    });
    handle
}

async fn run_stream<N: Network, S>(
    inner: &Inner<N>,
    mut stream: S,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    source: Source,
    idle: Option<std::time::Duration>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut framer = StreamFramer::new(inner.max_message);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Renewed by every pass of the loop, i.e. by bytes either way.
        let quiet = async {
            match idle {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = quiet => {
                let _ = inner.events.send(TransportEvent::TlsRefused {
                    remote: source.remote,
                    inbound: true,
                    reason: format!(
                        "connection idle for {} s, closed (idle timeout)",
                        idle.map_or(0, |d| d.as_secs())
                    ),
                });
                break;
            }
            out = rx.recv() => {
                let Some(bytes) = out else { break };
                let written = async {
                    stream.write_all(&bytes).await?;
                    stream.flush().await
                };
                // A peer that stops reading would hold this task (and its
                // connection slot) for ever once its window is full.
                if !matches!(tokio::time::timeout(WRITE_TIMEOUT, written).await, Ok(Ok(()))) {
                    break;
                }
            }
            n = stream.read(&mut buf) => {
                let n = match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                framer.push(&buf[..n]);
                loop {
                    match framer.next_frame() {
                        Ok(None) => break,
                        Ok(Some(Frame::KeepAlivePing)) => {
                            // RFC 5626 §4.4.1: answer a double-CRLF ping with a CRLF pong.
                            let pong = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(b"\r\n"));
                            if !matches!(pong.await, Ok(Ok(()))) {
                                return;
                            }
                        }
                        Ok(Some(Frame::Message(message, raw))) => {
                            let received = tokio::time::Instant::now().into_std();
                            inner.trace(Direction::Received, source.local, source.remote, source.transport, raw.clone());
                            if inner.events.send(TransportEvent::Message { message, raw, source: source.clone(), received }).is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            // A stream that lost its framing cannot be resynchronised (RFC 3261 §18.3).
                            let _ = inner.events.send(TransportEvent::Malformed { error, raw: Vec::new(), source: source.clone() });
                            let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
                            return;
                        }
                    }
                }
            }
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
}
