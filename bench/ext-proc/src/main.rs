//! A do-nothing external processor for Envoy's `envoy.filters.http.ext_proc` filter.
//!
//! Every message Envoy sends on a `Process` stream (request headers, request body,
//! response headers, response body chunks, trailers) is answered at once with the
//! matching response carrying status `CONTINUE` and no mutation. Nothing is parsed,
//! checked or recorded: what `make bench` measures through it is the price of the
//! ext_proc architecture itself (the gRPC hop, Envoy's encoding of every phase, the
//! round trips) with the processor's logic at zero.
//!
//!     ext-proc-noop --listen 127.0.0.1:PORT [--threads 1]
//!
//! `--threads 1` (the default) runs a single-threaded Tokio runtime, like the one
//! Envoy worker of the benchmark. It prints one line `EXT_PROC_COUNTS {"streams":N,...}`
//! to stdout (what it answered so far, per phase) on SIGUSR1, and once more on SIGTERM
//! or SIGINT before it stops; the benchmark reads those lines to prove the traffic went
//! through it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use envoy_types::pb::envoy::service::ext_proc::v3::common_response::ResponseStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Phase;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Answer;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, CommonResponse, HeadersResponse, ProcessingRequest, ProcessingResponse,
    TrailersResponse,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

#[derive(Default)]
struct Counters {
    streams: AtomicU64,
    request_headers: AtomicU64,
    request_body: AtomicU64,
    response_headers: AtomicU64,
    response_body: AtomicU64,
    trailers: AtomicU64,
    /// Messages with no phase set, or sent in observability mode (no answer expected).
    unanswered: AtomicU64,
}

impl Counters {
    fn json(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{{\"streams\":{},\"request_headers\":{},\"request_body\":{},\"response_headers\":{},\
             \"response_body\":{},\"trailers\":{},\"unanswered\":{}}}",
            get(&self.streams),
            get(&self.request_headers),
            get(&self.request_body),
            get(&self.response_headers),
            get(&self.response_body),
            get(&self.trailers),
            get(&self.unanswered),
        )
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn common() -> Option<CommonResponse> {
    Some(CommonResponse {
        status: ResponseStatus::Continue as i32,
        ..Default::default()
    })
}

/// The CONTINUE answer to one message, or None where the protocol expects no answer.
fn answer(c: &Counters, msg: ProcessingRequest) -> Option<ProcessingResponse> {
    let phase = match msg.request {
        Some(phase) if !msg.observability_mode => phase,
        _ => {
            bump(&c.unanswered);
            return None;
        }
    };
    let headers = || HeadersResponse { response: common() };
    let body = || BodyResponse { response: common() };
    let answer = match phase {
        Phase::RequestHeaders(_) => {
            bump(&c.request_headers);
            Answer::RequestHeaders(headers())
        }
        Phase::RequestBody(_) => {
            bump(&c.request_body);
            Answer::RequestBody(body())
        }
        Phase::ResponseHeaders(_) => {
            bump(&c.response_headers);
            Answer::ResponseHeaders(headers())
        }
        Phase::ResponseBody(_) => {
            bump(&c.response_body);
            Answer::ResponseBody(body())
        }
        Phase::RequestTrailers(_) => {
            bump(&c.trailers);
            Answer::RequestTrailers(TrailersResponse::default())
        }
        Phase::ResponseTrailers(_) => {
            bump(&c.trailers);
            Answer::ResponseTrailers(TrailersResponse::default())
        }
    };
    Some(ProcessingResponse {
        response: Some(answer),
        ..Default::default()
    })
}

struct Noop {
    counters: Arc<Counters>,
}

type Answers = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for Noop {
    type ProcessStream = Answers;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Answers>, Status> {
        bump(&self.counters.streams);
        let counters = Arc::clone(&self.counters);
        // One answer per message, in order; the stream ends when Envoy ends or resets it.
        let answers = request
            .into_inner()
            .map_while(Result::ok)
            .filter_map(move |msg| answer(&counters, msg))
            .map(Ok);
        Ok(Response::new(Box::pin(answers)))
    }
}

struct Args {
    listen: SocketAddr,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut threads = 1;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => {
                let v = value()?;
                listen = Some(v.parse().map_err(|e| format!("--listen {v}: {e}"))?);
            }
            "--threads" => {
                let v = value()?;
                threads = v.parse().map_err(|e| format!("--threads {v}: {e}"))?;
            }
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    let listen = listen.ok_or("--listen ADDR:PORT is required")?;
    Ok(Args {
        listen,
        threads: threads.max(1),
    })
}

async fn serve(args: Args) -> Result<(), String> {
    let counters = Arc::new(Counters::default());
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| format!("SIGUSR1: {e}"))?;
    let live = Arc::clone(&counters);
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            println!("EXT_PROC_COUNTS {}", live.json());
        }
    });
    let shown = Arc::clone(&counters);
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        println!("EXT_PROC_COUNTS {}", shown.json());
    };
    println!("ext-proc-noop listening on {}", args.listen);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(ExternalProcessorServer::new(Noop { counters }))
        .serve_with_shutdown(args.listen, stop)
        .await
        .map_err(|e| format!("server: {e}"))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ext-proc-noop: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let result = match runtime {
        Ok(rt) => rt.block_on(serve(args)),
        Err(e) => Err(format!("runtime: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ext-proc-noop: {e}");
            ExitCode::FAILURE
        }
    }
}
