//! OpenAI-compatible API shapes: what the filter needs to read from request
//! bodies (model, streaming flags, prompt size) and from responses (token usage,
//! time to first token), without buffering whole response bodies.
//!
//! Everything here is plain Rust (serde + serde_json only) and must never panic:
//! a panic aborts the Wasm VM for a whole Envoy worker. Errors and `Debug`
//! output never contain prompt or response text, only field names and categories.
//!
//! - [`request`]: request body parsing ([`parse_request`]) and the
//!   `stream_options.include_usage` rewrite ([`with_include_usage`]).
//! - [`usage`]: the [`Usage`] object and [`JsonUsageScanner`] for non-streamed bodies.
//! - [`sse`]: [`SseScanner`] for `text/event-stream` bodies.

mod bounded;
pub mod estimate;
mod include_usage;
mod json_scan;
mod prompt_de;
pub mod request;
mod request_de;
pub mod sse;
mod sse_event;
pub mod usage;

pub use request::{
    estimate_tokens_from_chars, parse_request, with_include_usage, Api, BodyError, BodyErrorKind,
    ParsedRequest,
};
pub use sse::{FeedResult, SseScanner, StreamSummary, DEFAULT_MAX_EVENT_BYTES};
pub use usage::{JsonUsageScanner, Usage, DEFAULT_MAX_USAGE_BYTES};
