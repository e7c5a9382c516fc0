//! The per-VM hold watch (see `crate::hold_watch`): held requests are registered here and
//! resumed from the root context's tick if Envoy never delivers their body.

use std::cell::RefCell;

use super::abi;
use crate::hold_watch::{HoldSupport, HoldWatch};

/// How often the root context checks for overdue held requests.
pub const TICK_MS: u32 = 100;

thread_local! {
    // One VM per worker thread: the watch covers exactly this worker's requests.
    static WATCH: RefCell<HoldWatch> = RefCell::new(HoldWatch::default());
}

fn with<T>(default: T, f: impl FnOnce(&mut HoldWatch) -> T) -> T {
    WATCH.with(|w| match w.try_borrow_mut() {
        Ok(mut w) => f(&mut w),
        Err(_) => default,
    })
}

pub fn should_hold() -> bool {
    with(false, |w| w.should_hold())
}

pub fn begin(id: u32, now_ms: u64) {
    with((), |w| w.begin(id, now_ms));
}

/// True when the request was rescued: its headers already went upstream.
pub fn body_arrived(id: u32) -> bool {
    with(false, |w| w.body_arrived(id))
}

pub fn end(id: u32) {
    with((), |w| w.end(id));
}

/// From the root context's tick: resume every request held too long.
pub fn rescue_overdue(timeout_ms: u64) {
    let (due, was, now) = with(
        (Vec::new(), HoldSupport::Unknown, HoldSupport::Unknown),
        |w| {
            let was = w.support;
            let due = w.overdue(abi::now_ms(), timeout_ms);
            (due, was, w.support)
        },
    );
    for id in due {
        let resumed = abi::set_effective_context(id).and_then(|_| abi::resume_http_request());
        if resumed.is_err() {
            log::debug!("held request {id} had already ended");
        }
    }
    if was != HoldSupport::Broken && now == HoldSupport::Broken {
        log::warn!(
            "request bodies never arrived while headers were held: this host does not allow \
             header hold (allow_on_headers_stop_iteration); routing by model is off on this \
             worker and requests route by path"
        );
    }
}
