"""What each of issue 19's library changes buys, A/B interleaved in one process on 2 threads.

(1) SimCLR's model step (cpu budget, premade views) with NCHW weights (a8b689d on the CPU) against
channels_last (`train.prepare_device` now), and channels_last under bf16 autocast (not adopted:
its accuracy on the instrument is not measured); (2) making both views of a batch with the crop
grid of ``F.affine_grid`` (the augment module of an older checkout, ``--before``) against the two
ramps of `contrastlab.augment.random_resized_crop` now. Medians of the rounds; writes ``--out``.

    python benchmarks/speed_changes.py --before /tmp/before --out results/benchmarks/speed-cpu-changes.json
"""
import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch
p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--before", type=Path, required=True, help="a checkout whose contrastlab/augment.py uses affine_grid")
p.add_argument("--reps", type=int, default=7)
p.add_argument("--steps", type=int, default=3)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--out", type=Path, required=True)
args = p.parse_args()
torch.set_num_threads(args.threads)
from contrastlab import experiments
from contrastlab.train import train_step
from contrastlab.optim import build_optimizer
spec = importlib.util.spec_from_file_location("old_augment", args.before / "contrastlab" / "augment.py")
old = importlib.util.module_from_spec(spec); sys.modules["old_augment"] = old; spec.loader.exec_module(old)
from contrastlab import augment as new
r = experiments.resolve(experiments.ExperimentConfig("simclr", "fashion-mnist", "cpu", 0, {}))
x, y, _, _ = experiments.load_data({**r["dataset"], "train_size": 10000, "test_size": 100}, 0)
cfg = new.AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in r["augment"].items()})
aug_new, aug_old = new.SimCLRAugment(cfg), old.SimCLRAugment(old.AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in r["augment"].items()}))
idx = [torch.randint(0, 10000, (256,)) for _ in range(8)]
pre = [aug_new.views(x[i], 2) for i in idx]
def trainer(cl, dt):
    _, m = experiments.build_method(r, 1)
    if cl: m.to(memory_format=torch.channels_last)
    opt = build_optimizer("adam", m, 2e-3, 1e-5, 0.9); sc = torch.amp.GradScaler("cpu", enabled=False)
    return lambda i: train_step(m, pre[i % 8], opt, sc, dt)
arms = {"nchw": trainer(False, None), "channels_last": trainer(True, None), "channels_last_bf16": trainer(True, torch.bfloat16),
        "views_affine_grid": lambda i: aug_old.views(x[idx[i % 8]], 2), "views_ramps": lambda i: aug_new.views(x[idx[i % 8]], 2)}
reps, steps = args.reps, args.steps
start = time.perf_counter()
t = {k: [] for k in arms}
for rep in range(reps):
    for k, f in arms.items():
        n = steps if not k.startswith("views") else 10 * steps
        f(0); tic = time.perf_counter()
        for i in range(1, n + 1): f(i)
        t[k].append((time.perf_counter() - tic) / n)
med = {k: statistics.median(v) for k, v in t.items()}
res = {"ms_per_step": {k: round(1000 * v, 2) for k, v in med.items()}, "rounds_ms": {k: [round(1000 * v, 1) for v in vs] for k, vs in t.items()},
       "channels_last_speedup": med["nchw"] / med["channels_last"], "bf16_speedup_over_channels_last": med["channels_last"] / med["channels_last_bf16"],
       "views_speedup": med["views_affine_grid"] / med["views_ramps"], "reps": reps, "steps": steps, "threads": torch.get_num_threads(),
       "provenance": experiments.provenance(torch.device("cpu"), "cpu", time.perf_counter() - start)}
print(json.dumps(res, indent=1))
experiments.write_json(args.out, res)
