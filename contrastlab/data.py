"""Datasets as whole tensors, plus a sampler that never leaves the training device.

Every dataset the book uses fits in memory as uint8 (CIFAR-10 is 150 MB), so a dataset here
is just two tensors: ``images`` uint8 ``(N, C, H, W)`` and ``labels`` int64 ``(N,)``. They are
moved to the GPU once; :class:`IndexBatches` then hands out shuffled index batches and the
training loop gathers ``images[idx]`` itself. There is no DataLoader and no worker pool, so
the two CPU cores of a Colab machine never become the bottleneck::

    images, labels = load_dataset("fashion-mnist", "train")      # (60000, 1, 28, 28) uint8
    images = images.to(device)
    for idx in IndexBatches(len(images), 256, seed=0, device=device).epoch(3):
        x = images[idx]                                            # (256, 1, 28, 28)

Where the files come from (first hit wins):

1. the ``root`` argument, 2. ``$CONTRASTLAB_DATA``, 3. the cache folder
``$XDG_CACHE_HOME/contrastlab`` (default ``~/.cache/contrastlab``), 4. for Fashion-MNIST only,
Debian's ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``),
5. with ``download=True``, a torchvision download into ``root`` or the cache folder.
Nothing touches the network unless ``download=True`` and the files were found nowhere.
"""
from __future__ import annotations

import functools
import gzip
import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._validate import check_choice, check_positive, check_tensor, shape_str

__all__ = ["DATASETS", "DatasetInfo", "DatasetNotFoundError", "IndexBatches", "load_dataset",
           "make_colour_shapes", "make_waveforms", "subsample"]


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files were found in none of the searched folders and could not be downloaded."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset looks like once loaded by :func:`load_dataset`."""

    name: str                 # key in DATASETS
    channels: int             # C of the (N, C, H, W) images
    size: int                 # H == W
    num_classes: int          # labels are 0 .. num_classes - 1 (-1 for unlabeled examples)
    splits: tuple[str, ...]   # valid values of load_dataset(split=...)
    classes: tuple[str, ...]  # human-readable class names, indexed by label
    kind: str = "image"       # 'image': (N, C, size, size); 'sequence': 1-D signals stored as (N, C, 1, size)


_CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew",
    "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower",
    "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor", "train", "trout",
    "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm"
)

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", 1, 8, 10, ("train", "test"), tuple(str(d) for d in range(10))),
    "fashion-mnist": DatasetInfo("fashion-mnist", 1, 28, 10, ("train", "test"), (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "cifar10": DatasetInfo("cifar10", 3, 32, 10, ("train", "test"), (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    "cifar100": DatasetInfo("cifar100", 3, 32, 100, ("train", "test"), _CIFAR100_CLASSES),
    "stl10": DatasetInfo("stl10", 3, 96, 10, ("train", "test", "unlabeled"), (
        "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")),
    "waveforms": DatasetInfo("waveforms", 1, 256, 8, ("train", "test"), (
        "sine-slow", "sine-fast", "square-slow", "square-fast",
        "sawtooth-slow", "sawtooth-fast", "pulse-slow", "pulse-fast"), kind="sequence"),
    "colour-shapes": DatasetInfo("colour-shapes", 3, 32, 8, ("train", "test"), (
        "disc", "ring", "square", "frame", "triangle", "plus", "diamond", "cross")),
}
# The book's measuring instrument (contrastlab.scorecard) and the candidate it was chosen over: the
# same generator with more images, so that seed noise, not the size of the test set, limits what it
# resolves (16,000 test images put the binomial SD of an accuracy near 0.9 at 0.24 points, against
# 0.47 with 4,000). colour-shapes-p4 draws its colours from a palette of 4 (12 foreground-background
# pairs): colour narrows down which image a view came from but cannot tell it. With colours uniform
# in the RGB cube (colour-shapes-large) the seeds of one SimCLR recipe spread far more widely
# (book/measuring has the numbers).
DATASETS["colour-shapes-large"] = DatasetInfo("colour-shapes-large", 3, 32, 8, ("train", "test"),
                                              DATASETS["colour-shapes"].classes)
DATASETS["colour-shapes-p4"] = DatasetInfo("colour-shapes-p4", 3, 32, 8, ("train", "test"),
                                           DATASETS["colour-shapes"].classes)

# Debian's dataset-fashion-mnist package; a module attribute so tests can point it elsewhere.
_GENERATED = ("digits", "waveforms", "colour-shapes", "colour-shapes-large", "colour-shapes-p4")   # made in memory, never downloaded
_DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------------------------
# load_dataset


def load_dataset(name: str, split: str = "train", *, root=None,
                 download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a whole dataset split as two CPU tensors.

    Args:
        name: one of ``DATASETS``: "digits", "fashion-mnist", "cifar10", "cifar100", "stl10",
            "waveforms" (generated here, see :func:`make_waveforms`), "colour-shapes" (generated
            here, see :func:`make_colour_shapes`).
        split: one of ``DATASETS[name].splits`` ("train", "test"; stl10 also "unlabeled").
        root: folder searched first (str or path). Downloads go here when given.
        download: fetch the data with torchvision when no searched folder has it. With
            ``download=False`` nothing touches the network.

    Returns:
        images: uint8 ``(N, C, H, W)``, values 0..255; ``(N, C, 1, L)`` for the sequence
        dataset "waveforms";
        labels: int64 ``(N,)``, values 0..C-1; -1 for stl10's "unlabeled" split.

        Both are fresh copies: modifying them does not affect later calls.

    Raises:
        ValueError: unknown ``name`` or ``split``.
        DatasetNotFoundError: the files are nowhere and could not be downloaded; the message
            lists every folder searched and how to get the data.
    """
    check_choice("dataset name", name, DATASETS)
    info = DATASETS[name]
    if split not in info.splits:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; "
                         f"expected one of {', '.join(map(repr, info.splits))}")
    if name in _GENERATED:                   # made in memory: no files to look for
        images, labels = _load_cached(name, split, "", ())
        return images.clone(), labels.clone()

    folder, looked = _locate(name, split, root)
    failure = None
    if folder is None and download:
        dest = Path(root).expanduser() if root is not None else _cache_dir()
        try:
            _download(name, split, dest)
        except Exception as err:  # noqa: BLE001 (offline, HTTP error, bad md5, bad archive: all "not here")
            failure = f"download into {dest} failed: {type(err).__name__}: {err}"
        folder, _ = _locate(name, split, root)
    if folder is None:
        raise DatasetNotFoundError(_not_found_message(name, split, looked, download, failure))

    if name == "stl10" and split == "unlabeled":  # 2.7 GB: too big to keep a second copy around
        return _load_uncached(name, split, folder)
    images, labels = _load_cached(name, split, str(folder), _stamp(name, split, folder))
    return images.clone(), labels.clone()


def _search_bases(root) -> list[Path]:
    """Base folders in search order: root, $CONTRASTLAB_DATA, the cache folder (no duplicates)."""
    bases = []
    for base in (root, os.environ.get("CONTRASTLAB_DATA") or None, _cache_dir()):
        if base is not None:
            base = Path(base).expanduser()
            if base not in bases:
                bases.append(base)
    return bases


def _cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "contrastlab"


def _locate(name: str, split: str, root) -> tuple[Path | None, list[Path]]:
    """First folder holding ``name``'s files, and every folder looked in.

    For fashion-mnist the folder holding the IDX files; for the torchvision datasets the root
    that torchvision expects (the one containing ``cifar-10-batches-py/`` etc.).
    """
    looked = []
    if name == "fashion-mnist":
        candidates = []
        for base in _search_bases(root):
            candidates += [base, base / "fashion-mnist", base / "FashionMNIST" / "raw"]
        for folder in candidates + [_DEBIAN_FASHION_MNIST]:
            looked.append(folder)
            if all(_idx_path(folder, stem) is not None for stem in _idx_stems(split)):
                return folder, looked
        return None, looked
    cls = _torchvision_class(name)
    for base in _search_bases(root):
        looked.append(base / cls.base_folder)
        if all((base / cls.base_folder / f).is_file() for f in _torchvision_files(name)):
            return base, looked
    return None, looked


def _not_found_message(name, split, looked, download, failure) -> str:
    lines = [f"dataset {name!r} (split {split!r}) was not found. Looked in:"]
    lines += [f"  {folder}" for folder in looked]
    if failure:
        lines.append(failure)
    lines.append("To get it, any of:")
    if name == "fashion-mnist":
        lines.append("  - on Debian/Ubuntu: apt-get install dataset-fashion-mnist")
    lines.append("  - set CONTRASTLAB_DATA (or pass root=) to a folder that holds the files"
                 + (" (the IDX files, plain or .gz)" if name == "fashion-mnist"
                    else f" ({_torchvision_class(name).base_folder}/ as torchvision extracts it)"))
    if not download:
        lines.append(f"  - when online, call load_dataset({name!r}, download=True) "
                     f"(saves into root, or {_cache_dir()})")
    return "\n".join(lines)


def _stamp(name: str, split: str, folder: Path) -> tuple:
    """(mtime, size) of the files read, so the in-process cache notices rewritten files."""
    if name == "fashion-mnist":
        files = [_idx_path(folder, stem) for stem in _idx_stems(split)]
    else:
        cls = _torchvision_class(name)
        files = [folder / cls.base_folder / f for f in _torchvision_files(name)]
    return tuple((st.st_mtime_ns, st.st_size) for st in (f.stat() for f in files))


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, split: str, folder: str, stamp: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    return _load_uncached(name, split, Path(folder))


def _load_uncached(name: str, split: str, folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "digits":
        return _load_digits(split)
    if name == "waveforms":
        return make_waveforms(*_WAVEFORM_SPLITS[split])
    if name == "colour-shapes":
        return make_colour_shapes(*_COLOUR_SHAPES_SPLITS[split])
    if name == "colour-shapes-large":
        return make_colour_shapes(*_COLOUR_SHAPES_LARGE_SPLITS[split])
    if name == "colour-shapes-p4":
        return make_colour_shapes(*_COLOUR_SHAPES_LARGE_SPLITS[split], palette=4)
    if name == "fashion-mnist":
        return _load_fashion_mnist(split, folder)
    return _load_torchvision(name, split, folder)


# ----------------------------------------------------------------------------------------------
# digits (scikit-learn's copy of the UCI 8x8 handwritten digits, 1797 images)


def _load_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified 80/20 split with a fixed seed: per class, the first 80% of a shuffle is train."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    values = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    targets = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    chosen = []
    for c in range(10):
        members = rng.permutation(np.flatnonzero(targets == c))
        n_train = round(0.8 * len(members))
        chosen.append(members[:n_train] if split == "train" else members[n_train:])
    keep = np.sort(np.concatenate(chosen))
    return torch.from_numpy(values[keep][:, None]), torch.from_numpy(targets[keep])


# ----------------------------------------------------------------------------------------------
# waveforms (generated: noisy periodic signals whose shape and speed are the class)

_WAVE_SHAPES = ("sine", "square", "sawtooth", "pulse")
_WAVE_PERIODS = (24.0, 10.0)                  # samples per cycle: "slow", "fast"
_WAVEFORM_SPLITS = {"train": (32000, 0), "test": (2000, 1)}   # (n, seed) of each split
_WAVE_RANGE = 2.0                             # values in [-2, 2] map to 0..255


def make_waveforms(n: int, seed: int, length: int = 256,
                   noise: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """A labelled set of 1-D signals, the same for the same arguments: CPC's sequence toy data.

    Each signal is one of 4 periodic shapes (sine, square, sawtooth, pulse: a train of pulses
    high for the first 20% of each cycle, zero-mean like the others) at one of 2 speeds (a
    period of 24 or 10 samples), 8 classes, label = 2 * shape + speed, classes in equal
    numbers in random order. Per signal, drawn from ``numpy.random.default_rng(seed)``:

        x_t = a * shape((t / P + phi) mod 1) + noise * e_t,   t = 0 .. length - 1,

    amplitude a ~ U(0.5, 1), period P = the class's period times U(0.9, 1.1), phase
    phi ~ U(0, 1) and white noise e_t ~ N(0, 1). Values in [-2, 2] are mapped linearly to
    0..255 (clipped) and stored as uint8 of shape (n, 1, 1, length), like a one-row image.

    The class is recoverable from the signal (the power spectrum tells the period and, by its
    harmonics, the shape), but hardly from the raw samples compared position by position, as
    the random phase shifts the signal: on the test split a kNN (k = 200) fitted on the train
    split scores 0.99 on ``|FFT|`` of the samples, 0.51 on the raw samples (chance: 0.125).

    Returns:
        signals: uint8 (n, 1, 1, length); labels: int64 (n,), 0..7 as in
        ``DATASETS["waveforms"].classes``.
    """
    check_positive("n", n)
    check_positive("length", length)
    check_positive("noise", noise, allow_zero=True)
    rng = np.random.default_rng(seed)
    n_classes = len(_WAVE_SHAPES) * len(_WAVE_PERIODS)
    labels = rng.permutation(np.arange(n) % n_classes)
    shape, speed = labels // len(_WAVE_PERIODS), labels % len(_WAVE_PERIODS)
    amplitude = rng.uniform(0.5, 1.0, n)
    period = np.asarray(_WAVE_PERIODS)[speed] * rng.uniform(0.9, 1.1, n)
    phase = rng.uniform(0.0, 1.0, n)
    u = (np.arange(length)[None, :] / period[:, None] + phase[:, None]) % 1.0   # (n, length) in [0, 1)
    waves = np.stack([np.sin(2 * np.pi * u),                                     # sine
                      np.where(u < 0.5, 1.0, -1.0),                              # square
                      2 * u - 1,                                                 # sawtooth
                      np.where(u < 0.2, 1.6, -0.4)])                             # pulse, mean 0
    signal = amplitude[:, None] * waves[shape, np.arange(n)] + noise * rng.standard_normal((n, length))
    values = np.clip(np.rint((signal + _WAVE_RANGE) * (255 / (2 * _WAVE_RANGE))), 0, 255).astype(np.uint8)
    return torch.from_numpy(values[:, None, None, :]), torch.from_numpy(labels.astype(np.int64))


# ----------------------------------------------------------------------------------------------
# colour-shapes (generated: the class is the shape, the colours are random and say nothing of it)

_SHAPES = DATASETS["colour-shapes"].classes
_COLOUR_SHAPES_SPLITS = {"train": (20000, 0), "test": (4000, 1)}   # (n, seed) of each split
_COLOUR_SHAPES_LARGE_SPLITS = {"train": (40000, 2), "test": (16000, 3)}
_CORNERS = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]],
                    dtype=np.float32)   # the palette of make_colour_shapes(palette=k): the RGB cube's corners


def _shape_mask(k: int, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Boolean (n, H, W) masks of shape number ``k`` of radii ``r`` in centred coordinates (u, v)."""
    r = r[:, None, None]
    au, av = np.abs(u), np.abs(v)
    bar = 0.3 * r                                                       # half-width of strokes
    if k in (0, 1):
        dist = np.hypot(u, v)
        return dist <= r if k == 0 else (dist <= r) & (dist >= 0.55 * r)   # disc, ring
    box = np.maximum(au, av)
    if k == 2:
        return box <= 0.85 * r                                          # square
    if k == 3:
        return (box <= 0.85 * r) & (box >= 0.5 * r)                     # frame (hollow square)
    if k == 4:
        return (v <= 0.7 * r) & (v >= 2 * au - r)                       # triangle, apex down
    if k == 5:
        return ((au <= bar) & (av <= r)) | ((av <= bar) & (au <= r))    # plus
    if k == 6:
        return au + av <= r                                             # diamond
    return ((np.abs(u - v) <= 1.4 * bar) | (np.abs(u + v) <= 1.4 * bar)) & (box <= 0.8 * r)   # cross (an X)


def _shape_masks(kind: np.ndarray, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Boolean (n, H, W) masks: shape ``kind[i]`` of radius ``r[i]``; each image draws only its own shape."""
    masks = np.zeros((len(kind), v.shape[1], u.shape[2]), dtype=bool)
    for k in range(len(_SHAPES)):
        rows = np.flatnonzero(kind == k)
        if len(rows):
            masks[rows] = _shape_mask(k, u[rows], v[rows], r[rows])
    return masks


def make_colour_shapes(n: int, seed: int, size: int = 32, noise: float = 0.04,
                       palette: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A labelled set of RGB images whose class is a shape and whose colours are random.

    The dataset of the colour-distortion experiment (chapter 5): one of 8 shapes (disc, ring,
    square, frame, triangle, plus, diamond, cross; label = index in
    ``DATASETS["colour-shapes"].classes``, classes in equal numbers in random order), drawn
    at a random position and radius (0.22 to 0.38 of the side) in a random foreground colour
    on a random background colour, plus a little pixel noise. Both colours are uniform in the
    RGB cube, redrawn until they differ by at least 0.35 in some channel, so the shape is
    always visible. Colour says nothing about the class but nearly everything about *which*
    image a view came from: two crops of one image share its two colours exactly. A method
    that must tell images apart can solve its task from colour alone unless the augmentation
    distorts colour; a classifier of shapes has no such shortcut (SimCLR's argument for strong
    colour augmentation, Chen et al. 2020, section 3).

    With ``palette`` = k (2 to 8), both colours come instead from the first k corners of the RGB
    cube (black, white, red, green, blue, yellow, cyan, magenta), foreground and background
    different: only k (k - 1) colour pairs, so colour narrows down which image a view came from
    without telling it outright.

    Deterministic for the same arguments (``numpy.random.default_rng(seed)``).

    Returns:
        images: uint8 (n, 3, size, size); labels: int64 (n,), 0..7.
    """
    check_positive("n", n)
    check_positive("size", size)
    check_positive("noise", noise, allow_zero=True)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(_SHAPES))
    radius = rng.uniform(0.22, 0.38, n) * size
    centre = rng.uniform(radius[:, None], size - radius[:, None], (n, 2))   # the shape stays inside
    if palette is not None:
        if isinstance(palette, bool) or not isinstance(palette, int) or not 2 <= palette <= len(_CORNERS):
            raise ValueError(f"palette must be an int in [2, {len(_CORNERS)}] or None, got {palette!r}")
        first = rng.integers(0, palette, n)
        second = (first + rng.integers(1, palette, n)) % palette         # never the same colour
        fg, bg = _CORNERS[first], _CORNERS[second]
    else:
        fg, bg = rng.uniform(0, 1, (n, 3)), rng.uniform(0, 1, (n, 3))
        close = np.abs(fg - bg).max(1) < 0.35
        while close.any():                                               # redraw indistinct pairs
            bg[close] = rng.uniform(0, 1, (int(close.sum()), 3))
            close = np.abs(fg - bg).max(1) < 0.35
    grid = np.arange(size) + 0.5
    u = grid[None, None, :] - centre[:, 0, None, None]                   # (n, 1, W): x offset
    v = centre[:, 1, None, None] - grid[None, :, None]                   # (n, H, 1): y offset, up
    images = np.empty((n, 3, size, size), dtype=np.float32)
    for start in range(0, n, 2048):                                      # bounded memory
        part = slice(start, start + 2048)
        mask = _shape_masks(labels[part], u[part], v[part], radius[part])[:, None]   # (b, 1, H, W)
        images[part] = np.where(mask, fg[part, :, None, None], bg[part, :, None, None])
    images += noise * rng.standard_normal(images.shape, dtype=np.float32)
    values = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
    return torch.from_numpy(values), torch.from_numpy(labels.astype(np.int64))


# ----------------------------------------------------------------------------------------------
# fashion-mnist (IDX files, parsed here: a magic number, big-endian sizes, then raw bytes)


def _idx_stems(split: str) -> tuple[str, str]:
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _idx_path(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (optionally gzipped) into an array of its stored shape."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:   # not gzip, or cut short
        raise ValueError(f"{path} is not a readable gzip file ({e}); download it again or "
                         "replace it with the uncompressed IDX file") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an unsigned-byte IDX file: expected magic bytes 00 00 08 xx, "
                         f"got {raw[:4].hex(' ')}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        raise ValueError(f"{path} is truncated or padded: header says {math.prod(dims)} values "
                         f"of shape {shape_str(dims)}, got {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _load_fashion_mnist(split: str, folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    image_stem, label_stem = _idx_stems(split)
    images = _read_idx(_idx_path(folder, image_stem))  # (N, 28, 28)
    labels = _read_idx(_idx_path(folder, label_stem))  # (N,)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(f"fashion-mnist files in {folder} disagree: images of shape "
                         f"{shape_str(images.shape)}, labels of shape {shape_str(labels.shape)}")
    return torch.from_numpy(images[:, None]), torch.from_numpy(labels.astype(np.int64))


# ----------------------------------------------------------------------------------------------
# cifar10, cifar100, stl10 (through torchvision.datasets, imported only when needed)


def _torchvision_class(name: str):
    from torchvision import datasets

    return {"fashion-mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10,
            "cifar100": datasets.CIFAR100, "stl10": datasets.STL10}[name]


def _torchvision_files(name: str) -> list[str]:
    """Files torchvision insists on before it loads any split (it checks all of them)."""
    cls = _torchvision_class(name)
    files = [f for f, _md5 in cls.train_list + cls.test_list]
    return files + [cls.meta["filename"]] if hasattr(cls, "meta") else files


def _download(name: str, split: str, dest: Path) -> None:
    """Let torchvision download (and verify) ``name`` into ``dest``; the only network access."""
    dest.mkdir(parents=True, exist_ok=True)
    cls = _torchvision_class(name)
    if name == "stl10":
        cls(dest, split=split, download=True)
    else:  # FashionMNIST lands in dest/FashionMNIST/raw, one of the layouts _locate knows
        cls(dest, train=(split == "train"), download=True)


def _load_torchvision(name: str, split: str, base: Path) -> tuple[torch.Tensor, torch.Tensor]:
    cls = _torchvision_class(name)
    try:
        if name == "stl10":
            ds = cls(base, split=split, download=False)
        else:
            ds = cls(base, train=(split == "train"), download=False)
    except RuntimeError as err:  # torchvision's "not found or corrupted" (md5 mismatch)
        raise DatasetNotFoundError(f"dataset {name!r} files in {base / cls.base_folder} were rejected "
                                   f"by torchvision: {err}. Delete them and load again with download=True, "
                                   f"or point root=/CONTRASTLAB_DATA at an intact copy.") from err
    if name == "stl10":
        images = np.ascontiguousarray(ds.data)                     # (N, 3, 96, 96) already
        labels = np.asarray(ds.labels).astype(np.int64)            # -1 for "unlabeled"
    else:
        images = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))  # (N, 32, 32, 3) -> (N, 3, 32, 32)
        labels = np.asarray(ds.targets, dtype=np.int64)            # cifar100: fine labels
    return torch.from_numpy(images), torch.from_numpy(labels)


# ----------------------------------------------------------------------------------------------
# subsample


def subsample(images: torch.Tensor, labels: torch.Tensor, n: int, *,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced random subset of ``n`` examples, deterministic in ``seed``.

    Every class gets ``n // C`` examples (C = number of distinct labels), the remainder going
    one each to randomly chosen classes; a class with too few examples gives all it has and
    the others make up the difference. Kept examples stay in their original order.

    Args:
        images: ``(N, ...)`` any dtype, any device.
        labels: ``(N,)`` integer class labels, on any device.
        n: size of the subset, ``>= 0``. ``n >= N`` returns the inputs themselves.
        seed: seed of the private CPU generator that picks the subset.

    Returns:
        images ``(n, ...)`` and labels ``(n,)``, on the inputs' devices.
    """
    check_tensor("labels", labels, ndim=1)
    check_tensor("images", images)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images and labels must have the same length, got {images.shape[0]} "
                         f"and {labels.shape[0]}")
    check_positive("n", n, allow_zero=True)
    if n >= labels.shape[0]:
        return images, labels

    gen = torch.Generator().manual_seed(seed)
    cpu_labels = labels.cpu()
    classes, counts = torch.unique(cpu_labels, return_counts=True)  # sorted, (C,)
    quota = _balanced_quota(counts, n, gen)                         # (C,)
    picked = []
    for c, q in zip(classes, quota.tolist()):
        members = torch.nonzero(cpu_labels == c).squeeze(1)
        picked.append(members[torch.randperm(len(members), generator=gen)[:q]])
    keep = torch.sort(torch.cat(picked)).values
    return images[keep.to(images.device)], labels[keep.to(labels.device)]


def _balanced_quota(counts: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Per-class sizes summing to ``n``, as equal as ``counts`` allows (water filling)."""
    quota = torch.zeros_like(counts)
    remaining, open_classes = n, torch.argsort(counts)  # smallest classes first
    while len(open_classes) > 0:
        share = remaining // len(open_classes)
        smallest = open_classes[0]
        if counts[smallest] > share:
            break
        quota[smallest] = counts[smallest]  # this class cannot fill a fair share: take it whole
        remaining -= int(counts[smallest])
        open_classes = open_classes[1:]
    if len(open_classes) > 0:  # every open class has more than `share` examples
        share, extra = divmod(remaining, len(open_classes))
        quota[open_classes] = share
        lucky = open_classes[torch.randperm(len(open_classes), generator=gen)[:extra]]
        quota[lucky] += 1
    return quota


# ----------------------------------------------------------------------------------------------
# IndexBatches


class IndexBatches:
    """Shuffled index batches over a dataset that already lives on the training device.

    No worker processes and no copies of images: each batch is an int64 index tensor on
    ``device``, and the caller gathers ``images[idx]``. The order of epoch ``e`` depends only on
    ``(seed, e)``, so a run resumed mid-epoch with ``epoch(e, start=s)`` sees exactly the batches
    it would have seen without the interruption.

    Args:
        n: dataset size N.
        batch_size: indices per batch B.
        seed: base seed; combined with the epoch number for each epoch's permutation.
        device: where the index tensors live (the dataset's device).
        shuffle: permute each epoch; if False, batches walk 0..N-1 in order.
        drop_last: drop the final short batch (needs ``batch_size <= n``).
    """

    def __init__(self, n: int, batch_size: int, *, seed: int = 0, device="cpu",
                 shuffle: bool = True, drop_last: bool = True):
        check_positive("n", n)
        check_positive("batch_size", batch_size)
        check_positive("seed", seed, allow_zero=True)
        if drop_last and batch_size > n:
            raise ValueError(f"batch_size must be <= n when drop_last=True (else no batches), "
                             f"got batch_size={batch_size} and n={n}")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.device = torch.device(device)
        self.shuffle, self.drop_last = shuffle, drop_last

    def __len__(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(self.n, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def epoch(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        """Index batches of epoch ``epoch``, skipping the first ``start`` of them.

        Args:
            epoch: epoch number, ``>= 0``; selects the permutation.
            start: batches already consumed in this epoch, ``0 <= start <= len(self)``.

        Returns:
            An iterator over int64 tensors of shape ``(batch_size,)`` on ``device`` (the last
            one shorter when ``drop_last=False`` and ``batch_size`` does not divide ``n``).
        """
        check_positive("epoch", epoch, allow_zero=True)
        if not 0 <= start <= len(self):
            raise ValueError(f"start must be in [0, {len(self)}] (batches per epoch), got {start}")
        return self._batches(self._order(epoch), start)

    def _order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n, device=self.device)
        # SeedSequence mixes (seed, epoch) into one well-spread 64-bit seed, never colliding
        # the way seed * K + epoch would.
        mixed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1, dtype=np.uint64)[0])
        gen = torch.Generator().manual_seed(mixed)  # CPU: same permutation on every device
        return torch.randperm(self.n, generator=gen).to(self.device)

    def _batches(self, order: torch.Tensor, start: int) -> Iterator[torch.Tensor]:
        for i in range(start, len(self)):
            yield order[i * self.batch_size:(i + 1) * self.batch_size]

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Batches of epoch 0; call :meth:`epoch` for the others."""
        return self.epoch(0)

    def __repr__(self) -> str:
        return (f"IndexBatches(n={self.n}, batch_size={self.batch_size}, seed={self.seed}, "
                f"device={str(self.device)!r}, shuffle={self.shuffle}, drop_last={self.drop_last})")
