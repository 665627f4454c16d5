"""Side-by-side comparisons of cached runs: ``python -m contrastlab compare``.

A *run spec* names a method and, optionally, overrides of its resolved config:

    moco                                   the method at the budget's preset
    byol:method.predictor=false            BYOL without its predictor
    simclr:method.temperature=0.5,train.epochs=10

`compare` runs each spec through `experiments.run` (so finished runs load from the result
cache) and `markdown_table` lays the records out as one table: test accuracy (kNN and linear
probe on h), the collapse monitor (spread of the embedding z over the epochs), wall time and
device. `write_block` puts the table into a Markdown file between marker comments, which is
how the tables in the README are kept up to date.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from . import experiments, labels
from .methods import METHODS

DEFAULT_RUNS = (*experiments.BASELINES, *METHODS)


def parse_run(spec: str) -> tuple[str, dict]:
    """``"method[:key=value,key=value]"`` -> (method, overrides); values are read as JSON when they can be.

    >>> parse_run("byol:method.predictor=false,train.epochs=2")
    ('byol', {'method.predictor': False, 'train.epochs': 2})
    """
    method, _, rest = spec.partition(":")
    if not method:
        raise ValueError(f"run spec must start with a method name, got {spec!r}")
    return method, parse_overrides(rest, where=f"run spec {spec!r}")


def parse_overrides(text: str, *, where: str = "overrides") -> dict:
    """``"key=value,key=value"`` -> {key: value}, each value read as JSON when it can be
    (a comma inside a list such as ``[0.3, 1]`` stays with its value)."""
    overrides = {}
    for item in filter(None, re.split(r",(?=\s*[\w.]+=)", text)):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{where}: expected overrides as key=value pairs separated by commas, got {item!r}")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    return overrides


def compare(runs=DEFAULT_RUNS, *, dataset: str = "fashion-mnist", budget: str | None = None, seed: int = 0,
            cache_dir=None, force: bool = False, progress: bool = True,
            common: dict | None = None) -> list[tuple[str, dict]]:
    """Run (or load) every spec of ``runs``; returns [(spec, record)] in the same order.

    ``common`` holds overrides for every run (a run's own win), e.g.
    ``{"eval.label_fractions": [0.01, 0.1]}``; a key that a run's method lacks is skipped for it
    (``method.temperature`` for the baselines, say). All configs are resolved first, so a
    misspelt method or override fails before any training.
    """
    common = common or {}
    configs, used = [], set()
    for spec in runs:
        method, overrides = parse_run(spec)
        config = experiments.ExperimentConfig(method=method, dataset=dataset, budget=budget, seed=seed)
        fields = experiments.resolve(config)       # which of the common keys this run has
        shared = {k: v for k, v in common.items() if _has_field(fields, k)}
        used.update(shared)
        config.overrides = {**shared, **overrides}
        experiments.resolve(config)
        configs.append((spec, config))
    unused = sorted(set(common) - used)
    if unused:
        raise KeyError(f"common override {unused[0]!r} names no field of any run; "
                       f"expected a dotted key such as 'eval.label_fractions'")
    return [(spec, experiments.run(config, cache_dir=cache_dir, force=force, progress=progress))
            for spec, config in configs]


def _has_field(resolved: dict, key: str) -> bool:
    section, _, name = key.partition(".")
    return isinstance(resolved.get(section), dict) and name in resolved[section]


def _spread(curve) -> str:
    values = [v for v in (curve or []) if v is not None]
    if not values:
        return "–"
    return f"{values[0]:.4f} → {values[-1]:.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def _short(commit: str | None) -> str:
    """'abc1234' or 'abc1234-dirty' (the run used uncommitted code) from a full commit string."""
    if not commit:
        return "?"
    sha, _, state = commit.partition("-")
    return sha[:7] + (f"-{state}" if state else "")


def _few_label_columns(results) -> list[str]:
    """The ``linear_acc_<p>pct`` metrics any of the records has, fewest labels first."""
    found = {k for _, rec in results for k in rec["metrics"] if re.fullmatch(r"linear_acc_[\d.]+pct", k)}
    return sorted(found, key=lambda k: float(k[len("linear_acc_"):-len("pct")]))


def _training_minutes(record: dict) -> str:
    """The record's training time (`contrastlab.labels.TRAINING_TIME`) in minutes, '–' without training."""
    seconds = labels.training_seconds(record)
    return "–" if seconds is None else f"{seconds / 60:.1f} min"


def markdown_table(results: list[tuple[str, dict]]) -> str:
    """One row per run: kNN and linear accuracy (and the linear probe on a share of the labels
    where a record has it), the spread of z over epochs, training time, device and commit.

    The training time is the sum of the epochs' times, without evaluation, so that a record
    whose evaluation was redone on a finished checkpoint still shows what training took."""
    few = _few_label_columns(results)
    head = ["run", "kNN", "linear", *(f"linear, {k[len('linear_acc_'):-len('pct')]}% labels" for k in few),
            "std of z, first → last epoch", "training time", "device", "commit"]
    align = ["---", "---:", "---:", *["---:"] * len(few), "---", "---:", "---", "---"]
    rows = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    for spec, record in results:
        m, p = record["metrics"], record["provenance"]
        cells = [f"`{spec}`", f"{m['knn_acc']:.4f}", f"{m['linear_acc']:.4f}",
                 *(f"{m[k]:.4f}" if k in m else "–" for k in few),
                 _spread(record.get("curves", {}).get("embed_std")), _training_minutes(record),
                 labels.device_label(p.get("device")), _short(p.get("commit"))]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_block(path: str | Path, name: str, text: str) -> None:
    """Replace what stands between ``<!-- compare:NAME -->`` and ``<!-- /compare:NAME -->`` in ``path``.

    The file is rewritten atomically; the markers must already be there, once each.
    """
    path = Path(path)
    source = path.read_text()
    start, end = f"<!-- compare:{name} -->", f"<!-- /compare:{name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    found = len(pattern.findall(source))
    if found != 1:
        raise ValueError(f"{path} must hold the markers {start} ... {end} exactly once, found {found}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(pattern.sub(lambda _: f"{start}\n{text}\n{end}", source))
    os.replace(tmp, path)
