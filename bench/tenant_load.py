#!/usr/bin/env python3
"""Tenant-count benchmark in a real Envoy (not a test): how long a Wasm VM takes to load a
configuration with 10,000 tenants and 100,000 keys, next to the demo configuration.

For each configuration and run it starts the demo topology (harness/launcher.py) with
the filter's Envoy log at `trace`, and reports
- `on_configure` per VM: from Envoy's `proxy_on_configure(` to its `return` log line, per
  VM (the main thread's and one per worker), millisecond timestamps from Envoy's log;
- start to ready: from starting the Envoy process to `/ready` answering 200 (this includes
  Envoy parsing the bootstrap, where the large configuration is a 12 MB string).

    .venv/bin/python -m bench.tenant_load [--tenants 10000] [--keys-per-tenant 10]
        [--runs 3] [--concurrency 2]

The native parse + validate time and the per-request authentication cost are measured by
`cargo run --release -p ai-gateway-core --example tenant_scale`.
"""
import argparse
import hashlib
import json
import os
import re
import statistics
import tempfile
import time
from datetime import datetime

from harness.launcher import Topology

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\]\[(\d+)\].*?(proxy_on_configure\(|proxy_on_configure return)")


def large_config(tenants, keys_per_tenant):
    """Same shape as core/examples/tenant_scale.rs: every tenant with a hostname, keys, a JWT
    claim value, a SPIFFE id and route and model allowlists."""
    ts = []
    for t in range(tenants):
        ts.append({
            "name": f"tenant-{t}",
            "hosts": [f"t{t}.ai.example.com"],
            "api_keys": [{"id": f"svc:t{t}-k{k}",
                          "sha256": hashlib.sha256(f"sk-bench-{t}-{k}".encode()).hexdigest()}
                         for k in range(keys_per_tenant)],
            "jwt_claim_values": [f"org-{t}"],
            "spiffe_ids": [f"spiffe://cluster.local/ns/t{t}/sa/app"],
            "routes": ["/v1/chat/completions", "/v1/embeddings", "/v1/models"],
            "models": ["llama3-8b", "bge-small"],
        })
    return {
        "routes": [
            {"prefix": "/v1/chat/completions", "api": "chat_completions"},
            {"prefix": "/v1/completions", "api": "completions"},
            {"prefix": "/v1/embeddings", "api": "embeddings"},
            {"prefix": "/v1/models", "api": "none"},
        ],
        "models": [
            {"name": "llama3-8b", "input_usd_per_million": 0.2, "output_usd_per_million": 0.6},
            {"name": "bge-small", "input_usd_per_million": 0.02},
        ],
        "identity": {"jwt": {}},
        "tenants": ts,
    }


class TimedTopology(Topology):
    wasm_log_level = "trace"

    def start_envoy(self):
        t0 = time.monotonic()
        super().start_envoy()
        self.ready_ms = (time.monotonic() - t0) * 1e3


def configure_times(log):
    """Milliseconds of each proxy_on_configure call, in log order."""
    open_calls, out = {}, []
    for line in log.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        ts = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
        tid = m.group(2)
        if m.group(3).startswith("proxy_on_configure("):
            open_calls[tid] = ts
        elif tid in open_calls:
            out.append((ts - open_calls.pop(tid)).total_seconds() * 1e3)
    return out


def measure(name, config_path, runs, concurrency):
    rows = []
    for _ in range(runs):
        with TimedTopology(plugin_config_file=config_path, concurrency=concurrency) as gw:
            with open(gw.config_path) as f:
                bootstrap_bytes = len(f.read())
            log = gw.envoy_output()
            assert "configuration loaded" in log, log[-2000:]
            rows.append((gw.ready_ms, configure_times(log), bootstrap_bytes))
    ready = [r[0] for r in rows]
    per_vm = [t for r in rows for t in r[1]]
    return {
        "config": name,
        "bootstrap_bytes": rows[0][2],
        "vms_per_start": len(rows[0][1]),
        "on_configure_ms_median": statistics.median(per_vm),
        "on_configure_ms_max": max(per_vm),
        "ready_ms_median": statistics.median(ready),
        "ready_ms_min": min(ready),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tenants", type=int, default=10_000)
    p.add_argument("--keys-per-tenant", type=int, default=10)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=2)
    args = p.parse_args(argv)

    work = tempfile.mkdtemp(prefix="tenant-load-")
    large = os.path.join(work, "large.json")
    with open(large, "w") as f:
        json.dump(large_config(args.tenants, args.keys_per_tenant), f, separators=(",", ":"))
    results = [
        measure("demo (2 tenants, 2 keys)", os.path.join(ROOT, "filters", "demo.json"),
                args.runs, args.concurrency),
        measure(f"{args.tenants} tenants, {args.tenants * args.keys_per_tenant} keys "
                f"({os.path.getsize(large)} bytes)", large, args.runs, args.concurrency),
    ]
    os.remove(large)
    os.rmdir(work)
    print(f"Envoy --concurrency {args.concurrency}, {args.runs} starts per configuration; "
          f"{os.cpu_count()} CPUs")
    print("| configuration | VMs configured per start | on_configure per VM, median / max (ms) "
          "| start to /ready, median / min (ms) |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['config']} | {r['vms_per_start']} | {r['on_configure_ms_median']:.0f} / "
              f"{r['on_configure_ms_max']:.0f} | {r['ready_ms_median']:.0f} / {r['ready_ms_min']:.0f} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
