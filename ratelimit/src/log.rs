//! One line per event on stderr: `<unix seconds.millis> <LEVEL> <message>`.
//!
//! Info and warnings are the service's lifecycle (start, stop, Redis reachable or not)
//! and never contain descriptor values, which identify tenants; `--log-level debug` adds
//! one line per request with its domain, entries and result.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

fn line(level: &str, message: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut err = std::io::stderr().lock();
    // Nothing to do if stderr is gone.
    let _ = writeln!(
        err,
        "{}.{:03} {level} {message}",
        now.as_secs(),
        now.subsec_millis()
    );
}

pub fn info(message: &str) {
    line("INFO", message);
}

pub fn warn(message: &str) {
    line("WARN", message);
}

pub fn error(message: &str) {
    line("ERROR", message);
}

pub fn debug(message: impl FnOnce() -> String) {
    if debug_enabled() {
        line("DEBUG", &message());
    }
}
