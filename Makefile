# kfusion-live: `make demo` runs the live demo, `make test` runs the tests. Both set everything up.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: demo test test-slow bench debian venv kernels lint

debian:
	@scripts/ensure-debian.sh

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q -e '.[cpu,train,prepare,dev]'
	@touch $@

venv: $(STAMP)

# the ahead-of-time feature kernel: rebuilt when its sources changed (a pull), else a quick check;
# a machine without a C compiler keeps numba's JIT (the leading '-')
kernels: venv
	-@$(VENV)/bin/kfusion kernels

test: debian venv kernels
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: debian venv kernels
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

demo: debian venv kernels
	$(VENV)/bin/kfusion demo $(DEMO_ARGS)

# every benchmark writes benchmarks/results/<name>.json; the report then rewrites its sections of RESULTS.md
bench: debian venv kernels
	OMP_NUM_THREADS=1 $(VENV)/bin/kfusion bench all --json benchmarks/results; status=$$?; \
	$(PY) -m benchmarks.report && exit $$status

lint: venv
	$(VENV)/bin/ruff check .
