# The two commands of the README: `make up` brings up a cluster, `make test` runs every test.
VENV ?= .venv
PY := $(VENV)/bin/python
SKIFF := $(VENV)/bin/skiff
DATA_DIR ?=

.PHONY: up deps server test lint unit e2e bench clean

up: deps  ## install what is missing, then run `skiff server` in the foreground
	$(SKIFF) server $(if $(DATA_DIR),--data-dir $(DATA_DIR))

# Debian packages the cluster and the tests use: etcd (the etcd backend), runc, CNI plugins and
# iptables and conntrack (the node agent and its service proxy), docker-registry, skopeo, umoci and busybox-static (images).
APT_PACKAGES := etcd-server etcd-client runc containernetworking-plugins iptables iproute2 conntrack docker-registry skopeo umoci busybox-static

deps: $(VENV)/.installed
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing Debian packages:" $$missing; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	  || echo "warning: could not install $$missing; tests that need them will fail"; fi

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
