#!/usr/bin/env python3
"""Render envoy.template.yaml into a runnable Envoy bootstrap.

Used by `make demo`, the integration tests and benchmarks (each with its own ports, log
directory and plugin configuration), and to regenerate the committed envoy.yaml, which
uses the defaults and paths relative to the repository root (for `func-e run -c`).

    python3 -m harness.render [--gateway-port 10000] [--admin-port 9901]
        [--mock-base-port 18001] [--plugin-config filters/demo.json]
        [--wasm target/wasm32-wasip1/release/ai_gateway_filter.wasm]
        [--log-dir envoy-demo/logs] [--no-filter] [--jwt-jwks FILE] [-o OUT]
        [--lds-dir DIR] [--ext-proc-port PORT [--ext-proc-response-body-mode STREAMED]]
        [--host native]

With --lds-dir the gateway listener is not in the bootstrap: it is written to
DIR/listeners.yaml (atomically, by rename) and Envoy loads it through file-based LDS,
watching DIR. Rendering again with another plugin configuration pushes it to a running
Envoy, which is how the fault tests push a bad configuration. The default output is
unchanged.

--host native puts the same filter, as the native dynamic module
(libai_gateway_native.so, found through ENVOY_DYNAMIC_MODULES_SEARCH_PATH, which the
process starting Envoy sets), where the Wasm filter was, with the same configuration.

Benchmark variants (`make bench`), each the same bootstrap with one difference:
--no-filter drops the Wasm filter; --wasm OTHER.wasm loads another module in the same
filter configuration; --ext-proc-port puts Envoy's ext_proc filter, calling a gRPC
processor on 127.0.0.1:PORT, where the Wasm filter was.
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

# Labels encoded in custom metric names as `.<label>=.=<value>;.;` (see core/src/contract.rs).
METRIC_LABELS = ["tenant", "route", "model_route", "status", "type", "kind", "reason", "vm", "mode",
                 "result", "period", "gen_ai_token_type", "gen_ai_operation_name", "gen_ai_provider_name",
                 "gen_ai_request_model"]


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


def jwt_payload_header(plugin_json):
    """The header the filter reads verified JWT claims from, or None without identity.jwt."""
    try:
        cfg = json.loads(plugin_json)
        if isinstance(cfg, str):  # a JSON string holding the JSON, as Istio may pass it
            cfg = json.loads(cfg)
        jwt = (cfg.get("identity") or {}).get("jwt")
    except (ValueError, AttributeError):
        return None
    if jwt is None:
        return None
    return jwt.get("payload_header", "x-jwt-payload")


def jwt_filter(jwks_path, plugin_json="{}"):
    """jwt_authn (with a local JWKS) in front of the Wasm filter, and before it a filter
    that removes any client-supplied copy of the payload header.

    - The filter trusts the payload header as verified claims. jwt_authn itself drops a
      client copy, but only on requests one of its rules covers; the header_mutation step
      removes it on every request, whatever the rules say. It is emitted whenever the
      plugin configuration reads a JWT payload, even without a JWKS (then no JWT identity
      can be forged, and none works).
    - `allow_missing_or_failed`: jwt_authn never answers by itself. A request without a
      valid JWT reaches the Wasm filter with no payload header, which then authenticates
      it by API key or refuses it (401, OpenAI-shaped, audited), so an API key in
      `Authorization: Bearer` still works next to JWTs and every refusal has its record.
    - `forward: false` (the default): the verified token is removed from the request.
    """
    header = jwt_payload_header(plugin_json)
    if jwks_path and header is None:
        header = "x-jwt-payload"
    if header is None:
        return ""
    lines = [
        "- name: envoy.filters.http.header_mutation",
        "  typed_config:",
        '    "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation',
        "    mutations:",
        "      request_mutations:",
        f"        - remove: {yaml_str(header)}",
    ]
    if jwks_path:
        # Envoy verifies the token; the filter only reads the verified payload it forwards.
        lines += [
            "- name: envoy.filters.http.jwt_authn",
            "  typed_config:",
            '    "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication',
            "    providers:",
            "      demo:",
            "        issuer: https://issuer.ai.example.com",
            "        audiences: [ai-gateway]",
            f"        local_jwks: {{ filename: {yaml_str(jwks_path)} }}",
            f"        forward_payload_header: {yaml_str(header)}",
            "        pad_forward_payload_header: false",
            "    rules:",
            "      - match: { prefix: / }",
            "        requires:",
            "          allow_missing_or_failed: {}",
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
        "JWT_FILTER": jwt_filter(args.jwt_jwks, plugin),
        "FAILURE_POLICY": args.failure_policy,
        "WASM_PATH": yaml_str(args.wasm),
        "PLUGIN_CONFIG": yaml_str(plugin),
        "CLUSTERS": clusters(args.mock_base_port),
    }
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", v)
    if args.no_filter or args.ext_proc_port:
        text = strip_wasm_filter(text)
    elif args.host == "native":
        text = replace_wasm_filter(text, native_filter(plugin))
    if args.ext_proc_port:
        text = add_ext_proc(text, args.ext_proc_port, args.ext_proc_response_body_mode)
    return text


# The native module's name: Envoy loads lib<name>.so from its search path.
NATIVE_MODULE = "ai_gateway_native"


def native_filter(plugin):
    """The dynamic-module filter, configured with the same JSON as the Wasm filter."""
    return indent([
        "- name: envoy.filters.http.dynamic_modules",
        "  typed_config:",
        '    "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter',
        "    dynamic_module_config:",
        f"      name: {NATIVE_MODULE}",
        "      # The module runs a tick thread, so it must never be unloaded.",
        "      do_not_close: true",
        "    filter_name: ai-gateway-filter",
        "    filter_config:",
        '      "@type": type.googleapis.com/google.protobuf.StringValue',
        f"      value: {yaml_str(plugin)}",
    ], 18)


def replace_wasm_filter(text, replacement):
    """The same bootstrap with `replacement` where the Wasm filter was."""
    stripped = strip_wasm_filter(text)
    marker = "                  - name: envoy.filters.http.router"
    return stripped.replace(marker, replacement + "\n" + marker, 1)


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


EXT_PROC_CLUSTER = "ext-proc"


def add_ext_proc(text, port, response_body_mode):
    """Envoy's ext_proc filter in the Wasm filter's place (before the router), calling the
    processor at 127.0.0.1:port over gRPC (cluster `ext-proc`, HTTP/2).

    Every phase goes to the processor: request headers, the request body buffered whole
    (BUFFERED, as the Wasm filter reads it), response headers and the response body in
    `response_body_mode` (STREAMED: each chunk as it arrives, so a stream keeps
    streaming; NONE: not sent). Trailers are skipped: OpenAI traffic has none. A failed
    processor fails the request (failure_mode_allow: false, like FAIL_CLOSED)."""
    filt = indent([
        "- name: envoy.filters.http.ext_proc",
        "  typed_config:",
        '    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor',
        f"    grpc_service: {{ envoy_grpc: {{ cluster_name: {EXT_PROC_CLUSTER} }} }}",
        "    failure_mode_allow: false",
        "    message_timeout: 5s",
        "    processing_mode:",
        "      request_header_mode: SEND",
        "      request_body_mode: BUFFERED",
        "      request_trailer_mode: SKIP",
        "      response_header_mode: SEND",
        f"      response_body_mode: {response_body_mode}",
        "      response_trailer_mode: SKIP",
    ], 18)
    router = " " * 18 + "- name: envoy.filters.http.router"
    if router not in text:
        raise SystemExit("render: template layout changed; no router filter to put ext_proc before")
    text = text.replace(router, filt + "\n" + router, 1)
    cluster = indent([
        f"- name: {EXT_PROC_CLUSTER}",
        "  type: STATIC",
        "  connect_timeout: 1s",
        "  typed_extension_protocol_options:",
        "    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:",
        '      "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
        "      explicit_http_config: { http2_protocol_options: {} }",
        "  load_assignment:",
        f"    cluster_name: {EXT_PROC_CLUSTER}",
        "    endpoints:",
        "      - lb_endpoints:",
        f"          - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}",
    ], 4)
    # The clusters are the bootstrap's last section.
    return text.rstrip("\n") + "\n" + cluster + "\n"


LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"


def split_lds(text, lds_dir):
    """(bootstrap with file-based LDS, listener resource file) from a static bootstrap."""
    head, sep, rest = text.partition("  listeners:\n")
    block, sep2, tail = rest.partition("\n  clusters:\n")
    if not sep or not sep2:
        raise SystemExit("render: template layout changed; cannot split the listener out")
    lines = [l[4:] if l.startswith("    ") else l for l in block.split("\n")]
    first = lines[0]  # "- name: gateway"
    listener = "\n".join(["resources:", first, f'  "@type": {LISTENER_TYPE}'] + lines[1:]) + "\n"
    path = os.path.join(lds_dir, "listeners.yaml")
    dynamic = "\n".join([
        "node: { id: ai-gateway, cluster: ai-gateway }  # required by xDS, even from files",
        "dynamic_resources:",
        "  lds_config:",
        "    resource_api_version: V3",
        "    path_config_source:",
        f"      path: {yaml_str(path)}",
        f"      watched_directory: {{ path: {yaml_str(lds_dir)} }}",
        "",
    ])
    bootstrap = head.replace("static_resources:\n", dynamic + "\nstatic_resources:\n") + "  clusters:\n" + tail
    return bootstrap, listener


def write_atomic(path, text):
    """Write then rename, so a watcher never reads a half-written file."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


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
    p.add_argument("--lds-dir", default=None, help="serve the listener via file-based LDS from DIR")
    p.add_argument("--ext-proc-port", type=int, default=None,
                   help="ext_proc filter calling a processor on 127.0.0.1:PORT instead of the Wasm filter")
    p.add_argument("--ext-proc-response-body-mode", default="STREAMED", choices=["STREAMED", "NONE"])
    p.add_argument("--host", default=os.environ.get("AI_GATEWAY_HOST", "wasm"), choices=["wasm", "native"],
                   help="the filter as the Proxy-Wasm module or as the native dynamic module")
    p.add_argument("-o", "--output", default="-")
    args = p.parse_args(argv)
    text = render(args)
    if args.lds_dir:
        os.makedirs(args.lds_dir, exist_ok=True)
        text, listener = split_lds(text, os.path.abspath(args.lds_dir))
        write_atomic(os.path.join(args.lds_dir, "listeners.yaml"), listener)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
