#!/usr/bin/env python3
"""`make demo`: mock model backends + Envoy 1.40 with the filter, in the foreground.

Reads GATEWAY_PORT, ADMIN_PORT, PLUGIN_CONFIG, LOG_DIR, ENVOY_CONCURRENCY and
MOCK_BASE_PORT from the environment (the Makefile sets defaults). Ctrl-C stops every
process it started. Runs with .venv/bin/python, where `make venv` installs the harness.
"""
import os
import signal
import sys
import time

from harness.launcher import ROOT, LaunchError, Topology, host, port_free


def main():
    gw = int(os.environ.get("GATEWAY_PORT", 10000))
    admin = int(os.environ.get("ADMIN_PORT", 9901))
    base = int(os.environ.get("MOCK_BASE_PORT", 18001))
    log_dir = os.path.join(ROOT, os.environ.get("LOG_DIR", "envoy-demo/logs"))
    plugin = os.path.join(ROOT, os.environ.get("PLUGIN_CONFIG", "filters/demo.json"))
    conc = int(os.environ.get("ENVOY_CONCURRENCY", 2))
    busy = [p for p in (gw, admin, base, base + 1, base + 2) if not port_free(p)]
    if busy:
        sys.exit(f"port(s) {busy} already in use: set GATEWAY_PORT / ADMIN_PORT / MOCK_BASE_PORT")

    stop = {"now": False}

    def on_signal(signum, _frame):
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    topo = Topology(plugin_config_file=plugin, concurrency=conc, gateway_port=gw, admin_port=admin,
                    mock_base_port=base, log_dir=log_dir, quiet=False)
    try:
        topo.start()
    except LaunchError as e:
        topo.stop()
        sys.exit(str(e))
    try:
        g = f"http://127.0.0.1:{gw}"
        print(f"""
ai-gateway-filter demo is up ({host()} module): gateway {g}, admin http://127.0.0.1:{admin}
logs: {log_dir}/access.log (gateway records), {log_dir}/audit.log (audit records)

# 200: tenant-a chat completion (model routing by body, 90/10 canary)
curl -s {g}/v1/chat/completions -H 'Host: tenant-a.ai.example.com' -H 'Authorization: Bearer sk-tenant-a-demo' -H 'Content-Type: application/json' -d '{{"model":"llama3-8b","messages":[{{"role":"user","content":"hello gateway"}}]}}'

# streaming, with time to first token and usage in the access log
curl -sN {g}/v1/chat/completions -H 'Host: tenant-a.ai.example.com' -H 'Authorization: Bearer sk-tenant-a-demo' -H 'Content-Type: application/json' -d '{{"model":"llama3-8b","stream":true,"messages":[{{"role":"user","content":"Explain why AI gateways need different timeout and routing rules."}}]}}'

# 200: tenant-b embeddings (x-api-key)
curl -s {g}/v1/embeddings -H 'Host: tenant-b.ai.example.com' -H 'x-api-key: sk-tenant-b-demo' -H 'Content-Type: application/json' -d '{{"model":"bge-small","input":["hello world"]}}'

# 401: no key / 403: tenant-b may not use chat
curl -si {g}/v1/models -H 'Host: tenant-a.ai.example.com'
curl -si {g}/v1/chat/completions -H 'Host: tenant-b.ai.example.com' -H 'x-api-key: sk-tenant-b-demo' -H 'Content-Type: application/json' -d '{{"model":"llama3-8b","messages":[{{"role":"user","content":"hi"}}]}}'

# the official openai SDK on the shared domain: just the base URL and a key
{sys.executable} -c "import openai; c = openai.OpenAI(base_url='{g}/v1', api_key='sk-tenant-a-demo'); print(c.chat.completions.create(model='llama3-8b', messages=[{{'role': 'user', 'content': 'hi'}}]).choices[0].message.content)"

# metrics
curl -s http://127.0.0.1:{admin}/stats/prometheus | grep -E '^(envoy_dynamicmodulescustom_)?ai_gateway_'

Ctrl-C stops everything.
""", flush=True)
        while not stop["now"]:
            if topo.envoy.poll() is not None:
                print("Envoy exited", file=sys.stderr)
                break
            time.sleep(0.2)
    finally:
        topo.stop()
        print("demo stopped", flush=True)


if __name__ == "__main__":
    main()
