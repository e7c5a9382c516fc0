//! Held requests never wait forever, and a slow client never changes what is enforced.
//!
//! Holding request headers until the body is read (so the route can follow the model in
//! the body) needs Envoy's `allow_on_headers_stop_iteration: true`; the configuration says
//! whether the host has it (`routing.hold_headers_for_body`). A held request whose whole
//! body has not arrived within `routing.hold_timeout_ms` is refused with 408 by the root
//! context's tick; it is never let through to be routed by path. Nothing a request does
//! changes how later requests are held.
//!
//! A host without the flag never delivers the body of a held request, so every held
//! request would end in 408: once a few have, with no body ever seen while held, the
//! worker logs [`NO_BODY_WHILE_HELD`] (once) naming the setting to change.

use std::collections::HashSet;

use crate::config::Config;
use crate::quota::inflight::HEARTBEAT_MS;

/// Timeouts, with no body ever seen while held, before [`NO_BODY_WHILE_HELD`] is logged.
pub const TIMEOUTS_BEFORE_WARNING: u32 = 3;

/// How often the root context checks for overdue held requests.
pub const TICK_MS: u32 = 100;

/// Logged once per worker when held requests keep timing out without a body.
pub const NO_BODY_WHILE_HELD: &str = "held requests keep ending in 408 and no request body \
    has arrived while headers were held on this worker: if the Wasm filter does not set \
    allow_on_headers_stop_iteration: true, set routing.hold_headers_for_body to false";

/// The root context's timer period for `cfg`: fast while headers may be held, slower
/// while only concurrency slots need their heartbeat, none otherwise.
pub fn tick_period_ms(cfg: &Config) -> u32 {
    if cfg.routing.hold_headers_for_body {
        TICK_MS
    } else if cfg.tenants.iter().any(|t| t.limits_concurrency()) {
        u32::try_from(HEARTBEAT_MS).unwrap_or(TICK_MS)
    } else {
        0
    }
}

/// What a tick found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Held requests to refuse with 408 now: (context id, request id).
    pub time_out: Vec<(u32, String)>,
    /// Log [`NO_BODY_WHILE_HELD`] now.
    pub warn_no_body: bool,
}

#[derive(Debug, Default)]
pub struct HoldWatch {
    /// A body callback arrived while headers were held.
    body_seen_while_held: bool,
    timeouts: u32,
    warned: bool,
    /// (context id, request id, held since ms).
    waiting: Vec<(u32, String, u64)>,
    timed_out: HashSet<u32>,
}

impl HoldWatch {
    pub fn begin(&mut self, id: u32, request_id: &str, now_ms: u64) {
        self.waiting.push((id, request_id.to_string(), now_ms));
    }

    /// A body callback of a held request.
    pub fn body_arrived(&mut self, id: u32) {
        if self.remove(id) {
            self.body_seen_while_held = true;
        }
    }

    /// Whether the tick refused this request (408); asked once.
    pub fn take_timed_out(&mut self, id: u32) -> bool {
        self.timed_out.remove(&id)
    }

    /// The request ended (for any reason).
    pub fn end(&mut self, id: u32) {
        self.remove(id);
        self.timed_out.remove(&id);
    }

    /// The root context's tick: held requests older than `timeout_ms` are refused.
    pub fn tick(&mut self, now_ms: u64, timeout_ms: u64) -> Tick {
        let mut time_out = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() {
            let due = self
                .waiting
                .get(i)
                .is_some_and(|(_, _, since)| now_ms.saturating_sub(*since) >= timeout_ms);
            if due {
                let (id, rid, _) = self.waiting.swap_remove(i);
                self.timed_out.insert(id);
                time_out.push((id, rid));
            } else {
                i += 1;
            }
        }
        self.timeouts = self
            .timeouts
            .saturating_add(u32::try_from(time_out.len()).unwrap_or(u32::MAX));
        let warn_no_body =
            !self.warned && !self.body_seen_while_held && self.timeouts >= TIMEOUTS_BEFORE_WARNING;
        self.warned |= warn_no_body;
        Tick {
            time_out,
            warn_no_body,
        }
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn remove(&mut self, id: u32) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|(i, _, _)| *i != id);
        self.waiting.len() != before
    }
}

#[cfg(test)]
mod tests;
