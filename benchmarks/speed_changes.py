"""What each of issue 19's library changes buys, A/B interleaved in one process on 2 threads.

Arms, each timed in interleaved rounds (A B C ... A B C ...), medians of the rounds:

- the model step of SimCLR (cpu budget, views made in advance): NCHW weights in full precision
  (the library before a8b689d), channels_last in full precision (`train.prepare_device`), and
  channels_last under bf16 autocast (``amp='auto'`` on a CPU that computes bf16 natively);
- making both views of a batch with ``--before``'s ``contrastlab/augment.py`` (an older checkout)
  against this checkout's.

    git worktree add /tmp/before 293e908
    python benchmarks/speed_changes.py --before /tmp/before --out results/benchmarks/speed-cpu-changes.json
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

from contrastlab import augment, experiments
from contrastlab.optim import build_optimizer
from contrastlab.train import train_step

import speed   # benchmarks/speed.py: its interleaved rounds and timer


def _module_from(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def model_step(r: dict, views: list, channels_last: bool, dtype):
    """SimCLR's train step on premade ``views`` (one batch per call, in turn)."""
    _, method = experiments.build_method(r, 1)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    opt = build_optimizer("adam", method, r["train"]["lr"], r["train"]["weight_decay"], 0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return lambda i: train_step(method, views[i % len(views)], opt, scaler, dtype)


def per_call(f, calls_per_step: int = 1):
    """``f(i)`` as an arm of `speed.interleave`, timing ``calls_per_step`` calls where it asks for one."""
    def run(n: int) -> tuple[float, float]:
        return tuple(v / calls_per_step for v in speed._timed(f, calls_per_step * (n - 1) + 1))
    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", type=Path, required=True, help="a checkout whose augment.py is the 'before' arm")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--steps", type=int, default=4, help="timed model steps a round (views: 10x as many)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    old_file = args.before / "contrastlab" / "augment.py"
    if not old_file.is_file():
        p.error(f"--before must be a checkout holding contrastlab/augment.py, got {str(args.before)!r}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    old = _module_from(old_file, "_augment_before")
    r = experiments.resolve(experiments.ExperimentConfig("simclr", "fashion-mnist", "cpu", 0, {}))
    x, _, _, _ = experiments.load_data({**r["dataset"], "train_size": 10000, "test_size": 100}, 0)
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in r["augment"].items()}
    before, after = old.SimCLRAugment(old.AugmentConfig(**options)), augment.SimCLRAugment(augment.AugmentConfig(**options))
    batches = [torch.randint(0, len(x), (r["train"]["batch_size"],)) for _ in range(8)]
    views = [after.views(x[i], 2) for i in batches]
    arms = {"model_nchw_fp32": model_step(r, views, False, None),
            "model_channels_last_fp32": model_step(r, views, True, None),
            "model_channels_last_bf16": model_step(r, views, True, torch.bfloat16),
            "views_before": lambda i: before.views(x[batches[i % 8]], 2),
            "views_after": lambda i: after.views(x[batches[i % 8]], 2)}
    arms = {k: per_call(f, 10 if k.startswith("views") else 1) for k, f in arms.items()}
    times = speed.interleave(arms, args.reps, args.steps)
    med = {k: v["s_per_step"] for k, v in times.items()}
    res = {"ms_per_call": {k: round(1000 * v, 2) for k, v in med.items()},
           "rounds_ms": {k: [round(1000 * v, 2) for v in t["rounds"]] for k, t in times.items()},
           "speedups": {"channels_last": med["model_nchw_fp32"] / med["model_channels_last_fp32"],
                        "bf16_over_channels_last_fp32": med["model_channels_last_fp32"] / med["model_channels_last_bf16"],
                        "views": med["views_before"] / med["views_after"]},
           "views_per_call": 2 * r["train"]["batch_size"], "before": str(args.before),
           "settings": {"reps": args.reps, "steps": args.steps, "threads": torch.get_num_threads()},
           "provenance": experiments.provenance(torch.device("cpu"), "cpu", time.perf_counter() - start)}
    for k, v in res["ms_per_call"].items():
        print(f"{k:26s} {v:8.2f} ms")
    print(", ".join(f"{k} {v:.2f}x" for k, v in res["speedups"].items()))
    experiments.write_json(args.out, res)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
