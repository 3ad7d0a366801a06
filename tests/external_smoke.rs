//! `drlab certify --target process --tags @external-smoke`: the reference
//! `sbc` binary as a process of its own, on real sockets and the wall
//! clock, judged by the lab's hub and carrier from what they receive
//! (issue 13). Keeps the real-socket mode of the suites working.

use scenarios::certify::{run, Options, Target};
use scenarios::world::real::RealLab;
use std::net::{IpAddr, Ipv4Addr};

/// The `sbc` binary cargo built for this test run (the workspace's
/// binaries sit beside the test's own `deps` folder).
fn sbc_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    dir.join(format!("sbc{}", std::env::consts::EXE_SUFFIX))
}

// One test: `run` sets the process-wide target and seed (as `drlab
// certify` does), so two runs at once would build each other's worlds.
#[test]
fn the_smoke_scenarios_pass_against_the_sbc_process() {
    a_real_lab_runs_only_external_scenarios_and_lists_the_others();
    let program = sbc_binary();
    assert!(
        program.is_file(),
        "no sbc binary at {} (cargo test --workspace builds it)",
        program.display()
    );
    let dir = std::env::temp_dir().join(format!("drlab-external-smoke-{}", std::process::id()));
    // A /24 of its own: other real-socket tests use 127.0.0.x, the load
    // lab 127.0.3.x, `drlab certify --target process` 127.0.4.x.
    let lab = RealLab {
        net: Ipv4Addr::new(127, 0, 5, 0),
        sbc_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 5, 10)),
        ..RealLab::loopback(dir.clone())
    };
    let report = futures::executor::block_on(run(Options {
        tags: Some("@external-smoke".into()),
        target: Target::Process { lab, program },
        ..Options::default()
    }))
    .expect("suite runs");
    let _ = std::fs::remove_dir_all(&dir);
    let failures: Vec<String> = report
        .results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{}: {}", r.name, r.failure.as_deref().unwrap_or_default()))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // OPTIONS/Active, a call each way with audio, one refusal.
    assert_eq!(
        report.results.len(),
        4,
        "{:?}",
        report.results.iter().map(|r| &r.name).collect::<Vec<_>>()
    );
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    // The SBC's messages are in the trace as its peers received them.
    let inbound = report
        .results
        .iter()
        .find(|r| r.name == "A PSTN caller reaches a Teams user")
        .and_then(|r| r.trace.clone())
        .unwrap_or_default();
    assert!(
        inbound.contains("TLS 127.0.5.10:") && inbound.contains("-> 127.0.5.1:5061"),
        "{inbound}"
    );
}

fn a_real_lab_runs_only_external_scenarios_and_lists_the_others() {
    // No SBC is started: the filters choose nothing runnable.
    let report = futures::executor::block_on(run(Options {
        name: Some("^An SBC that stops sending OPTIONS".into()),
        target: Target::Process {
            lab: RealLab::loopback(std::env::temp_dir()),
            program: sbc_binary(),
        },
        ..Options::default()
    }))
    .expect("suite runs");
    assert!(report.results.is_empty());
    assert_eq!(
        report.skipped,
        vec![(
            "SBC health monitoring with SIP OPTIONS".to_string(),
            "An SBC that stops sending OPTIONS is demoted after five minutes and comes back"
                .to_string()
        )]
    );
}
