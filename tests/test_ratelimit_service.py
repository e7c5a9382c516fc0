"""The global rate limit service (ratelimit/, docs/ratelimit.md) with a real redis-server,
called by a real Envoy 1.40's `envoy.filters.http.ratelimit` and by a direct gRPC client.

- Envoy's own filter, one descriptor from a header: of M requests sent concurrently,
  exactly N (the limit) pass and the others get 429; the counter holds all M.
- The composition of docs/quotas.md, with its YAML as written there: the Wasm filter
  settles the tokens and Envoy's rate limit filter charges them when the stream is done;
  the counter equals the gateway records' tokens, and the request after the budget is
  spent is refused.
- Faults: Redis stopped, frozen and restarted; the service restarted; failure_mode_deny
  false and true.
- The protocol directly: the refund extension, per-descriptor hits_addend 0 (a pure
  read), is_negative_hits, atomic multi-descriptor calls, invalid requests.

Counters are per fixed window; a test that counts waits, before it starts, until the
current window has enough time left that its requests cannot straddle two windows.
"""
import concurrent.futures
import datetime
import json
import os
import re
import signal
import time

import grpc
import pytest
import requests
import yaml

from client import HOST_A, KEY_A, call, chat_body
from harness.ratelimit import (PlainEnvoy, RateLimitedTopology, RateLimitService, counter, counter_key, http_filter,
                               leave_window_edge, wait_counter, window_start)
from harness.redis import RedisServer
from openai_helpers import new_rid, record_for, sse_events
from quota_support import poll
import rls_client
from rls_client import OK, OVER_LIMIT, descriptor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- a. Envoy's own rate limit filter --------------------------------------------------

CLIENT_LIMIT = """
domain: edge
descriptors:
  - key: client
    rate_limit: { unit: minute, requests_per_unit: 5 }
"""
BY_CLIENT_HEADER = [{"actions": [{"request_headers": {"header_name": "x-client", "descriptor_key": "client"}}]}]


def test_envoy_rate_limit_filter_lets_exactly_the_limit_through():
    n, m = 5, 16
    with RedisServer() as redis, RateLimitService(CLIENT_LIMIT, redis.url) as rls, \
            PlainEnvoy(rls.port, http_filter("edge"), BY_CLIENT_HEADER) as envoy:
        leave_window_edge("minute", 20)
        start = window_start("minute")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(requests.get, envoy.url, headers={"x-client": "c1"}, timeout=10)
                       for _ in range(m)]
            responses = [f.result() for f in futures]
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * n + [429] * (m - n), codes
        refused = [r for r in responses if r.status_code == 429]
        assert all(r.headers.get("x-envoy-ratelimited") == "true" for r in refused)
        # Always incremented, like envoyproxy/ratelimit: the counter holds every hit.
        assert counter(redis, counter_key("edge", [("client", "c1")], "minute", start)) == m
        # Another client has its own counter; no header, no descriptor: not limited.
        assert requests.get(envoy.url, headers={"x-client": "c2"}, timeout=10).status_code == 200
        assert requests.get(envoy.url, timeout=10).status_code == 200
        assert counter(redis, counter_key("edge", [("client", "c2")], "minute", start)) == 1
        assert redis.command("DBSIZE") == 2
        stats = envoy.stats("cluster.backend.ratelimit")
        assert stats["cluster.backend.ratelimit.ok"] == n + 1
        assert stats["cluster.backend.ratelimit.over_limit"] == m - n
        assert stats.get("cluster.backend.ratelimit.error", 0) == 0
        # The info log says nothing about descriptor values.
        assert "c1" not in rls.log() and "c2" not in rls.log()


# --- b. the composition of docs/quotas.md ----------------------------------------------

def documented_yaml():
    """The two YAML blocks of docs/quotas.md's section on Envoy's global rate limit:
    (Envoy's http_filters and rate_limits, the rate limit service's configuration)."""
    with open(os.path.join(ROOT, "docs", "quotas.md")) as f:
        text = f.read()
    section = text[text.index("## Many replicas"):]
    section = section[:section.find("\n## ", 4)]
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.S)]
    assert len(blocks) == 2, "docs/quotas.md: expected the Envoy snippet and the service configuration"
    return blocks


def test_docs_composition_charges_the_settled_tokens_and_refuses_past_the_budget():
    envoy_doc, service_doc = documented_yaml()
    names = [f["name"] for f in envoy_doc["http_filters"]]
    assert names == ["envoy.filters.http.wasm", "envoy.filters.http.ratelimit", "envoy.filters.http.router"]
    # The rules are the filter's own (`rate_limits` in its typed_config): Envoy honours
    # `hits_addend` there, not in a route's or virtual host's rate_limits.
    rl_filter = envoy_doc["http_filters"][1]
    assert set(envoy_doc) == {"http_filters"} and rl_filter["typed_config"]["rate_limits"]
    # The documented service configuration, with a token budget a few requests spend.
    budget = 60
    for d in service_doc["descriptors"]:
        if d["value"] == "tokens":
            d["descriptors"][0]["rate_limit"]["requests_per_unit"] = budget
    unit = service_doc["descriptors"][1]["descriptors"][0]["rate_limit"]["unit"]

    with RedisServer() as redis, RateLimitService(yaml.safe_dump(service_doc), redis.url) as rls, \
            RateLimitedTopology(rls.port, rl_filter, None, concurrency=2) as gw:
        leave_window_edge(unit, 30)
        start = window_start(unit)
        tokens_key = counter_key("ai-gateway", [("kind", "tokens"), ("tenant", "tenant-a")], unit, start)
        requests_key = counter_key("ai-gateway", [("kind", "requests"), ("tenant", "tenant-a")], unit, start)
        bodies = [
            ("/v1/chat/completions", chat_body("hello global limits")),
            ("/v1/chat/completions", chat_body("a streamed answer, please", stream=True)),
            ("/v1/embeddings", {"model": "bge-small", "input": ["one", "two three"]}),
        ]
        charged, sent, refused = 0, 0, None
        for i in range(20):
            path, body = bodies[i % len(bodies)]
            before = counter(redis, tokens_key)
            assert before == charged
            rid = new_rid("rls")
            r = call(gw, path, body, headers={"x-request-id": rid}, stream=body.get("stream", False))
            text = r.text
            sent += 1
            rec, _ = record_for(gw, rid)
            if before > budget:
                refused = (r, rec)
                break
            assert r.status_code == 200, text
            if body.get("stream"):
                assert sse_events(text)[1], "the stream ended with [DONE]"
                assert rec["stream"] is True and rec["stream_complete"] is True
            cost = (rec["prompt_tokens"] or 0) + (rec["completion_tokens"] or 0)
            assert cost > 0, rec
            charged += cost
            # Charged when the stream is done: the counter catches up after the response.
            assert wait_counter(redis, tokens_key, charged) == charged, rec
        assert refused is not None, f"the budget of {budget} tokens was never exceeded"
        assert sent >= 3, "a stream and several requests were charged before the refusal"
        r, rec = refused
        assert r.status_code == 429 and r.headers.get("x-envoy-ratelimited") == "true", r.text
        assert rec["http_status"] == 429
        # The refused request cost nothing; every request counted once against requests.
        time.sleep(0.5)
        assert counter(redis, tokens_key) == charged
        assert counter(redis, requests_key) == sent
        assert window_start(unit) == start, "the test straddled two windows"
        records = [x for x in gw.records() if x.get("tenant") == "tenant-a"]
        assert len(records) == sent
        assert sum((x["prompt_tokens"] or 0) + (x["completion_tokens"] or 0) for x in records) == charged
        assert "tenant-a" not in rls.log()


# --- c. faults -----------------------------------------------------------------------

CLIENT_HOURLY = """
domain: edge
descriptors:
  - key: client
    rate_limit: { unit: hour, requests_per_unit: 1000 }
"""
C1 = [("client", "c1")]


def get(envoy):
    return requests.get(envoy.url, headers={"x-client": "c1"}, timeout=10).status_code


def rpc_code(client, descriptors, **kw):
    try:
        client.should_rate_limit("edge", descriptors, timeout=5.0, **kw)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def test_faults_redis_down_frozen_restarted_and_the_service_restarted():
    with RedisServer(persist=True) as redis, \
            RateLimitService(CLIENT_HOURLY, redis.url, redis_timeout_ms=300) as rls, \
            PlainEnvoy(rls.port, http_filter("edge", failure_mode_deny=False), BY_CLIENT_HEADER, 1) as open_, \
            PlainEnvoy(rls.port, http_filter("edge", failure_mode_deny=True), BY_CLIENT_HEADER, 1) as closed, \
            rls_client.Client(rls.address) as client:
        leave_window_edge("hour", 120)
        key = counter_key("edge", C1, "hour")
        assert (get(open_), get(closed)) == (200, 200)
        assert counter(redis, key) == 2

        # Redis stopped: the service answers UNAVAILABLE (within the client's 5 s deadline,
        # not DEADLINE_EXCEEDED); a descriptor without a limit needs no Redis.
        redis.stop()
        assert rpc_code(client, [descriptor(C1)]) == grpc.StatusCode.UNAVAILABLE
        assert rpc_code(client, [descriptor([("unlimited", "x")])]) == grpc.StatusCode.OK
        assert [get(open_) for _ in range(3)] == [200] * 3   # failure_mode_deny: false
        assert [get(closed) for _ in range(3)] == [500] * 3  # failure_mode_deny: true
        assert open_.stats("cluster.backend.ratelimit")["cluster.backend.ratelimit.failure_mode_allowed"] == 3
        assert closed.stats("cluster.backend.ratelimit")["cluster.backend.ratelimit.error"] == 3

        # Restarted on the same port with its append-only file: the counter survived, and
        # the same service process counts on.
        pid = rls.proc.pid
        redis.start()
        assert counter(redis, key) == 2
        assert poll(lambda: rpc_code(client, [descriptor(C1, hits=0)]) == grpc.StatusCode.OK)
        assert [get(closed) for _ in range(5)] == [200] * 5
        assert counter(redis, key) == 7
        assert rls.proc.pid == pid and rls.proc.poll() is None

        # Frozen (accepts, never answers): the timeout bounds every call, and the code says
        # the call may still be counted (DEADLINE_EXCEEDED, not UNAVAILABLE).
        os.kill(redis.proc.pid, signal.SIGSTOP)
        try:
            assert rpc_code(client, [descriptor(C1)]) == grpc.StatusCode.DEADLINE_EXCEEDED
            assert get(closed) == 500
        finally:
            os.kill(redis.proc.pid, signal.SIGCONT)
        assert poll(lambda: rpc_code(client, [descriptor(C1, hits=0)]) == grpc.StatusCode.OK)
        # The frozen calls may have reached Redis and count once it resumes: read it afresh.
        base = counter(redis, key)
        assert [get(closed) for _ in range(3)] == [200] * 3
        assert counter(redis, key) == base + 3

        # The service restarted: Envoy reconnects by itself.
        rls.restart()
        ok = poll(lambda: get(closed) == 200)
        assert ok
        assert [get(closed) for _ in range(4)] == [200] * 4
        assert counter(redis, key) == base + 3 + 5

        # One line per Redis state change: down, up, down (frozen), up.
        log = rls.log()
        assert log.count("unreachable") >= 2 and "c1" not in log


def test_service_started_before_redis_answers_unavailable_then_recovers():
    with RedisServer() as redis:
        redis.stop()
        with RateLimitService(CLIENT_HOURLY, redis.url, redis_timeout_ms=300) as rls, \
                rls_client.Client(rls.address) as client:
            assert rpc_code(client, [descriptor(C1)]) == grpc.StatusCode.UNAVAILABLE
            redis.start()
            leave_window_edge("hour", 60)
            assert poll(lambda: rpc_code(client, [descriptor(C1)]) == grpc.StatusCode.OK)
            assert counter(redis, counter_key("edge", C1, "hour")) == 1
            lines = rls.log().splitlines()
            assert len([l for l in lines if "listening on" in l]) == 1
            states = [l for l in lines if " reachable" in l or "unreachable" in l]
            assert "unreachable" in states[0] and states[-1].endswith("reachable"), states


# --- d. the protocol, directly ---------------------------------------------------------

TOKENS = """
domain: ai-gateway
descriptors:
  - key: kind
    value: tokens
    descriptors:
      - key: tenant
        rate_limit: { unit: hour, requests_per_unit: 100, name: tenant-tokens }
"""


def tok(tenant):
    return [("kind", "tokens"), ("tenant", tenant)]


REFUND = [("ai_gateway_refund", "true")]


@pytest.fixture(scope="module")
def direct():
    with RedisServer() as redis, RateLimitService(TOKENS, redis.url) as rls, \
            rls_client.Client(rls.address) as client:
        yield redis, rls, client


def ask(client, descriptors, hits_addend=0):
    return client.should_rate_limit("ai-gateway", descriptors, hits_addend=hits_addend)


def test_report_ids_count_a_charge_or_refund_once(direct):
    """The `x-ai-gateway-reports` extension (docs/ratelimit.md): a descriptor with an id
    runs once per id; sent again it is answered as a read."""
    redis, _, client = direct
    leave_window_edge("hour", 60)
    key = counter_key("ai-gateway", tok("report-a"), "hour")
    once = [("x-ai-gateway-reports", "a1,")]
    for _ in range(3):
        r = client.should_rate_limit("ai-gateway", [descriptor(tok("report-a"), hits=30), descriptor(tok("report-a"), hits=5)],
                                     metadata=once)
        assert r["overall_code"] == OK
    # The first descriptor once (30), the second (no id) every time (3 x 5).
    assert counter(redis, key) == 45
    r = client.should_rate_limit("ai-gateway", [descriptor(tok("report-a") + REFUND, hits=20)],
                                 metadata=[("x-ai-gateway-reports", "b2")])
    assert r["statuses"][0]["limit_remaining"] == 75
    client.should_rate_limit("ai-gateway", [descriptor(tok("report-a") + REFUND, hits=20)],
                             metadata=[("x-ai-gateway-reports", "B2")])
    assert counter(redis, key) == 25, "ids are case-insensitive hex: the refund ran once"
    assert redis.command("TTL", "ai-gateway-rl:report|a1") > 3600


def test_refund_extension_and_pure_reads(direct):
    redis, _, client = direct
    leave_window_edge("hour", 60)
    key = counter_key("ai-gateway", tok("refund-a"), "hour")

    r = ask(client, [descriptor(tok("refund-a"))], hits_addend=30)
    assert r["overall_code"] == OK
    [s] = r["statuses"]
    assert (s["code"], s["limit_remaining"]) == (OK, 70)
    assert s["current_limit"] == {"requests_per_unit": 100, "unit": rls_client.UNITS["hour"], "name": "tenant-tokens"}
    assert 0 < s["duration_until_reset"] <= 3600
    assert counter(redis, key) == 30
    assert 0 < redis.command("TTL", key) <= 3601

    # Refund: the counter of the other entries goes down by the hits, answered OK.
    r = ask(client, [descriptor(tok("refund-a") + REFUND)], hits_addend=10)
    assert (r["overall_code"], r["statuses"][0]["limit_remaining"]) == (OK, 80)
    assert counter(redis, key) == 20
    # Per-descriptor hits apply to refunds; clamped at 0, the key keeps its expiry.
    r = ask(client, [descriptor(tok("refund-a") + REFUND, hits=500)])
    assert (r["statuses"][0]["code"], r["statuses"][0]["limit_remaining"]) == (OK, 100)
    assert counter(redis, key) == 0 and 0 < redis.command("TTL", key) <= 3601
    # A refund of a counter that does not exist creates nothing.
    r = ask(client, [descriptor(tok("refund-none") + REFUND)], hits_addend=5)
    assert r["overall_code"] == OK
    assert redis.command("EXISTS", counter_key("ai-gateway", tok("refund-none"), "hour")) == 0

    # An explicit per-descriptor 0 is a pure read, whatever the request's hits_addend.
    ask(client, [descriptor(tok("refund-a"))], hits_addend=100)
    r = ask(client, [descriptor(tok("refund-a"), hits=0)], hits_addend=50)
    assert (r["overall_code"], r["statuses"][0]["limit_remaining"]) == (OK, 0)
    assert counter(redis, key) == 100
    ask(client, [descriptor(tok("refund-a"))])  # 101: over
    r = ask(client, [descriptor(tok("refund-a"), hits=0)])
    assert r["overall_code"] == OVER_LIMIT and counter(redis, key) == 101
    # A refund is never over the limit, and takes the counter back under it.
    r = ask(client, [descriptor(tok("refund-a") + REFUND)], hits_addend=11)
    assert (r["overall_code"], r["statuses"][0]["limit_remaining"]) == (OK, 10)
    # A pure read of an absent counter creates nothing.
    ask(client, [descriptor(tok("refund-b"), hits=0)])
    assert redis.command("EXISTS", counter_key("ai-gateway", tok("refund-b"), "hour")) == 0

    # RLS v3's is_negative_hits refunds the descriptor's own counter the same way.
    r = ask(client, [descriptor(tok("refund-a"), hits=40, negative=True)])
    assert (r["overall_code"], r["statuses"][0]["limit_remaining"]) == (OK, 50)
    assert counter(redis, key) == 50


def test_one_call_is_atomic_over_its_descriptors_and_unknown_ones_are_unlimited(direct):
    redis, _, client = direct
    leave_window_edge("hour", 60)
    size = redis.command("DBSIZE")
    r = ask(client, [descriptor(tok("multi-a")), descriptor([("kind", "other")]),
                     descriptor(tok("multi-b"), hits=150), descriptor(tok("multi-a") + REFUND, hits=1)],
            hits_addend=3)
    assert r["overall_code"] == OVER_LIMIT
    codes = [(s["code"], s["limit_remaining"], s["current_limit"] is None) for s in r["statuses"]]
    assert codes == [(OK, 97, False), (OK, 0, True), (OVER_LIMIT, 0, False), (OK, 98, False)]
    assert counter(redis, counter_key("ai-gateway", tok("multi-a"), "hour")) == 2
    assert counter(redis, counter_key("ai-gateway", tok("multi-b"), "hour")) == 150
    assert redis.command("DBSIZE") == size + 2
    # An unknown domain limits nothing and stores nothing.
    r = client.should_rate_limit("elsewhere", [descriptor(tok("multi-a"))])
    assert r["overall_code"] == OK and r["statuses"][0]["current_limit"] is None
    assert redis.command("DBSIZE") == size + 2


def test_invalid_requests_are_refused_with_invalid_argument(direct):
    _, _, client = direct
    for domain, descriptors in [("", [descriptor(tok("x"))]), ("ai-gateway", [])]:
        with pytest.raises(grpc.RpcError) as e:
            client.should_rate_limit(domain, descriptors)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for unit in ["week", "year"]:
        with pytest.raises(grpc.RpcError) as e:
            ask(client, [descriptor(tok("x"), override=(5, unit))])
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # An override in a supported unit replaces the configured limit.
    r = ask(client, [descriptor(tok("override"), override=(2, "day"))], hits_addend=3)
    assert r["overall_code"] == OVER_LIMIT
    assert r["statuses"][0]["current_limit"]["requests_per_unit"] == 2


def utc_month(now):
    """Unix seconds of the 1st of `now`'s UTC month at 00:00:00, and of the next month's."""
    d = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    first = datetime.datetime(d.year, d.month, 1, tzinfo=datetime.timezone.utc)
    after = datetime.datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=datetime.timezone.utc)
    return int(first.timestamp()), int(after.timestamp())


def test_month_overrides_count_the_utc_calendar_month(direct):
    """A spend budget's shape (docs/ratelimit.md, months): micro-dollars per UTC month."""
    redis, _, client = direct
    entries = [("kind", "spend_month"), ("tenant", "month-a")]
    for _ in range(2):  # a second try only if the month turned during the first
        before = time.time()
        r = ask(client, [descriptor(entries, hits=250_000, override=(10_000_000, "month"))])
        after = time.time()
        if utc_month(before) == utc_month(after):
            break
    start, end = utc_month(before)
    [s] = r["statuses"]
    assert (r["overall_code"], s["code"], s["limit_remaining"]) == (OK, OK, 9_750_000)
    assert s["current_limit"]["unit"] == rls_client.UNITS["month"]
    # To the next 1st at 00:00:00 UTC, as seen between the two clock readings.
    assert end - after - 1 <= s["duration_until_reset"] <= end - before + 1
    key = counter_key("ai-gateway", entries, "month", start)
    assert counter(redis, key) == 250_000
    assert end - after <= redis.command("TTL", key) <= end - before + 2
    r = ask(client, [descriptor(entries, hits=9_750_001, override=(10_000_000, "month"))])
    assert (r["overall_code"], r["statuses"][0]["limit_remaining"]) == (OVER_LIMIT, 0)


def test_bad_configuration_stops_the_service_at_start(direct):
    redis, _, _ = direct
    svc = RateLimitService("domain: d\ndescriptors:\n  - key: a\n    rate_limit: { unit: weekly, requests_per_unit: 1 }\n",
                           redis.url)
    with pytest.raises(Exception) as e:
        svc.start(timeout=10)
    svc.stop()
    assert 'descriptors[0].rate_limit.unit: "weekly" is not one of second, minute, hour, day, month' in str(e.value)
