# remap — two commands for a fresh machine:  `make book`  and  `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= default
# Two threads: the machines this book is written for have two cores.
export OMP_NUM_THREADS ?= 2
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: install chromium fetch test unit rendered notebooks-smoke book notebooks grid bench lint clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --disable-pip-version-check -q --upgrade pip
	$(VPY) -m pip install --disable-pip-version-check -r requirements.txt
	$(VPY) -m pip install --disable-pip-version-check --no-deps -e .
	touch $@

## Download MILES, MARCS atmospheres and the Gaia-ESO line list into the cache; check data/ hashes.
fetch: $(STAMP)
	$(VENV)/bin/remap fetch

## Headless Chromium for the rendered-page check: Debian's `chromium` package, installed with apt-get
## when missing and we are root on Debian/Ubuntu; otherwise one line saying what to run.
## REMAP_SKIP_RENDERED=1 skips the check (and this step) on purpose.
chromium:
	@bash scripts/ensure-chromium.sh

## Unit tests; every notebook with the smoke profile (papermill, then nbval); the book built from
## those notebooks; its rendered pages checked in headless Chromium (tests/book/test_rendered.py).
## Leaves the smoke book in _build/html: `make book` rebuilds the default one.
test: $(STAMP) chromium fetch unit notebooks-smoke
	$(VPY) -m remap_lib.book.bookpages --out book/generated --profile smoke
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	$(MAKE) --no-print-directory rendered

# The rendered-page check runs on a built book, so `unit` leaves it to this step.
rendered: $(STAMP)
	REMAP_BOOK_HTML=_build/html $(VPY) -m pytest -q -p no:cacheprovider tests/book/test_rendered.py

unit: $(STAMP)
	$(VPY) -m pytest -q tests --ignore=tests/book/test_rendered.py

# The smoke notebooks go where the book reads them, so `make test` builds the book without rerunning them.
notebooks-smoke: $(STAMP)
	$(VENV)/bin/remap book run --profile smoke --out book/notebooks
	$(VPY) -m pytest -q -p no:cacheprovider --nbval-lax book/notebooks

## Execute the notebooks with $(PROFILE) (default: default), generate the book's pages from the
## notebooks, benchmarks and run log (remap_lib/book/bookpages.py) and build the HTML book in _build/html.
book: $(STAMP) fetch notebooks
	$(VPY) -m remap_lib.book.bookpages --out book/generated --profile $(PROFILE)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

# Also writes book/notebooks/run_log.json (wall time, profile, overrides per notebook).
notebooks: $(STAMP)
	$(VENV)/bin/remap book run --profile $(PROFILE) --out book/notebooks

## Regenerate the shipped synthetic grid (resumable: rerun to continue).
grid: $(STAMP) fetch
	$(VENV)/bin/remap grid build

bench: $(STAMP) fetch
	$(VPY) bench/bench_preprocess.py
	$(VPY) bench/bench_synthesis.py
	$(VPY) bench/bench_training.py
	$(VPY) bench/bench_inference.py
	$(VPY) bench/bench_streaming.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf _build book/notebooks book/generated work
