# Two front-door targets: `make quickstart` (install + run the quickstart study) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# --isolated: ignore the machine's pip config, whose local wheel folder holds a CPU-only torch
# that the registry's torchvision cannot import next to.
PIP_INSTALL := $(PY) -m pip install --isolated --quiet --disable-pip-version-check

.PHONY: install quickstart test benchmarks

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP_INSTALL) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(PY) -m hpo.run studies/quickstart.yaml

test: install
	$(PY) -m pytest -q

benchmarks: install
	$(PY) benchmarks/learners_speed.py
