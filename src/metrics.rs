//! Defines each metric series once per VM (ids cached) and updates it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use ai_gateway_core::metrics::{Kind, Observation};

use crate::abi;

/// Series are bounded by the configuration (see `ai_gateway_core::metrics`), so this map
/// is too; the cap is a second line of defence.
const MAX_SERIES: usize = 100_000;

/// FNV-1a: series names come from the configuration, not from clients, so a keyed hash
/// buys nothing here, and SipHash over ~100-byte names for every series of every request
/// is the larger part of a lookup in Wasm.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Ids = HashMap<String, u32, BuildHasherDefault<Fnv>>;

thread_local! {
    // One VM per worker thread, single-threaded: a thread-local cache needs no locking.
    static IDS: RefCell<Ids> = RefCell::new(Ids::default());
}

fn id_for(name: &str, kind: Kind) -> Option<u32> {
    IDS.with(|ids| {
        let mut ids = ids.try_borrow_mut().ok()?;
        if let Some(id) = ids.get(name) {
            return Some(*id);
        }
        if ids.len() >= MAX_SERIES {
            return None;
        }
        let k = match kind {
            Kind::Counter => abi::METRIC_COUNTER,
            Kind::Histogram => abi::METRIC_HISTOGRAM,
            Kind::Gauge => abi::METRIC_GAUGE,
        };
        let id = abi::define_metric(k, name).ok()?;
        ids.insert(name.to_string(), id);
        Some(id)
    })
}

pub fn record(observations: &[Observation]) {
    for obs in observations {
        let Some(id) = id_for(&obs.name, obs.kind) else {
            continue;
        };
        match obs.kind {
            Kind::Counter => {
                abi::increment_metric(id, i64::try_from(obs.value).unwrap_or(i64::MAX))
            }
            // A gauge's record sets it; a histogram's records a sample.
            Kind::Histogram | Kind::Gauge => abi::record_metric(id, obs.value),
        }
    }
}
