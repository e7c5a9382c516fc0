//! mock-llm: a deterministic OpenAI-compatible model server used as the
//! backend of the gateway demo, the integration tests and the benchmarks.
//!
//! One process serves one backend. Startup prints exactly one line,
//! `listening on <addr>`, so a test harness can bind port 0 and read the port.

mod body;
mod handlers;
mod sse;
mod usage;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use handlers::{Config, State};

const USAGE: &str = "usage: mock-llm --listen ADDR --name NAME [--threads 1] [--ttft-ms 0] \
[--tokens-per-second 0] [--completion-tokens 16] [--error-rate 0.0] [--force-status 0]";

struct Args {
    listen: SocketAddr,
    threads: usize,
    cfg: Config,
}

/// Hand-rolled parsing (`--flag value` or `--flag=value`): seven flags do not
/// justify an argument-parser dependency.
fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut listen: Option<SocketAddr> = None;
    let mut threads = 1usize;
    let mut cfg = Config {
        name: String::new(),
        ttft_ms: 0,
        tokens_per_second: 0.0,
        completion_tokens: 16,
        error_rate: 0.0,
        force_status: 0,
        require_header: None,
    };
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Err(String::new());
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        let value = match inline.or_else(|| it.next()) {
            Some(v) => v,
            None => return Err(format!("missing value for {flag}")),
        };
        let bad = |e: &dyn std::fmt::Display| format!("invalid value {value:?} for {flag}: {e}");
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().map_err(|e| bad(&e))?),
            "--name" => cfg.name = value.clone(),
            "--threads" => threads = value.parse().map_err(|e| bad(&e))?,
            "--ttft-ms" => cfg.ttft_ms = value.parse().map_err(|e| bad(&e))?,
            "--tokens-per-second" => cfg.tokens_per_second = value.parse().map_err(|e| bad(&e))?,
            "--completion-tokens" => cfg.completion_tokens = value.parse().map_err(|e| bad(&e))?,
            "--error-rate" => cfg.error_rate = value.parse().map_err(|e| bad(&e))?,
            "--force-status" => cfg.force_status = value.parse().map_err(|e| bad(&e))?,
            "--require-header" => {
                let (n, v) = value
                    .split_once(':')
                    .ok_or_else(|| bad(&"expected name:value"))?;
                cfg.require_header = Some((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    let listen = listen.ok_or("--listen is required")?;
    if cfg.name.is_empty() {
        return Err("--name is required".to_owned());
    }
    if hyper::header::HeaderValue::from_str(&cfg.name).is_err() {
        return Err("--name must be a valid header value".to_owned());
    }
    if !(0.0..=1.0).contains(&cfg.error_rate) {
        return Err("--error-rate must be within 0..1".to_owned());
    }
    if !cfg.tokens_per_second.is_finite() || cfg.tokens_per_second < 0.0 {
        return Err("--tokens-per-second must be >= 0".to_owned());
    }
    if cfg.force_status != 0 && !(200..=599).contains(&cfg.force_status) {
        return Err("--force-status must be 0 or within 200..599".to_owned());
    }
    Ok(Args {
        listen,
        threads: threads.max(1),
        cfg,
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("mock-llm: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    // One thread by default: a current-thread runtime leaves the other cores to
    // Envoy in benchmarks and has no cross-thread wakeups at all.
    let rt = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mock-llm: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => {
            // Exit right away: open connections and streams must not delay shutdown.
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("mock-llm: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    // Install signal handlers before announcing readiness, so a harness that
    // signals right after reading the line always gets a clean exit 0.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let listener = TcpListener::bind(args.listen).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
    }

    let state = Arc::new(State::new(args.cfg));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // HTTP/1.1 and prior-knowledge h2c on the same port (Envoy clusters may use either).
    builder.http1().keep_alive(true).pipeline_flush(true);
    builder.http2().max_concurrent_streams(Some(10_000));
    let builder = Arc::new(builder);

    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Typically EMFILE under extreme load: back off instead of spinning.
                        eprintln!("mock-llm: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                // Small SSE frames must leave immediately, not wait for Nagle.
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let builder = builder.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handlers::handle(state.clone(), req));
                    // Connection errors (client resets, our own stream aborts) are expected.
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn parses_flags() {
        let a = args("--listen 127.0.0.1:0 --name b1 --threads=2 --ttft-ms 5 --tokens-per-second 50 --completion-tokens 3 --error-rate 0.5 --force-status 429").unwrap();
        assert_eq!(a.threads, 2);
        assert_eq!(a.cfg.name, "b1");
        assert_eq!(a.cfg.ttft_ms, 5);
        assert_eq!(a.cfg.tokens_per_second, 50.0);
        assert_eq!(a.cfg.completion_tokens, 3);
        assert_eq!(a.cfg.error_rate, 0.5);
        assert_eq!(a.cfg.force_status, 429);
    }

    #[test]
    fn rejects_bad_flags() {
        assert!(args("--name b1").is_err());
        assert!(args("--listen 127.0.0.1:0").is_err());
        assert!(args("--listen 127.0.0.1:0 --name b1 --error-rate 2").is_err());
        assert!(args("--listen 127.0.0.1:0 --name b1 --bogus 1").is_err());
        assert!(args("--listen 127.0.0.1:0 --name b1 --threads").is_err());
    }
}
