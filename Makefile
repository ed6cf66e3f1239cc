# s2s-attn: two commands on a fresh machine.
#   make train   create .venv, install, prepare the data, train the default config (eng->fra, 20 min)
#   make test    same install, lint with ruff, run the test suite
# Extra Hydra overrides go in ARGS, e.g.  make train ARGS="trainer.max_minutes=5 data=fra_eng"

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: install train test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned to the CPU wheel served locally; an unpinned torch would pull CUDA packages.
SOURCES := pyproject.toml $(shell find s2s_attn configs -name '*.py' -o -name '*.yaml' 2>/dev/null)

$(STAMP): $(SOURCES) | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --force-reinstall --no-deps .
	$(BIN)/pip install --quiet ".[dev]"
	touch $(STAMP)

install: $(STAMP)

train: install
	$(BIN)/s2s-train $(ARGS)

lint: install
	$(BIN)/ruff check s2s_attn tests scripts

test: install lint
	$(BIN)/pytest -q tests

clean:
	rm -rf $(VENV) outputs multirun data/cache .pytest_cache
