"""Metrics: the exact series and label sets on the real Envoy's /stats/prometheus after a
mixed run, with values that match the requests sent (read back from the records), and
bounded cardinality."""
import collections
import json
import re
import time
import uuid

import pytest

from client import HOST_A, HOST_B, KEY_A, KEY_B, call, chat_body
from conftest import demo_config
from harness.launcher import Topology

LINE = re.compile(r'^([a-z_:]+)\{(.*)\} (\S+)$')
LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')
LABELS = {
    "ai_gateway_requests_total": ("tenant", "route", "model_route", "status"),
    "ai_gateway_request_duration_ms_count": ("tenant", "route", "model_route"),
    "ai_gateway_upstream_duration_ms_count": ("tenant", "route", "model_route"),
    "ai_gateway_ttft_ms_count": ("tenant", "route", "model_route"),
    "ai_gateway_filter_duration_us_count": ("route",),
    "ai_gateway_tokens_total": ("tenant", "model_route", "type"),
    "ai_gateway_cost_usd_micros_total": ("tenant", "model_route"),
    "ai_gateway_quota_rejections_total": ("tenant", "kind"),
    "ai_gateway_auth_denials_total": ("reason",),
    "ai_gateway_wasm_memory_bytes": ("vm",),
}


def scrape(topo):
    """Histograms are merged from the workers asynchronously after the flush an admin
    request triggers, so read until every counted request is also in the latency
    histogram (each request records both), bounded."""
    deadline = time.time() + 15
    while True:
        cur = scrape_once(topo)
        counted = sum(cur["ai_gateway_requests_total"].values())
        observed = sum(cur["ai_gateway_request_duration_ms_count"].values())
        if counted == observed or time.time() > deadline:
            return cur
        time.sleep(0.1)


def scrape_once(topo):
    """{metric: {labels-tuple: value}} for the filter's metrics (zero series dropped)."""
    out = collections.defaultdict(dict)
    for line in topo.admin("/stats/prometheus").splitlines():
        m = LINE.match(line)
        if not m or not m.group(1).startswith("ai_gateway_"):
            continue
        name, labels, value = m.group(1), dict(LABEL.findall(m.group(2))), float(m.group(3))
        if name not in LABELS or value == 0:
            continue
        assert set(labels) == set(LABELS[name]), (name, labels)
        out[name][tuple(labels[k] for k in LABELS[name])] = value
    return out


@pytest.fixture(scope="module")
def run():
    with Topology(plugin_config=demo_config(), concurrency=2) as topo:
        ids = []

        def send(path, body, **kw):
            rid = f"metrics-{uuid.uuid4()}"
            ids.append(rid)
            headers = dict(kw.pop("headers", {}))
            headers["x-request-id"] = rid
            return call(topo, path, body, headers=headers, **kw)

        emb = {"model": "bge-small", "input": ["hello world", "two words"]}
        for _ in range(6):
            assert send("/v1/chat/completions", chat_body("count these four words")).status_code == 200
        for _ in range(3):
            r = send("/v1/chat/completions", chat_body("a stream", stream=True))
            assert r.status_code == 200
        for _ in range(4):
            assert send("/v1/embeddings", emb, host=HOST_B, key=KEY_B).status_code == 200
        assert send("/v1/models", None, key=None).status_code == 401
        assert send("/v1/models", None, key=None).status_code == 401
        assert send("/v1/models", None, key="sk-bogus").status_code == 401
        assert send("/v1/chat/completions", chat_body(), host=HOST_B, key=KEY_B).status_code == 403
        for _ in range(2):
            r = send("/v1/chat/completions", chat_body(), headers={"x-mock-status": "503"})
            assert r.status_code == 503
        # tenant-b's request bucket holds 10: 4 used above, 6 more pass, 2 are refused.
        codes = [send("/v1/embeddings", emb, host=HOST_B, key=KEY_B).status_code for _ in range(8)]
        assert codes.count(200) == 6 and codes.count(429) == 2, codes
        recs, auds = topo.wait_records(len(ids))
        recs = [r for r in recs if r["client_request_id"] in ids]
        auds = [a for a in auds if a["client_request_id"] in ids]
        assert len(recs) == len(ids) and len(auds) == len(ids)
        yield topo, recs, auds, scrape(topo)


def label(v):
    return "unknown" if v is None else str(v)


def test_requests_total_matches_the_records(run):
    _, recs, _, m = run
    want = collections.Counter(
        (label(r["tenant"]), label(r["route"]), label(r["model_route"]), label(r["http_status"])) for r in recs)
    assert m["ai_gateway_requests_total"] == {k: float(v) for k, v in want.items()}
    # The canary split shows up as separate series.
    backends = {k[2] for k in want if k[1] == "/v1/chat/completions" and k[3] == "200"}
    assert backends <= {"chat-llama3-8b-v1", "chat-llama3-8b-v2"} and backends


def test_latency_histograms_count_every_request(run):
    _, recs, _, m = run
    per = collections.Counter((label(r["tenant"]), label(r["route"]), label(r["model_route"])) for r in recs)
    assert m["ai_gateway_request_duration_ms_count"] == {k: float(v) for k, v in per.items()}
    served = collections.Counter(
        (r["tenant"], r["route"], r["model_route"]) for r in recs if r["gateway_backend"] is not None)
    assert m["ai_gateway_upstream_duration_ms_count"] == {k: float(v) for k, v in served.items()}
    streams = collections.Counter((r["tenant"], r["route"], r["model_route"]) for r in recs if r["ttft_ms"] is not None)
    assert sum(streams.values()) == 3
    assert m["ai_gateway_ttft_ms_count"] == {k: float(v) for k, v in streams.items()}
    routes = collections.Counter(label(r["route"]) for r in recs)
    assert m["ai_gateway_filter_duration_us_count"] == {(k,): float(v) for k, v in routes.items()}


def test_tokens_and_cost_match_the_records(run):
    _, recs, _, m = run
    tokens = collections.Counter()
    cost = collections.Counter()
    for r in recs:
        if r["prompt_tokens"]:
            tokens[(r["tenant"], r["model_route"], "prompt")] += r["prompt_tokens"]
        if r["completion_tokens"]:
            tokens[(r["tenant"], r["model_route"], "completion")] += r["completion_tokens"]
        if r["estimated_cost_usd"]:
            cost[(r["tenant"], r["model_route"])] += round(r["estimated_cost_usd"] * 1e6)
    assert m["ai_gateway_tokens_total"] == {k: float(v) for k, v in tokens.items()}
    assert m["ai_gateway_cost_usd_micros_total"] == {k: float(v) for k, v in cost.items() if v}
    # The mock's usage is deterministic: 4 prompt words, 16 completion tokens per chat.
    chat_prompt = sum(v for k, v in tokens.items() if k[0] == "tenant-a" and k[2] == "prompt")
    assert chat_prompt == 6 * 4 + 3 * 2


def test_denials_are_counted_by_reason_and_kind(run):
    _, _, auds, m = run
    reasons = collections.Counter(a["reason"] for a in auds if a["decision"] == "deny")
    assert reasons == {"missing_credentials": 2, "invalid_credentials": 1, "route_forbidden": 1, "quota_requests": 2}
    assert m["ai_gateway_auth_denials_total"] == {
        ("missing_credentials",): 2.0, ("invalid_credentials",): 1.0, ("route_forbidden",): 1.0}
    assert m["ai_gateway_quota_rejections_total"] == {("tenant-b", "requests"): 2.0}


@pytest.mark.wasm_only("a native module has no VM and no linear memory to report")
def test_each_vm_reports_its_linear_memory(run):
    topo, _, _, m = run
    active = [l for l in topo.admin("/stats?filter=wasm.envoy.wasm.runtime.v8.active").splitlines() if l]
    assert len(active) == 1, active
    vms = int(active[0].rsplit(": ", 1)[1])
    mem = m["ai_gateway_wasm_memory_bytes"]
    # Ordinals 0..N-1, one per VM Envoy started (two on the main thread, one per worker).
    assert sorted(int(k[0]) for k in mem) == list(range(vms)) and vms == 2 + 2
    assert all(v >= 65536 and v % 65536 == 0 for v in mem.values()), mem


def test_random_models_and_keys_create_no_series(run):
    topo, _, _, _ = run
    # One of each first: the first refusal of a kind creates its (bounded) series.
    call(topo, "/v1/chat/completions", chat_body(model="random-model-warmup"))
    call(topo, "/v1/models", None, key="sk-random-warmup")
    before = {k: set(v) for k, v in scrape(topo).items()}
    for i in range(200):
        call(topo, "/v1/chat/completions", chat_body(model=f"random-model-{uuid.uuid4()}"))
        call(topo, "/v1/models", None, key=f"sk-random-{uuid.uuid4()}")
    after = {k: set(v) for k, v in scrape(topo).items()}
    assert set(after) == set(before)
    for name in after:
        assert after[name] == before[name], name
    text = topo.admin("/stats/prometheus")
    assert "random-model-" not in text and "sk-random-" not in text


@pytest.mark.wasm_only("a native module has no VM and no linear memory to report")
def test_the_memory_gauge_follows_a_vm_that_grows(run):
    """A 2 MB body makes the VM that reads it grow; its gauge shows that at a later tick
    (100 ms with the demo's header hold). The wait for the tick is bounded."""
    topo = run[0]
    before = scrape_once(topo)["ai_gateway_wasm_memory_bytes"]
    big = chat_body("word " * 400_000)
    assert call(topo, "/v1/chat/completions", big).status_code == 200
    deadline = time.time() + 10
    grown = {}
    while not grown and time.time() < deadline:
        time.sleep(0.1)
        after = scrape_once(topo)["ai_gateway_wasm_memory_bytes"]
        grown = {vm: v for vm, v in after.items() if v >= before[vm] + 1_000_000}
    assert len(grown) == 1, (before, after)
