//! Mock shared-data stores for tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use crate::quota::{SharedStore, StoreError};

/// Envoy's shared-data semantics: process-wide cas counter starting at 1,
/// a set on a missing key ignores cas, cas 0 / `None` is unconditional.
#[derive(Default)]
pub struct MemStore {
    map: Mutex<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: Mutex<u32>,
    pub gets: AtomicU32,
    pub sets: AtomicU32,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    pub fn raw(&self, key: &str) -> Option<Vec<u8>> {
        self.map.lock().unwrap().get(key).map(|(v, _)| v.clone())
    }

    pub fn put_raw(&self, key: &str, value: &[u8]) {
        self.set(key, value, None).unwrap();
    }

    pub fn trips(&self) -> u32 {
        self.gets.load(Ordering::SeqCst) + self.sets.load(Ordering::SeqCst)
    }
}

impl SharedStore for MemStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        Ok(match self.map.lock().unwrap().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        self.sets.fetch_add(1, Ordering::SeqCst);
        let mut map = self.map.lock().unwrap();
        let mut next = self.next_cas.lock().unwrap();
        if let Some((_, current)) = map.get(key) {
            match cas {
                Some(c) if c != 0 && c != *current => return Err(StoreError::CasMismatch),
                _ => {}
            }
        }
        *next += 1; // first issued cas is 1, never 0
        map.insert(key.to_owned(), (value.to_owned(), *next));
        Ok(())
    }
}

/// Fails the first `fail_sets` sets with `CasMismatch` (as if another worker
/// kept winning), then behaves like the inner store.
pub struct FlakyStore {
    pub inner: MemStore,
    pub fail_sets: AtomicU32,
}

impl FlakyStore {
    pub fn new(fail_sets: u32) -> FlakyStore {
        FlakyStore {
            inner: MemStore::new(),
            fail_sets: AtomicU32::new(fail_sets),
        }
    }
}

impl SharedStore for FlakyStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let left = self.fail_sets.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_sets.store(left - 1, Ordering::SeqCst);
            self.inner.sets.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::CasMismatch);
        }
        self.inner.set(key, value, cas)
    }
}

/// Every call fails with `Other` (or only sets, to fail mid-update).
pub struct BrokenStore {
    pub gets_work: bool,
    pub calls: AtomicU32,
}

impl SharedStore for BrokenStore {
    fn get(&self, _key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.gets_work {
            Ok((None, None))
        } else {
            Err(StoreError::Other)
        }
    }

    fn set(&self, _key: &str, _value: &[u8], _cas: Option<u32>) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Other)
    }
}

type Hook = Box<dyn FnOnce(&MemStore) + Send>;

/// Runs "another worker" against the same inner store right before the
/// `at_set`-th (1-based) set of this worker: the classic get/…/set race.
pub struct InterleavingStore {
    pub inner: MemStore,
    at_set: u32,
    seen_sets: AtomicU32,
    hook: Mutex<Option<Hook>>,
}

impl InterleavingStore {
    pub fn new(at_set: u32, hook: impl FnOnce(&MemStore) + Send + 'static) -> InterleavingStore {
        InterleavingStore {
            inner: MemStore::new(),
            at_set,
            seen_sets: AtomicU32::new(0),
            hook: Mutex::new(Some(Box::new(hook))),
        }
    }
}

impl SharedStore for InterleavingStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let n = self.seen_sets.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.at_set {
            let hook = self.hook.lock().unwrap().take();
            if let Some(hook) = hook {
                hook(&self.inner);
            }
        }
        self.inner.set(key, value, cas)
    }
}

/// Like [`MemStore`], but every call on a key containing `failing` errors.
pub struct PartialStore {
    pub inner: MemStore,
    pub failing: &'static str,
}

impl SharedStore for PartialStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        if key.contains(self.failing) {
            return Err(StoreError::Other);
        }
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        if key.contains(self.failing) {
            return Err(StoreError::Other);
        }
        self.inner.set(key, value, cas)
    }
}
