"""Measure candidate recipes for the book's instrument: SimCLR at the bench budget with overrides, per seed.

    python benchmarks/instrument_candidates.py "strength 1.5" augment.strength=1.5 --seeds 1 3

Each cell trains on one CPU thread, two cells at a time (as the instrument's cells are measured), and
goes through the ordinary record cache, so a candidate that becomes the instrument keeps its records.
Every run is appended to results/instrument/candidates.json with its provenance; the calibration
table of the "How this book measures" page reads that file.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = ROOT / "results" / "instrument" / "candidates.json"


def _cell(method: str, dataset: str, seed: int, overrides: dict) -> dict:
    import torch
    torch.set_num_threads(1)
    from contrastlab import experiments
    config = experiments.ExperimentConfig(method=method, dataset=dataset, budget="bench", seed=seed,
                                          overrides=overrides)
    record = experiments.run(config, progress=False)
    p = record["provenance"]
    return {"seed": seed, "linear_acc": record["metrics"]["linear_acc"], "knn_acc": record["metrics"]["knn_acc"],
            "wall_time_s": p["wall_time_s"], **({"cpu_time_s": p["cpu_time_s"]} if "cpu_time_s" in p else {}),
            "device": p["device"], "commit": p.get("commit"), "date": p["date"],
            "key": record["key"]}


def main(argv=None) -> None:
    from contrastlab.report import parse_overrides   # the CLI's key=value parsing
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("label", help="what the candidate changes, in words")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of the bench budget")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--dataset", default="colour-shapes-p4")
    ap.add_argument("--method", default="simclr")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    overrides = parse_overrides(",".join(args.overrides), where="overrides")
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = list(pool.map(_cell, *zip(*[(args.method, args.dataset, s, overrides) for s in args.seeds])))
    data = json.loads(CANDIDATES.read_text())
    entry = next((c for c in data["candidates"] if c["label"] == args.label and c["dataset"] == args.dataset), None)
    if entry is None:
        entry = {"label": args.label, "dataset": args.dataset, "overrides": overrides, "runs": []}
        data["candidates"].append(entry)
    done = {r["seed"] for r in entry["runs"]}
    entry["runs"] += [r for r in runs if r["seed"] not in done]
    entry["runs"].sort(key=lambda r: r["seed"])
    tmp = CANDIDATES.with_name(CANDIDATES.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, CANDIDATES)
    for r in entry["runs"]:
        print(f"{args.label}: seed {r['seed']} linear {r['linear_acc']:.4f} knn {r['knn_acc']:.4f} ({r['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
