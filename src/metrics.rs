//! Defines each metric series once per VM (ids cached) and updates it.

use std::cell::RefCell;
use std::collections::HashMap;

use ai_gateway_core::metrics::{Kind, Observation};

use crate::abi;

/// Series are bounded by the configuration (see `ai_gateway_core::metrics`), so this map
/// is too; the cap is a second line of defence.
const MAX_SERIES: usize = 100_000;

thread_local! {
    // One VM per worker thread, single-threaded: a thread-local cache needs no locking.
    static IDS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
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
            Kind::Histogram => abi::record_metric(id, obs.value),
        }
    }
}
