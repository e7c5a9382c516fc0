"""OpenAI traffic against real Envoy with the demo configuration: model routing by body, the 90/10
canary, streaming (TTFT, tokens, usage split across chunks, include_usage injection,
estimation without usage), 400 cases, the gateway record contract and the prompt
fingerprint. Limits, retries and previews are in test_openai_limits.py; the canary-string
privacy check is in test_openai_privacy.py."""
import json
import math

import jsonschema
import pytest
import requests

from client import HOST_A, HOST_B, KEY_A, KEY_B, assert_openai_error, call, chat_body
from openai_helpers import (
    CONTRACT_FIELDS, RECORD_SCHEMA, cost, estimate_tokens, new_rid, record_for, records_for,
    sse_events, streamed_text, words,
)

CHAT = "/v1/chat/completions"
INJECTED = '"stream_options":{"include_usage":true}'


def rid_headers(rid, **extra):
    h = {"x-request-id": rid}
    h.update(extra)
    return h


def test_model_in_the_body_picks_the_cluster(demo):
    """Same path, two models, two clusters: the route is chosen from the body."""
    seen = {}
    for model in ["bge-small", "llama3-8b"]:
        rid = new_rid("route")
        r = call(demo, CHAT, chat_body(model=model), headers=rid_headers(rid))
        assert r.status_code == 200, r.text
        rec, audit = record_for(demo, rid)
        received = json.loads(r.headers["x-mock-received"])
        assert received["x-ai-model"] == [model]
        assert received["x-gateway-model-name"] == [model]
        assert rec["model"] == model
        assert rec["model_route"] == r.headers["x-backend"] == audit["model_route"]
        seen[model] = rec["model_route"]
    assert seen["bge-small"] == "embed-bge-small-v1"
    assert seen["llama3-8b"] in ("chat-llama3-8b-v1", "chat-llama3-8b-v2")

    # And the other way round: a chat model sent to the embeddings path goes to chat.
    rid = new_rid("route")
    r = call(demo, "/v1/embeddings", {"model": "llama3-8b", "input": "x"}, headers=rid_headers(rid))
    assert r.status_code == 200, r.text
    assert r.headers["x-backend"].startswith("chat-llama3-8b-v")
    rec, _ = record_for(demo, rid)
    assert rec["route"] == "/v1/embeddings"
    assert rec["model_route"] == r.headers["x-backend"]


def test_canary_split_is_visible_in_model_route(demo):
    """The demo's 90/10 weighted clusters, observed per record over 300 requests."""
    n = 300
    rids = []
    with requests.Session() as s:
        for i in range(n):
            rid = new_rid("canary")
            r = s.post(demo.base_url + CHAT, json=chat_body(f"canary split {i}", max_tokens=1),
                       headers={"Host": HOST_A, "Authorization": f"Bearer {KEY_A}", "x-request-id": rid},
                       timeout=30)
            assert r.status_code == 200, r.text
            rids.append((rid, r.headers["x-backend"]))
    recs = records_for(demo, [rid for rid, _ in rids])
    assert len(recs) == n
    counts = {}
    for rid, backend in rids:
        route = recs[rid]["model_route"]
        assert route == backend, "the record names the backend that answered"
        counts[route] = counts.get(route, 0) + 1
    assert set(counts) == {"chat-llama3-8b-v1", "chat-llama3-8b-v2"}, counts
    # Binomial(300, 0.1): mean 30, sd 5.2. Six standard deviations either side.
    v2 = counts["chat-llama3-8b-v2"]
    sd = math.sqrt(n * 0.1 * 0.9)
    assert 30 - 6 * sd <= v2 <= 30 + 6 * sd, counts
    assert v2 >= 1


def test_stream_records_ttft_and_exact_tokens(demo):
    rid = new_rid("stream")
    prompt = "Tell me about   token buckets please"
    body = chat_body(prompt, stream=True, max_tokens=5)
    r = call(demo, CHAT, body, headers=rid_headers(rid, **{"x-mock-ttft-ms": "30"}))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events, done = sse_events(r.text)
    assert done
    usage = [e["usage"] for e in events if e.get("usage")]
    assert len(usage) == 1
    rec, audit = record_for(demo, rid)
    assert rec["stream"] is True
    assert rec["traffic_class"] == "streaming"
    assert rec["stream_complete"] is True
    assert rec["usage_estimated"] is False
    assert rec["prompt_tokens"] == usage[0]["prompt_tokens"] == words(prompt)
    assert rec["completion_tokens"] == usage[0]["completion_tokens"] == 5
    assert isinstance(rec["ttft_ms"], int)
    assert 0 <= rec["ttft_ms"] <= rec["latency_ms"]
    assert rec["estimated_cost_usd"] == pytest.approx(cost("llama3-8b", words(prompt), 5), rel=1e-6)
    assert audit["decision"] == "allow"

    # A non-streamed request has no TTFT.
    rid = new_rid("nostream")
    r = call(demo, CHAT, chat_body(prompt, max_tokens=5), headers=rid_headers(rid))
    assert r.status_code == 200
    rec, _ = record_for(demo, rid)
    assert rec["ttft_ms"] is None
    assert rec["stream"] is False and rec["stream_complete"] is None
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (words(prompt), 5)


def test_openai_sdk_streams_through_the_gateway(demo):
    """The official client, unchanged, gets the whole stream and the usage chunk."""
    import openai

    rid = new_rid("sdk")
    client = openai.OpenAI(api_key=KEY_A, base_url=demo.base_url + "/v1", max_retries=0,
                           default_headers={"Host": HOST_A, "x-request-id": rid})
    try:
        stream = client.chat.completions.create(
            model="llama3-8b", messages=[{"role": "user", "content": "one two three"}],
            stream=True, max_tokens=4)
        chunks = list(stream)
    finally:
        client.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 "
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 4
    rec, _ = record_for(demo, rid)
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (3, 4)


@pytest.mark.parametrize("stream", [True, False])
def test_usage_split_across_tiny_chunks(demo, stream):
    """Seven-byte body frames cut `data:` lines and the usage object in pieces."""
    rid = new_rid("split")
    prompt = "split me into many small pieces"
    r = call(demo, CHAT, chat_body(prompt, stream=stream, max_tokens=3),
             headers=rid_headers(rid, **{"x-mock-chunk-bytes": "7"}))
    assert r.status_code == 200, r.text
    rec, _ = record_for(demo, rid)
    assert rec["usage_estimated"] is False
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (words(prompt), 3)
    if stream:
        assert rec["stream_complete"] is True
        assert rec["ttft_ms"] is not None and rec["ttft_ms"] <= rec["latency_ms"]


def test_embeddings_usage(demo):
    rid = new_rid("embed")
    r = call(demo, "/v1/embeddings", {"model": "bge-small", "input": ["alpha beta", "gamma"]},
             headers=rid_headers(rid))
    assert r.status_code == 200, r.text
    rec, _ = record_for(demo, rid)
    assert rec["traffic_class"] == "batch"
    assert rec["model_route"] == "embed-bge-small-v1"
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (3, 0)
    assert rec["estimated_cost_usd"] == pytest.approx(cost("bge-small", 3, 0), rel=1e-6)


def test_include_usage_is_injected_with_a_correct_content_length(demo):
    body = chat_body("count my usage", stream=True, max_tokens=2)
    raw = json.dumps(body, separators=(",", ":"))
    rid = new_rid("inject")
    r = call(demo, CHAT, raw=raw, headers=rid_headers(rid))
    assert r.status_code == 200, r.text
    assert r.headers["x-mock-include-usage"] == "true"
    # The backend received exactly the original bytes plus the inserted member: the
    # Content-Length the filter set matches the new body.
    assert int(r.headers["x-mock-request-bytes"]) == len(raw) + len(INJECTED) + 1
    # Decision: the client sees the usage chunk it did not ask for (OpenAI's documented
    # `choices: []` chunk, which every SDK accepts). See docs/openai-traffic.md.
    events, done = sse_events(r.text)
    assert done
    assert [e["usage"]["completion_tokens"] for e in events if e.get("usage")] == [2]
    rec, _ = record_for(demo, rid)
    assert rec["usage_estimated"] is False and rec["completion_tokens"] == 2


def test_include_usage_injection_with_a_chunked_upload(demo):
    body = chat_body("chunked upload body", stream=True, max_tokens=2).copy()
    raw = json.dumps(body).encode()

    def gen():
        for i in range(0, len(raw), 10):
            yield raw[i:i + 10]

    rid = new_rid("inject-chunked")
    r = requests.post(demo.base_url + CHAT, data=gen(), timeout=30,
                      headers={"Host": HOST_A, "Authorization": f"Bearer {KEY_A}",
                               "Content-Type": "application/json", "x-request-id": rid})
    assert r.status_code == 200, r.text
    assert r.headers["x-mock-include-usage"] == "true"
    assert int(r.headers["x-mock-request-bytes"]) == len(raw) + len(INJECTED) + 1
    rec, _ = record_for(demo, rid)
    assert rec["completion_tokens"] == 2 and rec["usage_estimated"] is False


def test_include_usage_already_requested_is_left_alone(demo):
    raw = json.dumps(chat_body("mine", stream=True, max_tokens=2,
                               stream_options={"include_usage": True}))
    r = call(demo, CHAT, raw=raw)
    assert r.status_code == 200
    assert r.headers["x-mock-include-usage"] == "true"
    assert int(r.headers["x-mock-request-bytes"]) == len(raw)
    # A non-streamed request is never rewritten.
    raw = json.dumps(chat_body("mine", max_tokens=2))
    r = call(demo, CHAT, raw=raw)
    assert r.headers["x-mock-include-usage"] == "false"
    assert int(r.headers["x-mock-request-bytes"]) == len(raw)


def test_stream_without_upstream_usage_is_estimated(demo):
    rid = new_rid("omit")
    prompt = "estimate the usage of this prompt"
    r = call(demo, CHAT, chat_body(prompt, stream=True, max_tokens=6),
             headers=rid_headers(rid, **{"x-mock-omit-usage": "1"}))
    assert r.status_code == 200
    events, done = sse_events(r.text)
    assert done and not any(e.get("usage") for e in events)
    rec, _ = record_for(demo, rid)
    assert rec["usage_estimated"] is True
    assert rec["completion_tokens"] == estimate_tokens(streamed_text(events))
    assert rec["prompt_tokens"] == estimate_tokens(prompt)
    assert rec["estimated_cost_usd"] == pytest.approx(
        cost("llama3-8b", rec["prompt_tokens"], rec["completion_tokens"]), rel=1e-6)


def test_broken_stream_is_recorded_as_incomplete(demo):
    rid = new_rid("reset")
    try:
        r = call(demo, CHAT, chat_body("break", stream=True, max_tokens=8),
                 headers=rid_headers(rid, **{"x-mock-reset-after-chunks": "3"}))
        r.content  # noqa: B018 - read whatever arrives
    except requests.RequestException:
        pass
    rec, _ = record_for(demo, rid)
    assert rec["stream_complete"] is False
    assert rec["usage_estimated"] is True
    assert rec["completion_tokens"] == estimate_tokens("tok0 tok1 tok2 ")
    assert rec["ttft_ms"] is not None


@pytest.mark.parametrize("path,raw,code", [
    (CHAT, "{not json", "invalid_json"),
    (CHAT, '{"messages":[{"role":"user","content":"hi"}]}', "missing_model"),
    (CHAT, '{"model":"","messages":[]}', "invalid_value"),
    (CHAT, '{"model":"llama3-8b","stream":"yes","messages":[]}', "invalid_type"),
    (CHAT, '{"model":"llama3-8b","messages":[{"role":"user","content":7}]}', "invalid_type"),
    (CHAT, '{"model":"llama3-8b","messages":[],"max_tokens":1.5}', "invalid_type"),
    (CHAT, '["model","llama3-8b"]', "invalid_body"),
    ("/v1/completions", '{"model":"llama3-8b","prompt":{"text":"x"}}', "invalid_type"),
    ("/v1/embeddings", '{"model":["bge-small"],"input":"x"}', "invalid_type"),
    (CHAT, "", "empty_body"),
])
def test_bad_bodies_are_400(demo, path, raw, code):
    before = demo_upstream_total(demo)
    rid = new_rid("bad")
    r = call(demo, path, raw=raw, headers=rid_headers(rid))
    err = assert_openai_error(r, 400, code)
    assert err["type"] == "invalid_request_error"
    rec, audit = record_for(demo, rid)
    assert rec["http_status"] == 400
    assert rec["model_route"] is None and rec["gateway_backend"] is None
    assert audit["decision"] == "deny" and audit["reason"] == "invalid_body"
    assert demo_upstream_total(demo) == before, "a refused body never reaches a backend"


def demo_upstream_total(gw):
    from openai_helpers import counters

    return sum(counters(gw, r"^cluster\..*\.upstream_rq_total$").values())


def test_unknown_and_not_allowed_models_are_one_404(demo):
    rid = new_rid("m404")
    r = call(demo, CHAT, chat_body(model="gpt-4o"), headers=rid_headers(rid))
    err = assert_openai_error(r, 404, "model_not_found", type="invalid_request_error")
    assert err["message"] == "The model `gpt-4o` does not exist or you do not have access to it."
    rec, audit = record_for(demo, rid)
    assert rec["model"] == "gpt-4o" and rec["model_route"] is None
    assert audit["reason"] == "model_forbidden"
    # tenant-b may use bge-small only.
    rid = new_rid("m404b")
    r = call(demo, "/v1/embeddings", {"model": "llama3-8b", "input": "x"}, host=HOST_B, key=KEY_B,
             headers=rid_headers(rid))
    err = assert_openai_error(r, 404, "model_not_found", type="invalid_request_error")
    assert err["message"] == "The model `llama3-8b` does not exist or you do not have access to it."
    r = call(demo, "/v1/embeddings", {"model": "bge-small", "input": "x"}, host=HOST_B, key=KEY_B)
    assert r.status_code == 200


def test_traffic_classes_reach_the_backend(demo):
    cases = [
        (CHAT, chat_body("x"), "interactive"),
        (CHAT, chat_body("x", stream=True), "streaming"),
        (CHAT, chat_body("x", tools=[{"type": "function", "function": {"name": "f"}}]),
         "tool_calling_agents"),
        ("/v1/embeddings", {"model": "bge-small", "input": "x"}, "batch"),
    ]
    for path, body, cls in cases:
        rid = new_rid("class")
        r = call(demo, path, body, headers=rid_headers(rid))
        assert r.status_code == 200, r.text
        assert json.loads(r.headers["x-mock-received"])["x-ai-traffic-class"] == [cls]
        assert record_for(demo, rid)[0]["traffic_class"] == cls


def test_access_log_matches_the_contract_field_for_field(demo):
    """Every kind of outcome gives one JSON line with exactly the contract's fields."""
    cases = [
        dict(path=CHAT, body=chat_body("served", stream=True, max_tokens=2)),
        dict(path=CHAT, body=chat_body("served", max_tokens=2)),
        dict(path="/v1/embeddings", body={"model": "bge-small", "input": "x"}),
        dict(path="/v1/models", body=None),
        dict(path=CHAT, body=chat_body("no key"), key=None),
        dict(path=CHAT, raw="{oops"),
        dict(path=CHAT, body=chat_body(model="gpt-4o")),
        dict(path=CHAT, body=chat_body("upstream fails"), headers={"x-mock-status": "503"}),
    ]
    for case in cases:
        rid = new_rid("contract")
        headers = dict(case.pop("headers", {}), **{"x-request-id": rid})
        call(demo, case.pop("path"), headers=headers, **case)
        rec, _ = record_for(demo, rid)
        assert sorted(rec) == sorted(CONTRACT_FIELDS)
        jsonschema.validate(rec, RECORD_SCHEMA)
        assert rec["client_request_id"] == rid
        assert rec["hostname"] == HOST_A
        if rec["http_status"] == 200:
            assert rec["tenant"] == "tenant-a"
            assert rec["model_route"] and rec["gateway_backend"]
        if rec["http_status"] == 503:
            # Served by the backend, which failed: no tokens, no cost.
            assert rec["model_route"].startswith("chat-llama3-8b-v")
            assert rec["prompt_tokens"] is None and rec["estimated_cost_usd"] is None
    # The whole file is JSON lines, each one a contract record.
    with open(f"{demo.log_dir}/access.log") as f:
        for line in f:
            jsonschema.validate(json.loads(line), RECORD_SCHEMA)


def test_prompt_fingerprint_correlates_equal_prompts_only(demo):
    def fingerprint(content, **extra):
        rid = new_rid("fp")
        body = {"model": "llama3-8b", "messages": [{"role": "user", "content": content}]}
        body.update(extra)
        r = call(demo, CHAT, body, headers=rid_headers(rid))
        assert r.status_code == 200
        rec = record_for(demo, rid)[0]
        assert rec["prompt_sha256"] is None, "BLAKE3 is the default fingerprint"
        return rec["prompt_blake3"]

    a = fingerprint("What is   the capital\nof France?")
    assert a == fingerprint("  What is the capital of France? ")
    assert a == fingerprint([{"type": "text", "text": "What is the capital of France?"}])
    assert a == fingerprint("What is the capital of France?", stream=True)
    assert a != fingerprint("What is the capital of Spain?")
    assert a != fingerprint("what is the capital of france?")
    # Not a bare SHA-256 of the prompt: it is keyed by the configured salt.
    import hashlib

    assert a != hashlib.sha256(b"What is the capital of France?").hexdigest()
