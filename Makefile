# ai-gateway-filter — the two commands users need are `make demo` and `make test`.
# Everything the build and the tests need is installed here, never by hand.

SHELL := /bin/bash
.DEFAULT_GOAL := build

WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/ai_gateway_filter.wasm
MOCK := target/release/mock-llm
# The native artifact: the same filter as an Envoy 1.40 dynamic module (native/).
NATIVE := target/release/libai_gateway_native.so
VENV := .venv
PY := $(VENV)/bin/python
ENVOY := $(VENV)/bin/envoy
ENVOY_VERSION := 1.40.0

# Release artifacts (make dist / manifests / image / push; see docs/deploy.md).
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
DIST_WASM := dist/ai-gateway-filter-$(VERSION).wasm
IMAGE ?= registry.example.com/ai-gateway/ai-gateway-filter
IMAGE_TAG ?= $(VERSION)
IMAGE_DIGEST_FILE ?= dist/ai-gateway-filter-$(VERSION).image-digest
WASM_URL ?= https://downloads.example.com/ai-gateway-filter/ai-gateway-filter-$(VERSION).wasm
MANIFESTS_DIR ?= dist/manifests
# The OCI image layout `make image` writes; skopeo's --dest-tls-verify for `make push`
# (false only for a plain-HTTP registry, as in tests/test_oci_image.py).
IMAGE_LAYOUT ?= dist/image
PUSH_TLS_VERIFY ?= true
# The committed envoy-demo/envoy.yaml (make envoy-yaml ENVOY_YAML=... renders elsewhere).
ENVOY_YAML ?= envoy-demo/envoy.yaml

# Demo settings (override on the command line: make demo GATEWAY_PORT=10100 ...).
GATEWAY_PORT ?= 10000
ADMIN_PORT ?= 9901
PLUGIN_CONFIG ?= filters/demo.json
LOG_DIR ?= envoy-demo/logs
ENVOY_CONCURRENCY ?= 2
MOCK_BASE_PORT ?= 18001
# make demo-global: two replicas (GATEWAY_PORT, GATEWAY_PORT+1; ADMIN_PORT, ADMIN_PORT+1),
# their Redis and rate limit service, and the configuration with global limits.
REDIS_PORT ?= 6380
RLS_PORT ?= 18081
GLOBAL_PLUGIN_CONFIG ?= filters/demo-global.json
export GATEWAY_PORT ADMIN_PORT PLUGIN_CONFIG LOG_DIR ENVOY_CONCURRENCY MOCK_BASE_PORT \
       REDIS_PORT RLS_PORT GLOBAL_PLUGIN_CONFIG

# Which artifact runs the filter in `make demo` / `make demo-global`: wasm (the Proxy-Wasm
# module) or native (the dynamic module). `make test` runs the integration suite once
# per host in HOSTS.
HOST ?= wasm
HOSTS ?= wasm native

# Pytest workers are not used: the suite starts its own Envoys and the machine may be
# small. PYTEST_ARGS lets you narrow a run (make test PYTEST_ARGS='-k quota').
PYTEST_ARGS ?=

.PHONY: build native mock ratelimit wasm-target deps venv apt-deps test unit lint integration demo demo-global dist clean \
        envoy-yaml bench fuzz manifests image push bench-deps bench-crates meter meter-budgets \
        soak soak-deps bench-global

wasm-target:
	@rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

build: wasm-target
	cargo build --release --target $(WASM_TARGET) -p ai-gateway-filter
	@ls -l $(WASM) | awk '{print "module: " $$9 " (" $$5 " bytes)"}'

mock:
	cargo build --release -p mock-llm

native:
	cargo build --release -p ai-gateway-native
	@ls -l $(NATIVE) | awk '{print "native module: " $$9 " (" $$5 " bytes)"}'

# The global rate limit service (ratelimit/, a workspace of its own like bench/, so the
# module's workspace never compiles tokio, tonic or redis), into target/ratelimit.
RATELIMIT_CARGO := CARGO_TARGET_DIR=$(CURDIR)/target/ratelimit cargo
RATELIMIT_MANIFEST := --manifest-path ratelimit/Cargo.toml
ratelimit:
	$(RATELIMIT_CARGO) build --release --locked $(RATELIMIT_MANIFEST)

# Debian packages used by the tests (promtool / prometheus for the metrics rules;
# redis-server for the global rate limit service's tests; docker-registry and skopeo for
# the OCI image's push and pull, which `make push` also uses).
apt-deps:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
	  echo "installing Debian packages: prometheus"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) \
	    || { echo "apt-get install prometheus failed (run as root or install it)"; exit 1; }; \
	fi
	@if ! command -v redis-server >/dev/null; then \
	  echo "installing Debian packages: redis-server"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
	    || { echo "apt-get install redis-server failed (run as root or install it)"; exit 1; }; \
	fi
	@if ! command -v docker-registry >/dev/null || ! command -v skopeo >/dev/null; then \
	  echo "installing Debian packages: docker-registry skopeo"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry skopeo >/dev/null) \
	    || { echo "apt-get install docker-registry skopeo failed (run as root or install them)"; exit 1; }; \
	fi

# The harness package (harness/, pyproject.toml) is installed editable, so the demo, the
# tests and the benchmarks import `harness.*` from this checkout without path edits.
$(VENV)/.stamp: tests/requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r tests/requirements.txt
	$(VENV)/bin/pip install -q -e .
	@$(ENVOY) --version | grep -q '/$(ENVOY_VERSION)/' || { echo "expected Envoy $(ENVOY_VERSION)"; exit 1; }
	touch $@

venv: $(VENV)/.stamp

deps: wasm-target venv apt-deps

# The committed bootstrap for `func-e run -c envoy-demo/envoy.yaml` (defaults, relative paths).
envoy-yaml:
	GATEWAY_PORT=10000 ADMIN_PORT=9901 MOCK_BASE_PORT=18001 PLUGIN_CONFIG=filters/demo.json \
	  LOG_DIR=envoy-demo/logs python3 -m harness.render -o $(ENVOY_YAML)

unit:
	cargo test --workspace
	$(RATELIMIT_CARGO) test --locked $(RATELIMIT_MANIFEST)

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p ai-gateway-filter --target $(WASM_TARGET) -- -D warnings
	cargo fmt $(RATELIMIT_MANIFEST) --all -- --check
	$(RATELIMIT_CARGO) clippy --locked $(RATELIMIT_MANIFEST) --all-targets -- -D warnings

# The whole suite once per host: every behaviour is proven on both artifacts.
INTEGRATION = for h in $(HOSTS); do \
	  echo "== integration tests on the $$h host"; \
	  AI_GATEWAY_HOST=$$h $(PY) -m pytest -q tests $(PYTEST_ARGS) || exit 1; \
	done

integration: deps build native mock ratelimit
	@$(INTEGRATION)

# Deterministic cost of the built module (meter/README.md): the table, the check against
# meter/budgets.json, then the host-call sequence tests that need the .wasm (ignored by
# `make unit`, which runs before the module is built). Debug build: `make unit` built it.
meter: build
	cargo run -q -p meter -- --check meter/budgets.json
	cargo test -q -p meter -- --include-ignored

# Rewrites meter/budgets.json with today's exact counts; commit it with the change.
meter-budgets: build
	cargo run -q -p meter -- --quiet --update-budgets meter/budgets.json

test: deps lint unit build native mock ratelimit meter
	@$(INTEGRATION)

demo: deps build native mock
	AI_GATEWAY_HOST=$(HOST) $(PY) envoy-demo/run_demo.py

# Global quotas across replicas (README, docs/quotas.md): redis-server (apt-deps), the rate
# limit service and two gateway Envoys sharing the limits of GLOBAL_PLUGIN_CONFIG.
demo-global: deps build native mock ratelimit
	AI_GATEWAY_HOST=$(HOST) $(PY) envoy-demo/run_demo_global.py

# dist/ai-gateway-filter-<version>.wasm and its SHA-256 (sha256sum -c format).
dist: build
	@mkdir -p dist
	cp $(WASM) $(DIST_WASM)
	cd dist && sha256sum $(notdir $(DIST_WASM)) > $(notdir $(DIST_WASM)).sha256
	@cat $(DIST_WASM).sha256

# Deployable copies of filters/istio and filters/envoy-gateway with the image reference,
# the .wasm's SHA-256 and the image digest (from make image) filled in.
manifests: image
	python3 filters/stamp_manifests.py --version $(VERSION) --image $(IMAGE) --tag $(IMAGE_TAG) \
	  --wasm-sha256-file $(DIST_WASM).sha256 --image-digest-file $(IMAGE_DIGEST_FILE) \
	  --wasm-url $(WASM_URL) --out $(MANIFESTS_DIR)

# The compat Wasm OCI image (docs/deploy.md: one tar+gzip layer holding plugin.wasm) as an
# OCI image layout in IMAGE_LAYOUT, written by filters/oci_image.py: no container engine.
# Deterministic: its manifest digest depends on the .wasm only, and is recorded as
# IMAGE:TAG@sha256:<digest> in IMAGE_DIGEST_FILE for make manifests.
image: dist
	python3 filters/oci_image.py --wasm $(DIST_WASM) --out $(IMAGE_LAYOUT) --tag $(IMAGE_TAG) \
	  --ref $(IMAGE):$(IMAGE_TAG) --digest-file $(IMAGE_DIGEST_FILE)

# Copies the layout to IMAGE:TAG with skopeo (apt-deps), the manifest byte for byte
# (--preserve-digests: a single image manifest, gzip layer, never converted), and checks
# that the registry's digest is the built one. Credentials: `skopeo login`, or
# REGISTRY_AUTHFILE=<auth.json>, or REGISTRY_CREDS=user:password in the environment.
push: image
	@command -v skopeo >/dev/null || { echo "make push: skopeo not found: run make apt-deps (Debian package skopeo)" >&2; exit 1; }
	@set -e; built=$$(sed 's/^.*@//' $(IMAGE_DIGEST_FILE)); rm -f $(IMAGE_DIGEST_FILE).pushed; \
	echo "skopeo copy oci:$(IMAGE_LAYOUT):$(IMAGE_TAG) docker://$(IMAGE):$(IMAGE_TAG)"; \
	skopeo copy --quiet --preserve-digests --dest-tls-verify=$(PUSH_TLS_VERIFY) \
	  $${REGISTRY_AUTHFILE:+--dest-authfile "$$REGISTRY_AUTHFILE"} $${REGISTRY_CREDS:+--dest-creds "$$REGISTRY_CREDS"} \
	  --digestfile $(IMAGE_DIGEST_FILE).pushed oci:$(IMAGE_LAYOUT):$(IMAGE_TAG) docker://$(IMAGE):$(IMAGE_TAG); \
	pushed=$$(cat $(IMAGE_DIGEST_FILE).pushed); \
	[ "$$pushed" = "$$built" ] || { echo "make push: the registry has $$pushed, the build made $$built" >&2; exit 1; }; \
	echo "pushed $(IMAGE):$(IMAGE_TAG)@$$pushed"

# --- Benchmarks and fuzzing -----------------------------------------------------------
# make bench: plain Envoy, the Wasm floor, the filter (Wasm and native) and ext_proc (bench/results.md, bench/latency_vs_body.png).
# BENCH_ARGS is passed to `python -m bench.run_bench` (e.g. BENCH_ARGS=--quick for a smoke run).
BENCH_ARGS ?=
# make fuzz: every cargo-fuzz target for FUZZ_SECONDS each (FUZZ_TARGETS narrows the list).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=

# wrk (Debian) drives the load; valgrind and perf profile it (optional: skipped if absent).
bench-deps: venv
	@if ! command -v wrk >/dev/null; then \
	  echo "installing Debian packages: wrk"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null) \
	    || { echo "apt-get install wrk failed (run as root or install it)"; exit 1; }; \
	fi
	@command -v valgrind >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null \
	  || echo "valgrind unavailable: the callgrind profile will be skipped"
	@command -v perf >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null \
	  || echo "perf unavailable: the perf profile will be skipped"

$(VENV)/.bench-stamp: bench/requirements.txt $(VENV)/.stamp
	$(VENV)/bin/pip install -q -r bench/requirements.txt
	touch $@

# The bench workspace (bench/Cargo.toml, not part of the root workspace, so `make test`
# never compiles tonic), into target/bench: the floor filter (wasm32-wasip1), the no-op
# ext_proc processor and the native core driver for the callgrind profile.
BENCH_CARGO := cd bench && CARGO_TARGET_DIR=$(CURDIR)/target/bench cargo build -q --locked
bench-crates: wasm-target
	$(BENCH_CARGO) --profile wasm --target $(WASM_TARGET) -p floor-filter
	$(BENCH_CARGO) --release -p ext-proc-noop -p core-profile

# make bench: plain Envoy, the Wasm floor, the filter (Wasm and native) and ext_proc side by side.
bench: bench-deps $(VENV)/.bench-stamp build mock native bench-crates
	cargo build -q -p meter
	$(PY) -m bench.run_bench $(BENCH_ARGS)

# make bench-global: what global quotas cost, local vs synced vs strict side by side, and
# the sync's own cost at rest (bench/global.md). Needs redis-server (apt-deps) and the rate
# limit service. BENCH_GLOBAL_ARGS is passed to `python -m bench.global_bench`
# (e.g. BENCH_GLOBAL_ARGS=--quick for a smoke run, results in bench/out/).
BENCH_GLOBAL_ARGS ?=
bench-global: bench-deps apt-deps build mock ratelimit
	$(PY) -m bench.global_bench $(BENCH_GLOBAL_ARGS)

# make soak (not part of make test): a mixed run of SOAK_REQUESTS requests (default
# 1,000,000, at most SOAK_SECONDS, default 840) plus client aborts against Envoy with the
# filter, sampling Envoy's RSS and each Wasm VM's memory; writes bench/soak.md and
# bench/soak_samples.csv. SOAK_ARGS=--quick is a smoke run (results in bench/out/).
SOAK_ARGS ?=

# wrk (Debian) drives the soak's load.
soak-deps:
	@if ! command -v wrk >/dev/null; then \
	  echo "installing Debian packages: wrk"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null) \
	    || { echo "apt-get install wrk failed (run as root or install it)"; exit 1; }; \
	fi

soak: soak-deps venv build mock
	$(PY) -m bench.soak $(SOAK_ARGS)

fuzz:
	@rustup toolchain list | grep -q '^nightly' || { echo "make fuzz needs the nightly toolchain (rustup toolchain install nightly)"; exit 1; }
	@cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install --locked cargo-fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh $(FUZZ_TARGETS)

clean:
	cargo clean
	rm -rf $(VENV) dist envoy-demo/logs ai_gateway_harness.egg-info
