//! The SBC's media ports on real sockets: taken from the configured range
//! on the configured address, never one in use, refused with 503 (and
//! said why) when the range is exhausted or a port cannot be bound.

mod common;

use carrier_sim::trunk::{CarrierCommand, PstnState};
use common::{start_carrier, start_hub_and_sbc, until_active, wait_for, Carrier, Options};

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

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
    o.timers = sbc::sip::transaction::TimerConfig {
        t1: Duration::from_millis(50),
        t2: Duration::from_millis(400),
        t4: Duration::from_millis(500),
    };
    o
}

fn call(c: &Carrier) {
    c.commands
        .send(CarrierCommand::Call {
            from: "+4930123456".into(),
            to: "+4989000001".into(),
        })
        .unwrap();
}

/// The state of the carrier's `n`-th call (1-based).
fn state(c: &Carrier, n: u64) -> Option<PstnState> {
    let v = c.view.lock().unwrap();
    v.calls
        .iter()
        .find(|x| x.serial == n)
        .map(|x| x.state.clone())
}

async fn until_state(c: &Carrier, n: u64, what: &str, f: impl Fn(&PstnState) -> bool) {
    wait_for(what, Duration::from_secs(10), || {
        state(c, n).is_some_and(|s| f(&s))
    })
    .await
}

#[test]
fn an_exhausted_media_range_refuses_the_next_call_with_503() {
    runtime().block_on(async {
        let mut o = options(4);
        // Two RTP ports: exactly one call (one port per leg).
        o.sbc_media_ports = 40000..=40003;
        let lab = start_hub_and_sbc(&o);
        let carrier = start_carrier(&lab, &o);
        until_active(&lab).await;
        call(&carrier);
        until_state(&carrier, 1, "call 1 answered", |s| {
            *s == PstnState::Answered
        })
        .await;
        call(&carrier);
        until_state(&carrier, 2, "call 2 refused", |s| {
            matches!(s, PstnState::Ended(_))
        })
        .await;
        assert_eq!(
            state(&carrier, 2),
            Some(PstnState::Ended("503 Service Unavailable".into()))
        );
        let problems = lab.sbc.lock().unwrap().problems.joined("; ");
        assert!(problems.contains("no free media ports"), "{problems}");
        // Once call 1 is over its ports come back.
        carrier.hang_up("+4930123456");
        wait_for("the ports to be free", Duration::from_secs(10), || {
            lab.sbc.lock().unwrap().media_ports == 0
        })
        .await;
        call(&carrier);
        until_state(&carrier, 3, "call 3 answered", |s| {
            *s == PstnState::Answered
        })
        .await;
    });
}

#[test]
fn a_media_port_that_cannot_be_bound_refuses_the_call_with_503_and_says_why() {
    runtime().block_on(async {
        let mut o = options(5);
        // Two RTP ports, one per leg: the SBC draws them at random, so
        // someone else holds both on the SBC's address.
        o.sbc_media_ports = 40100..=40103;
        let lab = start_hub_and_sbc(&o);
        let carrier = start_carrier(&lab, &o);
        until_active(&lab).await;
        let _squatters =
            [40100, 40102].map(|p| UdpSocket::bind(SocketAddr::new(lab.addrs.sbc, p)).unwrap());
        call(&carrier);
        until_state(&carrier, 1, "call 1 ended", |s| {
            matches!(s, PstnState::Ended(_))
        })
        .await;
        assert_eq!(
            state(&carrier, 1),
            Some(PstnState::Ended("503 Service Unavailable".into()))
        );
        let problems = lab.sbc.lock().unwrap().problems.joined("; ");
        assert!(problems.contains("cannot bind media port"), "{problems}");
        // The SBC lets go of the call (the carrier's INVITE transaction
        // stays in Completed for Timer D, 32 s on UDP whatever T1 is).
        let sbc_free = || {
            common::held(&lab, None)
                .iter()
                .filter(|(k, _)| k.starts_with("sbc"))
                .all(|(_, v)| *v == 0)
        };
        wait_for("the SBC to hold nothing", Duration::from_secs(10), sbc_free).await;
    });
}

#[test]
fn a_port_taken_on_another_address_does_not_matter_the_sbc_binds_its_own() {
    runtime().block_on(async {
        let mut o = options(6);
        o.sbc_media_ports = 40200..=40299;
        let lab = start_hub_and_sbc(&o);
        let carrier = start_carrier(&lab, &o);
        until_active(&lab).await;
        // Another party on this machine uses the same port on its address:
        // an SBC binding 0.0.0.0 could not open it (and would hear its traffic).
        let other = SocketAddr::new(Ipv4Addr::new(127, 6, 0, 9).into(), 40200);
        let _neighbour = UdpSocket::bind(other).unwrap();
        call(&carrier);
        until_state(&carrier, 1, "call 1 answered", |s| {
            *s == PstnState::Answered
        })
        .await;
        let pstn = carrier.view.lock().unwrap().calls[0].media.clone();
        wait_for("audio at the phone", Duration::from_secs(10), || {
            pstn.lock().unwrap().received >= 10
        })
        .await;
    });
}
