# addp_mm — see README.md.  `make demo` and `make test` do all set-up themselves.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.addp_mm_setup
PYTEST_ARGS ?=

.PHONY: setup test demo clean-demo benchmark

# Idempotent: re-runs only verification when requirements.txt/setup script are unchanged.
setup:
	bash scripts/setup_env.sh

$(STAMP): requirements.txt scripts/setup_env.sh setup.py
	bash scripts/setup_env.sh

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) tools/demo.py --work-dir work_dirs/demo

benchmark: $(STAMP)
	$(PY) tools/benchmark.py --help
