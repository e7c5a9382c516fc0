# The filter as an OCI image for Istio (WasmPlugin url: oci://...) and Envoy Gateway
# (EnvoyExtensionPolicy code.type: Image). Build it with `make image` (docker, buildah
# or podman), which puts dist/ai-gateway-filter-<version>.wasm into the build context
# dist/image/ as plugin.wasm:
#
#   docker build -f Dockerfile -t REGISTRY/ai-gateway-filter:VERSION dist/image
#
# This is the "compat" Wasm image format both read: one ordinary image layer (tar+gzip,
# Docker or OCI media type) holding a file named plugin.wasm. Keep exactly one COPY so
# the image has exactly one layer (Istio reads the last layer). No syntax directive: it
# would make BuildKit pull a frontend image.
FROM scratch
COPY plugin.wasm /plugin.wasm
