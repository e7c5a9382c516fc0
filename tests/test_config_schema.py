"""filters/config.schema.json against the filter's own parser (core/examples/check_config.rs).

1. The schema is a valid draft 2020-12 schema, and every example configuration in the repo
   (filters/demo.json, filters/demo-global.json and every pluginConfig / config embedded in filters/istio and
   filters/envoy-gateway, the native module's EnvoyExtensionPolicy included) validates against it and is
   accepted by the filter.
2. On a set of valid and invalid samples (wrong types, unknown fields at every level,
   missing required fields, bad enum values, out-of-range numbers, nulls), the schema and
   the Rust parser agree exactly.
3. What JSON Schema cannot express (cross-references, duplicates across objects, byte
   lengths, ...) is listed in the schema's `$comment` and docs/deploy.md; each of those
   is pinned here as a known difference, so the list stays true.
4. The field names and enum values the Rust parser knows (read from its own "unknown
   field / unknown variant, expected one of ..." errors) are exactly the schema's.
"""
import copy
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_PATH = os.path.join(ROOT, "filters", "config.schema.json")
DEMO_PATH = os.path.join(ROOT, "filters", "demo.json")
# make demo-global's configuration (the demo tenants with global limits).
DEMO_GLOBAL_PATH = os.path.join(ROOT, "filters", "demo-global.json")
MANIFEST_DIRS = [os.path.join(ROOT, "filters", "istio"), os.path.join(ROOT, "filters", "envoy-gateway")]

# The salt variable the manifests name (redaction.fingerprint_salt_env); the checker
# resolves it from its environment like the Wasm VM does.
SALT_ENV = "AI_GATEWAY_FINGERPRINT_SALT"
SALT_VALUE = "test-salt-0123456789abcdef0123456789"

DIGEST = "ab" * 32
WASM_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


# --- the filter's parser --------------------------------------------------------------

_CHECKER = {}


def checker_path():
    """Build core/examples/check_config.rs once (native) and return the executable's path."""
    if "path" in _CHECKER:
        return _CHECKER["path"]
    cargo = shutil.which("cargo")
    assert cargo, "cargo not found: the Rust toolchain is needed to build core/examples/check_config.rs"
    proc = subprocess.run(
        [cargo, "build", "--quiet", "-p", "ai-gateway-core", "--example", "check_config", "--message-format=json"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, f"cargo build --example check_config failed:\n{proc.stderr[-4000:]}"
    exe = None
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "check_config":
            exe = msg.get("executable") or exe
    assert exe and os.path.exists(exe), "cargo did not report the check_config executable"
    _CHECKER["path"] = exe
    return exe


def rust_check(texts, env=None):
    """Run the filter's parser on each JSON text; returns [(accepted, message)]."""
    exe = checker_path()
    run_env = {k: v for k, v in os.environ.items() if k != SALT_ENV}
    run_env.update(env if env is not None else {SALT_ENV: SALT_VALUE})
    with tempfile.TemporaryDirectory(prefix="cfg-") as tmp:
        paths = []
        for i, text in enumerate(texts):
            p = os.path.join(tmp, f"{i:04d}.json")
            with open(p, "w", encoding="utf-8") as f:
                f.write(text)
            paths.append(p)
        # Always two or more paths, so every line is `<path>: <verdict>`.
        args = paths if len(paths) > 1 else paths + [paths[0]]
        proc = subprocess.run([exe] + args, capture_output=True, text=True, env=run_env, timeout=120)
        assert proc.returncode in (0, 1), f"check_config failed to run ({proc.returncode}): {proc.stderr}"
        verdicts = {}
        for line in proc.stdout.splitlines():
            path, _, verdict = line.partition(": ")
            verdicts[path] = verdict
    out = []
    for p in paths:
        assert p in verdicts, f"no verdict for {p}: {proc.stdout}"
        out.append((verdicts[p] == "OK", verdicts[p]))
    return out


# --- the schema -----------------------------------------------------------------------

def load_schema():
    with open(SCHEMA_PATH) as f:
        return json.load(f)


def validator():
    return jsonschema.Draft202012Validator(load_schema())


def schema_errors(value):
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in validator().iter_errors(value)]


# --- example configurations in the repo -----------------------------------------------

def manifest_files():
    files = []
    for d in MANIFEST_DIRS:
        files += glob.glob(os.path.join(d, "**", "*.yaml"), recursive=True)
    return sorted(files)


def load_docs(path):
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: the CRDs are big
    with open(path) as f:
        return [d for d in yaml.load_all(f, Loader=loader) if d is not None]


def embedded_configs():
    """(label, config) for every plugin configuration embedded in a manifest.

    WasmPlugin spec.pluginConfig, TrafficExtension spec.wasm.pluginConfig,
    EnvoyExtensionPolicy spec.wasm[].config and spec.dynamicModule[].config (the native
    module's), and the Wasm filter `configuration` (a JSON string) of an EnvoyFilter
    EXTENSION_CONFIG patch.
    """
    found = []
    for path in manifest_files():
        rel = os.path.relpath(path, ROOT)
        for doc in load_docs(path):
            kind = doc.get("kind")
            name = doc.get("metadata", {}).get("name")
            spec = doc.get("spec") or {}
            if kind == "WasmPlugin" and "pluginConfig" in spec:
                found.append((f"{rel}: WasmPlugin {name} pluginConfig", spec["pluginConfig"]))
            elif kind == "TrafficExtension" and "pluginConfig" in (spec.get("wasm") or {}):
                found.append((f"{rel}: TrafficExtension {name} wasm.pluginConfig", spec["wasm"]["pluginConfig"]))
            elif kind == "EnvoyExtensionPolicy":
                for i, w in enumerate(spec.get("wasm") or []):
                    if "config" in w:
                        found.append((f"{rel}: EnvoyExtensionPolicy {name} wasm[{i}].config", w["config"]))
                for i, m in enumerate(spec.get("dynamicModule") or []):
                    if "config" in m:
                        found.append((f"{rel}: EnvoyExtensionPolicy {name} dynamicModule[{i}].config", m["config"]))
            elif kind == "EnvoyFilter":
                for i, p in enumerate(spec.get("configPatches") or []):
                    value = (p.get("patch") or {}).get("value") or {}
                    tc = value.get("typed_config") or {}
                    if p.get("applyTo") == "EXTENSION_CONFIG" and tc.get("@type") == WASM_FILTER_TYPE:
                        conf = tc["config"]["configuration"]
                        assert conf["@type"] == "type.googleapis.com/google.protobuf.StringValue", rel
                        found.append((f"{rel}: EnvoyFilter {name} configPatches[{i}] configuration",
                                      json.loads(conf["value"])))
    return found


def example_configs():
    out = []
    for path in (DEMO_PATH, DEMO_GLOBAL_PATH):
        with open(path) as f:
            out.append((os.path.relpath(path, ROOT), json.load(f)))
    return out + embedded_configs()


def test_schema_is_a_valid_draft_2020_12_schema():
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_manifests_embed_plugin_configurations():
    labels = [label for label, _ in embedded_configs()]
    kinds = {label.split(": ")[1].split()[0] for label in labels}
    assert kinds == {"WasmPlugin", "TrafficExtension", "EnvoyExtensionPolicy", "EnvoyFilter"}, labels
    # The native module's policy (filters/envoy-gateway/native/) carries one too.
    assert [label for label in labels if "dynamicModule[" in label] == [
        "filters/envoy-gateway/native/50-extension-policy.yaml: EnvoyExtensionPolicy ai-gateway-filter "
        "dynamicModule[0].config"], labels


def test_every_example_configuration_validates_and_is_accepted():
    examples = example_configs()
    for label, cfg in examples:
        assert schema_errors(cfg) == [], f"{label} does not match filters/config.schema.json"
    verdicts = rust_check([json.dumps(cfg) for _, cfg in examples])
    for (label, _), (ok, msg) in zip(examples, verdicts):
        assert ok, f"the filter refuses {label}: {msg}"


# --- samples --------------------------------------------------------------------------

def base():
    return {"tenants": [{"name": "tenant-a", "api_keys": [{"id": "svc:a", "sha256": DIGEST}]}]}


def full():
    """Every field of every object set, so unknown-field probes reach every level."""
    return {
        "shared_data_prefix": "ai-gw",
        "routes": [
            {"prefix": "/v1/chat/completions", "api": "chat_completions", "traffic_class": "interactive"},
            {"prefix": "/v1/completions", "api": "completions", "traffic_class": "tool_calling_agents"},
            {"prefix": "/v1/embeddings", "api": "embeddings", "traffic_class": "batch"},
            {"prefix": "/v1/responses", "api": "responses", "traffic_class": "streaming"},
            {"prefix": "/v1/models", "api": "none", "traffic_class": None},
        ],
        "models": [
            {"name": "llama3-8b", "input_usd_per_million": 0.2, "output_usd_per_million": 0.6,
             "cached_input_usd_per_million": 0.1},
            {"name": "bge-small", "input_usd_per_million": 0, "output_usd_per_million": 0,
             "cached_input_usd_per_million": None},
        ],
        "tenants": [
            {
                "name": "tenant-a",
                "hosts": ["Tenant-A.ai.example.com:443", "a.example.com.", "[::1]:8443", "10.0.0.1"],
                "api_keys": [{"id": "svc:a", "sha256": DIGEST.upper()}],
                "jwt_claim_values": ["team-a"],
                "spiffe_ids": ["spiffe://cluster.local/ns/tenant-a/sa/agent"],
                "routes": ["/v1/chat/completions", "/v1/embeddings/"],
                "models": ["llama3-8b", "bge-small"],
                "quota": {
                    "requests_per_minute": 600, "request_burst": 100,
                    "tokens_per_minute": 100000, "token_burst": 200000,
                    "interactive_reserve": 0.25,
                    "models": {"llama3-8b": {"requests_per_minute": 0.5, "request_burst": 1,
                                             "tokens_per_minute": 5000, "token_burst": None}},
                },
            },
            {"name": "tenant-b", "hosts": [], "api_keys": [], "jwt_claim_values": [], "spiffe_ids": [],
             "routes": None, "models": None, "quota": None},
        ],
        "identity": {"jwt": {"payload_header": "x-jwt-payload", "tenant_claim": "tenant", "subject_claim": "sub"}},
        "limits": {"max_request_body_bytes": 1048576, "default_completion_tokens": 0, "max_sse_event_bytes": 1024},
        "routing": {"model_header": False, "hold_headers_for_body": False},
        "quota_failure_mode": "closed",
        "redaction": {
            "fingerprint_salt": None,
            "fingerprint_salt_env": SALT_ENV,
            "prompt_preview_chars": 65536,
            "patterns": [{"pattern": "ticket-[0-9]+", "replacement": "[TICKET]"}, {"pattern": "x+", "replacement": None}],
        },
    }


def at(cfg, path, value):
    """cfg with the value at `path` (list of keys/indexes) replaced; '-' deletes."""
    cfg = copy.deepcopy(cfg)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    if value == "-":
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return cfg


def with_quota(q):
    return at(base(), ["tenants", 0, "quota"], q)


T0 = ["tenants", 0]
Q = T0 + ["quota"]


def with_global(g, engine=None):
    """A tenant with `quota.global` and the engine it needs."""
    cfg = with_quota({"global": g})
    return at(cfg, ["global_quota"], engine or {"cluster": "ratelimit", "expected_replicas": 2})

VALID = [
    ("minimal", base()),
    ("full", full()),
    ("demo", json.load(open(DEMO_PATH))),
    ("routes empty list", at(base(), ["routes"], [])),
    ("tenant routes empty list", at(base(), T0 + ["routes"], [])),
    ("tenant models empty", at(base(), T0 + ["models"], [])),
    ("no api keys", at(base(), T0 + ["api_keys"], [])),
    ("identity empty object", at(base(), ["identity"], {})),
    ("identity jwt null", at(base(), ["identity"], {"jwt": None})),
    ("jwt defaults", at(at(base(), ["identity"], {"jwt": {}}), T0 + ["jwt_claim_values"], ["a"])),
    ("limits empty", at(base(), ["limits"], {})),
    ("routing empty", at(base(), ["routing"], {})),
    ("redaction empty", at(base(), ["redaction"], {})),
    ("quota empty", with_quota({})),
    ("quota rate only", with_quota({"requests_per_minute": 1, "tokens_per_minute": 1e12})),
    ("quota fractional rate with burst", with_quota({"requests_per_minute": 0.001, "request_burst": 1})),
    ("quota nulls", with_quota({"requests_per_minute": None, "request_burst": None,
                                "tokens_per_minute": None, "token_burst": None})),
    ("quota burst null without rate", with_quota({"request_burst": None})),
    ("interactive reserve just below 1", with_quota({"interactive_reserve": 0.999})),
    ("quota models empty object", with_quota({"models": {}})),
    ("model quota empty", at(at(base(), ["models"], [{"name": "m"}]), Q, {"models": {"m": {}}})),
    ("model prices integers", at(base(), ["models"], [{"name": "m", "input_usd_per_million": 1}])),
    ("salt exactly 16 ascii bytes", at(base(), ["redaction"], {"fingerprint_salt": "0123456789abcdef"})),
    ("salt env with null inline salt", at(base(), ["redaction"], {"fingerprint_salt": None, "fingerprint_salt_env": SALT_ENV})),
    ("64 patterns", at(base(), ["redaction"], {"patterns": [{"pattern": f"p{i}"} for i in range(64)]})),
    ("max body 1", at(base(), ["limits"], {"max_request_body_bytes": 1})),
    ("u64 max", at(base(), ["limits"], {"default_completion_tokens": 18446744073709551615})),
    ("prefix root", at(base(), ["routes"], [{"prefix": "/", "api": "none"}])),
    ("name 128 chars", at(base(), T0 + ["name"], "n" * 128)),
    ("hosts with port-only suffix", at(base(), T0 + ["hosts"], ["a:"])),
    ("payload header with digits", at(base(), ["identity"], {"jwt": {"payload_header": "x-jwt-2"}})),
    ("global requests only", with_global({"requests": 1})),
    ("global everything", with_global(
        {"unit": "day", "requests": 4294967295, "tokens": 1, "mode": "strict", "on_unavailable": "closed"},
        {"cluster": "outbound|8081||rl.ns.svc.cluster.local", "domain": "d", "expected_replicas": 1000,
         "sync_interval_ms": 20, "timeout_ms": 10000})),
    ("global tokens with null requests", with_global({"requests": None, "tokens": 5})),
    ("engine without tenants using it", at(base(), ["global_quota"], {"cluster": "c", "expected_replicas": 1})),
    ("global_quota null", at(base(), ["global_quota"], None)),
    ("budget per day", at(base(), T0 + ["budget"], {"usd_per_day": 0.05})),
    ("budget everything", at(at(base(), ["models"], [{"name": "m"}]), T0 + ["budget"], {
        "usd_per_day": 1e9, "usd_per_month": 10, "on_unavailable": "closed",
        "models": {"m": {"usd_per_day": 0.5, "usd_per_month": None}}})),
    ("budget null", at(base(), T0 + ["budget"], None)),
]

_unknown = "zz_unknown"
INVALID = [
    # Not an object / missing required.
    ("top-level array", []),
    ("top-level number", 42),
    ("top-level null", None),
    ("top-level bool", True),
    ("empty object", {}),
    ("tenants empty", at(base(), ["tenants"], [])),
    ("tenants null", at(base(), ["tenants"], None)),
    ("tenants object", at(base(), ["tenants"], {"name": "a"})),
    ("tenant missing name", at(base(), T0 + ["name"], "-")),
    ("route missing api", at(base(), ["routes"], [{"prefix": "/v1/x"}])),
    ("route missing prefix", at(base(), ["routes"], [{"api": "none"}])),
    ("model missing name", at(base(), ["models"], [{"input_usd_per_million": 1}])),
    ("api key missing sha256", at(base(), T0 + ["api_keys"], [{"id": "svc:a"}])),
    ("api key missing id", at(base(), T0 + ["api_keys"], [{"sha256": DIGEST}])),
    ("pattern missing pattern", at(base(), ["redaction"], {"patterns": [{"replacement": "x"}]})),
    # Unknown fields at every level.
    ("unknown top-level", at(base(), [_unknown], 1)),
    ("unknown in route", at(base(), ["routes"], [{"prefix": "/v1/x", "api": "none", _unknown: 1}])),
    ("unknown in model", at(base(), ["models"], [{"name": "m", _unknown: 1}])),
    ("unknown in tenant", at(base(), T0 + [_unknown], 1)),
    ("unknown in api key", at(base(), T0 + ["api_keys", 0, _unknown], 1)),
    ("unknown in quota", with_quota({_unknown: 1})),
    ("unknown in model quota", at(at(base(), ["models"], [{"name": "m"}]), Q, {"models": {"m": {_unknown: 1}}})),
    ("unknown in identity", at(base(), ["identity"], {_unknown: 1})),
    ("unknown in jwt", at(base(), ["identity"], {"jwt": {_unknown: 1}})),
    ("unknown in limits", at(base(), ["limits"], {_unknown: 1})),
    ("unknown in routing", at(base(), ["routing"], {_unknown: 1})),
    ("unknown in redaction", at(base(), ["redaction"], {_unknown: 1})),
    ("unknown in pattern", at(base(), ["redaction"], {"patterns": [{"pattern": "x", _unknown: 1}]})),
    ("camelCase field", at(base(), ["sharedDataPrefix"], "x")),
    # Wrong types.
    ("prefix number", at(base(), ["shared_data_prefix"], 5)),
    ("routes string", at(base(), ["routes"], "x")),
    ("routes null", at(base(), ["routes"], None)),
    ("models null", at(base(), ["models"], None)),
    ("route prefix number", at(base(), ["routes"], [{"prefix": 1, "api": "none"}])),
    ("price string", at(base(), ["models"], [{"name": "m", "input_usd_per_million": "0.2"}])),
    ("price null", at(base(), ["models"], [{"name": "m", "output_usd_per_million": None}])),
    ("hosts string", at(base(), T0 + ["hosts"], "a.example.com")),
    ("hosts null", at(base(), T0 + ["hosts"], None)),
    ("host number", at(base(), T0 + ["hosts"], [1])),
    ("api keys object", at(base(), T0 + ["api_keys"], {"id": "x", "sha256": DIGEST})),
    ("tenant routes string", at(base(), T0 + ["routes"], "/v1/models")),
    ("quota string", with_quota("x")),
    ("rate string", with_quota({"requests_per_minute": "5"})),
    ("reserve null", with_quota({"interactive_reserve": None})),
    ("quota models list", with_quota({"models": []})),
    ("identity null", at(base(), ["identity"], None)),
    ("jwt string", at(base(), ["identity"], {"jwt": "x"})),
    ("limits null", at(base(), ["limits"], None)),
    ("body limit string", at(base(), ["limits"], {"max_request_body_bytes": "big"})),
    ("body limit fraction", at(base(), ["limits"], {"max_request_body_bytes": 1.5})),
    ("body limit negative", at(base(), ["limits"], {"max_request_body_bytes": -1})),
    ("completion tokens negative", at(base(), ["limits"], {"default_completion_tokens": -1})),
    ("u64 overflow", at(base(), ["limits"], {"default_completion_tokens": 18446744073709551616})),
    ("routing bool as string", at(base(), ["routing"], {"model_header": "yes"})),
    ("routing null", at(base(), ["routing"], {"hold_headers_for_body": None})),
    ("preview chars string", at(base(), ["redaction"], {"prompt_preview_chars": "10"})),
    ("patterns object", at(base(), ["redaction"], {"patterns": {"pattern": "x"}})),
    ("replacement number", at(base(), ["redaction"], {"patterns": [{"pattern": "x", "replacement": 5}]})),
    ("salt number", at(base(), ["redaction"], {"fingerprint_salt": 12345678901234567890})),
    # Bad enum values.
    ("api upper case", at(base(), ["routes"], [{"prefix": "/v1/x", "api": "CHAT_COMPLETIONS"}])),
    ("api unknown", at(base(), ["routes"], [{"prefix": "/v1/x", "api": "images"}])),
    ("traffic class unknown", at(base(), ["routes"], [{"prefix": "/v1/x", "api": "none", "traffic_class": "fast"}])),
    ("failure mode upper case", at(base(), ["quota_failure_mode"], "OPEN")),
    ("failure mode null", at(base(), ["quota_failure_mode"], None)),
    # Values the validator refuses.
    ("empty shared data prefix", at(base(), ["shared_data_prefix"], "")),
    ("shared data prefix with space", at(base(), ["shared_data_prefix"], "ai gw")),
    ("shared data prefix with trailing newline", at(base(), ["shared_data_prefix"], "ai-gw\n")),
    ("route prefix without slash", at(base(), ["routes"], [{"prefix": "v1/x", "api": "none"}])),
    ("route prefix with space", at(base(), ["routes"], [{"prefix": "/v1/x y", "api": "none"}])),
    ("route prefix with trailing newline", at(base(), ["routes"], [{"prefix": "/v1/x\n", "api": "none"}])),
    ("route prefix 129 chars", at(base(), ["routes"], [{"prefix": "/" + "a" * 128, "api": "none"}])),
    ("model name with space", at(base(), ["models"], [{"name": "llama 3"}])),
    ("model name empty", at(base(), ["models"], [{"name": ""}])),
    ("model name non-ascii", at(base(), ["models"], [{"name": "llamä"}])),
    ("negative price", at(base(), ["models"], [{"name": "m", "input_usd_per_million": -0.1}])),
    ("negative cached price", at(base(), ["models"], [{"name": "m", "cached_input_usd_per_million": -1}])),
    ("tenant name unknown", at(base(), T0 + ["name"], "unknown")),
    ("tenant name 129 chars", at(base(), T0 + ["name"], "n" * 129)),
    ("tenant name with trailing newline", at(base(), T0 + ["name"], "tenant-a\n")),
    ("host port only", at(base(), T0 + ["hosts"], [":443"])),
    ("host dot", at(base(), T0 + ["hosts"], ["."])),
    ("host blank", at(base(), T0 + ["hosts"], ["   "])),
    ("host empty", at(base(), T0 + ["hosts"], [""])),
    ("key id empty", at(base(), T0 + ["api_keys", 0, "id"], "")),
    ("sha256 63 chars", at(base(), T0 + ["api_keys", 0, "sha256"], DIGEST[:63])),
    ("sha256 65 chars", at(base(), T0 + ["api_keys", 0, "sha256"], DIGEST + "a")),
    ("sha256 trailing newline", at(base(), T0 + ["api_keys", 0, "sha256"], DIGEST[:63] + "\n")),
    ("sha256 not hex", at(base(), T0 + ["api_keys", 0, "sha256"], "g" + DIGEST[1:])),
    ("sha256 is the key", at(base(), T0 + ["api_keys", 0, "sha256"], "sk-tenant-a-demo")),
    ("claim value twice in a tenant", at(at(base(), ["identity"], {"jwt": {}}), T0 + ["jwt_claim_values"], ["a", "a"])),
    ("spiffe id empty", at(base(), T0 + ["spiffe_ids"], [""])),
    ("spiffe id twice in a tenant", at(base(), T0 + ["spiffe_ids"], ["spiffe://x", "spiffe://x"])),
    ("claim values without identity.jwt", at(base(), T0 + ["jwt_claim_values"], ["a"])),
    ("claim values with jwt null", at(at(base(), ["identity"], {"jwt": None}), T0 + ["jwt_claim_values"], ["a"])),
    ("payload header upper case", at(base(), ["identity"], {"jwt": {"payload_header": "X-Jwt-Payload"}})),
    ("payload header empty", at(base(), ["identity"], {"jwt": {"payload_header": ""}})),
    ("rate zero", with_quota({"requests_per_minute": 0})),
    ("rate too small", with_quota({"tokens_per_minute": 0.0005, "token_burst": 1})),
    ("rate too large", with_quota({"tokens_per_minute": 1e12 + 1})),
    ("burst below 1", with_quota({"requests_per_minute": 10, "request_burst": 0.5})),
    ("burst too large", with_quota({"requests_per_minute": 10, "request_burst": 2e12})),
    ("burst without rate", with_quota({"token_burst": 10})),
    ("burst with null rate", with_quota({"requests_per_minute": None, "request_burst": 10})),
    ("fractional rate without burst", with_quota({"requests_per_minute": 0.5})),
    ("fractional rate with null burst", with_quota({"tokens_per_minute": 0.5, "token_burst": None})),
    ("reserve 1", with_quota({"interactive_reserve": 1})),
    ("reserve negative", with_quota({"interactive_reserve": -0.1})),
    ("model quota burst without rate", at(at(base(), ["models"], [{"name": "m"}]), Q, {"models": {"m": {"request_burst": 5}}})),
    ("model quota fractional rate", at(at(base(), ["models"], [{"name": "m"}]), Q, {"models": {"m": {"tokens_per_minute": 0.1}}})),
    ("model quota empty model name", with_quota({"models": {"": {}}})),
    ("max body 0", at(base(), ["limits"], {"max_request_body_bytes": 0})),
    ("sse event below 1024", at(base(), ["limits"], {"max_sse_event_bytes": 1023})),
    ("salt too short", at(base(), ["redaction"], {"fingerprint_salt": "short"})),
    ("salt and salt env", at(base(), ["redaction"], {"fingerprint_salt": "0123456789abcdef", "fingerprint_salt_env": SALT_ENV})),
    ("salt env empty", at(base(), ["redaction"], {"fingerprint_salt_env": ""})),
    ("salt env with '='", at(base(), ["redaction"], {"fingerprint_salt_env": "A=B"})),
    ("preview chars too large", at(base(), ["redaction"], {"prompt_preview_chars": 65537})),
    ("65 patterns", at(base(), ["redaction"], {"patterns": [{"pattern": f"p{i}"} for i in range(65)]})),
    ("pattern empty", at(base(), ["redaction"], {"patterns": [{"pattern": ""}]})),
    ("pattern 1025 ascii bytes", at(base(), ["redaction"], {"patterns": [{"pattern": "a" * 1025}]})),
    ("global without the engine", with_quota({"global": {"requests": 1}})),
    ("global without requests or tokens", with_global({"mode": "strict"})),
    ("global requests 0", with_global({"requests": 0})),
    ("global tokens above u32", with_global({"tokens": 4294967296})),
    ("global unit week", with_global({"requests": 1, "unit": "week"})),
    ("engine replicas 0", with_global({"requests": 1}, {"cluster": "c", "expected_replicas": 0})),
    ("engine sync 19 ms", with_global({"requests": 1}, {"cluster": "c", "expected_replicas": 1, "sync_interval_ms": 19})),
    ("engine timeout 10001", with_global({"requests": 1}, {"cluster": "c", "expected_replicas": 1, "timeout_ms": 10001})),
    ("engine cluster empty", with_global({"requests": 1}, {"cluster": "", "expected_replicas": 1})),
    ("engine cluster with a space", with_global({"requests": 1}, {"cluster": "a b", "expected_replicas": 1})),
    ("engine cluster 121 chars", with_global({"requests": 1}, {"cluster": "c" * 121, "expected_replicas": 1})),
    ("budget zero", at(base(), T0 + ["budget"], {"usd_per_day": 0})),
    ("budget negative month", at(base(), T0 + ["budget"], {"usd_per_month": -1})),
    ("budget above 1e9", at(base(), T0 + ["budget"], {"usd_per_day": 1e9 + 1})),
    ("budget string", at(base(), T0 + ["budget"], {"usd_per_day": "1"})),
    ("budget on_unavailable bad", at(base(), T0 + ["budget"], {"usd_per_day": 1, "on_unavailable": "open"})),
]

# What the schema cannot express (its `$comment`): (name, JSON text, schema accepts,
# filter accepts, env for the filter or None for the default salt).
_two_tenants = at(base(), ["tenants"], [base()["tenants"][0], {"name": "tenant-b"}])
KNOWN_DIFFERENCES = [
    ("budget without a period", at(base(), T0 + ["budget"], {"on_unavailable": "closed"}), True, False),
    ("budget below a micro-dollar", at(base(), T0 + ["budget"], {"usd_per_day": 1e-7}), True, False),
    ("duplicate tenant name", at(base(), ["tenants"], [{"name": "a"}, {"name": "a"}]), True, False),
    ("duplicate model name", at(base(), ["models"], [{"name": "m"}, {"name": "m"}]), True, False),
    ("duplicate route prefix", at(base(), ["routes"], [{"prefix": "/v1/x", "api": "none"}] * 2), True, False),
    ("hostname bound to two tenants", at(at(_two_tenants, T0 + ["hosts"], ["a.example.com"]),
                                         ["tenants", 1, "hosts"], ["A.example.com:443"]), True, False),
    ("same key digest twice (case differs)", at(base(), T0 + ["api_keys"], [
        {"id": "k1", "sha256": DIGEST}, {"id": "k2", "sha256": DIGEST.upper()}]), True, False),
    ("claim value in two tenants", at(at(at(_two_tenants, ["identity"], {"jwt": {}}), T0 + ["jwt_claim_values"], ["x"]),
                                      ["tenants", 1, "jwt_claim_values"], ["x"]), True, False),
    ("SPIFFE ID in two tenants", at(at(_two_tenants, T0 + ["spiffe_ids"], ["spiffe://x"]),
                                    ["tenants", 1, "spiffe_ids"], ["spiffe://x"]), True, False),
    ("tenant route not configured", at(base(), T0 + ["routes"], ["/v1/images"]), True, False),
    ("tenant model not configured", at(base(), T0 + ["models"], ["gpt-9"]), True, False),
    ("quota model not configured", with_quota({"models": {"gpt-9": {}}}), True, False),
    ("invalid regex", at(base(), ["redaction"], {"patterns": [{"pattern": "("}]}), True, False),
    ("salt of 8 two-byte characters (16 bytes)", at(base(), ["redaction"], {"fingerprint_salt": "é" * 8}), False, True),
    ("pattern of 600 two-byte characters (1200 bytes)", at(base(), ["redaction"], {"patterns": [{"pattern": "é" * 600}]}), True, False),
]
KNOWN_DIFFERENCE_TEXTS = [
    # Integers written with a fraction are integers to JSON Schema, floats to serde.
    ("integer written as 1024.0", json.dumps(at(base(), ["limits"], {"max_request_body_bytes": 1024.0})), True, False),
    # Istio may hand the object over as a JSON string holding it; the filter unwraps it.
    ("configuration as a JSON string", json.dumps(json.dumps(base())), False, True),
]


def compare(samples):
    verdicts = rust_check([json.dumps(cfg) for _, cfg in samples])
    mismatches = []
    for (name, cfg), (rust_ok, msg) in zip(samples, verdicts):
        errs = schema_errors(cfg)
        if (not errs) != rust_ok:
            mismatches.append(f"{name}: schema {'accepts' if not errs else 'refuses ' + repr(errs[:2])}, "
                              f"filter {'accepts' if rust_ok else 'refuses: ' + msg}")
    return verdicts, mismatches


def test_sample_names_are_unique():
    names = [n for n, _ in VALID + INVALID] + [d[0] for d in KNOWN_DIFFERENCES + KNOWN_DIFFERENCE_TEXTS]
    assert len(names) == len(set(names))


def test_valid_samples_are_accepted_by_both():
    verdicts, mismatches = compare(VALID)
    assert mismatches == []
    assert all(ok for ok, _ in verdicts)


def test_invalid_samples_are_refused_by_both():
    verdicts, mismatches = compare(INVALID)
    assert mismatches == []
    refused = [msg for ok, msg in verdicts if not ok]
    assert len(refused) == len(INVALID)


def test_known_differences_are_exactly_as_documented():
    texts = [(n, json.dumps(c), s, r) for n, c, s, r in KNOWN_DIFFERENCES] + KNOWN_DIFFERENCE_TEXTS
    verdicts = rust_check([t for _, t, _, _ in texts])
    for (name, text, schema_ok, rust_ok), (got_rust, msg) in zip(texts, verdicts):
        got_schema = not schema_errors(json.loads(text))
        assert (got_schema, got_rust) == (schema_ok, rust_ok), f"{name}: filter says {msg}"
    comment = load_schema()["$comment"]
    for phrase in ["no period at all", "duplicate", "bound to two tenants", "unconfigured", "regex-lite", "unset",
                   "UTF-8 bytes", "with a fraction", "JSON string"]:
        assert phrase in comment


def test_unset_salt_variable_is_refused_by_the_filter_only():
    cfg = at(base(), ["redaction"], {"fingerprint_salt_env": SALT_ENV})
    assert schema_errors(cfg) == []
    [(ok, msg)] = rust_check([json.dumps(cfg)], env={})
    assert not ok and SALT_ENV in msg, msg
    [(ok, msg)] = rust_check([json.dumps(cfg)], env={SALT_ENV: "short"})
    assert not ok and "16 bytes" in msg, msg


# --- field names and enum values ------------------------------------------------------

def resolve(schema, node):
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].split("/")[-1]]
    return node


# (schema $defs name or "" for the root, config with an unknown field at that level)
LEVELS = [
    ("", at(base(), [_unknown], 1)),
    ("route", at(base(), ["routes"], [{_unknown: 1}])),
    ("model", at(base(), ["models"], [{_unknown: 1}])),
    ("tenant", at(base(), T0 + [_unknown], 1)),
    ("api_key", at(base(), T0 + ["api_keys"], [{_unknown: 1}])),
    ("quota", with_quota({_unknown: 1})),
    ("model_quota", with_quota({"models": {"m": {_unknown: 1}}})),
    ("identity", at(base(), ["identity"], {_unknown: 1})),
    ("jwt", at(base(), ["identity"], {"jwt": {_unknown: 1}})),
    ("limits", at(base(), ["limits"], {_unknown: 1})),
    ("routing", at(base(), ["routing"], {_unknown: 1})),
    ("redaction", at(base(), ["redaction"], {_unknown: 1})),
    ("pattern", at(base(), ["redaction"], {"patterns": [{_unknown: 1}]})),
    ("global_quota", at(base(), ["global_quota"], {_unknown: 1})),
    ("quota_global", with_quota({"global": {_unknown: 1}})),
    ("budget", at(base(), T0 + ["budget"], {_unknown: 1})),
    ("backend_credential", at(base(), ["models"], [{"name": "m", "backend_credential": {_unknown: 1}}])),
    ("model_budget", at(at(base(), ["models"], [{"name": "m"}]), T0 + ["budget"], {"models": {"m": {_unknown: 1}}})),
]


def expected_names(msg):
    """The names serde lists after `expected` ("expected one of `a`, `b`" / "expected `a`")."""
    tail = msg.split("expected", 1)[1]
    return set(re.findall(r"`([^`]+)`", tail))


def test_schema_knows_exactly_the_fields_the_filter_knows():
    schema = load_schema()
    defs = {name for name, d in schema["$defs"].items() if d.get("type") == "object"}
    assert defs == {lvl for lvl, _ in LEVELS if lvl}, "every object in the schema is probed"
    verdicts = rust_check([json.dumps(cfg) for _, cfg in LEVELS])
    for (level, _), (ok, msg) in zip(LEVELS, verdicts):
        assert not ok and f"unknown field `{_unknown}`" in msg, msg
        node = schema if level == "" else schema["$defs"][level]
        assert expected_names(msg) == set(node["properties"]), f"{level or 'root'}: filter: {msg}"
        assert node["additionalProperties"] is False


ENUMS = [
    (["$defs", "route", "properties", "api"], at(base(), ["routes"], [{"prefix": "/x", "api": "zz"}])),
    (["$defs", "route", "properties", "traffic_class"],
     at(base(), ["routes"], [{"prefix": "/x", "api": "none", "traffic_class": "zz"}])),
    (["properties", "quota_failure_mode"], at(base(), ["quota_failure_mode"], "zz")),
    (["$defs", "quota_global", "properties", "unit"], with_global({"requests": 1, "unit": "zz"})),
    (["$defs", "quota_global", "properties", "mode"], with_global({"requests": 1, "mode": "zz"})),
    (["$defs", "quota_global", "properties", "on_unavailable"],
     with_global({"requests": 1, "on_unavailable": "zz"})),
    (["$defs", "budget", "properties", "on_unavailable"],
     at(base(), T0 + ["budget"], {"usd_per_day": 1, "on_unavailable": "zz"})),
]


def test_schema_enums_are_exactly_the_filter_variants():
    schema = load_schema()
    verdicts = rust_check([json.dumps(cfg) for _, cfg in ENUMS])
    for (path, _), (ok, msg) in zip(ENUMS, verdicts):
        node = schema
        for key in path:
            node = node[key]
        variants = node["enum"] if "enum" in node else node["anyOf"][0]["enum"]
        assert not ok and "unknown variant `…`" in msg and "zz" not in msg, msg
        assert expected_names(msg) == set(variants), msg


def test_required_fields_match_the_filter():
    """Dropping a required field is refused by both, naming the field."""
    schema = load_schema()
    cases = [
        ("", base(), ["tenants"]),
        ("tenant", base(), T0 + ["name"]),
        ("api_key", base(), T0 + ["api_keys", 0, "sha256"]),
        ("api_key", base(), T0 + ["api_keys", 0, "id"]),
        ("route", at(base(), ["routes"], [{"prefix": "/x", "api": "none"}]), ["routes", 0, "prefix"]),
        ("route", at(base(), ["routes"], [{"prefix": "/x", "api": "none"}]), ["routes", 0, "api"]),
        ("model", at(base(), ["models"], [{"name": "m"}]), ["models", 0, "name"]),
        ("pattern", at(base(), ["redaction"], {"patterns": [{"pattern": "x"}]}), ["redaction", "patterns", 0, "pattern"]),
        ("global_quota", with_global({"requests": 1}), ["global_quota", "cluster"]),
        ("backend_credential", at(base(), ["models"], [{"name": "m", "backend_credential": {
            "header": "authorization", "value_env": SALT_ENV}}]), ["models", 0, "backend_credential", "header"]),
        ("backend_credential", at(base(), ["models"], [{"name": "m", "backend_credential": {
            "header": "authorization", "value_env": SALT_ENV}}]), ["models", 0, "backend_credential", "value_env"]),
        ("global_quota", with_global({"requests": 1}), ["global_quota", "expected_replicas"]),
    ]
    required = {lvl: set((schema if lvl == "" else schema["$defs"][lvl]).get("required", [])) for lvl, _ in LEVELS}
    for lvl, cfg, path in cases:
        assert path[-1] in required[lvl], (lvl, path)
    assert sum(len(r) for r in required.values()) == len(cases), required
    samples = [at(cfg, path, "-") for _, cfg, path in cases]
    verdicts = rust_check([json.dumps(s) for s in samples])
    for (lvl, _, path), sample, (ok, msg) in zip(cases, samples, verdicts):
        assert schema_errors(sample), path
        assert not ok and f"missing field `{path[-1]}`" in msg, msg


def test_schema_defaults_are_self_consistent():
    """Each default the schema states validates against the property's own schema."""
    schema = load_schema()
    checked = 0

    def walk(node):
        nonlocal checked
        if isinstance(node, dict):
            if "default" in node:
                sub = {k: v for k, v in node.items() if k not in ("default", "description")}
                sub["$defs"] = schema["$defs"]
                errs = list(jsonschema.Draft202012Validator(sub).iter_errors(node["default"]))
                assert errs == [], (node, errs)
                checked += 1
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    assert checked > 30


def test_default_routes_in_schema_are_accepted_when_written_out():
    """The schema's `routes` default, written out explicitly, is accepted like the omitted default."""
    routes = load_schema()["properties"]["routes"]["default"]
    cfg = at(base(), ["routes"], routes)
    [(ok, msg)] = rust_check([json.dumps(cfg)])
    assert ok, msg
    assert schema_errors(cfg) == []
