# The two set-up commands: `make demo` and `make test`. Each creates .venv and installs the project on first use,
# with the versions constraints.txt pins (the set the tests passed with; `make lock` refreshes it).
# On a machine with NVIDIA GPUs, `make gpu` first: the same .venv with TensorFlow's CUDA libraries, then a check.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
GPU_STAMP := $(VENV)/.gpu-stamp

PIP    := $(PY) -m pip install --quiet -c constraints.txt

.PHONY: demo test test-fast install gpu check-gpu check-package lock clean-demo help

help:
	@echo "make demo       set up .venv, make a synthetic CelebA, convert it, train a small CNN, report, run a demo study"
	@echo "make test       set up .venv and run the whole test suite (about 10-11 minutes on 2 CPU cores)"
	@echo "make test-fast  the suite without tests marked slow (about 2.5 minutes)"
	@echo "make gpu        add TensorFlow's CUDA libraries to .venv (pip install -e '.[dev,detect,gpu]'), list the GPUs"
	@echo "make check-gpu  list the GPUs TensorFlow sees"
	@echo "make check-package  build the wheel and sdist, install the wheel into a fresh venv, use it from an empty folder"
	@echo "make lock       refresh constraints.txt: the newest versions setup.cfg allows, from a fresh venv"

# Reinstall when the package metadata or the pinned versions change.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e '.[dev,detect]'
	@touch $@

install: $(STAMP)

$(GPU_STAMP): $(STAMP)
	$(PIP) -e '.[dev,detect,gpu]'
	@touch $@

gpu: $(GPU_STAMP) check-gpu

check-gpu: $(STAMP)
	@$(PY) -c "import tensorflow as tf; gpus = tf.config.list_physical_devices('GPU'); \
	print(f'TensorFlow {tf.__version__} sees {len(gpus)} GPU(s):', *[g.name for g in gpus]) if gpus else \
	print('TensorFlow sees no GPU: training will run on the CPU (see README, Set up, for NVIDIA GPUs).')" 2>/dev/null

demo: $(STAMP)
	$(PY) make_tfrecords.py --flagfile=convert/demo.flags
	$(PY) train.py --flagfile=demo.flags
	$(PY) study.py --flagfile=studies/demo_epochs.flags

# Three pytest-xdist workers, also on two cores: a worker often waits on a TensorFlow subprocess it started.
test: $(STAMP)
	$(PY) -m pytest -q -n 3 --dist=loadgroup

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 3 --dist=loadgroup -m "not slow"

# The package as a user installs it (.ci/run runs it after the suite): see .ci/check-package.
check-package: $(STAMP)
	PY=$(PY) bash .ci/check-package

# constraints.txt from a fresh virtual environment: the newest versions setup.cfg's ranges allow today.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet '.[dev,detect]'
	{ sed -n '/^#/p' constraints.txt; .lock-venv/bin/python -m pip freeze --all --exclude celeba-gender | sort -f; } \
		> constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .lock-venv

clean-demo:
	rm -rf demo
