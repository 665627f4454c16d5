"""The book's prose as a reader meets it, checked on the sources (no execution, no build).

- Cross-references go through labels and documents ({ref}, {numref}, {doc}), never a typed
  "chapter 8" or "section 5": chapter numbers move when chapters are added, labels do not.
- Every chapter has the same skeleton of headings.
- Every figure the prose names exists: the book numbers none of its own figures, so a bare
  "Figure 3" can only be a paper's; prose that points at "the figure below" (or above) sits
  next to a cell that draws one; and no figure needs files that the published records do not
  carry (a checkpoint is not published, so a cell that reads one draws nothing for a reader).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PAGES = sorted((ROOT / "book").glob("*.ipynb")) + sorted((ROOT / "exercises").rglob("*.ipynb"))
MARKDOWN_PAGES = sorted((ROOT / "book").glob("*.md"))

# "chapter 8", "Chapters 3 to 5", "section 5", "Section 1's": a typed number of this book's own
# chapters or sections. A paper's sections carry a dotted number ("section 4.2"), and the book
# has no chapters of papers to cite, so those are left alone.
TYPED_REFERENCE = re.compile(r"\b(?:[Cc]hapters?|[Ss]ections?)\s+\d+(?![.\d]*\d)(?!\.\d)")
# A figure number not introduced as a paper's ("The paper's Figure 5", "Its Figure 3a", "Fig. 9" of a
# paper row): the book's own figures are unnumbered.
FIGURE_NUMBER = re.compile(r"(?<![Pp]aper's )(?<!Its )(?<!its )\bFigure\s+\d+")
POINTER = re.compile(r"\b(?:figure|plot|map|scatter|panels?)\s+(below|above)\b", re.IGNORECASE)
DRAWS = re.compile(r"\bplots\.\w+\(|\bplt\.|\bfig\b|\.imshow\(|\bzoom\(")
SKELETON_START = "## Running this notebook"
SKELETON_END = ("## Summary", "## Exercises")
GOALS = "**After this chapter you will be able to**"


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def typed_references(text: str) -> list[str]:
    """The typed chapter or section numbers in ``text``."""
    return [m.group(0) for m in TYPED_REFERENCE.finditer(text)]


def headings(cells: list[dict], level: int = 2) -> list[str]:
    """The headings of exactly ``level`` in the markdown cells, in order."""
    marks = "#" * level + " "
    return [line.strip() for cell in cells if cell["cell_type"] == "markdown"
            for line in _source(cell).splitlines() if line.startswith(marks)]


def skeleton_problems(cells: list[dict]) -> list[str]:
    """What a chapter lacks of the common skeleton: a title, the learning goals, 'Running this
    notebook' as its first section and 'Summary' then 'Exercises' as its last two."""
    problems = []
    if not headings(cells, 1):
        problems.append("no '# ' title")
    intro = _source(cells[0]) if cells else ""
    if GOALS not in intro:
        problems.append(f"the first cell lacks {GOALS!r}")
    sections = headings(cells)
    if not sections or sections[0] != SKELETON_START:
        problems.append(f"the first section is not {SKELETON_START!r} (got {sections[:1]})")
    if tuple(sections[-2:]) != SKELETON_END:
        problems.append(f"the last two sections are not {SKELETON_END} (got {sections[-2:]})")
    return problems


def figure_pointer_problems(cells: list[dict]) -> list[str]:
    """Prose that points at a figure below (above) with no drawing cell next after (before) it."""
    problems = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        for match in POINTER.finditer(_source(cell)):
            step = 1 if match.group(1).lower() == "below" else -1
            j = i + step
            while 0 <= j < len(cells) and cells[j]["cell_type"] != "code":
                j += step
            if not (0 <= j < len(cells)) or not DRAWS.search(_source(cells[j])):
                problems.append(f"cell {i}: {match.group(0)!r} but the next code cell {match.group(1).lower()} "
                                "draws no figure")
    return problems


def unpublished_inputs(cells: list[dict]) -> list[str]:
    """Code cells that read a training checkpoint, which the published records do not carry."""
    return [f"cell {i}" for i, cell in enumerate(cells)
            if cell["cell_type"] == "code" and re.search(r"load_checkpoint|checkpoint\.pt", _source(cell))]


# ---------------------------------------------------------------------------------- the checks


@pytest.mark.parametrize("path", CHAPTERS + PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_typed_cross_references_in_notebooks(path):
    found = [f"cell {i}: {ref!r}" for i, cell in enumerate(_cells(path)) for ref in typed_references(_source(cell))]
    assert not found, (f"{path.name} types chapter or section numbers; refer through {{doc}}/{{ref}} "
                       f"instead: {found}")


@pytest.mark.parametrize("path", MARKDOWN_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_typed_cross_references_in_pages(path):
    found = typed_references(path.read_text())
    assert not found, f"{path.name} types chapter or section numbers: {found}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_skeleton(path):
    assert skeleton_problems(_cells(path)) == []


@pytest.mark.parametrize("path", CHAPTERS + PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_figures_named_by_the_prose_exist(path):
    cells = _cells(path)
    numbered = [f"cell {i}: {m.group(0)!r}" for i, cell in enumerate(cells) if cell["cell_type"] == "markdown"
                for m in FIGURE_NUMBER.finditer(_source(cell))]
    assert not numbered, f"{path.name} names figures by a number the book does not give: {numbered}"
    assert figure_pointer_problems(cells) == []
    assert unpublished_inputs(cells) == [], (
        f"{path.name} draws from a checkpoint, which a reader of the published records lacks: "
        "store what the figure needs in the record (e.g. eval.save_z)")


# ------------------------------------------------------------------------- the checks, checked


def _md(text: str) -> dict:
    return {"cell_type": "markdown", "source": [text]}


def _code(text: str) -> dict:
    return {"cell_type": "code", "source": [text]}


def test_typed_reference_pattern():
    assert typed_references("BYOL's collapse (chapter 8), Chapters 3 to 5, section 5's grid, Section 1") == [
        "chapter 8", "Chapters 3", "section 5", "Section 1"]
    assert typed_references("section 4.2 of the paper, Section 3.2.3, this chapter, {doc}`08_byol`") == []


def test_skeleton_catches_a_missing_summary():
    good = [_md(f"# T\n\n{GOALS}\n"), _md("## Running this notebook"), _md("## The idea"),
            _md("## Summary"), _md("## Exercises")]
    assert skeleton_problems(good) == []
    assert skeleton_problems([c for c in good if _source(c) != "## Summary"]) != []
    assert skeleton_problems([_md("# T"), *good[1:]]) != []


def test_figure_checks_catch_a_missing_figure():
    assert figure_pointer_problems([_md("the plot below shows it"), _code("plots.training_curves(r)")]) == []
    assert figure_pointer_problems([_md("the plot below shows it"), _code("print(1)")]) != []
    assert figure_pointer_problems([_code("fig = plt.figure()"), _md("the panels above")]) == []
    assert unpublished_inputs([_code("state = load_checkpoint(path)")]) == ["cell 0"]
    assert FIGURE_NUMBER.search("as Figure 2 shows") and not FIGURE_NUMBER.search("The paper's Figure 5")
