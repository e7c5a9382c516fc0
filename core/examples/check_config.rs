//! Checks plugin configuration files with the filter's own parser and validator, exactly
//! as `on_configure` does in Envoy (the same `Config::parse`), natively.
//!
//! ```sh
//! cargo run --example check_config -- filters/demo.json
//! # OK
//! cargo run --example check_config -- a.json b.json   # one `<file>: <result>` line each
//! ```
//!
//! `redaction.fingerprint_salt_env` is resolved from this process's environment, as the
//! Wasm VM resolves it from the variables the host passes in: set the variable when
//! checking a configuration that names one. Exit status: 0 when every file is accepted,
//! 1 when any is refused, 2 on a usage or read error.

use std::process::ExitCode;

use ai_gateway_core::config::Config;

fn check(path: &str) -> Result<Result<(), String>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let env = |name: &str| std::env::var(name).ok();
    Ok(Config::parse(&bytes, &env).map(|_| ()))
}

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() || paths.iter().any(|p| p == "-h" || p == "--help") {
        eprintln!("usage: check_config FILE...");
        return ExitCode::from(2);
    }
    let prefix = paths.len() > 1;
    let mut refused = false;
    for path in &paths {
        let verdict = match check(path) {
            Ok(Ok(())) => "OK".to_string(),
            Ok(Err(msg)) => {
                refused = true;
                msg
            }
            Err(msg) => {
                eprintln!("{msg}");
                return ExitCode::from(2);
            }
        };
        if prefix {
            println!("{path}: {verdict}");
        } else {
            println!("{verdict}");
        }
    }
    if refused {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
