"""Prompts never leave the request: distinctive canary strings sent in every prompt shape,
streamed and not, served, refused and failed, appear in no log file, no filter-state value
and no metric name. With previews on, every built-in secret class is masked in the
record's `prompt_preview` and appears nowhere else either."""
import base64
import json
import os
import re

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



# One canary per built-in secret class of the preview redactor (docs/openai-traffic.md):
# (text in the prompt, the same text masked, the parts that must never be logged).
_BASIC = base64.b64encode(b"zqxbasicuser:zqxbasicpw").decode()
_PEM_BODY = "MIIEpAIBAAKCAQEAzqxPemBody0123456789abcdef/ZqxPemLine2+abcdefgh"
SECRET_CANARIES = [
    ("gh ghp_ZqxGithub0123456789abcdefghijklmnopq", "gh [GITHUB_TOKEN]",
     ["ZqxGithub0123456789"]),
    ("slack xoxb-123456789012-987654321098-ZqxSlackBotToken0123", "slack [SLACK_TOKEN]",
     ["ZqxSlackBotToken"]),
    ("hook https://hooks.slack.com/services/T0ZQX0000/B0ZQX0000/ZqxWebhookSecret01234567",
     "hook [SLACK_WEBHOOK]", ["T0ZQX0000", "ZqxWebhookSecret"]),
    ("maps AIzaSyZqxGoogleApiKey0123456789abcdefgh", "maps [GOOGLE_API_KEY]",
     ["ZqxGoogleApiKey"]),
    ("oauth ya29.a0ZqxGoogleOauth_0123456789-abcdefgh", "oauth [GOOGLE_OAUTH]",
     ["ZqxGoogleOauth"]),
    ("stripe sk_live_ZqxStripeKey0123456789abcdef", "stripe [STRIPE_KEY]", ["ZqxStripeKey"]),
    ("hf hf_ZqxHuggingFaceTokenAbCdEfGhIjKlMnOp", "hf [HF_TOKEN]", ["ZqxHuggingFace"]),
    ("aws_access_key_id = AKIAZQXCANARY0123456", "aws_access_key_id = [AWS_KEY]",
     ["AKIAZQXCANARY"]),
    ("aws_secret_access_key = ZqxAwsSecretKey/0123456789abcdefGHIJKLMN",
     "aws_secret_access_key = [AWS_SECRET]", ["ZqxAwsSecretKey"]),
    (f"-----BEGIN RSA PRIVATE KEY-----\n{_PEM_BODY}\n-----END RSA PRIVATE KEY-----",
     "[PRIVATE_KEY]", ["zqxPemBody", "ZqxPemLine2"]),
    ('password="zqx correct horse"', 'password="[SECRET]"', ["zqx correct horse"]),
    ('{"api_key": "ZqxJsonApiKey42"}', '{"api_key": "[SECRET]"}', ["ZqxJsonApiKey42"]),
    (f"Authorization: Basic {_BASIC}", "Authorization: Basic [BASIC]", [_BASIC]),
    ("db postgres://zqxdbuser:zqxdbpass@db.internal.example:5432/app",
     "db postgres://[CREDENTIALS]@db.internal.example:5432/app", ["zqxdbuser", "zqxdbpass"]),
    ("iban DE89 3704 0044 0532 0130 00", "iban [IBAN]", ["3704 0044 0532"]),
    ("v6 2001:db8:85a3::8a2e:370:7334", "v6 [IPV6]", ["2001:db8:85a3", "8a2e:370:7334"]),
    ("full-width ｓｋ－ｚｑｘｆｕｌｌｗｉｄｔｈ１２３４５６７８９０", "full-width [API_KEY]",
     ["ｚｑｘｆｕｌｌｗｉｄｔｈ", "zqxfullwidth"]),
    # Near-misses stay as they are, so the preview is not simply blanked.
    ("at 10:20:30 std::vector task-list", "at 10:20:30 std::vector task-list", []),
    # Last, a private key cut off by the end of the prompt: masked to the end.
    ("-----BEGIN EC PRIVATE KEY----- MHcCAQEEIZqxTruncatedKeyMaterial0123", "[PRIVATE_KEY]",
     ["ZqxTruncatedKeyMaterial"]),
]


def _forms(secret):
    """The ways a leaked value could be spelled in a log line: as is and JSON-escaped."""
    escaped = json.dumps(secret)[1:-1]
    upper = re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), escaped)
    return {secret, escaped, upper}


@pytest.fixture(scope="module")
def gw_preview():
    holder = {}

    def patch(doc):
        holder["path"] = os.path.join(topo.log_dir, "state.log")
        add_state_log(doc, holder["path"])

    cfg = dict(demo_config(), filter_state="full")
    cfg["redaction"] = dict(cfg["redaction"], prompt_preview_chars=4000)
    topo = PatchedTopology(patch=patch, plugin_config=cfg, concurrency=1)
    with topo:
        topo.state_log = holder["path"]
        yield topo


def test_preview_masks_every_secret_class(gw_preview):
    gw = gw_preview
    prompt = " | ".join(text for text, _, _ in SECRET_CANARIES)
    rid = new_rid("redact")
    r = call(gw, "/v1/chat/completions", chat_body(prompt), headers={"x-request-id": rid})
    assert r.status_code == 200, r.text[:300]
    rec, _ = record_for(gw, rid)
    # The whole prompt fits: the preview is exactly the masked prompt (newlines inside the
    # PEM block are collapsed by normalization, then masked with the block).
    assert rec["prompt_preview"] == " | ".join(masked for _, masked, _ in SECRET_CANARIES)

    with open(gw.state_log) as f:
        state = f.read()
    assert rid in state and "[GITHUB_TOKEN]" in state
    haystacks = {}
    for base in {gw.log_dir, gw.workdir}:
        for dirpath, _, files in os.walk(base):
            for name in files:
                if name.endswith((".yaml", ".wasm")):
                    continue  # our own bootstrap
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    haystacks[path] = f.read().decode("utf-8", "replace")
    assert any(p.endswith("access.log") for p in haystacks)
    haystacks["/stats"] = gw.admin("/stats")
    for where, text in haystacks.items():
        for _, _, parts in SECRET_CANARIES:
            for secret in parts:
                for form in _forms(secret):
                    assert form not in text, f"{secret!r} leaked into {where}"
