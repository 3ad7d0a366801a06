//! The SBC's whole sans-IO SIP input path: datagrams from one UDP peer into
//! a `UserAgent` (endpoint core, transactions, sessions) with a small role
//! answering on top, exactly as `sbc::driver::run` feeds it, then its
//! timers run to 4000 s. The path and the checks are
//! `sbc/tests/support/endpoint_harness.rs`, shared with the proptest in
//! `sbc/tests/hostile_input.rs`.
//!
//! Asserts: no panic, no livelock; everything sent parses back with our
//! parser with its start line intact; responses have a well-formed status
//! line and the headers a response needs and go back to the sender; a
//! request that fails validation (or whose body length, version or size is
//! wrong) gets exactly one response with its status (400/413/416/505);
//! ACKs, responses and requests without a readable Via get none; the first
//! well-formed request gets an answer.
//!
//! Input: datagrams separated by the 8 bytes `\0\0NEXT\0\0` (the seeds are
//! single messages or short exchanges).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../sbc/tests/support/endpoint_harness.rs"]
mod harness;

const SEPARATOR: &[u8] = b"\0\0NEXT\0\0";

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        out.push(&rest[..i]);
        rest = &rest[i + SEPARATOR.len()..];
        if out.len() == 16 {
            return out;
        }
    }
    out.push(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    if let Err(e) = harness::run_and_check(&split(data)) {
        panic!("{e}");
    }
});
