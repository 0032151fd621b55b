# Two commands set everything up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
SCALE ?= quick
JOBS ?= 2
# Test workers: one per core, at most 4 (the suite waits on single-threaded Python as much as on torch).
TEST_JOBS ?= auto
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install run baseline bench reproduce-tables test test-fast lint clean

$(INSTALLED): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	touch $(INSTALLED)

install: $(INSTALLED)

run: install  ## the main job: Fast Preemption vs AutoAttack on the offline default (digits)
	$(PYTHON) src/main.py defense=fast_preemption attack=autoattack

baseline: install  ## the same job without a defense, for comparison
	$(PYTHON) src/main.py defense=none attack=autoattack

bench: install  ## Fast Preemption's speed on this device: floor, overhead, batch, N, options, Bi-Level, the loop
	$(PYTHON) -m preempt.commands.bench $(ARGS)

reproduce-tables: install  ## both papers' tables and figures under outputs/tables/$(SCALE)/ (SCALE=quick|imagenet_lite|paper, JOBS tables at a time); run it again after a stop: nothing finished is recomputed
	$(PYTHON) -m preempt.commands.reproduce --scale $(SCALE) --jobs $(JOBS) $(ARGS)

test: install  ## the whole suite (CPU, offline), one worker per core; CI runs exactly this
	$(PYTHON) -m pytest -n $(TEST_JOBS) --maxprocesses 4 --dist worksteal

test-fast: install  ## skip the end-to-end and long-attack tests
	$(PYTHON) -m pytest -n $(TEST_JOBS) --maxprocesses 4 --dist worksteal -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf outputs/* .cache .pytest_cache .ruff_cache
