# s2s-attn: two commands on a fresh machine.
#   make train   create .venv, install, prepare the data, train the default config (eng->fra, 20 min)
#   make test    same install (with Chromium for the browser test), lint with ruff, run the test suite
#   make bench   training and decoding speed (scripts/benchmark.py, under 10 minutes)
#   make lesson  train two small models and draw the attention of docs/lessons.md's teaching sentences
# Hydra overrides go on the command line or in ARGS:
#   make train data=cmn_eng trainer.max_minutes=5        make train ARGS="-m attention=bahdanau,luong_general"

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
# command-line assignments other than make's own (PYTHON, VENV, ARGS) are Hydra overrides
OVERRIDES := $(filter-out PYTHON=% VENV=% ARGS=% BENCH_ARGS=% LESSON_%,$(MAKEOVERRIDES))

.PHONY: install train test lint bench lesson clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned to the CPU wheel served locally; an unpinned torch would pull CUDA packages.
SOURCES := pyproject.toml $(shell find s2s_attn configs -name '*.py' -o -name '*.yaml' -o -name '*.cpp' 2>/dev/null)

$(STAMP): $(SOURCES) | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --force-reinstall --no-deps .
	$(BIN)/pip install --quiet ".[dev,align]"
	@# A CJK font for Chinese/Japanese/Korean labels in attention plots: apt when root, else a warning.
	@$(BIN)/python -c "import sys; from s2s_attn.viz.heatmap import cjk_font_family as f; sys.exit(f() is None)" 2>/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && echo "installing a CJK font (apt-get install fonts-wqy-microhei)" \
	       && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fonts-wqy-microhei >/dev/null 2>&1 \
	            || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fonts-wqy-microhei >/dev/null 2>&1; }; }; } \
	  || echo "warning: no CJK font: Chinese/Japanese/Korean tokens in attention plots will show as empty boxes; install one (sudo apt-get install fonts-wqy-microhei) or set S2S_CJK_FONT=/path/to/font.ttf"
	@# Chromium and its driver for the explorer's browser test (tests/browser): apt when root, else a warning.
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && echo "installing Chromium for the explorer's browser test (apt-get install chromium chromium-driver)" \
	       && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
	            || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1; }; }; } \
	  || echo "warning: no Chromium: the explorer's browser test (tests/browser) is skipped; install chromium and chromium-driver"
	touch $(STAMP)

install: $(STAMP)

train: install
	$(BIN)/s2s-train $(OVERRIDES) $(ARGS)

lint: install
	$(BIN)/ruff check s2s_attn tests scripts

test: install lint
	$(BIN)/pytest -q tests

# speed on this machine: one JSON line per configuration (training tok/s, GFLOP/s, decoding sent/s, RSS);
# BENCH_ARGS adds options, e.g. BENCH_ARGS="--peer onmt_mlp" to measure OpenNMT-py beside us in the same run
bench: install
	$(BIN)/python scripts/benchmark.py $(BENCH_ARGS)

# the lesson pictures of docs/lessons.md: train two small models (once; LESSON_MINUTES each), then plot the
# attention of the teaching sentences into docs/lessons/
LESSON_MINUTES ?= 10
LESSON_RUNS    ?= runs/lesson
lesson: install
	@[ -e $(LESSON_RUNS)/cmn_eng/checkpoints/best.pt ] || $(BIN)/s2s-train data=cmn_eng \
	    trainer.max_minutes=$(LESSON_MINUTES) trainer.eval_every=250 hydra.run.dir=$(LESSON_RUNS)/cmn_eng
	@[ -e $(LESSON_RUNS)/eng_fra/checkpoints/best.pt ] || $(BIN)/s2s-train data=eng_fra \
	    trainer.max_minutes=$(LESSON_MINUTES) trainer.eval_every=250 hydra.run.dir=$(LESSON_RUNS)/eng_fra
	$(BIN)/s2s-plot $(LESSON_RUNS)/cmn_eng "欢迎来北京。" "我很喜欢这本书。" --out docs/lessons --prefix zh_en
	$(BIN)/s2s-plot $(LESSON_RUNS)/eng_fra "The dog didn't cross the street because it was too tired." \
	    "My sister lost her keys." --out docs/lessons --prefix pronoun

clean:
	rm -rf $(VENV) outputs multirun data/cache .pytest_cache
