# The two commands of the Quick start: `make serve` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

serve: $(BIN)/.installed
	$(BIN)/chat-server serve

# The official Node clients some tests drive (skipped without Node; CI requires them).
NODE_CLIENTS := tests/node/node_modules/.package-lock.json
$(NODE_CLIENTS): tests/node/package-lock.json
	if command -v npm >/dev/null; then npm ci --prefix tests/node --no-audit --no-fund --loglevel=error; fi

# Tests wait on servers, browsers and Node far more than they compute: four workers keep two
# cores busy (worksteal: a worker that runs dry takes tests queued for another, so the slow ones
# do not make a tail). Each worker has its own PostgreSQL and Redis database (tests/conftest.py).
TEST_WORKERS ?= 4
test: $(BIN)/.installed $(NODE_CLIENTS)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal
