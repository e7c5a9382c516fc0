//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.
//!
//! gRPC status of a call: OK with the decision; INVALID_ARGUMENT for an empty domain, an
//! empty descriptor list or a limit override in a unit this service does not implement;
//! UNAVAILABLE when Redis does not answer within the timeout (Envoy's rate limit filter
//! then applies its `failure_mode_deny`). A call whose descriptors have no limit needs
//! no Redis and is answered whatever Redis's state.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::log;
use crate::plan::{plan, report_ids, Invalid, REPORTS_METADATA};
use crate::store::Store;

pub struct Rls {
    pub config: Arc<Config>,
    pub prefix: String,
    pub store: Store,
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

#[tonic::async_trait]
impl RateLimitService for Rls {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let reports = report_ids(
            request
                .metadata()
                .get(REPORTS_METADATA)
                .and_then(|v| v.to_str().ok()),
        );
        let request = request.into_inner();
        let plan = plan(&self.config, &self.prefix, &request, now_ms(), &reports)
            .map_err(|Invalid(why)| Status::invalid_argument(why))?;
        let values = if plan.ops.is_empty() {
            Vec::new()
        } else {
            self.store.run(&plan.ops).await.map_err(|e| {
                log::debug(|| format!("request failed: {e}"));
                // UNAVAILABLE promises the call was not counted (a client may send it
                // again); after a timeout Redis may still run it, so that is
                // DEADLINE_EXCEEDED.
                if e.maybe_applied {
                    Status::deadline_exceeded(format!("rate limit store did not answer: {e}"))
                } else {
                    Status::unavailable(format!("rate limit store unavailable: {e}"))
                }
            })?
        };
        let response = plan.respond(&values);
        log::debug(|| describe(&request, &response));
        Ok(Response::new(response))
    }
}

/// The debug line of a call: domain, each descriptor's entries and hits, the result.
fn describe(request: &RateLimitRequest, response: &RateLimitResponse) -> String {
    let mut out = format!(
        "domain={:?} hits_addend={} overall_code={}",
        request.domain, request.hits_addend, response.overall_code
    );
    for (d, s) in request.descriptors.iter().zip(&response.statuses) {
        let entries: Vec<String> = d
            .entries
            .iter()
            .map(|e| format!("{}={}", e.key, e.value))
            .collect();
        let hits = d.hits_addend.as_ref().map(|h| h.value);
        out.push_str(&format!(
            " [{} hits={hits:?} negative={} -> code={} remaining={}]",
            entries.join(","),
            d.is_negative_hits,
            s.code,
            s.limit_remaining
        ));
    }
    out
}
