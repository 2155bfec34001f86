# The two commands of the README: `make up` brings up a cluster, `make test` runs every test.
VENV ?= .venv
PY := $(VENV)/bin/python
SKIFF := $(VENV)/bin/skiff
DATA_DIR ?=

.PHONY: up deps server test lint unit e2e bench clean

up: deps  ## install what is missing, then run `skiff server` in the foreground
	$(SKIFF) server $(if $(DATA_DIR),--data-dir $(DATA_DIR))

deps: $(VENV)/.installed
	@command -v etcd >/dev/null 2>&1 || { echo "installing etcd-server (for the etcd backend tests)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null) \
	  || echo "warning: could not install etcd-server; etcd tests will fail"; }

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

lint: deps
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint  ## ruff, mypy, import layers, then the whole pytest suite
	$(VENV)/bin/pytest -q -ra

unit: deps
	$(VENV)/bin/pytest -q tests/unit

e2e: deps
	$(VENV)/bin/pytest -q tests/e2e

bench: deps
	$(PY) bench/api.py

clean:
	rm -rf $(VENV) build *.egg-info
