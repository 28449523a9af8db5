# Two commands on a fresh machine: `make book` (build the whole book, offline default preset) and `make test`.
PYTHON ?= python3
PRESET ?= default
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup book pdf test bench pilots notebooks check-html readme-figure clean

$(BIN)/ke: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/ke

book: setup
	$(BIN)/ke book --preset $(PRESET)

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_entropy.py

pilots: setup  # the model system's pilots on calibration seeds -> book/pilots.json (about an hour on 2 cores)
	$(BIN)/ke pilots parameters/pilots/p*.yaml

notebooks: setup
	$(BIN)/python -m pip install -q jupyterlab
	$(BIN)/python -m ipykernel install --user --name ke --display-name "Python (ke)"
	$(BIN)/jupyter lab book/

pdf:  # the book as one PDF, offline (after `make book`): the one-page HTML build printed by headless Chromium
	$(BIN)/python .ci/print_pdf.py _build/stage _build/book.pdf

check-html:
	$(BIN)/python .ci/browser_check.py _build/html _build/screenshots

readme-figure:  # the README's figure: Fig. 2 of the executed entropy chapter (after `make book`)
	$(BIN)/python -c "from ke.book.build import export_figure; \
	export_figure('_build/stage/book/entropy.ipynb', 'Figure 2', 'book/figure-entropy.png')"

clean:
	rm -rf _build
