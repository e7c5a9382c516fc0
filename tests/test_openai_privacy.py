"""Prompts never leave the request: distinctive canary strings sent in every prompt shape,
streamed and not, served, refused and failed, appear in no log file, no filter-state value
and no metric name."""
import json
import os

import pytest

from client import HOST_B, KEY_B, call, chat_body
from conftest import demo_config
from openai_helpers import PatchedTopology, add_state_log, new_rid, record_for, state_keys

# Distinctive, and unlike anything the gateway or Envoy would print by accident.
CANARIES = [f"zqx{tag}canary{n}" for n, tag in enumerate(
    ["chat", "part", "sys", "embed", "embedlist", "prompt", "promptlist", "bad", "deny", "fail",
     "stream", "split", "tool", "resp"])]


@pytest.fixture(scope="module")
def gw():
    holder = {}

    def patch(doc):
        holder["path"] = os.path.join(topo.log_dir, "state.log")
        add_state_log(doc, holder["path"])

    # Every filter-state key is written and logged, so every one is searched for canaries.
    topo = PatchedTopology(patch=patch, plugin_config=dict(demo_config(), filter_state="full"),
                           concurrency=1)
    with topo:
        topo.state_log = holder["path"]
        yield topo


def canary_requests():
    c = iter(CANARIES)
    yield "/v1/chat/completions", chat_body(f"hello {next(c)} there"), {}
    yield "/v1/chat/completions", {"model": "llama3-8b", "messages": [
        {"role": "user", "content": [{"type": "text", "text": f"part {next(c)}"},
                                     {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "system", "content": next(c)}]}, {}
    yield "/v1/embeddings", {"model": "bge-small", "input": next(c)}, {}
    yield "/v1/embeddings", {"model": "bge-small", "input": ["a", next(c)]}, {}
    yield "/v1/completions", {"model": "llama3-8b", "prompt": next(c), "max_tokens": 2}, {}
    yield "/v1/completions", {"model": "llama3-8b", "prompt": ["b", next(c)], "max_tokens": 2}, {}
    # Refused: wrong type next to a canary, a forbidden model, and an upstream failure.
    yield "/v1/chat/completions", {"model": "llama3-8b", "stream": "no",
                                   "messages": [{"role": "user", "content": next(c)}]}, {}
    yield "/v1/chat/completions", chat_body(next(c), model="gpt-4o"), {}
    yield "/v1/chat/completions", chat_body(next(c)), {"x-mock-status": "503"}
    # Streams, including one cut into 7-byte frames.
    yield "/v1/chat/completions", chat_body(next(c), stream=True, max_tokens=3), {}
    yield "/v1/chat/completions", chat_body(next(c), stream=True, max_tokens=3), {"x-mock-chunk-bytes": "7"}
    yield "/v1/chat/completions", chat_body(next(c), tools=[{"type": "function", "function": {
        "name": "lookup", "description": "x"}}]), {}
    yield "/v1/completions", {"model": "llama3-8b", "prompt": next(c), "stream": True, "max_tokens": 2}, {}


def test_canary_prompts_appear_nowhere(gw):
    rids = []
    for path, body, headers in canary_requests():
        rid = new_rid("priv")
        rids.append(rid)
        call(gw, path, body, headers=dict(headers, **{"x-request-id": rid})).content
    # tenant-b, refused route (the body is never read) with a canary anyway.
    rid = new_rid("priv")
    rids.append(rid)
    call(gw, "/v1/chat/completions", chat_body(CANARIES[-1]), host=HOST_B, key=KEY_B,
         headers={"x-request-id": rid}).content
    for rid in rids:
        record_for(gw, rid)

    # Non-vacuous: every request left a record and a filter-state line, and the state log
    # carries the values the contract promises.
    with open(gw.state_log) as f:
        state_lines = [l for l in f if l.strip()]
    assert len(state_lines) >= len(rids)
    for key in ["ai.tenant", "ai.model", "ai.prompt_blake3", "ai.record", "ai.audit"]:
        assert key in state_keys()
        assert f"{key}=" in state_lines[0]
    assert any("ai.prompt_blake3=" in l and "ai.prompt_blake3=-" not in l for l in state_lines)

    haystacks = {}
    for base in {gw.log_dir, gw.workdir}:
        for dirpath, _, files in os.walk(base):
            for name in files:
                path = os.path.join(dirpath, name)
                if name.endswith((".yaml", ".wasm")):
                    continue  # our own bootstrap
                with open(path, "rb") as f:
                    haystacks[path] = f.read().decode("utf-8", "replace")
    assert any(p.endswith("access.log") for p in haystacks)
    assert any(p.endswith("audit.log") for p in haystacks)
    assert any(p.endswith("envoy.log") for p in haystacks)
    haystacks["/stats"] = gw.admin("/stats")
    haystacks["/stats/prometheus"] = gw.admin("/stats/prometheus")
    assert "ai_gateway_requests_total" in haystacks["/stats/prometheus"]
    for where, text in haystacks.items():
        lowered = text.lower()
        for canary in CANARIES:
            assert canary not in lowered, f"{canary} leaked into {where}"
        assert "zqx" not in lowered, f"part of a canary leaked into {where}"


def test_records_never_hold_prompt_fields(gw):
    rid = new_rid("priv")
    call(gw, "/v1/chat/completions", chat_body("a quiet prompt"), headers={"x-request-id": rid})
    rec, audit = record_for(gw, rid)
    text = json.dumps(rec) + json.dumps(audit)
    assert "quiet" not in text
    assert audit["sensitive_payload_logged"] is False
    assert "prompt_preview" not in rec
