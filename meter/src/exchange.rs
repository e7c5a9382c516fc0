//! Canonical exchanges and the driver that plays one through the module's callbacks in
//! the order Envoy 1.40 makes them for an HTTP stream through the Wasm filter:
//!
//! 1. `proxy_on_context_create(id, root)`;
//! 2. `proxy_on_request_headers` (end of stream when there is no body);
//! 3. `proxy_on_request_body` once with the whole body and end of stream (the filter
//!    holds the headers or buffers, so Envoy delivers the buffered body in one call);
//! 4. the response: the upstream's headers, then one `proxy_on_response_body` per chunk,
//!    the last with end of stream; or, when the filter sent a local reply during a
//!    request callback, Envoy's reply to it (`:status`, `content-length`, the filter's
//!    headers; the body in one call), which runs through the filter's response callbacks;
//!    or nothing when the client went away;
//! 5. `proxy_on_log`, `proxy_on_done`, `proxy_on_delete`.
//!
//! Properties Envoy answers: `xds.cluster_name` from the start (the route is chosen before
//! the filter runs), `upstream.address` once the request was forwarded, `response.code`
//! once a response started. Anything else is `NotFound`, as for a plaintext downstream.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::host::{self, Call, Host, LocalResponse};
use crate::vm::{Callback, Meter, Vm};

pub const TENANT_A_HOST: &str = "tenant-a.ai.example.com";
pub const TENANT_A_KEY: &str = "sk-tenant-a-demo";
pub const TENANT_B_HOST: &str = "tenant-b.ai.example.com";
pub const TENANT_B_KEY: &str = "sk-tenant-b-demo";
pub const CLUSTER: &str = "chat-llama3-8b-v1";
pub const UPSTREAM_ADDRESS: &str = "127.0.0.1:18001";
/// In every prompt: must never reach the host except in the forwarded request body.
pub const PROMPT_CANARY: &str = "zebracanary7prompt";
/// In every completion: must never reach the host (the module only reads responses).
pub const COMPLETION_CANARY: &str = "quokkacanary3reply";
/// `created` of the mock completions (the meter's epoch).
const CREATED: u64 = 1_704_067_200;

/// Words of the generated prompts (as bench/run_bench.py's `chat_body`).
const WORDS: [&str; 24] = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "the",
    "gateway",
    "reads",
    "an",
    "openai",
    "compatible",
    "request",
    "body",
    "and",
    "counts",
    "every",
    "word",
    "of",
    "the",
];

/// A chat request of exactly `size` bytes: a system and a user message, the user's content
/// the canary followed by words, padded with dots.
pub fn chat_body(size: usize, stream: bool, max_tokens: u32) -> Vec<u8> {
    let render = |content: &str| {
        let mut s = format!(
            "{{\"model\":\"llama3-8b\",\"messages\":[{{\"role\":\"system\",\"content\":\
             \"You are a helpful assistant.\"}},{{\"role\":\"user\",\"content\":\"{content}\"}}],\
             \"max_tokens\":{max_tokens}"
        );
        if stream {
            s.push_str(",\"stream\":true");
        }
        s.push('}');
        s
    };
    let need = size.saturating_sub(render("").len());
    let mut text = String::from(PROMPT_CANARY);
    for w in WORDS.iter().cycle() {
        if text.len() + 1 + w.len() > need {
            break;
        }
        text.push(' ');
        text.push_str(w);
    }
    while text.len() < need {
        text.push('.');
    }
    render(&text).into_bytes()
}

fn prompt_tokens(body: &[u8]) -> u64 {
    (body.len() as u64).div_ceil(4)
}

fn usage_json(prompt: u64, completion: u64) -> String {
    format!(
        "{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{}}}",
        prompt + completion
    )
}

/// The mock backend's non-streaming completion of `completion` tokens (one word each).
pub fn chat_completion(prompt: u64, completion: u64) -> Vec<u8> {
    let mut words = vec![COMPLETION_CANARY.to_string()];
    words.extend((1..completion).map(|i| WORDS[i as usize % WORDS.len()].to_string()));
    format!(
        "{{\"id\":\"chatcmpl-meter\",\"object\":\"chat.completion\",\"created\":{CREATED},\
         \"model\":\"llama3-8b\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\
         \"content\":\"{}\"}},\"finish_reason\":\"stop\"}}],\"usage\":{}}}",
        words.join(" "),
        usage_json(prompt, completion)
    )
    .into_bytes()
}

/// `n` content chunks (one token each), the usage chunk and `[DONE]`, one SSE event each.
pub fn chat_stream(prompt: u64, n: u64) -> Vec<Vec<u8>> {
    let chunk = |choices: String, extra: &str| {
        format!(
            "data: {{\"id\":\"chatcmpl-meter\",\"object\":\"chat.completion.chunk\",\
             \"created\":{CREATED},\"model\":\"llama3-8b\",\"choices\":[{choices}]{extra}}}\n\n"
        )
        .into_bytes()
    };
    let mut out = Vec::new();
    for i in 0..n {
        let word = if i == 0 {
            COMPLETION_CANARY
        } else {
            WORDS[i as usize % WORDS.len()]
        };
        let finish = if i + 1 == n { "\"stop\"" } else { "null" };
        out.push(chunk(
            format!(
                "{{\"index\":0,\"delta\":{{\"content\":\"{word} \"}},\"finish_reason\":{finish}}}"
            ),
            "",
        ));
    }
    out.push(chunk(
        String::new(),
        &format!(",\"usage\":{}", usage_json(prompt, n)),
    ));
    out.push(b"data: [DONE]\n\n".to_vec());
    out
}

#[derive(Debug, Clone)]
pub struct Request {
    /// Request headers as Envoy hands them to the filter (pseudo-headers first).
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub enum Upstream {
    /// The backend answers: status, headers (without `:status`), body chunks.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        chunks: Vec<Vec<u8>>,
    },
    /// The client goes away after the request was forwarded, before any response.
    ClientAbort,
}

#[derive(Debug, Clone)]
pub struct Exchange {
    pub request: Request,
    pub upstream: Upstream,
}

fn h(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// A POST to `/v1/chat/completions` on `host` with `credential` (a header) if any.
pub fn chat_request(host: &str, credential: Option<(&str, &str)>, body: Vec<u8>) -> Request {
    let mut headers = vec![
        h(":authority", host),
        h(":path", "/v1/chat/completions"),
        h(":method", "POST"),
        h(":scheme", "http"),
        h("user-agent", "meter/1.0"),
        h("accept", "*/*"),
        h("content-type", "application/json"),
        h("content-length", &body.len().to_string()),
    ];
    if let Some((k, v)) = credential {
        headers.push(h(k, v));
    }
    // Added by Envoy's connection manager before the filter chain.
    headers.push(h("x-forwarded-proto", "http"));
    headers.push(h("x-request-id", "6f1c7a52-3b0e-4d8e-9a41-0c2d5e7f9b13"));
    Request {
        headers,
        body: Some(body),
    }
}

fn bearer_a() -> Option<(&'static str, &'static str)> {
    Some(("authorization", "Bearer sk-tenant-a-demo"))
}

fn json_response(status: u16, body: Vec<u8>) -> Upstream {
    Upstream::Respond {
        status,
        headers: vec![
            h("content-type", "application/json"),
            h("content-length", &body.len().to_string()),
            h("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            h("x-envoy-upstream-service-time", "1"),
        ],
        chunks: vec![body],
    }
}

pub fn chat(size: usize) -> Exchange {
    let body = chat_body(size, false, 16);
    let prompt = prompt_tokens(&body);
    Exchange {
        request: chat_request(TENANT_A_HOST, bearer_a(), body),
        upstream: json_response(200, chat_completion(prompt, 16)),
    }
}

pub fn stream(chunks: u64) -> Exchange {
    let body = chat_body(1024, true, chunks as u32);
    let prompt = prompt_tokens(&body);
    Exchange {
        request: chat_request(TENANT_A_HOST, bearer_a(), body),
        upstream: Upstream::Respond {
            status: 200,
            headers: vec![
                h("content-type", "text/event-stream"),
                h("cache-control", "no-cache"),
                h("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
                h("x-envoy-upstream-service-time", "1"),
            ],
            chunks: chat_stream(prompt, chunks),
        },
    }
}

pub fn unauthorized() -> Exchange {
    let mut ex = chat(1024);
    ex.request = chat_request(TENANT_A_HOST, None, chat_body(1024, false, 16));
    ex
}

pub fn forbidden() -> Exchange {
    let mut ex = chat(1024);
    ex.request = chat_request(
        TENANT_B_HOST,
        Some(("x-api-key", TENANT_B_KEY)),
        chat_body(1024, false, 16),
    );
    ex
}

pub fn upstream_503() -> Exchange {
    let body = b"upstream overloaded, retry later\n".to_vec();
    Exchange {
        request: chat(1024).request,
        upstream: Upstream::Respond {
            status: 503,
            headers: vec![
                h("content-type", "text/plain"),
                h("content-length", &body.len().to_string()),
                h("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
                h("x-envoy-upstream-service-time", "1"),
            ],
            chunks: vec![body],
        },
    }
}

pub fn client_abort() -> Exchange {
    Exchange {
        request: chat(1024).request,
        upstream: Upstream::ClientAbort,
    }
}

/// `filters/demo.json`, as committed.
pub const DEMO_CONFIG: &str = include_str!("../../filters/demo.json");

/// demo.json with tenant-a's request bucket cut to one request (refilled once a minute),
/// so the second request within the run is refused with 429.
pub fn quota_config() -> Result<Vec<u8>, String> {
    let mut cfg: serde_json::Value =
        serde_json::from_str(DEMO_CONFIG).map_err(|e| format!("filters/demo.json: {e}"))?;
    let quota = cfg
        .pointer_mut("/tenants/0/quota")
        .and_then(|q| q.as_object_mut())
        .ok_or("filters/demo.json: tenants[0].quota missing")?;
    quota.insert("request_burst".into(), 1.into());
    quota.insert("requests_per_minute".into(), 1.into());
    serde_json::to_vec(&cfg).map_err(|e| e.to_string())
}

/// demo.json with tenant-a's limits also global, in synced mode (docs/global-quotas.md):
/// the request path adds shared-data calls only, never a call to the service.
pub fn global_config() -> Result<Vec<u8>, String> {
    let mut cfg: serde_json::Value =
        serde_json::from_str(DEMO_CONFIG).map_err(|e| format!("filters/demo.json: {e}"))?;
    let obj = cfg
        .as_object_mut()
        .ok_or("filters/demo.json: not an object")?;
    obj.insert(
        "global_quota".into(),
        serde_json::json!({"cluster": "ratelimit", "expected_replicas": 2}),
    );
    let quota = cfg
        .pointer_mut("/tenants/0/quota")
        .and_then(|q| q.as_object_mut())
        .ok_or("filters/demo.json: tenants[0].quota missing")?;
    quota.insert(
        "global".into(),
        serde_json::json!({"unit": "minute", "requests": 100000, "tokens": 100000000}),
    );
    serde_json::to_vec(&cfg).map_err(|e| e.to_string())
}

/// What one metered span cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub host_calls: BTreeMap<String, u64>,
    pub host_calls_total: u64,
    pub bytes_to_host: u64,
    pub bytes_from_host: u64,
    /// wasmi fuel (see `vm`): an upper bound of the operators executed.
    pub fuel: u64,
    /// Wasm operators executed, exactly (from the operator-counting module; 0 on the
    /// plain one).
    pub instructions: u64,
    pub bulk_bytes: u64,
    pub peak_memory_bytes: u64,
}

/// What the driver saw of one exchange.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub context_id: u32,
    /// Actions returned by the request callbacks (`None`: not called).
    pub request_headers_action: i32,
    pub request_body_action: Option<i32>,
    /// The filter's local reply, if it sent one.
    pub local_response: Option<LocalResponse>,
    /// Request headers and body as they went upstream (`None`: not forwarded).
    pub forwarded_headers: Option<Vec<(String, String)>>,
    pub forwarded_body: Option<Vec<u8>>,
    /// Every host call of the exchange, in order.
    pub calls: Vec<Call>,
    /// Every callback into the module, in order, with its fuel.
    pub callbacks: Vec<Callback>,
    /// Filter state written during the exchange, in order.
    pub filter_state: Vec<(String, Vec<u8>)>,
    pub usage: Usage,
}

impl Outcome {
    /// The callback during which host call `index` was made.
    pub fn callback_of(&self, index: usize) -> Option<&str> {
        self.callbacks
            .iter()
            .rev()
            .find(|cb| cb.first_call <= index && index < cb.first_call + cb.host_calls)
            .map(|cb| cb.name.as_str())
    }

    /// Host calls named `name`, with the callback each was made in.
    pub fn calls_named(&self, name: &str) -> Vec<(&str, &Call)> {
        self.calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.name == name)
            .map(|(i, c)| (self.callback_of(i).unwrap_or("?"), c))
            .collect()
    }

    /// The values written to filter state `key`, in order.
    pub fn state(&self, key: &str) -> Vec<String> {
        self.filter_state
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// For each callback, the names of the host calls it made, e.g. `("proxy_on_log", ["proxy_get_property", …])`.
    pub fn sequence(&self) -> Vec<(String, Vec<&'static str>)> {
        self.callbacks
            .iter()
            .map(|cb| {
                let calls = self
                    .calls
                    .iter()
                    .skip(cb.first_call)
                    .take(cb.host_calls)
                    .map(|c| c.name)
                    .collect();
                (cb.name.clone(), calls)
            })
            .collect()
    }
}

/// Plays `ex` in a new context of `vm` and measures it.
pub fn drive(vm: &mut Vm, ex: &Exchange) -> Result<Outcome, String> {
    vm.host_mut().reset_counts();
    vm.host_mut().begin_stream();
    vm.take_callbacks();
    vm.mark_profile();
    let fuel_before = vm.fuel_left();
    let ops_before = vm.operators();
    vm.host_mut()
        .properties
        .insert("xds.cluster_name".into(), CLUSTER.as_bytes().to_vec());

    let id = vm.new_context()?;
    let req = &ex.request;
    vm.host_mut().maps[host::REQUEST_HEADERS] = req.headers.clone();
    let request_headers_action =
        vm.on_request_headers(id, req.headers.len(), req.body.is_none())?;
    let mut local = vm.host_mut().local_response.take();
    let mut request_body_action = None;
    if let (None, Some(body)) = (&local, &req.body) {
        vm.host_mut().buffers[host::REQUEST_BODY] = Some(body.clone());
        request_body_action = Some(vm.on_request_body(id, body.len(), true)?);
        local = vm.host_mut().local_response.take();
    }

    let (mut forwarded_headers, mut forwarded_body) = (None, None);
    match (&local, &ex.upstream) {
        (Some(reply), _) => {
            let mut headers = vec![
                h(":status", &reply.status.to_string()),
                h("content-length", &reply.body.len().to_string()),
            ];
            headers.extend(reply.headers.iter().cloned());
            respond(
                vm,
                id,
                reply.status,
                headers,
                std::slice::from_ref(&reply.body),
            )?;
        }
        (None, upstream) => {
            let host = vm.host_mut();
            forwarded_headers = Some(host.maps[host::REQUEST_HEADERS].clone());
            forwarded_body = host.buffers[host::REQUEST_BODY].clone();
            host.properties.insert(
                "upstream.address".into(),
                UPSTREAM_ADDRESS.as_bytes().to_vec(),
            );
            if let Upstream::Respond {
                status,
                headers,
                chunks,
            } = upstream
            {
                let mut all = vec![h(":status", &status.to_string())];
                all.extend(headers.iter().cloned());
                respond(vm, id, u32::from(*status), all, chunks)?;
            }
        }
    }

    vm.on_log(id)?;
    vm.on_done(id)?;
    vm.on_delete(id)?;

    let usage = usage_since(vm, fuel_before, ops_before);
    let callbacks = vm.take_callbacks();
    let host = vm.host();
    Ok(Outcome {
        context_id: id,
        request_headers_action,
        request_body_action,
        local_response: local,
        forwarded_headers,
        forwarded_body,
        calls: host.calls.clone(),
        callbacks,
        filter_state: host.filter_state.clone(),
        usage,
    })
}

/// The counts since the last `reset_counts`, with the fuel spent since `fuel_before`.
fn usage_since(vm: &Vm, fuel_before: u64, ops_before: Option<u64>) -> Usage {
    let counts = &vm.host().counts;
    Usage {
        host_calls: counts
            .calls
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        host_calls_total: counts.calls.values().sum(),
        bytes_to_host: counts.bytes_to_host,
        bytes_from_host: counts.bytes_from_host,
        fuel: fuel_before.saturating_sub(vm.fuel_left()),
        instructions: match (ops_before, vm.operators()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        },
        bulk_bytes: counts.bulk_bytes,
        // Linear memory never shrinks: its size now is the peak so far.
        peak_memory_bytes: vm.memory_bytes(),
    }
}

/// Response headers (end of stream when there is no body), then one body callback per
/// non-empty chunk, the last with end of stream.
fn respond(
    vm: &mut Vm,
    id: u32,
    status: u32,
    headers: Vec<(String, String)>,
    chunks: &[Vec<u8>],
) -> Result<(), String> {
    let chunks: Vec<&Vec<u8>> = chunks.iter().filter(|c| !c.is_empty()).collect();
    let n = headers.len();
    let host = vm.host_mut();
    host.maps[host::RESPONSE_HEADERS] = headers;
    host.properties.insert(
        "response.code".into(),
        u64::from(status).to_le_bytes().to_vec(),
    );
    vm.on_response_headers(id, n, chunks.is_empty())?;
    for (i, chunk) in chunks.iter().enumerate() {
        vm.host_mut().buffers[host::RESPONSE_BODY] = Some((*chunk).clone());
        vm.on_response_body(id, chunk.len(), i + 1 == chunks.len())?;
    }
    Ok(())
}

/// The metered exchanges, in report order.
pub const NAMES: [&str; 11] = [
    "chat_1k",
    "chat_1k_global",
    "chat_1k_cold",
    "chat_64k",
    "stream_16",
    "unauthorized_401",
    "forbidden_403",
    "quota_429",
    "upstream_503",
    "client_abort",
    "config_push",
];

/// A started and configured VM with `config` as its plugin configuration.
pub fn configured_vm(meter: &Meter, config: Vec<u8>) -> Result<Vm, String> {
    let mut vm = meter.instantiate(Host::new(config))?;
    if !vm.start()? {
        return Err("proxy_on_vm_start returned false".into());
    }
    if !vm.configure()? {
        return Err(format!(
            "proxy_on_configure refused the configuration; the module logged: {}",
            logged(vm.host())
        ));
    }
    Ok(vm)
}

fn logged(host: &Host) -> String {
    host.calls
        .iter()
        .filter(|c| c.name == "proxy_log")
        .map(|c| c.text(0))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The exchange `name` as metered: a fresh VM, configured, one warm-up exchange of the
/// same kind, then the measured one (`chat_1k_cold`: no warm-up; `quota_429`: one
/// allowed request empties the bucket first). `config_push` meters the first
/// `proxy_on_configure` of a started VM instead of an exchange.
pub fn run(meter: &Meter, name: &str) -> Result<Outcome, String> {
    run_in(meter, name).map(|(_, outcome)| outcome)
}

/// [`run`], also returning the VM (its host holds metrics, shared data, output).
pub fn run_in(meter: &Meter, name: &str) -> Result<(Vm, Outcome), String> {
    let demo = DEMO_CONFIG.as_bytes().to_vec();
    let (config, warmups, measured): (Vec<u8>, Vec<Exchange>, Exchange) = match name {
        "chat_1k" => (demo, vec![chat(1024)], chat(1024)),
        "chat_1k_global" => (global_config()?, vec![chat(1024)], chat(1024)),
        "chat_1k_cold" => (demo, vec![], chat(1024)),
        "chat_64k" => (demo, vec![chat(65536)], chat(65536)),
        "stream_16" => (demo, vec![stream(16)], stream(16)),
        "unauthorized_401" => (demo, vec![unauthorized()], unauthorized()),
        "forbidden_403" => (demo, vec![forbidden()], forbidden()),
        "quota_429" => (quota_config()?, vec![chat(1024), chat(1024)], chat(1024)),
        "upstream_503" => (demo, vec![upstream_503()], upstream_503()),
        "client_abort" => (demo, vec![client_abort()], client_abort()),
        "config_push" => return config_push(meter, demo),
        other => {
            return Err(format!(
                "unknown exchange {other:?} (known: {})",
                NAMES.join(", ")
            ))
        }
    };
    let mut vm = configured_vm(meter, config)?;
    for ex in &warmups {
        drive(&mut vm, ex)?;
    }
    let outcome = drive(&mut vm, &measured)?;
    Ok((vm, outcome))
}

/// The first configuration push of a started VM (parsing and validating demo.json).
fn config_push(meter: &Meter, config: Vec<u8>) -> Result<(Vm, Outcome), String> {
    let mut vm = meter.instantiate(Host::new(config))?;
    if !vm.start()? {
        return Err("proxy_on_vm_start returned false".into());
    }
    vm.host_mut().reset_counts();
    vm.take_callbacks();
    vm.mark_profile();
    let fuel_before = vm.fuel_left();
    let ops_before = vm.operators();
    if !vm.configure()? {
        return Err(format!(
            "proxy_on_configure refused the configuration; the module logged: {}",
            logged(vm.host())
        ));
    }
    let usage = usage_since(&vm, fuel_before, ops_before);
    let callbacks = vm.take_callbacks();
    let host = vm.host();
    let outcome = Outcome {
        context_id: vm.root_id,
        request_headers_action: 0,
        request_body_action: None,
        local_response: None,
        forwarded_headers: None,
        forwarded_body: None,
        calls: host.calls.clone(),
        callbacks,
        filter_state: host.filter_state.clone(),
        usage,
    };
    Ok((vm, outcome))
}
