"""Abuse against the real gateway (Envoy 1.40 + the built module).

Every hostile input gets a clear answer — an OpenAI-shaped error from the filter, Envoy's
own refusal where Envoy's codec or path normalization decides first (they are part of the
system under test), or a correct pass — and after every test the Wasm VM is still the one
that started (no trap, no reload) and another tenant is still served.

Runs with the bootstrap's default FAIL_CLOSED policy. Under it a trapped VM bumps no counter
(calibrated with a deliberately panicking module, see rawhttp.py), so "alive" is checked as:
Envoy's wasm runtime stats unchanged, no VM-failure line in Envoy's log, and the very next
requests answered properly by the filter.
"""
import concurrent.futures as cf
import hashlib
import http.client
import json
import socket
import time
import uuid

import pytest

from client import ANY, HOST_A, HOST_B, KEY_A, KEY_B, call, chat_body
from conftest import demo_config
from harness.launcher import Topology
from rawhttp import (exchange, metric_series, one_each, parse_response, read_response,
                     request_bytes, vm_failure_lines, vm_stats)

HOST_C = "tenant-c.ai.example.com"
KEY_C = "sk-tenant-c-abuse"
LIMIT = 4 * 1024 * 1024  # limits.max_request_body_bytes in filters/demo.json
CHAT = "/v1/chat/completions"
TRUSTED = ["x-ai-tenant", "x-ai-subject", "x-ai-model", "x-gateway-model-name", "x-ai-traffic-class"]


def abuse_config():
    """The demo configuration with quotas wide enough that abuse volume never turns into
    429s, plus tenant-c for the quota-arithmetic cases (so they cannot starve the others)."""
    cfg = demo_config()
    a, b = cfg["tenants"]
    a["quota"].update(requests_per_minute=600000, request_burst=100000,
                      tokens_per_minute=20000000, token_burst=20000000)
    b["quota"] = {"requests_per_minute": 600000, "request_burst": 100000,
                  "tokens_per_minute": 2000000, "token_burst": 2000000}
    cfg["tenants"].append({
        "name": "tenant-c",
        "hosts": [HOST_C],
        "api_keys": [{"id": "svc:abuse", "sha256": hashlib.sha256(KEY_C.encode()).hexdigest()}],
        "models": ["llama3-8b"],
        "quota": {"requests_per_minute": 6000, "request_burst": 1000,
                  "tokens_per_minute": 2000000, "token_burst": 4000000},
    })
    return cfg


@pytest.fixture(scope="module")
def gw():
    with Topology(plugin_config=abuse_config(), concurrency=2) as topo:
        r = call(topo, CHAT, chat_body())  # warm both the VM and the series
        assert r.status_code == 200, r.text
        topo.vm_baseline = vm_stats(topo)
        yield topo


def rid(tag):
    return f"abuse-{tag}-{uuid.uuid4().hex[:12]}"


def assert_alive(gw):
    """Same VM, no trap logged, and tenant-b (embeddings) and tenant-a still served."""
    assert vm_stats(gw) == gw.vm_baseline, "Envoy's wasm runtime stats changed"
    assert vm_failure_lines(gw) == [], vm_failure_lines(gw)[:5]
    r = call(gw, "/v1/embeddings", {"model": "bge-small", "input": "still here"}, host=HOST_B, key=KEY_B)
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "list"
    r = call(gw, "/v1/models")
    assert r.status_code == 200, r.text


def openai_error(resp, status, code=ANY):
    """assert_openai_error for a RawResponse (`code=None` checks for a JSON null)."""
    assert resp.status == status, resp
    assert resp.header("content-type").startswith("application/json"), resp.headers
    err = resp.json()["error"]
    assert err["message"] and err["type"] and "code" in err
    if code is not ANY:
        assert err["code"] == code, err
    return err


def base_headers(host=HOST_A, key=KEY_A, request_id=None):
    h = [("Host", host)]
    if key:
        h.append(("Authorization", f"Bearer {key}"))
    if request_id:
        h.append(("x-request-id", request_id))
    return h


def upstream_requests(gw):
    """Requests Envoy sent to any backend (cluster.*.upstream_rq_total)."""
    total = 0
    for line in gw.admin("/stats?filter=upstream_rq_total").splitlines():
        name, _, value = line.partition(": ")
        if name.startswith("cluster.") and name.endswith(".upstream_rq_total"):
            total += int(value)
    return total


# -- header smuggling and spoofing ------------------------------------------------------

SPOOF = [
    ("X-AI-TENANT", "tenant-b"), ("x-Ai-Tenant", "tenant-b"), ("x-ai-tenant", "root"),
    ("X-Ai-Subject", "svc:root"), ("x-ai-subject", "svc:root"),
    ("X-AI-Model", "bge-small"), ("x-ai-model", "bge-small"),
    ("X-Gateway-Model-Name", "bge-small"), ("x-gateway-model-name", "bge-small"),
    ("X-AI-TRAFFIC-CLASS", "batch"), ("x-ai-traffic-class", "batch"),
]


def test_spoofed_trusted_headers_in_any_case_and_repeated_never_reach_upstream(gw):
    body = json.dumps(chat_body("spoof me")).encode()
    r1 = rid("spoof-chat")
    resp = exchange(gw.gateway_port, request_bytes(
        "POST", CHAT, base_headers(request_id=r1) + SPOOF + [("Content-Type", "application/json")], body))
    assert resp.status == 200, resp
    received = json.loads(resp.header("x-mock-received"))
    # Exactly one value each, the filter's own: tenant-a's identity, the body's model.
    assert received["x-ai-tenant"] == ["tenant-a"]
    assert received["x-ai-subject"] == ["svc:agent-platform"]
    assert received["x-ai-model"] == ["llama3-8b"]
    assert received["x-gateway-model-name"] == ["llama3-8b"]
    assert received["x-ai-traffic-class"] == ["interactive"]
    assert resp.header("x-backend").startswith("chat-llama3-8b")

    # A body-less route: the filter sets identity only; spoofed routing headers are gone.
    r2 = rid("spoof-get")
    resp = exchange(gw.gateway_port, request_bytes("GET", "/v1/models", base_headers(request_id=r2) + SPOOF))
    assert resp.status == 200, resp
    received = json.loads(resp.header("x-mock-received"))
    assert received["x-ai-tenant"] == ["tenant-a"]
    assert received["x-ai-subject"] == ["svc:agent-platform"]
    for name in ["x-ai-model", "x-gateway-model-name", "x-ai-traffic-class"]:
        assert name not in received, received

    # Tenant-b posing as tenant-a gets tenant-b's permissions (embeddings only).
    r3 = rid("spoof-b")
    resp = exchange(gw.gateway_port, request_bytes(
        "POST", CHAT, base_headers(HOST_B, KEY_B, r3) + [("X-AI-Tenant", "tenant-a"), ("x-ai-model", "llama3-8b")],
        body))
    openai_error(resp, 403, "route_forbidden")

    recs, auds = one_each(gw, [r1, r2, r3])
    assert recs[r1]["tenant"] == "tenant-a" and recs[r1]["model"] == "llama3-8b"
    assert auds[r3]["tenant"] == "tenant-b" and auds[r3]["decision"] == "deny"
    assert auds[r3]["reason"] == "route_forbidden"
    assert_alive(gw)


SMUGGLING = {
    # Refused by Envoy's codec while parsing the headers: the filter never sees them.
    # Content-Length and Transfer-Encoding together: the classic desync.
    "cl_and_te": b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                 b"GET /v1/models HTTP/1.1\r\nHost: tenant-a.ai.example.com\r\n\r\n",
    "two_content_lengths": b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
    "content_length_not_a_number": b"Content-Length: 2x\r\n\r\n{}",
    "content_length_overflows_u64": b"Content-Length: 99999999999999999999\r\n\r\n{}",
    "space_before_colon": b"X-Api-Key : sk-tenant-a-demo\r\nContent-Length: 2\r\n\r\n{}",
}


def anonymous_denials(gw):
    return [a for a in gw.audits() if a.get("client_request_id") is None and a.get("tenant") is None]


def smuggle(gw, data):
    """Send raw bytes; return (first response, anything after it before Envoy closes)."""
    with socket.create_connection(("127.0.0.1", gw.gateway_port), timeout=10) as s:
        s.sendall(data)
        raw = read_response(s, timeout=10)
        # Our FIN spares Envoy's delayed-close wait; then Envoy must close, answering
        # nothing that was smuggled behind.
        s.shutdown(socket.SHUT_WR)
        rest = read_response(s, timeout=5)
    return raw, rest


SMUGGLE_START = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: tenant-a.ai.example.com\r\n"
                 b"Authorization: Bearer sk-tenant-a-demo\r\nContent-Type: application/json\r\n")


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_request_smuggling_framing_is_refused_before_any_backend(gw, case):
    before = upstream_requests(gw)
    anonymous = anonymous_denials(gw)
    raw, rest = smuggle(gw, SMUGGLE_START + SMUGGLING[case])
    resp = parse_response(raw)
    assert resp is not None and resp.status == 400, raw[:300]
    assert raw.count(b"HTTP/1.1 ") == 1 and rest == b"", (raw, rest)
    assert upstream_requests(gw) == before
    # Refused before the headers were complete (so no request id to match): exactly one
    # new anonymous audit record, a denial; none claims the request was let through.
    deadline = time.monotonic() + 5
    while len(anonymous_denials(gw)) <= len(anonymous) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.15)
    new = anonymous_denials(gw)[len(anonymous):]
    assert [(a["decision"], a["reason"], a["http_status"]) for a in new] == [("deny", "answered_before_filter", 400)]
    assert all(a["decision"] == "deny" for a in gw.audits() if a.get("client_request_id") is None)
    assert_alive(gw)


def test_broken_chunked_framing_after_the_headers_never_reaches_a_backend(gw):
    """The headers pass (the filter holds them while reading the body); the chunk size
    is garbage, so Envoy's codec ends the request with a 400 mid-body."""
    r = rid("bad-chunk")
    before = upstream_requests(gw)
    raw, rest = smuggle(gw, SMUGGLE_START + b"x-request-id: " + r.encode() + b"\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nzz\r\n0\r\n\r\n"
                        b"GET /v1/models HTTP/1.1\r\nHost: tenant-a.ai.example.com\r\n\r\n")
    resp = parse_response(raw)
    assert resp is not None and resp.status == 400, raw[:300]
    assert raw.count(b"HTTP/1.1 ") == 1 and rest == b""
    assert upstream_requests(gw) == before
    recs, auds = one_each(gw, [r])
    assert recs[r]["http_status"] == 400 and recs[r]["gateway_backend"] is None
    assert recs[r]["prompt_tokens"] is None and recs[r]["model"] is None
    assert_alive(gw)


def test_obs_folded_spoof_header_is_stripped_too(gw):
    """Envoy 1.40 accepts an obs-folded header line (joining it); the filter still removes
    the trusted header it names."""
    r = rid("obs-fold")
    body = json.dumps(chat_body("folded")).encode()
    raw = (SMUGGLE_START + b"x-request-id: " + r.encode() + b"\r\n"
           b"X-AI-Tenant: tenant-b\r\n x-continued\r\nX-AI-Subject: root\r\n\tsvc:root\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    resp = exchange(gw.gateway_port, raw)
    assert resp.status == 200, resp
    received = json.loads(resp.header("x-mock-received"))
    assert received["x-ai-tenant"] == ["tenant-a"]
    assert received["x-ai-subject"] == ["svc:agent-platform"]
    recs, _ = one_each(gw, [r])
    assert recs[r]["tenant"] == "tenant-a"
    assert_alive(gw)




# -- duplicate and conflicting credentials ----------------------------------------------

CREDENTIALS = [
    # (id, headers, expected status, expected audit reason)
    # Envoy joins a repeated Authorization (an inline header) into "Bearer k, Bearer k":
    # one value that is not a single bearer token, so it is refused, never half-read.
    ("same_bearer_twice", [("Authorization", f"Bearer {KEY_A}"), ("authorization", f"Bearer {KEY_A}")], 401, "invalid_credentials"),
    ("same_x_api_key_twice", [("x-api-key", KEY_A), ("X-API-KEY", KEY_A)], 200, None),
    ("two_tenants_in_x_api_key", [("x-api-key", KEY_A), ("X-API-KEY", KEY_B)], 401, "conflicting_credentials"),
    ("same_key_in_all_three", [("Authorization", f"Bearer {KEY_A}"), ("X-Api-Key", KEY_A), ("api-key", KEY_A)], 200, None),
    ("scheme_case_and_padding", [("Authorization", f"bEaReR   {KEY_A}  "), ("x-api-key", f" {KEY_A} ")], 200, None),
    ("two_tenants_bearer_and_x_api_key", [("Authorization", f"Bearer {KEY_A}"), ("x-api-key", KEY_B)], 401, "conflicting_credentials"),
    ("two_bearers_two_tenants", [("Authorization", f"Bearer {KEY_A}"), ("Authorization", f"Bearer {KEY_B}")], 401, "invalid_credentials"),
    ("valid_plus_bogus", [("x-api-key", KEY_A), ("api-key", "sk-bogus-1")], 401, "conflicting_credentials"),
    ("bogus_plus_valid", [("api-key", "sk-bogus-2"), ("Authorization", f"Bearer {KEY_A}")], 401, "conflicting_credentials"),
    ("comma_joined_bearers", [("Authorization", f"Bearer {KEY_A}, Bearer {KEY_B}")], 401, "invalid_credentials"),
    ("basic_scheme", [("Authorization", "Basic dXNlcjpwYXNz")], 401, "invalid_credentials"),
    ("bearer_without_token", [("Authorization", "Bearer")], 401, "invalid_credentials"),
    ("basic_next_to_valid_key", [("Authorization", "Basic dXNlcjpwYXNz"), ("x-api-key", KEY_A)], 401, "invalid_credentials"),
    ("other_tenants_key_on_this_host", [("Authorization", f"Bearer {KEY_B}")], 403, "host_mismatch"),
    ("nothing", [], 401, "missing_credentials"),
]


@pytest.mark.parametrize("case", CREDENTIALS, ids=[c[0] for c in CREDENTIALS])
def test_duplicate_and_conflicting_credentials(gw, case):
    name, creds, status, reason = case
    # What the client sees for each reason: OpenAI's code (null for a missing key).
    code = {"invalid_credentials": "invalid_api_key", "missing_credentials": None}.get(reason, reason)
    r = rid(name)
    resp = exchange(gw.gateway_port, request_bytes(
        "GET", "/v1/models", [("Host", HOST_A), ("x-request-id", r)] + creds))
    if status == 200:
        assert resp.status == 200, resp
        assert json.loads(resp.header("x-mock-received"))["x-ai-tenant"] == ["tenant-a"]
    else:
        openai_error(resp, status, code)
        if status == 401:
            assert resp.header("www-authenticate").startswith("Bearer")
    recs, auds = one_each(gw, [r])
    assert auds[r]["decision"] == ("allow" if status == 200 else "deny")
    assert auds[r].get("reason") == reason
    # Credentials never reach a record or Envoy's log.
    text = json.dumps([recs[r], auds[r]]) + gw.envoy_output()
    for secret in [KEY_A, KEY_B, "sk-bogus-1", "sk-bogus-2", "dXNlcjpwYXNz"]:
        assert secret not in text
    assert_alive(gw)


# -- oversized and slowly-sent bodies ---------------------------------------------------

def chat_head(request_id, extra=()):
    return (base_headers(request_id=request_id) + [("Content-Type", "application/json")] + list(extra))


def test_oversized_body_by_content_length_is_refused_before_it_is_sent(gw):
    r = rid("big-cl")
    before = upstream_requests(gw)
    head = request_bytes("POST", CHAT, chat_head(r, [("Content-Length", str(LIMIT + 1))]), content_length=False)
    with socket.create_connection(("127.0.0.1", gw.gateway_port), timeout=10) as s:
        s.sendall(head)  # the body never follows: the answer must come from the headers
        resp = parse_response(read_response(s))
    openai_error(resp, 413, "request_too_large")
    assert upstream_requests(gw) == before
    _, auds = one_each(gw, [r])
    assert auds[r]["reason"] == "body_too_large"
    assert_alive(gw)


def test_oversized_chunked_body_is_refused_once_the_limit_is_crossed(gw):
    r = rid("big-chunked")
    before = upstream_requests(gw)
    head = request_bytes("POST", CHAT, chat_head(r, [("Transfer-Encoding", "chunked")]), content_length=False)
    piece = b" " * 65536
    with socket.create_connection(("127.0.0.1", gw.gateway_port), timeout=10) as s:
        s.sendall(head)
        sent = 0
        while sent <= LIMIT:  # 65 chunks: one past the limit; the terminator never comes
            s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            sent += len(piece)
        resp = parse_response(read_response(s))
    openai_error(resp, 413, "request_too_large")
    assert upstream_requests(gw) == before
    _, auds = one_each(gw, [r])
    assert auds[r]["reason"] == "body_too_large"
    assert_alive(gw)


def test_body_of_exactly_the_limit_passes(gw):
    r = rid("at-limit")
    start = json.dumps(chat_body("right at the limit")).encode()
    body = start[:-1] + b" " * (LIMIT - len(start)) + b"}"  # JSON whitespace up to the limit
    assert len(body) == LIMIT
    resp = call(gw, CHAT, raw=body, headers={"x-request-id": r})
    assert resp.status_code == 200, resp.text[:300]
    assert resp.headers["x-mock-request-bytes"] == str(LIMIT)
    recs, _ = one_each(gw, [r])
    assert recs[r]["prompt_tokens"] == 4 and recs[r]["usage_estimated"] is False
    assert_alive(gw)


def test_slowly_sent_body_is_read_whole_and_served(gw):
    """A body trickled in 24-byte pieces with pauses (bounded: about 30 pieces)."""
    r = rid("slow")
    content = "a slowly sent prompt of exactly ten words for usage"
    body = json.dumps(chat_body(content)).encode()
    with socket.create_connection(("127.0.0.1", gw.gateway_port), timeout=20) as s:
        s.sendall(request_bytes("POST", CHAT, chat_head(r, [("Content-Length", str(len(body)))]), content_length=False))
        for i in range(0, len(body), 24):
            s.sendall(body[i:i + 24])
            time.sleep(0.03)
        resp = parse_response(read_response(s, timeout=20))
    assert resp.status == 200, resp
    usage = resp.json()["usage"]
    assert usage["prompt_tokens"] == len(content.split())
    recs, _ = one_each(gw, [r])
    assert recs[r]["prompt_tokens"] == usage["prompt_tokens"]
    assert recs[r]["completion_tokens"] == usage["completion_tokens"]
    assert_alive(gw)


# -- invalid UTF-8 ----------------------------------------------------------------------

BAD_UTF8_BODIES = {
    "in_content": b'{"model":"llama3-8b","messages":[{"role":"user","content":"\xff\xfe bad"}]}',
    "in_model": b'{"model":"llama3\xc3","messages":[{"role":"user","content":"x"}]}',
    "overlong_slash": b'{"model":"llama3-8b","messages":[{"role":"user","content":"\xc0\xaf"}]}',
    "lone_surrogate_escape": b'{"model":"llama3-8b","messages":[{"role":"user","content":"\\ud800 x"}]}',
    "in_a_key": b'{"model":"llama3-8b","\xff":1,"messages":[{"role":"user","content":"x"}]}',
    "utf16_bom": "\ufeff".encode("utf-16-le") + b'{"model":"llama3-8b"}',
}


@pytest.mark.parametrize("case", sorted(BAD_UTF8_BODIES))
def test_invalid_utf8_in_body_is_a_400(gw, case):
    r = rid(f"utf8-{case}")
    resp = exchange(gw.gateway_port, request_bytes("POST", CHAT, chat_head(r), BAD_UTF8_BODIES[case]))
    openai_error(resp, 400)
    _, auds = one_each(gw, [r])
    assert auds[r]["reason"] == "invalid_body"
    assert_alive(gw)


def test_invalid_utf8_in_header_values(gw):
    # In the request id: served, and the record carries a sanitized, printable id.
    resp = exchange(gw.gateway_port, request_bytes(
        "GET", "/v1/models", base_headers() + [("x-request-id", b"abuse-utf8-rid-\xff\xfe\xc3"), ("User-Agent", b"\x80\xff")]))
    assert resp.status == 200, resp
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        mine = [x for x in gw.records() if (x.get("client_request_id") or "").startswith("abuse-utf8-rid-")]
        if mine:
            break
        time.sleep(0.05)
    assert len(mine) == 1, mine
    assert mine[0]["client_request_id"].isprintable() and mine[0]["client_request_id"].isascii()
    # In credentials: refused as invalid, never matched or echoed.
    for creds in ([("x-api-key", b"sk-\xff\xfe")], [("Authorization", b"Bearer sk-tenant-a-dem\xef")],
                  [("api-key", b"\xc0\xaf")]):
        r = rid("utf8-key")
        resp = exchange(gw.gateway_port, request_bytes("GET", "/v1/models", [("Host", HOST_A), ("x-request-id", r)] + creds))
        openai_error(resp, 401, "invalid_api_key")
        one_each(gw, [r])
    # In the Host header: Envoy's codec refuses it before the filter.
    before = upstream_requests(gw)
    resp = exchange(gw.gateway_port, request_bytes("GET", "/v1/models", [("Host", b"tenant-\xff.ai.example.com"), ("Authorization", f"Bearer {KEY_A}")]))
    assert resp.status == 400
    assert upstream_requests(gw) == before
    assert_alive(gw)


def test_huge_header_values_and_counts(gw):
    # A 40 KB bogus key fits Envoy's 60 KiB header limit: the filter refuses it.
    r = rid("big-key")
    resp = exchange(gw.gateway_port, request_bytes(
        "GET", "/v1/models", [("Host", HOST_A), ("x-request-id", r), ("x-api-key", "sk-" + "k" * 40_000)]))
    openai_error(resp, 401, "invalid_api_key")
    recs, auds = one_each(gw, [r])
    assert "kkkk" not in json.dumps([recs[r], auds[r]])
    # Beyond Envoy's limits (60 KiB of headers, 100 headers) Envoy answers 431 itself.
    before = upstream_requests(gw)
    for headers in ([("x-api-key", "sk-" + "k" * 100_000)],
                    [(f"x-pad-{i}", "v") for i in range(150)] + [("Authorization", f"Bearer {KEY_A}")]):
        resp = exchange(gw.gateway_port, request_bytes("GET", "/v1/models", [("Host", HOST_A)] + headers))
        assert resp.status == 431, resp
    assert upstream_requests(gw) == before
    assert "kkkkkkkk" not in gw.envoy_output()
    assert_alive(gw)


# -- hostile JSON -----------------------------------------------------------------------

DEPTH = 10_000
NESTED = {
    "messages_array": b'{"model":"llama3-8b","messages":' + b"[" * DEPTH + b"]" * DEPTH + b"}",
    "unknown_field_objects": b'{"model":"llama3-8b","messages":[{"role":"user","content":"x"}],"metadata":'
                             + b'{"a":' * DEPTH + b"1" + b"}" * DEPTH + b"}",
    "content_parts": b'{"model":"llama3-8b","messages":[{"role":"user","content":' + b"[" * DEPTH + b"]" * DEPTH + b"}]}",
    "tools": b'{"model":"llama3-8b","messages":[{"role":"user","content":"x"}],"tools":' + b"[" * DEPTH + b"]" * DEPTH + b"}",
    "unclosed": b'{"model":"llama3-8b","messages":' + b"[" * DEPTH,
}


@pytest.mark.parametrize("case", sorted(NESTED))
def test_deeply_nested_json_is_a_400(gw, case):
    r = rid(f"nest-{case}")
    resp = exchange(gw.gateway_port, request_bytes("POST", CHAT, chat_head(r), NESTED[case]))
    openai_error(resp, 400)
    _, auds = one_each(gw, [r])
    assert auds[r]["reason"] == "invalid_body"
    assert_alive(gw)


def chat_raw(prefix, content="x"):
    return (b'{"model":"llama3-8b",' + prefix + b',"messages":[{"role":"user","content":"'
            + content.encode() + b'"}]}')


HUGE = [
    # (id, body, host, key, expected status, expected error code or None)
    ("max_tokens_5000_digits", chat_raw(b'"max_tokens":' + b"9" * 5000), HOST_A, KEY_A, 400, None),
    ("max_tokens_1e999", chat_raw(b'"max_tokens":1e999'), HOST_A, KEY_A, 400, None),
    ("max_tokens_negative", chat_raw(b'"max_tokens":-1'), HOST_A, KEY_A, 400, None),
    ("max_tokens_float", chat_raw(b'"max_tokens":1.5'), HOST_A, KEY_A, 400, None),
    ("max_tokens_u64_max", chat_raw(b'"max_tokens":18446744073709551615'), HOST_C, KEY_C, 400, "quota_exceeds_burst"),
    ("n_u64_max", chat_raw(b'"n":18446744073709551615'), HOST_C, KEY_C, 400, "quota_exceeds_burst"),
    ("n_times_max_tokens_over_burst", chat_raw(b'"n":1000,"max_tokens":4096'), HOST_C, KEY_C, 400, "quota_exceeds_burst"),
    ("temperature_1e308", chat_raw(b'"temperature":1e308'), HOST_A, KEY_A, 200, None),
    ("max_tokens_as_huge_string", chat_raw(b'"max_tokens":"' + b"9" * 100000 + b'"'), HOST_A, KEY_A, 400, None),
    ("model_of_1mb", b'{"model":"' + b"m" * 1_000_000 + b'","messages":[{"role":"user","content":"x"}]}', HOST_A, KEY_A, 404, "model_not_found"),
    ("content_of_3mb", chat_raw(b'"max_tokens":1', " ".join(["word"] * 600_000)), HOST_A, KEY_A, 200, None),
    ("escapes_of_1mb", chat_raw(b'"max_tokens":1', "\\u00e9" * 170_000), HOST_A, KEY_A, 200, None),
]


@pytest.mark.parametrize("case", HUGE, ids=[c[0] for c in HUGE])
def test_huge_numbers_and_strings(gw, case):
    name, body, host, key, status, code = case
    r = rid(name)
    resp = exchange(gw.gateway_port, request_bytes(
        "POST", CHAT, base_headers(host, key, r) + [("Content-Type", "application/json")], body), timeout=30)
    recs, auds = one_each(gw, [r])
    if status == 200:
        assert resp.status == 200, resp
        usage = resp.json()["usage"]
        assert recs[r]["prompt_tokens"] == usage["prompt_tokens"]
        assert recs[r]["usage_estimated"] is False
    else:
        openai_error(resp, status, ANY if code is None else code)
        assert auds[r]["decision"] == "deny"
    # Records stay bounded whatever the body held.
    assert len(json.dumps(recs[r])) < 2048
    assert_alive(gw)


def test_quota_arithmetic_abuse_does_not_lock_the_tenant_out(gw):
    """After the huge-number cases tenant-c is still served: nothing was charged for them."""
    r = call(gw, CHAT, chat_body("fine"), host=HOST_C, key=KEY_C)
    assert r.status_code == 200, r.text
    remaining = int(r.headers["x-ratelimit-remaining-tokens"])
    assert remaining > 4000000 - 10000, remaining


# -- volume: random model names and bogus keys ------------------------------------------

def run_pool(jobs, worker, threads=8):
    """Split jobs over `threads` keep-alive connections; returns the flattened results."""
    chunks = [jobs[i::threads] for i in range(threads)]
    with cf.ThreadPoolExecutor(threads) as ex:
        return [x for part in ex.map(worker, chunks) for x in part]


def keepalive_worker(gw, make_request):
    def work(items):
        conn = http.client.HTTPConnection("127.0.0.1", gw.gateway_port, timeout=30)
        out = []
        try:
            for item in items:
                method, path, headers, body = make_request(item)
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                out.append((item, resp.status, data))
        finally:
            conn.close()
        return out
    return work


def test_random_model_names_at_high_rate(gw):
    names = [f"model-{uuid.uuid4().hex}" for _ in range(510)]
    warm, names = names[:10], names[10:]

    def req(model):
        body = json.dumps(chat_body("hi", model=model))
        return "POST", CHAT, {"Host": HOST_A, "Authorization": f"Bearer {KEY_A}",
                              "Content-Type": "application/json", "x-request-id": f"abuse-model-{model}"}, body

    run_pool(warm, keepalive_worker(gw, req), threads=2)
    series = metric_series(gw)
    results = run_pool(names, keepalive_worker(gw, req))
    assert len(results) == 500
    for model, status, data in results:
        assert status == 404, (model, status, data[:200])
        assert json.loads(data)["error"]["code"] == "model_not_found"
    after = metric_series(gw)
    assert after == series, sorted(after - series)[:10]
    assert not any("model-" in s for s in after)
    recs, _ = one_each(gw, [f"abuse-model-{m}" for m in names], timeout=30)
    assert {recs[f"abuse-model-{m}"]["model"] for m in names} == set(names)
    assert_alive(gw)


def test_ten_thousand_distinct_bogus_keys(gw):
    n = 10_000
    sources = ["authorization", "x-api-key", "api-key"]

    def key(i):
        return f"sk-bogus-{i:05d}-{uuid.uuid4().hex[: 8 + i % 24]}"

    run = uuid.uuid4().hex[:8]

    def req(i):
        h = {"Host": HOST_A, "x-request-id": f"abuse-key-{run}-{i}"}
        k = key(i)
        src = sources[i % 3]
        h[src] = f"Bearer {k}" if src == "authorization" else k
        return "GET", "/v1/models", h, None

    run_pool(list(range(n, n + 30)), keepalive_worker(gw, req), threads=3)  # create the 401 series
    series = metric_series(gw)
    before_upstream = upstream_requests(gw)

    results = run_pool(list(range(n)), keepalive_worker(gw, req))
    assert len(results) == n
    bad = [(i, s, d[:200]) for i, s, d in results if s != 401]
    assert not bad, bad[:5]
    codes = {json.loads(d)["error"]["code"] for _, _, d in results}
    assert codes == {"invalid_api_key"}

    after = metric_series(gw)
    assert after == series, f"{len(after - series)} new series, e.g. {sorted(after - series)[:5]}"
    assert upstream_requests(gw) == before_upstream
    recs, auds = one_each(gw, [f"abuse-key-{run}-{i}" for i in range(n)], timeout=60)
    assert {a["reason"] for a in auds.values()} == {"invalid_credentials"}
    assert {r["tenant"] for r in recs.values()} == {None}
    # No key in the stats, the records or Envoy's log.
    text = gw.admin("/stats") + gw.envoy_output()
    assert "sk-bogus-" not in text
    assert_alive(gw)


# -- path tricks ------------------------------------------------------------------------
#
# Envoy decides first (normalize_path, merge_slashes, REJECT_REQUEST for escaped slashes;
# prefix routes are case-sensitive); the filter then sees the normalized path, refuses
# what is still not canonical with 400 invalid_path, and authorizes the route it sees.
# For every case the record's route is the route actually served: a path can never be
# authorized as one route and served as another.

E_400 = ("envoy", 400)   # Envoy's own 400, empty body, before any backend
E_404 = ("envoy", 404)   # Envoy found no route

PATHS = [
    # (path, tenant, expected, record route, path the backend received)
    ("/v1/chat/completions/../embeddings", "a", ("filter", 404, "route_not_found"), None, None),
    ("/v1/chat/completions/%2e%2e/embeddings", "a", ("filter", 404, "route_not_found"), None, None),
    ("/v1/chat/completions/%2E%2E/embeddings", "a", ("filter", 404, "route_not_found"), None, None),
    ("/v1/embeddings/../chat/completions", "a", 200, CHAT, CHAT),
    ("/v1/models/../chat/completions", "a", 200, CHAT, CHAT),
    ("/v1/./chat/completions", "a", 200, CHAT, CHAT),
    ("/v1/%63hat/completions", "a", 200, CHAT, CHAT),
    ("/v1/chat\\completions", "a", 200, CHAT, CHAT),
    ("//v1//chat//completions", "a", 200, CHAT, CHAT),
    ("/v1/chat/completions?x=1&model=bge-small", "a", 200, CHAT, CHAT),
    ("/v1/chat/completions/", "a", 404, CHAT, "/v1/chat/completions/"),
    ("/v1/chat%2Fcompletions", "a", E_400, None, None),
    ("/v1/chat%2fcompletions", "a", E_400, None, None),
    ("/v1/chat/completions/..%2fembeddings", "a", E_400, None, None),
    ("/v1/chat%5Ccompletions", "a", E_400, None, None),
    ("/v1/chat/completions%00", "a", E_400, None, None),
    ("/v1/chat/completions#frag", "a", E_400, None, None),
    ("/v1/chat/completions%252e%252e", "a", ("filter", 400, "invalid_path"), None, None),
    # The filter matches routes ignoring case (the stricter choice should a route table
    # set case_sensitive: false); Envoy's prefix routes are case-sensitive: no route.
    ("/V1/Chat/Completions", "a", E_404, CHAT, None),
    # Tenant-b may only call /v1/embeddings: every trick that lands elsewhere is refused.
    ("/v1/embeddings/../chat/completions", "b", ("filter", 403, "route_forbidden"), CHAT, None),
    ("/v1/embeddings/%2e%2e/chat/completions", "b", ("filter", 403, "route_forbidden"), CHAT, None),
    ("/v1/embeddings/../models", "b", ("filter", 403, "route_forbidden"), "/v1/models", None),
    ("/V1/EMBEDDINGS", "b", E_404, "/v1/embeddings", None),
    ("/V1/CHAT/COMPLETIONS", "b", ("filter", 403, "route_forbidden"), CHAT, None),
    ("/v1/embeddingsX", "b", ("filter", 404, "route_not_found"), None, None),
    ("/v1/embeddings;x=1", "b", ("filter", 404, "route_not_found"), None, None),
    # Paths outside the configured routes never reach a backend unmetered (deny by default).
    ("/v1/chat/completions;x=1", "a", ("filter", 404, "route_not_found"), None, None),
    ("/v1/chat/completionsX", "a", ("filter", 404, "route_not_found"), None, None),
    ("/v1/files", "a", ("filter", 404, "route_not_found"), None, None),
    ("//v1//embeddings/", "b", 404, "/v1/embeddings", "/v1/embeddings/"),
    ("/v1/%65mbeddings?model=llama3-8b", "b", 200, "/v1/embeddings", "/v1/embeddings"),
]


@pytest.mark.parametrize("case", PATHS, ids=[f"{c[1]}:{c[0]}" for c in PATHS])
def test_path_tricks(gw, case):
    path, tenant, expected, route, served_path = case
    host, key = (HOST_A, KEY_A) if tenant == "a" else (HOST_B, KEY_B)
    body = chat_body("path trick") if tenant == "a" else {"model": "bge-small", "input": "path trick"}
    r = rid("path")
    before = upstream_requests(gw)
    resp = exchange(gw.gateway_port, request_bytes(
        "POST", path, base_headers(host, key, r) + [("Content-Type", "application/json")], json.dumps(body).encode()))
    if expected == 200:
        assert resp.status == 200, resp
        obj = resp.json()["object"]
        assert obj == ("chat.completion" if route == CHAT else "list")
    elif expected == 404:
        # Forwarded; the backend answered that it has no such path.
        assert resp.status == 404, resp
        assert resp.json()["error"]["message"].endswith(f"POST {served_path}"), resp.body
    elif expected[0] == "envoy":
        assert resp.status == expected[1], resp
        assert resp.header("x-backend") is None
        assert upstream_requests(gw) == before
    else:
        openai_error(resp, expected[1], expected[2])
        assert upstream_requests(gw) == before
    recs, auds = one_each(gw, [r])
    if expected == E_400:
        # Envoy answered before the filter saw the request: still one record, a denial.
        assert auds[r]["decision"] == "deny" and auds[r]["reason"] == "answered_before_filter"
        assert auds[r]["http_status"] == 400 and recs[r]["model_route"] is None
        assert_alive(gw)
        return
    assert recs[r]["route"] == route, recs[r]
    if expected == 200 or expected == 404:
        assert auds[r]["decision"] == "allow"
        assert recs[r]["model_route"] == resp.header("x-backend")
    if expected == E_404:
        assert recs[r]["model_route"] is None and recs[r]["http_status"] == 404
    assert_alive(gw)
