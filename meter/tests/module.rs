//! Host-layer call-sequence tests: the built module (`make build`) driven through the
//! Proxy-Wasm callbacks Envoy makes, with the recording host of the meter.
//!
//! They need the built `.wasm`, which `make unit` (`cargo test --workspace`) runs before,
//! so they are `#[ignore]`d there and run by `make meter` with `--include-ignored`. A
//! missing module fails them; it never skips them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};

use meter::exchange::{
    self, chat, configured_vm, drive, Outcome, COMPLETION_CANARY, DEMO_CONFIG, NAMES,
    PROMPT_CANARY, TENANT_A_KEY, TENANT_B_KEY,
};
use meter::host::{self, Call, Host};
use meter::vm::{Meter, CONTINUE, PAUSE};
use serde_json::Value;

fn meter() -> &'static Meter {
    static METER: OnceLock<Meter> = OnceLock::new();
    METER.get_or_init(|| match meter::load(&meter::default_wasm_path()) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    })
}

fn run_fresh(name: &str) -> (Host, Outcome) {
    match exchange::run_in(meter(), name) {
        Ok((vm, out)) => (vm.host().clone(), out),
        Err(e) => panic!("{name}: {e}"),
    }
}

type Ran = Arc<(Host, Outcome)>;

/// The exchange `name`, run once per test process (the runs are deterministic, and an
/// unoptimized interpreter makes the 64 KiB one slow).
fn run(name: &str) -> Ran {
    static RUNS: OnceLock<Mutex<BTreeMap<String, Ran>>> = OnceLock::new();
    let runs = RUNS.get_or_init(Default::default);
    let cached = runs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned();
    if let Some(r) = cached {
        return r;
    }
    let r: Ran = Arc::new(run_fresh(name));
    runs.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string(), r.clone());
    r
}

/// `("time", n)`-style shorthand: Proxy-Wasm import names without the `proxy_` prefix.
fn expand(spec: &[(&str, usize)]) -> Vec<String> {
    spec.iter()
        .flat_map(|(name, n)| {
            let full = match *name {
                "time" => "proxy_get_current_time_nanoseconds".to_string(),
                other => format!("proxy_{other}"),
            };
            std::iter::repeat_n(full, *n)
        })
        .collect()
}

fn sequence(out: &Outcome) -> Vec<(String, Vec<String>)> {
    out.sequence()
        .into_iter()
        .map(|(cb, calls)| (cb, calls.into_iter().map(str::to_string).collect()))
        .collect()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The single value written to filter state `key` during the exchange.
fn state_once(out: &Outcome, key: &str) -> String {
    let values = out.state(key);
    assert_eq!(values.len(), 1, "{key} written {} times", values.len());
    values.into_iter().next().unwrap_or_default()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Every filter-state key is written once, and only from `proxy_on_log`.
fn assert_state_written_once_in_on_log(out: &Outcome) {
    let sets = out.calls_named("proxy_set_property");
    assert!(!sets.is_empty());
    for (cb, _) in &sets {
        assert_eq!(*cb, "proxy_on_log");
    }
    let keys: BTreeSet<&str> = out.filter_state.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys.len(),
        out.filter_state.len(),
        "a key was written twice"
    );
}

/// The series of `base` whose labels include every `label=.=value` of `labels`.
fn series<'a>(host: &'a Host, base: &str, labels: &[(&str, &str)]) -> &'a host::Metric {
    let found: Vec<&host::Metric> = host
        .metrics
        .iter()
        .filter(|m| {
            m.name.starts_with(&format!("{base}."))
                && labels
                    .iter()
                    .all(|(k, v)| m.name.contains(&format!(".{k}=.={v};.;")))
        })
        .collect();
    assert_eq!(found.len(), 1, "{base} {labels:?}: {:?}", host.metrics);
    found[0]
}

/// How much the measured exchange added to metric `m`.
fn increments(out: &Outcome, m: &host::Metric, host: &Host) -> i64 {
    let id = host
        .metrics
        .iter()
        .position(|x| x.name == m.name)
        .map(|i| i as i64 + 1);
    out.calls
        .iter()
        .filter(|c| c.name == "proxy_increment_metric" && c.args.first().copied() == id)
        .map(|c| c.args.get(1).copied().unwrap_or(0))
        .sum()
}

fn local_reply_only(out: &Outcome, status: u32) -> Value {
    let replies = out.calls_named("proxy_send_local_response");
    assert_eq!(replies.len(), 1, "exactly one local reply");
    assert_eq!(replies[0].1.args.first().copied(), Some(i64::from(status)));
    let reply = out
        .local_response
        .as_ref()
        .expect("the driver saw the reply");
    assert_eq!(reply.status, status);
    assert_eq!(header(&reply.headers, "content-type"), ["application/json"]);
    assert!(out.forwarded_headers.is_none(), "nothing goes upstream");
    assert!(out.calls_named("proxy_call_foreign_function").is_empty());
    assert!(out
        .calls_named("proxy_set_buffer_bytes")
        .iter()
        .all(|(_, c)| c.args.first() != Some(&0)));
    let body = json(&String::from_utf8_lossy(&reply.body));
    let err = &body["error"];
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    // OpenAI's four fields; `code` is a string or, for a missing key, a JSON null.
    assert_eq!(err.as_object().map(|o| o.len()), Some(4), "{body}");
    assert!(
        err["type"].is_string() && (err["code"].is_string() || err["code"].is_null()),
        "{body}"
    );
    body
}

#[test]
#[ignore = "needs the built module: run `make meter`"]
fn unauthorized_is_one_local_401_and_nothing_forwarded() {
    let ran = run("unauthorized_401");
    let (host, out) = (&ran.0, &ran.1);
    let body = local_reply_only(out, 401);
    // OpenAI's answer to a missing key: `invalid_request_error` with `code: null`.
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["code"].is_null(), "{body}");
    let reply = out.local_response.as_ref().unwrap();
    assert_eq!(header(&reply.headers, "www-authenticate").len(), 1);
    // Refused from the headers: Envoy delivers no body after a local reply.
    assert_eq!(out.request_headers_action, PAUSE);
    assert_eq!(out.request_body_action, None);
    assert_eq!(
        out.calls_named("proxy_send_local_response")[0].0,
        "proxy_on_request_headers"
    );
    // The quota is not touched and no request header is changed.
    assert!(out.calls_named("proxy_get_shared_data").is_empty());
    assert!(out.calls_named("proxy_set_shared_data").is_empty());
    assert!(out.calls_named("proxy_replace_header_map_value").is_empty());

    assert_state_written_once_in_on_log(out);
    let audit = json(&state_once(out, "ai.audit"));
    assert_eq!(audit["decision"], "deny");
    assert_eq!(audit["reason"], "missing_credentials");
    // filter_state: records (the default) writes the records, not one key per field.
    assert!(out.state("ai.decision").is_empty());
    let record = json(&state_once(out, "ai.record"));
    assert_eq!(record["http_status"], 401);

    let denials = series(
        host,
        "ai_gateway_auth_denials_total",
        &[("reason", "missing_credentials")],
    );
    assert_eq!(increments(out, denials, host), 1);
    assert_eq!(denials.value, 2, "warm-up and measured request");

    let expected = vec![
        ("proxy_on_context_create", expand(&[("time", 1)])),
        (
            "proxy_on_request_headers",
            expand(&[
                ("time", 1),
                ("get_header_map_pairs", 1),
                ("send_local_response", 1),
                ("time", 1),
            ]),
        ),
        (
            "proxy_on_response_headers",
            // The filter's own reply is not read back.
            expand(&[("time", 2)]),
        ),
        ("proxy_on_response_body", expand(&[("time", 2)])),
        (
            "proxy_on_log",
            expand(&[
                ("get_property", 2),
                ("time", 1),
                // ai.record, ai.audit, ai.tokens_total (no tenant is known).
                ("set_property", 3),
                ("increment_metric", 1),
                ("record_metric", 2),
                ("increment_metric", 1),
                // gen_ai_server_request_duration_ms (no usage: no token histogram).
                ("record_metric", 1),
            ]),
        ),
        ("proxy_on_done", vec![]),
        ("proxy_on_delete", vec![]),
    ];
    let expected: Vec<(String, Vec<String>)> = expected
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(sequence(out), expected);
}

#[test]
#[ignore = "needs the built module: run `make meter`"]
fn chat_is_forwarded_with_identity_and_without_credentials() {
    let ran = run("chat_1k");
    let (host, out) = (&ran.0, &ran.1);
    assert!(out.local_response.is_none());
    assert!(out.calls_named("proxy_send_local_response").is_empty());
    // Headers are held until the body is read, then the request continues.
    assert_eq!(out.request_headers_action, PAUSE);
    assert_eq!(out.request_body_action, Some(CONTINUE));

    let fwd = out.forwarded_headers.as_ref().expect("forwarded");
    assert!(
        header(fwd, "authorization").is_empty(),
        "credential removed"
    );
    assert_eq!(header(fwd, "x-ai-tenant"), ["tenant-a"]);
    assert_eq!(header(fwd, "x-ai-subject"), ["svc:agent-platform"]);
    assert_eq!(header(fwd, "x-ai-model"), ["llama3-8b"]);
    assert_eq!(header(fwd, ":path"), ["/v1/chat/completions"]);
    // A non-streaming body goes upstream unchanged.
    assert_eq!(
        out.forwarded_body.as_deref(),
        Some(&chat(1024).request.body.unwrap()[..])
    );
    let clear = out.calls_named("proxy_call_foreign_function");
    assert_eq!(clear.len(), 1);
    assert_eq!(
        (clear[0].0, clear[0].1.text(0).as_str()),
        ("proxy_on_request_body", "clear_route_cache")
    );

    assert_state_written_once_in_on_log(out);
    let record = json(&state_once(out, "ai.record"));
    assert_eq!(record["tenant"], "tenant-a");
    assert_eq!(record["http_status"], 200);
    assert_eq!(record["model"], "llama3-8b");
    assert_eq!(record["stream"], false);
    assert_eq!(record["prompt_tokens"], 256);
    assert_eq!(record["completion_tokens"], 16);
    assert_eq!(record["usage_estimated"], false);
    assert_eq!(record["gateway_backend"], "127.0.0.1:18001");
    let audit = json(&state_once(out, "ai.audit"));
    assert_eq!(audit["decision"], "allow");
    assert_eq!(state_once(out, "ai.tenant"), "tenant-a");

    // Metrics: defined once per VM (in the warm-up), incremented per request.
    assert!(out.calls_named("proxy_define_metric").is_empty());
    let requests = series(
        host,
        "ai_gateway_requests_total",
        &[("tenant", "tenant-a"), ("status", "200")],
    );
    assert_eq!(increments(out, requests, host), 1);
    assert_eq!(requests.value, 2);
    let prompt = series(
        host,
        "ai_gateway_tokens_total",
        &[("tenant", "tenant-a"), ("type", "prompt")],
    );
    assert_eq!(increments(out, prompt, host), 256);

    let expected = vec![
        ("proxy_on_context_create", expand(&[("time", 1)])),
        (
            "proxy_on_request_headers",
            expand(&[
                ("time", 1),
                ("get_header_map_pairs", 1),
                // No peer-certificate read: no tenant has spiffe_ids.
                ("remove_header_map_value", 1),
                // x-ai-tenant, x-ai-subject, x-request-id.
                ("replace_header_map_value", 3),
                ("time", 1),
            ]),
        ),
        (
            "proxy_on_request_body",
            expand(&[
                ("time", 1),
                ("get_buffer_bytes", 1),
                ("get_shared_data", 1),
                ("set_shared_data", 1),
                ("get_shared_data", 1),
                ("set_shared_data", 1),
                ("replace_header_map_value", 3),
                ("call_foreign_function", 1),
                ("time", 1),
            ]),
        ),
        (
            "proxy_on_response_headers",
            expand(&[
                ("time", 1),
                // One read of the whole map (status, content type and encoding).
                ("get_header_map_pairs", 1),
                // The six x-ratelimit-* headers and x-request-id.
                ("replace_header_map_value", 7),
                ("time", 1),
            ]),
        ),
        (
            "proxy_on_response_body",
            expand(&[("time", 1), ("get_buffer_bytes", 1), ("time", 1)]),
        ),
        (
            "proxy_on_log",
            expand(&[
                ("get_property", 2),
                ("time", 1),
                ("get_shared_data", 1),
                ("set_shared_data", 1),
                // ai.record, ai.audit, ai.tenant, ai.tokens_total.
                ("set_property", 4),
                ("increment_metric", 1),
                ("record_metric", 3),
                ("increment_metric", 3),
                // gen_ai_client_token_usage (input, output), gen_ai_server_request_duration_ms.
                ("record_metric", 3),
            ]),
        ),
        ("proxy_on_done", vec![]),
        ("proxy_on_delete", vec![]),
    ];
    let expected: Vec<(String, Vec<String>)> = expected
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(sequence(out), expected);
}

#[test]
#[ignore = "needs the built module: run `make meter`"]
fn metrics_are_defined_on_the_first_request_only() {
    let ran = run("chat_1k_cold");
    let (host, out) = (&ran.0, &ran.1);
    let defined = out.calls_named("proxy_define_metric");
    assert!(!defined.is_empty());
    assert!(defined.iter().all(|(cb, _)| *cb == "proxy_on_log"));
    // Every series but the VM's memory gauge, which is defined at configure.
    let per_request = host.metrics.iter().filter(|m| m.kind != 1).count();
    assert_eq!(defined.len(), per_request, "each series defined once");
    assert_eq!(host.metrics.len(), per_request + 1);
}

#[test]
#[ignore = "needs the built module: run `make meter`"]
fn client_sent_trusted_headers_are_removed_before_the_filter_sets_its_own() {
    let mut vm = configured_vm(meter(), DEMO_CONFIG.as_bytes().to_vec()).unwrap();
    let mut ex = chat(1024);
    for (k, v) in [
        ("x-ai-tenant", "tenant-b"),
        ("x-ai-subject", "root"),
        ("x-ai-model", "gpt-4"),
        ("x-ai-traffic-class", "batch"),
    ] {
        ex.request.headers.push((k.to_string(), v.to_string()));
    }
    let out = drive(&mut vm, &ex).unwrap();
    let fwd = out.forwarded_headers.as_ref().expect("forwarded");
    assert_eq!(header(fwd, "x-ai-tenant"), ["tenant-a"]);
    assert_eq!(header(fwd, "x-ai-subject"), ["svc:agent-platform"]);
    assert_eq!(header(fwd, "x-ai-model"), ["llama3-8b"]);
    assert_eq!(header(fwd, "x-ai-traffic-class"), ["interactive"]);
    // Removed in on_request_headers, before the filter's own values are set.
    let removed: Vec<String> = out
        .calls_named("proxy_remove_header_map_value")
        .iter()
        .filter(|(cb, _)| *cb == "proxy_on_request_headers")
        .map(|(_, c)| c.text(0))
        .collect();
    for name in [
        "x-ai-tenant",
        "x-ai-subject",
        "x-ai-model",
        "x-ai-traffic-class",
    ] {
        assert!(
            removed.iter().any(|r| r == name),
            "{name} not removed: {removed:?}"
        );
    }
    let first_remove = out
        .calls
        .iter()
        .position(|c| c.name == "proxy_remove_header_map_value");
    let first_set = out
        .calls
        .iter()
        .position(|c| c.name == "proxy_replace_header_map_value");
    assert!(first_remove < first_set);
    assert_eq!(json(&state_once(&out, "ai.audit"))["decision"], "allow");
}

/// Whether the canary may legitimately cross in `call`: only the forwarded request body
/// (the prompt goes upstream) may carry the prompt.
fn may_carry_prompt(call: &Call) -> bool {
    call.name == "proxy_set_buffer_bytes" && call.args.first() == Some(&(host::REQUEST_BODY as i64))
}

#[test]
#[ignore = "needs the built module: run `make meter`"]
fn no_credential_prompt_or_completion_ever_reaches_the_host() {
    // The canaries are in the traffic: the prompt is in every request body and goes
    // upstream in the rewritten streaming body, the completion is in every response.
    let ran = run("stream_16");
    let (_, stream) = (&ran.0, &ran.1);
    let set_body = stream
        .calls_named("proxy_set_buffer_bytes")
        .into_iter()
        .find(|(_, c)| may_carry_prompt(c))
        .expect("the streaming body is rewritten");
    assert!(String::from_utf8_lossy(&set_body.1.data[0]).contains(PROMPT_CANARY));
    for ex in [chat(1024), exchange::stream(16)] {
        let body = String::from_utf8(ex.request.body.unwrap()).unwrap();
        assert!(body.contains(PROMPT_CANARY));
        let exchange::Upstream::Respond { chunks, .. } = ex.upstream else {
            panic!("a response")
        };
        assert!(String::from_utf8_lossy(&chunks.concat()).contains(COMPLETION_CANARY));
    }
    for name in NAMES {
        let ran = run(name);
        let (host, out) = (&ran.0, &ran.1);
        for (i, call) in out.calls.iter().enumerate() {
            for data in &call.data {
                let text = String::from_utf8_lossy(data);
                for key in [TENANT_A_KEY, TENANT_B_KEY] {
                    assert!(
                        !text.contains(key),
                        "{name}: call {i} {} carries an API key",
                        call.name
                    );
                }
                assert!(
                    !text.contains(COMPLETION_CANARY),
                    "{name}: call {i} {} carries completion text",
                    call.name
                );
                if !may_carry_prompt(call) {
                    assert!(
                        !text.contains(PROMPT_CANARY),
                        "{name}: call {i} {} carries prompt text",
                        call.name
                    );
                }
            }
        }
        let leaks = |text: &str| {
            [TENANT_A_KEY, TENANT_B_KEY, PROMPT_CANARY, COMPLETION_CANARY]
                .iter()
                .any(|c| text.contains(c))
        };
        for (k, v) in &out.filter_state {
            assert!(
                !leaks(k) && !leaks(&String::from_utf8_lossy(v)),
                "{name}: filter state {k}"
            );
        }
        for m in &host.metrics {
            assert!(!leaks(&m.name), "{name}: metric {}", m.name);
        }
        assert!(!leaks(&String::from_utf8_lossy(&host.stdout)));
        assert!(!leaks(&String::from_utf8_lossy(&host.stderr)));
    }
}

#[test]
#[ignore = "needs the built module: run `make meter`"]
fn a_stream_is_observed_chunk_by_chunk_and_settled_from_its_usage() {
    let ran = run("stream_16");
    let (_, out) = (&ran.0, &ran.1);
    let bodies = out
        .callbacks
        .iter()
        .filter(|cb| cb.name == "proxy_on_response_body")
        .count();
    assert_eq!(bodies, 18, "16 content chunks, the usage chunk, [DONE]");
    let reads = out.calls_named("proxy_get_buffer_bytes");
    assert_eq!(
        reads
            .iter()
            .filter(|(cb, _)| *cb == "proxy_on_response_body")
            .count(),
        18
    );
    // The request asks the backend for usage in the stream, and is never retried.
    let fwd = out.forwarded_headers.as_ref().expect("forwarded");
    assert_eq!(header(fwd, "x-envoy-max-retries"), ["0"]);
    let body = json(&String::from_utf8_lossy(
        out.forwarded_body.as_ref().unwrap(),
    ));
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(
        header(fwd, "content-length"),
        [out.forwarded_body
            .as_ref()
            .unwrap()
            .len()
            .to_string()
            .as_str()]
    );

    assert_state_written_once_in_on_log(out);
    let record = json(&state_once(out, "ai.record"));
    assert_eq!(record["stream"], true);
    assert_eq!(record["completion_tokens"], 16);
    assert_eq!(record["usage_estimated"], false);
    assert_eq!(record["stream_complete"], true);
    assert!(record["ttft_ms"].is_u64(), "{record}");
}

#[test]
#[ignore = "needs the built module: run `make meter`"]
fn a_tenant_on_a_route_it_may_not_use_gets_403() {
    let ran = run("forbidden_403");
    let (_, out) = (&ran.0, &ran.1);
    let body = local_reply_only(out, 403);
    assert_eq!(body["error"]["type"], "request_forbidden");
    assert_eq!(body["error"]["code"], "route_forbidden");
    assert_eq!(
        out.calls_named("proxy_send_local_response")[0].0,
        "proxy_on_request_headers"
    );
    assert_state_written_once_in_on_log(out);
    let audit = json(&state_once(out, "ai.audit"));
    assert_eq!(audit["decision"], "deny");
    assert_eq!(audit["reason"], "route_forbidden");
    assert_eq!(audit["tenant"], "tenant-b");
}

#[test]
#[ignore = "needs the built module: run `make meter`"]
fn an_empty_request_bucket_refuses_with_429_after_reading_the_body() {
    let ran = run("quota_429");
    let (host, out) = (&ran.0, &ran.1);
    let body = local_reply_only(out, 429);
    assert_eq!(body["error"]["type"], "requests");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        out.calls_named("proxy_send_local_response")[0].0,
        "proxy_on_request_body"
    );
    let reply = out.local_response.as_ref().unwrap();
    assert_eq!(header(&reply.headers, "retry-after").len(), 1);
    assert_state_written_once_in_on_log(out);
    let audit = json(&state_once(out, "ai.audit"));
    assert_eq!(audit["decision"], "deny");
    assert_eq!(audit["reason"], "quota_requests");
    let rejections = series(
        host,
        "ai_gateway_quota_rejections_total",
        &[("tenant", "tenant-a"), ("kind", "requests")],
    );
    assert_eq!(increments(out, rejections, host), 1);
    assert_eq!(
        rejections.value, 2,
        "the warm-up refusal and the measured one"
    );
}

#[test]
#[ignore = "needs the built module: run `make meter`"]
fn an_upstream_503_is_recorded_and_its_text_body_not_read() {
    let ran = run("upstream_503");
    let (_, out) = (&ran.0, &ran.1);
    assert!(out.local_response.is_none());
    let reads = out.calls_named("proxy_get_buffer_bytes");
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].0, "proxy_on_request_body");
    assert_state_written_once_in_on_log(out);
    let record = json(&state_once(out, "ai.record"));
    assert_eq!(record["http_status"], 503);
}

#[test]
#[ignore = "needs the built module: run `make meter`"]
fn a_client_abort_still_leaves_exactly_one_record() {
    let ran = run("client_abort");
    let (_, out) = (&ran.0, &ran.1);
    assert!(out
        .callbacks
        .iter()
        .all(|cb| !cb.name.starts_with("proxy_on_response")));
    // No response: on_log asks Envoy for the response code, which it does not have.
    let props: Vec<(String, Option<i64>)> = out
        .calls_named("proxy_get_property")
        .iter()
        .filter(|(cb, _)| *cb == "proxy_on_log")
        .map(|(_, c)| (c.text(0).replace('\0', "."), c.status))
        .collect();
    assert!(
        props.contains(&(
            "response.code".to_string(),
            Some(i64::from(host::NOT_FOUND))
        )),
        "{props:?}"
    );
    assert_state_written_once_in_on_log(out);
    let record = json(&state_once(out, "ai.record"));
    assert!(record["http_status"].is_null(), "{record}");
    assert!(out.state("ai.http_status").is_empty());
}

#[test]
#[ignore = "needs the built module: run `make meter`"]
fn the_meter_is_deterministic() {
    for name in ["chat_1k", "stream_16", "quota_429"] {
        let (_, a) = run_fresh(name);
        let (_, b) = run_fresh(name);
        assert_eq!(a.usage, b.usage, "{name}");
        assert_eq!(a.calls, b.calls, "{name}");
        assert_eq!(a.callbacks, b.callbacks, "{name}");
    }
}

#[test]
#[ignore = "needs the built module: run `make meter`"]
fn only_the_imports_the_filter_uses_are_called() {
    let allowed: BTreeSet<&str> = [
        "proxy_log",
        "proxy_get_current_time_nanoseconds",
        "proxy_set_tick_period_milliseconds",
        "proxy_get_buffer_bytes",
        "proxy_set_buffer_bytes",
        "proxy_get_header_map_pairs",
        "proxy_get_header_map_value",
        "proxy_replace_header_map_value",
        "proxy_remove_header_map_value",
        "proxy_get_property",
        "proxy_set_property",
        "proxy_get_shared_data",
        "proxy_set_shared_data",
        "proxy_send_local_response",
        "proxy_call_foreign_function",
        "proxy_define_metric",
        "proxy_increment_metric",
        "proxy_record_metric",
        "random_get",
    ]
    .into_iter()
    .collect();
    for name in NAMES {
        let ran = run(name);
        let (_, out) = (&ran.0, &ran.1);
        for c in &out.calls {
            assert!(
                allowed.contains(c.name),
                "{name}: unexpected host call {}",
                c.name
            );
            // Every call the filter makes succeeds here, except reads of what Envoy does
            // not have: properties (no TLS peer, no response code) and a bucket the VM
            // has not written yet.
            if c.name != "proxy_get_property" && c.name != "proxy_get_shared_data" {
                assert!(matches!(c.status, None | Some(0)), "{name}: {c:?}");
            }
        }
    }
}

const VM_MEMORY_GAUGE: &str = "ai_gateway_wasm_memory_bytes.vm=.=0;.;";
const VM_ORDINAL_KEY: &str = "ai-gateway-filter.vm_ordinal";

fn gauges(host: &Host) -> Vec<(String, i64)> {
    host.metrics
        .iter()
        .filter(|m| m.kind == 1)
        .map(|m| (m.name.clone(), m.value))
        .collect()
}

#[test]
#[ignore = "needs the built module: run `make meter`"]
fn a_vm_takes_one_ordinal_and_reports_its_linear_memory() {
    let mut vm = configured_vm(meter(), DEMO_CONFIG.as_bytes().to_vec()).unwrap();
    let memory = i64::try_from(vm.memory_bytes()).unwrap();
    assert_eq!(gauges(vm.host()), [(VM_MEMORY_GAUGE.to_string(), memory)]);
    let counter = vm
        .host()
        .shared_data
        .get(VM_ORDINAL_KEY)
        .map(|(v, _)| v.clone());
    assert_eq!(counter.as_deref(), Some(&b"1"[..]));
    // A second push reports again under the same ordinal; no new one is taken.
    drive(&mut vm, &chat(65536)).unwrap();
    assert!(vm.configure().unwrap());
    let memory = i64::try_from(vm.memory_bytes()).unwrap();
    assert_eq!(gauges(vm.host()), [(VM_MEMORY_GAUGE.to_string(), memory)]);
    let counter = vm
        .host()
        .shared_data
        .get(VM_ORDINAL_KEY)
        .map(|(v, _)| v.clone());
    assert_eq!(counter.as_deref(), Some(&b"1"[..]));
}

#[test]
#[ignore = "needs the built module: run `make meter`"]
fn the_memory_gauge_gets_a_one_second_tick_when_nothing_else_arms_one() {
    let vm = configured_vm(meter(), DEMO_CONFIG.as_bytes().to_vec()).unwrap();
    assert_eq!(vm.host().tick_period_ms, 100, "the hold watch's tick");
    let mut cfg: Value = json(DEMO_CONFIG);
    cfg["routing"] = serde_json::json!({ "hold_headers_for_body": false });
    let vm = configured_vm(meter(), cfg.to_string().into_bytes()).unwrap();
    assert_eq!(vm.host().tick_period_ms, 1000);
}

#[test]
#[ignore = "needs the built module: run `make meter`"]
fn a_synced_global_limit_costs_shared_data_calls_only() {
    let local = run("chat_1k");
    let global = run("chat_1k_global");
    let count = |out: &Outcome, name: &str| out.calls_named(name).len();
    for name in ["proxy_get_shared_data", "proxy_set_shared_data"] {
        // Reserve: one get and one set per counter (requests, tokens); settle: the
        // tokens counter's correction.
        assert_eq!(count(&global.1, name), count(&local.1, name) + 3, "{name}");
    }
    assert_eq!(
        count(&global.1, "proxy_grpc_call"),
        0,
        "no call per request"
    );
    assert_eq!(
        global.1.usage.host_calls_total,
        local.1.usage.host_calls_total + 6
    );
    let record = json(&state_once(&global.1, "ai.record"));
    assert_eq!(record["quota_mode"], "global");
    assert_eq!(
        json(&state_once(&local.1, "ai.record"))["quota_mode"],
        "local"
    );
    assert_eq!(
        json(&state_once(&global.1, "ai.audit"))["quota_mode"],
        "global"
    );
}
