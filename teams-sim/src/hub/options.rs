//! SBC health: the SBC's OPTIONS, answered on its own connection, and the
//! hub's OPTIONS back to the SBC's Contact FQDN (behaviour §2, cases
//! 9.7–9.13); and how the hub refuses what it refuses.

use super::raw::RawMessage;
use super::{causes, Proxy, Refusal, SbcStatus, HUB_ALLOW, VIEW_HISTORY};
use sbc::sip::session::{Hop, RequestBuilder};
use sbc::sip::transaction::{response_to, TransactionKey};
use sbc::sip::transport::Source;
use sbc::sip::ua::UserAgent;
use sbc::sip::wire::{Message, Method};
use std::time::Instant;

/// The hub's OPTIONS loop toward one SBC.
pub(crate) struct Ping {
    pub next: Instant,
    pub port: u16,
    pub seq: u32,
    pub pending: Option<TransactionKey>,
}

impl Proxy {
    /// Note a refusal in the view (bounded history, total kept).
    pub(crate) fn record_refusal(&self, code: u16, refusal: &Refusal) {
        let fqdn = self.config.fqdn.clone();
        let mut v = self.view();
        v.refusals.push_back((fqdn, code, refusal.clone()));
        if v.refusals.len() > VIEW_HISTORY {
            v.refusals.pop_front();
        }
        v.refusals_total += 1;
    }

    /// How a refusal is answered: its status under the hub's policy, a
    /// Reason with the Q.850 cause and a fresh correlation id, ms-diagnostics
    /// with Microsoft's code where the docs give one (behaviour §3.2, §6),
    /// and the Unsupported list RFC 3261 §8.2.2.3 asks of a 420.
    pub(crate) fn refusal_reply(
        &self,
        ua: &mut UserAgent,
        refusal: &Refusal,
    ) -> (u16, &'static str, Vec<(String, String)>) {
        let policy = &self.config.refusals;
        let (code, phrase) = refusal.status_in(policy);
        let correlation = causes::correlation_id(ua.rng());
        let mut headers = vec![causes::q850_reason(
            refusal.q850(policy),
            &correlation,
            refusal.phrase(),
        )];
        if let Some(ms) = refusal.ms_code() {
            headers.push(causes::ms_diagnostics(
                ms,
                refusal.phrase(),
                &self.config.fqdn,
            ));
        }
        match refusal {
            Refusal::Requires100rel => headers.push(("Unsupported".into(), "100rel".into())),
            // RFC 3261 §20.33: delta-seconds.
            Refusal::Overloaded { retry_after } => {
                headers.push(("Retry-After".into(), retry_after.to_string()))
            }
            _ => {}
        }
        (code, phrase, headers)
    }

    fn refuse_out_of_dialog(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        key: &TransactionKey,
        refusal: Refusal,
    ) {
        let (code, reason, headers) = self.refusal_reply(ua, &refusal);
        ua.reply(now, key, code, reason, headers);
        self.record_refusal(code, &refusal);
    }

    pub(crate) fn on_options(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        key: TransactionKey,
        request: &Message,
        raw: &[u8],
        source: &Source,
    ) {
        let raw = match RawMessage::read(raw) {
            Ok(r) => r,
            Err(e) => {
                return self.refuse_out_of_dialog(
                    now,
                    ua,
                    &key,
                    Refusal::Unreadable { reason: e.0 },
                )
            }
        };
        let (fqdn, port) = match super::rules::identify_sbc(&raw, source, &self.config.tenant) {
            Ok(id) => id,
            Err(refusal) => return self.refuse_out_of_dialog(now, ua, &key, refusal),
        };
        // §9.7: 200 on the same connection, no To-tag, the hub's Allow.
        let mut ok = response_to(request, 200, "OK", None);
        ok.headers.push("Allow", HUB_ALLOW);
        ua.respond(now, &key, ok);
        self.heard.insert(fqdn.clone(), now);
        {
            let proxy = self.config.fqdn.clone();
            let warning = self.certificate_warning(&fqdn);
            let mut view = self.view();
            if let Some(h) = view.sbcs.get_mut(&fqdn) {
                h.options_from_sbc += 1;
                h.heard_by.insert(proxy, true);
                h.status = match h.status {
                    SbcStatus::NoOptions => SbcStatus::OptionsReceived,
                    // Back on the next OPTIONS.
                    SbcStatus::Demoted => SbcStatus::Active,
                    s => s,
                };
                if warning.is_some() {
                    h.certificate_warning = warning;
                }
            }
        }
        // §9.12: the first OPTIONS starts the hub's own OPTIONS to the Contact FQDN.
        let default_port = self.config.tenant.sbc_port;
        self.pings.entry(fqdn).or_insert(Ping {
            next: now,
            port: port.unwrap_or(default_port),
            seq: 0,
            pending: None,
        });
    }

    /// The dashboard's TLS warning for `fqdn`, if its certificate (as the
    /// TLS layer saw it) ends within the warning window.
    fn certificate_warning(&self, fqdn: &str) -> Option<String> {
        let notes = self.view().tls_notes.clone();
        let n = notes.lock().ok()?;
        n.expiring
            .iter()
            .rev()
            .find(|(names, _)| sbc::sip::transport::tls::names_cover(names, fqdn))
            .map(|(_, days)| format!("certificate expires in {days} days"))
    }

    /// An SBC this proxy has not heard for `demote_after`: it stops
    /// counting it as heard; when no proxy does, the SBC is demoted
    /// (behaviour §2: no OPTIONS to any proxy within five minutes).
    pub(crate) fn silence_due(&mut self, now: Instant) {
        let limit = self.config.demote_after;
        let silent: Vec<String> = self
            .heard
            .iter()
            .filter(|(_, t)| **t + limit <= now)
            .map(|(f, _)| f.clone())
            .collect();
        let proxy = self.config.fqdn.clone();
        for fqdn in silent {
            self.heard.remove(&fqdn);
            let mut view = self.view();
            if let Some(h) = view.sbcs.get_mut(&fqdn) {
                h.heard_by.insert(proxy.clone(), false);
                if !h.heard_by.values().any(|heard| *heard) {
                    h.status = SbcStatus::Demoted;
                }
            }
            drop(view);
            self.problem(
                "health",
                format!("no OPTIONS from {fqdn} for {}s", limit.as_secs()),
            );
        }
    }

    pub(crate) fn ping_due(&mut self, now: Instant, ua: &mut UserAgent) {
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
            let internal = self.config.internal_name.clone();
            let ruri = format!("sip:{fqdn}:{port};transport=tls");
            let m = RequestBuilder::new(
                Method::Options,
                ruri.clone(),
                format!("<sip:{internal}:5061>"),
                format!("<sip:{fqdn}>"),
            )
            .cseq(seq)
            .contact(format!("<sip:{internal}:5061>"))
            .header("Allow", HUB_ALLOW)
            .build(ua.rng(), &internal);
            match ua.send_request(now, m, Hop::Uri(ruri)) {
                Ok(key) => {
                    if let Some(p) = self.pings.get_mut(&fqdn) {
                        p.pending = Some(key);
                    }
                }
                Err(e) => self.problem("options", format!("OPTIONS to SBC {fqdn}: {e}")),
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

    /// A response to one of the hub's OPTIONS.
    pub(crate) fn on_ping_response(&mut self, key: &TransactionKey, response: &Message) {
        let Some(fqdn) = self.ping_for(key) else {
            return;
        };
        let code = response.status().unwrap_or(0);
        if code < 200 {
            return;
        }
        if let Some(p) = self.pings.get_mut(&fqdn) {
            p.pending = None;
        }
        if (200..300).contains(&code) {
            let mut view = self.view();
            if let Some(h) = view.sbcs.get_mut(&fqdn) {
                h.options_to_sbc_answered += 1;
                // A demoted SBC comes back on its own OPTIONS, not on ours.
                if h.status != SbcStatus::Demoted {
                    h.status = SbcStatus::Active;
                }
            }
        } else {
            self.problem(
                "options",
                format!("SBC {fqdn} answered OPTIONS with {code}"),
            );
        }
    }

    /// A ping that failed (timeout, connection or TLS failure).
    pub(crate) fn on_ping_failure(&mut self, key: &TransactionKey, why: &str) {
        let Some(fqdn) = self.ping_for(key) else {
            return;
        };
        if let Some(p) = self.pings.get_mut(&fqdn) {
            p.pending = None;
        }
        self.problem("options", format!("OPTIONS to SBC {fqdn} failed: {why}"));
    }
}
