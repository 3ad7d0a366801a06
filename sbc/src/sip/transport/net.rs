//! The one seam between the protocol code and the world it runs in.
//!
//! [`Network`] opens sockets. [`TokioNet`] uses the operating system
//! (wall-clock time, real peers); [`TurmoilNet`] uses `turmoil::net`
//! (simulated hosts, simulated time, seeded loss and latency). Everything
//! above this file is written once against the trait.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

pub trait DatagramSocket: Send + Sync + 'static {
    fn send_to(&self, buf: &[u8], to: SocketAddr)
        -> impl Future<Output = io::Result<usize>> + Send;
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

pub trait StreamListener: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Accept a connection: the stream, its local and its remote address
    /// (the local address is the connection's, not the wildcard the
    /// listener may be bound to).
    fn accept(
        &self,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr, SocketAddr)>> + Send;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

pub trait Network: Clone + Send + Sync + 'static {
    type Datagram: DatagramSocket;
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    type Listener: StreamListener<Stream = Self::Stream>;

    fn bind_udp(&self, addr: SocketAddr)
        -> impl Future<Output = io::Result<Self::Datagram>> + Send;
    fn bind_tcp(&self, addr: SocketAddr)
        -> impl Future<Output = io::Result<Self::Listener>> + Send;
    fn connect_tcp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
    /// Resolve a host name (or IP literal) to an address.
    fn resolve(&self, host: &str, port: u16)
        -> impl Future<Output = io::Result<SocketAddr>> + Send;
    /// Time since the world started: simulated in turmoil, since the first
    /// call in the real world. Traces are stamped with it.
    fn elapsed(&self) -> Duration;
}

/// Operating-system sockets, with optional static name → address entries
/// that win over DNS (a lab on one machine names its parties
/// `sip.pstnhub.microsoft.com` or `sbc.example.com` without touching
/// /etc/hosts).
#[derive(Debug, Clone, Default)]
pub struct TokioNet {
    hosts: std::sync::Arc<std::collections::BTreeMap<String, std::net::IpAddr>>,
    /// The source address of outgoing connections; the system's choice
    /// when `None`. A lab party on 127.0.4.1 must also connect from it,
    /// or its peer sees 127.0.0.1 and cannot tell parties apart.
    source: Option<std::net::IpAddr>,
    /// Where [`Network::elapsed`] counts from; the first call when `None`.
    origin: Option<Instant>,
}

impl TokioNet {
    pub fn with_hosts(hosts: std::collections::BTreeMap<String, std::net::IpAddr>) -> Self {
        let hosts = hosts
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        TokioNet {
            hosts: std::sync::Arc::new(hosts),
            source: None,
            origin: None,
        }
    }

    /// Outgoing connections leave from `ip` (bound before connecting).
    pub fn connecting_from(mut self, ip: std::net::IpAddr) -> Self {
        self.source = Some(ip);
        self
    }

    /// [`Network::elapsed`] counts from `origin` (one lab's start, shared
    /// by all its parties, so their traces line up).
    pub fn counting_from(mut self, origin: Instant) -> Self {
        self.origin = Some(origin);
        self
    }
}

impl DatagramSocket for tokio::net::UdpSocket {
    fn send_to(
        &self,
        buf: &[u8],
        to: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        tokio::net::UdpSocket::send_to(self, buf, to)
    }
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        tokio::net::UdpSocket::recv_from(self, buf)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }
}

impl StreamListener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr, SocketAddr)> {
        let (s, remote) = tokio::net::TcpListener::accept(self).await?;
        s.set_nodelay(true)?;
        let local = s.local_addr()?;
        Ok((s, local, remote))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}

impl Network for TokioNet {
    type Datagram = tokio::net::UdpSocket;
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<Self::Datagram> {
        tokio::net::UdpSocket::bind(addr).await
    }
    async fn bind_tcp(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }
    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<(Self::Stream, SocketAddr)> {
        let s = match self.source {
            Some(ip) => {
                let socket = match ip {
                    std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                    std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await?
            }
            None => tokio::net::TcpStream::connect(addr).await?,
        };
        s.set_nodelay(true)?;
        let local = s.local_addr()?;
        Ok((s, local))
    }
    async fn resolve(&self, host: &str, port: u16) -> io::Result<SocketAddr> {
        if let Some(ip) = self.hosts.get(&host.to_ascii_lowercase()) {
            return Ok(SocketAddr::new(*ip, port));
        }
        tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no address for {host}"))
            })
    }
    // The real world's clock, by definition (traces of real-socket labs).
    #[allow(clippy::disallowed_methods)]
    fn elapsed(&self) -> Duration {
        static START: OnceLock<Instant> = OnceLock::new();
        self.origin
            .unwrap_or_else(|| *START.get_or_init(Instant::now))
            .elapsed()
    }
}

/// Simulated sockets; only usable inside a turmoil host.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurmoilNet;

impl DatagramSocket for turmoil::net::UdpSocket {
    fn send_to(
        &self,
        buf: &[u8],
        to: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        turmoil::net::UdpSocket::send_to(self, buf, to)
    }
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        turmoil::net::UdpSocket::recv_from(self, buf)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        turmoil::net::UdpSocket::local_addr(self)
    }
}

impl StreamListener for turmoil::net::TcpListener {
    type Stream = turmoil::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr, SocketAddr)> {
        let (s, remote) = turmoil::net::TcpListener::accept(self).await?;
        let local = s.local_addr()?;
        Ok((s, local, remote))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        turmoil::net::TcpListener::local_addr(self)
    }
}

/// turmoil binds only the wildcard or loopback. A simulated host has
/// exactly one address, so binding that address is binding the wildcard:
/// code that binds its configured address (as real deployments must, to
/// keep parties on one machine apart) runs unchanged in simulation.
fn simulated_bind_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        addr
    } else {
        let any = match addr {
            SocketAddr::V4(_) => std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        SocketAddr::new(any, addr.port())
    }
}

impl Network for TurmoilNet {
    type Datagram = turmoil::net::UdpSocket;
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<Self::Datagram> {
        turmoil::net::UdpSocket::bind(simulated_bind_addr(addr)).await
    }
    async fn bind_tcp(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        turmoil::net::TcpListener::bind(simulated_bind_addr(addr)).await
    }
    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<(Self::Stream, SocketAddr)> {
        let s = turmoil::net::TcpStream::connect(addr).await?;
        let local = s.local_addr()?;
        Ok((s, local))
    }
    async fn resolve(&self, host: &str, port: u16) -> io::Result<SocketAddr> {
        // turmoil's DNS knows every host of the world by name; a name no host
        // has gets an address nobody listens on, so connecting to it is refused.
        Ok(SocketAddr::new(turmoil::lookup(host), port))
    }
    fn elapsed(&self) -> Duration {
        turmoil::sim_elapsed().unwrap_or_default()
    }
}
