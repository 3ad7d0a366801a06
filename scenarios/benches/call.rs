//! One whole simulated call: the reference world (SBC, three hub proxies,
//! media processor, carrier and phones), OPTIONS up, a PSTN caller reaching
//! a Teams user, 10 s of audio both ways through the SBC's relay (RTP ↔
//! SRTP), BYE, then until every party holds nothing (the transactions'
//! linger, RFC 3261 Timer J/K, is most of it): about 47 s of simulated
//! time. Throughput is given in simulated seconds, so criterion's
//! "elem/s" is how many times faster than real time the world runs.
//! `cargo bench -p scenarios`.

use carrier_sim::trunk::CarrierCommand;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use scenarios::world::{Lab, LabConfig};
use std::time::Duration;

/// Run the call; the frames each far end received and the simulated
/// time it took.
fn call() -> (u32, u32, Duration) {
    let mut lab = Lab::new(LabConfig::default()).expect("the world builds");
    let run = |lab: &mut Lab, secs: u64| lab.run_for(Duration::from_secs(secs)).expect("runs");
    // The SBC's OPTIONS and the hub's: the SBC is active within a second.
    run(&mut lab, 1);
    let caller = "+4930123456".to_string();
    lab.carrier_commands
        .send(CarrierCommand::Call {
            from: caller.clone(),
            to: "+4989000001".into(),
        })
        .expect("the carrier takes commands");
    // Ringing and answer take about 2.7 s; then 10 s of audio.
    run(&mut lab, 12);
    lab.carrier_commands
        .send(CarrierCommand::HangUp { number: caller })
        .expect("the carrier takes commands");
    lab.run_until(Duration::from_secs(60), |l| l.holdings().is_empty())
        .expect("runs");
    assert!(lab.holdings().is_empty(), "{}", lab.holdings());
    let teams = lab
        .hub
        .lock()
        .unwrap()
        .calls
        .back()
        .map(|c| c.media.lock().unwrap().received);
    let pstn = lab
        .carrier
        .lock()
        .unwrap()
        .calls
        .back()
        .map(|c| c.media.lock().unwrap().received);
    (teams.unwrap_or(0), pstn.unwrap_or(0), lab.now())
}

fn whole_call(c: &mut Criterion) {
    // What is measured must be a call: ~10 s of audio each way.
    let (teams, pstn, simulated) = call();
    assert!(
        teams > 450 && pstn > 450,
        "frames: Teams {teams}, PSTN {pstn}"
    );
    println!("one call: {simulated:?} simulated, {teams} and {pstn} frames received");
    let mut g = c.benchmark_group("world");
    g.sample_size(10);
    // Same seed, same run: every iteration simulates exactly this long.
    g.throughput(Throughput::Elements(simulated.as_secs()));
    g.bench_function(
        "inbound call with 10 s of audio (elem = simulated s)",
        |b| {
            b.iter(|| {
                let (_, _, t) = call();
                assert_eq!(t, simulated);
            })
        },
    );
    g.finish();
}

criterion_group!(benches, whole_call);
criterion_main!(benches);
