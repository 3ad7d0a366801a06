//! Client transactions: INVITE (RFC 3261 §17.1.1, RFC 6026 §7.2) and
//! non-INVITE (§17.1.2).

use super::timers::{Deadlines, Timer, TimerConfig};
use super::TransactionKey;
use crate::sip::wire::{Message, Method, WireError};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, nothing heard (`Trying` for non-INVITE).
    Calling,
    Trying,
    Proceeding,
    /// A 2xx to an INVITE was received (RFC 6026): later 2xx still go up.
    Accepted,
    Completed,
    Terminated,
}

/// What the transaction user learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A response for the TU: provisionals, the final, and (INVITE, Accepted)
    /// retransmitted 2xx that the TU must ACK again.
    Response(Message),
    /// Timer B or F fired: no final response in 64·T1 (RFC 3261 §17.1.1.2:
    /// the TU treats it as 408).
    Timeout,
    /// The transport failed (§17.1.4): treated as 503.
    TransportError,
}

#[derive(Debug)]
pub struct ClientTransaction {
    key: TransactionKey,
    invite: bool,
    reliable: bool,
    timers: TimerConfig,
    state: ClientState,
    request: Message,
    ack: Option<Message>,
    interval: Duration,
    deadlines: Deadlines,
    transmits: VecDeque<Message>,
    events: VecDeque<ClientEvent>,
}

impl ClientTransaction {
    /// Start a transaction for `request` (which must carry a top Via with a
    /// branch, and a CSeq) and queue its first transmission.
    pub fn new(
        request: Message,
        reliable: bool,
        timers: TimerConfig,
        now: Instant,
    ) -> Result<Self, WireError> {
        let method = request.method().cloned().ok_or(WireError::BadStartLine {
            line: request.summary(),
            reason: "a client transaction starts from a request",
        })?;
        if method == Method::Ack {
            return Err(WireError::BadStartLine {
                line: request.summary(),
                reason: "ACK has no client transaction",
            });
        }
        let key = TransactionKey::for_request(&request)?;
        let key = TransactionKey {
            branch: key.branch,
            method: method.clone(),
        };
        let invite = method == Method::Invite;
        let mut tx = ClientTransaction {
            key,
            invite,
            reliable,
            timers,
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            request: request.clone(),
            ack: None,
            interval: timers.t1,
            deadlines: Deadlines::default(),
            transmits: VecDeque::from([request]),
            events: VecDeque::new(),
        };
        if !reliable {
            tx.deadlines
                .arm(if invite { Timer::A } else { Timer::E }, now + timers.t1);
        }
        tx.deadlines.arm(
            if invite { Timer::B } else { Timer::F },
            now + timers.t1x64(),
        );
        Ok(tx)
    }

    pub fn key(&self) -> &TransactionKey {
        &self.key
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn request(&self) -> &Message {
        &self.request
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }

    /// Feed a response whose key matched this transaction.
    pub fn handle_response(&mut self, resp: Message, now: Instant) {
        let Some(code) = resp.status() else { return };
        use ClientState::*;
        match (self.invite, self.state, code) {
            (_, Terminated, _) => {}
            (true, Calling | Proceeding, 100..=199) => {
                // §17.1.1.2: a provisional ends retransmission (Timer A) and,
                // since Timer B only fires "still in the Calling state", the
                // transaction timeout too: a callee may ring for minutes.
                self.state = Proceeding;
                self.deadlines.cancel(Timer::A);
                self.deadlines.cancel(Timer::B);
                self.events.push_back(ClientEvent::Response(resp));
            }
            (true, Calling | Proceeding | Accepted, 200..=299) => {
                // RFC 6026 §7.2: enter Accepted, pass every 2xx up for the TU to ACK.
                if self.state != Accepted {
                    self.state = Accepted;
                    self.deadlines.clear();
                    self.deadlines.arm(Timer::M, now + self.timers.t1x64());
                }
                self.events.push_back(ClientEvent::Response(resp));
            }
            (true, Calling | Proceeding, _) => {
                // §17.1.1.3: ACK a non-2xx final inside the transaction.
                let ack = build_ack_for_non_2xx(&self.request, &resp);
                self.transmits.push_back(ack.clone());
                self.ack = Some(ack);
                self.state = Completed;
                self.deadlines.clear();
                let wait = if self.reliable {
                    Duration::ZERO
                } else {
                    Duration::from_secs(32).max(self.timers.t1x64())
                };
                self.deadlines.arm(Timer::D, now + wait);
                self.events.push_back(ClientEvent::Response(resp));
            }
            (true, Completed, 300..=699) => {
                // A retransmitted final: ACK again, do not bother the TU.
                if let Some(ack) = &self.ack {
                    self.transmits.push_back(ack.clone());
                }
            }
            (false, Trying | Proceeding, 100..=199) => {
                self.state = Proceeding;
                self.events.push_back(ClientEvent::Response(resp));
            }
            (false, Trying | Proceeding, _) => {
                self.state = Completed;
                self.deadlines.clear();
                let wait = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                self.deadlines.arm(Timer::K, now + wait);
                self.events.push_back(ClientEvent::Response(resp));
            }
            _ => {}
        }
        self.settle(now);
    }

    /// Call when `poll_timeout()` has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.deadlines.pop_due(now) {
            match t {
                Timer::A => {
                    // §17.1.1.2: Timer A doubles on each retransmission, no cap.
                    self.transmits.push_back(self.request.clone());
                    self.interval *= 2;
                    self.deadlines.arm(Timer::A, now + self.interval);
                }
                Timer::E => {
                    // §17.1.2.2: E doubles up to T2 in Trying, stays at T2 in Proceeding.
                    self.transmits.push_back(self.request.clone());
                    self.interval = if self.state == ClientState::Proceeding {
                        self.timers.t2
                    } else {
                        (self.interval * 2).min(self.timers.t2)
                    };
                    self.deadlines.arm(Timer::E, now + self.interval);
                }
                Timer::B | Timer::F => {
                    self.events.push_back(ClientEvent::Timeout);
                    self.terminate();
                }
                Timer::D | Timer::K | Timer::M => self.terminate(),
                _ => {}
            }
        }
        self.settle(now);
    }

    /// The transport could not send (connection refused, TLS failure...).
    pub fn handle_transport_error(&mut self) {
        if self.state != ClientState::Terminated {
            self.events.push_back(ClientEvent::TransportError);
            self.terminate();
        }
    }

    /// The next message to send on this transaction's transport.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        crate::sip::pop_or_free(&mut self.transmits)
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        crate::sip::pop_or_free(&mut self.events)
    }

    /// When `handle_timeout` is next due; `None` once terminated.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.deadlines.clear();
    }

    /// Zero-length waits (reliable transports) end at once.
    fn settle(&mut self, now: Instant) {
        if self.deadlines.next().is_some_and(|d| d <= now) && self.state == ClientState::Completed {
            self.handle_timeout(now);
        }
    }
}

/// Headers a request's in-transaction companions (ACK, CANCEL) copy from it.
fn companion(request: &Message, method: Method) -> Message {
    let mut m = Message::request(method.clone(), request.request_uri().unwrap_or_default());
    if let Some(via) = request.headers.values("Via").next() {
        m.headers.push("Via", via);
    }
    for name in ["Route", "Max-Forwards", "From", "To", "Call-ID"] {
        for h in request.headers.0.iter().filter(|h| h.is(name)) {
            m.headers.push(h.name.clone(), h.value.clone());
        }
    }
    let seq = request.cseq().map(|c| c.seq).unwrap_or(1);
    m.headers.push("CSeq", format!("{seq} {method}"));
    m
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): the original
/// Request-URI, top Via, Route, From, Call-ID and CSeq number, and the To of
/// the response (with its tag).
pub fn build_ack_for_non_2xx(request: &Message, response: &Message) -> Message {
    let mut ack = companion(request, Method::Ack);
    if let Some(to) = response.headers.get("To") {
        ack.headers.set("To", to);
    }
    ack
}

/// The CANCEL for a pending INVITE (RFC 3261 §9.1). Send it in a non-INVITE
/// client transaction of its own, only after a provisional has arrived.
pub fn build_cancel(invite: &Message) -> Message {
    companion(invite, Method::Cancel)
}
