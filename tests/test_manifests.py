"""The deployment artifacts: manifests, `make dist` / `make manifests`, the func-e bootstrap.

- Every YAML under filters/istio and filters/envoy-gateway parses; each object of a kind
  with a CRD in ../shared/crds validates against that CRD's openAPIV3Schema (strictly:
  unknown fields are errors, as kubectl's strict field validation makes them), carries
  the metadata it needs, and satisfies the CEL rules (x-kubernetes-validations) the
  CRDs attach to the fields used. Built-in kinds (Namespace, Service, ConfigMap,
  NetworkPolicy) have no CRD there and get structural checks only (named below).
- The plugin configurations embedded in the manifests are accepted by the filter's own
  parser, and are filters/demo.json with exactly the documented differences.
- The manifests refer to each other consistently (Gateway, routes, Services,
  ReferenceGrant, policies, salt variable and Secret, stats tags, the filter's headers).
- sha256 fields are never stale: the committed manifests hold marked placeholders, and
  `make manifests` stamps the digests `make dist` and `make image` computed (checked here
  end to end; the image's push and pull are in test_oci_image.py).
- The TrafficExtension variant is the WasmPlugin in the newer API (same module, phase,
  failure strategy, environment and configuration).
- The Envoy Gateway model-routing EnvoyPatchPolicy targets the listener and the Wasm
  filter Envoy Gateway generates for the EnvoyExtensionPolicy, and its JSON patch,
  applied to that filter, sets allow_on_headers_stop_iteration.
- The native module on Envoy Gateway (filters/envoy-gateway/native): the EnvoyProxy
  replaces the Gateway's (same name), registers the module the policy names, loads it
  from the path the Dockerfile puts it at, in an Envoy image of the release the module
  is built for (the Makefile's ENVOY_VERSION); the policy replaces the Wasm one and
  carries the same configuration as the Wasm model-routing policy.
- The module runs in a real Envoy configured the way Istio translates the WasmPlugin
  (and the TrafficExtension), the way Envoy Gateway translates the EnvoyExtensionPolicy
  (with and without the patch), and with the Wasm filter of the model-routing
  EnvoyFilter (model routing works only with the EnvoyFilter and the patched policy);
  the native module runs the way Envoy Gateway translates its EnvoyExtensionPolicy and
  EnvoyProxy (disabled in the connection manager, enabled per route, loaded by path),
  and routes by model without any patch.
- envoy-demo/envoy.yaml (the func-e bootstrap) validates from the repository root and
  equals a fresh `make envoy-yaml`.
- filters/ratelimit (the global rate limit service and its Redis): built-in kinds only,
  checked structurally (Deployment included); Services, ports, the ConfigMap mount, the
  Redis URL and the NetworkPolicy refer to each other; the limits are docs/quotas.md's
  and the real binary accepts them with the Deployment's flags.
"""
import copy
import glob
import hashlib
import json
import os
import re
import subprocess
import tempfile

import jsonschema
import pytest
import yaml

from client import HOST_A, HOST_B, KEY_A, KEY_B, call, chat_body
from harness import launcher, render
from test_config_schema import (
    DEMO_PATH, ROOT, SALT_ENV, SALT_VALUE, embedded_configs, load_docs, manifest_files,
    rust_check, schema_errors,
)

CRD_DIR = os.path.normpath(os.path.join(ROOT, "..", "shared", "crds"))
ISTIO = os.path.join(ROOT, "filters", "istio")
EG = os.path.join(ROOT, "filters", "envoy-gateway")
EG_NATIVE = os.path.join(EG, "native")
PLACEHOLDER = "0" * 64
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"
DYNAMIC_MODULE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
SALT_SECRET = ("ai-gateway-fingerprint-salt", "salt")

# Kinds with no CRD in ../shared/crds: checked structurally by check_builtin().
NO_CRD = {("v1", "Namespace"), ("v1", "Service"), ("v1", "ConfigMap"),
          ("networking.k8s.io/v1", "NetworkPolicy")}


def cargo_version():
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        return re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)


VERSION = cargo_version()


# --- loading ------------------------------------------------------------------------

def all_objects():
    """[(relative path, object)] for every document of every manifest."""
    out = []
    for path in manifest_files():
        for doc in load_docs(path):
            out.append((os.path.relpath(path, ROOT), doc))
    return out


def objects_in(directory, recursive=False):
    pattern = os.path.join(directory, "**", "*.yaml") if recursive else os.path.join(directory, "*.yaml")
    out = []
    for path in sorted(glob.glob(pattern, recursive=recursive)):
        out += load_docs(path)
    return out


def find(objs, kind, name=None):
    hits = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert hits, f"no {kind} {name or ''}"
    return hits


def one(objs, kind, name=None):
    hits = find(objs, kind, name)
    assert len(hits) == 1, f"{len(hits)} {kind} {name or ''}"
    return hits[0]


# --- CRDs -----------------------------------------------------------------------------

def load_crds():
    assert os.path.isdir(CRD_DIR), (
        f"{CRD_DIR} is missing: these tests validate the manifests against the CRDs kept "
        "beside the project in ../shared/crds (see its README); restore that directory")
    crds = {}
    for path in glob.glob(os.path.join(CRD_DIR, "*.yaml")):
        for doc in load_docs(path):
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for v in spec["versions"]:
                key = (f"{spec['group']}/{v['name']}", spec["names"]["kind"])
                crds[key] = {"scope": spec["scope"], "served": v.get("served", True),
                             "schema": v["schema"]["openAPIV3Schema"]}
    assert crds, f"no CustomResourceDefinitions found in {CRD_DIR}"
    return crds


def strict(schema):
    """The structural schema as a JSON Schema: unknown fields refused (as kubectl's
    strict field validation does) except under x-kubernetes-preserve-unknown-fields;
    OpenAPI's nullable and int-or-string mapped; x-kubernetes-validations (CEL) ignored
    here and checked by hand below."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()
           if not k.startswith("x-kubernetes-") and k != "nullable"}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (schema.get("type") == "object" and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


_CRDS = {}


def crds():
    if not _CRDS:
        _CRDS.update(load_crds())
    return _CRDS


def crd_errors(obj):
    crd = crds()[(obj["apiVersion"], obj["kind"])]
    schema = strict(crd["schema"])
    # apiVersion, kind and metadata are the API server's, not the CRD's (check_metadata).
    top = ("apiVersion", "kind", "metadata")
    for k in top:
        schema.get("properties", {}).pop(k, None)
    body = {k: v for k, v in obj.items() if k not in top}
    v = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(body)]


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_metadata(obj, namespaced):
    md = obj.get("metadata") or {}
    assert DNS_SUBDOMAIN.match(md.get("name", "")) and len(md["name"]) <= 253, md
    if namespaced:
        assert DNS_LABEL.match(md.get("namespace", "")), f"{obj['kind']} {md.get('name')} needs a namespace"
    else:
        assert "namespace" not in md


def check_builtin(obj):
    """Structural checks for the kinds without a CRD in ../shared/crds."""
    kind, spec = obj["kind"], obj.get("spec") or {}
    if kind == "Namespace":
        check_metadata(obj, namespaced=False)
        assert set(obj) <= {"apiVersion", "kind", "metadata"}
    elif kind == "Service":
        check_metadata(obj, namespaced=True)
        assert set(spec) <= {"selector", "ports", "type"}
        assert spec["selector"] and spec["ports"]
        for p in spec["ports"]:
            assert set(p) <= {"name", "port", "targetPort", "protocol"} and 1 <= p["port"] <= 65535
    elif kind == "ConfigMap":
        check_metadata(obj, namespaced=True)
        assert set(obj) <= {"apiVersion", "kind", "metadata", "data"}
        assert all(isinstance(v, str) for v in obj["data"].values())
    elif kind == "NetworkPolicy":
        check_metadata(obj, namespaced=True)
        assert set(spec) <= {"podSelector", "policyTypes", "ingress", "egress"} and "podSelector" in spec
        assert set(spec["policyTypes"]) <= {"Ingress", "Egress"}
        for rule in spec.get("ingress", []):
            assert set(rule) <= {"from", "ports"}
            for peer in rule["from"]:
                assert set(peer) <= {"namespaceSelector", "podSelector", "ipBlock"}
                for sel in peer.values():
                    assert set(sel) <= {"matchLabels", "matchExpressions"}
            for port in rule["ports"]:
                assert port["protocol"] in ("TCP", "UDP", "SCTP") and 1 <= port["port"] <= 65535
    else:
        raise AssertionError(f"no check for {kind}")


def test_crds_are_present_and_cover_the_custom_kinds():
    have = crds()
    used = {(o["apiVersion"], o["kind"]) for _, o in all_objects()}
    missing = {k for k in used - NO_CRD if k not in have}
    assert missing == set(), f"kinds without a CRD in ../shared/crds: {missing}"
    for key in used - NO_CRD:
        assert have[key]["served"], f"{key} is not a served version"


def test_every_manifest_parses_and_every_object_is_valid():
    objs = all_objects()
    assert len(objs) >= 25
    for rel, obj in objs:
        key = (obj.get("apiVersion"), obj.get("kind"))
        assert all(key), f"{rel}: apiVersion and kind are required"
        if key in NO_CRD:
            check_builtin(obj)
            continue
        crd = crds()[key]
        check_metadata(obj, namespaced=crd["scope"] == "Namespaced")
        errs = crd_errors(obj)
        assert errs == [], f"{rel}: {obj['kind']} {obj['metadata']['name']}: {errs}"
        assert "spec" in obj, f"{rel}: {obj['kind']} without spec"


def test_strict_validation_catches_typos():
    """The validation is not vacuous: a misspelt field, a bad enum or a missing required
    field in each custom kind is refused."""
    objs = [o for _, o in all_objects()]
    wp = copy.deepcopy(find(objs, "WasmPlugin", "ai-gateway-filter")[0])
    wp["spec"]["failStratgy"] = "FAIL_CLOSE"
    assert any("failStratgy" in e for e in crd_errors(wp))
    wp = copy.deepcopy(find(objs, "WasmPlugin", "ai-gateway-filter")[0])
    wp["spec"]["phase"] = "AUTHENTICATION"
    assert crd_errors(wp)
    del wp["spec"]["url"]
    assert any("url" in e for e in crd_errors(wp))
    eep = copy.deepcopy(find(objs, "EnvoyExtensionPolicy")[0])
    eep["spec"]["wasm"][0]["code"]["type"] = "OCI"
    assert crd_errors(eep)
    route = copy.deepcopy(find(objs, "HTTPRoute", "tenant-a-inference")[0])
    route["spec"]["rules"][0]["timeout"] = {"request": "1s"}
    assert crd_errors(route)
    ef = copy.deepcopy(find(objs, "EnvoyFilter")[0])
    ef["spec"]["configPatches"][0]["applyTo"] = "BOOTSTRAPS"
    assert crd_errors(ef)
    te = copy.deepcopy(one(objs, "TrafficExtension"))
    te["spec"]["wasm"]["failStratgy"] = "FAIL_CLOSE"
    assert any("failStratgy" in e for e in crd_errors(te))
    te = copy.deepcopy(one(objs, "TrafficExtension"))
    te["spec"]["pluginConfig"] = te["spec"]["wasm"].pop("pluginConfig")  # WasmPlugin's place
    assert any("pluginConfig" in e for e in crd_errors(te))
    te = copy.deepcopy(one(objs, "TrafficExtension"))
    te["spec"]["wasm"]["sha256"] = "0" * 63
    assert crd_errors(te)
    epp = copy.deepcopy(one(objs, "EnvoyPatchPolicy"))
    epp["spec"]["jsonPatches"][0]["type"] = "type.googleapis.com/envoy.config.listener.v3.Listeners"
    assert crd_errors(epp)
    epp = copy.deepcopy(one(objs, "EnvoyPatchPolicy"))
    del epp["spec"]["jsonPatches"][0]["operation"]["op"]
    assert any("op" in e for e in crd_errors(epp))
    native = objects_in(EG_NATIVE)
    ep = copy.deepcopy(one(native, "EnvoyProxy"))
    ep["spec"]["dynamicModules"][0]["source"]["type"] = "File"
    assert crd_errors(ep)
    ep = copy.deepcopy(one(native, "EnvoyProxy"))
    ep["spec"]["dynamicModules"][0]["name"] = "ai_gateway_native"  # no '_' in the name
    assert crd_errors(ep)
    ep = copy.deepcopy(one(native, "EnvoyProxy"))
    ep["spec"]["dynamicModules"][0]["doNotclose"] = True
    assert any("doNotclose" in e for e in crd_errors(ep))
    eep = copy.deepcopy(one(native, "EnvoyExtensionPolicy"))
    eep["spec"]["dynamicModule"][0]["filtername"] = "ai-gateway-filter"
    assert any("filtername" in e for e in crd_errors(eep))
    # The plugin configuration is free-form to the CRD (x-kubernetes-preserve-unknown-
    # fields): filters/config.schema.json checks it (test_config_schema.py).
    eep = copy.deepcopy(one(native, "EnvoyExtensionPolicy"))
    eep["spec"]["dynamicModule"][0]["config"]["tenantz"] = []
    assert crd_errors(eep) == [] and schema_errors(eep["spec"]["dynamicModule"][0]["config"])


def cel_rules(kind):
    """Every x-kubernetes-validations rule (its `rule` and `message`) in a kind's schema."""
    rules = []

    def walk(node):
        if isinstance(node, dict):
            rules.extend(node.get("x-kubernetes-validations", []))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for (api, k), crd in crds().items():
        if k == kind:
            walk(crd["schema"])
    return rules


def cel_rule_messages(kind):
    """Every x-kubernetes-validations message in a kind's schema."""
    return {r["message"] for r in cel_rules(kind)}


def cel_rule_text(kind, message):
    """The CEL expression of the one rule with this message in a kind's schema."""
    found = {r["rule"] for r in cel_rules(kind) if r["message"] == message}
    assert len(found) == 1, (kind, message, found)
    return found.pop()


def test_cel_rules_of_the_fields_used_hold():
    """The CEL rules (ignored by the JSON Schema validator) that apply to the fields the
    manifests use, checked one by one; each rule is looked up in the CRD by its message."""
    objs = [o for _, o in all_objects()]
    checked = []

    def rule(kind, message, ok):
        assert message in cel_rule_messages(kind), f"{kind}: the CRD no longer has rule {message!r}"
        assert ok, f"{kind}: {message}"
        checked.append(message)

    for wp in find(objs, "WasmPlugin"):
        s = wp["spec"]
        rule("WasmPlugin", "only one of targetRefs or selector can be set",
             sum(k in s for k in ("selector", "targetRef", "targetRefs")) <= 1)
        rule("WasmPlugin", "url must have schema one of [http, https, file, oci]",
             s["url"].split("://")[0] in ("http", "https", "file", "oci"))
        for ref in s.get("targetRefs", []):
            rule("WasmPlugin", "cross namespace referencing is not currently supported", not ref.get("namespace"))
        for env in s.get("vmConfig", {}).get("env", []):
            rule("WasmPlugin", "value may only be set when valueFrom is INLINE",
                 env.get("valueFrom") != "HOST" or "value" not in env)
    for te in find(objs, "TrafficExtension"):
        s = te["spec"]
        rule("TrafficExtension", "only one of targetRefs or selector can be set",
             sum(k in s for k in ("selector", "targetRefs")) <= 1)
        rule("TrafficExtension", "exactly one of wasm or lua must be set", ("wasm" in s) != ("lua" in s))
        rule("TrafficExtension", "url must have schema one of [http, https, file, oci]",
             s["wasm"]["url"].split("://")[0] in ("http", "https", "file", "oci"))
        for ref in s.get("targetRefs", []):
            rule("TrafficExtension", "cross namespace referencing is not currently supported", not ref.get("namespace"))
        for env in s["wasm"].get("vmConfig", {}).get("env", []):
            rule("TrafficExtension", "value may only be set when valueFrom is INLINE",
                 env.get("valueFrom") != "HOST" or "value" not in env)
    for ef in find(objs, "EnvoyFilter"):
        s = ef["spec"]
        rule("EnvoyFilter", "only one of targetRefs or workloadSelector can be set",
             not ("targetRefs" in s and "workloadSelector" in s))
        for ref in s.get("targetRefs", []):
            rule("EnvoyFilter", "cross namespace referencing is not currently supported", not ref.get("namespace"))
        for p in s["configPatches"]:
            m = p.get("match", {})
            rule("EnvoyFilter", "only support waypointMatch when context is WAYPOINT",
                 ("waypoint" in m) == (m.get("context") == "WAYPOINT"))
    for eep in find(objs, "EnvoyExtensionPolicy"):
        s = eep["spec"]
        rule("EnvoyExtensionPolicy", "either targetRef or targetRefs must be used",
             ("targetRef" in s) != ("targetRefs" in s))
        rule("EnvoyExtensionPolicy", "this policy can only have a targetRefs[*].group of gateway.networking.k8s.io",
             all(r["group"] == "gateway.networking.k8s.io" for r in s["targetRefs"]))
        assert ("wasm" in s) != ("dynamicModule" in s), "one form of the filter per policy"
        for w in s.get("wasm", []):
            code = w["code"]
            rule("EnvoyExtensionPolicy", "If type is HTTP, http field needs to be set.",
                 (code["type"] == "HTTP") == ("http" in code))
            rule("EnvoyExtensionPolicy", "If type is Image, image field needs to be set.",
                 (code["type"] == "Image") == ("image" in code))
    for ep in find(objs, "EnvoyProxy"):
        s = ep["spec"]
        k8s = s["provider"]["kubernetes"]
        rule("EnvoyProxy", "only one of envoyDeployment or envoyDaemonSet can be specified",
             not ("envoyDeployment" in k8s and "envoyDaemonSet" in k8s))
        container = k8s["envoyDeployment"]["container"]
        rule("EnvoyProxy", "Either image or imageRepository can be set.",
             not ("image" in container and "imageRepository" in container))
        if "image" in container:
            message = "Image must include a tag and allowed characters only (e.g., 'repo:tag')."
            [pattern] = re.findall(r"self\.matches\('(.*)'\)", cel_rule_text("EnvoyProxy", message))
            rule("EnvoyProxy", message, re.search(pattern, container["image"]))
        if "bootstrap" in s:
            rule("EnvoyProxy", "provided bootstrap patch doesn't match the configured patch type",
                 s["bootstrap"]["type"] != "JSONPatch" and "value" in s["bootstrap"])
        for m in s.get("dynamicModules", []):
            src = m["source"]
            rule("EnvoyProxy", "If type is Remote, remote field needs to be set.",
                 (src["type"] == "Remote") == ("remote" in src))
            rule("EnvoyProxy", "If type is Local, local field needs to be set.",
                 src["type"] != "Local" or "local" in src)
            rule("EnvoyProxy", "If type is Remote, local field must not be set.",
                 src["type"] != "Remote" or "local" not in src)
    assert len(checked) >= 32


# --- plugin configurations ------------------------------------------------------------

def demo_config():
    with open(DEMO_PATH) as f:
        return json.load(f)


def expected_manifest_config(hold):
    """filters/demo.json with the documented differences: the salt comes from the
    environment, and headers are held only where allow_on_headers_stop_iteration is set."""
    cfg = demo_config()
    cfg["redaction"] = {k: v for k, v in cfg["redaction"].items() if k != "fingerprint_salt"}
    cfg["redaction"]["fingerprint_salt_env"] = SALT_ENV
    cfg["routing"] = {"model_header": True, "hold_headers_for_body": hold}
    return cfg


def test_embedded_configs_are_accepted_by_the_filter():
    configs = embedded_configs()
    assert len(configs) == 8, [label for label, _ in configs]
    verdicts = rust_check([json.dumps(c) for _, c in configs], env={SALT_ENV: SALT_VALUE})
    for (label, _), (ok, msg) in zip(configs, verdicts):
        assert ok, f"{label}: {msg}"
    # ... and refused when the salt variable is missing from the VM: fail closed.
    verdicts = rust_check([json.dumps(c) for _, c in configs], env={})
    for (label, _), (ok, msg) in zip(configs, verdicts):
        assert not ok and SALT_ENV in msg, f"{label}: {msg}"


def test_embedded_configs_are_the_demo_with_documented_differences():
    for label, cfg in embedded_configs():
        # Header hold where it works: the Wasm filter with allow_on_headers_stop_iteration
        # (model-routing/), and the native module, which needs no such flag.
        hold = "/model-routing/" in label or "/native/" in label
        assert cfg == expected_manifest_config(hold), label
        assert schema_errors(cfg) == [], label
        assert "fingerprint_salt" not in cfg["redaction"], f"{label}: a secret in a manifest"


# --- cross references ---------------------------------------------------------------

def test_shared_tutorial_files_are_identical_in_both_directories():
    for name in ["00-namespaces.yaml", "15-model-services.yaml", "20-routes.yaml", "30-referencegrant.yaml"]:
        with open(os.path.join(ISTIO, name)) as a, open(os.path.join(EG, name)) as b:
            assert a.read() == b.read(), name


@pytest.mark.parametrize("directory", [ISTIO, EG], ids=["istio", "envoy-gateway"])
def test_references_resolve(directory):
    objs = objects_in(directory)
    namespaces = {o["metadata"]["name"]: o for o in find(objs, "Namespace")}
    for o in objs:
        if "namespace" in o["metadata"]:
            assert o["metadata"]["namespace"] in namespaces, o["metadata"]
    gw = one(objs, "Gateway", "ai-shared-gateway")
    assert gw["metadata"]["namespace"] == "ai-gateway"
    [listener] = gw["spec"]["listeners"]
    services = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in find(objs, "Service")}
    grant = one(objs, "ReferenceGrant")
    cfg = embedded_configs_in(directory)[0]
    hosts = {h for t in cfg["tenants"] for h in t["hosts"]}
    prefixes = {r["prefix"] for r in cfg["routes"]}
    models = {m["name"] for m in cfg["models"]}
    for route in find(objs, "HTTPRoute"):
        ns = route["metadata"]["namespace"]
        # Attached to the Gateway's listener, and allowed there by namespace label.
        for parent in route["spec"]["parentRefs"]:
            assert (parent["namespace"], parent["name"], parent["sectionName"]) == (
                "ai-gateway", "ai-shared-gateway", listener["name"])
        selector = listener["allowedRoutes"]["namespaces"]["selector"]["matchLabels"]
        assert selector.items() <= namespaces[ns]["metadata"].get("labels", {}).items()
        # Hostnames the listener accepts and the filter binds to a tenant.
        for h in route["spec"]["hostnames"]:
            assert h.endswith(listener["hostname"].lstrip("*")) and h in hosts, h
        for rule in route["spec"]["rules"]:
            for m in rule["matches"]:
                assert m["path"]["value"] in prefixes, m["path"]
                for hdr in m.get("headers", []):
                    # The filter's model headers (core/src/contract.rs), with a configured model.
                    assert hdr["name"].lower() in ("x-ai-model", "x-gateway-model-name"), hdr
                    assert hdr["value"] in models, hdr
            for ref in rule["backendRefs"]:
                svc = services[(ref["namespace"], ref["name"])]
                assert ref["port"] in [p["port"] for p in svc["spec"]["ports"]], ref
                if ref["namespace"] != ns:
                    assert grant["metadata"]["namespace"] == ref["namespace"]
                    assert {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": ns} in grant["spec"]["from"]
                    assert {"group": "", "kind": "Service"} in grant["spec"]["to"]
    # Gateway parameters exist next to it.
    ref = gw["spec"]["infrastructure"]["parametersRef"]
    params = one(objs, ref["kind"], ref["name"])
    assert params["metadata"]["namespace"] == gw["metadata"]["namespace"]
    # The NetworkPolicy guards the model namespace, on the Services' port.
    np = one(objs, "NetworkPolicy")
    assert np["metadata"]["namespace"] == "ai-models" and np["spec"]["podSelector"] == {}
    ports = {p["port"] for r in np["spec"]["ingress"] for p in r["ports"]}
    assert ports == {p["targetPort"] for s in services.values() for p in s["spec"]["ports"]}


def embedded_configs_in(directory):
    """The plugin configurations of the manifests directly in `directory`."""
    rel = os.path.relpath(directory, ROOT)
    found = [c for label, c in embedded_configs() if os.path.dirname(label.split(":")[0]) == rel]
    assert found, rel
    return found


def test_policies_target_the_tutorial_resources():
    istio = objects_in(ISTIO, recursive=True)
    eg = objects_in(EG, recursive=True)
    for wp in find(istio, "WasmPlugin"):
        assert wp["metadata"] == {"name": "ai-gateway-filter", "namespace": "ai-gateway"}
        assert wp["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ai-shared-gateway"}]
        assert (wp["spec"]["phase"], wp["spec"]["priority"], wp["spec"]["failStrategy"]) == ("AUTHN", 1000, "FAIL_CLOSE")
    for te in find(istio, "TrafficExtension"):
        assert te["metadata"] == {"name": "ai-gateway-filter", "namespace": "ai-gateway"}
        assert te["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ai-shared-gateway"}]
        assert (te["spec"]["phase"], te["spec"]["priority"], te["spec"]["wasm"]["failStrategy"]) == ("AUTHN", 1000, "FAIL_CLOSE")
    for ef in find(istio, "EnvoyFilter"):
        assert ef["metadata"]["namespace"] == "ai-gateway"
        assert ef["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ai-shared-gateway"}]
    for epp in find(eg, "EnvoyPatchPolicy"):
        # A patch policy takes effect only in the namespace of the Gateway it targets.
        assert epp["metadata"]["namespace"] == "ai-gateway"
        assert epp["spec"]["targetRef"] == {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ai-shared-gateway"}
        assert epp["spec"]["type"] == "JSONPatch"
    routes = {r["metadata"]["name"] for r in find(eg, "HTTPRoute")}
    for eep in find(eg, "EnvoyExtensionPolicy"):
        assert eep["metadata"] == {"name": "ai-gateway-filter", "namespace": "tenant-a"}
        assert {t["name"] for t in eep["spec"]["targetRefs"]} == routes
        assert all(t["kind"] == "HTTPRoute" for t in eep["spec"]["targetRefs"])
        if "wasm" in eep["spec"]:
            assert [w["failOpen"] for w in eep["spec"]["wasm"]] == [False]
        else:
            # A dynamic module entry has no failOpen: Envoy Gateway always fails the
            # routes closed (500) when it cannot set the module up.
            [dm] = eep["spec"]["dynamicModule"]
            assert "failOpen" not in dm and set(eep["spec"]) == {"targetRefs", "dynamicModule"}
    # The variants replace the main objects (same name and namespace), never add to them.
    assert len({(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in find(istio, "WasmPlugin")}) == 1
    assert len({(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in find(eg, "EnvoyExtensionPolicy")}) == 1
    assert len({(o["metadata"]["namespace"], o["metadata"]["name"]) for o in find(eg, "EnvoyProxy")}) == 1
    assert len({(o["metadata"]["namespace"], o["metadata"]["name"]) for o in find(istio, "ConfigMap")}) == 1
    # The filter's alternative forms (WasmPlugin, TrafficExtension, EnvoyFilter) live in
    # different directories, so that `kubectl apply -f <dir>/` never loads it twice.
    for directory in sorted({os.path.dirname(p) for p in glob.glob(os.path.join(ISTIO, "**", "*.yaml"), recursive=True)}):
        kinds = [o["kind"] for o in objects_in(directory)]
        forms = [k for k in kinds if k in ("WasmPlugin", "TrafficExtension")]
        forms += [o["kind"] for o in objects_in(directory) if o["kind"] == "EnvoyFilter"
                  and any(p["applyTo"] == "HTTP_FILTER" for p in o["spec"]["configPatches"])]
        assert len(forms) <= 1, (directory, forms)


def test_model_routing_envoyfilter_defines_a_complete_filter():
    ef = one(objects_in(os.path.join(ISTIO, "model-routing")), "EnvoyFilter")
    ext, http = ef["spec"]["configPatches"]
    assert ext["applyTo"] == "EXTENSION_CONFIG" and ext["patch"]["operation"] == "ADD"
    assert http["applyTo"] == "HTTP_FILTER" and http["patch"]["operation"] == "ADD"
    assert http["patch"]["filterClass"] == "AUTHN"
    assert http["patch"]["value"]["name"] == ext["patch"]["value"]["name"]
    assert http["patch"]["value"]["config_discovery"]["type_urls"] == [WASM_TYPE]
    config = ext["patch"]["value"]["typed_config"]["config"]
    assert ext["patch"]["value"]["typed_config"]["@type"] == WASM_TYPE
    assert config["allow_on_headers_stop_iteration"] is True
    assert config["failure_policy"] == "FAIL_CLOSED"
    assert config["vm_config"]["code"]["remote"]["http_uri"]["uri"].startswith("oci://")


def test_trafficextension_is_the_wasmplugin():
    """The TrafficExtension variant carries the WasmPlugin's fields, moved under wasm:."""
    wp = one(objects_in(ISTIO), "WasmPlugin")["spec"]
    te = one(objects_in(os.path.join(ISTIO, "trafficextension")), "TrafficExtension")["spec"]
    wasm_fields = ("url", "sha256", "imagePullPolicy", "pluginName", "type", "failStrategy", "vmConfig",
                   "pluginConfig")
    assert set(te) == {"targetRefs", "phase", "priority", "wasm"}
    assert set(te["wasm"]) == set(wasm_fields)
    for k in ("targetRefs", "phase", "priority"):
        assert te[k] == wp[k], k
    for k in wasm_fields:
        assert te["wasm"][k] == wp[k], k
    assert set(wp) == {"targetRefs", "phase", "priority", *wasm_fields}


def eg_generated_listener(eep, gateway):
    """The parts of the xDS Listener Envoy Gateway generates for `gateway` that the patch
    policy addresses (internal/xds/translator: listener.go, wasm.go), as EnvoyPatchPolicy
    sees them: protojson with proto field names. Each Wasm entry of the policy becomes a
    disabled HTTP filter named envoy.filters.http.wasm/<vm_id>, in the HTTP connection
    manager of the listener's filter chain, before the router."""
    [gw_listener] = gateway["spec"]["listeners"]
    ns, name = eep["metadata"]["namespace"], eep["metadata"]["name"]
    filters = []
    for i, w in enumerate(eep["spec"]["wasm"]):
        vm_id = f"envoyextensionpolicy/{ns}/{name}/wasm/{i}"
        filters.append({"name": f"envoy.filters.http.wasm/{vm_id}", "disabled": True, "typed_config": {
            "@type": WASM_TYPE,
            "config": {"name": w["name"], "root_id": w["rootID"], "fail_open": w["failOpen"],
                       "configuration": {"@type": STRING_VALUE, "value": json.dumps(w["config"])},
                       "vm_config": {"vm_id": vm_id, "runtime": "envoy.wasm.runtime.v8",
                                     "code": local_code(),
                                     "environment_variables": {"host_env_keys": w["env"]["hostKeys"]}}},
        }})
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    listener_name = f"{gateway['metadata']['namespace']}/{gateway['metadata']['name']}/{gw_listener['name']}"
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": f"https-{gw_listener['port']}", "http_filters": filters}}
    return {"name": listener_name, "filter_chains": [
        {"name": listener_name, "filter_chain_match": {"server_names": [gw_listener["hostname"]]}, "filters": [hcm]}]}


FILTER_BY_NAME = re.compile(r"^\$\.\.(\w+)\[\?\(@\.name=='([^']+)'\)\]((?:\.\w+)*)$")


def apply_eg_json_patch(doc, operation):
    """Envoy Gateway's JSONPatch for the one form the policy uses: jsonPath
    `$..<list>[?(@.name=='<name>')].<field>...` selects every match (none is an error, as
    in Envoy Gateway), `path` is appended to each, then `op: add` sets the value."""
    m = FILTER_BY_NAME.match(operation["jsonPath"])
    assert m, f"unsupported jsonPath {operation['jsonPath']!r}"
    key, name, tail = m.group(1), m.group(2), [k for k in m.group(3).split(".") if k]
    targets = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == key and isinstance(v, list):
                    targets.extend(x for x in v if isinstance(x, dict) and x.get("name") == name)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert targets, f"no element matches {operation['jsonPath']!r}: Envoy Gateway would refuse the patch"
    assert operation["op"] == "add" and operation["path"].startswith("/")
    for t in targets:
        for k in tail:
            t = t[k]
        *parents, last = operation["path"].lstrip("/").split("/")
        for k in parents:
            t = t.setdefault(k, {})
        t[last] = copy.deepcopy(operation["value"])
    return len(targets)


def eg_patched_filter():
    """What the model-routing variant gives Envoy on Envoy Gateway: the filter generated
    for model-routing/extension-policy.yaml, after model-routing/envoypatchpolicy.yaml."""
    objs = objects_in(os.path.join(EG, "model-routing"))
    eep = one(objs, "EnvoyExtensionPolicy")
    gateway = one(objects_in(EG), "Gateway", one(objs, "EnvoyPatchPolicy")["spec"]["targetRef"]["name"])
    listener = eg_generated_listener(eep, gateway)
    [patch] = one(objs, "EnvoyPatchPolicy")["spec"]["jsonPatches"]
    assert patch["type"] == "type.googleapis.com/envoy.config.listener.v3.Listener"
    assert patch["name"] == listener["name"]
    assert apply_eg_json_patch(listener, patch["operation"]) == 1
    [wasm] = [f for f in listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
              if f["name"].startswith("envoy.filters.http.wasm/")]
    return wasm["typed_config"]


def test_envoy_patch_policy_sets_the_flag_on_the_generated_filter():
    objs = objects_in(os.path.join(EG, "model-routing"))
    epp, eep = one(objs, "EnvoyPatchPolicy"), one(objs, "EnvoyExtensionPolicy")
    [patch] = epp["spec"]["jsonPatches"]
    # Envoy Gateway's names: listener <gateway ns>/<gateway>/<listener> (without the
    # XDSNameSchemeV2 runtime flag), filter envoy.filters.http.wasm/<policy's vm_id>.
    assert patch["name"] == "ai-gateway/ai-shared-gateway/https"
    assert "'envoy.filters.http.wasm/envoyextensionpolicy/tenant-a/ai-gateway-filter/wasm/0'" in patch["operation"]["jsonPath"]
    assert (patch["operation"]["path"], patch["operation"]["value"]) == ("/allow_on_headers_stop_iteration", True)
    tc = eg_patched_filter()
    assert tc["config"]["allow_on_headers_stop_iteration"] is True
    assert json.loads(tc["config"]["configuration"]["value"])["routing"]["hold_headers_for_body"] is True
    # The patched policy is the main one with only the header hold switched on.
    main = one(objects_in(EG), "EnvoyExtensionPolicy")
    assert eep["metadata"] == main["metadata"] and eep["spec"]["targetRefs"] == main["spec"]["targetRefs"]
    variant, base = copy.deepcopy(eep["spec"]["wasm"][0]), copy.deepcopy(main["spec"]["wasm"][0])
    assert variant["config"]["routing"].pop("hold_headers_for_body") is True
    assert base["config"]["routing"].pop("hold_headers_for_body") is False
    assert variant == base
    # A policy renamed (or moved) no longer matches: the patch fails instead of
    # silently applying nothing.
    renamed = copy.deepcopy(eep)
    renamed["metadata"]["name"] = "other"
    with pytest.raises(AssertionError, match="no element matches"):
        apply_eg_json_patch(eg_generated_listener(renamed, one(objects_in(EG), "Gateway")), patch["operation"])


# --- the native module on Envoy Gateway (filters/envoy-gateway/native) ---------------

def makefile_envoy_version():
    """The Envoy release the project builds and tests against (the Makefile's)."""
    with open(os.path.join(ROOT, "Makefile")) as f:
        return re.search(r"^ENVOY_VERSION := (\S+)$", f.read(), re.M).group(1)


def native_library_name():
    """lib<name>.so of the native crate ([lib] name in native/Cargo.toml)."""
    with open(os.path.join(ROOT, "native", "Cargo.toml")) as f:
        lib = f.read().split("[lib]", 1)[1]
    name = re.search(r'^name = "([^"]+)"', lib, re.M).group(1)
    return f"lib{name}.so"


def native_abi_version():
    """The ABI version string the module reports to Envoy (native/src/hooks.rs)."""
    with open(os.path.join(ROOT, "native", "src", "hooks.rs")) as f:
        return re.search(r'static ABI_VERSION: &\[u8\] = b"([^"\\]+)\\0";', f.read()).group(1)


def dockerfile_instructions():
    with open(os.path.join(EG_NATIVE, "Dockerfile")) as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    return [ln.split(None, 1) for ln in lines]


def native_registration():
    """(policy, its dynamicModule entry, the EnvoyProxy, the registry entry it names)."""
    objs = objects_in(EG_NATIVE)
    eep, proxy = one(objs, "EnvoyExtensionPolicy"), one(objs, "EnvoyProxy")
    [dm] = eep["spec"]["dynamicModule"]
    [entry] = [e for e in proxy["spec"]["dynamicModules"] if e["name"] == dm["name"]]
    return eep, dm, proxy, entry


def test_native_directory_replaces_the_proxy_and_the_policy():
    """native/ holds one EnvoyProxy and one EnvoyExtensionPolicy, each with the name of
    the Wasm deployment's, so `kubectl apply -f native/` swaps the filter, never adds a
    second one; the Gateway keeps its parametersRef."""
    objs = objects_in(EG_NATIVE)
    assert sorted(o["kind"] for o in objs) == ["EnvoyExtensionPolicy", "EnvoyProxy"]
    main = objects_in(EG)
    gw = one(main, "Gateway", "ai-shared-gateway")
    ref = gw["spec"]["infrastructure"]["parametersRef"]
    assert (ref["group"], ref["kind"]) == ("gateway.envoyproxy.io", "EnvoyProxy")
    proxy = one(objs, "EnvoyProxy")
    assert proxy["metadata"] == {"name": ref["name"], "namespace": gw["metadata"]["namespace"]}
    assert proxy["metadata"] == one(main, "EnvoyProxy")["metadata"]
    assert one(objs, "EnvoyExtensionPolicy")["metadata"] == one(main, "EnvoyExtensionPolicy")["metadata"]
    # kubectl applies a directory's files in name order: the EnvoyProxy (module on the
    # pods) before the policy that needs it.
    kinds = {f: [d["kind"] for d in load_docs(os.path.join(EG_NATIVE, f))]
             for f in sorted(os.listdir(EG_NATIVE)) if f.endswith(".yaml")}
    assert list(kinds.values()) == [["EnvoyProxy"], ["EnvoyExtensionPolicy"]], kinds


def test_native_policy_names_a_module_the_gateways_proxy_registers():
    """Envoy Gateway looks the policy's module up in the dynamicModules of the EnvoyProxy
    of the Gateway its routes attach to (internal/gatewayapi/envoyextensionpolicy.go,
    buildDynamicModules) and rejects it otherwise: the route's Gateway resolves to the
    native EnvoyProxy, which registers that name once, by a local path."""
    eep, dm, proxy, entry = native_registration()
    routes = {r["metadata"]["name"]: r for r in find(objects_in(EG), "HTTPRoute")}
    gw = one(objects_in(EG), "Gateway", "ai-shared-gateway")
    for target in eep["spec"]["targetRefs"]:
        route = routes[target["name"]]
        assert route["metadata"]["namespace"] == eep["metadata"]["namespace"]
        for parent in route["spec"]["parentRefs"]:
            assert (parent["namespace"], parent["name"]) == (gw["metadata"]["namespace"], gw["metadata"]["name"])
    assert gw["spec"]["infrastructure"]["parametersRef"]["name"] == proxy["metadata"]["name"]
    assert [e["name"] for e in proxy["spec"]["dynamicModules"]].count(dm["name"]) == 1
    assert entry["source"] == {"type": "Local", "local": {"path": entry["source"]["local"]["path"]}}
    path = entry["source"]["local"]["path"]
    assert os.path.isabs(path) and os.path.basename(path) == native_library_name()
    # The module runs a tick thread: it must never be unloaded.
    assert entry["doNotClose"] is True and not entry.get("loadGlobally", False)
    assert dm["filterName"] == "ai-gateway-filter" and not dm.get("terminalFilter", False)


def test_native_proxy_is_the_wasm_proxy_with_the_module_image():
    """The native EnvoyProxy is ../10-gateway.yaml's with the Envoy image replaced, the
    module registered and no stats_tags patch (the module gives Envoy its labels as
    tags); the salt comes from the same Secret."""
    _, _, proxy, _ = native_registration()
    main = one(objects_in(EG), "EnvoyProxy")
    native, wasm = copy.deepcopy(proxy["spec"]), copy.deepcopy(main["spec"])
    image = native["provider"]["kubernetes"]["envoyDeployment"]["container"].pop("image")
    assert native.pop("dynamicModules")
    assert "bootstrap" not in native and wasm.pop("bootstrap")
    assert native == wasm
    # registry/name:<Envoy release>-<module version>: the two versions go together.
    assert image.rsplit(":", 1)[1] == f"{makefile_envoy_version()}-{VERSION}", image


def test_native_image_is_the_envoy_release_the_module_is_built_for():
    """The Dockerfile starts from Envoy's own image of the Makefile's ENVOY_VERSION (the
    release the tests run and the module's ABI is taken from), in its Ubuntu variant
    (the distroless one has no libgcc_s.so.1, which the module needs), and copies the
    library to the path the EnvoyProxy registers."""
    _, _, _, entry = native_registration()
    envoy_version = makefile_envoy_version()
    assert dockerfile_instructions() == [
        ["FROM", f"docker.io/envoyproxy/envoy:v{envoy_version}"],
        ["COPY", f"{native_library_name()} {entry['source']['local']['path']}"],
    ]
    # The Envoy the tests run is that release.
    assert os.path.exists(launcher.ENVOY), f"{launcher.ENVOY} missing: run `make deps`"
    out = subprocess.run([launcher.ENVOY, "--version"], capture_output=True, text=True, timeout=60).stdout
    assert f"/{envoy_version}/" in out, out


def test_native_readme_states_the_version_coupling():
    """The README names the Envoy release, the ABI version string the module reports
    and the files it describes, so the coupling it states stays the code's."""
    with open(os.path.join(EG_NATIVE, "README.md")) as f:
        text = f.read()
    assert f"Envoy {makefile_envoy_version()}" in text and native_abi_version() in text
    for name in ["10-envoyproxy.yaml", "50-extension-policy.yaml", "Dockerfile", native_library_name()]:
        assert name in text, name
    assert "kubectl apply -f" in text


def test_native_policy_carries_the_wasm_configuration():
    """The same plugin configuration as the Wasm policies: exactly the model-routing
    one's (header hold on, which a dynamic module can do without any patch), and the
    main one's but for that switch."""
    _, dm, _, _ = native_registration()
    routing = one(objects_in(os.path.join(EG, "model-routing")), "EnvoyExtensionPolicy")["spec"]["wasm"][0]
    main = one(objects_in(EG), "EnvoyExtensionPolicy")["spec"]["wasm"][0]
    assert dm["config"] == routing["config"]
    native, base = copy.deepcopy(dm["config"]), copy.deepcopy(main["config"])
    assert native["routing"].pop("hold_headers_for_body") is True
    assert base["routing"].pop("hold_headers_for_body") is False
    assert native == base
    # Nothing else points at the Wasm host.
    assert "env" not in dm and "failOpen" not in dm


def salt_env_names(objs):
    """Every place a manifest names the salt variable or its Secret."""
    names, secrets = set(), set()
    for o in objs:
        kind, spec = o["kind"], o.get("spec") or {}
        if kind == "WasmPlugin":
            names |= {e["name"] for e in spec["vmConfig"]["env"] if e.get("valueFrom") == "HOST"}
        elif kind == "TrafficExtension":
            names |= {e["name"] for e in spec["wasm"]["vmConfig"]["env"] if e.get("valueFrom") == "HOST"}
        elif kind == "EnvoyExtensionPolicy":
            # The native module reads the Envoy process's environment itself: its
            # policy names no variables.
            for w in spec.get("wasm", []):
                names |= set(w["env"]["hostKeys"])
        elif kind == "EnvoyFilter":
            for p in spec["configPatches"]:
                tc = p["patch"]["value"].get("typed_config", {})
                if tc.get("@type") == WASM_TYPE:
                    names |= set(tc["config"]["vm_config"]["environment_variables"]["host_env_keys"])
        elif kind == "ConfigMap":
            patch = yaml.safe_load(o["data"]["deployment"])
            for c in patch["spec"]["template"]["spec"]["containers"]:
                assert c["name"] == "istio-proxy"
                for e in c["env"]:
                    names.add(e["name"])
                    ref = e["valueFrom"]["secretKeyRef"]
                    secrets.add((ref["name"], ref["key"]))
        elif kind == "EnvoyProxy":
            for e in spec["provider"]["kubernetes"]["envoyDeployment"]["container"]["env"]:
                names.add(e["name"])
                ref = e["valueFrom"]["secretKeyRef"]
                secrets.add((ref["name"], ref["key"]))
    return names, secrets


@pytest.mark.parametrize("directory", [ISTIO, EG], ids=["istio", "envoy-gateway"])
def test_salt_comes_from_a_secret_through_every_layer(directory):
    objs = objects_in(directory, recursive=True)
    names, secrets = salt_env_names(objs)
    assert names == {SALT_ENV}
    assert secrets == {SALT_SECRET}
    text = "".join(open(p).read() for p in glob.glob(os.path.join(directory, "**", "*.yaml"), recursive=True))
    assert "fingerprint_salt\"" not in text and "fingerprint_salt:" not in text


def test_istio_gateway_keeps_the_filter_metrics():
    cm = one(objects_in(ISTIO), "ConfigMap")
    patch = yaml.safe_load(cm["data"]["deployment"])
    proxy_config = yaml.safe_load(patch["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"])
    prefixes = proxy_config["proxyStatsMatcher"]["inclusionPrefixes"]
    assert prefixes == ["wasmcustom.ai_gateway_"]
    with open(os.path.join(ROOT, "core", "src", "contract.rs")) as f:
        metrics = re.findall(r'pub const \w+: &str = "(ai_gateway_\w+)"', f.read())
    assert len(metrics) >= 9 and all(("wasmcustom." + m).startswith(prefixes[0]) for m in metrics)


def stats_tags_of(obj):
    if obj["kind"] == "EnvoyFilter":
        return obj["spec"]["configPatches"][0]["patch"]["value"]["stats_config"]["stats_tags"]
    return yaml.safe_load(obj["spec"]["bootstrap"]["value"])["stats_config"]["stats_tags"]


def test_stats_tags_match_the_demo_bootstrap():
    """The same tag regexes as harness/render.py (checked against real Envoy there)."""
    expected = [{"tag_name": label, "regex": r"(\." + label + r"=\.=(.*?);\.;)"} for label in render.METRIC_LABELS]
    istio = one(objects_in(ISTIO), "EnvoyFilter", "ai-gateway-filter-stats-tags")
    assert istio["spec"]["configPatches"][0]["applyTo"] == "BOOTSTRAP"
    assert stats_tags_of(istio) == expected
    assert stats_tags_of(one(objects_in(EG), "EnvoyProxy")) == expected


# --- the global rate limit service (filters/ratelimit) --------------------------------

RATELIMIT = os.path.join(ROOT, "filters", "ratelimit")


def ratelimit_objects():
    objs = objects_in(RATELIMIT)
    assert {o["kind"] for o in objs} == {"ConfigMap", "Deployment", "Service", "NetworkPolicy"}
    return objs


def check_deployment(obj):
    """Structural checks for an apps/v1 Deployment (no CRD in ../shared/crds): the
    selector selects the pod template, every container has an image, named ports and
    probes on those ports, and runs unprivileged with a read-only root."""
    assert obj["apiVersion"] == "apps/v1"
    check_metadata(obj, namespaced=True)
    spec = obj["spec"]
    assert set(spec) <= {"replicas", "selector", "template", "strategy"}
    assert spec["replicas"] >= 1
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    assert set(pod) <= {"securityContext", "containers", "volumes"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod["containers"]:
        assert set(c) <= {"name", "image", "args", "ports", "readinessProbe", "livenessProbe", "resources",
                          "securityContext", "volumeMounts"}, c["name"]
        assert re.fullmatch(r"[a-z0-9.\-/]+:[0-9][0-9A-Za-z.\-]*", c["image"]), c["image"]
        ports = {p["containerPort"] for p in c["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["tcpSocket"]["port"] in ports, (c["name"], probe)
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "memory" in c["resources"]["limits"]
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, m
    return pod


def test_ratelimit_manifests_are_valid_and_refer_to_each_other():
    objs = ratelimit_objects()
    for o in objs:
        check_deployment(o) if o["kind"] == "Deployment" else check_builtin(o)
        # The namespace is the gateway's, defined by the tutorial's namespaces file.
        assert o["metadata"]["namespace"] == "ai-gateway"
    assert "ai-gateway" in {n["metadata"]["name"] for n in find(objects_in(ISTIO), "Namespace")}
    deployments = {d["metadata"]["name"]: d for d in find(objs, "Deployment")}
    services = {s["metadata"]["name"]: s for s in find(objs, "Service")}
    for svc in services.values():
        # Each Service selects one Deployment's pods, on a port its container exposes.
        [dep] = [d for d in deployments.values()
                 if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        container_ports = {p["containerPort"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= container_ports
    # Envoy's cluster for the rate limit filter is ratelimit.ai-gateway:8081 (docs/ratelimit.md).
    assert services["ratelimit"]["spec"]["ports"][0]["port"] == 8081
    [container] = deployments["ai-gateway-ratelimit"]["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    flags = dict(zip(args[::2], args[1::2]))
    assert flags["--listen"] == "0.0.0.0:8081"
    # The Redis URL names the Redis Service and its port.
    redis = services["ratelimit-redis"]
    assert flags["--redis-url"] == f"redis://ratelimit-redis.ai-gateway.svc:{redis['spec']['ports'][0]['port']}"
    # The configuration file is the ConfigMap's key, mounted where --config points.
    [mount] = container["volumeMounts"]
    [volume] = [v for v in deployments["ai-gateway-ratelimit"]["spec"]["template"]["spec"]["volumes"]
                if v["name"] == mount["name"]]
    cm = one(objs, "ConfigMap", volume["configMap"]["name"])
    directory, key = os.path.split(flags["--config"])
    assert directory == mount["mountPath"] and key in cm["data"]
    # The image names the service crate's version.
    with open(os.path.join(ROOT, "ratelimit", "Cargo.toml")) as f:
        rls_version = re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)
    assert container["image"].endswith(f"/ai-gateway-ratelimit:{rls_version}")
    # Only the service reaches Redis.
    np = one(objs, "NetworkPolicy")
    assert np["spec"]["podSelector"]["matchLabels"] == redis["spec"]["selector"]
    [rule] = np["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": services["ratelimit"]["spec"]["selector"]}}]
    assert [p["port"] for p in rule["ports"]] == [6379]


def test_ratelimit_configmap_is_the_documented_configuration_and_the_service_accepts_it():
    """The limits are docs/quotas.md's, and the real binary accepts them with the
    Deployment's own flags (`--check-config` parses the flags, then the files)."""
    from harness import ratelimit

    objs = ratelimit_objects()
    cm = one(objs, "ConfigMap", "ai-gateway-ratelimit-config")
    [(key, text)] = cm["data"].items()
    with open(os.path.join(ROOT, "docs", "quotas.md")) as f:
        doc = f.read()
    section = doc[doc.index("## Many replicas"):]
    documented = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.S)]
    assert yaml.safe_load(text) == documented[-1]
    code, out = ratelimit.check_config(text)
    assert code == 0 and "domains [\"ai-gateway\"]" in out, out
    dep = one(objs, "Deployment", "ai-gateway-ratelimit")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    with tempfile.TemporaryDirectory(prefix="rls-manifest-") as tmp:
        path = os.path.join(tmp, key)
        with open(path, "w") as f:
            f.write(text)
        at = args.index("--config") + 1
        argv = [ratelimit.BINARY, *args[:at], path, *args[at + 1:], "--check-config"]
        assert os.path.exists(ratelimit.BINARY), f"{ratelimit.BINARY} missing: run `make ratelimit`"
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # A broken configuration is refused, naming the field.
    code, out = ratelimit.check_config(text.replace("unit: minute", "unit: minutes", 1))
    assert code == 2 and "rate_limit.unit" in out, out


# --- sha256, versions and `make dist` / `make manifests` ----------------------------

STAMP = re.compile(r"# stamp: ([a-z0-9-]+)\s*$")


def marked_lines():
    """[(file, line, kind)] for every `# stamp:` marker on a value line."""
    out = []
    for path in manifest_files():
        for line in open(path):
            m = STAMP.search(line)
            if m and not line.lstrip().startswith("#"):
                out.append((os.path.relpath(path, ROOT), line.rstrip("\n"), m.group(1)))
    return out


def test_every_artifact_reference_is_a_marked_placeholder():
    """No real digest is ever committed (it would go stale on the next build): every
    sha256 of the module is the marked placeholder, every artifact URL is marked and
    names the crate's version."""
    sha_fields = 0
    for rel, obj in all_objects():
        def walk(node, path):
            nonlocal sha_fields
            if isinstance(node, dict):
                for k, v in node.items():
                    if k == "sha256" and "api_keys" not in path:
                        sha_fields += 1
                        assert v == PLACEHOLDER, f"{rel}: {'/'.join(path + [k])} = {v}"
                    walk(v, path + [k])
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, path + [str(i)])
        walk(obj.get("spec", {}), [])
    marks = marked_lines()
    digests = [m for m in marks if m[2] in ("image-digest", "wasm-sha256")]
    assert sha_fields == len(digests) == 7, digests
    for rel, line, kind in digests:
        assert f'"{PLACEHOLDER}"' in line, (rel, line)
    for rel, line, kind in marks:
        if kind in ("image", "wasm-url", "wasm-file"):
            assert VERSION in line, f"{rel}: {line.strip()} does not name version {VERSION}"
    kinds = {k for _, _, k in marks}
    assert kinds == {"image", "image-digest", "wasm-sha256", "wasm-url", "wasm-file"}


def make(*args, env=None, check=True):
    proc = subprocess.run(["make", "-s", *args], cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, f"make {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


_DIST = {}


def dist():
    """Run `make dist` once; returns (wasm path, recorded hex digest)."""
    if not _DIST:
        make("dist")
        wasm = os.path.join(ROOT, "dist", f"ai-gateway-filter-{VERSION}.wasm")
        with open(wasm + ".sha256") as f:
            line = f.read()
        _DIST["wasm"], _DIST["sha"], _DIST["line"] = wasm, line.split()[0], line
    return _DIST["wasm"], _DIST["sha"]


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_make_dist_writes_the_versioned_module_and_its_digest():
    wasm, sha = dist()
    assert sha == sha256_of(wasm) == sha256_of(launcher.WASM)
    assert _DIST["line"] == f"{sha}  ai-gateway-filter-{VERSION}.wasm\n"
    subprocess.run(["sha256sum", "-c", os.path.basename(wasm) + ".sha256"], cwd=os.path.dirname(wasm),
                   check=True, capture_output=True)
    with open(wasm, "rb") as f:
        assert f.read(4) == b"\0asm"


def stamped_objects(out_dir):
    objs = []
    for path in sorted(glob.glob(os.path.join(out_dir, "**", "*.yaml"), recursive=True)):
        objs += [(os.path.relpath(path, out_dir), d) for d in load_docs(path)]
    return objs


def test_make_manifests_stamps_the_dist_digest_and_the_image_digest():
    wasm, sha = dist()
    image, tag = "registry.test/ai/ai-gateway-filter", "9.9.9-test"
    with tempfile.TemporaryDirectory(prefix="manifests-") as tmp:
        # make manifests builds the image (make image, filters/oci_image.py), which
        # records IMAGE:TAG@sha256:<manifest digest>; tests/test_oci_image.py pushes it.
        digest_file = os.path.join(tmp, "image-digest")
        out = os.path.join(tmp, "out")
        make("manifests", f"IMAGE={image}", f"IMAGE_TAG={tag}", f"IMAGE_DIGEST_FILE={digest_file}",
             f"IMAGE_LAYOUT={os.path.join(tmp, 'layout')}", "WASM_URL=https://files.test/f.wasm",
             f"MANIFESTS_DIR={out}")
        with open(digest_file) as f:
            recorded = f.read().strip()
        m = re.fullmatch(re.escape(f"{image}:{tag}") + r"@sha256:([0-9a-f]{64})", recorded)
        assert m, recorded
        digest = m.group(1)
        assert digest != sha  # the image manifest's digest, not the module's
        objs = stamped_objects(out)
        assert len(objs) == len(all_objects())
        text = "".join(open(p).read() for p in glob.glob(os.path.join(out, "**", "*.yaml"), recursive=True))
        assert PLACEHOLDER not in text
        by_name = {}
        for rel, o in objs:
            assert (crd_errors(o) if (o["apiVersion"], o["kind"]) not in NO_CRD else []) == [], rel
            by_name[(rel, o["kind"])] = o
        wp = by_name[("istio/50-wasmplugin.yaml", "WasmPlugin")]["spec"]
        assert (wp["url"], wp["sha256"]) == (f"oci://{image}:{tag}", digest)
        local = by_name[("istio/local/wasmplugin.yaml", "WasmPlugin")]["spec"]
        assert (local["url"], local["sha256"]) == (
            f"file:///var/local/ai-gateway-filter/ai-gateway-filter-{VERSION}.wasm", sha)
        img = by_name[("envoy-gateway/50-extension-policy.yaml", "EnvoyExtensionPolicy")]["spec"]["wasm"][0]["code"]["image"]
        assert (img["url"], img["sha256"]) == (f"{image}:{tag}", digest)
        http = by_name[("envoy-gateway/http/extension-policy.yaml", "EnvoyExtensionPolicy")]["spec"]["wasm"][0]["code"]["http"]
        assert (http["url"], http["sha256"]) == ("https://files.test/f.wasm", sha)
        ef = by_name[("istio/model-routing/wasm-envoyfilter.yaml", "EnvoyFilter")]["spec"]["configPatches"][0]
        remote = ef["patch"]["value"]["typed_config"]["config"]["vm_config"]["code"]["remote"]
        assert (remote["http_uri"]["uri"], remote["sha256"]) == (f"oci://{image}:{tag}", digest)
        te = by_name[("istio/trafficextension/trafficextension.yaml", "TrafficExtension")]["spec"]["wasm"]
        assert (te["url"], te["sha256"]) == (f"oci://{image}:{tag}", digest)
        img = by_name[("envoy-gateway/model-routing/extension-policy.yaml", "EnvoyExtensionPolicy")]["spec"]["wasm"][0]["code"]["image"]
        assert (img["url"], img["sha256"]) == (f"{image}:{tag}", digest)
        assert ("envoy-gateway/model-routing/envoypatchpolicy.yaml", "EnvoyPatchPolicy") in by_name

        # A digest recorded for another image is ignored: the OCI copies pull by tag,
        # unpinned (with a warning), rather than carry a digest that cannot match.
        with open(digest_file, "w") as f:
            f.write(f"{image}:other@sha256:{digest}\n")
        out2 = os.path.join(tmp, "out2")
        proc = subprocess.run(
            ["python3", os.path.join(ROOT, "filters", "stamp_manifests.py"), "--version", VERSION,
             "--image", image, "--tag", tag, "--wasm-sha256-file", wasm + ".sha256",
             "--image-digest-file", digest_file, "--out", out2], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "no digest recorded" in proc.stderr
        objs = dict(((rel, o["kind"]), o) for rel, o in stamped_objects(out2))
        wp = objs[("istio/50-wasmplugin.yaml", "WasmPlugin")]["spec"]
        assert "sha256" not in wp and wp["url"] == f"oci://{image}:{tag}"
        assert crd_errors(objs[("istio/50-wasmplugin.yaml", "WasmPlugin")]) == []
        te = objs[("istio/trafficextension/trafficextension.yaml", "TrafficExtension")]
        assert "sha256" not in te["spec"]["wasm"] and crd_errors(te) == []
        http = objs[("envoy-gateway/http/extension-policy.yaml", "EnvoyExtensionPolicy")]["spec"]["wasm"][0]["code"]["http"]
        assert http["sha256"] == sha


# --- the module under Istio's and Envoy Gateway's translation -----------------------

def go_json(value):
    """JSON as Istio produces it from pluginConfig (a protobuf Struct): every number is a
    double, printed like Go's encoding/json (integers without a fraction)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        f = float(value)
        return str(int(f)) if f.is_integer() and abs(f) < 1e21 else repr(f)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    return "{" + ",".join(json.dumps(k) + ":" + go_json(v) for k, v in sorted(value.items())) + "}"


def local_code():
    return {"local": {"filename": launcher.WASM}}


def istio_wasmplugin_filter():
    """What istiod generates for filters/istio/50-wasmplugin.yaml (pkg/model/extensions.go:
    buildWasmPluginConfigCommon), with the fetched module as a local file."""
    wp = one(objects_in(ISTIO), "WasmPlugin")["spec"]
    env = wp["vmConfig"]["env"]
    config = {
        "name": "ai-gateway.ai-gateway-filter",
        "root_id": wp["pluginName"],
        "configuration": {"@type": STRING_VALUE, "value": go_json(wp["pluginConfig"])},
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            "code": local_code(),
            "environment_variables": {
                "key_values": {e["name"]: e.get("value", "") for e in env if e.get("valueFrom", "INLINE") == "INLINE"},
                "host_env_keys": [e["name"] for e in env if e.get("valueFrom") == "HOST"],
            },
        },
        "failure_policy": {"FAIL_CLOSE": "FAIL_CLOSED", "FAIL_OPEN": "FAIL_OPEN"}[wp["failStrategy"]],
    }
    return {"@type": WASM_TYPE, "config": config}


def istio_trafficextension_filter():
    """istiod builds a TrafficExtension's Wasm filter like a WasmPlugin's (the fields are
    the same, under spec.wasm; test_trafficextension_is_the_wasmplugin): this is
    istio_wasmplugin_filter for the TrafficExtension's own fields."""
    te = one(objects_in(os.path.join(ISTIO, "trafficextension")), "TrafficExtension")["spec"]
    w = te["wasm"]
    return {"@type": WASM_TYPE, "config": {
        "name": "ai-gateway.ai-gateway-filter",
        "root_id": w["pluginName"],
        "configuration": {"@type": STRING_VALUE, "value": go_json(w["pluginConfig"])},
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            "code": local_code(),
            "environment_variables": {
                "host_env_keys": [e["name"] for e in w["vmConfig"]["env"] if e.get("valueFrom") == "HOST"],
            },
        },
        "failure_policy": {"FAIL_CLOSE": "FAIL_CLOSED", "FAIL_OPEN": "FAIL_OPEN"}[w["failStrategy"]],
    }}


def eg_extension_policy_filter():
    """What Envoy Gateway generates for filters/envoy-gateway/50-extension-policy.yaml
    (internal/xds/translator/wasm.go), with the module served locally."""
    w = one(objects_in(EG), "EnvoyExtensionPolicy")["spec"]["wasm"][0]
    return {"@type": WASM_TYPE, "config": {
        "name": w["name"],
        "root_id": w["rootID"],
        "vm_config": {
            "vm_id": "envoyextensionpolicy/tenant-a/ai-gateway-filter/wasm/0",
            "runtime": "envoy.wasm.runtime.v8",
            "code": local_code(),
            "environment_variables": {"host_env_keys": w["env"]["hostKeys"]},
        },
        "configuration": {"@type": STRING_VALUE, "value": json.dumps(w["config"])},
        "fail_open": w["failOpen"],
    }}


def istio_envoyfilter_filter():
    """The Wasm filter the model-routing EnvoyFilter defines, as istio-agent hands it to
    Envoy (remote code rewritten to the downloaded file)."""
    ef = one(objects_in(os.path.join(ISTIO, "model-routing")), "EnvoyFilter")
    tc = copy.deepcopy(ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"])
    tc["config"]["vm_config"]["code"] = local_code()
    return tc


class TranslatedTopology(launcher.Topology):
    """The demo topology with the Wasm filter's typed_config replaced."""

    def __init__(self, typed_config, **kw):
        self.typed_config = typed_config
        super().__init__(**kw)

    def render(self, plugin_config=None):
        super().render(plugin_config)
        with open(self.config_path) as f:
            boot = yaml.safe_load(f)
        replaced = []

        def walk(node):
            if isinstance(node, dict):
                if node.get("name") == "envoy.filters.http.wasm" and "typed_config" in node:
                    node["typed_config"] = copy.deepcopy(self.typed_config)
                    replaced.append(node)
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(boot)
        assert len(replaced) == 1, "the demo bootstrap has one Wasm filter"
        with open(self.config_path, "w") as f:
            yaml.safe_dump(boot, f)


def eg_dynamic_module_filter():
    """The HTTP filter Envoy Gateway generates for native/50-extension-policy.yaml with
    the module native/10-envoyproxy.yaml registers (internal/xds/translator/dynamicmodule.go):
    named envoy.filters.http.dynamic_modules/<policy's IR name>, disabled in the
    connection manager and enabled on the policy's routes, loading the module by its
    path (here the built library instead of the image's copy), with the policy's config
    as a StringValue holding its JSON."""
    eep, dm, _, entry = native_registration()
    assert os.path.exists(launcher.NATIVE), (
        f"{launcher.NATIVE} missing: run `make native`")
    ns, name = eep["metadata"]["namespace"], eep["metadata"]["name"]
    return {
        "name": f"envoy.filters.http.dynamic_modules/envoyextensionpolicy/{ns}/{name}/dynamic-module/0",
        "disabled": True,
        "typed_config": {
            "@type": DYNAMIC_MODULE_TYPE,
            "dynamic_module_config": {
                "do_not_close": entry["doNotClose"],
                "load_globally": entry.get("loadGlobally", False),
                "module": {"local": {"filename": launcher.NATIVE}},
            },
            "filter_name": dm["filterName"],
            "filter_config": {"@type": STRING_VALUE, "value": json.dumps(dm["config"])},
        },
    }


class EgNativeTopology(launcher.Topology):
    """The demo topology with the Wasm filter replaced by the native module's filter as
    Envoy Gateway generates it (eg_dynamic_module_filter), enabled on every route (the
    policy targets all of them) the way Envoy Gateway does it, with an empty
    FilterConfig in typed_per_filter_config; and without the bootstrap's stats_tags,
    which the native EnvoyProxy does not patch in."""

    def __init__(self, http_filter, **kw):
        self.http_filter = http_filter
        super().__init__(**kw)

    def render(self, plugin_config=None):
        super().render(plugin_config)
        with open(self.config_path) as f:
            boot = yaml.safe_load(f)
        del boot["stats_config"]["stats_tags"]
        [listener] = boot["static_resources"]["listeners"]
        [hcm] = listener["filter_chains"][0]["filters"]
        filters = hcm["typed_config"]["http_filters"]
        [i] = [n for n, f in enumerate(filters) if f["name"] == "envoy.filters.http.wasm"]
        filters[i] = copy.deepcopy(self.http_filter)
        enable = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}
        for vhost in hcm["typed_config"]["route_config"]["virtual_hosts"]:
            for route in vhost["routes"]:
                route["typed_per_filter_config"] = {self.http_filter["name"]: enable}
        with open(self.config_path, "w") as f:
            yaml.safe_dump(boot, f)


VARIANTS = {
    "istio-wasmplugin": (istio_wasmplugin_filter, False),
    "istio-trafficextension": (istio_trafficextension_filter, False),
    "eg-extension-policy": (eg_extension_policy_filter, False),
    "istio-model-routing-envoyfilter": (istio_envoyfilter_filter, True),
    "eg-model-routing-patched": (eg_patched_filter, True),
    # The native module: header hold needs no flag, so it routes by model.
    "eg-native-dynamic-module": (eg_dynamic_module_filter, True),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_module_runs_as_each_controller_configures_it(variant):
    build, model_routing = VARIANTS[variant]
    native = variant == "eg-native-dynamic-module"
    if native:
        topology = EgNativeTopology(build(), env={SALT_ENV: SALT_VALUE})
    else:
        typed_config = build()
        assert "allow_on_headers_stop_iteration" in typed_config["config"] or not model_routing
        topology = TranslatedTopology(typed_config, env={SALT_ENV: SALT_VALUE})
    with topology as gw:
        # Chat, on the chat route: 200 from the 90/10 canary, identity headers upstream.
        r = call(gw, "/v1/chat/completions", chat_body())
        assert r.status_code == 200, r.text
        assert r.headers["x-backend"] in ("chat-llama3-8b-v1", "chat-llama3-8b-v2")
        received = json.loads(r.headers["x-mock-received"])
        assert received["x-ai-tenant"] == ["tenant-a"]

        # The model named in the body picks the backend only with header hold; without
        # it the path decides (and no model header reaches the backend).
        r = call(gw, "/v1/chat/completions", chat_body(model="bge-small"))
        assert r.status_code == 200, r.text
        received = json.loads(r.headers["x-mock-received"])
        if model_routing:
            assert r.headers["x-backend"] == "embed-bge-small-v1"
            assert received["x-ai-model"] == ["bge-small"]
        else:
            assert r.headers["x-backend"] in ("chat-llama3-8b-v1", "chat-llama3-8b-v2")
            assert "x-ai-model" not in received

        # A client cannot pick the backend with the model header either way.
        r = call(gw, "/v1/embeddings", {"model": "bge-small", "input": "hi"},
                 headers={"x-ai-model": "llama3-8b", "X-Gateway-Model-Name": "llama3-8b"})
        assert r.status_code == 200, r.text
        assert r.headers["x-backend"] == "embed-bge-small-v1"

        # The manifest's configuration is the one in force: tenant-b may only embed.
        assert call(gw, "/v1/chat/completions", chat_body(model="bge-small"), host=HOST_B, key=KEY_B).status_code == 403
        assert call(gw, "/v1/embeddings", {"model": "bge-small", "input": "x"}, host=HOST_B, key=KEY_B).status_code == 200
        assert call(gw, "/v1/models", key="sk-not-a-key").status_code == 401

        # The salt reached the VM from the environment: prompts are fingerprinted.
        records, _ = gw.wait_records(6)
        chats = [rec for rec in records if rec.get("route") == "/v1/chat/completions" and rec.get("http_status") == 200]
        assert chats and all(re.fullmatch(r"[0-9a-f]{64}", rec["prompt_blake3"] or "") for rec in chats), chats

        if native:
            # Labelled metrics without any stats_tags (the native EnvoyProxy has none),
            # under the Wasm module's names once renamed as filters/prometheus does.
            text = gw.admin("/stats/prometheus")
            assert re.search(r'^ai_gateway_requests_total\{[^}]*tenant="tenant-b"', text, re.M), text[-3000:]


# --- func-e / plain Envoy -------------------------------------------------------------

def test_committed_envoy_yaml_is_a_fresh_render():
    with tempfile.TemporaryDirectory(prefix="envoy-yaml-") as tmp:
        out = os.path.join(tmp, "envoy.yaml")
        make("envoy-yaml", f"ENVOY_YAML={out}")
        with open(out) as fresh, open(os.path.join(ROOT, "envoy-demo", "envoy.yaml")) as committed:
            assert committed.read() == fresh.read(), (
                "envoy-demo/envoy.yaml is stale: run `make envoy-yaml` and commit it")


def test_committed_envoy_yaml_validates_from_the_repo_root():
    """What `func-e run -c envoy-demo/envoy.yaml` needs: Envoy accepts the bootstrap with
    the paths resolved from the repository root (the module is loaded and configured)."""
    assert os.path.exists(launcher.ENVOY), f"{launcher.ENVOY} missing: run `make deps`"
    assert os.path.exists(launcher.WASM), f"{launcher.WASM} missing: run `make build`"
    with open(os.path.join(ROOT, "envoy-demo", "envoy.yaml")) as f:
        text = f.read()
    for path in re.findall(r'(?:filename|path): "([^"]+)"', text):
        assert not os.path.isabs(path), f"absolute path in the committed bootstrap: {path}"
    # As the README says for func-e: the log directory (git-ignored) must exist.
    os.makedirs(os.path.join(ROOT, "envoy-demo", "logs"), exist_ok=True)
    proc = subprocess.run([launcher.ENVOY, "-c", "envoy-demo/envoy.yaml", "--mode", "validate",
                           "--use-dynamic-base-id"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, SALT_ENV: SALT_VALUE})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "configuration 'envoy-demo/envoy.yaml' OK" in proc.stdout + proc.stderr


def test_stamper_refuses_an_unmarked_artifact_reference():
    """A manifest naming the placeholder image or download location on a line without
    `# stamp:` would be copied pointing at nothing: the stamper refuses it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("stamp_manifests", os.path.join(ROOT, "filters", "stamp_manifests.py"))
    stamp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stamp)
    values = {"image_ref": "reg.test/f:1", "image_digest": None, "wasm_sha256": "ab" * 32,
              "wasm_url": "https://files.test/f.wasm", "wasm_file": "file:///f.wasm"}
    marked = "    url: oci://registry.example.com/ai-gateway/ai-gateway-filter:0.1.0  # stamp: image\n"
    text, seen = stamp.stamp_text(marked, values, "x.yaml")
    assert seen == {"image"} and "oci://reg.test/f:1" in text
    for line in ("    url: oci://registry.example.com/ai-gateway/ai-gateway-filter:0.1.0\n",
                 "      url: https://downloads.example.com/ai-gateway-filter/ai-gateway-filter-0.1.0.wasm\n"):
        with pytest.raises(stamp.StampError, match="not marked"):
            stamp.stamp_text(line, values, "x.yaml")
    # Comments may mention them.
    stamp.stamp_text("# image: registry.example.com/ai-gateway/ai-gateway-filter:0.1.0\n", values, "x.yaml")
