//! `log` crate backend writing to Envoy's log through the panic-free ABI wrapper.
//! (The SDK's logger unwraps the host status.) Log lines never carry request content.

use crate::abi;

struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }
    fn log(&self, record: &log::Record) {
        let level = match record.level() {
            log::Level::Trace => 0,
            log::Level::Debug => 1,
            log::Level::Info => 2,
            log::Level::Warn => 3,
            log::Level::Error => 4,
        };
        abi::log(level, &format!("ai-gateway-filter: {}", record.args()));
    }
    fn flush(&self) {}
}

pub fn init() {
    // Envoy filters the level again with its own `--component-log-level wasm:…`.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}
