//! The state one worker VM keeps between requests: the hold watch, the request-id source,
//! and the concurrency slots its requests hold (for their heartbeat). One VM serves one
//! Envoy worker thread, so nothing here is shared with other workers; what must be shared
//! lives in the [`SharedStore`].

use std::collections::HashMap;

use super::hold::{HoldWatch, Tick};
use super::ids::RequestIds;
use super::plan::GrpcCall;
use crate::config::Config;
use crate::metrics::{sync_observation, Observation};
use crate::quota::global::sync::{self, Item};
use crate::quota::global::CallFailure;
use crate::quota::inflight::{self, HEARTBEAT_MS};
use crate::quota::rls;
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
    /// The global sync: when this VM last sent one, and what the one in flight reports.
    last_sync_ms: u64,
    sync_in_flight: Option<(u64, Vec<Item>)>,
    /// Whether the last sync succeeded (logged on change only).
    sync_ok: bool,
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
            last_sync_ms: 0,
            sync_in_flight: None,
            sync_ok: true,
        }
    }

    /// The root's tick: the sync call to send now, if this VM syncs for the process
    /// (elected through shared data), a sync interval has passed, and none is in flight.
    pub fn sync_due(
        &mut self,
        store: &dyn SharedStore,
        cfg: &Config,
        now_ms: u64,
    ) -> Option<GrpcCall> {
        let engine = cfg.global.as_ref()?;
        let interval = u64::from(engine.spec.sync_interval_ms);
        if now_ms.saturating_sub(self.last_sync_ms) < interval {
            return None;
        }
        if let Some((sent, _)) = &self.sync_in_flight {
            // The host always answers a call (its deadline closes it); this only guards
            // against an answer that never comes.
            if now_ms.saturating_sub(*sent) <= u64::from(engine.spec.timeout_ms) * 4 {
                return None;
            }
            self.sync_in_flight = None;
        }
        if !sync::elect(store, &cfg.shared_data_prefix, self.vm, engine, now_ms) {
            return None;
        }
        self.last_sync_ms = now_ms;
        let tenants = cfg.global_tenants();
        let call = sync::begin(store, &cfg.shared_data_prefix, &tenants, engine, now_ms)?;
        self.sync_in_flight = Some((now_ms, call.items));
        Some(GrpcCall {
            upstream: engine.grpc_service.clone(),
            message: call.message,
            timeout_ms: engine.spec.timeout_ms,
        })
    }

    /// The answer to this VM's sync call (or how it failed), applied to the slots.
    pub fn sync_answered(
        &mut self,
        store: &dyn SharedStore,
        cfg: &Config,
        answer: Result<rls::Response, CallFailure>,
        now_ms: u64,
    ) -> Option<Observation> {
        let (_, items) = self.sync_in_flight.take()?;
        let engine = cfg.global.as_ref()?;
        let tenants = cfg.global_tenants();
        let report = sync::finish(store, &tenants, engine, &items, answer, now_ms);
        if report.ok != self.sync_ok {
            if report.ok {
                log::info!("global quota: the rate limit service answers again");
            } else {
                log::warn!(
                    "global quota: the rate limit service did not answer the sync of {} \
                     counters; tenants fall back to their on_unavailable policy",
                    report.slots
                );
            }
            self.sync_ok = report.ok;
        }
        Some(sync_observation(report.ok))
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
