//! The measured voice quality against the model it claims to follow
//! (issue 11, item 3), on a small grid of simulated calls: at zero
//! impairment the MOS a far end measures is the E-model's for the delay it
//! measured; MOS falls as random loss grows; bursty loss scores worse than
//! random loss at the same rate (PLC assumed, G.113 Bpl 25.1); jitter the
//! buffer must absorb costs MOS. Each world is seeded: the figures are the
//! same on every run, so each comparison is exact, not statistical.

use carrier_sim::trunk::CarrierCommand;
use sbc::media::quality::{EModelInput, QualityReport, BPL_G711_PLC};
use sbc::sip::transport::impair::{Impairment, Jitter, Loss};
use scenarios::world::{Lab, LabConfig};
use std::time::Duration;
use teams_sim::hub::{CallState, SbcStatus};

/// One inbound call with `impair` on the link between the SBC and the
/// media processor (both ways); what the Teams side heard over 20 s.
fn heard(impair: impl Fn(&mut Impairment)) -> QualityReport {
    let mut lab = Lab::new(LabConfig::default()).expect("world");
    lab.impair("the SBC", "the media processor", true, impair)
        .expect("impair");
    let fqdn = lab.config.sbc_fqdn.clone();
    lab.run_until(Duration::from_secs(70), |l| {
        l.hub
            .lock()
            .unwrap()
            .sbcs
            .get(&fqdn)
            .is_some_and(|h| h.status == SbcStatus::Active)
    })
    .expect("run");
    lab.carrier_commands
        .send(CarrierCommand::Call {
            from: "+4930123456".into(),
            to: "+4989000001".into(),
        })
        .unwrap();
    let answered = |l: &Lab| {
        l.hub
            .lock()
            .unwrap()
            .calls
            .back()
            .is_some_and(|c| c.state == CallState::Answered)
    };
    assert!(
        lab.run_until(Duration::from_secs(20), answered).unwrap(),
        "call answered"
    );
    lab.run_for(Duration::from_secs(20)).unwrap();
    let media = lab.hub.lock().unwrap().calls.back().unwrap().media.clone();
    let stats = media.lock().unwrap().clone();
    stats.quality.expect("audio at the Teams side").report()
}

#[test]
fn measured_mos_follows_the_e_model() {
    let clean = heard(|_| {});
    // No impairment: the measured MOS is the E-model's at the measured
    // delay (one way + the buffer), nothing lost or late.
    assert_eq!((clean.lost, clean.late_discards), (0, 0), "{clean}");
    assert!(clean.received >= 900, "{clean}");
    let ta = clean.delay_mean_ms.unwrap() + clean.buffer_ms;
    let model = EModelInput {
        bpl: BPL_G711_PLC,
        ..EModelInput::default()
    }
    .with_delay(ta);
    assert!((clean.r_factor - model.r_factor()).abs() < 1e-6, "{clean}");
    assert!(clean.mos > 4.3 && clean.mos <= 4.41, "{clean}");

    // Random loss: more loss, lower MOS, each step of the grid.
    let mut last = clean.clone();
    for pct in [1.0, 3.0, 6.0] {
        let r = heard(|m| m.loss = Loss::Random(pct / 100.0));
        assert!(
            r.effective_loss_pct > last.effective_loss_pct,
            "{pct} %: {r} after {last}"
        );
        assert!(r.mos < last.mos, "{pct} %: {r} after {last}");
        last = r;
    }

    // Loss in bursts is measured as bursty (the Gilbert fit's BurstR), and
    // scores worse than the same measured loss would if it were random:
    // with PLC (Bpl 25.1) isolated losses are concealed, bursts are not.
    // (Two worlds cannot be made to lose exactly the same share, so the
    // comparison is at the bursty call's own measured rate.)
    let random = heard(|m| m.loss = Loss::Random(0.05));
    let bursty = heard(|m| m.loss = Loss::bursts(0.05, 4.0).unwrap());
    assert!(random.burst_ratio < 1.2, "{random}");
    assert!(bursty.burst_ratio > 1.5, "{bursty}");
    let same_rate_random = EModelInput {
        bpl: BPL_G711_PLC,
        ppl: bursty.effective_loss_pct,
        burst_r: 1.0,
        ..EModelInput::default()
    }
    .with_delay(bursty.delay_mean_ms.unwrap() + bursty.buffer_ms);
    // At 3-5 % the E-model's burst penalty is about one R point (G.107
    // §7.5: Ie,eff = 95·Ppl/(Ppl/BurstR + Bpl)); were BurstR ignored, the
    // two would be equal.
    assert!(
        bursty.r_factor < same_rate_random.r_factor() - 0.5 && bursty.mos < same_rate_random.mos(),
        "bursty {bursty} against random at its rate: R {:.1}, MOS {:.2}",
        same_rate_random.r_factor(),
        same_rate_random.mos()
    );

    // Jitter beyond a frame: the buffer grows (delay) and late frames are
    // lost to the listener: MOS falls.
    let jittery = heard(|m| m.jitter = Jitter::Uniform(Duration::from_millis(60)));
    assert!(jittery.buffer_ms > clean.buffer_ms, "{jittery}");
    assert!(jittery.mos < clean.mos, "jitter {jittery} / clean {clean}");
}
