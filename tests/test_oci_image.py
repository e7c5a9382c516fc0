"""The OCI image without a container engine (`make image push manifests`, docs/deploy.md).

- filters/oci_image.py writes the compat Wasm image (OCI manifest, one
  application/vnd.oci.image.layer.v1.tar+gzip layer holding plugin.wasm) as an OCI
  layout, deterministically: two builds of the same .wasm are identical byte for byte, so
  the manifest digest is known before any push; another module gives another digest.
- The image is what Istio's and Envoy Gateway's fetchers read: `istio_extract` follows
  their pkg/wasm/imagefetcher.go (istio/istio; internal/wasm in envoyproxy/gateway is the
  same code) step by step.
- Through a real registry (Debian's docker-registry on 127.0.0.1, plain HTTP): `make push`
  (skopeo copy --preserve-digests) stores the built manifest under the built digest; the
  registry API and a `skopeo copy` back into a layout return that manifest and the
  module byte for byte; `make manifests` stamps `@sha256:<that digest>` into the Istio
  WasmPlugin and the Envoy Gateway EnvoyExtensionPolicy.

docker-registry and skopeo come from `make apt-deps`; missing, the tests fail
(LaunchError), never skip.
"""
import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile

import yaml

from harness.launcher import LaunchError
from harness.registry import Registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = "ai-gateway/ai-gateway-filter"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

_spec = importlib.util.spec_from_file_location("oci_image", os.path.join(ROOT, "filters", "oci_image.py"))
oci_image = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(oci_image)


def cargo_version():
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        return re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)


VERSION = cargo_version()
DIST_WASM = os.path.join(ROOT, "dist", f"ai-gateway-filter-{VERSION}.wasm")


def make(*args):
    proc = subprocess.run(["make", "-s", *args], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"make {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


_WASM = {}


def dist_wasm():
    """`make dist` once; the module's bytes."""
    if not _WASM:
        make("dist")
        with open(DIST_WASM, "rb") as f:
            _WASM["bytes"] = f.read()
    return _WASM["bytes"]


def skopeo():
    binary = shutil.which("skopeo")
    if binary is None:
        raise LaunchError("skopeo not found on PATH: run `make apt-deps` (Debian package skopeo)")
    return binary


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_layout(out, tag=VERSION, wasm=DIST_WASM):
    """filters/oci_image.py as `make image` runs it; the digest it prints."""
    proc = run(["python3", os.path.join(ROOT, "filters", "oci_image.py"), "--wasm", wasm, "--out", out, "--tag", tag])
    return proc.stdout.strip()


def layout_files(root):
    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def layout_manifest(root, tag):
    """(digest, manifest bytes) of `tag` in an OCI layout, the blob checked against its name."""
    with open(os.path.join(root, "index.json")) as f:
        index = json.load(f)
    hits = [m for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    assert len(hits) == 1, index
    digest = hits[0]["digest"]
    blob = read_blob(root, digest)
    assert hits[0]["mediaType"] == OCI_MANIFEST and hits[0]["size"] == len(blob)
    return digest, blob


def read_blob(root, digest):
    algo, hexdigest = digest.split(":")
    with open(os.path.join(root, "blobs", algo, hexdigest), "rb") as f:
        data = f.read()
    assert sha256(data) == digest
    return data


def istio_extract(manifest_bytes, blob):
    """The module as Istio's ImageFetcher reads it (pkg/wasm/imagefetcher.go): a Docker
    schema2 manifest needs a Docker tar.gzip last layer; otherwise the compat variant
    (last layer application/vnd.oci.image.layer.v1.tar+gzip) is tried, and the first
    tar entry whose base name is plugin.wasm is the module. (The third variant, two
    layers with application/vnd.module.wasm.content.layer.v1+wasm, is not what we build.)"""
    manifest = json.loads(manifest_bytes)
    layers = manifest["layers"]
    assert layers, "number of layers must be greater than zero"
    last = layers[-1]
    expected = DOCKER_LAYER if manifest.get("mediaType") == DOCKER_MANIFEST else OCI_LAYER
    assert last["mediaType"] == expected, last
    data = blob(last["digest"])
    assert sha256(data) == last["digest"] and len(data) == last["size"]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as tar:
        for member in tar:
            if os.path.basename(member.name) == "plugin.wasm":
                return tar.extractfile(member).read()
    raise AssertionError("plugin.wasm not found in the archive")


# --- the build -------------------------------------------------------------------------

def test_two_builds_are_identical_and_in_the_compat_format():
    wasm = dist_wasm()
    with tempfile.TemporaryDirectory(prefix="oci-build-") as tmp:
        a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
        digest_a, digest_b = build_layout(a), build_layout(b)
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest_a)
        assert digest_a == digest_b == oci_image.build(wasm)["digest"]
        files = layout_files(a)
        assert files == layout_files(b)
        blobs = [k for k in files if k.startswith("blobs/sha256/")]
        assert sorted(set(files) - set(blobs)) == ["index.json", "oci-layout"]
        assert len(blobs) == 3  # layer, config, manifest
        assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}

        digest, manifest_bytes = layout_manifest(a, VERSION)
        assert digest == digest_a
        manifest = json.loads(manifest_bytes)
        assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == OCI_MANIFEST
        assert manifest["annotations"] == {"module.wasm.image/variant": "compat"}
        assert [layer["mediaType"] for layer in manifest["layers"]] == [OCI_LAYER]
        assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
        assert istio_extract(manifest_bytes, lambda d: read_blob(a, d)) == wasm

        # The layer: gzip without a name and with mtime 0; one regular file with fixed
        # owner, mode and time; the config's diff_id is the uncompressed tar's digest.
        layer = read_blob(a, manifest["layers"][0]["digest"])
        flags, mtime = layer[3], int.from_bytes(layer[4:8], "little")
        assert layer[:3] == b"\x1f\x8b\x08" and flags == 0 and mtime == 0
        tar_bytes = gzip.decompress(layer)
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            members = tar.getmembers()
        assert [(m.name, m.isreg(), m.size, m.mode, m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members] == [
            ("plugin.wasm", True, len(wasm), 0o644, 0, 0, 0, "", "")]
        config = json.loads(read_blob(a, manifest["config"]["digest"]))
        assert config["rootfs"] == {"type": "layers", "diff_ids": [sha256(tar_bytes)]}
        assert (config["os"], config["architecture"]) == ("linux", "amd64")

        # The digest is a function of the module only: the tag names it in the layout,
        # another module is another image.
        assert build_layout(os.path.join(tmp, "c"), tag="other") == digest_a
        other = os.path.join(tmp, "other.wasm")
        with open(other, "wb") as f:
            f.write(wasm + b"\0")
        assert build_layout(os.path.join(tmp, "d"), wasm=other) != digest_a


def test_the_build_refuses_a_file_that_is_not_a_module():
    with tempfile.TemporaryDirectory(prefix="oci-build-") as tmp:
        bogus = os.path.join(tmp, "x.wasm")
        with open(bogus, "wb") as f:
            f.write(b"not wasm")
        proc = subprocess.run(["python3", os.path.join(ROOT, "filters", "oci_image.py"), "--wasm", bogus,
                               "--out", os.path.join(tmp, "out"), "--tag", "t"], capture_output=True, text=True)
        assert proc.returncode == 1 and "not a WebAssembly module" in proc.stderr
        assert not os.path.exists(os.path.join(tmp, "out"))


# --- push, pull and stamp through a real registry ---------------------------------------

def test_push_pull_and_stamp_through_a_real_registry():
    wasm = dist_wasm()
    tool = skopeo()
    tag = f"{VERSION}-test"
    with tempfile.TemporaryDirectory(prefix="oci-registry-") as tmp, Registry() as reg:
        image = f"{reg.host}/{REPO}"
        layout = os.path.join(tmp, "layout")
        digest_file = os.path.join(tmp, "image-digest")
        common = [f"IMAGE={image}", f"IMAGE_TAG={tag}", f"IMAGE_LAYOUT={layout}", f"IMAGE_DIGEST_FILE={digest_file}"]

        # make image records the built digest for IMAGE:TAG; make push (skopeo copy
        # --preserve-digests) checks the registry's digest against it.
        proc = make("push", "PUSH_TLS_VERIFY=false", *common)
        with open(digest_file) as f:
            recorded = f.read().strip()
        built, manifest_bytes = layout_manifest(layout, tag)
        assert recorded == f"{image}:{tag}@{built}"
        assert built == oci_image.build(wasm)["digest"]
        assert f"pushed {image}:{tag}@{built}" in proc.stdout
        with open(digest_file + ".pushed") as f:
            assert f.read().strip() == built

        # The registry API, as Istio's and Envoy Gateway's fetchers ask it: the tag
        # resolves to the built manifest, byte for byte, under the built digest.
        accept = f"{OCI_MANIFEST}, {DOCKER_MANIFEST}, application/vnd.oci.image.index.v1+json"
        status, headers, body = reg.get(f"/v2/{REPO}/manifests/{tag}", accept=accept)
        assert status == 200, body
        assert headers["Docker-Content-Digest"] == built
        assert headers["Content-Type"] == OCI_MANIFEST
        assert body == manifest_bytes

        def registry_blob(digest):
            status, _, data = reg.get(f"/v2/{REPO}/blobs/{digest}")
            assert status == 200, data
            return data

        assert istio_extract(body, registry_blob) == wasm
        status, headers, _ = reg.get(f"/v2/{REPO}/manifests/{built}", accept=accept)
        assert status == 200 and headers["Docker-Content-Digest"] == built

        # Pulled back with skopeo into another layout: same digest, same module.
        pulled = os.path.join(tmp, "pulled")
        run([tool, "copy", "--quiet", "--preserve-digests", "--src-tls-verify=false",
             f"docker://{image}:{tag}", f"oci:{pulled}:{tag}"])
        pulled_digest, pulled_manifest = layout_manifest(pulled, tag)
        assert pulled_digest == built and pulled_manifest == manifest_bytes
        assert istio_extract(pulled_manifest, lambda d: read_blob(pulled, d)) == wasm

        # make manifests stamps that digest into the image references.
        out = os.path.join(tmp, "manifests")
        make("manifests", *common, f"MANIFESTS_DIR={out}")
        hexdigest = built.split(":", 1)[1]
        for rel in ("istio/50-wasmplugin.yaml", "envoy-gateway/50-extension-policy.yaml",
                    "istio/model-routing/wasm-envoyfilter.yaml"):
            with open(os.path.join(out, rel)) as f:
                text = f.read()
            assert f"{image}:{tag}@{built}" in text.splitlines()[0], rel
            assert f'sha256: "{hexdigest}"' in text, rel
        with open(os.path.join(out, "istio", "50-wasmplugin.yaml")) as f:
            wp = next(d for d in yaml.safe_load_all(f) if d and d["kind"] == "WasmPlugin")["spec"]
        assert (wp["url"], wp["sha256"]) == (f"oci://{image}:{tag}", hexdigest)
        with open(os.path.join(out, "envoy-gateway", "50-extension-policy.yaml")) as f:
            eep = next(d for d in yaml.safe_load_all(f) if d and d["kind"] == "EnvoyExtensionPolicy")
        code = eep["spec"]["wasm"][0]["code"]
        assert code["type"] == "Image"
        assert (code["image"]["url"], code["image"]["sha256"]) == (f"{image}:{tag}", hexdigest)
