"""Verdicts in the book come from the scorecard, never from typed text or a fixed threshold.

A chapter states a verdict only through `contrastlab.book.verdict_sentence` / `claims_table`, which
read it from `contrastlab.scorecard` (the rule of `contrastlab.stats`): so no markdown cell and no
code cell of a chapter on the instrument may spell a verdict word itself, and none may use the old
yes/no verdict or its fixed half-point threshold. The cells of the page that defines the rule
carry the tag ``verdict-rule`` and are exempt.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from contrastlab import book, scorecard

ROOT = Path(__file__).resolve().parents[1]
VERDICT_WORDS = re.compile(r"\b(reproduced|reversed|not resolved)\b", re.IGNORECASE)
OLD_RULE = re.compile(r"\bverdict\(|\bCLEAR\b")
# Every chapter is on the instrument: none may state a verdict of its own.
ON_THE_INSTRUMENT = tuple(f"{i:02d}" for i in range(1, 12))
PAGES = [p for p in sorted((ROOT / "notebooks").glob("*.ipynb")) if p.name[:2] in ON_THE_INSTRUMENT] + \
    sorted((ROOT / "book").glob("*.ipynb"))


def _cells(path):
    for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if "verdict-rule" not in cell.get("metadata", {}).get("tags", []):
            yield i, cell


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_no_typed_verdicts(path):
    typed = [(i, m.group(0)) for i, cell in _cells(path) for m in VERDICT_WORDS.finditer(cell.source)]
    assert not typed, f"{path.name}: verdict words typed in cells {typed}; use book.verdict_sentence"


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_no_fixed_threshold_verdicts(path):
    old = [i for i, cell in _cells(path) if cell.cell_type == "code" and OLD_RULE.search(cell.source)]
    assert not old, f"{path.name}: cells {old} use the single-seed yes/no verdict or CLEAR"


def test_the_check_catches_a_typed_verdict(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("NT-Xent wins: reproduced.")])
    path = tmp_path / "page.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(AssertionError, match="verdict words typed"):
        test_no_typed_verdicts(path)


def test_chapters_show_the_claims_they_own():
    """Each chapter on the instrument displays every scorecard claim it owns: it names each claim,
    rank claim and bookkeeping fact, and shows the table of each kind it owns, claims_table for the
    claims, correlations_table for the rank claims and facts_table for the bookkeeping facts."""
    tables = {"claim": "claims_table", "correlation": "correlations_table", "bookkeeping": "facts_table"}
    owned = [(c.chapter, c.id, c.kind) for c in scorecard.CLAIMS] + \
        [(c.chapter, c.id, "correlation") for c in scorecard.RANK_CLAIMS]
    assert {kind for _, _, kind in owned} <= set(tables), "a kind of claim with no table to show it"
    for chapter in sorted({ch for ch, _, _ in owned} & set(ON_THE_INSTRUMENT)):
        path = book.chapter_notebook(chapter)
        source = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
        shown = set(re.findall(r"\"([\w-]+)\"", source))   # claim ids named in the cells that show them
        mine = [(claim_id, kind) for ch, claim_id, kind in owned if ch == chapter]
        missing_tables = sorted({tables[kind] for _, kind in mine} - {t for t in tables.values()
                                                                      if f'{t}(card, "{chapter}")' in source})
        missing = [claim_id for claim_id, _ in mine if claim_id not in shown]
        assert not missing_tables and not missing, (f"{path.name}: tables not shown {missing_tables}, "
                                                    f"claims not shown {missing}")


def test_verdict_sentence_carries_the_scorecard_verdict():
    card = {"instrument": {"name": "x", "dataset": "d", "budget": "bench", "metric": "linear_acc"}, "pending": [],
            "claims": [{"id": "c", "chapter": "05", "metric": "linear_acc", "paired": True, "kind": "claim",
                        "claim": "a beats b", "paper": "p", "setting": "d, budget bench", "diff": 0.02, "half_width": 0.01,
                        "verdict": "reproduced",
                        "arms": [{"name": "a", "values": [0.81, 0.82, 0.83]},
                                 {"name": "b", "values": [0.79, 0.80, 0.81]}]}]}
    text = book.verdict_sentence(card, "c")
    assert text.startswith("**reproduced**") and "82.0 ± 0.6% (n = 3)" in text and "+2.0 ± 1.0 points" in text
    assert "**reproduced**" in str(book.claims_table(card, "05"))
    assert book.verdict_counts(card, "05") == {"reproduced": 1, "not resolved": 0, "reversed": 0}
    with pytest.raises(KeyError, match="unknown claim 'nope'"):
        book.verdict_sentence(card, "nope")


def test_a_pending_claim_renders_as_not_yet_measured():
    """A claim whose cells are still training (pending) reads as not yet measured in every helper a
    chapter uses, and counts toward no verdict."""
    card = {"instrument": {"name": "x", "dataset": "d", "budget": "bench", "metric": "linear_acc"},
            "claims": [], "pending": ["swav-multicrop"]}
    assert "not yet measured" in book.verdict_sentence(card, "swav-multicrop")
    assert "Not yet measured (records missing): `swav-multicrop`" in str(book.claims_table(card, "07"))
    assert book.verdict_counts(card, "07") == {"reproduced": 0, "not resolved": 0, "reversed": 0}
    owned = sum(c.kind == "claim" for c in scorecard.claims_of("07"))
    assert book.verdict_summary(card, "07").endswith(f"; {owned} not yet measured (their records are missing).")
