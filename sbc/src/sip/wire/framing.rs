//! Cutting SIP messages out of a byte stream (TCP, TLS) by `Content-Length`
//! (RFC 3261 §18.3: on a stream the header is mandatory).
//!
//! Feed whatever a read returned with [`StreamFramer::push`], then call
//! [`StreamFramer::next_message`] until it returns `Ok(None)`. A read may
//! hold half a message or several. An error means the stream cannot be
//! resynchronised: the connection is to be closed.

use super::error::WireError;
use super::message::{content_length, find_header_end, parse_head, Message, DEFAULT_MAX_MESSAGE};

#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    limit: usize,
}

/// What a stream produced: a message, or a keep-alive (RFC 5626 §3.5.1
/// double-CRLF ping, which is answered with a single CRLF pong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Message(Message, Vec<u8>),
    KeepAlivePing,
}

impl Default for StreamFramer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE)
    }
}

impl StreamFramer {
    pub fn new(limit: usize) -> Self {
        StreamFramer {
            buf: Vec::new(),
            limit,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a complete message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed. The
    /// message comes with its exact bytes, for the trace.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if self.buf.starts_with(b"\r\n\r\n") {
            self.buf.drain(..4);
            return Ok(Some(Frame::KeepAlivePing));
        }
        // Lone CRLFs between messages are keep-alive noise (RFC 3261 §7.5);
        // fewer than four at the end of the buffer may still become a ping.
        let skip = self
            .buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        if skip == self.buf.len() && skip < 4 {
            return Ok(None);
        }
        self.buf.drain(..skip);
        let Some((head_len, body_start)) = find_header_end(&self.buf) else {
            if self.buf.len() > self.limit {
                return Err(WireError::TooLarge { limit: self.limit });
            }
            return Ok(None);
        };
        let head = parse_head(&self.buf[..head_len])?;
        let declared = content_length(&head.headers)?.ok_or(WireError::MissingHeader {
            header: "Content-Length",
        })?;
        // A hostile Content-Length (2^64 - 1) must not overflow the sum:
        // in a debug build that panicked, in release it wrapped and the
        // slice below panicked (found by fuzz/ sip_stream).
        let total = body_start.saturating_add(declared);
        if total > self.limit {
            return Err(WireError::TooLarge { limit: self.limit });
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let raw: Vec<u8> = self.buf.drain(..total).collect();
        let mut msg = head;
        msg.body = raw[body_start..].to_vec();
        Ok(Some(Frame::Message(msg, raw)))
    }

    /// The next complete message, skipping keep-alives.
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        loop {
            match self.next_frame()? {
                Some(Frame::Message(m, _)) => return Ok(Some(m)),
                Some(Frame::KeepAlivePing) => continue,
                None => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str) -> String {
        format!(
            "MESSAGE sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// fuzz/regressions/sip_stream-content-length-overflow: 2^64 - 1
    /// overflowed `body_start + declared` (a panic; in release, a wrapped
    /// sum and a panicking slice). Now: too large, the stream refused.
    #[test]
    fn a_content_length_of_two_to_the_64_is_too_large_not_a_panic() {
        let mut f = StreamFramer::new(65536);
        f.push(b"M-HTIONS : SIP/2.0\r\nT:\r\nContent-Length:18446744073709551615\r\n\r\n");
        assert!(matches!(f.next_frame(), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn partial_reads_are_joined() {
        let m = msg("hello");
        let mut f = StreamFramer::default();
        for b in m.as_bytes() {
            assert_eq!(f.next_message().unwrap(), None);
            f.push(&[*b]);
        }
        assert_eq!(f.next_message().unwrap().unwrap().body, b"hello");
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn several_messages_in_one_read() {
        let mut f = StreamFramer::default();
        f.push(format!("{}{}{}", msg("a"), msg("bb"), msg("")).as_bytes());
        assert_eq!(f.next_message().unwrap().unwrap().body, b"a");
        assert_eq!(f.next_message().unwrap().unwrap().body, b"bb");
        assert_eq!(f.next_message().unwrap().unwrap().body, b"");
        assert_eq!(f.next_message().unwrap(), None);
    }

    #[test]
    fn keepalive_between_messages() {
        let mut f = StreamFramer::default();
        f.push(format!("{}\r\n\r\n{}", msg("a"), msg("bb")).as_bytes());
        assert!(matches!(f.next_frame().unwrap(), Some(Frame::Message(..))));
        assert_eq!(f.next_frame().unwrap(), Some(Frame::KeepAlivePing));
        match f.next_frame().unwrap() {
            Some(Frame::Message(m, raw)) => {
                assert_eq!(m.body, b"bb");
                assert_eq!(raw, msg("bb").as_bytes());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stream_without_content_length_is_an_error() {
        let mut f = StreamFramer::default();
        f.push(b"OPTIONS sip:a SIP/2.0\r\nCall-ID: x\r\n\r\n");
        assert_eq!(
            f.next_message(),
            Err(WireError::MissingHeader {
                header: "Content-Length"
            })
        );
    }

    #[test]
    fn endless_header_section_hits_the_limit() {
        let mut f = StreamFramer::new(1024);
        f.push(b"OPTIONS sip:a SIP/2.0\r\n");
        for _ in 0..100 {
            f.push(b"X-Filler: aaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(f.next_message(), Err(WireError::TooLarge { limit: 1024 }));
    }
}
