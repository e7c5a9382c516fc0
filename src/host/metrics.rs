//! Defines each metric series once per VM (ids cached) and updates it.

use std::cell::RefCell;
use std::collections::HashMap;

use super::abi;
use crate::config::Config;
use crate::exchange::Exchange;
use crate::metrics::{observations, Kind};
use crate::record::GatewayRecord;

/// Series are bounded by the configuration (see `crate::metrics`), so this map is too.
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

pub fn record(_cfg: &Config, ex: &Exchange, rec: &GatewayRecord, busy_ns: u64) {
    for obs in observations(ex, rec, busy_ns) {
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
