# The two commands of the README: `make demo` (the sample pipeline, no server) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: venv demo test bench
venv: $(VENV)/.installed

# torch/torchvision first, pinned: on our machines these exact builds come from local disk.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: venv
	$(VENV)/bin/atom demo

test: venv
	$(PY) -m pytest -q -p no:cacheprovider

bench: venv
	$(PY) benchmarks/vehicles.py
