"""Raw HTTP/1.1 over a socket, for requests `requests` cannot send (repeated or oddly cased
headers, invalid UTF-8, conflicting framing, bodies sent slowly or never finished), and
the VM-health probe the abuse and fault tests share. 127.0.0.1 only; every read is bounded
by a socket timeout."""
import json
import re

from harness import launcher
import socket
import time


class RawResponse:
    def __init__(self, status, reason, headers, body, raw):
        self.status = status
        self.reason = reason
        self.headers = headers  # [(lower-case name, value)]
        self.body = body
        self.raw = raw

    def header(self, name):
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<RawResponse {self.status} {self.body[:200]!r}>"


def _dechunk(data):
    out, rest = b"", data
    while True:
        line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            return out, False
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return out, True
        if len(rest) < size + 2:
            return out + rest[:size], False
        out, rest = out + rest[:size], rest[size + 2:]


def parse_response(raw):
    """The first response in `raw` (None if its headers are incomplete)."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    hmap = dict(headers)
    if hmap.get("transfer-encoding", "").lower() == "chunked":
        body, _ = _dechunk(rest)
    elif "content-length" in hmap:
        body = rest[: int(hmap["content-length"])]
    else:
        body = rest
    return RawResponse(status, parts[2] if len(parts) > 2 else "", headers, body, raw)


def _complete(raw):
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    low = head.lower()
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", low)
    if m:
        return len(rest) >= int(m.group(1))
    if b"\r\ntransfer-encoding: chunked" in low:
        return _dechunk(rest)[1]
    return False  # read until close


def read_response(sock, timeout=15.0):
    """Read one response; stops at its end, at EOF, at a reset or after `timeout`."""
    sock.settimeout(timeout)
    raw = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _complete(raw):
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        raw += chunk
    return raw


def exchange(port, data, timeout=15.0):
    """Send `data` (bytes) on a fresh connection and read one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        raw = read_response(s, timeout)
    resp = parse_response(raw)
    if resp is None:
        raise AssertionError(f"no HTTP response; got {raw[:300]!r}")
    return resp


def request_bytes(method, path, headers, body=b"", content_length=True):
    """An HTTP/1.1 request. `headers` is a list of (name, value) sent exactly as given
    (str or bytes, case and repetition preserved)."""
    def b(x):
        return x if isinstance(x, bytes) else x.encode("latin-1")

    out = [b(method) + b" " + b(path) + b" HTTP/1.1"]
    for name, value in headers:
        out.append(b(name) + b": " + b(value))
    if content_length and (body or method == "POST"):
        out.append(b"Content-Length: " + str(len(body)).encode())
    out.append(b"Connection: close")
    return b"\r\n".join(out) + b"\r\n\r\n" + b(body)


# -- VM health ------------------------------------------------------------------------
# Calibrated against Envoy 1.40 with a module that panics on purpose: under FAIL_CLOSED a
# trapped VM increments no counter at all; Envoy logs
#   [error][wasm] ... wasm_vm.cc ... Function: proxy_on_request_headers failed: Uncaught
#   RuntimeError: unreachable
# and answers every later request on that worker with an empty 503. Under FAIL_RELOAD the
# next request bumps wasm.<plugin>.vm_reload_* and wasm.envoy.wasm.runtime.v8.created.
# So health = these stats unchanged AND no such log line (AND the callers' OpenAI-shaped
# assertions, which an empty 503 fails).
VM_STATS = re.compile(r"^(wasm\.envoy\.wasm\.runtime\.[^:]+|wasm\.wasm_vm_count|wasm\.ai-gateway-filter\.vm_reload[^:]*):\s*(\d+)$")
# (A refused configuration logs "Wasm VM failed Failed to configure": that is not a trap.)
VM_FAILURE_LOG = re.compile(r"Uncaught RuntimeError|Function: proxy_on_\w+ failed|panicked at")


def vm_stats(topo):
    """Envoy's Wasm VM counters (Proxy-Wasm host). A native module has no VM to trap: a
    failure there takes Envoy itself down, so its health is the process still running."""
    if launcher.host() == "native":
        return {"envoy_running": int(topo.envoy is not None and topo.envoy.poll() is None)}
    out = {}
    for line in topo.admin("/stats?filter=wasm").splitlines():
        m = VM_STATS.match(line.strip())
        if m:
            out[m.group(1)] = int(m.group(2))
    if "wasm.envoy.wasm.runtime.v8.created" not in out:
        raise AssertionError("Envoy reports no wasm runtime stats; is the filter loaded?")
    return out


def vm_failure_lines(topo):
    return [l for l in topo.envoy_output().splitlines() if VM_FAILURE_LOG.search(l)]


def metric_series(topo):
    """Names of the filter's custom metric series (label values are part of the name)."""
    ns = "dynamicmodulescustom" if launcher.host() == "native" else "wasmcustom"
    names = set()
    for line in topo.admin(f"/stats?filter=%5E{ns}%5C.").splitlines():
        name, sep, _ = line.partition(": ")
        if sep and name.startswith(ns + "."):
            names.add(name)
    return names


def wait_for_ids(topo, rids, timeout=20.0):
    """Gateway and audit records by request id, once every id has both (bounded wait)."""
    rids = set(rids)
    deadline = time.monotonic() + timeout
    while True:
        recs, auds = topo.records(), topo.audits()
        have_r = {r.get("client_request_id") for r in recs}
        have_a = {a.get("client_request_id") for a in auds}
        if (rids <= have_r and rids <= have_a) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.15)  # a duplicate would land right behind (flush: 50 ms); "exactly one" is fair
    recs, auds = topo.records(), topo.audits()
    by_r, by_a = {}, {}
    for r in recs:
        if r.get("client_request_id") in rids:
            by_r.setdefault(r["client_request_id"], []).append(r)
    for a in auds:
        if a.get("client_request_id") in rids:
            by_a.setdefault(a["client_request_id"], []).append(a)
    return by_r, by_a


def one_each(topo, rids, timeout=20.0):
    """Exactly one gateway record and one audit record per request id."""
    by_r, by_a = wait_for_ids(topo, rids, timeout)
    missing = [r for r in rids if len(by_r.get(r, [])) != 1 or len(by_a.get(r, [])) != 1]
    assert not missing, {r: (len(by_r.get(r, [])), len(by_a.get(r, []))) for r in missing[:10]}
    return {r: v[0] for r, v in by_r.items()}, {r: v[0] for r, v in by_a.items()}
