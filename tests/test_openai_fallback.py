"""The fallback for hosts that cannot hold request headers (Istio's WasmPlugin and Envoy
Gateway's EnvoyExtensionPolicy do not expose `allow_on_headers_stop_iteration`): with
`routing.hold_headers_for_body: false` the filter forwards the headers at once, routes by
path only, and still enforces everything at body time. With the default (hold on) such a
host gets 408s and a warning naming the setting: never a hang, never a request through
unrouted."""
import json

import pytest
import requests

from client import HOST_A, KEY_A, assert_openai_error, call, chat_body
from conftest import demo_config
from openai_helpers import PatchedTopology, estimate_tokens, hcm, new_rid, record_for, sse_events, streamed_text

CHAT = "/v1/chat/completions"


def without_header_hold(doc):
    """The Wasm filter as Istio and Envoy Gateway render it: no header hold."""
    for f in hcm(doc)["http_filters"]:
        if f["name"] == "envoy.filters.http.wasm":
            f["typed_config"]["config"]["allow_on_headers_stop_iteration"] = False


@pytest.fixture(scope="module")
def gw():
    cfg = demo_config()
    cfg["routing"] = {"hold_headers_for_body": False}
    cfg["limits"]["max_request_body_bytes"] = 16 * 1024
    with PatchedTopology(patch=without_header_hold, plugin_config=cfg, concurrency=1) as topo:
        yield topo


def test_requests_flow_and_route_by_path(gw):
    rid = new_rid("fb")
    # bge-small on the chat path: without the header hold the route was chosen from the
    # path before the body was read, so it goes to the chat backend. That is the trade-off.
    r = call(gw, CHAT, chat_body(model="bge-small"), headers={"x-request-id": rid}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["x-backend"].startswith("chat-llama3-8b-v")
    received = json.loads(r.headers["x-mock-received"])
    assert "x-ai-model" not in received, "headers were gone before the model was known"
    assert received["x-ai-tenant"] == ["tenant-a"]
    rec, _ = record_for(gw, rid)
    assert rec["model"] == "bge-small"
    assert rec["model_route"] == r.headers["x-backend"]
    assert rec["prompt_tokens"] is not None


def test_body_rules_are_still_enforced(gw):
    r = call(gw, CHAT, chat_body(model="gpt-4o"), timeout=10)
    assert_openai_error(r, 404, "model_not_found")
    r = call(gw, CHAT, raw='{"model":"llama3-8b","messages":"x"}', timeout=10)
    assert_openai_error(r, 400, "invalid_type")
    r = call(gw, CHAT, raw="", timeout=10)
    assert_openai_error(r, 400, "empty_body")

    def big():
        yield b'{"model":"llama3-8b","messages":[{"role":"user","content":"'
        for _ in range(6):
            yield b"w" * 4096
        yield b'"}]}'

    rid = new_rid("fb413")
    try:
        r = requests.post(gw.base_url + CHAT, data=big(), timeout=10,
                          headers={"Host": HOST_A, "Authorization": f"Bearer {KEY_A}", "x-request-id": rid})
        assert_openai_error(r, 413, "request_too_large")
    except requests.ConnectionError:
        pass
    rec, audit = record_for(gw, rid)
    assert rec["http_status"] == 413 and audit["reason"] == "body_too_large"


def test_streams_without_injection_are_estimated(gw):
    """No header hold: the body cannot be rewritten (Content-Length already went out), so
    usage is not injected and the filter estimates completion tokens from the stream."""
    rid = new_rid("fbstream")
    raw = json.dumps(chat_body("stream without hold", stream=True, max_tokens=4))
    r = call(gw, CHAT, raw=raw, headers={"x-request-id": rid}, timeout=10)
    assert r.status_code == 200
    assert r.headers["x-mock-include-usage"] == "false"
    assert int(r.headers["x-mock-request-bytes"]) == len(raw)
    events, done = sse_events(r.text)
    assert done
    rec, _ = record_for(gw, rid)
    assert rec["usage_estimated"] is True
    assert rec["completion_tokens"] == estimate_tokens(streamed_text(events))
    assert rec["ttft_ms"] is not None and rec["ttft_ms"] <= rec["latency_ms"]


@pytest.fixture(scope="module")
def gw_default_hold():
    """Hold on (the default) on a host that does not allow header hold, with a short body
    timeout so the test is quick."""
    cfg = demo_config()
    cfg["routing"] = {"hold_timeout_ms": 200}
    with PatchedTopology(patch=without_header_hold, plugin_config=cfg, concurrency=1) as topo:
        yield topo


@pytest.mark.wasm_only("allow_on_headers_stop_iteration is the Wasm filter's setting; a dynamic "
                      "module's header hold always lets the body through")
def test_hold_on_a_host_without_the_flag_answers_408_and_says_what_to_change(gw_default_hold):
    gw = gw_default_hold
    # Envoy never delivers the body of a held request here: each one ends in 408 after
    # the body timeout (never a hang, never a request let through unrouted), and the
    # worker keeps holding (a client's delay changes nothing for later requests).
    for i in range(5):
        rid = new_rid()
        r = call(gw, CHAT, chat_body(f"held {i}"), headers={"x-request-id": rid}, timeout=20)
        assert_openai_error(r, 408, "request_timeout")
        assert "x-backend" not in r.headers
        rec, audit = record_for(gw, rid)
        assert audit["reason"] == "body_timeout" and rec["model_route"] is None
    # Body-less routes are not held and work.
    assert call(gw, "/v1/models", timeout=20).status_code == 200
    out = gw.envoy_output()
    assert "set routing.hold_headers_for_body to false" in out
    assert out.count("set routing.hold_headers_for_body to false") == 1, "logged once"
