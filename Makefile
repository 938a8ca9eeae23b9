# The whole set-up on a fresh clone is `make demo` or `make test`: each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench readme clean

# Both distributions: the engine and, from emulators/, the servers it is tested against.
# systemd-analyze (Debian's systemd) checks config/oktasync.service in the tests; CI runs as root.
# The web console's tests drive Debian's chromium through its chromedriver (tests/console/).
$(STAMP): pyproject.toml emulators/pyproject.toml
	command -v systemd-analyze >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)
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

# The README's settings reference, from the settings' declarations (a test compares them).
readme: $(STAMP)
	$(BIN)/python -m oktasync.settings > .settings.md
	$(BIN)/python -c "import re,pathlib; p=pathlib.Path('README.md'); t=p.read_text(); \
	  b=pathlib.Path('.settings.md').read_text(); \
	  p.write_text(re.sub(r'(?s)(<!-- settings:begin -->\n).*?(<!-- settings:end -->)', \
	  lambda m: m.group(1)+b+m.group(2), t))"
	rm -f .settings.md

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
