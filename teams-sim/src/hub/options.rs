//! SBC health: the SBC's OPTIONS, answered on its own connection, and the
//! hub's OPTIONS back to the SBC's Contact FQDN (behaviour §2, cases
//! 9.7–9.13).

use super::{shout, Proxy, Refusal, SbcStatus, HUB_AGENT, HUB_ALLOW};
use sbc::sip::transaction::{response_to, TransactionKey};
use sbc::sip::transport::{Network, Source, Target, TransportKind};
use sbc::sip::wire::{Message, Method};
use tokio::time::Instant;

/// The hub's OPTIONS loop toward one SBC.
pub(crate) struct Ping {
    pub next: Instant,
    pub port: u16,
    pub seq: u32,
    pub pending: Option<TransactionKey>,
}

impl<N: Network> Proxy<N> {
    pub(crate) fn identify_sbc(
        &self,
        request: &Message,
        source: &Source,
    ) -> Result<(String, Option<u16>), Refusal> {
        super::rules::identify_sbc(request, source, &self.config.tenant)
    }

    pub(crate) fn refuse(&mut self, key: &TransactionKey, request: &Message, refusal: Refusal) {
        let (code, reason) = refusal.status();
        let mut resp = response_to(request, code, reason, Some(&self.endpoint.rng.tag()));
        if refusal == Refusal::Requires100rel {
            resp.headers.push("Unsupported", "100rel");
        }
        self.view()
            .refusals
            .push((self.config.fqdn.clone(), refusal));
        self.respond(key, resp);
    }

    pub(crate) async fn on_options(
        &mut self,
        key: TransactionKey,
        request: Message,
        source: Source,
    ) {
        let (fqdn, port) = match self.identify_sbc(&request, &source) {
            Ok(id) => id,
            Err(refusal) => return self.refuse(&key, &request, refusal),
        };
        // §9.7: 200 on the same connection, no To-tag, the hub's Allow.
        let mut ok = response_to(&request, 200, "OK", None);
        ok.headers.push("Allow", HUB_ALLOW);
        self.respond(&key, ok);
        let mut view = self.view();
        if let Some(h) = view.sbcs.get_mut(&fqdn) {
            h.options_from_sbc += 1;
            if h.status == SbcStatus::NoOptions {
                h.status = SbcStatus::OptionsReceived;
            }
        }
        drop(view);
        // §9.12: the first OPTIONS starts the hub's own OPTIONS to the Contact FQDN.
        let default_port = self.config.tenant.sbc_port;
        self.pings.entry(fqdn).or_insert(Ping {
            next: Instant::now(),
            port: port.unwrap_or(default_port),
            seq: 0,
            pending: None,
        });
    }

    pub(crate) async fn ping_due(&mut self, now: Instant) {
        let due: Vec<String> = self
            .pings
            .iter()
            .filter(|(_, p)| p.next <= now)
            .map(|(f, _)| f.clone())
            .collect();
        for fqdn in due {
            let Some(ping) = self.pings.get_mut(&fqdn) else {
                continue;
            };
            ping.next = now + self.config.options_interval;
            ping.seq += 1;
            let (port, seq) = (ping.port, ping.seq);
            let mut m =
                Message::request(Method::Options, format!("sip:{fqdn}:{port};transport=tls"));
            m.headers.push(
                "From",
                format!(
                    "<sip:{}:5061>;tag={}",
                    self.config.internal_name,
                    self.endpoint.rng.tag()
                ),
            );
            m.headers.push("To", format!("<sip:{fqdn}>"));
            m.headers.push(
                "Call-ID",
                self.endpoint.rng.call_id(&self.config.internal_name),
            );
            m.headers.push("CSeq", format!("{seq} OPTIONS"));
            m.headers.push("Max-Forwards", "70");
            m.headers.push(
                "Contact",
                format!("<sip:{}:5061>", self.config.internal_name),
            );
            m.headers.push("User-Agent", HUB_AGENT);
            m.headers.push("Allow", HUB_ALLOW);
            shout(&mut m);
            let target = match self.net.resolve(&fqdn, port).await {
                Ok(addr) => Target {
                    transport: TransportKind::Tls,
                    addr,
                    server_name: Some(fqdn.clone()),
                },
                Err(e) => {
                    self.view()
                        .problems
                        .push(format!("{}: cannot resolve {fqdn}: {e}", self.config.fqdn));
                    continue;
                }
            };
            if let Ok(key) = self.endpoint.send_request(m, target) {
                if let Some(p) = self.pings.get_mut(&fqdn) {
                    p.pending = Some(key);
                }
            }
        }
    }

    /// The SBC a pending hub OPTIONS went to.
    fn ping_for(&self, key: &TransactionKey) -> Option<String> {
        self.pings
            .iter()
            .find(|(_, p)| p.pending.as_ref() == Some(key))
            .map(|(f, _)| f.clone())
    }

    /// A response to one of the hub's OPTIONS; `false` if the key is not a ping.
    pub(crate) fn on_ping_response(&mut self, key: &TransactionKey, response: &Message) -> bool {
        let Some(fqdn) = self.ping_for(key) else {
            return false;
        };
        let code = response.status().unwrap_or(0);
        if code < 200 {
            return true;
        }
        if let Some(p) = self.pings.get_mut(&fqdn) {
            p.pending = None;
        }
        let mut view = self.view();
        if (200..300).contains(&code) {
            if let Some(h) = view.sbcs.get_mut(&fqdn) {
                h.options_to_sbc_answered += 1;
                h.status = SbcStatus::Active;
            }
        } else {
            let line = format!(
                "{}: SBC {fqdn} answered OPTIONS with {code}",
                self.config.fqdn
            );
            view.problems.push(line);
        }
        true
    }

    /// A ping that failed (timeout, connection or TLS failure); `false` if not a ping.
    pub(crate) fn on_ping_failure(&mut self, key: &TransactionKey, why: &str) -> bool {
        let Some(fqdn) = self.ping_for(key) else {
            return false;
        };
        if let Some(p) = self.pings.get_mut(&fqdn) {
            p.pending = None;
        }
        let line = format!("{}: OPTIONS to SBC {fqdn} failed: {why}", self.config.fqdn);
        self.view().problems.push(line);
        true
    }
}
