"""Student notebooks from instructor notebooks, in the manner of nbgrader's solution markers.

In a code cell of the instructor notebook, the lines between ``### BEGIN SOLUTION`` and
``### END SOLUTION`` (markers included) are replaced by one stub line at the indentation of
the BEGIN marker::

    def nt_xent(z1, z2, temperature):
        ### BEGIN SOLUTION                      def nt_xent(z1, z2, temperature):
        z = torch.cat([z1, z2])          ->         raise NotImplementedError("your code here")
        ...
        ### END SOLUTION

In a Markdown cell the block becomes ``YOUR ANSWER HERE``. Cells tagged ``instructor-only``
are dropped. Outputs and execution counts are removed, so the student notebook is stored clean;
everything else (cell ids, tags, notebook metadata) is kept, so generating it twice gives the
same file.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_STUB = 'raise NotImplementedError("your code here")'
MARKDOWN_STUB = "YOUR ANSWER HERE"
DROP_TAG = "instructor-only"

_BEGIN_LINE = re.compile(r"^(\s*)" + re.escape(BEGIN) + r"\s*$")
_END_LINE = re.compile(r"^\s*" + re.escape(END) + r"\s*$")


def strip_solutions(source: str, stub: str, where: str = "the cell") -> str:
    """``source`` with every BEGIN/END SOLUTION block replaced by ``stub`` (indented like BEGIN).

    Raises:
        ValueError: a BEGIN without its END, or an END without a BEGIN, naming ``where``.
    """
    out, indent = [], None
    for number, line in enumerate(source.splitlines(), start=1):
        begin = _BEGIN_LINE.match(line)
        if begin:
            if indent is not None:
                raise ValueError(f"{where}: line {number} opens a solution block inside another one "
                                 f"(expected {END!r} first)")
            indent = begin.group(1)
            out.append(indent + stub)
        elif _END_LINE.match(line):
            if indent is None:
                raise ValueError(f"{where}: line {number} has {END!r} without a {BEGIN!r} before it")
            indent = None
        elif indent is None:
            out.append(line)
    if indent is not None:
        raise ValueError(f"{where}: a solution block is opened by {BEGIN!r} and never closed by {END!r}")
    return "\n".join(out)


def student_version(nb: nbformat.NotebookNode, name: str = "the notebook") -> nbformat.NotebookNode:
    """A copy of the instructor notebook ``nb`` with solutions replaced by stubs and no outputs."""
    nb = nbformat.from_dict(nb)          # a deep copy
    cells = []
    for number, cell in enumerate(nb.cells):
        if DROP_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        where = f"{name}, cell {number}"
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source, CODE_STUB, where)
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        elif cell.cell_type == "markdown":
            cell.source = strip_solutions(cell.source, MARKDOWN_STUB, where)
        cells.append(cell)
    nb.cells = cells
    return nb


def make_student_notebook(src: str | Path, dst: str | Path) -> Path:
    """Write the student version of the instructor notebook ``src`` to ``dst``; returns ``dst``.

    A ``dst`` that is an existing folder receives a notebook of the same name as ``src``.
    """
    src, dst = Path(src), Path(dst)
    if src.suffix != ".ipynb" or not src.is_file():
        raise FileNotFoundError(f"src must be an existing .ipynb notebook, got {str(src)!r}")
    if dst.is_dir():
        dst = dst / src.name
    nb = student_version(nbformat.read(src, as_version=4), name=str(src))
    nbformat.validate(nb)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(student_text(nb), encoding="utf-8")
    return dst


def student_text(nb: nbformat.NotebookNode) -> str:
    """The notebook as stored: nbformat's JSON with a final newline."""
    return nbformat.writes(nb) + "\n"


__all__ = ["make_student_notebook", "strip_solutions", "student_text", "student_version"]
