"""Speed and memory of every method on one device: ``python -m contrastlab.benchmark --budget cpu``.

Each method of `contrastlab.METHODS` is built exactly as the budget's training builds it
(`experiments.resolve`, `experiments.build_method`, `experiments.build_augment` and `fit`'s
optimizer), then timed over full training steps after a few warm-up steps: views made on the
device, forward, backward, optimizer step and ``on_step_end``. For each it reports

- views and images per second;
- the peak memory of the steps: on CUDA ``torch.cuda.max_memory_allocated`` (peak counter
  reset first); elsewhere the peak resident set size of the process (``ru_maxrss``, its
  high-water mark reset first where Linux allows). Each method runs in a fresh subprocess,
  so the peaks do not mix. ``step_peak_bytes`` is the peak above what was allocated before the
  first step (the model and the dataset on the device);
- the bytes of its persistent state: parameters and buffers (memory bank, queue, prototypes,
  target network), and the optimizer's state.

A sweep then measures the course summary's claims (seed 000): SimCLR's peak memory against the
batch size, MoCo's at one batch against the queue size, SwAV's with a large batch against a small
batch with a queue, InstDisc's bank against the size of the training set. The record (JSON,
with provenance) goes to ``<results>/benchmarks/methods-<budget>.json``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import experiments
from ._validate import check_choice
from .data import DATASETS, IndexBatches
from .methods import METHODS
from .optim import build_optimizer
from .train import TrainConfig, autocast_dtype, precision_name, resolve_device, train_step

# How each method gets what it contrasts with (the course summary's families, and the rest).
FAMILIES = {"instdisc": "memory bank", "simclr": "end-to-end", "cpc": "end-to-end",
            "align_uniform": "end-to-end", "supcon": "end-to-end, labels", "moco": "momentum queue",
            "swav": "clustering", "byol": "no negatives", "supervised": "supervised"}

__all__ = ["FAMILIES", "format_table", "measure", "record_path", "run_benchmark", "state_bytes"]


def record_path(budget: str, cache_dir: str | Path | None = None) -> Path:
    """``<results>/benchmarks/methods-<budget>.json`` (results: `experiments.default_cache_dir`)."""
    check_choice("budget", budget, experiments.BUDGETS)
    return Path(cache_dir or experiments.default_cache_dir()) / "benchmarks" / f"methods-{budget}.json"


def state_bytes(module: torch.nn.Module) -> dict:
    """Bytes of a module's persistent state: ``params`` (``trainable`` of them), ``buffers``,
    ``state`` = params + buffers, and ``large_buffers`` {name: bytes} for buffers of 4 KiB or more."""
    def size(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()
    params = sum(size(p) for p in module.parameters())
    buffers = {n: size(b) for n, b in module.named_buffers()}
    return {"params": params, "trainable": sum(size(p) for p in module.parameters() if p.requires_grad),
            "buffers": sum(buffers.values()), "state": params + sum(buffers.values()),
            "large_buffers": {n: b for n, b in buffers.items() if b >= 4096}}


def _maxrss() -> int:
    """The process's peak resident set size in bytes (ru_maxrss is in bytes on macOS, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _reset_maxrss() -> tuple[int, str]:
    """Reset the peak-RSS mark where Linux allows it; return (`_maxrss`, how memory is measured)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")   # resets the high-water mark to the current RSS
        return _maxrss(), "peak RSS increase (ru_maxrss; high-water mark reset)"
    except OSError:
        return _maxrss(), "peak RSS increase (ru_maxrss; not reset, may read low)"


def measure(method: str, budget: str = "cpu", *, dataset: str = "fashion-mnist",
            overrides: dict | None = None, steps: int = 20, warmup: int = 3, device: str = "auto",
            isolate: bool = False) -> dict:
    """Time ``steps`` training steps of ``method`` after ``warmup`` steps; measure its memory.

    Args:
        method: a name in `contrastlab.METHODS`.
        budget: the budget whose training is measured ('smoke', 'cpu' or 'gpu').
        dataset: a name in `contrastlab.data.DATASETS`.
        overrides: dotted config keys, as for `experiments.ExperimentConfig`.
        steps: timed steps, >= 1.
        warmup: untimed steps before them, >= 0.
        device: 'auto' or a torch device string.
        isolate: measure in a fresh Python subprocess (clean memory peaks).

    Returns:
        dict: method, family, batch_size, n_views, device, precision, sec_per_step, views_per_sec,
        images_per_sec, peak_bytes, step_peak_bytes, memory_measure, state (see `state_bytes`),
        optimizer_bytes, negatives (what one query is contrasted with, None when not applicable).
    """
    check_choice("method", method, METHODS)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    dev = resolve_device(device)
    resolved = experiments.resolve(experiments.ExperimentConfig(method=method, dataset=dataset, budget=budget,
                                                                overrides=dict(overrides or {})))
    if isolate:
        job = {"method": method, "budget": budget, "dataset": dataset, "overrides": overrides or {},
               "steps": steps, "warmup": warmup, "device": str(dev)}
        root = str(Path(__file__).resolve().parents[1])   # this checkout's contrastlab, installed or not
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        out = subprocess.run([sys.executable, "-m", "contrastlab.benchmark", "--worker", json.dumps(job)],
                             check=False, capture_output=True, text=True, env=env)
        if out.returncode:
            raise RuntimeError(f"benchmark of {method} failed in its subprocess:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    x, y, _, _ = experiments.load_data(resolved["dataset"], resolved["train"]["seed"])
    if resolved["train"]["batch_size"] > len(x):
        raise ValueError(f"train.batch_size must be at most the number of training images ({len(x)}), "
                         f"got {resolved['train']['batch_size']}")
    _, model = experiments.build_method(resolved, x.shape[1], num_samples=len(x))
    augment, cfg = experiments.build_augment(resolved), TrainConfig(**resolved["train"])
    model.to(dev)
    x, y = x.to(dev), y.to(dev)
    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr * cfg.batch_size / 256, cfg.weight_decay,
                                cfg.momentum)
    dtype = autocast_dtype(cfg.amp, dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    batches = IndexBatches(len(x), cfg.batch_size, seed=cfg.seed, device=dev)
    n_views, total = model.n_views, warmup + steps
    indices = (idx for epoch in itertools.count() for idx in batches.epoch(epoch))
    torch.manual_seed(cfg.seed)

    def step(i: int) -> None:       # one step of `fit` (the learning rate stays at its base value)
        idx = next(indices)
        train_step(model, augment.views(x[idx], n_views), optimizer, scaler, dtype, index=idx, labels=y[idx])
        model.on_step_end((i + 1) / total)

    model.train()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base, how = torch.cuda.memory_allocated(dev), "torch.cuda.max_memory_allocated"
    else:
        base, how = _reset_maxrss()
    for i in range(warmup):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    tic = time.perf_counter()
    for i in range(warmup, total):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = (time.perf_counter() - tic) / steps
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else _maxrss()
    m, bs = resolved["method"], cfg.batch_size
    negatives = {"simclr": 2 * bs - 2, "align_uniform": 2 * bs - 2, "moco": m.get("queue_size"),
                 "instdisc": m.get("nce_k") or len(x), "supcon": 2 * bs - 2}.get(method)
    return {"method": method, "family": FAMILIES[method], "batch_size": bs, "n_views": n_views,
            "overrides": dict(overrides or {}), "device": experiments.device_name(dev), "precision": precision_name(dtype),
            "sec_per_step": seconds, "views_per_sec": bs * n_views / seconds, "images_per_sec": bs / seconds,
            "peak_bytes": int(peak), "step_peak_bytes": int(max(0, peak - base)), "memory_measure": how,
            "state": state_bytes(model), "negatives": negatives,
            "optimizer_bytes": sum(t.numel() * t.element_size() for s in optimizer.state.values()
                                   for t in s.values() if torch.is_tensor(t))}


def run_benchmark(budget: str = "cpu", *, methods=None, steps: int = 20, warmup: int = 3,
                  device: str = "auto", dataset: str = "fashion-mnist", batch_sizes=(64, 256, 1024),
                  queue_sizes=(4096, 16384), swav_sizes=((64, 0), (256, 0), (1024, 0), (64, 3840)),
                  bank_sizes=(1000, 10000, 60000), isolate: bool = True,
                  cache_dir: str | Path | None = None, write: bool = True, progress: bool = True) -> dict:
    """Measure every method (`measure`) and the summary's sweep; write and return the record.

    Args:
        budget: as for `measure`; so are ``steps``, ``warmup``, ``device``, ``dataset`` and ``isolate``.
        methods: names in `contrastlab.METHODS`; None: all of them.
        batch_sizes: SimCLR's batch sizes in the memory sweep.
        queue_sizes: MoCo's queue sizes in the sweep, at batch 256.
        swav_sizes: SwAV's (batch size, queue size) pairs in the sweep; Sinkhorn spreads
            batch + queue rows over the prototypes.
        bank_sizes: training-set sizes at which InstDisc's state is counted (built, not trained).
        cache_dir: the results folder (default `experiments.default_cache_dir`).
        write: write the record to `record_path` (atomically).
        progress: print one line per measurement.

    Returns:
        dict: ``methods`` (one `measure` row each), ``sweep`` {"batch", "queue", "swav", "bank"},
        ``settings`` and ``provenance`` (as in experiment records; device as they name it).
    """
    methods = list(METHODS) if methods is None else list(methods)
    if not methods:
        raise ValueError("methods must name at least one method, got none")
    for name in methods:
        check_choice("method", name, METHODS)

    def counts(values, low=1):
        return all(not isinstance(v, bool) and isinstance(v, int) and v >= low for v in values)
    for name, sizes in (("batch_sizes", batch_sizes), ("queue_sizes", queue_sizes),
                        ("bank_sizes", bank_sizes)):
        if not counts(sizes):
            raise ValueError(f"{name} must hold ints >= 1, got {sizes!r}")
    if not all(len(pair) == 2 and counts(pair[:1]) and counts(pair[1:], 0) for pair in swav_sizes):
        raise ValueError(f"swav_sizes must hold (batch size >= 1, queue size >= 0) pairs, got {swav_sizes!r}")
    tic, dev = time.perf_counter(), resolve_device(device)
    kw = {"budget": budget, "dataset": dataset, "steps": steps, "warmup": warmup, "device": str(dev),
          "isolate": isolate}

    def timed(method, overrides=None):
        row = measure(method, overrides=overrides, **kw)
        if progress:
            print(f"{method:14s} {json.dumps(overrides or {}):50s} {row['views_per_sec']:9.0f} views/s  "
                  f"step peak {row['step_peak_bytes'] / 2**20:8.1f} MiB  "
                  f"state {row['state']['state'] / 2**20:7.2f} MiB", flush=True)
        return row

    rows = [timed(name) for name in methods]
    sweep = {"batch": [timed("simclr", {"train.batch_size": b}) for b in batch_sizes],
             "queue": [timed("moco", {"train.batch_size": 256, "method.queue_size": k}) for k in queue_sizes],
             "swav": [timed("swav", {"train.batch_size": b, "method.queue_size": q}) for b, q in swav_sizes],
             "bank": []}
    resolved = experiments.resolve(experiments.ExperimentConfig(method="instdisc", dataset=dataset,
                                                                budget=budget))
    for n in bank_sizes:
        _, model = experiments.build_method(resolved, DATASETS[dataset].channels, num_samples=n)
        sweep["bank"].append({"train_size": n, "state": state_bytes(model)})
    record = {"methods": rows, "sweep": sweep,
              "settings": {"budget": budget, "dataset": dataset, "steps": steps, "warmup": warmup,
                           "device": str(dev), "isolate": isolate, "batch_sizes": list(batch_sizes),
                           "queue_sizes": list(queue_sizes), "swav_sizes": [list(p) for p in swav_sizes],
                           "bank_sizes": list(bank_sizes)},
              "provenance": experiments.provenance(dev, budget, time.perf_counter() - tic)}
    if write:
        experiments.write_json(record_path(budget, cache_dir), record)
    return record


def format_table(record: dict) -> str:
    """The record's methods as a Markdown table: family, views/s, images/s, memory in MiB."""
    head = "| method | family | batch | views/s | images/s | step peak (MiB) | state (MiB) | optim. (MiB) |"
    lines = [head, "| :-- | :-- | --: | --: | --: | --: | --: | --: |"]
    for r in record["methods"]:
        lines.append(f"| {r['method']} | {r['family']} | {r['batch_size']} | {r['views_per_sec']:,.0f} | "
                     f"{r['images_per_sec']:,.0f} | {r['step_peak_bytes'] / 2**20:.1f} | "
                     f"{r['state']['state'] / 2**20:.2f} | {r['optimizer_bytes'] / 2**20:.2f} |")
    return "\n".join(lines)


def _pair(text: str) -> tuple[int, int]:
    batch, _, queue = text.partition(":")
    try:
        return int(batch), int(queue)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BATCH:QUEUE such as 64:3840, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m contrastlab.benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--budget", choices=experiments.BUDGETS, default="cpu", help="the budget (default cpu)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per method (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before them (default 3)")
    p.add_argument("--device", default="auto", help="'auto' or a torch device (default auto)")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset name (default fashion-mnist)")
    p.add_argument("--methods", nargs="+", default=None, help="methods to measure (default all)")
    p.add_argument("--results", default=None, help="results folder (default: results/ of the checkout)")
    p.add_argument("--batch-sizes", nargs="*", type=int, default=[64, 256, 1024], help="SimCLR's sweep")
    p.add_argument("--queue-sizes", nargs="*", type=int, default=[4096, 16384], help="MoCo's, batch 256")
    p.add_argument("--swav-sizes", nargs="*", type=_pair, default=[(64, 0), (256, 0), (1024, 0), (64, 3840)],
                   metavar="B:Q", help="SwAV's sweep: batch:queue pairs")
    p.add_argument("--bank-sizes", nargs="*", type=int, default=[1000, 10000, 60000],
                   help="training-set sizes at which InstDisc's bank is counted")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                   help="each measurement in a fresh subprocess (default; clean memory peaks)")
    p.add_argument("--worker", help=argparse.SUPPRESS)   # one measurement, for the isolated subprocess
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(**json.loads(args.worker))))
        return 0
    try:
        record = run_benchmark(args.budget, methods=args.methods, steps=args.steps, warmup=args.warmup,
                               device=args.device, dataset=args.dataset, batch_sizes=args.batch_sizes,
                               queue_sizes=args.queue_sizes, bank_sizes=args.bank_sizes, isolate=args.isolate,
                               swav_sizes=args.swav_sizes,
                               cache_dir=args.results)
    except (KeyError, ValueError) as e:
        raise SystemExit(f"error: {e.args[0] if e.args else e}") from None
    print(f"\n{record['provenance']['device']}, torch {record['provenance']['torch']}, budget {args.budget}, "
          f"{args.steps} steps after {args.warmup} warm-up\n\n{format_table(record)}\n\n"
          f"written to {record_path(args.budget, args.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
