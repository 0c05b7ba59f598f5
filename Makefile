# Quick start: `make demo` runs the main job on the embedded defaults; `make test` runs the tests.
# Both create the virtualenv in .venv and install what they need on first use (the first install
# builds llama-cpp-python for the embedded model from source: about 5 minutes on 2 cores).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATAMILL := $(VENV)/bin/datamill
DEMO_OUT ?= runs/demo
DEMO_SIZE ?= 5000

.PHONY: demo test test-fast test-scale lint typecheck chromium bench-lambda bench-llm clean \
	gen-scale-1k verify-scale-1k gen-scale-10k verify-scale-10k

$(PY):
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed; installing Debian's python3-venv" >&2; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	@$(PY) -m pip install -q --upgrade pip

# llama-cpp-python, built portably (issue 10): pip's default build uses -march=native, which on a CPU
# with AMX compiles ggml's AMX kernels, and GCC 12 miscompiles their tile set-up (SIGSEGV on the
# first decode; ../shared/repro/amx-tilecfg.c). GGML_NATIVE=OFF builds the AVX2/FMA/F16C kernels
# (x86-64) or generic ARMv8 ones, with no AMX code, correct on every host. --no-cache-dir and
# --force-reinstall: a wheel cached or installed earlier with other flags is never reused. The stamp
# names the version and flags, so changing either rebuilds.
LLAMA_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF
LLAMA_STAMP := $(VENV)/.llama-$(LLAMA_VERSION)-native-off

$(LLAMA_STAMP): | $(PY)
	@echo "building llama-cpp-python $(LLAMA_VERSION) with $(LLAMA_CMAKE_ARGS) (a few minutes, once)" >&2
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q --no-cache-dir --force-reinstall --no-deps \
	  'llama-cpp-python==$(LLAMA_VERSION)'
	@rm -f $(VENV)/.llama-*
	@touch $@

$(VENV)/.installed: pyproject.toml $(LLAMA_STAMP) | $(PY)
	$(PY) -m pip install -q -e '.[dev,llm,local,quality,hf,ray]'
	@touch $@

# The HTML report is tested in a real headless browser: Debian's chromium.
chromium:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the report tests" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: $(VENV)/.installed
	$(DATAMILL) doctor
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

# Seed 000's scale targets on the built-in contextual recipe. TOKENIZER=path/to/tokenizer(.json)
# measures lengths with another tokenizer; the default ships in a package.
SCALE_DIR ?= runs/scale
TOKENIZER_FLAG = $(if $(TOKENIZER),--tokenizer $(TOKENIZER),)

gen-scale-1k: $(VENV)/.installed
	$(DATAMILL) run contextual --size 1000 --seed 42 --num-shards 1 --shard-index 0 \
	  --integration-span-cap 3 $(TOKENIZER_FLAG) --out $(SCALE_DIR)/1k

verify-scale-1k: $(VENV)/.installed
	$(DATAMILL) extract contextual --in $(SCALE_DIR)/1k --out $(SCALE_DIR)/1k.extracted.jsonl $(TOKENIZER_FLAG)
	$(DATAMILL) verify $(SCALE_DIR)/1k.extracted.jsonl --report $(SCALE_DIR)/verify_scale_1k.json \
	  $(TOKENIZER_FLAG) --perf-budget-sec-per-100 2.0

# 10 shards, run in parallel (one process each), then merged in slot order.
gen-scale-10k: $(VENV)/.installed
	@for s in 0 1 2 3 4 5 6 7 8 9; do \
	  $(DATAMILL) run contextual --size 10000 --seed 42 --num-shards 10 --shard-index $$s \
	    --integration-span-cap 3 $(TOKENIZER_FLAG) --workers 1 --progress none --out $(SCALE_DIR)/10k/shard$$s & \
	done; wait
	$(DATAMILL) merge $(SCALE_DIR)/10k/shard* --out $(SCALE_DIR)/10k.jsonl

verify-scale-10k: $(VENV)/.installed
	$(DATAMILL) extract contextual --in $(SCALE_DIR)/10k.jsonl --out $(SCALE_DIR)/10k.extracted.jsonl $(TOKENIZER_FLAG)
	$(DATAMILL) verify $(SCALE_DIR)/10k.extracted.jsonl --report $(SCALE_DIR)/verify_scale_10k.json \
	  $(TOKENIZER_FLAG) --perf-budget-sec-per-100 2.0

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
