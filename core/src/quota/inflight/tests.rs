use super::*;
use crate::testkit::stores::{InterleavingStore, MemStore};

const KEY: &str = "p:inflight:t";
const VM_A: u64 = 0xa;
const VM_B: u64 = 0xb;

fn limits(in_flight: Option<u32>, streams: Option<u32>) -> Limits {
    Limits {
        max_in_flight: in_flight,
        max_streams: streams,
    }
}

#[test]
fn slots_are_shared_by_every_vm_up_to_the_limit() {
    let s = MemStore::new();
    let l = limits(Some(3), None);
    assert_eq!(acquire(&s, KEY, VM_A, l, false, 0), Ok(Acquire::Taken));
    assert_eq!(acquire(&s, KEY, VM_B, l, false, 0), Ok(Acquire::Taken));
    assert_eq!(acquire(&s, KEY, VM_A, l, false, 0), Ok(Acquire::Taken));
    assert_eq!(
        acquire(&s, KEY, VM_B, l, false, 0),
        Ok(Acquire::Full(Full::InFlight))
    );
    assert_eq!(in_use(&s, KEY, 0), Ok((3, 0)));
    release(&s, KEY, VM_A, false, 1).unwrap();
    assert_eq!(acquire(&s, KEY, VM_B, l, false, 1), Ok(Acquire::Taken));
    for vm in [VM_A, VM_B, VM_B] {
        release(&s, KEY, vm, false, 2).unwrap();
    }
    assert_eq!(in_use(&s, KEY, 2), Ok((0, 0)));
    // An idle tenant's key holds no entries.
    assert_eq!(s.raw(KEY).unwrap(), Vec::<u8>::new());
}

#[test]
fn streams_have_their_own_limit_inside_the_in_flight_one() {
    let s = MemStore::new();
    let l = limits(Some(3), Some(1));
    assert_eq!(acquire(&s, KEY, VM_A, l, true, 0), Ok(Acquire::Taken));
    assert_eq!(
        acquire(&s, KEY, VM_B, l, true, 0),
        Ok(Acquire::Full(Full::Streams))
    );
    assert_eq!(acquire(&s, KEY, VM_B, l, false, 0), Ok(Acquire::Taken));
    assert_eq!(in_use(&s, KEY, 0), Ok((2, 1)));
    release(&s, KEY, VM_A, true, 0).unwrap();
    assert_eq!(acquire(&s, KEY, VM_B, l, true, 0), Ok(Acquire::Taken));
    let only_streams = limits(None, Some(1));
    assert_eq!(
        acquire(&s, KEY, VM_A, only_streams, true, 0),
        Ok(Acquire::Full(Full::Streams))
    );
    assert_eq!(
        acquire(&s, KEY, VM_A, only_streams, false, 0),
        Ok(Acquire::Taken)
    );
}

#[test]
fn a_vm_that_stops_heartbeating_loses_its_slots_after_the_lease() {
    let s = MemStore::new();
    let l = limits(Some(2), None);
    assert_eq!(acquire(&s, KEY, VM_A, l, false, 0), Ok(Acquire::Taken));
    assert_eq!(acquire(&s, KEY, VM_A, l, false, 0), Ok(Acquire::Taken));
    // VM A dies with two slots taken; VM B keeps beating.
    assert_eq!(
        acquire(&s, KEY, VM_B, l, false, LEASE_MS - 1),
        Ok(Acquire::Full(Full::InFlight))
    );
    assert_eq!(
        acquire(&s, KEY, VM_B, l, false, LEASE_MS),
        Ok(Acquire::Taken)
    );
    assert_eq!(in_use(&s, KEY, LEASE_MS), Ok((1, 0)));
}

#[test]
fn heartbeats_keep_a_long_request_slot() {
    let s = MemStore::new();
    let l = limits(Some(1), None);
    assert_eq!(acquire(&s, KEY, VM_A, l, false, 0), Ok(Acquire::Taken));
    let mut now = 0;
    while now < 3 * LEASE_MS {
        now += HEARTBEAT_MS;
        heartbeat(&s, KEY, VM_A, now).unwrap();
    }
    assert_eq!(
        acquire(&s, KEY, VM_B, l, false, now + 1),
        Ok(Acquire::Full(Full::InFlight))
    );
    // A heartbeat of a VM without slots writes nothing.
    let sets = s.sets.load(std::sync::atomic::Ordering::SeqCst);
    heartbeat(&s, KEY, VM_B, now).unwrap();
    assert_eq!(s.sets.load(std::sync::atomic::Ordering::SeqCst), sets);
}

#[test]
fn a_racing_worker_cannot_take_the_same_last_slot() {
    // VM B takes the last slot between VM A's read and write: A's CAS fails, A re-reads
    // and sees the tenant full.
    let l = limits(Some(2), None);
    let s = InterleavingStore::new(2, move |inner| {
        assert_eq!(acquire(inner, KEY, VM_B, l, false, 0), Ok(Acquire::Taken));
    });
    assert_eq!(acquire(&s, KEY, VM_A, l, false, 0), Ok(Acquire::Taken));
    assert_eq!(
        acquire(&s, KEY, VM_A, l, false, 0),
        Ok(Acquire::Full(Full::InFlight))
    );
    assert_eq!(in_use(&s.inner, KEY, 0), Ok((2, 0)));
}

#[test]
fn releasing_an_expired_slot_is_harmless() {
    let s = MemStore::new();
    let l = limits(Some(1), None);
    assert_eq!(acquire(&s, KEY, VM_A, l, false, 0), Ok(Acquire::Taken));
    release(&s, KEY, VM_A, true, LEASE_MS * 2).unwrap();
    assert_eq!(in_use(&s, KEY, LEASE_MS * 2), Ok((0, 0)));
    assert_eq!(decode(&[1, 2, 3]), Vec::new());
}
