# Two commands: `make demo` and `make test`. Each creates .venv from nothing when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.slimkit-installed

.PHONY: demo test lint bench clean browser

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the pinned CPU build from this machine's disk (a bare `torch` pulls CUDA).
	$(BIN)/pip install -q torch==2.13.0
	# constraints.txt only steers pip's resolver (it would otherwise backtrack for many minutes).
	$(BIN)/pip install -q -c constraints.txt -e '.[all]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/slimkit demo -o demo-out

# Debian's Chromium for the search report's browser test (playwright drives it; it never downloads a browser).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium)

test: $(STAMP) browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_conversion.py

clean:
	rm -rf demo-out .pytest_cache
