#!/usr/bin/env python3
"""`make bench`: what the filter costs, next to plain Envoy, the Wasm floor and ext_proc.

Starts one set of mock backends and, side by side, five Envoys rendered from the same
bootstrap (harness/render.py), one worker each, that differ only in the filter in
front of the router:

- plain     no filter (`--no-filter`);
- floor     bench/floor, the emptiest Proxy-Wasm filter that buffers and reads the
            request body, loaded exactly like the filter (`--wasm floor_filter.wasm`);
- filter    ai_gateway_filter.wasm with filters/demo.json (quotas never refuse);
- native    the same filter as the native dynamic module (libai_gateway_native.so, built
            by `make native`), same plugin configuration (`--host native`);
- ext_proc  Envoy's ext_proc filter calling bench/ext-proc, a do-nothing gRPC processor
            on 127.0.0.1 that answers every phase with CONTINUE (`--ext-proc-port`).

wrk drives all five with the same request bytes (the key is sent to every one), in
rounds that visit every setup in rotating order, so machine noise hits all alike. It
reports requests per second, latency, Envoy CPU per request (and the processor's, for
ext_proc), ratios to plain and to the floor, the CPU per extra KB of body, latency at
one connection, TTFT measured by a client, the Wasm cost meter's counts (target/debug/
meter, built by make bench), an ablation of the filter's features and where the time goes (perf
per shared object, callgrind on the native core). Writes bench/results.md,
bench/latency_vs_body.png and the raw numbers in bench/out/.

    .venv/bin/python -m bench.run_bench [--seconds 5] [--reps 3] [--quick [--perf]]
        [--no-ablation] [--no-perf] [--no-callgrind] [--latency-sweep] [--native SO]
    .venv/bin/python -m bench.run_bench --opt-level-study   # once: opt-level "s" vs 3
"""
import argparse
import copy
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
from bench import ttft  # noqa: E402
from harness import launcher  # noqa: E402

OUT = os.path.join(HERE, "out")
RESULTS_MD = os.path.join(HERE, "results.md")
PLOT_PNG = os.path.join(HERE, "latency_vs_body.png")
OPT_LEVEL_JSON = os.path.join(HERE, "opt_level.json")
WRK_LUA = os.path.join(HERE, "wrk.lua")
# The bench workspace (bench/Cargo.toml), built by `make bench` into target/bench.
BENCH_TARGET = os.path.join(ROOT, "target", "bench")
PROFILE_BIN = os.path.join(BENCH_TARGET, "release", "core-profile")
EXT_PROC_BIN = os.path.join(BENCH_TARGET, "release", "ext-proc-noop")
FLOOR_WASM = os.path.join(BENCH_TARGET, "wasm32-wasip1", "wasm", "floor_filter.wasm")
# The native dynamic module (`make native`); the bench runs a copy (snapshot_native).
NATIVE_SO = launcher.NATIVE
# The Wasm cost meter (meter/ in the root workspace); optional.
# `make bench` builds it (debug: the counts do not depend on the meter's own build).
METER_BIN = os.path.join(ROOT, "target", "debug", "meter")

HOST = "tenant-a.ai.example.com"
KEY = "sk-tenant-a-demo"
CHAT = "/v1/chat/completions"
KB = 1024
SIZES = [1 * KB, 4 * KB, 16 * KB, 64 * KB, 256 * KB]

# (name, label). The order is the table's.
SETUPS = [
    ("plain", "plain Envoy"),
    ("floor", "floor (empty Wasm filter)"),
    ("filter", "ai-gateway-filter"),
    ("native", "ai-gateway-filter, native module"),
    ("ext_proc", "ext_proc + no-op processor"),
]
LABEL = dict(SETUPS)
# The setups that run the filter itself (its busy-time histogram is read around runs).
FILTER_SETUPS = ("filter", "native")

# (id, label, method, path, body size, stream)
CASES = [(f"chat_{s // KB}k", f"chat, {s // KB} KB body", "POST", CHAT, s, False) for s in SIZES]
CASES.append(("stream", "streaming chat, 1 KB body, 16 tokens", "POST", CHAT, 1 * KB, True))
CHAT_1K = CASES[0]
# The meter's exchange beside each case (the meter measures these three of ours).
METER_EXCHANGE = {"chat_1k": "chat_1k", "chat_64k": "chat_64k", "stream": "stream_16"}

# ext_proc's response body mode. STREAMED sends every response chunk to the processor as
# it arrives and forwards it once answered: streams keep streaming (each chunk waits for
# one round trip), and the processor sees every response byte, as the Wasm filter does
# (it scans the response for token usage). One mode for every row keeps the setup fixed.
EXT_PROC_RESPONSE_BODY_MODE = "STREAMED"

# wrk runs that saw socket errors or non-2xx answers (reported in results.md).
ERRORS = []
# Other processes' CPU and hypervisor steal (cores) during each kept run.
NOISE = []
STEAL = []
# Runs disturbed by more than DISTURBED cores are repeated, at most RETRY_BUDGET times in all.
DISTURBED = 0.25
RETRY_BUDGET = 12
RETRIED = []
# Wall time of each measured wrk run, by duration asked (for the run-time estimate).
RUN_WALL = {}

WORDS = ("the quick brown fox jumps over a lazy dog while the gateway reads an openai "
         "compatible request body and counts every word of the prompt").split()


def log(msg):
    print(msg, flush=True)


# -- inputs ----------------------------------------------------------------------------

def bench_plugin_config():
    """filters/demo.json with quotas so large they never refuse: the buckets are still
    charged and settled on every request (the real per-request work), but a benchmark
    at thousands of requests per second must not turn into a 429 benchmark."""
    with open(os.path.join(ROOT, "filters", "demo.json")) as f:
        cfg = json.load(f)
    for t in cfg["tenants"]:
        t["quota"] = {
            "requests_per_minute": 1e9, "request_burst": 1e9,
            "tokens_per_minute": 1e12, "token_burst": 1e12,
        }
    return cfg


def chat_body(size, stream=False, max_tokens=16):
    """A chat request of exactly `size` bytes: a system and a user message, the user's
    content made of words (so token estimates and the mock's word count are realistic)."""
    base = {
        "model": "llama3-8b",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": ""},
        ],
        "max_tokens": max_tokens,
    }
    if stream:
        base["stream"] = True
    overhead = len(json.dumps(base, separators=(",", ":")))
    need = size - overhead
    words, length, i = [], 0, 0
    while True:
        w = WORDS[i % len(WORDS)]
        add = len(w) + (1 if words else 0)
        if length + add > need:
            break
        words.append(w)
        length += add
        i += 1
    text = " ".join(words)
    text += "." * (need - len(text))
    base["messages"][1]["content"] = text
    out = json.dumps(base, separators=(",", ":")).encode()
    if len(out) != size:
        raise SystemExit(f"body generator: wanted {size} bytes, made {len(out)}")
    return out


def write_inputs():
    bodies = os.path.join(OUT, "bodies")
    os.makedirs(bodies, exist_ok=True)
    files = {}
    for size in SIZES:
        path = os.path.join(bodies, f"chat_{size}.json")
        with open(path, "wb") as f:
            f.write(chat_body(size))
        files[("chat", size)] = path
    path = os.path.join(bodies, "stream_1024.json")
    with open(path, "wb") as f:
        f.write(chat_body(1 * KB, stream=True))
    files[("stream", 1 * KB)] = path
    # TTFT: two tokens, so the stream is short but its first content chunk arrives alone
    # (the TTFT mocks pace tokens at 1000/s).
    path = os.path.join(bodies, "stream_ttft_1024.json")
    with open(path, "wb") as f:
        f.write(chat_body(1 * KB, stream=True, max_tokens=2))
    files[("stream_ttft", 1 * KB)] = path
    cfg_path = os.path.join(OUT, "bench-config.json")
    with open(cfg_path, "w") as f:
        json.dump(bench_plugin_config(), f, indent=1)
    return files, cfg_path


def body_file(files, size, stream):
    return files[("stream" if stream else "chat", size)] if size else None


# -- processes -------------------------------------------------------------------------

class BenchTopology(launcher.Topology):
    """A Topology that can reuse another one's mock backends (every Envoy proxies to the
    same processes) and can drop the access logs (ablation only).

    `host` fixes which artifact runs the filter for this Envoy alone (`wasm` or `native`),
    whatever AI_GATEWAY_HOST says: make bench runs both side by side, so every one of its
    Envoys names its host. None (bench/global_bench.py) leaves the launcher's choice.
    `native_dir`: the directory Envoy loads the native module from (its
    ENVOY_DYNAMIC_MODULES_SEARCH_PATH; the launcher's target/release when None)."""

    def __init__(self, *args, share_mocks_from=None, no_access_logs=False, host=None,
                 native_dir=None, **kwargs):
        if share_mocks_from is not None:
            kwargs["mock_base_port"] = share_mocks_from.mock_base_port
        if host not in (None, "wasm", "native"):
            raise launcher.LaunchError(f"BenchTopology host must be wasm or native, not {host!r}")
        if native_dir is not None:
            kwargs["env"] = dict(kwargs.get("env") or {}, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=native_dir)
        super().__init__(*args, **kwargs)
        self.share = share_mocks_from is not None
        self.no_access_logs = no_access_logs
        self.host = host
        self.native_dir = native_dir
        if host is not None:
            # After the launcher's own `--host` (from AI_GATEWAY_HOST): a later option wins.
            self.render_args += ["--host", host]

    def start(self):
        if self.with_filter and (self.host or launcher.host()) == "native":
            so = os.path.join(self.native_dir or launcher.NATIVE_DIR, os.path.basename(launcher.NATIVE))
            launcher.require(so, "the native filter module", "run `make native`")
        super().start()

    def start_mock(self, name, port):
        if self.share:
            return None
        return super().start_mock(name, port)

    def render(self, plugin_config=None):
        super().render(plugin_config)
        if not self.no_access_logs:
            return
        with open(self.config_path) as f:
            lines = f.read().split("\n")
        out, skipping = [], False
        for line in lines:
            if line.strip() == "access_log:":
                skipping = True
                continue
            if skipping and line.strip() == "http_filters:":
                skipping = False
            if not skipping:
                out.append(line)
        with open(self.config_path, "w") as f:
            f.write("\n".join(out))


class ExtProc:
    """The no-op external processor (bench/ext-proc) on 127.0.0.1, one Tokio thread."""

    def __init__(self, threads=1):
        self.threads = threads
        self.port = None
        self.proc = None
        self.final = None
        self.log_path = os.path.join(OUT, "ext-proc.log")

    def start(self):
        launcher.require(EXT_PROC_BIN, "the ext_proc processor", "run `make bench` (builds bench/ext-proc)")
        self.port = launcher.free_ports(1)
        self.out = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [EXT_PROC_BIN, "--listen", f"127.0.0.1:{self.port}", "--threads", str(self.threads)],
            stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if not launcher.wait_port(self.port, proc=self.proc):
            self.stop()
            raise launcher.LaunchError(f"ext-proc-noop did not start on port {self.port}")

    @property
    def pid(self):
        return self.proc.pid

    def _count_lines(self):
        with open(self.log_path) as f:
            return [json.loads(l.split(" ", 1)[1]) for l in f if l.startswith("EXT_PROC_COUNTS ")]

    def counts(self, timeout=5.0):
        """What it has answered so far, per phase (SIGUSR1: it prints one line)."""
        n = len(self._count_lines())
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.time() + timeout
        while time.time() < deadline:
            lines = self._count_lines()
            if len(lines) > n:
                return lines[-1]
            time.sleep(0.02)
        raise launcher.LaunchError("ext-proc-noop did not report its counts")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            launcher.stop_process(self.proc)
            lines = self._count_lines()
            self.final = lines[-1] if lines else None
        if getattr(self, "out", None):
            self.out.close()


def ext_proc_stats(topo):
    """Envoy's own ext_proc counters (http.<prefix>.ext_proc.*), by name."""
    out = {}
    for line in topo.admin("/stats?filter=ext_proc").splitlines():
        name, _, value = line.partition(": ")
        if ".ext_proc." in name and value.strip().isdigit():
            out[name.rsplit(".ext_proc.", 1)[1]] = int(value)
    return out


def cpu_ns(pid):
    """CPU time of every thread of a process, in ns (schedstat: exact, not ticks)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def machine_cpu():
    """(busy seconds, steal seconds) of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq = v[:7]
    steal = v[7] if len(v) > 7 else 0
    return (user + nice + system + irq + softirq) / hz, steal / hz


def filter_hist(topo):
    """(sum, count) of ai_gateway_filter_duration_us over every route. Envoy merges
    histograms asynchronously after a flush, so the admin endpoint is read twice."""
    text = ""
    for _ in range(2):
        text = topo.admin("/stats/prometheus")
        time.sleep(0.15)
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("ai_gateway_filter_duration_us_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("ai_gateway_filter_duration_us_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def wrk_cmd(url, seconds, conns):
    return ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "-s", WRK_LUA, url]


def run_wrk(topo, method, path, body, seconds, conns):
    env = dict(os.environ, BENCH_METHOD=method, BENCH_BODY=body or "", BENCH_HOST=HOST,
               BENCH_KEY=KEY)
    cmd = wrk_cmd(topo.base_url + path, seconds, conns)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((l for l in p.stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
    if line is None:
        raise SystemExit(f"wrk failed ({p.returncode}): {p.stdout}\n{p.stderr}")
    r = json.loads(line[len("BENCH_JSON "):])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["wrk_cpu"] = ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) \
        / (r["duration_us"] / 1e6)
    return r


class Side:
    """One Envoy under test. `hist`: read the filter's busy-time histogram around runs;
    `proc`: the ExtProc it calls (its CPU is measured with Envoy's); `extra`: other
    processes this setup relies on, {label: object with .pid}, each measured around every
    run and reported on its own (`extra_cpu_us_per_req`, `extra_cpu`), never as noise."""

    def __init__(self, name, topo, hist=False, proc=None, extra=None):
        self.name, self.topo, self.hist, self.proc = name, topo, hist, proc
        self.extra = dict(extra or {})
        self.requests = 0  # completed by wrk, over every run (the ext_proc check)


def measure(side, mocks, case, files, seconds, conns):
    """One wrk run against `side`. A run disturbed by other work on the machine (other
    processes' CPU plus hypervisor steal above DISTURBED cores) is repeated, within a
    budget for the whole benchmark; the least disturbed attempt is kept."""
    global RETRY_BUDGET
    best = None
    while True:
        t0 = time.time()
        r = measure_once(side, mocks, case, files, seconds, conns)
        RUN_WALL.setdefault(seconds, []).append(time.time() - t0)
        r["disturbance"] = r["other_cpu"] + r["steal"]
        if best is None or r["disturbance"] < best["disturbance"]:
            best = r
        if best["disturbance"] <= DISTURBED or RETRY_BUDGET <= 0 or seconds < 2:
            break
        RETRY_BUDGET -= 1
        RETRIED.append(f"{side.name} {case[0]} c={conns}")
    if seconds >= 2:
        NOISE.append(best["other_cpu"])
        STEAL.append(best["steal"])
    return best


def measure_once(side, mocks, case, files, seconds, conns):
    _, _, method, path, size, stream = case
    body = body_file(files, size, stream)
    h0 = filter_hist(side.topo) if side.hist else None
    e0 = cpu_ns(side.topo.envoy.pid)
    x0 = cpu_ns(side.proc.pid) if side.proc else 0
    m0 = {n: cpu_ns(p.pid) for n, p in mocks.items()}
    extra = getattr(side, "extra", {})
    y0 = {k: cpu_ns(p.pid) for k, p in extra.items()}
    b0, s0 = machine_cpu()
    r = run_wrk(side.topo, method, path, body, seconds, conns)
    b1, s1 = machine_cpu()
    e1 = cpu_ns(side.topo.envoy.pid)
    x1 = cpu_ns(side.proc.pid) if side.proc else 0
    m1 = {n: cpu_ns(p.pid) for n, p in mocks.items()}
    y1 = {k: cpu_ns(p.pid) for k, p in extra.items()}
    side.requests += r["requests"]
    dur = r["duration_us"] / 1e6
    n = max(1, r["requests"])
    own = (e1 - e0 + x1 - x0) / 1e9 + sum(m1[k] - m0[k] for k in mocks) / 1e9 + r["wrk_cpu"] * dur
    own += sum(y1[k] - y0[k] for k in extra) / 1e9
    if extra:
        r["extra_cpu_us_per_req"] = {k: (y1[k] - y0[k]) / 1e3 / n for k in extra}
        r["extra_cpu"] = {k: (y1[k] - y0[k]) / 1e9 / dur for k in extra}
    # CPU used by everything else on the machine during the run (other engineers' builds,
    # this script itself): the noise indicator reported with the results.
    r["other_cpu"] = max(0.0, (b1 - b0) - own) / dur
    r["steal"] = (s1 - s0) / dur
    r["envoy_cpu"] = (e1 - e0) / 1e9 / dur
    r["envoy_cpu_us_per_req"] = (e1 - e0) / 1e3 / n
    r["proc_cpu_us_per_req"] = (x1 - x0) / 1e3 / n
    r["cpu_us_per_req"] = r["envoy_cpu_us_per_req"] + r["proc_cpu_us_per_req"]
    r["mock_cpu_max"] = max((m1[k] - m0[k]) / 1e9 / dur for k in mocks)
    if h0 is not None:
        h1 = filter_hist(side.topo)
        cnt = h1[1] - h0[1]
        r["filter_busy_us_mean"] = (h1[0] - h0[0]) / cnt if cnt > 0 else None
    r["command"] = " ".join(wrk_cmd(side.topo.base_url + path, seconds, conns))
    bad = {k: v for k, v in r["errors"].items() if v}
    if bad:
        ERRORS.append(f"{side.name} {case[0]} c={conns}: {bad} of {r['requests']} requests")
        log(f"  errors: {ERRORS[-1]}")
    return r


def median_run(runs):
    """The run with the median throughput (its latencies stay consistent with it), with
    the median CPU per request of all runs."""
    s = sorted(runs, key=lambda r: r["rps"])
    m = dict(s[len(s) // 2])
    m["rps_all"] = [round(r["rps"]) for r in runs]
    m["cpu_us_all"] = [round(r["cpu_us_per_req"], 1) for r in runs]
    m["p50_all"] = [r["latency_us"]["p50"] for r in runs]
    for k in ("envoy_cpu_us_per_req", "proc_cpu_us_per_req", "cpu_us_per_req"):
        m[k] = statistics.median(r[k] for r in runs)
    for k in ("extra_cpu_us_per_req", "extra_cpu"):
        if all(k in r for r in runs):
            m[k] = {x: statistics.median(r[k][x] for r in runs) for x in runs[0][k]}
    return m


def rounds(sides, mocks, case, files, seconds, conns, reps, warmup):
    """`reps` rounds, each one run per side, in an order that rotates and reverses from
    round to round; the median of each side's runs."""
    runs = {s.name: [] for s in sides}
    if warmup:
        for s in sides:
            measure(s, mocks, case, files, warmup, conns)
    n = len(sides)
    for i in range(reps):
        order = sides[i % n:] + sides[:i % n]
        if i % 2:
            order.reverse()
        for s in order:
            runs[s.name].append(measure(s, mocks, case, files, seconds, conns))
    return {name: median_run(rs) for name, rs in runs.items()}


def request(side, case, files):
    import urllib.request

    _, label, method, path, size, stream = case
    body = None
    if size:
        with open(body_file(files, size, stream), "rb") as f:
            body = f.read()
    req = urllib.request.Request(side.topo.base_url + path, data=body, method=method,
                                 headers={"Host": HOST, "Authorization": f"Bearer {KEY}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()
        if r.status != 200:
            raise SystemExit(f"{side.name}: {label} answered {r.status}")


def sanity(sides, files, xp):
    """Every case answers 200 through every Envoy before anything is measured, and the
    ext_proc Envoy's requests really went through the processor: one stream each, and
    each phase answered (Envoy's counters and the processor's agree)."""
    ep = next(s for s in sides if s.name == "ext_proc")
    e0, c0 = ext_proc_stats(ep.topo), xp.counts()
    for s in sides:
        for case in CASES:
            request(s, case, files)
    e1, c1 = ext_proc_stats(ep.topo), xp.counts()
    n = len(CASES)
    got = {k: c1[k] - c0[k] for k in c1}
    started = e1.get("streams_started", 0) - e0.get("streams_started", 0)
    want = {"streams": n, "request_headers": n, "request_body": n, "response_headers": n}
    if any(got[k] != v for k, v in want.items()) or got["response_body"] < n or started != n:
        raise SystemExit(f"ext_proc check: {n} requests, Envoy streams_started {started}, "
                         f"the processor answered {got}")
    # The filter really ran on both hosts: one gateway record per request in the access
    # log (only the filter's filter state makes a line there).
    for s in sides:
        if s.name in FILTER_SETUPS:
            deadline = time.time() + 10
            while len(s.topo.records()) < n and time.time() < deadline:
                time.sleep(0.05)
            got_records = len(s.topo.records())
            if got_records != n:
                raise SystemExit(f"{s.name}: {n} requests, {got_records} gateway records in the access log")
    return {"requests": n, "envoy_streams_started": started, "processor": got}


# -- profiles --------------------------------------------------------------------------

def perf_works():
    if not shutil.which("perf"):
        return False
    p = subprocess.run(["perf", "record", "-e", "cpu-clock", "-o", "/dev/null", "true"],
                       capture_output=True, text=True)
    return p.returncode == 0


def perf_split(side, mocks, case, files, seconds, conns):
    """Share of the Envoy process's CPU samples per shared object during a run."""
    data = os.path.join(OUT, f"perf-{side.name}.data")
    rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-p",
                            str(side.topo.envoy.pid), "-o", data],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    r = measure(side, mocks, case, files, seconds, conns)
    rec.send_signal(2)
    rec.wait(timeout=30)
    rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", "dso", "-g", "none"],
                         capture_output=True, text=True)
    shares = {}
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.+?)\s*$", line)
        if m:
            dso = m.group(2)
            dso = "wasm (V8 JIT code)" if dso.startswith("[JIT]") else dso
            dso = {"envoy": "envoy (incl. V8 runtime)", "[kernel.kallsyms]": "kernel"}.get(dso, dso)
            shares[dso] = shares.get(dso, 0.0) + float(m.group(1))
    os.remove(data)
    return {"run": r, "shares": shares}


def callgrind_profile(cfg_path, files):
    """Instructions per request of the native core (bench/profile), by body size."""
    if not (os.path.exists(PROFILE_BIN) and shutil.which("valgrind")):
        return None
    out = {"rows": [], "top": {}}
    keep_sizes = (SIZES[0], SIZES[-1])

    def run(body, kind, iters, keep=None):
        cg = keep or os.path.join(OUT, "callgrind.tmp")
        p = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}",
                            PROFILE_BIN, cfg_path, body, kind, str(iters)],
                           capture_output=True, text=True)
        m = re.search(r"Collected : (\d+)", p.stderr)
        if p.returncode != 0 or not m:
            raise SystemExit(f"callgrind failed: {p.stderr[-2000:]}")
        return int(m.group(1))

    cases = [("chat", s) for s in SIZES] + [("stream", 1 * KB)]
    for kind, size in cases:
        body = files[(kind, size)]
        n = 20 if size <= 64 * KB else 4
        keep = size in keep_sizes and kind == "chat"
        base_out = os.path.join(OUT, f"callgrind.{kind}_{size}.1.out") if keep else None
        more_out = os.path.join(OUT, f"callgrind.{kind}_{size}.{1 + n}.out") if keep else None
        base = run(body, kind, 1, base_out)
        more = run(body, kind, 1 + n, more_out)
        per_request = (more - base) / n
        out["rows"].append({"kind": kind, "size": size, "instructions": per_request})
        if keep:
            out["top"][size] = callgrind_top(base_out, more_out, n, per_request)
    out["command"] = (f"valgrind --tool=callgrind {os.path.relpath(PROFILE_BIN, ROOT)} "
                      "bench/out/bench-config.json BODY chat|stream N   (N = 1 and 1+20, or 1+4 "
                      "for bodies over 64 KB; per request = difference / 20 or 4)")
    return out


def callgrind_fn_costs(path):
    """Exclusive instructions per function (inlined code summed into its function)."""
    p = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no", path],
                       capture_output=True, text=True)
    by_fn, in_table = {}, False
    for line in p.stdout.splitlines():
        if line.strip().endswith("file:function"):
            in_table = True
            continue
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.+)$", line)
        if not in_table or not m:
            continue
        name = m.group(2)
        fn = name.split(":", 1)[1] if ":" in name else name
        fn = re.sub(r"\s*\[.*\]$", "", fn).strip()
        by_fn[fn] = by_fn.get(fn, 0) + int(m.group(1).replace(",", ""))
    return by_fn


def callgrind_top(base_path, more_path, n_iters, per_request, n=12):
    """Per-request exclusive instructions by function: (run with 1+N) - (run with 1), / N."""
    a, b = callgrind_fn_costs(base_path), callgrind_fn_costs(more_path)
    diff = {fn: (b.get(fn, 0) - a.get(fn, 0)) / n_iters for fn in set(a) | set(b)}
    rows = sorted(diff.items(), key=lambda kv: -kv[1])[:n]
    return [{"ir": ir, "share": 100.0 * ir / per_request, "function": fn[:120]} for fn, ir in rows]


def run_meter(wasm):
    """The Wasm cost meter's counts per exchange for the benchmarked module, or None when
    the meter is not built. `--wasm` names the module; a meter without that option is
    asked for its default module instead."""
    if not os.path.exists(METER_BIN):
        return None
    path = os.path.join(OUT, "meter.json")
    err = ""
    for extra in (["--wasm", wasm], []):
        try:
            if os.path.exists(path):
                os.remove(path)
            p = subprocess.run([METER_BIN, *extra, "--json", path], cwd=ROOT, capture_output=True,
                               text=True, timeout=600)
            if p.returncode == 0:
                with open(path) as f:
                    out = json.load(f)
                out["command"] = " ".join(["target/debug/meter", *(["--wasm", "bench/out/ai_gateway_filter.wasm"] if extra else []), "--json", "bench/out/meter.json"])
                return out
            err = f"exit {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}"
        except (OSError, ValueError, subprocess.TimeoutExpired) as e:
            err = str(e)
    return {"error": err}


# -- machine and versions -------------------------------------------------------------

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def opt_level():
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        text = f.read()
    m = re.search(r"\[profile\.release\][^\[]*?opt-level\s*=\s*(\S+)", text)
    return m.group(1) if m else "?"


def bench_crates():
    """Versions of the bench crates' key dependencies, from bench/Cargo.lock."""
    try:
        with open(os.path.join(HERE, "Cargo.lock")) as f:
            text = f.read()
    except OSError:
        return {}
    found = re.findall(r'name = "([^"]+)"\nversion = "([^"]+)"', text)
    keep = ("envoy-types", "tonic", "prost", "tokio", "h2", "proxy-wasm")
    return {n: v for n, v in found if n in keep}


def machine(wasm, floor, native_so):
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "envoy": sh(f"{launcher.ENVOY} --version").split("version:")[-1].strip(),
        "rustc": sh("rustc --version"),
        "wrk": sh("wrk -v 2>&1 | head -1").split(" [")[0],
        "python": platform.python_version(),
        "module_bytes": os.path.getsize(wasm),
        "floor_bytes": os.path.getsize(floor),
        "native_bytes": os.path.getsize(native_so),
        "opt_level": opt_level(),
        "crates": bench_crates(),
        "git": sh(f"git -C {ROOT} rev-parse --short HEAD") + (" (+ uncommitted changes)" if sh(f"git -C {ROOT} status --porcelain") else ""),
    }


def loadavg():
    return os.getloadavg()


# -- report ----------------------------------------------------------------------------

def ratio(a, b):
    return a / b if b else float("nan")


def fmt_us(v):
    if v is None:
        return "–"
    return f"{v / 1000:.2f} ms" if abs(v) >= 10000 else f"{v:.0f} µs"


def meter_cell(res, cid, setup):
    if setup != "filter":
        return ""
    mt = res.get("meter")
    if mt is None:
        return "meter not built"
    if "error" in mt:
        return "meter failed"
    ex = (mt.get("exchanges") or {}).get(METER_EXCHANGE.get(cid, ""))
    if not ex:
        return "–"
    g = lambda k: f"{ex[k]:,}" if isinstance(ex.get(k), (int, float)) else "?"  # noqa: E731
    return f"{g('host_calls_total')} / {g('instructions')} / {g('bulk_bytes')}"


def main_table(res):
    """Every case × setup, one row each (the table printed to stdout and results.md)."""
    L = ["| case | setup | rps | p50 / p99 | Envoy CPU/req | processor CPU/req | **CPU/req** | "
         "rps ÷ plain | **CPU ratio vs plain** | rps ÷ floor | CPU ratio vs floor | "
         "meter: host calls / Wasm instructions / bulk bytes |",
         "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for cid, label, *_ in CASES:
        row = res["throughput"].get(cid)
        if not row:
            continue
        plain, floor = row["plain"], row["floor"]
        for name, _ in SETUPS:
            r = row.get(name)
            if r is None:  # results from before this setup existed (--render-only)
                continue
            warn = " ⚠" if r["mock_cpu_max"] > 0.7 else ""
            L.append(
                f"| {label if name == 'plain' else ''} | {LABEL[name]} | {r['rps']:,.0f}{warn} | "
                f"{fmt_us(r['latency_us']['p50'])} / {fmt_us(r['latency_us']['p99'])} | "
                f"{r['envoy_cpu_us_per_req']:.0f} µs | "
                f"{(str(round(r['proc_cpu_us_per_req'])) + ' µs') if name == 'ext_proc' else '–'} | "
                f"**{r['cpu_us_per_req']:.0f} µs** | {ratio(r['rps'], plain['rps']):.2f} | "
                f"**{ratio(plain['cpu_us_per_req'], r['cpu_us_per_req']):.2f}** | "
                f"{ratio(r['rps'], floor['rps']):.2f} | "
                f"{ratio(floor['cpu_us_per_req'], r['cpu_us_per_req']):.2f} | {meter_cell(res, cid, name)} |")
    return L


def summary_table(res):
    """Per setup: TTFT, one-connection latency, CPU against body size."""
    L = ["| setup | TTFT p50 / p99 | **TTFT added** vs plain p50 / p99 | 1 KB chat p50, 1 connection | "
         "**added p50** vs plain | CPU/req fit, 1–256 KB | **CPU per extra KB** | added per KB vs plain |",
         "|---|---|---|---:|---:|---:|---:|---:|"]
    t = res.get("ttft") or {}
    lat = res["latency"].get("chat_1k") or {}
    fits = res.get("cpu_fit") or {}
    for name, label in SETUPS:
        if name not in t and name not in lat and name not in fits:
            continue  # results from before this setup existed (--render-only)
        cells = [label]
        if name in t:
            f, pf = t[name][0], t["plain"][0]
            cells.append(f"{fmt_us(f['p50_us'])} / {fmt_us(f['p99_us'])}")
            cells.append("–" if name == "plain" else
                         f"{fmt_us(f['p50_us'] - pf['p50_us'])} / {fmt_us(f['p99_us'] - pf['p99_us'])}")
        else:
            cells += ["–", "–"]
        if name in lat:
            p50, pp = lat[name]["latency_us"]["p50"], lat["plain"]["latency_us"]["p50"]
            cells.append(fmt_us(p50))
            cells.append("–" if name == "plain" else f"**{fmt_us(p50 - pp)}**")
        else:
            cells += ["–", "–"]
        fit_ = fits.get(name)
        if fit_:
            base = fits["plain"]
            cells.append(f"{fit_['a']:.0f} µs + {fit_['b']:.2f} µs/KB (R² {fit_['r2']:.3f})")
            cells.append(f"**{fit_['b']:.2f} µs**")
            cells.append("–" if name == "plain" else f"{fit_['b'] - base['b']:+.2f} µs")
        else:
            cells += ["–", "–", "–"]
        L.append("| " + " | ".join(cells) + " |")
    return L


def render_markdown(res):
    m = res["machine"]
    s = res["settings"]
    L = []
    L.append("# What the filter costs: plain Envoy, the Wasm floor, the filter (Wasm and native), "
             "an ext_proc hop")
    L.append("")
    L.append(f"Generated by `make bench` (`python -m bench.run_bench`) on {res['date']}. "
             "Raw numbers: `bench/out/results.json` (not committed).")
    L.append("")
    L.append("## Machine and versions")
    L.append("")
    L.append(f"- {m['nproc']} cores ({m['cpu']}), {m['mem_gib']} GiB, Linux {m['kernel']}; "
             f"load average before/after: {res['load_before'][0]:.2f} / {res['load_after'][0]:.2f}"
             " (1 min; the runs themselves keep about 1.5 cores busy)")
    nz = res.get("noise")
    if nz:
        st = nz.get("steal", {})
        L.append(f"- noise during the {nz['runs']} kept runs, in cores of {m['nproc']}: other processes "
                 f"(/proc/stat minus Envoy, processor, mocks and wrk) median {nz['median']:.2f}, p90 "
                 f"{nz['p90']:.2f}, max {nz['max']:.2f}; hypervisor steal median "
                 f"{st.get('median', 0):.2f}, p90 {st.get('p90', 0):.2f}, max {st.get('max', 0):.2f}. "
                 f"Runs disturbed by more than {DISTURBED} cores were repeated ({nz.get('retried', 0)} "
                 "repeats; the least disturbed attempt is kept). This VM shares its host and the "
                 "machine with other engineers, so single numbers carry noise")
    L.append(f"- Envoy {m['envoy']}, one worker (`--concurrency 1`), V8 runtime")
    L.append(f"- module `ai_gateway_filter.wasm`: {m['module_bytes']:,} bytes, "
             f"`opt-level = {m['opt_level']}`, {m['rustc']}; commit {m['git']}")
    cr = m.get("crates", {})
    L.append(f"- floor `floor_filter.wasm` (bench/floor, proxy-wasm {cr.get('proxy-wasm', '?')}): "
             f"{m['floor_bytes']:,} bytes, same release profile")
    if m.get("native_bytes"):
        L.append(f"- native module `libai_gateway_native.so` (native/, x86-64 shared object, Envoy 1.40 "
                 f"dynamic module ABI): {m['native_bytes']:,} bytes, same release profile and commit")
    L.append(f"- processor `ext-proc-noop` (bench/ext-proc): envoy-types {cr.get('envoy-types', '?')}, "
             f"tonic {cr.get('tonic', '?')}, prost {cr.get('prost', '?')}, h2 {cr.get('h2', '?')}, "
             f"tokio {cr.get('tokio', '?')} (one-thread runtime)")
    L.append(f"- load generator {m['wrk']} (1 thread), Python {m['python']} for the TTFT client")
    L.append("- mock backends: `mock-llm --threads 1 --ttft-ms 0` (3 processes, shared by every "
             "Envoy; ⚠ marks a run where one used over 70% of a core)")
    L.append("")
    L.append("## Setup")
    L.append("")
    L.append(f"{len(SETUPS)} Envoys run at the same time, rendered from `harness/envoy.template.yaml` by "
             "`harness/render.py`: same listener, routes, clusters and access-log configuration, "
             "and one difference, the filter before the router:")
    L.append("")
    L.append("- **plain Envoy**: no filter (`--no-filter`).")
    L.append("- **floor**: `bench/floor`, a Proxy-Wasm filter that, on the request body, answers "
             "`Pause` until `end_of_stream` and then reads the whole buffer once, and does nothing "
             "else; loaded exactly like the filter (`--wasm floor_filter.wasm`: same V8 runtime, "
             "same filter and VM configuration, same plugin configuration, which it ignores). "
             "Plain → floor is the price of a Wasm filter that reads the body; floor → filter is "
             "what the filter's own work costs.")
    L.append("- **ai-gateway-filter**: `filters/demo.json` with quotas raised so they never refuse "
             "(buckets are still charged and settled on every request; `bench/out/bench-config.json`).")
    L.append("- **ai-gateway-filter, native module**: the same core and the same plugin configuration "
             "as the native Envoy dynamic module (`--host native`: "
             "`envoy.filters.http.dynamic_modules` with `libai_gateway_native.so` where the Wasm "
             "filter was; Envoy loads a copy from `bench/out/native/` through "
             "`ENVOY_DYNAMIC_MODULES_SEARCH_PATH`). No Wasm runtime: filter → native is what the "
             "Proxy-Wasm host costs this filter. The module's tick thread runs inside Envoy and "
             "its CPU is counted with Envoy's.")
    L.append("- **ext_proc**: Envoy's `envoy.filters.http.ext_proc` in the filter's place "
             "(`--ext-proc-port`), calling `bench/ext-proc` (`ext-proc-noop`, one Tokio thread, on "
             "127.0.0.1) over gRPC/HTTP/2: request headers SEND, request body BUFFERED, response "
             f"headers SEND, response body {EXT_PROC_RESPONSE_BODY_MODE}, trailers SKIP, "
             "`failure_mode_allow: false`. The processor answers every message with CONTINUE and "
             "no mutation. This is the architecture of Envoy AI Gateway with its logic at zero. "
             f"Response body {EXT_PROC_RESPONSE_BODY_MODE}: each response chunk goes to the "
             "processor as it arrives and is forwarded when answered, so streams still stream "
             "(each chunk waits one round trip), and the processor sees every response byte, as "
             "the Wasm filter does to count token usage. The processor's CPU is measured like "
             "Envoy's and added to it.")
    L.append("")
    L.append(f"Every request carries the same bytes to all {len(SETUPS)}: `Host: {HOST}`, "
             f"`Authorization: Bearer {KEY}`; only the filter checks them. Runs are grouped in "
             f"rounds of one run per setup, in an order that rotates and reverses from round to "
             f"round: {s['reps']} rounds of {s['seconds']} s runs ({s['conns']} connections) per "
             f"case, and {s['latency_reps']} rounds of {s['latency_seconds']} s one-connection "
             "runs. Tables show the run with the median throughput and the median CPU per request. "
             "CPU is read from `/proc/<pid>/task/*/schedstat` around each run (every thread of "
             "Envoy, and of the processor) and is less sensitive to other load on the machine than "
             "requests per second.")
    L.append("")
    L.append("Commands (ports vary per run):")
    L.append("")
    L.append("```")
    L.append("make bench        # = wrk/valgrind/matplotlib install, build (module, mock, bench/ crates), then:")
    L.append(f"{res['command']}")
    L.append(f"wrk -t1 -c{s['conns']} -d{s['seconds']}s --timeout 10s -s bench/wrk.lua http://127.0.0.1:PORT/v1/chat/completions   # throughput")
    L.append(f"wrk -t1 -c1 -d{s['latency_seconds']}s --timeout 10s -s bench/wrk.lua http://127.0.0.1:PORT/v1/chat/completions    # latency")
    L.append("   # env: BENCH_METHOD=POST BENCH_BODY=bench/out/bodies/chat_1024.json "
             f"BENCH_HOST={HOST} BENCH_KEY={KEY}")
    L.append("target/bench/release/ext-proc-noop --listen 127.0.0.1:PORT --threads 1")
    L.append(f"bench/ttft.py (TtftClient): {s['ttft_samples']} streams per target, interleaved in 10 rounds")
    L.append("```")
    L.append("")

    L.append(f"## All setups ({s['conns']} connections, one Envoy worker)")
    L.append("")
    L += main_table(res)
    L.append("")
    L.append("**CPU/req** is Envoy's CPU per request, plus the processor's on the ext_proc rows. "
             "CPU ratio = that of plain (or of the floor) ÷ that of the row: the throughput ratio "
             "one saturated worker (plus, for ext_proc, a processor core) would reach; the rps "
             "ratios also carry the noise of the machine. p50 / p99 are under "
             f"{s['conns']} connections (queueing included).")
    mt = res.get("meter")
    if mt is None:
        L.append("Meter: meter not built (`target/debug/meter` absent; its counts would stand "
                 "beside the filter rows).")
    elif "error" in mt:
        L.append(f"Meter: `target/debug/meter --json` failed: {mt['error']}")
    else:
        L.append(f"Meter (`{mt.get('command', 'target/debug/meter --json')}`; exchanges "
                 f"{', '.join(f'{v} beside {k}' for k, v in METER_EXCHANGE.items())}, filter rows only; "
                 f"module {mt.get('module_bytes', 0):,} bytes): host calls per exchange / Wasm "
                 "instructions executed (exact) / bytes moved by memory.copy and memory.fill "
                 "(see meter/README.md).")
    L.append("")
    if res.get("errors"):
        L.append("**Runs with errors** (socket errors or non-2xx answers): " + "; ".join(res["errors"]))
    else:
        L.append("Every run: no socket errors, no non-2xx answers (wrk's error counters).")
    L.append("")
    if any(r["mock_cpu_max"] > 0.7 for row in res["throughput"].values() for r in row.values()):
        L.append("⚠ = the busiest mock backend used over 70% of a core: for large bodies the mock "
                 "(which parses every body to count prompt words) competes with Envoy for the two "
                 "cores and caps the rps of the cheaper setups, so that row's rps ratios flatter the "
                 "dearer ones; its CPU ratios do not depend on who the bottleneck is.")
        L.append("")
    xc = res.get("ext_proc_check")
    if xc:
        fin = xc.get("final") or {}
        proc = fin.get("processor") or {}
        L.append(f"The ext_proc rows went through the processor: before measuring, {xc['sanity']['requests']} "
                 f"requests made {xc['sanity']['envoy_streams_started']} ext_proc streams in Envoy and "
                 f"the processor answered {xc['sanity']['processor']}. Over the measured runs wrk "
                 f"completed {fin.get('wrk_requests', 0):,} requests through that Envoy; Envoy counted "
                 f"{fin.get('envoy', {}).get('streams_started', 0):,} ext_proc streams and "
                 f"{fin.get('envoy', {}).get('stream_msgs_sent', 0):,} messages sent "
                 f"({fin.get('envoy', {}).get('streams_failed', 0)} streams failed, "
                 f"{fin.get('envoy', {}).get('message_timeouts', 0)} message timeouts) and the processor "
                 f"{proc.get('streams', 0):,} streams with {proc.get('request_body', 0):,} request "
                 f"bodies and {proc.get('response_body', 0):,} response body chunks "
                 "(streams ≥ requests: wrk's last in-flight requests are cut off).")
        L.append("")

    L.append("## Per setup: streaming, one connection, body size")
    L.append("")
    L += summary_table(res)
    L.append("")
    L.append("TTFT: a client (`bench/ttft.py`) sends a streaming chat request (1 KB body, "
             "`max_tokens: 2`) over a kept-alive connection and timestamps the first chunk that "
             "carries content; these mocks run `--ttft-ms 0 --tokens-per-second 1000`, so the "
             "first token is written alone; a fresh set of Envoys serves them. "
             f"{s['ttft_samples']} streams per target, interleaved in 10 rounds"
             + (f"; straight to the mock: p50 {fmt_us(res['ttft']['direct'][0]['p50_us'])}, p99 "
                f"{fmt_us(res['ttft']['direct'][0]['p99_us'])}." if res.get("ttft") else "."))
    L.append("One connection: wrk with one connection, each request waits for the previous one "
             "(an idle gateway, no queueing); p50 is the number to read, p99 over a few seconds on "
             "a shared machine is mostly scheduling noise.")
    L.append("CPU per extra KB: least-squares fit of CPU/req (Envoy + processor) over the "
             "1, 4, 16, 64 and 256 KB rows above, `fixed + per_KB × KB`.")
    L.append("")
    L.append(f"![CPU and latency vs body size]({os.path.basename(PLOT_PNG)})")
    L.append("")

    sweep = res.get("latency_sweep")
    if sweep:
        L.append("### One connection, every body size (`--latency-sweep`)")
        L.append("")
        L.append("| case | " + " | ".join(f"{lbl} p50 / p99" for _, lbl in SETUPS) + " |")
        L.append("|---|" + "---|" * len(SETUPS))
        for key, label in res["latency_rows"]:
            row = res["latency"].get(key)
            if row:
                L.append(f"| {label} | " + " | ".join(
                    f"{fmt_us(row[n]['latency_us']['p50'])} / {fmt_us(row[n]['latency_us']['p99'])}"
                    if n in row else "–" for n, _ in SETUPS) + " |")
        L.append("")

    busy = res.get("busy_fit")
    if busy:
        L.append(f"The filter's own busy time (`ai_gateway_filter_duration_us`, its request and "
                 f"response callbacks, host calls included, `on_log` not) over the same rows: "
                 f"{busy['a']:.1f} µs + {busy['b']:.3f} µs/KB, R² = {busy['r2']:.4f}.")
        nb = res.get("native_busy_fit")
        if nb:
            L.append(f"The same histogram from the native module (exported by Envoy as "
                     f"`envoy_dynamicmodulescustom_ai_gateway_filter_duration_us`, its callbacks, "
                     f"ABI calls included): {nb['a']:.1f} µs + {nb['b']:.3f} µs/KB, R² = {nb['r2']:.4f}.")
        L.append("")

    ab_rows = res.get("ablation")
    pf = res.get("perf")
    cg = res.get("callgrind")
    if ab_rows or pf or cg:
        L.append("## Where the time goes")
        L.append("")
    if ab_rows:
        L.append("### Ablation: Envoy CPU per 1 KB chat request")
        L.append("")
        L.append(f"{len(ab_rows)} Envoys side by side (same mocks), each with one feature removed; each "
                 f"measured {s['ablation_reps']} times ({s['conns']} connections, {s['ablation_seconds']} s) "
                 "in rotating order; medians, and every run's CPU per request in brackets. "
                 "Differences under ~20 µs are within the noise of this machine.")
        L.append("")
        L.append("| configuration | rps | Envoy CPU/request | runs | vs. full filter |")
        L.append("|---|---:|---:|---|---:|")
        full = next((r for r in ab_rows if r["name"] == "filter (as benchmarked)"), None)
        for r in ab_rows:
            d = r["cpu_us"] - full["cpu_us"] if full else 0
            L.append(f"| {r['name']} | {r['rps']:,.0f} | {r['cpu_us']:.0f} µs | "
                     f"{', '.join(f'{x:.0f}' for x in r.get('cpu_all', []))} | {d:+.0f} µs |")
        L.append("")
    if pf:
        L.append("### perf: Envoy's CPU by shared object, 1 KB chat")
        L.append("")
        L.append("`perf record -e cpu-clock -F 999 -p <envoy pid>` during one throughput run per setup "
                 "(the Envoy binary is stripped, so only the split by shared object is meaningful; "
                 "V8's runtime, the Proxy-Wasm host functions, the dynamic module ABI's callbacks and "
                 "the gRPC client are inside `envoy`; the native module's own code is "
                 "`libai_gateway_native.so`). The processor's own CPU is not in this table.")
        L.append("")
        names = sorted({k for side in pf.values() for k in side["shares"]},
                       key=lambda k: -pf.get("filter", {"shares": {}})["shares"].get(k, 0))
        setups = [n for n, _ in SETUPS if n in pf]
        L.append("| shared object | " + " | ".join(f"{LABEL[n]} µs/req" for n in setups) + " |")
        L.append("|---|" + "---:|" * len(setups))
        for k in names:
            vals = [pf[n]["shares"].get(k, 0) / 100 * pf[n]["run"]["envoy_cpu_us_per_req"] for n in setups]
            if max(vals) < 0.5:
                continue
            L.append(f"| {k} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
        L.append("")
    if cg:
        L.append("### callgrind: the core natively, per request")
        L.append("")
        L.append("`bench/profile` drives one request through the functional core exactly as "
                 "`src/http.rs` does through `lifecycle::Request` (identity, route, body parse, fingerprint, quota reserve "
                 "on an in-memory store, usage scan of the response, records, settle, record JSON, "
                 "metric names), natively (x86-64, same release profile), without any host call. "
                 "Valgrind's CPU hides the SHA extensions, so SHA-256 runs the portable code, "
                 "as it does in Wasm.")
        L.append("")
        L.append(f"`{cg['command']}`")
        L.append("")
        L.append("| request | instructions per request |")
        L.append("|---|---:|")
        for r in cg["rows"]:
            L.append(f"| {r['kind']} {r['size'] // KB} KB | {r['instructions']:,.0f} |")
        L.append("")
        rows = [r for r in cg["rows"] if r["kind"] == "chat"]
        if len(rows) > 1:
            f = fit([r["size"] / KB for r in rows], [r["instructions"] for r in rows])
            L.append(f"Fit: {f['a']:,.0f} + {f['b']:,.0f} instructions/KB, R² = {f['r2']:.4f}.")
            L.append("")
        for size, top in sorted(cg["top"].items(), key=lambda kv: int(kv[0])):
            L.append(f"Top functions by self cost per request, chat {int(size) // KB} KB (difference "
                     "of the 1+N and 1 iteration runs, inlined code counted in its function):")
            L.append("")
            L.append("| instructions | share | function |")
            L.append("|---:|---:|---|")
            for r in top:
                fn = r["function"].replace("|", "\\|")
                L.append(f"| {r['ir']:,.0f} | {r['share']:.1f}% | `{fn}` |")
            L.append("")
    if res.get("analysis"):
        L.append("### Reading")
        L.append("")
        L += res["analysis"]
        L.append("")
    opt = res.get("opt_level")
    if opt:
        L.append("## opt-level \"s\" vs 3 (measured once, `--opt-level-study`)")
        L.append("")
        L.append(f"Measured {opt['date']}: same bench, 1 KB chat, {opt['conns']} connections, "
                 f"{opt['reps']} alternating runs of {opt['seconds']} s each.")
        L.append("")
        L.append("| opt-level | module bytes | rps (median) | Envoy CPU/request | filter busy |")
        L.append("|---|---:|---:|---:|---:|")
        for r in opt["rows"]:
            L.append(f"| {r['opt_level']} | {r['bytes']:,} | {r['rps']:,.0f} | {r['cpu_us']:.0f} µs | "
                     f"{fmt_us(r.get('busy'))} |")
        L.append("")
        if opt.get("note"):
            L.append(opt["note"])
            L.append("")
    L.append("## Targets")
    L.append("")
    L += res["targets"]
    L.append("")
    return "\n".join(L)


def fit(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = sxy / sxx if sxx else 0.0
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys))
    return {"a": a, "b": b, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0}


def targets(res):
    out = []
    th = res["throughput"].get("chat_1k")
    if th:
        r = ratio(th["filter"]["rps"], th["plain"]["rps"])
        c = ratio(th["plain"]["cpu_us_per_req"], th["filter"]["cpu_us_per_req"])
        ok = "met" if r >= 0.85 else "**not met**"
        out.append(f"- 1 KB chat throughput ratio ≥ 0.85 on one worker: measured {r:.2f} "
                   f"(CPU-per-request ratio {c:.2f}; the floor alone: "
                   f"{ratio(th['plain']['cpu_us_per_req'], th['floor']['cpu_us_per_req']):.2f}) — {ok}.")
    lat = res["latency"].get("chat_1k")
    if lat:
        added = lat["filter"]["latency_us"]["p50"] - lat["plain"]["latency_us"]["p50"]
        ok = "met" if added < 50 else "**not met**"
        out.append(f"- added p50 latency < 50 µs (1 KB chat, one connection): measured {added:.0f} µs — {ok}.")
    t = res.get("ttft")
    if t:
        added = t["filter"][0]["p99_us"] - t["plain"][0]["p99_us"]
        ok = "met" if added < 1000 else "**not met**"
        out.append(f"- TTFT added < 1 ms at p99: measured {added:.0f} µs — {ok}.")
    f = res.get("busy_fit")
    if f:
        ok = "met" if f["r2"] >= 0.98 else "**not met**"
        out.append(f"- per-request cost linear in body size (filter busy time, 1–256 KB): fixed "
                   f"{f['a']:.0f} µs + {f['b']:.2f} µs/KB, R² = {f['r2']:.4f} — {ok}.")
    return out + native_targets(res)


# Issue 15's targets for the native module (reported, never asserted).
NATIVE_CPU_RATIO = 0.95
NATIVE_ADDED_P50_US = 15.0
NATIVE_ADDED_PER_KB_US = 0.5


def native_targets(res):
    """Issue 15: "1 KB chat: CPU per request ≥ 0.95 of plain Envoy; added p50 ≤ 15 µs;
    per-KB added cost ≤ 0.5 µs", each measured on the native row of this same run."""
    th = res["throughput"].get("chat_1k") or {}
    lat = res["latency"].get("chat_1k") or {}
    fits = res.get("cpu_fit") or {}
    if "native" not in th:
        return []
    verdict = lambda ok: "pass" if ok else "**fail**"  # noqa: E731
    out = ["", "Issue 15, the native module (the `ai-gateway-filter, native module` rows; reported, "
           "not asserted):", ""]
    pc, nc = th["plain"]["cpu_us_per_req"], th["native"]["cpu_us_per_req"]
    c = ratio(pc, nc)
    out.append(f"- 1 KB chat CPU per request ≥ {NATIVE_CPU_RATIO} of plain Envoy, read as CPU ratio vs "
               f"plain ≥ {NATIVE_CPU_RATIO}: plain {pc:.1f} µs ÷ native {nc:.1f} µs = {c:.3f} (the bound: "
               f"native ≤ plain ÷ {NATIVE_CPU_RATIO} = {pc / NATIVE_CPU_RATIO:.1f} µs; rps ratio in the "
               f"same rounds {ratio(th['native']['rps'], th['plain']['rps']):.2f}) — "
               f"{verdict(c >= NATIVE_CPU_RATIO)}.")
    if "native" in lat:
        n50, p50 = lat["native"]["latency_us"]["p50"], lat["plain"]["latency_us"]["p50"]
        added = n50 - p50
        out.append(f"- added p50 ≤ {NATIVE_ADDED_P50_US:.0f} µs (1 KB chat, one connection, native p50 − "
                   f"plain p50): {n50:.0f} − {p50:.0f} = {added:.0f} µs — "
                   f"{verdict(added <= NATIVE_ADDED_P50_US)}.")
    if "native" in fits and "plain" in fits:
        nb, pb = fits["native"]["b"], fits["plain"]["b"]
        out.append(f"- per-KB added cost ≤ {NATIVE_ADDED_PER_KB_US} µs (slope of the CPU/req fit over "
                   f"1–256 KB, native − plain): {nb:.3f} − {pb:.3f} = {nb - pb:.3f} µs/KB — "
                   f"{verdict(nb - pb <= NATIVE_ADDED_PER_KB_US)}.")
    out += ["", "How the first target is read. A CPU cost \"≥ 0.95 of plain\" taken literally is "
            "met by any filter (each costs more than plain Envoy); the issue means efficiency, so it "
            "is read as this table's CPU ratio vs plain: plain's CPU per request ÷ native's ≥ 0.95. "
            "That is, one saturated worker with the native filter would serve at least 95% of the "
            "requests per second plain Envoy serves; equivalently native's CPU per request ≤ "
            "plain's ÷ 0.95, at most about 5.3% above plain. CPU is Envoy's whole process (every "
            "thread, the module's tick thread included) per request on the 1 KB chat row at "
            f"{res['settings']['conns']} connections. Added p50 comes from the one-connection run "
            "(no queueing); the per-KB cost is the difference of the two fits' slopes in the "
            "per-setup table."]
    return out


# -- main ------------------------------------------------------------------------------

def start_setups(cfg, wasm, floor, native_dir, xp, mock_args=None):
    """The five Envoys (plain owns the mocks, the others share them), as Sides, in the
    order of SETUPS. `native_dir` holds the native module the `native` Envoy loads."""
    sides = []
    try:
        plain = BenchTopology(with_filter=False, concurrency=1, plugin_config=cfg, mock_args=mock_args,
                              host="wasm")
        plain.start()
        sides.append(Side("plain", plain))
        # (name, with_filter, host, render args, read the filter's busy-time histogram)
        variants = [
            ("floor", True, "wasm", ["--wasm", floor], False),
            ("filter", True, "wasm", ["--wasm", wasm], True),
            ("native", True, "native", [], True),
            ("ext_proc", False, "wasm", ["--ext-proc-port", str(xp.port),
                                         "--ext-proc-response-body-mode", EXT_PROC_RESPONSE_BODY_MODE], False),
        ]
        for name, with_filter, host, render_args, hist in variants:
            t = BenchTopology(with_filter=with_filter, concurrency=1, plugin_config=cfg,
                              share_mocks_from=plain, render_args=render_args, host=host,
                              native_dir=native_dir if host == "native" else None)
            t.start()
            sides.append(Side(name, t, hist=hist, proc=xp if name == "ext_proc" else None))
    except BaseException:
        stop_setups(sides)
        raise
    return sides


def stop_setups(sides):
    for s in reversed(sides):  # plain, which owns the mocks, last
        s.topo.stop()


def snapshot(src, name):
    """Benchmark a copy: others may rebuild target/ while this runs."""
    os.makedirs(OUT, exist_ok=True)
    dst = os.path.join(OUT, name)
    shutil.copyfile(src, dst)
    return dst


def snapshot_native(src):
    """A copy of the native module in a directory of its own (bench/out/native), which
    becomes the native Envoy's ENVOY_DYNAMIC_MODULES_SEARCH_PATH: Envoy loads
    lib<name>.so from there, not from target/release, which may be rebuilt meanwhile."""
    d = os.path.join(OUT, "native")
    os.makedirs(d, exist_ok=True)
    dst = os.path.join(d, os.path.basename(src))
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)  # never rewrite in place a shared object an Envoy may have mapped
    return d


def ablation(cfg, nf_topo, files, seconds, conns, reps=3):
    case = CHAT_1K
    variants = []
    variants.append(("no filter", False, cfg, False))
    variants.append(("no filter, no access logs", False, cfg, True))
    variants.append(("filter (as benchmarked)", True, cfg, False))
    c = copy.deepcopy(cfg)
    for t in c["tenants"]:
        t.pop("quota", None)
    variants.append(("filter, no quotas", True, c, False))
    c = copy.deepcopy(cfg)
    c["redaction"].pop("fingerprint_salt", None)
    variants.append(("filter, no prompt fingerprint (no salt)", True, c, False))
    c = copy.deepcopy(cfg)
    c["routing"] = {"model_header": False, "hold_headers_for_body": False}
    variants.append(("filter, no model routing (no header hold, no route-cache clear)", True, c, False))
    variants.append(("filter, no access logs", True, cfg, True))
    c = copy.deepcopy(cfg)
    c["filter_state"] = "full"
    variants.append(("filter, `filter_state: full` (~23 keys instead of the default 4)", True, c, False))
    c = copy.deepcopy(cfg)
    for t in c["tenants"]:
        t.pop("quota", None)
    c["redaction"].pop("fingerprint_salt", None)
    c["routing"] = {"model_header": False, "hold_headers_for_body": False}
    variants.append(("filter, all four off", True, c, True))
    # All variants run side by side (idle while another is measured); each is measured
    # `reps` times in rotating order and the median is kept, so noise hits all alike.
    tops = []
    try:
        for name, with_filter, vcfg, no_logs in variants:
            topo = BenchTopology(with_filter=with_filter, concurrency=1, plugin_config=vcfg,
                                 share_mocks_from=nf_topo, no_access_logs=no_logs, host="wasm")
            topo.start()
            tops.append(Side(name, topo, with_filter))
        for side in tops:
            measure(side, nf_topo.mocks, case, files, 1, conns)
        runs = {side.name: [] for side in tops}
        for i in range(reps):
            order = tops[i % len(tops):] + tops[:i % len(tops)]
            for side in (order if i % 2 == 0 else list(reversed(order))):
                runs[side.name].append(measure(side, nf_topo.mocks, case, files, seconds, conns))
    finally:
        for side in tops:
            side.topo.stop()
    rows = []
    for side in tops:
        m = median_run(runs[side.name])
        rows.append({"name": side.name, "rps": statistics.median(r["rps"] for r in runs[side.name]),
                     "cpu_us": m["envoy_cpu_us_per_req"], "cpu_all": m["cpu_us_all"],
                     "busy": m.get("filter_busy_us_mean")})
        log(f"  ablation {side.name}: {rows[-1]['rps']:,.0f} rps, CPU/request {m['cpu_us_all']} µs")
    return rows


def measure_ttft(cfg, files, samples, wasm, floor, native_dir, xp):
    """TTFT direct to a mock and through each of the five setups. Their own mocks pace
    tokens (1000/s, TTFT 0 ms), so the first content chunk is a write of its own and the
    client times exactly that chunk, not the whole stream."""
    paced = {"*": ["--ttft-ms", "0", "--tokens-per-second", "1000"]}
    sides = start_setups(cfg, wasm, floor, native_dir, xp, mock_args=paced)
    try:
        with open(files[("stream_ttft", 1 * KB)], "rb") as fh:
            body = fh.read()
        clients = {"direct": ttft.TtftClient(f"http://127.0.0.1:{sides[0].topo.mock_base_port}",
                                             HOST, KEY, body)}
        for s in sides:
            clients[s.name] = ttft.TtftClient(s.topo.base_url, HOST, KEY, body)
        out = ttft.measure(clients, samples)
    finally:
        stop_setups(sides)
    log("TTFT p50/p99 µs: " + ", ".join(
        f"{k} {v[0]['p50_us']:.0f}/{v[0]['p99_us']:.0f}" for k, v in out.items()))
    return out


def opt_level_study(args, cfg, files):
    """Build the module at opt-level "s" into its own target dir and compare it with the
    current build on the 1 KB chat row. Writes bench/opt_level.json (rendered by make bench)."""
    os.makedirs(OUT, exist_ok=True)
    modules = []
    for level in ["3", "s"]:
        # Both from the same sources, each in its own target dir (target/ may be in use).
        tdir = os.path.join(ROOT, "target", f"bench-opt-{level}")
        env = dict(os.environ, CARGO_TARGET_DIR=tdir, CARGO_PROFILE_RELEASE_OPT_LEVEL=level)
        subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1", "-p",
                        "ai-gateway-filter"], cwd=ROOT, env=env, check=True)
        path = os.path.join(OUT, f"ai_gateway_filter.opt-{level}.wasm")
        shutil.copyfile(os.path.join(tdir, "wasm32-wasip1", "release", "ai_gateway_filter.wasm"), path)
        modules.append((level if level != "s" else '"s"', path))
    case = CHAT_1K
    nf = BenchTopology(with_filter=False, concurrency=1, plugin_config=cfg, host="wasm")
    nf.start()
    runs = {name: [] for name, _ in modules}
    tops = []
    try:
        for name, path in modules:
            launcher.WASM = path
            t = BenchTopology(with_filter=True, concurrency=1, plugin_config=cfg, share_mocks_from=nf,
                              host="wasm")
            t.start()
            tops.append((name, t))
            measure(Side(name, t, True), nf.mocks, case, files, 1, args.conns)
        for i in range(args.reps * 2):
            order = tops if i % 2 == 0 else list(reversed(tops))
            for name, t in order:
                runs[name].append(measure(Side(name, t, True), nf.mocks, case, files, args.seconds, args.conns))
    finally:
        for _, t in tops:
            t.stop()
        nf.stop()
    rows = []
    for name, path in modules:
        m = median_run(runs[name])
        rows.append({"opt_level": name, "bytes": os.path.getsize(path), "rps": m["rps"],
                     "cpu_us": m["envoy_cpu_us_per_req"], "busy": m.get("filter_busy_us_mean")})
        log(f"opt-level {name}: {os.path.getsize(path):,} bytes, {m['rps']:,.0f} rps, "
            f"{m['envoy_cpu_us_per_req']:.0f} µs CPU/request")
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "conns": args.conns,
           "seconds": args.seconds, "reps": args.reps * 2, "rows": rows}
    if os.path.exists(OPT_LEVEL_JSON):
        with open(OPT_LEVEL_JSON) as f:
            out["note"] = json.load(f).get("note", "")
    with open(OPT_LEVEL_JSON, "w") as f:
        json.dump(out, f, indent=1)
    log(f"wrote {os.path.relpath(OPT_LEVEL_JSON, ROOT)}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=5, help="per throughput run")
    p.add_argument("--latency-seconds", type=int, default=3, help="per one-connection run")
    p.add_argument("--reps", type=int, default=3, help="rounds of throughput runs per case")
    p.add_argument("--latency-reps", type=int, default=3, help="rounds of one-connection runs")
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--ttft-samples", type=int, default=2000)
    p.add_argument("--ablation-seconds", type=int, default=3)
    p.add_argument("--ablation-reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="1 s runs, no ablation/perf/callgrind (smoke test)")
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument("--no-perf", action="store_true")
    p.add_argument("--perf", action="store_true", help="run the perf split even with --quick")
    p.add_argument("--no-callgrind", action="store_true")
    p.add_argument("--latency-sweep", action="store_true",
                   help="one-connection latency at every body size and for the stream, not only 1 KB chat")
    p.add_argument("--wasm", default=launcher.WASM)
    p.add_argument("--floor-wasm", default=FLOOR_WASM)
    p.add_argument("--native", default=NATIVE_SO, help="the native module (libai_gateway_native.so)")
    p.add_argument("--opt-level-study", action="store_true")
    p.add_argument("--render-only", action="store_true",
                   help="rewrite results.md and the plot from bench/out/results.json (after "
                        "editing bench/analysis.md), without measuring")
    args = p.parse_args()
    if args.render_only:
        with open(results_json(False)) as f:
            res = json.load(f)
        if res.get("meter") is None:
            res["meter"] = run_meter(args.wasm)
            with open(results_json(False), "w") as f:
                json.dump(res, f, indent=1)
        return write_report(res, quick=False)
    if args.quick:
        args.seconds, args.latency_seconds, args.reps, args.ttft_samples = 1, 1, 1, 200
        args.latency_reps = 1
        args.no_ablation = args.no_callgrind = True
        args.no_perf = args.no_perf or not args.perf
    t_start = time.time()
    for tool, hint in [("wrk", "apt-get install wrk (make bench does)")]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: {hint}")
    files, cfg_path = write_inputs()
    cfg = bench_plugin_config()
    launcher.require(args.wasm, "the filter module", "run `make build`")
    if args.opt_level_study:
        launcher.WASM = args.wasm
        return opt_level_study(args, cfg, files)
    launcher.require(args.floor_wasm, "the floor module", "run `make bench` (builds bench/floor)")
    launcher.require(EXT_PROC_BIN, "the ext_proc processor", "run `make bench` (builds bench/ext-proc)")
    launcher.require(args.native, "the native filter module", "run `make native`")
    if os.path.basename(args.native) != os.path.basename(NATIVE_SO):
        raise SystemExit(f"--native: Envoy loads the module by name, so the file must be called "
                         f"{os.path.basename(NATIVE_SO)}")
    wasm = snapshot(args.wasm, "ai_gateway_filter.wasm")
    floor = snapshot(args.floor_wasm, "floor_filter.wasm")
    native_dir = snapshot_native(args.native)
    launcher.WASM = wasm
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(wasm, floor, os.path.join(native_dir, os.path.basename(NATIVE_SO))),
        "load_before": loadavg(),
        "settings": {"seconds": args.seconds, "latency_seconds": args.latency_seconds,
                     "reps": args.reps, "latency_reps": args.latency_reps, "conns": args.conns,
                     "ttft_samples": args.ttft_samples, "ablation_seconds": args.ablation_seconds,
                     "ablation_reps": args.ablation_reps},
        "command": "python -m bench.run_bench " + " ".join(sys.argv[1:]),
        "sizes": SIZES, "cases": [c[0] for c in CASES],
        "throughput": {}, "latency": {}, "phase_s": {},
    }
    log(f"machine: {res['machine']['nproc']} cores, {res['machine']['cpu']}; load {res['load_before'][0]:.2f}")
    if res["load_before"][0] > 1.0:
        log("note: the machine is busy (load > 1); the numbers will be noisy")

    def phase(name, t0):
        res["phase_s"][name] = round(time.time() - t0, 1)
        log(f"[{name}: {res['phase_s'][name]:.0f} s]")

    xp = ExtProc()
    xp.start()
    try:
        t0 = time.time()
        sides = start_setups(cfg, wasm, floor, native_dir, xp)
        plain = sides[0]
        try:
            mocks = plain.topo.mocks
            ep = next(s for s in sides if s.name == "ext_proc")
            check = {"sanity": sanity(sides, files, xp)}
            e0, c0, n0 = ext_proc_stats(ep.topo), xp.counts(), ep.requests
            log(f"{len(sides)} Envoys up: " + ", ".join(f"{s.name} :{s.topo.gateway_port}" for s in sides)
                + f"; processor :{xp.port}")
            phase("start", t0)

            t0 = time.time()
            for case in CASES:
                r = rounds(sides, mocks, case, files, args.seconds, args.conns, args.reps, warmup=1)
                res["throughput"][case[0]] = r
                log(f"{case[1]:40s} rps " + " / ".join(f"{r[n]['rps']:,.0f}" for n, _ in SETUPS)
                    + "; CPU/request " + " / ".join(f"{r[n]['cpu_us_per_req']:.0f}" for n, _ in SETUPS)
                    + " µs (" + " / ".join(n for n, _ in SETUPS) + ")")
            phase("throughput", t0)

            # One connection: latency without queueing.
            t0 = time.time()
            lat_cases = [("chat_1k", "chat, 1 KB body", CHAT_1K)]
            if args.latency_sweep:
                lat_cases += [(c[0], c[1], c) for c in CASES[1:]]
            res["latency_rows"] = [(k, label) for k, label, _ in lat_cases]
            res["latency_sweep"] = args.latency_sweep
            for key, label, case in lat_cases:
                r = rounds(sides, mocks, case, files, args.latency_seconds, 1, args.latency_reps, warmup=0)
                res["latency"][key] = r
                log(f"{label:40s} 1 connection p50 " + " / ".join(
                    f"{r[n]['latency_us']['p50']}" for n, _ in SETUPS) + " µs")
            phase("latency", t0)

            if not args.no_perf and perf_works():
                t0 = time.time()
                res["perf"] = {s.name: perf_split(s, mocks, CHAT_1K, files, args.seconds, args.conns)
                               for s in sides}
                log("perf: " + json.dumps({k: v["shares"] for k, v in res["perf"].items()}))
                phase("perf", t0)

            e1, c1 = ext_proc_stats(ep.topo), xp.counts()
            check["final"] = {"wrk_requests": ep.requests - n0,
                              "envoy": {k: e1.get(k, 0) - e0.get(k, 0) for k in e1},
                              "processor": {k: c1[k] - c0[k] for k in c1}}
            res["ext_proc_check"] = check
            log(f"ext_proc: wrk completed {check['final']['wrk_requests']:,} requests; Envoy "
                f"streams_started {check['final']['envoy'].get('streams_started', 0):,}; processor "
                f"{check['final']['processor']}")
            if check["final"]["processor"]["streams"] < check["final"]["wrk_requests"]:
                ERRORS.append("ext_proc: the processor saw fewer streams than wrk completed requests")
        finally:
            for s in sides[1:]:
                s.topo.stop()
        try:
            t0 = time.time()
            res["ttft"] = measure_ttft(cfg, files, args.ttft_samples, wasm, floor, native_dir, xp)
            phase("ttft", t0)
            if not args.no_ablation:
                t0 = time.time()
                res["ablation"] = ablation(cfg, plain.topo, files, args.ablation_seconds, args.conns,
                                           args.ablation_reps)
                phase("ablation", t0)
        finally:
            plain.topo.stop()
    finally:
        xp.stop()

    if not args.no_callgrind:
        t0 = time.time()
        res["callgrind"] = callgrind_profile(cfg_path, files)
        phase("callgrind", t0)
    res["meter"] = run_meter(wasm)
    if res["meter"] is None:
        log("meter not built (target/release/meter)")

    xs = [s / KB for s in SIZES]
    chat = [f"chat_{s // KB}k" for s in SIZES]
    res["cpu_fit"] = {n: fit(xs, [res["throughput"][c][n]["cpu_us_per_req"] for c in chat])
                      for n, _ in SETUPS}
    busy = [res["throughput"][c]["filter"].get("filter_busy_us_mean") for c in chat]
    if all(b is not None for b in busy):
        res["busy_fit"] = fit(xs, busy)
    busy = [res["throughput"][c]["native"].get("filter_busy_us_mean") for c in chat]
    if all(b is not None for b in busy):
        res["native_busy_fit"] = fit(xs, busy)
    res["load_after"] = loadavg()
    res["errors"] = ERRORS

    def dist(xs):
        if not xs:
            return {"median": 0, "p90": 0, "max": 0}
        return {"median": statistics.median(xs), "p90": sorted(xs)[int(0.9 * (len(xs) - 1))],
                "max": max(xs)}
    res["noise"] = dict(dist(NOISE), runs=len(NOISE), steal=dist(STEAL), retried=len(RETRIED))
    res["run_wall_s"] = {str(k): statistics.mean(v) for k, v in RUN_WALL.items()}
    res["targets"] = targets(res)
    res["elapsed_s"] = round(time.time() - t_start)
    with open(results_json(args.quick), "w") as f:
        json.dump(res, f, indent=1, default=str)
    write_report(res, quick=args.quick)


def results_json(quick):
    """Raw numbers; a --quick smoke run never overwrites the real run's."""
    return os.path.join(OUT, "results-quick.json" if quick else "results.json")


def write_report(res, quick):
    """results.md (with bench/analysis.md and bench/opt_level.json) and the plot."""
    res.pop("opt_level", None)
    res.pop("analysis", None)
    if os.path.exists(OPT_LEVEL_JSON):
        with open(OPT_LEVEL_JSON) as f:
            res["opt_level"] = json.load(f)
    analysis = os.path.join(HERE, "analysis.md")
    if os.path.exists(analysis):
        with open(analysis) as f:
            res["analysis"] = f.read().rstrip("\n").split("\n")
    md = render_markdown(res)
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in res.get("phase_s", {}).items())
    md += (f"\n_`bench/run_bench.py` took {res['elapsed_s']} s ({phases}), plus the build when "
           "`make bench` has to rebuild something._\n")
    md_path = RESULTS_MD if not quick else os.path.join(OUT, "results-quick.md")
    with open(md_path, "w") as f:
        f.write(md)
    png = PLOT_PNG if not quick else os.path.join(OUT, "latency_vs_body-quick.png")
    p = subprocess.run([sys.executable, os.path.join(HERE, "plot.py"), results_json(quick), png])
    if p.returncode != 0:
        log("plot failed (is matplotlib installed? `make bench` installs bench/requirements.txt)")
    print()
    print(md)


if __name__ == "__main__":
    main()
