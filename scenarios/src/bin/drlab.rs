//! `drlab`: certify an SBC against the simulated Teams Direct Routing hub.

use clap::{Parser, Subcommand};
use scenarios::certify::{features_dir, render, run, validate, write_outputs, Options};
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
        /// Where the suites are.
        #[arg(long, default_value_os_t = features_dir())]
        features: PathBuf,
        /// Where to write junit.xml and traces/<scenario>.txt|.pcap.
        #[arg(long, default_value = "target/drlab")]
        out: PathBuf,
    },
    /// List the features and scenarios, with their tags.
    List {
        #[arg(long, default_value_os_t = features_dir())]
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
        } => {
            let opts = Options {
                features,
                name,
                tags,
                seed,
            };
            if let Err(e) = validate(&opts) {
                eprintln!("drlab: {e}");
                return ExitCode::from(2);
            }
            let report = match futures::executor::block_on(run(opts)) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("drlab: {e}");
                    return ExitCode::from(2);
                }
            };
            print!("\n{}", render(&report));
            match write_outputs(&report, &out) {
                Ok(files) => println!(
                    "JUnit XML and {} trace files (ladders, pcaps) in {}",
                    files.len() - 1,
                    out.display()
                ),
                Err(e) => eprintln!("drlab: cannot write to {}: {e}", out.display()),
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
