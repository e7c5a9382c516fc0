//! One request's lifecycle, from request headers to `on_log`: [`Request`] owns it and
//! answers every callback with a [`Plan`] of effects for the host to carry out.
//!
//! - `request`: the lifecycle and its inputs.
//! - `plan`: the effects.
//! - `exchange`: what is known about the request, and the decisions from it.
//! - `quota_step`: which buckets a request charges, when, and the refusals.
//! - `hold`: the per-worker watch that never leaves a held request hanging.
//! - `ids`: the request ids the gateway chooses.
//! - `worker`: what one worker VM keeps between requests.
//! - `route`: route matching and path canonical form.

pub mod budget_step;
pub mod exchange;
pub mod hold;
pub mod ids;
pub mod plan;
pub mod quota_step;
pub mod request;
pub mod route;
pub mod worker;

pub use plan::{Flow, GrpcCall, LocalReply, Plan, RLS_METHOD, RLS_SERVICE};
pub use request::{LogInput, LogNeeds, LogSource, Request, RequestBody, RequestHeaders};
pub use worker::{Worker, WorkerState};
