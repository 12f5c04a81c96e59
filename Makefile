# Two entry points: `make demo` (main job on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# The browser tests drive Debian's chromium (no browser download); `make test` installs it when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install browser demo app test screenshots bench clean

$(BIN)/framemem: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/framemem

browser:
	@test -x /usr/bin/chromium || { echo "installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

demo: install
	$(BIN)/framemem demo --out demo_out

app: install
	$(BIN)/framemem app

test: install browser
	$(BIN)/python -m pytest

# Re-take docs/images/app-*.png from the real page (the browser tests write them).
screenshots: install browser
	FRAMEMEM_DOCS_SCREENSHOTS=docs/images $(BIN)/python -m pytest tests/test_app_browser.py

bench: install
	$(BIN)/python benchmarks/bench_speed.py

clean:
	rm -rf demo_out .pytest_cache
