//! A [`Network`] whose datagram sockets pass each datagram they send
//! through a [`DatagramHook`] first: the simulated world's capture of
//! media ([`crate::sip::transport::media_tap`]) and its impaired links
//! ([`crate::sip::transport::impair`]) are two hooks on the one wrapper,
//! chained as a pair. Streams and name lookups go straight through.

use super::net::{DatagramSocket, Network};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// One datagram about to be sent.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The sending host's name and address (a simulated socket reports
    /// the wildcard as its own address).
    pub host: &'a str,
    pub host_ip: IpAddr,
    pub local: SocketAddr,
    pub to: SocketAddr,
    pub bytes: &'a [u8],
    /// The world's time.
    pub now: Duration,
}

/// Decides what becomes of each datagram sent: the delays after which its
/// copies leave (`[ZERO]`: sent as is; empty: never sent).
pub trait DatagramHook: Clone + Send + Sync + 'static {
    fn sent(&self, d: &Outgoing<'_>) -> Vec<Duration>;
}

/// Two hooks in turn: the second decides the fate of each copy the first
/// lets through (a capture at the sender, then the network).
impl<A: DatagramHook, B: DatagramHook> DatagramHook for (A, B) {
    fn sent(&self, d: &Outgoing<'_>) -> Vec<Duration> {
        let first = self.0.sent(d);
        if first.is_empty() {
            return first;
        }
        let second = self.1.sent(d);
        first
            .iter()
            .flat_map(|a| second.iter().map(move |b| *a + *b))
            .collect()
    }
}

/// `inner` with `hook` on every datagram `host` sends.
#[derive(Clone)]
pub struct HookedNet<N, H> {
    inner: N,
    host: Arc<str>,
    hook: H,
}

impl<N, H> HookedNet<N, H> {
    pub fn new(inner: N, host: &str, hook: H) -> Self {
        HookedNet {
            inner,
            host: host.into(),
            hook,
        }
    }
}

/// A datagram socket of a [`HookedNet`].
pub struct HookedDatagram<N: Network, H> {
    inner: Arc<N::Datagram>,
    net: N,
    host: Arc<str>,
    host_ip: IpAddr,
    hook: H,
}

impl<N: Network, H: DatagramHook> DatagramSocket for HookedDatagram<N, H> {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        let local = self.inner.local_addr()?;
        let copies = self.hook.sent(&Outgoing {
            host: &self.host,
            host_ip: self.host_ip,
            local,
            to,
            bytes: buf,
            now: self.net.elapsed(),
        });
        for delay in copies {
            if delay.is_zero() {
                self.inner.send_to(buf, to).await?;
                continue;
            }
            // Held back in the network, not in the sender: the caller goes
            // on at once. The task holds the socket only until it sends.
            let (sock, bytes) = (self.inner.clone(), buf.to_vec());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = sock.send_to(&bytes, to).await;
            });
        }
        // A datagram the network lost was still sent, as far as the sender can tell.
        Ok(buf.len())
    }
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        self.inner.recv_from(buf)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl<N: Network, H: DatagramHook> Network for HookedNet<N, H> {
    type Datagram = HookedDatagram<N, H>;
    type Stream = N::Stream;
    type Listener = N::Listener;

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<Self::Datagram> {
        let inner = self.inner.bind_udp(addr).await?;
        // The host's own address by its name; a name that does not resolve
        // (a real host under another name) falls back to the socket's.
        let host_ip = match self.inner.resolve(&self.host, 0).await {
            Ok(a) => a.ip(),
            Err(_) => inner.local_addr()?.ip(),
        };
        Ok(HookedDatagram {
            inner: Arc::new(inner),
            net: self.inner.clone(),
            host: self.host.clone(),
            host_ip,
            hook: self.hook.clone(),
        })
    }
    fn bind_tcp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::Listener>> + Send {
        self.inner.bind_tcp(addr)
    }
    fn connect_tcp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send {
        self.inner.connect_tcp(addr)
    }
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<SocketAddr>> + Send {
        self.inner.resolve(host, port)
    }
    fn elapsed(&self) -> Duration {
        self.inner.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Counts what it sees; lets it through as `copies`.
    #[derive(Clone)]
    struct Seen(Arc<Mutex<u32>>, Vec<Duration>);

    impl DatagramHook for Seen {
        fn sent(&self, _: &Outgoing<'_>) -> Vec<Duration> {
            *self.0.lock().unwrap() += 1;
            self.1.clone()
        }
    }

    fn outgoing(bytes: &[u8]) -> Outgoing<'_> {
        Outgoing {
            host: "a",
            host_ip: "10.0.0.1".parse().unwrap(),
            local: "0.0.0.0:5000".parse().unwrap(),
            to: "10.0.0.2:6000".parse().unwrap(),
            bytes,
            now: Duration::ZERO,
        }
    }

    /// The capture sees what the network then loses; the network's
    /// delays apply to each copy the first hook makes.
    #[test]
    fn a_pair_runs_the_first_then_the_second_on_each_copy() {
        let ms = Duration::from_millis;
        let (first, second) = (Arc::new(Mutex::new(0)), Arc::new(Mutex::new(0)));
        let lose = (
            Seen(first.clone(), vec![Duration::ZERO]),
            Seen(second.clone(), vec![]),
        );
        assert!(lose.sent(&outgoing(b"x")).is_empty());
        assert_eq!((*first.lock().unwrap(), *second.lock().unwrap()), (1, 1));
        let stop = (
            Seen(first.clone(), vec![]),
            Seen(second.clone(), vec![ms(1)]),
        );
        assert!(stop.sent(&outgoing(b"x")).is_empty());
        assert_eq!(*second.lock().unwrap(), 1, "nothing left to impair");
        let both = (
            Seen(first, vec![ms(0), ms(5)]),
            Seen(second, vec![ms(2), ms(3)]),
        );
        assert_eq!(both.sent(&outgoing(b"x")), [ms(2), ms(3), ms(7), ms(8)]);
    }
}
