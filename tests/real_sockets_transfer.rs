//! Transfers on the operating system's sockets and clock: the hub's REFER
//! to drlab's SBC over mutual TLS, the SBC's 202, its INVITE back through
//! the hub and its NOTIFYs, the old leg ended, and the PSTN phone's audio
//! moved to the new Teams user's media processor; then a call queue's
//! INVITE with Replaces. The same role code as the simulated suites.

mod common;

use carrier_sim::trunk::PstnState;
use common::{nothing_held, start_carrier, start_hub_and_sbc, until_active, wait_for, Options};
use std::time::Duration;
use teams_sim::hub::{CallState, HubCommand, TransferHow};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// T1 = 50 ms: what lingers for 64·T1 on UDP is gone in 3.2 s.
fn options(lab: u8) -> Options {
    let mut o = Options::new(lab);
    // Both far ends talk for the whole test (20 s), across both moves.
    o.media_frames = 1_000;
    o.timers = sbc::sip::transaction::TimerConfig {
        t1: Duration::from_millis(50),
        t2: Duration::from_millis(400),
        t4: Duration::from_millis(500),
    };
    o
}

#[test]
fn refer_and_replaces_move_the_pstn_caller_over_real_tls() {
    runtime().block_on(async {
        let o = options(8);
        let lab = start_hub_and_sbc(&o);
        let carrier = start_carrier(&lab, &o);
        until_active(&lab).await;
        carrier.call("+4930123456", "+4989000001");
        let answered = |user: &str| {
            lab.hub
                .lock()
                .unwrap()
                .calls
                .iter()
                .rev()
                .find(|c| c.user == user && c.state == CallState::Answered)
                .map(|c| c.media.clone())
        };
        wait_for("Alice to answer", Duration::from_secs(10), || {
            answered("Alice").is_some()
        })
        .await;
        let pstn = carrier.view.lock().unwrap().calls[0].media.clone();
        let moves = [
            (
                "Bob",
                HubCommand::Transfer {
                    user: "Alice".into(),
                    to: "Bob".into(),
                },
                TransferHow::Refer,
            ),
            (
                "Alice",
                HubCommand::PickUp {
                    user: "Bob".into(),
                    agent: "Alice".into(),
                    unknown_dialog: false,
                },
                TransferHow::Replaces,
            ),
        ];
        for (n, (to, command, how)) in moves.into_iter().enumerate() {
            lab.hub_commands.send(command).unwrap();
            let done = || {
                lab.hub.lock().unwrap().transfers.len() > n
                    && lab.hub.lock().unwrap().transfers[n].outcome.is_some()
            };
            wait_for("the transfer to end", Duration::from_secs(20), done).await;
            let record = lab.hub.lock().unwrap().transfers[n].clone();
            assert_eq!((record.how, record.outcome), (how, Some(Ok(()))), "{to}");
            let teams = answered(to).expect("the new party's call is answered");
            let base = (teams.lock().unwrap().received, pstn.lock().unwrap().clone());
            // The phone hears the new party's own stream, and the new
            // party's media processor hears the phone, in order.
            let heard = || {
                let (t, p) = (teams.lock().unwrap(), pstn.lock().unwrap());
                t.received >= base.0 + 25 && p.last_ssrc == t.own_ssrc && p.from_source >= 25
            };
            wait_for("audio with the new party", Duration::from_secs(10), heard).await;
            let p = pstn.lock().unwrap().clone();
            assert_eq!(
                (p.out_of_order, p.corrupt, p.unprotect_errors),
                (base.1.out_of_order, base.1.corrupt, base.1.unprotect_errors),
                "{p:?}"
            );
        }
        // One PSTN call throughout.
        assert_eq!(carrier.view.lock().unwrap().calls.len(), 1);
        assert_eq!(lab.sbc.lock().unwrap().transfers, 2);
        assert!(lab.hub.lock().unwrap().sbc_violations.is_empty());
        carrier.hang_up("+4930123456");
        wait_for("the PSTN call to end", Duration::from_secs(5), || {
            matches!(
                carrier.view.lock().unwrap().calls[0].state,
                PstnState::Ended(_)
            )
        })
        .await;
        wait_for("nothing held", Duration::from_secs(10), || {
            nothing_held(&lab, Some(&carrier))
        })
        .await;
    });
}
