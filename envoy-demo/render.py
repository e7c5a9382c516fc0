#!/usr/bin/env python3
"""Render envoy.template.yaml into a runnable Envoy bootstrap.

Used by `make demo`, the integration tests and benchmarks (each with its own ports, log
directory and plugin configuration), and to regenerate the committed envoy.yaml, which
uses the defaults and paths relative to the repository root (for `func-e run -c`).

    python3 envoy-demo/render.py [--gateway-port 10000] [--admin-port 9901]
        [--mock-base-port 18001] [--plugin-config filters/demo.json]
        [--wasm target/wasm32-wasip1/release/ai_gateway_filter.wasm]
        [--log-dir envoy-demo/logs] [--no-filter] [--jwt-jwks FILE] [-o OUT]
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_WASM = "target/wasm32-wasip1/release/ai_gateway_filter.wasm"

# Backends of the demo, in the order of their ports (MOCK_BASE_PORT + index).
BACKENDS = ["chat-llama3-8b-v1", "chat-llama3-8b-v2", "embed-bge-small-v1"]

# Labels encoded in custom metric names as `.<label>=.=<value>;.;` (see src/contract.rs).
METRIC_LABELS = ["tenant", "route", "model_route", "status", "type", "kind", "reason"]


def yaml_str(s):
    """A JSON string is a valid YAML double-quoted scalar."""
    return json.dumps(s)


def indent(lines, n):
    pad = " " * n
    return "\n".join(pad + l if l else l for l in lines)


def stats_tags():
    out = []
    for label in METRIC_LABELS:
        out.append(f"- tag_name: {label}")
        regex = r"(\." + label + r"=\.=(.*?);\.;)"
        out.append("  regex: " + yaml_str(regex))
    return indent(out, 4)


def access_logs(log_dir):
    # The gateway record and the audit record are JSON objects the filter writes into
    # filter state; each log line is exactly one of them. Requests that never reached
    # the filter (Envoy refused them first) have no record and are not logged here.
    out = []
    logs = [
        ("access.log", "wasm.ai.record", True),
        ("audit.log", "wasm.ai.audit", False),
    ]
    for name, key, to_stdout in logs:
        targets = [("envoy.access_loggers.file", "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", os.path.join(log_dir, name))]
        if to_stdout:
            targets.append(("envoy.access_loggers.stdout", "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", None))
        for logger, typ, path in targets:
            out.append(f"- name: {logger}")
            out.append("  filter:")
            out.append("    extension_filter:")
            out.append("      name: envoy.access_loggers.extension_filters.cel")
            out.append("      typed_config:")
            out.append('        "@type": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter')
            out.append(f"        expression: {yaml_str(f'filter_state[{json.dumps(key)}] != null')}")
            out.append("  typed_config:")
            out.append(f'    "@type": {typ}')
            if path:
                out.append(f"    path: {yaml_str(path)}")
            out.append("    log_format:")
            out.append(f"      text_format_source: {{ inline_string: {yaml_str('%FILTER_STATE(' + key + ':PLAIN)%' + chr(10))} }}")
    return indent(out, 18)


def clusters(base_port):
    out = []
    for i, name in enumerate(BACKENDS):
        out += [
            f"- name: {name}",
            "  type: STATIC",
            "  connect_timeout: 1s",
            "  per_connection_buffer_limit_bytes: 16777216",
            "  load_assignment:",
            f"    cluster_name: {name}",
            "    endpoints:",
            "      - lb_endpoints:",
            f"          - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {base_port + i} }} }} }}",
        ]
    return indent(out, 4)


def jwt_filter(jwks_path):
    if not jwks_path:
        return ""
    # Envoy verifies the token; the filter only reads the verified payload it forwards.
    lines = [
        "- name: envoy.filters.http.jwt_authn",
        "  typed_config:",
        '    "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication',
        "    providers:",
        "      demo:",
        "        issuer: https://issuer.ai.example.com",
        "        audiences: [ai-gateway]",
        f"        local_jwks: {{ filename: {yaml_str(jwks_path)} }}",
        "        forward_payload_header: x-jwt-payload",
        "        pad_forward_payload_header: false",
        "    rules:",
        "      - match: { prefix: / }",
        "        requires:",
        "          requires_any:",
        "            requirements:",
        "              - provider_name: demo",
        "              - allow_missing: {}",
    ]
    return indent(lines, 18)


def render(args):
    with open(os.path.join(HERE, "envoy.template.yaml")) as f:
        text = f.read()
    if args.plugin_config_json is not None:
        plugin = args.plugin_config_json
    else:
        with open(args.plugin_config) as f:
            plugin = json.dumps(json.load(f), separators=(",", ":"))
    values = {
        "ADMIN_PORT": str(args.admin_port),
        "GATEWAY_PORT": str(args.gateway_port),
        "STATS_TAGS": stats_tags(),
        "ACCESS_LOGS": access_logs(args.log_dir),
        "JWT_FILTER": jwt_filter(args.jwt_jwks),
        "FAILURE_POLICY": args.failure_policy,
        "WASM_PATH": yaml_str(args.wasm),
        "PLUGIN_CONFIG": yaml_str(plugin),
        "CLUSTERS": clusters(args.mock_base_port),
    }
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", v)
    if args.no_filter:
        text = strip_wasm_filter(text)
    return text


def strip_wasm_filter(text):
    """The same bootstrap without the Wasm filter (benchmark baseline)."""
    lines = text.split("\n")
    out, skipping = [], False
    for line in lines:
        if line.strip() == "- name: envoy.filters.http.wasm":
            skipping = True
            continue
        if skipping and line.strip() == "- name: envoy.filters.http.router":
            skipping = False
        if not skipping:
            out.append(line)
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway-port", type=int, default=int(os.environ.get("GATEWAY_PORT", 10000)))
    p.add_argument("--admin-port", type=int, default=int(os.environ.get("ADMIN_PORT", 9901)))
    p.add_argument("--mock-base-port", type=int, default=int(os.environ.get("MOCK_BASE_PORT", 18001)))
    p.add_argument("--plugin-config", default=os.environ.get("PLUGIN_CONFIG", "filters/demo.json"))
    p.add_argument("--plugin-config-json", default=None, help="inline JSON instead of a file")
    p.add_argument("--wasm", default=DEFAULT_WASM)
    p.add_argument("--log-dir", default=os.environ.get("LOG_DIR", "envoy-demo/logs"))
    p.add_argument("--failure-policy", default="FAIL_CLOSED")
    p.add_argument("--jwt-jwks", default=None)
    p.add_argument("--no-filter", action="store_true")
    p.add_argument("-o", "--output", default="-")
    args = p.parse_args(argv)
    text = render(args)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
