# convmat: everything a fresh machine (Python 3.11, pip, gcc) needs, installed into .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DOCSTAMP := $(VENV)/.docs-installed

.PHONY: all test demo bench docs docs-check clean

all: test

# setup.py builds the compiled one-vector kernels (convmat/spmm/_native.c) into the package: an edit rebuilds.
$(STAMP): pyproject.toml setup.py convmat/spmm/_native.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,torch,plot]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) examples/demo.py --out out
	$(VENV)/bin/convmat draw --in-shape 5 5 --kernel 3 --stride 2 --padding 1 -o out/pictures

bench: $(STAMP)
	$(PY) benchmarks/build.py

$(DOCSTAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $(DOCSTAMP)

# The documentation, offline, warnings are errors; sphinx-gallery runs every plot_ example.
docs: $(DOCSTAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

# Every built page in a real headless browser at 1280 px (docs/check_pages.py): fails on horizontal
# overflow (a clipped table or code block), a broken image or a console error. Needs Debian's
# chromium and chromium-driver (apt-get install chromium chromium-driver); selenium is in the docs extra.
docs-check: docs
	$(PY) docs/check_pages.py docs/_build/html --width 1280

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis build *.egg-info \
	       docs/_build docs/auto_examples docs/generated docs/sg_execution_times.rst
