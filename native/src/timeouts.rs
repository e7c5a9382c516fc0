//! The worker's tick, run on the worker by a scheduled event: held requests whose body
//! did not arrive in time are refused (408), and the worker's concurrency slots are kept
//! alive. Streams are found by their context id among this worker's tracked streams.

use std::cell::RefCell;
use std::collections::HashMap;

use ai_gateway_core::contract::header;
use ai_gateway_core::deny::Denial;
use ai_gateway_core::lifecycle::hold::NO_BODY_WHILE_HELD;

use crate::abi::FilterPtr;
use crate::host::Stream;
use crate::{clock, worker, FilterConfig};

thread_local! {
    /// Envoy's filter of each tracked stream of this worker, by context id.
    static LIVE: RefCell<HashMap<u32, usize>> = RefCell::new(HashMap::new());
}

/// The core's context id of a stream: its serial's low bits (ids only need to differ
/// among one worker's live streams).
pub fn context_id(serial: u64) -> u32 {
    u32::try_from(serial & u64::from(u32::MAX)).unwrap_or(0)
}

pub fn track(id: u32, filter: FilterPtr) {
    LIVE.with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            l.insert(id, filter as usize);
        }
    });
}

pub fn untrack(id: u32) {
    LIVE.with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            l.remove(&id);
        }
    });
}

fn live(id: u32) -> Option<Stream> {
    LIVE.with(|l| {
        l.try_borrow()
            .ok()?
            .get(&id)
            .map(|p| Stream(*p as FilterPtr))
    })
}

pub fn tick(config: &FilterConfig) {
    let Some(cfg) = &config.core else {
        return;
    };
    let tick = worker::tick(cfg, clock::now_ms());
    if tick.warn_no_body {
        log::warn!("{NO_BODY_WHILE_HELD}");
    }
    if tick.time_out.is_empty() {
        return;
    }
    let body = Denial::body_timeout(cfg.routing.hold_timeout_ms).body();
    for (id, request_id) in tick.time_out {
        // The reply runs through the stream's response hooks and its end, which record
        // it as this filter's 408.
        let headers = [
            ("content-type", "application/json"),
            (header::REQUEST_ID, request_id.as_str()),
        ];
        match live(id) {
            Some(s) => s.send_response(408, &headers, body.as_bytes(), ""),
            None => log::debug!("held request {id} had already ended"),
        }
    }
}
