//! `teams-sim`: the simulated Direct Routing hub on real sockets, for an
//! SBC under test (yours, or drlab's). Commands on standard input:
//!
//!     dial <user> <number>     a Teams user calls a PSTN number
//!     hangup <user>            a Teams user hangs up
//!     status                   SBC health, calls, refusals, problems

use clap::Parser;
use sbc::media::media_host;
use sbc::sip::transport::tap::StderrTap;
use sbc::sip::transport::{Tap, TokioNet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use teams_sim::hub::{run_proxy, HubCommand, HubConfig, HubView};
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(
    name = "teams-sim",
    version,
    about = "A simulated Microsoft Teams Direct Routing hub"
)]
struct Cli {
    /// The configuration file (see teams-sim/examples/hub.toml).
    #[arg(long, short)]
    config: PathBuf,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Print every SIP message sent and received to stderr.
    #[arg(long)]
    trace: bool,
}

fn status(view: &HubView) -> String {
    let mut out = String::new();
    for (fqdn, h) in &view.sbcs {
        out.push_str(&format!(
            "SBC {fqdn}: {:?} (OPTIONS from it {}, answered by it {})\n",
            h.status, h.options_from_sbc, h.options_to_sbc_answered
        ));
    }
    for c in &view.calls {
        let m = c.media.lock().map(|m| m.clone()).unwrap_or_default();
        out.push_str(&format!(
            "call {} {:?} {} <-> {} via {}: {:?}; media sent {} received {} lost-order {} bad {}\n",
            c.call_id,
            c.direction,
            c.user,
            c.remote_number,
            c.proxy,
            c.state,
            m.sent,
            m.received,
            m.out_of_order,
            m.corrupt + m.unprotect_errors
        ));
    }
    for (proxy, r) in &view.refusals {
        out.push_str(&format!("refused by {proxy}: {r}\n"));
    }
    for p in &view.problems {
        out.push_str(&format!("problem: {p}\n"));
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match teams_sim::config::load(&cli.config) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("teams-sim: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        println!("{}: OK", cli.config.display());
        return ExitCode::SUCCESS;
    }
    let seed = file.seed.unwrap_or_else(sbc::sip::rng::unpredictable_seed);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("teams-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let net = TokioNet::with_hosts(file.hosts.clone());
        let view = Arc::new(Mutex::new(HubView::new(&file.tenant)));
        let (mp_tx, mp_rx) = mpsc::unbounded_channel();
        tokio::spawn(media_host(net.clone(), mp_rx));
        let tap: Option<Arc<dyn Tap>> = if cli.trace {
            Some(Arc::new(StderrTap))
        } else {
            None
        };
        let mut first_commands = None;
        for (i, p) in file.proxies.iter().enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            if i == 0 {
                first_commands = Some(tx);
            }
            let config = HubConfig {
                fqdn: p.fqdn.clone(),
                listen_ip: p.listen.ip(),
                listen_port: p.listen.port(),
                advertised_ip: (!p.listen.ip().is_unspecified()).then_some(p.listen.ip()),
                internal_name: format!(
                    "sip-du-{}-eu.pstnhub.microsoft.com",
                    (b'a' + i as u8) as char
                ),
                tenant: file.tenant.clone(),
                tls_server: file.tls_server.clone(),
                tls_client: file.tls_client.clone(),
                media_host: file.media_ip.to_string(),
                media: mp_tx.clone(),
                media_frames: file.media_frames,
                forks: file.forks,
                early_media: file.early_media,
                ring_delay: file.ring_delay,
                answer_delay: file.answer_delay,
                no_ack_timeout: std::time::Duration::from_secs(4),
                options_interval: std::time::Duration::from_secs(60),
                seed,
            };
            let (net, view, tap, fqdn) = (net.clone(), view.clone(), tap.clone(), p.fqdn.clone());
            tokio::spawn(async move {
                if let Err(e) = run_proxy(net, config, view, rx, tap).await {
                    eprintln!("teams-sim: proxy {fqdn} stopped: {e}");
                }
            });
            eprintln!("teams-sim: {} listening on {} (TLS)", p.fqdn, p.listen);
        }
        let Some(commands) = first_commands else {
            return ExitCode::from(2);
        };
        let help = "`dial <user> <number>`, `hangup <user>`, `status`";
        sbc::console::serve_stdin("teams-sim", help, |words| {
            match words {
                ["dial", user, number] => {
                    let _ = commands.send(HubCommand::Dial {
                        user: user.to_string(),
                        number: number.to_string(),
                    });
                }
                ["hangup", user] => {
                    let _ = commands.send(HubCommand::HangUp {
                        user: user.to_string(),
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
        ExitCode::SUCCESS
    });
    code
}
