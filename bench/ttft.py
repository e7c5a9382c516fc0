"""Time to first token, measured by a client: the time from sending a streaming chat
request to receiving the first chunk that carries content (`"content":"tok0`), over a
kept-alive HTTP/1.1 connection. Standard library only.

    python3 bench/ttft.py --url http://127.0.0.1:10000 --host tenant-a.ai.example.com \
        --key sk-tenant-a-demo --body bench/out/bodies/stream.json -n 500
"""
import argparse
import json
import socket
import statistics
import time
from urllib.parse import urlsplit

FIRST_CONTENT = b'"content":"tok0'


class TtftClient:
    """One kept-alive connection; `once()` runs one streaming request."""

    def __init__(self, url, host, key, body, path="/v1/chat/completions"):
        u = urlsplit(url)
        self.addr = (u.hostname, u.port or 80)
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {host}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        if key:
            head.append(f"Authorization: Bearer {key}")
        self.request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        self.sock = None

    def connect(self):
        self.close()
        self.sock = socket.create_connection(self.addr, timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def once(self):
        """(ttft_ns, total_ns) of one streamed response."""
        if self.sock is None:
            self.connect()
        t0 = time.perf_counter_ns()
        self.sock.sendall(self.request)
        buf = b""
        first = None
        while True:
            data = self.sock.recv(262144)
            now = time.perf_counter_ns()
            if not data:
                self.close()
                raise ConnectionError("connection closed mid-response")
            tail = buf[-64:] + data
            if first is None and FIRST_CONTENT in tail:
                first = now
            buf += data
            if buf.endswith(b"\r\n0\r\n\r\n"):
                break
        status = buf[9:12]
        if status != b"200":
            raise RuntimeError(f"status {status!r}: {buf[:300]!r}")
        if first is None:
            raise RuntimeError("no content chunk in the stream")
        return first - t0, now - t0


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


def summarize(ns_values):
    us = [v / 1000.0 for v in ns_values]
    return {
        "n": len(us),
        "p50_us": percentile(us, 50),
        "p90_us": percentile(us, 90),
        "p99_us": percentile(us, 99),
        "mean_us": statistics.fmean(us) if us else None,
    }


def measure(clients, samples, warmup=100, rounds=10):
    """Interleave the targets in rounds so machine noise hits all of them alike.
    `clients` maps a name to a TtftClient. Returns name -> (ttft summary, total summary)."""
    ttft = {name: [] for name in clients}
    total = {name: [] for name in clients}
    for c in clients.values():
        for _ in range(warmup):
            c.once()
    per_round = max(1, samples // rounds)
    for _ in range(rounds):
        for name, c in clients.items():
            for _ in range(per_round):
                f, t = c.once()
                ttft[name].append(f)
                total[name].append(t)
    for c in clients.values():
        c.close()
    return {name: (summarize(ttft[name]), summarize(total[name])) for name in clients}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--host", default="tenant-a.ai.example.com")
    p.add_argument("--key", default="")
    p.add_argument("--body", required=True)
    p.add_argument("-n", type=int, default=500)
    a = p.parse_args()
    with open(a.body, "rb") as f:
        body = f.read()
    out = measure({"target": TtftClient(a.url, a.host, a.key, body)}, a.n)
    print(json.dumps(out["target"][0]))


if __name__ == "__main__":
    main()
