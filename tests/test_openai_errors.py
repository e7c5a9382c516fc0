"""Every refusal in docs/contract.md's refusal table, through the official `openai` SDK
(openai==1.59.7, tests/requirements.txt) with `max_retries=0`, against the real Envoy 1.40
with the built module and the mock backends (for the global and strict rate limits also a
real redis-server and the real ai-gateway-ratelimit).

The table is the test's input: each of its rows is one test, which drives that refusal and
checks the exception class the SDK raises (the table's SDK column), the status, `e.code`,
`e.type`, `e.param`, the message's shape, and the audit record's `reason`. A row without a
driver here fails, so the page and the test cannot drift apart.

Cases the SDK cannot produce by itself are produced through it all the same: a missing key
by an httpx event hook that drops the `Authorization` header the SDK always sends (it refuses
an empty key), a wrong hostname through `default_headers`, a late body by a hook that sends
the body a while after the headers, a wrong method or path through the client's generic `get` / `post`.
"""
import json
import os
import re
import threading
import time
import uuid
from types import SimpleNamespace

import httpx
import openai
import pytest
import requests

from client import HOST_A, HOST_B, KEY_A, KEY_B, chat_body
from conftest import ROOT, demo_config
from harness.launcher import LaunchError, Topology
from harness.ratelimit import GlobalTopology, RateLimitService, domain_config, leave_window_edge
from harness.redis import RedisServer
from quota_support import add_tenant, check_retry_headers, wait_request_id

CHAT = "/v1/chat/completions"
HOLD_MS = 400  # routing.hold_timeout_ms of the main gateway
BODY_LIMIT = 65_536  # limits.max_request_body_bytes of the main gateway
SLOW_MS = 4000  # how long the mock holds the request that fills a concurrency slot
DOMAIN = "ai-gateway"
UNIT = "hour"

ERROR_FIELDS = {"message", "type", "param", "code"}


# -- the table ---------------------------------------------------------------------------

def refusal_rows():
    """docs/contract.md's refusal table: one namespace per row."""
    with open(os.path.join(ROOT, "docs", "contract.md")) as f:
        doc = f.read()
    section = doc.split("\n## Refusals\n", 1)[1].split("\n## ", 1)[0]
    lines = [l for l in section.splitlines() if l.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:7] == ["case", "status", "`type`", "`code`", "message (shape)", "audit `reason`",
                          "SDK exception"], header
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        codes = re.findall(r"`([a-z_]+)`", cells[3])
        rows.append(SimpleNamespace(
            case=cells[0],
            status=int(cells[1]),
            type=cells[2].strip("`"),
            codes=codes or [None],  # "null": OpenAI's `"code": null`
            reasons=re.findall(r"`([a-z_]+)`", cells[5]),
            exception=getattr(openai, cells[6].strip("`")),
        ))
    return rows


ROWS = refusal_rows()


def row_id(row):
    return f"{row.reasons[0]}-{row.codes[0]}"


# -- gateways ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gw():
    """The demo configuration with a short body timeout, a 64 KiB body limit and one
    tenant per limit (each touched by one test only)."""
    cfg = demo_config()
    cfg["routing"] = {"hold_timeout_ms": HOLD_MS}
    cfg["limits"]["max_request_body_bytes"] = BODY_LIMIT
    tenants = {
        "e-req": add_tenant(cfg, "e-req", {"requests_per_minute": 1, "request_burst": 1}),
        "e-tok": add_tenant(cfg, "e-tok", {"tokens_per_minute": 60, "token_burst": 300}),
        "e-burst": add_tenant(cfg, "e-burst", {"tokens_per_minute": 60, "token_burst": 100}),
        "e-inflight": add_tenant(cfg, "e-inflight", None, max_in_flight=1),
        "e-streams": add_tenant(cfg, "e-streams", None, max_in_flight=4, max_streams=1),
        "e-budget": add_tenant(cfg, "e-budget", None, budget={"usd_per_day": 0.000001}),
    }
    for t in cfg["tenants"]:
        if "quota" in t and t["quota"] is None:
            del t["quota"]
    with Topology(plugin_config=cfg, concurrency=2) as topo:
        topo.tenants = tenants
        yield topo


@pytest.fixture(scope="module")
def gw_by_path():
    """Headers not held (routed by path), each model pinned to its clusters."""
    cfg = demo_config()
    cfg["routing"] = {"hold_headers_for_body": False}
    for m in cfg["models"]:
        m["clusters"] = (["chat-llama3-8b-v1", "chat-llama3-8b-v2"]
                         if m["name"] == "llama3-8b" else ["embed-bge-small-v1"])
    with Topology(plugin_config=cfg, concurrency=1) as topo:
        yield topo


GLOBAL_TENANTS = {
    "g-synced-req": {"global": {"unit": UNIT, "requests": 1}},
    "g-strict-req": {"global": {"unit": UNIT, "requests": 1, "mode": "strict"}},
    "g-synced-tok": {"global": {"unit": UNIT, "tokens": 300}},
    "g-strict-tok": {"global": {"unit": UNIT, "tokens": 300, "mode": "strict"}},
    "g-strict-closed": {"global": {"unit": UNIT, "requests": 100_000, "mode": "strict",
                                   "on_unavailable": "closed"}},
}


@pytest.fixture(scope="module")
def stack():
    """One replica in front of the rate limit service and Redis, with global tenants."""
    cfg = demo_config()
    cfg["global_quota"] = {"cluster": "ratelimit", "domain": DOMAIN, "expected_replicas": 1,
                           "sync_interval_ms": 200, "timeout_ms": 1000}
    tenants = {name: add_tenant(cfg, name, quota) for name, quota in GLOBAL_TENANTS.items()}
    with RedisServer() as redis, RateLimitService(domain_config(DOMAIN), redis.url) as rls, \
            GlobalTopology(cfg, replicas=1, rls_port=rls.port, concurrency=1) as topo:
        replica = topo[0]
        replica.tenants = tenants
        yield SimpleNamespace(gw=replica, rls=rls)


# -- the SDK -----------------------------------------------------------------------------

def sdk(gw, host=HOST_A, key=KEY_A, tenant=None, headers=None, **kw):
    if tenant is not None:
        host, key = gw.tenants[tenant]
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=key,
                         default_headers={"Host": host, **(headers or {})}, max_retries=0, **kw)


def new_rid():
    return f"err-{uuid.uuid4().hex[:12]}"


def chat(client, rid, model="llama3-8b", **kw):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": kw.pop("content", "hello gateway")}],
        extra_headers={"x-request-id": rid}, **kw)


def refused(row, call):
    """Run `call`, which must raise exactly the row's SDK exception; check the error
    against the row and return it."""
    with pytest.raises(openai.APIStatusError) as info:
        call()
    return check(row, info.value)


def check(row, e):
    """The SDK's exception `e` is the row's: class, status, type, code, envelope."""
    assert type(e) is row.exception, (type(e).__name__, e.status_code, e.body)
    assert e.status_code == row.status, e.body
    # OpenAI's four fields, `code` present even when it is null.
    assert set(e.body) == ERROR_FIELDS, e.body
    assert e.type == row.type, e.body
    assert e.code in row.codes, (e.code, row.codes, e.body)
    assert isinstance(e.body["message"], str) and e.body["message"], e.body
    assert e.response.headers["content-type"].startswith("application/json")
    assert e.request_id == e.response.headers["x-request-id"] and e.request_id
    return e


def audited(gw, rid, row, reason=None):
    """The refused request's audit record carries the row's reason and status."""
    _, aud = wait_request_id(gw, rid)
    assert aud["decision"] == "deny", aud
    assert aud["reason"] == (reason or row.reasons[0]), aud
    assert aud["reason"] in row.reasons, aud
    assert aud["http_status"] == row.status, aud
    return aud


def drop_credentials(request):
    """httpx request hook: the SDK always sends `Authorization: Bearer <api_key>`."""
    for name in ("authorization", "x-api-key", "api-key"):
        if name in request.headers:
            del request.headers[name]


class LateBody(httpx.SyncByteStream):
    """The request body `delay_s` after the headers (which carry its Content-Length)."""

    def __init__(self, data, delay_s):
        self.data, self.delay_s = data, delay_s

    def __iter__(self):
        time.sleep(self.delay_s)
        yield self.data


def late_body(delay_s):
    def hook(request):
        request.read()
        request.stream = LateBody(request.content, delay_s)
    return hook


def hold_a_slot(gw, tenant, stream=False):
    """A request of `tenant` the mock holds for SLOW_MS, in a thread; returns the thread."""
    host, key = gw.tenants[tenant]
    headers = {"Host": host, "Authorization": f"Bearer {key}", "Content-Type": "application/json",
               "x-mock-ttft-ms": str(SLOW_MS)}
    body = json.dumps(chat_body(stream=stream, max_tokens=2) if stream else chat_body(max_tokens=2))
    out = {}

    def run():
        r = requests.post(gw.base_url + CHAT, data=body, headers=headers, timeout=60)
        out["status"] = r.status_code

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.out = out
    return t


def refused_while_full(row, gw, tenant, stream=False):
    """Hold one slot, then call until the SDK is refused (the held request is admitted a
    moment after it is sent; until then a call may pass)."""
    holder = hold_a_slot(gw, tenant, stream=stream)
    client = sdk(gw, tenant=tenant)
    rid, e = None, None
    deadline = time.monotonic() + SLOW_MS / 1000
    while e is None and time.monotonic() < deadline:
        rid = new_rid()
        try:
            if stream:
                for _ in chat(client, rid, stream=True, max_tokens=2):
                    pass
            else:
                chat(client, rid, max_tokens=2)
        except openai.APIStatusError as err:
            e = err
    assert e is not None, "the held request never filled the tenant's slot"
    check(row, e)
    holder.join(timeout=60)
    assert holder.out.get("status") == 200, holder.out
    return rid, e


# -- one driver per row ------------------------------------------------------------------

def missing_credentials(row, ctx):
    gw = ctx.gw()
    client = sdk(gw, http_client=httpx.Client(event_hooks={"request": [drop_credentials]}))
    rid = new_rid()
    e = refused(row, lambda: chat(client, rid))
    assert e.code is None and e.body["code"] is None, e.body
    msg = e.body["message"]
    assert msg.startswith("You didn't provide an API key."), msg
    for name in ("Authorization", "x-api-key", "api-key"):
        assert name in msg, msg
    assert e.response.headers["www-authenticate"].startswith("Bearer")
    audited(gw, rid, row)


def invalid_credentials(row, ctx):
    gw = ctx.gw()
    rid = new_rid()
    e = refused(row, lambda: chat(sdk(gw, key="sk-canary-0123456789"), rid))
    assert e.body["message"].startswith("Incorrect API key provided."), e.body
    assert "canary" not in e.response.text and "0123" not in e.response.text
    assert e.response.headers["www-authenticate"].startswith("Bearer")
    audited(gw, rid, row)


def conflicting_credentials(row, ctx):
    gw = ctx.gw()
    rid = new_rid()
    client = sdk(gw, headers={"x-api-key": KEY_B})
    e = refused(row, lambda: chat(client, rid))
    assert KEY_B not in e.response.text
    audited(gw, rid, row)


def host_mismatch(row, ctx):
    gw = ctx.gw()
    rid = new_rid()
    client = sdk(gw, host=HOST_A, key=KEY_B)
    e = refused(row, lambda: client.embeddings.create(model="bge-small", input="x",
                                                      extra_headers={"x-request-id": rid}))
    assert "hostname" in e.body["message"]
    audited(gw, rid, row)


def route_forbidden(row, ctx):
    gw = ctx.gw()
    rid = new_rid()
    refused(row, lambda: chat(sdk(gw, host=HOST_B, key=KEY_B), rid))
    audited(gw, rid, row)


def model_forbidden(row, ctx):
    """A model nobody serves and a model the tenant may not use: one answer."""
    gw = ctx.gw()
    shape = "The model `{}` does not exist or you do not have access to it."
    rid = new_rid()
    unknown = refused(row, lambda: chat(sdk(gw), rid, model="gpt-4o"))
    assert unknown.body["message"] == shape.format("gpt-4o"), unknown.body
    audited(gw, rid, row)

    rid = new_rid()
    client = sdk(gw, host=HOST_B, key=KEY_B)
    not_allowed = refused(row, lambda: client.embeddings.create(
        model="llama3-8b", input="x", extra_headers={"x-request-id": rid}))
    assert not_allowed.body["message"] == shape.format("llama3-8b"), not_allowed.body
    audited(gw, rid, row)
    assert {**unknown.body, "message": None} == {**not_allowed.body, "message": None}

    # A name the message should not repeat: too long, or with quotes or backticks.
    generic = "The model does not exist or you do not have access to it."
    for model in ["m" * 129, "gpt`4o", 'gpt"4o', "modèle"]:
        rid = new_rid()
        e = refused(row, lambda: chat(sdk(gw), rid, model=model))
        assert e.body["message"] == generic, (model, e.body)
        audited(gw, rid, row)


def route_not_found(row, ctx):
    gw = ctx.gw()
    rid = new_rid()
    e = refused(row, lambda: sdk(gw).files.list(extra_headers={"x-request-id": rid}))
    assert e.body["message"].startswith("Invalid URL"), e.body
    audited(gw, rid, row)


def invalid_path(row, ctx):
    gw = ctx.gw()
    rid = new_rid()
    refused(row, lambda: sdk(gw).post("/chat/completions%252e%252e", cast_to=object, body=chat_body(),
                                      options={"headers": {"x-request-id": rid}}))
    audited(gw, rid, row)


def invalid_body(row, ctx):
    gw = ctx.gw()
    client = sdk(gw)
    cases = [
        # (call, code, param)
        (lambda rid: client.chat.completions.create(model="llama3-8b", messages="hi",
                                                    extra_headers={"x-request-id": rid}),
         "invalid_type", "messages"),
        (lambda rid: client.post("/embeddings", cast_to=object, body={"input": "x"},
                                 options={"headers": {"x-request-id": rid}}),
         "missing_model", "model"),
        (lambda rid: client.post("/chat/completions", cast_to=object, body=["llama3-8b"],
                                 options={"headers": {"x-request-id": rid}}),
         "invalid_body", None),
    ]
    for call, code, param in cases:
        rid = new_rid()
        e = refused(row, lambda: call(rid))
        assert (e.code, e.param) == (code, param), e.body
        audited(gw, rid, row)


def quota_exceeds_burst(row, ctx):
    gw = ctx.gw()
    rid = new_rid()
    e = refused(row, lambda: chat(sdk(gw, tenant="e-burst"), rid, max_tokens=1000))
    assert "Retrying will not help" in e.body["message"], e.body
    audited(gw, rid, row, reason="quota_tokens")


def model_not_on_route(row, ctx):
    gw = ctx.gw_by_path()
    rid = new_rid()
    refused(row, lambda: chat(sdk(gw), rid, model="bge-small"))
    audited(gw, rid, row)


def method_not_allowed(row, ctx):
    gw = ctx.gw()
    rid = new_rid()
    e = refused(row, lambda: sdk(gw).get("/chat/completions", cast_to=object,
                                         options={"headers": {"x-request-id": rid}}))
    assert e.response.headers["allow"] == "POST"
    audited(gw, rid, row)


def body_timeout(row, ctx):
    gw = ctx.gw()
    client = sdk(gw, http_client=httpx.Client(event_hooks={"request": [late_body(HOLD_MS / 1000 * 4)]}))
    rid = new_rid()
    e = refused(row, lambda: chat(client, rid))
    assert f"{HOLD_MS} ms" in e.body["message"], e.body
    audited(gw, rid, row)


def body_too_large(row, ctx):
    gw = ctx.gw()
    rid = new_rid()
    e = refused(row, lambda: chat(sdk(gw), rid, content="x" * (BODY_LIMIT + 1)))
    assert str(BODY_LIMIT) in e.body["message"], e.body
    audited(gw, rid, row)


def until_limited(row, gw, client, **kw):
    """Call until the rate limit refuses (the second call for these buckets; bounded)."""
    for _ in range(4):
        rid = new_rid()
        try:
            chat(client, rid, **kw)
        except openai.APIStatusError as err:
            e = check(row, err)
            check_retry_headers(e.response.headers)
            audited(gw, rid, row)
            return e
    pytest.fail("the rate limit never refused")


def rate_limit(row, ctx):
    """The row's bucket, local, global (synced) and strict: the same answer."""
    kind = row.type  # `requests` or `tokens`
    gw = ctx.gw()
    local = {"requests": "e-req", "tokens": "e-tok"}[kind]
    kw = {"max_tokens": 200} if kind == "tokens" else {"max_tokens": 2}
    e = until_limited(row, gw, sdk(gw, tenant=local), **kw)
    assert kind in e.body["message"] and local in e.body["message"], e.body

    st = ctx.stack()
    leave_window_edge(UNIT, 30)  # both calls in one window of the service
    for mode in ("synced", "strict"):
        tenant = f"g-{mode}-{kind[:3]}"
        e = until_limited(row, st.gw, sdk(st.gw, tenant=tenant), **kw)
        assert kind in e.body["message"] and "across all gateways" in e.body["message"], e.body


def concurrency_in_flight(row, ctx):
    gw = ctx.gw()
    rid, e = refused_while_full(row, gw, "e-inflight")
    assert e.response.headers["retry-after"] == "1"
    assert "1 requests in flight" in e.body["message"], e.body
    audited(gw, rid, row)


def concurrency_streams(row, ctx):
    gw = ctx.gw()
    rid, e = refused_while_full(row, gw, "e-streams", stream=True)
    assert e.response.headers["retry-after"] == "1"
    assert "streaming requests" in e.body["message"], e.body
    audited(gw, rid, row)


def budget_exceeded(row, ctx):
    gw = ctx.gw()
    rid = new_rid()
    e = refused(row, lambda: chat(sdk(gw, tenant="e-budget"), rid, max_tokens=4))
    assert e.response.headers["x-should-retry"] == "false"
    assert e.response.headers["x-ai-budget-period"] == "day"
    audited(gw, rid, row)


def not_configured(row, ctx):
    """Never sent through Envoy 1.40: a configuration the filter refuses fails the plugin,
    so Envoy does not start with it (and keeps the previous one on a push); the reply
    itself is checked by the core tests (`lifecycle::request`, `deny`). Proved here: the
    gateway never serves a request without a configuration."""
    with pytest.raises(LaunchError) as info:
        with Topology(plugin_config={"routes": "not a list"}, concurrency=1):
            pass
    assert "invalid plugin configuration" in str(info.value)


def quota_unavailable(row, ctx):
    """A strict tenant that fails closed while the rate limit service is down."""
    st = ctx.stack()
    client = sdk(st.gw, tenant="g-strict-closed")
    chat(client, new_rid(), max_tokens=2)  # admitted while the service is up
    st.rls.stop()
    try:
        rid = new_rid()
        e = refused(row, lambda: chat(client, rid, max_tokens=2))
        assert "quota service" in e.body["message"], e.body
        audited(st.gw, rid, row)
    finally:
        st.rls.start()


DRIVERS = {
    ("missing_credentials", None): missing_credentials,
    ("invalid_credentials", "invalid_api_key"): invalid_credentials,
    ("conflicting_credentials", "conflicting_credentials"): conflicting_credentials,
    ("host_mismatch", "host_mismatch"): host_mismatch,
    ("route_forbidden", "route_forbidden"): route_forbidden,
    ("model_forbidden", "model_not_found"): model_forbidden,
    ("route_not_found", "route_not_found"): route_not_found,
    ("invalid_path", "invalid_path"): invalid_path,
    ("invalid_body", "empty_body"): invalid_body,
    ("quota_requests", "quota_exceeds_burst"): quota_exceeds_burst,
    ("model_not_on_route", "model_not_on_route"): model_not_on_route,
    ("method_not_allowed", "method_not_allowed"): method_not_allowed,
    ("body_timeout", "request_timeout"): body_timeout,
    ("body_too_large", "request_too_large"): body_too_large,
    ("quota_requests", "rate_limit_exceeded"): rate_limit,
    ("quota_tokens", "rate_limit_exceeded"): rate_limit,
    ("concurrency_in_flight", "too_many_requests_in_flight"): concurrency_in_flight,
    ("concurrency_streams", "too_many_streams"): concurrency_streams,
    ("budget_exceeded", "insufficient_quota"): budget_exceeded,
    ("not_configured", "not_configured"): not_configured,
    ("quota_unavailable", "quota_unavailable"): quota_unavailable,
}


def test_the_table_has_a_driver_for_each_row_and_no_other():
    keys = [(row.reasons[0], row.codes[0]) for row in ROWS]
    assert len(keys) == len(set(keys)), keys
    assert set(keys) == set(DRIVERS), (set(keys) ^ set(DRIVERS))


@pytest.mark.parametrize("row", ROWS, ids=[row_id(r) for r in ROWS])
def test_refusal_through_the_sdk(row, request):
    driver = DRIVERS.get((row.reasons[0], row.codes[0]))
    assert driver is not None, f"no driver for the table's row {row.case!r}"
    ctx = SimpleNamespace(gw=lambda: request.getfixturevalue("gw"),
                          gw_by_path=lambda: request.getfixturevalue("gw_by_path"),
                          stack=lambda: request.getfixturevalue("stack"))
    driver(row, ctx)
