"""OpenAI traffic with a non-default configuration: the body-size limit (413 from Content-Length
and from a chunked body crossing it), retries off for streams on a route that retries
everything else, and the masked prompt preview."""
import json
import socket

import pytest
import requests

from client import HOST_A, KEY_A, assert_openai_error, call, chat_body
from conftest import demo_config
from openai_helpers import (
    PatchedTopology, add_retry_policy, chat_upstream_requests, counters, new_rid, record_for,
)

CHAT = "/v1/chat/completions"
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def gw():
    cfg = demo_config()
    cfg["limits"]["max_request_body_bytes"] = LIMIT
    cfg["redaction"]["prompt_preview_chars"] = 120
    with PatchedTopology(patch=add_retry_policy, plugin_config=cfg, concurrency=1) as topo:
        yield topo


def upstream_total(gw):
    return sum(counters(gw, r"^cluster\..*\.upstream_rq_total$").values())


def test_body_at_the_limit_is_accepted(gw):
    raw = json.dumps(chat_body("y" * (LIMIT - 200))).encode()
    assert len(raw) <= LIMIT
    r = call(gw, CHAT, raw=raw)
    assert r.status_code == 200, r.text[:300]


def test_content_length_over_the_limit_is_413_without_reading_the_body(gw):
    """Refused from the headers: the client is told before it sends the body."""
    before = upstream_total(gw)
    rid = new_rid("cl413")
    raw = json.dumps(chat_body("z" * (LIMIT + 10))).encode()
    # Send only the headers: the filter must answer from Content-Length alone.
    with socket.create_connection(("127.0.0.1", gw.gateway_port), timeout=10) as s:
        head = (f"POST {CHAT} HTTP/1.1\r\nHost: {HOST_A}\r\nAuthorization: Bearer {KEY_A}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
                f"x-request-id: {rid}\r\n\r\n")
        s.sendall(head.encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    status_line = reply.split(b"\r\n", 1)[0]
    assert b" 413 " in status_line, reply[:200]
    rec, audit = record_for(gw, rid)
    assert rec["http_status"] == 413 and audit["reason"] == "body_too_large"
    assert rec["model_route"] is None
    assert upstream_total(gw) == before

    # The same with an ordinary client that sends the body anyway.
    r = call(gw, CHAT, raw=raw)
    err = assert_openai_error(r, 413, "request_too_large")
    assert str(LIMIT) in err["message"]


def test_chunked_body_crossing_the_limit_is_413(gw):
    before = upstream_total(gw)
    rid = new_rid("ch413")
    sent = {"bytes": 0}

    def gen():
        piece = b'{"model":"llama3-8b","messages":[{"role":"user","content":"'
        yield piece
        for _ in range(12):  # 12 x 8 KiB: the limit is crossed at the 8th piece
            sent["bytes"] += 8192
            yield b"q" * 8192
        yield b'"}]}'

    try:
        r = requests.post(gw.base_url + CHAT, data=gen(), timeout=30,
                          headers={"Host": HOST_A, "Authorization": f"Bearer {KEY_A}",
                                   "Content-Type": "application/json", "x-request-id": rid})
        assert_openai_error(r, 413, "request_too_large")
    except requests.ConnectionError:
        # Envoy answered and closed while the client was still uploading; the record
        # below shows what happened.
        pass
    rec, audit = record_for(gw, rid)
    assert rec["http_status"] == 413 and audit["reason"] == "body_too_large"
    assert upstream_total(gw) == before

    # Under the limit, a chunked body goes through.
    def small():
        yield b'{"model":"llama3-8b",'
        yield b'"messages":[{"role":"user","content":"small chunked"}]}'

    r = requests.post(gw.base_url + CHAT, data=small(), timeout=30,
                      headers={"Host": HOST_A, "Authorization": f"Bearer {KEY_A}"})
    assert r.status_code == 200, r.text


def test_the_route_retries_non_streaming_failures(gw):
    """Control for the next test: this route's retry policy really retries."""
    total0, retry0 = chat_upstream_requests(gw)
    r = call(gw, CHAT, chat_body("retry me"), headers={"x-mock-status": "503"})
    assert r.status_code == 503
    total1, retry1 = chat_upstream_requests(gw)
    assert (total1 - total0, retry1 - retry0) == (3, 2)


def test_a_failing_stream_is_never_replayed(gw):
    total0, retry0 = chat_upstream_requests(gw)
    rid = new_rid("noretry")
    r = call(gw, CHAT, chat_body("do not replay", stream=True),
             headers={"x-mock-status": "503", "x-request-id": rid})
    assert r.status_code == 503
    total1, retry1 = chat_upstream_requests(gw)
    assert (total1 - total0, retry1 - retry0) == (1, 0), "exactly one request hit the backend"
    rec, _ = record_for(gw, rid)
    assert rec["traffic_class"] == "streaming"
    assert rec["http_status"] == 503
    assert rec["stream_complete"] is False
    assert rec["prompt_tokens"] is None and rec["estimated_cost_usd"] is None
    # Envoy's router consumes x-envoy-max-retries, so the backend never sees it; what
    # the backend does see is the filter's classification.
    received = json.loads(r.headers["x-mock-received"])
    assert received["x-ai-traffic-class"] == ["streaming"]
    assert "x-envoy-max-retries" not in received


def test_a_client_cannot_turn_retries_back_on(gw):
    total0, retry0 = chat_upstream_requests(gw)
    r = call(gw, CHAT, chat_body("sneaky", stream=True),
             headers={"x-mock-status": "503", "x-envoy-max-retries": "5", "x-envoy-retry-on": "5xx"})
    assert r.status_code == 503
    total1, retry1 = chat_upstream_requests(gw)
    assert (total1 - total0, retry1 - retry0) == (1, 0)


def test_prompt_preview_is_masked(gw):
    rid = new_rid("preview")
    prompt = ("Contact jane.doe@example.com or +1 415 555 0100, card 4111 1111 1111 1111, "
              "key sk-proj-AbCdEfGhIjKlMnOpQrStUv123456, host 10.1.2.3. Thanks")
    r = call(gw, CHAT, chat_body(prompt), headers={"x-request-id": rid})
    assert r.status_code == 200
    rec, _ = record_for(gw, rid)
    preview = rec["prompt_preview"]
    assert preview.startswith("Contact ")
    assert len(preview) <= 121
    for secret in ["jane.doe", "example.com", "555 0100", "4111", "AbCdEfGh", "10.1.2.3"]:
        assert secret not in preview, (secret, preview)
    assert "[EMAIL]" in preview
    # Nothing else in the record carries the text.
    without = {k: v for k, v in rec.items() if k != "prompt_preview"}
    assert "Contact" not in json.dumps(without)
