# convmat: everything a fresh machine (Python 3.11, pip, gcc) needs, installed into .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all test demo bench docs clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,torch,plot]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) examples/demo.py --out out

bench: $(STAMP)
	$(PY) benchmarks/build.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis build *.egg-info
