"""Quotas across a configuration reload: pushing a new plugin configuration to a running Envoy
(file-based LDS, `Topology(lds=True)`) keeps every tenant's buckets, because they live in
the process-wide shared data keyed by prefix and tenant name, and the new limits apply
from the next decision (a smaller burst clamps the stored level)."""
import time

import pytest

from client import call
from conftest import demo_config
from harness.launcher import Topology
from quota_support import add_tenant

SLOW = 0.001  # per minute: nothing refills during the test


def config(burst, probe_burst):
    cfg = demo_config()
    add_tenant(cfg, "reload", {"requests_per_minute": SLOW, "request_burst": burst})
    # A second tenant whose advertised limit tells which configuration is live, without
    # spending anything from the tenant under test.
    add_tenant(cfg, "probe", {"requests_per_minute": SLOW, "request_burst": probe_burst})
    return cfg


def get(gw, tenant):
    r = call(gw, "/v1/models", host=f"{tenant}.ai.example.com", key=f"sk-{tenant}")
    return r, r.headers.get("x-ratelimit-limit-requests"), r.headers.get("x-ratelimit-remaining-requests")


def push_and_wait(gw, cfg, probe_limit, timeout=30.0):
    """Push `cfg` and wait until new connections see it (the probe's limit changes).
    Returns the probe's first answer under the new configuration."""
    gw.push_plugin_config(cfg)
    deadline = time.time() + timeout
    while True:
        r, limit, remaining = get(gw, "probe")
        if limit == str(probe_limit):
            return r, remaining
        assert time.time() < deadline, f"configuration not applied; probe limit {limit}"
        time.sleep(0.1)


@pytest.fixture
def gw():
    with Topology(plugin_config=config(5, 1000), concurrency=4, lds=True) as topo:
        yield topo


def test_push_keeps_buckets_and_applies_new_limits(gw):
    for left in (4, 3, 2):
        r, limit, remaining = get(gw, "reload")
        assert r.status_code == 200 and (limit, remaining) == ("5", str(left))

    # Larger burst: the bucket keeps its level (2), it is not refilled to the new 8.
    push_and_wait(gw, config(8, 2000), 2000)
    r, limit, remaining = get(gw, "reload")
    assert r.status_code == 200
    assert (limit, remaining) == ("8", "1")

    # Smaller burst: the stored level (1) is within it and is kept; then it is spent.
    push_and_wait(gw, config(1, 3000), 3000)
    r, limit, remaining = get(gw, "reload")
    assert r.status_code == 200 and (limit, remaining) == ("1", "0")
    r, limit, remaining = get(gw, "reload")
    assert r.status_code == 429 and (limit, remaining) == ("1", "0")

    # A burst pushed below a bucket's level clamps it from the next decision: the probe
    # had almost 1000 left; under a burst of 2 its first request leaves 1.
    r, remaining = push_and_wait(gw, config(1, 2), 2)
    assert r.status_code == 200 and remaining == "1"
    r, _, remaining = get(gw, "probe")
    assert r.status_code == 200 and remaining == "0"
    r, _, _ = get(gw, "probe")
    assert r.status_code == 429

    # The tenant's audit trail spans both configurations: 3 + 1 + 1 allowed, 1 denied.
    time.sleep(0.3)
    auds = [a for a in gw.audits() if a.get("tenant") == "reload"]
    assert [a["decision"] for a in auds].count("allow") == 5
    assert [a["reason"] for a in auds if a["decision"] == "deny"] == ["quota_requests"]
