"""Exercises on evaluating a representation: alignment and uniformity (Wang & Isola 2020), and the
weighted kNN classifier (Wu et al. 2018) that the book uses as its monitor.

The kNN cases are built by hand on the circle, where weighted and unweighted votes, or two
temperatures, pick different classes; random clustered features cover the ordinary case.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import metrics
from .core import Case, Exercise

# --------------------------------------------------------------------------------------------
# alignment and uniformity

ALIGNMENT_SIGNATURE = '''\
def alignment(x: Tensor, y: Tensor, alpha: float) -> Tensor:
    """Alignment of positive pairs (Wang & Isola 2020, Eq. 4): mean over i of ||x_i - y_i||^alpha.

    Row i of x and row i of y are two views of one image. The features are used as given
    (callers normalise them); lower is better aligned.

    Args:
        x: (N, D) float32.
        y: (N, D) float32, the positives of the rows of x.
        alpha: the exponent, > 0 (the paper: 2).

    Returns:
        a float32 scalar.
    """'''


def _unit(g: torch.Generator, n: int, d: int):
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


def _alignment_cases(g: torch.Generator) -> list[Case]:
    x = _unit(g, 8, 4)
    power = "raise each distance to the power alpha (not always 2)"
    return [
        Case("unit features, alpha 2", {"x": _unit(g, 16, 8), "y": _unit(g, 16, 8), "alpha": 2.0}, grad=("x", "y")),
        Case("alpha 1", {"x": _unit(g, 16, 8), "y": _unit(g, 16, 8), "alpha": 1.0}, hint=power, grad=("x", "y")),
        Case("alpha 3", {"x": _unit(g, 16, 8), "y": _unit(g, 16, 8), "alpha": 3.0}, hint=power, grad=("x", "y")),
        Case("features of length 3, not 1",
             {"x": 3 * _unit(g, 16, 8), "y": 3 * _unit(g, 16, 8), "alpha": 2.0},
             hint="use x and y as they come, without normalising them; the result is a mean over the pairs",
             grad=("x", "y")),
        Case("x = y, alignment 0", {"x": x, "y": x.clone(), "alpha": 2.0}, closed_form=True),
    ]


ALIGNMENT = Exercise("alignment", "alignment of positive pairs", ALIGNMENT_SIGNATURE,
                     reference=lambda x, y, alpha: metrics.alignment(x, y, alpha), cases=_alignment_cases)

UNIFORMITY_SIGNATURE = '''\
def uniformity(x: Tensor, t: float) -> Tensor:
    """Uniformity (Wang & Isola 2020, Eq. 5): log of the mean of exp(-t ||x_i - x_j||^2) over the
    N(N - 1)/2 distinct pairs i < j of the batch. Used as given; lower is more uniform.

    Args:
        x: (N, D) float32, N >= 2.
        t: the scale t > 0 of the Gaussian potential (the paper: 2).

    Returns:
        a float32 scalar; two antipodal unit vectors with t = 2 give -8.
    """'''


def _uniformity_cases(g: torch.Generator) -> list[Case]:
    return [
        Case("16 unit features, t = 2", {"x": _unit(g, 16, 4), "t": 2.0}, grad=("x",)),
        Case("t = 1", {"x": _unit(g, 16, 4), "t": 1.0}, hint="the potential is exp(-t * squared distance)",
             grad=("x",)),
        Case("two antipodal points, t = 2 (uniformity -8)", {"x": torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), "t": 2.0},
             hint="only the distinct pairs i < j count (a point is not paired with itself); the potential uses "
                  "the squared distance, 4 here, so the result is -2 * 4 = -8", grad=("x",), closed_form=True),
        Case("features of length 0.5, not 1", {"x": 0.5 * _unit(g, 10, 4), "t": 2.0},
             hint="use x as it comes, without normalising it", grad=("x",)),
    ]


UNIFORMITY = Exercise("uniformity", "uniformity on the hypersphere", UNIFORMITY_SIGNATURE,
                      reference=lambda x, t: metrics.uniformity(x, t), cases=_uniformity_cases)


# --------------------------------------------------------------------------------------------
# weighted kNN

KNN_SIGNATURE = '''\
def knn_predict(train_features: Tensor, train_labels: Tensor, query_features: Tensor, k: int,
                temperature: float) -> Tensor:
    """Weighted k-nearest-neighbour classification (Wu et al. 2018, Sec. 3.4).

    The similarity is the cosine (normalise the features). Each query takes its k most
    similar training points (all of them when k exceeds their number); each votes for its
    label with weight exp(s / temperature), and the class with the largest total wins.

    Args:
        train_features: (N, D) float32.
        train_labels: (N,) int64 labels in [0, C), where C = train_labels.max() + 1.
        query_features: (Q, D) float32.
        k: the number of neighbours, >= 1.
        temperature: tau > 0 of the vote weights.

    Returns:
        the predicted labels, (Q,) int64.
    """'''


def _on_circle(degrees: list[float], lengths: list[float] | None = None):
    """Points in the plane at the given angles (and lengths, default 1): (len(degrees), 2)."""
    angles = torch.tensor([math.radians(a) for a in degrees])
    points = torch.stack([angles.cos(), angles.sin()], dim=1)
    return points if lengths is None else points * torch.tensor(lengths)[:, None]


def _knn_cases(g: torch.Generator) -> list[Case]:
    def clusters(n_per_class, n_query, noise):
        centres = torch.randn(4, 8, generator=g)                          # (C, D)
        labels = torch.arange(4).repeat_interleave(n_per_class)           # (N,)
        features = centres[labels] + noise * torch.randn(len(labels), 8, generator=g)
        queries = centres[torch.randint(4, (n_query,), generator=g)] + noise * torch.randn(n_query, 8, generator=g)
        return features, labels, queries

    # Two close points of class 1 against three farther points of class 0: the weights decide.
    votes = {"train_features": _on_circle([5, -5, 60, -60, 65, 150, 170, -150]),
             "train_labels": torch.tensor([1, 1, 0, 0, 0, 2, 2, 2]),
             "query_features": _on_circle([0, 2, -3])}
    features, labels, queries = clusters(15, 20, 0.8)
    small, small_labels, small_queries = clusters(2, 6, 0.5)
    return [
        Case("4 clusters, k = 10, tau 0.1",
             {"train_features": features, "train_labels": labels, "query_features": queries, "k": 10,
              "temperature": 0.1}),
        Case("2 near neighbours of class 1 outweigh 3 farther ones of class 0 (k = 5, tau 0.1)",
             {**votes, "k": 5, "temperature": 0.1},
             hint="each neighbour votes with weight exp(s / temperature), not 1: two neighbours at cosine 0.996 "
                  "beat three at 0.5"),
        Case("the same points with tau = 10: weights nearly equal, the 3 of class 0 win",
             {**votes, "k": 5, "temperature": 10.0},
             hint="divide the similarity by the temperature given (exp(s / temperature))"),
        Case("features of different lengths (cosine, not dot product), k = 1",
             {"train_features": _on_circle([10, 40, 170], [1.0, 10.0, 1.0]), "train_labels": torch.tensor([0, 1, 2]),
              "query_features": _on_circle([0, 35], [1.0, 0.1]), "k": 1, "temperature": 0.1},
             hint="normalise the features: the similarity is the cosine, whatever the lengths"),
        Case("k = 20 larger than the 8 training points",
             {"train_features": small, "train_labels": small_labels, "query_features": small_queries, "k": 20,
              "temperature": 0.1},
             hint="when k exceeds the number of training points, use all of them (k = min(k, N))"),
    ]


KNN = Exercise("knn_predict", "the weighted kNN classifier", KNN_SIGNATURE,
               reference=lambda train_features, train_labels, query_features, k, temperature:
               metrics.knn_predict(train_features, train_labels, query_features, k=k, temperature=temperature),
               cases=_knn_cases)

__all__ = ["ALIGNMENT", "KNN", "UNIFORMITY"]
