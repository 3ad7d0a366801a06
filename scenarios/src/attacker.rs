//! A hostile host for the security scenarios (issue 14): it floods the
//! SBC's carrier port with new requests, each a fresh transaction as a
//! scanner or a runaway PBX sends them, or sprays RTP-shaped datagrams at
//! the SBC's media ports from off the call's path. It counts what comes
//! back. Its traffic is kept out of the SIP trace (thousands of INVITEs
//! are no ladder): see [`FilterTap`].
//!
//! Raw turmoil sockets, no transaction layer: it sends exactly what a
//! flood sends and ACKs final non-2xx answers (as RFC 3261 §17.1.1.3 has
//! any client do) so that the SBC is not left retransmitting them.

use sbc::sip::transport::{Tap, TraceEvent};
use sbc::sip::wire::{Message, Method};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

pub const ATTACKER: &str = "scanner.example.org";
/// Where it sends SIP from and listens for answers.
pub const ATTACKER_SIP: u16 = 5060;
const ATTACKER_RTP: u16 = 7000;

#[derive(Debug, Clone)]
pub enum Attack {
    /// `rate` new `method` requests a second for `duration` to the SBC's
    /// carrier port (UDP), INVITEs with an SDP offer, to `number`.
    Flood {
        method: Method,
        number: String,
        rate: u32,
        duration: Duration,
    },
    /// `rate` RTP-shaped datagrams a second for `duration`, round-robin
    /// over `ports` of the SBC's address.
    Spray {
        ports: Vec<u16>,
        rate: u32,
        duration: Duration,
    },
}

#[derive(Debug, Default)]
pub struct AttackerView {
    /// Requests sent, RTP datagrams sent.
    pub requests: u64,
    pub datagrams: u64,
    /// Final answers by status code (provisional ones are not counted).
    pub answers: BTreeMap<u16, u64>,
    /// How many 503s carried Retry-After.
    pub retry_after: u64,
    /// Datagrams that came back and were not SIP responses.
    pub other: u64,
    /// An attack is running.
    pub busy: bool,
}

fn lock(v: &Mutex<AttackerView>) -> std::sync::MutexGuard<'_, AttackerView> {
    v.lock().unwrap_or_else(|e| e.into_inner())
}

/// A tap that passes every event on except those to or from one address
/// (the attacker's, set when its host starts), and counts those.
pub struct FilterTap {
    inner: Arc<dyn Tap>,
    pub ignore: Arc<Mutex<Option<IpAddr>>>,
    pub ignored: Arc<AtomicU64>,
}

impl FilterTap {
    pub fn new(inner: Arc<dyn Tap>) -> Self {
        FilterTap {
            inner,
            ignore: Arc::default(),
            ignored: Arc::default(),
        }
    }
}

impl Tap for FilterTap {
    fn record(&self, event: TraceEvent) {
        let ignore = *self.ignore.lock().unwrap_or_else(|e| e.into_inner());
        if ignore.is_some_and(|ip| event.remote.ip() == ip || event.local.ip() == ip) {
            self.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.record(event);
    }
}

/// The host's program: attacks as `commands` ask, one at a time.
pub async fn run_attacker(
    sbc: String,
    mut commands: mpsc::UnboundedReceiver<Attack>,
    view: Arc<Mutex<AttackerView>>,
    ignore: Arc<Mutex<Option<IpAddr>>>,
) -> std::io::Result<()> {
    let me = turmoil::lookup(ATTACKER);
    *ignore.lock().unwrap_or_else(|e| e.into_inner()) = Some(me);
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let sip = turmoil::net::UdpSocket::bind(SocketAddr::new(any, ATTACKER_SIP)).await?;
    let rtp = turmoil::net::UdpSocket::bind(SocketAddr::new(any, ATTACKER_RTP)).await?;
    let sbc_ip = turmoil::lookup(sbc.as_str());
    let mut buf = vec![0u8; 65536];
    let mut attack: Option<(Attack, tokio::time::Instant, u64)> = None;
    let mut n: u64 = 0;
    loop {
        // Send what is due, in batches every 10 ms (the world's tick is
        // 5 ms; a datagram per tick would be no faster and far slower to
        // simulate).
        if let Some((a, started, sent)) = &mut attack {
            let elapsed = started.elapsed();
            let (rate, duration) = match a {
                Attack::Flood { rate, duration, .. } | Attack::Spray { rate, duration, .. } => {
                    (*rate, *duration)
                }
            };
            let due = (elapsed.min(duration).as_secs_f64() * f64::from(rate)) as u64;
            while *sent < due {
                n += 1;
                *sent += 1;
                match a {
                    Attack::Flood { method, number, .. } => {
                        let m = request(method, number, me, sbc_ip, n);
                        let _ = sip.send_to(&m, (sbc_ip, 5060)).await;
                        lock(&view).requests += 1;
                    }
                    Attack::Spray { ports, .. } => {
                        let port = ports[(n as usize) % ports.len().max(1)];
                        let _ = rtp.send_to(&rtp_packet(n), (sbc_ip, port)).await;
                        lock(&view).datagrams += 1;
                    }
                }
            }
            if elapsed >= duration {
                attack = None;
                lock(&view).busy = false;
            }
        }
        tokio::select! {
            biased;
            c = commands.recv() => match c {
                Some(a) => {
                    lock(&view).busy = true;
                    attack = Some((a, tokio::time::Instant::now(), 0));
                }
                None => return Ok(()),
            },
            r = sip.recv_from(&mut buf) => {
                let (len, from) = r?;
                answered(&view, &sip, &buf[..len], from).await;
            }
            _ = tokio::time::sleep(Duration::from_millis(10)), if attack.is_some() => {}
        }
    }
}

/// Count an answer; ACK a final non-2xx one (RFC 3261 §17.1.1.3).
async fn answered(
    view: &Mutex<AttackerView>,
    sip: &turmoil::net::UdpSocket,
    bytes: &[u8],
    from: SocketAddr,
) {
    let Ok(m) = Message::parse(bytes) else {
        lock(view).other += 1;
        return;
    };
    let Some(code) = m.status() else {
        lock(view).other += 1;
        return;
    };
    if code < 200 {
        return;
    }
    {
        let mut v = lock(view);
        *v.answers.entry(code).or_default() += 1;
        if code == 503 && m.headers.contains("Retry-After") {
            v.retry_after += 1;
        }
    }
    let is_invite = m.cseq().is_ok_and(|c| c.method == Method::Invite);
    if code >= 300 && is_invite {
        let get = |n: &str| m.headers.get(n).unwrap_or_default().to_string();
        let cseq = m.cseq().map(|c| c.seq).unwrap_or(1);
        let ack = format!(
            "ACK sip:{from} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {from_h}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
            via = get("Via"),
            from_h = get("From"),
            to = get("To"),
            cid = get("Call-ID"),
        );
        let _ = sip.send_to(ack.as_bytes(), from).await;
    }
}

/// The `n`th request of a flood: a new Call-ID, tag and branch each.
fn request(method: &Method, number: &str, me: IpAddr, sbc: IpAddr, n: u64) -> Vec<u8> {
    let sdp = if *method == Method::Invite {
        format!(
            "v=0\r\no=- {n} 1 IN IP4 {me}\r\ns=-\r\nc=IN IP4 {me}\r\nt=0 0\r\nm=audio {ATTACKER_RTP} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
    } else {
        String::new()
    };
    let ctype = if sdp.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".into()
    };
    format!(
        "{method} sip:{number}@{sbc}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {me}:{ATTACKER_SIP};branch=z9hG4bK-flood-{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+4930999{n:04}@{me}>;tag=f{n}\r\nTo: <sip:{number}@{sbc}>\r\nCall-ID: flood-{n}@{me}\r\nCSeq: 1 {method}\r\nContact: <sip:scanner@{me}:{ATTACKER_SIP}>\r\n{ctype}Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

/// RTP-shaped: version 2, PCMU, a sequence number and timestamp that move
/// on, an SSRC of its own, 160 bytes of payload.
fn rtp_packet(n: u64) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&(n as u16).to_be_bytes());
    p.extend_from_slice(&((n as u32).wrapping_mul(160)).to_be_bytes());
    p.extend_from_slice(&0x5ca1_ab1eu32.to_be_bytes());
    p.extend(std::iter::repeat_n(0xd5, 160));
    p
}
