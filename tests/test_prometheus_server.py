"""The recording rules against real data: a real Prometheus (Debian binary)
scrapes the real Envoy's admin /stats/prometheus while mixed traffic goes through the
gateway, evaluates filters/prometheus/rules.yml, and is queried over its HTTP API.

rate() needs two samples of a series with an increase between them, so traffic is sent in
rounds, each followed by a scrape, until the rules have non-zero data (bounded deadline;
no timing assertions). A missing prometheus binary fails the test; it never skips."""
import json
import math
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import requests
import yaml

from client import HOST_B, KEY_B, call, chat_body
from harness.launcher import BACKENDS, free_ports, stop_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROM_DIR = os.path.join(ROOT, "filters", "prometheus")
RULES = os.path.join(PROM_DIR, "rules.yml")
PROM_CONFIG = os.path.join(PROM_DIR, "prometheus.yml")
TARGET_PLACEHOLDER = "127.0.0.1:9901"
JOB = "ai-gateway-envoy"

CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"
TRM = {"tenant", "route", "model_route"}
TENANTS = {"tenant-a", "tenant-b", "unknown"}
ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "unknown"}
MODEL_ROUTES = set(BACKENDS) | {"unknown"}
DEADLINE_S = 90


class Prometheus:
    """A prometheus server on a free 127.0.0.1 port with a temporary config and TSDB,
    scraping one Envoy admin address every second. Always stopped by stop()."""

    def __init__(self, admin_address):
        self.binary = shutil.which("prometheus")
        if self.binary is None:
            pytest.fail("prometheus not found on PATH: install the Debian package `prometheus` "
                        "(`make apt-deps`, or `apt-get install -y prometheus`)")
        self.workdir = tempfile.mkdtemp(prefix="ai-gw-prom-")
        self.port = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.log_path = os.path.join(self.workdir, "prometheus.log")
        self.config_path = os.path.join(self.workdir, "prometheus.yml")
        self.write_config(admin_address)

    def write_config(self, admin_address):
        # The shipped demo config, with its target placeholder replaced and 1s intervals.
        with open(PROM_CONFIG) as f:
            text = f.read()
        assert TARGET_PLACEHOLDER in text, f"{PROM_CONFIG} lost its target placeholder"
        cfg = yaml.safe_load(text.replace(TARGET_PLACEHOLDER, admin_address))
        cfg["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s",
                              "evaluation_interval": "1s"})
        cfg["rule_files"] = [RULES]
        assert [j["job_name"] for j in cfg["scrape_configs"]] == [JOB]
        with open(self.config_path, "w") as f:
            yaml.safe_dump(cfg, f)

    def start(self):
        cmd = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={os.path.join(self.workdir, 'data')}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        pytest.fail(f"prometheus did not become ready on {self.url}:\n{self.log()}")

    def stop(self):
        stop_process(self.proc)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def query(self, expr):
        r = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=5)
        body = r.json()
        assert r.status_code == 200 and body.get("status") == "success", (expr, r.status_code, body)
        return body["data"]["result"]

    def targets(self):
        r = requests.get(self.url + "/api/v1/targets", timeout=5)
        return r.json()["data"]["activeTargets"]

    def last_scrape(self):
        """Time (Unix seconds) of the last successful scrape of the gateway, or None."""
        res = self.query(f'timestamp(up{{job="{JOB}"}} == 1)')
        return float(res[0]["value"][1]) if res else None


def value(series):
    return float(series["value"][1])


def labels(series):
    return {k: v for k, v in series["metric"].items() if k != "__name__"}


def traffic_round(gw, first):
    """tenant-a chat 200s, tenant-b embeddings 200s, 401s and backend 503s.
    Returns the statuses seen per kind (checked on the first round only: later rounds
    may meet tenant-b's small quota, which changes nothing for this test)."""
    seen = {"chat": [], "embed": [], "unauth": [], "backend_503": []}
    for i in range(5):
        seen["chat"].append(call(gw, CHAT, chat_body(f"metrics round {i}")).status_code)
    for _ in range(2 if first else 1):
        body = {"model": "bge-small", "input": "metrics for the gateway"}
        seen["embed"].append(call(gw, EMBED, body, host=HOST_B, key=KEY_B).status_code)
    seen["unauth"].append(call(gw, CHAT, chat_body(), key=None).status_code)
    seen["unauth"].append(call(gw, CHAT, chat_body(), key="sk-not-a-real-key").status_code)
    for _ in range(4):
        r = call(gw, CHAT, chat_body("please fail"), headers={"x-mock-status": "503"})
        seen["backend_503"].append(r.status_code)
    if first:
        assert set(seen["chat"]) == {200}, seen
        assert set(seen["embed"]) == {200}, seen
        assert set(seen["unauth"]) == {401}, seen
        assert set(seen["backend_503"]) == {503}, seen
    return seen


def exported_lines(gw, name):
    text = gw.admin("/stats/prometheus")
    return [l for l in text.splitlines() if l.startswith(name)]


def snapshot(prom):
    return {
        "rps": prom.query("ai_gateway:requests_per_second"),
        "errors": prom.query("ai_gateway:error_rate"),
        "p95": prom.query("ai_gateway:p95_latency_ms"),
    }


def is_chat_a(series):
    m = series["metric"]
    return m.get("tenant") == "tenant-a" and m.get("route") == CHAT and m.get("model_route", "").startswith("chat-llama3-8b-")


def is_embed_b(series):
    m = series["metric"]
    return m.get("tenant") == "tenant-b" and m.get("route") == EMBED and m.get("model_route") == "embed-bge-small-v1"


def complete(snap):
    return (any(is_chat_a(s) and value(s) > 0 for s in snap["rps"])
            and any(is_embed_b(s) for s in snap["rps"])
            and any(is_chat_a(s) and value(s) > 0 for s in snap["errors"])
            and any(is_chat_a(s) and math.isfinite(value(s)) for s in snap["p95"]))


@pytest.fixture(scope="module")
def scraped(demo):
    """Prometheus scraping the demo gateway, after enough traffic that the recording
    rules have non-zero data. Yields (prometheus, last snapshot)."""
    # First round, and the module exports what the rules need (before Prometheus).
    traffic_round(demo, first=True)
    lines = exported_lines(demo, "ai_gateway_requests_total")
    assert lines, ("the gateway exports no ai_gateway_requests_total on /stats/prometheus; "
                   "ai_gateway lines found: "
                   + json.dumps([l for l in demo.admin("/stats/prometheus").splitlines() if "ai_gateway" in l][:40], indent=1))

    prom = Prometheus(f"127.0.0.1:{demo.admin_port}").start()
    try:
        deadline = time.time() + DEADLINE_S
        snap = None
        while True:
            # One more round, then wait for a scrape that happened after it, so every
            # series touched in two rounds has two samples with an increase between them.
            traffic_round(demo, first=False)
            sent_at = time.time()
            while time.time() < deadline:
                t = prom.last_scrape()
                if t is not None and t > sent_at:
                    break
                time.sleep(0.2)
            # Rules are evaluated every second; give them a couple of evaluations.
            poll_until = min(deadline, time.time() + 3)
            while time.time() < poll_until:
                snap = snapshot(prom)
                if complete(snap):
                    break
                time.sleep(0.3)
            if snap is not None and complete(snap):
                break
            if time.time() >= deadline:
                pytest.fail(
                    "the recording rules never had data for the traffic.\n"
                    f"targets: {json.dumps(prom.targets(), indent=1)[:3000]}\n"
                    f"raw requests series: {json.dumps(prom.query('ai_gateway_requests_total'))[:3000]}\n"
                    f"last rule results: {json.dumps(snap)[:3000]}\n"
                    f"prometheus log: {prom.log()}")
        yield prom, snap
    finally:
        prom.stop()


def test_scrape_target_is_the_gateway_admin(scraped, demo):
    prom, _ = scraped
    targets = [t for t in prom.targets() if t["labels"].get("job") == JOB]
    assert len(targets) == 1
    assert targets[0]["health"] == "up", targets[0]
    assert targets[0]["scrapeUrl"] == f"{demo.admin_url}/stats/prometheus"


def test_raw_series_carry_the_stats_tags(scraped):
    prom, _ = scraped
    series = prom.query("ai_gateway_requests_total")
    assert series
    for s in series:
        assert set(labels(s)) == TRM | {"status", "job", "instance"}, s["metric"]
        m = s["metric"]
        assert m["tenant"] in TENANTS and m["route"] in ROUTES and m["model_route"] in MODEL_ROUTES, m
    statuses = {s["metric"]["status"] for s in series}
    assert {"200", "401", "503"} <= statuses, statuses
    denials = prom.query("ai_gateway_auth_denials_total")
    assert {"missing_credentials", "invalid_credentials"} <= {s["metric"].get("reason") for s in denials}, denials


def test_otel_genai_series_are_scraped_with_bounded_labels(scraped):
    """The OpenTelemetry GenAI names (docs/contract.md) beside the tutorial's: token usage
    by type, request duration and time to first token, gen_ai_* attributes as labels."""
    prom, _ = scraped
    usage = prom.query("gen_ai_client_token_usage_count")
    assert usage, "no gen_ai_client_token_usage in the scrape"
    attrs = {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"}
    for s in usage:
        assert set(labels(s)) == attrs | {"gen_ai_token_type", "job", "instance"}, s["metric"]
        m = s["metric"]
        assert m["gen_ai_token_type"] in {"input", "output"}, m
        assert m["gen_ai_operation_name"] in {"chat", "text_completion", "embeddings"}, m
        assert m["gen_ai_provider_name"] == "openai", m
        assert m["gen_ai_request_model"] in {"llama3-8b", "bge-small", "unknown"}, m
    ops = {(s["metric"]["gen_ai_operation_name"], s["metric"]["gen_ai_token_type"]) for s in usage}
    assert {("chat", "input"), ("chat", "output"), ("embeddings", "input")} <= ops, ops
    duration = prom.query("gen_ai_server_request_duration_ms_count")
    assert duration and all(set(labels(s)) == attrs | {"job", "instance"} for s in duration), duration
    assert prom.query("sum(gen_ai_server_request_duration_ms_sum) > 0")


def test_requests_per_second(scraped):
    _, snap = scraped
    series = snap["rps"]
    for s in series:
        assert s["metric"]["__name__"] == "ai_gateway:requests_per_second"
        assert set(labels(s)) == TRM, s["metric"]
        assert value(s) >= 0
    assert any(is_chat_a(s) and value(s) > 0 for s in series), series
    assert any(is_embed_b(s) for s in series), series
    # The 401s are counted too (status is not a label of the rule).
    assert len(series) >= 3, series


def test_error_rate(scraped):
    _, snap = scraped
    series = snap["errors"]
    assert series, "no ai_gateway:error_rate series"
    for s in series:
        assert s["metric"]["__name__"] == "ai_gateway:error_rate"
        assert set(labels(s)) == TRM, s["metric"]
    # Only tenant-a's chat requests got 503s (from the backend via x-mock-status).
    assert all(is_chat_a(s) for s in series), series
    assert any(value(s) > 0 for s in series), series


def test_p95_latency(scraped):
    _, snap = scraped
    series = snap["p95"]
    assert series, "no ai_gateway:p95_latency_ms series"
    for s in series:
        assert s["metric"]["__name__"] == "ai_gateway:p95_latency_ms"
        assert set(labels(s)) == TRM, s["metric"]
    finite = [value(s) for s in series if is_chat_a(s) and math.isfinite(value(s))]
    assert finite and all(v >= 0 for v in finite), series
