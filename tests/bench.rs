//! `drlab bench` on a two-cell grid: the same seed gives the same CSV byte
//! for byte (issue 11: "the same seed gives the same figures"), a cell
//! with loss scores below the clean one, and the plots are SVG.

use scenarios::bench::{self, Cell, Plan};
use std::time::Duration;

fn plan(seed: u64) -> Plan {
    let cell = |loss_pct| Cell {
        loss_pct,
        jitter_ms: 0,
        latency_ms: 20,
        bursty: false,
    };
    Plan {
        cells: vec![cell(0.0), cell(5.0)],
        calls: 1,
        hold: Duration::from_secs(5),
        seed,
        tick: scenarios::world::LabConfig::default().tick,
    }
}

fn results(p: &Plan) -> Vec<bench::CellResult> {
    bench::run(p, 2, &|_| {})
        .into_iter()
        .map(|r| r.expect("cell ran"))
        .collect()
}

#[test]
fn a_bench_is_reproducible_and_loss_costs_mos() {
    let first = results(&plan(3));
    let again = results(&plan(3));
    assert_eq!(bench::csv(&first), bench::csv(&again));
    let (clean, lossy) = (&first[0], &first[1]);
    assert_eq!(
        (clean.kpis.attempts, clean.kpis.answered),
        (1, 1),
        "{clean:?}"
    );
    assert!(clean.teams.mos > 4.3 && clean.pstn.mos > 4.3, "{clean:?}");
    assert!(
        lossy.teams.effective_loss_pct > 5.0,
        "two lossy links: {lossy:?}"
    );
    assert!(lossy.teams.mos < clean.teams.mos - 0.3, "{lossy:?}");
    let csv = bench::csv(&first);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    for (name, svg) in bench::plots(&first).unwrap() {
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{name}");
    }
}
