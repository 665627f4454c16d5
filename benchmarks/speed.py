"""Training speed on the CPU, every figure a ratio measured side by side in one process.

The cpu budget's recipes on Fashion-MNIST (SmallCNN width 16, Adam, batch 256, 28x28 views),
``--threads`` torch threads (default 2). Arms are measured in interleaved repetitions
(A B C A B C ...), each repetition a few steps timed after one untimed step, and every figure is
the median over the repetitions, so a load that comes and goes on a shared machine falls on all
arms alike:

(a) SimCLR's full step (a batch indexed from the uint8 images, both views made by
    `contrastlab.augment.SimCLRAugment`, `train.train_step`, ``on_step_end``: the step `fit`
    takes, with the model laid out by `train.prepare_device`) against lightly's standard
    pipeline: its ``SimCLRTransform`` (the same augmentation distribution, as in
    ``benchmarks/vs_lightly.py``) on PIL images in a ``DataLoader``, its ``NTXentLoss``, the same
    model from the same initial weights in torch's default layout (and precision), the same
    optimizer; lightly is timed with each count of DataLoader workers in ``--workers`` (default
    1 and 2: on 2 cores two workers feed it best) and the ratio is taken against its fastest
    (target >= 3); SimCLR's full step is also timed in full precision where ``--amp`` resolves to
    bf16, so the record shows what bf16 adds;
(b) the full step against the same step on views made in advance (model only), for SimCLR,
    MoCo, BYOL and SwAV with multi-crop (2 x 28 + ``--n-small`` x 16 px views): the ratio of
    their rates (target >= 0.95);
(c) a whole epoch of `fit` (set-up, kNN monitor, health metrics, log and checkpoint included)
    against as many full steps run back to back, alternating (target within 10%).

It prints the figures and writes a JSON record with its provenance to
``results/benchmarks/speed-cpu.json`` (or ``--out``). ``--before PATH`` also measures the
library of another checkout (e.g. ``git worktree add /tmp/before a8b689d``) in a child process
with the same settings, and keeps its figures under ``before``. ``--smoke`` runs tiny sizes in
seconds (for tests; its figures mean nothing).

    python benchmarks/speed.py                            # the record (lightly installed)
    python benchmarks/speed.py --before /tmp/before       # ... with the figures of an older checkout
    python benchmarks/speed.py --smoke --no-lightly --out /tmp/speed.json
    python benchmarks/speed.py --table results/benchmarks/speed-cpu.json   # the README's table of the record
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from contrastlab import experiments
from contrastlab.data import IndexBatches
from contrastlab.train import TrainConfig, autocast_dtype, fit, precision_name, prepare_device, train_step

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("simclr", "moco", "byol", "swav")
AMPS = ("auto", "bf16", "fp16", "off")   # train.amp's values (spelled here: --before may run an older library)
TARGETS = {"vs_lightly_at_least": 3.0, "full_over_model_only_at_least": 0.95, "fit_epoch_over_steps_at_most": 1.10}
# (train images, test images, reps, steps per rep, batch, width, fit epochs' train images)
SIZES = {"full": {"train_size": 60000, "test_size": 10000, "reps": 5, "steps": 8, "batch_size": 256,
                  "width": 16, "fit_train_size": 60000, "fit_reps": 3},
         "smoke": {"train_size": 128, "test_size": 32, "reps": 2, "steps": 2, "batch_size": 32,
                   "width": 4, "fit_train_size": 64, "fit_reps": 1}}


def _vs_lightly():
    spec = importlib.util.spec_from_file_location("_speed_vs_lightly", Path(__file__).with_name("vs_lightly.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resolved(method: str, sizes: dict, n_small: int, amp: str = "auto") -> dict:
    """The cpu budget's recipe of ``method`` on Fashion-MNIST at ``sizes`` (SwAV with multi-crop)."""
    overrides = {"encoder.cnn_width": sizes["width"], "train.batch_size": sizes["batch_size"],
                 "train.device": "cpu", "train.amp": amp}
    if method == "swav":
        overrides["method.n_small"] = n_small
    return experiments.resolve(experiments.ExperimentConfig(method, "fashion-mnist", "cpu", 0, overrides))


def interleave(arms: dict, reps: int, steps: int) -> dict:
    """Seconds per step of each arm: ``reps`` rounds over the arms in turn, each arm's turn
    ``arms[name](steps + 1)`` returning the (wall-clock, CPU) seconds of its last ``steps`` steps;
    the median of the rounds, and every round's figure. CPU seconds are those of every process
    the arm runs in (lightly's DataLoader workers included), summed over their threads."""
    times = {name: [] for name in arms}
    for _ in range(reps):
        for name, run in arms.items():
            times[name].append([v / steps for v in run(steps + 1)])
    return {name: {"s_per_step": statistics.median(w for w, _ in t),
                   "cpu_s_per_step": statistics.median(c for _, c in t),
                   "rounds": [round(w, 5) for w, _ in t], "cpu_rounds": [round(c, 5) for _, c in t]}
            for name, t in times.items()}


def _cpu_seconds(pids=()) -> float:
    """CPU seconds of this process and of the processes ``pids`` (from /proc; 0 for those where
    it cannot be read)."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def _timed(step, n: int, pids=lambda: ()) -> tuple[float, float]:
    """Run ``step(i)`` n times; the wall-clock and CPU seconds of all but the first."""
    step(0)
    tic, cpu = time.perf_counter(), _cpu_seconds(pids())
    for i in range(1, n):
        step(i)
    return time.perf_counter() - tic, _cpu_seconds(pids()) - cpu


class _Trainer:
    """One method trained the way `fit` trains it, on views made here or handed in."""

    def __init__(self, r: dict, images: torch.Tensor, seed: int = 0, layout: bool = True):
        _, self.method = experiments.build_method(r, images.shape[1], num_samples=len(images))
        if layout:
            prepare_device(self.method, torch.device("cpu"))
        self.augment, self.images, self.n_views = experiments.build_augment(r), images, self.method.n_views
        cfg = r["train"]
        from contrastlab.optim import build_optimizer
        self.opt = build_optimizer(cfg["optimizer"], self.method, cfg["lr"] * cfg["batch_size"] / 256,
                                   cfg["weight_decay"], cfg["momentum"])
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.dtype = autocast_dtype(cfg["amp"], torch.device("cpu"))
        self.batches = IndexBatches(len(images), cfg["batch_size"], seed=seed, device=torch.device("cpu"))
        self.order = iter(())
        self.epoch = 0
        self.premade = []
        self.method.train()

    def index(self) -> torch.Tensor:
        for idx in self.order:
            return idx
        self.epoch += 1
        self.order = iter(self.batches.epoch(self.epoch))
        return next(self.order)

    def train(self, views, idx) -> None:
        train_step(self.method, views, self.opt, self.scaler, self.dtype, index=idx)
        self.method.on_step_end(0.5)

    def full(self, n: int) -> float:
        def step(i):
            idx = self.index()
            self.train(self.augment.views(self.images[idx], self.n_views), idx)
        return _timed(step, n)

    def model_only(self, n: int) -> float:
        # views made once, the first time, and reused every round. Made and freed afresh in each
        # round, their megabytes went back to the OS as the round ended, and the full arm's steps
        # that followed paid the page faults of taking memory again: MoCo's full / model-only read
        # 0.93 to 0.97 over four runs that way, 0.97 and 0.98 in two runs with the views made once
        while len(self.premade) < n:
            idx = self.index()
            self.premade.append((self.augment.views(self.images[idx], self.n_views), idx))
        return _timed(lambda i: self.train(*self.premade[i]), n)


def _lightly_arm(r: dict, x: torch.Tensor, y: torch.Tensor, workers: int, steps: int, reps: int):
    """lightly's standard pipeline as an arm of `interleave`: each turn one DataLoader pass over
    exactly ``steps + 1`` fresh batches (so its workers are idle while the other arms run)."""
    vs = _vs_lightly()
    from contrastlab.methods import SimCLRConfig
    from contrastlab.optim import build_optimizer
    from contrastlab.models import build_encoder
    torch.manual_seed(r["train"]["seed"])            # the same initial weights as ours (`experiments.build_method`)
    encoder = build_encoder("small_cnn", x.shape[1], width=r["encoder"]["cnn_width"])
    model = vs.LightlySimCLR(encoder, SimCLRConfig(**{k: v for k, v in r["method"].items() if k != "name"}))
    cfg, bs = r["train"], r["train"]["batch_size"]
    opt = build_optimizer(cfg["optimizer"], model, cfg["lr"] * bs / 256, cfg["weight_decay"], cfg["momentum"])
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    g = torch.Generator().manual_seed(1)

    class Turn(torch.utils.data.Sampler):
        indices: list = []

        def __iter__(self):
            return iter(self.indices)

        def __len__(self):
            return len(self.indices)
    sampler = Turn()
    loader = torch.utils.data.DataLoader(vs.PILImages(x, y, vs.lightly_transform(r["augment"])), batch_size=bs,
                                         sampler=sampler, num_workers=workers, persistent_workers=workers > 0)
    model.train()

    def run(n: int) -> float:
        sampler.indices = torch.randint(len(x), (n * bs,), generator=g).tolist()
        batches = iter(loader)

        def step(i):
            views, _ = next(batches)
            train_step(model, list(views), opt, scaler, None)
        seconds = _timed(step, n, lambda: [w.pid for w in getattr(batches, "_workers", [])])
        for _ in batches:   # the pass is over: its workers rest
            pass
        return seconds
    return run


def measure(*, sizes: dict, threads: int, workers: tuple[int, ...], n_small: int, lightly: bool, methods=METHODS,
            fit_epoch: bool = True, amp: str = "auto", progress=print) -> dict:
    """Every figure of the module docstring, at ``sizes`` (`SIZES`); see `main` for the record."""
    torch.set_num_threads(threads)
    tic = time.perf_counter()
    r0 = resolved("simclr", sizes, n_small, amp)
    section = {**r0["dataset"], "train_size": sizes["train_size"], "test_size": sizes["test_size"]}
    x, y, x_te, y_te = experiments.load_data(section, 0)
    reps, steps, bs = sizes["reps"], sizes["steps"], sizes["batch_size"]
    out = {"methods": {}}
    for name in methods:
        r = resolved(name, sizes, n_small, amp)
        t = _Trainer(r, x)
        arms = {"full": t.full, "model_only": t.model_only}
        if name == "simclr" and t.dtype is not None:   # the same step in full precision, for the record
            arms["full_fp32"] = _Trainer(resolved(name, sizes, n_small, "off"), x).full
        if name == "simclr" and lightly:
            for w in workers:
                arms[f"lightly_w{w}"] = _lightly_arm(r, x, y, w, steps, reps)
        res = interleave(arms, reps, steps)
        views = t.n_views * bs
        row = {"views_per_step": views, **{f"{a}_views_per_s": views / v["s_per_step"] for a, v in res.items()},
               "full_over_model_only": res["model_only"]["s_per_step"] / res["full"]["s_per_step"],
               "full_over_model_only_cpu": res["model_only"]["cpu_s_per_step"] / res["full"]["cpu_s_per_step"],
               "arms": res}
        row["precision"] = precision_name(t.dtype)
        lightly_arms = {a: v for a, v in res.items() if a.startswith("lightly_w")}
        if lightly_arms:   # the ratios against lightly's fastest worker count
            best = min(lightly_arms, key=lambda a: lightly_arms[a]["s_per_step"])
            row["lightly_best_workers"] = int(best.removeprefix("lightly_w"))
            row["lightly_views_per_s"] = row[f"{best}_views_per_s"]
            row["vs_lightly"] = res[best]["s_per_step"] / res["full"]["s_per_step"]
            row["vs_lightly_cpu"] = res[best]["cpu_s_per_step"] / res["full"]["cpu_s_per_step"]
            row["vs_lightly_by_workers"] = {a.removeprefix("lightly_w"): v["s_per_step"] / res["full"]["s_per_step"]
                                            for a, v in lightly_arms.items()}
            if "full_fp32" in res:
                row["vs_lightly_fp32"] = res[best]["s_per_step"] / res["full_fp32"]["s_per_step"]
        out["methods"][name] = row
        progress(f"{name}: " + ", ".join(f"{a} {views / v['s_per_step']:.0f} views/s" for a, v in res.items()))
        del t, arms
    if fit_epoch:
        out["fit"] = _fit_epoch(sizes, x, y, x_te, y_te, n_small, amp)
        progress(f"fit epoch: {out['fit']['epoch_s']:.2f} s against {out['fit']['steps']} x "
                 f"{out['fit']['step_s'] * 1000:.1f} ms = {out['fit']['steps_s']:.2f} s")
    out["wall_s"] = time.perf_counter() - tic
    out["load_average"] = _load_average()
    return out


def _load_average():
    """The machine's 1-minute load average at the end (None where the OS does not tell): on a shared
    machine the figures are only as quiet as this."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cpu_model() -> dict:
    """The CPU the figures come from: its model name and whether it computes bf16 in hardware."""
    from contrastlab.train import cpu_computes_bf16
    name = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"model": name, "cores": os.cpu_count(), "bf16_in_hardware": cpu_computes_bf16()}


def _fit_epoch(sizes: dict, x, y, x_te, y_te, n_small: int, amp: str = "auto") -> dict:
    """One epoch of `fit` (SimCLR, kNN monitor on, log and checkpoint in a temporary folder) against
    as many full steps of a fresh model run back to back, the two alternating (steps, epoch, steps,
    epoch, ...): both blocks last as long, so a machine that runs slower under sustained load than
    in short bursts slows both alike. The median epoch seconds and the median step seconds."""
    r = resolved("simclr", sizes, n_small, amp)
    x_fit, y_fit = x[: sizes["fit_train_size"]], y[: sizes["fit_train_size"]]
    cfg = TrainConfig(**{**r["train"], "epochs": 1, "knn_every": 1})
    steps_per_epoch = len(x_fit) // cfg.batch_size
    epoch_s, step_s = [], []
    stepper = _Trainer(r, x_fit)
    for _ in range(sizes["fit_reps"]):
        step_s.append(stepper.full(steps_per_epoch + 1)[0] / steps_per_epoch)   # an epoch's worth of steps
        _, method = experiments.build_method(r, x.shape[1])
        with tempfile.TemporaryDirectory() as tmp:
            tic = time.perf_counter()
            history = fit(method, experiments.build_augment(r), x_fit, cfg, labels=y_fit, eval_data=(x_te, y_te),
                          out_dir=tmp, progress=False)
            epoch_s.append(time.perf_counter() - tic)
    e, s = statistics.median(epoch_s), statistics.median(step_s)
    return {"train_size": len(x_fit), "steps": steps_per_epoch, "epoch_s": e, "step_s": s,
            "steps_s": steps_per_epoch * s, "epoch_over_steps": e / (steps_per_epoch * s),
            "epoch_rounds": [round(v, 3) for v in epoch_s], "step_rounds": [round(v, 5) for v in step_s],
            "knn_acc": history["knn_acc"][-1], "monitor": [cfg.monitor_train, cfg.monitor_test]}


def summary(m: dict) -> dict:
    """The target figures of a `measure` result and whether each is met."""
    s = {"vs_lightly": m["methods"].get("simclr", {}).get("vs_lightly"),
         "full_over_model_only": {k: v["full_over_model_only"] for k, v in m["methods"].items()},
         "fit_epoch_over_steps": m["fit"]["epoch_over_steps"] if "fit" in m else None}
    s["met"] = {"vs_lightly": None if s["vs_lightly"] is None else s["vs_lightly"] >= TARGETS["vs_lightly_at_least"],
                "full_over_model_only": {k: v >= TARGETS["full_over_model_only_at_least"]
                                         for k, v in s["full_over_model_only"].items()},
                "fit_epoch": None if s["fit_epoch_over_steps"] is None
                else s["fit_epoch_over_steps"] <= TARGETS["fit_epoch_over_steps_at_most"]}
    return s


def markdown_table(rec: dict) -> str:
    """The README's table of a record: each target's ratio before (where measured) and after."""
    after, before = rec, rec.get("before")
    columns = [(f"before ({before['commit'][:7]}, {_precisions(before)})", before)] if before else []
    columns.append((f"after ({after['commit'][:7]}, {_precisions(after)})", after))
    workers = " and ".join(str(w) for w in rec["settings"]["lightly_workers"] or [])

    def row(label, get):
        cells = []
        for _, m in columns:
            try:
                value = get(m)
            except (KeyError, TypeError):
                value = None
            cells.append("" if value is None else value)
        return f"| {label} | " + " | ".join(cells) + " |"
    t = TARGETS
    lines = ["| ratio (target) | " + " | ".join(name for name, _ in columns) + " |",
             "| :-- |" + " --: |" * len(columns),
             row(f"SimCLR full step / lightly's pipeline at its fastest ({workers} DataLoader workers tried) "
                 f"(>= {t['vs_lightly_at_least']})",
                 lambda m: f"{m['methods']['simclr']['vs_lightly']:.2f} "
                           f"({m['methods']['simclr']['full_views_per_s']:.0f} / {m['methods']['simclr']['lightly_views_per_s']:.0f} views/s)"),
             row("the same, our step in fp32",
                 lambda m: f"{m['methods']['simclr']['vs_lightly_fp32']:.2f} "
                           f"({m['methods']['simclr']['full_fp32_views_per_s']:.0f} views/s)")]
    for name, label in (("simclr", "SimCLR"), ("moco", "MoCo"), ("byol", "BYOL"), ("swav", "SwAV multi-crop")):
        lines.append(row(f"{label} full / model-only step (>= {t['full_over_model_only_at_least']})",
                         lambda m, name=name: f"{m['methods'][name]['full_over_model_only']:.3f}"))
    lines.append(row(f"`fit` epoch / (steps x step) (<= {t['fit_epoch_over_steps_at_most']:.2f})",
                     lambda m: f"{m['fit']['epoch_over_steps']:.3f} ({m['fit']['epoch_s']:.1f} s)"))
    return "\n".join(lines)


def _precisions(m: dict) -> str:
    return "/".join(sorted({row.get("precision", "fp32") for row in m["methods"].values()}))


def format_record(rec: dict) -> str:
    """The lines this script prints: one per method, the fit epoch, and the before figures."""
    p, st = rec["provenance"], rec["settings"]
    machine = rec.get("machine", {})
    lines = [f"{p['device']}, {machine.get('model')} (bf16 in hardware: {machine.get('bf16_in_hardware')}), "
             f"torch {p['torch']}, commit {p['commit']}, load average {rec.get('load_average')}; "
             f"cpu budget on Fashion-MNIST, SmallCNN "
             f"width {st['width']}, batch {st['batch_size']}, Adam; medians of {st['reps']} interleaved rounds "
             f"of {st['steps']} steps"]
    for label, m in (("after", rec), ("before", rec.get("before"))):
        if m is None:
            continue
        s = summary(m)
        for name, row in m["methods"].items():
            extra = (f"; lightly {row['lightly_views_per_s']:.0f} views/s (fastest, {row['lightly_best_workers']} "
                     f"workers), ours / lightly {row['vs_lightly']:.2f}x (CPU seconds: {row['vs_lightly_cpu']:.2f}x; "
                     + ", ".join(f"{v:.2f}x against {w} workers" for w, v in row["vs_lightly_by_workers"].items())
                     + ")" if "vs_lightly" in row else "")
            if "full_fp32_views_per_s" in row:
                extra += f"; our full step in fp32 {row['full_fp32_views_per_s']:.0f} views/s" + (
                    f", {row['vs_lightly_fp32']:.2f}x lightly's" if "vs_lightly_fp32" in row else "")
            lines.append(f"[{label}] {name:6s} {row.get('precision', 'fp32')} full {row['full_views_per_s']:6.0f} views/s, model only "
                         f"{row['model_only_views_per_s']:6.0f}: full / model only {row['full_over_model_only']:.3f} "
                         f"(CPU seconds: {row['full_over_model_only_cpu']:.3f})" + extra)
        if s["fit_epoch_over_steps"] is not None:
            f = m["fit"]
            lines.append(f"[{label}] fit epoch {f['epoch_s']:.2f} s / ({f['steps']} steps x {f['step_s'] * 1000:.1f} ms)"
                         f" = {s['fit_epoch_over_steps']:.3f}")
    lines.append(f"targets: ours / lightly >= {TARGETS['vs_lightly_at_least']}, full / model only >= "
                 f"{TARGETS['full_over_model_only_at_least']}, fit epoch / steps <= {TARGETS['fit_epoch_over_steps_at_most']}")
    return "\n".join(lines)


def _before(path: Path, argv: list[str]) -> dict:
    """The same measurement with the library of the checkout at ``path``, in a child process."""
    if not (path / "contrastlab" / "__init__.py").is_file():
        raise ValueError(f"--before must be a checkout holding contrastlab/, got {str(path)!r}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "before.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, __file__, *argv, "--figures-only", str(out)], env=env, check=True)
        return json.loads(out.read_text())


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--workers", default="1,2",
                   help="lightly's DataLoader workers, comma-separated counts, each an arm (default 1,2)")
    p.add_argument("--amp", default="auto", choices=AMPS,
                   help="our steps' precision, as train.amp (default auto: the library's default on this CPU)")
    p.add_argument("--n-small", type=int, default=4, help="SwAV's small views (default 4, the book's multi-crop)")
    p.add_argument("--reps", type=int, default=None, help="interleaved rounds (default: the size's)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default: the size's)")
    p.add_argument("--fit-train-size", type=int, default=None,
                   help="training images of the fit epoch (default: the size's, 60000: all of Fashion-MNIST)")
    p.add_argument("--fit-reps", type=int, default=None, help="fit epochs measured (default: the size's)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: for tests")
    p.add_argument("--no-lightly", action="store_true", help="leave lightly's arm out")
    p.add_argument("--no-fit", action="store_true", help="leave the fit epoch out")
    p.add_argument("--before", type=Path, default=None, help="also measure the library of this checkout")
    p.add_argument("--out", type=Path, default=None, help="the record (default results/benchmarks/speed-cpu.json)")
    p.add_argument("--table", type=Path, default=None, metavar="RECORD",
                   help="print the README's markdown table of a record written before, and measure nothing")
    p.add_argument("--figures-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.table is not None:
        try:
            print(markdown_table(json.loads(args.table.read_text())))
        except (OSError, ValueError, KeyError) as e:
            p.error(f"--table must name a record that speed.py wrote, got {str(args.table)!r} ({type(e).__name__}: {e})")
        return 0
    for name in ("threads", "n_small", "reps", "steps", "fit_train_size", "fit_reps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    try:
        workers = tuple(int(w) for w in args.workers.split(","))
    except ValueError:
        workers = (-1,)
    if not workers or min(workers) < 0 or len(set(workers)) != len(workers):
        p.error(f"--workers must be distinct comma-separated counts >= 0, got {args.workers!r}")
    methods = tuple(m for m in args.methods.split(",") if m)
    if not methods or any(m not in METHODS for m in methods):
        p.error(f"--methods must be a comma-separated list of {', '.join(METHODS)}, got {args.methods!r}")
    lightly = not args.no_lightly and "simclr" in methods
    if lightly and importlib.util.find_spec("lightly") is None:
        p.error("lightly is not installed (pip install lightly into a venv, or pass --no-lightly)")
    sizes = {**SIZES["smoke" if args.smoke else "full"]}
    sizes.update({k: getattr(args, k) for k in ("reps", "steps", "fit_train_size", "fit_reps")
                  if getattr(args, k) is not None})
    if sizes["fit_train_size"] < sizes["batch_size"] and not args.no_fit:
        p.error(f"--fit-train-size must be at least the batch ({sizes['batch_size']}), got {sizes['fit_train_size']}")
    fig = measure(sizes=sizes, threads=args.threads, workers=workers, n_small=args.n_small, lightly=lightly,
                  methods=methods, fit_epoch=not args.no_fit, amp=args.amp,
                  progress=(lambda s: None) if args.figures_only else lambda s: print(s, flush=True))
    fig["commit"] = experiments.provenance(torch.device("cpu"), "cpu", 0)["commit"]
    if args.figures_only:
        experiments.write_json(args.figures_only, fig)
        return 0
    child = [a for i, a in enumerate(argv) if a != "--before" and (i == 0 or argv[i - 1] != "--before")
             and not a.startswith("--before=") and a != "--out" and (i == 0 or argv[i - 1] != "--out")]
    try:
        before = _before(args.before, child) if args.before else None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    version = importlib.import_module("lightly").__version__ if lightly else None
    rec = {**fig, "summary": summary(fig), "targets": TARGETS,
           "settings": {"dataset": "fashion-mnist", "budget": "cpu", **sizes, "threads": torch.get_num_threads(),
                        "lightly_workers": list(workers) if lightly else None, "n_small": args.n_small,
                        "amp": args.amp, "precision": precision_name(autocast_dtype(args.amp, torch.device("cpu"))),
                        "lightly": version, "methods": list(methods)},
           "machine": cpu_model(), "provenance": experiments.provenance(torch.device("cpu"), "cpu", fig["wall_s"])}
    if before is not None:
        rec["before"] = {**before, "summary": summary(before), "library": str(args.before)}
    print(format_record(rec))
    out = args.out or ROOT / "results" / "benchmarks" / "speed-cpu.json"
    experiments.write_json(out, rec)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
