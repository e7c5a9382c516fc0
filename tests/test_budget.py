"""Spend budgets per tenant (issue 13): real Envoy 1.40 with the built module, mock
backends; in global mode a real redis-server and the real ai-gateway-ratelimit.

Prices are set so every token costs a whole number of micro-dollars (llama3-8b: 1000 µ$ a
prompt token, 2000 µ$ a completion token), and a budget of a few cents holds a handful of
requests. The test computes which requests fit from each one's reservation (prompt
estimate ceil(chars / 4) x input price + completion limit x output price; the completion
limit is max_completion_tokens or max_tokens, else limits.default_completion_tokens) and
the `estimated_cost_usd` of the requests admitted before it, and checks the gateway
answers exactly that:

- a. per-process spend (no global_quota): the sequence SEQUENCE, with a refusal followed
  by smaller requests that still fit; 429 insufficient_quota with x-should-retry false,
  audit reason budget_exceeded; the records' budget fields, the x-ai-budget-* headers on
  allowed and refused responses, the gauges and the rejection counter. A restarted Envoy
  has lost the spend (per-process storage).
- b. the official openai SDK with max_retries=2: the refused call is sent once (one
  audit record for its request id) and raises RateLimitError(code insufficient_quota).
- c. two replicas in global mode share one budget (a monthly one here, so the Redis
  counters use the service's MONTH unit): the same sequence, alternating replicas,
  admits exactly the same requests, and the Redis counters equal the admitted spend.
- d. both replicas restarted in the middle of that sequence: the rest of it is decided
  on the spend kept in Redis, exactly as without the restart.
- e. a model budget (tenant budget larger) binds llama3-8b only; other models go on.

Refusals are checked as the contract has them in both modes: the record's
budget_spent_usd / budget_remaining_usd and the remaining gauge say what is really spent
(a refused request spends nothing), not the budget's size.

Counts and values only, no timing assertions: waits poll until a condition holds.
"""
import datetime
import json
import math
import re
import time
from types import SimpleNamespace

import openai
import pytest

from client import call, chat_body
from conftest import demo_config
from harness.launcher import Topology
from harness.ratelimit import (GlobalTopology, RateLimitService, counter, counter_key, domain_config,
                               leave_window_edge, window_start)
from harness.redis import RedisServer
from quota_support import add_tenant, poll, wait_request_id

DOMAIN = "ai-gateway"
CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"
# USD per million tokens = micro-dollars per token.
IN_PRICE, OUT_PRICE = 1000, 2000
DEFAULT_COMPLETION = 256  # limits.default_completion_tokens in filters/demo.json

FOUR = "alpha beta gamma delta"  # 4 words (the mock bills 4), 22 characters (estimate 6)
HI = "hi"  # 1 word, estimate 1

# (content, completion limit fields). With a budget of BUDGET µ$:
#   0  no limit: reserves 6 x 1000 + 256 x 2000 = 518000: never fits
#   1  26000 reserved, 24000 spent      2  26000 / 24000 (48000)
#   3  46000 / 44000 (92000)            4  26000: 118000 > 100000, refused
#   5  3000 / 3000 (95000)              6  3000 / 3000 (98000)
#   7  3000: 101000, refused            8  refused again
SEQUENCE = [
    (FOUR, {}),
    (FOUR, {"max_tokens": 10}),
    (FOUR, {"max_tokens": 10}),
    (FOUR, {"max_completion_tokens": 20}),
    (FOUR, {"max_tokens": 10}),
    (HI, {"max_tokens": 1}),
    (HI, {"max_completion_tokens": 1}),
    (HI, {"max_tokens": 1}),
    (HI, {"max_tokens": 1}),
]
BUDGET = 100_000  # µ$: 0.10 USD
LARGE = 10_000_000  # µ$: 10 USD, the other period's budget (never binds)

HUGE_USD = 5000  # 5e9 µ$ > u32::MAX
SCALE = math.ceil(HUGE_USD * 1_000_000 / (2**32 - 1))  # 2

GLOBAL_QUOTA = {"cluster": "ratelimit", "domain": DOMAIN, "expected_replicas": 2,
                "sync_interval_ms": 200, "timeout_ms": 1000}
# Fewer seconds than this left in the UTC day: wait for the next one first.
DAY_MARGIN = 180


# --- arithmetic ------------------------------------------------------------------------

def estimate(content):
    """The gateway's prompt estimate of one text piece (docs/quotas.md), at least 1."""
    return max(1, math.ceil(len(content) / 4))


def completion_limit(limits):
    return limits.get("max_completion_tokens", limits.get("max_tokens", DEFAULT_COMPLETION))


def reservation(content, limits):
    return estimate(content) * IN_PRICE + completion_limit(limits) * OUT_PRICE


def micros(usd):
    return round(float(usd) * 1_000_000)


def usd(micro):
    return micro / 1_000_000


def planned(sequence, budget):
    """The statuses the sequence should get, assuming each admitted request costs what
    the mock bills (words x input + completion limit x output): a self-check of the
    design (the test itself decides from the records' costs)."""
    spent, out = 0, []
    for content, limits in sequence:
        if spent + reservation(content, limits) <= budget:
            out.append(200)
            spent += len(content.split()) * IN_PRICE + completion_limit(limits) * OUT_PRICE
        else:
            out.append(429)
    return out


def test_the_sequence_exercises_a_refusal_then_a_fit():
    assert planned(SEQUENCE, BUDGET) == [429, 200, 200, 200, 429, 200, 200, 429, 429]


# --- time -------------------------------------------------------------------------------

def utc(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


def next_reset(period, ts):
    d = utc(ts)
    if period == "day":
        day = datetime.datetime(d.year, d.month, d.day, tzinfo=datetime.timezone.utc)
        return day + datetime.timedelta(days=1)
    return datetime.datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=datetime.timezone.utc)


def parse_rfc3339_utc(text):
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", text), text
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- checks -----------------------------------------------------------------------------

def budget_headers(headers, period, before, after):
    """x-ai-budget-{period,remaining-usd,reset-at}; returns the remaining µ$."""
    assert headers.get("x-ai-budget-period") == period, dict(headers)
    remaining = headers.get("x-ai-budget-remaining-usd", "")
    assert re.fullmatch(r"\d+\.\d{6}", remaining), dict(headers)
    reset = parse_rfc3339_utc(headers.get("x-ai-budget-reset-at", ""))
    assert reset in {next_reset(period, before), next_reset(period, after)}, (reset, period)
    return micros(remaining)


def check_refusal(status, headers, body, period):
    assert status == 429, (status, body)
    assert headers.get("x-should-retry") == "false", dict(headers)
    err = json.loads(body)["error"]
    assert (err["type"], err["code"], err["param"]) == ("insufficient_quota", "insufficient_quota", None), err
    # Names the period (day/daily, month/monthly) and when it resets.
    assert period in err["message"] or {"day": "daily", "month": "monthly"}[period] in err["message"], err
    reset = headers.get("x-ai-budget-reset-at", "")
    assert reset[:10] in err["message"], (reset, err)
    return err


def prometheus_samples(text, name):
    """{frozenset(labels.items()): value} of one metric in Prometheus text."""
    out = {}
    for line in text.splitlines():
        m = re.match(re.escape(name) + r"\{(.*)\} (\S+)$", line)
        if m:
            out[frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(1)))] = float(m.group(2))
    return out


def metric(gw, name, **labels):
    """The value of one series (None when absent)."""
    for ls, v in prometheus_samples(gw.admin("/stats/prometheus"), name).items():
        if set(labels.items()) <= ls:
            return v
    return None


def wait_metric(gw, name, value, **labels):
    got = poll(lambda: metric(gw, name, **labels) == value, timeout=15)
    assert got, (name, labels, "expected", value, "got", metric(gw, name, **labels))


# --- the plugin configuration ------------------------------------------------------------

def priced_config():
    """llama3-8b at IN_PRICE / OUT_PRICE; bge-small (embeddings) at 1 µ$ a token, so an
    embedding costs an odd number of micro-dollars when its input has an odd word count."""
    cfg = demo_config()
    for m in cfg["models"]:
        m["input_usd_per_million"], m["output_usd_per_million"] = IN_PRICE, OUT_PRICE
        if m["name"] == "bge-small":
            m["input_usd_per_million"], m["output_usd_per_million"] = 1, 0
    return cfg


def add_budget_tenant(cfg, name, budget):
    host, key = add_tenant(cfg, name, None, budget=budget)
    del cfg["tenants"][-1]["quota"]
    return host, key


class Runner:
    """Sends SEQUENCE steps one at a time and checks each against the spend so far.
    `gateways[i % len]` takes step i; `settled(spent)` waits until a step's spend is
    where later admissions read it (the records are written after the filter settled)."""

    def __init__(self, gateways, tenant, host, key, period, budget, other_budget, settled=None):
        self.gateways, self.tenant, self.host, self.key = gateways, tenant, host, key
        self.period, self.budget, self.other_budget = period, budget, other_budget
        self.settled = settled or (lambda spent: None)
        self.spent = 0
        self.history = []  # (step, reservation, status, cost)

    def step(self, i, content, limits, gw=None):
        gw = gw or self.gateways[i % len(self.gateways)]
        rid = f"{self.tenant}-{i}-{time.time_ns()}"
        need = reservation(content, limits)
        fits = self.spent + need <= self.budget
        before = time.time()
        r = call(gw, CHAT, chat_body(content, **limits), host=self.host, key=self.key,
                 headers={"x-request-id": rid})
        after = time.time()
        rec, aud = wait_request_id(gw, rid)
        where = (i, content, limits, need, self.spent, self.history)
        remaining = budget_headers(r.headers, self.period, before, after)
        if fits:
            assert r.status_code == 200, (where, r.status_code, r.text)
            cost = micros(rec["estimated_cost_usd"])
            assert 0 < cost <= need, (where, rec["estimated_cost_usd"])
            # Written before the settlement: what is left counting this request's
            # reservation (docs/budgets.md).
            assert remaining == self.budget - self.spent - need, (where, remaining)
            assert aud["decision"] == "allow", aud
            self.spent += cost
        else:
            check_refusal(r.status_code, r.headers, r.text, self.period)
            assert 0 <= remaining < need and remaining <= self.budget - self.spent, (where, remaining)
            assert (aud["decision"], aud.get("reason"), aud.get("http_status")) == \
                ("deny", "budget_exceeded", 429), aud
            assert rec["http_status"] == 429, rec
            cost = 0
        self.history.append((i, need, r.status_code, cost))
        assert rec.get("budget_period") == self.period, rec
        assert micros(rec["budget_spent_usd"]) == self.spent, (where, rec)
        assert micros(rec["budget_remaining_usd"]) == self.budget - self.spent, (where, rec)
        self.settled(self.spent)
        return r, rec

    def run(self, steps):
        for i in steps:
            content, limits = SEQUENCE[i]
            self.step(i, content, limits)

    def statuses(self):
        return [s for _, _, s, _ in self.history]


# --- a. per-process spend ----------------------------------------------------------------

def test_per_process_budget_admits_exactly_what_fits_then_refuses():
    cfg = priced_config()
    host, key = add_budget_tenant(cfg, "b-day", {"usd_per_day": usd(BUDGET), "usd_per_month": usd(LARGE)})
    with Topology(plugin_config=cfg, concurrency=2) as gw:
        leave_window_edge("day", DAY_MARGIN)
        run = Runner([gw], "b-day", host, key, "day", BUDGET, LARGE)
        run.run(range(len(SEQUENCE)))
        assert run.statuses() == planned(SEQUENCE, BUDGET), run.history
        spent, refused = run.spent, run.statuses().count(429)

        wait_metric(gw, "ai_gateway_budget_limit_usd_micros", BUDGET, tenant="b-day", period="day")
        wait_metric(gw, "ai_gateway_budget_limit_usd_micros", LARGE, tenant="b-day", period="month")
        wait_metric(gw, "ai_gateway_budget_remaining_usd_micros", BUDGET - spent, tenant="b-day", period="day")
        wait_metric(gw, "ai_gateway_budget_remaining_usd_micros", LARGE - spent, tenant="b-day", period="month")
        wait_metric(gw, "ai_gateway_quota_rejections_total", refused, tenant="b-day", kind="budget")

        # Per-process storage: a new Envoy process starts with nothing spent.
        gw.restart_envoy()
        r, rec = Runner([gw], "b-day", host, key, "day", BUDGET, LARGE).step(99, FOUR, {"max_tokens": 10})
        assert r.status_code == 200


# --- b. the openai SDK ----------------------------------------------------------------------

def test_openai_sdk_does_not_retry_a_spent_budget():
    cfg = priced_config()
    # 30000 µ$: one 26000 µ$ reservation fits, then 24000 spent leaves too little.
    host, key = add_budget_tenant(cfg, "b-sdk", {"usd_per_day": 0.03})
    with Topology(plugin_config=cfg, concurrency=2) as gw:
        leave_window_edge("day", DAY_MARGIN)
        client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=key, default_headers={"Host": host},
                               max_retries=2)

        def chat(rid):
            return client.chat.completions.with_raw_response.create(
                model="llama3-8b", messages=[{"role": "user", "content": FOUR}], max_tokens=10,
                extra_headers={"x-request-id": rid})

        ok = chat("sdk-first")
        assert ok.headers.get("x-ai-budget-period") == "day"
        wait_request_id(gw, "sdk-first")
        with pytest.raises(openai.RateLimitError) as e:
            chat("sdk-refused")
        err = e.value
        assert err.status_code == 429 and err.code == "insufficient_quota", err.body
        assert err.type == "insufficient_quota", err.body
        assert err.response.headers.get("x-should-retry") == "false"
        # Sent once: one audit and one gateway record for its request id, also after a
        # straggler would have landed (the SDK retries before it raises).
        wait_request_id(gw, "sdk-refused")
        time.sleep(0.3)
        assert [a["reason"] for a in gw.audits() if a.get("client_request_id") == "sdk-refused"] == \
            ["budget_exceeded"]
        assert sum(1 for r in gw.records() if r.get("client_request_id") == "sdk-refused") == 1
        assert sum(1 for r in gw.records() if r.get("tenant") == "b-sdk") == 2


# --- c.-e. global spend: two replicas, one Redis, the service ------------------------------

@pytest.fixture(scope="module")
def stack():
    cfg = priced_config()
    cfg["global_quota"] = dict(GLOBAL_QUOTA)
    tenants = {
        # The month's budget binds (the Redis counters use the service's MONTH unit).
        "g-month": add_budget_tenant(cfg, "g-month", {"usd_per_day": usd(LARGE), "usd_per_month": usd(BUDGET)}),
        "g-model": add_budget_tenant(cfg, "g-model", {"usd_per_day": usd(LARGE),
                                                      "models": {"llama3-8b": {"usd_per_day": 0.03}}}),
        # Above u32::MAX micro-dollars: counted in units of SCALE µ$ (docs/budgets.md).
        "g-large": add_budget_tenant(cfg, "g-large", {"usd_per_month": HUGE_USD}),
    }
    with RedisServer() as redis, RateLimitService(domain_config(DOMAIN), redis.url) as rls, \
            GlobalTopology(cfg, replicas=2, rls_port=rls.port, concurrency=2) as topo:
        yield SimpleNamespace(redis=redis, rls=rls, topo=topo, tenants=tenants)


def spend_key(kind, tenant, unit, start, model=None):
    entries = [("kind", kind), ("tenant", tenant)] + ([("model", model)] if model else [])
    return counter_key(DOMAIN, entries, unit, start)


def wait_spend(redis, key, value):
    got = poll(lambda: counter(redis, key) == value, timeout=15)
    assert got, (key, "expected", value, "got", counter(redis, key))


def test_replicas_share_one_budget_across_a_restart_of_both(stack):
    topo, redis = stack.topo, stack.redis
    host, key = stack.tenants["g-month"]
    leave_window_edge("day", DAY_MARGIN)  # the month ends with a day
    now = time.time()
    month_key = spend_key("spend_month", "g-month", "month", window_start("month", now))
    day_key = spend_key("spend_day", "g-month", "day", window_start("day", now))

    def settled(spent):
        # Later admissions, on either replica, read the spend from Redis.
        wait_spend(redis, month_key, spent)
        wait_spend(redis, day_key, spent)

    run = Runner(list(topo), "g-month", host, key, "month", BUDGET, LARGE, settled)
    # c. The first half alternating between the replicas (step i on replica i % 2).
    run.run(range(5))
    # d. Both Envoys restarted: new processes, nothing in shared data; Redis keeps the spend.
    for i in range(len(topo)):
        topo.stop_replica(i)
    for i in range(len(topo)):
        topo.start_replica(i)
    run.run(range(5, len(SEQUENCE)))
    assert run.statuses() == planned(SEQUENCE, BUDGET), run.history
    # Spent out for both replicas: the smallest request is refused on each.
    for i, gw in enumerate(topo):
        r, _ = run.step(100 + i, HI, {"max_tokens": 1}, gw=gw)
        assert r.status_code == 429
    assert counter(redis, month_key) == run.spent
    for gw in topo:
        wait_metric(gw, "ai_gateway_budget_limit_usd_micros", BUDGET, tenant="g-month", period="month")
    # The replica that took the last request reports what the record says is left.
    last = topo[1]
    wait_metric(last, "ai_gateway_budget_remaining_usd_micros", BUDGET - run.spent, tenant="g-month", period="month")
    refused = sum(1 for s in run.statuses() if s == 429)
    counted = sum(metric(gw, "ai_gateway_quota_rejections_total", tenant="g-month", kind="budget") or 0
                  for gw in topo)
    # Counters restart with each Envoy: only the refusals since the restart are counted.
    after_restart = sum(1 for step, _, s, _ in run.history if s == 429 and step >= 5)
    assert counted == after_restart and refused > after_restart, (counted, after_restart, refused)
    assert "g-month" not in stack.rls.log()


def test_a_model_budget_binds_that_model_only(stack):
    topo, redis = stack.topo, stack.redis
    host, key = stack.tenants["g-model"]
    leave_window_edge("day", DAY_MARGIN)
    day = window_start("day")
    model_key = spend_key("spend_day", "g-model", "day", day, model="llama3-8b")
    tenant_key = spend_key("spend_day", "g-model", "day", day)
    model_budget = 30_000

    def settled(spent):
        wait_spend(redis, model_key, spent)

    # The model's budget has the least left: it is the one the records and headers name.
    run = Runner(list(topo), "g-model", host, key, "day", model_budget, LARGE, settled)
    run.run([1, 2])  # 26000 fits, then 24000 + 26000 does not
    assert run.statuses() == [200, 429], run.history
    wait_spend(redis, tenant_key, run.spent)
    # Another model is not held by llama3-8b's budget; it spends the tenant's.
    r = call(topo[0], EMBED, {"model": "bge-small", "input": "alpha beta"}, host=host, key=key,
             headers={"x-request-id": "g-model-embed"})
    assert r.status_code == 200, r.text
    rec, _ = wait_request_id(topo[0], "g-model-embed")
    wait_spend(redis, tenant_key, run.spent + micros(rec["estimated_cost_usd"]))
    assert counter(redis, model_key) == run.spent


def test_a_budget_above_u32_max_micro_dollars_is_counted_in_scaled_units(stack):
    topo, redis = stack.topo, stack.redis
    host, key = stack.tenants["g-large"]
    leave_window_edge("day", DAY_MARGIN)
    month_key = spend_key("spend_month", "g-large", "month", window_start("month"))
    units = 0
    # A chat (24000 µ$) and an embedding of three words (3 µ$: rounded up to 2 units).
    for i, (path, body) in enumerate([(CHAT, chat_body(FOUR, max_tokens=10)),
                                      (EMBED, {"model": "bge-small", "input": "alpha beta gamma"})]):
        rid = f"g-large-{i}-{time.time_ns()}"
        r = call(topo[i % 2], path, body, host=host, key=key, headers={"x-request-id": rid})
        assert r.status_code == 200, r.text
        assert r.headers.get("x-ai-budget-period") == "month"
        rec, _ = wait_request_id(topo[i % 2], rid)
        units += math.ceil(micros(rec["estimated_cost_usd"]) / SCALE)
        wait_spend(redis, month_key, units)
    assert units == 24000 // SCALE + math.ceil(3 / SCALE), units

