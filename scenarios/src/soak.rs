//! `drlab soak`: many calls through one simulated world, one after
//! another, mixing what a trunk meets in a day (issue 14 item 7): calls
//! answered both ways, transfers, refusals by the PSTN and by Teams, a
//! number nobody has, all over a lossy carrier link. After the last call
//! every party must hold nothing (the check every scenario ends with), and
//! the process's memory is sampled as the calls go, to show that it stays
//! flat once the bounded histories (the views' last calls, the records)
//! are full.
//!
//! The trace recorders are off: a trace of 10,000 calls is no ladder, and
//! it would be the memory growth measured.

use crate::world::{Lab, LabConfig};
use carrier_sim::trunk::{CarrierCommand, Outcome, PhoneScript, PstnState};
use std::collections::BTreeMap;
use std::time::Duration;
use teams_sim::hub::{HubCommand, SbcStatus};

/// What one call of the mix does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// PSTN → Teams, answered, the caller hangs up.
    Inbound,
    /// Teams → PSTN, answered, the Teams user hangs up.
    Outbound,
    /// PSTN → Teams, answered, the Teams user transfers it to another
    /// Teams user (REFER to the SBC), who answers; the caller hangs up.
    Transfer,
    /// Teams → PSTN, the phone is busy (486, cause 17).
    PstnBusy,
    /// PSTN → Teams, the Teams user declines (603).
    TeamsDeclines,
    /// PSTN → a number no Teams user has (404 from the hub).
    NoSuchUser,
}

impl Kind {
    /// A call's kind from a draw in 0..100: the day's mix.
    fn of(draw: u64) -> Kind {
        match draw {
            0..=44 => Kind::Inbound,
            45..=64 => Kind::Outbound,
            65..=74 => Kind::Transfer,
            75..=84 => Kind::PstnBusy,
            85..=94 => Kind::TeamsDeclines,
            _ => Kind::NoSuchUser,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SoakPlan {
    pub calls: usize,
    pub seed: u64,
    /// Random loss on the carrier's link to the SBC, both ways.
    pub loss_pct: f64,
}

#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub calls: usize,
    pub by_kind: BTreeMap<Kind, usize>,
    /// Calls whose outcome was not the one their kind expects, with why.
    pub unexpected: Vec<String>,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// Resident memory (bytes) after each tenth of the calls, where the
    /// platform says (`/proc/self/statm`).
    pub rss: Vec<(usize, u64)>,
    /// What was still held when the world was given 70 s to let go.
    pub held: Option<String>,
}

const CALLER: &str = "+4930123456";
const ALICE: &str = "+4989000001";
const BOB: &str = "+4989000002";

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Resident memory of this process, in bytes.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn last_pstn(l: &Lab) -> Option<PstnState> {
    l.carrier
        .lock()
        .ok()
        .and_then(|v| v.calls.back().map(|c| c.state.clone()))
}

/// Run the soak; `progress` hears each call's number as it ends.
pub fn run(plan: &SoakPlan, mut progress: impl FnMut(usize)) -> Result<SoakReport, String> {
    let config = LabConfig {
        seed: plan.seed,
        trace: false,
        ..LabConfig::default()
    };
    let mut lab = Lab::new(config).map_err(err)?;
    if plan.loss_pct > 0.0 {
        let loss = sbc::sip::transport::impair::Loss::Random(plan.loss_pct / 100.0);
        lab.impair("the carrier", "the SBC", true, |m| m.loss = loss)
            .map_err(err)?;
    }
    let fqdn = lab.config.sbc_fqdn.clone();
    let active = |l: &Lab| {
        l.hub.lock().is_ok_and(|h| {
            h.sbcs
                .get(&fqdn)
                .is_some_and(|s| s.status == SbcStatus::Active)
        })
    };
    lab.run_until(Duration::from_secs(70), active)
        .map_err(err)?;
    let mut rng = sbc::sip::rng::SeededRng::new(plan.seed ^ 0x50a4);
    let mut report = SoakReport {
        calls: plan.calls,
        ..SoakReport::default()
    };
    let tenth = (plan.calls / 10).max(1);
    for i in 1..=plan.calls {
        let kind = Kind::of(rng.next_u64() % 100);
        *report.by_kind.entry(kind).or_default() += 1;
        if let Err(why) = one_call(&mut lab, kind) {
            report
                .unexpected
                .push(format!("call {i} ({kind:?}): {why}"));
        }
        if i % tenth == 0 {
            if let Some(rss) = rss_bytes() {
                report.rss.push((i, rss));
            }
        }
        progress(i);
    }
    lab.run_until(Duration::from_secs(70), |l| l.holdings().is_empty())
        .map_err(err)?;
    let held = lab.holdings();
    if !held.is_empty() {
        report.held = Some(held.to_string());
    }
    report.simulated = lab.sim.elapsed();
    Ok(report)
}

/// One call of `kind`, from its start until the carrier has recorded it
/// and a second has passed for the last transactions.
fn one_call(lab: &mut Lab, kind: Kind) -> Result<(), String> {
    // Records are drained after each call, as a `records` file writer
    // drains them: kept, they would be the memory growth measured.
    if let Ok(mut v) = lab.carrier.lock() {
        v.records.clear();
    }
    if let Some(view) = lab.sbc_view() {
        if let Ok(mut v) = view.lock() {
            v.records.clear();
        }
    }
    let outcome = if kind == Kind::PstnBusy {
        Outcome::Busy
    } else {
        Outcome::Answer
    };
    lab.carrier_commands
        .send(CarrierCommand::Script {
            number: CALLER.into(),
            script: PhoneScript {
                outcome,
                ..PhoneScript::default()
            },
        })
        .map_err(err)?;
    if kind == Kind::TeamsDeclines {
        lab.hub_commands
            .send(HubCommand::Refuses {
                user: "Alice".into(),
                status: Some(603),
            })
            .map_err(err)?;
    }
    // This call's entry in the carrier's view: the ones before it are over
    // already, and judging by them would pass anything.
    let calls_before = lab.carrier.lock().map(|v| v.calls_total).unwrap_or(0);
    let outbound = matches!(kind, Kind::Outbound | Kind::PstnBusy);
    if outbound {
        lab.hub_commands
            .send(HubCommand::Dial {
                user: "Alice".into(),
                number: CALLER.into(),
            })
            .map_err(err)?;
    } else {
        let to = if kind == Kind::NoSuchUser {
            "+4989099999"
        } else {
            ALICE
        };
        lab.carrier_commands
            .send(CarrierCommand::Call {
                from: CALLER.into(),
                to: to.into(),
            })
            .map_err(err)?;
    }
    lab.run_for(Duration::from_millis(50)).map_err(err)?;
    let settled = |l: &Lab| {
        l.carrier.lock().is_ok_and(|v| v.calls_total > calls_before)
            && matches!(
                last_pstn(l),
                Some(PstnState::Answered | PstnState::Ended(_))
            )
    };
    if !lab
        .run_until(Duration::from_secs(60), settled)
        .map_err(err)?
    {
        return Err(format!(
            "not answered nor ended in 60 s: {:?}",
            last_pstn(lab)
        ));
    }
    let state = last_pstn(lab);
    let answered = state == Some(PstnState::Answered);
    let expect_answer = matches!(kind, Kind::Inbound | Kind::Outbound | Kind::Transfer);
    let mut outcome = if answered == expect_answer {
        Ok(())
    } else {
        Err(format!("{state:?}"))
    };
    if answered {
        lab.run_for(Duration::from_secs(1)).map_err(err)?;
        if kind == Kind::Transfer {
            let done_before = lab.hub.lock().map(|h| h.transfers_total).unwrap_or(0);
            lab.hub_commands
                .send(HubCommand::Transfer {
                    user: "Alice".into(),
                    to: BOB.into(),
                })
                .map_err(err)?;
            let done = |l: &Lab| {
                l.hub.lock().is_ok_and(|h| {
                    h.transfers_total > done_before
                        && h.transfers.back().is_some_and(|t| t.outcome.is_some())
                })
            };
            if !lab.run_until(Duration::from_secs(30), done).map_err(err)? {
                return Err("the transfer did not finish in 30 s".into());
            }
            let result = lab
                .hub
                .lock()
                .ok()
                .and_then(|h| h.transfers.back().and_then(|t| t.outcome.clone()));
            if result != Some(Ok(())) && outcome.is_ok() {
                outcome = Err(format!("transfer {result:?}"));
            }
            lab.run_for(Duration::from_secs(1)).map_err(err)?;
        }
        if kind == Kind::Outbound {
            lab.hub_commands
                .send(HubCommand::HangUp {
                    user: "Alice".into(),
                })
                .map_err(err)?;
        } else {
            lab.carrier_commands
                .send(CarrierCommand::HangUp {
                    number: CALLER.into(),
                })
                .map_err(err)?;
        }
    }
    let recorded = |l: &Lab| l.carrier.lock().is_ok_and(|v| !v.records.is_empty());
    if !lab
        .run_until(Duration::from_secs(60), recorded)
        .map_err(err)?
    {
        return Err("no call record within 60 s".into());
    }
    if kind == Kind::TeamsDeclines {
        lab.hub_commands
            .send(HubCommand::Refuses {
                user: "Alice".into(),
                status: None,
            })
            .map_err(err)?;
    }
    // Let the last transactions finish before the next call.
    lab.run_for(Duration::from_secs(1)).map_err(err)?;
    outcome
}
