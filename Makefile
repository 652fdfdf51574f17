# refund-ledger. `make run` and `make test` are all a new user needs.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test test-unit test-integration lint bench bench-quick clean venv promtool

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)  ## the whole stack: embedded broker + PostgreSQL, services, audit API, demo traffic
	$(BIN)/refund-ledger up

promtool:  ## promtool for the alert rule tests (Debian's prometheus package)
	@command -v promtool >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends prometheus; }

browser:  ## Debian's Chromium and Noto fonts for the console's browser test (Playwright drives it; never `playwright install`)
	@{ command -v chromium >/dev/null 2>&1 && dpkg -s fonts-noto-core >/dev/null 2>&1; } || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-noto-core; }

test: $(STAMP) promtool browser  ## the whole suite (unit, integration, end to end)
	$(BIN)/pytest -q -p no:cacheprovider

test-unit: $(STAMP) promtool
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

test-integration: $(STAMP) browser
	$(BIN)/pytest -q -p no:cacheprovider tests/integration tests/e2e

bench: $(STAMP)  ## the full benchmarks (10-25 minutes here): bench/results/*.json and the README's Performance table
	$(BIN)/python -m bench

bench-quick: $(STAMP)  ## every benchmark in under a minute (bench/results/*-quick.json)
	$(BIN)/python -m bench --quick

lint: $(STAMP)
	$(BIN)/ruff check services tests

clean:
	rm -rf $(VENV) build *.egg-info
