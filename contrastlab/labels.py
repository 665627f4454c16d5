"""What a reader sees in place of the library's names: config keys, metrics, devices and times.

One table serves every plot (`contrastlab.plots`) and table (`contrastlab.book`,
`contrastlab.report`), so ``method.loss`` reads "loss" and ``knn_acc`` "kNN accuracy" wherever it
is shown. A name missing from the table is shown as its last dotted part with underscores as
spaces, never as a raw key.

This module imports nothing heavy (no torch, no matplotlib).
"""
from __future__ import annotations

import re

__all__ = ["METHOD_NAMES", "NAMES", "TRAINING_TIME", "device_label", "minutes", "name", "run_label",
           "training_seconds"]

NAMES: dict[str, str] = {
    # metrics of record["metrics"]
    "knn_acc": "kNN accuracy",
    "linear_acc": "linear-probe accuracy",
    "knn_acc_z": "kNN accuracy on z",
    "linear_acc_z": "linear-probe accuracy on z",
    "linear_acc_1pct": "linear-probe accuracy, 1% labels",
    "linear_acc_10pct": "linear-probe accuracy, 10% labels",
    "linear_train_acc": "linear-probe train accuracy",
    "linear_train_acc_z": "linear-probe train accuracy on z",
    # per-epoch curves of record["curves"]
    "loss": "training loss",
    "knn_monitor": "kNN monitor accuracy",
    "lr": "learning rate",
    "views_per_sec": "views per second",
    "time_s": "epoch time (s)",
    "feature_std": "std of h",
    "effective_rank": "effective rank of h",
    "alignment": "alignment",
    "uniformity": "uniformity",
    "embed_std": "std of z",
    # config keys
    "method.name": "method",
    "method.loss": "loss",
    "method.semi_hard": "semi-hard negatives",
    "method.l2_norm": "ℓ2 normalisation",
    "method.head": "projection head",
    "method.temperature": "temperature τ",
    "method.queue_size": "queue size",
    "method.momentum": "momentum",
    "method.negatives": "negatives",
    "method.nce_k": "noise samples",
    "method.steps": "steps predicted",
    "method.n_small": "small crops",
    "method.n_prototypes": "prototypes",
    "method.predictor": "predictor",
    "method.ema": "moving-average target",
    "method.proj_dim": "dimension of z",
    "train.batch_size": "batch size",
    "train.epochs": "epochs",
    "train.lr": "learning rate",
    "train.seed": "seed",
    "dataset.train_size": "training images",
}

# the methods and baselines as the papers and the book's prose write them
METHOD_NAMES: dict[str, str] = {
    "simclr": "SimCLR", "moco": "MoCo", "byol": "BYOL", "swav": "SwAV", "supcon": "SupCon",
    "instdisc": "InstDisc", "cpc": "CPC", "align_uniform": "alignment + uniformity",
    "supervised": "supervised", "random_init": "random init", "raw_pixels": "raw pixels",
}

# The book's one definition, quoted wherever a time is shown (README, "How this book measures").
TRAINING_TIME = ("training time: the sum of the epochs' times of a run (its training steps and the "
                 "per-epoch monitor), without the final kNN and linear-probe evaluation")


def name(key: str) -> str:
    """The reader's name of a config key or metric: 'method.loss' -> 'loss', 'knn_acc' -> 'kNN accuracy'."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a config key or metric name (str), got {type(key).__name__}")
    if key in NAMES:
        return NAMES[key]
    return key.rsplit(".", 1)[-1].replace("_", " ")


def run_label(spec: str) -> str:
    """A run spec for a reader: 'byol:method.predictor=false,train.epochs=2' -> 'BYOL, predictor false,
    epochs 2' (the method's name, then each override as its reader's name and value)."""
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"spec must be a run spec such as 'simclr' or 'byol:method.ema=false', got {spec!r}")
    method, _, rest = spec.partition(":")
    parts = [METHOD_NAMES.get(method, method.replace("_", " "))]
    for item in filter(None, re.split(r",(?![^\[]*\])", rest)):      # commas inside [...] belong to a list
        key, _, value = item.partition("=")
        parts.append(f"{name(key.strip())} {value.strip()}")
    return ", ".join(parts)


def device_label(device: str | None) -> str:
    """A record's device string for display, with the thread count in the singular when it is one.

    Records written before `contrastlab.experiments.device_name` learnt the singular use the plural
    for one thread; they are corrected here, when shown, so that the stored records stay as they were written."""
    if not device:
        return "unknown device"
    return re.sub(r"\b1 threads\b", "1 thread", device)


def training_seconds(record: dict) -> float | None:
    """A record's training time (see `TRAINING_TIME`) in seconds; None when it did not train."""
    seconds = (record.get("curves") or {}).get("time_s")
    return float(sum(seconds)) if seconds else None


def minutes(seconds: float | None) -> str:
    """Seconds for a reader: '45 s' under two minutes, else '11.1 min'; '–' for None."""
    if seconds is None:
        return "–"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
