//! `teams-sim`: the simulated Direct Routing hub on real sockets, for an
//! SBC under test (yours, or drlab's). Commands on standard input:
//!
//!     dial <user> <number>     a Teams user calls a PSTN number
//!     hangup <user>            a Teams user hangs up
//!     busy|decline|free <user> the user answers new calls 486, 603 (or takes them)
//!     hold|resume <user>       a Teams user holds (a=inactive) or resumes their call
//!     transfer <user> <to>     a Teams user transfers their call to another
//!                              Teams user (REFER if the SBC allows it, else
//!                              inside Teams) or to a +E.164 number (REFER)
//!     pickup <agent> <user>    a call queue's agent takes <user>'s call over
//!                              (an INVITE with Replaces to the SBC)
//!     status                   SBC health, calls, refusals, problems
//!
//! `teams-sim test-pki --fqdn sbc.example.com --out target/lab` mints the
//! lab's certificates (a CA, the SBC's and the hub's).

use clap::{Parser, Subcommand};
use drlab_sim::{media_host, media_host_channel};
use sbc::sip::transport::tap::StderrTap;
use sbc::sip::transport::{Tap, TokioNet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use teams_sim::hub::{run_proxy, HubCommand, HubConfig, HubView};
use tokio::sync::mpsc;

// mimalloc rather than glibc's malloc, as in the sbc: glibc's malloc and
// free were a fifth of teams-sim's CPU samples under load (issue 15).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "teams-sim",
    version,
    about = "A simulated Microsoft Teams Direct Routing hub"
)]
struct Cli {
    /// The configuration file (see teams-sim/examples/hub.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Print every SIP message sent and received to stderr.
    #[arg(long)]
    trace: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Write a test PKI for a lab: ca.pem, <fqdn>.pem/.key, hub.pem/.key.
    TestPki {
        #[arg(long)]
        fqdn: String,
        #[arg(long)]
        out: PathBuf,
    },
}

fn status(view: &HubView) -> String {
    let mut out = String::new();
    for (fqdn, h) in &view.sbcs {
        out.push_str(&format!(
            "SBC {fqdn}: {} (OPTIONS from it {}, answered by it {}){}\n",
            h.status.dashboard(),
            h.options_from_sbc,
            h.options_to_sbc_answered,
            h.certificate_warning
                .as_ref()
                .map(|w| format!("; TLS warning: {w}"))
                .unwrap_or_default()
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
        for a in &c.attempts {
            out.push_str(&format!("  failed attempt: {a}\n"));
        }
    }
    for t in &view.transfers {
        let outcome = match &t.outcome {
            None => "under way".to_string(),
            Some(Ok(())) => "done".to_string(),
            Some(Err(e)) => format!("failed: {e}"),
        };
        out.push_str(&format!(
            "transfer {} -> {} ({:?}): {outcome}\n",
            t.from_user, t.to_user, t.how
        ));
    }
    for v in &view.sbc_violations {
        out.push_str(&format!("SBC obligation broken: {v}\n"));
    }
    for (proxy, code, r) in &view.refusals {
        out.push_str(&format!("refused by {proxy}: {code} {r}\n"));
    }
    for p in view.problems.lines() {
        out.push_str(&format!("problem: {p}\n"));
    }
    out
}

fn test_pki(fqdn: &str, out: &std::path::Path) -> ExitCode {
    // Validity of the expiring-soon variant is counted from today.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let result = std::fs::create_dir_all(out)
        .map_err(|e| e.to_string())
        .and_then(|_| drlab_sim::pki::TestPki::new().map_err(|e| e.to_string()))
        .and_then(|pki| {
            pki.write_pem(out, fqdn).map_err(|e| e.to_string())?;
            pki.write_variants(out, fqdn, now)
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(variants) => {
            println!(
                "wrote ca.pem, {fqdn}.pem, {fqdn}.key, hub.pem, hub.key to {}",
                out.display()
            );
            println!(
                "and variants/<name>.pem|.key, each good or broken in one way \
                 (variants/README.txt says which the hub refuses): {}",
                variants.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("teams-sim: test-pki: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::TestPki { fqdn, out }) = &cli.command {
        return test_pki(fqdn, out);
    }
    let Some(path) = cli.config.clone() else {
        eprintln!("teams-sim: --config <file> is required (see teams-sim/examples/hub.toml)");
        return ExitCode::from(2);
    };
    let file = match teams_sim::config::load(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("teams-sim: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        // What only this machine can tell: its own addresses.
        let keys: Vec<String> = (0..file.proxies.len())
            .map(|i| format!("proxy[{i}].listen"))
            .collect();
        let mut addresses: Vec<(&str, std::net::IpAddr)> = keys
            .iter()
            .zip(&file.proxies)
            .map(|(k, p)| (k.as_str(), p.listen.ip()))
            .collect();
        addresses.push(("media_ip", file.media_ip));
        let problems = sbc::config::foreign_addresses(&path, &addresses);
        for p in &problems {
            eprintln!("teams-sim: {p}");
        }
        if !problems.is_empty() {
            return ExitCode::from(2);
        }
        println!("{}: OK", path.display());
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
    runtime.block_on(async move {
        // The media processor: named after its address, so that name
        // resolves (to itself) without DNS.
        let media_name = file.media_ip.to_string();
        let net = TokioNet::with_hosts(file.hosts.clone());
        let mut view = HubView::new(&file.tenant);
        view.media_ports = match sbc::media::PortAllocator::new(file.media_ports.clone()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("teams-sim: {e}");
                return ExitCode::from(2);
            }
        };
        let hub_tls = teams_sim::hub::tls::HubTls {
            tls13: file.tls13,
            ..Default::default()
        };
        let (tls_server, tls_client) = match teams_sim::hub::tls::hub_configs(
            &file.tls_identity,
            &file.tls_roots,
            &hub_tls,
            view.tls_notes.clone(),
            Arc::new(rustls::time_provider::DefaultTimeProvider),
        ) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("teams-sim: {e}");
                return ExitCode::from(2);
            }
        };
        let view = Arc::new(Mutex::new(view));
        // What goes wrong (a refused TLS handshake, no free media port, a
        // broken SBC obligation) shows as it happens, as the sbc's does.
        tokio::spawn(sbc::problems::echo(view.clone(), "teams-sim", |v: &HubView| {
            &v.problems
        }));
        let (handle, mp_rx) = media_host_channel();
        tokio::spawn(media_host(
            net.clone(),
            file.media_ip,
            mp_rx,
            handle.live.clone(),
        ));
        let tap: Option<Arc<dyn Tap>> = if cli.trace {
            Some(Arc::new(StderrTap))
        } else {
            None
        };
        // One command channel per proxy: the console talks to the first,
        // and each proxy can hand an outbound call to the others (a
        // connection failure is retried from another datacenter).
        let (senders, mut receivers): (Vec<_>, Vec<_>) = file
            .proxies
            .iter()
            .map(|_| mpsc::unbounded_channel::<HubCommand>())
            .unzip();
        let first_commands = senders.first().cloned();
        for (i, p) in file.proxies.iter().enumerate() {
            let rx = receivers.remove(0);
            let peers = file
                .proxies
                .iter()
                .zip(&senders)
                .filter(|(q, _)| q.fqdn != p.fqdn)
                .map(|(q, tx)| (q.fqdn.clone(), tx.clone()))
                .collect();
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
                tls_server: tls_server.clone(),
                tls_client: tls_client.clone(),
                media_host: media_name.clone(),
                media: handle.clone(),
                media_frames: file.media_frames,
                forks: file.forks,
                early_media: file.early_media,
                answering: drlab_sim::far_end::Answering {
                    ring_after: file.ring_delay,
                    answer_after: file.answer_delay,
                },
                no_ack_timeout: std::time::Duration::from_secs(4),
                options_interval: std::time::Duration::from_secs(60),
                demote_after: file.demote_after,
                refusals: file.refusals.clone(),
                session_expires: file.session_expires,
                failover_time: file.failover_time,
                failover_codes: file.failover_codes.clone(),
                clients: Vec::new(),
                media_timeout: file.media_timeout,
                peers,
                timers: Default::default(),
                seed,
            };
            let (net, v, tap, fqdn) = (net.clone(), view.clone(), tap.clone(), p.fqdn.clone());
            tokio::spawn(async move {
                if let Err(e) = run_proxy(net, config, v, rx, tap).await {
                    // A hub short of a proxy would mislead whoever tests
                    // against it (failover, OPTIONS to all three): stop.
                    eprintln!("teams-sim: proxy {fqdn} stopped: {e}");
                    std::process::exit(1);
                }
            });
            let fqdn = p.fqdn.clone();
            tokio::spawn(sbc::problems::announce_when(
                view.clone(),
                move |v: &HubView| v.listening.contains(&fqdn),
                format!("teams-sim: {} listening on {} (TLS)", p.fqdn, p.listen),
            ));
        }
        let Some(commands) = first_commands else {
            return ExitCode::from(2);
        };
        let help = "`dial <user> <number>`, `hangup <user>`, `busy|decline|free <user>`, `hold|resume <user>`, `transfer <user> <to>`, `pickup <agent> <user>`, `mp <user>` (a bypass call moves to the media processor: ICE restart), `status`";
        drlab_sim::console::serve_stdin("teams-sim", help, |words| {
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
                [word @ ("busy" | "decline" | "free"), user] => {
                    let status = match *word {
                        "busy" => Some(486),
                        "decline" => Some(603),
                        _ => None,
                    };
                    let _ = commands.send(HubCommand::Refuses {
                        user: user.to_string(),
                        status,
                    });
                }
                [word @ ("hold" | "resume"), user] => {
                    let direction = Some(if *word == "hold" {
                        sbc::sip::sdp::Direction::Inactive
                    } else {
                        sbc::sip::sdp::Direction::SendRecv
                    });
                    let _ = commands.send(HubCommand::Reinvite {
                        user: user.to_string(),
                        direction,
                    });
                }
                ["transfer", user, to] => {
                    let _ = commands.send(HubCommand::Transfer {
                        user: user.to_string(),
                        to: to.to_string(),
                    });
                }
                ["pickup", agent, user] => {
                    let _ = commands.send(HubCommand::PickUp {
                        user: user.to_string(),
                        agent: agent.to_string(),
                        unknown_dialog: false,
                    });
                }
                ["mp", user] => {
                    let _ = commands.send(HubCommand::MoveToMediaProcessor {
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
    })
}
