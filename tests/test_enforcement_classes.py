"""Ways around authorization, quotas and records, each closed as a class, against the real
Envoy 1.40 with the built module and the mock backends.

- a client-controlled delay never changes what is enforced (408, never routed by path);
- other methods never skip the body; routes refuse methods they do not serve (405);
- the shared API domain serves any authenticated tenant (the official SDK, a bare key);
- a client's `x-jwt-payload` never reaches a backend;
- once forwarded, a request is charged (aborts, upstream timeouts);
- compressed responses do not hide usage;
- per-tenant concurrency limits, exact across workers, released on every end;
- request ids are the gateway's own, unique, and on every response.
"""
import hashlib
import json
import socket
import time
import uuid

import openai
import pytest

from client import HOST_A, HOST_B, KEY_A, KEY_B, assert_openai_error, call, chat_body
from conftest import demo_config
from harness.launcher import Topology
from openai_helpers import PatchedTopology, hcm
from quota_support import burst, wait_request_id

CHAT = "/v1/chat/completions"
HOLD_MS = 300
KEY_C = "sk-tenant-c-limits"  # tenant-c: no hostname, max_in_flight 2, max_streams 1


def received(resp):
    return json.loads(resp.headers["x-mock-received"])


def rid():
    return f"cls-{uuid.uuid4().hex[:12]}"


def one_record(gw, client_rid):
    """The one gateway and one audit record of the request sent with `client_rid`."""
    return wait_request_id(gw, client_rid)


def config(edit):
    cfg = demo_config()
    edit(cfg)
    return cfg


@pytest.fixture(scope="module")
def gw():
    """The demo configuration with a short body timeout, a quota tenant for charging
    checks and a tenant with concurrency limits."""
    def edit(cfg):
        cfg["routing"] = {"hold_timeout_ms": HOLD_MS}
        cfg["tenants"].append({
            "name": "tenant-c",
            "api_keys": [{"id": "svc:c", "sha256": hashlib.sha256(KEY_C.encode()).hexdigest()}],
            "max_in_flight": 2,
            "max_streams": 1,
        })
    with Topology(plugin_config=config(edit), concurrency=2) as topo:
        yield topo


# -- 1. a slow client ------------------------------------------------------------------

def slow_body(gw, body, delay_s, client_rid):
    """Headers first, the body `delay_s` later, on one connection; the response."""
    data = json.dumps(body).encode()
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: {HOST_A}\r\nAuthorization: Bearer {KEY_A}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"x-request-id: {client_rid}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gw.gateway_port), timeout=15) as s:
        s.sendall(head)
        time.sleep(delay_s)
        try:
            s.sendall(data)
        except OSError:
            pass  # the gateway may already have answered and closed
        chunks = []
        while True:
            try:
                c = s.recv(65536)
            except OSError:
                break
            if not c:
                break
            chunks.append(c)
    raw = b"".join(chunks)
    status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1") else None
    return status, raw


def test_a_late_body_is_refused_with_408_and_never_routed_by_path(gw):
    for _ in range(4):  # more than any "give up holding" threshold
        r_id = rid()
        status, raw = slow_body(gw, chat_body(model="bge-small"), HOLD_MS / 1000 * 3, r_id)
        assert status == 408, raw[:300]
        assert b'"request_timeout"' in raw
        rec, aud = one_record(gw, r_id)
        assert (aud["decision"], aud["reason"], aud["http_status"]) == ("deny", "body_timeout", 408)
        assert rec["model_route"] is None, "nothing reached a backend"
        assert f"x-request-id: {rec['request_id']}".encode() in raw.lower()
    # Other requests, and later ones, are held and routed by model exactly as before.
    r = call(gw, CHAT, chat_body(model="bge-small"))
    assert r.status_code == 200, r.text
    assert r.headers["x-backend"].startswith("embed-bge-small")
    assert received(r)["x-ai-model"] == ["bge-small"]


def test_without_header_hold_a_model_pinned_elsewhere_is_refused():
    def edit(cfg):
        cfg["routing"] = {"hold_headers_for_body": False}
        for m in cfg["models"]:
            m["clusters"] = (["chat-llama3-8b-v1", "chat-llama3-8b-v2"]
                             if m["name"] == "llama3-8b" else ["embed-bge-small-v1"])
    with Topology(plugin_config=config(edit), concurrency=1) as topo:
        # The chat path routes to the chat backend, which does not serve bge-small.
        r = call(topo, CHAT, chat_body(model="bge-small"))
        assert_openai_error(r, 400, "model_not_on_route")
        r = call(topo, CHAT, chat_body(model="llama3-8b"))
        assert r.status_code == 200, r.text
        assert "x-ai-model" not in received(r), "the model header comes too late to route"
        assert "hold_headers_for_body is false" in topo.envoy_output()


# -- 2. other methods ------------------------------------------------------------------

@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "GET"])
def test_body_routes_refuse_other_methods_with_405(gw, method):
    r_id = rid()
    r = call(gw, CHAT, chat_body(model="not-allowed"), method=method, headers={"x-request-id": r_id})
    assert_openai_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"
    rec, aud = one_record(gw, r_id)
    assert (aud["decision"], aud["reason"]) == ("deny", "method_not_allowed")
    assert rec["model_route"] is None


def test_a_route_serving_another_method_still_parses_its_body():
    def edit(cfg):
        cfg["routes"][0]["methods"] = ["POST", "DELETE"]
    with Topology(plugin_config=config(edit), concurrency=1) as topo:
        r = call(topo, CHAT, chat_body(model="gpt-4o"), method="DELETE")
        assert r.status_code == 404, r.text  # the model allowlist applied (model_not_found)
        # An allowed model goes on, authorised and routed by model (the mock itself
        # serves no DELETE and says so).
        r = call(topo, CHAT, chat_body(), method="DELETE")
        assert r.status_code == 404 and "mock-llm: no route for DELETE" in r.text, r.text
        assert received(r)["x-ai-model"] == ["llama3-8b"]


# -- 3. the shared API domain ----------------------------------------------------------

def test_the_openai_sdk_with_just_a_key_on_the_shared_domain(gw):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{gw.gateway_port}/v1", api_key=KEY_A,
                           max_retries=0)
    resp = client.chat.completions.with_raw_response.create(
        model="llama3-8b", messages=[{"role": "user", "content": "hello"}])
    out = resp.parse()
    assert out.choices[0].message.content
    assert resp.headers["x-request-id"] == resp.request_id
    # tenant-b (bound to its hostname, not restricted to it) is served there too ...
    r = call(gw, "/v1/embeddings", {"model": "bge-small", "input": "x"}, host="api.ai.example.com", key=KEY_B)
    assert r.status_code == 200, r.text
    # ... while a tenant hostname still refuses other tenants' credentials.
    r = call(gw, CHAT, chat_body(), host=HOST_B, key=KEY_A)
    assert_openai_error(r, 403, "host_mismatch")


def test_own_hosts_only_and_a_refusing_unowned_policy():
    def edit(cfg):
        cfg["tenants"][1]["own_hosts_only"] = True
        cfg["identity"] = {"shared_hosts": ["api.ai.example.com"], "unowned_hosts": "refuse"}
    with Topology(plugin_config=config(edit), concurrency=1) as topo:
        emb = {"model": "bge-small", "input": "x"}
        assert call(topo, CHAT, chat_body(), host="api.ai.example.com").status_code == 200
        assert_openai_error(call(topo, CHAT, chat_body(), host="127.0.0.1"), 403, "host_mismatch")
        r = call(topo, "/v1/embeddings", emb, host="api.ai.example.com", key=KEY_B)
        assert_openai_error(r, 403, "host_mismatch")
        assert call(topo, "/v1/embeddings", emb, host=HOST_B, key=KEY_B).status_code == 200


# -- 4. x-jwt-payload ------------------------------------------------------------------

def test_a_client_jwt_payload_never_reaches_the_backend(gw):
    r = call(gw, CHAT, chat_body(), headers={"x-jwt-payload": "eyJ0ZW5hbnQiOiJ0ZW5hbnQtYiJ9"})
    assert r.status_code == 200, r.text
    assert "x-jwt-payload" not in received(r)


# -- 5. aborts and timeouts are charged ------------------------------------------------

def test_once_forwarded_aborts_and_timeouts_are_charged_the_prompt(gw):
    prompt = "word " * 400  # ~500 estimated tokens
    # The client goes away while the backend works (no response started).
    r_abort = rid()
    body = json.dumps(chat_body(prompt)).encode()
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: {HOST_A}\r\nAuthorization: Bearer {KEY_A}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"x-request-id: {r_abort}\r\nx-mock-ttft-ms: 3000\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gw.gateway_port), timeout=10) as s:
        s.sendall(head + body)
        time.sleep(0.5)
    rec, aud = one_record(gw, r_abort)
    assert aud["decision"] == "allow" and rec["model_route"] is not None
    assert rec["prompt_tokens"] and rec["prompt_tokens"] > 400, rec
    assert rec["usage_estimated"] is True
    # A backend's own error is not billed.
    r_err = rid()
    r = call(gw, CHAT, chat_body(prompt), headers={"x-request-id": r_err, "x-mock-status": "500"})
    assert r.status_code == 500
    rec, _ = one_record(gw, r_err)
    assert rec["prompt_tokens"] is None and rec["estimated_cost_usd"] is None


def short_route_timeouts(doc):
    """Every route answers 504 after 300 ms: Envoy's own upstream timeout."""
    for vh in hcm(doc)["route_config"]["virtual_hosts"]:
        for r in vh["routes"]:
            if "route" in r:
                r["route"]["timeout"] = "0.3s"


def test_an_upstream_timeout_after_the_request_left_is_charged_the_prompt():
    with PatchedTopology(patch=short_route_timeouts, plugin_config=demo_config(), concurrency=1) as topo:
        r_id = rid()
        r = call(topo, CHAT, chat_body("word " * 400), headers={"x-request-id": r_id, "x-mock-ttft-ms": "3000"})
        assert r.status_code == 504, r.text
        rec, aud = one_record(topo, r_id)
        assert aud["decision"] == "allow" and rec["http_status"] == 504
        assert rec["prompt_tokens"] > 400 and rec["usage_estimated"] is True, rec


# -- 7. compressed responses -----------------------------------------------------------

def test_backends_are_asked_for_identity_and_compressed_answers_are_charged_in_full(gw):
    r_id = rid()
    r = call(gw, CHAT, chat_body(max_tokens=40), headers={
        "x-request-id": r_id, "Accept-Encoding": "gzip, br", "x-mock-compress": "if-accepted"})
    assert r.status_code == 200, r.text
    assert r.headers["x-mock-accept-encoding"] == "none"
    assert "content-encoding" not in r.headers
    rec, _ = one_record(gw, r_id)
    assert rec["usage_estimated"] is False and rec["completion_tokens"] > 0
    # A backend that compresses anyway: its usage is unreadable, so the bound is charged.
    r_id = rid()
    r = call(gw, CHAT, chat_body(max_tokens=40), headers={
        "x-request-id": r_id, "Accept-Encoding": "gzip", "x-mock-compress": "always"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip" and r.json()["usage"]  # requests decodes
    rec, _ = one_record(gw, r_id)
    assert rec["usage_estimated"] is True and rec["completion_tokens"] == 40, rec


# -- 8. concurrency --------------------------------------------------------------------

def slow_requests(gw, n, stream=False, ttft_ms=4000):
    """`n` requests of tenant-c at once, each held open by the backend for `ttft_ms` (long
    enough that all arrive while the first ones are still in flight)."""
    headers = {"Host": "api.ai.example.com", "Authorization": f"Bearer {KEY_C}",
               "x-mock-ttft-ms": str(ttft_ms)}
    body = chat_body(stream=stream) if stream else chat_body()
    return burst(gw.base_url, [(CHAT, headers, body)] * n, stream=stream)


def chat_upstream_active(gw):
    """Requests Envoy is forwarding to the chat backends right now."""
    total = 0
    for line in gw.admin("/stats?filter=upstream_rq_active").splitlines():
        name, _, value = line.partition(": ")
        if name in ("cluster.chat-llama3-8b-v1.upstream_rq_active",
                    "cluster.chat-llama3-8b-v2.upstream_rq_active"):
            total += int(value)
    return total


def test_max_in_flight_is_exact_across_workers_and_released_on_every_end(gw):
    for _ in range(2):  # twice: the first round's slots all came back
        out = slow_requests(gw, 8)
        statuses = sorted(s for s, _, _ in out)
        assert statuses == [200, 200] + [429] * 6, statuses
        refused = [json.loads(b)["error"] for s, _, b in out if s == 429]
        assert {(e["type"], e["code"]) for e in refused} == {("requests", "too_many_requests_in_flight")}
        assert all(h["retry-after"] == "1" for s, h, _ in out if s == 429)
    # Aborted requests give their slots back too.
    socks = []
    body = json.dumps(chat_body()).encode()
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", gw.gateway_port), timeout=10)
        s.sendall((f"POST {CHAT} HTTP/1.1\r\nHost: api.ai.example.com\r\nAuthorization: Bearer {KEY_C}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                   f"x-mock-ttft-ms: 30000\r\n\r\n").encode() + body)
        socks.append(s)
    # Once both are admitted (forwarded: Envoy counts them as active upstream requests),
    # the tenant is full. Waiting for that, rather than probing with requests of our own,
    # keeps a probe from taking a slot before the second one arrives.
    deadline = time.monotonic() + 10
    while chat_upstream_active(gw) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert chat_upstream_active(gw) == 2, "both held-open requests were admitted"
    r = call(gw, CHAT, chat_body(), host="api.ai.example.com", key=KEY_C)
    assert_openai_error(r, 429, "too_many_requests_in_flight")
    for s in socks:
        s.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = call(gw, CHAT, chat_body(), host="api.ai.example.com", key=KEY_C)
        if r.status_code == 200:
            break
        time.sleep(0.1)
    assert r.status_code == 200, r.text
    # Another tenant is not held up by tenant-c's slow requests.
    assert call(gw, CHAT, chat_body()).status_code == 200


def test_max_streams_limits_streams_within_in_flight(gw):
    out = slow_requests(gw, 4, stream=True)
    statuses = sorted(s for s, _, _ in out)
    assert statuses == [200] + [429] * 3, statuses
    codes = {(json.loads(b)["error"]["type"], json.loads(b)["error"]["code"]) for s, _, b in out if s == 429}
    assert codes == {("requests", "too_many_streams")}


def test_concurrency_refusals_are_counted(gw):
    text = gw.admin("/stats/prometheus")
    line = [ln for ln in text.splitlines()
            if ln.startswith("ai_gateway_quota_rejections_total") and 'kind="in_flight"' in ln]
    assert line and 'tenant="tenant-c"' in line[0], line


# -- 9. request ids --------------------------------------------------------------------

def test_request_ids_are_the_gateways_unique_and_on_every_response(gw):
    shared = rid()
    r1 = call(gw, CHAT, chat_body(), headers={"x-request-id": shared})
    r2 = call(gw, "/v1/embeddings", {"model": "bge-small", "input": "x"}, host=HOST_B, key=KEY_B,
              headers={"x-request-id": shared})
    r3 = call(gw, CHAT, chat_body(), key="sk-wrong", headers={"x-request-id": shared})
    assert (r1.status_code, r2.status_code, r3.status_code) == (200, 200, 401)
    ids = {r.headers["x-request-id"] for r in (r1, r2, r3)}
    assert len(ids) == 3 and shared not in ids
    deadline = time.monotonic() + 10
    while True:
        recs = [x for x in gw.records() if x.get("client_request_id") == shared]
        auds = [x for x in gw.audits() if x.get("client_request_id") == shared]
        if (len(recs) >= 3 and len(auds) >= 3) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(recs) == 3 and len(auds) == 3
    assert {x["request_id"] for x in recs} == ids == {a["request_id"] for a in auds}
    # The backend got the same id the records carry.
    assert received(r1)["x-request-id"] == [r1.headers["x-request-id"]]
