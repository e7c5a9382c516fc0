//! The state one worker VM keeps between requests: the hold watch, the request-id source,
//! and the concurrency slots its requests hold (for their heartbeat). One VM serves one
//! Envoy worker thread, so nothing here is shared with other workers; what must be shared
//! lives in the [`SharedStore`].

use std::collections::HashMap;

use super::hold::{HoldWatch, Tick};
use super::ids::RequestIds;
use crate::config::Config;
use crate::quota::inflight::{self, HEARTBEAT_MS};
use crate::quota::SharedStore;

#[derive(Debug)]
pub struct WorkerState {
    pub hold: HoldWatch,
    pub ids: RequestIds,
    /// This VM's identity in shared concurrency slots (random per VM start).
    pub vm: u64,
    /// Slots this VM's requests hold, per shared-data key.
    slots: HashMap<String, u32>,
    last_heartbeat_ms: u64,
}

impl WorkerState {
    /// `seeds`: two random numbers drawn when the VM starts.
    pub fn new(seeds: (u64, u64)) -> WorkerState {
        WorkerState {
            hold: HoldWatch::default(),
            ids: RequestIds::new(seeds.0, seeds.1),
            vm: seeds.0 ^ seeds.1.rotate_left(32),
            slots: HashMap::new(),
            last_heartbeat_ms: 0,
        }
    }

    pub fn took_slot(&mut self, key: &str) {
        *self.slots.entry(key.to_string()).or_insert(0) += 1;
    }

    pub fn gave_slot(&mut self, key: &str) {
        if let Some(n) = self.slots.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.slots.remove(key);
            }
        }
    }

    /// The root context's tick: held requests to time out, and the heartbeat of this
    /// VM's concurrency slots (once per [`HEARTBEAT_MS`]).
    pub fn tick(&mut self, store: &dyn SharedStore, cfg: &Config, now_ms: u64) -> Tick {
        let tick = self.hold.tick(now_ms, cfg.routing.hold_timeout_ms);
        if now_ms.saturating_sub(self.last_heartbeat_ms) >= HEARTBEAT_MS {
            self.last_heartbeat_ms = now_ms;
            for key in self.slots.keys() {
                if inflight::heartbeat(store, key, self.vm, now_ms).is_err() {
                    log::warn!("concurrency: heartbeat of a tenant's slots failed");
                }
            }
        }
        tick
    }
}

/// What a request callback gets besides its own input: the shared store and this worker.
pub struct Worker<'a> {
    pub store: &'a dyn SharedStore,
    pub state: &'a mut WorkerState,
}

#[cfg(test)]
mod tests;
