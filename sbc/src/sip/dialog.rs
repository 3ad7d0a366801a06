//! Dialog state (RFC 3261 §12): identity, route set, remote target and
//! CSeq, and the in-dialog requests built from it.

use crate::sip::transport::Target;
use crate::sip::wire::{Message, Method, NameAddr, WireError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// Our From/To value without the tag (name-addr text).
    pub local_uri: String,
    pub remote_uri: String,
    pub local_seq: u32,
    /// The remote Contact URI: the Request-URI of in-dialog requests.
    pub remote_target: String,
    /// Route set, in the order Route headers are written.
    pub route_set: Vec<String>,
    /// Our Contact header value.
    pub contact: String,
    /// Where in-dialog requests go (the role's routing decision).
    pub target: Target,
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

fn first_contact_uri(msg: &Message) -> Result<String, WireError> {
    msg.contacts()?
        .into_iter()
        .next()
        .map(|c| c.uri)
        .ok_or(WireError::MissingHeader { header: "Contact" })
}

impl Dialog {
    /// The dialog a UAC has once a response with a To-tag arrives (§12.1.2).
    pub fn as_uac(
        request: &Message,
        response: &Message,
        contact: String,
        target: Target,
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
        Ok(Dialog {
            call_id: request.call_id()?.to_string(),
            local_tag: from.tag().unwrap_or_default().to_string(),
            remote_tag: remote_tag.to_string(),
            local_uri: strip_tag(request.headers.get("From").unwrap_or_default()),
            remote_uri: strip_tag(request.headers.get("To").unwrap_or_default()),
            local_seq: request.cseq()?.seq,
            remote_target: first_contact_uri(response)?,
            route_set,
            contact,
            target,
        })
    }

    /// [`Dialog::as_uac`] with our Contact taken from the request we sent.
    pub fn as_uac_for(
        request: &Message,
        response: &Message,
        target: Target,
    ) -> Result<Dialog, WireError> {
        let contact = request
            .headers
            .get("Contact")
            .unwrap_or_default()
            .to_string();
        Self::as_uac(request, response, contact, target)
    }

    /// The dialog a UAS creates when it answers with `local_tag` (§12.1.1).
    pub fn as_uas(
        request: &Message,
        local_tag: &str,
        contact: String,
        target: Target,
    ) -> Result<Dialog, WireError> {
        let from = request.from_header()?;
        Ok(Dialog {
            call_id: request.call_id()?.to_string(),
            local_tag: local_tag.to_string(),
            remote_tag: from.tag().unwrap_or_default().to_string(),
            local_uri: strip_tag(request.headers.get("To").unwrap_or_default()),
            remote_uri: strip_tag(request.headers.get("From").unwrap_or_default()),
            local_seq: 0,
            remote_target: first_contact_uri(request)?,
            route_set: request
                .headers
                .values("Record-Route")
                .map(str::to_string)
                .collect(),
            contact,
            target,
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

    fn base(&self, method: Method, seq: u32) -> Message {
        let mut m = Message::request(method.clone(), self.remote_target.clone());
        for r in &self.route_set {
            m.headers.push("Route", r.clone());
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
