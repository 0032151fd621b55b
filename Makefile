# Two commands set everything up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
SCALE ?= quick
JOBS ?= 2
# Test workers: one per core, at most 4 (the suite waits on single-threaded Python as much as on torch).
TEST_JOBS ?= auto
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install run baseline bench gpu-check gpu-wheels reproduce-tables test test-fast lint clean

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

gpu-check: install  ## on a lent GPU machine, in one call of under 8 minutes: Fast Preemption's speed and options, src/main.py and 2-process DDP against the CPU, every paper network's passes, protect + verify (docs/gpu.md); without CUDA one line and exit 0
	$(PYTHON) -m preempt.commands.gpu_check $(ARGS)

gpu-wheels:  ## what `gpu-check` needs and a lent GPU machine's image lacks (.ci/gpu_wheels.txt), as Python 3.12 x86-64 wheels in .whl/ to carry there (docs/gpu.md)
	rm -rf .whl
	python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -r .ci/gpu_wheels.txt
	for sdist in .whl/*.tar.gz; do [ ! -e "$$sdist" ] || { python3 -m pip wheel --quiet --no-deps -w .whl "$$sdist" && rm "$$sdist"; } || exit 1; done
	@! ls .whl | grep -v -E -e '-none-any\.whl$$' -e '-cp312-cp312-.*manylinux.*_x86_64\.whl$$' || { echo "gpu-wheels: not a Python 3.12 x86-64 wheel (above)"; exit 1; }
	@du -ch .whl/*.whl | tail -1

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
