//! The per-worker state a request touches: the hold watch (one VM per worker thread, so
//! a thread-local covers exactly this worker's requests) and the shared-data quota store.

use std::cell::RefCell;

use ai_gateway_core::lifecycle::hold::{HoldWatch, Tick};
use ai_gateway_core::lifecycle::Worker;

use crate::store::HostStore;

thread_local! {
    static HOLD: RefCell<HoldWatch> = RefCell::new(HoldWatch::default());
}

/// Runs `f` with this worker's state. Callbacks never nest, so the watch is always free;
/// if it were not, the request would get a watch of its own rather than a failure.
pub fn with<T>(f: impl FnOnce(&mut Worker) -> T) -> T {
    HOLD.with(|cell| match cell.try_borrow_mut() {
        Ok(mut hold) => f(&mut Worker {
            store: &HostStore,
            hold: &mut hold,
        }),
        Err(_) => f(&mut Worker {
            store: &HostStore,
            hold: &mut HoldWatch::default(),
        }),
    })
}

/// The root context's tick over this worker's held requests.
pub fn hold_tick(now_ms: u64, timeout_ms: u64) -> Tick {
    with(|w| w.hold.tick(now_ms, timeout_ms))
}
