use super::*;
use crate::quota::inflight::{acquire, in_use, Acquire, Limits, LEASE_MS};
use crate::testkit::stores::MemStore;
use crate::testkit::traffic::demo_config;

#[test]
fn the_tick_keeps_held_slots_alive_past_the_lease() {
    let cfg = demo_config();
    let store = MemStore::new();
    let mut w = WorkerState::new((1, 2));
    let limits = Limits {
        max_in_flight: Some(1),
        max_streams: None,
    };
    assert_eq!(
        acquire(&store, "k", w.vm, limits, false, 0),
        Ok(Acquire::Taken)
    );
    w.took_slot("k");
    let mut now = 0;
    while now < 3 * LEASE_MS {
        now += 100;
        w.tick(&store, &cfg, now);
    }
    assert_eq!(in_use(&store, "k", now), Ok((1, 0)));
    w.gave_slot("k");
    // No slots left: the tick writes nothing, and the entry expires.
    let sets = store.sets.load(std::sync::atomic::Ordering::SeqCst);
    w.tick(&store, &cfg, now + 2 * HEARTBEAT_MS);
    assert_eq!(store.sets.load(std::sync::atomic::Ordering::SeqCst), sets);
    assert_eq!(in_use(&store, "k", now + LEASE_MS), Ok((0, 0)));
}

#[test]
fn vm_ids_differ_with_their_seeds() {
    assert_ne!(WorkerState::new((1, 2)).vm, WorkerState::new((1, 3)).vm);
    assert_ne!(WorkerState::new((1, 2)).vm, WorkerState::new((2, 2)).vm);
}
