//! The per-worker state a request touches. Envoy runs each stream on one worker thread
//! from start to end, so a thread-local holds exactly that worker's requests (what one
//! Proxy-Wasm VM holds); the quota store is the process-wide map.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use ai_gateway_core::config::Config;
use ai_gateway_core::lifecycle::hold::Tick;
use ai_gateway_core::lifecycle::{Worker, WorkerState};

use crate::store::ProcessStore;

thread_local! {
    static STATE: RefCell<WorkerState> = RefCell::new(WorkerState::new(seeds()));
}

/// Two random seeds for this worker (request ids, concurrency slots): the standard
/// library's per-map random keys come from the operating system.
pub fn seeds() -> (u64, u64) {
    let draw = || {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(crate::clock::now_nanos());
        h.finish()
    };
    (draw(), draw())
}

/// Runs `f` with this worker's state. Event hooks of one thread never nest, so the state
/// is free; were it not, the request would get a fresh state rather than a failure.
pub fn with<T>(f: impl FnOnce(&mut Worker) -> T) -> T {
    STATE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut state) => f(&mut Worker {
            store: &ProcessStore,
            state: &mut state,
        }),
        Err(_) => f(&mut Worker {
            store: &ProcessStore,
            state: &mut WorkerState::new(seeds()),
        }),
    })
}

/// This worker's tick over its held requests and concurrency slots.
pub fn tick(cfg: &Config, now_ms: u64) -> Tick {
    with(|w| w.state.tick(w.store, cfg, now_ms))
}
