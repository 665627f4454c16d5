"""Experiments as cached, reproducible records: ``record = run(ExperimentConfig(...))``.

An `ExperimentConfig` names a method, a dataset, a budget and overrides. `resolve` expands
it into the full configuration (dataset sizes, encoder, method hyperparameters, augmentation,
training, evaluation) from the budget's preset; `run` trains and evaluates, then stores a JSON
record under the results folder, keyed by a hash of the resolved configuration, so the next
call with the same configuration loads the record instead of training again.

Budgets:
    smoke  seconds; for tests and CI (a tiny subset, one epoch).
    cpu    minutes on 2 CPU cores: small CNN on the full Fashion-MNIST training set.
    gpu    the recipe meant for a GPU: CIFAR-stem ResNet-18, batch 512.
    bench  the book's measuring instrument (see `contrastlab.scorecard`), the cpu budget's small CNN and Adam.

The default is $CONTRASTLAB_BUDGET if set, else 'gpu' when CUDA is present, else 'cpu'.

Baselines go through the same path: method 'raw_pixels' (kNN and linear probe on pixels)
and 'random_init' (the same on features of an untrained encoder).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import inspect
import json
import os
import platform
import subprocess
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import __version__, _io, distributed, metrics
from ._validate import check_choice, check_type
from .augment import AugmentConfig, SimCLRAugment
from .data import DATASETS, load_dataset, subsample
from .methods import METHODS
from .models import build_encoder
from .train import TrainConfig, autocast_dtype, eval_transform, fit, precision_name, resolve_device

BUDGETS = ("smoke", "cpu", "gpu", "bench")
FAST_BUDGETS = ("smoke", "cpu", "bench")   # the small CNN and Adam: FAST_METHOD_PRESETS apply
BASELINES = ("raw_pixels", "random_init")
CACHE_VERSION = 1  # bump when a change to the code makes old records wrong


@dataclass
class DataConfig:
    """Which images an experiment trains and evaluates on."""

    name: str = "fashion-mnist"  # a name in contrastlab.data.DATASETS
    train_size: int | None = None  # class-balanced subset of the train split; None keeps it whole
    test_size: int | None = None  # likewise for the test split


@dataclass
class EncoderConfig:
    """The encoder f."""

    name: str = "small_cnn"  # 'small_cnn', 'resnet18' (CIFAR stem) or 'conv1d' (for sequence datasets)
    cnn_width: int = 32  # channels of the small CNN's (or conv1d's) first block (h has 4x as many)
    resnet_width: float = 1.0  # ResNet-18's width multiplier (h has 512x as many)


@dataclass
class EvalConfig:
    """Evaluation of the frozen representation h after training."""

    knn_k: int = 200  # neighbours in the weighted kNN (InstDisc's protocol)
    knn_temperature: float = 0.1  # weights exp(s / temperature)
    linear_epochs: int = 100  # epochs of the linear probe (logistic regression on h)
    probe_z: bool = False  # also probe the projection z (the h-versus-z ablation)
    label_fractions: list = field(default_factory=list)  # also probe with these shares of the train labels, e.g. [0.01, 0.1] (semi-supervised)
    save_z: int = 0  # keep the normalised z of this many test images in the record (for the S^1 figure)


# Per-budget presets: dotted keys into the resolved configuration. The cpu and smoke budgets
# scale SimCLR's recipe down to minutes: after one epoch of Fashion-MNIST (small CNN, batch
# 256) the kNN monitor read 0.707 with LARS at tau 0.5, 0.721 with Adam, 0.736 with Adam at
# tau 0.2 and 0.743 with Adam and crops of at least 40%, so the fast budgets use Adam and
# tau 0.2. The gpu budget keeps the paper's LARS and tau = 0.5.
_FAST = {"train.optimizer": "adam", "train.lr": 2e-3, "train.weight_decay": 1e-5}
PRESETS: dict[str, dict] = {
    "smoke": {**_FAST, "dataset.train_size": 1000, "dataset.test_size": 500, "encoder.cnn_width": 8,
              "train.epochs": 1, "train.batch_size": 128, "train.warmup_epochs": 0.0,
              "train.monitor_train": 500, "train.monitor_test": 200, "eval.linear_epochs": 20},
    "cpu": {**_FAST, "encoder.cnn_width": 16, "train.epochs": 5, "train.batch_size": 256,
            "train.warmup_epochs": 0.5},
    "gpu": {"encoder.name": "resnet18", "train.epochs": 100,
            "train.batch_size": 512, "train.warmup_epochs": 10.0},
    # the instrument (contrastlab.scorecard; book/measuring shows how the recipe was chosen, range against
    # seed noise): 16 epochs over 20,000 images at 16 px (colour-shapes-p4's preset), one CPU thread a run;
    # Adam at twice the fast budgets' rate (at 2e-3 some seeds learn slowly and are not caught up after 16
    # epochs: a seed SD of 1.5 points against 0.3 at 4e-3); the kNN monitor is off (the probes after
    # training are the measurement), z is probed beside h
    "bench": {**_FAST, "train.lr": 4e-3, "dataset.train_size": 20000, "encoder.cnn_width": 16, "train.epochs": 16,
              "train.batch_size": 256,
              "train.warmup_epochs": 0.5, "train.knn_every": 0, "augment.strength": 1.0,
              "eval.probe_z": True},
}
# Per-method settings of the fast budgets (smoke and cpu), on top of PRESETS.
FAST_METHOD_PRESETS: dict[str, dict] = {
    "simclr": {"method.temperature": 0.2},
    "moco": {"method.temperature": 0.2},
    "byol": {"method.base_momentum": 0.99, "train.lr": 4e-3},
    "swav": {"method.freeze_prototypes_steps": 200},
    # h keeps the 6x6 layout of the patches: kNN 0.833 after 1 epoch of the cpu budget (0.793 at
    # random init), where their mean (the paper's h) reads ~0.70; a GRU half the paper's, as good here
    "cpc": {"method.pool": 6, "method.context_dim": 128},
    # InstDisc: the MLP head (its BN centres v; behind the paper's linear head v sits in a narrow cone
    # and a bank row written an epoch ago no longer picks out its image) and tau 0.2
    "instdisc": {"method.temperature": 0.2, "method.head": "mlp", "method.nce_k": 0},  # exact softmax: n = 60k is cheap
}
# Per-method settings of the gpu budget, on top of PRESETS["gpu"] (which keeps SimCLR's LARS): the
# optimizers of the papers. MoCo's CIFAR-10 demo and InstDisc train with SGD, momentum 0.9, weight
# decay 5e-4 and lr 0.03 per 256 images (the demo's 0.06 at batch 512), with no warmup.
_SGD_RECIPE = {"train.optimizer": "sgd", "train.lr": 0.03, "train.weight_decay": 5e-4, "train.warmup_epochs": 0.0}
GPU_METHOD_PRESETS: dict[str, dict] = {"moco": _SGD_RECIPE, "instdisc": _SGD_RECIPE}
# ... and per (method, dataset): SimCLR's colour-distortion strength on CIFAR-10 is 0.5 (its appendix B.9).
GPU_DATASET_METHOD_PRESETS: dict[tuple[str, str], dict] = {("simclr", "cifar10"): {"augment.strength": 0.5}}
# Training images of the full train splits, for recipes counted in epochs of steps (SwAV freezes its
# prototypes for the first epoch at the gpu budget, as the paper does).
TRAIN_SPLIT_SIZES = {"cifar10": 50000, "cifar100": 50000, "fashion-mnist": 60000, "stl10": 5000}
# Per-dataset augmentation: image size, and a milder smallest crop for small images
# (on 28x28 Fashion-MNIST a crop of 8% of the image rarely shows which garment it is); for the
# 1-D waveforms, the encoder that reads them.
DATASET_AUGMENT = {"digits": {"augment.size": 8, "augment.crop_scale": (0.3, 1.0)},
                   "fashion-mnist": {"augment.size": 28, "augment.crop_scale": (0.4, 1.0)},
                   "cifar10": {"augment.size": 32}, "cifar100": {"augment.size": 32},
                   "stl10": {"augment.size": 64},
                   # shapes of radius 0.22-0.38 of the side: a crop of 8% often misses the shape
                   "colour-shapes": {"augment.size": 32, "augment.crop_scale": (0.3, 1.0)},
                   # the measuring instrument: views at 16 px (a quarter of the compute of 32 px)
                   "colour-shapes-large": {"augment.size": 16, "augment.crop_scale": (0.3, 1.0)},
                   "colour-shapes-p4": {"augment.size": 16, "augment.crop_scale": (0.3, 1.0)},
                   # 1-D signals (N, 1, 1, 256): a 1-D encoder, no image augmentation, no resizing
                   "waveforms": {"augment.size": 256, "augment.crop": False, "augment.flip": False,
                                 "augment.color": False, "augment.grayscale": False,
                                 "encoder.name": "conv1d"}}
# What a dataset's image size asks of one method, applied after DATASET_AUGMENT: CPC's patch grid
# (8x8 patches every 4 pixels suit 28x28 and 32x32 images).
DATASET_METHOD_PRESETS: dict[tuple[str, str], dict] = {
    ("cpc", "digits"): {"method.patch_size": 4, "method.patch_stride": 2, "method.steps": 2,  # 3x3 grid
                        "method.pool": 3},
    ("cpc", "stl10"): {"method.patch_size": 16, "method.patch_stride": 8},                     # 7x7 grid
}


@dataclass
class ExperimentConfig:
    """What to run. ``overrides`` maps dotted keys of the resolved config to values,
    e.g. ``{"train.epochs": 20, "method.temperature": 0.1, "augment.strength": 0.5}``."""

    method: str = "simclr"  # a name in contrastlab.methods.METHODS, or a baseline
    dataset: str = "fashion-mnist"
    budget: str | None = None  # None: default_budget()
    seed: int = 0
    overrides: dict = field(default_factory=dict)


def default_budget() -> str:
    """$CONTRASTLAB_BUDGET if set, else 'gpu' when CUDA is available, else 'cpu'."""
    budget = os.environ.get("CONTRASTLAB_BUDGET")
    if budget:
        check_choice("CONTRASTLAB_BUDGET", budget, BUDGETS)
        return budget
    return "gpu" if torch.cuda.is_available() else "cpu"


def default_cache_dir() -> Path:
    """$CONTRASTLAB_RESULTS, else results/ of a source checkout, else ~/.cache/contrastlab/results."""
    if os.environ.get("CONTRASTLAB_RESULTS"):
        return Path(os.environ["CONTRASTLAB_RESULTS"])
    checkout = Path(__file__).resolve().parents[1] / "results"
    if checkout.is_dir():
        return checkout
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "contrastlab" / "results"


def resolve(config: ExperimentConfig) -> dict:
    """The full configuration of an experiment as a JSON-able dict of sections."""
    check_choice("method", config.method, [*METHODS, *BASELINES])
    check_choice("dataset", config.dataset, DATASETS)
    budget = config.budget or default_budget()
    check_choice("budget", budget, BUDGETS)
    resolved = {
        "budget": budget,
        "dataset": asdict(DataConfig(name=config.dataset)),
        "encoder": asdict(EncoderConfig()),
        "method": {"name": config.method},
        "augment": asdict(AugmentConfig()),
        "train": asdict(TrainConfig(seed=config.seed)),
        "eval": asdict(EvalConfig()),
    }
    if config.method in METHODS:
        resolved["method"].update(asdict(METHODS[config.method][1]()))
    if config.method == "raw_pixels":       # nothing is trained: drop what cannot matter
        for section in ("encoder", "augment", "train"):
            resolved.pop(section)
    elif config.method == "random_init":
        resolved.pop("augment")
        resolved["train"] = {"seed": config.seed, "device": resolved["train"]["device"]}
    if budget in FAST_BUDGETS:
        by_method = FAST_METHOD_PRESETS.get(config.method, {})
    else:
        by_method = {**GPU_METHOD_PRESETS.get(config.method, {}),
                     **GPU_DATASET_METHOD_PRESETS.get((config.method, config.dataset), {})}
    if "num_classes" in resolved["method"]:
        resolved["method"]["num_classes"] = DATASETS[config.dataset].num_classes
    for preset in (PRESETS[budget], by_method, DATASET_AUGMENT.get(config.dataset, {}),
                   DATASET_METHOD_PRESETS.get((config.method, config.dataset), {})):
        for key, value in preset.items():     # a preset sets only what this method has
            section, _, name = key.partition(".")
            if name in resolved.get(section, {}):
                _set(resolved, key, value)
    for key, value in config.overrides.items():
        _set(resolved, key, value)
    if budget == "gpu" and "freeze_prototypes_steps" in resolved["method"] \
            and "method.freeze_prototypes_steps" not in config.overrides:
        resolved["method"]["freeze_prototypes_steps"] = _steps_per_epoch(resolved)
    _check_values(resolved)
    _check_eval(resolved["eval"])
    return json.loads(json.dumps(resolved))   # tuples -> lists, a plain copy


def _steps_per_epoch(resolved: dict) -> int:
    """Optimizer steps in one epoch of a resolved config; 0 where the train split's size is not known."""
    images = resolved["dataset"]["train_size"] or TRAIN_SPLIT_SIZES.get(resolved["dataset"]["name"], 0)
    return images // resolved["train"]["batch_size"]


_SECTION_CLASSES = {"dataset": DataConfig, "encoder": EncoderConfig, "augment": AugmentConfig,
                    "train": TrainConfig, "eval": EvalConfig}
# Lower bounds of numeric fields: (bound, whether the bound itself is allowed, what it means).
_LOWER_BOUNDS = {
    "dataset.train_size": (1, True, "; None keeps the whole split"),
    "dataset.test_size": (1, True, "; None keeps the whole split"),
    "encoder.cnn_width": (1, True, ""), "encoder.resnet_width": (0, False, ""),
    "train.epochs": (0, True, ""), "train.batch_size": (1, True, ""),
    "train.lr": (0, False, ""), "train.weight_decay": (0, True, ""),
    "train.warmup_epochs": (0, True, " (epochs of linear warmup)"),
    "train.knn_every": (0, True, "; 0 turns the monitor off"), "train.monitor_train": (1, True, ""),
    "train.monitor_test": (1, True, ""), "train.checkpoint_every": (0, True, "; 0: at epoch ends only"),
    "eval.knn_k": (1, True, " (neighbours in the kNN)"), "eval.knn_temperature": (0, False, ""),
    "eval.linear_epochs": (1, True, " (iterations of the linear probe)"),
    "method.temperature": (0, False, ""),
}


def _check_values(resolved: dict) -> None:
    """Every field of the resolved config has its dataclass's type, and numbers are in range."""
    classes = dict(_SECTION_CLASSES)
    if resolved["method"]["name"] in METHODS:
        classes["method"] = METHODS[resolved["method"]["name"]][1]
    for section, cls in classes.items():
        hints = typing.get_type_hints(cls)
        for name, value in resolved.get(section, {}).items():
            if name in hints:
                check_type(f"{section}.{name}", value, hints[name])
            bound = _LOWER_BOUNDS.get(f"{section}.{name}")
            if bound is not None and value is not None and not (
                    value > bound[0] or (bound[1] and value == bound[0])):
                raise ValueError(f"{section}.{name} must be {'>=' if bound[1] else '>'} {bound[0]}{bound[2]}, "
                                 f"got {value!r}")


def _check_eval(section: dict) -> None:
    fractions = section["label_fractions"]
    if not isinstance(fractions, (list, tuple)) or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1 for f in fractions):
        raise ValueError(f"eval.label_fractions must be a list of shares in (0, 1], e.g. [0.01, 0.1], "
                         f"got {fractions!r}")
    save_z = section["save_z"]
    if isinstance(save_z, bool) or not isinstance(save_z, int) or save_z < 0:
        raise ValueError(f"eval.save_z must be an int >= 0 (test images whose z is kept), got {save_z!r}")


def _set(resolved: dict, key: str, value) -> None:
    section, _, name = key.partition(".")
    fixed = {"method.name", "dataset.name"}   # chosen through ExperimentConfig.method / .dataset
    if section not in resolved or not isinstance(resolved[section], dict) or name not in resolved[section] \
            or key in fixed:
        valid = [f"{s}.{k}" for s, sec in resolved.items() if isinstance(sec, dict) for k in sec
                 if f"{s}.{k}" not in fixed]
        raise KeyError(f"unknown override {key!r}; expected one of: {', '.join(valid)}")
    resolved[section][name] = value


# Options added after records were published, with the value that means "off": at that value an
# option is left out of the key, so that the records made before it existed keep their names.
_KEY_SKIPS_AT = {"eval.label_fractions": [], "eval.save_z": 0, "method.feature_dim": 0, "train.grad_clip": 0.0}


def config_hash(resolved: dict) -> str:
    keyed = {section: {k: v for k, v in body.items()
                       if f"{section}.{k}" not in _KEY_SKIPS_AT or _KEY_SKIPS_AT[f"{section}.{k}"] != v}
             if isinstance(body, dict) else body for section, body in resolved.items()}
    blob = json.dumps({"v": CACHE_VERSION, **keyed}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _stem(resolved: dict, key: str) -> str:
    return f"{resolved['method']['name']}-{resolved['dataset']['name']}-{resolved['budget']}-{key}"


def record_path(resolved: dict, cache_dir: str | Path | None = None) -> Path:
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return cache_dir / f"{_stem(resolved, config_hash(resolved))}.json"


def run_dir(resolved: dict, cache_dir: str | Path | None = None) -> Path:
    """Where a run's checkpoint and log go: keyed on everything but the ``eval`` section, so a
    change to the evaluation alone re-evaluates the finished checkpoint instead of training again;
    and on the precision the run trains at here (``amp`` resolved on this machine's device) and,
    for a CPU in reduced precision, on the CPU, so that a CPU and a GPU run of one config never
    share a checkpoint. Full precision adds nothing to the key, so the run folders of fp32 CPU runs
    (and of GPU runs) keep the names they always had."""
    training = {k: v for k, v in resolved.items() if k != "eval"}
    precision = resolved_precision(resolved)
    if precision != "fp32":
        training["precision"] = precision
        if resolve_device(resolved["train"]["device"]).type == "cpu":   # a GPU run at this precision keys without it
            training["device"] = "cpu"
    return record_path(resolved, cache_dir).parent / "runs" / _stem(resolved, config_hash(training))


def resolved_precision(resolved: dict) -> str:
    """'fp32', 'bf16' or 'fp16': what a resolved config's ``train.amp`` means on this machine."""
    section = resolved.get("train", {})
    if "amp" not in section:
        return "fp32"
    return precision_name(autocast_dtype(section["amp"], resolve_device(section["device"])))


def run(config: ExperimentConfig, *, cache_dir: str | Path | None = None, force: bool = False,
        progress: bool = True) -> dict:
    """Train and evaluate ``config`` (or load its cached record) and return the record.

    The record is a dict: ``config`` (resolved), ``key``, ``metrics`` (knn_acc, linear_acc,
    ...), ``curves`` (per-epoch lists), ``provenance`` (contrastlab version and commit, device,
    torch version, date, wall time, budget, and ``resumed``), and with ``eval.save_z`` also
    ``z_test`` and ``z_test_labels``. Checkpoints go to :func:`run_dir`, so an interrupted run
    resumes when ``run`` is called again, and a run that differs only in its ``eval`` section
    re-evaluates the finished checkpoint.
    """
    resolved = resolve(config)
    path = record_path(resolved, cache_dir)
    record = None if force else _io.read_record(path)   # a damaged record is set aside and computed again
    if record is not None:
        return record
    _check_before_training(config, resolved, path.parent)
    folder = run_dir(resolved, cache_dir)
    # under torchrun: rank 0 deletes, evaluates and writes; all return the record
    distributed.init_from_env(device=resolved.get("train", {}).get("device", "cpu"))
    # one process at a time trains a run folder; one that waited finds the record written
    with _io.folder_lock(folder) if distributed.is_main() else contextlib.nullcontext():
        record = None if force else _io.read_record(path)
        if record is not None:
            return record
        if force and distributed.is_main() and (folder / "checkpoint.pt").exists():
            (folder / "checkpoint.pt").unlink()
        distributed.barrier()
        resumed = (folder / "checkpoint.pt").exists()
        tic, cpu_tic = time.perf_counter(), time.process_time()
        metrics_, curves, device, extras = _execute(resolved, folder, progress)
        record = {"config": resolved, "key": config_hash(resolved), "metrics": metrics_, "curves": curves,
                  **extras, "provenance": provenance(device, resolved["budget"], time.perf_counter() - tic,
                                                     cpu_time_s=time.process_time() - cpu_tic,
                                                     precision=resolved_precision(resolved))}
        record["provenance"]["resumed"] = resumed   # True: training (or all of it) was done by an earlier call
        record = distributed.broadcast_object(record)
        if not distributed.is_main():
            return record
        write_json(path, record)
    return record


def _check_before_training(config: ExperimentConfig, resolved: dict, results: Path) -> None:
    """What would fail only after training, checked first: the results folder, the device, the sizes."""
    _io.check_writable_folder(results, "results folder")
    device = resolved.get("train", {}).get("device", "auto")
    if device != "auto":
        kind = resolve_device(device).type
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"train.device is {device!r}, but torch finds no CUDA GPU here "
                             "(torch.cuda.is_available() is False); use 'auto' or 'cpu'")
        if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"train.device is {device!r}, but this machine has no MPS device; use 'auto' or 'cpu'")
    for split in ("train", "test"):
        size = config.overrides.get(f"dataset.{split}_size")   # a preset's size is a cap; the user's must fit
        if size is not None:
            available = len(load_dataset(resolved["dataset"]["name"], split)[1])
            if size > available:
                raise ValueError(f"dataset.{split}_size must be at most the {available} images of "
                                 f"{resolved['dataset']['name']}'s {split} split, got {size}")


def write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (a temporary file, then a rename), so a
    reader never sees half a record; the parent folder is created. Returns the path."""
    return _io.write_json(path, obj)   # a temporary file of its own, so concurrent writers never mix


def load_data(section: dict, seed: int):
    """(train_images, train_labels, test_images, test_labels) for a resolved 'dataset' section."""
    x_tr, y_tr = load_dataset(section["name"], "train")
    x_te, y_te = load_dataset(section["name"], "test")
    if section["train_size"]:
        x_tr, y_tr = subsample(x_tr, y_tr, section["train_size"], seed=seed)
    if section["test_size"]:
        x_te, y_te = subsample(x_te, y_te, section["test_size"], seed=seed)
    return x_tr, y_tr, x_te, y_te


def build_method(resolved: dict, in_channels: int, num_samples: int | None = None):
    """The encoder and method of a resolved config, initialised from its seed.

    ``num_samples`` (the training-set size) reaches methods that keep a row per image (InstDisc).
    """
    torch.manual_seed(resolved["train"]["seed"])
    enc = resolved["encoder"]
    width = enc["cnn_width"] if enc["name"] in ("small_cnn", "conv1d") else enc["resnet_width"]
    encoder = build_encoder(enc["name"], in_channels, width=width)
    name = resolved["method"]["name"]
    if name not in METHODS:
        return encoder, None
    cls, cfg_cls = METHODS[name]
    hparams = {k: v for k, v in resolved["method"].items() if k != "name"}
    extra = {"num_samples": num_samples} if "num_samples" in inspect.signature(cls).parameters else {}
    return encoder, cls(encoder, cfg_cls(**hparams), **extra)


def build_augment(resolved: dict):
    """The view maker of a resolved config: multi-crop when the method asks for small views.

    Sequence datasets are not augmented: every view is the sequence itself.
    """
    if DATASETS[resolved["dataset"]["name"]].kind == "sequence":
        return _Unaugmented()
    config = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in resolved["augment"].items()})
    n_small = resolved["method"].get("n_small", 0)
    if n_small:
        from .multicrop import MultiCropAugment
        return MultiCropAugment(config, n_small=n_small, large_scale=None)  # large views keep crop_scale
    return SimCLRAugment(config)


class _Unaugmented:
    """Views that are the data itself, as float in [0, 1] (the image augmentations do not apply)."""

    def views(self, x: torch.Tensor, n_views: int = 2) -> list[torch.Tensor]:
        return [x.float() / 255 if x.dtype == torch.uint8 else x.float()] * n_views


def evaluate(features_train, y_train, features_test, y_test, section: dict, seed: int = 0) -> dict:
    """kNN and linear-probe accuracy of frozen features, fitted on train, reported on test; with
    ``label_fractions`` also the probe on each share of the labels (``linear_acc_1pct``, ...)."""
    knn = metrics.knn_accuracy(features_train, y_train, features_test, y_test,
                               k=section["knn_k"], temperature=section["knn_temperature"])
    probe = metrics.linear_probe(features_train, y_train, features_test, y_test,
                                 epochs=section["linear_epochs"], seed=seed)
    result = {"knn_acc": knn, "linear_acc": probe["test_acc"], "linear_train_acc": probe["train_acc"]}
    for fraction in section.get("label_fractions", []):
        few = metrics.few_label_probe(features_train, y_train, features_test, y_test, fraction,
                                      epochs=section["linear_epochs"], seed=seed)
        result[f"linear_acc_{fraction * 100:g}pct"] = few["test_acc"]
    return result


def _execute(resolved: dict, run_dir: Path, progress: bool):
    seed = resolved["train"]["seed"] if "train" in resolved else 0
    with distributed.main_process_first():   # under torchrun rank 0 downloads, the others then read its cache
        x_tr, y_tr, x_te, y_te = load_data(resolved["dataset"], seed)
    name = resolved["method"]["name"]
    if name == "raw_pixels":
        f_tr, f_te = x_tr.flatten(1).float() / 255, x_te.flatten(1).float() / 255
        return evaluate(f_tr, y_tr, f_te, y_te, resolved["eval"], seed), {}, resolve_device("cpu"), {}
    device = resolve_device(resolved["train"]["device"])
    encoder, method = build_method(resolved, x_tr.shape[1], num_samples=len(x_tr))
    curves = {}
    size = resolved["augment"]["size"] if "augment" in resolved else x_tr.shape[-1]
    if method is not None:
        train_cfg = TrainConfig(**resolved["train"])
        history = fit(method, build_augment(resolved), x_tr, train_cfg, labels=y_tr, eval_data=(x_te, y_te),
                      out_dir=run_dir, progress=progress, meta={"experiment": resolved})
        curves = {k: v for k, v in history.items() if k != "finished"}
        encoder = method.encoder   # the representation evaluated (CPC wraps f to read patch grids)
    if not distributed.is_main():  # under torchrun rank 0 alone evaluates (run shares its record)
        return {}, curves, device, {}
    encoder.to(device)
    transform = eval_transform(size)
    f_tr = metrics.extract_features(encoder, x_tr, transform=transform)
    f_te = metrics.extract_features(encoder, x_te, transform=transform)
    result = evaluate(f_tr, y_tr.to(f_tr.device), f_te, y_te.to(f_te.device), resolved["eval"], seed)
    extras = {}
    if method is not None and resolved["eval"]["probe_z"]:
        z = _EmbedZ(method)
        z_tr = metrics.extract_features(z, x_tr, transform=transform)
        z_te = metrics.extract_features(z, x_te, transform=transform)
        zres = evaluate(z_tr, y_tr.to(z_tr.device), z_te, y_te.to(z_te.device), resolved["eval"], seed)
        result.update({f"{k}_z": v for k, v in zres.items()})
    if name == "swav":   # how evenly the prototypes share the test images (SwAV's equal partition)
        from .analysis import code_usage
        result.update(code_usage(method, x_te[:4096], transform=transform))
    if method is not None and resolved["eval"]["save_z"]:
        n = min(resolved["eval"]["save_z"], len(x_te))
        z = metrics.extract_features(_EmbedZ(method), x_te[:n], transform=transform).float()
        z = torch.nn.functional.normalize(z, dim=1)
        extras = {"z_test": [[round(v, 4) for v in row] for row in z.cpu().tolist()],
                  "z_test_labels": y_te[:n].tolist()}
    return result, curves, device, extras


class _EmbedZ(torch.nn.Module):
    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, x):
        return self.method.embed(x)


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=False, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "contrastlab"],
                               cwd=root, capture_output=True, text=True, check=False, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("-dirty" if dirty else "")) if commit else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu ({platform.machine()}, {torch.get_num_threads()} thread{'s' * (torch.get_num_threads() != 1)})"
    return device.type


def provenance(device: torch.device, budget: str, wall_time_s: float, cpu_time_s: float | None = None,
               precision: str | None = None) -> dict:
    """Where and when a record was made; ``cpu_time_s`` is the process's CPU time (summed over its
    threads), which on one thread is the run's cost whatever else the machine was doing;
    ``precision`` what training computed in ('fp32', 'bf16', 'fp16'; records made before it was
    recorded were trained on CPUs, where ``amp='auto'`` then meant fp32)."""
    return {"contrastlab": __version__, "commit": _git_commit(), "device": device_name(device),
            "torch": torch.__version__, "python": platform.python_version(), "budget": budget,
            "wall_time_s": round(wall_time_s, 2),
            **({"cpu_time_s": round(cpu_time_s, 2)} if cpu_time_s is not None else {}),
            **({"precision": precision} if precision is not None else {}),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **({"world_size": distributed.world_size()} if distributed.is_distributed() else {})}
