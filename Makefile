# The two commands of the README's quick start. Each creates .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test browser espeak bench

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cellstate compare

test: $(STAMP) browser espeak
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/pytest

# The report test opens the page in headless Chromium; without it that test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && echo "installing chromium for the report's browser test" \
	  && (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1; } \
	  || echo "chromium not installed: the report's browser test will be skipped"

# The speech synthesis test runs espeak-ng; without it that test skips and says why.
espeak:
	@command -v espeak-ng >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && echo "installing espeak-ng for the speech synthesis test" \
	  && (apt-get update -qq && apt-get install -y -qq espeak-ng) >/dev/null 2>&1; } \
	  || echo "espeak-ng not installed: the speech synthesis test will be skipped"

bench: $(STAMP)
	$(BIN)/python benchmarks/speed.py
