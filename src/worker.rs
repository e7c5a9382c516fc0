//! The per-worker state a request touches (one VM per worker thread, so a thread-local
//! covers exactly this worker's requests) and the shared-data store.

use std::cell::RefCell;

use ai_gateway_core::config::Config;
use ai_gateway_core::lifecycle::hold::Tick;
use ai_gateway_core::lifecycle::{GrpcCall, Worker, WorkerState};
use ai_gateway_core::metrics::Observation;
use ai_gateway_core::quota::global::CallFailure;
use ai_gateway_core::quota::rls;

use crate::abi;
use crate::store::HostStore;

thread_local! {
    static STATE: RefCell<WorkerState> = RefCell::new(WorkerState::new(seeds()));
}

/// Two random seeds for this VM (request ids, concurrency slots). Should the host refuse
/// randomness, the clock keeps VMs apart.
fn seeds() -> (u64, u64) {
    let (a, b) = (abi::random_u64(), abi::random_u64());
    if a == 0 && b == 0 {
        let t = abi::now_nanos();
        (t, t.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15)
    } else {
        (a, b)
    }
}

/// Runs `f` with this worker's state. Callbacks never nest (the root's tick releases the
/// state before it calls the host), so the state is always free; if it were not, the
/// request would get a fresh state rather than a failure.
pub fn with<T>(f: impl FnOnce(&mut Worker) -> T) -> T {
    STATE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut state) => f(&mut Worker {
            store: &HostStore,
            state: &mut state,
        }),
        Err(_) => f(&mut Worker {
            store: &HostStore,
            state: &mut WorkerState::new(seeds()),
        }),
    })
}

/// The root context's tick over this worker's held requests and concurrency slots.
pub fn tick(cfg: &Config, now_ms: u64) -> Tick {
    with(|w| w.state.tick(w.store, cfg, now_ms))
}

/// The root context's tick: the global sync call to send now, if any.
pub fn sync_due(cfg: &Config, now_ms: u64) -> Option<GrpcCall> {
    with(|w| w.state.sync_due(w.store, cfg, now_ms))
}

/// The host's token for the sync call just sent.
pub fn sync_sent(token: u32) {
    with(|w| w.state.sync_sent(token));
}

/// The answer to this VM's sync call `token` (`None`: it could not be sent).
pub fn sync_answered(
    cfg: &Config,
    token: Option<u32>,
    answer: Result<rls::Response, CallFailure>,
    now_ms: u64,
) -> Option<Observation> {
    with(|w| w.state.sync_answered(w.store, cfg, token, answer, now_ms))
}
