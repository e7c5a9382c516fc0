#!/usr/bin/env python3
"""`make bench`: the cost of the filter, measured against the same Envoy without it.

Starts one set of mock backends and, side by side, two Envoys rendered from the same
bootstrap (envoy-demo/render.py; `--no-filter` drops only the Wasm filter), one worker
each. wrk drives both with the same request bytes (the key is sent to both), alternating
between them so that machine noise hits both alike. It reports requests per second,
latency percentiles, Envoy CPU per request and the filter's own busy time, TTFT
measured by a client, a latency-vs-body-size sweep, an ablation of the filter's features,
and where the time goes (perf per shared object, callgrind on the native core). Writes
bench/results.md, bench/latency_vs_body.png and the raw numbers in bench/out/.

    .venv/bin/python bench/run_bench.py [--seconds 5] [--reps 2] [--quick]
    .venv/bin/python bench/run_bench.py --opt-level-study   # once: opt-level "s" vs 3
"""
import argparse
import copy
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "envoy-demo"))
sys.path.insert(0, HERE)
import launcher  # noqa: E402
import ttft  # noqa: E402

OUT = os.path.join(HERE, "out")
RESULTS_MD = os.path.join(HERE, "results.md")
PLOT_PNG = os.path.join(HERE, "latency_vs_body.png")
OPT_LEVEL_JSON = os.path.join(HERE, "opt_level.json")
WRK_LUA = os.path.join(HERE, "wrk.lua")
PROFILE_BIN = os.path.join(ROOT, "target", "bench", "release", "core-profile")

HOST = "tenant-a.ai.example.com"
KEY = "sk-tenant-a-demo"
CHAT = "/v1/chat/completions"
MODELS = "/v1/models"
KB = 1024
SWEEP_SIZES = [1 * KB, 4 * KB, 16 * KB, 64 * KB, 256 * KB, 1024 * KB]

# (id, label, method, path, body size or None, stream)
CASES = [
    ("models", "GET /v1/models (key only)", "GET", MODELS, None, False),
    ("chat_1k", "chat completion, 1 KB body", "POST", CHAT, 1 * KB, False),
    ("chat_64k", "chat completion, 64 KB body", "POST", CHAT, 64 * KB, False),
    ("chat_1m", "chat completion, 1 MB body", "POST", CHAT, 1024 * KB, False),
    ("stream", "streaming chat, 1 KB body, 16 tokens", "POST", CHAT, 1 * KB, True),
]

# wrk runs that saw socket errors or non-2xx answers (reported in results.md).
ERRORS = []
# Other processes' CPU and hypervisor steal (cores) during each kept run.
NOISE = []
STEAL = []
# Runs disturbed by more than DISTURBED cores are repeated, at most RETRY_BUDGET times in all.
DISTURBED = 0.25
RETRY_BUDGET = 12
RETRIED = []

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
    for size in SWEEP_SIZES:
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
    """A Topology that can reuse another one's mock backends (both Envoys proxy to the
    same processes) and can drop the access logs (ablation only)."""

    def __init__(self, *args, share_mocks_from=None, no_access_logs=False, **kwargs):
        if share_mocks_from is not None:
            kwargs["mock_base_port"] = share_mocks_from.mock_base_port
        super().__init__(*args, **kwargs)
        self.share = share_mocks_from is not None
        self.no_access_logs = no_access_logs

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
    def __init__(self, name, topo, with_filter):
        self.name, self.topo, self.with_filter = name, topo, with_filter


def measure(side, mocks, case, files, seconds, conns):
    """One wrk run against `side`. A run disturbed by other work on the machine (other
    processes' CPU plus hypervisor steal above DISTURBED cores) is repeated, within a
    budget for the whole benchmark; the least disturbed attempt is kept."""
    global RETRY_BUDGET
    best = None
    while True:
        r = measure_once(side, mocks, case, files, seconds, conns)
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
    h0 = filter_hist(side.topo) if side.with_filter else None
    e0 = cpu_ns(side.topo.envoy.pid)
    m0 = {n: cpu_ns(p.pid) for n, p in mocks.items()}
    b0, s0 = machine_cpu()
    r = run_wrk(side.topo, method, path, body, seconds, conns)
    b1, s1 = machine_cpu()
    e1 = cpu_ns(side.topo.envoy.pid)
    m1 = {n: cpu_ns(p.pid) for n, p in mocks.items()}
    dur = r["duration_us"] / 1e6
    own = (e1 - e0) / 1e9 + sum(m1[n] - m0[n] for n in mocks) / 1e9 + r["wrk_cpu"] * dur
    # CPU used by everything else on the machine during the run (other engineers' builds,
    # this script itself): the noise indicator reported with the results.
    r["other_cpu"] = max(0.0, (b1 - b0) - own) / dur
    r["steal"] = (s1 - s0) / dur
    r["envoy_cpu"] = (e1 - e0) / 1e9 / dur
    r["envoy_cpu_us_per_req"] = (e1 - e0) / 1e3 / max(1, r["requests"])
    r["mock_cpu_max"] = max((m1[n] - m0[n]) / 1e9 / dur for n in mocks)
    if h0 is not None:
        h1 = filter_hist(side.topo)
        n = h1[1] - h0[1]
        r["filter_busy_us_mean"] = (h1[0] - h0[0]) / n if n > 0 else None
    r["command"] = " ".join(wrk_cmd(side.topo.base_url + path, seconds, conns))
    bad = {k: v for k, v in r["errors"].items() if v}
    if bad:
        ERRORS.append(f"{side.name} {case[0]} c={conns}: {bad} of {r['requests']} requests")
        log(f"  errors: {ERRORS[-1]}")
    return r


def median_run(runs):
    """The run with the median throughput (its latencies stay consistent with it)."""
    s = sorted(runs, key=lambda r: r["rps"])
    m = dict(s[len(s) // 2])
    m["rps_all"] = [round(r["rps"]) for r in runs]
    m["cpu_us_all"] = [round(r["envoy_cpu_us_per_req"], 1) for r in runs]
    m["envoy_cpu_us_per_req"] = statistics.median(r["envoy_cpu_us_per_req"] for r in runs)
    return m


def ab(sides, mocks, case, files, seconds, conns, reps, warmup):
    """Alternate no-filter and filter runs (ABBA...), median of `reps` each."""
    runs = {s.name: [] for s in sides}
    if warmup:
        for s in sides:
            measure(s, mocks, case, files, warmup, conns)
    for i in range(reps):
        order = sides if i % 2 == 0 else list(reversed(sides))
        for s in order:
            runs[s.name].append(measure(s, mocks, case, files, seconds, conns))
    return {name: median_run(rs) for name, rs in runs.items()}


def sanity(sides, files):
    """Every case answers 200 through both Envoys before anything is measured."""
    import urllib.request

    for s in sides:
        for case in CASES:
            _, label, method, path, size, stream = case
            body = None
            if size:
                with open(body_file(files, size, stream), "rb") as f:
                    body = f.read()
            req = urllib.request.Request(s.topo.base_url + path, data=body, method=method,
                                         headers={"Host": HOST, "Authorization": f"Bearer {KEY}",
                                                  "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
                if r.status != 200:
                    raise SystemExit(f"{s.name}: {label} answered {r.status}")


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

    def run(body, kind, iters, keep=None):
        cg = keep or os.path.join(OUT, "callgrind.tmp")
        p = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}",
                            PROFILE_BIN, cfg_path, body, kind, str(iters)],
                           capture_output=True, text=True)
        m = re.search(r"Collected : (\d+)", p.stderr)
        if p.returncode != 0 or not m:
            raise SystemExit(f"callgrind failed: {p.stderr[-2000:]}")
        return int(m.group(1))

    cases = [("chat", s) for s in SWEEP_SIZES] + [("stream", 1 * KB)]
    for kind, size in cases:
        body = files[(kind, size)]
        n = 20 if size <= 64 * KB else 4
        keep = size in (1 * KB, 1024 * KB) and kind == "chat"
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


def machine(wasm):
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
        "opt_level": opt_level(),
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
    return f"{v / 1000:.2f} ms" if v >= 10000 else f"{v:.0f} µs"


def render_markdown(res):
    m = res["machine"]
    s = res["settings"]
    L = []
    L.append("# Filter overhead: Envoy with vs. without ai-gateway-filter")
    L.append("")
    L.append(f"Generated by `make bench` (`bench/run_bench.py`) on {res['date']}. "
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
                 f"(/proc/stat minus Envoy, mocks and wrk) median {nz['median']:.2f}, p90 "
                 f"{nz['p90']:.2f}, max {nz['max']:.2f}; hypervisor steal median "
                 f"{st.get('median', 0):.2f}, p90 {st.get('p90', 0):.2f}, max {st.get('max', 0):.2f}. "
                 f"Runs disturbed by more than {DISTURBED} cores were repeated ({nz.get('retried', 0)} "
                 "repeats; the least disturbed attempt is kept). This VM shares its host and the "
                 "machine with other engineers, so single numbers carry noise")
    L.append(f"- Envoy {m['envoy']}, one worker (`--concurrency 1`), V8 runtime")
    L.append(f"- module `ai_gateway_filter.wasm`: {m['module_bytes']:,} bytes, "
             f"`opt-level = {m['opt_level']}`, {m['rustc']}; commit {m['git']}")
    L.append(f"- load generator {m['wrk']} (1 thread), Python {m['python']} for the TTFT client")
    L.append("- mock backends: `mock-llm --threads 1 --ttft-ms 0` (3 processes, shared by both "
             "Envoys; their CPU is measured in every run: last column of the throughput table)")
    L.append("")
    L.append("## Setup")
    L.append("")
    L.append("Both Envoys run at the same time, rendered from `envoy-demo/envoy.template.yaml` by "
             "`envoy-demo/launcher.py` (`Topology(with_filter=False/True, concurrency=1)`): same "
             "listener, routes, clusters and access-log configuration; the no-filter bootstrap only "
             "lacks the Wasm filter. The filter runs `filters/demo.json` with quotas raised so they "
             "never refuse (buckets are still charged and settled on every request; "
             "`bench/out/bench-config.json`). Every request carries the same bytes to both: "
             f"`Host: {HOST}`, `Authorization: Bearer {KEY}`; without the filter nobody checks them. "
             f"Runs alternate between the two Envoys (A B B A …): {s['reps']} throughput runs of "
             f"{s['seconds']} s per side ({s['conns']} connections) and {s.get('latency_reps', s['reps'])} "
             f"one-connection runs of {s['latency_seconds']} s; tables show the run with the median "
             "throughput, and the median Envoy CPU per request. That is read from "
             "`/proc/<pid>/task/*/schedstat` around each run (all Envoy threads) and is less "
             "sensitive to other load on the machine than requests per second.")
    L.append("")
    L.append("Commands (ports vary per run):")
    L.append("")
    L.append("```")
    L.append("make bench        # = wrk/valgrind/matplotlib install, build, then:")
    L.append(f"{res['command']}")
    L.append(f"wrk -t1 -c{s['conns']} -d{s['seconds']}s --timeout 10s -s bench/wrk.lua http://127.0.0.1:PORT/v1/chat/completions   # throughput")
    L.append(f"wrk -t1 -c1 -d{s['latency_seconds']}s --timeout 10s -s bench/wrk.lua http://127.0.0.1:PORT/v1/chat/completions    # latency")
    L.append("   # env: BENCH_METHOD=POST BENCH_BODY=bench/out/bodies/chat_1024.json "
             f"BENCH_HOST={HOST} BENCH_KEY={KEY}")
    L.append(f"bench/ttft.py (TtftClient): {s['ttft_samples']} streams per target, interleaved in 10 rounds")
    L.append("```")
    L.append("")

    L.append(f"## Throughput ({s['conns']} connections, one Envoy worker)")
    L.append("")
    L.append("| case | no filter rps | filter rps | **ratio** | no filter p50 / p99 | filter p50 / p99 | "
             "Envoy CPU/request no filter → filter | filter busy (own histogram) | mock CPU max |")
    L.append("|---|---:|---:|---:|---|---|---|---:|---:|")
    for cid, label, *_ in CASES:
        row = res["throughput"].get(cid)
        if not row:
            continue
        a, b = row["no_filter"], row["filter"]
        L.append(
            f"| {label} | {a['rps']:,.0f} | {b['rps']:,.0f} | **{ratio(b['rps'], a['rps']):.2f}** | "
            f"{fmt_us(a['latency_us']['p50'])} / {fmt_us(a['latency_us']['p99'])} | "
            f"{fmt_us(b['latency_us']['p50'])} / {fmt_us(b['latency_us']['p99'])} | "
            f"{a['envoy_cpu_us_per_req']:.0f} → {b['envoy_cpu_us_per_req']:.0f} µs "
            f"(ratio {ratio(a['envoy_cpu_us_per_req'], b['envoy_cpu_us_per_req']):.2f}) | "
            f"{fmt_us(b.get('filter_busy_us_mean'))} | {max(a['mock_cpu_max'], b['mock_cpu_max']):.0%}"
            f"{' ⚠' if max(a['mock_cpu_max'], b['mock_cpu_max']) > 0.7 else ''} |")
    L.append("")
    if res.get("errors"):
        L.append("**Runs with errors** (socket errors or non-2xx answers): " + "; ".join(res["errors"]))
    else:
        L.append("Every run: no socket errors, no non-2xx answers (wrk's error counters).")
    L.append("")
    if any(max(r["no_filter"]["mock_cpu_max"], r["filter"]["mock_cpu_max"]) > 0.7
           for r in res["throughput"].values()):
        L.append("⚠ = the busiest mock backend used over 70% of a core: for large bodies the mock "
                 "(which parses every body to count prompt words) competes with Envoy for the two "
                 "cores and caps the no-filter rps, so that row's rps ratio flatters the filter; its "
                 "CPU-per-request ratio does not depend on who the bottleneck is.")
        L.append("")
    L.append("The CPU ratio (no filter ÷ filter, Envoy CPU per request) is the throughput ratio one "
             "saturated worker would reach; the measured rps ratio also carries the noise of the "
             "machine. \"Filter busy\" is the mean of the filter's own `ai_gateway_filter_duration_us` "
             "histogram: the time spent inside its request and response callbacks, host calls "
             "included, `on_log` (records, quota settlement, metrics) not included.")
    L.append("")

    L.append("## Latency at one connection (no queueing)")
    L.append("")
    L.append("wrk with one connection: each request waits for the previous one, so this is the "
             "latency of an idle gateway; \"added\" is filter minus no filter. p99 over a few "
             "seconds on a shared 2-core machine is mostly scheduling noise (it can even come out "
             "negative); p50 is the number to read.")
    L.append("")
    L.append("| case | no filter p50 / p99 | filter p50 / p99 | **added p50** | added p99 | p50 ratio |")
    L.append("|---|---|---|---:|---:|---:|")
    for key, label in res["latency_rows"]:
        row = res["latency"].get(key)
        if not row:
            continue
        a, b = row["no_filter"]["latency_us"], row["filter"]["latency_us"]
        L.append(f"| {label} | {fmt_us(a['p50'])} / {fmt_us(a['p99'])} | {fmt_us(b['p50'])} / "
                 f"{fmt_us(b['p99'])} | **{fmt_us(b['p50'] - a['p50'])}** | "
                 f"{fmt_us(b['p99'] - a['p99'])} | {ratio(b['p50'], a['p50']):.2f} |")
    L.append("")

    t = res.get("ttft")
    if t:
        L.append("## Time to first token (streaming)")
        L.append("")
        L.append("A client (`bench/ttft.py`) sends a streaming chat request (1 KB body, "
                 "`max_tokens: 2`) over a kept-alive connection and timestamps the first chunk "
                 "that carries content (`tok0`). These mocks run `--ttft-ms 0 "
                 "--tokens-per-second 1000`, so the first token is written alone and the next one "
                 "1 ms later; a fresh pair of Envoys serves them. "
                 f"{s['ttft_samples']} streams per target, interleaved in 10 rounds.")
        L.append("")
        L.append("| target | TTFT p50 | TTFT p90 | TTFT p99 | full stream p50 |")
        L.append("|---|---:|---:|---:|---:|")
        for name, label in [("direct", "mock directly"), ("no_filter", "Envoy, no filter"),
                            ("filter", "Envoy + filter")]:
            f, tot = t[name]
            L.append(f"| {label} | {fmt_us(f['p50_us'])} | {fmt_us(f['p90_us'])} | "
                     f"{fmt_us(f['p99_us'])} | {fmt_us(tot['p50_us'])} |")
        fa, fb, fd = t["no_filter"][0], t["filter"][0], t["direct"][0]
        L.append("")
        L.append(f"TTFT added by the filter (filter − no filter): p50 **{fmt_us(fb['p50_us'] - fa['p50_us'])}**, "
                 f"p99 **{fmt_us(fb['p99_us'] - fa['p99_us'])}**; through the gateway vs. direct to the "
                 f"mock: p50 {fmt_us(fb['p50_us'] - fd['p50_us'])}, p99 {fmt_us(fb['p99_us'] - fd['p99_us'])}.")
        L.append("")

    sw = res.get("sweep_fit")
    if sw:
        L.append("## Cost against body size")
        L.append("")
        L.append(f"![latency vs body size]({os.path.basename(PLOT_PNG)})")
        L.append("")
        L.append("| body | no filter p50 | filter p50 | added p50 | Envoy CPU/request added | filter busy | native core instructions |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|")
        cg = {r["size"]: r["instructions"] for r in (res.get("callgrind") or {}).get("rows", []) if r["kind"] == "chat"}
        for p in res["sweep"]:
            ins = cg.get(p["size"])
            L.append(f"| {p['size'] // KB} KB | {fmt_us(p['nf_p50'])} | {fmt_us(p['f_p50'])} | "
                     f"{fmt_us(p['f_p50'] - p['nf_p50'])} | {fmt_us(p['cpu_added'])} | "
                     f"{fmt_us(p.get('busy'))} | {f'{ins:,.0f}' if ins else '–'} |")
        L.append("")
        L.append("Least-squares fits over the sweep, `cost = fixed + per_KB × KB` (R² close to 1 = linear):")
        L.append("")
        for name, fit in sw.items():
            L.append(f"- {name}: {fit['a']:.1f} µs + {fit['b']:.3f} µs/KB, R² = {fit['r2']:.4f}"
                     if fit.get("unit") != "ins" else
                     f"- {name}: {fit['a']:,.0f} + {fit['b']:,.0f} instructions/KB, R² = {fit['r2']:.4f}")
        L.append("")

    ab_rows = res.get("ablation")
    if ab_rows:
        L.append("## Where the time goes")
        L.append("")
        L.append(f"### Ablation: Envoy CPU per 1 KB chat request")
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
    pf = res.get("perf")
    if pf:
        L.append("### perf: Envoy's CPU by shared object, 1 KB chat")
        L.append("")
        L.append("`perf record -e cpu-clock -F 999 -p <envoy pid>` during one throughput run per side "
                 "(the Envoy binary is stripped, so only the split by shared object is meaningful; "
                 "V8's runtime and the Proxy-Wasm host functions are inside `envoy`).")
        L.append("")
        names = sorted({k for side in pf.values() for k in side["shares"]},
                       key=lambda k: -pf["filter"]["shares"].get(k, 0))
        L.append("| shared object | no filter µs/request | filter µs/request | added |")
        L.append("|---|---:|---:|---:|")
        for k in names:
            a = pf["no_filter"]["shares"].get(k, 0) / 100 * pf["no_filter"]["run"]["envoy_cpu_us_per_req"]
            b = pf["filter"]["shares"].get(k, 0) / 100 * pf["filter"]["run"]["envoy_cpu_us_per_req"]
            if a < 0.5 and b < 0.5:
                continue
            L.append(f"| {k} | {a:.1f} | {b:.1f} | {b - a:+.1f} |")
        L.append("")
    cg = res.get("callgrind")
    if cg:
        L.append("### callgrind: the core natively, per request")
        L.append("")
        L.append("`bench/profile` drives one request through the functional core exactly as "
                 "`src/host/http.rs` does (identity, route, body parse, fingerprint, quota reserve "
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
        for size, top in sorted(cg["top"].items()):
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
        r = ratio(th["filter"]["rps"], th["no_filter"]["rps"])
        c = ratio(th["no_filter"]["envoy_cpu_us_per_req"], th["filter"]["envoy_cpu_us_per_req"])
        ok = "met" if r >= 0.85 else "**not met**"
        out.append(f"- 1 KB chat throughput ratio ≥ 0.85 on one worker: measured {r:.2f} "
                   f"(CPU-per-request ratio {c:.2f}) — {ok}.")
    lat = res["latency"].get("chat_1024")
    if lat:
        added = lat["filter"]["latency_us"]["p50"] - lat["no_filter"]["latency_us"]["p50"]
        ok = "met" if added < 50 else "**not met**"
        out.append(f"- added p50 latency < 50 µs (1 KB chat, one connection): measured {added:.0f} µs — {ok}.")
    t = res.get("ttft")
    if t:
        added = t["filter"][0]["p99_us"] - t["no_filter"][0]["p99_us"]
        ok = "met" if added < 1000 else "**not met**"
        out.append(f"- TTFT added < 1 ms at p99: measured {added:.0f} µs — {ok}.")
    sw = res.get("sweep_fit")
    if sw:
        f = sw.get("filter busy (own histogram) vs body") or sw.get("added Envoy CPU/request vs body")
        if f:
            ok = "met" if f["r2"] >= 0.98 else "**not met**"
            out.append(f"- per-request cost linear in body size: fixed {f['a']:.0f} µs + "
                       f"{f['b']:.2f} µs/KB, R² = {f['r2']:.4f} — {ok}.")
    return out


# -- main ------------------------------------------------------------------------------

def start_sides(cfg, wasm, no_access_logs=False, variants=None):
    launcher.WASM = wasm
    nf = BenchTopology(with_filter=False, concurrency=1, plugin_config=cfg,
                       no_access_logs=no_access_logs)
    nf.start()
    try:
        f = BenchTopology(with_filter=True, concurrency=1, plugin_config=cfg, share_mocks_from=nf,
                          no_access_logs=no_access_logs)
        f.start()
    except BaseException:
        nf.stop()
        raise
    return nf, f


def snapshot_wasm(src):
    """Benchmark a copy: others may rebuild target/ while this runs."""
    os.makedirs(OUT, exist_ok=True)
    dst = os.path.join(OUT, "ai_gateway_filter.wasm")
    shutil.copyfile(src, dst)
    return dst


def ablation(cfg, nf_topo, files, seconds, conns, reps=3):
    case = CASES[1]
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
    c["filter_state"] = "records"
    variants.append(("filter, `filter_state: records` (4 keys instead of ~23)", True, c, False))
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
                                 share_mocks_from=nf_topo, no_access_logs=no_logs)
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


def measure_ttft(cfg, files, samples, main_nf):
    """TTFT direct to a mock, through Envoy without and with the filter. Its own mocks
    pace tokens (1000/s, TTFT 0 ms), so the first content chunk is a write of its own and
    the client times exactly that chunk, not the whole stream."""
    paced = {"*": ["--ttft-ms", "0", "--tokens-per-second", "1000"]}
    nf = BenchTopology(with_filter=False, concurrency=1, plugin_config=cfg, mock_args=paced)
    nf.start()
    try:
        f = BenchTopology(with_filter=True, concurrency=1, plugin_config=cfg, share_mocks_from=nf)
        f.start()
        try:
            with open(files[("stream_ttft", 1 * KB)], "rb") as fh:
                body = fh.read()
            clients = {
                "direct": ttft.TtftClient(f"http://127.0.0.1:{nf.mock_base_port}", HOST, KEY, body),
                "no_filter": ttft.TtftClient(nf.base_url, HOST, KEY, body),
                "filter": ttft.TtftClient(f.base_url, HOST, KEY, body),
            }
            out = ttft.measure(clients, samples)
        finally:
            f.stop()
    finally:
        nf.stop()
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
    case = CASES[1]
    nf = BenchTopology(with_filter=False, concurrency=1, plugin_config=cfg)
    nf.start()
    runs = {name: [] for name, _ in modules}
    tops = []
    try:
        for name, path in modules:
            launcher.WASM = path
            t = BenchTopology(with_filter=True, concurrency=1, plugin_config=cfg, share_mocks_from=nf)
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
    p.add_argument("--reps", type=int, default=3, help="alternating throughput runs per side")
    p.add_argument("--latency-reps", type=int, default=2, help="alternating one-connection runs per side")
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--ttft-samples", type=int, default=2000)
    p.add_argument("--ablation-seconds", type=int, default=3)
    p.add_argument("--ablation-reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="1 s runs, no ablation/perf/callgrind (smoke test)")
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument("--no-perf", action="store_true")
    p.add_argument("--no-callgrind", action="store_true")
    p.add_argument("--wasm", default=launcher.WASM)
    p.add_argument("--opt-level-study", action="store_true")
    p.add_argument("--render-only", action="store_true",
                   help="rewrite results.md and the plot from bench/out/results.json (after "
                        "editing bench/analysis.md), without measuring")
    args = p.parse_args()
    if args.render_only:
        with open(results_json(False)) as f:
            res = json.load(f)
        return write_report(res, quick=False)
    if args.quick:
        args.seconds, args.latency_seconds, args.reps, args.ttft_samples = 1, 1, 1, 200
        args.latency_reps = 1
        args.no_ablation = args.no_perf = args.no_callgrind = True
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
    wasm = snapshot_wasm(args.wasm)
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(wasm),
        "load_before": loadavg(),
        "settings": {"seconds": args.seconds, "latency_seconds": args.latency_seconds,
                     "reps": args.reps, "latency_reps": args.latency_reps, "conns": args.conns, "ttft_samples": args.ttft_samples,
                     "ablation_seconds": args.ablation_seconds, "ablation_reps": args.ablation_reps},
        "command": "python bench/run_bench.py " + " ".join(sys.argv[1:]),
        "throughput": {}, "latency": {}, "sweep": [],
    }
    log(f"machine: {res['machine']['nproc']} cores, {res['machine']['cpu']}; load {res['load_before'][0]:.2f}")
    if res["load_before"][0] > 1.0:
        log("note: the machine is busy (load > 1); the numbers will be noisy")
    nf_topo, f_topo = start_sides(cfg, wasm)
    try:
        sides = [Side("no_filter", nf_topo, False), Side("filter", f_topo, True)]
        mocks = nf_topo.mocks
        sanity(sides, files)
        log(f"both Envoys up (no filter :{nf_topo.gateway_port}, filter :{f_topo.gateway_port})")

        for case in CASES:
            r = ab(sides, mocks, case, files, args.seconds, args.conns, args.reps, warmup=1)
            res["throughput"][case[0]] = r
            log(f"{case[1]:40s} rps {r['no_filter']['rps']:8,.0f} → {r['filter']['rps']:8,.0f} "
                f"(ratio {ratio(r['filter']['rps'], r['no_filter']['rps']):.2f}); CPU/request "
                f"{r['no_filter']['envoy_cpu_us_per_req']:.0f} → {r['filter']['envoy_cpu_us_per_req']:.0f} µs")

        # One connection: latency without queueing, over the body-size sweep.
        lat_cases = [("models", "GET /v1/models (key only)", CASES[0])]
        for size in SWEEP_SIZES:
            lat_cases.append((f"chat_{size}", f"chat, {size // KB} KB body",
                              (f"chat_{size}", "", "POST", CHAT, size, False)))
        lat_cases.append(("stream", "streaming chat, 1 KB (full stream)", CASES[4]))
        res["latency_rows"] = [(k, label) for k, label, _ in lat_cases]
        for key, label, case in lat_cases:
            r = ab(sides, mocks, case, files, args.latency_seconds, 1, args.latency_reps, warmup=0)
            res["latency"][key] = r
            log(f"{label:40s} p50 {r['no_filter']['latency_us']['p50']} → {r['filter']['latency_us']['p50']} µs, "
                f"p99 {r['no_filter']['latency_us']['p99']} → {r['filter']['latency_us']['p99']} µs")
        for size in SWEEP_SIZES:
            r = res["latency"][f"chat_{size}"]
            res["sweep"].append({
                "size": size,
                "nf_p50": r["no_filter"]["latency_us"]["p50"], "f_p50": r["filter"]["latency_us"]["p50"],
                "nf_p99": r["no_filter"]["latency_us"]["p99"], "f_p99": r["filter"]["latency_us"]["p99"],
                "nf_cpu": r["no_filter"]["envoy_cpu_us_per_req"], "f_cpu": r["filter"]["envoy_cpu_us_per_req"],
                "cpu_added": r["filter"]["envoy_cpu_us_per_req"] - r["no_filter"]["envoy_cpu_us_per_req"],
                "busy": r["filter"].get("filter_busy_us_mean"),
            })

        if not args.no_perf and perf_works():
            res["perf"] = {s.name: perf_split(s, mocks, CASES[1], files, args.seconds, args.conns)
                           for s in sides}
            log("perf: " + json.dumps({k: v["shares"] for k, v in res["perf"].items()}))
    finally:
        f_topo.stop()
    try:
        res["ttft"] = measure_ttft(cfg, files, args.ttft_samples, nf_topo)
        if not args.no_ablation:
            res["ablation"] = ablation(cfg, nf_topo, files, args.ablation_seconds, args.conns,
                                       args.ablation_reps)
    finally:
        nf_topo.stop()

    if not args.no_callgrind:
        res["callgrind"] = callgrind_profile(cfg_path, files)

    xs = [p["size"] / KB for p in res["sweep"]]
    fits = {}
    fits["added p50 latency vs body"] = fit(xs, [p["f_p50"] - p["nf_p50"] for p in res["sweep"]])
    fits["added Envoy CPU/request vs body"] = fit(xs, [p["cpu_added"] for p in res["sweep"]])
    if all(p.get("busy") is not None for p in res["sweep"]):
        fits["filter busy (own histogram) vs body"] = fit(xs, [p["busy"] for p in res["sweep"]])
    if res.get("callgrind"):
        rows = [r for r in res["callgrind"]["rows"] if r["kind"] == "chat"]
        f = fit([r["size"] / KB for r in rows], [r["instructions"] for r in rows])
        f["unit"] = "ins"
        fits["native core instructions vs body"] = f
    res["sweep_fit"] = fits
    res["load_after"] = loadavg()
    res["errors"] = ERRORS
    def dist(xs):
        if not xs:
            return {"median": 0, "p90": 0, "max": 0}
        return {"median": statistics.median(xs), "p90": sorted(xs)[int(0.9 * (len(xs) - 1))],
                "max": max(xs)}
    res["noise"] = dict(dist(NOISE), runs=len(NOISE), steal=dist(STEAL), retried=len(RETRIED))
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
    md += (f"\n_`bench/run_bench.py` took {res['elapsed_s']} s (plus the build, when `make bench` "
           "has to rebuild the module)._\n")
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
