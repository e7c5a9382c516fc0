#!/usr/bin/env python3
"""`make bench-global`: what global quotas cost (docs/global-quotas.md), next to local ones.

Part 1, traffic. One set of mock backends and, side by side, four Envoys (`--concurrency
1`, rendered like bench/run_bench.py's), the filter configured three ways:

- plain   no filter, the reference row;
- local   the filter with bench/run_bench.py's configuration (filters/demo.json, tenant-a's
          local quota raised so it never refuses);
- synced  the same plus `global_quota` {cluster ratelimit, expected_replicas 1} and
          tenant-a `quota.global` {unit minute, requests and tokens far above what the run
          sends, mode synced}: no call per request, a sync every 200 ms;
- strict  the same with mode strict: one RLS call per request, the request paused.

synced and strict each have their own `ai-gateway-ratelimit` and `redis-server`, so the
service's and Redis's CPU around a run belongs to that Envoy alone. wrk sends
bench/run_bench.py's 1 KB chat in rounds that visit every setup in rotating order (its
`rounds`, `measure`, noise accounting and retry of disturbed runs), at 16 connections
(CPU per request, rps) and at one connection (p50 without queueing).

Part 2, the sync at rest. Four idle Envoys measured over the same windows: the local
configuration and the synced one (1 tenant with global limits), and a 100-tenant
configuration without and with `quota.global` on every tenant. The difference of Envoy's
CPU divided by the syncs counted in `ai_gateway_global_syncs_total` is the sync's cost;
the service's and Redis's CPU per sync beside it.

Writes bench/global.md and the raw numbers in bench/out/global.json.

    .venv/bin/python -m bench.global_bench [--seconds 5] [--reps 6] [--latency-reps 5]
        [--idle-seconds 20] [--idle-rounds 4] [--quick]
    .venv/bin/python -m bench.global_bench --render-only   # rewrite global.md from global.json
"""
import argparse
import copy
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse

import yaml

from bench import run_bench as rb
from harness import launcher
from harness.ratelimit import BINARY as RLS_BINARY
from harness.ratelimit import RateLimitService, cluster
from harness.redis import RedisServer
from harness.redis import command as redis_command

HERE, ROOT, OUT = rb.HERE, rb.ROOT, rb.OUT
GLOBAL_MD = os.path.join(HERE, "global.md")
NOTES_MD = os.path.join(HERE, "global_notes.md")
RLS_YAML = "domain: ai-gateway\ndescriptors: []\n"
RLS_THREADS = 2  # the service's default (--threads)

# Per minute, far above what any run sends (a 1 KB chat reserves a few hundred tokens;
# one worker serves a few thousand requests a second). Both fit RLS's uint32.
GLOBAL_REQUESTS = 1_000_000_000
GLOBAL_TOKENS = 4_000_000_000
SYNC_INTERVAL_MS = 200  # the default, written out so the report can say it
IDLE_TENANTS = 100

SETUPS = [
    ("plain", "plain Envoy (no filter)"),
    ("local", "filter, local quota"),
    ("synced", "filter + global, synced"),
    ("strict", "filter + global, strict"),
]
LABEL = dict(SETUPS)
GLOBAL_SIDES = ("synced", "strict")

IDLE = [
    ("base_1", "local quota only (bench config)", 0),
    ("global_1", "+ global synced, 1 tenant", 1),
    ("base_100", f"{IDLE_TENANTS} tenants, local quotas only", 0),
    ("global_100", f"{IDLE_TENANTS} tenants, every one global synced", IDLE_TENANTS),
]
IDLE_PAIRS = [("global_1", "base_1"), ("global_100", "base_100")]

log = rb.log


# -- configurations --------------------------------------------------------------------

def tenant_global(mode):
    return {"unit": "minute", "requests": GLOBAL_REQUESTS, "tokens": GLOBAL_TOKENS, "mode": mode}


def engine():
    return {"cluster": "ratelimit", "expected_replicas": 1, "sync_interval_ms": SYNC_INTERVAL_MS}


def with_global(cfg, mode, tenants=("tenant-a",)):
    """`cfg` plus `global_quota` and `quota.global` (mode) on the named tenants (all: None)."""
    c = copy.deepcopy(cfg)
    c["global_quota"] = engine()
    for t in c["tenants"]:
        if tenants is None or t["name"] in tenants:
            t["quota"]["global"] = tenant_global(mode)
    return c


def many_tenants(cfg, n):
    """`cfg` with tenants generated up to n in all (tenant-a and tenant-b kept first), each
    with a host, a key and the bench's never-refusing local quota."""
    c = copy.deepcopy(cfg)
    quota = copy.deepcopy(c["tenants"][0]["quota"])
    for i in range(len(c["tenants"]), n):
        c["tenants"].append({
            "name": f"tenant-g{i:03d}",
            "hosts": [f"tenant-g{i:03d}.ai.example.com"],
            "api_keys": [{"id": f"svc:g{i:03d}",
                          "sha256": hashlib.sha256(f"sk-tenant-g{i:03d}".encode()).hexdigest()}],
            "models": ["llama3-8b"],
            "quota": copy.deepcopy(quota),
        })
    return c


# -- processes -------------------------------------------------------------------------

class GlobalTopology(rb.BenchTopology):
    """bench/run_bench.py's topology plus, when `rls_port` is given, the `ratelimit`
    cluster (HTTP/2, harness/ratelimit.py) that `global_quota.cluster` names."""

    def __init__(self, *args, rls_port=None, **kwargs):
        self.rls_port = rls_port
        super().__init__(*args, **kwargs)

    def render(self, plugin_config=None):
        super().render(plugin_config)
        if self.rls_port is None:
            return
        with open(self.config_path) as f:
            boot = yaml.safe_load(f)
        boot["static_resources"]["clusters"].append(cluster(self.rls_port))
        with open(self.config_path, "w") as f:
            yaml.safe_dump(boot, f)


class Stack:
    """One redis-server and one ai-gateway-ratelimit counting into it (domain ai-gateway,
    no limits of its own: the filter sends every limit as the descriptor's override)."""

    def __init__(self, name):
        self.name = name
        self.redis = RedisServer()
        self.rls = None

    def start(self):
        self.redis.start()
        self.rls = RateLimitService(RLS_YAML, self.redis.url,
                                    extra_args=["--threads", str(RLS_THREADS)])
        self.rls.start()
        return self

    @property
    def procs(self):
        """What Side.extra measures: {label: Popen}."""
        return {"rls": self.rls.proc, "redis": self.redis.proc}

    def counters(self):
        """{key: value} of every counter in this Redis (the service's windows)."""
        out = {}
        for k in redis_command(self.redis.port, "KEYS", "*") or []:
            v = redis_command(self.redis.port, "GET", k)
            if v is not None and str(v).lstrip("-").isdigit():
                out[k] = int(v)
        return out

    def stop(self):
        if self.rls is not None:
            self.rls.stop()
            self.rls.cleanup()
        self.redis.stop()
        self.redis.cleanup()


def thread_cpu_ns(pid):
    """CPU of each thread of a process by role, in ns: Envoy's main thread (named `envoy`
    like the process), its workers (`wrk:worker_N`), everything else (watchdogs, gRPC's
    timer thread)."""
    out = {"main": 0, "workers": 0, "other": 0}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        role = "main" if tid == str(pid) else "workers" if comm.startswith("wrk:worker") else "other"
        out[role] += ns
    return out


def prom(topo):
    return topo.admin("/stats/prometheus")


def prom_sum(text, name, label=None):
    """Sum of every sample of metric `name` (optionally only those whose labels contain
    `label`, e.g. 'result="ok"')."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if label and label not in line:
                continue
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return total


def envoy_counters(topo, regex):
    """{name: value} of Envoy's own counters matching `regex` (admin /stats)."""
    out = {}
    for line in topo.admin("/stats?filter=" + urllib.parse.quote(regex, safe="")).splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[name] = int(value)
    return out


def global_state(side):
    """What the filter and Envoy say about the global path of `side`: syncs by result,
    degraded decisions, calls to the ratelimit cluster."""
    text = prom(side.topo)
    c = envoy_counters(side.topo, r"^cluster\.ratelimit\.(upstream_rq_total|upstream_rq_completed"
                                  r"|upstream_cx_total|upstream_rq_timeout|upstream_rq_pending_total)$|"
                                  r"^cluster\.ratelimit\.grpc\.")
    return {
        "syncs_ok": prom_sum(text, "ai_gateway_global_syncs_total", 'result="ok"'),
        "syncs_failed": prom_sum(text, "ai_gateway_global_syncs_total", 'result="failed"'),
        "degraded": prom_sum(text, "ai_gateway_quota_degraded_total"),
        "cluster": c,
    }


def state_delta(a, b):
    return {
        "syncs_ok": b["syncs_ok"] - a["syncs_ok"],
        "syncs_failed": b["syncs_failed"] - a["syncs_failed"],
        "degraded": b["degraded"] - a["degraded"],
        "cluster": {k: v - a["cluster"].get(k, 0) for k, v in b["cluster"].items()},
    }


def start_traffic_setups(cfgs, stacks):
    """plain (owns the mocks), local, synced, strict, as run_bench Sides."""
    sides = []
    try:
        plain = GlobalTopology(with_filter=False, concurrency=1, plugin_config=cfgs["local"])
        plain.start()
        sides.append(rb.Side("plain", plain))
        for name in ("local", "synced", "strict"):
            stack = stacks.get(name)
            t = GlobalTopology(with_filter=True, concurrency=1, plugin_config=cfgs[name],
                               share_mocks_from=plain, rls_port=stack.rls.port if stack else None)
            t.start()
            sides.append(rb.Side(name, t, hist=True, extra=stack.procs if stack else None))
    except BaseException:
        stop_sides(sides)
        raise
    return sides


def stop_sides(sides):
    for s in reversed(sides):  # the first owns the mocks
        s.topo.stop()


def send(side, body, n=1):
    """n sequential 1 KB chats; their status codes."""
    import urllib.error
    import urllib.request

    codes = []
    for _ in range(n):
        req = urllib.request.Request(side.topo.base_url + rb.CHAT, data=body, method="POST",
                                     headers={"Host": rb.HOST, "Authorization": f"Bearer {rb.KEY}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
                codes.append(r.status)
        except urllib.error.HTTPError as e:
            codes.append(e.code)
    return codes


def sanity(sides, stacks, body, n=20):
    """Before measuring: every setup answers 200, and the global ones really count in the
    service: after n requests and one sync interval, each stack's Redis holds n more
    requests for tenant-a (synced: reported by the sync; strict: charged per request)."""
    out = {}
    for s in sides:
        before = stacks[s.name].counters() if s.name in stacks else None
        g0 = global_state(s) if s.name in stacks else None
        codes = send(s, body, n)
        if any(c != 200 for c in codes):
            raise SystemExit(f"sanity: {s.name} answered {sorted(set(codes))}")
        row = {"requests": n, "codes": {str(c): codes.count(c) for c in set(codes)}}
        if before is not None:
            time.sleep(3 * SYNC_INTERVAL_MS / 1000)
            after = stacks[s.name].counters()
            req_keys = [k for k in after if "requests" in k and "tenant-a" in k]
            row["redis_requests_added"] = sum(after[k] - before.get(k, 0) for k in req_keys)
            row["redis_keys"] = sorted(after)
            row["envoy"] = state_delta(g0, global_state(s))
            if row["redis_requests_added"] != n:
                raise SystemExit(f"sanity: {s.name}: {n} requests, Redis counted "
                                 f"{row['redis_requests_added']} ({after})")
        out[s.name] = row
        log(f"  sanity {s.name}: {row}")
    return out


# -- part 1: traffic --------------------------------------------------------------------

def traffic(args, cfgs, files, res):
    stacks = {name: Stack(name).start() for name in GLOBAL_SIDES}
    sides = []
    try:
        sides = start_traffic_setups(cfgs, stacks)
        by = {s.name: s for s in sides}
        mocks = sides[0].topo.mocks
        log("four Envoys up: " + ", ".join(f"{s.name} :{s.topo.gateway_port}" for s in sides)
            + "; services " + ", ".join(f"{n} :{st.rls.port} (redis :{st.redis.port})"
                                        for n, st in stacks.items()))
        with open(files[("chat", rb.KB)], "rb") as f:
            body = f.read()
        res["sanity"] = sanity(sides, stacks, body)

        for key, conns, seconds, reps, warm in (
                ("throughput", args.conns, args.seconds, args.reps, 1),
                ("latency", 1, args.latency_seconds, args.latency_reps, 0)):
            t0 = time.time()
            g0 = {n: global_state(by[n]) for n in GLOBAL_SIDES}
            n0 = {s.name: s.requests for s in sides}
            r = rb.rounds(sides, mocks, rb.CHAT_1K, files, seconds, conns, reps, warmup=warm)
            g1 = {n: global_state(by[n]) for n in GLOBAL_SIDES}
            res[key] = r
            res[key + "_global"] = {n: dict(state_delta(g0[n], g1[n]),
                                            wrk_requests=by[n].requests - n0[n],
                                            seconds=time.time() - t0)
                                    for n in GLOBAL_SIDES}
            log(f"{key} ({conns} conn): rps " + " / ".join(f"{r[n]['rps']:,.0f}" for n, _ in SETUPS)
                + "; Envoy CPU/req " + " / ".join(f"{r[n]['envoy_cpu_us_per_req']:.0f}" for n, _ in SETUPS)
                + " µs; p50 " + " / ".join(f"{r[n]['latency_us']['p50']}" for n, _ in SETUPS)
                + " µs (plain / local / synced / strict)")
            res["phase_s"][key] = round(time.time() - t0, 1)
        for n in GLOBAL_SIDES:
            out = by[n].topo.envoy_output()
            res.setdefault("envoy_warnings", {})[n] = [
                l for l in out.splitlines() if "global quota" in l or "[error]" in l][-5:]
    finally:
        stop_sides(sides)
        for st in stacks.values():
            st.stop()


# -- part 2: the sync at rest -----------------------------------------------------------

def idle(args, cfgs, res):
    """All four idle Envoys measured over the same windows, `args.idle_rounds` times."""
    base100 = many_tenants(cfgs["local"], IDLE_TENANTS)
    conf = {"base_1": cfgs["local"], "global_1": cfgs["synced"],
            "base_100": base100, "global_100": with_global(base100, "synced", tenants=None)}
    stacks, tops = {}, {}
    try:
        first = None
        for name, _, globals_ in IDLE:
            if globals_:
                stacks[name] = Stack(name).start()
            t = GlobalTopology(with_filter=True, concurrency=1, plugin_config=conf[name],
                               share_mocks_from=first,
                               rls_port=stacks[name].rls.port if name in stacks else None)
            t.start()
            first = first or t
            tops[name] = t
        # A service and Redis that no Envoy calls: their own idle work (Redis's timers, the
        # service's ping), subtracted from the global stacks' CPU before dividing by syncs.
        stacks["control"] = Stack("control").start()
        mocks = first.mocks
        time.sleep(args.idle_warmup)
        rounds_ = []
        for i in range(args.idle_rounds):
            g0 = {n: global_state(rb.Side(n, tops[n])) for n in tops if n in stacks}
            t_stats0 = time.time()
            pids = {n: t.envoy.pid for n, t in tops.items()}
            for n, st in stacks.items():
                pids[f"{n}.rls"] = st.rls.proc.pid
                pids[f"{n}.redis"] = st.redis.proc.pid
            for n, p in mocks.items():
                pids[f"mock.{n}"] = p.pid
            th0 = {n: thread_cpu_ns(t.envoy.pid) for n, t in tops.items()}
            c0 = {k: rb.cpu_ns(p) for k, p in pids.items()}
            b0, s0 = rb.machine_cpu()
            w0 = time.time()
            time.sleep(args.idle_seconds)
            c1 = {k: rb.cpu_ns(p) for k, p in pids.items()}
            th1 = {n: thread_cpu_ns(t.envoy.pid) for n, t in tops.items()}
            b1, s1 = rb.machine_cpu()
            w1 = time.time()
            g1 = {n: global_state(rb.Side(n, tops[n])) for n in tops if n in stacks}
            t_stats1 = time.time()
            dur = w1 - w0
            own = sum(c1[k] - c0[k] for k in pids) / 1e9
            rnd = {"seconds": dur,
                   "threads_ms_per_s": {n: {k: (th1[n][k] - th0[n][k]) / 1e6 / dur for k in th0[n]}
                                        for n in tops},
                   "cpu_ms_per_s": {k: (c1[k] - c0[k]) / 1e6 / dur for k in pids},
                   "other_cpu": max(0.0, (b1 - b0) - own) / dur, "steal": (s1 - s0) / dur,
                   "syncs": {}}
            for n in g0:
                d = state_delta(g0[n], g1[n])
                # The stats were read just outside the CPU window: scale to the window.
                rate = d["syncs_ok"] / (t_stats1 - t_stats0)
                rnd["syncs"][n] = {"ok": d["syncs_ok"], "failed": d["syncs_failed"],
                                   "per_s": rate, "in_window": rate * dur,
                                   "cluster": d["cluster"]}
            rounds_.append(rnd)
            log(f"idle round {i + 1}: Envoy CPU ms/s " + ", ".join(
                f"{n} {rnd['cpu_ms_per_s'][n]:.2f}" for n, *_ in IDLE)
                + "; syncs/s " + ", ".join(f"{n} {v['per_s']:.2f}" for n, v in rnd["syncs"].items())
                + f"; other {rnd['other_cpu']:.2f} cores")
        res["idle"] = {"rounds": rounds_, "configs": {n: len(conf[n]["tenants"]) for n in conf},
                       "seconds": args.idle_seconds, "warmup": args.idle_warmup}
    finally:
        for t in reversed(list(tops.values())):
            t.stop()
        for st in stacks.values():
            st.stop()


def idle_summary(res):
    """Per global config: the sync's cost per sync (Envoy difference, service, Redis),
    median over rounds, and every round's Envoy figure."""
    out = []
    rounds_ = res["idle"]["rounds"]
    for g, b in IDLE_PAIRS:
        per_sync, rls, redis, rates, base, glob = [], [], [], [], [], []
        by_thread = {"main": [], "workers": [], "other": []}
        for r in rounds_:
            s = r["syncs"][g]
            n = s["in_window"] * 1.0
            dt = r["seconds"]
            base.append(r["cpu_ms_per_s"][b])
            glob.append(r["cpu_ms_per_s"][g])
            rates.append(s["per_s"])
            c = r["cpu_ms_per_s"]
            if n > 0:
                per_sync.append((c[g] - c[b]) * dt * 1e3 / n)
                for k in by_thread:
                    th = r["threads_ms_per_s"]
                    by_thread[k].append((th[g][k] - th[b][k]) * dt * 1e3 / n)
                rls.append((c[f"{g}.rls"] - c["control.rls"]) * dt * 1e3 / n)
                redis.append((c[f"{g}.redis"] - c["control.redis"]) * dt * 1e3 / n)
        med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
        out.append({"config": g, "base": b, "tenants": dict(IDLE_COUNTS)[g],
                    "counters": 2 * dict(IDLE_COUNTS)[g], "syncs_per_s": med(rates),
                    "base_ms_per_s": med(base), "global_ms_per_s": med(glob),
                    "syncs_in_windows": sum(r["syncs"][g]["in_window"] for r in rounds_),
                    "envoy_us_per_sync": med(per_sync), "envoy_us_per_sync_all": per_sync,
                    "rls_us_per_sync": med(rls), "redis_us_per_sync": med(redis),
                    "threads_us_per_sync": {k: med(v) for k, v in by_thread.items()},
                    "rls_ms_per_s": med([r["cpu_ms_per_s"][f"{g}.rls"] for r in rounds_]),
                    "redis_ms_per_s": med([r["cpu_ms_per_s"][f"{g}.redis"] for r in rounds_])})
    return out


def control_ms_per_s(res):
    """(service, Redis) idle CPU of the control stack, ms per second (median of windows)."""
    rs = res["idle"]["rounds"]
    return (statistics.median(r["cpu_ms_per_s"]["control.rls"] for r in rs),
            statistics.median(r["cpu_ms_per_s"]["control.redis"] for r in rs))


IDLE_COUNTS = [(n, g) for n, _, g in IDLE]


# -- machine and versions -----------------------------------------------------------------

def lock_versions(path, names):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return {}
    found = re.findall(r'name = "([^"]+)"\nversion = "([^"]+)"', text)
    return {n: v for n, v in found if n in names}


def machine(wasm):
    m = {
        "nproc": os.cpu_count(), "cpu": rb.cpu_model(), "kernel": os.uname().release,
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "envoy": rb.sh(f"{launcher.ENVOY} --version").split("version:")[-1].strip(),
        "rustc": rb.sh("rustc --version"),
        "wrk": rb.sh("wrk -v 2>&1 | head -1").split(" [")[0],
        "redis": rb.sh("redis-server --version").split(" sha=")[0],
        "python": sys.version.split()[0],
        "module_bytes": os.path.getsize(wasm),
        "opt_level": rb.opt_level(),
        "rls_crates": lock_versions(os.path.join(ROOT, "ratelimit", "Cargo.lock"),
                                    ("ai-gateway-ratelimit", "tonic", "tokio", "redis", "h2", "prost")),
        "git": rb.sh(f"git -C {ROOT} rev-parse --short HEAD")
        + (" (+ uncommitted changes)" if rb.sh(f"git -C {ROOT} status --porcelain --untracked-files=no") else ""),
    }
    return m


# -- report ---------------------------------------------------------------------------

def us(v, digits=0):
    if v is None or v != v:
        return "–"
    return f"{v:,.{digits}f} µs"


def dist(xs):
    if not xs:
        return {"median": 0, "p90": 0, "max": 0}
    return {"median": statistics.median(xs), "p90": sorted(xs)[int(0.9 * (len(xs) - 1))], "max": max(xs)}


def paired(res, key, a, b, field="envoy_cpu_us_per_req"):
    """Per round, `a` minus `b` (runs of one round are next to each other in time)."""
    ra, rb_ = res[key][a].get("cpu_us_all", []), res[key][b].get("cpu_us_all", [])
    return [x - y for x, y in zip(ra, rb_)]


def p50_of(rows, name):
    """The median of a setup's per-round p50s (one-connection latency)."""
    xs = rows[name].get("p50_all") or [rows[name]["latency_us"]["p50"]]
    return statistics.median(xs)


def paired_p50(rows, a, b):
    return [x - y for x, y in zip(rows[a].get("p50_all", []), rows[b].get("p50_all", []))]


def traffic_table(res, key):
    rows = res[key]
    local = rows["local"]
    L = ["| setup | rps | p50 / p99 | Envoy CPU/req | service CPU/req | Redis CPU/req | **total CPU/req** "
         "| vs local | filter busy (mean) | Envoy CPU/req, every round |",
         "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, label in SETUPS:
        r = rows[name]
        ex = r.get("extra_cpu_us_per_req") or {}
        total = r["envoy_cpu_us_per_req"] + sum(ex.values())
        ltotal = local["envoy_cpu_us_per_req"]
        vs = "–" if name == "local" else f"{total - ltotal:+,.0f} µs"
        L.append(
            f"| {label} | {r['rps']:,.0f} | {rb.fmt_us(r['latency_us']['p50'])} / "
            f"{rb.fmt_us(r['latency_us']['p99'])} | {us(r['envoy_cpu_us_per_req'])} | "
            f"{us(ex.get('rls'), 1) if 'rls' in ex else '–'} | {us(ex.get('redis'), 1) if 'redis' in ex else '–'} | "
            f"**{us(total)}** | {vs} | "
            f"{us(r.get('filter_busy_us_mean'), 1) if r.get('filter_busy_us_mean') else '–'} | "
            f"{', '.join(f'{x:.0f}' for x in r.get('cpu_us_all', []))} |")
    return L


def render(res):
    m, s = res["machine"], res["settings"]
    th, lat = res["throughput"], res["latency"]
    L = ["# Global quotas: what synced and strict cost, next to local quotas", ""]
    L.append(f"Generated by `make bench-global` (`python -m bench.global_bench`) on {res['date']}; "
             f"the whole run took {res['elapsed_s']} s. Raw numbers: `bench/out/global.json` (not committed). "
             "Design: docs/global-quotas.md; the service: docs/ratelimit.md.")
    L.append("")
    L.append("## Machine and versions")
    L.append("")
    L.append(f"- {m['nproc']} cores ({m['cpu']}), {m['mem_gib']} GiB, Linux {m['kernel']}; load average "
             f"before/after {res['load_before'][0]:.2f} / {res['load_after'][0]:.2f} (1 min)")
    nz = res["noise"]
    L.append(f"- noise during the {nz['runs']} kept traffic runs, in cores of {m['nproc']}: other processes "
             f"(/proc/stat minus Envoy, the service, Redis, the mocks and wrk) median {nz['median']:.2f}, p90 "
             f"{nz['p90']:.2f}, max {nz['max']:.2f}; hypervisor steal median {nz['steal']['median']:.2f}, p90 "
             f"{nz['steal']['p90']:.2f}, max {nz['steal']['max']:.2f}. Runs disturbed by more than "
             f"{rb.DISTURBED} cores were repeated ({nz['retried']} repeats, least disturbed kept). During the "
             f"idle windows: other processes median {nz['idle_other']['median']:.2f} cores, max "
             f"{nz['idle_other']['max']:.2f}. The machine is shared with other engineers.")
    L.append(f"- Envoy {m['envoy']}, `--concurrency 1` (one worker), V8 runtime")
    L.append(f"- module `ai_gateway_filter.wasm` {m['module_bytes']:,} bytes, `opt-level = {m['opt_level']}`, "
             f"{m['rustc']}; commit {m['git']}")
    rc = m.get("rls_crates", {})
    L.append(f"- `ai-gateway-ratelimit` {rc.get('ai-gateway-ratelimit', '?')} (release, `--threads {RLS_THREADS}`, "
             f"the default): tonic {rc.get('tonic', '?')}, h2 {rc.get('h2', '?')}, tokio {rc.get('tokio', '?')}, "
             f"redis {rc.get('redis', '?')}; {m['redis']} (no persistence, `--save ''`, harness/redis.py)")
    L.append(f"- load generator {m['wrk']} (1 thread); mocks `mock-llm --threads 1 --ttft-ms 0` (3 processes "
             "shared by every Envoy)")
    L.append("")
    L.append("## Setup")
    L.append("")
    L.append("Four Envoys run at the same time, rendered like `make bench`'s (`harness/render.py`, "
             "`bench/run_bench.py`'s `BenchTopology`), and differ only in the filter and its configuration:")
    L.append("")
    L.append("- **plain Envoy**: no filter, the reference row.")
    L.append("- **local**: the filter with `bench/run_bench.py`'s configuration (`filters/demo.json`, "
             "tenant-a's local quota raised so it never refuses: buckets still charged and settled).")
    L.append(f"- **synced**: the same plus `\"global_quota\": {json.dumps(engine())}` and tenant-a "
             f"`\"global\": {json.dumps(tenant_global('synced'))}` (far above what a minute of this "
             "benchmark sends, so nothing is refused): no call per request, one sync call every "
             f"{SYNC_INTERVAL_MS} ms from the elected worker.")
    L.append(f"- **strict**: the same with `\"mode\": \"strict\"`: every request is paused after its local "
             "checks for one `dispatch_grpc_call` to the service (plus the same 200 ms sync, which settles "
             "the token reservations).")
    L.append("")
    L.append("synced and strict each call their own `ai-gateway-ratelimit` (cluster `ratelimit`, HTTP/2, "
             "127.0.0.1) over their own `redis-server`, so the CPU of a service and of its Redis around a run "
             "is that Envoy's alone; their CPU is read the way `make bench` reads ext_proc's processor "
             "(`/proc/<pid>/task/*/schedstat`, every thread, around each run). Before measuring, "
             f"{res['sanity']['local']['requests']} requests through each setup answered 200, and each "
             "global setup's Redis counted exactly that many requests for tenant-a "
             + ", ".join(f"({n}: {res['sanity'][n]['redis_requests_added']})" for n in GLOBAL_SIDES) + ".")
    L.append("")
    L.append(f"wrk sends `make bench`'s 1 KB chat (`bench/out/bodies/chat_1024.json`, `Host: {rb.HOST}`, "
             f"its key) to all four with `bench/run_bench.py`'s `rounds`: one run per setup per round, the "
             f"order rotating and reversing from round to round; {s['reps']} rounds of {s['seconds']} s at "
             f"{s['conns']} connections (after a 1 s warm-up run each), and {s['latency_reps']} rounds of "
             f"{s['latency_seconds']} s at one connection. Tables show the run with the median rps (its "
             "latencies) and the median CPU per request of all rounds.")
    L.append("")
    L.append("Commands (ports vary):")
    L.append("")
    L.append("```")
    L.append("make bench-global   # = wrk + redis-server (apt), build (module, mock, ratelimit), then:")
    L.append(res["command"])
    L.append(f"wrk -t1 -c{s['conns']} -d{s['seconds']}s --timeout 10s -s bench/wrk.lua http://127.0.0.1:PORT/v1/chat/completions")
    L.append(f"wrk -t1 -c1 -d{s['latency_seconds']}s --timeout 10s -s bench/wrk.lua http://127.0.0.1:PORT/v1/chat/completions")
    L.append(f"   # env: BENCH_METHOD=POST BENCH_BODY=bench/out/bodies/chat_1024.json BENCH_HOST={rb.HOST} BENCH_KEY={rb.KEY}")
    L.append(f"target/ratelimit/release/ai-gateway-ratelimit --listen 127.0.0.1:PORT --redis-url redis://127.0.0.1:PORT "
             f"--key-prefix ai-gateway-rl: --threads {RLS_THREADS} --config ratelimit.yaml   # domain: ai-gateway, descriptors: []")
    L.append("redis-server --bind 127.0.0.1 --port PORT --save '' --appendonly no")
    L.append("```")
    L.append("")

    L.append(f"## 1 KB chat, {s['conns']} connections, one Envoy worker")
    L.append("")
    L += traffic_table(res, "throughput")
    L.append("")
    L.append("**total CPU/req** = Envoy + the service + Redis. vs local = total minus local's. filter busy = "
             "`ai_gateway_filter_duration_us` (the filter's callbacks, host calls included; strict's wait for "
             "the answer is not in it). p50 / p99 under 16 connections include queueing.")
    L.append("")
    L.append("## 1 KB chat, one connection (latency without queueing)")
    L.append("")
    L.append("| setup | rps | **p50** (median of rounds) | p99 | added p50 vs local | added p50 vs plain | "
             "Envoy CPU/req | service CPU/req | Redis CPU/req |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, label in SETUPS:
        r = lat[name]
        ex = r.get("extra_cpu_us_per_req") or {}
        p50 = p50_of(lat, name)
        vs_local = "–" if name in ("plain", "local") else f"{p50 - p50_of(lat, 'local'):+,.0f} µs"
        vs_plain = "–" if name == "plain" else f"{p50 - p50_of(lat, 'plain'):+,.0f} µs"
        L.append(f"| {label} | {r['rps']:,.0f} | **{rb.fmt_us(p50)}** | {rb.fmt_us(r['latency_us']['p99'])} | "
                 f"{vs_local} | {vs_plain} | "
                 f"{us(r['envoy_cpu_us_per_req'])} | {us(ex.get('rls'), 1) if 'rls' in ex else '–'} | "
                 f"{us(ex.get('redis'), 1) if 'redis' in ex else '–'} |")
    L.append("")
    L.append("rps and p99: the run with the median rps. p50 of every round: " + "; ".join(
        f"{LABEL[n]} {', '.join(str(x) for x in lat[n].get('p50_all', []))} µs" for n, _ in SETUPS)
        + ". One connection makes every request wait for a wake-up of each process on its path, so "
        "these runs are the most sensitive to other load on the machine.")
    L.append("")

    # Findings against the targets.
    L.append("## Against the targets")
    L.append("")
    ctl = control_ms_per_s(res)
    d = paired(res, "throughput", "synced", "local")
    spread = res["throughput"]["local"].get("cpu_us_all", [])
    noise_band = (max(spread) - min(spread)) if spread else float("nan")
    sy, lo = th["synced"], th["local"]
    diff = sy["envoy_cpu_us_per_req"] - lo["envoy_cpu_us_per_req"]
    # Within the noise: the rounds disagree on the sign, or the difference is smaller than
    # how much local's own rounds vary.
    within = bool(d) and (min(d) <= 0 <= max(d) or abs(diff) <= noise_band)
    verdict = "within the noise" if within else "**beyond the noise**"
    L.append(f"- **synced vs local, no difference beyond noise**: Envoy CPU/req {sy['envoy_cpu_us_per_req']:.0f} "
             f"vs {lo['envoy_cpu_us_per_req']:.0f} µs ({diff:+.0f} µs, {100 * diff / lo['envoy_cpu_us_per_req']:+.1f}%); "
             f"per round synced − local: {', '.join(f'{x:+.0f}' for x in d)} µs; local's own spread over its "
             f"rounds: {noise_band:.0f} µs — {verdict}. rps {sy['rps']:,.0f} vs {lo['rps']:,.0f}; one-connection "
             f"p50 {p50_of(lat, 'synced'):.0f} vs {p50_of(lat, 'local'):.0f} µs (per round synced − local: "
             f"{', '.join(f'{x:+}' for x in paired_p50(lat, 'synced', 'local'))} µs). The service "
             f"and Redis behind synced, while it served {sy['rps']:,.0f} rps: "
             f"{1e3 * sy['extra_cpu']['rls']:.2f} and {1e3 * sy['extra_cpu']['redis']:.2f} ms of CPU per second "
             f"({res['throughput_global']['synced']['syncs_ok'] / res['throughput_global']['synced']['seconds']:.1f} "
             f"syncs/s over the phase; a service and Redis nobody calls use {ctl[0]:.2f} + {ctl[1]:.2f} ms/s).")
    st = th["strict"]
    ex = st["extra_cpu_us_per_req"]
    hop = st["envoy_cpu_us_per_req"] - lo["envoy_cpu_us_per_req"]
    lat_hop = p50_of(lat, "strict") - p50_of(lat, "local")
    L.append(f"- **strict, the hop's cost**: Envoy +{hop:.0f} µs CPU per request over local "
             f"({st['envoy_cpu_us_per_req']:.0f} vs {lo['envoy_cpu_us_per_req']:.0f}), the service "
             f"{ex['rls']:.0f} µs and Redis {ex['redis']:.0f} µs per request: **{hop + ex['rls'] + ex['redis']:.0f} µs "
             f"of CPU per request** in all for the hop ({st['rps']:,.0f} vs {lo['rps']:,.0f} rps on one worker). "
             f"p50 at one connection **{lat_hop:+.0f} µs** vs local ({p50_of(lat, 'strict'):.0f} vs "
             f"{p50_of(lat, 'local'):.0f} µs; per round {', '.join(f'{x:+}' for x in paired_p50(lat, 'strict', 'local'))}"
             f" µs); at {s['conns']} connections "
             f"{rb.fmt_us(st['latency_us']['p50'])} vs {rb.fmt_us(lo['latency_us']['p50'])}.")
    tg = res["throughput_global"]["strict"]
    calls = tg["cluster"].get("cluster.ratelimit.upstream_rq_total", 0)
    L.append(f"- strict really made one call per request: over the {s['conns']}-connection phase wrk completed "
             f"{tg['wrk_requests']:,} requests through it and Envoy counted {calls:,} requests to the `ratelimit` "
             f"cluster, of which {tg['syncs_ok'] + tg['syncs_failed']:.0f} syncs "
             f"({calls - tg['syncs_ok'] - tg['syncs_failed'] - tg['wrk_requests']:+,.0f} beyond one per request: "
             "the warm-up runs and requests wrk cut off at the end of a run). Syncs failed: "
             f"{tg['syncs_failed']:.0f} strict, {res['throughput_global']['synced']['syncs_failed']:.0f} synced; "
             f"degraded decisions (`ai_gateway_quota_degraded_total`): {tg['degraded']:.0f} strict, "
             f"{res['throughput_global']['synced']['degraded']:.0f} synced.")
    if res.get("errors"):
        L.append("- **Runs with errors** (socket errors or non-2xx): " + "; ".join(res["errors"]))
    else:
        L.append("- every run: no socket errors, no non-2xx answers (wrk's counters).")
    L.append("")

    L.append("## The sync at rest")
    L.append("")
    idl = res["idle"]
    ctl = control_ms_per_s(res)
    L.append(f"Four idle Envoys (`--concurrency 1`, the same bootstrap, no traffic), measured together over "
             f"{len(idl['rounds'])} windows of {idl['seconds']} s after {idl['warmup']} s of warm-up: the "
             f"local configuration and the synced one (tenant-a global), and {IDLE_TENANTS} tenants (tenant-a, "
             f"tenant-b and {IDLE_TENANTS - 2} generated) without and with `quota.global` (requests and tokens, "
             "synced) on every one. Each global Envoy has its own service and Redis. The root tick is 100 ms "
             "in all four (the held-headers watch), so the two only differ by the sync (due every second "
             f"tick at {SYNC_INTERVAL_MS} ms). Per sync = (Envoy CPU of the global config − its base) ÷ syncs "
             "counted by `ai_gateway_global_syncs_total{result=\"ok\"}` (read from `/stats/prometheus` "
             "around each window). The service's and Redis's per sync are their CPU less that of a control "
             f"stack (a service and Redis no Envoy calls: {ctl[0]:.2f} + {ctl[1]:.2f} ms/s of their own timers "
             "and pings).")
    L.append("")
    L.append("| configuration | tenants with global | descriptors per sync | syncs/s (in all) | Envoy idle CPU | "
             "**Envoy CPU per sync** | of which main thread / worker / other threads | every window | "
             "service CPU per sync | Redis CPU per sync | service + Redis per second |")
    L.append("|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|")
    for row in res["idle_summary"]:
        L.append(f"| {dict((n, l) for n, l, _ in IDLE)[row['base']]} | 0 | 0 | – | "
                 f"{row['base_ms_per_s']:.2f} ms/s | – | – | – | – | – | – |")
        th = row.get("threads_us_per_sync") or {}
        split = " / ".join(f"{th.get(k, float('nan')):.0f}" for k in ("main", "workers", "other")) + " µs"
        L.append(f"| {dict((n, l) for n, l, _ in IDLE)[row['config']]} | {row['tenants']} | {row['counters']} | "
                 f"{row['syncs_per_s']:.2f} ({row['syncs_in_windows']:.0f}) | {row['global_ms_per_s']:.2f} ms/s | "
                 f"**{us(row['envoy_us_per_sync'])}** | {split} | "
                 f"{', '.join(f'{x:.0f}' for x in row['envoy_us_per_sync_all'])} | "
                 f"{us(row['rls_us_per_sync'])} | {us(row['redis_us_per_sync'])} | "
                 f"{row['rls_ms_per_s']:.2f} + {row['redis_ms_per_s']:.2f} ms/s |")
    L.append("")
    sync_fail = sum(r["syncs"][g]["failed"] for r in idl["rounds"] for g in r["syncs"])
    rate = statistics.median(row["syncs_per_s"] for row in res["idle_summary"])
    L.append(f"Syncs failed during the windows: {sync_fail:.0f}. Envoy idle CPU is per second of wall time "
             "(every thread: main, worker, stats flush); 1 ms/s is 0.1% of a core. The last column is raw "
             f"(control stack included). {rate:.2f} syncs/s is one every {1000 / rate:.0f} ms, not "
             f"{SYNC_INTERVAL_MS}: the sync runs from the 100 ms tick when at least {SYNC_INTERVAL_MS} ms "
             "have passed since the last one, so a tick that fires a little early defers it by a whole tick.")
    L.append("")

    L.append("## How measured, caveats")
    L.append("")
    L.append("- CPU: `/proc/<pid>/task/*/schedstat` of Envoy, the service and Redis, summed over their "
             "threads, read just before and after each wrk run (or idle window); per request = CPU ÷ "
             "requests wrk completed in that run. Not sampled, not estimated.")
    L.append("- The medians hide run-to-run spread; every round's Envoy CPU per request is printed so the "
             "noise can be judged. Setups are measured one after the other within a round (rotating order), "
             "never at the same time, so a burst of outside load hits one run: those runs are repeated "
             "(`bench/run_bench.py`'s `measure`).")
    L.append("- The service and Redis share the 2 cores with Envoy, wrk and the mocks: in strict mode their "
             "CPU competes with Envoy's worker, so strict's rps is lower than its CPU alone explains; the "
             "CPU per request figures do not depend on who is the bottleneck.")
    L.append("- Everything is on 127.0.0.1: the hop's p50 is a loopback round trip plus the service's and "
             "Redis's work; across a network add its round trip (twice: Envoy→service, service→Redis).")
    L.append("- expected_replicas 1 and one Envoy: synced mode's request path (shared-data compare-and-swap "
             "on the slot) is the same for any number of replicas; the sync's cost depends on the number of "
             "tenant counters, not on traffic (a pure read with nothing pending, a charge otherwise).")
    L.append("- The windows are per minute; a run that crosses a minute boundary starts a fresh window "
             "(a sync reads the new one), which changes nothing measurable here.")
    L.append("- Idle: the difference of two idle Envoys' CPU is small next to Envoy's own idle work (stats "
             "flushes, timers); each window's figure is printed; negative or scattered values mean the "
             "noise is of the order of the sync itself.")
    if os.path.exists(NOTES_MD):
        with open(NOTES_MD) as f:
            notes = f.read().strip()
        if notes:
            L.append("")
            L.append("## Reading")
            L.append("")
            L.append(notes)
    L.append("")
    return "\n".join(L)


def results_json(quick):
    return os.path.join(OUT, "global-quick.json" if quick else "global.json")


def write_report(res, quick):
    md = render(res)
    path = os.path.join(OUT, "global-quick.md") if quick else GLOBAL_MD
    with open(path, "w") as f:
        f.write(md)
    print()
    print(md)
    log(f"wrote {os.path.relpath(path, ROOT)}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=5, help="per 16-connection run")
    p.add_argument("--reps", type=int, default=6, help="rounds of 16-connection runs")
    p.add_argument("--latency-seconds", type=int, default=3, help="per one-connection run")
    p.add_argument("--latency-reps", type=int, default=5, help="rounds of one-connection runs")
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--idle-seconds", type=int, default=20, help="per idle window")
    p.add_argument("--idle-rounds", type=int, default=4)
    p.add_argument("--idle-warmup", type=float, default=5.0)
    p.add_argument("--retry-budget", type=int, default=rb.RETRY_BUDGET,
                   help="repeats of disturbed runs allowed in all (bench/run_bench.py's rule)")
    p.add_argument("--quick", action="store_true", help="1 s runs, one round, 3 s idle (smoke test)")
    p.add_argument("--render-only", action="store_true", help="rewrite global.md from bench/out/global.json")
    p.add_argument("--wasm", default=launcher.WASM)
    args = p.parse_args()
    if args.render_only:
        with open(results_json(False)) as f:
            return write_report(json.load(f), quick=False)
    if args.quick:
        args.seconds = args.latency_seconds = 1
        args.reps = args.latency_reps = args.idle_rounds = 1
        args.idle_seconds, args.idle_warmup = 3, 1.0
    rb.RETRY_BUDGET = args.retry_budget
    t_start = time.time()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk (make bench-global does)")
    launcher.require(args.wasm, "the filter module", "run `make build`")
    launcher.require(RLS_BINARY, "ai-gateway-ratelimit", "run `make ratelimit`")
    if not shutil.which("redis-server"):
        raise launcher.LaunchError("redis-server not found: run `make apt-deps`")
    files, _ = rb.write_inputs()
    wasm = rb.snapshot(args.wasm, "ai_gateway_filter.wasm")
    launcher.WASM = wasm
    local = rb.bench_plugin_config()
    cfgs = {"local": local, "synced": with_global(local, "synced"), "strict": with_global(local, "strict")}
    for name, cfg in cfgs.items():
        with open(os.path.join(OUT, f"global-config-{name}.json"), "w") as f:
            json.dump(cfg, f, indent=1)
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(wasm),
        "load_before": os.getloadavg(),
        "settings": {"seconds": args.seconds, "reps": args.reps, "latency_seconds": args.latency_seconds,
                     "latency_reps": args.latency_reps, "conns": args.conns,
                     "idle_seconds": args.idle_seconds, "idle_rounds": args.idle_rounds},
        "command": "python -m bench.global_bench " + " ".join(sys.argv[1:]),
        "phase_s": {},
    }
    log(f"machine: {res['machine']['nproc']} cores, {res['machine']['cpu']}; load {res['load_before'][0]:.2f}")
    traffic(args, cfgs, files, res)
    t0 = time.time()
    idle(args, cfgs, res)
    res["phase_s"]["idle"] = round(time.time() - t0, 1)
    res["idle_summary"] = idle_summary(res)
    res["load_after"] = os.getloadavg()
    res["errors"] = rb.ERRORS
    res["noise"] = dict(rb_dist(rb.NOISE), runs=len(rb.NOISE), steal=rb_dist(rb.STEAL), retried=len(rb.RETRIED),
                        idle_other=rb_dist([r["other_cpu"] for r in res["idle"]["rounds"]]))
    res["elapsed_s"] = round(time.time() - t_start)
    with open(results_json(args.quick), "w") as f:
        json.dump(res, f, indent=1, default=str)
    write_report(res, quick=args.quick)


rb_dist = dist

if __name__ == "__main__":
    main()
