# The whole set-up on a fresh clone is `make demo` or `make test`: each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

# Both distributions: the engine and, from emulators/, the servers it is tested against.
# systemd-analyze (Debian's systemd) checks config/oktasync.service in the tests; CI runs as root.
$(STAMP): pyproject.toml emulators/pyproject.toml
	command -v systemd-analyze >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd)
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./emulators -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/oktasync demo

test: $(STAMP)
	$(BIN)/ruff check src emulators tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src emulators tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ./emulators -e '.[test,bench]'
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
