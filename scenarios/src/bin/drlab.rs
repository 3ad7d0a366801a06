//! `drlab`: certify an SBC against the simulated Teams Direct Routing hub.

use clap::{Parser, Subcommand};
use scenarios::certify::{new_run_dir, render, run, validate, write_outputs, Options};
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
    /// Run the certification suites against the built-in reference SBC in simulation.
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
        /// Where runs go: each run writes junit.xml, traces/<scenario>.txt|.pcap
        /// and any snapshot mismatch into a fresh run-NNNN folder here
        /// (`latest` points at the newest).
        #[arg(long, default_value = "target/drlab")]
        out: PathBuf,
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
            seed,
            features,
            out,
        } => certify(
            Options {
                features,
                name,
                tags,
                seed,
            },
            &out,
        ),
        Command::Replay {
            scenario,
            seed,
            features,
            out,
        } => {
            let opts = Options {
                features,
                name: Some(scenarios::certify::exact_name(&scenario)),
                tags: None,
                seed,
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
fn certify(opts: Options, out: &std::path::Path) -> ExitCode {
    if let Err(e) = validate(&opts) {
        eprintln!("drlab: {e}");
        return ExitCode::from(2);
    }
    if let Err(errors) = scenarios::certify::preflight(&opts.features) {
        for e in &errors {
            eprintln!("drlab: {e}");
        }
        eprintln!(
            "drlab: {} problem(s) in the features; nothing was run",
            errors.len()
        );
        return ExitCode::from(2);
    }
    // The run folder next: an output that cannot be written is
    // found before minutes of simulation, not after.
    let run_dir = match new_run_dir(out) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("drlab: cannot write runs to {}: {e}", out.display());
            return ExitCode::from(2);
        }
    };
    *scenarios::steps::RUN_DIR
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(run_dir.clone());
    let report = match futures::executor::block_on(run(opts)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("drlab: {e}");
            return ExitCode::from(2);
        }
    };
    print!("\n{}", render(&report));
    match write_outputs(&report, &run_dir) {
        Ok(files) => println!(
            "JUnit XML and {} trace files (ladders, pcaps) in {}",
            files.len() - 1,
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
