//! The stream framer (TCP/TLS): the input is cut into reads at points the
//! fuzzer picks, each read is pushed and frames are pulled until `Ok(None)`
//! or an error (the connection would close). Asserts: no panic; every
//! pull that yields a frame consumes bytes (no livelock); the frames do
//! not depend on how the stream was cut into reads; a framed message is
//! what the datagram parser reads from the same bytes. Errors end the
//! stream and are compared by position only.
//!
//! Input: byte 0 picks the limit (bit 0: 256 bytes, else 64 KiB) and the
//! number of cuts (bits 1-4); the next bytes are the read sizes; the rest
//! is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc::sip::wire::{Frame, Message, StreamFramer, WireError, DEFAULT_MAX_MESSAGE};

#[derive(Debug, PartialEq)]
enum Out {
    Ping,
    Message(Message, Vec<u8>),
    Error(WireError),
}

/// Pull until the framer needs more bytes. `true` once it has failed.
fn pull(f: &mut StreamFramer, out: &mut Vec<Out>) -> bool {
    // Each frame takes at least one byte, so a bound of the pending bytes
    // plus one is enough; more means a pull that returns without consuming.
    let bound = f.pending() + 1;
    for _ in 0..=bound {
        let before = f.pending();
        match f.next_frame() {
            Ok(None) => return false,
            Ok(Some(frame)) => {
                assert!(
                    f.pending() < before,
                    "a frame was returned but nothing consumed"
                );
                out.push(match frame {
                    Frame::KeepAlivePing => Out::Ping,
                    Frame::Message(m, raw) => Out::Message(m, raw),
                })
            }
            Err(e) => {
                out.push(Out::Error(e));
                return true;
            }
        }
    }
    panic!("next_frame keeps returning frames without consuming the buffer");
}

fn frame(stream: &[u8], reads: &[usize], limit: usize) -> Vec<Out> {
    let mut f = StreamFramer::new(limit);
    let mut out = Vec::new();
    let mut rest = stream;
    for &n in reads.iter().chain(std::iter::once(&usize::MAX)) {
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        f.push(piece);
        if pull(&mut f, &mut out) {
            break;
        }
        if rest.is_empty() {
            break;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, data)) = data.split_first() else {
        return;
    };
    let limit = if ctl & 1 == 1 {
        256
    } else {
        DEFAULT_MAX_MESSAGE
    };
    let cuts = usize::from((ctl >> 1) & 0x0f).min(data.len());
    let (sizes, stream) = data.split_at(cuts);
    let reads: Vec<usize> = sizes.iter().map(|b| usize::from(*b)).collect();

    let pieces = frame(stream, &reads, limit);
    let whole = frame(stream, &[], limit);
    // Which error ends a stream may depend on the reads (a head that is
    // both too long and malformed is found too long while it is still
    // arriving); that there is one, and where, may not.
    let kind = |o: &Out| match o {
        Out::Error(_) => None,
        other => Some(format!("{other:?}")),
    };
    let (p, w): (Vec<_>, Vec<_>) = (
        pieces.iter().map(kind).collect(),
        whole.iter().map(kind).collect(),
    );
    assert_eq!(p, w, "framing depends on how the stream was read");

    for o in &whole {
        if let Out::Message(m, raw) = o {
            assert!(raw.len() <= limit, "a frame over the limit");
            let again = Message::parse_with_limit(raw, limit);
            assert_eq!(again.as_ref(), Ok(m), "framer and datagram parser disagree");
        }
    }
});
