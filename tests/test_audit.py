"""The audit trail through real Envoy: exactly one audit record per request over a mixed run
(allowed, denied, aborted by the client, failed upstream), every record with the audit
contract's fields (docs/contract.md); and no secret in anything the gateway writes (canary
test)."""
import hashlib
import http.client
import json
import os
import re
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from client import HOST_A, HOST_B, KEY_A, KEY_B, chat_body
from conftest import demo_config
from harness.launcher import Topology

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
CONTRACT = ["timestamp", "tenant", "subject", "route", "model_route", "decision", "request_id",
            "client_request_id", "sensitive_payload_logged"]


def no_quota_config():
    """The demo configuration without quotas, so every outcome below is deterministic."""
    cfg = demo_config()
    for t in cfg["tenants"]:
        t.pop("quota", None)
    return cfg


def wait_audits(gw, n, timeout=60.0):
    deadline = time.time() + timeout
    audits = []
    while time.time() < deadline:
        audits = gw.audits()
        if len(audits) >= n:
            time.sleep(0.5)  # a duplicate would land right behind
            return gw.audits()
        time.sleep(0.1)
    return audits


def check_contract(a):
    for k in CONTRACT:
        assert k in a, (k, a)
    assert TIMESTAMP.match(a["timestamp"]), a["timestamp"]
    assert a["decision"] in ("allow", "deny")
    assert a["sensitive_payload_logged"] is False
    if a["decision"] == "deny":
        assert isinstance(a["reason"], str) and a["reason"], a
        assert a["model_route"] is None, a
    else:
        assert "reason" not in a, a
        assert isinstance(a["tenant"], str) and isinstance(a["subject"], str), a


# ---------------------------------------------------------------------------------------
# The mixed run.

def send(gw, method, path, host, headers, body, timeout=30):
    """A plain request, read to the end. Returns the status."""
    h = {"Host": host, **headers}
    if body is not None:
        h["Content-Type"] = "application/json"
    r = requests.request(method, gw.base_url + path, headers=h,
                         data=json.dumps(body) if body is not None else None, timeout=timeout)
    r.content  # noqa: B018 - read the whole response
    return r.status_code


def abort_mid_stream(gw, headers):
    """Start a long stream, read its first bytes, then hang up."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.gateway_port, timeout=30)
    body = json.dumps(chat_body("a slow stream", stream=True, max_tokens=4000)).encode()
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Host": HOST_A, "Authorization": f"Bearer {KEY_A}",
                          "Content-Type": "application/json", **headers})
    resp = conn.getresponse()
    status = resp.status
    first = resp.read1(64) if hasattr(resp, "read1") else resp.read(64)
    assert first, "the stream started"
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    return status


def abort_before_response(gw, headers):
    """Ask for a slow first byte and hang up before anything arrives."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.gateway_port, timeout=0.3)
    body = json.dumps(chat_body("a slow answer")).encode()
    try:
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"Host": HOST_A, "Authorization": f"Bearer {KEY_A}",
                              "Content-Type": "application/json", "x-mock-ttft-ms": "5000",
                              **headers})
        conn.getresponse()
        raise AssertionError("the response should not have arrived yet")
    except (socket.timeout, TimeoutError):
        pass
    finally:
        if conn.sock is not None:
            conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
    return None


CHAT = "/v1/chat/completions"
EMB = "/v1/embeddings"
EMB_BODY = {"model": "bge-small", "input": "some words to embed"}

# name -> (send function args, expected decision, reason, status). Status None: not fixed.
KINDS = {
    "allow_chat": (("POST", CHAT, HOST_A, {"Authorization": f"Bearer {KEY_A}"}, chat_body()),
                   "allow", None, 200),
    "allow_stream": (("POST", CHAT, HOST_A, {"x-api-key": KEY_A},
                      chat_body("stream me", stream=True, max_tokens=3)), "allow", None, 200),
    "allow_embeddings": (("POST", EMB, HOST_B, {"api-key": KEY_B}, EMB_BODY), "allow", None, 200),
    "allow_models": (("GET", "/v1/models", HOST_A, {"x-api-key": KEY_A}, None), "allow", None, 200),
    "upstream_503": (("POST", CHAT, HOST_A, {"x-api-key": KEY_A, "x-mock-status": "503"},
                      chat_body()), "allow", None, 503),
    "upstream_500_emb": (("POST", EMB, HOST_B, {"x-api-key": KEY_B, "x-mock-status": "500"},
                          EMB_BODY), "allow", None, 500),
    "deny_missing": (("POST", CHAT, HOST_A, {}, chat_body()), "deny", "missing_credentials", 401),
    "deny_invalid": (("POST", CHAT, HOST_A, {"x-api-key": "sk-nope"}, chat_body()), "deny",
                     "invalid_credentials", 401),
    "deny_conflicting": (("GET", "/v1/models", HOST_A, {"x-api-key": KEY_A, "api-key": KEY_B},
                          None), "deny", "conflicting_credentials", 401),
    "deny_host": (("POST", EMB, HOST_A, {"x-api-key": KEY_B}, EMB_BODY), "deny", "host_mismatch",
                  403),
    "deny_route": (("POST", CHAT, HOST_B, {"x-api-key": KEY_B}, chat_body()), "deny",
                   "route_forbidden", 403),
    "deny_model": (("POST", EMB, HOST_B, {"x-api-key": KEY_B},
                    {"model": "llama3-8b", "input": "x"}), "deny", "model_forbidden", 404),
    "deny_body": (("POST", CHAT, HOST_A, {"x-api-key": KEY_A}, {"messages": "no model"}), "deny",
                  "invalid_body", 400),
}
# How many of each in a round; a round is 40 requests, and 25 rounds make 1,000 requests,
# plus the client aborts and the stopped-backend phase.
PER_ROUND = {"allow_chat": 6, "allow_stream": 4, "allow_embeddings": 4, "allow_models": 2,
             "upstream_503": 3, "upstream_500_emb": 1, "deny_missing": 3, "deny_invalid": 3,
             "deny_conflicting": 2, "deny_host": 3, "deny_route": 3, "deny_model": 3,
             "deny_body": 3}
ROUNDS = 25
ABORTS_MID_STREAM = 40
ABORTS_BEFORE_RESPONSE = 20
STOPPED_BACKEND = 40


def test_exactly_one_audit_record_per_request_over_a_mixed_run():
    assert sum(PER_ROUND.values()) == 40
    # Streams are paced (100 tokens/s) so an aborted one is still running when the
    # client hangs up; allowed streams ask for 3 tokens.
    mock_args = {"*": ["--tokens-per-second", "100"]}
    with Topology(plugin_config=no_quota_config(), concurrency=2, mock_args=mock_args) as gw:
        expected = {}  # request id -> (kind, decision, reason, status)
        jobs = []
        for rnd in range(ROUNDS):
            for kind, n in PER_ROUND.items():
                for i in range(n):
                    request_id = f"mix-{rnd}-{kind}-{i}-{uuid.uuid4().hex[:8]}"
                    args, decision, reason, status = KINDS[kind]
                    expected[request_id] = (kind, decision, reason, status)
                    jobs.append((request_id, args))
        for i in range(ABORTS_MID_STREAM):
            request_id = f"mix-abort-stream-{i}-{uuid.uuid4().hex[:8]}"
            expected[request_id] = ("abort_mid_stream", "allow", None, None)
            jobs.append((request_id, "abort_mid_stream"))
        for i in range(ABORTS_BEFORE_RESPONSE):
            request_id = f"mix-abort-early-{i}-{uuid.uuid4().hex[:8]}"
            expected[request_id] = ("abort_before_response", "allow", None, None)
            jobs.append((request_id, "abort_before_response"))
        # Interleave the kinds (deterministically), so denials, aborts and successes share
        # connections and workers.
        jobs.sort(key=lambda j: hashlib.sha256(j[0].encode()).hexdigest())

        def run(job):
            request_id, args = job
            rid_header = {"x-request-id": request_id}
            if args == "abort_mid_stream":
                return request_id, abort_mid_stream(gw, rid_header)
            if args == "abort_before_response":
                return request_id, abort_before_response(gw, rid_header)
            method, path, host, headers, body = args
            return request_id, send(gw, method, path, host, {**headers, **rid_header}, body)

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = dict(pool.map(run, jobs))
        for request_id, status in statuses.items():
            want = expected[request_id][3]
            if want is not None:
                assert status == want, (request_id, status)

        # A backend goes away: Envoy answers 503 itself; the filter had allowed them.
        gw.stop_mock("embed-bge-small-v1")
        for i in range(STOPPED_BACKEND):
            request_id = f"mix-down-{i}-{uuid.uuid4().hex[:8]}"
            expected[request_id] = ("backend_down", "allow", None, 503)
            status = send(gw, "POST", EMB, HOST_B, {"x-api-key": KEY_B, "x-request-id": request_id},
                          EMB_BODY)
            assert status == 503

        total = len(expected)
        assert total >= 1000
        audits = wait_audits(gw, total)
        records = gw.records()

    by_id = {}
    for a in audits:
        by_id.setdefault(a.get("client_request_id"), []).append(a)
    assert len(audits) == total, f"{len(audits)} audit lines for {total} requests"
    missing = [r for r in expected if r not in by_id]
    assert not missing, missing[:5]
    duplicated = [r for r, recs in by_id.items() if len(recs) != 1]
    assert not duplicated, duplicated[:5]

    seen_kinds = set()
    for request_id, (kind, decision, reason, status) in expected.items():
        a = by_id[request_id][0]
        check_contract(a)
        assert a["decision"] == decision, (kind, a)
        assert a.get("reason") == reason, (kind, a)
        if status is not None:
            assert a["http_status"] == status, (kind, a)
        if decision == "allow":
            assert a["route"] in (CHAT, EMB, "/v1/models"), a
            assert a["model_route"] in ("chat-llama3-8b-v1", "chat-llama3-8b-v2",
                                        "embed-bge-small-v1"), a
        seen_kinds.add(kind)
    assert {"abort_mid_stream", "abort_before_response", "backend_down", "upstream_503",
            "deny_model", "allow_stream"} <= seen_kinds

    # The gateway record (access.log) is written on the same path: one per request too.
    rec_ids = [r.get("client_request_id") for r in records]
    assert len(rec_ids) == total and set(rec_ids) == set(expected)


# ---------------------------------------------------------------------------------------
# Canary: no credential, key digest or prompt text in anything the gateway writes.

def test_canaries_appear_in_no_log_and_no_stat():
    tag = uuid.uuid4().hex[:12]
    key_canary = f"sk-CANARYKEY{tag}"           # a valid key of its own tenant
    bad_key_canary = f"sk-CANARYBADKEY{tag}"    # a key no tenant has
    prompt_canary = f"CANARYPROMPT{tag}"
    canaries = [key_canary, bad_key_canary, prompt_canary, f"CANARYKEY{tag}",
                f"CANARYBADKEY{tag}", tag]
    digests = [hashlib.sha256(k.encode()).hexdigest() for k in (key_canary, bad_key_canary)]

    cfg = no_quota_config()
    cfg["tenants"].append({
        "name": "tenant-canary",
        "hosts": ["canary.ai.example.com"],
        "api_keys": [{"id": "svc:canary", "sha256": digests[0]}],
    })

    class VerboseTopology(Topology):
        wasm_log_level = "debug"

    host = "canary.ai.example.com"
    prompt = f"please keep this secret {prompt_canary} and also {prompt_canary}-2"
    with VerboseTopology(plugin_config=cfg, concurrency=1) as gw:
        n = 0

        def go(method, path, headers, body=None, raw=None, h=host):
            nonlocal n
            n += 1
            hh = {"Host": h, "x-request-id": f"canary-{n}", **headers}
            data = raw if raw is not None else (json.dumps(body) if body is not None else None)
            if data is not None:
                hh["Content-Type"] = "application/json"
            return requests.request(method, gw.base_url + path, headers=hh, data=data, timeout=30)

        auth = {"Authorization": f"Bearer {key_canary}"}
        assert go("POST", CHAT, auth, chat_body(prompt)).status_code == 200
        r = go("POST", CHAT, {"x-api-key": key_canary}, chat_body(prompt, stream=True))
        assert r.status_code == 200 and "[DONE]" in r.text
        assert go("POST", "/v1/completions", {"api-key": key_canary},
                  {"model": "llama3-8b", "prompt": prompt}).status_code == 200
        assert go("POST", EMB, auth, {"model": "bge-small", "input": [prompt]}).status_code == 200
        # Upstream failure with the prompt.
        assert go("POST", CHAT, {**auth, "x-mock-status": "503"},
                  chat_body(prompt)).status_code == 503
        # Refusals carrying the canaries.
        for headers in ({"Authorization": f"Bearer {bad_key_canary}"},
                        {"x-api-key": bad_key_canary},
                        {"api-key": bad_key_canary},
                        {"Authorization": f"Basic {bad_key_canary}"},
                        {"x-api-key": key_canary, "api-key": bad_key_canary},
                        {"x-api-key": key_canary, "Authorization": f"Bearer {KEY_A}"}):
            assert go("POST", CHAT, headers, chat_body(prompt)).status_code == 401
        assert go("POST", CHAT, auth, chat_body(prompt), h=HOST_A).status_code == 403
        assert go("POST", CHAT, auth, chat_body(prompt, model="no-such-model")).status_code == 404
        assert go("POST", CHAT, auth, raw='{"model": "llama3-8b", "messages": "' + prompt
                  ).status_code == 400
        assert go("POST", CHAT, auth, {"model": "llama3-8b", "messages": prompt}
                  ).status_code == 400

        audits = wait_audits(gw, n)
        assert len(audits) == n, "every canary request has its record (the check is not vacuous)"
        stats = gw.admin("/stats") + gw.admin("/stats/prometheus") + gw.admin("/stats?format=json")
        files = {}
        for name in os.listdir(gw.log_dir):
            with open(os.path.join(gw.log_dir, name), errors="replace") as f:
                files[name] = f.read()
        files["envoy.log"] = gw.envoy_output()
        assert "configuration loaded" in files["envoy.log"], "Envoy's log is the one we think"

    assert {"access.log", "audit.log"} <= set(files)
    for name, text in list(files.items()) + [("/stats", stats)]:
        for c in canaries + digests:
            assert c not in text, f"{c!r} found in {name}"
        # Nor the key with its prefix cut or the prompt in another case.
        assert tag.upper() not in text and tag not in text.lower(), name
