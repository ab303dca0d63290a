# strato — set-up, demo, tests. Every install step lives here so a fresh clone works.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint fuzz bench iac-check clean

install: $(STAMP)

# torch==2.13.0 first: it is the CPU wheel on local disk; any other spec pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/strato quickstart

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf .strato build dist .pytest_cache .mypy_cache .ruff_cache

# Template checks, offline. aws-sam-cli, cfn-lint and checkov pin many packages of their own:
# they live in a separate tools venv, never in .venv.
IAC_VENV := .venv-iac
IAC_STAMP := $(IAC_VENV)/.installed

$(IAC_STAMP):
	test -x $(IAC_VENV)/bin/python || $(PYTHON) -m venv $(IAC_VENV)
	$(IAC_VENV)/bin/python -m pip install -q --upgrade pip
	$(IAC_VENV)/bin/python -m pip install -q aws-sam-cli cfn-lint checkov
	touch $(IAC_STAMP)

iac-check: $(IAC_STAMP)
	AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 $(IAC_VENV)/bin/sam validate --lint --template template.yaml
	$(IAC_VENV)/bin/cfn-lint template.yaml
	$(IAC_VENV)/bin/checkov -f template.yaml --framework cloudformation --skip-download --compact --quiet

# Fuzz the codec, the edge infer route and the Lambda handler with 20,000 random examples per
# target (CI runs 2,000, derandomized). FUZZ_EXAMPLES=N to change the count.
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz STRATO_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/fuzz \
		-p no:cacheprovider --timeout 3600 --hypothesis-show-statistics

# Every benchmark, then benchmarks/results/REPORT.md (tables, charts, the machine).
# BENCH_ARGS=--quick for a short run.
MLSERVER_VENV := benchmarks/.venv-mlserver
# The edge benchmark's baseline: MLServer 1.7 in a venv of its own (its pins are not ours;
# it breaks with uvloop 0.23, FACTS.md).
$(MLSERVER_VENV)/.installed:
	test -x $(MLSERVER_VENV)/bin/python || $(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/python -m pip install -q mlserver==1.7.1 'uvloop<0.22' onnxruntime numpy
	touch $@

bench: $(STAMP) $(MLSERVER_VENV)/.installed
	$(PY) benchmarks/report.py $(BENCH_ARGS)
