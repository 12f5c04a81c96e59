# Two entry points: `make demo` (main job on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench clean

$(BIN)/framemem: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/framemem

demo: install
	$(BIN)/framemem demo --out demo_out

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/bench_speed.py

clean:
	rm -rf demo_out .pytest_cache
