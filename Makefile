# `make demo`: a virtual environment with the core and the default plugins, then the quick start.
# `make test`: the whole tox matrix (one env per plugin, integration, lint, type).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PLUGINS := local sqlite shelve chained example slurm rest server dashboard

.PHONY: demo test clean

$(VENV)/.installed: setup.cfg $(foreach p,$(PLUGINS),plugins/hqs-sdk-$(p)/setup.cfg)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet . $(foreach p,$(PLUGINS),./plugins/hqs-sdk-$(p))
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/python examples/quickstart.py

$(VENV)/.tox-installed:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "tox>=4.11"
	touch $@

test: $(VENV)/.tox-installed
	$(VENV)/bin/tox run

clean:
	rm -rf $(VENV) .tox build *.egg-info examples/.hqs_sdk_cache.db*
