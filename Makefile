# ai-gateway-filter — the two commands users need are `make demo` and `make test`.
# Everything the build and the tests need is installed here, never by hand.

SHELL := /bin/bash
.DEFAULT_GOAL := build

WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/ai_gateway_filter.wasm
MOCK := target/release/mock-llm
VENV := .venv
PY := $(VENV)/bin/python
ENVOY := $(VENV)/bin/envoy
ENVOY_VERSION := 1.40.0

# Demo settings (override on the command line: make demo GATEWAY_PORT=10100 ...).
GATEWAY_PORT ?= 10000
ADMIN_PORT ?= 9901
PLUGIN_CONFIG ?= filters/demo.json
LOG_DIR ?= envoy-demo/logs
ENVOY_CONCURRENCY ?= 2
MOCK_BASE_PORT ?= 18001
export GATEWAY_PORT ADMIN_PORT PLUGIN_CONFIG LOG_DIR ENVOY_CONCURRENCY MOCK_BASE_PORT

# Pytest workers are not used: the suite starts its own Envoys and the machine may be
# small. PYTEST_ARGS lets you narrow a run (make test PYTEST_ARGS='-k quota').
PYTEST_ARGS ?=

.PHONY: build mock wasm-target deps venv apt-deps test unit lint integration demo dist clean \
        envoy-yaml bench fuzz

wasm-target:
	@rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

build: wasm-target
	cargo build --release --target $(WASM_TARGET) -p ai-gateway-filter
	@ls -l $(WASM) | awk '{print "module: " $$9 " (" $$5 " bytes)"}'

mock:
	cargo build --release -p mock-llm

# Debian packages used by the tests (promtool / prometheus for the metrics rules).
apt-deps:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
	  echo "installing Debian packages: prometheus"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) \
	    || { echo "apt-get install prometheus failed (run as root or install it)"; exit 1; }; \
	fi

$(VENV)/.stamp: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r tests/requirements.txt
	@$(ENVOY) --version | grep -q '/$(ENVOY_VERSION)/' || { echo "expected Envoy $(ENVOY_VERSION)"; exit 1; }
	touch $@

venv: $(VENV)/.stamp

deps: wasm-target venv apt-deps

# The committed bootstrap for `func-e run -c envoy-demo/envoy.yaml` (defaults, relative paths).
envoy-yaml:
	GATEWAY_PORT=10000 ADMIN_PORT=9901 MOCK_BASE_PORT=18001 PLUGIN_CONFIG=filters/demo.json \
	  LOG_DIR=envoy-demo/logs python3 envoy-demo/render.py -o envoy-demo/envoy.yaml

unit:
	cargo test --workspace

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p ai-gateway-filter --target $(WASM_TARGET) -- -D warnings

integration: deps build mock
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

test: deps lint unit build mock
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

demo: deps build mock
	$(PY) envoy-demo/run_demo.py

dist: build
	@mkdir -p dist
	cp $(WASM) dist/ai-gateway-filter.wasm
	cd dist && sha256sum ai-gateway-filter.wasm > ai-gateway-filter.wasm.sha256
	@cat dist/ai-gateway-filter.wasm.sha256

clean:
	cargo clean
	rm -rf $(VENV) dist envoy-demo/logs
