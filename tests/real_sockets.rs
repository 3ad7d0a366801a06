//! The whole lab on the operating system's sockets instead of turmoil's:
//! the hub proxy (mutual TLS), the reference SBC and the carrier trunk,
//! each on its own loopback address, with wall-clock time; one call placed
//! and hung up, audio checked at both far ends; and SIPp as the carrier.
//! The same role code as the simulated suites; only the `Network` differs.

mod common;

use carrier_sim::trunk::PstnState;
use common::{start_carrier, start_hub_and_sbc, until_active, wait_for, Options};
use std::time::Duration;
use teams_sim::hub::CallState;

#[test]
fn a_call_through_real_sockets() {
    call_through_real_sockets(1, false, false);
}

/// A registration trunk on real sockets: the SBC REGISTERs to carrier-sim
/// over UDP on loopback with SHA-256 digest (after a 401), the carrier
/// binds it, and a PSTN call reaches Teams through that binding.
#[test]
fn the_sbc_registers_with_digest_and_carries_a_call() {
    call_through_real_sockets(10, false, true);
}

/// Media bypass on real sockets: the SBC is ICE-lite toward Teams, the
/// Teams clients (here on the media processor's address, as the real-
/// socket hub has no client hosts) check its candidate over UDP, the
/// answering one nominates and talks to it directly.
#[test]
fn a_media_bypass_call_through_real_sockets() {
    call_through_real_sockets(9, true, false);
}

/// The SBC on three SIP cores (`sbc --shards 3`) on a two-thread runtime,
/// registered with the carrier: 90 calls in waves of 30, every one
/// answered and hung up, the calls spread over all three cores, and at the
/// end nothing held by any core or party.
#[test]
fn calls_across_three_sip_cores() {
    common::two_workers().block_on(async {
        let mut o = Options::new(12);
        o.sbc_shards = 3;
        // 64·T1 of linger is 3.2 s rather than 32 s.
        o.timers = sbc::sip::transaction::TimerConfig {
            t1: Duration::from_millis(50),
            t2: Duration::from_millis(400),
            t4: Duration::from_millis(500),
        };
        registration_trunk(&mut o);
        o.media_frames = 3;
        let lab = start_hub_and_sbc(&o);
        let carrier = start_carrier(&lab, &o);
        until_active(&lab).await;
        until_bound(&carrier).await;
        let mut busiest = [0usize; 3];
        for wave in 0..3 {
            for _ in 0..30 {
                carrier.call("+4930123456", "+4989000001");
            }
            let answered = || {
                let v = carrier.view.lock().unwrap();
                v.calls.len() == 30 * (wave + 1)
                    && v.calls
                        .iter()
                        .rev()
                        .take(30)
                        .all(|c| c.state == PstnState::Answered)
            };
            wait_for("a wave of 30 answered", Duration::from_secs(20), answered).await;
            let per_core = lab.sbc.lock().unwrap().shards.clone();
            assert_eq!(per_core.len(), 3, "{per_core:?}");
            for (b, c) in busiest.iter_mut().zip(&per_core) {
                *b = (*b).max(c.live_calls);
            }
            for _ in 0..30 {
                carrier.hang_up("+4930123456");
            }
            wait_for("the wave hung up", Duration::from_secs(20), || {
                carrier.view.lock().unwrap().live_calls == 0
            })
            .await;
        }
        // Every core took calls (Call-IDs spread by hash).
        assert!(
            busiest.iter().all(|n| *n > 0),
            "calls per core, at most: {busiest:?}"
        );
        wait_for(
            "every core and party to let go",
            Duration::from_secs(20),
            || common::nothing_held(&lab, Some(&carrier)),
        )
        .await;
        let sbc = lab.sbc.lock().unwrap().clone();
        assert_eq!((sbc.calls_started, sbc.calls_ended), (90, 90));
        // Every call's record has a serial of its own, whichever core.
        let serials: std::collections::BTreeSet<&str> =
            sbc.records.iter().map(|r| r.call.as_str()).collect();
        assert_eq!((sbc.records.len(), serials.len()), (90, 90));
        // One registration for the trunk, from one core.
        assert_eq!(carrier.view.lock().unwrap().registrations, 1);
        assert!(sbc.problems.is_empty(), "{}", sbc.problems.joined("; "));
    });
}

/// Until the carrier has bound the SBC's registration.
async fn until_bound(carrier: &common::Carrier) {
    let bound = || carrier.view.lock().unwrap().registrations >= 1;
    wait_for(
        "the carrier to bind the SBC",
        Duration::from_secs(10),
        bound,
    )
    .await;
}

/// A registration trunk: the SBC registers as `sbc1` with SHA-256 digest,
/// and the carrier challenges its INVITEs too.
fn registration_trunk(o: &mut Options) {
    o.registration = Some(sbc::b2bua::register::RegistrationConfig {
        domain: "carrier.example.net".into(),
        username: "sbc1".into(),
        password: "s3cr3t-Pa55".into(),
        realm: None,
        expires: 3600,
    });
    o.carrier_auth = Some(carrier_sim::trunk::TrunkAuth {
        realm: "carrier.example.net".into(),
        username: "sbc1".into(),
        password: "s3cr3t-Pa55".into(),
        algorithms: vec![sbc::sip::digest::Algorithm::Sha256],
        nonce_lifetime: Duration::from_secs(300),
        challenge_invites: true,
        max_expires: 3600,
    });
}

fn call_through_real_sockets(lab: u8, media_bypass: bool, registration: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut o = Options::new(lab);
        o.media_bypass = media_bypass;
        if media_bypass {
            // The phone talks from the 183 on, and its first frames go to
            // the early-media fork's client, not to the one that answers.
            o.media_frames = 100;
        }
        if registration {
            registration_trunk(&mut o);
        }
        let lab = start_hub_and_sbc(&o);
        let carrier = start_carrier(&lab, &o);
        until_active(&lab).await;
        if registration {
            // The first REGISTER may reach the carrier before it listens:
            // Timer E brings it again.
            until_bound(&carrier).await;
            let v = carrier.view.lock().unwrap();
            let binding = v.binding.clone().unwrap_or_default();
            assert!(binding.contains(&lab.addrs.sbc.to_string()), "{binding}");
            assert!(
                v.challenges >= 1 && v.auth_refusals == 0,
                "{:?}",
                v.problems
            );
        }
        carrier.call("+4930123456", "+4989000001");
        let answered = || {
            lab.hub
                .lock()
                .unwrap()
                .calls
                .back()
                .is_some_and(|c| c.state == CallState::Answered && c.acked)
        };
        wait_for(
            "the Teams user to answer and the SBC to ACK",
            Duration::from_secs(10),
            answered,
        )
        .await;
        let (teams, pstn) = (
            lab.hub.lock().unwrap().calls[0].media.clone(),
            carrier.view.lock().unwrap().calls[0].media.clone(),
        );
        let heard = || teams.lock().unwrap().received >= 25 && pstn.lock().unwrap().received >= 25;
        wait_for("25 frames at each end", Duration::from_secs(10), heard).await;
        for stats in [teams.lock().unwrap().clone(), pstn.lock().unwrap().clone()] {
            assert_eq!(
                (stats.out_of_order, stats.corrupt, stats.unprotect_errors),
                (0, 0, 0),
                "{stats:?}"
            );
        }
        let t = teams.lock().unwrap().clone();
        assert_eq!(t.ice_nominated, media_bypass, "{t:?}");
        if media_bypass {
            // Straight from the SBC's candidate, checked before any audio.
            assert_eq!(t.first_source.map(|s| s.ip()), Some(lab.addrs.sbc), "{t:?}");
            assert!(t.ice_successes >= 2 && t.ice_error.is_none(), "{t:?}");
        }
        carrier.hang_up("+4930123456");
        let ended = || matches!(lab.hub.lock().unwrap().calls[0].state, CallState::Ended(_));
        wait_for(
            "the Teams side to see the BYE",
            Duration::from_secs(5),
            ended,
        )
        .await;
        assert!(matches!(
            carrier.view.lock().unwrap().calls[0].state,
            PstnState::Ended(_)
        ));
        let problems = lab.sbc.lock().unwrap().problems.clone();
        assert!(problems.is_empty(), "{:?}", problems.joined("; "));
    });
}

/// SIPp, an independent SIP implementation, as the carrier: INVITE with
/// plain RTP, the Teams user answers through the SBC, ACK, BYE. Needs
/// `sipp` (Debian's sip-tester); without it the test says so and stops.
#[test]
fn sipp_as_the_carrier_calls_a_teams_user() {
    if std::process::Command::new("sipp")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!(
            "sipp is not installed: SIPp carrier call not checked (apt-get install sip-tester)"
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // SIPp is the carrier: it listens on the lab's carrier address.
        let mut o = Options::new(2);
        let addrs = common::Addrs::for_lab(2);
        o.carrier_ip = Some(addrs.carrier);
        o.carrier_port = 5070;
        let lab = start_hub_and_sbc(&o);
        until_active(&lab).await;
        let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/call.xml");
        let dir = std::env::temp_dir().join(format!("drlab-sipp-call-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("messages.log");
        let out = tokio::process::Command::new("sipp")
            .args(["-sf", scenario, "-m", "1", "-i"])
            .arg(addrs.carrier.to_string())
            .args(["-p", "5070"])
            .arg(format!("{}:{}", addrs.sbc, lab.sbc_udp))
            .args([
                "-timeout",
                "15",
                "-timeout_error",
                "-nostdin",
                "-trace_msg",
                "-message_file",
            ])
            .arg(&log)
            .current_dir(&dir)
            .output()
            .await
            .expect("sipp runs");
        let messages = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            out.status.success(),
            "SIPp call failed:\n{}\n{messages}",
            String::from_utf8_lossy(&out.stderr)
        );
        let calls = lab.hub.lock().unwrap().calls.clone();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert!(
            calls[0].acked,
            "the SBC did not ACK the hub's 200 after SIPp's ACK"
        );
        let ended = || matches!(lab.hub.lock().unwrap().calls[0].state, CallState::Ended(_));
        for _ in 0..100 {
            if ended() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let state = lab.hub.lock().unwrap().calls[0].state.clone();
        let problems = lab.sbc.lock().unwrap().problems.joined("; ");
        assert!(ended(), "SIPp's BYE did not reach the Teams side ({state:?}, SBC problems {problems}):\n{messages}");
        assert!(problems.is_empty(), "{problems}");
        let _ = std::fs::remove_dir_all(&dir);
    });
}
