# The two commands a newcomer runs: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_SECONDS ?= 90
PYTEST_ARGS ?=

.PHONY: demo test check bench bench-flood bench-e2e bench-drain bench-bus bench-ingest bench-sim bench-web bench-peer bench-fleet bench-soak system-deps venv clean install

system-deps:
	@scripts/setup-system.sh

$(STAMP): pyproject.toml
	@echo "make: setting up the Python environment in $(VENV) (log: $(VENV)/install.log)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@{ $(BIN)/python -m pip install --upgrade pip && $(BIN)/python -m pip install -e '.[test]'; } \
		> $(VENV)/install.log 2>&1 || { tail -n 30 $(VENV)/install.log; \
		echo "make: installing the Python packages failed; see $(VENV)/install.log" >&2; exit 1; }
	@touch $(STAMP)

venv: system-deps $(STAMP)

demo: venv
	@DEMO_SECONDS=$(DEMO_SECONDS) $(BIN)/dust-sim demo --seconds $(DEMO_SECONDS)

test: venv
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

check: venv
	@mkdir -p build/typecheck && ln -sfn ../../firmware-sim build/typecheck/firmware_sim
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy

bench: bench-e2e bench-drain bench-bus bench-ingest bench-sim

bench-e2e: venv
	@$(BIN)/python bench/e2e.py

bench-drain: venv
	@$(BIN)/python bench/drain.py

bench-bus: venv
	@$(BIN)/python bench/bus.py

bench-ingest: venv
	@$(BIN)/python bench/ingest.py

bench-sim: venv
	@$(BIN)/python bench/sim.py

bench-flood: venv
	@$(BIN)/python bench/flood.py

bench-web: venv
	@$(BIN)/python bench/web.py

bench-peer: venv
	@$(BIN)/python bench/peer.py

# 100 agents and a broker restart (~2.5 min, ~6 GB RSS): not part of `make bench`
bench-fleet: venv
	@$(BIN)/python bench/fleet.py

bench-soak: venv  # 15 minutes; not part of `make bench`
	@$(BIN)/python bench/soak.py

# Install as a systemd service on this machine (as root): docs/operations.md.
install:
	@systemd/install.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
