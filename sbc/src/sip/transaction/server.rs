//! Server transactions: INVITE (RFC 3261 §17.2.1, RFC 6026 §7.1) and
//! non-INVITE (§17.2.2).

use super::timers::{Deadlines, Timer, TimerConfig};
use super::TransactionKey;
use crate::sip::wire::{Message, Method, WireError};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Trying,
    Proceeding,
    /// 2xx sent to an INVITE (RFC 6026): retransmitted until the ACK arrives.
    Accepted,
    Completed,
    /// ACK received for a non-2xx final.
    Confirmed,
    Terminated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// Timer H fired: no ACK for a non-2xx final (§17.2.1).
    AckTimeout,
    /// Timer L fired with the 2xx never ACKed: the UAS core ends the
    /// dialog (RFC 3261 §13.3.1.4 and Direct Routing's 408 "no ACK").
    NoAckFor2xx,
    /// The ACK for the 2xx arrived (reported once).
    Acked,
    /// A CANCEL matched this INVITE (§9.2); the TU answers 487.
    Cancelled,
    TransportError,
}

#[derive(Debug)]
pub struct ServerTransaction {
    key: TransactionKey,
    invite: bool,
    reliable: bool,
    timers: TimerConfig,
    state: ServerState,
    request: Message,
    last_response: Option<Message>,
    interval: Duration,
    acked: bool,
    deadlines: Deadlines,
    transmits: VecDeque<Message>,
    events: VecDeque<ServerEvent>,
}

impl ServerTransaction {
    /// Take a new request. For an INVITE a `100 Trying` is queued at once
    /// (§17.2.1 allows the TU 200 ms; answering at once is what the hub does).
    pub fn new(
        request: Message,
        reliable: bool,
        timers: TimerConfig,
        _now: Instant,
    ) -> Result<Self, WireError> {
        let key = TransactionKey::for_request(&request)?;
        let invite = request.method() == Some(&Method::Invite);
        let mut tx = ServerTransaction {
            key,
            invite,
            reliable,
            timers,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            request,
            last_response: None,
            interval: timers.t1,
            acked: false,
            deadlines: Deadlines::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        if invite {
            let trying = response_to(&tx.request, 100, "Trying", None);
            tx.last_response = Some(trying.clone());
            tx.transmits.push_back(trying);
        }
        Ok(tx)
    }

    pub fn key(&self) -> &TransactionKey {
        &self.key
    }

    pub fn request(&self) -> &Message {
        &self.request
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }

    /// A retransmission of the request, or (INVITE) the ACK of a non-2xx
    /// final, matched to this transaction by key.
    pub fn handle_request(&mut self, req: Message, now: Instant) {
        use ServerState::*;
        let is_ack = req.method() == Some(&Method::Ack);
        match (self.state, is_ack) {
            (Completed, true) if self.invite => {
                self.state = Confirmed;
                self.deadlines.clear();
                let wait = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                self.deadlines.arm(Timer::I, now + wait);
            }
            (Accepted, true) => self.ack_2xx(),
            (Proceeding | Completed, false) => {
                // §17.2.1/§17.2.2: answer a retransmitted request with the last response.
                if let Some(r) = &self.last_response {
                    self.transmits.push_back(r.clone());
                }
            }
            _ => {}
        }
        self.settle(now);
    }

    /// The ACK of a 2xx is a transaction of its own (new branch); the dialog
    /// layer that matched it hands it here to stop 2xx retransmission.
    pub fn ack_2xx(&mut self) {
        if self.state == ServerState::Accepted && !self.acked {
            self.acked = true;
            self.deadlines.cancel(Timer::Retransmit2xx);
            self.events.push_back(ServerEvent::Acked);
        }
    }

    /// A CANCEL for this INVITE arrived (the CANCEL's own transaction answers 200).
    pub fn handle_cancel(&mut self) {
        if self.invite && self.state == ServerState::Proceeding {
            self.events.push_back(ServerEvent::Cancelled);
        }
    }

    /// The TU answers. Responses after a final are refused (API misuse).
    pub fn send_response(&mut self, resp: Message, now: Instant) -> Result<(), &'static str> {
        let code = resp.status().ok_or("not a response")?;
        use ServerState::*;
        match (self.invite, self.state, code) {
            (_, Trying | Proceeding, 100..=199) => {
                self.state = Proceeding;
            }
            (true, Proceeding, 200..=299) => {
                self.state = Accepted;
                self.deadlines.arm(Timer::L, now + self.timers.t1x64());
                if !self.reliable {
                    self.deadlines
                        .arm(Timer::Retransmit2xx, now + self.timers.t1);
                }
            }
            (true, Proceeding, _) => {
                self.state = Completed;
                if !self.reliable {
                    self.deadlines.arm(Timer::G, now + self.timers.t1);
                }
                self.deadlines.arm(Timer::H, now + self.timers.t1x64());
            }
            (false, Trying | Proceeding, _) => {
                self.state = Completed;
                let wait = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t1x64()
                };
                self.deadlines.arm(Timer::J, now + wait);
            }
            (true, Accepted, 200..=299) => {}
            _ => return Err("the transaction has already sent its final response"),
        }
        self.last_response = Some(resp.clone());
        self.transmits.push_back(resp);
        self.settle(now);
        Ok(())
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.deadlines.pop_due(now) {
            match t {
                Timer::G | Timer::Retransmit2xx => {
                    // §17.2.1 (G) and §13.3.1.4 (2xx): T1 doubling, capped at T2.
                    if let Some(r) = &self.last_response {
                        self.transmits.push_back(r.clone());
                    }
                    self.interval = (self.interval * 2).min(self.timers.t2);
                    self.deadlines.arm(t, now + self.interval);
                }
                Timer::H => {
                    self.events.push_back(ServerEvent::AckTimeout);
                    self.terminate();
                }
                Timer::L => {
                    if !self.acked {
                        self.events.push_back(ServerEvent::NoAckFor2xx);
                    }
                    self.terminate();
                }
                Timer::I | Timer::J => self.terminate(),
                _ => {}
            }
        }
    }

    pub fn handle_transport_error(&mut self) {
        if self.state != ServerState::Terminated {
            self.events.push_back(ServerEvent::TransportError);
            self.terminate();
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Message> {
        crate::sip::pop_or_free(&mut self.transmits)
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        crate::sip::pop_or_free(&mut self.events)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    fn terminate(&mut self) {
        self.state = ServerState::Terminated;
        self.deadlines.clear();
    }

    fn settle(&mut self, now: Instant) {
        if self.deadlines.next().is_some_and(|d| d <= now) {
            self.handle_timeout(now);
        }
    }
}

/// A response to `req` per RFC 3261 §8.2.6.2: Via list, From, To (with
/// `to_tag` added if given and absent), Call-ID and CSeq copied.
pub fn response_to(req: &Message, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
    let mut r = Message::response(code, reason);
    for h in &req.headers.0 {
        if h.is("Via")
            || h.is("From")
            || h.is("Call-ID")
            || h.is("CSeq")
            || h.is("Record-Route") && (101..300).contains(&code)
        {
            r.headers.push(h.name.clone(), h.value.clone());
        } else if h.is("To") {
            let mut to = h.value.clone();
            if let Some(tag) = to_tag {
                if !has_tag(&to) {
                    to.push_str(";tag=");
                    to.push_str(tag);
                }
            }
            r.headers.push(h.name.clone(), to);
        }
    }
    r
}

fn has_tag(value: &str) -> bool {
    let params = match value.rfind('>') {
        Some(i) => &value[i..],
        None => value,
    };
    crate::sip::wire::split_params(params)
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("tag"))
}
