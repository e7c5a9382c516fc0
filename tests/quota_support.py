"""Helpers shared by the quota tests: tenants with their own keys and buckets,
concurrent bursts, and waiting for the records that prove a request was settled."""
import asyncio
import hashlib
import math
import time

import httpx


def sha256_hex(text):
    return hashlib.sha256(text.encode()).hexdigest()


def add_tenant(cfg, name, quota, **extra):
    """Add a tenant `name` (host `<name>.ai.example.com`, key `sk-<name>`) to a plugin
    configuration; returns (host, key). The demo bootstrap's catch-all virtual host routes
    any hostname, and the filter binds the key to this one."""
    host = f"{name}.ai.example.com"
    key = f"sk-{name}"
    tenant = {
        "name": name,
        "hosts": [host],
        "api_keys": [{"id": f"svc:{name}", "sha256": sha256_hex(key)}],
        "quota": quota,
    }
    tenant.update(extra)
    cfg["tenants"].append(tenant)
    return host, key


def poll(fn, timeout=15.0, interval=0.1):
    """fn() until it returns a true value (then that value), at most `timeout` seconds;
    then its last value."""
    deadline = time.time() + timeout
    while True:
        value = fn()
        if value or time.time() > deadline:
            return value
        time.sleep(interval)


def for_tenant(items, tenant):
    return [x for x in items if x.get("tenant") == tenant]


def wait_tenant_records(gw, tenant, n, timeout=60.0):
    """Wait until `n` gateway and `n` audit records of `tenant` are flushed. A record is
    written after the filter's `on_log`, i.e. after the quota was settled."""
    deadline = time.time() + timeout
    while True:
        recs, auds = for_tenant(gw.records(), tenant), for_tenant(gw.audits(), tenant)
        if (len(recs) >= n and len(auds) >= n) or time.time() > deadline:
            return recs, auds
        time.sleep(0.05)


def wait_request_id(gw, rid, timeout=20.0):
    """The (gateway, audit) records of one request, once both are flushed."""
    deadline = time.time() + timeout
    while True:
        recs = [r for r in gw.records() if r.get("client_request_id") == rid]
        auds = [a for a in gw.audits() if a.get("client_request_id") == rid]
        if (recs and auds) or time.time() > deadline:
            assert len(recs) == 1 and len(auds) == 1, (rid, recs, auds)
            return recs[0], auds[0]
        time.sleep(0.05)


def worker_connections(gw):
    """Per-worker downstream connection counters of the gateway listener."""
    out = {}
    for line in gw.admin("/stats?filter=worker_.*downstream_cx_total").splitlines():
        name, _, value = line.partition(": ")
        if f"_{gw.gateway_port}.worker_" in name:
            worker = name.split(".worker_")[1].split(".")[0]
            out[worker] = int(value)
    return out


def burst(base_url, requests_, stream=False, timeout=120.0):
    """Fire all `requests_` ((path, headers, json_body) tuples) at once, each on its own
    connection, and return [(status, headers, body_bytes)] in the same order. Every task
    waits at a gate until all are created, so they hit Envoy together; new connections
    are spread over Envoy's workers by the kernel (SO_REUSEPORT). A path may be an
    absolute URL instead (another gateway: one burst over several replicas)."""

    async def run():
        limits = httpx.Limits(max_connections=len(requests_), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:
            gate = asyncio.Event()

            async def one(path, headers, body):
                await gate.wait()
                if stream:
                    async with client.stream("POST", path, headers=headers, json=body) as r:
                        data = await r.aread()
                        return r.status_code, r.headers, data
                r = await client.post(path, headers=headers, json=body)
                return r.status_code, r.headers, r.content

            tasks = [asyncio.create_task(one(*req)) for req in requests_]
            await asyncio.sleep(0)  # every task is now parked at the gate
            gate.set()
            return await asyncio.gather(*tasks)

    return asyncio.run(run())


def check_retry_headers(headers):
    """`retry-after` (whole seconds, rounded up, >= 1) agrees with `retry-after-ms`.
    Returns the milliseconds."""
    ms = int(headers["retry-after-ms"])
    secs = int(headers["retry-after"])
    assert ms >= 1 and secs == max(1, math.ceil(ms / 1000)), (ms, secs)
    return ms


RATE_LIMIT_HEADERS = ("limit", "remaining", "reset")


def check_rate_limit_headers(headers, kinds=("requests", "tokens")):
    """All of x-ratelimit-{limit,remaining,reset}-<kind> present and well-formed; returns
    {kind: (limit, remaining, reset)}."""
    out = {}
    for kind in kinds:
        limit = int(headers[f"x-ratelimit-limit-{kind}"])
        remaining = int(headers[f"x-ratelimit-remaining-{kind}"])
        reset = headers[f"x-ratelimit-reset-{kind}"]
        assert 0 <= remaining <= limit, (kind, limit, remaining)
        assert reset and reset[-1] == "s", reset  # Go duration: 0s, 20ms, 1.5s, 6m0s
        out[kind] = (limit, remaining, reset)
    return out
