//! Dialog state (RFC 3261 §12): identity, route set, remote target and
//! CSeq numbers, and the in-dialog requests built from them. Where a request
//! goes is [`Dialog::next_hop`], a URI the routing table turns into an
//! address: the first Route if the route set is loose (`;lr`), else the
//! remote target (§12.2.1.1).

use crate::sip::wire::{Message, Method, NameAddr, Uri, WireError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// Our From/To value without the tag (name-addr text).
    pub local_uri: String,
    pub remote_uri: String,
    pub local_seq: u32,
    /// The highest CSeq the peer has used in this dialog (§12.2.2).
    pub remote_seq: Option<u32>,
    /// The remote Contact URI: the Request-URI of in-dialog requests.
    pub remote_target: String,
    /// Route set, in the order Route headers are written.
    pub route_set: Vec<String>,
    /// Our Contact header value.
    pub contact: String,
}

fn strip_tag(value: &str) -> String {
    let Ok(na) = NameAddr::parse("From", value) else {
        return value.to_string();
    };
    let mut out = match &na.display {
        Some(d) => format!("\"{d}\" <{}>", na.uri),
        None => format!("<{}>", na.uri),
    };
    for (k, v) in na
        .params
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("tag"))
    {
        out.push(';');
        out.push_str(k);
        if let Some(v) = v {
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

/// The remote target (RFC 3261 §12.1.1, §12.1.2): the first Contact's
/// URI, which must be a URI: it becomes the Request-URI of every request
/// in the dialog (a fuzzed `Contact: 8` made a BYE whose request line was
/// `BYE 8 SIP/2.0`).
fn first_contact_uri(msg: &Message) -> Result<String, WireError> {
    let uri = msg
        .contacts()?
        .into_iter()
        .next()
        .map(|c| c.uri)
        .ok_or(WireError::MissingHeader { header: "Contact" })?;
    Uri::parse(&uri)?;
    Ok(uri)
}

/// The URI inside a Route/Record-Route value.
fn route_uri(value: &str) -> String {
    NameAddr::parse("Route", value)
        .map(|n| n.uri)
        .unwrap_or_else(|_| value.trim().to_string())
}

fn is_loose(route: &str) -> bool {
    Uri::parse(&route_uri(route))
        .map(|u| u.param("lr").is_some())
        .unwrap_or(true)
}

impl Dialog {
    /// The dialog a UAC has once a response with a To-tag arrives (§12.1.2):
    /// the route set is the response's Record-Route reversed, less the
    /// entries at its front that `is_own` recognises (a UA that
    /// record-routes its own requests, as the hub does, is not a hop on
    /// its own path).
    pub fn as_uac(
        request: &Message,
        response: &Message,
        contact: String,
        is_own: impl Fn(&str) -> bool,
    ) -> Result<Dialog, WireError> {
        let to = response.to_header()?;
        let remote_tag = to.tag().ok_or(WireError::BadHeaderValue {
            header: "To",
            value: response.headers.get("To").unwrap_or_default().into(),
            reason: "no tag in a dialog-creating response".into(),
        })?;
        let from = request.from_header()?;
        let mut route_set: Vec<String> = response
            .headers
            .values("Record-Route")
            .map(str::to_string)
            .collect();
        route_set.reverse();
        while route_set.first().is_some_and(|r| is_own(&route_uri(r))) {
            route_set.remove(0);
        }
        Ok(Dialog {
            call_id: request.call_id()?.to_string(),
            local_tag: from.tag().unwrap_or_default().to_string(),
            remote_tag: remote_tag.to_string(),
            local_uri: strip_tag(request.headers.get("From").unwrap_or_default()),
            remote_uri: strip_tag(request.headers.get("To").unwrap_or_default()),
            local_seq: request.cseq()?.seq,
            remote_seq: None,
            remote_target: first_contact_uri(response)?,
            route_set,
            contact,
        })
    }

    /// The dialog a UAS creates when it answers with `local_tag` (§12.1.1).
    pub fn as_uas(
        request: &Message,
        local_tag: &str,
        contact: String,
    ) -> Result<Dialog, WireError> {
        let from = request.from_header()?;
        Ok(Dialog {
            call_id: request.call_id()?.to_string(),
            local_tag: local_tag.to_string(),
            remote_tag: from.tag().unwrap_or_default().to_string(),
            local_uri: strip_tag(request.headers.get("To").unwrap_or_default()),
            remote_uri: strip_tag(request.headers.get("From").unwrap_or_default()),
            local_seq: 0,
            remote_seq: Some(request.cseq()?.seq),
            remote_target: first_contact_uri(request)?,
            route_set: request
                .headers
                .values("Record-Route")
                .map(str::to_string)
                .collect(),
            contact,
        })
    }

    /// Whether `msg` belongs to this dialog (Call-ID and both tags, §12.2.2).
    pub fn matches(&self, msg: &Message) -> bool {
        let (Ok(cid), Ok(from), Ok(to)) = (msg.call_id(), msg.from_header(), msg.to_header())
        else {
            return false;
        };
        if cid != self.call_id {
            return false;
        }
        let (f, t) = (from.tag().unwrap_or_default(), to.tag().unwrap_or_default());
        (f == self.remote_tag && t == self.local_tag)
            || (f == self.local_tag && t == self.remote_tag)
    }

    /// Check and record the CSeq of a request from the peer (§12.2.2): a
    /// number lower than one already seen is out of order (answer 500).
    pub fn accept_remote_seq(&mut self, seq: u32, method: &Method) -> bool {
        if *method == Method::Ack || *method == Method::Cancel {
            return true;
        }
        match self.remote_seq {
            Some(last) if seq < last => false,
            _ => {
                self.remote_seq = Some(seq);
                true
            }
        }
    }

    /// The URI the next in-dialog request is sent to: the first Route when
    /// the route set is loose, the remote target when it is empty; with a
    /// strict first route (no `lr`, RFC 2543) that route (§12.2.1.1).
    pub fn next_hop(&self) -> String {
        match self.route_set.first() {
            Some(r) => route_uri(r),
            None => self.remote_target.clone(),
        }
    }

    fn base(&self, method: Method, seq: u32) -> Message {
        let strict = self.route_set.first().is_some_and(|r| !is_loose(r));
        let (ruri, routes): (String, Vec<String>) = if strict {
            // §12.2.1.1: the first route becomes the Request-URI, the
            // remote target the last Route.
            let mut rest: Vec<String> = self.route_set[1..].to_vec();
            rest.push(format!("<{}>", self.remote_target));
            (route_uri(&self.route_set[0]), rest)
        } else {
            (self.remote_target.clone(), self.route_set.clone())
        };
        let mut m = Message::request(method.clone(), ruri);
        for r in routes {
            m.headers.push("Route", r);
        }
        m.headers.push("Max-Forwards", "70");
        m.headers
            .push("From", format!("{};tag={}", self.local_uri, self.local_tag));
        m.headers
            .push("To", format!("{};tag={}", self.remote_uri, self.remote_tag));
        m.headers.push("Call-ID", self.call_id.clone());
        m.headers.push("CSeq", format!("{seq} {method}"));
        m
    }

    /// A new in-dialog request (BYE, re-INVITE, NOTIFY...) with the next CSeq.
    pub fn request(&mut self, method: Method) -> Message {
        self.local_seq += 1;
        let mut m = self.base(method, self.local_seq);
        m.headers.push("Contact", self.contact.clone());
        m
    }

    /// The ACK for a 2xx to the INVITE with CSeq `invite_seq` (§13.2.2.4).
    pub fn ack(&self, invite_seq: u32) -> Message {
        self.base(Method::Ack, invite_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::response_to;

    fn invite() -> Message {
        let raw = "INVITE sip:+4989000001@sip.pstnhub.microsoft.com SIP/2.0\r\n\
            Via: SIP/2.0/TLS sbc.example.com:5061;branch=z9hG4bK1\r\n\
            From: <sip:+4930123456@sbc.example.com;user=phone>;tag=local1\r\n\
            To: <sip:+4989000001@sip.pstnhub.microsoft.com;user=phone>\r\n\
            Call-ID: d1\r\nCSeq: 5 INVITE\r\n\
            Contact: <sip:+4930123456@sbc.example.com:5061;transport=tls>\r\n\
            Record-Route: <sip:edge.example.com;lr>\r\nContent-Length: 0\r\n\r\n";
        Message::parse(raw.as_bytes()).unwrap()
    }

    fn ok() -> Message {
        let mut r = response_to(&invite(), 200, "OK", Some("remote1"));
        r.headers.push("Record-Route", "<sip:p2.example.com;lr>");
        r.headers.push("Record-Route", "<sip:p1.example.com;lr>");
        r.headers
            .push("Contact", "<sip:api.example.com:443;x-c=ab/d/8/cd>");
        r
    }

    fn contact() -> String {
        "<sip:+4930123456@sbc.example.com:5061;transport=tls>".into()
    }

    #[test]
    fn uac_dialog_reverses_record_route_and_targets_the_contact() {
        let mut d = Dialog::as_uac(&invite(), &ok(), contact(), |_| false).unwrap();
        assert_eq!(
            d.route_set,
            [
                "<sip:p1.example.com;lr>",
                "<sip:p2.example.com;lr>",
                "<sip:edge.example.com;lr>"
            ]
        );
        assert_eq!(d.next_hop(), "sip:p1.example.com;lr");
        let bye = d.request(Method::Bye);
        assert_eq!(
            bye.request_uri(),
            Some("sip:api.example.com:443;x-c=ab/d/8/cd")
        );
        assert_eq!(bye.cseq().unwrap().seq, 6);
        assert_eq!(bye.from_header().unwrap().tag(), Some("local1"));
        assert_eq!(bye.to_header().unwrap().tag(), Some("remote1"));
        assert_eq!(
            bye.headers.values("Route").next(),
            Some("<sip:p1.example.com;lr>")
        );
        let ack = d.ack(5);
        assert_eq!(ack.cseq().unwrap().seq, 5);
        assert!(d.matches(&ok()));
    }

    #[test]
    fn a_uac_that_record_routed_itself_is_not_a_hop_of_its_own_route_set() {
        // The hub puts its own Record-Route on its INVITE; the SBC echoes it
        // in the 200. Its ACK and BYE must go to the SBC, not to the hub.
        let mut r = response_to(&invite(), 200, "OK", Some("remote1"));
        r.headers.set(
            "Record-Route",
            "<sip:sip.pstnhub.microsoft.com:5061;transport=tls;lr>",
        );
        r.headers
            .push("Contact", "<sip:+1@sbc.example.com:5061;transport=tls>");
        let own = |uri: &str| uri.contains("sip.pstnhub.microsoft.com");
        let d = Dialog::as_uac(&invite(), &r, contact(), own).unwrap();
        assert!(d.route_set.is_empty(), "{:?}", d.route_set);
        assert_eq!(d.next_hop(), "sip:+1@sbc.example.com:5061;transport=tls");
    }

    #[test]
    fn strict_route_becomes_the_request_uri() {
        let mut d = Dialog::as_uac(&invite(), &ok(), contact(), |_| false).unwrap();
        d.route_set = vec!["<sip:strict.example.com>".into()];
        let bye = d.request(Method::Bye);
        assert_eq!(bye.request_uri(), Some("sip:strict.example.com"));
        assert_eq!(
            bye.headers.values("Route").collect::<Vec<_>>(),
            ["<sip:api.example.com:443;x-c=ab/d/8/cd>"]
        );
        assert_eq!(d.next_hop(), "sip:strict.example.com");
    }

    #[test]
    fn uas_dialog_keeps_record_route_order_and_matches_both_directions() {
        let mut d = Dialog::as_uas(&invite(), "mine", "<sip:hub>".into()).unwrap();
        assert_eq!(d.route_set, ["<sip:edge.example.com;lr>"]);
        assert_eq!(d.remote_tag, "local1");
        assert_eq!(
            d.local_uri,
            "<sip:+4989000001@sip.pstnhub.microsoft.com;user=phone>"
        );
        let mut bye = invite();
        bye.headers
            .set("To", "<sip:+4989000001@sip.pstnhub.microsoft.com>;tag=mine");
        assert!(d.matches(&bye));
        bye.headers.set("Call-ID", "other");
        assert!(!d.matches(&bye));
        assert!(!d.accept_remote_seq(4, &Method::Bye), "CSeq went backwards");
        assert!(d.accept_remote_seq(6, &Method::Bye));
    }

    #[test]
    fn a_2xx_without_to_tag_makes_no_dialog() {
        let r = response_to(&invite(), 200, "OK", None);
        assert!(Dialog::as_uac(&invite(), &r, contact(), |_| false).is_err());
    }
}
