//! `sbc`: the drlab reference SBC on real sockets.
//!
//!     sbc --config sbc.toml            run
//!     sbc --config sbc.toml --check    check the configuration and exit
//!
//! (A lab PKI comes from `teams-sim test-pki`: the SBC binary carries no
//! simulator code.)

use clap::Parser;
use sbc::b2bua::{run_sbc_sharded, SbcView};
use sbc::sip::transport::tap::StderrTap;
use sbc::sip::transport::{Tap, TokioNet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

// mimalloc rather than glibc's malloc: a call allocates and frees a few
// thousand small objects (parsed headers, transactions, sessions), and
// glibc's malloc and free were ~15 % of the sbc's CPU under load
// (docs/benchmarks.md, issue 15).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sbc",
    version,
    about = "drlab reference SBC: carrier trunk <-> Teams Direct Routing"
)]
struct Cli {
    /// The configuration file (see sbc/examples/sbc.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Print every SIP message sent and received to stderr.
    #[arg(long)]
    trace: bool,
    /// Worker threads for sockets, TLS and media relays besides the one
    /// running the SIP core; 0 (the default): everything on one thread,
    /// which measured best on two cores (docs/benchmarks.md).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// SIP cores: calls are spread over them by Call-ID, the cores run in
    /// parallel on at least this many worker threads, each with an equal
    /// part of the media ports and per-source rates. 1 (the default): one
    /// core, on the main thread, which measured best on two cores.
    #[arg(long, default_value_t = 1)]
    shards: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(path) = cli.config else {
        eprintln!("sbc: --config <file> is required (see sbc/examples/sbc.toml)");
        return ExitCode::from(2);
    };
    let sbc::config::Loaded {
        mut config,
        seed,
        hosts,
        records,
    } = match sbc::config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sbc: {e}");
            return ExitCode::from(2);
        }
    };
    // Before --check's verdict too: the media ports must go round.
    if let Err(e) = config.check_shards(cli.shards) {
        eprintln!("sbc: --shards {}: {e}", cli.shards);
        return ExitCode::from(2);
    }
    if cli.check {
        return match sbc::config::check_deployment(&path) {
            Ok(warnings) => {
                for w in warnings {
                    eprintln!("sbc: warning: {w}");
                }
                println!("{}: OK", path.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("sbc: {e}");
                }
                ExitCode::from(2)
            }
        };
    }
    // Outside simulation identifiers need only be unpredictable: seed from
    // the OS-keyed hasher unless the file pins a seed for reproducible runs.
    config.seed = seed.unwrap_or_else(sbc::sip::rng::unpredictable_seed);
    let workers = match cli.shards {
        0 | 1 => cli.threads,
        n => cli.threads.max(n),
    };
    let runtime = match workers {
        0 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    }
    .enable_all()
    .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sbc: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let view = Arc::new(Mutex::new(SbcView::default()));
    let mut net = TokioNet::with_hosts(hosts);
    // Bound to one address, the SBC also connects from it: the hub (and
    // any ACL before it) must see the address it knows the SBC by.
    if !config.listen_ip.is_unspecified() {
        net = net.connecting_from(config.listen_ip);
    }
    let tap: Option<Arc<dyn Tap>> = if cli.trace {
        Some(Arc::new(StderrTap))
    } else {
        None
    };
    // Said once the ports are bound: a bind that fails says so instead.
    let listening = format!(
        "sbc: {} listening: carrier UDP {}, Teams TLS {}{}",
        config.fqdn,
        config.carrier_listen_port,
        config.tls_listen_port,
        match cli.shards {
            0 | 1 => String::new(),
            n => format!(", {n} SIP cores"),
        }
    );
    runtime.spawn(sbc::problems::announce_when(
        view.clone(),
        |v: &SbcView| v.listening,
        listening,
    ));
    // The SBC records what goes wrong (refused TLS, rejected calls, failed
    // sends) in its view; an operator sees each line once, as it happens.
    runtime.spawn(sbc::problems::echo(view.clone(), "sbc", |v: &SbcView| {
        &v.problems
    }));
    // Call records: drained from the view once a second and appended;
    // without a file, dropped as often (the view would otherwise keep up
    // to MAX_RECORDS of them: ~370 bytes a call, measured under load).
    let records_view = view.clone();
    let drain = move || {
        records_view
            .lock()
            .map(|mut v| v.records.drain(..).collect())
            .unwrap_or_default()
    };
    match records {
        Some(path) => {
            eprintln!("sbc: call records to {}", path.display());
            runtime.spawn(sbc::records::write_every_second(path, "sbc", drain));
        }
        None => {
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    drop(drain());
                }
            });
        }
    }
    // Nobody changes the settings of a running binary: the channel stays
    // open, never used.
    let (_keep, commands) = tokio::sync::mpsc::unbounded_channel();
    let run = run_sbc_sharded(net, config, view, commands, tap, cli.shards.max(1));
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sbc: {e}");
            ExitCode::FAILURE
        }
    }
}
