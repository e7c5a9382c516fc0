"""Backend credentials (docs/openai-traffic.md, `models[].backend_credential`): a backend
that requires its own API key (vLLM's `--api-key`, a hosted endpoint) gets it from the
gateway, read from the Wasm VM's environment; the client's key never reaches it, and the
backend's key appears in no log, record or response.

The mock backends of llama3-8b require `authorization: Bearer <key>` (mock-llm
`--require-header`), a real Envoy 1.40 runs the built module.
"""
import os

from client import HOST_A, KEY_A, call, chat_body
from conftest import demo_config
from openai_helpers import new_rid, record_for

SECRET = "backend-key-5f0c2a9e-never-logged"
ENV = "AI_GATEWAY_BACKEND_KEY"
CHAT_BACKENDS = ["chat-llama3-8b-v1", "chat-llama3-8b-v2"]


def config(with_credential):
    cfg = demo_config()
    if with_credential:
        model = next(m for m in cfg["models"] if m["name"] == "llama3-8b")
        model["backend_credential"] = {"header": "authorization", "value_env": ENV, "prefix": "Bearer "}
    return cfg


def gateway(make_gateway, with_credential):
    require = ["--require-header", f"authorization:Bearer {SECRET}"]
    return make_gateway(plugin_config=config(with_credential), env={ENV: SECRET},
                        mock_args={name: require for name in CHAT_BACKENDS})


def test_the_backend_gets_its_key_and_never_the_clients(make_gateway):
    gw = gateway(make_gateway, with_credential=True)
    for stream in (False, True):
        rid = new_rid("cred")
        r = call(gw, "/v1/chat/completions", chat_body("hello", stream=stream), host=HOST_A, key=KEY_A,
                 headers={"x-request-id": rid})
        assert r.status_code == 200, r.text
        rec, audit = record_for(gw, rid)
        assert rec["http_status"] == 200 and audit["decision"] == "allow"
    # Another model's backends need no key and get none (embeddings on bge-small).
    r = call(gw, "/v1/embeddings", {"model": "bge-small", "input": "x"}, host=HOST_A, key=KEY_A)
    assert r.status_code == 200, r.text
    gw.wait_records(3)
    logs = gw.envoy_output()
    for name in ("access", "audit"):
        path = os.path.join(gw.log_dir, f"{name}.log")
        with open(path) as f:
            logs += f.read()
    assert SECRET not in logs, "the backend key leaked into a log"
    assert KEY_A not in logs


def test_without_the_credential_the_backend_refuses(make_gateway):
    gw = gateway(make_gateway, with_credential=False)
    rid = new_rid("nocred")
    r = call(gw, "/v1/chat/completions", chat_body("hello"), host=HOST_A, key=KEY_A,
             headers={"x-request-id": rid})
    # The client's own key is stripped, and nothing replaces it: the backend says 401.
    assert r.status_code == 401, r.text
    assert "invalid_api_key" in r.text and SECRET not in r.text
