"""Identity through real Envoy: every denial reason with its OpenAI-shaped body and audit
record, the anti-spoofing rule on the wire, and JWT identity through Envoy's own
`jwt_authn` with a key generated here (never committed)."""
import base64
import http.client
import json
import os
import time
import uuid

import pytest

from harness import launcher

from client import HOST_A, HOST_B, KEY_A, KEY_B, assert_openai_error, call, chat_body
from conftest import demo_config
from harness.launcher import Topology

from harness import jwt_keys

PATH_CHAT = "/v1/chat/completions"
PATH_EMB = "/v1/embeddings"


def rid():
    return "req-id-" + uuid.uuid4().hex


def embed_body(model="bge-small", text="hello"):
    return {"model": model, "input": text}


def raw(gw, method, path, headers, body=None):
    """One request with exactly these header lines (repeats and odd spellings kept)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.gateway_port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        data = json.dumps(body).encode() if body is not None else b""
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("content-type", "application/json")
        conn.putheader("content-length", str(len(data)))
        conn.endheaders(data)
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload
    finally:
        conn.close()


def audit_for(gw, request_id, timeout=10.0):
    """The audit records carrying this request id (waits for the first to be flushed)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [a for a in gw.audits() if a.get("client_request_id") == request_id]
        if found:
            time.sleep(0.2)  # a duplicate would land with it
            return [a for a in gw.audits() if a.get("client_request_id") == request_id]
        time.sleep(0.05)
    return []


def one_audit(gw, request_id):
    found = audit_for(gw, request_id)
    assert len(found) == 1, (request_id, found)
    return found[0]


def received(resp_headers):
    return json.loads(resp_headers["x-mock-received"])


# ---------------------------------------------------------------------------------------
# Each denial reason: status, OpenAI-shaped body, WWW-Authenticate on 401, one audit record.

# What the client sees for each reason (OpenAI's status, `type` and `code`).
CLIENT_ERROR = {
    "missing_credentials": (401, "invalid_request_error", None),
    "invalid_credentials": (401, "invalid_request_error", "invalid_api_key"),
    "conflicting_credentials": (401, "invalid_request_error", "conflicting_credentials"),
    "host_mismatch": (403, "request_forbidden", "host_mismatch"),
    "route_forbidden": (403, "request_forbidden", "route_forbidden"),
    "model_forbidden": (404, "invalid_request_error", "model_not_found"),
}

DENIALS = [
    # name, path, body, host, headers, status, reason
    ("missing", PATH_CHAT, chat_body(), HOST_A, {}, 401, "missing_credentials"),
    ("invalid", PATH_CHAT, chat_body(), HOST_A, {"Authorization": "Bearer sk-wrong"}, 401,
     "invalid_credentials"),
    ("conflicting", PATH_CHAT, chat_body(), HOST_A,
     {"Authorization": f"Bearer {KEY_A}", "x-api-key": KEY_B}, 401, "conflicting_credentials"),
    ("host_mismatch", PATH_EMB, embed_body(), HOST_A, {"x-api-key": KEY_B}, 403, "host_mismatch"),
    ("route_forbidden", PATH_CHAT, chat_body(), HOST_B, {"x-api-key": KEY_B}, 403,
     "route_forbidden"),
    ("model_forbidden", PATH_EMB, embed_body(model="llama3-8b"), HOST_B, {"x-api-key": KEY_B},
     404, "model_forbidden"),
]


@pytest.mark.parametrize("name,path,body,host,headers,status,reason", DENIALS,
                         ids=[d[0] for d in DENIALS])
def test_denial_reason(demo, name, path, body, host, headers, status, reason):
    request_id = rid()
    r = call(demo, path, body, host=host, key=None,
             headers={**headers, "x-request-id": request_id})
    want_status, want_type, want_code = CLIENT_ERROR[reason]
    assert want_status == status
    err = assert_openai_error(r, status, want_code, type=want_type)
    assert err["param"] is None
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer realm=")
    else:
        assert "www-authenticate" not in r.headers
    assert "x-backend" not in r.headers, "a denied request never reaches a backend"
    a = one_audit(demo, request_id)
    assert a["decision"] == "deny"
    assert a["reason"] == reason
    assert a["http_status"] == status
    assert a["model_route"] is None
    assert a["sensitive_payload_logged"] is False
    if status in (403, 404):
        # Authenticated: the record says who was refused.
        assert a["tenant"] == "tenant-b" and a["subject"] == "svc:batch-jobs"
    else:
        assert a["tenant"] is None and a["subject"] is None


def test_allowed_request_audit(demo):
    request_id = rid()
    r = call(demo, PATH_EMB, embed_body(), host=HOST_B, key=KEY_B,
             headers={"x-request-id": request_id})
    assert r.status_code == 200, r.text
    a = one_audit(demo, request_id)
    assert a["decision"] == "allow" and "reason" not in a
    assert (a["tenant"], a["subject"], a["route"]) == ("tenant-b", "svc:batch-jobs", PATH_EMB)
    assert a["model_route"] == "embed-bge-small-v1"
    assert a["auth_source"] == "api_key"


# ---------------------------------------------------------------------------------------
# The anti-spoofing rule on the wire (Envoy's header handling included).

def test_two_different_keys_in_one_header_name(demo):
    status, _, body = raw(demo, "GET", "/v1/models",
                          [("Host", HOST_A), ("x-api-key", KEY_A), ("x-api-key", KEY_B)])
    assert status == 401 and json.loads(body)["error"]["code"] == "conflicting_credentials"


def test_same_key_twice_is_fine(demo):
    status, _, _ = raw(demo, "GET", "/v1/models",
                       [("Host", HOST_A), ("x-api-key", KEY_A), ("X-Api-Key", KEY_A),
                        ("api-key", KEY_A)])
    assert status == 200


def test_repeated_authorization_headers(demo):
    # Envoy joins repeated Authorization lines with ',' into one value: never a valid key,
    # whether the two keys agree or not.
    for second in (KEY_A, KEY_B):
        status, hdrs, body = raw(demo, "GET", "/v1/models",
                                 [("Host", HOST_A), ("Authorization", f"Bearer {KEY_A}"),
                                  ("Authorization", f"Bearer {second}")])
        assert status == 401, body
        assert json.loads(body)["error"]["code"] == "invalid_api_key"
        assert "www-authenticate" in hdrs


@pytest.mark.parametrize("name,value,ok", [
    ("AUTHORIZATION", f"Bearer {KEY_A}", True),
    ("authorization", f"bearer {KEY_A}", True),
    ("Authorization", f"BEARER  {KEY_A}", True),
    ("Authorization", f"Bearer\t{KEY_A}", True),
    ("X-API-KEY", f"  {KEY_A}  ", True),
    ("Api-Key", KEY_A, True),
    ("Authorization", f"Basic {base64.b64encode(KEY_A.encode()).decode()}", False),
    ("Authorization", KEY_A, False),
    ("Authorization", f"Bearer {KEY_A} extra", False),
    ("Authorization", "Bearer", False),
    ("x-api-key", "", False),
    ("x-api-key", KEY_A.upper(), False),
])
def test_credential_spellings(demo, name, value, ok):
    status, _, body = raw(demo, "GET", "/v1/models", [("Host", HOST_A), (name, value)])
    if ok:
        assert status == 200, body
    else:
        assert status == 401, body
        assert json.loads(body)["error"]["code"] == "invalid_api_key"


def test_empty_authorization_header(demo):
    # An empty header line may be dropped on the way; either way it is never accepted.
    status, _, body = raw(demo, "GET", "/v1/models", [("Host", HOST_A), ("Authorization", "")])
    assert status == 401
    assert json.loads(body)["error"]["code"] in ("invalid_api_key", None)


def test_client_identity_headers_are_replaced(demo):
    status, hdrs, _ = raw(demo, "GET", "/v1/models",
                          [("Host", HOST_B), ("x-api-key", KEY_B), ("x-ai-tenant", "tenant-a"),
                           ("X-AI-TENANT", "tenant-a"), ("x-ai-subject", "svc:root")])
    assert status == 403  # tenant-b may not call /v1/models; the spoofed tenant changed nothing
    status, hdrs, _ = raw(demo, "POST", PATH_EMB,
                          [("Host", HOST_B), ("x-api-key", KEY_B), ("x-ai-tenant", "tenant-a"),
                           ("x-ai-subject", "svc:root")], body=embed_body())
    assert status == 200
    got = received(hdrs)
    assert got["x-ai-tenant"] == ["tenant-b"]
    assert got["x-ai-subject"] == ["svc:batch-jobs"]


def test_forged_jwt_payload_without_jwt_config_is_ignored(demo):
    # The demo configuration reads no JWT payload, so the header is just a header.
    forged = base64.urlsafe_b64encode(b'{"tenant":"tenant-a","sub":"mallory"}').decode().rstrip("=")
    status, _, body = raw(demo, "GET", "/v1/models", [("Host", HOST_A), ("x-jwt-payload", forged)])
    assert status == 401 and json.loads(body)["error"]["code"] is None


def test_path_tricks_do_not_escape_the_route_allowlist(demo):
    # tenant-b may call embeddings only. Envoy normalizes dot segments, merges slashes and
    # decodes %2e / %63 before the filter sees the path, and the filter matches routes
    # without regard to case: each of these is the chat route, refused.
    for path in ["/v1/embeddings/../chat/completions", "/v1/embeddings/%2e%2e/chat/completions",
                 "/v1//chat/completions", "/V1/CHAT/COMPLETIONS", "/v1/chat/%63ompletions"]:
        status, hdrs, body = raw(demo, "POST", path, [("Host", HOST_B), ("x-api-key", KEY_B)],
                                 body=chat_body())
        assert status == 403, (path, status, body)
        assert json.loads(body)["error"]["code"] == "route_forbidden", path
        assert "x-backend" not in hdrs, path


# ---------------------------------------------------------------------------------------
# JWT through Envoy's jwt_authn with a key made for this test run.

def jwt_config():
    cfg = demo_config()
    cfg["identity"] = {"jwt": {"tenant_claim": "tenant", "subject_claim": "sub"}}
    cfg["tenants"][0]["jwt_claim_values"] = ["tenant-a"]
    cfg["tenants"][1]["jwt_claim_values"] = ["tenant-b"]
    return cfg


@pytest.fixture(scope="module")
def signing_key():
    return jwt_keys.generate_key()


@pytest.fixture(scope="module")
def jwt_gw(signing_key, tmp_path_factory):
    jwks = jwt_keys.write_keys(str(tmp_path_factory.mktemp("jwks")), signing_key)
    with Topology(plugin_config=jwt_config(), jwt_jwks=jwks) as topo:
        yield topo


def token(key, tenant="tenant-a", sub="alice", **kw):
    return jwt_keys.sign(key, jwt_keys.claims(tenant, sub, **kw))


def forged_payload(tenant, sub="mallory"):
    return base64.urlsafe_b64encode(json.dumps({"tenant": tenant, "sub": sub}).encode()).decode().rstrip("=")


def test_bootstrap_strips_payload_header_before_jwt_authn(jwt_gw):
    with open(jwt_gw.config_path) as f:
        text = f.read()
    strip = text.index("envoy.filters.http.header_mutation")
    jwt = text.index("envoy.filters.http.jwt_authn")
    ours = "envoy.filters.http.dynamic_modules" if launcher.host() == "native" else "envoy.filters.http.wasm"
    filt = text.index(ours)
    assert strip < jwt < filt
    assert '- remove: "x-jwt-payload"' in text
    assert "allow_missing_or_failed" in text


def test_valid_jwt_identifies_tenant_and_subject(jwt_gw, signing_key):
    request_id = rid()
    r = call(jwt_gw, PATH_CHAT, chat_body(), key=None,
             headers={"Authorization": f"Bearer {token(signing_key)}", "x-request-id": request_id})
    assert r.status_code == 200, r.text
    got = received(r.headers)
    assert got["x-ai-tenant"] == ["tenant-a"]
    assert got["x-ai-subject"] == ["jwt:alice"]
    a = one_audit(jwt_gw, request_id)
    assert (a["decision"], a["tenant"], a["subject"], a["auth_source"]) == \
        ("allow", "tenant-a", "jwt:alice", "jwt")


@pytest.mark.parametrize("case", ["expired", "other_key", "wrong_audience", "wrong_issuer",
                                  "tampered", "not_a_jwt_tenant"])
def test_bad_jwt_is_401_from_the_filter(jwt_gw, signing_key, case):
    if case == "expired":
        t = token(signing_key, ttl=-3600)
    elif case == "other_key":
        t = token(jwt_keys.generate_key())
    elif case == "wrong_audience":
        t = token(signing_key, audience="someone-else")
    elif case == "wrong_issuer":
        t = token(signing_key, issuer="https://evil.example.com")
    elif case == "tampered":
        h, _, s = token(signing_key).split(".")
        t = ".".join([h, forged_payload("tenant-b", "alice").rstrip("="), s])
    else:  # verified, but names no tenant
        t = token(signing_key, tenant="tenant-z")
    request_id = rid()
    r = call(jwt_gw, "/v1/models", key=None,
             headers={"Authorization": f"Bearer {t}", "x-request-id": request_id})
    assert_openai_error(r, 401, "invalid_api_key")
    assert r.headers["www-authenticate"].startswith("Bearer")
    a = one_audit(jwt_gw, request_id)
    assert (a["decision"], a["reason"], a["tenant"]) == ("deny", "invalid_credentials", None)


def test_jwt_on_another_tenants_host(jwt_gw, signing_key):
    r = call(jwt_gw, "/v1/models", key=None, host=HOST_B,
             headers={"Authorization": f"Bearer {token(signing_key, tenant='tenant-a')}"})
    assert_openai_error(r, 403, "host_mismatch")


def test_jwt_and_api_key_must_agree(jwt_gw, signing_key):
    t = token(signing_key, tenant="tenant-a")
    r = call(jwt_gw, "/v1/models", key=None,
             headers={"Authorization": f"Bearer {t}", "x-api-key": KEY_B})
    assert_openai_error(r, 401, "conflicting_credentials")
    r = call(jwt_gw, "/v1/models", key=None,
             headers={"Authorization": f"Bearer {t}", "x-api-key": KEY_A})
    assert r.status_code == 200
    assert received(r.headers)["x-ai-subject"] == ["jwt:alice"]  # JWT before API key


def test_api_key_in_authorization_still_works_next_to_jwt_authn(jwt_gw):
    r = call(jwt_gw, "/v1/models", key=KEY_A)
    assert r.status_code == 200, r.text
    assert received(r.headers)["x-ai-subject"] == ["svc:agent-platform"]


def test_forged_payload_header_alone(jwt_gw):
    request_id = rid()
    status, _, body = raw(jwt_gw, "GET", "/v1/models",
                          [("Host", HOST_A), ("x-jwt-payload", forged_payload("tenant-a")),
                           ("x-request-id", request_id)])
    assert status == 401 and json.loads(body)["error"]["code"] is None
    assert one_audit(jwt_gw, request_id)["reason"] == "missing_credentials"


def test_forged_payload_header_next_to_a_valid_jwt(jwt_gw, signing_key):
    # A forged copy claiming tenant-b next to a real tenant-a token: only the verified
    # payload reaches the filter, so the caller is tenant-a, never tenant-b.
    t = token(signing_key, tenant="tenant-a", sub="alice")
    for headers in (
        [("x-jwt-payload", forged_payload("tenant-b")), ("Authorization", f"Bearer {t}")],
        [("Authorization", f"Bearer {t}"), ("X-JWT-Payload", forged_payload("tenant-b"))],
    ):
        status, hdrs, body = raw(jwt_gw, "GET", "/v1/models", [("Host", HOST_A)] + headers)
        assert status == 200, body
        assert received(hdrs)["x-ai-tenant"] == ["tenant-a"]
        assert received(hdrs)["x-ai-subject"] == ["jwt:alice"]


def test_forged_payload_header_next_to_an_api_key(jwt_gw):
    status, hdrs, body = raw(jwt_gw, "GET", "/v1/models",
                             [("Host", HOST_B), ("x-api-key", KEY_B),
                              ("x-jwt-payload", forged_payload("tenant-b", "admin"))])
    # tenant-b may not call /v1/models: the request is judged as the key's caller.
    assert status == 403 and json.loads(body)["error"]["code"] == "route_forbidden"
    status, hdrs, body = raw(jwt_gw, "POST", PATH_EMB,
                             [("Host", HOST_B), ("x-api-key", KEY_B),
                              ("x-jwt-payload", forged_payload("tenant-b", "admin"))],
                             body=embed_body())
    assert status == 200, body
    assert received(hdrs)["x-ai-subject"] == ["svc:batch-jobs"]


class EditedTopology(Topology):
    """The rendered bootstrap, changed by `edit(text)` before Envoy starts."""

    def __init__(self, edit, **kwargs):
        super().__init__(**kwargs)
        self.edit = edit

    def render(self, plugin_config=None):
        super().render(plugin_config)
        with open(self.config_path) as f:
            text = f.read()
        with open(self.config_path, "w") as f:
            f.write(self.edit(text))


def test_jwt_authn_itself_drops_a_client_payload_header(signing_key, tmp_path):
    # What Envoy 1.40 does on its own (the bootstrap's strip removed, and jwt_authn's rule
    # narrowed to a path the request does not take): a client copy of the payload header
    # never reaches the filter. The strip stays anyway; this pins the behaviour the
    # documentation describes.
    jwks = jwt_keys.write_keys(str(tmp_path), signing_key)

    def no_strip_narrow_rule(text):
        assert '- remove: "x-jwt-payload"' in text and "match: { prefix: / }" in text
        text = text.replace('- remove: "x-jwt-payload"', '- remove: "x-not-used"')
        return text.replace("match: { prefix: / }", "match: { prefix: /v1/chat/ }")

    with EditedTopology(no_strip_narrow_rule, plugin_config=jwt_config(), jwt_jwks=jwks) as gw:
        status, _, body = raw(gw, "GET", "/v1/models",
                              [("Host", HOST_A), ("x-jwt-payload", forged_payload("tenant-a"))])
        assert status == 401 and json.loads(body)["error"]["code"] is None
        t = token(signing_key, tenant="tenant-a", sub="alice")
        status, hdrs, body = raw(gw, "POST", PATH_CHAT,
                                 [("Host", HOST_A), ("Authorization", f"Bearer {t}"),
                                  ("x-jwt-payload", forged_payload("tenant-a", "mallory"))],
                                 body=chat_body())
        assert status == 200, body
        assert received(hdrs)["x-ai-subject"] == ["jwt:alice"]


def test_payload_header_stripped_even_without_jwt_authn():
    # identity.jwt configured but no JWKS: render.py still strips the header, so no JWT
    # identity can be forged (and none works).
    with Topology(plugin_config=jwt_config()) as gw:
        with open(gw.config_path) as f:
            text = f.read()
        assert "jwt_authn" not in text and '- remove: "x-jwt-payload"' in text
        status, _, body = raw(gw, "GET", "/v1/models",
                              [("Host", HOST_A), ("x-jwt-payload", forged_payload("tenant-a"))])
        assert status == 401 and json.loads(body)["error"]["code"] is None


def test_control_without_the_strip_a_forged_payload_would_pass():
    # Control for the test above: the same bootstrap with the strip removed accepts a
    # forged payload, because the filter trusts the header as verified claims. This is
    # why the bootstrap must strip it (docs/identity.md).
    def drop_strip(text):
        assert '- remove: "x-jwt-payload"' in text
        return text.replace('- remove: "x-jwt-payload"', '- remove: "x-not-used"')

    with EditedTopology(drop_strip, plugin_config=jwt_config()) as gw:
        status, hdrs, body = raw(gw, "GET", "/v1/models",
                                 [("Host", HOST_A), ("x-jwt-payload", forged_payload("tenant-a"))])
        assert status == 200, body
        assert received(hdrs)["x-ai-subject"] == ["jwt:mallory"]


def test_jwt_authn_answering_first_still_leaves_one_audit_record(signing_key, tmp_path):
    # A stricter jwt_authn (token required) answers 401 itself, before the Wasm filter
    # sees the headers. The filter's on_log still writes the request's one record.
    jwks = jwt_keys.write_keys(str(tmp_path), signing_key)

    def strict(text):
        assert "allow_missing_or_failed: {}" in text
        return text.replace("allow_missing_or_failed: {}", "provider_name: demo")

    with EditedTopology(strict, plugin_config=jwt_config(), jwt_jwks=jwks) as gw:
        request_id = rid()
        r = call(gw, PATH_CHAT, chat_body(), key=KEY_A, headers={"x-request-id": request_id})
        assert r.status_code == 401  # jwt_authn's own reply: the key is no JWT
        a = one_audit(gw, request_id)
        assert a["decision"] == "deny"
        assert a["reason"] == "answered_before_filter"
        assert a["http_status"] == 401
        assert a["route"] == PATH_CHAT
        assert a["model_route"] is None
        ok_id = rid()
        r = call(gw, PATH_CHAT, chat_body(), key=None,
                 headers={"Authorization": f"Bearer {token(signing_key)}", "x-request-id": ok_id})
        assert r.status_code == 200
        assert one_audit(gw, ok_id)["decision"] == "allow"
