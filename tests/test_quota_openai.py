"""Quotas with the official `openai` SDK (openai==1.59.7, tests/requirements.txt): a spent
quota surfaces as `openai.RateLimitError` carrying OpenAI's retry headers, and the client
gets through after waiting what they say, by polling and through the SDK's own retries
(which honour `retry-after-ms`); the reservation counts every billable input and every
completion the upstream may generate (docs/quotas.md, "What the reservation counts")."""
import json
import math
import time

import openai
import pytest

from conftest import demo_config
from harness.launcher import Topology
from quota_support import add_tenant, check_retry_headers, wait_request_id

# One request every 3 s (burst 1): slow enough that a retry right after a success is
# always refused first, fast enough to wait for in a test.
REQ_PER_MIN = 20
MS_PER_REQUEST = 60_000 // REQ_PER_MIN
# 10 tokens per second, 100 at most.
TOK_PER_MIN = 600
TOKEN_BURST = 100
DEADLINE_S = 30
# Tenants whose token bucket only one test touches, so the reservation shows exactly in
# `x-ratelimit-remaining-tokens` (burst minus what was reserved).
SMALL_BURST = 500
LARGE_BURST = 100_000


@pytest.fixture(scope="module")
def gw():
    cfg = demo_config()
    tenants = {
        "sdk-req": add_tenant(cfg, "sdk-req", {"requests_per_minute": REQ_PER_MIN, "request_burst": 1}),
        "sdk-tok": add_tenant(cfg, "sdk-tok", {"tokens_per_minute": TOK_PER_MIN, "token_burst": TOKEN_BURST}),
        "est-burst": add_tenant(cfg, "est-burst", {"tokens_per_minute": TOK_PER_MIN, "token_burst": SMALL_BURST}),
        "est-tools": add_tenant(cfg, "est-tools", {"tokens_per_minute": TOK_PER_MIN, "token_burst": LARGE_BURST}),
        "est-plain": add_tenant(cfg, "est-plain", {"tokens_per_minute": TOK_PER_MIN, "token_burst": LARGE_BURST}),
    }
    with Topology(plugin_config=cfg, concurrency=4) as topo:
        topo.tenants = tenants
        yield topo


def sdk(gw, tenant, **kw):
    host, key = gw.tenants[tenant]
    return openai.OpenAI(
        base_url=gw.base_url + "/v1",
        api_key=key,
        default_headers={"Host": host},
        max_retries=kw.pop("max_retries", 0),
        **kw,
    )


def chat(client, rid=None, **kw):
    return client.chat.completions.create(
        model="llama3-8b",
        messages=[{"role": "user", "content": "hello gateway"}],
        extra_headers={"x-request-id": rid} if rid else None,
        **kw,
    )


def until_refused(client):
    """Call until the quota refuses (normally the 2nd call; bounded)."""
    for _ in range(5):
        try:
            chat(client, max_tokens=4)
        except openai.RateLimitError as e:
            return e
    pytest.fail("the request quota never refused")


def test_rate_limit_error_then_success_after_waiting(gw):
    client = sdk(gw, "sdk-req")
    e = until_refused(client)
    assert e.status_code == 429
    assert e.code == "rate_limit_exceeded" and e.type == "requests", e.body
    assert "requests" in e.message
    h = e.response.headers
    ms = check_retry_headers(h)
    # Consistent with the configured rate: at most one request's refill time away.
    assert 0 < ms <= MS_PER_REQUEST, ms
    assert h["retry-after"] == str(math.ceil(ms / 1000))
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("1", "0")

    # Wait as told and try again, until it passes (bounded; refusals say how long to wait).
    deadline = time.time() + DEADLINE_S
    attempts, wait_ms = 0, ms
    while True:
        time.sleep(wait_ms / 1000)
        attempts += 1
        try:
            done = chat(client, max_tokens=4)
            break
        except openai.RateLimitError as again:
            assert time.time() < deadline, "still refused after the deadline"
            wait_ms = check_retry_headers(again.response.headers)
    assert done.choices[0].message.content == "tok0 tok1 tok2 tok3"
    assert done.usage.total_tokens == 2 + 4

    # Right after that success the bucket is empty again. With retries enabled the SDK
    # itself waits `retry-after-ms` and succeeds; both attempts carry the same request id.
    retrying = sdk(gw, "sdk-req", max_retries=3)
    done = chat(retrying, rid="sdk-retry", max_tokens=4)
    assert done.usage.total_tokens == 6
    time.sleep(0.2)
    recs = [r for r in gw.records() if r.get("client_request_id") == "sdk-retry"]
    auds = [a for a in gw.audits() if a.get("client_request_id") == "sdk-retry"]
    statuses = [r["http_status"] for r in recs]
    assert statuses[-1:] == [200] and set(statuses[:-1]) == {429} and len(statuses) >= 2, statuses
    assert [a["reason"] for a in auds if a["decision"] == "deny"] == ["quota_requests"] * (len(statuses) - 1)


def test_streaming_create_raises_rate_limit_error(gw):
    client = sdk(gw, "sdk-req")
    until_refused(client)
    with pytest.raises(openai.RateLimitError) as info:
        chat(client, stream=True, max_tokens=4)
    check_retry_headers(info.value.response.headers)


def test_token_quota_error_names_tokens_and_its_delay_matches_the_headers(gw):
    client = sdk(gw, "sdk-tok")
    # Reserves 4 + 90 = 94 of 100; really uses 2 + 90 = 92, so 8 are left once settled.
    done = chat(client, rid="tok-1", max_tokens=90)
    assert done.usage.total_tokens == 92
    wait_request_id(gw, "tok-1")
    with pytest.raises(openai.RateLimitError) as info:
        chat(client, rid="tok-2", max_tokens=90)
    e = info.value
    assert "tokens" in e.message
    h = e.response.headers
    ms = check_retry_headers(h)
    left = int(h["x-ratelimit-remaining-tokens"])
    assert 8 <= left < 94
    # The wait is exactly the missing tokens at 10 per second: (94 - level) * 100 ms,
    # where the header shows the level rounded down.
    assert (94 - left) * 100 - 100 < ms <= (94 - left) * 100, (left, ms)
    _, a = wait_request_id(gw, "tok-2")
    assert (a["decision"], a["reason"], a["http_status"]) == ("deny", "quota_tokens", 429)


FOUR_PROMPTS = ["abcd", "efgh", "ijkl", "mnop"]  # 1 token each


def test_completions_reserve_every_prompt_times_best_of(gw):
    """4 prompts x max(n=2, best_of=3) x 50 tokens + 4 = 604 can never fit a burst of 500:
    refused outright, before the upstream is asked to generate 12 completions."""
    client = sdk(gw, "est-burst")
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(
            model="llama3-8b", prompt=FOUR_PROMPTS, n=2, best_of=3, max_tokens=50,
            extra_headers={"x-request-id": "est-604"},
        )
    e = info.value
    assert (e.status_code, e.code) == (400, "quota_exceeds_burst"), e.body
    assert "604" in e.message and str(SMALL_BURST) in e.message, e.message
    assert e.response.headers["x-ratelimit-remaining-tokens"] == str(SMALL_BURST)
    _, a = wait_request_id(gw, "est-604")
    assert (a["decision"], a["reason"], a["http_status"]) == ("deny", "quota_tokens", 400)
    # A tenth of the limit fits: 4 + 4 x 3 x 5 = 64 reserved.
    raw = client.completions.with_raw_response.create(
        model="llama3-8b", prompt=FOUR_PROMPTS, n=2, best_of=3, max_tokens=5,
    )
    assert raw.status_code == 200
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(SMALL_BURST - 64)


def test_bad_best_of_is_an_openai_shaped_400(gw):
    client = sdk(gw, "est-plain")
    for kw, code, message in [
        ({"n": 3, "best_of": 2}, "invalid_value", "`best_of` must be greater than or equal to `n`"),
        ({"best_of": 2, "stream": True}, "invalid_value", "`best_of` must be 1 when `stream` is true"),
        ({"best_of": 1.5}, "invalid_type", "`best_of` must be a non-negative integer"),
        ({"prompt": [[1, 2], [3, "x"]]}, "invalid_type", "`prompt[][]` must be a non-negative integer"),
    ]:
        kw = {"prompt": "abcd", **kw}
        with pytest.raises(openai.BadRequestError) as info:
            client.completions.create(model="llama3-8b", max_tokens=4, **kw)
        e = info.value
        assert e.status_code == 400 and e.type == "invalid_request_error", e.body
        assert (e.code, e.body["message"]) == (code, message), e.body


def test_tool_definitions_and_images_are_reserved(gw):
    """A chat request's reservation counts its tool definitions (their JSON text, four
    characters a token) and each image (1445 tokens unless `detail: low`)."""
    tools = [{"type": "function", "function": {
        "name": f"tool_{i}",
        "description": "Looks things up in the catalogue of the shop. " * 20,
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                       "required": ["q"]},
    }} for i in range(10)]
    chars = len(json.dumps(tools, separators=(",", ":")))
    assert chars > 9_000
    client = sdk(gw, "est-tools")
    raw = client.chat.completions.with_raw_response.create(
        model="llama3-8b", messages=[{"role": "user", "content": "hello gateway"}],
        tools=tools, max_tokens=4,
    )
    assert raw.status_code == 200
    # "hello gateway" (4) + the definitions + 4 completion tokens.
    reserved = 4 + math.ceil(chars / 4) + 4
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(LARGE_BURST - reserved)

    client = sdk(gw, "est-plain")
    raw = client.chat.completions.with_raw_response.create(
        model="llama3-8b", max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "text", "text": "hello gateway"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/b.png", "detail": "low"}},
        ]}],
    )
    assert raw.status_code == 200
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(LARGE_BURST - (4 + 1445 + 85 + 4))
