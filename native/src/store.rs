//! The quota store of a native module: one map in process memory, shared by every worker
//! thread. It keeps Proxy-Wasm shared data's semantics, which the core is written
//! against: each key has a version that changes on every write, a write that names a
//! version succeeds only if the key still has it (compare-and-swap), and a write to a
//! missing key ignores the version. One mutex guards the map; each get or set holds it
//! for a copy of one small value.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use ai_gateway_core::quota::{SharedStore, StoreError};

type Map = HashMap<String, (Vec<u8>, u32)>;

fn map() -> MutexGuard<'static, Map> {
    static MAP: OnceLock<Mutex<Map>> = OnceLock::new();
    let m = MAP.get_or_init(|| Mutex::new(Map::new()));
    // No code holding the lock can panic (the module aborts on panic), so a poisoned
    // lock cannot occur; should it, the map is still consistent (each write is whole).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub struct ProcessStore;

impl SharedStore for ProcessStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        Ok(match map().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut m = map();
        match m.get_mut(key) {
            Some((v, version)) => {
                if cas.is_some_and(|c| c != *version) {
                    return Err(StoreError::CasMismatch);
                }
                v.clear();
                v.extend_from_slice(value);
                *version = version.wrapping_add(1).max(1);
            }
            None => {
                m.insert(key.to_string(), (value.to_vec(), 1));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
