"""Evaluating representations: features, kNN, linear probe, alignment and uniformity.

- :func:`extract_features` runs a frozen encoder over a dataset kept in memory.
- :func:`knn_predict` / :func:`knn_accuracy`: the weighted kNN monitor of InstDisc
  (Wu et al. 2018, Sec. 3.4), used by MoCo, lightly and solo-learn to track training.
- :func:`linear_probe`: multinomial logistic regression on frozen features, the standard
  "linear evaluation protocol" (SimCLR, Chen et al. 2020, Sec. 2.3), run offline;
  :func:`few_label_probe` fits it on 1% or 10% of the labels (the semi-supervised protocol).
- :func:`alignment` and :func:`uniformity`: the two properties of Wang & Isola (2020, Sec. 4).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab._validate import check_finite, check_tensor, shape_str
from contrastlab.data import subsample

# --------------------------------------------------------------------------------------------
# argument checks local to this module

def _check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _check_number(name: str, value, *, positive: bool = True, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and not (value > 0 or (allow_zero and value == 0)):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def _check_features_labels(fname: str, features, lname: str, labels) -> None:
    """features (N, D) floating and labels (N,) integer with N >= 1."""
    check_tensor(fname, features, ndim=2, floating=True)
    check_tensor(lname, labels, ndim=1)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{lname} must be an integer tensor, got dtype {labels.dtype}")
    if features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{fname} and {lname} must have the same length, "
            f"got {shape_str(features.shape)} and {shape_str(labels.shape)}"
        )
    if features.shape[0] == 0:
        raise ValueError(f"{fname} must hold at least one row, got shape {shape_str(features.shape)}")


def _check_same_dim(aname: str, a: Tensor, bname: str, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{aname} and {bname} must have the same feature dimension D, "
            f"got {shape_str(a.shape)} and {shape_str(b.shape)}"
        )


def _num_classes(num_classes, *labels: Tensor) -> int:
    """Check that labels lie in [0, C) and return C (max label + 1 when ``num_classes`` is None)."""
    lo = min(int(y.min()) for y in labels)
    hi = max(int(y.max()) for y in labels)
    if lo < 0:
        raise ValueError(f"labels must be >= 0, got a label {lo}")
    if num_classes is None:
        return hi + 1
    _check_int("num_classes", num_classes)
    if hi >= num_classes:
        raise ValueError(f"num_classes must exceed every label, got num_classes={num_classes} and a label {hi}")
    return num_classes


# --------------------------------------------------------------------------------------------
# features

def _to_unit_float(x: Tensor) -> Tensor:
    """Default transform: uint8 images in [0, 255] -> float32 in [0, 1]; float images unchanged."""
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


@torch.no_grad()
def extract_features(model: nn.Module, images: Tensor, *, batch_size: int = 512, device=None,
                     transform: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Run ``model`` in eval mode over ``images`` in batches and stack the outputs.

    Each batch is moved to ``device`` first and then passed through ``transform`` there, so a
    uint8 dataset on the CPU is converted on the GPU. Batch norm uses its running statistics
    (eval mode); the training flag of every submodule is restored afterwards, also on error.

    Args:
        model: the encoder f, mapping a batch (B, C, H, W) to (B, D) (or anything flattening to it).
        images: (N, C, H, W), uint8 in [0, 255] or float, on the CPU or on ``device``.
        batch_size: images per forward pass; the result does not depend on it in eval mode.
        device: where the model runs and the features are returned; default the device of the
            model's first parameter (the CPU for a model without parameters).
        transform: applied to each batch on ``device`` before the model; default uint8 ->
            float32 / 255, float -> float32.

    Returns:
        features h, float32 (N, D) on ``device``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_tensor("images", images)
    if images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty batch (N, ...), got shape {shape_str(images.shape)}")
    _check_int("batch_size", batch_size)
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    transform = _to_unit_float if transform is None else transform

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        out = []
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size].to(device, non_blocking=True)
            h = model(transform(x))                 # (B, D)
            out.append(h.float().flatten(1))
        return torch.cat(out)                      # (N, D)
    finally:
        for m, mode in modes:
            m.training = mode


# --------------------------------------------------------------------------------------------
# weighted kNN

@torch.no_grad()
def knn_predict(train_features: Tensor, train_labels: Tensor, query_features: Tensor, *, k: int = 200,
                temperature: float = 0.1, num_classes: int | None = None, chunk_size: int = 1024) -> Tensor:
    r"""Weighted k-nearest-neighbour classification (InstDisc, Wu et al. 2018, Sec. 3.4).

    Features are L2-normalised, so similarity is the cosine :math:`s_i = \cos(q, h_i)`. Each
    query takes its k most similar training points, each votes for its class with weight
    :math:`\exp(s_i / \tau)`, and the class with the largest summed weight wins (ties go to the
    smaller class index). The weights are computed as :math:`\exp((s_i - s_{max}) / \tau)`, a
    per-query constant factor that leaves the vote unchanged and cannot overflow.

    The work runs on ``train_features``' device, ``chunk_size`` queries at a time, so memory
    is (chunk_size, N_train) rather than (N_query, N_train).

    Args:
        train_features: (N, D) floating, the memory.
        train_labels: (N,) integer labels in [0, C).
        query_features: (Q, D) floating.
        k: number of neighbours, clipped to N (default 200 as in InstDisc and the peers' monitors).
        temperature: tau of the weights (default 0.1).
        num_classes: C; default ``max(train_labels) + 1``.
        chunk_size: queries per block.

    Returns:
        int64 predictions (Q,) on ``query_features``' device.
    """
    _check_features_labels("train_features", train_features, "train_labels", train_labels)
    check_tensor("query_features", query_features, ndim=2, floating=True)
    _check_same_dim("train_features", train_features, "query_features", query_features)
    _check_int("k", k)
    _check_number("temperature", temperature)
    _check_int("chunk_size", chunk_size)
    n_classes = _num_classes(num_classes, train_labels)

    device = train_features.device
    memory = F.normalize(train_features.float(), dim=1)          # (N, D)
    labels = train_labels.to(device=device, dtype=torch.long)    # (N,)
    k = min(k, memory.shape[0])
    preds = []
    for start in range(0, query_features.shape[0], chunk_size):
        q = F.normalize(query_features[start:start + chunk_size].to(device).float(), dim=1)  # (B, D)
        sim, idx = (q @ memory.T).topk(k, dim=1)                   # (B, k) each, most similar first
        weights = ((sim - sim[:, :1]) / temperature).exp()        # (B, k) exp(s/tau) up to a factor
        votes = torch.zeros(q.shape[0], n_classes, device=device)  # (B, C)
        votes.scatter_add_(1, labels[idx], weights)
        preds.append(votes.argmax(dim=1))
    if not preds:
        return torch.zeros(0, dtype=torch.long, device=query_features.device)
    return torch.cat(preds).to(query_features.device)


def knn_accuracy(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                 **kw) -> float:
    """Fraction of ``test_features`` whose :func:`knn_predict` class equals ``test_labels``.

    Args:
        train_features, train_labels: the memory, (N, D) and (N,).
        test_features, test_labels: the queries, (Q, D) and (Q,).
        **kw: passed to :func:`knn_predict` (``k``, ``temperature``, ``num_classes``, ``chunk_size``).

    Returns:
        accuracy in [0, 1] as a Python float.
    """
    _check_features_labels("test_features", test_features, "test_labels", test_labels)
    check_finite("train_features", train_features)
    check_finite("test_features", test_features)
    pred = knn_predict(train_features, train_labels, test_features, **kw)
    return (pred == test_labels.to(pred.device)).float().mean().item()


# --------------------------------------------------------------------------------------------
# linear probe

def linear_probe(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor, *,
                 epochs: int = 100, lr: float = 1.0, weight_decay: float = 1e-4, seed: int = 0,
                 standardize: bool = True) -> dict:
    r"""Linear evaluation: multinomial logistic regression on frozen features.

    Fits :math:`p(y \mid h) = \mathrm{softmax}(W h + b)` by minimising the mean cross-entropy
    plus :math:`\tfrac{\lambda}{2}\|W\|^2` over the whole training set with L-BFGS (full batch,
    strong-Wolfe line search) on the features' device. The problem is convex, so the result
    does not depend on a learning-rate schedule, and with W, b started at zero it is
    deterministic; 60000 x 512 features take a few seconds on two CPU cores. With
    ``standardize`` each feature is shifted and scaled by the training mean and standard
    deviation first (the test set uses the same statistics).

    This is the offline probe, trained after pre-training on frozen features; say so when
    reporting it next to an online probe (solo-learn #216).

    Args:
        train_features: (N, D) floating.
        train_labels: (N,) integer labels in [0, C).
        test_features: (M, D) floating.
        test_labels: (M,) integer labels.
        epochs: maximum number of L-BFGS iterations (each is one full pass, plus line-search passes).
        lr: L-BFGS initial step length (1.0 is the natural step of quasi-Newton methods).
        weight_decay: lambda of the L2 penalty on W (not on b).
        seed: accepted so that every evaluation takes a seed; the fit starts from zero and
            L-BFGS draws no random numbers, so the result is the same for every seed.
        standardize: standardise features with the training mean and std.

    Returns:
        ``{"train_acc": float, "test_acc": float}``.
    """
    _check_features_labels("train_features", train_features, "train_labels", train_labels)
    _check_features_labels("test_features", test_features, "test_labels", test_labels)
    _check_same_dim("train_features", train_features, "test_features", test_features)
    check_finite("train_features", train_features)
    check_finite("test_features", test_features)
    _check_int("epochs", epochs)
    _check_number("lr", lr)
    _check_number("weight_decay", weight_decay, allow_zero=True)
    _check_int("seed", seed, minimum=0)
    n_classes = _num_classes(None, train_labels, test_labels)

    device = train_features.device
    x_train = train_features.detach().float()                       # (N, D)
    x_test = test_features.detach().to(device).float()              # (M, D)
    y_train = train_labels.to(device=device, dtype=torch.long)
    y_test = test_labels.to(device=device, dtype=torch.long)
    if standardize:
        mean = x_train.mean(dim=0)
        std = x_train.std(dim=0) if x_train.shape[0] > 1 else torch.ones_like(mean)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))   # constant features stay put
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    if x_train.is_inference():                                      # inference tensors cannot be saved for backward
        x_train = x_train.clone()
    if y_train.is_inference():
        y_train = y_train.clone()

    weight = torch.zeros(n_classes, x_train.shape[1], device=device, requires_grad=True)  # (C, D)
    bias = torch.zeros(n_classes, device=device, requires_grad=True)                      # (C,)
    optimizer = torch.optim.LBFGS([weight, bias], lr=lr, max_iter=epochs, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        logits = x_train @ weight.T + bias                          # (N, C)
        loss = F.cross_entropy(logits, y_train) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)

    with torch.no_grad():
        def accuracy(x: Tensor, y: Tensor) -> float:
            return ((x @ weight.T + bias).argmax(dim=1) == y).float().mean().item()
        return {"train_acc": accuracy(x_train, y_train), "test_acc": accuracy(x_test, y_test)}


def few_label_probe(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                    fraction: float, *, seed: int = 0, **probe_options) -> dict:
    """Semi-supervised evaluation: the linear probe fitted on a fraction of the training labels.

    The protocol of SimCLR's Table 7 with 1% and 10% of the labels, as a linear probe on frozen
    features rather than fine-tuning the encoder: a class-balanced subset of
    ``round(fraction * N)`` training examples (at least one per class, drawn with ``seed``)
    keeps its labels, the rest are unused, and the accuracy is on the whole test set.

    Args:
        train_features, train_labels, test_features, test_labels: as :func:`linear_probe`.
        fraction: share of the training labels kept, in (0, 1].
        seed: which subset (the probe itself is deterministic).
        probe_options: passed on to :func:`linear_probe` (epochs, weight_decay, ...).

    Returns:
        ``{"train_acc", "test_acc", "n_labels"}``, the accuracy on the labelled subset, on the
        test set, and the size of the subset.
    """
    _check_features_labels("train_features", train_features, "train_labels", train_labels)
    _check_number("fraction", fraction)
    if fraction > 1:
        raise ValueError(f"fraction must be in (0, 1], the share of training labels kept, got {fraction!r}")
    n_classes = int(torch.unique(train_labels).numel())
    n = max(n_classes, round(fraction * train_labels.shape[0]))
    x, y = subsample(train_features, train_labels, n, seed=seed)
    result = linear_probe(x, y, test_features, test_labels, seed=seed, **probe_options)
    return {**result, "n_labels": int(y.shape[0])}


# --------------------------------------------------------------------------------------------
# alignment and uniformity (Wang & Isola 2020)

def alignment(x: Tensor, y: Tensor, alpha: float = 2.0) -> Tensor:
    r"""Alignment of positive pairs, :math:`\mathcal{L}_{align} = \mathbb{E}\,\|f(x) - f(y)\|_2^\alpha`.

    Wang & Isola (2020), Eq. 4. Row i of ``x`` and row i of ``y`` are a positive pair (two views
    of one image); lower is better aligned. The inputs are meant to be L2-normalised features
    (as in the paper, where f maps to the unit sphere); they are used as given, not normalised here.

    Args:
        x: (N, D) floating, e.g. ``F.normalize(h1, dim=1)``.
        y: (N, D) floating, the positives of the rows of ``x``.
        alpha: exponent > 0 (the paper uses 2).

    Returns:
        a scalar, the mean over the N pairs of ``||x_i - y_i|| ** alpha``; differentiable.
    """
    check_tensor("x", x, ndim=2, floating=True)
    check_tensor("y", y, ndim=2, floating=True)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {shape_str(x.shape)} and {shape_str(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"x must hold at least one pair, got shape {shape_str(x.shape)}")
    _check_number("alpha", alpha)
    return (x - y).norm(p=2, dim=1).pow(alpha).mean()


def uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    r"""Uniformity, :math:`\mathcal{L}_{uniform} = \log \mathbb{E}_{i<j} \exp(-t \|x_i - x_j\|_2^2)`.

    Wang & Isola (2020), Eq. 5: the log of the average Gaussian potential over the N(N-1)/2
    distinct pairs of the batch; lower is more uniform on the sphere. The inputs are meant to be
    L2-normalised features and are used as given. Computed in float32 (also under autocast) from
    the Gram matrix, in O(N^2) memory, with a log-sum-exp, so far-apart points do not underflow
    to log(0).

    Args:
        x: (N, D) floating, N >= 2, e.g. ``F.normalize(h, dim=1)``.
        t: the potential's scale t > 0 (the paper uses 2).

    Returns:
        a float32 scalar; two antipodal unit vectors with t = 2 give -8; differentiable.
    """
    check_tensor("x", x, ndim=2, floating=True)
    if x.shape[0] < 2:
        raise ValueError(f"x must hold N >= 2 points to form a pair, got shape {shape_str(x.shape)}")
    _check_number("t", t)
    n = x.shape[0]
    with torch.autocast(x.device.type, enabled=False):             # the Gram matrix in float32 too
        x = x.float()
        sq_norm = x.pow(2).sum(dim=1)
        # ||x_i - x_j||^2 from the Gram matrix: O(N^2) memory, where pdist's backward takes O(N^2 D)
        sq_dist = (sq_norm[:, None] + sq_norm[None, :] - 2 * (x @ x.T)).clamp(min=0)   # (N, N)
        i, j = torch.triu_indices(n, n, offset=1, device=x.device)
        return torch.logsumexp(-t * sq_dist[i, j], dim=0) - math.log(n * (n - 1) / 2)


def feature_std(x: Tensor) -> Tensor:
    """Mean over dimensions of the per-dimension standard deviation of L2-normalised features.

    The collapse monitor of SimSiam / BYOL analyses: a collapsed encoder maps every input to one
    point and gives 0; features spread over the unit sphere in D dimensions give about 1/sqrt(D).

    Args:
        x: (N, D) floating features, N >= 2 (normalised here).

    Returns:
        a float32 scalar.
    """
    check_tensor("x", x, ndim=2, floating=True)
    if x.shape[0] < 2:
        raise ValueError(f"x must hold N >= 2 samples for a standard deviation, got shape {shape_str(x.shape)}")
    return F.normalize(x.float(), dim=1).std(dim=0).mean()


def effective_rank(x: Tensor) -> Tensor:
    r"""Effective rank of a batch of features (Roy & Vetterli 2007): :math:`\exp(H(p))`, p = s / sum(s).

    s are the singular values of the centred (N, D) feature matrix; the value runs from 1 (all
    variance along one direction: dimensional collapse) to min(N, D) (variance spread evenly).

    Args:
        x: (N, D) floating features, N >= 2.

    Returns:
        a float32 scalar.
    """
    check_tensor("x", x, ndim=2, floating=True)
    if x.shape[0] < 2:
        raise ValueError(f"x must hold N >= 2 samples, got shape {shape_str(x.shape)}")
    x = x.float() - x.float().mean(dim=0)
    s = torch.linalg.svdvals(x)
    p = s / s.sum().clamp_min(1e-12)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


__all__ = [
    "alignment",
    "effective_rank",
    "extract_features",
    "feature_std",
    "few_label_probe",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "uniformity",
]
