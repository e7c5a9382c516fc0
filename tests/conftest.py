"""Integration-test fixtures: real Envoy 1.40 with the built module, mock backends only
for the models. Missing binaries fail the test with a clear message (never a skip)."""
import json
import os

import pytest

from harness import launcher
from harness.launcher import Topology

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The suite runs once per host (make test: AI_GATEWAY_HOST=wasm, then native). These files
# test artifacts rather than a running filter (manifests, schemas, rules, the image, the
# contract document), so they run once, under the Wasm host.
HOST_INDEPENDENT = {
    "test_config_schema.py",
    "test_contract.py",
    "test_manifests.py",
    "test_oci_image.py",
    "test_prometheus_rules.py",
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "wasm_only(reason): a Proxy-Wasm behaviour the native host does not have; the "
        "reason says why (docs/native.md lists each difference)")


def pytest_collection_modifyitems(config, items):
    if launcher.host() != "native":
        return
    keep, drop = [], []
    for item in items:
        (drop if os.path.basename(str(item.fspath)) in HOST_INDEPENDENT else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_setup(item):
    mark = item.get_closest_marker("wasm_only")
    if mark and launcher.host() == "native":
        pytest.skip("native host: " + (mark.args[0] if mark.args else "Proxy-Wasm only"))


def demo_config():
    with open(os.path.join(ROOT, "filters", "demo.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def demo():
    """One gateway with the demo configuration, shared by a test module."""
    with Topology(plugin_config=demo_config(), concurrency=2) as topo:
        yield topo


@pytest.fixture
def make_gateway():
    """Factory for gateways with a per-test configuration; all are stopped afterwards."""
    started = []

    def make(**kwargs):
        topo = Topology(**kwargs)
        started.append(topo)
        topo.start()
        return topo

    yield make
    for topo in started:
        topo.stop()
