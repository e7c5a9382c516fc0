"""Start and stop a real redis-server (Debian's package) on 127.0.0.1, for the global rate
limit service's tests.

    with RedisServer() as r:            # a free port, no persistence
        r.command("GET", "key")
    with RedisServer(persist=True) as r:  # AOF (fsync on every write) in its directory,
        r.restart()                      # so counters survive a restart on the same port

`command` is a minimal RESP2 client (standard library only), enough to read and write
the counters a test checks. A missing redis-server fails with LaunchError (`make
apt-deps` installs it), never a skip.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time

from harness.launcher import LaunchError, Managed, free_ports, stop_process


class RedisError(Exception):
    """An error reply from Redis."""


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.exact(n).decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RedisError(f"unexpected reply {line!r}")


def command(port, *args, timeout=5.0):
    """One command on a fresh connection to 127.0.0.1:port; its decoded reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(_encode(args))
        return _Reader(s).reply()


class RedisServer(Managed):
    """One redis-server process. Use as a context manager; stop() leaves nothing running."""

    def __init__(self, port=None, persist=False, workdir=None):
        self.port = port
        self.persist = persist
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="ai-gw-redis-")
        self.proc = None
        self.starts = 0

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    @property
    def log_path(self):
        return os.path.join(self.workdir, "redis.log")

    def cleanup(self):
        if self._own_workdir and not os.environ.get("AI_GW_KEEP_WORKDIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def start(self, timeout=15.0):
        binary = shutil.which("redis-server")
        if binary is None:
            raise LaunchError("redis-server not found on PATH: run `make apt-deps` (Debian package redis-server)")
        if self.port is None:
            self.port = free_ports(1)
        # Loopback only, no password (protected mode needs neither then), nothing written
        # unless persist: then an append-only file fsynced on every write, in workdir.
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        cmd = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.workdir,
               "--save", "", *persistence, "--daemonize", "no", "--logfile", self.log_path]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self.command("PING") == "PONG":
                    return self
            except (OSError, ConnectionError, RedisError):  # not listening, or still loading
                pass
            time.sleep(0.05)
        tail = self.log()[-3000:]
        self.stop()
        raise LaunchError(f"redis-server did not start on port {self.port}; its log ends with:\n{tail}")

    def stop(self):
        """SIGTERM (Redis closes its files; with persist the AOF is already on disk)."""
        stop_process(self.proc, timeout=10.0)
        self.proc = None

    def restart(self):
        """Stop, then start again on the same port and directory."""
        self.stop()
        return self.start()

    def command(self, *args):
        return command(self.port, *args)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""
