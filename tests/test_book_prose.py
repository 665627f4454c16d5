"""The book's prose as a reader meets it, checked on the sources (no execution, no build).

- Cross-references go through labels and documents ({ref}, {numref}, {doc}), never a typed
  "chapter 8" or "section 5": chapter numbers move when chapters are added, labels do not.
- Every chapter has the same skeleton of headings.
- Every figure the prose names exists: the book numbers none of its own figures, so a bare
  "Figure 3" can only be a paper's; prose that points at "the figure below" (or above) sits
  next to a cell that draws one; and no figure needs files that the published records do not
  carry (a checkpoint is not published, so a cell that reads one draws nothing for a reader).
- One notation (book/notation.md): a letter of its first table appears in the mathematics of the
  pages its "where" column names, and of no other page (unless the table of one chapter's
  symbols gives it a meaning there).
- Times have one definition: a cell that reads a record's wall time (training and evaluation)
  calls it "wall time"; a training time comes from the epochs' times (`labels.training_seconds`).
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


NOTATION = ROOT / "book" / "notation.md"
MATH = re.compile(r"\$\$(.+?)\$\$|\$([^$\n]+?)\$", re.DOTALL)
# Text inside these commands names no symbol (\mathrm{base}, \mathcal{L} is not L, \mathbb{E}).
NOT_SYMBOLS = re.compile(r"\\(?:mathrm|text|textrm|operatorname|mathcal|mathbb|mathsf|mathit)\s*\{[^{}]*\}")
LETTER = re.compile(r"^(\\[A-Za-z]+|[A-Za-z])(?![A-Za-z])")
DOC = re.compile(r"\{doc\}`\.\./([^`]+)`")


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


def math_spans(text: str) -> list[str]:
    """The inline ($...$) and display ($$...$$) mathematics of a text, commands that hold words dropped."""
    return [NOT_SYMBOLS.sub(" ", m.group(1) or m.group(2)) for m in MATH.finditer(text)]


def uses_letter(math: str, letter: str) -> bool:
    """Whether ``letter`` ('K', or a command such as '\\mu') stands on its own in ``math``:
    not inside a longer command or word (\\max holds no m, \\Gamma no \\gamma)."""
    body = re.escape(letter)
    before = r"(?<![A-Za-z])" if letter.startswith("\\") else r"(?<![\\A-Za-z])"
    return re.search(before + body + r"(?![A-Za-z])", math) is not None


def _notation_rows(text: str, heading: str | None) -> list[tuple[list[str], str]]:
    """(letters of the symbol column, the 'where' column) of the table under ``heading`` (None: the first)."""
    if heading is not None:
        text = text.split(heading, 1)[1]
    rows, started = [], False
    for line in text.splitlines():
        if line.startswith("| :--"):
            started = True
            continue
        if started and not line.startswith("|"):
            break
        if started:
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            letters = [found.group(1) for span in re.findall(r"\$([^$]+)\$", cells[0])
                       if (found := LETTER.match(span.strip()))]
            rows.append((letters, cells[2]))
    return rows


def notation_places(text: str) -> dict[str, set[str] | None]:
    """{letter: the pages (paths without suffix, e.g. 'notebooks/06_moco') that may use it}, from
    book/notation.md: the 'where' of the first table plus the chapters of the one-chapter table.
    None for a letter that some row gives to every chapter (nothing to check)."""
    places: dict[str, set[str] | None] = {}
    for letters, where in _notation_rows(text, None):
        for letter in letters:
            if "every chapter" in where or places.get(letter, set()) is None:
                places[letter] = None
            else:
                places.setdefault(letter, set()).update(DOC.findall(where))
    for letters, where in _notation_rows(text, "## Symbols of one chapter"):
        for letter in letters:
            if places.get(letter) is not None:
                places[letter].update(DOC.findall(where))
    return places


def _page_name(path: Path) -> str:
    """'notebooks/06_moco' for a chapter; an instructor's exercise notebook answers to its student version."""
    name = path.relative_to(ROOT).with_suffix("").as_posix()
    return name.replace("exercises/", "exercises/student/", 1) if name.startswith("exercises/0") else name


def _texts(path: Path) -> list[tuple[str, str]]:
    """(where, text) of every cell of a notebook, or the whole of a Markdown page."""
    if path.suffix == ".md":
        return [("page", path.read_text())]
    return [(f"cell {i}", _source(cell)) for i, cell in enumerate(_cells(path))]


def notation_problems(path: Path, places: dict[str, set[str] | None]) -> list[str]:
    """The letters of the notation's first table that ``path`` uses but is not listed for."""
    page = _page_name(path)
    problems = []
    for where, text in _texts(path):
        for math in math_spans(text):
            for letter, pages in places.items():
                if pages is not None and page not in pages and uses_letter(math, letter):
                    problems.append(f"{where}: {letter} in ${math.strip()[:60]}$")
    return problems


WALL_TIME = re.compile(r"wall_time_s")


def wall_time_problems(cells: list[dict]) -> list[str]:
    """Code cells that read a record's wall time without calling it a wall time to the reader."""
    return [f"cell {i}" for i, cell in enumerate(cells) if cell["cell_type"] == "code"
            and WALL_TIME.search(_source(cell)) and "wall time" not in _source(cell)]


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


@pytest.mark.parametrize("path", [p for p in CHAPTERS + PAGES + MARKDOWN_PAGES if p != NOTATION],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_notation_is_the_books(path):
    problems = notation_problems(path, notation_places(NOTATION.read_text()))
    assert not problems, (f"{path.name} uses letters of book/notation.md outside the pages it lists for "
                          f"them; use the table's letter, or list the page there: {problems}")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_training_time_is_the_books(path):
    assert wall_time_problems(_cells(path)) == [], (
        f"{path.name} shows a record's wall time (training and evaluation) without saying so; a training "
        "time is labels.training_seconds(record), labelled with labels.TRAINING_TIME")


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


def test_notation_checks_catch_a_second_meaning():
    table = ("| symbol | meaning | where | paper |\n| :-- | :-- | :-- | :-- |\n"
             "| $N$ | batch | every chapter | |\n"
             "| $K$ | queue | {doc}`../notebooks/06_moco` | |\n"
             "| $\\mu$, $c_j$ | momentum, a prototype | {doc}`../notebooks/02_instdisc` | |\n\n"
             "## Symbols of one chapter\n\n| symbol | meaning | chapter | paper |\n| :-- | :-- | :-- | :-- |\n"
             "| $c_t$ | context | {doc}`../notebooks/03_cpc` | |\n")
    places = notation_places(table)
    assert places == {"N": None, "K": {"notebooks/06_moco"}, "\\mu": {"notebooks/02_instdisc"},
                      "c": {"notebooks/02_instdisc", "notebooks/03_cpc"}}
    assert uses_letter("K = 4096", "K") and uses_letter("\\log(K + 1)", "K")
    assert not uses_letter("\\max_k", "m") and not uses_letter("m_{base}", "b")
    assert not uses_letter("\\Gamma", "\\gamma") and uses_letter("\\mu\\, v_i", "\\mu")
    assert math_spans("the $m_{\\mathrm{base}}$ and $$\\mathcal{L} = 1$$") == ["m_{ }", "  = 1"]


def test_wall_time_check_catches_an_unnamed_wall_time():
    assert wall_time_problems([_code("f\"{p['wall_time_s'] / 60:.1f} min\"")]) == ["cell 0"]
    assert wall_time_problems([_code("wall = p['wall_time_s']  # the wall time of the run")]) == []
