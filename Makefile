# kfusion-live: `make demo` runs the live demo, `make test` runs the tests. Both set everything up.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: demo test test-slow bench debian venv lint

debian:
	@scripts/ensure-debian.sh

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q -e '.[cpu,train,prepare,dev]'
	-$(VENV)/bin/kfusion kernels
	@touch $@

venv: $(STAMP)

test: debian venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: debian venv
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

demo: debian venv
	$(VENV)/bin/kfusion demo $(DEMO_ARGS)

# every benchmark writes benchmarks/results/<name>.json; the report then rewrites its sections of RESULTS.md
bench: debian venv
	OMP_NUM_THREADS=1 $(VENV)/bin/kfusion bench all --json benchmarks/results; status=$$?; \
	$(PY) -m benchmarks.report && exit $$status

lint: venv
	$(VENV)/bin/ruff check .
