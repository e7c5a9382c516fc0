"""The basic request path end to end: authenticated request, 401 shape, anti-spoofing, access log."""
import json

from client import HOST_A, KEY_A, assert_openai_error, call, chat_body


def test_valid_key_gets_200_and_tenant_header_upstream(demo):
    r = call(demo, "/v1/chat/completions", chat_body())
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "chat.completion"
    received = json.loads(r.headers["x-mock-received"])
    assert received["x-ai-tenant"] == ["tenant-a"]
    assert received["x-ai-subject"] == ["svc:agent-platform"]


def test_credentials_stay_at_the_gateway(demo):
    for headers in ({}, {"x-api-key": "sk-tenant-a-demo"}, {"api-key": "sk-tenant-a-demo"}):
        r = call(demo, "/v1/chat/completions", chat_body(), headers=headers)
        assert r.status_code == 200, r.text
        received = json.loads(r.headers["x-mock-received"])
        for name in ("authorization", "x-api-key", "api-key"):
            assert name not in received, (headers, received)


def test_missing_key_is_401_openai_shaped(demo):
    r = call(demo, "/v1/chat/completions", chat_body(), key=None)
    # OpenAI's answer to a missing key: `code` is a JSON null.
    err = assert_openai_error(r, 401, None, type="invalid_request_error")
    assert err["message"].startswith("You didn't provide an API key.")
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_unknown_key_is_401(demo):
    r = call(demo, "/v1/models", key="sk-not-a-real-key")
    err = assert_openai_error(r, 401, "invalid_api_key", type="invalid_request_error")
    assert "not-a-real" not in err["message"]


def test_spoofed_tenant_header_never_reaches_backend(demo):
    spoof = {
        "x-ai-tenant": "tenant-b",
        "X-AI-Subject": "svc:root",
        "x-ai-model": "bge-small",
        "x-gateway-model-name": "bge-small",
    }
    r = call(demo, "/v1/chat/completions", chat_body(), headers=spoof)
    assert r.status_code == 200, r.text
    received = json.loads(r.headers["x-mock-received"])
    assert received["x-ai-tenant"] == ["tenant-a"]
    assert received["x-ai-subject"] == ["svc:agent-platform"]
    assert received["x-ai-model"] == ["llama3-8b"]
    assert r.headers["x-backend"].startswith("chat-llama3-8b")


def test_access_log_carries_tenant(demo):
    rid = "req-foundation-log-1"
    r = call(demo, "/v1/chat/completions", chat_body(), headers={"x-request-id": rid})
    assert r.status_code == 200
    recs = [x for x in demo.wait_records(1)[0] if x.get("client_request_id") == rid]
    deadline_recs = recs or [x for x in demo.wait_records(100, timeout=3)[0] if x.get("client_request_id") == rid]
    assert len(deadline_recs) == 1
    rec = deadline_recs[0]
    assert rec["tenant"] == "tenant-a"
    assert rec["route"] == "/v1/chat/completions"
    assert rec["http_status"] == 200
    assert isinstance(rec["latency_ms"], int)
    assert rec["client_request_id"] == rid
    # The record's id is the gateway's own, and the response carries it.
    assert rec["request_id"] != rid and rec["request_id"] == r.headers["x-request-id"]
