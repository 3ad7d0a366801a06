//! `drlab bench`: calls through the whole simulated path (PSTN phone →
//! carrier → SBC → hub → Teams media processor and back) over a grid of
//! network impairments, with the figures carriers and Microsoft judge a
//! trunk by, per grid cell: ASR, NER, PDD (median, 95th), SIP
//! retransmissions, and at each receiving end the loss, jitter, one-way
//! delay, loss after the jitter buffer, R and MOS (ITU-T G.107).
//!
//! Each cell is its own seeded world: the same seed and build give the
//! same figures, byte for byte. Loss is Gilbert's per-packet model: on a
//! link that carries only signalling (the carrier's SIP between calls) a
//! burst lasts as many packets as any other, which may be seconds. Cells run on every core at once (a world
//! is one thread); results are ordered by cell, never by finishing time.

use crate::world::{Lab, LabConfig};
use carrier_sim::trunk::{CarrierCommand, PstnState};
use sbc::records::{CallRecord, Kpis};
use sbc::sip::transport::impair::{Jitter, Loss};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;
use teams_sim::hub::{CallState, SbcStatus};

/// One point of the grid, applied to the carrier ↔ SBC and SBC ↔ media
/// processor links in both directions (datagrams: SIP over UDP, RTP,
/// SRTP); latency also on the SBC ↔ hub TLS legs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    pub loss_pct: f64,
    pub jitter_ms: u64,
    /// One way, per link.
    pub latency_ms: u64,
    /// Loss in bursts (Gilbert–Elliott, mean burst 3 packets) instead of
    /// independent.
    pub bursty: bool,
}

/// The grid and how much to run in each cell.
#[derive(Debug, Clone)]
pub struct Plan {
    pub cells: Vec<Cell>,
    pub calls: usize,
    pub hold: Duration,
    pub seed: u64,
    /// The simulator's step (see [`LabConfig::tick`]): every arrival time
    /// is a multiple of it, so jitter finer than a tick is not seen. The
    /// default is the world's; 1 ms resolves more at several times the
    /// cost.
    pub tick: Duration,
}

fn grid(losses: &[f64], jitters: &[u64], latencies: &[u64]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &latency_ms in latencies {
        for &jitter_ms in jitters {
            for &loss_pct in losses {
                for bursty in [false, true] {
                    // Bursts of nothing are no different from none.
                    if bursty && loss_pct == 0.0 {
                        continue;
                    }
                    cells.push(Cell {
                        loss_pct,
                        jitter_ms,
                        latency_ms,
                        bursty,
                    });
                }
            }
        }
    }
    cells
}

impl Plan {
    /// The full grid of the issue: loss 0-10 %, jitter 0-60 ms, latency
    /// 20-150 ms, bursty on and off; 5 calls of 20 s per cell.
    pub fn full(seed: u64) -> Plan {
        Plan {
            cells: grid(
                &[0.0, 0.5, 1.0, 2.0, 5.0, 10.0],
                &[0, 10, 30, 60],
                &[20, 80, 150],
            ),
            calls: 5,
            hold: Duration::from_secs(20),
            seed,
            tick: LabConfig::default().tick,
        }
    }

    /// A small grid for a quick look: 8 cells, 2 calls of 8 s each.
    pub fn quick(seed: u64) -> Plan {
        Plan {
            cells: grid(&[0.0, 2.0, 5.0], &[0, 30], &[20])
                .into_iter()
                .filter(|c| c.jitter_ms == 0 || !c.bursty)
                .collect(),
            calls: 2,
            hold: Duration::from_secs(8),
            seed,
            tick: LabConfig::default().tick,
        }
    }
}

/// What one receiving end heard, averaged over the cell's calls.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Heard {
    pub loss_pct: f64,
    pub jitter_ms: f64,
    pub delay_ms: f64,
    pub effective_loss_pct: f64,
    pub r: f64,
    pub mos: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CellResult {
    pub cell: Cell,
    pub kpis: Kpis,
    /// SIP messages sent again, byte for byte (RFC 3261 §17 timers).
    pub retransmissions: u64,
    /// The Teams side (the media processor) and the PSTN phone.
    pub teams: Heard,
    pub pstn: Heard,
}

fn average(reports: &[sbc::records::Quality]) -> Heard {
    if reports.is_empty() {
        return Heard::default();
    }
    let n = reports.len() as f64;
    let mean = |f: &dyn Fn(&sbc::records::Quality) -> f64| reports.iter().map(f).sum::<f64>() / n;
    Heard {
        loss_pct: mean(&|q| q.loss_pct),
        jitter_ms: mean(&|q| q.jitter_ms),
        delay_ms: mean(&|q| q.delay_mean_ms.unwrap_or(0.0)),
        effective_loss_pct: mean(&|q| q.effective_loss_pct),
        r: mean(&|q| q.r_factor),
        mos: mean(&|q| q.mos),
    }
}

/// The world seed of the cell at `index`: each cell draws its own losses
/// (with one seed for all, every cell would lose the same packets, and a
/// rare run of losses would show in every cell alike), still fixed by the
/// plan's seed.
pub fn cell_seed(seed: u64, index: usize) -> u64 {
    sbc::sip::rng::fnv1a(format!("bench {seed} cell {index}").as_bytes())
}

/// Run one cell: a world, `calls` inbound calls one after another, each
/// answered, held for `hold` and hung up by the caller.
pub fn run_cell(cell: Cell, index: usize, plan: &Plan) -> Result<CellResult, String> {
    let config = LabConfig {
        seed: cell_seed(plan.seed, index),
        tick: plan.tick,
        ..LabConfig::default()
    };
    let mut lab = Lab::new(config).map_err(|e| e.to_string())?;
    let latency = Duration::from_millis(cell.latency_ms);
    for (a, b) in [
        ("the carrier", "the SBC"),
        ("the SBC", "the media processor"),
        ("the SBC", "the hub"),
    ] {
        lab.set_latency(a, b, latency).map_err(|e| e.to_string())?;
    }
    let loss = match (cell.loss_pct, cell.bursty) {
        (0.0, _) => Loss::None,
        (p, false) => Loss::Random(p / 100.0),
        (p, true) => Loss::bursts(p / 100.0, 3.0)?,
    };
    let jitter = match cell.jitter_ms {
        0 => Jitter::None,
        ms => Jitter::Uniform(Duration::from_millis(ms)),
    };
    for (a, b) in [
        ("the carrier", "the SBC"),
        ("the SBC", "the media processor"),
    ] {
        lab.impair(a, b, true, |m| {
            m.loss = loss;
            m.jitter = jitter;
        })
        .map_err(|e| e.to_string())?;
    }
    let fqdn = lab.config.sbc_fqdn.clone();
    let active = |l: &Lab| {
        l.hub
            .lock()
            .map(|h| {
                h.sbcs
                    .get(&fqdn)
                    .is_some_and(|s| s.status == SbcStatus::Active)
            })
            .unwrap_or(false)
    };
    lab.run_until(Duration::from_secs(70), active)
        .map_err(|e| e.to_string())?;
    let mut teams = Vec::new();
    for _ in 0..plan.calls {
        let before = lab.carrier.lock().map(|v| v.records.len()).unwrap_or(0);
        lab.carrier_commands
            .send(CarrierCommand::Call {
                from: "+4930123456".into(),
                to: "+4989000001".into(),
            })
            .map_err(|e| e.to_string())?;
        lab.run_for(Duration::from_millis(50))
            .map_err(|e| e.to_string())?;
        // Answered, or over (a failed call counts against ASR).
        let settled = |l: &Lab| {
            l.carrier.lock().is_ok_and(|v| {
                v.calls
                    .back()
                    .is_some_and(|c| matches!(c.state, PstnState::Answered | PstnState::Ended(_)))
            })
        };
        lab.run_until(Duration::from_secs(60), settled)
            .map_err(|e| e.to_string())?;
        let answered = lab.carrier.lock().is_ok_and(|v| {
            v.calls
                .back()
                .is_some_and(|c| c.state == PstnState::Answered)
        });
        if answered {
            lab.run_for(plan.hold).map_err(|e| e.to_string())?;
            // What the Teams side heard, before the call ends.
            let heard = lab.hub.lock().ok().and_then(|h| {
                let c = h.calls.back()?;
                (c.state == CallState::Answered).then(|| c.media.clone())
            });
            if let Some(q) = heard.and_then(|m| {
                m.lock()
                    .ok()
                    .and_then(|s| s.quality.as_ref().map(|q| q.report()))
            }) {
                teams.push(sbc::records::Quality::from(&q));
            }
            lab.carrier_commands
                .send(CarrierCommand::HangUp {
                    number: "+4930123456".into(),
                })
                .map_err(|e| e.to_string())?;
        }
        let recorded = |l: &Lab| l.carrier.lock().is_ok_and(|v| v.records.len() > before);
        lab.run_until(Duration::from_secs(60), recorded)
            .map_err(|e| e.to_string())?;
        // Let the last transactions finish before the next call.
        lab.run_for(Duration::from_secs(1))
            .map_err(|e| e.to_string())?;
    }
    let records: Vec<CallRecord> = lab
        .carrier
        .lock()
        .map(|v| v.records.iter().cloned().collect())
        .unwrap_or_default();
    let pstn: Vec<sbc::records::Quality> =
        records.iter().filter_map(|r| r.quality.clone()).collect();
    Ok(CellResult {
        cell,
        kpis: Kpis::of(&records),
        retransmissions: retransmissions(&lab),
        teams: average(&teams),
        pstn: average(&pstn),
    })
}

/// SIP messages sent again byte for byte between the same two hosts.
fn retransmissions(lab: &Lab) -> u64 {
    let mut seen = BTreeSet::new();
    let mut again = 0;
    for s in crate::steps::sent(lab) {
        let key = (s.from.clone(), s.to.clone(), sbc::sip::rng::fnv1a(&s.raw));
        if !seen.insert(key) {
            again += 1;
        }
    }
    again
}

/// Every cell of `plan`, on up to `workers` threads at once; `done` is
/// called as each finishes (for a progress bar). Results in cell order.
pub fn run(
    plan: &Plan,
    workers: usize,
    done: &(dyn Fn(&Cell) + Sync),
) -> Vec<Result<CellResult, String>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Result<CellResult, String>>>> =
        std::sync::Mutex::new(vec![None; plan.cells.len()]);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(cell) = plan.cells.get(i) else {
                    break;
                };
                let r = run_cell(*cell, i, plan);
                done(cell);
                if let Ok(mut all) = results.lock() {
                    all[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not run".into())))
        .collect()
}

const CSV_HEADER: &str = "loss_pct,bursty,jitter_ms,latency_ms,attempts,asr_pct,ner_pct,pdd_median_ms,pdd_p95_ms,sip_retransmissions,teams_loss_pct,teams_jitter_ms,teams_delay_ms,teams_loss_after_buffer_pct,teams_r,teams_mos,pstn_loss_pct,pstn_jitter_ms,pstn_delay_ms,pstn_loss_after_buffer_pct,pstn_r,pstn_mos";

/// The results as CSV (fixed decimals: the same run gives the same bytes).
pub fn csv(results: &[CellResult]) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    let ms = |x: Option<u64>| x.map_or(String::new(), |v| v.to_string());
    for r in results {
        let c = &r.cell;
        let _ = write!(
            out,
            "{:.1},{},{},{},{},{:.1},{:.1},{},{},{}",
            c.loss_pct,
            c.bursty,
            c.jitter_ms,
            c.latency_ms,
            r.kpis.attempts,
            r.kpis.asr,
            r.kpis.ner,
            ms(r.kpis.pdd_median_ms),
            ms(r.kpis.pdd_p95_ms),
            r.retransmissions
        );
        for h in [&r.teams, &r.pstn] {
            let _ = write!(
                out,
                ",{:.2},{:.2},{:.1},{:.2},{:.1},{:.2}",
                h.loss_pct, h.jitter_ms, h.delay_ms, h.effective_loss_pct, h.r, h.mos
            );
        }
        out.push('\n');
    }
    out
}

/// The results as a table for the terminal.
pub fn table(results: &[CellResult]) -> String {
    let mut out = String::from(
        "  loss  burst jitter latency | ASR %  NER %  PDD p50/p95 ms  retx | Teams: loss % jit ms  MOS | PSTN: loss % jit ms  MOS\n",
    );
    for r in results {
        let c = &r.cell;
        let pdd = match (r.kpis.pdd_median_ms, r.kpis.pdd_p95_ms) {
            (Some(a), Some(b)) => format!("{a}/{b}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:>5.1}% {:>5} {:>4} ms {:>4} ms | {:>5.1} {:>6.1} {:>14} {:>5} | {:>11.2} {:>6.1} {:>4.2} | {:>10.2} {:>6.1} {:>4.2}",
            c.loss_pct,
            if c.bursty { "yes" } else { "no" },
            c.jitter_ms,
            c.latency_ms,
            r.kpis.asr,
            r.kpis.ner,
            pdd,
            r.retransmissions,
            r.teams.effective_loss_pct,
            r.teams.jitter_ms,
            r.teams.mos,
            r.pstn.effective_loss_pct,
            r.pstn.jitter_ms,
            r.pstn.mos,
        );
    }
    out
}

/// One line per (jitter, latency, bursty) series: x and y of its points,
/// sorted by x.
type Series = Vec<(String, Vec<(f64, f64)>)>;

fn series(results: &[CellResult], y: &dyn Fn(&CellResult) -> Option<f64>) -> Series {
    let mut out: Series = Vec::new();
    for r in results {
        let c = &r.cell;
        let name = format!(
            "jitter {} ms, latency {} ms{}",
            c.jitter_ms,
            c.latency_ms,
            if c.bursty { ", bursty" } else { "" }
        );
        let Some(v) = y(r) else { continue };
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, pts)) => pts.push((c.loss_pct, v)),
            None => out.push((name, vec![(c.loss_pct, v)])),
        }
    }
    for (_, pts) in &mut out {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// An SVG line chart of `series` against loss, drawn with plotters.
fn chart(title: &str, y_label: &str, y_range: (f64, f64), data: &Series) -> Result<String, String> {
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let x_max = data
            .iter()
            .flat_map(|(_, p)| p.iter().map(|x| x.0))
            .fold(1.0f64, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max * 1.05, y_range.0..y_range.1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("packet loss, %")
            .y_desc(y_label)
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (name, points)) in data.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// The two plots: MOS (at the Teams side) against loss per series, and
/// PDD (median) against loss.
pub fn plots(results: &[CellResult]) -> Result<Vec<(&'static str, String)>, String> {
    let mos = series(results, &|r| Some(r.teams.mos));
    let pdd = series(results, &|r| r.kpis.pdd_median_ms.map(|v| v as f64));
    let pdd_max = pdd
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(100.0f64, f64::max);
    Ok(vec![
        (
            "mos_vs_loss.svg",
            chart(
                "MOS at the Teams side vs loss (G.711, E-model)",
                "MOS",
                (1.0, 4.5),
                &mos,
            )?,
        ),
        (
            "pdd_vs_loss.svg",
            chart(
                "Post-dial delay (median) vs loss",
                "PDD, ms",
                (0.0, pdd_max * 1.1),
                &pdd,
            )?,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grids_are_what_the_docs_say() {
        // 6 losses × 4 jitters × 3 latencies, bursty only where there is loss.
        assert_eq!(Plan::full(1).cells.len(), (6 + 5) * 4 * 3);
        assert_eq!(Plan::quick(1).cells.len(), 8);
    }
}
