# One command for the demo, one for the tests; each sets up what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.spikefit-installed

.PHONY: demo test test-fast bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch and torchvision from this machine's local wheels (a plain `torch` may pull a multi-GB build)
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[dev]"
	# SpikingJelly without its declared torchaudio/tensorboard/...: the [spikingjelly] extra has what it imports
	$(PY) -m pip install -q --no-deps "spikingjelly==2.0.0"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/spikefit demo

test: $(STAMP)
	$(PY) -m pytest -q

# the developer loop: everything but the tests marked slow (end-to-end compress runs, the benchmark suite)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) build *.egg-info
