# refund-ledger. `make run` and `make test` are all a new user needs.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test test-unit test-integration lint bench clean venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)  ## the whole stack: embedded broker + PostgreSQL, services, audit API, demo traffic
	$(BIN)/refund-ledger up

test: $(STAMP)  ## the whole suite (unit, integration, end to end)
	$(BIN)/pytest -q -p no:cacheprovider

test-unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

test-integration: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider tests/integration tests/e2e

lint: $(STAMP)
	$(BIN)/ruff check services tests

clean:
	rm -rf $(VENV) build *.egg-info
