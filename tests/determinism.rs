//! Same seed, same build → byte-identical traces, for every scenario of
//! the suites; and a different seed gives different identifiers.

use scenarios::certify::{run, Options, Report};

fn suite(seed: u64) -> Report {
    futures::executor::block_on(run(Options {
        seed,
        ..Options::default()
    }))
    .expect("suite runs")
}

#[test]
fn every_scenario_replays_byte_identical_from_its_seed() {
    let first = suite(1);
    let second = suite(1);
    assert!(!first.results.is_empty(), "no scenario ran");
    assert_eq!(first.results.len(), second.results.len());
    for (a, b) in first.results.iter().zip(&second.results) {
        assert_eq!(a.name, b.name);
        let (ta, tb) = (
            a.trace.as_deref().unwrap_or_default(),
            b.trace.as_deref().unwrap_or_default(),
        );
        assert!(
            ta.len() > 1000,
            "{}: trace too short to mean anything",
            a.name
        );
        assert!(
            ta == tb,
            "{}: traces differ between two runs with seed 1",
            a.name
        );
    }
    let other = suite(2);
    for (a, c) in first.results.iter().zip(&other.results) {
        assert_ne!(
            a.trace, c.trace,
            "{}: seed 2 gave the same trace as seed 1",
            a.name
        );
    }
}
