#!/usr/bin/env python3
"""`make demo-global`: global quotas across two gateway replicas, in the foreground.

Starts redis-server, the global rate limit service (ai-gateway-ratelimit) and two gateway
Envoys with the filter (filters/demo-global.json: the demo tenants with `global` limits,
synced) in front of one set of mock model backends. Both replicas count every tenant's
requests and tokens into the same Redis windows through the service.

Reads from the environment (the Makefile sets defaults): GATEWAY_PORT (replica 0; replica
1 listens on GATEWAY_PORT+1), ADMIN_PORT (likewise, +1), MOCK_BASE_PORT, REDIS_PORT,
RLS_PORT, GLOBAL_PLUGIN_CONFIG, LOG_DIR (records under LOG_DIR/replica-<i>/),
ENVOY_CONCURRENCY. Ctrl-C stops every process it started.
"""
import os
import signal
import sys
import time

from harness.launcher import ROOT, LaunchError, port_free
from harness.ratelimit import GlobalTopology, RateLimitService, domain_config
from harness.redis import RedisServer

REPLICAS = 2
PREFIX = "ai-gateway-rl:"


def env_int(name, default):
    return int(os.environ.get(name, default))


def instructions(gws, admins, redis_port, rls, log_dir):
    g0, g1 = (f"http://127.0.0.1:{p}" for p in gws)
    emb = ("-H 'Host: tenant-b.ai.example.com' -H 'x-api-key: sk-tenant-b-demo' -H 'Content-Type: application/json' "
           """-d '{"model":"bge-small","input":["hello world"]}'""")
    chat = ("-H 'Host: tenant-a.ai.example.com' -H 'Authorization: Bearer sk-tenant-a-demo' "
            "-H 'Content-Type: application/json' "
            """-d '{"model":"llama3-8b","messages":[{"role":"user","content":"hello gateway"}]}'""")
    key = f"{PREFIX}ai-gateway|kind=requests|tenant=tenant-b|minute:$(( $(date +%s) / 60 * 60 ))"
    return f"""
ai-gateway-filter global quota demo is up:
  replica 0: gateway {g0}, admin http://127.0.0.1:{admins[0]}
  replica 1: gateway {g1}, admin http://127.0.0.1:{admins[1]}
  rate limit service: {rls.address} (log {rls.log_path})
  redis: 127.0.0.1:{redis_port}
logs: {log_dir}/replica-0/ and {log_dir}/replica-1/ (access.log: gateway records with quota_mode; audit.log)

# tenant-b may send 20 embeddings a minute in total, whichever replica it reaches:
# the same tenant on both replicas, alternating; about 20 answers are 200, then 429
# (quota_requests) until the minute ends (fixed UTC windows)
for i in $(seq 15); do for g in {g0} {g1}; do curl -s -o /dev/null -w "$g %{{http_code}}\\n" $g/v1/embeddings {emb}; done; done

# one request on each replica, with the body of a refusal
curl -s {g0}/v1/embeddings {emb}
curl -s {g1}/v1/embeddings {emb}

# tenant-a (3,000 requests and 1,000,000 tokens a minute, globally) on replica 1
curl -s {g1}/v1/chat/completions {chat}

# the shared counters in Redis: every key, then tenant-b's requests this minute
# (the filter reports what it admitted at each sync, every 200 ms)
redis-cli -p {redis_port} --scan --pattern '{PREFIX}*'
redis-cli -p {redis_port} GET "{key}"

# each replica's view: quota rejections and degraded decisions, per tenant
curl -s http://127.0.0.1:{admins[0]}/stats/prometheus | grep -E '^ai_gateway_quota_'
curl -s http://127.0.0.1:{admins[1]}/stats/prometheus | grep -E '^ai_gateway_quota_'

# the quota_mode of the last records (global; local_fallback while the service is down)
tail -n 3 {log_dir}/replica-0/access.log

Ctrl-C stops everything.
"""


def main():
    gw = env_int("GATEWAY_PORT", 10000)
    admin = env_int("ADMIN_PORT", 9901)
    base = env_int("MOCK_BASE_PORT", 18001)
    redis_port = env_int("REDIS_PORT", 6380)
    rls_port = env_int("RLS_PORT", 18081)
    conc = env_int("ENVOY_CONCURRENCY", 2)
    log_dir = os.path.join(ROOT, os.environ.get("LOG_DIR", "envoy-demo/logs"))
    plugin = os.path.join(ROOT, os.environ.get("GLOBAL_PLUGIN_CONFIG", "filters/demo-global.json"))
    gws = [gw + i for i in range(REPLICAS)]
    admins = [admin + i for i in range(REPLICAS)]
    ports = gws + admins + [base, base + 1, base + 2, redis_port, rls_port]
    busy = [p for p in ports if not port_free(p)]
    if busy:
        sys.exit(f"port(s) {busy} already in use: set GATEWAY_PORT / ADMIN_PORT / MOCK_BASE_PORT / "
                 "REDIS_PORT / RLS_PORT")
    if len(set(ports)) != len(ports):
        sys.exit(f"the ports overlap: {ports} (replica i uses GATEWAY_PORT+i and ADMIN_PORT+i)")

    stop = {"now": False}

    def on_signal(signum, _frame):
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    redis = RedisServer(port=redis_port)
    rls = RateLimitService(domain_config("ai-gateway"), f"redis://127.0.0.1:{redis_port}", port=rls_port)
    topo = GlobalTopology(plugin_config_file=plugin, replicas=REPLICAS, rls_port=rls_port, concurrency=conc,
                          gateway_ports=gws, admin_ports=admins, mock_base_port=base, log_dir=log_dir,
                          quiet=False)
    started = []
    try:
        for part in (redis, rls, topo):
            started.append(part)
            part.start()
    except LaunchError as e:
        for part in reversed(started):
            part.stop()
            part.cleanup()
        sys.exit(str(e))
    try:
        print(instructions(gws, admins, redis_port, rls, log_dir), flush=True)
        procs = [("redis-server", redis.proc), ("ai-gateway-ratelimit", rls.proc)] + \
            [(f"Envoy (replica {i})", r.envoy) for i, r in enumerate(topo)]
        while not stop["now"]:
            gone = [name for name, p in procs if p.poll() is not None]
            if gone:
                print(f"{', '.join(gone)} exited", file=sys.stderr)
                break
            time.sleep(0.2)
    finally:
        for part in reversed(started):
            part.stop()
            part.cleanup()
        print("demo stopped", flush=True)


if __name__ == "__main__":
    main()
