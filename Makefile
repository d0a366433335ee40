# `make demo` and `make test` work on a fresh machine: both set up the venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.modelkit-installed
export TF_CPP_MIN_LOG_LEVEL = 3
export TF_ENABLE_ONEDNN_OPTS = 0
export PYTHONWARNINGS = ignore

.PHONY: setup demo test bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_system.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	# MetaSchedule's cost model; its default dependencies would add a 469 MB CUDA NCCL wheel
	$(PY) -m pip install --quiet --no-deps xgboost==3.2.0
	PY=$(PY) bash scripts/setup_system.sh
	touch $(STAMP)

demo: setup  # `make demo ARGS=--tune` runs a short hyperparameter search first
	$(PY) scripts/demo.py --out demo-out $(ARGS)

# Two pytest workers (pytest-xdist), a test file per worker: a test mostly waits on one single-threaded child
# process (importing TensorFlow alone is 5 s of one core), so two share two cores (docs/reliability.md).
# `make test TEST_WORKERS=0` runs in one process. -X faulthandler: a native crash, even at exit, prints every
# thread's stack (in the workers, pytest's faulthandler does it while tests run; xdist names a crashed worker's test).
TEST_WORKERS ?= 2

test: setup
	$(PY) -X faulthandler -m pytest tests -q -p no:cacheprovider --durations=20 -n $(TEST_WORKERS) --dist loadfile

bench: setup
	$(PY) benchmarks/run_all.py

lint: setup
	$(VENV)/bin/ruff check modelkit tests scripts benchmarks
	$(VENV)/bin/lint-imports  # the layering in docs/design.md (contracts in pyproject.toml)

clean:
	rm -rf demo-out bench-out .pytest_cache
