"""contrastlab's SimCLR epoch against lightly's standard pipeline, side by side in one run.

Both arms train the same model (the budget's encoder and SimCLR projection head, from the same
initial weights) with the same optimizer, batch size, temperature and learning rate, on the
same Fashion-MNIST images, for the same number of epochs:

- contrastlab: the images live on the training device as uint8; each step indexes a batch and
  `contrastlab.augment.SimCLRAugment` makes both views there (the step `fit` takes);
- lightly: its ``SimCLRTransform`` in a torch ``DataLoader`` over PIL images (worker processes,
  pinned memory on CUDA), its ``NTXentLoss``.

The augmentation distribution is the same: crops of the budget's area range, flip p = 0.5,
colour jitter (0.8s, 0.8s, 0.8s, 0.2s) at p = 0.8, grayscale p = 0.2, no blur, no
normalisation (both see pixels in [0, 1]). The learning rate stays at its base value (no
warm-up or decay) in both arms. Projections go to either loss in fp32. After training, the kNN
accuracy of each encoder's features (k = 200, weighted, as the book's records) is measured on the
test images.

It prints views/s and seconds per epoch of each arm, their ratio and the two kNN accuracies,
and writes a JSON record (settings, figures, provenance) to
``results/benchmarks/vs-lightly-<budget>.json`` or ``--out``.

    python benchmarks/vs_lightly.py --device cpu --threads 2          # the 2-core CPU case
    python benchmarks/vs_lightly.py --device cuda                     # gpu budget: ResNet-18, batch 512
    python benchmarks/vs_lightly.py --budget smoke --device cpu       # seconds, for tests
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from contrastlab import experiments
from contrastlab.data import IndexBatches
from contrastlab.metrics import extract_features, knn_accuracy
from contrastlab.methods import SimCLR, SimCLRConfig
from contrastlab.models import build_encoder
from contrastlab.optim import build_optimizer
from contrastlab.train import autocast_dtype, eval_transform, resolve_device, train_step

ROOT = Path(__file__).resolve().parents[1]
# The short schedule of each budget: (epochs, training images, test images).
SCHEDULES = {"smoke": (1, 512, 256), "cpu": (1, 10000, 2000), "gpu": (2, None, None)}


def lightly_transform(augment: dict):
    """lightly's SimCLRTransform with the distribution of contrastlab's ``augment`` section."""
    low, high = augment["crop_scale"]
    if high != 1.0 or not augment["crop"]:
        raise ValueError(f"lightly's SimCLRTransform crops areas (min_scale, 1.0); augment.crop_scale must "
                         f"end at 1.0 with augment.crop on, got crop={augment['crop']}, crop_scale={augment['crop_scale']}")
    from lightly.transforms import SimCLRTransform
    s = augment["strength"] if augment["color"] else 0.0
    return SimCLRTransform(input_size=augment["size"], cj_prob=0.8 if augment["color"] else 0.0, cj_strength=s,
                           cj_bright=0.8, cj_contrast=0.8, cj_sat=0.8, cj_hue=0.2, min_scale=low,
                           random_gray_scale=0.2 if augment["grayscale"] else 0.0,
                           gaussian_blur=0.5 if augment["blur"] else 0.0,
                           hf_prob=0.5 if augment["flip"] else 0.0, normalize=None)


class PILImages(torch.utils.data.Dataset):
    """uint8 images (N, C, H, W) served as PIL images through ``transform``, with their labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        arr = images.numpy()
        self.arrays = arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)
        self.labels, self.transform = labels.numpy(), transform

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(np.ascontiguousarray(self.arrays[i]))), int(self.labels[i])


class LightlySimCLR(SimCLR):
    """contrastlab's SimCLR module with lightly's NTXentLoss in place of the library's NT-Xent."""

    def __init__(self, encoder, config: SimCLRConfig):
        super().__init__(encoder, config)
        from lightly.loss import NTXentLoss
        self.ntxent = NTXentLoss(temperature=config.temperature)

    def loss(self, z1, z2):
        return self.ntxent(z1.float(), z2.float())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train(model, steps, device, epochs: int) -> list[float]:
    """Run ``steps(epoch)`` (one epoch of training) ``epochs`` times; seconds of each epoch."""
    seconds = []
    model.train()
    for epoch in range(epochs):
        _sync(device)
        tic = time.perf_counter()
        steps(epoch)
        _sync(device)
        seconds.append(time.perf_counter() - tic)
    return seconds


def _knn(model, x_tr, y_tr, x_te, y_te, size, device, section) -> float:
    kw = {"transform": eval_transform(size), "device": device}
    f_tr, f_te = extract_features(model.encoder, x_tr, **kw), extract_features(model.encoder, x_te, **kw)
    return knn_accuracy(f_tr, y_tr.to(device), f_te, y_te.to(device), k=section["knn_k"],
                        temperature=section["knn_temperature"])


def _arm(seconds: list[float], steps_per_epoch: int, batch_size: int, knn: float) -> dict:
    steady = float(np.median(seconds[1:])) if len(seconds) > 1 else seconds[0]   # the first epoch warms up
    return {"epoch_s": [round(s, 3) for s in seconds], "steady_epoch_s": steady,
            "views_per_s": 2 * batch_size * steps_per_epoch / steady, "knn_acc": knn}


def compare(*, budget: str = "cpu", device: str = "auto", threads: int | None = None, workers: int | None = None,
            epochs: int | None = None, batch_size: int | None = None, train_size: int | None = None,
            test_size: int | None = None, encoder: str | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Train both arms on the same data and return the record (see the module docstring).

    ``budget`` chooses the recipe (`contrastlab.experiments.resolve` of SimCLR on Fashion-MNIST)
    and the short schedule (`SCHEDULES`); the other arguments override it. ``threads`` sets
    ``torch.set_num_threads`` (None: unchanged); ``workers`` is lightly's DataLoader workers
    (default: 1 on the CPU, beside the training threads; min(8, CPU count) on a GPU).
    """
    if budget not in SCHEDULES:
        raise ValueError(f"budget must be one of {sorted(SCHEDULES)}, got {budget!r}")
    tic = time.perf_counter()
    if threads is not None:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    overrides = {k: v for k, v in {"encoder.name": encoder, "train.batch_size": batch_size}.items() if v is not None}
    r = experiments.resolve(experiments.ExperimentConfig("simclr", "fashion-mnist", budget, seed, overrides))
    e0, n0, t0 = SCHEDULES[budget]
    epochs = e0 if epochs is None else epochs
    section = {**r["dataset"], "train_size": n0 if train_size is None else train_size,
               "test_size": t0 if test_size is None else test_size}
    x_tr, y_tr, x_te, y_te = experiments.load_data(section, seed)
    cfg, bs = r["train"], r["train"]["batch_size"]
    if bs > len(x_tr):
        raise ValueError(f"batch_size must be at most the number of training images ({len(x_tr)}), got {bs}")
    workers = (1 if dev.type == "cpu" else min(8, os.cpu_count() or 1)) if workers is None else workers
    dtype = autocast_dtype(cfg["amp"], dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    lr = cfg["lr"] * bs / 256
    size = r["augment"]["size"]

    def build(cls):
        torch.manual_seed(seed)
        enc = build_encoder(r["encoder"]["name"], x_tr.shape[1],
                            width=r["encoder"]["resnet_width" if r["encoder"]["name"] == "resnet18" else "cnn_width"])
        model = cls(enc, SimCLRConfig(temperature=r["method"]["temperature"])).to(dev)
        opt = build_optimizer(cfg["optimizer"], model, lr, cfg["weight_decay"], cfg["momentum"])
        return model, opt, torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)

    # contrastlab: images on the device, views made there
    model, opt, scaler = build(SimCLR)
    augment, x_dev = experiments.build_augment(r), x_tr.to(dev)
    batches = IndexBatches(len(x_tr), bs, seed=seed, device=dev, drop_last=True)

    def ours(epoch):
        for idx in batches.epoch(epoch):
            train_step(model, augment.views(x_dev[idx], 2), opt, scaler, dtype)

    secs = _train(model, ours, dev, epochs)
    arms = {"contrastlab": _arm(secs, len(batches), bs, _knn(model, x_tr, y_tr, x_te, y_te, size, dev, r["eval"]))}
    if progress:
        print(f"contrastlab: {arms['contrastlab']['steady_epoch_s']:.2f} s/epoch", flush=True)
    del model, opt, x_dev

    # lightly: SimCLRTransform on PIL images in DataLoader workers, NTXentLoss
    model, opt, scaler = build(LightlySimCLR)
    loader = torch.utils.data.DataLoader(
        PILImages(x_tr, y_tr, lightly_transform(r["augment"])), batch_size=bs, shuffle=True, drop_last=True,
        num_workers=workers, pin_memory=dev.type == "cuda", persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed))

    def theirs(epoch):
        for views, _ in loader:
            train_step(model, [v.to(dev, non_blocking=True) for v in views], opt, scaler, dtype)

    secs = _train(model, theirs, dev, epochs)
    arms["lightly"] = _arm(secs, len(loader), bs, _knn(model, x_tr, y_tr, x_te, y_te, size, dev, r["eval"]))
    import lightly
    c, li = arms["contrastlab"], arms["lightly"]
    return {
        **arms, "epoch_time_ratio": c["steady_epoch_s"] / li["steady_epoch_s"],
        "speedup": li["steady_epoch_s"] / c["steady_epoch_s"], "knn_diff": c["knn_acc"] - li["knn_acc"],
        "targets": {"epoch_time_ratio_at_most": 0.25, "knn_diff_within": 0.005},
        "met": {"epoch_time": c["steady_epoch_s"] <= 0.25 * li["steady_epoch_s"],
                "knn": abs(c["knn_acc"] - li["knn_acc"]) <= 0.005},
        "settings": {"budget": budget, "dataset": "fashion-mnist", "train_size": len(x_tr), "test_size": len(x_te),
                     "epochs": epochs, "batch_size": bs, "encoder": r["encoder"]["name"],
                     "optimizer": cfg["optimizer"], "lr": lr, "weight_decay": cfg["weight_decay"],
                     "temperature": r["method"]["temperature"], "augment": r["augment"],
                     "amp": {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32"),
                     "threads": torch.get_num_threads(), "lightly_workers": workers,
                     "lightly": lightly.__version__, "seed": seed},
        "provenance": experiments.provenance(dev, budget, time.perf_counter() - tic)}


def format_record(rec: dict) -> str:
    """The record's figures as the lines this script prints."""
    s, c, li = rec["settings"], rec["contrastlab"], rec["lightly"]
    return "\n".join([
        f"{rec['provenance']['device']}, {s['threads']} threads, torch {rec['provenance']['torch']}, "
        f"lightly {s['lightly']} ({s['lightly_workers']} DataLoader workers); SimCLR, {s['encoder']}, batch "
        f"{s['batch_size']}, {s['epochs']} epoch(s) of {s['train_size']} images, amp {s['amp']}",
        f"contrastlab: {c['views_per_s']:10.0f} views/s  {c['steady_epoch_s']:8.2f} s/epoch  kNN {c['knn_acc']:.4f}",
        f"lightly:     {li['views_per_s']:10.0f} views/s  {li['steady_epoch_s']:8.2f} s/epoch  kNN {li['knn_acc']:.4f}",
        f"epoch time contrastlab / lightly: {rec['epoch_time_ratio']:.3f} (target <= 0.25); "
        f"kNN difference: {rec['knn_diff']:+.4f} (target within 0.005)"])


def record_path(budget: str) -> Path:
    return ROOT / "results" / "benchmarks" / f"vs-lightly-{budget}.json"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", default="cpu", choices=sorted(SCHEDULES), help="recipe and schedule (default cpu)")
    p.add_argument("--device", default="auto", help="'auto' or a torch device (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--workers", type=int, default=None, help="lightly's DataLoader workers")
    p.add_argument("--epochs", type=int, default=None, help="epochs of each arm (default: the budget's schedule)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the budget's")
    p.add_argument("--train-size", type=int, default=None, help="training images (default: the schedule's)")
    p.add_argument("--test-size", type=int, default=None, help="test images for the kNN (default: the schedule's)")
    p.add_argument("--encoder", default=None, choices=["small_cnn", "resnet18"], help="default: the budget's")
    p.add_argument("--out", type=Path, default=None, help="the JSON record (default results/benchmarks/vs-lightly-<budget>.json)")
    args = p.parse_args(argv)
    for name in ("threads", "epochs", "batch_size", "train_size", "test_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.workers is not None and args.workers < 0:
        p.error(f"--workers must be >= 0, got {args.workers}")
    try:
        import lightly  # noqa: F401
    except ImportError:
        p.error("lightly is not installed (pip install lightly, or benchmarks/device_check.sh --prepare)")
    try:
        rec = compare(budget=args.budget, device=args.device, threads=args.threads, workers=args.workers,
                      epochs=args.epochs, batch_size=args.batch_size, train_size=args.train_size,
                      test_size=args.test_size, encoder=args.encoder)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_record(rec))
    out = args.out or record_path(args.budget)
    experiments.write_json(out, rec)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
