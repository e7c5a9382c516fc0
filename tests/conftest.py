"""Integration-test fixtures: real Envoy 1.40 with the built module, mock backends only
for the models. Missing binaries fail the test with a clear message (never a skip)."""
import json
import os

import pytest

from harness.launcher import Topology

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
