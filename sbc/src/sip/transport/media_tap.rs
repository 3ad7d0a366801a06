//! A [`Network`] that records every media datagram its sockets send: what a
//! capture of the media ports would hold. SIP is recorded by the
//! transport's own tap (decrypted where it rode TLS); this one adds RTP,
//! RTCP, STUN and DTLS so a run's pcap carries the audio too.
//!
//! Which datagrams are media is decided as RFC 7983 §7 demultiplexes a
//! port: first byte 0–3 STUN, 20–63 DTLS, 128–191 RTP/RTCP. SIP over UDP
//! starts with a letter (or CRLF keep-alives) and is left to the SIP tap.

use super::net::{DatagramSocket, Network};
use super::tap::{Direction, Tap, TraceEvent};
use super::TransportKind;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Whether a datagram is media by RFC 7983's first-byte ranges.
pub fn is_media(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(0..=3 | 20..=63 | 128..=191))
}

/// `inner` with every media datagram sent by `host` recorded into `tap`.
#[derive(Clone)]
pub struct MediaTapNet<N> {
    inner: N,
    host: Arc<str>,
    tap: Arc<dyn Tap>,
}

impl<N> MediaTapNet<N> {
    pub fn new(inner: N, host: &str, tap: Arc<dyn Tap>) -> Self {
        MediaTapNet {
            inner,
            host: host.into(),
            tap,
        }
    }
}

/// A datagram socket of a [`MediaTapNet`].
pub struct TappedDatagram<N: Network> {
    inner: N::Datagram,
    net: N,
    host: Arc<str>,
    tap: Arc<dyn Tap>,
}

impl<N: Network> DatagramSocket for TappedDatagram<N> {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        let n = self.inner.send_to(buf, to).await?;
        if is_media(buf) {
            // Recorded once sent, as a capture on the sender would see it.
            if let Ok(local) = self.inner.local_addr() {
                self.tap.record(TraceEvent {
                    at: self.net.elapsed(),
                    host: self.host.to_string(),
                    direction: Direction::Sent,
                    local,
                    remote: to,
                    transport: TransportKind::Udp,
                    raw: buf.to_vec(),
                });
            }
        }
        Ok(n)
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

impl<N: Network> Network for MediaTapNet<N> {
    type Datagram = TappedDatagram<N>;
    type Stream = N::Stream;
    type Listener = N::Listener;

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<Self::Datagram> {
        Ok(TappedDatagram {
            inner: self.inner.bind_udp(addr).await?,
            net: self.inner.clone(),
            host: self.host.clone(),
            tap: self.tap.clone(),
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
    use crate::sip::transport::{Recorder, TurmoilNet};

    #[test]
    fn first_bytes_split_media_from_sip() {
        assert!(is_media(&[0x80, 0x00])); // RTP v2
        assert!(is_media(&[0x81, 0xc8])); // RTCP SR
        assert!(is_media(&[0x00, 0x01])); // STUN binding request
        assert!(is_media(&[22, 0xfe])); // DTLS handshake
        assert!(!is_media(b"INVITE sip:a@b SIP/2.0\r\n"));
        assert!(!is_media(b"SIP/2.0 200 OK\r\n"));
        assert!(!is_media(b"\r\n\r\n"));
        assert!(!is_media(&[]));
    }

    /// Only the media datagram is recorded, with its host, addresses and time.
    #[test]
    fn records_media_sent_and_nothing_else() -> turmoil::Result {
        let rec = Recorder::default();
        let tap: Arc<dyn Tap> = Arc::new(rec.clone());
        let mut sim = turmoil::Builder::new().build();
        sim.host("b", || async {
            let s = turmoil::net::UdpSocket::bind("0.0.0.0:9000").await?;
            let mut buf = [0; 64];
            for _ in 0..2 {
                s.recv_from(&mut buf).await?;
            }
            Ok(())
        });
        sim.client("a", async move {
            let net = MediaTapNet::new(TurmoilNet, "a", tap);
            let s = net.bind_udp("0.0.0.0:7000".parse()?).await?;
            let to = SocketAddr::new(turmoil::lookup("b"), 9000);
            s.send_to(b"OPTIONS sip:b SIP/2.0\r\n\r\n", to).await?;
            s.send_to(&[0x80, 0, 0, 1], to).await?;
            Ok(())
        });
        sim.run()?;
        let events = rec.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].raw, vec![0x80, 0, 0, 1]);
        assert_eq!(events[0].host, "a");
        assert_eq!(events[0].local.port(), 7000);
        assert_eq!(events[0].remote.port(), 9000);
        Ok(())
    }
}
