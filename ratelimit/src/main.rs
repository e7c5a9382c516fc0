//! ai-gateway-ratelimit: a global rate limit service for Envoy.
//!
//! Speaks Envoy's Rate Limit Service v3 gRPC API
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, the protocol of
//! envoyproxy/ratelimit) and keeps fixed-window counters in Redis, so every Envoy (and
//! every replica of this service) shares them. The limits are envoyproxy/ratelimit
//! configuration files (YAML, one domain each), read once at start. docs/ratelimit.md
//! documents the protocol subset, the refund extension and the failure behaviour.
//!
//!     ai-gateway-ratelimit --config FILE [--config FILE ...]
//!         [--listen 127.0.0.1:8081] [--redis-url redis://127.0.0.1:6379]
//!         [--key-prefix ai-gateway-rl:] [--redis-timeout-ms 500] [--threads 2]
//!         [--log-level info|debug] [--check-config]
//!
//! `--check-config` loads the files, prints the domains and exits (0 when valid, 2 when
//! not). SIGTERM or SIGINT stops it after the calls in flight.

mod config;
mod log;
mod plan;
mod service;
mod store;
mod window;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use tokio::signal::unix::{signal, SignalKind};
use tonic::transport::server::TcpIncoming;

use crate::config::Config;
use crate::service::Rls;
use crate::store::Store;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const USAGE: &str = "usage: ai-gateway-ratelimit --config FILE [--config FILE ...] \
[--listen ADDR:PORT] [--redis-url URL] [--key-prefix PREFIX] [--redis-timeout-ms MS] \
[--threads N] [--log-level info|debug] [--check-config]";
/// How often Redis is pinged while idle, to log state changes and reconnect early.
const PING_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    redis_url: String,
    configs: Vec<String>,
    key_prefix: String,
    redis_timeout: Duration,
    threads: usize,
    debug: bool,
    check_only: bool,
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
        redis_url: "redis://127.0.0.1:6379".into(),
        configs: Vec::new(),
        key_prefix: "ai-gateway-rl:".into(),
        redis_timeout: Duration::from_millis(500),
        threads: 2,
        debug: false,
        check_only: false,
    };
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        if flag == "--check-config" {
            args.check_only = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--listen" => args.listen = value.parse().map_err(|e| bad(&e))?,
            "--redis-url" => args.redis_url = value,
            "--config" => args.configs.push(value),
            "--key-prefix" => args.key_prefix = value,
            "--redis-timeout-ms" => {
                let ms: u64 = value.parse().map_err(|e| bad(&e))?;
                if ms == 0 {
                    return Err(bad(&"must be at least 1"));
                }
                args.redis_timeout = Duration::from_millis(ms);
            }
            "--threads" => args.threads = value.parse::<usize>().map_err(|e| bad(&e))?.max(1),
            "--log-level" => match value.as_str() {
                "info" => args.debug = false,
                "debug" => args.debug = true,
                _ => return Err(bad(&"must be info or debug")),
            },
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if args.configs.is_empty() {
        return Err("at least one --config FILE is required".into());
    }
    Ok(args)
}

fn load_config(paths: &[String]) -> Result<Config, String> {
    let mut config = Config::default();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        config.add_yaml(path, &text)?;
    }
    Ok(config)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            log::error(&format!("{e}\n{USAGE}"));
            return ExitCode::from(2);
        }
    };
    log::set_debug(args.debug);
    let config = match load_config(&args.configs) {
        Ok(config) => config,
        Err(e) => {
            log::error(&format!("configuration refused: {e}"));
            return ExitCode::from(2);
        }
    };
    if args.check_only {
        println!("configuration OK: domains {:?}", config.domains());
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(serve(args, config)),
        Err(e) => Err(format!("cannot start the runtime: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error(&e);
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args, config: Config) -> Result<(), String> {
    let store = Store::new(&args.redis_url, args.redis_timeout)?;
    let incoming = TcpIncoming::bind(args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?
        .with_nodelay(Some(true));
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    log::info(&format!(
        "ai-gateway-ratelimit {VERSION} listening on {} (gRPC envoy.service.ratelimit.v3), \
         domains {:?}, redis {}, key prefix {:?}, redis timeout {} ms",
        args.listen,
        config.domains(),
        store::mask_password(&args.redis_url),
        args.key_prefix,
        args.redis_timeout.as_millis()
    ));
    let pinger = store.clone();
    let pings = tokio::spawn(async move {
        loop {
            // The outcome is logged by the store when it changes.
            let _ = pinger.ping().await;
            tokio::time::sleep(PING_EVERY).await;
        }
    });
    let service = Rls {
        config: Arc::new(config),
        prefix: args.key_prefix,
        store,
    };
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        log::info("stopping: signal received");
    };
    let served = tonic::transport::Server::builder()
        .add_service(RateLimitServiceServer::new(service))
        .serve_with_incoming_shutdown(incoming, stop)
        .await;
    pings.abort();
    served.map_err(|e| format!("gRPC server failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_have_safe_defaults() {
        let a = parse(&["--config", "a.yaml"]).unwrap();
        assert_eq!(a.listen, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(a.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(a.key_prefix, "ai-gateway-rl:");
        assert_eq!(a.redis_timeout, Duration::from_millis(500));
        assert!(!a.debug && !a.check_only);
        let a = parse(&[
            "--config",
            "a.yaml",
            "--config",
            "b.yaml",
            "--listen",
            "0.0.0.0:9000",
            "--redis-url",
            "redis://r:1",
            "--key-prefix",
            "p:",
            "--redis-timeout-ms",
            "50",
            "--log-level",
            "debug",
            "--check-config",
            "--threads",
            "0",
        ])
        .unwrap();
        assert_eq!(a.configs, vec!["a.yaml", "b.yaml"]);
        assert_eq!(
            (a.redis_timeout, a.threads, a.debug, a.check_only),
            (Duration::from_millis(50), 1, true, true)
        );
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&[]).unwrap_err().contains("--config"));
        assert_eq!(parse(&["--config"]).unwrap_err(), "--config needs a value");
        assert!(parse(&["--config", "a", "--listen", "nowhere"]).is_err());
        assert!(parse(&["--config", "a", "--redis-timeout-ms", "0"]).is_err());
        assert!(parse(&["--config", "a", "--log-level", "trace"]).is_err());
        assert_eq!(
            parse(&["--config", "a", "--bogus", "1"]).unwrap_err(),
            "unknown argument --bogus"
        );
    }
}
