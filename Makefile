# Two commands for a new user: `make run` and `make test`. Everything else is a step of those.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install deps migrate lint bench clean

run: install migrate
	$(BIN)/idp serve --host $${IDP_HOST:-127.0.0.1} --port $${IDP_PORT:-5000}

# The suite runs twice: embedded (SQLite + SQL store), then PostgreSQL + Redis started on loopback.
test: install
	bash .ci/test.sh

install: deps $(STAMP)

# apt packages: only what is missing, so a second run does not touch apt.
deps:
	@bash .ci/deps.sh runtime

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -U pip setuptools wheel
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	@# xmlsec refuses to import when it and lxml use different libxml2 builds: fail here, not in a test.
	$(BIN)/python -c "import lxml.etree, xmlsec"
	@touch $(STAMP)

migrate: install
	$(BIN)/idp db upgrade

lint: install
	$(BIN)/ruff check idp tests bench wsgi.py

bench: install
	bash bench/run.sh

clean:
	rm -rf $(VENV) instance
