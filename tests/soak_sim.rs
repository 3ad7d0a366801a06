//! A short `drlab soak` (issue 14 item 7): 100 calls of the day's mix
//! (both ways, transfers, refusals by the PSTN and by Teams, a number
//! nobody has) through one simulated world over a lossy carrier link; each
//! call goes the way its kind expects, every kind occurs, and afterwards
//! no party holds a call, session, transaction or media port. The 10,000-
//! call run and its memory figures are `drlab soak` (docs/security.md).

use scenarios::soak::{run, Kind, SoakPlan};

#[test]
fn a_hundred_mixed_calls_go_as_expected_and_leave_nothing_held() {
    let report = run(
        &SoakPlan {
            calls: 100,
            seed: 1,
            loss_pct: 1.0,
        },
        |_| {},
    )
    .expect("the soak runs");
    assert!(report.unexpected.is_empty(), "{:#?}", report.unexpected);
    assert_eq!(report.held, None);
    for kind in [
        Kind::Inbound,
        Kind::Outbound,
        Kind::Transfer,
        Kind::PstnBusy,
        Kind::TeamsDeclines,
        Kind::NoSuchUser,
    ] {
        assert!(
            report.by_kind.get(&kind).copied().unwrap_or(0) > 0,
            "no {kind:?} call in {:?}",
            report.by_kind
        );
    }
    assert_eq!(report.by_kind.values().sum::<usize>(), 100);
}
