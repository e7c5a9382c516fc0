//! The shared key/value store abstraction and the bounded CAS update loop.
//!
//! The host implements [`SharedStore`] with Proxy-Wasm shared data, which is
//! process-wide, so a bucket is exact across all worker VMs as long as every
//! write is a compare-and-swap against the version that was read.

use super::bucket::BucketState;

/// A value kept under one shared-data key.
pub trait Stored: Sized {
    fn to_bytes(&self) -> Vec<u8>;
    /// `None` for bytes that are not a current encoding.
    fn from_bytes(bytes: &[u8]) -> Option<Self>;
}

impl Stored for BucketState {
    fn to_bytes(&self) -> Vec<u8> {
        self.encode().to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        BucketState::decode(bytes)
    }
}

/// Why a store call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The value changed since it was read (or the CAS loop gave up).
    CasMismatch,
    /// Anything else the host reports.
    Other,
}

/// Proxy-Wasm shared data, as seen by this module.
///
/// Contract (Envoy's): `get` of a missing key returns `(None, None)`; an
/// existing key always has a non-zero cas. `set` with `Some(cas)` on an
/// existing key fails with `CasMismatch` unless `cas` is current; `set` on a
/// missing key creates it and ignores `cas`; `None` (cas 0) is unconditional.
/// This module never calls `set` with `None`.
pub trait SharedStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError>;
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// Attempts per bucket update before giving up and treating it as a store
/// error. Each attempt is one get plus at most one set.
pub const MAX_CAS_ATTEMPTS: u32 = 16;

/// The cas passed when creating a key. A set on a missing key ignores cas,
/// but if another worker created the key in the meantime a *non-zero* cas
/// makes our creation fail instead of overwriting its (possibly already
/// charged) value. Envoy's cas counter starts at 1 and is process-wide, so a
/// live key holding exactly this version is practically impossible.
pub const CREATE_CAS: u32 = u32::MAX;

/// Read-modify-write of one key (a bucket, a global slot).
///
/// `step` receives the current state (`init`, e.g. a full bucket, when the
/// stored bytes are unreadable) and returns the state to write, or `None`
/// for a read-only outcome such as a denial. A missing key is first created
/// with `init` and then re-read, so no decision is ever based on the
/// unversioned creation write; losing a creation race only costs a retry.
/// `trips` counts every get and set. `step` may run several times; the value
/// from the run whose write succeeded is returned.
pub fn update<S, V, T, F>(
    store: &S,
    key: &str,
    init: V,
    trips: &mut u32,
    mut step: F,
) -> Result<T, StoreError>
where
    S: SharedStore + ?Sized,
    V: Stored + Copy,
    F: FnMut(V) -> (Option<V>, T),
{
    for _ in 0..MAX_CAS_ATTEMPTS {
        *trips = trips.saturating_add(1);
        let (value, cas) = store.get(key)?;
        let (Some(value), Some(cas)) = (value, cas.filter(|c| *c != 0)) else {
            // Missing (or unversioned: CREATE_CAS then mismatches and the
            // loop runs out, which is reported as a store error).
            *trips = trips.saturating_add(1);
            match store.set(key, &init.to_bytes(), Some(CREATE_CAS)) {
                Ok(()) | Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
            }
        };
        let state = V::from_bytes(&value).unwrap_or(init);
        let (next, out) = step(state);
        let Some(next) = next else { return Ok(out) };
        *trips = trips.saturating_add(1);
        match store.set(key, &next.to_bytes(), Some(cas)) {
            Ok(()) => return Ok(out),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    log::warn!("quota: giving up on {key} after {MAX_CAS_ATTEMPTS} CAS attempts");
    Err(StoreError::CasMismatch)
}

/// One get, no writes: the stored state, or `init` when missing/unreadable.
pub fn read<S, V>(store: &S, key: &str, init: V, trips: &mut u32) -> Result<V, StoreError>
where
    S: SharedStore + ?Sized,
    V: Stored,
{
    *trips = trips.saturating_add(1);
    let (value, _) = store.get(key)?;
    Ok(value.as_deref().and_then(V::from_bytes).unwrap_or(init))
}

#[cfg(test)]
mod tests;
