#!/usr/bin/env python3
"""Write the filter's Wasm OCI image as an OCI image layout directory (`make image`).

The image is the "compat" Wasm image that Istio (WasmPlugin `url: oci://...`) and Envoy
Gateway (EnvoyExtensionPolicy `code.type: Image`) both pull: an ordinary OCI image
manifest (`application/vnd.oci.image.manifest.v1+json`) with

    config  application/vnd.oci.image.config.v1+json   (linux/amd64, rootfs diff_ids)
    layer   application/vnd.oci.image.layer.v1.tar+gzip (exactly one: a tar holding
            a regular file `plugin.wasm`, the module)

and the annotation `module.wasm.image/variant: compat` that the compat spec asks of an
OCI-typed layer (neither controller checks it). Both controllers read the last layer of
a non-Docker manifest as tar+gzip and take the file whose base name is `plugin.wasm`.

The output is deterministic: the tar entry has mtime 0, uid/gid 0, no user/group names
and mode 0644 (ustar format); gzip has mtime 0, no file name, a fixed OS byte and level
9; JSON is written with sorted keys and no spaces; nothing depends on the clock, the
host or the version string. The same .wasm bytes therefore give the same manifest
digest (with the same zlib deflate implementation, which is stable across zlib 1.2/1.3
releases). Pushing with `skopeo copy --preserve-digests` keeps that digest.

Layout (https://github.com/opencontainers/image-spec/blob/main/image-layout.md):

    OUT/oci-layout                  {"imageLayoutVersion":"1.0.0"}
    OUT/index.json                  the manifest, named TAG (org.opencontainers.image.ref.name)
    OUT/blobs/sha256/<hex>          layer, config, manifest

Standard library only (runs before the test virtualenv exists).

    python3 filters/oci_image.py --wasm dist/ai-gateway-filter-0.1.0.wasm --out dist/image \
        --tag 0.1.0 [--ref REG/ai-gateway-filter:0.1.0 --digest-file FILE]

prints `sha256:<manifest digest>`; with --ref and --digest-file it also writes
`REF@sha256:<digest>` to FILE (what `make manifests` stamps).
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
VARIANT_ANNOTATION = {"module.wasm.image/variant": "compat"}
PLUGIN_NAME = "plugin.wasm"
REF_NAME = "org.opencontainers.image.ref.name"


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def layer_tar(wasm):
    """A ustar archive holding one regular file, plugin.wasm, with fixed metadata."""
    buf = io.BytesIO()
    info = tarfile.TarInfo(PLUGIN_NAME)
    info.size, info.mtime, info.mode = len(wasm), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def gzip_bytes(data):
    """gzip with no file name, mtime 0 and level 9 (Python writes OS byte 255)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def build(wasm):
    """{'manifest': bytes, 'config': bytes, 'layer': bytes, 'digest': 'sha256:<hex>'}."""
    if wasm[:4] != b"\0asm":
        raise ValueError("not a WebAssembly module (no \\0asm magic)")
    tar = layer_tar(wasm)
    layer = gzip_bytes(tar)
    config = canonical_json({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256(tar)}"]},
    })
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": f"sha256:{sha256(config)}", "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": f"sha256:{sha256(layer)}", "size": len(layer)}],
        "annotations": VARIANT_ANNOTATION,
    })
    return {"manifest": manifest, "config": config, "layer": layer, "digest": f"sha256:{sha256(manifest)}"}


def write_layout(out, image, tag):
    """Replace directory `out` with an OCI image layout holding `image` under `tag`."""
    if os.path.exists(out):
        shutil.rmtree(out)
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs)
    for blob in (image["layer"], image["config"], image["manifest"]):
        with open(os.path.join(blobs, sha256(blob)), "wb") as f:
            f.write(blob)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": MANIFEST_TYPE, "digest": image["digest"],
                       "size": len(image["manifest"]), "annotations": {REF_NAME: tag}}],
    }
    with open(os.path.join(out, "index.json"), "wb") as f:
        f.write(canonical_json(index))
    with open(os.path.join(out, "oci-layout"), "wb") as f:
        f.write(canonical_json({"imageLayoutVersion": "1.0.0"}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wasm", required=True, help="the module (dist/ai-gateway-filter-<version>.wasm)")
    p.add_argument("--out", required=True, help="OCI layout directory to (re)create")
    p.add_argument("--tag", required=True, help="name of the image in the layout (the image tag)")
    p.add_argument("--ref", default=None, help="IMAGE:TAG the image will be pushed to")
    p.add_argument("--digest-file", default=None, help="write REF@sha256:<digest> here (needs --ref)")
    args = p.parse_args(argv)
    if bool(args.ref) != bool(args.digest_file):
        p.error("--ref and --digest-file go together")
    try:
        with open(args.wasm, "rb") as f:
            image = build(f.read())
        write_layout(args.out, image, args.tag)
        if args.digest_file:
            with open(args.digest_file, "w") as f:
                f.write(f"{args.ref}@{image['digest']}\n")
    except (OSError, ValueError) as e:
        print(f"oci_image: {e}", file=sys.stderr)
        return 1
    print(image["digest"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
