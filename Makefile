# Quick start: `make demo` runs the main job on the embedded defaults; `make test` runs the tests.
# Both create the virtualenv in .venv and install what they need on first use (the first install
# builds llama-cpp-python for the embedded model: a few minutes; pip caches the wheel after that).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATAMILL := $(VENV)/bin/datamill
DEMO_OUT ?= runs/demo
DEMO_SIZE ?= 5000

.PHONY: demo test test-fast test-scale lint typecheck chromium bench-lambda bench-llm clean

$(PY):
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed; installing Debian's python3-venv" >&2; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	@$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev,llm,local,quality]'
	@touch $@

# The HTML report is tested in a real headless browser: Debian's chromium.
chromium:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the report tests" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: $(VENV)/.installed
	$(DATAMILL) run lambda-traces --size $(DEMO_SIZE) --workers 2 --out $(DEMO_OUT)
	$(DATAMILL) status $(DEMO_OUT)
	@echo "first record:"; $(DATAMILL) cat $(DEMO_OUT) | head -n 1
	$(DATAMILL) run examples/cards-embedded.yaml --workers 1 --out runs/demo-cards
	@echo "LLM records (embedded SmolLM2):"; $(DATAMILL) cat runs/demo-cards | head -n 3

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# pytest exits 5 when it collected no tests: that is a failure here, never a pass.
define run_pytest
	@$(PY) -m pytest $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc
endef

test-fast: $(VENV)/.installed
	$(call run_pytest,-m "not scale" -q -x)

test: lint typecheck chromium
	$(call run_pytest,-m "not scale" -q)

test-scale: $(VENV)/.installed
	$(call run_pytest,-m scale -q)

bench-lambda: $(VENV)/.installed
	$(DATAMILL) bench lambda --size 120000 --workers 2

bench-llm: $(VENV)/.installed
	$(DATAMILL) bench llm --n 1000 --concurrency 64 --latency-ms 200 --repeat 3
	$(DATAMILL) bench llm --n 2000 --concurrency 64 --latency-ms 0 --repeat 3
	$(DATAMILL) bench embedded --n 16 --max-tokens 64

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
