use super::*;

#[test]
fn overdue_held_requests_are_timed_out_once() {
    let mut w = HoldWatch::default();
    w.begin(1, "r1", 0);
    w.begin(2, "r2", 50);
    assert_eq!(w.tick(99, 100), Tick::default());
    let t = w.tick(120, 100);
    assert_eq!(t.time_out, vec![(1, "r1".to_string())]);
    assert_eq!(w.waiting(), 1);
    assert!(w.take_timed_out(1));
    assert!(!w.take_timed_out(1), "asked once");
    assert!(!w.take_timed_out(2));
}

#[test]
fn a_body_in_time_is_never_timed_out_and_slow_clients_change_nothing_for_others() {
    let mut w = HoldWatch::default();
    // Slow clients first: they time out ...
    for id in 0..10 {
        w.begin(id, "slow", 0);
    }
    assert_eq!(w.tick(1_000, 500).time_out.len(), 10);
    // ... and later requests are held exactly the same way.
    w.begin(20, "r", 1_000);
    w.body_arrived(20);
    assert!(w.tick(10_000, 500).time_out.is_empty());
    assert!(!w.take_timed_out(20));
}

#[test]
fn repeated_timeouts_without_any_held_body_warn_once() {
    let mut w = HoldWatch::default();
    let mut warnings = 0;
    for id in 0..(TIMEOUTS_BEFORE_WARNING + 3) {
        w.begin(id, "r", u64::from(id) * 1_000);
        let t = w.tick(u64::from(id) * 1_000 + 600, 500);
        assert_eq!(t.time_out.len(), 1);
        warnings += u32::from(t.warn_no_body);
    }
    assert_eq!(warnings, 1);
}

#[test]
fn no_warning_once_a_body_arrived_while_held() {
    let mut w = HoldWatch::default();
    w.begin(100, "r", 0);
    w.body_arrived(100);
    for id in 0..10 {
        w.begin(id, "r", 0);
    }
    assert!(!w.tick(1_000, 500).warn_no_body);
}

#[test]
fn ended_requests_are_forgotten() {
    let mut w = HoldWatch::default();
    w.begin(7, "r", 0);
    w.end(7);
    assert!(w.tick(10_000, 500).time_out.is_empty());
    assert!(!w.take_timed_out(7));
}
