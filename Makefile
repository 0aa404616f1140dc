# The two set-up commands: `make demo` and `make test`. Each creates .venv and installs the project on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-fast install clean-demo help

help:
	@echo "make demo       set up .venv, make a synthetic CelebA, convert it, train a small CNN, report, run a demo study"
	@echo "make test       set up .venv and run the whole test suite (about 2-3 minutes on 2 CPU cores)"
	@echo "make test-fast  the suite without tests marked slow"

# Reinstall when the package metadata changes.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(PY) make_tfrecords.py --flagfile=flags/convert/demo.flags
	$(PY) train.py --flagfile=flags/demo.flags
	$(PY) study.py --flagfile=flags/studies/demo_epochs.flags

test: $(STAMP)
	$(PY) -m pytest -q -n 2

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow"

clean-demo:
	rm -rf demo
