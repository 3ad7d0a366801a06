//! The reference SBC on three SIP cores (`sbc --shards 3`) in the
//! simulated world: the suites where work crosses cores pass as they do
//! on one, and the same seed replays them byte for byte.
//!
//! What crosses cores, and the scenarios that show it:
//! - transfers: the hub's INVITE with Replaces and the carrier's call
//!   back to a Refer-To token go to the core of the dialog they name, and
//!   the rest of their dialog follows (`@transfer`);
//! - the health OPTIONS find (one core sends them) and a proxy's 503 with
//!   Retry-After, which every core honours (`@failover`, `@health`);
//! - the registration trunk (one core registers, every core answers the
//!   carrier's INVITE challenges) and gateway health (`@trunk`);
//! - `max_calls`, counted over all cores (`@security`).
//!
//! Traces are not compared with the snapshots (each core draws its own
//! Call-IDs); the one-core suite does that (tests/certification.rs).

use scenarios::certify::{run, Options, Report};

const SELECTION: &str = "@transfer or @failover or @health or @trunk or @security";

fn suite() -> Report {
    futures::executor::block_on(run(Options {
        tags: Some(SELECTION.into()),
        sbc_shards: 3,
        ..Options::default()
    }))
    .expect("the selection runs")
}

#[test]
fn the_suites_pass_on_three_cores_and_replay_from_their_seed() {
    let first = suite();
    let failed: Vec<&str> = (first.results.iter())
        .filter(|r| !r.passed)
        .map(|r| r.name.as_str())
        .collect();
    assert!(failed.is_empty(), "failed on three cores: {failed:?}");
    assert!(
        first.results.len() >= 40,
        "only {} ran",
        first.results.len()
    );
    let second = suite();
    assert_eq!(first.results.len(), second.results.len());
    for (a, b) in first.results.iter().zip(&second.results) {
        assert!(
            a.trace == b.trace && a.pcap == b.pcap,
            "{}: two runs with seed 1 differ",
            a.name
        );
    }
}
