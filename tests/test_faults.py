"""Fault scenarios, automated against real Envoy 1.40
with the built module.

- a burst of 200 requests at concurrency 20, a quarter of them streams;
- the canary backend (chat-llama3-8b-v2, 10% of the chat traffic) stopped mid-run;
- an upstream reset in the middle of a stream;
- a client that disconnects in the middle of a stream;
- a plugin configuration pushed with an error (file-based LDS, render.py --lds-dir).

Every request carries an x-request-id and must leave exactly one gateway record and one
audit record. Token settlement is observed through tenant-c, whose token bucket refills
one token per minute, so the x-ratelimit-remaining-tokens of a later request shows what
an earlier one was charged.
"""
import concurrent.futures as cf
import hashlib
import json
import math
import socket
import threading
import time
import uuid

import pytest
import requests

from client import HOST_A, HOST_B, KEY_A, KEY_B, assert_openai_error, call, chat_body
from conftest import demo_config
from harness.launcher import Topology
from rawhttp import one_each, vm_failure_lines, vm_stats

CHAT = "/v1/chat/completions"
HOST_C = "tenant-c.ai.example.com"
KEY_C = "sk-tenant-c-faults"
TOKENS_PER_SECOND = 200  # mock pacing: a stream of k tokens lasts k/200 s
CANARY = "chat-llama3-8b-v2"
STABLE = "chat-llama3-8b-v1"


def faults_config():
    cfg = demo_config()
    cfg["tenants"].append({
        "name": "tenant-c",
        "hosts": [HOST_C],
        "api_keys": [{"id": "svc:faults", "sha256": hashlib.sha256(KEY_C.encode()).hexdigest()}],
        "models": ["llama3-8b"],
        # Refill is negligible, so a settlement shows as an exact drop in the bucket.
        "quota": {"requests_per_minute": 6000, "request_burst": 1000,
                  "tokens_per_minute": 1, "token_burst": 1000000},
    })
    return cfg


@pytest.fixture(scope="module")
def gw():
    with Topology(plugin_config=faults_config(), concurrency=2,
                  mock_args={"*": ["--tokens-per-second", str(TOKENS_PER_SECOND)]}) as topo:
        topo.vm_baseline = vm_stats(topo)
        yield topo
        assert vm_stats(topo) == topo.vm_baseline
        assert vm_failure_lines(topo) == []


def rid(tag):
    return f"fault-{tag}-{uuid.uuid4().hex[:12]}"


def sse_events(data):
    """JSON payloads of the `data:` lines in an SSE byte stream (plus "[DONE]")."""
    out = []
    for line in data.split(b"\n"):
        if line.startswith(b"data: "):
            payload = line[6:].strip()
            out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return out


def content_chars(events):
    return sum(len(e["choices"][0]["delta"].get("content") or "")
               for e in events if e != "[DONE]" and e.get("choices"))


def remaining_tokens(gw):
    """Tenant-c's token bucket now (a body-less request reserves no tokens)."""
    r = call(gw, "/v1/models", host=HOST_C, key=KEY_C)
    assert r.status_code == 200, r.text
    return int(r.headers["x-ratelimit-remaining-tokens"])


def assert_settled(before, after, rec):
    """The bucket dropped by exactly what the record says was used (refill ≤ 1 token)."""
    used = rec["prompt_tokens"] + rec["completion_tokens"]
    assert used - 1 <= before - after <= used, (before, after, rec)


# -- burst ------------------------------------------------------------------------------

def test_burst_of_200_at_concurrency_20_mixed_with_streams(gw):
    run = uuid.uuid4().hex[:8]
    local = threading.local()

    def one(i):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        r_id = f"fault-burst-{run}-{i}"
        stream = i % 4 == 0
        words = 1 + i % 7
        body = chat_body(" ".join(f"w{j}" for j in range(words)), stream=stream)
        resp = local.session.post(gw.base_url + CHAT, json=body, timeout=60, headers={
            "Host": HOST_A, "Authorization": f"Bearer {KEY_A}", "x-request-id": r_id})
        return r_id, stream, words, resp.status_code, resp.headers.get("x-backend"), resp.content

    with cf.ThreadPoolExecutor(20) as ex:
        results = list(ex.map(one, range(200)))

    for r_id, stream, words, status, backend, content in results:
        assert status == 200, (r_id, content[:200])
        if stream:
            events = sse_events(content)
            assert events[-1] == "[DONE]"
            usage = [e["usage"] for e in events[:-1] if e.get("usage")]
            assert usage == [{**usage[0], "prompt_tokens": words, "completion_tokens": 16}]
            assert content_chars(events) == sum(len(f"tok{k} ") for k in range(16))
        else:
            usage = json.loads(content)["usage"]
            assert (usage["prompt_tokens"], usage["completion_tokens"]) == (words, 16)

    recs, auds = one_each(gw, [r[0] for r in results], timeout=30)
    for r_id, stream, words, status, backend, _ in results:
        rec, aud = recs[r_id], auds[r_id]
        assert rec["http_status"] == 200 and rec["tenant"] == "tenant-a"
        assert rec["model_route"] == backend and aud["model_route"] == backend
        assert (rec["prompt_tokens"], rec["completion_tokens"]) == (words, 16)
        assert rec["usage_estimated"] is False
        assert rec["stream"] is stream
        if stream:
            assert rec["stream_complete"] is True and rec["ttft_ms"] is not None
            assert rec["traffic_class"] == "streaming"
        assert aud["decision"] == "allow" and aud["sensitive_payload_logged"] is False


# -- canary stopped mid-run ---------------------------------------------------------------

def test_canary_backend_stopped_mid_run(make_gateway):
    """90/10 canary; the canary is stopped after 100 of 300 requests. Only canary traffic
    fails, with Envoy's 503 for a dead upstream, and the records name the canary."""
    topo = make_gateway(plugin_config=demo_config(), concurrency=2)
    run = uuid.uuid4().hex[:8]
    n, stop_after = 300, 100

    def one(i):
        r_id = f"fault-canary-{run}-{i}"
        resp = call(topo, CHAT, chat_body(f"canary request {i}"), headers={"x-request-id": r_id})
        return r_id, resp.status_code, resp.headers.get("x-backend"), resp.headers.get("content-type", ""), resp.text

    results = []
    with cf.ThreadPoolExecutor(10) as ex:
        futures = [ex.submit(one, i) for i in range(n)]
        for f in cf.as_completed(futures):
            results.append(f.result())
            if len(results) == stop_after:
                topo.stop_mock(CANARY)

    failed = [r for r in results if r[1] != 200]
    ok = [r for r in results if r[1] == 200]
    assert failed, "the canary was stopped but no request failed"
    # Only about the canary share (10% of the ~200 after the stop) fails: far below 30%.
    assert len(failed) <= 0.3 * (n - stop_after), len(failed)
    for _, status, backend, ctype, text in failed:
        assert status == 503, (status, text[:200])
        assert backend is None  # Envoy's own answer: the backend never replied
        assert "upstream connect error" in text or "reset" in text, text[:200]
    assert {r[2] for r in ok} <= {STABLE, CANARY}

    recs, auds = one_each(topo, [r[0] for r in results], timeout=30)
    for r_id, status, backend, _, _ in failed:
        assert recs[r_id]["model_route"] == CANARY and recs[r_id]["http_status"] == 503
        assert auds[r_id]["model_route"] == CANARY and auds[r_id]["decision"] == "allow"
        assert auds[r_id]["http_status"] == 503
        # Nothing was generated. A request that never reached the canary is billed
        # nothing; one cut off after it was sent is billed its prompt estimate only.
        rec = recs[r_id]
        assert rec["completion_tokens"] in (None, 0)
        assert not rec["estimated_cost_usd"] or rec["usage_estimated"] is True, rec
    for r_id, status, backend, _, _ in ok:
        assert recs[r_id]["model_route"] == backend and recs[r_id]["http_status"] == 200
    # The stable backend never failed, and the gateway still serves after the run.
    assert all(recs[r[0]]["model_route"] == CANARY for r in failed)
    assert call(topo, "/v1/embeddings", {"model": "bge-small", "input": "x"}, host=HOST_B, key=KEY_B).status_code == 200
    assert vm_failure_lines(topo) == []


# -- upstream reset mid-stream --------------------------------------------------------------

@pytest.mark.parametrize("reset_after", [0, 5])
def test_upstream_reset_mid_stream_keeps_partial_usage(gw, reset_after):
    r_id = rid(f"reset{reset_after}")
    before = remaining_tokens(gw)
    resp = call(gw, CHAT, chat_body("tell me a long story", stream=True, max_tokens=40),
                host=HOST_C, key=KEY_C, stream=True,
                headers={"x-request-id": r_id, "x-mock-reset-after-chunks": str(reset_after)})
    assert resp.status_code == 200  # the headers were already on their way
    data = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in resp.iter_content(None):
            data += chunk
    events = sse_events(data)
    assert "[DONE]" not in events
    tokens_seen = sum(1 for e in events if e != "[DONE]" and (e["choices"][0]["delta"].get("content") or ""))
    assert tokens_seen == reset_after

    recs, auds = one_each(gw, [r_id])
    rec = recs[r_id]
    assert rec["stream"] is True and rec["stream_complete"] is False
    assert rec["usage_estimated"] is True
    # The filter estimates output as ceil(chars / 4) of the content it saw pass.
    assert rec["completion_tokens"] == math.ceil(content_chars(events) / 4)
    assert rec["prompt_tokens"] >= 1
    assert rec["model_route"] == resp.headers["x-backend"]
    assert (rec["ttft_ms"] is None) == (reset_after == 0)
    assert auds[r_id]["decision"] == "allow"
    # Settled at the partial count, not at the 40-token reservation.
    assert_settled(before, remaining_tokens(gw), rec)


# -- client disconnects mid-stream ------------------------------------------------------------

def test_client_disconnect_mid_stream_still_records_and_settles(gw):
    r_id = rid("disconnect")
    max_tokens = 1000  # 5 s at the mock's pace; the client leaves after the first token
    before = remaining_tokens(gw)
    body = json.dumps(chat_body("one two three", stream=True, max_tokens=max_tokens)).encode()
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: {HOST_C}\r\nAuthorization: Bearer {KEY_C}\r\n"
            f"x-request-id: {r_id}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gw.gateway_port), timeout=20) as s:
        s.sendall(head + body)
        got = b""
        while b'"content":"tok0 "' not in got:
            chunk = s.recv(4096)
            assert chunk, got
            got += chunk
        assert got.startswith(b"HTTP/1.1 200")
    # The socket is closed: Envoy resets the upstream stream and on_log still runs.

    recs, auds = one_each(gw, [r_id], timeout=20)
    rec = recs[r_id]
    full = math.ceil(sum(len(f"tok{k} ") for k in range(max_tokens)) / 4)
    assert rec["stream"] is True and rec["stream_complete"] is False
    assert rec["usage_estimated"] is True
    assert 2 <= rec["completion_tokens"] < full  # "tok0 " seen, far from the whole stream
    assert rec["http_status"] == 200
    assert auds[r_id]["decision"] == "allow" and auds[r_id]["tenant"] == "tenant-c"
    after = remaining_tokens(gw)
    assert_settled(before, after, rec)
    assert before - after < max_tokens  # the 1000-token reservation was given back


# -- a bad plugin configuration push ---------------------------------------------------------

def lds_counters(topo):
    out = {}
    for line in topo.admin("/stats?filter=listener_manager").splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[name.strip()] = int(value)
    return out


def wait_counter(topo, name, target, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = lds_counters(topo).get(name, 0)
        if value >= target:
            return value
        time.sleep(0.1)
    return lds_counters(topo).get(name, 0)


def test_bad_plugin_config_push_is_refused_and_the_old_one_keeps_serving(make_gateway):
    topo = make_gateway(plugin_config=demo_config(), concurrency=2, lds=True)
    ids = []

    def ask(key, expect, host=HOST_A):
        r_id = rid("push")
        ids.append(r_id)
        if host == HOST_B:  # tenant-b may only embed
            r = call(topo, "/v1/embeddings", {"model": "bge-small", "input": "x"}, host=host, key=key,
                     headers={"x-request-id": r_id})
        else:
            r = call(topo, "/v1/models", host=host, key=key, headers={"x-request-id": r_id})
        if expect == 200:
            assert r.status_code == 200, r.text
        else:
            assert_openai_error(r, expect, "invalid_api_key")
        return r

    ask(KEY_A, 200)
    c0 = lds_counters(topo)
    rejected = "listener_manager.lds.update_rejected"

    # 1. A plaintext key pasted where its SHA-256 belongs.
    secret = "sk-live-" + uuid.uuid4().hex
    bad = demo_config()
    bad["tenants"][0]["api_keys"][0]["sha256"] = secret
    topo.push_plugin_config(bad)
    assert wait_counter(topo, rejected, c0.get(rejected, 0) + 1) == c0.get(rejected, 0) + 1
    ask(KEY_A, 200)
    ask(KEY_B, 200, host=HOST_B)
    log = topo.envoy_output()
    assert "invalid plugin configuration: tenants[0].api_keys[0].sha256" in log
    assert secret not in log  # the error names the field, never the value
    assert "lds: listener 'gateway' config rejected" in log

    # 2. Not JSON at all, and 3. a field that does not exist.
    topo.push_plugin_config('{"tenants": [')
    assert wait_counter(topo, rejected, c0.get(rejected, 0) + 2) == c0.get(rejected, 0) + 2
    unknown = demo_config()
    unknown["tenants"][1]["qouta"] = unknown["tenants"][1].pop("quota")
    topo.push_plugin_config(unknown)
    assert wait_counter(topo, rejected, c0.get(rejected, 0) + 3) == c0.get(rejected, 0) + 3
    assert "tenants[1]" in topo.envoy_output().split("invalid plugin configuration:")[-1].split("\n")[0]
    ask(KEY_A, 200)
    assert lds_counters(topo)["listener_manager.lds.update_success"] == c0["listener_manager.lds.update_success"]

    # 4. A valid push does take effect (so "still serving" above was the old config, and
    # the push path works): tenant-a's key is rotated.
    rotated = "sk-rotated-" + uuid.uuid4().hex
    good = demo_config()
    good["tenants"][0]["api_keys"] = [{"id": "svc:rotated", "sha256": hashlib.sha256(rotated.encode()).hexdigest()}]
    topo.push_plugin_config(good)
    success = "listener_manager.lds.update_success"
    assert wait_counter(topo, success, c0[success] + 1) == c0[success] + 1
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if call(topo, "/v1/models", key=rotated).status_code == 200:
            break
        time.sleep(0.1)
    ask(rotated, 200)
    ask(KEY_A, 401)
    assert lds_counters(topo)[rejected] == c0.get(rejected, 0) + 3

    one_each(topo, ids)
    assert vm_failure_lines(topo) == []
