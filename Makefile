# Two commands do all the set-up:  `make serve`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# Server processes on PORT, each with its own compute slots and worker processes. With more
# than one, they add up their metrics in METRICS_DIR (prometheus-client's multiprocess mode),
# emptied at each start.
WORKERS ?= 1
METRICS_DIR ?= build/metrics

.PHONY: serve test lint bench tutorial chromium nginx reliability

# The service's dependencies (torch's CUDA build: about 2 minutes and 5.8 GB the first time).
$(VENV)/.serve-deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.client-deps: $(VENV)/.serve-deps clients/python/pyproject.toml
	$(PY) -m pip install --quiet -e './clients/python[test,progress]'
	touch $@

# The test tools, Ray Serve (tests/scale), and Chromium for the docs page's browser tests
# (tests/docs) and nginx for the balancer's (tests/scale): Debian's packages, installed when
# they are missing and apt-get can (as root); elsewhere those tests are skipped and say why.
$(VENV)/.test-deps: $(VENV)/.client-deps | chromium nginx
	$(PY) -m pip install --quiet -e '.[test,ray]'
	touch $@

chromium:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "Chromium could not be installed: the browser tests will be skipped" >&2

# nginx for the tests of deploy/nginx (tests/scale): Debian's package, the same way.
nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || [ "$$(id -u)" != 0 ] \
		|| ! command -v apt-get >/dev/null \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; } \
		|| echo "nginx could not be installed: the tests of deploy/nginx will be skipped" >&2

serve: $(VENV)/.serve-deps
ifeq ($(WORKERS),1)
	$(PY) -m uvicorn service.main:app --host $(HOST) --port $(PORT) --no-access-log \
		--loop uvloop --http service.protocol:HeadTimedProtocol
else
	rm -rf $(METRICS_DIR) && mkdir -p $(METRICS_DIR)
	PROMETHEUS_MULTIPROC_DIR=$(abspath $(METRICS_DIR)) $(PY) -m uvicorn service.main:app \
		--host $(HOST) --port $(PORT) --workers $(WORKERS) --no-access-log \
		--loop uvloop --http service.protocol:HeadTimedProtocol
endif

lint: $(VENV)/.test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy tests/clients/typed_usage.py
	$(PY) clients/python/scripts/unasync.py --check

# The hostile requests of tests/reliability run last, on their own: they measure /health
# latency and memory against a live server, which other tests running beside would disturb.
test: lint
	$(PY) -m pytest -n 2 --dist loadfile --hypothesis-profile=ci --ignore=tests/reliability
	$(MAKE) reliability

reliability: $(VENV)/.test-deps
	$(PY) -m pytest tests/reliability

bench: $(VENV)/.serve-deps
	$(PY) bench/transport.py
	$(PY) bench/overhead.py
	$(PY) bench/matmul.py

tutorial: $(VENV)/.client-deps
	$(PY) examples/tutorial.py http://$(HOST):$(PORT) --out tutorial-figures
