//! The certification suites (features/) against the reference SBC in
//! simulation: the same run as `drlab certify`. `harness = false`: turmoil
//! owns its runtime, so this is driven by a plain executor.

use scenarios::certify::{render, run, Options};

fn main() {
    let report = futures::executor::block_on(run(Options::default())).unwrap_or_else(|e| {
        eprintln!("certification: {e}");
        std::process::exit(2);
    });
    print!("\n{}", render(&report));
    if report.results.is_empty() {
        eprintln!("certification: no scenario ran");
        std::process::exit(1);
    }
    if report.failed() > 0 {
        std::process::exit(1);
    }
}
