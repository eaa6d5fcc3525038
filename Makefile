# Trunkline: `make run` sets everything up and starts the server; `make test` sets up and runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENDOR := src/trunkline/web/static/vendor
# The collaborative editing example's page loads Yjs as an ES module, with the lib0 modules it imports.
COLLAB_VENDOR := examples/collab/static/vendor
LIB0_FILES := array.js binary.js buffer.js conditions.js decoding.js dom.js encoding.js environment.js error.js \
  eventloop.js function.js iterator.js json.js logging.common.js logging.js map.js math.js metric.js number.js \
  object.js observable.js pair.js prng.js prng/Xoroshiro128plus.js prng/Xorshift32.js promise.js random.js \
  schema.js set.js storage.js string.js symbol.js time.js trait/equality.js webcrypto.js
CONFIG ?= examples/demo.toml
PORT ?=
PYTEST_ARGS ?=
# pytest worker processes (pytest-xdist); TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2

.PHONY: run test setup system-deps lint typecheck bench bench-quick bench-formats bench-mqtt bench-map bench-connect example-iot example-live example-collab example-notifications example-ai-stream example-proxy clean

setup: $(VENV)/.installed $(VENDOR)/.installed

# Debian packages the tests need (redis-server, chromium, mosquitto, curl, prometheus, nginx, haproxy, nats-server); installed only when missing.
system-deps:
	@if ! command -v redis-server >/dev/null || ! test -x /usr/bin/chromium || ! command -v mosquitto >/dev/null \
	    || ! command -v curl >/dev/null || ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null \
	    || ! test -x /usr/sbin/nginx || ! test -x /usr/sbin/haproxy || ! test -x /usr/sbin/nats-server; then \
	  echo "installing redis-server, chromium, mosquitto, curl, prometheus, nginx, haproxy and nats-server (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    redis-server chromium fonts-liberation mosquitto curl prometheus nginx haproxy nats-server >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

node_modules/.package-lock.json: package.json package-lock.json
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund

# Browser libraries are served from the package itself (no CDN).
$(VENDOR)/.installed: node_modules/.package-lock.json Makefile
	mkdir -p $(VENDOR)
	cp node_modules/centrifuge/dist/centrifuge.js $(VENDOR)/centrifuge.js
	cp node_modules/centrifuge/dist/centrifuge.protobuf.js $(VENDOR)/centrifuge.protobuf.js
	cp node_modules/uplot/dist/uPlot.iife.min.js $(VENDOR)/uPlot.iife.min.js
	cp node_modules/uplot/dist/uPlot.min.css $(VENDOR)/uPlot.min.css
	cp node_modules/mqtt/dist/mqtt.min.js $(VENDOR)/mqtt.min.js
	mkdir -p $(COLLAB_VENDOR)/lib0/prng $(COLLAB_VENDOR)/lib0/trait
	cp node_modules/yjs/dist/yjs.mjs node_modules/yjs/LICENSE $(COLLAB_VENDOR)/
	cd node_modules/lib0 && cp --parents LICENSE $(LIB0_FILES) ../../$(COLLAB_VENDOR)/lib0/
	touch $@

# `make run PORT=9000` serves on another port (or set TRUNKLINE_HTTP_SERVER_PORT).
run: setup
	$(PY) -m trunkline serve --config $(CONFIG) $(if $(PORT),--port $(PORT))

# The IoT dashboard (issue 12): Trunkline + 3 simulated paho-mqtt devices; open http://127.0.0.1:8080/.
example-iot: setup
	$(PY) examples/iot/run.py --devices 3

# Issue 13: an aiohttp backend that authenticates by session cookie through the connect proxy; open http://127.0.0.1:8090/.
example-proxy: setup
	$(PY) examples/proxy_backend/run.py

# Issue 16: per-user notifications (an aiohttp backend + Trunkline); open http://127.0.0.1:8081/.
example-notifications: setup
	$(PY) examples/notifications/run.py

# Issue 16: AI answers streamed token by token over RPC + a per-job channel; open http://127.0.0.1:8082/.
example-ai-stream: setup
	$(PY) examples/ai_stream/run.py

# The live stream room (issue 16): feed, chat with slow mode, reactions, moderator; open the URL it prints.
example-live: setup
	$(PY) examples/live_stream/run.py

# Collaborative editing with Yjs (issue 16): documents kept by an on_publish hook, snapshots in .collab-snapshots/.
example-collab: setup
	$(PY) examples/collab/run.py --snapshot-dir .collab-snapshots

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests

typecheck: setup
	$(VENV)/bin/mypy --strict src/trunkline

test: setup system-deps lint typecheck
	$(VENV)/bin/pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Issue-6 benchmarks: Trunkline vs Node ws, Socket.IO and python-socketio, same load generator (< 10 min).
bench: setup
	npm ci --ignore-scripts --no-audit --no-fund --prefix bench/peers
	$(PY) -m pip install -q -r bench/requirements.txt
	$(PY) bench/run.py

# Issue-18 regression guard: short runs of the key scenarios, Trunkline vs node-ws, one table of ratios (< 2 min).
bench-quick: setup
	npm ci --ignore-scripts --no-audit --no-fund --prefix bench/peers
	$(PY) -m pip install -q -r bench/requirements.txt
	$(PY) bench/quick.py

# Issue-18 benchmark: server CPU per connect and RSS per idle connection (19 000), Trunkline
# insecure and with HS256 JWTs next to node-ws, 3 paired rounds (~5 min); --tracemalloc: by site.
bench-connect: setup
	npm ci --ignore-scripts --no-audit --no-fund --prefix bench/peers
	$(PY) -m pip install -q -r bench/requirements.txt
	$(PY) bench/connect_cost.py

# Issue-10 benchmark: fan-out by wire format (JSON, Protobuf, half/half) and JSON before/after (~5 min).
bench-formats: setup
	$(PY) -m pip install -q -r bench/requirements.txt
	$(PY) bench/fanout_formats.py

# Issue-12 benchmark: MQTT on Trunkline next to mosquitto (Debian package), same load generator (~30 min).
bench-mqtt: setup system-deps
	$(PY) -m pip install -q -r bench/requirements.txt
	$(PY) bench/mqtt_vs_mosquitto.py

# Issue-14 benchmark: map subscriptions with centrifuge-js (snapshot of 10 000 keys, fan-out to 1 000) (~1 min).
bench-map: setup
	$(PY) bench/map.py

clean:
	rm -rf $(VENV) node_modules $(VENDOR) .pytest_cache .mypy_cache .ruff_cache .hypothesis
