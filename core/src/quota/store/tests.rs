use std::sync::atomic::{AtomicU32, Ordering};

use super::super::bucket::{try_take, Limit};
use super::*;
use crate::config::TrafficClass;
use crate::testkit::stores::{BrokenStore, FlakyStore, InterleavingStore, MemStore};

const KEY: &str = "p:q:t:req";

fn limit() -> Limit {
    Limit::new(60.0, 10.0, 0.0).unwrap()
}

fn full() -> BucketState {
    BucketState::full(&limit(), 0)
}

/// One unit taken at t=0, like one worker serving one request.
fn take_one<S: SharedStore + ?Sized>(store: &S, trips: &mut u32) -> Result<bool, StoreError> {
    update(store, KEY, full(), trips, |mut s| {
        let d = try_take(&mut s, 1, 0, &limit(), TrafficClass::Interactive);
        (d.allowed().then_some(s), d.allowed())
    })
}

fn level(store: &MemStore) -> i64 {
    BucketState::decode(&store.raw(KEY).unwrap())
        .unwrap()
        .level_milli
}

#[test]
fn mem_store_has_envoy_semantics() {
    let s = MemStore::new();
    assert_eq!(s.get("k").unwrap(), (None, None));
    s.set("k", b"a", Some(12345)).unwrap(); // missing key: cas ignored
    let (v, cas) = s.get("k").unwrap();
    assert_eq!((v.as_deref(), cas), (Some(&b"a"[..]), Some(1)));
    assert_eq!(s.set("k", b"b", Some(7)), Err(StoreError::CasMismatch));
    s.set("k", b"b", Some(1)).unwrap();
    s.set("k", b"c", None).unwrap(); // unconditional: why we never pass None
    assert_eq!(s.raw("k").unwrap(), b"c");
}

#[test]
fn first_use_creates_then_cas_updates() {
    let store = MemStore::new();
    let mut trips = 0;
    assert!(take_one(&store, &mut trips).unwrap());
    assert_eq!(trips, 4, "get, create, get, set");
    assert_eq!(store.trips(), 4);
    assert_eq!(level(&store), 9_000);
    let mut trips = 0;
    assert!(take_one(&store, &mut trips).unwrap());
    assert_eq!(trips, 2, "steady state: get + set");
    assert_eq!(level(&store), 8_000);
}

#[test]
fn read_only_outcome_is_one_get() {
    let store = MemStore::new();
    store.put_raw(
        KEY,
        &BucketState {
            level_milli: 0,
            last_refill_ms: 0,
        }
        .encode(),
    );
    let mut trips = 0;
    assert!(!take_one(&store, &mut trips).unwrap());
    assert_eq!(trips, 1);
}

#[test]
fn garbage_value_resets_to_full_and_is_overwritten() {
    let store = MemStore::new();
    store.put_raw(KEY, b"\xffgarbage");
    let mut trips = 0;
    assert!(take_one(&store, &mut trips).unwrap());
    assert_eq!(trips, 2);
    assert_eq!(level(&store), 9_000);
}

#[test]
fn cas_mismatch_n_times_then_success() {
    for n in [1u32, 5, MAX_CAS_ATTEMPTS - 1] {
        let store = FlakyStore::new(n);
        store.inner.put_raw(KEY, &full().encode());
        let mut trips = 0;
        assert!(take_one(&store, &mut trips).unwrap(), "n={n}");
        assert_eq!(trips, 2 * (n + 1));
        assert_eq!(level(&store.inner), 9_000, "charged exactly once");
    }
}

#[test]
fn cas_loop_is_bounded() {
    let store = FlakyStore::new(u32::MAX);
    store.inner.put_raw(KEY, &full().encode());
    let mut trips = 0;
    assert_eq!(take_one(&store, &mut trips), Err(StoreError::CasMismatch));
    assert_eq!(trips, 2 * MAX_CAS_ATTEMPTS);
    assert_eq!(level(&store.inner), 10_000, "nothing charged");
}

#[test]
fn store_errors_propagate() {
    let store = BrokenStore {
        gets_work: false,
        calls: AtomicU32::new(0),
    };
    let mut trips = 0;
    assert_eq!(take_one(&store, &mut trips), Err(StoreError::Other));
    assert_eq!(trips, 1);
    let store = BrokenStore {
        gets_work: true,
        calls: AtomicU32::new(0),
    };
    let mut trips = 0;
    assert_eq!(take_one(&store, &mut trips), Err(StoreError::Other));
    assert_eq!(trips, 2);
    assert_eq!(store.calls.load(Ordering::SeqCst), 2);
}

#[test]
fn concurrent_write_between_get_and_set_is_not_lost() {
    // Our first set is preceded by another worker's complete take.
    let store = InterleavingStore::new(1, |inner| {
        let mut t = 0;
        assert!(take_one(inner, &mut t).unwrap());
    });
    store.inner.put_raw(KEY, &full().encode());
    let mut trips = 0;
    assert!(take_one(&store, &mut trips).unwrap());
    assert_eq!(trips, 4, "one lost CAS, one retry");
    assert_eq!(level(&store.inner), 8_000, "both takes counted");
}

#[test]
fn lost_creation_race_does_not_overwrite_the_winner() {
    // Both workers see the key missing; the other one creates it and charges
    // it before our creation write lands. With cas 0 our creation would reset
    // the bucket to full and erase its charge.
    let store = InterleavingStore::new(1, |inner| {
        let mut t = 0;
        assert!(take_one(inner, &mut t).unwrap());
        assert_eq!(t, 4);
    });
    let mut trips = 0;
    assert!(take_one(&store, &mut trips).unwrap());
    assert_eq!(trips, 4, "get, rejected create, get, set");
    assert_eq!(level(&store.inner), 8_000, "both takes counted");
}

#[test]
fn read_is_one_get_and_defaults_to_init() {
    let store = MemStore::new();
    let mut trips = 0;
    assert_eq!(read(&store, KEY, full(), &mut trips).unwrap(), full());
    store.put_raw(
        KEY,
        &BucketState {
            level_milli: 5,
            last_refill_ms: 3,
        }
        .encode(),
    );
    assert_eq!(
        read(&store, KEY, full(), &mut trips).unwrap().level_milli,
        5
    );
    assert_eq!(trips, 2);
    assert_eq!(
        store.sets.load(Ordering::SeqCst),
        1,
        "only the test's own put"
    );
}
