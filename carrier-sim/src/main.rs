//! `carrier-sim`: a carrier trunk and PSTN phones on real sockets, for an
//! SBC under test. Commands on standard input:
//!
//!     call <from> <to>     a PSTN phone calls a number (E.164)
//!     hangup <number>      a phone hangs up
//!     status               calls and what each phone heard
//!
//! `carrier-sim -c carrier.toml load --rate R --calls N --hold S --to +49...`
//! instead places N calls at R a second, each hung up S seconds after the
//! answer, and prints what became of them (see [`carrier_sim::load`]).

use carrier_sim::load::{LoadPlan, RetransmitCounter};
use carrier_sim::trunk::{run_trunk, CarrierCommand, CarrierConfig, CarrierView, Phone};
use clap::{Args, Parser, Subcommand};
use drlab_sim::{media_host, media_host_channel};
use sbc::sip::transport::tap::StderrTap;
use sbc::sip::transport::{Tap, TokioNet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

// mimalloc rather than glibc's malloc, as in the sbc: glibc's malloc and
// free were a fifth of teams-sim's CPU samples under load (issue 15).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "carrier-sim",
    version,
    about = "A simulated carrier SIP trunk and PSTN phones"
)]
struct Cli {
    /// The configuration file (see carrier-sim/examples/carrier.toml).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[arg(long)]
    check: bool,
    /// Print every SIP message sent and received to stderr.
    #[arg(long, global = true)]
    trace: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Place calls at a steady rate against the SBC and report what became
    /// of them: rate achieved, failures by code, setup latency, SIP
    /// retransmissions, and with --media the quality each phone heard.
    Load(LoadArgs),
}

#[derive(Args)]
struct LoadArgs {
    /// New calls per second.
    #[arg(long)]
    rate: f64,
    /// How many calls to place.
    #[arg(long)]
    calls: u64,
    /// Seconds each answered call lasts before the phone hangs up.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// The phones send audio (media_frames of the file, 20 ms each);
    /// without it they only listen.
    #[arg(long)]
    media: bool,
    /// A number to call (E.164); repeat for several, called in turn.
    #[arg(long, required = true)]
    to: Vec<String>,
    /// Callers are this prefix and six digits.
    #[arg(long, default_value = "+4930555")]
    from_prefix: String,
}

fn status(view: &CarrierView) -> String {
    let mut out = String::new();
    for c in &view.calls {
        let m = c.media.lock().map(|m| m.clone()).unwrap_or_default();
        out.push_str(&format!(
            "{:?} {} <-> {}: {:?}; media sent {} received {} lost-order {} bad {}\n",
            c.direction, c.phone, c.peer, c.state, m.sent, m.received, m.out_of_order, m.corrupt
        ));
    }
    for p in view.problems.lines() {
        out.push_str(&format!("problem: {p}\n"));
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(config_path) = cli.config.clone() else {
        eprintln!("carrier-sim: --config <FILE> is needed (see carrier-sim/examples/carrier.toml)");
        return ExitCode::from(2);
    };
    let file = match carrier_sim::config::load(&config_path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("carrier-sim: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        let problems = sbc::config::foreign_addresses(&config_path, &[("media_ip", file.media_ip)]);
        for p in &problems {
            eprintln!("carrier-sim: {p}");
        }
        if !problems.is_empty() {
            return ExitCode::from(2);
        }
        println!("{}: OK", config_path.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("carrier-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Load(args)) = cli.command {
        return runtime.block_on(load(file, args, cli.trace));
    }
    runtime.block_on(async move {
        let (net, config) = trunk(&file, file.phones.clone(), file.media_frames);
        let view = Arc::new(Mutex::new(CarrierView::default()));
        let (commands, rx) = mpsc::unbounded_channel();
        let tap: Option<Arc<dyn Tap>> = if cli.trace {
            Some(Arc::new(StderrTap))
        } else {
            None
        };
        if let Some(path) = file.records.clone() {
            eprintln!("carrier-sim: call records to {}", path.display());
            let records_view = view.clone();
            tokio::spawn(sbc::records::write_every_second(
                path,
                "carrier-sim",
                move || {
                    records_view
                        .lock()
                        .map(|mut v| v.records.drain(..).collect())
                        .unwrap_or_default()
                },
            ));
        }
        let trunk_view = view.clone();
        tokio::spawn(async move {
            if let Err(e) = run_trunk(net, config, trunk_view, rx, tap).await {
                // Without its trunk the console would take commands that
                // go nowhere: stop.
                eprintln!("carrier-sim: trunk stopped: {e}");
                std::process::exit(1);
            }
        });
        tokio::spawn(sbc::problems::announce_when(
            view.clone(),
            |v: &CarrierView| v.listening,
            format!(
                "carrier-sim: {} listening on UDP {}, SBC at {}:{}",
                file.fqdn, file.listen_port, file.sbc_host, file.sbc_port
            ),
        ));
        let help = "`call <from> <to>`, `hangup <number>`, `status`";
        drlab_sim::console::serve_stdin("carrier-sim", help, |words| {
            match words {
                ["call", from, to] => {
                    let _ = commands.send(CarrierCommand::Call {
                        from: from.to_string(),
                        to: to.to_string(),
                    });
                }
                ["hangup", number] => {
                    let _ = commands.send(CarrierCommand::HangUp {
                        number: number.to_string(),
                    });
                }
                ["status"] => print!(
                    "{}",
                    status(&view.lock().unwrap_or_else(|e| e.into_inner()))
                ),
                _ => return false,
            }
            true
        })
        .await;
    });
    ExitCode::SUCCESS
}

/// `carrier-sim load`: the trunk of `file` with phones of its own, driven
/// at the asked rate.
async fn load(file: carrier_sim::config::CarrierFile, args: LoadArgs, trace: bool) -> ExitCode {
    if !(args.hold.is_finite() && (0.0..=3600.0).contains(&args.hold)) {
        eprintln!(
            "carrier-sim load: --hold: {} is not a number of seconds from 0 to 3600",
            args.hold
        );
        return ExitCode::from(2);
    }
    let plan = LoadPlan {
        rate: args.rate,
        calls: args.calls,
        hold: std::time::Duration::from_secs_f64(args.hold),
        media: args.media,
        to: args.to,
        from_prefix: args.from_prefix,
    };
    if let Err(e) = plan.check() {
        eprintln!("carrier-sim load: {e}");
        return ExitCode::from(2);
    }
    let numbers = (0..plan.phones()).map(|i| plan.caller(i)).collect();
    let media_frames = if plan.media { file.media_frames } else { 0 };
    let (net, config) = trunk(&file, numbers, media_frames);
    let view = Arc::new(Mutex::new(CarrierView::default()));
    let (commands, rx) = mpsc::unbounded_channel();
    let counter = Arc::new(RetransmitCounter::default());
    let tap: Arc<dyn Tap> = if trace {
        Arc::new(sbc::sip::transport::tap::Tee(
            counter.clone(),
            Arc::new(StderrTap),
        ))
    } else {
        counter.clone()
    };
    let trunk_view = view.clone();
    tokio::spawn(async move {
        if let Err(e) = run_trunk(net, config, trunk_view, rx, Some(tap)).await {
            eprintln!("carrier-sim: trunk stopped: {e}");
        }
    });
    eprintln!(
        "carrier-sim load: {} calls at {}/s to {}:{}, hold {} s, {} caller numbers from {}",
        plan.calls,
        plan.rate,
        file.sbc_host,
        file.sbc_port,
        plan.hold.as_secs_f64(),
        plan.phones(),
        plan.caller(0)
    );
    let report = carrier_sim::load::drive(&plan, &commands, &view, &counter, |p| {
        eprintln!(
            "  placed {:>7}  ended {:>7}  answered {:>7}  up {:>6}",
            p.placed, p.ended, p.answered, p.live
        );
    })
    .await;
    println!("{report}");
    let v = view.lock().unwrap_or_else(|e| e.into_inner());
    for p in v.problems.lines().take(5) {
        println!("problem: {p}");
    }
    // A step of a step search fails at 0.1 % of calls not answered.
    if report.failed_pct() > 0.1 || report.unaccounted > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The trunk of `file` with phones of these numbers, its network (names
/// from `[hosts]`, the phones' audio and the trunk's own name on
/// `media_ip` unless mapped) and the phones' media host, started. Call
/// within the runtime.
fn trunk(
    file: &carrier_sim::config::CarrierFile,
    numbers: Vec<String>,
    media_frames: u32,
) -> (TokioNet, CarrierConfig) {
    let mut hosts = file.hosts.clone();
    hosts
        .entry("phones.carrier-sim".into())
        .or_insert(file.media_ip);
    hosts.entry(file.fqdn.clone()).or_insert(file.media_ip);
    let net = TokioNet::with_hosts(hosts);
    let (handle, media_rx) = media_host_channel();
    tokio::spawn(media_host(
        net.clone(),
        file.media_ip,
        media_rx,
        handle.live.clone(),
    ));
    let phones = (numbers.into_iter())
        .map(|number| Phone {
            number,
            media_host: "phones.carrier-sim".into(),
            media: handle.clone(),
        })
        .collect();
    let config = CarrierConfig {
        fqdn: file.fqdn.clone(),
        listen_port: file.listen_port,
        sbc_host: file.sbc_host.clone(),
        sbc_port: file.sbc_port,
        country_code: file.country_code.clone(),
        phones,
        answering: drlab_sim::far_end::Answering {
            ring_after: file.ring_delay,
            answer_after: file.answer_delay,
        },
        media_frames,
        media_ports: file.media_ports.clone(),
        timers: Default::default(),
        auth: file.auth.clone(),
        seed: file.seed.unwrap_or_else(sbc::sip::rng::unpredictable_seed),
    };
    (net, config)
}
