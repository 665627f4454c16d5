"""The book's side of contrastlab: the setup cell of every chapter, and the helpers chapters share.

Every chapter opens with the same cell (the ``%pip`` line runs only where contrastlab is not
installed yet, e.g. on Colab)::

    import importlib.util

    if importlib.util.find_spec("contrastlab") is None:   # not installed here (on Colab, say)
        %pip install -q "contrastlab @ git+https://github.com/contrastlab/contrastlab"
    from contrastlab import book
    ch = book.setup(chapter="01")

`setup` picks the device, the budget and the dataset, and returns a `Chapter` whose ``run``
calls `contrastlab.experiments.run` with the chapter's record cache: the published records in
the repository's ``results/`` folder in a checkout; on Colab, the same records fetched from
GitHub, unless the reader asks to recompute them (``setup(..., recompute=True)``).

Commands (from a checkout)::

    python -m contrastlab.book records 05     # recompute every record chapter 05 uses
    python -m contrastlab.book new 07_swav    # start notebooks/07_swav.ipynb from the template

Environment: ``CONTRASTLAB_RECOMPUTE=1`` makes `setup` default to ``recompute=True``;
``CONTRASTLAB_BUDGET`` and ``CONTRASTLAB_DATASET`` choose the budget and the dataset.
"""
from __future__ import annotations

import argparse
import ast
import inspect
import json
import math
import os
import re
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import __version__, experiments, labels
from ._validate import check_choice
from .data import DATASETS
from .train import resolve_device

# The repository, in one place (_config.yml's repository.url says the same; tests/test_book.py checks).
REPO_URL = "https://github.com/contrastlab/contrastlab"
BRANCH = "main"
INSTALL_SPEC = f"contrastlab @ git+{REPO_URL}"
RECORDS_URL = f"{REPO_URL.replace('github.com', 'raw.githubusercontent.com')}/{BRANCH}/results"
PUBLISHED_BUDGET = "cpu"           # the budget of the records committed to results/
# The scale of the chapters' ablation grids at the cpu budget, where a grid holds many runs: a
# class-balanced sixth of Fashion-MNIST's training images for 3 epochs, a couple of minutes a run
# on one CPU core (evaluation still on the whole test set). Tables of such runs say so.
ABLATION_SCALE = {"dataset.train_size": 10000, "train.epochs": 3}
# ... and at the gpu budget, whose full runs are 100 epochs of ResNet-18: 10 epochs a run (one of
# warmup), so that a chapter's grid is meant to fit in about an hour on a T4 (an estimate from the
# full runs' length, not a measured time).
GPU_ABLATION_SCALE = {"train.epochs": 10, "train.warmup_epochs": 1.0}
GPU_DATASETS = ("cifar10",)        # offered to readers who have a GPU and a network
RECOMPUTE_ENV, DATASET_ENV = "CONTRASTLAB_RECOMPUTE", "CONTRASTLAB_DATASET"
CHECKOUT = Path(__file__).resolve().parents[1]   # the repository root, in a source checkout
TEMPLATE = CHECKOUT / "book" / "templates" / "chapter.md"

__all__ = ["ABLATION_SCALE", "GPU_ABLATION_SCALE", "REPO_URL", "Chapter", "Source", "Table", "claims_table",
           "correlations_table", "difference", "facts_table", "find_claim", "in_colab", "interval_side", "mean_se", "paper_vs_ours", "pct",
           "points", "setup", "show_source", "table",
           "verdict_counts", "verdict_list", "verdict_sentence", "verdict_summary"]


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _chapter_id(chapter: str | int) -> str:
    if isinstance(chapter, int):
        chapter = f"{chapter:02d}"
    if not re.fullmatch(r"\d{2}", str(chapter)):
        raise ValueError(f"chapter must be a two-digit number such as '05', got {chapter!r}")
    return str(chapter)


# ---------------------------------------------------------------------------------------- setup


@dataclass
class Chapter:
    """What a chapter runs with; made by `setup`."""

    chapter: str            # two digits, the prefix of the notebook's file name
    device: str             # where training runs: 'cuda', 'mps' or 'cpu'
    budget: str             # 'smoke', 'cpu' or 'gpu' (see contrastlab.experiments.PRESETS)
    dataset: str            # the default dataset of `run`
    recompute: bool         # train again even where a record exists
    fetch: bool             # download missing published records from the repository
    cache_dir: Path         # where records are read and written
    used: list[str] = field(default_factory=list, repr=False)   # file names of the records run returned

    def config(self, method: str, *, dataset: str | None = None, seed: int = 0,
               overrides: dict | None = None) -> experiments.ExperimentConfig:
        """The `ExperimentConfig` of ``method`` under this chapter's budget and dataset."""
        return experiments.ExperimentConfig(method=method, dataset=dataset or self.dataset,
                                            budget=self.budget, seed=seed, overrides=dict(overrides or {}))

    def run(self, method: str | experiments.ExperimentConfig, *, dataset: str | None = None,
            seed: int = 0, overrides: dict | None = None, progress: bool = True) -> dict:
        """`contrastlab.experiments.run` with this chapter's cache, budget and dataset.

        Args:
            method: a method name (see ``contrastlab.METHODS``), 'raw_pixels', 'random_init', or a
                complete `ExperimentConfig` (its budget, when None, becomes the chapter's).
            dataset: overrides the chapter's dataset.
            seed: the experiment's seed.
            overrides: dotted keys of the resolved configuration, e.g. ``{"method.temperature": 0.1}``.
            progress: show the training progress bar.

        Returns:
            The result record (``config``, ``metrics``, ``curves``, ``provenance``). With
            ``recompute`` each record is trained again once per session; later calls reuse it.
        """
        if isinstance(method, experiments.ExperimentConfig):
            config = method if method.budget else replace(method, budget=self.budget)
        else:
            config = self.config(method, dataset=dataset, seed=seed, overrides=overrides)
        path = experiments.record_path(experiments.resolve(config), self.cache_dir)
        force = self.recompute and path.name not in self.used
        if not path.exists() and not self.recompute and self.fetch:
            fetch_record(path.name, path.parent)
        record = experiments.run(config, cache_dir=self.cache_dir, force=force, progress=progress)
        if path.name not in self.used:
            self.used.append(path.name)
        return record

    def scorecard(self) -> dict:
        """The scorecard of the records in this chapter's cache (`contrastlab.scorecard.scorecard`):
        every claim the book decides, with its per-seed values and verdict. Where the chapter fetches
        published records (Colab), the instrument's missing records are fetched first."""
        from . import scorecard as _scorecard
        if self.fetch and not self.recompute:
            for config in _scorecard.missing_configs(cache_dir=self.cache_dir):
                path = experiments.record_path(experiments.resolve(config), self.cache_dir)
                fetch_record(path.name, path.parent)
        return _scorecard.scorecard(cache_dir=self.cache_dir)

    @property
    def ablation(self) -> dict:
        """The overrides of one run of an ablation grid.

        `ABLATION_SCALE` at the cpu budget, where a grid of full runs would take hours;
        `GPU_ABLATION_SCALE` at the gpu budget (10 of the full runs' 100 epochs); nothing at the
        smoke budget (already tiny)."""
        return dict({"cpu": ABLATION_SCALE, "gpu": GPU_ABLATION_SCALE}.get(self.budget, {}))

    def time_table(self, *runs: str, dataset: str | None = None, ablation: bool = False) -> Table:
        """How long the chapter's first training cell takes at each budget, from the records.

        For each run and each budget (smoke, cpu, gpu) the record of that run in this chapter's
        cache gives its training time (`TRAINING_TIME`) and the machine it ran on; a budget without a
        record says so, except that the gpu budget is estimated from a measured throughput
        (``results/benchmarks/methods-gpu.json``, written by ``python -m contrastlab.benchmark
        --budget gpu``) where one exists. Nothing is invented: without a record or a measurement
        a cell reads "not measured yet". The caption adds how long the published records take
        to load, timed here.

        Args:
            runs: run specs as `contrastlab.report.parse_run` reads them, e.g. "simclr" or
                "simclr:eval.label_fractions=[0.01,0.1]".
            dataset: the runs' dataset; None: the chapter's.
            ablation: the runs are ablation-grid runs (`Chapter.ablation`: `ABLATION_SCALE` at the
                cpu budget, `GPU_ABLATION_SCALE` at the gpu budget).

        Returns:
            A `Table`: one row per run (named by `contrastlab.labels.run_label`), one column per budget.
        """
        from .report import parse_run
        if not runs:
            raise ValueError("time_table needs at least one run spec, e.g. ch.time_table('simclr'); got none")
        rows, loads = [], []
        for spec in runs:
            method, overrides = parse_run(spec)
            cells = [labels.run_label(spec)]
            for budget in TIME_BUDGETS:
                extra = dict({"cpu": ABLATION_SCALE, "gpu": GPU_ABLATION_SCALE}.get(budget, {})) if ablation else {}
                config = experiments.ExperimentConfig(method=method, dataset=dataset or self.dataset, budget=budget,
                                                      overrides={**extra, **overrides})
                path = experiments.record_path(experiments.resolve(config), self.cache_dir)
                if path.exists():
                    start = time.perf_counter()
                    record = json.loads(path.read_text())
                    loads.append(time.perf_counter() - start)
                    device = labels.device_label(record["provenance"].get("device"))
                    seconds = labels.training_seconds(record)
                    cells.append(f"{labels.minutes(seconds)} ({device})" if seconds is not None
                                 else "no training (evaluation only)")
                elif budget == "gpu":
                    cells.append(gpu_estimate(config, self.cache_dir))
                else:
                    cells.append("no record here")
            rows.append(cells)
        load = (f" A stored record loads in {1000 * max(loads):.1f} ms or less (timed now, on this machine), so "
                "with the published records the next cell runs in seconds; `setup(..., recompute=True)` trains "
                "the runs instead, for the times in the table." if loads else "")
        caption = (f"\n\nWhat the runs of the next cell cost to train, by budget: their {TRAINING_TIME}, read "
                   f"from each run's record, with the machine it ran on.{load}")
        return Table(table(rows, ["run", *(f"budget `{b}`" for b in TIME_BUDGETS)]) + caption + "\n")

    def summary(self) -> str:
        """One paragraph on what this chapter runs with, and how to change it."""
        lines = [(f"contrastlab {__version__}, chapter {self.chapter}: device {self.device}, "
                  f"budget {self.budget!r}, dataset {self.dataset!r}.")]
        if self.recompute:
            lines.append("Records: recomputed here (this takes the budget's full training time).")
        elif self.fetch:
            lines.append(f"Records: the published ones (budget {PUBLISHED_BUDGET!r}) from {RECORDS_URL}; "
                         "setup(..., recompute=True) trains them here instead.")
        else:
            lines.append(f"Records: read from {self.cache_dir} when present, computed otherwise.")
        if self.budget == "gpu" and self.recompute:
            lines.append(f"Budget 'gpu': each run trains {experiments.PRESETS['gpu']['train.epochs']} epochs of "
                         f"ResNet-18, each ablation run {GPU_ABLATION_SCALE['train.epochs']} epochs (ch.ablation); "
                         "pass budget='cpu' for the minutes-long recipe.")
        if self.device == "cuda" and self.dataset not in GPU_DATASETS:
            lines.append("You have a GPU: setup(..., dataset='cifar10', recompute=True) trains on CIFAR-10 "
                         "(downloaded by torchvision, 170 MB).")
        return "\n".join(lines)


def setup(chapter: str | int, recompute: bool | None = None, *, budget: str | None = None,
          dataset: str | None = None, fetch: bool | None = None, quiet: bool = False) -> Chapter:
    """The first cell of every chapter: choose the device, budget, dataset and record source.

    Args:
        chapter: the chapter's two-digit number, e.g. "05" (or 5).
        recompute: train every experiment again instead of reusing records. None: True when
            $CONTRASTLAB_RECOMPUTE is set to 1 (``python -m contrastlab.book records`` does that).
        budget: 'smoke', 'cpu' or 'gpu'. None: $CONTRASTLAB_BUDGET if set; on Colab, when
            reusing records, the budget they were published at ('cpu'); otherwise 'gpu' with
            CUDA, else 'cpu' (`contrastlab.experiments.default_budget`).
        dataset: None: $CONTRASTLAB_DATASET if set, else 'fashion-mnist' (the published records);
            with a GPU and a network, 'cifar10' is the larger alternative.
        fetch: download records missing from the cache from the repository. None: on Colab only,
            so that no local build or test touches the network.
        quiet: do not print the summary.

    Returns:
        A `Chapter`; use its ``run`` in place of `contrastlab.experiments.run`.
    """
    chapter = _chapter_id(chapter)
    recompute = _env_flag(RECOMPUTE_ENV) if recompute is None else bool(recompute)
    colab = in_colab()
    if budget is None:
        budget = os.environ.get("CONTRASTLAB_BUDGET") or (
            PUBLISHED_BUDGET if colab and not recompute else experiments.default_budget())
    check_choice("budget", budget, experiments.BUDGETS)
    dataset = dataset or os.environ.get(DATASET_ENV) or "fashion-mnist"
    check_choice("dataset", dataset, DATASETS)
    ch = Chapter(chapter=chapter, device=resolve_device("auto").type, budget=budget, dataset=dataset,
                 recompute=recompute, fetch=colab if fetch is None else bool(fetch),
                 cache_dir=experiments.default_cache_dir())
    if not quiet:
        print(ch.summary())
    return ch


TIME_BUDGETS = ("smoke", "cpu", "gpu")
# The book's two times (the README and the page "How this book measures" quote them).
RUN_TIME = ("the wall time of the whole run, training and the final kNN and linear-probe evaluation together "
            "(`provenance.wall_time_s`)")
TRAINING_TIME = labels.TRAINING_TIME


def gpu_estimate(config: experiments.ExperimentConfig, cache_dir: Path) -> str:
    """The gpu budget's training time of ``config`` estimated from a measured GPU throughput, or
    "not measured yet" when ``<cache_dir>/benchmarks/methods-gpu.json`` has no row for its method.

    The estimate is the views a run trains on (training images x epochs x views per image) over
    the measured views per second; it leaves out the evaluation and says so."""
    bench = Path(cache_dir) / "benchmarks" / "methods-gpu.json"
    if not bench.exists():
        return "not measured yet"
    resolved = experiments.resolve(config)
    rows = [r for r in json.loads(bench.read_text()).get("methods", [])
            if r.get("method") == resolved["method"]["name"] and not r.get("overrides")]
    if not rows:
        return "not measured yet"
    row = rows[0]
    images = resolved["dataset"].get("train_size") or 0
    if not images:
        return "not measured yet"
    seconds = images * resolved["train"]["epochs"] * row["n_views"] / row["views_per_sec"]
    return f"about {labels.minutes(seconds)} of training, estimated ({labels.device_label(row.get('device'))})"


def fetch_record(name: str, cache_dir: str | Path, *, timeout: float = 30.0) -> bool:
    """Download the published record ``name`` into ``cache_dir``; False when it is not published.

    A missing network is not an error either (a warning is printed): the caller computes instead.
    """
    url = f"{RECORDS_URL}/{name}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:   # a fixed https URL
            record = json.loads(response.read().decode())
    except urllib.error.HTTPError as err:
        if err.code != 404:
            print(f"could not fetch {url}: {err}; computing it instead", file=sys.stderr)
        return False
    except (urllib.error.URLError, TimeoutError, ValueError) as err:
        print(f"could not fetch {url}: {err}; computing it instead", file=sys.stderr)
        return False
    experiments.write_json(Path(cache_dir) / name, record)
    return True


# -------------------------------------------------------------------------------- display helpers


class Source:
    """Source code that displays as a highlighted block in a notebook and as text elsewhere.

    In a notebook the docstring of the function or class is shown as text above the code (its
    reStructuredText and Google-style sections made readable) and left out of the code block;
    ``str(source)`` is the code exactly as it is in the file."""

    def __init__(self, code: str, where: str = ""):
        self.code, self.where = code, where

    def __str__(self) -> str:
        return self.code

    def __repr__(self) -> str:
        return (f"# {self.where}\n" if self.where else "") + self.code

    def _repr_markdown_(self) -> str:
        code, doc = _split_docstring(self.code)
        fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", code)), default=0))
        caption = f"`{self.where}`\n\n" if self.where else ""
        text = f"{_docstring_markdown(doc)}\n\n" if doc else ""
        return f"{caption}{text}{fence}python\n{code.rstrip()}\n{fence}\n"


def _split_docstring(code: str) -> tuple[str, str]:
    """(the code without the docstring of its first def or class, that docstring cleaned); the
    code unchanged and '' when there is none or the code does not parse on its own."""
    try:
        node = ast.parse(code).body[0]
    except (SyntaxError, IndexError):
        return code, ""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or not node.body:
        return code, ""
    first = node.body[0]
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return code, ""
    lines = code.splitlines()
    rest = lines[:first.lineno - 1] + lines[first.end_lineno:]
    if len(node.body) == 1:                    # a body that is only a docstring keeps a statement
        rest.insert(first.lineno - 1, " " * first.col_offset + "...")
    return "\n".join(rest) + "\n", inspect.cleandoc(first.value.value)


_SECTION = re.compile(r"(Args|Arguments|Returns|Yields|Raises|Attributes|Example|Examples|Note|Notes):\s*$")


def _docstring_markdown(doc: str) -> str:
    """A docstring as Markdown prose: ``code`` and :role:`name` as code, Google-style sections
    (Args:, Returns:) as bold headings with their entries as a list, ``::`` blocks as code."""
    out: list[str] = []
    block: list[str] | None = None           # the lines of a literal or maths block after '::'
    fences = ("```", "```")
    section = ""                             # the Google-style section the line is in
    for line in doc.splitlines():
        if block is not None:
            if line.strip() and not line.startswith(" "):
                out += [fences[0], *textwrap.dedent("\n".join(block)).strip("\n").splitlines(), fences[1], ""]
                block = None
            else:
                block.append(line)
                continue
        if line.strip().startswith(".. math::"):
            block, fences = [], ("$$", "$$")
            continue
        text = re.sub(r":math:`([^`]+)`", r"$\1$", line)                # :math:`x` -> $x$
        text = re.sub(r":[a-z:]+:`~?([^`]+)`", r"`\1`", text)          # :func:`x` -> `x`
        text = re.sub(r"``([^`]+)``", r"`\1`", text)                     # ``x`` -> `x`
        if text.rstrip().endswith("::"):
            block, fences = [], ("```", "```")
            text = text.rstrip()[:-1]
        if _SECTION.match(text.strip()) and not line.startswith(" "):
            section = text.strip()[:-1]
            out += ["", f"**{section}**", ""]
        elif section in ("Args", "Arguments", "Attributes", "Raises") and re.match(r"^ {4}\S", text):
            entry = re.match(r"^\s*([\w*.]+)( \([^)]*\))?:\s*(.*)", text)
            out.append(f"- `{entry[1]}`{entry[2] or ''}: {entry[3]}" if entry else "- " + text.strip())
        elif section and text.startswith(" ") and out and out[-1].strip():
            out[-1] += " " + text.strip()          # a continuation (or a Returns: paragraph)
        else:
            section = section if text.startswith(" ") else ""
            out.append(text.strip() if section else text)
    if block:
        out += [fences[0], *textwrap.dedent("\n".join(block)).strip("\n").splitlines(), fences[1]]
    return "\n".join(out).strip()


def show_source(obj) -> Source:
    """The source of a contrastlab function, class or method, to display in a chapter.

    Chapters show the library's code this way instead of redefining it in cells, so what the
    reader sees is what runs. The block is headed by the file and line it comes from.
    """
    code = inspect.getsource(obj)
    try:
        path = Path(inspect.getsourcefile(obj)).resolve()
        line = inspect.getsourcelines(obj)[1]
        where = f"{path.relative_to(Path(__file__).resolve().parent.parent).as_posix()}, line {line}"
    except (TypeError, ValueError, OSError):
        where = ""
    return Source(textwrap.dedent(code), where)   # a method keeps its body indented under its def


class Table:
    """A Markdown table that a notebook displays as a table; ``str(table)`` is the Markdown."""

    def __init__(self, markdown: str):
        self.markdown = markdown

    def __str__(self) -> str:
        return self.markdown

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        return self.markdown


def _format(value, metric: str = "") -> str:
    if isinstance(value, float):
        return f"{value:.1%}" if "acc" in metric and 0.0 <= value <= 1.0 else f"{value:.4g}"
    return str(value)


def provenance_note(record: dict) -> str:
    """Budget, dataset, encoder, device, commit and date of a record, in one line."""
    prov, config = record.get("provenance", {}), record.get("config", {})
    parts = [f"budget `{prov.get('budget', config.get('budget', '?'))}`"]
    if "dataset" in config:
        parts.append(config["dataset"]["name"])
    if "encoder" in config:
        parts.append(config["encoder"]["name"])
    parts.append(labels.device_label(prov.get("device")))
    commit = prov.get("commit") or "unknown"
    parts.append(f"commit `{commit[:7] + commit[40:] if len(commit) >= 40 else commit}`")
    if prov.get("date"):
        parts.append(prov["date"][:10])
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------------
# the small formatters every chapter's verdicts use


def pct(x: float) -> str:
    """An accuracy as a percentage with one decimal: 0.8123 -> '81.2%'."""
    return f"{x:.1%}"


def points(x: float) -> str:
    """A difference of accuracies in signed percentage points: 0.012 -> '+1.2 points'."""
    return f"{100 * x:+.1f} points"


def table(rows, header, *, left: int = 1) -> str:
    """A Markdown table: ``header`` (column names), ``rows`` (sequences of cells, each printed with
    ``str``); the first ``left`` columns are left-aligned, the others right-aligned (numbers)."""
    align = ["| :-- "] * left + ["| --: "] * (len(header) - left)
    lines = ["| " + " | ".join(map(str, header)) + " |", "".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def paper_vs_ours(rows: list[dict], *, caption: str | None = None) -> Table:
    """The "paper vs this book" table that closes a chapter's experiment.

    Args:
        rows: one dict per quantity, with keys
            ``quantity`` (what is measured, e.g. "linear probe accuracy"),
            ``paper`` (the number as the paper prints it, with its setting, e.g.
            "69.3% (ImageNet, ResNet-50)"), ``cite`` (optional bibtex key of the paper),
            ``record`` (our result record) and ``metric`` (a key of its ``metrics``), or
            ``ours`` (our number, already formatted) with the ``record`` it comes from.
        caption: replaces the default caption.

    Returns:
        A `Table`; its Markdown labels the paper's numbers as the paper's, and gives ours
        with the budget, dataset, encoder, device and commit of the record that produced them.
    """
    lines = ["| quantity | the paper's number | the paper's setting | this book's number | this book's setting |",
             "| :-- | :-- | :-- | --: | :-- |"]
    for i, row in enumerate(rows):
        missing = [k for k in ("quantity", "paper", "record") if k not in row]
        if missing or ("metric" not in row and "ours" not in row):
            raise ValueError(f"rows[{i}] needs quantity, paper, record and metric (or ours); "
                             f"got keys {sorted(row)}")
        record = row["record"]
        ours = row["ours"] if "ours" in row else _format(record["metrics"][row["metric"]], row["metric"])
        number, setting = _paper_setting(row["paper"])
        paper = number + (f" {{cite}}`{row['cite']}`" if row.get("cite") else "")
        lines.append(f"| {row['quantity']} | {paper} | {setting} | {ours} | {provenance_note(record)} |")
    caption = caption or ("The paper's numbers are quoted as the paper reports them, for its own data, "
                          "encoder and compute; this book's numbers come from the records described in the "
                          "last column. The columns sit side by side, they do not measure the same thing.")
    return Table("\n".join(lines) + "\n\n" + caption + "\n")


def _paper_setting(paper: str) -> tuple[str, str]:
    """'69.3% top-1 (ImageNet, ResNet-50)' -> ('69.3% top-1', 'ImageNet, ResNet-50'): the paper's
    number and, from its closing parentheses, its setting ('' when it names none)."""
    found = re.fullmatch(r"(.*\S)\s*\(([^()]*)\)", paper.strip())
    return (found[1], found[2]) if found else (paper, "")


# ------------------------------------------------------------------------------------- verdicts
# Every verdict the book states comes from here: the scorecard's claims, decided by
# contrastlab.stats.compare_arms from the instrument's per-seed records.


def _places(spread: float, fewest: int) -> int:
    """Decimal places that show a nonzero ``spread`` with at least one significant digit (never
    fewer than ``fewest``), so that no spread prints as zero."""
    return max(fewest, -math.floor(math.log10(spread))) if spread > 0 else fewest


def mean_se(values, metric: str = "linear_acc") -> str:
    """Per-seed values as 'mean ± SE (n = k)': accuracies in percent, other metrics as they are; a
    small SE gets the decimal places it needs, so that no nonzero spread is printed as zero."""
    from .stats import mean_se as _mean_se
    mean, se, n = _mean_se(values)
    acc = metric.endswith("_acc") or "_acc_" in metric
    scale, fewest = (100, 1) if acc else (1, 3)
    if se == 0:                                   # the values coincide: no spread to print
        return f"{scale * mean:.{fewest}f}{'%' if acc else ''} (n = {n}, all equal)"
    d = _places(scale * se, fewest)
    return f"{scale * mean:.{d}f} ± {scale * se:.{d}f}{'%' if acc else ''} (n = {n})"


def difference(claim: dict) -> str:
    """A claim's difference with its 95% interval: '+3.1 ± 1.2 points' (accuracies) or in the metric's units."""
    acc = claim["metric"].endswith("_acc") or "_acc_" in claim["metric"]
    scale, fewest, unit = (100, 1, " points") if acc else (1, 3, "")
    if claim["half_width"] == 0:                  # every seed gave the same difference: no spread to print
        return f"{scale * claim['diff']:+.{fewest}f}{unit} (no spread over seeds)"
    d = _places(scale * claim["half_width"], fewest)
    return f"{scale * claim['diff']:+.{d}f} ± {scale * claim['half_width']:.{d}f}{unit}"


def find_claim(card: dict, claim_id: str) -> dict | None:
    """The claim ``claim_id`` of a scorecard, or None while its records are missing (pending).

    Raises:
        KeyError: ``claim_id`` is not a claim of the scorecard at all.
    """
    decided = card["claims"] + card.get("correlations", [])
    for claim in decided:
        if claim["id"] == claim_id:
            return claim
    if claim_id in card["pending"]:
        return None
    raise KeyError(f"unknown claim {claim_id!r}; expected one of: "
                   f"{', '.join([c['id'] for c in decided] + card['pending'])}")


def verdict_sentence(card: dict, claim_id: str) -> str:
    """One sentence with a claim's verdict and the numbers it comes from, for a chapter's prose."""
    claim = find_claim(card, claim_id)
    if claim is None:
        return f"*{claim_id}: not yet measured (its records are missing).*"
    if "rho" in claim:                     # a rank claim over encoders
        return (f"**{claim['verdict']}**: Spearman's rho {claim['rho']:+.2f} over {claim['n']} trained encoders "
                f"(95% bootstrap interval {claim['low']:+.2f} to {claim['high']:+.2f})")
    a, b = claim["arms"]
    how = "paired by seed" if claim["paired"] else "Welch"
    return (f"**{claim['verdict']}**: {a['name']} {mean_se(a['values'], claim['metric'])} against "
            f"{b['name']} {mean_se(b['values'], claim['metric'])}, a difference of {difference(claim)} "
            f"(95% interval, {how})")


def verdict_list(card: dict, *claim_ids: str) -> str:
    """Markdown: the instrument's verdict on each claim, one bullet a claim, the claim in words (as
    `contrastlab.scorecard` states it) then its `verdict_sentence`, under a line naming the instrument."""
    from .scorecard import CLAIMS, RANK_CLAIMS
    words = {c.id: c.claim for c in (*CLAIMS, *RANK_CLAIMS)}
    ins = card["instrument"]
    bullets = []
    for claim_id in claim_ids:
        sentence = verdict_sentence(card, claim_id)
        bullets.append(f"- *{words.get(claim_id, claim_id)}*: {sentence}{'' if sentence.rstrip('*').endswith('.') else '.'}")
    return (f"On the instrument (`{ins['budget']}` budget, `{ins['dataset']}`, {ins['seeds_per_cell']} seeds an arm):"
            "\n\n" + "\n".join(bullets))


def interval_side(card: dict, claim_id: str) -> str | None:
    """Where the 95% interval of a claim's difference a − b lies: 'above' or 'below' 0, or 'across' it
    (the verdict's reason, for sentences that say more than the verdict word); None while pending."""
    claim = find_claim(card, claim_id)
    if claim is None:
        return None
    low, high = claim["diff"] - claim["half_width"], claim["diff"] + claim["half_width"]
    return "above" if low > 0 else "below" if high < 0 else "across"


CEILING_MARK = "†"   # claims_table's mark of a claim whose two arms both sit at the instrument's ceiling


def claims_table(card: dict, chapter: str | None = None) -> Table:
    """The claims of ``chapter`` (all when None) as a Markdown table: the paper's number and setting,
    both arms as mean ± SE with n, the difference with its 95% interval, and the verdict, marked
    `CEILING_MARK` (and explained under the table) where the claim is at the instrument's ceiling
    (`contrastlab.scorecard.at_ceiling`)."""
    rows = [c for c in card["claims"] if (chapter is None or c["chapter"] == chapter) and c.get("kind", "claim") == "claim"]
    lines = ["| claim | the paper's number (its setting) | arm a | arm b | a − b, 95% interval | verdict |",
             "| :-- | :-- | --: | --: | --: | :-- |"]
    for c in rows:
        a, b = c["arms"]
        lines.append(f"| {c['claim']} (ours: {c['setting']}) | {c['paper']} | {a['name']}: {mean_se(a['values'], c['metric'])} | "
                     f"{b['name']}: {mean_se(b['values'], c['metric'])} | {difference(c)}"
                     f"{' (paired)' if c['paired'] else ''} | **{c['verdict']}**{CEILING_MARK if c.get('at_ceiling') else ''} |")
    pending = [i for i in card["pending"] if chapter is None or _claim_chapter(i) == chapter]
    note = (f"\n\nNot yet measured (records missing): {', '.join(f'`{i}`' for i in pending)}." if pending else "")
    if any(c.get("at_ceiling") for c in rows):
        note += (f"\n\n{CEILING_MARK} At the instrument's ceiling: both arms lie within the smallest difference the "
                 "rule resolves (the MDD at n = 3) of 100%, so this instrument has no room to show the paper's "
                 "effect; the verdict stands, but says little about the claim.")
    ins = card["instrument"]
    caption = (f"\n\nOurs: per-seed values on the setting each claim names (the `{ins['name']}` instrument is "
               f"{ins['dataset']}, budget {ins['budget']}, metric {ins['metric']}); the paper's numbers are the paper's, "
               "on its own data. "
               "Verdict: reproduced if the 95% interval of a − b lies above 0, reversed if below, "
               "otherwise not resolved.")
    body = "\n".join(lines) if rows else "No claim of this chapter has all its records yet."
    return Table(body + note + caption + "\n")


def _claim_chapter(claim_id: str) -> str | None:
    from .scorecard import CLAIMS, RANK_CLAIMS
    return next((c.chapter for c in (*CLAIMS, *RANK_CLAIMS) if c.id == claim_id), None)


def _quantity(value: float, metric: str) -> str:
    """A bookkeeping figure in its unit: bytes as MB, the rest as a plain number."""
    if metric == "bytes":
        return f"{value / 1e6:,.1f} MB" if value >= 1e5 else f"{value / 1e3:,.1f} kB"
    return f"{value:,.0f}"


def _rows_table(header: list[str], align: str, lines: list[str], empty: str, caption: str) -> Table:
    """A Markdown table of ready-made row ``lines`` under ``header``, or ``empty``; then ``caption``."""
    head = ["| " + " | ".join(header) + " |", "| " + " | ".join({"l": ":--", "r": "--:"}[a] for a in align) + " |"]
    return Table(("\n".join(head + lines) if lines else empty) + "\n\n" + caption + "\n")


def facts_table(card: dict, chapter: str | None = None) -> Table:
    """The bookkeeping facts (memory, negatives, time) of ``chapter``: measured once, reported side
    by side, and not counted among the reproductions."""
    lines = [f"| {c['claim']} | {c['paper']} | {c['arms'][0]['name']}: {_quantity(c['arms'][0]['values'][0], c['metric'])} | "
             f"{c['arms'][1]['name']}: {_quantity(c['arms'][1]['values'][0], c['metric'])} |"
             for c in card["claims"] if (chapter is None or c["chapter"] == chapter) and c.get("kind") == "bookkeeping"]
    return _rows_table(["fact", "the paper's statement", "ours, a", "ours, b"], "llrr", lines,
                       "No bookkeeping fact of this chapter has its benchmark record yet.",
                       "Ours: one run of `contrastlab.benchmark` (results/benchmarks/methods-cpu.json), every method "
                       "with the same encoder and batch. Facts of the implementation, not of learned representations: "
                       "reported, not counted as reproductions.")


def correlations_table(card: dict, chapter: str | None = None) -> Table:
    """The rank claims of ``chapter``: Spearman's rho over the trained encoders, its 95% bootstrap
    interval, and the verdict (reproduced when the interval lies wholly on the paper's side of 0)."""
    lines = [f"| {c['claim']} | {c['paper']} | {c['n']} | {c['rho']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}] | "
             f"**{c['verdict']}** |"
             for c in card.get("correlations", []) if chapter is None or c["chapter"] == chapter]
    return _rows_table(["claim", "the paper's finding (its setting)", "encoders",
                        "Spearman's rho, 95% bootstrap interval", "verdict"], "llrrl", lines,
                       "No rank claim of this chapter has enough encoders with records yet.",
                       "Each encoder is one trained run of the scorecard's claims on the instrument, read as its mean "
                       "over seeds: the statistic at the end of training (on normalised h) against the linear probe. "
                       "The interval resamples the encoders with replacement.")


def verdict_summary(card: dict, chapter: str) -> str:
    """One sentence counting a chapter's verdicts on the instrument, and its claims not yet measured."""
    from .scorecard import RANK_CLAIMS, claims_of
    counts = verdict_counts(card, chapter)
    owned = sum(c.kind == "claim" for c in claims_of(chapter)) + sum(c.chapter == chapter for c in RANK_CLAIMS)
    pending = owned - sum(counts.values())
    text = (f"Of the chapter's {owned} claims on the instrument, {counts['reproduced']} reproduced, "
            f"{counts['not resolved']} not resolved and {counts['reversed']} reversed")
    return text + (f"; {pending} not yet measured (their records are missing)." if pending else ".")


def verdict_counts(card: dict, chapter: str | None = None) -> dict[str, int]:
    """How many of a chapter's claims (rank claims included, bookkeeping facts not) are reproduced,
    not resolved and reversed."""
    from .stats import VERDICTS
    counts = dict.fromkeys(VERDICTS, 0)
    for c in card["claims"] + card.get("correlations", []):
        if (chapter is None or c["chapter"] == chapter) and c.get("kind", "claim") != "bookkeeping":
            counts[c["verdict"]] += 1
    return counts


# -------------------------------------------------------------------------------------- commands


def chapter_notebook(chapter: str | int, root: Path = CHECKOUT) -> Path:
    """notebooks/<chapter>_*.ipynb of a checkout."""
    chapter = _chapter_id(chapter)
    found = sorted((root / "notebooks").glob(f"{chapter}_*.ipynb"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one notebook notebooks/{chapter}_*.ipynb under {root}, "
                                f"found {[p.name for p in found]}")
    return found[0]


def regenerate_records(chapter: str | int, *, root: Path = CHECKOUT, timeout: int | None = None) -> list[Path]:
    """Execute the chapter's notebook with CONTRASTLAB_RECOMPUTE=1; returns the records written."""
    import nbformat
    from nbclient import NotebookClient

    path = chapter_notebook(chapter, root)
    cache = experiments.default_cache_dir()
    start = time.time()
    nb = nbformat.read(path, as_version=4)
    before = os.environ.get(RECOMPUTE_ENV)
    os.environ[RECOMPUTE_ENV] = "1"   # the kernel inherits it; setup() then recomputes every record
    try:
        NotebookClient(nb, kernel_name="python3", timeout=timeout,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if before is None:
            del os.environ[RECOMPUTE_ENV]
        else:
            os.environ[RECOMPUTE_ENV] = before
    return sorted(p for p in cache.glob("*.json") if p.stat().st_mtime >= start)


def new_chapter(name: str, *, root: Path = CHECKOUT, template: Path = TEMPLATE) -> Path:
    """Create notebooks/<name>.ipynb (name like '07_swav') from the chapter template."""
    import nbformat
    from myst_nb.core.read import read_myst_markdown_notebook

    if not re.fullmatch(r"\d{2}_[a-z0-9_]+", name):
        raise ValueError(f"name must look like '07_swav' (two digits, underscore, lowercase slug), got {name!r}")
    out = root / "notebooks" / f"{name}.ipynb"
    if out.exists():
        raise FileExistsError(f"{out} exists already")
    text = template.read_text().replace('chapter="NN"', f'chapter="{name[:2]}"')
    text = re.sub(r"<!--.*?-->\s*", "", text, count=1, flags=re.DOTALL)   # the note to authors
    nb = read_myst_markdown_notebook(text)
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    nbformat.validate(nb)
    nbformat.write(nb, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contrastlab.book", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    records = sub.add_parser("records", help="recompute every record one chapter uses")
    records.add_argument("chapter", help="two-digit chapter number, e.g. 05")
    new = sub.add_parser("new", help="create notebooks/NN_slug.ipynb from book/templates/chapter.md")
    new.add_argument("name", help="file name without .ipynb, e.g. 07_swav")
    args = parser.parse_args(argv)
    if args.command == "records":
        written = regenerate_records(args.chapter)
        print(f"chapter {args.chapter}: {len(written)} record(s) written")
        for path in written:
            print(f"  {path}")
    else:
        print(f"created {new_chapter(args.name)}; add it to _toc.yml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
