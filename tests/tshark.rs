//! Wireshark's SIP dissector as a second judge of what went on the wire:
//! a call scenario's pcap, read by tshark, must show the same messages
//! (method or status, and CSeq method) in the same order as drlab's own
//! parser reads from the same bytes, with nothing malformed and no expert
//! error. Needs `tshark` (Debian package; `.ci/run` installs it); without
//! it the test says so and does nothing.

use sbc::sip::wire::Message;
use scenarios::certify::{run, Options};
use std::process::Command;

/// The SIP payloads of a pcap written by `scenarios::pcap` (exported PDUs).
fn payloads(pcap: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let rec = &pcap[at + 16..at + 16 + len];
        // Tags until TAG_END (type 0, length 0), then the PDU.
        let mut t = 0;
        loop {
            let ty = u16::from_be_bytes([rec[t], rec[t + 1]]);
            let l = u16::from_be_bytes([rec[t + 2], rec[t + 3]]) as usize;
            t += 4 + l;
            if ty == 0 {
                break;
            }
        }
        out.push(rec[t..].to_vec());
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

fn tshark_agrees(scenario: &str, at_least: usize) {
    if Command::new("tshark").arg("--version").output().is_err() {
        eprintln!("tshark is not installed: the pcap was not checked by Wireshark's dissector");
        return;
    }
    let report = futures::executor::block_on(run(Options {
        name: Some(scenarios::certify::exact_name(scenario)),
        ..Options::default()
    }))
    .expect("the scenario runs");
    let result = report.results.first().expect("the scenario ran");
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
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-T", "fields", "-E", "separator=|"])
        .args([
            "-e",
            "sip.Method",
            "-e",
            "sip.Status-Code",
            "-e",
            "sip.CSeq.method",
        ])
        .args(["-e", "_ws.malformed", "-e", "_ws.expert.severity"])
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let theirs: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    let ours: Vec<String> = payloads(&pcap).iter().map(|p| ours(p)).collect();
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
