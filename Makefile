# The README's commands. Everything a fresh machine needs is installed from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PEERS_DIR := $(shell scripts/peers.sh --print)
export PYTHANOS_PEERS_DIR := $(PEERS_DIR)

.PHONY: quickstart test bench peers system-peers venv clean proto e2e golden fuzz compliance

## make quickstart: start what pythanos has so far on this machine (see README);
## SCENARIO=receive: seed 002's receive topology (two receivers, replication 2) instead of the course
SCENARIO ?= course
quickstart: venv system-peers
	$(PY) scripts/$(if $(filter receive,$(SCENARIO)),quickstart_receive.py,quickstart.py)

## make test: venv + project + test extras, system peers, Go peers, then the whole suite
test: system-peers
	@set -o pipefail; \
	scripts/peers.sh > $(VENV).peers.log 2>&1 & peers=$$!; \
	$(MAKE) --no-print-directory venv || { kill $$peers; exit 1; }; \
	if ! wait $$peers; then cat $(VENV).peers.log; echo "peers build failed"; exit 1; fi; \
	tail -n 3 $(VENV).peers.log; \
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

## make bench: print one line per figure
bench: venv system-peers
	MALLOC_TOP_PAD_=67108864 $(PY) benchmarks/run.py $(BENCH_ARGS)  # as the component image runs

## make e2e: end-to-end tests in real pods (tests/e2e; `make test` does not run them). On kind where kind and a
## Docker engine exist; elsewhere on a single-node cluster this machine starts from upstream parts
## (tests/e2e/localcluster.py: root, Debian containerd/runc/CNI, the Go peers of `scripts/peers.sh --cluster`,
## images from tests/e2e/images.py). PYTHANOS_E2E_BACKEND=kind|local overrides the choice.
e2e: venv
	@set -eo pipefail; backend="$${PYTHANOS_E2E_BACKEND:-}"; \
	if [ -z "$$backend" ]; then \
	  if command -v kind >/dev/null && docker info >/dev/null 2>&1; then backend=kind; else backend=local; fi; \
	fi; \
	echo "e2e backend: $$backend"; \
	if [ "$$backend" = local ]; then scripts/system-peers-cluster.sh; scripts/peers.sh --cluster | tail -n 2; fi; \
	PYTHANOS_E2E=1 PYTHANOS_E2E_BACKEND=$$backend $(PY) -m pytest tests/e2e -rs $(PYTEST_ARGS)

## make compliance: Prometheus' alert-generator compliance suite against pythanos rule (tests/compliance,
## about 40 minutes; `make test` does not run it). Builds its tester with `scripts/peers.sh --compliance`.
compliance: venv system-peers
	scripts/peers.sh --compliance | tail -n 2
	PYTHANOS_ALERT_COMPLIANCE=1 $(PY) -m pytest tests/compliance -rs $(PYTEST_ARGS)

## make golden: rewrite the golden files (tests/golden/operator) from the current render; review the diff
golden: venv
	UPDATE_GOLDEN=1 $(PY) -m pytest -q tests/test_operator_render.py tests/test_operator_receive.py tests/test_operator_rule.py -k golden

## make fuzz: every fuzz target (fuzz/targets/) for FUZZ_TIME seconds (per target), one after another, with the
## C kernels built by clang with ASan + UBSan + libFuzzer coverage into .fuzz-build (never into .venv);
## FUZZ_TARGETS picks some. Prints executions per target; crashing inputs land in .fuzz-build/artifacts/.
FUZZ_TIME ?= 60
FUZZ_TARGETS ?=
fuzz: venv
	scripts/fuzz.sh $(PY) $(FUZZ_TIME) $(FUZZ_TARGETS)

peers:
	scripts/peers.sh

## make proto: regenerate the checked-in protobuf modules (StoreAPI and Prometheus remote protocol)
proto: venv
	$(PY) -m pip install -q 'grpcio-tools==1.85.1'
	$(PY) components/pythanos/storeapi/generate.py
	$(PY) -m pythanos.remote.prompb.generate

system-peers:
	@scripts/system-peers.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py $(wildcard components/pythanos/*/*.c components/pythanos/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) $(VENV).peers.log build *.egg-info components/*.egg-info .fuzz-build .fuzz-build.build.log
