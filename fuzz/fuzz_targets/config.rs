//! The plugin configuration parser and validator (`Config::parse`), with and without a
//! salt in the environment. Errors are fine; panics are not.
#![no_main]

use ai_gateway_core::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Config::parse(data, &|_| None);
    let _ = Config::parse(data, &|name| {
        (name.len() % 2 == 0).then(|| "fuzz-salt-0123456789abcdef".to_string())
    });
});
