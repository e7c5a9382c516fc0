"""Helpers shared by the tests/test_openai_*.py integration tests: a Topology
whose rendered bootstrap can be adjusted per test module, record lookup by request id,
Envoy counters, and SSE parsing on the client side."""
import json
import math
import os
import re
import time
import uuid

import yaml

from harness.launcher import ROOT, Topology

# Fields of the gateway record (docs/contract.md), every one on every line, stream_complete
# included. prompt_preview is present only when previews are configured.
CONTRACT_FIELDS = [
    "timestamp", "request_id", "client_request_id", "tenant", "hostname", "route", "model_route", "stream",
    "http_status", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens",
    "estimated_cost_usd", "gateway_backend",
    "model", "traffic_class", "usage_estimated", "prompt_sha256", "prompt_blake3",
    "stream_complete", "quota_mode", "budget_period", "budget_spent_usd", "budget_remaining_usd",
]


def _nullable(t, **extra):
    return {"type": [t, "null"], **extra}


RECORD_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": CONTRACT_FIELDS,
    "properties": {
        "timestamp": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"},
        # The gateway's own id: a UUID (never the client's x-request-id).
        "request_id": {"type": "string", "pattern": r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"},
        "client_request_id": _nullable("string"),
        "tenant": _nullable("string"),
        "hostname": _nullable("string"),
        "route": _nullable("string", pattern=r"^/"),
        "model_route": _nullable("string"),
        "stream": _nullable("boolean"),
        "http_status": _nullable("integer", minimum=100, maximum=599),
        "latency_ms": {"type": "integer", "minimum": 0},
        "ttft_ms": _nullable("integer", minimum=0),
        "prompt_tokens": _nullable("integer", minimum=0),
        "completion_tokens": _nullable("integer", minimum=0),
        "estimated_cost_usd": _nullable("number", minimum=0),
        "gateway_backend": _nullable("string", pattern=r"^127\.0\.0\.1:\d+$"),
        "model": _nullable("string"),
        "traffic_class": {"enum": ["interactive", "batch", "tool_calling_agents", "streaming", None]},
        "usage_estimated": _nullable("boolean"),
        "prompt_sha256": _nullable("string", pattern=r"^[0-9a-f]{64}$"),
        "prompt_blake3": _nullable("string", pattern=r"^[0-9a-f]{64}$"),
        "stream_complete": _nullable("boolean"),
        "quota_mode": {"enum": ["local", "global", "strict", "local_fallback"]},
        "budget_period": {"enum": ["day", "month", None]},
        "budget_spent_usd": _nullable("number", minimum=0),
        "budget_remaining_usd": _nullable("number", minimum=0),
        "prompt_preview": {"type": "string"},
    },
}

# Prices in filters/demo.json (USD per million tokens).
PRICES = {"llama3-8b": (0.20, 0.60), "bge-small": (0.02, 0.0)}


def state_keys():
    """Every filter-state key of the contract (`ai.*` in core/src/contract.rs, mod state)."""
    with open(os.path.join(ROOT, "core", "src", "contract.rs")) as f:
        src = f.read()
    body = src.split("pub mod state", 1)[1].split("\n}\n", 1)[0]
    return re.findall(r'pub const [A-Z_0-9]+: &str = "(ai\.[a-z_0-9]+)";', body)


class PatchedTopology(Topology):
    """A Topology whose rendered bootstrap passes through `patch(bootstrap_dict)`."""

    def __init__(self, patch=None, **kwargs):
        super().__init__(**kwargs)
        self.patch = patch

    def render(self, plugin_config=None):
        super().render(plugin_config)
        if self.patch is None:
            return
        with open(self.config_path) as f:
            doc = yaml.safe_load(f)
        self.patch(doc)
        with open(self.config_path, "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)


def hcm(doc):
    listener = doc["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def add_retry_policy(doc, num_retries=2):
    """Give the chat routes a retry policy that retries any 5xx: what a cautious operator
    might set for non-streaming chat. Streams must still never be retried."""
    for vh in hcm(doc)["route_config"]["virtual_hosts"]:
        for r in vh["routes"]:
            route = r["route"]
            if "weighted_clusters" in route:
                route["retry_policy"] = {
                    "retry_on": "5xx,reset,connect-failure",
                    "num_retries": num_retries,
                    "per_try_timeout": "10s",
                }


def add_state_log(doc, path):
    """One access-log line per request with every filter-state key of the contract."""
    fmt = " ".join(f"{k}=%FILTER_STATE(wasm.{k}:PLAIN)%" for k in state_keys()) + "\n"
    hcm(doc)["access_log"].append({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": {"text_format_source": {"inline_string": fmt}},
        },
    })


def new_rid(prefix="oa"):
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def record_for(gw, rid, timeout=10.0):
    """The single gateway record and audit record of request `rid`."""
    deadline = time.time() + timeout
    while True:
        recs = [r for r in gw.records() if r.get("client_request_id") == rid]
        auds = [a for a in gw.audits() if a.get("client_request_id") == rid]
        if (recs and auds) or time.time() > deadline:
            break
        time.sleep(0.05)
    assert len(recs) == 1, f"{len(recs)} gateway records for {rid}"
    assert len(auds) == 1, f"{len(auds)} audit records for {rid}"
    return recs[0], auds[0]


def records_for(gw, rids, timeout=20.0):
    want = set(rids)
    deadline = time.time() + timeout
    while True:
        found = {r["client_request_id"]: r for r in gw.records() if r.get("client_request_id") in want}
        if len(found) == len(want) or time.time() > deadline:
            return found
        time.sleep(0.1)


def counters(gw, pattern):
    """Envoy counters matching a regex, as a dict."""
    out = {}
    for line in gw.admin("/stats?filter=" + pattern).splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[name] = int(value)
    return out


def chat_upstream_requests(gw):
    """Requests Envoy sent to the two chat clusters (retries included)."""
    c = counters(gw, r"^cluster\.chat-llama3-8b-v[12]\.upstream_rq_(total|retry)$")
    total = sum(v for k, v in c.items() if k.endswith("upstream_rq_total"))
    retries = sum(v for k, v in c.items() if k.endswith("upstream_rq_retry"))
    return total, retries


def sse_events(text):
    """The JSON payloads of `data:` events, and whether `[DONE]` arrived."""
    events, done = [], False
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(l[5:].lstrip(" ") for l in block.split("\n") if l.startswith("data:"))
        if not data:
            continue
        if data.strip() == "[DONE]":
            done = True
        else:
            events.append(json.loads(data))
    return events, done


def streamed_text(events):
    out = []
    for e in events:
        for ch in e.get("choices") or []:
            delta = ch.get("delta") or {}
            out.append(delta.get("content") or "")
            out.append(ch.get("text") or "")
    return "".join(out)


def estimate_tokens(text):
    """The filter's estimate: ceil(characters / 4)."""
    return math.ceil(len(text) / 4)


def words(*texts):
    """The mock's prompt_tokens: whitespace-separated words (at least 1)."""
    return max(1, sum(len(t.split()) for t in texts))


def cost(model, prompt, completion):
    p_in, p_out = PRICES[model]
    return (prompt * p_in + completion * p_out) / 1e6
