# The two entry points (see README): `make demo` and `make test`. Both create/refresh .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test parity bench clean
setup:
	bash scripts/setup_env.sh $(VENV)

demo: setup
	$(VENV)/bin/ports demo --out out

test: setup
	$(PY) -m pytest -q

parity: setup
	$(VENV)/bin/ports parity --json out/parity.json

bench: setup
	mkdir -p benchmarks/results
	$(VENV)/bin/ports bench --json benchmarks/results/bench.json

clean:
	rm -rf out .pytest_cache
