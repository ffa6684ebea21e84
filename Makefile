# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set up on demand.
SHELL := /bin/bash
PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMPS := .cache/stamps
APT_PACKAGES := tesseract-ocr tesseract-ocr-eng insighttoolkit5-examples invesalius-examples mricron-data dicom3tools orthanc orthanc-dicomweb chromium
# Node.js and npm (the viewer bundle): Debian's packages only when no npm is on PATH (an image may ship NodeSource's).
NODE_PACKAGES := nodejs npm
PYTEST_ARGS ?=

.PHONY: setup test demo apt data clean-venv bench

setup: $(STAMPS)/apt $(STAMPS)/venv $(STAMPS)/scale $(STAMPS)/data $(STAMPS)/web

# Debian packages: installed only when missing (dpkg -s is quick), so a second run costs nothing.
$(STAMPS)/apt:
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	command -v npm >/dev/null 2>&1 || missing="$$missing $(NODE_PACKAGES)"; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

# Virtual environment: torch first, alone (the CPU build); then the project with every pin in constraints.txt.
$(STAMPS)/venv: pyproject.toml constraints.txt
	@mkdir -p $(STAMPS)
	@test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[train,test,serve,infer]'
	@touch $@

# Optional extra medanomaly[scale]: Ray Data for batch inference over many machines (--engine ray).
$(STAMPS)/scale: $(STAMPS)/venv
	$(PIP) install -q -c constraints.txt -e '.[scale]'
	@touch $@

# Real data of ../shared/DATA.md, fetched once into .cache/data.
$(STAMPS)/data: $(STAMPS)/venv src/medanomaly/data/sources.py
	$(PY) -m medanomaly.data.sources fetch
	@touch $@

# The viewer's NiiVue bundle and the API page's Swagger UI: npm ci from the committed lockfile, no install scripts
# (swagger-ui-dist pulls in @scarf/scarf, whose postinstall reports the install to a server), files copied into
# web/static so that no page of the service loads anything from outside it.
WEB := src/medanomaly/web
$(STAMPS)/web: $(STAMPS)/apt $(WEB)/package.json $(WEB)/package-lock.json
	@mkdir -p $(STAMPS)
	cd $(WEB) && npm ci --ignore-scripts --no-audit --no-fund --silent
	cp $(WEB)/node_modules/@niivue/niivue/dist/niivue.umd.js $(WEB)/static/niivue.umd.js
	cp $(WEB)/node_modules/swagger-ui-dist/swagger-ui-bundle.js $(WEB)/node_modules/swagger-ui-dist/swagger-ui.css $(WEB)/static/
	@touch $@

test: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -n 2 --dist loadgroup --durations=15 --durations-min=30 $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/medanomaly demo

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV) $(STAMPS)
