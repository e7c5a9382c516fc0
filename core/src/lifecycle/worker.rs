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
    sync_in_flight: Option<InFlight>,
    /// Whether the last sync succeeded (logged on change only).
    sync_ok: bool,
    /// Numbers this VM's report ids.
    report_seq: u64,
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
            report_seq: 0,
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
        // A tenth of the interval early is on time: the tick that should sync may fire a
        // millisecond before the interval is up, and waiting for the next would stretch
        // the interval by a whole tick.
        let interval = u64::from(engine.spec.sync_interval_ms);
        if now_ms.saturating_sub(self.last_sync_ms) + interval / 10 < interval {
            return None;
        }
        if let Some(f) = &self.sync_in_flight {
            // The host always answers a call (its deadline closes it); this only guards
            // against an answer that never comes.
            if now_ms.saturating_sub(f.sent_ms) <= u64::from(engine.spec.timeout_ms) * 4 {
                return None;
            }
            self.sync_in_flight = None;
        }
        if !sync::elect(store, &cfg.shared_data_prefix, self.vm, engine, now_ms) {
            return None;
        }
        self.last_sync_ms = now_ms;
        let tenants = cfg.global_tenants();
        let (vm, seq) = (self.vm, &mut self.report_seq);
        let mut new_id = || {
            *seq = seq.wrapping_add(1);
            report_id(vm, *seq)
        };
        let call = sync::begin(
            store,
            &cfg.shared_data_prefix,
            &tenants,
            engine,
            now_ms,
            &mut new_id,
        )?;
        self.sync_in_flight = Some(InFlight {
            sent_ms: now_ms,
            items: call.items,
            token: None,
        });
        Some(GrpcCall {
            upstream: engine.grpc_service.clone(),
            message: call.message,
            timeout_ms: engine.spec.timeout_ms,
            metadata: vec![(sync::REPORTS_METADATA, call.reports)],
        })
    }

    /// The host's token for the sync call just sent.
    pub fn sync_sent(&mut self, token: u32) {
        if let Some(f) = &mut self.sync_in_flight {
            f.token = Some(token);
        }
    }

    /// The answer to this VM's sync call `token` (or how it failed; `None`: it was never
    /// sent), applied to the slots. An answer to an older call is ignored.
    pub fn sync_answered(
        &mut self,
        store: &dyn SharedStore,
        cfg: &Config,
        token: Option<u32>,
        answer: Result<rls::Response, CallFailure>,
        now_ms: u64,
    ) -> Option<Observation> {
        if self.sync_in_flight.as_ref()?.token != token {
            return None;
        }
        let items = self.sync_in_flight.take()?.items;
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

/// The sync call in flight: when it was sent, the slots it reports, the host's token.
#[derive(Debug)]
struct InFlight {
    sent_ms: u64,
    items: Vec<Item>,
    token: Option<u32>,
}

/// A report id unique across VMs and restarts: this VM's random identity and its sequence
/// number, mixed (SplitMix64's finalizer) so ids of neighbouring VMs do not collide.
fn report_id(vm: u64, seq: u64) -> u64 {
    let mut z = vm ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a request callback gets besides its own input: the shared store and this worker.
pub struct Worker<'a> {
    pub store: &'a dyn SharedStore,
    pub state: &'a mut WorkerState,
}

#[cfg(test)]
mod tests;
