# The two commands a newcomer needs: `make run` and `make test`.
# Everything else (the venv, the packages) is set up on the way.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test system-deps lint typecheck pytest monitoring dashboard-preview bench bench-quick soak json-call topology clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: start the gateway with the embedded Chert simulator (prints a curl line)
run: $(STAMP)
	$(BIN)/chert-gateway serve --simulate

## test: lint, type-check and run the whole test suite
test: system-deps lint typecheck pytest

## system-deps: the Debian packages the tests use (curl, prometheus/promtool)
system-deps:
	@scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

## bench: direct vs gateway vs nginx, same run (minutes; not part of `make test`)
bench: $(BENCH_STAMP)
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || scripts/install-nginx.sh
	$(BIN)/python benchmarks/bench.py

## bench-quick: the same in under a minute, for use while optimising
bench-quick: $(BENCH_STAMP)
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || scripts/install-nginx.sh
	$(BIN)/python benchmarks/bench.py --quick

## soak: 15 minutes of mixed load; the gateway's RSS, open files and threads over time
soak: $(BENCH_STAMP)
	$(BIN)/python benchmarks/soak.py

## topology: sidecar vs two replicas sharing Redis, same run (a minute; needs redis-server)
topology: $(BENCH_STAMP) system-deps
	$(BIN)/python benchmarks/topology.py

## json-call: the CPU of one JSON call to Chert, by HTTP client (a minute)
json-call: $(BENCH_STAMP)
	$(BIN)/python benchmarks/json_call.py

## dashboard-preview: every dashboard panel from its own PromQL on a real Prometheus, after a minute of load, into docs/dashboard-preview.png
dashboard-preview: $(BENCH_STAMP) system-deps
	$(BIN)/python monitoring/preview.py

## monitoring: re-render k8s/monitoring/ from monitoring/ (dashboard, alerts)
monitoring: $(STAMP)
	$(BIN)/python monitoring/render.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
