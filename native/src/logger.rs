//! The `log` backend: Envoy's log under its `dynamic_modules` component. Each record is
//! formatted only if Envoy would print it at that level.
#![allow(unsafe_code)]

use crate::abi::{self, ModuleBuffer};

struct EnvoyLog;

fn level(l: log::Level) -> u32 {
    match l {
        log::Level::Error => abi::LOG_ERROR,
        log::Level::Warn => abi::LOG_WARN,
        log::Level::Info => abi::LOG_INFO,
        log::Level::Debug | log::Level::Trace => abi::LOG_DEBUG,
    }
}

impl log::Log for EnvoyLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // SAFETY: a plain query of Envoy's logger, callable from any thread.
        unsafe { abi::envoy_dynamic_module_callback_log_enabled(level(metadata.level())) }
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = format!("ai-gateway-filter: {}", record.args());
        // SAFETY: `msg` outlives the call; Envoy copies it.
        unsafe {
            abi::envoy_dynamic_module_callback_log(
                level(record.level()),
                ModuleBuffer::of(msg.as_bytes()),
            );
        }
    }

    fn flush(&self) {}
}

static LOGGER: EnvoyLog = EnvoyLog;

pub fn init() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}
