"""python -m contrastlab.exercises make-student SRC DST [--check]

SRC is an instructor notebook and DST the student notebook (or a folder for it); or SRC is a
folder, and every ``*.ipynb`` directly in it gets a student version in the folder DST.
``--check`` writes nothing and exits with status 1 if a student notebook is missing or differs
from what would be generated (for CI).

    python -m contrastlab.exercises make-student exercises exercises/student
    python -m contrastlab.exercises list          # the exercises and the signatures to implement
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from . import EXERCISES
from .notebook import make_student_notebook, student_text, student_version


def _pairs(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    if src.is_dir():
        return [(s, dst / s.name) for s in sorted(src.glob("*.ipynb"))]
    return [(src, dst / src.name if dst.is_dir() else dst)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contrastlab.exercises", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make-student", help="write student notebooks from instructor notebooks")
    make.add_argument("src", type=Path, help="an instructor notebook, or a folder of them")
    make.add_argument("dst", type=Path, help="the student notebook, or a folder for them")
    make.add_argument("--check", action="store_true", help="write nothing; exit 1 if a student notebook is stale")
    commands.add_parser("list", help="print every exercise with the signature to implement")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, exercise in EXERCISES.items():
            print(f"## {name}: {exercise.title}  (exercises.check_{name})\n\n{exercise.signature}\n")
        return 0
    if not args.src.exists():
        parser.error(f"SRC must be a notebook or a folder of notebooks, got {str(args.src)!r}, which does not exist")
    stale = []
    for src, dst in _pairs(args.src, args.dst):
        if args.check:
            want = student_text(student_version(nbformat.read(src, as_version=4), name=str(src)))
            if not dst.exists() or dst.read_text(encoding="utf-8") != want:
                stale.append(f"{dst} (from {src})")
        else:
            print(f"{src} -> {make_student_notebook(src, dst)}")
    if stale:
        print("student notebooks missing or out of date:\n  " + "\n  ".join(stale)
              + f"\nregenerate: python -m contrastlab.exercises make-student {args.src} {args.dst}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
