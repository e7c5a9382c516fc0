"""Global quotas across gateway replicas (`global_quota`, docs/global-quotas.md): REPLICAS real
Envoy 1.40 processes with the filter (each --concurrency CONCURRENCY, so REPLICAS x
CONCURRENCY Wasm VMs decide), one real redis-server and one real ai-gateway-ratelimit
(configured with the domain only: the filter sends each limit as an override).

- faults: Redis stopped and restarted, the service stopped and restarted, one replica
  restarted. Every request is answered meanwhile (client timeouts, a status for each):
  `on_unavailable: local` tenants keep getting 200s (records say `local_fallback`),
  `closed` tenants get 503 `quota_unavailable`; the degraded metric counts both. Once
  the service is back, the counter equals every request admitted in the window, the
  outage's included, each once.
- synced: a burst of BURST_SIZE requests split over the replicas admits at least the
  limit and overshoots by less than REQUEST_OVERSHOOT; once the replicas have synced,
  the Redis counter equals the requests admitted.
- strict: the same burst admits the limit (plus or minus one).
- tokens, with streams whose usage is only known at the end, synced and strict: the
  Redis counter ends equal to the billed tokens (prompt + completion) of the admitted
  requests' records, and what was admitted agrees with the limit.
- records: `quota_mode` in the gateway and audit records (local, global, strict).

Counts only, no timing assertions: waits poll until a condition holds (with a bound).
Counters are per fixed window; each test leaves a window's edge first.
"""
import contextlib
import json
import math
import re
import threading
import uuid
from collections import Counter
from types import SimpleNamespace

import pytest
import requests

from client import call, chat_body
from conftest import demo_config
from harness.ratelimit import (GlobalTopology, RateLimitService, counter, counter_key, domain_config,
                               leave_window_edge, wait_counter, window_start)
from harness.redis import RedisServer
from quota_support import add_tenant, burst, poll, wait_request_id, wait_tenant_records

DOMAIN = "ai-gateway"
REPLICAS = 2
EXPECTED_REPLICAS = REPLICAS
CONCURRENCY = 2
SYNC_MS = 200
# Generous for a loaded 2-core machine: a strict admission waits for its call this long
# before it falls back, which would make the strict counts inexact.
RLS_TIMEOUT_MS = 1000
UNIT = "hour"
# A window edge is left when fewer seconds than this remain (a test's counting fits).
WINDOW_MARGIN = 150
SETTLE_TIMEOUT = 20.0  # seconds to wait for the replicas' syncs to reach the counter

GLOBAL_QUOTA = {"cluster": "ratelimit", "domain": DOMAIN, "expected_replicas": EXPECTED_REPLICAS,
                "sync_interval_ms": SYNC_MS, "timeout_ms": RLS_TIMEOUT_MS}


def overshoot_bound(limit):
    """The synced mode's worst case (docs/global-quotas.md, issue 12): between two syncs each
    other replica can admit at most its share, so admissions stay below limit + this."""
    return (REPLICAS - 1) * math.ceil(limit / EXPECTED_REPLICAS)


# Request limits: BURST_SIZE requests, half on each replica, at a limit of N an hour.
N = 100
BURST_SIZE = 600
REQUEST_OVERSHOOT = overshoot_bound(N)

# Token limits, with streams. Each prompt is WORDS three-letter words: the gateway
# estimates ceil((4 * WORDS - 1) / 4) = WORDS prompt tokens and the mock backend counts
# WORDS words, and max_tokens fixes the completion; so every stream's reservation equals
# its usage, COST, and the limit M holds exactly M // COST streams.
WORDS = 4
PROMPT = " ".join(["abc"] * WORDS)
MAX_TOKENS = 16
COST = WORDS + MAX_TOKENS
M = 50 * COST
STREAMS = 200
TOKEN_OVERSHOOT = overshoot_bound(M)
# Streams are paced (mock-llm --tokens-per-second) so they are still open when the
# replicas sync: usage is only known when each stream ends.
MOCK_ARGS = {"*": ["--tokens-per-second", "20"]}

CHAT = "/v1/chat/completions"


def global_limit(**kw):
    g = {"unit": UNIT}
    g.update(kw)
    return {"global": g}


def requests_key(tenant, start=None):
    return counter_key(DOMAIN, [("kind", "requests"), ("tenant", tenant)], UNIT, start)


def tokens_key(tenant, start=None):
    return counter_key(DOMAIN, [("kind", "tokens"), ("tenant", tenant)], UNIT, start)


def plugin_config(tenants):
    """filters/demo.json (tenant-a keeps its local buckets only) with global_quota and a
    tenant per entry of `tenants`; returns (config, {tenant: (host, key)})."""
    cfg = demo_config()
    cfg["global_quota"] = dict(GLOBAL_QUOTA)
    out = {name: add_tenant(cfg, name, quota) for name, quota in tenants.items()}
    for t in cfg["tenants"]:
        if "quota" in t and t["quota"] is None:  # a tenant without any quota
            del t["quota"]
    return cfg, out


def auth(tenants, tenant, rid=None):
    host, key = tenants[tenant]
    h = {"Host": host, "Authorization": f"Bearer {key}"}
    if rid:
        h["x-request-id"] = rid
    return h


def spread(topo, tenants, tenant, n, body):
    """n requests for one burst, alternating between the replicas (absolute URLs)."""
    urls = [r.base_url + CHAT for r in topo]
    return [(urls[i % len(urls)], auth(tenants, tenant, f"{tenant}-{i}"), body) for i in range(n)]


def error_of(body):
    return json.loads(body)["error"]


def assert_quota_refusal(status, body, kind):
    """The 429 of a quota refusal, OpenAI-shaped, naming the exhausted kind."""
    assert status == 429, (status, body)
    err = error_of(body)
    assert (err["type"], err["code"]) == (kind, "rate_limit_exceeded"), err
    assert kind in err["message"], err


def per_replica(topo, tenant):
    return [sum(1 for r in rep.records() if r.get("tenant") == tenant) for rep in topo]


def final_usage(sse_bytes):
    events = [l[len("data: "):] for l in sse_bytes.decode().split("\n") if l.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-3:]
    return json.loads(events[-2])["usage"]


def prometheus_samples(text, name):
    """{frozenset(labels.items()): value} of one metric in Prometheus text."""
    out = {}
    for line in text.splitlines():
        m = re.match(name + r"\{(.*)\} (\S+)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            out[frozenset(labels.items())] = float(m.group(2))
    return out


def degraded(replica, tenant, mode):
    """ai_gateway_quota_degraded_total{tenant, mode} of one replica (0 when absent)."""
    samples = prometheus_samples(replica.admin("/stats/prometheus"), "ai_gateway_quota_degraded_total")
    return sum(v for labels, v in samples.items() if {("tenant", tenant), ("mode", mode)} <= labels)


# --- d. faults (first: its own Redis, service and replicas) -----------------------------

BIG = 100_000  # never reached: every refusal in the fault test is about availability
FAULT_TENANTS = {
    "f-synced-local": global_limit(requests=BIG),
    "f-synced-closed": global_limit(requests=BIG, on_unavailable="closed"),
    "f-strict-local": global_limit(requests=BIG, mode="strict"),
    "f-strict-closed": global_limit(requests=BIG, mode="strict", on_unavailable="closed"),
}
LOCAL = ["f-synced-local", "f-strict-local"]
STRICT = ["f-strict-local", "f-strict-closed"]
CLOSED = ["f-synced-closed", "f-strict-closed"]
NORMAL_MODE = {"f-synced-local": "global", "f-synced-closed": "global",
               "f-strict-local": "strict", "f-strict-closed": "strict"}
BATCH = 8  # requests per tenant and replica in each phase


class Ledger:
    """Sends requests (one at a time, plus a background stream during the faults) and
    remembers every status, so the admitted total of each tenant over the whole window
    is known whatever the phase."""

    def __init__(self, topo, tenants):
        self.topo, self.tenants = topo, tenants
        self.admitted = Counter()
        self.sent = []  # (replica, tenant, rid, status, body)
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def background(self, replicas, pause=0.02):
        """Requests for every tenant on `replicas`, round after round, while the body of
        the `with` runs: a fault then happens mid-run, between and during requests."""
        stop = threading.Event()

        def run():
            while not stop.is_set():
                for i in replicas:
                    for t in self.tenants:
                        self.one(i, t)
                stop.wait(pause)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=120)
            assert not thread.is_alive(), "a background request never finished"

    def one(self, replica, tenant):
        rid = f"{tenant}-{uuid.uuid4().hex[:12]}"
        host, key = self.tenants[tenant]
        try:
            r = call(self.topo[replica], CHAT, chat_body("fault probe", max_tokens=4), host=host, key=key,
                     headers={"x-request-id": rid}, timeout=30)
            status, body = r.status_code, r.text
        except requests.RequestException as e:  # no answer within the timeout: a hang
            status, body = None, repr(e)
        with self.lock:
            self.sent.append((replica, tenant, rid, status, body))
            if status == 200:
                self.admitted[tenant] += 1
        return rid, status, body

    def mode_of(self, replica, rid):
        rec, aud = wait_request_id(self.topo[replica], rid)
        assert rec.get("quota_mode") == aud.get("quota_mode"), (rec, aud)
        return rec.get("quota_mode")

    def batch(self, replicas, tenants, n=BATCH):
        out = []
        for i in replicas:
            for t in tenants:
                for _ in range(n):
                    rid, status, body = self.one(i, t)
                    assert status is not None, f"replica {i}, {t}: no answer ({body})"
                    out.append((i, t, rid, status, body))
        return out

    def wait_degraded(self, replica):
        """Until this replica treats the service as unreachable for every tenant: closed
        tenants refused with 503, local tenants decided locally."""
        for t in CLOSED:
            assert poll(lambda: self.one(replica, t)[1] == 503, timeout=30), (replica, t, self.sent[-1])
        for t in LOCAL:
            assert poll(lambda: self.mode_of(replica, self.one(replica, t)[0]) == "local_fallback", timeout=30), \
                (replica, t, self.sent[-1])

    def wait_recovered(self, replica):
        for t in CLOSED:
            assert poll(lambda: self.one(replica, t)[1] == 200, timeout=30), (replica, t, self.sent[-1])
        for t in LOCAL:
            assert poll(lambda: self.mode_of(replica, self.one(replica, t)[0]) == NORMAL_MODE[t], timeout=30), \
                (replica, t, self.sent[-1])

    def check_outage_batch(self, results):
        for i, t, rid, status, body in results:
            if t in LOCAL:
                assert status == 200, (i, t, status, body)
                assert self.mode_of(i, rid) == "local_fallback", (i, t, rid)
            else:
                assert status == 503, (i, t, status, body)
                err = error_of(body)
                assert (err["type"], err["code"]) == ("server_error", "quota_unavailable"), err
                rec, aud = wait_request_id(self.topo[i], rid)
                assert aud["decision"] == "deny" and aud["reason"] == "quota_unavailable", aud
                assert rec["http_status"] == 503

    def check_normal_batch(self, results):
        for i, t, rid, status, body in results:
            assert status == 200, (i, t, status, body)
            assert self.mode_of(i, rid) == NORMAL_MODE[t], (i, t, rid)

    def check_every_answer(self):
        """Every request got an answer; local tenants were never refused, closed tenants
        only with 503 quota_unavailable."""
        for i, t, rid, status, body in self.sent:
            assert status is not None, f"replica {i}, {t}, {rid}: no answer ({body})"
            if t in LOCAL or status != 503:
                assert status == 200, (i, t, rid, status, body)
            else:
                assert error_of(body)["code"] == "quota_unavailable", (i, t, rid, body)

    def wait_counters(self, redis, start, faults=0):
        """Every synced tenant's counter equals its admitted total: each report counted
        once, none lost, whatever failed in between (a report whose call failed is sent
        again under its id, and the service counts an id once). A strict admission is not
        reported by a sync: when its call fails and the service may have counted it (Redis
        lost mid-script), its one retry under the same ids settles it, unless that fails
        too; then the fallback may count it again (docs/global-quotas.md). So a strict
        counter may exceed what was admitted by the requests in flight at a fault (one per
        replica here: the background sends one at a time), never fall below it."""
        got = {t: wait_counter(redis, requests_key(t, start), self.admitted[t], timeout=SETTLE_TIMEOUT)
               for t in self.tenants}
        for t in self.tenants:
            extra = got[t] - self.admitted[t]
            allowed = faults * REPLICAS if t in STRICT else 0
            assert 0 <= extra <= allowed, (t, got, dict(self.admitted))


def test_faults_answer_every_request_and_report_outage_admissions_once():
    cfg, tenants = plugin_config(FAULT_TENANTS)
    with RedisServer(persist=True) as redis, \
            RateLimitService(domain_config(DOMAIN), redis.url, redis_timeout_ms=300) as rls, \
            GlobalTopology(cfg, replicas=REPLICAS, rls_port=rls.port, concurrency=CONCURRENCY) as topo:
        leave_window_edge(UNIT, WINDOW_MARGIN)
        start = window_start(UNIT)
        ledger = Ledger(topo, tenants)
        everyone, every_tenant = range(REPLICAS), list(FAULT_TENANTS)

        ledger.check_normal_batch(ledger.batch(everyone, every_tenant))
        ledger.wait_counters(redis, start)

        # 1. Redis stopped mid-run: the service answers UNAVAILABLE. Restarted with its
        # append-only file, so the window's counters survive.
        with ledger.background(everyone):
            redis.stop()
            for i in everyone:
                ledger.wait_degraded(i)
            ledger.check_outage_batch(ledger.batch(everyone, every_tenant))
            for i in everyone:
                for t in LOCAL:
                    assert degraded(topo[i], t, "local_fallback") > 0, (i, t)
                for t in CLOSED:
                    assert degraded(topo[i], t, "closed") > 0, (i, t)
            redis.start()
            for i in everyone:
                ledger.wait_recovered(i)
        ledger.check_normal_batch(ledger.batch(everyone, every_tenant))
        ledger.wait_counters(redis, start, faults=1)

        # 2. The service stopped mid-run (connections refused) and started on its port.
        with ledger.background(everyone):
            rls.stop()
            for i in everyone:
                ledger.wait_degraded(i)
            ledger.check_outage_batch(ledger.batch(everyone, every_tenant))
            rls.start()
            for i in everyone:
                ledger.wait_recovered(i)
        ledger.check_normal_batch(ledger.batch(everyone, every_tenant))
        ledger.wait_counters(redis, start, faults=2)

        # 3. One replica restarted (a new process: its shared data starts empty). The
        # other keeps answering; the new one reports only what it admits itself.
        with ledger.background([1]):
            topo.stop_replica(0)
            ledger.check_normal_batch(ledger.batch([1], every_tenant))
            topo.start_replica(0)
        ledger.check_normal_batch(ledger.batch(everyone, every_tenant))
        ledger.wait_counters(redis, start, faults=2)

        ledger.check_every_answer()
        print(f"faults: {len(ledger.sent)} requests, admitted {dict(ledger.admitted)}")
        assert window_start(UNIT) == start, "the test straddled two windows"
        # Each request has one gateway and one audit record, whichever replica took it.
        for t in every_tenant:
            sent = sum(1 for _, tt, _, _, _ in ledger.sent if tt == t)
            recs, auds = wait_tenant_records(topo, t, sent)
            assert (len(recs), len(auds)) == (sent, sent), t
            assert sum(1 for r in recs if r["http_status"] == 200) == ledger.admitted[t], t
        assert "f-synced" not in rls.log() and "f-strict" not in rls.log()


# --- a.-c., e.: one Redis, one service, the replicas, a tenant per scenario --------------

SHARED_TENANTS = {
    "g-synced": global_limit(requests=N),
    "g-strict": global_limit(requests=N, mode="strict"),
    "g-tok-synced": global_limit(tokens=M),
    "g-tok-strict": global_limit(tokens=M, mode="strict"),
    "m-synced": global_limit(requests=BIG, tokens=BIG * 100),
    "m-strict": global_limit(requests=BIG, mode="strict"),
    "m-none": None,  # no quota at all
}


@pytest.fixture(scope="module")
def stack():
    cfg, tenants = plugin_config(SHARED_TENANTS)
    with RedisServer() as redis, RateLimitService(domain_config(DOMAIN), redis.url) as rls, \
            GlobalTopology(cfg, replicas=REPLICAS, rls_port=rls.port, concurrency=CONCURRENCY,
                           mock_args=MOCK_ARGS) as topo:
        yield SimpleNamespace(redis=redis, rls=rls, topo=topo, tenants=tenants)


def run_burst(stack, tenant, n, body, stream=False):
    results = burst(stack.topo[0].base_url, spread(stack.topo, stack.tenants, tenant, n, body), stream=stream)
    codes = Counter(s for s, _, _ in results)
    print(f"{tenant}: {dict(codes)} of {n} over {REPLICAS} replicas")
    assert set(codes) <= {200, 429}, codes
    recs, auds = wait_tenant_records(stack.topo, tenant, n)
    assert (len(recs), len(auds)) == (n, n)
    # Half the burst went to each replica, and each replica logged its own half.
    assert per_replica(stack.topo, tenant) == [n // REPLICAS] * REPLICAS
    assert sum(1 for r in recs if r["http_status"] == 200) == codes[200]
    return results, codes, recs, auds


def check_request_refusals(results, auds):
    for s, _, b in results:
        if s != 200:
            assert_quota_refusal(s, b, "requests")
    denied = [a for a in auds if a["decision"] == "deny"]
    assert len(denied) == sum(1 for s, _, _ in results if s != 200)
    assert all(a["reason"] == "quota_requests" and a["http_status"] == 429 for a in denied), denied[:3]


def test_synced_burst_admits_the_limit_and_overshoots_less_than_the_bound(stack):
    tenant = "g-synced"
    leave_window_edge(UNIT, WINDOW_MARGIN)
    start = window_start(UNIT)
    results, codes, recs, auds = run_burst(stack, tenant, BURST_SIZE, chat_body(max_tokens=4))
    admitted = codes[200]
    assert N <= admitted < N + REQUEST_OVERSHOOT, (admitted, N, REQUEST_OVERSHOOT)
    check_request_refusals(results, auds)
    assert {r["quota_mode"] for r in recs} == {"global"} == {a["quota_mode"] for a in auds}
    # The replicas report what they admitted at their syncs; refusals are not counted.
    key = requests_key(tenant, start)
    assert wait_counter(stack.redis, key, admitted, timeout=SETTLE_TIMEOUT) == admitted
    # Each replica learns at its syncs that the window is spent, whichever replica
    # admitted what: probe until it refuses; what it still admits counts, within the bound.
    host, api_key = stack.tenants[tenant]
    for rep in stack.topo:
        def refused():
            r = call(rep, CHAT, chat_body(max_tokens=4), host=host, key=api_key)
            assert r.status_code in (200, 429), r.text
            nonlocal admitted
            admitted += r.status_code == 200
            return (r.status_code, r.text) if r.status_code == 429 else None
        answer = poll(refused, timeout=SETTLE_TIMEOUT)
        assert answer, f"{rep.base_url} still admits {tenant} after the window was spent"
        assert_quota_refusal(*answer, "requests")
    assert admitted < N + REQUEST_OVERSHOOT, admitted
    assert wait_counter(stack.redis, key, admitted, timeout=SETTLE_TIMEOUT) == admitted
    assert window_start(UNIT) == start, "the test straddled two windows"


def test_strict_burst_admits_exactly_the_limit(stack):
    tenant = "g-strict"
    leave_window_edge(UNIT, WINDOW_MARGIN)
    start = window_start(UNIT)
    results, codes, recs, auds = run_burst(stack, tenant, BURST_SIZE, chat_body(max_tokens=4))
    assert abs(codes[200] - N) <= 1, (codes[200], N)
    check_request_refusals(results, auds)
    # Every admission was decided by the service (none fell back).
    assert {r["quota_mode"] for r in recs} == {"strict"} == {a["quota_mode"] for a in auds}
    key = requests_key(tenant, start)
    assert poll(lambda: counter(stack.redis, key) >= N, timeout=SETTLE_TIMEOUT), counter(stack.redis, key)
    assert window_start(UNIT) == start, "the test straddled two windows"


@pytest.mark.parametrize("tenant", ["g-tok-synced", "g-tok-strict"])
def test_token_limit_with_streams_counts_the_billed_tokens(stack, tenant):
    leave_window_edge(UNIT, WINDOW_MARGIN)
    start = window_start(UNIT)
    body = chat_body(PROMPT, max_tokens=MAX_TOKENS, stream=True)
    results, codes, recs, auds = run_burst(stack, tenant, STREAMS, body, stream=True)
    for s, h, b in results:
        if s == 200:
            assert h["content-type"].startswith("text/event-stream")
            u = final_usage(b)
            assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (WORDS, MAX_TOKENS, COST)
        else:
            assert_quota_refusal(s, b, "tokens")
    denied = [a for a in auds if a["decision"] == "deny"]
    assert len(denied) == codes[429] and all(a["reason"] == "quota_tokens" for a in denied), denied[:3]
    served = [r for r in recs if r["http_status"] == 200]
    assert all(r["stream"] and r["stream_complete"] and not r["usage_estimated"] for r in served)
    billed = sum((r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0) for r in served)
    assert billed == COST * codes[200]
    # Settled at each stream's end, reported at the syncs after it (strict: the
    # reservation charged at admission, the settle's difference later; here it is 0).
    key = tokens_key(tenant, start)
    assert wait_counter(stack.redis, key, billed, timeout=SETTLE_TIMEOUT) == billed, (billed, codes)
    if tenant == "g-tok-strict":
        assert abs(codes[200] - M // COST) <= 1, (codes[200], M // COST)
        assert {r["quota_mode"] for r in recs} == {"strict"}
    else:
        # Each replica can leave less than one stream of its share unspent.
        assert M - REPLICAS * COST < billed < M + TOKEN_OVERSHOOT, (billed, M, TOKEN_OVERSHOOT)
        assert {r["quota_mode"] for r in recs} == {"global"}
    # No requests limit configured, so no requests counter.
    assert stack.redis.command("EXISTS", requests_key(tenant, start)) == 0
    assert window_start(UNIT) == start, "the test straddled two windows"


@pytest.mark.parametrize("tenant,mode", [
    ("tenant-a", "local"),   # the demo tenant: local buckets only
    ("m-none", "local"),     # no quota at all
    ("m-synced", "global"),
    ("m-strict", "strict"),
])
def test_records_carry_the_quota_mode(stack, tenant, mode):
    if tenant == "tenant-a":
        host, key = "tenant-a.ai.example.com", "sk-tenant-a-demo"
    else:
        host, key = stack.tenants[tenant]
    for i, rep in enumerate(stack.topo):
        rid = f"mode-{tenant}-{i}-{uuid.uuid4().hex[:8]}"
        r = call(rep, CHAT, chat_body(max_tokens=4), host=host, key=key, headers={"x-request-id": rid})
        assert r.status_code == 200, r.text
        rec, aud = wait_request_id(rep, rid)
        assert (rec["quota_mode"], aud["quota_mode"]) == (mode, mode), (rec, aud)
    # A healthy service: no degraded decision anywhere.
    for rep in stack.topo:
        text = rep.admin("/stats/prometheus")
        assert all(v == 0 for v in prometheus_samples(text, "ai_gateway_quota_degraded_total").values()), text
