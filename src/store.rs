//! Proxy-Wasm shared data as the quota store: process-wide per `vm_id`, so every worker's
//! VM sees the same buckets.

use crate::abi;
use ai_gateway_core::quota::{SharedStore, StoreError};

pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        abi::get_shared_data(key).map_err(|_| StoreError::Other)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match abi::set_shared_data(key, value, cas) {
            Ok(()) => Ok(()),
            Err(abi::HostError(abi::CAS_MISMATCH)) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Other),
        }
    }
}
