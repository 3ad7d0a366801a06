//! Steps for impaired links (issue 11, item 1): loss at random or in
//! bursts, jitter, reordering, duplication and outages, set per link and
//! direction in Gherkin, and what the far ends' audio came to.
//!
//! Links are named as "the link between A and B" (both directions) or
//! "the link from A to B" (one), with the parties the other steps use:
//! the SBC, the hub, the carrier, the media processor, or a host name.

use crate::steps::{fail, last_media, lock, DrlabWorld};
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
    let p = share(percent)?;
    if burst < 1.0 {
        return Err(format!("bursts of {burst}: a burst is at least one packet"));
    }
    impair(w, &link, |m| m.loss = Loss::bursts(p, burst))
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

/// The next 20 s of audio at both far ends: frames received against the
/// 1,000 each side sends in that time (duplicates count as received, so
/// a link that only duplicates loses 0 %), each within its bounds.
fn audio_with_loss(w: &mut DrlabWorld, teams: (u32, u32), pstn: (u32, u32)) -> StepResult {
    const FRAMES: i64 = 1000;
    let lab = w.lab()?;
    let Some((teams_stats, pstn_stats)) = last_media(lab) else {
        return fail(lab, "a call with media on both sides");
    };
    let (t0, p0) = (lock(&teams_stats).received, lock(&pstn_stats).received);
    lab.run_for(Duration::from_secs(20))
        .map_err(|e| e.to_string())?;
    let (t, p) = (lock(&teams_stats).clone(), lock(&pstn_stats).clone());
    let sides = [
        ("Teams media processor", &t, t0, teams),
        ("PSTN phone", &p, p0, pstn),
    ];
    let seen: Vec<(String, bool)> = sides
        .iter()
        .map(|(side, s, base, (low, high))| {
            let got = i64::from(s.received) - i64::from(*base);
            let lost = ((FRAMES - got).max(0) * 100) as f64 / FRAMES as f64;
            let ok = s.corrupt == 0
                && s.unprotect_errors == 0
                && (f64::from(*low)..=f64::from(*high)).contains(&lost);
            (
                format!(
                    "{side}: {got} of {FRAMES} frames, {lost:.1} % lost (wanted {low} to {high} %)"
                ),
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

#[then(regex = r"^over 20 s audio flows both ways with (\d+) to (\d+) % of frames lost$")]
async fn audio_both_ways(w: &mut DrlabWorld, low: u32, high: u32) -> StepResult {
    audio_with_loss(w, (low, high), (low, high))
}

#[then(
    regex = r"^over 20 s the PSTN phone loses (\d+) to (\d+) % of frames and the Teams side (\d+) to (\d+) %$"
)]
async fn audio_each_way(w: &mut DrlabWorld, pl: u32, ph: u32, tl: u32, th: u32) -> StepResult {
    audio_with_loss(w, (tl, th), (pl, ph))
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
