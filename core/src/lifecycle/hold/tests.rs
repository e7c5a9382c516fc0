use super::*;

#[test]
fn body_while_held_proves_support() {
    let mut w = HoldWatch::default();
    w.begin(1, 0);
    assert!(!w.body_arrived(1));
    assert_eq!(w.support, HoldSupport::Works);
    // Once proven, rescues (slow clients) never turn holding off.
    for id in 2..10 {
        w.begin(id, 0);
    }
    assert_eq!(w.overdue(1_000, 500).len(), 8);
    assert_eq!(w.support, HoldSupport::Works);
    assert!(w.should_hold());
    assert!(
        w.body_arrived(2),
        "a rescued request knows its headers went upstream"
    );
}

#[test]
fn repeated_rescues_without_proof_stop_holding() {
    let mut w = HoldWatch::default();
    for id in 0..RESCUES_BEFORE_GIVING_UP {
        w.begin(id, 100);
        assert!(w.overdue(200, 500).is_empty(), "not due yet");
        assert_eq!(w.overdue(600, 500), vec![id]);
    }
    assert_eq!(w.support, HoldSupport::Broken);
    assert!(!w.should_hold());
    assert_eq!(w.waiting(), 0);
}

#[test]
fn ended_requests_are_forgotten() {
    let mut w = HoldWatch::default();
    w.begin(7, 0);
    w.end(7);
    assert!(w.overdue(10_000, 500).is_empty());
    assert!(!w.body_arrived(7));
    assert_eq!(w.support, HoldSupport::Unknown);
}
