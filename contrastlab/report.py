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

from . import experiments
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
    overrides = {}
    for item in filter(None, re.split(r",(?=\s*[\w.]+=)", rest)):   # a comma inside [0.3, 1] stays
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"run spec {spec!r}: expected overrides as key=value pairs "
                             f"separated by commas, got {item!r}")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    return method, overrides


def compare(runs=DEFAULT_RUNS, *, dataset: str = "fashion-mnist", budget: str | None = None, seed: int = 0,
            cache_dir=None, force: bool = False, progress: bool = True) -> list[tuple[str, dict]]:
    """Run (or load) every spec of ``runs``; returns [(spec, record)] in the same order.

    All configs are resolved first, so a misspelt method or override fails before any training.
    """
    configs = []
    for spec in runs:
        method, overrides = parse_run(spec)
        config = experiments.ExperimentConfig(method=method, dataset=dataset, budget=budget, seed=seed,
                                              overrides=overrides)
        experiments.resolve(config)
        configs.append((spec, config))
    return [(spec, experiments.run(config, cache_dir=cache_dir, force=force, progress=progress))
            for spec, config in configs]


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


def markdown_table(results: list[tuple[str, dict]]) -> str:
    """One row per run: kNN and linear accuracy, the spread of z over epochs, wall time, device."""
    rows = ["| run | kNN | linear | std of z, first → last epoch | wall time | device | commit |",
            "| --- | ---: | ---: | --- | ---: | --- | --- |"]
    for spec, record in results:
        m, p = record["metrics"], record["provenance"]
        minutes = p["wall_time_s"] / 60
        rows.append(f"| `{spec}` | {m['knn_acc']:.4f} | {m['linear_acc']:.4f} | "
                    f"{_spread(record.get('curves', {}).get('embed_std'))} | {minutes:.1f} min | "
                    f"{p['device']} | {_short(p.get('commit'))} |")
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
