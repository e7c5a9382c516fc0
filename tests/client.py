"""Small HTTP helpers for the integration tests."""
import json

import requests

HOST_A = "tenant-a.ai.example.com"
HOST_B = "tenant-b.ai.example.com"
KEY_A = "sk-tenant-a-demo"
KEY_B = "sk-tenant-b-demo"


def chat_body(content="hello gateway", model="llama3-8b", **extra):
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    body.update(extra)
    return body


def call(gw, path, body=None, host=HOST_A, key=KEY_A, headers=None, method=None, raw=None, timeout=30, stream=False):
    h = {"Host": host}
    if key:
        h["Authorization"] = f"Bearer {key}"
    if body is not None or raw is not None:
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    m = method or ("POST" if data is not None else "GET")
    return requests.request(m, gw.base_url + path, data=data, headers=h, timeout=timeout, stream=stream)


# `code` left out: not checked (None checks for OpenAI's `"code": null`).
ANY = object()


def assert_openai_error(resp, status, code=ANY, type=None):
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers.get("content-type", "").startswith("application/json")
    err = resp.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert "code" in err
    if code is not ANY:
        assert err["code"] == code, err
    if type is not None:
        assert err["type"] == type, err
    return err
