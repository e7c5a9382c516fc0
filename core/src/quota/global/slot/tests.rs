use super::*;
use crate::quota::global::config::Engine;
use crate::quota::global::tests::engine;

fn terms(e: &Engine, limit: u32, on: OnUnavailable) -> Terms<'_> {
    Terms {
        limit,
        unit: Unit::Hour,
        on_unavailable: on,
        engine: e,
    }
}

const T0: u64 = 1_800_000_000_000;

#[test]
fn encoding_round_trips_negative_fields() {
    let s = Slot {
        window: T0,
        view: 7,
        allowance: -3,
        pending: -120,
        in_sync: 5,
        sent_ms: 9,
        synced_ms: 10,
        started_ms: 11,
        local_used: -1,
        failures: 2,
        report: 0xfeed,
    };
    assert_eq!(Slot::decode(&s.encode()), Some(s));
    assert_eq!(Slot::decode(&s.encode()[1..]), None);
    let mut wrong = s.encode();
    wrong[0] = 9;
    assert_eq!(Slot::decode(&wrong), None);
}

#[test]
fn a_fresh_window_gives_each_replica_its_share_rounded_up() {
    let e = engine(2);
    let t = terms(&e, 101, OnUnavailable::Local);
    let s = Slot::fresh(&t, T0 + 5);
    assert_eq!(s.window, T0 - T0 % 3_600_000);
    assert_eq!(s.view, 101);
    assert_eq!(s.allowance, 51);
    assert_eq!(share(1, 3), 1, "the last unit is admitted somewhere");
}

#[test]
fn take_spends_the_share_then_refuses_until_the_next_sync() {
    let e = engine(2);
    let t = terms(&e, 10, OnUnavailable::Local);
    let mut s = Slot::fresh(&t, T0);
    for _ in 0..5 {
        let (next, take) = s.take(1, &t, T0 + 1, true);
        assert_eq!(take, Take::Global);
        s = next.unwrap();
    }
    assert_eq!((s.allowance, s.pending, s.local_used), (0, 5, 5));
    let (next, take) = s.take(1, &t, T0 + 2, true);
    assert!(next.is_none());
    assert_eq!(
        take,
        Take::Denied {
            retry_after_ms: 200,
            fallback: false
        },
        "globally there is room: the next sync brings a share"
    );
    assert_eq!(s.take(11, &t, T0, true).1, Take::TooLarge);
}

#[test]
fn a_sync_replaces_the_share_and_counts_what_was_admitted_meanwhile() {
    let e = engine(2);
    let t = terms(&e, 100, OnUnavailable::Local);
    let mut s = Slot::fresh(&t, T0);
    s.charge(30);
    let s = s.begin_sync(&e, T0 + 200, 41).unwrap();
    assert_eq!((s.in_sync, s.pending), (30, 0));
    assert!(
        s.begin_sync(&e, T0 + 300, 42).is_none(),
        "one report in flight at a time"
    );
    let mut s = s;
    s.charge(4); // admitted while the report is in flight
    let s = s.synced(s.window, 60, &e, T0 + 250);
    assert_eq!(s.view, 60);
    assert_eq!(s.allowance, 30 - 4);
    assert_eq!((s.in_sync, s.pending, s.failures), (0, 4, 0));
}

#[test]
fn a_failed_or_lost_report_is_sent_again_under_its_id() {
    let e = engine(2);
    let t = terms(&e, 100, OnUnavailable::Local);
    let mut s = Slot::fresh(&t, T0);
    s.charge(7);
    let sent = s.begin_sync(&e, T0 + 200, 41).unwrap();
    assert_eq!((sent.in_sync, sent.report, sent.pending), (7, 41, 0));
    let mut failed = sent.sync_failed();
    assert_eq!((failed.in_sync, failed.report, failed.failures), (7, 41, 1));
    failed.charge(3); // admitted meanwhile: the next report, not this one
    let again = failed.begin_sync(&e, T0 + 400, 42).unwrap();
    assert_eq!((again.in_sync, again.report, again.pending), (7, 41, 3));
    // An answer that never came: overdue, sent again, still under its id.
    let overdue = again.begin_sync(&e, T0 + 400 + 1001, 43).unwrap();
    assert_eq!((overdue.in_sync, overdue.report), (7, 41));
    let acked = overdue.synced(overdue.window, 90, &e, T0 + 1500);
    assert_eq!((acked.in_sync, acked.report, acked.failures), (0, 0, 0));
    let next = acked.begin_sync(&e, T0 + 1700, 44).unwrap();
    assert_eq!((next.in_sync, next.report), (3, 44));
    let nothing = next
        .synced(next.window, 87, &e, T0 + 1800)
        .begin_sync(&e, T0 + 1900, 45)
        .unwrap();
    assert_eq!(
        (nothing.in_sync, nothing.report),
        (0, 0),
        "a pure read has no id"
    );
}

#[test]
fn unreachable_local_enforces_the_limit_over_expected_replicas() {
    let e = engine(2);
    let t = terms(&e, 10, OnUnavailable::Local);
    let mut s = Slot::fresh(&t, T0).sync_failed();
    assert!(!s.healthy(&e, T0));
    for _ in 0..5 {
        let (next, take) = s.take(1, &t, T0 + 10, true);
        assert_eq!(take, Take::LocalFallback);
        s = next.unwrap();
    }
    let (_, take) = s.take(1, &t, T0 + 10, true);
    assert!(matches!(take, Take::Denied { fallback: true, .. }));
    assert_eq!(s.pending, 5, "reported once the service answers again");
    let closed = terms(&e, 10, OnUnavailable::Closed);
    assert_eq!(s.take(1, &closed, T0, true).1, Take::Unavailable);
}

#[test]
fn no_sync_for_too_long_is_unreachable_too() {
    let e = engine(2);
    let t = terms(&e, 10, OnUnavailable::Local);
    let s = Slot::fresh(&t, T0);
    assert!(s.healthy(&e, T0 + e.stale_after_ms()));
    assert!(!s.healthy(&e, T0 + e.stale_after_ms() + 1));
    assert_eq!(s.take(1, &t, T0, false).1, Take::LocalFallback);
}

#[test]
fn a_new_window_starts_fresh_and_old_corrections_are_dropped() {
    let e = engine(2);
    let t = terms(&e, 10, OnUnavailable::Local);
    let mut s = Slot::fresh(&t, T0);
    s.charge(5);
    let old = s.window;
    let next = s.current(&t, old + 3_600_000);
    assert_eq!((next.pending, next.allowance, next.view), (0, 5, 10));
    assert_eq!(next.correct(-3, old), None);
    assert_eq!(next.correct(0, next.window), None);
    assert_eq!(next.correct(2, next.window).unwrap().pending, 2);
}
