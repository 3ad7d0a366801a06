//! The `drlab` command line as a user meets it: it never says "ok" when
//! something went wrong (a feature that does not parse, a step nobody
//! defined, an output it cannot write), each run gets its own folder, a
//! snapshot mismatch stays out of the source tree, and the replay line it
//! prints reproduces the identical trace from any working directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn drlab(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drlab"))
        .current_dir(cwd)
        .args(args)
        .env_remove("INSTA_UPDATE")
        .output()
        .expect("drlab runs")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("drlab-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const FAILING: &str = "Feature: A failing one

  Scenario: Tom's call is refused, which it is not
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When PSTN caller +4930123456 calls +4989000001
    Then the PSTN caller hears 486
";

#[test]
fn a_feature_that_does_not_parse_or_an_undefined_step_stops_the_run() {
    let d = scratch("parse");
    let f = d.join("features");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(f.join("good.feature"), FAILING).unwrap();
    std::fs::write(f.join("bad.feature"), "Feature: x\n  Scenario\n").unwrap();
    std::fs::write(
        f.join("odd.feature"),
        "Feature: y\n\n  Scenario: z\n    When the moon rises\n",
    )
    .unwrap();
    let out = drlab(&d, &["certify"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.feature: does not parse"), "{err}");
    assert!(
        err.contains("odd.feature:4: no step definition matches `When the moon rises`"),
        "{err}"
    );
    assert!(err.contains("nothing was run"), "{err}");
    assert!(!text(&out.stdout).contains("passed"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn no_features_folder_and_an_unwritable_output_are_errors() {
    let d = scratch("paths");
    // The default is ./features in the working directory.
    let out = drlab(&d, &["certify"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no features directory at features"));
    let f = d.join("features");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(f.join("one.feature"), FAILING).unwrap();
    std::fs::write(d.join("a-file"), "").unwrap();
    let out = drlab(&d, &["certify", "--out", "a-file/runs"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot write runs to a-file/runs"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_failure_replays_to_the_identical_trace_from_elsewhere_in_a_fresh_run_folder() {
    let d = scratch("replay");
    let f = d.join("features");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(f.join("one.feature"), FAILING).unwrap();
    let out = drlab(&d, &["certify", "--seed", "7"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("0 passed, 1 failed"));
    let replay = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("replay: "))
        .expect("a replay line")
        .to_string();
    let args = replay
        .strip_prefix("cargo run -p scenarios --bin drlab -- ")
        .expect("the replay runs drlab");
    // Run the same words through a shell, from another folder.
    let elsewhere = scratch("replay-elsewhere");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{} {args} --out runs", env!("CARGO_BIN_EXE_drlab")))
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(1), "{}", text(&status.stderr));
    assert!(text(&status.stdout).contains("0 passed, 1 failed"));
    let trace = "traces/tom_s_call_is_refused_which_it_is_not.txt";
    let report = std::fs::read_to_string(d.join("target/drlab/run-0001/report.html")).unwrap();
    assert!(
        report.contains("FAIL") && report.contains("<svg") && report.contains("drlab -- replay")
    );
    let first = std::fs::read(d.join("target/drlab/run-0001").join(trace)).unwrap();
    let again = std::fs::read(elsewhere.join("runs/run-0001").join(trace)).unwrap();
    assert_eq!(first, again, "the replay's trace is byte-identical");
    // A second run gets a folder of its own; `latest` follows.
    drlab(&d, &["certify", "--seed", "7"]);
    assert!(d.join("target/drlab/run-0002").join(trace).exists());
    assert_eq!(
        std::fs::read_link(d.join("target/drlab/latest")).unwrap(),
        PathBuf::from("run-0002")
    );
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_dir_all(&elsewhere);
}

#[test]
fn a_snapshot_mismatch_goes_under_the_run_folder_not_the_source_tree() {
    let d = scratch("snap");
    let f = d.join("features");
    std::fs::create_dir_all(&f).unwrap();
    // The name of a scenario with a committed snapshot; a different story.
    std::fs::write(
        f.join("snap.feature"),
        "Feature: s\n\n  Scenario: A PSTN caller reaches a Teams user\n    Given the SBC is registered in the tenant as sbc.example.com\n    Then the trace matches its snapshot\n",
    )
    .unwrap();
    let out = drlab(&d, &["certify"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("first difference"), "{stdout}");
    assert!(
        stdout.lines().count() < 80,
        "a short diff, not the whole trace"
    );
    let new = d.join("target/drlab/run-0001/snapshots/a_pstn_caller_reaches_a_teams_user.snap.new");
    assert!(new.exists(), "{stdout}");
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/snapshots/a_pstn_caller_reaches_a_teams_user.snap.new");
    assert!(!source.exists(), "nothing written into the source tree");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_seed_sweep_reports_each_seed_and_the_first_failures_replay() {
    let d = scratch("seeds");
    let f = d.join("features");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(f.join("one.feature"), FAILING).unwrap();
    let out = drlab(&d, &["certify", "--seeds", "3"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for seed in 1..=3 {
        // Each seed's line says what it did to the links.
        let links = scenarios::world::LinkProfile::for_seed(seed);
        assert!(
            stdout.contains(&format!("seed {seed} ({links}): 0 passed, 1 failed")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("seed 1 (latency ×1.000, jitter up to 0 ms)"));
    assert!(stdout.contains("3 seeds: 0 passed, 3 failed"), "{stdout}");
    assert!(
        stdout.contains("first failure: cargo run -p scenarios --bin drlab -- replay"),
        "{stdout}"
    );
    assert!(d
        .join("target/drlab/run-0001/seed-2/run-0001/junit.xml")
        .exists());
    let out = drlab(&d, &["certify", "--seeds", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&d);
}
