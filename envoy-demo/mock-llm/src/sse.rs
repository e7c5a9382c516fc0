//! Server-sent-events streaming and byte-exact chunking.
//!
//! A spawned task renders events and feeds them through a small channel into
//! the response body, so pacing (`--ttft-ms`, `--tokens-per-second`) and
//! chunking (`x-mock-chunk-bytes`) are plain sleeps, and a client that goes
//! away simply closes the channel and ends the task.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};

use crate::body::{FrameResult, MockBody, StreamAbort};
use crate::usage::CompletionPlan;

/// Pause between two `x-mock-chunk-bytes` pieces, long enough for a proxy to
/// forward them as separate chunks instead of coalescing them.
const PIECE_GAP: Duration = Duration::from_millis(2);
/// Pause before an abort, so hyper flushes the frames already queued before it
/// tears the connection down.
const ABORT_GAP: Duration = Duration::from_millis(10);
/// Frames buffered between the producer task and hyper (backpressure).
const CHANNEL_FRAMES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// Everything the producer task needs; built by the handler from the request.
pub struct StreamPlan {
    pub kind: Kind,
    /// Pre-rendered `{"id":..,"object":..,"created":..,"model":..` (no closing brace),
    /// shared by every chunk so each event is one cheap `format!`.
    pub prefix: String,
    pub plan: CompletionPlan,
    /// Rendered usage object, `Some` only when the usage chunk must be sent.
    pub usage_json: Option<String>,
    pub ttft: Duration,
    pub token_interval: Option<Duration>,
    pub chunk_bytes: Option<usize>,
    pub reset_after: Option<u64>,
}

/// The `object` value of a chunk for each endpoint.
pub fn chunk_object(kind: Kind) -> &'static str {
    match kind {
        Kind::Chat => "chat.completion.chunk",
        Kind::Completion => "text_completion",
    }
}

/// Starts the producer task and returns the body it feeds.
pub fn stream(plan: StreamPlan) -> MockBody {
    let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
    let chunk = plan.chunk_bytes;
    tokio::spawn(async move {
        // Err only means the client went away; nothing to report.
        let _ = produce(plan, Emitter::new(tx, chunk)).await;
    });
    MockBody::Stream(rx)
}

/// Sends an already rendered byte buffer in pieces of exactly `n` bytes
/// (used for non-streaming bodies with `x-mock-chunk-bytes`).
pub fn chunked(bytes: Bytes, n: usize) -> MockBody {
    let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
    tokio::spawn(async move {
        let mut out = Emitter::new(tx, Some(n));
        if out.push(&bytes).await.is_ok() {
            let _ = out.finish().await;
        }
    });
    MockBody::Stream(rx)
}

/// The receiver is gone (client disconnected).
struct Closed;

/// Writes events either one frame per event, or re-cut into N-byte pieces.
struct Emitter {
    tx: mpsc::Sender<FrameResult>,
    chunk: Option<usize>,
    pending: BytesMut,
    sent_piece: bool,
}

impl Emitter {
    fn new(tx: mpsc::Sender<FrameResult>, chunk: Option<usize>) -> Self {
        Emitter {
            tx,
            chunk: chunk.filter(|&n| n > 0),
            pending: BytesMut::new(),
            sent_piece: false,
        }
    }

    async fn send(&self, b: Bytes) -> Result<(), Closed> {
        self.tx.send(Ok(b)).await.map_err(|_| Closed)
    }

    async fn push(&mut self, data: &[u8]) -> Result<(), Closed> {
        let Some(n) = self.chunk else {
            return self.send(Bytes::copy_from_slice(data)).await;
        };
        self.pending.extend_from_slice(data);
        while self.pending.len() >= n {
            let piece = self.pending.split_to(n).freeze();
            self.piece(piece).await?;
        }
        Ok(())
    }

    async fn piece(&mut self, piece: Bytes) -> Result<(), Closed> {
        if self.sent_piece {
            sleep(PIECE_GAP).await;
        }
        self.sent_piece = true;
        self.send(piece).await
    }

    /// Sends the last (shorter) piece, if any. Dropping the emitter then ends the body.
    async fn finish(&mut self) -> Result<(), Closed> {
        if !self.pending.is_empty() {
            let rest = self.pending.split().freeze();
            self.piece(rest).await?;
        }
        Ok(())
    }

    /// Flushes what was written so far, then fails the body so hyper aborts.
    async fn abort(mut self) -> Result<(), Closed> {
        self.finish().await?;
        sleep(ABORT_GAP).await;
        self.tx.send(Err(StreamAbort)).await.map_err(|_| Closed)
    }
}

async fn produce(p: StreamPlan, mut out: Emitter) -> Result<(), Closed> {
    let usage_null = if p.usage_json.is_some() {
        // OpenAI sends "usage":null on every chunk but the last when include_usage is on.
        ",\"usage\":null"
    } else {
        ""
    };
    if !p.ttft.is_zero() {
        // A zero sleep still waits for a timer tick; skip it on the fast path.
        sleep(p.ttft).await;
    }
    let start = Instant::now();

    if p.kind == Kind::Chat {
        let ev = format!(
            "data: {},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]{}}}\n\n",
            p.prefix, usage_null
        );
        out.push(ev.as_bytes()).await?;
    }
    if p.reset_after == Some(0) {
        return out.abort().await;
    }

    for i in 0..p.plan.per_choice {
        if let Some(iv) = p.token_interval {
            if i > 0 {
                // Absolute deadlines: no drift however long a send took.
                sleep_until(start + iv.saturating_mul(i.min(u64::from(u32::MAX)) as u32)).await;
            }
        }
        let ev = match p.kind {
            Kind::Chat => format!(
                "data: {},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{} \"}},\"logprobs\":null,\"finish_reason\":null}}]{}}}\n\n",
                p.prefix, i, usage_null
            ),
            Kind::Completion => format!(
                "data: {},\"choices\":[{{\"index\":0,\"text\":\"tok{} \",\"logprobs\":null,\"finish_reason\":null}}]{}}}\n\n",
                p.prefix, i, usage_null
            ),
        };
        out.push(ev.as_bytes()).await?;
        if p.reset_after == Some(i + 1) {
            return out.abort().await;
        }
    }

    let fin = match p.kind {
        Kind::Chat => format!(
            "data: {},\"choices\":[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"{}\"}}]{}}}\n\n",
            p.prefix, p.plan.finish_reason, usage_null
        ),
        Kind::Completion => format!(
            "data: {},\"choices\":[{{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"{}\"}}]{}}}\n\n",
            p.prefix, p.plan.finish_reason, usage_null
        ),
    };
    out.push(fin.as_bytes()).await?;
    if let Some(usage) = &p.usage_json {
        let ev = format!(
            "data: {},\"choices\":[],\"usage\":{}}}\n\n",
            p.prefix, usage
        );
        out.push(ev.as_bytes()).await?;
    }
    out.push(b"data: [DONE]\n\n").await?;
    out.finish().await
}
