"""Start and stop a real container registry (Debian's docker-registry, the CNCF
distribution registry) on 127.0.0.1, plain HTTP, storage in a temporary directory, for the
OCI image tests.

    with Registry() as reg:
        reg.host                      # "127.0.0.1:<port>", for docker://HOST/repo:tag
        reg.get("/v2/ai-gateway/ai-gateway-filter/manifests/0.1.0", accept=...)

No authentication, no debug listener. A missing docker-registry binary fails with
LaunchError (`make apt-deps` installs the package), never a skip.
"""
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from harness.launcher import LaunchError, Managed, free_ports, stop_process

CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


class Registry(Managed):
    """One docker-registry process. Use as a context manager; stop() leaves nothing running."""

    def __init__(self, port=None):
        self.port = port
        self.workdir = None
        self.proc = None

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self):
        return os.path.join(self.workdir or "", "registry.log")

    def cleanup(self):
        if self.workdir and not os.environ.get("AI_GW_KEEP_WORKDIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def start(self, timeout=15.0):
        binary = shutil.which("docker-registry")
        if binary is None:
            raise LaunchError("docker-registry not found on PATH: run `make apt-deps` (Debian package docker-registry)")
        if self.port is None:
            self.port = free_ports(1)
        self.workdir = self.workdir or tempfile.mkdtemp(prefix="ai-gw-registry-")
        storage = os.path.join(self.workdir, "storage")
        os.makedirs(storage, exist_ok=True)
        config = os.path.join(self.workdir, "config.yml")
        with open(config, "w") as f:
            f.write(CONFIG.format(storage=storage, port=self.port))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([binary, "serve", config], stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                status, _, _ = self.get("/v2/")
                if status == 200:
                    return self
            except OSError:  # not listening yet
                pass
            time.sleep(0.05)
        tail = self.log()[-3000:]
        self.stop()
        self.cleanup()
        raise LaunchError(f"docker-registry did not start on port {self.port}; its log ends with:\n{tail}")

    def stop(self):
        stop_process(self.proc, timeout=10.0)
        self.proc = None

    def get(self, path, accept=None, timeout=10.0):
        """(status, headers, body) of GET http://host/path."""
        req = urllib.request.Request(f"http://{self.host}{path}")
        if accept:
            req.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def log(self):
        if not self.workdir:
            return ""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""
