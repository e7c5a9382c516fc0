#!/usr/bin/env python3
"""`make soak`: a long mixed run against the real Envoy with the filter; does memory stay
flat, do Wasm VMs survive, and does every request leave exactly one gateway record?

Starts the demo topology (harness/launcher.py: the mock backends and Envoy 1.40 with the
built module) with a minimal access log, then drives it with
- wrk (bench/soak.lua), which cycles through non-stream chats, streams, a bad key (401),
  an unknown model and tenant-b's embeddings (its quota of 60 a minute answers most of
  them with 429) until it has sent SOAK_REQUESTS requests and had them all answered,
  each with a unique x-soak-id (the gateway replaces x-request-id with its own id);
- a raw-socket client in this process that aborts requests at a low rate: half of them
  mid-request-body (headers and half the body sent, then the connection closed) and half
  mid-stream (closed after the first bytes of a slowly paced stream).

Every few seconds it samples Envoy's RSS (/proc/<pid>/status VmRSS), each Wasm VM's
linear memory (the filter's `ai_gateway_wasm_memory_bytes{vm}`), and Envoy's Wasm runtime
stats (`wasm.envoy.wasm.runtime.v8.active` / `created`, the plugin's `vm_reload*`). At
the end it counts the access log's lines against the requests sent.

The access log has one line per request Envoy logged, `<x-soak-id> <status> <flags>
<r>`, where <r> is the first character of the gateway record (`{`) or `-` if the request
has none, so a missing record shows up as a line, not as a silent gap.

    .venv/bin/python -m bench.soak [--requests 1000000] [--max-seconds 840] [--quick]
        [--interval 5] [--concurrency 4] [--wrk-threads 2] [--connections 32]
        [--abort-rate 20]

Writes bench/soak.md and bench/soak_samples.csv (--quick: bench/out/soak-quick.*);
the access log and the wrk output stay in bench/out/soak/. Everything listens on
127.0.0.1, load is bounded by count and by time, and every process started is stopped.
"""
import argparse
import csv
import json
import os
import platform
import re
import resource
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
from bench.run_bench import chat_body, cpu_model, machine_cpu, sh  # noqa: E402
from harness import launcher, render  # noqa: E402

OUT = os.path.join(HERE, "out")
WORK = os.path.join(OUT, "soak")
LUA = os.path.join(HERE, "soak.lua")
SOAK_MD = os.path.join(HERE, "soak.md")
SOAK_CSV = os.path.join(HERE, "soak_samples.csv")
QUICK_MD = os.path.join(OUT, "soak-quick.md")
QUICK_CSV = os.path.join(OUT, "soak-quick_samples.csv")

HOST_A, KEY_A = "tenant-a.ai.example.com", "sk-tenant-a-demo"
HOST_B, KEY_B = "tenant-b.ai.example.com", "sk-tenant-b-demo"
CHAT, EMBED = "/v1/chat/completions", "/v1/embeddings"

# The kinds wrk sends, and the answers expected for each.
KINDS = {
    "c": ("chat, 1 KB body", {200}),
    "s": ("stream, 1 KB body, 16 tokens", {200}),
    "k": ("bad key", {401}),
    "m": ("unknown model", {400, 403, 404}),
    "q": ("tenant-b embeddings (quota 60/min)", {200, 429}),
}
# One cycle of wrk's plan: 50 % chats, 20 % streams, 10 % each of the denials.
PLAN = "c,s,c,k,c,m,c,q,c,s,c,k,c,m,c,q,c,s,c,s"
# The aborts this process makes (status as Envoy logs it: 0 = no response started).
ABORTS = {
    "b": ("abort mid-request-body", {0}),
    "t": ("abort mid-stream", {200}),
}
# Mid-stream aborts ask for a stream the mock paces: 32 tokens in 64-byte pieces, 2 ms
# apart (x-mock-chunk-bytes), about 170 ms in all, closed after its first bytes.
PACED_STREAM_TOKENS = 32
PACED_CHUNK_BYTES = 64
# Mid-body aborts close the connection this long after sending half the body (well under
# the filter's 500 ms hold timeout, so the request is still waiting for its body).
MID_BODY_PAUSE_S = 0.02

# "Flat": after warm-up (the first WARMUP_FRACTION of the load phase), the peak of the
# rest of the run exceeds the value at the end of warm-up by less than RSS_FLAT_PCT (Envoy
# RSS), or by at most one 64 KiB page or VM_FLAT_PCT, whichever is larger (Wasm memory
# grows in pages).
WARMUP_FRACTION = 0.2
RSS_FLAT_PCT = 5.0
VM_FLAT_PCT = 5.0
WASM_PAGE = 65536

STATS_FILTER = (r"^(wasm\.|wasmcustom\.ai_gateway_wasm_memory_bytes|"
                r"http\.ai_gateway\.downstream_rq_(total|active)$|server\.memory_allocated$)")
VM_STAT = re.compile(r"^wasmcustom\.ai_gateway_wasm_memory_bytes\.vm=\.=(\d+);\.;$")


def log(msg):
    print(msg, flush=True)


# -- inputs ----------------------------------------------------------------------------

def soak_plugin_config():
    """filters/demo.json with tenant-a's quotas so large they never refuse (the buckets
    are still charged and settled on every request); tenant-b keeps its 60 requests a
    minute, so its requests are the rate-limited ones."""
    with open(os.path.join(ROOT, "filters", "demo.json")) as f:
        cfg = json.load(f)
    for t in cfg["tenants"]:
        if t["name"] == "tenant-a":
            t["quota"] = {"requests_per_minute": 1e9, "request_burst": 1e9,
                          "tokens_per_minute": 1e12, "token_burst": 1e12}
    return cfg


def head(path, host, auth, length, extra=()):
    """A POST's request line and headers, without the blank line that ends them."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", auth, "Content-Type: application/json",
             f"Content-Length: {length}"] + list(extra)
    return "\r\n".join(lines) + "\r\n"


def templates():
    """{kind: (bytes before the request id, bytes after it)}: raw HTTP/1.1 requests."""
    embed = json.dumps({"model": "bge-small", "input": ["hello soak", "two"]},
                       separators=(",", ":")).encode()
    unknown = chat_body(1024).replace(b'"model":"llama3-8b"', b'"model":"no-such-model"')
    bearer_a = f"Authorization: Bearer {KEY_A}"
    bodies = {
        "c": (CHAT, HOST_A, bearer_a, chat_body(1024)),
        "s": (CHAT, HOST_A, bearer_a, chat_body(1024, stream=True)),
        "k": (CHAT, HOST_A, "Authorization: Bearer sk-soak-wrong-key", chat_body(1024)),
        "m": (CHAT, HOST_A, bearer_a, unknown),
        "q": (EMBED, HOST_B, f"x-api-key: {KEY_B}", embed),
    }
    out = {}
    for kind, (path, host, auth, body) in bodies.items():
        pre = head(path, host, auth, len(body)) + "X-Soak-Id: "
        out[kind] = (pre.encode(), b"\r\n\r\n" + body)
    return out


def write_templates(dirpath):
    os.makedirs(dirpath, exist_ok=True)
    for kind, (pre, post) in templates().items():
        with open(os.path.join(dirpath, f"{kind}.pre"), "wb") as f:
            f.write(pre)
        with open(os.path.join(dirpath, f"{kind}.post"), "wb") as f:
            f.write(post)


# -- processes -------------------------------------------------------------------------

ACCESS_FORMAT = "%REQ(X-SOAK-ID)% %RESPONSE_CODE% %RESPONSE_FLAGS% %FILTER_STATE(wasm.ai.record:PLAIN):1%\n"


def access_log_block(path):
    """One file logger for every request (no filter), in the bootstrap's layout."""
    lines = [
        "- name: envoy.access_loggers.file",
        "  typed_config:",
        '    "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog',
        f"    path: {render.yaml_str(path)}",
        "    log_format:",
        f"      text_format_source: {{ inline_string: {render.yaml_str(ACCESS_FORMAT)} }}",
    ]
    return render.indent(lines, 18)


class SoakTopology(launcher.Topology):
    """The demo topology with the access logs replaced by one minimal log of every
    request (a million full records would be gigabytes)."""

    def render(self, plugin_config=None):
        super().render(plugin_config)
        with open(self.config_path) as f:
            lines = f.read().split("\n")
        out, skipping, replaced = [], False, False
        for line in lines:
            if line.strip() == "access_log:":
                out.append(line)
                out.append(access_log_block(self.access_log_path))
                skipping = replaced = True
                continue
            if skipping and line.strip() == "http_filters:":
                skipping = False
            if not skipping:
                out.append(line)
        if not replaced:
            raise launcher.LaunchError("soak: bootstrap layout changed; no access_log section")
        with open(self.config_path, "w") as f:
            f.write("\n".join(out))

    @property
    def access_log_path(self):
        return os.path.join(self.log_dir, "requests.log")


def proc_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(topo):
    """CPU seconds so far: Envoy, the mocks, this process, its waited-for children (wrk,
    once it has ended) and the whole machine."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "envoy": proc_cpu_s(topo.envoy.pid),
        "mocks": sum(proc_cpu_s(p.pid) for p in topo.mocks.values()),
        "driver": me.ru_utime + me.ru_stime,
        "wrk": kids.ru_utime + kids.ru_stime,
        "machine": machine_cpu()[0],
    }


def cpu_used(before, after, seconds):
    d = {k: after[k] - before[k] for k in before}
    d["others_cores"] = max(0.0, d["machine"] - d["envoy"] - d["mocks"] - d["driver"] - d["wrk"]) / seconds
    return d


def envoy_stats(topo):
    """{name: int} for the stats the soak samples."""
    text = topo.admin("/stats?filter=" + urllib.parse.quote(STATS_FILTER))
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        try:
            out[name] = int(value)
        except ValueError:
            pass
    return out


def vm_memory(stats):
    """{vm ordinal: bytes} from the filter's gauge."""
    out = {}
    for name, value in stats.items():
        m = VM_STAT.match(name)
        if m:
            out[int(m.group(1))] = value
    return out


class Wrk:
    """wrk with bench/soak.lua; its stdout is read by a thread (the done markers)."""

    def __init__(self, topo, tpl_dir, requests, threads, connections, max_seconds):
        self.threads = threads
        quota = -(-requests // threads)
        env = dict(os.environ, SOAK_DIR=tpl_dir, SOAK_PLAN=PLAN, SOAK_QUOTA=str(quota))
        cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(max_seconds)}s",
               "--timeout", "10s", "-s", LUA, topo.base_url + "/"]
        self.cmd = cmd
        self.lines = []
        self.done_threads = set()
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("SOAK_THREAD_DONE "):
                self.done_threads.add(line.split()[1])

    def all_done(self):
        return len(self.done_threads) >= self.threads

    def finish(self, timeout=30):
        """Ends wrk (SIGINT: it prints its summary and runs done()), returns SOAK_JSON."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.reader.join(timeout=5)
        line = next((l for l in self.lines if l.startswith("SOAK_JSON ")), None)
        if line is None:
            raise SystemExit("wrk ended without its summary:\n" + "\n".join(self.lines[-40:]))
        return json.loads(line[len("SOAK_JSON "):])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


class Aborter:
    """Requests closed before their end, from this process at `rate` per second (one
    thread, alternating mid-body and mid-stream), until stopped or `limit` were sent."""

    def __init__(self, port, rate, limit):
        self.port, self.rate, self.limit = port, rate, limit
        self.sent = Counter()
        self.failed = Counter()  # not aborted as intended (connect error, full response)
        self.stop_event = threading.Event()
        bearer = f"Authorization: Bearer {KEY_A}"
        chat = chat_body(1024)
        self.body_req = (head(CHAT, HOST_A, bearer, len(chat)), chat)
        stream = chat_body(1024, stream=True, max_tokens=PACED_STREAM_TOKENS)
        self.stream_req = (head(CHAT, HOST_A, bearer, len(stream),
                                extra=[f"x-mock-chunk-bytes: {PACED_CHUNK_BYTES}"]), stream)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        if self.rate > 0:
            self.thread.start()

    def _run(self):
        n = 0
        next_at = time.monotonic()
        while not self.stop_event.is_set() and n < self.limit:
            kind = "b" if n % 2 == 0 else "t"
            n += 1
            rid = f"soak-{kind}-0-{n}"
            self.sent[kind] += 1
            try:
                ok = self.mid_body(rid) if kind == "b" else self.mid_stream(rid)
            except OSError:
                ok = False
            if not ok:
                self.failed[kind] += 1
            next_at += 1.0 / self.rate
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))

    def mid_body(self, rid):
        h, body = self.body_req
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(f"{h}X-Soak-Id: {rid}\r\n\r\n".encode() + body[: len(body) // 2])
            time.sleep(MID_BODY_PAUSE_S)
        return True

    def mid_stream(self, rid):
        h, body = self.stream_req
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(f"{h}X-Soak-Id: {rid}\r\n\r\n".encode() + body)
            got = b""
            # Until the response headers and the first body bytes are in.
            while (end := got.find(b"\r\n\r\n")) < 0 or len(got) <= end + 4:
                chunk = s.recv(65536)
                if not chunk:
                    return False
                got += chunk
            # Closed with the rest of the stream unread: the kernel resets the connection.
            return got.startswith(b"HTTP/1.1 200") and b"\r\n0\r\n\r\n" not in got

    def finish(self):
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        return dict(self.sent), dict(self.failed)


# -- the run ---------------------------------------------------------------------------

class Sampler:
    def __init__(self, topo):
        self.topo = topo
        self.pid = topo.envoy.pid
        self.rows = []
        self.t0 = time.monotonic()
        self.last = None  # (t, requests, cpu)

    def sample(self, phase):
        t = time.monotonic() - self.t0
        stats = envoy_stats(self.topo)
        rss = proc_rss_kb(self.pid)
        cpu = proc_cpu_s(self.pid)
        reqs = stats.get("http.ai_gateway.downstream_rq_total", 0)
        rps = cpu_pct = 0.0
        if self.last is not None and t > self.last[0]:
            rps = (reqs - self.last[1]) / (t - self.last[0])
            cpu_pct = 100.0 * (cpu - self.last[2]) / (t - self.last[0])
        self.last = (t, reqs, cpu)
        row = {
            "t_s": round(t, 1),
            "phase": phase,
            "requests": reqs,
            "rps": round(rps),
            "envoy_rss_kb": rss,
            "envoy_allocated_kb": stats.get("server.memory_allocated", 0) // 1024,
            "envoy_cpu_pct": round(cpu_pct),
            "rq_active": stats.get("http.ai_gateway.downstream_rq_active", 0),
            "v8_active": stats.get("wasm.envoy.wasm.runtime.v8.active", 0),
            "v8_created": stats.get("wasm.envoy.wasm.runtime.v8.created", 0),
            "vm_reload": stats.get("wasm.ai-gateway-filter.vm_reload", 0),
            "vm_reload_failure": stats.get("wasm.ai-gateway-filter.vm_reload_failure", 0),
            "vm_reload_success": stats.get("wasm.ai-gateway-filter.vm_reload_success", 0),
            "vm_reload_backoff": stats.get("wasm.ai-gateway-filter.vm_reload_backoff", 0),
            "vm": vm_memory(stats),
        }
        self.rows.append(row)
        return row


def fmt_row(row, vms):
    mem = " ".join(f"{row['vm'].get(v, 0) / 1024:7.0f}" for v in vms)
    return (f"{row['t_s']:7.1f} {row['phase']:>5} {row['requests']:>10,} {row['rps']:>6,} "
            f"{row['envoy_rss_kb'] / 1024:8.1f} {row['envoy_cpu_pct']:>5} {mem} "
            f"{row['v8_active']:>3}/{row['v8_created']:<3} {row['vm_reload']:>3}")


def header_line(vms):
    mem = " ".join(f"{'vm' + str(v) + ' KiB':>7}" for v in vms)
    return f"{'t (s)':>7} {'phase':>5} {'requests':>10} {'rps':>6} {'RSS MB':>8} {'CPU%':>5} {mem} v8 act/cre reload"


def run(args):
    os.makedirs(WORK, exist_ok=True)
    tpl_dir = os.path.join(WORK, "requests")
    write_templates(tpl_dir)
    log_dir = os.path.join(WORK, "logs")
    if os.path.exists(os.path.join(log_dir, "requests.log")):
        os.remove(os.path.join(log_dir, "requests.log"))
    topo = SoakTopology(plugin_config=soak_plugin_config(), concurrency=args.concurrency, log_dir=log_dir)
    wrk = aborter = None
    with topo:
        time.sleep(1.0)  # let every VM configure and report once
        sampler = Sampler(topo)
        first = sampler.sample("idle")
        vms = sorted(first["vm"])
        log(f"Envoy pid {topo.envoy.pid}, {args.concurrency} workers, {len(vms)} Wasm VMs; "
            f"wrk {args.wrk_threads} threads x {args.connections // args.wrk_threads} connections, "
            f"{args.requests:,} requests or {args.max_seconds:.0f} s; aborts {args.abort_rate}/s")
        log(header_line(vms))
        log(fmt_row(first, vms))
        t_load = time.monotonic()
        cpu0 = cpu_snapshot(topo)
        deadline = t_load + args.max_seconds
        try:
            wrk = Wrk(topo, tpl_dir, args.requests, args.wrk_threads, args.connections, args.max_seconds)
            aborter = Aborter(topo.gateway_port, args.abort_rate, int(args.abort_rate * args.max_seconds) + 1)
            aborter.start()
            next_sample = time.monotonic() + args.interval
            while time.monotonic() < deadline + 15 and wrk.proc.poll() is None and not wrk.all_done():
                time.sleep(min(0.2, max(0.0, next_sample - time.monotonic())))
                if time.monotonic() >= next_sample:
                    log(fmt_row(sampler.sample("load"), vms))
                    next_sample += args.interval
            aborts_sent, aborts_failed = aborter.finish()
            w = wrk.finish()
        finally:
            if aborter is not None:
                aborter.finish()
            if wrk is not None:
                wrk.stop()
        load_s = time.monotonic() - t_load
        cpu = cpu_used(cpu0, cpu_snapshot(topo), load_s)
        timed_out = not wrk.all_done()
        log(fmt_row(sampler.sample("load"), vms))
        # Let the last requests end and the access log catch up (Envoy flushes it every 50 ms).
        expected = w["started"] + sum(aborts_sent.values())
        settle_deadline = time.monotonic() + 15
        while time.monotonic() < settle_deadline:
            st = envoy_stats(topo)
            if (st.get("http.ai_gateway.downstream_rq_active", 1) == 0
                    and count_lines(topo.access_log_path) >= st.get("http.ai_gateway.downstream_rq_total", 0)):
                break
            time.sleep(0.2)
        time.sleep(0.5)
        final = sampler.sample("idle")
        log(fmt_row(final, vms))
        records = read_log(topo.access_log_path)
        envoy_log_errors = [l for l in topo.envoy_output().splitlines()
                            if "][critical][" in l or ("][error][" in l and "wasm" in l)]
    return {
        "args": vars(args),
        "rows": sampler.rows,
        "vms": vms,
        "wrk": w,
        "wrk_cmd": " ".join(wrk.cmd),
        "aborts_sent": aborts_sent,
        "aborts_failed": aborts_failed,
        "expected": expected,
        "records": records,
        "load_s": load_s,
        "cpu": cpu,
        "timed_out": timed_out,
        "envoy_log_errors": envoy_log_errors[:20],
        "envoy_log_error_count": len(envoy_log_errors),
    }


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def read_log(path):
    """Per kind: lines, lines with a record, statuses; plus duplicates and strays."""
    by_kind = {}
    seen = set()
    dup = stray = lines = with_record = 0
    with open(path, errors="replace") as f:
        for line in f:
            lines += 1
            parts = line.split()
            if len(parts) != 4:
                stray += 1
                continue
            rid, code, flags, rec = parts
            has = rec == "{"
            with_record += has
            m = re.match(r"^soak-([a-z])-\d+-\d+$", rid)
            if not m:
                stray += 1
                continue
            if rid in seen:
                dup += 1
            seen.add(rid)
            k = by_kind.setdefault(m.group(1), {"lines": 0, "records": 0, "status": Counter(), "flags": Counter()})
            k["lines"] += 1
            k["records"] += has
            k["status"][code] += 1
            k["flags"][flags] += 1
    return {"lines": lines, "with_record": with_record, "duplicates": dup, "strays": stray,
            "unique_ids": len(seen), "by_kind": by_kind}


# -- verdicts and report ---------------------------------------------------------------

def growth(rows, key):
    """(value at the end of warm-up, peak after it, growth %) over the load phase."""
    load = [r for r in rows if r["phase"] == "load"]
    if len(load) < 3:
        return None
    t0, t1 = load[0]["t_s"], load[-1]["t_s"]
    cut = t0 + WARMUP_FRACTION * (t1 - t0)
    after = [r for r in load if r["t_s"] >= cut]
    base = key(after[0])
    peak = max(key(r) for r in after)
    return base, peak, (100.0 * (peak - base) / base if base else 0.0)


def verdicts(res):
    rows = res["rows"]
    out = {}
    g = growth(rows, lambda r: r["envoy_rss_kb"])
    out["rss"] = g and {"base_kb": g[0], "peak_kb": g[1], "growth_pct": g[2], "flat": g[2] < RSS_FLAT_PCT}
    out["vm"] = {}
    for v in res["vms"]:
        g = growth(rows, lambda r, v=v: r["vm"].get(v, 0))
        if g:
            allowed = max(WASM_PAGE, g[0] * VM_FLAT_PCT / 100)
            out["vm"][v] = {"base": g[0], "peak": g[1], "growth_pct": g[2], "flat": g[1] - g[0] <= allowed}
    first, last = rows[0], rows[-1]
    out["restarts"] = {
        "v8_active": (first["v8_active"], last["v8_active"]),
        "v8_created": (first["v8_created"], last["v8_created"]),
        "vm_reload": last["vm_reload"], "vm_reload_failure": last["vm_reload_failure"],
        "vm_reload_success": last["vm_reload_success"], "vm_reload_backoff": last["vm_reload_backoff"],
    }
    out["no_restarts"] = (first["v8_created"] == last["v8_created"] and first["v8_active"] == last["v8_active"]
                          and last["vm_reload"] == 0 and last["vm_reload_failure"] == 0)
    rec = res["records"]
    envoy_total = last["requests"]
    out["records"] = {
        "requests_sent": res["expected"],
        "envoy_requests": envoy_total,
        "log_lines": rec["lines"],
        "with_record": rec["with_record"],
        "duplicates": rec["duplicates"],
        "strays": rec["strays"],
    }
    out["records_match"] = (rec["with_record"] == rec["lines"] == res["expected"] == envoy_total
                            and rec["duplicates"] == 0 and rec["strays"] == 0)
    sent = dict(res["wrk"]["sent"])
    sent.update(res["aborts_sent"])
    per_kind = {}
    for k, (label, ok_status) in {**KINDS, **ABORTS}.items():
        got = rec["by_kind"].get(k, {"lines": 0, "records": 0, "status": Counter(), "flags": Counter()})
        unexpected = {s: n for s, n in got["status"].items() if int(s) not in ok_status}
        per_kind[k] = {"label": label, "sent": sent.get(k, 0), "lines": got["lines"], "records": got["records"],
                       "status": dict(got["status"]), "flags": dict(got["flags"]), "unexpected": unexpected}
    out["per_kind"] = per_kind
    out["answers_as_expected"] = all(not p["unexpected"] for p in per_kind.values())
    return out


def versions():
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "os": sh("sed -n 's/^PRETTY_NAME=//p' /etc/os-release").strip('"'),
        "envoy": sh(f"{launcher.ENVOY} --version").split("version:")[-1].strip(),
        "wrk": sh("wrk -v 2>&1 | head -1").split(" [")[0],
        "rustc": sh("rustc --version"),
        "python": platform.python_version(),
        "module_bytes": os.path.getsize(launcher.WASM),
        "git": sh(f"git -C {ROOT} rev-parse --short HEAD") + (
            " (+ uncommitted changes)" if sh(f"git -C {ROOT} status --porcelain --untracked-files=no") else ""),
    }


def yes(b):
    return "**yes**" if b else "**NO**"


def downsample(rows, n):
    load = [r for r in rows if r["phase"] == "load"]
    if len(load) <= n:
        picked = load
    else:
        step = (len(load) - 1) / (n - 1)
        picked = [load[round(i * step)] for i in range(n)]
    return [rows[0]] + picked + [r for r in rows[1:] if r["phase"] == "idle"]


def write_csv(path, res):
    vms = res["vms"]
    cols = ["t_s", "phase", "requests", "rps", "envoy_rss_kb", "envoy_allocated_kb", "envoy_cpu_pct",
            "rq_active", "v8_active", "v8_created", "vm_reload", "vm_reload_failure", "vm_reload_success",
            "vm_reload_backoff"] + [f"vm{v}_bytes" for v in vms]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in res["rows"]:
            w.writerow([r[c] for c in cols[:14]] + [r["vm"].get(v, "") for v in vms])


def write_md(path, csv_path, res, v, command, machine):
    a = res["args"]
    rows = res["rows"]
    vms = res["vms"]
    rec = v["records"]
    wrk = res["wrk"]
    total_req = rec["envoy_requests"]
    L = []
    L.append("# Soak: memory, Wasm VMs and records under a long mixed run\n")
    L.append(f"Generated by `{command}` (bench/soak.py); raw samples in "
             f"[{os.path.basename(csv_path)}]({os.path.basename(csv_path)}).\n")
    L.append("## Summary\n")
    rss = v["rss"]
    if res["timed_out"]:
        L.append(f"- **Stopped by the time bound** ({a['max_seconds']:.0f} s) before wrk had sent and had "
                 f"answered its {a['requests']:,} requests.")
    L.append(f"- **{total_req:,} requests** in {res['load_s']:.0f} s "
             f"({total_req / res['load_s']:,.0f}/s): {wrk['started']:,} from wrk "
             f"({wrk['answered']:,} answered, {wrk['started'] - wrk['answered']} unanswered when wrk stopped) "
             f"and {sum(res['aborts_sent'].values()):,} aborted by the client.")
    if rss:
        L.append(f"- Envoy RSS flat after warm-up: {yes(rss['flat'])} — {rss['base_kb'] / 1024:.1f} MB at the end "
                 f"of warm-up, peak {rss['peak_kb'] / 1024:.1f} MB after it ({rss['growth_pct']:+.1f} %; "
                 f"flat = below +{RSS_FLAT_PCT:g} %); {rows[0]['envoy_rss_kb'] / 1024:.1f} MB idle before the "
                 f"load, {rows[-1]['envoy_rss_kb'] / 1024:.1f} MB idle after it.")
    vm_flat = all(x["flat"] for x in v["vm"].values())
    vm_desc = ", ".join(f"vm{k} {x['base'] / 1024:.0f} → {x['peak'] / 1024:.0f} KiB" for k, x in v["vm"].items())
    L.append(f"- Wasm VM memory flat after warm-up: {yes(vm_flat)} — {vm_desc} "
             f"(flat = at most one 64 KiB page or +{VM_FLAT_PCT:g} %, whichever is larger).")
    r = v["restarts"]
    L.append(f"- VM restarts or failures: {'none' if v['no_restarts'] else '**some**'} — "
             f"`wasm.envoy.wasm.runtime.v8.active` {r['v8_active'][0]} → {r['v8_active'][1]}, "
             f"`created` {r['v8_created'][0]} → {r['v8_created'][1]}, "
             f"`wasm.ai-gateway-filter.vm_reload` {r['vm_reload']}, `vm_reload_failure` {r['vm_reload_failure']}; "
             f"{res['envoy_log_error_count']} critical (or Wasm error) lines in Envoy's log.")
    L.append(f"- Records == requests: {yes(v['records_match'])} — {rec['requests_sent']:,} requests sent, "
             f"{rec['envoy_requests']:,} counted by Envoy (`http.ai_gateway.downstream_rq_total`), "
             f"{rec['log_lines']:,} access-log lines, {rec['with_record']:,} of them with a gateway record, "
             f"{rec['duplicates']} duplicate and {rec['strays']} unknown request ids.")
    L.append(f"- Every answer as expected for its kind: {yes(v['answers_as_expected'])}.\n")
    L.append("Warm-up is the first 20 % of the load phase; \"after warm-up\" compares the first sample after "
             "it with the highest sample of the remaining 80 %. Envoy RSS is `VmRSS` of the Envoy process "
             "(V8 heaps and code, buffers, stats, the allocator's caches); a VM's memory is its linear "
             "memory (`ai_gateway_wasm_memory_bytes{vm}`, which never shrinks: a high-water mark).\n")
    L.append("## Requests\n")
    L.append("| kind | sent | log lines | with record | statuses (Envoy's %RESPONSE_CODE%) | response flags |")
    L.append("|---|---:|---:|---:|---|---|")
    for k, p in v["per_kind"].items():
        st = ", ".join(f"{s}: {n:,}" for s, n in sorted(p["status"].items()))
        fl = ", ".join(f"{s}: {n:,}" for s, n in sorted(p["flags"].items()))
        L.append(f"| {p['label']} | {p['sent']:,} | {p['lines']:,} | {p['records']:,} | {st} | {fl} |")
    L.append("")
    e = wrk["errors"]
    L.append(f"wrk: {e['connect']} connect, {e['read']} read, {e['write']} write errors and {e['timeout']} "
             f"timeouts; {e['status']:,} answers ≥ 400 (the denials, expected); "
             f"latency p50 {wrk['latency_us']['p50'] / 1000:.1f} ms, p99 {wrk['latency_us']['p99'] / 1000:.1f} ms "
             f"(under {a['connections']} connections, with every process on the same 2 cores). "
             f"Aborts not made as intended: {res['aborts_failed'] or 'none'}.\n")
    c = res["cpu"]
    per = 1e6 / max(1, total_req)
    L.append(f"CPU during the load phase ({res['load_s']:.0f} s): Envoy {c['envoy']:.0f} s "
             f"({c['envoy'] * per:.0f} µs a request), the three mocks {c['mocks']:.0f} s, wrk {c['wrk']:.0f} s, "
             f"this script (aborts, sampling) {c['driver']:.0f} s; other people's processes on the machine "
             f"used {c['others_cores']:.2f} of its {os.cpu_count()} cores on average.\n")
    L.append("## Memory over time\n")
    head_vm = " | ".join(f"vm{x} KiB" for x in vms)
    L.append(f"| t (s) | phase | requests | req/s | Envoy RSS MB | Envoy CPU % | {head_vm} | v8 active / created | vm_reload |")
    L.append("|---:|---|---:|---:|---:|---:|" + "---:|" * len(vms) + "---|---:|")
    for row in downsample(rows, 24):
        mem = " | ".join(f"{row['vm'].get(x, 0) / 1024:.0f}" for x in vms)
        L.append(f"| {row['t_s']:.0f} | {row['phase']} | {row['requests']:,} | {row['rps']:,} | "
                 f"{row['envoy_rss_kb'] / 1024:.1f} | {row['envoy_cpu_pct']} | {mem} | "
                 f"{row['v8_active']} / {row['v8_created']} | {row['vm_reload']} |")
    L.append("")
    L.append(f"VMs 0..{len(vms) - 1}: Envoy runs {a['concurrency']} workers, one VM each, plus two VMs on the "
             "main thread (which serve no requests, so their memory does not move).\n")
    L.append("## How it was run\n")
    L.append(f"- Command: `{command}` (wrk: `{res['wrk_cmd']}`).")
    L.append(f"- Envoy `--concurrency {a['concurrency']}`, the demo bootstrap (harness/render.py) with one "
             f"minimal access log (`{ACCESS_FORMAT.strip()}`), filters/demo.json with tenant-a's quota "
             "unlimited and tenant-b's as configured (60 requests a minute, burst 10); three mock backends "
             "(target/release/mock-llm), one thread each.")
    L.append(f"- wrk cycles `{PLAN}` (c chat, s stream, k bad key, m unknown model, q tenant-b embeddings), "
             f"{a['wrk_threads']} threads × {a['connections'] // a['wrk_threads']} connections, until "
             f"{a['requests']:,} requests were sent and answered (each thread sends its share, then "
             f"waits for its last answers) or {a['max_seconds']:.0f} s.")
    L.append(f"- Aborts: {a['abort_rate']}/s from one thread of bench/soak.py, alternating mid-body (headers and "
             f"half of a 1 KB body, closed after {MID_BODY_PAUSE_S * 1000:.0f} ms) and mid-stream (a stream the "
             f"mock paces, `x-mock-chunk-bytes: {PACED_CHUNK_BYTES}`, closed after its first bytes).")
    L.append(f"- Sampled every {a['interval']:g} s: `/proc/<pid>/status` VmRSS, Envoy's admin `/stats` "
             "(`wasm.*`, `http.ai_gateway.downstream_rq_*`, the filter's memory gauge).")
    L.append(f"- Machine: {machine['nproc']} cores ({machine['cpu']}), {machine['mem_gib']} GiB, "
             f"{machine['os']}, kernel {machine['kernel']}; shared with other work while it ran.")
    L.append(f"- Versions: Envoy {machine['envoy']}; {machine['wrk']}; {machine['rustc']}; Python "
             f"{machine['python']}; module {machine['module_bytes']:,} bytes; git {machine['git']}.")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def main(argv=None):
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=None,
                   help="requests wrk sends, default 1,000,000 (env SOAK_REQUESTS)")
    p.add_argument("--max-seconds", type=float, default=float(env("SOAK_SECONDS") or 840),
                   help="upper bound of the load phase (env SOAK_SECONDS)")
    p.add_argument("--interval", type=float, default=float(env("SOAK_INTERVAL") or 5))
    p.add_argument("--concurrency", type=int, default=4,
                   help="Envoy workers: two per core, so the soak keeps its share of a shared machine")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--abort-rate", type=float, default=20.0, help="client aborts per second")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 20,000 requests, at most 120 s, samples every 2 s, "
                        "results in bench/out/ (env SOAK_QUICK=1)")
    args = p.parse_args(argv)
    quick = args.quick or env("SOAK_QUICK") == "1"
    if args.requests is None:
        args.requests = int(env("SOAK_REQUESTS") or (20_000 if quick else 1_000_000))
    if quick:
        args.max_seconds = min(args.max_seconds, 120)
        args.interval = min(args.interval, 2)
    args.quick = quick
    if args.requests <= 0 or args.max_seconds <= 0 or args.connections < args.wrk_threads:
        raise SystemExit("soak: --requests and --max-seconds must be positive, --connections >= --wrk-threads")
    command = "make soak" + (" SOAK_ARGS=--quick" if quick else "")
    if env("SOAK_REQUESTS"):
        command += f" SOAK_REQUESTS={env('SOAK_REQUESTS')}"
    if env("SOAK_SECONDS"):
        command += f" SOAK_SECONDS={env('SOAK_SECONDS')}"
    machine = versions()
    res = run(args)
    v = verdicts(res)
    md, csv_path = (QUICK_MD, QUICK_CSV) if quick else (SOAK_MD, SOAK_CSV)
    os.makedirs(os.path.dirname(md), exist_ok=True)
    write_csv(csv_path, res)
    write_md(md, csv_path, res, v, command, machine)
    with open(os.path.join(WORK, "result.json"), "w") as f:
        json.dump({"verdicts": v, "wrk": res["wrk"], "aborts_sent": res["aborts_sent"],
                   "aborts_failed": res["aborts_failed"], "envoy_log_errors": res["envoy_log_errors"]},
                  f, indent=1, default=str)
    log("")
    with open(md) as f:
        summary = f.read().split("## Requests")[0]
    log(summary.strip())
    log(f"\nwrote {os.path.relpath(md, ROOT)} and {os.path.relpath(csv_path, ROOT)}")
    ok = (v["records_match"] and v["no_restarts"] and v["answers_as_expected"]
          and (v["rss"] or {}).get("flat", False) and all(x["flat"] for x in v["vm"].values()))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
