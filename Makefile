# Reproduced: two commands on a fresh machine.
#   make book   builds the HTML book in _build/html (re-executing only chapters whose code changed)
#   make test   runs the library's unit tests and re-executes every chapter with nbval (quick profile)
# Everything installs into .venv; set PYTHON to use another interpreter for the venv.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CHAPTERS := $(filter-out notebooks/_%,$(wildcard notebooks/*.ipynb))  # "_running-*": a run in progress

.PHONY: book test unit nbval bench status clean setup data sweep-example stability

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# on a machine without a CUDA GPU take the CPU build of torch (a local wheel where one exists)
	@if ! $(PY) -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q "torch>=2.4,<2.15"; \
	  else $(PY) -m pip install -q torch==2.13.0 || $(PY) -m pip install -q "torch>=2.4,<2.15" --index-url https://download.pytorch.org/whl/cpu; fi; fi
	$(PY) -m pip install -q -e ".[book,test,ray]"
	@# Fashion-MNIST comes from Debian; install it when we can (root and apt present)
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) || echo "note: dataset-fashion-mnist not installed"; fi
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP)

book: $(STAMP)
	$(PY) -m repro.cli refresh notebooks
	$(PY) -m repro.cli status --out book/status.md
	$(PY) -m repro.cli catalog --out book/catalog.md
	$(VENV)/bin/jupyter-book build . -W --keep-going
	@echo "open _build/html/index.html"

unit: $(STAMP)
	$(PY) -m pytest -q tests

nbval: $(STAMP)
	REPRO_PROFILE=quick $(PY) -m pytest -q --nbval-lax --nbval-current-env $(CHAPTERS)

test: $(STAMP)
	REPRO_PROFILE=quick $(PY) -m pytest -q tests --nbval-lax --nbval-current-env $(CHAPTERS)

bench: $(STAMP)
	$(PY) -m repro.tools.bench

# every chapter at quick from seeds 0, 1000 and 2000; writes book/stability.csv (the status page shows it).
# Resumable: the runs are kept in sweeps/stability. Fails when a claim flips between REPRODUCED and NOT.
stability: $(STAMP)
	$(PY) -m repro.cli stability --all --workers 2

# the worked example of book/how-to-run.md: a seed x width sweep of the criticality chapter
SWEEP_EX := sweeps/criticality
SWEEP_COLS := ['seed', 'width', 'verdict 1', 'verdict 2', 'verdict 3', 'K(L)/K(1), ReLU C_W=2.0', \
  'largest |z| vs exact theory, l/n <= 1/8', 'mean relative deviation', 'wall_time_s']
sweep-example: $(STAMP)
	$(VENV)/bin/repro sweep criticality -p seed 0 1 2 -p width 32 64 --profile quick -o $(SWEEP_EX) \
	  -v "K(L)/K(1), ReLU C_W=2.0" "mean relative deviation"
	mkdir -p book/sweep-example
	cp $(SWEEP_EX)/summary-seed.png $(SWEEP_EX)/summary-width.png book/sweep-example/
	$(PY) -c "import pandas as pd; t = pd.read_csv('$(SWEEP_EX)/results.csv'); \
	  t[$(SWEEP_COLS)].round(3).to_csv('book/sweep-example/results.csv', index=False)"

clean:
	rm -rf _build
