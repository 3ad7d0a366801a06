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
            },
            Err(error) => TransportEvent::Malformed { error, raw, source },
        };
        if inner.events.send(event).is_err() {
            return;
        }
    }
}

pub(crate) async fn accept_loop<N: Network>(
    inner: Arc<Inner<N>>,
    listener: N::Listener,
    tls: Option<TlsListen>,
) {
    loop {
        let Ok((stream, local, remote)) = listener.accept().await else {
            continue;
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
                    );
                }
                Some(t) => accept_tls(inner, stream, t, local, remote).await,
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
) {
    let refuse = |reason: String| {
        let _ = inner.events.send(TransportEvent::TlsRefused {
            remote,
            inbound: true,
            reason,
        });
    };
    let tls_stream = match tokio_rustls::TlsAcceptor::from(t.config.clone())
        .accept(stream)
        .await
    {
        Ok(s) => s,
        Err(e) => return refuse(e.to_string()),
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
            match tokio_rustls::TlsConnector::from(config)
                .connect(server_name, stream)
                .await
            {
                Ok(s) => {
                    let names = peer_names(s.get_ref().1.peer_certificates());
                    Ok(spawn_stream(
                        inner,
                        s,
                        TransportKind::Tls,
                        local,
                        target.addr,
                        Arc::new(names),
                    ))
                }
                Err(e) => {
                    let reason = e.to_string();
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
) -> ConnHandle
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
        run_stream(&inner, stream, rx, source).await;
        inner.forget(id);
        let _ = inner.events.send(TransportEvent::ConnectionClosed {
            connection: id,
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
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut framer = StreamFramer::new(inner.max_message);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            biased;
            out = rx.recv() => {
                let Some(bytes) = out else { break };
                if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
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
                            if stream.write_all(b"\r\n").await.is_err() {
                                return;
                            }
                        }
                        Ok(Some(Frame::Message(message, raw))) => {
                            inner.trace(Direction::Received, source.local, source.remote, source.transport, raw.clone());
                            if inner.events.send(TransportEvent::Message { message, raw, source: source.clone() }).is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            // A stream that lost its framing cannot be resynchronised (RFC 3261 §18.3).
                            let _ = inner.events.send(TransportEvent::Malformed { error, raw: Vec::new(), source: source.clone() });
                            let _ = stream.shutdown().await;
                            return;
                        }
                    }
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}
