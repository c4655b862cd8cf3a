# Two commands do all the set-up:  `make serve`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint bench tutorial chromium

# The service's dependencies (torch's CUDA build: about 2 minutes and 5.8 GB the first time).
$(VENV)/.serve-deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.client-deps: $(VENV)/.serve-deps clients/python/pyproject.toml
	$(PY) -m pip install --quiet -e './clients/python[test]'
	touch $@

# The test tools, and Chromium for the docs page's browser tests (tests/docs): Debian's
# package, installed when it is missing and apt-get can (as root); elsewhere those tests are
# skipped and say why.
$(VENV)/.test-deps: $(VENV)/.client-deps | chromium
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

chromium:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "Chromium could not be installed: the browser tests will be skipped" >&2

serve: $(VENV)/.serve-deps
	$(PY) -m uvicorn service.main:app --host $(HOST) --port $(PORT) --no-access-log

lint: $(VENV)/.test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy tests/clients/typed_usage.py
	$(PY) clients/python/scripts/unasync.py --check

# The hostile-request suite runs on its own after the rest: it measures /health latency and
# memory of a live server, which tests running beside it on the same cores would disturb.
test: lint
	$(PY) -m pytest -n 2 --dist loadfile --hypothesis-profile=ci --ignore=tests/reliability
	$(PY) -m pytest tests/reliability

bench: $(VENV)/.serve-deps
	$(PY) bench/transport.py
	$(PY) bench/overhead.py
	$(PY) bench/matmul.py

tutorial: $(VENV)/.client-deps
	$(PY) examples/tutorial.py http://$(HOST):$(PORT) --out tutorial-figures
