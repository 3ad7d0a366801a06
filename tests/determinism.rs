//! Same seed, same build → byte-identical traces and pcaps (SIP and
//! media), for every scenario of the suites; and a different seed gives
//! different identifiers.

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
    // What the progress bar counts on is what cucumber runs.
    assert_eq!(
        scenarios::certify::selected(&Options::default()),
        Ok(first.results.len())
    );
    assert_eq!(first.results.len(), second.results.len());
    for (a, b) in first.results.iter().zip(&second.results) {
        assert_eq!(a.name, b.name);
        let (ta, tb) = (
            a.trace.as_deref().unwrap_or_default(),
            b.trace.as_deref().unwrap_or_default(),
        );
        // A scenario may check that nothing is sent (a silent SBC, case
        // 9.13); every other must have a trace worth comparing.
        let silent = !ta.contains(" ms ");
        assert!(
            silent || ta.len() > 1000,
            "{}: trace too short to mean anything",
            a.name
        );
        assert!(
            ta == tb,
            "{}: traces differ between two runs with seed 1",
            a.name
        );
        // The pcap holds the media too: every packet's time and bytes.
        assert!(
            a.pcap == b.pcap,
            "{}: pcaps differ between two runs with seed 1",
            a.name
        );
    }
    let silent = first
        .results
        .iter()
        .filter(|r| !r.trace.as_deref().unwrap_or_default().contains(" ms "))
        .count();
    // Silent by design: an SBC that sends no OPTIONS, TLS refused before
    // any SIP. A broken recorder would make them all silent.
    assert!(
        silent * 4 < first.results.len(),
        "{silent} of {} scenarios sent no message at all",
        first.results.len()
    );
    let other = suite(2);
    for (a, c) in first.results.iter().zip(&other.results) {
        if !a.trace.as_deref().unwrap_or_default().contains(" ms ") {
            continue; // nothing was sent: nothing seeded to differ
        }
        assert_ne!(
            a.trace, c.trace,
            "{}: seed 2 gave the same trace as seed 1",
            a.name
        );
    }
}
