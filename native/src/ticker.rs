//! The tick of a native module. Proxy-Wasm gives each VM a timer; Envoy's HTTP filter
//! ABI has none, but a stream's scheduler can post an event to its worker thread from
//! any thread. So one module thread wakes every tick and posts a tick event to one live
//! stream of each worker that needs ticks (a held request, or a tenant with a
//! concurrency limit); that event runs the worker's tick on its own thread. A worker
//! with no such stream has nothing to tick: no held request and no concurrency slot.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, Once, OnceLock};
use std::thread::ThreadId;
use std::time::Duration;

use ai_gateway_core::lifecycle::hold::TICK_MS;

use crate::abi::{self, SchedulerPtr};

/// The event id of a tick.
pub const EVENT_TICK: u64 = 1;
/// The event id of a global-sync check (posted to a configuration, on the main thread).
pub const EVENT_SYNC: u64 = 2;

/// Per worker thread: each registered stream's scheduler (as an address: the pointer is
/// only ever handed back to Envoy), by the stream's serial number.
type Registry = HashMap<ThreadId, BTreeMap<u64, usize>>;

fn registry() -> MutexGuard<'static, Registry> {
    static REG: OnceLock<Mutex<Registry>> = OnceLock::new();
    REG.get_or_init(|| Mutex::new(Registry::new()))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Registers a stream of the current worker as a carrier of its worker's ticks.
pub fn register(serial: u64, scheduler: SchedulerPtr) {
    start();
    registry()
        .entry(std::thread::current().id())
        .or_default()
        .insert(serial, scheduler as usize);
}

/// Unregisters the stream (before its scheduler is deleted, so the ticker never posts
/// to a deleted scheduler: posting happens under the same lock).
pub fn unregister(serial: u64) {
    let mut reg = registry();
    let id = std::thread::current().id();
    if let Some(streams) = reg.get_mut(&id) {
        streams.remove(&serial);
        if streams.is_empty() {
            reg.remove(&id);
        }
    }
}

/// Configurations with global limits: their schedulers, by serial number.
fn configs() -> MutexGuard<'static, BTreeMap<u64, usize>> {
    static CONFIGS: OnceLock<Mutex<BTreeMap<u64, usize>>> = OnceLock::new();
    CONFIGS
        .get_or_init(|| Mutex::new(BTreeMap::new()))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Registers a configuration whose global limits sync from the main thread.
pub fn register_config(serial: u64, scheduler: SchedulerPtr) {
    start();
    configs().insert(serial, scheduler as usize);
}

/// Unregisters it (before its scheduler is deleted, as for streams).
pub fn unregister_config(serial: u64) {
    configs().remove(&serial);
}

fn start() {
    static START: Once = Once::new();
    START.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("ai-gateway-tick".to_string())
            .spawn(run);
        if spawned.is_err() {
            log::error!("no tick thread: held requests cannot time out");
        }
    });
}

fn run() {
    loop {
        std::thread::sleep(Duration::from_millis(u64::from(TICK_MS)));
        for sched in configs().values() {
            // SAFETY: as below, for a configuration's scheduler.
            #[allow(unsafe_code)]
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                    *sched as SchedulerPtr,
                    EVENT_SYNC,
                );
            }
        }
        let reg = registry();
        for streams in reg.values() {
            if let Some(sched) = streams.values().next() {
                // SAFETY: the scheduler is registered, so not yet deleted (deletion
                // unregisters under this lock first); commit is thread-safe.
                #[allow(unsafe_code)]
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(
                        *sched as SchedulerPtr,
                        EVENT_TICK,
                    );
                }
            }
        }
    }
}
