//! Steps for impaired links (issue 11, item 1): loss at random or in
//! bursts, jitter, reordering, duplication and outages, set per link and
//! direction in Gherkin, and what the far ends' audio came to.
//!
//! Links are named as "the link between A and B" (both directions) or
//! "the link from A to B" (one), with the parties the other steps use:
//! the SBC, the hub, the carrier, the media processor, or a host name.

use crate::steps::{fail, last_media, lock, sent, DrlabWorld};
use cucumber::{given, then};
use sbc::sip::transport::impair::{Jitter, Loss};
use std::time::Duration;

type StepResult = Result<(), String>;

/// `between A and B` → (A, B, both ways); `from A to B` → (A, B, one way).
fn ends(text: &str) -> Result<(String, String, bool), String> {
    let split = |t: &str, sep: &str| {
        t.split_once(sep)
            .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
    };
    if let Some(rest) = text.strip_prefix("between ") {
        if let Some((a, b)) = split(rest, " and ") {
            return Ok((a, b, true));
        }
    }
    if let Some(rest) = text.strip_prefix("from ") {
        if let Some((a, b)) = split(rest, " to ") {
            return Ok((a, b, false));
        }
    }
    Err(format!(
        "{text:?}: name a link as `between <party> and <party>` or `from <party> to <party>`"
    ))
}

/// A percentage as a probability, refused outside 0–100.
fn share(percent: f64) -> Result<f64, String> {
    if (0.0..=100.0).contains(&percent) {
        Ok(percent / 100.0)
    } else {
        Err(format!("{percent} % is not a share of packets"))
    }
}

fn impair(
    w: &mut DrlabWorld,
    link: &str,
    change: impl Fn(&mut sbc::sip::transport::impair::Impairment),
) -> StepResult {
    let (a, b, both) = ends(link)?;
    w.lab()?
        .impair(&a, &b, both, change)
        .map_err(|e| e.to_string())
}

#[given(regex = r"^the link (between .+|from .+) loses (\d+(?:\.\d+)?) % of packets$")]
async fn loses(w: &mut DrlabWorld, link: String, percent: f64) -> StepResult {
    let p = share(percent)?;
    impair(w, &link, |m| m.loss = Loss::Random(p))
}

#[given(
    regex = r"^the link (between .+|from .+) loses (\d+(?:\.\d+)?) % of packets in bursts of (\d+(?:\.\d+)?)$"
)]
async fn loses_in_bursts(w: &mut DrlabWorld, link: String, percent: f64, burst: f64) -> StepResult {
    let loss = Loss::bursts(share(percent)?, burst)?;
    impair(w, &link, |m| m.loss = loss)
}

#[given(
    regex = r"^the link (between .+|from .+) has (\d+) ms of (?:(uniform|exponential) )?jitter$"
)]
async fn jitter(w: &mut DrlabWorld, link: String, ms: u64, shape: String) -> StepResult {
    let d = Duration::from_millis(ms);
    let jitter = match shape.as_str() {
        "exponential" => Jitter::Exponential(d),
        _ => Jitter::Uniform(d),
    };
    impair(w, &link, |m| m.jitter = jitter)
}

#[given(regex = r"^the link (between .+|from .+) duplicates (\d+(?:\.\d+)?) % of packets$")]
async fn duplicates(w: &mut DrlabWorld, link: String, percent: f64) -> StepResult {
    let p = share(percent)?;
    impair(w, &link, |m| m.duplicate = p)
}

#[given(
    regex = r"^the link (between .+|from .+) reorders (\d+(?:\.\d+)?) % of packets by (\d+) ms$"
)]
async fn reorders(w: &mut DrlabWorld, link: String, percent: f64, ms: u64) -> StepResult {
    let p = share(percent)?;
    impair(w, &link, |m| {
        m.reorder = p;
        m.reorder_by = Duration::from_millis(ms);
    })
}

/// World time, from the start of the scenario.
#[given(regex = r"^the link between (.+) and (.+) is down from (\d+) s to (\d+) s$")]
async fn down(w: &mut DrlabWorld, a: String, b: String, from: u64, to: u64) -> StepResult {
    w.lab()?
        .outage(&a, &b, Duration::from_secs(from), Duration::from_secs(to))
        .map_err(|e| e.to_string())
}

/// 20 s of audio at both far ends, once it flows (50 frames at each end
/// first, so the relay's release of packets held before its plan, up to
/// 64 at once, falls outside the window). Frames expected at a receiver
/// are those its sender numbered in the window, read from the highest
/// frame index the receiver saw (a longer link moves the window, not the
/// count); frames that arrived are counted once each, so duplicates
/// cannot hide a loss. Each side within its bounds, none corrupt or
/// failing SRTP.
fn audio_with_loss(w: &mut DrlabWorld, teams: (f64, f64), pstn: (f64, f64)) -> StepResult {
    let lab = w.lab()?;
    let Some((teams_stats, pstn_stats)) = last_media(lab) else {
        return fail(lab, "a call with media on both sides");
    };
    let (t, p) = (teams_stats.clone(), pstn_stats.clone());
    let (tw, pw) = (lock(&t).received + 50, lock(&p).received + 50);
    lab.run_until(Duration::from_secs(5), move |_| {
        lock(&t).received >= tw && lock(&p).received >= pw
    })
    .map_err(|e| e.to_string())?;
    let mark = |m: &drlab_sim::MediaStats| (m.distinct, m.highest_index.unwrap_or(0));
    let (t0, p0) = (mark(&lock(&teams_stats)), mark(&lock(&pstn_stats)));
    lab.run_for(Duration::from_secs(20))
        .map_err(|e| e.to_string())?;
    let (t, p) = (lock(&teams_stats).clone(), lock(&pstn_stats).clone());
    let sides = [
        ("Teams media processor", &t, t0, teams),
        ("PSTN phone", &p, p0, pstn),
    ];
    let seen: Vec<(String, bool)> = sides
        .iter()
        .map(|(side, s, (r0, i0), (low, high))| {
            let got = i64::from(s.distinct) - i64::from(*r0);
            let expected = (i64::from(s.highest_index.unwrap_or(0)) - i64::from(*i0)).max(1);
            let lost = ((expected - got).max(0) * 100) as f64 / expected as f64;
            let ok = s.corrupt == 0 && s.unprotect_errors == 0 && (*low..=*high).contains(&lost);
            (
                format!("{side}: {got} of {expected} frames, {lost:.1} % lost (wanted {low} to {high} %)"),
                ok,
            )
        })
        .collect();
    if seen.iter().all(|(_, ok)| *ok) {
        return Ok(());
    }
    let text: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    let links = lab.impairments.stats();
    fail(
        lab,
        format!(
            "audio within its loss bounds, none corrupt; {}; Teams side {t:?}; PSTN side {p:?}; links {links:?}",
            text.join("; ")
        ),
    )
}

#[then(
    regex = r"^over 20 s audio flows both ways with (\d+(?:\.\d+)?) to (\d+(?:\.\d+)?) % of frames lost$"
)]
async fn audio_both_ways(w: &mut DrlabWorld, low: f64, high: f64) -> StepResult {
    audio_with_loss(w, (low, high), (low, high))
}

#[then(
    regex = r"^over 20 s the PSTN phone loses (\d+(?:\.\d+)?) to (\d+(?:\.\d+)?) % of frames and the Teams side (\d+(?:\.\d+)?) to (\d+(?:\.\d+)?) %$"
)]
async fn audio_each_way(w: &mut DrlabWorld, pl: f64, ph: f64, tl: f64, th: f64) -> StepResult {
    audio_with_loss(w, (tl, th), (pl, ph))
}

/// A stream outage delays, it does not lose: the hub's first answer to the
/// SBC's INVITE leaves a proxy only once the link is back.
#[then(regex = r"^the hub answers the SBC's INVITE no earlier than (\d+) s$")]
async fn hub_answers_late(w: &mut DrlabWorld, secs: u64) -> StepResult {
    let lab = w.lab()?;
    let sbc = lab.config.sbc_fqdn.clone();
    let first = sent(lab).into_iter().find(|s| {
        s.from.contains("pstnhub.microsoft.com") && s.to == sbc && s.label().ends_with("(INVITE)")
    });
    match first {
        Some(s) if s.at_ms >= (secs * 1000) as f64 => Ok(()),
        Some(s) => fail(
            lab,
            format!(
                "the hub's first answer to the INVITE at {secs} s or later; it sent {} at {} ms",
                s.label(),
                s.at_ms
            ),
        ),
        None => fail(lab, "an answer from the hub to the SBC's INVITE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_named_both_ways_or_one_way() {
        assert_eq!(
            ends("between the carrier and the SBC"),
            Ok(("the carrier".into(), "the SBC".into(), true))
        );
        assert_eq!(
            ends("from the SBC to the media processor"),
            Ok(("the SBC".into(), "the media processor".into(), false))
        );
        assert!(ends("of the carrier").is_err());
        assert!(share(101.0).is_err());
        assert_eq!(share(2.5), Ok(0.025));
    }
}
