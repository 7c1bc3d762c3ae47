# lakebed developer commands. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The demo's project (the shop example): its state, Dagster runs included, lives in $(DEMO)/.lakebed.
DEMO ?= shop
export GX_ANALYTICS_ENABLED := false
export DAGSTER_DISABLE_TELEMETRY := 1

.PHONY: install demo test test-all bench lint ui clean

install: $(STAMP)

# The exact versions in uv.lock; `--locked` fails when pyproject.toml and the lock disagree (`uv lock`
# updates it). lakebed itself is installed editable (docs/design.md, "Packaging"). Bytecode is compiled at
# install: every CLI call, Dagster process and test subprocess then starts in a third of the time.
$(STAMP): pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.4"
	$(BIN)/uv sync --locked --extra dev --quiet --compile-bytecode
	touch $(STAMP)

demo: install
	$(BIN)/lakebed demo --dir $(DEMO)

ui: install
	$(BIN)/lakebed init $(DEMO) --example shop
	$(BIN)/lakebed --project $(DEMO) ui

# pytest exits 5 when it collects nothing; that is not a failure.
test: install
	$(BIN)/python -m pytest -m "not slow" -q; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

test-all: install
	$(BIN)/python -m pytest -q; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

bench: install
	$(BIN)/python -m bench

lint: install
	$(BIN)/uv lock --check --offline --quiet
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p lakebed
	$(BIN)/lint-imports --no-logo

clean:
	rm -rf $(VENV) .lakebed $(DEMO) bench/out
