//! `drlab`: certify an SBC against the simulated Teams Direct Routing hub.

use clap::{Parser, Subcommand};
use scenarios::certify::{new_run_dir, render, run, validate, write_outputs, Options, Target};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "drlab",
    version,
    about = "An offline lab for Microsoft Teams Direct Routing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the certification suites: against the built-in reference SBC
    /// in simulation (the default), or on real sockets against the `sbc`
    /// binary (`--target process`) or your own SBC (`--target external`).
    Certify {
        /// Only scenarios whose name matches this regular expression.
        #[arg(long, short = 'n')]
        name: Option<String>,
        /// Only scenarios matching this tag expression, e.g. `@inbound and not @slow`.
        #[arg(long, short = 't')]
        tags: Option<String>,
        /// The world seed: the same seed and build replay the same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where the suites are (`features` in the working directory: run
        /// from the repository's root, or name the folder).
        #[arg(long, default_value = "features")]
        features: PathBuf,
        /// Run the selection under seeds 1..=N (each its own world: other
        /// Call-IDs, tags, keys, SSRCs, fork order), several at once, and
        /// report which seeds fail with the first failure's replay line.
        #[arg(long, conflicts_with = "seed")]
        seeds: Option<u64>,
        /// Where runs go: each run writes junit.xml, traces/<scenario>.txt|.pcap
        /// and any snapshot mismatch into a fresh run-NNNN folder here
        /// (`latest` points at the newest).
        #[arg(long, default_value = "target/drlab")]
        out: PathBuf,
        /// `sim`: the reference SBC in the simulated world; `process`: the
        /// `sbc` binary on 127.0.4.x; `external`: the SBC `--lab` names.
        /// Real-socket targets run the @external scenarios only.
        #[arg(long, default_value = "sim", value_parser = ["sim", "process", "external"])]
        target: String,
        /// The lab file of `--target external` (docs/external-sbc.md).
        #[arg(long)]
        lab: Option<PathBuf>,
        /// The `sbc` binary of `--target process` (default: beside drlab).
        #[arg(long)]
        sbc_bin: Option<PathBuf>,
        /// The reference SBC's SIP cores in the simulated world (`sbc
        /// --shards`): calls spread over them by Call-ID. Traces are then
        /// checked for form, not against their snapshots.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        sbc_shards: u16,
    },
    /// Run one scenario again with a seed: the identical trace, written
    /// out (ladder, pcap) in a fresh run folder. `certify` prints this
    /// command for every failure.
    Replay {
        /// The scenario's name, exactly.
        #[arg(long)]
        scenario: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "features")]
        features: PathBuf,
        #[arg(long, default_value = "target/drlab")]
        out: PathBuf,
        /// The reference SBC's SIP cores (as `certify --sbc-shards`).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        sbc_shards: u16,
    },
    /// Calls through the simulated path over a grid of loss, jitter and
    /// latency: ASR, NER, PDD, retransmissions, loss, jitter, delay, R and
    /// MOS per cell, as a table, CSV and SVG plots.
    Bench {
        /// A small grid (8 cells, 2 calls each) instead of the full one.
        #[arg(long)]
        quick: bool,
        /// The world seed: the same seed and build give the same figures.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Calls per cell (default: 5, or 2 with --quick).
        #[arg(long)]
        calls: Option<usize>,
        /// The simulator's step in ms, 1 to 10 (default: the world's, 5):
        /// every arrival time is a multiple of it, so jitter finer than a
        /// tick is not seen; 1 ms resolves it at about twice the time
        /// of 2 ms, and 2 ms at about 2.4 times that of 5 ms.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10))]
        tick_ms: Option<u64>,
        /// Where the CSV and plots go.
        #[arg(long, default_value = "target/drlab/bench")]
        out: PathBuf,
    },
    /// Many calls through one simulated world, one after another: calls
    /// both ways, transfers, refusals, a number nobody has, over a lossy
    /// carrier link; then the check that nobody holds anything, and the
    /// memory sampled as it went.
    Soak {
        /// How many calls.
        #[arg(long, default_value_t = 10_000)]
        calls: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Random loss on the carrier's link, both ways, in percent.
        #[arg(long, default_value_t = 1.0)]
        loss: f64,
    },
    /// List the features and scenarios, with their tags.
    List {
        #[arg(long, default_value = "features")]
        features: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Certify {
            name,
            tags,
            seed: _,
            seeds: Some(n),
            features,
            out,
            target,
            sbc_shards,
            ..
        } if target == "sim" => sweep(n, name, tags, &features, &out, sbc_shards),
        Command::Certify { seeds: Some(_), .. } => {
            eprintln!("drlab: --seeds sweeps the simulated world only (--target sim)");
            ExitCode::from(2)
        }
        Command::Certify {
            sbc_shards, target, ..
        } if sbc_shards > 1 && target != "sim" => {
            eprintln!(
                "drlab: --sbc-shards sets the reference SBC in the simulated world (--target sim); a real SBC's cores are its own (`sbc --shards`)"
            );
            ExitCode::from(2)
        }
        Command::Certify {
            name,
            tags,
            seed,
            seeds: None,
            features,
            out,
            target,
            lab,
            sbc_bin,
            sbc_shards,
        } => {
            let target = match target_of(&target, lab, sbc_bin, &out) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("drlab: {e}");
                    return ExitCode::from(2);
                }
            };
            certify(
                Options {
                    target,
                    features,
                    name,
                    tags,
                    seed,
                    progress: std::io::stdout().is_terminal(),
                    sbc_shards: sbc_shards.into(),
                },
                &out,
            )
        }
        Command::Replay {
            scenario,
            seed,
            features,
            out,
            sbc_shards,
        } => {
            let opts = Options {
                features,
                name: Some(scenarios::certify::exact_name(&scenario)),
                tags: None,
                seed,
                progress: false,
                target: Default::default(),
                sbc_shards: sbc_shards.into(),
            };
            let code = certify(opts, &out);
            let trace = out
                .join("latest/traces")
                .join(format!("{}.txt", scenarios::certify::slug(&scenario)));
            if trace.exists() {
                println!("the trace: {}", trace.display());
            }
            code
        }
        Command::Bench {
            quick,
            seed,
            calls,
            tick_ms,
            out,
        } => bench(quick, seed, calls, tick_ms, &out),
        Command::Soak { calls, seed, loss } => soak(calls, seed, loss),
        Command::List { features } => match scenarios::certify::list(&features) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("drlab: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// Run the suites `opts` selects, write the run folder under `out`: exit
/// 0 all passed, 1 a scenario failed, 2 the run could not be made.
/// Everything that can go wrong before a run, said before it starts: the
/// options, the features (all problems, file:line), the run folder (an
/// output that cannot be written is found before minutes of simulation,
/// not after). The fresh run folder, or the message already printed.
fn prepare(opts: &Options, out: &std::path::Path) -> Result<std::path::PathBuf, ()> {
    if let Err(e) = validate(opts) {
        eprintln!("drlab: {e}");
        return Err(());
    }
    if let Err(errors) = scenarios::certify::preflight(&opts.features) {
        for e in &errors {
            eprintln!("drlab: {e}");
        }
        eprintln!(
            "drlab: {} problem(s) in the features; nothing was run",
            errors.len()
        );
        return Err(());
    }
    new_run_dir(out).map_err(|e| {
        eprintln!("drlab: cannot write runs to {}: {e}", out.display());
    })
}

/// The SBC `--target` names, with what it needs.
fn target_of(
    target: &str,
    lab: Option<PathBuf>,
    sbc_bin: Option<PathBuf>,
    out: &std::path::Path,
) -> Result<Target, String> {
    match target {
        "sim" => {
            if lab.is_some() || sbc_bin.is_some() {
                return Err("--lab and --sbc-bin go with --target process or external".into());
            }
            Ok(Target::Sim)
        }
        "process" => {
            let program = match sbc_bin {
                Some(p) => p,
                None => std::env::current_exe()
                    .map_err(|e| format!("cannot find drlab's own path: {e}"))?
                    .with_file_name(format!("sbc{}", std::env::consts::EXE_SUFFIX)),
            };
            if !program.is_file() {
                return Err(format!(
                    "no sbc binary at {}: build it (cargo build -p sbc) or name it with --sbc-bin",
                    program.display()
                ));
            }
            let lab = match lab {
                Some(file) => scenarios::world::real::load_lab(&file)?.0,
                None => scenarios::world::real::RealLab::loopback(out.join("lab")),
            };
            Ok(Target::Process { lab, program })
        }
        _ => {
            let file = lab.ok_or("--target external needs --lab <file> (docs/external-sbc.md)")?;
            if sbc_bin.is_some() {
                return Err("--sbc-bin goes with --target process".into());
            }
            let (lab, fqdn) = scenarios::world::real::load_lab(&file)?;
            Ok(Target::External { lab, fqdn })
        }
    }
}

fn certify(opts: Options, out: &std::path::Path) -> ExitCode {
    let Ok(run_dir) = prepare(&opts, out) else {
        return ExitCode::from(2);
    };
    *scenarios::steps::RUN_DIR
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(run_dir.clone());
    // Wall time for the speed line only: nothing simulated reads it.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let report = match futures::executor::block_on(run(opts)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("drlab: {e}");
            return ExitCode::from(2);
        }
    };
    let wall = started.elapsed();
    if report.seed != 1 {
        // What this seed did to the links (seed 1 is the reference world).
        println!(
            "\nseed {}: {}",
            report.seed,
            scenarios::world::LinkProfile::for_seed(report.seed)
        );
    }
    print!("\n{}", render(&report));
    let simulated = report.simulated();
    if report.real {
        println!("real sockets: {:.0} s", wall.as_secs_f64());
    } else {
        println!(
            "{:.0} s simulated in {:.1} s: {:.0} times real time",
            simulated.as_secs_f64(),
            wall.as_secs_f64(),
            simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9)
        );
    }
    match write_outputs(&report, &run_dir) {
        Ok(files) => println!(
            "report.html, junit.xml and {} trace files (ladders, pcaps) in {}",
            files.len() - 2,
            run_dir.display()
        ),
        Err(e) => {
            eprintln!("drlab: cannot write to {}: {e}", run_dir.display());
            return ExitCode::from(2);
        }
    }
    if report.results.is_empty() {
        eprintln!("drlab: no scenario matched the filters");
        return ExitCode::from(2);
    }
    if report.failed() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `--seeds N`: the selection under each seed, as separate `drlab
/// certify` processes (a world is one thread; several run at once on the
/// machine's cores), each writing its own run folder under this run's.
fn sweep(
    n: u64,
    name: Option<String>,
    tags: Option<String>,
    features: &std::path::Path,
    out: &std::path::Path,
    sbc_shards: u16,
) -> ExitCode {
    if n == 0 {
        eprintln!("drlab: --seeds must be at least 1");
        return ExitCode::from(2);
    }
    let opts = Options {
        features: features.to_path_buf(),
        name: name.clone(),
        tags: tags.clone(),
        seed: 1,
        progress: false,
        target: Target::Sim,
        sbc_shards: sbc_shards.into(),
    };
    let Ok(run_dir) = prepare(&opts, out) else {
        return ExitCode::from(2);
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("drlab: cannot find my own program: {e}");
            return ExitCode::from(2);
        }
    };
    let width = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut results: Vec<(u64, Option<i32>, String)> = Vec::new();
    let seeds: Vec<u64> = (1..=n).collect();
    // On a terminal, a bar over the seeds; the seeds' lines print above it.
    let bar = std::io::stdout()
        .is_terminal()
        .then(|| scenarios::certify::progress_bar(seeds.len(), "seeds"));
    for batch in seeds.chunks(width) {
        if let Some(b) = &bar {
            let (first, last) = (batch[0], batch[batch.len() - 1]);
            b.set_message(format!("running seeds {first}..={last}"));
        }
        let children: Vec<(u64, std::io::Result<std::process::Child>)> = batch
            .iter()
            .map(|&seed| {
                let mut c = std::process::Command::new(&exe);
                c.arg("certify")
                    .arg("--seed")
                    .arg(seed.to_string())
                    .arg("--features")
                    .arg(features)
                    .arg("--out")
                    .arg(run_dir.join(format!("seed-{seed}")))
                    .arg("--sbc-shards")
                    .arg(sbc_shards.to_string())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                if let Some(n) = &name {
                    c.arg("--name").arg(n);
                }
                if let Some(t) = &tags {
                    c.arg("--tags").arg(t);
                }
                (seed, c.spawn())
            })
            .collect();
        for (seed, child) in children {
            let (code, stdout, stderr) = match child.and_then(|c| c.wait_with_output()) {
                Ok(o) => (
                    o.status.code(),
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                ),
                Err(e) => (None, String::new(), format!("could not run: {e}")),
            };
            // The run's closing line, or why there is none (what the child
            // said last on standard error, e.g. a feature that does not
            // parse: the run could not be made).
            let summary = stdout
                .lines()
                .rev()
                .find(|l| l.ends_with(" failed"))
                .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
                .map_or_else(|| format!("no result (exit {code:?})"), str::to_string);
            let links = scenarios::world::LinkProfile::for_seed(seed);
            let line = format!("seed {seed} ({links}): {summary}");
            match &bar {
                Some(b) => {
                    b.println(line);
                    b.inc(1);
                }
                None => println!("{line}"),
            }
            results.push((seed, code, stdout));
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let failing: Vec<&(u64, Option<i32>, String)> =
        results.iter().filter(|(_, c, _)| *c != Some(0)).collect();
    println!(
        "\n{} seeds: {} passed, {} failed (run folders in {})",
        n,
        results.len() - failing.len(),
        failing.len(),
        run_dir.display()
    );
    for (seed, _, stdout) in &failing {
        for l in stdout.lines().filter(|l| l.starts_with("FAILED: ")) {
            println!("  seed {seed}: {}", l.trim_start_matches("FAILED: "));
        }
    }
    if let Some(replay) = failing
        .first()
        .and_then(|(_, _, o)| o.lines().find_map(|l| l.trim().strip_prefix("replay: ")))
    {
        println!("first failure: {replay}");
    }
    if failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `drlab soak`: the calls, a progress bar, then the figures; exit 1 when
/// a call went otherwise than its kind expects or something is held.
fn soak(calls: usize, seed: u64, loss: f64) -> ExitCode {
    use scenarios::soak;
    if calls == 0 || !(0.0..=50.0).contains(&loss) {
        eprintln!("drlab: --calls must be at least 1 and --loss within 0-50");
        return ExitCode::from(2);
    }
    println!("drlab soak: {calls} calls, seed {seed}, {loss} % loss on the carrier link");
    let bar = std::io::stdout()
        .is_terminal()
        .then(|| scenarios::certify::progress_bar(calls, "calls"));
    // Wall time only for the speed figure printed: nothing simulated
    // reads it.
    #[allow(clippy::disallowed_methods)]
    let wall = std::time::Instant::now();
    let start_rss = soak::rss_bytes();
    let plan = soak::SoakPlan {
        calls,
        seed,
        loss_pct: loss,
    };
    let result = soak::run(&plan, |_| {
        if let Some(b) = &bar {
            b.inc(1);
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("drlab: the soak could not run: {e}");
            return ExitCode::from(2);
        }
    };
    println!("calls by kind: {:?}", report.by_kind);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    if let Some(r) = start_rss {
        println!("RSS at start: {:.1} MiB", mib(r));
    }
    for (n, r) in &report.rss {
        println!("RSS after {n:>6} calls: {:.1} MiB", mib(*r));
    }
    println!(
        "{:.0} s simulated in {:.1} s ({:.0}x real time)",
        report.simulated.as_secs_f64(),
        wall.elapsed().as_secs_f64(),
        report.simulated.as_secs_f64() / wall.elapsed().as_secs_f64().max(1e-9)
    );
    for u in report.unexpected.iter().take(20) {
        println!("unexpected: {u}");
    }
    let bad = !report.unexpected.is_empty() || report.held.is_some();
    match &report.held {
        Some(h) => println!("still held after 70 s: {h}"),
        None => println!("nothing held by any party"),
    }
    println!(
        "{} calls, {} unexpected",
        report.calls,
        report.unexpected.len()
    );
    if bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `drlab bench`: the grid, cell by cell on every core, then the table,
/// `bench.csv` and the plots in `out`.
fn bench(
    quick: bool,
    seed: u64,
    calls: Option<usize>,
    tick_ms: Option<u64>,
    out: &std::path::Path,
) -> ExitCode {
    use scenarios::bench;
    let mut plan = if quick {
        bench::Plan::quick(seed)
    } else {
        bench::Plan::full(seed)
    };
    if let Some(n) = calls {
        if n == 0 {
            eprintln!("drlab: --calls must be at least 1");
            return ExitCode::from(2);
        }
        plan.calls = n;
    }
    if let Some(ms) = tick_ms {
        plan.tick = std::time::Duration::from_millis(ms);
    }
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!("drlab: cannot write to {}: {e}", out.display());
        return ExitCode::from(2);
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "drlab bench: {} cells x {} calls of {} s, seed {seed}, tick {} ms, {workers} at once",
        plan.cells.len(),
        plan.calls,
        plan.hold.as_secs(),
        plan.tick.as_millis()
    );
    let bar = std::io::stdout()
        .is_terminal()
        .then(|| scenarios::certify::progress_bar(plan.cells.len(), "cells"));
    let tick = |_: &bench::Cell| {
        if let Some(b) = &bar {
            b.inc(1);
        }
    };
    let results = bench::run(&plan, workers, &tick);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut ok = Vec::new();
    let mut failed = 0;
    for (cell, r) in plan.cells.iter().zip(results) {
        match r {
            Ok(r) => ok.push(r),
            Err(e) => {
                failed += 1;
                eprintln!("drlab: cell {cell:?} could not run: {e}");
            }
        }
    }
    print!("{}", bench::table(&ok));
    let csv = out.join("bench.csv");
    let mut written = vec![csv.clone()];
    let result = std::fs::write(&csv, bench::csv(&ok))
        .map_err(|e| e.to_string())
        .and_then(|()| {
            for (name, svg) in bench::plots(&ok)? {
                let p = out.join(name);
                std::fs::write(&p, svg).map_err(|e| e.to_string())?;
                written.push(p);
            }
            Ok(())
        });
    if let Err(e) = result {
        eprintln!("drlab: cannot write the results to {}: {e}", out.display());
        return ExitCode::from(2);
    }
    for p in written {
        println!("wrote {}", p.display());
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
