//! `carrier-sim`: a carrier trunk and PSTN phones on real sockets, for an
//! SBC under test. Commands on standard input:
//!
//!     call <from> <to>     a PSTN phone calls a number (E.164)
//!     hangup <number>      a phone hangs up
//!     status               calls and what each phone heard

use carrier_sim::trunk::{run_trunk, CarrierCommand, CarrierConfig, CarrierView, Phone};
use clap::Parser;
use drlab_sim::{media_host, media_host_channel};
use sbc::sip::transport::tap::StderrTap;
use sbc::sip::transport::{Tap, TokioNet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(
    name = "carrier-sim",
    version,
    about = "A simulated carrier SIP trunk and PSTN phones"
)]
struct Cli {
    /// The configuration file (see carrier-sim/examples/carrier.toml).
    #[arg(long, short)]
    config: PathBuf,
    #[arg(long)]
    check: bool,
    /// Print every SIP message sent and received to stderr.
    #[arg(long)]
    trace: bool,
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
    let file = match carrier_sim::config::load(&cli.config) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("carrier-sim: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        let problems = sbc::config::foreign_addresses(&cli.config, &[("media_ip", file.media_ip)]);
        for p in &problems {
            eprintln!("carrier-sim: {p}");
        }
        if !problems.is_empty() {
            return ExitCode::from(2);
        }
        println!("{}: OK", cli.config.display());
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
    runtime.block_on(async move {
        let mut hosts = file.hosts.clone();
        // The phones' audio comes from media_ip; the trunk's own name resolves there too unless mapped.
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
        let phones = file
            .phones
            .iter()
            .map(|n| Phone {
                number: n.clone(),
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
            media_frames: file.media_frames,
            media_ports: file.media_ports.clone(),
            timers: Default::default(),
            auth: file.auth.clone(),
            seed: file.seed.unwrap_or_else(sbc::sip::rng::unpredictable_seed),
        };
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
                eprintln!("carrier-sim: trunk stopped: {e}");
            }
        });
        eprintln!(
            "carrier-sim: {} listening on UDP {}, SBC at {}:{}",
            file.fqdn, file.listen_port, file.sbc_host, file.sbc_port
        );
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
