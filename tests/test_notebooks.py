"""The book's notebooks: they execute, they are stored clean, and the book lists them.

Every ``notebooks/*.ipynb`` is executed top to bottom in a fresh ``python3`` kernel, with
the notebook's folder as working directory (as ``jupyter-book build`` does), under the
seconds-long smoke budget (``CONTRASTLAB_BUDGET=smoke``) and with a private results cache
(``CONTRASTLAB_RESULTS``), so the test neither reads nor writes the repository's records.
A failing cell fails the test with that cell's source and traceback.

Run only these:  python -m pytest -q tests/test_notebooks.py
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
CHAPTERS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
# Folders that hold no notebooks of ours (environments, build output, caches).
SKIP_DIRS = {"_build", ".git", ".venv", "venv", "node_modules", ".ipynb_checkpoints", "runs", "data",
             "exercises"}   # course notebooks: tested by tests/test_exercises.py, not built into the book
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # IPython colours its tracebacks
CELL_TIMEOUT_S = 900  # per cell; the smoke budget needs seconds, a cold kernel and imports more


def _repo_notebooks() -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
        found += [Path(dirpath) / f for f in filenames if f.endswith(".ipynb")]
    return sorted(found)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.slow
@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    # The kernel inherits this process's environment.
    monkeypatch.setenv("CONTRASTLAB_BUDGET", "smoke")
    # The smoke records go where `make book-smoke` reads them (results/, where smoke records are
    # git-ignored), so that CI's book build, which runs after the tests, reuses what they trained.
    monkeypatch.setenv("CONTRASTLAB_RESULTS", str(ROOT / "results"))
    # Import the checkout's contrastlab even when it is not pip-installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(path.parent)}})
    failure = None
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as err:
        failure = ANSI_ESCAPE.sub("", str(err))   # the cell's source, its outputs and the traceback
    if failure is not None:   # outside the except block, so pytest does not print the chain twice
        pytest.fail(f"{_rel(path)} failed under CONTRASTLAB_BUDGET=smoke:\n{failure}", pytrace=False)


@pytest.mark.parametrize("path", _repo_notebooks(), ids=_rel)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, (f"{_rel(path)} is stored with outputs or execution counts in cells {dirty}; "
                       "run `make strip` before committing")


def _toc_files(node) -> list[str]:
    """Every 'file' entry of a jupyter-book _toc.yml (root, parts, chapters, sections)."""
    files = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "root") and isinstance(value, str):
                files.append(value)
            else:
                files += _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            files += _toc_files(item)
    return files


def _strip_suffix(entry: str) -> str:
    for suffix in (".ipynb", ".md"):
        if entry.endswith(suffix):
            return entry[: -len(suffix)]
    return entry


def test_every_notebook_is_in_the_toc():
    yaml = pytest.importorskip("yaml")
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = {_strip_suffix(f) for f in _toc_files(toc)}
    missing = [_rel(p) for p in _repo_notebooks() if _strip_suffix(_rel(p)) not in listed]
    assert not missing, f"notebooks not listed in _toc.yml (the book would not build them): {missing}"
    absent = sorted(f for f in listed
                    if not any((ROOT / f).with_suffix(s).exists() for s in (".ipynb", ".md")))
    assert not absent, f"_toc.yml lists files that do not exist: {absent}"
