"""Quotas end to end: per-tenant token buckets in Proxy-Wasm shared data, exact across
the four worker threads (four Wasm VMs) of one real Envoy 1.40.

Every scenario has its own tenant (own key, own buckets) on one gateway. Rates are the
smallest the configuration accepts (0.001 per minute), so nothing measurable refills
during a test: every expected count below is exact and derived in the test."""
import json

import pytest
import requests

from client import assert_openai_error, call, chat_body
from conftest import demo_config
from harness.launcher import Topology
from quota_support import (
    add_tenant,
    burst,
    check_rate_limit_headers,
    check_retry_headers,
    wait_request_id,
    wait_tenant_records,
    worker_connections,
)

BURST_SIZE = 500
SLOW = 0.001  # per minute: 0.001 tokens (or requests) of refill per minute

# Scenario 1: a request bucket holding REQ_BURST requests.
REQ_BURST = 211

# Scenario 2: a token bucket and streams whose usage is only known at the end.
#
# Each stream's prompt is one 16-character word. The gateway estimates ceil(16/4) = 4
# prompt tokens; the mock backend counts whitespace words, so the real prompt is 1 token.
# With max_tokens = 60 the gateway reserves E = 4 + 60 = 64 and the stream really uses
# U = 1 + 60 = 61 (reported in the final usage chunk), so every settle refunds r = 3.
#
# The bucket holds exactly STREAMS_ALLOWED * E tokens. Whatever the interleaving of
# reservations and settlements across the workers:
#   - the first STREAMS_ALLOWED reservations all fit (refunds only ever add);
#   - one more never fits: it would need the refunds of the whole burst to reach E, but
#     they total at most STREAMS_ALLOWED * r = 60 < 64 = E.
# So exactly STREAMS_ALLOWED streams get a 200, and once all are settled the bucket holds
# exactly STREAMS_ALLOWED * r = 60 tokens, which the next refusal reports.
STREAMS_ALLOWED = 20
STREAM_PROMPT = "abcdefghijklmnop"
STREAM_MAX_TOKENS = 60
EST, USED = 4 + STREAM_MAX_TOKENS, 1 + STREAM_MAX_TOKENS
REFUND = EST - USED
assert STREAMS_ALLOWED * REFUND < EST
TOKEN_BURST = STREAMS_ALLOWED * EST

QUOTAS = {
    "burst-req": {"requests_per_minute": SLOW, "request_burst": REQ_BURST},
    "burst-tok": {"tokens_per_minute": SLOW, "token_burst": TOKEN_BURST},
    "hdrs": {
        "requests_per_minute": SLOW, "request_burst": 10,
        "tokens_per_minute": SLOW, "token_burst": 100,
    },
    "classes": {"tokens_per_minute": SLOW, "token_burst": 100, "interactive_reserve": 0.5},
}


@pytest.fixture(scope="module")
def gw():
    cfg = demo_config()
    tenants = {name: add_tenant(cfg, name, quota) for name, quota in QUOTAS.items()}
    with Topology(plugin_config=cfg, concurrency=4) as topo:
        topo.tenants = tenants
        yield topo


def auth(gw, tenant, rid=None, extra=None):
    host, key = gw.tenants[tenant]
    h = {"Host": host, "Authorization": f"Bearer {key}"}
    if rid:
        h["x-request-id"] = rid
    h.update(extra or {})
    return h


def ask(gw, tenant, path, body=None, rid=None, headers=None, stream=False):
    host, key = gw.tenants[tenant]
    h = {"x-request-id": rid} if rid else {}
    h.update(headers or {})
    r = call(gw, path, body, host=host, key=key, headers=h, stream=stream)
    if stream:
        try:
            r.content  # read to the end
        except requests.exceptions.ChunkedEncodingError:
            pass  # the upstream cut the stream (x-mock-reset-after-chunks)
    return r


def assert_quota_refusal(status, headers, body, kind):
    """A 429 as OpenAI sends it, naming the exhausted kind."""
    assert status == 429, (status, body)
    assert headers["content-type"].startswith("application/json")
    err = json.loads(body)["error"]
    assert err["type"] == kind and err["code"] == "rate_limit_exceeded", err
    assert kind in err["message"], err
    return check_retry_headers(headers)


def test_request_bucket_holds_exactly_n_across_four_workers(gw):
    before = worker_connections(gw)
    reqs = [
        ("/v1/chat/completions", auth(gw, "burst-req", f"br-{i}"), chat_body(max_tokens=4))
        for i in range(BURST_SIZE)
    ]
    results = burst(gw.base_url, reqs)
    after = worker_connections(gw)

    # The burst really was served by several workers, i.e. several Wasm VMs.
    used = {w: after[w] - before.get(w, 0) for w in after}
    assert sum(used.values()) >= BURST_SIZE, used
    assert len(used) == 4 and all(n > 0 for n in used.values()), used

    ok = [(h, b) for s, h, b in results if s == 200]
    refused = [(s, h, b) for s, h, b in results if s != 200]
    print(f"request burst: {len(ok)} x 200 of {BURST_SIZE} (bucket {REQ_BURST}); "
          f"connections per worker {used}")
    assert len(ok) == REQ_BURST, (len(ok), sorted({s for s, _, _ in refused}))
    assert len(refused) == BURST_SIZE - REQ_BURST
    # Each granted request saw a different level: N-1, N-2, ..., 0 exactly once.
    remaining = sorted(int(h["x-ratelimit-remaining-requests"]) for h, _ in ok)
    assert remaining == list(range(REQ_BURST))
    for h, b in ok:
        assert json.loads(b)["object"] == "chat.completion"
        assert check_rate_limit_headers(h, ("requests",))["requests"][0] == REQ_BURST
    for s, h, b in refused:
        ms = assert_quota_refusal(s, h, b, "requests")
        # One request at 0.001 per minute is 1000 minutes away, less the refill time
        # already elapsed since the bucket was created.
        assert 60_000_000 - 600_000 <= ms <= 60_000_000, ms
        assert check_rate_limit_headers(h, ("requests",))["requests"][:2] == (REQ_BURST, 0)

    # Exactly one gateway and one audit record per request; every refusal is audited.
    recs, auds = wait_tenant_records(gw, "burst-req", BURST_SIZE)
    assert len(recs) == BURST_SIZE and len(auds) == BURST_SIZE
    assert sum(1 for r in recs if r["http_status"] == 429) == BURST_SIZE - REQ_BURST
    assert sum(1 for r in recs if r["http_status"] == 200) == REQ_BURST
    denied = [a for a in auds if a["decision"] == "deny"]
    assert len(denied) == BURST_SIZE - REQ_BURST
    assert all(a["reason"] == "quota_requests" and a["http_status"] == 429 for a in denied)
    by_id = {r["client_request_id"]: r for r in recs}
    for a in denied:
        assert by_id[a["client_request_id"]]["http_status"] == 429


def stream_body(prompt=STREAM_PROMPT, max_tokens=STREAM_MAX_TOKENS):
    return chat_body(prompt, max_tokens=max_tokens, stream=True)


def final_usage(sse_bytes):
    events = [l[len("data: "):] for l in sse_bytes.decode().split("\n") if l.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-3:]
    return json.loads(events[-2])["usage"]


def test_token_bucket_with_streams_settled_at_the_end(gw):
    before = worker_connections(gw)
    reqs = [
        ("/v1/chat/completions", auth(gw, "burst-tok", f"bt-{i}"), stream_body())
        for i in range(BURST_SIZE)
    ]
    results = burst(gw.base_url, reqs, stream=True)
    after = worker_connections(gw)
    used = {w: after[w] - before.get(w, 0) for w in after}
    assert len(used) == 4 and all(n > 0 for n in used.values()), used

    ok = [(h, b) for s, h, b in results if s == 200]
    refused = [(s, h, b) for s, h, b in results if s != 200]
    print(f"stream burst: {len(ok)} x 200 of {BURST_SIZE} (expected {STREAMS_ALLOWED}); "
          f"connections per worker {used}")
    assert len(ok) == STREAMS_ALLOWED, (len(ok), sorted({s for s, _, _ in refused}))
    for h, b in ok:
        assert h["content-type"].startswith("text/event-stream")
        # The usage arrives only in the last chunk; it is what the settle charges.
        u = final_usage(b)
        assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (1, 60, USED)
        limit, remaining, _ = check_rate_limit_headers(h, ("tokens",))["tokens"]
        assert limit == TOKEN_BURST and remaining <= TOKEN_BURST - EST
    for s, h, b in refused:
        assert_quota_refusal(s, h, b, "tokens")
        limit, remaining, _ = check_rate_limit_headers(h, ("tokens",))["tokens"]
        assert limit == TOKEN_BURST and remaining < EST

    recs, auds = wait_tenant_records(gw, "burst-tok", BURST_SIZE)
    assert len(recs) == BURST_SIZE and len(auds) == BURST_SIZE
    denied = [a for a in auds if a["decision"] == "deny"]
    assert len(denied) == BURST_SIZE - STREAMS_ALLOWED
    assert all(a["reason"] == "quota_tokens" and a["http_status"] == 429 for a in denied)
    served = [r for r in recs if r["http_status"] == 200]
    assert len(served) == STREAMS_ALLOWED
    assert all(r["stream"] and r["stream_complete"] and not r["usage_estimated"] for r in served)
    assert all((r["prompt_tokens"], r["completion_tokens"]) == (1, 60) for r in served)

    # Every stream is settled now: the bucket holds exactly the refunds, 20 x 3 = 60.
    r = ask(gw, "burst-tok", "/v1/chat/completions", stream_body(), rid="bt-probe-1", stream=True)
    assert_quota_refusal(r.status_code, r.headers, r.content, "tokens")
    assert r.headers["x-ratelimit-remaining-tokens"] == str(STREAMS_ALLOWED * REFUND)

    # Under-reservation: 40 one-letter words are 79 characters, estimated ceil(79/4) = 20
    # tokens but really 40. With max_tokens 40 the reservation is 60 (it fits exactly) and
    # the real usage 80, so the settle charges 20 more: the bucket goes 20 into debt.
    words = " ".join(["a"] * 40)
    r = ask(gw, "burst-tok", "/v1/chat/completions", stream_body(words, 40), rid="bt-debt", stream=True)
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-remaining-tokens"] == "0"
    assert final_usage(r.content)["total_tokens"] == 80
    wait_request_id(gw, "bt-debt")
    r = ask(gw, "burst-tok", "/v1/chat/completions", stream_body(), rid="bt-probe-2", stream=True)
    ms = assert_quota_refusal(r.status_code, r.headers, r.content, "tokens")
    assert r.headers["x-ratelimit-remaining-tokens"] == "0"
    # The debt is waited out: 20 owed + 64 needed = 84 tokens at 0.001 per minute.
    owed_ms = (20 + EST) * 60_000 * 1000
    assert owed_ms - 600_000 <= ms <= owed_ms, ms


def test_rate_limit_headers_on_every_response_and_settle_cases(gw):
    """One tenant, sequential requests (each waits for its record, so its settle is done):
    the exact remaining counts show reserve, refund, real and estimated usage."""
    t = "hdrs"

    def expect(r, req_left, tok_left, status=200):
        assert r.status_code == status, r.text
        h = check_rate_limit_headers(r.headers)
        assert (h["requests"][0], h["tokens"][0]) == (10, 100)
        assert (h["requests"][1], h["tokens"][1]) == (req_left, tok_left)

    # "hello gateway": estimated ceil(13/4) = 4 prompt tokens, really 2 words.
    # 1. Plain chat: reserve 4 + 16 = 20 (100 -> 80), settle at 2 + 16 = 18 (-> 82).
    r = ask(gw, t, "/v1/chat/completions", chat_body(max_tokens=16), rid="h-1")
    expect(r, 9, 80)
    assert "retry-after" not in r.headers
    wait_request_id(gw, "h-1")
    # 2. Stream: the same numbers, settled from the final usage chunk (82 -> 62 -> 64).
    r = ask(gw, t, "/v1/chat/completions", chat_body(max_tokens=16, stream=True), rid="h-2", stream=True)
    expect(r, 8, 62)
    wait_request_id(gw, "h-2")
    # 3. The upstream fails: the response still carries the headers; the reservation is
    #    refunded in full (64 -> 44 -> 64).
    r = ask(gw, t, "/v1/chat/completions", chat_body(max_tokens=16), rid="h-3", headers={"x-mock-status": "503"})
    expect(r, 7, 44, status=503)
    wait_request_id(gw, "h-3")
    # 4. The upstream cuts the stream after 2 content tokens ("tok0 tok1 ", 10 characters):
    #    no usage arrives, so the estimate of what was streamed is charged: 4 + ceil(10/4)
    #    = 7 (64 -> 44 -> 57).
    r = ask(gw, t, "/v1/chat/completions", chat_body(max_tokens=16, stream=True), rid="h-4",
            headers={"x-mock-reset-after-chunks": "2"}, stream=True)
    expect(r, 6, 44)
    g, _ = wait_request_id(gw, "h-4")
    assert g["stream_complete"] is False and g["usage_estimated"] is True
    # 5. Needs 4 + 60 = 64 > 57 tokens: 429 with every header; the request unit is
    #    refunded (all-or-nothing).
    r = ask(gw, t, "/v1/chat/completions", chat_body(max_tokens=60), rid="h-5")
    assert_quota_refusal(r.status_code, r.headers, r.content, "tokens")
    expect(r, 6, 57, status=429)
    g, a = wait_request_id(gw, "h-5")
    assert (a["decision"], a["reason"], a["http_status"]) == ("deny", "quota_tokens", 429)
    assert g["http_status"] == 429
    # 6. A body-less route costs one request and reads the token bucket.
    for left in range(5, -1, -1):
        r = ask(gw, t, "/v1/models")
        expect(r, left, 57)
    # 7. The request bucket is empty: 429 naming requests, still with the token headers.
    r = ask(gw, t, "/v1/models", rid="h-7")
    assert_quota_refusal(r.status_code, r.headers, r.content, "requests")
    expect(r, 0, 57, status=429)
    g, a = wait_request_id(gw, "h-7")
    assert (a["decision"], a["reason"], a["http_status"]) == ("deny", "quota_requests", 429)
    assert g["http_status"] == 429


def test_batch_traffic_cannot_take_the_interactive_reserve(gw):
    """Half of the 100-token bucket is kept for interactive traffic. Embeddings (batch)
    of 15 one-word inputs reserve and use exactly 15 tokens each."""
    t = "classes"
    emb = {"model": "bge-small", "input": ["abcd"] * 15}
    for i, left in enumerate([35, 20, 5]):  # what batch may still take: level - 50
        r = ask(gw, t, "/v1/embeddings", emb, rid=f"c-{i}")
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit-tokens"] == "50"  # the batch share
        assert r.headers["x-ratelimit-remaining-tokens"] == str(left)
        wait_request_id(gw, f"c-{i}")
    r = ask(gw, t, "/v1/embeddings", emb, rid="c-deny")
    assert_quota_refusal(r.status_code, r.headers, r.content, "tokens")
    assert r.headers["x-ratelimit-remaining-tokens"] == "5"
    _, a = wait_request_id(gw, "c-deny")
    assert (a["decision"], a["reason"]) == ("deny", "quota_tokens")
    # Chat is interactive: it may use the reserve (4 + 46 = 50 of the 55 left).
    r = ask(gw, t, "/v1/chat/completions", chat_body(max_tokens=46), rid="c-chat")
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-limit-tokens"] == "100"
    assert r.headers["x-ratelimit-remaining-tokens"] == "5"
    # A batch request bigger than the whole batch share can never pass: 400, not 429.
    r = ask(gw, t, "/v1/embeddings", {"model": "bge-small", "input": ["abcd"] * 51})
    err = assert_openai_error(r, 400, "quota_exceeds_burst")
    assert "51" in err["message"] and "50" in err["message"]
    assert "retry-after" not in r.headers
