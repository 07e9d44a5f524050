# CG81 guideline assistant. `make help` lists the targets.
# Two environments: .venv (Python 3.11: core, rasa-sdk action server, sentence-transformers, faiss,
# pytest) and .venv-rasa (Python 3.10: Rasa 3.6.21, spaCy 3.4). Everything installs from the pinned
# lock files in requirements/; nothing is downloaded at run time.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PY311 ?= python3
PY310 ?= $(shell scripts/find_python310.sh 2>/dev/null)
VENV := .venv
RVENV := .venv-rasa
PY := $(VENV)/bin/python
RPY := $(RVENV)/bin/python
RASA := $(RVENV)/bin/rasa
MODEL := models/cg81.tar.gz
INDEX := build/index/meta.json
GOLD := tests/gold/cg81_gold.yaml
HELDOUT := tests/gold/cg81_heldout.yaml
# Written from the guideline text alone, without seeing the gold items (issue 8): scored, never tuned on.
HELDOUT2 := tests/gold/cg81_heldout2.yaml
# Written this round the same way by another writer (issue 8): scored, never tuned on.
HELDOUT3 := tests/gold/cg81_heldout3.yaml
# Written in a later round the same way by a fourth writer, scored before any change of that round and after.
HELDOUT4 := tests/gold/cg81_heldout4.yaml
# Written in the round after by a fifth writer the same way, scored before any change of that round and after.
HELDOUT5 := tests/gold/cg81_heldout5.yaml
# A sixth writer, the round after (2026-11-28): scored before any change of that round and after.
HELDOUT6 := tests/gold/cg81_heldout6.yaml
# A seventh writer, the round after (2026-11-28, second session): scored before any change of that round and after.
HELDOUT7 := tests/gold/cg81_heldout7.yaml
# An eighth writer, the round after (2026-11-28, third session): scored before any change of that round and after.
HELDOUT8 := tests/gold/cg81_heldout8.yaml
# A ninth writer, the round after (2026-11-28, fourth session): scored before any change of that round and after.
HELDOUT9 := tests/gold/cg81_heldout9.yaml
# A tenth writer, the round after (2026-11-28, fifth session): scored before any change of that round and after.
HELDOUT10 := tests/gold/cg81_heldout10.yaml
# An eleventh writer (2026-11-28, sixth session): scored only at the end of that round, blind.
HELDOUT11 := tests/gold/cg81_heldout11.yaml
# A twelfth writer (2026-11-28, seventh session): scored blind against the round's starting code and at its end.
HELDOUT12 := tests/gold/cg81_heldout12.yaml
# A thirteenth writer (2026-11-28, eighth session): scored blind against the round's starting code and at its end.
HELDOUT13 := tests/gold/cg81_heldout13.yaml
# A fourteenth writer (2026-11-29, ninth session): scored blind against the round's starting code and at its end.
HELDOUT14 := tests/gold/cg81_heldout14.yaml
# A fifteenth writer (2026-11-29, tenth session): scored blind against the round's starting code and at its end.
HELDOUT15 := tests/gold/cg81_heldout15.yaml
# A sixteenth writer (2026-11-29, eleventh session): scored blind against the round's starting code and at its end.
HELDOUT16 := tests/gold/cg81_heldout16.yaml
# Written this round by a third writer from the guideline text alone, for development: its misses were
# studied and fixed by general rules, so it is reported beside the held-out sets, not as one of them.
DEV := tests/gold/cg81_dev.yaml
# A third development set, written in a later round the same way: scored once blind, then tuned on.
DEV3 := tests/gold/cg81_dev3.yaml
# A fourth, written beside held-out 5: scored once blind, then tuned on.
DEV4 := tests/gold/cg81_dev4.yaml
# A fifth, written beside held-out 6: scored once blind, then tuned on.
DEV5 := tests/gold/cg81_dev5.yaml
# A sixth, written beside held-out 7: scored once blind, then tuned on.
DEV6 := tests/gold/cg81_dev6.yaml
# A seventh, written beside held-out 8: scored once blind, then tuned on.
DEV7 := tests/gold/cg81_dev7.yaml
# An eighth, written beside held-out 9: scored once blind, then tuned on.
DEV8 := tests/gold/cg81_dev8.yaml
# A ninth, written beside held-out 10: scored once blind, then tuned on.
DEV9 := tests/gold/cg81_dev9.yaml
# A tenth, written beside held-out 13: scored once blind, then tuned on.
DEV10 := tests/gold/cg81_dev10.yaml
# An eleventh, written beside held-out 14: scored once blind, then tuned on.
DEV11 := tests/gold/cg81_dev11.yaml
# A twelfth, written beside held-out 15: scored once blind, then tuned on.
DEV12 := tests/gold/cg81_dev12.yaml
# A thirteenth, written beside held-out 16: scored once blind, then tuned on.
DEV13 := tests/gold/cg81_dev13.yaml
# Scored by `make eval` beside the gold set, no floors: report name = question set.
SCORED_SETS := heldout=$(HELDOUT) heldout2=$(HELDOUT2) heldout3=$(HELDOUT3) heldout4=$(HELDOUT4) \
               heldout5=$(HELDOUT5) heldout6=$(HELDOUT6) heldout7=$(HELDOUT7) heldout8=$(HELDOUT8) \
               heldout9=$(HELDOUT9) heldout10=$(HELDOUT10) heldout11=$(HELDOUT11) \
               heldout12=$(HELDOUT12) heldout13=$(HELDOUT13) heldout14=$(HELDOUT14) \
               heldout15=$(HELDOUT15) heldout16=$(HELDOUT16) \
               dev=$(DEV) dev3=$(DEV3) dev4=$(DEV4) dev5=$(DEV5) dev6=$(DEV6) dev7=$(DEV7) dev8=$(DEV8) dev9=$(DEV9) \
               dev10=$(DEV10) dev11=$(DEV11) dev12=$(DEV12) dev13=$(DEV13)
REPORTS := build/reports
# Regression floors for the gold set, core and REST alike: the issue-8 targets (top-1 0.95, recall@3 0.99,
# multi-turn 0.93, abstention 0.95, exact text 1.0), all met today (README, Figures) with a margin of
# 18 items for top-1, four for recall@3, eight for multi-turn. Training is seeded but not bit-for-bit
# reproducible on CPU (two runs of one recipe moved one or two near-tie items per set, gold identical).
FLOORS := --min top1=0.95 --min recall_at_3=0.99 --min multi_turn_top1=0.93 --min abstention_precision=0.95 \
          --min abstention_recall=0.95 --min exact_text=1.0
RASA_DATA := $(shell find nlu_data -name '*.yml') domain.yml config.yml
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RASA_TELEMETRY_ENABLED := false
export TF_CPP_MIN_LOG_LEVEL := 3
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export RASA_PORT ?= 5005
export ACTIONS_PORT ?= 5055

# Area fragments (web chat, channels, service): each defines its own targets.
-include $(sort $(wildcard mk/*.mk))

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# ------------------------------------------------------------------ install
$(VENV)/.installed: requirements/core.lock pyproject.toml
	$(PY311) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements/core.lock
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

$(RVENV)/.installed: requirements/rasa.lock pyproject.toml
	@test -n "$(PY310)" || { echo "Python 3.10 is needed for Rasa 3.6: see scripts/find_python310.sh"; exit 1; }
	$(PY310) -m venv $(RVENV)
	$(RVENV)/bin/pip install -q --upgrade pip==24.0
	$(RVENV)/bin/pip install -q -r requirements/rasa.lock
	$(RVENV)/bin/pip install -q --no-deps -e .
	touch $@

.PHONY: install
install: $(VENV)/.installed $(RVENV)/.installed ## create both virtual environments from the lock files

# ------------------------------------------------------------------ build
$(INDEX): $(VENV)/.installed guideline_corpus/cg81_source.txt guideline_corpus/terminology/cg81_lexicon.yaml \
          guideline_corpus/finetune/cg81_train_questions.yaml \
          guideline_corpus/terminology/cg81_dialogue.yaml $(wildcard assistant/*.py)
	$(PY) -m assistant build

.PHONY: build
build: $(INDEX) ## parse the guideline, fine-tune the encoder (~9 min), build the index (each only when stale)

$(MODEL): $(RVENV)/.installed $(RASA_DATA) assistant/rasa/lexicon_extractor.py \
          guideline_corpus/terminology/cg81_lexicon.yaml
	$(RASA) train --data nlu_data --config config.yml --domain domain.yml --out models \
	  --fixed-model-name cg81 --quiet
	touch $@

.PHONY: train
train: $(MODEL) ## train the Rasa model when missing or stale (data, config, domain or lexicon changed)

# ------------------------------------------------------------------ run
.PHONY: run
run: install build train ## everything, then both servers; prints the web chat's address (Ctrl-C stops)
	scripts/serve.sh

.PHONY: chat
chat: install build train ## everything, then chat in the terminal over the REST channel
	scripts/serve.sh --chat

.PHONY: serve
serve: install build train ## Rasa on :$RASA_PORT (REST) and actions on :$ACTIONS_PORT; Ctrl-C stops both
	scripts/serve.sh

.PHONY: chat-core
chat-core: install build ## chat with the core only (no Rasa)
	$(PY) -m assistant chat

# ------------------------------------------------------------------ test
.PHONY: test
test: install build train lint test-core test-rasa test-stories test-e2e test-channels teams-package validate-deploy \
      test-service eval ## install, build, train, run every test
	@echo "make test: all passed"

.PHONY: lint
lint: $(VENV)/.installed ## ruff over the code
	$(VENV)/bin/ruff check assistant actions tests benchmarks scripts rasa_sdk_plugins

.PHONY: test-core
test-core: $(VENV)/.installed $(INDEX) ## pytest: core and actions (.venv)
	$(PY) -m pytest -m "not rasa and not e2e and not service and not channels" -q

.PHONY: test-rasa
test-rasa: $(RVENV)/.installed ## pytest: lexicon component, channel, entities under spaCy 3.4 (.venv-rasa)
	$(RPY) -m pytest -m "rasa or portable" -q -p no:cacheprovider

.PHONY: test-stories
test-stories: $(MODEL) ## rasa data validate + story tests
	$(RASA) data validate --data nlu_data --domain domain.yml --config config.yml --fail-on-warnings
	$(RASA) test core --model $(MODEL) --stories tests/test_stories.yml --fail-on-prediction-errors \
	  --out $(REPORTS)/stories

.PHONY: test-e2e
test-e2e: $(MODEL) $(INDEX) install-browser ## REST, governance, action server and web chat (Chromium) against the real servers
	$(PY) -m pytest -m e2e -q

.PHONY: eval
eval: $(INDEX) $(MODEL) ## gold set via core (with baselines) and REST, with floors; HTML reports in build/reports
	$(PY) -m assistant eval --gold $(GOLD) --via core --baselines --require-hybrid-best $(FLOORS) --quiet \
	  --json $(REPORTS)/gold_core.json --report $(REPORTS)/gold_core.md --html $(REPORTS)/gold_core.html
	@set -e; for s in $(SCORED_SETS); do name=$${s%%=*}; \
	  echo "$(PY) -m assistant eval --gold $${s#*=} --via core (reports: $(REPORTS)/$${name}_core.*)"; \
	  $(PY) -m assistant eval --gold $${s#*=} --via core --quiet --json $(REPORTS)/$${name}_core.json \
	    --report $(REPORTS)/$${name}_core.md --html $(REPORTS)/$${name}_core.html; done
	rm -f build/eval/tracker.db
	TRACKER_STORE_URL=sqlite:///$(CURDIR)/build/eval/tracker.db scripts/serve.sh --exec $(PY) -m assistant eval --gold $(GOLD) --via rest \
	  --url http://127.0.0.1:$(RASA_PORT) $(FLOORS) --quiet --json $(REPORTS)/gold_rest.json \
	  --report $(REPORTS)/gold_rest.md --html $(REPORTS)/gold_rest.html

# ------------------------------------------------------------------ measure
.PHONY: bench
bench: install build train ## latency, cold start and memory of the core and of a REST turn
	$(PY) benchmarks/bench_core.py
	scripts/serve.sh --exec $(PY) benchmarks/bench_rest.py

.PHONY: nlu-cv
nlu-cv: train ## NLU intent F1 by 3-fold cross-validation (slow: ~10 min)
	$(RASA) test nlu --nlu nlu_data --config config.yml --cross-validation --folds 3 --out $(REPORTS)/nlu_cv

.PHONY: clean
clean: ## remove build outputs and trained models (keeps the virtual environments)
	rm -rf build models .pytest_cache results
