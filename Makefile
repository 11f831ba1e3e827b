# The two commands of the README, each doing its own set-up on a fresh clone.
#   make demo   open the dashboard on a new run of the demo profile
#   make test   lint + the whole test suite
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= .ci/constraints.txt
STAMP := $(VENV)/.podium-installed
PY := $(VENV)/bin/python

.PHONY: demo test lint setup soak

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c $(CONSTRAINTS) -e '.[test,onnx]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/podium train profiles/demo.toml $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Two pytest workers, a test file each at a time (its module fixtures train once): the suite is
# mostly subprocesses and terminals waiting on each other, so two workers halve it on 2 cores.
PYTEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The races repeated many times (minutes each): not part of `make test`, run before a release.
soak: $(STAMP)
	$(PY) -m pytest -q -m soak $(PYTEST_ARGS)
