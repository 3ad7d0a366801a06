//! Traces as pcap files that Wireshark and tshark open: SIP and media.
//!
//! TLS legs are recorded decrypted, so there are no TCP segments to
//! reconstruct: each message or datagram is written as one Wireshark
//! "exported PDU" (LINKTYPE_WIRESHARK_UPPER_PDU, 252) whose tags name the
//! dissector (`sip`, `rtp`, `rtcp`, `stun-udp`, `dtls`), the addresses and
//! the ports. Times are simulated time from the world's epoch.
//!
//! SRTP is written decrypted, as the RTP it carries, so `tshark -Y rtp` and
//! Wireshark's RTP stream analysis read the audio of every leg. The keys
//! come from the trace itself, as an engineer with the decrypted SIP would
//! find them: RFC 4568 §6.1, a party protects what it sends with the key of
//! its own SDP, so a packet from address A:p is unprotected with a key of
//! an `a=crypto` line in an SDP whose media address is A:p. A packet no key
//! opens is written as sent (and counted in [`MediaCount`]).

use crate::trace::Sent;
use sbc::media::srtp::{SrtpKey, Unprotector};
use sbc::sip::sdp::SessionDescription;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// LINKTYPE_WIRESHARK_UPPER_PDU.
const LINKTYPE_UPPER_PDU: u32 = 252;
// Exported-PDU tags (Wireshark's exported_pdu_tlvs.h).
const TAG_END: u16 = 0;
const TAG_PROTO_NAME: u16 = 12;
const TAG_IPV4_SRC: u16 = 20;
const TAG_IPV4_DST: u16 = 21;
const TAG_IPV6_SRC: u16 = 22;
const TAG_IPV6_DST: u16 = 23;
const TAG_PORT_TYPE: u16 = 24;
const TAG_SRC_PORT: u16 = 25;
const TAG_DST_PORT: u16 = 26;
// Wireshark's port_type values.
const PT_TCP: u32 = 2;
const PT_UDP: u32 = 3;

fn tag(out: &mut Vec<u8>, t: u16, value: &[u8]) {
    out.extend_from_slice(&t.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

fn ip_tags(out: &mut Vec<u8>, ip: IpAddr, v4: u16, v6: u16) {
    match ip {
        IpAddr::V4(a) => tag(out, v4, &a.octets()),
        IpAddr::V6(a) => tag(out, v6, &a.octets()),
    }
}

/// What the media of a trace came to in its pcap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaCount {
    /// RTP written as sent (plain RTP legs).
    pub rtp: usize,
    /// SRTP written decrypted.
    pub decrypted: usize,
    /// SRTP (or what looked like it) that no key from the trace opened.
    pub undecrypted: usize,
    /// RTCP, STUN and DTLS datagrams.
    pub other: usize,
}

/// The dissector for a media datagram (RFC 7983 §7 by first byte; RTCP by
/// its packet type, RFC 5761 §4).
fn media_proto(d: &[u8]) -> &'static str {
    match d.first() {
        Some(0..=3) => "stun-udp",
        Some(20..=63) => "dtls",
        _ if matches!(d.get(1), Some(192..=223)) => "rtcp",
        _ => "rtp",
    }
}

/// The SRTP keys each media address announced in the trace's SDP, in order.
struct Keys {
    by_source: BTreeMap<SocketAddr, Vec<SrtpKey>>,
    /// (source, index into its keys) → the receiving context, which keeps
    /// the rollover counter and replay list as a receiver would.
    contexts: BTreeMap<(SocketAddr, usize), Unprotector>,
    /// The key that last opened a packet from each source: tried first.
    last: BTreeMap<SocketAddr, usize>,
}

impl Keys {
    fn from_sip(sip: &[Sent]) -> Keys {
        let mut by_source: BTreeMap<SocketAddr, Vec<SrtpKey>> = BTreeMap::new();
        for s in sip {
            let Some(m) = s.message() else { continue };
            let Ok(text) = std::str::from_utf8(&m.body) else {
                continue;
            };
            let Ok(sdp) = SessionDescription::parse(text) else {
                continue;
            };
            for (i, media) in sdp.media.iter().enumerate() {
                let Some(ip) = sdp.media_address(i).and_then(|a| a.parse::<IpAddr>().ok()) else {
                    continue;
                };
                let keys = by_source
                    .entry(SocketAddr::new(ip, media.port))
                    .or_default();
                for c in &media.crypto {
                    if let Ok(k) = SrtpKey::from_crypto(c) {
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                    }
                }
            }
        }
        Keys {
            by_source,
            contexts: BTreeMap::new(),
            last: BTreeMap::new(),
        }
    }

    /// The RTP inside `srtp` from `source`, if a key of the trace opens it.
    /// `None` also when the source announced no key (a plain RTP leg).
    fn open(&mut self, source: SocketAddr, srtp: &[u8]) -> Option<Result<Vec<u8>, ()>> {
        let keys = self.by_source.get(&source)?;
        if keys.is_empty() {
            return None;
        }
        let first = self.last.get(&source).copied().unwrap_or(keys.len() - 1);
        let order = std::iter::once(first).chain((0..keys.len()).rev().filter(|i| *i != first));
        for i in order {
            let ctx = match self.contexts.entry((source, i)) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => match Unprotector::new(&keys[i]) {
                    Ok(u) => e.insert(u),
                    Err(_) => continue,
                },
            };
            if let Ok(rtp) = ctx.unprotect(srtp) {
                self.last.insert(source, i);
                return Some(Ok(rtp));
            }
        }
        Some(Err(()))
    }
}

/// One pcap record: the exported-PDU tags, then the payload.
fn record(out: &mut Vec<u8>, proto: &str, s: &Sent, payload: &[u8], epoch_secs: u32) {
    let mut rec = Vec::new();
    // The dissector name, NUL-terminated and padded to a multiple of four.
    let mut name = proto.as_bytes().to_vec();
    name.resize((name.len() / 4 + 1) * 4, 0);
    tag(&mut rec, TAG_PROTO_NAME, &name);
    ip_tags(&mut rec, s.local.ip(), TAG_IPV4_SRC, TAG_IPV6_SRC);
    ip_tags(&mut rec, s.remote.ip(), TAG_IPV4_DST, TAG_IPV6_DST);
    let pt = if s.transport == "UDP" { PT_UDP } else { PT_TCP };
    tag(&mut rec, TAG_PORT_TYPE, &pt.to_be_bytes());
    tag(
        &mut rec,
        TAG_SRC_PORT,
        &u32::from(s.local.port()).to_be_bytes(),
    );
    tag(
        &mut rec,
        TAG_DST_PORT,
        &u32::from(s.remote.port()).to_be_bytes(),
    );
    tag(&mut rec, TAG_END, &[]);
    rec.extend_from_slice(payload);
    let micros = (s.at_ms * 1000.0).round() as u64;
    let secs = epoch_secs.wrapping_add((micros / 1_000_000) as u32);
    out.extend_from_slice(&secs.to_le_bytes());
    out.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
    out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
    out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
    out.extend_from_slice(&rec);
}

/// One pcap file (classic format, microsecond timestamps) of the SIP
/// messages `sip` and the media datagrams `media`, merged in time order.
/// `epoch_secs` is the wall-clock second the world's time starts at.
pub fn write(sip: &[Sent], media: &[Sent], epoch_secs: u32) -> (Vec<u8>, MediaCount) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&LINKTYPE_UPPER_PDU.to_le_bytes());
    let mut keys = Keys::from_sip(sip);
    let mut count = MediaCount::default();
    let (mut i, mut j) = (0, 0);
    // Both lists are in the order things were sent; at equal times SIP
    // goes first (the SDP that announces a stream precedes its packets).
    while i < sip.len() || j < media.len() {
        let take_sip = j == media.len() || (i < sip.len() && sip[i].at_ms <= media[j].at_ms);
        if take_sip {
            record(&mut out, "sip", &sip[i], &sip[i].raw, epoch_secs);
            i += 1;
            continue;
        }
        let m = &media[j];
        j += 1;
        let proto = media_proto(&m.raw);
        if proto != "rtp" {
            count.other += 1;
            record(&mut out, proto, m, &m.raw, epoch_secs);
            continue;
        }
        match keys.open(m.local, &m.raw) {
            None => {
                count.rtp += 1;
                record(&mut out, proto, m, &m.raw, epoch_secs);
            }
            Some(Ok(rtp)) => {
                count.decrypted += 1;
                record(&mut out, proto, m, &rtp, epoch_secs);
            }
            Some(Err(())) => {
                count.undecrypted += 1;
                record(&mut out, proto, m, &m.raw, epoch_secs);
            }
        }
    }
    (out, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_tags_then_the_message() {
        let s = Sent {
            at_ms: 1500.25,
            from: "a".into(),
            to: "b".into(),
            local: "192.168.0.1:5060".parse().unwrap(),
            remote: "192.168.0.2:5061".parse().unwrap(),
            transport: "TLS".into(),
            raw: b"OPTIONS sip:b SIP/2.0\r\n\r\n".to_vec(),
        };
        let (p, _) = write(std::slice::from_ref(&s), &[], 1_800_000_000);
        assert_eq!(&p[..4], &0xa1b2_c3d4u32.to_le_bytes());
        assert_eq!(u32::from_le_bytes(p[20..24].try_into().unwrap()), 252);
        let rec = &p[24..];
        assert_eq!(
            u32::from_le_bytes(rec[0..4].try_into().unwrap()),
            1_800_000_001
        );
        assert_eq!(u32::from_le_bytes(rec[4..8].try_into().unwrap()), 500_250);
        let len = u32::from_le_bytes(rec[8..12].try_into().unwrap()) as usize;
        let body = &rec[16..16 + len];
        assert_eq!(&body[..8], &[0, 12, 0, 4, b's', b'i', b'p', 0]);
        assert!(body.ends_with(&s.raw));
        assert_eq!(rec.len(), 16 + len);
    }

    fn sent(at_ms: f64, local: &str, remote: &str, raw: Vec<u8>) -> Sent {
        Sent {
            at_ms,
            from: "a".into(),
            to: "b".into(),
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            transport: "UDP".into(),
            raw,
        }
    }

    /// An INVITE whose SDP announces `key` for media at 192.168.0.5:49152.
    fn invite_with_key(key: &SrtpKey) -> Sent {
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 192.168.0.5\r\ns=-\r\nc=IN IP4 192.168.0.5\r\nt=0 0\r\n\
             m=audio 49152 RTP/SAVP 8\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
            key.inline()
        );
        let raw = format!(
            "INVITE sip:b SIP/2.0\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        sent(
            0.0,
            "192.168.0.5:5061",
            "192.168.0.1:5061",
            raw.into_bytes(),
        )
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 8];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 1, 2, 3, 4]);
        p.extend_from_slice(&[0xd5; 160]);
        p
    }

    /// The PDU of each record: (dissector name, payload).
    fn pdus(p: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 24;
        while at + 16 <= p.len() {
            let len = u32::from_le_bytes(p[at + 8..at + 12].try_into().unwrap()) as usize;
            let rec = &p[at + 16..at + 16 + len];
            let (mut t, mut name) = (0, String::new());
            loop {
                let ty = u16::from_be_bytes([rec[t], rec[t + 1]]);
                let l = u16::from_be_bytes([rec[t + 2], rec[t + 3]]) as usize;
                if ty == TAG_PROTO_NAME {
                    name = String::from_utf8_lossy(&rec[t + 4..t + 4 + l])
                        .trim_end_matches('\0')
                        .to_string();
                }
                t += 4 + l;
                if ty == TAG_END {
                    break;
                }
            }
            out.push((name, rec[t..].to_vec()));
            at += 16 + len;
        }
        out
    }

    /// SRTP from the address an SDP announced is written as the RTP it
    /// carries; from elsewhere, or under a key no SDP gave, as sent.
    #[test]
    fn srtp_is_opened_with_the_key_its_sender_announced() {
        let mut rng = sbc::sip::rng::SeededRng::new(7);
        let key = SrtpKey::generate(&mut rng);
        let stranger = SrtpKey::generate(&mut rng);
        let mut protect = sbc::media::srtp::Protector::new(&key).unwrap();
        let mut other = sbc::media::srtp::Protector::new(&stranger).unwrap();
        let sip = [invite_with_key(&key)];
        let media = [
            sent(
                10.0,
                "192.168.0.5:49152",
                "192.168.0.1:40002",
                protect.protect(&rtp(1)).unwrap(),
            ),
            // Same SSRC, a key the trace never announced.
            sent(
                30.0,
                "192.168.0.5:49152",
                "192.168.0.1:40002",
                other.protect(&rtp(2)).unwrap(),
            ),
            // Plain RTP from a leg without crypto.
            sent(40.0, "192.168.0.6:20000", "192.168.0.1:40000", rtp(3)),
            sent(
                50.0,
                "192.168.0.5:49152",
                "192.168.0.1:40002",
                protect.protect(&rtp(4)).unwrap(),
            ),
            // RTCP receiver report and a STUN binding request.
            sent(
                60.0,
                "192.168.0.6:20001",
                "192.168.0.1:40001",
                vec![0x80, 201, 0, 1, 0, 0, 0, 1],
            ),
            sent(
                70.0,
                "192.168.0.6:20000",
                "192.168.0.1:40000",
                vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42],
            ),
        ];
        let (p, count) = write(&sip, &media, 1_800_000_000);
        assert_eq!(
            count,
            MediaCount {
                rtp: 1,
                decrypted: 2,
                undecrypted: 1,
                other: 2
            }
        );
        let got = pdus(&p);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["sip", "rtp", "rtp", "rtp", "rtp", "rtcp", "stun-udp"]
        );
        assert_eq!(got[1].1, rtp(1));
        assert_eq!(got[2].1, media[1].raw);
        assert_eq!(got[3].1, rtp(3));
        assert_eq!(got[4].1, rtp(4));
    }

    /// SIP and media interleave by time; at equal times SIP goes first.
    #[test]
    fn records_are_merged_in_time_order() {
        let sip = [
            sent(
                10.0,
                "10.0.0.1:5060",
                "10.0.0.2:5060",
                b"BYE sip:b SIP/2.0\r\n\r\n".to_vec(),
            ),
            sent(
                30.0,
                "10.0.0.1:5060",
                "10.0.0.2:5060",
                b"BYE sip:b SIP/2.0\r\n\r\n".to_vec(),
            ),
        ];
        let media = [
            sent(5.0, "10.0.0.1:4000", "10.0.0.2:4000", rtp(1)),
            sent(10.0, "10.0.0.1:4000", "10.0.0.2:4000", rtp(2)),
            sent(40.0, "10.0.0.1:4000", "10.0.0.2:4000", rtp(3)),
        ];
        let (p, _) = write(&sip, &media, 0);
        let names: Vec<String> = pdus(&p).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["rtp", "sip", "rtp", "sip", "rtp"]);
    }
}
