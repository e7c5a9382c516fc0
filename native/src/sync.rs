//! The global sync of a native module. The process has one quota store, so one sync per
//! process is enough: each configuration with global limits gets a scheduler for the
//! main thread, the tick thread posts a sync check to it every tick, and the check (the
//! core's `sync_due`, which keeps the interval and the leader election) sends the call
//! as a configuration callout. Request workers never pay for it.

use ai_gateway_core::quota::global::CallFailure;
use ai_gateway_core::quota::rls;

use crate::abi::ConfigPtr;
use crate::grpc::{self, From};
use crate::{clock, worker, FilterConfig};

/// A sync check on the main thread.
pub fn check(fc: &FilterConfig, config: ConfigPtr) {
    let (Some(cfg), Some(cluster)) = (&fc.core, fc.cluster()) else {
        return;
    };
    let now_ms = clock::now_ms();
    let Some(call) = worker::with(|w| w.state.sync_due(w.store, cfg, now_ms)) else {
        return;
    };
    match grpc::send(From::Config(config), cluster, &call) {
        Ok(id) => worker::with(|w| w.state.sync_sent(token(id))),
        Err(failure) => answered(fc, config, None, Err(failure)),
    }
}

/// The answer to sync call `id` (`None`: it could not be sent).
pub fn answered(
    fc: &FilterConfig,
    config: ConfigPtr,
    id: Option<u64>,
    answer: Result<rls::Response, CallFailure>,
) {
    let Some(cfg) = &fc.core else {
        return;
    };
    let now_ms = clock::now_ms();
    let obs = worker::with(|w| {
        w.state
            .sync_answered(w.store, cfg, id.map(token), answer, now_ms)
    });
    fc.metrics.record_config(config, obs.as_slice());
}

/// The core's token for a callout: its id's low bits (one sync is in flight at a time).
fn token(id: u64) -> u32 {
    u32::try_from(id & u64::from(u32::MAX)).unwrap_or(0)
}
