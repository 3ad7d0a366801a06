//! The SBC's media relay for one call: two UDP ports, one per leg, with
//! SRTP protect/unprotect where a leg is secure (RTP toward the carrier,
//! SRTP AES_CM_128_HMAC_SHA1_80 toward Teams).
//!
//! Ports are bound when the call is set up, before either answer is known;
//! the plan (remote addresses and keys) arrives later on a watch channel.
//! Packets that arrive before the plan are held (media can overtake the
//! signalling that carries the answer). Each leg latches to the address
//! media actually comes from (symmetric RTP, RFC 4961), as SBCs do for NAT.

use super::srtp::{Protector, SrtpKey, Unprotector};
use crate::sip::transport::{DatagramSocket, Network};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLeg {
    /// Where this leg's far end said to send (its SDP).
    pub remote: SocketAddr,
    /// Our key toward this leg (from our SDP), if it is SRTP.
    pub tx_key: Option<SrtpKey>,
    /// The far end's key on this leg (from its SDP).
    pub rx_key: Option<SrtpKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPlan {
    pub a: RelayLeg,
    pub b: RelayLeg,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub a_to_b: u32,
    pub b_to_a: u32,
    /// Packets that failed to unprotect or protect.
    pub srtp_errors: u32,
}

const EARLY_BUFFER: usize = 64;

struct Leg<S> {
    sock: S,
    remote: SocketAddr,
    latched: bool,
    protect: Option<Protector>,
    unprotect: Option<Unprotector>,
}

/// Leg a and leg b of a running relay.
type Legs<'s, S> = (Leg<&'s S>, Leg<&'s S>);

pub struct MediaRelay;

impl MediaRelay {
    /// Bind both ports now and relay until the plan's sender is dropped.
    pub async fn run<N: Network>(
        net: N,
        local_a: SocketAddr,
        local_b: SocketAddr,
        mut plan: watch::Receiver<Option<RelayPlan>>,
        stats: Arc<Mutex<RelayStats>>,
    ) -> std::io::Result<()> {
        let sock_a = net.bind_udp(local_a).await?;
        let sock_b = net.bind_udp(local_b).await?;
        let mut legs: Option<Legs<'_, N::Datagram>> = None;
        let mut early: Vec<(bool, Vec<u8>, SocketAddr)> = Vec::new();
        let mut buf_a = vec![0u8; 2048];
        let mut buf_b = vec![0u8; 2048];
        loop {
            tokio::select! {
                biased;
                changed = plan.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let Some(p) = plan.borrow_and_update().clone() else { continue };
                    let a = leg(&sock_a, &p.a)?;
                    let b = leg(&sock_b, &p.b)?;
                    let mut l = (a, b);
                    for (from_a, packet, src) in early.drain(..) {
                        forward(&mut l, from_a, &packet, src, &stats).await;
                    }
                    legs = Some(l);
                }
                r = sock_a.recv_from(&mut buf_a) => {
                    let Ok((n, src)) = r else { continue };
                    match &mut legs {
                        Some(l) => forward(l, true, &buf_a[..n], src, &stats).await,
                        None if early.len() < EARLY_BUFFER => early.push((true, buf_a[..n].to_vec(), src)),
                        None => {}
                    }
                }
                r = sock_b.recv_from(&mut buf_b) => {
                    let Ok((n, src)) = r else { continue };
                    match &mut legs {
                        Some(l) => forward(l, false, &buf_b[..n], src, &stats).await,
                        None if early.len() < EARLY_BUFFER => early.push((false, buf_b[..n].to_vec(), src)),
                        None => {}
                    }
                }
            }
        }
    }
}

fn leg<S>(sock: S, plan: &RelayLeg) -> std::io::Result<Leg<S>> {
    Ok(Leg {
        sock,
        remote: plan.remote,
        latched: false,
        protect: plan
            .tx_key
            .as_ref()
            .map(Protector::new)
            .transpose()
            .map_err(std::io::Error::other)?,
        unprotect: plan
            .rx_key
            .as_ref()
            .map(Unprotector::new)
            .transpose()
            .map_err(std::io::Error::other)?,
    })
}

async fn forward<'s, S: DatagramSocket>(
    legs: &mut Legs<'s, S>,
    from_a: bool,
    packet: &[u8],
    src: SocketAddr,
    stats: &Arc<Mutex<RelayStats>>,
) {
    let (inbound, outbound) = if from_a {
        (&mut legs.0, &mut legs.1)
    } else {
        (&mut legs.1, &mut legs.0)
    };
    if !inbound.latched {
        inbound.remote = src;
        inbound.latched = true;
    }
    let plain = match &mut inbound.unprotect {
        Some(u) => u.unprotect(packet),
        None => Ok(packet.to_vec()),
    };
    let out = plain.and_then(|p| match &mut outbound.protect {
        Some(pr) => pr.protect(&p),
        None => Ok(p),
    });
    let bytes = {
        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
        match out {
            Ok(bytes) => {
                if from_a {
                    s.a_to_b += 1;
                } else {
                    s.b_to_a += 1;
                }
                bytes
            }
            Err(_) => {
                s.srtp_errors += 1;
                return;
            }
        }
    };
    let _ = outbound.sock.send_to(&bytes, outbound.remote).await;
}
