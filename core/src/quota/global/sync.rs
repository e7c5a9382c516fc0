//! The sync: from the root context's tick, one VM per process reports every slot's
//! pending charges and learns what is globally left, in one call for all of them.
//!
//! RLS v3 hits are unsigned, so a slot's net pending is sent as a charge when positive
//! (`hits` = pending) and as a refund when negative (the same counter's descriptor with
//! the `ai_gateway_refund` marker, `hits` = -pending); with nothing pending the
//! descriptor is a pure read (`hits` 0). Each answer's `limit_remaining` becomes the
//! slot's view, and its share the process's allowance until the next sync.
//!
//! Every report has an id, sent in the call's metadata; a report whose call failed (or
//! whose answer never came) is sent again with the same id until it is acknowledged, and
//! `ai-gateway-ratelimit` counts each id once, so no failure loses or doubles a report.

use super::config::Engine;
use super::slot::Slot;
use super::{with_slot, CallFailure, Counter};
use crate::quota::rls::{self, Code, Descriptor};
use crate::quota::store::{self, SharedStore, StoreError, Stored, CREATE_CAS};

/// Who syncs for this process: `(vm, heartbeat_ms)` under `<prefix>:g:leader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Leader {
    vm: u64,
    heartbeat_ms: u64,
}

impl Stored for Leader {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.vm.to_le_bytes());
        out.extend_from_slice(&self.heartbeat_ms.to_le_bytes());
        out
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Leader {
            vm: u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?),
            heartbeat_ms: u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?),
        })
    }
}

pub fn leader_key(prefix: &str) -> String {
    format!("{prefix}:g:leader")
}

/// Whether this VM syncs for the process now: it already does, or the one that did has
/// not beaten for five intervals (its worker is gone or stuck). The leader renews its
/// heartbeat on every call (1 get + 1 set; 1 get for the others).
pub fn elect(store: &dyn SharedStore, prefix: &str, vm: u64, engine: &Engine, now_ms: u64) -> bool {
    let key = leader_key(prefix);
    let lapse = u64::from(engine.spec.sync_interval_ms)
        .saturating_mul(5)
        .max(1000);
    let me = Leader {
        vm,
        heartbeat_ms: now_ms,
    };
    let Ok((value, cas)) = store.get(&key) else {
        return false;
    };
    let current = value.as_deref().and_then(Leader::from_bytes);
    let mine = match current {
        Some(l) => l.vm == vm || now_ms.saturating_sub(l.heartbeat_ms) > lapse,
        None => true,
    };
    if !mine {
        return false;
    }
    let cas = if current.is_some() {
        cas
    } else {
        Some(CREATE_CAS)
    };
    store.set(&key, &me.to_bytes(), cas).is_ok()
}

/// One slot's part of a sync call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    pub tenant: usize,
    /// The counter's index among the tenant's.
    pub counter: usize,
    pub window: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncCall {
    pub message: Vec<u8>,
    pub items: Vec<Item>,
    /// The `x-ai-gateway-reports` metadata: each descriptor's report id (hex), or empty.
    pub reports: String,
}

/// The call metadata naming each descriptor's report (docs/ratelimit.md).
pub const REPORTS_METADATA: &str = "x-ai-gateway-reports";

/// The tenants with global counters: (index, name, counters).
pub type Tenants<'a> = Vec<(usize, &'a str, &'a [Counter])>;

fn counter<'a>(tenants: &'a Tenants, it: &Item) -> Option<&'a Counter> {
    let (_, _, counters) = tenants.iter().find(|(ti, _, _)| *ti == it.tenant)?;
    counters.get(it.counter)
}

/// Takes every slot's pending report (slots with a report still in flight wait) and
/// builds the call. `None` when there is nothing to send.
pub fn begin(
    store: &dyn SharedStore,
    prefix: &str,
    tenants: &Tenants,
    engine: &Engine,
    now_ms: u64,
    new_id: &mut dyn FnMut() -> u64,
) -> Option<SyncCall> {
    let mut items = Vec::new();
    let mut descriptors: Vec<Descriptor> = Vec::new();
    let mut reports: Vec<String> = Vec::new();
    let mut trips = 0;
    for &(ti, name, counters) in tenants {
        for (ci, c) in counters.iter().enumerate() {
            let key = c.key(prefix, name);
            let t = c.terms(engine);
            let id = new_id();
            let taken: Result<Option<Slot>, StoreError> =
                with_slot(store, &key, &t, now_ms, &mut trips, |s| {
                    let next = s.begin_sync(engine, now_ms, id);
                    (next, next)
                });
            let Ok(Some(s)) = taken else { continue };
            reports.push(if s.report == 0 {
                String::new()
            } else {
                format!("{:x}", s.report)
            });
            descriptors.push(Descriptor {
                entries: c.entries(name, s.in_sync < 0),
                hits: Some(s.in_sync.unsigned_abs()),
                limit: c.limit_override(),
            });
            items.push(Item {
                key,
                tenant: ti,
                counter: ci,
                window: s.window,
            });
        }
    }
    if items.is_empty() {
        return None;
    }
    Some(SyncCall {
        message: rls::encode_request(&engine.spec.domain, &descriptors),
        items,
        reports: reports.join(","),
    })
}

/// What a finished sync did, for the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    pub ok: bool,
    pub slots: usize,
}

/// Applies the service's answer (or the call's failure) to the slots of `items`.
pub fn finish(
    store: &dyn SharedStore,
    tenants: &Tenants,
    engine: &Engine,
    items: &[Item],
    answer: Result<rls::Response, CallFailure>,
    now_ms: u64,
) -> Report {
    let statuses = match answer {
        Ok(r) if r.statuses.len() == items.len() => Ok(r.statuses),
        Ok(_) => Err(CallFailure { grpc_status: 0 }),
        Err(f) => Err(f),
    };
    let mut trips = 0;
    for (i, it) in items.iter().enumerate() {
        let Some(c) = counter(tenants, it) else {
            continue;
        };
        let t = c.terms(engine);
        let status = statuses.as_ref().map(|s| s.get(i).copied());
        let _ = store::update(store, &it.key, Slot::fresh(&t, now_ms), &mut trips, |s| {
            let s = s.current(&t, now_ms);
            let next = match status {
                // A descriptor without a limit at the service (another RLS server that
                // ignored the refund marker): acknowledged, the view kept.
                Ok(Some(st)) if st.limit == 0 => s.synced(it.window, s.view, engine, now_ms),
                Ok(Some(st)) => {
                    let left = if st.code == Code::OverLimit {
                        0
                    } else {
                        u64::from(st.remaining)
                    };
                    s.synced(it.window, left, engine, now_ms)
                }
                Ok(None) | Err(_) => s.sync_failed(),
            };
            (Some(next), ())
        });
    }
    Report {
        ok: statuses.is_ok(),
        slots: items.len(),
    }
}
