# contrastlab: common tasks. Run `make help` for the list.
#
#   make setup        install the requirements and make Fashion-MNIST available
#   make test         run the test suite (the notebooks included, under the smoke budget)
#   make book         build the book, executing every chapter
#   make book-smoke   the same build with the seconds-long smoke budget
#
# PYTHON selects the interpreter, e.g. `make test PYTHON=.venv/bin/python`.

PYTHON ?= python3
# `jupyter-book` run through $(PYTHON), so that the book is built (and its notebooks'
# kernel found) in the same environment that `make setup` installed into.
JUPYTER_BOOK ?= $(PYTHON) -c "import sys; from jupyter_book.cli.main import main; sys.exit(main())"
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
# -W: warnings are errors; -n: nitpicky, report every broken reference;
# --keep-going: report all warnings before failing; --all: re-read (and so re-execute)
# every page, since Sphinx cannot see that CONTRASTLAB_BUDGET or a cached record changed.
BOOK_FLAGS ?= -W -n --keep-going --all
# Marker written after a successful install, so that `make setup` is quick when
# nothing changed (it re-runs when requirements.txt or pyproject.toml change).
SETUP_STAMP := _build/.setup-stamp-$(subst /,_,$(PYTHON))

.DEFAULT_GOAL := help
.PHONY: help setup data test book book-smoke strip clean

## help: list the targets with their description
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## //' | awk '{i = index($$0, ": "); printf "  %-12s %s\n", substr($$0, 1, i - 1), substr($$0, i + 2)}'

## setup: install requirements.txt (contrastlab editable) and the Fashion-MNIST data
setup: $(SETUP_STAMP) data

$(SETUP_STAMP): requirements.txt pyproject.toml
	PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip install -q -r requirements.txt
	@mkdir -p $(dir $@) && touch $@

## data: install Fashion-MNIST from the Debian package when possible (part of setup)
data:
	@if [ -d "$(FMNIST_DIR)" ]; then \
		: ; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Fashion-MNIST into $(FMNIST_DIR) (Debian package dataset-fashion-mnist)"; \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "note: $(FMNIST_DIR) not found; contrastlab will download Fashion-MNIST through torchvision when online"; \
	fi

## test: setup, then run the test suite
test: setup
	$(PYTHON) -m pytest -q

## book: setup, then build the book with every chapter executed (budget: gpu with CUDA, else cpu)
book: setup
	$(JUPYTER_BOOK) build . $(BOOK_FLAGS)
	@echo "Book: file://$(CURDIR)/_build/html/index.html"

## book-smoke: the same build under the smoke budget (seconds per experiment)
book-smoke: setup
	CONTRASTLAB_BUDGET=smoke $(JUPYTER_BOOK) build . $(BOOK_FLAGS)
	@echo "Book: file://$(CURDIR)/_build/html/index.html"

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
