# contrastlab: common tasks. Run `make help` for the list.
#
#   make setup        install the requirements, Fashion-MNIST and MathJax (the book's offline maths)
#   make test         run the test suite (the notebooks included, under the smoke budget)
#   make book         build the book, executing every chapter
#   make book-smoke   the same build with the seconds-long smoke budget
#   make test-book    open the built book in headless Chromium and check every page
#   make records CHAPTER=05   recompute every record chapter 05 uses (and train its missing instrument cells)
#   make scorecard    train every missing cell of the measuring instrument, then print the scorecard
#   make device-check the GPU claims measured in one command (DEVICE_CHECK=dry: on the CPU at smoke sizes)
#
# CI (.ci/run) runs `make test`, `make book-smoke`, `make test-book`, then the dry device check.
#
# PYTHON selects the interpreter, e.g. `make test PYTHON=.venv/bin/python`.

PYTHON ?= python3
# `jupyter-book` run through $(PYTHON), so that the book is built (and its notebooks'
# kernel found) in the same environment that `make setup` installed into.
JUPYTER_BOOK ?= $(PYTHON) -c "import sys; from jupyter_book.cli.main import main; sys.exit(main())"
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
MATHJAX_DIR ?= /usr/share/javascript/mathjax
CHROMIUM ?= /usr/bin/chromium
# -W: warnings are errors; -n: nitpicky, report every broken reference;
# --keep-going: report all warnings before failing; --all: re-read (and so re-execute)
# every page, since Sphinx cannot see that CONTRASTLAB_BUDGET or a cached record changed.
BOOK_FLAGS ?= -W -n --keep-going --all
# The chapters' kernels read their IPython configuration from here (IPYTHONDIR): log level ERROR,
# which silences ipykernel's warning, once per notebook, that its loopback TCP connection to the
# build is not encrypted (the build starts each kernel on 127.0.0.1 and nothing else connects to it).
# Errors, and everything a cell prints, still show.
KERNEL_IPYTHONDIR := $(CURDIR)/_build/ipython
BOOK_ENV = IPYTHONDIR=$(KERNEL_IPYTHONDIR)
# Marker written after a successful install, so that `make setup` is quick when
# nothing changed (it re-runs when requirements.txt or pyproject.toml change).
SETUP_STAMP := _build/.setup-stamp-$(subst /,_,$(PYTHON))

.DEFAULT_GOAL := help
.PHONY: help setup data mathjax chromium test book book-smoke test-book records scorecard device-check strip clean

## help: list the targets with their description
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## //' | awk '{i = index($$0, ": "); printf "  %-12s %s\n", substr($$0, 1, i - 1), substr($$0, i + 2)}'

## setup: install requirements.txt (contrastlab editable), the Fashion-MNIST data and MathJax
setup: $(SETUP_STAMP) data mathjax

$(SETUP_STAMP): requirements.txt pyproject.toml
	PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip install -q -r requirements.txt
	@mkdir -p $(dir $@) && touch $@

# $(call apt_package,PATH,PACKAGE,WHAT,NOTE): when PATH is missing, install the Debian package
# PACKAGE if apt-get can be run (as root), else print NOTE. Nothing happens when PATH exists.
apt_package = @if [ -e "$(1)" ]; then \
		: ; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing $(3) (Debian package $(2); apt's log in _build/apt.log)"; \
		mkdir -p _build; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2); } >_build/apt.log 2>&1 \
			|| { cat _build/apt.log; exit 1; }; \
	else \
		echo "note: $(1) not found; $(4)"; \
	fi

## data: install Fashion-MNIST from the Debian package when possible (part of setup)
data:
	$(call apt_package,$(FMNIST_DIR),dataset-fashion-mnist,Fashion-MNIST into $(FMNIST_DIR),contrastlab will download Fashion-MNIST through torchvision when online)

## mathjax: install MathJax 2 from the Debian package libjs-mathjax when possible (part of setup)
mathjax:
	$(call apt_package,$(MATHJAX_DIR)/MathJax.js,libjs-mathjax,MathJax for maths that renders offline,the built book will load MathJax from its CDN (a reader needs a network to see the maths))

## chromium: install Chromium from the Debian package when possible (for test-book)
chromium:
	$(call apt_package,$(CHROMIUM),chromium,Chromium for the browser test of the book,test-book will be skipped (install chromium or set CONTRASTLAB_CHROMIUM))

## test: setup, then run the test suite (all but the browser test of the built book: see test-book)
test: setup
	$(PYTHON) -m pytest -q -m "not browser"

## book: setup, then build the book with every chapter executed (budget: gpu with CUDA, else cpu)
book: setup $(KERNEL_IPYTHONDIR)/profile_default/ipython_kernel_config.py
	$(BOOK_ENV) $(JUPYTER_BOOK) build . $(BOOK_FLAGS)
	@echo "Book: file://$(CURDIR)/_build/html/index.html"

## book-smoke: the same build under the smoke budget (seconds per experiment)
book-smoke: setup $(KERNEL_IPYTHONDIR)/profile_default/ipython_kernel_config.py
	$(BOOK_ENV) CONTRASTLAB_BUDGET=smoke $(JUPYTER_BOOK) build . $(BOOK_FLAGS)
	@echo "Book: file://$(CURDIR)/_build/html/index.html"

$(KERNEL_IPYTHONDIR)/profile_default/ipython_kernel_config.py:
	@mkdir -p $(dir $@) && echo 'c.IPKernelApp.log_level = "ERROR"' > $@

## test-book: check the built book in headless Chromium (builds it at the smoke budget if missing or stale); screenshots in _build/screenshots
test-book: setup chromium
	$(PYTHON) -m pytest -q -m browser tests/test_book_browser.py

## records: recompute every record of one chapter, e.g. `make records CHAPTER=05` (budget: gpu with CUDA, else cpu)
records: setup
	@test -n "$(CHAPTER)" || { echo "usage: make records CHAPTER=05"; exit 2; }
	$(PYTHON) -m contrastlab.book records $(CHAPTER)
	@if $(PYTHON) -c "import sys; from contrastlab import scorecard; sys.exit(not scorecard.claims_of('$(CHAPTER)'))"; then \
		$(PYTHON) -m contrastlab scorecard --compute --chapter $(CHAPTER); fi

## scorecard: train the measuring instrument's missing cells (two at a time, one thread each), then print the scorecard
scorecard: setup
	$(PYTHON) -m contrastlab scorecard --compute --jobs 2

## device-check: prepare .device-data/ when missing, then run benchmarks/device_check.sh into _build/device-check (DEVICE_CHECK=dry: CPU, smoke sizes)
device-check:
	@test -d .device-data/wheels || PYTHON=$(PYTHON) benchmarks/device_check.sh --prepare
	PYTHON=$(PYTHON) benchmarks/device_check.sh _build/device-check

## strip: remove outputs and execution counts from notebooks/*.ipynb (do this before committing)
strip:
	@$(PYTHON) -c "$$STRIP_NOTEBOOKS" notebooks/*.ipynb

# Clears what running a notebook adds (outputs, execution counts, per-cell timings,
# the kernel's version details) and keeps everything else, cell tags included.
define STRIP_NOTEBOOKS
import sys, nbformat
for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("widgets", None)
    if "language_info" in nb.metadata:
        nb.metadata["language_info"] = {"name": nb.metadata["language_info"].get("name", "python")}
    if nbformat.writes(nb) != before:
        nbformat.write(nb, path)
        print("stripped", path)
endef
export STRIP_NOTEBOOKS

## clean: remove the built book (_build)
clean:
	rm -rf _build
