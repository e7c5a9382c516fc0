//! Per-tenant concurrency limits (`max_in_flight`, `max_streams`), exact across the
//! worker VMs of one Envoy process.
//!
//! One shared-data key per tenant holds a slot count per VM: `(vm, in_flight, streams,
//! heartbeat_ms)`. Every change is one compare-and-swap of the whole key, so two workers
//! can never both take the last slot. A VM's entry is refreshed by its root tick
//! ([`heartbeat`]); an entry not refreshed for [`LEASE_MS`] belongs to a VM that is gone
//! (crashed or replaced) and is dropped at the next change, so its slots come back instead
//! of leaking until Envoy restarts. Slots are released in `on_log`, which runs on every end
//! path (completion, refusal, client abort, upstream failure).

use super::store::{SharedStore, StoreError, CREATE_CAS, MAX_CAS_ATTEMPTS};

/// An entry older than this was left by a VM that no longer runs.
pub const LEASE_MS: u64 = 10_000;

/// How often a VM refreshes its entries (well inside the lease).
pub const HEARTBEAT_MS: u64 = 1_000;

const ENTRY_BYTES: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub vm: u64,
    pub in_flight: u32,
    pub streams: u32,
    pub heartbeat_ms: u64,
}

/// The limits of one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_in_flight: Option<u32>,
    pub max_streams: Option<u32>,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    InFlight,
    Streams,
}

impl Full {
    /// The audit reason (and the `kind` of `ai_gateway_quota_rejections_total`).
    pub fn reason(self) -> &'static str {
        match self {
            Full::InFlight => "concurrency_in_flight",
            Full::Streams => "concurrency_streams",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Full::InFlight => "in_flight",
            Full::Streams => "streams",
        }
    }
}

/// The outcome of [`acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    Taken,
    Full(Full),
}

pub fn key(prefix: &str, tenant: &str) -> String {
    format!("{prefix}:inflight:{tenant}")
}

fn decode(bytes: &[u8]) -> Vec<Entry> {
    bytes
        .chunks_exact(ENTRY_BYTES)
        .filter_map(|c| {
            let u64_at = |i: usize| c.get(i..i + 8)?.try_into().ok().map(u64::from_le_bytes);
            let u32_at = |i: usize| c.get(i..i + 4)?.try_into().ok().map(u32::from_le_bytes);
            Some(Entry {
                vm: u64_at(0)?,
                in_flight: u32_at(8)?,
                streams: u32_at(12)?,
                heartbeat_ms: u64_at(16)?,
            })
        })
        .collect()
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for e in entries {
        out.extend_from_slice(&e.vm.to_le_bytes());
        out.extend_from_slice(&e.in_flight.to_le_bytes());
        out.extend_from_slice(&e.streams.to_le_bytes());
        out.extend_from_slice(&e.heartbeat_ms.to_le_bytes());
    }
    out
}

/// Read-modify-write of the key: `step` gets the live entries (expired ones and empty
/// ones of other VMs already dropped) and returns whether to write them back.
fn update<T>(
    store: &dyn SharedStore,
    key: &str,
    now_ms: u64,
    mut step: impl FnMut(&mut Vec<Entry>) -> (bool, T),
) -> Result<T, StoreError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (value, cas) = store.get(key)?;
        let mut entries = value.as_deref().map(decode).unwrap_or_default();
        entries.retain(|e| {
            (e.in_flight > 0 || e.streams > 0) && now_ms.saturating_sub(e.heartbeat_ms) < LEASE_MS
        });
        let (write, out) = step(&mut entries);
        if !write {
            return Ok(out);
        }
        let cas = cas.filter(|c| *c != 0).unwrap_or(CREATE_CAS);
        match store.set(key, &encode(&entries), Some(cas)) {
            Ok(()) => return Ok(out),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::CasMismatch)
}

fn entry_of(entries: &mut Vec<Entry>, vm: u64, now_ms: u64) -> Option<&mut Entry> {
    if !entries.iter().any(|e| e.vm == vm) {
        entries.push(Entry {
            vm,
            in_flight: 0,
            streams: 0,
            heartbeat_ms: now_ms,
        });
    }
    entries.iter_mut().find(|e| e.vm == vm)
}

/// Take a slot (and a stream slot when `stream`) for VM `vm`, or say which limit is full.
pub fn acquire(
    store: &dyn SharedStore,
    key: &str,
    vm: u64,
    limits: Limits,
    stream: bool,
    now_ms: u64,
) -> Result<Acquire, StoreError> {
    update(store, key, now_ms, |entries| {
        let in_flight: u64 = entries.iter().map(|e| u64::from(e.in_flight)).sum();
        let streams: u64 = entries.iter().map(|e| u64::from(e.streams)).sum();
        if limits
            .max_in_flight
            .is_some_and(|m| in_flight >= u64::from(m))
        {
            return (false, Acquire::Full(Full::InFlight));
        }
        if stream && limits.max_streams.is_some_and(|m| streams >= u64::from(m)) {
            return (false, Acquire::Full(Full::Streams));
        }
        if let Some(e) = entry_of(entries, vm, now_ms) {
            e.in_flight = e.in_flight.saturating_add(1);
            e.streams = e.streams.saturating_add(u32::from(stream));
            e.heartbeat_ms = now_ms;
        }
        (true, Acquire::Taken)
    })
}

/// Give back a slot taken by [`acquire`].
pub fn release(
    store: &dyn SharedStore,
    key: &str,
    vm: u64,
    stream: bool,
    now_ms: u64,
) -> Result<(), StoreError> {
    update(store, key, now_ms, |entries| {
        let Some(e) = entries.iter_mut().find(|e| e.vm == vm) else {
            // Expired (this VM's tick stalled past the lease): nothing left to give back.
            return (true, ());
        };
        e.in_flight = e.in_flight.saturating_sub(1);
        if stream {
            e.streams = e.streams.saturating_sub(1);
        }
        e.heartbeat_ms = now_ms;
        entries.retain(|e| e.in_flight > 0 || e.streams > 0);
        (true, ())
    })
}

/// Refresh VM `vm`'s entry so other VMs do not take it for a dead one.
pub fn heartbeat(
    store: &dyn SharedStore,
    key: &str,
    vm: u64,
    now_ms: u64,
) -> Result<(), StoreError> {
    update(store, key, now_ms, |entries| {
        match entries.iter_mut().find(|e| e.vm == vm) {
            Some(e) => {
                e.heartbeat_ms = now_ms;
                (true, ())
            }
            None => (false, ()),
        }
    })
}

/// The slots in use across all live VMs: (in flight, streams).
pub fn in_use(store: &dyn SharedStore, key: &str, now_ms: u64) -> Result<(u64, u64), StoreError> {
    update(store, key, now_ms, |entries| {
        let f = entries.iter().map(|e| u64::from(e.in_flight)).sum();
        let s = entries.iter().map(|e| u64::from(e.streams)).sum();
        (false, (f, s))
    })
}

#[cfg(test)]
mod tests;
