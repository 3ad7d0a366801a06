//! Out-of-dialog requests (RFC 3261 §8.1.1): one builder for every role's
//! OPTIONS and initial INVITEs, drawing the From tag and Call-ID from the
//! seeded RNG so traces stay reproducible.

use crate::sip::rng::SeededRng;
use crate::sip::wire::{Message, Method};

/// A request outside any dialog, assembled in the order RFC 3261 §8.1.1
/// lists its headers; [`RequestBuilder::build`] draws what must be new.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    method: Method,
    request_uri: String,
    from: String,
    to: String,
    cseq: u32,
    max_forwards: u32,
    contact: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<(String, Vec<u8>)>,
}

impl RequestBuilder {
    /// `from` and `to` are name-addr values without tags (`<sip:a@b>`).
    pub fn new(
        method: Method,
        request_uri: impl Into<String>,
        from: impl Into<String>,
        to: impl Into<String>,
    ) -> Self {
        RequestBuilder {
            method,
            request_uri: request_uri.into(),
            from: from.into(),
            to: to.into(),
            cseq: 1,
            max_forwards: 70,
            contact: None,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn cseq(mut self, seq: u32) -> Self {
        self.cseq = seq;
        self
    }

    /// Max-Forwards (70 by default, §8.1.1.6; a B2BUA passes on the
    /// incoming value less one).
    pub fn max_forwards(mut self, mf: u32) -> Self {
        self.max_forwards = mf;
        self
    }

    pub fn contact(mut self, contact: impl Into<String>) -> Self {
        self.contact = Some(contact.into());
        self
    }

    /// Any further header, written after the mandatory ones in call order.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.body = Some((content_type.to_string(), body));
        self
    }

    /// The request, with a new From tag and a new Call-ID `<hex>@<call_id_host>`.
    pub fn build(self, rng: &mut SeededRng, call_id_host: &str) -> Message {
        let mut m = Message::request(self.method.clone(), self.request_uri);
        m.headers
            .push("Max-Forwards", self.max_forwards.to_string());
        m.headers
            .push("From", format!("{};tag={}", self.from, rng.tag()));
        m.headers.push("To", self.to);
        m.headers.push("Call-ID", rng.call_id(call_id_host));
        m.headers
            .push("CSeq", format!("{} {}", self.cseq, self.method));
        if let Some(c) = self.contact {
            m.headers.push("Contact", c);
        }
        for (k, v) in self.headers {
            m.headers.push(k, v);
        }
        if let Some((ct, body)) = self.body {
            m.set_body(&ct, body);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_request_validates_and_draws_from_the_seed() {
        let b = RequestBuilder::new(
            Method::Options,
            "sip:sip.pstnhub.microsoft.com:5061",
            "<sip:sbc.example.com:5061>",
            "<sip:sip.pstnhub.microsoft.com:5061>",
        )
        .contact("<sip:sbc.example.com:5061;transport=tls>")
        .header("Allow", "INVITE,ACK");
        let mut rng = SeededRng::new(5);
        let mut m = b.clone().build(&mut rng, "sbc.example.com");
        m.headers
            .push_front("Via", "SIP/2.0/TLS sbc.example.com:5061;branch=z9hG4bKx");
        assert!(m.validate().is_ok(), "{}", m.summary());
        assert!(m.from_header().unwrap().tag().is_some());
        assert!(m.call_id().unwrap().ends_with("@sbc.example.com"));
        let again = b.build(&mut SeededRng::new(5), "sbc.example.com");
        assert_eq!(again.call_id().unwrap(), m.call_id().unwrap());
    }
}
