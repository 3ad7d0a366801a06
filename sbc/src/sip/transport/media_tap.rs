//! A [`DatagramHook`] that records every media datagram a host sends: what
//! a capture of the media ports would hold. SIP is recorded by the
//! transport's own tap (decrypted where it rode TLS); this one adds RTP,
//! RTCP, STUN and DTLS so a run's pcap carries the audio too.
//!
//! Which datagrams are media is decided as RFC 7983 §7 demultiplexes a
//! port: first byte 0–3 STUN, 20–63 DTLS, 128–191 RTP/RTCP. SIP over UDP
//! starts with a letter (or CRLF keep-alives) and is left to the SIP tap.

use super::hooked::{DatagramHook, HookedNet, Outgoing};
use super::tap::{Direction, Tap, TraceEvent};
use super::TransportKind;
use std::sync::Arc;
use std::time::Duration;

/// Whether a datagram is media by RFC 7983's first-byte ranges.
pub fn is_media(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(0..=3 | 20..=63 | 128..=191))
}

/// The hook that records every media datagram into `tap`: on a
/// [`HookedNet`], a [`MediaTapNet`].
#[derive(Clone)]
pub struct MediaTap(pub Arc<dyn Tap>);

impl DatagramHook for MediaTap {
    fn sent(&self, d: &Outgoing<'_>) -> Vec<Duration> {
        if is_media(d.bytes) {
            // Recorded as sent, as a capture on the sender would see it,
            // whatever the network does with it afterwards.
            self.0.record(TraceEvent {
                at: d.now,
                host: d.host.to_string(),
                direction: Direction::Sent,
                local: d.local,
                remote: d.to,
                transport: TransportKind::Udp,
                raw: d.bytes.to_vec(),
            });
        }
        vec![Duration::ZERO]
    }
}

/// A network whose hosts' media is recorded.
pub type MediaTapNet<N> = HookedNet<N, MediaTap>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transport::{DatagramSocket, Network, Recorder, TurmoilNet};
    use std::net::SocketAddr;

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
            let net = MediaTapNet::new(TurmoilNet, "a", MediaTap(tap));
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
