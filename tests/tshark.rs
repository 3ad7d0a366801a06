//! Wireshark's SIP dissector as a second judge of what went on the wire:
//! a call scenario's pcap, read by tshark, must show the same messages
//! (method or status, and CSeq method) in the same order as drlab's own
//! parser reads from the same bytes, with nothing malformed and no expert
//! error. Needs `tshark` (Debian package; `.ci/run` installs it); without
//! it the test says so and does nothing.

use sbc::sip::wire::Message;
use scenarios::certify::{run, Options};
use std::process::Command;

/// The payloads of a pcap written by `scenarios::pcap` (exported PDUs)
/// whose dissector name is `proto`.
fn payloads(pcap: &[u8], proto: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let rec = &pcap[at + 16..at + 16 + len];
        // Tags until TAG_END (type 0, length 0), then the PDU.
        let (mut t, mut name) = (0, Vec::new());
        loop {
            let ty = u16::from_be_bytes([rec[t], rec[t + 1]]);
            let l = u16::from_be_bytes([rec[t + 2], rec[t + 3]]) as usize;
            if ty == 12 {
                name = rec[t + 4..t + 4 + l].to_vec();
            }
            t += 4 + l;
            if ty == 0 {
                break;
            }
        }
        let name: Vec<u8> = name.into_iter().take_while(|b| *b != 0).collect();
        if name == proto.as_bytes() {
            out.push(rec[t..].to_vec());
        }
        at += 16 + len;
    }
    out
}

fn ours(raw: &[u8]) -> String {
    let m = Message::parse(raw).expect("drlab reads what drlab wrote");
    let cseq = m.cseq().map(|c| c.method.to_string()).unwrap_or_default();
    match m.status() {
        Some(code) => format!("{code} {cseq}"),
        None => format!(
            "{} {cseq}",
            m.method().map(|x| x.to_string()).unwrap_or_default()
        ),
    }
}

#[test]
fn tshark_reads_a_call_scenario_as_drlab_does() {
    tshark_agrees("A PSTN caller reaches a Teams user", 20);
}

/// The mid-call methods too: REFER, NOTIFY with message/sipfrag, the
/// SBC's INVITE back to the Refer-To, an INVITE with Replaces.
#[test]
fn tshark_reads_transfers_as_drlab_does() {
    tshark_agrees(
        "A Teams user transfers a PSTN caller to another Teams user by REFER",
        40,
    );
    tshark_agrees(
        "A call queue's agent takes the call over with an INVITE with Replaces",
        30,
    );
}

/// What `tshark -r file args...` prints; it must succeed.
fn tshark(file: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have_tshark() -> bool {
    let there = Command::new("tshark").arg("--version").output().is_ok();
    if !there {
        eprintln!("tshark is not installed: the pcap was not checked by Wireshark's dissector");
    }
    there
}

/// Run one scenario; its result and its pcap written to a folder of its own.
fn scenario_pcap(
    scenario: &str,
) -> (
    scenarios::certify::ScenarioResult,
    Vec<u8>,
    std::path::PathBuf,
) {
    let report = futures::executor::block_on(run(Options {
        name: Some(scenarios::certify::exact_name(scenario)),
        ..Options::default()
    }))
    .expect("the scenario runs");
    let result = report.results.first().expect("the scenario ran").clone();
    assert!(result.passed, "{:?}", result.failure);
    let pcap = result.pcap.clone().expect("a pcap");
    let dir = std::env::temp_dir().join(format!(
        "drlab-tshark-{}-{}",
        std::process::id(),
        scenarios::certify::slug(scenario)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("call.pcap");
    std::fs::write(&file, &pcap).unwrap();
    (result, pcap, file)
}

/// The audio of both legs: the carrier leg as sent (RTP), the Teams leg
/// decrypted from SRTP with the keys of the trace's own SDP. tshark lists
/// four streams without loss, and every payload it reads is a probe frame
/// intact (an SRTP payload still encrypted, or decrypted with a wrong key,
/// is noise and fails the pattern).
#[test]
fn tshark_sees_the_audio_of_both_legs() {
    if !have_tshark() {
        return;
    }
    let (result, _, file) = scenario_pcap("A PSTN caller reaches a Teams user");
    assert_eq!(result.media.undecrypted, 0, "{:?}", result.media);
    assert!(result.media.decrypted > 200, "{:?}", result.media);
    assert!(result.media.rtp > 200, "{:?}", result.media);
    // The SDP in the trace says RTP/SAVP: Wireshark would then read the
    // decrypted payload as encrypted, with a 10-byte tag. Reading it as RTP
    // is what the docs tell users to do too.
    let tshark = |args: &[&str]| {
        let mut all = vec!["-o", "sdp.establish_conversation:FALSE"];
        all.extend_from_slice(args);
        tshark(&file, &all)
    };
    let streams = tshark(&["-q", "-z", "rtp,streams"]);
    let rows: Vec<Vec<&str>> = streams
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 10 && f[0].parse::<f64>().is_ok())
        .collect();
    assert_eq!(rows.len(), 4, "{streams}");
    let mut pairs = Vec::new();
    for r in &rows {
        // Start, end, src, sport, dst, dport, SSRC, payload, packets, lost, (%)...
        let packets: u32 = r[8].parse().unwrap();
        assert!(packets > 100, "{streams}");
        assert_eq!(r[9], "0", "{streams}");
        pairs.push((r[2].to_string(), r[4].to_string()));
    }
    for (src, dst) in &pairs {
        assert!(
            pairs.contains(&(dst.clone(), src.clone())),
            "{src} → {dst} has no stream back: {streams}"
        );
    }
    let payloads = tshark(&["-Y", "rtp", "-T", "fields", "-e", "rtp.payload"]);
    let mut frames = 0;
    for hex in payloads.lines() {
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert_eq!(bytes.len(), 160, "{hex}");
        // The probe's frame: its index, its send time (µs on the probes'
        // clock, for one-way delay), then a pattern from the index.
        let index = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        for (i, b) in bytes.iter().enumerate().skip(12) {
            assert_eq!(*b, (index as usize).wrapping_add(i) as u8, "frame {index}");
        }
        frames += 1;
    }
    assert_eq!(frames, result.media.decrypted + result.media.rtp);
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}

fn tshark_agrees(scenario: &str, at_least: usize) {
    if !have_tshark() {
        return;
    }
    let (_, pcap, file) = scenario_pcap(scenario);
    let dir = file.parent().unwrap().to_path_buf();
    let text = tshark(
        &file,
        &[
            "-Y",
            "sip",
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "sip.Method",
            "-e",
            "sip.Status-Code",
            "-e",
            "sip.CSeq.method",
            "-e",
            "_ws.malformed",
            "-e",
            "_ws.expert.severity",
        ],
    );
    let theirs: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    let ours: Vec<String> = payloads(&pcap, "sip").iter().map(|p| ours(p)).collect();
    assert!(
        ours.len() > at_least,
        "{scenario}: {} messages, expected more than {at_least}",
        ours.len()
    );
    assert_eq!(
        theirs.len(),
        ours.len(),
        "frames read by tshark vs messages written"
    );
    for (i, (t, o)) in theirs.iter().zip(&ours).enumerate() {
        let label = format!("{} {}", if t[0].is_empty() { t[1] } else { t[0] }, t[2]);
        assert_eq!(&label, o, "{scenario}: frame {}", i + 1);
        assert!(
            t[3].is_empty(),
            "{scenario}: frame {} is malformed for tshark",
            i + 1
        );
        // Expert severities: 2097152 chat, 4194304 note, 6291456 warn, 8388608 error.
        assert!(
            !t[4].split(',').any(|s| s == "8388608"),
            "{scenario}: frame {}: expert error",
            i + 1
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Media bypass: Wireshark's STUN dissector reads every connectivity check
/// and answer of the bypass call as drlab does: Binding requests from the
/// Teams clients with USERNAME "<SBC ufrag>:<client ufrag>", successes from
/// the SBC whose XOR-MAPPED-ADDRESS is the client's address, a FINGERPRINT
/// on every message that tshark finds correct, nothing malformed.
#[test]
fn tshark_reads_the_ice_checks_of_a_bypass_call() {
    if !have_tshark() {
        return;
    }
    let (_, pcap, file) = scenario_pcap(
        "A PSTN caller reaches a Teams user by media bypass: two clients check, one answers",
    );
    let text = tshark(
        &file,
        &[
            "-Y",
            "stun",
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "stun.type.class",
            "-e",
            "stun.att.username",
            "-e",
            "stun.att.ipv4",
            "-e",
            "stun.att.crc32.status",
            "-e",
            "_ws.malformed",
            "-e",
            "ip.src",
        ],
    );
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    let ours: Vec<sbc::media::stun::Message> = payloads(&pcap, "stun-udp")
        .iter()
        .map(|p| sbc::media::stun::Message::parse(p).expect("drlab reads its STUN"))
        .collect();
    assert!(ours.len() >= 6, "{} STUN messages", ours.len());
    assert_eq!(rows.len(), ours.len(), "{text}");
    for (i, (t, o)) in rows.iter().zip(&ours).enumerate() {
        use sbc::media::stun::Class;
        // tshark's class field: the type's C1 C0 bits (RFC 8489 §5) as
        // 0x0000 request, 0x0001 indication, 0x0010 success, 0x0011 error.
        let class = match o.class {
            Class::Request => "0x0000",
            Class::Indication => "0x0001",
            Class::Success => "0x0010",
            Class::Error => "0x0011",
        };
        assert_eq!(t[0], class, "frame {}: {text}", i + 1);
        assert_eq!(t[1], o.username().unwrap_or_default(), "frame {}", i + 1);
        if let Some(mapped) = o.xor_mapped_address() {
            assert_eq!(t[2], mapped.ip().to_string(), "frame {}", i + 1);
        }
        // Wireshark's FINGERPRINT check: 1 = good.
        assert_eq!(t[3], "1", "frame {}: fingerprint {text}", i + 1);
        assert!(t[4].is_empty(), "frame {} is malformed for tshark", i + 1);
    }
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}
