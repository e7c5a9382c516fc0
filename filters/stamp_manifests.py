#!/usr/bin/env python3
"""Write deployable copies of the Istio and Envoy Gateway manifests (`make manifests`).

The committed manifests under filters/istio/ and filters/envoy-gateway/ carry
placeholders on lines marked `# stamp: <kind>`; this writes copies with the real values
into an output directory (dist/manifests/ by default), keeping every comment. Every
YAML file of both trees is copied, variants included (istio/local, istio/model-routing,
istio/trafficextension, envoy-gateway/http, envoy-gateway/model-routing):

    image         oci://IMAGE:TAG (Istio) or IMAGE:TAG (Envoy Gateway)
    image-digest  the digest of the pushed image manifest (`make push` records it); the
                  line is dropped when no digest is known for IMAGE:TAG, so the copy
                  pulls by tag without verification (a warning says so)
    wasm-sha256   the SHA-256 of dist/ai-gateway-filter-<version>.wasm
    wasm-url      where that .wasm is served over HTTPS (WASM_URL)
    wasm-file     file:///var/local/ai-gateway-filter/ai-gateway-filter-<version>.wasm

Standard library only (runs before the test virtualenv exists).

    python3 filters/stamp_manifests.py --version 0.1.0 --image REG/ai-gateway-filter \
        --wasm-sha256-file dist/ai-gateway-filter-0.1.0.wasm.sha256 [--tag 0.1.0] \
        [--image-digest-file dist/ai-gateway-filter-0.1.0.image-digest] \
        [--wasm-url https://...] [--out dist/manifests]
"""
import argparse
import glob
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ["istio", "envoy-gateway"]
PLACEHOLDER_SHA256 = "0" * 64
# The placeholder image and download locations of the committed manifests: they may only
# appear on marked lines. A manifest naming the module (WasmPlugin, TrafficExtension,
# EnvoyFilter, EnvoyExtensionPolicy) on an unmarked line is refused rather than copied
# with a reference to nothing.
PLACEHOLDER_ARTIFACTS = ["registry.example.com/ai-gateway/ai-gateway-filter",
                         "downloads.example.com/ai-gateway-filter/"]
KINDS = {"image", "image-digest", "wasm-sha256", "wasm-url", "wasm-file"}
LINE = re.compile(r"^(?P<head>\s*(?:- )?[A-Za-z0-9_]+: )(?P<value>\S+)(?P<tail>\s+# stamp: (?P<kind>[a-z0-9-]+))\s*$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class StampError(Exception):
    pass


def wasm_file_url(version):
    return f"file:///var/local/ai-gateway-filter/ai-gateway-filter-{version}.wasm"


def default_wasm_url(version):
    return f"https://downloads.example.com/ai-gateway-filter/ai-gateway-filter-{version}.wasm"


def read_wasm_sha256(path):
    """First field of a `sha256sum` line."""
    with open(path) as f:
        value = f.read().split()[0] if os.path.getsize(path) else ""
    if not HEX64.match(value):
        raise StampError(f"{path}: not a sha256sum line")
    return value


def read_image_digest(path, image_ref):
    """The digest recorded by `make push` (`IMAGE:TAG@sha256:HEX`) if it is for image_ref."""
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        recorded = f.read().strip()
    ref, _, digest = recorded.rpartition("@sha256:")
    if not HEX64.match(digest):
        raise StampError(f"{path}: expected IMAGE:TAG@sha256:<64 hex>, got {recorded!r}")
    if ref != image_ref:
        print(f"stamp_manifests: {path} is for {ref}, not {image_ref}: ignored", file=sys.stderr)
        return None
    return digest


def stamp_text(text, values, source):
    """Replace every marked value; returns (text, set of kinds seen)."""
    out, seen = [], set()
    for n, line in enumerate(text.split("\n"), 1):
        if "# stamp:" not in line or line.lstrip().startswith("#"):
            if not line.lstrip().startswith("#") and any(a in line for a in PLACEHOLDER_ARTIFACTS):
                raise StampError(f"{source}:{n}: an artifact reference not marked with `# stamp:`: "
                                 f"{line.strip()}")
            out.append(line)
            continue
        m = LINE.match(line)
        if not m or m.group("kind") not in KINDS:
            raise StampError(f"{source}:{n}: unrecognised stamp line: {line.strip()}")
        kind, value = m.group("kind"), m.group("value")
        seen.add(kind)
        if kind == "image":
            new = ("oci://" if value.startswith("oci://") else "") + values["image_ref"]
        elif kind == "image-digest":
            if values["image_digest"] is None:
                continue  # no digest known: pull by tag, unverified
            new = f'"{values["image_digest"]}"'
        elif kind == "wasm-sha256":
            new = f'"{values["wasm_sha256"]}"'
        elif kind == "wasm-url":
            new = values["wasm_url"]
        else:  # wasm-file
            new = values["wasm_file"]
        out.append(m.group("head") + new + m.group("tail"))
    return "\n".join(out), seen


def stamp_tree(root, out_dir, values):
    written = []
    for src in SOURCES:
        for path in sorted(glob.glob(os.path.join(root, src, "**", "*.yaml"), recursive=True)):
            rel = os.path.relpath(path, root)
            with open(path) as f:
                text, _ = stamp_text(f.read(), values, rel)
            if PLACEHOLDER_SHA256 in text:
                raise StampError(f"{rel}: a placeholder sha256 is not marked with `# stamp:`")
            dest = os.path.join(out_dir, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            header = (f"# Stamped by `make manifests` from filters/{rel}: version {values['version']}, "
                      f"image {values['image_ref']}"
                      + (f"@sha256:{values['image_digest']}" if values["image_digest"] else " (digest unknown)")
                      + f", wasm sha256 {values['wasm_sha256']}.\n")
            with open(dest, "w") as f:
                f.write(header + text)
            written.append(dest)
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", required=True)
    p.add_argument("--image", required=True, help="image repository, without tag")
    p.add_argument("--tag", default=None, help="image tag (default: --version)")
    p.add_argument("--wasm-sha256-file", required=True)
    p.add_argument("--image-digest-file", default=None)
    p.add_argument("--wasm-url", default=None)
    p.add_argument("--root", default=HERE, help="directory holding istio/ and envoy-gateway/")
    p.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "dist", "manifests"))
    args = p.parse_args(argv)
    image_ref = f"{args.image}:{args.tag or args.version}"
    try:
        values = {
            "version": args.version,
            "image_ref": image_ref,
            "image_digest": read_image_digest(args.image_digest_file, image_ref),
            "wasm_sha256": read_wasm_sha256(args.wasm_sha256_file),
            "wasm_url": args.wasm_url or default_wasm_url(args.version),
            "wasm_file": wasm_file_url(args.version),
        }
        written = stamp_tree(args.root, args.out, values)
    except (StampError, OSError) as e:
        print(f"stamp_manifests: {e}", file=sys.stderr)
        return 1
    if values["image_digest"] is None:
        print(f"stamp_manifests: no digest recorded for {image_ref} (run `make push`): "
              "the OCI manifests pull it by tag without verification", file=sys.stderr)
    print(f"wrote {len(written)} manifests to {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
