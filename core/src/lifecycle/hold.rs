//! Never leave a held request hanging.
//!
//! Holding request headers until the body is read (so the route can follow the model in
//! the body) needs Envoy's `allow_on_headers_stop_iteration: true`. Istio's WasmPlugin and
//! Envoy Gateway's EnvoyExtensionPolicy do not expose that flag; without it Envoy turns the
//! header pause into "stop everything" and never delivers the body, so the request would
//! hang. The filter cannot ask Envoy which mode it is in, so it watches instead: a request
//! held longer than the timeout without a body callback is resumed (it then routes by
//! path, with every other check still enforced at body time). Once a body arrives while
//! held, holding is known to work on this worker; after a few rescues with no such proof,
//! the worker stops holding, so only its first requests pay the timeout.

use std::collections::HashSet;

use crate::config::Config;

/// Rescues, without any proof that holding works, before a worker stops holding.
pub const RESCUES_BEFORE_GIVING_UP: u32 = 3;

/// How often the root context checks for overdue held requests.
pub const TICK_MS: u32 = 100;

/// Logged once per worker when it stops holding.
pub const STOPPED_HOLDING: &str = "request bodies never arrived while headers were held: this \
    host does not allow header hold (allow_on_headers_stop_iteration); routing by model is off \
    on this worker and requests route by path";

/// The root context's timer period for `cfg`: a tick only while headers may be held.
pub fn tick_period_ms(cfg: &Config) -> u32 {
    if cfg.routing.hold_headers_for_body {
        TICK_MS
    } else {
        0
    }
}

/// What a tick found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Context ids of held requests to resume now.
    pub resume: Vec<u32>,
    /// This tick made the worker stop holding (log [`STOPPED_HOLDING`]).
    pub stopped_holding: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldSupport {
    Unknown,
    /// A body callback arrived while headers were held.
    Works,
    /// Held requests had to be rescued; new requests are not held.
    Broken,
}

#[derive(Debug)]
pub struct HoldWatch {
    pub support: HoldSupport,
    rescues: u32,
    /// (context id, held since, ms).
    waiting: Vec<(u32, u64)>,
    rescued: HashSet<u32>,
}

impl Default for HoldWatch {
    fn default() -> Self {
        HoldWatch {
            support: HoldSupport::Unknown,
            rescues: 0,
            waiting: Vec::new(),
            rescued: HashSet::new(),
        }
    }
}

impl HoldWatch {
    /// Whether a new request should be held.
    pub fn should_hold(&self) -> bool {
        self.support != HoldSupport::Broken
    }

    pub fn begin(&mut self, id: u32, now_ms: u64) {
        self.waiting.push((id, now_ms));
    }

    /// The first body callback of a held request. Returns true if the request was
    /// rescued (its headers already went upstream).
    pub fn body_arrived(&mut self, id: u32) -> bool {
        let was_waiting = self.remove(id);
        let rescued = self.rescued.remove(&id);
        if was_waiting && !rescued && self.support == HoldSupport::Unknown {
            self.support = HoldSupport::Works;
        }
        rescued
    }

    /// The request ended (for any reason).
    pub fn end(&mut self, id: u32) {
        self.remove(id);
        self.rescued.remove(&id);
    }

    /// Requests held longer than `timeout_ms`: they must be resumed now.
    pub fn overdue(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<u32> {
        let mut due = Vec::new();
        self.waiting.retain(|(id, since)| {
            if now_ms.saturating_sub(*since) >= timeout_ms {
                due.push(*id);
                false
            } else {
                true
            }
        });
        for id in &due {
            self.rescued.insert(*id);
            self.rescues = self.rescues.saturating_add(1);
        }
        if self.support == HoldSupport::Unknown && self.rescues >= RESCUES_BEFORE_GIVING_UP {
            self.support = HoldSupport::Broken;
        }
        due
    }

    /// The root context's tick: the overdue requests, and whether holding just stopped.
    pub fn tick(&mut self, now_ms: u64, timeout_ms: u64) -> Tick {
        let was = self.support;
        let resume = self.overdue(now_ms, timeout_ms);
        Tick {
            resume,
            stopped_holding: was != HoldSupport::Broken && self.support == HoldSupport::Broken,
        }
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn remove(&mut self, id: u32) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|(i, _)| *i != id);
        self.waiting.len() != before
    }
}

#[cfg(test)]
mod tests;
