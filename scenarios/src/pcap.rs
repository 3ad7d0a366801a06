//! Traces as pcap files that Wireshark and tshark open as SIP.
//!
//! TLS legs are recorded decrypted, so there are no TCP segments to
//! reconstruct: each message is written as one Wireshark "exported PDU"
//! (LINKTYPE_WIRESHARK_UPPER_PDU, 252) whose tags name the dissector
//! (`sip`), the addresses and the ports. Times are simulated time from the
//! world's epoch.

use crate::trace::Sent;
use std::net::IpAddr;

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

/// One pcap file (classic format, microsecond timestamps) of `sent`.
/// `epoch_secs` is the wall-clock second the world's time starts at.
pub fn write(sent: &[Sent], epoch_secs: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&LINKTYPE_UPPER_PDU.to_le_bytes());
    for s in sent {
        let mut rec = Vec::new();
        // The dissector name, NUL-padded to a multiple of four bytes.
        let mut name = b"sip".to_vec();
        name.resize(4, 0);
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
        rec.extend_from_slice(&s.raw);
        let micros = (s.at_ms * 1000.0).round() as u64;
        let secs = epoch_secs.wrapping_add((micros / 1_000_000) as u32);
        out.extend_from_slice(&secs.to_le_bytes());
        out.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        out.extend_from_slice(&rec);
    }
    out
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
        let p = write(std::slice::from_ref(&s), 1_800_000_000);
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
}
