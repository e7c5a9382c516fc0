//! The `ai_gateway_wasm_memory_bytes{vm}` gauge: this VM's linear memory, in bytes.
//!
//! Envoy runs one VM per worker thread (and two on the main thread) for a `vm_id`, and a
//! stat name is one gauge for the whole process: VMs setting the same name would
//! overwrite each other, so each VM reports under a label of its own. At its first
//! report a VM takes the next ordinal from a counter in shared data (process-wide per
//! `vm_id`, updated with compare-and-swap), so the label values are `0..N-1` for the N
//! VMs Envoy has started for this `vm_id` since the process started (a VM started again
//! after a failure takes a new one). Ordinals from [`MAX_VMS`] on are not reported, so
//! the label stays bounded whatever happens. Linear memory only grows, so the gauge is
//! the VM's high-water mark: it is set when a configuration is loaded and on every
//! root-context tick.

use std::cell::Cell;

use ai_gateway_core::contract::metric;
use ai_gateway_core::metrics::series_name;
use ai_gateway_core::quota::{SharedStore, StoreError, CREATE_CAS, MAX_CAS_ATTEMPTS};

use crate::abi;
use crate::store::HostStore;

/// The root context's timer when no other feature arms one (the gauge's refresh).
pub const TICK_MS: u32 = 1000;

/// Ordinals at or above this report nothing (the `vm` label's hard bound).
pub const MAX_VMS: u32 = 256;

/// Shared-data key of the next free ordinal (a decimal number). Quota keys always
/// contain `:q:`, so no configured prefix can collide with it.
const ORDINAL_KEY: &str = "ai-gateway-filter.vm_ordinal";

const METRIC_GAUGE: u32 = 1;
const WASM_PAGE_BYTES: u64 = 65536;

#[derive(Clone, Copy)]
enum Slot {
    /// No ordinal yet (or taking one failed: the next report tries again).
    Unset,
    /// Ordinal taken, gauge not defined yet (defining failed: the next report retries).
    Ordinal(u32),
    /// The gauge's metric id.
    Gauge(u32),
    /// Over [`MAX_VMS`]: this VM never reports.
    Unreported,
}

thread_local! {
    // One VM per thread, and a VM is single-threaded.
    static SLOT: Cell<Slot> = const { Cell::new(Slot::Unset) };
}

/// Sets this VM's gauge to its current linear memory size.
pub fn report() {
    let Some(id) = gauge() else {
        return;
    };
    let pages = core::arch::wasm32::memory_size::<0>() as u64;
    abi::record_metric(id, pages.saturating_mul(WASM_PAGE_BYTES));
}

fn gauge() -> Option<u32> {
    let ordinal = match SLOT.with(Cell::get) {
        Slot::Gauge(id) => return Some(id),
        Slot::Unreported => return None,
        Slot::Ordinal(n) => n,
        Slot::Unset => take_ordinal(&HostStore).ok()?,
    };
    if ordinal >= MAX_VMS {
        SLOT.with(|s| s.set(Slot::Unreported));
        return None;
    }
    SLOT.with(|s| s.set(Slot::Ordinal(ordinal)));
    let name = series_name(metric::WASM_MEMORY_BYTES, &[("vm", &ordinal.to_string())]);
    let id = abi::define_metric(METRIC_GAUGE, &name).ok()?;
    SLOT.with(|s| s.set(Slot::Gauge(id)));
    Some(id)
}

/// The counter's value before this VM's increment. A missing key is created (at 0) with
/// [`CREATE_CAS`], so two VMs racing to create it cannot both start from 0.
fn take_ordinal(store: &impl SharedStore) -> Result<u32, StoreError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (value, cas) = store.get(ORDINAL_KEY)?;
        let (Some(value), Some(cas)) = (value, cas) else {
            match store.set(ORDINAL_KEY, b"0", Some(CREATE_CAS)) {
                Ok(()) | Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
            }
        };
        let next: u32 = std::str::from_utf8(&value)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(StoreError::Other)?;
        let bumped = next.saturating_add(1).to_string();
        match store.set(ORDINAL_KEY, bumped.as_bytes(), Some(cas)) {
            Ok(()) => return Ok(next),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::CasMismatch)
}
