use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::super::bucket::BucketState;
use super::super::config::bucket_key;
use super::super::store::MAX_CAS_ATTEMPTS;
use super::*;
use crate::testkit::stores::{BrokenStore, FlakyStore, InterleavingStore, MemStore, PartialStore};

fn cfg(json: &str) -> QuotaConfig {
    let c: QuotaConfig = serde_json::from_str(json).unwrap();
    c.validate("q").unwrap();
    c
}

/// 60 req/min (burst 60), 600 tok/min (10/s) with burst 100.
fn basic() -> QuotaConfig {
    cfg(r#"{"requests_per_minute": 60, "tokens_per_minute": 600, "token_burst": 100}"#)
}

fn req(tokens: u64) -> QuotaRequest<'static> {
    QuotaRequest {
        prefix: "gw",
        tenant: "acme",
        model: Some("m"),
        estimated_tokens: tokens,
        class: TrafficClass::Interactive,
        on_store_error: FailureMode::Open,
    }
}

fn level(store: &MemStore, kind: BucketKind, model: Option<&str>) -> i64 {
    let raw = store.raw(&bucket_key("gw", "acme", kind, model)).unwrap();
    BucketState::decode(&raw).unwrap().level_milli
}

#[test]
fn unlimited_tenant_costs_nothing() {
    let store = MemStore::new();
    let out = reserve(&store, &QuotaConfig::default(), &req(1_000), 0);
    assert_eq!(out.verdict, ReserveVerdict::Allowed);
    assert_eq!(out.round_trips, 0);
    assert!(out.reports.is_empty() && !out.degraded);
    let s = settle(&store, out.reservation.unwrap(), 5, 0);
    assert_eq!(s.round_trips, 0);
    assert_eq!(store.trips(), 0);
}

#[test]
fn burst_n_gives_exactly_n_allows() {
    let store = MemStore::new();
    let config = cfg(r#"{"requests_per_minute": 10, "request_burst": 7}"#);
    let allowed = (0..20)
        .filter(|_| reserve(&store, &config, &req(0), 1_000).verdict == ReserveVerdict::Allowed)
        .count();
    assert_eq!(allowed, 7);
}

#[test]
fn round_trips_first_use_steady_state_and_settle() {
    let store = MemStore::new();
    let first = reserve(&store, &basic(), &req(10), 0);
    assert_eq!(first.verdict, ReserveVerdict::Allowed);
    assert_eq!(first.round_trips, 8, "two buckets, each get+create+get+set");
    assert_eq!(store.trips(), 8);
    let out = reserve(&store, &basic(), &req(10), 0);
    assert_eq!(out.round_trips, 4, "two buckets, get+set each");
    let res = out.reservation.unwrap();
    assert_eq!(res.reserved_tokens, 10);
    assert_eq!(
        res.buckets
            .iter()
            .map(|b| (b.kind, b.charged))
            .collect::<Vec<_>>(),
        [(BucketKind::Requests, 1), (BucketKind::Tokens, 10)]
    );
    assert_eq!(
        settle(&store, res.clone(), 10, 0).round_trips,
        0,
        "exact estimate: nothing to do"
    );
    assert_eq!(settle(&store, res, 4, 0).round_trips, 2);
}

#[test]
fn reports_remaining_and_reset() {
    let store = MemStore::new();
    let out = reserve(&store, &basic(), &req(30), 0);
    let r = &out.reports;
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0].kind, r[0].limit, r[0].remaining, r[0].reset_ms),
        (BucketKind::Requests, 60, 59, 1_000)
    );
    assert_eq!(
        (r[1].kind, r[1].limit, r[1].remaining, r[1].reset_ms),
        (BucketKind::Tokens, 100, 70, 3_000)
    );
}

#[test]
fn token_denial_refunds_request_bucket() {
    let store = MemStore::new();
    assert_eq!(
        reserve(&store, &basic(), &req(95), 0).verdict,
        ReserveVerdict::Allowed
    );
    let out = reserve(&store, &basic(), &req(10), 0);
    assert_eq!(
        out.verdict,
        ReserveVerdict::Denied {
            kind: BucketKind::Tokens,
            retry_after_ms: 500
        }
    );
    assert!(out.reservation.is_none() && !out.degraded);
    assert_eq!(
        level(&store, BucketKind::Requests, None),
        59_000,
        "only the first request is counted"
    );
    assert_eq!(level(&store, BucketKind::Tokens, None), 5_000);
    assert_eq!(out.round_trips, 2 + 1 + 2, "req take, tok get, req refund");
    assert_eq!(
        out.reports[0].remaining, 59,
        "report refreshed after the refund"
    );
    assert!(out.reports[1].denied);
}

#[test]
fn too_large_is_refused_outright_and_refunded() {
    let store = MemStore::new();
    let out = reserve(&store, &basic(), &req(101), 0);
    assert_eq!(
        out.verdict,
        ReserveVerdict::TooLarge {
            kind: BucketKind::Tokens,
            cost: 101,
            max: 100
        }
    );
    assert_eq!(level(&store, BucketKind::Requests, None), 60_000);
    assert_eq!(level(&store, BucketKind::Tokens, None), 100_000);
}

#[test]
fn model_bucket_denial_refunds_all_earlier_buckets() {
    let store = MemStore::new();
    let config = cfg(
        r#"{"requests_per_minute": 60, "tokens_per_minute": 600, "token_burst": 100,
            "models": {"m": {"requests_per_minute": 30, "tokens_per_minute": 60, "token_burst": 20}}}"#,
    );
    let ok = reserve(&store, &config, &req(15), 0);
    assert_eq!(ok.verdict, ReserveVerdict::Allowed);
    assert_eq!(ok.reservation.as_ref().unwrap().buckets.len(), 4);
    let out = reserve(&store, &config, &req(10), 0);
    assert_eq!(
        out.verdict,
        ReserveVerdict::Denied {
            kind: BucketKind::Tokens,
            retry_after_ms: 5_000
        }
    );
    assert_eq!(level(&store, BucketKind::Requests, None), 59_000);
    assert_eq!(level(&store, BucketKind::Requests, Some("m")), 29_000);
    assert_eq!(level(&store, BucketKind::Tokens, None), 85_000);
    assert_eq!(level(&store, BucketKind::Tokens, Some("m")), 5_000);
    // Another model only sees the tenant buckets.
    let mut other = req(10);
    other.model = Some("other");
    assert_eq!(
        reserve(&store, &config, &other, 0).verdict,
        ReserveVerdict::Allowed
    );
}

#[test]
fn retry_after_then_allowed() {
    let store = MemStore::new();
    let config = cfg(r#"{"requests_per_minute": 60, "request_burst": 1}"#);
    assert_eq!(
        reserve(&store, &config, &req(0), 0).verdict,
        ReserveVerdict::Allowed
    );
    let out = reserve(&store, &config, &req(0), 400);
    assert_eq!(
        out.verdict,
        ReserveVerdict::Denied {
            kind: BucketKind::Requests,
            retry_after_ms: 600
        }
    );
    assert_eq!(
        reserve(&store, &config, &req(0), 1_000).verdict,
        ReserveVerdict::Allowed
    );
}

#[test]
fn class_reserve_blocks_batch_not_interactive() {
    let store = MemStore::new();
    let config =
        cfg(r#"{"tokens_per_minute": 600, "token_burst": 100, "interactive_reserve": 0.3}"#);
    let mut batch = req(70);
    batch.class = TrafficClass::Batch;
    let out = reserve(&store, &config, &batch, 0);
    assert_eq!(out.verdict, ReserveVerdict::Allowed);
    assert_eq!(
        out.reports[0].remaining, 0,
        "batch sees nothing left above the reserve"
    );
    batch.estimated_tokens = 1;
    assert!(matches!(
        reserve(&store, &config, &batch, 0).verdict,
        ReserveVerdict::Denied { .. }
    ));
    let out = reserve(&store, &config, &req(30), 0);
    assert_eq!(out.verdict, ReserveVerdict::Allowed);
    batch.estimated_tokens = 71;
    let out = reserve(&store, &config, &batch, 0);
    assert_eq!(
        out.verdict,
        ReserveVerdict::TooLarge {
            kind: BucketKind::Tokens,
            cost: 71,
            max: 70
        }
    );
}

#[test]
fn settle_refunds_charges_and_never_denies() {
    let store = MemStore::new();
    let res = reserve(&store, &basic(), &req(50), 0).reservation.unwrap();
    let s = settle(&store, res, 20, 0);
    assert!(!s.degraded);
    assert_eq!(
        level(&store, BucketKind::Tokens, None),
        80_000,
        "over-reservation refunded"
    );
    assert_eq!(s.reports[0].remaining, 80);

    let res = reserve(&store, &basic(), &req(50), 0).reservation.unwrap();
    let _ = settle(&store, res, 150, 0);
    assert_eq!(
        level(&store, BucketKind::Tokens, None),
        -70_000,
        "under-reservation charged into debt"
    );
    let out = reserve(&store, &basic(), &req(1), 0);
    assert_eq!(
        out.verdict,
        ReserveVerdict::Denied {
            kind: BucketKind::Tokens,
            retry_after_ms: 7_100
        }
    );
    assert_eq!(
        reserve(&store, &basic(), &req(1), 7_100).verdict,
        ReserveVerdict::Allowed
    );
}

#[test]
fn zero_token_request_reads_the_token_bucket_and_never_owes() {
    let store = MemStore::new();
    let res = reserve(&store, &basic(), &req(50), 0).reservation.unwrap();
    let _ = settle(&store, res, 150, 0);
    assert_eq!(level(&store, BucketKind::Tokens, None), -50_000);
    let before = store.trips();
    // A body-less request (0 tokens) adds nothing to the debt: allowed, no token write.
    let out = reserve(&store, &basic(), &req(0), 0);
    assert_eq!(out.verdict, ReserveVerdict::Allowed);
    assert_eq!(out.round_trips, 3, "requests get+set, tokens get");
    assert_eq!(store.trips() - before, 3);
    assert_eq!(level(&store, BucketKind::Tokens, None), -50_000);
    let tokens = out
        .reports
        .iter()
        .find(|r| r.kind == BucketKind::Tokens)
        .unwrap();
    assert_eq!((tokens.remaining, tokens.denied), (0, false));
}

#[test]
fn failed_upstream_gets_full_refund() {
    let store = MemStore::new();
    let res = reserve(&store, &basic(), &req(60), 0).reservation.unwrap();
    let _ = settle(&store, res, 0, 0);
    assert_eq!(level(&store, BucketKind::Tokens, None), 100_000);
    assert_eq!(
        level(&store, BucketKind::Requests, None),
        59_000,
        "the request itself still counts"
    );
}

#[test]
fn broken_store_fails_open_or_closed() {
    let store = BrokenStore {
        gets_work: false,
        calls: AtomicU32::new(0),
    };
    let out = reserve(&store, &basic(), &req(10), 0);
    assert_eq!(out.verdict, ReserveVerdict::Allowed);
    assert!(out.degraded);
    assert_eq!(out.round_trips, 2);
    let res = out.reservation.unwrap();
    assert!(res.buckets.iter().all(|b| b.charged == 0));
    let s = settle(&store, res, 10, 0);
    assert!(s.degraded);

    let mut closed = req(10);
    closed.on_store_error = FailureMode::Closed;
    let out = reserve(&store, &basic(), &closed, 0);
    assert_eq!(out.verdict, ReserveVerdict::StoreUnavailable);
    assert!(out.degraded && out.reservation.is_none());
    assert_eq!(out.round_trips, 1, "stops at the first failure");
}

#[test]
fn token_store_failure_after_request_charge() {
    // The request bucket works, the token bucket's key always errors.
    let store = PartialStore {
        inner: MemStore::new(),
        failing: ":tok",
    };
    let mut closed = req(10);
    closed.on_store_error = FailureMode::Closed;
    let out = reserve(&store, &basic(), &closed, 0);
    assert_eq!(out.verdict, ReserveVerdict::StoreUnavailable);
    assert!(out.degraded);
    assert_eq!(
        level(&store.inner, BucketKind::Requests, None),
        60_000,
        "request refunded"
    );

    let out = reserve(&store, &basic(), &req(10), 0);
    assert_eq!(out.verdict, ReserveVerdict::Allowed);
    assert!(out.degraded);
    assert_eq!(out.reports.len(), 1, "no report for the unreadable bucket");
    let res = out.reservation.unwrap();
    assert_eq!(
        res.buckets.iter().map(|b| b.charged).collect::<Vec<_>>(),
        [1, 0]
    );
    assert_eq!(level(&store.inner, BucketKind::Requests, None), 59_000);
}

#[test]
fn cas_exhaustion_counts_as_store_error() {
    let store = FlakyStore::new(0);
    let _ = reserve(&store, &basic(), &req(1), 0); // keys exist now
    store.fail_sets.store(u32::MAX, Ordering::SeqCst);
    let mut closed = req(1);
    closed.on_store_error = FailureMode::Closed;
    let out = reserve(&store, &basic(), &closed, 0);
    assert_eq!(out.verdict, ReserveVerdict::StoreUnavailable);
    assert_eq!(out.round_trips, 2 * MAX_CAS_ATTEMPTS);
    let out = reserve(&store, &basic(), &req(1), 0);
    assert_eq!((out.verdict, out.degraded), (ReserveVerdict::Allowed, true));
}

#[test]
fn fail_open_reservation_is_charged_at_settle() {
    let broken = BrokenStore {
        gets_work: false,
        calls: AtomicU32::new(0),
    };
    let res = reserve(&broken, &basic(), &req(10), 0).reservation.unwrap();
    let store = MemStore::new(); // the store recovered
    let s = settle(&store, res, 25, 0);
    assert!(!s.degraded);
    assert_eq!(level(&store, BucketKind::Tokens, None), 75_000);
}

#[test]
fn cas_contention_during_reserve_is_retried() {
    let store = FlakyStore::new(3);
    let out = reserve(&store, &basic(), &req(10), 0);
    assert_eq!(out.verdict, ReserveVerdict::Allowed);
    assert!(!out.degraded);
    assert_eq!(level(&store.inner, BucketKind::Tokens, None), 90_000);
}

#[test]
fn other_worker_between_get_and_set_is_not_lost() {
    // The other worker reserves right before our request-bucket write.
    let store = InterleavingStore::new(1, |inner| {
        assert_eq!(
            reserve(inner, &basic(), &req(40), 0).verdict,
            ReserveVerdict::Allowed
        );
    });
    let out = reserve(&store, &basic(), &req(30), 0);
    assert_eq!(out.verdict, ReserveVerdict::Allowed);
    assert_eq!(level(&store.inner, BucketKind::Requests, None), 58_000);
    assert_eq!(level(&store.inner, BucketKind::Tokens, None), 30_000);
}

#[test]
fn other_worker_on_existing_keys_is_not_lost() {
    let store = InterleavingStore::new(2, |inner| {
        assert_eq!(
            reserve(inner, &basic(), &req(5), 0).verdict,
            ReserveVerdict::Allowed
        );
    });
    let _ = reserve(&store.inner, &basic(), &req(0), 0); // keys exist
                                                         // Our set #1 is the request bucket, #2 the token bucket: race on it.
    let out = reserve(&store, &basic(), &req(10), 0);
    assert_eq!(out.verdict, ReserveVerdict::Allowed);
    assert_eq!(out.round_trips, 6, "one extra get+set for the lost CAS");
    assert_eq!(level(&store.inner, BucketKind::Requests, None), 57_000);
    assert_eq!(level(&store.inner, BucketKind::Tokens, None), 85_000);
}

#[test]
fn threads_sharing_a_store_never_overspend() {
    let store = Arc::new(MemStore::new());
    let config = Arc::new(cfg(r#"{"requests_per_minute": 1, "request_burst": 100}"#));
    let allowed = Arc::new(AtomicU32::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (store, config, allowed) = (store.clone(), config.clone(), allowed.clone());
            std::thread::spawn(move || {
                for _ in 0..40 {
                    let out = reserve(&*store, &config, &req(0), 5_000);
                    if out.verdict == ReserveVerdict::Allowed && !out.degraded {
                        allowed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(allowed.load(Ordering::SeqCst), 100);
    assert_eq!(level(&store, BucketKind::Requests, None), 0);
}

#[test]
fn config_push_keeps_bucket_and_clamps_to_new_burst() {
    let store = MemStore::new();
    let old = cfg(r#"{"tokens_per_minute": 6000, "token_burst": 1000}"#);
    let _ = reserve(&store, &old, &req(100), 0);
    let new = cfg(r#"{"tokens_per_minute": 600, "token_burst": 50}"#);
    let out = reserve(&store, &new, &req(10), 0);
    assert_eq!(
        out.reports[0].remaining, 40,
        "900 left, clamped to 50, minus 10"
    );
    let bigger = cfg(r#"{"tokens_per_minute": 60000, "token_burst": 5000}"#);
    let out = reserve(&store, &bigger, &req(10), 0);
    assert_eq!(
        out.reports[0].remaining, 30,
        "a larger burst is not a free refill"
    );
}

#[test]
fn peek_reads_without_writing() {
    let store = MemStore::new();
    let out = peek(&store, &basic(), &req(0), 0);
    assert_eq!(out.round_trips, 2);
    assert_eq!(
        out.reports.iter().map(|r| r.remaining).collect::<Vec<_>>(),
        [60, 100]
    );
    assert_eq!(store.sets.load(Ordering::SeqCst), 0);
    let _ = reserve(&store, &basic(), &req(30), 0);
    let out = peek(&store, &basic(), &req(0), 1_000);
    assert_eq!(
        out.reports.iter().map(|r| r.remaining).collect::<Vec<_>>(),
        [60, 80]
    );
    let broken = BrokenStore {
        gets_work: false,
        calls: AtomicU32::new(0),
    };
    assert!(peek(&broken, &basic(), &req(0), 0).degraded);
}
