//! The HTML report of a run (`report.html` in its run folder): one file,
//! no script and nothing fetched, so it opens from a CI artifact or a
//! mail. Per feature and scenario: passed or failed, the Gherkin steps,
//! what a failure expected, and an SVG ladder of the SIP messages whose
//! arrows open the full message below it.

use crate::certify::{Report, ScenarioResult};
use std::fmt::Write as _;

/// One SIP message of a scenario, for the ladder.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderMessage {
    pub at_ms: f64,
    pub from: String,
    pub to: String,
    /// The start line (`INVITE sip:...`, `SIP/2.0 200 OK`).
    pub summary: String,
    /// The whole message as sent (TLS legs decrypted).
    pub text: String,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COL: usize = 200;
const ROW: usize = 26;
const TOP: usize = 40;

/// A column's heading: the host's first label (`sip2`, `sbc`,
/// `carrier`), the full name on hover.
fn short(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

/// The ladder of one scenario as SVG: a column per host (in `order`
/// first, the world's order, then as they appear), an arrow per message
/// linking to `#<prefix>-m<i>`.
pub fn ladder_svg(prefix: &str, order: &[String], messages: &[LadderMessage]) -> String {
    let mut hosts: Vec<&str> = order
        .iter()
        .map(String::as_str)
        .filter(|h| messages.iter().any(|m| m.from == *h || m.to == *h))
        .collect();
    for m in messages {
        for h in [m.from.as_str(), m.to.as_str()] {
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
    }
    let x = |h: &str| hosts.iter().position(|x| *x == h).unwrap_or(0) * COL + COL / 2;
    let width = hosts.len().max(1) * COL;
    let height = TOP + messages.len() * ROW + 10;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"ladder\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\
<defs><marker id=\"{prefix}-head\" markerWidth=\"8\" markerHeight=\"8\" refX=\"8\" refY=\"4\" orient=\"auto\"><path d=\"M0,0 L8,4 L0,8 z\"/></marker></defs>"
    );
    for h in &hosts {
        let cx = x(h);
        let _ = write!(
            out,
            "<text x=\"{cx}\" y=\"16\" text-anchor=\"middle\" class=\"host\"><title>{}</title>{}</text>\
<line x1=\"{cx}\" y1=\"24\" x2=\"{cx}\" y2=\"{height}\" class=\"life\"/>",
            esc(h),
            esc(short(h))
        );
    }
    for (i, m) in messages.iter().enumerate() {
        let y = TOP + i * ROW;
        let (x1, x2) = (x(&m.from), x(&m.to));
        let label = m.summary.chars().take(40).collect::<String>();
        let class = if m.summary.starts_with("SIP/2.0 ") {
            "resp"
        } else {
            "req"
        };
        let _ = write!(
            out,
            "<a href=\"#{prefix}-m{i}\"><title>{:.0} ms {}</title>\
<line x1=\"{x1}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" class=\"{class}\" marker-end=\"url(#{prefix}-head)\"/>\
<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"label\">{}</text></a>",
            m.at_ms,
            esc(&m.summary),
            (x1 + x2) / 2,
            y - 4,
            esc(&label)
        );
    }
    out.push_str("</svg>");
    out
}

fn scenario_html(out: &mut String, n: usize, r: &ScenarioResult, report: &Report) {
    let prefix = format!("s{n}");
    let status = if r.passed { "pass" } else { "fail" };
    let _ = write!(
        out,
        "<details class=\"scenario {status}\" id=\"{prefix}\"{}><summary><span class=\"mark\">{}</span> {}</summary>",
        if r.passed { "" } else { " open" },
        if r.passed { "PASS" } else { "FAIL" },
        esc(&r.name)
    );
    if !r.tags.is_empty() {
        let tags: Vec<String> = r.tags.iter().map(|t| format!("@{}", esc(t))).collect();
        let _ = write!(out, "<p class=\"tags\">{}</p>", tags.join(" "));
    }
    out.push_str("<ol class=\"steps\">");
    for s in &r.steps {
        let _ = write!(out, "<li>{}</li>", esc(s));
    }
    out.push_str("</ol>");
    if let Some(f) = &r.failure {
        let _ = write!(
            out,
            "<h4>What went wrong</h4><pre class=\"failure\">{}</pre><p><code>{}</code></p>",
            esc(f),
            esc(&report.again(&r.name))
        );
    }
    if !r.messages.is_empty() {
        let _ = write!(
            out,
            "<h4>SIP ladder ({} messages; an arrow opens its message)</h4><div class=\"svgbox\">{}</div>",
            r.messages.len(),
            ladder_svg(&prefix, &r.hosts, &r.messages)
        );
        for (i, m) in r.messages.iter().enumerate() {
            let _ = write!(
                out,
                "<details class=\"msg\" id=\"{prefix}-m{i}\"><summary>{:.0} ms {} &rarr; {}: {}</summary><pre>{}</pre></details>",
                m.at_ms,
                esc(&m.from),
                esc(&m.to),
                esc(&m.summary),
                esc(&m.text)
            );
        }
    }
    out.push_str("</details>");
}

/// The whole report.
pub fn html(report: &Report) -> String {
    let mut features: Vec<&str> = Vec::new();
    for r in &report.results {
        if !features.contains(&r.feature.as_str()) {
            features.push(&r.feature);
        }
    }
    let mut out = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>drlab certify</title><style>\
body{font-family:system-ui,sans-serif;margin:2em;max-width:80em;color:#222}\
h1{font-size:1.5em}.summary{font-size:1.2em}\
.feature{margin-top:1.5em}.feature h2{font-size:1.15em;margin-bottom:.3em}\
details.scenario{border-left:4px solid #999;padding:.2em .8em;margin:.4em 0}\
details.pass{border-color:#2a7}details.fail{border-color:#c33;background:#fff6f6}\
.mark{font-weight:bold}.pass .mark{color:#2a7}.fail .mark{color:#c33}\
.tags{color:#666;font-size:.9em}.steps{font-family:monospace;font-size:.9em}\
pre{background:#f4f4f4;padding:.6em;overflow-x:auto;font-size:.85em}\
.svgbox{overflow-x:auto}svg.ladder{font-family:monospace;font-size:11px}\
.host{font-weight:bold}.life{stroke:#bbb;stroke-dasharray:3 3}\
.req{stroke:#246;stroke-width:1.5}.resp{stroke:#692;stroke-width:1.5}\
.label{fill:#222}a:hover .label{fill:#c33}details.msg summary{font-family:monospace;font-size:.85em}\
</style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>drlab certify</h1><p class=\"summary\">{} &middot; {} &middot; features <code>{}</code></p>",
        esc(&report.summary()),
        match report.real {
            true => "real sockets, wall clock".to_string(),
            false => format!("seed {}", report.seed),
        },
        esc(&report.features.display().to_string())
    );
    if !report.skipped.is_empty() {
        let _ = write!(
            out,
            "<details><summary>not run: {} scenario(s) need the simulated world \
             (only @external scenarios run against an SBC on real sockets)</summary><ul>",
            report.skipped.len()
        );
        for (feature, name) in &report.skipped {
            let _ = write!(out, "<li>{} / {}</li>", esc(feature), esc(name));
        }
        out.push_str("</ul></details>");
    }
    let mut n = 0;
    for f in features {
        let cases: Vec<&ScenarioResult> =
            report.results.iter().filter(|r| r.feature == f).collect();
        let failed = cases.iter().filter(|r| !r.passed).count();
        let _ = write!(
            out,
            "<section class=\"feature\"><h2>{} <small>({} passed, {failed} failed)</small></h2>",
            esc(f),
            cases.len() - failed
        );
        for r in cases {
            n += 1;
            scenario_html(&mut out, n, r, report);
        }
        out.push_str("</section>");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn msg(at: f64, from: &str, to: &str, summary: &str) -> LadderMessage {
        LadderMessage {
            at_ms: at,
            from: from.into(),
            to: to.into(),
            summary: summary.into(),
            text: format!("{summary}\r\nVia: x\r\n\r\n"),
        }
    }

    #[test]
    fn the_report_has_a_section_per_feature_a_ladder_and_the_messages() {
        let report = Report {
            seed: 1,
            skipped: vec![],
            real: false,
            sbc_shards: 1,
            features: PathBuf::from("/f"),
            results: vec![
                ScenarioResult {
                    tags: vec!["inbound".into()],
                    steps: vec!["Given x".into(), "Then y".into()],
                    hosts: vec!["carrier".into(), "sbc".into()],
                    messages: vec![
                        msg(10.0, "carrier", "sbc", "INVITE sip:1@sbc SIP/2.0"),
                        msg(20.0, "sbc", "carrier", "SIP/2.0 100 Trying"),
                    ],
                    ..ScenarioResult::outcome("Calls", "A <call>", None)
                },
                ScenarioResult::outcome("Refusals", "Refused", Some("expected 488 & got 200")),
            ],
        };
        let h = html(&report);
        assert!(h.starts_with("<!DOCTYPE html>"));
        // Self-contained: no script, and no URL but the SVG namespace.
        assert!(!h.contains("<script"));
        assert_eq!(
            h.matches("http").count(),
            h.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
        assert_eq!(h.matches("<section class=\"feature\">").count(), 2);
        assert_eq!(h.matches("<details class=\"scenario").count(), 2);
        // Two arrows, each linking to its message, which is there.
        assert_eq!(h.matches("marker-end=").count(), 2);
        assert!(h.contains("href=\"#s1-m1\"") && h.contains("id=\"s1-m1\""));
        // Text is escaped; a failure is open and says how to replay it.
        assert!(h.contains("A &lt;call&gt;") && h.contains("expected 488 &amp; got 200"));
        assert!(h.contains("class=\"scenario fail\" id=\"s2\" open"));
        assert!(h.contains("drlab -- replay"));
        assert!(h.contains("1 passed, 1 failed"));
    }
}
