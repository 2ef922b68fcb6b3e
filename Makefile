# addp_mm — see README.md.  `make demo` and `make test` do all set-up themselves.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.addp_mm_setup
PYTEST_ARGS ?=
# Intra-op threads of every demo stage. 1 is fastest on a small or busy machine
# (the demo's models are tiny); raise it on an idle many-core one: make demo THREADS=4
THREADS ?= 1

.PHONY: setup test demo clean-demo benchmark

# Idempotent: re-runs only verification when requirements.txt/setup script are unchanged.
setup:
	bash scripts/setup_env.sh

$(STAMP): requirements.txt scripts/setup_env.sh setup.py
	bash scripts/setup_env.sh

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) OPENBLAS_NUM_THREADS=$(THREADS) \
		$(PY) tools/demo.py --work-dir work_dirs/demo --threads $(THREADS)

benchmark: $(STAMP)
	$(PY) tools/benchmark.py --help
