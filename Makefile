# Thin wrappers around `invoke` (tasks.py); the work lives in the wasmforge package.
# `make build` and `make test` set everything up on a fresh machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODEL ?= lenet-digits

.PHONY: setup build test test-tools test-python test-unit test-rust docker-test conformance clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements/host.txt pyproject.toml
	@command -v debootstrap >/dev/null || { \
	  echo "installing debootstrap (needed to bootstrap the base image offline)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements/host.txt
	# The checkout itself, editable: `wasmforge` (= `invoke`) on the PATH of the
	# venv. setuptools comes from the lock above, so no build isolation is needed.
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

build: setup
	$(BIN)/invoke build --model $(MODEL)

test: test-tools test-rust test-python

# Node and Chromium for the Node example's and the browser demo's tests (they
# skip, saying why, without them): Debian's packages when apt is there.
test-tools:
	@missing=""; command -v node >/dev/null || missing="$$missing nodejs"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	      echo "installing$$missing (Node example and browser demo tests)"; \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	    else echo "note:$$missing not installed: their tests will be skipped"; fi; fi

test-rust:
	cd rust_app && cargo test --workspace --locked --offline

# pytest exits 5 when it collected no test; that is not a failure of the suite.
test-python: setup
	$(BIN)/python -m pytest tests -ra; code=$$?; [ $$code -eq 0 ] || [ $$code -eq 5 ]

# The fast half: no Docker daemon needed (tests/e2e/ is the other half).
test-unit: setup
	$(BIN)/python -m pytest tests -ra -m "not e2e"

docker-test: setup
	$(BIN)/invoke smoke --model $(MODEL)

# A fixed, seeded sample of the ONNX node suite built and run as wasm
# (docs/conformance.md); CI runs it. The whole suite: invoke conformance --suite all.
CONFORMANCE_LIMIT ?= 150
CONFORMANCE_MIN_PASS ?= 75
conformance: setup
	$(BIN)/invoke conformance --suite node --limit $(CONFORMANCE_LIMIT) --jobs 2 --min-pass $(CONFORMANCE_MIN_PASS)

clean:
	rm -rf dist .cache/staging
